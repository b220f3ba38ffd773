//! Elementwise ops: the binary ones with numpy broadcasting (add, sub, mul, real_div, pow,
//! maximum, minimum; coremltools ops/defs/iOS15/elementwise_binary.py) and the unary ones
//! (exp, log, sqrt, rsqrt, inverse, tanh, relu, sigmoid, silu, gelu;
//! ops/defs/iOS15/elementwise_unary.py, ops/defs/iOS15/activation.py).

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
        InputSpec::optional("mode", DTypes::String).constant().ranks(Ranks::SCALAR),
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
        _ => {}
    }
    Ok(vec![result(x.dtype, x.shape)])
}

/// The epsilon of log (`log(x + eps)`, default 1e-45), rsqrt (`1 / sqrt(x + eps)`, default
/// 1e-12) and inverse (`1 / (x + eps)`, default 1e-4); iOS17 elementwise_unary.py.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpsilonParams {
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
    pub fn from_name(name: &str) -> Option<GeluMode> {
        match name {
            "EXACT" => Some(GeluMode::Exact),
            "TANH_APPROXIMATION" => Some(GeluMode::TanhApproximation),
            "SIGMOID_APPROXIMATION" => Some(GeluMode::SigmoidApproximation),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GeluMode::Exact => "EXACT",
            GeluMode::TanhApproximation => "TANH_APPROXIMATION",
            GeluMode::SigmoidApproximation => "SIGMOID_APPROXIMATION",
        }
    }

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
    fn unary_ops_keep_the_type() {
        for kind in OpKind::ALL.into_iter().filter(|k| k.is_elementwise_unary()) {
            let u = op(kind).var("x", f16(&[1, 2048, 1, 256]));
            assert_eq!(u.infer_one(), f16(&[1, 2048, 1, 256]), "{kind}");
            let s = op(kind).var("x", Type::Scalar(DType::Fp32));
            assert_eq!(s.infer_one(), Type::Scalar(DType::Fp32), "{kind}");
            let e = op(kind).var("x", t(DType::Int32, &[2])).error();
            assert_error(&e, "x", "x is int32 but must be fp16 or fp32");
        }
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
