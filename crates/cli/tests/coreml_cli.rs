//! Core ML models as a user runs them: every committed fixture package (PyTorch models
//! converted by coremltools 9.0, scripts/make-coreml-fixtures.py) runs with `anemone run`
//! on the simulator and matches torch's fp32 outputs; `anemone import` writes a model
//! directory that checks without errors and gives the same numbers bit for bit; `check`
//! describes the package; broken packages get one clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anemone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone"))
        .args(args)
        .env_remove("ANEMONE_DEVICE")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 12, "the fixture packages are missing from {}", root.display());
    dirs
}

struct Case {
    inputs: Vec<String>,
    outputs: Vec<String>,
    rel: f64,
    abs_of_max: f64,
}

fn case(dir: &Path) -> Case {
    let text = std::fs::read_to_string(dir.join("case.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names = |k: &str| -> Vec<String> {
        v[k].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    Case {
        inputs: names("inputs"),
        outputs: names("outputs"),
        rel: v["tolerance"]["rel"].as_f64().unwrap(),
        abs_of_max: v["tolerance"]["abs_of_max"].as_f64().unwrap(),
    }
}

/// A .npy file's values as f64 (float16, float32 and int32 arrays).
fn read_npy(path: &Path) -> (Vec<u64>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    let descr = npy.dtype().descr();
    let values = if descr.contains("f2") {
        npy.into_vec::<half::f16>().unwrap().iter().map(|v| v.to_f64()).collect()
    } else if descr.contains("f4") {
        npy.into_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect()
    } else {
        panic!("{}: unexpected dtype {descr}", path.display())
    };
    (shape, values)
}

fn run_model(model: &Path, dir: &Path, case: &Case, out: &Path) {
    let mut args = vec!["run".to_string(), model.display().to_string()];
    for name in &case.inputs {
        args.push("--input".into());
        args.push(format!("{name}={}", dir.join(format!("{name}.npy")).display()));
    }
    args.push("-o".into());
    args.push(out.display().to_string());
    args.push("--device".into());
    args.push("sim".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = anemone(&refs);
    assert!(o.status.success(), "{}: {}", model.display(), stderr(&o));
}

#[test]
fn every_fixture_package_matches_torch_and_its_import_gives_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case = case(&dir);
        let package = dir.join("model.mlpackage");
        let out = tmp.path().join(&name).join("package");
        run_model(&package, &dir, &case, &out);

        for output in &case.outputs {
            let (shape, got) = read_npy(&out.join(format!("{output}.npy")));
            let (ref_shape, want) = read_npy(&dir.join(format!("{output}.npy")));
            assert_eq!(shape, ref_shape, "{name}: shape of {output}");
            let max_ref = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let mut worst = 0.0f64;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let bound = case.rel * w.abs() + case.abs_of_max * max_ref;
                assert!(
                    (g - w).abs() <= bound,
                    "{name}: {output}[{i}] = {g}, torch {w} (bound {bound})"
                );
                worst = worst.max((g - w).abs() / max_ref.max(f64::MIN_POSITIVE));
            }
            report.push(format!("{name} {output}: max |y - ref| / max|ref| = {worst:.2e}"));
        }

        // The imported model directory checks without errors and runs to the same bits.
        let imported = tmp.path().join(&name).join("imported");
        let o = anemone(&["import", package.to_str().unwrap(), "-o", imported.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: import: {}", stderr(&o));
        let o = anemone(&["check", imported.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: check of the import: {}", stderr(&o));
        assert!(stderr(&o).contains("0 error(s)"), "{name}: {}", stderr(&o));
        let again = tmp.path().join(&name).join("again");
        run_model(&imported, &dir, &case, &again);
        for output in &case.outputs {
            let a = std::fs::read(out.join(format!("{output}.npy"))).unwrap();
            let b = std::fs::read(again.join(format!("{output}.npy"))).unwrap();
            assert!(a == b, "{name}: {output} differs between the package and its import");
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn check_describes_a_package_and_notes_the_rewrites_for_the_ane() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml/sdpa-ios18");
    let package = dir.join("model.mlpackage");
    let o = anemone(&["check", package.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("opset ios18, coremltools 9.0"), "{err}");
    assert!(err.contains("inputs:  x fp16[1, 16, 32]"), "{err}");
    assert!(err.contains("outputs: y fp16[1, 16, 32]"), "{err}");
    assert!(err.contains("linear 4"), "{err}");
    // The masked sdpa is decomposed, and the note says why.
    assert!(err.contains("note: rewritten for the ANE"), "{err}");
    assert!(err.contains("the ANE ignores attn_mask"), "{err}");
    assert!(!err.contains("scaled_dot_product_attention 1"), "{err}");

    let o = anemone(&["check", "--json", package.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["errors"], 0);
    assert_eq!(v["model"]["inputs"][0]["name"], "x");
    assert_eq!(v["model"]["inputs"][0]["dtype"], "fp16");
    assert_eq!(v["model"]["ops"]["softmax"], 1);
    assert_eq!(v["model"]["rewrites"].as_array().unwrap().len(), 1);
}

#[test]
fn fmt_prints_a_package_as_mil_and_refuses_to_rewrite_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml/mlp-ios15");
    let package = dir.join("model.mlpackage");
    let o = anemone(&["fmt", package.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("program(1."), "{text}");
    assert!(text.contains("func main<ios15>(tensor<fp32, [4, 16]> x)"), "{text}");
    let o = anemone(&["fmt", "--write", package.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is a Core ML model, not MIL text"), "{}", stderr(&o));
}

#[test]
fn import_refuses_to_replace_a_model_and_non_coreml_paths() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml/mlp-ios18");
    let package = dir.join("model.mlpackage");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let o = anemone(&["import", package.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(out.join("model.mil")).unwrap();
    let o = anemone(&["import", package.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("model.mil")).unwrap(), before);
    let o =
        anemone(&["import", out.to_str().unwrap(), "-o", tmp.path().join("n").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a Core ML model"), "{}", stderr(&o));
}

#[test]
fn broken_packages_get_one_clear_error() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml/mlp-ios18");
    let tmp = tempfile::tempdir().unwrap();
    let copy = |name: &str| -> PathBuf {
        let pkg = tmp.path().join(name).join("model.mlpackage");
        let data = pkg.join("Data/com.apple.CoreML");
        std::fs::create_dir_all(data.join("weights")).unwrap();
        let from = src.join("model.mlpackage");
        std::fs::copy(from.join("Manifest.json"), pkg.join("Manifest.json")).unwrap();
        let model = "Data/com.apple.CoreML/model.mlmodel";
        std::fs::copy(from.join(model), pkg.join(model)).unwrap();
        let weights = "Data/com.apple.CoreML/weights/weight.bin";
        std::fs::copy(from.join(weights), pkg.join(weights)).unwrap();
        pkg
    };
    let x = src.join("x.npy");
    let input = format!("x={}", x.display());
    let run =
        |pkg: &Path| anemone(&["run", pkg.to_str().unwrap(), "-i", &input, "-o", "/dev/null/x"]);

    // A truncated model.mlmodel.
    let pkg = copy("truncated");
    let model = pkg.join("Data/com.apple.CoreML/model.mlmodel");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&pkg);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.mlmodel"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));

    // A missing weight file.
    let pkg = copy("no-weights");
    std::fs::remove_file(pkg.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap();
    let o = run(&pkg);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("weight.bin"), "{}", stderr(&o));

    // A manifest pointing outside the package.
    let pkg = copy("escape");
    let manifest = pkg.join("Manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("com.apple.CoreML/model.mlmodel", "../../x.mlmodel"))
        .unwrap();
    let o = run(&pkg);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("Manifest"), "{}", stderr(&o));
}

#[test]
fn the_readme_lists_every_op_the_registry_supports() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme.find("**Supported ops**").expect("the README lists the supported ops");
    let end = start + readme[start..].find("MIL has no `neg`").expect("the list ends");
    let section = &readme[start..end];
    let missing: Vec<&str> = anemone_mil::ops::OpKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|name| !section.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "README's supported ops lack {missing:?}");
}

#[test]
fn unknown_ops_and_neural_networks_are_refused_by_name() {
    use anemone_mil::coreml::proto;
    use prost::Message;

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../anemone/tests/coreml/mlp-ios18");
    let model_rel = "Data/com.apple.CoreML/model.mlmodel";
    let original = std::fs::read(src.join("model.mlpackage").join(model_rel)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, model: &proto::Model| -> PathBuf {
        let file = tmp.path().join(format!("{name}.mlmodel"));
        std::fs::write(&file, model.encode_to_vec()).unwrap();
        file
    };

    // An op anemone does not know, named by its type and its `name` attribute.
    let mut model = proto::Model::decode(&original[..]).unwrap();
    let Some(proto::model::Type::MlProgram(program)) = &mut model.r#type else { panic!() };
    let block = program.functions.get_mut("main").unwrap().block_specializations.values_mut();
    let op = block.flat_map(|b| b.operations.iter_mut()).find(|o| o.r#type == "relu").unwrap();
    op.r#type = "hardswish_v9".into();
    let file = write("unknown", &model);
    let o = anemone(&["check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("hardswish_v9") && err.contains("input_cast_fp16"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A neural-network model: not an ML Program; the error says how to convert.
    let nn = proto::Model {
        specification_version: 4,
        r#type: Some(proto::model::Type::NeuralNetwork(Default::default())),
        ..Default::default()
    };
    let file = write("nn", &nn);
    let o = anemone(&["run", file.to_str().unwrap(), "-o", "/dev/null/x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("mlprogram"), "{}", stderr(&o));
}
