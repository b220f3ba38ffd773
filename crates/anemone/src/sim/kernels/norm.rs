//! Kernels of linear layers, normalizations and pooling: `linear` (a GEMM through
//! [`super::matmul`]), `layer_norm`, `batch_norm`, `instance_norm`, `max_pool`, `avg_pool`;
//! and of two more ops that work per channel or per plane: `prelu` and `upsample_bilinear`.
//!
//! Numerics. Every float kernel loads to f32, computes in f32 and rounds once per output; fp16
//! kernels read NaN as +inf and store +0 where f32 gives NaN (`numerics`). In detail:
//! - linear: `x W^T` accumulated in f32 by the matmul kernel's GEMM, the bias added to the f32
//!   accumulator, then the multiply-accumulate output port (saturation at 2^15 for fp16) and
//!   one rounding. This differs from conv, whose bias is added in fp16 after the rounded
//!   accumulator (measured for conv, see `numerics`); no measurement of linear's bias is known,
//!   so linear keeps the single rounding of MIL's definition.
//! - layer_norm, instance_norm: mean and variance in f32, two passes (the mean first, then the
//!   mean of squared deviations, which avoids the cancellation of `E[x^2] - E[x]^2`), the
//!   population variance (divided by the count, as coremltools' reference does), then
//!   `rsqrt(var + eps)` in f32, `(x - mean) * rsqrt * gamma + beta` in f32, one rounding.
//! - batch_norm: per channel `gamma / sqrt(var + eps)` in f32, then `(x - mean) * that + beta`
//!   in f32, one rounding.
//! - max_pool: exact (a comparison); padding never wins, a window that covers only padding
//!   gives -inf. avg_pool: the window's sum in f32 divided by its count, one rounding; a window
//!   with nothing to count gives 0.
//! - prelu: `alpha[c] x` for negative x in f32, one rounding (positive x pass unchanged).
//! - upsample_bilinear: sampling positions in f64 from the registry's [`BilinearGrid`], their
//!   fractions as f32 weights, then `(1 - t) a + t b` along the width and along the height in
//!   f32 and one rounding; a weight of exactly 0 takes the first neighbour alone, so an
//!   infinity beside it does not turn the result into 0 * inf.
//!
//! The ANE's own algorithms for these ops (how it forms the mean, whether it rounds between
//! steps) are not publicly measured; the simulator's results are the correctly computed values
//! rounded once, which the hardware may miss by an ulp or more.

use rayon::prelude::*;

pub use anemone_mil::ops::BilinearGrid;

use super::gemm::{self, Epilogue, Operand, Port, Side, View};
use super::matmul::{self, MatmulInput};
use super::{
    Element, KernelError, PAR_CHUNK, Result, check_len, load_ane, numel, parallel_worth_it,
};
use crate::sim::numerics;

/// Checks `x [*batch, d_in]` against `weight [d_out, d_in]`; returns (rows, d_in, d_out).
fn linear_dims(kernel: &'static str, x_shape: &[usize], w_shape: &[usize]) -> Result<[usize; 3]> {
    let [d_out, d_in] = *w_shape else {
        return Err(KernelError::new(
            kernel,
            format!("weight has shape {w_shape:?}, not [out_features, in_features]"),
        ));
    };
    let Some((&last, lead)) = x_shape.split_last() else {
        return Err(KernelError::new(kernel, "x is a scalar; linear needs rank 1 or more"));
    };
    if last != d_in {
        return Err(KernelError::new(
            kernel,
            format!("x {x_shape:?} has {last} features but weight {w_shape:?} takes {d_in}"),
        ));
    }
    Ok([numel(lead), d_in, d_out])
}

/// `out = x weight^T + bias` for `x [*batch, d_in]`, `weight [d_out, d_in]`, `bias [d_out]`
/// (given as f32; NaN read as +inf for an fp16 output), `out [*batch, d_out]`. The leading
/// dims of x are flattened into the rows of one GEMM. Operand types may differ, e.g. fp16
/// activations with weights the plan widened to f32 once (an exact widening).
pub fn linear<X: Element, W: Element, O: Element>(
    x: &[X],
    x_shape: &[usize],
    weight: &[W],
    w_shape: &[usize],
    bias: Option<&[f32]>,
    out: &mut [O],
) -> Result<()> {
    linear_inputs(x, x_shape, MatmulInput::Values(weight), w_shape, bias, out)
}

/// [`linear`] with a weight that may have been packed ahead: by
/// [`pack_operand`](matmul::pack_operand) with its shape, transposed, as the right operand.
///
/// The bias joins each f32 sum before the output port (it is the accumulator's initial value
/// on the ANE's datapath), and the result is rounded once to the output type.
pub fn linear_inputs<X: Element, W: Element, O: Element>(
    x: &[X],
    x_shape: &[usize],
    weight: MatmulInput<'_, W>,
    w_shape: &[usize],
    bias: Option<&[f32]>,
    out: &mut [O],
) -> Result<()> {
    const KERNEL: &str = "linear";
    let [rows, d_in, d_out] = linear_dims(KERNEL, x_shape, w_shape)?;
    check_len(KERNEL, "x", x.len(), x_shape)?;
    if let MatmulInput::Values(w) = weight {
        check_len(KERNEL, "weight", w.len(), w_shape)?;
    }
    check_len(KERNEL, "output", out.len(), &[rows, d_out])?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", b.len(), &[d_out])?;
    }
    let bias: Option<Vec<f32>> = bias.map(|b| {
        if O::ANE_RULES { b.iter().map(|&v| numerics::ane_read(v)).collect() } else { b.to_vec() }
    });
    let lhs = Operand::View(View {
        data: gemm::elems(x)?,
        offset: 0,
        row_stride: d_in as isize,
        col_stride: 1,
    });
    let rhs = matmul::side_source(weight, w_shape, true, Side::Rhs)?;
    let rhs = rhs.operand(w_shape, true, Side::Rhs, 0);
    let port = if O::ANE_RULES { Port::AneSaturate } else { Port::Ieee };
    let epilogue = Epilogue { port, bias: None, col_bias: bias.as_deref() };
    gemm::gemm(rows, d_out, d_in, lhs, rhs, gemm::out(out)?, d_out, epilogue, true)
}

/// linear on int32 operands, with numpy's int32 arithmetic (wrapping on overflow), which is
/// what coremltools' reference evaluation computes.
pub fn linear_i32(
    x: &[i32],
    x_shape: &[usize],
    weight: &[i32],
    w_shape: &[usize],
    bias: Option<&[i32]>,
    out: &mut [i32],
) -> Result<()> {
    const KERNEL: &str = "linear";
    let [rows, d_in, d_out] = linear_dims(KERNEL, x_shape, w_shape)?;
    check_len(KERNEL, "x", x.len(), x_shape)?;
    check_len(KERNEL, "weight", weight.len(), w_shape)?;
    check_len(KERNEL, "output", out.len(), &[rows, d_out])?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", b.len(), &[d_out])?;
    }
    if d_out == 0 {
        return Ok(());
    }
    for (r, o_row) in out.chunks_exact_mut(d_out).enumerate() {
        let x_row = &x[r * d_in..(r + 1) * d_in];
        for (o, v) in o_row.iter_mut().enumerate() {
            let w_row = &weight[o * d_in..(o + 1) * d_in];
            let start = bias.map_or(0, |b| b[o]);
            *v = x_row
                .iter()
                .zip(w_row)
                .fold(start, |acc, (&a, &w)| acc.wrapping_add(a.wrapping_mul(w)));
        }
    }
    Ok(())
}

/// Sum of a slice in f32 with 8 interleaved partial sums (the loop vectorizes).
#[inline(always)]
fn sum_f32(xs: &[f32]) -> f32 {
    let mut part = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (p, v) in part.iter_mut().zip(c) {
            *p += v;
        }
    }
    tail.iter().fold(part.iter().sum::<f32>(), |s, v| s + v)
}

/// Sum of squared deviations from `mean`, like [`sum_f32`].
#[inline(always)]
fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
    let mut part = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (p, v) in part.iter_mut().zip(c) {
            let d = v - mean;
            *p += d * d;
        }
    }
    tail.iter().fold(part.iter().sum::<f32>(), |s, v| s + (v - mean) * (v - mean))
}

/// Replaces a group by `(x - mean) * rsqrt(var + eps)`, all in f32: the mean first, then the
/// population variance as the mean of squared deviations (two passes), then the reciprocal
/// square root. An empty group is left alone.
#[inline(always)]
fn standardize(group: &mut [f32], epsilon: f32) {
    if group.is_empty() {
        return;
    }
    let n = group.len() as f32;
    let mean = sum_f32(group) / n;
    let var = sum_sq_dev(group, mean) / n;
    let rstd = 1.0 / (var + epsilon).sqrt();
    for v in group.iter_mut() {
        *v = (*v - mean) * rstd;
    }
}

/// Per-element scale and shift of a standardized group (layer_norm's gamma and beta).
#[inline(always)]
fn affine(group: &mut [f32], gamma: Option<&[f32]>, beta: Option<&[f32]>) {
    match (gamma, beta) {
        (Some(g), Some(b)) => {
            for ((v, &g), &b) in group.iter_mut().zip(g).zip(b) {
                *v = *v * g + b;
            }
        }
        (Some(g), None) => {
            for (v, &g) in group.iter_mut().zip(g) {
                *v *= g;
            }
        }
        (None, Some(b)) => {
            for (v, &b) in group.iter_mut().zip(b) {
                *v += b;
            }
        }
        (None, None) => {}
    }
}

/// Runs `f(row_index, row)` over the contiguous rows of `row_len` elements of `x`, each loaded
/// to f32 (NaN read as +inf for fp16), and stores every row into `out` with one rounding
/// (NaN results as +0 for fp16). Rows are split across threads when there are many.
fn for_rows<T: Element, F>(x: &[T], out: &mut [T], row_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if row_len == 0 || out.is_empty() {
        return;
    }
    let rows_per_chunk = PAR_CHUNK.div_ceil(row_len).max(1);
    let run = |first_row: usize, outs: &mut [T]| {
        let mut buf = vec![0.0f32; row_len];
        for (i, o) in outs.chunks_exact_mut(row_len).enumerate() {
            let r = first_row + i;
            load_ane(&x[r * row_len..(r + 1) * row_len], &mut buf);
            f(r, &mut buf);
            if T::ANE_RULES {
                numerics::ane_result_slice(&mut buf);
            }
            T::store(&buf, o);
        }
    };
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(rows_per_chunk * row_len)
            .enumerate()
            .for_each(|(t, o)| run(t * rows_per_chunk, o));
    } else {
        run(0, out);
    }
}

/// Reads an optional per-group parameter as f32, NaN read as +inf when `T` follows the ANE.
fn param<T: Element>(p: Option<&[f32]>) -> Option<Vec<f32>> {
    p.map(|v| {
        if T::ANE_RULES { v.iter().map(|&x| numerics::ane_read(x)).collect() } else { v.to_vec() }
    })
}

/// layer_norm of `x` (of `shape`) over `axes` (each < rank, repeats ignored): every group of
/// elements that shares the indices of the other axes is standardized with its own mean and
/// variance, then scaled by `gamma` and shifted by `beta`, both laid out as the dims of
/// `axes` in axis order (numpy `x.shape[axes]`). See the module doc for the numerics.
pub fn layer_norm<T: Element>(
    x: &[T],
    shape: &[usize],
    axes: &[usize],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    epsilon: f32,
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "layer_norm";
    check_len(KERNEL, "x", x.len(), shape)?;
    check_len(KERNEL, "output", out.len(), shape)?;
    let rank = shape.len();
    let mut mask = vec![false; rank];
    for &a in axes {
        if a >= rank {
            return Err(KernelError::new(KERNEL, format!("axis {a} out of range for rank {rank}")));
        }
        mask[a] = true;
    }
    let normalized: Vec<usize> = (0..rank).filter(|&a| mask[a]).map(|a| shape[a]).collect();
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        if let Some(p) = p {
            check_len(KERNEL, name, p.len(), &normalized)?;
        }
    }
    if x.is_empty() {
        return Ok(());
    }
    let (gamma, beta) = (param::<T>(gamma), param::<T>(beta));
    let (gamma, beta) = (gamma.as_deref(), beta.as_deref());

    // Offsets of a group's elements from its first, and the first element of every group.
    let strides = super::contiguous_strides(shape);
    let offsets = odometer(&normalized, &pick(&strides, &mask, true));
    let kept: Vec<usize> = (0..rank).filter(|&a| !mask[a]).map(|a| shape[a]).collect();
    let bases = odometer(&kept, &pick(&strides, &mask, false));
    let size = offsets.len();
    let contiguous = offsets.iter().enumerate().all(|(i, &o)| o == i)
        && bases.iter().enumerate().all(|(i, &b)| b == i * size);
    if contiguous {
        for_rows(x, out, size, |_, group| {
            standardize(group, epsilon);
            affine(group, gamma, beta);
        });
        return Ok(());
    }
    // Groups strided through memory: gathered, normalized, and scattered back one by one.
    let mut group = vec![0.0f32; size];
    for &base in &bases {
        for (g, &o) in group.iter_mut().zip(&offsets) {
            *g = x[base + o].to_f32();
        }
        if T::ANE_RULES {
            numerics::ane_read_slice(&mut group);
        }
        standardize(&mut group, epsilon);
        affine(&mut group, gamma, beta);
        if T::ANE_RULES {
            numerics::ane_result_slice(&mut group);
        }
        for (&g, &o) in group.iter().zip(&offsets) {
            out[base + o] = T::from_f32(g);
        }
    }
    Ok(())
}

/// The strides of the axes where `mask` equals `want`.
fn pick(strides: &[usize], mask: &[bool], want: bool) -> Vec<usize> {
    strides.iter().zip(mask).filter(|(_, m)| **m == want).map(|(s, _)| *s).collect()
}

/// Every row-major multi-index of `dims` as an offset `sum(index * stride)`.
fn odometer(dims: &[usize], strides: &[usize]) -> Vec<usize> {
    let count = numel(dims);
    let mut out = Vec::with_capacity(count);
    let mut idx = vec![0usize; dims.len()];
    let mut off = 0usize;
    for _ in 0..count {
        out.push(off);
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < dims[d] {
                break;
            }
            off -= strides[d] * idx[d];
            idx[d] = 0;
        }
    }
    out
}

/// The channel count and the spatial size of `[N, C, *spatial]`.
fn channels(kernel: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(KernelError::new(
            kernel,
            format!("x has shape {shape:?}, not [N, C, *spatial]"),
        ));
    }
    Ok((shape[1], numel(&shape[2..])))
}

/// instance_norm of `x [N, C, *spatial]`: each (n, c) plane standardized over its spatial
/// elements, then scaled by `gamma[c]` and shifted by `beta[c]` (`[C]` each).
pub fn instance_norm<T: Element>(
    x: &[T],
    shape: &[usize],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    epsilon: f32,
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "instance_norm";
    let (c, plane) = channels(KERNEL, shape)?;
    check_len(KERNEL, "x", x.len(), shape)?;
    check_len(KERNEL, "output", out.len(), shape)?;
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        if let Some(p) = p {
            check_len(KERNEL, name, p.len(), &[c])?;
        }
    }
    let (gamma, beta) = (param::<T>(gamma), param::<T>(beta));
    for_rows(x, out, plane, |r, row| {
        standardize(row, epsilon);
        let ch = r % c;
        let g = gamma.as_ref().map_or(1.0, |g| g[ch]);
        let b = beta.as_ref().map_or(0.0, |b| b[ch]);
        for v in row.iter_mut() {
            *v = *v * g + b;
        }
    });
    Ok(())
}

/// batch_norm of `x [N, C, *spatial]` with per-channel `mean`, `variance`, `gamma` (default
/// ones) and `beta` (default zeros): `(x - mean) * gamma / sqrt(variance + eps) + beta`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm<T: Element>(
    x: &[T],
    shape: &[usize],
    mean: &[f32],
    variance: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    epsilon: f32,
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "batch_norm";
    let (c, plane) = channels(KERNEL, shape)?;
    check_len(KERNEL, "x", x.len(), shape)?;
    check_len(KERNEL, "output", out.len(), shape)?;
    check_len(KERNEL, "mean", mean.len(), &[c])?;
    check_len(KERNEL, "variance", variance.len(), &[c])?;
    for (name, p) in [("gamma", gamma), ("beta", beta)] {
        if let Some(p) = p {
            check_len(KERNEL, name, p.len(), &[c])?;
        }
    }
    let read = |v: f32| if T::ANE_RULES { numerics::ane_read(v) } else { v };
    let scale: Vec<f32> = (0..c)
        .map(|i| gamma.map_or(1.0, |g| read(g[i])) / (read(variance[i]) + epsilon).sqrt())
        .collect();
    let shift: Vec<f32> = (0..c).map(|i| beta.map_or(0.0, |b| read(b[i]))).collect();
    let mean: Vec<f32> = mean.iter().map(|&m| read(m)).collect();
    for_rows(x, out, plane, |r, row| {
        let ch = r % c;
        let (m, s, b) = (mean[ch], scale[ch], shift[ch]);
        for v in row.iter_mut() {
            *v = (*v - m) * s + b;
        }
    });
    Ok(())
}

/// A pooling window per spatial dim, with its stride, padding before and after, and the number
/// of outputs (the caller resolves MIL's pad_type and ceil_mode). Every window must start
/// inside the padded input; with ceil_mode it may end past it, and that part counts as absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    /// Window size per spatial dim.
    pub kernel: Vec<usize>,
    /// Step between neighbouring windows, per spatial dim.
    pub strides: Vec<usize>,
    /// Padding before the input, per spatial dim.
    pub pad_before: Vec<usize>,
    /// Padding after the input, per spatial dim.
    pub pad_after: Vec<usize>,
    /// Number of outputs per spatial dim (pad_type and ceil_mode already applied).
    pub output: Vec<usize>,
}

/// The range of input positions one output reads along one dim: `lo..hi` inside the input,
/// and `padded` positions inside the padded input.
#[derive(Clone, Copy, Debug)]
struct Span1 {
    lo: usize,
    hi: usize,
    padded: usize,
}

/// A window checked against an input, as three spatial dims (missing leading dims are 1).
struct PoolGeometry {
    planes: usize,
    input: [usize; 3],
    output: [usize; 3],
    /// For each dim, the span of every output index.
    spans: [Vec<Span1>; 3],
}

impl PoolGeometry {
    fn new(kernel: &'static str, x_shape: &[usize], w: &PoolWindow) -> Result<PoolGeometry> {
        let n = x_shape.len().saturating_sub(2);
        if !(1..=3).contains(&n) {
            return Err(KernelError::new(
                kernel,
                format!("x has shape {x_shape:?}, not [N, C, *spatial] with 1 to 3 spatial dims"),
            ));
        }
        let lens = [w.kernel.len(), w.strides.len(), w.pad_before.len(), w.pad_after.len()];
        if lens.iter().chain([&w.output.len()]).any(|&l| l != n) {
            return Err(KernelError::new(
                kernel,
                format!("the window {w:?} does not describe {n} spatial dims"),
            ));
        }
        let mut input = [1usize; 3];
        let mut output = [1usize; 3];
        let mut spans: [Vec<Span1>; 3] = Default::default();
        spans[0] = vec![Span1 { lo: 0, hi: 1, padded: 1 }];
        spans[1] = spans[0].clone();
        spans[2] = spans[0].clone();
        for i in 0..n {
            let d = 3 - n + i;
            let (size, k, s) = (x_shape[2 + i], w.kernel[i], w.strides[i]);
            let (pb, pa, out) = (w.pad_before[i], w.pad_after[i], w.output[i]);
            if k == 0 || s == 0 {
                return Err(KernelError::new(
                    kernel,
                    format!("kernel {k} and stride {s} in spatial dim {i} must be at least 1"),
                ));
            }
            let padded_end = size.checked_add(pb).and_then(|v| v.checked_add(pa));
            let last_start = out.checked_sub(1).map(|o| o.checked_mul(s));
            match (padded_end, last_start) {
                (None, _) | (_, Some(None)) => {
                    return Err(KernelError::new(kernel, "window arithmetic overflows"));
                }
                (Some(end), Some(Some(start))) if start >= end => {
                    return Err(KernelError::new(
                        kernel,
                        format!(
                            "output {out} in spatial dim {i} puts a window at {start}, past the padded input of {end}"
                        ),
                    ));
                }
                _ => {}
            }
            // Positions in padded coordinates: input element j sits at j + pb.
            spans[d] = (0..out)
                .map(|o| {
                    let start = o * s;
                    let end = start.saturating_add(k);
                    let padded = end.min(size + pb + pa) - start;
                    let lo = start.max(pb).min(size + pb) - pb;
                    let hi = end.min(size + pb).max(pb) - pb;
                    Span1 { lo, hi: hi.max(lo), padded }
                })
                .collect();
            input[d] = size;
            output[d] = out;
        }
        Ok(PoolGeometry { planes: x_shape[0] * x_shape[1], input, output, spans })
    }

    fn in_plane(&self) -> usize {
        self.input.iter().product()
    }

    fn out_plane(&self) -> usize {
        self.output.iter().product()
    }

    fn out_shape(&self, x_shape: &[usize]) -> Vec<usize> {
        let n = x_shape.len() - 2;
        let mut s = x_shape[..2].to_vec();
        s.extend_from_slice(&self.output[3 - n..]);
        s
    }
}

/// Output shape `[N, C, *window.output]` of a pool of `x_shape`, after checking the window.
pub fn pool_output_shape(x_shape: &[usize], window: &PoolWindow) -> Result<Vec<usize>> {
    Ok(PoolGeometry::new("pool", x_shape, window)?.out_shape(x_shape))
}

/// What a pool computes over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Max,
    Avg { exclude_padding: bool },
}

/// Runs a pool plane by plane (planes split across threads when the work is large).
fn pool<T: Element>(
    kernel: &'static str,
    x: &[T],
    x_shape: &[usize],
    window: &PoolWindow,
    op: Pool,
    out: &mut [T],
) -> Result<()> {
    let geo = PoolGeometry::new(kernel, x_shape, window)?;
    check_len(kernel, "x", x.len(), x_shape)?;
    check_len(kernel, "output", out.len(), &geo.out_shape(x_shape))?;
    let (in_plane, out_plane) = (geo.in_plane(), geo.out_plane());
    if out.is_empty() || in_plane == 0 {
        // No input element to read: every window holds padding only.
        let v = match op {
            Pool::Max => f32::NEG_INFINITY,
            Pool::Avg { .. } => 0.0,
        };
        out.fill(T::from_f32(v));
        return Ok(());
    }
    let planes_per_chunk = PAR_CHUNK.div_ceil(out_plane).max(1);
    let run = |first: usize, outs: &mut [T]| {
        let mut src = vec![0.0f32; in_plane];
        let mut dst = vec![0.0f32; out_plane];
        for (i, o) in outs.chunks_exact_mut(out_plane).enumerate() {
            let p = first + i;
            load_ane(&x[p * in_plane..(p + 1) * in_plane], &mut src);
            pool_plane(&geo, &src, op, &mut dst);
            if T::ANE_RULES {
                numerics::ane_result_slice(&mut dst);
            }
            T::store(&dst, o);
        }
    };
    let window_size: usize = window.kernel.iter().product();
    if parallel_worth_it(out.len().saturating_mul(window_size)) {
        out.par_chunks_mut(planes_per_chunk * out_plane)
            .enumerate()
            .for_each(|(t, o)| run(t * planes_per_chunk, o));
    } else {
        run(0, out);
    }
    debug_assert_eq!(out.len(), geo.planes * out_plane);
    Ok(())
}

/// One (n, c) plane of a pool, in f32.
fn pool_plane(geo: &PoolGeometry, src: &[f32], op: Pool, dst: &mut [f32]) {
    let [_, ih, iw] = geo.input;
    let mut o = 0;
    for sd in &geo.spans[0] {
        for sh in &geo.spans[1] {
            for sw in &geo.spans[2] {
                let mut max = f32::NEG_INFINITY;
                let mut sum = 0.0f32;
                for d in sd.lo..sd.hi {
                    for h in sh.lo..sh.hi {
                        let row = &src[(d * ih + h) * iw..][sw.lo..sw.hi];
                        match op {
                            // NaN propagates, as numpy's max does (fp16 inputs hold none).
                            Pool::Max => {
                                for &v in row {
                                    if v > max || v.is_nan() {
                                        max = v;
                                    }
                                }
                            }
                            Pool::Avg { .. } => sum += sum_f32(row),
                        }
                    }
                }
                dst[o] = match op {
                    Pool::Max => max,
                    Pool::Avg { exclude_padding } => {
                        let count = if exclude_padding {
                            (sd.hi - sd.lo) * (sh.hi - sh.lo) * (sw.hi - sw.lo)
                        } else {
                            sd.padded * sh.padded * sw.padded
                        };
                        if count == 0 { 0.0 } else { sum / count as f32 }
                    }
                };
                o += 1;
            }
        }
    }
}

/// max_pool of `x [N, C, *spatial]` over `window`; padding never wins.
pub fn max_pool<T: Element>(
    x: &[T],
    x_shape: &[usize],
    window: &PoolWindow,
    out: &mut [T],
) -> Result<()> {
    pool("max_pool", x, x_shape, window, Pool::Max, out)
}

/// avg_pool of `x [N, C, *spatial]` over `window`: the sum of the input elements a window
/// covers, divided by the positions it covers inside the padded input, or with
/// `exclude_padding` inside the input only.
pub fn avg_pool<T: Element>(
    x: &[T],
    x_shape: &[usize],
    window: &PoolWindow,
    exclude_padding: bool,
    out: &mut [T],
) -> Result<()> {
    pool("avg_pool", x, x_shape, window, Pool::Avg { exclude_padding }, out)
}

/// prelu of `x [N, C, *spatial]` with one slope per channel, `alpha [C]`: `x` where `x` is not
/// negative, else `alpha[c] x` (NaN read as +inf for fp16).
pub fn prelu<T: Element>(x: &[T], shape: &[usize], alpha: &[f32], out: &mut [T]) -> Result<()> {
    const KERNEL: &str = "prelu";
    let (c, plane) = channels(KERNEL, shape)?;
    check_len(KERNEL, "x", x.len(), shape)?;
    check_len(KERNEL, "output", out.len(), shape)?;
    check_len(KERNEL, "alpha", alpha.len(), &[c])?;
    let alpha = param::<T>(Some(alpha)).unwrap_or_default();
    for_rows(x, out, plane, |r, row| {
        let a = alpha[r % c];
        for v in row.iter_mut() {
            if *v < 0.0 {
                *v *= a;
            }
        }
    });
    Ok(())
}

/// The two input neighbours of one output position along a dim, and the weight of the second.
#[derive(Clone, Copy, Debug)]
struct Tap {
    lo: usize,
    hi: usize,
    weight: f32,
}

/// The taps of `m` outputs sampled from `n` inputs (`n` at least 1).
fn taps(grid: BilinearGrid, n: usize, m: usize) -> Vec<Tap> {
    (0..m)
        .map(|i| {
            let p = grid.position(i, n, m);
            let lo = (p.floor() as usize).min(n - 1);
            let hi = (lo + 1).min(n - 1);
            let weight = if hi == lo { 0.0 } else { (p - lo as f64) as f32 };
            Tap { lo, hi, weight }
        })
        .collect()
}

/// `(1 - t) a + t b`, and `a` alone when `t` is 0.
#[inline(always)]
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    if t == 0.0 { a } else { (1.0 - t) * a + t * b }
}

/// upsample_bilinear of `x [*, h, w]` to `[*, output[0], output[1]]`: each output interpolates
/// the four input elements around its sampling position on `grid` (see the module doc for the
/// numerics). Planes are split across threads when the work is large.
pub fn upsample_bilinear<T: Element>(
    x: &[T],
    shape: &[usize],
    grid: BilinearGrid,
    output: [usize; 2],
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "upsample_bilinear";
    let &[.., h, w] = shape else {
        return Err(KernelError::new(KERNEL, format!("x has shape {shape:?}, not [*, H, W]")));
    };
    check_len(KERNEL, "x", x.len(), shape)?;
    let mut out_shape = shape.to_vec();
    out_shape[shape.len() - 2..].copy_from_slice(&output);
    check_len(KERNEL, "output", out.len(), &out_shape)?;
    if out.is_empty() {
        return Ok(());
    }
    if h == 0 || w == 0 {
        return Err(KernelError::new(
            KERNEL,
            format!("x {shape:?} has no element to interpolate into {output:?}"),
        ));
    }
    let [oh, ow] = output;
    let (ty, tx) = (taps(grid, h, oh), taps(grid, w, ow));
    let (in_plane, out_plane) = (h * w, oh * ow);
    let run = |first: usize, outs: &mut [T]| {
        let mut src = vec![0.0f32; in_plane];
        let mut dst = vec![0.0f32; out_plane];
        for (i, o) in outs.chunks_exact_mut(out_plane).enumerate() {
            let p = first + i;
            load_ane(&x[p * in_plane..(p + 1) * in_plane], &mut src);
            for (row, t) in dst.chunks_exact_mut(ow).zip(&ty) {
                let (r0, r1) = (&src[t.lo * w..][..w], &src[t.hi * w..][..w]);
                for (v, s) in row.iter_mut().zip(&tx) {
                    let top = lerp(r0[s.lo], r0[s.hi], s.weight);
                    let bottom = lerp(r1[s.lo], r1[s.hi], s.weight);
                    *v = lerp(top, bottom, t.weight);
                }
            }
            if T::ANE_RULES {
                numerics::ane_result_slice(&mut dst);
            }
            T::store(&dst, o);
        }
    };
    let planes_per_chunk = PAR_CHUNK.div_ceil(out_plane).max(1);
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(planes_per_chunk * out_plane)
            .enumerate()
            .for_each(|(t, o)| run(t * planes_per_chunk, o));
    } else {
        run(0, out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::Scratch;
    use crate::sim::kernels::testutil::*;
    use half::f16;

    // ---- linear ---------------------------------------------------------------------------

    fn linear_reference(
        x: &[f64],
        x_shape: &[usize],
        w: &[f64],
        d_out: usize,
        bias: Option<&[f64]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let d_in = *x_shape.last().unwrap();
        let rows = numel(&x_shape[..x_shape.len() - 1]);
        let mut out = Vec::new();
        let mut abs = Vec::new();
        for r in 0..rows {
            for o in 0..d_out {
                let (mut s, mut a) = (bias.map_or(0.0, |b| b[o]), 0.0);
                for k in 0..d_in {
                    s += x[r * d_in + k] * w[o * d_in + k];
                    a += (x[r * d_in + k] * w[o * d_in + k]).abs();
                }
                out.push(s);
                abs.push(a);
            }
        }
        (out, abs)
    }

    /// f32 accumulation of k products errs by at most k 2^-24 sum|x w|, the bias adds one f32
    /// rounding, and the single rounding to fp16 half an ulp; one ulp of the reference allows
    /// for a rounding that lands across a binade boundary.
    fn check_linear(x_shape: &[usize], d_out: usize, with_bias: bool) {
        let d_in = *x_shape.last().unwrap();
        let x = values_f16(numel(x_shape), 3 + x_shape.len() as u64);
        let w = values_f16(d_out * d_in, 11);
        let b = values_f16(d_out, 5);
        let b32: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        let b64 = to_f64(&b);
        let (want, abs) = linear_reference(
            &to_f64(&x),
            x_shape,
            &to_f64(&w),
            d_out,
            with_bias.then_some(&b64[..]),
        );
        let mut out_shape = x_shape.to_vec();
        *out_shape.last_mut().unwrap() = d_out;
        let mut out = vec![f16::ZERO; numel(&out_shape)];
        let bias = with_bias.then_some(&b32[..]);
        linear(&x, x_shape, &w, &[d_out, d_in], bias, &mut out).unwrap();
        let what = format!("linear {x_shape:?} -> {d_out} bias {with_bias}");
        let k = d_in as f64;
        for (i, (g, r)) in out.iter().zip(&want).enumerate() {
            let tol =
                numerics::ulp_f16(*r as f32) as f64 + (k + 1.0) * 2f64.powi(-24) * (abs[i] + 1.0);
            assert!((g.to_f64() - r).abs() <= tol, "{what}[{i}]: got {g}, want {r}");
        }
        // Weights widened to f32, or packed ahead, give the same bits.
        let w32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let mut again = vec![f16::ZERO; out.len()];
        linear(&x, x_shape, &w32, &[d_out, d_in], bias, &mut again).unwrap();
        assert_eq!(out, again, "{what}: widened weights");
        let packed = matmul::pack_operand(&w, &[d_out, d_in], true, Side::Rhs).unwrap();
        let w_in = MatmulInput::<f16>::Packed(&packed);
        linear_inputs(&x, x_shape, w_in, &[d_out, d_in], bias, &mut again).unwrap();
        assert_eq!(out, again, "{what}: packed weights");
        // The same bits as the product in f32, then the bias, the port and one rounding.
        let rows = numel(x_shape) / d_in;
        let mut sums = vec![0.0f32; rows * d_out];
        let mut s = Scratch::new();
        let (x2, w2) = ([rows, d_in], [d_out, d_in]);
        matmul::matmul::<f16, f16, f32>(&x, &x2, &w, &w2, false, true, &mut sums, &mut s).unwrap();
        for (i, v) in sums.iter_mut().enumerate() {
            let b = bias.map_or(0.0, |b| numerics::ane_read(b[i % d_out]));
            *v = numerics::mac_saturate(*v + b);
        }
        let reference: Vec<f16> = sums.iter().map(|&v| numerics::f32_to_f16(v)).collect();
        assert_eq!(out, reference, "{what}: sum, bias, port, rounding");
        // f32 everywhere: close at f32 precision.
        let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let mut out32 = vec![0.0f32; out.len()];
        linear(&x32, x_shape, &w32, &[d_out, d_in], bias, &mut out32).unwrap();
        for (i, (g, r)) in out32.iter().zip(&want).enumerate() {
            let tol = (k + 1.0) * 2f64.powi(-24) * (abs[i] + 1.0);
            assert!((*g as f64 - r).abs() <= tol, "{what} fp32[{i}]: got {g}, want {r}");
        }
    }

    #[test]
    fn linear_against_f64() {
        check_linear(&[16], 3, true);
        check_linear(&[4, 16], 32, true);
        check_linear(&[1, 16, 32], 96, true);
        check_linear(&[2, 5, 33], 17, false);
        check_linear(&[300, 200], 130, true);
    }

    #[test]
    fn linear_bias_joins_the_accumulator_before_the_rounding() {
        // x w = 1 + 2^-11, a tie that rounds to the even 1; adding the bias 2^-11 to that would
        // tie again and stay 1. Added before the one rounding: exactly 1 + 2^-10.
        let x = [f16::ONE, f16::from_f32(2f32.powi(-11))];
        let w = [f16::ONE, f16::ONE];
        let bias = [2f32.powi(-11)];
        let mut out = [f16::ZERO];
        linear(&x, &[2], &w, &[1, 2], Some(&bias), &mut out).unwrap();
        assert_eq!(out[0].to_f32(), 1.0 + 2f32.powi(-10));
        let mut unbiased = [f16::ZERO];
        linear(&x, &[2], &w, &[1, 2], None, &mut unbiased).unwrap();
        assert_eq!(unbiased[0], f16::ONE);
    }

    #[test]
    fn linear_output_port_saturates_and_nan_reads_as_inf() {
        let mut out = [f16::ZERO; 2];
        // 16384 + 16384 = 32768 saturates to inf; a NaN bias reads as +inf.
        let x = [f16::from_f32(16384.0), f16::from_f32(16384.0)];
        let w = [f16::ONE, f16::ONE, f16::ZERO, f16::ZERO];
        linear(&x, &[2], &w, &[2, 2], Some(&[0.0, f32::NAN]), &mut out).unwrap();
        assert_eq!(out, [f16::INFINITY, f16::INFINITY]);
        // A bias of -inf against a +inf product: indeterminate, +0.
        let x = [f16::NAN];
        let w = [f16::ONE];
        let mut one = [f16::ONE];
        linear(&x, &[1], &w, &[1, 1], Some(&[f32::NEG_INFINITY]), &mut one).unwrap();
        assert_eq!(one[0].to_bits(), 0);
    }

    #[test]
    fn linear_with_no_input_features_gives_the_bias() {
        let mut out = [f16::ONE; 6];
        let x: [f16; 0] = [];
        linear(&x, &[2, 0], &x, &[3, 0], Some(&[1.0, -2.0, f32::NAN]), &mut out).unwrap();
        let want = [1.0, -2.0, f32::INFINITY, 1.0, -2.0, f32::INFINITY].map(f16::from_f32);
        assert_eq!(out, want);
    }

    #[test]
    fn linear_on_int32_wraps_like_numpy() {
        let x = [1, 2, 3, -4, 5, 6];
        let w = [1, 0, -1, 2, 2, 2];
        let mut out = [0i32; 4];
        linear_i32(&x, &[2, 3], &w, &[2, 3], Some(&[10, -10]), &mut out).unwrap();
        assert_eq!(out, [1 - 3 + 10, 12 - 10, -4 - 6 + 10, 14 - 10]);
        let mut one = [0i32];
        linear_i32(&[i32::MAX], &[1], &[2], &[1, 1], None, &mut one).unwrap();
        assert_eq!(one[0], i32::MAX.wrapping_mul(2));
    }

    #[test]
    fn linear_shape_errors() {
        let mut out = [0.0f32; 6];
        let x = [0.0f32; 6];
        assert!(linear(&x, &[2, 3], &[0.0f32; 6], &[2, 3], None, &mut out[..4]).is_ok());
        let e = linear(&x, &[2, 3], &[0.0f32; 8], &[2, 4], None, &mut out[..4]);
        assert!(e.unwrap_err().message.contains("has 3 features but weight [2, 4] takes 4"));
        assert!(linear(&x, &[2, 3], &[0.0f32; 6], &[6], None, &mut out[..4]).is_err());
        assert!(linear(&x, &[], &[0.0f32; 6], &[2, 3], None, &mut out[..4]).is_err());
        assert!(linear(&x, &[2, 3], &[0.0f32; 6], &[2, 3], None, &mut out).is_err());
        let short_bias = [0.0f32];
        assert!(
            linear(&x, &[2, 3], &[0.0f32; 6], &[2, 3], Some(&short_bias), &mut out[..4]).is_err()
        );
        assert!(linear(&x[..5], &[2, 3], &[0.0f32; 6], &[2, 3], None, &mut out[..4]).is_err());
        let mut iout = [0i32; 4];
        assert!(linear_i32(&[0; 6], &[2, 3], &[0; 6], &[3, 2], None, &mut iout).is_err());
        assert!(linear_i32(&[0; 6], &[2, 3], &[0; 6], &[2, 3], Some(&[0]), &mut iout).is_err());
    }

    // ---- layer_norm, instance_norm, batch_norm -------------------------------------------

    /// Standardizes `group` in f64, then applies per-element gamma and beta.
    fn standardize_ref(group: &[f64], eps: f64) -> Vec<f64> {
        let n = group.len() as f64;
        let mean = group.iter().sum::<f64>() / n;
        let var = group.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        group.iter().map(|v| (v - mean) / (var + eps).sqrt()).collect()
    }

    fn layer_norm_reference(
        x: &[f64],
        shape: &[usize],
        axes: &[usize],
        gamma: Option<&[f64]>,
        beta: Option<&[f64]>,
        eps: f64,
    ) -> Vec<f64> {
        // Group by the indices of the kept axes; within a group, row-major over the normalized
        // axes, which is gamma's layout.
        let strides = crate::sim::kernels::contiguous_strides(shape);
        let mut groups: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
        for i in 0..x.len() {
            let idx: Vec<usize> = (0..shape.len()).map(|d| i / strides[d] % shape[d]).collect();
            let key: Vec<usize> =
                (0..shape.len()).filter(|d| !axes.contains(d)).map(|d| idx[d]).collect();
            groups.entry(key).or_default().push(i);
        }
        let mut out = vec![0.0; x.len()];
        for members in groups.values() {
            let vals: Vec<f64> = members.iter().map(|&i| x[i]).collect();
            for (j, (&i, v)) in members.iter().zip(standardize_ref(&vals, eps)).enumerate() {
                out[i] = v * gamma.map_or(1.0, |g| g[j]) + beta.map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    /// The f32 sums run in 8 lanes of n / 8 terms, so the mean errs by at most
    /// (n / 8 + 3) 2^-24 of the mean magnitude (below 4 here); dividing by the standard
    /// deviation (about 1.7 for these values) and the few f32 operations after it stay within
    /// (n / 8 + 16) 2^-22. One fp16 ulp covers the final rounding.
    fn norm_tolerance(n: usize) -> f64 {
        (n / 8 + 16) as f64 * 2f64.powi(-22)
    }

    #[test]
    fn layer_norm_against_f64() {
        for (shape, axes) in [
            (vec![1, 16, 32], vec![2]),
            (vec![4, 300], vec![1]),
            (vec![3, 4, 5], vec![0, 1, 2]),
            (vec![3, 4, 5], vec![1, 2]),
            (vec![3, 4, 5], vec![1]),
            (vec![3, 4, 5, 6], vec![1, 3]),
            (vec![6, 1], vec![0]),
            (vec![70, 2048], vec![1]),
        ] {
            let n = numel(&shape);
            let norm_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
            let group = numel(&norm_shape);
            let x: Vec<f16> = values(n, 21).iter().map(|v| f16::from_f32(v * 3.0 + 0.5)).collect();
            let g = values_f16(group, 22);
            let b = values_f16(group, 23);
            let (g32, b32): (Vec<f32>, Vec<f32>) =
                (g.iter().map(|v| v.to_f32()).collect(), b.iter().map(|v| v.to_f32()).collect());
            let eps = 1e-5f32;
            for (with_g, with_b) in [(true, true), (false, false), (true, false), (false, true)] {
                let (gr, br) = (to_f64(&g), to_f64(&b));
                let want = layer_norm_reference(
                    &to_f64(&x),
                    &shape,
                    &axes,
                    with_g.then_some(&gr[..]),
                    with_b.then_some(&br[..]),
                    eps as f64,
                );
                let mut out = vec![f16::ZERO; n];
                let (gp, bp) = (with_g.then_some(&g32[..]), with_b.then_some(&b32[..]));
                layer_norm(&x, &shape, &axes, gp, bp, eps, &mut out).unwrap();
                let what =
                    format!("layer_norm {shape:?} axes {axes:?} gamma {with_g} beta {with_b}");
                assert_close_f16(&out, &want, 1.0, norm_tolerance(group), &what);
                let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                let mut out32 = vec![0.0f32; n];
                layer_norm(&x32, &shape, &axes, gp, bp, eps, &mut out32).unwrap();
                for (i, (o, w)) in out32.iter().zip(&want).enumerate() {
                    assert!((*o as f64 - w).abs() <= norm_tolerance(group), "{what} fp32[{i}]");
                }
            }
        }
    }

    #[test]
    fn layer_norm_fp16_rules() {
        // A NaN reads as +inf: its group's mean is inf and every x - mean is indeterminate (+0)
        // or -inf * NaN (+0); the other group is untouched.
        let x = [f16::NAN, f16::ONE, f16::ONE, f16::from_f32(3.0)];
        let mut out = [f16::ONE; 4];
        layer_norm(&x, &[2, 2], &[1], None, None, 1e-5, &mut out).unwrap();
        assert_eq!(out[0].to_bits(), 0);
        assert_eq!(out[1].to_bits(), 0);
        assert!((out[2].to_f32() + 1.0).abs() < 1e-3 && (out[3].to_f32() - 1.0).abs() < 1e-3);
    }

    #[test]
    fn instance_and_batch_norm_against_f64() {
        for shape in [vec![1, 16, 4, 4], vec![2, 3, 7], vec![2, 5, 3, 4, 2], vec![2, 8, 100, 90]] {
            let n = numel(&shape);
            let (c, plane) = (shape[1], numel(&shape[2..]));
            let x: Vec<f16> = values(n, 31).iter().map(|v| f16::from_f32(v * 4.0 - 1.0)).collect();
            let xr = to_f64(&x);
            let g = values_f16(c, 32);
            let b = values_f16(c, 33);
            let mean = values_f16(c, 34);
            let var: Vec<f16> =
                values(c, 35).iter().map(|v| f16::from_f32(v.abs() + 0.1)).collect();
            let f32s = |v: &[f16]| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
            let (g32, b32, m32, v32) = (f32s(&g), f32s(&b), f32s(&mean), f32s(&var));
            let eps = 1e-5f32;

            if shape.len() <= 4 {
                let mut want = Vec::with_capacity(n);
                for (p, plane_x) in xr.chunks(plane).enumerate() {
                    let ch = p % c;
                    want.extend(
                        standardize_ref(plane_x, eps as f64)
                            .iter()
                            .map(|v| v * g[ch].to_f64() + b[ch].to_f64()),
                    );
                }
                let mut out = vec![f16::ZERO; n];
                instance_norm(&x, &shape, Some(&g32), Some(&b32), eps, &mut out).unwrap();
                let what = format!("instance_norm {shape:?}");
                assert_close_f16(&out, &want, 1.0, norm_tolerance(plane), &what);
            }

            let want: Vec<f64> = xr
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let ch = (i / plane) % c;
                    g[ch].to_f64() * (v - mean[ch].to_f64())
                        / (var[ch].to_f64() + eps as f64).sqrt()
                        + b[ch].to_f64()
                })
                .collect();
            let mut out = vec![f16::ZERO; n];
            batch_norm(&x, &shape, &m32, &v32, Some(&g32), Some(&b32), eps, &mut out).unwrap();
            // (x - mean) * scale stays below 20 here: a few f32 roundings of that, below 1e-5.
            assert_close_f16(&out, &want, 1.0, 1e-5, &format!("batch_norm {shape:?}"));
            // Defaults: gamma ones, beta zeros.
            let want: Vec<f64> = xr
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let ch = (i / plane) % c;
                    (v - mean[ch].to_f64()) / (var[ch].to_f64() + eps as f64).sqrt()
                })
                .collect();
            batch_norm(&x, &shape, &m32, &v32, None, None, eps, &mut out).unwrap();
            assert_close_f16(&out, &want, 1.0, 1e-5, &format!("batch_norm {shape:?} defaults"));
        }
    }

    #[test]
    fn norm_shape_errors() {
        let x = [0.0f32; 24];
        let mut out = [0.0f32; 24];
        let shape = [2, 3, 4];
        assert!(layer_norm(&x, &shape, &[3], None, None, 1e-5, &mut out).is_err());
        let g = [1.0f32; 3];
        let e = layer_norm(&x, &shape, &[2], Some(&g), None, 1e-5, &mut out).unwrap_err();
        assert!(e.message.contains("gamma has 3 elements but shape [4] needs 4"), "{e}");
        assert!(layer_norm(&x[..20], &shape, &[2], None, None, 1e-5, &mut out).is_err());
        assert!(instance_norm(&x, &shape, Some(&[1.0; 4]), None, 1e-5, &mut out).is_err());
        assert!(instance_norm(&x, &[24], None, None, 1e-5, &mut out).is_err());
        assert!(batch_norm(&x, &shape, &[0.0; 3], &[1.0; 2], None, None, 1e-5, &mut out).is_err());
        assert!(
            batch_norm(&x, &shape, &[0.0; 3], &[1.0; 3], None, None, 1e-5, &mut out[..3]).is_err()
        );
        // Empty tensors are fine.
        let mut none: [f32; 0] = [];
        layer_norm(&[] as &[f32], &[0, 4], &[1], None, None, 1e-5, &mut none).unwrap();
        instance_norm(&[] as &[f32], &[2, 3, 0], None, None, 1e-5, &mut none).unwrap();
    }

    // ---- pools ---------------------------------------------------------------------------

    /// Reference pooling by definition: padded positions are those in
    /// [-pad_before, size + pad_after); the window of output o covers [o s - pb, o s - pb + k).
    fn pool_reference(x: &[f64], shape: &[usize], w: &PoolWindow, op: Pool) -> Vec<f64> {
        let n = shape.len() - 2;
        let out_shape: Vec<usize> =
            shape[..2].iter().copied().chain(w.output.iter().copied()).collect();
        let out_strides = crate::sim::kernels::contiguous_strides(&out_shape);
        let in_strides = crate::sim::kernels::contiguous_strides(shape);
        (0..numel(&out_shape))
            .map(|i| {
                let oi: Vec<usize> =
                    (0..out_shape.len()).map(|d| i / out_strides[d] % out_shape[d]).collect();
                let (mut max, mut sum, mut inside, mut padded) = (f64::NEG_INFINITY, 0.0, 0, 0);
                let kn: usize = w.kernel.iter().product();
                for t in 0..kn {
                    let mut rest = t;
                    let mut pos = vec![0i64; n];
                    for d in (0..n).rev() {
                        let kd = rest % w.kernel[d];
                        rest /= w.kernel[d];
                        pos[d] = (oi[2 + d] * w.strides[d] + kd) as i64 - w.pad_before[d] as i64;
                    }
                    let in_padded = (0..n).all(|d| {
                        pos[d] >= -(w.pad_before[d] as i64)
                            && pos[d] < (shape[2 + d] + w.pad_after[d]) as i64
                    });
                    let in_input = (0..n).all(|d| pos[d] >= 0 && pos[d] < shape[2 + d] as i64);
                    padded += in_padded as usize;
                    if in_input {
                        let mut off = oi[0] * in_strides[0] + oi[1] * in_strides[1];
                        for d in 0..n {
                            off += pos[d] as usize * in_strides[2 + d];
                        }
                        max = max.max(x[off]);
                        sum += x[off];
                        inside += 1;
                    }
                }
                match op {
                    Pool::Max => max,
                    Pool::Avg { exclude_padding } => {
                        let count = if exclude_padding { inside } else { padded };
                        if count == 0 { 0.0 } else { sum / count as f64 }
                    }
                }
            })
            .collect()
    }

    fn window(k: &[usize], s: &[usize], pb: &[usize], pa: &[usize], out: &[usize]) -> PoolWindow {
        PoolWindow {
            kernel: k.to_vec(),
            strides: s.to_vec(),
            pad_before: pb.to_vec(),
            pad_after: pa.to_vec(),
            output: out.to_vec(),
        }
    }

    #[test]
    fn pools_against_f64() {
        let cases = [
            // cnn: 2x2 stride 2.
            (vec![1, 8, 16, 16], window(&[2, 2], &[2, 2], &[0, 0], &[0, 0], &[8, 8])),
            // 1-d with asymmetric padding.
            (vec![2, 3, 7], window(&[3], &[2], &[1], &[2], &[4])),
            // ceil_mode: a last window that reaches past the padded input.
            (vec![1, 2, 5, 6], window(&[2, 3], &[2, 2], &[1, 1], &[1, 1], &[3, 4])),
            (vec![1, 1, 6], window(&[3], &[2], &[0], &[0], &[3])),
            // 3-d, and padding wider than half the window.
            (
                vec![1, 2, 4, 5, 6],
                window(&[2, 3, 2], &[1, 2, 3], &[1, 2, 0], &[0, 2, 1], &[4, 4, 3]),
            ),
            (vec![1, 1, 4], window(&[2], &[1], &[2], &[0], &[5])),
            // Big enough to split across threads.
            (vec![4, 32, 64, 64], window(&[3, 3], &[1, 1], &[1, 1], &[1, 1], &[64, 64])),
        ];
        for (shape, w) in cases {
            let x = values_f16(numel(&shape), 41);
            let xr = to_f64(&x);
            let out_shape = pool_output_shape(&shape, &w).unwrap();
            let n = numel(&out_shape);
            let want = pool_reference(&xr, &shape, &w, Pool::Max);
            let mut out = vec![f16::ZERO; n];
            max_pool(&x, &shape, &w, &mut out).unwrap();
            let got = to_f64(&out);
            assert_eq!(got, want, "max_pool {shape:?} {w:?}");
            for exclude_padding in [false, true] {
                let want = pool_reference(&xr, &shape, &w, Pool::Avg { exclude_padding });
                avg_pool(&x, &shape, &w, exclude_padding, &mut out).unwrap();
                let kn: usize = w.kernel.iter().product();
                let what = format!("avg_pool {shape:?} {w:?} exclude {exclude_padding}");
                assert_close_f16(&out, &want, 1.0, kn as f64 * 2f64.powi(-24), &what);
                let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                let mut out32 = vec![0.0f32; n];
                avg_pool(&x32, &shape, &w, exclude_padding, &mut out32).unwrap();
                for (i, (g, r)) in out32.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - r).abs() <= kn as f64 * 2f64.powi(-23),
                        "{what} fp32[{i}]"
                    );
                }
            }
        }
    }

    #[test]
    fn pool_corner_values() {
        // A window over padding only: -inf for max, 0 for an average that excludes padding,
        // and 0 / 2 = 0 for one that counts it.
        let x = [f16::ONE, f16::from_f32(2.0)];
        let w = window(&[2], &[2], &[2], &[0], &[2]);
        let mut out = [f16::ZERO; 2];
        max_pool(&x, &[1, 1, 2], &w, &mut out).unwrap();
        assert_eq!(out, [f16::NEG_INFINITY, f16::from_f32(2.0)]);
        avg_pool(&x, &[1, 1, 2], &w, true, &mut out).unwrap();
        assert_eq!(out, [f16::ZERO, f16::from_f32(1.5)]);
        // NaN reads as +inf for fp16 and wins the max; +inf and -inf average to +0.
        let x = [f16::NAN, f16::ONE, f16::NEG_INFINITY, f16::INFINITY];
        let w = window(&[2], &[2], &[0], &[0], &[2]);
        max_pool(&x, &[1, 1, 4], &w, &mut out).unwrap();
        assert_eq!(out, [f16::INFINITY, f16::INFINITY]);
        avg_pool(&x, &[1, 1, 4], &w, false, &mut out).unwrap();
        assert_eq!(out[0], f16::INFINITY);
        assert_eq!(out[1].to_bits(), 0);
        // fp32 keeps IEEE NaN through a max.
        let mut o32 = [0.0f32; 1];
        max_pool(
            &[1.0f32, f32::NAN, 0.0],
            &[1, 1, 3],
            &window(&[3], &[1], &[0], &[0], &[1]),
            &mut o32,
        )
        .unwrap();
        assert!(o32[0].is_nan());
    }

    #[test]
    fn pool_shape_errors() {
        let x = [0.0f32; 8];
        let mut out = [0.0f32; 8];
        let ok = window(&[2], &[2], &[0], &[0], &[4]);
        assert!(max_pool(&x, &[1, 1, 8], &ok, &mut out[..4]).is_ok());
        // Output count does not match the output slice.
        assert!(max_pool(&x, &[1, 1, 8], &ok, &mut out[..3]).is_err());
        // A window starting past the padded input.
        let e = max_pool(&x, &[1, 1, 8], &window(&[2], &[2], &[0], &[0], &[5]), &mut out[..5]);
        assert!(e.unwrap_err().message.contains("past the padded input"));
        // Wrong number of spatial dims, zero stride, no spatial dims.
        assert!(max_pool(&x, &[1, 1, 2, 4], &ok, &mut out[..4]).is_err());
        let zero = window(&[2], &[0], &[0], &[0], &[4]);
        assert!(avg_pool(&x, &[1, 1, 8], &zero, false, &mut out[..4]).is_err());
        assert!(avg_pool(&x, &[1, 8], &ok, false, &mut out[..4]).is_err());
        let huge = window(&[2], &[usize::MAX], &[0], &[0], &[3]);
        assert!(max_pool(&x, &[1, 1, 8], &huge, &mut out[..3]).is_err());
        assert!(max_pool(&x[..7], &[1, 1, 8], &ok, &mut out[..4]).is_err());
    }

    // ---- prelu, upsample_bilinear ---------------------------------------------------------

    #[test]
    fn prelu_against_f64() {
        for shape in [vec![1, 3, 4, 4], vec![2, 5, 7], vec![1, 2, 3, 4, 2], vec![2, 8, 100, 90]] {
            let n = numel(&shape);
            let (c, plane) = (shape[1], numel(&shape[2..]));
            let x: Vec<f16> = values(n, 51).iter().map(|v| f16::from_f32(v * 8.0)).collect();
            let alpha = values_f16(c, 52);
            let a32: Vec<f32> = alpha.iter().map(|v| v.to_f32()).collect();
            // coremltools' definition: max(x, 0) + min(x, 0) alpha.
            let want: Vec<f64> = to_f64(&x)
                .iter()
                .enumerate()
                .map(|(i, v)| v.max(0.0) + v.min(0.0) * alpha[(i / plane) % c].to_f64())
                .collect();
            let mut out = vec![f16::ZERO; n];
            prelu(&x, &shape, &a32, &mut out).unwrap();
            // A product of two fp16 values is exact in f32: one correct rounding, half an ulp.
            assert_close_f16(&out, &want, 0.5, 0.0, &format!("prelu {shape:?}"));
            let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let mut out32 = vec![0.0f32; n];
            prelu(&x32, &shape, &a32, &mut out32).unwrap();
            let got: Vec<f64> = out32.iter().map(|&v| v as f64).collect();
            assert_eq!(got, want, "prelu {shape:?} fp32");
        }
        // NaN reads as +inf; a zero slope times -inf is indeterminate, +0.
        let mut out = [f16::ONE; 4];
        let x = [f16::NAN, f16::NEG_INFINITY, f16::from_f32(-2.0), f16::NEG_INFINITY];
        prelu(&x, &[1, 2, 2], &[0.5, 0.0], &mut out).unwrap();
        assert_eq!(out[0], f16::INFINITY);
        assert_eq!(out[1], f16::NEG_INFINITY);
        assert_eq!(out[2].to_f32(), 0.0);
        assert_eq!(out[3].to_bits(), 0);
        // Shapes.
        let mut o = [0.0f32; 6];
        assert!(prelu(&[0.0f32; 6], &[1, 2, 3], &[1.0; 3], &mut o).is_err());
        assert!(prelu(&[0.0f32; 6], &[6], &[1.0], &mut o).is_err());
        assert!(prelu(&[0.0f32; 5], &[1, 2, 3], &[1.0; 2], &mut o).is_err());
        assert!(prelu(&[0.0f32; 6], &[1, 2, 3], &[1.0; 2], &mut o[..5]).is_err());
    }

    /// The sampling position of output `i` of `m` from `n` inputs, by coremltools' notes
    /// (image_resizing.py upsample_bilinear, and TensorFlow's legacy rule for asymmetric).
    fn grid_ref(grid: BilinearGrid, i: usize, n: usize, m: usize) -> f64 {
        let (i, n, m) = (i as f64, n as f64, m as f64);
        let p = match grid {
            BilinearGrid::AlignCorners => {
                if m == 1.0 {
                    0.0
                } else {
                    i * ((n - 1.0) / (m - 1.0))
                }
            }
            BilinearGrid::HalfPixelCenters => {
                let spacing = n / m;
                i * spacing + 0.5 * spacing - 0.5
            }
            BilinearGrid::Asymmetric => i * (n / m),
        };
        p.max(0.0).min(n - 1.0)
    }

    fn bilinear_ref(x: &[f64], shape: &[usize], grid: BilinearGrid, out: [usize; 2]) -> Vec<f64> {
        let r = shape.len();
        let (h, w) = (shape[r - 2], shape[r - 1]);
        let planes = numel(&shape[..r - 2]);
        let mut y = Vec::new();
        for p in 0..planes {
            let at = |yy: usize, xx: usize| x[p * h * w + yy * w + xx];
            for oy in 0..out[0] {
                let gy = grid_ref(grid, oy, h, out[0]);
                let (y0, ty) = (gy.floor() as usize, gy - gy.floor());
                let y1 = (y0 + 1).min(h - 1);
                for ox in 0..out[1] {
                    let gx = grid_ref(grid, ox, w, out[1]);
                    let (x0, tx) = (gx.floor() as usize, gx - gx.floor());
                    let x1 = (x0 + 1).min(w - 1);
                    let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
                    let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
                    y.push(top * (1.0 - ty) + bottom * ty);
                }
            }
        }
        y
    }

    #[test]
    fn upsample_bilinear_against_f64() {
        // coremltools' smoke tests: [0, 1] to 6 with aligned corners, to 5 with half pixels.
        let x = [f16::ZERO, f16::ONE];
        let mut out = [f16::ZERO; 6];
        upsample_bilinear(&x, &[1, 1, 2], BilinearGrid::AlignCorners, [1, 6], &mut out).unwrap();
        assert_close_f16(&out, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 0.5, 0.0, "align corners");
        upsample_bilinear(&x, &[1, 1, 2], BilinearGrid::HalfPixelCenters, [1, 5], &mut out[..5])
            .unwrap();
        assert_close_f16(&out[..5], &[0.0, 0.1, 0.5, 0.9, 1.0], 0.5, 0.0, "half pixels");

        let grids =
            [BilinearGrid::AlignCorners, BilinearGrid::HalfPixelCenters, BilinearGrid::Asymmetric];
        let cases: [(&[usize], [usize; 2]); 6] = [
            (&[2, 5, 10, 22], [30, 88]),
            (&[2, 5, 10, 22], [25, 44]),
            (&[2, 5, 10, 22], [5, 16]),
            (&[1, 3, 7, 1], [14, 1]),
            (&[3, 1, 4], [1, 9]),
            (&[4, 16, 40, 40], [80, 80]),
        ];
        for grid in grids {
            for (shape, o) in cases {
                let x: Vec<f16> =
                    values(numel(shape), 61).iter().map(|v| f16::from_f32(v * 100.0)).collect();
                let want = bilinear_ref(&to_f64(&x), shape, grid, o);
                let mut out_shape = shape.to_vec();
                let r = shape.len();
                out_shape[r - 2..].copy_from_slice(&o);
                let mut out = vec![f16::ZERO; numel(&out_shape)];
                upsample_bilinear(&x, shape, grid, o, &mut out).unwrap();
                // Weights rounded to f32 (relative 2^-24) and a handful of f32 operations on
                // values below 100: 2^-15 absolute, then one rounding (half an ulp; one allowed).
                let what = format!("upsample_bilinear {grid:?} {shape:?} -> {o:?}");
                assert_close_f16(&out, &want, 1.0, 2f64.powi(-15), &what);
                let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                let mut out32 = vec![0.0f32; out.len()];
                upsample_bilinear(&x32, shape, grid, o, &mut out32).unwrap();
                for (i, (g, r)) in out32.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - r).abs() <= 2f64.powi(-15),
                        "{what} fp32[{i}]: {g} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn upsample_bilinear_fp16_rules_and_shapes() {
        // An infinity beside a sample of weight 0 stays out of it; NaN reads as +inf.
        let x = [f16::ONE, f16::INFINITY, f16::NAN, f16::from_f32(2.0)];
        let mut out = [f16::ZERO; 4];
        upsample_bilinear(&x, &[1, 1, 4], BilinearGrid::Asymmetric, [1, 4], &mut out).unwrap();
        assert_eq!(out, [f16::ONE, f16::INFINITY, f16::INFINITY, f16::from_f32(2.0)]);
        // Halfway between +inf and -inf is indeterminate: +0.
        let x = [f16::INFINITY, f16::NEG_INFINITY];
        let mut out = [f16::ONE; 3];
        upsample_bilinear(&x, &[1, 1, 2], BilinearGrid::AlignCorners, [1, 3], &mut out).unwrap();
        assert_eq!(out[1].to_bits(), 0);
        let mut o = [0.0f32; 8];
        let x = [0.0f32; 4];
        assert!(
            upsample_bilinear(&x, &[1, 2, 2], BilinearGrid::AlignCorners, [2, 4], &mut o).is_ok()
        );
        assert!(
            upsample_bilinear(&x, &[1, 2, 2], BilinearGrid::AlignCorners, [2, 3], &mut o).is_err()
        );
        assert!(upsample_bilinear(&x, &[4], BilinearGrid::AlignCorners, [2, 4], &mut o).is_err());
        assert!(
            upsample_bilinear(&x[..3], &[1, 2, 2], BilinearGrid::AlignCorners, [2, 4], &mut o)
                .is_err()
        );
        let mut none: [f32; 0] = [];
        assert!(
            upsample_bilinear(
                &[] as &[f32],
                &[1, 0, 2],
                BilinearGrid::Asymmetric,
                [0, 4],
                &mut none
            )
            .is_ok()
        );
        assert!(
            upsample_bilinear(&[] as &[f32], &[1, 0, 2], BilinearGrid::Asymmetric, [2, 4], &mut o)
                .is_err()
        );
    }
}
