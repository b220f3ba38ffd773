//! Throughput of weight blob writing and reading: 100 MB of f32 weights stored as fp16.
//! Figures are in GB/s of f32 data (10^9 bytes per second); run with
//! `cargo bench -p anemone-mil --bench blob_write`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anemone_mil::blob::{BlobFile, BlobWriter, ReadMode, f32_to_fp16_bytes, fp16_bytes_to_f32};
use anemone_mil::{DType, TensorType};

const F32_BYTES: usize = 100_000_000;
const RUNS: usize = 7;

/// The fastest of `RUNS` runs: the least disturbed by the rest of the machine.
fn best(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn report(what: &str, d: Duration) {
    let gbps = F32_BYTES as f64 / d.as_secs_f64() / 1e9;
    println!("{what:<46} {:>8.2} ms {gbps:>7.2} GB/s", d.as_secs_f64() * 1e3);
}

fn main() {
    let n = F32_BYTES / 4;
    // Weights of a realistic spread, not all equal (which could flatter the conversion).
    let weights: Vec<f32> = (0..n).map(|i| ((i * 7919 % 10007) as f32 - 5003.0) * 1e-3).collect();
    let ty = TensorType::new(DType::Fp16, [n]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("weight.bin");
    println!("blob_write: {} MB of f32 -> fp16, best of {RUNS} runs", F32_BYTES / 1_000_000);

    let mut out = vec![0u8; n * 2];
    report("convert f32 -> fp16 only", best(|| f32_to_fp16_bytes(black_box(&weights), &mut out)));

    report(
        "BlobWriter::add_f32_as_fp16 (in memory)",
        best(|| {
            let mut w = BlobWriter::with_capacity(n * 2 + 128);
            w.add_f32_as_fp16(black_box(&weights));
            black_box(w.finish());
        }),
    );

    report(
        "add_f32_as_fp16 + write_to (atomic, fsync)",
        best(|| {
            let mut w = BlobWriter::with_capacity(n * 2 + 128);
            w.add_f32_as_fp16(black_box(&weights));
            w.write_to(&path).expect("write");
        }),
    );

    let mut back = vec![0f32; n];
    report(
        "BlobFile::open + strict read + fp16 -> f32",
        best(|| {
            let f = BlobFile::open(&path).expect("open");
            let data = f.read(64, &ty, ReadMode::Strict).expect("read");
            fp16_bytes_to_f32(data, &mut back);
        }),
    );
    report(
        "BlobFile::map + strict read + fp16 -> f32",
        best(|| {
            let f = BlobFile::map(&path).expect("map");
            let data = f.read(64, &ty, ReadMode::Strict).expect("read");
            fp16_bytes_to_f32(data, &mut back);
        }),
    );
    assert_eq!(back[1], half::f16::from_f32(weights[1]).to_f32());
}
