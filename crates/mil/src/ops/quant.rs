//! Affine quantization: quantize and dequantize (coremltools
//! ops/defs/iOS17/quantization_ops.py) and constexpr_affine_dequantize (ops/defs/iOS16/
//! constexpr_ops.py), whose parameters iOS16-style programs write as attributes
//! (fixture 09) and newer ones as inputs; both forms are taken.
//!
//! `quantize`: `clip(round_half_even(x / scale) + zero_point)`; the dequantizing ops:
//! `scale * (q - zero_point)` (REFERENCE.md §6).

use crate::ir::{DType, Literal, TensorType, Type};

use super::helpers::{ConstValues, normalize_axis, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError, OpKind};

const INT8S: DTypes = DTypes::OneOf(&[DType::Int8, DType::UInt8]);

pub(super) static QUANTIZE: Signature = Signature {
    inputs: &[
        InputSpec::required("input", DTypes::Float).ranks(Ranks::at_least(1)),
        InputSpec::optional("zero_point", INT8S)
            .constant()
            .ranks(Ranks::SCALAR_OR_VECTOR)
            .default("0"),
        InputSpec::required("scale", DTypes::Float).constant().ranks(Ranks::SCALAR_OR_VECTOR),
        InputSpec::optional("axis", DTypes::Int)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("none: one scale for the whole tensor"),
        InputSpec::required("output_dtype", DTypes::String).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

pub(super) static DEQUANTIZE: Signature = Signature {
    inputs: &[
        InputSpec::required("input", INT8S).ranks(Ranks::at_least(1)),
        InputSpec::optional("zero_point", INT8S)
            .constant()
            .ranks(Ranks::SCALAR_OR_VECTOR)
            .default("0"),
        InputSpec::required("scale", DTypes::Float).constant().ranks(Ranks::SCALAR_OR_VECTOR),
        InputSpec::optional("axis", DTypes::Int)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("none: one scale for the whole tensor"),
    ],
    attributes: NAME_ONLY,
};

pub(super) static CONSTEXPR_AFFINE_DEQUANTIZE: Signature = Signature {
    inputs: &[
        InputSpec::required("quantized_data", INT8S)
            .constant()
            .ranks(Ranks::at_least(1))
            .or_attribute(),
        // ZeroPointT: uint8, int8, fp32 (constexpr_ops.py).
        InputSpec::required("zero_point", DTypes::OneOf(&[DType::Int8, DType::UInt8, DType::Fp32]))
            .constant()
            .ranks(Ranks::SCALAR_OR_VECTOR)
            .or_attribute(),
        InputSpec::required("scale", DTypes::Float)
            .constant()
            .ranks(Ranks::SCALAR_OR_VECTOR)
            .or_attribute(),
        InputSpec::required("axis", DTypes::Int).constant().ranks(Ranks::SCALAR).or_attribute(),
    ],
    attributes: NAME_ONLY,
};

/// The parameters of quantize, dequantize and constexpr_affine_dequantize. `scale` and
/// `zero_point` hold one value (per tensor) or one per index along `axis`; `zero_point` is
/// `[0]` when absent.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    /// The element type read: fp16/fp32 for quantize, int8/uint8 for the others.
    pub input_dtype: DType,
    /// The element type produced: int8/uint8 for quantize, scale's type for the others.
    pub output_dtype: DType,
    /// The shape of the data (quantize's and dequantize's `input`, or `quantized_data`), and of
    /// the result.
    pub shape: Vec<usize>,
    /// One scale (per tensor) or one per index along `axis`; finite when inline, and non-zero
    /// for quantize.
    pub scale: ConstValues<f32>,
    /// One zero point or one per index along `axis`, in the quantized type; `[0]` when absent
    /// (quantize, dequantize).
    pub zero_point: ConstValues<f32>,
    /// The axis per-axis values run along.
    pub axis: Option<usize>,
    /// constexpr_affine_dequantize's `quantized_data`, as values or a blob reference.
    pub data: Option<ConstValues<f32>>,
}

impl QuantParams {
    /// Checks a `quantize`, `dequantize` or `constexpr_affine_dequantize` op (types, scale and
    /// zero-point shapes against `axis`, finite values) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<QuantParams, OpError> {
        match ctx.kind {
            OpKind::Quantize | OpKind::Dequantize => runtime(ctx),
            OpKind::ConstexprAffineDequantize => constexpr(ctx),
            other => Err(ctx.error(format_args!("{other} is not a quantization op"))),
        }
    }
}

fn required_literal<'a>(ctx: &OpContext<'a>, name: &str) -> Result<&'a Literal, OpError> {
    ctx.const_literal(name)?.ok_or_else(|| ctx.missing(name))
}

fn values(ctx: &OpContext, name: &str, lit: &Literal) -> Result<ConstValues<f32>, OpError> {
    let v = ConstValues::from_literal(lit)
        .ok_or_else(|| ctx.error(format_args!("{name} must hold numbers")).with_subject(name))?;
    if let Some(bad) = v.inline().and_then(|v| v.iter().find(|x| !x.is_finite())) {
        return Err(ctx
            .error(format_args!("{name} holds {bad}, which is not finite"))
            .with_subject(name));
    }
    Ok(v)
}

fn rank_of(lit: &Literal) -> usize {
    lit.ty.shape().map_or(0, <[usize]>::len)
}

/// quantize and dequantize: scalar scale (and zero point) without `axis`, or vectors of
/// length `input.shape[axis]` with it (quantization_ops.py `_check_scale_zp_shapes`).
fn runtime(ctx: &OpContext) -> Result<QuantParams, OpError> {
    let input = ctx.tensor("input")?;
    let scale_lit = required_literal(ctx, "scale")?;
    let zp_lit = ctx.const_literal("zero_point")?;
    let scale_dtype = scale_lit.ty.dtype().unwrap_or(DType::Fp32);

    let (input_dtype, output_dtype) = if ctx.kind == OpKind::Quantize {
        if scale_dtype != input.dtype {
            return Err(ctx
                .error(format_args!("scale is {scale_dtype} but input is {}", input.dtype))
                .with_subject("scale"));
        }
        let name = ctx.const_str("output_dtype")?.ok_or_else(|| ctx.missing("output_dtype"))?;
        let out = match name {
            "int8" => DType::Int8,
            "uint8" => DType::UInt8,
            other => {
                return Err(ctx
                    .error(format_args!("output_dtype \"{other}\" is neither int8 nor uint8"))
                    .with_subject("output_dtype"));
            }
        };
        if let Some(zp) = zp_lit.and_then(|l| l.ty.dtype()).filter(|&d| d != out) {
            return Err(ctx
                .error(format_args!("zero_point is {zp} but output_dtype is {out}"))
                .with_subject("zero_point"));
        }
        (input.dtype, out)
    } else {
        if let Some(zp) = zp_lit.and_then(|l| l.ty.dtype()).filter(|&d| d != input.dtype) {
            return Err(ctx
                .error(format_args!("zero_point is {zp} but input is {}", input.dtype))
                .with_subject("zero_point"));
        }
        (input.dtype, scale_dtype)
    };

    let axis = match ctx.const_i64("axis")? {
        None => None,
        Some(a) => Some(normalize_axis(a, input.rank()).ok_or_else(|| {
            ctx.error(format_args!("axis {a} is out of range for rank {}", input.rank()))
                .with_subject("axis")
        })?),
    };
    match (rank_of(scale_lit), axis) {
        (0, Some(_)) => {
            return Err(ctx
                .error("axis is given but scale is a scalar")
                .with_subject("axis")
                .with_help("per-tensor quantization takes no axis"));
        }
        (0, None) => {
            if let Some(zp) = zp_lit.filter(|l| rank_of(l) != 0) {
                return Err(ctx
                    .error(format_args!("zero_point is {} but scale is a scalar", zp.ty))
                    .with_subject("zero_point"));
            }
        }
        (_, None) => {
            return Err(ctx
                .error(format_args!("scale is {} but no axis is given", scale_lit.ty))
                .with_subject("axis")
                .with_help("per-axis quantization needs axis"));
        }
        (_, Some(a)) => {
            check_per_axis(ctx, "scale", scale_lit, &input, a)?;
            if let Some(zp) = zp_lit {
                if rank_of(zp) != 1 {
                    return Err(ctx
                        .error(format_args!("zero_point is {} but scale is a vector", zp.ty))
                        .with_subject("zero_point"));
                }
                check_per_axis(ctx, "zero_point", zp, &input, a)?;
            }
        }
    }

    let scale = values(ctx, "scale", scale_lit)?;
    if ctx.kind == OpKind::Quantize
        && let Some(v) = scale.inline()
        && v.contains(&0.0)
    {
        return Err(ctx.error("scale holds 0, which quantize divides by").with_subject("scale"));
    }
    let zero_point = match zp_lit {
        Some(l) => values(ctx, "zero_point", l)?,
        None => ConstValues::Inline(vec![0.0]),
    };
    Ok(QuantParams {
        input_dtype,
        output_dtype,
        shape: input.shape,
        scale,
        zero_point,
        axis,
        data: None,
    })
}

/// A per-axis parameter: a vector of length `data.shape[axis]`.
fn check_per_axis(
    ctx: &OpContext,
    name: &str,
    lit: &Literal,
    data: &TensorType,
    axis: usize,
) -> Result<(), OpError> {
    let len = lit.ty.element_count().unwrap_or(0);
    if len != data.shape[axis] {
        return Err(ctx
            .error(format_args!(
                "{name} has {len} values but dim {axis} of {:?} has size {}",
                data.shape, data.shape[axis]
            ))
            .with_subject(name));
    }
    Ok(())
}

/// constexpr_affine_dequantize: scale and zero point each a scalar or a vector of length
/// `quantized_data.shape[axis]`; the result has scale's type (iOS16 constexpr_ops.py).
fn constexpr(ctx: &OpContext) -> Result<QuantParams, OpError> {
    let data_lit = required_literal(ctx, "quantized_data")?;
    let data_ty = data_lit.ty.as_tensor().ok_or_else(|| {
        ctx.error("quantized_data is a dictionary").with_subject("quantized_data")
    })?;
    let scale_lit = required_literal(ctx, "scale")?;
    let zp_lit = required_literal(ctx, "zero_point")?;
    let a = ctx.const_i64("axis")?.ok_or_else(|| ctx.missing("axis"))?;
    let axis = normalize_axis(a, data_ty.rank()).ok_or_else(|| {
        ctx.error(format_args!("axis {a} is out of range for rank {}", data_ty.rank()))
            .with_subject("axis")
    })?;
    for (name, lit) in [("scale", scale_lit), ("zero_point", zp_lit)] {
        if rank_of(lit) == 1 {
            check_per_axis(ctx, name, lit, &data_ty, axis)?;
        }
    }
    let output_dtype = scale_lit.ty.dtype().unwrap_or(DType::Fp32);
    let scale = values(ctx, "scale", scale_lit)?;
    let zero_point = values(ctx, "zero_point", zp_lit)?;
    let data = ConstValues::from_literal(data_lit).ok_or_else(|| {
        ctx.error("quantized_data must hold integers").with_subject("quantized_data")
    })?;
    Ok(QuantParams {
        input_dtype: data_ty.dtype,
        output_dtype,
        shape: data_ty.shape,
        scale,
        zero_point,
        axis: Some(axis),
        data: Some(data),
    })
}

pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let p = QuantParams::resolve(ctx)?;
    Ok(vec![result(p.output_dtype, p.shape)])
}

#[cfg(test)]
mod tests;
