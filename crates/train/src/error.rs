//! The training crate's errors. Each says which file, tensor or setting it concerns and,
//! where there is one, what to do about it.

use std::path::PathBuf;

use thiserror::Error;

/// The training crate's result type: [`Error`](enum@Error) unless stated otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything training can fail with: configuration, data, tokenizer, checkpoints,
/// divergence, the device and its kernels, and file I/O.
#[derive(Debug, Error)]
pub enum Error {
    /// A model or training configuration that is inconsistent or that the ANE cannot take.
    #[error("config: {0}")]
    Config(String),
    /// Training data that cannot be used (missing, empty, too short, out-of-range ids).
    #[error("data: {0}")]
    Data(String),
    /// A tokenizer file that cannot be read, or text it cannot encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A checkpoint or model file that is corrupt, truncated or does not match the config.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint or model file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error("{0}")]
    Diverged(String),
    /// The device kernels could not be built, compiled or run.
    #[error("device: {0}")]
    Device(#[from] anemone::Error),
    /// A kernel program did not build (a bug in the kernel builders, or a config the
    /// builder refuses).
    #[error("kernel `{kernel}`: {message}")]
    Kernel {
        /// The kernel's name ([`KernelKind::name`](crate::kernels::KernelKind::name)).
        kernel: &'static str,
        /// What the builder or the device compile said.
        message: String,
    },
    /// Reading or writing a file failed (config, data, checkpoint, loss curve).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with the file or action it concerns.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    /// A checkpoint error for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Checkpoint { path: path.into(), message: message.into() }
    }
}
