//! This machine's f32 fused-multiply-add peak, measured: the yardstick `anemone bench` and the
//! kernel benchmarks report their GFLOP/s against.
//!
//! The loop keeps enough independent accumulators in flight to cover the FMA latency on every
//! pipe, uses the widest vectors the CPU has (AVX-512, else AVX2+FMA, detected at run time), and
//! runs on `threads` OS threads at once so that the per-core and whole-machine peaks can both be
//! read.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// How long each thread runs the FMA loop in all (after a short warm-up).
const MEASURE_TIME: Duration = Duration::from_millis(300);

/// Measures the f32 FMA throughput, in GFLOP/s (an FMA counts as 2 FLOPs), of `threads`
/// threads running at once (0 means one thread per available core): the best of several short
/// rounds. Takes about a third of a second.
pub fn measure_f32_fma_peak_gflops(threads: usize) -> f64 {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let kernel = FmaKernel::detect();
    // Warm up (clocks, and the wide units' power gating) before timing.
    kernel.run(kernel.iters_for(Duration::from_millis(30)));
    let iters = kernel.iters_for(MEASURE_TIME / ROUNDS);
    // A peak is a best case: keep the fastest round, so that a burst of other work on the
    // machine lowers one round rather than the result.
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let flops: f64 = std::thread::scope(|scope| {
                let handles: Vec<_> =
                    (0..threads).map(|_| scope.spawn(move || kernel.run(iters))).collect();
                handles.into_iter().map(|h| h.join().expect("FMA peak thread panicked")).sum()
            });
            flops / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Timed rounds of the FMA loop.
const ROUNDS: u32 = 5;

/// The widest FMA loop this CPU can run.
#[derive(Clone, Copy, Debug)]
enum FmaKernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

/// Independent accumulators per loop: FMA latency (4-5 cycles) times two pipes, rounded up.
const ACCUMULATORS: usize = 12;

impl FmaKernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return FmaKernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return FmaKernel::Avx2;
            }
        }
        FmaKernel::Portable
    }

    /// FLOPs done by one iteration of the loop.
    fn flops_per_iter(self) -> f64 {
        let lanes = match self {
            #[cfg(target_arch = "x86_64")]
            FmaKernel::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            FmaKernel::Avx2 => 8,
            FmaKernel::Portable => 8,
        };
        (ACCUMULATORS * lanes * 2) as f64
    }

    /// Iterations that take roughly `target` on one thread.
    fn iters_for(self, target: Duration) -> u64 {
        let mut iters = 1u64 << 14;
        loop {
            let start = Instant::now();
            self.run(iters);
            let took = start.elapsed();
            if took >= target / 8 || iters >= 1 << 40 {
                let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-9);
                return ((iters as f64) * scale).max(1.0) as u64;
            }
            iters *= 4;
        }
    }

    /// Runs `iters` iterations and returns the FLOPs done.
    fn run(self, iters: u64) -> f64 {
        let sink = match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() chose this variant only after checking the CPU has AVX-512F.
            FmaKernel::Avx512 => unsafe { x86::fma_loop_avx512(iters) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() chose this variant only after checking the CPU has AVX2 and FMA.
            FmaKernel::Avx2 => unsafe { x86::fma_loop_avx2(iters) },
            FmaKernel::Portable => portable_fma_loop(iters),
        };
        black_box(sink);
        iters as f64 * self.flops_per_iter()
    }
}

/// Scalar-array loop the compiler may vectorize; only for CPUs without AVX2.
fn portable_fma_loop(iters: u64) -> f32 {
    let mut acc = [[0.0f32; 8]; ACCUMULATORS];
    let a = black_box(0.999_999f32);
    let b = black_box(1e-7f32);
    for _ in 0..iters {
        for lane in acc.iter_mut() {
            for x in lane.iter_mut() {
                *x = x.mul_add(a, b);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ACCUMULATORS;
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_loop_avx512(iters: u64) -> f32 {
        let a = _mm512_set1_ps(black_box(0.999_999));
        let b = _mm512_set1_ps(black_box(1e-7));
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut total = _mm512_setzero_ps();
        for x in acc {
            total = _mm512_add_ps(total, x);
        }
        _mm512_reduce_add_ps(total)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_loop_avx2(iters: u64) -> f32 {
        let a = _mm256_set1_ps(black_box(0.999_999));
        let b = _mm256_set1_ps(black_box(1e-7));
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut total = _mm256_setzero_ps();
        for x in acc {
            total = _mm256_add_ps(total, x);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds exactly 8 f32, the width of one unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_positive_and_finite() {
        let mut kernel = FmaKernel::detect();
        // The portable loop is exercised too, whatever the CPU.
        for _ in 0..2 {
            let flops = kernel.run(1000);
            assert_eq!(flops, 1000.0 * kernel.flops_per_iter());
            kernel = FmaKernel::Portable;
        }
    }
}
