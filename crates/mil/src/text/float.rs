//! The binary floating-point formats MIL literals can hold (fp16, bf16, fp32, fp64, fp8e4m3,
//! fp8e5m2): correctly rounded conversion of number literals into their bits, and the
//! shortest decimal text that reads back to the same bits.
//!
//! One rounding routine serves every format, so a literal means the same value whatever its
//! type, and printing checks each candidate text with the very routine the parser uses.

use std::cmp::Ordering;

use super::decimal;
use crate::ir::DType;

/// Which bit patterns are special.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Specials {
    /// IEEE 754: the all-ones exponent holds infinities and NaNs.
    Ieee,
    /// fp8e4m3 ("FN"): no infinities; only all-ones exponent and mantissa is NaN.
    NanOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Format {
    pub dtype: DType,
    exp_bits: u32,
    man_bits: u32,
    specials: Specials,
}

/// The literal's value does not fit the format (it would round to infinity, or past the
/// largest value of a format without infinities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Overflow;

impl Format {
    pub const FP16: Format = Format::ieee(DType::Fp16, 5, 10);
    pub const BF16: Format = Format::ieee(DType::Bf16, 8, 7);
    pub const FP32: Format = Format::ieee(DType::Fp32, 8, 23);
    pub const FP64: Format = Format::ieee(DType::Fp64, 11, 52);
    pub const FP8E5M2: Format = Format::ieee(DType::Fp8E5M2, 5, 2);
    pub const FP8E4M3: Format =
        Format { dtype: DType::Fp8E4M3, exp_bits: 4, man_bits: 3, specials: Specials::NanOnly };

    const fn ieee(dtype: DType, exp_bits: u32, man_bits: u32) -> Format {
        Format { dtype, exp_bits, man_bits, specials: Specials::Ieee }
    }

    pub fn of(dtype: DType) -> Option<Format> {
        Some(match dtype {
            DType::Fp16 => Format::FP16,
            DType::Bf16 => Format::BF16,
            DType::Fp32 => Format::FP32,
            DType::Fp64 => Format::FP64,
            DType::Fp8E5M2 => Format::FP8E5M2,
            DType::Fp8E4M3 => Format::FP8E4M3,
            _ => return None,
        })
    }

    pub fn width(self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    fn bias(self) -> i64 {
        (1i64 << (self.exp_bits - 1)) - 1
    }

    /// The exponent of the smallest normal value.
    fn emin(self) -> i64 {
        1 - self.bias()
    }

    pub fn sign_bit(self) -> u64 {
        1u64 << (self.exp_bits + self.man_bits)
    }

    fn man_mask(self) -> u64 {
        (1u64 << self.man_bits) - 1
    }

    fn exp_mask(self) -> u64 {
        ((1u64 << self.exp_bits) - 1) << self.man_bits
    }

    /// The NaN that plain `nan` stands for.
    pub fn canonical_nan(self) -> u64 {
        match self.specials {
            Specials::Ieee => self.exp_mask() | (1u64 << (self.man_bits - 1)),
            Specials::NanOnly => self.exp_mask() | self.man_mask(),
        }
    }

    pub fn infinity(self) -> Option<u64> {
        (self.specials == Specials::Ieee).then(|| self.exp_mask())
    }

    pub fn is_nan(self, bits: u64) -> bool {
        let magnitude = bits & !self.sign_bit();
        match self.specials {
            Specials::Ieee => {
                magnitude & self.exp_mask() == self.exp_mask() && magnitude & self.man_mask() != 0
            }
            Specials::NanOnly => magnitude == self.exp_mask() | self.man_mask(),
        }
    }

    pub fn is_infinite(self, bits: u64) -> bool {
        self.infinity() == Some(bits & !self.sign_bit())
    }

    /// The bits of the largest finite value, for error messages.
    pub fn max_finite_bits(self) -> u64 {
        match self.specials {
            Specials::Ieee => self.exp_mask() - 1,
            Specials::NanOnly => self.exp_mask() | (self.man_mask() - 1),
        }
    }

    /// The exact value of a bit pattern (NaN and infinities included).
    pub fn decode(self, bits: u64) -> f64 {
        if self == Format::FP64 {
            return f64::from_bits(bits);
        }
        let negative = bits & self.sign_bit() != 0;
        let magnitude = if self.is_nan(bits) {
            f64::NAN
        } else if self.is_infinite(bits) {
            f64::INFINITY
        } else {
            let field = ((bits & self.exp_mask()) >> self.man_bits) as i64;
            let fraction = bits & self.man_mask();
            let man = self.man_bits as i64;
            let (q, exp) = if field == 0 {
                (fraction, self.emin() - man)
            } else {
                (fraction | (1u64 << self.man_bits), field - self.bias() - man)
            };
            // Exact: q has at most 24 bits and 2^exp is a normal f64 for formats up to fp32.
            q as f64 * pow2(exp)
        };
        if negative { -magnitude } else { magnitude }
    }

    /// Rounds `m × 2^e` (plus a sliver more when `sticky`: bits below `m` that were dropped)
    /// to the nearest value of the format, ties to even. At an exact midpoint `tie` says
    /// whether the true value lies above (Greater), below (Less) or on it (Equal): callers
    /// that rounded once already know better than the midpoint itself.
    pub fn round(
        self,
        negative: bool,
        m: u64,
        e: i64,
        sticky: bool,
        tie: impl FnOnce() -> Ordering,
    ) -> Result<u64, Overflow> {
        let sign = if negative { self.sign_bit() } else { 0 };
        if m == 0 {
            return Ok(sign);
        }
        // Put the leading bit at bit 63 so that every format drops at least 11 bits.
        let lz = m.leading_zeros();
        let (m, e) = (m << lz, e - i64::from(lz));
        let exponent = 63 + e; // floor(log2(value))
        let man = i64::from(self.man_bits);
        let quantum = exponent.max(self.emin()) - man;
        let (mut q, position) = split(m, quantum - e, sticky);
        let round_up = match position {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => match tie() {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => q & 1 == 1,
            },
        };
        q += u64::from(round_up);
        // In IEEE layout, (biased exponent - 1) << man + q encodes q × 2^quantum, carries
        // into the exponent included, subnormals (field 0) too.
        let field = quantum + man + self.bias() - 1;
        if field >= 1i64 << self.exp_bits {
            return Err(Overflow);
        }
        let bits = ((field as u64) << self.man_bits) + q;
        let overflow = match self.specials {
            Specials::Ieee => bits >= self.exp_mask(),
            Specials::NanOnly => bits >= self.exp_mask() | self.man_mask(),
        };
        if overflow { Err(Overflow) } else { Ok(bits | sign) }
    }
}

/// Splits `m` into `m >> shift` and where the dropped bits lie against half a unit.
fn split(m: u64, shift: i64, sticky: bool) -> (u64, Ordering) {
    if shift <= 0 {
        // Not reached: `round` normalizes m so that at least 11 bits are dropped.
        return (m, if sticky { Ordering::Less } else { Ordering::Equal });
    }
    if shift > 64 {
        return (0, Ordering::Less); // m < 2^64 <= half a unit
    }
    let wide = u128::from(m);
    let q = (wide >> shift) as u64;
    let rest = wide & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    let position = match rest.cmp(&half) {
        Ordering::Equal if sticky => Ordering::Greater,
        other => other,
    };
    (q, position)
}

/// 2^exp for exponents of normal f64 values.
fn pow2(exp: i64) -> f64 {
    f64::from_bits(((exp.clamp(-1022, 1023) + 1023) as u64) << 52)
}

/// The bits of a decimal literal (`digits[.digits][e[+-]digits]`, sign given apart).
pub(super) fn decimal_to_bits(format: Format, negative: bool, text: &str) -> Result<u64, Overflow> {
    let sign = if negative { format.sign_bit() } else { 0 };
    match format.dtype {
        DType::Fp64 => {
            let v: f64 = text.parse().map_err(|_| Overflow)?;
            if v.is_infinite() { Err(Overflow) } else { Ok(v.to_bits() | sign) }
        }
        DType::Fp32 => {
            let v: f32 = text.parse().map_err(|_| Overflow)?;
            if v.is_infinite() { Err(Overflow) } else { Ok(u64::from(v.to_bits()) | sign) }
        }
        _ => {
            // Correct rounding through f64. Every midpoint between neighbours of the narrow
            // format is an f64, and rounding is monotone, so the f64 lies on the same side
            // of each midpoint as the exact value, unless it lands on one. Then `tie`
            // compares the text with it exactly.
            let v: f64 = text.parse().map_err(|_| Overflow)?;
            if v.is_infinite() {
                return Err(Overflow);
            }
            let (m, e) = decompose(v);
            format.round(negative, m, e, false, || decimal::compare_with_f64(text, v))
        }
    }
}

/// `x = m × 2^e` exactly, for a finite non-negative f64.
fn decompose(x: f64) -> (u64, i64) {
    let bits = x.to_bits();
    let field = ((bits >> 52) & 0x7ff) as i64;
    let fraction = bits & ((1u64 << 52) - 1);
    if field == 0 { (fraction, -1074) } else { (fraction | (1u64 << 52), field - 1075) }
}

/// The bits of a C99 hexadecimal literal (`0xH[.H][p[+-]D]`, sign given apart); without a
/// `p` exponent it is a hexadecimal integer. Rounded once, directly to the format.
pub(super) fn hex_to_bits(format: Format, negative: bool, text: &str) -> Result<u64, Overflow> {
    let body = text.get(2..).unwrap_or("");
    let (mantissa, exponent) = match body.find(['p', 'P']) {
        Some(i) => (&body[..i], decimal::parse_exponent(&body[i + 1..])),
        None => (body, 0),
    };
    let mut m = 0u64;
    let mut e = exponent;
    let mut sticky = false;
    let mut after_point = false;
    for c in mantissa.chars() {
        if c == '.' {
            after_point = true;
            continue;
        }
        let Some(digit) = c.to_digit(16) else { continue };
        if m >> 60 == 0 {
            m = (m << 4) | u64::from(digit);
            if after_point {
                e -= 4;
            }
        } else {
            // Out of room: the digit only decides rounding (and scales if before the point).
            sticky |= digit != 0;
            if !after_point {
                e += 4;
            }
        }
    }
    format.round(negative, m, e, sticky, || Ordering::Equal)
}

/// Writes the shortest text that reads back (through [`decimal_to_bits`]) to `bits`.
pub(super) fn write_shortest(out: &mut String, format: Format, bits: u64) {
    let negative = bits & format.sign_bit() != 0;
    if format.is_nan(bits) {
        write_nan(out, format, bits);
        return;
    }
    if negative {
        out.push('-');
    }
    if format.is_infinite(bits) {
        out.push_str("inf");
        return;
    }
    let magnitude = bits & !format.sign_bit();
    if magnitude == 0 {
        out.push('0');
        return;
    }
    let (digits, exp10) = match format.dtype {
        DType::Fp64 => scientific_parts(&format!("{:e}", f64::from_bits(magnitude))),
        DType::Fp32 => scientific_parts(&format!("{:e}", f32::from_bits(magnitude as u32))),
        _ => shortest_narrow(format, magnitude),
    };
    write_decimal(out, &digits, exp10);
}

fn write_nan(out: &mut String, format: Format, bits: u64) {
    let canonical = format.canonical_nan();
    if bits == canonical {
        out.push_str("nan");
    } else if bits == canonical | format.sign_bit() {
        out.push_str("-nan");
    } else {
        // Any other NaN keeps its payload and sign by naming its bits.
        out.push_str(&format!("nan(0x{bits:x})"));
    }
}

/// Digits and decimal exponent of the first digit, from Rust's `{:e}` output (`1.25e-3`).
fn scientific_parts(text: &str) -> (String, i64) {
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

/// The shortest decimal for a positive finite value of a format narrower than fp32: try one
/// significant digit, then two, ..., checking each candidate by parsing it back. Whole
/// numbers below 2^24 are the exception: they print exactly.
fn shortest_narrow(format: Format, magnitude: u64) -> (String, i64) {
    let x = format.decode(magnitude);
    if x.fract() == 0.0 && x < 16_777_216.0 {
        // Whole numbers print exactly, as generators write them: `-65504`, not `-65500`
        // (which reads back to the same fp16 but hides the value).
        let text = (x as u64).to_string();
        let lead = text.len() as i64 - 1;
        return trim_trailing_zeros(text, lead);
    }
    for precision in 1..=17usize {
        let (digits, exp10) = scientific_parts(&format!("{:.*e}", precision - 1, x));
        let Ok(nearest) = digits.parse::<u64>() else { break };
        // The nearest n-digit decimal is the best bet; at a power of two the rounding
        // interval is lopsided, so a neighbour may read back where the nearest does not.
        for candidate in [nearest, nearest.saturating_sub(1), nearest + 1] {
            if candidate == 0 {
                continue;
            }
            let text = candidate.to_string();
            // value = candidate × 10^(exp10 - precision + 1)
            let lead = exp10 + text.len() as i64 - precision as i64;
            let (text, lead) = trim_trailing_zeros(text, lead);
            let mut probe = String::new();
            write_decimal(&mut probe, &text, lead);
            if decimal_to_bits(format, false, &probe) == Ok(magnitude) {
                return (text, lead);
            }
        }
    }
    // Unreachable for the formats above (17 digits pin down any f64); never print wrong.
    scientific_parts(&format!("{x:e}"))
}

fn trim_trailing_zeros(mut digits: String, lead: i64) -> (String, i64) {
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, lead)
}

/// Writes `0.d1d2... × 10^(lead + 1)`, i.e. digits with the first one at `10^lead`: plain
/// for everyday magnitudes (as the compiler's own output does), scientific far out.
fn write_decimal(out: &mut String, digits: &str, lead: i64) {
    let len = digits.len() as i64;
    if (-7..16).contains(&lead) {
        let point = lead + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(digits);
        } else if point >= len {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', (point - len) as usize));
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if len > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push_str(&lead.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn shortest(format: Format, bits: u64) -> String {
        let mut s = String::new();
        write_shortest(&mut s, format, bits);
        s
    }

    fn fp16(text: &str) -> u16 {
        let (neg, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let bits = if body.starts_with("0x") {
            hex_to_bits(Format::FP16, neg, body)
        } else {
            decimal_to_bits(Format::FP16, neg, body)
        };
        bits.unwrap() as u16
    }

    #[test]
    fn decimal_to_fp16_rounds_to_nearest_even() {
        assert_eq!(fp16("1"), 0x3c00);
        assert_eq!(fp16("-0.5"), 0xb800);
        assert_eq!(fp16("65504"), 0x7bff);
        assert_eq!(fp16("65519.99"), 0x7bff);
        assert_eq!(decimal_to_bits(Format::FP16, false, "65520"), Err(Overflow));
        assert_eq!(fp16("0.001302"), f16::from_f32(0.001302).to_bits());
        assert_eq!(fp16("0.00001"), f16::from_f64(0.00001).to_bits());
        // 2049 lies halfway between 2048 and 2050: ties to even.
        assert_eq!(fp16("2049"), 0x6800);
        assert_eq!(fp16("2051"), 0x6802);
        // Smallest subnormal, and the halfway point below it (ties to even: zero).
        assert_eq!(fp16("0.000000059604644775390625"), 0x0001);
        assert_eq!(fp16("0.0000000298023223876953125"), 0x0000);
        assert_eq!(fp16("-0"), 0x8000);
    }

    #[test]
    fn decimal_just_off_a_midpoint_is_not_double_rounded() {
        // 2049 + 1e-30 rounds to 2049.0 in f64 (a midpoint of fp16), but the exact value is
        // above the midpoint, so fp16 must round up to 2050; just below rounds down.
        let above = "2049.000000000000000000000000000001";
        let below = "2048.999999999999999999999999999999";
        assert_eq!(above.parse::<f64>().unwrap(), 2049.0);
        assert_eq!(fp16(above), 0x6801);
        assert_eq!(fp16(below), 0x6800);
        // The same at the overflow threshold 65520.
        assert_eq!(fp16("65519.9999999999999999999999"), 0x7bff);
        assert_eq!(
            decimal_to_bits(Format::FP16, false, "65520.0000000000000000000001"),
            Err(Overflow)
        );
    }

    /// The exact decimal text of a finite f64, with a point and at least one decimal.
    fn exact_text(x: f64) -> String {
        let s = format!("{x:.200}");
        let s = s.trim_end_matches('0');
        if s.ends_with('.') { format!("{s}0") } else { s.to_string() }
    }

    /// `text` minus one unit in its last digit (text has a point and no sign).
    fn one_less_in_last_digit(text: &str) -> String {
        let mut digits: Vec<u8> = text.bytes().collect();
        for d in digits.iter_mut().rev().filter(|d| d.is_ascii_digit()) {
            if *d == b'0' {
                *d = b'9';
            } else {
                *d -= 1;
                break;
            }
        }
        String::from_utf8(digits).unwrap()
    }

    /// Between each pair of neighbours the exact midpoint ties to even, and decimals a
    /// hair above or below it, which f64 rounds onto the midpoint, go up or down.
    fn check_midpoints(format: Format, stride: usize) {
        let top = format.max_finite_bits();
        for low in (0..=top).step_by(stride) {
            let high = low + 1;
            let mid = if high == format.infinity().unwrap() {
                format.decode(low) + (format.decode(low) - format.decode(low - 1)) / 2.0
            } else {
                (format.decode(low) + format.decode(high)) / 2.0
            };
            let exact = exact_text(mid);
            let above = format!("{exact}{}1", "0".repeat(40));
            let below = format!("{}{}", one_less_in_last_digit(&exact), "9".repeat(40));
            assert_eq!(above.parse::<f64>().unwrap(), mid);
            assert_eq!(below.parse::<f64>().unwrap(), mid);
            let high = if high == format.infinity().unwrap() { Err(Overflow) } else { Ok(high) };
            let even = if low % 2 == 0 { Ok(low) } else { high };
            let name = format.dtype;
            assert_eq!(decimal_to_bits(format, false, &exact), even, "{name} {exact}");
            assert_eq!(decimal_to_bits(format, false, &above), high, "{name} {above}");
            assert_eq!(decimal_to_bits(format, false, &below), Ok(low), "{name} {below}");
        }
    }

    #[test]
    fn every_fp16_midpoint_rounds_correctly() {
        check_midpoints(Format::FP16, 1);
        // Cross-check ties to even with an independent conversion.
        for low in 0..0x7bffu16 {
            let mid = (f16::from_bits(low).to_f64() + f16::from_bits(low + 1).to_f64()) / 2.0;
            let ours = decimal_to_bits(Format::FP16, false, &exact_text(mid));
            assert_eq!(ours, Ok(u64::from(f16::from_f64(mid).to_bits())));
        }
    }

    #[test]
    fn bf16_and_fp8_midpoints_round_correctly() {
        check_midpoints(Format::BF16, 7);
        check_midpoints(Format::FP8E5M2, 1);
    }

    #[test]
    fn hex_floats_round_once() {
        assert_eq!(fp16("0x1p-3"), 0x3000);
        assert_eq!(fp16("-0x1.8p+1"), 0xc200);
        assert_eq!(fp16("0x1.ffcp15"), 0x7bff);
        // 0x1.002p0 is exactly halfway between 1 and 1 + 2^-10; a later nonzero digit breaks
        // the tie upwards even when it is beyond 64 bits of mantissa.
        assert_eq!(fp16("0x1.002p0"), 0x3c00);
        assert_eq!(fp16("0x1.00200000000000000000001p0"), 0x3c01);
        assert_eq!(fp16("0x10"), 0x4c00);
        assert_eq!(hex_to_bits(Format::FP16, false, "0x1p16"), Err(Overflow));
        assert_eq!(fp16("0x1p-25"), 0); // halfway to the smallest subnormal: even is zero
        assert_eq!(fp16("0x1.1p-25"), 1);
        assert_eq!(fp16("0x1p-99999999999999999999"), 0);
        let f32_bits = hex_to_bits(Format::FP32, false, "0x1.fffffep127").unwrap();
        assert_eq!(f32_bits, u64::from(f32::MAX.to_bits()));
        let f64_bits = hex_to_bits(Format::FP64, true, "0x1.921fb54442d18p1").unwrap();
        assert_eq!(f64::from_bits(f64_bits), -std::f64::consts::PI);
    }

    #[test]
    fn fp8_formats() {
        let e4m3 = Format::FP8E4M3;
        assert_eq!(e4m3.decode(e4m3.max_finite_bits()), 448.0);
        assert_eq!(decimal_to_bits(e4m3, false, "448"), Ok(0x7e));
        assert_eq!(decimal_to_bits(e4m3, false, "464"), Ok(0x7e)); // tie to even
        assert_eq!(decimal_to_bits(e4m3, false, "465"), Err(Overflow));
        assert_eq!(decimal_to_bits(e4m3, true, "1"), Ok(0xb8));
        assert!(e4m3.is_nan(0x7f) && e4m3.is_nan(0xff) && !e4m3.is_nan(0x7e));
        assert_eq!(e4m3.infinity(), None);
        let e5m2 = Format::FP8E5M2;
        assert_eq!(e5m2.decode(e5m2.max_finite_bits()), 57344.0);
        assert_eq!(decimal_to_bits(e5m2, false, "1.5"), Ok(0x3e));
        assert!(e5m2.is_infinite(0x7c) && e5m2.is_nan(0x7d));
    }

    #[test]
    fn decode_matches_half() {
        for bits in 0..=u16::MAX {
            let ours = Format::FP16.decode(u64::from(bits));
            let theirs = f16::from_bits(bits).to_f64();
            assert!(ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()));
            let ours = Format::BF16.decode(u64::from(bits));
            let theirs = bf16::from_bits(bits).to_f64();
            assert!(ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()));
        }
    }

    #[test]
    fn every_fp16_and_bf16_prints_shortest_and_reads_back() {
        for format in [Format::FP16, Format::BF16] {
            for bits in 0..=u64::from(u16::MAX) {
                let text = shortest(format, bits);
                let back = read_back(format, &text);
                assert_eq!(back, bits, "{:?} {bits:#x} printed as {text}", format.dtype);
            }
        }
    }

    #[test]
    fn every_fp8_reads_back() {
        for format in [Format::FP8E4M3, Format::FP8E5M2] {
            for bits in 0..=0xffu64 {
                let text = shortest(format, bits);
                assert_eq!(read_back(format, &text), bits, "{text}");
            }
        }
    }

    /// The parser's reading of printed floats, in miniature (numbers, inf, nan forms).
    fn read_back(format: Format, text: &str) -> u64 {
        let (neg, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let sign = if neg { format.sign_bit() } else { 0 };
        match body {
            "inf" => format.infinity().unwrap() | sign,
            "nan" => format.canonical_nan() | sign,
            _ if body.starts_with("nan(0x") => {
                u64::from_str_radix(&body[6..body.len() - 1], 16).unwrap() | sign
            }
            _ => decimal_to_bits(format, neg, body).unwrap(),
        }
    }

    #[test]
    fn prints_like_the_compiler() {
        let s = |bits: u16| shortest(Format::FP16, u64::from(bits));
        assert_eq!(s(0x3c00), "1");
        assert_eq!(s(0xbc00), "-1");
        assert_eq!(s(0x3000), "0.125");
        assert_eq!(s(0x8000), "-0");
        assert_eq!(s(0xfbff), "-65504");
        assert_eq!(s(f16::from_f32(0.001302).to_bits()), "0.001302");
        assert_eq!(s(0x0001), "6e-8");
        assert_eq!(s(0x7c00), "inf");
        assert_eq!(s(0xfc00), "-inf");
        assert_eq!(s(0x7e00), "nan");
        assert_eq!(s(0xfe00), "-nan");
        assert_eq!(s(0x7e01), "nan(0x7e01)");
        assert_eq!(shortest(Format::FP32, u64::from(0.1f32.to_bits())), "0.1");
        assert_eq!(shortest(Format::FP32, 1), "1e-45");
        assert_eq!(shortest(Format::FP32, u64::from(f32::MAX.to_bits())), "3.4028235e38");
        assert_eq!(shortest(Format::FP64, 1e16f64.to_bits()), "1e16");
        assert_eq!(shortest(Format::FP64, 123456789.0f64.to_bits()), "123456789");
        assert_eq!(shortest(Format::FP64, 1.5e-7f64.to_bits()), "0.00000015");
    }
}
