//! Inputs built to break things: nesting that could exhaust the stack, weights hidden where
//! a checker might not look, sizes that cannot be materialised, directories that lead out.

use anemone_mil::blob::ReadMode;
use anemone_mil::package::{ModelDir, Weights, synthetic_weights};
use anemone_mil::{text, validate};

#[test]
fn nested_blobfiles_hit_the_depth_limit_instead_of_the_stack() {
    let mut src = String::from(
        "program(1.3)\n{\n    func main<ios18>() {\n        fp16 y = const()[val = fp16(",
    );
    src.push_str(&"BLOBFILE(path = string(".repeat(5000));
    src.push_str("\"a\")");
    let e = text::parse(&src).unwrap_err();
    assert_eq!(e.code, "parse::too-deep");
}

#[test]
fn blobfiles_inside_tuples_are_seen_and_checked() {
    let src = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 16]> x) {\n        tensor<fp16, [1, 8, 1, 16]> y = concat(axis = int32(1), interleave = bool(false), values = (x, tensor<fp16, [1, 4, 1, 16]>(BLOBFILE(path = string(\"@model_path/../../etc/passwd\"), offset = uint64(64)))))[name = string(\"y\")];\n    } -> (y);\n}\n";
    let program = text::parse(src).unwrap();
    assert!(validate::validate(&program).is_empty());
    assert_eq!(program.blob_refs().len(), 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.mil"), src).unwrap();
    let model = ModelDir::open(dir.path()).unwrap();
    let codes: Vec<_> = anemone_mil::check(&program, Some(&model), ReadMode::Strict)
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.code)
        .collect();
    assert_eq!(codes, ["package::bad-path"]);
}

#[test]
fn synthetic_weights_refuse_sizes_they_cannot_hold() {
    let src = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [4]> x) {\n        tensor<fp16, [1099511627776]> w = const()[name = string(\"w\"), val = tensor<fp16, [1099511627776]>(BLOBFILE(path = string(\"@model_path/w.bin\"), offset = uint64(64)))];\n    } -> (x);\n}\n";
    let program = text::parse(src).unwrap();
    let e = synthetic_weights(&program, 1).unwrap_err();
    assert!(e.contains("too large to generate"), "{e}");
}

#[test]
fn creating_a_model_directory_never_makes_directories_outside_it() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, model.join("weights")).unwrap();
    let mut weights = Weights::new();
    weights.insert("@model_path/weights/a/b/w.bin", vec![0u8; 64]);
    let e = ModelDir::create(&model, "program(1.3)\n{\n}\n", &weights).unwrap_err();
    assert_eq!(e.code(), "package::path-escape");
    assert!(!outside.join("a").exists(), "nothing may be created behind the symlink");
}
