//! Printing and parsing MIL text are inverses: the real programs in the shared fixtures
//! survive parse → print → parse unchanged, the canonical one prints byte for byte, and
//! random programs (every dtype, odd floats, awkward strings, tuples, dicts, BLOBFILEs)
//! satisfy `parse(print(p)) == p`.

use std::path::PathBuf;

use anemone_mil::ir::*;
use anemone_mil::text::{parse, print};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// The shared corpus sits beside the repository (`../shared` from its root, so
/// `../../../shared` from this crate); a git worktree may sit deeper, so look in every
/// ancestor of the crate.
fn fixture_dir() -> Option<PathBuf> {
    const CORPUS: &str = "shared/fixtures/mil-maderix";
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if let Some(dir) = manifest.ancestors().map(|a| a.join(CORPUS)).find(|d| d.is_dir()) {
        return Some(dir);
    }
    assert!(
        std::env::var("ANEMONE_REQUIRE_SHARED").as_deref() != Ok("1"),
        "{CORPUS} not found beside any ancestor of {} and ANEMONE_REQUIRE_SHARED=1",
        manifest.display()
    );
    println!("skipped: shared fixtures not found");
    None
}

/// Every `.mil` fixture as (file name, text), in name order.
fn fixtures() -> Vec<(String, String)> {
    let Some(dir) = fixture_dir() else { return Vec::new() };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the fixture folder")
        .map(|e| e.expect("a fixture entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mil"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read a fixture"))
        })
        .collect()
}

fn parse_or_panic(name: &str, text: &str) -> Program {
    parse(text).unwrap_or_else(|d| {
        panic!("{}", anemone_mil::diag::render(&d, name, text, false));
    })
}

#[test]
fn fixtures_round_trip() {
    let all = fixtures();
    if all.is_empty() {
        return;
    }
    assert_eq!(all.len(), 10, "expected the ten maderix programs");
    for (name, text) in &all {
        let program = parse_or_panic(name, text);
        let printed = print(&program);
        let again = parse_or_panic(&format!("{name} (printed)"), &printed);
        assert_eq!(again, program, "{name}: parse(print(p)) differs");
        assert_eq!(print(&again), printed, "{name}: printing is not idempotent");
    }
}

#[test]
fn canonical_fixture_prints_byte_for_byte() {
    let all = fixtures();
    let Some((name, text)) = all.iter().find(|(n, _)| n.starts_with("01_")) else { return };
    assert_eq!(print(&parse_or_panic(name, text)), *text);
}

#[test]
fn fixtures_hold_what_they_say() {
    let all = fixtures();
    if all.is_empty() {
        return;
    }
    let get = |prefix: &str| {
        let (name, text) = all.iter().find(|(n, _)| n.starts_with(prefix)).unwrap();
        parse_or_panic(name, text)
    };
    let p02 = get("02_");
    let offsets: Vec<u64> = p02.blob_refs().iter().map(|(b, _, _)| b.offset).collect();
    assert_eq!(offsets, [64, 8320, 16576]);
    assert_eq!(p02.main_function().unwrap().block.outputs.len(), 3);

    let p04 = get("04_");
    let cat = p04.main_function().unwrap().producer("out").unwrap();
    assert!(matches!(cat.input("values"), Some(Argument::Tuple(v, _)) if v.len() == 6));

    let p09 = get("09_");
    let f = p09.main_function().unwrap();
    assert_eq!(f.producer("q_scale").unwrap().attribute("val"), Some(&Literal::fp16(0.125)));
    let w0 = f.producer("W0").unwrap();
    assert_eq!(w0.attribute("zero_point").unwrap().as_i64(), Some(0));
    assert_eq!(
        w0.attribute("quantized_data").unwrap().ty,
        Type::tensor(DType::Int8, [256, 256, 1, 1])
    );

    let p10 = get("10_");
    let mask = p10.main_function().unwrap().producer("mask").unwrap().attribute("val").unwrap();
    let values = mask.tensor_data().unwrap().to_f64_vec().unwrap();
    assert_eq!(values.len(), 64);
    assert_eq!((values[0], values[1], values[63]), (0.0, -65504.0, 0.0));
}

#[test]
fn older_forms_parse() {
    let text = r#"program(1.0)
[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"coremlc-version", "1436.100.10"}})]
{
    func main<ios15>(tensor<fp32, [1, 4]> x) {
        tensor<string, []> mode = const()[name = tensor<string, []>("mode"), val = tensor<string, []>("x")];
        tensor<bool, []> flag = const()[name = tensor<string, []>("flag"), val = tensor<bool, []>(true)];
        tensor<fp32, [1, 4]> y = relu(x = x)[name = tensor<string, []>("y")];
    } -> (y);
}
"#;
    let program = parse_or_panic("old.mil", text);
    assert_eq!(program.version, "1.0");
    let f = program.main_function().unwrap();
    let mode = f.producer("mode").unwrap();
    assert_eq!(mode.attribute("val"), Some(&Literal::string("x")));
    assert_eq!(mode.outputs[0].ty, Type::Scalar(DType::String));
    assert_eq!(f.producer("flag").unwrap().attribute("val"), Some(&Literal::bool(true)));
    let printed = print(&program);
    assert!(printed.starts_with("program(1.0)\n[buildInfo = dict<string, string>({{"));
    assert!(printed.contains("val = string(\"x\")"));
    assert_eq!(parse(&printed).unwrap(), program);
}

// Random programs.

const OPS: &[&str] = &["const", "cast", "conv", "add", "concat", "matmul", "reshape", "softmax"];

fn ident() -> impl Strategy<Value = Ident> {
    "[A-Za-z_][A-Za-z0-9_]{0,7}".prop_map(Ident::new)
}

fn dtype() -> impl Strategy<Value = DType> {
    select(DType::ALL.to_vec())
}

fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => any::<char>(),
        1 => select(vec!['"', '\\', '\n', '\t', '\r', '\0', 'é', '😀', '\u{7f}', '{', '}']),
    ];
    vec(c, 0..8).prop_map(|cs| cs.into_iter().collect())
}

/// Values that exercise rounding and the special cases, mixed with arbitrary bits.
fn f16_bits() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => any::<u16>(),
        1 => select(vec![
            0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0x3c01, 0x3bff, 0x7bff,
            0xfbff, 0x7c00, 0xfc00, 0x7e00, 0xfe00, 0x7c01, 0xfdff, 0x3000, 0x1e66,
        ]),
    ]
}

fn f32_bits() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => any::<u32>(),
        1 => select(vec![
            0.0f32.to_bits(), (-0.0f32).to_bits(), 1, 0x807f_ffff, f32::MAX.to_bits(),
            f32::MIN_POSITIVE.to_bits(), f32::INFINITY.to_bits(), f32::NEG_INFINITY.to_bits(),
            f32::NAN.to_bits(), 0xffc0_0001, 0.1f32.to_bits(), 65504.0f32.to_bits(),
        ]),
        // Hex-worthy: small integers scaled by powers of two.
        1 => (-64i32..64, -40i32..40).prop_map(|(m, e)| (m as f32 * 2f32.powi(e)).to_bits()),
    ]
}

fn f64_bits() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        1 => select(vec![
            0.0f64.to_bits(), (-0.0f64).to_bits(), 1, f64::MAX.to_bits(), f64::NAN.to_bits(),
            f64::INFINITY.to_bits(), 0x7ff0_0000_0000_0001, 0.1f64.to_bits(),
        ]),
        1 => (-64i32..64, -60i32..60).prop_map(|(m, e)| (m as f64 * 2f64.powi(e)).to_bits()),
    ]
}

/// `n` elements of `dtype` in the representation the parser stores.
fn elements(dtype: DType, n: usize) -> BoxedStrategy<TensorData> {
    match dtype {
        DType::Fp16 => vec(f16_bits(), n)
            .prop_map(|v| TensorData::F16(v.into_iter().map(f16::from_bits).collect()))
            .boxed(),
        DType::Bf16 => vec(f16_bits(), n)
            .prop_map(|v| TensorData::BF16(v.into_iter().map(bf16::from_bits).collect()))
            .boxed(),
        DType::Fp32 => vec(f32_bits(), n)
            .prop_map(|v| TensorData::F32(v.into_iter().map(f32::from_bits).collect()))
            .boxed(),
        DType::Fp64 => vec(f64_bits(), n)
            .prop_map(|v| TensorData::F64(v.into_iter().map(f64::from_bits).collect()))
            .boxed(),
        DType::Fp8E4M3 | DType::Fp8E5M2 => vec(any::<u8>(), n)
            .prop_map(|v| TensorData::UInt(v.into_iter().map(u64::from).collect()))
            .boxed(),
        DType::Bool => vec(any::<bool>(), n).prop_map(TensorData::Bool).boxed(),
        DType::String => vec(text(), n).prop_map(TensorData::Str).boxed(),
        d if d.is_signed_int() => {
            let (lo, hi) = d.int_range().unwrap();
            vec(lo as i64..=hi as i64, n).prop_map(TensorData::Int).boxed()
        }
        d => {
            let (_, hi) = d.int_range().unwrap();
            vec(0..=hi as u64, n).prop_map(TensorData::UInt).boxed()
        }
    }
}

/// A scalar or a small tensor (rank >= 1: a rank-0 tensor prints, and so parses, as a scalar).
fn data_type() -> impl Strategy<Value = Type> {
    prop_oneof![
        dtype().prop_map(Type::Scalar),
        (dtype(), vec(0usize..4, 1..=3)).prop_map(|(d, shape)| Type::tensor(d, shape)),
    ]
}

fn inline_literal(ty: Type) -> BoxedStrategy<Literal> {
    let n = ty.element_count().unwrap();
    elements(ty.dtype().unwrap(), n).prop_map(move |data| Literal::tensor(ty.clone(), data)).boxed()
}

fn blob_literal() -> impl Strategy<Value = Literal> {
    (dtype(), vec(1usize..5000, 1..=4), text(), any::<u64>())
        .prop_map(|(d, shape, path, offset)| Literal::blob(TensorType::new(d, shape), path, offset))
}

fn dict_literal() -> impl Strategy<Value = Literal> {
    (dtype(), data_type()).prop_flat_map(|(key_dtype, value_ty)| {
        let key_ty = Type::Scalar(key_dtype);
        let entry = (inline_literal(key_ty.clone()), inline_literal(value_ty.clone()));
        vec(entry, 0..3).prop_map(move |entries| {
            let ty = Type::Dict(Box::new(key_ty.clone()), Box::new(value_ty.clone()));
            Literal::new(ty, LiteralData::Dict(entries))
        })
    })
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        6 => data_type().prop_flat_map(inline_literal),
        1 => blob_literal(),
        1 => dict_literal(),
    ]
}

/// Any declared type, including large shapes (nothing is allocated for them) and dicts.
fn any_type() -> impl Strategy<Value = Type> {
    prop_oneof![
        dtype().prop_map(Type::Scalar),
        (dtype(), vec(0usize..100_000, 1..=5)).prop_map(|(d, shape)| Type::tensor(d, shape)),
        (dtype(), data_type())
            .prop_map(|(k, v)| Type::Dict(Box::new(Type::Scalar(k)), Box::new(v))),
    ]
}

fn typed_name() -> impl Strategy<Value = TypedName> {
    (any_type(), ident()).prop_map(|(ty, name)| TypedName { ty, name, ty_span: Span::NONE })
}

fn argument() -> impl Strategy<Value = Argument> {
    let leaf = prop_oneof![ident().prop_map(Argument::Var), literal().prop_map(Argument::Literal)];
    leaf.prop_recursive(3, 12, 4, |inner| {
        vec(inner, 0..4).prop_map(|items| Argument::Tuple(items, Span::NONE))
    })
}

fn named<T: std::fmt::Debug>(value: impl Strategy<Value = T>) -> impl Strategy<Value = Named<T>> {
    (ident(), value).prop_map(|(name, value)| Named { name, value })
}

fn operation() -> impl Strategy<Value = Operation> {
    (
        vec(typed_name(), 1..3),
        select(OPS),
        vec(named(argument()), 0..4),
        vec(named(literal()), 0..3),
    )
        .prop_map(|(outputs, op, inputs, attributes)| Operation {
            op: Ident::new(op),
            inputs,
            attributes,
            outputs,
            span: Span::NONE,
        })
}

fn function() -> impl Strategy<Value = Function> {
    let opset = select(vec!["ios15", "ios16", "ios17", "ios18"]).prop_map(Ident::new);
    (ident(), opset, vec(typed_name(), 0..3), vec(operation(), 0..4), vec(ident(), 0..3)).prop_map(
        |(name, opset, inputs, operations, outputs)| Function {
            name,
            opset,
            inputs,
            block: Block { operations, outputs },
            span: Span::NONE,
        },
    )
}

fn program() -> impl Strategy<Value = Program> {
    let version = select(vec!["1.0", "1.3", "1.4"]).prop_map(String::from);
    (version, vec(named(literal()), 0..2), vec(function(), 0..3))
        .prop_map(|(version, attributes, functions)| Program { version, attributes, functions })
}

fn assert_round_trip(program: &Program) -> Result<(), TestCaseError> {
    let text = print(program);
    let back = parse(&text).map_err(|d| {
        TestCaseError::fail(anemone_mil::diag::render(&d, "printed.mil", &text, false))
    })?;
    prop_assert_eq!(&back, program, "printed as:\n{}", text);
    prop_assert_eq!(print(&back), text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_programs_round_trip(p in program()) {
        assert_round_trip(&p)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Many more literals, each in a minimal program.
    #[test]
    fn random_literals_round_trip(value in literal()) {
        let op = Operation {
            op: Ident::new("const"),
            inputs: vec![],
            attributes: vec![Named::new("val", value)],
            outputs: vec![TypedName::new(Type::Scalar(DType::Fp16), "c")],
            span: Span::NONE,
        };
        let function = Function {
            name: Ident::new("main"),
            opset: Ident::new("ios18"),
            inputs: vec![],
            block: Block { operations: vec![op], outputs: vec![Ident::new("c")] },
            span: Span::NONE,
        };
        let program =
            Program { version: "1.3".into(), attributes: vec![], functions: vec![function] };
        assert_round_trip(&program)?;
    }
}
