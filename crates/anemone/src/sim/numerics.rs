//! The ANE's fp16 rules, and how faithfully the simulator follows each one.
//!
//! The ANE stores and computes in fp16 (REFERENCE.md §3). Every kernel of the simulator computes
//! in f32 and rounds once to the output type; when that type is fp16 the kernel also applies the
//! rules below that are marked *reproduced*. Kernels over f32 data are plain IEEE reference
//! kernels and apply none of them: the ANE has no fp32 arithmetic, so by default the plan runs
//! an op typed fp32 through the fp16 kernels (see the first row, and `plan::Fp32Arithmetic`).
//!
//! | rule (measured on hardware) | simulator |
//! |---|---|
//! | no fp32 arithmetic: tensors typed fp32 are computed in fp16; only I/O and `cast` keep fp32 | reproduced by default: operands rounded to fp16, every rule below applied, the fp16 result stored exactly in the fp32 tensor; data movement (reshape, transpose, slice, concat, split) keeps fp32 values as they are; `Fp32Arithmetic::Exact` keeps IEEE f32 instead |
//! | f32 -> fp16 rounds to nearest, ties to even; overflow (after rounding, beyond 65504) gives ±inf | reproduced exactly ([`f32_to_f16`], [`round_f16`]) |
//! | no NaN ever exists: a NaN read by the datapath is +inf | reproduced: fp16 kernels read NaN as +inf ([`ane_read`]); a cast to fp16 maps NaN to +inf |
//! | indeterminate forms (inf-inf, 0*inf, sqrt(-1), rsqrt(-1), log(-1)) give +0 | reproduced: an fp16 kernel whose f32 result is NaN stores +0 ([`ane_result`]) |
//! | matmul and convolutions of two or more taps saturate at 2^15: an output that rounds to 32768 or more is ±inf | reproduced on the final output ([`mac_saturate`]); a partial sum that passes 2^15 and later cancels is *not* detected |
//! | elementwise ops and reduce_sum overflow at the fp16 limit, not at 2^15: a result beyond 65504 after rounding is ±inf | reproduced on the final result (ordinary fp16 rounding); reductions accumulate in f32, so a partial sum that passes 65504 and later cancels is *not* detected. The source states no limit for reduce_mean; the simulator rounds the mean once |
//! | matmul/conv accumulate products in groups of 4 rounded to fp16, then in a wide accumulator | approximated: the simulator accumulates in f32 (closer to exact). [`dot_groups_of_4`] is a slow reference model of the rule |
//! | softmax subtracts the max ([1000, 1, 2, 3] -> [1, 0, 0, 0]) | reproduced |
//! | sigmoid/tanh/gelu/exp use a 33-knot piecewise-linear table (max sigmoid error ~0.0034) | approximated: the simulator evaluates the exact function in f32 and rounds once |
//! | denormals are kept on elementwise paths, flushed inside the M1 accumulator (kept on M5) | denormals are kept everywhere |
//! | a bias of a conv is added in fp16 after the accumulator output is rounded | reproduced: two roundings when there is a bias |
//!
//! Tolerances of the kernels are stated in their tests as multiples of [`ulp_f16`].

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Largest finite fp16 value.
pub const FP16_MAX: f32 = 65504.0;

/// Where the multiply-accumulate output port of the ANE saturates: outputs that round to this
/// magnitude or beyond come out as ±inf (ane-guide, measured on M1 and A14).
pub const MAC_SATURATION: f32 = 32768.0;

/// The smallest magnitude that rounds (RNE) to [`MAC_SATURATION`] in fp16: the midpoint between
/// 32752 and 32768 rounds up because 32768 has the even significand.
const MAC_SATURATION_THRESHOLD: f32 = 32760.0;

/// Smallest positive normal fp16 value, 2^-14.
const FP16_MIN_NORMAL: f32 = 6.103_515_6e-5;

/// f32 -> fp16, round to nearest with ties to even; ±inf beyond the fp16 range after rounding.
/// Exact (IEEE conversion). NaN stays NaN: the ANE's NaN rule is applied by the kernels.
#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    f16::from_f32(x)
}

/// fp16 -> f32; exact.
#[inline]
pub fn f16_to_f32(x: f16) -> f32 {
    x.to_f32()
}

/// The f32 holding the fp16 value nearest to `x` (ties to even, ±inf on overflow): the same
/// number as `f32_to_f16(x).to_f32()`, computed in f32 arithmetic so that loops over it
/// vectorize. Exact for every finite and infinite `x`; a NaN stays a NaN.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    let bits = x.to_bits();
    // Normal range: drop the 13 low significand bits with round-half-even on the bit pattern.
    // A carry out of the significand correctly bumps the exponent.
    let lsb = (bits >> 13) & 1;
    let normal = f32::from_bits(bits.wrapping_add(0x0fff + lsb) & !0x1fff);
    let normal = if normal.abs() > FP16_MAX { f32::INFINITY.copysign(x) } else { normal };
    // Subnormal range: fp16's spacing there is a fixed 2^-24, which is also f32's spacing on
    // [0.5, 1): adding and removing 0.75 rounds to a multiple of 2^-24, ties to even, in
    // plain SIMD arithmetic (no rounding instruction needed); the sign is kept for -0.
    let sub = ((x.abs() + 0.75) - 0.75).copysign(x);
    if x.is_nan() {
        x
    } else if x.abs() >= FP16_MIN_NORMAL {
        normal
    } else {
        sub
    }
}

/// Spacing of fp16 values at the magnitude of `x` (the unit in the last place of the fp16 value
/// nearest `x`); used to state tolerances.
pub fn ulp_f16(x: f32) -> f32 {
    let a = round_f16(x).abs();
    if a < FP16_MIN_NORMAL {
        return 1.0 / 16_777_216.0;
    }
    let exp = a.log2().floor().min(15.0);
    (exp - 10.0).exp2()
}

/// Converts a whole slice f32 -> fp16 at memory speed; RNE, overflow to ±inf. Sixteen lanes
/// per instruction on AVX-512, else `half`'s conversion (F16C eight at a time when the CPU has
/// it). Both are the IEEE conversion, so the bits are the same. Panics if the lengths differ.
#[inline]
pub fn f32_slice_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32 -> fp16 of slices of different lengths");
    #[cfg(target_arch = "x86_64")]
    if convert512::available() {
        // SAFETY: the CPU has AVX-512F (checked just above); the lengths are equal.
        unsafe { convert512::narrow(src, dst) };
        return;
    }
    dst.convert_from_f32_slice(src);
}

/// Converts a whole slice fp16 -> f32 at memory speed; exact (AVX-512 sixteen lanes at a time
/// when the CPU has it, else `half`). Panics if the lengths differ.
#[inline]
pub fn f16_slice_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "fp16 -> f32 of slices of different lengths");
    #[cfg(target_arch = "x86_64")]
    if convert512::available() {
        // SAFETY: the CPU has AVX-512F (checked just above); the lengths are equal.
        unsafe { convert512::widen(src, dst) };
        return;
    }
    src.convert_to_f32_slice(dst);
}

/// The conversions with AVX-512F's 16-lane `vcvtph2ps`/`vcvtps2ph`: one call per slice
/// instead of `half`'s call per eight values, which showed in every elementwise kernel's
/// profile.
#[cfg(target_arch = "x86_64")]
mod convert512 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Whether the CPU has AVX-512F (std caches the detection).
    #[inline(always)]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// # Safety
    /// The CPU must have AVX-512F and the slices equal lengths.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        let n = src.len();
        let full = n - n % 16;
        let (s, d) = (src.as_ptr() as *const __m256i, dst.as_mut_ptr());
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= n for both slices; unaligned loads and stores.
            unsafe {
                let h = _mm256_loadu_si256(s.byte_add(i * 2));
                _mm512_storeu_ps(d.add(i), _mm512_cvtph_ps(h));
            }
        }
        for i in full..n {
            dst[i] = src[i].to_f32();
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F and the slices equal lengths.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn narrow(src: &[f32], dst: &mut [f16]) {
        let n = src.len();
        let full = n - n % 16;
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut __m256i);
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= n for both slices; unaligned loads and stores.
            unsafe {
                let v = _mm512_loadu_ps(s.add(i));
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                _mm256_storeu_si256(d.byte_add(i * 2), h);
            }
        }
        for i in full..n {
            dst[i] = f16::from_f32(src[i]);
        }
    }
}

/// The value the ANE datapath reads: NaN is read as +inf (measured: a NaN echoed through x + 0
/// has the bits of +inf, and every later op behaves as if it were +inf).
#[inline(always)]
pub fn ane_read(x: f32) -> f32 {
    if x.is_nan() { f32::INFINITY } else { x }
}

/// The value the ANE produces where IEEE produces NaN (inf - inf, 0 * inf, sqrt(-1), ...): +0.
#[inline(always)]
pub fn ane_result(x: f32) -> f32 {
    if x.is_nan() { 0.0 } else { x }
}

/// The multiply-accumulate output port: NaN -> +0, and a value that would round to 2^15 or
/// beyond becomes ±inf. The result still needs the final rounding to fp16.
#[inline(always)]
pub fn mac_saturate(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else if x.abs() >= MAC_SATURATION_THRESHOLD {
        f32::INFINITY.copysign(x)
    } else {
        x
    }
}

/// Applies [`ane_result`] to a whole slice in place.
pub fn ane_result_slice(xs: &mut [f32]) {
    for x in xs {
        *x = ane_result(*x);
    }
}

/// Applies [`ane_read`] to a whole slice in place.
pub fn ane_read_slice(xs: &mut [f32]) {
    for x in xs {
        *x = ane_read(*x);
    }
}

/// Applies [`mac_saturate`] to a whole slice in place.
pub fn mac_saturate_slice(xs: &mut [f32]) {
    for x in xs {
        *x = mac_saturate(*x);
    }
}

/// Applies [`round_f16`] to a whole slice in place.
pub fn round_f16_slice(xs: &mut [f32]) {
    for x in xs {
        *x = round_f16(*x);
    }
}

/// A slow reference model of the ANE's dot product, for tests and investigations (the kernels
/// use f32 accumulation instead). Each product is rounded to fp16; the products are taken in
/// consecutive groups of 4, each group summed left to right with a rounding to fp16 after every
/// addition; the group sums are added in an f32 accumulator; the total is rounded to fp16 once,
/// through the output port of [`mac_saturate`].
///
/// This model reproduces the published examples `[4096] + [1] * 1024 = 5116` and the floor of 4
/// surviving ones in the cancellation probe [b, -b, 1] * 16 for b >= 4096; it does not reproduce
/// the 16 survivors measured for b < 4096 (it gives 4), so the real lane grouping differs in a way
/// the public measurements do not pin down.
pub fn dot_groups_of_4(a: &[f16], b: &[f16]) -> f16 {
    assert_eq!(a.len(), b.len(), "dot_groups_of_4: operands of different lengths");
    let mut wide = 0.0f32;
    for (ga, gb) in a.chunks(4).zip(b.chunks(4)) {
        let mut group = 0.0f32;
        for (i, (x, y)) in ga.iter().zip(gb).enumerate() {
            let p = round_f16(ane_read(x.to_f32()) * ane_read(y.to_f32()));
            group = if i == 0 { p } else { round_f16(ane_result(group + p)) };
        }
        wide = ane_result(wide + group);
    }
    f32_to_f16(mac_saturate(wide))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_conversions_are_the_scalar_ieee_ones() {
        // Every fp16 value widens exactly, at every position of a 16-lane vector and its tail.
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).chain([f16::ONE; 7]).collect();
        let mut wide = vec![0.0f32; all.len()];
        f16_slice_to_f32(&all, &mut wide);
        for (h, w) in all.iter().zip(&wide) {
            assert_eq!(h.to_f32().to_bits(), w.to_bits(), "{h:?} -> {w}");
        }
        // Narrowing: every fp16 value, the midpoints between neighbours (ties to even), just
        // above and below them, overflow, subnormals and NaN, against the scalar conversion.
        let mut xs: Vec<f32> = Vec::new();
        for b in 0..0x7c00u16 {
            let lo = f16::from_bits(b).to_f32() as f64;
            let hi = f16::from_bits(b + 1).to_f32() as f64;
            let mid = (lo + hi) / 2.0;
            for v in [lo, mid, mid.next_up(), mid.next_down(), hi] {
                xs.extend([v as f32, -(v as f32)]);
            }
        }
        xs.extend([65504.0, 65519.99, 65520.0, 1e9, f32::INFINITY, f32::NAN, -f32::NAN, 1e-10]);
        let mut narrow = vec![f16::ZERO; xs.len()];
        f32_slice_to_f16(&xs, &mut narrow);
        for (x, h) in xs.iter().zip(&narrow) {
            let want = f16::from_f32(*x);
            assert_eq!(h.to_bits(), want.to_bits(), "{x:e}: {h:?}, want {want:?}");
        }
    }

    fn bits_equal(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn round_f16_matches_ieee_conversion_near_every_f16_value() {
        for h in 0..=u16::MAX {
            let v = f16::from_bits(h).to_f32();
            if !v.is_finite() {
                continue;
            }
            // The value itself, its neighbours in f32, and the midpoints to the next fp16 value.
            let next = f16::from_bits(h.wrapping_add(1)).to_f32();
            let mut probes = vec![v, f32::from_bits(v.to_bits() + 1)];
            if v.to_bits() > 0 {
                probes.push(f32::from_bits(v.to_bits() - 1));
            }
            if next.is_finite() && next.abs() > v.abs() {
                let mid = (v + next) / 2.0;
                probes.extend([mid, f32::from_bits(mid.to_bits() + 1)]);
                probes.push(f32::from_bits(mid.to_bits() - 1));
            }
            for p in probes {
                let want = f16::from_f32(p).to_f32();
                assert!(bits_equal(round_f16(p), want), "x = {p:e}: {} vs {want}", round_f16(p));
            }
        }
    }

    #[test]
    fn round_f16_matches_ieee_conversion_on_random_bit_patterns() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f32::from_bits(state as u32);
            let want = f16::from_f32(x).to_f32();
            assert!(bits_equal(round_f16(x), want), "x = {x:e}");
        }
    }

    #[test]
    fn overflow_boundary_is_after_rounding() {
        assert_eq!(round_f16(65504.0), 65504.0);
        assert_eq!(round_f16(65519.99), 65504.0);
        assert_eq!(round_f16(65520.0), f32::INFINITY);
        assert_eq!(round_f16(-65520.0), f32::NEG_INFINITY);
        assert_eq!(f32_to_f16(65520.0), f16::INFINITY);
        assert_eq!(f32_to_f16(65519.0), f16::MAX);
    }

    #[test]
    fn ties_go_to_even() {
        // 2049 lies halfway between 2048 and 2050 (spacing 2): the even significand wins.
        assert_eq!(round_f16(2049.0), 2048.0);
        assert_eq!(round_f16(2051.0), 2052.0);
        assert_eq!(round_f16(1.0 + 1.0 / 2048.0), 1.0);
    }

    #[test]
    fn nan_rules() {
        assert_eq!(ane_read(f32::NAN), f32::INFINITY);
        assert_eq!(ane_result(f32::INFINITY - f32::INFINITY).to_bits(), 0.0f32.to_bits());
        assert_eq!(ane_result((-1.0f32).sqrt()).to_bits(), 0.0f32.to_bits());
        assert_eq!(ane_result(2.5), 2.5);
    }

    #[test]
    fn mac_port_saturates_at_two_to_the_fifteen() {
        assert_eq!(mac_saturate(32752.0), 32752.0);
        assert_eq!(mac_saturate(32759.0), 32759.0);
        assert_eq!(f32_to_f16(mac_saturate(32759.0)).to_f32(), 32752.0);
        assert_eq!(mac_saturate(32760.0), f32::INFINITY);
        assert_eq!(mac_saturate(-32768.0), f32::NEG_INFINITY);
        assert_eq!(mac_saturate(f32::NAN), 0.0);
    }

    #[test]
    fn slice_conversions_round_like_scalars() {
        let src: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 1.37e-3 * i as f32).collect();
        let mut h = vec![f16::ZERO; src.len()];
        f32_slice_to_f16(&src, &mut h);
        let mut back = vec![0.0; src.len()];
        f16_slice_to_f32(&h, &mut back);
        for (s, b) in src.iter().zip(&back) {
            assert_eq!(*b, round_f16(*s));
        }
    }

    #[test]
    fn groups_of_4_model_gives_the_published_5116() {
        let mut a = vec![f16::from_f32(4096.0)];
        a.extend(std::iter::repeat_n(f16::ONE, 1024));
        let ones = vec![f16::ONE; a.len()];
        assert_eq!(dot_groups_of_4(&a, &ones).to_f32(), 5116.0);
        // f32 accumulation (what the kernels do) gives the exact 5120.
        let exact: f32 = a.iter().map(|x| x.to_f32()).sum();
        assert_eq!(f32_to_f16(exact).to_f32(), 5120.0);
    }

    #[test]
    fn groups_of_4_model_keeps_a_long_sum_of_ones_exact() {
        let ones = vec![f16::ONE; 16000];
        assert_eq!(dot_groups_of_4(&ones, &ones).to_f32(), 16000.0);
    }

    #[test]
    fn groups_of_4_model_cancellation_floor() {
        for b in [4096.0f32, 8000.0, 16000.0, 30000.0] {
            let mut v = Vec::new();
            for _ in 0..16 {
                v.extend([b, -b, 1.0].map(f16::from_f32));
            }
            let ones = vec![f16::ONE; v.len()];
            assert_eq!(dot_groups_of_4(&v, &ones).to_f32(), 4.0, "b = {b}");
        }
    }

    #[test]
    fn ulp_f16_spacing() {
        assert_eq!(ulp_f16(1.0), 1.0 / 1024.0);
        assert_eq!(ulp_f16(4096.0), 4.0);
        assert_eq!(ulp_f16(3000.0), 2.0);
        assert_eq!(ulp_f16(1e-7), 1.0 / 16_777_216.0);
    }
}
