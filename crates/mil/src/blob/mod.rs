//! MILBlob v2 weight files (REFERENCE.md §5): the `weight.bin` that BLOBFILE literals point
//! into. This module owns the byte layout: writing conformant files ([`BlobWriter`]), reading
//! and checking them against the types MIL declares ([`BlobFile`]), the dtype codes, and the
//! fp16 conversion that weights go through on their way in.
//!
//! Layout, little-endian:
//! ```text
//! 0    file header, 64 bytes: u32 count, u32 version = 2, zeros
//! 64   record 0, 64 bytes:    u32 0xDEADBEEF, u32 dtype code, u64 size in bytes,
//!                             u64 data offset (= record offset + 64), u64 padding bits, zeros
//! 128  data of blob 0 (size bytes)
//! ...  record 1 at the next multiple of 64, and so on; the file ends with the last data byte
//! ```
//! A BLOBFILE `offset` names the record, not the data.
//!
//! Sub-byte types (int4, uint1..uint6) are packed least significant bits first, as coremltools
//! does; the record's padding bits count the unused high bits of the last byte.

mod convert;
mod read;
mod write;

use std::sync::Arc;

use crate::ir::DType;

pub use convert::{
    f32_to_bf16_bytes, f32_to_fp16_bytes, f64_to_bf16, f64_to_f16, fp16_bytes_to_f32,
};
pub use read::{BlobBytes, BlobFile, BlobHeader, BlobRecord, ReadMode, RecordScan};
pub use write::{BlobWriter, write_file_atomic};

/// Size of the file header.
pub const HEADER_SIZE: u64 = 64;
/// Size of one metadata record.
pub const RECORD_SIZE: u64 = 64;
/// Records start at multiples of this.
pub const ALIGNMENT: u64 = 64;
/// The first four bytes of every record.
pub const SENTINEL: u32 = 0xDEAD_BEEF;
/// The storage version this module reads and writes.
pub const VERSION: u32 = 2;

/// The dtype code a record stores for `dtype`, or None when blobs cannot hold that type
/// (fp64, bool, string, int64, uint64).
pub fn dtype_code(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::Fp16 => 1,
        DType::Fp32 => 2,
        DType::UInt8 => 3,
        DType::Int8 => 4,
        DType::Bf16 => 5,
        DType::Int16 => 6,
        DType::UInt16 => 7,
        DType::Int4 => 8,
        DType::UInt1 => 9,
        DType::UInt2 => 10,
        DType::UInt4 => 11,
        DType::UInt3 => 12,
        DType::UInt6 => 13,
        DType::Int32 => 14,
        DType::UInt32 => 15,
        DType::Fp8E4M3 => 16,
        DType::Fp8E5M2 => 17,
        DType::Fp64 | DType::Bool | DType::String | DType::Int64 | DType::UInt64 => return None,
    })
}

/// The type a record's dtype code stands for, or None for an unknown code.
pub fn dtype_from_code(code: u32) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| dtype_code(d) == Some(code))
}

/// Whether elements of `dtype` share bytes (and so records of it may have padding bits).
pub fn is_sub_byte(dtype: DType) -> bool {
    dtype.bits() > 0 && dtype.bits() < 8
}

/// The number of unused bits at the end of the last byte when `count` elements of `dtype`
/// are packed, or None on overflow or for types without a fixed width.
pub fn padding_bits(dtype: DType, count: u64) -> Option<u64> {
    let bits = count.checked_mul(dtype.bits() as u64)?;
    Some(dtype.storage_bytes(count)? * 8 - bits)
}

/// `x` rounded up to the next multiple of [`ALIGNMENT`], None on overflow.
pub(crate) fn align_up(x: u64) -> Option<u64> {
    Some(x.checked_add(ALIGNMENT - 1)? / ALIGNMENT * ALIGNMENT)
}

fn code_name(code: u32) -> String {
    match dtype_from_code(code) {
        Some(d) => format!("{d} ({code})"),
        None => format!("unknown ({code})"),
    }
}

/// Everything that can be wrong with a blob file or a read from it. Messages say which check
/// failed and with which numbers; offsets are absolute byte offsets in the file.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BlobError {
    /// The file is shorter than the 64-byte header, so it cannot be a blob file at all.
    #[error("the file is {len} bytes long, shorter than the {HEADER_SIZE}-byte blob file header")]
    TooShort {
        /// The file's length in bytes.
        len: u64,
    },
    /// The header's version field is not [`VERSION`] (2); checked in both read modes.
    #[error("the header's storage version is {found}, expected {VERSION}")]
    Version {
        /// The version the header holds.
        found: u32,
    },
    /// A record offset below 64, i.e. inside the file header (the first record is at 64).
    #[error("offset {offset} points into the {HEADER_SIZE}-byte file header; records start at 64")]
    OffsetInHeader {
        /// The offending record offset, in bytes from the start of the file.
        offset: u64,
    },
    /// A record offset that is not a multiple of [`ALIGNMENT`] (strict mode only).
    #[error(
        "offset {offset} is not a multiple of {ALIGNMENT}; records start at 64-byte boundaries"
    )]
    Misaligned {
        /// The offending record offset, in bytes from the start of the file.
        offset: u64,
    },
    /// The 64-byte record at `offset` would run past the end of the file; also returned by a
    /// lenient listing that finds no record at all in a file longer than its header.
    #[error(
        "offset {offset}: a {RECORD_SIZE}-byte record there would end past the end of the file \
         ({file_len} bytes)"
    )]
    OffsetOutOfBounds {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// The record at `offset` does not start with [`SENTINEL`] (0xDEADBEEF): the offset does
    /// not point at a record, or the file is damaged. Checked in both read modes.
    #[error("record at offset {offset}: sentinel is {found:#010x}, expected 0xdeadbeef")]
    Sentinel {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// The first four bytes found there, as a little-endian u32.
        found: u32,
    },
    /// A record's dtype code is none of those [`dtype_from_code`] knows (strict mode).
    #[error("record at offset {offset}: unknown dtype code {code}")]
    UnknownDTypeCode {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// The dtype code the record holds.
        code: u32,
    },
    /// A record's dtype code differs from the dtype the BLOBFILE literal declares (strict
    /// mode).
    #[error(
        "record at offset {offset}: dtype is {}, but MIL declares {expected} (code {})",
        code_name(*found),
        dtype_code(*expected).unwrap_or(0)
    )]
    DTypeMismatch {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// The dtype code the record holds.
        found: u32,
        /// The dtype the MIL type declares.
        expected: DType,
    },
    /// The dtype has no blob dtype code (fp64, bool, string, int64, uint64), so no blob can
    /// hold it: raised when reading a BLOBFILE of such a type, or adding such data to a
    /// [`BlobWriter`].
    #[error("{dtype} has no blob dtype code: blob files cannot hold it")]
    UnsupportedDType {
        /// The dtype asked for.
        dtype: DType,
    },
    /// The declared tensor type's byte size overflows a u64 (a corrupt or absurd shape).
    #[error("the size in bytes of {ty} does not fit in 64 bits")]
    ShapeTooLarge {
        /// The declared type, as MIL text.
        ty: String,
    },
    /// A record's size field differs from the packed byte size of the declared tensor type
    /// (strict mode; lenient reads take the declared size).
    #[error("record at offset {offset}: size is {size} bytes, but {ty} needs {expected} bytes")]
    SizeMismatch {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// The record's size field, in bytes.
        size: u64,
        /// The byte size the declared type needs.
        expected: u64,
        /// The declared type, as MIL text.
        ty: String,
    },
    /// A record's data offset field is not the record offset + 64 (strict mode).
    #[error(
        "record at offset {offset}: data offset is {data_offset}, expected {expected} \
         (record offset + 64)"
    )]
    DataOffsetMismatch {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// The record's data offset field.
        data_offset: u64,
        /// The data offset the format requires (`offset + 64`).
        expected: u64,
    },
    /// The data a record describes (or, in lenient mode, the declared type's bytes after the
    /// record) extends past the end of the file: a truncated file or a wrong size.
    #[error(
        "record at offset {offset}: {size} bytes of data at offset {data_offset} extend past the \
         end of the file ({file_len} bytes)"
    )]
    DataOutOfBounds {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// Where the data starts, in bytes from the start of the file.
        data_offset: u64,
        /// The data's length in bytes.
        size: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// A record's padding-bits field is wrong: non-zero for a whole-byte type, 8 or more (or
    /// not leaving whole elements) for a sub-byte type, or not what the declared element
    /// count needs (strict mode).
    #[error(
        "record at offset {offset}: padding bits is {found}, expected {expected} for {dtype} data \
         of {size} bytes"
    )]
    PaddingBits {
        /// The record offset, in bytes from the start of the file.
        offset: u64,
        /// The record's padding-bits field.
        found: u64,
        /// What was expected, as text (a number, or a description of the allowed values).
        expected: String,
        /// The dtype or declared type the padding was checked for, as MIL text.
        dtype: String,
        /// The record's size field, in bytes.
        size: u64,
    },
    /// A BLOBFILE offset holds something that looks like a record but is not one of the
    /// records a strict walk of the file finds (e.g. a sentinel inside another blob's data).
    #[error(
        "offset {offset} is not the start of any of the {count} records the header announces{}",
        starts_hint(starts)
    )]
    NotARecord {
        /// The offset asked for, in bytes from the start of the file.
        offset: u64,
        /// The record count the header announces.
        count: u32,
        /// The offsets where the file's records do start.
        starts: Vec<u64>,
    },
    /// The file ends before the number of records the header announces (strict mode).
    #[error("the header announces {count} records, but the file holds only {found}")]
    MissingRecords {
        /// The record count the header announces.
        count: u32,
        /// The number of records actually found.
        found: u32,
    },
    /// Another record follows the last one the header counts (strict mode); a writer that
    /// always stores count 1 produces this.
    #[error("the header announces {count} records, but another record follows at offset {offset}")]
    ExtraRecord {
        /// The record count the header announces.
        count: u32,
        /// Where the uncounted record starts, in bytes from the start of the file.
        offset: u64,
    },
    /// Bytes after the last record's data that are not just zero padding to the next 64-byte
    /// boundary (strict mode).
    #[error(
        "{len} unexpected bytes at offset {offset} after the last record's data (file is \
         {file_len} bytes)"
    )]
    TrailingBytes {
        /// Where the unexpected bytes start (the end of the last record's data).
        offset: u64,
        /// How many bytes follow.
        len: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// Raw bytes are not the packed size of the element count given (to
    /// [`BlobWriter::add_raw`]), or too short for it (to [`unpack_sub_byte`]).
    #[error("{count} elements of {dtype} take {expected} bytes, but {found} bytes were given")]
    ElementCount {
        /// The element type.
        dtype: DType,
        /// The number of elements.
        count: u64,
        /// The bytes `count` elements take, densely packed.
        expected: u64,
        /// The bytes that were given.
        found: u64,
    },
    /// A value to pack into a sub-byte type lies outside that type's range.
    #[error("element {index} is {value}, outside the range of {dtype} ({min}..={max})")]
    ValueOutOfRange {
        /// The sub-byte type.
        dtype: DType,
        /// The element's index in the input.
        index: usize,
        /// The element's value.
        value: i64,
        /// The smallest value the type holds.
        min: i64,
        /// The largest value the type holds.
        max: i64,
    },
    /// A sub-byte packing operation was asked for a type of 8 bits or more (or a string).
    #[error("{dtype} is not a sub-byte type")]
    NotSubByte {
        /// The dtype asked for.
        dtype: DType,
    },
    /// A file or record offset would overflow u64 (or a record count u32) while writing or
    /// walking the file.
    #[error("the blob file would exceed 2^64 bytes")]
    FileTooLarge,
    /// Reading, mapping or writing the file failed at the operating-system level.
    #[error("{path}: {source}")]
    Io {
        /// The file's path, as given.
        path: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

fn starts_hint(starts: &[u64]) -> String {
    if starts.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = starts.iter().take(8).map(u64::to_string).collect();
    let more = if starts.len() > 8 { ", ..." } else { "" };
    format!(" (records start at {}{more})", shown.join(", "))
}

impl BlobError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> BlobError {
        BlobError::Io { path: path.display().to_string(), source: Arc::new(e) }
    }

    /// A stable identifier for diagnostics, e.g. `blob::sentinel`.
    pub fn code(&self) -> &'static str {
        match self {
            BlobError::TooShort { .. } | BlobError::Version { .. } => "blob::header",
            BlobError::OffsetInHeader { .. }
            | BlobError::OffsetOutOfBounds { .. }
            | BlobError::DataOutOfBounds { .. } => "blob::out-of-bounds",
            BlobError::Misaligned { .. } => "blob::misaligned",
            BlobError::Sentinel { .. } => "blob::sentinel",
            BlobError::UnknownDTypeCode { .. } | BlobError::DTypeMismatch { .. } => {
                "blob::dtype-mismatch"
            }
            BlobError::UnsupportedDType { .. } | BlobError::NotSubByte { .. } => {
                "blob::unsupported-dtype"
            }
            BlobError::ShapeTooLarge { .. }
            | BlobError::SizeMismatch { .. }
            | BlobError::ElementCount { .. }
            | BlobError::FileTooLarge => "blob::size-mismatch",
            BlobError::DataOffsetMismatch { .. } => "blob::data-offset",
            BlobError::PaddingBits { .. } => "blob::padding-bits",
            BlobError::NotARecord { .. }
            | BlobError::MissingRecords { .. }
            | BlobError::ExtraRecord { .. } => "blob::count",
            BlobError::TrailingBytes { .. } => "blob::trailing-bytes",
            BlobError::ValueOutOfRange { .. } => "blob::value-out-of-range",
            BlobError::Io { .. } => "blob::io",
        }
    }
}

/// Packs sub-byte values (int4 two's complement, uint1..uint6) least significant bits first.
/// Values must lie in the type's range.
pub fn pack_sub_byte(dtype: DType, values: &[i8]) -> Result<Vec<u8>, BlobError> {
    if !is_sub_byte(dtype) {
        return Err(BlobError::NotSubByte { dtype });
    }
    let bits = dtype.bits() as usize;
    let (min, max) = dtype.int_range().map(|(a, b)| (a as i64, b as i64)).unwrap_or((0, 0));
    let bytes = dtype.storage_bytes(values.len() as u64).ok_or(BlobError::FileTooLarge)?;
    let mut out = vec![0u8; bytes as usize];
    let mask = (1u16 << bits) - 1;
    for (i, &v) in values.iter().enumerate() {
        if (v as i64) < min || (v as i64) > max {
            return Err(BlobError::ValueOutOfRange { dtype, index: i, value: v as i64, min, max });
        }
        let pattern = (v as u8 as u16) & mask;
        let bit = i * bits;
        let (byte, shift) = (bit / 8, bit % 8);
        let word = pattern << shift;
        out[byte] |= word as u8;
        if shift + bits > 8 {
            out[byte + 1] |= (word >> 8) as u8;
        }
    }
    Ok(out)
}

/// Unpacks `count` sub-byte values from `bytes` (the inverse of [`pack_sub_byte`]); int4 is
/// sign-extended. Fails when `bytes` is too short for `count` elements.
pub fn unpack_sub_byte(dtype: DType, bytes: &[u8], count: u64) -> Result<Vec<i8>, BlobError> {
    if !is_sub_byte(dtype) {
        return Err(BlobError::NotSubByte { dtype });
    }
    let needed = dtype.storage_bytes(count).ok_or(BlobError::FileTooLarge)?;
    if (bytes.len() as u64) < needed {
        return Err(BlobError::ElementCount {
            dtype,
            count,
            expected: needed,
            found: bytes.len() as u64,
        });
    }
    let bits = dtype.bits() as usize;
    let mask = (1u16 << bits) - 1;
    let signed = dtype.is_signed_int();
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let bit = i * bits;
        let (byte, shift) = (bit / 8, bit % 8);
        let lo = bytes[byte] as u16;
        let hi = if shift + bits > 8 { bytes[byte + 1] as u16 } else { 0 };
        let pattern = ((lo | (hi << 8)) >> shift) & mask;
        let v = if signed && pattern & (1 << (bits - 1)) != 0 {
            (pattern as i16 - (1i16 << bits)) as i8
        } else {
            pattern as i8
        };
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_match_the_format() {
        let expected = [
            (DType::Fp16, 1),
            (DType::Fp32, 2),
            (DType::UInt8, 3),
            (DType::Int8, 4),
            (DType::Bf16, 5),
            (DType::Int16, 6),
            (DType::UInt16, 7),
            (DType::Int4, 8),
            (DType::UInt1, 9),
            (DType::UInt2, 10),
            (DType::UInt4, 11),
            (DType::UInt3, 12),
            (DType::UInt6, 13),
            (DType::Int32, 14),
            (DType::UInt32, 15),
            (DType::Fp8E4M3, 16),
            (DType::Fp8E5M2, 17),
        ];
        for (d, code) in expected {
            assert_eq!(dtype_code(d), Some(code), "{d}");
            assert_eq!(dtype_from_code(code), Some(d));
        }
        let with_code = DType::ALL.iter().filter(|&&d| dtype_code(d).is_some()).count();
        assert_eq!(with_code, expected.len());
        assert_eq!(dtype_from_code(0), None);
        assert_eq!(dtype_from_code(18), None);
        assert_eq!(dtype_code(DType::Fp64), None);
    }

    #[test]
    fn padding_bits_count_unused_high_bits() {
        assert_eq!(padding_bits(DType::Int4, 3), Some(4));
        assert_eq!(padding_bits(DType::UInt3, 5), Some(1));
        assert_eq!(padding_bits(DType::UInt6, 4), Some(0));
        assert_eq!(padding_bits(DType::Fp16, 3), Some(0));
        assert_eq!(padding_bits(DType::Fp32, u64::MAX), None);
    }

    #[test]
    fn sub_byte_packing_is_lsb_first() {
        // The same bytes coremltools writes for these values.
        assert_eq!(pack_sub_byte(DType::Int4, &[1, 2, 3]).unwrap(), [0x21, 0x03]);
        assert_eq!(pack_sub_byte(DType::UInt3, &[1, 2, 3, 7, 5]).unwrap(), [0xd1, 0x5e]);
        assert_eq!(pack_sub_byte(DType::Int4, &[-1, -8]).unwrap(), [0x8f]);
        assert_eq!(pack_sub_byte(DType::UInt1, &[1, 0, 1, 1, 0, 0, 0, 0, 1]).unwrap(), [0x0d, 1]);
        assert_eq!(pack_sub_byte(DType::UInt6, &[63, 1]).unwrap(), [0x7f, 0x00]);
    }

    #[test]
    fn sub_byte_round_trips_and_refuses_out_of_range() {
        for d in [DType::Int4, DType::UInt1, DType::UInt2, DType::UInt3, DType::UInt4, DType::UInt6]
        {
            let (min, max) = d.int_range().unwrap();
            let values: Vec<i8> =
                (0..37).map(|i| (min + (i * 7) % (max - min + 1)) as i8).collect();
            let packed = pack_sub_byte(d, &values).unwrap();
            assert_eq!(packed.len() as u64, d.storage_bytes(37).unwrap());
            assert_eq!(unpack_sub_byte(d, &packed, 37).unwrap(), values, "{d}");
            let err = pack_sub_byte(d, &[(max + 1) as i8]).unwrap_err();
            assert!(matches!(err, BlobError::ValueOutOfRange { index: 0, .. }), "{err}");
        }
        assert!(pack_sub_byte(DType::Int8, &[1]).is_err());
        assert!(unpack_sub_byte(DType::Int4, &[0], 3).is_err());
    }
}
