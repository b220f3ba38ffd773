//! Attention on the simulator: the fused sdpa kernel and the decomposed graph the training
//! kernels use, op by op, with each op's share of the time.
//!
//! `cargo bench -p anemone --bench attention [-- WORD]`: prints milliseconds per call (median
//! and best) for
//! - fused `scaled_dot_product_attention`, 12 heads x seq 256 x head dim 64 (fp16), and the same
//!   attention run as the decomposed graph (matmul, scale mul, softmax, matmul) for comparison;
//! - the fused kernel on the stories15m shape below (causal mask);
//! - the stories15m attention core (6 heads of 48, seq 256, causal mask add), decomposed as
//!   `crates/train` builds it, with the time of each op;
//! - softmax over `[6, 256, 256]` and the unary activations over a `[256, 2048]` tensor.
//!
//! Run the binary built from an older tree next to a newer one to get before/after ratios.

mod common;

use common::{data, time};
use std::hint::black_box;
use std::time::{Duration, Instant};

use anemone::sim::kernels::Scratch;
use anemone::sim::kernels::attention::{AttentionMask, scaled_dot_product_attention};
use anemone::sim::kernels::elementwise::{BinaryOp, GeluMode, UnaryOp, binary, unary};
use anemone::sim::kernels::matmul::matmul;
use anemone::sim::kernels::softmax::softmax;
use half::f16;

fn report(name: &str, (median, best): (f64, f64)) {
    println!("{name:<52} median {:>8.3} ms | best {:>8.3} ms", median * 1e3, best * 1e3);
}

/// Whether a case runs: `cargo bench --bench attention -- WORD` runs the cases naming WORD.
fn selected(name: &str) -> bool {
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    words.is_empty() || words.iter().any(|w| name.contains(w.as_str()))
}

/// Operands and buffers of the decomposed graph
/// `matmul(Q, K^T) -> mul(scale) -> [add(mask)] -> softmax -> matmul(., V)`.
struct Decomposed {
    heads: usize,
    seq: usize,
    hd: usize,
    q: Vec<f16>,
    k: Vec<f16>,
    v: Vec<f16>,
    mask: Option<Vec<f16>>,
    scores: Vec<f16>,
    scaled: Vec<f16>,
    masked: Vec<f16>,
    probs: Vec<f16>,
    out: Vec<f16>,
    scratch: Scratch,
}

impl Decomposed {
    fn new(heads: usize, seq: usize, hd: usize, causal: bool) -> Self {
        let n = heads * seq * hd;
        let sc = heads * seq * seq;
        let mask = causal.then(|| {
            (0..seq * seq)
                .map(|i| f16::from_f32(if i % seq > i / seq { -65504.0 } else { 0.0 }))
                .collect()
        });
        Decomposed {
            heads,
            seq,
            hd,
            q: data(n, 3, 4.0),
            k: data(n, 4, 4.0),
            v: data(n, 5, 1.0),
            mask,
            scores: vec![f16::ZERO; sc],
            scaled: vec![f16::ZERO; sc],
            masked: vec![f16::ZERO; sc],
            probs: vec![f16::ZERO; sc],
            out: vec![f16::ZERO; n],
            scratch: Scratch::new(),
        }
    }

    /// Runs the graph; `split` gets the seconds of each op in order when given.
    fn run(&mut self, mut split: Option<&mut [f64; 5]>) {
        let (h, l, e) = (self.heads, self.seq, self.hd);
        let qs = [1, h, l, e];
        let ss = [1, h, l, l];
        let mut t = Instant::now();
        let mut lap = |i: usize, split: &mut Option<&mut [f64; 5]>| {
            if let Some(s) = split.as_deref_mut() {
                s[i] += t.elapsed().as_secs_f64();
            }
            t = Instant::now();
        };
        matmul(&self.q, &qs, &self.k, &qs, false, true, &mut self.scores, &mut self.scratch)
            .unwrap();
        lap(0, &mut split);
        let scale = [f16::from_f32(1.0 / (e as f32).sqrt())];
        binary(BinaryOp::Mul, &self.scores, &ss, &scale, &[], &mut self.scaled).unwrap();
        lap(1, &mut split);
        let probs_in = match &self.mask {
            Some(m) => {
                binary(BinaryOp::Add, &self.scaled, &ss, m, &[1, 1, l, l], &mut self.masked)
                    .unwrap();
                &self.masked
            }
            None => &self.scaled,
        };
        lap(2, &mut split);
        softmax(probs_in, &ss, 3, &mut self.probs).unwrap();
        lap(3, &mut split);
        matmul(&self.probs, &ss, &self.v, &qs, false, false, &mut self.out, &mut self.scratch)
            .unwrap();
        lap(4, &mut split);
        black_box(&self.out);
    }

    fn case(&mut self, name: &str) {
        if !selected(name) {
            return;
        }
        let secs = time(Duration::from_millis(1500), || self.run(None));
        report(name, secs);
        let mut split = [0.0; 5];
        let reps = 20;
        for _ in 0..reps {
            self.run(Some(&mut split));
        }
        let total: f64 = split.iter().sum();
        let names = ["matmul QK^T", "mul scale", "add mask", "softmax", "matmul PV"];
        let parts: Vec<String> = names
            .iter()
            .zip(split)
            .map(|(n, s)| format!("{n} {:.3} ms ({:.0}%)", s / reps as f64 * 1e3, s / total * 1e2))
            .collect();
        println!("    {}", parts.join(", "));
    }
}

/// The fused kernel on `[1, heads, seq, hd]` operands, with a causal additive mask (-65504
/// above the diagonal, broadcast over the heads) when `causal`.
fn sdpa_case(name: &str, heads: usize, seq: usize, hd: usize, causal: bool) {
    if !selected(name) {
        return;
    }
    let shape = [1, heads, seq, hd];
    let n = heads * seq * hd;
    let (q, k, v) = (data(n, 3, 4.0), data(n, 4, 4.0), data(n, 5, 1.0));
    let mask: Vec<f16> = (0..seq * seq)
        .map(|i| f16::from_f32(if i % seq > i / seq { -65504.0 } else { 0.0 }))
        .collect();
    let mask_shape = [seq, seq];
    let mut out = vec![f16::ZERO; n];
    let mut scratch = Scratch::new();
    let secs = time(Duration::from_millis(1500), || {
        scaled_dot_product_attention(
            &q,
            &shape,
            &k,
            &shape,
            &v,
            &shape,
            causal.then_some(AttentionMask::Additive { values: &mask, shape: &mask_shape }),
            true,
            &mut out,
            &mut scratch,
        )
        .unwrap();
        black_box(&out);
    });
    report(name, secs);
}

fn softmax_case(name: &str, shape: &[usize], axis: usize) {
    if !selected(name) {
        return;
    }
    let n: usize = shape.iter().product();
    let x = data(n, 9, 12.0);
    let mut out = vec![f16::ZERO; n];
    let secs = time(Duration::from_millis(800), || {
        softmax(&x, shape, axis, &mut out).unwrap();
        black_box(&out);
    });
    report(name, secs);
}

fn unary_case(name: &str, op: UnaryOp) {
    if !selected(name) {
        return;
    }
    let n = 256 * 2048;
    let x = data(n, 11, 10.0);
    let mut out = vec![f16::ZERO; n];
    let secs = time(Duration::from_millis(800), || {
        unary(op, &x, &mut out).unwrap();
        black_box(&out);
    });
    report(name, secs);
}

fn main() {
    sdpa_case("sdpa fused 12x256x64 (fp16)", 12, 256, 64, false);
    sdpa_case("sdpa fused stories15m 6x256x48 causal (fp16)", 6, 256, 48, true);
    Decomposed::new(12, 256, 64, false).case("sdpa decomposed 12x256x64 (fp16)");
    Decomposed::new(6, 256, 48, true).case("stories15m attention 6x256x48 causal (fp16)");
    softmax_case("softmax [6, 256, 256] last axis (fp16)", &[6, 256, 256], 2);
    softmax_case("softmax [64, 256, 32] middle axis (fp16)", &[64, 256, 32], 1);
    for (name, op) in [
        ("unary gelu exact [256, 2048] (fp16)", UnaryOp::Gelu(GeluMode::Exact)),
        ("unary gelu tanh [256, 2048] (fp16)", UnaryOp::Gelu(GeluMode::TanhApproximation)),
        ("unary silu [256, 2048] (fp16)", UnaryOp::Silu),
        ("unary sigmoid [256, 2048] (fp16)", UnaryOp::Sigmoid),
        ("unary tanh [256, 2048] (fp16)", UnaryOp::Tanh),
        ("unary exp [256, 2048] (fp16)", UnaryOp::Exp),
    ] {
        unary_case(name, op);
    }
}
