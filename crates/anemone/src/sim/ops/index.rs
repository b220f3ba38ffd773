//! The simulator's side of gather, gather_along_axis, expand_dims, squeeze, stack, tile, pad, band_part: parameters resolved by the op registry at compile time,
//! and the run over typed slices.

use anemone_mil::ops::{OpContext, OpError, OpKind};

use super::{In, Out, RunResult};

/// A planned op of this family with its parameters resolved.
#[derive(Clone, Debug)]
pub enum IndexKernel {}

/// The inputs of `kind` that carry tensor data, in the order [`run`] receives them (the
/// others are parameters resolved at compile time).
pub fn data_inputs(_kind: OpKind) -> &'static [&'static str] {
    &["x"]
}

/// Whether the op computes (its fp32 operands then run in fp16, as on the ANE) rather than
/// only moving or comparing elements.
pub fn is_arithmetic(kernel: &IndexKernel) -> bool {
    match *kernel {}
}

/// Resolves one op of this family for the simulator.
pub fn plan(ctx: &OpContext) -> Result<IndexKernel, OpError> {
    Err(ctx.error("not supported by the simulator yet"))
}

/// Runs a planned op.
pub fn run(kernel: &IndexKernel, _inputs: &[In], _outputs: &mut [Out]) -> RunResult {
    match *kernel {}
}
