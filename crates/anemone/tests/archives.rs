//! `.npz` and `.safetensors` reading (and `.npz` writing) as a user relies on it: files
//! that numpy and the reference safetensors implementation write come in with the right
//! names, shapes and values; what this crate writes numpy reads back; and damaged files,
//! whichever byte is damaged, are errors that name the file and the member, never panics.
//!
//! The numpy checks find Python through `ANEMONE_PYTHON` (default `python3`) and skip with a
//! note when numpy does not import there, unless `ANEMONE_REQUIRE_NUMPY=1` (or
//! `ANEMONE_REQUIRE_COREMLTOOLS=1`: coremltools brings numpy) makes that a failure.

use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;

use anemone::npy::{Array, Data};
use anemone::npz::{self, Npz};
use anemone::safetensors::{self as st, SafeTensors};
use half::{bf16, f16};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// One array of each element type .npy files hold, with shapes of rank 0 to 3.
fn every_type() -> Vec<(&'static str, Array)> {
    let a = |shape: Vec<usize>, data| Array::new(shape, data).unwrap();
    vec![
        ("half", a(vec![2, 2], Data::F16([1.5, -0.25, 65504.0, 0.0].map(f16::from_f32).to_vec()))),
        ("single", a(vec![3], Data::F32(vec![0.1, -7.0, f32::INFINITY]))),
        ("double", a(vec![], Data::F64(vec![1e300]))),
        ("ints", a(vec![1, 2, 2], Data::Int(vec![i64::MIN, -1, 0, i64::MAX]))),
        ("uints", a(vec![2], Data::UInt(vec![0, u64::MAX]))),
        ("mask", a(vec![3], Data::Bool(vec![true, false, true]))),
        ("empty", a(vec![0, 3], Data::F32(vec![]))),
    ]
}

/// The Python to run numpy with, or `None` (having said why) when numpy is missing.
fn numpy_python() -> Option<String> {
    let python = std::env::var("ANEMONE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = Command::new(&python).args(["-c", "import numpy; print(numpy.__version__)"]).output();
    match out {
        Ok(o) if o.status.success() => {
            eprintln!("using numpy {} through {python}", String::from_utf8_lossy(&o.stdout).trim());
            Some(python)
        }
        other => {
            let why = match other {
                Ok(o) => {
                    String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string()
                }
                Err(e) => e.to_string(),
            };
            let required = ["ANEMONE_REQUIRE_NUMPY", "ANEMONE_REQUIRE_COREMLTOOLS"]
                .iter()
                .any(|v| std::env::var(v).as_deref() == Ok("1"));
            assert!(!required, "numpy does not import with {python} ({why}), and it is required");
            println!("skipped: numpy does not import with {python} ({why})");
            None
        }
    }
}

/// Runs `script` with `args`; returns its stdout.
fn run_python(python: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new(python).arg("-c").arg(script).args(args).output().expect("run python");
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Byte offsets of every occurrence of `needle` in `hay`.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    (0..=hay.len().saturating_sub(needle.len()))
        .filter(|&i| &hay[i..i + needle.len()] == needle)
        .collect()
}

/// A zip archive of `members`, each stored or deflated, made with the zip crate directly (so
/// that it can hold what numpy would never write).
fn zip_of(members: &[(&str, &[u8])], deflated: bool) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let method =
        if deflated { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in members {
        w.start_file(*name, SimpleFileOptions::default().compression_method(method)).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A safetensors file laid out by the format's description: the header JSON holds the
/// tensors in the order given with consecutive `data_offsets`, padded with spaces to a
/// multiple of 8 bytes, after its length as a little-endian u64; then the data.
fn safetensors_file(tensors: &[(&str, &str, &[usize], Vec<u8>)], metadata: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    if !metadata.is_empty() {
        entries.push(format!("\"__metadata__\":{metadata}"));
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            dims.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    raw_safetensors(&format!("{{{}}}", entries.join(",")), &data)
}

fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn le<T: Copy, const N: usize>(values: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| f(v)).collect()
}

// ---------------------------------------------------------------------------------------
// .npz

#[test]
fn npz_round_trips_every_type_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.npz");
    let arrays = every_type();
    npz::write(&path, arrays.iter().map(|(n, a)| (*n, a))).unwrap();
    let back = npz::read(&path).unwrap();
    let names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, arrays.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    for ((_, want), (name, got)) in arrays.iter().zip(&back) {
        assert_eq!(got, want, "{name}");
    }
    // One member at a time, by name, in any order.
    let mut npz = Npz::open(&path).unwrap();
    assert_eq!(npz.len(), arrays.len());
    assert_eq!(npz.array("mask").unwrap(), arrays[5].1);
    assert_eq!(npz.array("half").unwrap(), arrays[0].1);
    let e = npz.array("missing").unwrap_err();
    assert!(
        e.message().starts_with(&format!("{}: no array named `missing`", path.display())),
        "{e}"
    );
}

#[test]
fn npz_from_numpy_savez_and_savez_compressed() {
    let Some(python) = numpy_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, numpy as np
arrays = dict(
    f16=(np.arange(6, dtype=np.float16) / 4).reshape(2, 3),
    f32=np.arange(12, dtype=np.float32).reshape(3, 4) / 8,
    f64=np.array(0.1),
    i8=np.array([-128, 127], dtype=np.int8),
    i64=np.array([[-(2**40)], [5]], dtype=np.int64),
    u16=np.array([65535, 0, 7], dtype=np.uint16),
    u64=np.array([2**64 - 1], dtype=np.uint64),
    flags=np.array([True, False]),
    fortran=np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    big=np.array([1.5, -2.0], dtype='>f4'),
    empty=np.zeros((0, 4), dtype=np.float32),
)
np.savez(sys.argv[1], np.float32([9, 8]), **arrays)
np.savez_compressed(sys.argv[2], np.float32([9, 8]), **arrays)
"#;
    let stored = dir.path().join("stored.npz");
    let deflated = dir.path().join("deflated.npz");
    run_python(&python, script, &[stored.to_str().unwrap(), deflated.to_str().unwrap()]);
    for path in [&stored, &deflated] {
        let got: HashMap<String, Array> = npz::read(path).unwrap().into_iter().collect();
        let names: Vec<String> = npz::read(path).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            // numpy's order: the named arrays as given, then the unnamed.
            [
                "f16", "f32", "f64", "i8", "i64", "u16", "u64", "flags", "fortran", "big", "empty",
                "arr_0"
            ],
            "{}",
            path.display()
        );
        let at = |n: &str| &got[n];
        assert_eq!(at("arr_0").data, Data::F32(vec![9.0, 8.0]));
        assert_eq!(at("f16").shape, [2, 3]);
        assert_eq!(at("f16").data.to_f32(), [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
        assert_eq!(at("f32").data, Data::F32((0..12).map(|i| i as f32 / 8.0).collect()));
        assert_eq!((at("f64").shape.len(), &at("f64").data), (0, &Data::F64(vec![0.1])));
        assert_eq!(at("i8").data, Data::Int(vec![-128, 127]));
        assert_eq!(
            (at("i64").shape.clone(), &at("i64").data),
            (vec![2, 1], &Data::Int(vec![-(1 << 40), 5]))
        );
        assert_eq!(at("u16").data, Data::UInt(vec![65535, 0, 7]));
        assert_eq!(at("u64").data, Data::UInt(vec![u64::MAX]));
        assert_eq!(at("flags").data, Data::Bool(vec![true, false]));
        assert_eq!(at("fortran").data, Data::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(at("big").data, Data::F32(vec![1.5, -2.0]));
        assert_eq!((at("empty").shape.clone(), at("empty").len()), (vec![0, 4], 0));
    }
}

#[test]
fn npz_written_here_loads_in_numpy() {
    let Some(python) = numpy_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.npz");
    let arrays = every_type();
    npz::write(&path, arrays.iter().map(|(n, a)| (*n, a))).unwrap();
    let script = r#"
import sys, numpy as np
with np.load(sys.argv[1]) as z:
    for name in z.files:
        a = z[name]
        print(name, a.dtype.str, list(a.shape), [repr(v) for v in a.ravel().tolist()])
"#;
    let out = run_python(&python, script, &[path.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "half <f2 [2, 2] ['1.5', '-0.25', '65504.0', '0.0']",
            "single <f4 [3] ['0.10000000149011612', '-7.0', 'inf']",
            "double <f8 [] ['1e+300']",
            "ints <i8 [1, 2, 2] ['-9223372036854775808', '-1', '0', '9223372036854775807']",
            "uints <u8 [2] ['0', '18446744073709551615']",
            "mask |b1 [3] ['True', 'False', 'True']",
            "empty <f4 [0, 3] []",
        ]
    );
}

#[test]
fn damaged_npz_archives_are_errors_that_name_the_member() {
    let one = anemone::npy::encode(&Array::from_f32(vec![2], vec![1.0, 2.0]).unwrap()).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"PK\x03\x04 not really".to_vec(), "not an .npz file"),
        (
            zip_of(&[("a.npy", &one), ("notes.txt", b"hi")], false),
            "member `notes.txt` is not a .npy array",
        ),
        (zip_of(&[("a.npy", b"\x93NUMPY garbage")], true), "member `a.npy`: not a .npy file"),
        (zip_of(&[("a.npy", &one[..one.len() - 2])], false), "member `a.npy`: truncated"),
    ];
    for (bytes, want) in cases {
        let e = npz::parse(&bytes).unwrap_err();
        assert!(e.message().contains(want), "want {want:?}, got: {e}");
    }

    // Two members with one name: made by renaming `b.npy` to `a.npy` everywhere it appears.
    let mut twice = zip_of(&[("a.npy", &one), ("b.npy", &one)], false);
    for at in find_all(&twice, b"b.npy") {
        twice[at] = b'a';
    }
    let e = npz::parse(&twice).unwrap_err();
    assert!(e.message().contains("two members of the same name"), "{e}");

    // Sizes in the central directory that lie: a stored member claiming 2 GB, and a
    // deflated one claiming more than deflate can expand its bytes to, are refused before
    // anything is read; a member holding more than it declares, or other bytes than its
    // CRC says, is refused after.
    let central_size = |archive: &mut Vec<u8>, size: u32| {
        let at = find_all(archive, b"PK\x01\x02")[0] + 24;
        archive[at..at + 4].copy_from_slice(&size.to_le_bytes());
    };
    for deflated in [false, true] {
        let mut lying = zip_of(&[("w.npy", &one)], deflated);
        central_size(&mut lying, 0x7fff_ffff);
        let e = npz::parse(&lying).unwrap_err();
        assert!(e.message().contains("member `w.npy`: declares 2147483647 bytes"), "{e}");
        let mut short = zip_of(&[("w.npy", &one)], deflated);
        central_size(&mut short, 10);
        let e = npz::parse(&short).unwrap_err();
        assert!(e.message().contains("member `w.npy`"), "{e}");
    }
    let mut flipped = zip_of(&[("w.npy", &one)], false);
    let last = find_all(&flipped, b"PK\x01\x02")[0] - 1;
    flipped[last] ^= 0x40;
    let e = npz::parse(&flipped).unwrap_err();
    assert!(e.message().contains("member `w.npy`"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.npz");
    std::fs::write(&path, b"PK\x05\x06").unwrap();
    let e = npz::read(&path).unwrap_err();
    assert!(e.message().starts_with(&format!("{}: not an .npz file", path.display())), "{e}");
    let e = npz::read(dir.path().join("none.npz")).unwrap_err();
    assert!(e.message().contains("none.npz"), "{e}");
}

fn npz_fixture(deflated: bool) -> Vec<u8> {
    let a = anemone::npy::encode(&every_type()[1].1).unwrap();
    let b = anemone::npy::encode(&every_type()[3].1).unwrap();
    zip_of(&[("single.npy", &a), ("ints.npy", &b)], deflated)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever bytes are damaged, or wherever the file is cut, reading returns a result:
    /// the same arrays (when the damage missed everything that matters) or an error.
    #[test]
    fn npz_damage_never_panics(
        deflated in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = npz_fixture(deflated);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        if let Ok(arrays) = npz::parse(&bytes) {
            prop_assert!(arrays.len() <= 2);
        }
    }
}

// ---------------------------------------------------------------------------------------
// .safetensors

#[test]
fn safetensors_built_by_the_format_description_read_in_every_dtype() {
    let f16s = [1.0f32, -2.5, 0.125].map(f16::from_f32);
    let bf16s = [3.0f32, -0.5].map(bf16::from_f32);
    let tensors: Vec<(&str, &str, &[usize], Vec<u8>)> = vec![
        ("model.embed.weight", "F16", &[3], le(&f16s, f16::to_le_bytes)),
        ("bf", "BF16", &[1, 2], le(&bf16s, bf16::to_le_bytes)),
        ("f", "F32", &[], le(&[0.1f32], f32::to_le_bytes)),
        ("d", "F64", &[2], le(&[1e300f64, -0.0], f64::to_le_bytes)),
        ("i8", "I8", &[2], vec![0x80, 0x7f]),
        ("i16", "I16", &[1], le(&[-300i16], i16::to_le_bytes)),
        ("i32", "I32", &[2], le(&[i32::MIN, 5], i32::to_le_bytes)),
        ("i64", "I64", &[1, 1], le(&[-(1i64 << 50)], i64::to_le_bytes)),
        ("u8", "U8", &[2], vec![0, 255]),
        ("u16", "U16", &[1], le(&[65535u16], u16::to_le_bytes)),
        ("u32", "U32", &[1], le(&[u32::MAX], u32::to_le_bytes)),
        ("u64", "U64", &[1], le(&[u64::MAX], u64::to_le_bytes)),
        ("mask", "BOOL", &[3], vec![1, 0, 1]),
        ("nothing", "F32", &[2, 0], vec![]),
        ("fp8", "F8_E4M3", &[2], vec![0x38, 0xb8]),
    ];
    let bytes = safetensors_file(&tensors, r#"{"format":"pt","step":"12"}"#);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let file = SafeTensors::open(&path).unwrap();
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, tensors.iter().map(|t| t.0).collect::<Vec<_>>());
    assert_eq!(file.metadata().get("step").map(String::as_str), Some("12"));
    assert_eq!(file.get("bf").unwrap().dtype, "BF16");
    assert_eq!(file.raw("u8"), Some(&[0u8, 255][..]));

    let a = |name: &str| file.array(name).unwrap();
    assert_eq!(a("model.embed.weight").data, Data::F16(f16s.to_vec()));
    assert_eq!((a("bf").shape, a("bf").data), (vec![1, 2], Data::F32(vec![3.0, -0.5])));
    assert_eq!((a("f").shape.len(), a("f").data), (0, Data::F32(vec![0.1])));
    assert_eq!(a("d").data, Data::F64(vec![1e300, -0.0]));
    assert_eq!(a("i8").data, Data::Int(vec![-128, 127]));
    assert_eq!(a("i16").data, Data::Int(vec![-300]));
    assert_eq!(a("i32").data, Data::Int(vec![i32::MIN as i64, 5]));
    assert_eq!(a("i64").data, Data::Int(vec![-(1 << 50)]));
    assert_eq!(a("u8").data, Data::UInt(vec![0, 255]));
    assert_eq!(a("u16").data, Data::UInt(vec![65535]));
    assert_eq!(a("u32").data, Data::UInt(vec![u32::MAX as u64]));
    assert_eq!(a("u64").data, Data::UInt(vec![u64::MAX]));
    assert_eq!(a("mask").data, Data::Bool(vec![true, false, true]));
    assert_eq!((a("nothing").shape, a("nothing").len()), (vec![2, 0], 0));
    // Listed, but not something an Array holds: the error says which dtypes are read.
    let e = file.array("fp8").unwrap_err();
    assert!(
        e.message().starts_with(&format!(
            "{}: tensor `fp8`: F8_E4M3 tensors cannot be read",
            path.display()
        )),
        "{e}"
    );
    // Everything at once stops at the first such tensor, naming it.
    assert!(st::read(&path).unwrap_err().message().contains("`fp8`"));
}

#[test]
fn safetensors_from_the_reference_writer() {
    use safetensors::tensor::TensorView;
    use safetensors::{Dtype, serialize};
    let w: Vec<u8> = le(&[0.5f32, 1.5, -2.0, 4.0, 8.0, -16.0], f32::to_le_bytes);
    let b: Vec<u8> = le(&[1.0f32, 2.0].map(bf16::from_f32), bf16::to_le_bytes);
    let ids: Vec<u8> = le(&[7i64, -7], i64::to_le_bytes);
    let views = vec![
        ("layers.0.weight", TensorView::new(Dtype::F32, vec![2, 3], &w).unwrap()),
        ("layers.0.bias", TensorView::new(Dtype::BF16, vec![2], &b).unwrap()),
        ("ids", TensorView::new(Dtype::I64, vec![2], &ids).unwrap()),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = serialize(views, Some(meta)).unwrap();
    let file = SafeTensors::from_bytes(bytes).unwrap();
    let mut names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ids", "layers.0.bias", "layers.0.weight"]);
    let weight = file.array("layers.0.weight").unwrap();
    assert_eq!(weight.shape, [2, 3]);
    assert_eq!(weight.data, Data::F32(vec![0.5, 1.5, -2.0, 4.0, 8.0, -16.0]));
    assert_eq!(file.array("layers.0.bias").unwrap().data, Data::F32(vec![1.0, 2.0]));
    assert_eq!(file.array("ids").unwrap().data, Data::Int(vec![7, -7]));
    assert_eq!(file.metadata()["format"], "pt");
}

#[test]
fn safetensors_from_the_python_package_when_installed() {
    // Only where the `safetensors` Python package is already installed; nothing installs it.
    let python = std::env::var("ANEMONE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python).args(["-c", "import numpy, safetensors.numpy"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("skipped: the safetensors Python package does not import with {python}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.safetensors");
    let script = r#"
import sys, numpy as np
from safetensors.numpy import save_file
save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.array([True, False])},
          sys.argv[1], metadata={"format": "np"})
"#;
    run_python(&python, script, &[path.to_str().unwrap()]);
    let file = SafeTensors::open(&path).unwrap();
    assert_eq!(file.array("w").unwrap().data, Data::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    assert_eq!(file.array("m").unwrap().data, Data::Bool(vec![true, false]));
}

#[test]
fn damaged_safetensors_files_are_errors_that_name_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let f32s = le(&[1.0f32, 2.0], f32::to_le_bytes);
    let good = safetensors_file(&[("a", "F32", &[2], f32s.clone())], "");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            good[..good.len() - 1].to_vec(),
            "tensor `a`: data_offsets [0, 8] run past the end of the file",
        ),
        ([&good[..], b"x"].concat(), "1 bytes follow the last tensor's data"),
        (good[..20].to_vec(), "truncated: the header length is"),
        (good[..5].to_vec(), "too short for the 8-byte header length"),
        ([&(1u64 << 40).to_le_bytes()[..], b"{}"].concat(), "above the format's limit"),
        (raw_safetensors("{\"a\": 1}", &[]), "tensor `a`: invalid type"),
        (raw_safetensors("{\"a\":", &[]), "the header is not valid"),
        (
            raw_safetensors("{\"__metadata__\":{\"k\":1}}", &[]),
            "`__metadata__` must map names to strings",
        ),
        (
            safetensors_file(&[("a", "F32", &[3], f32s.clone())], ""),
            "tensor `a`: shape [3] of F32 needs 12 bytes, data_offsets [0, 8] hold 8",
        ),
        (
            safetensors_file(
                &[("a", "F32", &[1], f32s[..4].to_vec()), ("a", "F32", &[1], f32s[4..].to_vec())],
                "",
            ),
            "the name `a` appears twice",
        ),
        (
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &f32s,
            ),
            "overlap those of tensor `a` [0, 4]",
        ),
        (
            raw_safetensors(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &f32s),
            "tensor `a`: data_offsets [4, 8] leave 4 unused bytes before it",
        ),
        (
            raw_safetensors(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
                &f32s,
            ),
            "tensor `a`: shape [4294967296, 4294967296, 16] is too large",
        ),
        (
            raw_safetensors(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, &f32s),
            "end before they begin",
        ),
        (
            raw_safetensors(r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#, &[0]),
            "3 F4 elements do not fill whole bytes",
        ),
        ([&8u64.to_le_bytes()[..], b"{\"\xff\":1} "].concat(), "the header is not UTF-8"),
    ];
    for (i, (bytes, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let e = SafeTensors::open(&path).unwrap_err();
        assert!(
            e.message().starts_with(&format!("{}: ", path.display())) && e.message().contains(want),
            "case {i}: want {want:?}, got: {e}"
        );
    }
    assert!(
        SafeTensors::open(dir.path().join("none.safetensors"))
            .unwrap_err()
            .message()
            .contains("none.safetensors")
    );
}

fn safetensors_fixture() -> Vec<u8> {
    safetensors_file(
        &[
            ("w", "F32", &[2, 2], le(&[1.0f32, 2.0, 3.0, 4.0], f32::to_le_bytes)),
            ("b", "F16", &[2], le(&[f16::ONE, f16::NEG_ONE], f16::to_le_bytes)),
            ("n", "I64", &[1], le(&[42i64], i64::to_le_bytes)),
        ],
        r#"{"format":"pt"}"#,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever bytes are damaged, or wherever the file is cut, reading never panics, and
    /// it accepts nothing the reference implementation rejects; where it is stricter, it is
    /// about a name given twice, which the reference collapses silently.
    #[test]
    fn safetensors_damage_never_panics_and_agrees_with_the_reference(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = safetensors_fixture();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        let theirs = std::panic::catch_unwind(|| safetensors::SafeTensors::deserialize(&bytes).is_ok())
            .unwrap_or(false);
        match SafeTensors::from_bytes(bytes.clone()) {
            Ok(file) => {
                prop_assert!(theirs, "accepted a file the reference rejects");
                for t in file.tensors() {
                    // Decoding may refuse a dtype, but never panics.
                    let _ = file.array(&t.name);
                }
            }
            Err(e) => prop_assert!(!theirs || e.message().contains("appears twice"), "{}", e),
        }
    }
}

#[test]
fn a_missing_or_unreadable_path_names_itself() {
    let e = npz::read(Path::new("/nonexistent/a.npz")).unwrap_err();
    assert!(e.message().contains("/nonexistent/a.npz"), "{e}");
    let e = st::read(Path::new("/nonexistent/a.safetensors")).unwrap_err();
    assert!(e.message().contains("/nonexistent/a.safetensors"), "{e}");
}
