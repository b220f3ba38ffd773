//! Typed construction of MIL programs without string formatting. The builder infers every
//! result type through the op registry as it goes (so a shape error surfaces at the call
//! that caused it), names constants itself, and packs BLOBFILE constants into weight files
//! it writes alongside the program.
//!
//! ```
//! use anemone_mil::builder::{Builder, ConvOptions};
//! use anemone_mil::{DType, TensorType};
//!
//! let mut b = Builder::new();
//! let mut f = b.function("main");
//! let x = f.input("x", TensorType::new(DType::Fp32, [1, 8, 1, 32]));
//! let x16 = f.cast(&x, DType::Fp16).unwrap();
//! let eye: Vec<f32> = (0..64).map(|i| if i % 9 == 0 { 1.0 } else { 0.0 }).collect();
//! let w = f.weight("W", TensorType::new(DType::Fp16, [8, 8, 1, 1]), &eye).unwrap();
//! let y16 = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
//! let y = f.cast(&y16, DType::Fp32).unwrap();
//! f.output(&y);
//! f.finish();
//! let built = b.build().unwrap();
//! assert!(anemone_mil::validate::validate(&built.program).is_empty());
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::blob::BlobWriter;
use crate::diag::Diagnostic;
use crate::ir::{
    Argument, Block, DType, Function, Ident, Literal, LiteralData, Named, Operation, Program, Span,
    TensorData, TensorType, Type, TypedName,
};
use crate::ops::{self, InputArg, InputValue, OpContext, OpKind};
use crate::package::{ModelDir, PackageError, Weights};

/// The weight file BLOBFILE constants go to unless told otherwise.
pub const DEFAULT_WEIGHT_PATH: &str = "@model_path/weights/weight.bin";

/// Why a builder call failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The registry rejected the op (wrong shapes, missing inputs...).
    #[error("{op} `{name}`: {message}")]
    Op { op: &'static str, name: String, message: String },
    /// Weight data that does not fit its declared type.
    #[error("weight `{name}`: {message}")]
    Weight { name: String, message: String },
    /// The finished program does not validate.
    #[error("the built program is not valid: {}", .0.first().map(|d| d.message.as_str()).unwrap_or(""))]
    Invalid(Vec<Diagnostic>),
}

/// A value in the function being built: its name and type.
#[derive(Clone, Debug, PartialEq)]
pub struct Var {
    name: String,
    ty: Type,
}

impl Var {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ty(&self) -> &Type {
        &self.ty
    }

    /// The shape (empty for scalars).
    pub fn shape(&self) -> &[usize] {
        self.ty.shape().unwrap_or(&[])
    }

    pub fn dtype(&self) -> DType {
        self.ty.dtype().unwrap_or(DType::Fp16)
    }
}

/// An operation input for [`FunctionBuilder::op`].
#[derive(Clone, Debug)]
pub enum Arg {
    Var(Var),
    /// Becomes a `const` op named after the op and the input.
    Lit(Literal),
    /// A variadic input such as concat's `values`.
    Tuple(Vec<Var>),
}

impl From<&Var> for Arg {
    fn from(v: &Var) -> Arg {
        Arg::Var(v.clone())
    }
}

impl From<Literal> for Arg {
    fn from(l: Literal) -> Arg {
        Arg::Lit(l)
    }
}

/// Options of [`FunctionBuilder::conv`]; the defaults are a 1x1-style valid convolution.
#[derive(Clone, Debug)]
pub struct ConvOptions {
    pub strides: Vec<i32>,
    pub dilations: Vec<i32>,
    /// `valid`, `same`, `same_lower` or `custom`.
    pub pad_type: String,
    /// `[before, after]` per spatial dim; used with `custom`.
    pub pad: Vec<i32>,
    pub groups: i32,
    pub bias: Option<Var>,
}

impl Default for ConvOptions {
    fn default() -> ConvOptions {
        ConvOptions {
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pad_type: "valid".into(),
            pad: vec![0, 0, 0, 0],
            groups: 1,
            bias: None,
        }
    }
}

/// Where each weight sits in a packed input (dynamic weights, REFERENCE.md §2): the input is
/// `[1, channels, 1, width]`, activations and weights side by side along the last (spatial)
/// axis, and each region spans `cols` columns from `offset`. A weight region holds a
/// `[channels, cols]` matrix: for a linear layer `y = W x`, that is `W` transposed (input
/// features down the channels, output features across).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedLayout {
    /// The function input that carries everything.
    pub input: String,
    pub dtype: DType,
    pub channels: usize,
    /// Total columns of the input.
    pub width: usize,
    /// Activations first, then the weights in the order given.
    pub regions: Vec<PackedRegion>,
}

/// One region of a [`PackedLayout`].
#[derive(Clone, Debug, PartialEq)]
pub struct PackedRegion {
    pub name: String,
    pub offset: usize,
    pub cols: usize,
}

impl PackedLayout {
    pub fn region(&self, name: &str) -> Option<&PackedRegion> {
        self.regions.iter().find(|r| r.name == name)
    }
}

/// Builds a program: functions, then [`Builder::build`].
pub struct Builder {
    version: String,
    attributes: Vec<Named<Literal>>,
    functions: Vec<Function>,
    blobs: BTreeMap<String, BlobWriter>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// A `program(1.3)` with the buildInfo header every working program carries
    /// (REFERENCE.md §4).
    pub fn new() -> Builder {
        let kv = |k: &str, v: &str| (Literal::string(k), Literal::string(v));
        let build_info = Literal::new(
            Type::Dict(
                Box::new(Type::Scalar(DType::String)),
                Box::new(Type::Scalar(DType::String)),
            ),
            LiteralData::Dict(vec![
                kv("coremlc-component-MIL", "3510.2.1"),
                kv("coremlc-version", "3505.4.1"),
                kv("coremltools-component-milinternal", ""),
                kv("coremltools-version", "9.0"),
            ]),
        );
        Builder {
            version: "1.3".into(),
            attributes: vec![Named::new("buildInfo", build_info)],
            functions: Vec::new(),
            blobs: BTreeMap::new(),
        }
    }

    /// Starts a function with opset `ios18`. Call [`FunctionBuilder::finish`] to add it.
    pub fn function(&mut self, name: &str) -> FunctionBuilder<'_> {
        self.function_with_opset(name, "ios18")
    }

    pub fn function_with_opset(&mut self, name: &str, opset: &str) -> FunctionBuilder<'_> {
        FunctionBuilder {
            function: Function {
                name: Ident::new(name),
                opset: Ident::new(opset),
                inputs: Vec::new(),
                block: Block::default(),
                span: Span::NONE,
            },
            builder: self,
            values: HashMap::new(),
            names: HashSet::new(),
        }
    }

    /// Validates the program and returns it with its weight files.
    pub fn build(self) -> Result<BuiltProgram, BuildError> {
        let program = Program {
            version: self.version,
            attributes: self.attributes,
            functions: self.functions,
        };
        let errors: Vec<_> =
            crate::validate::validate(&program).into_iter().filter(Diagnostic::is_error).collect();
        if !errors.is_empty() {
            return Err(BuildError::Invalid(errors));
        }
        let mut weights = Weights::new();
        for (path, writer) in self.blobs {
            weights.insert(path, writer.finish());
        }
        Ok(BuiltProgram { program, weights })
    }
}

/// A built program and the weight files its BLOBFILE constants point into.
#[derive(Clone, Debug)]
pub struct BuiltProgram {
    pub program: Program,
    /// Weight files by BLOBFILE path (`@model_path/weights/weight.bin`).
    pub weights: Weights,
}

impl BuiltProgram {
    /// The program as MIL text.
    pub fn text(&self) -> String {
        crate::text::print(&self.program)
    }

    /// Writes `model.mil` and the weight files into `dir` (created if needed), each file
    /// atomically.
    pub fn write_model_dir(&self, dir: &Path) -> Result<ModelDir, PackageError> {
        ModelDir::create(dir, &self.text(), &self.weights)
    }
}

/// Builds one function; every call infers its result types immediately.
pub struct FunctionBuilder<'b> {
    builder: &'b mut Builder,
    function: Function,
    /// Types and constant values of the names defined so far.
    values: HashMap<String, (Type, Option<Literal>)>,
    names: HashSet<String>,
}

impl FunctionBuilder<'_> {
    /// Declares a function input.
    pub fn input(&mut self, name: &str, ty: TensorType) -> Var {
        let name = self.fresh(name);
        let ty = Type::from(ty);
        self.function.inputs.push(TypedName::new(ty.clone(), name.clone()));
        self.values.insert(name.clone(), (ty.clone(), None));
        Var { name, ty }
    }

    /// A `const` op holding `value`, named after `hint`.
    pub fn constant(&mut self, hint: &str, value: Literal) -> Var {
        let name = self.fresh(hint);
        let ty = value.ty.clone();
        self.function.block.operations.push(Operation {
            op: Ident::new("const"),
            inputs: Vec::new(),
            attributes: vec![
                Named::new("name", Literal::string(name.clone())),
                Named::new("val", value.clone()),
            ],
            outputs: vec![TypedName::new(ty.clone(), name.clone())],
            span: Span::NONE,
        });
        self.values.insert(name.clone(), (ty.clone(), Some(value)));
        Var { name, ty }
    }

    /// A weight constant stored in the default weight file as a BLOBFILE, converted from
    /// f32 to `ty.dtype` (fp16 rounds to nearest even).
    pub fn weight(
        &mut self,
        hint: &str,
        ty: TensorType,
        values: &[f32],
    ) -> Result<Var, BuildError> {
        self.weight_in(DEFAULT_WEIGHT_PATH, hint, ty, values)
    }

    /// A weight constant stored in the weight file at `blob_path`.
    pub fn weight_in(
        &mut self,
        blob_path: &str,
        hint: &str,
        ty: TensorType,
        values: &[f32],
    ) -> Result<Var, BuildError> {
        let err = |message: String| BuildError::Weight { name: hint.to_string(), message };
        if ty.checked_element_count() != Some(values.len()) {
            return Err(err(format!(
                "{ty} needs {} values, got {}",
                ty.element_count(),
                values.len()
            )));
        }
        let writer = self.builder.blobs.entry(blob_path.to_string()).or_default();
        let offset = match ty.dtype {
            DType::Fp16 => writer.add_f32_as_fp16(values),
            DType::Bf16 => writer.add_f32_as_bf16(values),
            DType::Fp32 => writer.add_f32(values),
            other => {
                return Err(err(format!(
                    "weights from f32 values can be fp16, bf16 or fp32, not {other}; \
                     write other dtypes with blob::BlobWriter"
                )));
            }
        };
        Ok(self.constant(hint, Literal::blob(ty, blob_path, offset)))
    }

    /// Adds `kind` with `inputs`, naming its (first) result after `hint`; returns every
    /// result.
    pub fn op(
        &mut self,
        kind: OpKind,
        hint: &str,
        inputs: &[(&str, Arg)],
    ) -> Result<Vec<Var>, BuildError> {
        // Every variable must belong to this function as it is now.
        for (input_name, arg) in inputs {
            let vars: Vec<&Var> = match arg {
                Arg::Var(v) => vec![v],
                Arg::Tuple(vs) => vs.iter().collect(),
                Arg::Lit(_) => Vec::new(),
            };
            if let Some(v) = vars.iter().find(|v| !self.values.contains_key(&v.name)) {
                return Err(BuildError::Op {
                    op: kind.name(),
                    name: hint.to_string(),
                    message: format!(
                        "input `{input_name}`: `{}` is not defined in this function (is it from \
                         another function, or was it renamed? use the Var that rename returned)",
                        v.name
                    ),
                });
            }
        }
        // Literals stay inline for inference; they become `const` ops only once the op is
        // known to be valid, so a failed call leaves nothing behind.
        let mut bound: Vec<Named<Argument>> = inputs
            .iter()
            .map(|(input_name, arg)| {
                let value = match arg {
                    Arg::Var(v) => Argument::var(v.name.clone()),
                    Arg::Tuple(vs) => Argument::Tuple(
                        vs.iter().map(|v| Argument::var(v.name.clone())).collect(),
                        Span::NONE,
                    ),
                    Arg::Lit(lit) => Argument::Literal(lit.clone()),
                };
                Named::new(*input_name, value)
            })
            .collect();
        let name = self.peek_fresh(hint);
        let attributes = vec![Named::new("name", Literal::string(name.clone()))];
        let types = {
            let ctx = OpContext {
                kind,
                inputs: bound.iter().map(|n| (n.name.name.as_str(), self.bind(&n.value))).collect(),
                attributes: &attributes,
                span: Span::NONE,
            };
            ops::infer(&ctx).map_err(|e| BuildError::Op {
                op: kind.name(),
                name: name.clone(),
                message: e.message,
            })?
        };
        for input in &mut bound {
            if let Argument::Literal(lit) = &input.value {
                let c = self.constant(&format!("{hint}_{}", input.name.name), lit.clone());
                input.value = Argument::var(c.name);
            }
        }
        let name = self.fresh(hint);
        let attributes = vec![Named::new("name", Literal::string(name.clone()))];
        let mut outputs = Vec::with_capacity(types.len());
        for (i, ty) in types.into_iter().enumerate() {
            let out_name = if i == 0 { name.clone() } else { self.fresh(&format!("{name}_{i}")) };
            self.values.insert(out_name.clone(), (ty.clone(), None));
            outputs.push(Var { name: out_name, ty });
        }
        self.function.block.operations.push(Operation {
            op: Ident::new(kind.name()),
            inputs: bound,
            attributes,
            outputs: outputs.iter().map(|v| TypedName::new(v.ty.clone(), v.name.clone())).collect(),
            span: Span::NONE,
        });
        Ok(outputs)
    }

    /// Like [`FunctionBuilder::op`] for ops with one result.
    pub fn op1(
        &mut self,
        kind: OpKind,
        hint: &str,
        inputs: &[(&str, Arg)],
    ) -> Result<Var, BuildError> {
        Ok(self.op(kind, hint, inputs)?.remove(0))
    }

    fn bind<'s>(&'s self, arg: &'s Argument) -> InputArg<'s> {
        let value = |name: &str| {
            let (ty, constant) = &self.values[name];
            InputValue { ty: ty.clone(), constant: constant.as_ref(), span: Span::NONE }
        };
        match arg {
            Argument::Var(v) => InputArg::One(value(&v.name)),
            Argument::Tuple(items, _) => InputArg::Tuple(
                items
                    .iter()
                    .filter_map(|a| match a {
                        Argument::Var(v) => Some(value(&v.name)),
                        _ => None,
                    })
                    .collect(),
                Span::NONE,
            ),
            Argument::Literal(l) => {
                InputArg::One(InputValue { ty: l.ty.clone(), constant: Some(l), span: Span::NONE })
            }
        }
    }

    /// Marks `v` as a function output (in call order).
    pub fn output(&mut self, v: &Var) {
        self.function.block.outputs.push(Ident::new(v.name.clone()));
    }

    /// Marks `v` as a function output under `name` (renaming it everywhere).
    pub fn output_named(&mut self, v: &Var, name: &str) -> Result<Var, BuildError> {
        let renamed = self.rename(v, name)?;
        self.output(&renamed);
        Ok(renamed)
    }

    /// Gives `v` another name, everywhere it is used so far. Fails when the name is taken
    /// or is not an identifier.
    pub fn rename(&mut self, v: &Var, name: &str) -> Result<Var, BuildError> {
        let err = |message: String| BuildError::Op { op: "rename", name: v.name.clone(), message };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(err(format!("`{name}` is not an identifier")));
        }
        if name == v.name {
            return Ok(v.clone());
        }
        if self.names.contains(name) {
            return Err(err(format!("`{name}` is already defined")));
        }
        let old = v.name.clone();
        let rename = |ident: &mut Ident| {
            if ident.name == old {
                ident.name = name.to_string();
            }
        };
        for input in &mut self.function.inputs {
            rename(&mut input.name);
        }
        for op in &mut self.function.block.operations {
            if op.outputs.iter().any(|o| o.name.name == old) && op.name_attribute() == Some(&old) {
                // The op's `name` follows its result, so names stay unique in the program.
                for a in &mut op.attributes {
                    if a.name.name == "name" {
                        a.value = Literal::string(name);
                    }
                }
            }
            op.outputs.iter_mut().for_each(|o| rename(&mut o.name));
            for input in &mut op.inputs {
                match &mut input.value {
                    Argument::Var(i) => rename(i),
                    Argument::Tuple(items, _) => items.iter_mut().for_each(|a| {
                        if let Argument::Var(i) = a {
                            rename(i)
                        }
                    }),
                    Argument::Literal(_) => {}
                }
            }
        }
        self.function.block.outputs.iter_mut().for_each(rename);
        if let Some(entry) = self.values.remove(&old) {
            self.values.insert(name.to_string(), entry);
        }
        // The old name stays taken: op `name` attributes elsewhere may still carry it.
        self.names.insert(name.to_string());
        Ok(Var { name: name.to_string(), ty: v.ty.clone() })
    }

    /// Adds the function to the program.
    pub fn finish(self) {
        self.builder.functions.push(self.function);
    }

    /// The name [`FunctionBuilder::fresh`] would give `hint` now, without taking it.
    fn peek_fresh(&self, hint: &str) -> String {
        let base = Self::base_name(hint);
        let mut name = base.clone();
        let mut n = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        name
    }

    /// `hint` made into an identifier.
    fn base_name(hint: &str) -> String {
        let base: String = hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
            .collect();
        if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
            format!("v_{base}")
        } else {
            base
        }
    }

    /// A name based on `hint` that is not taken yet in this function.
    fn fresh(&mut self, hint: &str) -> String {
        let name = self.peek_fresh(hint);
        self.names.insert(name.clone());
        name
    }

    // Typed helpers, one per op the programs here use. Each is a thin call to `op`.

    pub fn cast(&mut self, x: &Var, dtype: DType) -> Result<Var, BuildError> {
        let hint = format!("{}_{}", x.name, dtype.name());
        self.op1(
            OpKind::Cast,
            &hint,
            &[("x", x.into()), ("dtype", Literal::string(dtype.name()).into())],
        )
    }

    pub fn conv(&mut self, x: &Var, weight: &Var, o: &ConvOptions) -> Result<Var, BuildError> {
        let mut inputs: Vec<(&str, Arg)> = vec![
            ("x", x.into()),
            ("weight", weight.into()),
            ("strides", Literal::int32_list(&o.strides).into()),
            ("dilations", Literal::int32_list(&o.dilations).into()),
            ("pad_type", Literal::string(o.pad_type.clone()).into()),
            ("pad", Literal::int32_list(&o.pad).into()),
            ("groups", Literal::int32(o.groups).into()),
        ];
        if let Some(b) = &o.bias {
            inputs.push(("bias", b.into()));
        }
        self.op1(OpKind::Conv, "conv", &inputs)
    }

    pub fn matmul(
        &mut self,
        x: &Var,
        y: &Var,
        transpose_x: bool,
        transpose_y: bool,
    ) -> Result<Var, BuildError> {
        self.op1(
            OpKind::Matmul,
            "matmul",
            &[
                ("x", x.into()),
                ("y", y.into()),
                ("transpose_x", Literal::bool(transpose_x).into()),
                ("transpose_y", Literal::bool(transpose_y).into()),
            ],
        )
    }

    /// An elementwise binary op (add, sub, mul, real_div, pow, maximum, minimum).
    pub fn binary(&mut self, kind: OpKind, x: &Var, y: &Var) -> Result<Var, BuildError> {
        self.op1(kind, kind.name(), &[("x", x.into()), ("y", y.into())])
    }

    pub fn add(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        self.binary(OpKind::Add, x, y)
    }

    pub fn mul(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        self.binary(OpKind::Mul, x, y)
    }

    /// An elementwise unary op (exp, relu, sigmoid, ...).
    pub fn unary(&mut self, kind: OpKind, x: &Var) -> Result<Var, BuildError> {
        self.op1(kind, kind.name(), &[("x", x.into())])
    }

    pub fn reshape(&mut self, x: &Var, shape: &[i32]) -> Result<Var, BuildError> {
        self.op1(
            OpKind::Reshape,
            "reshape",
            &[("x", x.into()), ("shape", Literal::int32_list(shape).into())],
        )
    }

    pub fn transpose(&mut self, x: &Var, perm: &[i32]) -> Result<Var, BuildError> {
        self.op1(
            OpKind::Transpose,
            "transpose",
            &[("x", x.into()), ("perm", Literal::int32_list(perm).into())],
        )
    }

    pub fn slice_by_size(
        &mut self,
        x: &Var,
        begin: &[i32],
        size: &[i32],
    ) -> Result<Var, BuildError> {
        self.op1(
            OpKind::SliceBySize,
            "slice",
            &[
                ("x", x.into()),
                ("begin", Literal::int32_list(begin).into()),
                ("size", Literal::int32_list(size).into()),
            ],
        )
    }

    pub fn concat(
        &mut self,
        values: &[Var],
        axis: i32,
        interleave: bool,
    ) -> Result<Var, BuildError> {
        self.op1(
            OpKind::Concat,
            "concat",
            &[
                ("values", Arg::Tuple(values.to_vec())),
                ("axis", Literal::int32(axis).into()),
                ("interleave", Literal::bool(interleave).into()),
            ],
        )
    }

    pub fn softmax(&mut self, x: &Var, axis: i32) -> Result<Var, BuildError> {
        self.op1(
            OpKind::Softmax,
            "softmax",
            &[("x", x.into()), ("axis", Literal::int32(axis).into())],
        )
    }

    /// reduce_sum, reduce_mean or reduce_max.
    pub fn reduce(
        &mut self,
        kind: OpKind,
        x: &Var,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<Var, BuildError> {
        self.op1(
            kind,
            kind.name(),
            &[
                ("x", x.into()),
                ("axes", Literal::int32_list(axes).into()),
                ("keep_dims", Literal::bool(keep_dims).into()),
            ],
        )
    }

    /// A packed input for dynamic weights: `[1, channels, 1, activation_cols + Σ cols]` with
    /// the activations first and then each weight's columns, sliced apart here. Returns the
    /// activations `[1, channels, 1, activation_cols]`, each weight as `[1, 1, channels, cols]`
    /// (ready for [`FunctionBuilder::dynamic_linear`] or matmul), and the layout the runtime
    /// needs to write weights into the surface (`Model::set_weight`). Compile once; an update
    /// is a copy into the input.
    pub fn packed_input(
        &mut self,
        name: &str,
        dtype: DType,
        channels: usize,
        activation_cols: usize,
        weights: &[(&str, usize)],
    ) -> Result<(Var, Vec<Var>, PackedLayout), BuildError> {
        let mut regions =
            vec![PackedRegion { name: "activations".into(), offset: 0, cols: activation_cols }];
        let mut width = activation_cols;
        for (w, cols) in weights {
            if regions.iter().any(|r| r.name == *w) {
                return Err(BuildError::Weight {
                    name: w.to_string(),
                    message: "two regions of a packed input have this name".into(),
                });
            }
            regions.push(PackedRegion { name: w.to_string(), offset: width, cols: *cols });
            width += cols;
        }
        let input = self.input(name, TensorType::new(dtype, [1, channels, 1, width]));
        let dim = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        let activations = self.slice_by_size(
            &input,
            &[0, 0, 0, 0],
            &[1, dim(channels), 1, dim(activation_cols)],
        )?;
        let activations = self.rename(&activations, &format!("{}_activations", input.name))?;
        let mut vars = Vec::with_capacity(weights.len());
        for region in &regions[1..] {
            let cols = dim(region.cols);
            let slice = self.slice_by_size(
                &input,
                &[0, 0, 0, dim(region.offset)],
                &[1, dim(channels), 1, cols],
            )?;
            let matrix = self.reshape(&slice, &[1, 1, dim(channels), cols])?;
            vars.push(self.rename(&matrix, &region.name)?);
        }
        let layout = PackedLayout { input: input.name.clone(), dtype, channels, width, regions };
        Ok((activations, vars, layout))
    }

    /// `y = W x` for activations `x` `[1, in, 1, S]` and a packed weight `w` `[1, 1, in, out]`
    /// (W transposed, as a packed region holds it): `[1, out, 1, S]`.
    pub fn dynamic_linear(&mut self, x: &Var, w: &Var) -> Result<Var, BuildError> {
        let (&[1, cin, 1, s], &[1, 1, win, out]) = (x.shape(), w.shape()) else {
            return Err(BuildError::Op {
                op: "matmul",
                name: "dynamic_linear".into(),
                message: format!(
                    "expects x [1, in, 1, S] and w [1, 1, in, out], got {} and {}",
                    x.ty, w.ty
                ),
            });
        };
        let dim = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        let _ = win;
        let x4 = self.reshape(x, &[1, 1, dim(cin), dim(s)])?;
        let y = self.matmul(w, &x4, true, false)?;
        self.reshape(&y, &[1, dim(out), 1, dim(s)])
    }

    /// A scalar fp16 constant (for scales and epsilons).
    pub fn scalar_fp16(&mut self, hint: &str, v: f32) -> Var {
        self.constant(hint, Literal::fp16(v))
    }

    /// An inline fp16 tensor constant.
    pub fn tensor_fp16(
        &mut self,
        hint: &str,
        shape: &[usize],
        values: &[f32],
    ) -> Result<Var, BuildError> {
        let ty = TensorType::new(DType::Fp16, shape);
        if ty.checked_element_count() != Some(values.len()) {
            return Err(BuildError::Weight {
                name: hint.to_string(),
                message: format!("{ty} needs {} values, got {}", ty.element_count(), values.len()),
            });
        }
        let data = TensorData::F16(values.iter().map(|&v| half::f16::from_f32(v)).collect());
        Ok(self.constant(hint, Literal::tensor(Type::from(ty), data)))
    }
}
