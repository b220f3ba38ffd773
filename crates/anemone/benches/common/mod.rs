//! What the kernel benchmarks share: deterministic fp16 inputs and the timing loop.

use std::time::{Duration, Instant};

use half::f16;

/// `n` fp16 values spread over `[-scale / 2, scale / 2)` by an xorshift from `seed`.
pub fn data(n: usize, seed: u32, scale: f32) -> Vec<f16> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            f16::from_f32(((s >> 8) as f32 / (1 << 24) as f32 - 0.5) * scale)
        })
        .collect()
}

/// (median, best) seconds per call of `f`, over runs filling about `budget` (at least 5, at
/// most 400).
pub fn time(budget: Duration, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let runs = ((budget.as_secs_f64() / once) as usize).clamp(5, 400);
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[runs / 2], samples[0])
}
