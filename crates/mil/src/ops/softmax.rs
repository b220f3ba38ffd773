//! softmax along one axis (coremltools ops/defs/iOS15/activation.py softmax, axis default
//! -1).

use crate::ir::Type;

use super::helpers::result;
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError};

pub(super) static SOFTMAX: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::at_least(1)),
        InputSpec::optional("axis", DTypes::Int)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("-1 (the last axis)"),
    ],
    attributes: NAME_ONLY,
};

/// softmax's axis, normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxParams {
    /// The axis softmax normalizes along, in `[0, rank)` (default -1, the last).
    pub axis: usize,
}

impl SoftmaxParams {
    /// Checks a `softmax` op's axis against x's rank and normalizes it.
    pub fn resolve(ctx: &OpContext) -> Result<SoftmaxParams, OpError> {
        let x = ctx.tensor("x")?;
        Ok(SoftmaxParams { axis: ctx.const_axis("axis", x.rank(), Some(-1))? })
    }
}

pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    SoftmaxParams::resolve(ctx)?;
    Ok(vec![result(x.dtype, x.shape)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::DType;
    use crate::ops::OpKind;
    use crate::ops::testing::{assert_error, f16, op, t};

    #[test]
    fn axis_defaults_to_last() {
        let s = op(OpKind::Softmax).int("axis", -1).var("x", f16(&[1, 12, 256, 256]));
        assert_eq!(s.infer_one(), f16(&[1, 12, 256, 256]));
        assert_eq!(SoftmaxParams::resolve(&s.ctx()).unwrap().axis, 3);
        let s = op(OpKind::Softmax).var("x", f16(&[4, 7]));
        assert_eq!(SoftmaxParams::resolve(&s.ctx()).unwrap().axis, 1);
        let s = op(OpKind::Softmax).var("x", f16(&[4, 7])).int("axis", 0);
        assert_eq!(SoftmaxParams::resolve(&s.ctx()).unwrap().axis, 0);
    }

    #[test]
    fn errors() {
        let e = op(OpKind::Softmax).var("x", f16(&[4, 7])).int("axis", 2).error();
        assert_error(&e, "axis", "softmax: axis 2 is out of range for rank 2");
        let e = op(OpKind::Softmax).var("x", t(DType::Int32, &[4])).error();
        assert_error(&e, "x", "x is int32 but must be fp16 or fp32");
        let e = op(OpKind::Softmax).var("x", f16(&[4])).ints("axis", &[0]).error();
        assert_error(
            &e,
            "axis",
            "axis is a rank-1 tensor (tensor<int32, [1]>) but must be a scalar",
        );
    }
}
