//! anemone: run MIL programs on Apple's Neural Engine, or on a CPU simulator that follows the
//! ANE's rules and fp16 numerics on any machine.
//!
//! ```no_run
//! use anemone::{Device, Weights};
//!
//! let program = anemone_mil::text::parse(&std::fs::read_to_string("model.mil")?)?;
//! let device = Device::auto()?; // the ANE if present, else the simulator
//! let mut model = device.compile(&program, &Weights::new())?; // weights snapshotted here
//! model.input("x")?.write_f32(&vec![0.5; 64 * 32])?;
//! model.evaluate()?;
//! let y = model.output("y")?.read_f32()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The runtime takes IR, never text: parse or build programs with `anemone-mil`.

pub mod aligned;
pub mod apple;
pub mod budget;
pub mod device;
pub mod error;
pub mod model;
pub mod probe;
pub mod sim;
pub mod surface;

pub use anemone_mil::package::Weights;
pub use budget::{BudgetLimits, CompileBudget};
pub use device::{Device, DeviceKind};
pub use error::{Error, Result};
pub use model::{Model, ModelOptions, ModelStats, WeightUpdate};
pub use surface::Surface;
