//! The CPU simulator: executes MIL programs the way the ANE does, on any machine.
//!
//! `plan` compiles a function into kernel steps with buffers from the live-range `memory`
//! plan; `exec` is the backend that runs them. `numerics` owns the ANE's fp16 rules
//! (rounding, saturation, NaN handling) and says which of them the simulator reproduces
//! exactly and which it approximates. `kernels` holds the compute kernels: pure functions over
//! dense row-major slices, independent of the MIL IR. `peak` measures this machine's f32 FMA
//! peak, the yardstick for benchmarks. [`SimReload`] is the simulator's model of what an
//! unload + load does with a rewritten weight file (the weight-reload probe's question).

pub mod exec;
pub mod kernels;
pub mod memory;
pub mod numerics;
pub mod ops;
pub mod peak;
pub mod plan;

pub use exec::{SimBackend, SimReload};
pub use plan::{Fp32Arithmetic, SimOptions};
