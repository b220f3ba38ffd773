//! Renders `op_methods.rs` from the op registry: a typed `FunctionBuilder` method for every
//! op without a hand-written one, and an options struct for each of those with optional
//! inputs. The inputs, their types, defaults and descriptions all come from the registry
//! (`OpKind::signature`, `ops::docs`), which stays the one place they are written; the tests
//! here keep the committed file equal to what this renders (`ANEMONE_BLESS=1` rewrites it).
//!
//! Should the committed file stop compiling after a registry change (an op removed or
//! renamed), cut it down to its header and run the command again.
//!
//! The output is laid out as rustfmt (with the workspace's `rustfmt.toml`) lays it out, so
//! that formatting the file changes nothing; a test checks that when rustfmt is installed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::ir::DType;
use crate::ops::{Arity, DTypes, InputSpec, OpKind, Ranks, docs};

/// The command that rewrites the generated file.
const REGENERATE: &str = "ANEMONE_BLESS=1 cargo test -p anemone-mil --lib builder";

/// The ops whose typed method is written by hand in `builder/mod.rs`, with its name: their
/// signatures predate the generator and callers across the workspace use them. The
/// generator leaves these ops out.
const HAND_WRITTEN: [(OpKind, &str); 11] = [
    (OpKind::Const, "constant"),
    (OpKind::Cast, "cast"),
    (OpKind::Conv, "conv"),
    (OpKind::Matmul, "matmul"),
    (OpKind::Add, "add"),
    (OpKind::Mul, "mul"),
    (OpKind::Reshape, "reshape"),
    (OpKind::Transpose, "transpose"),
    (OpKind::SliceBySize, "slice_by_size"),
    (OpKind::Concat, "concat"),
    (OpKind::Softmax, "softmax"),
];

/// The ops with more than one result (how many follows from their inputs); their methods
/// return every result, the others' the one they have.
const MULTI_RESULT: [OpKind; 1] = [OpKind::Split];

/// Rust's keywords: an op or input with one of these names cannot keep it as an identifier.
const KEYWORDS: [&str; 51] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield",
];

/// The widest line rustfmt leaves alone (the workspace's `max_width`).
const MAX_WIDTH: usize = 100;

/// The generated method's name for `kind`: the op's MIL name, with `_op` appended when that
/// is a Rust keyword (`const` would be `const_op`, but has the hand-written `constant`).
fn method_name(kind: OpKind) -> String {
    let name = kind.name();
    if KEYWORDS.contains(&name) { format!("{name}_op") } else { name.to_string() }
}

/// An input's name as a parameter or field: a keyword becomes a raw identifier.
fn ident(name: &str) -> String {
    if KEYWORDS.contains(&name) { format!("r#{name}") } else { name.to_string() }
}

/// The ops the generator writes a method for.
fn generated_ops() -> impl Iterator<Item = OpKind> {
    OpKind::ALL.into_iter().filter(|k| !HAND_WRITTEN.iter().any(|(h, _)| h == k))
}

/// How a generated method takes one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// A value of the function (which may have to be a constant): `&Var`.
    Var,
    /// A tuple of values: `&[Var]`.
    Vars,
    /// A constant integer list (axes, perm, shape, strides, pad): `&[i32]`.
    Ints,
    /// A constant bool list (masks): `&[bool]`.
    Bools,
    /// A constant integer scalar: `i32`.
    Int,
    /// A constant bool scalar: `bool`.
    Bool,
    /// A constant string (pad_type, mode): `&str`.
    Str,
    /// A constant string naming an element type: `DType`.
    DType,
    /// A constant numeric scalar (alpha, epsilon): `f32`, written in the element type of
    /// the op's first value input where the input takes it.
    Float,
}

impl Form {
    fn of(spec: &InputSpec) -> Form {
        let takes_float = spec.dtypes.allows(DType::Fp32) || spec.dtypes.allows(DType::Fp16);
        if spec.arity == Arity::Tuple {
            return Form::Vars;
        }
        if !spec.constant {
            return Form::Var;
        }
        match (spec.ranks, spec.dtypes) {
            (Ranks::SCALAR, DTypes::Int) => Form::Int,
            (Ranks::SCALAR, DTypes::Bool) => Form::Bool,
            (Ranks::SCALAR, DTypes::String) if spec.name.ends_with("dtype") => Form::DType,
            (Ranks::SCALAR, DTypes::String) => Form::Str,
            (Ranks::SCALAR, _) if takes_float => Form::Float,
            (Ranks::VECTOR, DTypes::Int) => Form::Ints,
            (Ranks::VECTOR, DTypes::Bool) => Form::Bools,
            _ => Form::Var,
        }
    }

    /// The parameter's type, for a required input.
    fn param_type(self) -> &'static str {
        match self {
            Form::Var => "&Var",
            Form::Vars => "&[Var]",
            Form::Ints => "&[i32]",
            Form::Bools => "&[bool]",
            Form::Int => "i32",
            Form::Bool => "bool",
            Form::Str => "&str",
            Form::DType => "DType",
            Form::Float => "f32",
        }
    }

    /// The options field's type, for an optional input (inside `Option`).
    fn field_type(self) -> &'static str {
        match self {
            Form::Var => "Var",
            Form::Vars => "Vec<Var>",
            Form::Ints => "Vec<i32>",
            Form::Bools => "Vec<bool>",
            Form::Int => "i32",
            Form::Bool => "bool",
            Form::Str => "String",
            Form::DType => "DType",
            Form::Float => "f32",
        }
    }

    /// Whether an options field of this form is taken by value (`if let Some(v) = o.f`).
    fn is_copy(self) -> bool {
        matches!(self, Form::Int | Form::Bool | Form::DType | Form::Float)
    }

    /// The expression that makes `value` an `Arg` for input `input`; `like` is the
    /// parameter whose element type a float scalar takes.
    fn arg(self, input: &str, value: &str, like: Option<&str>) -> String {
        match self {
            Form::Var => format!("{value}.into()"),
            Form::Vars => format!("Arg::Tuple({value}.to_vec())"),
            Form::Ints => format!("Literal::int32_list({value}).into()"),
            Form::Bools => format!("bool_list({value})"),
            Form::Int => format!("Literal::int32({value}).into()"),
            Form::Bool => format!("Literal::bool({value}).into()"),
            Form::Str => format!("Literal::string({value}).into()"),
            Form::DType => format!("Literal::string({value}.name()).into()"),
            Form::Float => match like {
                Some(like) => format!("scalar_like(kind, \"{input}\", {like}, {value})"),
                None => format!("Literal::fp32({value}).into()"),
            },
        }
    }

    /// The input described for a parameter or field doc; `like` names the value a float
    /// scalar takes its element type from.
    fn describe(self, spec: &InputSpec, like: Option<&str>) -> String {
        let ranks = if spec.ranks == Ranks::ANY {
            String::new()
        } else {
            format!(", {}", spec.ranks.describe())
        };
        let types = spec.dtypes.describe();
        match self {
            Form::Var if spec.constant => {
                format!("{types}{ranks}; a compile-time constant (from `constant` or `weight`)")
            }
            Form::Var => format!("{types}{ranks}"),
            Form::Vars => format!("a tuple of values, each {types}{ranks}"),
            Form::Ints => "a constant integer list, written as int32".to_string(),
            Form::Bools => "a constant bool list".to_string(),
            Form::Int => "a constant integer, written as int32".to_string(),
            Form::Bool => "a constant bool".to_string(),
            Form::Str => "a constant string".to_string(),
            Form::DType => "an element type, written as its name".to_string(),
            Form::Float => match like {
                Some(like) => format!(
                    "a constant scalar ({types}), written in {like}'s element type when it is one \
                     of those, else in fp32"
                ),
                None => format!("a constant scalar ({types}), written in fp32"),
            },
        }
    }
}

/// One input of a generated method.
struct Input {
    spec: &'static InputSpec,
    form: Form,
}

/// What the generator knows of one op.
struct Op {
    kind: OpKind,
    method: String,
    /// `LayerNorm` for layer_norm.
    camel: String,
    required: Vec<Input>,
    optional: Vec<Input>,
    /// The first required value parameter: float scalars take its element type.
    like: Option<String>,
}

impl Op {
    fn new(kind: OpKind) -> Op {
        let inputs = kind.signature().inputs;
        let input = |spec| Input { spec, form: Form::of(spec) };
        let required: Vec<Input> = inputs.iter().filter(|s| s.required).map(input).collect();
        let optional = inputs.iter().filter(|s| !s.required).map(input).collect();
        let like = required.iter().find(|i| i.form == Form::Var).map(|i| ident(i.spec.name));
        Op { kind, method: method_name(kind), camel: format!("{kind:?}"), required, optional, like }
    }

    fn options(&self) -> Option<String> {
        (!self.optional.is_empty()).then(|| format!("{}Options", self.camel))
    }

    fn returns(&self) -> &'static str {
        if MULTI_RESULT.contains(&self.kind) { "Vec<Var>" } else { "Var" }
    }

    fn forms(&self) -> impl Iterator<Item = Form> + '_ {
        self.required.iter().chain(&self.optional).map(|i| i.form)
    }
}

/// Markdown-escapes the registry's prose for a doc comment: brackets (which rustdoc would
/// take for links), `*`, `<` and `>` outside code spans.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code && matches!(c, '[' | ']' | '*' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether a word would start a Markdown block (a list item, a heading, a quote) at the
/// start of a line.
fn starts_block(word: &str) -> bool {
    let numbered = word.ends_with(['.', ')'])
        && word.trim_end_matches(['.', ')']).chars().all(|c| c.is_ascii_digit());
    numbered || word.starts_with(['-', '+', '#', '>', '='])
}

/// `text` as doc comment lines at `indent`, wrapped to [`MAX_WIDTH`]; the first line starts
/// with `first`, the others with `rest` (two spaces inside a list item).
fn doc(out: &mut String, indent: &str, first: &str, rest: &str, text: &str) {
    let prefix = format!("{indent}/// ");
    let width = MAX_WIDTH - prefix.len();
    let mut lines: Vec<Vec<&str>> = vec![Vec::new()];
    let mut len = first.len();
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("lines start non-empty");
        if line.is_empty() || len + 1 + word.len() <= width {
            len += usize::from(!line.is_empty()) + word.len();
            line.push(word);
            continue;
        }
        // A word that would open a Markdown block at the start of a line takes the word
        // before it along.
        let mut next = vec![word];
        if starts_block(word) && line.len() > 1 {
            next.insert(0, line.pop().expect("the line has two words"));
        }
        len = rest.len() + next.iter().map(|w| w.len() + 1).sum::<usize>() - 1;
        lines.push(next);
    }
    for (i, words) in lines.iter().enumerate() {
        let lead = if i == 0 { first } else { rest };
        let _ = writeln!(out, "{prefix}{lead}{}", words.join(" "));
    }
}

/// An empty doc comment line.
fn doc_gap(out: &mut String, indent: &str) {
    let _ = writeln!(out, "{indent}///");
}

/// `items` as the elements of `open ... close` after `head` at `indent`, as rustfmt lays out
/// a list: on one line when it fits; after a `let ... =` head, on the next line when it fits
/// there; else one element per line.
fn list(out: &mut String, indent: &str, head: &str, open: &str, close: &str, items: &[String]) {
    let joined = format!("{open}{}{close}", items.join(", "));
    let one_line = format!("{indent}{head}{joined}");
    if one_line.len() <= MAX_WIDTH {
        let _ = writeln!(out, "{one_line}");
        return;
    }
    if let Some(lhs) = head.strip_suffix(" = ")
        && indent.len() + 4 + joined.len() <= MAX_WIDTH
    {
        let _ = writeln!(out, "{indent}{lhs} =\n{indent}    {joined}");
        return;
    }
    let _ = writeln!(out, "{indent}{head}{open}");
    for item in items {
        let _ = writeln!(out, "{indent}    {item},");
    }
    let _ = writeln!(out, "{indent}{close}");
}

/// The whole generated file.
fn render() -> String {
    let ops: Vec<Op> = generated_ops().map(Op::new).collect();
    let uses = |form: Form| ops.iter().any(|op| op.forms().any(|f| f == form));
    let mut out = String::new();
    let header = [
        "//! Typed [`FunctionBuilder`] methods for the ops of the registry without a hand-written",
        "//! one, and an options struct for each of those with optional inputs (`None` leaves the",
        "//! input out, so that the registry's default applies).",
        "//!",
        "//! Generated from the op registry by `src/builder/generate.rs`; do not edit by hand.",
    ];
    for line in header {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "//! Regenerate with `{REGENERATE}`.\n");
    let mut ir = Vec::new();
    if uses(Form::DType) {
        ir.push("DType");
    }
    ir.push("Literal");
    let _ = writeln!(out, "use crate::ir::{{{}}};", ir.join(", "));
    let _ = writeln!(out, "use crate::ops::OpKind;\n");
    let mut parent = vec!["Arg", "BuildError", "FunctionBuilder", "Var"];
    if uses(Form::Bools) {
        parent.push("bool_list");
    }
    if uses(Form::Float) {
        parent.push("scalar_like");
    }
    let _ = writeln!(out, "use super::{{{}}};\n", parent.join(", "));

    out.push_str("impl FunctionBuilder<'_> {\n");
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        method(&mut out, op);
    }
    out.push_str("}\n");
    for op in &ops {
        options_struct(&mut out, op);
    }
    out
}

/// One method: its doc comment, signature and body.
fn method(out: &mut String, op: &Op) {
    let kind = op.kind;
    let indent = "    ";
    doc(out, indent, "", "", &format!("`{}`: {}.", kind.name(), escape(docs::summary(kind))));
    doc_gap(out, indent);
    doc(out, indent, "", "", &format!("Result: {}.", escape(docs::shape_rule(kind))));
    doc_gap(out, indent);
    for input in &op.required {
        let text = format!(
            "`{}`: {}.",
            ident(input.spec.name),
            escape(&input.form.describe(input.spec, op.like.as_deref()))
        );
        doc(out, indent, "- ", "  ", &text);
    }
    if let Some(options) = op.options() {
        let names: Vec<String> = op.optional.iter().map(|i| format!("`{}`", i.spec.name)).collect();
        let text = format!("`o`: the optional inputs ({}), see [`{options}`].", names.join(", "));
        doc(out, indent, "- ", "  ", &text);
    }
    if MULTI_RESULT.contains(&kind) {
        doc_gap(out, indent);
        doc(out, indent, "", "", "Returns every result, in order.");
    }

    let mut params = vec!["&mut self".to_string()];
    for input in &op.required {
        params.push(format!("{}: {}", ident(input.spec.name), input.form.param_type()));
    }
    if let Some(options) = op.options() {
        params.push(format!("o: &{options}"));
    }
    let ret = format!(") -> Result<{}, BuildError> {{", op.returns());
    list(out, indent, &format!("pub fn {}", op.method), "(", &ret, &params);

    let body = "        ";
    let _ = writeln!(out, "{body}let kind = OpKind::{kind:?};");
    let like = op.like.as_deref();
    let items: Vec<String> = op
        .required
        .iter()
        .map(|i| {
            let name = i.spec.name;
            format!("(\"{name}\", {})", i.form.arg(name, &ident(name), like))
        })
        .collect();
    if op.optional.is_empty() {
        let head = format!("let inputs: [(&str, Arg); {}] = ", items.len());
        list(out, body, &head, "[", "];", &items);
    } else {
        list(out, body, "let mut inputs: Vec<(&str, Arg)> = ", "vec![", "];", &items);
        for input in &op.optional {
            let name = input.spec.name;
            let field = ident(name);
            let borrow = if input.form.is_copy() { "" } else { "&" };
            let _ = writeln!(out, "{body}if let Some(v) = {borrow}o.{field} {{");
            let _ = writeln!(
                out,
                "{body}    inputs.push((\"{name}\", {}));",
                input.form.arg(name, "v", like)
            );
            let _ = writeln!(out, "{body}}}");
        }
    }
    let call = if MULTI_RESULT.contains(&kind) { "op" } else { "op1" };
    let _ = writeln!(out, "{body}self.{call}(kind, kind.name(), &inputs)");
    let _ = writeln!(out, "{indent}}}");
}

/// The options struct of an op with optional inputs.
fn options_struct(out: &mut String, op: &Op) {
    let Some(options) = op.options() else { return };
    out.push('\n');
    let text = format!(
        "The optional inputs of [`FunctionBuilder::{}`]: `None` leaves an input out, so that \
         the registry's default applies.",
        op.method
    );
    doc(out, "", "", "", &text);
    let _ = writeln!(out, "#[derive(Clone, Debug, Default)]");
    let _ = writeln!(out, "pub struct {options} {{");
    for input in &op.optional {
        doc(out, "    ", "", "", &escape(&field_doc(op, input)));
        let _ = writeln!(
            out,
            "    pub {}: Option<{}>,",
            ident(input.spec.name),
            input.form.field_type()
        );
    }
    out.push_str("}\n");
}

/// The doc of an options field: the input, and what `None` stands for.
fn field_doc(op: &Op, input: &Input) -> String {
    let default = match docs::input_default(op.kind, input.spec) {
        Some(d) => format!("`None`: {d}"),
        None => "`None`: not used".to_string(),
    };
    let described = input.form.describe(input.spec, op.like.as_deref());
    format!("`{}`: {described}; {default}.", input.spec.name)
}

/// The committed generated file.
fn generated_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/builder/op_methods.rs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_methods_are_up_to_date() {
        let path = generated_path();
        let want = render();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have == want {
            return;
        }
        if std::env::var("ANEMONE_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &want).unwrap();
            eprintln!("wrote {}; build again to compile it", path.display());
            return;
        }
        let line = have.lines().zip(want.lines()).take_while(|(a, b)| a == b).count() + 1;
        panic!(
            "{} is out of date with the op registry (first difference at line {line}); \
             run `{REGENERATE}` to regenerate it",
            path.display()
        );
    }

    #[test]
    fn every_op_has_a_typed_method() {
        let generated = render();
        let hand_written = include_str!("mod.rs");
        for kind in OpKind::ALL {
            let by_hand = HAND_WRITTEN.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m);
            match by_hand {
                Some(name) => {
                    assert!(
                        hand_written.contains(&format!("    pub fn {name}(")),
                        "{kind}: builder/mod.rs has no method {name}"
                    );
                    assert!(!generated.contains(&format!("    pub fn {name}(")), "{kind} twice");
                }
                None => {
                    let name = method_name(kind);
                    assert!(generated.contains(&format!("    pub fn {name}(")), "{kind}");
                    assert!(!hand_written.contains(&format!("    pub fn {name}(")), "{kind}");
                }
            }
        }
        assert_eq!(generated_ops().count() + HAND_WRITTEN.len(), OpKind::ALL.len());
        assert_eq!(method_name(OpKind::Const), "const_op");
        assert_eq!(ident("type"), "r#type");
    }

    #[test]
    fn the_registry_decides_parameter_types_and_defaults() {
        let layer_norm = Op::new(OpKind::LayerNorm);
        let forms: Vec<(&str, Form)> =
            layer_norm.optional.iter().map(|i| (i.spec.name, i.form)).collect();
        assert_eq!(
            forms,
            [
                ("axes", Form::Ints),
                ("gamma", Form::Var),
                ("beta", Form::Var),
                ("epsilon", Form::Float)
            ]
        );
        // log and rsqrt share a signature but not a default.
        let log = Op::new(OpKind::Log);
        assert_eq!(
            field_doc(&log, &log.optional[0]),
            "`epsilon`: a constant scalar (fp16 or fp32), written in x's element type when it \
             is one of those, else in fp32; `None`: 1e-45."
        );
        let rsqrt = Op::new(OpKind::Rsqrt);
        assert!(field_doc(&rsqrt, &rsqrt.optional[0]).ends_with("`None`: 1e-12."));
        let quantize = Op::new(OpKind::Quantize);
        let required: Vec<Form> = quantize.required.iter().map(|i| i.form).collect();
        assert_eq!(required, [Form::Var, Form::Var, Form::DType]);
        assert_eq!(Form::of(OpKind::Concat.signature().input("values").unwrap()), Form::Vars);
        assert_eq!(
            Form::of(OpKind::SliceByIndex.signature().input("end_mask").unwrap()),
            Form::Bools
        );
    }

    #[test]
    fn doc_text_is_escaped_and_wrapped() {
        assert_eq!(escape("x [N, C] * `y[i]` <a>"), "x \\[N, C\\] \\* `y[i]` \\<a\\>");
        let long = "x".repeat(90);
        // `-` fits on no line but the second: it takes `yyyy` along rather than open a list.
        let mut out = String::new();
        doc(&mut out, "", "", "", &format!("{long} yyyy - b"));
        assert_eq!(out, format!("/// {long}\n/// yyyy - b\n"));
        // So does `2.`, which would open a numbered one.
        let mut out = String::new();
        doc(&mut out, "", "", "", &format!("{long} yyyy 2. b"));
        assert_eq!(out, format!("/// {long}\n/// yyyy 2. b\n"));
        // Inside a list item the following lines are indented, and every line fits.
        let mut out = String::new();
        doc(&mut out, "    ", "- ", "  ", &format!("{long} yyyy zz"));
        assert_eq!(out, format!("    /// - {long}\n    ///   yyyy zz\n"));
        assert!(out.lines().all(|l| l.len() <= MAX_WIDTH));
    }

    #[test]
    fn the_generated_file_is_rustfmt_clean() {
        let text = render();
        for line in text.lines() {
            assert!(line.len() <= MAX_WIDTH, "too wide for rustfmt: {line}");
        }
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rustfmt.toml");
        let child = std::process::Command::new("rustfmt")
            .args(["--edition", "2024", "--emit", "stdout", "--config-path"])
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("rustfmt is not installed; only the line widths were checked");
            return;
        };
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let formatted = String::from_utf8(output.stdout).unwrap();
        let line = text.lines().zip(formatted.lines()).take_while(|(a, b)| a == b).count() + 1;
        assert!(formatted == text, "rustfmt changes the generated file from line {line}");
    }
}
