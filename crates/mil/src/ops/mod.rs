//! The op registry: one entry per MIL op with its inputs, attributes, defaults, and type and
//! shape inference. The validator, the builder and the simulator all go through it, so an
//! op's rules live here and nowhere else.

use crate::ir::{Literal, Named, Span, Type};

/// Every op anemone knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Const,
    Cast,
    Conv,
    Matmul,
    Add,
    Sub,
    Mul,
    RealDiv,
    Pow,
    Maximum,
    Minimum,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Inverse,
    Tanh,
    Relu,
    Sigmoid,
    Silu,
    Gelu,
    Reshape,
    Transpose,
    SliceBySize,
    SliceByIndex,
    Concat,
    Split,
    ReduceSum,
    ReduceMean,
    ReduceMax,
    Softmax,
    ScaledDotProductAttention,
    Quantize,
    Dequantize,
    ConstexprAffineDequantize,
}

impl OpKind {
    pub const ALL: [OpKind; 35] = [
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
        }
    }

    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// What an op sees of one input value during inference: its type, its value when it is a
/// compile-time constant, and where it was written.
#[derive(Clone, Debug)]
pub struct InputValue<'a> {
    pub ty: Type,
    /// The literal behind the input when it is known at compile time (an inline literal or
    /// the `val` of a `const` op).
    pub constant: Option<&'a Literal>,
    pub span: Span,
}

/// An input as bound: one value, or a tuple for variadic inputs.
#[derive(Clone, Debug)]
pub enum InputArg<'a> {
    One(InputValue<'a>),
    Tuple(Vec<InputValue<'a>>, Span),
}

/// Everything inference needs about one operation.
#[derive(Clone, Debug)]
pub struct OpContext<'a> {
    pub kind: OpKind,
    pub inputs: Vec<(&'a str, InputArg<'a>)>,
    pub attributes: &'a [Named<Literal>],
    pub span: Span,
}

/// Why an op is malformed; `subject` names the input or attribute at fault, so the
/// validator can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub message: String,
    pub subject: Option<String>,
    pub help: Option<String>,
}
