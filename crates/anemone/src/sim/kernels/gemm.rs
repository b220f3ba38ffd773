//! The simulator's GEMM: `C[m x n] = A[m x k] x B[k x n]` with f32 multiply-adds and f32
//! accumulation, operands read as fp16 or f32, the result finished (output-port rules, bias)
//! and rounded once to fp16 or f32 as each tile leaves the micro-kernel.
//!
//! Structure (the classic Goto/BLIS decomposition, written for this simulator):
//! - the micro-kernel keeps an [`MR`] x [`NR`] tile of C in registers (AVX-512: 12 rows x two
//!   16-lane vectors = 24 accumulators) and, for each step of K, loads one row of the B panel
//!   and broadcasts one value of the A panel per row;
//! - K is cut into blocks of at most [`KC`] (balanced, so the cut depends on `k` alone); for
//!   one block, a B block of KC x `NC` (512 KiB) and an A block of `MC` x KC (192 KiB) sit in
//!   L2, and each B micro-panel (KC x NR, 32 KiB) stays in L1 while the kernel walks the A
//!   block's panels past it;
//! - operands are packed into those panels once per use, and the packing widens fp16 to f32
//!   (and reads NaN as +inf, the ANE's rule) on the way, so no separate widening pass runs;
//!   a B stored transposed is transposed 16 x 16 in registers while it is packed; constant
//!   operands (weights) are packed once, ahead, into a [`PackedMatrix`]; a convolution's
//!   input can be the right operand as its im2col matrix ([`Im2col`]), which is never built:
//!   each thread packs its B panels from the input, after working out once per block of
//!   columns which input runs (or 16-lane loads) fill each panel row, and, when the rows fit
//!   one block, one panel at a time just before the kernel reads it (still in L1);
//! - a block of K other than the last leaves f32 partial sums (in the output itself when it is
//!   f32, else in a per-thread buffer); the last block applies the epilogue (output port,
//!   bias) to the tile while it is in L1 and stores the output type;
//! - large products split their output into one rectangle per rayon thread (rows in multiples
//!   of MR, or columns in multiples of NR); each thread packs what it reads, into buffers of
//!   its own that it keeps for the next product (they are not part of a kernel `Scratch`);
//!   but when B is a large weight packed ahead, A is packed once for all the threads, which
//!   take B's columns a few panels at a time ([`run_shared`]).
//!
//! Every element of C is the same sum in the same order whichever kernel (AVX-512, AVX2+FMA,
//! portable) and however many threads compute it: one fused multiply-add per step of K, K
//! blocks in order. So the paths give identical bits, which the tests check.

use std::cell::RefCell;
use std::sync::OnceLock;

use half::f16;

use super::{Element, KernelError, Result};
use crate::aligned::AlignedBytes;
use crate::sim::numerics;

/// The GEMM's epilogue on 16 lanes of f32 sums (port, then bias), for kernels that finish
/// sums of their own the same way.
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::finish16;
/// A 16 x 16 transpose of f32 lanes in registers.
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::transpose16;

/// Rows of C per micro-kernel tile.
pub const MR: usize = 12;
/// Columns of C per micro-kernel tile (two AVX-512 vectors).
pub const NR: usize = 32;
/// Largest block of K the micro-kernel runs over in one call.
pub const KC: usize = 256;
/// Columns of C (and of B) per cache block.
const NC: usize = 512;
/// Rows of C (and of A) per cache block, a multiple of MR: the A block stays in L2 while
/// each B micro-panel, in L1, meets all of it.
const MC: usize = 192;
/// The smallest magnitude `numerics::mac_saturate` turns into ±inf (it rounds to 2^15 in
/// fp16), for the vector epilogue; a test holds it to the scalar rule.
const SATURATION_THRESHOLD: f32 = 32760.0;
/// How many rows ahead of the packing a row-major B is prefetched: a row takes some 50 ns to
/// pack, a miss to memory a few times that.
const B_ROWS_AHEAD: usize = 8;
/// Products with at least this many multiply-adds split across rayon threads.
const PARALLEL_MACS: usize = 1 << 21;

/// The elements of an operand, as stored.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Elems<'a> {
    /// f32 values, read as they are.
    F32(&'a [f32]),
    /// fp16 values: widened exactly, NaN read as +inf (the ANE datapath's rule).
    F16(&'a [f16]),
}

impl Elems<'_> {
    fn len(&self) -> usize {
        match self {
            Elems::F32(s) => s.len(),
            Elems::F16(s) => s.len(),
        }
    }

    /// Asks the CPU to bring the `len` consecutive elements from `start` into its caches: a
    /// hint for a run read soon, which changes no result. Runs that reach past the data are
    /// left out.
    #[inline(always)]
    fn prefetch_run(&self, start: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let (base, size) = match self {
                Elems::F32(s) => (s.as_ptr().cast::<i8>(), 4),
                Elems::F16(s) => (s.as_ptr().cast::<i8>(), 2),
            };
            if start.saturating_add(len) > self.len() {
                return;
            }
            for byte in (start * size..(start + len) * size).step_by(64) {
                // SAFETY: the address lies inside the slice (checked above); a prefetch
                // reads nothing the program sees and cannot fault.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(byte)) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (start, len);
    }

    /// Widens `dst.len()` consecutive elements from `start`.
    #[inline(always)]
    pub(crate) fn widen_run(&self, start: usize, dst: &mut [f32]) {
        match self {
            Elems::F32(s) => dst.copy_from_slice(&s[start..start + dst.len()]),
            Elems::F16(s) => widen_f16(&s[start..start + dst.len()], dst),
        }
    }

    /// One element, widened.
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        match self {
            Elems::F32(s) => s[i],
            Elems::F16(s) => numerics::ane_read(s[i].to_f32()),
        }
    }
}

/// Widens fp16 to f32 reading NaN as +inf, in one pass (AVX-512 when the CPU has it).
#[inline(always)]
fn widen_f16(src: &[f16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() == Isa::Avx512 {
        // SAFETY: detect() returns Avx512 only on CPUs with AVX-512F, BW and VL.
        unsafe { x86::widen_f16_avx512(src, dst) };
        return;
    }
    numerics::f16_slice_to_f32(src, dst);
    numerics::ane_read_slice(dst);
}

/// A matrix inside a slice: element (i, j) is `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    pub data: Elems<'a>,
    pub offset: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl View<'_> {
    /// Whether every element of a `rows` x `cols` matrix lies inside the slice.
    pub(crate) fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let (rows, cols) = (rows as isize - 1, cols as isize - 1);
        let lo =
            self.offset as isize + rows * self.row_stride.min(0) + cols * self.col_stride.min(0);
        let hi =
            self.offset as isize + rows * self.row_stride.max(0) + cols * self.col_stride.max(0);
        lo >= 0 && (hi as usize) < self.data.len()
    }

    /// Index of element (i, j); the caller has checked `fits`.
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> usize {
        (self.offset as isize + i as isize * self.row_stride + j as isize * self.col_stride)
            as usize
    }
}

/// Which operand of a product a [`PackedMatrix`] was packed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The left operand, `A [m x k]`: packed in panels of [`MR`] rows.
    Lhs,
    /// The right operand, `B [k x n]`: packed in panels of [`NR`] columns.
    Rhs,
}

/// A constant operand packed once into the micro-kernel's panel layout, f32, so that every
/// product that reads it skips the packing and the widening. Built by the kernels that take
/// constants ([`pack_weight`](super::conv::pack_weight), [`pack_operand`](super::matmul::pack_operand));
/// the values are the source's (fp16 widens exactly, NaN reads as +inf).
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    side: Side,
    rows: usize,
    cols: usize,
    data: AlignedBytes,
}

impl PackedMatrix {
    /// Packs a `rows` x `cols` matrix read through `view` as operand `side`.
    pub(crate) fn pack(side: Side, rows: usize, cols: usize, view: View<'_>) -> Result<Self> {
        if !view.fits(rows, cols) {
            return Err(KernelError::new("gemm", "packed operand out of bounds"));
        }
        let bytes = packed_len(side, rows, cols)
            .and_then(|len| len.checked_mul(4))
            .ok_or_else(|| KernelError::new("gemm", "packed operand too large"))?;
        let mut data = AlignedBytes::try_zeroed(bytes).map_err(|e| KernelError::new("gemm", e))?;
        pack_panels(side, rows, cols, &view, bytemuck::cast_slice_mut(data.bytes_mut()), false);
        Ok(PackedMatrix { side, rows, cols, data })
    }

    /// The packed panels, as an operand.
    pub(crate) fn panels(&self) -> Panels<'_> {
        Panels { side: self.side, rows: self.rows, cols: self.cols, data: self.floats() }
    }

    /// The operand it was packed as.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Rows of the matrix (m for a left operand, k for a right one).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix (k for a left operand, n for a right one).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn floats(&self) -> &[f32] {
        bytemuck::cast_slice(self.data.bytes())
    }
}

/// The floats of a `rows` x `cols` operand packed as `side` ([`PackedMatrix::pack`]'s
/// layout): for each block of K in turn, its panels in order, each `MR * kc` (A) or
/// `NR * kc` (B) floats.
fn packed_len(side: Side, rows: usize, cols: usize) -> Option<usize> {
    match side {
        Side::Lhs => rows.div_ceil(MR).checked_mul(MR)?.checked_mul(cols),
        Side::Rhs => cols.div_ceil(NR).checked_mul(NR)?.checked_mul(rows),
    }
}

/// B panels per group of [`pack_panels`] (a task, when the panels are packed in parallel).
const PANELS_PER_TASK: usize = 4;

/// Packs a `rows` x `cols` matrix read through `view` (which fits it) as operand `side` into
/// `out` (at least [`packed_len`] floats), a group of panels after another, or with the groups
/// shared among rayon's threads (`parallel`). A group is the panels of one block of K over at
/// most [`MC`] rows (A) or [`PANELS_PER_TASK`] panels (B). Slots past the last row of an A
/// panel are left as they are (the kernel never reads them); B panels are zero past the last
/// column.
fn pack_panels(
    side: Side,
    rows: usize,
    cols: usize,
    view: &View<'_>,
    out: &mut [f32],
    parallel: bool,
) {
    let (k, width, count, per_group) = match side {
        Side::Lhs => (cols, MR, rows.div_ceil(MR), MC / MR),
        Side::Rhs => (rows, NR, cols.div_ceil(NR), PANELS_PER_TASK),
    };
    let mut rest = out;
    let mut groups = Vec::new();
    for (p0, kc) in k_blocks(k) {
        for first in (0..count).step_by(per_group) {
            let panels = per_group.min(count - first);
            let (group, tail) = std::mem::take(&mut rest).split_at_mut(panels * width * kc);
            rest = tail;
            groups.push((group, (p0, kc), first * width));
        }
    }
    let pack = |(group, (p0, kc), first): &mut (&mut [f32], (usize, usize), usize)| {
        let (p0, kc, first) = (*p0, *kc, *first);
        if kc == 0 {
            return;
        }
        match side {
            Side::Lhs if view.row_stride == 1 => {
                let group_rows = MC.min(rows - first);
                pack_a_col_major(view, (first, group_rows), (p0, kc), MR * kc, group);
            }
            Side::Lhs => {
                for (panel, i0) in group.chunks_exact_mut(MR * kc).zip((first..rows).step_by(MR)) {
                    pack_a(view, i0, MR.min(rows - i0), p0, kc, Layout::Col, panel);
                }
            }
            Side::Rhs => {
                for (panel, j0) in group.chunks_exact_mut(NR * kc).zip((first..cols).step_by(NR)) {
                    pack_b(view, p0, kc, j0, NR.min(cols - j0), panel);
                }
            }
        }
    };
    if parallel {
        use rayon::prelude::*;
        groups.par_iter_mut().for_each(pack);
    } else {
        groups.iter_mut().for_each(pack);
    }
}

/// Panels packed for the micro-kernel, borrowed: a [`PackedMatrix`]'s, or those a product
/// packs once and shares between its threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Panels<'a> {
    side: Side,
    rows: usize,
    cols: usize,
    data: &'a [f32],
}

impl Panels<'_> {
    /// Bytes held.
    fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// An operand of [`gemm`]: a matrix to pack now, or one packed ahead.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operand<'a> {
    /// Read through a strided view and packed by each thread that needs it (or once for all of
    /// them, see [`run_shared`]).
    View(View<'a>),
    /// Packed ahead for this side (a [`PackedMatrix`], or the panels a product packed once for
    /// all its threads); its shape must be the product's.
    Packed(Panels<'a>),
    /// A convolution input read as its im2col matrix (right operand only), packed by each
    /// thread straight from the input.
    Im2col(&'a Im2col<'a>),
}

/// A convolution's input read as its im2col matrix, which is never built. Row `p` of the
/// matrix is channel `p / taps` and tap `p % taps` (taps row-major over the three kernel
/// dims); column `j` is output position `j` (row-major over the three output dims); the
/// element is the input at `o * stride + tap * dilation - pad` in each dim, or 0 where that
/// lies outside the input. Used as the right operand, `B [channels * taps x outputs]`: each
/// thread packs its B panels from the input itself, so the sums are those of a GEMM on the
/// built matrix, bit for bit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Im2col<'a> {
    /// The input elements.
    pub data: Elems<'a>,
    /// Index of the first channel's first element.
    pub offset: usize,
    /// Elements from one channel to the next.
    pub channel_stride: usize,
    /// Channels read (rows of the matrix are `channels * taps`).
    pub channels: usize,
    /// Input extent per dim (depth, height, width).
    pub input: [usize; 3],
    /// Kernel extent per dim.
    pub kernel: [usize; 3],
    /// Output extent per dim.
    pub output: [usize; 3],
    /// Step between neighbouring windows per dim (>= 1).
    pub stride: [usize; 3],
    /// Spacing between taps per dim (>= 1).
    pub dilation: [usize; 3],
    /// Zeros before the input per dim (those after follow from the output extent).
    pub pad: [usize; 3],
}

impl Im2col<'_> {
    fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Rows of the matrix, if they fit in a usize.
    fn rows(&self) -> Option<usize> {
        self.kernel.iter().try_fold(self.channels, |a, &b| a.checked_mul(b))
    }

    /// Columns of the matrix, if they fit in a usize.
    fn cols(&self) -> Option<usize> {
        self.output.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
    }

    /// Whether the geometry is usable and every channel's input lies inside the slice.
    fn fits(&self) -> bool {
        if self.stride.contains(&0) || self.dilation.contains(&0) {
            return false;
        }
        let Some(plane) = self.input.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) else {
            return false;
        };
        if self.channels == 0 || plane == 0 {
            return true;
        }
        (self.channels - 1)
            .checked_mul(self.channel_stride)
            .and_then(|v| v.checked_add(self.offset))
            .and_then(|v| v.checked_add(plane))
            .is_some_and(|end| end <= self.data.len())
    }

    /// For dim `d`, tap offset `k` and output positions `o0..o1`: the sub-range whose input
    /// position `o * stride + k * dilation - pad` lies inside the input.
    fn valid(&self, d: usize, k: usize, (o0, o1): (usize, usize)) -> (usize, usize) {
        let shift = (k * self.dilation[d]) as isize - self.pad[d] as isize;
        let s = self.stride[d] as isize;
        let n_in = self.input[d] as isize;
        let lo = if shift >= 0 { 0 } else { (-shift + s - 1) / s };
        let hi = if n_in <= shift { 0 } else { (n_in - shift - 1) / s + 1 };
        let (lo, hi) = ((lo as usize).max(o0), (hi as usize).min(o1));
        (lo, hi.max(lo))
    }

    /// Input position along dim `d` of output position `o` and tap offset `k`, which the
    /// caller has checked is inside (`valid`).
    fn at(&self, d: usize, o: usize, k: usize) -> usize {
        o * self.stride[d] + k * self.dilation[d] - self.pad[d]
    }

    /// Appends to `recipe` how to fill the NR columns of a B panel whose first `cols` columns
    /// are outputs `j0..j0 + cols`, one list of runs per tap (and, with unit steps along the
    /// width, one list of lane loads per tap and half).
    fn panel_recipe(&self, j0: usize, cols: usize, recipe: &mut Recipe) {
        let Recipe { segs, starts, lanes, lane_starts } = recipe;
        let [_, oh_n, ow_n] = self.output;
        let [_, ih_n, iw_n] = self.input;
        let [_, kh, kw] = self.kernel;
        // The panel's columns as runs along one output row: (first column, od, oh, ow0, len).
        let mut rows: [(usize, usize, usize, usize, usize); NR] = [(0, 0, 0, 0, 0); NR];
        let mut n_rows = 0;
        let (mut c, mut j) = (0, j0);
        while c < cols {
            let (od, rest) = (j / (oh_n * ow_n), j % (oh_n * ow_n));
            let (oh, ow) = (rest / ow_n, rest % ow_n);
            let len = (ow_n - ow).min(cols - c);
            rows[n_rows] = (c, od, oh, ow, len);
            n_rows += 1;
            c += len;
            j += len;
        }
        // Neighbouring zero runs of one tap's list (which starts at `floor`) merge.
        let push = |segs: &mut Vec<Seg>, floor: usize, seg: Seg| {
            if seg.len == 0 {
                return;
            }
            let len = segs.len();
            if let Some(last) = segs.last_mut()
                && seg.step == 0
                && last.step == 0
                && len > floor
                && last.c0 + last.len == seg.c0
            {
                last.len += seg.len;
                return;
            }
            segs.push(seg);
        };
        if starts.is_empty() {
            starts.push(segs.len());
            lane_starts.push(lanes.len());
        }
        for t in 0..self.taps() {
            let tap = [t / (kh * kw), (t / kw) % kh, t % kw];
            let floor = segs.len();
            for &(c0, od, oh, ow0, len) in &rows[..n_rows] {
                let zero = |c0, len| Seg { c0, len, rel: 0, step: 0 };
                let (d_lo, d_hi) = self.valid(0, tap[0], (od, od + 1));
                let (h_lo, h_hi) = self.valid(1, tap[1], (oh, oh + 1));
                let (w_lo, w_hi) = self.valid(2, tap[2], (ow0, ow0 + len));
                if d_lo == d_hi || h_lo == h_hi || w_lo == w_hi {
                    push(segs, floor, zero(c0, len));
                    continue;
                }
                let row = (self.at(0, od, tap[0]) * ih_n + self.at(1, oh, tap[1])) * iw_n;
                push(segs, floor, zero(c0, w_lo - ow0));
                push(
                    segs,
                    floor,
                    Seg {
                        c0: c0 + w_lo - ow0,
                        len: w_hi - w_lo,
                        rel: row + self.at(2, w_lo, tap[2]),
                        step: self.stride[2],
                    },
                );
                push(segs, floor, zero(c0 + w_hi - ow0, ow0 + len - w_hi));
            }
            push(segs, floor, Seg { c0: cols, len: NR - cols, rel: 0, step: 0 });
            starts.push(segs.len());
            for h in 0..NR / 16 {
                if self.stride[2] == 1 {
                    let (l0, l1) = (16 * h, 16 * h + 16);
                    for s in segs[floor..].iter().filter(|s| s.step == 1) {
                        let (lo, hi) = (s.c0.max(l0), (s.c0 + s.len).min(l1));
                        if lo < hi {
                            let mask = ((1u32 << (hi - l0)) - (1u32 << (lo - l0))) as u16;
                            let rel = s.rel as isize + l0 as isize - s.c0 as isize;
                            lanes.push(Lane { mask, rel });
                        }
                    }
                }
                lane_starts.push(lanes.len());
            }
        }
    }
}

/// How to fill the rows of the B panels of one block of columns, per panel and tap: runs
/// (`segs[starts[i]..starts[i + 1]]` for panel `jp`, tap `t`, `i = jp * taps + t`) and, with
/// unit steps along the width, the same as lane loads per half of the row
/// (`lanes[lane_starts[2 i + h]..lane_starts[2 i + h + 1]]`).
#[derive(Default)]
struct Recipe {
    segs: Vec<Seg>,
    starts: Vec<usize>,
    lanes: Vec<Lane>,
    lane_starts: Vec<usize>,
}

impl Recipe {
    fn clear(&mut self) {
        self.segs.clear();
        self.starts.clear();
        self.lanes.clear();
        self.lane_starts.clear();
    }
}

/// One load into a 16-lane half of an im2col panel row: lane `l` of `mask` reads the
/// channel's input at `rel + l` (`rel` may be negative; only the masked lanes are read).
#[derive(Clone, Copy, Debug)]
struct Lane {
    mask: u16,
    rel: isize,
}

/// A run of one row of an im2col B panel: columns `c0..c0 + len` read the channel's input
/// from `rel` in steps of `step`, or are 0 when `step` is 0.
#[derive(Clone, Copy, Debug, Default)]
struct Seg {
    c0: usize,
    len: usize,
    rel: usize,
    step: usize,
}

/// Packs K `p0..p0 + kc` of panel `jp` of `x` as a `[kc][NR]` B panel, following `recipe`:
/// with `by_lanes` (the AVX-512 kernel's choice) and unit steps along the width, two 16-lane
/// loads and stores per row; else run by run.
#[inline(always)]
fn pack_b_im2col(
    x: &Im2col<'_>,
    recipe: &Recipe,
    (jp, by_lanes): (usize, bool),
    p0: usize,
    kc: usize,
    out: &mut [f32],
) {
    let taps = x.taps();
    let starts = &recipe.starts[jp * taps..=(jp + 1) * taps];
    #[cfg(target_arch = "x86_64")]
    if by_lanes && x.stride[2] == 1 && Isa::detect() == Isa::Avx512 {
        let plane = x.input.iter().product();
        for t in 0..taps {
            let first = p0 + (t + taps - p0 % taps) % taps;
            if first >= p0 + kc {
                continue;
            }
            let count = (p0 + kc - first).div_ceil(taps);
            let src0 = x.offset + first / taps * x.channel_stride;
            for h in 0..NR / 16 {
                let i = 2 * (jp * taps + t) + h;
                let lanes = &recipe.lanes[recipe.lane_starts[i]..recipe.lane_starts[i + 1]];
                let dst = ((first - p0) * NR + 16 * h, taps * NR);
                // SAFETY: detect() returns Avx512 only on CPUs with AVX-512F, BW and VL.
                unsafe {
                    x86::load_lanes_avx512(
                        x.data,
                        (src0, x.channel_stride, plane),
                        lanes,
                        out,
                        dst,
                        count,
                    )
                };
            }
        }
        return;
    }
    for t in 0..taps {
        // The rows of this block that read tap t: p = channel * taps + t.
        let first = p0 + (t + taps - p0 % taps) % taps;
        if first >= p0 + kc {
            continue;
        }
        let count = (p0 + kc - first).div_ceil(taps);
        let src0 = x.offset + first / taps * x.channel_stride;
        let dst_step = taps * NR;
        for s in &recipe.segs[starts[t]..starts[t + 1]] {
            let dst0 = (first - p0) * NR + s.c0;
            match s.step {
                0 => {
                    for i in 0..count {
                        out[dst0 + i * dst_step..dst0 + i * dst_step + s.len].fill(0.0);
                    }
                }
                1 => copy_runs(
                    x.data,
                    (src0 + s.rel, x.channel_stride),
                    out,
                    (dst0, dst_step),
                    count,
                    s.len,
                ),
                step => {
                    for i in 0..count {
                        let (src, dst) = (src0 + s.rel + i * x.channel_stride, dst0 + i * dst_step);
                        for c in 0..s.len {
                            out[dst + c] = x.data.get(src + c * step);
                        }
                    }
                }
            }
        }
    }
}

/// Widens `count` runs of `len` consecutive elements, run `i` from `src + i * src_step` of
/// `data` to `dst + i * dst_step` of `out`.
#[inline(always)]
fn copy_runs(
    data: Elems<'_>,
    (src, src_step): (usize, usize),
    out: &mut [f32],
    (dst, dst_step): (usize, usize),
    count: usize,
    len: usize,
) {
    for i in 0..count {
        let d = dst + i * dst_step;
        data.widen_run(src + i * src_step, &mut out[d..d + len]);
    }
}

/// What happens to each finished f32 sum before it is stored: element (i, j) of C becomes
/// `port(sum + col_bias[j])`, then gets `bias[i]` by the port's rule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue<'a> {
    /// The output port.
    pub port: Port,
    /// A bias per row of C (a convolution's, per output channel), added after the port.
    pub bias: Option<&'a [f32]>,
    /// A bias per column of C (linear's, per output feature), added to the f32 sum before
    /// the port: it joins the accumulator, and the result is rounded once.
    pub col_bias: Option<&'a [f32]>,
}

impl<'a> Epilogue<'a> {
    /// The sum as it is, rounded once to the output type.
    pub(crate) const PLAIN: Epilogue<'static> = Epilogue::port(Port::Ieee);

    /// The port alone, no bias.
    pub(crate) const fn port(port: Port) -> Epilogue<'static> {
        Epilogue { port, bias: None, col_bias: None }
    }

    /// The port and a bias per row.
    pub(crate) const fn row_bias(port: Port, bias: Option<&'a [f32]>) -> Epilogue<'a> {
        Epilogue { port, bias, col_bias: None }
    }
}

/// Output-port rules applied to a finished sum (see `numerics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
    /// IEEE: nothing; a bias is added in f32.
    Ieee,
    /// The ANE's port without saturation: NaN -> +0 ([`numerics::ane_result`]); a bias is added
    /// in fp16 after rounding the sum (`ane_result(round_f16(v) + b)`).
    AneResult,
    /// The multiply-accumulate port: NaN -> +0 and ±inf from 2^15 ([`numerics::mac_saturate`]);
    /// a bias as for `AneResult`.
    AneSaturate,
}

/// The output of [`gemm`]: `m` rows of `n` elements, row `i` starting at `i * row_stride`.
pub(crate) enum Out<'a> {
    /// f32 output: also holds the partial sums between blocks of K.
    F32(&'a mut [f32]),
    /// fp16 output, rounded to nearest even (±inf beyond the fp16 range).
    F16(&'a mut [f16]),
}

/// Which kernel runs: the widest this CPU has, or one a test forces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F tiles of 12 x 32.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 + FMA: each 12 x 32 tile as four 6 x 16 sub-tiles.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust with `f32::mul_add`, for other CPUs.
    Portable,
}

impl Isa {
    /// The widest kernel this CPU runs (detected once).
    pub(crate) fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
                {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
                {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// Every kernel this CPU can run, widest first.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::detect() == Isa::Avx512 {
                out.push(Isa::Avx512);
            }
            if Isa::detect() != Isa::Portable {
                out.push(Isa::Avx2);
            }
        }
        out.push(Isa::Portable);
        out
    }
}

/// The blocks of K, `(start, len)`: `ceil(k / KC)` blocks of as equal a length as can be (a
/// function of `k` alone, so packed-ahead and packed-now operands cut K the same way). One
/// empty block when `k` is 0, so that the epilogue still runs.
pub(crate) fn k_blocks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = k.div_ceil(KC).max(1);
    (0..count).map(move |b| {
        let (start, end) = (b * k / count, (b + 1) * k / count);
        (start, end - start)
    })
}

/// The elements of a slice of an [`Element`] type.
pub(crate) fn elems<T: Element>(s: &[T]) -> Result<Elems<'_>> {
    match (T::as_f32(s), T::as_f16(s)) {
        (Some(x), _) => Ok(Elems::F32(x)),
        (None, Some(x)) => Ok(Elems::F16(x)),
        _ => Err(KernelError::new("gemm", format!("{} operands are not supported", T::NAME))),
    }
}

/// The output slice of an [`Element`] type.
pub(crate) fn out<T: Element>(s: &mut [T]) -> Result<Out<'_>> {
    let unsupported = || KernelError::new("gemm", format!("{} outputs are not supported", T::NAME));
    if T::as_f32(s).is_some() {
        return T::as_f32_mut(s).map(Out::F32).ok_or_else(unsupported);
    }
    T::as_f16_mut(s).map(Out::F16).ok_or_else(unsupported)
}

/// `out = epilogue(a x b)` for `a [m x k]`, `b [k x n]`, with the kernel this CPU runs best.
/// `parallel` lets a large product use the rayon pool (never from inside a rayon worker).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    out: Out<'_>,
    out_row_stride: usize,
    epilogue: Epilogue<'_>,
    parallel: bool,
) -> Result<()> {
    gemm_on(Isa::detect(), m, n, k, a, b, out, out_row_stride, epilogue, parallel)
}

/// [`gemm`] on a chosen kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_on(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    out: Out<'_>,
    out_row_stride: usize,
    epilogue: Epilogue<'_>,
    parallel: bool,
) -> Result<()> {
    let err = |m: String| Err(KernelError::new("gemm", m));
    match a {
        Operand::View(v) if !v.fits(m, k) => return err(format!("lhs {m} x {k} out of bounds")),
        Operand::Im2col(_) => return err("an im2col operand can only be the rhs".into()),
        Operand::Packed(p) if (p.side, p.rows, p.cols) != (Side::Lhs, m, k) => {
            return err(format!(
                "lhs packed as {:?} {} x {} used as {m} x {k}",
                p.side, p.rows, p.cols
            ));
        }
        _ => {}
    }
    match b {
        Operand::View(v) if !v.fits(k, n) => return err(format!("rhs {k} x {n} out of bounds")),
        Operand::Im2col(x) if !x.fits() || (x.rows(), x.cols()) != (Some(k), Some(n)) => {
            return err(format!("im2col rhs {:?} x {:?} for {k} x {n}", x.rows(), x.cols()));
        }
        Operand::Packed(p) if (p.side, p.rows, p.cols) != (Side::Rhs, k, n) => {
            return err(format!(
                "rhs packed as {:?} {} x {} used as {k} x {n}",
                p.side, p.rows, p.cols
            ));
        }
        _ => {}
    }
    if let Some(bias) = epilogue.bias
        && bias.len() < m
    {
        return err(format!("bias of {} for {m} rows", bias.len()));
    }
    if let Some(bias) = epilogue.col_bias
        && bias.len() < n
    {
        return err(format!("column bias of {} for {n} columns", bias.len()));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let out_len = match &out {
        Out::F32(s) => s.len(),
        Out::F16(s) => s.len(),
    };
    if out_row_stride < n || (m - 1).saturating_mul(out_row_stride).saturating_add(n) > out_len {
        return err(format!("output of {out_len} elements for {m} x {n} rows {out_row_stride}"));
    }
    let dst = match out {
        Out::F32(s) => Dst::F32(s.as_mut_ptr()),
        Out::F16(s) => Dst::F16(s.as_mut_ptr()),
    };
    let job = Job { k, a, b, dst, rs: out_row_stride, epilogue };
    let threads = rayon::current_num_threads();
    let split = parallel
        && threads > 1
        && rayon::current_thread_index().is_none()
        && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS;
    let packed_bytes = |op: &Operand<'_>| match op {
        Operand::Packed(pm) => Some(pm.bytes()),
        _ => None,
    };
    if split && shares_a(&job, n, threads) {
        return run_shared(isa, job, (m, n, k));
    }
    let packed = (packed_bytes(&job.a), packed_bytes(&job.b));
    let regions = if split { split_regions(m, n, threads, packed) } else { vec![(0, m, 0, n)] };
    if regions.len() == 1 {
        run_region(isa, &job, regions[0]);
    } else {
        use rayon::prelude::*;
        regions.par_iter().for_each(|&r| run_region(isa, &job, r));
    }
    Ok(())
}

/// How many rectangles each thread gets at most: more than one, so that a thread slowed by
/// other work on the machine (or a slower core) hands the rest to the others through rayon's
/// work stealing instead of holding up the product.
const REGIONS_PER_THREAD: usize = 4;

/// The largest operand packed ahead that several rectangles per thread may each read: it
/// stays in a core's L2 between them. A larger one (the weight of a 768 -> 768 1x1
/// convolution is 2.3 MiB as f32) comes again from L3 or memory for every rectangle: with
/// four rectangles per thread instead of one, such convolutions took 2-5% longer, measured
/// alternately in one process.
const REREAD_BYTES: usize = 1 << 20;

/// Rectangles `(m0, m1, n0, n1)` of the output for the threads to share: along the columns in
/// whole panels when there are enough of them, else along the rows in whole tiles; but along
/// the rows when neither operand was packed ahead and A is the larger (`m > n`), with enough
/// rows for every thread. `packed` holds the bytes of each operand packed ahead (a constant
/// weight), None for one packed per product.
///
/// Each rectangle packs the operand it does not cut for itself: cutting the columns repacks
/// A for every rectangle, cutting the rows repacks B (hence the rows when A is the larger: a
/// product computed transposed, whose A is a big weight). So there is one rectangle per
/// thread, unless that operand was packed ahead and is small enough to stay in L2
/// ([`REREAD_BYTES`]), when up to `REGIONS_PER_THREAD` per thread cost no extra packing and
/// little extra traffic.
fn split_regions(
    m: usize,
    n: usize,
    threads: usize,
    (a_packed, b_packed): (Option<usize>, Option<usize>),
) -> Vec<(usize, usize, usize, usize)> {
    let (col_panels, row_panels) = (n.div_ceil(NR), m.div_ceil(MR));
    let parts_reading = |uncut: Option<usize>| match uncut {
        Some(bytes) if bytes <= REREAD_BYTES => threads * REGIONS_PER_THREAD,
        _ => threads,
    };
    let cut = |units: usize, parts: usize, unit: usize, len: usize| -> Vec<(usize, usize)> {
        let parts = parts.clamp(1, units);
        (0..parts)
            .map(|t| {
                ((t * units / parts * unit).min(len), ((t + 1) * units / parts * unit).min(len))
            })
            .filter(|(a, b)| a < b)
            .collect()
    };
    let rows_pack_less =
        a_packed.is_none() && b_packed.is_none() && m > n && row_panels >= 2 * threads;
    if !rows_pack_less && (col_panels >= 2 * threads || col_panels >= row_panels) {
        let parts = parts_reading(a_packed);
        cut(col_panels, parts, NR, n).into_iter().map(|(a, b)| (0, m, a, b)).collect()
    } else {
        let parts = parts_reading(b_packed);
        cut(row_panels, parts, MR, m).into_iter().map(|(a, b)| (a, b, 0, n)).collect()
    }
}

/// B panels per unit of work in [`run_shared`] (64 columns of the output), so that a thread
/// slowed by other work on the machine hands most of its part to the others.
const UNIT_PANELS: usize = 2;
/// [`run_shared`] needs at least this many units per thread, else the product is cut into
/// one rectangle per thread ([`split_regions`]).
const UNITS_PER_THREAD: usize = 4;

thread_local! {
    /// The A panels a product on this (calling) thread packed for all of its threads.
    static SHARED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether a product should pack its A once for all its threads ([`run_shared`]): A is read
/// through a view, B was packed ahead and is too large to stay in a core's L2
/// ([`REREAD_BYTES`]), and B's columns give every thread [`UNITS_PER_THREAD`] units. (With B
/// read through a view too, the same scheme measured no faster: each unit then packs its
/// own short B rows.)
fn shares_a(job: &Job<'_>, n: usize, threads: usize) -> bool {
    matches!((job.a, job.b), (Operand::View(_), Operand::Packed(b))
        if b.bytes() > REREAD_BYTES)
        && n.div_ceil(NR * UNIT_PANELS) >= UNITS_PER_THREAD * threads
}

/// A product whose A (read through a view) is packed once, its panels shared by rayon's
/// threads, while B (a large weight packed ahead) is cut into units of [`UNIT_PANELS`] panels
/// that the threads take as they go.
///
/// Cut into one rectangle of columns per thread instead ([`split_regions`]), every thread
/// packs all of A, and again for each [`NC`] columns of its rectangle; and a thread slowed by
/// other work on the machine holds up the whole product (the two cores of a cloud machine,
/// shared with work outside it, ran at speeds up to a third apart, changing from second to
/// second). A 256 x 768 by 768 x 3072 linear layer took 9-15% less time, measured
/// alternately with the rectangles. The shared panels stay in each core's L2 between units. (Products whose A is the weight gain nothing from the same scheme: each
/// thread's rectangle of columns already packs only its own part of B, once.)
fn run_shared(isa: Isa, job: Job<'_>, (m, n, k): (usize, usize, usize)) -> Result<()> {
    use rayon::prelude::*;
    let Operand::View(view) = job.a else {
        return Err(KernelError::new("gemm", "the shared operand is not a view"));
    };
    let len = packed_len(Side::Lhs, m, k)
        .ok_or_else(|| KernelError::new("gemm", "packed operand too large"))?;
    super::with_thread_buffer(&SHARED_A, |buf| {
        let buf = aligned(buf, len);
        pack_panels(Side::Lhs, m, k, &view, buf, true);
        let a = Operand::Packed(Panels { side: Side::Lhs, rows: m, cols: k, data: buf });
        let job = Job { a, ..job };
        let step = NR * UNIT_PANELS;
        let units: Vec<_> = (0..n).step_by(step).map(|c| (0, m, c, (c + step).min(n))).collect();
        units.par_iter().for_each(|&u| run_region(isa, &job, u));
    });
    Ok(())
}

/// Where the output goes (the slice was checked to hold every element written).
#[derive(Clone, Copy)]
enum Dst {
    F32(*mut f32),
    F16(*mut f16),
}

/// One product, shared by the threads that compute its rectangles.
struct Job<'a> {
    k: usize,
    a: Operand<'a>,
    b: Operand<'a>,
    dst: Dst,
    rs: usize,
    epilogue: Epilogue<'a>,
}

// SAFETY: the operands are shared reads; the output pointer is written only inside each
// thread's own rectangle (split_regions gives disjoint ones), never read outside it.
unsafe impl Sync for Job<'_> {}

/// How an A panel is laid out: `Col` is `[p][MR]` (one MR-wide step per element of K), `Row`
/// is `[r][KC]` (each row of the panel contiguous, as a row-major A already is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Col,
    Row,
}

/// Per-thread buffers: the packed B block, one packed A panel, the C tile, and the partial
/// sums of a non-f32 output.
#[derive(Default)]
struct Buffers {
    b: Vec<f32>,
    a: Vec<f32>,
    tile: Vec<f32>,
    partial: Vec<f32>,
    recipe: Recipe,
}

/// A 64-byte-aligned window of `len` floats inside `v` (grown as needed).
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len + 16 {
        v.resize(len + 16, 0.0);
    }
    let off = (64 - (v.as_ptr() as usize) % 64) % 64 / 4;
    &mut v[off..off + len]
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

fn run_region(isa: Isa, job: &Job<'_>, region: (usize, usize, usize, usize)) {
    super::with_thread_buffer(&BUFFERS, |bufs| {
        // Tall rectangles go in bands of rows, which bounds the partial-sum buffer.
        let (m0, m1, n0, n1) = region;
        for b0 in (m0..m1).step_by(ROW_BAND) {
            let band = (b0, (b0 + ROW_BAND).min(m1), n0, n1);
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Isa::Avx512 is only chosen (detect, available) on CPUs with
                // AVX-512F, BW and VL, AVX2, FMA and F16C.
                Isa::Avx512 => unsafe { x86::region_avx512(job, band, bufs) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Isa::Avx2 is only chosen on CPUs with AVX2, FMA and F16C.
                Isa::Avx2 => unsafe { x86::region_avx2(job, band, bufs) },
                Isa::Portable => drive::<Portable>(job, band, bufs),
            }
        }
    });
}

/// Most rows one pass of the driver takes (a multiple of MR): with NC columns, the partial
/// sums of an fp16 output stay under 16 MiB per thread.
const ROW_BAND: usize = 682 * MR;

/// A micro-kernel.
trait Micro {
    /// Whether im2col panels are packed with 16-lane loads (the AVX-512 kernel; the others
    /// pack run by run, which the tests compare it with).
    const LANES: bool = false;

    /// `c_out = (c_in if load, else 0) + a x b` over `kc` steps of K for the first `rows`
    /// rows of an MR x NR tile; `a` is an A panel in `layout`, `b` a `[kc][NR]` panel.
    ///
    /// # Safety
    /// `a` must hold the panel (`kc * MR` floats for `Col`, `(rows - 1) * KC + kc` for `Row`), `b`
    /// `kc * NR` floats, `c_in` (when `load`) and `c_out` `rows` rows of NR floats at their
    /// strides; `1 <= rows <= MR`, `kc <= KC`; the CPU must have the kernel's features.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        rows: usize,
        layout: Layout,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c_in: CRef,
        load: bool,
        c_out: CRef,
    );

    /// Applies the epilogue to a finished tile and stores it in the output.
    ///
    /// # Safety
    /// As [`write_output`].
    #[inline(always)]
    unsafe fn finish(job: &Job<'_>, i0: usize, j0: usize, rows: usize, cols: usize, tile: CRef) {
        // SAFETY: forwarded from the caller.
        unsafe { write_output(job, i0, j0, rows, cols, tile) }
    }
}

/// The kernel in plain Rust: one `mul_add` per step, as the vector kernels do.
struct Portable;

impl Micro for Portable {
    unsafe fn tile(
        rows: usize,
        layout: Layout,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c_in: CRef,
        load: bool,
        c_out: CRef,
    ) {
        let (a_step, a_row) = if layout == Layout::Col { (MR, 1) } else { (1, KC) };
        for r in 0..rows {
            let mut acc = [0.0f32; NR];
            if load {
                // SAFETY: c_in holds `rows` rows of NR floats (trait contract).
                acc.copy_from_slice(unsafe {
                    std::slice::from_raw_parts(c_in.ptr.add(r * c_in.rs), NR)
                });
            }
            for p in 0..kc {
                // SAFETY: the panels hold kc steps (trait contract).
                let (av, bv) = unsafe {
                    (*a.add(p * a_step + r * a_row), std::slice::from_raw_parts(b.add(p * NR), NR))
                };
                for (x, bv) in acc.iter_mut().zip(bv) {
                    *x = av.mul_add(*bv, *x);
                }
            }
            // SAFETY: c_out holds `rows` rows of NR floats (trait contract).
            unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), c_out.ptr.add(r * c_out.rs), NR) };
        }
    }
}

/// Packs rows `i0..i0 + rows` (<= MR), K `p0..p0 + kc` of `v` as an A panel in `layout`
/// (`Col`: `out[p * MR + r]`; `Row`: `out[r * KC + p]`). Slots past `rows` are left as they are.
#[inline(always)]
fn pack_a(
    v: &View<'_>,
    i0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    layout: Layout,
    out: &mut [f32],
) {
    match layout {
        Layout::Row if v.col_stride == 1 => {
            for r in 0..rows {
                v.data.widen_run(v.at(i0 + r, p0), &mut out[r * KC..r * KC + kc]);
            }
        }
        Layout::Row => {
            for r in 0..rows {
                for p in 0..kc {
                    out[r * KC + p] = v.data.get(v.at(i0 + r, p0 + p));
                }
            }
        }
        Layout::Col if v.row_stride == 1 => {
            for p in 0..kc {
                v.data.widen_run(v.at(i0, p0 + p), &mut out[p * MR..p * MR + rows]);
            }
        }
        Layout::Col if v.col_stride == 1 => {
            // Row-major (a weight packed ahead): widen each row's run, then interleave.
            let mut run = [0.0f32; KC];
            for r in 0..rows {
                v.data.widen_run(v.at(i0 + r, p0), &mut run[..kc]);
                for (p, x) in run[..kc].iter().enumerate() {
                    out[p * MR + r] = *x;
                }
            }
        }
        Layout::Col => {
            for p in 0..kc {
                for r in 0..rows {
                    out[p * MR + r] = v.data.get(v.at(i0 + r, p0 + p));
                }
            }
        }
    }
}

/// Packs rows `i0..i0 + rows` (<= MC), K `p0..p0 + kc` of a column-major `v` (`row_stride`
/// 1: a transposed operand) as consecutive `Col` A panels `stride` floats apart: each step of
/// K is one contiguous run across all the panels, widened once and dealt out MR at a time
/// (the same values [`pack_a`] writes panel by panel). The steps lie a column stride apart,
/// often on different pages, so each is asked for a few steps ahead.
fn pack_a_col_major(
    v: &View<'_>,
    (i0, rows): (usize, usize),
    (p0, kc): (usize, usize),
    stride: usize,
    out: &mut [f32],
) {
    let mut run = [0.0f32; MC];
    let whole = rows / MR;
    for p in 0..kc {
        if p + B_ROWS_AHEAD < kc {
            v.data.prefetch_run(v.at(i0, p0 + p + B_ROWS_AHEAD), rows);
        }
        v.data.widen_run(v.at(i0, p0 + p), &mut run[..rows]);
        for ip in 0..whole {
            // (A fixed length, so the copy is a few vector moves, not a call.)
            let at = ip * stride + p * MR;
            out[at..at + MR].copy_from_slice(&run[ip * MR..(ip + 1) * MR]);
        }
        if !rows.is_multiple_of(MR) {
            let at = whole * stride + p * MR;
            out[at..at + rows % MR].copy_from_slice(&run[whole * MR..rows]);
        }
    }
}

/// Packs K `p0..p0 + kc`, columns `j0..j0 + cols` (<= NR) of `v` as a `[kc][NR]` B panel,
/// zero past `cols`.
#[inline(always)]
fn pack_b(v: &View<'_>, p0: usize, kc: usize, j0: usize, cols: usize, out: &mut [f32]) {
    if v.col_stride == 1 {
        for p in 0..kc {
            let row = &mut out[p * NR..(p + 1) * NR];
            v.data.widen_run(v.at(p0 + p, j0), &mut row[..cols]);
            row[cols..].fill(0.0);
        }
    } else if v.row_stride == 1 && v.col_stride > 0 && kc > 0 {
        // Stored transposed ([n][k]): each column of B is contiguous along K.
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx512 {
            // SAFETY: detect() returns Avx512 only on CPUs with AVX-512F, BW and VL; the view
            // fits the product, so columns j0..j0 + cols hold K p0..p0 + kc at `at(p0, j)`.
            unsafe {
                x86::pack_b_transposed_avx512(
                    v.data,
                    v.at(p0, j0),
                    v.col_stride as usize,
                    kc,
                    cols,
                    out,
                )
            };
            return;
        }
        let mut run = [0.0f32; KC];
        for c in 0..cols {
            v.data.widen_run(v.at(p0, j0 + c), &mut run[..kc]);
            for (p, x) in run[..kc].iter().enumerate() {
                out[p * NR + c] = *x;
            }
        }
        if cols < NR {
            for p in 0..kc {
                out[p * NR + cols..(p + 1) * NR].fill(0.0);
            }
        }
    } else {
        for p in 0..kc {
            for c in 0..NR {
                out[p * NR + c] = if c < cols { v.data.get(v.at(p0 + p, j0 + c)) } else { 0.0 };
            }
        }
    }
}

/// Row `p` of every panel of a B block (`[panel][kc][NR]` in `out`) from one row of a
/// row-major B: the `cols` elements from `start`, widened, lanes past them zeroed. One pass
/// along the source row, 16 lanes at a time on AVX-512, instead of a widening per panel.
fn pack_b_row(
    data: Elems<'_>,
    start: usize,
    cols: usize,
    (p, kc): (usize, usize),
    out: &mut [f32],
) {
    let panels = cols.div_ceil(NR);
    #[cfg(target_arch = "x86_64")]
    if let (Elems::F16(s), Isa::Avx512) = (data, Isa::detect()) {
        assert!(start + cols <= s.len(), "B row outside its operand");
        assert!(panels == 0 || (panels - 1) * NR * kc + (p + 1) * NR <= out.len(), "B block");
        // SAFETY: detect() returns Avx512 only on CPUs with AVX-512F, BW and VL; the source
        // row and each panel row written lie inside the slices (asserted above).
        unsafe { x86::pack_b_row_f16_avx512(s[start..start + cols].as_ptr(), cols, out, p, kc) };
        return;
    }
    for jp in 0..panels {
        let row = &mut out[jp * NR * kc + p * NR..jp * NR * kc + (p + 1) * NR];
        let here = NR.min(cols - jp * NR);
        data.widen_run(start + jp * NR, &mut row[..here]);
        row[here..].fill(0.0);
    }
}

/// The column biases (one per element of the row), the output-port rules and the row's bias
/// on one finished row.
#[inline(always)]
fn finish_row(port: Port, col_bias: Option<&[f32]>, bias: Option<f32>, row: &mut [f32]) {
    if let Some(cb) = col_bias {
        row.iter_mut().zip(cb).for_each(|(x, b)| *x += b);
    }
    match (port, bias) {
        (Port::Ieee, None) => {}
        (Port::Ieee, Some(b)) => row.iter_mut().for_each(|x| *x += b),
        (Port::AneResult, None) => numerics::ane_result_slice(row),
        (Port::AneSaturate, None) => numerics::mac_saturate_slice(row),
        (port, Some(b)) => {
            for x in row.iter_mut() {
                let v = if port == Port::AneSaturate {
                    numerics::mac_saturate(*x)
                } else {
                    numerics::ane_result(*x)
                };
                *x = numerics::ane_result(numerics::round_f16(v) + b);
            }
        }
    }
}

/// Where the f32 sums of a tile are read or written: row `r` at `ptr + r * rs`.
#[derive(Clone, Copy)]
struct CRef {
    ptr: *mut f32,
    rs: usize,
}

/// Copies `rows` x `cols` floats between tile locations.
///
/// # Safety
/// Both locations must hold the `rows` x `cols` floats at their row strides and not overlap.
#[inline(always)]
unsafe fn copy_tile(from: CRef, to: CRef, rows: usize, cols: usize) {
    for r in 0..rows {
        // SAFETY: guaranteed by the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(from.ptr.add(r * from.rs), to.ptr.add(r * to.rs), cols)
        };
    }
}

/// Computes one rectangle of the output with kernel `K`.
#[inline(always)]
fn drive<K: Micro>(
    job: &Job<'_>,
    (m0, m1, n0, n1): (usize, usize, usize, usize),
    bufs: &mut Buffers,
) {
    let block_count = job.k.div_ceil(KC).max(1);
    let last_block = block_count - 1;
    let nc_max = NC.min(n1 - n0);
    let Buffers { b: b_buf, a: a_buf, tile, partial, recipe } = bufs;
    let tile = aligned(tile, MR * NR);
    let local = CRef { ptr: tile.as_mut_ptr(), rs: NR };
    // Partial sums between blocks of K: in the output when it is f32, else here.
    let part_rs = nc_max;
    let partial_base: *mut f32 = if block_count > 1 && matches!(job.dst, Dst::F16(_)) {
        aligned(partial, (m1 - m0) * part_rs).as_mut_ptr()
    } else {
        std::ptr::null_mut()
    };
    // The epilogue does nothing: full tiles of the last block go straight to the output.
    let plain_f32 = matches!(job.dst, Dst::F32(_))
        && job.epilogue.port == Port::Ieee
        && job.epilogue.bias.is_none()
        && job.epilogue.col_bias.is_none();
    // A row-major A is packed row by row (contiguous copies); any other as [p][MR].
    let a_layout = match job.a {
        Operand::View(v) if v.col_stride == 1 => Layout::Row,
        _ => Layout::Col,
    };
    let a_buf = aligned(a_buf, MC * KC);
    // An f32 A whose rows lie KC apart, over a single block of K, is already laid out as
    // row panels: the kernel reads it in place (the fused attention's probabilities).
    let a_in_place: Option<&[f32]> = match job.a {
        Operand::View(View { data: Elems::F32(d), offset, row_stride, col_stride: 1 })
            if row_stride == KC as isize
                && block_count == 1
                && offset + (m1 - 1) * KC + job.k <= d.len() =>
        {
            Some(&d[offset..])
        }
        _ => None,
    };
    // An im2col B over a single block of rows is packed one panel at a time, just before the
    // kernel reads it, so the panel is still in L1; `b_own` holds it.
    let lazy_im2col = matches!(job.b, Operand::Im2col(_)) && m1 - m0 <= MC;
    let (b_buf, b_own) = aligned(b_buf, KC * nc_max.div_ceil(NR) * NR + KC * NR)
        .split_at_mut(KC * nc_max.div_ceil(NR) * NR);
    for jc in (n0..n1).step_by(NC) {
        let nc = NC.min(n1 - jc);
        let panels = nc.div_ceil(NR);
        if let Operand::Im2col(x) = job.b {
            // Each panel's runs, per tap, serve every block of K.
            recipe.clear();
            for jp in 0..panels {
                let j0 = jc + jp * NR;
                x.panel_recipe(j0, NR.min(n1 - j0), recipe);
            }
        }
        for (bi, (p0, kc)) in k_blocks(job.k).enumerate() {
            let b_block: &[f32] = match job.b {
                Operand::Packed(pm) => {
                    let start = p0 * pm.cols.div_ceil(NR) * NR + jc / NR * NR * kc;
                    &pm.data[start..start + panels * NR * kc]
                }
                Operand::View(v) if v.col_stride == 1 => {
                    // Row by row across all the panels: the source is read in long
                    // contiguous runs. The hardware prefetches within a run, but a row of a
                    // wider tensor (a weight sliced from a packed input) starts on another
                    // page, where it stops: each row is asked for a few rows ahead.
                    for p in 0..kc {
                        if p + B_ROWS_AHEAD < kc {
                            v.data.prefetch_run(v.at(p0 + p + B_ROWS_AHEAD, jc), nc);
                        }
                        pack_b_row(v.data, v.at(p0 + p, jc), nc, (p, kc), b_buf);
                    }
                    &b_buf[..panels * NR * kc]
                }
                Operand::View(v) => {
                    for jp in 0..panels {
                        let j0 = jc + jp * NR;
                        let panel = &mut b_buf[jp * NR * kc..(jp + 1) * NR * kc];
                        pack_b(&v, p0, kc, j0, NR.min(n1 - j0), panel);
                    }
                    &b_buf[..panels * NR * kc]
                }
                Operand::Im2col(_) if lazy_im2col => &b_buf[..0],
                Operand::Im2col(x) => {
                    for jp in 0..panels {
                        let panel = &mut b_buf[jp * NR * kc..(jp + 1) * NR * kc];
                        pack_b_im2col(x, recipe, (jp, K::LANES), p0, kc, panel);
                    }
                    &b_buf[..panels * NR * kc]
                }
            };
            let (load, last) = (bi > 0, bi == last_block);
            for ic in (m0..m1).step_by(MC) {
                let mc_end = (ic + MC).min(m1);
                if let (Operand::View(v), None) = (job.a, a_in_place) {
                    if a_layout == Layout::Col && v.row_stride == 1 {
                        pack_a_col_major(&v, (ic, mc_end - ic), (p0, kc), MR * KC, a_buf);
                    } else {
                        for (ip, i0) in (ic..mc_end).step_by(MR).enumerate() {
                            let panel = &mut a_buf[ip * MR * KC..(ip + 1) * MR * KC];
                            pack_a(&v, i0, MR.min(mc_end - i0), p0, kc, a_layout, panel);
                        }
                    }
                }
                for jp in 0..panels {
                    let j0 = jc + jp * NR;
                    let cols = NR.min(n1 - j0);
                    let full = cols == NR;
                    let b_panel: &[f32] = match job.b {
                        Operand::Im2col(x) if lazy_im2col => {
                            let panel = &mut b_own[..NR * kc];
                            pack_b_im2col(x, recipe, (jp, K::LANES), p0, kc, panel);
                            &b_own[..NR * kc]
                        }
                        _ => &b_block[jp * NR * kc..(jp + 1) * NR * kc],
                    };
                    for (ip, i0) in (ic..mc_end).step_by(MR).enumerate() {
                        let rows = MR.min(mc_end - i0);
                        let a_panel: &[f32] = match (job.a, a_in_place) {
                            (_, Some(d)) => &d[i0 * KC..i0 * KC + (rows - 1) * KC + kc],
                            (Operand::Packed(pm), None) => {
                                let start = p0 * pm.rows.div_ceil(MR) * MR + i0 / MR * MR * kc;
                                &pm.data[start..start + MR * kc]
                            }
                            // (gemm_on accepts no im2col lhs.)
                            (Operand::View(_) | Operand::Im2col(_), None) => {
                                &a_buf[ip * MR * KC..(ip + 1) * MR * KC]
                            }
                        };
                        // The f32 home of this tile's partial sums (only dereferenced when there
                        // are several blocks of K, or for the output itself when it is f32).
                        let home = match job.dst {
                            Dst::F32(p) => {
                                CRef { ptr: p.wrapping_add(i0 * job.rs + j0), rs: job.rs }
                            }
                            Dst::F16(_) => CRef {
                                ptr: partial_base.wrapping_add((i0 - m0) * part_rs + (j0 - jc)),
                                rs: part_rs,
                            },
                        };
                        let c_in = if load && !full {
                            // SAFETY: home holds this tile's rows x cols (inside the thread's
                            // rectangle of the output, or of the partial buffer); local is MR x NR.
                            unsafe { copy_tile(home, local, rows, cols) };
                            local
                        } else {
                            home
                        };
                        let c_out = if full && (!last || plain_f32) { home } else { local };
                        // SAFETY: a_panel holds MR * kc floats (Col) or at least
                        // (rows - 1) * KC + kc (Row, packed or in place), b_panel
                        // NR * kc; c_in (when load) and c_out hold rows x NR floats at their
                        // strides (home only when the tile is full); 1 <= rows <= MR and kc <= KC
                        // by k_blocks; the kernel's CPU features were checked when the Isa was
                        // chosen.
                        unsafe {
                            K::tile(
                                rows,
                                a_layout,
                                kc,
                                a_panel.as_ptr(),
                                b_panel.as_ptr(),
                                c_in,
                                load,
                                c_out,
                            )
                        };
                        if last && !(full && plain_f32) {
                            // SAFETY: local holds the finished tile; the output rectangle
                            // (i0.., j0..) x (rows, cols) is this thread's and inside the slice.
                            unsafe { K::finish(job, i0, j0, rows, cols, local) };
                        } else if !last && !full {
                            // SAFETY: as for the copy in.
                            unsafe { copy_tile(local, home, rows, cols) };
                        }
                    }
                }
            }
        }
    }
}

/// Finishes a tile (port, bias) and stores it in the output type, in portable code.
///
/// # Safety
/// `tile` holds `rows` x `cols` floats at its stride; the output rectangle at (i0, j0) of
/// `rows` x `cols` lies inside the output slice and belongs to the calling thread.
#[inline(always)]
unsafe fn write_output(job: &Job<'_>, i0: usize, j0: usize, rows: usize, cols: usize, tile: CRef) {
    for r in 0..rows {
        // SAFETY: guaranteed by the caller.
        let row = unsafe { std::slice::from_raw_parts_mut(tile.ptr.add(r * tile.rs), cols) };
        let col_bias = job.epilogue.col_bias.map(|b| &b[j0..j0 + cols]);
        finish_row(job.epilogue.port, col_bias, job.epilogue.bias.map(|b| b[i0 + r]), row);
        let at = (i0 + r) * job.rs + j0;
        match job.dst {
            Dst::F32(p) => {
                // SAFETY: guaranteed by the caller.
                let dst = unsafe { std::slice::from_raw_parts_mut(p.add(at), cols) };
                dst.copy_from_slice(row);
            }
            Dst::F16(p) => {
                // SAFETY: guaranteed by the caller.
                let dst = unsafe { std::slice::from_raw_parts_mut(p.add(at), cols) };
                numerics::f32_slice_to_f16(row, dst);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 and AVX2 micro-kernels, the AVX-512 epilogue, and the region driver
    //! compiled for each.
    use super::{Buffers, CRef, Dst, Job, KC, Layout, MR, Micro, NR, Port, drive};
    use std::arch::x86_64::*;

    /// Calls `$f::<R, A_STEP, A_ROW>` for the run-time row count and layout.
    macro_rules! by_rows {
        ($rows:expr, $layout:expr, $f:ident $args:tt; $($r:literal)*) => {
            match ($rows, $layout) {
                $(
                    ($r, Layout::Col) => $f::<$r, MR, 1> $args,
                    ($r, Layout::Row) => $f::<$r, 1, KC> $args,
                )*
                _ => unreachable!("tile rows out of range"),
            }
        };
    }

    pub(super) struct Avx512;

    impl Micro for Avx512 {
        const LANES: bool = true;

        #[inline(always)]
        unsafe fn tile(
            rows: usize,
            layout: Layout,
            kc: usize,
            a: *const f32,
            b: *const f32,
            c_in: CRef,
            load: bool,
            c_out: CRef,
        ) {
            // SAFETY: forwarded from the caller (extents and CPU features).
            unsafe {
                by_rows!(rows, layout, tile512(kc, a, b, c_in, load, c_out); 1 2 3 4 5 6 7 8 9 10 11 12)
            }
        }

        #[inline(always)]
        unsafe fn finish(
            job: &Job<'_>,
            i0: usize,
            j0: usize,
            rows: usize,
            cols: usize,
            tile: CRef,
        ) {
            // SAFETY: forwarded from the caller; AVX-512F, BW and VL were checked with the Isa.
            unsafe { finish512(job, i0, j0, rows, cols, tile) }
        }
    }

    /// R rows x 32 columns: 2R zmm accumulators; per step of K two loads of B and R
    /// broadcasts of A.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile512<const R: usize, const A_STEP: usize, const A_ROW: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c_in: CRef,
        load: bool,
        c_out: CRef,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if load {
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: c_in holds R rows of NR floats at its stride.
                unsafe {
                    row[0] = _mm512_loadu_ps(c_in.ptr.add(r * c_in.rs));
                    row[1] = _mm512_loadu_ps(c_in.ptr.add(r * c_in.rs + 16));
                }
            }
        }
        // One step of K: two loads of B, a broadcast of A per row, 2R multiply-adds.
        // SAFETY (for every call): each step reads NR floats of b and one float per row of a,
        // inside the panels the caller vouched for; `p` counts the steps taken.
        let step = |acc: &mut [[__m512; 2]; R], p: usize| unsafe {
            let (a, b) = (a.add(p * A_STEP), b.add(p * NR));
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * A_ROW));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        };
        // Four steps per trip, so the loop's own counting costs a quarter as much.
        let mut p = 0;
        while p + 4 <= kc {
            step(&mut acc, p);
            step(&mut acc, p + 1);
            step(&mut acc, p + 2);
            step(&mut acc, p + 3);
            p += 4;
        }
        while p < kc {
            step(&mut acc, p);
            p += 1;
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: c_out holds R rows of NR floats at its stride.
            unsafe {
                _mm512_storeu_ps(c_out.ptr.add(r * c_out.rs), row[0]);
                _mm512_storeu_ps(c_out.ptr.add(r * c_out.rs + 16), row[1]);
            }
        }
    }

    /// 16 fp16 values (their bits) widened to f32, NaN read as +inf: the ANE datapath's rule
    /// for every fp16 operand the GEMM packs.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn ane_widen16(h: __m256i) -> __m512 {
        let v = _mm512_cvtph_ps(h);
        let inf = _mm512_set1_ps(f32::INFINITY);
        _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), inf)
    }

    /// fp16 -> f32 with NaN read as +inf, 16 lanes at a time (masked at the end).
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn widen_f16_avx512(src: &[half::f16], dst: &mut [f32]) {
        let n = dst.len().min(src.len());
        crate::sim::kernels::lanes16::steps16(n, |i, mask| {
            // SAFETY: the mask stops the load and the store at `n`, inside both slices.
            unsafe {
                let h = _mm256_maskz_loadu_epi16(mask, src.as_ptr().add(i).cast::<i16>());
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), mask, ane_widen16(h));
            }
        });
    }

    /// `pack_b_row` on AVX-512 for fp16: `cols` elements at `src` to row `p` of the
    /// `[panel][kc][NR]` block `out`, NaN read as +inf; the masked loads leave the lanes past
    /// `cols` at +0, so the last panel's padding is written with the same stores.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL; `src` must hold `cols` elements and `out` row
    /// `p` of `cols.div_ceil(NR)` panels of `kc * NR` floats.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pack_b_row_f16_avx512(
        src: *const half::f16,
        cols: usize,
        out: &mut [f32],
        p: usize,
        kc: usize,
    ) {
        let dst = out.as_mut_ptr();
        for jp in 0..cols.div_ceil(NR) {
            let row = jp * NR * kc + p * NR;
            for half in 0..NR / 16 {
                let at = jp * NR + half * 16;
                let left = cols.saturating_sub(at).min(16);
                let mask = ((1u32 << left) - 1) as __mmask16;
                // SAFETY: the mask keeps the load inside the `cols` elements at src, and the
                // store is one of the panel row's NR lanes (the caller's extents).
                unsafe {
                    let h = _mm256_maskz_loadu_epi16(mask, src.wrapping_add(at).cast::<i16>());
                    _mm512_storeu_ps(dst.add(row + half * 16), ane_widen16(h));
                }
            }
        }
    }

    /// Fills `count` 16-lane halves of im2col panel rows, half `i` at `dst + i * dst_step` of
    /// `out` from the channel at `src + i * src_step` of `data` (each channel `plane`
    /// elements): each of `lanes` loads its masked lanes, lanes no load names are 0 (fp16
    /// widened, NaN read as +inf).
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn load_lanes_avx512(
        data: super::Elems<'_>,
        (src, src_step, plane): (usize, usize, usize),
        lanes: &[super::Lane],
        out: &mut [f32],
        (dst, dst_step): (usize, usize),
        count: usize,
    ) {
        if count == 0 {
            return;
        }
        assert!((count - 1) * src_step + src + plane <= data.len(), "im2col outside the input");
        assert!((count - 1) * dst_step + dst + 16 <= out.len(), "im2col outside the panel");
        for l in lanes {
            // The lanes read lie inside the channel.
            let (lo, hi) = (l.mask.trailing_zeros() as isize, 16 - l.mask.leading_zeros() as isize);
            assert!(l.mask != 0 && l.rel + lo >= 0 && l.rel + hi <= plane as isize, "lane load");
        }
        let d = out.as_mut_ptr().wrapping_add(dst);
        // SAFETY (for the calls): the lanes lie inside every channel read and the halves
        // inside `out` (asserted above); the CPU has the features (this function's contract).
        unsafe {
            match (data, lanes) {
                (super::Elems::F32(x), &[a]) => rows_f32(x, src, src_step, [a], d, dst_step, count),
                (super::Elems::F32(x), &[a, b]) => {
                    rows_f32(x, src, src_step, [a, b], d, dst_step, count)
                }
                (super::Elems::F32(x), _) => rows_f32(x, src, src_step, lanes, d, dst_step, count),
                (super::Elems::F16(x), &[a]) => rows_f16(x, src, src_step, [a], d, dst_step, count),
                (super::Elems::F16(x), &[a, b]) => {
                    rows_f16(x, src, src_step, [a, b], d, dst_step, count)
                }
                (super::Elems::F16(x), _) => rows_f16(x, src, src_step, lanes, d, dst_step, count),
            }
        }
    }

    /// The rows of [`load_lanes_avx512`] from f32: independent masked loads, or-ed.
    ///
    /// # Safety
    /// As checked by `load_lanes_avx512`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn rows_f32<L: AsRef<[super::Lane]>>(
        x: &[f32],
        src: usize,
        src_step: usize,
        lanes: L,
        d: *mut f32,
        dst_step: usize,
        count: usize,
    ) {
        let lanes = lanes.as_ref();
        let mut s = x.as_ptr().wrapping_add(src);
        let mut d = d;
        for _ in 0..count {
            let mut v = _mm512_setzero_si512();
            for l in lanes {
                // SAFETY: only the masked lanes are read, inside the channel (caller).
                let w = unsafe { _mm512_maskz_loadu_ps(l.mask, s.wrapping_offset(l.rel)) };
                v = _mm512_or_si512(v, _mm512_castps_si512(w));
            }
            // SAFETY: 16 floats at d lie inside the panel (caller).
            unsafe { _mm512_storeu_si512(d.cast(), v) };
            s = s.wrapping_add(src_step);
            d = d.wrapping_add(dst_step);
        }
    }

    /// The rows of [`load_lanes_avx512`] from fp16: independent masked loads, or-ed, widened
    /// with NaN read as +inf.
    ///
    /// # Safety
    /// As checked by `load_lanes_avx512`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn rows_f16<L: AsRef<[super::Lane]>>(
        x: &[half::f16],
        src: usize,
        src_step: usize,
        lanes: L,
        d: *mut f32,
        dst_step: usize,
        count: usize,
    ) {
        let lanes = lanes.as_ref();
        let mut s = x.as_ptr().wrapping_add(src).cast::<i16>();
        let mut d = d;
        for _ in 0..count {
            let mut h = _mm256_setzero_si256();
            for l in lanes {
                // SAFETY: only the masked lanes are read, inside the channel (caller).
                let w = unsafe { _mm256_maskz_loadu_epi16(l.mask, s.wrapping_offset(l.rel)) };
                h = _mm256_or_si256(h, w);
            }
            // SAFETY: 16 floats at d lie inside the panel (caller).
            unsafe { _mm512_storeu_ps(d, ane_widen16(h)) };
            s = s.wrapping_add(src_step);
            d = d.wrapping_add(dst_step);
        }
    }

    /// A 16 x 16 transpose in registers: `out[j]` lane `i` is `rows[i]` lane `j`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        let pd = _mm512_castps_pd;
        let ps = _mm512_castpd_ps;
        // Pairs of rows interleaved, then pairs of pairs: u[4g + c] holds, in 128-bit lane L,
        // column 4L + c of rows 4g..4g + 4.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a0, a1, a2, a3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = ps(_mm512_unpacklo_pd(pd(a0), pd(a2)));
            u[4 * g + 1] = ps(_mm512_unpackhi_pd(pd(a0), pd(a2)));
            u[4 * g + 2] = ps(_mm512_unpacklo_pd(pd(a1), pd(a3)));
            u[4 * g + 3] = ps(_mm512_unpackhi_pd(pd(a1), pd(a3)));
        }
        // Gather lane L of the four row groups into column 4L + c.
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..4 {
            let even01 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
            let odd01 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
            let even23 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let odd23 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
            out[c] = _mm512_shuffle_f32x4::<0x88>(even01, even23);
            out[4 + c] = _mm512_shuffle_f32x4::<0x88>(odd01, odd23);
            out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(even01, even23);
            out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(odd01, odd23);
        }
        out
    }

    /// Packs a B stored transposed — B(p, c) at `base + c * cs + p` — for K `0..kc` and
    /// columns `0..cols` (<= NR) into a `[kc][NR]` panel, zero past `cols`: 16 x 16 blocks
    /// loaded along K (fp16 widened, NaN read as +inf) and transposed in registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL; `data` must hold every B(p, c) named above;
    /// `out` must hold `kc * NR` floats.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn pack_b_transposed_avx512(
        data: super::Elems<'_>,
        base: usize,
        cs: usize,
        kc: usize,
        cols: usize,
        out: &mut [f32],
    ) {
        assert!(out.len() >= kc * NR, "panel too small");
        for c0 in [0, 16] {
            let group = cols.saturating_sub(c0).min(16);
            for p in (0..kc).step_by(16) {
                let left = (kc - p).min(16);
                let mask: __mmask16 = if left == 16 { 0xffff } else { ((1u32 << left) - 1) as u16 };
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, row) in r.iter_mut().enumerate().take(group) {
                    let at = base + (c0 + i) * cs + p;
                    // SAFETY: the mask limits the load to K p..p + left of column c0 + i,
                    // which the caller guarantees are inside `data`.
                    *row = unsafe {
                        match data {
                            super::Elems::F32(x) => _mm512_maskz_loadu_ps(mask, x.as_ptr().add(at)),
                            super::Elems::F16(x) => {
                                let h = _mm256_maskz_loadu_epi16(
                                    mask,
                                    x.as_ptr().add(at).cast::<i16>(),
                                );
                                ane_widen16(h)
                            }
                        }
                    };
                }
                let t = transpose16(r);
                for (q, col) in t.iter().enumerate().take(left) {
                    // SAFETY: (p + q) * NR + c0 + 16 <= kc * NR <= out.len().
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((p + q) * NR + c0), *col) };
                }
            }
        }
    }

    /// The epilogue on 16 lanes, each with its bias when there is one: the same operations as
    /// `finish_row`, in the same order.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn finish16(port: Port, bias: Option<__m512>, v: __m512) -> __m512 {
        let nan_to_zero =
            |v: __m512| _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
        let v = match port {
            Port::Ieee => v,
            Port::AneResult => nan_to_zero(v),
            Port::AneSaturate => {
                // NaN -> +0, then |v| >= 32760 (rounds to 2^15 or more) -> ±inf.
                let v = nan_to_zero(v);
                let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(
                    _mm512_abs_ps(v),
                    _mm512_set1_ps(super::SATURATION_THRESHOLD),
                );
                let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
                let inf = _mm512_castsi512_ps(_mm512_or_si512(
                    sign,
                    _mm512_castps_si512(_mm512_set1_ps(f32::INFINITY)),
                ));
                _mm512_mask_mov_ps(v, big, inf)
            }
        };
        match (port, bias) {
            (_, None) => v,
            (Port::Ieee, Some(b)) => _mm512_add_ps(v, b),
            (_, Some(b)) => {
                // round_f16 through the hardware conversion (RNE, ±inf beyond fp16), + bias,
                // NaN -> +0.
                let rounded = _mm512_cvtph_ps(_mm512_cvtps_ph::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(v));
                nan_to_zero(_mm512_add_ps(rounded, b))
            }
        }
    }

    /// The epilogue of a tile and its store, with AVX-512 (masked at the edges).
    ///
    /// # Safety
    /// As `write_output`; the CPU must have AVX-512F, BW and VL.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn finish512(job: &Job<'_>, i0: usize, j0: usize, rows: usize, cols: usize, tile: CRef) {
        let masks: [__mmask16; 2] = [
            if cols >= 16 { 0xffff } else { ((1u32 << cols) - 1) as u16 },
            if cols >= 32 {
                0xffff
            } else if cols > 16 {
                ((1u32 << (cols - 16)) - 1) as u16
            } else {
                0
            },
        ];
        for r in 0..rows {
            let bias = job.epilogue.bias.map(|b| b[i0 + r]);
            let at = (i0 + r) * job.rs + j0;
            for (h, &mask) in masks.iter().enumerate() {
                if mask == 0 {
                    continue;
                }
                // SAFETY: the tile row holds NR floats; the output holds `cols` elements at
                // `at` (caller's contract), and the mask stops the store at `cols`; the column
                // bias holds the output's columns (checked by gemm_on), the mask stops its
                // load at `cols` too.
                unsafe {
                    let mut v = _mm512_loadu_ps(tile.ptr.add(r * tile.rs + h * 16));
                    if let Some(cb) = job.epilogue.col_bias {
                        let b = _mm512_maskz_loadu_ps(mask, cb.as_ptr().add(j0 + h * 16));
                        v = _mm512_add_ps(v, b);
                    }
                    let v = finish16(job.epilogue.port, bias.map(|b| _mm512_set1_ps(b)), v);
                    match job.dst {
                        Dst::F32(p) => _mm512_mask_storeu_ps(p.add(at + h * 16), mask, v),
                        Dst::F16(p) => {
                            let halves = _mm512_cvtps_ph::<
                                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                            >(v);
                            _mm256_mask_storeu_epi16(p.add(at + h * 16).cast::<i16>(), mask, halves)
                        }
                    }
                }
            }
        }
    }

    pub(super) struct Avx2;

    impl Micro for Avx2 {
        #[inline(always)]
        unsafe fn tile(
            rows: usize,
            layout: Layout,
            kc: usize,
            a: *const f32,
            b: *const f32,
            c_in: CRef,
            load: bool,
            c_out: CRef,
        ) {
            let a_row = if layout == Layout::Col { 1 } else { KC };
            let (top, bottom) = (rows.min(6), rows.saturating_sub(6));
            for (r0, rr) in [(0, top), (6, bottom)] {
                if rr == 0 {
                    continue;
                }
                for c0 in [0, 16] {
                    // SAFETY: the sub-tile (rows r0..r0 + rr, columns c0..c0 + 16) lies inside
                    // the tile and panels the caller vouched for.
                    unsafe {
                        let (a, b) = (a.add(r0 * a_row), b.add(c0));
                        let c_in =
                            CRef { ptr: c_in.ptr.wrapping_add(r0 * c_in.rs + c0), rs: c_in.rs };
                        let c_out = CRef { ptr: c_out.ptr.add(r0 * c_out.rs + c0), rs: c_out.rs };
                        by_rows!(rr, layout, tile256(kc, a, b, c_in, load, c_out); 1 2 3 4 5 6)
                    }
                }
            }
        }
    }

    /// R (<= 6) rows x 16 columns: 2R ymm accumulators.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile256<const R: usize, const A_STEP: usize, const A_ROW: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c_in: CRef,
        load: bool,
        c_out: CRef,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if load {
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: c_in holds R rows of 16 floats at its stride.
                unsafe {
                    row[0] = _mm256_loadu_ps(c_in.ptr.add(r * c_in.rs));
                    row[1] = _mm256_loadu_ps(c_in.ptr.add(r * c_in.rs + 8));
                }
            }
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            // SAFETY: as in tile512, 16 floats of b per step.
            unsafe {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r * A_ROW));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
                a = a.add(A_STEP);
                b = b.add(NR);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: c_out holds R rows of 16 floats at its stride.
            unsafe {
                _mm256_storeu_ps(c_out.ptr.add(r * c_out.rs), row[0]);
                _mm256_storeu_ps(c_out.ptr.add(r * c_out.rs + 8), row[1]);
            }
        }
    }

    /// The region driver with AVX-512 enabled, so that packing and the epilogue use it too.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn region_avx512(
        job: &Job<'_>,
        r: (usize, usize, usize, usize),
        bufs: &mut Buffers,
    ) {
        drive::<Avx512>(job, r, bufs)
    }

    /// The region driver with AVX2 and FMA enabled.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn region_avx2(
        job: &Job<'_>,
        r: (usize, usize, usize, usize),
        bufs: &mut Buffers,
    ) {
        drive::<Avx2>(job, r, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::testutil::values;
    use proptest::prelude::*;

    /// How an operand is stored: row-major, transposed, or a strided window of a larger
    /// buffer (both strides above 1, and an offset).
    #[derive(Clone, Copy, Debug)]
    enum Store {
        Rows,
        Transposed,
        Strided,
    }

    /// An operand's storage: its f32 values in a buffer and the view that reads them.
    struct Stored {
        buf: Vec<f32>,
        offset: usize,
        rs: isize,
        cs: isize,
    }

    impl Stored {
        fn new(rows: usize, cols: usize, store: Store, seed: u64) -> Stored {
            let (offset, rs, cs, len) = match store {
                Store::Rows => (0, cols, 1, rows * cols),
                Store::Transposed => (0, 1, rows, rows * cols),
                // Every other column of a wider matrix, after a few leading elements.
                Store::Strided => (5, 2 * cols + 3, 2, 5 + rows * (2 * cols + 3)),
            };
            // fp16-representable values, so the f16 copy holds the same numbers.
            let buf =
                values(len.max(1), seed).into_iter().map(|v| f16::from_f32(v).to_f32()).collect();
            Stored { buf, offset, rs: rs as isize, cs: cs as isize }
        }

        fn at(&self, i: usize, j: usize) -> f32 {
            self.buf[(self.offset as isize + i as isize * self.rs + j as isize * self.cs) as usize]
        }

        fn view<'a>(&self, data: Elems<'a>) -> View<'a> {
            View { data, offset: self.offset, row_stride: self.rs, col_stride: self.cs }
        }
    }

    fn reference(m: usize, n: usize, k: usize, a: &Stored, b: &Stored) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a.at(i, p) as f64 * b.at(p, j) as f64).sum();
            }
        }
        out
    }

    /// f32 output of `a x b` on `isa`; `packed` packs the operands ahead first.
    #[allow(clippy::too_many_arguments)]
    fn run(
        isa: Isa,
        (m, n, k): (usize, usize, usize),
        a: &Stored,
        b: &Stored,
        halves: bool,
        packed: bool,
        parallel: bool,
    ) -> Vec<f32> {
        let a16: Vec<f16> = a.buf.iter().map(|&v| f16::from_f32(v)).collect();
        let b16: Vec<f16> = b.buf.iter().map(|&v| f16::from_f32(v)).collect();
        let (ea, eb) = if halves {
            (Elems::F16(&a16), Elems::F16(&b16))
        } else {
            (Elems::F32(&a.buf), Elems::F32(&b.buf))
        };
        let (va, vb) = (a.view(ea), b.view(eb));
        let pa = PackedMatrix::pack(Side::Lhs, m, k, va).unwrap();
        let pb = PackedMatrix::pack(Side::Rhs, k, n, vb).unwrap();
        let (oa, ob) = if packed {
            (Operand::Packed(pa.panels()), Operand::Packed(pb.panels()))
        } else {
            (Operand::View(va), Operand::View(vb))
        };
        // Row stride n + 3: the output need not be dense.
        let rs = n + 3;
        let mut out = vec![f32::NAN; m.saturating_sub(1) * rs + n];
        gemm_on(isa, m, n, k, oa, ob, Out::F32(&mut out), rs, Epilogue::PLAIN, parallel).unwrap();
        (0..m).flat_map(|i| out[i * rs..i * rs + n].to_vec()).collect()
    }

    /// f32 accumulation errs by at most k 2^-24 sum |a||b| <= k^2 2^-24 for |a|, |b| <= 1.
    fn assert_close(got: &[f32], want: &[f64], k: usize, what: &str) {
        let tol = (k * k) as f64 * 2f64.powi(-24) + 1e-30;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (tolerance {tol})");
        }
    }

    const SIZES: [usize; 6] = [1, 7, 17, 33, 65, 257];

    #[test]
    fn awkward_shapes_match_an_f64_reference_on_every_kernel() {
        for &m in &SIZES {
            for &n in &SIZES {
                for &k in &SIZES {
                    if m * n * k > 300_000 && !(m == 257 && n == 33 && k == 257) {
                        continue;
                    }
                    let a = Stored::new(m, k, Store::Rows, (m * 7 + k) as u64);
                    let b = Stored::new(k, n, Store::Rows, (n * 11 + k) as u64);
                    let want = reference(m, n, k, &a, &b);
                    let first = run(Isa::detect(), (m, n, k), &a, &b, false, false, false);
                    assert_close(&first, &want, k, &format!("{m}x{n}x{k}"));
                    for isa in Isa::available() {
                        let got = run(isa, (m, n, k), &a, &b, false, false, false);
                        let same = got.iter().zip(&first).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{m}x{n}x{k}: {isa:?} differs from {:?}", Isa::detect());
                    }
                }
            }
        }
    }

    #[test]
    fn transposed_and_strided_operands_fp16_and_packed() {
        let stores = [Store::Rows, Store::Transposed, Store::Strided];
        // (200 rows: a whole block of MC rows and a part of one.)
        let shapes =
            [(17, 33, 65), (13, 70, 300), (1, 40, 7), (40, 1, 17), (25, 9, 600), (200, 5, 40)];
        for (m, n, k) in shapes {
            for sa in stores {
                for sb in stores {
                    let a = Stored::new(m, k, sa, 3);
                    let b = Stored::new(k, n, sb, 4);
                    let want = reference(m, n, k, &a, &b);
                    let base = run(Isa::detect(), (m, n, k), &a, &b, false, false, false);
                    let what = format!("{m}x{n}x{k} {sa:?} {sb:?}");
                    assert_close(&base, &want, k, &what);
                    // fp16 storage of the same values, packed ahead or not, on every kernel:
                    // the same bits.
                    for isa in Isa::available() {
                        for (halves, packed) in [(true, false), (false, true), (true, true)] {
                            let got = run(isa, (m, n, k), &a, &b, halves, packed, false);
                            let same =
                                got.iter().zip(&base).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(same, "{what}: {isa:?} fp16 {halves} packed {packed}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_split_across_threads_gives_the_same_bits() {
        // Large enough to split (>= PARALLEL_MACS), with edge tiles on both sides.
        for (m, n, k, sa) in [
            (130, 200, 90, Store::Rows),
            (37, 70, 1000, Store::Transposed),
            (300, 40, 200, Store::Rows),
        ] {
            assert!(m * n * k >= PARALLEL_MACS);
            let a = Stored::new(m, k, sa, 5);
            let b = Stored::new(k, n, Store::Rows, 6);
            let one = run(Isa::detect(), (m, n, k), &a, &b, true, false, false);
            let split = run(Isa::detect(), (m, n, k), &a, &b, true, false, true);
            assert!(one.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_close(&split, &reference(m, n, k, &a, &b), k, "split");
        }
    }

    #[test]
    fn a_packed_once_for_all_threads_gives_the_same_bits() {
        // B packed ahead and too large to stay in L2, A read through a view (fp16 or f32, row-
        // or column-major): A is packed once and the threads take B's columns in units. The
        // bits are those of one thread on the rectangles, and of both operands as views.
        // (More than MC rows of a column-major A: two groups per block of K when packed.)
        for (m, n, k, sa, halves) in [
            (40, 700, 520, Store::Rows, true),
            (13, 1100, 300, Store::Transposed, false),
            (200, 1024, 300, Store::Transposed, true),
        ] {
            let a = Stored::new(m, k, sa, 7);
            let b = Stored::new(k, n, Store::Rows, 8);
            let a16: Vec<f16> = a.buf.iter().map(|&v| f16::from_f32(v)).collect();
            let ea = if halves { Elems::F16(&a16) } else { Elems::F32(&a.buf) };
            let (va, vb) = (a.view(ea), b.view(Elems::F32(&b.buf)));
            let pb = PackedMatrix::pack(Side::Rhs, k, n, vb).unwrap();
            let what = format!("{m} x {n} x {k}");
            let mut outs = [vec![f32::NAN; m * n], vec![f32::NAN; m * n], vec![f32::NAN; m * n]];
            let [one, views, shared] = &mut outs;
            let (isa, plain) = (Isa::detect(), Epilogue::PLAIN);
            let (oa, ob) = (Operand::View(va), Operand::Packed(pb.panels()));
            gemm_on(isa, m, n, k, oa, ob, Out::F32(one), n, plain, false).unwrap();
            let vv = Operand::View(vb);
            gemm_on(isa, m, n, k, oa, vv, Out::F32(views), n, plain, false).unwrap();
            let job = |out: &mut [f32]| Job {
                k,
                a: oa,
                b: ob,
                dst: Dst::F32(out.as_mut_ptr()),
                rs: n,
                epilogue: plain,
            };
            assert!(shares_a(&job(shared), n, 2), "{what}");
            let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
            // Twice: the second product reuses the first one's buffer.
            for _ in 0..2 {
                pool.install(|| run_shared(isa, job(shared), (m, n, k))).unwrap();
            }
            for (got, name) in [(&*views, "views"), (&*shared, "shared")] {
                let same = got.iter().zip(one.iter()).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{what}: {name} differs from one thread");
            }
            assert_close(shared, &reference(m, n, k, &a, &b), k, &what);
        }
        // Not when B stays in L2, when A was packed ahead too, or with too few units.
        let (a, b) = (Stored::new(8, 64, Store::Rows, 1), Stored::new(64, 1024, Store::Rows, 2));
        let (va, vb) = (a.view(Elems::F32(&a.buf)), b.view(Elems::F32(&b.buf)));
        let pa = PackedMatrix::pack(Side::Lhs, 8, 64, va).unwrap();
        let small = PackedMatrix::pack(Side::Rhs, 64, 1024, vb).unwrap();
        let wide = Stored::new(300, 1024, Store::Rows, 3);
        let large = PackedMatrix::pack(Side::Rhs, 300, 1024, wide.view(Elems::F32(&wide.buf)));
        let large = large.unwrap();
        assert!(small.bytes() <= REREAD_BYTES && large.bytes() > REREAD_BYTES);
        let mut out = vec![0.0f32; 8 * 1024];
        let dst = Dst::F32(out.as_mut_ptr());
        let job = |a, b| Job { k: 64, a, b, dst, rs: 1024, epilogue: Epilogue::PLAIN };
        let (view_a, packed_a) = (Operand::View(va), Operand::Packed(pa.panels()));
        assert!(!shares_a(&job(view_a, Operand::Packed(small.panels())), 1024, 2));
        assert!(!shares_a(&job(packed_a, Operand::Packed(large.panels())), 1024, 2));
        assert!(shares_a(&job(view_a, Operand::Packed(large.panels())), 1024, 2));
        // 1024 columns are 16 units: enough for 4 threads, not for 5.
        assert!(shares_a(&job(view_a, Operand::Packed(large.panels())), 1024, 4));
        assert!(!shares_a(&job(view_a, Operand::Packed(large.panels())), 1024, 5));
    }

    #[test]
    fn regions_cover_the_output_in_whole_panels_and_respect_packing() {
        let (small, large) = (Some(REREAD_BYTES), Some(REREAD_BYTES + 1));
        for (m, n, threads, packed) in [
            (256, 2048, 2, (None, None)),
            (256, 2048, 2, (small, None)),
            (256, 2048, 2, (large, None)),
            (64, 3136, 2, (small, None)),
            (2048, 256, 2, (small, None)),
            (2048, 256, 2, (large, None)),
            (2048, 256, 2, (None, None)),
            (1024, 256, 2, (None, None)),
            (2048, 40, 2, (None, None)),
            (2048, 40, 2, (None, small)),
            (2048, 40, 2, (None, large)),
            (30, 70, 3, (None, None)),
            (13, 33, 8, (small, small)),
        ] {
            let regions = split_regions(m, n, threads, packed);
            let what = format!("{m} x {n}, {threads} threads, packed {packed:?}");
            assert!(!regions.is_empty() && regions.len() <= threads * REGIONS_PER_THREAD, "{what}");
            let mut covered = vec![0u8; m * n];
            for &(m0, m1, n0, n1) in &regions {
                assert!(m0 < m1 && m1 <= m && n0 < n1 && n1 <= n, "{what}: {regions:?}");
                // Cuts fall on whole tiles and panels.
                assert!(m0 % MR == 0 && n0 % NR == 0, "{what}: {regions:?}");
                for i in m0..m1 {
                    for j in n0..n1 {
                        covered[i * n + j] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{what}: {regions:?}");
            // Each rectangle repacks the operand it does not cut, or reads it again when that
            // was packed ahead: several rectangles per thread only when it is small enough to
            // stay in L2, else one.
            let by_cols = regions.iter().all(|r| (r.0, r.1) == (0, m));
            let uncut = if by_cols { packed.0 } else { packed.1 };
            let rereadable = uncut.is_some_and(|bytes| bytes <= REREAD_BYTES);
            let most = if rereadable { threads * REGIONS_PER_THREAD } else { threads };
            assert!(regions.len() <= most, "{what}: {regions:?}");
            if rereadable && by_cols {
                assert!(regions.len() >= (n.div_ceil(NR)).min(most), "{what}: {regions:?}");
            }
            // With nothing packed ahead, the larger operand is the one cut, not repacked.
            if packed == (None, None) && m > n && m.div_ceil(MR) >= 2 * threads {
                assert!(!by_cols, "{what}: {regions:?}");
            }
        }
    }

    #[test]
    fn rows_a_block_of_k_apart_are_read_in_place_with_the_same_bits() {
        // f32 rows KC apart over one block of K: read in place. The same matrix with rows k
        // apart is packed. Both give the same bits on every kernel, edge tiles included.
        for (m, n, k) in [(25, 40, 256), (12, 33, 100), (7, 5, 1)] {
            let dense: Vec<f32> =
                (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0).collect();
            let mut spaced = vec![f32::NAN; (m - 1) * KC + k];
            for r in 0..m {
                spaced[r * KC..r * KC + k].copy_from_slice(&dense[r * k..(r + 1) * k]);
            }
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 8.0).collect();
            let bv =
                View { data: Elems::F32(&b), offset: 0, row_stride: n as isize, col_stride: 1 };
            for isa in Isa::available() {
                let mut outs = [vec![0.0f32; m * n], vec![0.0f32; m * n]];
                for (a, out) in [(&dense, k), (&spaced, KC)].into_iter().zip(&mut outs) {
                    let (data, stride) = a;
                    let av = View {
                        data: Elems::F32(data),
                        offset: 0,
                        row_stride: stride as isize,
                        col_stride: 1,
                    };
                    let (a, b) = (Operand::View(av), Operand::View(bv));
                    gemm_on(isa, m, n, k, a, b, Out::F32(out), n, Epilogue::PLAIN, false).unwrap();
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&outs[0]), bits(&outs[1]), "{isa:?} {m} x {n} x {k}");
            }
        }
    }

    #[test]
    fn k_blocks_cover_k_in_order() {
        for k in [0, 1, 255, 256, 257, 511, 512, 513, 1000, 4096] {
            let blocks: Vec<_> = k_blocks(k).collect();
            assert_eq!(blocks[0].0, 0);
            assert!(blocks.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
            let (start, len) = *blocks.last().unwrap();
            assert_eq!(start + len, k);
            assert!(blocks.iter().all(|&(_, l)| l <= KC));
            assert_eq!(blocks.len(), k.div_ceil(KC).max(1));
        }
    }

    #[test]
    fn zero_k_gives_the_epilogue_of_zero() {
        let bias = [1.5f32, -2.0];
        for isa in Isa::available() {
            let mut out = [f16::NAN; 6];
            let a = View { data: Elems::F32(&[]), offset: 0, row_stride: 0, col_stride: 1 };
            let epi = Epilogue::row_bias(Port::AneSaturate, Some(&bias));
            gemm_on(
                isa,
                2,
                3,
                0,
                Operand::View(a),
                Operand::View(a),
                Out::F16(&mut out),
                3,
                epi,
                false,
            )
            .unwrap();
            assert_eq!(out.map(f16::to_f32), [1.5, 1.5, 1.5, -2.0, -2.0, -2.0], "{isa:?}");
        }
    }

    #[test]
    fn saturation_threshold_is_the_scalar_rules() {
        assert_eq!(numerics::mac_saturate(SATURATION_THRESHOLD), f32::INFINITY);
        let below = f32::from_bits(SATURATION_THRESHOLD.to_bits() - 1);
        assert_eq!(numerics::mac_saturate(below), below);
    }

    /// The vector epilogue against the scalar rules of `numerics`, on sums chosen to hit every
    /// rule: C = A x [1, ..., 1] with K = 1 is A itself.
    #[test]
    fn epilogue_follows_the_numerics_rules_exactly() {
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            32752.0,
            32759.996,
            32760.0,
            -32760.0,
            -32759.996,
            40000.0,
            65504.0,
            65519.996,
            65520.0,
            -65520.0,
            1e-8,
            -3e-6,
            6.1e-5,
            2049.0,
            1025.0,
            0.333_333_34,
        ];
        let m = special.len();
        let n = 37;
        let ones = vec![1.0f32; n];
        let bias: Vec<f32> = (0..m).map(|i| [0.0, 1.0, -1.0, 0.5, f32::INFINITY][i % 5]).collect();
        let a = View { data: Elems::F32(&special), offset: 0, row_stride: 1, col_stride: 1 };
        let b = View { data: Elems::F32(&ones), offset: 0, row_stride: n as isize, col_stride: 1 };
        // Column biases that push sums over the saturation threshold, cancel them, or are NaN.
        let col_bias: Vec<f32> = (0..n)
            .map(|j| [0.0, 8.0, -32760.0, 0.5, f32::NAN, -0.0, 1e-3, 65504.0][j % 8])
            .collect();
        for port in [Port::Ieee, Port::AneResult, Port::AneSaturate] {
            for (with_bias, with_col_bias) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let epi = Epilogue {
                    port,
                    bias: with_bias.then_some(&bias[..]),
                    col_bias: with_col_bias.then_some(&col_bias[..]),
                };
                let want = |i: usize, j: usize| {
                    // The sum starts from +0: a -0 product sums to +0.
                    let mut row = [special[i] + 0.0];
                    let cb = epi.col_bias.map(|b| &b[j..j + 1]);
                    finish_row(port, cb, epi.bias.map(|b| b[i]), &mut row);
                    row[0]
                };
                for isa in Isa::available() {
                    let mut o16 = vec![f16::ZERO; m * n];
                    let mut o32 = vec![0.0f32; m * n];
                    for out in [Out::F16(&mut o16), Out::F32(&mut o32)] {
                        gemm_on(
                            isa,
                            m,
                            n,
                            1,
                            Operand::View(a),
                            Operand::View(b),
                            out,
                            n,
                            epi,
                            false,
                        )
                        .unwrap();
                    }
                    for i in 0..m {
                        for j in 0..n {
                            let w = want(i, j);
                            let w16 = numerics::f32_to_f16(w);
                            let what = format!(
                                "{isa:?} {port:?} bias {with_bias} column bias {with_col_bias}: \
                                 {} at column {j} -> {w}",
                                special[i]
                            );
                            let (g16, g32) = (o16[i * n + j], o32[i * n + j]);
                            assert!(
                                g16.to_bits() == w16.to_bits() || (g16.is_nan() && w16.is_nan()),
                                "{what}: fp16 {g16}"
                            );
                            assert!(
                                g32.to_bits() == w.to_bits() || (g32.is_nan() && w.is_nan()),
                                "{what}: f32 {g32}"
                            );
                        }
                    }
                }
            }
        }
        // The rules themselves, on a few values: the port and the bias after one rounding.
        let one = |port: Port, bias: Option<f32>, v: f32| {
            let mut row = [v];
            finish_row(port, None, bias, &mut row);
            row[0]
        };
        // A column bias joins the f32 sum before the port: 32752 + 8 saturates.
        let mut row = [32752.0f32];
        finish_row(Port::AneSaturate, Some(&[8.0]), None, &mut row);
        assert_eq!(row[0], f32::INFINITY);
        assert_eq!(one(Port::AneSaturate, None, 32760.0), f32::INFINITY);
        assert_eq!(one(Port::AneSaturate, None, f32::NAN).to_bits(), 0);
        assert_eq!(one(Port::AneResult, None, 40000.0), 40000.0);
        // 2049 rounds to 2048 before the bias: 2048 + 1 = 2049, which the store rounds again.
        assert_eq!(one(Port::AneResult, Some(1.0), 2049.0), 2049.0);
        assert_eq!(numerics::f32_to_f16(2049.0).to_f32(), 2048.0);
        assert!(one(Port::Ieee, None, f32::NAN).is_nan());
    }

    #[test]
    fn fp16_nan_is_read_as_infinity() {
        // [NaN] x [1, 0]: inf * 1 = inf, inf * 0 = NaN -> +0 at the port.
        let a = [f16::NAN];
        let b = [f16::ONE, f16::ZERO];
        for isa in Isa::available() {
            for packed in [false, true] {
                let va = View { data: Elems::F16(&a), offset: 0, row_stride: 1, col_stride: 1 };
                let vb = View { data: Elems::F16(&b), offset: 0, row_stride: 2, col_stride: 1 };
                let pa = PackedMatrix::pack(Side::Lhs, 1, 1, va).unwrap();
                let pb = PackedMatrix::pack(Side::Rhs, 1, 2, vb).unwrap();
                let (oa, ob) = if packed {
                    (Operand::Packed(pa.panels()), Operand::Packed(pb.panels()))
                } else {
                    (Operand::View(va), Operand::View(vb))
                };
                let mut out = [f16::NAN; 2];
                let epi = Epilogue::port(Port::AneSaturate);
                gemm_on(isa, 1, 2, 1, oa, ob, Out::F16(&mut out), 2, epi, false).unwrap();
                assert_eq!(out[0], f16::INFINITY, "{isa:?} packed {packed}");
                assert_eq!(out[1].to_bits(), 0, "{isa:?} packed {packed}");
            }
            // The same rule in a row-major B that is packed per product: [1] x [NaN, 1, 0].
            let (a, b) = ([f16::ONE], [f16::NAN, f16::ONE, f16::ZERO]);
            let va = View { data: Elems::F16(&a), offset: 0, row_stride: 1, col_stride: 1 };
            let vb = View { data: Elems::F16(&b), offset: 0, row_stride: 3, col_stride: 1 };
            let mut out = [f16::NAN; 3];
            let (oa, ob) = (Operand::View(va), Operand::View(vb));
            let epi = Epilogue::port(Port::AneSaturate);
            gemm_on(isa, 1, 3, 1, oa, ob, Out::F16(&mut out), 3, epi, false).unwrap();
            assert_eq!(
                out.map(f16::to_bits),
                [f16::INFINITY, f16::ONE, f16::ZERO].map(f16::to_bits)
            );
        }
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let x = [0.0f32; 12];
        let v = View { data: Elems::F32(&x), offset: 0, row_stride: 4, col_stride: 1 };
        let p = PackedMatrix::pack(Side::Lhs, 3, 4, v).unwrap();
        let mut out = [0.0f32; 12];
        let go = |a: Operand<'_>, b: Operand<'_>, out: &mut [f32], bias: Option<&[f32]>| {
            let epi = Epilogue::row_bias(Port::Ieee, bias);
            gemm(3, 3, 4, a, b, Out::F32(out), 3, epi, false)
        };
        // B is 4 x 3.
        let w = View { row_stride: 3, ..v };
        // The left operand packed as a right one, a view past its slice, a short bias, a short
        // output.
        assert!(go(Operand::View(v), Operand::Packed(p.panels()), &mut out, None).is_err());
        let past = View { offset: 1, ..v };
        assert!(go(Operand::View(past), Operand::View(w), &mut out, None).is_err());
        assert!(
            go(Operand::Packed(p.panels()), Operand::View(w), &mut out, Some(&[1.0, 2.0])).is_err()
        );
        assert!(go(Operand::Packed(p.panels()), Operand::View(w), &mut out[..8], None).is_err());
        assert!(go(Operand::Packed(p.panels()), Operand::View(w), &mut out, None).is_ok());
    }

    /// An im2col operand `[channels, input]` of a convolution geometry, its data after
    /// `offset` leading elements.
    fn im2col_of<'a>(
        data: Elems<'a>,
        channels: usize,
        input: [usize; 3],
        kernel: [usize; 3],
        (stride, dilation): ([usize; 3], [usize; 3]),
        (pad, pad_after): ([usize; 3], [usize; 3]),
    ) -> Im2col<'a> {
        let output: [usize; 3] = std::array::from_fn(|d| {
            (input[d] + pad[d] + pad_after[d] - (kernel[d] - 1) * dilation[d] - 1) / stride[d] + 1
        });
        let plane = input.iter().product::<usize>();
        Im2col {
            data,
            offset: 3,
            channel_stride: plane + 2,
            channels,
            input,
            kernel,
            output,
            stride,
            dilation,
            pad,
        }
    }

    /// The im2col matrix of `x` built by its definition, f32 as the packing reads it.
    fn built(x: &Im2col<'_>) -> Vec<f32> {
        let (k, n) = (x.rows().unwrap(), x.cols().unwrap());
        let [_, oh, ow] = x.output;
        let [_, kh, kw] = x.kernel;
        let mut out = vec![0.0; k * n];
        for p in 0..k {
            let (ch, t) = (p / x.taps(), p % x.taps());
            let tap = [t / (kh * kw), (t / kw) % kh, t % kw];
            for j in 0..n {
                let o = [j / (oh * ow), (j / ow) % oh, j % ow];
                let pos: [isize; 3] = std::array::from_fn(|d| {
                    (o[d] * x.stride[d] + tap[d] * x.dilation[d]) as isize - x.pad[d] as isize
                });
                if (0..3).all(|d| pos[d] >= 0 && (pos[d] as usize) < x.input[d]) {
                    let [pd, ph, pw] = pos.map(|v| v as usize);
                    let at = (pd * x.input[1] + ph) * x.input[2] + pw;
                    out[p * n + j] = x.data.get(x.offset + ch * x.channel_stride + at);
                }
            }
        }
        out
    }

    #[test]
    fn im2col_operand_gives_the_bits_of_the_built_matrix_on_every_kernel() {
        type Case = (usize, [usize; 3], [usize; 3], [[usize; 3]; 2], [[usize; 3]; 2]);
        let cases: [Case; 5] = [
            // 3x3, padding 1, rows wider than a panel, two blocks of K.
            (40, [1, 9, 70], [1, 3, 3], [[1; 3], [1; 3]], [[0, 1, 1], [0, 1, 1]]),
            // Strides, dilation, asymmetric padding, odd sizes.
            (3, [1, 13, 6], [1, 3, 2], [[1, 2, 3], [1, 1, 2]], [[0, 0, 2], [0, 1, 0]]),
            // Three dims, rows narrower than a panel.
            (2, [4, 5, 7], [2, 3, 3], [[1, 1, 2], [2, 1, 1]], [[1, 1, 1], [0, 1, 0]]),
            // One dim, long rows, a kernel wider than the padding.
            (5, [1, 1, 300], [1, 1, 7], [[1; 3], [1; 3]], [[0, 0, 3], [0, 0, 4]]),
            // Padding wider than the kernel reach: whole zero rows and columns.
            (4, [1, 3, 4], [1, 2, 2], [[1; 3], [1; 3]], [[0, 3, 3], [0, 3, 2]]),
        ];
        for (channels, input, kernel, [stride, dilation], [pad, pad_after]) in cases {
            let len = 3 + channels * (input.iter().product::<usize>() + 2);
            let v32 = values(len, 9);
            let mut v16: Vec<f16> = v32.iter().map(|&v| f16::from_f32(v)).collect();
            // A NaN input is read as +inf.
            v16[5] = f16::NAN;
            let v32: Vec<f32> = v16.iter().map(|v| numerics::ane_read(v.to_f32())).collect();
            for data in [Elems::F32(&v32), Elems::F16(&v16)] {
                let x =
                    im2col_of(data, channels, input, kernel, (stride, dilation), (pad, pad_after));
                let (k, n) = (x.rows().unwrap(), x.cols().unwrap());
                // More rows than one block of them (MC) packs every panel of a block of
                // columns ahead; fewer packs each just before its use.
                for m in [13, 200] {
                    let a = values(m * k, 10);
                    let va = View {
                        data: Elems::F32(&a),
                        offset: 0,
                        row_stride: k as isize,
                        col_stride: 1,
                    };
                    let b = built(&x);
                    let vb = View {
                        data: Elems::F32(&b),
                        offset: 0,
                        row_stride: n as isize,
                        col_stride: 1,
                    };
                    let mut want = vec![0.0f32; m * n];
                    let epi = Epilogue::PLAIN;
                    let (oa, ob) = (Operand::View(va), Operand::View(vb));
                    gemm_on(Isa::Portable, m, n, k, oa, ob, Out::F32(&mut want), n, epi, false)
                        .unwrap();
                    for isa in Isa::available() {
                        for parallel in [false, true] {
                            let mut got = vec![0.0f32; m * n];
                            let ox = Operand::Im2col(&x);
                            gemm_on(isa, m, n, k, oa, ox, Out::F32(&mut got), n, epi, parallel)
                                .unwrap();
                            let same =
                                got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                            assert!(same, "{isa:?} m {m} {x:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mismatched_im2col_operands_are_errors() {
        let v = vec![0.5f32; 2 * 5 * 6];
        let x =
            im2col_of(Elems::F32(&v), 2, [1, 5, 6], [1, 3, 3], ([1; 3], [1; 3]), ([0; 3], [0; 3]));
        // offset 3 and channel stride 32 need 3 + 32 + 30 elements.
        assert!(!x.fits());
        let x = Im2col { offset: 0, channel_stride: 30, ..x };
        assert!(x.fits());
        let (k, n) = (18, 12);
        let a = vec![1.0f32; 4 * k];
        let va = Operand::View(View {
            data: Elems::F32(&a),
            offset: 0,
            row_stride: k as isize,
            col_stride: 1,
        });
        let mut out = vec![0.0f32; 4 * n];
        let go = |a: Operand<'_>, b: Operand<'_>, k: usize, out: &mut [f32]| {
            gemm(4, n, k, a, b, Out::F32(out), n, Epilogue::PLAIN, false)
        };
        assert!(go(va, Operand::Im2col(&x), k, &mut out).is_ok());
        // Each output is the sum of its 18 taps of 0.5.
        assert!(out.iter().all(|&v| v == 9.0));
        // The wrong K, an operand past its slice, a zero stride, an im2col lhs.
        assert!(go(va, Operand::Im2col(&x), k - 1, &mut out).is_err());
        let past = Im2col { offset: 1, ..x };
        assert!(go(va, Operand::Im2col(&past), k, &mut out).is_err());
        let still = Im2col { stride: [1, 0, 1], ..x };
        assert!(go(va, Operand::Im2col(&still), k, &mut out).is_err());
        assert!(go(Operand::Im2col(&x), Operand::Im2col(&x), k, &mut out).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_shapes_and_layouts(
            m in 1usize..70,
            n in 1usize..90,
            k in prop_oneof![1usize..40, 250usize..600],
            sa in 0usize..3,
            sb in 0usize..3,
            halves: bool,
            packed: bool,
        ) {
            let stores = [Store::Rows, Store::Transposed, Store::Strided];
            let a = Stored::new(m, k, stores[sa], m as u64);
            let b = Stored::new(k, n, stores[sb], n as u64 + 100);
            let got = run(Isa::detect(), (m, n, k), &a, &b, halves, packed, true);
            assert_close(&got, &reference(m, n, k, &a, &b), k, "proptest");
            let portable = run(Isa::Portable, (m, n, k), &a, &b, halves, packed, false);
            prop_assert!(got.iter().zip(&portable).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}
