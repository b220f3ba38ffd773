//! Elementwise ops: the binary ones with numpy broadcasting (add, sub, mul, real_div, pow,
//! maximum, minimum; coremltools ops/defs/iOS15/elementwise_binary.py) and the unary ones
//! (exp, log, sqrt, rsqrt, inverse, tanh, relu, sigmoid, silu, gelu;
//! ops/defs/iOS15/elementwise_unary.py, ops/defs/iOS15/activation.py), including the
//! activations with scalar parameters (leaky_relu, elu, thresholded_relu, sigmoid_hard,
//! clamped_relu, scaled_tanh, linear_activation; iOS15/activation.py, iOS17/activation.py) and
//! those without (relu6, softplus, softsign).

use crate::ir::Type;

use super::helpers::{broadcast_shapes, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError, OpKind};

pub(super) static BINARY: Signature = Signature {
    inputs: &[InputSpec::required("x", DTypes::Numeric), InputSpec::required("y", DTypes::Numeric)],
    attributes: NAME_ONLY,
};

pub(super) static UNARY: Signature =
    Signature { inputs: &[InputSpec::required("x", DTypes::Float)], attributes: NAME_ONLY };

/// log, rsqrt and inverse add a small epsilon first (iOS17 elementwise_unary.py).
pub(super) static UNARY_EPSILON: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float),
        InputSpec::optional("epsilon", DTypes::Float).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

pub(super) static GELU: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float),
        InputSpec::optional("mode", DTypes::String)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("\"EXACT\""),
    ],
    attributes: NAME_ONLY,
};

/// leaky_relu, elu, thresholded_relu: a scalar `alpha`, required since coremltools 6.0 (4.x
/// and 5.x defaulted it). iOS15 types it as x, iOS17 lets it be the other float type.
pub(super) static WITH_ALPHA: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float),
        InputSpec::required("alpha", DTypes::Float).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

/// sigmoid_hard, clamped_relu, scaled_tanh, linear_activation: scalars `alpha` and `beta`,
/// both required (as [`WITH_ALPHA`]).
pub(super) static WITH_ALPHA_BETA: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float),
        InputSpec::required("alpha", DTypes::Float).constant().ranks(Ranks::SCALAR),
        InputSpec::required("beta", DTypes::Float).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

/// The result of a binary op: the broadcast shape, x's dtype. Both operands must have the
/// same dtype (no implicit promotion in MIL text); either may be a scalar.
pub(super) fn infer_binary(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    let y = ctx.tensor("y")?;
    if x.dtype != y.dtype {
        return Err(ctx
            .error(format_args!("y is {} but x is {}", y.dtype, x.dtype))
            .with_subject("y"));
    }
    let shape = broadcast_shapes(&x.shape, &y.shape).ok_or_else(|| {
        ctx.error(format_args!("cannot broadcast x {:?} and y {:?}", x.shape, y.shape))
            .with_subject("y")
    })?;
    Ok(vec![result(x.dtype, shape)])
}

/// The result of a unary op: x's type.
pub(super) fn infer_unary(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    match ctx.kind {
        OpKind::Log | OpKind::Rsqrt | OpKind::Inverse => {
            EpsilonParams::resolve(ctx)?;
        }
        OpKind::Gelu => {
            GeluMode::resolve(ctx)?;
        }
        k if ActivationParams::takes_beta(k).is_some() => {
            ActivationParams::resolve(ctx)?;
        }
        _ => {}
    }
    Ok(vec![result(x.dtype, x.shape)])
}

/// The epsilon of log (`log(x + eps)`, default 1e-45), rsqrt (`1 / sqrt(x + eps)`, default
/// 1e-12) and inverse (`1 / (x + eps)`, default 1e-4); iOS17 elementwise_unary.py.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpsilonParams {
    /// The value added to x before the function; finite.
    pub epsilon: f64,
}

impl EpsilonParams {
    /// The default for an op that takes an epsilon.
    pub fn default_for(kind: OpKind) -> Option<f64> {
        match kind {
            OpKind::Log => Some(1e-45),
            OpKind::Rsqrt => Some(1e-12),
            OpKind::Inverse => Some(1e-4),
            _ => None,
        }
    }

    /// Resolves the epsilon of a `log`, `rsqrt` or `inverse` op (the op's default when absent);
    /// fails for other ops and for a non-finite epsilon.
    pub fn resolve(ctx: &OpContext) -> Result<EpsilonParams, OpError> {
        let default =
            EpsilonParams::default_for(ctx.kind).ok_or_else(|| ctx.error("takes no epsilon"))?;
        let epsilon = ctx.const_f64("epsilon")?.unwrap_or(default);
        if !epsilon.is_finite() {
            return Err(ctx
                .error(format_args!("epsilon {epsilon} is not finite"))
                .with_subject("epsilon"));
        }
        Ok(EpsilonParams { epsilon })
    }
}

/// The scalar parameters of the parametric activations (iOS15/activation.py; every one is
/// required, so there are no defaults to apply):
/// - leaky_relu: `x` where `x >= 0`, else `alpha x`.
/// - elu: `x` where `x >= 0`, else `alpha (e^x - 1)`.
/// - thresholded_relu: `x` where `x >= alpha`, else 0.
/// - sigmoid_hard: `min(max(alpha x + beta, 0), 1)`.
/// - clamped_relu: `min(max(x, 0), beta) + min(min(x, 0) alpha, beta)`.
/// - scaled_tanh: `alpha tanh(beta x)`.
/// - linear_activation: `alpha x + beta`.
///
/// `beta` is 0 for the ops that take only `alpha`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationParams {
    /// The `alpha` parameter (see the formulas above); finite.
    pub alpha: f64,
    /// The `beta` parameter, finite, of alpha's type; 0 for ops that take only `alpha`.
    pub beta: f64,
}

impl ActivationParams {
    /// For an op with these parameters, whether it takes `beta` besides `alpha`; None for the
    /// other ops.
    pub fn takes_beta(kind: OpKind) -> Option<bool> {
        match kind {
            OpKind::LeakyRelu | OpKind::Elu | OpKind::ThresholdedRelu => Some(false),
            OpKind::SigmoidHard
            | OpKind::ClampedRelu
            | OpKind::ScaledTanh
            | OpKind::LinearActivation => Some(true),
            _ => None,
        }
    }

    /// Resolves the parameters of a parametric activation; fails for other ops, a missing or
    /// non-finite parameter, or `alpha` and `beta` of different types.
    pub fn resolve(ctx: &OpContext) -> Result<ActivationParams, OpError> {
        let with_beta = ActivationParams::takes_beta(ctx.kind)
            .ok_or_else(|| ctx.error("takes no alpha or beta"))?;
        let scalar = |name: &str| -> Result<f64, OpError> {
            let v = ctx.const_f64(name)?.ok_or_else(|| ctx.missing(name))?;
            if !v.is_finite() {
                return Err(ctx.error(format_args!("{name} {v} is not finite")).with_subject(name));
            }
            Ok(v)
        };
        let alpha = scalar("alpha")?;
        let beta = if with_beta {
            // One type domain (T in iOS15, U in iOS17) holds both.
            let (a, b) = (ctx.tensor("alpha")?.dtype, ctx.tensor("beta")?.dtype);
            if a != b {
                return Err(ctx
                    .error(format_args!("beta is {b} but alpha is {a}"))
                    .with_subject("beta")
                    .with_help("alpha and beta share one float type"));
            }
            scalar("beta")?
        } else {
            0.0
        };
        Ok(ActivationParams { alpha, beta })
    }
}

/// gelu's formula (activation.py gelu `mode`, default EXACT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluMode {
    /// `0.5 x (1 + erf(x / sqrt(2)))`.
    Exact,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    TanhApproximation,
    /// `x sigmoid(1.702 x)`.
    SigmoidApproximation,
}

impl GeluMode {
    /// The mode spelled `name` in MIL (`"EXACT"`, `"TANH_APPROXIMATION"`,
    /// `"SIGMOID_APPROXIMATION"`, upper case); `None` otherwise.
    pub fn from_name(name: &str) -> Option<GeluMode> {
        match name {
            "EXACT" => Some(GeluMode::Exact),
            "TANH_APPROXIMATION" => Some(GeluMode::TanhApproximation),
            "SIGMOID_APPROXIMATION" => Some(GeluMode::SigmoidApproximation),
            _ => None,
        }
    }

    /// The mode's spelling in MIL.
    pub fn name(self) -> &'static str {
        match self {
            GeluMode::Exact => "EXACT",
            GeluMode::TanhApproximation => "TANH_APPROXIMATION",
            GeluMode::SigmoidApproximation => "SIGMOID_APPROXIMATION",
        }
    }

    /// The `mode` of a `gelu` op (`Exact` when absent); fails for an unknown spelling.
    pub fn resolve(ctx: &OpContext) -> Result<GeluMode, OpError> {
        match ctx.const_str("mode")? {
            None => Ok(GeluMode::Exact),
            Some(name) => GeluMode::from_name(name).ok_or_else(|| {
                ctx.error(format_args!("unknown mode \"{name}\""))
                    .with_subject("mode")
                    .with_help("mode is EXACT, TANH_APPROXIMATION or SIGMOID_APPROXIMATION")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Literal};
    use crate::ops::testing::{assert_error, f16, op, t};

    const BINARY_OPS: [OpKind; 7] = [
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::RealDiv,
        OpKind::Pow,
        OpKind::Maximum,
        OpKind::Minimum,
    ];

    #[test]
    fn binary_ops_broadcast() {
        for kind in BINARY_OPS {
            let same = op(kind).var("x", f16(&[1, 768, 1, 256])).var("y", f16(&[1, 768, 1, 256]));
            assert_eq!(same.infer_one(), f16(&[1, 768, 1, 256]), "{kind}");
            // 04: mul by a [1, 768, 1, 1] weight and by a [1, 1, 1, 256] norm.
            let b = op(kind).var("x", f16(&[1, 768, 1, 256])).var("y", f16(&[1, 1, 1, 256]));
            assert_eq!(b.infer_one(), f16(&[1, 768, 1, 256]));
            let b = op(kind).var("x", f16(&[1, 1, 256, 256])).var("y", f16(&[1, 12, 256, 256]));
            assert_eq!(b.infer_one(), f16(&[1, 12, 256, 256]));
            let b = op(kind).var("x", f16(&[3, 1])).var("y", f16(&[4]));
            assert_eq!(b.infer_one(), f16(&[3, 4]));
        }
    }

    #[test]
    fn scalars_mix_with_tensors() {
        // 04: pow(x = ss3, y = fp16 const).
        let p = op(OpKind::Pow).var("x", f16(&[1, 1, 1, 256])).lit("y", Literal::fp16(-0.5));
        assert_eq!(p.infer_one(), f16(&[1, 1, 1, 256]));
        // 05: sub(x = fp16 const, y = tensor).
        let s = op(OpKind::Sub).lit("x", Literal::fp16(1.0)).var("y", f16(&[1, 2048, 1, 256]));
        assert_eq!(s.infer_one(), f16(&[1, 2048, 1, 256]));
        let both = op(OpKind::Add).lit("x", Literal::fp16(1.0)).lit("y", Literal::fp16(2.0));
        assert_eq!(both.infer_one(), Type::Scalar(DType::Fp16));
        let ints = op(OpKind::Add).var("x", t(DType::Int32, &[2])).lit("y", Literal::int32(1));
        assert_eq!(ints.infer_one(), t(DType::Int32, &[2]));
    }

    #[test]
    fn binary_errors() {
        let e = op(OpKind::Add).var("x", f16(&[2, 3])).var("y", f16(&[4, 3])).error();
        assert_error(&e, "y", "add: cannot broadcast x [2, 3] and y [4, 3]");
        let e = op(OpKind::Mul).var("x", f16(&[2])).lit("y", Literal::fp32(2.0)).error();
        assert_error(&e, "y", "mul: y is fp32 but x is fp16");
        let e =
            op(OpKind::Add).var("x", t(DType::Bool, &[2])).var("y", t(DType::Bool, &[2])).error();
        assert_error(&e, "x", "x is bool but must be fp16, fp32 or an integer type");
        let e = op(OpKind::Add).tuple("x", vec![]).var("y", f16(&[2])).error();
        assert_error(&e, "x", "x takes one value, not a tuple");
    }

    #[test]
    fn epsilons_default_per_op() {
        let eps =
            |kind| EpsilonParams::resolve(&op(kind).var("x", f16(&[2])).ctx()).unwrap().epsilon;
        assert_eq!(eps(OpKind::Rsqrt), 1e-12);
        assert_eq!(eps(OpKind::Inverse), 1e-4);
        assert_eq!(eps(OpKind::Log), 1e-45);
        let given = op(OpKind::Rsqrt).var("x", f16(&[2])).lit("epsilon", Literal::fp32(1e-5));
        assert_eq!(EpsilonParams::resolve(&given.ctx()).unwrap().epsilon, 1e-5f32 as f64);
        assert_eq!(given.infer_one(), f16(&[2]));
        let e = op(OpKind::Exp).var("x", f16(&[2])).lit("epsilon", Literal::fp16(0.1)).error();
        assert_error(&e, "epsilon", "unknown input `epsilon`");
        let e =
            op(OpKind::Rsqrt).var("x", f16(&[2])).var("epsilon", Type::Scalar(DType::Fp16)).error();
        assert_error(&e, "epsilon", "epsilon must be a compile-time constant");
        let e =
            op(OpKind::Inverse).var("x", f16(&[2])).lit("epsilon", Literal::fp32(f32::NAN)).error();
        assert_error(&e, "epsilon", "epsilon NaN is not finite");
    }

    const WITH_ALPHA: [OpKind; 3] = [OpKind::LeakyRelu, OpKind::Elu, OpKind::ThresholdedRelu];
    const WITH_ALPHA_BETA: [OpKind; 4] =
        [OpKind::SigmoidHard, OpKind::ClampedRelu, OpKind::ScaledTanh, OpKind::LinearActivation];

    /// An op on `x` with the alpha and beta it takes, as the converter writes them (fp16
    /// literals).
    fn parametric(kind: OpKind, x: Type) -> crate::ops::testing::TestOp {
        let o = op(kind).var("x", x);
        match ActivationParams::takes_beta(kind) {
            None => o,
            Some(false) => o.lit("alpha", Literal::fp16(0.25)),
            Some(true) => o.lit("alpha", Literal::fp16(0.25)).lit("beta", Literal::fp16(-1.5)),
        }
    }

    #[test]
    fn unary_ops_keep_the_type() {
        for kind in OpKind::ALL.into_iter().filter(|k| k.is_elementwise_unary()) {
            let u = parametric(kind, f16(&[1, 2048, 1, 256]));
            assert_eq!(u.infer_one(), f16(&[1, 2048, 1, 256]), "{kind}");
            let s = parametric(kind, Type::Scalar(DType::Fp32));
            assert_eq!(s.infer_one(), Type::Scalar(DType::Fp32), "{kind}");
            let e = parametric(kind, t(DType::Int32, &[2])).error();
            assert_error(&e, "x", "x is int32 but must be fp16 or fp32");
        }
    }

    #[test]
    fn activation_parameters_are_read_as_given() {
        for kind in WITH_ALPHA {
            assert_eq!(ActivationParams::takes_beta(kind), Some(false));
            let p = ActivationParams::resolve(&parametric(kind, f16(&[3])).ctx()).unwrap();
            assert_eq!(p, ActivationParams { alpha: 0.25, beta: 0.0 }, "{kind}");
            // iOS17: an fp32 alpha under fp16 x (leaky_relu's default slope 0.01 as PyTorch's).
            let o = op(kind).var("x", f16(&[3])).lit("alpha", Literal::fp32(0.01));
            assert_eq!(o.infer_one(), f16(&[3]));
            assert_eq!(ActivationParams::resolve(&o.ctx()).unwrap().alpha, 0.01f32 as f64);
        }
        for kind in WITH_ALPHA_BETA {
            assert_eq!(ActivationParams::takes_beta(kind), Some(true));
            let p = ActivationParams::resolve(&parametric(kind, f16(&[3])).ctx()).unwrap();
            assert_eq!(p, ActivationParams { alpha: 0.25, beta: -1.5 }, "{kind}");
        }
        // hardsigmoid as the converter writes it: alpha 1/6, beta 0.5.
        let h = op(OpKind::SigmoidHard)
            .var("x", f16(&[2]))
            .lit("alpha", Literal::fp32(1.0 / 6.0))
            .lit("beta", Literal::fp32(0.5));
        let p = ActivationParams::resolve(&h.ctx()).unwrap();
        assert_eq!((p.alpha, p.beta), ((1.0f32 / 6.0) as f64, 0.5));
        for kind in [OpKind::Relu6, OpKind::Softplus, OpKind::Softsign, OpKind::Relu] {
            assert_eq!(ActivationParams::takes_beta(kind), None);
            let e = op(kind).var("x", f16(&[2])).lit("alpha", Literal::fp16(1.0)).error();
            assert_error(&e, "alpha", "unknown input `alpha`");
        }
    }

    #[test]
    fn activation_parameter_errors() {
        // Required since coremltools 6.0.
        let e = op(OpKind::LeakyRelu).var("x", f16(&[2])).error();
        assert_error(&e, "alpha", "leaky_relu: missing required input alpha");
        let e = op(OpKind::LinearActivation)
            .var("x", f16(&[2]))
            .lit("alpha", Literal::fp16(2.0))
            .error();
        assert_error(&e, "beta", "linear_activation: missing required input beta");
        let e = op(OpKind::Elu).var("x", f16(&[2])).var("alpha", Type::Scalar(DType::Fp16)).error();
        assert_error(&e, "alpha", "alpha must be a compile-time constant");
        let e = op(OpKind::Elu).var("x", f16(&[2])).lit("alpha", crate::ops::testing::ints(&[1]));
        assert_error(&e.error(), "alpha", "alpha is int32 but must be fp16 or fp32");
        let two = Literal::tensor(
            Type::tensor(DType::Fp16, [2]),
            crate::ir::TensorData::F16(vec![half::f16::ONE; 2]),
        );
        let e = op(OpKind::LeakyRelu).var("x", f16(&[2])).lit("alpha", two).error();
        assert_error(&e, "alpha", "must be a scalar");
        let e = op(OpKind::ScaledTanh)
            .var("x", f16(&[2]))
            .lit("alpha", Literal::fp16(1.0))
            .lit("beta", Literal::fp32(1.0))
            .error();
        assert_error(&e, "beta", "scaled_tanh: beta is fp32 but alpha is fp16");
        let e = op(OpKind::ThresholdedRelu)
            .var("x", f16(&[2]))
            .lit("alpha", Literal::fp32(f32::INFINITY))
            .error();
        assert_error(&e, "alpha", "alpha inf is not finite");
        let e = op(OpKind::SigmoidHard)
            .var("x", f16(&[2]))
            .lit("alpha", Literal::fp16(1.0))
            .lit("beta", Literal::fp16(f32::NAN))
            .error();
        assert_error(&e, "beta", "beta NaN is not finite");
    }

    #[test]
    fn gelu_modes() {
        let g = |mode: Option<&str>| {
            let mut o = op(OpKind::Gelu).var("x", f16(&[2]));
            if let Some(m) = mode {
                o = o.string("mode", m);
            }
            GeluMode::resolve(&o.ctx())
        };
        assert_eq!(g(None), Ok(GeluMode::Exact));
        assert_eq!(g(Some("TANH_APPROXIMATION")), Ok(GeluMode::TanhApproximation));
        assert_eq!(g(Some("SIGMOID_APPROXIMATION")), Ok(GeluMode::SigmoidApproximation));
        let e = op(OpKind::Gelu).var("x", f16(&[2])).string("mode", "tanh").error();
        assert_error(&e, "mode", "gelu: unknown mode \"tanh\"");
    }
}
