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
    let rows = RowKernel::pick::<T>();
    let run = |first: usize, outs: &mut [T]| {
        super::with_wide_simd(
            #[inline(always)]
            || {
                let first_x = &x[first * slab..first * slab + outs.len()];
                if inner == 1 && rows.fp16_rows(first_x, outs, n) {
                    return;
                }
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

/// How a contiguous row is computed: [`softmax_row`], or its AVX-512 form for fp16 (the same
/// operations in the same order, so the same bits once rounded to fp16). The fused attention
/// picks between the same two for its rows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512F16,
}

impl RowKernel {
    /// The vector form for fp16 rows on CPUs that have it, else the portable one.
    pub(crate) fn pick<T: Element>() -> RowKernel {
        #[cfg(target_arch = "x86_64")]
        if T::as_f16(&[]).is_some() && super::gemm::Isa::detect() == super::gemm::Isa::Avx512 {
            return RowKernel::Avx512F16;
        }
        RowKernel::Portable
    }

    /// softmax of the contiguous rows of `n` fp16 values in `x` into `out`, the bits of
    /// widening, [`softmax_row`] and storing each row, when this is the vector kernel and
    /// the rows are fp16 (returns whether it ran).
    #[inline(always)]
    fn fp16_rows<T: Element>(self, x: &[T], out: &mut [T], n: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == RowKernel::Avx512F16
            && let (Some(x), Some(out)) = (T::as_f16(x), T::as_f16_mut(out))
        {
            // SAFETY: Avx512F16 is picked only on CPUs with AVX-512F, BW and VL, AVX2, FMA and
            // F16C (gemm::Isa::detect).
            unsafe { x86::softmax_rows_f16(x, out, n) };
            return true;
        }
        let _ = (x, out, n);
        false
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! fp16 softmax rows with AVX-512: the operations of `softmax_row` and `exp_f32` one for
    //! one, 16 lanes at a time, each result rounded to fp16. Multiplies and adds stay separate
    //! instructions (no FMA), as in the portable code, and exponentials too small to matter
    //! are flushed (see `exp16`), so the fp16 results have the same bits.
    use crate::sim::kernels::lanes16::steps16;
    use crate::sim::kernels::{Element, exp_f32};
    use half::f16;
    use std::arch::x86_64::*;

    /// Rounds to fp16 and back (to nearest even, ±inf beyond the fp16 range): the bits of
    /// `numerics::round_f16` for every value but NaN, which these rows never hold.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) fn round16(v: __m512) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v))
    }

    /// `exp_f32` of kernels/mod.rs on 16 lanes of arguments in [-inf, 0] (x - max of a row),
    /// where 2^n (n = round(x log2 e)) is at least 2^-125; +0 below that.
    ///
    /// The same operations, with shortcuts that keep every bit:
    /// - the clamps are left out: the upper one (89) never applies, and below the lower one
    ///   (-104) n is under -125 with or without it, so the lane is flushed either way;
    /// - n is one rounding to the nearest integer of x log2 e, which is what adding and
    ///   subtracting 1.5 * 2^23 computes for |x log2 e| < 2^22 (larger arguments are flushed;
    ///   the sign of a zero n differs, which changes neither r nor the scaling);
    /// - the scaling `p * 2^n1 * 2^n2` (n1 + n2 = n, each factor normal) is one `scalef` by 2^n
    ///   (n >= -125 and p in [0.7, 1.5]: the product is exact and normal).
    ///
    /// Results under about 2^-125 (x < -86.3) are flushed so that no subnormal is ever computed:
    /// x86 cores take a microcode assist of a hundred cycles or more for each subnormal result
    /// or operand, which made rows with a wide range ten times slower. They cannot change an
    /// fp16 softmax: the row's sum is at least 1 (its max contributes exp(0)), so a term below
    /// 1.5 * 2^-125 is lost in it however the partial sums group it, and the term's own probability
    /// rounds to fp16's +0 either way. The tests compare whole rows with the plain loops.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) fn exp16(x: __m512) -> __m512 {
        exp16xn([x])[0]
    }

    /// [`exp16`] on N vectors, each step taken for all N before the next: the N chains of
    /// dependent multiplies and adds sit side by side in the instruction stream, so the core
    /// always has independent work at hand (about a fifth more exponentials per cycle with
    /// four than with one). Eight chains keep both vector ports busy from one group alone,
    /// which matters when the core's other hyperthread runs too and holds half of its
    /// out-of-order window: the fused attention took 2-6% less time with eight than with four,
    /// measured alternately in one process on a cloud machine.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) fn exp16xn<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let c = _mm512_set1_ps;
        let (mul, add, sub) = (_mm512_mul_ps, _mm512_add_ps, _mm512_sub_ps);
        let n = x.map(|v| {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(mul(
                v,
                c(LOG2E),
            ))
        });
        let mut r = x;
        for i in 0..N {
            r[i] = sub(sub(x[i], mul(n[i], c(LN2_HI))), mul(n[i], c(LN2_LO)));
        }
        let mut p = [c(1.0f32 / 5040.0); N];
        for k in [1.0f32 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            for i in 0..N {
                p[i] = add(mul(p[i], r[i]), c(k));
            }
        }
        for i in 0..N {
            let normal = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(n[i], c(-125.0));
            p[i] = _mm512_maskz_scalef_ps(normal, p[i], n[i]);
        }
        p
    }

    /// The largest value of a row without NaN (-inf when empty).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) fn row_max(row: &[f32]) -> f32 {
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        steps16(row.len(), |i, k| {
            // SAFETY: the mask stops the load at the end of the row.
            let x = unsafe { _mm512_maskz_loadu_ps(k, row.as_ptr().add(i)) };
            mx = _mm512_mask_max_ps(mx, k, mx, x);
        });
        _mm512_reduce_max_ps(mx)
    }

    /// The softmax of a row whose max is finite, each result rounded to fp16: `softmax_row`'s
    /// operations, then the rounding of its fp16 output. The row holds values that `score` (on
    /// 16 lanes) and `score_one` (on one) turn into the scores on the way, with the same bits;
    /// `max` is the largest score. (The fused attention passes raw sums of QK^T and its
    /// rounding and scaling steps; softmax itself passes the scores.)
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn exp_normalize(
        row: &mut [f32],
        max: f32,
        score: impl Fn(__m512) -> __m512,
        score_one: impl Fn(f32) -> f32,
    ) {
        // SAFETY: the CPU features are the caller's guarantee.
        unsafe {
            let sum = exp_sum(row, max, score, score_one);
            normalize_row(row, _mm512_set1_ps(1.0 / sum));
        }
    }

    /// [`normalize16`] over a whole row: each value times `inv` (the reciprocal of the row's
    /// sum in every lane), rounded to fp16.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW, VL and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn normalize_row(row: &mut [f32], inv: __m512) {
        let ptr = row.as_mut_ptr();
        steps16(row.len(), |i, k| {
            // SAFETY: the mask keeps the load and the store inside the row.
            unsafe { normalize16(ptr.add(i), k, inv) };
        });
    }

    /// The softmax of the rows of `n` values in `x` (as many as `out` holds) into `out`, with
    /// the bits of widening each row (NaN read as +inf, the ANE's rule), `softmax_row` and
    /// the store to fp16.
    ///
    /// Two passes per row instead of five (widen, max, exponentials, normalize, store), and
    /// pipelined: the pass that widens a row and takes its max also normalizes and stores the
    /// row before it, whose sum has long been known by then; the second pass computes the
    /// exponentials and their sum. Rows whose max is not finite take the portable loops.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn softmax_rows_f16(x: &[f16], out: &mut [f16], n: usize) {
        let rows = out.len().min(x.len()).checked_div(n).unwrap_or(0);
        let mut bufs = vec![0.0f32; 2 * n];
        let inf = _mm512_set1_ps(f32::INFINITY);
        // The row whose exponentials wait in a buffer for their normalizing pass, and 1 / sum.
        let mut pending: Option<(usize, __m512)> = None;
        for r in 0..rows {
            let (even, odd) = bufs.split_at_mut(n);
            let (buf, other) = if r % 2 == 0 { (even, odd) } else { (odd, even) };
            let src = x[r * n..(r + 1) * n].as_ptr();
            let dst = buf.as_mut_ptr();
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut widen = |i: usize, k: __mmask16| {
                // SAFETY: the mask keeps the load inside row r of x and the store inside buf.
                unsafe {
                    let v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, src.add(i).cast()));
                    let v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), inf);
                    _mm512_mask_storeu_ps(dst.add(i), k, v);
                    mx = _mm512_mask_max_ps(mx, k, mx, v);
                }
            };
            match pending.take() {
                Some((p, inv)) => {
                    let (e, o) = (other.as_ptr(), out[p * n..(p + 1) * n].as_mut_ptr());
                    steps16(n, |i, k| {
                        widen(i, k);
                        // SAFETY: the lanes k at i lie inside the other buffer and row p.
                        unsafe { normalize_store16(e.add(i), o.add(i), k, inv) };
                    });
                }
                None => steps16(n, widen),
            }
            let max = _mm512_reduce_max_ps(mx);
            if max.is_finite() {
                // SAFETY: the CPU features are the caller's guarantee.
                let sum = unsafe { exp_sum(buf, max, |x| x, |x| x) };
                pending = Some((r, _mm512_set1_ps(1.0 / sum)));
            } else {
                super::softmax_row::<f16>(buf);
                f16::store(buf, &mut out[r * n..(r + 1) * n]);
            }
        }
        if let Some((p, inv)) = pending {
            let (e, o) = (bufs[(p % 2) * n..].as_ptr(), out[p * n..(p + 1) * n].as_mut_ptr());
            steps16(n, |i, k| {
                // SAFETY: the lanes k at i lie inside the buffer and row p.
                unsafe { normalize_store16(e.add(i), o.add(i), k, inv) };
            });
        }
    }

    /// [`normalize16`] with the result stored as fp16 at `to`: `x * inv` rounded to fp16 once.
    ///
    /// # Safety
    /// The lanes `k` at `from` and at `to` must lie inside slices; the CPU must have
    /// AVX-512F, BW, VL and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn normalize_store16(from: *const f32, to: *mut f16, k: __mmask16, inv: __m512) {
        // SAFETY: the caller's guarantee.
        unsafe {
            let y = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, from), inv);
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
            _mm256_mask_storeu_epi16(to.cast(), k, h);
        }
    }

    /// Rounds `x * inv` to fp16 for the lanes `k` of the 16 floats at `p`: the last step of
    /// a softmax row, with `inv` the reciprocal of the row's sum in every lane.
    ///
    /// # Safety
    /// The lanes `k` at `p` must be inside one slice; the CPU must have AVX-512F, BW, VL and
    /// F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn normalize16(p: *mut f32, k: __mmask16, inv: __m512) {
        // SAFETY: the caller's guarantee.
        unsafe {
            let x = _mm512_maskz_loadu_ps(k, p);
            _mm512_mask_storeu_ps(p, k, round16(_mm512_mul_ps(x, inv)));
        }
    }

    /// Adds a 16-wide step to the eight partial sums of [`exp_sum`]: its low half, then its
    /// high half.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn add_step(part: __m256, y: __m512) -> __m256 {
        let part = _mm256_add_ps(part, _mm512_castps512_ps256(y));
        _mm256_add_ps(part, _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(y))))
    }

    /// N steps of [`exp_sum`] at `at`: the exponentials of the N * 16 scores less `max` (in
    /// every lane of `mv`), interleaved, stored in place and added to `part` in row order.
    ///
    /// # Safety
    /// `at` must hold N * 16 floats; the CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn exp_steps<const N: usize>(
        at: *mut f32,
        mv: __m512,
        score: &impl Fn(__m512) -> __m512,
        mut part: __m256,
    ) -> __m256 {
        // SAFETY: the caller's guarantee.
        let x: [__m512; N] = std::array::from_fn(|q| unsafe { _mm512_loadu_ps(at.add(16 * q)) });
        let y = exp16xn(x.map(|v| _mm512_sub_ps(score(v), mv)));
        for (q, v) in y.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(at.add(16 * q), *v) };
            part = add_step(part, *v);
        }
        part
    }

    /// The first half of [`exp_normalize`]: turns the row into the exponentials of its scores
    /// less `max` and returns their sum, in the order `softmax_row` adds them: eight partial
    /// sums, each adding its elements in row order (a 16-wide step's low half, then its high
    /// half), then a step of eight, the partial sums added in order, and the tail one by one.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn exp_sum(
        row: &mut [f32],
        max: f32,
        score: impl Fn(__m512) -> __m512,
        score_one: impl Fn(f32) -> f32,
    ) -> f32 {
        let n = row.len();
        let ptr = row.as_mut_ptr();
        let mv = _mm512_set1_ps(max);
        let mut part = _mm256_setzero_ps();
        let full = n / 16 * 16;
        // N steps from i on, their exponentials interleaved (the sums still take the steps in
        // row order).
        // Eight steps at a time, then four, then one.
        let mut i = 0;
        while i + 128 <= n {
            // SAFETY: i + 128 <= n.
            part = unsafe { exp_steps::<8>(ptr.add(i), mv, &score, part) };
            i += 128;
        }
        if i + 64 <= n {
            // SAFETY: i + 64 <= n.
            part = unsafe { exp_steps::<4>(ptr.add(i), mv, &score, part) };
            i += 64;
        }
        for i in (i..full).step_by(16) {
            // SAFETY: i + 16 <= n.
            unsafe {
                let y = exp16(_mm512_sub_ps(score(_mm512_loadu_ps(ptr.add(i))), mv));
                _mm512_storeu_ps(ptr.add(i), y);
                part = add_step(part, y);
            }
        }
        let mut done = full;
        if n - full >= 8 {
            // SAFETY: full + 8 <= n.
            unsafe {
                let x = score(_mm512_maskz_loadu_ps(0xff, ptr.add(full)));
                let y = exp16(_mm512_sub_ps(x, mv));
                _mm512_mask_storeu_ps(ptr.add(full), 0xff, y);
                part = _mm256_add_ps(part, _mm512_castps512_ps256(y));
            }
            done += 8;
        }
        let mut lanes8 = [0.0f32; 8];
        // SAFETY: lanes8 holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes8.as_mut_ptr(), part) };
        let mut sum: f32 = lanes8.iter().sum();
        for x in &mut row[done..] {
            *x = exp_f32(score_one(*x) - max);
            sum += *x;
        }
        sum
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
    fn fp16_rows_have_the_bits_of_the_plain_loops_on_every_path() {
        // Lengths around the 16- and 8-wide steps; rows with -inf entries, exponentials that
        // underflow, a +inf entry (the ANE's rule), only -inf, and a NaN (read as +inf).
        for n in [1usize, 2, 7, 8, 9, 15, 16, 17, 24, 25, 31, 100, 256, 1000] {
            // Scales 200 and 3000 put many exponentials below 2^-125 (flushed on the vector
            // path).
            let cases =
                [(0, 1.0f32), (1, 30.0), (2, 3000.0), (3, 30.0), (4, 1.0), (5, 1.0), (6, 200.0)];
            let mut rows = Vec::new();
            for (case, scale) in cases {
                let mut x: Vec<f16> = values(n, (n * 7 + case) as u64)
                    .iter()
                    .map(|v| f16::from_f32(v * scale))
                    .collect();
                match case {
                    3 => x.iter_mut().step_by(3).for_each(|v| *v = f16::NEG_INFINITY),
                    4 => x[n / 2] = f16::INFINITY,
                    5 if n > 1 => {
                        x.fill(f16::NEG_INFINITY);
                        x[n - 1] = f16::NAN;
                    }
                    5 => x[0] = f16::NEG_INFINITY,
                    _ => {}
                }
                let mut want: Vec<f32> = x.iter().map(|v| numerics::ane_read(v.to_f32())).collect();
                plain_row(&mut want, true);
                let want: Vec<u16> =
                    want.iter().map(|&v| numerics::f32_to_f16(v).to_bits()).collect();
                let mut out = vec![f16::ZERO; n];
                softmax(&x, &[n], 0, &mut out).unwrap();
                let got: Vec<u16> = out.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "row of {n}, case {case}");
                rows.push((x, want));
            }
            // All the cases as the rows of one tensor, each row the same as alone (the vector
            // path pipelines rows), the portable cases (+inf, NaN) first, between and last.
            let order = [4, 0, 1, 2, 5, 3, 6, 4];
            let x: Vec<f16> = order.iter().flat_map(|&c| rows[c].0.clone()).collect();
            let want: Vec<u16> = order.iter().flat_map(|&c| rows[c].1.clone()).collect();
            let mut out = vec![f16::ZERO; x.len()];
            softmax(&x, &[order.len(), n], 1, &mut out).unwrap();
            let got: Vec<u16> = out.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "rows of {n}");
        }
    }

    #[test]
    fn fp16_rows_through_the_subnormal_band_have_the_bits_of_the_plain_loops() {
        // Rows whose exponentials spread over [2^-140, 1], where the vector path flushes: in
        // one batch, so that the test runs the path softmax picks for this CPU.
        let (rows, n) = (3000, 40);
        let x: Vec<f16> = values(rows * n, 77)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                f16::from_f32(if i % n == 0 { 0.0 } else { (v.abs() * -200.0).max(-97.0) })
            })
            .collect();
        let mut out = vec![f16::ZERO; x.len()];
        softmax(&x, &[rows, n], 1, &mut out).unwrap();
        for (r, (xr, or)) in x.chunks(n).zip(out.chunks(n)).enumerate() {
            let mut want: Vec<f32> = xr.iter().map(|v| v.to_f32()).collect();
            plain_row(&mut want, true);
            let want: Vec<u16> = want.iter().map(|&v| numerics::f32_to_f16(v).to_bits()).collect();
            let got: Vec<u16> = or.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "row {r}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp16_has_the_bits_of_exp_f32_or_flushes_below_the_normal_range() {
        use crate::sim::kernels::exp_f32;
        use std::arch::x86_64::*;
        if super::super::gemm::Isa::detect() != super::super::gemm::Isa::Avx512 {
            return;
        }
        // Every 2^-12 step from -110 to 0, the clamp's neighbourhood, and the ends.
        let mut xs: Vec<f32> = (0..=110 * 4096).map(|i| -(i as f32) / 4096.0).collect();
        xs.extend([f32::NEG_INFINITY, -0.0, 0.0, -104.0, -103.999_99, -104.000_01, -87.336_54]);
        xs.extend((1..2000).map(|i| -f32::from_bits(i * 0x0008_0000)));
        // Far below the old clamp, down to the largest finite magnitude.
        xs.extend((0..400).map(|i| -f32::from_bits(0x42d0_0000 + i * 0x0026_0000)));
        xs.extend([-105.0, -150.0, -1e4, -1e30, f32::MIN]);
        for chunk in xs.chunks(16) {
            let mut lanes = [0.0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut got = [0.0f32; 16];
            // SAFETY: detect() returned Avx512, so the CPU has every feature exp16 needs.
            unsafe {
                _mm512_storeu_ps(got.as_mut_ptr(), x86::exp16(_mm512_loadu_ps(lanes.as_ptr())))
            };
            // Four vectors at once: each lane's bits as one at a time.
            let mut four = [[0.0f32; 16]; 4];
            // SAFETY: as above.
            unsafe {
                let v = _mm512_loadu_ps(lanes.as_ptr());
                let y = x86::exp16xn([v, _mm512_setzero_ps(), v, v]);
                for (q, dst) in four.iter_mut().enumerate() {
                    _mm512_storeu_ps(dst.as_mut_ptr(), y[q]);
                }
            }
            assert_eq!(four[0].map(f32::to_bits), got.map(f32::to_bits));
            assert_eq!(four[3].map(f32::to_bits), got.map(f32::to_bits));
            assert!(four[1].iter().all(|&v| v == 1.0));
            for (x, g) in chunk.iter().zip(got) {
                let want = exp_f32(*x);
                // Either exp_f32's bits, or +0 for a result under 1.5 * 2^-125; never subnormal.
                let flushed = g.to_bits() == 0 && want < 1.5 * 2f32.powi(-125);
                assert!(g.to_bits() == want.to_bits() || flushed, "exp({x}): {g} for {want}");
                assert!(g == 0.0 || g.is_normal(), "exp({x}): {g}");
            }
        }
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
