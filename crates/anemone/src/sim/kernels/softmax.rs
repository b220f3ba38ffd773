//! softmax over any axis: the max is subtracted first (as the ANE does, so [1000, 1, 2, 3] gives
//! [1, 0, 0, 0] instead of overflowing), exponentials and sums are f32, and each output is
//! rounded once.
//!
//! fp16 follows the ANE: NaN is read as +inf, and a row holding +inf puts all its mass on the
//! +inf entries (shared equally), as measured for a NaN lane.

use super::{Element, PAR_CHUNK, Result, check_len, exp_f32, parallel_worth_it};
use crate::sim::numerics;
use rayon::prelude::*;

const KERNEL: &str = "softmax";

/// softmax of `x` (of `shape`) along `axis` (already resolved, < rank) into `out`.
pub fn softmax<T: Element>(x: &[T], shape: &[usize], axis: usize, out: &mut [T]) -> Result<()> {
    check_len(KERNEL, "input", x.len(), shape)?;
    check_len(KERNEL, "output", out.len(), shape)?;
    if axis >= shape.len() {
        return Err(super::KernelError::new(
            KERNEL,
            format!("axis {axis} out of range for rank {}", shape.len()),
        ));
    }
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let slab = n * inner;
    if slab == 0 {
        return Ok(());
    }
    // Slabs of [n, inner] are independent: split them across threads when large.
    let slabs_per_task = PAR_CHUNK.div_ceil(slab).max(1);
    let run = |first: usize, outs: &mut [T]| {
        super::with_wide_simd(
            #[inline(always)]
            || {
                let mut buf = vec![0.0f32; slab];
                let mut cols = vec![0.0f32; if inner == 1 { 0 } else { 2 * inner }];
                for (i, o) in outs.chunks_mut(slab).enumerate() {
                    let s = (first + i) * slab;
                    T::load(&x[s..s + slab], &mut buf);
                    if T::ANE_RULES {
                        numerics::ane_read_slice(&mut buf);
                    }
                    if inner == 1 {
                        softmax_row::<T>(&mut buf);
                    } else {
                        softmax_columns::<T>(&mut buf, n, inner, &mut cols);
                    }
                    T::store(&buf, o);
                }
            },
        )
    };
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(slabs_per_task * slab)
            .enumerate()
            .for_each(|(t, o)| run(t * slabs_per_task, o));
    } else {
        run(0, out);
    }
    Ok(())
}

/// softmax of one contiguous row in place, in f32; the result is not yet rounded.
///
/// The order of operations is fixed (and with it every bit of the result): the max is exact in
/// any order, the exponentials are elementwise, and the sum runs in [`SUM_LANES`] partial sums
/// over consecutive chunks, added up in lane order, then the tail in order.
#[inline(always)]
pub(crate) fn softmax_row<T: Element>(row: &mut [f32]) {
    let max = row_max(row);
    if T::ANE_RULES && max == f32::INFINITY {
        let count = row.iter().filter(|v| **v == f32::INFINITY).count() as f32;
        for v in row.iter_mut() {
            *v = if *v == f32::INFINITY { 1.0 / count } else { 0.0 };
        }
        return;
    }
    let mut part = [0.0f32; SUM_LANES];
    // Two chunks at a time so the exponentials fill 16-lane vectors; each partial sum still
    // adds its elements in row order.
    let mut pairs = row.chunks_exact_mut(2 * SUM_LANES);
    for c in &mut pairs {
        for v in c.iter_mut() {
            *v = exp_f32(*v - max);
        }
        let (lo, hi) = c.split_at(SUM_LANES);
        let (lo, hi): (&[f32; SUM_LANES], &[f32; SUM_LANES]) =
            (lo.try_into().unwrap(), hi.try_into().unwrap());
        let mut next = part;
        for (p, a) in next.iter_mut().zip(lo) {
            *p += *a;
        }
        for (p, b) in next.iter_mut().zip(hi) {
            *p += *b;
        }
        part = next;
    }
    let mut chunks = pairs.into_remainder().chunks_exact_mut(SUM_LANES);
    for c in &mut chunks {
        for (v, p) in c.iter_mut().zip(part.iter_mut()) {
            *v = exp_f32(*v - max);
            *p += *v;
        }
    }
    let mut sum: f32 = part.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_f32(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    if T::ANE_RULES {
        for v in row.iter_mut() {
            *v = numerics::ane_result(*v * inv);
        }
    } else {
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Partial sums of [`softmax_row`]: part of its definition, whatever the vector width.
const SUM_LANES: usize = 8;

/// The largest value of a row, NaN ignored (-inf for an empty or all-NaN row). The max of a set
/// does not depend on the order it is taken in, so this runs in wide lanes.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in acc.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in acc.iter().chain(chunks.remainder()) {
        if v > max {
            max = v;
        }
    }
    max
}

/// softmax along the first dim of an [n, inner] block in place, vectorized across `inner`.
/// `cols` holds 2 * inner floats of work space.
#[inline(always)]
fn softmax_columns<T: Element>(block: &mut [f32], n: usize, inner: usize, cols: &mut [f32]) {
    debug_assert_eq!(block.len(), n * inner);
    let (max, sum) = cols.split_at_mut(inner);
    max.fill(f32::NEG_INFINITY);
    sum.fill(0.0);
    for row in block.chunks_exact(inner) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = if v > *m { v } else { *m };
        }
    }
    if T::ANE_RULES && max.contains(&f32::INFINITY) {
        // Rare: columns holding +inf share their mass among the +inf entries.
        for row in block.chunks_exact_mut(inner) {
            for (j, v) in row.iter_mut().enumerate() {
                if max[j] == f32::INFINITY {
                    *v = if *v == f32::INFINITY { 1.0 } else { 0.0 };
                    sum[j] += *v;
                } else {
                    *v = exp_f32(*v - max[j]);
                    sum[j] += *v;
                }
            }
        }
    } else {
        for row in block.chunks_exact_mut(inner) {
            for ((v, m), s) in row.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
                *v = exp_f32(*v - *m);
                *s += *v;
            }
        }
    }
    // The reciprocal of the sum (or of the count of +inf entries), once per column.
    for s in sum.iter_mut() {
        *s = 1.0 / *s;
    }
    for row in block.chunks_exact_mut(inner) {
        if T::ANE_RULES {
            for (v, i) in row.iter_mut().zip(sum.iter()) {
                *v = numerics::ane_result(*v * i);
            }
        } else {
            for (v, i) in row.iter_mut().zip(sum.iter()) {
                *v *= i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::numel;
    use crate::sim::kernels::testutil::*;
    use crate::sim::numerics::round_f16;
    use half::f16;

    fn reference(x: &[f64], shape: &[usize], axis: usize) -> Vec<f64> {
        let n = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let mut out = vec![0.0; x.len()];
        for o in 0..x.len() / (n * inner) {
            for j in 0..inner {
                let at = |i: usize| o * n * inner + i * inner + j;
                let m = (0..n).map(|i| x[at(i)]).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..n).map(|i| (x[at(i)] - m).exp()).sum();
                for i in 0..n {
                    out[at(i)] = (x[at(i)] - m).exp() / s;
                }
            }
        }
        out
    }

    #[test]
    fn against_f64_on_every_axis() {
        for (shape, axis) in [
            (vec![17], 0),
            (vec![3, 33], 1),
            (vec![3, 33], 0),
            (vec![2, 5, 7], 1),
            (vec![2, 5, 1], 2),
            (vec![4, 300, 64], 1),
            (vec![600, 256], 1),
        ] {
            let x: Vec<f16> =
                values(numel(&shape), 9).iter().map(|v| f16::from_f32(v * 6.0)).collect();
            let want = reference(&to_f64(&x), &shape, axis);
            let mut out = vec![f16::ZERO; x.len()];
            softmax(&x, &shape, axis, &mut out).unwrap();
            // f32 exp (2 ulps) and sum: well inside one fp16 ulp before the final rounding.
            assert_close_f16(&out, &want, 1.0, 1e-7, &format!("{shape:?} axis {axis}"));
        }
    }

    /// The row softmax written plainly, one element at a time: the definition of its bits.
    fn plain_row(row: &mut [f32], ane: bool) {
        use crate::sim::kernels::exp_f32;
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        if ane && max == f32::INFINITY {
            let count = row.iter().filter(|v| **v == f32::INFINITY).count() as f32;
            row.iter_mut().for_each(|v| *v = if *v == f32::INFINITY { 1.0 / count } else { 0.0 });
            return;
        }
        let mut part = [0.0f32; 8];
        let body = row.len() / 8 * 8;
        for (i, v) in row[..body].iter_mut().enumerate() {
            *v = exp_f32(*v - max);
            part[i % 8] += *v;
        }
        let mut sum: f32 = part.iter().sum();
        for v in &mut row[body..] {
            *v = exp_f32(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v = numerics::ane_result(*v * inv));
    }

    #[test]
    fn rows_and_columns_have_the_bits_of_the_plain_loops() {
        for n in [1usize, 5, 8, 17, 64, 255, 256, 1000] {
            let x: Vec<f32> = values(n, n as u64).iter().map(|v| round_f16(v * 30.0)).collect();
            let mut want = x.clone();
            plain_row(&mut want, true);
            let mut got = x.clone();
            softmax_row::<f16>(&mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "row of {n}");
            // Along the first axis of [n, 3]: each column is a plain row.
            let inner = 3;
            let mut block: Vec<f32> = (0..n * inner).map(|i| x[i / inner] + i as f32).collect();
            let mut cols = vec![0.0; 2 * inner];
            let columns: Vec<Vec<f32>> = (0..inner)
                .map(|j| {
                    let mut c: Vec<f32> = (0..n).map(|i| block[i * inner + j]).collect();
                    // A column's sum runs in row order: the plain loop with one lane.
                    let max = c.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
                    let mut sum = 0.0f32;
                    for v in c.iter_mut() {
                        *v = crate::sim::kernels::exp_f32(*v - max);
                        sum += *v;
                    }
                    let inv = 1.0 / sum;
                    c.iter_mut().for_each(|v| *v *= inv);
                    c
                })
                .collect();
            softmax_columns::<f16>(&mut block, n, inner, &mut cols);
            for (j, c) in columns.iter().enumerate() {
                for (i, v) in c.iter().enumerate() {
                    assert_eq!(block[i * inner + j].to_bits(), v.to_bits(), "column {j} of {n}");
                }
            }
        }
    }

    #[test]
    fn max_is_subtracted() {
        let x = [1000.0f32, 1.0, 2.0, 3.0].map(f16::from_f32);
        let mut out = [f16::ZERO; 4];
        softmax(&x, &[4], 0, &mut out).unwrap();
        assert_eq!(out.map(|v| v.to_f32()), [1.0, 0.0, 0.0, 0.0]);
        let x = [f16::ONE; 4];
        softmax(&x, &[4], 0, &mut out).unwrap();
        assert_eq!(out.map(|v| v.to_f32()), [0.25; 4]);
    }

    #[test]
    fn nan_lane_takes_all_the_mass() {
        let x = [f16::ONE, f16::NAN, f16::ZERO, f16::from_f32(3.0)];
        let mut out = [f16::ZERO; 4];
        softmax(&x, &[4], 0, &mut out).unwrap();
        assert_eq!(out.map(|v| v.to_f32()), [0.0, 1.0, 0.0, 0.0]);
        // The same along a non-last axis.
        softmax(&x, &[4, 1], 0, &mut out).unwrap();
        assert_eq!(out.map(|v| v.to_f32()), [0.0, 1.0, 0.0, 0.0]);
        softmax(&x, &[2, 2], 0, &mut out).unwrap();
        assert_eq!(out[1].to_f32(), 1.0);
        assert_eq!(out[3].to_f32(), 0.0);
    }

    #[test]
    fn masked_scores_of_minus_40000_vanish() {
        let x = [0.5f32, -40000.0, 0.5, -40000.0].map(f16::from_f32);
        let mut out = [f16::ZERO; 4];
        softmax(&x, &[4], 0, &mut out).unwrap();
        assert_eq!(out.map(|v| v.to_f32()), [0.5, 0.0, 0.5, 0.0]);
    }
}
