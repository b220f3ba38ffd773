//! Milliseconds per optimizer step of anemone-train on the simulator, split into device,
//! CPU and copy time.
//!
//! One step is what `Trainer::step_on` does for one micro-batch: forward and backward
//! (`Engine::accumulate_gradients`), gradient clipping, AdamW, and staging the new weights
//! into the kernels' inputs. Tokens are random (seeded); there is no data loading,
//! validation or checkpointing.
//!
//! ```text
//! cargo bench -p anemone-train --bench train_step -- [PRESET...] [--steps N] [--seconds S]
//!     [--json] [--vocab V]
//! ```
//!
//! - `PRESET`: `tiny` (its own batch of 16 x 64 tokens) and/or `stories15m` (4 x 256 tokens,
//!   one micro-batch per step); both by default.
//! - `--steps N`: measured steps after 2 warm-up steps (default 10 for tiny, 5 otherwise).
//! - `--seconds S`: measure for about S seconds instead (at least 3 steps).
//! - `--json`: one JSON object per preset on stdout: preset, vocab, batch, tokens, steps
//!   (measured), ms_per_step_min, ms_per_step_median, device_ms, cpu_ms, copy_ms (means per
//!   step; the optimizer counts as CPU, staging weights as copy), optim_ms (the CPU part
//!   spent in clipping and AdamW),
//!   min_step_device_ms, min_step_cpu_ms, min_step_copy_ms (the split of the fastest step),
//!   tokens_per_s (at the median step) and compiles.
//! - `--vocab V`: overrides the presets' vocabulary size (comparing with the preset's own
//!   shows what the classifier and its cross-entropy cost inside a step).
//!
//! `scripts/bench-train.sh` runs this next to the same step written in JAX
//! (`scripts/bench_train_jax.py`) and prints the comparison.

use std::time::{Duration, Instant};

use anemone::Device;
use anemone_train::optim::{self, AdamW};
use anemone_train::step::{Engine, Timing};
use anemone_train::{Config, Params, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Warm-up steps before measuring (the first touches every surface and buffer).
const WARMUP: usize = 2;
const SEED: u64 = 7;

struct Options {
    presets: Vec<String>,
    steps: Option<usize>,
    seconds: Option<f64>,
    json: bool,
    vocab: Option<usize>,
}

fn parse_args() -> Options {
    let mut o =
        Options { presets: Vec::new(), steps: None, seconds: None, json: false, vocab: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| -> String {
            args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        match a.as_str() {
            // cargo bench passes --bench to harness-less benches.
            "--bench" => {}
            "--json" => o.json = true,
            "--steps" => {
                let v = value("--steps");
                o.steps = Some(v.parse().unwrap_or_else(|_| fail("--steps takes a count")));
            }
            "--vocab" => {
                let v = value("--vocab");
                o.vocab = Some(v.parse().unwrap_or_else(|_| fail("--vocab takes a size")));
            }
            "--seconds" => {
                let v = value("--seconds");
                o.seconds = Some(v.parse().unwrap_or_else(|_| fail("--seconds takes a number")));
            }
            flag if flag.starts_with('-') => fail(&format!("unknown option {flag}")),
            name => o.presets.push(name.to_string()),
        }
    }
    if o.presets.is_empty() {
        o.presets = vec!["tiny".into(), "stories15m".into()];
    }
    o
}

fn fail(msg: &str) -> ! {
    eprintln!("train_step: {msg}");
    std::process::exit(2)
}

/// The preset with the batch this benchmark uses: tiny's own (16 sequences), and
/// 4 x 256 tokens in one micro-batch for the others.
fn bench_config(name: &str, vocab: Option<usize>) -> Config {
    let mut config =
        Config::preset(name).unwrap_or_else(|| fail(&format!("unknown preset `{name}`")));
    if name != "tiny" {
        config.train.batch = 4;
    }
    config.train.accum_steps = 1;
    if let Some(v) = vocab {
        config.model.vocab_size = v;
    }
    config.validate().unwrap_or_else(|e| fail(&format!("{name}: {e}")));
    config
}

/// Everything one training step touches.
struct Run {
    engine: Engine,
    params: Params,
    grads: Params,
    adam: AdamW,
    train: TrainConfig,
    ids: Vec<u32>,
    targets: Vec<u32>,
    step: usize,
}

/// One step's wall time, where it went, and the optimizer's share of the CPU time.
struct Sample {
    wall: Duration,
    timing: Timing,
    optim: Duration,
}

impl Run {
    fn new(config: &Config) -> (Run, usize) {
        let device = Device::simulator();
        let model = &config.model;
        let batch = config.train.batch;
        let engine = Engine::new(&device, model, batch, true)
            .unwrap_or_else(|e| fail(&format!("building the engine: {e}")));
        let compiles = engine.compiles();
        let params = Params::init(model, SEED);
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let tokens = batch * model.seq_len;
        let vocab = model.vocab_size as u32;
        let ids: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..vocab)).collect();
        let targets: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..vocab)).collect();
        let mut run = Run {
            grads: Params::zeros(params.layout.clone()),
            adam: AdamW::new(params.layout.clone()),
            engine,
            params,
            train: config.train.clone(),
            ids,
            targets,
            step: 0,
        };
        run.engine.stage_weights(&run.params).unwrap_or_else(|e| fail(&e.to_string()));
        run.engine.take_timing();
        (run, compiles)
    }

    /// One optimizer step, as `Trainer::step_on` takes it for a single micro-batch.
    fn step(&mut self) -> Sample {
        let start = Instant::now();
        let t = &self.train;
        self.grads.clear();
        let loss = self
            .engine
            .accumulate_gradients(
                &self.params,
                &self.ids,
                &self.targets,
                t.loss_scale,
                1.0,
                &mut self.grads,
            )
            .unwrap_or_else(|e| fail(&format!("step: {e}")));
        let clock = Instant::now();
        let norm = optim::clip_grad_norm(&mut self.grads, t.grad_clip);
        let next = self.step + 1;
        // A constant horizon: the schedule's value does not change the work.
        let lr = optim::lr_at(self.step, 1000, t);
        self.adam.step(&mut self.params, &self.grads, next, lr, t);
        let optim = clock.elapsed();
        self.engine.stage_weights(&self.params).unwrap_or_else(|e| fail(&e.to_string()));
        self.step = next;
        let wall = start.elapsed();
        if !loss.is_finite() || !norm.is_finite() {
            fail(&format!("step {next}: loss {loss}, gradient norm {norm}"));
        }
        let mut timing = self.engine.take_timing();
        timing.cpu += optim;
        Sample { wall, timing, optim }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench_preset(name: &str, o: &Options) {
    let config = bench_config(name, o.vocab);
    let m = &config.model;
    let batch = config.train.batch;
    let tokens = batch * m.seq_len;
    let build = Instant::now();
    let (mut run, compiles) = Run::new(&config);
    let build_s = build.elapsed().as_secs_f64();
    for _ in 0..WARMUP {
        run.step();
    }
    let default_steps = if name == "tiny" { 10 } else { 5 };
    let mut samples = Vec::new();
    let started = Instant::now();
    loop {
        samples.push(run.step());
        let done = match (o.seconds, o.steps) {
            (Some(s), _) => samples.len() >= 3 && started.elapsed().as_secs_f64() >= s,
            (None, steps) => samples.len() >= steps.unwrap_or(default_steps),
        };
        if done {
            break;
        }
    }
    let n = samples.len();
    let fastest = samples.iter().min_by_key(|s| s.wall).expect("at least one step");
    let mut walls: Vec<f64> = samples.iter().map(|s| ms(s.wall)).collect();
    walls.sort_by(f64::total_cmp);
    let min = walls[0];
    let median = if n % 2 == 1 { walls[n / 2] } else { (walls[n / 2 - 1] + walls[n / 2]) / 2.0 };
    let mean =
        |f: &dyn Fn(&Sample) -> Duration| samples.iter().map(|s| ms(f(s))).sum::<f64>() / n as f64;
    let device = mean(&|s| s.timing.device);
    let cpu = mean(&|s| s.timing.cpu);
    let copy = mean(&|s| s.timing.copy);
    let optim_ms = mean(&|s| s.optim);
    let tokens_per_s = tokens as f64 / (median / 1e3);
    let split = |t: &Timing| {
        format!("device {:.1} ms, cpu {:.1} ms, copy {:.1} ms", ms(t.device), ms(t.cpu), ms(t.copy))
    };
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "preset": name,
                "vocab": m.vocab_size,
                "batch": batch,
                "tokens": tokens,
                "steps": n,
                "ms_per_step_min": min,
                "ms_per_step_median": median,
                "device_ms": device,
                "cpu_ms": cpu,
                "copy_ms": copy,
                "optim_ms": optim_ms,
                "min_step_device_ms": ms(fastest.timing.device),
                "min_step_cpu_ms": ms(fastest.timing.cpu),
                "min_step_copy_ms": ms(fastest.timing.copy),
                "tokens_per_s": tokens_per_s,
                "compiles": compiles,
            })
        );
    } else {
        println!(
            "{name}: dim {}, hidden {}, {} layers, {} heads, seq {}, vocab {}; batch {batch} \
             ({tokens} tokens/step), {} parameters",
            m.dim,
            m.hidden_dim,
            m.n_layers,
            m.n_heads,
            m.seq_len,
            m.vocab_size,
            m.parameter_count()
        );
        println!("  engine built in {build_s:.2} s with {compiles} compiles; {n} steps measured");
        println!(
            "  ms/step: min {min:.1}, median {median:.1} ({tokens_per_s:.0} tokens/s at the \
             median)"
        );
        println!(
            "  mean per step: device {device:.1} ms, cpu {cpu:.1} ms (of which clip + AdamW \
             {optim_ms:.1}), copy {copy:.1} ms"
        );
        println!("  fastest step: {}", split(&fastest.timing));
    }
}

/// Best of `reps` runs of `f`, in ms.
fn main() {
    let o = parse_args();
    for name in &o.presets {
        bench_preset(name, &o);
    }
}
