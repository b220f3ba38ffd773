//! Model directories: `model.mil` next to a `weights/` folder, the layout the ANE compiler
//! reads (REFERENCE.md §1). This module owns resolving `@model_path/...` BLOBFILE paths safely
//! inside such a directory, loading the weight files a program refers to ([`Weights`]), and
//! checking every BLOBFILE reference against the blob it points at ([`check_blob_refs`]).
//!
//! Path rules (the directory is the trust boundary: a MIL file must not read outside it):
//! - a BLOBFILE path must start with `@model_path/`; anything else is refused, since nothing
//!   says what a bare relative or absolute path would be relative to;
//! - after the prefix it must be a relative path without `..` components;
//! - the file it names must exist, and after following symlinks must still lie inside the
//!   model directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::blob::{BlobBytes, BlobError, BlobFile, BlobWriter, ReadMode, write_file_atomic};
use crate::diag::{Diagnostic, Severity};
use crate::ir::{BlobRef, DType, Program, Span, TensorType};

/// The prefix every BLOBFILE path carries.
pub const MODEL_PATH_PREFIX: &str = "@model_path/";
/// The MIL file of a model directory.
pub const MIL_FILE_NAME: &str = "model.mil";

/// What can go wrong opening a model directory or resolving and reading the weight files its
/// BLOBFILE literals name. [`PackageError::to_diagnostic`] turns one into a diagnostic with a
/// hint on how to fix it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PackageError {
    /// [`ModelDir::open`] was given a directory without a `model.mil` in it.
    #[error("{path}: not a model directory: it holds no {MIL_FILE_NAME}")]
    NoModelMil {
        /// The directory, as given.
        path: String,
    },
    /// A BLOBFILE path does not start with [`MODEL_PATH_PREFIX`] (`@model_path/`).
    #[error("blob path \"{blob_path}\" does not start with {MODEL_PATH_PREFIX}")]
    NotModelPath {
        /// The BLOBFILE `path` string, as written.
        blob_path: String,
    },
    /// A BLOBFILE path that is lexically unusable (`..` components, absolute after the
    /// prefix, a NUL, no file name) or that names something other than a regular file.
    #[error("blob path \"{blob_path}\" {reason}")]
    BadPath {
        /// The BLOBFILE `path` string, as written.
        blob_path: String,
        /// What is wrong with it, phrased to follow the path in the message.
        reason: &'static str,
    },
    /// A BLOBFILE path that, once symlinks are followed, leads outside the model directory.
    #[error("blob path \"{blob_path}\" leads to {resolved}, outside the model directory {root}")]
    Escapes {
        /// The BLOBFILE `path` string, as written.
        blob_path: String,
        /// The canonical path it leads to.
        resolved: String,
        /// The canonical model directory.
        root: String,
    },
    /// No file exists where a BLOBFILE path points.
    #[error("blob path \"{blob_path}\": no file at {path}")]
    MissingFile {
        /// The BLOBFILE `path` string, as written.
        blob_path: String,
        /// The file system path it was resolved to.
        path: String,
    },
    /// [`Weights::read`] was asked for a BLOBFILE path that has no file in the set.
    #[error("no weight file is loaded for blob path \"{blob_path}\"")]
    NotLoaded {
        /// The BLOBFILE `path` string, as written.
        blob_path: String,
    },
    /// The weight file was found, but the blob at the literal's offset failed a check.
    #[error("BLOBFILE(\"{blob_path}\", offset {offset}): {source}")]
    Blob {
        /// The BLOBFILE `path` string, as written.
        blob_path: String,
        /// The BLOBFILE `offset`: the byte offset of the blob's metadata record.
        offset: u64,
        /// The failed check.
        #[source]
        source: BlobError,
    },
    /// Reading, writing or resolving a file failed at the operating-system level.
    #[error("{path}: {source}")]
    Io {
        /// The file system path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl PackageError {
    fn io(path: &Path, e: std::io::Error) -> PackageError {
        PackageError::Io { path: path.display().to_string(), source: Arc::new(e) }
    }

    /// A stable identifier for diagnostics.
    pub fn code(&self) -> &'static str {
        match self {
            PackageError::NoModelMil { .. } => "package::no-model-mil",
            PackageError::NotModelPath { .. } | PackageError::BadPath { .. } => "package::bad-path",
            PackageError::Escapes { .. } => "package::path-escape",
            PackageError::MissingFile { .. } | PackageError::NotLoaded { .. } => {
                "blob::missing-file"
            }
            PackageError::Blob { source, .. } => source.code(),
            PackageError::Io { .. } => "package::io",
        }
    }

    /// This error as a diagnostic pointing at `span` (the BLOBFILE literal).
    pub fn to_diagnostic(&self, span: Span) -> Diagnostic {
        let d = Diagnostic::error(self.code(), self.to_string()).at(span);
        let help = match self {
            PackageError::NotModelPath { .. } | PackageError::BadPath { .. } => Some(
                "write the path as @model_path/ followed by a path inside the model directory, \
                 e.g. @model_path/weights/weight.bin",
            ),
            PackageError::Escapes { .. } => {
                Some("weight files must lie inside the model directory, symlinks included")
            }
            PackageError::MissingFile { .. } | PackageError::NotLoaded { .. } => Some(
                "put the weight file where the path says, relative to the directory holding \
                 model.mil",
            ),
            PackageError::Blob { source, .. } => blob_help(source),
            _ => None,
        };
        let d = if span.is_none() { d } else { d.with_label("this BLOBFILE") };
        match help {
            Some(h) => d.with_help(h),
            None => d,
        }
    }
}

fn blob_help(e: &BlobError) -> Option<&'static str> {
    Some(match e.code() {
        "blob::sentinel" | "blob::misaligned" | "blob::count" => {
            "a BLOBFILE offset names a blob's 64-byte record (the first is at 64), not its data; \
             `anemone weights list FILE` shows where the records are"
        }
        "blob::out-of-bounds" => {
            "the file ends before the data: is it truncated, or the offset wrong?"
        }
        "blob::dtype-mismatch" => "store the blob with the dtype the MIL type declares",
        "blob::size-mismatch" => "the blob must hold exactly the declared shape's elements",
        _ => return None,
    })
}

/// The path inside a model directory that a BLOBFILE path names, checked lexically: it must
/// start with `@model_path/` and continue with a relative path free of `..`.
pub fn blob_relative_path(blob_path: &str) -> Result<PathBuf, PackageError> {
    let bad = |reason| PackageError::BadPath { blob_path: blob_path.to_string(), reason };
    let rest = blob_path
        .strip_prefix(MODEL_PATH_PREFIX)
        .ok_or_else(|| PackageError::NotModelPath { blob_path: blob_path.to_string() })?;
    if rest.contains('\0') {
        return Err(bad("contains a NUL character"));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(rest).components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("contains a `..` component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("is absolute after @model_path/"));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad("names no file"));
    }
    Ok(rel)
}

/// A model directory on disk: the directory (the base `@model_path` stands for) and its MIL
/// file.
///
/// ```
/// use anemone_mil::blob::{BlobWriter, ReadMode};
/// use anemone_mil::package::{ModelDir, Weights};
/// use anemone_mil::text;
///
/// let mil = r#"program(1.3)
/// {
///     func main<ios18>(tensor<fp16, [1, 4]> x) {
///         tensor<fp16, [4, 4]> W = const()[name = string("W"), val = tensor<fp16, [4, 4]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64)))];
///         tensor<fp16, [1, 4]> y = matmul(x = x, y = W)[name = string("mm")];
///     } -> (y);
/// }
/// "#;
/// let mut blob = BlobWriter::new();
/// assert_eq!(blob.add_f32_as_fp16(&[0.5; 16]), 64);
/// let mut weights = Weights::new();
/// weights.insert("@model_path/weights/weight.bin", blob.finish());
///
/// let tmp = tempfile::tempdir()?;
/// let created = ModelDir::create(tmp.path().join("model"), mil, &weights)?;
/// assert!(created.root().join("weights/weight.bin").is_file());
///
/// // Reading it back: the MIL text, then every weight file it names, checked.
/// let dir = ModelDir::open(tmp.path().join("model"))?;
/// let program = text::parse_source(&dir.mil_path().display().to_string(), &dir.read_mil()?)?;
/// let (loaded, problems) = dir.check(&program, ReadMode::Strict);
/// assert!(problems.is_empty());
/// assert_eq!(loaded.len(), 1);
///
/// // A BLOBFILE path may not leave the directory.
/// assert!(dir.resolve("@model_path/../secret.bin").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ModelDir {
    root: PathBuf,
    mil_path: PathBuf,
}

impl ModelDir {
    /// Opens a directory holding `model.mil`, or the directory of a given `.mil` file (any
    /// name) — that directory is then the base of `@model_path`.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelDir, PackageError> {
        let path = path.as_ref();
        let meta = fs::metadata(path).map_err(|e| PackageError::io(path, e))?;
        let (root, mil_path) = if meta.is_dir() {
            let mil = path.join(MIL_FILE_NAME);
            if !mil.is_file() {
                return Err(PackageError::NoModelMil { path: path.display().to_string() });
            }
            (path.to_path_buf(), mil)
        } else {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (parent, path.to_path_buf())
        };
        let root = fs::canonicalize(&root).map_err(|e| PackageError::io(&root, e))?;
        Ok(ModelDir { root, mil_path })
    }

    /// Writes a model directory: `model.mil` and every weight file at the place its
    /// BLOBFILE path names, each atomically. Creates the directories needed.
    pub fn create(
        path: impl AsRef<Path>,
        mil_text: &str,
        weights: &Weights,
    ) -> Result<ModelDir, PackageError> {
        let path = path.as_ref();
        fs::create_dir_all(path).map_err(|e| PackageError::io(path, e))?;
        let mil = path.join(MIL_FILE_NAME);
        write_file_atomic(&mil, mil_text.as_bytes()).map_err(|e| blob_io(&mil, e))?;
        let dir = ModelDir::open(path)?;
        for (blob_path, file) in weights.iter() {
            let target = dir.root.join(blob_relative_path(blob_path)?);
            if let Some(parent) = target.parent() {
                // Check the deepest directory that exists before creating anything, so that
                // a symlink leading outside never gets directories made behind it.
                let existing = parent.ancestors().find(|a| a.exists()).unwrap_or(&dir.root);
                let real = fs::canonicalize(existing).map_err(|e| PackageError::io(existing, e))?;
                if !real.starts_with(&dir.root) {
                    return Err(PackageError::Escapes {
                        blob_path: blob_path.to_string(),
                        resolved: real.display().to_string(),
                        root: dir.root.display().to_string(),
                    });
                }
                fs::create_dir_all(parent).map_err(|e| PackageError::io(parent, e))?;
                let real = fs::canonicalize(parent).map_err(|e| PackageError::io(parent, e))?;
                if !real.starts_with(&dir.root) {
                    return Err(PackageError::Escapes {
                        blob_path: blob_path.to_string(),
                        resolved: real.display().to_string(),
                        root: dir.root.display().to_string(),
                    });
                }
            }
            write_file_atomic(&target, file.bytes()).map_err(|e| blob_io(&target, e))?;
        }
        Ok(dir)
    }

    /// The directory `@model_path` stands for (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The MIL file: `model.mil` in the directory, or the `.mil` file [`ModelDir::open`] was
    /// given (as given, not canonicalised).
    pub fn mil_path(&self) -> &Path {
        &self.mil_path
    }

    /// Reads the MIL file as UTF-8 text ([`PackageError::Io`] if unreadable or not UTF-8).
    pub fn read_mil(&self) -> Result<String, PackageError> {
        fs::read_to_string(&self.mil_path).map_err(|e| PackageError::io(&self.mil_path, e))
    }

    /// The file a BLOBFILE path names, canonical, after checking that it exists and lies
    /// inside the directory (see the module documentation for the rules).
    pub fn resolve(&self, blob_path: &str) -> Result<PathBuf, PackageError> {
        let joined = self.root.join(blob_relative_path(blob_path)?);
        let real = match fs::canonicalize(&joined) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PackageError::MissingFile {
                    blob_path: blob_path.to_string(),
                    path: joined.display().to_string(),
                });
            }
            Err(e) => return Err(PackageError::io(&joined, e)),
        };
        if !real.starts_with(&self.root) {
            return Err(PackageError::Escapes {
                blob_path: blob_path.to_string(),
                resolved: real.display().to_string(),
                root: self.root.display().to_string(),
            });
        }
        if !real.is_file() {
            return Err(PackageError::BadPath {
                blob_path: blob_path.to_string(),
                reason: "does not name a regular file",
            });
        }
        Ok(real)
    }

    /// Reads the weight file a BLOBFILE path names.
    pub fn load_file(&self, blob_path: &str) -> Result<BlobFile, PackageError> {
        let path = self.resolve(blob_path)?;
        let bytes = fs::read(&path).map_err(|e| PackageError::io(&path, e))?;
        Ok(BlobFile::new(bytes))
    }

    /// Reads every weight file `program` refers to into memory (a snapshot: later changes
    /// on disk do not show, as with the ANE compiler). Fails with one diagnostic per
    /// BLOBFILE literal whose file could not be loaded.
    pub fn load_weights(&self, program: &Program) -> Result<Weights, Vec<Diagnostic>> {
        let (weights, diags) = self.load_weights_partial(program);
        if diags.is_empty() { Ok(weights) } else { Err(diags) }
    }

    /// Loads what can be loaded and checks every BLOBFILE literal: the combination a
    /// validator wants. Returns the weights and all diagnostics (one per literal at most).
    pub fn check(&self, program: &Program, mode: ReadMode) -> (Weights, Vec<Diagnostic>) {
        let (weights, mut diags) = self.load_weights_partial(program);
        let failed: BTreeSet<String> = program
            .blob_refs()
            .into_iter()
            .map(|(b, _, _)| b.path.clone())
            .filter(|p| weights.get(p).is_none())
            .collect();
        diags.extend(check_refs(program, &weights, mode, &failed));
        (weights, diags)
    }

    fn load_weights_partial(&self, program: &Program) -> (Weights, Vec<Diagnostic>) {
        let refs = program.blob_refs();
        let paths: BTreeSet<&str> = refs.iter().map(|(b, _, _)| b.path.as_str()).collect();
        let mut weights = Weights::new();
        let mut diags = Vec::new();
        for path in paths {
            match self.load_file(path) {
                Ok(file) => weights.insert_file(path, file),
                Err(e) => diags.extend(
                    refs.iter()
                        .filter(|(b, _, _)| b.path == path)
                        .map(|(_, _, s)| e.to_diagnostic(*s)),
                ),
            }
        }
        (weights, diags)
    }
}

fn blob_io(path: &Path, e: BlobError) -> PackageError {
    match e {
        BlobError::Io { source, .. } => {
            PackageError::Io { path: path.display().to_string(), source }
        }
        other => PackageError::Io {
            path: path.display().to_string(),
            source: Arc::new(std::io::Error::other(other.to_string())),
        },
    }
}

/// Weight files by the exact BLOBFILE path string a program uses
/// (e.g. `@model_path/weights/weight.bin`): what the compiler is handed along with the MIL
/// text, and what the simulator reads constants from. Cloning shares the bytes.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    files: BTreeMap<String, BlobFile>,
}

impl Weights {
    /// An empty set of weight files.
    pub fn new() -> Weights {
        Weights::default()
    }

    /// Adds (or replaces) the file for `blob_path`, e.g. the output of a
    /// [`crate::blob::BlobWriter`].
    pub fn insert(&mut self, blob_path: impl Into<String>, bytes: impl Into<BlobBytes>) {
        self.insert_file(blob_path, BlobFile::new(bytes));
    }

    /// Adds (or replaces) the file for `blob_path`, a [`BlobFile`] already opened or mapped.
    pub fn insert_file(&mut self, blob_path: impl Into<String>, file: BlobFile) {
        self.files.insert(blob_path.into(), file);
    }

    /// The file for the exact BLOBFILE path string `blob_path`, if loaded.
    pub fn get(&self, blob_path: &str) -> Option<&BlobFile> {
        self.files.get(blob_path)
    }

    /// The files in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BlobFile)> {
        self.files.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of weight files (distinct BLOBFILE paths), not of blobs.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no weight file is held.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The data a BLOBFILE literal of type `ty` refers to, checked in `mode`.
    pub fn read(
        &self,
        blob: &BlobRef,
        ty: &TensorType,
        mode: ReadMode,
    ) -> Result<&[u8], PackageError> {
        let file = self
            .get(&blob.path)
            .ok_or_else(|| PackageError::NotLoaded { blob_path: blob.path.clone() })?;
        file.read(blob.offset, ty, mode).map_err(|source| PackageError::Blob {
            blob_path: blob.path.clone(),
            offset: blob.offset,
            source,
        })
    }
}

/// Checks every BLOBFILE literal of `program` against the blob it points at: the file is
/// loaded, the offset names a record, and the record's dtype and size match the declared
/// type. Each problem is one diagnostic at the literal's span.
///
/// In [`ReadMode::Lenient`], a literal that fails the strict checks but reads leniently gives
/// a warning (with the strict check's code) instead of an error.
pub fn check_blob_refs(program: &Program, weights: &Weights, mode: ReadMode) -> Vec<Diagnostic> {
    check_refs(program, weights, mode, &BTreeSet::new())
}

fn check_refs(
    program: &Program,
    weights: &Weights,
    mode: ReadMode,
    skip: &BTreeSet<String>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (blob, ty, span) in program.blob_refs() {
        if skip.contains(&blob.path) {
            continue;
        }
        let Some(tensor) = ty.as_tensor() else {
            let msg = format!("a BLOBFILE literal cannot have type {ty}");
            out.push(Diagnostic::error("blob::bad-type", msg).at(span));
            continue;
        };
        let Err(strict_err) = weights.read(blob, &tensor, ReadMode::Strict) else { continue };
        if mode == ReadMode::Lenient && !matches!(strict_err, PackageError::NotLoaded { .. }) {
            match weights.read(blob, &tensor, ReadMode::Lenient) {
                Ok(_) => {
                    let mut d = strict_err.to_diagnostic(span);
                    d.severity = Severity::Warning;
                    d.message.push_str(" (accepted in lenient mode)");
                    out.push(d);
                }
                Err(e) => out.push(e.to_diagnostic(span)),
            }
        } else {
            out.push(strict_err.to_diagnostic(span));
        }
    }
    out
}

/// Weights of the declared types for every BLOBFILE reference of `program`, with
/// deterministic pseudo-random values (seeded): for running programs that come without
/// weight files, in tests and benchmarks. Floats are uniform in [-scale, scale) with
/// `scale = 1 / sqrt(fan-in)` (the last dims after the first), so activations stay in fp16
/// range through deep programs; integers are small (within ±8).
///
/// Each file's records are written in offset order; it is an error when the program's
/// offsets are not where a conforming writer puts them.
pub fn synthetic_weights(program: &Program, seed: u64) -> Result<Weights, String> {
    let mut by_path: BTreeMap<&str, Vec<(u64, TensorType)>> = BTreeMap::new();
    for (blob, ty, _) in program.blob_refs() {
        let ty = ty.as_tensor().ok_or_else(|| format!("BLOBFILE of type {ty}"))?;
        let refs = by_path.entry(blob.path.as_str()).or_default();
        if !refs.iter().any(|(o, _)| *o == blob.offset) {
            refs.push((blob.offset, ty));
        }
    }
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut weights = Weights::new();
    for (path, mut refs) in by_path {
        refs.sort_by_key(|(o, _)| *o);
        let mut writer = BlobWriter::new();
        for (offset, ty) in refs {
            // Generated weights live in memory: refuse sizes no test or benchmark needs.
            const MAX_GENERATED: usize = 1 << 30;
            let n =
                ty.checked_element_count().filter(|&n| n <= MAX_GENERATED).ok_or_else(|| {
                    format!("{path}: {ty} is too large to generate (at most 2^30 elements)")
                })?;
            let fan_in = ty.shape.iter().skip(1).fold(1usize, |a, &d| a.saturating_mul(d)).max(1);
            let scale = 1.0 / (fan_in as f32).sqrt();
            let mut uniform = || ((next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale;
            let at = match ty.dtype {
                DType::Fp16 => {
                    writer.add_f32_as_fp16(&(0..n).map(|_| uniform()).collect::<Vec<_>>())
                }
                DType::Fp32 => writer.add_f32(&(0..n).map(|_| uniform()).collect::<Vec<_>>()),
                DType::Int8 => {
                    writer.add_i8(&(0..n).map(|_| (next() % 17) as i8 - 8).collect::<Vec<_>>())
                }
                DType::UInt8 => {
                    writer.add_u8(&(0..n).map(|_| (next() % 9) as u8).collect::<Vec<_>>())
                }
                other => return Err(format!("{path}: cannot make {other} weights")),
            };
            if at != offset {
                return Err(format!(
                    "{path}: the program reads a blob at offset {offset}, but records written in \
                     order put it at {at}"
                ));
            }
        }
        weights.insert(path, writer.finish());
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobWriter;
    use crate::ir::{Block, DType, Function, Ident, Literal, Named, Operation, Type, TypedName};

    const W: &str = "@model_path/weights/weight.bin";

    /// A program with one `const` per (path, offset, type), each literal at span (i, i + 1).
    fn program(refs: &[(&str, u64, TensorType)]) -> Program {
        let operations = refs
            .iter()
            .enumerate()
            .map(|(i, (path, offset, ty))| {
                let mut lit = Literal::blob(ty.clone(), *path, *offset);
                lit.span = Span::new(10 * i + 1, 10 * i + 5);
                Operation {
                    op: Ident::new("const"),
                    inputs: vec![],
                    attributes: vec![Named::new("val", lit)],
                    outputs: vec![TypedName::new(Type::Tensor(ty.clone()), format!("w{i}"))],
                    span: Span::NONE,
                }
            })
            .collect();
        Program {
            version: "1.3".into(),
            attributes: vec![],
            functions: vec![Function {
                name: Ident::new("main"),
                opset: Ident::new("ios18"),
                inputs: vec![],
                block: Block { operations, outputs: vec![] },
                span: Span::NONE,
            }],
        }
    }

    fn fp16(shape: &[usize]) -> TensorType {
        TensorType::new(DType::Fp16, shape)
    }

    fn model_dir(weights: &[u8]) -> (tempfile::TempDir, ModelDir) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("weights")).unwrap();
        fs::write(tmp.path().join("model.mil"), "program(1.3)\n{\n}\n").unwrap();
        fs::write(tmp.path().join("weights/weight.bin"), weights).unwrap();
        let dir = ModelDir::open(tmp.path()).unwrap();
        (tmp, dir)
    }

    fn two_blobs() -> Vec<u8> {
        let mut w = BlobWriter::new();
        w.add_f32_as_fp16(&[1.0; 16]);
        w.add_i8(&[1; 8]);
        w.finish()
    }

    #[test]
    fn blob_paths_are_checked_lexically() {
        assert_eq!(blob_relative_path(W).unwrap(), Path::new("weights/weight.bin"));
        assert_eq!(blob_relative_path("@model_path/./w.bin").unwrap(), Path::new("w.bin"));
        for (p, code, text) in [
            ("weights/weight.bin", "package::bad-path", "does not start with @model_path/"),
            ("/etc/passwd", "package::bad-path", "does not start with @model_path/"),
            ("@model_path/../secret.bin", "package::bad-path", "contains a `..` component"),
            ("@model_path/weights/../../x", "package::bad-path", "`..`"),
            ("@model_path//etc/passwd", "package::bad-path", "is absolute"),
            ("@model_path/", "package::bad-path", "names no file"),
            ("@model_path/a\0b", "package::bad-path", "NUL"),
        ] {
            let e = blob_relative_path(p).unwrap_err();
            assert_eq!(e.code(), code, "{p}");
            assert!(e.to_string().contains(text), "{p}: {e}");
            assert!(e.to_string().contains(&format!("\"{p}\"")), "names the path: {e}");
        }
    }

    #[test]
    fn open_takes_a_directory_or_a_mil_file() {
        let (tmp, dir) = model_dir(&two_blobs());
        assert_eq!(dir.root(), fs::canonicalize(tmp.path()).unwrap());
        assert!(dir.read_mil().unwrap().starts_with("program"));
        fs::write(tmp.path().join("other.mil"), "x").unwrap();
        let d2 = ModelDir::open(tmp.path().join("other.mil")).unwrap();
        assert_eq!(d2.root(), dir.root());
        assert_eq!(d2.read_mil().unwrap(), "x");
        let e = ModelDir::open(tmp.path().join("weights")).unwrap_err();
        assert!(e.to_string().contains("holds no model.mil"), "{e}");
        assert!(ModelDir::open(tmp.path().join("nope")).is_err());
    }

    #[test]
    fn resolve_stays_inside_the_directory() {
        let (tmp, dir) = model_dir(&two_blobs());
        let p = dir.resolve(W).unwrap();
        assert_eq!(p, dir.root().join("weights/weight.bin"));
        let e = dir.resolve("@model_path/weights/missing.bin").unwrap_err();
        assert_eq!(e.code(), "blob::missing-file");
        assert!(e.to_string().contains("missing.bin"), "{e}");
        let e = dir.resolve("@model_path/weights").unwrap_err();
        assert!(e.to_string().contains("does not name a regular file"), "{e}");

        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            fs::write(outside.path().join("secret.bin"), b"secret").unwrap();
            std::os::unix::fs::symlink(
                outside.path().join("secret.bin"),
                tmp.path().join("weights/evil.bin"),
            )
            .unwrap();
            std::os::unix::fs::symlink(outside.path(), tmp.path().join("evildir")).unwrap();
            for p in ["@model_path/weights/evil.bin", "@model_path/evildir/secret.bin"] {
                let e = dir.resolve(p).unwrap_err();
                assert_eq!(e.code(), "package::path-escape", "{p}");
                assert!(e.to_string().contains(p), "{e}");
                assert!(e.to_string().contains("outside the model directory"), "{e}");
            }
            // A symlink that stays inside is fine.
            std::os::unix::fs::symlink("weight.bin", tmp.path().join("weights/alias.bin")).unwrap();
            assert_eq!(dir.resolve("@model_path/weights/alias.bin").unwrap(), p);
        }
    }

    #[test]
    fn loads_and_checks_the_refs_of_a_program() {
        let (_tmp, dir) = model_dir(&two_blobs());
        let good = program(&[(W, 64, fp16(&[4, 4])), (W, 192, TensorType::new(DType::Int8, [8]))]);
        let weights = dir.load_weights(&good).unwrap();
        assert_eq!(weights.len(), 1);
        assert!(check_blob_refs(&good, &weights, ReadMode::Strict).is_empty());
        let (b, t, _) = good.blob_refs()[0];
        assert_eq!(weights.read(b, &t.as_tensor().unwrap(), ReadMode::Strict).unwrap().len(), 32);

        let bad = program(&[
            (W, 64, fp16(&[4, 5])),
            (W, 128, fp16(&[4, 4])),
            (W, 192, fp16(&[4])),
            (W, 512, fp16(&[1])),
            ("@model_path/weights/other.bin", 64, fp16(&[1])),
        ]);
        let diags = check_blob_refs(&bad, &weights, ReadMode::Strict);
        let codes: Vec<&str> = diags.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            [
                "blob::size-mismatch",
                "blob::sentinel",
                "blob::dtype-mismatch",
                "blob::out-of-bounds",
                "blob::missing-file"
            ]
        );
        assert_eq!(diags[1].span, Some(Span::new(11, 15)));
        assert!(diags.iter().all(|d| d.is_error()));
        assert_eq!(
            diags[0].message,
            "BLOBFILE(\"@model_path/weights/weight.bin\", offset 64): record at offset 64: size is \
             32 bytes, but tensor<fp16, [4, 5]> needs 40 bytes"
        );
        assert!(diags[1].help.as_deref().unwrap().contains("not its data"));

        // Loading reports every literal whose file is missing, with its span.
        let e = dir.load_weights(&bad).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].code, "blob::missing-file");
        assert_eq!(e[0].span, Some(Span::new(41, 45)));

        // check() does both, reporting the missing file once.
        let (_, diags) = dir.check(&bad, ReadMode::Strict);
        assert_eq!(diags.len(), 5);
        assert_eq!(diags.iter().filter(|d| d.code == "blob::missing-file").count(), 1);
    }

    #[test]
    fn escaping_refs_become_diagnostics() {
        let (_tmp, dir) = model_dir(&two_blobs());
        let p = program(&[
            ("@model_path/../x.bin", 64, fp16(&[1])),
            ("weights/weight.bin", 64, fp16(&[1])),
        ]);
        let (_, diags) = dir.check(&p, ReadMode::Strict);
        let codes: Vec<&str> = diags.iter().map(|d| d.code).collect();
        assert_eq!(codes, ["package::bad-path", "package::bad-path"]);
        assert!(diags[0].message.contains("@model_path/../x.bin"));
    }

    #[test]
    fn lenient_mode_turns_accepted_deviations_into_warnings() {
        // Three int8 blobs under a count of 1, every record marked fp16 with a bogus size.
        let mut w = BlobWriter::new();
        for _ in 0..3 {
            w.add_i8(&[3; 256]);
        }
        let mut b = w.finish();
        b[0] = 1;
        for off in [64usize, 384, 704] {
            b[off + 4] = 1;
            b[off + 8..off + 16].copy_from_slice(&0x80000u64.to_le_bytes());
        }
        let (_tmp, dir) = model_dir(&b);
        let ty = TensorType::new(DType::Int8, [16, 16]);
        let p = program(&[
            (W, 64, ty.clone()),
            (W, 384, ty.clone()),
            (W, 704, ty.clone()),
            (W, 1024, ty),
        ]);
        let (weights, strict) = dir.check(&p, ReadMode::Strict);
        assert_eq!(strict.len(), 4);
        assert!(strict.iter().all(|d| d.is_error()));
        let lenient = check_blob_refs(&p, &weights, ReadMode::Lenient);
        assert_eq!(lenient.len(), 4);
        assert!(lenient[..3].iter().all(|d| !d.is_error() && d.code == "blob::dtype-mismatch"));
        assert!(lenient[0].message.ends_with("(accepted in lenient mode)"));
        assert!(lenient[3].is_error());
        assert_eq!(lenient[3].code, "blob::out-of-bounds");
    }

    #[test]
    fn create_writes_a_directory_that_opens_again() {
        let tmp = tempfile::tempdir().unwrap();
        let mut weights = Weights::new();
        weights.insert(W, two_blobs());
        weights.insert("@model_path/weights/more/extra.bin", BlobWriter::new().finish());
        let target = tmp.path().join("m");
        let dir = ModelDir::create(&target, "program(1.3)\n", &weights).unwrap();
        assert_eq!(fs::read(target.join("weights/weight.bin")).unwrap(), two_blobs());
        assert!(target.join("weights/more/extra.bin").is_file());
        assert_eq!(dir.read_mil().unwrap(), "program(1.3)\n");

        let mut bad = Weights::new();
        bad.insert("@model_path/../x.bin", vec![0u8; 64]);
        let e = ModelDir::create(tmp.path().join("n"), "", &bad).unwrap_err();
        assert_eq!(e.code(), "package::bad-path");
        assert!(!tmp.path().join("x.bin").exists());
    }
}
