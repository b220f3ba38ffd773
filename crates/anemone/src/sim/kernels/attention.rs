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
//! The real ANE ignores `attn_mask` (REFERENCE.md §2), so `apply_mask` lets the runtime choose:
//! `true` follows MIL semantics, `false` mimics the hardware.

use super::matmul::{batch_offsets, widen};
use super::{
    Element, KernelError, MatRef, Result, Scratch, broadcast_shapes, broadcast_strides, check_len,
    numel,
};
use crate::sim::numerics;

const KERNEL: &str = "scaled_dot_product_attention";

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
    // the softmax is the one of the decomposed graph. Blocks go to the cores in contiguous runs.
    let work = nb.saturating_mul(l * s * (e + ev));
    let workers =
        if super::parallel_worth_it(work / 16) { rayon::current_num_threads().max(1) } else { 1 };
    let rows = block_rows(l, s, nb, workers);
    let blocks_per_batch = l.div_ceil(rows);
    let blocks = nb * blocks_per_batch;
    let workers = workers.min(blocks);
    // Per worker: scores of a block, PV accumulators of a block, one widened mask row.
    let per_worker = rows * s + rows * ev + s;
    let (sq, sk, sv, sw) = scratch.buffers(
        if T::as_f32(q).is_some() { 0 } else { q.len() },
        if T::as_f32(k).is_some() { 0 } else { k.len() },
        if T::as_f32(v).is_some() { 0 } else { v.len() },
        workers * per_worker,
    );
    let (q32, k32, v32) = (widen(q, sq), widen(k, sk), widen(v, sv));
    let scale = T::round(1.0 / (e as f32).sqrt());
    let batch_rank = d.batch.len();
    // A single worker may let the GEMM itself use the pool.
    let gemm_parallel = workers == 1 && super::parallel_worth_it(work / 16);
    // First output row (over all batches) of block `t`.
    let first_row = |t: usize| (t / blocks_per_batch) * l + (t % blocks_per_batch) * rows;

    let block = |t: usize, out_rows: &mut [T], buf: &mut [f32]| {
        let b = t / blocks_per_batch;
        let r0 = (t % blocks_per_batch) * rows;
        let m = rows.min(l - r0);
        let (scores, rest) = buf.split_at_mut(rows * s);
        let (acc, mask_row) = rest.split_at_mut(rows * ev);
        let (scores, acc) = (&mut scores[..m * s], &mut acc[..m * ev]);
        super::sgemm(
            m,
            s,
            e,
            scores,
            s,
            MatRef {
                data: q32,
                offset: d.q_b[b] * l * e + r0 * e,
                row_stride: e as isize,
                col_stride: 1,
            },
            MatRef { data: k32, offset: d.k_b[b] * s * e, row_stride: 1, col_stride: e as isize },
            gemm_parallel,
        );
        // matmul output -> mul(scale) -> add(mask), each stored in T by the decomposed graph.
        let mask_base = mask_strides.as_ref().map(|st| {
            let mut rest = b;
            let mut off = 0;
            for i in (0..batch_rank).rev() {
                off += (rest % d.batch[i]) * st[i];
                rest /= d.batch[i];
            }
            off
        });
        super::with_wide_simd(
            #[inline(always)]
            || {
                for (i, sc) in scores.chunks_mut(s).enumerate() {
                    for x in sc.iter_mut() {
                        let mut v = *x;
                        if T::ANE_RULES {
                            v = numerics::mac_saturate(v);
                        }
                        v = T::round(v);
                        v = T::round(ane(T::ANE_RULES, v * scale));
                        *x = v;
                    }
                    if let (Some(mk), Some(st), Some(base)) = (&mask, &mask_strides, mask_base) {
                        let (sl, ss) = (st[batch_rank], st[batch_rank + 1]);
                        let off = base + (r0 + i) * sl;
                        add_mask_row::<T>(sc, mk, off, ss, mask_row);
                    }
                    super::softmax::softmax_row::<T>(sc);
                    for x in sc.iter_mut() {
                        *x = T::round(*x);
                    }
                }
            },
        );
        super::sgemm(
            m,
            ev,
            s,
            acc,
            ev,
            MatRef { data: scores, offset: 0, row_stride: s as isize, col_stride: 1 },
            MatRef { data: v32, offset: d.v_b[b] * s * ev, row_stride: ev as isize, col_stride: 1 },
            gemm_parallel,
        );
        super::matmul::finish_mac_output::<T>(acc, out_rows);
    };
    // Blocks [t0, t1) in order, writing the output rows they cover.
    let run = |t0: usize, t1: usize, out_run: &mut [T], buf: &mut [f32]| {
        let base = first_row(t0);
        for t in t0..t1 {
            let r = first_row(t);
            let m = rows.min(l - (t % blocks_per_batch) * rows);
            let o = &mut out_run[(r - base) * ev..(r - base + m) * ev];
            block(t, o, buf);
        }
    };
    if workers == 1 {
        run(0, blocks, out, &mut sw[..per_worker]);
    } else {
        rayon::scope(|scope| {
            let (mut out_rest, mut buf_rest) = (&mut *out, &mut *sw);
            let run = &run;
            for w in 0..workers {
                let (t0, t1) = (blocks * w / workers, blocks * (w + 1) / workers);
                let len = (first_row(t1) - first_row(t0)) * ev;
                let (o, orest) = std::mem::take(&mut out_rest).split_at_mut(len);
                let (bf, brest) = std::mem::take(&mut buf_rest).split_at_mut(per_worker);
                out_rest = orest;
                buf_rest = brest;
                scope.spawn(move |_| run(t0, t1, o, bf));
            }
        });
    }
    Ok(())
}

/// Query rows per block: the block's f32 scores stay near 64 KiB (in L2 next to K and V), at
/// least 8 rows so the GEMMs keep their shape, and small enough that every worker gets a few
/// blocks to balance the load.
fn block_rows(l: usize, s: usize, nb: usize, workers: usize) -> usize {
    let mut rows = (16_384 / s.max(1)).clamp(8, 128).min(l.max(1));
    while rows > 8 && nb * l.div_ceil(rows) < 4 * workers {
        rows = rows.div_ceil(2);
    }
    rows
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
        let mut s = Scratch::new();
        let sshape = matmul_output_shape(qs, ks, false, true).unwrap();
        let mut scores = vec![T::default(); numel(&sshape)];
        matmul(q, qs, k, ks, false, true, &mut scores, &mut s).unwrap();
        let e = *qs.last().unwrap();
        let scale = [T::from_f32(1.0 / (e as f32).sqrt())];
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
