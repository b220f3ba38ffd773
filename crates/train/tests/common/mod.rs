//! Helpers shared by the training crate's integration tests: error measures for comparing
//! two implementations, and (in [`jax`]) the JAX oracle.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

pub mod jax;

/// Cosine similarity of `a` and `b` (1 for parallel vectors; 0 when either is zero).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// Relative error of `a` against the expected `b`: `||a - b|| / ||b||` (Euclidean norms;
/// `||a - b||` itself when `b` is zero).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "relative error of vectors of different lengths");
    let diff = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let nb = norm(b);
    if nb == 0.0 { diff } else { diff / nb }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}
