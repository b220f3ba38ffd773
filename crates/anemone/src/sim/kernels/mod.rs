//! Compute kernels of the simulator: pure functions over dense row-major slices, independent of
//! the MIL IR. The plan resolves shapes and attributes and owns the buffers; a kernel checks that
//! the slices it is handed match the shapes it is told, computes, and writes the output slice.
//!
//! Numeric kernels are generic over [`Element`] (fp16 and f32): they load to f32, compute in f32
//! and round once to the output type; fp16 kernels also apply the ANE's rules of
//! [`numerics`]. The f32 kernels are IEEE references: the plan runs ops typed fp32 on the fp16
//! kernels unless exact fp32 is asked for (`plan::Fp32Arithmetic`). Layout kernels are generic over any `T: Copy`, integers
//! included. Reshape needs no kernel: a dense row-major buffer is its own reshape, so the plan
//! aliases the buffer.
//!
//! Parallelism: large GEMMs split their output across the rayon pool ([`gemm`]), other
//! kernels split large outputs into rayon chunks of at least [`PAR_CHUNK`] elements; a kernel
//! called from inside a rayon worker stays single-threaded so that parallel callers never
//! oversubscribe.

pub mod attention;
pub mod conv;
mod conv_direct;
pub mod elementwise;
pub mod gemm;
pub mod index;
pub mod layout;
pub mod logic;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod softmax;

use half::f16;

use super::numerics;

/// A kernel was handed slices or parameters that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kernel}: {message}")]
pub struct KernelError {
    /// The kernel that refused.
    pub kernel: &'static str,
    /// What is wrong, in words.
    pub message: String,
}

impl KernelError {
    pub(crate) fn new(kernel: &'static str, message: impl Into<String>) -> Self {
        KernelError { kernel, message: message.into() }
    }
}

/// Result of a kernel.
pub type Result<T> = std::result::Result<T, KernelError>;

/// A floating-point element type the numeric kernels compute with: loaded to f32, stored from
/// f32 with one rounding.
pub trait Element: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// The MIL name of the type.
    const NAME: &'static str;
    /// Whether kernels producing this type apply the ANE's fp16 rules (NaN read as +inf, NaN
    /// results as +0, multiply-accumulate saturation). True for fp16 only.
    const ANE_RULES: bool;
    /// Exact widening to f32.
    fn to_f32(self) -> f32;
    /// Narrowing from f32, round to nearest even.
    fn from_f32(x: f32) -> Self;
    /// Widens a whole slice; lengths must match.
    fn load(src: &[Self], dst: &mut [f32]);
    /// Narrows a whole slice with RNE; lengths must match.
    fn store(src: &[f32], dst: &mut [Self]);
    /// The slice itself when the type is f32, so kernels can skip a copy.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// The slice itself when the type is f32, so kernels can write in place.
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// `x` rounded to the precision of this type, kept in f32.
    fn round(x: f32) -> f32;
    /// The slice itself when the type is fp16, so the GEMM can widen it while packing.
    #[inline(always)]
    fn as_f16(_: &[Self]) -> Option<&[f16]> {
        None
    }
    /// The slice itself when the type is fp16, so the GEMM can store its output directly.
    #[inline(always)]
    fn as_f16_mut(_: &mut [Self]) -> Option<&mut [f16]> {
        None
    }
}

impl Element for f32 {
    const NAME: &'static str = "fp32";
    const ANE_RULES: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn load(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline]
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline(always)]
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
    #[inline(always)]
    fn round(x: f32) -> f32 {
        x
    }
}

impl Element for f16 {
    const NAME: &'static str = "fp16";
    const ANE_RULES: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        numerics::f32_to_f16(x)
    }
    #[inline]
    fn load(src: &[Self], dst: &mut [f32]) {
        numerics::f16_slice_to_f32(src, dst);
    }
    #[inline]
    fn store(src: &[f32], dst: &mut [Self]) {
        numerics::f32_slice_to_f16(src, dst);
    }
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    #[inline(always)]
    fn round(x: f32) -> f32 {
        numerics::round_f16(x)
    }
    #[inline(always)]
    fn as_f16(s: &[Self]) -> Option<&[f16]> {
        Some(s)
    }
    #[inline(always)]
    fn as_f16_mut(s: &mut [Self]) -> Option<&mut [f16]> {
        Some(s)
    }
}

/// Widens `src` into `dst` and, when `T` follows the ANE's rules, reads NaN as +inf.
pub(crate) fn load_ane<T: Element>(src: &[T], dst: &mut [f32]) {
    T::load(src, dst);
    if T::ANE_RULES {
        numerics::ane_read_slice(dst);
    }
}

/// Buffers reused across kernel calls so the hot paths do not allocate: operands widened to
/// f32 (depthwise conv), outputs before their rounding, attention's per-thread rows. Grows to
/// the largest size seen.
#[derive(Debug, Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
}

impl Scratch {
    /// An empty scratch; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        (self.a.capacity() + self.b.capacity() + self.c.capacity() + self.d.capacity()) * 4
    }

    /// Four disjoint buffers of the requested lengths (contents unspecified).
    pub(crate) fn buffers(
        &mut self,
        la: usize,
        lb: usize,
        lc: usize,
        ld: usize,
    ) -> (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) {
        fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            &mut v[..len]
        }
        (grow(&mut self.a, la), grow(&mut self.b, lb), grow(&mut self.c, lc), grow(&mut self.d, ld))
    }
}

/// Output slices at least this long are split into rayon chunks of this many elements.
pub const PAR_CHUNK: usize = 1 << 16;

/// Runs `f` on this thread's buffer held in `key`, kept between calls so that its pages stay
/// mapped; or on a fresh one when the buffer is in use (rayon can start another task on a
/// thread that waits inside one holding it).
pub(crate) fn with_thread_buffer<T: Default, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut held) => f(&mut held),
        Err(_) => f(&mut T::default()),
    })
}

/// Whether a kernel over `work` elements should split across rayon threads.
pub(crate) fn parallel_worth_it(work: usize) -> bool {
    work >= 2 * PAR_CHUNK
        && rayon::current_thread_index().is_none()
        && rayon::current_num_threads() > 1
}

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a dense shape, in elements.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Resolves a possibly negative axis (MIL style, -1 = last) against a rank; the rule is the
/// op registry's.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    anemone_mil::ops::normalize_axis(axis, rank).ok_or_else(|| {
        KernelError::new("axis", format!("axis {axis} out of range for rank {rank}"))
    })
}

/// The numpy broadcast of two shapes, by the op registry's rule.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    anemone_mil::ops::broadcast_shapes(a, b).ok_or_else(|| {
        KernelError::new("broadcast", format!("shapes {a:?} and {b:?} do not broadcast"))
    })
}

/// Strides (in elements) that read a dense tensor of `shape` as if it were broadcast to `out`
/// (stride 0 along broadcast dims). `shape` must broadcast to `out`.
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let dense = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| if i < lead || shape[i - lead] == 1 { 0 } else { dense[i - lead] })
        .collect()
}

/// Checks that a slice holds exactly the elements of a shape.
pub(crate) fn check_len(
    kernel: &'static str,
    what: &str,
    len: usize,
    shape: &[usize],
) -> Result<()> {
    let Some(want) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(KernelError::new(
            kernel,
            format!("{what} shape {shape:?} has more elements than a usize counts"),
        ));
    };
    if len != want {
        return Err(KernelError::new(
            kernel,
            format!("{what} has {len} elements but shape {shape:?} needs {want}"),
        ));
    }
    Ok(())
}

/// Products with fewer multiply-adds than this run one per rayon task when there are many of
/// them (batched matmul); larger ones are split by the GEMM itself.
const GEMM_PARALLEL_MACS: usize = 1 << 20;

#[cfg(test)]
pub(crate) mod testutil {
    //! Shared helpers for kernel tests: deterministic data and fp16 tolerances.
    use super::numerics::{round_f16, ulp_f16};
    use half::f16;

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The same values as fp16.
    pub fn values_f16(n: usize, seed: u64) -> Vec<f16> {
        values(n, seed).into_iter().map(f16::from_f32).collect()
    }

    pub fn to_f64(xs: &[f16]) -> Vec<f64> {
        xs.iter().map(|x| x.to_f64()).collect()
    }

    /// Asserts |got - reference| <= ulps * ulp_f16(reference) + abs for every element, where
    /// the reference is exact (f64) and `got` was rounded once to fp16.
    pub fn assert_close_f16(got: &[f16], reference: &[f64], ulps: f32, abs: f64, what: &str) {
        assert_eq!(got.len(), reference.len(), "{what}: lengths");
        for (i, (g, r)) in got.iter().zip(reference).enumerate() {
            let g = g.to_f32();
            let r32 = *r as f32;
            if g.is_infinite() || r32.is_infinite() || round_f16(r32).is_infinite() {
                assert_eq!(g, round_f16(r32), "{what}[{i}]: got {g}, reference {r}");
                continue;
            }
            let tol = ulps as f64 * ulp_f16(r32) as f64 + abs;
            assert!(
                (g as f64 - r).abs() <= tol,
                "{what}[{i}]: got {g}, reference {r}, tolerance {tol}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast_shapes(&[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_shapes(&[2, 3], &[4, 3]).is_err());
        assert_eq!(broadcast_strides(&[4, 1], &[2, 4, 3]), vec![0, 1, 0]);
    }

    #[test]
    fn axes() {
        assert_eq!(normalize_axis(-1, 3).unwrap(), 2);
        assert!(normalize_axis(3, 3).is_err());
        assert!(normalize_axis(-4, 3).is_err());
    }
}

/// e^x in f32 arithmetic that vectorizes: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
/// a degree-7 Taylor polynomial for e^r (truncation error < 6e-9 relative), and a two-step
/// scaling by 2^n so that overflow gives inf and the subnormal range is kept. Within 2 f32 ulps
/// of the exact value; NaN stays NaN.
///
/// The integer n is read from the bits of `x log2(e) + 1.5 * 2^23` (an integer plus 1.5 * 2^23,
/// exact over the clamped range) rather than converted with a saturating cast, which compilers
/// do not vectorize; arguments at the lower clamp scale by an exact 0, which gives the +0 the
/// product would underflow to without x86's slow path for underflowing results (masked
/// attention scores hit it on every element). A test holds both to the plain formulation.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding then subtracting 1.5 * 2^23 rounds to an integer (to nearest) in any SIMD width.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-104.0, 89.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    let s2 = if xc > -104.0 { s2 } else { 0.0 };
    let y = p * s1 * s2;
    if x.is_nan() { x } else { y }
}

#[cfg(test)]
mod exp_tests {
    use super::exp_f32;

    /// The same steps written plainly (a saturating cast for n, the product left to underflow):
    /// the definition of exp_f32's bits.
    fn plain_exp(x: f32) -> f32 {
        let xc = x.clamp(-104.0, 89.0);
        let n = (xc * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
        let r = (xc - n * 0.693_145_75) - n * 1.428_606_8e-6;
        let mut p = 1.0 / 5040.0;
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = p * r + c;
        }
        let ni = n as i32;
        let (n1, n2) = (ni >> 1, ni - (ni >> 1));
        let y = p
            * f32::from_bits(((n1 + 127) as u32) << 23)
            * f32::from_bits(((n2 + 127) as u32) << 23);
        if x.is_nan() { x } else { y }
    }

    #[test]
    fn exp_f32_has_the_bits_of_the_plain_steps() {
        let mut x = -120.0f32;
        while x < 100.0 {
            assert_eq!(exp_f32(x).to_bits(), plain_exp(x).to_bits(), "{x}");
            x += 0.000_913;
        }
        assert_eq!(exp_f32(-104.0).to_bits(), 0);
        for x in [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN, 1e-40, -104.0] {
            assert_eq!(exp_f32(x).to_bits(), plain_exp(x).to_bits(), "{x}");
        }
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn exp_f32_is_within_two_ulps() {
        let mut x = -110.0f32;
        while x < 90.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            if want > f32::MAX as f64 {
                assert_eq!(got, f64::INFINITY, "exp({x})");
            } else if want < 1.2e-38 {
                assert!((got - want).abs() <= 2.0 * 1.4e-45, "exp({x}): {got} vs {want}");
            } else {
                let ulp = (want as f32).to_bits();
                let ulp = (f32::from_bits(ulp + 1) - want as f32) as f64;
                assert!((got - want).abs() <= 2.0 * ulp, "exp({x}): {got} vs {want}");
            }
            x += 0.00731;
        }
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}

/// Runs `f` compiled for the widest vector extension this CPU has (AVX-512, else AVX2+FMA,
/// detected at run time), so the elementwise loops inlined into it use wide vectors instead of
/// the baseline SSE2. Results do not depend on the width: the loops fix their own order of
/// operations, and Rust never contracts a multiply and an add into an FMA on its own.
#[inline(always)]
pub(crate) fn with_wide_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU supports every feature the function is compiled for.
            return unsafe { wide::avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { wide::avx2(f) };
        }
    }
    f()
}

/// The steps of 16-lane AVX-512 loops over a row: whole steps with a constant mask, then the
/// tail with its own.
#[cfg(target_arch = "x86_64")]
pub(crate) mod lanes16 {
    use std::arch::x86_64::__mmask16;

    /// The lanes of a 16-wide step that lie inside `left` remaining elements.
    #[inline(always)]
    pub(crate) fn lanes(left: usize) -> __mmask16 {
        if left >= 16 { 0xffff } else { ((1u32 << left) - 1) as u16 }
    }

    /// Calls `step(i, mask)` for each 16-lane step of a row of `n`: the whole steps with every
    /// lane (a constant the compiler folds, so no mask is computed per step), then the tail
    /// with its own lanes.
    #[inline(always)]
    pub(crate) fn steps16(n: usize, mut step: impl FnMut(usize, __mmask16)) {
        let full = n / 16 * 16;
        for i in (0..full).step_by(16) {
            step(i, 0xffff);
        }
        if full < n {
            step(full, lanes(n - full));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
