//! `Model`: a program compiled for a device, run on NumPy arrays through
//! [`anemone::Model::predict`].

use std::path::PathBuf;
use std::sync::Mutex;

use anemone::mil::blob::ReadMode;
use anemone::mil::package::Weights;
use anemone::mil::{DType, Program, text};
use anemone::npy::{self, Array, Data};
use anemone::{Device, ModelOptions};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::arrays;
use crate::errors::{self, Kind};
use crate::source;

/// One input or output: name, shape, MIL element type.
type TensorInfo = (String, Vec<usize>, DType);

/// A compiled model. Calls run one at a time (the model owns one set of surfaces); the
/// interpreter's lock is released while the device computes.
#[pyclass(module = "anemone._anemone", name = "Model", frozen)]
pub struct PyModel {
    model: Mutex<anemone::Model>,
    /// The program's file name (as diagnostics show it) and text, when it came from one.
    source: Option<(String, String)>,
    rewrites: Vec<String>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    device: &'static str,
    function: String,
}

/// The device `name` asks for; `None` follows `ANEMONE_DEVICE`, else picks automatically.
pub fn select_device(py: Python<'_>, name: Option<&str>) -> PyResult<Device> {
    match name {
        Some(name) => Device::by_name(name),
        None => Device::from_env(),
    }
    .map_err(|e| errors::runtime(py, e, Kind::Device, None))
}

/// Compiles `program` on the device `device` names.
pub fn compile(
    py: Python<'_>,
    program: &Program,
    weights: &Weights,
    device: Option<&str>,
    options: ModelOptions,
    source: Option<(String, String)>,
    rewrites: Vec<String>,
) -> PyResult<PyModel> {
    let device = select_device(py, device)?;
    let compiled = py.detach(|| device.compile_with(program, weights, &options));
    let model = compiled.map_err(|e| {
        let shown = source.as_ref().map(|(f, t)| (f.as_str(), t.as_str()));
        errors::runtime(py, e, Kind::Compile, shown)
    })?;
    let info = |s: &anemone::Surface| (s.name().to_string(), s.shape().to_vec(), s.dtype());
    Ok(PyModel {
        inputs: model.inputs().iter().map(info).collect(),
        outputs: model.outputs().iter().map(info).collect(),
        device: model.device().kind().name(),
        function: model.function().to_string(),
        model: Mutex::new(model),
        source,
        rewrites,
    })
}

/// Reads, validates and compiles the model at `path`.
#[pyfunction]
#[pyo3(signature = (path, device=None, function=None, lenient=false))]
pub fn load(
    py: Python<'_>,
    path: PathBuf,
    device: Option<&str>,
    function: Option<String>,
    lenient: bool,
) -> PyResult<PyModel> {
    let loaded = source::read_program(py, &path)?;
    let read_mode = if lenient { ReadMode::Lenient } else { ReadMode::Strict };
    let rewrites: Vec<String> = loaded.source.lowerings().iter().map(|l| l.to_string()).collect();
    let source = Some((loaded.source.display_name, loaded.source.text));
    let options = ModelOptions { function, read_mode };
    compile(py, &loaded.program, &loaded.weights, device, options, source, rewrites)
}

fn info_tuples<'py>(py: Python<'py>, infos: &[TensorInfo]) -> PyResult<Vec<Bound<'py, PyTuple>>> {
    infos
        .iter()
        .map(|(name, shape, dtype)| {
            let shape = PyTuple::new(py, shape)?;
            (name.as_str(), shape, dtype.name()).into_pyobject(py)
        })
        .collect()
}

/// `array` for input `info` in the encoding its surface holds, when it is a float input
/// given other values: the conversion `anemone run` makes (correctly rounded from the
/// array's own type), with a note when values changed. Anything else is passed on as it is,
/// for `predict` to accept or refuse with its own message.
fn convert_float_input(array: Array, info: &TensorInfo) -> (Array, Option<String>) {
    let (name, shape, dtype) = info;
    let already =
        matches!((&array.data, dtype), (Data::F32(_), DType::Fp32) | (Data::F16(_), DType::Fp16));
    if already || !matches!(dtype, DType::Fp16 | DType::Fp32) || array.shape != *shape {
        return (array, None);
    }
    let Ok((bytes, conversion)) = npy::floats_as(&array.data, *dtype) else {
        return (array, None);
    };
    let note = (!conversion.is_exact()).then(|| {
        format!("input `{name}`: {}", conversion.describe(array.data.type_name(), *dtype))
    });
    let shape = array.shape.clone();
    let converted = match dtype {
        DType::Fp16 => Array::new(
            shape,
            Data::F16(
                bytes
                    .chunks_exact(2)
                    .map(|c| anemone::mil::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
        ),
        _ => Array::new(
            shape,
            Data::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        ),
    };
    match converted {
        Ok(converted) => (converted, note),
        Err(_) => (array, None),
    }
}

#[pymethods]
impl PyModel {
    /// `(name, shape, mil_dtype)` of every input, in declaration order.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        info_tuples(py, &self.inputs)
    }

    /// `(name, shape, mil_dtype)` of every output, in declaration order.
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        info_tuples(py, &self.outputs)
    }

    /// `sim` or `ane`.
    #[getter]
    fn device(&self) -> &'static str {
        self.device
    }

    /// The function that runs.
    #[getter]
    fn function(&self) -> &str {
        &self.function
    }

    /// The rewrites made for the ANE when the model was imported from Core ML.
    #[getter]
    fn rewrites(&self) -> Vec<String> {
        self.rewrites.clone()
    }

    /// The file the program came from, as diagnostics name it (`None` for built programs).
    #[getter]
    fn source_name(&self) -> Option<&str> {
        self.source.as_ref().map(|(f, _)| f.as_str())
    }

    /// The program as MIL text.
    fn mil_text(&self, py: Python<'_>) -> PyResult<String> {
        let model = self.lock(py)?;
        Ok(text::print(model.program()))
    }

    /// Runs the model on `inputs` (`(name, ndarray)` pairs). Returns the outputs as
    /// `(name, ndarray)` pairs in declaration order, and a note for each input whose values
    /// changed in conversion.
    #[allow(clippy::type_complexity)]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<(String, Bound<'py, PyAny>)>,
    ) -> PyResult<(Vec<(String, Bound<'py, PyAny>)>, Vec<String>)> {
        let mut arrays: Vec<(String, Array)> = Vec::with_capacity(inputs.len());
        let mut notes = Vec::new();
        for (name, value) in &inputs {
            let array = arrays::from_numpy(value, &format!("input `{name}`"))?;
            let array = match self.inputs.iter().find(|i| i.0 == *name) {
                Some(info) => {
                    let (array, note) = convert_float_input(array, info);
                    notes.extend(note);
                    array
                }
                None => array,
            };
            arrays.push((name.clone(), array));
        }
        let outputs = py.detach(|| {
            let named: Vec<(&str, &Array)> = arrays.iter().map(|(n, a)| (n.as_str(), a)).collect();
            // The guard is dropped before the interpreter's lock is taken back.
            let mut model = self.model.lock().map_err(|_| None)?;
            model.predict(&named).map_err(Some)
        });
        let mut outputs = outputs.map_err(|e| match e {
            Some(e) => {
                let shown = self.source.as_ref().map(|(f, t)| (f.as_str(), t.as_str()));
                errors::runtime(py, e, Kind::Input, shown)
            }
            None => poisoned(py),
        })?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for (name, _, dtype) in &self.outputs {
            if let Some(array) = outputs.remove(name) {
                result.push((name.clone(), arrays::to_numpy(py, array, *dtype)?));
            }
        }
        Ok((result, notes))
    }

    fn __repr__(&self) -> String {
        format!("<anemone._anemone.Model function={} device={}>", self.function, self.device)
    }
}

impl PyModel {
    fn lock(&self, py: Python<'_>) -> PyResult<std::sync::MutexGuard<'_, anemone::Model>> {
        self.model.lock().map_err(|_| poisoned(py))
    }
}

/// A panic inside the library mid-evaluation leaves a model in an unknown state: it is
/// refused from then on rather than trusted to return right numbers.
fn poisoned(py: Python<'_>) -> PyErr {
    errors::raise(
        py,
        Kind::Device,
        "the model failed in an earlier call and cannot be used again: load it again",
        &[],
    )
}
