//! Reading a program from the command line's PATH: a `.mil` file or a model directory
//! holding `model.mil` and `weights/`.

use std::path::{Path, PathBuf};

use anemone_mil::package::ModelDir;

/// A MIL program's text and where it came from.
pub struct Source {
    /// The `.mil` file read.
    pub mil_path: PathBuf,
    /// The file name shown in diagnostics.
    pub display_name: String,
    pub text: String,
    /// The directory BLOBFILE paths (`@model_path/...`) resolve in.
    pub model_dir: ModelDir,
}

impl Source {
    /// Reads PATH; the error says what could not be read and why.
    pub fn load(path: &Path) -> Result<Source, String> {
        let model_dir = ModelDir::open(path).map_err(|e| e.to_string())?;
        let mil_path = model_dir.mil_path().to_path_buf();
        let bytes = std::fs::read(&mil_path)
            .map_err(|e| format!("cannot read {}: {e}", mil_path.display()))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            format!(
                "{} is not UTF-8 text (invalid byte at offset {})",
                mil_path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        Ok(Source { display_name: mil_path.display().to_string(), mil_path, text, model_dir })
    }
}
