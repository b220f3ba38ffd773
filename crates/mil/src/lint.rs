//! Lints for the Apple Neural Engine's known limits. Each is a warning, not an error: the
//! program is valid MIL, but the ANE is reported or measured to fail on it. Every lint
//! names the REFERENCE.md fact (and its public source) it rests on.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::ir::{Argument, DType, Function, Literal, Operation, Program, Type, TypedName};
use crate::ops::{self, OpFamily, OpKind};

/// The ANE's native activation layout is `[1, C, 1, S]`: spatial sizes should be multiples
/// of 16 (REFERENCE.md §2: rustane, libane, ANE-LM, Orion #15/#16, reported).
pub const SPATIAL_MULTIPLE: usize = 16;
/// Largest size of any one dimension (REFERENCE.md §2, reported).
pub const MAX_DIM: usize = 65536;
/// Largest channel count (REFERENCE.md §2, reported).
pub const MAX_CHANNELS: usize = 16384;
/// Most BLOBFILE constants one program may hold (REFERENCE.md §2, reported).
pub const MAX_BLOBFILES: usize = 16;
/// The most negative finite fp16 value; masks below it become -inf on the ANE, and the
/// reference advises -40000 for masked scores (REFERENCE.md §2: maderix README).
pub const FP16_MIN: f64 = -65504.0;

/// Runs every lint on every function.
pub fn lint(program: &Program) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for f in &program.functions {
        let index = Index::new(f);
        lint_io_sizes(f, &index, &mut out);
        lint_shapes(f, &index, &mut out);
        lint_ops(f, &index, &mut out);
        lint_fp32_arithmetic(f, &index, &mut out);
    }
    lint_blobfile_count(program, &mut out);
    out
}

/// Every value of a function by name, built once so that each lint looks a name up in
/// constant time: scanning the operations for every argument made linting quadratic in the
/// length of the function (minutes for a chain of 40,000 ops).
struct Index<'a> {
    /// The declaration of each input and op result (the first one, if a name repeats).
    values: HashMap<&'a str, &'a TypedName>,
    /// The operation producing each op result.
    producers: HashMap<&'a str, &'a Operation>,
}

impl<'a> Index<'a> {
    fn new(f: &'a Function) -> Self {
        let mut values = HashMap::new();
        let mut producers = HashMap::new();
        for v in &f.inputs {
            values.entry(v.name.name.as_str()).or_insert(v);
        }
        for op in &f.block.operations {
            for o in &op.outputs {
                values.entry(o.name.name.as_str()).or_insert(o);
                producers.entry(o.name.name.as_str()).or_insert(op);
            }
        }
        Index { values, producers }
    }

    fn value(&self, name: &str) -> Option<&'a TypedName> {
        self.values.get(name).copied()
    }

    fn producer(&self, name: &str) -> Option<&'a Operation> {
        self.producers.get(name).copied()
    }
}

/// Names with the byte size of their tensor.
type SizedNames<'a> = Vec<(&'a str, u64)>;

/// Byte sizes of the function's inputs and outputs, as the surfaces would hold them.
fn io_bytes<'a>(f: &'a Function, index: &Index<'a>) -> (SizedNames<'a>, SizedNames<'a>) {
    let size = |ty: &Type| ty.as_tensor().and_then(|t| t.byte_size()).unwrap_or(0);
    let inputs = f.inputs.iter().map(|i| (i.name.name.as_str(), size(&i.ty))).collect();
    let outputs = f
        .block
        .outputs
        .iter()
        .filter_map(|o| index.value(&o.name).map(|v| (o.name.as_str(), size(&v.ty))))
        .collect();
    (inputs, outputs)
}

/// Evaluate fails with 0x1d when input (or output) surfaces differ in allocation size
/// (REFERENCE.md §2: Orion issues #2 #4 #12, libane, measured).
fn lint_io_sizes(f: &Function, index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    let (inputs, outputs) = io_bytes(f, index);
    for (what, list) in [("input", &inputs), ("output", &outputs)] {
        let Some(max) = list.iter().map(|(_, b)| *b).max() else { continue };
        if list.iter().all(|(_, b)| *b == max) {
            continue;
        }
        let padding: u64 = list.iter().map(|(_, b)| max - b).sum();
        let sizes = list.iter().map(|(n, b)| format!("`{n}` {b} B")).collect::<Vec<_>>().join(", ");
        out.push(
            Diagnostic::warning(
                "ane::unequal-io-sizes",
                format!(
                    "function `{}` has {what}s of unequal byte sizes ({sizes}); the ANE fails \
                     evaluate with error 0x1d unless every {what} surface has the same size",
                    f.name
                ),
            )
            .at(f.name.span)
            .with_help(format!(
                "the anemone runtime pads every {what} surface to {max} B, which costs \
                 {padding} B of padding; to avoid it, pack the {what}s into one tensor \
                 (REFERENCE.md §2, Orion #2 #4 #12)"
            )),
        );
    }
}

fn lint_shapes(f: &Function, index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    for io in &f.inputs {
        lint_spatial(&io.ty, &io.name.name, io.ty_span, out);
    }
    for name in &f.block.outputs {
        if let Some(def) = index.value(&name.name) {
            lint_spatial(&def.ty, &def.name.name, name.span, out);
        }
    }
    let values = f.inputs.iter().chain(f.block.operations.iter().flat_map(|op| op.outputs.iter()));
    for v in values {
        let Some(shape) = v.ty.shape() else { continue };
        if let Some(&d) = shape.iter().find(|&&d| d > MAX_DIM) {
            out.push(
                Diagnostic::warning(
                    "ane::dim-too-large",
                    format!("`{}` has a dimension of {d}, above the ANE's {MAX_DIM}", v.name),
                )
                .at(v.ty_span)
                .with_help("split the tensor; no dimension may exceed 65536 (REFERENCE.md §2)"),
            );
        }
        // Channels are dim 1 of the ANE's [N, C, H, W] layout; other ranks have no such axis.
        if shape.len() == 4 && shape[1] > MAX_CHANNELS {
            out.push(
                Diagnostic::warning(
                    "ane::too-many-channels",
                    format!(
                        "`{}` has {} channels, above the ANE's {MAX_CHANNELS}",
                        v.name, shape[1]
                    ),
                )
                .at(v.ty_span)
                .with_help(
                    "split the channels over several tensors or programs (REFERENCE.md §2: \
                     channels <= 16384, reported by rustane, libane, ANE-LM)",
                ),
            );
        }
    }
}

/// The spatial (last) axis of an I/O surface should be a multiple of 16.
fn lint_spatial(ty: &Type, name: &str, span: crate::ir::Span, out: &mut Vec<Diagnostic>) {
    let Some(&last) = ty.shape().and_then(|s| s.last()) else { return };
    if last % SPATIAL_MULTIPLE != 0 {
        out.push(
            Diagnostic::warning(
                "ane::spatial-multiple-of-16",
                format!("`{name}` has spatial size {last}, not a multiple of {SPATIAL_MULTIPLE}"),
            )
            .at(span)
            .with_help(
                "pad the last axis to a multiple of 16; other sizes are reported to corrupt \
                 results silently (REFERENCE.md §2: rustane, libane, ANE-LM, Orion #15/#16)",
            ),
        );
    }
}

fn lint_ops(f: &Function, index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    for op in &f.block.operations {
        let Some(kind) = OpKind::from_name(&op.op.name) else { continue };
        if let Some(note) = ops::compiler_rejected(kind) {
            out.push(
                Diagnostic::warning(
                    "ane::op-reported-rejected",
                    format!("`{}` is reported to be rejected by the ANE compiler", kind.name()),
                )
                .at(op.op.span)
                .with_label("reported rejected")
                .with_help(note.to_string()),
            );
        }
        let mask = op.inputs.iter().find(|i| i.name.name == "attn_mask");
        if let (OpKind::ScaledDotProductAttention, Some(mask)) = (kind, mask) {
            out.push(
                Diagnostic::warning(
                    "ane::sdpa-attn-mask-ignored",
                    "the ANE ignores `attn_mask` of scaled_dot_product_attention",
                )
                .at(mask.name.span)
                .with_label("ignored by the hardware")
                .with_help(
                    "decompose causal attention: matmul Q·Kᵀ, add the mask, softmax, \
                     matmul with V (REFERENCE.md §2: maderix README, measured)",
                ),
            );
        }
        if !MASK_CHECKED_OPS.contains(&kind) {
            continue;
        }
        for input in &op.inputs {
            let min = constant_of(index, &input.value).and_then(min_float);
            if let Some(min) = min.filter(|&m| m < FP16_MIN) {
                out.push(
                    Diagnostic::warning(
                        "ane::mask-below-fp16-min",
                        format!("mask value {min} is below -65504, the most negative fp16"),
                    )
                    .at(input.name.span)
                    .with_label("this mask")
                    .with_help(
                        "use -40000 for masked scores: lower values become -inf in fp16 and \
                         softmax gives NaN (REFERENCE.md §2: maderix README)",
                    ),
                );
            }
        }
    }
}

/// The inputs of an op that carry tensor data into its arithmetic (the others are parameters
/// such as an axis or an epsilon); empty for ops that only move or reinterpret data.
/// The ops whose constant inputs are checked for mask values below the fp16 minimum: where
/// masks are added to attention scores.
pub const MASK_CHECKED_OPS: [OpKind; 2] = [OpKind::Add, OpKind::ScaledDotProductAttention];

/// Whether the op computes new values from its data (so fp32 data means fp16 arithmetic on
/// the ANE and the fp32 lint applies), rather than moving, picking or comparing elements.
pub fn computes_in_fp16(kind: OpKind) -> bool {
    !arithmetic_inputs(kind).is_empty()
}

fn arithmetic_inputs(kind: OpKind) -> &'static [&'static str] {
    match kind {
        OpKind::Conv => &["x", "weight", "bias"],
        OpKind::Matmul => &["x", "y"],
        OpKind::ScaledDotProductAttention => &["query", "key", "value", "attn_mask"],
        OpKind::Quantize | OpKind::Dequantize => &["input"],
        k if k.is_elementwise_binary() => &["x", "y"],
        OpKind::Const
        | OpKind::Cast
        | OpKind::Reshape
        | OpKind::Transpose
        | OpKind::SliceBySize
        | OpKind::SliceByIndex
        | OpKind::Concat
        | OpKind::Split
        | OpKind::ConstexprAffineDequantize => &[],
        // Ops that move, pick or compare elements without computing new values.
        k if k.family() == Some(OpFamily::Index) => &[],
        k if k.family() == Some(OpFamily::Logic) && k != OpKind::Clip => &[],
        _ => &["x"],
    }
}

/// Whether an argument is (or holds) an fp32 tensor or scalar.
fn is_fp32(index: &Index<'_>, arg: &Argument) -> bool {
    match arg {
        Argument::Var(v) => index.value(&v.name).and_then(|t| t.ty.dtype()) == Some(DType::Fp32),
        Argument::Literal(l) => l.ty.dtype() == Some(DType::Fp32),
        Argument::Tuple(items, _) => items.iter().any(|a| is_fp32(index, a)),
    }
}

/// The ANE has no fp32 arithmetic: an op typed fp32 runs on fp16 values and its result is
/// rounded to fp16, overflowing to inf past 65504 (REFERENCE.md §3). One warning per function,
/// at the first such op, with the count: a program written in fp32 has hundreds of them, and
/// the advice is the same for each.
fn lint_fp32_arithmetic(f: &Function, index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    let mut first: Option<(&Operation, OpKind)> = None;
    let mut count = 0usize;
    for op in &f.block.operations {
        let Some(kind) = OpKind::from_name(&op.op.name) else { continue };
        let data = arithmetic_inputs(kind);
        if data.is_empty() {
            continue;
        }
        let fp32_in = op
            .inputs
            .iter()
            .any(|i| data.contains(&i.name.name.as_str()) && is_fp32(index, &i.value));
        let fp32_out = op.outputs.iter().any(|o| o.ty.dtype() == Some(DType::Fp32));
        if fp32_in || fp32_out {
            count += 1;
            first.get_or_insert((op, kind));
        }
    }
    let Some((op, kind)) = first else { return };
    let name = op.name_attribute().unwrap_or(&op.outputs[0].name.name);
    let more = match count {
        1 => String::new(),
        2 => " (and 1 more op)".to_string(),
        n => format!(" (and {} more ops)", n - 1),
    };
    out.push(
        Diagnostic::warning(
            "ane::fp32-arithmetic",
            format!(
                "`{}` `{name}` computes on fp32 tensors{more} in function `{}`; the ANE has no \
                 fp32 arithmetic and computes them in fp16",
                kind.name(),
                f.name
            ),
        )
        .at(op.op.span)
        .with_label("computed in fp16 on the ANE")
        .with_help(
            "inputs are rounded to fp16 and every result is rounded to fp16, overflowing to inf \
             past 65504; only function inputs, outputs and `cast` keep fp32. Cast to fp16 where \
             the data enters to make the precision explicit (REFERENCE.md §3). The anemone \
             simulator computes these ops in fp16 too, unless SimOptions::fp32 asks for exact \
             fp32",
        ),
    );
}

/// The constant literal an argument stands for: inline, or the `val` of a `const` op.
fn constant_of<'a>(index: &Index<'a>, arg: &'a Argument) -> Option<&'a Literal> {
    match arg {
        Argument::Literal(l) => Some(l),
        Argument::Var(v) => {
            let op = index.producer(&v.name)?;
            (op.op.name == "const").then(|| op.attribute("val")).flatten()
        }
        Argument::Tuple(..) => None,
    }
}

fn min_float(lit: &Literal) -> Option<f64> {
    let data = lit.tensor_data()?;
    if !lit.ty.dtype()?.is_float() {
        return None;
    }
    data.to_f64_vec()?.into_iter().filter(|v| !v.is_nan()).reduce(f64::min)
}

/// At most 16 BLOBFILE constants per program (REFERENCE.md §2, reported by rustane, libane).
fn lint_blobfile_count(program: &Program, out: &mut Vec<Diagnostic>) {
    let refs = program.blob_refs();
    if refs.len() > MAX_BLOBFILES {
        out.push(
            Diagnostic::warning(
                "ane::too-many-blobfiles",
                format!(
                    "the program has {} BLOBFILE constants; the ANE is reported to take at most \
                     {MAX_BLOBFILES}",
                    refs.len()
                ),
            )
            .at(refs[MAX_BLOBFILES].2)
            .with_help(
                "merge weights into fewer, larger constants, or pass them as inputs \
                 (dynamic weights) (REFERENCE.md §2)",
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(body: &str, inputs: &str, outputs: &str) -> Vec<&'static str> {
        let src = format!(
            "program(1.3)\n{{\n    func main<ios18>({inputs}) {{\n{body}    }} -> ({outputs});\n}}\n"
        );
        let p = crate::text::parse(&src).unwrap_or_else(|d| panic!("{}", d.message));
        assert!(crate::validate::validate(&p).is_empty(), "{:#?}", crate::validate::validate(&p));
        lint(&p).into_iter().map(|d| d.code).collect()
    }

    #[test]
    fn spatial_sizes_not_a_multiple_of_16() {
        let c = codes("", "tensor<fp16, [1, 8, 1, 20]> x", "x");
        assert_eq!(c, ["ane::spatial-multiple-of-16", "ane::spatial-multiple-of-16"]);
        assert!(codes("", "tensor<fp16, [1, 8, 1, 32]> x", "x").is_empty());
    }

    #[test]
    fn huge_dims_and_channels() {
        let c = codes("", "tensor<fp16, [1, 16, 1, 65552]> x", "x");
        assert!(c.contains(&"ane::dim-too-large"), "{c:?}");
        let c = codes("", "tensor<fp16, [1, 16400, 1, 16]> x", "x");
        assert!(c.contains(&"ane::too-many-channels"), "{c:?}");
    }

    #[test]
    fn unequal_io_sizes_say_what_padding_costs() {
        let src = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 16]> a, tensor<fp16, [1, 8, 1, 16]> b) {\n    } -> (a);\n}\n";
        let d = lint(&crate::text::parse(src).unwrap());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, "ane::unequal-io-sizes");
        assert!(d[0].message.contains("`a` 128 B, `b` 256 B"), "{}", d[0].message);
        assert!(d[0].help.as_ref().unwrap().contains("128 B of padding"), "{:?}", d[0].help);
    }

    #[test]
    fn reported_rejected_ops_and_low_masks() {
        let mask = format!("[-1e9, {}]", ["0"; 63].join(", "));
        let body = format!(
            "        tensor<fp16, [1, 4, 1, 16]> g = gelu(x = x);\n\
             tensor<fp32, [1, 4, 1, 16]> xf = cast(x = g, dtype = string(\"fp32\"));\n\
             tensor<fp32, [1, 4, 1, 16]> m = const()[name = string(\"m\"), \
             val = tensor<fp32, [1, 4, 1, 16]>({mask})];\n\
             tensor<fp32, [1, 4, 1, 16]> y = add(x = xf, y = m);\n"
        );
        let c = codes(&body, "tensor<fp16, [1, 4, 1, 16]> x", "y");
        assert!(c.contains(&"ane::op-reported-rejected"), "{c:?}");
        assert!(c.contains(&"ane::mask-below-fp16-min"), "{c:?}");
    }

    fn lint_src(body: &str, inputs: &str, outputs: &str) -> Vec<Diagnostic> {
        let src = format!(
            "program(1.3)\n{{\n    func main<ios18>({inputs}) {{\n{body}    }} -> ({outputs});\n}}\n"
        );
        let p = crate::text::parse(&src).unwrap_or_else(|d| panic!("{}", d.message));
        assert!(crate::validate::validate(&p).is_empty(), "{:#?}", crate::validate::validate(&p));
        lint(&p)
    }

    #[test]
    fn fp32_arithmetic_is_one_warning_naming_the_first_op_and_the_count() {
        let body = "        tensor<fp32, [1, 4, 1, 16]> t = transpose(x = x, perm = tensor<int32, [4]>([0, 1, 2, 3]));\n\
                    tensor<fp32, [1, 4, 1, 16]> sq = mul(x = t, y = t)[name = string(\"square\")];\n\
                    tensor<fp32, [1, 4, 1, 16]> e = exp(x = sq);\n\
                    tensor<fp32, [1, 4, 1, 16]> s = softmax(x = e, axis = int32(-1));\n";
        let d = lint_src(body, "tensor<fp32, [1, 4, 1, 16]> x", "s");
        let fp32: Vec<_> = d.iter().filter(|d| d.code == "ane::fp32-arithmetic").collect();
        assert_eq!(fp32.len(), 1, "{d:#?}");
        let m = &fp32[0].message;
        assert!(m.contains("`mul` `square`") && m.contains("and 2 more ops"), "{m}");
        assert!(m.contains("computes them in fp16"), "{m}");
        assert!(fp32[0].help.as_ref().unwrap().contains("REFERENCE.md §3"));
        assert!(fp32[0].span.is_some());
    }

    #[test]
    fn fp32_data_movement_and_casts_are_not_arithmetic() {
        let body = "        tensor<fp32, [1, 4, 1, 16]> t = transpose(x = x, perm = tensor<int32, [4]>([0, 1, 2, 3]));\n\
                    tensor<fp16, [1, 4, 1, 16]> h = cast(x = t, dtype = string(\"fp16\"));\n\
                    tensor<fp16, [1, 4, 1, 16]> y = relu(x = h);\n\
                    tensor<fp32, [1, 4, 1, 16]> z = cast(x = y, dtype = string(\"fp32\"));\n";
        let c = codes(body, "tensor<fp32, [1, 4, 1, 16]> x", "z");
        assert!(c.is_empty(), "{c:?}");
        // An fp16 op with an fp32 parameter (epsilon) computes in fp16 as written.
        let body = "        tensor<fp16, [1, 4, 1, 16]> y = log(x = x, epsilon = fp32(0.001));\n";
        let c = codes(body, "tensor<fp16, [1, 4, 1, 16]> x", "y");
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn a_single_fp32_op_is_named_without_a_count() {
        let body = "        tensor<fp32, [1, 4, 1, 16]> y = relu(x = x);\n";
        let d = lint_src(body, "tensor<fp32, [1, 4, 1, 16]> x", "y");
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(d[0].code, "ane::fp32-arithmetic");
        assert!(
            d[0].message.starts_with("`relu` `y` computes on fp32 tensors in"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn linting_a_long_chain_finds_producers_by_name() {
        // A 2000-op chain whose last add reads a const mask below fp16's range: the lookup of
        // the mask's producer must work at any depth.
        let mut body = String::from(
            "        tensor<fp16, [1, 1, 1, 16]> m = const()[name = string(\"m\"), \
             val = tensor<fp16, [1, 1, 1, 16]>([-inf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])];\n",
        );
        let mut prev = "x".to_string();
        for i in 0..2000 {
            body +=
                &format!("        tensor<fp16, [1, 1, 1, 16]> a{i} = add(x = {prev}, y = x);\n");
            prev = format!("a{i}");
        }
        body += &format!("        tensor<fp16, [1, 1, 1, 16]> y = add(x = {prev}, y = m);\n");
        let c = codes(&body, "tensor<fp16, [1, 1, 1, 16]> x", "y");
        assert_eq!(c, ["ane::mask-below-fp16-min"]);
    }

    #[test]
    fn more_than_16_blobfiles() {
        let mut body = String::new();
        for i in 0..17 {
            body += &format!(
                "        tensor<fp16, [1, 1, 1, 16]> w{i} = const()[name = string(\"w{i}\"), val = tensor<fp16, [1, 1, 1, 16]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64({})))];\n",
                64 + 128 * i
            );
        }
        let c = codes(&body, "tensor<fp16, [1, 1, 1, 16]> x", "w0");
        assert_eq!(c, ["ane::too-many-blobfiles"]);
    }
}
