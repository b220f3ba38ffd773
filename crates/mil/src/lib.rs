//! anemone-mil: the MIL language layer of anemone. Parse MIL text into an IR with spans,
//! print it back in the form Apple's in-memory compiler takes, build programs in Rust with
//! shape inference, validate them (types, shapes, and the Neural Engine's known limits as
//! lints), and read and write MILBlob v2 weight files and model directories.
//!
//! It knows nothing of devices; the `anemone` crate runs what this crate describes.

pub mod blob;
pub mod builder;
pub mod diag;
pub mod ir;
pub mod lint;
pub mod ops;
pub mod package;
pub mod text;
pub mod validate;

pub use diag::{Diagnostic, Severity};
pub use ir::*;
