//! The CPU simulator: executes MIL programs the way the ANE does, on any machine.
//!
//! `numerics` owns the ANE's fp16 rules (rounding, saturation, NaN handling) and says which of
//! them the simulator reproduces exactly and which it approximates. `kernels` holds the compute
//! kernels the plan calls: pure functions over dense row-major slices, independent of the MIL IR.
//! `peak` measures this machine's f32 FMA peak, the yardstick for kernel benchmarks.

pub mod kernels;
pub mod numerics;
pub mod peak;
