//! Whole-program validation: names (undefined, redefined, used before definition), op
//! signatures and shape inference through the op registry, declared result types against
//! inferred ones, and function outputs. Lints about the Neural Engine's limits live in
//! `lint.rs`; checks of BLOBFILE references against weight files live in `package.rs`.
//!
//! [`resolve_function`] is also how the runtime sees a program: it binds every operation's
//! inputs to their types and compile-time constants, ready for the registry.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::ir::{Argument, Function, Literal, Operation, Program, Span, Type, TypedName};
use crate::ops::{self, InputArg, InputValue, OpContext, OpError, OpKind};

/// Largest element count a single tensor may declare. Beyond it a program cannot be run
/// anywhere (2^40 fp16 elements is 2 TiB) and sizes start to overflow byte arithmetic.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// What is known about a value while walking a function.
#[derive(Clone, Debug)]
pub struct ValueInfo<'a> {
    /// The value's declared type (a function input's, or the output type an op declares).
    pub ty: &'a Type,
    /// The literal behind the value when it is a compile-time constant (the output of `const`).
    pub constant: Option<&'a Literal>,
    /// Where the value is defined.
    pub defined_at: Span,
}

/// An operation with its inputs bound and its result types inferred.
#[derive(Clone, Debug)]
pub struct ResolvedOp<'a> {
    /// The operation as written.
    pub op: &'a Operation,
    /// Its inputs bound to types and constants, as the op registry sees them (see [`ops::infer`]).
    pub context: OpContext<'a>,
    /// The types the registry infers (equal to the declared ones in a valid program).
    pub inferred: Vec<Type>,
}

/// The result of resolving one function: the operations that resolved, and every problem.
#[derive(Clone, Debug, Default)]
pub struct ResolvedFunction<'a> {
    /// The operations whose names resolved and whose inference succeeded, in program order; an
    /// operation with an error is left out, so this is complete only when `diagnostics` is empty.
    pub ops: Vec<ResolvedOp<'a>>,
    /// Every value the function defines (inputs and op results), by name; the first definition
    /// wins when a name is defined twice.
    pub values: HashMap<&'a str, ValueInfo<'a>>,
    /// Every error found in the function, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

/// Validates a whole program and returns its errors (no lints). Empty means valid.
///
/// Each op goes through the registry ([`ops::infer`]): its inputs must exist and be defined
/// before use, its signature must match, and the result types it declares must be the ones
/// inference gives.
///
/// ```
/// use anemone_mil::{text, validate::validate};
///
/// let good = r#"program(1.3)
/// {
///     func main<ios18>(tensor<fp16, [1, 8, 1, 32]> x) {
///         tensor<int32, [4]> s = const()[name = string("s"), val = tensor<int32, [4]>([1, 1, 8, 32])];
///         tensor<fp16, [1, 1, 8, 32]> y = reshape(x = x, shape = s)[name = string("r")];
///     } -> (y);
/// }
/// "#;
/// assert!(validate(&text::parse(good)?).is_empty());
///
/// // Declaring a result type the op does not produce is an error with a fix.
/// let bad = good.replace("fp16, [1, 1, 8, 32]> y", "fp16, [1, 8, 32]> y");
/// let errors = validate(&text::parse(&bad)?);
/// assert_eq!(errors.len(), 1);
/// assert_eq!(errors[0].code, "validate::result-type");
/// assert_eq!(
///     errors[0].help.as_deref(),
///     Some("declare it as `tensor<fp16, [1, 1, 8, 32]> y`")
/// );
/// # Ok::<(), anemone_mil::Diagnostic>(())
/// ```
pub fn validate(program: &Program) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    if program.functions.is_empty() {
        diags.push(
            Diagnostic::error("validate::no-function", "the program has no function")
                .with_help("add `func main<ios18>(...) { ... } -> (...);`"),
        );
    }
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for f in &program.functions {
        if let Some(&first) = seen.get(f.name.name.as_str()) {
            diags.push(redefinition("function", &f.name.name, f.name.span, first));
        } else {
            seen.insert(&f.name.name, f.name.span);
        }
        diags.extend(resolve_function(f).diagnostics);
    }
    diags
}

/// Binds and infers every operation of `function` in order.
pub fn resolve_function(function: &Function) -> ResolvedFunction<'_> {
    let mut out = ResolvedFunction::default();
    // Every name defined anywhere in the function, so that a use before the definition
    // says so instead of "undefined".
    let mut defined_later: HashMap<&str, Span> = HashMap::new();
    for op in &function.block.operations {
        for o in &op.outputs {
            defined_later.entry(&o.name.name).or_insert(o.name.span);
        }
    }

    for input in &function.inputs {
        check_type(&input.ty, input.ty_span, &mut out.diagnostics);
        define(&mut out, input, None);
    }

    for op in &function.block.operations {
        for o in &op.outputs {
            check_type(&o.ty, o.ty_span, &mut out.diagnostics);
        }
        let resolved = resolve_operation(op, &out.values, &defined_later, &mut out.diagnostics);
        let constant = match (resolved.as_ref().map(|r| r.context.kind), op.outputs.as_slice()) {
            (Some(OpKind::Const), [_]) => op.attribute("val"),
            _ => None,
        };
        for o in &op.outputs {
            define(&mut out, o, constant);
        }
        if let Some(r) = resolved {
            out.ops.push(r);
        }
    }

    for name in &function.block.outputs {
        if !out.values.contains_key(name.name.as_str()) {
            out.diagnostics.push(
                Diagnostic::error(
                    "validate::undefined-output",
                    format!(
                        "function `{}` returns `{}`, which is not defined",
                        function.name, name
                    ),
                )
                .at(name.span)
                .with_label("not defined in this function")
                .with_help("return the name of a function input or of an operation result"),
            );
        }
    }
    if function.block.outputs.is_empty() {
        out.diagnostics.push(
            Diagnostic::error(
                "validate::no-output",
                format!("function `{}` returns nothing", function.name),
            )
            .at(function.name.span),
        );
    }
    out
}

fn define<'a>(out: &mut ResolvedFunction<'a>, value: &'a TypedName, constant: Option<&'a Literal>) {
    let name = value.name.name.as_str();
    if let Some(prev) = out.values.get(name) {
        out.diagnostics.push(redefinition("value", name, value.name.span, prev.defined_at));
        return;
    }
    out.values.insert(name, ValueInfo { ty: &value.ty, constant, defined_at: value.name.span });
}

fn redefinition(what: &str, name: &str, at: Span, first: Span) -> Diagnostic {
    let mut d =
        Diagnostic::error("validate::redefined", format!("{what} `{name}` is defined twice"))
            .at(at)
            .with_label("defined again here");
    if !first.is_none() {
        d = d.with_help(format!(
            "the first definition is at byte {}; rename one of them",
            first.start
        ));
    }
    d
}

/// Checks that a declared type can exist: element counts that fit, no empty dicts.
fn check_type(ty: &Type, span: Span, diags: &mut Vec<Diagnostic>) {
    if let Type::Tensor(t) = ty {
        match t.checked_element_count() {
            Some(n) if n <= MAX_ELEMENTS => {}
            _ => diags.push(
                Diagnostic::error(
                    "validate::tensor-too-large",
                    format!("{t} has more than 2^40 elements; no device can hold it"),
                )
                .at(span)
                .with_label("this shape is too large"),
            ),
        }
    }
}

fn resolve_operation<'a>(
    op: &'a Operation,
    values: &HashMap<&'a str, ValueInfo<'a>>,
    defined_later: &HashMap<&str, Span>,
    diags: &mut Vec<Diagnostic>,
) -> Option<ResolvedOp<'a>> {
    // Literal types can be as large as declared ones: check them the same way.
    for lit in op_literals(op) {
        check_type(&lit.ty, lit.span, diags);
    }
    let Some(kind) = OpKind::from_name(&op.op.name) else {
        diags.push(unknown_op(op));
        return None;
    };

    let mut ok = true;
    let mut inputs = Vec::with_capacity(op.inputs.len());
    let mut seen_inputs: HashMap<&str, Span> = HashMap::new();
    for input in &op.inputs {
        if seen_inputs.insert(&input.name.name, input.name.span).is_some() {
            diags.push(
                Diagnostic::error(
                    "validate::duplicate-input",
                    format!("{}: input `{}` is given twice", kind.name(), input.name),
                )
                .at(input.name.span),
            );
            ok = false;
            continue;
        }
        let arg = match &input.value {
            Argument::Tuple(items, span) => {
                let mut vals = Vec::with_capacity(items.len());
                for item in items {
                    match bind(item, values, defined_later, diags) {
                        Some(v) => vals.push(v),
                        None => ok = false,
                    }
                }
                InputArg::Tuple(vals, *span)
            }
            single => match bind(single, values, defined_later, diags) {
                Some(v) => InputArg::One(v),
                None => {
                    ok = false;
                    continue;
                }
            },
        };
        inputs.push((input.name.name.as_str(), arg));
    }
    if !ok {
        return None;
    }

    let context = OpContext { kind, inputs, attributes: &op.attributes, span: op.span };
    let inferred = match ops::infer(&context) {
        Ok(types) => types,
        Err(e) => {
            diags.push(op_error(op, kind, &context, e));
            return None;
        }
    };
    check_results(op, kind, &inferred, diags);
    Some(ResolvedOp { op, context, inferred })
}

/// Every literal an operation holds: attribute values and inline inputs, in tuples too.
fn op_literals(op: &Operation) -> Vec<&Literal> {
    fn argument<'a>(arg: &'a Argument, out: &mut Vec<&'a Literal>) {
        match arg {
            Argument::Literal(l) => out.push(l),
            Argument::Tuple(items, _) => items.iter().for_each(|a| argument(a, out)),
            Argument::Var(_) => {}
        }
    }
    let mut out: Vec<&Literal> = op.attributes.iter().map(|a| &a.value).collect();
    op.inputs.iter().for_each(|i| argument(&i.value, &mut out));
    out
}

/// Binds one argument to what is known about it; reports undefined names.
fn bind<'a>(
    arg: &'a Argument,
    values: &HashMap<&'a str, ValueInfo<'a>>,
    defined_later: &HashMap<&str, Span>,
    diags: &mut Vec<Diagnostic>,
) -> Option<InputValue<'a>> {
    match arg {
        Argument::Var(ident) => match values.get(ident.name.as_str()) {
            Some(info) => {
                Some(InputValue { ty: info.ty.clone(), constant: info.constant, span: ident.span })
            }
            None => {
                let d = if defined_later.contains_key(ident.name.as_str()) {
                    Diagnostic::error(
                        "validate::use-before-definition",
                        format!("`{ident}` is used before it is defined"),
                    )
                    .at(ident.span)
                    .with_label("used here")
                    .with_help(
                        "operations run in order; move the definition above this use \
                         (a value that depends on itself is a cycle)",
                    )
                } else {
                    Diagnostic::error("validate::undefined", format!("`{ident}` is not defined"))
                        .at(ident.span)
                        .with_label("no input or operation result has this name")
                };
                diags.push(d);
                None
            }
        },
        Argument::Literal(lit) => {
            Some(InputValue { ty: lit.ty.clone(), constant: Some(lit), span: lit.span })
        }
        Argument::Tuple(_, span) => {
            diags.push(
                Diagnostic::error("validate::nested-tuple", "tuples cannot be nested")
                    .at(*span)
                    .with_label("a tuple inside a tuple"),
            );
            None
        }
    }
}

fn unknown_op(op: &Operation) -> Diagnostic {
    let name = op.op.name.as_str();
    let mut d = Diagnostic::error("validate::unknown-op", format!("unknown op `{name}`"))
        .at(op.op.span)
        .with_label("not an op anemone knows");
    d = match nearest_op(name) {
        Some(candidate) => d.with_help(format!("did you mean `{candidate}`?")),
        None => d.with_help(format!(
            "supported ops: {}",
            OpKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
        )),
    };
    d
}

/// The op whose name is nearest to `name` (at most 3 edits away), for "did you mean" hints.
pub fn nearest_op(name: &str) -> Option<OpKind> {
    // Ties go to the alphabetically first name, so the hint does not depend on enum order.
    OpKind::ALL
        .into_iter()
        .map(|k| (edit_distance(name, k.name()), k.name(), k))
        .min()
        .filter(|(dist, _, _)| *dist <= 3)
        .map(|(_, _, k)| k)
}

/// Turns a registry error into a diagnostic that points at the input or attribute at fault.
fn op_error(op: &Operation, kind: OpKind, ctx: &OpContext, e: OpError) -> Diagnostic {
    let span = e
        .subject
        .as_deref()
        .and_then(|s| {
            ctx.inputs
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(_, arg)| match arg {
                    InputArg::One(v) => v.span,
                    InputArg::Tuple(_, sp) => *sp,
                })
                .or_else(|| op.inputs.iter().find(|i| i.name.name == s).map(|i| i.name.span))
                .or_else(|| op.attributes.iter().find(|a| a.name.name == s).map(|a| a.value.span))
        })
        .filter(|s| !s.is_none())
        .unwrap_or(op.op.span);
    let label = match &e.subject {
        Some(s) => format!("`{s}` of this {}", kind.name()),
        None => format!("this {}", kind.name()),
    };
    let mut d = Diagnostic::error("validate::op", e.message).at(span).with_label(label);
    if let Some(h) = e.help {
        d = d.with_help(h);
    }
    d
}

/// Compares the declared results of `op` with what the registry infers.
fn check_results(op: &Operation, kind: OpKind, inferred: &[Type], diags: &mut Vec<Diagnostic>) {
    if op.outputs.len() != inferred.len() {
        diags.push(
            Diagnostic::error(
                "validate::result-count",
                format!(
                    "{} produces {} result(s) but {} are declared",
                    kind.name(),
                    inferred.len(),
                    op.outputs.len()
                ),
            )
            .at(op.span),
        );
        return;
    }
    for (declared, inferred) in op.outputs.iter().zip(inferred) {
        if !same_type(&declared.ty, inferred) {
            diags.push(
                Diagnostic::error(
                    "validate::result-type",
                    format!(
                        "`{}` is declared as {} but {} produces {}",
                        declared.name,
                        declared.ty,
                        kind.name(),
                        inferred
                    ),
                )
                .at(declared.ty_span.to(declared.name.span))
                .with_label(format!("declared {}", declared.ty))
                .with_help(format!("declare it as `{inferred} {}`", declared.name)),
            );
        }
    }
}

/// Types are the same when they agree, a scalar counting as a rank-0 tensor.
pub fn same_type(a: &Type, b: &Type) -> bool {
    match (a.as_tensor(), b.as_tensor()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    // Optimal string alignment: insertions, deletions, substitutions and swaps of two
    // adjacent letters (the commonest typo: `rleu` for `relu`) each count one.
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows: Vec<Vec<usize>> = vec![(0..=b.len()).collect()];
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (rows[i - 1][j - 1] + cost).min(rows[i - 1][j] + 1).min(cur[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(rows[i - 2][j - 2] + 1);
            }
        }
        rows.push(cur);
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::LineCol;

    /// A one-function program around `body`, with input `x: fp16 [1, 4, 1, 16]`.
    fn program(body: &str, outputs: &str) -> String {
        format!(
            "program(1.3)\n{{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 16]> x) {{\n{body}    }} -> ({outputs});\n}}\n"
        )
    }

    /// Validates and returns (code, message, line) of each error.
    fn errors(src: &str) -> Vec<(&'static str, String, usize)> {
        let p = crate::text::parse(src).unwrap_or_else(|d| panic!("parse: {}", d.message));
        validate(&p)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| {
                (d.code, d.message.clone(), d.span.map_or(0, |s| LineCol::of(src, s.start).line))
            })
            .collect()
    }

    fn one_error(src: &str) -> (&'static str, String, usize) {
        let e = errors(src);
        assert_eq!(e.len(), 1, "{e:#?}");
        e.into_iter().next().unwrap()
    }

    #[test]
    fn a_correct_program_has_no_errors() {
        let src = program(
            "        tensor<fp16, [1, 4, 1, 16]> y = relu(x = x)[name = string(\"r\")];\n",
            "y",
        );
        assert!(errors(&src).is_empty());
    }

    #[test]
    fn unknown_op_suggests_the_nearest() {
        let src = program("        tensor<fp16, [1, 4, 1, 16]> y = rleu(x = x);\n", "y");
        let (code, msg, line) = one_error(&src);
        assert_eq!((code, line), ("validate::unknown-op", 4));
        assert!(msg.contains("`rleu`"), "{msg}");
        let p = crate::text::parse(&src).unwrap();
        assert_eq!(validate(&p)[0].help.as_deref(), Some("did you mean `relu`?"));
    }

    #[test]
    fn missing_input_is_an_arity_error() {
        let src = program("        tensor<fp16, [1, 4, 1, 16]> y = add(x = x);\n", "y");
        let (code, msg, _) = one_error(&src);
        assert_eq!(code, "validate::op");
        assert!(msg.contains('y'), "{msg}");
    }

    #[test]
    fn declared_type_is_compared_with_the_inferred_one() {
        let src = program("        tensor<fp16, [1, 4, 1, 32]> y = relu(x = x);\n", "y");
        let (code, msg, line) = one_error(&src);
        assert_eq!((code, line), ("validate::result-type", 4));
        assert!(msg.contains("tensor<fp16, [1, 4, 1, 32]>"), "{msg}");
        assert!(msg.contains("tensor<fp16, [1, 4, 1, 16]>"), "{msg}");
    }

    #[test]
    fn shape_mismatch_points_at_the_op() {
        let src = program(
            "        tensor<fp16, [1, 4, 1, 8]> z = const()[name = string(\"z\"), val = tensor<fp16, [1, 4, 1, 8]>([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])];\n        tensor<fp16, [1, 4, 1, 16]> y = add(x = x, y = z);\n",
            "y",
        );
        let (code, msg, line) = one_error(&src);
        assert_eq!((code, line), ("validate::op", 5));
        assert!(msg.contains("16") && msg.contains('8'), "{msg}");
    }

    #[test]
    fn undefined_names_and_uses_before_definition() {
        let src = program("        tensor<fp16, [1, 4, 1, 16]> y = relu(x = nope);\n", "y");
        assert_eq!(one_error(&src).0, "validate::undefined");

        // a cycle: a uses b, b uses a
        let src = program(
            "        tensor<fp16, [1, 4, 1, 16]> a = relu(x = b);\n        tensor<fp16, [1, 4, 1, 16]> b = relu(x = a);\n",
            "b",
        );
        let (code, msg, line) = one_error(&src);
        assert_eq!((code, line), ("validate::use-before-definition", 4));
        assert!(msg.contains("`b`"), "{msg}");
    }

    #[test]
    fn redefinitions_and_missing_outputs() {
        let src = program(
            "        tensor<fp16, [1, 4, 1, 16]> y = relu(x = x);\n        tensor<fp16, [1, 4, 1, 16]> y = relu(x = x);\n",
            "y",
        );
        let (code, _, line) = one_error(&src);
        assert_eq!((code, line), ("validate::redefined", 5));

        let src = program("        tensor<fp16, [1, 4, 1, 16]> y = relu(x = x);\n", "w");
        let (code, msg, line) = one_error(&src);
        assert_eq!((code, line), ("validate::undefined-output", 5));
        assert!(msg.contains("`w`"), "{msg}");
    }

    #[test]
    fn a_shape_that_must_be_constant_but_is_not() {
        let src = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 16]> x, tensor<int32, [2]> s) {\n        tensor<fp16, [4, 16]> y = reshape(shape = s, x = x);\n    } -> (y);\n}\n";
        let (code, msg, line) = one_error(src);
        assert_eq!((code, line), ("validate::op", 4));
        assert!(msg.contains("constant"), "{msg}");
    }

    #[test]
    fn duplicate_inputs_and_huge_tensors() {
        let src = program("        tensor<fp16, [1, 4, 1, 16]> y = relu(x = x, x = x);\n", "y");
        assert_eq!(one_error(&src).0, "validate::duplicate-input");

        let src = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [65536, 65536, 65536]> x) {\n    } -> (x);\n}\n";
        assert_eq!(one_error(src).0, "validate::tensor-too-large");

        // A literal's type is checked too, here a BLOBFILE of 2^62 elements.
        let src = program(
            "        fp16 y = reduce_sum(x = tensor<fp16, [4611686018427387904]>(BLOBFILE(path = string(\"@model_path/w.bin\"), offset = uint64(64))));\n",
            "x",
        );
        assert!(
            errors(&src).iter().any(|e| e.0 == "validate::tensor-too-large"),
            "{:?}",
            errors(&src)
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("conv", "conv"), 0);
        assert_eq!(edit_distance("matmull", "matmul"), 1);
        assert_eq!(edit_distance("sofmax", "softmax"), 1);
        assert_eq!(edit_distance("rleu", "relu"), 1);
        assert_eq!(edit_distance("rleu", "elu"), 2);
        assert_eq!(edit_distance("", "abs"), 3);
    }
}
