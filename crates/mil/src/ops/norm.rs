//! Normalization, pooling and linear layers: linear (coremltools ops/defs/iOS15/linear.py,
//! iOS17/linear.py), layer_norm, batch_norm, instance_norm (iOS15/normalization.py,
//! iOS17/normalization.py), max_pool and avg_pool (iOS15/pool.py, with output sizes from
//! ops/defs/_utils.py `spatial_dimensions_out_shape` and `aggregated_pad`); and two more ops
//! that compute per channel or per plane: prelu (iOS15/activation.py, iOS17/activation.py) and
//! upsample_bilinear (iOS15/image_resizing.py, iOS16/image_resizing.py).
//!
//! iOS17 lets the constant parameters (weights, gamma, beta, mean, variance, epsilon, prelu's
//! alpha) have a float type other than `x`'s (type domain `U`); the registry accepts that,
//! since it cannot tell the opset, and requires only that the tensor parameters of one op share
//! a type.

use crate::ir::{DType, TensorType, Type};

use super::conv::PadType;
use super::helpers::{normalize_axis, product, result};
use super::index::{SCALE_FACTOR, UpsampleParams};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError, OpKind};

/// linear's element types (linear.py type domain T: fp16, fp32, int32).
const LINEAR_TYPES: DTypes = DTypes::OneOf(&[DType::Fp16, DType::Fp32, DType::Int32]);

static LINEAR: Signature = Signature {
    inputs: &[
        InputSpec::required("x", LINEAR_TYPES).ranks(Ranks::between(1, 3)),
        InputSpec::required("weight", LINEAR_TYPES).constant().ranks(Ranks::between(2, 2)),
        InputSpec::optional("bias", LINEAR_TYPES).constant().ranks(Ranks::VECTOR).default("zeros"),
    ],
    attributes: NAME_ONLY,
};

static LAYER_NORM: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float),
        InputSpec::optional("axes", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("all axes"),
        InputSpec::optional("gamma", DTypes::Float).constant().default("ones"),
        InputSpec::optional("beta", DTypes::Float).constant().default("zeros"),
        InputSpec::optional("epsilon", DTypes::Float)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("1e-5"),
    ],
    attributes: NAME_ONLY,
};

static BATCH_NORM: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::between(3, 5)),
        InputSpec::required("mean", DTypes::Float).constant().ranks(Ranks::VECTOR),
        InputSpec::required("variance", DTypes::Float).constant().ranks(Ranks::VECTOR),
        InputSpec::optional("gamma", DTypes::Float).constant().ranks(Ranks::VECTOR).default("ones"),
        InputSpec::optional("beta", DTypes::Float).constant().ranks(Ranks::VECTOR).default("zeros"),
        InputSpec::optional("epsilon", DTypes::Float)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("1e-5"),
    ],
    attributes: NAME_ONLY,
};

static INSTANCE_NORM: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::between(3, 4)),
        InputSpec::optional("gamma", DTypes::Float).constant().ranks(Ranks::VECTOR).default("ones"),
        InputSpec::optional("beta", DTypes::Float).constant().ranks(Ranks::VECTOR).default("zeros"),
        InputSpec::optional("epsilon", DTypes::Float)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("1e-5"),
    ],
    attributes: NAME_ONLY,
};

static MAX_POOL: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::between(3, 5)),
        InputSpec::required("kernel_sizes", DTypes::Int).constant().ranks(Ranks::VECTOR),
        InputSpec::optional("strides", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("1 in every spatial dim"),
        InputSpec::required("pad_type", DTypes::String).constant().ranks(Ranks::SCALAR),
        InputSpec::optional("pad", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("zeros (read only with pad_type custom)"),
        InputSpec::optional("ceil_mode", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
    ],
    attributes: NAME_ONLY,
};

static AVG_POOL: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::between(3, 5)),
        InputSpec::required("kernel_sizes", DTypes::Int).constant().ranks(Ranks::VECTOR),
        InputSpec::optional("strides", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("1 in every spatial dim"),
        InputSpec::required("pad_type", DTypes::String).constant().ranks(Ranks::SCALAR),
        InputSpec::optional("pad", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("zeros (read only with pad_type custom)"),
        InputSpec::optional("ceil_mode", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
        InputSpec::optional("exclude_padding_from_average", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
    ],
    attributes: NAME_ONLY,
};

static PRELU: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::between(3, 5)),
        InputSpec::required("alpha", DTypes::Float).constant().ranks(Ranks::VECTOR),
    ],
    attributes: NAME_ONLY,
};

static UPSAMPLE_BILINEAR: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::at_least(3)),
        InputSpec::optional("scale_factor_height", SCALE_FACTOR)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("1"),
        InputSpec::optional("scale_factor_width", SCALE_FACTOR)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("1"),
        InputSpec::optional("align_corners", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("true"),
        // iOS16.
        InputSpec::optional("half_pixel_centers", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("the opposite of align_corners"),
    ],
    attributes: NAME_ONLY,
};

/// The signature of each op of this family.
pub(super) fn signature(kind: OpKind) -> &'static Signature {
    match kind {
        OpKind::Linear => &LINEAR,
        OpKind::LayerNorm => &LAYER_NORM,
        OpKind::BatchNorm => &BATCH_NORM,
        OpKind::InstanceNorm => &INSTANCE_NORM,
        OpKind::MaxPool => &MAX_POOL,
        OpKind::AvgPool => &AVG_POOL,
        OpKind::Prelu => &PRELU,
        OpKind::UpsampleBilinear => &UPSAMPLE_BILINEAR,
        other => unreachable!("{other} is not an op of the norm family"),
    }
}

/// Checks one op of this family and infers its result types.
pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    let shape = match ctx.kind {
        OpKind::Linear => LinearParams::resolve(ctx)?.output_shape,
        OpKind::LayerNorm => {
            LayerNormParams::resolve(ctx)?;
            x.shape
        }
        OpKind::BatchNorm => {
            BatchNormParams::resolve(ctx)?;
            x.shape
        }
        OpKind::InstanceNorm => {
            InstanceNormParams::resolve(ctx)?;
            x.shape
        }
        OpKind::MaxPool | OpKind::AvgPool => PoolParams::resolve(ctx)?.output_shape(),
        OpKind::Prelu => {
            PreluParams::resolve(ctx)?;
            x.shape
        }
        OpKind::UpsampleBilinear => UpsampleBilinearParams::resolve(ctx)?.upsample.output_shape,
        other => return Err(ctx.error(format_args!("{other} is not an op of the norm family"))),
    };
    Ok(vec![result(x.dtype, shape)])
}

/// linear resolved: `x` is `[*batch, in_features]` (rank 1 to 3), `weight` is
/// `[out_features, in_features]`, the result is `[*batch, out_features]` with x's type.
/// `bias` defaults to zeros (linear.py `default_inputs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearParams {
    /// Size of x's last dim, and weight's second dim.
    pub in_features: usize,
    /// weight's first dim: the size of the result's last dim.
    pub out_features: usize,
    /// The product of x's leading dims: the rows of the GEMM (1 for a rank-1 x).
    pub rows: usize,
    /// Whether a `bias` `[out_features]` is given (absent means zeros).
    pub has_bias: bool,
    /// The result shape: x's shape with the last dim replaced by `out_features`.
    pub output_shape: Vec<usize>,
}

impl LinearParams {
    /// Checks a `linear` op (ranks, `in_features` agreement, bias shape and type, no mixing of
    /// integer and float operands) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<LinearParams, OpError> {
        let x = ctx.tensor("x")?;
        let w = ctx.tensor("weight")?;
        if !(1..=3).contains(&x.rank()) {
            return Err(ctx
                .error(format_args!("x has rank {} but linear takes rank 1 to 3", x.rank()))
                .with_subject("x"));
        }
        if w.rank() != 2 {
            return Err(ctx
                .error(format_args!(
                    "weight has shape {:?} but must be [out_features, in_features]",
                    w.shape
                ))
                .with_subject("weight"));
        }
        check_linear_dtype(ctx, &x, &w, "weight")?;
        let (out_features, in_features) = (w.shape[0], w.shape[1]);
        let last = x.shape[x.rank() - 1];
        if last != in_features {
            return Err(ctx
                .error(format_args!(
                    "x {:?} has {last} features in its last dim but weight {:?} takes {in_features}",
                    x.shape, w.shape
                ))
                .with_subject("weight")
                .with_help("weight is [out_features, in_features]; y = x weight^T + bias"));
        }
        let has_bias = match ctx.optional_tensor("bias")? {
            None => false,
            Some(b) => {
                if b.shape != [out_features] {
                    return Err(ctx
                        .error(format_args!(
                            "bias has shape {:?} but weight has {out_features} output features",
                            b.shape
                        ))
                        .with_subject("bias"));
                }
                if b.dtype != w.dtype {
                    return Err(ctx
                        .error(format_args!("bias is {} but weight is {}", b.dtype, w.dtype))
                        .with_subject("bias"));
                }
                true
            }
        };
        let rows = product(ctx, &x.shape[..x.rank() - 1], "x")?;
        let mut output_shape = x.shape.clone();
        *output_shape.last_mut().expect("rank >= 1") = out_features;
        product(ctx, &output_shape, "x")?;
        Ok(LinearParams { in_features, out_features, rows, has_bias, output_shape })
    }
}

/// Integer and float operands do not mix: x int32 takes an int32 weight, a float x takes
/// an fp16 or fp32 weight (iOS17 allows it to differ from x's float type).
fn check_linear_dtype(
    ctx: &OpContext,
    x: &TensorType,
    w: &TensorType,
    name: &str,
) -> Result<(), OpError> {
    if x.dtype.is_int() != w.dtype.is_int() {
        return Err(ctx
            .error(format_args!(
                "{name} is {} but x is {}; integer and float operands do not mix",
                w.dtype, x.dtype
            ))
            .with_subject(name));
    }
    Ok(())
}

/// The epsilon of a normalization: a finite constant, default 1e-5 (normalization.py).
fn epsilon(ctx: &OpContext) -> Result<f64, OpError> {
    let eps = ctx.const_f64("epsilon")?.unwrap_or(1e-5);
    if !eps.is_finite() {
        return Err(ctx.error(format_args!("epsilon {eps} is not finite")).with_subject("epsilon"));
    }
    Ok(eps)
}

/// Checks that the given tensor parameters among `names` share one float type (type domain
/// `U` of iOS17 normalization.py) and returns which of them are present.
fn parameter_types(ctx: &OpContext, names: &[&str]) -> Result<Vec<Option<TensorType>>, OpError> {
    let mut found: Vec<Option<TensorType>> = Vec::with_capacity(names.len());
    let mut first: Option<(&str, DType)> = None;
    for &name in names {
        let t = ctx.optional_tensor(name)?;
        if let Some(t) = &t {
            match first {
                None => first = Some((name, t.dtype)),
                Some((other, dtype)) if dtype != t.dtype => {
                    return Err(ctx
                        .error(format_args!("{name} is {} but {other} is {dtype}", t.dtype))
                        .with_subject(name));
                }
                Some(_) => {}
            }
        }
        found.push(t);
    }
    Ok(found)
}

/// layer_norm resolved: normalizes over `axes` (normalized, ascending, each once; every
/// axis when absent), then scales by `gamma` and shifts by `beta`, both of
/// `normalized_shape` (the dims of x at `axes`, in axis order); defaults ones and zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormParams {
    /// The normalized axes: non-negative, ascending, each once.
    pub axes: Vec<usize>,
    /// x's dims at `axes`, in axis order: the shape `gamma` and `beta` must have.
    pub normalized_shape: Vec<usize>,
    /// Whether a scale `gamma` is given (absent means ones).
    pub has_gamma: bool,
    /// Whether a shift `beta` is given (absent means zeros).
    pub has_beta: bool,
    /// Added to the variance before the square root; finite, default 1e-5.
    pub epsilon: f64,
}

impl LayerNormParams {
    /// Checks a `layer_norm` op (axes in range, `gamma`/`beta` of `normalized_shape` and of one
    /// type, finite epsilon) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<LayerNormParams, OpError> {
        let x = ctx.tensor("x")?;
        let rank = x.rank();
        let axes = match ctx.const_i64s("axes")? {
            None => (0..rank).collect(),
            Some(given) => {
                // An axis named twice counts once (normalization.py tests membership).
                let mut axes = Vec::with_capacity(given.len());
                for &a in &given {
                    let n = normalize_axis(a, rank).ok_or_else(|| {
                        ctx.error(format_args!(
                            "axes {given:?} has {a}, out of range for rank {rank}"
                        ))
                        .with_subject("axes")
                        .with_help(format!("an axis lies in [-{rank}, {rank})"))
                    })?;
                    if !axes.contains(&n) {
                        axes.push(n);
                    }
                }
                axes.sort_unstable();
                axes
            }
        };
        let normalized_shape: Vec<usize> = axes.iter().map(|&a| x.shape[a]).collect();
        let params = parameter_types(ctx, &["gamma", "beta"])?;
        for (name, t) in ["gamma", "beta"].into_iter().zip(&params) {
            if let Some(t) = t
                && t.shape != normalized_shape
            {
                return Err(ctx
                    .error(format_args!(
                        "{name} has shape {:?} but x {:?} normalized over axes {axes:?} takes {normalized_shape:?}",
                        t.shape, x.shape
                    ))
                    .with_subject(name));
            }
        }
        Ok(LayerNormParams {
            axes,
            normalized_shape,
            has_gamma: params[0].is_some(),
            has_beta: params[1].is_some(),
            epsilon: epsilon(ctx)?,
        })
    }
}

/// Checks per-channel vectors of `[N, C, *spatial]` x: each of `names` given must be `[C]`.
fn channel_vectors(ctx: &OpContext, x: &TensorType, names: &[&str]) -> Result<Vec<bool>, OpError> {
    let channels = x.shape[1];
    let params = parameter_types(ctx, names)?;
    for (name, t) in names.iter().zip(&params) {
        if let Some(t) = t
            && t.shape != [channels]
        {
            return Err(ctx
                .error(format_args!(
                    "{name} has shape {:?} but x {:?} has {channels} channels",
                    t.shape, x.shape
                ))
                .with_subject(*name)
                .with_help(format!("{name} holds one value per channel: shape [{channels}]")));
        }
    }
    Ok(params.iter().map(Option::is_some).collect())
}

/// batch_norm resolved: x is `[N, C, *spatial]` with 1 to 3 spatial dims; `mean`,
/// `variance`, `gamma` (default ones) and `beta` (default zeros) are `[C]`;
/// `y = gamma (x - mean) / sqrt(variance + epsilon) + beta` per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormParams {
    /// C: x's dim 1, the length of every per-channel vector.
    pub channels: usize,
    /// Whether a scale `gamma` `[C]` is given (absent means ones).
    pub has_gamma: bool,
    /// Whether a shift `beta` `[C]` is given (absent means zeros).
    pub has_beta: bool,
    /// Added to the variance before the square root; finite, default 1e-5.
    pub epsilon: f64,
}

impl BatchNormParams {
    /// Checks a `batch_norm` op (x of rank 3 to 5, every vector `[C]` and of one type, finite
    /// epsilon) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<BatchNormParams, OpError> {
        let x = ctx.tensor("x")?;
        check_channel_rank(ctx, &x, 3..=5)?;
        let given = channel_vectors(ctx, &x, &["mean", "variance", "gamma", "beta"])?;
        Ok(BatchNormParams {
            channels: x.shape[1],
            has_gamma: given[2],
            has_beta: given[3],
            epsilon: epsilon(ctx)?,
        })
    }
}

/// instance_norm resolved: x is `[N, C, *spatial]` with 1 or 2 spatial dims; each (n, c)
/// plane is normalized by its own mean and variance over the spatial dims, then scaled by
/// `gamma[c]` (default 1) and shifted by `beta[c]` (default 0).
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceNormParams {
    /// C: x's dim 1, the length of `gamma` and `beta`.
    pub channels: usize,
    /// Whether a scale `gamma` `[C]` is given (absent means ones).
    pub has_gamma: bool,
    /// Whether a shift `beta` `[C]` is given (absent means zeros).
    pub has_beta: bool,
    /// Added to each plane's variance before the square root; finite, default 1e-5.
    pub epsilon: f64,
}

impl InstanceNormParams {
    /// Checks an `instance_norm` op (x of rank 3 or 4, `gamma`/`beta` `[C]`, finite epsilon) and
    /// resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<InstanceNormParams, OpError> {
        let x = ctx.tensor("x")?;
        check_channel_rank(ctx, &x, 3..=4)?;
        let given = channel_vectors(ctx, &x, &["gamma", "beta"])?;
        Ok(InstanceNormParams {
            channels: x.shape[1],
            has_gamma: given[0],
            has_beta: given[1],
            epsilon: epsilon(ctx)?,
        })
    }
}

fn check_channel_rank(
    ctx: &OpContext,
    x: &TensorType,
    ranks: std::ops::RangeInclusive<usize>,
) -> Result<(), OpError> {
    if !ranks.contains(&x.rank()) {
        return Err(ctx
            .error(format_args!(
                "x has rank {} but must be [N, C, *spatial] of rank {} to {}",
                x.rank(),
                ranks.start(),
                ranks.end()
            ))
            .with_subject("x"));
    }
    Ok(())
}

/// max_pool and avg_pool resolved, per spatial dim of `x = [N, C, *input_spatial]`: the
/// window, its stride, and the padding before and after (same and same_lower resolved).
/// Padded positions never win a max; avg_pool counts them in the divisor unless
/// `exclude_padding_from_average`. With `ceil_mode` the last window may reach past the
/// padded input; the part beyond it is not counted either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolParams {
    /// Window size per spatial dim, each at least 1.
    pub kernel_sizes: Vec<usize>,
    /// Step between windows per spatial dim, each at least 1 (default 1).
    pub strides: Vec<usize>,
    /// How padding was specified (`pad_type`, read case-insensitively).
    pub pad_type: PadType,
    /// Padding before each spatial dim, in elements, with `same`/`same_lower` already resolved.
    pub pad_before: Vec<usize>,
    /// Padding after each spatial dim, in elements.
    pub pad_after: Vec<usize>,
    /// Whether output sizes round up, so a last partial window counts (1 or 2 spatial dims only).
    pub ceil_mode: bool,
    /// avg_pool only (default false); false for max_pool.
    pub exclude_padding_from_average: bool,
    /// N: x's dim 0.
    pub batch: usize,
    /// C: x's dim 1; pooling keeps it.
    pub channels: usize,
    /// x's spatial dims (after N and C).
    pub input_spatial: Vec<usize>,
    /// The result's spatial dims, each at least 1.
    pub output_spatial: Vec<usize>,
}

impl PoolParams {
    /// The result shape `[N, C, *output_spatial]`.
    pub fn output_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.channels];
        s.extend_from_slice(&self.output_spatial);
        s
    }

    /// Checks a `max_pool` or `avg_pool` op (x of rank 3 to 5, one kernel size and stride per
    /// spatial dim, a known pad_type, non-negative pad, ceil_mode's restrictions, a window that
    /// fits)
    /// and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<PoolParams, OpError> {
        let x = ctx.tensor("x")?;
        check_channel_rank(ctx, &x, 3..=5)?;
        let n = x.rank() - 2;
        let kernel_sizes =
            positive_per_dim(ctx, "kernel_sizes", n)?.ok_or_else(|| ctx.missing("kernel_sizes"))?;
        let strides = positive_per_dim(ctx, "strides", n)?.unwrap_or_else(|| vec![1; n]);
        // pool.py lowercases pad_type before checking it.
        let pad_type = match ctx.const_str("pad_type")? {
            None => PadType::Valid,
            Some(name) => PadType::from_name(&name.to_ascii_lowercase()).ok_or_else(|| {
                ctx.error(format_args!("unknown pad_type \"{name}\""))
                    .with_subject("pad_type")
                    .with_help("pad_type is valid, same, same_lower or custom")
            })?,
        };
        let pad = match ctx.const_i64s("pad")? {
            None => None,
            Some(p) => {
                if p.len() != 2 * n {
                    return Err(ctx
                        .error(format_args!(
                            "pad has {} values but x has {n} spatial dims, which take {} (before and after each)",
                            p.len(),
                            2 * n
                        ))
                        .with_subject("pad"));
                }
                let values = p
                    .iter()
                    .map(|&v| {
                        usize::try_from(v).map_err(|_| {
                            ctx.error(format_args!("pad {p:?} has a negative value {v}"))
                                .with_subject("pad")
                        })
                    })
                    .collect::<Result<Vec<usize>, OpError>>()?;
                Some(values)
            }
        };
        let ceil_mode = ctx.const_bool("ceil_mode")?.unwrap_or(false);
        if ceil_mode {
            if n > 2 {
                return Err(ctx
                    .error(format_args!(
                        "ceil_mode works for 1 or 2 spatial dims, not {n} (pool.py)"
                    ))
                    .with_subject("ceil_mode"));
            }
            if pad_type == PadType::Same {
                return Err(ctx
                    .error("ceil_mode must be false when pad_type is same")
                    .with_subject("ceil_mode"));
            }
            if let Some(p) = &pad
                && (0..n).any(|i| p[2 * i] != p[2 * i + 1])
            {
                return Err(ctx
                    .error(format_args!("pad {p:?} is not symmetric, which ceil_mode requires"))
                    .with_subject("pad"));
            }
        }
        let exclude_padding_from_average = if ctx.kind == OpKind::AvgPool {
            ctx.const_bool("exclude_padding_from_average")?.unwrap_or(false)
        } else {
            false
        };

        let too_big = || ctx.error("the padded input size overflows").with_subject("pad");
        let mut pad_before = Vec::with_capacity(n);
        let mut pad_after = Vec::with_capacity(n);
        let mut output_spatial = Vec::with_capacity(n);
        for i in 0..n {
            let (size, k, s) = (x.shape[2 + i], kernel_sizes[i], strides[i]);
            let (before, after) = match pad_type {
                PadType::Valid => (0, 0),
                PadType::Custom => pad.as_ref().map_or((0, 0), |p| (p[2 * i], p[2 * i + 1])),
                PadType::Same | PadType::SameLower => {
                    pad_type.same_padding(size, k, s).ok_or_else(too_big)?
                }
            };
            let padded = size
                .checked_add(before)
                .and_then(|v| v.checked_add(after))
                .filter(|&v| i64::try_from(v).is_ok())
                .ok_or_else(too_big)?;
            let out = pool_output_size(padded, before + after, size, k, s, ceil_mode);
            if out <= 0 {
                let what = if before + after > 0 { "padded input" } else { "input" };
                return Err(ctx
                    .error(format_args!(
                        "kernel size {k} exceeds the {what} size {padded} in spatial dim {i}"
                    ))
                    .with_subject("kernel_sizes"));
            }
            pad_before.push(before);
            pad_after.push(after);
            output_spatial.push(out as usize);
        }
        let p = PoolParams {
            kernel_sizes,
            strides,
            pad_type,
            pad_before,
            pad_after,
            ceil_mode,
            exclude_padding_from_average,
            batch: x.shape[0],
            channels: x.shape[1],
            input_spatial: x.shape[2..].to_vec(),
            output_spatial,
        };
        product(ctx, &p.output_shape(), "x")?;
        Ok(p)
    }
}

/// One output size of _utils.py `spatial_dimensions_out_shape`, in integers:
/// `floor((padded - k) / s) + 1`, or with `ceil_mode` `floor((padded - k + s - 1) / s) + 1`,
/// less one when that last window would start at or past `size + total_pad / 2` (only with
/// padding). Zero or less means no window fits.
fn pool_output_size(
    padded: usize,
    total_pad: usize,
    size: usize,
    k: usize,
    s: usize,
    ceil_mode: bool,
) -> i128 {
    // i128 holds every intermediate: padded fits in i64 (checked), k and s in i32.
    let (padded, total_pad, size, k, s) =
        (padded as i128, total_pad as i128, size as i128, k as i128, s as i128);
    if !ceil_mode {
        return (padded - k).div_euclid(s) + 1;
    }
    let mut out = (padded - k + s - 1).div_euclid(s) + 1;
    // (out - 1) * s >= size + total_pad / 2, doubled to stay in integers.
    if total_pad > 0 && 2 * (out - 1) * s >= 2 * size + total_pad {
        out -= 1;
    }
    out
}

/// prelu resolved: x is `[B, C, *spatial]` with 1 to 3 spatial dims and `alpha` holds one
/// slope per channel, `[C]`: `y = x` where `x > 0`, else `alpha[c] x` (iOS15/activation.py:
/// `max(x, 0) + min(x, 0) alpha`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreluParams {
    /// C: x's dim 1, the length of `alpha`.
    pub channels: usize,
}

impl PreluParams {
    /// Checks a `prelu` op (x of rank 3 to 5, `alpha` `[C]`; for a rank other than 4, one slope for
    /// every channel) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<PreluParams, OpError> {
        let x = ctx.tensor("x")?;
        check_channel_rank(ctx, &x, 3..=5)?;
        channel_vectors(ctx, &x, &["alpha"])?;
        // activation.py accepts a rank-3 or rank-5 x only with one slope for every channel
        // (within 1e-5 of the first); the PyTorch frontend expands x to rank 4 instead. A
        // slope vector in a weight file cannot be read here, so only inline ones are checked.
        if x.rank() != 4
            && let Some(lit) = ctx.const_literal("alpha")?
            && let Some(values) = lit.tensor_data().and_then(|d| d.to_f64_vec())
            && let Some(first) = values.first()
            && let Some(other) = values.iter().find(|v| (*v - first).abs() > 1e-5)
        {
            let rank = x.rank();
            let message = format!(
                "alpha holds different slopes ({first} and {other}), which prelu takes only \
                 when x has rank 4, not {rank}"
            );
            return Err(ctx
                .error(message)
                .with_subject("alpha")
                .with_help("expand x to rank 4, as coremltools does for PyTorch's PReLU"));
        }
        Ok(PreluParams { channels: x.shape[1] })
    }
}

/// Where upsample_bilinear samples the input for each output position, along one dim of `n`
/// input and `m` output elements (iOS15/image_resizing.py upsample_bilinear notes; the
/// spacing is recomputed from the sizes, as PyTorch's `recompute_scale_factor=True`). The
/// position is clamped to `[0, n - 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BilinearGrid {
    /// `align_corners = true`: `i (n - 1) / (m - 1)`, the corners of input and output
    /// aligned (0 when `m` is 1).
    AlignCorners,
    /// `align_corners = false` with `half_pixel_centers` true (its default then): pixel
    /// centers aligned, `(i + 0.5) n / m - 0.5`.
    HalfPixelCenters,
    /// `align_corners = false`, `half_pixel_centers = false` (iOS16): `i n / m`, TensorFlow's
    /// legacy resize.
    Asymmetric,
}

impl BilinearGrid {
    /// The sampling position of output `i`, in input coordinates.
    pub fn position(self, i: usize, n: usize, m: usize) -> f64 {
        let (i, nf, mf) = (i as f64, n as f64, m as f64);
        let p = match self {
            BilinearGrid::AlignCorners if m > 1 => i * (nf - 1.0) / (mf - 1.0),
            BilinearGrid::AlignCorners => 0.0,
            BilinearGrid::HalfPixelCenters => (i + 0.5) * nf / mf - 0.5,
            BilinearGrid::Asymmetric => i * nf / mf,
        };
        p.clamp(0.0, (nf - 1.0).max(0.0))
    }
}

/// upsample_bilinear resolved: the sizes (as upsample_nearest_neighbor), `align_corners`
/// (default true) and iOS16's `half_pixel_centers` (default `!align_corners`).
#[derive(Clone, Debug, PartialEq)]
pub struct UpsampleBilinearParams {
    /// The input and output sizes, resolved as for `upsample_nearest_neighbor`.
    pub upsample: UpsampleParams,
    /// Whether the corner samples of input and output coincide (default true).
    pub align_corners: bool,
    /// Whether pixel centres are aligned (iOS16; default `!align_corners`).
    pub half_pixel_centers: bool,
}

impl UpsampleBilinearParams {
    /// Checks an `upsample_bilinear` op (x of rank 3 or more, positive scale factors that leave
    /// every output dim at least 1) and resolves its sizes and flags.
    pub fn resolve(ctx: &OpContext) -> Result<UpsampleBilinearParams, OpError> {
        let upsample = UpsampleParams::resolve(ctx)?;
        let align_corners = ctx.const_bool("align_corners")?.unwrap_or(true);
        let half_pixel_centers = ctx.const_bool("half_pixel_centers")?.unwrap_or(!align_corners);
        Ok(UpsampleBilinearParams { upsample, align_corners, half_pixel_centers })
    }

    /// The sampling grid; None when both `align_corners` and `half_pixel_centers` are true, a
    /// combination coremltools does not define (TensorFlow, where the flags come from, rejects
    /// it).
    pub fn grid(&self) -> Option<BilinearGrid> {
        match (self.align_corners, self.half_pixel_centers) {
            (true, false) => Some(BilinearGrid::AlignCorners),
            (false, true) => Some(BilinearGrid::HalfPixelCenters),
            (false, false) => Some(BilinearGrid::Asymmetric),
            (true, true) => None,
        }
    }
}

/// kernel_sizes or strides: one value of at least 1 per spatial dim; None when absent.
fn positive_per_dim(ctx: &OpContext, name: &str, n: usize) -> Result<Option<Vec<usize>>, OpError> {
    let Some(v) = ctx.const_i64s(name)? else { return Ok(None) };
    if v.len() != n {
        return Err(ctx
            .error(format_args!("{name} has {} values but x has {n} spatial dims", v.len()))
            .with_subject(name));
    }
    v.iter()
        .map(|&s| {
            // Bounded so that window arithmetic on them cannot overflow.
            usize::try_from(s).ok().filter(|&s| s >= 1 && s <= i32::MAX as usize).ok_or_else(|| {
                ctx.error(format_args!("{name} {v:?} has {s}; each must be at least 1"))
                    .with_subject(name)
            })
        })
        .collect::<Result<Vec<usize>, OpError>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Literal, TensorData};
    use crate::ops::testing::{TestOp, assert_error, f16, op, t};
    use half::f16 as h;

    fn halves(shape: &[usize]) -> Literal {
        let n = shape.iter().product();
        Literal::tensor(Type::tensor(DType::Fp16, shape), TensorData::F16(vec![h::ONE; n]))
    }

    fn floats(shape: &[usize]) -> Literal {
        let n = shape.iter().product();
        Literal::tensor(Type::tensor(DType::Fp32, shape), TensorData::F32(vec![1.0; n]))
    }

    fn linear(x: &[usize], w: &[usize]) -> TestOp {
        op(OpKind::Linear).var("x", f16(x)).lit("weight", halves(w))
    }

    #[test]
    fn linear_as_the_converter_writes_it() {
        // mlp: x [4, 16], weight [32, 16], bias [32]; transformer: rank 3.
        let l = linear(&[4, 16], &[32, 16]).lit("bias", halves(&[32]));
        assert_eq!(l.infer_one(), f16(&[4, 32]));
        let p = LinearParams::resolve(&l.ctx()).unwrap();
        assert_eq!((p.rows, p.in_features, p.out_features, p.has_bias), (4, 16, 32, true));
        let l = linear(&[1, 16, 32], &[96, 32]).lit("bias", halves(&[96]));
        assert_eq!(l.infer_one(), f16(&[1, 16, 96]));
        assert_eq!(LinearParams::resolve(&l.ctx()).unwrap().rows, 16);
        // Rank 1 and no bias.
        let l = linear(&[16], &[3, 16]);
        assert_eq!(l.infer_one(), f16(&[3]));
        let p = LinearParams::resolve(&l.ctx()).unwrap();
        assert_eq!((p.rows, p.has_bias), (1, false));
        // int32 throughout, and iOS17's fp32 weights under fp16 x.
        let ints = Literal::tensor(Type::tensor(DType::Int32, [2, 3]), TensorData::Int(vec![1; 6]));
        let l = op(OpKind::Linear).var("x", t(DType::Int32, &[5, 3])).lit("weight", ints);
        assert_eq!(l.infer_one(), t(DType::Int32, &[5, 2]));
        let l = op(OpKind::Linear).var("x", f16(&[5, 3])).lit("weight", floats(&[2, 3]));
        assert_eq!(l.infer_one(), f16(&[5, 2]));
    }

    #[test]
    fn linear_errors() {
        let e = linear(&[4, 16], &[32, 8]).error();
        assert_error(&e, "weight", "x [4, 16] has 16 features in its last dim but weight [32, 8]");
        let e = linear(&[4, 16], &[32, 16]).lit("bias", halves(&[16])).error();
        assert_error(&e, "bias", "bias has shape [16] but weight has 32 output features");
        let e = linear(&[4, 16], &[32, 16]).lit("bias", floats(&[32])).error();
        assert_error(&e, "bias", "bias is fp32 but weight is fp16");
        let e = linear(&[1, 2, 3, 16], &[32, 16]).error();
        assert_error(&e, "x", "must be a tensor of rank 1 to 3");
        let e = op(OpKind::Linear).var("x", f16(&[4, 16])).var("weight", f16(&[32, 16])).error();
        assert_error(&e, "weight", "weight must be a compile-time constant");
        let e = linear(&[4, 16], &[32, 16, 1]).error();
        assert_error(&e, "weight", "weight is a rank-3 tensor");
        let ints = Literal::tensor(Type::tensor(DType::Int32, [2, 3]), TensorData::Int(vec![1; 6]));
        let e = op(OpKind::Linear).var("x", f16(&[5, 3])).lit("weight", ints).error();
        assert_error(&e, "weight", "weight is int32 but x is fp16; integer and float");
        let e = op(OpKind::Linear).var("x", t(DType::Int8, &[5, 3])).lit("weight", halves(&[2, 3]));
        assert_error(&e.error(), "x", "x is int8 but must be fp16, fp32 or int32");
    }

    #[test]
    fn layer_norm_as_the_converter_writes_it() {
        // transformer: axes = [-1], gamma and beta [32], epsilon an fp16 scalar (1e-5 rounded
        // to fp16 is the 1.0013580322265625e-05 of the converter's printout).
        let l = op(OpKind::LayerNorm)
            .var("x", f16(&[1, 16, 32]))
            .ints("axes", &[-1])
            .lit("gamma", halves(&[32]))
            .lit("beta", halves(&[32]))
            .lit("epsilon", Literal::fp16(1e-5));
        assert_eq!(l.infer_one(), f16(&[1, 16, 32]));
        let p = LayerNormParams::resolve(&l.ctx()).unwrap();
        assert_eq!((p.axes, p.normalized_shape), (vec![2], vec![32]));
        assert!(p.has_gamma && p.has_beta);
        assert_eq!(p.epsilon, 1.0013580322265625e-05);
    }

    #[test]
    fn layer_norm_axes_and_defaults() {
        let l = op(OpKind::LayerNorm).var("x", f16(&[3, 4, 5]));
        let p = LayerNormParams::resolve(&l.ctx()).unwrap();
        assert_eq!((p.axes, p.normalized_shape), (vec![0, 1, 2], vec![3, 4, 5]));
        assert_eq!((p.has_gamma, p.has_beta, p.epsilon), (false, false, 1e-5));
        // Axes in any order and repeated: gamma follows the axis order of x.
        let l = op(OpKind::LayerNorm)
            .var("x", f16(&[3, 4, 5, 6]))
            .ints("axes", &[3, -3, 1])
            .lit("gamma", halves(&[4, 6]));
        let p = LayerNormParams::resolve(&l.ctx()).unwrap();
        assert_eq!((p.axes, p.normalized_shape), (vec![1, 3], vec![4, 6]));
        let e = op(OpKind::LayerNorm)
            .var("x", f16(&[3, 4, 5, 6]))
            .ints("axes", &[3, 1])
            .lit("beta", halves(&[6, 4]))
            .error();
        assert_error(
            &e,
            "beta",
            "beta has shape [6, 4] but x [3, 4, 5, 6] normalized over axes [1, 3] takes [4, 6]",
        );
        let e = op(OpKind::LayerNorm).var("x", f16(&[3, 4])).ints("axes", &[2]).error();
        assert_error(&e, "axes", "axes [2] has 2, out of range for rank 2");
        let e = op(OpKind::LayerNorm)
            .var("x", f16(&[3, 4]))
            .ints("axes", &[1])
            .lit("gamma", halves(&[4]))
            .lit("beta", floats(&[4]))
            .error();
        assert_error(&e, "beta", "beta is fp32 but gamma is fp16");
        let e = op(OpKind::LayerNorm)
            .var("x", f16(&[3, 4]))
            .lit("epsilon", Literal::fp32(f32::INFINITY))
            .error();
        assert_error(&e, "epsilon", "epsilon inf is not finite");
    }

    #[test]
    fn batch_and_instance_norm() {
        // cnn: [1, 16, 4, 4] with per-channel parameters.
        let b = op(OpKind::BatchNorm)
            .var("x", f16(&[1, 16, 4, 4]))
            .lit("mean", halves(&[16]))
            .lit("variance", halves(&[16]))
            .lit("gamma", halves(&[16]))
            .lit("beta", halves(&[16]))
            .lit("epsilon", Literal::fp16(1e-5));
        assert_eq!(b.infer_one(), f16(&[1, 16, 4, 4]));
        let p = BatchNormParams::resolve(&b.ctx()).unwrap();
        assert_eq!((p.channels, p.has_gamma, p.has_beta), (16, true, true));
        let b = op(OpKind::BatchNorm)
            .var("x", f16(&[2, 3, 5]))
            .lit("mean", halves(&[3]))
            .lit("variance", halves(&[3]));
        let p = BatchNormParams::resolve(&b.ctx()).unwrap();
        assert_eq!((p.has_gamma, p.has_beta, p.epsilon), (false, false, 1e-5));
        let e = op(OpKind::BatchNorm)
            .var("x", f16(&[2, 3, 5]))
            .lit("mean", halves(&[3]))
            .lit("variance", halves(&[4]))
            .error();
        assert_error(&e, "variance", "variance has shape [4] but x [2, 3, 5] has 3 channels");
        let e = op(OpKind::BatchNorm).var("x", f16(&[2, 3, 5])).lit("mean", halves(&[3])).error();
        assert_error(&e, "variance", "missing required input variance");
        let e = op(OpKind::BatchNorm)
            .var("x", f16(&[2, 3]))
            .lit("mean", halves(&[3]))
            .lit("variance", halves(&[3]))
            .error();
        assert_error(&e, "x", "must be a tensor of rank 3 to 5");

        let i = op(OpKind::InstanceNorm)
            .var("x", f16(&[1, 16, 4, 4]))
            .lit("gamma", halves(&[16]))
            .lit("beta", halves(&[16]))
            .lit("epsilon", Literal::fp16(1e-5));
        assert_eq!(i.infer_one(), f16(&[1, 16, 4, 4]));
        let p = InstanceNormParams::resolve(&i.ctx()).unwrap();
        assert_eq!((p.channels, p.has_gamma, p.has_beta), (16, true, true));
        let e = op(OpKind::InstanceNorm).var("x", f16(&[1, 2, 3, 4, 5])).error();
        assert_error(&e, "x", "must be a tensor of rank 3 to 4");
        let e = op(OpKind::InstanceNorm).var("x", f16(&[1, 2, 3])).lit("gamma", halves(&[3]));
        assert_error(&e.error(), "gamma", "gamma has shape [3] but x [1, 2, 3] has 2 channels");
        let e = op(OpKind::InstanceNorm).var("x", f16(&[1, 2, 3])).var("beta", f16(&[2]));
        assert_error(&e.error(), "beta", "beta must be a compile-time constant");
    }

    fn pool(kind: OpKind, x: &[usize], k: &[i64], s: &[i64], pad_type: &str) -> TestOp {
        op(kind)
            .var("x", f16(x))
            .ints("kernel_sizes", k)
            .ints("strides", s)
            .string("pad_type", pad_type)
    }

    #[test]
    fn pools_as_the_converter_writes_them() {
        // cnn: 2x2 windows, stride 2, custom zero padding, ceil_mode false.
        let m = pool(OpKind::MaxPool, &[1, 8, 16, 16], &[2, 2], &[2, 2], "custom")
            .ints("pad", &[0, 0, 0, 0])
            .bool("ceil_mode", false);
        assert_eq!(m.infer_one(), f16(&[1, 8, 8, 8]));
        let a = pool(OpKind::AvgPool, &[1, 16, 8, 8], &[2, 2], &[2, 2], "custom")
            .bool("exclude_padding_from_average", false)
            .ints("pad", &[0, 0, 0, 0])
            .bool("ceil_mode", false);
        assert_eq!(a.infer_one(), f16(&[1, 16, 4, 4]));
        let p = PoolParams::resolve(&a.ctx()).unwrap();
        assert_eq!((p.kernel_sizes, p.strides), (vec![2, 2], vec![2, 2]));
        assert_eq!((p.pad_before, p.pad_after), (vec![0, 0], vec![0, 0]));
        assert!(!p.exclude_padding_from_average && !p.ceil_mode);
    }

    #[test]
    fn pool_output_sizes_follow_coremltools() {
        let shape =
            |kind, x: &[usize], k: &[i64], s: &[i64], pt: &str, pad: Option<&[i64]>, ceil| {
                let mut o = pool(kind, x, k, s, pt).bool("ceil_mode", ceil);
                if let Some(p) = pad {
                    o = o.ints("pad", p);
                }
                PoolParams::resolve(&o.ctx()).map(|p| (p.output_spatial, p.pad_before, p.pad_after))
            };
        let max = OpKind::MaxPool;
        // valid: floor((7 - 3) / 2) + 1 = 3.
        assert_eq!(
            shape(max, &[1, 1, 7], &[3], &[2], "valid", None, false),
            Ok((vec![3], vec![0], vec![0]))
        );
        // same: total pad max(0, 2 * ceil(7 / 2) - 7 + 4 - 2) = 3; out ceil(7 / 2) = 4.
        assert_eq!(
            shape(max, &[1, 1, 7], &[4], &[2], "same", None, false),
            Ok((vec![4], vec![1], vec![2]))
        );
        assert_eq!(
            shape(max, &[1, 1, 7], &[4], &[2], "same_lower", None, false),
            Ok((vec![4], vec![2], vec![1]))
        );
        assert_eq!(
            shape(max, &[1, 1, 7], &[4], &[2], "SAME", None, false),
            Ok((vec![4], vec![1], vec![2]))
        );
        // custom, asymmetric.
        assert_eq!(
            shape(max, &[1, 1, 5, 5], &[3, 3], &[1, 2], "custom", Some(&[1, 2, 0, 1]), false),
            Ok((vec![6, 2], vec![1, 0], vec![2, 1]))
        );
        // ceil_mode without padding: ceil((6 - 3) / 2) + 1 = 3 where floor gives 2.
        assert_eq!(
            shape(max, &[1, 1, 6], &[3], &[2], "valid", None, true),
            Ok((vec![3], vec![0], vec![0]))
        );
        assert_eq!(
            shape(max, &[1, 1, 6], &[3], &[2], "valid", None, false),
            Ok((vec![2], vec![0], vec![0]))
        );
        // ceil_mode with padding 1 on 5, k 2, s 2: floor((7 - 2 + 1) / 2) + 1 = 4, and the last
        // window would start at 3 * 2 = 6 >= 5 + 1, so 3.
        assert_eq!(
            shape(max, &[1, 1, 5], &[2], &[2], "custom", Some(&[1, 1]), true),
            Ok((vec![3], vec![1], vec![1]))
        );
        // ... and on 6 (PyTorch's MaxPool1d(2, 2, padding=1, ceil_mode=True) gives 4).
        assert_eq!(
            shape(max, &[1, 1, 6], &[2], &[2], "custom", Some(&[1, 1]), true),
            Ok((vec![4], vec![1], vec![1]))
        );
        // Defaults: strides 1, no padding, and pad ignored unless custom.
        let o = op(max)
            .var("x", f16(&[1, 2, 5]))
            .ints("kernel_sizes", &[2])
            .string("pad_type", "valid")
            .ints("pad", &[3, 3]);
        assert_eq!(o.infer_one(), f16(&[1, 2, 4]));
        // 3-d.
        assert_eq!(
            shape(OpKind::AvgPool, &[1, 1, 4, 5, 6], &[2, 2, 2], &[2, 2, 2], "valid", None, false),
            Ok((vec![2, 2, 3], vec![0, 0, 0], vec![0, 0, 0]))
        );
    }

    #[test]
    fn pool_errors() {
        let max = OpKind::MaxPool;
        let e = pool(max, &[1, 1, 3], &[4], &[1], "valid").error();
        assert_error(&e, "kernel_sizes", "kernel size 4 exceeds the input size 3 in spatial dim 0");
        let e = pool(max, &[1, 1, 3, 3], &[2], &[1, 1], "valid").error();
        assert_error(&e, "kernel_sizes", "kernel_sizes has 1 values but x has 2 spatial dims");
        let e = pool(max, &[1, 1, 3], &[0], &[1], "valid").error();
        assert_error(&e, "kernel_sizes", "kernel_sizes [0] has 0; each must be at least 1");
        let e = pool(max, &[1, 1, 3], &[2], &[-1], "valid").error();
        assert_error(&e, "strides", "strides [-1] has -1; each must be at least 1");
        let e = pool(max, &[1, 1, 3], &[2], &[1], "full").error();
        assert_error(&e, "pad_type", "unknown pad_type \"full\"");
        let e = op(max).var("x", f16(&[1, 1, 3])).ints("kernel_sizes", &[2]).error();
        assert_error(&e, "pad_type", "missing required input pad_type");
        let e = pool(max, &[1, 1, 3], &[2], &[1], "custom").ints("pad", &[1]).error();
        assert_error(&e, "pad", "pad has 1 values but x has 1 spatial dims, which take 2");
        let e = pool(max, &[1, 1, 3], &[2], &[1], "custom").ints("pad", &[1, -1]).error();
        assert_error(&e, "pad", "pad [1, -1] has a negative value -1");
        let e = pool(max, &[1, 1, 3], &[2], &[1], "custom")
            .ints("pad", &[1, 0])
            .bool("ceil_mode", true)
            .error();
        assert_error(&e, "pad", "pad [1, 0] is not symmetric, which ceil_mode requires");
        let e = pool(max, &[1, 1, 3], &[2], &[1], "same").bool("ceil_mode", true).error();
        assert_error(&e, "ceil_mode", "ceil_mode must be false when pad_type is same");
        let e = pool(max, &[1, 1, 3, 3, 3], &[2, 2, 2], &[1, 1, 1], "valid")
            .bool("ceil_mode", true)
            .error();
        assert_error(&e, "ceil_mode", "ceil_mode works for 1 or 2 spatial dims, not 3");
        let e = pool(max, &[1, 1, 3], &[2], &[1], "valid")
            .bool("exclude_padding_from_average", true)
            .error();
        assert_error(&e, "exclude_padding_from_average", "unknown input");
        let e = pool(max, &[1, 3], &[2], &[1], "valid").error();
        assert_error(&e, "x", "must be a tensor of rank 3 to 5");
        let e =
            pool(max, &[1, 1, 3], &[2], &[1], "valid").var("ceil_mode", Type::Scalar(DType::Bool));
        assert_error(&e.error(), "ceil_mode", "ceil_mode must be a compile-time constant");
    }

    #[test]
    fn prelu_takes_a_slope_per_channel() {
        let slopes = |v: &[f32]| {
            Literal::tensor(
                Type::tensor(DType::Fp16, [v.len()]),
                TensorData::F16(v.iter().map(|&x| h::from_f32(x)).collect()),
            )
        };
        let p =
            op(OpKind::Prelu).var("x", f16(&[1, 3, 4, 4])).lit("alpha", slopes(&[0.1, 0.2, 0.3]));
        assert_eq!(p.infer_one(), f16(&[1, 3, 4, 4]));
        assert_eq!(PreluParams::resolve(&p.ctx()).unwrap(), PreluParams { channels: 3 });
        // iOS17: fp32 slopes under fp16 x.
        let p = op(OpKind::Prelu).var("x", f16(&[2, 3, 5])).lit("alpha", floats(&[3]));
        assert_eq!(p.infer_one(), f16(&[2, 3, 5]));
        // Rank 3 and 5 take one slope for every channel only.
        let p = op(OpKind::Prelu).var("x", f16(&[2, 3, 5])).lit("alpha", slopes(&[0.2, 0.2, 0.2]));
        assert_eq!(p.infer_one(), f16(&[2, 3, 5]));
        let e =
            op(OpKind::Prelu).var("x", f16(&[2, 3, 5])).lit("alpha", slopes(&[0.25, 0.5, 0.25]));
        assert_error(&e.error(), "alpha", "alpha holds different slopes (0.25 and 0.5)");
        let e = op(OpKind::Prelu).var("x", f16(&[1, 2, 3, 4])).lit("alpha", halves(&[3])).error();
        assert_error(&e, "alpha", "alpha has shape [3] but x [1, 2, 3, 4] has 2 channels");
        let e = op(OpKind::Prelu).var("x", f16(&[2, 3])).lit("alpha", halves(&[3])).error();
        assert_error(&e, "x", "must be a tensor of rank 3 to 5");
        let e = op(OpKind::Prelu).var("x", f16(&[1, 2, 3])).var("alpha", f16(&[2])).error();
        assert_error(&e, "alpha", "alpha must be a compile-time constant");
        let e = op(OpKind::Prelu).var("x", f16(&[1, 2, 3])).lit("alpha", Literal::fp16(0.1));
        assert_error(&e.error(), "alpha", "must be a rank-1 tensor");
        let e = op(OpKind::Prelu).var("x", f16(&[1, 2, 3])).error();
        assert_error(&e, "alpha", "missing required input alpha");
    }

    #[test]
    fn upsample_bilinear_modes_and_grid() {
        let up = op(OpKind::UpsampleBilinear)
            .var("x", f16(&[1, 1, 2]))
            .int("scale_factor_height", 1)
            .int("scale_factor_width", 3)
            .bool("align_corners", true);
        assert_eq!(up.infer_one(), f16(&[1, 1, 6]));
        let p = UpsampleBilinearParams::resolve(&up.ctx()).unwrap();
        assert_eq!(p.grid(), Some(BilinearGrid::AlignCorners));
        // Defaults: scales 1, align_corners true.
        let d = op(OpKind::UpsampleBilinear).var("x", f16(&[1, 3, 4]));
        let p = UpsampleBilinearParams::resolve(&d.ctx()).unwrap();
        assert_eq!(p.upsample.output_shape, vec![1, 3, 4]);
        assert!(p.align_corners && !p.half_pixel_centers);
        // align_corners false: half_pixel_centers defaults to true.
        let f = op(OpKind::UpsampleBilinear)
            .var("x", f16(&[1, 1, 2]))
            .lit("scale_factor_width", Literal::fp32(2.6))
            .bool("align_corners", false);
        assert_eq!(f.infer_one(), f16(&[1, 1, 5]));
        let p = UpsampleBilinearParams::resolve(&f.ctx()).unwrap();
        assert_eq!(p.grid(), Some(BilinearGrid::HalfPixelCenters));
        let a = f.bool("half_pixel_centers", false);
        assert_eq!(
            UpsampleBilinearParams::resolve(&a.ctx()).unwrap().grid(),
            Some(BilinearGrid::Asymmetric)
        );
        let both =
            op(OpKind::UpsampleBilinear).var("x", f16(&[1, 1, 2])).bool("half_pixel_centers", true);
        assert_eq!(UpsampleBilinearParams::resolve(&both.ctx()).unwrap().grid(), None);
        // The grid points of coremltools' notes for 2 inputs.
        let points = |g: BilinearGrid, m: usize| -> Vec<f64> {
            (0..m).map(|i| (g.position(i, 2, m) * 100.0).round() / 100.0).collect()
        };
        assert_eq!(points(BilinearGrid::HalfPixelCenters, 5), [0.0, 0.1, 0.5, 0.9, 1.0]);
        assert_eq!(points(BilinearGrid::AlignCorners, 5), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(points(BilinearGrid::HalfPixelCenters, 6), [0.0, 0.0, 0.33, 0.67, 1.0, 1.0]);
        assert_eq!(points(BilinearGrid::AlignCorners, 6), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(points(BilinearGrid::Asymmetric, 4), [0.0, 0.5, 1.0, 1.0]);
        assert_eq!(BilinearGrid::AlignCorners.position(0, 7, 1), 0.0);
        let e = op(OpKind::UpsampleBilinear).var("x", f16(&[1, 1, 2])).int("align_corners", 1);
        assert_error(&e.error(), "align_corners", "align_corners is int32 but must be bool");
        let e = op(OpKind::UpsampleBilinear).var("x", f16(&[2, 2])).error();
        assert_error(&e, "x", "must be a tensor of rank 3 or more");
    }
}
