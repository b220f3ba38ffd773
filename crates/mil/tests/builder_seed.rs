//! The seed experiment's program, rebuilt with the typed builder: fp32 x -> cast fp16 ->
//! 1x1 conv (64x64, weight from a BLOBFILE at offset 64) -> cast fp32, spatial 32. The text
//! it prints must parse back to the same program, validate, and carry the same shape as
//! fixture 01; its weight file must read back bit for bit.

use anemone_mil::blob::ReadMode;
use anemone_mil::builder::{Builder, ConvOptions};
use anemone_mil::package::ModelDir;
use anemone_mil::{DType, TensorType, f16, text, validate};

const CH: usize = 64;
const SP: usize = 32;

fn identity(scale: f32) -> Vec<f32> {
    (0..CH * CH).map(|i| if i / CH == i % CH { scale } else { 0.0 }).collect()
}

fn seed_program() -> anemone_mil::builder::BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, CH, 1, SP]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let w = f.weight("W", TensorType::new(DType::Fp16, [CH, CH, 1, 1]), &identity(1.0)).unwrap();
    let y16 = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
    let y = f.cast(&y16, DType::Fp32).unwrap();
    f.output(&y);
    f.finish();
    b.build().unwrap()
}

#[test]
fn the_seed_program_prints_parses_and_validates() {
    let built = seed_program();
    let text = built.text();
    let parsed = text::parse(&text).unwrap_or_else(|d| panic!("{}\n{text}", d.message));
    assert_eq!(parsed, built.program);
    assert!(validate::validate(&parsed).is_empty());
    assert!(
        text.contains(
            "BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(64))"
        ),
        "{text}"
    );
    assert!(
        text.starts_with(
            "program(1.3)\n[buildInfo = dict<string, string>({{\"coremlc-component-MIL\""
        ),
        "{text}"
    );
    let f = parsed.main_function().unwrap();
    assert_eq!(f.inputs[0].ty.to_string(), "tensor<fp32, [1, 64, 1, 32]>");
    let out = &f.block.outputs[0].name;
    assert_eq!(f.value_type(out).unwrap().to_string(), "tensor<fp32, [1, 64, 1, 32]>");
}

#[test]
fn the_seed_model_directory_checks_clean_and_its_weights_read_back() {
    let built = seed_program();
    let dir = tempfile::tempdir().unwrap();
    let model = built.write_model_dir(dir.path()).unwrap();
    let text = model.read_mil().unwrap();
    let program = text::parse(&text).unwrap();
    let diags =
        anemone_mil::check(&program, Some(&ModelDir::open(dir.path()).unwrap()), ReadMode::Strict);
    assert!(diags.is_empty(), "{diags:#?}");
    let weights = model.load_weights(&program).unwrap();
    let (blob, ty, _) = program.blob_refs()[0];
    let bytes = weights.read(blob, &ty.as_tensor().unwrap(), ReadMode::Strict).unwrap();
    let values: Vec<f32> =
        bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    assert_eq!(values, identity(1.0));
}

#[test]
fn builder_errors_name_the_op_and_the_shapes() {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp16, [1, 64, 1, 32]));
    let w = f.weight("W", TensorType::new(DType::Fp16, [8, 96, 1, 1]), &vec![0.0; 8 * 96]).unwrap();
    let e = f.conv(&x, &w, &ConvOptions::default()).unwrap_err().to_string();
    assert!(e.starts_with("conv `conv`"), "{e}");
    assert!(e.contains("96") && e.contains("64"), "{e}");
    let e = f.weight("V", TensorType::new(DType::Fp16, [2, 2]), &[1.0]).unwrap_err().to_string();
    assert!(e.contains("needs 4 values, got 1"), "{e}");
}

#[test]
fn renamed_values_are_renamed_everywhere_and_stale_handles_are_refused() {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp16, [1, 4, 1, 16]));
    let r = f.unary(anemone_mil::ops::OpKind::Relu, &x).unwrap();
    let y = f.output_named(&r, "y").unwrap();
    assert_eq!(y.name(), "y");
    let e = f.unary(anemone_mil::ops::OpKind::Relu, &r).unwrap_err().to_string();
    assert!(e.contains("`relu` is not defined in this function"), "{e}");
    assert!(f.rename(&y, "x").is_err(), "x is taken");
    assert!(f.rename(&y, "not an identifier").is_err());
    let z = f.unary(anemone_mil::ops::OpKind::Sigmoid, &y).unwrap();
    f.output(&z);
    f.finish();
    let built = b.build().unwrap();
    let text = built.text();
    assert!(text.contains("> y = relu(x = x)") && text.contains("sigmoid(x = y)"), "{text}");
    assert!(text.contains("} -> (y, sigmoid);"), "{text}");
    // The op's `name` follows the renamed result.
    assert!(text.contains("relu(x = x)[name = string(\"y\")]"), "{text}");
}

#[test]
fn a_failed_op_leaves_nothing_behind() {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp16, [1, 4]));
    let axis = anemone_mil::Literal::int32(9);
    let e = f.op1(
        anemone_mil::ops::OpKind::Softmax,
        "sm",
        &[("x", (&x).into()), ("axis", axis.into())],
    );
    assert!(e.is_err());
    let y = f.softmax(&x, -1).unwrap();
    f.output(&y);
    f.finish();
    let text = b.build().unwrap().text();
    assert!(!text.contains("int32(9)"), "{text}");
}
