//! Each device kernel alone, on the simulator (fp16 storage and arithmetic), against the
//! f64 reference of the same computation.
//!
//! Bound: for every output tensor, the largest absolute error is at most 0.5% of the
//! largest magnitude of the reference tensor, and the cosine similarity is at least
//! 0.99999. fp16 keeps 11 significant bits (relative step 2^-11 = 4.9e-4); each kernel
//! chains up to a dozen rounded operations (projections, RoPE products, scaled scores,
//! softmax, weighted sums), which measured errors of 0.03-0.1% of the scale; 0.5% leaves
//! room for other seeds without hiding a wrong formula, which errs by tens of percent.

mod common;

use anemone::{Device, Model};
use anemone_train::config::ModelConfig;
use anemone_train::kernels::{self, KernelKind, KernelProgram};
use anemone_train::reference::{self, AttentionWeights, FfnWeights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn config() -> ModelConfig {
    ModelConfig {
        dim: 64,
        hidden_dim: 160,
        n_layers: 1,
        n_heads: 4,
        seq_len: 32,
        vocab_size: 64,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    }
}

const BATCH: usize = 2;

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0) * scale).collect()
}

/// Values as fp16 would store them, so that the reference sees the device's inputs.
fn f16_round(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(half::f16::from_f64(x).to_f32())).collect()
}

/// `[rows, cols]` row-major -> `[cols, rows]`.
fn transpose(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn compile(kind: KernelKind, device: &Device) -> (KernelProgram, Model) {
    let program = kernels::build_for(kind, &config(), BATCH).unwrap();
    let mut model = device.compile(&program.built.program, &program.built.weights).unwrap();
    model.load().unwrap();
    for layout in &program.inputs {
        model.use_packed_layout(layout.clone()).unwrap();
    }
    (program, model)
}

/// Writes a token-major `[T, C]` activation into a channel-major region.
fn set_tokens(model: &mut Model, region: &str, v: &[f64], channels: usize) {
    let t = v.len() / channels;
    model.set_weight(region, &f32s(&transpose(v, t, channels))).unwrap();
}

/// Reads a channel-major output as token-major `[T, C]`.
fn output_tokens(model: &Model, name: &str, channels: usize) -> Vec<f64> {
    let v: Vec<f64> =
        model.output(name).unwrap().read_f32().unwrap().iter().map(|&x| f64::from(x)).collect();
    transpose(&v, channels, v.len() / channels)
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    let cos = common::cosine(got, want);
    println!(
        "{what}: max error {:.3e} of scale {scale:.3e} ({:.3}%), cosine {cos:.7}",
        worst,
        100.0 * worst / scale
    );
    assert!(scale > 0.0, "{what}: the reference is all zeros, the test proves nothing");
    assert!(worst <= 0.005 * scale, "{what}: max error {worst} exceeds 0.5% of {scale}");
    assert!(cos >= 0.99999, "{what}: cosine {cos}");
}

struct Setup {
    rng: ChaCha8Rng,
    t: usize,
}

impl Setup {
    fn new(seed: u64) -> Setup {
        Setup { rng: ChaCha8Rng::seed_from_u64(seed), t: BATCH * config().seq_len }
    }

    fn attention_weights(&mut self) -> AttentionWeights {
        let d = config().dim;
        // Scale 0.2 makes scores of order one, so softmax is neither flat nor one-hot.
        let mut w = || f16_round(&random(&mut self.rng, d * d, 0.2));
        AttentionWeights { wq: w(), wk: w(), wv: w(), wo: w() }
    }

    fn ffn_weights(&mut self) -> FfnWeights {
        let (d, h) = (config().dim, config().hidden_dim);
        let mut w = |n| f16_round(&random(&mut self.rng, n, 0.15));
        FfnWeights { w1: w(h * d), w2: w(d * h), w3: w(h * d) }
    }

    fn activations(&mut self, channels: usize) -> Vec<f64> {
        f16_round(&random(&mut self.rng, self.t * channels, 1.0))
    }
}

fn stage_attention(model: &mut Model, w: &AttentionWeights) {
    let d = config().dim;
    for (name, m) in [("wq", &w.wq), ("wk", &w.wk), ("wv", &w.wv), ("wo", &w.wo)] {
        model.set_weight(name, &f32s(&transpose(m, d, d))).unwrap();
    }
}

fn stage_ffn(model: &mut Model, w: &FfnWeights) {
    let (d, h) = (config().dim, config().hidden_dim);
    model.set_weight("w1", &f32s(&transpose(&w.w1, h, d))).unwrap();
    model.set_weight("w3", &f32s(&transpose(&w.w3, h, d))).unwrap();
    model.set_weight("w2", &f32s(&w.w2)).unwrap();
}

#[test]
fn attention_forward_kernel() {
    let cfg = config();
    let device = Device::simulator();
    let (_, mut model) = compile(KernelKind::AttnFwd, &device);
    let mut s = Setup::new(1);
    let w = s.attention_weights();
    let xn = s.activations(cfg.dim);
    stage_attention(&mut model, &w);
    set_tokens(&mut model, "activations", &xn, cfg.dim);
    model.evaluate().unwrap();
    let want = reference::attention_forward(&cfg, &w, &xn);
    assert_close("q (rope)", &output_tokens(&model, "q", cfg.dim), &want.q_rope);
    assert_close("k (rope)", &output_tokens(&model, "k", cfg.dim), &want.k_rope);
    assert_close("v", &output_tokens(&model, "v", cfg.dim), &want.v);
    assert_close("o", &output_tokens(&model, "o", cfg.dim), &want.o);
    assert_close("y", &output_tokens(&model, "y", cfg.dim), &want.out);
}

#[test]
fn ffn_forward_kernel() {
    let cfg = config();
    let device = Device::simulator();
    let (_, mut model) = compile(KernelKind::FfnFwd, &device);
    let mut s = Setup::new(2);
    let w = s.ffn_weights();
    let xn = s.activations(cfg.dim);
    stage_ffn(&mut model, &w);
    set_tokens(&mut model, "activations", &xn, cfg.dim);
    model.evaluate().unwrap();
    let want = reference::ffn_forward(&cfg, &w, &xn);
    let h = cfg.hidden_dim;
    assert_close("h1", &output_tokens(&model, "h1", h), &want.h1);
    assert_close("h3", &output_tokens(&model, "h3", h), &want.h3);
    assert_close("g", &output_tokens(&model, "g", h), &want.g);
    assert_close("y", &output_tokens(&model, "y", cfg.dim), &want.out);
}

#[test]
fn attention_backward_kernel() {
    let cfg = config();
    let device = Device::simulator();
    let (_, mut model) = compile(KernelKind::AttnBwd, &device);
    let mut s = Setup::new(3);
    let w = s.attention_weights();
    let xn = s.activations(cfg.dim);
    let dy = s.activations(cfg.dim);
    let fwd = reference::attention_forward(&cfg, &w, &xn);
    // The kernel gets the forward's q, k (with RoPE) and v as fp16, as in training.
    let fwd = reference::AttentionForward {
        q_rope: f16_round(&fwd.q_rope),
        k_rope: f16_round(&fwd.k_rope),
        v: f16_round(&fwd.v),
        ..fwd
    };
    stage_attention(&mut model, &w);
    set_tokens(&mut model, "activations", &dy, cfg.dim);
    set_tokens(&mut model, "q", &fwd.q_rope, cfg.dim);
    set_tokens(&mut model, "k", &fwd.k_rope, cfg.dim);
    set_tokens(&mut model, "v", &fwd.v, cfg.dim);
    model.evaluate().unwrap();
    let want = reference::attention_backward(&cfg, &w, &xn, &fwd, &dy);
    assert_close("dq", &output_tokens(&model, "dq", cfg.dim), &want.dq);
    assert_close("dk", &output_tokens(&model, "dk", cfg.dim), &want.dk);
    assert_close("dv", &output_tokens(&model, "dv", cfg.dim), &want.dv);
    assert_close("dx", &output_tokens(&model, "dx", cfg.dim), &want.dxn);
}

#[test]
fn ffn_backward_kernel() {
    let cfg = config();
    let device = Device::simulator();
    let (_, mut model) = compile(KernelKind::FfnBwd, &device);
    let mut s = Setup::new(4);
    let w = s.ffn_weights();
    let xn = s.activations(cfg.dim);
    let dy = s.activations(cfg.dim);
    let fwd = reference::ffn_forward(&cfg, &w, &xn);
    let fwd = reference::FfnForward { h1: f16_round(&fwd.h1), h3: f16_round(&fwd.h3), ..fwd };
    stage_ffn(&mut model, &w);
    set_tokens(&mut model, "activations", &dy, cfg.dim);
    set_tokens(&mut model, "h1", &fwd.h1, cfg.hidden_dim);
    set_tokens(&mut model, "h3", &fwd.h3, cfg.hidden_dim);
    model.evaluate().unwrap();
    let want = reference::ffn_backward(&cfg, &w, &xn, &fwd, &dy);
    let h = cfg.hidden_dim;
    assert_close("dh1", &output_tokens(&model, "dh1", h), &want.dh1);
    assert_close("dh3", &output_tokens(&model, "dh3", h), &want.dh3);
    assert_close("dx", &output_tokens(&model, "dx", cfg.dim), &want.dxn);
}

#[test]
fn kernels_use_no_sdpa_and_at_most_16_weight_files_entries() {
    // The ANE ignores sdpa's attn_mask, so attention must be spelled out; and it takes at
    // most 16 BLOBFILE constants per program (REFERENCE.md §2).
    for kind in KernelKind::ALL {
        let p = kernels::build_for(kind, &config(), BATCH).unwrap();
        let text = p.built.text();
        assert!(!text.contains("scaled_dot_product_attention"), "{}", kind.name());
        assert!(text.matches("BLOBFILE").count() <= 16, "{}", kind.name());
        let lints = anemone_mil::lint::lint(&p.built.program);
        let errors: Vec<_> = lints.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", kind.name());
    }
}
