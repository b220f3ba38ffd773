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
/// and the weights can be supplied when compiling. It is reported once, at the first
/// BLOBFILE that names it, with the count of the others, rather than at each of them.
pub fn check(program: &Program, model_dir: Option<&ModelDir>, mode: ReadMode) -> Vec<Diagnostic> {
    let mut out = validate::validate(program);
    if let Some(dir) = model_dir {
        let (_, blob_diags) = dir.check(program, mode);
        let blob_diags = blob_diags.into_iter().map(|mut d| {
            if d.code == MISSING_FILE {
                d.severity = Severity::Warning;
                d.message.push_str("; its BLOBFILE references were not checked");
            }
            d
        });
        out.extend(one_per_missing_file(blob_diags));
    }
    out.extend(lint::lint(program));
    out.sort_by_key(|d| std::cmp::Reverse(d.severity));
    out
}

/// The code of the diagnostic for a BLOBFILE whose weight file does not exist.
const MISSING_FILE: &str = "blob::missing-file";

/// Folds the missing-file diagnostics that name the same file into the first, counting the
/// others in its message.
fn one_per_missing_file(diagnostics: impl IntoIterator<Item = Diagnostic>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    // (index in `out` of a file's first diagnostic, how many BLOBFILEs name the file)
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for d in diagnostics {
        if d.code == MISSING_FILE {
            if let Some(c) = counts.iter_mut().find(|(i, _)| out[*i].message == d.message) {
                c.1 += 1;
                continue;
            }
            counts.push((out.len(), 1));
        }
        out.push(d);
    }
    for (i, n) in counts {
        if n > 1 {
            out[i].message.push_str(&format!(" (named by {n} BLOBFILEs)"));
        }
    }
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
