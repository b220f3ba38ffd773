//! The model description: the inputs and outputs a model declares to Core ML (name, shape
//! and element type of each multi-array), and its metadata.

use std::collections::BTreeMap;

use super::proto::{self, array_feature_type, feature_type};
use super::value::{Checked, Problem};
use crate::ir::DType;

/// The `userDefined` metadata key under which coremltools records its version.
pub const COREMLTOOLS_VERSION_KEY: &str = "com.github.apple.coremltools.version";

/// One input or output as the model description gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureInfo {
    /// The name the user gave coremltools; the IR's function input or output has it too.
    pub name: String,
    /// The shape the description declares (its default shape).
    pub shape: Vec<usize>,
    /// fp16, fp32, fp64, int32 or int8.
    pub dtype: DType,
    /// Whether Core ML lets a caller leave the feature out.
    pub optional: bool,
    /// The feature's short description, often empty.
    pub description: String,
}

/// What the model's metadata says of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelMetadata {
    /// What the model does, in the author's words (`shortDescription`); often empty.
    pub short_description: String,
    /// The model's own version string (`versionString`), not the converter's.
    pub version: String,
    /// Who made the model.
    pub author: String,
    /// The model's license, as free text.
    pub license: String,
    /// Free-form entries; coremltools adds its version ([`COREMLTOOLS_VERSION_KEY`]), the
    /// source framework and more.
    pub user_defined: BTreeMap<String, String>,
}

impl ModelMetadata {
    /// The version of coremltools that wrote the model, when it says.
    pub fn converter_version(&self) -> Option<&str> {
        self.user_defined.get(COREMLTOOLS_VERSION_KEY).map(String::as_str)
    }
}

pub(super) fn metadata(m: Option<&proto::Metadata>) -> ModelMetadata {
    let Some(m) = m else { return ModelMetadata::default() };
    ModelMetadata {
        short_description: m.short_description.clone(),
        version: m.version_string.clone(),
        author: m.author.clone(),
        license: m.license.clone(),
        user_defined: m.user_defined.clone(),
    }
}

/// The element type of a multi-array feature.
fn array_dtype(code: i32) -> Option<DType> {
    use array_feature_type::ArrayDataType as A;
    Some(match A::try_from(code).ok()? {
        A::Float16 => DType::Fp16,
        A::Float32 => DType::Fp32,
        A::Double => DType::Fp64,
        A::Int32 => DType::Int32,
        A::Int8 => DType::Int8,
        A::InvalidArrayDataType => return None,
    })
}

/// One feature; `role` is `input` or `output`. Only multi-arrays of fixed shape are taken.
pub(super) fn feature(f: &proto::FeatureDescription, role: &str) -> Checked<FeatureInfo> {
    let subject = format!("{role} {}", f.name);
    let Some(ty) = f.r#type.as_ref() else {
        return Err(Problem::Malformed(format!("{subject} has no type")));
    };
    let not_array = |what: &str| {
        Err(Problem::Unsupported(
            "coreml::unsupported-feature",
            format!(
                "{subject} is {what}; anemone reads multi-array inputs and outputs only \
                 (convert with ct.TensorType inputs)"
            ),
        ))
    };
    let array = match &ty.r#type {
        Some(feature_type::Type::MultiArrayType(a)) => a,
        Some(feature_type::Type::ImageType(_)) => return not_array("an image"),
        Some(feature_type::Type::DictionaryType(_)) => return not_array("a dictionary"),
        Some(feature_type::Type::SequenceType(_)) => return not_array("a sequence"),
        Some(feature_type::Type::Int64Type(_)) => return not_array("an int64 scalar"),
        Some(feature_type::Type::DoubleType(_)) => return not_array("a double scalar"),
        Some(feature_type::Type::StringType(_)) => return not_array("a string"),
        Some(feature_type::Type::StateType(_)) => {
            return Err(Problem::Unsupported(
                "coreml::state",
                format!("{subject} is a state; stateful models are not supported"),
            ));
        }
        None => return Err(Problem::Malformed(format!("{subject} has no type"))),
    };
    let Some(dtype) = array_dtype(array.data_type) else {
        return Err(Problem::Malformed(format!(
            "{subject} has an unknown multi-array data type (code {})",
            array.data_type
        )));
    };
    if let Some(flex) = &array.shape_flexibility {
        let what = match flex {
            array_feature_type::ShapeFlexibility::EnumeratedShapes(_) => "enumerated shapes",
            array_feature_type::ShapeFlexibility::ShapeRange(_) => "a shape range",
        };
        return Err(Problem::Unsupported(
            "coreml::flexible-shape",
            format!("{subject} has a flexible shape ({what}); anemone needs fixed shapes"),
        ));
    }
    let mut shape = Vec::with_capacity(array.shape.len());
    for (i, &d) in array.shape.iter().enumerate() {
        match usize::try_from(d) {
            Ok(d) => shape.push(d),
            Err(_) => {
                return Err(Problem::Malformed(format!("{subject}: dimension {i} is {d}")));
            }
        }
    }
    Ok(FeatureInfo {
        name: f.name.clone(),
        shape,
        dtype,
        optional: ty.is_optional,
        description: f.short_description.clone(),
    })
}
