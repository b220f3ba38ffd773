//! Typed construction of MIL programs without string formatting. The builder infers every
//! result type through the op registry as it goes (so a shape error surfaces at the call
//! that caused it, as [`BuildError::Op`]), names constants itself, and packs BLOBFILE
//! constants into weight files it writes alongside the program.
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
//!
//! Every op of the registry ([`OpKind::ALL`]) has a typed method named after it. A few are
//! written by hand below (`constant` for const, `cast`, `conv`, `matmul`, `add`, `mul`,
//! `reshape`, `transpose`, `slice_by_size`, `concat`, `softmax`); the others are generated
//! from the registry's signatures, so their inputs, types and defaults are the registry's.
//! A generated method takes the op's required inputs as parameters, in the signature's
//! order: values as `&Var`, tuples as `&[Var]`, constant integer and bool lists as `&[i32]`
//! and `&[bool]`, constant scalars as `i32`, `bool`, `&str` ([`DType`] for an element type)
//! or `f32`. A float scalar is written in the element type of the op's first value input
//! when the input takes that type, so an fp16 program gets fp16 scalars. An op with optional
//! inputs takes an options struct last (`LayerNormOptions` for `layer_norm`), whose `None`
//! fields leave the input out so that the registry's default applies. `split` returns all
//! its results; every other method returns one.
//!
//! ```
//! use anemone_mil::builder::{Builder, LayerNormOptions, SplitOptions};
//! use anemone_mil::{DType, TensorType};
//!
//! let mut b = Builder::new();
//! let mut f = b.function("main");
//! let x = f.input("x", TensorType::new(DType::Fp16, [1, 8, 1, 32]));
//! let y = f.relu(&x)?;
//! let norm = LayerNormOptions { axes: Some(vec![1]), epsilon: Some(1e-5), ..Default::default() };
//! let y = f.layer_norm(&y, &norm)?;
//! let y = f.clip(&y, -1.0, 1.0)?;
//! let halves = f.split(&y, 1, &SplitOptions { num_splits: Some(2), ..Default::default() })?;
//! assert_eq!(halves[1].shape(), [1, 4, 1, 32]);
//! f.output(&halves[0]);
//! f.finish();
//! let built = b.build()?;
//! assert!(built.text().contains("clip(x = "));
//! # Ok::<(), anemone_mil::builder::BuildError>(())
//! ```

// Keeps the generated methods and options structs documented too.
#![deny(missing_docs)]

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

#[cfg(test)]
mod generate;
mod op_methods;

pub use op_methods::*;

/// The weight file BLOBFILE constants go to unless told otherwise.
pub const DEFAULT_WEIGHT_PATH: &str = "@model_path/weights/weight.bin";

/// Why a builder call failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The registry rejected the op (wrong shapes, missing inputs...).
    #[error("{op} `{name}`: {message}")]
    Op {
        /// The op's MIL name (`rename` for a failed [`FunctionBuilder::rename`]).
        op: &'static str,
        /// The name the op's result would have had.
        name: String,
        /// What is wrong, as the registry (and the validator) words it.
        message: String,
    },
    /// Weight data that does not fit its declared type.
    #[error("weight `{name}`: {message}")]
    Weight {
        /// The weight's (or packed region's) name.
        name: String,
        /// What is wrong.
        message: String,
    },
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
    /// The value's name in the function.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value's type, as inferred.
    pub fn ty(&self) -> &Type {
        &self.ty
    }

    /// The shape (empty for scalars).
    pub fn shape(&self) -> &[usize] {
        self.ty.shape().unwrap_or(&[])
    }

    /// The element type (fp16 for a dictionary, which has none).
    pub fn dtype(&self) -> DType {
        self.ty.dtype().unwrap_or(DType::Fp16)
    }
}

/// An operation input for [`FunctionBuilder::op`].
#[derive(Clone, Debug)]
pub enum Arg {
    /// A value of the function.
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
    /// The step per spatial dim.
    pub strides: Vec<i32>,
    /// The spacing of kernel elements per spatial dim.
    pub dilations: Vec<i32>,
    /// `valid`, `same`, `same_lower` or `custom`.
    pub pad_type: String,
    /// `[before, after]` per spatial dim; used with `custom`.
    pub pad: Vec<i32>,
    /// Input and output channels split into this many independent groups.
    pub groups: i32,
    /// A constant `[C_out]` vector added to the result; none when `None`.
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
    /// The input's element type.
    pub dtype: DType,
    /// The input's channel count (dim 1), the rows of every weight region.
    pub channels: usize,
    /// Total columns of the input.
    pub width: usize,
    /// Activations first, then the weights in the order given.
    pub regions: Vec<PackedRegion>,
}

/// One region of a [`PackedLayout`].
#[derive(Clone, Debug, PartialEq)]
pub struct PackedRegion {
    /// `activations`, or the weight's name.
    pub name: String,
    /// The first column of the region along the input's last axis.
    pub offset: usize,
    /// How many columns the region spans.
    pub cols: usize,
}

impl PackedLayout {
    /// The region called `name`.
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

    /// Starts a function with another opset (`ios16`, `ios17`...).
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
    /// The program, validated.
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

    // The hand-written typed methods (the others are generated into `op_methods.rs`); each
    // is a thin call to `op`. `generate::HAND_WRITTEN` lists them, so that the generator
    // leaves their ops alone.

    /// `cast`: `x` converted to `dtype` (float to float rounds to nearest even), named after
    /// `x` and the type (`x_fp16`).
    pub fn cast(&mut self, x: &Var, dtype: DType) -> Result<Var, BuildError> {
        let hint = format!("{}_{}", x.name, dtype.name());
        self.op1(
            OpKind::Cast,
            &hint,
            &[("x", x.into()), ("dtype", Literal::string(dtype.name()).into())],
        )
    }

    /// `conv`: cross-correlation of `x` `[N, C_in, *spatial]` with `weight`
    /// `[C_out, C_in / groups, *kernel]`; see [`ConvOptions`] for strides, padding and bias.
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

    /// `matmul`: `x` times `y` with numpy batch broadcasting, after transposing the last two
    /// dims of whichever operand is flagged.
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

    /// `add`: `x + y` with numpy broadcasting.
    pub fn add(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        self.binary(OpKind::Add, x, y)
    }

    /// `mul`: `x * y` with numpy broadcasting.
    pub fn mul(&mut self, x: &Var, y: &Var) -> Result<Var, BuildError> {
        self.binary(OpKind::Mul, x, y)
    }

    /// An elementwise unary op (exp, relu, sigmoid, ...).
    pub fn unary(&mut self, kind: OpKind, x: &Var) -> Result<Var, BuildError> {
        self.op1(kind, kind.name(), &[("x", x.into())])
    }

    /// `reshape`: the elements of `x` in `shape` (one -1 is inferred, 0 copies x's dim).
    pub fn reshape(&mut self, x: &Var, shape: &[i32]) -> Result<Var, BuildError> {
        self.op1(
            OpKind::Reshape,
            "reshape",
            &[("x", x.into()), ("shape", Literal::int32_list(shape).into())],
        )
    }

    /// `transpose`: the dims of `x` in the order `perm` gives.
    pub fn transpose(&mut self, x: &Var, perm: &[i32]) -> Result<Var, BuildError> {
        self.op1(
            OpKind::Transpose,
            "transpose",
            &[("x", x.into()), ("perm", Literal::int32_list(perm).into())],
        )
    }

    /// `slice_by_size`: `size[i]` elements of dim i from `begin[i]` (-1: to the end), named
    /// `slice`.
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

    /// `concat`: `values` joined along `axis`; with `interleave`, input i fills every n-th
    /// slot from i.
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

    /// `softmax` along `axis`.
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

/// `values` as a constant bool list (slice_by_index's masks), for the generated methods.
fn bool_list(values: &[bool]) -> Arg {
    let ty = Type::tensor(DType::Bool, [values.len()]);
    Arg::Lit(Literal::tensor(ty, TensorData::Bool(values.to_vec())))
}

/// `v` as the constant scalar input `input` of `kind`, for the generated methods: in
/// `like`'s element type when the input takes that type (an fp16 program gets fp16 scalars,
/// as the ops that want "the type of x" need), else in fp32 or fp16, whichever it takes.
fn scalar_like(kind: OpKind, input: &str, like: &Var, v: f32) -> Arg {
    let takes = |d: DType| kind.signature().input(input).is_none_or(|s| s.dtypes.allows(d));
    let dtype = [like.dtype(), DType::Fp32, DType::Fp16]
        .into_iter()
        .find(|&d| takes(d))
        .unwrap_or_else(|| like.dtype());
    Arg::Lit(scalar_literal(dtype, v))
}

/// `v` as a scalar of `dtype`. A value the type cannot hold exactly (0.5 for an integer
/// type, 2 for bool) stays fp32, so that the registry reports it against the input.
fn scalar_literal(dtype: DType, v: f32) -> Literal {
    let data = match dtype {
        DType::Fp16 => TensorData::F16(vec![half::f16::from_f32(v)]),
        DType::Bf16 => TensorData::BF16(vec![half::bf16::from_f32(v)]),
        DType::Fp32 => TensorData::F32(vec![v]),
        DType::Fp64 => TensorData::F64(vec![f64::from(v)]),
        DType::Bool if v == 0.0 || v == 1.0 => TensorData::Bool(vec![v == 1.0]),
        _ => match dtype.int_range() {
            Some((lo, hi))
                if v.fract() == 0.0 && (lo as f64..=hi as f64).contains(&f64::from(v)) =>
            {
                if dtype.is_signed_int() {
                    TensorData::Int(vec![v as i64])
                } else {
                    TensorData::UInt(vec![v as u64])
                }
            }
            _ => return Literal::fp32(v),
        },
    };
    Literal::tensor(Type::Scalar(dtype), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{text, validate};

    fn tensor(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType::new(dtype, shape)
    }

    fn int32s(values: &[i64]) -> Literal {
        Literal::tensor(
            Type::tensor(DType::Int32, [values.len()]),
            TensorData::Int(values.to_vec()),
        )
    }

    /// The type of `name` in the built program's main function.
    fn type_of(built: &BuiltProgram, name: &str) -> Type {
        let f = built.program.main_function().unwrap();
        f.value_type(name).unwrap_or_else(|| panic!("no {name} in\n{}", built.text())).clone()
    }

    /// One op of each family through its generated method: the program validates, prints and
    /// parses back unchanged, and the float scalars are written in the program's type.
    #[test]
    fn generated_methods_build_a_valid_program() -> Result<(), BuildError> {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", tensor(DType::Fp16, &[1, 4, 2, 8]));
        // Normalization, with a constant gamma and an fp16 epsilon.
        let gamma = f.tensor_fp16("gamma", &[8], &[1.0; 8])?;
        let norm = LayerNormOptions {
            axes: Some(vec![-1]),
            gamma: Some(gamma),
            epsilon: Some(1e-5),
            ..Default::default()
        };
        let y = f.layer_norm(&x, &norm)?;
        // Activations.
        let y = f.leaky_relu(&y, 0.1)?;
        let y = f.clip(&y, -2.0, 2.0)?;
        // Logic.
        let zero = f.scalar_fp16("zero", 0.0);
        let positive = f.greater(&y, &zero)?;
        assert_eq!(positive.dtype(), DType::Bool);
        let y = f.select(&positive, &y, &x)?;
        // Indexing.
        let indices = f.constant("indices", int32s(&[1, 0]));
        let y = f.gather(&y, &indices, &GatherOptions { axis: Some(2), ..Default::default() })?;
        let pad = PadOptions { constant_val: Some(0.5), ..Default::default() };
        let y = f.pad(&y, &[1, 1, 1, 1], &pad)?;
        assert_eq!(y.shape(), [1, 4, 4, 10]);
        let y = f.slice_by_index(
            &y,
            &[0, 0, 0, 0],
            &[1, 4, 4, 9],
            &SliceByIndexOptions {
                end_mask: Some(vec![true, true, false, false]),
                ..Default::default()
            },
        )?;
        // Pooling and resizing.
        let pool = MaxPoolOptions { strides: Some(vec![2, 2]), ..Default::default() };
        let y = f.max_pool(&y, &[2, 2], "valid", &pool)?;
        assert_eq!(y.shape(), [1, 4, 2, 4]);
        let up =
            UpsampleNearestNeighborOptions { scale_factor_height: Some(2.0), ..Default::default() };
        let y = f.upsample_nearest_neighbor(&y, &up)?;
        assert_eq!(y.shape(), [1, 4, 4, 4]);
        // A multi-result op.
        let parts = f.split(&y, 1, &SplitOptions { num_splits: Some(2), ..Default::default() })?;
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].shape(), [1, 2, 4, 4]);
        let y = f.sub(&parts[0], &parts[1])?;
        let mean = ReduceMeanOptions { axes: Some(vec![-1]), keep_dims: Some(true) };
        let y = f.reduce_mean(&y, &mean)?;
        f.output(&y);
        f.finish();
        let built = b.build()?;

        assert!(validate::validate(&built.program).is_empty());
        let text = built.text();
        let parsed = text::parse(&text).unwrap_or_else(|d| panic!("{}\n{text}", d.message));
        assert_eq!(parsed, built.program);
        for op in ["layer_norm", "leaky_relu", "clip", "greater", "select", "gather", "pad"] {
            assert!(text.contains(&format!(" = {op}(")), "no {op} in\n{text}");
        }
        // An fp16 program gets fp16 scalars; upsample's scales take fp32 or int32 only.
        let fp16 = Type::Scalar(DType::Fp16);
        for name in ["layer_norm_epsilon", "leaky_relu_alpha", "clip_beta", "pad_constant_val"] {
            assert_eq!(type_of(&built, name), fp16, "{name}");
        }
        let scale = type_of(&built, "upsample_nearest_neighbor_scale_factor_height");
        assert_eq!(scale, Type::Scalar(DType::Fp32));
        assert_eq!(type_of(&built, "slice_by_index_end_mask"), Type::tensor(DType::Bool, [4]));
        Ok(())
    }

    #[test]
    fn scalars_follow_the_type_of_the_input_they_go_with() -> Result<(), BuildError> {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", tensor(DType::Fp32, &[1, 4]));
        let y = f.clip(&x, 0.0, 6.0)?;
        let n = f.input("n", tensor(DType::Int32, &[1, 4]));
        let padded =
            f.pad(&n, &[1, 1], &PadOptions { constant_val: Some(3.0), ..Default::default() })?;
        // 0.5 is no int32: the registry says so at this call.
        let half = PadOptions { constant_val: Some(0.5), ..Default::default() };
        let err = f.pad(&n, &[1, 1], &half).unwrap_err();
        assert!(err.to_string().contains("constant_val 0.5 is not a value of int32"), "{err}");
        f.output(&y);
        f.output(&padded);
        f.finish();
        let built = b.build()?;
        assert_eq!(type_of(&built, "clip_alpha"), Type::Scalar(DType::Fp32));
        assert_eq!(type_of(&built, "pad_constant_val"), Type::Scalar(DType::Int32));
        Ok(())
    }

    #[test]
    fn a_wrong_shape_fails_at_the_call_that_made_it() {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", tensor(DType::Fp16, &[1, 4, 1, 8]));
        let y = f.input("y", tensor(DType::Fp16, &[1, 3, 1, 8]));
        match f.sub(&x, &y) {
            Err(BuildError::Op { op, name, message }) => {
                assert_eq!((op, name.as_str()), ("sub", "sub"));
                assert!(message.contains("[1, 4, 1, 8]"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A bad constant fails its call too, and leaves no stray const behind.
        let before = f.function.block.operations.len();
        let norm = LayerNormOptions { axes: Some(vec![4]), ..Default::default() };
        let err = f.layer_norm(&x, &norm).unwrap_err();
        assert!(matches!(err, BuildError::Op { op: "layer_norm", .. }), "{err}");
        let split = SplitOptions { num_splits: Some(3), ..Default::default() };
        let err = f.split(&x, 1, &split).unwrap_err();
        assert!(matches!(err, BuildError::Op { op: "split", .. }), "{err}");
        assert_eq!(f.function.block.operations.len(), before);
        // The function goes on as if the failed calls had not been made.
        let ok = f.relu(&x).unwrap();
        f.output(&ok);
        f.finish();
        assert!(b.build().is_ok());
    }
}
