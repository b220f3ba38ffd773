//! Float conversions between Rust slices and the little-endian bytes of a blob, written
//! straight into the destination buffer. fp32 -> fp16 rounds to nearest, ties to even (the
//! ANE's rule, REFERENCE.md §3) and uses the CPU's conversion instructions (F16C on x86_64,
//! FP16 on aarch64) when present, through `half`'s slice conversions.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Elements converted per step when the destination cannot be viewed as `[f16]` directly
/// (misaligned, or a big-endian host): small enough to stay in L1.
const CHUNK: usize = 2048;

/// Converts `src` to fp16 (round to nearest even) into `dst`, two little-endian bytes each.
///
/// # Panics
/// When `dst.len() != 2 * src.len()`.
pub fn f32_to_fp16_bytes(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 2, "fp16 destination must hold two bytes per element");
    #[cfg(target_endian = "little")]
    if let Ok(halves) = bytemuck::try_cast_slice_mut::<u8, f16>(dst) {
        halves.convert_from_f32_slice(src);
        return;
    }
    let mut tmp = [f16::ZERO; CHUNK];
    for (s, d) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK * 2)) {
        let t = &mut tmp[..s.len()];
        t.convert_from_f32_slice(s);
        for (h, out) in t.iter().zip(d.chunks_exact_mut(2)) {
            out.copy_from_slice(&h.to_le_bytes());
        }
    }
}

/// Converts `src` to bf16 (round to nearest even) into `dst`, two little-endian bytes each.
///
/// # Panics
/// When `dst.len() != 2 * src.len()`.
pub fn f32_to_bf16_bytes(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 2, "bf16 destination must hold two bytes per element");
    for (&x, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&bf16::from_f32(x).to_le_bytes());
    }
}

/// Converts little-endian fp16 bytes to f32 values (exact).
///
/// # Panics
/// When `src.len() != 2 * dst.len()`.
pub fn fp16_bytes_to_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len() * 2, "fp16 source must hold two bytes per element");
    #[cfg(target_endian = "little")]
    if let Ok(halves) = bytemuck::try_cast_slice::<u8, f16>(src) {
        halves.convert_to_f32_slice(dst);
        return;
    }
    let mut tmp = [f16::ZERO; CHUNK];
    for (s, d) in src.chunks(CHUNK * 2).zip(dst.chunks_mut(CHUNK)) {
        let t = &mut tmp[..d.len()];
        for (h, b) in t.iter_mut().zip(s.chunks_exact(2)) {
            *h = f16::from_le_bytes([b[0], b[1]]);
        }
        t.convert_to_f32_slice(d);
    }
}

/// `x` rounded to f32 "to odd": truncated toward zero, with the last bit set when inexact.
/// Rounding that to a format with at most 22 significand bits then gives the correctly
/// rounded result, which converting f64 -> f32 -> fp16 by nearest-even twice does not.
fn f64_to_f32_round_to_odd(x: f64) -> f32 {
    let nearest = x as f32;
    if !nearest.is_finite() || nearest as f64 == x {
        return nearest;
    }
    let toward_zero = if (nearest as f64).abs() > x.abs() {
        f32::from_bits(nearest.to_bits() - 1)
    } else {
        nearest
    };
    f32::from_bits(toward_zero.to_bits() | 1)
}

/// f64 to fp16, correctly rounded (nearest, ties to even; overflow to infinity).
pub fn f64_to_f16(x: f64) -> f16 {
    f16::from_f32(f64_to_f32_round_to_odd(x))
}

/// f64 to bf16, correctly rounded (nearest, ties to even; overflow to infinity).
pub fn f64_to_bf16(x: f64) -> bf16 {
    bf16::from_f32(f64_to_f32_round_to_odd(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn rounds_to_nearest_even_like_the_scalar_conversion() {
        let values: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            65504.0,
            65519.0,                    // rounds down to 65504
            65520.0,                    // ties away to infinity
            1.0 + 2f32.powi(-11),       // exact tie: rounds to even (1.0)
            1.0 + 3.0 * 2f32.powi(-11), // tie: rounds up to even
            5.96e-8,                    // smallest subnormal
            2.9e-8,                     // below half the smallest subnormal: zero
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -2.71,
        ];
        let mut out = vec![0u8; values.len() * 2];
        f32_to_fp16_bytes(&values, &mut out);
        for (i, &v) in values.iter().enumerate() {
            let got = [out[2 * i], out[2 * i + 1]];
            if v.is_nan() {
                assert!(f16::from_le_bytes(got).is_nan());
            } else {
                assert_eq!(got, reference(v), "value {v}");
            }
        }
        assert_eq!(f16::from_le_bytes([out[12], out[13]]), f16::ONE);
        assert_eq!(f16::from_le_bytes([out[10], out[11]]), f16::INFINITY);
    }

    #[test]
    fn misaligned_destinations_and_odd_lengths_convert_the_same() {
        let src: Vec<f32> = (0..5000).map(|i| (i as f32 - 2500.0) * 0.37).collect();
        let mut aligned = vec![0u8; src.len() * 2];
        f32_to_fp16_bytes(&src, &mut aligned);
        let mut backing = vec![0u8; src.len() * 2 + 1];
        f32_to_fp16_bytes(&src, &mut backing[1..]);
        assert_eq!(&backing[1..], &aligned[..]);
        for (i, &x) in src.iter().enumerate() {
            assert_eq!([aligned[2 * i], aligned[2 * i + 1]], reference(x));
        }

        let mut back = vec![0f32; src.len()];
        fp16_bytes_to_f32(&backing[1..], &mut back);
        let mut back2 = vec![0f32; src.len()];
        fp16_bytes_to_f32(&aligned, &mut back2);
        assert_eq!(back, back2);
        assert_eq!(back[2500], 0.0);
        assert_eq!(back[2501], f16::from_f32(0.37).to_f32());
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let mut out = [0u8; 4];
        f32_to_bf16_bytes(&[1.0, f32::from_bits(0x3f80_8000)], &mut out);
        assert_eq!(out, [0x80, 0x3f, 0x80, 0x3f]); // the tie rounds to the even 1.0
    }

    #[test]
    fn f64_conversions_round_once() {
        // Between two fp16 values, just above the midpoint: nearest-even via f32 would round
        // the midpoint first and then to even (down); the correct answer is up.
        let lo = f16::from_f32(1.0).to_f64();
        let hi = f16::from_bits(f16::from_f32(1.0).to_bits() + 1).to_f64();
        let just_above = (lo + hi) / 2.0 + 1e-12;
        assert_eq!(f64_to_f16(just_above).to_f64(), hi);
        assert_eq!(f64_to_f16((lo + hi) / 2.0).to_f64(), lo, "a tie goes to even");
        // half 2.7 gives the fp16 below this one (-0.00044727): it rounds twice.
        assert_eq!(f64_to_f16(-4.4715403868868876e-4).to_f32(), -0.000_447_034_84);
        assert!(f64_to_f16(70000.0).is_infinite());
        assert_eq!(f64_to_bf16(1.0 + 1.0 / 256.0 + 1e-12).to_f64(), 1.0 + 1.0 / 128.0);
    }
}
