//! quantize, dequantize and cast.
//!
//! quantize: `clamp(round_half_even(x / scale) + zero_point)` to the int8/uint8 range, with a
//! scalar or per-axis scale and zero point. dequantize: `scale * (q - zero_point)`, rounded once
//! to the output type. cast: float -> float rounds to nearest even (a cast to fp16 also reads
//! NaN as +inf, since the ANE never holds a NaN); float -> int truncates toward zero and
//! saturates (NaN -> 0); int -> float rounds to nearest even; anything -> bool is `x != 0`.

use super::{Element, KernelError, Result, check_len};
use crate::sim::numerics;
use half::f16;

/// The integer types quantize produces and dequantize reads.
pub trait QuantInt: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// The smallest value of the type.
    const MIN: i32;
    /// The largest value of the type.
    const MAX: i32;
    /// The value, exactly, as an i32.
    fn to_i32(self) -> i32;
    /// `v` clamped into the type's range.
    fn saturate(v: i32) -> Self;
}

impl QuantInt for i8 {
    const MIN: i32 = i8::MIN as i32;
    const MAX: i32 = i8::MAX as i32;
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn saturate(v: i32) -> Self {
        v.clamp(<Self as QuantInt>::MIN, <Self as QuantInt>::MAX) as i8
    }
}

impl QuantInt for u8 {
    const MIN: i32 = 0;
    const MAX: i32 = u8::MAX as i32;
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn saturate(v: i32) -> Self {
        v.clamp(<Self as QuantInt>::MIN, <Self as QuantInt>::MAX) as u8
    }
}

/// Quantization parameters: a scale and optional zero point, each either one value for the
/// whole tensor or one per index of `axis`.
#[derive(Debug, Clone, Copy)]
pub struct QuantParams<'a, Q> {
    /// One scale for the tensor, or one per index of `axis`.
    pub scale: &'a [f32],
    /// The zero point, as many as `scale`; `None` means 0.
    pub zero_point: Option<&'a [Q]>,
    /// The axis the per-channel parameters run along; ignored when they are scalars.
    pub axis: Option<usize>,
}

impl<Q: QuantInt> QuantParams<'_, Q> {
    /// For each element's linear index, the index into the parameter vectors:
    /// `(index / inner) % channels`, or 0 for scalars. Returns (channels, inner).
    fn layout(&self, kernel: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
        let n = self.scale.len();
        if let Some(z) = self.zero_point
            && z.len() != n
        {
            return Err(KernelError::new(
                kernel,
                format!("{} scales but {} zero points", n, z.len()),
            ));
        }
        if n == 1 {
            return Ok((1, 1));
        }
        let axis =
            self.axis.ok_or_else(|| KernelError::new(kernel, format!("{n} scales but no axis")))?;
        if axis >= shape.len() || shape[axis] != n {
            return Err(KernelError::new(
                kernel,
                format!("{n} scales do not match axis {axis} of {shape:?}"),
            ));
        }
        Ok((n, shape[axis + 1..].iter().product()))
    }

    fn zp(&self, c: usize) -> i32 {
        self.zero_point.map_or(0, |z| z[c].to_i32())
    }
}

/// `out = clamp(round_half_even(x / scale) + zero_point)`.
pub fn quantize<T: Element, Q: QuantInt>(
    x: &[T],
    shape: &[usize],
    params: QuantParams<'_, Q>,
    out: &mut [Q],
) -> Result<()> {
    check_len("quantize", "input", x.len(), shape)?;
    check_len("quantize", "output", out.len(), shape)?;
    let (channels, inner) = params.layout("quantize", shape)?;
    for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
        let c = (i / inner) % channels;
        let mut v = v.to_f32();
        if T::ANE_RULES {
            v = numerics::ane_read(v);
        }
        let q = (v / params.scale[c]).round_ties_even();
        // Clamp in f32 first so huge values and infinities saturate instead of wrapping.
        let q = q.clamp(-1e9, 1e9) as i32;
        *o = Q::saturate(q + params.zp(c));
    }
    Ok(())
}

/// `out = scale * (q - zero_point)`, computed in f32 and rounded once to `T`.
pub fn dequantize<Q: QuantInt, T: Element>(
    q: &[Q],
    shape: &[usize],
    params: QuantParams<'_, Q>,
    out: &mut [T],
) -> Result<()> {
    check_len("dequantize", "input", q.len(), shape)?;
    check_len("dequantize", "output", out.len(), shape)?;
    let (channels, inner) = params.layout("dequantize", shape)?;
    for (i, (o, v)) in out.iter_mut().zip(q).enumerate() {
        let c = (i / inner) % channels;
        *o = T::from_f32(params.scale[c] * (v.to_i32() - params.zp(c)) as f32);
    }
    Ok(())
}

/// A scalar type `cast` converts between.
pub trait CastScalar: Copy + Send + Sync + 'static {
    /// The value as f64 (exact for every type here except i64/u32 beyond 2^53).
    fn to_f64(self) -> f64;
    /// Conversion from f64 with this type's cast rule (see the module doc).
    fn from_f64(v: f64) -> Self;
    /// The slice as f32, when it is one (fast path).
    fn f32_view(_: &[Self]) -> Option<&[f32]> {
        None
    }
    /// The slice as fp16, when it is one (fast path).
    fn f16_view(_: &[Self]) -> Option<&[f16]> {
        None
    }
    /// The slice as f32, writable, when it is one (fast path).
    fn f32_view_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    /// The slice as fp16, writable, when it is one (fast path).
    fn f16_view_mut(_: &mut [Self]) -> Option<&mut [f16]> {
        None
    }
}

impl CastScalar for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn f32_view(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn f32_view_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl CastScalar for f16 {
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        // Through f32: exact for every value that does not overflow fp16 anyway except f64
        // inputs with more than 24 significant bits, which no caller produces (sources are
        // f32, fp16 or integers).
        numerics::f32_to_f16(numerics::ane_read(v as f32))
    }
    fn f16_view(s: &[Self]) -> Option<&[f16]> {
        Some(s)
    }
    fn f16_view_mut(s: &mut [Self]) -> Option<&mut [f16]> {
        Some(s)
    }
}

macro_rules! int_cast {
    ($($t:ty),*) => {$(
        impl CastScalar for $t {
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                // Rust's float -> int `as`: truncates toward zero, saturates, NaN -> 0.
                v as $t
            }
        }
    )*};
}
int_cast!(i8, u8, i16, u16, i32, u32, i64);

impl CastScalar for bool {
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

/// A bool tensor element as stored: one byte, 0 or 1 (any non-zero byte reads as true).
/// Tensors are byte buffers, and `bool` itself cannot be viewed from arbitrary bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct BoolByte(pub u8);

// SAFETY: a transparent wrapper of u8: no padding, and every bit pattern is a valid value.
unsafe impl bytemuck::Zeroable for BoolByte {}
// SAFETY: as above; u8 is Pod.
unsafe impl bytemuck::Pod for BoolByte {}

impl CastScalar for BoolByte {
    fn to_f64(self) -> f64 {
        if self.0 != 0 { 1.0 } else { 0.0 }
    }
    fn from_f64(v: f64) -> Self {
        BoolByte((v != 0.0) as u8)
    }
}

/// `dst[i] = src[i]` converted by the rules of the module doc; fp16 <-> f32 run at memory speed.
pub fn cast<S: CastScalar, D: CastScalar>(src: &[S], dst: &mut [D]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(KernelError::new(
            "cast",
            format!("input has {} elements, output {}", src.len(), dst.len()),
        ));
    }
    if let (Some(s), Some(d)) = (S::f32_view(src), D::f16_view_mut(dst)) {
        numerics::f32_slice_to_f16(s, d);
        for h in d.iter_mut() {
            if h.is_nan() {
                *h = f16::INFINITY;
            }
        }
        return Ok(());
    }
    if let Some(s) = S::f16_view(src)
        && let Some(d) = D::f32_view_mut(dst)
    {
        numerics::f16_slice_to_f32(s, d);
        return Ok(());
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = D::from_f64(s.to_f64());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_and_clamps() {
        let x = [0.5f32, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0, 0.74];
        let mut q = [0i8; 8];
        let p = QuantParams { scale: &[1.0], zero_point: None, axis: None };
        quantize(&x, &[8], p, &mut q).unwrap();
        assert_eq!(q, [0, 2, 2, 0, -2, 127, -128, 1]);
        let mut u = [0u8; 8];
        let p = QuantParams { scale: &[0.5], zero_point: Some(&[10u8]), axis: None };
        quantize(&x, &[8], p, &mut u).unwrap();
        // x / 0.5 = [1, 3, 5, -1, -3, 2000, -2000, 1.48] -> +10, clamped to [0, 255].
        assert_eq!(u, [11, 13, 15, 9, 7, 255, 0, 11]);
    }

    #[test]
    fn per_axis_parameters() {
        // shape [2, 3], per-axis along 0 and along 1.
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut q = [0i8; 6];
        let p = QuantParams { scale: &[1.0, 0.5], zero_point: Some(&[0i8, -1]), axis: Some(0) };
        quantize(&x, &[2, 3], p, &mut q).unwrap();
        assert_eq!(q, [1, 2, 3, 7, 9, 11]);
        let mut back = [0.0f32; 6];
        dequantize(&q, &[2, 3], p, &mut back).unwrap();
        assert_eq!(back, x);
        let p = QuantParams { scale: &[1.0, 2.0, 4.0], zero_point: None, axis: Some(1) };
        quantize(&x, &[2, 3], p, &mut q).unwrap();
        assert_eq!(q, [1, 1, 1, 4, 2, 2]); // 3/4 = 0.75 -> 1, 5/2 = 2.5 -> 2, 6/4 = 1.5 -> 2
        let bad = QuantParams::<i8> { scale: &[1.0, 2.0], zero_point: None, axis: Some(1) };
        assert!(quantize(&x, &[2, 3], bad, &mut q).is_err());
        let bad = QuantParams::<i8> { scale: &[1.0, 2.0], zero_point: None, axis: None };
        assert!(quantize(&x, &[2, 3], bad, &mut q).is_err());
    }

    #[test]
    fn dequantize_rounds_once_to_fp16() {
        let q = [127i8, -128, 3];
        let mut out = [f16::ZERO; 3];
        let p = QuantParams { scale: &[0.1], zero_point: Some(&[3i8]), axis: None };
        dequantize(&q, &[3], p, &mut out).unwrap();
        let want = [0.1f32 * 124.0, 0.1 * -131.0, 0.0].map(f16::from_f32);
        assert_eq!(out, want);
    }

    #[test]
    fn quantize_reads_fp16_nan_as_inf() {
        let mut q = [0i8; 2];
        let p = QuantParams { scale: &[1.0], zero_point: None, axis: None };
        quantize(&[f16::NAN, f16::NEG_INFINITY], &[2], p, &mut q).unwrap();
        assert_eq!(q, [127, -128]);
    }

    #[test]
    fn casts() {
        let mut h = [f16::ZERO; 4];
        cast(&[1.0f32 + 1.0 / 2048.0, 65520.0, f32::NAN, -2.5], &mut h).unwrap();
        assert_eq!(h, [1.0f32, f32::INFINITY, f32::INFINITY, -2.5].map(f16::from_f32));
        let mut i = [0i32; 5];
        cast(&[2.9f32, -2.9, 1e20, f32::NAN, -1e20], &mut i).unwrap();
        assert_eq!(i, [2, -2, i32::MAX, 0, i32::MIN]);
        let mut u = [0u8; 3];
        cast(&[f16::from_f32(300.0), f16::from_f32(-3.0), f16::from_f32(7.99)], &mut u).unwrap();
        assert_eq!(u, [255, 0, 7]);
        let mut f = [0.0f32; 3];
        cast(&[16_777_217i32, -3, 0], &mut f).unwrap();
        assert_eq!(f, [16_777_216.0, -3.0, 0.0]);
        let mut hh = [f16::ZERO; 2];
        cast(&[2049i32, 70000], &mut hh).unwrap();
        assert_eq!(hh, [f16::from_f32(2048.0), f16::INFINITY]);
        let mut b = [false; 3];
        cast(&[0.0f32, -0.0, 0.1], &mut b).unwrap();
        assert_eq!(b, [false, false, true]);
        let mut back = [0.0f32; 4];
        cast(&h, &mut back).unwrap();
        assert_eq!(back[3], -2.5);
        assert!(cast(&[1.0f32], &mut back).is_err());
    }
}
