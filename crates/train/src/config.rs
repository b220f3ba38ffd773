//! Model and training configurations: the presets, custom configs read from JSON or TOML,
//! and the checks that refuse what the Neural Engine cannot take before anything compiles.

use std::path::Path;

use anemone_mil::lint::{MAX_CHANNELS, MAX_DIM, SPATIAL_MULTIPLE};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A llama2-style decoder: token embedding, `n_layers` blocks of RMSNorm + causal
/// multi-head attention with RoPE + RMSNorm + SwiGLU FFN, a final RMSNorm and a classifier
/// (tied to the embedding when `shared_classifier`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model width: channels of the residual stream and of each attention projection (at
    /// most 16384, the ANE's channel limit).
    pub dim: usize,
    /// Width of the SwiGLU hidden layer.
    pub hidden_dim: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Attention heads; must divide `dim`, and `dim / n_heads` must be even (RoPE pairs).
    pub n_heads: usize,
    /// Tokens per sequence (the context window).
    pub seq_len: usize,
    /// Token ids run over `0..vocab_size` (at most 65536: token files hold u16 ids).
    pub vocab_size: usize,
    /// The classifier is the embedding matrix (llama2.c's shared weights).
    #[serde(default = "default_true")]
    pub shared_classifier: bool,
    /// Added to the mean square inside every RMSNorm (default 1e-5).
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    /// RoPE base: channel pair `i` of a head rotates by `pos * theta^(-2i / head_dim)`
    /// (default 10000).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
}

fn default_true() -> bool {
    true
}
fn default_norm_eps() -> f32 {
    1e-5
}
fn default_rope_theta() -> f32 {
    10000.0
}

/// Optimisation settings. Defaults follow the anchor (REFERENCE.md §7) where it states them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Sequences per micro-batch: one device evaluation per kernel and layer covers
    /// `batch * seq_len` tokens.
    pub batch: usize,
    /// Micro-batches whose gradients add up to one optimizer step.
    pub accum_steps: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// The cosine schedule ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f32,
    /// Optimizer steps of linear warm-up before the cosine decay ([`crate::optim::lr_at`]).
    pub warmup_steps: usize,
    /// AdamW's decay rate of the first moment, in `[0, 1)`.
    pub beta1: f32,
    /// AdamW's decay rate of the second moment, in `[0, 1)`.
    pub beta2: f32,
    /// AdamW's denominator term: `m / (sqrt(v) + eps)`.
    pub eps: f32,
    /// AdamW's decoupled weight decay; never applied to norm weights.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0 disables).
    pub grad_clip: f32,
    /// Static loss scale: the loss gradient is multiplied by it before the fp16 backward
    /// pass and divided out of the weight gradients.
    pub loss_scale: f32,
    /// Evaluate the validation loss every this many steps (and at the end).
    pub eval_every: usize,
    /// Micro-batches of held-out data per validation estimate.
    pub eval_batches: usize,
    /// Fraction of the data held out for validation (the tail of the file).
    pub val_fraction: f32,
    /// Write a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            batch: 1,
            accum_steps: 10,
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 100,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            loss_scale: 256.0,
            eval_every: 100,
            eval_batches: 4,
            val_fraction: 0.1,
            checkpoint_every: 100,
        }
    }
}

/// A model with the training settings that go with it (a preset or a file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The architecture.
    pub model: ModelConfig,
    /// The optimisation settings (defaults when absent from a file).
    #[serde(default)]
    pub train: TrainConfig,
}

/// The names `Config::preset` knows.
pub const PRESETS: &[&str] = &["tiny", "stories15m", "stories110m"];

impl Config {
    /// A named preset: `tiny` (for tests and quick runs on byte-level text),
    /// `stories15m` and `stories110m` (llama2.c's TinyStories models; REFERENCE.md §7).
    pub fn preset(name: &str) -> Option<Config> {
        let model = |dim, hidden_dim, n_layers, n_heads, seq_len, vocab_size| ModelConfig {
            dim,
            hidden_dim,
            n_layers,
            n_heads,
            seq_len,
            vocab_size,
            shared_classifier: true,
            norm_eps: default_norm_eps(),
            rope_theta: default_rope_theta(),
        };
        match name {
            "tiny" => Some(Config {
                model: model(128, 384, 2, 4, 64, 256),
                train: TrainConfig {
                    batch: 16,
                    accum_steps: 1,
                    lr: 2e-3,
                    warmup_steps: 50,
                    weight_decay: 0.01,
                    eval_every: 100,
                    eval_batches: 8,
                    ..TrainConfig::default()
                },
            }),
            "stories15m" => Some(Config {
                model: model(288, 768, 6, 6, 256, 32000),
                train: TrainConfig { batch: 4, accum_steps: 1, ..TrainConfig::default() },
            }),
            "stories110m" => Some(Config {
                model: model(768, 2048, 12, 12, 256, 32000),
                train: TrainConfig::default(),
            }),
            _ => None,
        }
    }

    /// A preset name, or the path of a JSON (`.json`) or TOML (anything else) file holding
    /// `{"model": {...}, "train": {...}}` (`train` optional). The result is validated.
    pub fn load(name_or_path: &str) -> Result<Config> {
        match Config::preset(name_or_path) {
            Some(c) => c.validate().map(|_| c),
            None => {
                let c = Config::from_file(Path::new(name_or_path))?;
                c.validate().map_err(|e| match e {
                    Error::Config(m) => Error::Config(format!("{name_or_path}: {m}")),
                    other => other,
                })?;
                Ok(c)
            }
        }
    }

    fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config(format!(
                    "`{}` is neither a preset ({}) nor a readable file",
                    path.display(),
                    PRESETS.join(", ")
                ))
            } else {
                Error::io(format!("reading config {}", path.display()), e)
            }
        })?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
        } else {
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
        }
    }

    /// Refuses configurations that are inconsistent or that the device kernels cannot run
    /// on the ANE (REFERENCE.md §2 limits), saying which setting and why.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let m = &self.model;
        let t = &self.train;
        let bad = |msg: String| Err(Error::Config(msg));
        if t.batch == 0 || t.accum_steps == 0 {
            return bad("batch and accum_steps must be at least 1".into());
        }
        let tokens = t.batch * m.seq_len;
        if !tokens.is_multiple_of(SPATIAL_MULTIPLE) {
            return bad(format!(
                "batch * seq_len = {tokens} tokens per evaluation is not a multiple of \
                 {SPATIAL_MULTIPLE}: the ANE silently corrupts other spatial sizes"
            ));
        }
        let widest = tokens + 3 * m.hidden_dim.max(m.dim) + 4 * m.dim;
        if widest > MAX_DIM {
            return bad(format!(
                "batch * seq_len = {tokens} makes a kernel input {widest} columns wide; the \
                 ANE takes at most {MAX_DIM} per dimension: lower batch and raise accum_steps"
            ));
        }
        let finite_pos = |v: f32| v.is_finite() && v > 0.0;
        if !finite_pos(t.lr) || !finite_pos(t.loss_scale) || !finite_pos(t.eps) {
            return bad("lr, loss_scale and eps must be positive and finite".into());
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            return bad("beta1 and beta2 must lie in [0, 1)".into());
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return bad("min_lr_ratio must lie in [0, 1]".into());
        }
        if !(t.weight_decay >= 0.0 && t.grad_clip >= 0.0) {
            return bad("weight_decay and grad_clip must not be negative".into());
        }
        if !(0.0..0.9).contains(&t.val_fraction) {
            return bad("val_fraction must lie in [0, 0.9)".into());
        }
        if t.eval_every == 0 || t.checkpoint_every == 0 || t.eval_batches == 0 {
            return bad("eval_every, eval_batches and checkpoint_every must be at least 1".into());
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Channels per attention head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads.max(1)
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        let per_layer = 2 * self.dim + 4 * self.dim * self.dim + 3 * self.dim * self.hidden_dim;
        let classifier = if self.shared_classifier { 0 } else { self.vocab_size * self.dim };
        self.vocab_size * self.dim + self.n_layers * per_layer + self.dim + classifier
    }

    /// Checks the shape of the model itself (batch-independent).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        for (name, v) in [
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("seq_len", self.seq_len),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return bad(format!("dim {} is not divisible by n_heads {}", self.dim, self.n_heads));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head dim {} (dim / n_heads) must be even: RoPE rotates channel pairs",
                self.head_dim()
            ));
        }
        for (name, v) in [("dim", self.dim), ("hidden_dim", self.hidden_dim)] {
            if v > MAX_CHANNELS {
                return bad(format!(
                    "{name} {v} exceeds the ANE's {MAX_CHANNELS} channels (REFERENCE.md §2)"
                ));
            }
        }
        if !self.seq_len.is_multiple_of(SPATIAL_MULTIPLE) {
            return bad(format!(
                "seq_len {} is not a multiple of {SPATIAL_MULTIPLE}: the ANE silently \
                 corrupts other spatial sizes (REFERENCE.md §2)",
                self.seq_len
            ));
        }
        if self.seq_len > MAX_DIM || self.vocab_size > MAX_DIM {
            return bad(format!(
                "seq_len and vocab_size must be at most {MAX_DIM} (the ANE's largest dimension; \
                 token files hold 16-bit ids)"
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad("norm_eps must be positive and finite".into());
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad("rope_theta must be finite and greater than 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for name in PRESETS {
            Config::load(name).unwrap();
        }
        assert_eq!(Config::preset("stories110m").unwrap().model.parameter_count(), 109_529_856);
    }

    #[test]
    fn refuses_what_the_ane_cannot_take() {
        let mut c = Config::preset("tiny").unwrap();
        c.model.seq_len = 60;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("multiple of 16"), "{e}");
        let mut c = Config::preset("tiny").unwrap();
        c.model.dim = 20000;
        c.model.n_heads = 4;
        assert!(c.validate().unwrap_err().to_string().contains("16384 channels"));
        let mut c = Config::preset("tiny").unwrap();
        c.model.n_heads = 3;
        assert!(c.validate().unwrap_err().to_string().contains("divisible"));
        let mut c = Config::preset("tiny").unwrap();
        c.train.batch = 1000;
        assert!(c.validate().unwrap_err().to_string().contains("columns wide"));
    }

    #[test]
    fn reads_json_and_toml() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("c.json");
        std::fs::write(
            &json,
            r#"{"model": {"dim": 64, "hidden_dim": 128, "n_layers": 1, "n_heads": 2,
                "seq_len": 32, "vocab_size": 256}, "train": {"batch": 2}}"#,
        )
        .unwrap();
        let c = Config::load(json.to_str().unwrap()).unwrap();
        assert_eq!((c.model.dim, c.train.batch, c.train.accum_steps), (64, 2, 10));
        let toml_path = dir.path().join("c.toml");
        std::fs::write(
            &toml_path,
            "[model]\ndim = 64\nhidden_dim = 128\nn_layers = 1\nn_heads = 2\nseq_len = 32\n\
             vocab_size = 256\nshared_classifier = false\n",
        )
        .unwrap();
        let c = Config::load(toml_path.to_str().unwrap()).unwrap();
        assert!(!c.model.shared_classifier);
        std::fs::write(&toml_path, "[model]\ndim = 64\nwidth = 3\n").unwrap();
        let e = Config::load(toml_path.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("width") || e.contains("missing"), "{e}");
        let e = Config::load("no-such-preset").unwrap_err().to_string();
        assert!(e.contains("neither a preset"), "{e}");
    }
}
