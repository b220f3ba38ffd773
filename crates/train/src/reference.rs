//! An independent, deliberately plain f64 implementation of the model's forward and
//! backward pass: the oracle the device kernels and the fast CPU path are tested against.
//!
//! It owns the exact math of the model (embedding, RMSNorm, causal attention with llama2.c's
//! interleaved RoPE, SwiGLU FFN, final norm, classifier, mean cross-entropy) and exposes
//! each piece with its input gradients so a kernel can be checked in isolation.
//!
//! Everything here is written as nested loops in f64 with no gemm, no fp16 and no
//! parallelism, so that it shares nothing with the code it checks. Parameters are promoted
//! from f32 to f64 on the way in.
//!
//! Layouts: activations are token-major, `[tokens, channels]` row-major, where
//! `tokens = batch * seq_len` and the sequences follow one another (the position of token
//! `t` is `t % seq_len`). Weights keep the model's orientation: linear weights `[out, in]`,
//! embedding and classifier `[vocab, dim]`. Attention probabilities are
//! `[batch, n_heads, seq_len, seq_len]` with zeros above the diagonal.

use crate::config::ModelConfig;
use crate::params::{ParamLayout, Params, Tensor};

/// One tensor of `params` promoted to f64, in its own layout.
pub fn tensor_f64(params: &Params, t: Tensor) -> Vec<f64> {
    params.get(t).iter().map(|&v| f64::from(v)).collect()
}

/// All of `params.data` promoted to f64 (same flat layout).
pub fn params_f64(params: &Params) -> Vec<f64> {
    params.data.iter().map(|&v| f64::from(v)).collect()
}

/// Tensor `t` of a flat f64 buffer laid out by `layout`.
fn get<'a>(layout: &ParamLayout, data: &'a [f64], t: Tensor) -> &'a [f64] {
    &data[layout.range(t)]
}

/// The tensor holding the classifier `[vocab, dim]`: the embedding when shared.
fn classifier_tensor(config: &ModelConfig) -> Tensor {
    if config.shared_classifier { Tensor::Embedding } else { Tensor::Classifier }
}

/// `y = x W^T`: `x` is `[tokens, n_in]`, `w` is `[n_out, n_in]`; returns `[tokens, n_out]`.
pub fn linear(x: &[f64], w: &[f64], n_out: usize, n_in: usize) -> Vec<f64> {
    assert_eq!(w.len(), n_out * n_in, "weight is not [{n_out}, {n_in}]");
    assert!(x.len().is_multiple_of(n_in), "input is not [tokens, {n_in}]");
    let tokens = x.len() / n_in;
    let mut y = vec![0.0; tokens * n_out];
    for t in 0..tokens {
        for o in 0..n_out {
            let mut acc = 0.0;
            for i in 0..n_in {
                acc += w[o * n_in + i] * x[t * n_in + i];
            }
            y[t * n_out + o] = acc;
        }
    }
    y
}

/// Backward of [`linear`] for `dy` `[tokens, n_out]`: returns `(dx, dw)` with
/// `dx = dy W` `[tokens, n_in]` and `dw = dy^T x` `[n_out, n_in]`.
pub fn linear_backward(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    n_out: usize,
    n_in: usize,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(w.len(), n_out * n_in, "weight is not [{n_out}, {n_in}]");
    let tokens = x.len() / n_in;
    assert_eq!(dy.len(), tokens * n_out, "dy is not [{tokens}, {n_out}]");
    let mut dx = vec![0.0; tokens * n_in];
    let mut dw = vec![0.0; n_out * n_in];
    for t in 0..tokens {
        for o in 0..n_out {
            let g = dy[t * n_out + o];
            for i in 0..n_in {
                dx[t * n_in + i] += g * w[o * n_in + i];
                dw[o * n_in + i] += g * x[t * n_in + i];
            }
        }
    }
    (dx, dw)
}

/// RMSNorm of each row of `x` `[tokens, d]` with weight `w` `[d]`:
/// `y_j = x_j / sqrt(mean_k(x_k^2) + eps) * w_j`.
pub fn rmsnorm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    assert!(x.len().is_multiple_of(d), "input is not [tokens, {d}]");
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let r = inv_rms(xr, eps);
        for j in 0..d {
            yr[j] = xr[j] * r * w[j];
        }
    }
    y
}

fn inv_rms(row: &[f64], eps: f64) -> f64 {
    let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
    1.0 / (ms + eps).sqrt()
}

/// Backward of [`rmsnorm`] for `dy` `[tokens, d]`: returns `(dx [tokens, d], dw [d])`.
/// With `r = 1/sqrt(mean(x^2) + eps)`:
/// `dx_j = r w_j dy_j - (r^3 / d) x_j sum_k(dy_k w_k x_k)` (the correction term is NOT
/// multiplied by `w_j`, unlike the anchor's `rmsnorm_bwd`), and `dw_j = sum_t dy_j x_j r`.
pub fn rmsnorm_backward(x: &[f64], w: &[f64], dy: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let d = w.len();
    assert_eq!(x.len(), dy.len(), "x and dy differ in shape");
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; d];
    for ((xr, dyr), dxr) in x.chunks(d).zip(dy.chunks(d)).zip(dx.chunks_mut(d)) {
        let r = inv_rms(xr, eps);
        let dot: f64 = (0..d).map(|k| dyr[k] * w[k] * xr[k]).sum();
        let c = r * r * r / d as f64 * dot;
        for j in 0..d {
            dxr[j] = r * w[j] * dyr[j] - c * xr[j];
            dw[j] += dyr[j] * xr[j] * r;
        }
    }
    (dx, dw)
}

/// The (cos, sin) of llama2.c's RoPE for position `pos` and channel pair `i` of a head of
/// `head_dim` channels.
fn rope_angle(pos: usize, i: usize, head_dim: usize, theta: f64) -> (f64, f64) {
    let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
    let angle = pos as f64 * freq;
    (angle.cos(), angle.sin())
}

/// Rotates every pair by `sign * angle`; `sign = -1` is the inverse rotation.
fn rotate(x: &[f64], config: &ModelConfig, sign: f64) -> Vec<f64> {
    let (dim, hd, seq) = (config.dim, config.head_dim(), config.seq_len);
    assert!(x.len().is_multiple_of(dim * seq), "input is not [batch * {seq}, {dim}]");
    let theta = f64::from(config.rope_theta);
    let mut y = x.to_vec();
    for (t, row) in y.chunks_mut(dim).enumerate() {
        let pos = t % seq;
        for h in 0..config.n_heads {
            for i in 0..hd / 2 {
                let (cos, sin) = rope_angle(pos, i, hd, theta);
                let sin = sign * sin;
                let c = h * hd + 2 * i;
                let (a, b) = (row[c], row[c + 1]);
                row[c] = a * cos - b * sin;
                row[c + 1] = a * sin + b * cos;
            }
        }
    }
    y
}

/// llama2.c's RoPE on `x` `[batch * seq_len, dim]` (q or k, all heads): for head `h` and
/// pair `i < head_dim/2`, channels `(h*hd + 2i, h*hd + 2i + 1)` rotate by
/// `pos / theta^(2i/hd)` radians with `pos = t % seq_len`: `(a, b) -> (a cos - b sin,
/// a sin + b cos)`.
pub fn rope(x: &[f64], config: &ModelConfig) -> Vec<f64> {
    rotate(x, config, 1.0)
}

/// Backward of [`rope`]: the gradient w.r.t. the unrotated input given the gradient w.r.t.
/// the rotated output. RoPE is a rotation, so this is also its inverse (rotation by minus
/// the angle).
pub fn rope_backward(dy: &[f64], config: &ModelConfig) -> Vec<f64> {
    rotate(dy, config, -1.0)
}

/// The weights of one attention block, `[dim, dim]` each (`[out, in]`), in f64.
#[derive(Clone, Debug)]
pub struct AttentionWeights {
    /// Query projection.
    pub wq: Vec<f64>,
    /// Key projection.
    pub wk: Vec<f64>,
    /// Value projection.
    pub wv: Vec<f64>,
    /// Output projection (applied to the heads' concatenated output).
    pub wo: Vec<f64>,
}

impl AttentionWeights {
    /// Layer `l`'s attention weights from `params`.
    pub fn from_params(params: &Params, l: usize) -> AttentionWeights {
        AttentionWeights::from_flat(&params.layout, &params_f64(params), l)
    }

    /// Layer `l`'s attention weights from a flat f64 buffer laid out by `layout`.
    pub fn from_flat(layout: &ParamLayout, data: &[f64], l: usize) -> AttentionWeights {
        AttentionWeights {
            wq: get(layout, data, Tensor::Wq(l)).to_vec(),
            wk: get(layout, data, Tensor::Wk(l)).to_vec(),
            wv: get(layout, data, Tensor::Wv(l)).to_vec(),
            wo: get(layout, data, Tensor::Wo(l)).to_vec(),
        }
    }
}

/// What [`attention_forward`] computes; all `[tokens, dim]` except `probs`.
#[derive(Clone, Debug)]
pub struct AttentionForward {
    /// `Wq xn` after RoPE.
    pub q_rope: Vec<f64>,
    /// `Wk xn` after RoPE.
    pub k_rope: Vec<f64>,
    /// `Wv xn`.
    pub v: Vec<f64>,
    /// Softmax of the causal scores, `[batch, n_heads, seq_len, seq_len]` (`[.., t, s]`,
    /// zero for `s > t`).
    pub probs: Vec<f64>,
    /// The heads' outputs `sum_s P[t, s] v_s`, heads concatenated (before `Wo`).
    pub o: Vec<f64>,
    /// `Wo o`: what is added to the residual stream.
    pub out: Vec<f64>,
}

/// Causal multi-head attention of one layer on the normalised input `xn`
/// `[batch * seq_len, dim]`: scores `q_t . k_s / sqrt(head_dim)` for `s <= t` within each
/// sequence, softmax over `s`, weighted sum of `v`, then `Wo`.
pub fn attention_forward(
    config: &ModelConfig,
    w: &AttentionWeights,
    xn: &[f64],
) -> AttentionForward {
    let (dim, hd, seq, nh) = (config.dim, config.head_dim(), config.seq_len, config.n_heads);
    let tokens = xn.len() / dim;
    assert_eq!(tokens * dim, xn.len());
    assert!(tokens.is_multiple_of(seq), "{tokens} tokens is not a whole number of sequences");
    let batch = tokens / seq;
    let q_rope = rope(&linear(xn, &w.wq, dim, dim), config);
    let k_rope = rope(&linear(xn, &w.wk, dim, dim), config);
    let v = linear(xn, &w.wv, dim, dim);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut probs = vec![0.0; batch * nh * seq * seq];
    let mut o = vec![0.0; tokens * dim];
    for b in 0..batch {
        for h in 0..nh {
            let p = &mut probs[(b * nh + h) * seq * seq..][..seq * seq];
            for t in 0..seq {
                let qt = &q_rope[(b * seq + t) * dim + h * hd..][..hd];
                let row = &mut p[t * seq..][..seq];
                for s in 0..=t {
                    let ks = &k_rope[(b * seq + s) * dim + h * hd..][..hd];
                    row[s] = (0..hd).map(|c| qt[c] * ks[c]).sum::<f64>() * scale;
                }
                // Subtracting the row maximum keeps exp() finite; it cancels in the ratio.
                let max = row[..=t].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for val in &mut row[..=t] {
                    *val = (*val - max).exp();
                    sum += *val;
                }
                for val in &mut row[..=t] {
                    *val /= sum;
                }
                for s in 0..=t {
                    for c in 0..hd {
                        o[(b * seq + t) * dim + h * hd + c] +=
                            row[s] * v[(b * seq + s) * dim + h * hd + c];
                    }
                }
            }
        }
    }
    let out = linear(&o, &w.wo, dim, dim);
    AttentionForward { q_rope, k_rope, v, probs, o, out }
}

/// Gradients from [`attention_backward`]; activations `[tokens, dim]`, weights
/// `[dim, dim]`.
#[derive(Clone, Debug)]
pub struct AttentionGrads {
    /// W.r.t. the normalised input `xn`.
    pub dxn: Vec<f64>,
    /// W.r.t. `Wq xn` (before RoPE).
    pub dq: Vec<f64>,
    /// W.r.t. `Wk xn` (before RoPE).
    pub dk: Vec<f64>,
    /// W.r.t. the rotated q (what an attention kernel produces before RoPE backward).
    pub dq_rope: Vec<f64>,
    /// W.r.t. the rotated k.
    pub dk_rope: Vec<f64>,
    /// W.r.t. `v`.
    pub dv: Vec<f64>,
    /// W.r.t. the probabilities, `[batch, n_heads, seq_len, seq_len]` (zero for `s > t`).
    pub dprobs: Vec<f64>,
    /// W.r.t. the heads' output `o` (before `Wo`).
    pub d_o: Vec<f64>,
    /// W.r.t. `wq`, `[dim, dim]` (`[out, in]`).
    pub dwq: Vec<f64>,
    /// W.r.t. `wk`, `[dim, dim]`.
    pub dwk: Vec<f64>,
    /// W.r.t. `wv`, `[dim, dim]`.
    pub dwv: Vec<f64>,
    /// W.r.t. `wo`, `[dim, dim]`.
    pub dwo: Vec<f64>,
}

/// Backward of [`attention_forward`] given `d_out` `[tokens, dim]`, the gradient w.r.t.
/// its `out`; `fwd` is what the forward pass returned for the same `xn`.
pub fn attention_backward(
    config: &ModelConfig,
    w: &AttentionWeights,
    xn: &[f64],
    fwd: &AttentionForward,
    d_out: &[f64],
) -> AttentionGrads {
    let (dim, hd, seq, nh) = (config.dim, config.head_dim(), config.seq_len, config.n_heads);
    let tokens = xn.len() / dim;
    let batch = tokens / seq;
    assert_eq!(d_out.len(), tokens * dim);
    let (d_o, dwo) = linear_backward(&fwd.o, &w.wo, d_out, dim, dim);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut dq_rope = vec![0.0; tokens * dim];
    let mut dk_rope = vec![0.0; tokens * dim];
    let mut dv = vec![0.0; tokens * dim];
    let mut dprobs = vec![0.0; batch * nh * seq * seq];
    let at = |b: usize, t: usize, h: usize| (b * seq + t) * dim + h * hd;
    for b in 0..batch {
        for h in 0..nh {
            let base = (b * nh + h) * seq * seq;
            for t in 0..seq {
                let p = &fwd.probs[base + t * seq..][..seq];
                let dp = &mut dprobs[base + t * seq..][..seq];
                for s in 0..=t {
                    let mut acc = 0.0;
                    for c in 0..hd {
                        acc += d_o[at(b, t, h) + c] * fwd.v[at(b, s, h) + c];
                        dv[at(b, s, h) + c] += p[s] * d_o[at(b, t, h) + c];
                    }
                    dp[s] = acc;
                }
                // Softmax backward: dS = P * (dP - sum_s P dP).
                let mean: f64 = (0..=t).map(|s| p[s] * dp[s]).sum();
                for s in 0..=t {
                    let ds = p[s] * (dp[s] - mean) * scale;
                    for c in 0..hd {
                        dq_rope[at(b, t, h) + c] += ds * fwd.k_rope[at(b, s, h) + c];
                        dk_rope[at(b, s, h) + c] += ds * fwd.q_rope[at(b, t, h) + c];
                    }
                }
            }
        }
    }
    let dq = rope_backward(&dq_rope, config);
    let dk = rope_backward(&dk_rope, config);
    let (dxq, dwq) = linear_backward(xn, &w.wq, &dq, dim, dim);
    let (dxk, dwk) = linear_backward(xn, &w.wk, &dk, dim, dim);
    let (dxv, dwv) = linear_backward(xn, &w.wv, &dv, dim, dim);
    let dxn = (0..tokens * dim).map(|i| dxq[i] + dxk[i] + dxv[i]).collect();
    AttentionGrads { dxn, dq, dk, dq_rope, dk_rope, dv, dprobs, d_o, dwq, dwk, dwv, dwo }
}

/// The weights of one SwiGLU FFN in f64: `w1`, `w3` `[hidden, dim]`, `w2` `[dim, hidden]`.
#[derive(Clone, Debug)]
pub struct FfnWeights {
    /// Gate projection `[hidden, dim]` (the SiLU branch).
    pub w1: Vec<f64>,
    /// Down projection `[dim, hidden]`.
    pub w2: Vec<f64>,
    /// Up projection `[hidden, dim]`.
    pub w3: Vec<f64>,
}

impl FfnWeights {
    /// Layer `l`'s FFN weights from `params`.
    pub fn from_params(params: &Params, l: usize) -> FfnWeights {
        FfnWeights::from_flat(&params.layout, &params_f64(params), l)
    }

    /// Layer `l`'s FFN weights from a flat f64 buffer laid out by `layout`.
    pub fn from_flat(layout: &ParamLayout, data: &[f64], l: usize) -> FfnWeights {
        FfnWeights {
            w1: get(layout, data, Tensor::W1(l)).to_vec(),
            w2: get(layout, data, Tensor::W2(l)).to_vec(),
            w3: get(layout, data, Tensor::W3(l)).to_vec(),
        }
    }
}

/// What [`ffn_forward`] computes: `h1`, `h3`, `g` are `[tokens, hidden]`, `out`
/// `[tokens, dim]`.
#[derive(Clone, Debug)]
pub struct FfnForward {
    /// `W1 xn` (the gate, before SiLU).
    pub h1: Vec<f64>,
    /// `W3 xn`.
    pub h3: Vec<f64>,
    /// `silu(h1) * h3`.
    pub g: Vec<f64>,
    /// `W2 g`: what is added to the residual stream.
    pub out: Vec<f64>,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `silu(z) = z * sigmoid(z)`.
pub fn silu(z: f64) -> f64 {
    z * sigmoid(z)
}

/// The SwiGLU FFN of one layer on the normalised input `xn` `[tokens, dim]`.
pub fn ffn_forward(config: &ModelConfig, w: &FfnWeights, xn: &[f64]) -> FfnForward {
    let (dim, hidden) = (config.dim, config.hidden_dim);
    let h1 = linear(xn, &w.w1, hidden, dim);
    let h3 = linear(xn, &w.w3, hidden, dim);
    let g: Vec<f64> = h1.iter().zip(&h3).map(|(&a, &b)| silu(a) * b).collect();
    let out = linear(&g, &w.w2, dim, hidden);
    FfnForward { h1, h3, g, out }
}

/// Gradients from [`ffn_backward`].
#[derive(Clone, Debug)]
pub struct FfnGrads {
    /// W.r.t. the normalised input `xn`, `[tokens, dim]`.
    pub dxn: Vec<f64>,
    /// W.r.t. `h1`, `[tokens, hidden]`.
    pub dh1: Vec<f64>,
    /// W.r.t. `h3`, `[tokens, hidden]`.
    pub dh3: Vec<f64>,
    /// W.r.t. `g`, `[tokens, hidden]`.
    pub dg: Vec<f64>,
    /// W.r.t. `w1`, `[hidden, dim]`.
    pub dw1: Vec<f64>,
    /// W.r.t. `w2`, `[dim, hidden]`.
    pub dw2: Vec<f64>,
    /// W.r.t. `w3`, `[hidden, dim]`.
    pub dw3: Vec<f64>,
}

/// Backward of [`ffn_forward`] given `d_out` `[tokens, dim]`, the gradient w.r.t. its
/// `out`; `fwd` is what the forward pass returned for the same `xn`.
pub fn ffn_backward(
    config: &ModelConfig,
    w: &FfnWeights,
    xn: &[f64],
    fwd: &FfnForward,
    d_out: &[f64],
) -> FfnGrads {
    let (dim, hidden) = (config.dim, config.hidden_dim);
    let (dg, dw2) = linear_backward(&fwd.g, &w.w2, d_out, dim, hidden);
    let mut dh1 = vec![0.0; dg.len()];
    let mut dh3 = vec![0.0; dg.len()];
    for i in 0..dg.len() {
        let z = fwd.h1[i];
        let sg = sigmoid(z);
        dh3[i] = dg[i] * z * sg;
        // d silu / dz = sigmoid(z) * (1 + z * (1 - sigmoid(z))).
        dh1[i] = dg[i] * fwd.h3[i] * sg * (1.0 + z * (1.0 - sg));
    }
    let (dx1, dw1) = linear_backward(xn, &w.w1, &dh1, hidden, dim);
    let (dx3, dw3) = linear_backward(xn, &w.w3, &dh3, hidden, dim);
    let dxn = dx1.iter().zip(&dx3).map(|(a, b)| a + b).collect();
    FfnGrads { dxn, dh1, dh3, dg, dw1, dw2, dw3 }
}

/// Mean cross-entropy of `logits` `[tokens, vocab]` against `targets` `[tokens]`, and its
/// gradient w.r.t. the logits, `(softmax - onehot) / tokens`.
pub fn cross_entropy(logits: &[f64], targets: &[u32], vocab: usize) -> (f64, Vec<f64>) {
    let tokens = targets.len();
    assert_eq!(logits.len(), tokens * vocab);
    let mut loss = 0.0;
    let mut dlogits = vec![0.0; logits.len()];
    for (t, (row, drow)) in logits.chunks(vocab).zip(dlogits.chunks_mut(vocab)).enumerate() {
        let target = targets[t] as usize;
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&z| (z - max).exp()).sum();
        let log_sum = max + sum.ln();
        loss += log_sum - row[target];
        for v in 0..vocab {
            drow[v] = (row[v] - log_sum).exp() / tokens as f64;
        }
        drow[target] -= 1.0 / tokens as f64;
    }
    (loss / tokens as f64, dlogits)
}

/// Per-layer activations kept for the backward pass.
struct LayerCache {
    x_in: Vec<f64>,
    xn: Vec<f64>,
    attn: AttentionForward,
    x_mid: Vec<f64>,
    xn2: Vec<f64>,
    ffn: FfnForward,
}

struct ModelCache {
    layers: Vec<LayerCache>,
    x_final: Vec<f64>,
    xf: Vec<f64>,
    dlogits: Vec<f64>,
    loss: f64,
}

fn check_batch(config: &ModelConfig, inputs: &[u32], targets: &[u32], batch: usize) {
    let tokens = batch * config.seq_len;
    assert_eq!(inputs.len(), tokens, "inputs must hold batch * seq_len = {tokens} tokens");
    assert_eq!(targets.len(), tokens, "targets must hold batch * seq_len = {tokens} tokens");
    let vocab = config.vocab_size as u32;
    assert!(
        inputs.iter().chain(targets).all(|&t| t < vocab),
        "a token id is outside the vocabulary of {vocab}"
    );
}

fn forward(
    layout: &ParamLayout,
    data: &[f64],
    inputs: &[u32],
    targets: &[u32],
    batch: usize,
) -> ModelCache {
    let config = &layout.config;
    assert_eq!(data.len(), layout.len, "parameter buffer does not match the layout");
    check_batch(config, inputs, targets, batch);
    let (dim, vocab) = (config.dim, config.vocab_size);
    let eps = f64::from(config.norm_eps);
    let embedding = get(layout, data, Tensor::Embedding);
    let mut x: Vec<f64> = Vec::with_capacity(inputs.len() * dim);
    for &tok in inputs {
        x.extend_from_slice(&embedding[tok as usize * dim..][..dim]);
    }
    let mut layers = Vec::with_capacity(config.n_layers);
    for l in 0..config.n_layers {
        let xn = rmsnorm(&x, get(layout, data, Tensor::AttnNorm(l)), eps);
        let attn = attention_forward(config, &AttentionWeights::from_flat(layout, data, l), &xn);
        let x_mid: Vec<f64> = x.iter().zip(&attn.out).map(|(a, b)| a + b).collect();
        let xn2 = rmsnorm(&x_mid, get(layout, data, Tensor::FfnNorm(l)), eps);
        let ffn = ffn_forward(config, &FfnWeights::from_flat(layout, data, l), &xn2);
        let x_out = x_mid.iter().zip(&ffn.out).map(|(a, b)| a + b).collect();
        let x_in = std::mem::replace(&mut x, x_out);
        layers.push(LayerCache { x_in, xn, attn, x_mid, xn2, ffn });
    }
    let xf = rmsnorm(&x, get(layout, data, Tensor::FinalNorm), eps);
    let logits = linear(&xf, get(layout, data, classifier_tensor(config)), vocab, dim);
    let (loss, dlogits) = cross_entropy(&logits, targets, vocab);
    ModelCache { layers, x_final: x, xf, dlogits, loss }
}

/// The mean cross-entropy loss over all `batch * seq_len` positions. `inputs` and
/// `targets` hold `batch` sequences of `seq_len` tokens one after another.
pub fn forward_loss(params: &Params, inputs: &[u32], targets: &[u32], batch: usize) -> f64 {
    forward_loss_f64(&params.layout, &params_f64(params), inputs, targets, batch)
}

/// [`forward_loss`] with the parameters given as a flat f64 buffer laid out by `layout`.
pub fn forward_loss_f64(
    layout: &ParamLayout,
    data: &[f64],
    inputs: &[u32],
    targets: &[u32],
    batch: usize,
) -> f64 {
    forward(layout, data, inputs, targets, batch).loss
}

/// The mean loss and its gradient w.r.t. every parameter, in the flat layout of
/// `params.data` (`params.layout.range(t)` finds tensor `t`). With a shared classifier the
/// embedding's gradient includes the classifier's contribution.
pub fn loss_and_grads(
    params: &Params,
    inputs: &[u32],
    targets: &[u32],
    batch: usize,
) -> (f64, Vec<f64>) {
    loss_and_grads_f64(&params.layout, &params_f64(params), inputs, targets, batch)
}

/// [`loss_and_grads`] with the parameters given as a flat f64 buffer laid out by `layout`.
pub fn loss_and_grads_f64(
    layout: &ParamLayout,
    data: &[f64],
    inputs: &[u32],
    targets: &[u32],
    batch: usize,
) -> (f64, Vec<f64>) {
    let config = &layout.config;
    let cache = forward(layout, data, inputs, targets, batch);
    let (dim, vocab) = (config.dim, config.vocab_size);
    let eps = f64::from(config.norm_eps);
    let mut grads = vec![0.0; layout.len];
    let mut add = |t: Tensor, g: &[f64]| {
        for (dst, src) in grads[layout.range(t)].iter_mut().zip(g) {
            *dst += src;
        }
    };

    let classifier = classifier_tensor(config);
    let (dxf, dclassifier) =
        linear_backward(&cache.xf, get(layout, data, classifier), &cache.dlogits, vocab, dim);
    add(classifier, &dclassifier);
    let final_norm = get(layout, data, Tensor::FinalNorm);
    let (mut dx, dfinal) = rmsnorm_backward(&cache.x_final, final_norm, &dxf, eps);
    add(Tensor::FinalNorm, &dfinal);

    for l in (0..config.n_layers).rev() {
        let c = &cache.layers[l];
        // x_out = x_mid + ffn(rmsnorm(x_mid)): the residual passes dx straight through.
        let ffn_w = FfnWeights::from_flat(layout, data, l);
        let fg = ffn_backward(config, &ffn_w, &c.xn2, &c.ffn, &dx);
        add(Tensor::W1(l), &fg.dw1);
        add(Tensor::W2(l), &fg.dw2);
        add(Tensor::W3(l), &fg.dw3);
        let ffn_norm = get(layout, data, Tensor::FfnNorm(l));
        let (dx_norm, dffn_norm) = rmsnorm_backward(&c.x_mid, ffn_norm, &fg.dxn, eps);
        add(Tensor::FfnNorm(l), &dffn_norm);
        for (a, b) in dx.iter_mut().zip(&dx_norm) {
            *a += b;
        }
        // x_mid = x_in + attention(rmsnorm(x_in)).
        let attn_w = AttentionWeights::from_flat(layout, data, l);
        let ag = attention_backward(config, &attn_w, &c.xn, &c.attn, &dx);
        add(Tensor::Wq(l), &ag.dwq);
        add(Tensor::Wk(l), &ag.dwk);
        add(Tensor::Wv(l), &ag.dwv);
        add(Tensor::Wo(l), &ag.dwo);
        let attn_norm = get(layout, data, Tensor::AttnNorm(l));
        let (dx_norm, dattn_norm) = rmsnorm_backward(&c.x_in, attn_norm, &ag.dxn, eps);
        add(Tensor::AttnNorm(l), &dattn_norm);
        for (a, b) in dx.iter_mut().zip(&dx_norm) {
            *a += b;
        }
    }

    // The embedding lookup scatters each token's input gradient into its row.
    let emb = layout.range(Tensor::Embedding);
    for (t, &tok) in inputs.iter().enumerate() {
        let row = &mut grads[emb.start + tok as usize * dim..][..dim];
        for (dst, src) in row.iter_mut().zip(&dx[t * dim..][..dim]) {
            *dst += src;
        }
    }
    (cache.loss, grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn small_config(shared: bool) -> ModelConfig {
        ModelConfig {
            dim: 16,
            hidden_dim: 32,
            n_layers: 2,
            n_heads: 2,
            seq_len: 16,
            vocab_size: 32,
            shared_classifier: shared,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    fn tokens(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
    }

    /// f64 parameters far from initialisation (matrices uniform in +-0.4, norm weights in
    /// [0.5, 1.5]) so that every term of the gradient matters, and a random batch of 2.
    fn random_case(shared: bool, seed: u64) -> (ParamLayout, Vec<f64>, Vec<u32>, Vec<u32>) {
        let config = small_config(shared);
        let layout = ParamLayout::new(&config);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut data = vec![0.0; layout.len];
        for (t, _, range) in &layout.entries {
            for v in &mut data[range.clone()] {
                *v = if t.is_norm() {
                    rng.random_range(0.5..1.5)
                } else {
                    rng.random_range(-0.4..0.4)
                };
            }
        }
        let n = 2 * config.seq_len;
        let inputs = tokens(&mut rng, n, config.vocab_size);
        let targets = tokens(&mut rng, n, config.vocab_size);
        (layout, data, inputs, targets)
    }

    /// Central differences in f64 on sampled coordinates of every tensor. The bound
    /// `|fd - g| <= 1e-6 * max(|g|, 1e-8)` or `<= 1e-9` absolute leaves room for the
    /// O(h^2) truncation and the ~1e-11 rounding of the quotient at h = 1e-5.
    fn check_gradients(shared: bool) {
        let (layout, data, inputs, targets) = random_case(shared, if shared { 1 } else { 2 });
        let (loss, grads) = loss_and_grads_f64(&layout, &data, &inputs, &targets, 2);
        assert_eq!(loss, forward_loss_f64(&layout, &data, &inputs, &targets, 2));
        let h = 1e-5;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut groups = std::collections::HashSet::new();
        let mut worst = 0.0f64;
        for (t, _, range) in &layout.entries {
            let mut idx: Vec<usize> = (0..6).map(|_| rng.random_range(range.clone())).collect();
            if *t == Tensor::Embedding {
                // A row of a token in the batch also gets the input path's gradient.
                idx.push(range.start + inputs[0] as usize * layout.config.dim + 3);
            }
            for i in idx {
                let mut p = data.clone();
                p[i] = data[i] + h;
                let plus = forward_loss_f64(&layout, &p, &inputs, &targets, 2);
                p[i] = data[i] - h;
                let minus = forward_loss_f64(&layout, &p, &inputs, &targets, 2);
                let fd = (plus - minus) / (2.0 * h);
                let g = grads[i];
                let err = (fd - g).abs();
                worst = worst.max(err / g.abs().max(1e-8));
                assert!(
                    err <= 1e-6 * g.abs().max(1e-8) || err <= 1e-9,
                    "{t:?} [{}]: analytic {g:e}, finite difference {fd:e}",
                    i - range.start
                );
            }
            groups.insert(t.group());
        }
        let expected = if shared { 11 } else { 12 };
        assert_eq!(groups.len(), expected, "every tensor group is checked: {groups:?}");
        eprintln!("worst relative error {worst:e}");
    }

    #[test]
    fn gradients_match_finite_differences_shared_classifier() {
        check_gradients(true);
    }

    #[test]
    fn gradients_match_finite_differences_separate_classifier() {
        check_gradients(false);
    }

    /// The anchor's `rmsnorm_bwd`: the correction term also multiplied by `w_j`.
    fn anchor_rmsnorm_backward(x: &[f64], w: &[f64], dy: &[f64], eps: f64) -> Vec<f64> {
        let d = w.len();
        let mut dx = vec![0.0; x.len()];
        for ((xr, dyr), dxr) in x.chunks(d).zip(dy.chunks(d)).zip(dx.chunks_mut(d)) {
            let r = inv_rms(xr, eps);
            let dot: f64 = (0..d).map(|k| dyr[k] * w[k] * xr[k]).sum();
            for j in 0..d {
                dxr[j] = r * w[j] * dyr[j] - r * r * r / d as f64 * xr[j] * w[j] * dot;
            }
        }
        dx
    }

    #[test]
    fn rmsnorm_backward_matches_finite_differences_and_catches_the_anchor_bug() {
        let (d, rows, eps) = (12, 3, 1e-5);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut draw = |n: usize, lo: f64, hi: f64| -> Vec<f64> {
            (0..n).map(|_| rng.random_range(lo..hi)).collect()
        };
        let x = draw(rows * d, -2.0, 2.0);
        let w = draw(d, 0.3, 2.0);
        let dy = draw(rows * d, -1.0, 1.0);
        // L = sum(dy * rmsnorm(x, w)), so dL/dx and dL/dw are what the backward returns.
        let objective = |x: &[f64], w: &[f64]| -> f64 {
            rmsnorm(x, w, eps).iter().zip(&dy).map(|(a, b)| a * b).sum()
        };
        let (dx, dw) = rmsnorm_backward(&x, &w, &dy, eps);
        let h = 1e-6;
        let fd = |i: usize, wrt_x: bool| {
            let (mut xp, mut wp) = (x.clone(), w.clone());
            let v = if wrt_x { &mut xp[i] } else { &mut wp[i] };
            *v += h;
            let plus = objective(&xp, &wp);
            let v = if wrt_x { &mut xp[i] } else { &mut wp[i] };
            *v -= 2.0 * h;
            (plus - objective(&xp, &wp)) / (2.0 * h)
        };
        let fd_dx: Vec<f64> = (0..x.len()).map(|i| fd(i, true)).collect();
        for (i, (g, f)) in dx.iter().zip(&fd_dx).enumerate() {
            assert!((g - f).abs() <= 1e-8 * f.abs().max(1.0), "dx[{i}]: {g:e} vs {f:e}");
        }
        for (i, g) in dw.iter().enumerate() {
            let f = fd(i, false);
            assert!((g - f).abs() <= 1e-8 * f.abs().max(1.0), "dw[{i}]: {g:e} vs {f:e}");
        }
        let buggy = anchor_rmsnorm_backward(&x, &w, &dy, eps);
        let worst = (0..x.len()).map(|i| (buggy[i] - fd_dx[i]).abs()).fold(0.0, f64::max);
        assert!(worst > 1e-2, "the anchor's formula should be far off, is within {worst:e}");
    }

    #[test]
    fn fresh_model_predicts_uniformly() {
        for shared in [true, false] {
            let config = small_config(shared);
            let params = Params::init(&config, 5);
            let mut rng = ChaCha8Rng::seed_from_u64(6);
            let n = 2 * config.seq_len;
            let inputs = tokens(&mut rng, n, config.vocab_size);
            let targets = tokens(&mut rng, n, config.vocab_size);
            let loss = forward_loss(&params, &inputs, &targets, 2);
            let uniform = (config.vocab_size as f64).ln();
            assert!((loss - uniform).abs() < 0.1, "step-0 loss {loss} vs ln(vocab) {uniform}");
        }
    }

    #[test]
    fn sequences_in_a_batch_are_independent() {
        // Positions restart and attention stays within each sequence, so a batch's loss is
        // the mean of its sequences' losses.
        let (layout, data, inputs, targets) = random_case(true, 7);
        let seq = layout.config.seq_len;
        let both = forward_loss_f64(&layout, &data, &inputs, &targets, 2);
        let first = forward_loss_f64(&layout, &data, &inputs[..seq], &targets[..seq], 1);
        let second = forward_loss_f64(&layout, &data, &inputs[seq..], &targets[seq..], 1);
        assert!((both - (first + second) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn rope_backward_inverts_rope() {
        let config = small_config(true);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x: Vec<f64> =
            (0..2 * config.seq_len * config.dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y = rope(&x, &config);
        // Position 0 (the first token of each sequence) is not rotated; others are.
        for b in 0..2 {
            let at = b * config.seq_len * config.dim;
            assert_eq!(&y[at..at + config.dim], &x[at..at + config.dim]);
        }
        assert!((y[config.dim] - x[config.dim]).abs() > 1e-6);
        let back = rope_backward(&y, &config);
        assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-14));
    }
}
