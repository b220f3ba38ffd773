//! NumPy `.npy` files in and out, through the `npyz` crate, and [`Array`]: a shaped block of
//! numbers in C order, the value [`Model::predict`](crate::Model::predict) takes and returns.
//!
//! Reading takes any plain numeric array `numpy.save` writes: float16/32/64, (u)int8..64 and
//! bool, either byte order, C or Fortran order (Fortran arrays are reordered to C order).
//! Writing keeps the array's own element type. Archives of named arrays are read by
//! [`crate::npz`] (numpy's `.npz`, which it also writes) and [`crate::safetensors`].
//!
//! ```
//! use anemone::npy::{self, Array};
//!
//! let a = Array::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let bytes = npy::encode(&a)?;
//! let b = npy::parse(&bytes)?;
//! assert_eq!(b.shape, [2, 3]);
//! assert_eq!(b.data.to_f32(), a.data.to_f32());
//! # Ok::<(), npy::NpyError>(())
//! ```

use std::fmt;
use std::path::Path;

use anemone_mil::{DType, bf16, f16};
use npyz::{DType as NpyDType, NpyFile, Order, TypeChar, WriterBuilder};

/// Why an array could not be read, written or built; the message names the file (when there
/// is one) and says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyError {
    message: String,
}

impl NpyError {
    pub(crate) fn new(message: impl Into<String>) -> NpyError {
        NpyError { message: message.into() }
    }

    /// The message, as displayed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NpyError {}

/// A shaped array: its C-order shape and its elements in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The shape, outermost axis first; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements; as many as the shape's product.
    pub data: Data,
}

/// The elements of an [`Array`], in the widest type of their kind that .npy files hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// float16 (`<f2`).
    F16(Vec<f16>),
    /// float32 (`<f4`).
    F32(Vec<f32>),
    /// float64 (`<f8`).
    F64(Vec<f64>),
    /// Signed integers of any width (written as `<i8`).
    Int(Vec<i64>),
    /// Unsigned integers of any width (written as `<u8`).
    UInt(Vec<u64>),
    /// Booleans (`|b1`).
    Bool(Vec<bool>),
}

impl Array {
    /// An array of `data` shaped `shape`; an error if the element count differs from the
    /// shape's product.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Array, NpyError> {
        let n = element_count(&shape)?;
        if n != data.len() {
            return Err(NpyError::new(format!(
                "shape {shape:?} holds {n} elements, the data has {}",
                data.len()
            )));
        }
        Ok(Array { shape, data })
    }

    /// An fp32 array.
    pub fn from_f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Array, NpyError> {
        Array::new(shape, Data::F32(values))
    }

    /// An fp16 array.
    pub fn from_f16(shape: Vec<usize>, values: Vec<f16>) -> Result<Array, NpyError> {
        Array::new(shape, Data::F16(values))
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array holds no elements (some axis is 0).
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// Decodes `raw`, the little-endian bytes of a tensor of `dtype` shaped `shape` (what a
    /// surface holds), into an array: fp16 and fp32 stay as they are, bf16 and fp64 become
    /// fp32 and fp64, integers widen, bool stays bool.
    pub fn from_le_bytes(shape: Vec<usize>, dtype: DType, raw: &[u8]) -> Result<Array, NpyError> {
        let n = element_count(&shape)?;
        let unsupported = || {
            NpyError::new(format!(
                "{dtype} tensors have no .npy form: use a float, integer or bool dtype"
            ))
        };
        let size = match dtype {
            DType::Bool => 1,
            d if d.bits().is_multiple_of(8) && (d.is_int() || d.is_float()) && d.bits() >= 16 => {
                (d.bits() / 8) as usize
            }
            DType::Int8 | DType::UInt8 => 1,
            _ => return Err(unsupported()),
        };
        if raw.len() != n * size {
            return Err(NpyError::new(format!(
                "{n} {dtype} elements need {} bytes, got {}",
                n * size,
                raw.len()
            )));
        }
        let chunks = raw.chunks_exact(size);
        let data = match dtype {
            DType::Fp16 => Data::F16(chunks.map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
            DType::Bf16 => {
                Data::F32(chunks.map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
            DType::Fp32 => Data::F32(chunks.map(|c| f32::from_le_bytes(le(c))).collect()),
            DType::Fp64 => Data::F64(chunks.map(|c| f64::from_le_bytes(le(c))).collect()),
            DType::Bool => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
            d if d.is_signed_int() => Data::Int(chunks.map(sign_extend).collect()),
            d if d.is_unsigned_int() => Data::UInt(chunks.map(zero_extend).collect()),
            _ => return Err(unsupported()),
        };
        Ok(Array { shape, data })
    }
}

/// The first `N` bytes of `c` as an array (`c` is a chunk of exactly `N`).
fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(c);
    b
}

/// A little-endian signed integer of 1 to 8 bytes, sign-extended.
fn sign_extend(c: &[u8]) -> i64 {
    let negative = c.last().is_some_and(|&b| b & 0x80 != 0);
    let mut b = [if negative { 0xff } else { 0 }; 8];
    b[..c.len()].copy_from_slice(c);
    i64::from_le_bytes(b)
}

/// A little-endian unsigned integer of 1 to 8 bytes.
fn zero_extend(c: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..c.len()].copy_from_slice(c);
    u64::from_le_bytes(b)
}

fn element_count(shape: &[usize]) -> Result<usize, NpyError> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| NpyError::new(format!("shape {shape:?} is too large")))
}

impl Data {
    /// The number of elements.
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

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the elements are floating point.
    pub fn is_float(&self) -> bool {
        matches!(self, Data::F16(_) | Data::F32(_) | Data::F64(_))
    }

    /// Element `i` as f64 (exact but for integers beyond 2^53); `None` past the end.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        Some(match self {
            Data::F16(v) => v.get(i)?.to_f64(),
            Data::F32(v) => *v.get(i)? as f64,
            Data::F64(v) => *v.get(i)?,
            Data::Int(v) => *v.get(i)? as f64,
            Data::UInt(v) => *v.get(i)? as f64,
            Data::Bool(v) => *v.get(i)? as u8 as f64,
        })
    }

    /// Element `i` as an integer; `Err` with the value as text when it is not a whole
    /// number, or is past the end.
    pub fn get_int(&self, i: usize) -> Result<i128, String> {
        let float = |x: f64| {
            if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e30 {
                Ok(x as i128)
            } else {
                Err(x.to_string())
            }
        };
        let missing = || format!("no element {i}");
        match self {
            Data::Int(v) => v.get(i).map(|&x| x as i128).ok_or_else(missing),
            Data::UInt(v) => v.get(i).map(|&x| x as i128).ok_or_else(missing),
            Data::Bool(v) => v.get(i).map(|&x| x as i128).ok_or_else(missing),
            _ => float(self.get_f64(i).ok_or_else(missing)?),
        }
    }

    /// Every element as f32 (fp16 and fp32 exactly; others rounded to nearest).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Data::F32(v) => v.clone(),
            Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::Int(v) => v.iter().map(|&x| x as f32).collect(),
            Data::UInt(v) => v.iter().map(|&x| x as f32).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }

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

/// The elements as little-endian bytes of the integer type `dtype` (int8..int64,
/// uint8..uint64): integers, and whole-valued floats, that fit; otherwise an error naming
/// the first element that does not.
pub fn integers_as(data: &Data, dtype: DType) -> Result<Vec<u8>, NpyError> {
    let bits = dtype.bits();
    let range = dtype.int_range().filter(|_| bits >= 8 && bits.is_multiple_of(8));
    let Some((lo, hi)) = range else {
        return Err(NpyError::new(format!(
            "{dtype} is not an integer type that .npy values can fill"
        )));
    };
    let bytes = (bits / 8) as usize;
    let mut out = Vec::with_capacity(data.len() * bytes);
    for i in 0..data.len() {
        let v = data
            .get_int(i)
            .map_err(|v| NpyError::new(format!("element {i} ({v}) is not an integer")))?;
        if v < lo || v > hi {
            return Err(NpyError::new(format!(
                "element {i} ({v}) does not fit {dtype} ({lo}..={hi})"
            )));
        }
        out.extend_from_slice(&v.to_le_bytes()[..bytes]);
    }
    Ok(out)
}

/// `element [i, j, k]` for flat C-order index `i` of an array shaped `shape`.
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
pub fn read(path: impl AsRef<Path>) -> Result<Array, NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)
        .map_err(|e| NpyError::new(format!("cannot read {}: {e}", path.display())))?;
    parse(&bytes).map_err(|e| NpyError::new(format!("{}: {e}", path.display())))
}

/// Decodes the bytes of a .npy file.
pub fn parse(bytes: &[u8]) -> Result<Array, NpyError> {
    let npy = NpyFile::new(bytes).map_err(|e| NpyError::new(format!("not a .npy file: {e}")))?;
    let NpyDType::Plain(ts) = npy.dtype() else {
        return Err(NpyError::new(
            "structured arrays are not supported: save a plain numeric array",
        ));
    };
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| NpyError::new("shape too large")))
        .collect::<Result<_, _>>()?;
    let n = element_count(&shape)?;
    let size = ts.size_field() as usize;
    // The file's length bounds its data: checked before decoding, so that a header
    // declaring a huge shape cannot make the decoder allocate for it.
    let available = bytes.len();
    if n.checked_mul(size).is_none_or(|need| need > available) {
        return Err(NpyError::new(format!(
            "truncated: {n} elements of {size} bytes need {} data bytes, the file has \
             {available} bytes in all",
            n.saturating_mul(size)
        )));
    }
    let fortran = npy.order() == Order::Fortran && shape.len() > 1;
    let bad = |e: std::io::Error| {
        NpyError::new(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                format!("truncated: the file ends before its {n} elements do")
            }
            _ => format!("cannot decode the data: {e}"),
        })
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
            return Err(NpyError::new(format!(
                "arrays of numpy type `{ts}` are not supported: use float16/32/64, \
                 (u)int8..64 or bool"
            )));
        }
    };
    let data = if fortran { data.into_c_order(&shape) } else { data };
    Ok(Array { shape, data })
}

fn widen<T: Copy, U: From<T>>(v: Vec<T>) -> Vec<U> {
    v.into_iter().map(U::from).collect()
}

/// Writes `array` as a C-order .npy file in its own element type.
pub fn write(path: impl AsRef<Path>, array: &Array) -> Result<(), NpyError> {
    let path = path.as_ref();
    let bytes = encode(array)?;
    std::fs::write(path, bytes)
        .map_err(|e| NpyError::new(format!("cannot write {}: {e}", path.display())))
}

/// The bytes of a C-order .npy file holding `array` in its own element type.
pub fn encode(array: &Array) -> Result<Vec<u8>, NpyError> {
    let shape: Vec<u64> = array.shape.iter().map(|&d| d as u64).collect();
    if element_count(&array.shape)? != array.data.len() {
        return Err(NpyError::new(format!(
            "shape {:?} does not match the {} elements",
            array.shape,
            array.data.len()
        )));
    }
    match &array.data {
        Data::F16(v) => encode_values(&shape, v),
        Data::F32(v) => encode_values(&shape, v),
        Data::F64(v) => encode_values(&shape, v),
        Data::Int(v) => encode_values(&shape, v),
        Data::UInt(v) => encode_values(&shape, v),
        Data::Bool(v) => encode_values(&shape, v),
    }
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
    /// Finite elements that became infinite.
    pub overflowed: usize,
    /// The flat index of the first element that became infinite.
    pub first_overflow: Option<usize>,
    /// The largest magnitude among the elements that became infinite.
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
    pub fn describe(&self, source: &str, dtype: DType) -> String {
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
/// a caller can refuse it (`weights pack` and `bind` without `--allow-inf`) or warn about it
/// (`run`).
pub fn floats_as(data: &Data, dtype: DType) -> Result<(Vec<u8>, FloatConversion), NpyError> {
    use DType as D;
    use anemone_mil::blob::{f64_to_bf16, f64_to_f16};
    if !matches!(dtype, D::Fp16 | D::Bf16 | D::Fp32) {
        return Err(NpyError::new(format!(
            "{dtype} is not a float type that .npy values can fill"
        )));
    }
    let n = data.len();
    let mut bytes = Vec::with_capacity(n * (dtype.bits() as usize / 8));
    let mut report = FloatConversion { values: n, ..FloatConversion::default() };
    for i in 0..n {
        let x = data.get_f64(i).unwrap_or(f64::NAN);
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

/// A C-order .npy file of fp16 values (`<f2`).
pub fn encode_f16(shape: &[u64], values: &[f16]) -> Result<Vec<u8>, NpyError> {
    encode_values(shape, values)
}

/// A C-order .npy file of fp32 values (`<f4`).
pub fn encode_f32(shape: &[u64], values: &[f32]) -> Result<Vec<u8>, NpyError> {
    encode_values(shape, values)
}

/// A C-order .npy file of an integer or bool tensor's raw little-endian bytes, in the
/// tensor's own width (an int8 tensor is written as `|i1`).
pub fn encode_raw(shape: &[u64], dtype: DType, raw: &[u8]) -> Result<Vec<u8>, NpyError> {
    fn ints<T: npyz::Serialize + npyz::AutoSerialize>(
        shape: &[u64],
        raw: &[u8],
        size: usize,
        from: impl Fn(&[u8]) -> T,
    ) -> Result<Vec<u8>, NpyError> {
        let values: Vec<T> = raw.chunks_exact(size).map(from).collect();
        encode_values(shape, &values)
    }
    match dtype {
        DType::Int8 => ints(shape, raw, 1, |c| c[0] as i8),
        DType::Int16 => ints(shape, raw, 2, |c| i16::from_le_bytes(le(c))),
        DType::Int32 => ints(shape, raw, 4, |c| i32::from_le_bytes(le(c))),
        DType::Int64 => ints(shape, raw, 8, |c| i64::from_le_bytes(le(c))),
        DType::UInt8 => ints(shape, raw, 1, |c| c[0]),
        DType::UInt16 => ints(shape, raw, 2, |c| u16::from_le_bytes(le(c))),
        DType::UInt32 => ints(shape, raw, 4, |c| u32::from_le_bytes(le(c))),
        DType::UInt64 => ints(shape, raw, 8, |c| u64::from_le_bytes(le(c))),
        DType::Bool => ints(shape, raw, 1, |c| c[0] != 0),
        other => Err(NpyError::new(format!("{other} tensors cannot be written as .npy"))),
    }
}

fn encode_values<T: npyz::Serialize + npyz::AutoSerialize>(
    shape: &[u64],
    values: &[T],
) -> Result<Vec<u8>, NpyError> {
    let mut out = Vec::new();
    let err = |e: std::io::Error| NpyError::new(format!("cannot encode .npy: {e}"));
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

    /// `numpy.save` of `values` (little-endian f4) in format 1.0, built by hand so that the
    /// reader is checked against the format rather than against this module's writer.
    fn numpy_f4(shape: &str, fortran: bool, values: &[f32]) -> Vec<u8> {
        let header = format!(
            "{{'descr': '<f4', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        // Magic, version, header length; the header is padded so that the data starts at a
        // multiple of 64 and ends with a newline.
        let total = (10 + header.len() + 1).div_ceil(64) * 64;
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
        out.extend_from_slice(format!("{header:<w$}\n", w = total - 11).as_bytes());
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    #[test]
    fn reads_what_numpy_writes_and_truncation_is_an_error() {
        let full = numpy_f4("(4,)", false, &[1.0, 2.0, 3.0, 4.0]);
        let a = parse(&full).unwrap();
        assert_eq!(a.shape, [4]);
        assert_eq!(a.data, Data::F32(vec![1.0, 2.0, 3.0, 4.0]));
        let e = parse(&full[..full.len() - 3]).unwrap_err();
        assert!(e.message().contains("truncated"), "{e}");
        assert!(parse(b"hello").unwrap_err().message().contains("not a .npy file"));
    }

    #[test]
    fn fortran_order_is_reordered_to_c_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let bytes = numpy_f4("(2, 3)", true, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let a = parse(&bytes).unwrap();
        assert_eq!(a.data.to_f32(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn every_element_type_round_trips_in_its_own_type() {
        let arrays = [
            Data::F16(vec![f16::from_f32(1.5), f16::from_f32(-65504.0)]),
            Data::F32(vec![0.1, -7.0]),
            Data::F64(vec![0.1, 1e300]),
            Data::Int(vec![-(1 << 40), 3]),
            Data::UInt(vec![u64::MAX, 0]),
            Data::Bool(vec![true, false]),
        ];
        for data in arrays {
            let a = Array::new(vec![2, 1], data).unwrap();
            assert_eq!(parse(&encode(&a).unwrap()).unwrap(), a);
        }
    }

    #[test]
    fn files_round_trip_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let a = Array::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        write(&path, &a).unwrap();
        assert_eq!(read(&path).unwrap(), a);
        let e = read(dir.path().join("missing.npy")).unwrap_err();
        assert!(e.message().contains("missing.npy"), "{e}");
    }

    #[test]
    fn shapes_must_match_the_data() {
        let e = Array::from_f32(vec![2, 2], vec![1.0; 3]).unwrap_err();
        assert!(e.message().contains("4 elements"), "{e}");
    }

    #[test]
    fn surface_bytes_decode_in_their_dtype() {
        let raw: Vec<u8> = [-2i16, 300].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = Array::from_le_bytes(vec![2], DType::Int16, &raw).unwrap();
        assert_eq!(a.data, Data::Int(vec![-2, 300]));
        let raw: Vec<u8> = [1.5f32, -0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = Array::from_le_bytes(vec![1, 2], DType::Fp32, &raw).unwrap();
        assert_eq!(a.data, Data::F32(vec![1.5, -0.25]));
        assert!(Array::from_le_bytes(vec![3], DType::Fp32, &raw).is_err());
        assert!(Array::from_le_bytes(vec![2], DType::Int4, &[0]).is_err());
    }

    #[test]
    fn integers_are_range_checked() {
        let data = Data::F64(vec![1.0, 300.0]);
        assert_eq!(integers_as(&Data::Int(vec![1, -1]), DType::Int8).unwrap(), [1, 0xff]);
        let e = integers_as(&data, DType::Int8).unwrap_err();
        assert!(e.message().contains("element 1 (300)"), "{e}");
        let e = integers_as(&Data::F32(vec![0.5]), DType::Int32).unwrap_err();
        assert!(e.message().contains("not an integer"), "{e}");
        let bytes = encode_raw(
            &[2],
            DType::Int16,
            &integers_as(&Data::Int(vec![-2, 7]), DType::Int16).unwrap(),
        )
        .unwrap();
        assert_eq!(parse(&bytes).unwrap().data, Data::Int(vec![-2, 7]));
    }

    #[test]
    fn index_names_count_in_c_order() {
        assert_eq!(index_name(&[2, 3], 4), "element [1, 1]");
        assert_eq!(index_name(&[], 0), "the value");
    }

    #[test]
    fn float_conversion_counts_rounding_overflow_underflow_and_nan() {
        use DType;
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
}
