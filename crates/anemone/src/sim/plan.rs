//! Compiling a MIL function for the simulator: every operation becomes a kernel step with
//! its parameters resolved by the op registry, constants are decoded once (weights are
//! snapshotted here, as the ANE compiler does), reshapes alias their input, a matmul reads a
//! slice of whole rows in place from the sliced tensor, transposes of the last two dims fold
//! into the matmuls beside them, the inputs of a concat that nothing else reads are made in
//! place in its output, and every intermediate tensor gets a buffer from the live-range
//! memory plan.
//!
//! Arithmetic typed fp32 runs as on the ANE, in fp16 ([`Fp32Arithmetic::AsAne`]): the plan
//! narrows the op's fp32 operands to fp16 (constants once at compile time, other tensors by a
//! cast step), runs the fp16 kernel, and widens the result back into the fp32 tensor by an
//! exact cast step. A later fp32 op reads the fp16 copy directly, and a widening that nothing
//! reads is dropped, so a chain of fp32 ops costs what the same chain in fp16 does.

use std::collections::HashMap;

use anemone_mil::blob::{BlobBytes, ReadMode};
use anemone_mil::ops::{self, ConstValues, OpContext, OpFamily, OpKind};
use anemone_mil::package::Weights;
use anemone_mil::validate::{self, ResolvedOp};
use anemone_mil::{Argument, DType, Literal, LiteralData, Program, TensorData, TensorType, f16};

use super::kernels::conv::ConvParams as KernelConv;
use super::kernels::elementwise::{BinaryOp, GeluMode, UnaryOp};
use super::kernels::layout::SliceAxis;
use super::kernels::reduce::ReduceOp;
use super::memory::{self, Lifetime, MemoryPlan};
use super::ops as family;
use crate::aligned::AlignedBytes;
use crate::error::{Error, Result};

/// Index of a value in [`Plan::values`].
pub type ValueId = usize;

/// Where a value's bytes live while the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Input surface `i` (binding order).
    Input(usize),
    /// Constant `i`, decoded at compile time.
    Const(usize),
    /// Activation buffer `i` of the memory plan.
    Buffer(usize),
}

/// A tensor the program computes with.
#[derive(Clone, Debug)]
pub struct Value {
    /// The MIL name; for values the program does not name, a label used only in messages
    /// (`x(fp16)` for the fp16 copy of an fp32 tensor, `op_input` for an inline literal).
    pub name: String,
    /// Its dtype and shape (a reshape's result has its own shape over shared storage).
    pub ty: TensorType,
    /// Where its bytes live.
    pub storage: Storage,
    /// Where in its buffer they start, in bytes: 0 but for a part of a concat made in place
    /// (see `place_concat_parts`).
    pub offset: usize,
}

/// A constant's bytes in its dtype: decoded inline literals and dequantized weights are
/// owned; BLOBFILE data is shared with the weight file's bytes, which are immutable once
/// read, so the snapshot costs no copy.
#[derive(Clone, Debug)]
pub enum Constant {
    /// Bytes decoded or converted at compile time, 64-byte aligned.
    Owned(AlignedBytes),
    /// A 64-byte-aligned range of a weight file's bytes, read in place.
    Shared {
        /// The weight file's bytes (shared, immutable).
        file: BlobBytes,
        /// Offset of the data in the file, in bytes.
        start: usize,
        /// Length of the data, in bytes.
        len: usize,
    },
}

impl Constant {
    /// The constant's bytes, dense and row-major in its dtype.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Constant::Owned(b) => b.bytes(),
            Constant::Shared { file, start, len } => &file.as_slice()[*start..*start + *len],
        }
    }
}

/// A kernel with its parameters resolved.
#[derive(Clone, Debug)]
pub enum Kernel {
    /// Element conversion to the output's dtype.
    Cast,
    /// conv; inputs x, weight, then bias when given.
    Conv {
        /// Strides, dilations, padding and groups, resolved from `pad_type`.
        params: KernelConv,
    },
    /// matmul with numpy batch broadcasting; inputs x, y.
    Matmul {
        /// Whether the last two dims of x are swapped before multiplying.
        transpose_x: bool,
        /// Whether the last two dims of y are swapped before multiplying.
        transpose_y: bool,
        /// Per input, when the plan dropped the slice that made it: where its rows lie in the
        /// tensor the slice read, which is then the step's input.
        windows: [Option<RowWindow>; 2],
    },
    /// A float binary elementwise op with numpy broadcasting; inputs x, y.
    Binary(BinaryOp),
    /// A float unary elementwise op or activation; input x.
    Unary(UnaryOp),
    /// transpose: output dim `i` is input dim `perm[i]`.
    Transpose {
        /// The permutation of the input's dims.
        perm: Vec<usize>,
    },
    /// slice_by_size and slice_by_index, both resolved to a start, stride and length per
    /// axis (squeezed axes are dropped by the output's shape, not here).
    Slice {
        /// One entry per dim of x.
        axes: Vec<SliceAxis>,
    },
    /// concat of the `values` tuple.
    Concat {
        /// The dim joined along (non-negative).
        axis: usize,
        /// Whether the inputs alternate along `axis` (`out[i::n] = in_i`) rather than follow
        /// each other.
        interleave: bool,
        /// Per input, whether the step that makes it wrote it in place in the output already
        /// (see `place_concat_parts`); empty when none did.
        placed: Vec<bool>,
    },
    /// split of x into consecutive pieces, one output each.
    Split {
        /// The dim split along (non-negative).
        axis: usize,
        /// The length of each piece along `axis`; they sum to the dim's size.
        sizes: Vec<usize>,
    },
    /// reduce_sum, reduce_mean, reduce_max.
    Reduce {
        /// The reduction.
        op: ReduceOp,
        /// The dims reduced (non-negative); `keep_dims` only shapes the output.
        axes: Vec<usize>,
    },
    /// softmax, computed with the row's max subtracted first, as the ANE does.
    Softmax {
        /// The dim normalized over (non-negative).
        axis: usize,
    },
    /// scaled_dot_product_attention, fused; inputs query, key, value, then attn_mask when
    /// given. Also the attention a graph spells out in fp16 (see `fuse_spelled_attention`).
    Attention {
        /// Whether attn_mask is applied ([`SimOptions::apply_attention_mask`]); the ANE
        /// ignores it. Always true for a spelled-out attention, whose mask is an `add`.
        apply_mask: bool,
        /// The scores' scale when the graph gives its own (an fp16 value), else `None`:
        /// fp16's nearest value to 1/sqrt(E).
        scale: Option<f32>,
    },
    /// quantize: `clamp(round_half_even(x / scale) + zero_point)` to int8 or uint8.
    Quantize(Quant),
    /// dequantize: `scale * (q - zero_point)`.
    Dequantize(Quant),
    /// linear, normalizations and pooling ([`family::norm`]).
    Norm(family::norm::NormKernel),
    /// Indexing and shape-building ops ([`family::index`]).
    Index(family::index::IndexKernel),
    /// Comparisons, logical ops, select and clip ([`family::logic`]).
    Logic(family::logic::LogicKernel),
}

/// A matmul operand read in place: the rows of a slice inside the tensor it was cut from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowWindow {
    /// The operand's shape as the matmul reads it (the slice's result, through any reshapes).
    pub shape: Vec<usize>,
    /// Where its first row starts in the sliced tensor, in elements.
    pub offset: usize,
    /// Elements from one row's start to the next's.
    pub row_stride: usize,
}

/// Quantization parameters with the zero point kept as f32 (the kernel converts it to the
/// integer type it works on).
#[derive(Clone, Debug)]
pub struct Quant {
    /// One scale for the tensor, or one per index of `axis`.
    pub scale: Vec<f32>,
    /// Zero points, as many as `scale`; the kernel saturates them to its integer type.
    pub zero_point: Vec<f32>,
    /// The dim the per-channel parameters run along; `None` for scalar parameters.
    pub axis: Option<usize>,
}

/// One kernel call.
#[derive(Clone, Debug)]
pub struct Step {
    /// The MIL op it comes from (its `name` attribute, else its first result).
    pub op_name: String,
    /// The kind of that op; `cast` for a narrowing or widening step the plan added around
    /// fp32 arithmetic.
    pub kind: OpKind,
    /// What runs, with its parameters.
    pub kernel: Kernel,
    /// The data inputs, in the order the kernel takes them (a tuple input contributes one
    /// value per item; absent optional inputs none).
    pub inputs: Vec<ValueId>,
    /// The values it writes, one per output of the op.
    pub outputs: Vec<ValueId>,
}

/// A compiled function.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Every tensor: function inputs, constants, intermediates, outputs, and the hidden fp16
    /// copies of fp32 tensors; indexed by [`ValueId`].
    pub values: Vec<Value>,
    /// Constant data, snapshotted at compile; indexed by [`Storage::Const`].
    pub constants: Vec<Constant>,
    /// The kernel calls, in execution order.
    pub steps: Vec<Step>,
    /// Function inputs, in binding order.
    pub inputs: Vec<ValueId>,
    /// Function outputs, in binding order.
    pub outputs: Vec<ValueId>,
    /// The activation buffers and which value lives in which; indexed by
    /// [`Storage::Buffer`].
    pub memory: MemoryPlan,
    /// Bytes of every intermediate tensor together (what a plan without reuse would take).
    pub intermediate_bytes: usize,
    /// fp16 constants that GEMMs read: loading widens them to f32 once, so that evaluate
    /// does not convert weights on every call (the values are identical). Operands listed in
    /// `prepack` are not widened: they are packed instead.
    pub widen: Vec<usize>,
    /// Constant GEMM operands (conv and linear weights, constant matmul operands) that the backend packs
    /// once into the GEMM's panel layout, before any evaluate.
    pub prepack: Vec<Prepack>,
}

/// A constant operand of a GEMM step, packed once ahead of every evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepack {
    /// The step that reads it (an index into [`Plan::steps`]).
    pub step: usize,
    /// Which input of the step: 1 for conv's and linear's weight; 0 (x) or 1 (y) for matmul.
    pub input: usize,
}

/// How the simulator treats behaviours where MIL's meaning and the ANE's differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// Apply `attn_mask` of scaled_dot_product_attention. The ANE ignores it (REFERENCE.md
    /// §2, measured), and so does the simulator by default; set this for MIL's meaning.
    pub apply_attention_mask: bool,
    /// What an unload + load does with rewritten weight files (default: nothing, as
    /// measured on the ANE).
    pub reload: super::SimReload,
    /// How arithmetic typed fp32 is computed (default: in fp16, as on the ANE).
    pub fp32: Fp32Arithmetic,
}

/// How the simulator computes ops whose tensors are typed fp32.
///
/// The ANE has no fp32 arithmetic: it computes fp32 tensors in fp16 (REFERENCE.md §3), so
/// `mul(x, x)` on fp32 `[1.0001, 300]` gives `[1, inf]` there. Only function inputs and outputs,
/// `cast` and data movement (reshape, transpose, slice, concat, split) keep fp32 values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fp32Arithmetic {
    /// As the ANE: the fp32 operands of an op are rounded to fp16, the op runs with every fp16
    /// rule of `numerics` (rounding, overflow to inf, saturation, NaN rules), and its fp16
    /// result is stored, exactly, in the fp32 tensor.
    #[default]
    AsAne,
    /// MIL's meaning: IEEE f32 arithmetic, none of the ANE's rules. A reference for checking
    /// what fp16 computation costs a program.
    Exact,
}

/// Compiles `function` of `program`. `inputs`/`outputs` name the I/O in binding order.
pub fn compile(
    program: &Program,
    function: &str,
    weights: &Weights,
    mode: ReadMode,
    inputs: &[(String, TensorType)],
    outputs: &[(String, TensorType)],
    options: SimOptions,
) -> Result<Plan> {
    let func = program
        .function(function)
        .ok_or_else(|| Error::UnknownName(format!("the program has no function `{function}`")))?;
    let resolved = validate::resolve_function(func);
    if resolved.diagnostics.iter().any(|d| d.is_error()) {
        return Err(Error::Invalid(resolved.diagnostics));
    }
    let mut b = PlanBuilder {
        weights,
        mode,
        options,
        values: Vec::new(),
        alias_of: Vec::new(),
        names: HashMap::new(),
        constants: Vec::new(),
        steps: Vec::new(),
        widening: Vec::new(),
        narrow: HashMap::new(),
    };
    let mut input_ids = Vec::with_capacity(inputs.len());
    for (i, (name, ty)) in inputs.iter().enumerate() {
        input_ids.push(b.define(name, ty.clone(), Storage::Input(i), None));
    }
    for r in &resolved.ops {
        b.operation(r)?;
    }
    let output_ids = outputs.iter().map(|(name, _)| b.value(name)).collect::<Result<Vec<_>>>()?;
    Ok(b.finish(input_ids, output_ids))
}

struct PlanBuilder<'a> {
    weights: &'a Weights,
    mode: ReadMode,
    options: SimOptions,
    values: Vec<Value>,
    /// For a reshape result, the value whose storage it shares.
    alias_of: Vec<Option<ValueId>>,
    names: HashMap<String, ValueId>,
    constants: Vec<Constant>,
    steps: Vec<Step>,
    /// For each step, whether it only widens an fp16 result into its fp32 tensor (such a step
    /// is dropped when nothing reads the fp32 tensor).
    widening: Vec<bool>,
    /// fp32 values whose fp16 rounding is already available, and that fp16 value.
    narrow: HashMap<ValueId, ValueId>,
}

/// A value whose buffer the memory plan assigns.
const PENDING: Storage = Storage::Buffer(usize::MAX);

/// The inputs of each op that carry tensor data (the others are parameters the registry
/// resolves at compile time).
fn data_inputs(kind: OpKind) -> &'static [&'static str] {
    match kind {
        OpKind::Conv => &["x", "weight", "bias"],
        OpKind::Matmul => &["x", "y"],
        OpKind::Concat => &["values"],
        OpKind::ScaledDotProductAttention => &["query", "key", "value", "attn_mask"],
        OpKind::Quantize | OpKind::Dequantize => &["input"],
        k if k.is_elementwise_binary() => &["x", "y"],
        k => match k.family() {
            Some(OpFamily::Norm) => family::norm::data_inputs(kind),
            Some(OpFamily::Index) => family::index::data_inputs(kind),
            Some(OpFamily::Logic) => family::logic::data_inputs(kind),
            None => &["x"],
        },
    }
}

impl PlanBuilder<'_> {
    fn define(
        &mut self,
        name: &str,
        ty: TensorType,
        storage: Storage,
        alias: Option<ValueId>,
    ) -> ValueId {
        let id = self.values.len();
        self.values.push(Value { name: name.to_string(), ty, storage, offset: 0 });
        self.alias_of.push(alias);
        self.names.insert(name.to_string(), id);
        id
    }

    /// A value the program does not name (the fp16 copy of an fp32 tensor): `label` only
    /// appears in error messages and never shadows a name of the program.
    fn define_hidden(
        &mut self,
        label: String,
        ty: TensorType,
        storage: Storage,
        alias: Option<ValueId>,
    ) -> ValueId {
        self.values.push(Value { name: label, ty, storage, offset: 0 });
        self.alias_of.push(alias);
        self.values.len() - 1
    }

    fn push_step(&mut self, step: Step, widening: bool) {
        self.steps.push(step);
        self.widening.push(widening);
    }

    /// The fp16 rounding of the fp32 value `v`, as the ANE reads an fp32 operand: a constant
    /// is converted once here, another tensor by a cast step (NaN becomes +inf either way, as
    /// the datapath reads it). Made once per value.
    fn narrowed(&mut self, v: ValueId) -> Result<ValueId> {
        if let Some(&h) = self.narrow.get(&v) {
            return Ok(h);
        }
        let value = self.values[v].clone();
        let ty = TensorType { dtype: DType::Fp16, ..value.ty.clone() };
        let label = format!("{}(fp16)", value.name);
        let h = match value.storage {
            Storage::Const(c) => {
                let n = value.ty.byte_size().unwrap_or(0) as usize;
                let wide = decode_to_f32(&self.constants[c].bytes()[..n], DType::Fp32)?;
                let halves: Vec<f16> = wide
                    .iter()
                    .map(|&x| if x.is_nan() { f16::INFINITY } else { f16::from_f32(x) })
                    .collect();
                let c = self.push_constant(bytemuck::cast_slice(&halves).to_vec());
                self.define_hidden(label, ty, Storage::Const(c), None)
            }
            _ => {
                let h = self.define_hidden(label, ty, PENDING, None);
                let step = Step {
                    op_name: value.name.clone(),
                    kind: OpKind::Cast,
                    kernel: Kernel::Cast,
                    inputs: vec![v],
                    outputs: vec![h],
                };
                self.push_step(step, false);
                h
            }
        };
        self.narrow.insert(v, h);
        Ok(h)
    }

    fn value(&self, name: &str) -> Result<ValueId> {
        self.names.get(name).copied().ok_or_else(|| {
            Error::Unsupported(format!("`{name}` is not a tensor the simulator can compute with"))
        })
    }

    fn push_constant(&mut self, bytes: Vec<u8>) -> usize {
        self.constants.push(Constant::Owned(AlignedBytes::from_bytes(&bytes)));
        self.constants.len() - 1
    }

    /// A constant for `lit` of type `ty`: BLOBFILE data shared with its file when aligned
    /// for typed access, inline values encoded.
    fn literal_constant(&mut self, lit: &Literal, ty: &TensorType) -> Result<usize> {
        if let LiteralData::Blob(blob) = &lit.data {
            let data = self
                .weights
                .read(blob, ty, self.mode)
                .map_err(|e| Error::Weights(e.to_string()))?;
            let file = self.weights.get(&blob.path).expect("read succeeded").shared_bytes();
            let start = data.as_ptr() as usize - file.as_slice().as_ptr() as usize;
            if (data.as_ptr() as usize).is_multiple_of(64) {
                self.constants.push(Constant::Shared { file, start, len: data.len() });
                return Ok(self.constants.len() - 1);
            }
            // Misaligned data (lenient files, unusual allocators) is copied into an aligned
            // buffer instead.
            let owned = data.to_vec();
            return Ok(self.push_constant(owned));
        }
        let bytes = self.literal_bytes(lit, ty)?;
        Ok(self.push_constant(bytes))
    }

    /// The value an argument stands for; an inline literal becomes a constant.
    fn argument(&mut self, arg: &Argument, hint: &str) -> Result<ValueId> {
        match arg {
            Argument::Var(v) => self.value(&v.name),
            Argument::Literal(lit) => {
                let ty = lit.ty.as_tensor().ok_or_else(|| {
                    Error::Unsupported(format!("`{hint}`: a {} literal is not a tensor", lit.ty))
                })?;
                let c = self.literal_constant(lit, &ty)?;
                // Not registered by name: an inline literal has none, and its made-up label
                // must not shadow a value of the program.
                self.values.push(Value {
                    name: hint.to_string(),
                    ty,
                    storage: Storage::Const(c),
                    offset: 0,
                });
                self.alias_of.push(None);
                Ok(self.values.len() - 1)
            }
            Argument::Tuple(..) => Err(Error::Unsupported(format!("`{hint}`: nested tuple"))),
        }
    }

    fn operation(&mut self, r: &ResolvedOp) -> Result<()> {
        let (ctx, op) = (&r.context, r.op);
        let op_name = op.name_attribute().unwrap_or(&op.outputs[0].name.name).to_string();
        let first_output = op.outputs[0].name.name.clone();
        let out_types: Vec<TensorType> = r
            .inferred
            .iter()
            .map(|t| {
                t.as_tensor().ok_or_else(|| {
                    Error::Unsupported(format!("{} `{op_name}` yields {t}", ctx.kind))
                })
            })
            .collect::<Result<_>>()?;
        match ctx.kind {
            OpKind::Const => {
                let lit =
                    op.attribute("val").ok_or_else(|| Error::Shape("const without val".into()))?;
                // Strings and dicts parameterise other ops; only tensors need bytes.
                if let Some(ty) = lit.ty.as_tensor().filter(|t| t.dtype != DType::String) {
                    let c = self.literal_constant(lit, &ty)?;
                    self.define(&first_output, ty, Storage::Const(c), None);
                }
                return Ok(());
            }
            OpKind::ConstexprAffineDequantize => {
                let q = ops::QuantParams::resolve(ctx).map_err(|e| op_error(ctx, &op_name, e))?;
                let values = self.dequantized(&q)?;
                let ty = out_types[0].clone();
                let c = self.push_constant(encode_f32(&values, ty.dtype)?);
                self.define(&first_output, ty, Storage::Const(c), None);
                return Ok(());
            }
            OpKind::Reshape | OpKind::ExpandDims | OpKind::Squeeze => {
                // No kernel: the result is the input's storage under another shape (a dense
                // row-major buffer is its own reshape, and adding or removing size-1 axes is
                // one).
                let arg =
                    op.input("x").ok_or_else(|| Error::Shape(format!("{} without x", ctx.kind)))?;
                let src = self.argument(arg, &format!("{op_name}_x"))?;
                let storage = self.values[src].storage;
                let ty = out_types[0].clone();
                let id = self.define(&first_output, ty.clone(), storage, Some(src));
                // The fp16 copy of an fp32 input reshapes the same way, for the ops that read it.
                if let Some(&h) = self.narrow.get(&src) {
                    let ty = TensorType { dtype: DType::Fp16, ..ty };
                    let label = format!("{first_output}(fp16)");
                    let hid = self.define_hidden(label, ty, self.values[h].storage, Some(h));
                    self.narrow.insert(id, hid);
                }
                return Ok(());
            }
            _ => {}
        }
        let kernel = self.kernel(ctx, &op_name)?;
        let mut inputs = Vec::new();
        for &name in data_inputs(ctx.kind) {
            match op.input(name) {
                Some(Argument::Tuple(items, _)) => {
                    for (i, item) in items.iter().enumerate() {
                        inputs.push(self.argument(item, &format!("{op_name}_{name}_{i}"))?);
                    }
                }
                Some(arg) => inputs.push(self.argument(arg, &format!("{op_name}_{name}"))?),
                None => {}
            }
        }
        let in_fp16 = self.options.fp32 == Fp32Arithmetic::AsAne && is_arithmetic(&kernel);
        if in_fp16 {
            for v in &mut inputs {
                if self.values[*v].ty.dtype == DType::Fp32 {
                    *v = self.narrowed(*v)?;
                }
            }
        }
        let mut outputs = Vec::with_capacity(out_types.len());
        let mut widen = Vec::new();
        for (o, ty) in op.outputs.iter().zip(out_types) {
            let fp32 = ty.dtype == DType::Fp32;
            let id = self.define(&o.name.name, ty.clone(), PENDING, None);
            if in_fp16 && fp32 {
                let ty = TensorType { dtype: DType::Fp16, ..ty };
                let h = self.define_hidden(format!("{}(fp16)", o.name.name), ty, PENDING, None);
                self.narrow.insert(id, h);
                widen.push((h, id));
                outputs.push(h);
            } else {
                outputs.push(id);
            }
        }
        let kind = ctx.kind;
        self.push_step(Step { op_name: op_name.clone(), kind, kernel, inputs, outputs }, false);
        for (h, id) in widen {
            let step = Step {
                op_name: op_name.clone(),
                kind: OpKind::Cast,
                kernel: Kernel::Cast,
                inputs: vec![h],
                outputs: vec![id],
            };
            self.push_step(step, true);
        }
        Ok(())
    }

    /// The kernel for one op, its parameters resolved by the registry.
    fn kernel(&mut self, ctx: &OpContext, op_name: &str) -> Result<Kernel> {
        let e = |err| op_error(ctx, op_name, err);
        // Integer arithmetic (index computations such as `ids + vocab` for negative token
        // ids) is exact and belongs to the logic family, not to the fp16 datapath.
        if ctx.kind.is_elementwise_binary()
            && ctx.tensor("x").is_ok_and(|x| x.dtype.is_int() || x.dtype == DType::Bool)
        {
            return Ok(Kernel::Logic(family::logic::plan(ctx).map_err(e)?));
        }
        Ok(match ctx.kind {
            OpKind::Cast => Kernel::Cast,
            OpKind::Conv => {
                let p = ops::ConvParams::resolve(ctx).map_err(e)?;
                Kernel::Conv {
                    params: KernelConv {
                        strides: p.strides,
                        dilations: p.dilations,
                        pad_before: p.pad_before,
                        pad_after: p.pad_after,
                        groups: p.groups,
                    },
                }
            }
            OpKind::Matmul => {
                let p = ops::MatmulParams::resolve(ctx).map_err(e)?;
                Kernel::Matmul {
                    transpose_x: p.transpose_x,
                    transpose_y: p.transpose_y,
                    windows: [None, None],
                }
            }
            OpKind::Add => Kernel::Binary(BinaryOp::Add),
            OpKind::Sub => Kernel::Binary(BinaryOp::Sub),
            OpKind::Mul => Kernel::Binary(BinaryOp::Mul),
            OpKind::RealDiv => Kernel::Binary(BinaryOp::RealDiv),
            OpKind::Pow => Kernel::Binary(BinaryOp::Pow),
            OpKind::Maximum => Kernel::Binary(BinaryOp::Maximum),
            OpKind::Minimum => Kernel::Binary(BinaryOp::Minimum),
            OpKind::Exp => Kernel::Unary(UnaryOp::Exp),
            OpKind::Log => {
                let eps = ops::EpsilonParams::resolve(ctx).map_err(e)?.epsilon as f32;
                Kernel::Unary(UnaryOp::Log { epsilon: eps })
            }
            OpKind::Sqrt => Kernel::Unary(UnaryOp::Sqrt),
            OpKind::Tanh => Kernel::Unary(UnaryOp::Tanh),
            OpKind::Relu => Kernel::Unary(UnaryOp::Relu),
            OpKind::Sigmoid => Kernel::Unary(UnaryOp::Sigmoid),
            OpKind::Silu => Kernel::Unary(UnaryOp::Silu),
            OpKind::Rsqrt => {
                let eps = ops::EpsilonParams::resolve(ctx).map_err(e)?.epsilon as f32;
                Kernel::Unary(UnaryOp::Rsqrt { epsilon: eps })
            }
            OpKind::Inverse => {
                let eps = ops::EpsilonParams::resolve(ctx).map_err(e)?.epsilon as f32;
                Kernel::Unary(UnaryOp::Inverse { epsilon: eps })
            }
            OpKind::Gelu => {
                Kernel::Unary(UnaryOp::Gelu(match ops::GeluMode::resolve(ctx).map_err(e)? {
                    ops::GeluMode::Exact => GeluMode::Exact,
                    ops::GeluMode::TanhApproximation => GeluMode::TanhApproximation,
                    ops::GeluMode::SigmoidApproximation => GeluMode::SigmoidApproximation,
                }))
            }
            OpKind::Transpose => {
                Kernel::Transpose { perm: ops::TransposeParams::resolve(ctx).map_err(e)?.perm }
            }
            OpKind::SliceBySize | OpKind::SliceByIndex => {
                let p = ops::SliceParams::resolve(ctx).map_err(e)?;
                let axes = (0..p.begin.len())
                    .map(|i| SliceAxis {
                        start: p.begin[i],
                        stride: p.stride[i] as isize,
                        len: p.size[i],
                    })
                    .collect();
                Kernel::Slice { axes }
            }
            OpKind::Concat => {
                let p = ops::ConcatParams::resolve(ctx).map_err(e)?;
                Kernel::Concat { axis: p.axis, interleave: p.interleave, placed: Vec::new() }
            }
            OpKind::Split => {
                let p = ops::SplitParams::resolve(ctx).map_err(e)?;
                Kernel::Split { axis: p.axis, sizes: p.sizes }
            }
            OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax => {
                let p = ops::ReduceParams::resolve(ctx).map_err(e)?;
                let op = match ctx.kind {
                    OpKind::ReduceSum => ReduceOp::Sum,
                    OpKind::ReduceMean => ReduceOp::Mean,
                    _ => ReduceOp::Max,
                };
                Kernel::Reduce { op, axes: p.axes }
            }
            OpKind::Softmax => {
                Kernel::Softmax { axis: ops::SoftmaxParams::resolve(ctx).map_err(e)?.axis }
            }
            OpKind::ScaledDotProductAttention => {
                ops::AttentionParams::resolve(ctx).map_err(e)?;
                Kernel::Attention { apply_mask: self.options.apply_attention_mask, scale: None }
            }
            OpKind::Quantize | OpKind::Dequantize => {
                let q = ops::QuantParams::resolve(ctx).map_err(e)?;
                let quant = Quant {
                    scale: self.const_values(&q.scale)?,
                    zero_point: self.const_values(&q.zero_point)?,
                    axis: q.axis,
                };
                if ctx.kind == OpKind::Quantize {
                    Kernel::Quantize(quant)
                } else {
                    Kernel::Dequantize(quant)
                }
            }
            OpKind::Abs => Kernel::Unary(UnaryOp::Abs),
            OpKind::Erf => Kernel::Unary(UnaryOp::Erf),
            OpKind::Sin => Kernel::Unary(UnaryOp::Sin),
            OpKind::Cos => Kernel::Unary(UnaryOp::Cos),
            OpKind::Floor => Kernel::Unary(UnaryOp::Floor),
            OpKind::Ceil => Kernel::Unary(UnaryOp::Ceil),
            OpKind::Round => Kernel::Unary(UnaryOp::Round),
            OpKind::Sign => Kernel::Unary(UnaryOp::Sign),
            OpKind::Square => Kernel::Unary(UnaryOp::Square),
            OpKind::Exp2 => Kernel::Unary(UnaryOp::Exp2),
            OpKind::Relu6 => Kernel::Unary(UnaryOp::Relu6),
            OpKind::Softplus => Kernel::Unary(UnaryOp::Softplus),
            OpKind::Softsign => Kernel::Unary(UnaryOp::Softsign),
            OpKind::LeakyRelu
            | OpKind::Elu
            | OpKind::ThresholdedRelu
            | OpKind::SigmoidHard
            | OpKind::ClampedRelu
            | OpKind::ScaledTanh
            | OpKind::LinearActivation => {
                let p = ops::ActivationParams::resolve(ctx).map_err(e)?;
                let (alpha, beta) = (p.alpha as f32, p.beta as f32);
                Kernel::Unary(match ctx.kind {
                    OpKind::LeakyRelu => UnaryOp::LeakyRelu { alpha },
                    OpKind::Elu => UnaryOp::Elu { alpha },
                    OpKind::ThresholdedRelu => UnaryOp::ThresholdedRelu { alpha },
                    OpKind::SigmoidHard => UnaryOp::SigmoidHard { alpha, beta },
                    OpKind::ClampedRelu => UnaryOp::ClampedRelu { alpha, beta },
                    OpKind::ScaledTanh => UnaryOp::ScaledTanh { alpha, beta },
                    _ => UnaryOp::LinearActivation { alpha, beta },
                })
            }
            OpKind::Const
            | OpKind::ConstexprAffineDequantize
            | OpKind::Reshape
            | OpKind::ExpandDims
            | OpKind::Squeeze => {
                unreachable!("handled without a kernel")
            }
            k => match k.family() {
                Some(OpFamily::Norm) => Kernel::Norm(family::norm::plan(ctx).map_err(e)?),
                Some(OpFamily::Index) => Kernel::Index(family::index::plan(ctx).map_err(e)?),
                Some(OpFamily::Logic) => Kernel::Logic(family::logic::plan(ctx).map_err(e)?),
                None => unreachable!("{k} has a kernel arm or a family"),
            },
        })
    }

    /// A literal's elements as bytes of `ty`: inline values encoded, BLOBFILE data copied
    /// out of the weight file (the compile-time snapshot).
    fn literal_bytes(&self, lit: &Literal, ty: &TensorType) -> Result<Vec<u8>> {
        match &lit.data {
            LiteralData::Tensor(data) => encode_literal(data, ty.dtype),
            LiteralData::Blob(blob) => self
                .weights
                .read(blob, ty, self.mode)
                .map(<[u8]>::to_vec)
                .map_err(|e| Error::Weights(e.to_string())),
            LiteralData::Dict(_) => Err(Error::Unsupported("a dict is not a tensor".into())),
        }
    }

    /// Values of a quantization parameter, inline or read from a weight file.
    fn const_values(&self, v: &ConstValues<f32>) -> Result<Vec<f32>> {
        match v {
            ConstValues::Inline(values) => Ok(values.clone()),
            ConstValues::Blob { blob, dtype, len } => {
                let ty = TensorType::new(*dtype, [*len]);
                let bytes = self
                    .weights
                    .read(blob, &ty, self.mode)
                    .map_err(|e| Error::Weights(e.to_string()))?;
                decode_to_f32(bytes, *dtype)
            }
        }
    }

    /// constexpr_affine_dequantize, evaluated once at compile time.
    fn dequantized(&self, q: &ops::QuantParams) -> Result<Vec<f32>> {
        let data = q.data.as_ref().ok_or_else(|| {
            Error::Shape("constexpr_affine_dequantize without quantized_data".into())
        })?;
        let data = self.const_values(data)?;
        let scale = self.const_values(&q.scale)?;
        let zero = self.const_values(&q.zero_point)?;
        let inner: usize = q.axis.map_or(1, |a| q.shape[a + 1..].iter().product());
        // Scale and zero point are each one value or one per channel of `axis`.
        let channels = scale.len().max(zero.len()).max(1);
        let pick = |values: &[f32], c: usize| if values.len() == 1 { values[0] } else { values[c] };
        Ok(data
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = if channels == 1 { 0 } else { (i / inner) % channels };
                pick(&scale, c) * (v - pick(&zero, c))
            })
            .collect())
    }

    /// Constant conv and linear weights and matmul operands, which the backend packs for the
    /// GEMM.
    fn gemm_prepacks(&self) -> Vec<Prepack> {
        let mut out = Vec::new();
        for (s, step) in self.steps.iter().enumerate() {
            let operands: &[usize] = match step.kernel {
                Kernel::Conv { .. } => &[1],
                Kernel::Matmul { .. } => &[0, 1],
                Kernel::Norm(family::norm::NormKernel::Linear { .. }) => &[1],
                _ => &[],
            };
            for &input in operands {
                let Some(&v) = step.inputs.get(input) else { continue };
                let value = &self.values[v];
                if matches!(value.storage, Storage::Const(_))
                    && matches!(value.ty.dtype, DType::Fp16 | DType::Fp32)
                {
                    out.push(Prepack { step: s, input });
                }
            }
        }
        out
    }

    /// fp16 constants read by a GEMM that are not packed ahead (conv's and linear's bias).
    fn gemm_constants(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for step in &self.steps {
            let operands: &[usize] = match step.kind {
                OpKind::Conv | OpKind::Linear => &[2],
                _ => &[],
            };
            for &i in operands {
                let Some(&v) = step.inputs.get(i) else { continue };
                let value = &self.values[v];
                if let (Storage::Const(c), DType::Fp16) = (value.storage, value.ty.dtype)
                    && !out.contains(&c)
                {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Folds transposes of the last two dims into the matmuls beside them, which read their
    /// operands through strides anyway (graphs converted from channel-first layouts are full
    /// of them):
    /// - `transpose(matmul(x, y, tx, ty))` becomes `matmul(y, x, !ty, !tx)` writing the
    ///   transpose's result, when the transpose is the product's only reader: `(x y)^T =
    ///   y^T x^T`, each element the same products summed in the same order, so the same bits;
    /// - a matmul operand `transpose(z)` becomes `z` with the operand's transpose flag flipped,
    ///   when only matmuls read the transposed tensor, each directly (not through a reshape).
    ///
    /// The transpose steps go, and their buffers with them.
    fn fold_transposes_into_matmuls(&mut self, outputs: &[ValueId]) {
        let swaps_last_two = |kernel: &Kernel| match kernel {
            Kernel::Transpose { perm } => {
                let r = perm.len();
                r >= 2
                    && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
                    && (perm[r - 2], perm[r - 1]) == (r - 1, r - 2)
            }
            _ => false,
        };
        let rank_two_or_more = |v: ValueId| self.values[v].ty.shape.len() >= 2;
        let mut dropped = vec![false; self.steps.len()];
        // Transposed products: the matmul takes over the transpose's output.
        let readers = self.reader_counts(outputs);
        let mut producer: HashMap<ValueId, usize> = HashMap::new();
        for (s, step) in self.steps.iter().enumerate() {
            for &o in &step.outputs {
                producer.insert(o, s);
            }
        }
        for (t, drop) in dropped.iter_mut().enumerate() {
            if !swaps_last_two(&self.steps[t].kernel) {
                continue;
            }
            let product = self.steps[t].inputs[0];
            let Some(&s) = producer.get(&product) else { continue };
            let Kernel::Matmul { transpose_x, transpose_y, windows: [None, None] } =
                self.steps[s].kernel
            else {
                continue;
            };
            let (x, y) = (self.steps[s].inputs[0], self.steps[s].inputs[1]);
            if readers[product] != 1 || !rank_two_or_more(x) || !rank_two_or_more(y) {
                continue;
            }
            let result = self.steps[t].outputs[0];
            let step = &mut self.steps[s];
            step.kernel = Kernel::Matmul {
                transpose_x: !transpose_y,
                transpose_y: !transpose_x,
                windows: [None, None],
            };
            step.inputs = vec![y, x];
            step.outputs = vec![result];
            *drop = true;
        }
        // Transposed operands: each matmul reads the tensor before the transpose. (Folding a
        // product moved no read from one value to another, so `readers` still holds.)
        let mut matmul_reads: HashMap<ValueId, Vec<(usize, usize)>> = HashMap::new();
        for (s, step) in self.steps.iter().enumerate() {
            if !dropped[s] && matches!(step.kernel, Kernel::Matmul { windows: [None, None], .. }) {
                for (slot, &v) in step.inputs.iter().enumerate().take(2) {
                    matmul_reads.entry(v).or_default().push((s, slot));
                }
            }
        }
        for (t, drop) in dropped.iter_mut().enumerate() {
            if *drop || !swaps_last_two(&self.steps[t].kernel) {
                continue;
            }
            let (source, transposed) = (self.steps[t].inputs[0], self.steps[t].outputs[0]);
            let Some(reads) = matmul_reads.get(&transposed) else { continue };
            if reads.len() != readers[transposed] {
                continue;
            }
            for &(s, slot) in reads {
                let step = &mut self.steps[s];
                if let Kernel::Matmul { transpose_x, transpose_y, .. } = &mut step.kernel {
                    let flag = if slot == 0 { transpose_x } else { transpose_y };
                    *flag = !*flag;
                }
                step.inputs[slot] = source;
            }
            *drop = true;
        }
        self.drop_steps(&dropped);
    }

    /// Runs attention that a graph spells out in fp16 — `matmul(Q, K, transpose_y) ->
    /// mul(scalar constant) -> [add(mask)] -> softmax(last axis) -> matmul(., V)`, as
    /// converters and the fixtures write it — as the fused kernel, which rounds at the same
    /// points and so gives the same bits (kernels::attention), when nothing else reads the
    /// tensors in between and Q, K and V have the same batch dims. The last matmul's step
    /// becomes the attention; the four before it go.
    fn fuse_spelled_attention(&mut self, outputs: &[ValueId]) {
        let readers = self.reader_counts(outputs);
        // The one step (and input slot) that reads `v`, when exactly one does, directly.
        let mut reader: HashMap<ValueId, (usize, usize)> = HashMap::new();
        for (s, step) in self.steps.iter().enumerate() {
            for (slot, &v) in step.inputs.iter().enumerate() {
                reader.insert(v, (s, slot));
            }
        }
        let only_reader = |v: ValueId| (readers[v] == 1).then(|| reader.get(&v).copied()).flatten();
        let fp16 = |v: ValueId| self.values[v].ty.dtype == DType::Fp16;
        let scalar_fp16 = |v: ValueId| -> Option<f32> {
            let Storage::Const(c) = self.values[v].storage else { return None };
            let bytes = self.constants[c].bytes();
            if !fp16(v) || bytes.len() != 2 {
                return None;
            }
            let c = f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32();
            (c.is_finite() && c != 0.0).then_some(c)
        };
        let mut dropped = vec![false; self.steps.len()];
        for m1 in 0..self.steps.len() {
            let chain = (|| {
                let step = &self.steps[m1];
                let Kernel::Matmul { transpose_x: false, transpose_y: true, windows: [None, None] } =
                    step.kernel
                else {
                    return None;
                };
                let (q, k) = (step.inputs[0], step.inputs[1]);
                let (mul, slot) = only_reader(step.outputs[0])?;
                if !matches!(self.steps[mul].kernel, Kernel::Binary(BinaryOp::Mul)) {
                    return None;
                }
                let scale = scalar_fp16(self.steps[mul].inputs[1 - slot])?;
                let mut next = only_reader(self.steps[mul].outputs[0])?;
                let mut mask = None;
                if matches!(self.steps[next.0].kernel, Kernel::Binary(BinaryOp::Add)) {
                    let add = next.0;
                    mask = Some((add, self.steps[add].inputs[1 - next.1]));
                    next = only_reader(self.steps[add].outputs[0])?;
                }
                let softmax = next.0;
                let scores = &self.values[self.steps[softmax].outputs[0]].ty.shape;
                let Kernel::Softmax { axis } = self.steps[softmax].kernel else { return None };
                if axis + 1 != scores.len() {
                    return None;
                }
                let (m2, slot) = only_reader(self.steps[softmax].outputs[0])?;
                let Kernel::Matmul {
                    transpose_x: false,
                    transpose_y: false,
                    windows: [None, None],
                } = self.steps[m2].kernel
                else {
                    return None;
                };
                let v = self.steps[m2].inputs[1];
                let batch = |x: ValueId| {
                    let shape = &self.values[x].ty.shape;
                    (shape.len() >= 3).then(|| &shape[..shape.len() - 2])
                };
                let same_batch = batch(q).is_some() && batch(q) == batch(k) && batch(q) == batch(v);
                // The mask must broadcast to the scores (the add's result is their shape).
                let mask_fits = mask.is_none_or(|(add, m)| {
                    fp16(m)
                        && self.values[self.steps[add].outputs[0]].ty.shape == *scores
                        && self.values[m].ty.shape.len() <= scores.len()
                });
                let all_fp16 = [q, k, v, self.steps[m2].outputs[0]].into_iter().all(fp16);
                (slot == 0 && same_batch && mask_fits && all_fp16)
                    .then_some((q, k, v, scale, mul, mask, softmax, m2))
            })();
            let Some((q, k, v, scale, mul, mask, softmax, m2)) = chain else { continue };
            let mut inputs = vec![q, k, v];
            for s in [m1, mul, softmax] {
                dropped[s] = true;
            }
            if let Some((add, m)) = mask {
                dropped[add] = true;
                inputs.push(m);
            }
            let step = &mut self.steps[m2];
            step.kind = OpKind::ScaledDotProductAttention;
            step.kernel = Kernel::Attention { apply_mask: true, scale: Some(scale) };
            step.inputs = inputs;
        }
        self.drop_steps(&dropped);
    }

    /// Lets matmuls read a sliced operand in place when the slice is a block of whole rows
    /// (each row contiguous, rows evenly spaced: a weight cut out of a wider input, as models
    /// with dynamic weights pass them) and only matmuls read it: each takes the sliced tensor
    /// with a [`RowWindow`], and the slice step and its buffer go. Slices of constants stay,
    /// so that their matmuls can pack them ahead.
    fn read_slices_in_place(&mut self, outputs: &[ValueId]) {
        let root = |v: ValueId| self.root(v);
        let readers = self.reader_counts(outputs);
        // The matmul inputs (step, slot) that read each root value.
        let mut matmul_reads: HashMap<ValueId, Vec<(usize, usize)>> = HashMap::new();
        for (s, step) in self.steps.iter().enumerate() {
            if matches!(step.kernel, Kernel::Matmul { .. }) {
                for (slot, &v) in step.inputs.iter().enumerate().take(2) {
                    matmul_reads.entry(root(v)).or_default().push((s, slot));
                }
            }
        }
        let mut folds: Vec<(usize, usize, ValueId, RowWindow)> = Vec::new();
        let mut dropped = vec![false; self.steps.len()];
        for (p, step) in self.steps.iter().enumerate() {
            let Kernel::Slice { axes } = &step.kernel else { continue };
            let (r, source) = (step.outputs[0], step.inputs[0]);
            let Some(reads) = matmul_reads.get(&r) else { continue };
            if reads.len() != readers[r] || matches!(self.values[source].storage, Storage::Const(_))
            {
                continue;
            }
            let (base, walk) =
                super::kernels::layout::slice_walk(&self.values[source].ty.shape, axes);
            // Each reader's operand must be `rows` runs of `cols` contiguous elements of the
            // slice, evenly spaced: one matrix, whatever reshapes it went through.
            let window = |v: ValueId| -> Option<RowWindow> {
                let shape = &self.values[v].ty.shape;
                let rank = shape.len();
                if rank < 2 || shape[..rank - 2].iter().product::<usize>() != 1 {
                    return None;
                }
                let (rows, cols) = (shape[rank - 2], shape[rank - 1]);
                let row_stride = match walk[..] {
                    [(len, 1)] if len == cols && rows == 1 => cols,
                    [(n, step), (len, 1)] if n == rows && len == cols && step >= cols as isize => {
                        step as usize
                    }
                    _ => return None,
                };
                Some(RowWindow { shape: shape.clone(), offset: base as usize, row_stride })
            };
            let windows: Option<Vec<RowWindow>> =
                reads.iter().map(|&(s, slot)| window(self.steps[s].inputs[slot])).collect();
            let Some(windows) = windows else { continue };
            for (&(s, slot), w) in reads.iter().zip(windows) {
                folds.push((s, slot, source, w));
            }
            dropped[p] = true;
        }
        for (s, slot, source, window) in folds {
            if let Kernel::Matmul { windows, .. } = &mut self.steps[s].kernel {
                windows[slot] = Some(window);
            }
            self.steps[s].inputs[slot] = source;
        }
        self.drop_steps(&dropped);
    }

    /// The value whose buffer `v` uses: itself, or what the reshapes it comes from alias.
    fn root(&self, mut v: ValueId) -> ValueId {
        while let Some(a) = self.alias_of[v] {
            v = a;
        }
        v
    }

    /// How many step inputs and function outputs read each root value (through aliases).
    fn reader_counts(&self, outputs: &[ValueId]) -> Vec<usize> {
        let mut readers = vec![0usize; self.values.len()];
        for &v in self.steps.iter().flat_map(|s| &s.inputs).chain(outputs) {
            readers[self.root(v)] += 1;
        }
        readers
    }

    /// Removes the steps marked in `dropped` (one flag per step).
    fn drop_steps(&mut self, dropped: &[bool]) {
        let steps = std::mem::take(&mut self.steps);
        let widening = std::mem::take(&mut self.widening);
        (self.steps, self.widening) = steps
            .into_iter()
            .zip(widening)
            .zip(dropped)
            .filter(|(_, dropped)| !**dropped)
            .map(|(kept, _)| kept)
            .unzip();
    }

    /// Lets the steps that make a concat's inputs write them straight into the concat's
    /// output, where the concat would copy them. Returns each such part: (its root value,
    /// the concat's output, byte offset in it).
    ///
    /// A part must follow the ones before it in the output's memory (a concat that is not
    /// interleaved, with only dims of 1 before its axis), be made by a step with no other
    /// output, and be read by nothing but this concat, once (so no step reads it from its
    /// place while its producer or the concat holds the buffer). A concat's output that has
    /// parts is not itself placed in another. The concat then copies only the other inputs.
    fn place_concat_parts(&mut self, outputs: &[ValueId]) -> Vec<(ValueId, ValueId, usize)> {
        let readers = self.reader_counts(outputs);
        let mut producer: HashMap<ValueId, usize> = HashMap::new();
        for (s, step) in self.steps.iter().enumerate() {
            for &o in &step.outputs {
                producer.insert(o, s);
            }
        }
        let mut parts = Vec::new();
        let mut holds_parts = vec![false; self.values.len()];
        let mut is_part = vec![false; self.values.len()];
        for s in 0..self.steps.len() {
            let Kernel::Concat { axis, interleave: false, .. } = self.steps[s].kernel else {
                continue;
            };
            let c = self.steps[s].outputs[0];
            let shape = &self.values[c].ty.shape;
            if is_part[c] || self.alias_of[c].is_some() || shape[..axis].iter().any(|&d| d != 1) {
                continue;
            }
            let mut placed = vec![false; self.steps[s].inputs.len()];
            let mut offset = 0;
            for (k, &v) in self.steps[s].inputs.iter().enumerate() {
                let bytes = self.values[v].ty.byte_size().unwrap_or(0) as usize;
                let r = self.root(v);
                let made_alone =
                    producer.get(&r).is_some_and(|&p| p < s && self.steps[p].outputs.len() == 1);
                if made_alone
                    && readers[r] == 1
                    && !holds_parts[r]
                    && self.values[r].storage == PENDING
                {
                    placed[k] = true;
                    is_part[r] = true;
                    parts.push((r, c, offset));
                }
                offset += bytes;
            }
            if placed.contains(&true) {
                holds_parts[c] = true;
                if let Kernel::Concat { placed: p, .. } = &mut self.steps[s].kernel {
                    *p = placed;
                }
            }
        }
        parts
    }

    /// Assigns buffers by live range and returns the plan.
    fn finish(mut self, inputs: Vec<ValueId>, outputs: Vec<ValueId>) -> Plan {
        self.fuse_spelled_attention(&outputs);
        self.fold_transposes_into_matmuls(&outputs);
        self.read_slices_in_place(&outputs);
        // Widenings of fp16 results that no step and no output reads: their fp32 tensors are
        // never computed and get no buffer.
        let mut read = vec![false; self.values.len()];
        for &v in self.steps.iter().flat_map(|s| &s.inputs).chain(&outputs) {
            read[self.root(v)] = true;
        }
        let steps = std::mem::take(&mut self.steps);
        self.steps = steps
            .into_iter()
            .zip(&self.widening)
            .filter(|(step, widening)| !**widening || read[step.outputs[0]])
            .map(|(step, _)| step)
            .collect();
        // Lifetimes of every buffer-backed root value: from its step to its last use.
        let mut first = vec![usize::MAX; self.values.len()];
        let mut last = vec![0usize; self.values.len()];
        for (s, step) in self.steps.iter().enumerate() {
            for &o in &step.outputs {
                first[o] = s;
                last[o] = last[o].max(s);
            }
            for &i in &step.inputs {
                let r = self.root(i);
                last[r] = last[r].max(s);
            }
        }
        let end = self.steps.len();
        for &o in &outputs {
            let r = self.root(o);
            last[r] = end;
        }
        // A concat's output lives from its first part on; the parts live in it.
        let parts = self.place_concat_parts(&outputs);
        let mut in_concat = vec![false; self.values.len()];
        for &(part, c, _) in &parts {
            first[c] = first[c].min(first[part]);
            in_concat[part] = true;
        }
        // A value no step produces is a dropped widening's: it needs no buffer.
        let roots: Vec<ValueId> = (0..self.values.len())
            .filter(|&v| {
                self.values[v].storage == PENDING
                    && self.alias_of[v].is_none()
                    && first[v] < end
                    && !in_concat[v]
            })
            .collect();
        let lifetimes: Vec<Lifetime> = roots
            .iter()
            .map(|&v| Lifetime {
                bytes: self.values[v].ty.byte_size().unwrap_or(0) as usize,
                first: first[v].min(end),
                last: last[v].max(first[v].min(end)),
            })
            .collect();
        let memory = memory::plan(&lifetimes);
        for (k, &v) in roots.iter().enumerate() {
            self.values[v].storage = Storage::Buffer(memory.assignment[k]);
        }
        for &(part, c, offset) in &parts {
            self.values[part].storage = self.values[c].storage;
            self.values[part].offset = offset;
        }
        for v in 0..self.values.len() {
            if self.alias_of[v].is_some() {
                let r = self.root(v);
                (self.values[v].storage, self.values[v].offset) =
                    (self.values[r].storage, self.values[r].offset);
            }
        }
        let intermediate_bytes = lifetimes.iter().map(|l| l.bytes).sum();
        let widen = self.gemm_constants();
        let prepack = self.gemm_prepacks();
        Plan {
            widen,
            prepack,
            values: self.values,
            constants: self.constants,
            steps: self.steps,
            inputs,
            outputs,
            memory,
            intermediate_bytes,
        }
    }
}

/// Kernels that compute with their operands' values (and so, on the ANE, in fp16); the others
/// move or convert data and keep fp32 values exact.
fn is_arithmetic(kernel: &Kernel) -> bool {
    match kernel {
        Kernel::Conv { .. }
        | Kernel::Matmul { .. }
        | Kernel::Binary(_)
        | Kernel::Unary(_)
        | Kernel::Reduce { .. }
        | Kernel::Softmax { .. }
        | Kernel::Attention { .. }
        | Kernel::Quantize(_)
        | Kernel::Dequantize(_) => true,
        Kernel::Norm(k) => family::norm::is_arithmetic(k),
        Kernel::Index(k) => family::index::is_arithmetic(k),
        Kernel::Logic(k) => family::logic::is_arithmetic(k),
        Kernel::Cast
        | Kernel::Transpose { .. }
        | Kernel::Slice { .. }
        | Kernel::Concat { .. }
        | Kernel::Split { .. } => false,
    }
}

fn op_error(ctx: &OpContext, op_name: &str, e: ops::OpError) -> Error {
    Error::Shape(format!("{} `{op_name}`: {}", ctx.kind, e.message))
}

/// Inline literal elements as little-endian bytes of `dtype`.
fn encode_literal(data: &TensorData, dtype: DType) -> Result<Vec<u8>> {
    let unsupported = || Error::Unsupported(format!("{dtype} constants"));
    Ok(match (data, dtype) {
        (TensorData::F16(v), _) => bytemuck::cast_slice(v).to_vec(),
        (TensorData::BF16(v), _) => bytemuck::cast_slice(v).to_vec(),
        (TensorData::F32(v), _) => bytemuck::cast_slice(v).to_vec(),
        (TensorData::F64(v), _) => bytemuck::cast_slice(v).to_vec(),
        (TensorData::Bool(v), _) => v.iter().map(|&b| b as u8).collect(),
        (TensorData::Int(v), DType::Int8) => v.iter().map(|&x| x as i8 as u8).collect(),
        (TensorData::Int(v), DType::Int16) => {
            v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect()
        }
        (TensorData::Int(v), DType::Int32) => {
            v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect()
        }
        (TensorData::Int(v), DType::Int64) => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        (TensorData::UInt(v), DType::UInt8 | DType::Fp8E4M3 | DType::Fp8E5M2) => {
            v.iter().map(|&x| x as u8).collect()
        }
        (TensorData::UInt(v), DType::UInt16) => {
            v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect()
        }
        (TensorData::UInt(v), DType::UInt32) => {
            v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect()
        }
        (TensorData::UInt(v), DType::UInt64) => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        _ => return Err(unsupported()),
    })
}

/// f32 values as bytes of `dtype` (fp16 rounds to nearest even).
pub fn encode_f32(values: &[f32], dtype: DType) -> Result<Vec<u8>> {
    match dtype {
        DType::Fp32 => Ok(bytemuck::cast_slice(values).to_vec()),
        DType::Fp16 => {
            let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            Ok(bytemuck::cast_slice(&halves).to_vec())
        }
        other => Err(Error::Unsupported(format!("{other} results of a dequantized constant"))),
    }
}

/// Little-endian elements of `dtype` as f32.
fn decode_to_f32(bytes: &[u8], dtype: DType) -> Result<Vec<f32>> {
    Ok(match dtype {
        DType::Fp16 => {
            bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
        }
        DType::Fp32 => {
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        DType::Int8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        DType::UInt8 => bytes.iter().map(|&b| b as f32).collect(),
        other => return Err(Error::Unsupported(format!("{other} quantization parameters"))),
    })
}
