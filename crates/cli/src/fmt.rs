//! `anemone fmt`: print a program in canonical text, or rewrite the file in place.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anemone_mil::{blob, diag, text};

use crate::EXIT_USAGE;
use crate::source::Source;

#[derive(clap::Args)]
pub struct FmtArgs {
    /// A .mil file, or a model directory holding model.mil.
    pub path: PathBuf,
    /// Rewrite the file in place (atomically) instead of printing.
    #[arg(long)]
    pub write: bool,
    /// Exit 1 without writing if the file is not already canonical.
    #[arg(long, conflicts_with = "write")]
    pub check: bool,
}

pub fn run(args: &FmtArgs) -> ExitCode {
    let src = match Source::load(&args.path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let program = match text::parse(&src.text) {
        Ok(p) => p,
        Err(d) => {
            let color = std::io::stderr().is_terminal();
            eprint!("{}", diag::render(&d, &src.display_name, &src.text, color));
            return ExitCode::from(1);
        }
    };
    let canonical = text::print(&program);
    if args.check {
        if canonical == src.text {
            return ExitCode::SUCCESS;
        }
        eprintln!("{} is not in canonical form; run `anemone fmt --write`", src.display_name);
        return ExitCode::from(1);
    }
    if args.write {
        if canonical == src.text {
            return ExitCode::SUCCESS;
        }
        return match blob::write_file_atomic(&src.mil_path, canonical.as_bytes()) {
            Ok(()) => {
                eprintln!("formatted {}", src.display_name);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", src.display_name);
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(canonical.as_bytes()).and_then(|_| stdout.flush()).is_err() {
        return ExitCode::from(EXIT_USAGE);
    }
    ExitCode::SUCCESS
}
