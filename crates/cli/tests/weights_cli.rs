//! `anemone weights pack|list` end to end: .npy files written here byte by byte, the binary
//! run as a user would, the blob files checked with the library's reader.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anemone_mil::blob::{BlobFile, ReadMode};
use anemone_mil::{DType, TensorType, f16};

fn anemone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anemone"))
}

/// Fails the calling test, naming the cause, when the binary lacks `weights pack|list`: a
/// missing subcommand is a failure of this command, not a reason to skip its tests.
fn assert_wired() {
    let out = anemone().args(["weights", "--help"]).output().expect("run anemone");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("pack") && text.contains("list"),
        "`anemone weights --help` did not list `pack` and `list` (exit {:?}); the `weights` \
         subcommand is missing from the binary\nstdout:\n{text}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(dir: &Path, args: &[&str]) -> Output {
    anemone().current_dir(dir).args(args).output().expect("run anemone")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a version 1.0 .npy file: magic, header dict padded to a multiple of 64, data.
fn npy(path: &Path, descr: &str, shape: &[usize], fortran: bool, data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A scratch model directory with an empty `weights/`.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir(root.join("weights")).unwrap();
    (tmp, root)
}

#[test]
fn pack_prints_blobfile_literals_and_writes_a_valid_file() {
    assert_wired();
    let (_tmp, root) = scratch();
    let w: Vec<f32> = (0..64 * 64).map(|i| i as f32 * 0.01).collect();
    npy(&root.join("w.npy"), "<f4", &[64, 64, 1, 1], false, &f32_bytes(&w));
    npy(
        &root.join("b.npy"),
        "<f8",
        &[3],
        false,
        &[1.0f64, -2.5, 65504.0].map(f64::to_le_bytes).concat(),
    );
    let o = run(&root, &["weights", "pack", "W=w.npy", "bias=b.npy", "-o", "weights/weight.bin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "W: tensor<fp16, [64, 64, 1, 1]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(64)))\n\
         bias: tensor<fp16, [3]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(8320)))\n"
    );
    assert!(stderr(&o).contains("2 blobs of fp16"), "{}", stderr(&o));

    let file = BlobFile::open(root.join("weights/weight.bin")).unwrap();
    assert_eq!(file.records(ReadMode::Strict).unwrap().len(), 2);
    let d = file.read(64, &TensorType::new(DType::Fp16, [64, 64, 1, 1]), ReadMode::Strict).unwrap();
    assert_eq!(&d[2..4], &f16::from_f32(0.01).to_le_bytes());
    let d = file.read(8320, &TensorType::new(DType::Fp16, [3]), ReadMode::Strict).unwrap();
    assert_eq!(d, [f16::ONE, f16::from_f32(-2.5), f16::MAX].map(f16::to_le_bytes).concat());
}

#[test]
fn pack_converts_to_integer_types_and_refuses_what_does_not_fit() {
    assert_wired();
    let (_tmp, root) = scratch();
    // A Fortran-order 2x3 int64 array holding [[0, 1, 2], [3, 4, 5]].
    let data: Vec<u8> = [0i64, 3, 1, 4, 2, 5].iter().flat_map(|x| x.to_le_bytes()).collect();
    npy(&root.join("f.npy"), "<i8", &[2, 3], true, &data);
    // Big-endian uint16.
    npy(&root.join("u.npy"), ">u2", &[2], false, &[0x01, 0x02, 0x00, 0xff]);
    let o = run(
        &root,
        &["weights", "pack", "F=f.npy", "U=u.npy", "-o", "weights/q.bin", "--dtype", "int16"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("F: tensor<int16, [2, 3]>(BLOBFILE("), "{}", stdout(&o));
    let file = BlobFile::open(root.join("weights/q.bin")).unwrap();
    let d = file.read(64, &TensorType::new(DType::Int16, [2, 3]), ReadMode::Strict).unwrap();
    assert_eq!(d, [0i16, 1, 2, 3, 4, 5].map(i16::to_le_bytes).concat());
    let d = file.read(192, &TensorType::new(DType::Int16, [2]), ReadMode::Strict).unwrap();
    assert_eq!(d, [0x0102i16, 0x00ff].map(i16::to_le_bytes).concat());

    // 300 does not fit in int8: exit 1, the element named, and no file written.
    npy(
        &root.join("big.npy"),
        "<i4",
        &[2, 2],
        false,
        &[1i32, 2, 3, 300].map(i32::to_le_bytes).concat(),
    );
    let o =
        run(&root, &["weights", "pack", "Q=big.npy", "-o", "weights/i8.bin", "--dtype", "int8"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("element [1, 1] is 300, outside the range of int8 (-128..=127)"),
        "{}",
        stderr(&o)
    );
    assert!(!root.join("weights/i8.bin").exists());

    npy(&root.join("frac.npy"), "<f4", &[2], false, &f32_bytes(&[1.0, 0.5]));
    let o =
        run(&root, &["weights", "pack", "Q=frac.npy", "-o", "weights/u8.bin", "--dtype", "uint8"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("element [1] is 0.5, not an integer"), "{}", stderr(&o));

    npy(&root.join("neg.npy"), "<i2", &[1], false, &(-1i16).to_le_bytes());
    let o =
        run(&root, &["weights", "pack", "Q=neg.npy", "-o", "weights/u8.bin", "--dtype", "uint32"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is -1, outside the range of uint32"), "{}", stderr(&o));

    npy(&root.join("huge.npy"), "<f4", &[1], false, &f32_bytes(&[1e6]));
    let o = run(&root, &["weights", "pack", "Q=huge.npy", "-o", "weights/h.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("outside the range of fp16"), "{}", stderr(&o));
}

#[test]
fn pack_other_float_types() {
    assert_wired();
    let (_tmp, root) = scratch();
    npy(
        &root.join("h.npy"),
        "<f2",
        &[2],
        false,
        &[f16::from_f32(1.5), f16::NEG_INFINITY].map(f16::to_le_bytes).concat(),
    );
    for (dtype, code, bytes) in [
        ("fp32", 2u8, [1.5f32, f32::NEG_INFINITY].map(f32::to_le_bytes).concat()),
        ("bf16", 5, vec![0xc0, 0x3f, 0x80, 0xff]),
        ("fp16", 1, vec![0x00, 0x3e, 0x00, 0xfc]),
    ] {
        let o =
            run(&root, &["weights", "pack", "H=h.npy", "-o", "weights/f.bin", "--dtype", dtype]);
        assert!(o.status.success(), "{dtype}: {}", stderr(&o));
        let b = std::fs::read(root.join("weights/f.bin")).unwrap();
        assert_eq!(b[68], code, "{dtype}");
        assert_eq!(&b[128..], &bytes[..], "{dtype}");
    }
}

#[test]
fn pack_says_where_it_took_the_file_to_sit() {
    assert_wired();
    let (_tmp, root) = scratch();
    npy(&root.join("a.npy"), "<f4", &[1], false, &f32_bytes(&[1.0]));
    // No model.mil anywhere above: taken to go in the model directory's weights/, and said.
    let o = run(&root, &["weights", "pack", "A=a.npy", "-o", "a.bin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("string(\"@model_path/weights/a.bin\")"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(
            "note: no model.mil above a.bin, so it is taken to go in the model \
                             directory's weights/ folder (\"@model_path/weights/a.bin\")"
        ),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("--model-path-prefix"), "{}", stderr(&o));
    // With a model.mil, the path follows from where it is, and the usual place needs no note.
    std::fs::write(root.join("model.mil"), "program(1.3) {}").unwrap();
    let o = run(&root, &["weights", "pack", "A=a.npy", "-o", "a.bin"]);
    assert!(stdout(&o).contains("string(\"@model_path/a.bin\")"), "{}", stdout(&o));
    assert!(stderr(&o).contains("holds model.mil, so the BLOBFILE path is"), "{}", stderr(&o));
    let o = run(&root, &["weights", "pack", "A=a.npy", "-o", "weights/a.bin"]);
    assert!(stdout(&o).contains("string(\"@model_path/weights/a.bin\")"), "{}", stdout(&o));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
    std::fs::remove_file(root.join("model.mil")).unwrap();

    let o = run(
        &root,
        &["weights", "pack", "A=a.npy", "-o", "a.bin", "--model-path-prefix", "blobs/v2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("string(\"@model_path/blobs/v2/a.bin\")"), "{}", stdout(&o));
    let o = run(
        &root,
        &["weights", "pack", "A=a.npy", "-o", "a.bin", "--model-path-prefix", "@model_path/"],
    );
    assert!(stdout(&o).contains("string(\"@model_path/a.bin\")"), "{}", stdout(&o));
    let o =
        run(&root, &["weights", "pack", "A=a.npy", "-o", "a.bin", "--model-path-prefix", "../up"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`..`"), "{}", stderr(&o));
}

#[test]
fn pack_usage_and_input_errors() {
    assert_wired();
    let (_tmp, root) = scratch();
    npy(&root.join("a.npy"), "<f4", &[1], false, &f32_bytes(&[1.0]));
    let cases: &[(&[&str], i32, &str)] = &[
        (&["weights", "pack", "A", "-o", "weights/x.bin"], 2, "is not NAME=FILE.npy"),
        (&["weights", "pack", "A=a.npy", "A=a.npy", "-o", "weights/x.bin"], 2, "given twice"),
        (&["weights", "pack", "A=missing.npy", "-o", "weights/x.bin"], 2, "missing.npy"),
        (
            &["weights", "pack", "A=a.npy", "-o", "weights/x.bin", "--dtype", "int64"],
            2,
            "invalid value",
        ),
        (&["weights", "pack", "-o", "weights/x.bin"], 2, "required"),
        (&["weights", "pack", "A=a.npy", "-o", "nodir/weights/x.bin"], 2, "nodir"),
    ];
    for (args, code, text) in cases {
        let o = run(&root, args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(text), "{args:?}: {}", stderr(&o));
    }
    std::fs::write(root.join("junk.npy"), b"not numpy").unwrap();
    let o = run(&root, &["weights", "pack", "A=junk.npy", "-o", "weights/x.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("junk.npy: not a .npy file"), "{}", stderr(&o));
    npy(&root.join("short.npy"), "<f4", &[4], false, &f32_bytes(&[1.0]));
    let o = run(&root, &["weights", "pack", "A=short.npy", "-o", "weights/x.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    npy(&root.join("c.npy"), "<c8", &[1], false, &[0; 8]);
    let o = run(&root, &["weights", "pack", "A=c.npy", "-o", "weights/x.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
}

#[test]
fn list_prints_every_record() {
    assert_wired();
    let (_tmp, root) = scratch();
    npy(&root.join("a.npy"), "<f4", &[4, 4], false, &f32_bytes(&[0.5; 16]));
    npy(&root.join("b.npy"), "|i1", &[3], false, &[1, 2, 3]);
    let o = run(
        &root,
        &["weights", "pack", "A=a.npy", "B=b.npy", "-o", "weights/w.bin", "--dtype", "fp32"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&root, &["weights", "list", "weights/w.bin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "weights/w.bin: 268 bytes, version 2, header count 2, 2 records found\n\
         index  offset  dtype  size  data_offset  padding_bits  elements\n    \
         0      64  fp32     64          128             0        16\n    \
         1     192  fp32     12          256             0         3\n"
    );
}

#[test]
fn list_fails_on_corrupt_files_and_reads_maderix_files_leniently() {
    assert_wired();
    let (_tmp, root) = scratch();
    // maderix's layout: count 1 for two int8 blobs, records marked fp16, bogus sizes.
    let mut b = vec![0u8; 64 + 2 * (64 + 256)];
    b[0] = 1;
    b[4] = 2;
    for c in [64usize, 384] {
        b[c..c + 4].copy_from_slice(&0xDEADBEEFu32.to_le_bytes());
        b[c + 4] = 1;
        b[c + 10] = 8;
    }
    std::fs::write(root.join("weights/m.bin"), &b).unwrap();
    let o = run(&root, &["weights", "list", "weights/m.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("data offset is 0, expected 128"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--lenient"), "{}", stderr(&o));
    let o = run(&root, &["weights", "list", "--lenient", "weights/m.bin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 records found (lenient)"), "{}", stdout(&o));
    assert!(stdout(&o).contains("   1     384  fp16   524288"), "{}", stdout(&o));

    std::fs::write(root.join("weights/short.bin"), [0u8; 10]).unwrap();
    let o = run(&root, &["weights", "list", "weights/short.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("10 bytes long"), "{}", stderr(&o));

    let mut b = b.clone();
    b[0] = 2;
    b[80] = 128;
    b[72..80].copy_from_slice(&256u64.to_le_bytes());
    b[68] = 4;
    b[384] = 0; // broken sentinel of the second record
    std::fs::write(root.join("weights/broken.bin"), &b).unwrap();
    let o = run(&root, &["weights", "list", "weights/broken.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("1 record found"), "{}", stdout(&o));
    assert!(stderr(&o).contains("record at offset 384: sentinel is 0xdeadbe00"), "{}", stderr(&o));

    let o = run(&root, &["weights", "list", "weights/none.bin"]);
    assert_eq!(o.status.code(), Some(2));
}
