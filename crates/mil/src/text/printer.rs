//! The printer: a [`Program`] to MIL text in the form Apple's in-memory compiler takes and
//! coremltools writes: 4-space indents, `name = value` with spaces, `, ` separators, one
//! statement per line. Floats print as the shortest decimal that reads back to the same
//! bits, so `parse(print(p)) == p` for every program the parser can produce.

use super::float::{self, Format};
use crate::ir::*;

const FUNCTION_INDENT: &str = "    ";
const STATEMENT_INDENT: &str = "        ";

pub(super) fn print_program(program: &Program) -> String {
    let mut out = String::with_capacity(estimate_len(program));
    out.push_str("program(");
    out.push_str(&program.version);
    out.push_str(")\n");
    if !program.attributes.is_empty() {
        write_attributes(&mut out, &program.attributes);
        out.push('\n');
    }
    out.push_str("{\n");
    for function in &program.functions {
        write_function(&mut out, function);
    }
    out.push_str("}\n");
    out
}

/// About 120 bytes a statement, as in real programs, to avoid regrowing the buffer.
fn estimate_len(program: &Program) -> usize {
    let statements: usize = program.functions.iter().map(|f| f.block.operations.len() + 2).sum();
    512 + 128 * statements
}

fn write_function(out: &mut String, function: &Function) {
    out.push_str(FUNCTION_INDENT);
    out.push_str("func ");
    out.push_str(&function.name.name);
    out.push('<');
    out.push_str(&function.opset.name);
    out.push_str(">(");
    write_separated(out, &function.inputs, write_typed_name);
    out.push_str(") {\n");
    for operation in &function.block.operations {
        write_operation(out, operation);
    }
    out.push_str(FUNCTION_INDENT);
    out.push_str("} -> (");
    write_separated(out, &function.block.outputs, |out, name| out.push_str(&name.name));
    out.push_str(");\n");
}

fn write_operation(out: &mut String, operation: &Operation) {
    out.push_str(STATEMENT_INDENT);
    write_separated(out, &operation.outputs, write_typed_name);
    out.push_str(" = ");
    out.push_str(&operation.op.name);
    out.push('(');
    write_separated(out, &operation.inputs, |out, input| {
        out.push_str(&input.name.name);
        out.push_str(" = ");
        write_argument(out, &input.value);
    });
    out.push(')');
    if !operation.attributes.is_empty() {
        write_attributes(out, &operation.attributes);
    }
    out.push_str(";\n");
}

fn write_attributes(out: &mut String, attributes: &[Named<Literal>]) {
    out.push('[');
    write_separated(out, attributes, |out, attribute| {
        out.push_str(&attribute.name.name);
        out.push_str(" = ");
        write_literal(out, &attribute.value);
    });
    out.push(']');
}

fn write_typed_name(out: &mut String, value: &TypedName) {
    write_type(out, &value.ty);
    out.push(' ');
    out.push_str(&value.name.name);
}

fn write_argument(out: &mut String, argument: &Argument) {
    match argument {
        Argument::Var(name) => out.push_str(&name.name),
        Argument::Literal(literal) => write_literal(out, literal),
        Argument::Tuple(items, _) => {
            out.push('(');
            write_separated(out, items, write_argument);
            out.push(')');
        }
    }
}

fn write_separated<T>(out: &mut String, items: &[T], mut write: impl FnMut(&mut String, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, item);
    }
}

/// A type as MIL writes it; a rank-0 tensor is its scalar dtype.
pub(super) fn write_type(out: &mut String, ty: &Type) {
    match ty {
        Type::Scalar(dtype) => out.push_str(dtype.name()),
        Type::Tensor(t) if t.shape.is_empty() => out.push_str(t.dtype.name()),
        Type::Tensor(t) => {
            out.push_str("tensor<");
            out.push_str(t.dtype.name());
            out.push_str(", [");
            write_separated(out, &t.shape, |out, d| out.push_str(&d.to_string()));
            out.push_str("]>");
        }
        Type::Dict(key, value) => {
            out.push_str("dict<");
            write_type(out, key);
            out.push_str(", ");
            write_type(out, value);
            out.push('>');
        }
    }
}

/// `TYPE(PAYLOAD)`.
pub(super) fn write_literal(out: &mut String, literal: &Literal) {
    write_type(out, &literal.ty);
    out.push('(');
    write_payload(out, literal);
    out.push(')');
}

fn write_payload(out: &mut String, literal: &Literal) {
    match &literal.data {
        LiteralData::Blob(blob) => {
            out.push_str("BLOBFILE(path = string(");
            write_string(out, &blob.path);
            out.push_str("), offset = uint64(");
            out.push_str(&blob.offset.to_string());
            out.push_str("))");
        }
        LiteralData::Dict(entries) => {
            out.push('{');
            write_separated(out, entries, |out, (key, value)| {
                out.push('{');
                write_payload(out, key);
                out.push_str(", ");
                write_payload(out, value);
                out.push('}');
            });
            out.push('}');
        }
        LiteralData::Tensor(data) => {
            let dtype = literal.ty.dtype().unwrap_or(DType::Fp32);
            let scalar = literal.ty.shape().is_some_and(<[usize]>::is_empty);
            if scalar && data.len() == 1 {
                write_element(out, dtype, data, 0);
            } else {
                out.push('[');
                for i in 0..data.len() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_element(out, dtype, data, i);
                }
                out.push(']');
            }
        }
    }
}

fn write_element(out: &mut String, dtype: DType, data: &TensorData, i: usize) {
    let float = |out: &mut String, format: Format, bits: u64| {
        float::write_shortest(out, format, bits);
    };
    match data {
        TensorData::F16(v) => float(out, Format::FP16, u64::from(v[i].to_bits())),
        TensorData::BF16(v) => float(out, Format::BF16, u64::from(v[i].to_bits())),
        TensorData::F32(v) => float(out, Format::FP32, u64::from(v[i].to_bits())),
        TensorData::F64(v) => float(out, Format::FP64, v[i].to_bits()),
        TensorData::Int(v) => out.push_str(&v[i].to_string()),
        TensorData::UInt(v) => match Format::of(dtype) {
            // fp8 elements are stored as their raw bytes.
            Some(format) => float(out, format, v[i] & 0xff),
            None => out.push_str(&v[i].to_string()),
        },
        TensorData::Bool(v) => out.push_str(if v[i] { "true" } else { "false" }),
        TensorData::Str(v) => write_string(out, &v[i]),
    }
}

/// A double-quoted string; quotes, backslashes and control characters are escaped.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal_text(literal: &Literal) -> String {
        let mut out = String::new();
        write_literal(&mut out, literal);
        out
    }

    #[test]
    fn scalars_lists_and_rank0_tensors() {
        assert_eq!(literal_text(&Literal::int32(-3)), "int32(-3)");
        assert_eq!(literal_text(&Literal::fp16(-1.0)), "fp16(-1)");
        assert_eq!(literal_text(&Literal::fp16(0.125)), "fp16(0.125)");
        assert_eq!(literal_text(&Literal::bool(true)), "bool(true)");
        assert_eq!(literal_text(&Literal::int32_list(&[1])), "tensor<int32, [1]>([1])");
        let rank0 = Literal::tensor(Type::tensor(DType::Fp32, []), TensorData::F32(vec![2.5]));
        assert_eq!(literal_text(&rank0), "fp32(2.5)");
        let fp8 =
            Literal::tensor(Type::tensor(DType::Fp8E4M3, [2]), TensorData::UInt(vec![0x38, 0x7f]));
        assert_eq!(literal_text(&fp8), "tensor<fp8e4m3, [2]>([1, nan])");
    }

    #[test]
    fn strings_escape_what_the_lexer_needs() {
        let s = Literal::string("a\"b\\c\nd\u{1}é");
        assert_eq!(literal_text(&s), r#"string("a\"b\\c\nd\u{1}é")"#);
    }

    #[test]
    fn blobs_and_dicts() {
        let blob = Literal::blob(TensorType::new(DType::Fp16, [2, 2]), "@model_path/w.bin", 64);
        assert_eq!(
            literal_text(&blob),
            concat!(
                "tensor<fp16, [2, 2]>(BLOBFILE(",
                "path = string(\"@model_path/w.bin\"), offset = uint64(64)))"
            )
        );
        let string = Type::Scalar(DType::String);
        let dict = Literal::new(
            Type::Dict(Box::new(string.clone()), Box::new(string)),
            LiteralData::Dict(vec![(Literal::string("k"), Literal::string("v"))]),
        );
        assert_eq!(literal_text(&dict), "dict<string, string>({{\"k\", \"v\"}})");
    }
}
