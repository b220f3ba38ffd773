//! Stride-1 convolutions of one or two spatial dims on AVX-512, computed directly instead of
//! as a GEMM on the im2col matrix: the input is padded once into f32 planes, output channels
//! run along the vector lanes, and output positions are broadcast from the padded rows where
//! they lie. Nothing of the input is packed per tap, so a 3x3 convolution reads each input
//! element once instead of nine times.
//!
//! A tile is 12 neighbouring positions of one output row by 32 output channels (24 zmm
//! accumulators). One step of K is one input channel and tap, in the im2col matrix's order
//! (`channel * taps + tap`): two loads of the weight's lanes, twelve broadcasts of the
//! padded input, 24 multiply-adds. All of K runs in registers, from +0, step by step, so each
//! sum is the GEMM's sum of the same products in the same order: the bits of
//! [`super::conv`]'s im2col path, which the tests hold it to. The finished tile is turned so
//! that each output channel's 12 positions are stored together, through the GEMM's epilogue
//! (port, bias, rounding).

use super::gemm::{self, Elems, Port};
use super::{Element, Result, parallel_worth_it};
use rayon::prelude::*;

/// Output channels per block of weight lanes (two AVX-512 vectors).
pub(crate) const BLOCK: usize = 32;
/// Output positions per tile.
const TILE: usize = 12;
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
    /// The padded plane: with stride 1, the input's extents plus both paddings.
    fn padded(&self) -> (usize, usize) {
        let [oh, ow] = self.output;
        (oh + (self.kernel[0] - 1) * self.dilation[0], ow + (self.kernel[1] - 1) * self.dilation[1])
    }

    /// Rows of the im2col matrix: channels times taps.
    fn depth(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }
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

/// `out [outputs][oh * ow] = port(conv(x) + bias)` for one image and group. `x` holds the
/// group's input channels from `x_offset`, `channel_stride` apart; `lanes` is the weight as
/// [`lay_out_weight`] lays it out; `padded` is scratch for the padded input. The caller checks
/// the input's and the bias's extents (as for the GEMM path); an error on a CPU without the
/// kernel ([`available`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv<O: Element>(
    shape: &Shape,
    x: Elems<'_>,
    (x_offset, channel_stride): (usize, usize),
    lanes: &[f32],
    bias: Option<&[f32]>,
    port: Port,
    out: &mut [O],
    padded: &mut Vec<f32>,
) -> Result<()> {
    let (hp, wp) = shape.padded();
    let plane = hp * wp;
    let depth = shape.depth();
    let [kh, kw] = shape.kernel;
    let [oh, ow] = shape.output;
    let p_out = oh * ow;
    if lanes.len() != shape.outputs.div_ceil(BLOCK) * depth * BLOCK
        || out.len() < shape.outputs * p_out
    {
        return Err(super::KernelError::new("conv", "direct: weight lanes or output do not fit"));
    }
    if !available() {
        return Err(super::KernelError::new("conv", "direct: this CPU has no AVX-512"));
    }
    let out_type = std::any::TypeId::of::<O>();
    if out_type != std::any::TypeId::of::<f32>() && out_type != std::any::TypeId::of::<half::f16>()
    {
        return Err(super::KernelError::new("conv", format!("direct: {} output", O::NAME)));
    }
    if padded.len() < shape.channels * plane {
        padded.resize(shape.channels * plane, 0.0);
    }
    pad_planes(
        shape,
        (hp, wp),
        x,
        (x_offset, channel_stride),
        &mut padded[..shape.channels * plane],
    );
    // Where step p of K reads, from a position's place in the padded channel 0.
    let offsets: Vec<usize> = (0..depth)
        .map(|p| {
            let (c, t) = (p / (kh * kw), p % (kh * kw));
            c * plane + (t / kw) * shape.dilation[0] * wp + (t % kw) * shape.dilation[1]
        })
        .collect();
    let padded = &padded[..shape.channels * plane];
    let rows = Rows { ptr: out.as_mut_ptr(), len: out.len() };
    let row = |y: usize| {
        let rows = &rows;
        for x0 in (0..ow).step_by(TILE) {
            let r = TILE.min(ow - x0);
            for (b, block) in lanes.chunks_exact(depth * BLOCK).enumerate() {
                let channels = BLOCK.min(shape.outputs - b * BLOCK);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `available` (checked above) means AVX-512F, BW and VL; the
                // tile reads padded[y * wp + x0 + offsets[p] + i] for i < r <= ow - x0, inside
                // the padded planes since y + (kh - 1) * dil < hp and x0 + r - 1 + (kw - 1) * dil
                // < wp; it writes rows y of the block's channels, positions x0..x0 + r, this
                // thread's own.
                unsafe {
                    x86::tile(
                        r,
                        (padded, y * wp + x0, &offsets),
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
    };
    if parallel_worth_it(shape.outputs * p_out * depth / 64) {
        (0..oh).into_par_iter().for_each(row);
    } else {
        (0..oh).for_each(row);
    }
    Ok(())
}

/// Copies the group's channels of `x` into `buf`, each as a `hp x wp` plane with the
/// convolution's zero padding around it (fp16 widened, NaN read as +inf, as the GEMM reads it).
fn pad_planes(
    shape: &Shape,
    (hp, wp): (usize, usize),
    x: Elems<'_>,
    (x_offset, channel_stride): (usize, usize),
    buf: &mut [f32],
) {
    let [ih, iw] = shape.input;
    let [top, left] = shape.pad;
    let plane = |c: usize, dst: &mut [f32]| {
        for (y, row) in dst.chunks_exact_mut(wp).enumerate() {
            match y.checked_sub(top).filter(|&r| r < ih) {
                Some(r) => {
                    row[..left].fill(0.0);
                    x.widen_run(x_offset + c * channel_stride + r * iw, &mut row[left..left + iw]);
                    row[left + iw..].fill(0.0);
                }
                None => row.fill(0.0),
            }
        }
    };
    if parallel_worth_it(buf.len()) {
        buf.par_chunks_mut(hp * wp).enumerate().for_each(|(c, dst)| plane(c, dst));
    } else {
        for (c, dst) in buf.chunks_mut(hp * wp).enumerate() {
            plane(c, dst);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 tile and its transposing epilogue.
    use super::{BLOCK, Element, PREFETCH_STEPS, Port, TILE};
    use crate::sim::kernels::gemm::finish16;
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
            by_positions!(1 2 3 4 5 6 7 8 9 10 11 12);
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

    /// Each channel's `r` positions gathered from the tile's sums, finished by the GEMM's
    /// epilogue and stored in the output type.
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
        let index = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(BLOCK as i32),
        );
        for c in 0..channels {
            let dst = (first + c) * p_out + at;
            debug_assert!(dst + r <= out_len);
            // SAFETY: the gather reads lanes < r of column c of sums (r <= TILE rows); the
            // stores write r elements at dst, inside the output (caller's contract).
            unsafe {
                let v = _mm512_mask_i32gather_ps::<4>(
                    _mm512_setzero_ps(),
                    mask,
                    index,
                    sums.add(c).cast(),
                );
                let v = finish16(port, bias.map(|b| b[c]), v);
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
