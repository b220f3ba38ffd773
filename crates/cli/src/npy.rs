//! .npy arrays in and out, through the npyz crate: reading any plain numeric array (fp16
//! included, either byte order, C or Fortran order) and writing fp16 and fp32 arrays.

use std::path::Path;

use anemone_mil::f16;
use npyz::{DType as NpyDType, NpyFile, Order, TypeChar, WriterBuilder};

/// A decoded array.
pub struct Array {
    /// C-order shape.
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order.
    pub data: Data,
}

pub enum Data {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Int(Vec<i64>),
    UInt(Vec<u64>),
    Bool(Vec<bool>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F16(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::UInt(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Data::F16(v) => v[i].to_f64(),
            Data::F32(v) => v[i] as f64,
            Data::F64(v) => v[i],
            Data::Int(v) => v[i] as f64,
            Data::UInt(v) => v[i] as f64,
            Data::Bool(v) => v[i] as u8 as f64,
        }
    }

    /// Element `i` as an integer, or the value as text when it is not one.
    pub fn get_int(&self, i: usize) -> Result<i128, String> {
        let float = |x: f64| {
            if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e30 {
                Ok(x as i128)
            } else {
                Err(x.to_string())
            }
        };
        match self {
            Data::Int(v) => Ok(v[i] as i128),
            Data::UInt(v) => Ok(v[i] as i128),
            Data::Bool(v) => Ok(v[i] as i128),
            Data::F16(v) => float(v[i].to_f64()),
            Data::F32(v) => float(v[i] as f64),
            Data::F64(v) => float(v[i]),
        }
    }
}

/// The elements as little-endian bytes of the integer type `dtype` (int8..int64,
/// uint8..uint64): integers and whole-valued floats that fit, else an error naming the first
/// element that does not.
pub fn integers_as(data: &Data, dtype: anemone_mil::DType) -> Result<Vec<u8>, String> {
    let bits = dtype.bits();
    if !dtype.is_int() || bits < 8 {
        return Err(format!("{dtype} is not an integer type that .npy values can fill"));
    }
    let (lo, hi): (i128, i128) = if dtype.is_signed_int() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    let bytes = (bits / 8) as usize;
    let mut out = Vec::with_capacity(data.len() * bytes);
    for i in 0..data.len() {
        let v = data.get_int(i).map_err(|v| format!("element {i} ({v}) is not an integer"))?;
        if v < lo || v > hi {
            return Err(format!("element {i} ({v}) does not fit {dtype} ({lo}..={hi})"));
        }
        out.extend_from_slice(&v.to_le_bytes()[..bytes]);
    }
    Ok(out)
}

/// What converting an array to a float type changed: values rounded, finite values beyond
/// the type's range (they become infinite), nonzero values below its smallest subnormal (they
/// become zero), and NaNs (which stay NaN).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloatConversion {
    /// Every element converted.
    pub values: usize,
    /// Elements whose converted value differs from the original (NaNs not counted).
    pub rounded: usize,
    /// Finite elements that became infinite, the first of them, and the largest magnitude.
    pub overflowed: usize,
    pub first_overflow: Option<usize>,
    pub largest_overflow: f64,
    /// Nonzero elements that became zero.
    pub underflowed: usize,
    /// NaN elements.
    pub nan: usize,
}

impl FloatConversion {
    /// Whether every value came through unchanged.
    pub fn is_exact(&self) -> bool {
        self.rounded == 0 && self.nan == 0
    }

    /// Whether a value became infinite or zero, or was NaN: worth a warning, not only a note.
    pub fn is_harmful(&self) -> bool {
        self.overflowed > 0 || self.underflowed > 0 || self.nan > 0
    }

    /// `12 of 4096 float64 values were rounded to fp16; 3 became inf (largest |x| 1e6)`.
    pub fn describe(&self, source: &str, dtype: anemone_mil::DType) -> String {
        let mut out = format!(
            "{} of {} {source} value{} {} rounded to {dtype}",
            self.rounded,
            self.values,
            if self.values == 1 { "" } else { "s" },
            if self.rounded == 1 { "was" } else { "were" }
        );
        if self.overflowed > 0 {
            out.push_str(&format!(
                "; {} became inf (largest |x| {:e}, above the largest finite {dtype})",
                self.overflowed, self.largest_overflow
            ));
        }
        if self.underflowed > 0 {
            out.push_str(&format!("; {} became 0 (too small for {dtype})", self.underflowed));
        }
        if self.nan > 0 {
            out.push_str(&format!(
                "; {} {} NaN",
                self.nan,
                if self.nan == 1 { "is" } else { "are" }
            ));
        }
        out
    }
}

impl Data {
    /// The numpy element kind, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::F16(_) => "float16",
            Data::F32(_) => "float32",
            Data::F64(_) => "float64",
            Data::Int(_) => "signed integer",
            Data::UInt(_) => "unsigned integer",
            Data::Bool(_) => "bool",
        }
    }
}

/// The elements as little-endian bytes of the float type `dtype` (fp16, bf16 or fp32),
/// correctly rounded to nearest even, with finite values beyond the range becoming infinite
/// (as IEEE conversion does); the returned [`FloatConversion`] counts what changed, so that
/// a caller can refuse it (`weights pack`) or warn about it (`run`).
pub fn floats_as(
    data: &Data,
    dtype: anemone_mil::DType,
) -> Result<(Vec<u8>, FloatConversion), String> {
    use anemone_mil::DType as D;
    use anemone_mil::blob::{f64_to_bf16, f64_to_f16};
    if !matches!(dtype, D::Fp16 | D::Bf16 | D::Fp32) {
        return Err(format!("{dtype} is not a float type that .npy values can fill"));
    }
    let n = data.len();
    let mut bytes = Vec::with_capacity(n * (dtype.bits() as usize / 8));
    let mut report = FloatConversion { values: n, ..FloatConversion::default() };
    for i in 0..n {
        let x = data.get_f64(i);
        let y = match dtype {
            D::Fp16 => {
                let h = f64_to_f16(x);
                bytes.extend_from_slice(&h.to_le_bytes());
                h.to_f64()
            }
            D::Bf16 => {
                let h = f64_to_bf16(x);
                bytes.extend_from_slice(&h.to_le_bytes());
                h.to_f64()
            }
            _ => {
                // `as` rounds to nearest even and overflows to infinity.
                let f = x as f32;
                bytes.extend_from_slice(&f.to_le_bytes());
                f as f64
            }
        };
        if x.is_nan() {
            report.nan += 1;
            continue;
        }
        if y != x {
            report.rounded += 1;
        }
        if x.is_finite() && y.is_infinite() {
            report.overflowed += 1;
            report.first_overflow.get_or_insert(i);
            report.largest_overflow = report.largest_overflow.max(x.abs());
        } else if x != 0.0 && y == 0.0 {
            report.underflowed += 1;
        }
    }
    Ok((bytes, report))
}

/// A C-order .npy file of an integer or bool tensor's raw little-endian bytes.
pub fn encode_raw(shape: &[u64], dtype: anemone_mil::DType, raw: &[u8]) -> Result<Vec<u8>, String> {
    use anemone_mil::DType as D;
    fn ints<T: Copy + npyz::Serialize + npyz::AutoSerialize + le::FromLe>(
        shape: &[u64],
        raw: &[u8],
    ) -> Result<Vec<u8>, String> {
        let values: Vec<T> = raw.chunks_exact(T::SIZE).map(T::from_le).collect();
        encode(shape, &values)
    }
    match dtype {
        D::Int8 => ints::<i8>(shape, raw),
        D::Int16 => ints::<i16>(shape, raw),
        D::Int32 => ints::<i32>(shape, raw),
        D::Int64 => ints::<i64>(shape, raw),
        D::UInt8 => ints::<u8>(shape, raw),
        D::UInt16 => ints::<u16>(shape, raw),
        D::UInt32 => ints::<u32>(shape, raw),
        D::UInt64 => ints::<u64>(shape, raw),
        D::Bool => {
            let values: Vec<bool> = raw.iter().map(|&b| b != 0).collect();
            encode(shape, &values)
        }
        other => Err(format!("{other} tensors cannot be written as .npy")),
    }
}

/// Little-endian decoding of the integer types `encode_raw` writes.
mod le {
    pub trait FromLe: Sized {
        const SIZE: usize;
        fn from_le(bytes: &[u8]) -> Self;
    }
    macro_rules! from_le {
        ($($t:ty),*) => {$(
            impl FromLe for $t {
                const SIZE: usize = std::mem::size_of::<$t>();
                fn from_le(bytes: &[u8]) -> Self {
                    let mut b = [0u8; std::mem::size_of::<$t>()];
                    b.copy_from_slice(bytes);
                    <$t>::from_le_bytes(b)
                }
            }
        )*};
    }
    from_le!(i8, i16, i32, i64, u8, u16, u32, u64);
}

/// `element [i, j, k]` for flat C-order index `i`.
pub fn index_name(shape: &[usize], mut i: usize) -> String {
    if shape.is_empty() {
        return "the value".to_string();
    }
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    let parts: Vec<String> = idx.iter().map(usize::to_string).collect();
    format!("element [{}]", parts.join(", "))
}

/// Reads a .npy file; the error names the file and says what is wrong.
pub fn read(path: &Path) -> Result<Array, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Decodes .npy bytes.
pub fn parse(bytes: &[u8]) -> Result<Array, String> {
    let npy = NpyFile::new(bytes).map_err(|e| format!("not a .npy file: {e}"))?;
    let NpyDType::Plain(ts) = npy.dtype() else {
        return Err("structured arrays are not supported: save a plain numeric array".into());
    };
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| "shape too large".to_string()))
        .collect::<Result<_, _>>()?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape too large")?;
    let size = ts.size_field() as usize;
    // The whole file bounds the data; checked before decoding so that a header declaring
    // a huge shape cannot make the decoder allocate for it.
    let available = bytes.len();
    if n.checked_mul(size).is_none_or(|need| need > available) {
        return Err(format!(
            "truncated: {n} elements of {size} bytes need {} data bytes, the file has {available} bytes in all",
            n.saturating_mul(size)
        ));
    }
    let fortran = npy.order() == Order::Fortran && shape.len() > 1;
    let bad = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            format!("truncated: the file ends before its {n} elements do")
        }
        _ => format!("cannot decode the data: {e}"),
    };
    let data = match (ts.type_char(), size) {
        (TypeChar::Float, 2) => Data::F16(npy.into_vec::<f16>().map_err(bad)?),
        (TypeChar::Float, 4) => Data::F32(npy.into_vec::<f32>().map_err(bad)?),
        (TypeChar::Float, 8) => Data::F64(npy.into_vec::<f64>().map_err(bad)?),
        (TypeChar::Int, 1) => Data::Int(widen(npy.into_vec::<i8>().map_err(bad)?)),
        (TypeChar::Int, 2) => Data::Int(widen(npy.into_vec::<i16>().map_err(bad)?)),
        (TypeChar::Int, 4) => Data::Int(widen(npy.into_vec::<i32>().map_err(bad)?)),
        (TypeChar::Int, 8) => Data::Int(npy.into_vec::<i64>().map_err(bad)?),
        (TypeChar::Uint, 1) => Data::UInt(widen(npy.into_vec::<u8>().map_err(bad)?)),
        (TypeChar::Uint, 2) => Data::UInt(widen(npy.into_vec::<u16>().map_err(bad)?)),
        (TypeChar::Uint, 4) => Data::UInt(widen(npy.into_vec::<u32>().map_err(bad)?)),
        (TypeChar::Uint, 8) => Data::UInt(npy.into_vec::<u64>().map_err(bad)?),
        (TypeChar::Bool, 1) => Data::Bool(npy.into_vec::<bool>().map_err(bad)?),
        _ => {
            return Err(format!(
                "arrays of numpy type `{ts}` are not supported: use float16/32/64, \
                 (u)int8..64 or bool"
            ));
        }
    };
    let data = if fortran { data.into_c_order(&shape) } else { data };
    Ok(Array { shape, data })
}

fn widen<T: Copy, U: From<T>>(v: Vec<T>) -> Vec<U> {
    v.into_iter().map(U::from).collect()
}

impl Data {
    /// Reorders Fortran-order elements (first axis fastest) into C order.
    fn into_c_order(self, shape: &[usize]) -> Data {
        fn reorder<T: Copy>(v: Vec<T>, shape: &[usize]) -> Vec<T> {
            let mut strides = vec![1usize; shape.len()];
            for k in 1..shape.len() {
                strides[k] = strides[k - 1] * shape[k - 1];
            }
            (0..v.len())
                .map(|mut c| {
                    let mut f = 0;
                    for k in (0..shape.len()).rev() {
                        f += (c % shape[k]) * strides[k];
                        c /= shape[k];
                    }
                    v[f]
                })
                .collect()
        }
        match self {
            Data::F16(v) => Data::F16(reorder(v, shape)),
            Data::F32(v) => Data::F32(reorder(v, shape)),
            Data::F64(v) => Data::F64(reorder(v, shape)),
            Data::Int(v) => Data::Int(reorder(v, shape)),
            Data::UInt(v) => Data::UInt(reorder(v, shape)),
            Data::Bool(v) => Data::Bool(reorder(v, shape)),
        }
    }
}

/// A C-order .npy file of fp16 values ('<f2').
pub fn encode_f16(shape: &[u64], values: &[f16]) -> Result<Vec<u8>, String> {
    encode(shape, values)
}

/// A C-order .npy file of fp32 values ('<f4').
pub fn encode_f32(shape: &[u64], values: &[f32]) -> Result<Vec<u8>, String> {
    encode(shape, values)
}

fn encode<T: npyz::Serialize + npyz::AutoSerialize>(
    shape: &[u64],
    values: &[T],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let err = |e: std::io::Error| format!("cannot encode .npy: {e}");
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()
        .map_err(err)?;
    w.extend(values.iter()).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_and_fp32_round_trip() {
        let v16: Vec<f16> = [1.0f32, -2.5, 65504.0].iter().map(|&x| f16::from_f32(x)).collect();
        let a = parse(&encode_f16(&[3], &v16).unwrap()).unwrap();
        assert_eq!(a.shape, vec![3]);
        assert!(matches!(&a.data, Data::F16(v) if *v == v16));
        let a = parse(&encode_f32(&[1, 2], &[0.5, 7.0]).unwrap()).unwrap();
        assert_eq!(a.shape, vec![1, 2]);
        assert!(matches!(&a.data, Data::F32(v) if *v == [0.5, 7.0]));
    }

    #[test]
    fn float_conversion_counts_rounding_overflow_underflow_and_nan() {
        use anemone_mil::DType;
        // 1.0 is exact; 1.0 + 2^-12 rounds (to 1.0); 1e6 and -7e4 overflow; 1e-9 is below
        // fp16's smallest subnormal (2^-24); NaN stays NaN.
        let data = Data::F64(vec![1.0, 1.0 + 2f64.powi(-12), 1e6, -7e4, 1e-9, f64::NAN]);
        let (bytes, c) = floats_as(&data, DType::Fp16).unwrap();
        let halves: Vec<f16> =
            bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(halves[..2], [f16::ONE, f16::ONE]);
        assert!(halves[2].is_infinite() && halves[3].is_infinite() && halves[5].is_nan());
        assert_eq!(halves[4], f16::ZERO);
        assert_eq!((c.values, c.rounded, c.overflowed, c.underflowed, c.nan), (6, 4, 2, 1, 1));
        assert_eq!((c.first_overflow, c.largest_overflow), (Some(2), 1e6));
        assert!(c.is_harmful());
        assert_eq!(
            c.describe("float64", DType::Fp16),
            "4 of 6 float64 values were rounded to fp16; 2 became inf (largest |x| 1e6, above \
             the largest finite fp16); 1 became 0 (too small for fp16); 1 is NaN"
        );
        // Integers that fp32 holds exactly come through unchanged.
        let (bytes, c) = floats_as(&Data::Int(vec![-3, 16_777_216]), DType::Fp32).unwrap();
        assert!(c.is_exact());
        assert_eq!(bytes[4..], 16_777_216f32.to_le_bytes());
        assert!(floats_as(&data, DType::Int8).is_err());
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        // numpy.save(np.arange(1, 5, dtype=np.float32)) in version 1.0 format.
        let mut full = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
        full.extend_from_slice(format!("{header:<117}\n").as_bytes());
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            full.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(parse(&full).unwrap().data.len(), 4);
        let e = parse(&full[..full.len() - 3]).err().unwrap();
        assert!(e.contains("truncated"), "{e}");
        assert!(parse(b"hello").err().unwrap().contains("not a .npy file"));
    }
}
