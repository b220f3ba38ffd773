//! Comparisons, logical ops, select and clip.
//!
//! - `equal`, `not_equal`, `greater`, `greater_equal`, `less`, `less_equal`: `x` and `y` of one
//!   numeric type, numpy broadcasting, a bool result (coremltools
//!   ops/defs/iOS15/elementwise_binary.py, `get_dtype` returns bool).
//! - `logical_and`, `logical_or`, `logical_xor`: bool `x` and `y`, numpy broadcasting
//!   (elementwise_binary.py, `elementwise_binary_logical`); `logical_not`: bool `x`
//!   (ops/defs/iOS15/elementwise_unary.py).
//! - `select`: `cond` bool, `a` and `b` of one type, `np.where(cond, a, b)` (ops/defs/iOS15/
//!   control_flow.py). All three broadcast together as numpy does: coremltools' value
//!   inference is `np.where`, which broadcasts `cond` too, while its type inference forgets
//!   `cond`'s shape; the result shape here is the one `np.where` computes.
//! - `clip`: `min(max(x, alpha), beta)` with constant scalar bounds of x's type
//!   (elementwise_unary.py; ops/defs/iOS17/elementwise_unary.py requires `alpha < beta`).
//!
//! As for the arithmetic binary ops, the two operands must have the same element type (MIL text
//! has no implicit promotion), and any integer type is accepted where coremltools lists int32.

use crate::ir::{DType, TensorType, Type};

use super::helpers::{broadcast_shapes, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError, OpKind};

/// The element types `select` chooses between: coremltools lists fp16, fp32, int32 and bool;
/// the other byte-sized integer types are taken too, like the arithmetic ops take them.
const SELECT_TYPES: DTypes = DTypes::OneOf(&[
    DType::Fp16,
    DType::Fp32,
    DType::Bool,
    DType::Int8,
    DType::Int16,
    DType::Int32,
    DType::Int64,
    DType::UInt8,
    DType::UInt16,
    DType::UInt32,
    DType::UInt64,
]);

static SELECT: Signature = Signature {
    inputs: &[
        InputSpec::required("cond", DTypes::Bool),
        InputSpec::required("a", SELECT_TYPES),
        InputSpec::required("b", SELECT_TYPES),
    ],
    attributes: NAME_ONLY,
};

static COMPARE: Signature = Signature {
    inputs: &[InputSpec::required("x", DTypes::Numeric), InputSpec::required("y", DTypes::Numeric)],
    attributes: NAME_ONLY,
};

static LOGICAL_BINARY: Signature = Signature {
    inputs: &[InputSpec::required("x", DTypes::Bool), InputSpec::required("y", DTypes::Bool)],
    attributes: NAME_ONLY,
};

static LOGICAL_NOT: Signature =
    Signature { inputs: &[InputSpec::required("x", DTypes::Bool)], attributes: NAME_ONLY };

static CLIP: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float),
        InputSpec::required("alpha", DTypes::Float).constant().ranks(Ranks::SCALAR),
        InputSpec::required("beta", DTypes::Float).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

/// For a kind outside this family (never dispatched here).
static NONE: Signature = Signature { inputs: &[], attributes: NAME_ONLY };

/// The signature of each op of this family.
pub(super) fn signature(kind: OpKind) -> &'static Signature {
    match kind {
        OpKind::Select => &SELECT,
        OpKind::LogicalAnd | OpKind::LogicalOr | OpKind::LogicalXor => &LOGICAL_BINARY,
        OpKind::LogicalNot => &LOGICAL_NOT,
        OpKind::Clip => &CLIP,
        k if Comparison::of(k).is_some() => &COMPARE,
        _ => &NONE,
    }
}

/// Checks one op of this family and infers its result types.
pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let params = LogicParams::resolve(ctx)?;
    let ty = match params {
        LogicParams::Select => {
            let a = ctx.tensor("a")?;
            result(a.dtype, select_shape(ctx)?)
        }
        LogicParams::Compare(_) | LogicParams::Logical(_) => {
            result(DType::Bool, binary_shape(ctx)?)
        }
        LogicParams::Not => result(DType::Bool, ctx.tensor("x")?.shape),
        LogicParams::Clip(_) => {
            let x = ctx.tensor("x")?;
            result(x.dtype, x.shape)
        }
    };
    Ok(vec![ty])
}

/// One of the six comparisons: `x OP y` elementwise, true or false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// `equal`: `x == y`.
    Equal,
    /// `not_equal`: `x != y` (true when either is NaN).
    NotEqual,
    /// `greater`: `x > y`.
    Greater,
    /// `greater_equal`: `x >= y`.
    GreaterEqual,
    /// `less`: `x < y`.
    Less,
    /// `less_equal`: `x <= y`.
    LessEqual,
}

impl Comparison {
    /// The comparison an op kind makes, if it makes one.
    pub fn of(kind: OpKind) -> Option<Comparison> {
        Some(match kind {
            OpKind::Equal => Comparison::Equal,
            OpKind::NotEqual => Comparison::NotEqual,
            OpKind::Greater => Comparison::Greater,
            OpKind::GreaterEqual => Comparison::GreaterEqual,
            OpKind::Less => Comparison::Less,
            OpKind::LessEqual => Comparison::LessEqual,
            _ => return None,
        })
    }

    /// Whether `x OP y` holds, with the operators' IEEE meaning on floats: every comparison
    /// with a NaN is false except `not_equal` (numpy's `np.equal`, `operator.gt`, ...).
    #[inline(always)]
    pub fn holds<T: PartialOrd>(self, x: T, y: T) -> bool {
        match self {
            Comparison::Equal => x == y,
            Comparison::NotEqual => x != y,
            Comparison::Greater => x > y,
            Comparison::GreaterEqual => x >= y,
            Comparison::Less => x < y,
            Comparison::LessEqual => x <= y,
        }
    }
}

/// One of the binary logical ops on booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicalOp {
    /// `logical_and`.
    And,
    /// `logical_or`.
    Or,
    /// `logical_xor`: true when exactly one operand is true.
    Xor,
}

impl LogicalOp {
    /// The logical op an op kind computes, if any.
    pub fn of(kind: OpKind) -> Option<LogicalOp> {
        Some(match kind {
            OpKind::LogicalAnd => LogicalOp::And,
            OpKind::LogicalOr => LogicalOp::Or,
            OpKind::LogicalXor => LogicalOp::Xor,
            _ => return None,
        })
    }

    /// The op's truth table applied to `x` and `y`.
    #[inline(always)]
    pub fn apply(self, x: bool, y: bool) -> bool {
        match self {
            LogicalOp::And => x && y,
            LogicalOp::Or => x || y,
            LogicalOp::Xor => x != y,
        }
    }
}

/// clip's bounds: the result is `min(max(x, alpha), beta)`. The values are those of the
/// constants, exact in f64 (they have x's type, fp16 or fp32); either may be infinite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipParams {
    /// Lower bound, in x's type; may be `-inf`, never NaN.
    pub alpha: f64,
    /// Upper bound, in x's type; may be `+inf`, strictly above `alpha`.
    pub beta: f64,
}

impl ClipParams {
    /// Checks a `clip` op (constant bounds of x's type, not NaN, `alpha < beta`) and resolves its
    /// bounds.
    pub fn resolve(ctx: &OpContext) -> Result<ClipParams, OpError> {
        let x = ctx.tensor("x")?;
        let bound = |name: &str| -> Result<f64, OpError> {
            let t = ctx.tensor(name)?;
            if t.dtype != x.dtype {
                return Err(ctx
                    .error(format_args!("{name} is {} but x is {}", t.dtype, x.dtype))
                    .with_subject(name)
                    .with_help("clip's bounds have x's type"));
            }
            let v = ctx.const_f64(name)?.ok_or_else(|| ctx.missing(name))?;
            if v.is_nan() {
                return Err(ctx.error(format_args!("{name} is NaN")).with_subject(name));
            }
            Ok(v)
        };
        let alpha = bound("alpha")?;
        let beta = bound("beta")?;
        if alpha >= beta {
            return Err(ctx
                .error(format_args!("alpha {alpha} is not below beta {beta}"))
                .with_subject("beta")
                .with_help("clip needs alpha < beta (coremltools iOS17 clip)"));
        }
        Ok(ClipParams { alpha, beta })
    }
}

/// What one op of this family computes, its operands checked: the types agree, the shapes
/// broadcast, clip's bounds are known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LogicParams {
    /// `np.where(cond, a, b)`.
    Select,
    /// A comparison (`equal`, `less`, ...) of two operands of one type, giving bool.
    Compare(Comparison),
    /// A binary logical op on bools (`logical_and`, `logical_or`, `logical_xor`).
    Logical(LogicalOp),
    /// logical_not.
    Not,
    /// `clip`, with its bounds.
    Clip(ClipParams),
}

impl LogicParams {
    /// Checks an op of the logic family (operand types agree, shapes broadcast, clip's bounds are
    /// known) and says what it computes.
    pub fn resolve(ctx: &OpContext) -> Result<LogicParams, OpError> {
        match ctx.kind {
            OpKind::Select => {
                let a = ctx.tensor("a")?;
                let b = ctx.tensor("b")?;
                if a.dtype != b.dtype {
                    return Err(ctx
                        .error(format_args!("b is {} but a is {}", b.dtype, a.dtype))
                        .with_subject("b"));
                }
                select_shape(ctx)?;
                Ok(LogicParams::Select)
            }
            OpKind::LogicalNot => Ok(LogicParams::Not),
            OpKind::Clip => ClipParams::resolve(ctx).map(LogicParams::Clip),
            kind => {
                let params = match (Comparison::of(kind), LogicalOp::of(kind)) {
                    (Some(c), _) => LogicParams::Compare(c),
                    (None, Some(l)) => LogicParams::Logical(l),
                    (None, None) => {
                        return Err(ctx.error("is not a comparison, logical op, select or clip"));
                    }
                };
                let x = ctx.tensor("x")?;
                let y = ctx.tensor("y")?;
                if x.dtype != y.dtype {
                    return Err(ctx
                        .error(format_args!("y is {} but x is {}", y.dtype, x.dtype))
                        .with_subject("y"));
                }
                binary_shape(ctx)?;
                Ok(params)
            }
        }
    }
}

/// The broadcast shape of `x` and `y`.
fn binary_shape(ctx: &OpContext) -> Result<Vec<usize>, OpError> {
    let x = ctx.tensor("x")?;
    let y = ctx.tensor("y")?;
    broadcast_shapes(&x.shape, &y.shape).ok_or_else(|| {
        ctx.error(format_args!("cannot broadcast x {:?} and y {:?}", x.shape, y.shape))
            .with_subject("y")
    })
}

/// The broadcast shape of `cond`, `a` and `b` (np.where's).
fn select_shape(ctx: &OpContext) -> Result<Vec<usize>, OpError> {
    let [cond, a, b]: [TensorType; 3] = [ctx.tensor("cond")?, ctx.tensor("a")?, ctx.tensor("b")?];
    let ab = broadcast_shapes(&a.shape, &b.shape).ok_or_else(|| {
        ctx.error(format_args!("cannot broadcast a {:?} and b {:?}", a.shape, b.shape))
            .with_subject("b")
    })?;
    broadcast_shapes(&cond.shape, &ab).ok_or_else(|| {
        ctx.error(format_args!("cannot broadcast cond {:?} with a and b {ab:?}", cond.shape))
            .with_subject("cond")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Literal, TensorData};
    use crate::ops::testing::{assert_error, bools, f16, op, t};

    const COMPARISONS: [OpKind; 6] = [
        OpKind::Equal,
        OpKind::NotEqual,
        OpKind::Greater,
        OpKind::GreaterEqual,
        OpKind::Less,
        OpKind::LessEqual,
    ];

    fn b(shape: &[usize]) -> Type {
        t(DType::Bool, shape)
    }

    #[test]
    fn comparisons_broadcast_to_bool() {
        for kind in COMPARISONS {
            let o = op(kind).var("x", f16(&[2, 1, 4])).var("y", f16(&[3, 1]));
            assert_eq!(o.infer_one(), b(&[2, 3, 4]), "{kind}");
            let o = op(kind).var("x", t(DType::Fp32, &[5])).lit("y", Literal::fp32(0.5));
            assert_eq!(o.infer_one(), b(&[5]));
            assert_eq!(
                LogicParams::resolve(&o.ctx()),
                Ok(LogicParams::Compare(Comparison::of(kind).unwrap()))
            );
        }
        // The embedding model's `greater_equal(x = ids, y = 0)` on int32 ids.
        let ge =
            op(OpKind::GreaterEqual).var("x", t(DType::Int32, &[2, 8])).lit("y", Literal::int32(0));
        assert_eq!(ge.infer_one(), b(&[2, 8]));
        let u8s = op(OpKind::Less).var("x", t(DType::UInt8, &[3])).var("y", t(DType::UInt8, &[3]));
        assert_eq!(u8s.infer_one(), b(&[3]));
        let scalars = op(OpKind::Equal).lit("x", Literal::fp16(1.0)).lit("y", Literal::fp16(2.0));
        assert_eq!(scalars.infer_one(), Type::Scalar(DType::Bool));
    }

    #[test]
    fn comparison_errors() {
        let e = op(OpKind::Less).var("x", f16(&[2])).lit("y", Literal::int32(0)).error();
        assert_error(&e, "y", "less: y is int32 but x is fp16");
        let e = op(OpKind::Equal).var("x", f16(&[2, 3])).var("y", f16(&[4, 3])).error();
        assert_error(&e, "y", "equal: cannot broadcast x [2, 3] and y [4, 3]");
        let e = op(OpKind::Greater).var("x", b(&[2])).var("y", b(&[2])).error();
        assert_error(&e, "x", "x is bool but must be fp16, fp32 or an integer type");
        let e = op(OpKind::NotEqual).var("x", f16(&[2])).error();
        assert_error(&e, "y", "not_equal: missing required input y");
    }

    #[test]
    fn logical_ops_take_bools() {
        for kind in [OpKind::LogicalAnd, OpKind::LogicalOr, OpKind::LogicalXor] {
            let o = op(kind).var("x", b(&[4, 1])).var("y", b(&[3]));
            assert_eq!(o.infer_one(), b(&[4, 3]), "{kind}");
            assert_eq!(
                LogicParams::resolve(&o.ctx()),
                Ok(LogicParams::Logical(LogicalOp::of(kind).unwrap()))
            );
            let e = op(kind).var("x", f16(&[2])).var("y", f16(&[2])).error();
            assert_error(&e, "x", "x is fp16 but must be bool");
            let e = op(kind).var("x", b(&[2])).var("y", b(&[3])).error();
            assert_error(&e, "y", "cannot broadcast x [2] and y [3]");
        }
        let not = op(OpKind::LogicalNot).var("x", b(&[2, 3]));
        assert_eq!(not.infer_one(), b(&[2, 3]));
        assert_eq!(LogicParams::resolve(&not.ctx()), Ok(LogicParams::Not));
        let e = op(OpKind::LogicalNot).var("x", t(DType::Int32, &[2])).error();
        assert_error(&e, "x", "logical_not: x is int32 but must be bool");
        assert!(!LogicalOp::Xor.apply(true, true));
        assert!(LogicalOp::Xor.apply(true, false));
        assert!(LogicalOp::Or.apply(false, true));
        assert!(!LogicalOp::And.apply(false, true));
    }

    #[test]
    fn select_broadcasts_all_three() {
        // The transformer's causal mask: select(cond = mask, a = -inf, b = scores).
        let mask = op(OpKind::Select)
            .var("cond", b(&[1, 1, 16, 16]))
            .lit("a", Literal::fp16(f32::NEG_INFINITY))
            .var("b", f16(&[1, 4, 16, 16]));
        assert_eq!(mask.infer_one(), f16(&[1, 4, 16, 16]));
        // The embedding model's select(cond, a = ids, b = ids + 100) on int32.
        let ids = op(OpKind::Select)
            .var("cond", b(&[2, 8]))
            .var("a", t(DType::Int32, &[2, 8]))
            .var("b", t(DType::Int32, &[2, 8]));
        assert_eq!(ids.infer_one(), t(DType::Int32, &[2, 8]));
        assert_eq!(LogicParams::resolve(&ids.ctx()), Ok(LogicParams::Select));
        // cond widens the result, as np.where does.
        let wide = op(OpKind::Select)
            .var("cond", b(&[3, 1, 5]))
            .var("a", t(DType::Int16, &[4, 1]))
            .lit("b", Literal::tensor(Type::Scalar(DType::Int16), TensorData::Int(vec![7])));
        assert_eq!(wide.infer_one(), t(DType::Int16, &[3, 4, 5]));
        let bools_too = op(OpKind::Select)
            .lit("cond", bools(&[true, false]))
            .var("a", b(&[2]))
            .var("b", b(&[1]));
        assert_eq!(bools_too.infer_one(), b(&[2]));
    }

    #[test]
    fn select_errors() {
        let e = op(OpKind::Select)
            .var("cond", b(&[2]))
            .var("a", f16(&[2]))
            .var("b", t(DType::Fp32, &[2]))
            .error();
        assert_error(&e, "b", "select: b is fp32 but a is fp16");
        let e = op(OpKind::Select)
            .var("cond", f16(&[2]))
            .var("a", f16(&[2]))
            .var("b", f16(&[2]))
            .error();
        assert_error(&e, "cond", "cond is fp16 but must be bool");
        let e =
            op(OpKind::Select).var("cond", b(&[2])).var("a", f16(&[2])).var("b", f16(&[3])).error();
        assert_error(&e, "b", "cannot broadcast a [2] and b [3]");
        let e = op(OpKind::Select)
            .var("cond", b(&[4]))
            .var("a", f16(&[2, 3]))
            .var("b", f16(&[3]))
            .error();
        assert_error(&e, "cond", "cannot broadcast cond [4] with a and b [2, 3]");
        let e = op(OpKind::Select)
            .var("cond", b(&[2]))
            .var("a", t(DType::Int4, &[2]))
            .var("b", t(DType::Int4, &[2]))
            .error();
        assert_error(&e, "a", "a is int4 but must be fp16, fp32, bool");
        let e = op(OpKind::Select).var("cond", b(&[2])).var("a", f16(&[2])).error();
        assert_error(&e, "b", "missing required input b");
    }

    #[test]
    fn clip_bounds() {
        let c = op(OpKind::Clip)
            .var("x", f16(&[2, 3]))
            .lit("alpha", Literal::fp16(0.0))
            .lit("beta", Literal::fp16(6.0));
        assert_eq!(c.infer_one(), f16(&[2, 3]));
        assert_eq!(
            LogicParams::resolve(&c.ctx()),
            Ok(LogicParams::Clip(ClipParams { alpha: 0.0, beta: 6.0 }))
        );
        // An unbounded side, as clamp(max = 6) converts.
        let c = op(OpKind::Clip)
            .var("x", t(DType::Fp32, &[4]))
            .lit("alpha", Literal::fp32(f32::NEG_INFINITY))
            .lit("beta", Literal::fp32(0.1));
        assert_eq!(
            ClipParams::resolve(&c.ctx()),
            Ok(ClipParams { alpha: f64::NEG_INFINITY, beta: 0.1f32 as f64 })
        );
    }

    #[test]
    fn clip_errors() {
        let clip = |alpha: Literal, beta: Literal| {
            op(OpKind::Clip).var("x", f16(&[2])).lit("alpha", alpha).lit("beta", beta).error()
        };
        let e = clip(Literal::fp16(1.0), Literal::fp16(1.0));
        assert_error(&e, "beta", "clip: alpha 1 is not below beta 1");
        let e = clip(Literal::fp16(2.0), Literal::fp16(-1.0));
        assert_error(&e, "beta", "alpha 2 is not below beta -1");
        let e = clip(Literal::fp16(f32::NAN), Literal::fp16(1.0));
        assert_error(&e, "alpha", "alpha is NaN");
        let e = clip(Literal::fp16(0.0), Literal::fp32(1.0));
        assert_error(&e, "beta", "beta is fp32 but x is fp16");
        let e = op(OpKind::Clip)
            .var("x", f16(&[2]))
            .var("alpha", Type::Scalar(DType::Fp16))
            .lit("beta", Literal::fp16(1.0))
            .error();
        assert_error(&e, "alpha", "alpha must be a compile-time constant");
        let e = op(OpKind::Clip)
            .var("x", f16(&[2]))
            .lit("alpha", Literal::tensor(f16(&[2]), TensorData::F16(vec![half::f16::ZERO; 2])))
            .lit("beta", Literal::fp16(1.0))
            .error();
        assert_error(&e, "alpha", "alpha is a rank-1 tensor");
        let e = op(OpKind::Clip)
            .var("x", t(DType::Int32, &[2]))
            .lit("alpha", Literal::int32(0))
            .lit("beta", Literal::int32(1))
            .error();
        assert_error(&e, "x", "x is int32 but must be fp16 or fp32");
        let e = op(OpKind::Clip).var("x", f16(&[2])).lit("alpha", Literal::fp16(0.0)).error();
        assert_error(&e, "beta", "missing required input beta");
    }

    #[test]
    fn comparisons_follow_ieee() {
        assert!(Comparison::GreaterEqual.holds(1, 1));
        assert!(!Comparison::Greater.holds(1, 1));
        assert!(Comparison::Equal.holds(0.0, -0.0));
        assert!(!Comparison::Equal.holds(f32::NAN, f32::NAN));
        assert!(Comparison::NotEqual.holds(f32::NAN, f32::NAN));
        assert!(!Comparison::LessEqual.holds(f32::NAN, 1.0));
        assert!(Comparison::Less.holds(-2i8, 1));
        assert_eq!(Comparison::of(OpKind::Add), None);
        assert_eq!(LogicalOp::of(OpKind::LogicalNot), None);
    }
}
