//! The runtime's errors. Each says which model, op, tensor or file it concerns and, where
//! there is one, what to do.

use thiserror::Error;

/// The runtime's result type: [`Error`](enum@Error) unless stated otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the runtime can fail with: validation, names, shapes, backend availability,
/// the compile budget, surfaces, memory, lifecycle, weights, device calls and file I/O.
#[derive(Debug, Error)]
pub enum Error {
    /// The program does not validate; the diagnostics say why.
    #[error("the program is not valid: {}", summarize(.0))]
    Invalid(Vec<anemone_mil::Diagnostic>),
    /// A name that is not an input or output of the function.
    #[error("{0}")]
    UnknownName(String),
    /// A tensor of the wrong shape, dtype or size.
    #[error("{0}")]
    Shape(String),
    /// Something the backend cannot do (yet), said plainly.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The backend is not available on this machine.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The compile budget is spent (the ANE crashes past ~119 compiles per process).
    #[error(
        "compile budget spent: {used} compiles of {limit} allowed{scope}; the ANE fails \
         silently and then crashes past ~119 compiles per process (REFERENCE.md §2). \
         Reuse compiled models (identical program and weights hit the cache), pass \
         changing weights as inputs (dynamic weights), or restart the process from a \
         checkpoint"
    )]
    BudgetExhausted {
        /// Compiles already charged.
        used: usize,
        /// The refusal threshold ([`BudgetLimits::refuse_at`](crate::BudgetLimits::refuse_at)).
        limit: usize,
        /// Whose budget: `" per process"` on the ANE, `" per simulator device"` on the
        /// simulator (starts with a space; printed right after `limit`).
        scope: &'static str,
    },
    /// Evaluate was called with input or output surfaces of unequal allocation sizes.
    #[error(
        "evaluate error 0x1d: {what} surfaces have unequal allocation sizes ({sizes}); the \
         ANE requires all inputs to share one size and all outputs to share one size"
    )]
    UnequalSurfaces {
        /// `input` or `output`.
        what: &'static str,
        /// Each surface's name and allocation size, as printed: `` `x` 128 B, `y` 64 B``.
        sizes: String,
    },
    /// Memory for surfaces or activations could not be allocated.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A lifecycle call in the wrong state (evaluate before load, ...).
    #[error("{0}")]
    State(String),
    /// Weight files: missing, corrupt, or not matching the program.
    #[error("weights: {0}")]
    Weights(String),
    /// An error reported by the device (with the framework's own description).
    #[error("{op} failed: {message}")]
    Device {
        /// The call that failed (`compile`, `load`, `evaluate`, `reload`, `IOSurfaceLock`,
        /// ...).
        op: &'static str,
        /// The device's description of the failure (an `NSError`'s, on the ANE).
        message: String,
    },
    /// Creating or writing a file failed (the ANE backend's model directory and its
    /// weight files).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// The errors among `diags`, one per line as `error[code]: message` with their notes and
/// hints (the spans point into text the runtime does not have; `anemone check` or
/// [`anemone_mil::Diagnostics::with_source`] show them as `file:line:col`).
fn summarize(diags: &[anemone_mil::Diagnostic]) -> String {
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
    let mut out = match errors.len() {
        0 => return "no errors".to_string(),
        1 => String::new(),
        n => format!("{n} errors"),
    };
    for d in errors {
        out.push_str(if out.is_empty() { "" } else { "\n" });
        let _ = anemone_mil::diag::write_plain(&mut out, d);
    }
    out
}

impl From<anemone_mil::Diagnostics> for Error {
    /// Diagnostics become [`Error::Invalid`] (their source text, if any, is not kept).
    fn from(diags: anemone_mil::Diagnostics) -> Error {
        Error::Invalid(diags.into_vec())
    }
}
