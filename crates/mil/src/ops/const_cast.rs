//! const and cast.

use crate::ir::{DType, LiteralData, Type};

use super::helpers::result;
use super::signature::{AttrSpec, DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError};

/// `const()[name = ..., val = ...]`: the value is the `val` attribute.
pub(super) static CONST: Signature = Signature {
    inputs: &[],
    attributes: &[AttrSpec::NAME, AttrSpec { name: "val", required: true, dtypes: DTypes::Any }],
};

/// The types cast converts between (coremltools ops/defs/iOS17/elementwise_unary.py cast:
/// int8, uint8, int16, uint16, int32, fp16, fp32, bool).
pub const CAST_DTYPES: &[DType] = &[
    DType::Fp16,
    DType::Fp32,
    DType::Int8,
    DType::UInt8,
    DType::Int16,
    DType::UInt16,
    DType::Int32,
    DType::Bool,
];

pub(super) static CAST: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::OneOf(CAST_DTYPES)),
        InputSpec::required("dtype", DTypes::String).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

pub(super) fn infer_const(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let val = ctx
        .attribute("val")
        .ok_or_else(|| ctx.error("missing required attribute val").with_subject("val"))?;
    // An inline literal must hold as many elements as its type says.
    if let (LiteralData::Tensor(data), Some(count)) = (&val.data, val.ty.element_count())
        && data.len() != count
    {
        return Err(ctx
            .error(format_args!("val is {} ({count} elements) but holds {}", val.ty, data.len()))
            .with_subject("val"));
    }
    Ok(vec![val.ty.clone()])
}

/// cast's target type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CastParams {
    /// The element type to convert to, one of [`CAST_DTYPES`].
    pub dtype: DType,
}

impl CastParams {
    /// Reads a `cast` op's constant `dtype` string; fails unless it names one of [`CAST_DTYPES`].
    pub fn resolve(ctx: &OpContext) -> Result<CastParams, OpError> {
        let name = ctx.const_str("dtype")?.ok_or_else(|| ctx.missing("dtype"))?;
        match DType::from_name(name).filter(|d| CAST_DTYPES.contains(d)) {
            Some(dtype) => Ok(CastParams { dtype }),
            None => Err(ctx
                .error(format_args!("cannot cast to \"{name}\""))
                .with_subject("dtype")
                .with_help(format!("cast takes one of {}", DTypes::OneOf(CAST_DTYPES).describe()))),
        }
    }
}

pub(super) fn infer_cast(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    let p = CastParams::resolve(ctx)?;
    Ok(vec![result(p.dtype, x.shape)])
}

#[cfg(test)]
mod tests {
    use crate::ir::{DType, Literal, TensorData, Type};
    use crate::ops::OpKind;
    use crate::ops::testing::{assert_error, f16, op, t};

    #[test]
    fn const_takes_the_type_of_val() {
        let ty = Type::tensor(DType::Fp16, [2, 2]);
        let val = Literal::tensor(ty.clone(), TensorData::F16(vec![half::f16::ONE; 4]));
        assert_eq!(op(OpKind::Const).attr("val", val).infer_one(), ty);
        let blob = Literal::blob(crate::ir::TensorType::new(DType::Fp16, [96, 64, 1, 1]), "w", 64);
        assert_eq!(op(OpKind::Const).attr("val", blob).infer_one(), f16(&[96, 64, 1, 1]));
        assert_eq!(
            op(OpKind::Const).attr("val", Literal::string("valid")).infer_one(),
            Type::Scalar(DType::String)
        );
    }

    #[test]
    fn const_may_hold_a_dictionary() {
        let ty = Type::Dict(
            Box::new(Type::Scalar(DType::String)),
            Box::new(Type::Scalar(DType::String)),
        );
        let val = Literal::new(
            ty.clone(),
            crate::ir::LiteralData::Dict(vec![(Literal::string("a"), Literal::string("b"))]),
        );
        assert_eq!(op(OpKind::Const).attr("val", val).infer_one(), ty);
    }

    #[test]
    fn const_needs_val_with_the_right_element_count() {
        assert_error(&op(OpKind::Const).error(), "val", "missing required attribute val");
        let val = Literal::tensor(
            Type::tensor(DType::Fp16, [3]),
            TensorData::F16(vec![half::f16::ONE; 2]),
        );
        let e = op(OpKind::Const).attr("val", val).error();
        assert_error(&e, "val", "val is tensor<fp16, [3]> (3 elements) but holds 2");
        let e = op(OpKind::Const).var("x", f16(&[1])).attr("val", Literal::int32(1)).error();
        assert_error(&e, "x", "unknown input `x`");
    }

    #[test]
    fn cast_changes_the_dtype_only() {
        let ty = op(OpKind::Cast).var("x", t(DType::Fp32, &[1, 64, 1, 32])).string("dtype", "fp16");
        assert_eq!(ty.infer_one(), f16(&[1, 64, 1, 32]));
        let scalar = op(OpKind::Cast).var("x", Type::Scalar(DType::Fp16)).string("dtype", "int32");
        assert_eq!(scalar.infer_one(), Type::Scalar(DType::Int32));
        let to_bool = op(OpKind::Cast).var("x", f16(&[3])).string("dtype", "bool");
        assert_eq!(to_bool.infer_one(), t(DType::Bool, &[3]));
    }

    #[test]
    fn cast_rejects_unknown_targets_and_sources() {
        let e = op(OpKind::Cast).var("x", f16(&[3])).string("dtype", "fp64").error();
        assert_error(&e, "dtype", "cannot cast to \"fp64\"");
        let e = op(OpKind::Cast).var("x", f16(&[3])).string("dtype", "float").error();
        assert_error(&e, "dtype", "cannot cast to \"float\"");
        let e = op(OpKind::Cast).var("x", t(DType::Int64, &[3])).string("dtype", "fp16").error();
        assert_error(&e, "x", "x is int64 but must be");
        let e =
            op(OpKind::Cast).var("x", f16(&[3])).var("dtype", Type::Scalar(DType::String)).error();
        assert_error(&e, "dtype", "dtype must be a compile-time constant");
        let e = op(OpKind::Cast).var("x", f16(&[3])).int("dtype", 1).error();
        assert_error(&e, "dtype", "dtype is int32 but must be string");
    }
}
