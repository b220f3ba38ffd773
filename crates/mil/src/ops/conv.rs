//! conv: 1-3 dimensional cross-correlation with groups, strides, dilations and padding
//! (coremltools ops/defs/iOS15/conv.py, output sizes from ops/defs/_utils.py
//! `spatial_dimensions_out_shape` and `aggregated_pad`).

use crate::ir::Type;

use super::helpers::result;
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError};

pub(super) static CONV: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::between(3, 5)),
        // Not necessarily constant: dynamic weights come in as inputs (REFERENCE.md §2).
        InputSpec::required("weight", DTypes::Float).ranks(Ranks::between(3, 5)),
        InputSpec::optional("bias", DTypes::Float).constant().ranks(Ranks::VECTOR).default("zeros"),
        InputSpec::optional("strides", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("1 in every spatial dim"),
        InputSpec::optional("pad_type", DTypes::String)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("\"valid\""),
        InputSpec::optional("pad", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("zeros (read only with pad_type custom)"),
        InputSpec::optional("dilations", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("1 in every spatial dim"),
        InputSpec::optional("groups", DTypes::Int).constant().ranks(Ranks::SCALAR).default("1"),
    ],
    attributes: NAME_ONLY,
};

/// How conv pads its input (coremltools conv.py `pad_type`, default valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadType {
    /// No padding.
    Valid,
    /// Output size ceil(in / stride); an odd total pad puts the extra element after.
    Same,
    /// Like `Same`, but the extra element goes before.
    SameLower,
    /// The `pad` input: before and after each spatial dim.
    Custom,
}

impl PadType {
    /// The pad type spelled `name` in MIL (`"valid"`, `"same"`, `"same_lower"`, `"custom"`);
    /// `None` otherwise (case-sensitive).
    pub fn from_name(name: &str) -> Option<PadType> {
        match name {
            "valid" => Some(PadType::Valid),
            "same" => Some(PadType::Same),
            "same_lower" => Some(PadType::SameLower),
            "custom" => Some(PadType::Custom),
            _ => None,
        }
    }

    /// The pad type's spelling in MIL.
    pub fn name(self) -> &'static str {
        match self {
            PadType::Valid => "valid",
            PadType::Same => "same",
            PadType::SameLower => "same_lower",
            PadType::Custom => "custom",
        }
    }

    /// The (before, after) padding `same` or `same_lower` gives one spatial dim of `size`
    /// for a window of `extent` moving by `stride`: the total that makes the output
    /// ceil(size / stride) (_utils.py aggregated_pad), the odd element after for `same` and
    /// before for `same_lower`. None when the total overflows. Only for those two types.
    pub fn same_padding(self, size: usize, extent: usize, stride: usize) -> Option<(usize, usize)> {
        let needed =
            size.div_ceil(stride).saturating_sub(1).checked_mul(stride)?.checked_add(extent)?;
        let total = needed.saturating_sub(size);
        Some(if self == PadType::SameLower {
            (total - total / 2, total / 2)
        } else {
            (total / 2, total - total / 2)
        })
    }
}

/// conv's parameters with defaults applied and padding resolved per spatial dim.
/// `x` is `[N, in_channels, *input_spatial]`, `weight` is
/// `[out_channels, in_channels / groups, *kernel]`, the result is
/// `[N, out_channels, *output_spatial]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// How padding was specified (`valid` when absent).
    pub pad_type: PadType,
    /// Step of the window per spatial dim, each at least 1 (default 1).
    pub strides: Vec<usize>,
    /// Spacing between kernel taps per spatial dim, each at least 1 (default 1).
    pub dilations: Vec<usize>,
    /// Zeros added before each spatial dim (same/same_lower resolved).
    pub pad_before: Vec<usize>,
    /// Zeros added after each spatial dim.
    pub pad_after: Vec<usize>,
    /// Number of channel groups, at least 1, dividing both channel counts (default 1; equal to
    /// `in_channels` for a depthwise conv).
    pub groups: usize,
    /// Whether a `bias` `[out_channels]` is given (absent means zeros).
    pub has_bias: bool,
    /// N: x's dim 0.
    pub batch: usize,
    /// x's dim 1.
    pub in_channels: usize,
    /// weight's dim 0: the result's channel count.
    pub out_channels: usize,
    /// x's spatial dims (1 to 3 of them).
    pub input_spatial: Vec<usize>,
    /// weight's spatial dims: the undilated kernel size.
    pub kernel: Vec<usize>,
    /// The result's spatial dims: `(padded - ((kernel - 1) * dilation + 1)) / stride + 1`.
    pub output_spatial: Vec<usize>,
}

impl ConvParams {
    /// The result shape `[N, out_channels, *output_spatial]`.
    pub fn output_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.out_channels];
        s.extend_from_slice(&self.output_spatial);
        s
    }

    /// Checks a `conv` op (ranks, matching types, channel counts against `groups`, strides,
    /// dilations, pad and bias shapes, a kernel that fits the padded input) and resolves its
    /// parameters.
    pub fn resolve(ctx: &OpContext) -> Result<ConvParams, OpError> {
        let x = ctx.tensor("x")?;
        let w = ctx.tensor("weight")?;
        if !(3..=5).contains(&x.rank()) {
            return Err(ctx
                .error(format_args!(
                    "x has rank {} but must be [N, C, *spatial] with 1 to 3 spatial dims",
                    x.rank()
                ))
                .with_subject("x"));
        }
        if w.rank() != x.rank() {
            return Err(ctx
                .error(format_args!(
                    "weight has rank {} but x has rank {}; weight is [C_out, C_in / groups, *kernel]",
                    w.rank(),
                    x.rank()
                ))
                .with_subject("weight"));
        }
        if w.dtype != x.dtype {
            return Err(ctx
                .error(format_args!("weight is {} but x is {}", w.dtype, x.dtype))
                .with_subject("weight"));
        }
        let n = x.rank() - 2;
        let (in_channels, out_channels) = (x.shape[1], w.shape[0]);

        let groups = ctx.const_i64("groups")?.unwrap_or(1);
        let groups = usize::try_from(groups).ok().filter(|&g| g >= 1).ok_or_else(|| {
            ctx.error(format_args!("groups must be at least 1, not {groups}"))
                .with_subject("groups")
        })?;
        if in_channels % groups != 0 {
            return Err(ctx
                .error(format_args!(
                    "x has {in_channels} channels, which groups = {groups} does not divide"
                ))
                .with_subject("groups"));
        }
        if w.shape[1].checked_mul(groups) != Some(in_channels) {
            return Err(ctx
                .error(format_args!(
                    "weight has {} input channels per group but x has {in_channels} channels (groups = {groups})",
                    w.shape[1]
                ))
                .with_subject("weight")
                .with_help(format!(
                    "weight's second dim must be C_in / groups = {}",
                    in_channels / groups
                )));
        }
        if out_channels % groups != 0 {
            return Err(ctx
                .error(format_args!(
                    "weight has {out_channels} output channels, which groups = {groups} does not divide"
                ))
                .with_subject("weight"));
        }

        let strides = per_spatial_dim(ctx, "strides", n)?;
        let dilations = per_spatial_dim(ctx, "dilations", n)?;

        let pad_type = match ctx.const_str("pad_type")? {
            None => PadType::Valid,
            Some(name) => PadType::from_name(name).ok_or_else(|| {
                ctx.error(format_args!("unknown pad_type \"{name}\""))
                    .with_subject("pad_type")
                    .with_help("pad_type is valid, same, same_lower or custom")
            })?,
        };
        // `pad` is read only for custom padding; real programs pass zeros with valid, so it
        // is accepted (and checked for shape) with every pad type.
        let pad = match ctx.const_i64s("pad")? {
            None => vec![0; 2 * n],
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
                p.iter()
                    .map(|&v| {
                        usize::try_from(v).map_err(|_| {
                            ctx.error(format_args!("pad {p:?} has a negative value {v}"))
                                .with_subject("pad")
                        })
                    })
                    .collect::<Result<Vec<usize>, OpError>>()?
            }
        };

        let too_big =
            |what: &str| ctx.error(format_args!("{what} overflows")).with_subject("weight");
        let mut pad_before = Vec::with_capacity(n);
        let mut pad_after = Vec::with_capacity(n);
        let mut output_spatial = Vec::with_capacity(n);
        for i in 0..n {
            let (size, k, s, d) = (x.shape[2 + i], w.shape[2 + i], strides[i], dilations[i]);
            if k == 0 {
                return Err(ctx
                    .error(format_args!("weight has an empty kernel in spatial dim {i}"))
                    .with_subject("weight"));
            }
            // Dilated kernel extent: (k - 1) * d + 1 (_utils.py effective_kernel).
            let extent = (k - 1)
                .checked_mul(d)
                .and_then(|e| e.checked_add(1))
                .ok_or_else(|| too_big("the dilated kernel extent"))?;
            let (before, after) = match pad_type {
                PadType::Valid => (0, 0),
                PadType::Custom => (pad[2 * i], pad[2 * i + 1]),
                PadType::Same | PadType::SameLower => {
                    pad_type.same_padding(size, extent, s).ok_or_else(|| too_big("the padding"))?
                }
            };
            let padded = size
                .checked_add(before)
                .and_then(|v| v.checked_add(after))
                .ok_or_else(|| too_big("the padded input size"))?;
            if padded < extent {
                let what = if before + after > 0 { "padded input" } else { "input" };
                return Err(ctx
                    .error(format_args!(
                        "kernel extent {extent} (kernel {k}, dilation {d}) exceeds the {what} size {padded} in spatial dim {i}"
                    ))
                    .with_subject("weight"));
            }
            pad_before.push(before);
            pad_after.push(after);
            output_spatial.push((padded - extent) / s + 1);
        }

        let has_bias = match ctx.optional_tensor("bias")? {
            None => false,
            Some(b) => {
                if b.shape != [out_channels] {
                    return Err(ctx
                        .error(format_args!(
                            "bias has shape {:?} but weight has {out_channels} output channels",
                            b.shape
                        ))
                        .with_subject("bias"));
                }
                if b.dtype != x.dtype {
                    return Err(ctx
                        .error(format_args!("bias is {} but x is {}", b.dtype, x.dtype))
                        .with_subject("bias"));
                }
                true
            }
        };

        Ok(ConvParams {
            pad_type,
            strides,
            dilations,
            pad_before,
            pad_after,
            groups,
            has_bias,
            batch: x.shape[0],
            in_channels,
            out_channels,
            input_spatial: x.shape[2..].to_vec(),
            kernel: w.shape[2..].to_vec(),
            output_spatial,
        })
    }
}

/// strides or dilations: one positive value per spatial dim, default all 1.
fn per_spatial_dim(ctx: &OpContext, name: &str, n: usize) -> Result<Vec<usize>, OpError> {
    let Some(v) = ctx.const_i64s(name)? else { return Ok(vec![1; n]) };
    if v.len() != n {
        return Err(ctx
            .error(format_args!("{name} has {} values but x has {n} spatial dims", v.len()))
            .with_subject(name));
    }
    v.iter()
        .map(|&s| {
            usize::try_from(s).ok().filter(|&s| s >= 1).ok_or_else(|| {
                ctx.error(format_args!("{name} {v:?} has {s}; each must be at least 1"))
                    .with_subject(name)
            })
        })
        .collect()
}

pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    let p = ConvParams::resolve(ctx)?;
    Ok(vec![result(x.dtype, p.output_shape())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Literal, Type};
    use crate::ops::OpKind;
    use crate::ops::testing::{TestOp, assert_error, f16, op, t};

    /// A conv as the fixtures write it: every parameter given, valid padding with zero pad.
    fn fixture_conv(x: &[usize], w: &[usize]) -> TestOp {
        op(OpKind::Conv)
            .ints("dilations", &[1, 1])
            .int("groups", 1)
            .ints("pad", &[0, 0, 0, 0])
            .string("pad_type", "valid")
            .ints("strides", &[1, 1])
            .var("weight", f16(w))
            .var("x", f16(x))
    }

    fn conv(x: &[usize], w: &[usize]) -> TestOp {
        op(OpKind::Conv).var("x", f16(x)).var("weight", f16(w))
    }

    #[test]
    fn fixture_1x1_convs() {
        assert_eq!(
            fixture_conv(&[1, 64, 1, 32], &[96, 64, 1, 1]).infer_one(),
            f16(&[1, 96, 1, 32])
        );
        assert_eq!(
            fixture_conv(&[1, 768, 1, 256], &[2048, 768, 1, 1]).infer_one(),
            f16(&[1, 2048, 1, 256])
        );
        // A weight that is an input (dynamic weights) is fine.
        let p =
            ConvParams::resolve(&fixture_conv(&[1, 256, 16, 16], &[256, 256, 1, 1]).ctx()).unwrap();
        assert_eq!(p.output_shape(), vec![1, 256, 16, 16]);
        assert_eq!((p.pad_before, p.pad_after), (vec![0, 0], vec![0, 0]));
    }

    #[test]
    fn defaults_are_valid_unit_strides_one_group() {
        let c = conv(&[2, 3, 10], &[4, 3, 3]);
        assert_eq!(c.infer_one(), f16(&[2, 4, 8]));
        let p = ConvParams::resolve(&c.ctx()).unwrap();
        assert_eq!(p.pad_type, PadType::Valid);
        assert_eq!((p.strides, p.dilations, p.groups, p.has_bias), (vec![1], vec![1], 1, false));
        assert_eq!(p.kernel, vec![3]);
    }

    #[test]
    fn strides_and_dilations_shrink_the_output() {
        // floor((7 - 3) / 2) + 1 = 3; with dilation 2 the extent is 5: floor((7 - 5) / 2) + 1 = 2.
        let c = conv(&[1, 1, 7, 7], &[1, 1, 3, 3]).ints("strides", &[2, 2]);
        assert_eq!(c.infer_one(), f16(&[1, 1, 3, 3]));
        let c =
            conv(&[1, 1, 7, 7], &[1, 1, 3, 3]).ints("strides", &[2, 1]).ints("dilations", &[2, 1]);
        assert_eq!(c.infer_one(), f16(&[1, 1, 2, 5]));
        // 3-d conv.
        let c = conv(&[1, 2, 4, 5, 6], &[8, 2, 2, 2, 2]);
        assert_eq!(c.infer_one(), f16(&[1, 8, 3, 4, 5]));
    }

    #[test]
    fn same_padding_gives_ceil_of_input_over_stride() {
        // in 7, k 4, s 2: out 4, total pad (4-1)*2 + 4 - 7 = 3 -> same 1/2, same_lower 2/1.
        let same = conv(&[1, 1, 7], &[1, 1, 4]).string("pad_type", "same").ints("strides", &[2]);
        assert_eq!(same.infer_one(), f16(&[1, 1, 4]));
        let p = ConvParams::resolve(&same.ctx()).unwrap();
        assert_eq!((p.pad_before, p.pad_after), (vec![1], vec![2]));
        let lower =
            conv(&[1, 1, 7], &[1, 1, 4]).string("pad_type", "same_lower").ints("strides", &[2]);
        assert_eq!(lower.infer_one(), f16(&[1, 1, 4]));
        let p = ConvParams::resolve(&lower.ctx()).unwrap();
        assert_eq!((p.pad_before, p.pad_after), (vec![2], vec![1]));
        // Stride 1, 3x3: one on each side; the pad input is ignored.
        let c = conv(&[1, 3, 5, 6], &[2, 3, 3, 3])
            .string("pad_type", "same")
            .ints("pad", &[9, 9, 9, 9]);
        assert_eq!(c.infer_one(), f16(&[1, 2, 5, 6]));
        let p = ConvParams::resolve(&c.ctx()).unwrap();
        assert_eq!((p.pad_before, p.pad_after), (vec![1, 1], vec![1, 1]));
        // A kernel no wider than the stride needs no padding.
        let c = conv(&[1, 1, 8], &[1, 1, 2]).string("pad_type", "same").ints("strides", &[4]);
        let p = ConvParams::resolve(&c.ctx()).unwrap();
        assert_eq!((p.output_spatial, p.pad_before, p.pad_after), (vec![2], vec![0], vec![0]));
    }

    #[test]
    fn custom_padding_uses_pad() {
        let c = conv(&[1, 1, 5, 5], &[1, 1, 3, 3])
            .string("pad_type", "custom")
            .ints("pad", &[1, 2, 0, 3]);
        assert_eq!(c.infer_one(), f16(&[1, 1, 6, 6]));
        let p = ConvParams::resolve(&c.ctx()).unwrap();
        assert_eq!((p.pad_before, p.pad_after), (vec![1, 0], vec![2, 3]));
        // Without pad, custom pads nothing (coremltools' default is zeros).
        let c = conv(&[1, 1, 5], &[1, 1, 3]).string("pad_type", "custom");
        assert_eq!(c.infer_one(), f16(&[1, 1, 3]));
    }

    #[test]
    fn groups_split_channels() {
        // Depthwise: 8 groups, weight [16, 1, 3, 3].
        let c = conv(&[1, 8, 6, 6], &[16, 1, 3, 3]).int("groups", 8);
        assert_eq!(c.infer_one(), f16(&[1, 16, 4, 4]));
        let c = conv(&[1, 96, 1, 4], &[64, 48, 1, 1]).int("groups", 2);
        assert_eq!(c.infer_one(), f16(&[1, 64, 1, 4]));
    }

    #[test]
    fn bias_must_match_output_channels() {
        let bias = Literal::tensor(
            Type::tensor(DType::Fp16, [4]),
            crate::ir::TensorData::F16(vec![half::f16::ZERO; 4]),
        );
        let c = conv(&[1, 3, 5], &[4, 3, 1]).lit("bias", bias.clone());
        assert!(ConvParams::resolve(&c.ctx()).unwrap().has_bias);
        assert_eq!(c.infer_one(), f16(&[1, 4, 5]));
        let e = conv(&[1, 3, 5], &[5, 3, 1]).lit("bias", bias).error();
        assert_error(&e, "bias", "bias has shape [4] but weight has 5 output channels");
        let e = conv(&[1, 3, 5], &[4, 3, 1]).var("bias", f16(&[4])).error();
        assert_error(&e, "bias", "bias must be a compile-time constant");
    }

    #[test]
    fn channel_mismatches_are_reported_with_numbers() {
        let e = fixture_conv(&[1, 96, 1, 32], &[64, 64, 1, 1]).error();
        assert_error(
            &e,
            "weight",
            "conv: weight has 64 input channels per group but x has 96 channels (groups = 1)",
        );
        let e = conv(&[1, 96, 4], &[64, 48, 1]).int("groups", 5).error();
        assert_error(&e, "groups", "x has 96 channels, which groups = 5 does not divide");
        let e = conv(&[1, 4, 4], &[6, 1, 1]).int("groups", 4).error();
        assert_error(
            &e,
            "weight",
            "weight has 6 output channels, which groups = 4 does not divide",
        );
        let e = conv(&[1, 4, 4], &[6, 4, 1]).int("groups", 0).error();
        assert_error(&e, "groups", "groups must be at least 1, not 0");
    }

    #[test]
    fn shape_and_type_errors() {
        let e = conv(&[1, 4, 4, 4], &[6, 4, 1]).error();
        assert_error(&e, "weight", "weight has rank 3 but x has rank 4");
        let e = conv(&[4, 4], &[6, 4]).error();
        assert_error(
            &e,
            "x",
            "x is a rank-2 tensor (tensor<fp16, [4, 4]>) but must be a tensor of rank 3 to 5",
        );
        let e = op(OpKind::Conv)
            .var("x", f16(&[1, 4, 4]))
            .var("weight", t(DType::Fp32, &[6, 4, 1]))
            .error();
        assert_error(&e, "weight", "weight is fp32 but x is fp16");
        let e = op(OpKind::Conv)
            .var("x", t(DType::Int32, &[1, 4, 4]))
            .var("weight", f16(&[6, 4, 1]))
            .error();
        assert_error(&e, "x", "x is int32 but must be fp16 or fp32");
        let e = conv(&[1, 1, 4], &[1, 1, 5]).error();
        assert_error(
            &e,
            "weight",
            "kernel extent 5 (kernel 5, dilation 1) exceeds the input size 4 in spatial dim 0",
        );
        let e = conv(&[1, 1, 4], &[1, 1, 3])
            .ints("dilations", &[2])
            .string("pad_type", "custom")
            .ints("pad", &[0, 0])
            .error();
        assert_error(
            &e,
            "weight",
            "kernel extent 5 (kernel 3, dilation 2) exceeds the input size 4",
        );
        let e = conv(&[1, 1, 4, 4], &[1, 1, 3, 3]).ints("strides", &[1]).error();
        assert_error(&e, "strides", "strides has 1 values but x has 2 spatial dims");
        let e = conv(&[1, 1, 4, 4], &[1, 1, 3, 3]).ints("dilations", &[1, 0]).error();
        assert_error(&e, "dilations", "dilations [1, 0] has 0; each must be at least 1");
        let e = conv(&[1, 1, 4, 4], &[1, 1, 3, 3]).ints("pad", &[0, 0]).error();
        assert_error(&e, "pad", "pad has 2 values but x has 2 spatial dims, which take 4");
        let e = conv(&[1, 1, 4], &[1, 1, 3]).ints("pad", &[0, -1]).error();
        assert_error(&e, "pad", "pad [0, -1] has a negative value -1");
        let e = conv(&[1, 1, 4], &[1, 1, 3]).string("pad_type", "SAME").error();
        assert_error(&e, "pad_type", "unknown pad_type \"SAME\"");
        let e = conv(&[1, 1, 4], &[1, 1, 3]).var("strides", t(DType::Int32, &[1])).error();
        assert_error(&e, "strides", "strides must be a compile-time constant");
    }
}
