//! Proto types and values to IR types and literals: `ValueType` to [`Type`], and `Value`
//! (immediate or `blobFileValue`) to [`Literal`].
//!
//! Immediate tensors are stored the way coremltools writes them
//! (`coremltools/converters/mil/backend/mil/helper.py`, `_tensor_field_by_type`): fp32 in
//! `floats`, fp64 in `doubles`, bool in `bools`, string in `strings`, int16/uint16/int32 in
//! `ints`, int64/uint64 in `longInts`, and fp16, int8, uint8, uint32 and the sub-byte
//! integers as raw little-endian `bytes` (sub-byte values packed least significant bits
//! first). The reader also takes any integer field for any integer type, and raw bytes for
//! any type of fixed width, checking every element against the declared type.
//!
//! Nothing here allocates by a declared shape: element counts are compared with the data
//! actually present before anything is converted.

use half::{bf16, f16};

use super::proto::mil_spec::{
    self, DataType, dimension, tensor_value, value, value::immediate_value, value_type,
};
use crate::blob;
use crate::ir::{BlobRef, DType, Literal, LiteralData, TensorData, TensorType, Type};

/// What is wrong with a type or value, before the caller adds where it is.
#[derive(Debug)]
pub(super) enum Problem {
    /// Valid Core ML that anemone does not take; the code names the kind.
    Unsupported(&'static str, String),
    /// Content that contradicts itself or the format.
    Malformed(String),
}

pub(super) type Checked<T> = Result<T, Problem>;

fn malformed<T>(message: String) -> Checked<T> {
    Err(Problem::Malformed(message))
}

/// The IR element type of a proto `DataType` code.
pub(super) fn dtype(code: i32) -> Option<DType> {
    Some(match DataType::try_from(code).ok()? {
        DataType::UnusedType => return None,
        DataType::Bool => DType::Bool,
        DataType::String => DType::String,
        DataType::Float8e4m3fn => DType::Fp8E4M3,
        DataType::Float8e5m2 => DType::Fp8E5M2,
        DataType::Float16 => DType::Fp16,
        DataType::Float32 => DType::Fp32,
        DataType::Float64 => DType::Fp64,
        DataType::Bfloat16 => DType::Bf16,
        DataType::Int8 => DType::Int8,
        DataType::Int16 => DType::Int16,
        DataType::Int32 => DType::Int32,
        DataType::Int64 => DType::Int64,
        DataType::Int4 => DType::Int4,
        DataType::Uint8 => DType::UInt8,
        DataType::Uint16 => DType::UInt16,
        DataType::Uint32 => DType::UInt32,
        DataType::Uint64 => DType::UInt64,
        DataType::Uint4 => DType::UInt4,
        DataType::Uint2 => DType::UInt2,
        DataType::Uint1 => DType::UInt1,
        DataType::Uint6 => DType::UInt6,
        DataType::Uint3 => DType::UInt3,
    })
}

/// A tensor type with every dimension known. `subject` names the value in messages, e.g.
/// `input x`.
pub(super) fn tensor_type(t: &mil_spec::TensorType, subject: &str) -> Checked<TensorType> {
    let Some(dtype) = dtype(t.data_type) else {
        return malformed(format!("{subject} has an unknown data type (code {})", t.data_type));
    };
    if t.rank < 0 {
        return Err(Problem::Unsupported(
            "coreml::flexible-shape",
            format!("{subject} has a variable rank; anemone needs fixed shapes"),
        ));
    }
    if u64::try_from(t.dimensions.len()).ok() != u64::try_from(t.rank).ok() {
        return malformed(format!(
            "{subject} declares rank {} but lists {} dimensions",
            t.rank,
            t.dimensions.len()
        ));
    }
    let mut shape = Vec::with_capacity(t.dimensions.len());
    for (i, d) in t.dimensions.iter().enumerate() {
        match d.dimension {
            Some(dimension::Dimension::Constant(c)) => match usize::try_from(c.size) {
                Ok(size) => shape.push(size),
                Err(_) => return malformed(format!("{subject}: dimension {i} is too large")),
            },
            Some(dimension::Dimension::Unknown(_)) => {
                return Err(Problem::Unsupported(
                    "coreml::flexible-shape",
                    format!("{subject} has a flexible dimension {i}; anemone needs fixed shapes"),
                ));
            }
            None => return malformed(format!("{subject}: dimension {i} has no size")),
        }
    }
    let ty = TensorType { dtype, shape };
    let countable = match dtype {
        DType::String => ty.checked_element_count().is_some(),
        _ => ty.byte_size().is_some(),
    };
    if !countable {
        return malformed(format!("{subject} has type {ty}, too large to count"));
    }
    Ok(ty)
}

/// The type of a value. Dictionaries are taken only where `allow_dict` (literals); lists,
/// tuples and states never.
pub(super) fn value_type(
    t: Option<&mil_spec::ValueType>,
    subject: &str,
    allow_dict: bool,
) -> Checked<Type> {
    let unsupported = |what: &str| {
        Err(Problem::Unsupported(
            "coreml::unsupported-type",
            format!("{subject} is {what}; anemone supports tensors and scalars only"),
        ))
    };
    match t.and_then(|t| t.r#type.as_ref()) {
        None => malformed(format!("{subject} has no type")),
        Some(value_type::Type::TensorType(t)) => Ok(Type::from(tensor_type(t, subject)?)),
        Some(value_type::Type::ListType(_)) => unsupported("a list"),
        Some(value_type::Type::TupleType(_)) => unsupported("a tuple"),
        Some(value_type::Type::DictionaryType(d)) if allow_dict => {
            let key = value_type(d.key_type.as_deref(), &format!("{subject}'s key"), true)?;
            let val = value_type(d.value_type.as_deref(), &format!("{subject}'s value"), true)?;
            Ok(Type::Dict(Box::new(key), Box::new(val)))
        }
        Some(value_type::Type::DictionaryType(_)) => unsupported("a dictionary"),
        Some(value_type::Type::StateType(_)) => Err(Problem::Unsupported(
            "coreml::state",
            format!("{subject} is a state; stateful models are not supported"),
        )),
    }
}

/// A value as a literal: inline elements, a dictionary, or a BLOBFILE reference.
pub(super) fn literal(v: &mil_spec::Value, subject: &str) -> Checked<Literal> {
    let ty = value_type(v.r#type.as_ref(), subject, true)?;
    let data = match &v.value {
        None => return malformed(format!("{subject} has no value")),
        Some(value::Value::BlobFileValue(b)) => {
            if matches!(ty, Type::Dict(..)) {
                return malformed(format!("{subject} is a dictionary stored in a weight file"));
            }
            LiteralData::Blob(BlobRef { path: b.file_name.clone(), offset: b.offset })
        }
        Some(value::Value::ImmediateValue(imm)) => match (&imm.value, &ty) {
            (Some(immediate_value::Value::Tensor(t)), Type::Scalar(_) | Type::Tensor(_)) => {
                let tensor = ty.as_tensor().unwrap_or_else(|| TensorType::new(DType::Fp32, []));
                LiteralData::Tensor(tensor_data(&tensor, t, subject)?)
            }
            (Some(immediate_value::Value::Dictionary(d)), Type::Dict(key, val)) => {
                let mut entries = Vec::with_capacity(d.values.len());
                for (i, pair) in d.values.iter().enumerate() {
                    let k = entry(pair.key.as_ref(), key, &format!("{subject}'s key {i}"))?;
                    let v = entry(pair.value.as_ref(), val, &format!("{subject}'s value {i}"))?;
                    entries.push((k, v));
                }
                LiteralData::Dict(entries)
            }
            (Some(immediate_value::Value::List(_) | immediate_value::Value::Tuple(_)), _) => {
                return Err(Problem::Unsupported(
                    "coreml::unsupported-type",
                    format!("{subject} is a list or tuple value; anemone supports tensors only"),
                ));
            }
            (None, _) => return malformed(format!("{subject} has an empty immediate value")),
            (Some(_), _) => {
                return malformed(format!("{subject}'s value does not match its type {ty}"));
            }
        },
    };
    Ok(Literal::new(ty, data))
}

/// A dictionary key or value: it takes the dictionary's declared type, and may not declare
/// another.
fn entry(v: Option<&mil_spec::Value>, declared: &Type, subject: &str) -> Checked<Literal> {
    let Some(v) = v else {
        return malformed(format!("{subject} is missing"));
    };
    if v.r#type.is_none() {
        let typed = mil_spec::Value { r#type: Some(proto_type_of(declared)?), ..v.clone() };
        return literal(&typed, subject);
    }
    let lit = literal(v, subject)?;
    if &lit.ty != declared {
        return malformed(format!(
            "{subject} has type {}, but the dictionary declares {declared}",
            lit.ty
        ));
    }
    Ok(lit)
}

/// The proto form of a scalar or tensor type (for dictionary entries that leave their type
/// to the dictionary).
fn proto_type_of(ty: &Type) -> Checked<mil_spec::ValueType> {
    let Some(t) = ty.as_tensor() else {
        return malformed("a dictionary entry without a type inside a dictionary".to_string());
    };
    let code = DataType::from_dtype(t.dtype);
    let dimensions = t
        .shape
        .iter()
        .map(|&d| mil_spec::Dimension {
            dimension: Some(dimension::Dimension::Constant(dimension::ConstantDimension {
                size: d as u64,
            })),
        })
        .collect();
    Ok(mil_spec::ValueType {
        r#type: Some(value_type::Type::TensorType(mil_spec::TensorType {
            data_type: code as i32,
            rank: t.shape.len() as i64,
            dimensions,
            attributes: Default::default(),
        })),
    })
}

impl DataType {
    /// The proto code of an IR element type.
    pub fn from_dtype(d: DType) -> DataType {
        match d {
            DType::Fp16 => DataType::Float16,
            DType::Fp32 => DataType::Float32,
            DType::Fp64 => DataType::Float64,
            DType::Bf16 => DataType::Bfloat16,
            DType::Bool => DataType::Bool,
            DType::String => DataType::String,
            DType::Int4 => DataType::Int4,
            DType::Int8 => DataType::Int8,
            DType::Int16 => DataType::Int16,
            DType::Int32 => DataType::Int32,
            DType::Int64 => DataType::Int64,
            DType::UInt1 => DataType::Uint1,
            DType::UInt2 => DataType::Uint2,
            DType::UInt3 => DataType::Uint3,
            DType::UInt4 => DataType::Uint4,
            DType::UInt6 => DataType::Uint6,
            DType::UInt8 => DataType::Uint8,
            DType::UInt16 => DataType::Uint16,
            DType::UInt32 => DataType::Uint32,
            DType::UInt64 => DataType::Uint64,
            DType::Fp8E4M3 => DataType::Float8e4m3fn,
            DType::Fp8E5M2 => DataType::Float8e5m2,
        }
    }
}

/// The field coremltools stores `dtype` in, for messages.
fn expected_field(dtype: DType) -> &'static str {
    match dtype {
        DType::Fp32 => "floats",
        DType::Fp64 => "doubles",
        DType::Bool => "bools",
        DType::String => "strings",
        DType::Int16 | DType::UInt16 | DType::Int32 => "ints",
        DType::Int64 | DType::UInt64 => "longInts",
        _ => "bytes",
    }
}

fn field_name(v: &tensor_value::Value) -> &'static str {
    match v {
        tensor_value::Value::Floats(_) => "floats",
        tensor_value::Value::Ints(_) => "ints",
        tensor_value::Value::Bools(_) => "bools",
        tensor_value::Value::Strings(_) => "strings",
        tensor_value::Value::LongInts(_) => "longInts",
        tensor_value::Value::Doubles(_) => "doubles",
        tensor_value::Value::Bytes(_) => "bytes",
    }
}

/// The inline elements of an immediate tensor of type `ty`, in the representation the text
/// parser gives that dtype.
fn tensor_data(ty: &TensorType, t: &mil_spec::TensorValue, subject: &str) -> Checked<TensorData> {
    let dtype = ty.dtype;
    let Some(count) = ty.checked_element_count() else {
        return malformed(format!("{subject} has type {ty}, too large to count"));
    };
    let Some(field) = &t.value else {
        if count == 0 {
            return Ok(empty(dtype));
        }
        return malformed(format!("{subject} ({ty}) holds no elements"));
    };
    let check_len = |found: usize| {
        if found == count {
            Ok(())
        } else {
            malformed(format!("{subject} is {ty} ({count} elements) but holds {found}"))
        }
    };
    let wrong_field = || {
        malformed(format!(
            "{subject} is {ty} but its elements are stored as {}; {dtype} is stored as {}",
            field_name(field),
            expected_field(dtype)
        ))
    };
    use tensor_value::Value as F;
    match field {
        F::Floats(v) if dtype == DType::Fp32 => {
            check_len(v.values.len())?;
            Ok(TensorData::F32(v.values.clone()))
        }
        F::Doubles(v) if dtype == DType::Fp64 => {
            check_len(v.values.len())?;
            Ok(TensorData::F64(v.values.clone()))
        }
        F::Bools(v) if dtype == DType::Bool => {
            check_len(v.values.len())?;
            Ok(TensorData::Bool(v.values.clone()))
        }
        F::Strings(v) if dtype == DType::String => {
            check_len(v.values.len())?;
            Ok(TensorData::Str(v.values.clone()))
        }
        F::Ints(v) if dtype.is_int() => {
            check_len(v.values.len())?;
            integers(dtype, v.values.iter().map(|&x| x as i64), subject)
        }
        F::LongInts(v) if dtype.is_int() => {
            check_len(v.values.len())?;
            integers(dtype, v.values.iter().copied(), subject)
        }
        F::Bytes(b) if dtype != DType::Bool && dtype != DType::String => {
            let needed = dtype.storage_bytes(count as u64);
            if needed != Some(b.values.len() as u64) {
                return malformed(format!(
                    "{subject} is {ty} ({count} elements, {} bytes) but holds {} bytes",
                    needed.map_or("too many".to_string(), |n| n.to_string()),
                    b.values.len()
                ));
            }
            Ok(from_bytes(dtype, &b.values, count))
        }
        _ => wrong_field(),
    }
}

/// Integers checked against the range of `dtype`.
fn integers(dtype: DType, values: impl Iterator<Item = i64>, subject: &str) -> Checked<TensorData> {
    let (min, max) = dtype.int_range().unwrap_or((i64::MIN as i128, i64::MAX as i128));
    let mut signed = Vec::new();
    let mut unsigned = Vec::new();
    for (i, v) in values.enumerate() {
        if !(min..=max).contains(&(v as i128)) {
            return malformed(format!(
                "{subject}: element {i} is {v}, out of range for {dtype} ({min} to {max})"
            ));
        }
        if dtype.is_signed_int() { signed.push(v) } else { unsigned.push(v as u64) }
    }
    Ok(if dtype.is_signed_int() { TensorData::Int(signed) } else { TensorData::UInt(unsigned) })
}

/// `count` little-endian elements of `dtype` from `bytes`, whose length the caller checked.
fn from_bytes(dtype: DType, bytes: &[u8], count: usize) -> TensorData {
    fn words<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes.chunks_exact(N).map(|c| {
            let mut w = [0u8; N];
            w.copy_from_slice(c);
            w
        })
    }
    match dtype {
        DType::Fp16 => TensorData::F16(words(bytes).map(f16::from_le_bytes).collect()),
        DType::Bf16 => TensorData::BF16(words(bytes).map(bf16::from_le_bytes).collect()),
        DType::Fp32 => TensorData::F32(words(bytes).map(f32::from_le_bytes).collect()),
        DType::Fp64 => TensorData::F64(words(bytes).map(f64::from_le_bytes).collect()),
        // fp8 values are kept as their bytes, as the text parser keeps them.
        DType::Fp8E4M3 | DType::Fp8E5M2 | DType::UInt8 => {
            TensorData::UInt(bytes.iter().map(|&b| b as u64).collect())
        }
        DType::Int8 => TensorData::Int(bytes.iter().map(|&b| b as i8 as i64).collect()),
        DType::Int16 => {
            TensorData::Int(words(bytes).map(|w| i16::from_le_bytes(w) as i64).collect())
        }
        DType::UInt16 => {
            TensorData::UInt(words(bytes).map(|w| u16::from_le_bytes(w) as u64).collect())
        }
        DType::Int32 => {
            TensorData::Int(words(bytes).map(|w| i32::from_le_bytes(w) as i64).collect())
        }
        DType::UInt32 => {
            TensorData::UInt(words(bytes).map(|w| u32::from_le_bytes(w) as u64).collect())
        }
        DType::Int64 => TensorData::Int(words(bytes).map(i64::from_le_bytes).collect()),
        DType::UInt64 => TensorData::UInt(words(bytes).map(u64::from_le_bytes).collect()),
        DType::Int4 | DType::UInt1 | DType::UInt2 | DType::UInt3 | DType::UInt4 | DType::UInt6 => {
            // The length was checked against the packed size, so unpacking cannot fail.
            let values = blob::unpack_sub_byte(dtype, bytes, count as u64).unwrap_or_default();
            if dtype.is_signed_int() {
                TensorData::Int(values.into_iter().map(|v| v as i64).collect())
            } else {
                TensorData::UInt(values.into_iter().map(|v| v as u8 as u64).collect())
            }
        }
        DType::Bool | DType::String => empty(dtype),
    }
}

/// No elements, in the representation of `dtype` (as the text parser stores them).
fn empty(dtype: DType) -> TensorData {
    match dtype {
        DType::Fp16 => TensorData::F16(Vec::new()),
        DType::Bf16 => TensorData::BF16(Vec::new()),
        DType::Fp32 => TensorData::F32(Vec::new()),
        DType::Fp64 => TensorData::F64(Vec::new()),
        DType::Bool => TensorData::Bool(Vec::new()),
        DType::String => TensorData::Str(Vec::new()),
        d if d.is_signed_int() => TensorData::Int(Vec::new()),
        _ => TensorData::UInt(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor_value(field: tensor_value::Value) -> mil_spec::TensorValue {
        mil_spec::TensorValue { value: Some(field) }
    }

    fn bytes(b: &[u8]) -> mil_spec::TensorValue {
        tensor_value(tensor_value::Value::Bytes(tensor_value::RepeatedBytes { values: b.to_vec() }))
    }

    fn ints(v: &[i32]) -> mil_spec::TensorValue {
        tensor_value(tensor_value::Value::Ints(tensor_value::RepeatedInts { values: v.to_vec() }))
    }

    fn ty(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType::new(dtype, shape)
    }

    #[test]
    fn raw_bytes_decode_little_endian_per_dtype() {
        let half = [0x00, 0x3c, 0x00, 0xc0]; // 1.0, -2.0
        assert_eq!(
            tensor_data(&ty(DType::Fp16, &[2]), &bytes(&half), "v").unwrap(),
            TensorData::F16(vec![f16::from_f32(1.0), f16::from_f32(-2.0)])
        );
        assert_eq!(
            tensor_data(&ty(DType::Bf16, &[1]), &bytes(&[0x80, 0x3f]), "v").unwrap(),
            TensorData::BF16(vec![bf16::from_f32(1.0)])
        );
        assert_eq!(
            tensor_data(&ty(DType::Int8, &[2]), &bytes(&[0xff, 0x7f]), "v").unwrap(),
            TensorData::Int(vec![-1, 127])
        );
        assert_eq!(
            tensor_data(&ty(DType::UInt32, &[]), &bytes(&[1, 0, 0, 0x80]), "v").unwrap(),
            TensorData::UInt(vec![0x8000_0001])
        );
        // int4 packs two values a byte, low nibble first, sign-extended.
        assert_eq!(
            tensor_data(&ty(DType::Int4, &[3]), &bytes(&[0xf7, 0x08]), "v").unwrap(),
            TensorData::Int(vec![7, -1, -8])
        );
        assert_eq!(
            tensor_data(&ty(DType::UInt3, &[3]), &bytes(&[0b1111_0101, 0b0000_0001]), "v").unwrap(),
            TensorData::UInt(vec![5, 6, 7])
        );
        assert_eq!(
            tensor_data(&ty(DType::Fp8E4M3, &[1]), &bytes(&[0x38]), "v").unwrap(),
            TensorData::UInt(vec![0x38])
        );
    }

    #[test]
    fn element_counts_must_match_the_shape() {
        let e = tensor_data(&ty(DType::Fp16, &[3]), &bytes(&[0; 4]), "val").unwrap_err();
        let Problem::Malformed(m) = e else { panic!("{e:?}") };
        assert!(m.contains("3 elements, 6 bytes") && m.contains("holds 4 bytes"), "{m}");
        let e = tensor_data(&ty(DType::Int32, &[2, 2]), &ints(&[1, 2, 3]), "val").unwrap_err();
        let Problem::Malformed(m) = e else { panic!("{e:?}") };
        assert!(m.contains("(4 elements) but holds 3"), "{m}");
        // A shape too large to count is refused before anything is allocated.
        let huge = ty(DType::Fp32, &[usize::MAX, 4]);
        assert!(tensor_data(&huge, &bytes(&[]), "val").is_err());
        // An empty tensor may leave the field unset.
        let none = mil_spec::TensorValue { value: None };
        assert_eq!(
            tensor_data(&ty(DType::Fp16, &[0, 3]), &none, "v").unwrap(),
            TensorData::F16(vec![])
        );
        assert!(tensor_data(&ty(DType::Fp16, &[1]), &none, "v").is_err());
    }

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(
            tensor_data(&ty(DType::Int16, &[2]), &ints(&[-32768, 32767]), "v").unwrap(),
            TensorData::Int(vec![-32768, 32767])
        );
        let e = tensor_data(&ty(DType::Int16, &[1]), &ints(&[40000]), "x").unwrap_err();
        let Problem::Malformed(m) = e else { panic!("{e:?}") };
        assert!(m.contains("element 0 is 40000, out of range for int16"), "{m}");
        assert!(tensor_data(&ty(DType::UInt16, &[1]), &ints(&[-1]), "x").is_err());
        let longs = tensor_value(tensor_value::Value::LongInts(tensor_value::RepeatedLongInts {
            values: vec![-1],
        }));
        assert!(tensor_data(&ty(DType::UInt64, &[1]), &longs, "x").is_err());
    }

    #[test]
    fn a_field_that_does_not_fit_the_dtype_is_named() {
        let floats = tensor_value(tensor_value::Value::Floats(tensor_value::RepeatedFloats {
            values: vec![1.0],
        }));
        let e = tensor_data(&ty(DType::Fp16, &[1]), &floats, "val").unwrap_err();
        let Problem::Malformed(m) = e else { panic!("{e:?}") };
        assert!(m.contains("stored as floats; fp16 is stored as bytes"), "{m}");
    }
}
