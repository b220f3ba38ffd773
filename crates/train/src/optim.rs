//! AdamW, the learning-rate schedule and gradient clipping.
//!
//! Everything here is deterministic: the same parameters, gradients and settings give
//! bit-identical results on every run, whatever the number of threads, so that a resumed
//! run retraces an uninterrupted one.

use std::sync::Arc;

use rayon::prelude::*;

use crate::config::TrainConfig;
use crate::params::{ParamLayout, Params};

/// Values per parallel work item. Fixed (not derived from the thread count) so that the
/// chunked reduction in [`clip_grad_norm`] always adds the same partial sums in the same
/// order.
const CHUNK: usize = 1 << 14;

/// The learning rate for the optimizer step with 0-based index `step` of a run of
/// `total_steps` steps (the anchor's schedule: linear warm-up, then cosine decay to
/// `lr * min_lr_ratio`).
///
/// With `w = warmup_steps`, `lr_min = lr * min_lr_ratio`:
/// - `step < w`: `lr * (step + 1) / w`, so the first step already moves (`lr / w`) and
///   step `w - 1` reaches the full `lr`;
/// - `w <= step < total_steps`: `lr_min + (lr - lr_min) * (1 + cos(pi * (step - w) /
///   (total_steps - w))) / 2`, which is `lr` at `step == w` and approaches `lr_min`;
/// - `step >= total_steps` (past the horizon, e.g. a run extended after resuming):
///   `lr_min`, constant.
///
/// The result is never negative (a negative ratio or rate is clamped to 0).
pub fn lr_at(step: usize, total_steps: usize, cfg: &TrainConfig) -> f32 {
    let lr = f64::from(cfg.lr).max(0.0);
    let lr_min = lr * f64::from(cfg.min_lr_ratio).clamp(0.0, 1.0);
    let warmup = cfg.warmup_steps;
    let rate = if step < warmup {
        lr * (step + 1) as f64 / warmup as f64
    } else if step >= total_steps {
        lr_min
    } else {
        // Here warmup <= step < total_steps, so the span is at least 1.
        let progress = (step - warmup) as f64 / (total_steps - warmup) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        lr_min + (lr - lr_min) * cosine
    };
    rate.max(0.0) as f32
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` and returns the norm
/// they had before (accumulated in f64, returned as f32: a norm beyond f32's range reads
/// as infinity).
///
/// `max_norm <= 0` (or NaN) disables clipping; the norm is still returned. A non-finite
/// norm leaves the gradients untouched: the caller is expected to stop (the loss
/// diverged), and scaling by `max_norm / inf` would hide that by zeroing everything.
pub fn clip_grad_norm(grads: &mut Params, max_norm: f32) -> f32 {
    let norm = global_norm(&grads.data);
    if norm.is_finite() && max_norm > 0.0 && norm > f64::from(max_norm) {
        let scale = f64::from(max_norm) / norm;
        grads.data.par_chunks_mut(CHUNK).for_each(|chunk| {
            for g in chunk {
                // Scaling in f64 keeps the clipped norm within rounding of max_norm.
                *g = (f64::from(*g) * scale) as f32;
            }
        });
    }
    norm as f32
}

/// Euclidean norm in f64, reduced over fixed chunks whose partial sums are added in
/// index order, so the result does not depend on how rayon schedules the chunks.
fn global_norm(data: &[f32]) -> f64 {
    let partials: Vec<f64> = data
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .collect();
    partials.iter().sum::<f64>().sqrt()
}

/// AdamW (Loshchilov & Hutter) with decoupled weight decay, which is skipped for norm
/// weights ([`crate::Tensor::is_norm`]). The moments share the parameters' layout so that
/// checkpoints store them as named tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    /// First moment (running mean of the gradients).
    pub m: Params,
    /// Second moment (running mean of the squared gradients).
    pub v: Params,
}

impl AdamW {
    /// Zero moments for parameters laid out by `layout`.
    pub fn new(layout: Arc<ParamLayout>) -> AdamW {
        AdamW { m: Params::zeros(layout.clone()), v: Params::zeros(layout) }
    }

    /// One update of `params` with `grads` (already unscaled and clipped). `t` is the
    /// number of steps taken including this one (1 for the first), which sets the bias
    /// correction; `lr` is this step's rate (see [`lr_at`]).
    ///
    /// For every value, with `g` its gradient, `bc1 = 1 - beta1^t`, `bc2 = 1 - beta2^t`
    /// (both computed in f64, then used as f32) and `wd = weight_decay` (0 for norms):
    ///
    /// ```text
    /// m <- beta1 * m + (1 - beta1) * g
    /// v <- beta2 * v + (1 - beta2) * g * g
    /// p <- p * (1 - lr * wd) - lr * (m / bc1) / (sqrt(v / bc2) + eps)
    /// ```
    ///
    /// The decay uses the parameter before this step's gradient update (PyTorch's order).
    /// All arithmetic is f32 and elementwise, so the parallel split cannot change a bit.
    ///
    /// Panics if `t == 0` or if the buffers do not have the moments' size.
    pub fn step(
        &mut self,
        params: &mut Params,
        grads: &Params,
        t: usize,
        lr: f32,
        cfg: &TrainConfig,
    ) {
        assert!(t >= 1, "AdamW step count t is 1-based");
        let len = self.m.data.len();
        assert_eq!(params.data.len(), len, "parameters do not match the optimizer state");
        assert_eq!(grads.data.len(), len, "gradients do not match the optimizer state");

        let (b1, b2, eps) = (cfg.beta1, cfg.beta2, cfg.eps);
        // powi takes an i32; past that many steps the corrections are 1 to f64 precision.
        let exp = i32::try_from(t).unwrap_or(i32::MAX);
        let bc1 = (1.0 - f64::from(b1).powi(exp)) as f32;
        let bc2 = (1.0 - f64::from(b2).powi(exp)) as f32;

        let layout = self.m.layout.clone();
        for (tensor, _, range) in &layout.entries {
            let wd = if tensor.is_norm() { 0.0 } else { cfg.weight_decay };
            let decay = 1.0 - lr * wd;
            let p = &mut params.data[range.clone()];
            let g = &grads.data[range.clone()];
            let m = &mut self.m.data[range.clone()];
            let v = &mut self.v.data[range.clone()];
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for i in 0..p.len() {
                        let gi = g[i];
                        let mi = b1 * m[i] + (1.0 - b1) * gi;
                        let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
                        m[i] = mi;
                        v[i] = vi;
                        p[i] = p[i] * decay - lr * (mi / bc1) / ((vi / bc2).sqrt() + eps);
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::params::Tensor;

    fn small_layout() -> Arc<ParamLayout> {
        let c = ModelConfig {
            dim: 8,
            hidden_dim: 16,
            n_layers: 2,
            n_heads: 2,
            seq_len: 16,
            vocab_size: 12,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        };
        Arc::new(ParamLayout::new(&c))
    }

    fn sched(lr: f32, warmup: usize, ratio: f32) -> TrainConfig {
        TrainConfig { lr, warmup_steps: warmup, min_lr_ratio: ratio, ..TrainConfig::default() }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-30)
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let cfg = sched(1e-3, 100, 0.1);
        let total = 1100;
        let at = |s| f64::from(lr_at(s, total, &cfg));
        assert!(close(at(0), 1e-5, 1e-6), "{}", at(0));
        assert!(close(at(49), 5e-4, 1e-6));
        assert!(close(at(99), 1e-3, 1e-6), "warm-up ends at the peak");
        assert!(close(at(100), 1e-3, 1e-6), "the decay starts at the peak");
        // Half-way through the decay the cosine is 0: the midpoint of peak and floor.
        assert!(close(at(600), 0.55e-3, 1e-5), "{}", at(600));
        assert!(at(total - 1) > 1e-4 && at(total - 1) < 1.0001e-4, "{}", at(total - 1));
        assert!(close(at(total), 1e-4, 1e-6));
        assert!(close(at(10 * total), 1e-4, 1e-6), "constant past the horizon");
        // Monotone decay after warm-up.
        for s in 100..total {
            assert!(at(s + 1) <= at(s));
        }
    }

    #[test]
    fn schedule_edge_cases_stay_finite_and_non_negative() {
        for (warmup, total, ratio) in
            [(0, 10, 0.0), (0, 0, 0.1), (10, 5, 0.1), (10, 10, 1.0), (1, 1, 0.0)]
        {
            let cfg = sched(3e-4, warmup, ratio);
            for s in 0..30 {
                let v = lr_at(s, total, &cfg);
                assert!(v.is_finite() && v >= 0.0, "{warmup} {total} {ratio} {s}: {v}");
                assert!(v <= 3e-4 * 1.000_001);
            }
        }
        // No warm-up: the first step takes the peak rate.
        assert_eq!(lr_at(0, 10, &sched(3e-4, 0, 0.1)), 3e-4);
        // A negative ratio (refused by validation) still gives no negative rate.
        assert!(lr_at(50, 10, &sched(3e-4, 0, -1.0)) >= 0.0);
    }

    #[test]
    fn clipping_scales_to_exactly_max_norm() {
        let layout = small_layout();
        let mut g = Params::zeros(layout);
        for (i, v) in g.data.iter_mut().enumerate() {
            *v = ((i * 37 % 101) as f32 - 50.0) * 0.013;
        }
        let before = g.norm();
        let original = g.clone();
        let returned = clip_grad_norm(&mut g, 0.5);
        assert!(close(f64::from(returned), before, 1e-6));
        assert!(close(g.norm(), 0.5, 1e-6), "{}", g.norm());
        // Direction kept.
        let ratio = f64::from(g.data[3]) / f64::from(original.data[3]);
        assert!(close(ratio, 0.5 / before, 1e-6));

        // Below the limit, or disabled: untouched.
        let mut small = original.clone();
        clip_grad_norm(&mut small, 1e9);
        assert_eq!(small, original);
        let mut off = original.clone();
        assert!(close(f64::from(clip_grad_norm(&mut off, 0.0)), before, 1e-6));
        assert_eq!(off, original);
    }

    #[test]
    fn clipping_leaves_non_finite_gradients_alone() {
        let mut g = Params::zeros(small_layout());
        g.data[0] = 1.0;
        g.data[5] = f32::NAN;
        let n = clip_grad_norm(&mut g, 0.1);
        assert!(n.is_nan());
        assert_eq!(g.data[0], 1.0);
        g.data[5] = f32::INFINITY;
        assert_eq!(clip_grad_norm(&mut g, 0.1), f32::INFINITY);
        assert_eq!(g.data[0], 1.0);
    }

    /// Two steps on one value, computed by hand in f64 from the documented formula.
    #[test]
    fn adamw_matches_a_hand_computed_example() {
        let layout = small_layout();
        let cfg = TrainConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            ..TrainConfig::default()
        };
        let idx = layout.range(Tensor::Wq(1)).start + 3;
        let mut p = Params::zeros(layout.clone());
        p.data[idx] = 0.7;
        let mut opt = AdamW::new(layout.clone());
        let (lr1, lr2) = (1e-2f32, 5e-3f32);
        let (g1, g2) = (0.3f32, -0.2f32);

        let mut g = Params::zeros(layout.clone());
        g.data[idx] = g1;
        opt.step(&mut p, &g, 1, lr1, &cfg);
        g.data[idx] = g2;
        opt.step(&mut p, &g, 2, lr2, &cfg);

        let (b1, b2, eps, wd) = (0.9f64, 0.95f64, 1e-8f64, 0.1f64);
        let mut e = 0.7f64;
        let (mut m, mut v) = (0.0f64, 0.0f64);
        for (t, g, lr) in [(1, f64::from(g1), f64::from(lr1)), (2, f64::from(g2), f64::from(lr2))] {
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let mhat = m / (1.0 - b1.powi(t));
            let vhat = v / (1.0 - b2.powi(t));
            e = e * (1.0 - lr * wd) - lr * mhat / (vhat.sqrt() + eps);
        }
        // Step 1: m = 0.03, v = 0.0045, mhat = 0.3, vhat = 0.09 -> update = lr1 exactly.
        assert!(close(f64::from(p.data[idx]), e, 1e-6), "{} vs {e}", p.data[idx]);
        assert!(close(f64::from(opt.m.data[idx]), m, 1e-6));
        assert!(close(f64::from(opt.v.data[idx]), v, 1e-6));
        // Untouched values with zero gradients stay zero.
        assert_eq!(p.data[idx + 1], 0.0);
    }

    #[test]
    fn norms_get_no_weight_decay() {
        let layout = small_layout();
        let mut p = Params::zeros(layout.clone());
        p.data.fill(2.0);
        let g = Params::zeros(layout.clone());
        let cfg = TrainConfig { weight_decay: 0.5, ..TrainConfig::default() };
        let mut opt = AdamW::new(layout.clone());
        opt.step(&mut p, &g, 1, 0.1, &cfg);
        // With zero gradients only the decay acts: p * (1 - 0.1 * 0.5).
        for (t, _, _) in &layout.entries {
            let want = if t.is_norm() { 2.0 } else { 2.0 * (1.0 - 0.05) };
            assert!(p.get(*t).iter().all(|&v| v == want), "{t:?}");
        }
        assert!(layout.entries.iter().any(|(t, _, _)| t.is_norm()));
    }

    #[test]
    fn adamw_is_deterministic() {
        let layout = small_layout();
        let cfg = TrainConfig::default();
        let run = || {
            let mut p = Params::zeros(layout.clone());
            let mut g = Params::zeros(layout.clone());
            let mut opt = AdamW::new(layout.clone());
            for t in 1..=5 {
                for (i, v) in g.data.iter_mut().enumerate() {
                    *v = ((i * 7 + t * 13) % 29) as f32 * 0.01 - 0.14;
                }
                opt.step(&mut p, &g, t, 1e-3, &cfg);
            }
            (p, opt)
        };
        let bits = |p: &Params| p.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (a, b) = (run(), run());
        assert_eq!(bits(&a.0), bits(&b.0));
        assert_eq!(bits(&a.1.m), bits(&b.1.m));
        assert_eq!(bits(&a.1.v), bits(&b.1.v));
    }

    /// Minimises sum_i a_i (p_i - c_i)^2 / 2 with the full schedule and clipping.
    #[test]
    fn converges_on_a_quadratic() {
        let layout = small_layout();
        let n = layout.len;
        let a: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32).collect();
        let c: Vec<f32> = (0..n).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1).collect();
        let cfg = TrainConfig {
            lr: 0.05,
            warmup_steps: 20,
            min_lr_ratio: 0.01,
            weight_decay: 0.0,
            grad_clip: 10.0,
            ..TrainConfig::default()
        };
        let total = 1500;
        let mut p = Params::zeros(layout.clone());
        let mut g = Params::zeros(layout.clone());
        let mut opt = AdamW::new(layout.clone());
        let loss = |p: &Params| -> f64 {
            (0..n).map(|i| 0.5 * f64::from(a[i]) * f64::from(p.data[i] - c[i]).powi(2)).sum()
        };
        let start = loss(&p);
        for step in 0..total {
            for i in 0..n {
                g.data[i] = a[i] * (p.data[i] - c[i]);
            }
            let norm = clip_grad_norm(&mut g, cfg.grad_clip);
            assert!(norm.is_finite());
            opt.step(&mut p, &g, step + 1, lr_at(step, total, &cfg), &cfg);
        }
        let end = loss(&p);
        assert!(end < 1e-4 * start, "{start} -> {end}");
        let worst = (0..n).map(|i| (p.data[i] - c[i]).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-2, "{worst}");
    }
}
