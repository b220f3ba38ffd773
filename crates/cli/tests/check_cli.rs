//! `anemone check` and `anemone fmt` as a user runs them: exit codes, `file:line:col`
//! diagnostics, JSON, and one distinct error for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anemone_mil::builder::{Builder, ConvOptions};
use anemone_mil::{DType, TensorType};

fn anemone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture_dir() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mil-maderix");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("ANEMONE_REQUIRE_SHARED").as_deref() != Ok("1"),
        "shared fixtures not found at {}",
        dir.display()
    );
    eprintln!("skipped: shared fixtures not found");
    None
}

/// The seed's conv program written as a model directory with a correct weight file.
fn seed_model(dir: &Path) {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, 64, 1, 32]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let w =
        f.weight("W", TensorType::new(DType::Fp16, [64, 64, 1, 1]), &vec![0.5; 64 * 64]).unwrap();
    let y16 = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
    let y = f.cast(&y16, DType::Fp32).unwrap();
    f.output(&y);
    f.finish();
    b.build().unwrap().write_model_dir(dir).unwrap();
}

/// Runs `check --json` on a model directory and returns the error codes.
fn error_codes(dir: &Path) -> Vec<String> {
    let o = anemone(&["check", "--json", dir.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let codes: Vec<String> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| d["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(o.status.code(), Some(if codes.is_empty() { 0 } else { 1 }), "{codes:?}");
    codes
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn every_fixture_checks_with_exit_0() {
    let Some(dir) = fixture_dir() else { return };
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "mil") {
            let o = anemone(&["check", path.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(0), "{}: {}", path.display(), stderr(&o));
            assert!(stderr(&o).contains("0 error(s)"));
        }
    }
}

#[test]
fn a_clean_model_directory_has_no_findings() {
    let dir = tempfile::tempdir().unwrap();
    seed_model(dir.path());
    let o = anemone(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 error(s), 0 warning(s)"), "{}", stderr(&o));
}

#[test]
fn text_errors_say_file_line_column_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.mil");
    std::fs::write(&path, "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4]> x) {\n        tensor<fp16, [1, 4]> y = relu(x = x)\n    } -> (y);\n}\n").unwrap();
    let o = anemone(&["check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("t.mil:4:"), "{err}");
    assert!(err.contains("error[parse::"), "{err}");
    assert!(err.contains("relu(x = x)"), "{err}");
}

#[test]
fn usage_and_io_problems_exit_2() {
    let o = anemone(&["check", "/no/such/file.mil"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/no/such/file.mil"), "{}", stderr(&o));
    assert_eq!(anemone(&["check"]).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let o = anemone(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("model.mil"), "{}", stderr(&o));
}

#[test]
fn each_bad_blob_gives_its_own_error() {
    type Corruption = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Corruption)> = vec![
        (
            "blob::sentinel",
            Box::new(|d: &Path| edit(&d.join("weights/weight.bin"), |b| b[64] ^= 0xff)),
        ),
        (
            "blob::out-of-bounds",
            Box::new(|d: &Path| edit(&d.join("weights/weight.bin"), |b| b.truncate(1000))),
        ),
        (
            "blob::dtype-mismatch",
            Box::new(|d: &Path| edit(&d.join("weights/weight.bin"), |b| b[68] = 2)),
        ),
        (
            "blob::size-mismatch",
            Box::new(|d: &Path| edit(&d.join("weights/weight.bin"), |b| b[72] = 1)),
        ),
        (
            "blob::header",
            Box::new(|d: &Path| edit(&d.join("weights/weight.bin"), |b| b.truncate(20))),
        ),
        (
            "blob::out-of-bounds",
            Box::new(|d: &Path| {
                let text = std::fs::read_to_string(d.join("model.mil")).unwrap();
                std::fs::write(d.join("model.mil"), text.replace("uint64(64)", "uint64(1048576)"))
                    .unwrap();
            }),
        ),
        (
            "package::bad-path",
            Box::new(|d: &Path| {
                let text = std::fs::read_to_string(d.join("model.mil")).unwrap();
                std::fs::write(
                    d.join("model.mil"),
                    text.replace("@model_path/weights/", "@model_path/../"),
                )
                .unwrap();
            }),
        ),
        (
            "package::bad-path",
            Box::new(|d: &Path| {
                let text = std::fs::read_to_string(d.join("model.mil")).unwrap();
                std::fs::write(
                    d.join("model.mil"),
                    text.replace("@model_path/weights/weight.bin", "/etc/passwd"),
                )
                .unwrap();
            }),
        ),
        (
            "package::path-escape",
            Box::new(|d: &Path| {
                let outside = d
                    .parent()
                    .unwrap()
                    .join(format!("{}-outside.bin", d.file_name().unwrap().to_string_lossy()));
                std::fs::rename(d.join("weights/weight.bin"), &outside).unwrap();
                std::os::unix::fs::symlink(&outside, d.join("weights/weight.bin")).unwrap();
            }),
        ),
    ];
    for (want, corrupt) in cases {
        let dir = tempfile::tempdir().unwrap();
        seed_model(dir.path());
        corrupt(dir.path());
        let codes = error_codes(dir.path());
        assert_eq!(codes, vec![want.to_string()], "expected {want}");
    }
}

#[test]
fn json_output_is_one_document_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.mil");
    std::fs::write(&path, "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4, 1, 16]> x) {\n        tensor<fp16, [1, 4, 1, 16]> y = rleu(x = x);\n    } -> (y);\n}\n").unwrap();
    let o = anemone(&["check", "--json", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["errors"], 1);
    let d = &doc["diagnostics"][0];
    assert_eq!(d["code"], "validate::unknown-op");
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(4), Some(41)));
    assert_eq!(d["help"], "did you mean `relu`?");
}

#[test]
fn fmt_prints_canonical_text_and_rewrites_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.mil");
    let messy = "program(1.3)\n{\nfunc main<ios18>(tensor<fp16,[1,4]> x){tensor<fp16,[1,4]> y=relu(x=x)[name=string(\"r\")];}->(y);}";
    std::fs::write(&path, messy).unwrap();
    let p = path.to_str().unwrap();
    let o = anemone(&["fmt", p]);
    assert_eq!(o.status.code(), Some(0));
    let canonical = String::from_utf8(o.stdout).unwrap();
    assert!(
        canonical.contains("        tensor<fp16, [1, 4]> y = relu(x = x)[name = string(\"r\")];\n"),
        "{canonical}"
    );
    assert_eq!(anemone(&["fmt", "--check", p]).status.code(), Some(1));
    assert_eq!(anemone(&["fmt", "--write", p]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), canonical);
    assert_eq!(anemone(&["fmt", "--check", p]).status.code(), Some(0));
    // Only the file itself remains: no temporary files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // Comments are not kept by the canonical form: refuse unless told to drop them.
    std::fs::write(&path, format!("// keep me\n{messy}")).unwrap();
    let o = anemone(&["fmt", "--write", p]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--drop-comments"), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("// keep me"));
    assert_eq!(anemone(&["fmt", "--write", "--drop-comments", p]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), canonical);
    // A file with a syntax error is left untouched.
    std::fs::write(&path, "program(1.3) {").unwrap();
    assert_eq!(anemone(&["fmt", "--write", p]).status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "program(1.3) {");
}

#[test]
fn several_files_get_a_report_each_and_the_worst_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    seed_model(&good);
    let bad = dir.path().join("bad.mil");
    std::fs::write(&bad, "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 4]> x) {\n        tensor<fp16, [1, 4]> y = relu(x = x)\n    } -> (y);\n}\n").unwrap();
    let missing = dir.path().join("missing.mil");
    let (good, bad, missing) =
        (good.to_str().unwrap(), bad.to_str().unwrap(), missing.to_str().unwrap());

    let o = anemone(&["check", good, bad]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("model.mil: 0 error(s), 0 warning(s)"), "{err}");
    assert!(err.contains("bad.mil: 1 error(s)"), "{err}");

    // An unreadable file does not stop the others, and its status (2) is the worst.
    let o = anemone(&["check", missing, good]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.mil: 0 error(s)"), "{}", stderr(&o));

    let o = anemone(&["check", "--json", good, bad]);
    assert_eq!(o.status.code(), Some(1));
    let docs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!((docs[0]["errors"].as_u64(), docs[1]["errors"].as_u64()), (Some(0), Some(1)));
}

#[test]
fn a_missing_weight_file_is_one_warning_however_many_blobfiles_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp16, [1, 8, 1, 16]));
    let mut y = x;
    for name in ["W1", "W2", "W3"] {
        let w = f.weight(name, TensorType::new(DType::Fp16, [8, 8, 1, 1]), &[0.5; 64]).unwrap();
        y = f.conv(&y, &w, &ConvOptions::default()).unwrap();
    }
    f.output(&y);
    f.finish();
    b.build().unwrap().write_model_dir(dir.path()).unwrap();
    let weights: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join("weights")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(weights.len(), 1, "the builder writes one weight file: {weights:?}");
    std::fs::remove_file(&weights[0]).unwrap();

    let o = anemone(&["check", "--json", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let diags = doc["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 1, "{doc}");
    assert_eq!(diags[0]["code"], "blob::missing-file");
    assert_eq!(diags[0]["severity"], "warning");
    assert!(diags[0]["message"].as_str().unwrap().ends_with("(named by 3 BLOBFILEs)"), "{doc}");
}
