//! matmul with numpy semantics: batch dims broadcast, optional transposes of the last two dims,
//! rank-1 operands promoted and their unit dim dropped from the result as numpy does.
//!
//! Operands are widened to f32 (fp16 -> f32 is exact), multiplied by the `gemm` crate's f32 GEMM
//! with f32 accumulation, and the result is rounded once to the output type. `gemm`'s own fp16
//! path is not used: it rounds the destination to fp16 between blocks of the K dimension, which
//! would add roundings the ANE's wide accumulator does not make. Transposed operands are read
//! through strides, never copied.

use super::{
    Element, KernelError, MatRef, Result, Scratch, broadcast_shapes, broadcast_strides, check_len,
    load_ane, numel,
};
use crate::sim::numerics;
use rayon::prelude::*;

const KERNEL: &str = "matmul";

/// Shapes of a matmul after numpy's rank-1 promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatmulDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Broadcast batch shape of the output.
    pub batch: Vec<usize>,
    /// Matrix offsets (in units of m*k / k*n elements) of each output batch in `a` and `b`.
    pub a_batches: Vec<usize>,
    pub b_batches: Vec<usize>,
    /// Whether `a`/`b` are stored transposed (as [k, m] / [n, k]).
    pub a_t: bool,
    pub b_t: bool,
    /// The output shape with numpy's rank-1 dims removed.
    pub out_shape: Vec<usize>,
}

/// Output shape of `matmul(a, b)` (numpy rules; `transpose_*` swap the last two dims of an
/// operand of rank >= 2 and are ignored for rank 1).
pub fn matmul_output_shape(
    a_shape: &[usize],
    b_shape: &[usize],
    transpose_a: bool,
    transpose_b: bool,
) -> Result<Vec<usize>> {
    Ok(matmul_dims(a_shape, b_shape, transpose_a, transpose_b)?.out_shape)
}

pub(crate) fn matmul_dims(
    a_shape: &[usize],
    b_shape: &[usize],
    transpose_a: bool,
    transpose_b: bool,
) -> Result<MatmulDims> {
    if a_shape.is_empty() || b_shape.is_empty() {
        return Err(KernelError::new(KERNEL, "operands must have rank >= 1"));
    }
    let a_vec = a_shape.len() == 1;
    let b_vec = b_shape.len() == 1;
    // Stored matrix dims (rows, cols) of each operand, before any transpose.
    let (a_rows, a_cols, a_t) =
        if a_vec { (1, a_shape[0], false) } else { last_two(a_shape, transpose_a) };
    let (b_rows, b_cols, b_t) =
        if b_vec { (b_shape[0], 1, false) } else { last_two(b_shape, transpose_b) };
    let (m, ka) = if a_t { (a_cols, a_rows) } else { (a_rows, a_cols) };
    let (kb, n) = if b_t { (b_cols, b_rows) } else { (b_rows, b_cols) };
    if ka != kb {
        return Err(KernelError::new(
            KERNEL,
            format!(
                "inner dims differ: {a_shape:?}{} x {b_shape:?}{}",
                if a_t { " transposed" } else { "" },
                if b_t { " transposed" } else { "" }
            ),
        ));
    }
    let a_batch = &a_shape[..a_shape.len().saturating_sub(2)];
    let b_batch = &b_shape[..b_shape.len().saturating_sub(2)];
    let batch = broadcast_shapes(a_batch, b_batch).map_err(|_| {
        KernelError::new(
            KERNEL,
            format!("batch dims of {a_shape:?} and {b_shape:?} do not broadcast"),
        )
    })?;
    let a_batches = batch_offsets(a_batch, &batch);
    let b_batches = batch_offsets(b_batch, &batch);
    let mut out_shape = batch.clone();
    if !a_vec {
        out_shape.push(m);
    }
    if !b_vec {
        out_shape.push(n);
    }
    Ok(MatmulDims { m, n, k: ka, batch, a_batches, b_batches, a_t, b_t, out_shape })
}

fn last_two(shape: &[usize], transpose: bool) -> (usize, usize, bool) {
    let r = shape.len();
    (shape[r - 2], shape[r - 1], transpose)
}

/// For every index of the broadcast batch shape (row-major), the index of the matrix it reads
/// in an operand whose batch dims are `shape`.
pub(crate) fn batch_offsets(shape: &[usize], batch: &[usize]) -> Vec<usize> {
    let strides = broadcast_strides(shape, batch);
    let count = numel(batch);
    let mut offsets = Vec::with_capacity(count);
    let mut idx = vec![0usize; batch.len()];
    let mut off = 0usize;
    for _ in 0..count {
        offsets.push(off);
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < batch[d] {
                break;
            }
            off -= strides[d] * idx[d];
            idx[d] = 0;
        }
    }
    offsets
}

/// `out = a @ b` (numpy semantics, see the module doc). `out` must hold
/// `matmul_output_shape(..)` elements. Operand and output types may differ, e.g. fp16
/// activations times weights the plan widened to f32 once at compile time (an exact widening,
/// so the result is the same as with fp16 weights). When `O` is fp16 the output port follows the
/// ANE: NaN -> +0, values rounding to 2^15 or beyond -> ±inf.
#[allow(clippy::too_many_arguments)]
pub fn matmul<A: Element, B: Element, O: Element>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    transpose_a: bool,
    transpose_b: bool,
    out: &mut [O],
    scratch: &mut Scratch,
) -> Result<()> {
    check_len(KERNEL, "a", a.len(), a_shape)?;
    check_len(KERNEL, "b", b.len(), b_shape)?;
    let dims = matmul_dims(a_shape, b_shape, transpose_a, transpose_b)?;
    check_len(KERNEL, "out", out.len(), &dims.out_shape)?;
    let (sa, sb, sc, _) = scratch.buffers(
        if A::as_f32(a).is_some() { 0 } else { a.len() },
        if B::as_f32(b).is_some() { 0 } else { b.len() },
        if O::as_f32(out).is_some() { 0 } else { out.len() },
        0,
    );
    let a32 = widen(a, sa);
    let b32 = widen(b, sb);
    if let Some(d) = O::as_f32_mut(out) {
        batched_gemm(&dims, a32, b32, d);
    } else {
        batched_gemm(&dims, a32, b32, sc);
        finish_mac_output::<O>(sc, out);
    }
    Ok(())
}

/// The f32 view of an operand: the slice itself for f32, else widened into `buf`.
pub(crate) fn widen<'a, T: Element>(x: &'a [T], buf: &'a mut [f32]) -> &'a [f32] {
    match T::as_f32(x) {
        Some(s) => s,
        None => {
            load_ane(x, buf);
            buf
        }
    }
}

/// Applies the ANE's output-port rules (for fp16) and rounds `acc` into `out`.
pub(crate) fn finish_mac_output<O: Element>(acc: &mut [f32], out: &mut [O]) {
    if O::ANE_RULES {
        numerics::mac_saturate_slice(acc);
    }
    O::store(acc, out);
}

/// Runs every batch of `dims` into the dense f32 `dst` ([batch, m, n]).
pub(crate) fn batched_gemm(dims: &MatmulDims, a: &[f32], b: &[f32], dst: &mut [f32]) {
    let (m, n, k) = (dims.m, dims.n, dims.k);
    let mn = m * n;
    if mn == 0 {
        return;
    }
    let a_ref = |batch: usize| MatRef {
        data: a,
        offset: dims.a_batches[batch] * m * k,
        row_stride: if dims.a_t { 1 } else { k as isize },
        col_stride: if dims.a_t { m as isize } else { 1 },
    };
    let b_ref = |batch: usize| MatRef {
        data: b,
        offset: dims.b_batches[batch] * k * n,
        row_stride: if dims.b_t { 1 } else { n as isize },
        col_stride: if dims.b_t { k as isize } else { 1 },
    };
    let batches = dims.a_batches.len();
    let macs = mn.saturating_mul(k);
    // Many small products: one per rayon task. Few large ones: gemm parallelizes each.
    let per_batch_parallel = batches > 1
        && macs < super::GEMM_PARALLEL_MACS
        && super::parallel_worth_it(macs.saturating_mul(batches) / 8);
    if per_batch_parallel {
        dst.par_chunks_mut(mn).enumerate().for_each(|(i, d)| {
            super::sgemm(m, n, k, d, n, a_ref(i), b_ref(i), false);
        });
    } else {
        for (i, d) in dst.chunks_mut(mn).enumerate() {
            super::sgemm(m, n, k, d, n, a_ref(i), b_ref(i), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::testutil::*;
    use half::f16;

    /// Exact f64 reference of numpy's matmul on the given (already fp16-valued) data.
    fn reference(
        a: &[f64],
        a_shape: &[usize],
        b: &[f64],
        b_shape: &[usize],
        ta: bool,
        tb: bool,
    ) -> Vec<f64> {
        let dims = matmul_dims(a_shape, b_shape, ta, tb).unwrap();
        let (m, n, k) = (dims.m, dims.n, dims.k);
        let mut out = Vec::new();
        for bi in 0..dims.a_batches.len() {
            let ao = dims.a_batches[bi] * m * k;
            let bo = dims.b_batches[bi] * k * n;
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for p in 0..k {
                        let av = if dims.a_t { a[ao + p * m + i] } else { a[ao + i * k + p] };
                        let bv = if dims.b_t { b[bo + j * k + p] } else { b[bo + p * n + j] };
                        s += av * bv;
                    }
                    out.push(s);
                }
            }
        }
        out
    }

    /// Tolerance: f32 accumulation errs by at most k * 2^-24 * sum |a||b| <= k * k * 2^-24
    /// (here |a|, |b| < 1), and the one rounding to fp16 adds half an ulp; allowing 1 ulp of the
    /// reference covers a rounding that lands across a binade boundary.
    fn check(a_shape: &[usize], b_shape: &[usize], ta: bool, tb: bool) {
        let a = values_f16(numel(a_shape), 1 + a_shape.len() as u64);
        let b = values_f16(numel(b_shape), 7 + b_shape.len() as u64);
        let want = reference(&to_f64(&a), a_shape, &to_f64(&b), b_shape, ta, tb);
        let shape = matmul_output_shape(a_shape, b_shape, ta, tb).unwrap();
        let mut out = vec![f16::ZERO; numel(&shape)];
        let mut scratch = Scratch::new();
        matmul(&a, a_shape, &b, b_shape, ta, tb, &mut out, &mut scratch).unwrap();
        let k = matmul_dims(a_shape, b_shape, ta, tb).unwrap().k as f64;
        let what = format!("{a_shape:?}{ta} x {b_shape:?}{tb}");
        assert_close_f16(&out, &want, 1.0, k * k * 2f64.powi(-24), &what);
        // f32 output of the same operands: close to the exact value at f32 precision.
        let mut out32 = vec![0.0f32; numel(&shape)];
        matmul(&a, a_shape, &b, b_shape, ta, tb, &mut out32, &mut scratch).unwrap();
        for (g, r) in out32.iter().zip(&want) {
            assert!((*g as f64 - r).abs() <= k * k * 2f64.powi(-24) + 1e-7, "{what}");
        }
    }

    #[test]
    fn plain_and_odd_sizes() {
        for (m, k, n) in [(1, 1, 1), (3, 17, 33), (17, 3, 1), (33, 33, 17), (64, 70, 65)] {
            check(&[m, k], &[k, n], false, false);
        }
    }

    #[test]
    fn transposed_operands() {
        check(&[17, 3], &[17, 5], true, false);
        check(&[3, 17], &[5, 17], false, true);
        check(&[17, 3], &[5, 17], true, true);
        check(&[2, 33, 4], &[2, 6, 33], true, true);
    }

    #[test]
    fn batch_broadcast() {
        check(&[2, 1, 3, 17], &[4, 17, 5], false, false);
        check(&[3, 17], &[4, 2, 17, 5], false, false);
        check(&[5, 3, 4, 8], &[5, 1, 8, 3], false, false);
        check(&[6, 3, 4], &[4, 2], false, false);
    }

    #[test]
    fn rank_one_like_numpy() {
        check(&[17], &[17], false, false);
        check(&[17], &[17, 3], false, false);
        check(&[3, 17], &[17], false, false);
        check(&[2, 3, 17], &[17], false, false);
        check(&[17], &[2, 17, 3], false, false);
        assert_eq!(matmul_output_shape(&[17], &[17], false, false).unwrap(), Vec::<usize>::new());
        assert_eq!(matmul_output_shape(&[17], &[2, 17, 3], false, false).unwrap(), vec![2, 3]);
        assert_eq!(matmul_output_shape(&[2, 3, 17], &[17], false, false).unwrap(), vec![2, 3]);
    }

    #[test]
    fn big_enough_to_go_parallel() {
        check(&[130, 200], &[200, 90], false, false);
        check(&[40, 16, 24], &[40, 20, 24], false, true);
    }

    #[test]
    fn shape_errors() {
        let mut s = Scratch::new();
        let mut out = vec![0.0f32; 4];
        assert!(
            matmul(&[0.0f32; 6], &[2, 3], &[0.0f32; 8], &[4, 2], false, false, &mut out, &mut s)
                .is_err()
        );
        assert!(
            matmul(
                &[0.0f32; 6],
                &[2, 3],
                &[0.0f32; 6],
                &[3, 2],
                false,
                false,
                &mut out[..3],
                &mut s
            )
            .is_err()
        );
        assert!(
            matmul(&[0.0f32; 5], &[2, 3], &[0.0f32; 6], &[3, 2], false, false, &mut out, &mut s)
                .is_err()
        );
        assert!(
            matmul(
                &[0.0f32; 12],
                &[2, 2, 3],
                &[0.0f32; 18],
                &[3, 3, 2],
                false,
                false,
                &mut out,
                &mut s
            )
            .is_err()
        );
    }

    #[test]
    fn output_port_saturates_at_32768() {
        let mut s = Scratch::new();
        let a = [f16::from_f32(32752.0)];
        let one = [f16::ONE];
        let mut out = [f16::ZERO];
        matmul(&a, &[1, 1], &one, &[1, 1], false, false, &mut out, &mut s).unwrap();
        assert_eq!(out[0].to_f32(), 32752.0);
        // K = 2 summing to 32768: infinity, not the representable fp16 32768.
        let a = [f16::from_f32(16384.0), f16::from_f32(16384.0)];
        let ones = [f16::ONE, f16::ONE];
        matmul(&a, &[1, 2], &ones, &[2, 1], false, false, &mut out, &mut s).unwrap();
        assert_eq!(out[0], f16::INFINITY);
        let neg = [f16::from_f32(-16384.0), f16::from_f32(-16384.0)];
        matmul(&neg, &[1, 2], &ones, &[2, 1], false, false, &mut out, &mut s).unwrap();
        assert_eq!(out[0], f16::NEG_INFINITY);
        // f32 outputs are plain IEEE.
        let mut out32 = [0.0f32];
        matmul(&a, &[1, 2], &ones, &[2, 1], false, false, &mut out32, &mut s).unwrap();
        assert_eq!(out32[0], 32768.0);
    }

    #[test]
    fn nan_inputs_read_as_inf_and_invalid_results_give_zero() {
        let mut s = Scratch::new();
        let mut out = [f16::ZERO; 2];
        // [NaN] x [1, 0]: inf * 1 = inf, inf * 0 = NaN -> +0.
        let a = [f16::NAN];
        let b = [f16::ONE, f16::ZERO];
        matmul(&a, &[1, 1], &b, &[1, 2], false, false, &mut out, &mut s).unwrap();
        assert_eq!(out[0], f16::INFINITY);
        assert_eq!(out[1].to_bits(), 0);
    }

    #[test]
    fn mixed_operand_types() {
        let mut s = Scratch::new();
        let a = values_f16(6 * 5, 3);
        let b = values_f16(5 * 4, 4);
        let b32: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        let mut o1 = vec![f16::ZERO; 24];
        let mut o2 = vec![f16::ZERO; 24];
        matmul(&a, &[6, 5], &b, &[5, 4], false, false, &mut o1, &mut s).unwrap();
        matmul(&a, &[6, 5], &b32, &[5, 4], false, false, &mut o2, &mut s).unwrap();
        assert_eq!(o1, o2);
    }
}
