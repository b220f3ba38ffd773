//! anemone-mil: the MIL language layer of anemone. Parse MIL text into an IR with spans,
//! print it back in the form Apple's in-memory compiler takes, build programs in Rust with
//! shape inference, validate them (types, shapes, and the Neural Engine's known limits as
//! lints), and read and write MILBlob v2 weight files and model directories.
//!
//! It knows nothing of devices; the `anemone` crate runs what this crate describes.

#![deny(missing_docs)]

pub mod blob;
pub mod builder;
pub mod coreml;
pub mod diag;
pub mod ir;
pub mod lint;
pub mod lower;
pub mod ops;
pub mod package;
pub mod text;
pub mod validate;

pub use diag::Diagnostics;
pub use diag::{Diagnostic, Severity};
pub use ir::*;

use blob::ReadMode;
use package::ModelDir;
use package::Weights;

/// Everything `anemone check` reports about a parsed program: validation errors, Neural
/// Engine lints, and (given the model directory) BLOBFILE references checked against the
/// weight files they point to. Errors come first.
///
/// A weight file that does not exist is a warning, not an error: the text is still checked,
/// and the weights can be supplied when compiling.
pub fn check(program: &Program, model_dir: Option<&ModelDir>, mode: ReadMode) -> Vec<Diagnostic> {
    let mut out = validate::validate(program);
    if let Some(dir) = model_dir {
        let (_, blob_diags) = dir.check(program, mode);
        out.extend(blob_diags.into_iter().map(|mut d| {
            if d.code == "blob::missing-file" {
                d.severity = Severity::Warning;
                d.message.push_str("; its BLOBFILE references were not checked");
            }
            d
        }));
    }
    out.extend(lint::lint(program));
    out.sort_by_key(|d| std::cmp::Reverse(d.severity));
    out
}

/// Reads a model directory (a directory holding `model.mil`, or a `.mil` file whose
/// directory holds its weights): parses the program and loads every weight file it refers
/// to. Errors display as `file:line:col` with the source line, and say what to do.
///
/// ```
/// use anemone_mil::builder::Builder;
/// use anemone_mil::{DType, TensorType};
///
/// // A model directory: model.mil and weights/weight.bin, as the builder writes them.
/// let dir = tempfile::tempdir()?;
/// let mut b = Builder::new();
/// let mut f = b.function("main");
/// let x = f.input("x", TensorType::new(DType::Fp16, [1, 4]));
/// let w = f.weight("w", TensorType::new(DType::Fp16, [4, 4]), &[0.5; 16])?;
/// let y = f.matmul(&x, &w, false, false)?;
/// f.output_named(&y, "y")?;
/// f.finish();
/// b.build()?.write_model_dir(dir.path())?;
///
/// let (program, weights) = anemone_mil::read_model_dir(dir.path())?;
/// assert_eq!(program.main_function().unwrap().block.outputs[0].name, "y");
/// assert_eq!(weights.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_model_dir(
    path: impl AsRef<std::path::Path>,
) -> Result<(Program, Weights), Diagnostics> {
    let dir = ModelDir::open(path).map_err(|e| Diagnostics::from(e.to_diagnostic(Span::NONE)))?;
    let file_name = dir.mil_path().display().to_string();
    let text = dir.read_mil().map_err(|e| Diagnostics::from(e.to_diagnostic(Span::NONE)))?;
    let program = text::parse_source(&file_name, &text)?;
    let weights = dir
        .load_weights(&program)
        .map_err(|diags| Diagnostics::new(diags).with_source(file_name, text))?;
    Ok((program, weights))
}
