//! The op reference in words: what each op computes, its category, the shape of its result,
//! what is known about it on the ANE and which lints look at it. Inputs, element types, ranks
//! and defaults come from each op's [`Signature`](super::Signature); this module adds only
//! what a signature cannot hold. `anemone ops` and `docs/ops.md` are rendered from it.
//!
//! The matches over [`OpKind`] are exhaustive on purpose: a new op does not build until it is
//! described here.

use crate::lint::{FP16_MIN, MAX_BLOBFILES};

use super::{CompilerStatus, EpsilonParams, InputSpec, OpKind, compiler_note};

/// The group an op belongs to, for listings.
pub fn category(kind: OpKind) -> &'static str {
    use OpKind::*;
    match kind {
        Const => "constant",
        Cast => "type conversion",
        Conv | Matmul | Linear => "linear algebra",
        Add | Sub | Mul | RealDiv | Pow | Maximum | Minimum => "elementwise binary",
        Exp | Log | Sqrt | Rsqrt | Inverse | Abs | Erf | Sin | Cos | Floor | Ceil | Round
        | Sign | Square | Exp2 => "elementwise math",
        Tanh | Relu | Sigmoid | Silu | Gelu | LeakyRelu | Relu6 | SigmoidHard | ThresholdedRelu
        | Elu | Softplus | ClampedRelu | ScaledTanh | LinearActivation | Softsign | Prelu
        | Clip => "activation",
        Reshape | Transpose | SliceBySize | SliceByIndex | Concat | Split | ExpandDims
        | Squeeze | Stack | Tile | Pad => "shape",
        Gather | GatherAlongAxis | BandPart | Select => "indexing",
        ReduceSum | ReduceMean | ReduceMax => "reduction",
        Softmax | ScaledDotProductAttention => "attention",
        LayerNorm | BatchNorm | InstanceNorm => "normalization",
        MaxPool | AvgPool => "pooling",
        UpsampleNearestNeighbor | UpsampleBilinear => "resizing",
        Quantize | Dequantize | ConstexprAffineDequantize => "quantization",
        Equal | NotEqual | Greater | GreaterEqual | Less | LessEqual => "comparison",
        LogicalAnd | LogicalOr | LogicalXor | LogicalNot => "logical",
    }
}

/// What the op computes, in one line.
pub fn summary(kind: OpKind) -> &'static str {
    use OpKind::*;
    match kind {
        Const => "a compile-time value: the `val` attribute, inline or in a weight file (BLOBFILE)",
        Cast => {
            "converts to another element type (float to float rounds to nearest even, float to int truncates)"
        }
        Conv => {
            "1-3 dimensional cross-correlation with groups, strides, dilations, padding and an optional bias"
        }
        Matmul => {
            "matrix product with numpy rules: batch dims broadcast, optional transposes of the last two dims"
        }
        Add => "x + y, numpy broadcasting",
        Sub => "x - y, numpy broadcasting",
        Mul => "x * y, numpy broadcasting",
        RealDiv => "x / y, numpy broadcasting",
        Pow => "x raised to y, numpy broadcasting",
        Maximum => "the larger of x and y, numpy broadcasting",
        Minimum => "the smaller of x and y, numpy broadcasting",
        Exp => "e^x",
        Log => "natural logarithm of x + epsilon",
        Sqrt => "square root",
        Rsqrt => "1 / sqrt(x + epsilon)",
        Inverse => "1 / (x + epsilon)",
        Tanh => "hyperbolic tangent",
        Relu => "max(x, 0)",
        Sigmoid => "1 / (1 + e^-x)",
        Silu => "x * sigmoid(x) (swish)",
        Gelu => "Gaussian error linear unit: exact (erf), tanh or sigmoid approximation by `mode`",
        Reshape => {
            "the same elements in another shape; one -1 is inferred, 0 copies the input's dim"
        }
        Transpose => "permutes the dims by `perm`",
        SliceBySize => "a slice given by `begin` and `size` per dim (-1 takes the rest)",
        SliceByIndex => "a strided slice given by `begin`, `end` and `stride`, with masks",
        Concat => {
            "joins `values` along `axis`; with `interleave`, input i fills every n-th slot from i"
        }
        Split => "cuts x along `axis` into `num_splits` equal parts or parts of `split_sizes`",
        ReduceSum => "sum over `axes`",
        ReduceMean => "mean over `axes`",
        ReduceMax => "maximum over `axes`",
        Softmax => "e^x / sum(e^x) along `axis`, computed with the maximum subtracted",
        ScaledDotProductAttention => "softmax(Q K^T / sqrt(E) + mask) V",
        Quantize => "clip(round_half_even(x / scale) + zero_point) to int8 or uint8",
        Dequantize => "scale * (q - zero_point) from int8 or uint8",
        ConstexprAffineDequantize => {
            "scale * (q - zero_point) of constant data, computed when the program loads"
        }
        Abs => "absolute value",
        Erf => "Gauss error function",
        Sin => "sine",
        Cos => "cosine",
        Floor => "rounds down",
        Ceil => "rounds up",
        Round => "rounds to the nearest integer",
        Sign => "-1, 0 or 1 by the sign of x",
        Square => "x * x",
        Exp2 => "2^x",
        Linear => "x weight^T + bias, weight [out_features, in_features]",
        LayerNorm => "normalizes over `axes` to zero mean and unit variance, then gamma * . + beta",
        BatchNorm => {
            "gamma * (x - mean) / sqrt(variance + epsilon) + beta per channel, with constant statistics"
        }
        InstanceNorm => {
            "normalizes each (batch, channel) plane over its spatial dims, then gamma * . + beta per channel"
        }
        MaxPool => "maximum over sliding windows of the spatial dims",
        AvgPool => "average over sliding windows of the spatial dims",
        Gather => "picks slices of x along `axis` at `indices`",
        GatherAlongAxis => "picks one element of x along `axis` per position of `indices`",
        ExpandDims => "inserts size-1 dims at `axes`",
        Squeeze => "removes size-1 dims",
        Stack => "joins equally shaped `values` along a new dim at `axis`",
        Tile => "repeats x `reps[i]` times along dim i",
        Pad => "pads the dims with a constant, a reflection or a copy of the edge",
        BandPart => {
            "keeps a band of `lower` sub- and `upper` super-diagonals of the last two dims, zeroes the rest"
        }
        Select => "a where cond is true, else b (numpy where, broadcasting)",
        Equal => "x == y, a bool result",
        NotEqual => "x != y, a bool result",
        Greater => "x > y, a bool result",
        GreaterEqual => "x >= y, a bool result",
        Less => "x < y, a bool result",
        LessEqual => "x <= y, a bool result",
        LogicalAnd => "x and y on bools",
        LogicalOr => "x or y on bools",
        LogicalXor => "x xor y on bools",
        LogicalNot => "not x on bools",
        Clip => "min(max(x, alpha), beta)",
        LeakyRelu => "x where x >= 0, else alpha x",
        Relu6 => "min(max(x, 0), 6)",
        SigmoidHard => "min(max(alpha x + beta, 0), 1)",
        ThresholdedRelu => "x where x >= alpha, else 0",
        Elu => "x where x >= 0, else alpha (e^x - 1)",
        Softplus => "log(1 + e^x)",
        ClampedRelu => "min(max(x, 0), beta) + min(min(x, 0) alpha, beta)",
        ScaledTanh => "alpha tanh(beta x)",
        LinearActivation => "alpha x + beta",
        Softsign => "x / (1 + |x|)",
        Prelu => "x where x > 0, else alpha[c] x, one slope per channel",
        UpsampleNearestNeighbor => "enlarges the last two dims by repeating elements",
        UpsampleBilinear => "enlarges the last two dims by bilinear interpolation",
    }
}

/// The shape (and element type) of the result, in words.
pub fn shape_rule(kind: OpKind) -> &'static str {
    use OpKind::*;
    match kind {
        Const => "the type written in `val`",
        Cast => "x's shape, in `dtype`",
        Conv => {
            "x [N, C_in, *spatial] and weight [C_out, C_in / groups, *kernel] give \
             [N, C_out, *out]; per spatial dim, with extent = (kernel - 1) * dilation + 1: \
             valid and custom give (size + pad_before + pad_after - extent) / stride + 1 \
             (rounded down), same and same_lower give ceil(size / stride); x's type"
        }
        Matmul => {
            "x [*, M, K] times y [*, K, N] (after the transposes) gives [*, M, N], the batch dims \
             broadcast; a rank-1 operand counts as a row (x) or a column (y) and its dim is \
             dropped from the result"
        }
        Add | Sub | Mul | RealDiv | Pow | Maximum | Minimum => {
            "the numpy broadcast of x's and y's shapes; x and y have one type, which the result has"
        }
        Exp | Log | Sqrt | Rsqrt | Inverse | Tanh | Relu | Sigmoid | Silu | Gelu | Abs | Erf
        | Sin | Cos | Floor | Ceil | Round | Sign | Square | Exp2 | Clip | LeakyRelu | Relu6
        | SigmoidHard | ThresholdedRelu | Elu | Softplus | ClampedRelu | ScaledTanh
        | LinearActivation | Softsign | Prelu | Softmax => "x's shape and type",
        Reshape => "`shape` (with -1 and 0 resolved); the element count must not change",
        Transpose => "x's dims in the order `perm` gives",
        SliceBySize => "`size` per dim (-1: from `begin` to the end of the dim)",
        SliceByIndex => {
            "per dim, ceil((end - begin) / stride) elements after the masks apply; dims set in \
             `squeeze_mask` are dropped"
        }
        Concat => "the inputs' common shape, with the sizes along `axis` added up",
        Split => "one result per part: x's shape with the part's size along `axis`",
        ReduceSum | ReduceMean | ReduceMax => {
            "x's shape without the reduced axes, or with them as 1 when `keep_dims`"
        }
        ScaledDotProductAttention => {
            "query [*B, L, E], key [*B, S, E], value [*B, S, EV] give [*B, L, EV]; the mask \
             broadcasts to [*B, L, S]"
        }
        Quantize => "input's shape, in `output_dtype` (int8 or uint8)",
        Dequantize => "input's shape, in scale's type",
        ConstexprAffineDequantize => "quantized_data's shape, in scale's type",
        Linear => "x [*, in_features] gives [*, out_features]; x's type",
        LayerNorm | BatchNorm | InstanceNorm => "x's shape and type",
        MaxPool | AvgPool => {
            "x [N, C, *spatial] gives [N, C, *out]; per spatial dim as conv with dilation 1 \
             (ceil_mode rounds up instead of down)"
        }
        Gather => "x.shape[:axis] + indices.shape[batch_dims:] + x.shape[axis + 1:]",
        GatherAlongAxis => "indices' shape (x's rank, x's dims except along `axis`)",
        ExpandDims => "x's rank plus one per entry of `axes`, a 1 at each",
        Squeeze => "x's shape without the squeezed size-1 dims",
        Stack => "the inputs' common shape with a new dim of size len(values) at `axis`",
        Tile => "dim i is x.shape[i] * reps[i]",
        Pad => "each dim grows by its before and after amounts (the last len(pad) / 2 dims)",
        BandPart => "x's shape and type",
        Select => "the numpy broadcast of cond's, a's and b's shapes; a's type",
        Equal | NotEqual | Greater | GreaterEqual | Less | LessEqual | LogicalAnd | LogicalOr
        | LogicalXor => "the numpy broadcast of x's and y's shapes, bool",
        LogicalNot => "x's shape, bool",
        UpsampleNearestNeighbor | UpsampleBilinear => {
            "x with its last two dims scaled: floor(height * scale_factor_height), \
             floor(width * scale_factor_width)"
        }
    }
}

/// What an absent optional input stands for, for `kind`: the signature's default, except
/// where ops that share a signature differ (the epsilon of log, rsqrt and inverse, which
/// [`EpsilonParams::default_for`] holds).
pub fn input_default(kind: OpKind, spec: &InputSpec) -> Option<String> {
    if spec.name == "epsilon"
        && let Some(eps) = EpsilonParams::default_for(kind)
    {
        return Some(format!("{eps:e}"));
    }
    spec.default.map(str::to_string)
}

/// What is known about the op on the ANE: the reported compiler behaviour
/// ([`compiler_note`]) and the measured numerics of REFERENCE.md §2-§3 that concern it.
pub fn ane_notes(kind: OpKind) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(n) = compiler_note(kind) {
        notes.push(format!("{} ({})", n.note, n.source));
    }
    use OpKind::*;
    let measured: &[&str] = match kind {
        Conv => &[
            "the ANE's peak is measured on 1x1 convs over [1, C, 1, S]: 18.6 TFLOPS fp16 on M4 \
             (REFERENCE.md §2, maderix README, measured)",
            "weights are baked in at compile: rewriting the weight file and reloading does not \
             change the output; pass weights as inputs (dynamic weights) or recompile \
             (REFERENCE.md §2, maderix m5result, libane, measured)",
            "inputs and weights are fp16; partial sums are formed in groups of 4 rounded to fp16, \
             and an output of 32768 or more saturates to inf (REFERENCE.md §3, ane-guide, \
             measured)",
        ],
        Matmul => &[
            "inputs and weights are fp16; partial sums are formed in groups of 4 rounded to fp16, \
             and an output of 32768 or more saturates to inf (REFERENCE.md §3, ane-guide, \
             measured)",
        ],
        Softmax => {
            &["subtracts the maximum first, so large inputs do not overflow; exp alone overflows \
             fp16 near 11.09 (REFERENCE.md §3, ane-guide, measured)"]
        }
        Sigmoid | Tanh | Gelu | Silu | Exp => {
            &["computed from a piecewise-linear table (sigmoid's error up to about 0.0034; \
             REFERENCE.md §3, ane-guide, measured)"]
        }
        ReduceSum => {
            &["sums saturate to inf past 65504, the largest fp16 (REFERENCE.md §3, ane-guide, \
             measured)"]
        }
        Cast => &[
            "fp32 to fp16 rounds to nearest, ties to even; the ANE computes in fp16 whatever the \
             declared type (REFERENCE.md §3)",
        ],
        _ => &[],
    };
    notes.extend(measured.iter().map(|s| s.to_string()));
    notes
}

/// A lint that can fire on an op, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpLint {
    /// The diagnostic code, as `anemone check` prints it.
    pub code: &'static str,
    /// When it fires, in words.
    pub when: String,
}

/// The lints (crate::lint) that look at this op. The lints on a function's inputs and outputs
/// (spatial size, dim and channel limits, equal surface sizes) concern every op and are not
/// listed. A test runs the linter over every op to keep this list true.
pub fn lints(kind: OpKind) -> Vec<OpLint> {
    let mut out = Vec::new();
    match compiler_note(kind).map(|n| n.status) {
        Some(CompilerStatus::Rejected) => out.push(OpLint {
            code: "ane::op-reported-rejected",
            when: "always: the op is reported rejected by the ANE compiler".to_string(),
        }),
        Some(CompilerStatus::IgnoresInput(input)) => out.push(OpLint {
            code: "ane::sdpa-attn-mask-ignored",
            when: format!("when `{input}` is given: the ANE ignores it"),
        }),
        _ => {}
    }
    if crate::lint::MASK_CHECKED_OPS.contains(&kind) {
        out.push(OpLint {
            code: "ane::mask-below-fp16-min",
            when: format!(
                "when a constant input holds a value below {FP16_MIN} (use -40000 for masked \
                 scores)"
            ),
        });
    }
    if crate::lint::computes_in_fp16(kind) {
        out.push(OpLint {
            code: "ane::fp32-arithmetic",
            when: "when its data inputs or its result are fp32: the ANE computes in fp16"
                .to_string(),
        });
    }
    if kind == OpKind::Const {
        out.push(OpLint {
            code: "ane::too-many-blobfiles",
            when: format!("when the program holds more than {MAX_BLOBFILES} BLOBFILE constants"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes of the lints that look at single ops (not at a function's I/O or the
    /// program's weight files).
    const OP_LINTS: [&str; 4] = [
        "ane::op-reported-rejected",
        "ane::sdpa-attn-mask-ignored",
        "ane::mask-below-fp16-min",
        "ane::fp32-arithmetic",
    ];

    /// Runs the real linter on a program with one `kind` op reading an fp32 input and a
    /// constant far below fp16's range under every input name a lint looks for, and returns
    /// the op-level lints it reports. The linter works on the syntax, so the op need not be
    /// valid.
    fn linted(kind: OpKind) -> Vec<&'static str> {
        let src = format!(
            "program(1.3)\n{{\n    func main<ios18>(tensor<fp32, [1, 4, 1, 16]> x) {{\n\
             tensor<fp32, [1]> m = const()[name = string(\"m\"), val = tensor<fp32, [1]>([-1e9])];\n\
             tensor<fp32, [1, 4, 1, 16]> y = {}(x = x, y = m, attn_mask = m);\n\
             }} -> (y);\n}}\n",
            kind.name()
        );
        let program = crate::text::parse(&src).unwrap_or_else(|d| panic!("{}", d.message));
        let codes: Vec<&str> = crate::lint::lint(&program).into_iter().map(|d| d.code).collect();
        OP_LINTS.into_iter().filter(|c| codes.contains(c)).collect()
    }

    #[test]
    fn listed_lints_are_the_ones_the_linter_reports() {
        for kind in OpKind::ALL {
            let listed: Vec<&str> =
                lints(kind).iter().map(|l| l.code).filter(|c| OP_LINTS.contains(c)).collect();
            assert_eq!(listed, linted(kind), "lints of {kind}");
        }
    }

    #[test]
    fn every_op_is_described() {
        for kind in OpKind::ALL {
            for text in [category(kind), summary(kind), shape_rule(kind)] {
                assert!(!text.is_empty() && !text.ends_with('.'), "{kind}: {text:?}");
            }
        }
    }

    #[test]
    fn defaults_come_from_the_registry() {
        let conv = OpKind::Conv.signature();
        let default = |kind: OpKind, name: &str| {
            input_default(kind, kind.signature().input(name).unwrap()).unwrap_or_default()
        };
        assert_eq!(default(OpKind::Conv, "groups"), "1");
        assert_eq!(default(OpKind::Conv, "pad_type"), "\"valid\"");
        assert!(conv.inputs.iter().filter(|s| !s.required).all(|s| s.default.is_some()));
        // log, rsqrt and inverse share a signature but not a default.
        assert_eq!(default(OpKind::Log, "epsilon"), "1e-45");
        assert_eq!(default(OpKind::Rsqrt, "epsilon"), "1e-12");
        assert_eq!(default(OpKind::Inverse, "epsilon"), "1e-4");
        assert_eq!(default(OpKind::LayerNorm, "epsilon"), "1e-5");
        assert_eq!(default(OpKind::Softmax, "axis"), "-1 (the last axis)");
    }

    #[test]
    fn conv_has_ane_notes_and_gelu_its_compiler_report() {
        assert!(ane_notes(OpKind::Conv).iter().any(|n| n.contains("baked in at compile")));
        assert!(ane_notes(OpKind::Gelu)[0].contains("Orion"));
        assert!(ane_notes(OpKind::Reshape).is_empty());
    }
}
