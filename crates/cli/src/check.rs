//! `anemone check`: parse, validate and lint a program, and check its BLOBFILE references
//! against the weight files beside it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anemone_mil::blob::ReadMode;
use anemone_mil::diag::{self, Diagnostic, LineCol, Severity};
use anemone_mil::text;

use crate::EXIT_USAGE;
use anemone::source::Source;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// One or more programs, each a .mil file, a model directory holding model.mil and
    /// weights/, or a Core ML model (.mlpackage or .mlmodel: its inputs, outputs and op
    /// counts are printed too). Each gets its own report; the exit status is the worst.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print JSON on stdout instead of text on stderr: one document per program, one per
    /// line.
    #[arg(long)]
    pub json: bool,
    /// Read weight files leniently, as the ANE compiler does (maderix-style headers).
    #[arg(long)]
    pub lenient: bool,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    // 2 (unreadable) is worse than 1 (errors), which is worse than 0.
    let worst = args.paths.iter().map(|path| check_one(path, args)).max().unwrap_or(0);
    ExitCode::from(worst)
}

/// Reports on one program; returns its exit status.
fn check_one(path: &Path, args: &CheckArgs) -> u8 {
    let src = match Source::load(path) {
        Ok(s) => s,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "file": path.display().to_string(), "error": e })
                );
            } else {
                eprintln!("error: {e}");
            }
            return EXIT_USAGE;
        }
    };
    let diagnostics = match text::parse(&src.text) {
        Err(d) => vec![d],
        Ok(program) => {
            let mode = if args.lenient { ReadMode::Lenient } else { ReadMode::Strict };
            anemone_mil::check(&program, Some(&src.model_dir), mode)
        }
    };
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if let (Some(imported), false) = (&src.imported, args.json) {
        crate::import::print_summary(path, imported);
        crate::print_lowerings(&src);
    }
    if args.json {
        println!("{}", to_json(&src, &diagnostics, errors, warnings));
    } else {
        let color = std::io::stderr().is_terminal();
        for d in &diagnostics {
            eprint!("{}", diag::render(d, &src.display_name, &src.text, color));
        }
        eprintln!("{}: {errors} error(s), {warnings} warning(s)", src.display_name);
    }
    if errors > 0 { 1 } else { 0 }
}

fn to_json(src: &Source, diagnostics: &[Diagnostic], errors: usize, warnings: usize) -> String {
    let items: Vec<_> = diagnostics
        .iter()
        .map(|d| {
            let pos = d.span.map(|s| (s, LineCol::of(&src.text, s.start)));
            serde_json::json!({
                "severity": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
                "code": d.code,
                "message": d.message,
                "line": pos.map(|(_, lc)| lc.line),
                "column": pos.map(|(_, lc)| lc.column),
                "span": pos.map(|(s, _)| serde_json::json!({ "start": s.start, "end": s.end })),
                "label": d.label,
                "help": d.help,
            })
        })
        .collect();
    let mut doc = serde_json::json!({
        "file": src.display_name,
        "errors": errors,
        "warnings": warnings,
        "diagnostics": items,
    });
    if let Some(imported) = &src.imported {
        let m = &imported.model;
        let feature = |f: &anemone_mil::coreml::FeatureInfo| serde_json::json!({ "name": f.name, "dtype": f.dtype.name(), "shape": f.shape });
        doc["model"] = serde_json::json!({
            "specification_version": m.spec_version,
            "coremltools": m.metadata.converter_version(),
            "inputs": m.inputs.iter().map(feature).collect::<Vec<_>>(),
            "outputs": m.outputs.iter().map(feature).collect::<Vec<_>>(),
            "ops": crate::import::op_counts(&imported.program)
                .into_iter()
                .map(|(k, v)| (k, serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "rewrites": imported.lowerings.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        });
    }
    doc.to_string()
}
