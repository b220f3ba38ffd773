//! matmul with numpy semantics: batch dims broadcast, optional transposes of the last two dims,
//! rank-1 operands promoted and their unit dim dropped from the result as numpy does.
//!
//! Each product runs on the simulator's [`gemm`] GEMM: operands are widened to f32
//! (exactly) while they are packed, multiplied with f32 accumulation, and each output tile is
//! rounded once to the output type as it leaves the kernel, through the ANE's output port when
//! the output is fp16. Transposed operands are read through strides, never copied. A constant
//! operand can be packed once ahead ([`pack_operand`]) and handed over as
//! [`MatmulInput::Packed`].

use super::gemm::{self, Epilogue, Operand, PackedMatrix, Port, Side, View};
use super::{
    Element, KernelError, Result, Scratch, broadcast_shapes, broadcast_strides, check_len,
    load_ane, numel,
};
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
/// activations times f32 weights (an exact widening of fp16 ones gives the same result as the
/// fp16 weights). When `O` is fp16 the output port follows the ANE: NaN -> +0, values rounding
/// to 2^15 or beyond -> ±inf. `scratch` is not needed any more (the GEMM packs into buffers of
/// its own) and is kept for callers.
#[allow(clippy::too_many_arguments)]
pub fn matmul<A: Element, B: Element, O: Element>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    transpose_a: bool,
    transpose_b: bool,
    out: &mut [O],
    _scratch: &mut Scratch,
) -> Result<()> {
    matmul_inputs(
        MatmulInput::Values(a),
        a_shape,
        MatmulInput::Values(b),
        b_shape,
        transpose_a,
        transpose_b,
        out,
    )
}

/// An operand of [`matmul_inputs`]: its elements, or the same constant packed ahead.
#[derive(Clone, Copy, Debug)]
pub enum MatmulInput<'a, T> {
    /// The operand's elements, dense and row-major in its shape.
    Values(&'a [T]),
    /// The operand packed by [`pack_operand`] for the same shape, transpose and side.
    Packed(&'a PackedOperand),
    /// A single matrix (every dim before the last two is 1) read in place from a larger
    /// tensor: row `r` (of the last-but-one dim, as stored) is the `cols` elements from
    /// `offset + r * row_stride` of `data`. A slice of rows and columns of another tensor
    /// (a weight cut from a packed input, say) needs no copy.
    Rows {
        /// The tensor the rows lie in.
        data: &'a [T],
        /// Where row 0 starts, in elements.
        offset: usize,
        /// Elements from one row's start to the next's; at least the row length.
        row_stride: usize,
    },
}

/// A constant matmul operand packed once for the GEMM: every matrix of its batch dims, laid
/// out for the side it is multiplied on.
#[derive(Clone, Debug)]
pub struct PackedOperand {
    shape: Vec<usize>,
    transpose: bool,
    side: Side,
    matrices: Vec<PackedMatrix>,
}

impl PackedOperand {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.matrices.iter().map(PackedMatrix::bytes).sum()
    }
}

/// The GEMM view of matrix `index` of an operand (dense row-major, `shape`), and its rows and
/// columns as the GEMM reads it (m x k for the left side, k x n for the right). Rank-1 operands
/// are a row (left) or a column (right), as numpy promotes them.
fn operand_view<'a>(
    data: gemm::Elems<'a>,
    shape: &[usize],
    transpose: bool,
    side: Side,
    index: usize,
) -> (View<'a>, usize, usize) {
    operand_view_in(data, None, shape, transpose, side, index)
}

/// [`operand_view`] of an operand whose rows lie `window = (offset, row_stride)` in `data`
/// (a [`MatmulInput::Rows`]), or dense from the start when `window` is `None`.
fn operand_view_in<'a>(
    data: gemm::Elems<'a>,
    window: Option<(usize, usize)>,
    shape: &[usize],
    transpose: bool,
    side: Side,
    index: usize,
) -> (View<'a>, usize, usize) {
    let (rows, cols) = match shape.len() {
        1 => match side {
            Side::Lhs => (1, shape[0]),
            Side::Rhs => (shape[0], 1),
        },
        r => (shape[r - 2], shape[r - 1]),
    };
    let transpose = transpose && shape.len() >= 2;
    let (offset, stored_stride) = window.unwrap_or((index * rows * cols, cols));
    let view = |row_stride: usize, col_stride: usize| View {
        data,
        offset,
        row_stride: row_stride as isize,
        col_stride: col_stride as isize,
    };
    if transpose {
        // Read (i, j) is stored (j, i): the matrix read is cols x rows.
        (view(1, stored_stride), cols, rows)
    } else {
        (view(stored_stride, 1), rows, cols)
    }
}

/// Packs a constant matmul operand once: `x` with `shape` (as the op gives it), its transpose
/// flag, and the side it is multiplied on (`Lhs` for matmul's x, `Rhs` for y).
pub fn pack_operand<T: Element>(
    x: &[T],
    shape: &[usize],
    transpose: bool,
    side: Side,
) -> Result<PackedOperand> {
    check_len(KERNEL, "packed operand", x.len(), shape)?;
    if shape.is_empty() {
        return Err(KernelError::new(KERNEL, "operands must have rank >= 1"));
    }
    let count = if shape.len() >= 2 { numel(&shape[..shape.len() - 2]) } else { 1 };
    let data = gemm::elems(x)?;
    let matrices = (0..count)
        .map(|i| {
            let (view, rows, cols) = operand_view(data, shape, transpose, side, i);
            PackedMatrix::pack(side, rows, cols, view)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PackedOperand { shape: shape.to_vec(), transpose, side, matrices })
}

/// [`matmul`] with operands that may have been packed ahead.
pub fn matmul_inputs<A: Element, B: Element, O: Element>(
    a: MatmulInput<'_, A>,
    a_shape: &[usize],
    b: MatmulInput<'_, B>,
    b_shape: &[usize],
    transpose_a: bool,
    transpose_b: bool,
    out: &mut [O],
) -> Result<()> {
    let dims = matmul_dims(a_shape, b_shape, transpose_a, transpose_b)?;
    check_len(KERNEL, "out", out.len(), &dims.out_shape)?;
    let a = side_source(a, a_shape, transpose_a, Side::Lhs)?;
    let b = side_source(b, b_shape, transpose_b, Side::Rhs)?;
    let port = if O::ANE_RULES { Port::AneSaturate } else { Port::Ieee };
    let (m, n, k) = (dims.m, dims.n, dims.k);
    let mn = m * n;
    if mn == 0 {
        return Ok(());
    }
    let run = |i: usize, d: &mut [O], parallel: bool| -> Result<()> {
        let lhs = a.operand(a_shape, transpose_a, Side::Lhs, dims.a_batches[i]);
        let rhs = b.operand(b_shape, transpose_b, Side::Rhs, dims.b_batches[i]);
        let epilogue = Epilogue::port(port);
        gemm::gemm(m, n, k, lhs, rhs, gemm::out(d)?, n, epilogue, parallel)
    };
    let batches = dims.a_batches.len();
    let macs = mn.saturating_mul(k);
    // Many small products: one per rayon task. Few large ones: the GEMM splits each.
    // With at least two products per thread, whole products per task also balance, and save
    // the GEMM's own split (a fork and join per product).
    let per_batch_parallel = batches > 1
        && (macs < super::GEMM_PARALLEL_MACS || batches >= 2 * rayon::current_num_threads())
        && super::parallel_worth_it(macs.saturating_mul(batches) / 8);
    if per_batch_parallel {
        out.par_chunks_mut(mn).enumerate().try_for_each(|(i, d)| run(i, d, false))
    } else {
        out.chunks_mut(mn).enumerate().try_for_each(|(i, d)| run(i, d, true))
    }
}

/// An operand's elements or its packed matrices, checked against the product's shape.
pub(crate) enum Source<'a> {
    /// Dense elements, or rows in place (`Some((offset, row_stride))`).
    Values(gemm::Elems<'a>, Option<(usize, usize)>),
    Packed(&'a PackedOperand),
}

impl<'a> Source<'a> {
    /// The GEMM operand for matrix `index` of the operand's batch dims (`shape`, `transpose`
    /// and `side` as [`side_source`] checked them).
    pub(crate) fn operand(
        &self,
        shape: &[usize],
        transpose: bool,
        side: Side,
        index: usize,
    ) -> Operand<'a> {
        match self {
            Source::Values(data, window) => {
                Operand::View(operand_view_in(*data, *window, shape, transpose, side, index).0)
            }
            Source::Packed(p) => Operand::Packed(p.matrices[index].panels()),
        }
    }
}

/// Checks an operand against its shape, transpose and side (a packed one must have been
/// packed for exactly those), as the GEMM will read it.
pub(crate) fn side_source<'a, T: Element>(
    x: MatmulInput<'a, T>,
    shape: &[usize],
    transpose: bool,
    side: Side,
) -> Result<Source<'a>> {
    match x {
        MatmulInput::Values(v) => {
            check_len(KERNEL, if side == Side::Lhs { "a" } else { "b" }, v.len(), shape)?;
            Ok(Source::Values(gemm::elems(v)?, None))
        }
        MatmulInput::Rows { data, offset, row_stride } => {
            let name = if side == Side::Lhs { "a" } else { "b" };
            let r = shape.len();
            let (rows, cols) = if r >= 2 { (shape[r - 2], shape[r - 1]) } else { (0, 0) };
            let last =
                (rows.max(1) - 1).checked_mul(row_stride).and_then(|x| x.checked_add(offset));
            let fits = last.and_then(|x| x.checked_add(cols)).is_some_and(|end| end <= data.len());
            if r < 2 || numel(&shape[..r - 2]) != 1 || row_stride < cols || !fits {
                return Err(KernelError::new(
                    KERNEL,
                    format!(
                        "{name} {shape:?} as rows {row_stride} apart from {offset} does not fit \
                         {} elements (one matrix of rank >= 2 only)",
                        data.len()
                    ),
                ));
            }
            Ok(Source::Values(gemm::elems(data)?, Some((offset, row_stride))))
        }
        MatmulInput::Packed(p) => {
            if p.shape != shape
                || p.side != side
                || (p.transpose && shape.len() >= 2) != (transpose && shape.len() >= 2)
            {
                return Err(KernelError::new(
                    KERNEL,
                    format!(
                        "operand packed as {:?} {:?} (transposed: {}) used as {side:?} {shape:?} (transposed: {transpose})",
                        p.side, p.shape, p.transpose
                    ),
                ));
            }
            Ok(Source::Packed(p))
        }
    }
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
    fn rows_in_place_give_the_same_bits_and_refuse_what_does_not_fit() {
        // a [70, 40] and b [40, 90] (or b^T [90, 40]) as windows of wider tensors.
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_shape: &[usize] = if ta { &[40, 70] } else { &[70, 40] };
            let b_shape: &[usize] = if tb { &[1, 90, 40] } else { &[1, 40, 90] };
            let (a_wide, b_wide) = (a_shape[1] + 9, b_shape[2] + 5);
            let a_all = values_f16(a_shape[0] * a_wide, 51);
            let b_all = values_f16(b_shape[1] * b_wide + 3, 52);
            let cut = |all: &[f16], (rows, cols): (usize, usize), offset: usize, stride: usize| {
                (0..rows * cols).map(|i| all[offset + i / cols * stride + i % cols]).collect()
            };
            let a: Vec<f16> = cut(&a_all, (a_shape[0], a_shape[1]), 4, a_wide);
            let b: Vec<f16> = cut(&b_all, (b_shape[1], b_shape[2]), 3, b_wide);
            let shape = matmul_output_shape(a_shape, b_shape, ta, tb).unwrap();
            let mut want = vec![f16::ZERO; numel(&shape)];
            matmul(&a, a_shape, &b, b_shape, ta, tb, &mut want, &mut Scratch::new()).unwrap();
            let ra = MatmulInput::Rows { data: &a_all[..], offset: 4, row_stride: a_wide };
            let rb = MatmulInput::Rows { data: &b_all[..], offset: 3, row_stride: b_wide };
            let mut got = vec![f16::ZERO; want.len()];
            matmul_inputs(ra, a_shape, rb, b_shape, ta, tb, &mut got).unwrap();
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "{ta} {tb}");
        }
        let data = values_f16(100, 53);
        let b = values_f16(20, 54);
        let bad: [(usize, usize, &[usize]); 4] = [
            // Past the end, rows overlapping, batch dims, rank 1.
            (41, 20, &[4, 5]),
            (0, 4, &[4, 5]),
            (0, 10, &[2, 2, 5]),
            (0, 10, &[5]),
        ];
        for (offset, row_stride, a_shape) in bad {
            let a = MatmulInput::Rows { data: &data[..], offset, row_stride };
            let shape = matmul_output_shape(a_shape, &[5, 4], false, false).unwrap();
            let mut out = vec![f16::ZERO; numel(&shape)];
            let r = matmul_inputs(
                a,
                a_shape,
                MatmulInput::Values(&b[..]),
                &[5, 4],
                false,
                false,
                &mut out,
            );
            let message = r.expect_err("a window that does not fit").to_string();
            assert!(message.contains("does not fit"), "{a_shape:?}: {message}");
        }
    }

    #[test]
    fn packed_operands_give_the_same_bits() {
        let cases: [(&[usize], &[usize], bool, bool); 6] = [
            (&[70, 300], &[300, 45], false, false),
            (&[300, 70], &[45, 300], true, true),
            (&[2, 1, 3, 17], &[4, 17, 5], false, false),
            (&[5, 3, 4, 8], &[5, 1, 3, 8], false, true),
            (&[17], &[2, 17, 3], false, false),
            (&[2, 3, 17], &[17], false, false),
        ];
        for (a_shape, b_shape, ta, tb) in cases {
            let a = values_f16(numel(a_shape), 41);
            let b = values_f16(numel(b_shape), 42);
            let shape = matmul_output_shape(a_shape, b_shape, ta, tb).unwrap();
            let mut want = vec![f16::ZERO; numel(&shape)];
            matmul(&a, a_shape, &b, b_shape, ta, tb, &mut want, &mut Scratch::new()).unwrap();
            let pa = pack_operand(&a, a_shape, ta, Side::Lhs).unwrap();
            let pb = pack_operand(&b, b_shape, tb, Side::Rhs).unwrap();
            let inputs = [
                (MatmulInput::Packed(&pa), MatmulInput::Values(&b[..])),
                (MatmulInput::Values(&a[..]), MatmulInput::Packed(&pb)),
                (MatmulInput::Packed(&pa), MatmulInput::Packed(&pb)),
            ];
            for (ia, ib) in inputs {
                let mut got = vec![f16::ZERO; want.len()];
                matmul_inputs(ia, a_shape, ib, b_shape, ta, tb, &mut got).unwrap();
                let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{a_shape:?} {b_shape:?}");
            }
            // Packed for the other transpose or side: an error.
            let mut out = vec![f16::ZERO; want.len()];
            if a_shape.len() >= 2 {
                let wrong = pack_operand(&a, a_shape, !ta, Side::Lhs).unwrap();
                let r = matmul_inputs(
                    MatmulInput::<f16>::Packed(&wrong),
                    a_shape,
                    MatmulInput::Values(&b[..]),
                    b_shape,
                    ta,
                    tb,
                    &mut out,
                );
                assert!(r.is_err());
            }
            let r = matmul_inputs(
                MatmulInput::Values(&a[..]),
                a_shape,
                MatmulInput::<f16>::Packed(&pa),
                b_shape,
                ta,
                tb,
                &mut out,
            );
            assert!(r.is_err());
        }
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
