//! Typed [`FunctionBuilder`] methods for the ops of the registry without a hand-written
//! one, and an options struct for each of those with optional inputs (`None` leaves the
//! input out, so that the registry's default applies).
//!
//! Generated from the op registry by `src/builder/generate.rs`; do not edit by hand.
//! Regenerate with `ANEMONE_BLESS=1 cargo test -p anemone-mil --lib builder`.

use crate::ir::{DType, Literal};
use crate::ops::OpKind;

use super::{Arg, BuildError, FunctionBuilder, Var, bool_list, scalar_like};

impl FunctionBuilder<'_> {
    /// `sub`: x - y, numpy broadcasting.
    ///
    /// Result: the numpy broadcast of x's and y's shapes; x and y have one type, which the result
    /// has.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn sub(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Sub;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `real_div`: x / y, numpy broadcasting.
    ///
    /// Result: the numpy broadcast of x's and y's shapes; x and y have one type, which the result
    /// has.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn real_div(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::RealDiv;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `pow`: x raised to y, numpy broadcasting.
    ///
    /// Result: the numpy broadcast of x's and y's shapes; x and y have one type, which the result
    /// has.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn pow(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Pow;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `maximum`: the larger of x and y, numpy broadcasting.
    ///
    /// Result: the numpy broadcast of x's and y's shapes; x and y have one type, which the result
    /// has.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn maximum(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Maximum;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `minimum`: the smaller of x and y, numpy broadcasting.
    ///
    /// Result: the numpy broadcast of x's and y's shapes; x and y have one type, which the result
    /// has.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn minimum(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Minimum;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `exp`: e^x.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn exp(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Exp;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `log`: natural logarithm of x + epsilon.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `o`: the optional inputs (`epsilon`), see [`LogOptions`].
    pub fn log(&mut self, x: &Var, o: &LogOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Log;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = o.epsilon {
            inputs.push(("epsilon", scalar_like(kind, "epsilon", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `sqrt`: square root.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn sqrt(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Sqrt;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `rsqrt`: 1 / sqrt(x + epsilon).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `o`: the optional inputs (`epsilon`), see [`RsqrtOptions`].
    pub fn rsqrt(&mut self, x: &Var, o: &RsqrtOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Rsqrt;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = o.epsilon {
            inputs.push(("epsilon", scalar_like(kind, "epsilon", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `inverse`: 1 / (x + epsilon).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `o`: the optional inputs (`epsilon`), see [`InverseOptions`].
    pub fn inverse(&mut self, x: &Var, o: &InverseOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Inverse;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = o.epsilon {
            inputs.push(("epsilon", scalar_like(kind, "epsilon", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `tanh`: hyperbolic tangent.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn tanh(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Tanh;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `relu`: max(x, 0).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn relu(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Relu;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `sigmoid`: 1 / (1 + e^-x).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn sigmoid(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Sigmoid;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `silu`: x \* sigmoid(x) (swish).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn silu(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Silu;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `gelu`: Gaussian error linear unit: exact (erf), tanh or sigmoid approximation by `mode`.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `o`: the optional inputs (`mode`), see [`GeluOptions`].
    pub fn gelu(&mut self, x: &Var, o: &GeluOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Gelu;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = &o.mode {
            inputs.push(("mode", Literal::string(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `slice_by_index`: a strided slice given by `begin`, `end` and `stride`, with masks.
    ///
    /// Result: per dim, ceil((end - begin) / stride) elements after the masks apply; dims set in
    /// `squeeze_mask` are dropped.
    ///
    /// - `x`: any type, a tensor of rank 1 or more.
    /// - `begin`: a constant integer list, written as int32.
    /// - `end`: a constant integer list, written as int32.
    /// - `o`: the optional inputs (`stride`, `begin_mask`, `end_mask`, `squeeze_mask`), see
    ///   [`SliceByIndexOptions`].
    pub fn slice_by_index(
        &mut self,
        x: &Var,
        begin: &[i32],
        end: &[i32],
        o: &SliceByIndexOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::SliceByIndex;
        let mut inputs: Vec<(&str, Arg)> = vec![
            ("x", x.into()),
            ("begin", Literal::int32_list(begin).into()),
            ("end", Literal::int32_list(end).into()),
        ];
        if let Some(v) = &o.stride {
            inputs.push(("stride", Literal::int32_list(v).into()));
        }
        if let Some(v) = &o.begin_mask {
            inputs.push(("begin_mask", bool_list(v)));
        }
        if let Some(v) = &o.end_mask {
            inputs.push(("end_mask", bool_list(v)));
        }
        if let Some(v) = &o.squeeze_mask {
            inputs.push(("squeeze_mask", bool_list(v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `split`: cuts x along `axis` into `num_splits` equal parts or parts of `split_sizes`.
    ///
    /// Result: one result per part: x's shape with the part's size along `axis`.
    ///
    /// - `x`: any type, a tensor of rank 1 or more.
    /// - `axis`: a constant integer, written as int32.
    /// - `o`: the optional inputs (`num_splits`, `split_sizes`), see [`SplitOptions`].
    ///
    /// Returns every result, in order.
    pub fn split(&mut self, x: &Var, axis: i32, o: &SplitOptions) -> Result<Vec<Var>, BuildError> {
        let kind = OpKind::Split;
        let mut inputs: Vec<(&str, Arg)> =
            vec![("x", x.into()), ("axis", Literal::int32(axis).into())];
        if let Some(v) = o.num_splits {
            inputs.push(("num_splits", Literal::int32(v).into()));
        }
        if let Some(v) = &o.split_sizes {
            inputs.push(("split_sizes", Literal::int32_list(v).into()));
        }
        self.op(kind, kind.name(), &inputs)
    }

    /// `reduce_sum`: sum over `axes`.
    ///
    /// Result: x's shape without the reduced axes, or with them as 1 when `keep_dims`.
    ///
    /// - `x`: fp16, fp32 or an integer type, a tensor of rank 1 or more.
    /// - `o`: the optional inputs (`axes`, `keep_dims`), see [`ReduceSumOptions`].
    pub fn reduce_sum(&mut self, x: &Var, o: &ReduceSumOptions) -> Result<Var, BuildError> {
        let kind = OpKind::ReduceSum;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = &o.axes {
            inputs.push(("axes", Literal::int32_list(v).into()));
        }
        if let Some(v) = o.keep_dims {
            inputs.push(("keep_dims", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `reduce_mean`: mean over `axes`.
    ///
    /// Result: x's shape without the reduced axes, or with them as 1 when `keep_dims`.
    ///
    /// - `x`: fp16, fp32 or an integer type, a tensor of rank 1 or more.
    /// - `o`: the optional inputs (`axes`, `keep_dims`), see [`ReduceMeanOptions`].
    pub fn reduce_mean(&mut self, x: &Var, o: &ReduceMeanOptions) -> Result<Var, BuildError> {
        let kind = OpKind::ReduceMean;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = &o.axes {
            inputs.push(("axes", Literal::int32_list(v).into()));
        }
        if let Some(v) = o.keep_dims {
            inputs.push(("keep_dims", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `reduce_max`: maximum over `axes`.
    ///
    /// Result: x's shape without the reduced axes, or with them as 1 when `keep_dims`.
    ///
    /// - `x`: fp16, fp32 or an integer type, a tensor of rank 1 or more.
    /// - `o`: the optional inputs (`axes`, `keep_dims`), see [`ReduceMaxOptions`].
    pub fn reduce_max(&mut self, x: &Var, o: &ReduceMaxOptions) -> Result<Var, BuildError> {
        let kind = OpKind::ReduceMax;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = &o.axes {
            inputs.push(("axes", Literal::int32_list(v).into()));
        }
        if let Some(v) = o.keep_dims {
            inputs.push(("keep_dims", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `scaled_dot_product_attention`: softmax(Q K^T / sqrt(E) + mask) V.
    ///
    /// Result: query \[\*B, L, E\], key \[\*B, S, E\], value \[\*B, S, EV\] give \[\*B, L, EV\];
    /// the mask broadcasts to \[\*B, L, S\].
    ///
    /// - `query`: fp16 or fp32, a tensor of rank 3 or more.
    /// - `key`: fp16 or fp32, a tensor of rank 3 or more.
    /// - `value`: fp16 or fp32, a tensor of rank 3 or more.
    /// - `o`: the optional inputs (`attn_mask`), see [`ScaledDotProductAttentionOptions`].
    pub fn scaled_dot_product_attention(
        &mut self,
        query: &Var,
        key: &Var,
        value: &Var,
        o: &ScaledDotProductAttentionOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::ScaledDotProductAttention;
        let mut inputs: Vec<(&str, Arg)> =
            vec![("query", query.into()), ("key", key.into()), ("value", value.into())];
        if let Some(v) = &o.attn_mask {
            inputs.push(("attn_mask", v.into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `quantize`: clip(round_half_even(x / scale) + zero_point) to int8 or uint8.
    ///
    /// Result: input's shape, in `output_dtype` (int8 or uint8).
    ///
    /// - `input`: fp16 or fp32, a tensor of rank 1 or more.
    /// - `scale`: fp16 or fp32, a scalar or a rank-1 tensor; a compile-time constant (from
    ///   `constant` or `weight`).
    /// - `output_dtype`: an element type, written as its name.
    /// - `o`: the optional inputs (`zero_point`, `axis`), see [`QuantizeOptions`].
    pub fn quantize(
        &mut self,
        input: &Var,
        scale: &Var,
        output_dtype: DType,
        o: &QuantizeOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::Quantize;
        let mut inputs: Vec<(&str, Arg)> = vec![
            ("input", input.into()),
            ("scale", scale.into()),
            ("output_dtype", Literal::string(output_dtype.name()).into()),
        ];
        if let Some(v) = &o.zero_point {
            inputs.push(("zero_point", v.into()));
        }
        if let Some(v) = o.axis {
            inputs.push(("axis", Literal::int32(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `dequantize`: scale \* (q - zero_point) from int8 or uint8.
    ///
    /// Result: input's shape, in scale's type.
    ///
    /// - `input`: int8 or uint8, a tensor of rank 1 or more.
    /// - `scale`: fp16 or fp32, a scalar or a rank-1 tensor; a compile-time constant (from
    ///   `constant` or `weight`).
    /// - `o`: the optional inputs (`zero_point`, `axis`), see [`DequantizeOptions`].
    pub fn dequantize(
        &mut self,
        input: &Var,
        scale: &Var,
        o: &DequantizeOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::Dequantize;
        let mut inputs: Vec<(&str, Arg)> = vec![("input", input.into()), ("scale", scale.into())];
        if let Some(v) = &o.zero_point {
            inputs.push(("zero_point", v.into()));
        }
        if let Some(v) = o.axis {
            inputs.push(("axis", Literal::int32(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `constexpr_affine_dequantize`: scale \* (q - zero_point) of constant data, computed when the
    /// program loads.
    ///
    /// Result: quantized_data's shape, in scale's type.
    ///
    /// - `quantized_data`: int8 or uint8, a tensor of rank 1 or more; a compile-time constant (from
    ///   `constant` or `weight`).
    /// - `zero_point`: int8, uint8 or fp32, a scalar or a rank-1 tensor; a compile-time constant
    ///   (from `constant` or `weight`).
    /// - `scale`: fp16 or fp32, a scalar or a rank-1 tensor; a compile-time constant (from
    ///   `constant` or `weight`).
    /// - `axis`: a constant integer, written as int32.
    pub fn constexpr_affine_dequantize(
        &mut self,
        quantized_data: &Var,
        zero_point: &Var,
        scale: &Var,
        axis: i32,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::ConstexprAffineDequantize;
        let inputs: [(&str, Arg); 4] = [
            ("quantized_data", quantized_data.into()),
            ("zero_point", zero_point.into()),
            ("scale", scale.into()),
            ("axis", Literal::int32(axis).into()),
        ];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `abs`: absolute value.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn abs(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Abs;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `erf`: Gauss error function.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn erf(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Erf;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `sin`: sine.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn sin(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Sin;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `cos`: cosine.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn cos(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Cos;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `floor`: rounds down.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn floor(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Floor;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `ceil`: rounds up.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn ceil(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Ceil;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `round`: rounds to the nearest integer.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn round(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Round;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `sign`: -1, 0 or 1 by the sign of x.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn sign(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Sign;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `square`: x \* x.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn square(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Square;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `exp2`: 2^x.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn exp2(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Exp2;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `linear`: x weight^T + bias, weight \[out_features, in_features\].
    ///
    /// Result: x \[\*, in_features\] gives \[\*, out_features\]; x's type.
    ///
    /// - `x`: fp16, fp32 or int32, a tensor of rank 1 to 3.
    /// - `weight`: fp16, fp32 or int32, a rank-2 tensor; a compile-time constant (from `constant`
    ///   or `weight`).
    /// - `o`: the optional inputs (`bias`), see [`LinearOptions`].
    pub fn linear(&mut self, x: &Var, weight: &Var, o: &LinearOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Linear;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into()), ("weight", weight.into())];
        if let Some(v) = &o.bias {
            inputs.push(("bias", v.into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `layer_norm`: normalizes over `axes` to zero mean and unit variance, then gamma \* . + beta.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `o`: the optional inputs (`axes`, `gamma`, `beta`, `epsilon`), see [`LayerNormOptions`].
    pub fn layer_norm(&mut self, x: &Var, o: &LayerNormOptions) -> Result<Var, BuildError> {
        let kind = OpKind::LayerNorm;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = &o.axes {
            inputs.push(("axes", Literal::int32_list(v).into()));
        }
        if let Some(v) = &o.gamma {
            inputs.push(("gamma", v.into()));
        }
        if let Some(v) = &o.beta {
            inputs.push(("beta", v.into()));
        }
        if let Some(v) = o.epsilon {
            inputs.push(("epsilon", scalar_like(kind, "epsilon", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `batch_norm`: gamma \* (x - mean) / sqrt(variance + epsilon) + beta per channel, with
    /// constant statistics.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32, a tensor of rank 3 to 5.
    /// - `mean`: fp16 or fp32, a rank-1 tensor; a compile-time constant (from `constant` or
    ///   `weight`).
    /// - `variance`: fp16 or fp32, a rank-1 tensor; a compile-time constant (from `constant` or
    ///   `weight`).
    /// - `o`: the optional inputs (`gamma`, `beta`, `epsilon`), see [`BatchNormOptions`].
    pub fn batch_norm(
        &mut self,
        x: &Var,
        mean: &Var,
        variance: &Var,
        o: &BatchNormOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::BatchNorm;
        let mut inputs: Vec<(&str, Arg)> =
            vec![("x", x.into()), ("mean", mean.into()), ("variance", variance.into())];
        if let Some(v) = &o.gamma {
            inputs.push(("gamma", v.into()));
        }
        if let Some(v) = &o.beta {
            inputs.push(("beta", v.into()));
        }
        if let Some(v) = o.epsilon {
            inputs.push(("epsilon", scalar_like(kind, "epsilon", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `instance_norm`: normalizes each (batch, channel) plane over its spatial dims, then gamma
    /// \* . + beta per channel.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32, a tensor of rank 3 to 4.
    /// - `o`: the optional inputs (`gamma`, `beta`, `epsilon`), see [`InstanceNormOptions`].
    pub fn instance_norm(&mut self, x: &Var, o: &InstanceNormOptions) -> Result<Var, BuildError> {
        let kind = OpKind::InstanceNorm;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = &o.gamma {
            inputs.push(("gamma", v.into()));
        }
        if let Some(v) = &o.beta {
            inputs.push(("beta", v.into()));
        }
        if let Some(v) = o.epsilon {
            inputs.push(("epsilon", scalar_like(kind, "epsilon", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `max_pool`: maximum over sliding windows of the spatial dims.
    ///
    /// Result: x \[N, C, \*spatial\] gives \[N, C, \*out\]; per spatial dim as conv with dilation 1
    /// (ceil_mode rounds up instead of down).
    ///
    /// - `x`: fp16 or fp32, a tensor of rank 3 to 5.
    /// - `kernel_sizes`: a constant integer list, written as int32.
    /// - `pad_type`: a constant string.
    /// - `o`: the optional inputs (`strides`, `pad`, `ceil_mode`), see [`MaxPoolOptions`].
    pub fn max_pool(
        &mut self,
        x: &Var,
        kernel_sizes: &[i32],
        pad_type: &str,
        o: &MaxPoolOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::MaxPool;
        let mut inputs: Vec<(&str, Arg)> = vec![
            ("x", x.into()),
            ("kernel_sizes", Literal::int32_list(kernel_sizes).into()),
            ("pad_type", Literal::string(pad_type).into()),
        ];
        if let Some(v) = &o.strides {
            inputs.push(("strides", Literal::int32_list(v).into()));
        }
        if let Some(v) = &o.pad {
            inputs.push(("pad", Literal::int32_list(v).into()));
        }
        if let Some(v) = o.ceil_mode {
            inputs.push(("ceil_mode", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `avg_pool`: average over sliding windows of the spatial dims.
    ///
    /// Result: x \[N, C, \*spatial\] gives \[N, C, \*out\]; per spatial dim as conv with dilation 1
    /// (ceil_mode rounds up instead of down).
    ///
    /// - `x`: fp16 or fp32, a tensor of rank 3 to 5.
    /// - `kernel_sizes`: a constant integer list, written as int32.
    /// - `pad_type`: a constant string.
    /// - `o`: the optional inputs (`strides`, `pad`, `ceil_mode`, `exclude_padding_from_average`),
    ///   see [`AvgPoolOptions`].
    pub fn avg_pool(
        &mut self,
        x: &Var,
        kernel_sizes: &[i32],
        pad_type: &str,
        o: &AvgPoolOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::AvgPool;
        let mut inputs: Vec<(&str, Arg)> = vec![
            ("x", x.into()),
            ("kernel_sizes", Literal::int32_list(kernel_sizes).into()),
            ("pad_type", Literal::string(pad_type).into()),
        ];
        if let Some(v) = &o.strides {
            inputs.push(("strides", Literal::int32_list(v).into()));
        }
        if let Some(v) = &o.pad {
            inputs.push(("pad", Literal::int32_list(v).into()));
        }
        if let Some(v) = o.ceil_mode {
            inputs.push(("ceil_mode", Literal::bool(v).into()));
        }
        if let Some(v) = o.exclude_padding_from_average {
            inputs.push(("exclude_padding_from_average", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `gather`: picks slices of x along `axis` at `indices`.
    ///
    /// Result: x.shape\[:axis\] + indices.shape\[batch_dims:\] + x.shape\[axis + 1:\].
    ///
    /// - `x`: any type, a tensor of rank 1 or more.
    /// - `indices`: int32, int16, uint16, int8 or uint8.
    /// - `o`: the optional inputs (`axis`, `batch_dims`, `validate_indices`), see
    ///   [`GatherOptions`].
    pub fn gather(&mut self, x: &Var, indices: &Var, o: &GatherOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Gather;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into()), ("indices", indices.into())];
        if let Some(v) = o.axis {
            inputs.push(("axis", Literal::int32(v).into()));
        }
        if let Some(v) = o.batch_dims {
            inputs.push(("batch_dims", Literal::int32(v).into()));
        }
        if let Some(v) = o.validate_indices {
            inputs.push(("validate_indices", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `gather_along_axis`: picks one element of x along `axis` per position of `indices`.
    ///
    /// Result: indices' shape (x's rank, x's dims except along `axis`).
    ///
    /// - `x`: any type, a tensor of rank 1 or more.
    /// - `indices`: int32, int16, uint16, int8 or uint8, a tensor of rank 1 or more.
    /// - `o`: the optional inputs (`axis`, `validate_indices`), see [`GatherAlongAxisOptions`].
    pub fn gather_along_axis(
        &mut self,
        x: &Var,
        indices: &Var,
        o: &GatherAlongAxisOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::GatherAlongAxis;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into()), ("indices", indices.into())];
        if let Some(v) = o.axis {
            inputs.push(("axis", Literal::int32(v).into()));
        }
        if let Some(v) = o.validate_indices {
            inputs.push(("validate_indices", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `expand_dims`: inserts size-1 dims at `axes`.
    ///
    /// Result: x's rank plus one per entry of `axes`, a 1 at each.
    ///
    /// - `x`: any type.
    /// - `axes`: a constant integer list, written as int32.
    pub fn expand_dims(&mut self, x: &Var, axes: &[i32]) -> Result<Var, BuildError> {
        let kind = OpKind::ExpandDims;
        let inputs: [(&str, Arg); 2] =
            [("x", x.into()), ("axes", Literal::int32_list(axes).into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `squeeze`: removes size-1 dims.
    ///
    /// Result: x's shape without the squeezed size-1 dims.
    ///
    /// - `x`: any type, a tensor of rank 1 or more.
    /// - `o`: the optional inputs (`axes`), see [`SqueezeOptions`].
    pub fn squeeze(&mut self, x: &Var, o: &SqueezeOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Squeeze;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = &o.axes {
            inputs.push(("axes", Literal::int32_list(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `stack`: joins equally shaped `values` along a new dim at `axis`.
    ///
    /// Result: the inputs' common shape with a new dim of size len(values) at `axis`.
    ///
    /// - `values`: a tuple of values, each any type.
    /// - `axis`: a constant integer, written as int32.
    pub fn stack(&mut self, values: &[Var], axis: i32) -> Result<Var, BuildError> {
        let kind = OpKind::Stack;
        let inputs: [(&str, Arg); 2] =
            [("values", Arg::Tuple(values.to_vec())), ("axis", Literal::int32(axis).into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `tile`: repeats x `reps[i]` times along dim i.
    ///
    /// Result: dim i is x.shape\[i\] \* reps\[i\].
    ///
    /// - `x`: any type, a tensor of rank 1 or more.
    /// - `reps`: a constant integer list, written as int32.
    pub fn tile(&mut self, x: &Var, reps: &[i32]) -> Result<Var, BuildError> {
        let kind = OpKind::Tile;
        let inputs: [(&str, Arg); 2] =
            [("x", x.into()), ("reps", Literal::int32_list(reps).into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `pad`: pads the dims with a constant, a reflection or a copy of the edge.
    ///
    /// Result: each dim grows by its before and after amounts (the last len(pad) / 2 dims).
    ///
    /// - `x`: any type, a tensor of rank 1 or more.
    /// - `pad`: a constant integer list, written as int32.
    /// - `o`: the optional inputs (`mode`, `constant_val`), see [`PadOptions`].
    pub fn pad(&mut self, x: &Var, pad: &[i32], o: &PadOptions) -> Result<Var, BuildError> {
        let kind = OpKind::Pad;
        let mut inputs: Vec<(&str, Arg)> =
            vec![("x", x.into()), ("pad", Literal::int32_list(pad).into())];
        if let Some(v) = &o.mode {
            inputs.push(("mode", Literal::string(v).into()));
        }
        if let Some(v) = o.constant_val {
            inputs.push(("constant_val", scalar_like(kind, "constant_val", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `band_part`: keeps a band of `lower` sub- and `upper` super-diagonals of the last two dims,
    /// zeroes the rest.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: any type, a tensor of rank 2 or more.
    /// - `o`: the optional inputs (`lower`, `upper`), see [`BandPartOptions`].
    pub fn band_part(&mut self, x: &Var, o: &BandPartOptions) -> Result<Var, BuildError> {
        let kind = OpKind::BandPart;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = o.lower {
            inputs.push(("lower", Literal::int32(v).into()));
        }
        if let Some(v) = o.upper {
            inputs.push(("upper", Literal::int32(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `select`: a where cond is true, else b (numpy where, broadcasting).
    ///
    /// Result: the numpy broadcast of cond's, a's and b's shapes; a's type.
    ///
    /// - `cond`: bool.
    /// - `a`: fp16, fp32, bool, int8, int16, int32, int64, uint8, uint16, uint32 or uint64.
    /// - `b`: fp16, fp32, bool, int8, int16, int32, int64, uint8, uint16, uint32 or uint64.
    pub fn select(&mut self, cond: &Var, a: &Var, b: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Select;
        let inputs: [(&str, Arg); 3] = [("cond", cond.into()), ("a", a.into()), ("b", b.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `equal`: x == y, a bool result.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn equal(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Equal;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `not_equal`: x != y, a bool result.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn not_equal(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::NotEqual;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `greater`: x \> y, a bool result.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn greater(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Greater;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `greater_equal`: x \>= y, a bool result.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn greater_equal(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::GreaterEqual;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `less`: x \< y, a bool result.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn less(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Less;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `less_equal`: x \<= y, a bool result.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: fp16, fp32 or an integer type.
    /// - `y`: fp16, fp32 or an integer type.
    pub fn less_equal(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::LessEqual;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `logical_and`: x and y on bools.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: bool.
    /// - `y`: bool.
    pub fn logical_and(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::LogicalAnd;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `logical_or`: x or y on bools.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: bool.
    /// - `y`: bool.
    pub fn logical_or(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::LogicalOr;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `logical_xor`: x xor y on bools.
    ///
    /// Result: the numpy broadcast of x's and y's shapes, bool.
    ///
    /// - `x`: bool.
    /// - `y`: bool.
    pub fn logical_xor(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::LogicalXor;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("y", y.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `logical_not`: not x on bools.
    ///
    /// Result: x's shape, bool.
    ///
    /// - `x`: bool.
    pub fn logical_not(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::LogicalNot;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `clip`: min(max(x, alpha), beta).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    /// - `beta`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn clip(&mut self, x: &Var, alpha: f32, beta: f32) -> Result<Var, BuildError> {
        let kind = OpKind::Clip;
        let inputs: [(&str, Arg); 3] = [
            ("x", x.into()),
            ("alpha", scalar_like(kind, "alpha", x, alpha)),
            ("beta", scalar_like(kind, "beta", x, beta)),
        ];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `leaky_relu`: x where x \>= 0, else alpha x.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn leaky_relu(&mut self, x: &Var, alpha: f32) -> Result<Var, BuildError> {
        let kind = OpKind::LeakyRelu;
        let inputs: [(&str, Arg); 2] =
            [("x", x.into()), ("alpha", scalar_like(kind, "alpha", x, alpha))];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `relu6`: min(max(x, 0), 6).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn relu6(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Relu6;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `sigmoid_hard`: min(max(alpha x + beta, 0), 1).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    /// - `beta`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn sigmoid_hard(&mut self, x: &Var, alpha: f32, beta: f32) -> Result<Var, BuildError> {
        let kind = OpKind::SigmoidHard;
        let inputs: [(&str, Arg); 3] = [
            ("x", x.into()),
            ("alpha", scalar_like(kind, "alpha", x, alpha)),
            ("beta", scalar_like(kind, "beta", x, beta)),
        ];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `thresholded_relu`: x where x \>= alpha, else 0.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn thresholded_relu(&mut self, x: &Var, alpha: f32) -> Result<Var, BuildError> {
        let kind = OpKind::ThresholdedRelu;
        let inputs: [(&str, Arg); 2] =
            [("x", x.into()), ("alpha", scalar_like(kind, "alpha", x, alpha))];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `elu`: x where x \>= 0, else alpha (e^x - 1).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn elu(&mut self, x: &Var, alpha: f32) -> Result<Var, BuildError> {
        let kind = OpKind::Elu;
        let inputs: [(&str, Arg); 2] =
            [("x", x.into()), ("alpha", scalar_like(kind, "alpha", x, alpha))];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `softplus`: log(1 + e^x).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn softplus(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Softplus;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `clamped_relu`: min(max(x, 0), beta) + min(min(x, 0) alpha, beta).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    /// - `beta`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn clamped_relu(&mut self, x: &Var, alpha: f32, beta: f32) -> Result<Var, BuildError> {
        let kind = OpKind::ClampedRelu;
        let inputs: [(&str, Arg); 3] = [
            ("x", x.into()),
            ("alpha", scalar_like(kind, "alpha", x, alpha)),
            ("beta", scalar_like(kind, "beta", x, beta)),
        ];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `scaled_tanh`: alpha tanh(beta x).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    /// - `beta`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn scaled_tanh(&mut self, x: &Var, alpha: f32, beta: f32) -> Result<Var, BuildError> {
        let kind = OpKind::ScaledTanh;
        let inputs: [(&str, Arg); 3] = [
            ("x", x.into()),
            ("alpha", scalar_like(kind, "alpha", x, alpha)),
            ("beta", scalar_like(kind, "beta", x, beta)),
        ];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `linear_activation`: alpha x + beta.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    /// - `alpha`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    /// - `beta`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    ///   those, else in fp32.
    pub fn linear_activation(&mut self, x: &Var, alpha: f32, beta: f32) -> Result<Var, BuildError> {
        let kind = OpKind::LinearActivation;
        let inputs: [(&str, Arg); 3] = [
            ("x", x.into()),
            ("alpha", scalar_like(kind, "alpha", x, alpha)),
            ("beta", scalar_like(kind, "beta", x, beta)),
        ];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `softsign`: x / (1 + |x|).
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32.
    pub fn softsign(&mut self, x: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Softsign;
        let inputs: [(&str, Arg); 1] = [("x", x.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `prelu`: x where x \> 0, else alpha\[c\] x, one slope per channel.
    ///
    /// Result: x's shape and type.
    ///
    /// - `x`: fp16 or fp32, a tensor of rank 3 to 5.
    /// - `alpha`: fp16 or fp32, a rank-1 tensor; a compile-time constant (from `constant` or
    ///   `weight`).
    pub fn prelu(&mut self, x: &Var, alpha: &Var) -> Result<Var, BuildError> {
        let kind = OpKind::Prelu;
        let inputs: [(&str, Arg); 2] = [("x", x.into()), ("alpha", alpha.into())];
        self.op1(kind, kind.name(), &inputs)
    }

    /// `upsample_nearest_neighbor`: enlarges the last two dims by repeating elements.
    ///
    /// Result: x with its last two dims scaled: floor(height \* scale_factor_height), floor(width
    /// \* scale_factor_width).
    ///
    /// - `x`: fp16 or fp32, a tensor of rank 3 or more.
    /// - `o`: the optional inputs (`scale_factor_height`, `scale_factor_width`), see
    ///   [`UpsampleNearestNeighborOptions`].
    pub fn upsample_nearest_neighbor(
        &mut self,
        x: &Var,
        o: &UpsampleNearestNeighborOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::UpsampleNearestNeighbor;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = o.scale_factor_height {
            inputs.push(("scale_factor_height", scalar_like(kind, "scale_factor_height", x, v)));
        }
        if let Some(v) = o.scale_factor_width {
            inputs.push(("scale_factor_width", scalar_like(kind, "scale_factor_width", x, v)));
        }
        self.op1(kind, kind.name(), &inputs)
    }

    /// `upsample_bilinear`: enlarges the last two dims by bilinear interpolation.
    ///
    /// Result: x with its last two dims scaled: floor(height \* scale_factor_height), floor(width
    /// \* scale_factor_width).
    ///
    /// - `x`: fp16 or fp32, a tensor of rank 3 or more.
    /// - `o`: the optional inputs (`scale_factor_height`, `scale_factor_width`, `align_corners`,
    ///   `half_pixel_centers`), see [`UpsampleBilinearOptions`].
    pub fn upsample_bilinear(
        &mut self,
        x: &Var,
        o: &UpsampleBilinearOptions,
    ) -> Result<Var, BuildError> {
        let kind = OpKind::UpsampleBilinear;
        let mut inputs: Vec<(&str, Arg)> = vec![("x", x.into())];
        if let Some(v) = o.scale_factor_height {
            inputs.push(("scale_factor_height", scalar_like(kind, "scale_factor_height", x, v)));
        }
        if let Some(v) = o.scale_factor_width {
            inputs.push(("scale_factor_width", scalar_like(kind, "scale_factor_width", x, v)));
        }
        if let Some(v) = o.align_corners {
            inputs.push(("align_corners", Literal::bool(v).into()));
        }
        if let Some(v) = o.half_pixel_centers {
            inputs.push(("half_pixel_centers", Literal::bool(v).into()));
        }
        self.op1(kind, kind.name(), &inputs)
    }
}

/// The optional inputs of [`FunctionBuilder::log`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// `epsilon`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    /// those, else in fp32; `None`: 1e-45.
    pub epsilon: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::rsqrt`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct RsqrtOptions {
    /// `epsilon`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    /// those, else in fp32; `None`: 1e-12.
    pub epsilon: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::inverse`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct InverseOptions {
    /// `epsilon`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    /// those, else in fp32; `None`: 1e-4.
    pub epsilon: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::gelu`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct GeluOptions {
    /// `mode`: a constant string; `None`: "EXACT".
    pub mode: Option<String>,
}

/// The optional inputs of [`FunctionBuilder::slice_by_index`]: `None` leaves an input out, so that
/// the registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct SliceByIndexOptions {
    /// `stride`: a constant integer list, written as int32; `None`: 1 on every axis.
    pub stride: Option<Vec<i32>>,
    /// `begin_mask`: a constant bool list; `None`: false on every axis.
    pub begin_mask: Option<Vec<bool>>,
    /// `end_mask`: a constant bool list; `None`: false on every axis.
    pub end_mask: Option<Vec<bool>>,
    /// `squeeze_mask`: a constant bool list; `None`: false on every axis.
    pub squeeze_mask: Option<Vec<bool>>,
}

/// The optional inputs of [`FunctionBuilder::split`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct SplitOptions {
    /// `num_splits`: a constant integer, written as int32; `None`: the length of split_sizes.
    pub num_splits: Option<i32>,
    /// `split_sizes`: a constant integer list, written as int32; `None`: num_splits equal parts.
    pub split_sizes: Option<Vec<i32>>,
}

/// The optional inputs of [`FunctionBuilder::reduce_sum`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct ReduceSumOptions {
    /// `axes`: a constant integer list, written as int32; `None`: all axes.
    pub axes: Option<Vec<i32>>,
    /// `keep_dims`: a constant bool; `None`: false.
    pub keep_dims: Option<bool>,
}

/// The optional inputs of [`FunctionBuilder::reduce_mean`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct ReduceMeanOptions {
    /// `axes`: a constant integer list, written as int32; `None`: all axes.
    pub axes: Option<Vec<i32>>,
    /// `keep_dims`: a constant bool; `None`: false.
    pub keep_dims: Option<bool>,
}

/// The optional inputs of [`FunctionBuilder::reduce_max`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct ReduceMaxOptions {
    /// `axes`: a constant integer list, written as int32; `None`: all axes.
    pub axes: Option<Vec<i32>>,
    /// `keep_dims`: a constant bool; `None`: false.
    pub keep_dims: Option<bool>,
}

/// The optional inputs of [`FunctionBuilder::scaled_dot_product_attention`]: `None` leaves an input
/// out, so that the registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct ScaledDotProductAttentionOptions {
    /// `attn_mask`: bool, fp16 or fp32, a tensor of rank 1 or more; `None`: not used.
    pub attn_mask: Option<Var>,
}

/// The optional inputs of [`FunctionBuilder::quantize`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct QuantizeOptions {
    /// `zero_point`: int8 or uint8, a scalar or a rank-1 tensor; a compile-time constant (from
    /// `constant` or `weight`); `None`: 0.
    pub zero_point: Option<Var>,
    /// `axis`: a constant integer, written as int32; `None`: none: one scale for the whole tensor.
    pub axis: Option<i32>,
}

/// The optional inputs of [`FunctionBuilder::dequantize`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct DequantizeOptions {
    /// `zero_point`: int8 or uint8, a scalar or a rank-1 tensor; a compile-time constant (from
    /// `constant` or `weight`); `None`: 0.
    pub zero_point: Option<Var>,
    /// `axis`: a constant integer, written as int32; `None`: none: one scale for the whole tensor.
    pub axis: Option<i32>,
}

/// The optional inputs of [`FunctionBuilder::linear`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct LinearOptions {
    /// `bias`: fp16, fp32 or int32, a rank-1 tensor; a compile-time constant (from `constant` or
    /// `weight`); `None`: zeros.
    pub bias: Option<Var>,
}

/// The optional inputs of [`FunctionBuilder::layer_norm`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct LayerNormOptions {
    /// `axes`: a constant integer list, written as int32; `None`: all axes.
    pub axes: Option<Vec<i32>>,
    /// `gamma`: fp16 or fp32; a compile-time constant (from `constant` or `weight`); `None`: ones.
    pub gamma: Option<Var>,
    /// `beta`: fp16 or fp32; a compile-time constant (from `constant` or `weight`); `None`: zeros.
    pub beta: Option<Var>,
    /// `epsilon`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    /// those, else in fp32; `None`: 1e-5.
    pub epsilon: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::batch_norm`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct BatchNormOptions {
    /// `gamma`: fp16 or fp32, a rank-1 tensor; a compile-time constant (from `constant` or
    /// `weight`); `None`: ones.
    pub gamma: Option<Var>,
    /// `beta`: fp16 or fp32, a rank-1 tensor; a compile-time constant (from `constant` or
    /// `weight`); `None`: zeros.
    pub beta: Option<Var>,
    /// `epsilon`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    /// those, else in fp32; `None`: 1e-5.
    pub epsilon: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::instance_norm`]: `None` leaves an input out, so that
/// the registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct InstanceNormOptions {
    /// `gamma`: fp16 or fp32, a rank-1 tensor; a compile-time constant (from `constant` or
    /// `weight`); `None`: ones.
    pub gamma: Option<Var>,
    /// `beta`: fp16 or fp32, a rank-1 tensor; a compile-time constant (from `constant` or
    /// `weight`); `None`: zeros.
    pub beta: Option<Var>,
    /// `epsilon`: a constant scalar (fp16 or fp32), written in x's element type when it is one of
    /// those, else in fp32; `None`: 1e-5.
    pub epsilon: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::max_pool`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct MaxPoolOptions {
    /// `strides`: a constant integer list, written as int32; `None`: 1 in every spatial dim.
    pub strides: Option<Vec<i32>>,
    /// `pad`: a constant integer list, written as int32; `None`: zeros (read only with pad_type
    /// custom).
    pub pad: Option<Vec<i32>>,
    /// `ceil_mode`: a constant bool; `None`: false.
    pub ceil_mode: Option<bool>,
}

/// The optional inputs of [`FunctionBuilder::avg_pool`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct AvgPoolOptions {
    /// `strides`: a constant integer list, written as int32; `None`: 1 in every spatial dim.
    pub strides: Option<Vec<i32>>,
    /// `pad`: a constant integer list, written as int32; `None`: zeros (read only with pad_type
    /// custom).
    pub pad: Option<Vec<i32>>,
    /// `ceil_mode`: a constant bool; `None`: false.
    pub ceil_mode: Option<bool>,
    /// `exclude_padding_from_average`: a constant bool; `None`: false.
    pub exclude_padding_from_average: Option<bool>,
}

/// The optional inputs of [`FunctionBuilder::gather`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct GatherOptions {
    /// `axis`: a constant integer, written as int32; `None`: 0.
    pub axis: Option<i32>,
    /// `batch_dims`: a constant integer, written as int32; `None`: 0.
    pub batch_dims: Option<i32>,
    /// `validate_indices`: a constant bool; `None`: false.
    pub validate_indices: Option<bool>,
}

/// The optional inputs of [`FunctionBuilder::gather_along_axis`]: `None` leaves an input out, so
/// that the registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct GatherAlongAxisOptions {
    /// `axis`: a constant integer, written as int32; `None`: 0.
    pub axis: Option<i32>,
    /// `validate_indices`: a constant bool; `None`: false.
    pub validate_indices: Option<bool>,
}

/// The optional inputs of [`FunctionBuilder::squeeze`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct SqueezeOptions {
    /// `axes`: a constant integer list, written as int32; `None`: every axis of size 1.
    pub axes: Option<Vec<i32>>,
}

/// The optional inputs of [`FunctionBuilder::pad`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct PadOptions {
    /// `mode`: a constant string; `None`: "constant".
    pub mode: Option<String>,
    /// `constant_val`: a constant scalar (any type), written in x's element type when it is one of
    /// those, else in fp32; `None`: 0.
    pub constant_val: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::band_part`]: `None` leaves an input out, so that the
/// registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct BandPartOptions {
    /// `lower`: a constant integer, written as int32; `None`: -1 (keep every sub-diagonal).
    pub lower: Option<i32>,
    /// `upper`: a constant integer, written as int32; `None`: -1 (keep every super-diagonal).
    pub upper: Option<i32>,
}

/// The optional inputs of [`FunctionBuilder::upsample_nearest_neighbor`]: `None` leaves an input
/// out, so that the registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct UpsampleNearestNeighborOptions {
    /// `scale_factor_height`: a constant scalar (fp32 or int32), written in x's element type when
    /// it is one of those, else in fp32; `None`: 1.
    pub scale_factor_height: Option<f32>,
    /// `scale_factor_width`: a constant scalar (fp32 or int32), written in x's element type when it
    /// is one of those, else in fp32; `None`: 1.
    pub scale_factor_width: Option<f32>,
}

/// The optional inputs of [`FunctionBuilder::upsample_bilinear`]: `None` leaves an input out, so
/// that the registry's default applies.
#[derive(Clone, Debug, Default)]
pub struct UpsampleBilinearOptions {
    /// `scale_factor_height`: a constant scalar (fp32 or int32), written in x's element type when
    /// it is one of those, else in fp32; `None`: 1.
    pub scale_factor_height: Option<f32>,
    /// `scale_factor_width`: a constant scalar (fp32 or int32), written in x's element type when it
    /// is one of those, else in fp32; `None`: 1.
    pub scale_factor_width: Option<f32>,
    /// `align_corners`: a constant bool; `None`: true.
    pub align_corners: Option<bool>,
    /// `half_pixel_centers`: a constant bool; `None`: the opposite of align_corners.
    pub half_pixel_centers: Option<bool>,
}
