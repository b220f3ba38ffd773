//! `Builder` and `Program`: small MIL programs built from Python through the library's
//! [`anemone::Builder`].
//!
//! The library's function builder borrows its program builder for as long as the function
//! is open, which a Python object cannot hold across calls. So the Python builder keeps the
//! calls made so far as steps, and each new call replays them into a fresh builder and then
//! makes the new one: the library infers its result type (or refuses it) at that call, as it
//! does in Rust. Values are named by (step, result) so that replays wire them up the same
//! way. A replay skips packing the earlier weights: only their types matter until `build`.

use std::path::PathBuf;

use anemone::mil::builder::{
    Arg, BuildError, BuiltProgram, ConvOptions, DEFAULT_WEIGHT_PATH, FunctionBuilder, Var,
};
use anemone::mil::ops::OpKind;
use anemone::mil::{DType, Literal, TensorData, TensorType, Type, bf16, f16};
use anemone::{Builder, ModelOptions};
use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{self, Kind};
use crate::model::{self, PyModel};

/// A value of the function: the step that made it and which of its results.
type Handle = (usize, usize);

/// One call that adds values, replayed against a function builder with the values of the
/// earlier steps.
type StepFn = Box<
    dyn Fn(&mut FunctionBuilder<'_>, &[Vec<Var>]) -> Result<Vec<Var>, BuildError> + Send + Sync,
>;

enum Step {
    /// Inputs, constants and ops.
    Values(StepFn),
    /// A weight in the default weight file, from f32 values.
    Weight { hint: String, ty: TensorType, values: Vec<f32> },
    /// Marks a value as an output, renaming it when a name is given.
    Output { value: Handle, name: Option<String> },
}

/// The value `h` names; an error (not a panic) for a handle of no step.
fn value(slots: &[Vec<Var>], h: Handle) -> Result<&Var, BuildError> {
    slots.get(h.0).and_then(|s| s.get(h.1)).ok_or_else(|| BuildError::Op {
        op: "builder",
        name: format!("{h:?}"),
        message: "no such value in this builder".into(),
    })
}

/// An input of an op given from Python.
#[derive(Clone, Debug)]
enum ArgSpec {
    Value(Handle),
    Tuple(Vec<Handle>),
    Literal(Literal),
}

impl ArgSpec {
    fn resolve(&self, slots: &[Vec<Var>]) -> Result<Arg, BuildError> {
        Ok(match self {
            ArgSpec::Value(h) => Arg::Var(value(slots, *h)?.clone()),
            ArgSpec::Tuple(hs) => {
                Arg::Tuple(hs.iter().map(|h| value(slots, *h).cloned()).collect::<Result<_, _>>()?)
            }
            ArgSpec::Literal(l) => Arg::Lit(l.clone()),
        })
    }
}

fn dtype_named(name: &str) -> PyResult<DType> {
    DType::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!("unknown MIL dtype `{name}` (fp16, fp32, int32, bool, ...)"))
    })
}

/// A literal of `dtype` shaped `shape` from Python values (a scalar when `shape` is empty).
fn literal(dtype: &str, shape: Vec<usize>, values: &Bound<'_, PyAny>) -> PyResult<Literal> {
    let dtype = dtype_named(dtype)?;
    let bad = |what: String| PyValueError::new_err(format!("{dtype} literal: {what}"));
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    let data = match dtype {
        DType::String => TensorData::Str(values.extract()?),
        DType::Bool => TensorData::Bool(values.extract()?),
        DType::Fp16 => {
            TensorData::F16(values.extract::<Vec<f64>>()?.into_iter().map(f16::from_f64).collect())
        }
        DType::Bf16 => TensorData::BF16(
            values.extract::<Vec<f64>>()?.into_iter().map(bf16::from_f64).collect(),
        ),
        DType::Fp32 => {
            TensorData::F32(values.extract::<Vec<f64>>()?.into_iter().map(|v| v as f32).collect())
        }
        DType::Fp64 => TensorData::F64(values.extract()?),
        d if d.is_signed_int() || d.is_unsigned_int() => {
            let ints: Vec<i128> = values.extract()?;
            let (lo, hi) = d.int_range().ok_or_else(|| bad("no integer range".into()))?;
            if let Some(v) = ints.iter().find(|v| **v < lo || **v > hi) {
                return Err(bad(format!("{v} does not fit {d} ({lo}..={hi})")));
            }
            if d.is_signed_int() {
                TensorData::Int(ints.into_iter().map(|v| v as i64).collect())
            } else {
                TensorData::UInt(ints.into_iter().map(|v| v as u64).collect())
            }
        }
        other => return Err(bad(format!("{other} literals cannot be written from Python values"))),
    };
    if data.len() != count {
        return Err(bad(format!("shape {shape:?} holds {count} values, {} given", data.len())));
    }
    let ty = if shape.is_empty() { Type::Scalar(dtype) } else { Type::tensor(dtype, shape) };
    Ok(Literal::tensor(ty, data))
}

/// An op input from its Python form: `("var", step, index)`, `("tuple", [(step, index),
/// ...])` or `("lit", dtype, shape, values)`.
fn arg_spec(spec: &Bound<'_, PyTuple>) -> PyResult<ArgSpec> {
    let tag: String = spec.get_item(0)?.extract()?;
    match tag.as_str() {
        "var" => Ok(ArgSpec::Value((spec.get_item(1)?.extract()?, spec.get_item(2)?.extract()?))),
        "tuple" => Ok(ArgSpec::Tuple(spec.get_item(1)?.extract()?)),
        "lit" => {
            let dtype: String = spec.get_item(1)?.extract()?;
            let shape: Vec<usize> = spec.get_item(2)?.extract()?;
            Ok(ArgSpec::Literal(literal(&dtype, shape, &spec.get_item(3)?)?))
        }
        other => Err(PyValueError::new_err(format!("unknown argument form `{other}`"))),
    }
}

/// What Python learns of a new value: `(step, index, name, shape, mil_dtype)`.
type VarInfo<'py> = Bound<'py, PyTuple>;

fn var_info<'py>(py: Python<'py>, h: Handle, v: &Var) -> PyResult<VarInfo<'py>> {
    let shape = PyTuple::new(py, v.ty().shape().unwrap_or(&[]))?;
    let dtype = v.ty().dtype().map(DType::name);
    (h.0, h.1, v.name(), shape, dtype).into_pyobject(py)
}

/// Builds one function of a MIL program.
#[pyclass(module = "anemone._anemone", name = "Builder")]
pub struct PyBuilder {
    function: String,
    opset: String,
    steps: Vec<Step>,
}

impl PyBuilder {
    /// Replays every step into a fresh builder, then `extra` (packing its weights, if any:
    /// a new step is checked in full), and finishes the function. `pack` packs the earlier
    /// steps' weights too (for `build`).
    fn replay(
        &self,
        extra: Option<&Step>,
        pack: bool,
    ) -> Result<(Builder, Vec<Vec<Var>>), BuildError> {
        let mut builder = Builder::new();
        let mut slots: Vec<Vec<Var>> = Vec::with_capacity(self.steps.len() + 1);
        let mut f = builder.function_with_opset(&self.function, &self.opset);
        for step in &self.steps {
            let made = apply(&mut f, step, &mut slots, pack)?;
            slots.push(made);
        }
        if let Some(step) = extra {
            let made = apply(&mut f, step, &mut slots, true)?;
            slots.push(made);
        }
        f.finish();
        Ok((builder, slots))
    }

    /// Checks `step` against the steps so far and keeps it; returns its values.
    fn push<'py>(&mut self, py: Python<'py>, step: Step) -> PyResult<Vec<VarInfo<'py>>> {
        let (_, slots) = self.replay(Some(&step), false).map_err(|e| build_error(py, e))?;
        let index = slots.len() - 1;
        self.steps.push(step);
        slots[index].iter().enumerate().map(|(i, v)| var_info(py, (index, i), v)).collect()
    }

    fn push1<'py>(&mut self, py: Python<'py>, step: StepFn) -> PyResult<VarInfo<'py>> {
        let mut made = self.push(py, Step::Values(step))?;
        if made.is_empty() {
            return Err(PyValueError::new_err("the op made no value"));
        }
        Ok(made.remove(0))
    }
}

fn apply(
    f: &mut FunctionBuilder<'_>,
    step: &Step,
    slots: &mut [Vec<Var>],
    pack: bool,
) -> Result<Vec<Var>, BuildError> {
    match step {
        Step::Values(run) => run(f, slots),
        Step::Weight { hint, ty, values } if pack => {
            Ok(vec![f.weight(hint, ty.clone(), values)?])
        }
        // The same constant without its data: the type (all later steps look at) and the
        // name come out as the packed weight's.
        Step::Weight { hint, ty, .. } => {
            Ok(vec![f.constant(hint, Literal::blob(ty.clone(), DEFAULT_WEIGHT_PATH, 64))])
        }
        Step::Output { value: h, name } => {
            let v = value(slots, *h)?.clone();
            let out = match name {
                Some(name) => f.output_named(&v, name)?,
                None => {
                    f.output(&v);
                    v
                }
            };
            // The value has the output's name from now on, whichever handle refers to it.
            slots[h.0][h.1] = out.clone();
            Ok(vec![out])
        }
    }
}

fn build_error(py: Python<'_>, e: BuildError) -> PyErr {
    match e {
        BuildError::Invalid(diags) => {
            errors::from_diagnostics(py, Kind::Validation, &anemone::Diagnostics::new(diags))
        }
        other => errors::raise(py, Kind::Build, other.to_string(), &[]),
    }
}

fn op_kind(name: &str) -> PyResult<OpKind> {
    OpKind::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!("unknown op `{name}` (`anemone ops` lists every op)"))
    })
}

#[pymethods]
impl PyBuilder {
    #[new]
    #[pyo3(signature = (function="main", opset="ios18"))]
    fn new(function: &str, opset: &str) -> PyBuilder {
        PyBuilder { function: function.to_string(), opset: opset.to_string(), steps: Vec::new() }
    }

    /// Declares a function input.
    fn input<'py>(
        &mut self,
        py: Python<'py>,
        name: String,
        shape: Vec<usize>,
        dtype: &str,
    ) -> PyResult<VarInfo<'py>> {
        let ty = TensorType::new(dtype_named(dtype)?, shape);
        self.push1(py, Box::new(move |f, _| Ok(vec![f.input(&name, ty.clone())])))
    }

    /// A weight stored in the weight file, converted from float32 `values` to `dtype`
    /// (fp16, bf16 or fp32), shaped as `values` is.
    fn weight<'py>(
        &mut self,
        py: Python<'py>,
        name: String,
        values: PyReadonlyArrayDyn<'py, f32>,
        dtype: &str,
    ) -> PyResult<VarInfo<'py>> {
        let ty = TensorType::new(dtype_named(dtype)?, values.shape().to_vec());
        // Elements in C order, whatever the array's layout.
        let values: Vec<f32> = values.as_array().iter().copied().collect();
        let mut made = self.push(py, Step::Weight { hint: name, ty, values })?;
        Ok(made.remove(0))
    }

    /// A `const` op holding a literal given as `("lit", dtype, shape, values)`.
    fn constant<'py>(
        &mut self,
        py: Python<'py>,
        name: String,
        spec: Bound<'py, PyTuple>,
    ) -> PyResult<VarInfo<'py>> {
        let ArgSpec::Literal(lit) = arg_spec(&spec)? else {
            return Err(PyValueError::new_err("a constant takes a literal value"));
        };
        self.push1(py, Box::new(move |f, _| Ok(vec![f.constant(&name, lit.clone())])))
    }

    /// Any op by its MIL name, with inputs as `(input name, argument)` pairs; returns every
    /// result.
    fn op<'py>(
        &mut self,
        py: Python<'py>,
        kind: &str,
        name: Option<String>,
        inputs: Vec<(String, Bound<'py, PyTuple>)>,
    ) -> PyResult<Vec<VarInfo<'py>>> {
        let kind = op_kind(kind)?;
        let inputs: Vec<(String, ArgSpec)> =
            inputs.iter().map(|(n, s)| Ok((n.clone(), arg_spec(s)?))).collect::<PyResult<_>>()?;
        let hint = name.unwrap_or_else(|| kind.name().to_string());
        self.push(
            py,
            Step::Values(Box::new(move |f, slots| {
                let resolved: Vec<(&str, Arg)> = inputs
                    .iter()
                    .map(|(n, s)| Ok((n.as_str(), s.resolve(slots)?)))
                    .collect::<Result<_, BuildError>>()?;
                f.op(kind, &hint, &resolved)
            })),
        )
    }

    fn cast<'py>(&mut self, py: Python<'py>, x: Handle, dtype: &str) -> PyResult<VarInfo<'py>> {
        let dtype = dtype_named(dtype)?;
        self.push1(py, Box::new(move |f, s| Ok(vec![f.cast(value(s, x)?, dtype)?])))
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (x, weight, strides, dilations, pad_type, pad, groups, bias=None))]
    fn conv<'py>(
        &mut self,
        py: Python<'py>,
        x: Handle,
        weight: Handle,
        strides: Vec<i32>,
        dilations: Vec<i32>,
        pad_type: String,
        pad: Vec<i32>,
        groups: i32,
        bias: Option<Handle>,
    ) -> PyResult<VarInfo<'py>> {
        self.push1(
            py,
            Box::new(move |f, s| {
                let options = ConvOptions {
                    strides: strides.clone(),
                    dilations: dilations.clone(),
                    pad_type: pad_type.clone(),
                    pad: pad.clone(),
                    groups,
                    bias: bias.map(|b| value(s, b).cloned()).transpose()?,
                };
                Ok(vec![f.conv(value(s, x)?, value(s, weight)?, &options)?])
            }),
        )
    }

    fn matmul<'py>(
        &mut self,
        py: Python<'py>,
        x: Handle,
        y: Handle,
        transpose_x: bool,
        transpose_y: bool,
    ) -> PyResult<VarInfo<'py>> {
        self.push1(
            py,
            Box::new(move |f, s| {
                Ok(vec![f.matmul(value(s, x)?, value(s, y)?, transpose_x, transpose_y)?])
            }),
        )
    }

    /// An elementwise binary op: add, sub, mul, real_div, maximum, minimum, pow.
    fn binary<'py>(
        &mut self,
        py: Python<'py>,
        kind: &str,
        x: Handle,
        y: Handle,
    ) -> PyResult<VarInfo<'py>> {
        let kind = op_kind(kind)?;
        self.push1(py, Box::new(move |f, s| Ok(vec![f.binary(kind, value(s, x)?, value(s, y)?)?])))
    }

    /// An elementwise unary op: relu, sigmoid, tanh, exp, ...
    fn unary<'py>(&mut self, py: Python<'py>, kind: &str, x: Handle) -> PyResult<VarInfo<'py>> {
        let kind = op_kind(kind)?;
        self.push1(py, Box::new(move |f, s| Ok(vec![f.unary(kind, value(s, x)?)?])))
    }

    fn softmax<'py>(&mut self, py: Python<'py>, x: Handle, axis: i32) -> PyResult<VarInfo<'py>> {
        self.push1(py, Box::new(move |f, s| Ok(vec![f.softmax(value(s, x)?, axis)?])))
    }

    fn reshape<'py>(
        &mut self,
        py: Python<'py>,
        x: Handle,
        shape: Vec<i32>,
    ) -> PyResult<VarInfo<'py>> {
        self.push1(py, Box::new(move |f, s| Ok(vec![f.reshape(value(s, x)?, &shape)?])))
    }

    fn transpose<'py>(
        &mut self,
        py: Python<'py>,
        x: Handle,
        perm: Vec<i32>,
    ) -> PyResult<VarInfo<'py>> {
        self.push1(py, Box::new(move |f, s| Ok(vec![f.transpose(value(s, x)?, &perm)?])))
    }

    fn concat<'py>(
        &mut self,
        py: Python<'py>,
        values: Vec<Handle>,
        axis: i32,
        interleave: bool,
    ) -> PyResult<VarInfo<'py>> {
        self.push1(
            py,
            Box::new(move |f, s| {
                let vars =
                    values.iter().map(|h| value(s, *h).cloned()).collect::<Result<Vec<_>, _>>()?;
                Ok(vec![f.concat(&vars, axis, interleave)?])
            }),
        )
    }

    /// Marks `x` as an output, named `name` when given.
    #[pyo3(signature = (x, name=None))]
    fn output<'py>(
        &mut self,
        py: Python<'py>,
        x: Handle,
        name: Option<String>,
    ) -> PyResult<VarInfo<'py>> {
        let mut made = self.push(py, Step::Output { value: x, name })?;
        Ok(made.remove(0))
    }

    /// Validates the program and packs its weights.
    fn build(&self, py: Python<'_>) -> PyResult<PyProgram> {
        let (builder, _) = self.replay(None, true).map_err(|e| build_error(py, e))?;
        let built = builder.build().map_err(|e| build_error(py, e))?;
        Ok(PyProgram { built })
    }

    /// The number of calls recorded (inputs, weights, constants, ops, outputs).
    fn __len__(&self) -> usize {
        self.steps.len()
    }
}

/// A built program with its weight files.
#[pyclass(module = "anemone._anemone", name = "Program", frozen)]
pub struct PyProgram {
    built: BuiltProgram,
}

#[pymethods]
impl PyProgram {
    /// The program as MIL text.
    fn text(&self) -> String {
        self.built.text()
    }

    /// Writes `model.mil` and `weights/` into `path` (created if needed).
    fn write_model_dir(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.built
            .write_model_dir(&path)
            .map(|_| ())
            .map_err(|e| errors::raise(py, Kind::Load, format!("{}: {e}", path.display()), &[]))
    }

    /// Compiles the program for a device.
    #[pyo3(signature = (device=None, function=None))]
    fn compile(
        &self,
        py: Python<'_>,
        device: Option<&str>,
        function: Option<String>,
    ) -> PyResult<PyModel> {
        let options = ModelOptions { function, ..ModelOptions::default() };
        model::compile(
            py,
            &self.built.program,
            &self.built.weights,
            device,
            options,
            None,
            Vec::new(),
        )
    }
}
