//! The weights a program is compiled with: weight-file bytes keyed by the exact BLOBFILE
//! path string of the MIL text (`@model_path/weights/weight.bin`), as the ANE's in-memory
//! compiler takes them (REFERENCE.md §1).

use std::collections::BTreeMap;
use std::sync::Arc;

use anemone_mil::blob::ReadMode;
use anemone_mil::package::ModelDir;
use anemone_mil::{Program, TensorType};

use crate::error::{Error, Result};

/// Weight files by BLOBFILE path. Cloning shares the bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    files: BTreeMap<String, Arc<[u8]>>,
    mode: ReadModeFlag,
}

/// Whether blob records are read strictly or leniently (maderix-style files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ReadModeFlag {
    #[default]
    Strict,
    Lenient,
}

impl Weights {
    /// No weights (for programs without BLOBFILE constants).
    pub fn new() -> Weights {
        Weights::default()
    }

    /// Reads every weight file the program refers to from its model directory.
    pub fn from_model_dir(dir: &ModelDir, program: &Program) -> Result<Weights> {
        let mut w = Weights::new();
        for (blob, _, _) in program.blob_refs() {
            if w.files.contains_key(&blob.path) {
                continue;
            }
            let path = dir.resolve(&blob.path).map_err(|e| Error::Weights(e.to_string()))?;
            let bytes = std::fs::read(&path).map_err(|e| Error::Io {
                context: format!("cannot read weight file {} ({})", path.display(), blob.path),
                source: e,
            })?;
            w.files.insert(blob.path.clone(), bytes.into());
        }
        Ok(w)
    }

    /// Adds or replaces the file at a BLOBFILE path.
    pub fn insert(&mut self, blob_path: impl Into<String>, bytes: impl Into<Arc<[u8]>>) {
        self.files.insert(blob_path.into(), bytes.into());
    }

    /// Read blob records leniently (as the ANE compiler does; for maderix-style files).
    pub fn lenient(mut self) -> Weights {
        self.mode = ReadModeFlag::Lenient;
        self
    }

    pub fn read_mode(&self) -> ReadMode {
        match self.mode {
            ReadModeFlag::Strict => ReadMode::Strict,
            ReadModeFlag::Lenient => ReadMode::Lenient,
        }
    }

    pub fn get(&self, blob_path: &str) -> Option<&Arc<[u8]>> {
        self.files.get(blob_path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The bytes of the blob at `offset` of `blob_path`, checked against `ty`.
    pub fn blob_data(&self, blob_path: &str, offset: u64, ty: &TensorType) -> Result<&[u8]> {
        let file = self.files.get(blob_path).ok_or_else(|| {
            Error::Weights(format!("no weight file given for BLOBFILE path `{blob_path}`"))
        })?;
        let reader = anemone_mil::blob::BlobFile::from_bytes(file)
            .map_err(|e| Error::Weights(format!("{blob_path}: {e}")))?;
        reader
            .read(offset, ty, self.read_mode())
            .map_err(|e| Error::Weights(format!("{blob_path} at offset {offset}: {e}")))
    }

    /// Checks that every BLOBFILE reference of the program has its data here, of the
    /// declared type and size.
    pub fn check_program(&self, program: &Program) -> Result<()> {
        for (blob, ty, _) in program.blob_refs() {
            let ty = ty.as_tensor().ok_or_else(|| {
                Error::Weights(format!("BLOBFILE `{}` must have a tensor type", blob.path))
            })?;
            self.blob_data(&blob.path, blob.offset, &ty)?;
        }
        Ok(())
    }

    /// The files this program refers to, as an independent copy: what a compile snapshots.
    pub fn snapshot(&self, program: &Program) -> Weights {
        let mut out = Weights { files: BTreeMap::new(), mode: self.mode };
        for (blob, _, _) in program.blob_refs() {
            if let Some(bytes) = self.files.get(&blob.path) {
                // Arc<[u8]> is immutable, so sharing is a snapshot: nobody can change these
                // bytes; a "changed" file is a new Arc.
                out.files.insert(blob.path.clone(), bytes.clone());
            }
        }
        out
    }

    /// Feeds the weights into a hash (for the compile cache).
    pub fn hash_into(&self, h: &mut blake3::Hasher) {
        h.update(&(self.files.len() as u64).to_le_bytes());
        for (path, bytes) in &self.files {
            h.update(&(path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.update(&[self.mode as u8]);
    }
}
