//! The blob format pinned two ways: against files built byte by byte from the format
//! description (REFERENCE.md §5), and against coremltools' own MILBlob storage library
//! (Apple's reader and writer, through its Python binding) in both directions.
//!
//! The coremltools half finds Python through `ANEMONE_PYTHON` (default `python3`); without an
//! importable coremltools it says "skipped" and passes, unless `ANEMONE_REQUIRE_COREMLTOOLS=1`
//! (scripts/install-test-deps.sh installs it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anemone_mil::blob::{BlobFile, BlobWriter, ReadMode, is_sub_byte, unpack_sub_byte};
use anemone_mil::{DType, TensorType, f16};

// ---------------------------------------------------------------------------------------
// By hand

fn put_u32(f: &mut [u8], at: usize, v: u32) {
    f[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(f: &mut [u8], at: usize, v: u64) {
    f[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// fp16 [1, 2, 3], fp32 [1, 2, 3], int4 [1, 2, 3], uint3 [1, 2, 3, 7, 5], built field by
/// field. coremltools 9.0 writes exactly these bytes for these values.
fn handmade() -> Vec<u8> {
    let mut f = vec![0u8; 514];
    put_u32(&mut f, 0, 4); // count
    put_u32(&mut f, 4, 2); // version
    // (record offset, dtype code, size, padding bits, data)
    let blobs: [(usize, u32, u64, u64, &[u8]); 4] = [
        (64, 1, 6, 0, &[0x00, 0x3c, 0x00, 0x40, 0x00, 0x42]),
        (192, 2, 12, 0, &[0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40]),
        (320, 8, 2, 4, &[0x21, 0x03]),
        (448, 12, 2, 1, &[0xd1, 0x5e]),
    ];
    for (off, code, size, pad, data) in blobs {
        put_u32(&mut f, off, 0xDEAD_BEEF);
        put_u32(&mut f, off + 4, code);
        put_u64(&mut f, off + 8, size);
        put_u64(&mut f, off + 16, off as u64 + 64);
        put_u64(&mut f, off + 24, pad);
        f[off + 64..off + 64 + data.len()].copy_from_slice(data);
    }
    f
}

#[test]
fn writer_produces_the_handmade_bytes() {
    let mut w = BlobWriter::new();
    assert_eq!(w.add_f32_as_fp16(&[1.0, 2.0, 3.0]), 64);
    assert_eq!(w.add_f32(&[1.0, 2.0, 3.0]), 192);
    assert_eq!(w.add_sub_byte(DType::Int4, &[1, 2, 3]).unwrap(), 320);
    assert_eq!(w.add_sub_byte(DType::UInt3, &[1, 2, 3, 7, 5]).unwrap(), 448);
    assert_eq!(w.finish(), handmade());
}

#[test]
fn reader_understands_the_handmade_bytes() {
    let f = BlobFile::new(handmade());
    let recs = f.records(ReadMode::Strict).unwrap();
    // (offset, dtype, size, padding bits, elements)
    type Summary = (u64, Option<DType>, u64, u64, Option<u64>);
    let summary: Vec<Summary> = recs
        .iter()
        .map(|r| (r.metadata_offset, r.dtype(), r.size, r.padding_bits, r.element_count()))
        .collect();
    assert_eq!(
        summary,
        [
            (64, Some(DType::Fp16), 6, 0, Some(3)),
            (192, Some(DType::Fp32), 12, 0, Some(3)),
            (320, Some(DType::Int4), 2, 4, Some(3)),
            (448, Some(DType::UInt3), 2, 1, Some(5)),
        ]
    );
    let d = f.read(64, &TensorType::new(DType::Fp16, [3]), ReadMode::Strict).unwrap();
    assert_eq!(d, [1.0f32, 2.0, 3.0].map(|x| f16::from_f32(x).to_le_bytes()).concat());
    let d = f.read(448, &TensorType::new(DType::UInt3, [5]), ReadMode::Strict).unwrap();
    assert_eq!(unpack_sub_byte(DType::UInt3, d, 5).unwrap(), [1, 2, 3, 7, 5]);
    let d = f.read(320, &TensorType::new(DType::Int4, [1, 3]), ReadMode::Strict).unwrap();
    assert_eq!(unpack_sub_byte(DType::Int4, d, 3).unwrap(), [1, 2, 3]);
}

// ---------------------------------------------------------------------------------------
// Against coremltools

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/coremltools_blob.py")
}

/// The Python to run, when coremltools' storage library imports in it.
fn coremltools_python() -> Option<String> {
    let python = std::env::var("ANEMONE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let check = Command::new(&python).arg(script()).arg("check").output();
    let version = match check {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => {
            let why = match other {
                Ok(o) => {
                    String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string()
                }
                Err(e) => e.to_string(),
            };
            if std::env::var("ANEMONE_REQUIRE_COREMLTOOLS").as_deref() == Ok("1") {
                panic!(
                    "coremltools not importable with {python} ({why}), and ANEMONE_REQUIRE_COREMLTOOLS=1"
                );
            }
            println!("skipped: coremltools not importable ({python}: {why})");
            return None;
        }
    };
    eprintln!("using coremltools {version} through {python}");
    Some(python)
}

/// Runs the helper with `input` on stdin; returns its stdout lines.
fn helper(python: &str, args: &[&str], input: &str) -> Vec<String> {
    let mut child = Command::new(python)
        .arg(script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the coremltools helper");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "coremltools helper {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// Every type the binding handles, with values spread over each type's range (floats as
/// bit patterns, NaNs and infinities included) and lengths that leave partial bytes.
fn cases() -> Vec<(DType, Vec<i64>)> {
    let types = [
        DType::Fp16,
        DType::Fp32,
        DType::UInt8,
        DType::Int8,
        DType::Int16,
        DType::UInt16,
        DType::Int32,
        DType::UInt32,
        DType::Int4,
        DType::UInt1,
        DType::UInt2,
        DType::UInt3,
        DType::UInt4,
        DType::UInt6,
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    for (i, &d) in types.iter().enumerate() {
        for len in [1usize, 7, 61 + i] {
            let (min, max) = match d {
                DType::Fp16 => (0, u16::MAX as i128),
                DType::Fp32 => (0, u32::MAX as i128),
                _ => d.int_range().unwrap(),
            };
            let span = (max - min + 1) as u128;
            let mut values: Vec<i64> =
                (0..len).map(|_| (min + (next() as u128 % span) as i128) as i64).collect();
            values[0] = min as i64;
            if len > 1 {
                values[len - 1] = max as i64;
            }
            out.push((d, values));
        }
    }
    out
}

fn write_ours(cases: &[(DType, Vec<i64>)]) -> (Vec<u8>, Vec<u64>) {
    let mut w = BlobWriter::new();
    let offsets = cases
        .iter()
        .map(|(d, v)| match d {
            DType::Fp16 => {
                w.add_f16(&v.iter().map(|&x| f16::from_bits(x as u16)).collect::<Vec<_>>())
            }
            DType::Fp32 => {
                w.add_f32(&v.iter().map(|&x| f32::from_bits(x as u32)).collect::<Vec<_>>())
            }
            DType::UInt8 => w.add_u8(&v.iter().map(|&x| x as u8).collect::<Vec<_>>()),
            DType::Int8 => w.add_i8(&v.iter().map(|&x| x as i8).collect::<Vec<_>>()),
            DType::Int16 => w.add_i16(&v.iter().map(|&x| x as i16).collect::<Vec<_>>()),
            DType::UInt16 => w.add_u16(&v.iter().map(|&x| x as u16).collect::<Vec<_>>()),
            DType::Int32 => w.add_i32(&v.iter().map(|&x| x as i32).collect::<Vec<_>>()),
            DType::UInt32 => w.add_u32(&v.iter().map(|&x| x as u32).collect::<Vec<_>>()),
            d if is_sub_byte(*d) => {
                w.add_sub_byte(*d, &v.iter().map(|&x| x as i8).collect::<Vec<_>>()).unwrap()
            }
            d => unreachable!("no case for {d}"),
        })
        .collect();
    (w.finish(), offsets)
}

/// Reads a blob back with our reader, strictly, as values in the form `cases` uses.
fn read_ours(file: &BlobFile, offset: u64, dtype: DType, len: usize) -> Vec<i64> {
    let data = file.read(offset, &TensorType::new(dtype, [len]), ReadMode::Strict).unwrap();
    let le = |n: usize| data.chunks_exact(n);
    match dtype {
        DType::Fp16 | DType::UInt16 => {
            le(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect()
        }
        DType::Int16 => le(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect(),
        DType::Fp32 | DType::UInt32 => {
            le(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64).collect()
        }
        DType::Int32 => le(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
        DType::UInt8 => data.iter().map(|&b| b as i64).collect(),
        DType::Int8 => data.iter().map(|&b| b as i8 as i64).collect(),
        d => unpack_sub_byte(d, data, len as u64)
            .unwrap()
            .into_iter()
            .map(|v| {
                // uint6 values up to 63 fit in i8; unsigned types never come back negative.
                if d.is_unsigned_int() { v as u8 as i64 } else { v as i64 }
            })
            .collect(),
    }
}

fn spec_values(cases: &[(DType, Vec<i64>)]) -> String {
    cases
        .iter()
        .map(|(d, v)| {
            let vals: Vec<String> = v.iter().map(i64::to_string).collect();
            format!("{d} {}\n", vals.join(" "))
        })
        .collect()
}

#[test]
fn coremltools_reads_our_files() {
    let Some(python) = coremltools_python() else { return };
    let cases = cases();
    let (bytes, offsets) = write_ours(&cases);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weight.bin");
    std::fs::write(&path, &bytes).unwrap();
    let spec: String =
        cases.iter().zip(&offsets).map(|((d, _), off)| format!("{d} {off}\n")).collect();
    let lines = helper(&python, &["read", path.to_str().unwrap()], &spec);
    assert_eq!(lines.len(), cases.len());
    for ((d, expected), line) in cases.iter().zip(&lines) {
        let got: Vec<i64> = line.split_whitespace().map(|v| v.parse().unwrap()).collect();
        assert_eq!(
            &got,
            expected,
            "{d} blob of {} elements read back by coremltools",
            expected.len()
        );
    }
}

#[test]
fn coremltools_files_match_ours_byte_for_byte() {
    let Some(python) = coremltools_python() else { return };
    let mut cases = cases();
    cases.push((DType::Fp16, vec![])); // an empty blob, too
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weight.bin");
    let lines = helper(&python, &["write", path.to_str().unwrap()], &spec_values(&cases));
    let theirs = std::fs::read(&path).unwrap();
    let (ours, offsets) = write_ours(&cases);
    let their_offsets: Vec<u64> = lines.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(their_offsets, offsets);
    if let Some(i) = theirs.iter().zip(&ours).position(|(a, b)| a != b) {
        panic!(
            "first difference at byte {i}: coremltools {:#04x}, ours {:#04x}",
            theirs[i], ours[i]
        );
    }
    assert_eq!(theirs.len(), ours.len());

    let file = BlobFile::new(theirs);
    assert_eq!(file.records(ReadMode::Strict).unwrap().len(), cases.len());
    for ((d, expected), &off) in cases.iter().zip(&offsets) {
        assert_eq!(&read_ours(&file, off, *d, expected.len()), expected, "{d} at {off}");
    }
}

#[test]
fn coremltools_writes_the_handmade_bytes() {
    let Some(python) = coremltools_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weight.bin");
    let spec = "fp16 15360 16384 16896\nfp32 1065353216 1073741824 1077936128\nint4 1 2 3\nuint3 1 2 3 7 5\n";
    helper(&python, &["write", path.to_str().unwrap()], spec);
    assert_eq!(std::fs::read(&path).unwrap(), handmade());
}
