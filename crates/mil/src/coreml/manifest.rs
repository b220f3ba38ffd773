//! `.mlpackage` directories: finding the model file through `Manifest.json`.
//!
//! A package holds `Manifest.json` and a `Data/` folder. The manifest's
//! `rootModelIdentifier` names an entry of `itemInfoEntries`, whose `path` is the model
//! file relative to `Data/` (coremltools writes `com.apple.CoreML/model.mlmodel`). The
//! package is the trust boundary: a path that is absolute, has `..`, or leads outside the
//! package through a symlink is refused. The symlink check is the one BLOBFILE paths go
//! through ([`ModelDir::resolve`]), with the package as the directory.

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::error::CoreMlError;
use crate::package::{MODEL_PATH_PREFIX, ModelDir, PackageError};

/// The manifest file of a package.
pub const MANIFEST_FILE: &str = "Manifest.json";
/// The folder of a package that manifest paths are relative to.
pub const DATA_DIR: &str = "Data";

/// The model file of the package at `package`, canonical.
pub(super) fn model_file(package: &Path) -> Result<PathBuf, CoreMlError> {
    let manifest = package.join(MANIFEST_FILE);
    let shown = manifest.display().to_string();
    let bad = |reason: String| CoreMlError::Manifest { path: shown.clone(), reason };
    let bytes = match fs::read(&manifest) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CoreMlError::Manifest {
                path: package.display().to_string(),
                reason: format!("no {MANIFEST_FILE} in the directory: it is not an .mlpackage"),
            });
        }
        Err(e) => return Err(CoreMlError::io(&manifest, e)),
    };
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Some(id) = json.get("rootModelIdentifier").and_then(|v| v.as_str()) else {
        return Err(bad("no \"rootModelIdentifier\" string".to_string()));
    };
    let Some(entry) = json.get("itemInfoEntries").and_then(|e| e.get(id)) else {
        return Err(bad(format!(
            "\"itemInfoEntries\" has no entry \"{id}\", the rootModelIdentifier"
        )));
    };
    let Some(rel) = entry.get("path").and_then(|v| v.as_str()) else {
        return Err(bad(format!("the entry \"{id}\" has no \"path\" string")));
    };

    let escape = |reason: String| CoreMlError::ManifestEscape {
        path: package.display().to_string(),
        entry: rel.to_string(),
        reason,
    };
    let path = Path::new(rel);
    if rel.starts_with('/') || rel.starts_with('\\') || path.has_root() || path.is_absolute() {
        return Err(escape("is an absolute path".to_string()));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir | Component::Prefix(_))) {
        return Err(escape("contains a `..` component".to_string()));
    }

    // The package directory as a model directory: the manifest's parent is its root.
    let dir = ModelDir::open(&manifest).map_err(|e| package_error(&manifest, e))?;
    match dir.resolve(&format!("{MODEL_PATH_PREFIX}{DATA_DIR}/{rel}")) {
        Ok(real) => Ok(real),
        Err(PackageError::Escapes { resolved, .. }) => {
            Err(escape(format!("leads to {resolved} through a symlink")))
        }
        Err(PackageError::MissingFile { path, .. }) => {
            Err(bad(format!("it names the model file \"{rel}\", but there is no file at {path}")))
        }
        Err(PackageError::BadPath { reason, .. }) => {
            Err(bad(format!("it names the model file \"{rel}\", which {reason}")))
        }
        Err(e) => Err(package_error(&manifest, e)),
    }
}

fn package_error(path: &Path, e: PackageError) -> CoreMlError {
    match e {
        PackageError::Io { path, source } => CoreMlError::Io { path, source },
        other => {
            CoreMlError::Manifest { path: path.display().to_string(), reason: other.to_string() }
        }
    }
}
