//! Parser and printer together: what parsing produces, what each kind of bad input reports
//! and where, and that printing reads back.

use super::{parse, print};
use crate::diag::{Diagnostic, LineCol};
use crate::ir::*;

const SMALL: &str = "\
program(1.3)
{
    func main<ios18>(tensor<fp16, [1, 4]> x) {
        int8 a = const()[name = string(\"a\"), val = int8(5)];
        tensor<fp16, [1, 4]> y = add(x = x, y = x)[name = string(\"add\")];
    } -> (y);
}
";

fn span_text(src: &str, span: Span) -> &str {
    &src[span.start..span.end]
}

#[test]
fn parses_structure_with_spans() {
    let p = parse(SMALL).unwrap();
    assert_eq!(p.version, "1.3");
    assert!(p.attributes.is_empty());
    let f = &p.functions[0];
    assert_eq!((f.name.name.as_str(), f.opset.name.as_str()), ("main", "ios18"));
    assert_eq!(span_text(SMALL, f.name.span), "main");
    assert!(span_text(SMALL, f.span).starts_with("func main"));
    assert!(span_text(SMALL, f.span).ends_with("-> (y);"));
    assert_eq!(f.inputs[0].ty, Type::tensor(DType::Fp16, [1, 4]));
    assert_eq!(span_text(SMALL, f.inputs[0].ty_span), "tensor<fp16, [1, 4]>");
    let op = &f.block.operations[1];
    assert_eq!(op.op.name, "add");
    assert_eq!(
        span_text(SMALL, op.span),
        &SMALL
            [SMALL.find("tensor<fp16, [1, 4]> y").unwrap()..SMALL.find("\"add\")];").unwrap() + 8]
    );
    assert_eq!(op.name_attribute(), Some("add"));
    let name = op.attribute("name").unwrap();
    assert_eq!(span_text(SMALL, name.span), "string(\"add\")");
    match op.input("y").unwrap() {
        Argument::Var(v) => assert_eq!(span_text(SMALL, v.span), "x"),
        other => panic!("{other:?}"),
    }
    let a = f.block.operations[0].attribute("val").unwrap();
    assert_eq!(a.ty, Type::Scalar(DType::Int8));
    assert_eq!(a.data, LiteralData::Tensor(TensorData::Int(vec![5])));
    assert_eq!(f.block.outputs[0].name, "y");
    assert_eq!(print(&p), SMALL);
}

#[test]
fn program_attributes_several_functions_tuples_and_comments() {
    let src = r#"program(1.3)
[buildInfo = dict<string, string>({{"k", "v"}, {"a", ""}})]
{
    // a comment line
    func a<ios18>() {
        tensor<fp16, [2]> c = const()[name = string("c"), val = tensor<fp16, [2]>([1, 2])];
        tensor<fp16, [4]> y = concat(axis = int32(0), values = (c, (c)))[name = string("cat")];
    } -> (y);
    func b<ios17>(fp32 x) {
    } -> (x);
}
"#;
    let p = parse(src).unwrap();
    assert_eq!(p.functions.len(), 2);
    let build = &p.attributes[0].value;
    match &build.data {
        LiteralData::Dict(entries) => {
            assert_eq!(entries.len(), 2);
            assert_eq!(entries[0].0.as_str(), Some("k"));
            assert_eq!(span_text(src, entries[0].1.span), "\"v\"");
        }
        other => panic!("{other:?}"),
    }
    let op = &p.functions[0].block.operations[1];
    let Some(Argument::Tuple(items, span)) = op.input("values") else { panic!() };
    assert_eq!(items.len(), 2);
    assert_eq!(span_text(src, *span), "(c, (c))");
    assert!(matches!(op.input("axis"), Some(Argument::Literal(l)) if l.as_i64() == Some(0)));
    let printed = print(&p);
    assert_eq!(parse(&printed).unwrap(), p);
    assert!(!printed.contains("comment"));
}

#[test]
fn takes_older_coremlc_forms() {
    let src = r#"program(1.0)
[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"coremlc-version", "1436.100.10"}})]
{
    func main<ios15>(tensor<fp32, [1, 3]> x) {
        tensor<string, []> pt = const()[name = tensor<string, []>("pt"), val = tensor<string, []>("valid")];
        tensor<fp32, []> s = const()[name = tensor<string, []>("s"), val = tensor<fp32, []>(0x1p-3)];
        tensor<fp16, [3, 3]> w = const()[name = tensor<string, []>("w"), val = tensor<fp16, [3, 3]>(BLOBFILE(path = tensor<string, []>("@model_path/weights/weight.bin"), offset = tensor<uint64, []>(64)))];
        tensor<fp32, [1, 3]> y = mul(x = x, y = s)[name = tensor<string, []>("y")];
    } -> (y);
}
"#;
    let p = parse(src).unwrap();
    assert_eq!(p.version, "1.0");
    let ops = &p.functions[0].block.operations;
    assert_eq!(ops[0].outputs[0].ty, Type::Scalar(DType::String));
    assert_eq!(ops[0].attribute("val").unwrap(), &Literal::string("valid"));
    assert_eq!(ops[1].attribute("val").unwrap(), &Literal::fp32(0.125));
    let (blob, ty, _) = p.blob_refs()[0];
    assert_eq!((blob.path.as_str(), blob.offset), ("@model_path/weights/weight.bin", 64));
    assert_eq!(ty, &Type::tensor(DType::Fp16, [3, 3]));
    let printed = print(&p);
    assert!(
        printed.contains("string pt = const()[name = string(\"pt\"), val = string(\"valid\")];")
    );
    assert!(printed.contains("[buildInfo = dict<string, string>({{"));
    assert_eq!(parse(&printed).unwrap(), p);
}

fn val(src_value: &str) -> Result<Literal, Diagnostic> {
    let src = format!(
        "program(1.3)\n{{\n    func main<ios18>() {{\n        \
         fp16 c = const()[val = {src_value}];\n    }} -> (c);\n}}\n"
    );
    let p = parse(&src)?;
    Ok(p.functions[0].block.operations[0].attributes[0].value.clone())
}

fn data(src_value: &str) -> TensorData {
    match val(src_value).unwrap().data {
        LiteralData::Tensor(t) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn literal_values_take_the_declared_representation() {
    assert_eq!(data("fp16(0x1p-3)"), TensorData::F16(vec![f16::from_f32(0.125)]));
    assert_eq!(data("fp16(-65504)"), TensorData::F16(vec![f16::from_f32(-65504.0)]));
    assert_eq!(data("bf16(1.5)"), TensorData::BF16(vec![bf16::from_f32(1.5)]));
    assert_eq!(data("fp32(1e-4)"), TensorData::F32(vec![1e-4]));
    assert_eq!(data("fp32(.5)"), TensorData::F32(vec![0.5]));
    assert_eq!(data("fp64(0.1)"), TensorData::F64(vec![0.1]));
    assert_eq!(data("tensor<fp32, [1]>(5)"), TensorData::F32(vec![5.0]));
    assert_eq!(data("tensor<fp32, [2]>([1, -2])"), TensorData::F32(vec![1.0, -2.0]));
    assert_eq!(data("tensor<fp32, [0]>([])"), TensorData::F32(vec![]));
    assert_eq!(data("int8(-128)"), TensorData::Int(vec![-128]));
    assert_eq!(data("int64(-9223372036854775808)"), TensorData::Int(vec![i64::MIN]));
    assert_eq!(data("uint64(18446744073709551615)"), TensorData::UInt(vec![u64::MAX]));
    assert_eq!(data("uint8(0xff)"), TensorData::UInt(vec![255]));
    assert_eq!(data("uint1(1)"), TensorData::UInt(vec![1]));
    assert_eq!(data("tensor<bool, [2]>([true, false])"), TensorData::Bool(vec![true, false]));
    assert_eq!(data("fp8e4m3(-1)"), TensorData::UInt(vec![0xb8]));
    assert_eq!(data("fp8e5m2(inf)"), TensorData::UInt(vec![0x7c]));
    let TensorData::F16(nan) = data("tensor<fp16, [3]>([nan, -nan, nan(0x7e01)])") else {
        panic!()
    };
    let bits: Vec<u16> = nan.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, [0x7e00, 0xfe00, 0x7e01]);
    assert_eq!(data("fp32(-inf)"), TensorData::F32(vec![f32::NEG_INFINITY]));
    assert_eq!(data("fp32(-0)"), TensorData::F32(vec![-0.0]));
    assert_eq!(data("fp32(5.e1)"), TensorData::F32(vec![50.0]));
    assert_eq!(data("fp64(5.)"), TensorData::F64(vec![5.0]));
    let TensorData::F64(nan) = data("fp64(nan(0x7ff0000000000001))") else { panic!() };
    assert_eq!(nan[0].to_bits(), 0x7ff0000000000001);
    assert!(val("fp64(nan(0x17ff0000000000001))").is_err());
}

#[test]
fn dict_values_and_scalar_given_as_one_element_list() {
    let l = val("dict<string, tensor<int32, [2]>>({{\"a\", [1, 2]}})").unwrap();
    let LiteralData::Dict(entries) = &l.data else { panic!() };
    assert_eq!(entries[0].1.as_i64_vec(), Some(vec![1, 2]));
    assert_eq!(val("int32([7])").unwrap(), Literal::int32(7));
}

/// One bad input: the code, where it points (line, column), and words the message has.
fn check_error(src: &str, code: &str, line: usize, column: usize, words: &[&str]) {
    let err = match parse(src) {
        Ok(p) => panic!("parsed, expected {code}: {p:?}"),
        Err(e) => e,
    };
    assert_eq!(err.code, code, "{err:?}");
    assert!(err.is_error());
    let span = err.span.expect("a span");
    assert!(span.start <= span.end && span.end <= src.len(), "{span:?}");
    assert_eq!(LineCol::of(src, span.start), LineCol { line, column }, "{err:?}");
    let text = format!("{} {}", err.message, err.help.clone().unwrap_or_default());
    for w in words {
        assert!(text.contains(w), "{w:?} not in {text:?}");
    }
    assert!(err.label.is_some());
}

fn edit(from: &str, to: &str) -> String {
    assert!(SMALL.contains(from), "{from}");
    SMALL.replacen(from, to, 1)
}

#[test]
fn bad_input_battery() {
    let cut = SMALL.find("y = x)").unwrap();
    check_error(&SMALL[..cut], "parse::unexpected-eof", 5, 45, &["end of input"]);
    check_error(
        &edit("string(\"a\")", "string(\"a)"),
        "parse::unterminated-string",
        4,
        40,
        &["unterminated"],
    );
    check_error(&edit("int8(5)", "int8(5x)"), "parse::bad-number", 4, 57, &["`x`"]);
    check_error(&edit("int8(5)", "int8(1.2.3)"), "parse::bad-number", 4, 57, &["number"]);
    check_error(
        &edit("int8(5)", "int8(-300)"),
        "parse::value-out-of-range",
        4,
        57,
        &["-300", "int8", "-128 to 127"],
    );
    check_error(
        &edit("int8(5)", "tensor<int8, [3]>([1, 2])"),
        "parse::literal-count",
        4,
        70,
        &["3 elements", "2 are written"],
    );
    check_error(&edit("int8 a", "fp61 a"), "parse::unknown-dtype", 4, 9, &["fp61", "`fp16`"]);
    check_error(
        &edit("val = int8(5)];", "val = int8(5)]"),
        "parse::missing-semicolon",
        4,
        59,
        &["`;`", "after the operation"],
    );
    check_error(&edit("} -> (y);", "} (y);"), "parse::missing-arrow", 6, 5, &["`->`", "`(`"]);
    let bomb = edit("y = x)", &format!("y = {}", "(".repeat(100_000)));
    check_error(&bomb, "parse::too-deep", 5, 49 + 64, &["deeper than 64"]);
}

#[test]
fn more_bad_inputs() {
    check_error(&edit("[1, 4]> x", "[1, s0]> x"), "parse::symbolic-dimension", 3, 39, &["`s0`"]);
    check_error(&edit("[1, 4]> x", "[1, -1]> x"), "parse::bad-dimension", 3, 39, &["-1"]);
    check_error(&edit("y = x)", "y = 1)"), "parse::untyped-literal", 5, 49, &["type"]);
    check_error(
        &edit("tensor<fp16, [1, 4]> y", "tensor<tensor<fp16, [1]>, [1, 4]> y"),
        "parse::unknown-dtype",
        5,
        16,
        &["element type", "`tensor`"],
    );
    check_error(&edit("int8(5)", "int8(5.5)"), "parse::literal-type", 4, 57, &["not an integer"]);
    check_error(&edit("int8(5)", "int8(\"5\")"), "parse::literal-type", 4, 57, &["string"]);
    check_error(&edit("int8 a", "int8 a a"), "parse::unexpected-token", 4, 16, &["`=`"]);
    check_error(&edit("int8(5)", "fp16(70000)"), "parse::value-out-of-range", 4, 57, &["65504"]);
    check_error(&edit("int8(5)", "fp8e4m3(inf)"), "parse::value-out-of-range", 4, 60, &["448"]);
    check_error(&edit("int8(5)", "fp16(nan(0x3c00))"), "parse::bad-number", 4, 57, &["NaN"]);
    check_error(
        &edit("int8(5)", "tensor<int8, [2, 1]>([[1], [2]])"),
        "parse::nested-list",
        4,
        74,
        &["nested"],
    );
    check_error(&edit("string(\"a\")", "string(\"\\q\")"), "parse::bad-escape", 4, 41, &["escape"]);
    check_error(&edit("const()", "const() ?"), "parse::unexpected-character", 4, 26, &["`?`"]);
    check_error(
        &edit("int8(5)", "tensor<int8, [1]>(BLOBFILE(path = string(\"w\")))"),
        "parse::bad-blobfile",
        4,
        70,
        &["`offset`"],
    );
    check_error(
        &edit("int8(5)", "tensor<int8, [1]>(BLOBFILE(path = int32(1), offset = uint64(64)))"),
        "parse::bad-blobfile",
        4,
        86,
        &["path"],
    );
    check_error(
        &edit("program(1.3)", "programme(1.3)"),
        "parse::unexpected-token",
        1,
        1,
        &["`program`"],
    );
    check_error(&format!("{SMALL}}}"), "parse::unexpected-token", 8, 1, &["end of input"]);
    check_error(
        &edit("tensor<fp16, [1, 4]> y", "tensor<fp16, [1, 4] y"),
        "parse::unexpected-token",
        5,
        29,
        &["`>`"],
    );
    check_error(
        &edit("int8(5)", &format!("{}int8{}", "dict<".repeat(200), ">".repeat(200))),
        "parse::too-deep",
        4,
        52 + 5 * 64,
        &["deeper"],
    );
    assert!(parse("").is_err_and(|e| e.code == "parse::unexpected-eof"));
    assert!(parse("   ").is_err_and(|e| e.code == "parse::unexpected-eof"));
}

#[test]
fn printing_reads_back_bit_for_bit() {
    for text in [
        "tensor<fp16, [6]>([0.001302, 0.00001, 1e-4, 6e-8, -0, 65504])",
        "tensor<fp32, [5]>([0.1, 1e-45, 3.4028235e38, -0, nan(0x7fc00001)])",
        "tensor<bf16, [3]>([0.1, 1e30, -inf])",
        "tensor<fp64, [2]>([0.1, 5e-324])",
        "tensor<fp8e5m2, [3]>([0.5, -inf, nan])",
        "string(\"quote \\\" backslash \\\\ tab \\t unicode \\u{1F600} é\")",
    ] {
        let l = val(text).unwrap();
        let printed = super::print_literal(&l);
        assert_eq!(val(&printed).unwrap(), l, "{text} printed as {printed}");
    }
}
