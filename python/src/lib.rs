//! `anemone._anemone`: the Python extension of the `anemone` package. It binds the library's
//! loading, checking, building, running and probing to Python values; the pure-Python
//! layer in `python/anemone/` gives them their public shape (classes with reprs, dicts of
//! NumPy arrays, warnings).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyList;

mod arrays;
mod builder;
mod errors;
mod model;
mod probe;
mod source;

/// The findings `anemone check` reports for `path`, as dicts of the `Diagnostic` fields.
#[pyfunction]
#[pyo3(signature = (path, lenient=false))]
fn check<'py>(py: Python<'py>, path: PathBuf, lenient: bool) -> PyResult<Bound<'py, PyList>> {
    let found = source::check(py, &path, lenient)?;
    let list = PyList::empty(py);
    for d in &found {
        list.append(d.to_dict(py)?)?;
    }
    Ok(list)
}

#[pymodule]
fn _anemone(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(probe::probe_weight_reload, m)?)?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<builder::PyBuilder>()?;
    m.add_class::<builder::PyProgram>()?;
    Ok(())
}
