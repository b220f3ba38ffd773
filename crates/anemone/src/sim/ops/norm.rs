//! The simulator's side of linear, layer_norm, batch_norm, instance_norm, max_pool, avg_pool,
//! prelu and upsample_bilinear: parameters resolved by the op registry at compile time, and
//! the run over typed slices by the kernels of `sim::kernels::norm`.
//!
//! Weights, biases, prelu's slopes and the normalizations' statistics and scales are data
//! inputs, not compile-time parameters: they may live in a weight file, which only the plan
//! reads. The kernels take the small ones as f32 (fp16 widened exactly), whatever their own
//! float type (iOS17 lets it differ from x's).

use std::borrow::Cow;

use anemone_mil::ops::{
    BatchNormParams, InstanceNormParams, LayerNormParams, LinearParams, OpContext, OpError, OpKind,
    PoolParams, PreluParams, UpsampleBilinearParams,
};
use anemone_mil::{DType, f16};

use super::{In, Out, RunResult};
use crate::sim::kernels::matmul::MatmulInput;
use crate::sim::kernels::norm::{self as k, BilinearGrid, PoolWindow};
use crate::sim::kernels::{Element, Scratch};

/// A planned op of this family with its parameters resolved.
#[derive(Clone, Debug)]
pub enum NormKernel {
    /// Inputs x, weight, then bias when `has_bias`.
    Linear {
        /// Whether a `bias` input follows the weight.
        has_bias: bool,
    },
    /// Inputs x, then gamma and beta when given.
    LayerNorm {
        /// The axes normalized together (non-negative, each below the rank of x).
        axes: Vec<usize>,
        /// Whether a `gamma` (scale) input is given.
        has_gamma: bool,
        /// Whether a `beta` (shift) input is given.
        has_beta: bool,
        /// Added to the variance before the square root.
        epsilon: f32,
    },
    /// Inputs x, mean, variance, then gamma and beta when given.
    BatchNorm {
        /// Whether a per-channel `gamma` input is given.
        has_gamma: bool,
        /// Whether a per-channel `beta` input is given.
        has_beta: bool,
        /// Added to the variance before the square root.
        epsilon: f32,
    },
    /// Inputs x, then gamma and beta when given.
    InstanceNorm {
        /// Whether a per-channel `gamma` input is given.
        has_gamma: bool,
        /// Whether a per-channel `beta` input is given.
        has_beta: bool,
        /// Added to each instance's variance before the square root.
        epsilon: f32,
    },
    /// `max_pool` over the spatial dims with the window, strides and padding resolved.
    MaxPool(PoolWindow),
    /// `avg_pool` over the spatial dims.
    AvgPool {
        /// The window, strides, padding and output size per spatial dim.
        window: PoolWindow,
        /// Whether padded positions are left out of each average's count.
        exclude_padding: bool,
    },
    /// Inputs x, alpha.
    Prelu,
    /// The sampling grid and the output height and width.
    UpsampleBilinear {
        /// Where each output samples the input (from `align_corners` and `half_pixel_centers`).
        grid: BilinearGrid,
        /// Output height and width.
        output: [usize; 2],
    },
}

impl NormKernel {
    fn name(&self) -> &'static str {
        match self {
            NormKernel::Linear { .. } => "linear",
            NormKernel::LayerNorm { .. } => "layer_norm",
            NormKernel::BatchNorm { .. } => "batch_norm",
            NormKernel::InstanceNorm { .. } => "instance_norm",
            NormKernel::MaxPool(_) => "max_pool",
            NormKernel::AvgPool { .. } => "avg_pool",
            NormKernel::Prelu => "prelu",
            NormKernel::UpsampleBilinear { .. } => "upsample_bilinear",
        }
    }
}

/// The inputs of `kind` that carry tensor data, in the order [`run`] receives them (the
/// others are parameters resolved at compile time). Absent optional inputs are skipped.
pub fn data_inputs(kind: OpKind) -> &'static [&'static str] {
    match kind {
        // The plan widens fp16 constants at positions 1 and 2 of linear (weight, bias).
        OpKind::Linear => &["x", "weight", "bias"],
        OpKind::LayerNorm | OpKind::InstanceNorm => &["x", "gamma", "beta"],
        OpKind::BatchNorm => &["x", "mean", "variance", "gamma", "beta"],
        OpKind::Prelu => &["x", "alpha"],
        _ => &["x"],
    }
}

/// Whether the op computes (its fp32 operands then run in fp16, as on the ANE) rather than
/// only moving or comparing elements. Every op here computes; max_pool too, as reduce_max
/// does: the ANE holds the tensor in fp16 to pool it.
pub fn is_arithmetic(kernel: &NormKernel) -> bool {
    match kernel {
        NormKernel::Linear { .. }
        | NormKernel::LayerNorm { .. }
        | NormKernel::BatchNorm { .. }
        | NormKernel::InstanceNorm { .. }
        | NormKernel::MaxPool(_)
        | NormKernel::AvgPool { .. }
        | NormKernel::Prelu
        | NormKernel::UpsampleBilinear { .. } => true,
    }
}

/// Resolves one op of this family for the simulator.
pub fn plan(ctx: &OpContext) -> Result<NormKernel, OpError> {
    Ok(match ctx.kind {
        OpKind::Linear => NormKernel::Linear { has_bias: LinearParams::resolve(ctx)?.has_bias },
        OpKind::LayerNorm => {
            let p = LayerNormParams::resolve(ctx)?;
            NormKernel::LayerNorm {
                axes: p.axes,
                has_gamma: p.has_gamma,
                has_beta: p.has_beta,
                epsilon: p.epsilon as f32,
            }
        }
        OpKind::BatchNorm => {
            let p = BatchNormParams::resolve(ctx)?;
            NormKernel::BatchNorm {
                has_gamma: p.has_gamma,
                has_beta: p.has_beta,
                epsilon: p.epsilon as f32,
            }
        }
        OpKind::InstanceNorm => {
            let p = InstanceNormParams::resolve(ctx)?;
            NormKernel::InstanceNorm {
                has_gamma: p.has_gamma,
                has_beta: p.has_beta,
                epsilon: p.epsilon as f32,
            }
        }
        OpKind::MaxPool | OpKind::AvgPool => {
            let p = PoolParams::resolve(ctx)?;
            let window = PoolWindow {
                kernel: p.kernel_sizes,
                strides: p.strides,
                pad_before: p.pad_before,
                pad_after: p.pad_after,
                output: p.output_spatial,
            };
            if ctx.kind == OpKind::MaxPool {
                NormKernel::MaxPool(window)
            } else {
                NormKernel::AvgPool { window, exclude_padding: p.exclude_padding_from_average }
            }
        }
        OpKind::Prelu => {
            PreluParams::resolve(ctx)?;
            NormKernel::Prelu
        }
        OpKind::UpsampleBilinear => {
            let p = UpsampleBilinearParams::resolve(ctx)?;
            let grid = p.grid().ok_or_else(|| {
                ctx.error(
                    "align_corners and half_pixel_centers are both true, a combination without a \
                     defined sampling grid, which the simulator cannot run",
                )
                .with_subject("half_pixel_centers")
                .with_help("set half_pixel_centers to false for aligned corners")
            })?;
            let output = [p.upsample.output_height, p.upsample.output_width];
            NormKernel::UpsampleBilinear { grid, output }
        }
        other => return Err(ctx.error(format_args!("{other} is not an op of the norm family"))),
    })
}

/// Runs `$body(xs, shape, out)` with x and the output viewed as fp16 or fp32 slices.
macro_rules! float_dispatch {
    ($name:expr, $x:expr, $out:expr, |$xs:ident, $shape:ident, $o:ident| $body:expr) => {
        match $x.ty.dtype {
            DType::Fp16 => {
                let $xs: &[f16] = typed($name, $x)?;
                let $o: &mut [f16] = typed_mut($name, $out)?;
                let $shape = $x.ty.shape.as_slice();
                $body.map_err(|e| e.to_string())
            }
            DType::Fp32 => {
                let $xs: &[f32] = typed($name, $x)?;
                let $o: &mut [f32] = typed_mut($name, $out)?;
                let $shape = $x.ty.shape.as_slice();
                $body.map_err(|e| e.to_string())
            }
            other => Err(unsupported($name, other)),
        }
    };
}

/// Runs a planned op.
pub fn run(
    kernel: &NormKernel,
    inputs: &[In],
    outputs: &mut [Out],
    _scratch: &mut Scratch,
) -> RunResult {
    let name = kernel.name();
    let [out] = outputs else {
        return Err(format!("{name}: expected one output, got {}", outputs.len()));
    };
    let mut args = Args { name, inputs, next: 0 };
    let x = args.take("x")?;
    if out.ty.dtype != x.ty.dtype {
        return Err(format!("{name}: the output is {} but x is {}", out.ty.dtype, x.ty.dtype));
    }
    match kernel {
        NormKernel::Linear { has_bias } => {
            let w = args.take("weight")?;
            let b = args.optional(*has_bias, "bias")?;
            args.finish()?;
            match x.ty.dtype {
                DType::Fp16 => linear::<f16>(x, w, b, out),
                DType::Fp32 => linear::<f32>(x, w, b, out),
                DType::Int32 => linear_i32(x, w, b, out),
                other => Err(unsupported(name, other)),
            }
        }
        NormKernel::LayerNorm { axes, has_gamma, has_beta, epsilon } => {
            let gamma = args.optional(*has_gamma, "gamma")?.map(|g| floats(name, g)).transpose()?;
            let beta = args.optional(*has_beta, "beta")?.map(|b| floats(name, b)).transpose()?;
            args.finish()?;
            let (g, b) = (gamma.as_deref(), beta.as_deref());
            float_dispatch!(name, x, out, |xs, shape, o| {
                k::layer_norm(xs, shape, axes, g, b, *epsilon, o)
            })
        }
        NormKernel::BatchNorm { has_gamma, has_beta, epsilon } => {
            let mean = floats(name, args.take("mean")?)?;
            let variance = floats(name, args.take("variance")?)?;
            let gamma = args.optional(*has_gamma, "gamma")?.map(|g| floats(name, g)).transpose()?;
            let beta = args.optional(*has_beta, "beta")?.map(|b| floats(name, b)).transpose()?;
            args.finish()?;
            let (g, b) = (gamma.as_deref(), beta.as_deref());
            float_dispatch!(name, x, out, |xs, shape, o| {
                k::batch_norm(xs, shape, &mean, &variance, g, b, *epsilon, o)
            })
        }
        NormKernel::InstanceNorm { has_gamma, has_beta, epsilon } => {
            let gamma = args.optional(*has_gamma, "gamma")?.map(|g| floats(name, g)).transpose()?;
            let beta = args.optional(*has_beta, "beta")?.map(|b| floats(name, b)).transpose()?;
            args.finish()?;
            let (g, b) = (gamma.as_deref(), beta.as_deref());
            float_dispatch!(name, x, out, |xs, shape, o| {
                k::instance_norm(xs, shape, g, b, *epsilon, o)
            })
        }
        NormKernel::MaxPool(window) => {
            args.finish()?;
            float_dispatch!(name, x, out, |xs, shape, o| k::max_pool(xs, shape, window, o))
        }
        NormKernel::AvgPool { window, exclude_padding } => {
            args.finish()?;
            float_dispatch!(name, x, out, |xs, shape, o| {
                k::avg_pool(xs, shape, window, *exclude_padding, o)
            })
        }
        NormKernel::Prelu => {
            let alpha = floats(name, args.take("alpha")?)?;
            args.finish()?;
            float_dispatch!(name, x, out, |xs, shape, o| k::prelu(xs, shape, &alpha, o))
        }
        NormKernel::UpsampleBilinear { grid, output } => {
            args.finish()?;
            float_dispatch!(name, x, out, |xs, shape, o| {
                k::upsample_bilinear(xs, shape, *grid, *output, o)
            })
        }
    }
}

/// The data inputs of one step, taken in [`data_inputs`] order.
struct Args<'r, 'a> {
    name: &'static str,
    inputs: &'r [In<'a>],
    next: usize,
}

impl<'r, 'a> Args<'r, 'a> {
    fn take(&mut self, what: &str) -> Result<&'r In<'a>, String> {
        let input = self
            .inputs
            .get(self.next)
            .ok_or_else(|| format!("{}: input {what} is missing", self.name))?;
        self.next += 1;
        Ok(input)
    }

    fn optional(&mut self, given: bool, what: &str) -> Result<Option<&'r In<'a>>, String> {
        if given { self.take(what).map(Some) } else { Ok(None) }
    }

    fn finish(&self) -> Result<(), String> {
        if self.next != self.inputs.len() {
            return Err(format!(
                "{}: got {} data inputs, expected {}",
                self.name,
                self.inputs.len(),
                self.next
            ));
        }
        Ok(())
    }
}

fn unsupported(name: &str, dtype: DType) -> String {
    format!("{name} on {dtype} tensors is not supported by the simulator")
}

/// A tensor's bytes as elements of `T`.
fn typed<'a, T: bytemuck::Pod>(name: &str, input: &In<'a>) -> Result<&'a [T], String> {
    bytemuck::try_cast_slice(input.bytes).map_err(|e| {
        format!("{name}: the bytes of a {} tensor cannot be read in place: {e}", input.ty)
    })
}

fn typed_mut<'o, T: bytemuck::Pod>(name: &str, out: &'o mut Out) -> Result<&'o mut [T], String> {
    let ty = out.ty;
    bytemuck::try_cast_slice_mut(out.bytes)
        .map_err(|e| format!("{name}: the bytes of a {ty} tensor cannot be written in place: {e}"))
}

/// A small float parameter (bias, gamma, beta, mean, variance) as f32: the plan's widened
/// copy when there is one, else decoded from its own type (fp16 widens exactly).
fn floats<'a>(name: &str, input: &In<'a>) -> Result<Cow<'a, [f32]>, String> {
    if let Some(wide) = input.widened {
        return Ok(Cow::Borrowed(wide));
    }
    let b = input.bytes;
    match input.ty.dtype {
        DType::Fp16 => Ok(Cow::Owned(
            b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        )),
        DType::Fp32 => Ok(Cow::Owned(
            b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        )),
        other => Err(format!("{name}: a {other} parameter is not a float")),
    }
}

/// linear on float x: the weight as the plan widened it (fp16 constants), else in its own
/// type; the output has x's type.
fn linear<T: Element + bytemuck::Pod>(x: &In, w: &In, b: Option<&In>, out: &mut Out) -> RunResult {
    const NAME: &str = "linear";
    let xs: &[T] = typed(NAME, x)?;
    let bias = b.map(|b| floats(NAME, b)).transpose()?;
    let bias = bias.as_deref();
    let o: &mut [T] = typed_mut(NAME, out)?;
    let (xsh, wsh) = (x.ty.shape.as_slice(), w.ty.shape.as_slice());
    let result = match (w.packed, w.widened, w.ty.dtype) {
        (Some(p), ..) => {
            k::linear_inputs::<T, f32, T>(xs, xsh, MatmulInput::Packed(p), wsh, bias, o)
        }
        (None, Some(wide), _) => k::linear::<T, f32, T>(xs, xsh, wide, wsh, bias, o),
        (None, None, DType::Fp16) => {
            let ws: &[f16] = typed(NAME, w)?;
            k::linear::<T, f16, T>(xs, xsh, ws, wsh, bias, o)
        }
        (None, None, DType::Fp32) => {
            let ws: &[f32] = typed(NAME, w)?;
            k::linear::<T, f32, T>(xs, xsh, ws, wsh, bias, o)
        }
        (.., other) => return Err(format!("{NAME}: a {other} weight under {} x", x.ty.dtype)),
    };
    result.map_err(|e| e.to_string())
}

/// linear on int32 x, weight and bias.
fn linear_i32(x: &In, w: &In, b: Option<&In>, out: &mut Out) -> RunResult {
    const NAME: &str = "linear";
    for (what, t) in [("weight", Some(w)), ("bias", b)] {
        if let Some(t) = t
            && t.ty.dtype != DType::Int32
        {
            return Err(format!("{NAME}: {what} is {} but x is int32", t.ty.dtype));
        }
    }
    let bias: Option<&[i32]> = b.map(|b| typed(NAME, b)).transpose()?;
    let (xs, ws): (&[i32], &[i32]) = (typed(NAME, x)?, typed(NAME, w)?);
    let o: &mut [i32] = typed_mut(NAME, out)?;
    k::linear_i32(xs, &x.ty.shape, ws, &w.ty.shape, bias, o).map_err(|e| e.to_string())
}
