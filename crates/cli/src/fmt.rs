//! `anemone fmt`: print a program in canonical text, or rewrite the file in place.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anemone_mil::{blob, diag, text};

use crate::EXIT_USAGE;
use anemone::source::Source;

#[derive(clap::Args)]
pub struct FmtArgs {
    /// A .mil file, a model directory holding model.mil, or a Core ML model (printed as MIL).
    pub path: PathBuf,
    /// Rewrite the file in place (atomically) instead of printing.
    #[arg(long)]
    pub write: bool,
    /// Exit 1 without writing if the file is not already canonical.
    #[arg(long, conflicts_with = "write")]
    pub check: bool,
    /// With --write: rewrite even though the file has `//` comments, which the canonical
    /// form does not keep.
    #[arg(long, requires = "write")]
    pub drop_comments: bool,
}

/// Whether `text` has a `//` comment (outside string literals), which the printer's
/// canonical form does not keep: commands that rewrite a .mil file ask before dropping them.
pub(crate) fn has_comments(text: &str) -> bool {
    let (mut in_string, mut escaped, mut slash) = (false, false, false);
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '/' if slash => return true,
            _ => {}
        }
        slash = c == '/';
    }
    false
}

pub fn run(args: &FmtArgs) -> ExitCode {
    let src = match Source::load(&args.path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if src.imported.is_some() && (args.write || args.check) {
        eprintln!(
            "error: {} is a Core ML model, not MIL text: `anemone fmt` prints it as MIL; \
             `anemone import` writes it as a model directory",
            args.path.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
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
        if has_comments(&src.text) && !args.drop_comments {
            eprintln!(
                "{} has `//` comments, which the canonical form does not keep; left unchanged \
                 (--drop-comments rewrites it anyway)",
                src.display_name
            );
            return ExitCode::from(1);
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

#[cfg(test)]
mod tests {
    use super::has_comments;

    #[test]
    fn comments_are_found_outside_strings_only() {
        assert!(has_comments("x = 1; // note"));
        assert!(!has_comments("path = string(\"@model_path/a//b\")"));
        assert!(!has_comments("s = string(\"a\\\"//\")"));
        assert!(!has_comments("a / b"));
    }
}
