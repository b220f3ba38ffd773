//! Fused scaled_dot_product_attention: `softmax(Q K^T * scale + mask) V`, scale = 1/sqrt(E).
//! Q `[B*, L, E]`, K `[B*, S, E]`, V `[B*, S, EV]`, batch dims broadcast; the mask broadcasts
//! to `[B*, L, S]`, additive or boolean (false = masked out, i.e. -inf).
//!
//! The fused kernel gives the same numbers, bit for bit, as the simulator running the
//! decomposed MIL graph `matmul(Q, K, transpose_y) -> mul(scale) -> add(mask) -> softmax ->
//! matmul(., V)` in the same element type: every intermediate is rounded to the element type
//! where that graph stores a tensor (after QK^T, after the scale, after the mask, after the
//! softmax), the scale is the element type's nearest value to 1/sqrt(E), and for fp16 the two
//! matmuls go through the ANE's output port (saturation at 2^15). Only the f32 buffers between
//! those points are saved.
//!
//! Under a causal-style mask, each query row computes only the keys it can see (the rest of
//! its scores and their PV terms are exact zeros in the decomposed graph, under conditions
//! [`live_keys`] checks on every block), which nearly halves a causal attention's products.
//!
//! The real ANE ignores `attn_mask` (REFERENCE.md §2), so `apply_mask` lets the runtime choose:
//! `true` follows MIL semantics, `false` mimics the hardware.

use super::gemm::{self, Elems, Epilogue, Operand, Port, View};
use super::matmul::batch_offsets;
use super::softmax::RowKernel;
use super::{
    Element, KernelError, Result, Scratch, broadcast_shapes, broadcast_strides, check_len, numel,
};
use crate::sim::numerics;

const KERNEL: &str = "scaled_dot_product_attention";
/// Runs of blocks per core at most (see the comment on the split in [`attention_scaled`]).
const RUNS_PER_WORKER: usize = 3;

/// The attention mask of MIL's sdpa.
#[derive(Debug, Clone, Copy)]
pub enum AttentionMask<'a, T> {
    /// Added to the scaled scores.
    Additive {
        /// The mask, dense row-major over `shape`.
        values: &'a [T],
        /// Its shape; it must broadcast to the scores' `[B*, L, S]`.
        shape: &'a [usize],
    },
    /// `true` keeps a score, `false` masks it out (adds -inf).
    Boolean {
        /// The mask, dense row-major over `shape`.
        values: &'a [bool],
        /// Its shape; it must broadcast to the scores' `[B*, L, S]`.
        shape: &'a [usize],
    },
}

impl<T> AttentionMask<'_, T> {
    fn shape(&self) -> &[usize] {
        match self {
            AttentionMask::Additive { shape, .. } | AttentionMask::Boolean { shape, .. } => shape,
        }
    }
    fn len(&self) -> usize {
        match self {
            AttentionMask::Additive { values, .. } => values.len(),
            AttentionMask::Boolean { values, .. } => values.len(),
        }
    }
}

/// Shapes of an attention call.
struct Dims {
    l: usize,
    s: usize,
    e: usize,
    ev: usize,
    batch: Vec<usize>,
    q_b: Vec<usize>,
    k_b: Vec<usize>,
    v_b: Vec<usize>,
    out_shape: Vec<usize>,
}

fn dims(q: &[usize], k: &[usize], v: &[usize]) -> Result<Dims> {
    let err = || KernelError::new(KERNEL, format!("Q {q:?}, K {k:?}, V {v:?} do not fit"));
    if q.len() < 2 || k.len() < 2 || v.len() < 2 {
        return Err(err());
    }
    let (l, e) = (q[q.len() - 2], q[q.len() - 1]);
    let (s, ek) = (k[k.len() - 2], k[k.len() - 1]);
    let (sv, ev) = (v[v.len() - 2], v[v.len() - 1]);
    if e != ek || s != sv {
        return Err(err());
    }
    let (qb, kb, vb) = (&q[..q.len() - 2], &k[..k.len() - 2], &v[..v.len() - 2]);
    let batch =
        broadcast_shapes(qb, kb).and_then(|b| broadcast_shapes(&b, vb)).map_err(|_| err())?;
    let mut out_shape = batch.clone();
    out_shape.extend([l, ev]);
    Ok(Dims {
        l,
        s,
        e,
        ev,
        q_b: batch_offsets(qb, &batch),
        k_b: batch_offsets(kb, &batch),
        v_b: batch_offsets(vb, &batch),
        batch,
        out_shape,
    })
}

/// Output shape of sdpa: `[B*, L, EV]`.
pub fn attention_output_shape(
    q_shape: &[usize],
    k_shape: &[usize],
    v_shape: &[usize],
) -> Result<Vec<usize>> {
    Ok(dims(q_shape, k_shape, v_shape)?.out_shape)
}

/// Fused scaled dot-product attention; see the module doc.
#[allow(clippy::too_many_arguments)]
pub fn scaled_dot_product_attention<T: Element>(
    q: &[T],
    q_shape: &[usize],
    k: &[T],
    k_shape: &[usize],
    v: &[T],
    v_shape: &[usize],
    mask: Option<AttentionMask<'_, T>>,
    apply_mask: bool,
    out: &mut [T],
    scratch: &mut Scratch,
) -> Result<()> {
    attention_scaled(q, q_shape, k, k_shape, v, v_shape, mask, apply_mask, None, out, scratch)
}

/// [`scaled_dot_product_attention`] with the scores multiplied by `scale` (a value of `T`,
/// finite and nonzero) instead of `T`'s nearest value to 1/sqrt(E) when it is given: the same
/// bits as the decomposed graph with `mul(scale)`, for graphs that spell attention out with a
/// scale of their own.
#[allow(clippy::too_many_arguments)]
pub fn attention_scaled<T: Element>(
    q: &[T],
    q_shape: &[usize],
    k: &[T],
    k_shape: &[usize],
    v: &[T],
    v_shape: &[usize],
    mask: Option<AttentionMask<'_, T>>,
    apply_mask: bool,
    scale: Option<f32>,
    out: &mut [T],
    scratch: &mut Scratch,
) -> Result<()> {
    if let Some(c) = scale
        && (!c.is_finite() || c == 0.0 || T::round(c) != c)
    {
        return Err(KernelError::new(
            KERNEL,
            format!("scale {c} is not a finite, nonzero {} value", T::NAME),
        ));
    }
    check_len(KERNEL, "Q", q.len(), q_shape)?;
    check_len(KERNEL, "K", k.len(), k_shape)?;
    check_len(KERNEL, "V", v.len(), v_shape)?;
    let d = dims(q_shape, k_shape, v_shape)?;
    check_len(KERNEL, "output", out.len(), &d.out_shape)?;
    // Mask strides over [batch..., L, S].
    let mask = if apply_mask { mask } else { None };
    let mask_strides = match &mask {
        Some(m) => {
            check_len(KERNEL, "mask", m.len(), m.shape())?;
            let mut full = d.batch.clone();
            full.extend([d.l, d.s]);
            let b = broadcast_shapes(m.shape(), &full);
            if b.as_deref() != Ok(&full[..]) {
                return Err(KernelError::new(
                    KERNEL,
                    format!("mask {:?} does not broadcast to {full:?}", m.shape()),
                ));
            }
            Some(broadcast_strides(m.shape(), &full))
        }
        None => None,
    };
    let (l, s, e, ev) = (d.l, d.s, d.e, d.ev);
    let nb = numel(&d.batch);
    if nb * l * ev == 0 {
        return Ok(());
    }
    // Work is cut into blocks of query rows, each running QK^T -> scale/mask/softmax -> PV for
    // its rows while their scores are still in cache; each query row sees its whole key row, so
    // the softmax is the one of the decomposed graph. Blocks go to the cores in contiguous runs,
    // a few per core so that a core slowed by other work hands its last runs to the others,
    // and each block's two products run on one core: the GEMM packs K and V once per block, so
    // large blocks (a whole head when it fits) waste the least time packing.
    let work = nb.saturating_mul(l * s * (e + ev));
    let parallel = super::parallel_worth_it(work / 16);
    let workers = if parallel { rayon::current_num_threads().max(1) } else { 1 };
    let rows = block_rows(l, s, nb, workers);
    let blocks_per_batch = l.div_ceil(rows);
    let blocks = nb * blocks_per_batch;
    let workers = workers.min(blocks);
    let runs = if workers == 1 { 1 } else { (workers * RUNS_PER_WORKER).min(blocks) };
    // The scores' rows lie a whole block of K apart when they fit one, so that the PV product
    // reads them in place as its packed left operand.
    let sr = if s > 0 && s <= gemm::KC { gemm::KC } else { s };
    // Per run: scores of a block and one widened mask row.
    let per_run = rows * sr + s;
    let (_, _, _, sw) = scratch.buffers(0, 0, 0, runs * per_run);
    // fp16 operands are widened (NaN read as +inf) while the GEMM packs them.
    let (qe, ke, ve) = (gemm::elems(q)?, gemm::elems(k)?, gemm::elems(v)?);
    let scale = scale.unwrap_or_else(|| T::round(1.0 / (e as f32).sqrt()));
    let batch_rank = d.batch.len();
    // The matmuls' output port: fp16 saturates as the ANE's multiply-accumulate port does.
    let epilogue = if T::ANE_RULES { Epilogue::port(Port::AneSaturate) } else { Epilogue::PLAIN };
    let fast_rows = RowKernel::for_scores::<T>(scale);
    // The vector rows apply the port to the scores themselves, in the pass that reads them.
    let scores_epilogue = if fast_rows.applies_port() { Epilogue::PLAIN } else { epilogue };
    // A single worker may let the GEMM itself use the pool.
    let gemm_parallel = workers == 1 && parallel;
    // First output row (over all batches) of block `t`.
    let first_row = |t: usize| (t / blocks_per_batch) * l + (t % blocks_per_batch) * rows;

    let block = |t: usize, out_rows: &mut [T], buf: &mut [f32]| -> Result<()> {
        let b = t / blocks_per_batch;
        let r0 = (t % blocks_per_batch) * rows;
        let m = rows.min(l - r0);
        let (scores, mask_row) = buf.split_at_mut(rows * sr);
        let scores = &mut scores[..m * sr];
        let mask_base = mask_strides.as_ref().map(|st| {
            let mut rest = b;
            let mut off = 0;
            for i in (0..batch_rank).rev() {
                off += (rest % d.batch[i]) * st[i];
                rest /= d.batch[i];
            }
            off
        });
        // A causal-style mask: each row computes only the keys it can see (see `live_keys`).
        if let (Some(mk), Some(st), Some(base)) = (&mask, &mask_strides, mask_base)
            && fast_rows.applies_port()
            && s > 0
        {
            let ops = BlockOperands {
                q: (qe, d.q_b[b] * l * e + r0 * e),
                k: (ke, d.k_b[b] * s * e),
                v: (ve, d.v_b[b] * s * ev),
            };
            let (sl, ss) = (st[batch_rank], st[batch_rank + 1]);
            let mask_at = (mk, base + r0 * sl, sl);
            if let Some(lens) = live_keys(&ops, (m, s, e, ev), mask_at, ss, scale) {
                let kernels = (fast_rows, scale, scores_epilogue, epilogue, gemm_parallel);
                return live_block(
                    &lens,
                    &ops,
                    (s, e, ev, sr),
                    scores,
                    mask_row,
                    mask_at,
                    kernels,
                    out_rows,
                );
            }
        }
        // Q rows r0.. times K^T, read in place (K^T(p, j) = K(j, p)).
        let q_view = View {
            data: qe,
            offset: d.q_b[b] * l * e + r0 * e,
            row_stride: e as isize,
            col_stride: 1,
        };
        let kt_view =
            View { data: ke, offset: d.k_b[b] * s * e, row_stride: 1, col_stride: e as isize };
        gemm::gemm(
            m,
            s,
            e,
            Operand::View(q_view),
            Operand::View(kt_view),
            gemm::Out::F32(scores),
            sr,
            scores_epilogue,
            gemm_parallel,
        )?;
        // (With no keys there are no scores, and PV is the port's image of zero.)
        match (&mask, &mask_strides, mask_base) {
            _ if s == 0 => {}
            (Some(mk), Some(st), Some(base)) => {
                let (sl, ss) = (st[batch_rank], st[batch_rank + 1]);
                for (i, row) in scores.chunks_mut(sr).enumerate() {
                    let mask_row = Some((mk, base + (r0 + i) * sl, ss, &mut *mask_row));
                    fast_rows.probabilities::<T>(&mut row[..s], scale, mask_row);
                }
            }
            _ => fast_rows.unmasked_rows::<T>(scores, sr, m, s, scale),
        }
        let p_view =
            View { data: Elems::F32(scores), offset: 0, row_stride: sr as isize, col_stride: 1 };
        let v_view =
            View { data: ve, offset: d.v_b[b] * s * ev, row_stride: ev as isize, col_stride: 1 };
        gemm::gemm(
            m,
            ev,
            s,
            Operand::View(p_view),
            Operand::View(v_view),
            gemm::out(out_rows)?,
            ev,
            epilogue,
            gemm_parallel,
        )
    };
    // Blocks [t0, t1) in order, writing the output rows they cover.
    let run = |t0: usize, t1: usize, out_run: &mut [T], buf: &mut [f32]| -> Result<()> {
        let base = first_row(t0);
        for t in t0..t1 {
            let r = first_row(t);
            let m = rows.min(l - (t % blocks_per_batch) * rows);
            let o = &mut out_run[(r - base) * ev..(r - base + m) * ev];
            block(t, o, buf)?;
        }
        Ok(())
    };
    if runs == 1 {
        return run(0, blocks, out, &mut sw[..per_run]);
    }
    let mut results: Vec<Result<()>> = (0..runs).map(|_| Ok(())).collect();
    rayon::scope(|scope| {
        let (mut out_rest, mut buf_rest) = (&mut *out, &mut *sw);
        let run = &run;
        for (w, result) in results.iter_mut().enumerate() {
            let (t0, t1) = (blocks * w / runs, blocks * (w + 1) / runs);
            let len = (first_row(t1) - first_row(t0)) * ev;
            let (o, orest) = std::mem::take(&mut out_rest).split_at_mut(len);
            let (bf, brest) = std::mem::take(&mut buf_rest).split_at_mut(per_run);
            out_rest = orest;
            buf_rest = brest;
            scope.spawn(move |_| *result = run(t0, t1, o, bf));
        }
    });
    results.into_iter().collect()
}

/// Q, K and V of a block of query rows: each operand's elements and the offset of the
/// block's first row (Q) or the batch's first key (K, V) in them.
struct BlockOperands<'a> {
    q: (Elems<'a>, usize),
    k: (Elems<'a>, usize),
    v: (Elems<'a>, usize),
}

/// A mask value at or below this one (-inf included) marks a dead key.
const DEAD_KEY: half::f16 = half::f16::from_f32_const(-30000.0);
/// The last live key of a row must have a mask value of at least this.
const LIVE_FLOOR: f32 = -10000.0;
/// Keys per QK^T product, and query rows per PV product, when a block skips dead keys.
const KEY_CHUNK: usize = 64;
const ROW_CHUNK: usize = 8 * gemm::MR;

/// For a block whose mask hides a tail of keys from each row (a causal mask), the number of
/// scores each row computes: its live keys rounded up to a whole 16-lane step (or all S),
/// non-decreasing down the block. `None` when the block must compute every score.
///
/// A key is dead for a row when its mask value is -30000 or less (the fixtures and the
/// training kernels mask with -40000; -inf counts too), and every key after it is dead. The
/// probabilities of dead keys are then exactly +0 in the decomposed graph, and the fused
/// kernel may skip them, when what follows holds (all checked here, else `None`):
/// - Q, K and V are fp16 and finite (fp16 NaN is read as +inf), and E * max|q| * max|k| is at
///   most 2^14 with its image under the scale at most 2^12: every score is finite, far below
///   the port's saturation, and at most 2^12 in magnitude once scaled;
/// - the mask is additive fp16, contiguous along S, and each row's last live key has a mask
///   value of at least -10^4. So the row's max is at least -14100 while a dead score is at
///   most -25900: the exponential of a dead score less the max is exactly +0 (both
///   `exp_f32` and the 16-lane steps give +0 below -104), so it adds nothing to the sum, and
///   its probability is +0;
/// - V is finite, so each skipped product term of PV, +0 times a finite value, is a zero that
///   leaves the f32 accumulator's bits as they are (the accumulator starts at +0 and is never
///   -0).
///
/// Rounding each row's length up to a whole 16-lane step keeps the order of the row sum's
/// adds (`exp_sum` adds 16-lane steps into 8 partial sums, then a tail one by one): the
/// steps past the length only add zeros. A row that would reach past the last whole step
/// computes all S.
fn live_keys<T: Element>(
    ops: &BlockOperands<'_>,
    (m, s, e, ev): (usize, usize, usize, usize),
    (mask, mask_off, mask_row_stride): (&AttentionMask<'_, T>, usize, usize),
    mask_col_stride: usize,
    scale: f32,
) -> Option<Vec<usize>> {
    let AttentionMask::Additive { values, .. } = mask else { return None };
    let values = T::as_f16(values)?;
    if mask_col_stride != 1 || m == 0 {
        return None;
    }
    fn part<'a>((x, off): (Elems<'a>, usize), len: usize) -> Option<&'a [half::f16]> {
        let Elems::F16(x) = x else { return None };
        x.get(off..off.checked_add(len)?)
    }
    let (q, k, v) = (part(ops.q, m * e)?, part(ops.k, s * e)?, part(ops.v, s * ev)?);
    // The largest magnitude as fp16 bits (which order magnitudes as integers do); None when
    // a value is inf or NaN.
    let largest = |x: &[half::f16]| -> Option<f32> {
        let bits = x.iter().fold(0u16, |acc, h| acc.max(h.to_bits() & 0x7fff));
        (bits < 0x7c00).then(|| half::f16::from_bits(bits).to_f32())
    };
    let bound = e as f32 * largest(q)? * largest(k)? * 1.01;
    largest(v)?;
    if !(bound <= 16384.0 && bound * scale.abs() <= 4096.0) {
        return None;
    }
    let dead = |h: &half::f16| {
        let b = h.to_bits();
        (0x8000 | DEAD_KEY.to_bits() & 0x7fff..=0xfc00).contains(&b)
    };
    let full = s / 16 * 16;
    let mut lens = Vec::with_capacity(m);
    for i in 0..m {
        let row = values.get(mask_off + i * mask_row_stride..)?.get(..s)?;
        // Skip whole chunks of dead keys from the end, then single keys.
        let mut live = s;
        while live >= 32 && row[live - 32..live].iter().fold(true, |all, h| all & dead(h)) {
            live -= 32;
        }
        while live > 0 && dead(&row[live - 1]) {
            live -= 1;
        }
        if live == 0 || row[live - 1].to_f32() < LIVE_FLOOR {
            return None;
        }
        let len = live.div_ceil(16) * 16;
        let len = if len <= full { len } else { s };
        if lens.last().is_some_and(|&prev| len < prev) {
            return None;
        }
        lens.push(len);
    }
    (lens[0] < s).then_some(lens)
}

/// One block of query rows whose rows compute only their first `lens[i]` scores
/// ([`live_keys`]): QK^T in chunks of keys, each for the rows that reach it; the rows between
/// the products on their live scores, the rest of each row set to +0; PV in chunks of rows,
/// each over the keys its last row reaches. The same bits as the whole block.
#[allow(clippy::too_many_arguments)]
fn live_block<T: Element>(
    lens: &[usize],
    ops: &BlockOperands<'_>,
    (s, e, ev, sr): (usize, usize, usize, usize),
    scores: &mut [f32],
    mask_buf: &mut [f32],
    (mask, mask_off, mask_row_stride): (&AttentionMask<'_, T>, usize, usize),
    (rows, scale, scores_epilogue, epilogue, parallel): (
        RowKernel,
        f32,
        Epilogue<'_>,
        Epilogue<'_>,
        bool,
    ),
    out_rows: &mut [T],
) -> Result<()> {
    let ((qe, q_off), (ke, k_off), (ve, v_off)) = (ops.q, ops.k, ops.v);
    let m = lens.len();
    for c0 in (0..s).step_by(KEY_CHUNK) {
        // The rows that reach key c0 (the lengths never decrease down the block).
        let first = lens.partition_point(|&len| len <= c0);
        if first == m {
            break;
        }
        let q_view =
            View { data: qe, offset: q_off + first * e, row_stride: e as isize, col_stride: 1 };
        let kt_view =
            View { data: ke, offset: k_off + c0 * e, row_stride: 1, col_stride: e as isize };
        gemm::gemm(
            m - first,
            KEY_CHUNK.min(s - c0),
            e,
            Operand::View(q_view),
            Operand::View(kt_view),
            gemm::Out::F32(&mut scores[first * sr + c0..]),
            sr,
            scores_epilogue,
            parallel,
        )?;
    }
    for (i, row) in scores.chunks_mut(sr).enumerate().take(m) {
        let mask_row = Some((mask, mask_off + i * mask_row_stride, 1, &mut *mask_buf));
        rows.probabilities::<T>(&mut row[..lens[i]], scale, mask_row);
        row[lens[i]..s].fill(0.0);
    }
    for r0 in (0..m).step_by(ROW_CHUNK) {
        let r1 = (r0 + ROW_CHUNK).min(m);
        let keys = lens[r1 - 1];
        let p_view = View {
            data: Elems::F32(&scores[r0 * sr..]),
            offset: 0,
            row_stride: sr as isize,
            col_stride: 1,
        };
        let v_view = View { data: ve, offset: v_off, row_stride: ev as isize, col_stride: 1 };
        gemm::gemm(
            r1 - r0,
            ev,
            keys,
            Operand::View(p_view),
            Operand::View(v_view),
            gemm::out(&mut out_rows[r0 * ev..r1 * ev])?,
            ev,
            epilogue,
            parallel,
        )?;
    }
    Ok(())
}

/// Query rows per block: the block's f32 scores stay within 512 KiB (in L2 next to the packed
/// K and V), at least 8 rows so the GEMMs keep their shape; blocks are halved until every
/// worker gets an equal share of them, or several.
fn block_rows(l: usize, s: usize, nb: usize, workers: usize) -> usize {
    let mut rows = (131_072 / s.max(1)).clamp(8, 1024).min(l.max(1));
    loop {
        let blocks = nb * l.div_ceil(rows);
        let balanced =
            blocks >= workers && (blocks.is_multiple_of(workers) || blocks >= 4 * workers);
        if rows <= 8 || balanced {
            return rows;
        }
        rows = rows.div_ceil(2);
    }
}

/// The mask of one row of scores, when there is one: the mask, the offset of the row in it,
/// its stride along S, and a buffer of at least S floats for the widened row.
type MaskRow<'a, 'm, T> = Option<(&'a AttentionMask<'m, T>, usize, usize, &'a mut [f32])>;

/// How the rows between the two products are computed: softmax's row kernels (the portable
/// loops, or AVX-512 for fp16: the same operations in the same order, so the same bits), with
/// the steps before the softmax.
impl RowKernel {
    /// The kernel for rows of `T` scaled by `scale`.
    fn for_scores<T: Element>(scale: f32) -> RowKernel {
        match RowKernel::pick::<T>() {
            // The vector path relies on a finite, nonzero scale (see `probabilities_f16`).
            #[cfg(target_arch = "x86_64")]
            RowKernel::Avx512F16 if scale.is_finite() && scale != 0.0 => RowKernel::Avx512F16,
            _ => RowKernel::Portable,
        }
    }

    /// Whether [`Self::probabilities`] takes the raw sums of QK^T and applies the output port
    /// itself (else the port was applied by the product).
    fn applies_port(self) -> bool {
        self != RowKernel::Portable
    }

    /// [`Self::probabilities`] without a mask on `m` rows of `s` scores lying `stride` apart
    /// in `block`.
    #[inline(always)]
    fn unmasked_rows<T: Element>(
        self,
        block: &mut [f32],
        stride: usize,
        m: usize,
        s: usize,
        scale: f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self == RowKernel::Avx512F16 {
            // SAFETY: as in `probabilities`; the caller's block holds the m rows.
            unsafe { x86::probabilities_f16_rows::<T>(block, stride, m, s, scale) };
            return;
        }
        for row in block.chunks_mut(stride).take(m) {
            self.probabilities::<T>(&mut row[..s], scale, None);
        }
    }

    /// The decomposed graph between the matmuls, on one row of QK^T (the raw sums when
    /// [`Self::applies_port`], else the port's output): round the matmul output to `T`,
    /// mul(scale), add(mask), softmax, each result rounded to `T`; the row ends up holding the
    /// probabilities the PV product reads.
    #[inline(always)]
    fn probabilities<T: Element>(self, sc: &mut [f32], scale: f32, mask: MaskRow<'_, '_, T>) {
        #[cfg(target_arch = "x86_64")]
        if self == RowKernel::Avx512F16 {
            // SAFETY: Avx512F16 is picked only on CPUs with AVX-512F, BW and VL, AVX2, FMA and
            // F16C (gemm::Isa::detect).
            unsafe { x86::probabilities_f16::<T>(sc, scale, mask) };
            return;
        }
        super::with_wide_simd(
            #[inline(always)]
            || {
                for x in sc.iter_mut() {
                    *x = T::round(*x);
                    *x = T::round(ane(T::ANE_RULES, *x * scale));
                }
                if let Some((mk, off, ss, buf)) = mask {
                    add_mask_row::<T>(sc, mk, off, ss, buf);
                }
                super::softmax::softmax_row::<T>(sc);
                for x in sc.iter_mut() {
                    *x = T::round(*x);
                }
            },
        )
    }
}

/// Adds row `off` (stride `ss`) of the mask to the scores `sc`, rounding each sum to `T` as the
/// decomposed graph's `add` does; `buf` (at least `sc.len()` long) holds the widened mask row.
#[inline(always)]
fn add_mask_row<T: Element>(
    sc: &mut [f32],
    mask: &AttentionMask<'_, T>,
    off: usize,
    ss: usize,
    buf: &mut [f32],
) {
    match mask {
        AttentionMask::Additive { values, .. } => {
            let mrow = &mut buf[..sc.len()];
            if ss == 1 {
                T::load(&values[off..off + sc.len()], mrow);
            } else {
                for (j, m) in mrow.iter_mut().enumerate() {
                    *m = values[off + j * ss].to_f32();
                }
            }
            for (x, &m) in sc.iter_mut().zip(mrow.iter()) {
                let mv = if T::ANE_RULES { numerics::ane_read(m) } else { m };
                *x = T::round(ane(T::ANE_RULES, *x + mv));
            }
        }
        AttentionMask::Boolean { values, .. } => {
            for (j, x) in sc.iter_mut().enumerate() {
                let mv = if values[off + j * ss] { 0.0 } else { f32::NEG_INFINITY };
                *x = T::round(ane(T::ANE_RULES, *x + mv));
            }
        }
    }
}

#[inline(always)]
fn ane(rules: bool, x: f32) -> f32 {
    if rules { numerics::ane_result(x) } else { x }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The fp16 rows between the two products with AVX-512: the operations of the portable
    //! loops (`numerics::round_f16`, `softmax_row`, `exp_f32`) one for one, 16 lanes at a
    //! time. Multiplies and adds stay separate instructions (no FMA), as in the portable code.
    use super::{AttentionMask, Element, MaskRow, add_mask_row};
    use crate::sim::kernels::lanes16::steps16;
    use crate::sim::kernels::softmax::softmax_row;
    use crate::sim::kernels::softmax::x86::{
        exp_normalize, exp_sum, normalize_row, normalize16, round16, row_max,
    };
    use std::arch::x86_64::*;

    /// The smallest magnitude `numerics::mac_saturate` turns into ±inf (it rounds to 2^15 in
    /// fp16); a test holds it to the scalar rule.
    pub(super) const SATURATION_THRESHOLD: f32 = 32760.0;
    /// The smallest normal fp16 magnitude, 2^-14.
    const F16_MIN_NORMAL: f32 = 6.103_515_6e-5;

    /// fp16's multiply-accumulate port (`numerics::mac_saturate`): NaN -> +0, magnitudes from
    /// the threshold on -> ±inf.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn saturate16(x: __m512) -> __m512 {
        let x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), x);
        let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(
            _mm512_abs_ps(x),
            _mm512_set1_ps(SATURATION_THRESHOLD),
        );
        _mm512_mask_mul_ps(x, big, x, _mm512_set1_ps(f32::INFINITY))
    }

    /// A sum of QK^T whose port is a no-op (finite, below the threshold) as fp16, times the
    /// scale, rounded to fp16. With a power-of-two scale (`POW2`) the product of an fp16 value
    /// is exact in fp16 unless it falls below fp16's normal range, so the second rounding only
    /// runs when a lane does.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn scaled<const POW2: bool>(x: __m512, scale: __m512) -> __m512 {
        let y = _mm512_mul_ps(round16(x), scale);
        if POW2 {
            let tiny =
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(y), _mm512_set1_ps(F16_MIN_NORMAL));
            if tiny == 0 {
                return y;
            }
        }
        round16(y)
    }

    /// Largest, smallest and sum of a row (the sum is not finite when the row holds NaN or
    /// inf). `also(i, k)` runs in each 16-lane step of the loop, for work on another row of
    /// the same length that can share it.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn row_stats(row: &[f32], mut also: impl FnMut(usize, __mmask16)) -> (f32, f32, f32) {
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut mn = _mm512_set1_ps(f32::INFINITY);
        let mut sum = _mm512_setzero_ps();
        steps16(row.len(), |i, k| {
            // SAFETY: the mask stops the load at the end of the row.
            let x = unsafe { _mm512_maskz_loadu_ps(k, row.as_ptr().add(i)) };
            mx = _mm512_mask_max_ps(mx, k, mx, x);
            mn = _mm512_mask_min_ps(mn, k, mn, x);
            sum = _mm512_add_ps(sum, x);
            also(i, k);
        });
        (_mm512_reduce_max_ps(mx), _mm512_reduce_min_ps(mn), _mm512_reduce_add_ps(sum))
    }

    /// The common case of an unmasked row, given its [`row_stats`]: when the port does
    /// nothing to the row (every sum finite and below the threshold), turns it into the
    /// exponentials of its scores less their max and returns their sum (the softmax's
    /// normalizing pass is left to the caller); else leaves the row as it is and returns None.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn unmasked_exp_sum<T: Element>(
        row: &mut [f32],
        scale: f32,
        (hi, lo, sum): (f32, f32, f32),
    ) -> Option<f32> {
        if !(sum.is_finite() && hi < SATURATION_THRESHOLD && lo > -SATURATION_THRESHOLD) {
            return None;
        }
        // The steps up to the softmax are monotonic, so the row's max is the image of the
        // largest sum: one pass computes the scaled scores and their exponentials.
        let max = T::round(T::round(hi) * scale);
        let sc = _mm512_set1_ps(scale);
        let one = |x: f32| T::round(T::round(x) * scale);
        // SAFETY: the CPU features are the caller's guarantee.
        Some(unsafe {
            if scale.to_bits() & 0x007f_ffff == 0 {
                exp_sum(row, max, |x| scaled::<true>(x, sc), one)
            } else {
                exp_sum(row, max, |x| scaled::<false>(x, sc), one)
            }
        })
    }

    /// [`probabilities_f16`] without a mask on `m` rows of `s` raw sums lying `stride` apart
    /// in `block`, with the same bits.
    ///
    /// The rows are pipelined: each row's normalizing pass runs inside the next row's
    /// statistics pass, by which time the row's sum and its reciprocal are long known. Done a
    /// row at a time, both passes wait for results at the end of a long chain of dependent
    /// adds (the sum in its fixed order), and the core has little else to do meanwhile.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C; `block` must hold the rows.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn probabilities_f16_rows<T: Element>(
        block: &mut [f32],
        stride: usize,
        m: usize,
        s: usize,
        scale: f32,
    ) {
        // The row whose exponentials wait for their normalizing pass, and 1 / their sum.
        let mut pending: Option<(usize, __m512)> = None;
        for r in 0..m {
            let (before, rest) = block.split_at_mut(r * stride);
            let row = &mut rest[..s];
            let stats = match pending.take() {
                Some((p, inv)) => {
                    let prev = before[p * stride..p * stride + s].as_mut_ptr();
                    row_stats(row, |i, k| {
                        // SAFETY: the lanes k at i lie inside row p, as in `row`.
                        unsafe { normalize16(prev.add(i), k, inv) }
                    })
                }
                None => row_stats(row, |_, _| {}),
            };
            // SAFETY: the CPU features are the caller's guarantee.
            match unsafe { unmasked_exp_sum::<T>(row, scale, stats) } {
                Some(sum) => pending = Some((r, _mm512_set1_ps(1.0 / sum))),
                // SAFETY: as above.
                None => unsafe { probabilities_f16::<T>(row, scale, None) },
            }
        }
        if let Some((p, inv)) = pending {
            // SAFETY: the CPU features are the caller's guarantee.
            unsafe { normalize_row(&mut block[p * stride..p * stride + s], inv) };
        }
    }

    /// `RowKernel::probabilities` for fp16 `T` and a finite, nonzero `scale`, on the raw sums
    /// of QK^T: the general path, for masked rows and for rows whose sums the port changes
    /// (unmasked rows take [`probabilities_f16_rows`], which comes here for the others).
    ///
    /// No NaN can arise past the port, so the `ane_result` steps of the portable loops are
    /// left out: a finite nonzero scale times a non-NaN value is not NaN, the mask step applies
    /// its own rule, and normalizing multiplies values in [0, 1] by 1 / sum with sum >= 1 (the
    /// row's max contributes exp(0) = 1).
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn probabilities_f16<T: Element>(
        row: &mut [f32],
        scale: f32,
        mask: MaskRow<'_, '_, T>,
    ) {
        let n = row.len();
        let ptr = row.as_mut_ptr();
        // The port, the rounding to fp16, times the scale, rounded.
        let sc = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        steps16(n, |i, k| {
            // SAFETY: the mask keeps the load and the store inside the row.
            unsafe {
                let x = round16(saturate16(_mm512_maskz_loadu_ps(k, ptr.add(i))));
                let x = round16(_mm512_mul_ps(x, sc));
                _mm512_mask_storeu_ps(ptr.add(i), k, x);
                mx = _mm512_mask_max_ps(mx, k, mx, x);
            }
        });
        let mut max = _mm512_reduce_max_ps(mx);
        if let Some((mk, off, ss, buf)) = mask {
            max = match mk {
                AttentionMask::Additive { values, .. } if ss == 1 => match T::as_f16(values) {
                    // SAFETY: the CPU features are the caller's guarantee.
                    Some(m) => unsafe { add_mask_f16(row, &m[off..off + n]) },
                    None => {
                        add_mask_row::<T>(row, mk, off, ss, buf);
                        row_max(row)
                    }
                },
                _ => {
                    add_mask_row::<T>(row, mk, off, ss, buf);
                    row_max(row)
                }
            };
        }
        if !max.is_finite() {
            // A row holding +inf (the ANE's rule) or only -inf: the portable softmax.
            softmax_row::<T>(row);
            for x in row.iter_mut() {
                *x = T::round(*x);
            }
            return;
        }
        // SAFETY: the CPU features are the caller's guarantee.
        unsafe { exp_normalize(row, max, |x| x, |x| x) };
    }

    /// `add_mask_row` for a contiguous fp16 additive mask: the mask read by the ANE's rule
    /// (NaN as +inf), the sum's NaN -> +0, rounded to fp16. Returns the row's new max.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL, AVX2, FMA and F16C.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn add_mask_f16(row: &mut [f32], mask: &[half::f16]) -> f32 {
        let n = row.len().min(mask.len());
        let ptr = row.as_mut_ptr();
        let inf = _mm512_set1_ps(f32::INFINITY);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        steps16(n, |i, k| {
            // SAFETY: the mask keeps the loads and the store inside the row and the mask row.
            unsafe {
                let h = _mm256_maskz_loadu_epi16(k, mask.as_ptr().add(i).cast::<i16>());
                let m = _mm512_cvtph_ps(h);
                let m = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(m, m), inf);
                let y = _mm512_add_ps(_mm512_maskz_loadu_ps(k, ptr.add(i)), m);
                let y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y), y);
                let y = round16(y);
                _mm512_mask_storeu_ps(ptr.add(i), k, y);
                mx = _mm512_mask_max_ps(mx, k, mx, y);
            }
        });
        _mm512_reduce_max_ps(mx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::elementwise::{BinaryOp, binary};
    use crate::sim::kernels::matmul::{matmul, matmul_output_shape};
    use crate::sim::kernels::softmax::softmax;
    use crate::sim::kernels::testutil::*;
    use half::f16;

    /// The decomposed MIL graph, run with the simulator's own kernels.
    #[allow(clippy::too_many_arguments)]
    fn decomposed<T: Element>(
        q: &[T],
        qs: &[usize],
        k: &[T],
        ks: &[usize],
        v: &[T],
        vs: &[usize],
        mask: Option<(&[T], &[usize])>,
    ) -> Vec<T> {
        let e = *qs.last().unwrap();
        decomposed_scaled(q, qs, k, ks, v, vs, mask, T::from_f32(1.0 / (e as f32).sqrt()))
    }

    /// The decomposed graph with `mul(scale)`.
    #[allow(clippy::too_many_arguments)]
    fn decomposed_scaled<T: Element>(
        q: &[T],
        qs: &[usize],
        k: &[T],
        ks: &[usize],
        v: &[T],
        vs: &[usize],
        mask: Option<(&[T], &[usize])>,
        scale: T,
    ) -> Vec<T> {
        let mut s = Scratch::new();
        let sshape = matmul_output_shape(qs, ks, false, true).unwrap();
        let mut scores = vec![T::default(); numel(&sshape)];
        matmul(q, qs, k, ks, false, true, &mut scores, &mut s).unwrap();
        let scale = [scale];
        let mut scaled = vec![T::default(); scores.len()];
        binary(BinaryOp::Mul, &scores, &sshape, &scale, &[], &mut scaled).unwrap();
        let mut masked = scaled.clone();
        if let Some((m, ms)) = mask {
            let shape = crate::sim::kernels::broadcast_shapes(&sshape, ms).unwrap();
            assert_eq!(shape, sshape);
            binary(BinaryOp::Add, &scaled, &sshape, m, ms, &mut masked).unwrap();
        }
        let mut p = vec![T::default(); masked.len()];
        softmax(&masked, &sshape, sshape.len() - 1, &mut p).unwrap();
        let oshape = matmul_output_shape(&sshape, vs, false, false).unwrap();
        let mut out = vec![T::default(); numel(&oshape)];
        matmul(&p, &sshape, v, vs, false, false, &mut out, &mut s).unwrap();
        out
    }

    fn fused<T: Element>(
        q: &[T],
        qs: &[usize],
        k: &[T],
        ks: &[usize],
        v: &[T],
        vs: &[usize],
        mask: Option<AttentionMask<'_, T>>,
    ) -> Vec<T> {
        let shape = attention_output_shape(qs, ks, vs).unwrap();
        let mut out = vec![T::default(); numel(&shape)];
        let mut s = Scratch::new();
        scaled_dot_product_attention(q, qs, k, ks, v, vs, mask, true, &mut out, &mut s).unwrap();
        out
    }

    fn data(shape: &[usize], seed: u64, scale: f32) -> Vec<f16> {
        values(numel(shape), seed).iter().map(|v| f16::from_f32(v * scale)).collect()
    }

    #[test]
    fn fused_equals_decomposed_bit_for_bit() {
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[1, 4, 8], &[1, 6, 8], &[1, 6, 5]),
            (&[2, 3, 17, 33], &[2, 3, 20, 33], &[2, 3, 20, 16]),
            (&[3, 1, 64], &[3, 65, 64], &[3, 65, 64]),
            (&[2, 5, 16], &[1, 7, 16], &[7, 3]),
            (&[12, 64, 64], &[12, 64, 64], &[12, 64, 64]),
            // Several query blocks per batch, the last one partial; one worker, then several.
            (&[2, 300, 16], &[2, 70, 16], &[2, 70, 16]),
            (&[4, 2, 200, 32], &[4, 2, 129, 32], &[4, 2, 129, 24]),
        ];
        for (qs, ks, vs) in cases {
            let q = data(qs, 1, 3.0);
            let k = data(ks, 2, 3.0);
            let v = data(vs, 3, 1.0);
            let f = fused(&q, qs, &k, ks, &v, vs, None);
            let g = decomposed(&q, qs, &k, ks, &v, vs, None);
            assert_eq!(f, g, "{qs:?} {ks:?} {vs:?}");
            // With a broadcast additive mask (causal-style rows of -40000).
            let l = qs[qs.len() - 2];
            let s = ks[ks.len() - 2];
            let m: Vec<f16> = (0..l * s)
                .map(|i| f16::from_f32(if i % s > i / s { -40000.0 } else { 0.0 }))
                .collect();
            let ms = [l, s];
            let f = fused(
                &q,
                qs,
                &k,
                ks,
                &v,
                vs,
                Some(AttentionMask::Additive { values: &m, shape: &ms }),
            );
            let g = decomposed(&q, qs, &k, ks, &v, vs, Some((&m, &ms)));
            assert_eq!(f, g, "masked {qs:?} {ks:?} {vs:?}");
        }
    }

    #[test]
    fn a_scale_of_the_graphs_own_gives_the_decomposed_bits() {
        // fp16's 1/sqrt(128) as a graph writes it, a power of two, and an arbitrary negative
        // value; with and without a mask; one and several workers.
        let (qs, ks, vs): (&[usize], &[usize], &[usize]) =
            (&[2, 3, 40, 24], &[2, 3, 50, 24], &[2, 3, 50, 16]);
        let (q, k, v) = (data(qs, 11, 3.0), data(ks, 12, 3.0), data(vs, 13, 1.0));
        let (l, s) = (qs[2], ks[2]);
        let m: Vec<f16> =
            (0..l * s).map(|i| f16::from_f32(if i % s > i / s { -40000.0 } else { 0.0 })).collect();
        let ms = [1, 1, l, s];
        for c in [0.088388f32, 0.25, -0.3] {
            let c16 = f16::from_f32(c);
            for mask in [false, true] {
                let want = decomposed_scaled(
                    &q,
                    qs,
                    &k,
                    ks,
                    &v,
                    vs,
                    mask.then_some((&m[..], &ms[..])),
                    c16,
                );
                let mut got = vec![f16::ZERO; want.len()];
                let am = mask.then_some(AttentionMask::Additive { values: &m, shape: &ms });
                let (qsl, ksl, vsl) = (&q[..], &k[..], &v[..]);
                attention_scaled(
                    qsl,
                    qs,
                    ksl,
                    ks,
                    vsl,
                    vs,
                    am,
                    true,
                    Some(c16.to_f32()),
                    &mut got,
                    &mut Scratch::new(),
                )
                .unwrap();
                assert_eq!(got, want, "scale {c} mask {mask}");
            }
        }
        // A scale that is no fp16 value, or not finite, is refused.
        let mut out = vec![f16::ZERO; numel(&attention_output_shape(qs, ks, vs).unwrap())];
        for bad in [0.1f32, 0.0, f32::INFINITY, f32::NAN] {
            let r = attention_scaled(
                &q,
                qs,
                &k,
                ks,
                &v,
                vs,
                None,
                true,
                Some(bad),
                &mut out,
                &mut Scratch::new(),
            );
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn fused_equals_decomposed_across_row_lengths_and_ranges() {
        // (Q, K, V shapes, scale of Q and K): row lengths around the 16- and 8-wide steps;
        // scores small enough to round as fp16 subnormals; scores spread far enough that exp
        // underflows (subnormal and zero results); scores that saturate the output port to
        // ±inf; query rows cut into several blocks.
        type Case<'a> = (&'a [usize], &'a [usize], &'a [usize], f32);
        let cases: &[Case] = &[
            (&[2, 5, 16], &[2, 8, 16], &[2, 8, 8], 3.0),
            (&[2, 5, 16], &[2, 9, 16], &[2, 9, 8], 3.0),
            (&[2, 5, 16], &[2, 15, 16], &[2, 15, 8], 3.0),
            (&[2, 5, 16], &[2, 24, 16], &[2, 24, 8], 3.0),
            (&[2, 5, 16], &[2, 31, 16], &[2, 31, 8], 3.0),
            (&[2, 5, 16], &[2, 47, 16], &[2, 47, 8], 3.0),
            (&[2, 5, 16], &[2, 40, 16], &[2, 40, 8], 0.02),
            (&[2, 5, 8], &[2, 40, 8], &[2, 40, 8], 0.02),
            (&[3, 40, 4], &[3, 96, 4], &[3, 96, 16], 20.0),
            (&[2, 24, 64], &[2, 80, 64], &[2, 80, 32], 100.0),
            (&[1, 301, 8], &[1, 1100, 8], &[1, 1100, 8], 3.0),
        ];
        for &(qs, ks, vs, scale) in cases {
            let q = data(qs, 11, scale);
            let k = data(ks, 12, scale);
            let v = data(vs, 13, 1.0);
            let f = fused(&q, qs, &k, ks, &v, vs, None);
            let g = decomposed(&q, qs, &k, ks, &v, vs, None);
            assert_eq!(f, g, "{qs:?} {ks:?} {vs:?} x {scale}");
            // A mask with -inf entries and one row masked out entirely.
            let l = qs[qs.len() - 2];
            let s = ks[ks.len() - 2];
            let m: Vec<f16> = (0..l * s)
                .map(|i| {
                    let (r, c) = (i / s, i % s);
                    if r == 1 || (r + c) % 3 == 0 { f16::NEG_INFINITY } else { f16::ZERO }
                })
                .collect();
            let ms = [l, s];
            let mask = Some(AttentionMask::Additive { values: &m, shape: &ms });
            let f = fused(&q, qs, &k, ks, &v, vs, mask);
            let g = decomposed(&q, qs, &k, ks, &v, vs, Some((&m, &ms)));
            assert_eq!(f, g, "masked {qs:?} {ks:?} {vs:?} x {scale}");
        }
    }

    #[test]
    fn rows_that_saturate_among_rows_that_do_not_keep_the_bits() {
        // Unmasked rows are pipelined (a row is normalized in the next one's first pass);
        // rows whose sums saturate the port take the general path in between, and a
        // saturating row comes first and last too.
        let (qs, ks, vs) = ([2usize, 9, 16], [2usize, 40, 16], [2usize, 40, 8]);
        let mut q = data(&qs, 31, 3.0);
        for (i, x) in q.iter_mut().enumerate() {
            let row = i / 16 % 9;
            if [0, 3, 4, 8].contains(&row) {
                *x = f16::from_f32(x.to_f32() * 4000.0);
            }
        }
        let k = data(&ks, 32, 3.0);
        let v = data(&vs, 33, 1.0);
        // The chosen rows, and only they, hold sums that the port turns into ±inf.
        let mut scores = vec![f16::ZERO; 2 * 9 * 40];
        matmul(&q, &qs, &k, &ks, false, true, &mut scores, &mut Scratch::new()).unwrap();
        for (i, row) in scores.chunks(40).enumerate() {
            let saturated = row.iter().any(|x| x.is_infinite());
            assert_eq!(saturated, [0, 3, 4, 8].contains(&(i % 9)), "row {i}");
        }
        let f = fused(&q, &qs, &k, &ks, &v, &vs, None);
        assert_eq!(f, decomposed(&q, &qs, &k, &ks, &v, &vs, None));
    }

    #[test]
    fn no_keys_give_the_port_image_of_zero() {
        let (qs, ks, vs) = ([1usize, 2, 4], [1usize, 0, 4], [1usize, 0, 3]);
        let q = data(&qs, 1, 1.0);
        let out = fused::<f16>(&q, &qs, &[], &ks, &[], &vs, None);
        assert_eq!(out, decomposed::<f16>(&q, &qs, &[], &ks, &[], &vs, None));
        assert_eq!(out, vec![f16::ZERO; 6]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_saturation_threshold_is_the_ports() {
        use crate::sim::numerics::mac_saturate;
        let t = x86::SATURATION_THRESHOLD;
        assert_eq!(mac_saturate(t), f32::INFINITY);
        assert_eq!(mac_saturate(-t), f32::NEG_INFINITY);
        let below = f32::from_bits(t.to_bits() - 1);
        assert_eq!(mac_saturate(below), below);
    }

    #[test]
    fn fused_f32_matches_f64_reference() {
        let (qs, ks, vs) = ([2usize, 5, 8], [2usize, 7, 8], [2usize, 7, 3]);
        let q: Vec<f32> = values(numel(&qs), 4);
        let k: Vec<f32> = values(numel(&ks), 5);
        let v: Vec<f32> = values(numel(&vs), 6);
        let out = fused(&q, &qs, &k, &ks, &v, &vs, None);
        for b in 0..2 {
            for i in 0..5 {
                let sc: Vec<f64> = (0..7)
                    .map(|j| {
                        (0..8)
                            .map(|e| q[(b * 5 + i) * 8 + e] as f64 * k[(b * 7 + j) * 8 + e] as f64)
                            .sum::<f64>()
                            / 8f64.sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for c in 0..3 {
                    let want: f64 =
                        (0..7).map(|j| (sc[j] - m).exp() / z * v[(b * 7 + j) * 3 + c] as f64).sum();
                    let got = out[(b * 5 + i) * 3 + c] as f64;
                    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                }
            }
        }
    }

    /// A causal mask of `l` x `s` with `dead` above the diagonal (shifted by `shift` keys).
    fn causal(l: usize, s: usize, shift: usize, dead: f32) -> Vec<f16> {
        (0..l * s).map(|i| f16::from_f32(if i % s > i / s + shift { dead } else { 0.0 })).collect()
    }

    #[test]
    fn dead_keys_are_skipped_with_the_bits_of_whole_rows() {
        // The fused kernel against the decomposed graph, under an additive mask of [L, S].
        fn same(
            (q, qs): (&[f16], &[usize]),
            (k, ks): (&[f16], &[usize]),
            (v, vs): (&[f16], &[usize]),
            m: &[f16],
            what: &str,
        ) {
            let ms = [qs[qs.len() - 2], ks[ks.len() - 2]];
            let mask = Some(AttentionMask::Additive { values: m, shape: &ms[..] });
            let want = decomposed(q, qs, k, ks, v, vs, Some((m, &ms)));
            assert_eq!(fused(q, qs, k, ks, v, vs, mask), want, "{what}");
        }
        // Dead keys by -40000 and by -inf, several chunks of keys and rows, lengths that are
        // and are not whole 16-lane steps; then blocks the skip must not touch: an inf in V
        // (0 x inf is NaN), scores large enough to saturate, a dead row.
        let cases: &[(usize, usize, usize, f32)] =
            &[(256, 256, 0, -40000.0), (200, 200, 3, f32::NEG_INFINITY), (97, 300, 40, -30000.0)];
        for &(l, s, shift, dead) in cases {
            let (qs, ks, vs) = ([2, l, 64], [2, s, 64], [2, s, 48]);
            let (q, k, mut v) = (data(&qs, 11, 3.0), data(&ks, 12, 3.0), data(&vs, 13, 1.0));
            let m = causal(l, s, shift, dead);
            let what = format!("{l} x {s}, shift {shift}, dead {dead}");
            same((&q, &qs), (&k, &ks), (&v, &vs), &m, &what);
            // A dead key's value is inf.
            v[(s - 1) * 48] = f16::INFINITY;
            same((&q, &qs), (&k, &ks), (&v, &vs), &m, &format!("{what}, inf in V"));
        }
        let (l, s) = (64, 64);
        let (qs, ks, vs) = ([1, l, 32], [1, s, 32], [1, s, 16]);
        let (k, v) = (data(&ks, 2, 3.0), data(&vs, 3, 1.0));
        let m = causal(l, s, 0, -40000.0);
        let big_q = data(&qs, 1, 2000.0);
        same((&big_q, &qs), (&k, &ks), (&v, &vs), &m, "scores past the port's saturation");
        let mut dead_row = m.clone();
        dead_row[5 * s..6 * s].fill(f16::from_f32(-40000.0));
        let q = data(&qs, 1, 3.0);
        same((&q, &qs), (&k, &ks), (&v, &vs), &dead_row, "a row with every key dead");
    }

    #[test]
    fn live_keys_are_found_only_when_skipping_keeps_the_bits() {
        let (l, s, e) = (40, 100, 16);
        let q = data(&[l, e], 1, 3.0);
        let k = data(&[s, e], 2, 3.0);
        let v = data(&[s, 8], 3, 1.0);
        let m = causal(l, s, 0, -40000.0);
        let ms = [l, s];
        let mask = AttentionMask::Additive { values: &m[..], shape: &ms[..] };
        let live = |q: &[f16], v: &[f16], mask: &AttentionMask<'_, f16>, scale: f32| {
            let (q, k, v) = ((Elems::F16(q), 0), (Elems::F16(&k[..]), 0), (Elems::F16(v), 0));
            live_keys(&BlockOperands { q, k, v }, (l, s, e, 8), (mask, 0, s), 1, scale)
        };
        // Row i sees keys 0..=i: its length is that rounded up to a 16-lane step, and all
        // 100 keys once that passes 96, the last whole step.
        let want: Vec<usize> = (0..l).map(|i| (i + 1).div_ceil(16) * 16).collect();
        assert_eq!(live(&q, &v, &mask, 0.25), Some(want));
        let mut tail = causal(l, s, 90, -40000.0);
        assert_eq!(
            live(&q, &v, &AttentionMask::Additive { values: &tail[..], shape: &ms[..] }, 0.25)
                .map(|lens| lens[20]),
            Some(s)
        );
        // Each of these keeps every score.
        let mut inf_q = q.clone();
        inf_q[7] = f16::NAN;
        assert_eq!(live(&inf_q, &v, &mask, 0.25), None, "NaN in Q");
        let mut inf_v = v.clone();
        inf_v[3] = f16::NEG_INFINITY;
        assert_eq!(live(&q, &inf_v, &mask, 0.25), None, "inf in V");
        assert_eq!(live(&data(&[l, e], 1, 1000.0), &v, &mask, 0.25), None, "large scores");
        assert_eq!(live(&q, &v, &mask, 100.0), None, "large scale");
        tail.iter_mut().for_each(|x| *x = f16::from_f32(-20000.0));
        assert_eq!(
            live(&q, &v, &AttentionMask::Additive { values: &tail[..], shape: &ms[..] }, 0.25),
            None,
            "no live key above the floor"
        );
        let rising: Vec<f16> = (0..l * s)
            .map(|i| f16::from_f32(if i % s > s - 1 - i / s { -40000.0 } else { 0.0 }))
            .collect();
        assert_eq!(
            live(&q, &v, &AttentionMask::Additive { values: &rising[..], shape: &ms[..] }, 0.25),
            None,
            "rows that see fewer keys further down"
        );
    }

    #[test]
    fn boolean_mask_and_ignoring_the_mask() {
        let (qs, ks, vs) = ([1usize, 2, 4], [1usize, 3, 4], [1usize, 3, 2]);
        let q = data(&qs, 7, 1.0);
        let k = data(&ks, 8, 1.0);
        let v: Vec<f16> = [1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0].map(f16::from_f32).to_vec();
        // Keep only key 1 for every query: the output is V's row 1.
        let keep = [false, true, false];
        let ms = [3usize];
        let out = fused(
            &q,
            &qs,
            &k,
            &ks,
            &v,
            &vs,
            Some(AttentionMask::Boolean { values: &keep, shape: &ms }),
        );
        assert_eq!(out, [2.0f32, 20.0, 2.0, 20.0].map(f16::from_f32));
        // apply_mask = false gives the unmasked result, as the hardware does.
        let mut ignored = vec![f16::ZERO; 4];
        let mut s = Scratch::new();
        let mask = AttentionMask::Boolean { values: &keep, shape: &ms };
        scaled_dot_product_attention(
            &q,
            &qs,
            &k,
            &ks,
            &v,
            &vs,
            Some(mask),
            false,
            &mut ignored,
            &mut s,
        )
        .unwrap();
        assert_eq!(ignored, fused(&q, &qs, &k, &ks, &v, &vs, None));
        // A mask that does not broadcast is refused.
        let bad = [true; 4];
        let mask = AttentionMask::Boolean { values: &bad, shape: &[4] };
        assert!(
            scaled_dot_product_attention(
                &q,
                &qs,
                &k,
                &ks,
                &v,
                &vs,
                Some(mask),
                true,
                &mut ignored,
                &mut s
            )
            .is_err()
        );
    }
}
