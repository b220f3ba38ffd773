//! The f64 Rust reference (`anemone_train::reference`) against an independent JAX
//! implementation of the same model (`scripts/jax_reference.py`, float64): the loss and
//! every tensor group's gradient must agree to near f64 precision. Two implementations
//! written separately agreeing this closely is what lets the reference serve as the oracle
//! for the device kernels.

mod common;

use std::collections::BTreeMap;

use anemone_train::{ModelConfig, Params, reference};
use common::jax::jax_loss_and_grads;
use common::{cosine, rel_err};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tiny model whose weights are far from initialisation (matrices uniform in +-0.3,
/// norm weights in [0.5, 1.5]) so that no path through the model is negligible, and a
/// random batch of two sequences.
fn random_case(shared: bool, seed: u64) -> (Params, Vec<u32>, Vec<u32>) {
    let config = ModelConfig {
        dim: 16,
        hidden_dim: 24,
        n_layers: 2,
        n_heads: 2,
        seq_len: 16,
        vocab_size: 40,
        shared_classifier: shared,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let mut params = Params::init(&config, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let layout = params.layout.clone();
    for (t, _, range) in &layout.entries {
        for v in &mut params.data[range.clone()] {
            *v = if t.is_norm() { rng.random_range(0.5..1.5) } else { rng.random_range(-0.3..0.3) };
        }
    }
    let n = 2 * config.seq_len;
    let mut draw = || (0..n).map(|_| rng.random_range(0..config.vocab_size as u32)).collect();
    let inputs = draw();
    let targets = draw();
    (params, inputs, targets)
}

fn compare(shared: bool) {
    let (params, inputs, targets) = random_case(shared, if shared { 21 } else { 22 });
    let Some((jax_loss, jax_grads)) = jax_loss_and_grads(&params, &inputs, &targets, 2) else {
        return;
    };
    let (loss, grads) = reference::loss_and_grads(&params, &inputs, &targets, 2);
    let loss_err = (loss - jax_loss).abs() / jax_loss.abs();
    assert!(loss_err <= 1e-9, "loss: reference {loss}, JAX {jax_loss} (relative {loss_err:e})");

    // Compare per group (all layers of one kind together), so that a wrong term in one
    // kind of tensor cannot hide in the norm of the whole gradient.
    let mut groups: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (t, _, range) in &params.layout.entries {
        let entry = groups.entry(t.group()).or_default();
        entry.0.extend_from_slice(&grads[range.clone()]);
        entry.1.extend_from_slice(&jax_grads[range.clone()]);
    }
    for (group, (ours, theirs)) in &groups {
        let err = rel_err(ours, theirs);
        eprintln!("{group:>15}: relative error {err:.1e}, cosine {:.15}", cosine(ours, theirs));
        assert!(theirs.iter().any(|&g| g != 0.0), "{group}: JAX's gradient is zero");
        assert!(err <= 1e-8, "{group}: gradient differs from JAX by {err:e} (relative)");
    }
}

#[test]
fn reference_matches_jax_shared_classifier() {
    compare(true);
}

#[test]
fn reference_matches_jax_separate_classifier() {
    compare(false);
}
