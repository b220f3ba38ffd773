//! Reductions (sum, mean, max, min) over any set of axes, accumulated in f32 and rounded once.
//!
//! `keep_dims` only changes the output shape, which the caller owns: the data is the same, see
//! [`reduce_output_shape`]. The input is walked once in memory order, one innermost run at a
//! time: a reduced innermost run folds into one output element, a kept one combines
//! elementwise into a run of the output.

use super::{Element, KernelError, Result, check_len, numel};
use crate::sim::numerics;

const KERNEL: &str = "reduce";

/// Reductions of MIL's reduce_* family that the simulator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// `reduce_sum`: accumulated in f32, rounded once to the output type.
    Sum,
    /// `reduce_mean`: the f32 sum times `1 / count`, rounded once.
    Mean,
    /// `reduce_max`: the largest element (identity -inf).
    Max,
    /// `reduce_min`: the smallest element (identity +inf).
    Min,
}

impl ReduceOp {
    fn identity(self) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => 0.0,
            ReduceOp::Max => f32::NEG_INFINITY,
            ReduceOp::Min => f32::INFINITY,
        }
    }

    #[inline(always)]
    fn combine(self, acc: f32, x: f32) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => acc + x,
            // NaN propagates, as numpy's max/min do.
            ReduceOp::Max => {
                if x > acc || x.is_nan() {
                    x
                } else {
                    acc
                }
            }
            ReduceOp::Min => {
                if x < acc || x.is_nan() {
                    x
                } else {
                    acc
                }
            }
        }
    }

    /// Folds a contiguous run; sums use 8 interleaved partial sums so the loop vectorizes.
    fn fold(self, acc: f32, xs: &[f32]) -> f32 {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => {
                let mut part = [0.0f32; 8];
                let chunks = xs.chunks_exact(8);
                let tail = chunks.remainder();
                for c in chunks {
                    for (p, x) in part.iter_mut().zip(c) {
                        *p += x;
                    }
                }
                let mut s = acc + part.iter().sum::<f32>();
                for x in tail {
                    s += x;
                }
                s
            }
            _ => xs.iter().fold(acc, |a, &x| self.combine(a, x)),
        }
    }
}

/// Output shape of a reduction over `axes` (each < rank, duplicates allowed): reduced dims
/// become 1 with `keep_dims`, else disappear.
pub fn reduce_output_shape(shape: &[usize], axes: &[usize], keep_dims: bool) -> Result<Vec<usize>> {
    let mask = axis_mask(shape.len(), axes)?;
    Ok(shape
        .iter()
        .zip(&mask)
        .filter_map(|(&d, &r)| match (r, keep_dims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

fn axis_mask(rank: usize, axes: &[usize]) -> Result<Vec<bool>> {
    let mut mask = vec![false; rank];
    for &a in axes {
        if a >= rank {
            return Err(KernelError::new(KERNEL, format!("axis {a} out of range for rank {rank}")));
        }
        mask[a] = true;
    }
    Ok(mask)
}

/// Reduces `x` of `shape` over `axes` (an empty list reduces nothing; pass every axis to reduce
/// all). `out` holds the product of the kept dims. Accumulates in f32; for fp16, NaN is read as
/// +inf and a sum that rounds beyond 65504 is inf, like the ANE's reduce_sum.
pub fn reduce<T: Element>(
    op: ReduceOp,
    x: &[T],
    shape: &[usize],
    axes: &[usize],
    out: &mut [T],
) -> Result<()> {
    check_len(KERNEL, "input", x.len(), shape)?;
    let mask = axis_mask(shape.len(), axes)?;
    let kept: Vec<usize> = shape.iter().zip(&mask).filter(|(_, r)| !**r).map(|(d, _)| *d).collect();
    check_len(KERNEL, "output", out.len(), &kept)?;
    let count: usize = shape.iter().zip(&mask).filter(|(_, r)| **r).map(|(d, _)| *d).product();

    // Collapse: drop unit dims, merge neighbours of the same kind.
    let mut dims: Vec<(usize, bool)> = Vec::new();
    for (&d, &r) in shape.iter().zip(&mask) {
        if d == 1 {
            continue;
        }
        match dims.last_mut() {
            Some((n, kind)) if *kind == r => *n *= d,
            _ => dims.push((d, r)),
        }
    }
    let mut acc = vec![op.identity(); out.len()];
    if !x.is_empty() {
        if dims.is_empty() {
            dims.push((1, false));
        }
        // Output strides of the collapsed dims (0 for reduced ones).
        let mut out_strides = vec![0usize; dims.len()];
        let mut s = 1;
        for (i, &(d, r)) in dims.iter().enumerate().rev() {
            if !r {
                out_strides[i] = s;
                s *= d;
            }
        }
        let (inner, inner_reduced) = *dims.last().unwrap();
        let outer = &dims[..dims.len() - 1];
        let mut row = vec![0.0f32; inner];
        let mut idx = vec![0usize; outer.len()];
        let mut out_off = 0usize;
        for chunk in x.chunks(inner) {
            T::load(chunk, &mut row);
            if T::ANE_RULES {
                numerics::ane_read_slice(&mut row);
            }
            if inner_reduced {
                acc[out_off] = op.fold(acc[out_off], &row);
            } else {
                for (a, &v) in acc[out_off..out_off + inner].iter_mut().zip(&row) {
                    *a = op.combine(*a, v);
                }
            }
            // Advance the odometer over the outer dims.
            for d in (0..outer.len()).rev() {
                idx[d] += 1;
                out_off += out_strides[d];
                if idx[d] < outer[d].0 {
                    break;
                }
                out_off -= out_strides[d] * idx[d];
                idx[d] = 0;
            }
        }
    }
    if op == ReduceOp::Mean {
        let scale = 1.0 / count as f32;
        for a in &mut acc {
            *a *= scale;
        }
    }
    if T::ANE_RULES {
        numerics::ane_result_slice(&mut acc);
    }
    T::store(&acc, out);
    debug_assert_eq!(numel(&kept), out.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::contiguous_strides;
    use crate::sim::kernels::testutil::*;
    use half::f16;

    fn reference(op: ReduceOp, x: &[f64], shape: &[usize], axes: &[usize]) -> Vec<f64> {
        let mask = axis_mask(shape.len(), axes).unwrap();
        let kept: Vec<usize> =
            shape.iter().zip(&mask).filter(|(_, r)| !**r).map(|(d, _)| *d).collect();
        let kept_strides = contiguous_strides(&kept);
        let mut acc: Vec<Vec<f64>> = vec![Vec::new(); numel(&kept)];
        for (lin, &v) in x.iter().enumerate() {
            let (mut rest, mut o, mut k) = (lin, 0, kept.len());
            for d in (0..shape.len()).rev() {
                let i = rest % shape[d];
                rest /= shape[d];
                if !mask[d] {
                    k -= 1;
                    o += i * kept_strides[k];
                }
            }
            acc[o].push(v);
        }
        acc.iter()
            .map(|vs| match op {
                ReduceOp::Sum => vs.iter().sum(),
                ReduceOp::Mean => vs.iter().sum::<f64>() / vs.len() as f64,
                ReduceOp::Max => vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                ReduceOp::Min => vs.iter().cloned().fold(f64::INFINITY, f64::min),
            })
            .collect()
    }

    #[test]
    fn every_op_over_axis_sets() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[17], &[0]),
            (&[3, 17], &[1]),
            (&[3, 17], &[0]),
            (&[3, 17], &[0, 1]),
            (&[2, 3, 5, 7], &[1, 3]),
            (&[2, 3, 5, 7], &[0, 2]),
            (&[2, 1, 33, 4], &[2]),
            (&[4, 5], &[]),
            (&[1, 1], &[0, 1]),
            (&[2, 3, 40, 40], &[2, 3]),
        ];
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min] {
            for (shape, axes) in cases {
                let x = values_f16(numel(shape), 3);
                let want = reference(op, &to_f64(&x), shape, axes);
                let mut out = vec![f16::ZERO; want.len()];
                reduce(op, &x, shape, axes, &mut out).unwrap();
                // f32 accumulation of n terms of magnitude < 1: error <= n * 2^-24 * n.
                let n = (x.len() / want.len().max(1)) as f64;
                assert_close_f16(
                    &out,
                    &want,
                    1.0,
                    n * n * 2f64.powi(-24),
                    &format!("{op:?} {shape:?} {axes:?}"),
                );
            }
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(reduce_output_shape(&[2, 3, 4], &[1], true).unwrap(), vec![2, 1, 4]);
        assert_eq!(reduce_output_shape(&[2, 3, 4], &[0, 2], false).unwrap(), vec![3]);
        assert!(reduce_output_shape(&[2, 3], &[2], false).is_err());
    }

    #[test]
    fn sum_overflows_at_the_fp16_limit_not_32768() {
        let x = [f16::from_f32(30000.0), f16::from_f32(30000.0)];
        let mut out = [f16::ZERO];
        reduce(ReduceOp::Sum, &x, &[2], &[0], &mut out).unwrap();
        assert_eq!(out[0].to_f32(), 60000.0);
        let x = [f16::from_f32(60000.0), f16::from_f32(6000.0)];
        reduce(ReduceOp::Sum, &x, &[2], &[0], &mut out).unwrap();
        assert_eq!(out[0], f16::INFINITY);
        // NaN is read as +inf.
        let x = [f16::NAN, f16::ONE];
        reduce(ReduceOp::Max, &x, &[2], &[0], &mut out).unwrap();
        assert_eq!(out[0], f16::INFINITY);
    }

    #[test]
    fn sixteen_thousand_ones_are_exact() {
        let x = vec![f16::ONE; 16000];
        let mut out = [f16::ZERO];
        reduce(ReduceOp::Sum, &x, &[16000], &[0], &mut out).unwrap();
        assert_eq!(out[0].to_f32(), 16000.0);
    }
}
