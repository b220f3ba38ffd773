//! Hugging Face `.safetensors` files in: the form PyTorch checkpoints are shared in
//! (`safetensors.torch.save_file`, `model.safetensors`), read into named [`Array`]s.
//!
//! A file is an 8-byte little-endian header length N, N bytes of JSON mapping each tensor
//! name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the data that
//! follows the header) plus an optional `"__metadata__"` map of strings, then the data:
//! every tensor's elements little-endian in C order.
//!
//! [`SafeTensors::open`] maps the file (it is read once, by the pages actually touched) and
//! checks the whole header before anything is decoded, with the rules of the reference
//! implementation: the header is at most 100,000,000 bytes of UTF-8 JSON, each tensor's byte
//! range holds exactly its shape's elements, the ranges follow one another from byte 0 with
//! no gap or overlap, and the data ends where the last one does. Names must also be unique
//! (JSON objects could repeat one, which the reference silently collapses). Tensors are then
//! decoded one at a time with [`SafeTensors::array`]: F16 and F32 stay as they are, BF16
//! becomes F32 (exactly), F64 stays F64, I8..I64 and U8..U64 widen to 64 bits, BOOL stays
//! bool. The format's other dtypes (fp8, fp6, fp4, complex) can be listed but not decoded.
//!
//! Every error names the file and, where one is to blame, the tensor; nothing in a hostile
//! file can make the reader panic or allocate for a size the file does not hold.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use anemone_mil::DType;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::npy::{Array, NpyError};

/// The reference implementation's limit on the JSON header.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The key of the free-form string metadata in the header.
const METADATA_KEY: &str = "__metadata__";

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (a PyTorch state-dict key such as `layers.0.attn.q_proj.weight`).
    pub name: String,
    /// The dtype as the file spells it: `F16`, `BF16`, `F32`, `I64`, `BOOL`, ...
    pub dtype: String,
    /// The shape, outermost axis first; empty for a scalar.
    pub shape: Vec<usize>,
    /// The tensor's bytes, as offsets into the whole file.
    pub range: Range<usize>,
}

/// The file's bytes: mapped from disk, or held in memory.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open safetensors file whose header has been checked.
pub struct SafeTensors {
    bytes: Bytes,
    /// The file's path, prefixed to messages; `None` for files read from memory.
    source: Option<String>,
    /// The tensors in data order (the order the reference writer lays them out in).
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeTensors")
            .field("source", &self.source)
            .field("len", &self.bytes.len())
            .field("tensors", &self.tensors)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl SafeTensors {
    /// Maps the file at `path` and checks its header; errors name the file.
    ///
    /// The file must not be truncated or rewritten in place while it is open (replacing it
    /// by rename, as the reference writer and this crate do, is fine): a mapped file that
    /// shrinks under a reader makes it crash on access.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors, NpyError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |e: std::io::Error| NpyError::new(format!("cannot read {shown}: {e}"));
        let file = File::open(path).map_err(io)?;
        let bytes = if file.metadata().map_err(io)?.len() < 8 {
            // Too short to map usefully (and empty files cannot be mapped); the header check
            // reports it.
            Bytes::Owned(std::fs::read(path).map_err(io)?)
        } else {
            // SAFETY: the map is read-only and only ever viewed as `&[u8]`. Rust's aliasing
            // rules hold as long as nobody modifies the file in place while it is mapped; the
            // contract above documents this.
            Bytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        SafeTensors::check(bytes, Some(shown))
    }

    /// Reads a safetensors file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafeTensors, NpyError> {
        SafeTensors::check(Bytes::Owned(bytes), None)
    }

    fn check(bytes: Bytes, source: Option<String>) -> Result<SafeTensors, NpyError> {
        match layout(&bytes) {
            Ok((tensors, metadata)) => Ok(SafeTensors { bytes, source, tensors, metadata }),
            Err(msg) => Err(prefixed(&source, msg)),
        }
    }

    /// Every tensor, in data order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The header's `__metadata__` strings (empty when it has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The little-endian bytes of the tensor called `name`, if there is one.
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|t| &self.bytes[t.range.clone()])
    }

    /// Decodes the tensor called `name` (see the module documentation for the types).
    pub fn array(&self, name: &str) -> Result<Array, NpyError> {
        let Some(t) = self.get(name) else {
            let names: Vec<&str> = self.tensors.iter().take(8).map(|t| t.name.as_str()).collect();
            let more = if self.tensors.len() > names.len() { ", ..." } else { "" };
            return Err(prefixed(
                &self.source,
                format!(
                    "no tensor named `{name}` (it holds {}{more})",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
            ));
        };
        let fail = |msg: String| prefixed(&self.source, format!("tensor `{name}`: {msg}"));
        let dtype = element_type(&t.dtype).ok_or_else(|| {
            fail(format!(
                "{} tensors cannot be read: anemone reads F16, BF16, F32, F64, I8..I64, \
                 U8..U64 and BOOL",
                t.dtype
            ))
        })?;
        Array::from_le_bytes(t.shape.clone(), dtype, &self.bytes[t.range.clone()])
            .map_err(|e| fail(e.to_string()))
    }

    /// Decodes every tensor, in data order.
    pub fn arrays(&self) -> Result<Vec<(String, Array)>, NpyError> {
        self.tensors.iter().map(|t| Ok((t.name.clone(), self.array(&t.name)?))).collect()
    }
}

/// Reads every tensor of the safetensors file at `path`, in data order; errors name the
/// file and the tensor.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<(String, Array)>, NpyError> {
    SafeTensors::open(path)?.arrays()
}

fn prefixed(source: &Option<String>, msg: String) -> NpyError {
    match source {
        Some(s) => NpyError::new(format!("{s}: {msg}")),
        None => NpyError::new(msg),
    }
}

/// The MIL dtype whose little-endian bytes a safetensors dtype shares, for the dtypes
/// [`Array`] holds.
fn element_type(dtype: &str) -> Option<DType> {
    Some(match dtype {
        "BOOL" => DType::Bool,
        "U8" => DType::UInt8,
        "I8" => DType::Int8,
        "U16" => DType::UInt16,
        "I16" => DType::Int16,
        "U32" => DType::UInt32,
        "I32" => DType::Int32,
        "U64" => DType::UInt64,
        "I64" => DType::Int64,
        "F16" => DType::Fp16,
        "BF16" => DType::Bf16,
        "F32" => DType::Fp32,
        "F64" => DType::Fp64,
        _ => return None,
    })
}

/// Bits per element of every dtype the format defines.
fn element_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ"
        | "F8_E5M2FNUZ" => 8,
        "U16" | "I16" | "F16" | "BF16" => 16,
        "U32" | "I32" | "F32" => 32,
        "U64" | "I64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// A header entry as written, before it is checked.
#[derive(serde::Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header: tensors in written order, and the metadata.
struct Header {
    tensors: Vec<(String, RawTensor)>,
    metadata: BTreeMap<String, String>,
}

impl<'de> serde::Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Header, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let mut header = Header { tensors: Vec::new(), metadata: BTreeMap::new() };
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("the name `{key}` appears twice")));
                    }
                    if key == METADATA_KEY {
                        header.metadata = map.next_value().map_err(|e| {
                            de::Error::custom(format!(
                                "`{METADATA_KEY}` must map names to strings: {e}"
                            ))
                        })?;
                    } else {
                        let t = map.next_value::<RawTensor>().map_err(|e| {
                            de::Error::custom(format!(
                                "tensor `{key}`: {e} (each tensor needs a \"dtype\" string, a \
                                 \"shape\" list and two \"data_offsets\")"
                            ))
                        })?;
                        header.tensors.push((key, t));
                    }
                }
                Ok(header)
            }
        }
        deserializer.deserialize_map(HeaderVisitor)
    }
}

type Layout = (Vec<TensorInfo>, BTreeMap<String, String>);

/// Checks the header and the layout of the data; returns the tensors in data order.
fn layout(bytes: &[u8]) -> Result<Layout, String> {
    let len = bytes.len() as u64;
    let Some(head) = bytes.first_chunk::<8>() else {
        return Err(format!(
            "not a safetensors file: {len} bytes, too short for the 8-byte header length"
        ));
    };
    let n = u64::from_le_bytes(*head);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "not a safetensors file: the header length is {n} bytes, above the format's limit \
             of {MAX_HEADER_BYTES}"
        ));
    }
    if n > len - 8 {
        return Err(format!(
            "truncated: the header length is {n} bytes, past the end of the file ({len} bytes)"
        ));
    }
    let data_start = 8 + n as usize;
    let text = std::str::from_utf8(&bytes[8..data_start]).map_err(|e| {
        format!("the header is not UTF-8 text (invalid byte at header offset {})", e.valid_up_to())
    })?;
    let header: Header =
        serde_json::from_str(text).map_err(|e| format!("the header is not valid: {e}"))?;

    let mut tensors = Vec::with_capacity(header.tensors.len());
    for (name, raw) in header.tensors {
        let fail = |msg: String| format!("tensor `{name}`: {msg}");
        let bits = element_bits(&raw.dtype)
            .ok_or_else(|| fail(format!("unknown dtype `{}`", raw.dtype.escape_debug())))?;
        let [begin, end] = raw.data_offsets;
        let count = raw.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let need = count
            .and_then(|c| c.checked_mul(bits))
            .ok_or_else(|| fail(format!("shape {:?} is too large", raw.shape)))?;
        if !need.is_multiple_of(8) {
            return Err(fail(format!(
                "{} {} elements do not fill whole bytes",
                need / bits,
                raw.dtype
            )));
        }
        if end < begin {
            return Err(fail(format!("data_offsets [{begin}, {end}] end before they begin")));
        }
        if end - begin != need / 8 {
            return Err(fail(format!(
                "shape {:?} of {} needs {} bytes, data_offsets [{begin}, {end}] hold {}",
                raw.shape,
                raw.dtype,
                need / 8,
                end - begin
            )));
        }
        let data_len = len - data_start as u64;
        if end > data_len {
            return Err(fail(format!(
                "data_offsets [{begin}, {end}] run past the end of the file: the data after \
                 the header is {data_len} bytes"
            )));
        }
        // Both ends lie inside the file, so they fit in usize.
        let range = data_start + begin as usize..data_start + end as usize;
        let shape = raw
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| fail(format!("shape {:?} is too large", raw.shape)))?;
        tensors.push(TensorInfo { name, dtype: raw.dtype, shape, range });
    }

    tensors.sort_by_key(|t| (t.range.start, t.range.end));
    let mut at = data_start;
    let mut previous: Option<&TensorInfo> = None;
    for t in &tensors {
        let offsets = |t: &TensorInfo| {
            format!("[{}, {}]", t.range.start - data_start, t.range.end - data_start)
        };
        if t.range.start < at {
            let p = previous.map_or(String::new(), |p| format!(" `{}` {}", p.name, offsets(p)));
            return Err(format!(
                "tensor `{}`: data_offsets {} overlap those of tensor{p}",
                t.name,
                offsets(t)
            ));
        }
        if t.range.start > at {
            return Err(format!(
                "tensor `{}`: data_offsets {} leave {} unused bytes before it: tensors must \
                 follow one another",
                t.name,
                offsets(t),
                t.range.start - at
            ));
        }
        at = t.range.end;
        previous = Some(t);
    }
    if at != bytes.len() {
        return Err(format!(
            "{} bytes follow the last tensor's data: the file is longer than its header says",
            bytes.len() - at
        ));
    }
    Ok((tensors, header.metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::Data;

    /// A file of `header` JSON (padded with spaces to a multiple of 8, as the reference
    /// writer does) and `data`.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.as_bytes().to_vec();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn tensors_come_in_data_order_and_decode() {
        let data: Vec<u8> =
            [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).chain([3, 0]).collect();
        let bytes = file(
            r#"{"b":{"dtype":"I16","shape":[],"data_offsets":[8,10]},"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &data,
        );
        let st = SafeTensors::from_bytes(bytes).unwrap();
        let names: Vec<&str> = st.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(st.metadata()["format"], "pt");
        assert_eq!(st.array("a").unwrap().data, Data::F32(vec![1.5, -2.0]));
        let b = st.array("b").unwrap();
        assert_eq!((b.shape.len(), b.data), (0, Data::Int(vec![3])));
        assert!(st.array("c").unwrap_err().message().contains("no tensor named `c`"));
    }

    #[test]
    fn layout_errors_name_the_tensor() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                "tensor `a`: shape [3] of F32 needs 12 bytes, data_offsets [0, 8] hold 8",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                "the name `a` appears twice",
            ),
            (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, "run past the end"),
            (
                r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                "tensor `a`: unknown dtype `Q9`",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                "overlap",
            ),
            (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, "leave 4 unused bytes"),
            (r#"{"a":{"dtype":"F32","shape":[1]}}"#, "tensor `a`: missing field `data_offsets`"),
            (r#"[1]"#, "expected a JSON object"),
        ];
        for (header, want) in cases {
            let e = SafeTensors::from_bytes(file(header, &[0; 8])).unwrap_err();
            assert!(e.message().contains(want), "{header}: {e}");
        }
        let e = SafeTensors::from_bytes(file(r#"{}"#, &[0; 3])).unwrap_err();
        assert!(e.message().contains("3 bytes follow the last tensor"), "{e}");
        let mut huge = file(r#"{}"#, &[]);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            SafeTensors::from_bytes(huge)
                .unwrap_err()
                .message()
                .contains("above the format's limit")
        );
        assert!(SafeTensors::from_bytes(vec![1, 2]).unwrap_err().message().contains("too short"));
    }
}
