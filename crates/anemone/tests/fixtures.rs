//! The ten real programs of ../shared/fixtures/mil-maderix compiled and evaluated on the
//! simulator with generated weights: every output is finite, and fixtures 01, 03 and 10 match
//! references computed by hand in f64.

use std::path::PathBuf;

use anemone::{Device, Model, Weights};
use anemone_mil::package::synthetic_weights;
use anemone_mil::{Program, text};

fn fixture(prefix: &str) -> Option<Program> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mil-maderix");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        assert!(
            std::env::var("ANEMONE_REQUIRE_SHARED").as_deref() != Ok("1"),
            "shared fixtures not found at {}",
            dir.display()
        );
        eprintln!("skipped: shared fixtures not found");
        return None;
    };
    let path = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no fixture {prefix}"));
    Some(text::parse(&std::fs::read_to_string(path).unwrap()).unwrap())
}

/// Deterministic inputs in [-1, 1).
fn fill_inputs(model: &mut Model, seed: u64) {
    let names: Vec<String> = model.input_names().iter().map(|s| s.to_string()).collect();
    for (k, name) in names.iter().enumerate() {
        let s = model.input(name).unwrap();
        let n = s.element_count();
        let mut state = seed.wrapping_add(k as u64 * 7919);
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        s.write_f32(&values).unwrap();
    }
}

fn compile(program: &Program) -> Model {
    let weights = synthetic_weights(program, 1).unwrap();
    Device::simulator().compile(program, &weights).unwrap()
}

#[test]
fn all_ten_fixtures_evaluate_to_finite_outputs() {
    for prefix in ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10"] {
        let Some(program) = fixture(prefix) else { return };
        let mut model = compile(&program);
        fill_inputs(&mut model, 42);
        model.evaluate().unwrap_or_else(|e| panic!("{prefix}: {e}"));
        for out in model.outputs() {
            let v = out.read_f32().unwrap();
            let bad = v.iter().position(|x| !x.is_finite());
            assert!(
                bad.is_none(),
                "{prefix}: `{}`[{}] = {}",
                out.name(),
                bad.unwrap(),
                v[bad.unwrap()]
            );
        }
    }
}

fn fp16(x: f64) -> f64 {
    half::f16::from_f64(x).to_f64()
}

#[test]
fn fixture_01_matches_a_hand_computed_conv() {
    let Some(program) = fixture("01") else { return };
    let weights = synthetic_weights(&program, 7).unwrap();
    let (blob, ty, _) = program.blob_refs()[0];
    let w: Vec<f64> = weights
        .read(blob, &ty.as_tensor().unwrap(), anemone_mil::blob::ReadMode::Strict)
        .unwrap()
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
        .collect();
    let mut model = Device::simulator().compile(&program, &weights).unwrap();
    // The seed's input pattern: (c * 32 + s + 1) * 0.01.
    let x: Vec<f32> = (0..64 * 32).map(|i| (i + 1) as f32 * 0.01).collect();
    model.input("x").unwrap().write_f32(&x).unwrap();
    model.evaluate().unwrap();
    let y = model.output("y").unwrap().read_f32().unwrap();
    for o in 0..96 {
        for s in 0..32 {
            // fp16 input, f64 sum, one rounding to fp16 (then exact to fp32).
            let exact: f64 = (0..64).map(|c| w[o * 64 + c] * fp16(x[c * 32 + s] as f64)).sum();
            let got = y[o * 32 + s] as f64;
            let tol = 2.0 * (fp16(exact) - exact).abs().max(exact.abs() * 4.9e-4) + 1e-3;
            assert!((got - exact).abs() <= tol, "y[{o}, {s}] = {got}, want {exact}");
        }
    }
}

#[test]
fn fixture_03_matches_a_hand_computed_matmul() {
    let Some(program) = fixture("03") else { return };
    let mut model = Device::simulator().compile(&program, &Weights::new()).unwrap();
    let x: Vec<f32> = (0..64 * 32).map(|i| ((i % 13) as f32 - 6.0) * 0.125).collect();
    let w: Vec<f32> = (0..96 * 64).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
    model.input("x").unwrap().write_f32(&x).unwrap();
    model.input("W").unwrap().write_f32(&w).unwrap();
    model.evaluate().unwrap();
    let y = model.output("y").unwrap().read_f32().unwrap();
    for i in 0..96 {
        for j in 0..32 {
            // Every operand and product here is exact in fp16, and sums stay below 2048 in
            // multiples of 1/32: the result is exact.
            let want: f64 = (0..64).map(|k| w[i * 64 + k] as f64 * x[k * 32 + j] as f64).sum();
            assert_eq!(y[i * 32 + j] as f64, want, "y[{i}, {j}]");
        }
    }
}

/// softmax(q kᵀ / 8 + mask) v for one head, in f64.
fn attention(q: &[f32], k: &[f32], v: &[f32], causal: bool) -> Vec<f64> {
    let (l, e) = (8, 64);
    let mut out = vec![0.0; l * e];
    for i in 0..l {
        let scores: Vec<f64> = (0..l)
            .map(|j| {
                let dot: f64 = (0..e).map(|d| q[i * e + d] as f64 * k[j * e + d] as f64).sum();
                dot / 8.0 + if causal && j > i { -65504.0 } else { 0.0 }
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
        for d in 0..e {
            out[i * e + d] =
                (0..l).map(|j| (scores[j] - max).exp() / z * v[j * e + d] as f64).sum();
        }
    }
    out
}

#[test]
fn fixture_10_matches_hand_computed_attention_with_and_without_the_mask() {
    let Some(program) = fixture("10") else { return };
    let mk = |seed: u32| -> Vec<f32> {
        (0..12 * 8 * 64)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 20) % 64) as f32 / 64.0
                    - 0.5
            })
            .collect()
    };
    let (q, k, v) = (mk(1), mk(2), mk(3));
    for (device, causal) in [
        // The ANE ignores attn_mask (REFERENCE.md §2), and by default so does the simulator.
        (Device::simulator(), false),
        (
            Device::simulator_with(anemone::sim::SimOptions {
                apply_attention_mask: true,
                ..Default::default()
            }),
            true,
        ),
    ] {
        let mut model = device.compile(&program, &Weights::new()).unwrap();
        model.input("q").unwrap().write_f32(&q).unwrap();
        model.input("k").unwrap().write_f32(&k).unwrap();
        model.input("v").unwrap().write_f32(&v).unwrap();
        model.evaluate().unwrap();
        let att = model.output("att").unwrap().read_f32().unwrap();
        for h in 0..12 {
            let r = h * 8 * 64..(h + 1) * 8 * 64;
            let want = attention(&q[r.clone()], &k[r.clone()], &v[r.clone()], causal);
            for (i, (&got, &want)) in att[r].iter().zip(&want).enumerate() {
                // Scores and probabilities are rounded to fp16 on the way: a few fp16 ulps.
                assert!(
                    (got as f64 - want).abs() <= 4e-3 + 4e-3 * want.abs(),
                    "head {h} [{i}]: {got} vs {want} (causal {causal})"
                );
            }
        }
    }
}
