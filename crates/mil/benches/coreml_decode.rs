//! Protobuf decode time of Core ML model files: every `model.mlmodel` under
//! `crates/anemone/tests/coreml/` (models written by coremltools), and a synthetic ML Program
//! of 2,000 ops with 2 MB of inline fp16 constants. Each line gives the median time of one
//! decode, the throughput, and the time of decode plus conversion to the IR. Run with
//! `cargo bench -p anemone-mil --bench coreml_decode`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anemone_mil::coreml::{self, proto, proto::mil_spec};
use mil_spec::{DataType, argument, dimension, tensor_value, value, value_type};
use prost::Message;

/// Time spent timing each model, whatever its size.
const BUDGET: Duration = Duration::from_millis(400);

/// The median of timed calls of `f`, as many as fit the budget (at least 5).
fn median(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(1));
    let runs = (BUDGET.as_nanos() / once.as_nanos()).clamp(5, 20_000) as usize;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn find_model_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.is_dir() {
            find_model_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "mlmodel") {
            out.push(path);
        }
    }
}

fn tensor(dtype: DataType, shape: &[u64]) -> mil_spec::ValueType {
    let dimensions = shape
        .iter()
        .map(|&size| mil_spec::Dimension {
            dimension: Some(dimension::Dimension::Constant(dimension::ConstantDimension { size })),
        })
        .collect();
    mil_spec::ValueType {
        r#type: Some(value_type::Type::TensorType(mil_spec::TensorType {
            data_type: dtype as i32,
            rank: shape.len() as i64,
            dimensions,
            attributes: Default::default(),
        })),
    }
}

fn immediate(ty: mil_spec::ValueType, field: tensor_value::Value) -> mil_spec::Value {
    mil_spec::Value {
        doc_string: String::new(),
        r#type: Some(ty),
        value: Some(value::Value::ImmediateValue(value::ImmediateValue {
            value: Some(value::immediate_value::Value::Tensor(mil_spec::TensorValue {
                value: Some(field),
            })),
        })),
    }
}

fn name_attr(name: &str) -> (String, mil_spec::Value) {
    let strings = tensor_value::RepeatedStrings { values: vec![name.to_string()] };
    let value = immediate(tensor(DataType::String, &[]), tensor_value::Value::Strings(strings));
    ("name".to_string(), value)
}

/// A chain of 1,000 (const, add) pairs on a [1, 1024] fp16 activation.
fn synthetic() -> proto::Model {
    const WIDTH: u64 = 1024;
    let mut operations = Vec::new();
    let mut prev = "x".to_string();
    for i in 0..1000 {
        let (c, y) = (format!("c{i}"), format!("y{i}"));
        let bytes: Vec<u8> =
            (0..WIDTH).flat_map(|j| ((i * 7 + j as usize) as u16).to_le_bytes()).collect();
        let val = immediate(
            tensor(DataType::Float16, &[1, WIDTH]),
            tensor_value::Value::Bytes(tensor_value::RepeatedBytes { values: bytes }),
        );
        operations.push(mil_spec::Operation {
            r#type: "const".into(),
            outputs: vec![mil_spec::NamedValueType {
                name: c.clone(),
                r#type: Some(tensor(DataType::Float16, &[1, WIDTH])),
            }],
            attributes: [name_attr(&c), ("val".to_string(), val)].into_iter().collect(),
            ..Default::default()
        });
        let bind = |n: &str| mil_spec::Argument {
            arguments: vec![argument::Binding {
                binding: Some(argument::binding::Binding::Name(n.to_string())),
            }],
        };
        operations.push(mil_spec::Operation {
            r#type: "add".into(),
            inputs: [("x".to_string(), bind(&prev)), ("y".to_string(), bind(&c))]
                .into_iter()
                .collect(),
            outputs: vec![mil_spec::NamedValueType {
                name: y.clone(),
                r#type: Some(tensor(DataType::Float16, &[1, WIDTH])),
            }],
            attributes: [name_attr(&y)].into_iter().collect(),
            ..Default::default()
        });
        prev = y;
    }
    let block = mil_spec::Block { outputs: vec![prev], operations, ..Default::default() };
    let main = mil_spec::Function {
        inputs: vec![mil_spec::NamedValueType {
            name: "x".into(),
            r#type: Some(tensor(DataType::Float16, &[1, WIDTH])),
        }],
        opset: "CoreML8".into(),
        block_specializations: [("CoreML8".to_string(), block)].into_iter().collect(),
        attributes: Default::default(),
    };
    proto::Model {
        specification_version: 9,
        r#type: Some(proto::model::Type::MlProgram(mil_spec::Program {
            version: 1,
            functions: [("main".to_string(), main)].into_iter().collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn report(what: &str, bytes: &[u8]) {
    let decode = median(|| drop(black_box(coreml::decode_model(black_box(bytes)))));
    let both = median(|| {
        let model = coreml::decode_model(black_box(bytes)).unwrap();
        drop(black_box(coreml::convert(&model, Path::new(what))));
    });
    let mb_s = bytes.len() as f64 / decode.as_secs_f64() / 1e6;
    println!(
        "{what:<36} {:>9} B  decode {:>9.1} us  {mb_s:>7.0} MB/s  decode+convert {:>9.1} us",
        bytes.len(),
        decode.as_secs_f64() * 1e6,
        both.as_secs_f64() * 1e6,
    );
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml");
    let mut files = Vec::new();
    find_model_files(&root, &mut files);
    files.sort();
    println!("coreml_decode: median decode time per model file");
    if files.is_empty() {
        println!("(no model files under {})", root.display());
    }
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else { continue };
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        let shown = shown.split('/').next().unwrap_or(&shown).to_string();
        report(&shown, &bytes);
    }
    report("synthetic (2000 ops, 2 MB inline)", &synthetic().encode_to_vec());
}
