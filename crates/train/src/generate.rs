//! Choosing the next token from the classifier's logits: greedy decoding, temperature
//! and nucleus (top-p) sampling, seeded so that a generation can be reproduced.
//! [`Generator`] runs the model's forward kernels on the device to get those logits.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Below this temperature sampling is greedy: dividing by it would overflow the logits
/// and the distribution is a point mass on the argmax anyway.
const GREEDY_TEMPERATURE: f32 = 1e-6;

/// How [`TokenSampler`] picks tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerSettings {
    /// Softmax temperature; 0 picks the most likely token every time.
    pub temperature: f32,
    /// Nucleus size: sample among the most likely tokens whose probabilities add up to at
    /// least this much (1 keeps every token).
    pub top_p: f32,
    /// Seed of the random stream; the same seed and logits give the same tokens.
    pub seed: u64,
}

impl Default for SamplerSettings {
    /// llama2.c's `run.c` defaults for temperature and top-p.
    fn default() -> SamplerSettings {
        SamplerSettings { temperature: 0.8, top_p: 0.9, seed: 0 }
    }
}

impl SamplerSettings {
    /// Refuses a temperature that is negative or not finite, and a top-p outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Config(format!(
                "temperature {} must be finite and at least 0 (0 = always the most likely token)",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config(format!(
                "top_p {} must lie in (0, 1] (1 = sample from every token)",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Draws token ids from logits with a seeded ChaCha8 stream.
#[derive(Clone, Debug)]
pub struct TokenSampler {
    rng: ChaCha8Rng,
    settings: SamplerSettings,
}

impl TokenSampler {
    /// A sampler whose stream starts from `settings.seed`. The settings are not checked
    /// here (see [`SamplerSettings::validate`]); out-of-range values degrade gracefully:
    /// a negative or NaN temperature samples greedily, a top-p of 0 or less (or NaN)
    /// keeps only the most likely token.
    pub fn new(settings: SamplerSettings) -> TokenSampler {
        TokenSampler { rng: ChaCha8Rng::seed_from_u64(settings.seed), settings }
    }

    /// The temperature, top-p and seed this sampler was made with.
    pub fn settings(&self) -> &SamplerSettings {
        &self.settings
    }

    /// The next token for `logits` (one value per vocabulary entry).
    ///
    /// At a temperature below 1e-6 this is the argmax. Otherwise the probabilities are
    /// `softmax(logits / temperature)` (computed in f64 after subtracting the largest
    /// logit); unless `top_p >= 1`, only the smallest set of most likely tokens whose
    /// probabilities add up to at least `top_p` is kept (ties broken towards the lower
    /// id), and one of those is drawn in proportion to its probability.
    ///
    /// NaN logits count as minus infinity and plus infinity as the largest finite value;
    /// if no logit is above minus infinity the result is token 0. Every call with a
    /// non-greedy temperature consumes exactly one random number, so a sequence depends
    /// only on the seed and the logits.
    ///
    /// Panics on empty `logits` (a vocabulary has at least one token).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        assert!(!logits.is_empty(), "cannot sample from an empty vocabulary");
        let temperature = self.settings.temperature;
        // A NaN temperature has no meaningful distribution; greedy is the safe reading.
        if temperature.is_nan() || temperature < GREEDY_TEMPERATURE {
            return argmax(logits);
        }
        let best = argmax(logits) as usize;
        let max = sanitize(logits[best]);
        if max == f32::NEG_INFINITY {
            return 0;
        }
        let inv_t = 1.0 / f64::from(temperature);
        // Unnormalised probabilities: exp((x - max) / T) is 1 at the argmax and in (0, 1]
        // elsewhere, so the sum cannot overflow and is at least 1.
        let weights: Vec<f64> = logits
            .iter()
            .map(|&x| {
                let x = sanitize(x);
                if x == f32::NEG_INFINITY {
                    0.0
                } else {
                    ((f64::from(x) - f64::from(max)) * inv_t).exp()
                }
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let u: f64 = self.rng.random::<f64>();

        let top_p = self.settings.top_p;
        if top_p >= 1.0 {
            return draw(weights.iter().copied().enumerate(), u * total, best);
        }
        // Most likely first; equal weights in id order so the nucleus is well defined.
        let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
        order.sort_unstable_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        let target = f64::from(top_p) * total;
        let mut kept = 0;
        let mut mass = 0.0;
        for &i in &order {
            mass += weights[i];
            kept += 1;
            // A NaN or non-positive top-p stops at the first (most likely) token.
            if target.is_nan() || mass >= target {
                break;
            }
        }
        draw(order[..kept].iter().map(|&i| (i, weights[i])), u * mass, order[0])
    }
}

/// The index of the largest logit (NaN counts as minus infinity), the first one on ties;
/// 0 when every logit is minus infinity or NaN.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        let x = sanitize(x);
        if x > best_value {
            best = i;
            best_value = x;
        }
    }
    best as u32
}

/// NaN becomes minus infinity (never chosen) and plus infinity the largest finite value,
/// so that subtracting the maximum stays finite.
fn sanitize(x: f32) -> f32 {
    if x.is_nan() { f32::NEG_INFINITY } else { x.min(f32::MAX) }
}

/// Walks `(id, weight)` pairs until the running sum passes `point` (in `[0, sum)`);
/// `fallback` covers the rounding case where the sum is reached without passing it.
fn draw(items: impl Iterator<Item = (usize, f64)>, point: f64, fallback: usize) -> u32 {
    let mut acc = 0.0;
    let mut last = fallback;
    for (i, w) in items {
        if w <= 0.0 {
            continue;
        }
        acc += w;
        last = i;
        if point < acc {
            return i as u32;
        }
    }
    last as u32
}

/// Text generation with a trained model: each new token runs the forward kernels on the
/// device over the last `seq_len` tokens (no key-value cache: the kernels are the training
/// kernels, compiled once at batch 1), and the classifier on the CPU for the last position.
pub struct Generator {
    engine: crate::step::Engine,
    params: crate::params::Params,
    /// Sample only ids below this (a tokenizer smaller than the model's vocabulary cannot
    /// decode the rest).
    vocab_limit: usize,
}

impl Generator {
    /// Compiles the forward kernels for one sequence.
    pub fn new(device: &anemone::Device, params: crate::params::Params) -> Result<Generator> {
        let engine = crate::step::Engine::new(device, params.config(), 1, false)?;
        let vocab_limit = params.config().vocab_size;
        let mut g = Generator { engine, params, vocab_limit };
        g.engine.stage_weights(&g.params)?;
        Ok(g)
    }

    /// Restricts sampling to ids below `n` (the tokenizer's vocabulary, when it is
    /// smaller than the model's).
    pub fn limit_vocab(&mut self, n: usize) {
        self.vocab_limit = n.clamp(1, self.params.config().vocab_size);
    }

    /// Device compiles spent by [`Generator::new`].
    pub fn compiles(&self) -> usize {
        self.engine.compiles()
    }

    /// The logits that follow `context` (at least one token; only the last `seq_len`
    /// are seen).
    pub fn next_logits(&mut self, context: &[u32]) -> Result<Vec<f32>> {
        let cfg = self.params.config().clone();
        let seq = cfg.seq_len;
        if context.is_empty() {
            return Err(crate::Error::Data(
                "generation needs at least one token of context".into(),
            ));
        }
        let window = &context[context.len().saturating_sub(seq)..];
        // Causal attention: positions after the window's end cannot change its last
        // position, so padding them with any token is harmless.
        let mut ids = window.to_vec();
        ids.resize(seq, 0);
        let xf = self.engine.hidden(&self.params, &ids)?;
        let last = window.len() - 1;
        let (d, v) = (cfg.dim, cfg.vocab_size);
        let column: Vec<f32> = (0..d).map(|c| xf[c * seq + last]).collect();
        let classifier = self.params.classifier();
        Ok((0..v)
            .map(|tok| {
                classifier[tok * d..(tok + 1) * d].iter().zip(&column).map(|(a, b)| a * b).sum()
            })
            .collect())
    }

    /// Appends `n` sampled tokens to `context`, calling `on_token` with each as it comes.
    pub fn generate(
        &mut self,
        context: &mut Vec<u32>,
        n: usize,
        sampler: &mut TokenSampler,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<()> {
        for _ in 0..n {
            let logits = self.next_logits(context)?;
            let id = sampler.sample(&logits[..self.vocab_limit]);
            context.push(id);
            on_token(id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_p: f32, seed: u64) -> TokenSampler {
        TokenSampler::new(SamplerSettings { temperature, top_p, seed })
    }

    #[test]
    fn zero_temperature_is_argmax() {
        let logits = [0.1, 2.5, -1.0, 2.4, 0.0];
        let mut s = sampler(0.0, 0.9, 1);
        for _ in 0..10 {
            assert_eq!(s.sample(&logits), 1);
        }
        assert_eq!(sampler(1e-7, 1.0, 1).sample(&logits), 1);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1, "first on ties");
    }

    #[test]
    fn tiny_top_p_always_takes_the_most_likely() {
        let logits = [0.5, 1.0, 1.2, 0.9, -3.0, 1.1];
        let mut s = sampler(1.5, 1e-6, 9);
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 2);
        }
    }

    #[test]
    fn nucleus_excludes_the_tail() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps exactly the first two.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = sampler(1.0, 0.8, 5);
        let mut seen = [0usize; 4];
        for _ in 0..5000 {
            seen[s.sample(&logits) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[0] > 0 && seen[1] > 0);
        // Renormalised within the nucleus: e / (e + 1) for the first.
        let want = std::f64::consts::E / (std::f64::consts::E + 1.0);
        assert!((seen[0] as f64 / 5000.0 - want).abs() < 0.03, "{seen:?}");
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let logits = [1.0f32, 2.0, 0.5, -1.0, 1.5];
        let z: f64 = logits.iter().map(|&x| f64::from(x).exp()).sum();
        let mut s = sampler(1.0, 1.0, 42);
        let n = 100_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[s.sample(&logits) as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let want = f64::from(logits[i]).exp() / z;
            let got = c as f64 / n as f64;
            // About four standard deviations of a binomial proportion at n = 1e5.
            assert!((got - want).abs() < 0.007, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn temperature_sharpens() {
        let logits = [1.0f32, 2.0];
        let count = |t: f32| {
            let mut s = sampler(t, 1.0, 3);
            (0..4000).filter(|_| s.sample(&logits) == 1).count()
        };
        assert!(count(0.25) > count(1.0));
        assert!(count(4.0) < count(1.0));
    }

    #[test]
    fn same_seed_same_sequence() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = sampler(0.8, 0.9, seed);
            (0..100).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn non_finite_logits_do_not_panic() {
        let mut s = sampler(1.0, 0.9, 0);
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        for _ in 0..20 {
            assert_eq!(s.sample(&[nan, nan, 1.0, nan]), 2);
            assert_eq!(s.sample(&[-inf, inf, 0.0]), 1);
            assert_eq!(s.sample(&[nan, -inf, nan]), 0);
            let t = s.sample(&[inf, 0.0, inf]);
            assert!(t == 0 || t == 2);
        }
        assert_eq!(argmax(&[nan, nan]), 0);
        assert_eq!(argmax(&[nan, -inf, -2.0]), 2);
        // Out-of-range settings degrade instead of panicking.
        assert_eq!(sampler(f32::NAN, 0.9, 0).sample(&[0.0, 1.0]), 1);
        assert_eq!(sampler(1.0, 0.0, 0).sample(&[0.0, 1.0]), 1);
        assert_eq!(sampler(1.0, f32::NAN, 0).sample(&[0.0, 1.0]), 1);
        let t = sampler(f32::MAX, 1.0, 0).sample(&[0.0, 1.0, -inf]);
        assert!(t < 2);
    }

    #[test]
    fn validation_explains_bad_settings() {
        assert!(SamplerSettings::default().validate().is_ok());
        let ok = |temperature, top_p| SamplerSettings { temperature, top_p, seed: 0 }.validate();
        assert!(ok(0.0, 1.0).is_ok());
        for (t, p, word) in [
            (-0.1, 0.9, "temperature"),
            (f32::NAN, 0.9, "temperature"),
            (f32::INFINITY, 0.9, "temperature"),
            (1.0, 0.0, "top_p"),
            (1.0, 1.5, "top_p"),
            (1.0, f32::NAN, "top_p"),
        ] {
            let e = ok(t, p).unwrap_err();
            assert!(matches!(e, Error::Config(_)));
            assert!(e.to_string().contains(word), "{e}");
        }
    }
}
