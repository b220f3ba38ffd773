//! Kernels of the indexing and shape-building ops: gather, gather_along_axis, stack, tile, pad,
//! band_part and upsample_nearest_neighbor. expand_dims and squeeze need none: the plan
//! aliases their input's buffer, as for reshape.
//!
//! Like the layout kernels these are generic over any `T: Copy` and copy elements bit for bit,
//! whatever they hold (fp16, fp32, integers, bools; NaN payloads and signed zeros included).
//! Indices are read through [`IndexInt`] from any integer type; an index out of range is an
//! error naming it, its position in the indices and the axis size, never a read outside `x`.
//!
//! All of them are memory-bound copies of contiguous runs, so they stay single-threaded.

use super::{KernelError, Result, check_len, numel};

const GATHER: &str = "gather";
const GATHER_ALONG_AXIS: &str = "gather_along_axis";

/// An integer type indices are stored in.
pub trait IndexInt: Copy + Send + Sync + 'static {
    /// The index's value (u64 values past i64::MAX saturate, which is out of range anyway).
    fn to_i64(self) -> i64;
}

macro_rules! index_int {
    ($($t:ty),*) => {$(
        impl IndexInt for $t {
            #[inline(always)]
            fn to_i64(self) -> i64 {
                i64::try_from(self).unwrap_or(i64::MAX)
            }
        }
    )*};
}
index_int!(i8, u8, i16, u16, i32, u32, i64, u64);

/// What a negative index means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegativeIndices {
    /// `-k` is element `size - k` of the axis (iOS15/iOS16 gather).
    FromEnd,
    /// Out of range (iOS17 gather with `validate_indices`).
    OutOfRange,
}

/// The position of flat index `i` in a tensor of `shape`, for messages: `[1, 3]`.
fn position(mut i: usize, shape: &[usize]) -> String {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
    }
    format!("{idx:?}")
}

/// Index `v` (found at flat position `at` of indices of `shape`) resolved against an axis of
/// `dim` elements.
#[inline]
fn resolve(
    kernel: &'static str,
    v: i64,
    dim: usize,
    axis: usize,
    negative: NegativeIndices,
    (at, shape): (usize, &[usize]),
) -> Result<usize> {
    let d = i64::try_from(dim).unwrap_or(i64::MAX);
    let i = if v < 0 && negative == NegativeIndices::FromEnd { v + d } else { v };
    if (0..d).contains(&i) {
        return Ok(i as usize);
    }
    let why = if v < 0 && negative == NegativeIndices::OutOfRange {
        " (with validate_indices, negative indices are out of range)"
    } else {
        ""
    };
    Err(KernelError::new(
        kernel,
        format!(
            "index {v} at indices{} is out of range for axis {axis} of size {dim}{why}",
            position(at, shape)
        ),
    ))
}

/// Where gather reads: along `axis` of x, with the first `batch_dims` dims shared by x and
/// the indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherAxes {
    /// The axis of x the indices select along.
    pub axis: usize,
    /// Leading dims shared by x and the indices (at most `axis`).
    pub batch_dims: usize,
    /// What a negative index means.
    pub negative: NegativeIndices,
}

/// gather's output shape: `x[:axis] + indices[batch_dims:] + x[axis + 1:]`.
pub fn gather_output_shape(
    x_shape: &[usize],
    indices_shape: &[usize],
    g: GatherAxes,
) -> Result<Vec<usize>> {
    let GatherAxes { axis, batch_dims, .. } = g;
    if axis >= x_shape.len() || batch_dims > axis || batch_dims > indices_shape.len() {
        return Err(KernelError::new(
            GATHER,
            format!(
                "axis {axis} and batch_dims {batch_dims} do not fit x {x_shape:?} and indices {indices_shape:?}"
            ),
        ));
    }
    if x_shape[..batch_dims] != indices_shape[..batch_dims] {
        return Err(KernelError::new(
            GATHER,
            format!(
                "the {batch_dims} batch dims of x {x_shape:?} and indices {indices_shape:?} differ"
            ),
        ));
    }
    let mut out = x_shape[..axis].to_vec();
    out.extend_from_slice(&indices_shape[batch_dims..]);
    out.extend_from_slice(&x_shape[axis + 1..]);
    Ok(out)
}

/// `out[b, p, i, q] = x[b, p, indices[b, i], q]`: `b` over the batch dims, `p` over the other
/// dims of x before the axis, `i` over the other dims of the indices, `q` over the dims of x
/// after the axis.
pub fn gather<T: Copy, I: IndexInt>(
    x: &[T],
    x_shape: &[usize],
    indices: &[I],
    indices_shape: &[usize],
    g: GatherAxes,
    out: &mut [T],
) -> Result<()> {
    let out_shape = gather_output_shape(x_shape, indices_shape, g)?;
    check_len(GATHER, "x", x.len(), x_shape)?;
    check_len(GATHER, "indices", indices.len(), indices_shape)?;
    check_len(GATHER, "output", out.len(), &out_shape)?;
    let GatherAxes { axis, batch_dims, negative } = g;
    let batch = numel(&x_shape[..batch_dims]);
    let pre = numel(&x_shape[batch_dims..axis]);
    let dim = x_shape[axis];
    let picks = numel(&indices_shape[batch_dims..]);
    let inner = numel(&x_shape[axis + 1..]);
    if out.is_empty() {
        return Ok(());
    }
    // Each index once, before any copy: an error leaves no half-checked reads behind.
    let mut rows = Vec::with_capacity(indices.len());
    for (at, v) in indices.iter().enumerate() {
        rows.push(resolve(GATHER, v.to_i64(), dim, axis, negative, (at, indices_shape))?);
    }
    let mut dst = 0;
    for b in 0..batch {
        for p in 0..pre {
            let base = (b * pre + p) * dim;
            for &row in &rows[b * picks..(b + 1) * picks] {
                let src = (base + row) * inner;
                out[dst..dst + inner].copy_from_slice(&x[src..src + inner]);
                dst += inner;
            }
        }
    }
    debug_assert_eq!(dst, out.len());
    Ok(())
}

/// `out[p, i, q] = x[p, indices[p, i, q], q]` along `axis`: indices and output share a shape,
/// which is x's except along the axis.
pub fn gather_along_axis<T: Copy, I: IndexInt>(
    x: &[T],
    x_shape: &[usize],
    indices: &[I],
    indices_shape: &[usize],
    axis: usize,
    negative: NegativeIndices,
    out: &mut [T],
) -> Result<()> {
    let fits = axis < x_shape.len()
        && indices_shape.len() == x_shape.len()
        && (0..x_shape.len()).all(|d| d == axis || x_shape[d] == indices_shape[d]);
    if !fits {
        return Err(KernelError::new(
            GATHER_ALONG_AXIS,
            format!(
                "indices {indices_shape:?} do not fit x {x_shape:?} along axis {axis}: the shapes must agree elsewhere"
            ),
        ));
    }
    check_len(GATHER_ALONG_AXIS, "x", x.len(), x_shape)?;
    check_len(GATHER_ALONG_AXIS, "indices", indices.len(), indices_shape)?;
    check_len(GATHER_ALONG_AXIS, "output", out.len(), indices_shape)?;
    let dim = x_shape[axis];
    let picks = indices_shape[axis];
    let inner = numel(&x_shape[axis + 1..]);
    for (at, (o, v)) in out.iter_mut().zip(indices).enumerate() {
        let q = at % inner.max(1);
        let p = at / (inner * picks).max(1);
        let row = resolve(GATHER_ALONG_AXIS, v.to_i64(), dim, axis, negative, (at, indices_shape))?;
        *o = x[(p * dim + row) * inner + q];
    }
    Ok(())
}

/// stack: `inputs` (each of `shape`) joined along a new dim inserted at `axis` (0..=rank).
pub fn stack<T: Copy>(inputs: &[&[T]], shape: &[usize], axis: usize, out: &mut [T]) -> Result<()> {
    const KERNEL: &str = "stack";
    if axis > shape.len() || inputs.is_empty() {
        return Err(KernelError::new(
            KERNEL,
            format!("cannot stack {} inputs of {shape:?} at axis {axis}", inputs.len()),
        ));
    }
    for x in inputs {
        check_len(KERNEL, "input", x.len(), shape)?;
    }
    let mut out_shape = shape.to_vec();
    out_shape.insert(axis, inputs.len());
    check_len(KERNEL, "output", out.len(), &out_shape)?;
    let outer = numel(&shape[..axis]);
    let inner = numel(&shape[axis..]);
    let mut dst = 0;
    for o in 0..outer {
        for x in inputs {
            out[dst..dst + inner].copy_from_slice(&x[o * inner..(o + 1) * inner]);
            dst += inner;
        }
    }
    Ok(())
}

/// Steps a row-major multi-index over `dims`; false once it wraps around to all zeros.
fn advance(idx: &mut [usize], dims: &[usize]) -> bool {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < dims[d] {
            return true;
        }
        idx[d] = 0;
    }
    false
}

/// tile: dim `i` of x repeated `reps[i]` times, so `out[o] = x[o mod shape]` per dim.
pub fn tile<T: Copy>(x: &[T], shape: &[usize], reps: &[usize], out: &mut [T]) -> Result<()> {
    const KERNEL: &str = "tile";
    if reps.len() != shape.len() || shape.is_empty() {
        return Err(KernelError::new(
            KERNEL,
            format!("reps {reps:?} do not fit x of shape {shape:?}"),
        ));
    }
    check_len(KERNEL, "input", x.len(), shape)?;
    let out_shape = shape
        .iter()
        .zip(reps)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| KernelError::new(KERNEL, "the output shape overflows"))?;
    check_len(KERNEL, "output", out.len(), &out_shape)?;
    if out.is_empty() {
        return Ok(());
    }
    // Row by row of the output's last dim: a row is the matching row of x, repeated.
    let r = shape.len() - 1;
    let (width, out_width) = (shape[r], out_shape[r]);
    let strides = super::contiguous_strides(shape);
    let mut idx = vec![0; r];
    for row in out.chunks_mut(out_width) {
        let src: usize =
            idx.iter().zip(shape).zip(&strides).map(|((&i, &d), &s)| (i % d) * s).sum();
        for chunk in row.chunks_mut(width) {
            chunk.copy_from_slice(&x[src..src + width]);
        }
        advance(&mut idx, &out_shape[..r]);
    }
    Ok(())
}

/// How pad fills the new elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadFill<T> {
    /// With this value.
    Constant(T),
    /// Mirrored about the edge element, which is not repeated; pads at most `dim - 1`.
    Reflect,
    /// With copies of the edge element.
    Replicate,
}

/// Where output coordinate `o` of a padded dim reads in x: None for a constant fill.
#[inline]
fn source<T>(o: usize, before: usize, dim: usize, fill: &PadFill<T>) -> Option<usize> {
    let i = o as isize - before as isize;
    let last = dim as isize - 1;
    if (0..=last).contains(&i) {
        return Some(i as usize);
    }
    match fill {
        PadFill::Constant(_) => None,
        PadFill::Reflect => Some(if i < 0 { -i } else { 2 * last - i } as usize),
        PadFill::Replicate => Some(i.clamp(0, last) as usize),
    }
}

/// pad: `before[d]` and `after[d]` new elements around each dim `d` of x.
pub fn pad<T: Copy>(
    x: &[T],
    shape: &[usize],
    before: &[usize],
    after: &[usize],
    fill: PadFill<T>,
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "pad";
    if before.len() != shape.len() || after.len() != shape.len() || shape.is_empty() {
        return Err(KernelError::new(
            KERNEL,
            format!("pads {before:?} and {after:?} do not fit x of shape {shape:?}"),
        ));
    }
    check_len(KERNEL, "input", x.len(), shape)?;
    let mut out_shape = Vec::with_capacity(shape.len());
    for d in 0..shape.len() {
        let (dim, widest) = (shape[d], before[d].max(after[d]));
        let limit = match fill {
            PadFill::Constant(_) => usize::MAX,
            PadFill::Reflect => dim.saturating_sub(1),
            PadFill::Replicate if dim == 0 => 0,
            PadFill::Replicate => usize::MAX,
        };
        if widest > limit {
            return Err(KernelError::new(
                KERNEL,
                format!("cannot pad dim {d} of size {dim} by {widest} in this mode"),
            ));
        }
        let n = dim.checked_add(before[d]).and_then(|n| n.checked_add(after[d]));
        out_shape.push(n.ok_or_else(|| KernelError::new(KERNEL, "the output shape overflows"))?);
    }
    check_len(KERNEL, "output", out.len(), &out_shape)?;
    if out.is_empty() {
        return Ok(());
    }
    let r = shape.len() - 1;
    let strides = super::contiguous_strides(shape);
    let (width, lead, out_width) = (shape[r], before[r], out_shape[r]);
    let constant = match fill {
        PadFill::Constant(c) => Some(c),
        PadFill::Reflect | PadFill::Replicate => None,
    };
    // Only a constant fill leaves an element without a source in x (checked above).
    let no_source = || KernelError::new(KERNEL, "an element outside x in a mode that copies");
    let mut idx = vec![0; r];
    for row in out.chunks_mut(out_width) {
        // The row of x this output row reads, or None when it lies in a constant border.
        let mut src = Some(0);
        for d in 0..r {
            src = match (src, source(idx[d], before[d], shape[d], &fill)) {
                (Some(s), Some(i)) => Some(s + i * strides[d]),
                _ => None,
            };
        }
        match (src, constant) {
            (None, Some(c)) => row.fill(c),
            (None, None) => return Err(no_source()),
            (Some(s), _) => {
                row[lead..lead + width].copy_from_slice(&x[s..s + width]);
                for o in (0..lead).chain(lead + width..out_width) {
                    row[o] = match (source(o, lead, width, &fill), constant) {
                        (Some(i), _) => x[s + i],
                        (None, Some(c)) => c,
                        (None, None) => return Err(no_source()),
                    };
                }
            }
        }
        advance(&mut idx, &out_shape[..r]);
    }
    Ok(())
}

/// band_part over the last two dims `[m, n]`: `x[.., i, j]` is kept where
/// `(lower is None or i - j <= lower) and (upper is None or j - i <= upper)`, else it becomes
/// `T::default()` (zero bits: +0, 0 or false).
pub fn band_part<T: Copy + Default>(
    x: &[T],
    shape: &[usize],
    lower: Option<usize>,
    upper: Option<usize>,
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "band_part";
    if shape.len() < 2 {
        return Err(KernelError::new(
            KERNEL,
            format!("x has shape {shape:?}; it needs rank 2 or more"),
        ));
    }
    check_len(KERNEL, "input", x.len(), shape)?;
    check_len(KERNEL, "output", out.len(), shape)?;
    let (m, n) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if m == 0 || n == 0 {
        return Ok(());
    }
    for (dst, src) in out.chunks_mut(m * n).zip(x.chunks(m * n)) {
        for i in 0..m {
            for j in 0..n {
                let keep = lower.is_none_or(|l| i <= j + l) && upper.is_none_or(|u| j <= i + u);
                dst[i * n + j] = if keep { src[i * n + j] } else { T::default() };
            }
        }
    }
    Ok(())
}

/// The input position that output `i` copies along a dim of `n` inputs grown by `scale`:
/// `min(floor(i / scale), n - 1)`, the input cell `[j scale, (j + 1) scale)` holding `i`.
/// Computed in f64, so exact for integer scales and for fractions such as 1.5 or 2.5; for other
/// fractional scales the ANE's own rounding is not measured.
#[inline]
fn nearest_source(i: usize, scale: f64, n: usize) -> usize {
    ((i as f64 / scale).floor() as usize).min(n - 1)
}

/// upsample_nearest_neighbor over the last two dims of `x [*, h, w]`: the output
/// `[*, output[0], output[1]]` copies, at `(i, j)`, the input at `(nearest_source(i, scales[0],
/// h), nearest_source(j, scales[1], w))`.
pub fn upsample_nearest<T: Copy>(
    x: &[T],
    shape: &[usize],
    scales: [f64; 2],
    output: [usize; 2],
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "upsample_nearest_neighbor";
    let &[.., h, w] = shape else {
        return Err(KernelError::new(KERNEL, format!("x has shape {shape:?}, not [*, H, W]")));
    };
    if !scales.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(KernelError::new(KERNEL, format!("scales {scales:?} must be positive")));
    }
    check_len(KERNEL, "input", x.len(), shape)?;
    let mut out_shape = shape.to_vec();
    out_shape[shape.len() - 2..].copy_from_slice(&output);
    check_len(KERNEL, "output", out.len(), &out_shape)?;
    if out.is_empty() {
        return Ok(());
    }
    if h == 0 || w == 0 {
        return Err(KernelError::new(
            KERNEL,
            format!("x {shape:?} has no element to copy into {output:?}"),
        ));
    }
    let [oh, ow] = output;
    let cols: Vec<usize> = (0..ow).map(|j| nearest_source(j, scales[1], w)).collect();
    for (plane, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (i, row) in dst.chunks_exact_mut(ow).enumerate() {
            let src = &plane[nearest_source(i, scales[0], h) * w..][..w];
            for (o, &c) in row.iter_mut().zip(&cols) {
                *o = src[c];
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    // References index several arrays with one multi-index; index loops read clearer.
    #![allow(clippy::needless_range_loop)]

    use super::*;
    use crate::sim::kernels::testutil::values;

    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        idx
    }

    fn ravel(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
    }

    /// f64 data with distinct values, so a misplaced element shows.
    fn data(n: usize, seed: u64) -> Vec<f64> {
        values(n, seed).iter().enumerate().map(|(i, &v)| i as f64 + f64::from(v) * 0.25).collect()
    }

    /// gather by its definition, one output element at a time.
    fn gather_reference(
        x: &[f64],
        xs: &[usize],
        ind: &[i64],
        is: &[usize],
        axis: usize,
        bd: usize,
    ) -> (Vec<usize>, Vec<f64>) {
        let mut os = xs[..axis].to_vec();
        os.extend_from_slice(&is[bd..]);
        os.extend_from_slice(&xs[axis + 1..]);
        let n: usize = os.iter().product();
        let k = is.len() - bd;
        let out = (0..n)
            .map(|o| {
                let oi = unravel(o, &os);
                // oi = b (bd) + p (axis - bd) + i (k) + q.
                let mut ii = oi[..bd].to_vec();
                ii.extend_from_slice(&oi[axis..axis + k]);
                let v = ind[ravel(&ii, is)];
                let v = if v < 0 { v + xs[axis] as i64 } else { v } as usize;
                let mut xi = oi[..axis].to_vec();
                xi.push(v);
                xi.extend_from_slice(&oi[axis + k..]);
                x[ravel(&xi, xs)]
            })
            .collect();
        (os, out)
    }

    #[test]
    fn gather_matches_its_definition() {
        // (x shape, indices shape, axis, batch_dims)
        let cases: &[(&[usize], &[usize], usize, usize)] = &[
            (&[100, 16], &[2, 8], 0, 0),
            (&[5, 3], &[], 0, 0),
            (&[5], &[], 0, 0),
            (&[2, 5, 3], &[4], 1, 0),
            (&[2, 5, 3], &[2, 2], 2, 0),
            (&[2, 3, 7, 4], &[2, 3, 5], 2, 2),
            (&[2, 3, 7], &[2, 5], 2, 1),
            (&[2, 3, 7], &[2, 4, 5], 1, 1),
            (&[3, 4], &[3], 0, 0),
        ];
        for (c, &(xs, is, axis, bd)) in cases.iter().enumerate() {
            let x = data(numel(xs), c as u64);
            let dim = xs[axis] as i64;
            // Every index in [-dim, dim), negative ones included.
            let ind: Vec<i64> =
                (0..numel(is) as i64).map(|i| (i * 7 + 3) % (2 * dim) - dim).collect();
            let (os, want) = gather_reference(&x, xs, &ind, is, axis, bd);
            let g = GatherAxes { axis, batch_dims: bd, negative: NegativeIndices::FromEnd };
            assert_eq!(gather_output_shape(xs, is, g).unwrap(), os);
            let mut out = vec![f64::NAN; want.len()];
            let i32s: Vec<i32> = ind.iter().map(|&v| v as i32).collect();
            gather(&x, xs, &i32s, is, g, &mut out).unwrap();
            assert_eq!(out, want, "case {c}: {xs:?} {is:?} axis {axis} batch_dims {bd}");
            // The same through int16 and int8 indices.
            let i16s: Vec<i16> = ind.iter().map(|&v| v as i16).collect();
            out.fill(f64::NAN);
            gather(&x, xs, &i16s, is, g, &mut out).unwrap();
            assert_eq!(out, want, "case {c} int16");
            if dim <= 100 {
                let i8s: Vec<i8> = ind.iter().map(|&v| v as i8).collect();
                out.fill(f64::NAN);
                gather(&x, xs, &i8s, is, g, &mut out).unwrap();
                assert_eq!(out, want, "case {c} int8");
            }
        }
    }

    #[test]
    fn gather_copies_bits_exactly() {
        // fp16 bit patterns: NaN payloads, -0, infinities, subnormals move untouched.
        let x: Vec<u16> = vec![0x7e01, 0x8000, 0xfc00, 0x0001, 0x3c00, 0x7c00];
        let mut out = vec![0u16; 4];
        let g = GatherAxes { axis: 0, batch_dims: 0, negative: NegativeIndices::FromEnd };
        gather(&x, &[6], &[0u8, 1, 3, 2], &[4], g, &mut out).unwrap();
        assert_eq!(out, [0x7e01, 0x8000, 0x0001, 0xfc00]);
    }

    #[test]
    fn gather_index_out_of_range_is_an_error() {
        let x = data(12, 1);
        let mut out = vec![0.0; 6];
        let from_end = GatherAxes { axis: 0, batch_dims: 0, negative: NegativeIndices::FromEnd };
        let e = gather(&x, &[4, 3], &[0i32, 4], &[2], from_end, &mut out).unwrap_err();
        assert_eq!(e.kernel, "gather");
        assert_eq!(e.message, "index 4 at indices[1] is out of range for axis 0 of size 4");
        let e = gather(&x, &[4, 3], &[-5i32, 0], &[2], from_end, &mut out).unwrap_err();
        assert_eq!(e.message, "index -5 at indices[0] is out of range for axis 0 of size 4");
        let e = gather(&x, &[4, 3], &[u16::MAX, 0], &[2], from_end, &mut out).unwrap_err();
        assert!(e.message.starts_with("index 65535 at indices[0]"), "{}", e.message);
        let strict = GatherAxes { negative: NegativeIndices::OutOfRange, ..from_end };
        let e = gather(&x, &[4, 3], &[1i32, -1], &[2], strict, &mut out).unwrap_err();
        assert_eq!(
            e.message,
            "index -1 at indices[1] is out of range for axis 0 of size 4 (with validate_indices, negative indices are out of range)"
        );
        let e = gather(
            &x,
            &[2, 2, 3],
            &[0i32, 1, 2, 0],
            &[2, 2],
            GatherAxes { axis: 1, ..from_end },
            &mut [0.0; 24],
        )
        .unwrap_err();
        assert_eq!(e.message, "index 2 at indices[1, 0] is out of range for axis 1 of size 2");
    }

    #[test]
    fn gather_rejects_bad_shapes() {
        let g = GatherAxes { axis: 0, batch_dims: 0, negative: NegativeIndices::FromEnd };
        let x = [1.0f32; 6];
        assert!(gather(&x, &[2, 3], &[0i32], &[1], g, &mut [0.0; 2]).is_err());
        assert!(gather(&x, &[2, 2], &[0i32], &[1], g, &mut [0.0; 3]).is_err());
        assert!(gather(&x, &[2, 3], &[0i32, 1], &[1], g, &mut [0.0; 3]).is_err());
        assert!(
            gather(&x, &[2, 3], &[0i32], &[1], GatherAxes { axis: 2, ..g }, &mut [0.0; 3]).is_err()
        );
        let bd = GatherAxes { axis: 1, batch_dims: 1, ..g };
        assert!(gather(&x, &[2, 3], &[0i32; 3], &[3], bd, &mut [0.0; 3]).is_err());
        assert!(
            gather(&x, &[2, 3], &[0i32], &[1], GatherAxes { batch_dims: 1, ..g }, &mut [0.0; 3])
                .is_err()
        );
    }

    #[test]
    fn gather_along_axis_matches_its_definition() {
        let cases: &[(&[usize], &[usize], usize)] = &[
            (&[2, 5, 3], &[2, 7, 3], 1),
            (&[4, 3], &[2, 3], 0),
            (&[4, 3], &[4, 6], 1),
            (&[6], &[9], 0),
            (&[2, 3, 4], &[2, 3, 1], 2),
        ];
        for (c, &(xs, is, axis)) in cases.iter().enumerate() {
            let x = data(numel(xs), 10 + c as u64);
            let dim = xs[axis] as i64;
            let ind: Vec<i64> =
                (0..numel(is) as i64).map(|i| (i * 5 + 1) % (2 * dim) - dim).collect();
            let want: Vec<f64> = (0..ind.len())
                .map(|o| {
                    let mut idx = unravel(o, is);
                    let v = ind[o];
                    idx[axis] = if v < 0 { v + dim } else { v } as usize;
                    x[ravel(&idx, xs)]
                })
                .collect();
            let mut out = vec![f64::NAN; want.len()];
            let i16s: Vec<i16> = ind.iter().map(|&v| v as i16).collect();
            gather_along_axis(&x, xs, &i16s, is, axis, NegativeIndices::FromEnd, &mut out).unwrap();
            assert_eq!(out, want, "case {c}");
        }
        let x = data(6, 3);
        let mut out = vec![0.0; 2];
        let e = gather_along_axis(
            &x,
            &[2, 3],
            &[0u8, 3],
            &[2, 1],
            1,
            NegativeIndices::FromEnd,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.message, "index 3 at indices[1, 0] is out of range for axis 1 of size 3");
        assert!(
            gather_along_axis(
                &x,
                &[2, 3],
                &[0u8, 1],
                &[2, 1],
                2,
                NegativeIndices::FromEnd,
                &mut out
            )
            .is_err()
        );
        assert!(
            gather_along_axis(&x, &[2, 3], &[0u8, 1], &[2], 0, NegativeIndices::FromEnd, &mut out)
                .is_err()
        );
        assert!(
            gather_along_axis(
                &x,
                &[2, 3],
                &[0u8, 1],
                &[2, 1],
                1,
                NegativeIndices::FromEnd,
                &mut out[..1]
            )
            .is_err()
        );
    }

    #[test]
    fn stack_matches_its_definition() {
        let shape = [2, 3, 4];
        let parts: Vec<Vec<f64>> = (0..3).map(|k| data(24, 20 + k)).collect();
        let refs: Vec<&[f64]> = parts.iter().map(|p| p.as_slice()).collect();
        for axis in 0..=3 {
            let mut os = shape.to_vec();
            os.insert(axis, 3);
            let want: Vec<f64> = (0..72)
                .map(|o| {
                    let mut idx = unravel(o, &os);
                    let k = idx.remove(axis);
                    parts[k][ravel(&idx, &shape)]
                })
                .collect();
            let mut out = vec![0.0; 72];
            stack(&refs, &shape, axis, &mut out).unwrap();
            assert_eq!(out, want, "axis {axis}");
        }
        // Scalars stack into a vector.
        let mut out = [0i32; 2];
        stack(&[&[7], &[-3]], &[], 0, &mut out).unwrap();
        assert_eq!(out, [7, -3]);
        assert!(stack(&refs, &shape, 4, &mut [0.0; 72]).is_err());
        assert!(stack(&refs, &shape, 0, &mut [0.0; 71]).is_err());
        assert!(stack(&refs, &[2, 3, 5], 0, &mut [0.0; 90]).is_err());
        assert!(stack::<f64>(&[], &shape, 0, &mut []).is_err());
    }

    #[test]
    fn tile_matches_its_definition() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3], &[2, 1]),
            (&[2, 3], &[1, 3]),
            (&[2, 3, 1], &[2, 2, 5]),
            (&[4], &[3]),
            (&[1, 2], &[3, 2]),
        ];
        for &(shape, reps) in cases {
            let x = data(numel(shape), 30);
            let os: Vec<usize> = shape.iter().zip(reps).map(|(d, r)| d * r).collect();
            let want: Vec<f64> = (0..numel(&os))
                .map(|o| {
                    let idx: Vec<usize> =
                        unravel(o, &os).iter().zip(shape).map(|(i, d)| i % d).collect();
                    x[ravel(&idx, shape)]
                })
                .collect();
            let mut out = vec![0.0; want.len()];
            tile(&x, shape, reps, &mut out).unwrap();
            assert_eq!(out, want, "{shape:?} x {reps:?}");
        }
        let x = [1u8, 2, 3];
        assert!(tile(&x, &[3], &[2, 1], &mut [0; 6]).is_err());
        assert!(tile(&x, &[3], &[2], &mut [0; 5]).is_err());
        assert!(tile(&x, &[4], &[2], &mut [0; 8]).is_err());
        assert!(tile(&x, &[3], &[usize::MAX], &mut [0; 8]).is_err());
    }

    /// pad by its definition (numpy's constant, reflect and edge modes).
    fn pad_reference(
        x: &[f64],
        shape: &[usize],
        before: &[usize],
        after: &[usize],
        fill: PadFill<f64>,
    ) -> Vec<f64> {
        let os: Vec<usize> = (0..shape.len()).map(|d| shape[d] + before[d] + after[d]).collect();
        (0..numel(&os))
            .map(|o| {
                let oi = unravel(o, &os);
                let mut xi = Vec::new();
                for d in 0..shape.len() {
                    let i = oi[d] as i64 - before[d] as i64;
                    let n = shape[d] as i64;
                    let i = if (0..n).contains(&i) {
                        i
                    } else {
                        match fill {
                            PadFill::Constant(c) => return c,
                            PadFill::Reflect if i < 0 => -i,
                            PadFill::Reflect => 2 * (n - 1) - i,
                            PadFill::Replicate => i.clamp(0, n - 1),
                        }
                    };
                    xi.push(i as usize);
                }
                x[ravel(&xi, shape)]
            })
            .collect()
    }

    #[test]
    fn pad_matches_its_definition_in_every_mode() {
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[5], &[2], &[3]),
            (&[3, 4], &[0, 3], &[0, 1]),
            (&[3, 4], &[2, 1], &[1, 2]),
            (&[2, 3, 4], &[1, 0, 2], &[1, 2, 0]),
            (&[2, 1, 3], &[0, 0, 2], &[0, 0, 2]),
        ];
        for &(shape, before, after) in cases {
            let x = data(numel(shape), 40);
            for fill in [PadFill::Constant(-7.5), PadFill::Reflect, PadFill::Replicate] {
                let reflect_fits = (0..shape.len()).all(|d| before[d].max(after[d]) < shape[d]);
                if fill == PadFill::Reflect && !reflect_fits {
                    let n: usize =
                        (0..shape.len()).map(|d| shape[d] + before[d] + after[d]).product();
                    assert!(pad(&x, shape, before, after, fill, &mut vec![0.0; n]).is_err());
                    continue;
                }
                let want = pad_reference(&x, shape, before, after, fill);
                let mut out = vec![f64::NAN; want.len()];
                pad(&x, shape, before, after, fill, &mut out).unwrap();
                assert_eq!(out, want, "{shape:?} {before:?} {after:?} {fill:?}");
            }
        }
        let x = [1.0f32; 3];
        assert!(pad(&x, &[3], &[1], &[1], PadFill::Constant(0.0), &mut [0.0; 4]).is_err());
        assert!(pad(&x, &[3], &[1, 0], &[1], PadFill::Constant(0.0), &mut [0.0; 5]).is_err());
        assert!(pad(&x, &[3], &[3], &[0], PadFill::Reflect, &mut [0.0; 6]).is_err());
        assert!(pad(&[] as &[f32], &[0], &[1], &[0], PadFill::Replicate, &mut [0.0; 1]).is_err());
    }

    #[test]
    fn band_part_keeps_the_band() {
        let shape = [2, 4, 5];
        let x = data(40, 50);
        for (lower, upper) in [
            (None, None),
            (Some(0), None),
            (None, Some(0)),
            (Some(0), Some(0)),
            (Some(1), Some(2)),
            (Some(9), Some(0)),
        ] {
            let want: Vec<f64> = (0..40)
                .map(|o| {
                    let idx = unravel(o, &shape);
                    let (i, j) = (idx[1] as i64, idx[2] as i64);
                    let keep = lower.is_none_or(|l| i - j <= l as i64)
                        && upper.is_none_or(|u| j - i <= u as i64);
                    if keep { x[o] } else { 0.0 }
                })
                .collect();
            let mut out = vec![f64::NAN; 40];
            band_part(&x, &shape, lower, upper, &mut out).unwrap();
            assert_eq!(out, want, "lower {lower:?} upper {upper:?}");
        }
        // Outside the band is +0 even for -x, inf and NaN; bools become false.
        let mut out = [1u16; 4];
        band_part(&[0xfc00u16, 0x7e00, 0x8001, 0xbc00], &[2, 2], Some(0), Some(0), &mut out)
            .unwrap();
        assert_eq!(out, [0xfc00, 0, 0, 0xbc00]);
        let mut out = [true; 4];
        band_part(&[true; 4], &[2, 2], None, Some(0), &mut out).unwrap();
        assert_eq!(out, [true, false, true, true]);
        assert!(band_part(&[1.0f32; 4], &[4], None, None, &mut [0.0; 4]).is_err());
        assert!(band_part(&[1.0f32; 4], &[2, 2], None, None, &mut [0.0; 3]).is_err());
    }

    #[test]
    fn upsample_nearest_copies_the_nearest_earlier_element() {
        // coremltools' smoke test: [1.5, 2.5, 3.5] by (1, 2).
        let mut out = [0.0f32; 6];
        upsample_nearest(&[1.5f32, 2.5, 3.5], &[1, 1, 1, 3], [1.0, 2.0], [1, 6], &mut out).unwrap();
        assert_eq!(out, [1.5, 1.5, 2.5, 2.5, 3.5, 3.5]);
        // By definition, for integer, fractional and shrinking scales: output (i, j) reads
        // input (floor(i / sh), floor(j / sw)), clamped to the last element.
        let cases: &[(&[usize], [f64; 2], [usize; 2])] = &[
            (&[2, 3, 4, 5], [2.0, 3.0], [8, 15]),
            (&[1, 3, 5], [1.5, 2.5], [4, 12]),
            (&[2, 1, 5, 4], [1.3, 0.5], [6, 2]),
            (&[1, 2, 3], [1.0, 1.0], [2, 3]),
            (&[3, 1, 1], [4.0, 7.0], [4, 7]),
        ];
        for &(shape, scales, o) in cases {
            let r = shape.len();
            let x = data(numel(shape), 70);
            let mut os = shape.to_vec();
            os[r - 2..].copy_from_slice(&o);
            let want: Vec<f64> = (0..numel(&os))
                .map(|k| {
                    let mut idx = unravel(k, &os);
                    for (d, s) in [(r - 2, scales[0]), (r - 1, scales[1])] {
                        let mut src = 0;
                        // The last input position whose cell starts at or before the output.
                        while src + 1 < shape[d] && (src + 1) as f64 * s <= idx[d] as f64 {
                            src += 1;
                        }
                        idx[d] = src;
                    }
                    x[ravel(&idx, shape)]
                })
                .collect();
            let mut out = vec![f64::NAN; want.len()];
            upsample_nearest(&x, shape, scales, o, &mut out).unwrap();
            assert_eq!(out, want, "{shape:?} by {scales:?}");
        }
        // Bits are copied, NaN payloads included.
        let mut out = [0u16; 4];
        upsample_nearest(&[0x7e01u16, 0x8000], &[1, 1, 2], [1.0, 2.0], [1, 4], &mut out).unwrap();
        assert_eq!(out, [0x7e01, 0x7e01, 0x8000, 0x8000]);
    }

    #[test]
    fn upsample_nearest_rejects_bad_shapes() {
        let x = [0u8; 6];
        let mut out = [0u8; 24];
        assert!(upsample_nearest(&x, &[1, 2, 3], [2.0, 2.0], [4, 6], &mut out).is_ok());
        assert!(upsample_nearest(&x, &[1, 2, 3], [2.0, 2.0], [4, 5], &mut out).is_err());
        assert!(upsample_nearest(&x, &[6], [2.0, 2.0], [4, 6], &mut out).is_err());
        assert!(upsample_nearest(&x[..5], &[1, 2, 3], [2.0, 2.0], [4, 6], &mut out).is_err());
        assert!(upsample_nearest(&x, &[1, 2, 3], [0.0, 2.0], [4, 6], &mut out).is_err());
        assert!(upsample_nearest(&x, &[1, 2, 3], [f64::NAN, 2.0], [4, 6], &mut out).is_err());
        assert!(
            upsample_nearest(&[] as &[u8], &[1, 0, 3], [2.0, 2.0], [2, 6], &mut out[..12]).is_err()
        );
        assert!(upsample_nearest(&[] as &[u8], &[0, 2, 3], [2.0, 2.0], [4, 6], &mut []).is_ok());
    }
}
