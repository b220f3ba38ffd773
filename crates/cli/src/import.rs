//! `anemone import`: read a Core ML model (.mlpackage or .mlmodel) and write it as a model
//! directory — `model.mil` and its `weights/` — that `check`, `fmt`, `run` and the Apple
//! backend take. The program is the one `run` executes: rewritten where the ANE deviates
//! from MIL, each rewrite printed as a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anemone_mil::Program;
use anemone_mil::package::ModelDir;

use crate::EXIT_USAGE;
use anemone::source::{Imported, Source};

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The Core ML model: an .mlpackage directory or an .mlmodel file.
    pub path: PathBuf,
    /// The model directory to write (created; must not hold a model.mil already unless
    /// --force).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Replace model.mil and the weight files of an existing model directory.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ImportArgs) -> ExitCode {
    match import(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn import(args: &ImportArgs) -> Result<(), String> {
    if !anemone_mil::coreml::is_coreml_path(&args.path) {
        return Err(format!(
            "{} is not a Core ML model (an .mlpackage directory or an .mlmodel file); MIL \
             text needs no import",
            args.path.display()
        ));
    }
    let existing = args.out.join("model.mil");
    if existing.exists() && !args.force {
        return Err(format!(
            "{} already exists; choose another --out or pass --force to replace it",
            existing.display()
        ));
    }
    let src = Source::load(&args.path)?;
    let imported = src.imported.as_ref().expect("a Core ML path gives an imported source");
    crate::print_lowerings(&src);
    ModelDir::create(&args.out, &src.text, &imported.model.weights)
        .map_err(|e| format!("cannot write the model directory: {e}"))?;
    print_summary(&args.path, imported);
    let weight_bytes: u64 = imported.model.weights.iter().map(|(_, f)| f.len()).sum();
    eprintln!(
        "wrote {} and {} weight file(s) ({})",
        existing.display(),
        imported.model.weights.len(),
        crate::run::human_bytes(weight_bytes as usize)
    );
    Ok(())
}

/// Op types and how often each is used, most used first.
pub fn op_counts(program: &Program) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &program.functions {
        for op in &f.block.operations {
            *counts.entry(op.op.name.as_str()).or_default() += 1;
        }
    }
    let mut out: Vec<(String, usize)> =
        counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Prints what the model is: its converter, inputs, outputs and ops.
pub fn print_summary(path: &Path, imported: &Imported) {
    let m = &imported.model;
    let converter = m.metadata.converter_version().map(|v| format!(", coremltools {v}"));
    let opset = m.program.functions.first().map(|f| f.opset.name.as_str()).unwrap_or("?");
    eprintln!(
        "{}: ML Program, specification version {}, opset {opset}{}",
        path.display(),
        m.spec_version,
        converter.unwrap_or_default()
    );
    let feature = |f: &anemone_mil::coreml::FeatureInfo| {
        let dims: Vec<String> = f.shape.iter().map(usize::to_string).collect();
        format!("{} {}[{}]", f.name, f.dtype, dims.join(", "))
    };
    let list = |fs: &[anemone_mil::coreml::FeatureInfo]| {
        fs.iter().map(feature).collect::<Vec<_>>().join(", ")
    };
    eprintln!("  inputs:  {}", list(&m.inputs));
    eprintln!("  outputs: {}", list(&m.outputs));
    let counts = op_counts(&imported.program);
    let total: usize = counts.iter().map(|c| c.1).sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!("  ops ({total}): {}", parts.join(", "));
}
