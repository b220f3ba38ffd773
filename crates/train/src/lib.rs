//! anemone-train: train llama2-style transformers on Apple's Neural Engine, or on its
//! simulator anywhere, with device kernels compiled once.
//!
//! The split follows the anchor design (maderix/ANE training_dynamic, REFERENCE.md §7):
//! the matmul-heavy parts of each layer (projections, attention, the SwiGLU FFN and their
//! input gradients) run on the device as MIL programs whose weights travel in their inputs,
//! so a whole run compiles a fixed, small set of programs; the CPU keeps the embedding,
//! RMSNorm, residuals, the classifier with its cross-entropy, the weight gradients and AdamW.

#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod data;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod optim;
pub mod params;
pub mod plot;
pub mod reference;
pub mod step;
pub mod tokenizer;
pub mod trainer;

pub use config::{Config, ModelConfig, TrainConfig};
pub use error::{Error, Result};
pub use params::{ParamLayout, Params, Tensor};
