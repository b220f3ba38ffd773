//! The reader's error: every message starts with the file it concerns and says where in the
//! model the problem is (function, op type and `name` attribute, input or output).

use std::fmt::Write as _;
use std::sync::Arc;

use crate::ops::OpKind;
use crate::package::PackageError;

/// An op type that anemone does not know, with where it is first used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownOp {
    /// The op type, e.g. `linear`.
    pub op: String,
    /// The function of its first use.
    pub function: String,
    /// The `name` attribute of its first use, if it has one.
    pub name: Option<String>,
}

/// Why a Core ML model could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CoreMlError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory, as given or as resolved.
        path: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The path is neither an `.mlpackage` directory nor a model file.
    #[error("{path}: {reason}")]
    NotAModel {
        /// The path that was given.
        path: String,
        /// What it is instead, and what to do (e.g. a compiled `.mlmodelc` directory).
        reason: String,
    },
    /// An `.mlpackage` whose `Manifest.json` is missing, garbled, or names no model file.
    #[error("{path}: {reason}")]
    Manifest {
        /// The package directory or its `Manifest.json`.
        path: String,
        /// What is wrong with the manifest.
        reason: String,
    },
    /// `Manifest.json` names a model file outside the package.
    #[error(
        "{path}: Manifest.json names the model file \"{entry}\", which {reason}; the model \
         must lie inside the package"
    )]
    ManifestEscape {
        /// The package directory.
        path: String,
        /// The model path the manifest gives, relative to `Data/`.
        entry: String,
        /// Why it is outside (absolute, has `..`, or leads out through a symlink).
        reason: String,
    },
    /// The model file is not a valid Core ML protobuf message (truncated or corrupt).
    #[error("{path}: not a valid Core ML model file (truncated or corrupt?): {source}")]
    Decode {
        /// The model file (or "the model bytes" for [`decode_model`](super::decode_model)).
        path: String,
        /// What protobuf decoding reported.
        #[source]
        source: prost::DecodeError,
    },
    /// A valid model of a kind other than ML Program (neural network, pipeline, ...).
    #[error("{path}: {message}")]
    NotMlProgram {
        /// The model file.
        path: String,
        /// The model type as the Core ML spec names it (`neuralNetwork`, `pipeline`, ...), or
        /// `none` when no type is set.
        kind: &'static str,
        /// What the file is, and how to get an ML Program instead where there is a way.
        message: String,
    },
    /// Valid Core ML that anemone does not take: flexible shapes, control flow, state,
    /// list types, image inputs, names that are not MIL identifiers.
    #[error("{path}: {at}: {message}")]
    Unsupported {
        /// The model file.
        path: String,
        /// The diagnostic code of the feature, e.g. `coreml::flexible-shape`,
        /// `coreml::control-flow`, `coreml::state`; [`CoreMlError::code`] returns it.
        code: &'static str,
        /// Where in the model: function, op type and `name`, input or output.
        at: String,
        /// What is not supported.
        message: String,
    },
    /// Ops that anemone does not know, every one of them.
    #[error("{path}: {}", unknown_ops_message(.ops))]
    UnknownOps {
        /// The model file.
        path: String,
        /// Each unknown op type once, with its first use.
        ops: Vec<UnknownOp>,
    },
    /// Content that contradicts itself or the format.
    #[error("{path}: {at}: {message}")]
    Malformed {
        /// The model file.
        path: String,
        /// Where in the model: function, op type and `name`, input or output, or
        /// "model description".
        at: String,
        /// What contradicts what.
        message: String,
    },
    /// A weight file that a BLOBFILE value names could not be found or opened.
    #[error("{path}: {at}: {source}")]
    Weights {
        /// The model file.
        path: String,
        /// The first use of the weight file: function, op type and `name`, or a program
        /// attribute.
        at: String,
        /// Why the file could not be used: missing, outside the model directory, unreadable.
        #[source]
        source: Box<PackageError>,
    },
}

impl CoreMlError {
    pub(super) fn io(path: &std::path::Path, e: std::io::Error) -> CoreMlError {
        CoreMlError::Io { path: path.display().to_string(), source: Arc::new(e) }
    }

    /// A stable identifier of the kind of problem, e.g. `coreml::flexible-shape`.
    pub fn code(&self) -> &'static str {
        match self {
            CoreMlError::Io { .. } => "coreml::io",
            CoreMlError::NotAModel { .. } => "coreml::not-a-model",
            CoreMlError::Manifest { .. } => "coreml::manifest",
            CoreMlError::ManifestEscape { .. } => "coreml::manifest-escape",
            CoreMlError::Decode { .. } => "coreml::decode",
            CoreMlError::NotMlProgram { .. } => "coreml::not-ml-program",
            CoreMlError::Unsupported { code, .. } => code,
            CoreMlError::UnknownOps { .. } => "coreml::unknown-ops",
            CoreMlError::Malformed { .. } => "coreml::malformed",
            CoreMlError::Weights { .. } => "coreml::weights",
        }
    }
}

fn unknown_ops_message(ops: &[UnknownOp]) -> String {
    let plural = if ops.len() == 1 { "an op" } else { "ops" };
    let mut out = format!("the model uses {plural} anemone does not know: ");
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{} (first in function {}", op.op, op.function);
        if let Some(name) = &op.name {
            let _ = write!(out, ", op \"{name}\"");
        }
        out.push(')');
    }
    let known: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
    let _ = write!(out, ". It supports {}", known.join(", "));
    out
}
