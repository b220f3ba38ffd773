//! `anemone weights pack` with .npz archives and .safetensors checkpoints as a user runs
//! it: every array of an archive under its own name, single members picked by name, the
//! conversion notes, and damaged archives refused with the file and member named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anemone::npy::{Array, Data};
use anemone::npz;
use anemone_mil::blob::{BlobFile, ReadMode};
use anemone_mil::{DType, TensorType, bf16, f16};

mod support;
use support::{f32_bytes, safetensors, stderr, stdout};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone")).current_dir(dir).args(args).output().unwrap()
}

/// A scratch model directory: model.mil's place and an empty `weights/`.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir(root.join("weights")).unwrap();
    (tmp, root)
}

fn read_fp16(file: &BlobFile, offset: u64, shape: &[usize]) -> Vec<f32> {
    let bytes = file.read(offset, &TensorType::new(DType::Fp16, shape), ReadMode::Strict).unwrap();
    bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

#[test]
fn pack_takes_every_array_of_an_npz_and_a_safetensors_file_in_order() {
    let (_tmp, root) = scratch();
    let w = Array::from_f32(vec![2, 3], vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0]).unwrap();
    let b = Array::new(vec![2], Data::Int(vec![-1, 7])).unwrap();
    npz::write(root.join("ck.npz"), [("w", &w), ("b", &b)]).unwrap();
    let bf: Vec<u8> =
        [4.0f32, -8.0].iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
    safetensors(
        &root.join("model.safetensors"),
        None,
        &[
            ("layers.0.weight", "F32", &[1, 2], f32_bytes(&[0.25, -0.25])),
            ("layers.0.scale", "BF16", &[2], bf),
        ],
    );
    let o =
        run(&root, &["weights", "pack", "ck.npz", "model.safetensors", "-o", "weights/weight.bin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let blob = |ty: &str, offset: u64| {
        format!(
            "{ty}(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64({offset})))"
        )
    };
    assert_eq!(
        stdout(&o),
        [
            format!("w: {}", blob("tensor<fp16, [2, 3]>", 64)),
            format!("b: {}", blob("tensor<fp16, [2]>", 192)),
            format!("layers.0.weight: {}", blob("tensor<fp16, [1, 2]>", 320)),
            format!("layers.0.scale: {}", blob("tensor<fp16, [2]>", 448)),
            String::new(),
        ]
        .join("\n")
    );
    assert!(stderr(&o).contains("4 blobs of fp16"), "{}", stderr(&o));
    let file = BlobFile::open(root.join("weights/weight.bin")).unwrap();
    assert_eq!(read_fp16(&file, 64, &[2, 3]), [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
    assert_eq!(read_fp16(&file, 192, &[2]), [-1.0, 7.0]);
    assert_eq!(read_fp16(&file, 320, &[1, 2]), [0.25, -0.25]);
    assert_eq!(read_fp16(&file, 448, &[2]), [4.0, -8.0]);
}

#[test]
fn pack_picks_single_members_and_renames_them() {
    let (_tmp, root) = scratch();
    let w = Array::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
    let v = Array::from_f32(vec![3], vec![3.0, 4.0, 5.0]).unwrap();
    npz::write(root.join("ck.npz"), [("w", &w), ("v", &v)]).unwrap();
    safetensors(&root.join("m.safetensors"), None, &[("enc.w", "F32", &[1], f32_bytes(&[9.0]))]);
    let o = run(
        &root,
        &[
            "weights",
            "pack",
            "ck.npz:v",
            "first=ck.npz:w",
            "one=m.safetensors",
            "-o",
            "weights/w.bin",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> =
        stdout(&o).lines().map(|l| l.split(':').next().unwrap().to_string()).collect();
    assert_eq!(names, ["v", "first", "one"]);
    let file = BlobFile::open(root.join("weights/w.bin")).unwrap();
    assert_eq!(read_fp16(&file, 64, &[3]), [3.0, 4.0, 5.0]);
    assert_eq!(read_fp16(&file, 320, &[1]), [9.0]);

    let cases: &[(&[&str], i32, &str)] = &[
        (&["ck.npz:nope"], 2, "ck.npz has no array named `nope` (it holds w, v)"),
        (&["x=ck.npz"], 2, "ck.npz holds 2 arrays, so NAME=FILE cannot say which"),
        (
            &["ck.npz", "w=m.safetensors"],
            2,
            "the name `w` is given twice (ck.npz:w and m.safetensors:enc.w)",
        ),
        (&["ck.npz:"], 2, "no array name after `ck.npz:`"),
        (&["missing.npz"], 2, "no such file"),
    ];
    for (arrays, code, want) in cases {
        let mut args = vec!["weights", "pack"];
        args.extend_from_slice(arrays);
        args.extend_from_slice(&["-o", "weights/x.bin"]);
        let o = run(&root, &args);
        assert_eq!(o.status.code(), Some(*code), "{arrays:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{arrays:?}: {}", stderr(&o));
        assert!(!root.join("weights/x.bin").exists());
    }
}

#[test]
fn pack_reports_rounding_and_stores_inf_only_when_allowed() {
    let (_tmp, root) = scratch();
    // 0.1 rounds in fp16, 1e-9 is below its smallest subnormal, -1e9 beyond its range (an
    // additive mask's "minus infinity").
    safetensors(
        &root.join("m.safetensors"),
        None,
        &[("mask", "F32", &[4], f32_bytes(&[0.0, 0.1, 1e-9, -1e9]))],
    );
    let o = run(&root, &["weights", "pack", "m.safetensors", "-o", "weights/m.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "mask (m.safetensors:mask): element [3] is -1000000000, outside the range of fp16 \
             (largest finite value 65504); --allow-inf stores such values as ±inf"
        ),
        "{}",
        stderr(&o)
    );
    assert!(!root.join("weights/m.bin").exists());
    let o = run(&root, &["weights", "pack", "m.safetensors", "-o", "weights/m.bin", "--allow-inf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "warning: mask: 3 of 4 float32 values were rounded to fp16; 1 became inf (largest \
             |x| 1e9, above the largest finite fp16); 1 became 0 (too small for fp16)"
        ),
        "{}",
        stderr(&o)
    );
    let file = BlobFile::open(root.join("weights/m.bin")).unwrap();
    let v = read_fp16(&file, 64, &[4]);
    assert_eq!((v[0], v[2], v[3]), (0.0, 0.0, f32::NEG_INFINITY));
    // Rounding alone is a note.
    safetensors(&root.join("r.safetensors"), None, &[("r", "F32", &[2], f32_bytes(&[0.1, 0.5]))]);
    let o = run(&root, &["weights", "pack", "r.safetensors", "-o", "weights/r.bin"]);
    assert!(
        stderr(&o).contains("note: r: 1 of 2 float32 values was rounded to fp16"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn pack_refuses_damaged_archives_naming_file_and_member() {
    let (_tmp, root) = scratch();
    let w = Array::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
    let good = npz::encode([("w", &w)]).unwrap();
    // The member's last data byte changed: its CRC no longer matches.
    let mut bad = good.clone();
    let central = (0..bad.len()).find(|&i| bad[i..].starts_with(b"PK\x01\x02")).unwrap();
    bad[central - 1] ^= 0x10;
    std::fs::write(root.join("bad.npz"), &bad).unwrap();
    let o = run(&root, &["weights", "pack", "bad.npz", "-o", "weights/x.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad.npz: member `w.npy`: cannot decompress"), "{}", stderr(&o));
    // A safetensors header whose offsets run past the end.
    safetensors(&root.join("cut.safetensors"), None, &[("a", "F32", &[2], f32_bytes(&[1.0, 2.0]))]);
    let bytes = std::fs::read(root.join("cut.safetensors")).unwrap();
    std::fs::write(root.join("cut.safetensors"), &bytes[..bytes.len() - 4]).unwrap();
    let o = run(&root, &["weights", "pack", "cut.safetensors", "-o", "weights/x.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cut.safetensors: tensor `a`: data_offsets [0, 8] run past the end"),
        "{}",
        stderr(&o)
    );
    std::fs::write(root.join("notes.txt"), "hello").unwrap();
    let o = run(&root, &["weights", "pack", "notes.txt", "-o", "weights/x.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("notes.txt: not a .npy, .npz or .safetensors file"),
        "{}",
        stderr(&o)
    );
    assert!(!root.join("weights/x.bin").exists());
}
