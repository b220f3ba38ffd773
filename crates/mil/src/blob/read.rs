//! Reading blob files: [`BlobFile`] holds a file's bytes (in memory or mapped), lists its
//! records and hands out the data a BLOBFILE literal refers to after checking it against the
//! type MIL declares. Nothing here panics or allocates in proportion to a size field, whatever
//! the bytes say.

use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::{
    ALIGNMENT, BlobError, HEADER_SIZE, RECORD_SIZE, SENTINEL, VERSION, align_up, dtype_code,
    dtype_from_code, is_sub_byte, padding_bits,
};
use crate::ir::{DType, TensorType};

/// How much of the format a read insists on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ReadMode {
    /// Every field must be as the format says and agree with the MIL declaration.
    #[default]
    Strict,
    /// What hand-written producers such as maderix's generators need, and what the ANE
    /// compiler appears to accept: the header's count, the record's dtype, size, data offset
    /// and padding fields, and the 64-byte alignment are not checked; the declared byte size
    /// of the MIL type is read at record offset + 64. The header version, the sentinel and
    /// the file's bounds are still checked.
    Lenient,
}

/// The bytes of a blob file, cheap to clone and shareable between threads: an owned buffer
/// or a read-only memory map.
#[derive(Clone)]
pub struct BlobBytes(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl BlobBytes {
    /// The file's bytes.
    pub fn as_slice(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl Deref for BlobBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for BlobBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for BlobBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobBytes({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for BlobBytes {
    fn from(v: Vec<u8>) -> BlobBytes {
        BlobBytes(Arc::new(v))
    }
}

impl From<Arc<[u8]>> for BlobBytes {
    fn from(v: Arc<[u8]>) -> BlobBytes {
        BlobBytes(Arc::new(v))
    }
}

impl From<&[u8]> for BlobBytes {
    fn from(v: &[u8]) -> BlobBytes {
        BlobBytes::from(v.to_vec())
    }
}

impl From<memmap2::Mmap> for BlobBytes {
    fn from(m: memmap2::Mmap) -> BlobBytes {
        BlobBytes(Arc::new(m))
    }
}

/// The file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// Number of records the file says it holds.
    pub count: u32,
    /// The storage version field; [`VERSION`](super::VERSION) (2) in a valid file.
    pub version: u32,
}

/// One metadata record, its fields as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRecord {
    /// Position in the file, 0 for the first record.
    pub index: usize,
    /// Where the record starts: the number a BLOBFILE offset names.
    pub metadata_offset: u64,
    /// The element type's code as stored (see [`dtype_code`](super::dtype_code)).
    pub dtype_code: u32,
    /// Data size in bytes.
    pub size: u64,
    /// Absolute offset of the data.
    pub data_offset: u64,
    /// Unused bits at the end of the last data byte (sub-byte types).
    pub padding_bits: u64,
}

impl BlobRecord {
    /// The element type, None for an unknown code.
    pub fn dtype(&self) -> Option<DType> {
        dtype_from_code(self.dtype_code)
    }

    /// The number of elements the size and padding fields describe, None when they do not
    /// describe a whole number of elements of a known type.
    pub fn element_count(&self) -> Option<u64> {
        let bits = self.dtype()?.bits() as u64;
        let used = self.size.checked_mul(8)?.checked_sub(self.padding_bits)?;
        (used % bits == 0).then_some(used / bits)
    }
}

/// The records found by walking a file, and the problem that stopped the walk, if any.
#[derive(Clone, Debug, Default)]
pub struct RecordScan {
    /// The records found, in file order.
    pub records: Vec<BlobRecord>,
    /// Why the walk ended early; None when the whole file was understood.
    pub error: Option<String>,
    /// The error's diagnostic code (see [`BlobError::code`]).
    pub error_code: Option<&'static str>,
}

/// A blob file's bytes plus what has been learned about them.
///
/// Construction never fails; every question asked of the file checks what it needs and
/// answers with a [`BlobError`] naming the failed check.
///
/// ```
/// use anemone_mil::blob::{BlobError, BlobFile, BlobWriter, ReadMode};
/// use anemone_mil::{DType, TensorType};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("weight.bin");
/// let mut w = BlobWriter::new();
/// let offset = w.add_f32_as_fp16(&[0.5, -2.0, 3.0]);
/// w.write_to(&path)?;
///
/// let file = BlobFile::map(&path)?;
/// let records = file.records(ReadMode::Strict)?;
/// assert_eq!(records.len(), 1);
/// assert_eq!(records[0].metadata_offset, offset);
/// assert_eq!((records[0].dtype(), records[0].size), (Some(DType::Fp16), 6));
///
/// // A BLOBFILE literal `tensor<fp16, [3]>(BLOBFILE(..., offset = uint64(64)))` reads:
/// let data = file.read(offset, &TensorType::new(DType::Fp16, [3]), ReadMode::Strict)?;
/// assert_eq!(data, [0x00, 0x38, 0x00, 0xc0, 0x00, 0x42]);
///
/// // Declaring the wrong type is caught.
/// let wrong = file.read(offset, &TensorType::new(DType::Fp32, [3]), ReadMode::Strict);
/// assert!(matches!(wrong, Err(BlobError::DTypeMismatch { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BlobFile {
    bytes: BlobBytes,
    /// The strict walk over all records, done once on first need.
    strict_walk: OnceLock<(Vec<BlobRecord>, Option<BlobError>)>,
}

impl Clone for BlobFile {
    fn clone(&self) -> BlobFile {
        BlobFile { bytes: self.bytes.clone(), strict_walk: OnceLock::new() }
    }
}

impl fmt::Debug for BlobFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobFile").field("len", &self.bytes.len()).finish()
    }
}

fn u32_at(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl BlobFile {
    /// Wraps bytes already in memory (a `Vec<u8>`, a `&[u8]`, an `Arc<[u8]>` or a memory map).
    /// Nothing is checked until the file is asked something.
    pub fn new(bytes: impl Into<BlobBytes>) -> BlobFile {
        BlobFile { bytes: bytes.into(), strict_walk: OnceLock::new() }
    }

    /// Reads the whole file into memory.
    pub fn open(path: impl AsRef<Path>) -> Result<BlobFile, BlobError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| BlobError::io(path, e))?;
        Ok(BlobFile::new(bytes))
    }

    /// Maps the file into memory read-only instead of reading it: cheap for large files.
    ///
    /// The mapping shows the file as it is on disk for as long as the `BlobFile` lives. Files
    /// replaced through [`super::write_file_atomic`] (or any rename) are safe: the mapping
    /// keeps the old contents. A file truncated or rewritten in place meanwhile changes under
    /// the mapping (and truncation makes the process crash on access): use [`BlobFile::open`]
    /// when other programs may do that.
    pub fn map(path: impl AsRef<Path>) -> Result<BlobFile, BlobError> {
        let path = path.as_ref();
        let io = |e| BlobError::io(path, e);
        let file = std::fs::File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.len() < HEADER_SIZE {
            // Too small to be worth mapping; reading reports the short file as usual.
            return BlobFile::open(path);
        }
        // SAFETY: the map is read-only and only ever viewed as `&[u8]`. Rust's aliasing rules
        // hold as long as nobody modifies the file in place while it is mapped; the contract
        // above documents this, and this crate only ever replaces weight files by rename.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(BlobFile::new(map))
    }

    /// The whole file, header included.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A shared handle to the bytes.
    pub fn shared_bytes(&self) -> BlobBytes {
        self.bytes.clone()
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the file has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The header's fields (the version is not checked here).
    pub fn header(&self) -> Result<BlobHeader, BlobError> {
        let b = self.bytes();
        if (b.len() as u64) < HEADER_SIZE {
            return Err(BlobError::TooShort { len: b.len() as u64 });
        }
        Ok(BlobHeader { count: u32_at(b, 0), version: u32_at(b, 4) })
    }

    fn checked_header(&self) -> Result<BlobHeader, BlobError> {
        let h = self.header()?;
        if h.version != VERSION {
            return Err(BlobError::Version { found: h.version });
        }
        Ok(h)
    }

    /// The raw fields of the record at `offset`, checking only that the 64 bytes lie in the
    /// file and start with the sentinel.
    pub fn record_at(&self, offset: u64) -> Result<BlobRecord, BlobError> {
        let b = self.bytes();
        let file_len = b.len() as u64;
        if offset < HEADER_SIZE {
            return Err(BlobError::OffsetInHeader { offset });
        }
        match offset.checked_add(RECORD_SIZE) {
            Some(end) if end <= file_len => {}
            _ => return Err(BlobError::OffsetOutOfBounds { offset, file_len }),
        }
        let sentinel = u32_at(b, offset);
        if sentinel != SENTINEL {
            return Err(BlobError::Sentinel { offset, found: sentinel });
        }
        Ok(BlobRecord {
            index: 0,
            metadata_offset: offset,
            dtype_code: u32_at(b, offset + 4),
            size: u64_at(b, offset + 8),
            data_offset: u64_at(b, offset + 16),
            padding_bits: u64_at(b, offset + 24),
        })
    }

    /// Checks one record's own fields against the format (not against any MIL type).
    fn check_record_strict(&self, offset: u64) -> Result<BlobRecord, BlobError> {
        if offset >= HEADER_SIZE && !offset.is_multiple_of(ALIGNMENT) {
            return Err(BlobError::Misaligned { offset });
        }
        let r = self.record_at(offset)?;
        let dtype = r.dtype().ok_or(BlobError::UnknownDTypeCode { offset, code: r.dtype_code })?;
        let expected_data = offset + RECORD_SIZE;
        if r.data_offset != expected_data {
            return Err(BlobError::DataOffsetMismatch {
                offset,
                data_offset: r.data_offset,
                expected: expected_data,
            });
        }
        self.check_data_range(offset, r.data_offset, r.size)?;
        let padding_ok = if is_sub_byte(dtype) {
            r.padding_bits < 8 && (r.size > 0 || r.padding_bits == 0) && r.element_count().is_some()
        } else {
            r.padding_bits == 0
        };
        if !padding_ok {
            let expected = if is_sub_byte(dtype) {
                format!("a value below 8 leaving whole {}-bit elements", dtype.bits())
            } else {
                "0".to_string()
            };
            return Err(BlobError::PaddingBits {
                offset,
                found: r.padding_bits,
                expected,
                dtype: dtype.to_string(),
                size: r.size,
            });
        }
        Ok(r)
    }

    fn check_data_range(&self, offset: u64, data_offset: u64, size: u64) -> Result<(), BlobError> {
        let file_len = self.len();
        match data_offset.checked_add(size) {
            Some(end) if end <= file_len => Ok(()),
            _ => Err(BlobError::DataOutOfBounds { offset, data_offset, size, file_len }),
        }
    }

    fn strict_walk(&self) -> &(Vec<BlobRecord>, Option<BlobError>) {
        self.strict_walk.get_or_init(|| {
            let mut records = Vec::new();
            let err = self.walk_strict(&mut records).err();
            (records, err)
        })
    }

    fn walk_strict(&self, records: &mut Vec<BlobRecord>) -> Result<(), BlobError> {
        let header = self.checked_header()?;
        let file_len = self.len();
        let mut pos = HEADER_SIZE;
        let mut data_end = HEADER_SIZE;
        for index in 0..header.count as usize {
            if pos >= file_len {
                return Err(BlobError::MissingRecords { count: header.count, found: index as u32 });
            }
            let mut r = self.check_record_strict(pos)?;
            r.index = index;
            records.push(r);
            // In bounds: checked against the file length.
            data_end = r.data_offset + r.size;
            pos = align_up(data_end).ok_or(BlobError::FileTooLarge)?;
        }
        if data_end < file_len {
            if pos.checked_add(4).is_some_and(|e| e <= file_len)
                && u32_at(self.bytes(), pos) == SENTINEL
            {
                return Err(BlobError::ExtraRecord { count: header.count, offset: pos });
            }
            let tail = &self.bytes()[data_end as usize..];
            let is_padding = (tail.len() as u64) < ALIGNMENT && tail.iter().all(|&b| b == 0);
            if !is_padding {
                return Err(BlobError::TrailingBytes {
                    offset: data_end,
                    len: file_len - data_end,
                    file_len,
                });
            }
        }
        Ok(())
    }

    /// Every record, in file order. Strict: the header is checked, exactly `count` records
    /// must follow one another as the format lays them out, each with valid fields, and
    /// nothing but alignment zeros may follow the last one. Lenient: see [`BlobFile::scan`].
    pub fn records(&self, mode: ReadMode) -> Result<Vec<BlobRecord>, BlobError> {
        match mode {
            ReadMode::Strict => {
                let (records, err) = self.strict_walk();
                match err {
                    Some(e) => Err(e.clone()),
                    None => Ok(records.clone()),
                }
            }
            ReadMode::Lenient => self.lenient_walk(),
        }
    }

    /// Like [`BlobFile::records`], but keeps the records found before a problem, for
    /// listings that show as much as they can.
    pub fn scan(&self, mode: ReadMode) -> RecordScan {
        let (records, err) = match mode {
            ReadMode::Strict => {
                let (records, err) = self.strict_walk();
                (records.clone(), err.clone())
            }
            ReadMode::Lenient => {
                let mut records = Vec::new();
                let err = self.lenient_walk_into(&mut records).err();
                (records, err)
            }
        };
        RecordScan {
            records,
            error_code: err.as_ref().map(BlobError::code),
            error: err.map(|e| e.to_string()),
        }
    }

    fn lenient_walk(&self) -> Result<Vec<BlobRecord>, BlobError> {
        let mut records = Vec::new();
        self.lenient_walk_into(&mut records)?;
        Ok(records)
    }

    /// Lenient listing: records are found at 64-byte boundaries by their sentinel, whatever
    /// the header's count says. A record whose size field fits in the file is skipped over
    /// (its data is not searched); otherwise the search goes on at the next boundary, so a
    /// file with wrong size fields still lists every record (unless its data happens to hold
    /// the sentinel at a boundary).
    fn lenient_walk_into(&self, records: &mut Vec<BlobRecord>) -> Result<(), BlobError> {
        self.checked_header()?;
        let file_len = self.len();
        let mut pos = HEADER_SIZE;
        while pos.checked_add(RECORD_SIZE).is_some_and(|e| e <= file_len) {
            match self.record_at(pos) {
                Ok(mut r) => {
                    r.index = records.len();
                    records.push(r);
                    let data_start = pos + RECORD_SIZE;
                    let fits = data_start.checked_add(r.size).is_some_and(|e| e <= file_len);
                    pos = if fits {
                        align_up(data_start + r.size).unwrap_or(u64::MAX)
                    } else {
                        data_start
                    };
                }
                Err(e @ BlobError::Sentinel { .. }) if records.is_empty() => return Err(e),
                Err(_) => pos += ALIGNMENT,
            }
        }
        if records.is_empty() && file_len > HEADER_SIZE {
            return Err(BlobError::OffsetOutOfBounds { offset: HEADER_SIZE, file_len });
        }
        Ok(())
    }

    /// The data a BLOBFILE literal of type `expected` at `offset` refers to, after checking
    /// it (see [`ReadMode`] for which checks each mode makes). The slice is exactly the
    /// declared type's packed byte size.
    pub fn read(
        &self,
        offset: u64,
        expected: &TensorType,
        mode: ReadMode,
    ) -> Result<&[u8], BlobError> {
        let expected_code = dtype_code(expected.dtype)
            .ok_or(BlobError::UnsupportedDType { dtype: expected.dtype })?;
        let declared = expected
            .byte_size()
            .ok_or_else(|| BlobError::ShapeTooLarge { ty: expected.to_string() })?;
        let header = self.checked_header()?;
        match mode {
            ReadMode::Lenient => {
                self.record_at(offset)?;
                let data_offset = offset + RECORD_SIZE;
                self.check_data_range(offset, data_offset, declared)?;
                Ok(&self.bytes()[data_offset as usize..(data_offset + declared) as usize])
            }
            ReadMode::Strict => {
                if offset < HEADER_SIZE {
                    return Err(BlobError::OffsetInHeader { offset });
                }
                if !offset.is_multiple_of(ALIGNMENT) {
                    return Err(BlobError::Misaligned { offset });
                }
                let r = self.record_at(offset)?;
                if r.dtype_code != expected_code {
                    return Err(BlobError::DTypeMismatch {
                        offset,
                        found: r.dtype_code,
                        expected: expected.dtype,
                    });
                }
                if r.size != declared {
                    return Err(BlobError::SizeMismatch {
                        offset,
                        size: r.size,
                        expected: declared,
                        ty: expected.to_string(),
                    });
                }
                let r = self.check_record_strict(offset)?;
                let count = expected.checked_element_count().unwrap_or(0) as u64;
                let expected_padding = padding_bits(expected.dtype, count).unwrap_or(0);
                if r.padding_bits != expected_padding {
                    return Err(BlobError::PaddingBits {
                        offset,
                        found: r.padding_bits,
                        expected: expected_padding.to_string(),
                        dtype: expected.to_string(),
                        size: r.size,
                    });
                }
                let (records, walk_err) = self.strict_walk();
                if !records.iter().any(|k| k.metadata_offset == offset) {
                    return Err(match walk_err {
                        Some(e) if records.last().is_none_or(|l| l.metadata_offset < offset) => {
                            e.clone()
                        }
                        _ => BlobError::NotARecord {
                            offset,
                            count: header.count,
                            starts: records.iter().map(|k| k.metadata_offset).collect(),
                        },
                    });
                }
                Ok(&self.bytes()[r.data_offset as usize..(r.data_offset + r.size) as usize])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobWriter;

    fn fp16(shape: &[usize]) -> TensorType {
        TensorType::new(DType::Fp16, shape)
    }

    /// A file built field by field from the format description: an fp16 [2, 2] blob and an
    /// int4 [3] blob.
    fn handmade() -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[0] = 2; // count
        f[4] = 2; // version
        // record 0 at 64
        let mut r = vec![0u8; 64];
        r[0..4].copy_from_slice(&[0xEF, 0xBE, 0xAD, 0xDE]);
        r[4] = 1; // fp16
        r[8] = 8; // size
        r[16] = 128; // data offset
        f.extend_from_slice(&r);
        f.extend_from_slice(&[0x00, 0x3c, 0x00, 0x40, 0x00, 0x42, 0x00, 0x44]); // 1 2 3 4
        f.resize(192, 0);
        let mut r = vec![0u8; 64];
        r[0..4].copy_from_slice(&[0xEF, 0xBE, 0xAD, 0xDE]);
        r[4] = 8; // int4
        r[8] = 2; // size
        r[16] = 0; // data offset 256 = 0x100
        r[17] = 1;
        r[24] = 4; // padding bits
        f.extend_from_slice(&r);
        f.extend_from_slice(&[0x21, 0x03]);
        f
    }

    #[test]
    fn reads_a_handmade_file() {
        let f = BlobFile::new(handmade());
        assert_eq!(f.header().unwrap(), BlobHeader { count: 2, version: 2 });
        let recs = f.records(ReadMode::Strict).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[1],
            BlobRecord {
                index: 1,
                metadata_offset: 192,
                dtype_code: 8,
                size: 2,
                data_offset: 256,
                padding_bits: 4
            }
        );
        assert_eq!(recs[0].element_count(), Some(4));
        assert_eq!(recs[1].element_count(), Some(3));
        let d = f.read(64, &fp16(&[2, 2]), ReadMode::Strict).unwrap();
        assert_eq!(d, &[0x00, 0x3c, 0x00, 0x40, 0x00, 0x42, 0x00, 0x44]);
        let d = f.read(192, &TensorType::new(DType::Int4, [3]), ReadMode::Strict).unwrap();
        assert_eq!(d, &[0x21, 0x03]);
    }

    #[test]
    fn writer_output_is_byte_identical_to_the_handmade_file() {
        let mut w = BlobWriter::new();
        w.add_f32_as_fp16(&[1.0, 2.0, 3.0, 4.0]);
        w.add_sub_byte(DType::Int4, &[1, 2, 3]).unwrap();
        assert_eq!(w.finish(), handmade());
    }

    #[test]
    fn writer_offsets_match_the_real_programs() {
        // fixtures 02: three 64x64 fp16 weights; 09: three 256x256 int8 weights.
        let mut w = BlobWriter::new();
        let offs: Vec<u64> = (0..3).map(|_| w.add_f16(&vec![half::f16::ONE; 64 * 64])).collect();
        assert_eq!(offs, [64, 8320, 16576]);
        let mut w = BlobWriter::new();
        let offs: Vec<u64> = (0..3).map(|_| w.add_i8(&vec![1; 256 * 256])).collect();
        assert_eq!(offs, [64, 65664, 131264]);
    }

    /// The seed program's blob: count 1, u32 size at 72 and data offset at 80 in a zeroed
    /// buffer, data at 128. It is a conformant file.
    #[test]
    fn reads_the_seed_blob_strictly() {
        let ws = 64 * 64 * 2;
        let mut b = vec![0u8; 128 + ws];
        b[0] = 1;
        b[4] = 2;
        b[64..68].copy_from_slice(&[0xEF, 0xBE, 0xAD, 0xDE]);
        b[68] = 1;
        b[72..76].copy_from_slice(&(ws as u32).to_le_bytes());
        b[80..84].copy_from_slice(&128u32.to_le_bytes());
        let f = BlobFile::new(b);
        let d = f.read(64, &fp16(&[64, 64, 1, 1]), ReadMode::Strict).unwrap();
        assert_eq!(d.len(), ws);
        assert_eq!(f.records(ReadMode::Strict).unwrap().len(), 1);
    }

    /// What maderix's int8 benchmark writes: count 1 for several blobs, every record marked
    /// fp16 with a size field that is neither the int8 nor the fp16 size, data offset 0.
    fn maderix_int8(ch: usize, depth: usize) -> Vec<u8> {
        let wsize = ch * ch;
        let chunk = 64 + wsize;
        let mut b = vec![0u8; 64 + chunk * depth];
        b[0] = 1;
        b[4] = 2;
        for i in 0..depth {
            let c = 64 + i * chunk;
            b[c..c + 4].copy_from_slice(&[0xEF, 0xBE, 0xAD, 0xDE]);
            b[c + 4] = 1;
            b[c + 10] = 0x08;
            for j in 0..wsize {
                b[c + 64 + j] = (j % 251) as u8;
            }
        }
        b
    }

    #[test]
    fn maderix_int8_files_need_lenient_mode() {
        let f = BlobFile::new(maderix_int8(256, 3));
        let ty = TensorType::new(DType::Int8, [256, 256, 1, 1]);
        let e = f.read(64, &ty, ReadMode::Strict).unwrap_err();
        assert_eq!(
            e.to_string(),
            "record at offset 64: dtype is fp16 (1), but MIL declares int8 (code 4)"
        );
        assert_eq!(e.code(), "blob::dtype-mismatch");
        for off in [64, 65664, 131264] {
            let d = f.read(off, &ty, ReadMode::Lenient).unwrap();
            assert_eq!(d.len(), 65536);
            assert_eq!(d[1], 1);
        }
        let e = f.records(ReadMode::Strict).unwrap_err();
        assert_eq!(
            e.to_string(),
            "record at offset 64: data offset is 0, expected 128 (record offset + 64)"
        );
        let recs = f.records(ReadMode::Lenient).unwrap();
        let offs: Vec<u64> = recs.iter().map(|r| r.metadata_offset).collect();
        assert_eq!(offs, [64, 65664, 131264]);
        assert_eq!(recs[0].size, 0x08_0000);
        // Lenient still checks the sentinel and the bounds.
        let e = f.read(128, &ty, ReadMode::Lenient).unwrap_err();
        assert!(matches!(e, BlobError::Sentinel { offset: 128, found: 0x0302_0100 }), "{e}");
        let e = f.read(131264, &TensorType::new(DType::Int8, [256, 257]), ReadMode::Lenient);
        assert!(matches!(e, Err(BlobError::DataOutOfBounds { .. })));
    }

    #[test]
    fn count_one_with_three_records_is_refused_strictly() {
        let mut w = BlobWriter::new();
        for _ in 0..3 {
            w.add_f16(&vec![half::f16::ONE; 64 * 64]);
        }
        let mut b = w.finish();
        b[0] = 1;
        let f = BlobFile::new(b);
        let ty = fp16(&[64, 64, 1, 1]);
        assert!(f.read(64, &ty, ReadMode::Strict).is_ok());
        let e = f.read(8320, &ty, ReadMode::Strict).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the header announces 1 records, but another record follows at offset 8320"
        );
        assert!(f.read(16576, &ty, ReadMode::Lenient).is_ok());
        assert_eq!(f.records(ReadMode::Lenient).unwrap().len(), 3);
    }

    fn assert_err(r: Result<&[u8], BlobError>, code: &str, text: &str) {
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(text), "{e:?} / {e}");
    }

    #[test]
    fn each_strict_check_says_what_failed() {
        let good = handmade();
        let ty = fp16(&[2, 2]);
        let s = ReadMode::Strict;
        let f = BlobFile::new(good.clone());
        assert_err(f.read(0, &ty, s), "blob::out-of-bounds", "offset 0 points into the 64-byte");
        assert_err(f.read(100, &ty, s), "blob::misaligned", "offset 100 is not a multiple of 64");
        assert_err(
            f.read(256, &ty, s),
            "blob::out-of-bounds",
            "would end past the end of the file (258 bytes)",
        );
        assert_err(
            f.read(128, &ty, s),
            "blob::sentinel",
            "sentinel is 0x40003c00, expected 0xdeadbeef",
        );
        assert_err(
            f.read(64, &TensorType::new(DType::Fp32, [2]), s),
            "blob::dtype-mismatch",
            "dtype is fp16 (1), but MIL declares fp32 (code 2)",
        );
        assert_err(
            f.read(64, &fp16(&[2, 3]), s),
            "blob::size-mismatch",
            "size is 8 bytes, but tensor<fp16, [2, 3]> needs 12 bytes",
        );
        assert_err(
            f.read(64, &TensorType::new(DType::Fp64, [1]), s),
            "blob::unsupported-dtype",
            "fp64 has no blob dtype code",
        );
        assert_err(
            f.read(64, &fp16(&[usize::MAX, 4]), s),
            "blob::size-mismatch",
            "does not fit in 64 bits",
        );
        assert_err(
            f.read(192, &TensorType::new(DType::Int4, [4]), s),
            "blob::padding-bits",
            "padding bits is 4, expected 0",
        );

        let mut b = good.clone();
        b[80] = 129;
        assert_err(
            BlobFile::new(b).read(64, &ty, s),
            "blob::data-offset",
            "data offset is 129, expected 128",
        );

        let mut b = good.clone();
        b[4] = 3;
        assert_err(
            BlobFile::new(b).read(64, &ty, s),
            "blob::header",
            "storage version is 3, expected 2",
        );
        assert_err(BlobFile::new(vec![0u8; 10]).read(64, &ty, s), "blob::header", "10 bytes long");

        let mut b = good.clone();
        b[192 + 8] = 200; // int4 record claims 200 bytes
        let f = BlobFile::new(b);
        assert_err(
            f.read(192, &TensorType::new(DType::Int4, [400]), s),
            "blob::out-of-bounds",
            "200 bytes of data at offset 256 extend past the end of the file (258 bytes)",
        );

        let mut b = good.clone();
        b[0] = 1; // count says one record: the second is extra
        assert_err(
            BlobFile::new(b).read(192, &TensorType::new(DType::Int4, [3]), s),
            "blob::count",
            "another record follows at offset 192",
        );

        let mut b = good.clone();
        b[0] = 3; // count says three
        let f = BlobFile::new(b);
        assert!(f.read(64, &ty, s).is_ok(), "records before the problem still read");
        assert_eq!(
            f.records(s).unwrap_err().to_string(),
            "the header announces 3 records, but the file holds only 2"
        );

        let mut b = good.clone();
        b.extend_from_slice(&[0; 62]); // padding to a boundary is fine
        assert!(BlobFile::new(b.clone()).records(s).is_ok());
        b.push(0); // a whole empty 64-byte block is not padding
        b.push(0);
        assert_eq!(BlobFile::new(b).records(s).unwrap_err().code(), "blob::trailing-bytes");

        let mut b = good.clone();
        b[64 + 8 + 7] = 0x80; // size 2^63 + 8: would overflow offset + size
        assert_err(
            BlobFile::new(b).read(64, &ty, s),
            "blob::size-mismatch",
            "size is 9223372036854775816 bytes",
        );
    }

    #[test]
    fn records_are_checked_by_the_strict_walk() {
        let mut b = handmade();
        b[196] = 99; // unknown dtype code in record 1
        let e = BlobFile::new(b).records(ReadMode::Strict).unwrap_err();
        assert_eq!(e.to_string(), "record at offset 192: unknown dtype code 99");
        let mut b = handmade();
        b[64] = 0;
        let f = BlobFile::new(b);
        let scan = f.scan(ReadMode::Strict);
        assert!(scan.records.is_empty());
        assert_eq!(scan.error_code, Some("blob::sentinel"));
        assert!(f.records(ReadMode::Lenient).is_err());
        let empty = BlobFile::new(BlobWriter::new().finish());
        assert!(empty.records(ReadMode::Strict).unwrap().is_empty());
        assert!(empty.records(ReadMode::Lenient).unwrap().is_empty());
        assert_eq!(
            empty.read(64, &fp16(&[1]), ReadMode::Strict).unwrap_err().code(),
            "blob::out-of-bounds"
        );
    }

    #[test]
    fn huge_declared_sizes_fail_without_allocating() {
        let f = BlobFile::new(handmade());
        for mode in [ReadMode::Strict, ReadMode::Lenient] {
            let e = f.read(64, &fp16(&[1 << 40, 1 << 10]), mode).unwrap_err();
            assert!(
                matches!(e, BlobError::SizeMismatch { .. } | BlobError::DataOutOfBounds { .. }),
                "{e}"
            );
            let e = f.read(64, &fp16(&[1 << 40, 1 << 20]), mode).unwrap_err();
            assert!(matches!(e, BlobError::ShapeTooLarge { .. }), "{e}");
        }
        let mut b = handmade();
        b[72..80].copy_from_slice(&u64::MAX.to_le_bytes());
        let f = BlobFile::new(b);
        assert!(f.records(ReadMode::Strict).is_err());
        assert_eq!(f.records(ReadMode::Lenient).unwrap().len(), 2);
    }

    #[test]
    fn map_reads_the_same_as_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        std::fs::write(&p, handmade()).unwrap();
        let a = BlobFile::open(&p).unwrap();
        let b = BlobFile::map(&p).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        std::fs::write(&p, [1u8, 2]).unwrap();
        assert_eq!(BlobFile::map(&p).unwrap().header().unwrap_err().code(), "blob::header");
        let e = BlobFile::open(dir.path().join("missing.bin")).unwrap_err();
        assert!(e.to_string().contains("missing.bin"), "{e}");
    }

    /// A small deterministic generator, so that failures reproduce.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_damaged_files() {
        let mut w = BlobWriter::new();
        w.add_f32_as_fp16(&[1.0; 40]);
        w.add_sub_byte(DType::UInt3, &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        w.add_i8(&[-1; 70]);
        w.add_f32(&[2.5; 3]);
        let base = w.finish();
        let types = [
            fp16(&[40]),
            TensorType::new(DType::UInt3, [7]),
            TensorType::new(DType::Int8, [70]),
            TensorType::new(DType::Fp32, [3]),
            fp16(&[usize::MAX / 2, 3]),
            TensorType::new(DType::Bool, [1]),
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for case in 0..20_000 {
            let mut b = base.clone();
            match case % 4 {
                0 => b.truncate(rng.below(b.len() + 1)),
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
                2 => {
                    // Overwrite a whole field of some record with a random value.
                    let rec = [64usize, 192, 320, 448][rng.below(4)];
                    let field = [0usize, 4, 8, 16, 24][rng.below(5)];
                    let v = match rng.below(3) {
                        0 => u64::MAX - rng.below(3) as u64,
                        1 => rng.next(),
                        _ => rng.below(600) as u64,
                    };
                    let n = if field < 8 { 4 } else { 8 };
                    if rec + field + n <= b.len() {
                        b[rec + field..rec + field + n].copy_from_slice(&v.to_le_bytes()[..n]);
                    }
                }
                _ => {
                    b[0..4].copy_from_slice(&(rng.below(6) as u32).to_le_bytes());
                    b.truncate(b.len() - rng.below(70));
                }
            }
            let f = BlobFile::new(b);
            let _ = f.records(ReadMode::Strict);
            let _ = f.records(ReadMode::Lenient);
            let _ = f.scan(ReadMode::Lenient);
            for r in f.scan(ReadMode::Strict).records {
                let _ = r.element_count();
            }
            for _ in 0..4 {
                let off = match rng.below(3) {
                    0 => [64u64, 192, 320, 448][rng.below(4)],
                    1 => rng.below(600) as u64,
                    _ => rng.next(),
                };
                let ty = &types[rng.below(types.len())];
                for mode in [ReadMode::Strict, ReadMode::Lenient] {
                    if let Ok(d) = f.read(off, ty, mode) {
                        assert_eq!(d.len() as u64, ty.byte_size().unwrap());
                    }
                }
            }
        }
    }
}
