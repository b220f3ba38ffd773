//! Core ML models: reading the ML Programs that coremltools writes (`.mlpackage` directories
//! and bare `.mlmodel` files) straight into the MIL IR, with their weight files mapped into
//! memory.
//!
//! ```no_run
//! use std::path::Path;
//! let model = anemone_mil::coreml::read(Path::new("Model.mlpackage")).unwrap();
//! assert!(anemone_mil::validate::validate(&model.program).is_empty());
//! println!("{}", anemone_mil::text::print(&model.program));
//! ```
//!
//! This module owns the protobuf format ([`proto`], generated from Apple's definitions at
//! build time), the package layout (`Manifest.json`), and the mapping from ML Program protobuf
//! to IR. The imported program is what the text parser would produce for the same program:
//! printing it and parsing the text again gives an equal [`Program`]. Its details:
//!
//! - the model's default function (`main`) comes first, the others after it by name;
//! - opsets `CoreML5`..`CoreML9` become `ios15`, `ios16`, `ios17`, `ios18`, `ios26`;
//! - op inputs follow the op's signature order, attributes start with `name`; an input with
//!   several values, or one the op declares variadic (concat's `values`), is a tuple;
//! - a `blobFileValue` becomes a BLOBFILE literal with the file name as written
//!   (`@model_path/weights/weight.bin`), and [`CoreMlModel::weights`] holds that file under
//!   the same string.
//!
//! Refused, each with one error that names the file and the place: models that are not ML
//! Programs (neural networks, pipelines, ...), control flow (ops with nested blocks), state,
//! op types that anemone does not know (all of them in one message), flexible shapes, list,
//! tuple and image types, and names that MIL text cannot hold. No input makes it panic:
//! truncated or corrupt files give [`CoreMlError::Decode`] or another error, and nothing is
//! allocated by a declared size before the data is there.

mod convert;
mod description;
mod error;
mod manifest;
pub mod proto;
mod value;

use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;

pub use convert::OPSETS;
pub use description::{COREMLTOOLS_VERSION_KEY, FeatureInfo, ModelMetadata};
pub use error::{CoreMlError, UnknownOp};
pub use manifest::{DATA_DIR, MANIFEST_FILE};

use crate::blob::{BlobError, BlobFile};
use crate::ir::Program;
use crate::package::{ModelDir, PackageError, Weights};

/// The function Core ML runs when the description names no other.
const DEFAULT_FUNCTION: &str = "main";

/// A Core ML ML Program read into the IR, with its weight files.
#[derive(Clone, Debug)]
pub struct CoreMlModel {
    /// The program; its first function is the model's default function.
    pub program: Program,
    /// Every weight file a BLOBFILE literal of the program names, memory-mapped, keyed by
    /// the path string exactly as the program writes it.
    pub weights: Weights,
    /// The Core ML specification version (6 is iOS 15, 9 is iOS 18, 10 is iOS 26).
    pub spec_version: i32,
    /// The default function's inputs, as the model description declares them.
    pub inputs: Vec<FeatureInfo>,
    /// The default function's outputs, as the model description declares them.
    pub outputs: Vec<FeatureInfo>,
    /// Author, license, version and the converter's notes.
    pub metadata: ModelMetadata,
    /// The path that was read: the `.mlpackage` directory or the `.mlmodel` file.
    pub source: PathBuf,
    /// The model file itself (`model.mlmodel`), canonical.
    pub model_file: PathBuf,
    /// The directory `@model_path` stands for: the one holding the model file (canonical).
    pub model_dir: PathBuf,
}

/// A model converted to the IR, before its weights are loaded: what [`convert`] returns.
#[derive(Clone, Debug)]
pub struct ConvertedModel {
    /// The program; its first function is the model's default function.
    pub program: Program,
    /// The Core ML specification version (6 is iOS 15, 9 is iOS 18, 10 is iOS 26).
    pub spec_version: i32,
    /// The default function's inputs, as the model description declares them.
    pub inputs: Vec<FeatureInfo>,
    /// The default function's outputs, as the model description declares them.
    pub outputs: Vec<FeatureInfo>,
    /// Author, license, version and the converter's notes.
    pub metadata: ModelMetadata,
}

/// Reads a Core ML model: an `.mlpackage` directory or a bare `.mlmodel` file (its weights
/// then lie beside it, in `weights/`). Weight files are mapped, not copied.
///
/// The example writes a one-op package with the protobuf types, as coremltools would lay it
/// out, and reads it back:
///
/// ```
/// use anemone_mil::coreml::{self, CoreMlError, proto::{self, mil_spec}};
/// use prost::Message;
/// # use mil_spec::{dimension, value_type};
///
/// # fn fp16(shape: &[u64]) -> mil_spec::ValueType {
/// #     let dimensions = shape
/// #         .iter()
/// #         .map(|&size| mil_spec::Dimension {
/// #             dimension: Some(dimension::Dimension::Constant(
/// #                 dimension::ConstantDimension { size },
/// #             )),
/// #         })
/// #         .collect();
/// #     mil_spec::ValueType {
/// #         r#type: Some(value_type::Type::TensorType(mil_spec::TensorType {
/// #             data_type: mil_spec::DataType::Float16 as i32,
/// #             rank: shape.len() as i64,
/// #             dimensions,
/// #             attributes: Default::default(),
/// #         })),
/// #     }
/// # }
/// # let named = |name: &str| mil_spec::NamedValueType {
/// #     name: name.to_string(),
/// #     r#type: Some(fp16(&[1, 8])),
/// # };
/// # let relu = mil_spec::Operation {
/// #     r#type: "relu".to_string(),
/// #     inputs: [("x".to_string(), mil_spec::Argument {
/// #         arguments: vec![mil_spec::argument::Binding {
/// #             binding: Some(mil_spec::argument::binding::Binding::Name("x".to_string())),
/// #         }],
/// #     })]
/// #     .into(),
/// #     outputs: vec![named("y")],
/// #     ..Default::default()
/// # };
/// # let block = mil_spec::Block {
/// #     outputs: vec!["y".to_string()],
/// #     operations: vec![relu],
/// #     ..Default::default()
/// # };
/// # let main = mil_spec::Function {
/// #     inputs: vec![named("x")],
/// #     opset: "CoreML8".to_string(),
/// #     block_specializations: [("CoreML8".to_string(), block)].into(),
/// #     ..Default::default()
/// # };
/// // A model whose `main` is `y = relu(x)` on fp16 [1, 8] (built in hidden lines).
/// let model = proto::Model {
///     specification_version: 9,
///     r#type: Some(proto::model::Type::MlProgram(mil_spec::Program {
///         version: 1,
///         functions: [("main".to_string(), main)].into(),
///         ..Default::default()
///     })),
///     ..Default::default()
/// };
///
/// let tmp = tempfile::tempdir()?;
/// let package = tmp.path().join("Relu.mlpackage");
/// let data = package.join("Data/com.apple.CoreML");
/// std::fs::create_dir_all(&data)?;
/// std::fs::write(data.join("model.mlmodel"), model.encode_to_vec())?;
/// std::fs::write(
///     package.join("Manifest.json"),
///     r#"{"rootModelIdentifier": "m",
///         "itemInfoEntries": {"m": {"path": "com.apple.CoreML/model.mlmodel"}}}"#,
/// )?;
///
/// let read = coreml::read(&package)?;
/// assert_eq!(read.spec_version, 9);
/// let text = anemone_mil::text::print(&read.program);
/// assert!(text.contains("func main<ios18>(tensor<fp16, [1, 8]> x)"), "{text}");
/// assert!(text.contains("y = relu(x = x)"), "{text}");
///
/// // Anything else is refused with an error that names the file.
/// std::fs::write(data.join("model.mlmodel"), b"not a protobuf")?;
/// assert!(matches!(coreml::read(&package), Err(CoreMlError::Decode { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read(path: &Path) -> Result<CoreMlModel, CoreMlError> {
    let meta = fs::metadata(path).map_err(|e| CoreMlError::io(path, e))?;
    let model_file = if meta.is_dir() {
        if !path.join(MANIFEST_FILE).exists() && path.join("model.mil").is_file() {
            return Err(CoreMlError::NotAModel {
                path: path.display().to_string(),
                reason: "this is a compiled model directory (.mlmodelc), not an .mlpackage; \
                         its model.mil is MIL text, which anemone reads directly"
                    .to_string(),
            });
        }
        manifest::model_file(path)?
    } else {
        fs::canonicalize(path).map_err(|e| CoreMlError::io(path, e))?
    };
    let shown = model_file.display().to_string();
    let bytes = fs::read(&model_file).map_err(|e| CoreMlError::io(&model_file, e))?;
    let model = decode(&bytes, &shown)?;
    let converted = convert(&model, &model_file)?;
    // ModelDir takes a file's parent as its root: the directory @model_path stands for.
    let dir = ModelDir::open(&model_file).map_err(|e| weights_error(&shown, "the model", e))?;
    let weights = load_weights(&shown, &dir, &converted.program)?;
    Ok(CoreMlModel {
        program: converted.program,
        weights,
        spec_version: converted.spec_version,
        inputs: converted.inputs,
        outputs: converted.outputs,
        metadata: converted.metadata,
        source: path.to_path_buf(),
        model_dir: dir.root().to_path_buf(),
        model_file,
    })
}

/// Decodes the bytes of a `model.mlmodel` file.
pub fn decode_model(bytes: &[u8]) -> Result<proto::Model, CoreMlError> {
    decode(bytes, "the model bytes")
}

fn decode(bytes: &[u8], path: &str) -> Result<proto::Model, CoreMlError> {
    proto::Model::decode(bytes)
        .map_err(|source| CoreMlError::Decode { path: path.to_string(), source })
}

/// Whether `path` looks like a Core ML model: an `.mlpackage` or `.mlmodel` by its
/// extension, or a directory holding `Manifest.json`.
pub fn is_coreml_path(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("mlpackage" | "mlmodel")) || path.join(MANIFEST_FILE).is_file()
}

/// Converts a decoded model to the IR, refusing what anemone cannot run. `origin` is the
/// file named in errors.
pub fn convert(model: &proto::Model, origin: &Path) -> Result<ConvertedModel, CoreMlError> {
    let path = origin.display().to_string();
    let program = match &model.r#type {
        Some(proto::model::Type::MlProgram(p)) => p,
        Some(other) => return Err(not_ml_program(&path, other)),
        None => {
            return Err(CoreMlError::NotMlProgram {
                path,
                kind: "none",
                message: "the file holds no model: no model type is set".to_string(),
            });
        }
    };
    let description = model.description.as_ref();
    let default_name = description
        .map(|d| d.default_function_name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_FUNCTION);

    // The description's features of the default function (a multi-function model lists
    // them per function).
    let (inputs, outputs, states) = match description {
        None => (&[][..], &[][..], &[][..]),
        Some(d) if d.functions.is_empty() => (&d.input[..], &d.output[..], &d.state[..]),
        Some(d) => match d.functions.iter().find(|f| f.name == default_name) {
            Some(f) => (&f.input[..], &f.output[..], &f.state[..]),
            None => {
                return Err(CoreMlError::Malformed {
                    path,
                    at: "model description".to_string(),
                    message: format!("no description of the default function {default_name}"),
                });
            }
        },
    };
    if let Some(state) = states.first() {
        return Err(CoreMlError::Unsupported {
            path,
            code: "coreml::state",
            at: "model description".to_string(),
            message: format!(
                "the model has state {}; stateful models are not supported",
                state.name
            ),
        });
    }

    let program = convert::program(&path, program, default_name)?;

    let features = |list: &[proto::FeatureDescription], role: &str| {
        list.iter()
            .map(|f| {
                description::feature(f, role).map_err(|p| match p {
                    value::Problem::Unsupported(code, message) => CoreMlError::Unsupported {
                        path: path.clone(),
                        code,
                        at: "model description".to_string(),
                        message,
                    },
                    value::Problem::Malformed(message) => CoreMlError::Malformed {
                        path: path.clone(),
                        at: "model description".to_string(),
                        message,
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let inputs = features(inputs, "input")?;
    let outputs = features(outputs, "output")?;

    // The description and the program must agree on the names.
    if let Some(main) = program.functions.first() {
        let at = format!("function {}", main.name);
        for f in &inputs {
            if !main.inputs.iter().any(|i| i.name.name == f.name) {
                return Err(CoreMlError::Malformed {
                    path,
                    at,
                    message: format!("the description's input {} is not an input of it", f.name),
                });
            }
        }
        for f in &outputs {
            if !main.block.outputs.iter().any(|o| o.name == f.name) {
                return Err(CoreMlError::Malformed {
                    path,
                    at,
                    message: format!("the description's output {} is not an output of it", f.name),
                });
            }
        }
    }

    Ok(ConvertedModel {
        program,
        spec_version: model.specification_version,
        inputs,
        outputs,
        metadata: description::metadata(description.and_then(|d| d.metadata.as_ref())),
    })
}

fn not_ml_program(path: &str, t: &proto::model::Type) -> CoreMlError {
    use proto::model::Type as T;
    let kind = match t {
        T::PipelineClassifier(_) => "pipelineClassifier",
        T::PipelineRegressor(_) => "pipelineRegressor",
        T::Pipeline(_) => "pipeline",
        T::GlmRegressor(_) => "glmRegressor",
        T::SupportVectorRegressor(_) => "supportVectorRegressor",
        T::TreeEnsembleRegressor(_) => "treeEnsembleRegressor",
        T::NeuralNetworkRegressor(_) => "neuralNetworkRegressor",
        T::BayesianProbitRegressor(_) => "bayesianProbitRegressor",
        T::GlmClassifier(_) => "glmClassifier",
        T::SupportVectorClassifier(_) => "supportVectorClassifier",
        T::TreeEnsembleClassifier(_) => "treeEnsembleClassifier",
        T::NeuralNetworkClassifier(_) => "neuralNetworkClassifier",
        T::KNearestNeighborsClassifier(_) => "kNearestNeighborsClassifier",
        T::NeuralNetwork(_) => "neuralNetwork",
        T::ItemSimilarityRecommender(_) => "itemSimilarityRecommender",
        T::MlProgram(_) => "mlProgram",
        T::CustomModel(_) => "customModel",
        T::LinkedModel(_) => "linkedModel",
        T::ClassConfidenceThresholding(_) => "classConfidenceThresholding",
        T::OneHotEncoder(_) => "oneHotEncoder",
        T::Imputer(_) => "imputer",
        T::FeatureVectorizer(_) => "featureVectorizer",
        T::DictVectorizer(_) => "dictVectorizer",
        T::Scaler(_) => "scaler",
        T::CategoricalMapping(_) => "categoricalMapping",
        T::Normalizer(_) => "normalizer",
        T::ArrayFeatureExtractor(_) => "arrayFeatureExtractor",
        T::NonMaximumSuppression(_) => "nonMaximumSuppression",
        T::Identity(_) => "identity",
        T::TextClassifier(_) => "textClassifier",
        T::WordTagger(_) => "wordTagger",
        T::VisionFeaturePrint(_) => "visionFeaturePrint",
        T::SoundAnalysisPreprocessing(_) => "soundAnalysisPreprocessing",
        T::Gazetteer(_) => "gazetteer",
        T::WordEmbedding(_) => "wordEmbedding",
        T::AudioFeaturePrint(_) => "audioFeaturePrint",
        T::SerializedModel(_) => "serializedModel",
    };
    let message = match t {
        T::NeuralNetwork(_) | T::NeuralNetworkClassifier(_) | T::NeuralNetworkRegressor(_) => {
            format!(
                "the file is a {kind} model, not an ML Program: convert with \
                 convert_to=\"mlprogram\" (coremltools' default since version 7)"
            )
        }
        T::Pipeline(_) | T::PipelineClassifier(_) | T::PipelineRegressor(_) => format!(
            "the file is a {kind} model (several models chained), not a single ML Program; \
             anemone reads one ML Program"
        ),
        _ => format!("the file is a {kind} model, not an ML Program; anemone reads ML Programs"),
    };
    CoreMlError::NotMlProgram { path: path.to_string(), kind, message }
}

/// Maps every weight file the program names, each checked to lie inside the model
/// directory.
fn load_weights(path: &str, dir: &ModelDir, program: &Program) -> Result<Weights, CoreMlError> {
    let mut weights = Weights::new();
    for (blob_path, at) in convert::blob_uses(program) {
        let real = dir.resolve(&blob_path).map_err(|e| weights_error(path, &at, e))?;
        let file = BlobFile::map(&real).map_err(|e| {
            let source = match e {
                BlobError::Io { path, source } => PackageError::Io { path, source },
                other => PackageError::Io {
                    path: real.display().to_string(),
                    source: std::sync::Arc::new(std::io::Error::other(other.to_string())),
                },
            };
            weights_error(path, &at, source)
        })?;
        weights.insert_file(blob_path, file);
    }
    Ok(weights)
}

fn weights_error(path: &str, at: &str, source: PackageError) -> CoreMlError {
    CoreMlError::Weights { path: path.to_string(), at: at.to_string(), source: Box::new(source) }
}
