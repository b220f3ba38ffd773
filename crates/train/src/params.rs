//! The model's parameters in one flat f32 buffer, with a layout that names each tensor.
//! Gradients and the optimizer's moments use the same layout, so that clipping,
//! accumulation and AdamW are single passes and checkpoints are named slices.

use std::ops::Range;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::ModelConfig;

/// One tensor of the model, in llama2.c's order and orientation: linear weights are
/// `[out, in]` row-major, the embedding (and classifier) `[vocab, dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tensor {
    /// Token embedding `[vocab, dim]`; also the classifier when it is shared.
    Embedding,
    /// RMSNorm weight `[dim]` before attention, of layer `l`.
    AttnNorm(usize),
    /// Query projection `[dim, dim]` of layer `l`.
    Wq(usize),
    /// Key projection `[dim, dim]` of layer `l`.
    Wk(usize),
    /// Value projection `[dim, dim]` of layer `l`.
    Wv(usize),
    /// Attention output projection `[dim, dim]` of layer `l`.
    Wo(usize),
    /// RMSNorm weight `[dim]` before the FFN, of layer `l`.
    FfnNorm(usize),
    /// Gate projection `[hidden, dim]` (SiLU branch).
    W1(usize),
    /// Down projection `[dim, hidden]`.
    W2(usize),
    /// Up projection `[hidden, dim]`.
    W3(usize),
    /// RMSNorm weight `[dim]` after the last layer, before the classifier.
    FinalNorm,
    /// Only when the classifier is not shared with the embedding.
    Classifier,
}

impl Tensor {
    /// The checkpoint name (llama's naming).
    pub fn name(self) -> String {
        match self {
            Tensor::Embedding => "tok_embeddings.weight".into(),
            Tensor::AttnNorm(l) => format!("layers.{l}.attention_norm.weight"),
            Tensor::Wq(l) => format!("layers.{l}.attention.wq.weight"),
            Tensor::Wk(l) => format!("layers.{l}.attention.wk.weight"),
            Tensor::Wv(l) => format!("layers.{l}.attention.wv.weight"),
            Tensor::Wo(l) => format!("layers.{l}.attention.wo.weight"),
            Tensor::FfnNorm(l) => format!("layers.{l}.ffn_norm.weight"),
            Tensor::W1(l) => format!("layers.{l}.feed_forward.w1.weight"),
            Tensor::W2(l) => format!("layers.{l}.feed_forward.w2.weight"),
            Tensor::W3(l) => format!("layers.{l}.feed_forward.w3.weight"),
            Tensor::FinalNorm => "norm.weight".into(),
            Tensor::Classifier => "output.weight".into(),
        }
    }

    /// Norm weights get no weight decay.
    pub fn is_norm(self) -> bool {
        matches!(self, Tensor::AttnNorm(_) | Tensor::FfnNorm(_) | Tensor::FinalNorm)
    }

    /// The weight group for reports and tests: the tensor's kind without its layer.
    pub fn group(self) -> &'static str {
        match self {
            Tensor::Embedding => "embedding",
            Tensor::AttnNorm(_) => "attention_norm",
            Tensor::Wq(_) => "wq",
            Tensor::Wk(_) => "wk",
            Tensor::Wv(_) => "wv",
            Tensor::Wo(_) => "wo",
            Tensor::FfnNorm(_) => "ffn_norm",
            Tensor::W1(_) => "w1",
            Tensor::W2(_) => "w2",
            Tensor::W3(_) => "w3",
            Tensor::FinalNorm => "final_norm",
            Tensor::Classifier => "classifier",
        }
    }
}

/// Where each tensor sits in the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    /// The model the layout is for.
    pub config: ModelConfig,
    /// `(tensor, shape, range)` in llama2.c's file order (embedding, then each kind of
    /// layer tensor for all layers, final norm, classifier).
    pub entries: Vec<(Tensor, Vec<usize>, Range<usize>)>,
    /// Total number of f32 values (the sum of every tensor's size).
    pub len: usize,
}

impl ParamLayout {
    /// The layout of every tensor of `config`, packed without gaps in llama2.c's order.
    pub fn new(config: &ModelConfig) -> ParamLayout {
        let (d, h, v, n) = (config.dim, config.hidden_dim, config.vocab_size, config.n_layers);
        let mut shapes: Vec<(Tensor, Vec<usize>)> = vec![(Tensor::Embedding, vec![v, d])];
        // llama2.c writes each kind for all layers before the next kind.
        type Kind = fn(usize) -> Tensor;
        let kinds: [(Kind, Vec<usize>); 9] = [
            (Tensor::AttnNorm, vec![d]),
            (Tensor::Wq, vec![d, d]),
            (Tensor::Wk, vec![d, d]),
            (Tensor::Wv, vec![d, d]),
            (Tensor::Wo, vec![d, d]),
            (Tensor::FfnNorm, vec![d]),
            (Tensor::W1, vec![h, d]),
            (Tensor::W2, vec![d, h]),
            (Tensor::W3, vec![h, d]),
        ];
        for (kind, shape) in kinds {
            for l in 0..n {
                shapes.push((kind(l), shape.clone()));
            }
        }
        shapes.push((Tensor::FinalNorm, vec![d]));
        if !config.shared_classifier {
            shapes.push((Tensor::Classifier, vec![v, d]));
        }
        let mut entries = Vec::with_capacity(shapes.len());
        let mut at = 0;
        for (t, shape) in shapes {
            let len: usize = shape.iter().product();
            entries.push((t, shape, at..at + len));
            at += len;
        }
        ParamLayout { config: config.clone(), entries, len: at }
    }

    /// The range of `t` in the flat buffer.
    pub fn range(&self, t: Tensor) -> Range<usize> {
        let i = self.index(t);
        self.entries[i].2.clone()
    }

    fn index(&self, t: Tensor) -> usize {
        // Entries are few (9 per layer); a linear scan is cheaper than hashing here.
        self.entries
            .iter()
            .position(|(e, _, _)| *e == t)
            .unwrap_or_else(|| panic!("{t:?} is not a tensor of this model"))
    }

    /// The shape of `t`, row-major.
    ///
    /// # Panics
    ///
    /// When `t` is not a tensor of this model: a layer past `n_layers`, or
    /// [`Tensor::Classifier`] with a shared classifier.
    pub fn shape(&self, t: Tensor) -> &[usize] {
        &self.entries[self.index(t)].1
    }
}

/// A flat buffer of f32 values laid out by a [`ParamLayout`]: the parameters, their
/// gradients or an optimizer moment.
#[derive(Clone, Debug)]
pub struct Params {
    /// Where each tensor sits in `data` (shared by parameters, gradients and moments).
    pub layout: Arc<ParamLayout>,
    /// All values, `layout.len` of them.
    pub data: Vec<f32>,
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.layout == other.layout && self.data == other.data
    }
}

impl Params {
    /// All zeros: the start of a gradient buffer or of AdamW's moments.
    pub fn zeros(layout: Arc<ParamLayout>) -> Params {
        let data = vec![0.0; layout.len];
        Params { layout, data }
    }

    /// llama2.c's initialisation: normal(0, 0.02) for matrices, with the output
    /// projections (wo, w2) scaled by 1/sqrt(2 n_layers) as in GPT-2; norms at 1.
    pub fn init(config: &ModelConfig, seed: u64) -> Params {
        let layout = Arc::new(ParamLayout::new(config));
        let mut p = Params::zeros(layout.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let residual = 0.02 / (2.0 * config.n_layers as f32).sqrt();
        for (t, _, range) in &layout.entries {
            let slice = &mut p.data[range.clone()];
            if t.is_norm() {
                slice.fill(1.0);
                continue;
            }
            let std = if matches!(t, Tensor::Wo(_) | Tensor::W2(_)) { residual } else { 0.02 };
            let normal = Normal::new(0.0f32, std).expect("a positive standard deviation");
            for v in slice {
                *v = normal.sample(&mut rng);
            }
        }
        p
    }

    /// The model these values belong to.
    pub fn config(&self) -> &ModelConfig {
        &self.layout.config
    }

    /// The values of `t`, row-major over [`ParamLayout::shape`]. Panics when `t` is not a
    /// tensor of this model.
    pub fn get(&self, t: Tensor) -> &[f32] {
        &self.data[self.layout.range(t)]
    }

    /// The values of `t`, writable. Panics when `t` is not a tensor of this model.
    pub fn get_mut(&mut self, t: Tensor) -> &mut [f32] {
        let r = self.layout.range(t);
        &mut self.data[r]
    }

    /// The classifier matrix `[vocab, dim]`: the embedding when shared.
    pub fn classifier(&self) -> &[f32] {
        if self.config().shared_classifier {
            self.get(Tensor::Embedding)
        } else {
            self.get(Tensor::Classifier)
        }
    }

    /// The tensor that holds the classifier (for its gradient).
    pub fn classifier_tensor(&self) -> Tensor {
        if self.config().shared_classifier { Tensor::Embedding } else { Tensor::Classifier }
    }

    /// Sets every value to zero, keeping the allocation.
    pub fn clear(&mut self) {
        self.data.fill(0.0);
    }

    /// Euclidean norm of all values, accumulated in f64.
    pub fn norm(&self) -> f64 {
        self.data.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
    }

    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn layout_covers_every_parameter_once() {
        let c = Config::preset("tiny").unwrap().model;
        let layout = ParamLayout::new(&c);
        assert_eq!(layout.len, c.parameter_count());
        let mut at = 0;
        for (_, shape, r) in &layout.entries {
            assert_eq!(r.start, at);
            assert_eq!(r.len(), shape.iter().product::<usize>());
            at = r.end;
        }
        let mut unshared = c.clone();
        unshared.shared_classifier = false;
        assert_eq!(ParamLayout::new(&unshared).len, unshared.parameter_count());
    }

    #[test]
    fn init_is_seeded() {
        let c = Config::preset("tiny").unwrap().model;
        assert_eq!(Params::init(&c, 7), Params::init(&c, 7));
        assert_ne!(Params::init(&c, 7).data, Params::init(&c, 8).data);
        let p = Params::init(&c, 7);
        assert!(p.get(Tensor::FinalNorm).iter().all(|&v| v == 1.0));
    }
}
