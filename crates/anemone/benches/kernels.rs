//! Kernel throughput against this machine's measured f32 FMA peak.
//!
//! `cargo bench -p anemone --bench kernels`: prints the one-thread and all-thread peaks, then
//! GFLOP/s and the ratio to the all-thread peak for the GEMM-shaped cases the simulator spends
//! its time in. Inputs are fp16 as on the ANE; conv weights are packed for the GEMM once, as the
//! plan does for constants at compile time; matmul operands are both computed at run time.

mod common;

use common::{data, time};
use std::hint::black_box;
use std::time::Duration;

use anemone::sim::kernels::Scratch;
use anemone::sim::kernels::attention::scaled_dot_product_attention;
use anemone::sim::kernels::conv::{ConvParams, conv_packed, pack_weight};
use anemone::sim::kernels::matmul::matmul;
use anemone::sim::peak::measure_f32_fma_peak_gflops;
use half::f16;

/// Prints the median and the best run; on a shared machine the best is the kernel's own speed.
fn report(name: &str, flops: f64, (median, best): (f64, f64), peak: f64) {
    let (gm, gb) = (flops / median / 1e9, flops / best / 1e9);
    println!(
        "{name:<44} median {:>7.3} ms {:>6.1} GFLOP/s {:>5.2} of peak | best {:>6.1} GFLOP/s {:>5.2}",
        median * 1e3,
        gm,
        gm / peak,
        gb,
        gb / peak
    );
}

/// Whether a case runs: `cargo bench --bench kernels -- WORD` runs the cases naming WORD.
fn selected(name: &str) -> bool {
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    words.is_empty() || words.iter().any(|w| name.contains(w.as_str()))
}

fn conv_case(name: &str, cin: usize, cout: usize, h: usize, w: usize, k: usize, peak: f64) {
    if !selected(name) {
        return;
    }
    let x_shape = [1, cin, h, w];
    let w_shape = [cout, cin, k, k];
    let x = data(cin * h * w, 1, 1.0);
    let mut params = ConvParams::new(2);
    params.pad_before = vec![k / 2; 2];
    params.pad_after = vec![k / 2; 2];
    let weight = pack_weight(&data(cout * cin * k * k, 2, 1.0), &w_shape, &params).unwrap();
    let mut out = vec![f16::ZERO; cout * h * w];
    let mut scratch = Scratch::new();
    let secs = time(Duration::from_millis(1500), || {
        conv_packed(&x, &x_shape, &weight, None, &params, &mut out, &mut scratch).unwrap();
        black_box(&out);
    });
    report(name, 2.0 * (cout * cin * k * k * h * w) as f64, secs, peak);
}

/// `a [m, k] @ b [k, n]` (`b` stored `[n, k]` when `tb`), both fp16 operands computed at run
/// time (no constant packed ahead).
fn matmul_case(name: &str, batch: usize, (m, k, n): (usize, usize, usize), tb: bool, peak: f64) {
    if !selected(name) {
        return;
    }
    let a = data(batch * m * k, 6, 1.0);
    let b = data(batch * k * n, 7, 1.0);
    let mut out = vec![f16::ZERO; batch * m * n];
    let mut scratch = Scratch::new();
    let secs = time(Duration::from_millis(1500), || {
        let b_shape = if tb { [batch, n, k] } else { [batch, k, n] };
        matmul(&a, &[batch, m, k], &b, &b_shape, false, tb, &mut out, &mut scratch).unwrap();
        black_box(&out);
    });
    report(name, 2.0 * (batch * m * n * k) as f64, secs, peak);
}

fn main() {
    let peak1 = measure_f32_fma_peak_gflops(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peak = measure_f32_fma_peak_gflops(threads);
    println!(
        "f32 FMA peak: {peak1:.1} GFLOP/s on 1 thread, {peak:.1} GFLOP/s on {threads} threads"
    );
    println!("ratios below are to the {threads}-thread peak");

    conv_case("conv 1x1 768->768, spatial 256 (fp16)", 768, 768, 1, 256, 1, peak);
    conv_case("conv 1x1 768->2048, spatial 256 (fp16)", 768, 2048, 1, 256, 1, peak);
    conv_case("conv 3x3 64->64, spatial 32x32 (fp16)", 64, 64, 32, 32, 3, peak);
    conv_case("conv 3x3 64->64, spatial 56x56 (fp16)", 64, 64, 56, 56, 3, peak);
    conv_case("conv 1x1 64->64, spatial 32 (seed, fp16)", 64, 64, 1, 32, 1, peak);
    matmul_case("matmul 1024x1024x1024 (fp16)", 1, (1024, 1024, 1024), false, peak);
    matmul_case("matmul 256x1024x2048 (fixture 08 qm, fp16)", 1, (256, 1024, 2048), false, peak);
    matmul_case("matmul 16x 256x128x256 y^T (fixture 08 mm1)", 16, (256, 128, 256), true, peak);
    matmul_case("matmul 16x 256x256x128 (fixture 08 mm2)", 16, (256, 256, 128), false, peak);

    let name = "attention 12 heads, seq 256, dim 64 (fp16)";
    if !selected(name) {
        return;
    }
    // 12 heads, sequence 256, head dim 64.
    let (h, l, e) = (12, 256, 64);
    let shape = [1, h, l, e];
    let (q, k, v) = (data(h * l * e, 3, 1.0), data(h * l * e, 4, 1.0), data(h * l * e, 5, 1.0));
    let mut out = vec![f16::ZERO; h * l * e];
    let mut scratch = Scratch::new();
    let secs = time(Duration::from_millis(1500), || {
        scaled_dot_product_attention(
            &q,
            &shape,
            &k,
            &shape,
            &v,
            &shape,
            None,
            true,
            &mut out,
            &mut scratch,
        )
        .unwrap();
        black_box(&out);
    });
    report(
        "attention 12 heads, seq 256, dim 64 (fp16)",
        (h * 2 * 2 * l * l * e) as f64,
        secs,
        peak,
    );
}
