//! Rewrites that make a valid MIL program give the right answer on the Neural Engine where
//! the hardware is known to deviate from MIL's semantics (REFERENCE.md §2):
//!
//! - `scaled_dot_product_attention` with an `attn_mask`: the ANE ignores the mask (maderix/ANE,
//!   measured), so the op is decomposed into `matmul` (Q K^T), `mul` by 1/sqrt(E), the mask
//!   (`add` of 0 / -40000, folded from a constant bool mask; `select` for a bool mask computed
//!   at run time; `add` for a float mask), `softmax` over the last axis and `matmul` with V.
//!   The last op keeps the original output name, so nothing downstream changes.
//! - `-inf` fills of masked attention scores (a `select` or `add` feeding `softmax`, as
//!   coremltools writes `masked_fill(mask, -inf)`): fp16 masked scores need -40000, not -inf
//!   (same source), so the inline -inf values become -40000. exp(-40000 - max) is 0 in fp16
//!   and in fp32 alike, so the result on a MIL-exact device is unchanged.
//!
//! Programs written by hand get lints for these (`lint.rs`); programs imported from Core ML
//! are rewritten, since their author never saw them as MIL. Every rewrite is reported.

use std::collections::HashSet;

use half::f16;

use crate::ir::{
    Argument, DType, Function, Literal, LiteralData, Named, Operation, Program, TensorData,
    TensorType, Type, TypedName,
};
use crate::ops::broadcast_shapes;

/// The masked-score value the ANE needs in fp16 (REFERENCE.md §2): exactly representable,
/// and far enough below any real score that its exp is 0.
pub const MASKED_SCORE: f32 = -40000.0;

/// One rewrite, for the log: which op and what was done to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lowering {
    /// The function the op is in.
    pub function: String,
    /// The op's `name` attribute (or its first output's name).
    pub op: String,
    /// What was done, in words.
    pub what: String,
}

impl std::fmt::Display for Lowering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` in {}: {}", self.op, self.function, self.what)
    }
}

/// Rewrites every function of `program` for the ANE (see the module documentation) and
/// returns what was rewritten. A program without such ops is left as it was.
pub fn for_ane(program: &mut Program) -> Vec<Lowering> {
    let mut out = Vec::new();
    for function in &mut program.functions {
        decompose_masked_attention(function, &mut out);
        finite_mask_fills(function, &mut out);
    }
    out
}

fn op_label(op: &Operation) -> String {
    op.name_attribute().unwrap_or(&op.outputs[0].name.name).to_string()
}

fn tensor_of(function: &Function, arg: &Argument) -> Option<TensorType> {
    match arg {
        Argument::Var(v) => function.value_type(&v.name)?.as_tensor(),
        Argument::Literal(l) => l.ty.as_tensor(),
        Argument::Tuple(..) => None,
    }
}

/// Names not yet used in the function, derived from `base`.
struct Fresh {
    used: HashSet<String>,
}

impl Fresh {
    fn new(function: &Function) -> Fresh {
        let used = function
            .inputs
            .iter()
            .chain(function.block.operations.iter().flat_map(|op| op.outputs.iter()))
            .map(|v| v.name.name.clone())
            .collect();
        Fresh { used }
    }

    fn name(&mut self, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut n = 1;
        while self.used.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        self.used.insert(candidate.clone());
        candidate
    }
}

fn operation(
    kind: &str,
    inputs: Vec<(&str, Argument)>,
    output: TypedName,
    name_attribute: &str,
) -> Operation {
    Operation {
        op: crate::ir::Ident::new(kind),
        inputs: inputs.into_iter().map(|(n, a)| Named::new(n, a)).collect(),
        attributes: vec![Named::new("name", Literal::string(name_attribute))],
        outputs: vec![output],
        span: Default::default(),
    }
}

/// A scalar literal of a float dtype.
fn float_scalar(dtype: DType, value: f32) -> Literal {
    match dtype {
        DType::Fp32 => Literal::fp32(value),
        _ => Literal::fp16(value),
    }
}

/// The inline bool values of `arg`: a literal, or a `const` op with an inline value.
fn inline_bools(function: &Function, arg: &Argument) -> Option<Vec<bool>> {
    let lit = match arg {
        Argument::Literal(l) => l,
        Argument::Var(v) => {
            let producer = function.producer(&v.name)?;
            if producer.op.name != "const" {
                return None;
            }
            producer.attribute("val")?
        }
        Argument::Tuple(..) => return None,
    };
    match &lit.data {
        LiteralData::Tensor(TensorData::Bool(values)) => Some(values.clone()),
        _ => None,
    }
}

fn decompose_masked_attention(function: &mut Function, out: &mut Vec<Lowering>) {
    let mut fresh = Fresh::new(function);
    let mut i = 0;
    while i < function.block.operations.len() {
        let op = &function.block.operations[i];
        if op.op.name != "scaled_dot_product_attention" || op.input("attn_mask").is_none() {
            i += 1;
            continue;
        }
        match attention_ops(function, &function.block.operations[i], &mut fresh) {
            Some((ops, what)) => {
                let label = op_label(&function.block.operations[i]);
                let n = ops.len();
                function.block.operations.splice(i..=i, ops);
                out.push(Lowering { function: function.name.name.clone(), op: label, what });
                i += n;
            }
            // Types the decomposition cannot work out (the validator reports those).
            None => i += 1,
        }
    }
}

/// The ops replacing one masked sdpa, and a description of the rewrite.
fn attention_ops(
    function: &Function,
    op: &Operation,
    fresh: &mut Fresh,
) -> Option<(Vec<Operation>, String)> {
    let q_arg = op.input("query")?;
    let k_arg = op.input("key")?;
    let v_arg = op.input("value")?;
    let mask_arg = op.input("attn_mask")?;
    let q = tensor_of(function, q_arg)?;
    let k = tensor_of(function, k_arg)?;
    let mask = tensor_of(function, mask_arg)?;
    let (qr, kr) = (q.shape.len(), k.shape.len());
    if qr < 2 || kr < 2 {
        return None;
    }
    let dtype = q.dtype;
    let batch = broadcast_shapes(&q.shape[..qr - 2], &k.shape[..kr - 2])?;
    let mut scores_shape = batch;
    scores_shape.push(q.shape[qr - 2]);
    scores_shape.push(k.shape[kr - 2]);
    let scores_ty = Type::Tensor(TensorType::new(dtype, scores_shape.clone()));
    let label = op_label(op);
    let result = op.outputs[0].clone();
    let base = result.name.name.clone();
    let mut ops = Vec::new();

    let scores = fresh.name(&format!("{base}_scores"));
    ops.push(operation(
        "matmul",
        vec![
            ("x", q_arg.clone()),
            ("y", k_arg.clone()),
            ("transpose_x", Argument::Literal(Literal::bool(false))),
            ("transpose_y", Argument::Literal(Literal::bool(true))),
        ],
        TypedName::new(scores_ty.clone(), scores.clone()),
        &format!("{label}_scores"),
    ));
    let scaled = fresh.name(&format!("{base}_scaled"));
    let scale = 1.0 / (q.shape[qr - 1] as f32).sqrt();
    ops.push(operation(
        "mul",
        vec![("x", Argument::var(scores)), ("y", Argument::Literal(float_scalar(dtype, scale)))],
        TypedName::new(scores_ty.clone(), scaled.clone()),
        &format!("{label}_scaled"),
    ));
    let masked = fresh.name(&format!("{base}_masked"));
    let masked_ty = Type::Tensor(TensorType::new(
        dtype,
        broadcast_shapes(&scores_shape, &mask.shape).unwrap_or(scores_shape),
    ));
    let how = if mask.dtype == DType::Bool {
        if let Some(keep) = inline_bools(function, mask_arg) {
            // A constant bool mask (True = attend, as in coremltools and torch) folds into
            // an additive one.
            let values: Vec<f32> =
                keep.iter().map(|&k| if k { 0.0 } else { MASKED_SCORE }).collect();
            let mask_ty = TensorType::new(dtype, mask.shape.clone());
            let data = match dtype {
                DType::Fp32 => TensorData::F32(values),
                _ => TensorData::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            };
            let additive = fresh.name(&format!("{base}_mask"));
            ops.push(Operation {
                op: crate::ir::Ident::new("const"),
                inputs: Vec::new(),
                attributes: vec![
                    Named::new("name", Literal::string(format!("{label}_mask"))),
                    Named::new("val", Literal::tensor(Type::from(mask_ty.clone()), data)),
                ],
                outputs: vec![TypedName::new(Type::from(mask_ty), additive.clone())],
                span: Default::default(),
            });
            ops.push(operation(
                "add",
                vec![("x", Argument::var(scaled)), ("y", Argument::var(additive))],
                TypedName::new(masked_ty, masked.clone()),
                &format!("{label}_masked"),
            ));
            "the constant bool mask folded into an add of 0 / -40000"
        } else {
            ops.push(operation(
                "select",
                vec![
                    ("cond", mask_arg.clone()),
                    ("a", Argument::var(scaled)),
                    ("b", Argument::Literal(float_scalar(dtype, MASKED_SCORE))),
                ],
                TypedName::new(masked_ty, masked.clone()),
                &format!("{label}_masked"),
            ));
            "the bool mask applied by a select with -40000"
        }
    } else {
        ops.push(operation(
            "add",
            vec![("x", Argument::var(scaled)), ("y", mask_arg.clone())],
            TypedName::new(masked_ty.clone(), masked.clone()),
            &format!("{label}_masked"),
        ));
        "the float mask added"
    };
    let probs = fresh.name(&format!("{base}_weights"));
    ops.push(operation(
        "softmax",
        vec![("x", Argument::var(masked)), ("axis", Argument::Literal(Literal::int32(-1)))],
        TypedName::new(scores_ty, probs.clone()),
        &format!("{label}_weights"),
    ));
    ops.push(operation(
        "matmul",
        vec![
            ("x", Argument::var(probs)),
            ("y", v_arg.clone()),
            ("transpose_x", Argument::Literal(Literal::bool(false))),
            ("transpose_y", Argument::Literal(Literal::bool(false))),
        ],
        result,
        &label,
    ));
    let what = format!(
        "scaled_dot_product_attention with attn_mask decomposed into matmul, mul, mask, \
         softmax, matmul ({how}), since the ANE ignores attn_mask"
    );
    Some((ops, what))
}

/// Replaces -inf by [`MASKED_SCORE`] in an inline float literal; true when anything changed.
fn finite_fill(lit: &mut Literal) -> bool {
    let LiteralData::Tensor(data) = &mut lit.data else { return false };
    let mut changed = false;
    match data {
        TensorData::F16(values) => {
            for v in values.iter_mut().filter(|v| **v == f16::NEG_INFINITY) {
                *v = f16::from_f32(MASKED_SCORE);
                changed = true;
            }
        }
        TensorData::F32(values) => {
            for v in values.iter_mut().filter(|v| **v == f32::NEG_INFINITY) {
                *v = MASKED_SCORE;
                changed = true;
            }
        }
        _ => {}
    }
    changed
}

fn finite_mask_fills(function: &mut Function, out: &mut Vec<Lowering>) {
    // Values softmax reads: the scores a mask fill can reach.
    let softmax_inputs: HashSet<String> = function
        .block
        .operations
        .iter()
        .filter(|op| op.op.name == "softmax")
        .filter_map(|op| match op.input("x") {
            Some(Argument::Var(v)) => Some(v.name.clone()),
            _ => None,
        })
        .collect();
    // The fills: inline operands of those selects and adds, and the consts they read.
    let mut const_names = Vec::new();
    let mut changed_ops = Vec::new();
    for op in &mut function.block.operations {
        let fills: &[&str] = match op.op.name.as_str() {
            "select" => &["a", "b"],
            "add" => &["x", "y"],
            _ => continue,
        };
        if !op.outputs.iter().any(|o| softmax_inputs.contains(&o.name.name)) {
            continue;
        }
        let label = op_label(op);
        let mut changed = false;
        for input in op.inputs.iter_mut().filter(|i| fills.contains(&i.name.name.as_str())) {
            match &mut input.value {
                Argument::Literal(lit) => changed |= finite_fill(lit),
                Argument::Var(v) => const_names.push((v.name.clone(), label.clone())),
                Argument::Tuple(..) => {}
            }
        }
        if changed {
            changed_ops.push(label);
        }
    }
    for op in &mut function.block.operations {
        if op.op.name != "const" {
            continue;
        }
        let Some(reader) =
            const_names.iter().find(|(n, _)| op.outputs.iter().any(|o| &o.name.name == n))
        else {
            continue;
        };
        let reader = reader.1.clone();
        if let Some(val) = op.attributes.iter_mut().find(|a| a.name.name == "val")
            && finite_fill(&mut val.value)
            && !changed_ops.contains(&reader)
        {
            changed_ops.push(reader);
        }
    }
    for label in changed_ops {
        out.push(Lowering {
            function: function.name.name.clone(),
            op: label,
            what: "-inf mask fill before softmax replaced by -40000 (fp16 masked scores on \
                   the ANE need a finite value)"
                .to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{parse, print};
    use crate::validate::validate;

    fn lowered(src: &str) -> (Program, Vec<Lowering>) {
        let mut p = parse(src).expect("parses");
        let notes = for_ane(&mut p);
        let errors: Vec<_> = validate(&p).into_iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{}", print(&p));
        (p, notes)
    }

    const SDPA: &str = r#"program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 2, 4, 8]> q, tensor<fp16, [1, 2, 4, 8]> k, tensor<fp16, [1, 2, 4, 8]> v) {
        tensor<bool, [4, 4]> m = const()[name = string("m"), val = tensor<bool, [4, 4]>([true, false, false, false, true, true, false, false, true, true, true, false, true, true, true, true])];
        tensor<fp16, [1, 2, 4, 8]> a = scaled_dot_product_attention(query = q, key = k, value = v, attn_mask = m)[name = string("attn")];
    } -> (a);
}
"#;

    #[test]
    fn masked_sdpa_becomes_explicit_attention_with_a_folded_mask() {
        let (p, notes) = lowered(SDPA);
        let ops: Vec<&str> =
            p.functions[0].block.operations.iter().map(|o| o.op.name.as_str()).collect();
        assert_eq!(ops, ["const", "matmul", "mul", "const", "add", "softmax", "matmul"]);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].op, "attn");
        // The result keeps its name; the folded mask holds 0 where attending, -40000 elsewhere.
        let last = p.functions[0].block.operations.last().unwrap();
        assert_eq!(last.outputs[0].name.name, "a");
        let mask = &p.functions[0].block.operations[3];
        let Some(LiteralData::Tensor(TensorData::F16(v))) = mask.attribute("val").map(|l| &l.data)
        else {
            panic!("folded mask is an inline fp16 tensor");
        };
        assert_eq!(v[0].to_f32(), 0.0);
        assert_eq!(v[1].to_f32(), MASKED_SCORE);
        // The rewrite survives a print/parse round trip.
        assert_eq!(parse(&print(&p)).unwrap(), p);
    }

    #[test]
    fn sdpa_without_mask_and_programs_without_fills_are_untouched() {
        let src = SDPA.replace(", attn_mask = m", "");
        let (p, notes) = lowered(&src);
        assert!(notes.is_empty());
        assert_eq!(p, parse(&src).unwrap());
    }

    #[test]
    fn runtime_bool_mask_uses_select() {
        let src = SDPA
            .replace(
                "tensor<fp16, [1, 2, 4, 8]> v)",
                "tensor<fp16, [1, 2, 4, 8]> v, tensor<bool, [4, 4]> mm)",
            )
            .replace("attn_mask = m", "attn_mask = mm");
        let (p, notes) = lowered(&src);
        assert_eq!(notes.len(), 1);
        assert!(p.functions[0].block.operations.iter().any(|o| o.op.name == "select"));
    }

    #[test]
    fn minus_infinity_fill_before_softmax_becomes_finite() {
        let src = r#"program(1.3)
{
    func main<ios18>(tensor<fp16, [4, 4]> s, tensor<bool, [4, 4]> c) {
        tensor<fp16, [4, 4]> f = select(cond = c, a = fp16(-inf), b = s)[name = string("fill")];
        tensor<fp16, [4, 4]> p = softmax(x = f, axis = int32(-1))[name = string("p")];
        tensor<fp16, [4, 4]> g = select(cond = c, a = fp16(-inf), b = s)[name = string("other")];
    } -> (p, g);
}
"#;
        let (p, notes) = lowered(src);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].op, "fill");
        let ops = &p.functions[0].block.operations;
        let a = |i: usize| match ops[i].input("a") {
            Some(Argument::Literal(l)) => l.as_f64(),
            _ => None,
        };
        assert_eq!(a(0), Some(MASKED_SCORE as f64));
        // A select that feeds no softmax is not a score mask: left alone.
        assert_eq!(a(2), Some(f64::NEG_INFINITY));
    }
}
