//! The names most programs need, in one import:
//!
//! ```
//! use anemone::prelude::*;
//! ```
//!
//! It brings the runtime ([`Device`], [`Model`], [`Weights`], [`Array`]), the MIL layer's
//! types and builder ([`Program`], [`DType`], [`TensorType`], [`Builder`], [`OpKind`]),
//! reading programs ([`text`], [`read_model_dir`], [`ModelDir`]) and the error types.
//! [`Error`] is the runtime's error type: write `Box<dyn std::error::Error>` in full when
//! mixing it with other errors.

pub use crate::npy::{self, Array, Data};
pub use crate::{Device, DeviceKind, Error, Model, ModelOptions, Weights};
// The builder and its per-op option structs (`ConvOptions`, `LayerNormOptions`, ...).
pub use anemone_mil::builder::*;
pub use anemone_mil::ops::OpKind;
pub use anemone_mil::package::ModelDir;
pub use anemone_mil::{DType, Diagnostic, Diagnostics, Program, TensorType, read_model_dir, text};
