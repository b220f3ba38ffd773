//! The MIL intermediate representation: programs, functions, blocks, operations, types and
//! literal values. Everything else in the crate reads or writes these types; nothing here
//! knows about text syntax or devices.

use std::fmt;

pub use half::{bf16, f16};

/// A byte range in the source text a node was parsed from.
///
/// Spans are metadata for diagnostics: two nodes that differ only in where they came from
/// compare equal, so `parse(print(p)) == p` holds although printing moves everything.
/// Built nodes carry [`Span::NONE`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    /// Byte offset of the first byte, into the source text (UTF-8).
    pub start: usize,
    /// Byte offset one past the last byte (half-open range); equals `start` for an empty span.
    pub end: usize,
}

impl Span {
    /// The span of a node that was built in code rather than parsed.
    pub const NONE: Span = Span { start: 0, end: 0 };

    /// A span covering the bytes `start..end` of the source text.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span that covers both.
    pub fn to(self, other: Span) -> Span {
        Span { start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    /// Whether this is [`Span::NONE`], i.e. the node was built rather than parsed (an empty span
    /// at offset 0 also counts as none). Diagnostics skip source labels for such spans.
    pub fn is_none(&self) -> bool {
        self.start == 0 && self.end == 0
    }

    /// Length in bytes (0 if `end` is before `start`).
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true
    }
}
impl Eq for Span {}

/// Hashes nothing, to agree with equality: all spans are equal.
impl std::hash::Hash for Span {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> miette::SourceSpan {
        (s.start, s.len()).into()
    }
}

/// Every element type MIL knows (REFERENCE.md §4), plus the two fp8 formats that weight
/// blobs can hold (§5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE half precision; the ANE's native compute and storage type.
    Fp16,
    /// IEEE single precision; the ANE computes in fp16, rounding fp32 to nearest even.
    Fp32,
    /// IEEE double precision (MIL text only: no blob dtype code).
    Fp64,
    /// bfloat16: fp32's exponent with a 7-bit mantissa (blob code 5).
    Bf16,
    /// Boolean, stored as one byte per element.
    Bool,
    /// UTF-8 string; has no fixed storage width and never appears in blobs.
    String,
    /// Signed 4-bit integer, packed two per byte in blobs (code 8).
    Int4,
    /// Signed 8-bit integer (blob code 4).
    Int8,
    /// Signed 16-bit integer (blob code 6).
    Int16,
    /// Signed 32-bit integer (blob code 14); the type of shapes, axes and perms in MIL.
    Int32,
    /// Signed 64-bit integer (MIL text only: no blob dtype code).
    Int64,
    /// Unsigned 1-bit integer, packed eight per byte in blobs (code 9).
    UInt1,
    /// Unsigned 2-bit integer, packed four per byte in blobs (code 10).
    UInt2,
    /// Unsigned 3-bit integer, bit-packed across byte boundaries in blobs (code 12).
    UInt3,
    /// Unsigned 4-bit integer, packed two per byte in blobs (code 11).
    UInt4,
    /// Unsigned 6-bit integer, bit-packed across byte boundaries in blobs (code 13).
    UInt6,
    /// Unsigned 8-bit integer (blob code 3).
    UInt8,
    /// Unsigned 16-bit integer (blob code 7).
    UInt16,
    /// Unsigned 32-bit integer (blob code 15).
    UInt32,
    /// Unsigned 64-bit integer; the type of a BLOBFILE `offset` (no blob dtype code).
    UInt64,
    /// 8-bit float, 4 exponent and 3 mantissa bits, no infinities (the "FN" variant); blob
    /// code 16. Inline literals keep its raw bytes in [`TensorData::UInt`].
    Fp8E4M3,
    /// 8-bit float, 5 exponent and 2 mantissa bits (IEEE-like); blob code 17. Inline literals
    /// keep its raw bytes in [`TensorData::UInt`].
    Fp8E5M2,
}

impl DType {
    /// Every dtype, in declaration order (the order [`DType`]'s `Ord` sorts by).
    pub const ALL: [DType; 22] = [
        DType::Fp16,
        DType::Fp32,
        DType::Fp64,
        DType::Bf16,
        DType::Bool,
        DType::String,
        DType::Int4,
        DType::Int8,
        DType::Int16,
        DType::Int32,
        DType::Int64,
        DType::UInt1,
        DType::UInt2,
        DType::UInt3,
        DType::UInt4,
        DType::UInt6,
        DType::UInt8,
        DType::UInt16,
        DType::UInt32,
        DType::UInt64,
        DType::Fp8E4M3,
        DType::Fp8E5M2,
    ];

    /// The spelling in MIL text.
    pub fn name(self) -> &'static str {
        match self {
            DType::Fp16 => "fp16",
            DType::Fp32 => "fp32",
            DType::Fp64 => "fp64",
            DType::Bf16 => "bf16",
            DType::Bool => "bool",
            DType::String => "string",
            DType::Int4 => "int4",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::UInt1 => "uint1",
            DType::UInt2 => "uint2",
            DType::UInt3 => "uint3",
            DType::UInt4 => "uint4",
            DType::UInt6 => "uint6",
            DType::UInt8 => "uint8",
            DType::UInt16 => "uint16",
            DType::UInt32 => "uint32",
            DType::UInt64 => "uint64",
            DType::Fp8E4M3 => "fp8e4m3",
            DType::Fp8E5M2 => "fp8e5m2",
        }
    }

    /// The dtype spelled `name` in MIL text (`"fp16"`, `"uint6"`, `"fp8e4m3"`, ...); `None` for
    /// anything else. Inverse of [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Storage width in bits of one element (strings have none: 0).
    pub fn bits(self) -> u32 {
        match self {
            DType::UInt1 => 1,
            DType::UInt2 => 2,
            DType::UInt3 => 3,
            DType::Int4 | DType::UInt4 => 4,
            DType::UInt6 => 6,
            DType::Bool | DType::Int8 | DType::UInt8 | DType::Fp8E4M3 | DType::Fp8E5M2 => 8,
            DType::Fp16 | DType::Bf16 | DType::Int16 | DType::UInt16 => 16,
            DType::Fp32 | DType::Int32 | DType::UInt32 => 32,
            DType::Fp64 | DType::Int64 | DType::UInt64 => 64,
            DType::String => 0,
        }
    }

    /// Bytes needed to store `count` elements densely packed (sub-byte types share bytes).
    /// None when the count overflows or the type has no fixed width.
    pub fn storage_bytes(self, count: u64) -> Option<u64> {
        if self == DType::String {
            return None;
        }
        let bits = count.checked_mul(self.bits() as u64)?;
        Some(bits.div_ceil(8))
    }

    /// Whether this is a floating-point type, fp8 formats included.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Fp16 | DType::Fp32 | DType::Fp64 | DType::Bf16 | DType::Fp8E4M3 | DType::Fp8E5M2
        )
    }

    /// Whether this is a signed or unsigned integer type (not `bool`).
    pub fn is_int(self) -> bool {
        self.is_signed_int() || self.is_unsigned_int()
    }

    /// Whether this is `int4`, `int8`, `int16`, `int32` or `int64`.
    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::Int4 | DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64)
    }

    /// Whether this is one of the `uint*` types, sub-byte widths included.
    pub fn is_unsigned_int(self) -> bool {
        matches!(
            self,
            DType::UInt1
                | DType::UInt2
                | DType::UInt3
                | DType::UInt4
                | DType::UInt6
                | DType::UInt8
                | DType::UInt16
                | DType::UInt32
                | DType::UInt64
        )
    }

    /// The inclusive range an integer type can hold, as i128 so that every type fits.
    pub fn int_range(self) -> Option<(i128, i128)> {
        if self.is_signed_int() {
            let b = self.bits();
            Some((-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1))
        } else if self.is_unsigned_int() {
            Some((0, (1i128 << self.bits()) - 1))
        } else {
            None
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor type with a fully known shape. Rank-0 tensors are written as scalars.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first (row-major); empty for a rank-0 tensor.
    pub shape: Vec<usize>,
}

impl TensorType {
    /// A tensor of `dtype` with the given dimensions.
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> TensorType {
        TensorType { dtype, shape: shape.into() }
    }

    /// Number of dimensions (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements, or None when the product overflows.
    pub fn checked_element_count(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Number of elements. Shapes from parsed text are checked against overflow by the
    /// validator; built shapes are assumed sane.
    pub fn element_count(&self) -> usize {
        self.checked_element_count().unwrap_or(usize::MAX)
    }

    /// Dense storage size in bytes, None on overflow or for strings.
    pub fn byte_size(&self) -> Option<u64> {
        self.dtype.storage_bytes(self.checked_element_count()? as u64)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor<{}, [", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]>")
    }
}

/// The type of a value: a scalar, a tensor, or a dictionary (only seen in attributes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// A scalar (rank 0), written as a bare dtype: `fp16`, `string`.
    Scalar(DType),
    /// A tensor of known shape: `tensor<fp16, [1, 64]>`.
    Tensor(TensorType),
    /// A dictionary `dict<K, V>` (key type, value type), as in the `buildInfo` program attribute.
    Dict(Box<Type>, Box<Type>),
}

impl Type {
    /// Shorthand for `Type::Tensor(TensorType::new(dtype, shape))`. A rank-0 shape still gives
    /// a [`Type::Tensor`]; `Type::from(TensorType)` gives [`Type::Scalar`] for it instead.
    pub fn tensor(dtype: DType, shape: impl Into<Vec<usize>>) -> Type {
        Type::Tensor(TensorType::new(dtype, shape))
    }

    /// The element type; None for dictionaries.
    pub fn dtype(&self) -> Option<DType> {
        match self {
            Type::Scalar(d) => Some(*d),
            Type::Tensor(t) => Some(t.dtype),
            Type::Dict(..) => None,
        }
    }

    /// The shape, scalars having the empty shape; None for dictionaries.
    pub fn shape(&self) -> Option<&[usize]> {
        match self {
            Type::Scalar(_) => Some(&[]),
            Type::Tensor(t) => Some(&t.shape),
            Type::Dict(..) => None,
        }
    }

    /// The same type seen as a tensor (a scalar is a rank-0 tensor).
    pub fn as_tensor(&self) -> Option<TensorType> {
        match self {
            Type::Scalar(d) => Some(TensorType::new(*d, [])),
            Type::Tensor(t) => Some(t.clone()),
            Type::Dict(..) => None,
        }
    }

    /// Number of elements (1 for scalars); None for dictionaries.
    pub fn element_count(&self) -> Option<usize> {
        match self {
            Type::Scalar(_) => Some(1),
            Type::Tensor(t) => t.checked_element_count(),
            Type::Dict(..) => None,
        }
    }
}

impl From<TensorType> for Type {
    fn from(t: TensorType) -> Type {
        if t.shape.is_empty() { Type::Scalar(t.dtype) } else { Type::Tensor(t) }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Scalar(d) => write!(f, "{d}"),
            Type::Tensor(t) => write!(f, "{t}"),
            Type::Dict(k, v) => write!(f, "dict<{k}, {v}>"),
        }
    }
}

/// The elements of an inline tensor or scalar literal, flat and row-major, stored in the
/// representation of the declared dtype so that printing and parsing keep every bit.
#[derive(Clone, Debug)]
pub enum TensorData {
    /// fp16 values.
    F16(Vec<f16>),
    /// bf16 values.
    BF16(Vec<bf16>),
    /// fp32 values.
    F32(Vec<f32>),
    /// fp64 values.
    F64(Vec<f64>),
    /// Values of any signed integer type (range-checked against the dtype by the parser).
    Int(Vec<i64>),
    /// Values of any unsigned integer type, and the raw bytes of fp8 types.
    UInt(Vec<u64>),
    /// `bool` values.
    Bool(Vec<bool>),
    /// `string` values.
    Str(Vec<String>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::Int(v) => v.len(),
            TensorData::UInt(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Str(v) => v.len(),
        }
    }

    /// Whether there are no elements (a zero-sized tensor).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as an f64 (booleans as 0/1); None for strings or out of range.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        Some(match self {
            TensorData::F16(v) => v.get(i)?.to_f64(),
            TensorData::BF16(v) => v.get(i)?.to_f64(),
            TensorData::F32(v) => *v.get(i)? as f64,
            TensorData::F64(v) => *v.get(i)?,
            TensorData::Int(v) => *v.get(i)? as f64,
            TensorData::UInt(v) => *v.get(i)? as f64,
            TensorData::Bool(v) => *v.get(i)? as u8 as f64,
            TensorData::Str(_) => return None,
        })
    }

    /// Element `i` as an i64 when it is an integer (or an integral float, or a bool).
    pub fn get_i64(&self, i: usize) -> Option<i64> {
        match self {
            TensorData::Int(v) => v.get(i).copied(),
            TensorData::UInt(v) => v.get(i).and_then(|&u| i64::try_from(u).ok()),
            TensorData::Bool(v) => v.get(i).map(|&b| b as i64),
            TensorData::Str(_) => None,
            _ => {
                let f = self.get_f64(i)?;
                (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
            }
        }
    }

    /// All elements as f64 (None for strings).
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        (0..self.len()).map(|i| self.get_f64(i)).collect()
    }

    /// All elements as i64 (None if any is not an integer).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        (0..self.len()).map(|i| self.get_i64(i)).collect()
    }
}

impl PartialEq for TensorData {
    /// Floats compare by bits, so NaN payloads and signed zeros count.
    fn eq(&self, other: &TensorData) -> bool {
        use TensorData::*;
        match (self, other) {
            (F16(a), F16(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (BF16(a), BF16(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (F32(a), F32(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (F64(a), F64(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            _ => false,
        }
    }
}

/// A reference to weight data in a blob file: `BLOBFILE(path = string("..."), offset = uint64(N))`.
/// `offset` points at the blob's 64-byte metadata record, not at its data (REFERENCE.md §5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// The `path` string as written, e.g. `@model_path/weights/weight.bin`; resolved against the
    /// model directory by [`crate::package`].
    pub path: String,
    /// Byte offset of the blob's metadata record in the file; a multiple of 64, at least 64,
    /// in a conformant file.
    pub offset: u64,
}

/// The payload of a literal.
#[derive(Clone, Debug, PartialEq)]
pub enum LiteralData {
    /// Inline elements (one for a scalar).
    Tensor(TensorData),
    /// Weight data stored in a blob file.
    Blob(BlobRef),
    /// Key/value pairs of a dict literal.
    Dict(Vec<(Literal, Literal)>),
}

/// A typed constant value as written in MIL: `int32(1)`, `tensor<fp16, [2]>([1, 2])`,
/// `tensor<fp16, [64, 64]>(BLOBFILE(...))`, `dict<string, string>({{"a", "b"}})`.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    /// The declared type the value is read as.
    pub ty: Type,
    /// The value itself: inline elements, a blob reference, or dict entries.
    pub data: LiteralData,
    /// Where the literal was written ([`Span::NONE`] when built).
    pub span: Span,
}

impl Literal {
    /// A literal of type `ty` with no source span.
    pub fn new(ty: Type, data: LiteralData) -> Literal {
        Literal { ty, data, span: Span::NONE }
    }

    /// A literal with inline elements; `data` should hold `ty`'s element count.
    pub fn tensor(ty: Type, data: TensorData) -> Literal {
        Literal::new(ty, LiteralData::Tensor(data))
    }

    /// A `string` scalar: `string("...")`.
    pub fn string(s: impl Into<String>) -> Literal {
        Literal::tensor(Type::Scalar(DType::String), TensorData::Str(vec![s.into()]))
    }

    /// A `bool` scalar.
    pub fn bool(b: bool) -> Literal {
        Literal::tensor(Type::Scalar(DType::Bool), TensorData::Bool(vec![b]))
    }

    /// An `int32` scalar.
    pub fn int32(v: i32) -> Literal {
        Literal::tensor(Type::Scalar(DType::Int32), TensorData::Int(vec![v as i64]))
    }

    /// A `uint64` scalar, the type of a BLOBFILE `offset`.
    pub fn uint64(v: u64) -> Literal {
        Literal::tensor(Type::Scalar(DType::UInt64), TensorData::UInt(vec![v]))
    }

    /// An `fp16` scalar, rounded from `v` to nearest even.
    pub fn fp16(v: f32) -> Literal {
        Literal::tensor(Type::Scalar(DType::Fp16), TensorData::F16(vec![f16::from_f32(v)]))
    }

    /// An `fp32` scalar.
    pub fn fp32(v: f32) -> Literal {
        Literal::tensor(Type::Scalar(DType::Fp32), TensorData::F32(vec![v]))
    }

    /// A rank-1 int32 tensor, the form of shapes, axes, perms and begins.
    pub fn int32_list(values: &[i32]) -> Literal {
        Literal::tensor(
            Type::tensor(DType::Int32, [values.len()]),
            TensorData::Int(values.iter().map(|&v| v as i64).collect()),
        )
    }

    /// A tensor literal whose data lives in a weight file: `ty(BLOBFILE(path, offset))`, where
    /// `offset` is the byte offset of the blob's metadata record (see [`BlobRef`]).
    pub fn blob(ty: TensorType, path: impl Into<String>, offset: u64) -> Literal {
        Literal::new(Type::Tensor(ty), LiteralData::Blob(BlobRef { path: path.into(), offset }))
    }

    /// Inline elements, if this literal has them.
    pub fn tensor_data(&self) -> Option<&TensorData> {
        match &self.data {
            LiteralData::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The string of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self.tensor_data()? {
            TensorData::Str(v) if v.len() == 1 => Some(&v[0]),
            _ => None,
        }
    }

    /// The value of a boolean scalar.
    pub fn as_bool(&self) -> Option<bool> {
        match self.tensor_data()? {
            TensorData::Bool(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }

    /// The value of an integral scalar (or one-element tensor).
    pub fn as_i64(&self) -> Option<i64> {
        let t = self.tensor_data()?;
        (t.len() == 1).then(|| t.get_i64(0)).flatten()
    }

    /// The value of a numeric scalar (or one-element tensor).
    pub fn as_f64(&self) -> Option<f64> {
        let t = self.tensor_data()?;
        (t.len() == 1).then(|| t.get_f64(0)).flatten()
    }

    /// Inline integer elements (shapes, axes, perms).
    pub fn as_i64_vec(&self) -> Option<Vec<i64>> {
        self.tensor_data()?.to_i64_vec()
    }
}

/// An operation input: a variable, an inline literal, or a tuple (a variadic input such as
/// concat's `values`).
#[derive(Clone, Debug, PartialEq)]
pub enum Argument {
    /// A reference to a function input or an earlier op's output.
    Var(Ident),
    /// An inline constant.
    Literal(Literal),
    /// A parenthesised list of arguments passed to a variadic input, with the span of the list.
    Tuple(Vec<Argument>, Span),
}

impl Argument {
    /// A reference to the value named `name`, with no source span.
    pub fn var(name: impl Into<String>) -> Argument {
        Argument::Var(Ident::new(name))
    }

    /// Where the argument was written ([`Span::NONE`] when built).
    pub fn span(&self) -> Span {
        match self {
            Argument::Var(i) => i.span,
            Argument::Literal(l) => l.span,
            Argument::Tuple(_, s) => *s,
        }
    }
}

/// A name with the span it was written at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ident {
    /// The name as written, without any sigil.
    pub name: String,
    /// Where the name was written ([`Span::NONE`] when built).
    pub span: Span,
}

impl Ident {
    /// A name with no source span.
    pub fn new(name: impl Into<String>) -> Ident {
        Ident { name: name.into(), span: Span::NONE }
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A named input or attribute of an operation: `x = x16` or `name = string("conv")`.
#[derive(Clone, Debug, PartialEq)]
pub struct Named<T> {
    /// The parameter name (`x`, `weight`, `name`, ...).
    pub name: Ident,
    /// The argument or literal bound to it.
    pub value: T,
}

impl<T> Named<T> {
    /// A binding with no source span.
    pub fn new(name: impl Into<String>, value: T) -> Named<T> {
        Named { name: Ident::new(name), value }
    }
}

/// A typed value an operation defines, or a function input: `tensor<fp16, [1, 64]> x16`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedName {
    /// The value's declared type.
    pub ty: Type,
    /// The value's name, unique within its function.
    pub name: Ident,
    /// Where the type was written.
    pub ty_span: Span,
}

impl TypedName {
    /// A typed name with no source spans.
    pub fn new(ty: Type, name: impl Into<String>) -> TypedName {
        TypedName { ty, name: Ident::new(name), ty_span: Span::NONE }
    }
}

/// One statement: `results = op(inputs)[attributes];`.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// The op's name as written (`conv`, `const`, ...); the registry knows what it means.
    pub op: Ident,
    /// The inputs in `(...)`, in written order.
    pub inputs: Vec<Named<Argument>>,
    /// The attributes in `[...]` after the inputs: `name`, `val` for `const`, and every parameter
    /// of the iOS16-and-earlier constexpr ops.
    pub attributes: Vec<Named<Literal>>,
    /// The values it defines, left of `=`, with their declared types (several for ops with
    /// more than one result).
    pub outputs: Vec<TypedName>,
    /// The whole statement, from the first output type to the `;`.
    pub span: Span,
}

impl Operation {
    /// The input bound to `name`, if present.
    pub fn input(&self, name: &str) -> Option<&Argument> {
        self.inputs.iter().find(|n| n.name.name == name).map(|n| &n.value)
    }

    /// The attribute named `name`, if present.
    pub fn attribute(&self, name: &str) -> Option<&Literal> {
        self.attributes.iter().find(|n| n.name.name == name).map(|n| &n.value)
    }

    /// The `name` attribute every op in real programs carries.
    pub fn name_attribute(&self) -> Option<&str> {
        self.attribute("name").and_then(Literal::as_str)
    }
}

/// The body of a function: operations in order, then the names it returns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Block {
    /// The statements, in order; each may only use values defined before it.
    pub operations: Vec<Operation>,
    /// The names after `->`, which the function returns in this order.
    pub outputs: Vec<Ident>,
}

/// `func NAME<OPSET>(inputs) { ... } -> (outputs);`
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    /// The function name; `main` is the default entry point.
    pub name: Ident,
    /// The opset, e.g. `ios18`.
    pub opset: Ident,
    /// The function's parameters with their types.
    pub inputs: Vec<TypedName>,
    /// The body and its returned names.
    pub block: Block,
    /// The whole `func ... ;` declaration.
    pub span: Span,
}

impl Function {
    /// The type of a value by name: a function input or the result of an operation.
    pub fn value_type(&self, name: &str) -> Option<&Type> {
        self.inputs
            .iter()
            .chain(self.block.operations.iter().flat_map(|op| op.outputs.iter()))
            .find(|v| v.name.name == name)
            .map(|v| &v.ty)
    }

    /// The operation that defines `name`, if any.
    pub fn producer(&self, name: &str) -> Option<&Operation> {
        self.block.operations.iter().find(|op| op.outputs.iter().any(|o| o.name.name == name))
    }
}

/// A whole MIL program: `program(1.3) [attributes] { functions }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// The version as written, e.g. `1.3` or `1.0`.
    pub version: String,
    /// The attributes in `[...]` after the version, e.g. the `buildInfo` dictionary.
    pub attributes: Vec<Named<Literal>>,
    /// The functions, in written order; a request selects one by index.
    pub functions: Vec<Function>,
}

impl Program {
    /// The function named `name`, if any.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name.name == name)
    }

    /// The function a request runs by default: `main`, else the first.
    pub fn main_function(&self) -> Option<&Function> {
        self.function("main").or_else(|| self.functions.first())
    }

    /// Every BLOBFILE reference in the program, with the type it is read as: in op
    /// attributes, inline inputs, tuples and dict entries.
    pub fn blob_refs(&self) -> Vec<(&BlobRef, &Type, Span)> {
        fn literal<'a>(lit: &'a Literal, out: &mut Vec<(&'a BlobRef, &'a Type, Span)>) {
            match &lit.data {
                LiteralData::Blob(b) => out.push((b, &lit.ty, lit.span)),
                LiteralData::Dict(entries) => entries.iter().for_each(|(k, v)| {
                    literal(k, out);
                    literal(v, out);
                }),
                LiteralData::Tensor(_) => {}
            }
        }
        fn argument<'a>(arg: &'a Argument, out: &mut Vec<(&'a BlobRef, &'a Type, Span)>) {
            match arg {
                Argument::Literal(l) => literal(l, out),
                Argument::Tuple(items, _) => items.iter().for_each(|a| argument(a, out)),
                Argument::Var(_) => {}
            }
        }
        let mut out = Vec::new();
        for a in &self.attributes {
            literal(&a.value, &mut out);
        }
        for f in &self.functions {
            for op in &f.block.operations {
                op.attributes.iter().for_each(|a| literal(&a.value, &mut out));
                op.inputs.iter().for_each(|i| argument(&i.value, &mut out));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("float"), None);
    }

    #[test]
    fn storage_bytes_packs_sub_byte_types() {
        assert_eq!(DType::UInt1.storage_bytes(9), Some(2));
        assert_eq!(DType::Int4.storage_bytes(3), Some(2));
        assert_eq!(DType::UInt6.storage_bytes(4), Some(3));
        assert_eq!(DType::Fp16.storage_bytes(3), Some(6));
        assert_eq!(DType::Fp32.storage_bytes(u64::MAX), None);
        assert_eq!(DType::String.storage_bytes(1), None);
    }

    #[test]
    fn int_ranges() {
        assert_eq!(DType::Int8.int_range(), Some((-128, 127)));
        assert_eq!(DType::UInt4.int_range(), Some((0, 15)));
        assert_eq!(DType::UInt64.int_range(), Some((0, u64::MAX as i128)));
        assert_eq!(DType::Fp16.int_range(), None);
    }

    #[test]
    fn float_data_compares_by_bits() {
        let a = TensorData::F32(vec![0.0, f32::NAN]);
        let b = TensorData::F32(vec![0.0, f32::NAN]);
        let c = TensorData::F32(vec![-0.0, f32::NAN]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn spans_do_not_affect_equality() {
        let a = Ident { name: "x".into(), span: Span::new(3, 4) };
        assert_eq!(a, Ident::new("x"));
        assert_ne!(Ident::new("y"), Ident::new("x"));
    }
}
