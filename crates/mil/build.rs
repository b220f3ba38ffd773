//! Generates the Rust types of the Core ML protobuf format (`src/coreml/proto.rs` includes
//! them) from the definitions vendored in `proto/`. `protox` parses the `.proto` files in
//! pure Rust, so building needs no `protoc`; `prost-build` writes the types.

use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::Compiler::new([&proto_dir])?
        // Comments are not carried into the generated code (see below), so their source
        // positions are not needed either.
        .include_source_info(false)
        .include_imports(true)
        .open_files(["Model.proto"])?
        .file_descriptor_set();

    prost_build::Config::new()
        // Proto maps become BTreeMaps: iteration in key order makes conversion deterministic.
        .btree_map(["."])
        // Apple's comments hold indented text that rustdoc would run as doctests.
        .disable_comments(["."])
        .include_file("coreml_proto.rs")
        .compile_fds(descriptors)?;
    Ok(())
}
