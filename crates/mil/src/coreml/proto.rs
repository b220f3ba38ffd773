//! The Core ML protobuf types, generated at build time from `proto/` (Apple's coremltools
//! 9.0 format definitions; see `proto/README.md` for what was trimmed).
//!
//! [`Model`] is the message a `model.mlmodel` file holds; [`mil_spec`] holds the ML Program
//! types. Proto maps are `BTreeMap`s.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/coreml_proto.rs"));

pub use core_ml::specification::*;
