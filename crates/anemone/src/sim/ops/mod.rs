//! Op families that plan and run themselves: each module turns the registry's resolved
//! parameters of its ops into a kernel description at compile time (its `plan`) and runs it
//! over typed byte slices at evaluate time, with the executor's scratch buffers for GEMM
//! staging. The plan and the executor only dispatch to them (by `OpKind::family`), so adding
//! an op of a family touches that family's module (and its pure kernels in `sim::kernels`).
//!
//! - [`norm`]: linear, layer_norm, batch_norm, instance_norm, prelu, max_pool, avg_pool,
//!   upsample_bilinear.
//! - [`index`]: gather, gather_along_axis, stack, tile, pad, band_part,
//!   upsample_nearest_neighbor (expand_dims and squeeze alias their input in the plan, like
//!   reshape).
//! - [`logic`]: comparisons, logical ops, select, clip.

pub mod index;
pub mod logic;
pub mod norm;

use anemone_mil::TensorType;

/// One input of a step: its bytes (exactly its tensor's size) and type.
#[derive(Clone, Copy, Debug)]
pub struct In<'a> {
    /// The tensor's bytes, dense and row-major in its dtype.
    pub bytes: &'a [u8],
    /// The tensor's declared dtype and shape.
    pub ty: &'a TensorType,
    /// For an fp16 constant read by a GEMM, its values widened to f32 once at load (the
    /// plan decides which constants get this).
    pub widened: Option<&'a [f32]>,
    /// For a constant GEMM operand that the plan packs ahead (linear's weight), its packed
    /// form: the kernel reads it instead of the bytes.
    pub packed: Option<&'a crate::sim::kernels::matmul::PackedOperand>,
}

/// One output of a step: the bytes to fill (exactly its tensor's size) and its type.
#[derive(Debug)]
pub struct Out<'a> {
    /// The bytes to write, dense and row-major in the output's dtype.
    pub bytes: &'a mut [u8],
    /// The output's declared dtype and shape.
    pub ty: &'a TensorType,
}

/// What a family's run function returns: an error message for the step.
pub type RunResult = std::result::Result<(), String>;
