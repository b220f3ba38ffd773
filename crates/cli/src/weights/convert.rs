//! Converting an array to the element type it is stored as, with one set of rules for
//! `weights pack` and `weights bind`:
//! - float targets (fp16, bf16, fp32) round to nearest even; values beyond the target's
//!   range are refused (with `--allow-inf` they become ±inf, e.g. for additive masks), and
//!   what rounding did is counted, to be reported as a note (rounded) or a warning (became
//!   inf or 0, or NaN);
//! - integer targets take integers, and whole-valued floats, that fit, and refuse others;
//! - fp64 and bool (inline literals only) take any number, and 0 or 1, exactly.

use anemone::npy::{self, Array, Data, FloatConversion};
use anemone_mil::{DType, TensorData, bf16, f16};

/// An array converted to a storage type, and what rounding did to it (floats only).
pub struct Converted {
    /// The elements' little-endian bytes in the target type.
    pub bytes: Vec<u8>,
    pub rounding: Option<FloatConversion>,
}

/// Converts `array` to the little-endian bytes of `dtype` (fp16, bf16, fp32, or an integer
/// type of 8 to 64 bits); the error names the first element that does not fit.
pub fn to_bytes(array: &Array, dtype: DType, allow_inf: bool) -> Result<Converted, String> {
    let at = |i: usize| npy::index_name(&array.shape, i);
    match (dtype, &array.data) {
        // Already in the target type: copied as they are.
        (DType::Fp16, Data::F16(v)) => {
            return Ok(Converted {
                bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                rounding: None,
            });
        }
        (DType::Fp32, Data::F32(v)) => {
            return Ok(Converted {
                bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                rounding: None,
            });
        }
        _ => {}
    }
    if matches!(dtype, DType::Fp16 | DType::Bf16 | DType::Fp32) {
        let (bytes, rounding) = npy::floats_as(&array.data, dtype).map_err(|e| e.to_string())?;
        if let (Some(i), false) = (rounding.first_overflow, allow_inf) {
            let x = array.data.get_f64(i).unwrap_or(f64::NAN);
            return Err(format!(
                "{} is {x}, outside the range of {dtype} (largest finite value {}); \
                 --allow-inf stores such values as ±inf",
                at(i),
                largest(dtype)
            ));
        }
        return Ok(Converted { bytes, rounding: Some(rounding) });
    }
    let (min, max) = int_range(dtype).ok_or_else(|| format!("{dtype} cannot be stored"))?;
    let width = dtype.bits() as usize / 8;
    let n = array.data.len();
    let mut bytes = Vec::with_capacity(n * width);
    for i in 0..n {
        let v = integer(array, i, dtype, min, max)?;
        bytes.extend_from_slice(&v.to_le_bytes()[..width]);
    }
    Ok(Converted { bytes, rounding: None })
}

/// Converts `array` to the inline elements of a literal of `dtype`, by the rules of
/// [`to_bytes`] (fp64 and the 64-bit integers too, which weight files cannot hold).
pub fn to_inline(
    array: &Array,
    dtype: DType,
    allow_inf: bool,
) -> Result<(TensorData, Option<FloatConversion>), String> {
    let at = |i: usize| npy::index_name(&array.shape, i);
    let n = array.data.len();
    Ok(match dtype {
        DType::Fp16 | DType::Bf16 | DType::Fp32 => {
            let c = to_bytes(array, dtype, allow_inf)?;
            let data = match dtype {
                DType::Fp16 => TensorData::F16(
                    c.bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect(),
                ),
                DType::Bf16 => TensorData::BF16(
                    c.bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]])).collect(),
                ),
                _ => TensorData::F32(
                    c.bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
            };
            (data, c.rounding)
        }
        DType::Fp64 => (
            TensorData::F64((0..n).map(|i| array.data.get_f64(i).unwrap_or(f64::NAN)).collect()),
            None,
        ),
        DType::Bool => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                match array.data.get_int(i) {
                    Ok(0) => v.push(false),
                    Ok(1) => v.push(true),
                    Ok(x) => return Err(format!("{} is {x}, not a bool (0 or 1)", at(i))),
                    Err(x) => return Err(format!("{} is {x}, not a bool (0 or 1)", at(i))),
                }
            }
            (TensorData::Bool(v), None)
        }
        d => {
            let (min, max) = int_range(d).ok_or_else(|| format!("{d} cannot be written inline"))?;
            let mut ints = Vec::with_capacity(n);
            for i in 0..n {
                ints.push(integer(array, i, d, min, max)?);
            }
            if d.is_signed_int() {
                (TensorData::Int(ints.into_iter().map(|v| v as i64).collect()), None)
            } else {
                (TensorData::UInt(ints.into_iter().map(|v| v as u64).collect()), None)
            }
        }
    })
}

/// The range of a whole-byte integer type; `None` for others.
fn int_range(dtype: DType) -> Option<(i128, i128)> {
    if dtype.bits() >= 8 && dtype.bits().is_multiple_of(8) { dtype.int_range() } else { None }
}

/// Element `i` as an integer in `min..=max`.
fn integer(array: &Array, i: usize, dtype: DType, min: i128, max: i128) -> Result<i128, String> {
    let at = npy::index_name(&array.shape, i);
    let v = array
        .data
        .get_int(i)
        .map_err(|x| format!("{at} is {x}, not an integer: {dtype} holds integers only"))?;
    if v < min || v > max {
        return Err(format!("{at} is {v}, outside the range of {dtype} ({min}..={max})"));
    }
    Ok(v)
}

/// The largest finite value of a float storage type.
fn largest(dtype: DType) -> f64 {
    match dtype {
        DType::Fp16 => f16::MAX.to_f64(),
        DType::Bf16 => bf16::MAX.to_f64(),
        _ => f32::MAX as f64,
    }
}

/// The line to print about what converting `name` did, if anything: a warning when values
/// became inf or 0 or are NaN, a note when they were only rounded.
pub fn rounding_line(
    name: &str,
    array: &Array,
    dtype: DType,
    c: &FloatConversion,
) -> Option<String> {
    let what = c.describe(array.data.type_name(), dtype);
    if c.is_harmful() {
        Some(format!("warning: {name}: {what}"))
    } else if c.rounded > 0 {
        Some(format!("note: {name}: {what}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_refused_unless_allowed() {
        let a = Array::new(vec![2], Data::F64(vec![1.0, 1e6])).unwrap();
        let e = to_bytes(&a, DType::Fp16, false).err().unwrap();
        assert!(e.starts_with("element [1] is 1000000, outside the range of fp16"), "{e}");
        let c = to_bytes(&a, DType::Fp16, true).unwrap();
        assert_eq!(c.bytes, [0x00, 0x3c, 0x00, 0x7c]);
        assert_eq!(c.rounding.unwrap().overflowed, 1);
    }

    #[test]
    fn inline_conversions_keep_each_type() {
        let a = Array::new(vec![3], Data::Int(vec![0, 1, -5])).unwrap();
        assert_eq!(to_inline(&a, DType::Int64, false).unwrap().0, TensorData::Int(vec![0, 1, -5]));
        assert!(to_inline(&a, DType::UInt64, false).unwrap_err().contains("element [2] is -5"));
        assert!(to_inline(&a, DType::Bool, false).unwrap_err().contains("not a bool"));
        let (d, _) = to_inline(&a, DType::Fp64, false).unwrap();
        assert_eq!(d, TensorData::F64(vec![0.0, 1.0, -5.0]));
    }
}
