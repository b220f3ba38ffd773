//! Python exceptions from the library's errors. The classes live in `anemone/_errors.py`
//! (so that they can inherit from `ValueError` and carry diagnostics); each error raised
//! here names its class and keeps the library's message word for word.

use anemone::mil::diag::{self, LineCol};
use anemone::mil::{Diagnostic, Diagnostics};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyModule};

/// The exception classes of `anemone._errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Load,
    Parse,
    Validation,
    Build,
    Compile,
    Device,
    Input,
    Shape,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Load => "LoadError",
            Kind::Parse => "ParseError",
            Kind::Validation => "ValidationError",
            Kind::Build => "BuildError",
            Kind::Compile => "CompileError",
            Kind::Device => "DeviceError",
            Kind::Input => "InputError",
            Kind::Shape => "ShapeError",
        }
    }
}

/// The `anemone._errors` module, imported once.
fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || Ok(PyModule::import(py, "anemone._errors")?.unbind()))
        .map(|m| m.bind(py))
}

/// An exception of class `kind` with `message` and the findings behind it.
pub fn raise(
    py: Python<'_>,
    kind: Kind,
    message: impl Into<String>,
    diagnostics: &[DiagFields],
) -> PyErr {
    let message = message.into();
    let build = || -> PyResult<PyErr> {
        let class = errors_module(py)?.getattr(kind.class_name())?;
        let list = PyList::empty(py);
        for d in diagnostics {
            list.append(d.to_dict(py)?)?;
        }
        let value = class.call1((message.clone(), list))?;
        Ok(PyErr::from_value(value))
    };
    // Only a broken installation (no `anemone._errors`) gets here; the message survives.
    build().unwrap_or_else(|e| PyRuntimeError::new_err(format!("{message} (and: {e})")))
}

/// One diagnostic as the Python `Diagnostic` takes it.
#[derive(Clone, Debug)]
pub struct DiagFields {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub label: Option<String>,
    pub help: Option<String>,
    /// The text `anemone check` prints for it (without colours).
    pub rendered: String,
}

impl DiagFields {
    /// `d`, positioned in `source` (file name and text) when given.
    pub fn of(d: &Diagnostic, source: Option<(&str, &str)>) -> DiagFields {
        let position = source.zip(d.span).map(|((_, text), span)| LineCol::of(text, span.start));
        let rendered = match source {
            Some((file, text)) => diag::render_plain(d, file, text),
            None => {
                let mut out = String::new();
                // Writing into a String cannot fail.
                let _ = diag::write_plain(&mut out, d);
                out
            }
        };
        DiagFields {
            severity: d.severity.as_str(),
            code: d.code,
            message: d.message.clone(),
            file: source.map(|(file, _)| file.to_string()),
            line: position.map(|p| p.line),
            col: position.map(|p| p.column),
            label: d.label.clone(),
            help: d.help.clone(),
            rendered,
        }
    }

    pub fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("severity", self.severity)?;
        dict.set_item("code", self.code)?;
        dict.set_item("message", &self.message)?;
        dict.set_item("file", &self.file)?;
        dict.set_item("line", self.line)?;
        dict.set_item("col", self.col)?;
        dict.set_item("label", &self.label)?;
        dict.set_item("help", &self.help)?;
        dict.set_item("rendered", &self.rendered)?;
        Ok(dict)
    }
}

/// Diagnostics as an exception of class `kind`: the message is their `Display`, the same
/// text the Rust `Diagnostics` error shows (with `file:line:col` and the source line when
/// they carry their source).
pub fn from_diagnostics(py: Python<'_>, kind: Kind, diags: &Diagnostics) -> PyErr {
    let fields: Vec<DiagFields> = diags.iter().map(|d| DiagFields::of(d, diags.source())).collect();
    raise(py, kind, diags.to_string(), &fields)
}

/// A runtime error as an exception. `unknown_name` is the class for
/// [`anemone::Error::UnknownName`], whose meaning depends on the call: a wrong input name in
/// `predict`, an unknown function or device elsewhere. `source` is the program's file name
/// and text, for placing validation errors.
pub fn runtime(
    py: Python<'_>,
    e: anemone::Error,
    unknown_name: Kind,
    source: Option<(&str, &str)>,
) -> PyErr {
    use anemone::Error as E;
    let kind = match &e {
        E::Invalid(diags) => {
            let errors: Vec<Diagnostic> = diags.iter().filter(|d| d.is_error()).cloned().collect();
            let mut diags = Diagnostics::new(errors);
            if let Some((file, text)) = source {
                diags = diags.with_source(file, text);
            }
            return from_diagnostics(py, Kind::Validation, &diags);
        }
        E::UnknownName(_) => unknown_name,
        E::Shape(_) => Kind::Shape,
        E::Unsupported(_) | E::BudgetExhausted { .. } | E::Weights(_) => Kind::Compile,
        E::Unavailable(_)
        | E::UnequalSurfaces { .. }
        | E::OutOfMemory(_)
        | E::State(_)
        | E::Device { .. }
        | E::Io { .. } => Kind::Device,
    };
    raise(py, kind, e.to_string(), &[])
}
