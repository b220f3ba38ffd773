//! Writing blob files: [`BlobWriter`] lays out conformant MILBlob v2 files in memory, and
//! [`write_file_atomic`] puts any file in place so that readers see the old or the new
//! contents, never a mix.

use std::fs;
use std::io::Write;
use std::path::Path;

use half::{bf16, f16};

use super::convert::{f32_to_bf16_bytes, f32_to_fp16_bytes};
use super::{
    ALIGNMENT, BlobError, HEADER_SIZE, RECORD_SIZE, SENTINEL, VERSION, align_up, dtype_code,
    is_sub_byte, pack_sub_byte, padding_bits,
};
use crate::ir::DType;

/// Builds a blob file: a header, then for each blob a 64-byte record at a 64-aligned offset
/// followed by its data. Every `add_*` returns the record's offset, the number a BLOBFILE
/// literal's `offset` takes. The bytes are always a complete, valid file.
///
/// ```
/// use anemone_mil::blob::{BlobFile, BlobWriter, ReadMode};
/// use anemone_mil::TensorType;
/// use anemone_mil::DType;
///
/// let mut w = BlobWriter::new();
/// let a = w.add_f32_as_fp16(&[1.0, 2.0, 3.0, 4.0]);
/// let b = w.add_i8(&[1, -1]);
/// assert_eq!((a, b), (64, 192));
/// let file = BlobFile::new(w.finish());
/// let data = file.read(a, &TensorType::new(DType::Fp16, [2, 2]), ReadMode::Strict).unwrap();
/// assert_eq!(data.len(), 8);
/// ```
#[derive(Clone, Debug)]
pub struct BlobWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BlobWriter {
    fn default() -> BlobWriter {
        BlobWriter::new()
    }
}

impl BlobWriter {
    /// An empty file: a 64-byte header with count 0 and version 2.
    pub fn new() -> BlobWriter {
        BlobWriter::with_capacity(0)
    }

    /// A writer whose buffer already holds `bytes` bytes (header and records included), so
    /// adding large blobs does not reallocate.
    pub fn with_capacity(bytes: usize) -> BlobWriter {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_SIZE as usize));
        buf.resize(HEADER_SIZE as usize, 0);
        buf[4..8].copy_from_slice(&VERSION.to_le_bytes());
        BlobWriter { buf, count: 0 }
    }

    /// Number of blobs added so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The file as it stands.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The finished file.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Writes the file to `path` atomically (see [`write_file_atomic`]).
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), BlobError> {
        write_file_atomic(path, &self.buf)
    }

    /// Appends a record for `size` bytes of `dtype` data and room for the data; returns the
    /// record offset and the data range in the buffer.
    fn reserve(
        &mut self,
        dtype: DType,
        size: usize,
        padding: u64,
    ) -> Result<(u64, std::ops::Range<usize>), BlobError> {
        let code = dtype_code(dtype).ok_or(BlobError::UnsupportedDType { dtype })?;
        let offset = align_up(self.buf.len() as u64).ok_or(BlobError::FileTooLarge)?;
        let data_offset = offset + RECORD_SIZE;
        let end = (data_offset as usize).checked_add(size).ok_or(BlobError::FileTooLarge)?;
        let count = self.count.checked_add(1).ok_or(BlobError::FileTooLarge)?;
        let offset_usize = offset as usize;
        self.buf.reserve(end - self.buf.len());
        // Alignment padding and the record's reserved tail are zeros; the data is written
        // over the zeros by the caller.
        self.buf.resize(end, 0);
        let record = &mut self.buf[offset_usize..data_offset as usize];
        record[0..4].copy_from_slice(&SENTINEL.to_le_bytes());
        record[4..8].copy_from_slice(&code.to_le_bytes());
        record[8..16].copy_from_slice(&(size as u64).to_le_bytes());
        record[16..24].copy_from_slice(&data_offset.to_le_bytes());
        record[24..32].copy_from_slice(&padding.to_le_bytes());
        self.count = count;
        self.buf[0..4].copy_from_slice(&count.to_le_bytes());
        debug_assert_eq!(offset % ALIGNMENT, 0);
        Ok((offset, data_offset as usize..end))
    }

    /// Adds a blob of already encoded data: `bytes` must be exactly the packed storage of
    /// `element_count` elements of `dtype`.
    pub fn add_raw(
        &mut self,
        dtype: DType,
        bytes: &[u8],
        element_count: u64,
    ) -> Result<u64, BlobError> {
        dtype_code(dtype).ok_or(BlobError::UnsupportedDType { dtype })?;
        let expected = dtype.storage_bytes(element_count).ok_or(BlobError::FileTooLarge)?;
        if expected != bytes.len() as u64 {
            return Err(BlobError::ElementCount {
                dtype,
                count: element_count,
                expected,
                found: bytes.len() as u64,
            });
        }
        let padding = padding_bits(dtype, element_count).ok_or(BlobError::FileTooLarge)?;
        let (offset, range) = self.reserve(dtype, bytes.len(), padding)?;
        self.buf[range].copy_from_slice(bytes);
        Ok(offset)
    }

    /// Adds f32 values stored as fp16, rounded to nearest even, converted straight into the
    /// file buffer.
    pub fn add_f32_as_fp16(&mut self, values: &[f32]) -> u64 {
        let (offset, range) = self.reserve_infallible(DType::Fp16, values.len() * 2);
        f32_to_fp16_bytes(values, &mut self.buf[range]);
        offset
    }

    /// Adds f32 values stored as bf16, rounded to nearest even.
    pub fn add_f32_as_bf16(&mut self, values: &[f32]) -> u64 {
        let (offset, range) = self.reserve_infallible(DType::Bf16, values.len() * 2);
        f32_to_bf16_bytes(values, &mut self.buf[range]);
        offset
    }

    /// Adds fp16 values as they are (code 1, two little-endian bytes each).
    pub fn add_f16(&mut self, values: &[f16]) -> u64 {
        self.add_le(DType::Fp16, values, |v| v.to_le_bytes())
    }

    /// Adds bf16 values as they are (code 5, two little-endian bytes each).
    pub fn add_bf16(&mut self, values: &[bf16]) -> u64 {
        self.add_le(DType::Bf16, values, |v| v.to_le_bytes())
    }

    /// Adds fp32 values (code 2, four little-endian bytes each).
    pub fn add_f32(&mut self, values: &[f32]) -> u64 {
        self.add_le(DType::Fp32, values, |v| v.to_le_bytes())
    }

    /// Adds int8 values (code 4, one byte each).
    pub fn add_i8(&mut self, values: &[i8]) -> u64 {
        self.add_le(DType::Int8, values, |v| v.to_le_bytes())
    }

    /// Adds uint8 values (code 3, one byte each).
    pub fn add_u8(&mut self, values: &[u8]) -> u64 {
        self.add_le(DType::UInt8, values, |v| v.to_le_bytes())
    }

    /// Adds int16 values (code 6, two little-endian bytes each).
    pub fn add_i16(&mut self, values: &[i16]) -> u64 {
        self.add_le(DType::Int16, values, |v| v.to_le_bytes())
    }

    /// Adds uint16 values (code 7, two little-endian bytes each).
    pub fn add_u16(&mut self, values: &[u16]) -> u64 {
        self.add_le(DType::UInt16, values, |v| v.to_le_bytes())
    }

    /// Adds int32 values (code 14, four little-endian bytes each).
    pub fn add_i32(&mut self, values: &[i32]) -> u64 {
        self.add_le(DType::Int32, values, |v| v.to_le_bytes())
    }

    /// Adds uint32 values (code 15, four little-endian bytes each).
    pub fn add_u32(&mut self, values: &[u32]) -> u64 {
        self.add_le(DType::UInt32, values, |v| v.to_le_bytes())
    }

    /// Adds sub-byte values (int4, uint1, uint2, uint3, uint4, uint6), packed least
    /// significant bits first. Each value must lie in the type's range.
    pub fn add_sub_byte(&mut self, dtype: DType, values: &[i8]) -> Result<u64, BlobError> {
        if !is_sub_byte(dtype) {
            return Err(BlobError::NotSubByte { dtype });
        }
        let packed = pack_sub_byte(dtype, values)?;
        self.add_raw(dtype, &packed, values.len() as u64)
    }

    /// `reserve` for types whose blobs cannot fail: a slice in memory always has a size that
    /// fits, and the dtype has a code.
    fn reserve_infallible(&mut self, dtype: DType, size: usize) -> (u64, std::ops::Range<usize>) {
        match self.reserve(dtype, size, 0) {
            Ok(r) => r,
            Err(e) => panic!("blob writer: {e}"),
        }
    }

    fn add_le<T: Copy, const N: usize>(
        &mut self,
        dtype: DType,
        values: &[T],
        to_le: impl Fn(T) -> [u8; N],
    ) -> u64 {
        let (offset, range) = self.reserve_infallible(dtype, values.len() * N);
        for (&v, out) in values.iter().zip(self.buf[range].chunks_exact_mut(N)) {
            out.copy_from_slice(&to_le(v));
        }
        offset
    }
}

/// Writes `bytes` to `path` so that `path` holds either its old contents or all of the new
/// ones: the data goes to a temporary file in the same directory, is flushed to disk, and is
/// renamed over `path`. On any error the temporary file is removed and an existing `path` is
/// left untouched. A replaced file keeps its permissions; a new one gets the usual
/// permissions for new files (0666 less the umask on Unix).
pub fn write_file_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), BlobError> {
    let path = path.as_ref();
    let io = |e: std::io::Error| BlobError::io(path, e);
    let file_name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    let prefix = format!(".{}.", file_name.to_string_lossy());
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    if let Ok(meta) = fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions()).map_err(io)?;
    }
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // Make the rename itself durable. Not every platform can open a directory for this, and
    // the new contents are already in place, so a failure here is not reported.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn empty_writer_is_a_bare_header() {
        let b = BlobWriter::new().finish();
        assert_eq!(b.len(), 64);
        assert_eq!(u32_at(&b, 0), 0);
        assert_eq!(u32_at(&b, 4), 2);
        assert!(b[8..].iter().all(|&x| x == 0));
    }

    #[test]
    fn layout_follows_the_format() {
        let mut w = BlobWriter::new();
        let a = w.add_f16(&[f16::ONE, f16::from_f32(2.0), f16::from_f32(3.0)]);
        let b = w.add_f32(&[1.0, 2.0, 3.0]);
        let c = w.add_sub_byte(DType::Int4, &[1, 2, 3]).unwrap();
        assert_eq!((a, b, c), (64, 192, 320));
        let f = w.finish();
        assert_eq!(f.len(), 320 + 64 + 2, "the file ends with the last data byte");
        assert_eq!(u32_at(&f, 0), 3);
        for (off, code, size, pad) in [(64, 1, 6, 0), (192, 2, 12, 0), (320, 8, 2, 4)] {
            assert_eq!(u32_at(&f, off), 0xDEAD_BEEF);
            assert_eq!(u32_at(&f, off + 4), code);
            assert_eq!(u64_at(&f, off + 8), size);
            assert_eq!(u64_at(&f, off + 16), off as u64 + 64);
            assert_eq!(u64_at(&f, off + 24), pad);
            assert!(f[off + 32..off + 64].iter().all(|&x| x == 0));
        }
        assert_eq!(&f[128..134], &[0x00, 0x3c, 0x00, 0x40, 0x00, 0x42]);
        assert!(f[134..192].iter().all(|&x| x == 0));
        assert_eq!(&f[384..386], &[0x21, 0x03]);
    }

    #[test]
    fn add_raw_checks_the_byte_count() {
        let mut w = BlobWriter::new();
        let e = w.add_raw(DType::Fp16, &[0; 5], 3).unwrap_err();
        assert!(e.to_string().contains("3 elements of fp16 take 6 bytes, but 5"), "{e}");
        let e = w.add_raw(DType::Fp64, &[0; 8], 1).unwrap_err();
        assert!(matches!(e, BlobError::UnsupportedDType { .. }));
        assert_eq!(w.count(), 0);
        assert_eq!(w.add_raw(DType::UInt2, &[0b11_10_01_00, 0b01], 5).unwrap(), 64);
        assert_eq!(u64_at(w.as_bytes(), 88), 6, "padding bits of 5 uint2");
    }

    #[test]
    fn fp16_conversion_lands_in_the_file() {
        let mut w = BlobWriter::new();
        w.add_u8(&[7]);
        let off = w.add_f32_as_fp16(&[0.5, -2.0, 65520.0]) as usize;
        let f = w.finish();
        assert_eq!(off, 192);
        assert_eq!(&f[off + 64..], &[0x00, 0x38, 0x00, 0xc0, 0x00, 0x7c]);
    }

    #[test]
    fn atomic_write_replaces_and_keeps_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weight.bin");
        write_file_atomic(&p, b"old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        }
        write_file_atomic(&p, b"new contents").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new contents");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        }
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("weight.bin")], "no temporary file left");
    }

    #[test]
    fn failed_atomic_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the data was written.
        let target = dir.path().join("weight.bin");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        let e = write_file_atomic(&target, b"data").unwrap_err();
        assert!(e.to_string().contains("weight.bin"), "{e}");
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("weight.bin")]);
        assert_eq!(fs::read(target.join("keep")).unwrap(), b"x");

        // A missing directory fails before anything is written.
        let e = write_file_atomic(dir.path().join("nope/weight.bin"), b"data").unwrap_err();
        assert!(matches!(e, BlobError::Io { .. }), "{e}");
    }
}
