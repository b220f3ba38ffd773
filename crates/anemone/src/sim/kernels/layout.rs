//! Data movement: transpose, slice, concat (with interleave) and split, generic over plain
//! data `T` (the executor moves every element type as unsigned integers of its width). Values
//! are moved bit for bit. Reshape has no kernel: a dense row-major buffer already is every
//! reshape of itself, so the plan aliases it.
//!
//! Shapes are first simplified (unit dims dropped, dims that stay adjacent merged), so most
//! real permutations become either a copy of contiguous runs or a batched 2-D transpose, which
//! runs tile by tile to stay in cache, 8 x 8 (fp16) or 4 x 4 (fp32) elements at a time in
//! registers. Large slices and concats split across the rayon threads, and the every-other-
//! element moves of RoPE (slice with step 2, concat of two size-1 pieces) run in wide vectors.

use super::{
    KernelError, PAR_CHUNK, Result, check_len, contiguous_strides, numel, parallel_worth_it,
};
use bytemuck::Pod;
use rayon::prelude::*;

/// Output shape of `transpose(x, perm)`: `out[i] = shape[perm[i]]`.
pub fn transpose_output_shape(shape: &[usize], perm: &[usize]) -> Result<Vec<usize>> {
    check_perm(shape.len(), perm)?;
    Ok(perm.iter().map(|&p| shape[p]).collect())
}

fn check_perm(rank: usize, perm: &[usize]) -> Result<()> {
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(KernelError::new("transpose", format!("perm {perm:?} for rank {rank}")));
    }
    for &p in perm {
        if p >= rank || seen[p] {
            return Err(KernelError::new(
                "transpose",
                format!("perm {perm:?} is not a permutation"),
            ));
        }
        seen[p] = true;
    }
    Ok(())
}

/// The permutation with unit dims dropped and runs that stay adjacent merged: returns the
/// simplified input shape and perm.
fn simplify(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    // Drop unit dims, renumbering the remaining input dims.
    let keep: Vec<usize> = (0..shape.len()).filter(|&d| shape[d] != 1).collect();
    let renum = |d: usize| keep.iter().position(|&k| k == d);
    let p: Vec<usize> = perm.iter().filter_map(|&d| renum(d)).collect();
    let s: Vec<usize> = keep.iter().map(|&d| shape[d]).collect();
    // Groups of output positions whose input dims are consecutive.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &d in &p {
        match groups.last_mut() {
            Some(g) if *g.last().unwrap() + 1 == d => g.push(d),
            _ => groups.push(vec![d]),
        }
    }
    // Input order of the groups.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g][0]);
    let in_shape: Vec<usize> =
        order.iter().map(|&g| groups[g].iter().map(|&d| s[d]).product()).collect();
    let new_perm: Vec<usize> =
        (0..groups.len()).map(|g| order.iter().position(|&o| o == g).unwrap()).collect();
    (in_shape, new_perm)
}

/// `out = transpose(x, perm)`.
pub fn transpose<T: Pod + Send + Sync>(
    x: &[T],
    shape: &[usize],
    perm: &[usize],
    out: &mut [T],
) -> Result<()> {
    check_len("transpose", "input", x.len(), shape)?;
    check_perm(shape.len(), perm)?;
    check_len("transpose", "output", out.len(), shape)?;
    let (s, p) = simplify(shape, perm);
    let r = s.len();
    if r <= 1 {
        out.copy_from_slice(x);
        return Ok(());
    }
    if p[r - 1] == r - 1 {
        // The innermost dim stays innermost: copy contiguous runs.
        let run = s[r - 1];
        strided_copy(x, &s, &p, out, run);
    } else if p[r - 1] == r - 2
        && p[r - 2] == r - 1
        && p[..r - 2].iter().enumerate().all(|(i, &d)| i == d)
    {
        let (rows, cols) = (s[r - 2], s[r - 1]);
        let batch = x.len() / (rows * cols);
        transpose_2d_batched(x, batch, rows, cols, out);
    } else {
        permute_tiled(x, &s, &p, out);
    }
    Ok(())
}

/// Any other permutation that moves the innermost dim (the attention head split
/// `[H, hd, B, S] -> [B, H, S, hd]` and its inverse, say). Two output dims make a 2-D
/// transpose: the one that reads the input's innermost dim (`rows`, contiguous in `x`) and
/// the output's innermost (`cols`, contiguous in `out`). For every index of the other dims,
/// that rows x cols block is moved tile by tile, so both sides stream through cache lines
/// instead of one element per odometer step.
fn permute_tiled<T: Pod + Send + Sync>(x: &[T], s: &[usize], p: &[usize], out: &mut [T]) {
    let r = s.len();
    let in_strides = contiguous_strides(s);
    let out_dims: Vec<usize> = p.iter().map(|&d| s[d]).collect();
    let out_strides = contiguous_strides(&out_dims);
    // `transpose` sends here only perms whose last entry is not r - 1, so q < r - 1.
    let q = p.iter().position(|&d| d == r - 1).unwrap_or(0);
    let (rows, row_dst_stride) = (out_dims[q], out_strides[q]);
    let (cols, col_src_stride) = (out_dims[r - 1], in_strides[p[r - 1]]);
    // Dims after q (other than the innermost) are walked inside a chunk; dims before q
    // select the chunk, a contiguous part of `out` that one task owns.
    let inner_dims: Vec<usize> = (q + 1..r - 1).collect();
    let blocks_per_chunk: usize = inner_dims.iter().map(|&d| out_dims[d]).product();
    let chunk_len = if q == 0 { out.len() } else { out_strides[q - 1] };
    let chunk = |ci: usize, dst: &mut [T]| {
        // Source offset of this chunk's first element: decompose ci over dims 0..q.
        let mut rest = ci;
        let mut chunk_src = 0;
        for d in (0..q).rev() {
            chunk_src += (rest % out_dims[d]) * in_strides[p[d]];
            rest /= out_dims[d];
        }
        for bi in 0..blocks_per_chunk {
            let (mut rest, mut src, mut dst_off) = (bi, chunk_src, 0);
            for &d in inner_dims.iter().rev() {
                let i = rest % out_dims[d];
                rest /= out_dims[d];
                src += i * in_strides[p[d]];
                dst_off += i * out_strides[d];
            }
            for c0 in (0..cols).step_by(TILE) {
                let c1 = (c0 + TILE).min(cols);
                for r0 in (0..rows).step_by(TILE) {
                    let r1 = (r0 + TILE).min(rows);
                    // dst[row][c] = x[c][row] with the input's rows col_src_stride apart.
                    transpose_block(
                        &x[src + c0 * col_src_stride + r0..],
                        col_src_stride,
                        &mut dst[dst_off + r0 * row_dst_stride + c0..],
                        row_dst_stride,
                        c1 - c0,
                        r1 - r0,
                    );
                }
            }
        }
    };
    if parallel_worth_it(out.len()) && chunk_len < out.len() {
        out.par_chunks_mut(chunk_len).enumerate().for_each(|(ci, dst)| chunk(ci, dst));
    } else {
        for (ci, dst) in out.chunks_mut(chunk_len).enumerate() {
            chunk(ci, dst);
        }
    }
}

/// A permutation that keeps the innermost dim: walks the output in order, copying runs of
/// `run` contiguous elements (that dim).
fn strided_copy<T: Copy + Send + Sync>(
    x: &[T],
    s: &[usize],
    p: &[usize],
    out: &mut [T],
    run: usize,
) {
    let in_strides = contiguous_strides(s);
    let out_dims: Vec<usize> = p.iter().map(|&d| s[d]).collect();
    let src_strides: Vec<usize> = p.iter().map(|&d| in_strides[d]).collect();
    // Dims iterated by the odometer: all but the innermost, which is the run.
    let walk = out_dims.len() - 1;
    let offset_of = |mut lin: usize| {
        let mut off = 0;
        for d in (0..walk).rev() {
            off += (lin % out_dims[d]) * src_strides[d];
            lin /= out_dims[d];
        }
        off
    };
    let work = |start_run: usize, chunk: &mut [T]| {
        let mut idx: Vec<usize> = Vec::with_capacity(walk);
        let mut lin = start_run;
        for d in (0..walk).rev() {
            idx.push(lin % out_dims[d]);
            lin /= out_dims[d];
        }
        idx.reverse();
        let mut off = offset_of(start_run);
        for o in chunk.chunks_mut(run) {
            o.copy_from_slice(&x[off..off + run]);
            for d in (0..walk).rev() {
                idx[d] += 1;
                off += src_strides[d];
                if idx[d] < out_dims[d] {
                    break;
                }
                off -= src_strides[d] * idx[d];
                idx[d] = 0;
            }
        }
    };
    if parallel_worth_it(out.len()) {
        let runs_per_task = (PAR_CHUNK / run).max(1);
        out.par_chunks_mut(runs_per_task * run)
            .enumerate()
            .for_each(|(t, c)| work(t * runs_per_task, c));
    } else {
        work(0, out);
    }
}

/// Tile edge of the blocked 2-D transpose.
const TILE: usize = 32;

/// out[b][c][r] = x[b][r][c] for `batch` matrices of rows x cols, tile by tile.
fn transpose_2d_batched<T: Pod + Send + Sync>(
    x: &[T],
    batch: usize,
    rows: usize,
    cols: usize,
    out: &mut [T],
) {
    let one = |src: &[T], dst: &mut [T], c0: usize, c1: usize| {
        // dst holds output rows c0..c1 (each `rows` long).
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            transpose_block(&src[r0 * cols + c0..], cols, &mut dst[r0..], rows, r1 - r0, c1 - c0);
        }
    };
    let mat = rows * cols;
    if parallel_worth_it(out.len()) {
        // Tasks own bands of TILE output rows (input columns) of one matrix.
        out.par_chunks_mut(mat).enumerate().for_each(|(b, dst)| {
            let src = &x[b * mat..(b + 1) * mat];
            dst.par_chunks_mut(TILE * rows).enumerate().for_each(|(band, d)| {
                let c0 = band * TILE;
                one(src, d, c0, (c0 + TILE).min(cols));
            });
        });
    } else {
        for b in 0..batch {
            let src = &x[b * mat..(b + 1) * mat];
            let dst = &mut out[b * mat..(b + 1) * mat];
            for c0 in (0..cols).step_by(TILE) {
                let c1 = (c0 + TILE).min(cols);
                one(src, &mut dst[c0 * rows..c1 * rows], c0, c1);
            }
        }
    }
}

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for an `h` x `w` block. Blocks of 8 x 8
/// two-byte or 4 x 4 four-byte elements move through SSE2 registers (every x86_64 CPU has
/// it), the edges one element at a time.
fn transpose_block<T: Pod>(
    src: &[T],
    src_stride: usize,
    dst: &mut [T],
    dst_stride: usize,
    h: usize,
    w: usize,
) {
    if h == 0 || w == 0 {
        return;
    }
    // Both blocks lie inside their slices (also what makes the vector loads and stores sound).
    assert!((h - 1) * src_stride + w <= src.len() && (w - 1) * dst_stride + h <= dst.len());
    let (mut h_done, mut w_done) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    {
        use std::mem::size_of;
        if size_of::<T>() == 2 {
            if let (Ok(s), Ok(d)) = (
                bytemuck::try_cast_slice::<T, u16>(src),
                bytemuck::try_cast_slice_mut::<T, u16>(dst),
            ) {
                (h_done, w_done) = (h / 8 * 8, w / 8 * 8);
                for r in (0..h_done).step_by(8) {
                    for c in (0..w_done).step_by(8) {
                        // SAFETY: rows r..r + 8 and columns c..c + 8 of both blocks are inside
                        // h x w and w x h, which the assert keeps inside the slices.
                        unsafe {
                            sse2::transpose_8x8_u16(
                                s.as_ptr().add(r * src_stride + c),
                                src_stride,
                                d.as_mut_ptr().add(c * dst_stride + r),
                                dst_stride,
                            )
                        };
                    }
                }
            }
        } else if size_of::<T>() == 4
            && let (Ok(s), Ok(d)) = (
                bytemuck::try_cast_slice::<T, u32>(src),
                bytemuck::try_cast_slice_mut::<T, u32>(dst),
            )
        {
            (h_done, w_done) = (h / 4 * 4, w / 4 * 4);
            for r in (0..h_done).step_by(4) {
                for c in (0..w_done).step_by(4) {
                    // SAFETY: as for the 8 x 8 blocks.
                    unsafe {
                        sse2::transpose_4x4_u32(
                            s.as_ptr().add(r * src_stride + c),
                            src_stride,
                            d.as_mut_ptr().add(c * dst_stride + r),
                            dst_stride,
                        )
                    };
                }
            }
        }
    }
    // What the vector blocks left: the columns past w_done of every row, then the rows past
    // h_done of the columns they covered.
    for c in w_done..w {
        let d = &mut dst[c * dst_stride..c * dst_stride + h];
        for (r, v) in d.iter_mut().enumerate() {
            *v = src[r * src_stride + c];
        }
    }
    for c in 0..w_done {
        for r in h_done..h {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    //! Register transposes of small blocks, SSE2 only (part of the x86_64 baseline).
    use std::arch::x86_64::*;

    /// Transposes the 8 x 8 block of u16 at `src` (rows `ss` apart) into `dst` (rows `ds`
    /// apart): three rounds of interleaves, of 16-, 32- and 64-bit lanes.
    ///
    /// # Safety
    /// Eight elements from `src + r * ss` and from `dst + r * ds`, r in 0..8, must be readable
    /// and writable respectively.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) unsafe fn transpose_8x8_u16(src: *const u16, ss: usize, dst: *mut u16, ds: usize) {
        // SAFETY: the caller guarantees every row is readable.
        let r: [__m128i; 8] =
            std::array::from_fn(|i| unsafe { _mm_loadu_si128(src.add(i * ss).cast()) });
        let a = [
            _mm_unpacklo_epi16(r[0], r[1]),
            _mm_unpackhi_epi16(r[0], r[1]),
            _mm_unpacklo_epi16(r[2], r[3]),
            _mm_unpackhi_epi16(r[2], r[3]),
            _mm_unpacklo_epi16(r[4], r[5]),
            _mm_unpackhi_epi16(r[4], r[5]),
            _mm_unpacklo_epi16(r[6], r[7]),
            _mm_unpackhi_epi16(r[6], r[7]),
        ];
        let b = [
            _mm_unpacklo_epi32(a[0], a[2]),
            _mm_unpackhi_epi32(a[0], a[2]),
            _mm_unpacklo_epi32(a[1], a[3]),
            _mm_unpackhi_epi32(a[1], a[3]),
            _mm_unpacklo_epi32(a[4], a[6]),
            _mm_unpackhi_epi32(a[4], a[6]),
            _mm_unpacklo_epi32(a[5], a[7]),
            _mm_unpackhi_epi32(a[5], a[7]),
        ];
        let c = [
            _mm_unpacklo_epi64(b[0], b[4]),
            _mm_unpackhi_epi64(b[0], b[4]),
            _mm_unpacklo_epi64(b[1], b[5]),
            _mm_unpackhi_epi64(b[1], b[5]),
            _mm_unpacklo_epi64(b[2], b[6]),
            _mm_unpackhi_epi64(b[2], b[6]),
            _mm_unpacklo_epi64(b[3], b[7]),
            _mm_unpackhi_epi64(b[3], b[7]),
        ];
        for (i, v) in c.into_iter().enumerate() {
            // SAFETY: the caller guarantees every row is writable.
            unsafe { _mm_storeu_si128(dst.add(i * ds).cast(), v) };
        }
    }

    /// Transposes the 4 x 4 block of u32 at `src` (rows `ss` apart) into `dst` (rows `ds`
    /// apart).
    ///
    /// # Safety
    /// As [`transpose_8x8_u16`], with four elements per row.
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) unsafe fn transpose_4x4_u32(src: *const u32, ss: usize, dst: *mut u32, ds: usize) {
        // SAFETY: the caller guarantees every row is readable.
        let r: [__m128i; 4] =
            std::array::from_fn(|i| unsafe { _mm_loadu_si128(src.add(i * ss).cast()) });
        let a = [
            _mm_unpacklo_epi32(r[0], r[1]),
            _mm_unpackhi_epi32(r[0], r[1]),
            _mm_unpacklo_epi32(r[2], r[3]),
            _mm_unpackhi_epi32(r[2], r[3]),
        ];
        let c = [
            _mm_unpacklo_epi64(a[0], a[2]),
            _mm_unpackhi_epi64(a[0], a[2]),
            _mm_unpacklo_epi64(a[1], a[3]),
            _mm_unpackhi_epi64(a[1], a[3]),
        ];
        for (i, v) in c.into_iter().enumerate() {
            // SAFETY: the caller guarantees every row is writable.
            unsafe { _mm_storeu_si128(dst.add(i * ds).cast(), v) };
        }
    }
}

/// One axis of a slice, resolved: elements `start, start + stride, ...`, `len` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceAxis {
    /// Index of the first element taken.
    pub start: usize,
    /// Step between taken elements; negative walks the axis backwards.
    pub stride: isize,
    /// Number of elements taken.
    pub len: usize,
}

impl SliceAxis {
    /// The whole axis.
    pub fn full(dim: usize) -> Self {
        SliceAxis { start: 0, stride: 1, len: dim }
    }
}

/// Resolves numpy/MIL `begin:end:stride` on an axis of length `dim`: negative indices count
/// from the end, out-of-range ones clamp, a mask means "from the start" / "to the end" in the
/// direction of the stride.
pub fn resolve_slice(
    dim: usize,
    begin: i64,
    end: i64,
    stride: i64,
    begin_mask: bool,
    end_mask: bool,
) -> Result<SliceAxis> {
    if stride == 0 {
        return Err(KernelError::new("slice", "stride 0"));
    }
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v + d } else { v };
    let (start, stop) = if stride > 0 {
        let s = if begin_mask { 0 } else { norm(begin).clamp(0, d) };
        let e = if end_mask { d } else { norm(end).clamp(0, d) };
        (s, e)
    } else {
        let s = if begin_mask { d - 1 } else { norm(begin).clamp(-1, d - 1) };
        let e = if end_mask { -1 } else { norm(end).clamp(-1, d - 1) };
        (s, e)
    };
    let len = if stride > 0 {
        if stop > start { (stop - start + stride - 1) / stride } else { 0 }
    } else if start > stop {
        (start - stop + (-stride) - 1) / (-stride)
    } else {
        0
    };
    Ok(SliceAxis { start: start.max(0) as usize, stride: stride as isize, len: len as usize })
}

/// `out = x[axes[0], axes[1], ...]`; `out` holds the product of the `len`s.
pub fn slice<T: Copy + Send + Sync>(
    x: &[T],
    shape: &[usize],
    axes: &[SliceAxis],
    out: &mut [T],
) -> Result<()> {
    check_len("slice", "input", x.len(), shape)?;
    if axes.len() != shape.len() {
        return Err(KernelError::new(
            "slice",
            format!("{} axes for rank {}", axes.len(), shape.len()),
        ));
    }
    for (i, (a, &d)) in axes.iter().zip(shape).enumerate() {
        let last = a.start as isize + (a.len as isize - 1) * a.stride;
        if a.len > 0 && (a.start >= d || last < 0 || last >= d as isize) {
            return Err(KernelError::new("slice", format!("axis {i}: {a:?} outside dim {d}")));
        }
    }
    let out_shape: Vec<usize> = axes.iter().map(|a| a.len).collect();
    check_len("slice", "output", out.len(), &out_shape)?;
    if out.is_empty() {
        return Ok(());
    }
    let (base, merged) = slice_walk(shape, axes);
    let Some(&(inner_len, inner_step)) = merged.last() else {
        out[0] = x[base as usize];
        return Ok(());
    };
    let outer = &merged[..merged.len() - 1];
    // The input offset of output row `r` (each row `inner_len` long), and its index per outer
    // axis.
    let row_start = |r: usize| -> (isize, Vec<usize>) {
        let mut idx = vec![0usize; outer.len()];
        let (mut rest, mut off) = (r, base);
        for d in (0..outer.len()).rev() {
            idx[d] = rest % outer[d].0;
            rest /= outer[d].0;
            off += idx[d] as isize * outer[d].1;
        }
        (off, idx)
    };
    // Rows `r0..` of the output into `chunk`.
    let rows_from = |r0: usize, chunk: &mut [T]| {
        let (mut off, mut idx) = row_start(r0);
        for o in chunk.chunks_mut(inner_len) {
            copy_strided(x, off, inner_step, o);
            for d in (0..outer.len()).rev() {
                idx[d] += 1;
                off += outer[d].1;
                if idx[d] < outer[d].0 {
                    break;
                }
                off -= outer[d].1 * idx[d] as isize;
                idx[d] = 0;
            }
        }
    };
    let rows = out.len() / inner_len;
    if !parallel_worth_it(out.len()) {
        rows_from(0, out);
    } else if inner_len < PAR_CHUNK {
        // Tasks own whole rows.
        let per_task = PAR_CHUNK.div_ceil(inner_len);
        out.par_chunks_mut(per_task * inner_len)
            .enumerate()
            .for_each(|(t, chunk)| rows_from(t * per_task, chunk));
    } else {
        // Long rows (the big slices of a weight or activation) are split themselves.
        for (r, row) in out.chunks_mut(inner_len).enumerate().take(rows) {
            let off = row_start(r).0;
            row.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(t, piece)| {
                copy_strided(x, off + (t * PAR_CHUNK) as isize * inner_step, inner_step, piece);
            });
        }
    }
    Ok(())
}

/// How a slice walks its input (the axes already checked against `shape`): the offset of its
/// first element, and `(len, step in elements)` per axis, outermost first, with axes of one
/// element dropped and an axis merged into the next inner one when it steps exactly over it.
/// Taking every other element of [1, 16, 16384, 2] becomes one axis of 262,144 with step 2,
/// so the copy runs long inner rows instead of an odometer step per element; the plan also
/// reads it to see when a matmul can take a slice's rows in place.
pub(crate) fn slice_walk(shape: &[usize], axes: &[SliceAxis]) -> (isize, Vec<(usize, isize)>) {
    let strides = contiguous_strides(shape);
    let base: isize = axes.iter().zip(&strides).map(|(a, &s)| (a.start * s) as isize).sum();
    let mut merged: Vec<(usize, isize)> = Vec::new();
    for (a, &st) in axes.iter().zip(&strides).rev() {
        if a.len == 1 {
            continue;
        }
        let step = a.stride * st as isize;
        match merged.last_mut() {
            Some(inner) if step == inner.1 * inner.0 as isize => inner.0 *= a.len,
            _ => merged.push((a.len, step)),
        }
    }
    merged.reverse();
    (base, merged)
}

/// `out[j] = x[off + j * step]`: a contiguous copy, the every-other-element gather of RoPE's
/// pair split in wide vectors, or element by element.
fn copy_strided<T: Copy>(x: &[T], off: isize, step: isize, out: &mut [T]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let start = off as usize;
    match step {
        1 => out.copy_from_slice(&x[start..start + n]),
        2 => {
            // Whole pairs for all but the last element, whose partner may lie past the end.
            let (head, last) = out.split_at_mut(n - 1);
            let pairs = &x[start..start + 2 * (n - 1)];
            super::with_wide_simd(
                #[inline(always)]
                || {
                    for (o, p) in head.iter_mut().zip(pairs.chunks_exact(2)) {
                        *o = p[0];
                    }
                },
            );
            last[0] = x[start + 2 * (n - 1)];
        }
        _ => {
            for (j, v) in out.iter_mut().enumerate() {
                *v = x[(off + j as isize * step) as usize];
            }
        }
    }
}

/// Output shape of a concat along `axis`; with `interleave` all inputs must have the same
/// shape and the axis grows by their count all the same.
pub fn concat_output_shape(
    shapes: &[&[usize]],
    axis: usize,
    interleave: bool,
) -> Result<Vec<usize>> {
    let first = shapes.first().ok_or_else(|| KernelError::new("concat", "no inputs"))?;
    if axis >= first.len() {
        return Err(KernelError::new("concat", format!("axis {axis} for rank {}", first.len())));
    }
    let mut out = first.to_vec();
    out[axis] = 0;
    for s in shapes {
        let same_rest = s.len() == first.len()
            && s.iter().zip(first.iter()).enumerate().all(|(i, (a, b))| i == axis || a == b);
        if !same_rest || (interleave && s[axis] != first[axis]) {
            return Err(KernelError::new(
                "concat",
                format!("input shape {s:?} does not fit {first:?} along axis {axis}"),
            ));
        }
        out[axis] += s[axis];
    }
    Ok(out)
}

/// Concatenates `inputs` (data, shape) along `axis`. With `interleave`, the output takes one
/// slice of each input in turn along the axis: `out[i::n] = inputs[i]`.
pub fn concat<T: Copy + Send + Sync>(
    inputs: &[(&[T], &[usize])],
    axis: usize,
    interleave: bool,
    out: &mut [T],
) -> Result<()> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|(_, s)| *s).collect();
    let out_shape = concat_output_shape(&shapes, axis, interleave)?;
    for (x, s) in inputs {
        check_len("concat", "input", x.len(), s)?;
    }
    check_len("concat", "output", out.len(), &out_shape)?;
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    // Runs of one element (concat along the innermost axis of size-1 pieces: the pair swap
    // of RoPE) are moved element by element rather than by a copy call each.
    if !interleave && inner == 1 && inputs.iter().all(|(_, s)| s[axis] == 1) {
        if let [(a, _), (b, _)] = inputs {
            let pairs = |chunk: usize, o: &mut [T]| {
                let (a, b) = (&a[chunk * PAR_CHUNK..], &b[chunk * PAR_CHUNK..]);
                super::with_wide_simd(
                    #[inline(always)]
                    || {
                        for (p, (&x, &y)) in o.chunks_exact_mut(2).zip(a.iter().zip(b.iter())) {
                            p[0] = x;
                            p[1] = y;
                        }
                    },
                )
            };
            if parallel_worth_it(out.len()) {
                out.par_chunks_mut(2 * PAR_CHUNK).enumerate().for_each(|(t, o)| pairs(t, o));
            } else {
                pairs(0, out);
            }
            return Ok(());
        }
        let n = inputs.len();
        for (i, (x, _)) in inputs.iter().enumerate() {
            for (o, v) in out[i..].iter_mut().step_by(n).zip(x.iter()) {
                *o = *v;
            }
        }
        return Ok(());
    }
    if outer == 1 && !interleave && parallel_worth_it(out.len()) {
        // One run per input (a concat along the outermost axis that is not 1): each long copy
        // is split across the threads.
        let mut rest = &mut *out;
        for (x, _) in inputs {
            let (o, r) = std::mem::take(&mut rest).split_at_mut(x.len());
            o.par_chunks_mut(PAR_CHUNK)
                .zip(x.par_chunks(PAR_CHUNK))
                .for_each(|(o, x)| o.copy_from_slice(x));
            rest = r;
        }
        return Ok(());
    }
    let mut pos = 0;
    for o in 0..outer {
        if interleave {
            let d = inputs[0].1[axis];
            for j in 0..d {
                for (x, _) in inputs {
                    let s = (o * d + j) * inner;
                    out[pos..pos + inner].copy_from_slice(&x[s..s + inner]);
                    pos += inner;
                }
            }
        } else {
            for (x, s) in inputs {
                let run = s[axis] * inner;
                out[pos..pos + run].copy_from_slice(&x[o * run..(o + 1) * run]);
                pos += run;
            }
        }
    }
    debug_assert_eq!(pos, numel(&out_shape));
    Ok(())
}

/// Splits `x` along `axis` into pieces of `sizes[i]` elements of that axis, written to
/// `outs[i]`; the sizes must add up to the dim.
pub fn split<T: Copy>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    sizes: &[usize],
    outs: &mut [&mut [T]],
) -> Result<()> {
    check_len("split", "input", x.len(), shape)?;
    if axis >= shape.len()
        || sizes.iter().sum::<usize>() != shape[axis]
        || sizes.len() != outs.len()
    {
        return Err(KernelError::new(
            "split",
            format!(
                "sizes {sizes:?} do not split axis {axis} of {shape:?} into {} outputs",
                outs.len()
            ),
        ));
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    for (o, &s) in outs.iter().zip(sizes) {
        if o.len() != outer * s * inner {
            return Err(KernelError::new(
                "split",
                format!("output of {} elements, want {}", o.len(), outer * s * inner),
            ));
        }
    }
    let mut src = 0;
    for b in 0..outer {
        for (o, &s) in outs.iter_mut().zip(sizes) {
            let run = s * inner;
            o[b * run..(b + 1) * run].copy_from_slice(&x[src..src + run]);
            src += run;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn iota(n: usize) -> Vec<i32> {
        (0..n as i32).collect()
    }

    /// Naive transpose by index arithmetic.
    pub(super) fn reference_transpose(x: &[i32], shape: &[usize], perm: &[usize]) -> Vec<i32> {
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let in_strides = contiguous_strides(shape);
        (0..x.len())
            .map(|lin| {
                let (mut rest, mut off) = (lin, 0);
                for d in (0..out_shape.len()).rev() {
                    off += (rest % out_shape[d]) * in_strides[perm[d]];
                    rest /= out_shape[d];
                }
                x[off]
            })
            .collect()
    }

    #[test]
    fn transposes_match_naive_indexing() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[3, 17], &[1, 0]),
            (&[2, 3, 4, 5], &[0, 2, 1, 3]),
            (&[2, 3, 4, 5], &[0, 1, 3, 2]),
            (&[2, 3, 4, 5], &[3, 2, 1, 0]),
            (&[2, 3, 4, 5], &[1, 3, 0, 2]),
            (&[1, 33, 1, 65], &[0, 3, 2, 1]),
            (&[4, 1, 6], &[2, 1, 0]),
            (&[5], &[0]),
            (&[], &[]),
            (&[7, 1], &[1, 0]),
            (&[2, 200, 300], &[0, 2, 1]),
            (&[64, 40, 50], &[1, 2, 0]),
            // Head split and merge of attention at training size: tiles cross block edges,
            // and the 1.2M elements split across threads.
            (&[6, 48, 4, 256], &[2, 0, 3, 1]),
            (&[4, 6, 256, 48], &[1, 3, 0, 2]),
            (&[3, 37, 5, 70], &[2, 0, 3, 1]),
            (&[70, 3, 37, 5], &[3, 0, 2, 1]),
            (&[9, 2, 33], &[2, 0, 1]),
            (&[2, 3, 4, 5, 6], &[4, 0, 3, 1, 2]),
        ];
        for (shape, perm) in cases {
            let x = iota(numel(shape));
            let want = reference_transpose(&x, shape, perm);
            let mut out = vec![0; x.len()];
            transpose(&x, shape, perm, &mut out).unwrap();
            assert_eq!(out, want, "{shape:?} {perm:?}");
            // Two- and eight-byte elements: the 8 x 8 register blocks (and their edges) of
            // fp16, and the element-by-element path.
            let x16: Vec<u16> = x.iter().map(|&v| v as u16).collect();
            let mut out16 = vec![0u16; x.len()];
            transpose(&x16, shape, perm, &mut out16).unwrap();
            assert!(out16.iter().zip(&want).all(|(&a, &b)| a == b as u16), "{shape:?} {perm:?}");
            let x64: Vec<u64> = x.iter().map(|&v| v as u64 * 3).collect();
            let mut out64 = vec![0u64; x.len()];
            transpose(&x64, shape, perm, &mut out64).unwrap();
            assert!(
                out64.iter().zip(&want).all(|(&a, &b)| a == b as u64 * 3),
                "{shape:?} {perm:?}"
            );
        }
        assert!(transpose(&[1, 2], &[2], &[1], &mut [0, 0]).is_err());
        assert!(transpose(&[1, 2], &[1, 2], &[0, 0], &mut [0, 0]).is_err());
    }

    #[test]
    fn transpose_works_for_floats_and_bytes() {
        let x: Vec<u8> = (0..6).collect();
        let mut out = vec![0u8; 6];
        transpose(&x, &[2, 3], &[1, 0], &mut out).unwrap();
        assert_eq!(out, vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn slices_with_strides_and_negative_steps() {
        let x = iota(4 * 5);
        let a0 = resolve_slice(4, 1, -1, 1, false, false).unwrap();
        let a1 = resolve_slice(5, 0, 0, 2, false, true).unwrap();
        assert_eq!(a0, SliceAxis { start: 1, stride: 1, len: 2 });
        assert_eq!(a1, SliceAxis { start: 0, stride: 2, len: 3 });
        let mut out = vec![0; 6];
        slice(&x, &[4, 5], &[a0, a1], &mut out).unwrap();
        assert_eq!(out, vec![5, 7, 9, 10, 12, 14]);
        // Reversed rows and columns, numpy's x[::-1, 3:0:-2].
        let r0 = resolve_slice(4, 0, 0, -1, true, true).unwrap();
        let r1 = resolve_slice(5, 3, 0, -2, false, false).unwrap();
        assert_eq!(r1, SliceAxis { start: 3, stride: -2, len: 2 });
        let mut out = vec![0; 8];
        slice(&x, &[4, 5], &[r0, r1], &mut out).unwrap();
        assert_eq!(out, vec![18, 16, 13, 11, 8, 6, 3, 1]);
        // Clamping and empty results.
        assert_eq!(resolve_slice(5, -100, 100, 1, false, false).unwrap().len, 5);
        assert_eq!(resolve_slice(5, 4, 2, 1, false, false).unwrap().len, 0);
        assert!(resolve_slice(5, 0, 5, 0, false, false).is_err());
        // Every other element of [1, 4, 6, 2] (RoPE's even/odd split): one long strided run.
        let x = iota(48);
        let axes = [
            SliceAxis::full(1),
            SliceAxis::full(4),
            SliceAxis::full(6),
            SliceAxis { start: 1, stride: 1, len: 1 },
        ];
        let mut out = vec![0; 24];
        slice(&x, &[1, 4, 6, 2], &axes, &mut out).unwrap();
        assert_eq!(out, (0..24).map(|i| 2 * i + 1).collect::<Vec<i32>>());
        let x = iota(4 * 5);
        let bad = SliceAxis { start: 3, stride: 1, len: 3 };
        assert!(slice(&x, &[4, 5], &[SliceAxis::full(4), bad], &mut [0; 12]).is_err());
    }

    #[test]
    fn concat_plain_and_interleaved() {
        let a = iota(6); // [2, 3]
        let b: Vec<i32> = (100..104).collect(); // [2, 2]
        let mut out = vec![0; 10];
        concat(&[(&a, &[2, 3]), (&b, &[2, 2])], 1, false, &mut out).unwrap();
        assert_eq!(out, vec![0, 1, 2, 100, 101, 3, 4, 5, 102, 103]);
        let mut out = vec![0; 12];
        concat(&[(&a, &[2, 3]), (&a, &[2, 3])], 0, false, &mut out).unwrap();
        assert_eq!(out, [a.clone(), a.clone()].concat());
        // interleave: out[i::n] = in_i along the axis.
        let c: Vec<i32> = (10..16).collect();
        let mut out = vec![0; 12];
        concat(&[(&a, &[2, 3]), (&c, &[2, 3])], 1, true, &mut out).unwrap();
        assert_eq!(out, vec![0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15]);
        concat(&[(&a, &[2, 3]), (&c, &[2, 3])], 0, true, &mut out).unwrap();
        assert_eq!(out, vec![0, 1, 2, 10, 11, 12, 3, 4, 5, 13, 14, 15]);
        // Size-1 pieces along the innermost axis (RoPE's pair swap), three of them.
        let (p, q, r) = (iota(6), (50..56).collect::<Vec<i32>>(), (80..86).collect::<Vec<i32>>());
        let mut out = vec![0; 18];
        let s: &[usize] = &[1, 2, 3, 1];
        concat(&[(&p, s), (&q, s), (&r, s)], 3, false, &mut out).unwrap();
        let want: Vec<i32> = (0..6).flat_map(|i| [p[i], q[i], r[i]]).collect();
        assert_eq!(out, want);
        assert!(concat(&[(&a, &[2, 3]), (&b, &[2, 2])], 1, true, &mut [0; 10]).is_err());
        assert!(concat(&[(&a, &[2, 3]), (&b, &[2, 2])], 0, false, &mut [0; 10]).is_err());
    }

    /// `x[axes]` by index arithmetic.
    fn reference_slice(x: &[i32], dims: &[usize], axes: &[SliceAxis]) -> Vec<i32> {
        let strides = contiguous_strides(dims);
        let n: usize = axes.iter().map(|a| a.len).product();
        (0..n)
            .map(|lin| {
                let (mut rest, mut off) = (lin, 0isize);
                for d in (0..dims.len()).rev() {
                    let i = rest % axes[d].len;
                    rest /= axes[d].len;
                    off += (axes[d].start as isize + i as isize * axes[d].stride)
                        * strides[d] as isize;
                }
                x[off as usize]
            })
            .collect()
    }

    #[test]
    fn large_slices_and_concats_match_index_arithmetic() {
        // Big enough to split across threads: long rows split themselves (with the pair
        // gather), many short rows go to tasks whole, and a strided step of 3.
        let dims = [1, 4, 40_000, 2];
        let x = iota(numel(&dims));
        for start in [0, 1] {
            let axes = [
                SliceAxis::full(1),
                SliceAxis::full(4),
                SliceAxis::full(40_000),
                SliceAxis { start, stride: 1, len: 1 },
            ];
            let mut out = vec![0; 160_000];
            slice(&x, &dims, &axes, &mut out).unwrap();
            assert_eq!(out, reference_slice(&x, &dims, &axes), "start {start}");
        }
        let dims = [700, 600];
        let x = iota(numel(&dims));
        for axes in [
            [
                SliceAxis { start: 5, stride: 1, len: 690 },
                SliceAxis { start: 3, stride: 1, len: 401 },
            ],
            [
                SliceAxis { start: 699, stride: -1, len: 700 },
                SliceAxis { start: 1, stride: 3, len: 199 },
            ],
            [
                SliceAxis { start: 2, stride: 2, len: 300 },
                SliceAxis { start: 599, stride: -2, len: 300 },
            ],
        ] {
            let mut out = vec![0; axes[0].len * axes[1].len];
            slice(&x, &dims, &axes, &mut out).unwrap();
            assert_eq!(out, reference_slice(&x, &dims, &axes), "{axes:?}");
        }
        let dims = [1, 300_001];
        let x = iota(numel(&dims));
        let axes = [SliceAxis::full(1), SliceAxis { start: 1, stride: 2, len: 150_000 }];
        let mut out = vec![0; 150_000];
        slice(&x, &dims, &axes, &mut out).unwrap();
        assert_eq!(out, reference_slice(&x, &dims, &axes));

        // The pair swap of RoPE at training size, and a concat of long runs along the channels.
        let (a, b) = (iota(140_001), (0..140_001).map(|v| -v).collect::<Vec<i32>>());
        let s: &[usize] = &[1, 140_001, 1];
        let mut out = vec![0; 280_002];
        concat(&[(&a, s), (&b, s)], 2, false, &mut out).unwrap();
        assert_eq!(out, (0..140_001).flat_map(|i| [a[i], b[i]]).collect::<Vec<i32>>());
        let c = (0..70_000).map(|v| v * 7).collect::<Vec<i32>>();
        let mut out = vec![0; 350_002];
        let (sa, sc): (&[usize], &[usize]) = (&[1, 140_001, 1], &[1, 70_000, 1]);
        concat(&[(&a, sa), (&c, sc), (&b, sa)], 1, false, &mut out).unwrap();
        assert_eq!(out, [a.clone(), c, b].concat());
    }

    #[test]
    fn split_inverts_concat() {
        let x = iota(2 * 5 * 3);
        let (mut p, mut q) = (vec![0; 2 * 2 * 3], vec![0; 2 * 3 * 3]);
        split(&x, &[2, 5, 3], 1, &[2, 3], &mut [&mut p, &mut q]).unwrap();
        let mut back = vec![0; x.len()];
        concat(&[(&p, &[2, 2, 3]), (&q, &[2, 3, 3])], 1, false, &mut back).unwrap();
        assert_eq!(back, x);
        assert!(split(&x, &[2, 5, 3], 1, &[2, 2], &mut [&mut p, &mut q]).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use tests::{iota, reference_transpose};

    /// A shape of rank 0..=5 with small dims and a permutation of it.
    fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        prop::collection::vec(1usize..5, 0..=5).prop_flat_map(|shape| {
            let perm: Vec<usize> = (0..shape.len()).collect();
            (Just(shape), Just(perm).prop_shuffle())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn transpose_matches_index_arithmetic(
            (shape, perm) in prop::collection::vec(1usize..40, 2..=4).prop_flat_map(|shape| {
                let perm: Vec<usize> = (0..shape.len()).collect();
                (Just(shape), Just(perm).prop_shuffle())
            })
        ) {
            let x = iota(numel(&shape));
            let mut out = vec![0; x.len()];
            transpose(&x, &shape, &perm, &mut out).unwrap();
            prop_assert_eq!(out, reference_transpose(&x, &shape, &perm));
        }

        #[test]
        fn transpose_then_inverse_is_identity((shape, perm) in shape_and_perm()) {
            let x: Vec<u16> = (0..numel(&shape) as u16).collect();
            let mut y = vec![0; x.len()];
            transpose(&x, &shape, &perm, &mut y).unwrap();
            let out_shape = transpose_output_shape(&shape, &perm).unwrap();
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            let mut back = vec![0; x.len()];
            transpose(&y, &out_shape, &inverse, &mut back).unwrap();
            prop_assert_eq!(back, x);
        }

        #[test]
        fn slice_matches_index_arithmetic(
            dims in prop::collection::vec(1usize..6, 1..=3),
            picks in prop::collection::vec((-7i64..7, -7i64..7, prop_oneof![-3i64..0, 1i64..4]), 3),
        ) {
            let x: Vec<i32> = (0..numel(&dims) as i32).collect();
            let axes: Vec<SliceAxis> = dims
                .iter()
                .zip(&picks)
                .map(|(&d, &(b, e, s))| resolve_slice(d, b, e, s, false, false).unwrap())
                .collect();
            let mut out = vec![0; axes.iter().map(|a| a.len).product()];
            slice(&x, &dims, &axes, &mut out).unwrap();
            let strides = contiguous_strides(&dims);
            for (lin, got) in out.iter().enumerate() {
                let mut rest = lin;
                let mut off = 0isize;
                for d in (0..dims.len()).rev() {
                    let i = rest % axes[d].len;
                    rest /= axes[d].len;
                    off += (axes[d].start as isize + i as isize * axes[d].stride) * strides[d] as isize;
                }
                prop_assert_eq!(*got, x[off as usize]);
            }
        }
    }
}
