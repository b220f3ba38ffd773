//! Gradient truth: one full training step on the `tiny` preset (device kernels in fp16 on
//! the simulator, plus the CPU side) against two independent oracles in f64: the plain
//! Rust reference (always) and JAX's autodiff (when installed; required in CI).
//!
//! Bound, per weight group (all layers' tensors of one kind together): cosine similarity
//! at least 0.999 and relative error `||g - ref|| / ||ref||` at most 1%. The step runs its matmuls in
//! fp16 (11 significant bits, relative step 4.9e-4) through two layers forward and back;
//! measured relative errors are 0.05-0.13%, a few fp16 steps, as expected of a chain of
//! rounded products; a wrong formula errs by far more than 1%.

mod common;

use anemone::Device;
use anemone_train::config::Config;
use anemone_train::params::{Params, Tensor};
use anemone_train::reference;
use anemone_train::step::Engine;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random token windows, `batch` sequences of `seq` inputs and their next tokens.
fn tokens(seed: u64, batch: usize, seq: usize, vocab: usize) -> (Vec<u32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut inputs = Vec::with_capacity(batch * seq);
    let mut targets = Vec::with_capacity(batch * seq);
    for _ in 0..batch {
        let window: Vec<u32> = (0..=seq).map(|_| rng.random_range(0..vocab as u32)).collect();
        inputs.extend_from_slice(&window[..seq]);
        targets.extend_from_slice(&window[1..]);
    }
    (inputs, targets)
}

/// A model a little way into training, so gradients are not those of the symmetric
/// initialisation: weights perturbed, norms away from 1.
fn trained_like(config: &Config, seed: u64) -> Params {
    let mut p = Params::init(&config.model, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for (t, _, range) in p.layout.clone().entries.iter() {
        for v in &mut p.data[range.clone()] {
            if t.is_norm() {
                *v = rng.random_range(0.7..1.3);
            } else {
                *v += rng.random_range(-0.03..0.03);
            }
        }
    }
    p
}

fn group(values: &[f64], params: &Params, name: &str) -> Vec<f64> {
    params
        .layout
        .entries
        .iter()
        .filter(|(t, _, _)| t.group() == name)
        .flat_map(|(_, _, r)| values[r.clone()].iter().copied())
        .collect()
}

fn groups(params: &Params) -> Vec<&'static str> {
    let mut names: Vec<&'static str> =
        params.layout.entries.iter().map(|(t, _, _)| t.group()).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    names
}

fn compare(label: &str, params: &Params, got: &[f64], want: &[f64]) {
    for name in groups(params) {
        let (g, w) = (group(got, params, name), group(want, params, name));
        let cos = common::cosine(&g, &w);
        let rel = common::rel_err(&g, &w);
        println!("{label} {name:>15}: cosine {cos:.6}, relative error {rel:.4}");
        assert!(cos >= 0.999, "{label} {name}: cosine {cos} < 0.999");
        assert!(rel <= 0.01, "{label} {name}: relative error {rel} > 1%");
    }
}

#[test]
fn one_training_step_matches_f64_autodiff() {
    let config = Config::preset("tiny").unwrap();
    let (batch, seq, vocab) = (4, config.model.seq_len, config.model.vocab_size);
    let params = trained_like(&config, 11);
    let (inputs, targets) = tokens(5, batch, seq, vocab);

    let device = Device::simulator();
    let mut engine = Engine::new(&device, &config.model, batch, true).unwrap();
    engine.stage_weights(&params).unwrap();
    let mut grads = Params::zeros(params.layout.clone());
    let loss = engine
        .accumulate_gradients(&params, &inputs, &targets, config.train.loss_scale, 1.0, &mut grads)
        .unwrap();
    let got: Vec<f64> = grads.data.iter().map(|&v| f64::from(v)).collect();

    let (ref_loss, ref_grads) = reference::loss_and_grads(&params, &inputs, &targets, batch);
    println!("loss: device {loss:.6}, f64 reference {ref_loss:.6}");
    assert!((loss - ref_loss).abs() < 2e-3, "loss {loss} vs {ref_loss}");
    compare("vs f64 reference", &params, &got, &ref_grads);

    if let Some((jax_loss, jax_grads)) =
        common::jax::jax_loss_and_grads(&params, &inputs, &targets, batch)
    {
        assert!((loss - jax_loss).abs() < 2e-3, "loss {loss} vs JAX {jax_loss}");
        compare("vs JAX", &params, &got, &jax_grads);
    }
}

#[test]
fn unshared_classifier_gets_its_own_gradient() {
    let mut config = Config::preset("tiny").unwrap();
    config.model.shared_classifier = false;
    config.model.n_layers = 1;
    let (batch, seq, vocab) = (2, config.model.seq_len, config.model.vocab_size);
    let params = trained_like(&config, 3);
    let (inputs, targets) = tokens(9, batch, seq, vocab);
    let device = Device::simulator();
    let mut engine = Engine::new(&device, &config.model, batch, true).unwrap();
    engine.stage_weights(&params).unwrap();
    let mut grads = Params::zeros(params.layout.clone());
    engine.accumulate_gradients(&params, &inputs, &targets, 256.0, 1.0, &mut grads).unwrap();
    let got: Vec<f64> = grads.data.iter().map(|&v| f64::from(v)).collect();
    let (_, want) = reference::loss_and_grads(&params, &inputs, &targets, batch);
    compare("unshared", &params, &got, &want);
    assert!(grads.get(Tensor::Classifier).iter().any(|&g| g != 0.0));
}
