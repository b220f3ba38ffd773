//! The op registry: one entry per MIL op with its inputs, attributes, defaults, and type and
//! shape inference. The validator, the builder and the simulator all go through it, so an
//! op's rules live here and nowhere else.
//!
//! - [`OpKind::signature`]: which inputs and attributes an op takes ([`Signature`]).
//! - [`infer`]: checks an op against its signature, then infers its result types.
//! - `*Params::resolve`: an op's parameters with every default applied, for executors
//!   (the simulator) so that nobody re-derives them; inference is built on the same structs.
//! - [`compiler_note`]: what public sources report about the ANE compiler and each op.
//!
//! Semantics follow coremltools' op definitions (`coremltools/converters/mil/mil/ops/defs`),
//! summarised in REFERENCE.md §6; each rule cites the file it comes from.

use std::fmt;

use crate::ir::{Literal, Named, Span, TensorType, Type};

mod attention;
mod compiler;
mod const_cast;
mod conv;
mod cost;
pub mod docs;
mod elementwise;
mod helpers;
mod index;
mod logic;
mod matmul;
mod norm;
mod quant;
mod reduce;
mod shape;
mod signature;
mod softmax;

#[cfg(test)]
mod testing;

pub use attention::AttentionParams;
pub use compiler::{
    COMPILER_NOTES, CompilerNote, CompilerStatus, compiler_note, compiler_rejected,
};
pub use const_cast::{CAST_DTYPES, CastParams};
pub use conv::{ConvParams, PadType};
pub use cost::flops;
pub use elementwise::{ActivationParams, EpsilonParams, GeluMode};
pub use helpers::{ConstValues, broadcast_shapes, normalize_axis};
pub use index::{
    BandPartParams, ExpandDimsParams, GatherAlongAxisParams, GatherParams, PadMode, PadParams,
    SqueezeParams, StackParams, TileParams, UpsampleParams,
};
pub use logic::{ClipParams, Comparison, LogicParams, LogicalOp};
pub use matmul::MatmulParams;
pub use norm::{
    BatchNormParams, BilinearGrid, InstanceNormParams, LayerNormParams, LinearParams, PoolParams,
    PreluParams, UpsampleBilinearParams,
};
pub use quant::QuantParams;
pub use reduce::ReduceParams;
pub use shape::{ConcatParams, ReshapeParams, SliceParams, SplitParams, TransposeParams};
pub use signature::{Arity, AttrSpec, DTypes, InputSpec, Ranks, Signature};
pub use softmax::SoftmaxParams;

/// Every op anemone knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// `const`: a compile-time value: the `val` attribute, inline or in a weight file (BLOBFILE).
    Const,
    /// `cast`: converts to another element type (float to float rounds to nearest even, float to
    /// int truncates).
    Cast,
    /// `conv`: 1-3 dimensional cross-correlation with groups, strides, dilations, padding and an
    /// optional bias.
    Conv,
    /// `matmul`: matrix product with numpy rules: batch dims broadcast, optional transposes of the
    /// last two dims.
    Matmul,
    /// `add`: x + y, numpy broadcasting.
    Add,
    /// `sub`: x - y, numpy broadcasting.
    Sub,
    /// `mul`: x * y, numpy broadcasting.
    Mul,
    /// `real_div`: x / y, numpy broadcasting.
    RealDiv,
    /// `pow`: x raised to y, numpy broadcasting.
    Pow,
    /// `maximum`: the larger of x and y, numpy broadcasting.
    Maximum,
    /// `minimum`: the smaller of x and y, numpy broadcasting.
    Minimum,
    /// `exp`: e^x.
    Exp,
    /// `log`: natural logarithm of x + epsilon.
    Log,
    /// `sqrt`: square root.
    Sqrt,
    /// `rsqrt`: 1 / sqrt(x + epsilon).
    Rsqrt,
    /// `inverse`: 1 / (x + epsilon).
    Inverse,
    /// `tanh`: hyperbolic tangent.
    Tanh,
    /// `relu`: max(x, 0).
    Relu,
    /// `sigmoid`: 1 / (1 + e^-x).
    Sigmoid,
    /// `silu`: x * sigmoid(x) (swish).
    Silu,
    /// `gelu`: Gaussian error linear unit: exact (erf), tanh or sigmoid approximation by `mode`.
    Gelu,
    /// `reshape`: the same elements in another shape; one -1 is inferred, 0 copies the input's dim.
    Reshape,
    /// `transpose`: permutes the dims by `perm`.
    Transpose,
    /// `slice_by_size`: a slice given by `begin` and `size` per dim (-1 takes the rest).
    SliceBySize,
    /// `slice_by_index`: a strided slice given by `begin`, `end` and `stride`, with masks.
    SliceByIndex,
    /// `concat`: joins `values` along `axis`; with `interleave`, input i fills every n-th slot from
    /// i.
    Concat,
    /// `split`: cuts x along `axis` into `num_splits` equal parts or parts of `split_sizes`.
    Split,
    /// `reduce_sum`: sum over `axes`.
    ReduceSum,
    /// `reduce_mean`: mean over `axes`.
    ReduceMean,
    /// `reduce_max`: maximum over `axes`.
    ReduceMax,
    /// `softmax`: e^x / sum(e^x) along `axis`, computed with the maximum subtracted.
    Softmax,
    /// `scaled_dot_product_attention`: softmax(Q K^T / sqrt(E) + mask) V.
    ScaledDotProductAttention,
    /// `quantize`: clip(round_half_even(x / scale) + zero_point) to int8 or uint8.
    Quantize,
    /// `dequantize`: scale * (q - zero_point) from int8 or uint8.
    Dequantize,
    /// `constexpr_affine_dequantize`: scale * (q - zero_point) of constant data, computed when the
    /// program loads.
    ConstexprAffineDequantize,
    /// `abs`: absolute value.
    Abs,
    /// `erf`: Gauss error function.
    Erf,
    /// `sin`: sine.
    Sin,
    /// `cos`: cosine.
    Cos,
    /// `floor`: rounds down.
    Floor,
    /// `ceil`: rounds up.
    Ceil,
    /// `round`: rounds to the nearest integer.
    Round,
    /// `sign`: -1, 0 or 1 by the sign of x.
    Sign,
    /// `square`: x * x.
    Square,
    /// `exp2`: 2^x.
    Exp2,
    /// `linear`: x weight^T + bias, weight [out_features, in_features].
    Linear,
    /// `layer_norm`: normalizes over `axes` to zero mean and unit variance, then gamma * . + beta.
    LayerNorm,
    /// `batch_norm`: gamma * (x - mean) / sqrt(variance + epsilon) + beta per channel, with
    /// constant statistics.
    BatchNorm,
    /// `instance_norm`: normalizes each (batch, channel) plane over its spatial dims, then gamma *
    /// . + beta per channel.
    InstanceNorm,
    /// `max_pool`: maximum over sliding windows of the spatial dims.
    MaxPool,
    /// `avg_pool`: average over sliding windows of the spatial dims.
    AvgPool,
    /// `gather`: picks slices of x along `axis` at `indices`.
    Gather,
    /// `gather_along_axis`: picks one element of x along `axis` per position of `indices`.
    GatherAlongAxis,
    /// `expand_dims`: inserts size-1 dims at `axes`.
    ExpandDims,
    /// `squeeze`: removes size-1 dims.
    Squeeze,
    /// `stack`: joins equally shaped `values` along a new dim at `axis`.
    Stack,
    /// `tile`: repeats x `reps[i]` times along dim i.
    Tile,
    /// `pad`: pads the dims with a constant, a reflection or a copy of the edge.
    Pad,
    /// `band_part`: keeps a band of `lower` sub- and `upper` super-diagonals of the last two dims,
    /// zeroes the rest.
    BandPart,
    /// `select`: a where cond is true, else b (numpy where, broadcasting).
    Select,
    /// `equal`: x == y, a bool result.
    Equal,
    /// `not_equal`: x != y, a bool result.
    NotEqual,
    /// `greater`: x > y, a bool result.
    Greater,
    /// `greater_equal`: x >= y, a bool result.
    GreaterEqual,
    /// `less`: x < y, a bool result.
    Less,
    /// `less_equal`: x <= y, a bool result.
    LessEqual,
    /// `logical_and`: x and y on bools.
    LogicalAnd,
    /// `logical_or`: x or y on bools.
    LogicalOr,
    /// `logical_xor`: x xor y on bools.
    LogicalXor,
    /// `logical_not`: not x on bools.
    LogicalNot,
    /// `clip`: min(max(x, alpha), beta).
    Clip,
    /// `leaky_relu`: x where x >= 0, else alpha x.
    LeakyRelu,
    /// `relu6`: min(max(x, 0), 6).
    Relu6,
    /// `sigmoid_hard`: min(max(alpha x + beta, 0), 1).
    SigmoidHard,
    /// `thresholded_relu`: x where x >= alpha, else 0.
    ThresholdedRelu,
    /// `elu`: x where x >= 0, else alpha (e^x - 1).
    Elu,
    /// `softplus`: log(1 + e^x).
    Softplus,
    /// `clamped_relu`: min(max(x, 0), beta) + min(min(x, 0) alpha, beta).
    ClampedRelu,
    /// `scaled_tanh`: alpha tanh(beta x).
    ScaledTanh,
    /// `linear_activation`: alpha x + beta.
    LinearActivation,
    /// `softsign`: x / (1 + |x|).
    Softsign,
    /// `prelu`: x where x > 0, else `alpha[c] x`, one slope per channel.
    Prelu,
    /// `upsample_nearest_neighbor`: enlarges the last two dims by repeating elements.
    UpsampleNearestNeighbor,
    /// `upsample_bilinear`: enlarges the last two dims by bilinear interpolation.
    UpsampleBilinear,
}

impl OpKind {
    /// Every op, in declaration order (the order `OpKind`'s `Ord` sorts by).
    pub const ALL: [OpKind; 84] = [
        OpKind::Const,
        OpKind::Cast,
        OpKind::Conv,
        OpKind::Matmul,
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::RealDiv,
        OpKind::Pow,
        OpKind::Maximum,
        OpKind::Minimum,
        OpKind::Exp,
        OpKind::Log,
        OpKind::Sqrt,
        OpKind::Rsqrt,
        OpKind::Inverse,
        OpKind::Tanh,
        OpKind::Relu,
        OpKind::Sigmoid,
        OpKind::Silu,
        OpKind::Gelu,
        OpKind::Reshape,
        OpKind::Transpose,
        OpKind::SliceBySize,
        OpKind::SliceByIndex,
        OpKind::Concat,
        OpKind::Split,
        OpKind::ReduceSum,
        OpKind::ReduceMean,
        OpKind::ReduceMax,
        OpKind::Softmax,
        OpKind::ScaledDotProductAttention,
        OpKind::Quantize,
        OpKind::Dequantize,
        OpKind::ConstexprAffineDequantize,
        OpKind::Abs,
        OpKind::Erf,
        OpKind::Sin,
        OpKind::Cos,
        OpKind::Floor,
        OpKind::Ceil,
        OpKind::Round,
        OpKind::Sign,
        OpKind::Square,
        OpKind::Exp2,
        OpKind::Linear,
        OpKind::LayerNorm,
        OpKind::BatchNorm,
        OpKind::InstanceNorm,
        OpKind::MaxPool,
        OpKind::AvgPool,
        OpKind::Gather,
        OpKind::GatherAlongAxis,
        OpKind::ExpandDims,
        OpKind::Squeeze,
        OpKind::Stack,
        OpKind::Tile,
        OpKind::Pad,
        OpKind::BandPart,
        OpKind::Select,
        OpKind::Equal,
        OpKind::NotEqual,
        OpKind::Greater,
        OpKind::GreaterEqual,
        OpKind::Less,
        OpKind::LessEqual,
        OpKind::LogicalAnd,
        OpKind::LogicalOr,
        OpKind::LogicalXor,
        OpKind::LogicalNot,
        OpKind::Clip,
        OpKind::LeakyRelu,
        OpKind::Relu6,
        OpKind::SigmoidHard,
        OpKind::ThresholdedRelu,
        OpKind::Elu,
        OpKind::Softplus,
        OpKind::ClampedRelu,
        OpKind::ScaledTanh,
        OpKind::LinearActivation,
        OpKind::Softsign,
        OpKind::Prelu,
        OpKind::UpsampleNearestNeighbor,
        OpKind::UpsampleBilinear,
    ];

    /// The op's name in MIL text.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Const => "const",
            OpKind::Cast => "cast",
            OpKind::Conv => "conv",
            OpKind::Matmul => "matmul",
            OpKind::Add => "add",
            OpKind::Sub => "sub",
            OpKind::Mul => "mul",
            OpKind::RealDiv => "real_div",
            OpKind::Pow => "pow",
            OpKind::Maximum => "maximum",
            OpKind::Minimum => "minimum",
            OpKind::Exp => "exp",
            OpKind::Log => "log",
            OpKind::Sqrt => "sqrt",
            OpKind::Rsqrt => "rsqrt",
            OpKind::Inverse => "inverse",
            OpKind::Tanh => "tanh",
            OpKind::Relu => "relu",
            OpKind::Sigmoid => "sigmoid",
            OpKind::Silu => "silu",
            OpKind::Gelu => "gelu",
            OpKind::Reshape => "reshape",
            OpKind::Transpose => "transpose",
            OpKind::SliceBySize => "slice_by_size",
            OpKind::SliceByIndex => "slice_by_index",
            OpKind::Concat => "concat",
            OpKind::Split => "split",
            OpKind::ReduceSum => "reduce_sum",
            OpKind::ReduceMean => "reduce_mean",
            OpKind::ReduceMax => "reduce_max",
            OpKind::Softmax => "softmax",
            OpKind::ScaledDotProductAttention => "scaled_dot_product_attention",
            OpKind::Quantize => "quantize",
            OpKind::Dequantize => "dequantize",
            OpKind::ConstexprAffineDequantize => "constexpr_affine_dequantize",
            OpKind::Abs => "abs",
            OpKind::Erf => "erf",
            OpKind::Sin => "sin",
            OpKind::Cos => "cos",
            OpKind::Floor => "floor",
            OpKind::Ceil => "ceil",
            OpKind::Round => "round",
            OpKind::Sign => "sign",
            OpKind::Square => "square",
            OpKind::Exp2 => "exp2",
            OpKind::Linear => "linear",
            OpKind::LayerNorm => "layer_norm",
            OpKind::BatchNorm => "batch_norm",
            OpKind::InstanceNorm => "instance_norm",
            OpKind::MaxPool => "max_pool",
            OpKind::AvgPool => "avg_pool",
            OpKind::Gather => "gather",
            OpKind::GatherAlongAxis => "gather_along_axis",
            OpKind::ExpandDims => "expand_dims",
            OpKind::Squeeze => "squeeze",
            OpKind::Stack => "stack",
            OpKind::Tile => "tile",
            OpKind::Pad => "pad",
            OpKind::BandPart => "band_part",
            OpKind::Select => "select",
            OpKind::Equal => "equal",
            OpKind::NotEqual => "not_equal",
            OpKind::Greater => "greater",
            OpKind::GreaterEqual => "greater_equal",
            OpKind::Less => "less",
            OpKind::LessEqual => "less_equal",
            OpKind::LogicalAnd => "logical_and",
            OpKind::LogicalOr => "logical_or",
            OpKind::LogicalXor => "logical_xor",
            OpKind::LogicalNot => "logical_not",
            OpKind::Clip => "clip",
            OpKind::LeakyRelu => "leaky_relu",
            OpKind::Relu6 => "relu6",
            OpKind::SigmoidHard => "sigmoid_hard",
            OpKind::ThresholdedRelu => "thresholded_relu",
            OpKind::Elu => "elu",
            OpKind::Softplus => "softplus",
            OpKind::ClampedRelu => "clamped_relu",
            OpKind::ScaledTanh => "scaled_tanh",
            OpKind::LinearActivation => "linear_activation",
            OpKind::Softsign => "softsign",
            OpKind::Prelu => "prelu",
            OpKind::UpsampleNearestNeighbor => "upsample_nearest_neighbor",
            OpKind::UpsampleBilinear => "upsample_bilinear",
        }
    }

    /// The op whose MIL name is `name` (`"conv"`, `"real_div"`, ...); `None` for an op anemone
    /// does not know. Inverse of [`OpKind::name`].
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The inputs and attributes this op takes.
    pub fn signature(self) -> &'static Signature {
        match self {
            OpKind::Const => &const_cast::CONST,
            OpKind::Cast => &const_cast::CAST,
            OpKind::Conv => &conv::CONV,
            OpKind::Matmul => &matmul::MATMUL,
            OpKind::Add
            | OpKind::Sub
            | OpKind::Mul
            | OpKind::RealDiv
            | OpKind::Pow
            | OpKind::Maximum
            | OpKind::Minimum => &elementwise::BINARY,
            OpKind::Exp
            | OpKind::Sqrt
            | OpKind::Tanh
            | OpKind::Relu
            | OpKind::Sigmoid
            | OpKind::Silu => &elementwise::UNARY,
            OpKind::Abs
            | OpKind::Erf
            | OpKind::Sin
            | OpKind::Cos
            | OpKind::Floor
            | OpKind::Ceil
            | OpKind::Round
            | OpKind::Sign
            | OpKind::Square
            | OpKind::Exp2 => &elementwise::UNARY,
            OpKind::Log | OpKind::Rsqrt | OpKind::Inverse => &elementwise::UNARY_EPSILON,
            OpKind::Gelu => &elementwise::GELU,
            OpKind::Relu6 | OpKind::Softplus | OpKind::Softsign => &elementwise::UNARY,
            OpKind::LeakyRelu | OpKind::Elu | OpKind::ThresholdedRelu => &elementwise::WITH_ALPHA,
            OpKind::SigmoidHard
            | OpKind::ClampedRelu
            | OpKind::ScaledTanh
            | OpKind::LinearActivation => &elementwise::WITH_ALPHA_BETA,
            OpKind::Reshape => &shape::RESHAPE,
            OpKind::Transpose => &shape::TRANSPOSE,
            OpKind::SliceBySize => &shape::SLICE_BY_SIZE,
            OpKind::SliceByIndex => &shape::SLICE_BY_INDEX,
            OpKind::Concat => &shape::CONCAT,
            OpKind::Split => &shape::SPLIT,
            OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax => &reduce::REDUCE,
            OpKind::Softmax => &softmax::SOFTMAX,
            OpKind::ScaledDotProductAttention => &attention::SDPA,
            OpKind::Quantize => &quant::QUANTIZE,
            OpKind::Dequantize => &quant::DEQUANTIZE,
            OpKind::ConstexprAffineDequantize => &quant::CONSTEXPR_AFFINE_DEQUANTIZE,
            // The families' ops: one module each ([`OpKind::family`]).
            _ => match self.family() {
                Some(OpFamily::Norm) => norm::signature(self),
                Some(OpFamily::Index) => index::signature(self),
                Some(OpFamily::Logic) => logic::signature(self),
                None => unreachable!("{self} has no signature"),
            },
        }
    }

    /// The family module that owns this op's registry entry (and, in the simulator, its
    /// plan and run), for the ops grouped that way; None for the others.
    pub fn family(self) -> Option<OpFamily> {
        Some(match self {
            OpKind::Linear
            | OpKind::LayerNorm
            | OpKind::BatchNorm
            | OpKind::InstanceNorm
            | OpKind::MaxPool
            | OpKind::AvgPool
            | OpKind::Prelu
            | OpKind::UpsampleBilinear => OpFamily::Norm,
            OpKind::Gather
            | OpKind::GatherAlongAxis
            | OpKind::ExpandDims
            | OpKind::Squeeze
            | OpKind::Stack
            | OpKind::Tile
            | OpKind::Pad
            | OpKind::BandPart
            | OpKind::UpsampleNearestNeighbor => OpFamily::Index,
            OpKind::Select
            | OpKind::Equal
            | OpKind::NotEqual
            | OpKind::Greater
            | OpKind::GreaterEqual
            | OpKind::Less
            | OpKind::LessEqual
            | OpKind::LogicalAnd
            | OpKind::LogicalOr
            | OpKind::LogicalXor
            | OpKind::LogicalNot
            | OpKind::Clip => OpFamily::Logic,
            _ => return None,
        })
    }

    /// True for ops whose result is known at compile time (`const`, and the constexpr ops
    /// the compiler materializes at load); their results are weights, not activations.
    pub fn is_compile_time(self) -> bool {
        matches!(self, OpKind::Const | OpKind::ConstexprAffineDequantize)
    }

    /// True for the elementwise ops with two operands and numpy broadcasting.
    pub fn is_elementwise_binary(self) -> bool {
        matches!(
            self,
            OpKind::Add
                | OpKind::Sub
                | OpKind::Mul
                | OpKind::RealDiv
                | OpKind::Pow
                | OpKind::Maximum
                | OpKind::Minimum
        )
    }

    /// True for the elementwise ops with one tensor operand (activations and math functions;
    /// some take scalar parameters such as an epsilon or an alpha, but never a second tensor).
    pub fn is_elementwise_unary(self) -> bool {
        matches!(
            self,
            OpKind::Exp
                | OpKind::Log
                | OpKind::Sqrt
                | OpKind::Rsqrt
                | OpKind::Inverse
                | OpKind::Tanh
                | OpKind::Relu
                | OpKind::Sigmoid
                | OpKind::Silu
                | OpKind::Gelu
                | OpKind::Abs
                | OpKind::Erf
                | OpKind::Sin
                | OpKind::Cos
                | OpKind::Floor
                | OpKind::Ceil
                | OpKind::Round
                | OpKind::Sign
                | OpKind::Square
                | OpKind::Exp2
                | OpKind::LeakyRelu
                | OpKind::Relu6
                | OpKind::SigmoidHard
                | OpKind::ThresholdedRelu
                | OpKind::Elu
                | OpKind::Softplus
                | OpKind::ClampedRelu
                | OpKind::ScaledTanh
                | OpKind::LinearActivation
                | OpKind::Softsign
        )
    }
}

/// Groups of ops whose registry entries share a module (and whose simulator side plans and
/// runs itself): see [`OpKind::family`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpFamily {
    /// linear, layer_norm, batch_norm, instance_norm, max_pool, avg_pool, prelu (per-channel
    /// like batch_norm), upsample_bilinear.
    Norm,
    /// gather, gather_along_axis, expand_dims, squeeze, stack, tile, pad, band_part,
    /// upsample_nearest_neighbor.
    Index,
    /// Comparisons, logical ops, select, clip.
    Logic,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an op sees of one input value during inference: its type, its value when it is a
/// compile-time constant, and where it was written.
#[derive(Clone, Debug)]
pub struct InputValue<'a> {
    /// The value's declared type (for a variable, the type its definition declares).
    pub ty: Type,
    /// The literal behind the input when it is known at compile time (an inline literal or
    /// the `val` of a `const` op).
    pub constant: Option<&'a Literal>,
    /// Where the argument was written: the variable name or the literal.
    pub span: Span,
}

/// An input as bound: one value, or a tuple for variadic inputs.
#[derive(Clone, Debug)]
pub enum InputArg<'a> {
    /// A single value, e.g. `x = x16`.
    One(InputValue<'a>),
    /// A parenthesised list of values for a variadic input (concat's `values`), with the span of
    /// the whole list.
    Tuple(Vec<InputValue<'a>>, Span),
}

/// Everything inference needs about one operation.
#[derive(Clone, Debug)]
pub struct OpContext<'a> {
    /// Which op this is.
    pub kind: OpKind,
    /// The inputs as written, by name, in written order (attributes are not included).
    pub inputs: Vec<(&'a str, InputArg<'a>)>,
    /// The op's attributes as written (`name`, `val`, and the iOS16 constexpr parameters).
    pub attributes: &'a [Named<Literal>],
    /// The whole statement, for errors that concern no particular input.
    pub span: Span,
}

impl<'a> OpContext<'a> {
    /// The argument bound to input `name`, as written.
    pub fn arg(&self, name: &str) -> Option<&InputArg<'a>> {
        self.inputs.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
    }

    /// The attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&'a Literal> {
        let attributes: &'a [Named<Literal>] = self.attributes;
        attributes.iter().find(|a| a.name.name == name).map(|a| &a.value)
    }

    /// The single value given for input `name`. For inputs the signature lets be written as
    /// attributes (iOS16 constexpr ops), an attribute of that name counts too. None when the
    /// input is absent or is a tuple.
    pub fn value(&self, name: &str) -> Option<InputValue<'a>> {
        match self.arg(name) {
            Some(InputArg::One(v)) => Some(v.clone()),
            Some(InputArg::Tuple(..)) => None,
            None => {
                let spec = self.kind.signature().input(name)?;
                if !spec.or_attribute {
                    return None;
                }
                let lit = self.attribute(name)?;
                Some(InputValue { ty: lit.ty.clone(), constant: Some(lit), span: lit.span })
            }
        }
    }

    /// Whether input `name` was given (as an input, or as an attribute where allowed).
    pub fn has(&self, name: &str) -> bool {
        self.arg(name).is_some() || self.value(name).is_some()
    }

    /// An error about this op: the message is prefixed with the op's name.
    pub fn error(&self, message: impl fmt::Display) -> OpError {
        OpError::new(format!("{}: {message}", self.kind.name()))
    }

    /// The error for a required input `name` that was not given.
    pub fn missing(&self, name: &str) -> OpError {
        self.error(format_args!("missing required input {name}")).with_subject(name)
    }

    /// The type of required single-valued input `name`, seen as a tensor (a scalar is a
    /// rank-0 tensor).
    pub fn tensor(&self, name: &str) -> Result<TensorType, OpError> {
        let Some(v) = self.value(name) else {
            return Err(match self.arg(name) {
                Some(InputArg::Tuple(..)) => self
                    .error(format_args!("{name} takes one value, not a tuple"))
                    .with_subject(name),
                _ => self.missing(name),
            });
        };
        v.ty.as_tensor().ok_or_else(|| {
            self.error(format_args!("{name} is a dictionary, not a tensor")).with_subject(name)
        })
    }

    /// The types of the non-empty tuple bound to input `name` (concat's and stack's
    /// `values`), each seen as a tensor.
    pub fn tuple_tensors(&self, name: &str) -> Result<Vec<TensorType>, OpError> {
        let values = match self.arg(name) {
            Some(InputArg::Tuple(v, _)) if !v.is_empty() => v,
            Some(InputArg::Tuple(..)) => {
                return Err(self
                    .error(format_args!("{name} is an empty tuple"))
                    .with_subject(name));
            }
            Some(InputArg::One(_)) => {
                return Err(self
                    .error(format_args!("{name} takes a tuple of values, e.g. {name} = (a, b)"))
                    .with_subject(name));
            }
            None => {
                return Err(self.missing(name));
            }
        };
        values
            .iter()
            .map(|v| {
                v.ty.as_tensor().ok_or_else(|| {
                    self.error(format_args!("{name} holds a dictionary")).with_subject(name)
                })
            })
            .collect()
    }

    /// Like [`OpContext::tensor`] for an optional input: None when absent.
    pub fn optional_tensor(&self, name: &str) -> Result<Option<TensorType>, OpError> {
        if self.has(name) { self.tensor(name).map(Some) } else { Ok(None) }
    }
}

/// Why an op is malformed; `subject` names the input or attribute at fault, so the
/// validator can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// What is wrong, prefixed with the op's name (see [`OpContext::error`]).
    pub message: String,
    /// The input or attribute at fault, if one is; diagnostics underline it.
    pub subject: Option<String>,
    /// A hint saying how to fix it, if there is one.
    pub help: Option<String>,
}

impl OpError {
    /// An error with `message` as is (no op-name prefix), no subject and no hint.
    pub fn new(message: impl Into<String>) -> OpError {
        OpError { message: message.into(), subject: None, help: None }
    }

    /// Names the input or attribute at fault.
    pub fn with_subject(mut self, subject: impl Into<String>) -> OpError {
        self.subject = Some(subject.into());
        self
    }

    /// Adds a hint saying how to fix it.
    pub fn with_help(mut self, help: impl Into<String>) -> OpError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OpError {}

/// Checks an operation against its op's signature, then infers the types of its results
/// (one per output; `split` has several).
pub fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    signature::check(ctx)?;
    match ctx.kind {
        OpKind::Const => const_cast::infer_const(ctx),
        OpKind::Cast => const_cast::infer_cast(ctx),
        OpKind::Conv => conv::infer(ctx),
        OpKind::Matmul => matmul::infer(ctx),
        OpKind::Add
        | OpKind::Sub
        | OpKind::Mul
        | OpKind::RealDiv
        | OpKind::Pow
        | OpKind::Maximum
        | OpKind::Minimum => elementwise::infer_binary(ctx),
        OpKind::Exp
        | OpKind::Log
        | OpKind::Sqrt
        | OpKind::Rsqrt
        | OpKind::Inverse
        | OpKind::Tanh
        | OpKind::Relu
        | OpKind::Sigmoid
        | OpKind::Silu
        | OpKind::Gelu => elementwise::infer_unary(ctx),
        OpKind::Abs
        | OpKind::Erf
        | OpKind::Sin
        | OpKind::Cos
        | OpKind::Floor
        | OpKind::Ceil
        | OpKind::Round
        | OpKind::Sign
        | OpKind::Square
        | OpKind::Exp2 => elementwise::infer_unary(ctx),
        OpKind::LeakyRelu
        | OpKind::Relu6
        | OpKind::SigmoidHard
        | OpKind::ThresholdedRelu
        | OpKind::Elu
        | OpKind::Softplus
        | OpKind::ClampedRelu
        | OpKind::ScaledTanh
        | OpKind::LinearActivation
        | OpKind::Softsign => elementwise::infer_unary(ctx),
        OpKind::Reshape => shape::infer_reshape(ctx),
        OpKind::Transpose => shape::infer_transpose(ctx),
        OpKind::SliceBySize | OpKind::SliceByIndex => shape::infer_slice(ctx),
        OpKind::Concat => shape::infer_concat(ctx),
        OpKind::Split => shape::infer_split(ctx),
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax => reduce::infer(ctx),
        OpKind::Softmax => softmax::infer(ctx),
        OpKind::ScaledDotProductAttention => attention::infer(ctx),
        OpKind::Quantize | OpKind::Dequantize | OpKind::ConstexprAffineDequantize => {
            quant::infer(ctx)
        }
        k => match k.family() {
            Some(OpFamily::Norm) => norm::infer(ctx),
            Some(OpFamily::Index) => index::infer(ctx),
            Some(OpFamily::Logic) => logic::infer(ctx),
            None => unreachable!("{k} has no inference"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_a_name_a_signature_and_at_most_one_family() {
        for kind in OpKind::ALL {
            assert_eq!(OpKind::from_name(kind.name()), Some(kind));
            // A kind without its own arm must belong to a family, or this panics.
            let sig = kind.signature();
            if kind != OpKind::Const {
                assert!(!sig.inputs.is_empty(), "{kind} takes no inputs");
            }
        }
    }
}
