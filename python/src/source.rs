//! Reading what `anemone.load` and `anemone.check` are given: a `.mil` file, a model
//! directory holding `model.mil` and `weights/`, or a Core ML model (`.mlpackage` or
//! `.mlmodel`). A Core ML model is read into the IR, rewritten where the ANE deviates from
//! MIL, and printed as MIL text, as the `anemone` command does, so that diagnostics point at
//! lines of that text.

use std::path::Path;

use anemone::mil::blob::ReadMode;
use anemone::mil::package::Weights;
use anemone::mil::{Diagnostic, Diagnostics, Program, text, validate};
use anemone::source::Source;
use pyo3::prelude::*;

use crate::errors::{self, DiagFields, Kind};

/// The name diagnostics show and the program's MIL text.
fn named_text(source: &Source) -> (&str, &str) {
    (&source.display_name, &source.text)
}

/// A program ready to compile: parsed, valid, with its weights.
pub struct Loaded {
    pub source: Source,
    pub program: Program,
    pub weights: Weights,
}

/// Reads, parses and validates `path` and loads its weights; each failure is raised as the
/// exception users catch for it.
pub fn read_program(py: Python<'_>, path: &Path) -> PyResult<Loaded> {
    let source = Source::load(path).map_err(|e| errors::raise(py, Kind::Load, e, &[]))?;
    let (file, text) = named_text(&source);
    let program = text::parse_source(file, text)
        .map_err(|diags| errors::from_diagnostics(py, Kind::Parse, &diags))?;
    let invalid: Vec<Diagnostic> =
        validate::validate(&program).into_iter().filter(Diagnostic::is_error).collect();
    if !invalid.is_empty() {
        let diags = Diagnostics::new(invalid).with_source(file, text);
        return Err(errors::from_diagnostics(py, Kind::Validation, &diags));
    }
    let weights = match source.imported_weights() {
        Some(weights) => weights.clone(),
        None => source.model_dir.load_weights(&program).map_err(|diags| {
            errors::from_diagnostics(
                py,
                Kind::Load,
                &Diagnostics::new(diags).with_source(file, text),
            )
        })?,
    };
    Ok(Loaded { source, program, weights })
}

/// What `anemone check` reports for `path`: parse errors, or validation errors, weight-file
/// findings and the Neural Engine lints, errors first. Raises `LoadError` when `path`
/// cannot be read at all.
pub fn check(py: Python<'_>, path: &Path, lenient: bool) -> PyResult<Vec<DiagFields>> {
    let source = Source::load(path).map_err(|e| errors::raise(py, Kind::Load, e, &[]))?;
    let diagnostics = match text::parse(&source.text) {
        Err(d) => vec![d],
        Ok(program) => {
            let mode = if lenient { ReadMode::Lenient } else { ReadMode::Strict };
            anemone::mil::check(&program, Some(&source.model_dir), mode)
        }
    };
    Ok(diagnostics.iter().map(|d| DiagFields::of(d, Some(named_text(&source)))).collect())
}
