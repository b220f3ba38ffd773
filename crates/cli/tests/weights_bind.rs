//! `anemone weights bind` as a user runs it: a model directory written by the builder, a
//! checkpoint as PyTorch would save it (safetensors) and a numpy archive, bound; then
//! `anemone check` finds no error and `anemone run` computes with the new weights. Mistakes
//! (a wrong shape, a mistyped name, a failing write) change nothing on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anemone::npy::{self, Array, Data};
use anemone::npz;
use anemone_mil::builder::{Builder, ConvOptions};
use anemone_mil::{DType, TensorType, f16};

mod support;
use support::{f32_bytes, safetensors, stderr, stdout};

fn anemone(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone"))
        .current_dir(dir)
        .args(args)
        .env_remove("ANEMONE_DEVICE")
        .output()
        .unwrap()
}

/// y = cast_fp32((conv(cast_fp16(x), conv_weight) + bias) * scale * alpha), x [1, 4, 1, 16]:
/// conv_weight (zeros) and bias ([1, 2, 3, 4]) in weights/weight.bin, scale an inline
/// tensor of ones, alpha an inline scalar 1.
fn builder_model(dir: &Path) {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, 4, 1, 16]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let w =
        f.weight("conv.weight", TensorType::new(DType::Fp16, [4, 4, 1, 1]), &[0.0; 16]).unwrap();
    let y = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
    let bias = f
        .weight("bias", TensorType::new(DType::Fp16, [1, 4, 1, 1]), &[1.0, 2.0, 3.0, 4.0])
        .unwrap();
    let y = f.add(&y, &bias).unwrap();
    let scale = f.tensor_fp16("scale", &[1, 4, 1, 1], &[1.0; 4]).unwrap();
    let y = f.mul(&y, &scale).unwrap();
    let alpha = f.scalar_fp16("alpha", 1.0);
    let y = f.mul(&y, &alpha).unwrap();
    let y = f.cast(&y, DType::Fp32).unwrap();
    f.output_named(&y, "y").unwrap();
    f.finish();
    b.build().unwrap().write_model_dir(dir).unwrap();
}

/// The checkpoint's weights: small integers and halves, which fp16 and the sums hold
/// exactly, so the model's output can be compared exactly.
const W: [f32; 16] =
    [1.0, 0.0, -1.0, 2.0, 0.0, 1.0, 1.0, 0.0, -2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0];
const BIAS: [f32; 4] = [0.5, -1.0, 0.0, 2.0];
const SCALE: [f32; 4] = [0.5, 1.0, 2.0, -1.0];

fn x_values() -> Vec<f32> {
    (0..64).map(|i| ((i * 5) % 7) as f32 - 3.0).collect()
}

/// The model's output computed here in f64: `(W x + bias) * scale * alpha` per channel.
fn expected(w: &[f32], bias: &[f32], scale: &[f32], alpha: f32) -> Vec<f32> {
    let x = x_values();
    let mut y = vec![0.0f32; 64];
    for c in 0..4 {
        for s in 0..16 {
            let sum: f64 = (0..4).map(|k| w[c * 4 + k] as f64 * x[k * 16 + s] as f64).sum();
            y[c * 16 + s] = ((sum + bias[c] as f64) * scale[c] as f64 * alpha as f64) as f32;
        }
    }
    y
}

/// A model directory, its checkpoint (`checkpoint.safetensors`: conv.weight, bias, scale)
/// and an input, in a fresh directory.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    builder_model(&root.join("model"));
    let scale: Vec<u8> = SCALE.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
    safetensors(
        &root.join("checkpoint.safetensors"),
        Some(r#"{"format":"pt"}"#),
        &[
            ("conv.weight", "F32", &[4, 4, 1, 1], f32_bytes(&W)),
            ("bias", "F32", &[1, 4, 1, 1], f32_bytes(&BIAS)),
            ("scale", "F16", &[1, 4, 1, 1], scale),
        ],
    );
    npy::write(root.join("x.npy"), &Array::from_f32(vec![1, 4, 1, 16], x_values()).unwrap())
        .unwrap();
    (tmp, root)
}

/// `anemone check` on `model`: asserts 0 errors.
fn assert_checks(root: &Path, model: &str) {
    let o = anemone(root, &["check", model]);
    let text = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let last = text.lines().last().unwrap_or("");
    assert!(last.contains(": 0 error(s)"), "{text}");
}

/// `anemone run` on `model` with x.npy on the simulator; returns y.
fn run_model(root: &Path, model: &str) -> Vec<f32> {
    let out = root.join(format!("out-{}", model.replace('/', "_")));
    let o = anemone(
        root,
        &["run", model, "-i", "x=x.npy", "-o", out.to_str().unwrap(), "--device", "sim"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    npy::read(out.join("y.npy")).unwrap().data.to_f32()
}

/// model.mil and every weight file of a model directory, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                files.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn bind_a_pytorch_checkpoint_then_check_and_run() {
    let (_tmp, root) = setup();
    let before = run_model(&root, "model");
    assert_eq!(before, expected(&[0.0; 16], &[1.0, 2.0, 3.0, 4.0], &[1.0; 4], 1.0));

    // alpha, a scalar, comes from a numpy archive as a 0-d float64 array.
    let alpha = Array::new(vec![], Data::F64(vec![0.5])).unwrap();
    npz::write(root.join("alpha.npz"), [("alpha", &alpha)]).unwrap();
    let o = anemone(&root, &["weights", "bind", "model", "checkpoint.safetensors", "alpha.npz"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "conv_weight <- checkpoint.safetensors:conv.weight: tensor<fp16, [4, 4, 1, 1]> at offset 64\n\
         bias <- checkpoint.safetensors:bias: tensor<fp16, [1, 4, 1, 1]> at offset 192\n\
         scale <- checkpoint.safetensors:scale: tensor<fp16, [1, 4, 1, 1]> at offset 320\n\
         alpha <- alpha.npz:alpha: fp16 inline\n"
    );
    let err = stderr(&o);
    assert!(
        err.contains("model/weights/weight.bin: 3 blobs (3 bound, 0 kept), 392 bytes"),
        "{err}"
    );
    assert!(err.contains("model/model.mil: 4 consts bound"), "{err}");
    assert!(!err.contains("left as"), "every weight was bound: {err}");

    // The inline tensor became a BLOBFILE reference; the scalar stayed inline.
    let mil = std::fs::read_to_string(root.join("model/model.mil")).unwrap();
    assert!(
        mil.contains(
            "val = tensor<fp16, [1, 4, 1, 1]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(320)))"
        ),
        "{mil}"
    );
    assert!(mil.contains("val = fp16(0.5)"), "{mil}");
    assert_checks(&root, "model");
    assert_eq!(run_model(&root, "model"), expected(&W, &BIAS, &SCALE, 0.5));
    // Nothing but the two files is left behind.
    let names: Vec<String> = snapshot(&root.join("model")).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["model.mil", "weights/weight.bin"]);
}

#[test]
fn bind_part_of_a_model_keeps_the_rest_and_can_write_elsewhere() {
    let (_tmp, root) = setup();
    let original = snapshot(&root.join("model"));
    // Only the conv weight, into a new model directory: the bias, which stays in the
    // rebuilt weight file, comes along; the source is untouched.
    let o = anemone(
        &root,
        &["weights", "bind", "model", "checkpoint.safetensors:conv.weight", "-o", "bound"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("bound/weights/weight.bin: 2 blobs (1 bound, 1 kept)"), "{err}");
    assert!(
        err.contains("note: 2 consts are left as they were (no array has their name): bias, scale"),
        "{err}"
    );
    assert_eq!(snapshot(&root.join("model")), original);
    assert_checks(&root, "bound");
    assert_eq!(run_model(&root, "bound"), expected(&W, &[1.0, 2.0, 3.0, 4.0], &[1.0; 4], 1.0));

    // A checkpoint's extra tensors are an error unless left out on purpose.
    safetensors(
        &root.join("extra.safetensors"),
        Some(r#"{"format":"pt"}"#),
        &[
            ("bias", "F32", &[1, 4, 1, 1], f32_bytes(&BIAS)),
            ("optimizer.step", "I64", &[], 7i64.to_le_bytes().to_vec()),
        ],
    );
    let o = anemone(&root, &["weights", "bind", "bound", "extra.safetensors"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 array matches no const of"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`optimizer.step` (extra.safetensors:optimizer.step)"),
        "{}",
        stderr(&o)
    );
    let o = anemone(&root, &["weights", "bind", "bound", "extra.safetensors", "--skip-unmatched"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("note: 1 array is left out"), "{}", stderr(&o));
    assert!(stderr(&o).contains("(1 bound, 1 kept)"), "{}", stderr(&o));
    assert_checks(&root, "bound");
    assert_eq!(run_model(&root, "bound"), expected(&W, &BIAS, &[1.0; 4], 1.0));
}

#[test]
fn bind_errors_say_what_is_wrong_and_change_nothing() {
    let (_tmp, root) = setup();
    let original = snapshot(&root.join("model"));
    // PyTorch's conv bias has shape [4]; the program declares [1, 4, 1, 1]. The weight is
    // transposed. Both are reported in one run.
    safetensors(
        &root.join("torch.safetensors"),
        Some(r#"{"format":"pt"}"#),
        &[("conv.weight", "F32", &[4, 4], f32_bytes(&W)), ("bias", "F32", &[4], f32_bytes(&BIAS))],
    );
    let o = anemone(&root, &["weights", "bind", "model", "torch.safetensors"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "`conv.weight` (torch.safetensors:conv.weight) cannot be bound to const \
             `conv_weight` (model/model.mil:"
        ) && err.contains(
            "the shape does not match: expected tensor<fp16, [4, 4, 1, 1]>, got [4, 4] (they \
             differ only in axes of size 1: reshape the array to [4, 4, 1, 1] first)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "expected tensor<fp16, [1, 4, 1, 1]>, got [4] (they differ only in axes of size 1"
        ),
        "{err}"
    );
    assert_eq!(snapshot(&root.join("model")), original);

    let cases: &[(&[&str], i32, &str)] = &[
        (&["w.npy"], 2, "1 array matches no const of model/model.mil:\n  `w` (w.npy)"),
        (&["conv.wieght=w.npy"], 2, "`conv.wieght` (w.npy): did you mean `conv_weight`?"),
        (&["conv_weight=w.npy", "conv.weight=w.npy"], 2, "const `conv_weight` (model/model.mil:"),
        (&["scale=big.npy"], 1, "element [0, 1, 0, 0] is 100000, outside the range of fp16"),
        (&["alpha=w.npy"], 1, "expected fp16, got [4, 4, 1, 1]"),
    ];
    npy::write(root.join("w.npy"), &Array::from_f32(vec![4, 4, 1, 1], W.to_vec()).unwrap())
        .unwrap();
    npy::write(
        root.join("big.npy"),
        &Array::from_f32(vec![1, 4, 1, 1], vec![1.0, 1e5, 0.0, 0.0]).unwrap(),
    )
    .unwrap();
    for (arrays, code, want) in cases {
        let mut args = vec!["weights", "bind", "model"];
        args.extend_from_slice(arrays);
        let o = anemone(&root, &args);
        assert_eq!(o.status.code(), Some(*code), "{arrays:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{arrays:?}: {}", stderr(&o));
        assert_eq!(snapshot(&root.join("model")), original, "{arrays:?}");
    }

    // A hand-edited model.mil with comments is not rewritten in place unless asked.
    let mil = root.join("model/model.mil");
    let text = std::fs::read_to_string(&mil).unwrap();
    std::fs::write(&mil, format!("// tuned by hand\n{text}")).unwrap();
    let o = anemone(&root, &["weights", "bind", "model", "checkpoint.safetensors"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--drop-comments"), "{}", stderr(&o));
    let o =
        anemone(&root, &["weights", "bind", "model", "checkpoint.safetensors", "--drop-comments"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!std::fs::read_to_string(&mil).unwrap().contains("//"));
    assert_eq!(run_model(&root, "model"), expected(&W, &BIAS, &SCALE, 1.0));
}

#[test]
fn a_write_that_fails_halfway_leaves_the_old_files() {
    let (_tmp, root) = setup();
    // The destination's weight file exists; its model.mil cannot be replaced (a directory
    // is in the way), which is found only after the weight file was put in place.
    let out = root.join("out");
    std::fs::create_dir_all(out.join("weights")).unwrap();
    std::fs::create_dir_all(out.join("model.mil/in-the-way")).unwrap();
    std::fs::write(out.join("weights/weight.bin"), b"old weights").unwrap();
    let o = anemone(&root, &["weights", "bind", "model", "checkpoint.safetensors", "-o", "out"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("the model was left as it was"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("weights/weight.bin")).unwrap(), b"old weights");
    let names: Vec<String> = snapshot(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weights/weight.bin"], "temporary files are cleaned up");
}
