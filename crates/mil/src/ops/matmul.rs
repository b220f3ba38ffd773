//! matmul: numpy matmul with optional transposes of the last two dims
//! (coremltools ops/defs/iOS15/linear.py matmul; REFERENCE.md §6).

use crate::ir::Type;

use super::helpers::{broadcast_shapes, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError};

pub(super) static MATMUL: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Numeric).ranks(Ranks::at_least(1)),
        InputSpec::required("y", DTypes::Numeric).ranks(Ranks::at_least(1)),
        InputSpec::optional("transpose_x", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
        InputSpec::optional("transpose_y", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
    ],
    attributes: NAME_ONLY,
};

/// matmul resolved: after the optional transposes, x is `[*x_batch, m, k]` and y is
/// `[*y_batch, k, n]`; the batch dims broadcast to `batch`. A rank-1 x acts as `[1, k]`
/// and a rank-1 y as `[k, 1]`, and that dim is dropped from the result, as in numpy.
/// Transposes have no effect on rank-1 operands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulParams {
    /// Whether x's last two dims are swapped first (default false).
    pub transpose_x: bool,
    /// Whether y's last two dims are swapped first (default false).
    pub transpose_y: bool,
    /// The broadcast batch dims (empty when both operands have rank 2 or less).
    pub batch: Vec<usize>,
    /// Rows of the product (1 for a rank-1 x).
    pub m: usize,
    /// The contracted dim, shared by x and y.
    pub k: usize,
    /// Columns of the product (1 for a rank-1 y).
    pub n: usize,
    /// `[*batch, m, n]`, without `m` for a rank-1 x and without `n` for a rank-1 y.
    pub output_shape: Vec<usize>,
}

impl MatmulParams {
    /// Checks a `matmul` op (operands of rank 1 or more and one type, contracted dims equal, batch
    /// dims broadcastable) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<MatmulParams, OpError> {
        let x = ctx.tensor("x")?;
        let y = ctx.tensor("y")?;
        for (name, t) in [("x", &x), ("y", &y)] {
            if t.rank() == 0 {
                return Err(ctx
                    .error(format_args!("{name} is a scalar; matmul needs rank 1 or more"))
                    .with_subject(name));
            }
        }
        if x.dtype != y.dtype {
            return Err(ctx
                .error(format_args!("y is {} but x is {}", y.dtype, x.dtype))
                .with_subject("y"));
        }
        let transpose_x = ctx.const_bool("transpose_x")?.unwrap_or(false);
        let transpose_y = ctx.const_bool("transpose_y")?.unwrap_or(false);

        let mut xs = x.shape.clone();
        let mut ys = y.shape.clone();
        let (xr, yr) = (xs.len(), ys.len());
        if transpose_x && xr > 1 {
            xs.swap(xr - 1, xr - 2);
        }
        if transpose_y && yr > 1 {
            ys.swap(yr - 1, yr - 2);
        }
        if xr == 1 {
            xs.insert(0, 1);
        }
        if yr == 1 {
            ys.push(1);
        }
        let (m, k) = (xs[xs.len() - 2], xs[xs.len() - 1]);
        let (ky, n) = (ys[ys.len() - 2], ys[ys.len() - 1]);
        if k != ky {
            return Err(ctx
                .error(format_args!(
                    "x {:?} (transpose_x = {transpose_x}) has inner dim {k} but y {:?} (transpose_y = {transpose_y}) has {ky}",
                    x.shape, y.shape
                ))
                .with_subject("y"));
        }
        let (xb, yb) = (&xs[..xs.len() - 2], &ys[..ys.len() - 2]);
        let batch = broadcast_shapes(xb, yb).ok_or_else(|| {
            ctx.error(format_args!("cannot broadcast batch dims {xb:?} and {yb:?}"))
                .with_subject("y")
        })?;
        let mut output_shape = batch.clone();
        if xr > 1 {
            output_shape.push(m);
        }
        if yr > 1 {
            output_shape.push(n);
        }
        Ok(MatmulParams { transpose_x, transpose_y, batch, m, k, n, output_shape })
    }
}

pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    let p = MatmulParams::resolve(ctx)?;
    Ok(vec![result(x.dtype, p.output_shape)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::DType;
    use crate::ops::OpKind;
    use crate::ops::testing::{TestOp, assert_error, f16, op, t};

    fn mm(x: &[usize], y: &[usize], tx: bool, ty: bool) -> TestOp {
        op(OpKind::Matmul)
            .bool("transpose_x", tx)
            .bool("transpose_y", ty)
            .var("x", f16(x))
            .var("y", f16(y))
    }

    #[test]
    fn fixture_matmuls() {
        // 03: [1, 96, 64] x [1, 64, 32].
        assert_eq!(mm(&[1, 96, 64], &[1, 64, 32], false, false).infer_one(), f16(&[1, 96, 32]));
        // 04: QK^T with transpose_y.
        assert_eq!(
            mm(&[1, 12, 256, 64], &[1, 12, 256, 64], false, true).infer_one(),
            f16(&[1, 12, 256, 256])
        );
        // 06: transpose_x.
        assert_eq!(
            mm(&[1, 12, 256, 256], &[1, 12, 256, 64], true, false).infer_one(),
            f16(&[1, 12, 256, 64])
        );
        // 07: rank 3, big k.
        assert_eq!(
            mm(&[1, 768, 32000], &[1, 32000, 256], false, false).infer_one(),
            f16(&[1, 768, 256])
        );
    }

    #[test]
    fn defaults_and_resolved_dims() {
        let c = op(OpKind::Matmul).var("x", f16(&[2, 3, 4])).var("y", f16(&[4, 5]));
        let p = MatmulParams::resolve(&c.ctx()).unwrap();
        assert_eq!((p.transpose_x, p.transpose_y), (false, false));
        assert_eq!((p.batch.clone(), p.m, p.k, p.n), (vec![2], 3, 4, 5));
        assert_eq!(c.infer_one(), f16(&[2, 3, 5]));
    }

    #[test]
    fn batch_dims_broadcast() {
        assert_eq!(mm(&[2, 1, 3, 4], &[5, 4, 6], false, false).infer_one(), f16(&[2, 5, 3, 6]));
        assert_eq!(mm(&[1, 3, 4], &[7, 4, 2], false, false).infer_one(), f16(&[7, 3, 2]));
        let e = mm(&[2, 3, 5, 4], &[4, 3, 4, 6], false, false).error();
        assert_error(&e, "y", "matmul: cannot broadcast batch dims [2, 3] and [4, 3]");
    }

    #[test]
    fn rank_one_operands_follow_numpy() {
        assert_eq!(mm(&[4], &[4, 5], false, false).infer_one(), f16(&[5]));
        assert_eq!(mm(&[3, 4], &[4], false, false).infer_one(), f16(&[3]));
        assert_eq!(mm(&[4], &[4], false, false).infer_one(), Type::Scalar(DType::Fp16));
        assert_eq!(mm(&[2, 3, 4], &[4], false, false).infer_one(), f16(&[2, 3]));
        // Transposing a vector changes nothing.
        assert_eq!(mm(&[4], &[5, 4], true, true).infer_one(), f16(&[5]));
    }

    #[test]
    fn errors_name_the_operand() {
        let e = mm(&[1, 12, 256, 64], &[1, 12, 256, 64], false, false).error();
        assert_error(
            &e,
            "y",
            "x [1, 12, 256, 64] (transpose_x = false) has inner dim 64 but y [1, 12, 256, 64] (transpose_y = false) has 256",
        );
        let e = op(OpKind::Matmul).var("x", f16(&[2, 2])).var("y", t(DType::Fp32, &[2, 2])).error();
        assert_error(&e, "y", "y is fp32 but x is fp16");
        let e =
            op(OpKind::Matmul).var("x", Type::Scalar(DType::Fp16)).var("y", f16(&[2, 2])).error();
        assert_error(&e, "x", "x is a scalar (fp16) but must be a tensor of rank 1 or more");
        let e = op(OpKind::Matmul)
            .var("x", f16(&[2, 2]))
            .var("y", f16(&[2, 2]))
            .var("transpose_x", Type::Scalar(DType::Bool))
            .error();
        assert_error(&e, "transpose_x", "transpose_x must be a compile-time constant");
        let e = op(OpKind::Matmul).var("x", f16(&[2, 2])).error();
        assert_error(&e, "y", "missing required input y");
    }
}
