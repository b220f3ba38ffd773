//! Stride-1 convolutions of one or two spatial dims on AVX-512, computed directly instead of
//! as a GEMM on the im2col matrix: the input rows a chunk of output rows reads are padded
//! into f32 planes, output channels run along the vector lanes, and output positions are
//! broadcast from the padded rows where they lie. Nothing of the input is packed per tap, so
//! a 3x3 convolution copies each input element about once instead of nine times.
//!
//! A tile is 14 neighbouring positions of one output row by 32 output channels (28 zmm
//! accumulators; 14 divides the usual widths 14, 28, 56, 112 and 224). One step of K is one
//! input channel and tap, in the im2col matrix's order (`channel * taps + tap`): two loads
//! of the weight's lanes, fourteen broadcasts of the padded input, 28 multiply-adds. All of
//! K runs in registers, from +0, step by step, so each sum is the GEMM's sum of the same
//! products in the same order: the bits of [`super::conv`]'s im2col path, which the tests
//! hold it to. The finished tile goes through
//! the GEMM's epilogue (port, bias) and is turned in registers so that each output channel's
//! positions are stored together, rounded to the output type.

use super::gemm::{self, Elems, Port};
use super::{Element, Result, parallel_worth_it};
use rayon::prelude::*;
use std::any::TypeId;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Output channels per block of weight lanes (two AVX-512 vectors).
pub(crate) const BLOCK: usize = 32;
/// Output positions per tile.
const TILE: usize = 14;
/// The fewest output rows a chunk has (each also pads the rows its kernel reaches below
/// them: `(kernel height - 1) * dilation`).
const MIN_CHUNK_ROWS: usize = 2;
/// Chunks of output rows per thread that a convolution needs for the rows to be shared well:
/// with fewer rows (a 1-D convolution has one) the im2col GEMM, which also splits the
/// columns, runs it instead, unless it is too small to share.
const CHUNKS_PER_THREAD: usize = 2;
/// How many steps of K ahead the input a tile reads is asked for: each input channel and
/// kernel row starts a new run of the padded input, which the hardware does not fetch ahead.
const PREFETCH_STEPS: usize = 16;

/// One image and group of a stride-1 convolution, as the direct kernel reads it: a 1-D
/// convolution is a 2-D one of height 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Input channels (of the group).
    pub channels: usize,
    /// Output channels (of the group).
    pub outputs: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Spacing between taps, per dim.
    pub dilation: [usize; 2],
    /// Zeros before the input, per dim (those after follow from the output extent).
    pub pad: [usize; 2],
}

impl Shape {
    /// Rows of the im2col matrix: channels times taps.
    fn depth(&self) -> usize {
        self.channels.saturating_mul(self.kernel[0]).saturating_mul(self.kernel[1])
    }
}

/// Whether the direct kernel should run a convolution of this shape: on a CPU that has it,
/// with at least half a block of output channels (the lanes past them are wasted work),
/// and rows enough to share between the threads when the work is worth sharing.
pub(crate) fn admits(shape: &Shape) -> bool {
    let work = shape.outputs.saturating_mul(shape.output[0]).saturating_mul(shape.output[1]);
    let rows = shape.output[0] >= CHUNKS_PER_THREAD * rayon::current_num_threads()
        || !parallel_worth_it(work.saturating_mul(shape.depth()) / 64);
    available() && shape.outputs >= BLOCK / 2 && rows
}

/// Whether a weight of `outputs` channels per group is worth laying out for the kernel (see
/// [`admits`]).
pub(crate) fn wants_weight(outputs: usize) -> bool {
    available() && outputs >= BLOCK / 2
}

/// Whether this CPU runs the direct kernel (else convolutions take the im2col path).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return gemm::Isa::detect() == gemm::Isa::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Lays out a group's weight, element `(o, p)` given by `w` for output channel `o < outputs`
/// and row `p < depth` of the im2col matrix, as the kernel reads it: blocks of [`BLOCK`]
/// output channels, each `[depth][BLOCK]`, zero past the last channel.
pub(crate) fn lay_out_weight(
    outputs: usize,
    depth: usize,
    w: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let blocks = outputs.div_ceil(BLOCK);
    let mut lanes = vec![0.0; blocks * depth * BLOCK];
    for (b, block) in lanes.chunks_exact_mut(depth * BLOCK).enumerate() {
        for (p, step) in block.chunks_exact_mut(BLOCK).enumerate() {
            for (l, v) in step.iter_mut().enumerate().take(outputs.saturating_sub(b * BLOCK)) {
                *v = w(b * BLOCK + l, p);
            }
        }
    }
    lanes
}

/// The output of one image and group, shared by the threads that write its rows.
struct Rows<O> {
    ptr: *mut O,
    len: usize,
}

// SAFETY: each thread writes only the positions of its own output rows (disjoint ranges of
// every channel's plane), and nothing reads the output while they run.
unsafe impl<O: Send> Sync for Rows<O> {}

thread_local! {
    /// Each thread's padded input rows.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out [outputs][oh * ow] = port(conv(x) + bias)` for one image and group. `x` holds the
/// group's input channels from `x_offset`, `channel_stride` apart; `lanes` is the weight as
/// [`lay_out_weight`] lays it out. The caller checks the input's and the bias's extents (as
/// for the GEMM path); an error on a CPU without the kernel ([`available`]).
///
/// The output rows go in chunks that the threads claim in order, each chunk a fraction of
/// the rows left, so that the last are small and no thread waits long for another (nor for
/// one slowed by other work on the machine). A thread pads the input rows its chunk reads
/// (its rows and the `(kernel height - 1) * dilation` below them) into its own buffer, kept
/// between calls, then runs the chunk's tiles on them while they are in that core's caches.
/// Sizes whose products do not fit in a usize are an error.
pub(crate) fn conv<O: Element>(
    shape: &Shape,
    x: Elems<'_>,
    (x_offset, channel_stride): (usize, usize),
    lanes: &[f32],
    bias: Option<&[f32]>,
    port: Port,
    out: &mut [O],
) -> Result<()> {
    let err = |m: String| Err(super::KernelError::new("conv", format!("direct: {m}")));
    if !available() {
        return err("this CPU has no AVX-512".into());
    }
    let out_type = TypeId::of::<O>();
    if out_type != TypeId::of::<f32>() && out_type != TypeId::of::<half::f16>() {
        return err(format!("{} output", O::NAME));
    }
    let [kh, kw] = shape.kernel;
    let [oh, ow] = shape.output;
    let too_big = || err(format!("{shape:?} is too large"));
    let mul = |a: usize, b: usize| a.checked_mul(b);
    let Some((depth, p_out, halo, wp)) = (|| {
        let depth = mul(mul(shape.channels, kh)?, kw)?;
        let halo = mul(kh.checked_sub(1)?, shape.dilation[0])?;
        let wp = ow.checked_add(mul(kw.checked_sub(1)?, shape.dilation[1])?)?;
        Some((depth, mul(oh, ow)?, halo, wp))
    })() else {
        return too_big();
    };
    let Some(work) = mul(shape.outputs, p_out).and_then(|n| mul(n, depth)) else {
        return too_big();
    };
    let parallel = parallel_worth_it(work / 64);
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    // The first chunk is the largest.
    let chunk_for = |left: usize| left.div_ceil(2 * threads).max(MIN_CHUNK_ROWS).min(left);
    let chunk = if parallel { chunk_for(oh) } else { oh };
    // Every chunk's channel planes lie this far apart, so one list of offsets serves all (the
    // largest offset is less than `channels * plane`, the buffer's length).
    let Some((plane, len)) = chunk
        .checked_add(halo)
        .and_then(|rows| mul(rows, wp))
        .and_then(|plane| Some((plane, mul(shape.channels, plane)?)))
    else {
        return too_big();
    };
    let lanes_len = mul(shape.outputs.div_ceil(BLOCK), depth).and_then(|v| mul(v, BLOCK));
    if lanes_len != Some(lanes.len()) || mul(shape.outputs, p_out).is_none_or(|n| out.len() < n) {
        return err("weight lanes or output do not fit".into());
    }
    // Where step p of K reads, from a position's place in the chunk's channel 0.
    let offsets: Vec<usize> = (0..depth)
        .map(|p| {
            let (c, t) = (p / (kh * kw), p % (kh * kw));
            c * plane + (t / kw) * shape.dilation[0] * wp + (t % kw) * shape.dilation[1]
        })
        .collect();
    let rows = Rows { ptr: out.as_mut_ptr(), len: out.len() };
    let task = |(y0, y1): (usize, usize)| {
        let rows = &rows;
        super::with_thread_buffer(&PADDED, |buf| {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            let buf = &mut buf[..len];
            let padded_rows = (y0, y1 - y0 + halo);
            pad_rows(shape, x, (x_offset, channel_stride), padded_rows, (plane, wp), buf);
            for y in y0..y1 {
                for x0 in (0..ow).step_by(TILE) {
                    let r = TILE.min(ow - x0);
                    for (b, block) in lanes.chunks_exact(depth * BLOCK).enumerate() {
                        let channels = BLOCK.min(shape.outputs - b * BLOCK);
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: `available` (checked above) means AVX-512F, BW and VL; the
                        // tile reads buf[(y - y0) * wp + x0 + offsets[p] + i] for i < r <= ow - x0,
                        // inside the chunk's planes since its row is at most y1 - 1 - y0 + halo
                        // and its column at most x0 + r - 1 + (kw - 1) * dilation < wp; it
                        // writes row y of the block's channels, positions x0..x0 + r, which
                        // belong to this chunk alone.
                        unsafe {
                            x86::tile(
                                r,
                                (&buf[..], (y - y0) * wp + x0, &offsets),
                                block,
                                (bias.map(|b0| &b0[b * BLOCK..b * BLOCK + channels]), port),
                                (rows.ptr, rows.len),
                                (b * BLOCK, channels, p_out, y * ow + x0),
                            )
                        };
                        #[cfg(not(target_arch = "x86_64"))]
                        let _ = (r, block, channels, rows);
                    }
                }
            }
        })
    };
    if parallel {
        let next = AtomicUsize::new(0);
        let claim = || {
            let mut y0 = next.load(Ordering::Relaxed);
            while y0 < oh {
                let y1 = y0 + chunk_for(oh - y0);
                match next.compare_exchange_weak(y0, y1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return Some((y0, y1)),
                    Err(now) => y0 = now,
                }
            }
            None
        };
        (0..threads).into_par_iter().for_each(|_| {
            while let Some(rows) = claim() {
                task(rows);
            }
        });
    } else {
        task((0, oh));
    }
    Ok(())
}

/// Copies padded rows `y0..y0 + count` of the group's channels of `x` into `buf`, channel `c`
/// from `c * plane`, each row `wp` wide (with stride 1, the input's width plus both
/// paddings) with the convolution's zero padding around the input (fp16 widened, NaN read as
/// +inf, as the GEMM reads it).
fn pad_rows(
    shape: &Shape,
    x: Elems<'_>,
    (x_offset, channel_stride): (usize, usize),
    (y0, count): (usize, usize),
    (plane, wp): (usize, usize),
    buf: &mut [f32],
) {
    let [ih, iw] = shape.input;
    let [top, left] = shape.pad;
    for (c, dst) in buf.chunks_exact_mut(plane).enumerate() {
        for (i, row) in dst[..count * wp].chunks_exact_mut(wp).enumerate() {
            match (y0 + i).checked_sub(top).filter(|&r| r < ih) {
                Some(r) => {
                    row[..left].fill(0.0);
                    x.widen_run(x_offset + c * channel_stride + r * iw, &mut row[left..left + iw]);
                    row[left + iw..].fill(0.0);
                }
                None => row.fill(0.0),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 tile and its transposing epilogue.
    use super::{BLOCK, Element, PREFETCH_STEPS, Port, TILE};
    use crate::sim::kernels::gemm::{finish16, transpose16};
    use std::any::TypeId;
    use std::arch::x86_64::*;

    /// One tile: positions `at..at + r` of one output row (`r <= TILE`) by the `channels`
    /// output channels of one weight block, finished into `out`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL; `x[start + offsets[p] + i]` must lie in `x` for
    /// every step `p` and `i < r`; `block` holds `offsets.len() * BLOCK` floats; output channel
    /// `first + c` (c < channels) of `out` holds positions `at..at + r` at `(first + c) *
    /// p_out + at`, inside `out_len`, written by no other thread.
    #[allow(clippy::type_complexity)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn tile<O: Element>(
        r: usize,
        (x, start, offsets): (&[f32], usize, &[usize]),
        block: &[f32],
        (bias, port): (Option<&[f32]>, Port),
        (out, out_len): (*mut O, usize),
        (first, channels, p_out, at): (usize, usize, usize, usize),
    ) {
        debug_assert!(
            (1..=TILE).contains(&r) && channels <= BLOCK && block.len() >= offsets.len() * BLOCK
        );
        // The tile's sums, position by position: `steps` writes the first r rows and `store`
        // reads only those (left uninitialised: zeroing it costs a percent of the tile).
        let mut sums = std::mem::MaybeUninit::<[f32; TILE * BLOCK]>::uninit();
        let sums = sums.as_mut_ptr().cast::<f32>();
        let base = x[start..].as_ptr();
        // SAFETY: forwarded from the caller.
        unsafe {
            macro_rules! by_positions {
                ($($n:literal)*) => {
                    match r {
                        $($n => steps::<$n>(base, offsets, block.as_ptr(), sums),)*
                        _ => unreachable!("tile of {r} positions"),
                    }
                };
            }
            by_positions!(1 2 3 4 5 6 7 8 9 10 11 12 13 14);
            store(sums, r, (bias, port), (out, out_len), (first, channels, p_out, at));
        }
    }

    /// All steps of K for R positions: `sums[i * BLOCK + l]` = position i, channel lane l.
    ///
    /// # Safety
    /// As `tile`, with `sums` writable for R rows of BLOCK floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn steps<const R: usize>(
        x: *const f32,
        offsets: &[usize],
        w: *const f32,
        sums: *mut f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let step = |acc: &mut [[__m512; 2]; R], p: usize| {
            // SAFETY: the caller's extents: R inputs from x + offsets[p], BLOCK lanes of step
            // p. A prefetch reads nothing the program sees and cannot fault.
            unsafe {
                if let Some(&ahead) = offsets.get(p + PREFETCH_STEPS) {
                    let at = x.wrapping_add(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(at.cast());
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(R - 1).cast());
                }
                let (xs, w) = (x.add(*offsets.get_unchecked(p)), w.add(p * BLOCK));
                let (w0, w1) = (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16)));
                for (i, acc) in acc.iter_mut().enumerate() {
                    // The weight times the input, as the GEMM multiplies them (the product
                    // does not depend on the order of its factors).
                    let v = _mm512_set1_ps(*xs.add(i));
                    acc[0] = _mm512_fmadd_ps(w0, v, acc[0]);
                    acc[1] = _mm512_fmadd_ps(w1, v, acc[1]);
                }
            }
        };
        // Four steps per trip, so the loop's own counting costs a quarter as much.
        let mut p = 0;
        while p + 4 <= offsets.len() {
            step(&mut acc, p);
            step(&mut acc, p + 1);
            step(&mut acc, p + 2);
            step(&mut acc, p + 3);
            p += 4;
        }
        while p < offsets.len() {
            step(&mut acc, p);
            p += 1;
        }
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: sums holds R rows of BLOCK floats (caller's contract).
            unsafe {
                _mm512_storeu_ps(sums.add(i * BLOCK), acc[0]);
                _mm512_storeu_ps(sums.add(i * BLOCK + 16), acc[1]);
            }
        }
    }

    /// The tile's sums finished by the GEMM's epilogue (a lane per channel, with its bias),
    /// turned 16 channels at a time so that each channel's `r` positions lie in one vector,
    /// and stored in the output type.
    ///
    /// # Safety
    /// As `tile`, with the first r rows of BLOCK floats of `sums` written.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn store<O: Element>(
        sums: *const f32,
        r: usize,
        (bias, port): (Option<&[f32]>, Port),
        (out, out_len): (*mut O, usize),
        (first, channels, p_out, at): (usize, usize, usize, usize),
    ) {
        let mask: __mmask16 = ((1u32 << r) - 1) as u16;
        for h in 0..BLOCK / 16 {
            let count = channels.saturating_sub(16 * h).min(16);
            if count == 0 {
                break;
            }
            let lanes = ((1u32 << count) - 1) as u16;
            // SAFETY: the mask stops the load at `channels`, the bias's length.
            let bias = bias
                .map(|b| unsafe { _mm512_maskz_loadu_ps(lanes, b.as_ptr().wrapping_add(16 * h)) });
            let mut rows = [_mm512_setzero_ps(); 16];
            for (i, row) in rows.iter_mut().enumerate().take(r) {
                // SAFETY: row i < r of sums is written (caller's contract).
                *row =
                    finish16(port, bias, unsafe { _mm512_loadu_ps(sums.add(i * BLOCK + 16 * h)) });
            }
            for (c, v) in transpose16(rows).into_iter().enumerate().take(count) {
                let dst = (first + 16 * h + c) * p_out + at;
                debug_assert!(dst + r <= out_len);
                // SAFETY: the store writes r elements at dst, inside the output and this
                // thread's own (caller's contract).
                unsafe {
                    if TypeId::of::<O>() == TypeId::of::<f32>() {
                        _mm512_mask_storeu_ps(out.add(dst).cast::<f32>(), mask, v);
                    } else {
                        let halves =
                            _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                        _mm256_mask_storeu_epi16(out.add(dst).cast::<i16>(), mask, halves);
                    }
                }
            }
        }
    }
}
