//! NumPy `.npz` archives in and out: zip files holding one `NAME.npy` member per array, as
//! `numpy.savez` (members stored) and `numpy.savez_compressed` (members deflated) write them,
//! through the `zip` crate.
//!
//! [`Npz`] opens an archive and decodes one member at a time, so that a large archive is
//! never held decoded all at once; [`read`] and [`parse`] decode every member, in archive
//! order. [`write`] and [`encode`] make stored archives that `numpy.load` reads back.
//!
//! Damaged or hostile archives are errors that name the archive and the member, never
//! panics: every member must be named `NAME.npy` and hold a .npy file, names must be unique,
//! a member may not declare more bytes than its compressed data can expand to (deflate
//! expands at most 1032-fold), and what it decompresses to must match its declared size and
//! CRC. Memory grows with the bytes actually decompressed, never with a declared size alone.
//!
//! ```
//! use anemone::npy::Array;
//! use anemone::npz;
//!
//! let w = Array::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
//! let b = Array::from_f32(vec![2], vec![0.5, -0.5])?;
//! let bytes = npz::encode([("w", &w), ("b", &b)])?;
//! let arrays = npz::parse(&bytes)?;
//! assert_eq!(arrays[0], ("w".to_string(), w));
//! assert_eq!(arrays[1].0, "b");
//! # Ok::<(), anemone::npy::NpyError>(())
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::npy::{self, Array, NpyError};

/// The suffix numpy gives every member: `numpy.savez(f, w=...)` stores `w.npy`.
const MEMBER_SUFFIX: &str = ".npy";

/// Deflate's largest expansion: with one-bit codes, a 258-byte match costs two bits.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Room reserved up front for a member's bytes; beyond it the buffer grows as data arrives,
/// so that a member declaring a huge size costs nothing until its data is really there.
const INITIAL_CAPACITY: u64 = 64 << 20;

/// An open .npz archive: the names of its arrays, and their data decoded on demand.
pub struct Npz<R> {
    archive: ZipArchive<R>,
    /// The archive's path, prefixed to messages; `None` for archives read from memory.
    source: Option<String>,
    /// The array names (member names less `.npy`), in archive order, with their indices.
    members: Vec<(String, usize)>,
    /// The archive's length in bytes: no member's compressed data can be longer.
    len: u64,
}

impl Npz<BufReader<File>> {
    /// Opens the .npz file at `path` and checks its member list; errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Npz<BufReader<File>>, NpyError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let file =
            File::open(path).map_err(|e| NpyError::new(format!("cannot read {shown}: {e}")))?;
        Npz::with_source(BufReader::new(file), Some(shown))
    }
}

impl<'a> Npz<Cursor<&'a [u8]>> {
    /// Reads an archive held in memory.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Npz<Cursor<&'a [u8]>>, NpyError> {
        Npz::new(Cursor::new(bytes))
    }
}

impl<R: Read + Seek> Npz<R> {
    /// Reads the member list of the archive `reader` holds.
    pub fn new(reader: R) -> Result<Npz<R>, NpyError> {
        Npz::with_source(reader, None)
    }

    fn with_source(mut reader: R, source: Option<String>) -> Result<Npz<R>, NpyError> {
        let prefix = |msg: String| match &source {
            Some(s) => NpyError::new(format!("{s}: {msg}")),
            None => NpyError::new(msg),
        };
        let len = reader
            .seek(SeekFrom::End(0))
            .and_then(|len| reader.seek(SeekFrom::Start(0)).map(|_| len))
            .map_err(|e| prefix(format!("cannot read: {e}")))?;
        let archive = ZipArchive::new(reader)
            .map_err(|e| prefix(format!("not an .npz file (a zip archive of .npy files): {e}")))?;
        if archive.has_duplicate_names() {
            // The zip reader keeps one entry per name, so which name repeats is not known.
            return Err(prefix(
                "the archive holds two members of the same name: each array needs its own \
                 name"
                    .to_string(),
            ));
        }
        let mut members = Vec::with_capacity(archive.len());
        for index in 0..archive.len() {
            let name = match archive.name_for_index(index) {
                Some(Ok(name)) => name.into_owned(),
                Some(Err(e)) => return Err(prefix(format!("member {index}: bad name: {e}"))),
                None => return Err(prefix(format!("member {index} is missing"))),
            };
            let Some(array) = name.strip_suffix(MEMBER_SUFFIX) else {
                return Err(prefix(format!(
                    "member `{name}` is not a .npy array: an .npz holds one NAME.npy member \
                     per array"
                )));
            };
            members.push((array.to_string(), index));
        }
        Ok(Npz { archive, source, members, len })
    }

    /// The array names, in archive order (numpy keeps the order `savez` was given).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(n, _)| n.as_str())
    }

    /// The number of arrays.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the archive holds no arrays.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Decodes the array called `name`.
    pub fn array(&mut self, name: &str) -> Result<Array, NpyError> {
        let Some(&(_, index)) = self.members.iter().find(|(n, _)| n == name) else {
            let names: Vec<&str> = self.names().take(8).collect();
            let more = if self.len() > names.len() { ", ..." } else { "" };
            return Err(self.error(format!(
                "no array named `{name}` (it holds {}{more})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        };
        self.member(index, name)
    }

    /// Decodes every array, in archive order.
    pub fn arrays(&mut self) -> Result<Vec<(String, Array)>, NpyError> {
        let members = self.members.clone();
        members
            .into_iter()
            .map(|(name, index)| Ok((name.clone(), self.member(index, &name)?)))
            .collect()
    }

    fn error(&self, msg: String) -> NpyError {
        match &self.source {
            Some(s) => NpyError::new(format!("{s}: {msg}")),
            None => NpyError::new(msg),
        }
    }

    fn member(&mut self, index: usize, name: &str) -> Result<Array, NpyError> {
        let member = format!("{name}{MEMBER_SUFFIX}");
        let len = self.len;
        let fail = |msg: String| format!("member `{member}`: {msg}");
        let read = (|| {
            let mut file = self.archive.by_index(index).map_err(|e| fail(e.to_string()))?;
            let declared = file.size();
            let compressed = file.compressed_size();
            if compressed > len {
                return Err(fail(format!(
                    "declares {compressed} compressed bytes, more than the whole archive \
                     ({len} bytes)"
                )));
            }
            let most = match file.compression() {
                CompressionMethod::Stored => compressed,
                _ => compressed.saturating_mul(DEFLATE_MAX_RATIO).saturating_add(DEFLATE_MAX_RATIO),
            };
            if declared > most {
                return Err(fail(format!(
                    "declares {declared} bytes, more than its {compressed} compressed bytes can \
                     hold"
                )));
            }
            let mut bytes = Vec::with_capacity(declared.min(INITIAL_CAPACITY) as usize);
            // One byte past the declared size shows a member that holds more than it says.
            (&mut file)
                .take(declared.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| fail(format!("cannot decompress: {e}")))?;
            if bytes.len() as u64 != declared {
                return Err(fail(format!(
                    "holds {}{} bytes, the archive declares {declared}",
                    bytes.len(),
                    if bytes.len() as u64 > declared { " or more" } else { "" }
                )));
            }
            npy::parse(&bytes).map_err(|e| fail(e.to_string()))
        })();
        read.map_err(|msg| self.error(msg))
    }
}

/// Reads every array of the .npz file at `path`, in archive order; errors name the file
/// and the member.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<(String, Array)>, NpyError> {
    Npz::open(path)?.arrays()
}

/// Decodes every array of an .npz archive held in memory, in archive order.
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, Array)>, NpyError> {
    Npz::from_bytes(bytes)?.arrays()
}

/// The bytes of an .npz archive holding `arrays` as stored (uncompressed) `NAME.npy`
/// members, in the order given, as `numpy.savez` writes them. Names must be unique.
pub fn encode<'a, S: AsRef<str>>(
    arrays: impl IntoIterator<Item = (S, &'a Array)>,
) -> Result<Vec<u8>, NpyError> {
    let err = |e: zip::result::ZipError| NpyError::new(format!("cannot write .npz: {e}"));
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let mut seen = HashSet::new();
    for (name, array) in arrays {
        let name = name.as_ref();
        if !seen.insert(name.to_string()) {
            return Err(NpyError::new(format!("the name `{name}` is given twice")));
        }
        let bytes = npy::encode(array).map_err(|e| NpyError::new(format!("`{name}`: {e}")))?;
        // A fixed time keeps the bytes the same from run to run; zip64 only where needed.
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .large_file(bytes.len() as u64 >= u32::MAX as u64);
        zip.start_file(format!("{name}{MEMBER_SUFFIX}"), options).map_err(err)?;
        zip.write_all(&bytes).map_err(|e| NpyError::new(format!("cannot write .npz: {e}")))?;
    }
    Ok(zip.finish().map_err(err)?.into_inner())
}

/// Writes `arrays` to `path` as a stored .npz archive (see [`encode`]), atomically: `path`
/// holds its old contents or the whole new archive, never part of it.
pub fn write<'a, S: AsRef<str>>(
    path: impl AsRef<Path>,
    arrays: impl IntoIterator<Item = (S, &'a Array)>,
) -> Result<(), NpyError> {
    let path = path.as_ref();
    let bytes = encode(arrays)?;
    anemone_mil::blob::write_file_atomic(path, &bytes)
        .map_err(|e| NpyError::new(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::Data;

    #[test]
    fn arrays_round_trip_in_order_with_their_types() {
        let a = Array::new(vec![2, 1], Data::Int(vec![-3, 7])).unwrap();
        let b = Array::new(vec![], Data::F64(vec![0.25])).unwrap();
        let bytes = encode([("layer/a", &a), ("b", &b)]).unwrap();
        let mut npz = Npz::from_bytes(&bytes).unwrap();
        assert_eq!(npz.names().collect::<Vec<_>>(), ["layer/a", "b"]);
        assert_eq!(npz.array("b").unwrap(), b);
        assert_eq!(npz.array("layer/a").unwrap(), a);
        let e = npz.array("c").unwrap_err();
        assert_eq!(e.message(), "no array named `c` (it holds layer/a, b)");
        // The same input gives the same bytes.
        assert_eq!(encode([("layer/a", &a), ("b", &b)]).unwrap(), bytes);
    }

    #[test]
    fn names_must_be_unique_when_writing() {
        let a = Array::from_f32(vec![1], vec![1.0]).unwrap();
        let e = encode([("a", &a), ("a", &a)]).unwrap_err();
        assert!(e.message().contains("`a` is given twice"), "{e}");
    }
}
