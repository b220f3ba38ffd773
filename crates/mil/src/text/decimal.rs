//! Exact comparison of a decimal literal with a binary floating-point value.
//!
//! Rounding decimal text to fp16 (or bf16, fp8) through f64 rounds twice, which goes wrong
//! only when the f64 lands exactly on a midpoint between two values of the narrow format.
//! Then the true decimal decides the direction, and this module tells which side of the
//! midpoint it lies on, exactly, with a small big-integer expansion of the midpoint.

use std::cmp::Ordering;

/// Compares the magnitude written in `text` (decimal digits, an optional `.` and an optional
/// `e` exponent, no sign) with the positive finite `x`.
pub(super) fn compare_with_f64(text: &str, x: f64) -> Ordering {
    let written = normalize(text);
    let exact = expand_f64(x);
    compare(&written, &exact)
}

/// A positive decimal `0.d1 d2 d3 ... × 10^point`, digits without leading or trailing zeros.
/// No digits means zero.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    digits: Vec<u8>,
    point: i64,
}

/// Reads the digits and exponent of a decimal literal.
fn normalize(text: &str) -> Decimal {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], parse_exponent(&text[i + 1..])),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let mut point = int_part.len() as i64 + exponent;
    let leading = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..leading);
    point -= leading as i64;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    Decimal { digits, point }
}

/// A decimal exponent, saturated far beyond any value a float format can reach.
pub(super) fn parse_exponent(text: &str) -> i64 {
    const LIMIT: i64 = 1 << 40;
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0i64, |acc, d| (acc * 10 + i64::from(d - b'0')).min(LIMIT));
    if negative { -magnitude } else { magnitude }
}

/// The exact decimal expansion of a positive finite f64 (every binary fraction terminates).
fn expand_f64(x: f64) -> Decimal {
    let bits = x.to_bits();
    let field = ((bits >> 52) & 0x7ff) as i64;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exponent) =
        if field == 0 { (fraction, -1074) } else { (fraction | (1 << 52), field - 1075) };
    let mut n = BigUint::from_u64(mantissa);
    let mut point_shift = 0i64;
    if exponent >= 0 {
        n.mul_pow(2, exponent as u32);
    } else {
        // m × 2^-k = m × 5^k × 10^-k
        n.mul_pow(5, (-exponent) as u32);
        point_shift = exponent;
    }
    let mut digits = n.into_decimal_digits();
    let point = digits.len() as i64 + point_shift;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    Decimal { digits, point }
}

fn compare(a: &Decimal, b: &Decimal) -> Ordering {
    match (a.digits.is_empty(), b.digits.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // Without trailing zeros, a digit string that is a prefix of the other is smaller.
        (false, false) => a.point.cmp(&b.point).then_with(|| a.digits.cmp(&b.digits)),
    }
}

/// Just enough of an unsigned big integer for [`expand_f64`]: little-endian 32-bit limbs.
struct BigUint {
    limbs: Vec<u32>,
}

impl BigUint {
    fn from_u64(v: u64) -> BigUint {
        BigUint { limbs: vec![v as u32, (v >> 32) as u32] }
    }

    fn mul_small(&mut self, factor: u32) {
        let mut carry = 0u64;
        for limb in &mut self.limbs {
            let product = u64::from(*limb) * u64::from(factor) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry != 0 {
            self.limbs.push(carry as u32);
        }
    }

    /// Multiplies by `base^exp` for a small base, in chunks that fit a limb.
    fn mul_pow(&mut self, base: u32, mut exp: u32) {
        let mut chunk = 1u32;
        let mut chunk_exp = 0u32;
        while chunk.checked_mul(base).is_some() {
            chunk *= base;
            chunk_exp += 1;
        }
        while exp >= chunk_exp {
            self.mul_small(chunk);
            exp -= chunk_exp;
        }
        self.mul_small(base.pow(exp));
    }

    /// Divides in place and returns the remainder.
    fn div_small(&mut self, divisor: u32) -> u32 {
        let mut rem = 0u64;
        for limb in self.limbs.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / u64::from(divisor)) as u32;
            rem = cur % u64::from(divisor);
        }
        while self.limbs.last() == Some(&0) {
            self.limbs.pop();
        }
        rem as u32
    }

    /// ASCII decimal digits, most significant first, without leading zeros.
    fn into_decimal_digits(mut self) -> Vec<u8> {
        const CHUNK: u32 = 1_000_000_000;
        let mut chunks = Vec::new();
        while self.limbs.last() == Some(&0) {
            self.limbs.pop();
        }
        while !self.limbs.is_empty() {
            chunks.push(self.div_small(CHUNK));
        }
        let mut out = Vec::with_capacity(chunks.len() * 9);
        for (i, chunk) in chunks.iter().rev().enumerate() {
            let text = if i == 0 { chunk.to_string() } else { format!("{chunk:09}") };
            out.extend_from_slice(text.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_decimal_text() {
        assert_eq!(normalize("00120.0500"), Decimal { digits: b"12005".to_vec(), point: 3 });
        assert_eq!(normalize("0.00125e2"), Decimal { digits: b"125".to_vec(), point: 0 });
        assert_eq!(normalize(".5"), Decimal { digits: b"5".to_vec(), point: 0 });
        assert_eq!(normalize("0.0"), Decimal { digits: vec![], point: -1 });
    }

    #[test]
    fn expands_binary_fractions_exactly() {
        assert_eq!(expand_f64(0.125), Decimal { digits: b"125".to_vec(), point: 0 });
        assert_eq!(expand_f64(65520.0), Decimal { digits: b"6552".to_vec(), point: 5 });
        let tiny = expand_f64(f64::from_bits(1));
        assert_eq!(tiny.point, -323);
        assert!(tiny.digits.starts_with(b"49406564584124654417656879286822137236505980"));
        assert_eq!(tiny.digits.len(), 751);
    }

    #[test]
    fn compares_with_the_exact_value() {
        let x = 2f64.powi(-24) * 1.5; // a value with a short binary, long decimal expansion
        let exact = "0.0000000894069671630859375";
        assert_eq!(compare_with_f64(exact, x), Ordering::Equal);
        assert_eq!(compare_with_f64("0.00000008940696716308593750001", x), Ordering::Greater);
        assert_eq!(compare_with_f64("0.0000000894069671630859374999", x), Ordering::Less);
        assert_eq!(compare_with_f64("8.94069671630859375e-8", x), Ordering::Equal);
        assert_eq!(compare_with_f64("0", x), Ordering::Less);
        assert_eq!(compare_with_f64("1e999999999999999999999", x), Ordering::Greater);
    }

    #[test]
    fn saturates_huge_exponents() {
        assert_eq!(parse_exponent("-99999999999999999999999"), -(1 << 40));
        assert_eq!(parse_exponent("+12"), 12);
    }
}
