//! Reading Core ML models: packages and bare model files built here with the protobuf types
//! (and a real MILBlob weight file) must import to exactly the IR the text parser makes of
//! the same program; everything out of scope or damaged must give one clear error, never a
//! panic.

use std::fs;
use std::path::{Path, PathBuf};

use anemone_mil::blob::{BlobWriter, ReadMode};
use anemone_mil::coreml::proto::{self, mil_spec};
use anemone_mil::coreml::{self, CoreMlError};
use anemone_mil::package::check_blob_refs;
use anemone_mil::{DType, text, validate};
use mil_spec::argument::{Binding, binding};
use mil_spec::{DataType, dimension, tensor_value, value, value::immediate_value, value_type};
use proptest::prelude::*;
use prost::Message;

const WEIGHT_PATH: &str = "@model_path/weights/weight.bin";

// ---------------------------------------------------------------------------------------
// Building protobuf models.

fn dims(shape: &[u64]) -> Vec<mil_spec::Dimension> {
    shape
        .iter()
        .map(|&size| mil_spec::Dimension {
            dimension: Some(dimension::Dimension::Constant(dimension::ConstantDimension { size })),
        })
        .collect()
}

fn tensor_type(dtype: DataType, shape: &[u64]) -> mil_spec::ValueType {
    mil_spec::ValueType {
        r#type: Some(value_type::Type::TensorType(mil_spec::TensorType {
            data_type: dtype as i32,
            rank: shape.len() as i64,
            dimensions: dims(shape),
            attributes: Default::default(),
        })),
    }
}

fn named(name: &str, ty: mil_spec::ValueType) -> mil_spec::NamedValueType {
    mil_spec::NamedValueType { name: name.to_string(), r#type: Some(ty) }
}

fn immediate(ty: mil_spec::ValueType, field: tensor_value::Value) -> mil_spec::Value {
    mil_spec::Value {
        doc_string: String::new(),
        r#type: Some(ty),
        value: Some(value::Value::ImmediateValue(value::ImmediateValue {
            value: Some(immediate_value::Value::Tensor(mil_spec::TensorValue {
                value: Some(field),
            })),
        })),
    }
}

fn string(s: &str) -> mil_spec::Value {
    immediate(
        tensor_type(DataType::String, &[]),
        tensor_value::Value::Strings(tensor_value::RepeatedStrings { values: vec![s.into()] }),
    )
}

fn boolean(b: bool) -> mil_spec::Value {
    immediate(
        tensor_type(DataType::Bool, &[]),
        tensor_value::Value::Bools(tensor_value::RepeatedBools { values: vec![b] }),
    )
}

fn blob_value(dtype: DataType, shape: &[u64], file: &str, offset: u64) -> mil_spec::Value {
    mil_spec::Value {
        doc_string: String::new(),
        r#type: Some(tensor_type(dtype, shape)),
        value: Some(value::Value::BlobFileValue(value::BlobFileValue {
            file_name: file.to_string(),
            offset,
        })),
    }
}

fn var(name: &str) -> Binding {
    Binding { binding: Some(binding::Binding::Name(name.to_string())) }
}

fn lit(v: mil_spec::Value) -> Binding {
    Binding { binding: Some(binding::Binding::Value(v)) }
}

/// An op with a `name` attribute equal to its first output's name.
fn op(
    op_type: &str,
    inputs: Vec<(&str, Vec<Binding>)>,
    outputs: Vec<mil_spec::NamedValueType>,
) -> mil_spec::Operation {
    let name = outputs.first().map(|o| o.name.clone()).unwrap_or_else(|| op_type.to_string());
    mil_spec::Operation {
        r#type: op_type.to_string(),
        inputs: inputs
            .into_iter()
            .map(|(k, b)| (k.to_string(), mil_spec::Argument { arguments: b }))
            .collect(),
        outputs,
        blocks: vec![],
        attributes: [("name".to_string(), string(&name))].into_iter().collect(),
    }
}

fn constant(name: &str, val: mil_spec::Value) -> mil_spec::Operation {
    let ty = val.r#type.clone().unwrap();
    let mut o = op("const", vec![], vec![named(name, ty)]);
    o.attributes.insert("val".to_string(), val);
    o
}

fn function(
    opset: &str,
    inputs: Vec<mil_spec::NamedValueType>,
    operations: Vec<mil_spec::Operation>,
    outputs: &[&str],
) -> mil_spec::Function {
    let block = mil_spec::Block {
        inputs: vec![],
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        operations,
        attributes: Default::default(),
    };
    mil_spec::Function {
        inputs,
        opset: opset.to_string(),
        block_specializations: [(opset.to_string(), block)].into_iter().collect(),
        attributes: Default::default(),
    }
}

fn array_feature(
    name: &str,
    dtype: proto::array_feature_type::ArrayDataType,
    shape: &[i64],
) -> proto::FeatureDescription {
    proto::FeatureDescription {
        name: name.to_string(),
        short_description: String::new(),
        r#type: Some(proto::FeatureType {
            is_optional: false,
            r#type: Some(proto::feature_type::Type::MultiArrayType(proto::ArrayFeatureType {
                shape: shape.to_vec(),
                data_type: dtype as i32,
                shape_flexibility: None,
                default_optional_value: None,
            })),
        }),
    }
}

fn model_of(
    functions: Vec<(&str, mil_spec::Function)>,
    inputs: Vec<proto::FeatureDescription>,
    outputs: Vec<proto::FeatureDescription>,
) -> proto::Model {
    proto::Model {
        specification_version: 9,
        description: Some(proto::ModelDescription {
            input: inputs,
            output: outputs,
            metadata: Some(proto::Metadata {
                author: "tests".into(),
                user_defined: [(coreml::COREMLTOOLS_VERSION_KEY.to_string(), "9.0".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        is_updatable: false,
        r#type: Some(proto::model::Type::MlProgram(mil_spec::Program {
            version: 1,
            functions: functions.into_iter().map(|(n, f)| (n.to_string(), f)).collect(),
            doc_string: String::new(),
            attributes: Default::default(),
        })),
    }
}

/// The program the main test model holds, as MIL text.
const EXPECTED: &str = r#"program(1.3)
{
    func main<ios18>(tensor<fp32, [1, 4]> x) {
        tensor<fp32, [1, 4]> c32 = const()[name = string("c32"), val = tensor<fp32, [1, 4]>([1, 2.5, -3, 4])];
        tensor<fp16, [4]> c16 = const()[name = string("c16"), val = tensor<fp16, [4]>([0.5, -1, 2, 65504])];
        int32 axis = const()[name = string("axis"), val = int32(1)];
        tensor<fp32, [4, 4]> w = const()[name = string("w"), val = tensor<fp32, [4, 4]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64)))];
        tensor<fp32, [1, 4]> y = add(x = x, y = c32)[name = string("y")];
        tensor<fp32, [1, 4]> z = matmul(x = y, y = w, transpose_x = bool(false), transpose_y = bool(false))[name = string("z")];
        tensor<fp32, [1, 8]> cat = concat(values = (z, y), axis = axis, interleave = bool(false))[name = string("cat")];
        tensor<fp32, [1, 4]> one = concat(values = (z), axis = axis)[name = string("one")];
        tensor<fp16, [4]> h = mul(x = c16, y = c16)[name = string("h")];
    } -> (cat, h, one);
    func extra<ios17>(tensor<fp16, [2]> a) {
        tensor<int8, [2]> q = const()[name = string("q"), val = tensor<int8, [2]>([-3, 7])];
        tensor<fp16, [2]> qf = cast(x = q, dtype = string("fp16"))[name = string("qf")];
        tensor<fp16, [2]> b = add(x = a, y = qf)[name = string("b")];
    } -> (b);
}
"#;

/// The weight file of the main test model: one fp32 [4, 4] blob at offset 64.
fn weight_file() -> Vec<u8> {
    let mut w = BlobWriter::new();
    let values: Vec<f32> = (0..16).map(|i| i as f32 * 0.25).collect();
    assert_eq!(w.add_f32(&values), 64);
    w.finish()
}

/// The main test model: `EXPECTED` as protobuf.
fn main_model() -> proto::Model {
    use proto::array_feature_type::ArrayDataType as A;
    let f32s = |v: &[f32]| {
        tensor_value::Value::Floats(tensor_value::RepeatedFloats { values: v.to_vec() })
    };
    let fp16_bytes: Vec<u8> = [0.5f32, -1.0, 2.0, 65504.0]
        .iter()
        .flat_map(|&v| anemone_mil::f16::from_f32(v).to_le_bytes())
        .collect();
    let t = tensor_type;
    let main = function(
        "CoreML8",
        vec![named("x", t(DataType::Float32, &[1, 4]))],
        vec![
            constant("c32", immediate(t(DataType::Float32, &[1, 4]), f32s(&[1.0, 2.5, -3.0, 4.0]))),
            constant(
                "c16",
                immediate(
                    t(DataType::Float16, &[4]),
                    tensor_value::Value::Bytes(tensor_value::RepeatedBytes { values: fp16_bytes }),
                ),
            ),
            constant(
                "axis",
                immediate(
                    t(DataType::Int32, &[]),
                    tensor_value::Value::Ints(tensor_value::RepeatedInts { values: vec![1] }),
                ),
            ),
            constant("w", blob_value(DataType::Float32, &[4, 4], WEIGHT_PATH, 64)),
            op(
                "add",
                vec![("y", vec![var("c32")]), ("x", vec![var("x")])],
                vec![named("y", t(DataType::Float32, &[1, 4]))],
            ),
            op(
                "matmul",
                vec![
                    ("transpose_y", vec![lit(boolean(false))]),
                    ("x", vec![var("y")]),
                    ("y", vec![var("w")]),
                    ("transpose_x", vec![lit(boolean(false))]),
                ],
                vec![named("z", t(DataType::Float32, &[1, 4]))],
            ),
            op(
                "concat",
                vec![
                    ("interleave", vec![lit(boolean(false))]),
                    ("values", vec![var("z"), var("y")]),
                    ("axis", vec![var("axis")]),
                ],
                vec![named("cat", t(DataType::Float32, &[1, 8]))],
            ),
            op(
                "concat",
                vec![("values", vec![var("z")]), ("axis", vec![var("axis")])],
                vec![named("one", t(DataType::Float32, &[1, 4]))],
            ),
            op(
                "mul",
                vec![("x", vec![var("c16")]), ("y", vec![var("c16")])],
                vec![named("h", t(DataType::Float16, &[4]))],
            ),
        ],
        &["cat", "h", "one"],
    );
    let extra = function(
        "CoreML7",
        vec![named("a", t(DataType::Float16, &[2]))],
        vec![
            constant(
                "q",
                immediate(
                    t(DataType::Int8, &[2]),
                    tensor_value::Value::Bytes(tensor_value::RepeatedBytes {
                        values: vec![(-3i8) as u8, 7],
                    }),
                ),
            ),
            op(
                "cast",
                vec![("x", vec![var("q")]), ("dtype", vec![lit(string("fp16"))])],
                vec![named("qf", t(DataType::Float16, &[2]))],
            ),
            op(
                "add",
                vec![("x", vec![var("a")]), ("y", vec![var("qf")])],
                vec![named("b", t(DataType::Float16, &[2]))],
            ),
        ],
        &["b"],
    );
    model_of(
        vec![("main", main), ("extra", extra)],
        vec![array_feature("x", A::Float32, &[1, 4])],
        vec![
            array_feature("cat", A::Float32, &[1, 8]),
            array_feature("h", A::Float16, &[4]),
            array_feature("one", A::Float32, &[1, 4]),
        ],
    )
}

/// A one-function model: `y = relu(x)` with `x` of type `input_ty`.
fn small_model(
    input_ty: mil_spec::ValueType,
    operations: Vec<mil_spec::Operation>,
) -> proto::Model {
    let main = function("CoreML8", vec![named("x", input_ty)], operations, &["y"]);
    model_of(vec![("main", main)], vec![], vec![])
}

fn relu() -> mil_spec::Operation {
    op("relu", vec![("x", vec![var("x")])], vec![named("y", tensor_type(DataType::Float16, &[4]))])
}

// ---------------------------------------------------------------------------------------
// Writing packages.

const MODEL_REL: &str = "com.apple.CoreML/model.mlmodel";

fn manifest_json(model_path: &str) -> String {
    format!(
        r#"{{
    "fileFormatVersion": "1.0.0",
    "itemInfoEntries": {{
        "A1B2": {{"author": "com.apple.CoreML", "description": "CoreML Model Specification", "name": "model.mlmodel", "path": "{model_path}"}},
        "C3D4": {{"author": "com.apple.CoreML", "description": "CoreML Model Weights", "name": "weights", "path": "com.apple.CoreML/weights"}}
    }},
    "rootModelIdentifier": "A1B2"
}}"#
    )
}

/// Writes `<root>/Model.mlpackage` as coremltools lays it out; returns its path.
fn write_package(root: &Path, model_bytes: &[u8], weights: Option<&[u8]>) -> PathBuf {
    let pkg = root.join("Model.mlpackage");
    let data = pkg.join("Data/com.apple.CoreML");
    fs::create_dir_all(data.join("weights")).unwrap();
    fs::write(pkg.join("Manifest.json"), manifest_json(MODEL_REL)).unwrap();
    fs::write(data.join("model.mlmodel"), model_bytes).unwrap();
    if let Some(w) = weights {
        fs::write(data.join("weights/weight.bin"), w).unwrap();
    }
    pkg
}

/// Writes a bare `model.mlmodel` (with `weights/` beside it); returns the file's path.
fn write_bare(root: &Path, model: &proto::Model) -> PathBuf {
    let file = root.join("model.mlmodel");
    fs::write(&file, model.encode_to_vec()).unwrap();
    file
}

fn read_err(path: &Path) -> CoreMlError {
    match coreml::read(path) {
        Ok(_) => panic!("{} was read, but should be refused", path.display()),
        Err(e) => e,
    }
}

/// An error for `model` written as a bare file.
fn model_err(model: &proto::Model) -> CoreMlError {
    let dir = tempfile::tempdir().unwrap();
    read_err(&write_bare(dir.path(), model))
}

// ---------------------------------------------------------------------------------------
// Reading what is well formed.

#[test]
fn a_package_imports_to_the_ir_the_text_parser_makes() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = write_package(dir.path(), &main_model().encode_to_vec(), Some(&weight_file()));
    assert!(coreml::is_coreml_path(&pkg));
    let model = coreml::read(&pkg).unwrap();

    let expected = text::parse(EXPECTED).unwrap();
    assert_eq!(model.program, expected, "imported:\n{}", text::print(&model.program));
    assert_eq!(text::parse(&text::print(&model.program)).unwrap(), model.program);
    assert_eq!(validate::validate(&model.program), vec![]);

    // The weights are the file on disk, under the exact BLOBFILE path, and the BLOBFILE
    // reference reads as the declared type.
    assert_eq!(model.weights.len(), 1);
    assert_eq!(model.weights.get(WEIGHT_PATH).unwrap().bytes(), &weight_file()[..]);
    assert!(check_blob_refs(&model.program, &model.weights, ReadMode::Strict).is_empty());

    let data = fs::canonicalize(pkg.join("Data/com.apple.CoreML")).unwrap();
    assert_eq!(model.model_dir, data);
    assert_eq!(model.model_file, data.join("model.mlmodel"));
    assert_eq!(model.source, pkg);
    assert_eq!(model.spec_version, 9);
    assert_eq!(model.metadata.converter_version(), Some("9.0"));
    assert_eq!(model.metadata.author, "tests");
    let names = |f: &[coreml::FeatureInfo]| f.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&model.inputs), ["x"]);
    assert_eq!(names(&model.outputs), ["cat", "h", "one"]);
    assert_eq!(model.inputs[0].shape, [1, 4]);
    assert_eq!(model.inputs[0].dtype, DType::Fp32);
    assert_eq!(model.outputs[1].dtype, DType::Fp16);
}

#[test]
fn a_bare_model_file_reads_its_weights_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("weights")).unwrap();
    fs::write(dir.path().join("weights/weight.bin"), weight_file()).unwrap();
    let file = write_bare(dir.path(), &main_model());
    assert!(coreml::is_coreml_path(&file));
    let model = coreml::read(&file).unwrap();
    assert_eq!(model.program, text::parse(EXPECTED).unwrap());
    assert_eq!(model.model_dir, fs::canonicalize(dir.path()).unwrap());
    assert_eq!(model.weights.get(WEIGHT_PATH).unwrap().bytes(), &weight_file()[..]);
}

#[test]
fn the_default_function_comes_first() {
    let mut model = main_model();
    model.description.as_mut().unwrap().default_function_name = "extra".into();
    // The description of a multi-function model lists features per function.
    let d = model.description.as_mut().unwrap();
    d.functions = vec![proto::FunctionDescription {
        name: "extra".into(),
        input: vec![array_feature("a", proto::array_feature_type::ArrayDataType::Float16, &[2])],
        output: vec![array_feature("b", proto::array_feature_type::ArrayDataType::Float16, &[2])],
        ..Default::default()
    }];
    let converted = coreml::convert(&model, Path::new("m.mlmodel")).unwrap();
    let order: Vec<&str> =
        converted.program.functions.iter().map(|f| f.name.name.as_str()).collect();
    assert_eq!(order, ["extra", "main"]);
    assert_eq!(converted.inputs[0].name, "a");
    assert_eq!(converted.program.functions[0].opset.name, "ios17");
}

#[test]
fn every_coreml_opset_has_a_text_name() {
    for (coreml_opset, text_opset) in coreml::OPSETS {
        let mut m = small_model(tensor_type(DataType::Float16, &[4]), vec![relu()]);
        let Some(proto::model::Type::MlProgram(p)) = &mut m.r#type else { unreachable!() };
        let f = p.functions.get_mut("main").unwrap();
        let block = f.block_specializations.remove("CoreML8").unwrap();
        f.block_specializations.insert(coreml_opset.to_string(), block);
        f.opset = coreml_opset.to_string();
        let converted = coreml::convert(&m, Path::new("m")).unwrap();
        assert_eq!(converted.program.functions[0].opset.name, text_opset);
    }
}

#[test]
fn unknown_fields_and_unused_model_kinds_are_skipped() {
    // A field this reader does not declare (999) is skipped, as protobuf requires.
    let mut bytes = main_model().encode_to_vec();
    bytes.extend([0xba, 0x3e, 3, b'a', b'b', b'c']); // field 999, length-delimited
    let model = coreml::decode_model(&bytes).unwrap();
    assert_eq!(model, main_model());
}

// ---------------------------------------------------------------------------------------
// Refusing what is out of scope, each with one error that says what and where.

#[test]
fn neural_network_models_are_refused_with_the_conversion_to_use() {
    // The content of the neural network (here a layer list, field 1) is skipped.
    let mut m = proto::Model { specification_version: 4, ..Default::default() };
    m.r#type = Some(proto::model::Type::NeuralNetwork(Default::default()));
    let mut bytes = m.encode_to_vec();
    bytes.truncate(bytes.len() - 3); // drop the empty field 500: key 0xa2 0x1f, length 0
    bytes.extend([0xa2, 0x1f, 4, 0x0a, 2, b'h', b'i']);
    assert!(matches!(
        coreml::decode_model(&bytes).unwrap().r#type,
        Some(proto::model::Type::NeuralNetwork(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nn.mlmodel");
    fs::write(&file, &bytes).unwrap();
    let e = read_err(&file);
    assert_eq!(e.code(), "coreml::not-ml-program");
    let msg = e.to_string();
    assert!(
        msg.contains(
            "neuralNetwork model, not an ML Program: convert with convert_to=\"mlprogram\""
        ),
        "{msg}"
    );
    assert!(msg.starts_with(&fs::canonicalize(&file).unwrap().display().to_string()), "{msg}");

    m.r#type = Some(proto::model::Type::NeuralNetworkClassifier(Default::default()));
    assert!(model_err(&m).to_string().contains("neuralNetworkClassifier model"));
}

#[test]
fn pipelines_are_refused() {
    for (t, kind) in [
        (proto::model::Type::Pipeline(Default::default()), "pipeline model"),
        (proto::model::Type::PipelineClassifier(Default::default()), "pipelineClassifier model"),
        (proto::model::Type::PipelineRegressor(Default::default()), "pipelineRegressor model"),
    ] {
        let m = proto::Model { r#type: Some(t), ..Default::default() };
        let e = model_err(&m);
        assert_eq!(e.code(), "coreml::not-ml-program");
        assert!(
            e.to_string().contains(kind) && e.to_string().contains("not a single ML Program"),
            "{e}"
        );
    }
    let e = model_err(&proto::Model::default());
    assert!(e.to_string().contains("no model type is set"), "{e}");
}

#[test]
fn control_flow_is_refused_naming_the_op() {
    let mut cond = op(
        "cond",
        vec![("pred", vec![var("x")])],
        vec![named("y", tensor_type(DataType::Float16, &[4]))],
    );
    cond.blocks = vec![mil_spec::Block::default(), mil_spec::Block::default()];
    let e = model_err(&small_model(tensor_type(DataType::Float16, &[4]), vec![cond]));
    assert_eq!(e.code(), "coreml::control-flow");
    let msg = e.to_string();
    assert!(msg.contains("function main, op cond \"y\""), "{msg}");
    assert!(msg.contains("2 nested block(s)") && msg.contains("control flow"), "{msg}");
}

#[test]
fn state_is_refused() {
    let read_state = op(
        "read_state",
        vec![("input", vec![var("x")])],
        vec![named("y", tensor_type(DataType::Float16, &[4]))],
    );
    let e = model_err(&small_model(tensor_type(DataType::Float16, &[4]), vec![read_state]));
    assert_eq!(e.code(), "coreml::state");
    assert!(e.to_string().contains("op read_state \"y\""), "{e}");

    let state_ty = mil_spec::ValueType {
        r#type: Some(value_type::Type::StateType(Box::new(mil_spec::StateType {
            wrapped_type: Some(Box::new(tensor_type(DataType::Float16, &[4]))),
        }))),
    };
    let e = model_err(&small_model(state_ty, vec![relu()]));
    assert_eq!(e.code(), "coreml::state");
    assert!(e.to_string().contains("function main, input x"), "{e}");
}

#[test]
fn unknown_ops_are_all_named_in_one_error() {
    let t = || tensor_type(DataType::Float16, &[4]);
    let ops = vec![
        op("made_up", vec![("x", vec![var("x")])], vec![named("l0", t())]),
        op("not_an_op", vec![("x", vec![var("l0")])], vec![named("g", t())]),
        op("made_up", vec![("x", vec![var("g")])], vec![named("l1", t())]),
        op("relu", vec![("x", vec![var("l1")])], vec![named("y", t())]),
    ];
    let e = model_err(&small_model(t(), ops));
    assert_eq!(e.code(), "coreml::unknown-ops");
    let CoreMlError::UnknownOps { ops, .. } = &e else { panic!("{e}") };
    let listed: Vec<(&str, Option<&str>)> =
        ops.iter().map(|u| (u.op.as_str(), u.name.as_deref())).collect();
    assert_eq!(listed, [("made_up", Some("l0")), ("not_an_op", Some("g"))]);
    let msg = e.to_string();
    assert!(
        msg.contains(
            "made_up (first in function main, op \"l0\"), not_an_op (first in function main, op \"g\")"
        ),
        "{msg}"
    );
    assert!(msg.contains("It supports const, cast, conv"), "{msg}");
}

#[test]
fn flexible_shapes_are_refused() {
    let mut ty = tensor_type(DataType::Float16, &[1, 4]);
    let Some(value_type::Type::TensorType(t)) = &mut ty.r#type else { unreachable!() };
    t.dimensions[1].dimension =
        Some(dimension::Dimension::Unknown(dimension::UnknownDimension { variadic: false }));
    let e = model_err(&small_model(ty, vec![relu()]));
    assert_eq!(e.code(), "coreml::flexible-shape");
    assert!(
        e.to_string().contains(
            "function main: input x has a flexible dimension 1; anemone needs fixed shapes"
        ),
        "{e}"
    );

    // A description with a shape range is refused too.
    let mut m = small_model(tensor_type(DataType::Float16, &[4]), vec![relu()]);
    let mut f = array_feature("x", proto::array_feature_type::ArrayDataType::Float16, &[4]);
    let Some(proto::feature_type::Type::MultiArrayType(a)) = &mut f.r#type.as_mut().unwrap().r#type
    else {
        unreachable!()
    };
    a.shape_flexibility =
        Some(proto::array_feature_type::ShapeFlexibility::ShapeRange(Default::default()));
    m.description.as_mut().unwrap().input = vec![f];
    let e = model_err(&m);
    assert_eq!(e.code(), "coreml::flexible-shape");
    assert!(e.to_string().contains("input x has a flexible shape (a shape range)"), "{e}");
}

#[test]
fn image_inputs_and_list_types_are_refused() {
    let mut m = small_model(tensor_type(DataType::Float16, &[4]), vec![relu()]);
    m.description.as_mut().unwrap().input = vec![proto::FeatureDescription {
        name: "x".into(),
        short_description: String::new(),
        r#type: Some(proto::FeatureType {
            is_optional: false,
            r#type: Some(proto::feature_type::Type::ImageType(Default::default())),
        }),
    }];
    let e = model_err(&m);
    assert_eq!(e.code(), "coreml::unsupported-feature");
    assert!(e.to_string().contains("input x is an image"), "{e}");

    let list = mil_spec::ValueType {
        r#type: Some(value_type::Type::ListType(Box::new(mil_spec::ListType {
            r#type: Some(Box::new(tensor_type(DataType::Float16, &[4]))),
            length: None,
        }))),
    };
    let e = model_err(&small_model(list, vec![relu()]));
    assert_eq!(e.code(), "coreml::unsupported-type");
    assert!(e.to_string().contains("input x is a list"), "{e}");
}

#[test]
fn names_that_mil_text_cannot_hold_are_refused() {
    let ops = vec![op(
        "relu",
        vec![("x", vec![var("x")])],
        vec![named("y.1", tensor_type(DataType::Float16, &[4]))],
    )];
    let e = model_err(&small_model(tensor_type(DataType::Float16, &[4]), ops));
    assert_eq!(e.code(), "coreml::bad-name");
    assert!(e.to_string().contains("output \"y.1\" is not a MIL identifier"), "{e}");
}

#[test]
fn immediate_values_must_fill_their_shape() {
    let short = immediate(
        tensor_type(DataType::Float16, &[4]),
        tensor_value::Value::Bytes(tensor_value::RepeatedBytes { values: vec![0; 6] }),
    );
    let ops = vec![constant("c", short), relu()];
    let e = model_err(&small_model(tensor_type(DataType::Float16, &[4]), ops));
    assert_eq!(e.code(), "coreml::malformed");
    let msg = e.to_string();
    assert!(msg.contains("op const \"c\": attribute val is tensor<fp16, [4]>"), "{msg}");
    assert!(msg.contains("holds 6 bytes"), "{msg}");

    // A declared shape far larger than the data is refused without allocating for it.
    let huge = immediate(
        tensor_type(DataType::Float32, &[1 << 40, 1 << 20]),
        tensor_value::Value::Floats(tensor_value::RepeatedFloats { values: vec![1.0] }),
    );
    let e = model_err(&small_model(
        tensor_type(DataType::Float16, &[4]),
        vec![constant("c", huge), relu()],
    ));
    assert_eq!(e.code(), "coreml::malformed");
}

// ---------------------------------------------------------------------------------------
// Packages and weight files.

#[test]
fn manifest_paths_must_stay_inside_the_package() {
    let bytes = main_model().encode_to_vec();
    for (entry, expected) in [
        ("../outside.mlmodel", "contains a `..` component"),
        ("com.apple.CoreML/../../../x.mlmodel", "contains a `..` component"),
        ("/etc/passwd", "is an absolute path"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pkg = write_package(dir.path(), &bytes, Some(&weight_file()));
        fs::write(dir.path().join("outside.mlmodel"), &bytes).unwrap();
        fs::write(pkg.join("Manifest.json"), manifest_json(entry)).unwrap();
        let e = read_err(&pkg);
        assert_eq!(e.code(), "coreml::manifest-escape", "{entry}: {e}");
        assert!(e.to_string().contains(expected) && e.to_string().contains(entry), "{e}");
    }

    // A symlink inside the package that leads out of it.
    let dir = tempfile::tempdir().unwrap();
    let pkg = write_package(dir.path(), &bytes, Some(&weight_file()));
    let outside = dir.path().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("model.mlmodel"), &bytes).unwrap();
    std::os::unix::fs::symlink(&outside, pkg.join("Data/linked")).unwrap();
    fs::write(pkg.join("Manifest.json"), manifest_json("linked/model.mlmodel")).unwrap();
    let e = read_err(&pkg);
    assert_eq!(e.code(), "coreml::manifest-escape");
    assert!(e.to_string().contains("through a symlink"), "{e}");

    // A symlink that stays inside is followed.
    fs::remove_file(pkg.join("Data/linked")).unwrap();
    std::os::unix::fs::symlink("com.apple.CoreML", pkg.join("Data/linked")).unwrap();
    assert!(coreml::read(&pkg).is_ok());
}

#[test]
fn a_missing_or_garbled_manifest_is_a_clear_error() {
    let bytes = main_model().encode_to_vec();
    let dir = tempfile::tempdir().unwrap();
    let pkg = write_package(dir.path(), &bytes, Some(&weight_file()));

    fs::write(pkg.join("Manifest.json"), "{ \"rootModelIdentifier\": ").unwrap();
    let e = read_err(&pkg);
    assert_eq!(e.code(), "coreml::manifest");
    assert!(e.to_string().contains("Manifest.json: not valid JSON"), "{e}");

    fs::write(pkg.join("Manifest.json"), r#"{"rootModelIdentifier": "X", "itemInfoEntries": {}}"#)
        .unwrap();
    let e = read_err(&pkg);
    assert!(e.to_string().contains("has no entry \"X\""), "{e}");

    fs::write(pkg.join("Manifest.json"), manifest_json("com.apple.CoreML/missing.mlmodel"))
        .unwrap();
    let e = read_err(&pkg);
    assert_eq!(e.code(), "coreml::manifest");
    assert!(e.to_string().contains("there is no file at"), "{e}");

    fs::remove_file(pkg.join("Manifest.json")).unwrap();
    let e = read_err(&pkg);
    assert_eq!(e.code(), "coreml::manifest");
    assert!(e.to_string().contains("no Manifest.json"), "{e}");
    assert!(!coreml::is_coreml_path(dir.path()));

    // A compiled model directory is named for what it is.
    let compiled = dir.path().join("Model.mlmodelc");
    fs::create_dir(&compiled).unwrap();
    fs::write(compiled.join("model.mil"), "program(1.3)\n{\n}\n").unwrap();
    let e = read_err(&compiled);
    assert_eq!(e.code(), "coreml::not-a-model");
    assert!(e.to_string().contains(".mlmodelc"), "{e}");
}

#[test]
fn a_missing_weight_file_names_the_op_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = write_package(dir.path(), &main_model().encode_to_vec(), None);
    let e = read_err(&pkg);
    assert_eq!(e.code(), "coreml::weights");
    let msg = e.to_string();
    assert!(msg.contains("function main, op const \"w\""), "{msg}");
    assert!(msg.contains(WEIGHT_PATH) && msg.contains("no file at"), "{msg}");
}

#[test]
fn weight_paths_must_stay_inside_the_model_directory() {
    let bad =
        constant("w", blob_value(DataType::Float16, &[4], "@model_path/../../../secret.bin", 64));
    let m = small_model(tensor_type(DataType::Float16, &[4]), vec![bad, relu()]);
    let dir = tempfile::tempdir().unwrap();
    let pkg = write_package(dir.path(), &m.encode_to_vec(), None);
    fs::write(pkg.join("Data/secret.bin"), weight_file()).unwrap();
    let e = read_err(&pkg);
    assert_eq!(e.code(), "coreml::weights");
    assert!(e.to_string().contains("`..`") && e.to_string().contains("op const \"w\""), "{e}");
}

// ---------------------------------------------------------------------------------------
// Damaged files.

#[test]
fn every_truncation_of_a_model_file_is_an_error() {
    let bytes = main_model().encode_to_vec();
    let dir = tempfile::tempdir().unwrap();
    let pkg = write_package(dir.path(), &bytes, Some(&weight_file()));
    let file = pkg.join("Data/com.apple.CoreML/model.mlmodel");
    for len in 0..bytes.len() {
        fs::write(&file, &bytes[..len]).unwrap();
        assert!(
            coreml::read(&pkg).is_err(),
            "a file cut to {len} of {} bytes was read",
            bytes.len()
        );
    }
    fs::write(&file, &bytes).unwrap();
    assert!(coreml::read(&pkg).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flipped_bytes_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = main_model().encode_to_vec();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        let converted = coreml::decode_model(&bytes)
            .ok()
            .and_then(|model| coreml::convert(&model, Path::new("flipped.mlmodel")).ok());
        if let Some(converted) = converted {
            // Whatever is accepted prints as text that parses back to it.
            let printed = text::print(&converted.program);
            prop_assert_eq!(text::parse(&printed).ok(), Some(converted.program));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real models written by coremltools, when the repository has them.

/// Every Core ML model under `dir`, a few levels deep (not looking inside models).
fn find_models(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if coreml::is_coreml_path(&path) {
            out.push(path);
        } else if depth > 0 && path.is_dir() {
            find_models(&path, depth - 1, out);
        }
    }
}

#[test]
fn coremltools_models_in_the_repository_read_and_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml");
    let mut paths = Vec::new();
    find_models(&root, 3, &mut paths);
    paths.sort();
    assert!(paths.len() >= 12, "the fixture packages are missing from {}", root.display());
    for path in paths {
        let model = coreml::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let errors: Vec<_> =
            validate::validate(&model.program).into_iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        assert_eq!(text::parse(&text::print(&model.program)).unwrap(), model.program);
        let blob_errors: Vec<_> = check_blob_refs(&model.program, &model.weights, ReadMode::Strict)
            .into_iter()
            .filter(|d| d.is_error())
            .collect();
        assert!(blob_errors.is_empty(), "{}: {blob_errors:?}", path.display());
        // The description and the program agree on the inputs' shapes and types.
        let main = &model.program.functions[0];
        for f in &model.inputs {
            let ty = main.value_type(&f.name).unwrap();
            assert_eq!(ty.shape(), Some(&f.shape[..]), "{}: input {}", path.display(), f.name);
            assert_eq!(ty.dtype(), Some(f.dtype), "{}: input {}", path.display(), f.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Large weights are mapped, not copied.

/// Counts the bytes the current thread allocates while `COUNTING` is set on it, so that
/// tests running in parallel on other threads do not disturb the count.
struct CountingAlloc;

thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static ALLOCATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the thread-locals are
// const-initialized without destructors, so touching them never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATED.with(|a| a.set(a.get() + new));
        }
        // SAFETY: as for `alloc`; `ptr` and `layout` come from this allocator.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn a_100_mb_weight_package_is_read_without_copying_its_weights() {
    // linear 1024 -> 49152 in fp16: 100.7 MB of weights.
    let (rows, cols) = (49152u64, 1024u64);
    let mut w = BlobWriter::with_capacity((rows * cols * 2 + 256) as usize);
    let values = vec![half::f16::from_f32(0.5); (rows * cols) as usize];
    assert_eq!(w.add_f16(&values), 64);
    drop(values);
    let weights = w.finish();
    let weight_bytes = weights.len();
    assert!(weight_bytes > 100_000_000);
    let main = function(
        "CoreML8",
        vec![named("x", tensor_type(DataType::Float16, &[1, cols]))],
        vec![
            constant("w", blob_value(DataType::Float16, &[rows, cols], WEIGHT_PATH, 64)),
            op(
                "linear",
                vec![("x", vec![var("x")]), ("weight", vec![var("w")])],
                vec![named("y", tensor_type(DataType::Float16, &[1, rows]))],
            ),
        ],
        &["y"],
    );
    let model = model_of(vec![("main", main)], vec![], vec![]);
    let dir = tempfile::tempdir().unwrap();
    let pkg = write_package(dir.path(), &model.encode_to_vec(), Some(&weights));
    drop(weights);

    COUNTING.with(|c| c.set(true));
    let read = coreml::read(&pkg);
    COUNTING.with(|c| c.set(false));
    let allocated = ALLOCATED.with(|a| a.get());
    let model = read.unwrap();
    let file = model.weights.get(WEIGHT_PATH).unwrap();
    assert_eq!(file.len() as usize, weight_bytes);
    // Everything the read allocated is a small fraction of the weights: the file is mapped.
    assert!(
        allocated < weight_bytes / 100,
        "reading allocated {allocated} bytes for {weight_bytes} bytes of weights"
    );
    let errors: Vec<_> =
        validate::validate(&model.program).into_iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    eprintln!("read a {weight_bytes}-byte weight package allocating {allocated} bytes");
}
