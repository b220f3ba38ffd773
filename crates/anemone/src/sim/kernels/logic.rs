//! Kernels of comparisons, logical ops, select and clip, and the exact integer arithmetic of
//! the binary elementwise ops.
//!
//! Bool tensors are one byte per element; a kernel reads any non-zero byte as true and writes
//! 0 or 1. Every operand broadcasts as numpy does.
//!
//! Floats: comparisons and select do not compute, so they round nothing; on fp16 they see what
//! the ANE datapath reads, NaN as +inf (`numerics::ane_read`): NaN == +inf is true there, and a
//! selected NaN comes out as +inf. On f32 they are IEEE (every comparison with NaN false but
//! `not_equal`; select copies the bits). clip computes `min(max(x, alpha), beta)` with its
//! bounds rounded to the element type; its result is one of its operands, so the single
//! rounding to the output type is exact.
//!
//! Integers: add, sub, mul and pow wrap around in two's complement, as numpy's fixed-width
//! arithmetic does (coremltools evaluates these ops with numpy, so a program folded at
//! conversion and the same program run here agree). real_div truncates toward zero: coremltools'
//! value inference divides in float64 (`operator.truediv`) and stores the quotient into the
//! integer result type with `astype`, which truncates; for 32-bit and narrower operands that is
//! exactly the truncated integer quotient computed here (the float64 quotient is off by less
//! than 1/|y|, too little to cross an integer), for 64-bit ones this kernel is exact where
//! float64 would round. Division by zero and a negative integer exponent (numpy raises
//! "Integers to negative integer powers are not allowed") are errors naming the element.

use std::fmt;

use half::f16;
use rayon::prelude::*;

use super::elementwise::BinaryOp;
use super::{
    Element, KernelError, PAR_CHUNK, Result, broadcast_shapes, broadcast_strides, check_len,
    load_ane, parallel_worth_it,
};
use crate::sim::numerics;

pub use anemone_mil::ops::{Comparison, LogicalOp};

/// Elements clip processes per block.
const BLOCK: usize = 256;

/// An element type that comparisons and select read: floats, integers, and bool bytes.
pub trait Operand: Copy + Send + Sync + fmt::Debug + 'static {
    /// What a comparison compares.
    type Key: PartialOrd + Copy;
    /// The value as the datapath reads it (fp16: NaN as +inf).
    fn key(self) -> Self::Key;
    /// The element as the datapath passes it on unchanged otherwise (fp16: NaN as +inf).
    fn pass(self) -> Self;
}

impl Operand for f16 {
    type Key = f32;
    #[inline(always)]
    fn key(self) -> f32 {
        numerics::ane_read(self.to_f32())
    }
    #[inline(always)]
    fn pass(self) -> f16 {
        if self.is_nan() { f16::INFINITY } else { self }
    }
}

impl Operand for f32 {
    type Key = f32;
    #[inline(always)]
    fn key(self) -> f32 {
        self
    }
    #[inline(always)]
    fn pass(self) -> f32 {
        self
    }
}

/// A fixed-width integer element, with MIL's integer arithmetic.
pub trait Int: Operand + Ord + fmt::Display {
    /// The MIL name of the type (`int32`, `uint8`...), for messages.
    const NAME: &'static str;
    /// The value 0.
    const ZERO: Self;
    /// The value 1: the start of `pow`'s product (so `pow(x, 0)` is 1).
    const ONE: Self;
    /// `self + y`, wrapping on overflow (two's complement).
    fn wrapping_add(self, y: Self) -> Self;
    /// `self - y`, wrapping on overflow.
    fn wrapping_sub(self, y: Self) -> Self;
    /// `self * y`, wrapping on overflow.
    fn wrapping_mul(self, y: Self) -> Self;
    /// The quotient truncated toward zero (MIN / -1 wraps to MIN); None when y is 0.
    fn div_trunc(self, y: Self) -> Option<Self>;
    /// The exponent as an unsigned count; None when it is negative.
    fn exponent(self) -> Option<u64>;
}

macro_rules! int_operand {
    ($($t:ty => $name:literal, $exponent:expr;)*) => {$(
        impl Operand for $t {
            type Key = $t;
            #[inline(always)]
            fn key(self) -> $t {
                self
            }
            #[inline(always)]
            fn pass(self) -> $t {
                self
            }
        }

        impl Int for $t {
            const NAME: &'static str = $name;
            const ZERO: $t = 0;
            const ONE: $t = 1;
            #[inline(always)]
            fn wrapping_add(self, y: $t) -> $t {
                <$t>::wrapping_add(self, y)
            }
            #[inline(always)]
            fn wrapping_sub(self, y: $t) -> $t {
                <$t>::wrapping_sub(self, y)
            }
            #[inline(always)]
            fn wrapping_mul(self, y: $t) -> $t {
                <$t>::wrapping_mul(self, y)
            }
            #[inline(always)]
            fn div_trunc(self, y: $t) -> Option<$t> {
                (y != 0).then(|| <$t>::wrapping_div(self, y))
            }
            #[inline(always)]
            fn exponent(self) -> Option<u64> {
                let convert: fn($t) -> Option<u64> = $exponent;
                convert(self)
            }
        }
    )*};
}

int_operand! {
    i8 => "int8", |e| u64::try_from(e).ok();
    i16 => "int16", |e| u64::try_from(e).ok();
    i32 => "int32", |e| u64::try_from(e).ok();
    i64 => "int64", |e| u64::try_from(e).ok();
    u8 => "uint8", |e| Some(u64::from(e));
    u16 => "uint16", |e| Some(u64::from(e));
    u32 => "uint32", |e| Some(u64::from(e));
    u64 => "uint64", Some;
}

/// `x` to the power `e` by repeated squaring, wrapping like every other integer product.
fn wrapping_pow<T: Int>(x: T, mut e: u64) -> T {
    let (mut base, mut acc) = (x, T::ONE);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        e >>= 1;
        if e > 0 {
            base = base.wrapping_mul(base);
        }
    }
    acc
}

/// Why an integer op has no result for one pair of operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntFault {
    DivisionByZero,
    NegativeExponent,
}

/// One integer op on one pair of operands.
#[inline(always)]
fn int_apply<T: Int>(op: BinaryOp, x: T, y: T) -> std::result::Result<T, IntFault> {
    Ok(match op {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::RealDiv => x.div_trunc(y).ok_or(IntFault::DivisionByZero)?,
        BinaryOp::Pow => wrapping_pow(x, y.exponent().ok_or(IntFault::NegativeExponent)?),
        BinaryOp::Maximum => x.max(y),
        BinaryOp::Minimum => x.min(y),
    })
}

/// Index arithmetic of an N-operand numpy broadcast, with dims that broadcast alike collapsed
/// so the innermost run is as long as possible.
#[derive(Debug)]
struct Broadcast<const N: usize> {
    /// Collapsed output dims (at least one).
    dims: Vec<usize>,
    /// Per operand, the stride of each collapsed dim (0 where broadcast).
    strides: [Vec<usize>; N],
}

impl<const N: usize> Broadcast<N> {
    /// `out` must be the broadcast of `shapes`.
    fn new(out: &[usize], shapes: [&[usize]; N]) -> Self {
        let full: [Vec<usize>; N] = shapes.map(|s| broadcast_strides(s, out));
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
        for (i, &d) in out.iter().enumerate() {
            if d == 1 {
                continue;
            }
            // The previous dim folds into this one when every operand steps through both as
            // one run.
            let folds = !dims.is_empty()
                && strides.iter().zip(&full).all(|(s, f)| s.last() == Some(&(f[i] * d)));
            if folds {
                let n = dims.len() - 1;
                dims[n] *= d;
                for (s, f) in strides.iter_mut().zip(&full) {
                    s[n] = f[i];
                }
            } else {
                dims.push(d);
                for (s, f) in strides.iter_mut().zip(&full) {
                    s.push(f[i]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            strides = std::array::from_fn(|_| vec![0]);
        }
        Broadcast { dims, strides }
    }

    /// Calls `f(at, len, offsets, steps)` for each inner run of output positions in
    /// `begin..end`: output positions `begin + at .. begin + at + len` read operand `k` at
    /// `offsets[k] + j * steps[k]` for `j < len`.
    fn runs(
        &self,
        begin: usize,
        end: usize,
        mut f: impl FnMut(usize, usize, [usize; N], [usize; N]),
    ) {
        let r = self.dims.len();
        let inner = self.dims[r - 1];
        let steps: [usize; N] = std::array::from_fn(|k| self.strides[k][r - 1]);
        let mut pos = begin;
        while pos < end {
            let (row, col) = (pos / inner, pos % inner);
            let len = (inner - col).min(end - pos);
            let offsets: [usize; N] =
                std::array::from_fn(|k| self.row_offset(row, k) + col * steps[k]);
            f(pos - begin, len, offsets, steps);
            pos += len;
        }
    }

    /// Offset in operand `k` of the start of inner run `row`.
    fn row_offset(&self, mut row: usize, k: usize) -> usize {
        let mut off = 0;
        for d in (0..self.dims.len() - 1).rev() {
            off += (row % self.dims[d]) * self.strides[k][d];
            row /= self.dims[d];
        }
        off
    }
}

/// Runs `body(start, chunk)` over `out`, in rayon chunks when it is large.
fn for_chunks<T: Send>(out: &mut [T], body: impl Fn(usize, &mut [T]) + Sync) {
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| body(i * PAR_CHUNK, c));
    } else {
        body(0, out);
    }
}

/// Checks two operands against their shapes and the output against their broadcast; returns
/// that broadcast shape.
fn check_binary(
    kernel: &'static str,
    x_len: usize,
    x_shape: &[usize],
    y_len: usize,
    y_shape: &[usize],
    out_len: usize,
) -> Result<Vec<usize>> {
    check_len(kernel, "x", x_len, x_shape)?;
    check_len(kernel, "y", y_len, y_shape)?;
    let shape = broadcast_shapes(x_shape, y_shape)?;
    check_len(kernel, "out", out_len, &shape)?;
    Ok(shape)
}

/// `out = x OP y` as bytes 0/1, numpy broadcasting.
pub fn compare<T: Operand>(
    op: Comparison,
    x: &[T],
    x_shape: &[usize],
    y: &[T],
    y_shape: &[usize],
    out: &mut [u8],
) -> Result<()> {
    let shape = check_binary("compare", x.len(), x_shape, y.len(), y_shape, out.len())?;
    let plan = Broadcast::new(&shape, [x_shape, y_shape]);
    for_chunks(out, |start, chunk| {
        plan.runs(start, start + chunk.len(), |at, len, [ox, oy], [sx, sy]| {
            for (j, o) in chunk[at..at + len].iter_mut().enumerate() {
                *o = u8::from(op.holds(x[ox + j * sx].key(), y[oy + j * sy].key()));
            }
        });
    });
    Ok(())
}

/// `out = x OP y` on bool bytes, numpy broadcasting.
pub fn logical(
    op: LogicalOp,
    x: &[u8],
    x_shape: &[usize],
    y: &[u8],
    y_shape: &[usize],
    out: &mut [u8],
) -> Result<()> {
    let shape = check_binary("logical", x.len(), x_shape, y.len(), y_shape, out.len())?;
    let plan = Broadcast::new(&shape, [x_shape, y_shape]);
    for_chunks(out, |start, chunk| {
        plan.runs(start, start + chunk.len(), |at, len, [ox, oy], [sx, sy]| {
            for (j, o) in chunk[at..at + len].iter_mut().enumerate() {
                *o = u8::from(op.apply(x[ox + j * sx] != 0, y[oy + j * sy] != 0));
            }
        });
    });
    Ok(())
}

/// `out = !x` on bool bytes.
pub fn logical_not(x: &[u8], out: &mut [u8]) -> Result<()> {
    if x.len() != out.len() {
        return Err(KernelError::new(
            "logical_not",
            format!("input has {} elements, output {}", x.len(), out.len()),
        ));
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = u8::from(v == 0);
    }
    Ok(())
}

/// `out = cond ? a : b` (np.where), all three broadcast together.
pub fn select<T: Operand>(
    cond: &[u8],
    cond_shape: &[usize],
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out: &mut [T],
) -> Result<()> {
    const KERNEL: &str = "select";
    check_len(KERNEL, "cond", cond.len(), cond_shape)?;
    check_len(KERNEL, "a", a.len(), a_shape)?;
    check_len(KERNEL, "b", b.len(), b_shape)?;
    let shape = broadcast_shapes(cond_shape, &broadcast_shapes(a_shape, b_shape)?)?;
    check_len(KERNEL, "out", out.len(), &shape)?;
    let plan = Broadcast::new(&shape, [cond_shape, a_shape, b_shape]);
    for_chunks(out, |start, chunk| {
        plan.runs(start, start + chunk.len(), |at, len, [oc, oa, ob], [sc, sa, sb]| {
            for (j, o) in chunk[at..at + len].iter_mut().enumerate() {
                let v = if cond[oc + j * sc] != 0 { a[oa + j * sa] } else { b[ob + j * sb] };
                *o = v.pass();
            }
        });
    });
    Ok(())
}

/// `out = min(max(x, alpha), beta)` with numpy's maximum and minimum, the bounds first rounded
/// to `T`. On f32 a NaN stays NaN (numpy's maximum and minimum propagate it); on fp16 it reads
/// as +inf and gives beta. An x equal to a bound is kept (so -0 stays -0 when alpha is +0).
pub fn clip<T: Element>(x: &[T], alpha: f64, beta: f64, out: &mut [T]) -> Result<()> {
    if x.len() != out.len() {
        return Err(KernelError::new(
            "clip",
            format!("input has {} elements, output {}", x.len(), out.len()),
        ));
    }
    if alpha.is_nan() || beta.is_nan() || alpha > beta {
        return Err(KernelError::new("clip", format!("bounds [{alpha}, {beta}] are not a range")));
    }
    let (lo, hi) = (T::round(alpha as f32), T::round(beta as f32));
    for_chunks(out, |start, chunk| {
        let mut buf = [0.0f32; BLOCK];
        for (i, block) in chunk.chunks_mut(BLOCK).enumerate() {
            let n = block.len();
            let begin = start + i * BLOCK;
            load_ane(&x[begin..begin + n], &mut buf[..n]);
            for v in &mut buf[..n] {
                // numpy's maximum keeps x when x >= alpha and minimum keeps it when x <= beta,
                // so a bound equal to x (-0 against 0) leaves x, sign included; NaN stays.
                if *v < lo {
                    *v = lo;
                } else if *v > hi {
                    *v = hi;
                }
            }
            T::store(&buf[..n], block);
        }
    });
    Ok(())
}

/// `out = x OP y` on integers, numpy broadcasting; see the module docs for overflow, division
/// and exponents.
pub fn int_binary<T: Int>(
    op: BinaryOp,
    x: &[T],
    x_shape: &[usize],
    y: &[T],
    y_shape: &[usize],
    out: &mut [T],
) -> Result<()> {
    let shape = check_binary("integer arithmetic", x.len(), x_shape, y.len(), y_shape, out.len())?;
    let plan = Broadcast::new(&shape, [x_shape, y_shape]);
    // The first fault of each chunk: (output position, x, y, fault).
    let body = |start: usize, chunk: &mut [T]| -> Option<(usize, T, T, IntFault)> {
        let mut fault = None;
        plan.runs(start, start + chunk.len(), |at, len, [ox, oy], [sx, sy]| {
            if fault.is_some() {
                return;
            }
            for (j, o) in chunk[at..at + len].iter_mut().enumerate() {
                let (a, b) = (x[ox + j * sx], y[oy + j * sy]);
                match int_apply(op, a, b) {
                    Ok(v) => *o = v,
                    Err(e) => {
                        fault = Some((start + at + j, a, b, e));
                        return;
                    }
                }
            }
        });
        fault
    };
    let fault = if parallel_worth_it(out.len()) {
        out.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .filter_map(|(i, c)| body(i * PAR_CHUNK, c))
            .min_by_key(|f| f.0)
    } else {
        body(0, out)
    };
    match fault {
        None => Ok(()),
        Some((pos, a, b, fault)) => {
            let at = unravel(pos, &shape);
            let message = match fault {
                IntFault::DivisionByZero => {
                    format!(
                        "{} division by zero at output element {at:?} (x = {a}, y = {b})",
                        T::NAME
                    )
                }
                IntFault::NegativeExponent => format!(
                    "{} power with a negative exponent at output element {at:?} \
                     (x = {a}, y = {b}); integers have no negative powers, cast to a float \
                     type first",
                    T::NAME
                ),
            };
            Err(KernelError::new("integer arithmetic", message))
        }
    }
}

/// The row-major multi-index of flat position `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::numel;
    use crate::sim::kernels::testutil::values;

    /// For each output position of the broadcast of `shapes`, the flat index each operand reads;
    /// written from numpy's rule directly (right-aligned dims, a dim of 1 read at 0).
    fn reference_indices(shapes: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
        let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
        let out: Vec<usize> = (0..rank)
            .map(|i| {
                shapes
                    .iter()
                    .map(|s| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 })
                    .max()
                    .unwrap()
            })
            .collect();
        let n: usize = out.iter().product();
        let reads = (0..n)
            .map(|p| {
                let idx = unravel(p, &out);
                shapes
                    .iter()
                    .map(|s| {
                        let lead = rank - s.len();
                        s.iter().enumerate().fold(0, |acc, (d, &len)| {
                            acc * len + if len == 1 { 0 } else { idx[lead + d] }
                        })
                    })
                    .collect()
            })
            .collect();
        (out, reads)
    }

    const SHAPES: &[(&[usize], &[usize])] = &[
        (&[7], &[7]),
        (&[3, 5], &[]),
        (&[], &[3, 5]),
        (&[3, 5], &[5]),
        (&[3, 1], &[1, 5]),
        (&[2, 1, 5], &[3, 1]),
        (&[2, 3, 1, 4], &[1, 3, 5, 1]),
        (&[1, 1, 1], &[1]),
        (&[], &[]),
    ];

    /// fp16 values with ties, signed zeros, infinities and a NaN among them.
    fn specials(n: usize, seed: u64) -> Vec<f16> {
        let special = [0.0, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.5];
        values(n, seed)
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i % 3 == 0 {
                    f16::from_f32(special[(i / 3) % special.len()])
                } else {
                    f16::from_f32(v.round())
                }
            })
            .collect()
    }

    const ALL_COMPARISONS: [Comparison; 6] = [
        Comparison::Equal,
        Comparison::NotEqual,
        Comparison::Greater,
        Comparison::GreaterEqual,
        Comparison::Less,
        Comparison::LessEqual,
    ];

    /// The f64 comparison, with fp16's read rule applied to the operands when `ane`.
    fn f64_compare(op: Comparison, x: f64, y: f64, ane: bool) -> bool {
        let read = |v: f64| if ane && v.is_nan() { f64::INFINITY } else { v };
        let (x, y) = (read(x), read(y));
        match op {
            Comparison::Equal => x == y,
            Comparison::NotEqual => x != y,
            Comparison::Greater => x > y,
            Comparison::GreaterEqual => x >= y,
            Comparison::Less => x < y,
            Comparison::LessEqual => x <= y,
        }
    }

    #[test]
    fn comparisons_match_an_f64_reference() {
        for op in ALL_COMPARISONS {
            for (xs, ys) in SHAPES {
                let (shape, reads) = reference_indices(&[xs, ys]);
                let x = specials(numel(xs), 1);
                let y = specials(numel(ys), 2);
                let mut out = vec![9u8; numel(&shape)];
                compare(op, &x, xs, &y, ys, &mut out).unwrap();
                let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                let y32: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
                let mut out32 = vec![9u8; out.len()];
                compare(op, &x32, xs, &y32, ys, &mut out32).unwrap();
                for (p, r) in reads.iter().enumerate() {
                    let (a, b) = (x[r[0]].to_f64(), y[r[1]].to_f64());
                    let what = format!("{op:?} {xs:?} {ys:?} at {p}: {a} vs {b}");
                    assert_eq!(out[p], u8::from(f64_compare(op, a, b, true)), "fp16 {what}");
                    assert_eq!(out32[p], u8::from(f64_compare(op, a, b, false)), "fp32 {what}");
                }
            }
        }
    }

    #[test]
    fn nan_reads_as_infinity_on_fp16_only() {
        let nan = [f16::NAN];
        let inf = [f16::INFINITY];
        let mut out = [0u8];
        compare(Comparison::Equal, &nan, &[1], &inf, &[1], &mut out).unwrap();
        assert_eq!(out, [1], "fp16 NaN == +inf");
        compare(Comparison::Greater, &nan, &[1], &[f16::MAX], &[1], &mut out).unwrap();
        assert_eq!(out, [1]);
        compare(Comparison::Equal, &[f32::NAN], &[1], &[f32::INFINITY], &[1], &mut out).unwrap();
        assert_eq!(out, [0], "fp32 NaN is unordered");
        compare(Comparison::NotEqual, &[f32::NAN], &[1], &[f32::NAN], &[1], &mut out).unwrap();
        assert_eq!(out, [1]);
    }

    #[test]
    fn integer_comparisons_are_exact() {
        let x: Vec<i64> = vec![i64::MIN, -1, 0, 1, i64::MAX, 1 << 53, (1 << 53) + 1];
        let y: Vec<i64> = vec![1 << 53];
        let mut out = vec![0u8; x.len()];
        compare(Comparison::Greater, &x, &[7], &y, &[1], &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 1, 0, 1]);
        let u: Vec<u32> = vec![0, u32::MAX];
        let mut out = vec![0u8; 2];
        compare(Comparison::LessEqual, &u, &[2], &[7u32], &[], &mut out).unwrap();
        assert_eq!(out, [1, 0]);
    }

    #[test]
    fn logical_ops_on_bytes() {
        for op in [LogicalOp::And, LogicalOp::Or, LogicalOp::Xor] {
            for (xs, ys) in SHAPES {
                let (shape, reads) = reference_indices(&[xs, ys]);
                // Any non-zero byte is true.
                let x: Vec<u8> = (0..numel(xs)).map(|i| [0, 1, 2, 0, 255][i % 5]).collect();
                let y: Vec<u8> = (0..numel(ys)).map(|i| [1, 0, 0, 3][i % 4]).collect();
                let mut out = vec![7u8; numel(&shape)];
                logical(op, &x, xs, &y, ys, &mut out).unwrap();
                for (p, r) in reads.iter().enumerate() {
                    let (a, b) = (x[r[0]] != 0, y[r[1]] != 0);
                    let want = match op {
                        LogicalOp::And => a & b,
                        LogicalOp::Or => a | b,
                        LogicalOp::Xor => a ^ b,
                    };
                    assert_eq!(out[p], u8::from(want), "{op:?} {xs:?} {ys:?} at {p}");
                }
            }
        }
        let mut out = [9u8; 4];
        logical_not(&[0, 1, 5, 0], &mut out).unwrap();
        assert_eq!(out, [1, 0, 0, 1]);
    }

    #[test]
    fn select_broadcasts_three_operands() {
        let cases: &[[&[usize]; 3]] = &[
            [&[6], &[6], &[6]],
            [&[1, 1, 4, 4], &[], &[1, 3, 4, 4]],
            [&[3, 1, 5], &[4, 1], &[]],
            [&[2, 1], &[1, 3], &[2, 3]],
            [&[], &[2, 2], &[1]],
            [&[5], &[5], &[2, 1]],
        ];
        for shapes in cases {
            let (shape, reads) = reference_indices(shapes);
            let cond: Vec<u8> = (0..numel(shapes[0])).map(|i| [1, 0, 2, 0, 0][i % 5]).collect();
            let a = specials(numel(shapes[1]), 3);
            let b: Vec<f16> = values(numel(shapes[2]), 4).into_iter().map(f16::from_f32).collect();
            let mut out = vec![f16::ZERO; numel(&shape)];
            select(&cond, shapes[0], &a, shapes[1], &b, shapes[2], &mut out).unwrap();
            let a32: Vec<f32> = a.iter().map(|v| v.to_f32()).collect();
            let b32: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
            let mut out32 = vec![0f32; out.len()];
            select(&cond, shapes[0], &a32, shapes[1], &b32, shapes[2], &mut out32).unwrap();
            let ai: Vec<i32> = (0..a.len() as i32).collect();
            let bi: Vec<i32> = (0..b.len() as i32).map(|v| -1 - v).collect();
            let mut outi = vec![0i32; out.len()];
            select(&cond, shapes[0], &ai, shapes[1], &bi, shapes[2], &mut outi).unwrap();
            for (p, r) in reads.iter().enumerate() {
                let take_a = cond[r[0]] != 0;
                let want = if take_a { a[r[1]].to_f64() } else { b[r[2]].to_f64() };
                let got = out[p].to_f64();
                // fp16 passes a NaN on as +inf; fp32 keeps it; the sign of zero is kept.
                let want16 = if want.is_nan() { f64::INFINITY } else { want };
                assert_eq!(got.to_bits(), want16.to_bits(), "fp16 {shapes:?} at {p}");
                let got32 = f64::from(out32[p]);
                assert!(got32.to_bits() == want.to_bits() || (want.is_nan() && got32.is_nan()));
                assert_eq!(outi[p], if take_a { ai[r[1]] } else { bi[r[2]] });
            }
        }
    }

    /// `np.minimum(np.maximum(v, lo), hi)` as numpy defines them: maximum(a, b) is a when
    /// a >= b or a is NaN, else b; minimum likewise with <=.
    fn numpy_clip(v: f64, lo: f64, hi: f64) -> f64 {
        let m = if v >= lo || v.is_nan() { v } else { lo };
        if m <= hi || m.is_nan() { m } else { hi }
    }

    #[test]
    fn clip_matches_an_f64_reference() {
        let x = specials(300, 5);
        for (alpha, beta) in
            [(-0.5, 0.5), (0.0, 6.0), (f64::NEG_INFINITY, 0.1), (-1e-3, f64::INFINITY)]
        {
            let mut out = vec![f16::ZERO; x.len()];
            clip(&x, alpha, beta, &mut out).unwrap();
            // The bounds as fp16 holds them; then the exact clamp, NaN read as +inf.
            let (lo, hi) = (f16::from_f64(alpha).to_f64(), f16::from_f64(beta).to_f64());
            for (i, (v, o)) in x.iter().zip(&out).enumerate() {
                let v = if v.is_nan() { f64::INFINITY } else { v.to_f64() };
                let want = numpy_clip(v, lo, hi);
                assert_eq!(o.to_f64().to_bits(), want.to_bits(), "fp16 [{alpha}, {beta}] at {i}");
            }
            let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let mut out32 = vec![0f32; x.len()];
            clip(&x32, alpha, beta, &mut out32).unwrap();
            let (lo, hi) = (f64::from(alpha as f32), f64::from(beta as f32));
            for (i, (v, o)) in x32.iter().zip(&out32).enumerate() {
                let want = numpy_clip(f64::from(*v), lo, hi);
                if want.is_nan() {
                    assert!(o.is_nan(), "fp32 keeps NaN at {i}");
                } else {
                    assert_eq!(f64::from(*o).to_bits(), want.to_bits(), "fp32 at {i}");
                }
            }
        }
        // A bound between fp16 values is rounded to the nearest one first.
        let mut out = [f16::ZERO];
        clip(&[f16::from_f32(2.0)], 0.0, 1.0001, &mut out).unwrap();
        assert_eq!(out[0], f16::ONE);
    }

    /// The exact integer result of `op`, wrapped to `bits` (signed or not), or None.
    fn int_reference(op: BinaryOp, x: i128, y: i128, bits: u32, signed: bool) -> Option<i128> {
        // Wrapping at 128 bits keeps the low `bits` bits exact (2^bits divides 2^128), which
        // is all the result keeps: 64-bit unsigned products pass i128's range.
        let exact = match op {
            BinaryOp::Add => x.wrapping_add(y),
            BinaryOp::Sub => x.wrapping_sub(y),
            BinaryOp::Mul => x.wrapping_mul(y),
            BinaryOp::RealDiv => {
                if y == 0 {
                    return None;
                }
                if bits <= 32 {
                    // coremltools' rule: float64 division, then astype truncates toward zero.
                    (x as f64 / y as f64).trunc() as i128
                } else {
                    // Exact truncating division (float64 would round 64-bit operands).
                    x / y
                }
            }
            BinaryOp::Pow => {
                if y < 0 {
                    return None;
                }
                let mut acc: i128 = 1;
                for _ in 0..y {
                    acc = acc.wrapping_mul(x).rem_euclid(1 << 64);
                }
                acc
            }
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
        };
        let m = exact.rem_euclid(1i128 << bits);
        Some(if signed && m >= 1 << (bits - 1) { m - (1 << bits) } else { m })
    }

    fn check_ints<T: Int + TryFrom<i128> + Into<i128>>(bits: u32, signed: bool, seed: u64)
    where
        <T as TryFrom<i128>>::Error: fmt::Debug,
    {
        let (min, max): (i128, i128) =
            if signed { (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) } else { (0, (1 << bits) - 1) };
        let pick = |n: usize, s: u64, small: bool| -> Vec<T> {
            values(n, s)
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let edge = [min, max, 0, 1, min + 1, max - 1];
                    let raw = if small {
                        (v * 9.0).round() as i128
                    } else if i % 4 == 0 {
                        edge[(i / 4) % edge.len()]
                    } else {
                        (v as f64 * max as f64) as i128
                    };
                    T::try_from(raw.clamp(min, max)).unwrap()
                })
                .collect()
        };
        let ops = [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::RealDiv,
            BinaryOp::Pow,
            BinaryOp::Maximum,
            BinaryOp::Minimum,
        ];
        for op in ops {
            for (xs, ys) in SHAPES {
                let (shape, reads) = reference_indices(&[xs, ys]);
                let x = pick(numel(xs), seed, false);
                let mut y = pick(numel(ys), seed + 1, op == BinaryOp::Pow);
                // No zero divisors, no negative exponents: those are errors, tested apart.
                for v in &mut y {
                    let w: i128 = (*v).into();
                    if op == BinaryOp::RealDiv && w == 0 {
                        *v = T::try_from(if signed { -7 } else { 7 }).unwrap();
                    } else if op == BinaryOp::Pow && w < 0 {
                        *v = T::try_from(3).unwrap();
                    }
                }
                let mut out = vec![T::ZERO; numel(&shape)];
                int_binary(op, &x, xs, &y, ys, &mut out).unwrap();
                for (p, r) in reads.iter().enumerate() {
                    let (a, b): (i128, i128) = (x[r[0]].into(), y[r[1]].into());
                    let want = int_reference(op, a, b, bits, signed).unwrap();
                    let got: i128 = out[p].into();
                    assert_eq!(got, want, "{} {op:?} {a} {b} {xs:?} {ys:?}", T::NAME);
                }
            }
        }
    }

    #[test]
    fn integer_arithmetic_wraps_like_numpy() {
        check_ints::<i8>(8, true, 10);
        check_ints::<i16>(16, true, 20);
        check_ints::<i32>(32, true, 30);
        check_ints::<i64>(64, true, 40);
        check_ints::<u8>(8, false, 50);
        check_ints::<u16>(16, false, 60);
        check_ints::<u32>(32, false, 70);
        check_ints::<u64>(64, false, 80);
    }

    #[test]
    fn integer_division_truncates_toward_zero() {
        let x = [7i64, -7, 7, -7, i64::MIN, (1 << 53) + 1];
        let y = [2i64, 2, -2, -2, -1, 1];
        let mut out = [0i64; 6];
        int_binary(BinaryOp::RealDiv, &x, &[6], &y, &[6], &mut out).unwrap();
        // MIN / -1 wraps; 2^53 + 1 stays exact (float64 would round it).
        assert_eq!(out, [3, -3, -3, 3, i64::MIN, (1 << 53) + 1]);
    }

    #[test]
    fn integer_faults_name_the_element() {
        let mut out = [0i32; 6];
        let e =
            int_binary(BinaryOp::RealDiv, &[1, 2, 3, 4, 5, 6], &[2, 3], &[1, 0, 2], &[3], &mut out)
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "integer arithmetic: int32 division by zero at output element [0, 1] (x = 2, y = 0)"
        );
        let e = int_binary(BinaryOp::Pow, &[2i16], &[], &[-1i16], &[], &mut [0i16]).unwrap_err();
        assert!(e.message.contains("int16 power with a negative exponent"), "{e}");
        let mut big = vec![0u8; 3 * PAR_CHUNK];
        let x = vec![1u8; big.len()];
        let mut y = vec![1u8; big.len()];
        y[2 * PAR_CHUNK + 5] = 0;
        y[PAR_CHUNK + 9] = 0;
        let e = int_binary(BinaryOp::RealDiv, &x, &[big.len()], &y, &[big.len()], &mut big)
            .unwrap_err();
        assert!(e.message.contains(&format!("[{}]", PAR_CHUNK + 9)), "first fault: {e}");
    }

    #[test]
    fn large_outputs_split_across_threads() {
        let shape = [4, 300, 200];
        let n = numel(&shape);
        let x: Vec<f16> = values(n, 7).into_iter().map(f16::from_f32).collect();
        let y: Vec<f16> = values(200, 8).into_iter().map(f16::from_f32).collect();
        let mut out = vec![0u8; n];
        compare(Comparison::Less, &x, &shape, &y, &[200], &mut out).unwrap();
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, u8::from(x[i].to_f64() < y[i % 200].to_f64()), "at {i}");
        }
        let ints: Vec<i32> = (0..n as i32).collect();
        let mut sum = vec![0i32; n];
        int_binary(BinaryOp::Add, &ints, &shape, &[5i32], &[], &mut sum).unwrap();
        assert!(sum.iter().enumerate().all(|(i, &v)| v == i as i32 + 5));
        let mut clipped = vec![f16::ZERO; n];
        clip(&x, -0.25, 0.25, &mut clipped).unwrap();
        assert!(x.iter().zip(&clipped).all(|(v, c)| c.to_f64() == v.to_f64().clamp(-0.25, 0.25)));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut out = [0u8; 3];
        let e = compare(Comparison::Equal, &[1.0f32; 3], &[3], &[1.0f32; 2], &[2], &mut out)
            .unwrap_err();
        assert!(e.message.contains("do not broadcast"), "{e}");
        let e =
            compare(Comparison::Equal, &[1.0f32; 3], &[4], &[1.0f32], &[1], &mut out).unwrap_err();
        assert!(e.message.contains("x has 3 elements but shape [4] needs 4"), "{e}");
        let e = logical(LogicalOp::And, &[1; 3], &[3], &[1; 3], &[3], &mut [0u8; 2]).unwrap_err();
        assert!(e.message.contains("out has 2 elements"), "{e}");
        assert!(logical_not(&[1; 3], &mut [0u8; 2]).is_err());
        let e =
            select(&[1u8; 2], &[2], &[1i32; 3], &[3], &[0i32], &[1], &mut [0i32; 3]).unwrap_err();
        assert!(e.message.contains("do not broadcast"), "{e}");
        assert!(select(&[1u8; 3], &[3], &[1i32; 3], &[3], &[0i32], &[1], &mut [0i32; 4]).is_err());
        assert!(clip(&[f16::ONE; 2], 0.0, 1.0, &mut [f16::ZERO; 3]).is_err());
        assert!(clip(&[1.0f32], 2.0, 1.0, &mut [0.0]).is_err());
        assert!(clip(&[1.0f32], f64::NAN, 1.0, &mut [0.0]).is_err());
        assert!(
            int_binary(BinaryOp::Add, &[1i8; 2], &[2], &[1i8; 2], &[3], &mut [0i8; 2]).is_err()
        );
    }
}
