//! Reading a program from a path a user gives: a `.mil` file, a model directory holding
//! `model.mil` and `weights/`, or a Core ML model (`.mlpackage` directory or `.mlmodel` file).
//! The `anemone` command and the Python package both load through here.
//!
//! A Core ML model is read into the IR, rewritten where the ANE deviates from MIL
//! ([`anemone_mil::lower`]), and printed as MIL text: callers then work on that text like on
//! any other program, so diagnostics point at lines of the program as MIL.

use std::path::{Path, PathBuf};

use anemone_mil::coreml::{self, CoreMlModel};
use anemone_mil::lower::{self, Lowering};
use anemone_mil::package::{ModelDir, Weights};
use anemone_mil::{Program, text};

/// A MIL program's text and where it came from.
pub struct Source {
    /// The `.mil` file read (for a Core ML model, its `model.mlmodel`).
    pub mil_path: PathBuf,
    /// The file name shown in diagnostics.
    pub display_name: String,
    /// The program as MIL text (for a Core ML model, printed after the rewrites).
    pub text: String,
    /// The directory BLOBFILE paths (`@model_path/...`) resolve in.
    pub model_dir: ModelDir,
    /// Set when PATH is a Core ML model.
    pub imported: Option<Imported>,
}

/// What reading a Core ML model gave besides the text.
pub struct Imported {
    /// The model as read (its program before the rewrites; the weights mapped).
    pub model: CoreMlModel,
    /// The program after the rewrites for the ANE: what `text` prints.
    pub program: Program,
    /// The rewrites made for the ANE.
    pub lowerings: Vec<Lowering>,
}

impl Source {
    /// Reads `path`; the error says what could not be read and why.
    pub fn load(path: &Path) -> Result<Source, String> {
        if coreml::is_coreml_path(path) {
            return Source::load_coreml(path);
        }
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
        Ok(Source {
            display_name: mil_path.display().to_string(),
            mil_path,
            text,
            model_dir,
            imported: None,
        })
    }

    fn load_coreml(path: &Path) -> Result<Source, String> {
        let model = coreml::read(path).map_err(|e| e.to_string())?;
        let mut program = model.program.clone();
        let lowerings = lower::for_ane(&mut program);
        let text = text::print(&program);
        let model_dir = ModelDir::open(&model.model_file).map_err(|e| e.to_string())?;
        Ok(Source {
            display_name: format!("{} (as MIL)", path.display()),
            mil_path: model.model_file.clone(),
            text,
            model_dir,
            imported: Some(Imported { model, program, lowerings }),
        })
    }

    /// The weights of a Core ML model, already mapped; None for MIL sources.
    pub fn imported_weights(&self) -> Option<&Weights> {
        self.imported.as_ref().map(|i| &i.model.weights)
    }

    /// The rewrites made for the ANE (none for MIL sources).
    pub fn lowerings(&self) -> &[Lowering] {
        self.imported.as_ref().map_or(&[], |i| &i.lowerings)
    }
}
