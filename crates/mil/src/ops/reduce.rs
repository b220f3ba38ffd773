//! reduce_sum, reduce_mean, reduce_max (coremltools ops/defs/iOS15/reduction.py: `axes`
//! optional, all axes when absent; `keep_dims` default false).

use crate::ir::Type;

use super::helpers::{normalize_axis, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError};

pub(super) static REDUCE: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Numeric).ranks(Ranks::at_least(1)),
        InputSpec::optional("axes", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("all axes"),
        InputSpec::optional("keep_dims", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
    ],
    attributes: NAME_ONLY,
};

/// A reduction resolved: the reduced axes, normalized and ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReduceParams {
    /// The reduced axes of x, normalized to `[0, rank)`, ascending, each once (all when absent).
    pub axes: Vec<usize>,
    /// Whether reduced axes stay in the result with size 1 (default false).
    pub keep_dims: bool,
    /// x's shape without the reduced axes, or with them as 1 under `keep_dims`.
    pub output_shape: Vec<usize>,
}

impl ReduceParams {
    /// Checks a `reduce_*` op (axes non-empty, in range, each once) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<ReduceParams, OpError> {
        let x = ctx.tensor("x")?;
        let rank = x.rank();
        let keep_dims = ctx.const_bool("keep_dims")?.unwrap_or(false);
        let axes = match ctx.const_i64s("axes")? {
            None => (0..rank).collect(),
            Some(given) => {
                if given.is_empty() {
                    return Err(ctx
                        .error("axes is empty")
                        .with_subject("axes")
                        .with_help("leave axes out to reduce over every axis"));
                }
                let mut axes = Vec::with_capacity(given.len());
                for &a in &given {
                    let n = normalize_axis(a, rank).ok_or_else(|| {
                        ctx.error(format_args!(
                            "axes {given:?} has {a}, out of range for rank {rank}"
                        ))
                        .with_subject("axes")
                    })?;
                    if axes.contains(&n) {
                        return Err(ctx
                            .error(format_args!("axes {given:?} names axis {n} twice"))
                            .with_subject("axes"));
                    }
                    axes.push(n);
                }
                axes.sort_unstable();
                axes
            }
        };
        let output_shape = x
            .shape
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keep_dims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        Ok(ReduceParams { axes, keep_dims, output_shape })
    }
}

pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    Ok(vec![result(x.dtype, ReduceParams::resolve(ctx)?.output_shape)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::DType;
    use crate::ops::OpKind;
    use crate::ops::testing::{assert_error, f16, op, t};

    const KINDS: [OpKind; 3] = [OpKind::ReduceSum, OpKind::ReduceMean, OpKind::ReduceMax];

    #[test]
    fn fixture_forms() {
        // 04: sum of squares over channels, kept.
        let r = op(OpKind::ReduceSum)
            .var("x", f16(&[1, 768, 1, 256]))
            .ints("axes", &[1])
            .bool("keep_dims", true);
        assert_eq!(r.infer_one(), f16(&[1, 1, 1, 256]));
        // 06: last axis as -1.
        let r = op(OpKind::ReduceSum)
            .var("x", f16(&[1, 12, 256, 256]))
            .ints("axes", &[-1])
            .bool("keep_dims", true);
        assert_eq!(r.infer_one(), f16(&[1, 12, 256, 1]));
    }

    #[test]
    fn defaults_reduce_everything_and_drop_dims() {
        for kind in KINDS {
            let r = op(kind).var("x", f16(&[2, 3, 4]));
            assert_eq!(r.infer_one(), Type::Scalar(DType::Fp16), "{kind}");
            let p = ReduceParams::resolve(&r.ctx()).unwrap();
            assert_eq!((p.axes, p.keep_dims), (vec![0, 1, 2], false));
            let r = op(kind).var("x", f16(&[2, 3, 4])).bool("keep_dims", true);
            assert_eq!(r.infer_one(), f16(&[1, 1, 1]));
            let r = op(kind).var("x", f16(&[2, 3, 4])).ints("axes", &[-1, 0]);
            assert_eq!(r.infer_one(), f16(&[3]));
            assert_eq!(ReduceParams::resolve(&r.ctx()).unwrap().axes, vec![0, 2]);
            let r = op(kind).var("x", t(DType::Int32, &[5, 2])).ints("axes", &[1]);
            assert_eq!(r.infer_one(), t(DType::Int32, &[5]));
        }
    }

    #[test]
    fn errors() {
        let e = op(OpKind::ReduceMax).var("x", f16(&[2, 3])).ints("axes", &[2]).error();
        assert_error(&e, "axes", "reduce_max: axes [2] has 2, out of range for rank 2");
        let e = op(OpKind::ReduceSum).var("x", f16(&[2, 3])).ints("axes", &[1, -1]).error();
        assert_error(&e, "axes", "axes [1, -1] names axis 1 twice");
        let e = op(OpKind::ReduceMean).var("x", f16(&[2, 3])).ints("axes", &[]).error();
        assert_error(&e, "axes", "axes is empty");
        let e = op(OpKind::ReduceMean)
            .var("x", f16(&[2, 3]))
            .var("keep_dims", Type::Scalar(DType::Bool))
            .error();
        assert_error(&e, "keep_dims", "keep_dims must be a compile-time constant");
        let e = op(OpKind::ReduceMean).var("x", Type::Scalar(DType::Fp16)).error();
        assert_error(&e, "x", "x is a scalar (fp16) but must be a tensor of rank 1 or more");
    }
}
