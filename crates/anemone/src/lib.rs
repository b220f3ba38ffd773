//! anemone: run MIL programs on Apple's Neural Engine, or on a CPU simulator that follows the
//! ANE's rules and fp16 numerics on any machine.
//!
//! ```no_run
//! use anemone::prelude::*;
//!
//! let (program, weights) = read_model_dir("my_model")?; // model.mil and its weight files
//! let device = Device::auto()?; // the ANE if present, else the simulator
//! let mut model = device.compile(&program, &weights)?; // weights snapshotted here
//! model.input("x")?.write_f32(&vec![0.5; 64 * 32])?;
//! model.evaluate()?;
//! let y = model.output("y")?.read_f32()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The runtime takes IR, never text: parse or build programs with the MIL layer, re-exported
//! as [`mil`] (the `anemone-mil` crate). [`prelude`] imports what most programs need;
//! [`Model::predict`] runs a model on named [`Array`]s, and [`npy`] reads and writes them as
//! NumPy files.

#![deny(missing_docs)]

/// The MIL layer: parsing, printing, building and validating programs, weight files.
pub use anemone_mil as mil;

pub mod aligned;
pub mod apple;
pub mod budget;
pub mod device;
pub mod error;
pub mod model;
pub mod npy;
pub mod npz;
mod predict;
pub mod prelude;
pub mod probe;
pub mod safetensors;
pub mod sim;
pub mod source;
pub mod surface;

pub use anemone_mil::builder::Builder;
pub use anemone_mil::package::{ModelDir, Weights};
pub use anemone_mil::{DType, Diagnostic, Diagnostics, Program, TensorType, read_model_dir};
pub use budget::{BudgetLimits, CompileBudget};
pub use device::{AddedStep, Device, DeviceKind, StepTime};
pub use error::{Error, Result};
pub use model::{Model, ModelOptions, ModelStats, WeightUpdate};
pub use npy::Array;
pub use surface::Surface;

/// The README's Rust code blocks, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme {}
