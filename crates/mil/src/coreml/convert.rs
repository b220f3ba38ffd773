//! ML Program protobuf to IR: functions, opsets, operations, arguments and attributes, made
//! to look exactly as the text parser would make them from the same program (so printing the
//! result and parsing it again gives an equal [`Program`]).
//!
//! What anemone cannot run is refused before anything is converted, with one error: nested
//! blocks (control flow), state, then every unknown op type at once.

use std::collections::BTreeMap;

use super::error::{CoreMlError, UnknownOp};
use super::proto::mil_spec::{self, argument::binding::Binding, value_type};
use super::value::{self, Problem};
use crate::ir::{
    Argument, Block, Function, Ident, Literal, LiteralData, Named, Operation, Program, Span,
    TypedName,
};
use crate::ops::{Arity, OpKind};

/// Core ML opset names and the MIL text opsets they stand for (coremltools `_OPSET` in
/// `coremltools/__init__.py`: specification versions 6 to 10 are iOS 15 to iOS 26).
pub const OPSETS: [(&str, &str); 5] = [
    ("CoreML5", "ios15"),
    ("CoreML6", "ios16"),
    ("CoreML7", "ios17"),
    ("CoreML8", "ios18"),
    ("CoreML9", "ios26"),
];

/// The ML Program version coremltools writes (and its own loader requires).
const PROGRAM_VERSION: i64 = 1;

/// The `program(...)` version of the imported text.
const TEXT_VERSION: &str = "1.3";

/// Op types that read or write model state.
const STATE_OPS: [&str; 3] = ["read_state", "write_state", "coreml_update_state"];

/// Converts an ML Program. `first` names the function to put first (the model's default
/// function); `path` is the file named in errors.
pub(super) fn program(
    path: &str,
    proto: &mil_spec::Program,
    first: &str,
) -> Result<Program, CoreMlError> {
    let cx = Cx { path };
    if proto.version != PROGRAM_VERSION {
        return Err(cx.unsupported(
            "coreml::program-version",
            "program",
            format!(
                "ML Program version {}; anemone reads version {PROGRAM_VERSION}, which \
                 coremltools writes",
                proto.version
            ),
        ));
    }
    if !proto.functions.contains_key(first) {
        let names: Vec<&str> = proto.functions.keys().map(String::as_str).collect();
        let message = match names.is_empty() {
            true => "the ML Program has no functions".to_string(),
            false => format!("no function {first}; the program has {}", names.join(", ")),
        };
        return Err(cx.malformed("program", message));
    }
    // The default function first, then the others by name (the map is ordered).
    let ordered = proto
        .functions
        .get_key_value(first)
        .into_iter()
        .chain(proto.functions.iter().filter(|(name, _)| name.as_str() != first));
    let mut functions = Vec::new();
    for (name, function) in ordered {
        let at = format!("function {name}");
        let (opset, block) = cx.specialization(function, &at)?;
        functions.push((name, function, opset, block));
    }
    for (name, function, _, block) in &functions {
        cx.refuse_unsupported(name, function, block)?;
    }
    cx.refuse_unknown_ops(functions.iter().map(|(name, _, _, block)| (name.as_str(), *block)))?;

    let mut attributes = Vec::new();
    for (name, value) in &proto.attributes {
        let at = format!("program attribute {name}");
        let name = cx.ident(name, "program", "attribute name")?;
        let value = value::literal(value, "the value").map_err(|p| cx.problem(&at, p))?;
        attributes.push(Named { name, value });
    }
    let functions = functions
        .into_iter()
        .map(|(name, function, opset, block)| cx.function(name, function, opset, block))
        .collect::<Result<Vec<_>, _>>()?;
    // The protobuf's version numbers the serialization, not the text: the text gets the
    // header every program known to compile in memory on the ANE uses (REFERENCE.md §4).
    Ok(Program { version: TEXT_VERSION.to_string(), attributes, functions })
}

/// The text opset of a Core ML opset name.
pub(super) fn text_opset(coreml: &str) -> Option<&'static str> {
    OPSETS.iter().find(|(c, _)| *c == coreml).map(|(_, t)| *t)
}

/// Whether `name` can be written in MIL text as it is: `[A-Za-z_][A-Za-z0-9_]*`, what the
/// lexer reads as one identifier.
pub(super) fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The `name` attribute of an op, when it is a string.
pub(super) fn op_name(op: &mil_spec::Operation) -> Option<&str> {
    use mil_spec::{tensor_value, value, value::immediate_value};
    let v = op.attributes.get("name")?;
    let Some(value::Value::ImmediateValue(imm)) = &v.value else { return None };
    let Some(immediate_value::Value::Tensor(t)) = &imm.value else { return None };
    match &t.value {
        Some(tensor_value::Value::Strings(s)) if s.values.len() == 1 => Some(&s.values[0]),
        _ => None,
    }
}

/// Where an op is, for messages: `function main, op conv "conv_q"`; an op without a name
/// attribute is counted instead.
pub(super) fn op_at(function: &str, op_type: &str, name: Option<&str>, index: usize) -> String {
    match name {
        Some(name) => format!("function {function}, op {op_type} \"{name}\""),
        None => format!("function {function}, op {op_type} (operation {index} of the block)"),
    }
}

/// Every weight file path the program's BLOBFILE values name, once each, with where it is
/// first used.
pub(super) fn blob_uses(program: &Program) -> Vec<(String, String)> {
    fn literal(lit: &Literal, out: &mut Vec<String>) {
        match &lit.data {
            LiteralData::Blob(b) => out.push(b.path.clone()),
            LiteralData::Dict(entries) => entries.iter().for_each(|(k, v)| {
                literal(k, out);
                literal(v, out);
            }),
            LiteralData::Tensor(_) => {}
        }
    }
    fn argument(arg: &Argument, out: &mut Vec<String>) {
        match arg {
            Argument::Literal(l) => literal(l, out),
            Argument::Tuple(items, _) => items.iter().for_each(|a| argument(a, out)),
            Argument::Var(_) => {}
        }
    }
    let mut uses: Vec<(String, String)> = Vec::new();
    let mut add = |paths: Vec<String>, at: &dyn Fn() -> String| {
        for p in paths {
            if !uses.iter().any(|(q, _)| *q == p) {
                uses.push((p, at()));
            }
        }
    };
    for a in &program.attributes {
        let mut paths = Vec::new();
        literal(&a.value, &mut paths);
        add(paths, &|| format!("program attribute {}", a.name));
    }
    for f in &program.functions {
        for (i, op) in f.block.operations.iter().enumerate() {
            let mut paths = Vec::new();
            op.attributes.iter().for_each(|a| literal(&a.value, &mut paths));
            op.inputs.iter().for_each(|n| argument(&n.value, &mut paths));
            add(paths, &|| op_at(&f.name.name, &op.op.name, op.name_attribute(), i));
        }
    }
    uses
}

/// The conversion's context: the file errors name.
struct Cx<'a> {
    path: &'a str,
}

impl Cx<'_> {
    fn malformed(&self, at: &str, message: String) -> CoreMlError {
        CoreMlError::Malformed { path: self.path.to_string(), at: at.to_string(), message }
    }

    fn unsupported(&self, code: &'static str, at: &str, message: String) -> CoreMlError {
        CoreMlError::Unsupported { path: self.path.to_string(), code, at: at.to_string(), message }
    }

    fn problem(&self, at: &str, p: Problem) -> CoreMlError {
        match p {
            Problem::Unsupported(code, message) => self.unsupported(code, at, message),
            Problem::Malformed(message) => self.malformed(at, message),
        }
    }

    /// `name` as an identifier, refused when MIL text could not hold it.
    fn ident(&self, name: &str, at: &str, what: &str) -> Result<Ident, CoreMlError> {
        if is_identifier(name) {
            return Ok(Ident::new(name));
        }
        let shown: String = name.chars().take(60).collect();
        Err(self.unsupported(
            "coreml::bad-name",
            at,
            format!(
                "{what} {shown:?} is not a MIL identifier ([A-Za-z_][A-Za-z0-9_]*), so the \
                 program could not be written as MIL text"
            ),
        ))
    }

    /// The text opset and the block of a function's active specialization.
    fn specialization<'p>(
        &self,
        function: &'p mil_spec::Function,
        at: &str,
    ) -> Result<(&'static str, &'p mil_spec::Block), CoreMlError> {
        let Some(opset) = text_opset(&function.opset) else {
            let known: Vec<&str> = OPSETS.iter().map(|(c, _)| *c).collect();
            let shown: String = function.opset.chars().take(40).collect();
            return Err(self.unsupported(
                "coreml::opset",
                at,
                format!("opset {shown:?} is not one anemone knows (it knows {})", known.join(", ")),
            ));
        };
        let Some(block) = function.block_specializations.get(&function.opset) else {
            return Err(self.malformed(
                at,
                format!("no block specialization for its opset {}", function.opset),
            ));
        };
        if !block.inputs.is_empty() {
            return Err(self.malformed(at, "the function's block declares inputs".to_string()));
        }
        Ok((opset, block))
    }

    /// Control flow and state, refused at their first appearance.
    fn refuse_unsupported(
        &self,
        name: &str,
        function: &mil_spec::Function,
        block: &mil_spec::Block,
    ) -> Result<(), CoreMlError> {
        let is_state = |t: Option<&mil_spec::ValueType>| {
            matches!(t.and_then(|t| t.r#type.as_ref()), Some(value_type::Type::StateType(_)))
        };
        for input in &function.inputs {
            if is_state(input.r#type.as_ref()) {
                return Err(self.unsupported(
                    "coreml::state",
                    &format!("function {name}, input {}", input.name),
                    "the input is a state; stateful models are not supported".to_string(),
                ));
            }
        }
        for (i, op) in block.operations.iter().enumerate() {
            let at = || op_at(name, &op.r#type, op_name(op), i);
            if !op.blocks.is_empty() {
                return Err(self.unsupported(
                    "coreml::control-flow",
                    &at(),
                    format!(
                        "the op holds {} nested block(s): control flow is not supported; \
                         anemone runs straight-line programs",
                        op.blocks.len()
                    ),
                ));
            }
            if STATE_OPS.contains(&op.r#type.as_str())
                || op.outputs.iter().any(|o| is_state(o.r#type.as_ref()))
            {
                return Err(self.unsupported(
                    "coreml::state",
                    &at(),
                    "the op reads or writes state; stateful models are not supported".to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Every op type the registry does not know, in one error.
    fn refuse_unknown_ops<'p>(
        &self,
        blocks: impl Iterator<Item = (&'p str, &'p mil_spec::Block)>,
    ) -> Result<(), CoreMlError> {
        let mut unknown: Vec<UnknownOp> = Vec::new();
        for (function, block) in blocks {
            for op in &block.operations {
                if OpKind::from_name(&op.r#type).is_none()
                    && !unknown.iter().any(|u| u.op == op.r#type)
                {
                    unknown.push(UnknownOp {
                        op: op.r#type.chars().take(60).collect(),
                        function: function.to_string(),
                        name: op_name(op).map(str::to_string),
                    });
                }
            }
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CoreMlError::UnknownOps { path: self.path.to_string(), ops: unknown })
        }
    }

    fn function(
        &self,
        name: &str,
        function: &mil_spec::Function,
        opset: &str,
        block: &mil_spec::Block,
    ) -> Result<Function, CoreMlError> {
        let at = format!("function {name}");
        let fname = self.ident(name, &at, "the function name")?;
        let mut inputs = Vec::with_capacity(function.inputs.len());
        for input in &function.inputs {
            let ident = self.ident(&input.name, &at, "input")?;
            let ty =
                value::value_type(input.r#type.as_ref(), &format!("input {}", input.name), false)
                    .map_err(|p| self.problem(&at, p))?;
            inputs.push(TypedName { ty, name: ident, ty_span: Span::NONE });
        }
        let operations = block
            .operations
            .iter()
            .enumerate()
            .map(|(i, op)| self.operation(name, i, op))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = block
            .outputs
            .iter()
            .map(|o| self.ident(o, &at, "output"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Function {
            name: fname,
            opset: Ident::new(opset),
            inputs,
            block: Block { operations, outputs },
            span: Span::NONE,
        })
    }

    fn operation(
        &self,
        function: &str,
        index: usize,
        op: &mil_spec::Operation,
    ) -> Result<Operation, CoreMlError> {
        let at = op_at(function, &op.r#type, op_name(op), index);
        let kind = OpKind::from_name(&op.r#type);
        let signature = kind.map(OpKind::signature);
        let op_ident = self.ident(&op.r#type, &at, "the op type")?;

        // Inputs in the order of the op's signature; names it does not list after them, by
        // name (the proto map is ordered, and the sort is stable).
        let mut inputs: Vec<(usize, Named<Argument>)> = Vec::with_capacity(op.inputs.len());
        for (param, arg) in &op.inputs {
            let name = self.ident(param, &at, "input name")?;
            let spec = signature.and_then(|s| s.inputs.iter().position(|i| i.name == param));
            let tuple = spec
                .and_then(|i| signature.map(|s| s.inputs[i].arity == Arity::Tuple))
                .unwrap_or(false);
            let mut items = Vec::with_capacity(arg.arguments.len());
            for (i, binding) in arg.arguments.iter().enumerate() {
                match &binding.binding {
                    Some(Binding::Name(var)) => {
                        items.push(Argument::Var(self.ident(var, &at, "argument")?));
                    }
                    Some(Binding::Value(v)) => {
                        let subject = format!("input {param}");
                        let lit = value::literal(v, &subject).map_err(|p| self.problem(&at, p))?;
                        items.push(Argument::Literal(lit));
                    }
                    None => {
                        return Err(
                            self.malformed(&at, format!("input {param}: binding {i} is empty"))
                        );
                    }
                }
            }
            let value = if tuple || items.len() > 1 {
                Argument::Tuple(items, Span::NONE)
            } else if let Some(one) = items.pop() {
                one
            } else {
                return Err(self.malformed(&at, format!("input {param} has no value")));
            };
            inputs.push((spec.unwrap_or(usize::MAX), Named { name, value }));
        }
        inputs.sort_by_key(|(rank, _)| *rank);

        // Attributes in the order of the signature's attributes (`name` first), then inputs
        // given as attributes (constexpr ops of opset iOS16 and earlier), then the rest.
        let mut ranked: BTreeMap<(usize, usize), Named<Literal>> = BTreeMap::new();
        for (i, (attr, v)) in op.attributes.iter().enumerate() {
            let name = self.ident(attr, &at, "attribute name")?;
            let subject = format!("attribute {attr}");
            let value = value::literal(v, &subject).map_err(|p| self.problem(&at, p))?;
            let rank = signature.and_then(|s| {
                s.attributes.iter().position(|a| a.name == attr).or_else(|| {
                    s.inputs.iter().position(|a| a.name == attr).map(|p| p + s.attributes.len())
                })
            });
            ranked.insert((rank.unwrap_or(usize::MAX), i), Named { name, value });
        }

        // Every MIL op yields at least one value (and MIL text cannot write one that does not).
        if op.outputs.is_empty() {
            return Err(self.malformed(&at, "the op has no outputs".to_string()));
        }
        let mut outputs = Vec::with_capacity(op.outputs.len());
        for o in &op.outputs {
            let name = self.ident(&o.name, &at, "output")?;
            let ty = value::value_type(o.r#type.as_ref(), &format!("output {}", o.name), false)
                .map_err(|p| self.problem(&at, p))?;
            outputs.push(TypedName { ty, name, ty_span: Span::NONE });
        }
        Ok(Operation {
            op: op_ident,
            inputs: inputs.into_iter().map(|(_, n)| n).collect(),
            attributes: ranked.into_values().collect(),
            outputs,
            span: Span::NONE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_lexer() {
        for ok in ["x", "_x1", "conv_q", "A9"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1x", "x.1", "x-y", "x y", "é", "x@1"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn opsets_map_to_text_names() {
        assert_eq!(text_opset("CoreML5"), Some("ios15"));
        assert_eq!(text_opset("CoreML8"), Some("ios18"));
        assert_eq!(text_opset("CoreML9"), Some("ios26"));
        assert_eq!(text_opset("CoreML4"), None);
        assert_eq!(text_opset("ios18"), None);
    }
}
