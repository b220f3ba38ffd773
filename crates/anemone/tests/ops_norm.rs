//! linear, layer_norm, batch_norm, instance_norm, max_pool and avg_pool end to end: MIL text ->
//! validation -> simulator compile -> evaluate. The programs use the argument forms coremltools
//! writes for real models (weights as const ops, inline fp16 epsilons, inline biases, int32
//! window lists, `pad_type = "custom"` with zero pads). Every result is compared with a reference
//! computed here in f64 from the op's definition (coremltools ops/defs/iOS15 linear.py,
//! normalization.py, pool.py) and rounded once to fp16 by a rounding written here from the
//! format, never with the simulator's kernels.
//!
//! Tolerances, for a reference `r` rounded once (`ulp` = the fp16 spacing at `r`):
//! - max_pool: exact (a comparison of fp16 values).
//! - linear: ulp + (K + 1) 2^-23 (sum|x w| + |b|). The simulator sums the K products in f32 (each
//!   product of fp16 values is exact in f32), adds the bias, and rounds once: its f32 value errs
//!   by at most (K + 1) 2^-24 of that magnitude (doubled here), and two correct roundings of
//!   values that close differ by at most one ulp more.
//! - layer_norm, instance_norm: ulp + (n + 16) 2^-21 (1 + |z|) for groups of n elements and a
//!   standardized value z: the f32 mean and variance of n values err by about n 2^-24 of the
//!   values' magnitude (below 4 here), which the division by the standard deviation carries into
//!   z, then into z gamma + beta.
//! - batch_norm: ulp + 2^-20 (|x - mean| |scale| + |beta| + 1): a handful of f32 roundings.
//! - avg_pool: ulp + k 2^-23 for k window elements of magnitude below 1: an f32 sum of k values
//!   and one division.
//!
//! Programs typed fp32 run in fp16 by default, as on the ANE (`Fp32Arithmetic::AsAne`): their
//! reference is the fp16 one on the inputs rounded to fp16, and every output must be an fp16
//! value. With `Fp32Arithmetic::Exact` they are IEEE f32, checked at f32 precision.

// Reference code indexes several arrays with the same multi-index; index loops read clearer.
#![allow(clippy::needless_range_loop)]

use anemone::sim::{Fp32Arithmetic, SimOptions};
use anemone::{Device, Weights};
use anemone_mil::DType;
use anemone_mil::blob::BlobWriter;
use anemone_mil::text;

// ---------------------------------------------------------------------------------------------
// Reference arithmetic and test plumbing.

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi), rounded to fp16.
    fn fp16(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        round16(lo + (hi - lo) * u)
    }

    fn fp16s(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.fp16(lo, hi)).collect()
    }

    fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<f64> {
        let span = (hi - lo + 1) as u64;
        (0..n).map(|_| (lo + (self.next() % span) as i64) as f64).collect()
    }
}

/// The fp16 binade spacing at magnitude `a`: 2^(e - 10) for 2^e <= a < 2^(e + 1), e >= -14,
/// and the subnormal spacing 2^-24 below 2^-14.
fn spacing16(a: f64) -> f64 {
    let mut e = -14;
    while e < 15 && a >= 2f64.powi(e + 1) {
        e += 1;
    }
    2f64.powi(e - 10)
}

/// The fp16 value nearest `x`, ties to the even significand; ±inf past 65504 once rounded.
fn round16(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let s = spacing16(x.abs());
    let r = (x.abs() / s).round_ties_even() * s;
    if r > 65504.0 { f64::INFINITY.copysign(x) } else { r.copysign(x) }
}

/// One fp16 ulp at the magnitude of `x` once rounded.
fn ulp16(x: f64) -> f64 {
    let r = round16(x).abs();
    if r.is_infinite() { 32.0 } else { spacing16(r) }
}

/// The matmul output port of the ANE: rounded once, ±inf from 32768 on.
fn mac_port(sum: f64) -> f64 {
    let r = round16(sum);
    if r.abs() >= 32768.0 { f64::INFINITY.copysign(r) } else { r }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// A literal of MIL text: `tensor<fp16, [2, 3]>([..])`, values printed exactly.
fn lit(dtype: &str, shape: &[usize], values: &[f64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let vals: Vec<String> = values
        .iter()
        .map(|v| if dtype.starts_with("int") { format!("{}", *v as i64) } else { format!("{v:e}") })
        .collect();
    format!("tensor<{dtype}, [{}]>([{}])", dims.join(", "), vals.join(", "))
}

fn ty(dtype: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("tensor<{dtype}, [{}]>", dims.join(", "))
}

/// A const op line for a literal.
fn konst(name: &str, dtype: &str, shape: &[usize], values: &[f64]) -> String {
    format!(
        "{} {name} = const()[name = string(\"{name}\"), val = {}];",
        ty(dtype, shape),
        lit(dtype, shape, values)
    )
}

const WEIGHT_FILE: &str = "@model_path/weights/weight.bin";

/// A const op line reading fp16 values from the weight file at `offset`.
fn blob_konst(name: &str, shape: &[usize], offset: u64) -> String {
    let t = ty("fp16", shape);
    format!(
        "{t} {name} = const()[name = string(\"{name}\"), val = {t}(BLOBFILE(path = string(\"{WEIGHT_FILE}\"), offset = uint64({offset})))];"
    )
}

/// `main(inputs) { body } -> (outputs)` as a program.
fn program(inputs: &[(&str, String)], body: &[String], outputs: &[&str]) -> String {
    let params: Vec<String> = inputs.iter().map(|(n, t)| format!("{t} {n}")).collect();
    let mut s = format!("program(1.3)\n{{\n    func main<ios18>({}) {{\n", params.join(", "));
    for line in body {
        s.push_str("        ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str(&format!("    }} -> ({});\n}}\n", outputs.join(", ")));
    s
}

/// An output as the simulator wrote it.
struct Output {
    shape: Vec<usize>,
    dtype: DType,
    values: Vec<f64>,
}

fn default_device() -> Device {
    Device::simulator()
}

fn exact_fp32_device() -> Device {
    Device::simulator_with(SimOptions { fp32: Fp32Arithmetic::Exact, ..SimOptions::default() })
}

/// Parses, compiles and runs `mil`, writing `inputs` (converted to each input's dtype), and
/// returns the function's outputs in order.
fn run(device: &Device, mil: &str, weights: &Weights, inputs: &[(&str, &[f64])]) -> Vec<Output> {
    let program = text::parse(mil).unwrap_or_else(|e| panic!("parse: {e:?}\n{mil}"));
    let mut model =
        device.compile(&program, weights).unwrap_or_else(|e| panic!("compile: {e}\n{mil}"));
    for (name, values) in inputs {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        model.input(name).unwrap().write_f32(&v).unwrap();
    }
    model.evaluate().unwrap_or_else(|e| panic!("evaluate: {e}"));
    let function = program.main_function().unwrap();
    function
        .block
        .outputs
        .iter()
        .map(|o| {
            let s = model.output(&o.name).unwrap();
            let b = s.read_bytes();
            let values = match s.dtype() {
                DType::Fp16 => b
                    .chunks_exact(2)
                    .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())
                    .collect(),
                DType::Fp32 => b
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                DType::Int32 => b
                    .chunks_exact(4)
                    .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                other => panic!("no decoder for {other}"),
            };
            Output { shape: s.shape().to_vec(), dtype: s.dtype(), values }
        })
        .collect()
}

/// The compile error of `mil`, as text.
fn compile_error(mil: &str) -> String {
    let program = text::parse(mil).unwrap_or_else(|e| panic!("parse: {e:?}\n{mil}"));
    match default_device().compile(&program, &Weights::new()) {
        Ok(_) => panic!("compiled, but should not have:\n{mil}"),
        Err(e) => e.to_string(),
    }
}

fn same(got: f64, want: f64) -> bool {
    got == want && (want != 0.0 || got.is_sign_negative() == want.is_sign_negative())
}

/// Asserts |got - want| <= tol(i); infinities must match exactly.
#[track_caller]
fn assert_close(
    what: &str,
    out: &Output,
    shape: &[usize],
    want: &[f64],
    tol: impl Fn(usize) -> f64,
) {
    assert_eq!(out.shape, shape, "{what}: shape");
    assert_eq!(out.values.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in out.values.iter().zip(want).enumerate() {
        let t = tol(i);
        let ok = if g.is_infinite() || w.is_infinite() { same(g, w) } else { (g - w).abs() <= t };
        assert!(ok, "{what}[{i}]: got {g:e}, want {w:e}, tolerance {t:e}");
    }
}

#[track_caller]
fn assert_exact(what: &str, out: &Output, shape: &[usize], want: &[f64]) {
    assert_close(what, out, shape, want, |_| 0.0);
}

/// Every value of an fp32 output of a program run as on the ANE is an fp16 value.
#[track_caller]
fn assert_fp16_values(what: &str, out: &Output) {
    assert_eq!(out.dtype, DType::Fp32, "{what}: dtype");
    for (i, &v) in out.values.iter().enumerate() {
        assert!(same(round16(v), v), "{what}[{i}]: {v:e} is not an fp16 value");
    }
}

#[test]
fn reference_rounding_agrees_with_the_format() {
    for (x, want) in [
        (1.0 + 2f64.powi(-11), 1.0),
        (1.0 + 3.0 * 2f64.powi(-11), 1.0 + 2f64.powi(-9)),
        (2049.0, 2048.0),
        (2051.0, 2052.0),
        (65519.0, 65504.0),
        (65520.0, f64::INFINITY),
        (-65520.0, f64::NEG_INFINITY),
        (3.0 * 2f64.powi(-25), 2f64.powi(-23)),
        (2f64.powi(-25), 0.0),
        (0.1, 0.0999755859375),
    ] {
        assert_eq!(round16(x), want, "round16({x:e})");
    }
    let mut rng = Rng::new(1);
    for _ in 0..5000 {
        let x = (rng.fp16(-1.0, 1.0) * 2f64.powi((rng.next() % 40) as i32 - 24)) as f32;
        assert_eq!(round16(f64::from(x)), half::f16::from_f32(x).to_f64(), "{x:e}");
    }
    assert_eq!(ulp16(1.0), 2f64.powi(-10));
    assert_eq!(mac_port(32760.0), f64::INFINITY);
    assert_eq!(mac_port(32759.0), 32752.0);
}

// ---------------------------------------------------------------------------------------------
// linear

/// `x W^T + b` for x [rows, d_in] (leading dims flattened): the exact sums and sum|x w| + |b|.
fn linear_ref(
    x: &[f64],
    d_in: usize,
    w: &[f64],
    d_out: usize,
    b: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / d_in;
    let (mut sums, mut mags) = (Vec::new(), Vec::new());
    for r in 0..rows {
        for o in 0..d_out {
            let bias = b.map_or(0.0, |b| b[o]);
            let (mut s, mut m) = (bias, bias.abs());
            for k in 0..d_in {
                s += x[r * d_in + k] * w[o * d_in + k];
                m += (x[r * d_in + k] * w[o * d_in + k]).abs();
            }
            sums.push(s);
            mags.push(m);
        }
    }
    (sums, mags)
}

fn linear_tolerance(want: f64, mag: f64, k: usize) -> f64 {
    ulp16(want) + (k + 1) as f64 * 2f64.powi(-23) * mag
}

/// As the transformer's qkv projection: x [1, 16, 32] fp16, weight [96, 32] and bias [96] as
/// const ops reading the weight file.
#[test]
fn linear_like_the_transformer_projection() {
    let (d_in, d_out) = (32, 96);
    let mut rng = Rng::new(10);
    let x = rng.fp16s(16 * d_in, -2.0, 2.0);
    let w = rng.fp16s(d_out * d_in, -0.3, 0.3);
    let b = rng.fp16s(d_out, -0.5, 0.5);
    let mut blob = BlobWriter::new();
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let off_w = blob.add_f32_as_fp16(&f32s(&w));
    let off_b = blob.add_f32_as_fp16(&f32s(&b));
    let mut weights = Weights::new();
    weights.insert(WEIGHT_FILE, blob.finish());
    let mil = program(
        &[("x", ty("fp16", &[1, 16, d_in]))],
        &[
            blob_konst("qkv_weight_to_fp16", &[d_out, d_in], off_w),
            blob_konst("qkv_bias_to_fp16", &[d_out], off_b),
            format!(
                "{} linear_0 = linear(x = x, weight = qkv_weight_to_fp16, bias = qkv_bias_to_fp16)[name = string(\"linear_0_cast_fp16\")];",
                ty("fp16", &[1, 16, d_out])
            ),
        ],
        &["linear_0"],
    );
    let out = run(&default_device(), &mil, &weights, &[("x", &x)]);
    let (sums, mags) = linear_ref(&x, d_in, &w, d_out, Some(&b));
    let want: Vec<f64> = sums.iter().map(|&s| mac_port(s)).collect();
    assert_close("linear qkv", &out[0], &[1, 16, d_out], &want, |i| {
        linear_tolerance(want[i], mags[i], d_in)
    });
}

/// As the mlp: fp32 input cast to fp16, linear with a const bias, relu, linear with an inline
/// bias literal; both linear results are returned.
#[test]
fn linear_like_the_mlp_with_an_inline_bias() {
    let mut rng = Rng::new(11);
    let x = rng.fp16s(4 * 16, -1.0, 1.0);
    let w1 = rng.fp16s(32 * 16, -0.25, 0.25);
    let b1 = rng.fp16s(32, -0.2, 0.2);
    let w2 = rng.fp16s(8 * 32, -0.2, 0.2);
    let b2 = rng.fp16s(8, -0.2, 0.2);
    let mil = program(
        &[("x", ty("fp32", &[4, 16]))],
        &[
            "string to16 = const()[name = string(\"to16\"), val = string(\"fp16\")];".into(),
            format!(
                "{} x_to_fp16 = cast(x = x, dtype = to16)[name = string(\"cast_1\")];",
                ty("fp16", &[4, 16])
            ),
            konst("fc1_weight_to_fp16", "fp16", &[32, 16], &w1),
            konst("fc1_bias_to_fp16", "fp16", &[32], &b1),
            konst("fc2_weight_to_fp16", "fp16", &[8, 32], &w2),
            format!(
                "{} l0 = linear(x = x_to_fp16, weight = fc1_weight_to_fp16, bias = fc1_bias_to_fp16)[name = string(\"linear_0_cast_fp16\")];",
                ty("fp16", &[4, 32])
            ),
            format!(
                "{} h = relu(x = l0)[name = string(\"input_cast_fp16\")];",
                ty("fp16", &[4, 32])
            ),
            format!(
                "{} l1 = linear(x = h, weight = fc2_weight_to_fp16, bias = {})[name = string(\"linear_1_cast_fp16\")];",
                ty("fp16", &[4, 8]),
                lit("fp16", &[8], &b2)
            ),
        ],
        &["l0", "l1"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (s0, m0) = linear_ref(&x, 16, &w1, 32, Some(&b1));
    let want0: Vec<f64> = s0.iter().map(|&s| mac_port(s)).collect();
    assert_close("mlp linear 0", &out[0], &[4, 32], &want0, |i| {
        linear_tolerance(want0[i], m0[i], 16)
    });
    // The second layer from the first layer's actual output, so that errors do not compound.
    let h: Vec<f64> = out[0].values.iter().map(|&v| v.max(0.0)).collect();
    let (s1, m1) = linear_ref(&h, 32, &w2, 8, Some(&b2));
    let want1: Vec<f64> = s1.iter().map(|&s| mac_port(s)).collect();
    assert_close("mlp linear 1", &out[1], &[4, 8], &want1, |i| {
        linear_tolerance(want1[i], m1[i], 32)
    });
}

/// Rank 1 x, no bias (zeros by default), and the output port: sums that round to 32768 or
/// more are infinite, as for matmul.
#[test]
fn linear_rank_one_without_bias_and_saturation() {
    let mut rng = Rng::new(12);
    let x = rng.fp16s(16, -1.0, 1.0);
    let mut w = rng.fp16s(3 * 16, -1.0, 1.0);
    // Row 2 sums 16 * 128 * 16 = 32768 for an x of 128s, checked with a second input.
    for v in &mut w[32..48] {
        *v = 16.0;
    }
    let mil = program(
        &[("x", ty("fp16", &[16])), ("big", ty("fp16", &[16]))],
        &[
            konst("W", "fp16", &[3, 16], &w),
            format!("{} y = linear(x = x, weight = W)[name = string(\"y\")];", ty("fp16", &[3])),
            format!("{} z = linear(x = big, weight = W)[name = string(\"z\")];", ty("fp16", &[3])),
        ],
        &["y", "z"],
    );
    let big = vec![128.0; 16];
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x), ("big", &big)]);
    let (s, m) = linear_ref(&x, 16, &w, 3, None);
    let want: Vec<f64> = s.iter().map(|&v| mac_port(v)).collect();
    assert_close("linear rank 1", &out[0], &[3], &want, |i| linear_tolerance(want[i], m[i], 16));
    let (s, m) = linear_ref(&big, 16, &w, 3, None);
    let want: Vec<f64> = s.iter().map(|&v| mac_port(v)).collect();
    assert_eq!(want[2], f64::INFINITY);
    assert_close("linear saturating", &out[1], &[3], &want, |i| {
        linear_tolerance(want[i], m[i], 16)
    });
}

/// A program typed fp32: in fp16 by default (operands rounded, fp16 result), IEEE f32 on
/// request.
#[test]
fn linear_in_an_fp32_program() {
    let mut rng = Rng::new(13);
    let f32_values = |rng: &mut Rng, n: usize| -> Vec<f64> {
        // Values with more bits than fp16 holds, so that the rounding of operands shows.
        (0..n).map(|_| f64::from((rng.fp16(-1.0, 1.0) + rng.fp16(-1e-3, 1e-3)) as f32)).collect()
    };
    let x = f32_values(&mut rng, 5 * 24);
    let w = f32_values(&mut rng, 7 * 24);
    let b = f32_values(&mut rng, 7);
    let mil = program(
        &[("x", ty("fp32", &[5, 24]))],
        &[
            konst("W", "fp32", &[7, 24], &w),
            konst("B", "fp32", &[7], &b),
            format!(
                "{} y = linear(x = x, weight = W, bias = B)[name = string(\"y\")];",
                ty("fp32", &[5, 7])
            ),
        ],
        &["y"],
    );
    let r16 = |v: &[f64]| v.iter().map(|&x| round16(x)).collect::<Vec<f64>>();
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (s, m) = linear_ref(&r16(&x), 24, &r16(&w), 7, Some(&r16(&b)));
    let want: Vec<f64> = s.iter().map(|&v| mac_port(v)).collect();
    assert_close("fp32 linear as on the ANE", &out[0], &[5, 7], &want, |i| {
        linear_tolerance(want[i], m[i], 24)
    });
    assert_fp16_values("fp32 linear as on the ANE", &out[0]);

    let out = run(&exact_fp32_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (s, m) = linear_ref(&x, 24, &w, 7, Some(&b));
    assert_close("fp32 linear exact", &out[0], &[5, 7], &s, |i| {
        s[i].abs() * 2f64.powi(-23) + 25.0 * 2f64.powi(-23) * m[i]
    });
    // Exact keeps bits fp16 cannot hold.
    assert!(out[0].values.iter().any(|&v| round16(v) != v));
}

/// int32 linear (linear.py's type domain includes int32): exact integer arithmetic.
#[test]
fn linear_on_int32() {
    let mut rng = Rng::new(14);
    let x = rng.ints(3 * 2 * 5, -1000, 1000);
    let w = rng.ints(4 * 5, -1000, 1000);
    let b = rng.ints(4, -100_000, 100_000);
    let mil = program(
        &[("ids", ty("int32", &[3, 2, 5]))],
        &[
            konst("W", "int32", &[4, 5], &w),
            format!(
                "{} y = linear(x = ids, weight = W, bias = {})[name = string(\"y\")];",
                ty("int32", &[3, 2, 4]),
                lit("int32", &[4], &b)
            ),
        ],
        &["y"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("ids", &x)]);
    let (s, _) = linear_ref(&x, 5, &w, 4, Some(&b));
    assert_eq!(out[0].dtype, DType::Int32);
    assert_exact("int32 linear", &out[0], &[3, 2, 4], &s);
}

#[test]
fn linear_errors_name_the_problem() {
    let w = vec![0.0; 6];
    let mil = program(
        &[("x", ty("fp16", &[2, 4]))],
        &[
            konst("W", "fp16", &[2, 3], &w),
            format!("{} y = linear(x = x, weight = W)[name = string(\"y\")];", ty("fp16", &[2, 2])),
        ],
        &["y"],
    );
    let e = compile_error(&mil);
    assert!(e.contains("x [2, 4] has 4 features in its last dim but weight [2, 3] takes 3"), "{e}");
    let mil = program(
        &[("x", ty("fp16", &[2, 3])), ("W", ty("fp16", &[2, 3]))],
        &[format!("{} y = linear(x = x, weight = W)[name = string(\"y\")];", ty("fp16", &[2, 2]))],
        &["y"],
    );
    let e = compile_error(&mil);
    assert!(e.contains("weight must be a compile-time constant"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// layer_norm, instance_norm, batch_norm

/// numpy's layer norm over `axes`: (x - mean) / sqrt(var + eps) * gamma + beta with the
/// population variance; returns the results and the standardized values.
fn layer_norm_ref(
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let st = strides(shape);
    let mut groups: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
    for i in 0..x.len() {
        let key: Vec<usize> =
            (0..shape.len()).filter(|d| !axes.contains(d)).map(|d| i / st[d] % shape[d]).collect();
        // Row-major over the normalized axes within a group: gamma's layout.
        groups.entry(key).or_default().push(i);
    }
    let (mut y, mut z) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    for members in groups.values() {
        let n = members.len() as f64;
        let mean = members.iter().map(|&i| x[i]).sum::<f64>() / n;
        let var = members.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / n;
        for (j, &i) in members.iter().enumerate() {
            z[i] = (x[i] - mean) / (var + eps).sqrt();
            y[i] = z[i] * gamma.map_or(1.0, |g| g[j]) + beta.map_or(0.0, |b| b[j]);
        }
    }
    (y, z)
}

fn norm_tolerance(want: f64, z: f64, n: usize) -> f64 {
    ulp16(want) + (n + 16) as f64 * 2f64.powi(-21) * (1.0 + z.abs())
}

/// The fp16 epsilon coremltools writes for PyTorch's 1e-5.
const EPS16: f64 = 1.0013580322265625e-05;

/// As the transformer: x [1, 16, 32], axes [-1], gamma and beta [32], an inline fp16 epsilon.
/// The input has a large common offset, as a residual stream does.
#[test]
fn layer_norm_like_the_transformer() {
    let mut rng = Rng::new(20);
    let x: Vec<f64> = rng.fp16s(16 * 32, -3.0, 3.0).iter().map(|v| round16(v + 40.0)).collect();
    let g = rng.fp16s(32, 0.5, 1.5);
    let b = rng.fp16s(32, -0.5, 0.5);
    let mil = program(
        &[("x", ty("fp16", &[1, 16, 32]))],
        &[
            konst("ln1_weight_to_fp16", "fp16", &[32], &g),
            konst("ln1_bias_to_fp16", "fp16", &[32], &b),
            format!(
                "{} y = layer_norm(x = x, axes = {}, gamma = ln1_weight_to_fp16, beta = ln1_bias_to_fp16, epsilon = fp16({EPS16:e}))[name = string(\"input_1_cast_fp16\")];",
                ty("fp16", &[1, 16, 32]),
                lit("int32", &[1], &[-1.0])
            ),
        ],
        &["y"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (y, z) = layer_norm_ref(&x, &[1, 16, 32], &[2], Some(&g), Some(&b), EPS16);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("layer_norm", &out[0], &[1, 16, 32], &want, |i| norm_tolerance(want[i], z[i], 32));
}

/// Several axes, not trailing, gamma laid out as x's dims at those axes; every axis by
/// default; negative and repeated axes.
#[test]
fn layer_norm_over_other_axes_and_defaults() {
    let shape = [2, 3, 4, 5];
    let mut rng = Rng::new(21);
    let x = rng.fp16s(numel(&shape), -2.0, 2.0);
    let g = rng.fp16s(3 * 5, -1.5, 1.5);
    let b = rng.fp16s(4, -1.0, 1.0);
    let t = ty("fp16", &shape);
    let mil = program(
        &[("x", t.clone())],
        &[
            konst("G", "fp16", &[3, 5], &g),
            konst("B", "fp16", &[4], &b),
            format!(
                "{t} a = layer_norm(x = x, axes = {}, gamma = G)[name = string(\"a\")];",
                lit("int32", &[2], &[3.0, 1.0])
            ),
            format!("{t} all = layer_norm(x = x)[name = string(\"all\")];"),
            format!(
                "{t} c = layer_norm(x = x, axes = {}, beta = B, epsilon = fp32(0.5))[name = string(\"c\")];",
                lit("int32", &[2], &[-2.0, 2.0])
            ),
        ],
        &["a", "all", "c"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    for (k, (axes, gamma, beta, eps, n)) in [
        (vec![1, 3], Some(&g[..]), None, 1e-5, 15),
        (vec![0, 1, 2, 3], None, None, 1e-5, 120),
        (vec![2], None, Some(&b[..]), 0.5, 4),
    ]
    .into_iter()
    .enumerate()
    {
        let (y, z) = layer_norm_ref(&x, &shape, &axes, gamma, beta, eps);
        let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
        let what = format!("layer_norm axes {axes:?}");
        assert_close(&what, &out[k], &shape, &want, |i| norm_tolerance(want[i], z[i], n));
    }
}

#[test]
fn layer_norm_in_an_fp32_program() {
    let shape = [3, 40];
    let mut rng = Rng::new(22);
    let x: Vec<f64> = (0..numel(&shape))
        .map(|_| f64::from((rng.fp16(-4.0, 4.0) + rng.fp16(-1e-3, 1e-3)) as f32))
        .collect();
    let g: Vec<f64> = (0..40).map(|_| f64::from((rng.fp16(0.5, 2.0) + 1e-4) as f32)).collect();
    let t = ty("fp32", &shape);
    let mil = program(
        &[("x", t.clone())],
        &[
            konst("G", "fp32", &[40], &g),
            format!(
                "{t} y = layer_norm(x = x, axes = {}, gamma = G, epsilon = fp32(1e-5))[name = string(\"y\")];",
                lit("int32", &[1], &[1.0])
            ),
        ],
        &["y"],
    );
    let r16 = |v: &[f64]| v.iter().map(|&x| round16(x)).collect::<Vec<f64>>();
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (y, z) = layer_norm_ref(&r16(&x), &shape, &[1], Some(&r16(&g)), None, f64::from(1e-5f32));
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("fp32 layer_norm as on the ANE", &out[0], &shape, &want, |i| {
        norm_tolerance(want[i], z[i], 40)
    });
    assert_fp16_values("fp32 layer_norm as on the ANE", &out[0]);

    let out = run(&exact_fp32_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (y, z) = layer_norm_ref(&x, &shape, &[1], Some(&g), None, f64::from(1e-5f32));
    assert_close("fp32 layer_norm exact", &out[0], &shape, &y, |i| {
        (40 + 16) as f64 * 2f64.powi(-21) * (1.0 + z[i].abs()) * 2.0
    });
    assert!(out[0].values.iter().any(|&v| round16(v) != v));
}

fn instance_norm_ref(
    x: &[f64],
    shape: &[usize],
    g: Option<&[f64]>,
    b: Option<&[f64]>,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (c, plane) = (shape[1], numel(&shape[2..]));
    let (mut y, mut z) = (Vec::new(), Vec::new());
    for (p, xs) in x.chunks(plane).enumerate() {
        let n = plane as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        for v in xs {
            let zz = (v - mean) / (var + eps).sqrt();
            z.push(zz);
            y.push(zz * g.map_or(1.0, |g| g[p % c]) + b.map_or(0.0, |b| b[p % c]));
        }
    }
    (y, z)
}

/// gamma (x - mean) / sqrt(var + eps) + beta per channel, and |x - mean| |scale| + |beta|.
fn batch_norm_ref(
    x: &[f64],
    shape: &[usize],
    mean: &[f64],
    var: &[f64],
    g: Option<&[f64]>,
    b: Option<&[f64]>,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (c, plane) = (shape[1], numel(&shape[2..]));
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / plane) % c;
            let scale = g.map_or(1.0, |g| g[ch]) / (var[ch] + eps).sqrt();
            let shift = b.map_or(0.0, |b| b[ch]);
            ((v - mean[ch]) * scale + shift, (v - mean[ch]).abs() * scale.abs() + shift.abs())
        })
        .unzip()
}

fn batch_tolerance(want: f64, mag: f64) -> f64 {
    ulp16(want) + 2f64.powi(-20) * (mag + 1.0)
}

/// As the cnn: batch_norm then relu then instance_norm on [1, 16, 4, 4], every parameter a
/// const op, epsilons inline fp16. Each stage is checked from the previous stage's output.
#[test]
fn batch_and_instance_norm_like_the_cnn() {
    let shape = [1, 16, 4, 4];
    let mut rng = Rng::new(30);
    let x = rng.fp16s(numel(&shape), -3.0, 3.0);
    let mean = rng.fp16s(16, -1.0, 1.0);
    let var = rng.fp16s(16, 0.05, 2.0);
    let g = rng.fp16s(16, -1.5, 1.5);
    let b = rng.fp16s(16, -0.5, 0.5);
    let ig = rng.fp16s(16, 0.5, 1.5);
    let ib = rng.fp16s(16, -0.5, 0.5);
    let t = ty("fp16", &shape);
    let mil = program(
        &[("x", t.clone())],
        &[
            konst("bn2_running_mean_to_fp16", "fp16", &[16], &mean),
            konst("bn2_running_var_to_fp16", "fp16", &[16], &var),
            konst("bn2_weight_to_fp16", "fp16", &[16], &g),
            konst("bn2_bias_to_fp16", "fp16", &[16], &b),
            konst("inorm_weight_to_fp16", "fp16", &[16], &ig),
            konst("inorm_bias_to_fp16", "fp16", &[16], &ib),
            format!(
                "{t} bn = batch_norm(x = x, mean = bn2_running_mean_to_fp16, variance = bn2_running_var_to_fp16, gamma = bn2_weight_to_fp16, beta = bn2_bias_to_fp16, epsilon = fp16({EPS16:e}))[name = string(\"input_11_cast_fp16\")];"
            ),
            format!("{t} r = relu(x = bn)[name = string(\"input_13_cast_fp16\")];"),
            format!(
                "{t} inorm = instance_norm(x = r, gamma = inorm_weight_to_fp16, beta = inorm_bias_to_fp16, epsilon = fp16({EPS16:e}))[name = string(\"x_cast_fp16\")];"
            ),
        ],
        &["bn", "inorm"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (y, mag) = batch_norm_ref(&x, &shape, &mean, &var, Some(&g), Some(&b), EPS16);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("batch_norm", &out[0], &shape, &want, |i| batch_tolerance(want[i], mag[i]));
    let r: Vec<f64> = out[0].values.iter().map(|&v| v.max(0.0)).collect();
    let (y, z) = instance_norm_ref(&r, &shape, Some(&ig), Some(&ib), EPS16);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("instance_norm", &out[1], &shape, &want, |i| norm_tolerance(want[i], z[i], 16));
}

/// batch_norm on ranks 3 and 5 with the defaults (gamma ones, beta zeros, epsilon 1e-5);
/// instance_norm on rank 3 without gamma and beta.
#[test]
fn batch_and_instance_norm_ranks_and_defaults() {
    let mut rng = Rng::new(31);
    let s3 = [2, 3, 50];
    let s5 = [1, 2, 3, 4, 5];
    let x3 = rng.fp16s(numel(&s3), -2.0, 2.0);
    let x5 = rng.fp16s(numel(&s5), -2.0, 2.0);
    let (m3, v3) = (rng.fp16s(3, -1.0, 1.0), rng.fp16s(3, 0.1, 3.0));
    let (m5, v5) = (rng.fp16s(2, -1.0, 1.0), rng.fp16s(2, 0.1, 3.0));
    let b5 = rng.fp16s(2, -1.0, 1.0);
    let mil = program(
        &[("x3", ty("fp16", &s3)), ("x5", ty("fp16", &s5))],
        &[
            konst("m3", "fp16", &[3], &m3),
            konst("v3", "fp16", &[3], &v3),
            format!(
                "{} a = batch_norm(x = x3, mean = m3, variance = v3)[name = string(\"a\")];",
                ty("fp16", &s3)
            ),
            format!(
                "{} b = batch_norm(x = x5, mean = {}, variance = {}, beta = {})[name = string(\"b\")];",
                ty("fp16", &s5),
                lit("fp16", &[2], &m5),
                lit("fp16", &[2], &v5),
                lit("fp16", &[2], &b5)
            ),
            format!("{} c = instance_norm(x = x3)[name = string(\"c\")];", ty("fp16", &s3)),
        ],
        &["a", "b", "c"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("x3", &x3), ("x5", &x5)]);
    let eps = 1e-5;
    let (y, mag) = batch_norm_ref(&x3, &s3, &m3, &v3, None, None, eps);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("batch_norm rank 3", &out[0], &s3, &want, |i| batch_tolerance(want[i], mag[i]));
    let (y, mag) = batch_norm_ref(&x5, &s5, &m5, &v5, None, Some(&b5), eps);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("batch_norm rank 5", &out[1], &s5, &want, |i| batch_tolerance(want[i], mag[i]));
    let (y, z) = instance_norm_ref(&x3, &s3, None, None, eps);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("instance_norm rank 3", &out[2], &s3, &want, |i| {
        norm_tolerance(want[i], z[i], 50)
    });
}

#[test]
fn batch_norm_in_an_fp32_program() {
    let shape = [2, 4, 3, 3];
    let mut rng = Rng::new(32);
    let x: Vec<f64> = (0..numel(&shape))
        .map(|_| f64::from((rng.fp16(-2.0, 2.0) + rng.fp16(-1e-3, 1e-3)) as f32))
        .collect();
    let mean = rng.fp16s(4, -1.0, 1.0);
    let var = rng.fp16s(4, 0.1, 2.0);
    let t = ty("fp32", &shape);
    let mil = program(
        &[("x", t.clone())],
        &[format!(
            "{t} y = batch_norm(x = x, mean = {}, variance = {}, epsilon = fp32(1e-3))[name = string(\"y\")];",
            lit("fp32", &[4], &mean),
            lit("fp32", &[4], &var)
        )],
        &["y"],
    );
    let eps = f64::from(1e-3f32);
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    let x16: Vec<f64> = x.iter().map(|&v| round16(v)).collect();
    let (y, mag) = batch_norm_ref(&x16, &shape, &mean, &var, None, None, eps);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("fp32 batch_norm as on the ANE", &out[0], &shape, &want, |i| {
        batch_tolerance(want[i], mag[i])
    });
    assert_fp16_values("fp32 batch_norm as on the ANE", &out[0]);
    let out = run(&exact_fp32_device(), &mil, &Weights::new(), &[("x", &x)]);
    let (y, mag) = batch_norm_ref(&x, &shape, &mean, &var, None, None, eps);
    assert_close("fp32 batch_norm exact", &out[0], &shape, &y, |i| 2f64.powi(-20) * (mag[i] + 1.0));
}

#[test]
fn norm_errors_name_the_problem() {
    let x = ty("fp16", &[1, 4, 6]);
    let mil = program(
        &[("x", x.clone())],
        &[
            konst("G", "fp16", &[4], &[1.0; 4]),
            format!(
                "{x} y = layer_norm(x = x, axes = {}, gamma = G)[name = string(\"y\")];",
                lit("int32", &[1], &[-1.0])
            ),
        ],
        &["y"],
    );
    let e = compile_error(&mil);
    assert!(
        e.contains("gamma has shape [4] but x [1, 4, 6] normalized over axes [2] takes [6]"),
        "{e}"
    );
    let mil = program(
        &[("x", x.clone())],
        &[format!(
            "{x} y = batch_norm(x = x, mean = {}, variance = {})[name = string(\"y\")];",
            lit("fp16", &[4], &[0.0; 4]),
            lit("fp16", &[3], &[1.0; 3])
        )],
        &["y"],
    );
    let e = compile_error(&mil);
    assert!(e.contains("variance has shape [3] but x [1, 4, 6] has 4 channels"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// max_pool, avg_pool

/// One pooling configuration: window, strides, padding before and after, output sizes.
struct Pool {
    k: Vec<usize>,
    s: Vec<usize>,
    pb: Vec<usize>,
    pa: Vec<usize>,
    out: Vec<usize>,
}

/// Pooling by definition: input element j of a dim sits at padded position j + pb; output o
/// covers padded positions [o s, o s + k) of [0, size + pb + pa). Max over the input elements
/// covered; the average divides by the padded positions covered, or by the input elements.
fn pool_ref(x: &[f64], shape: &[usize], p: &Pool, op: &str) -> Vec<f64> {
    let n = shape.len() - 2;
    let out_shape: Vec<usize> = shape[..2].iter().chain(&p.out).copied().collect();
    let (ost, ist) = (strides(&out_shape), strides(shape));
    (0..numel(&out_shape))
        .map(|i| {
            let o: Vec<usize> = (0..out_shape.len()).map(|d| i / ost[d] % out_shape[d]).collect();
            let (mut max, mut sum, mut inside, mut padded) =
                (f64::NEG_INFINITY, 0.0, 0usize, 0usize);
            for t in 0..numel(&p.k) {
                let mut rest = t;
                let (mut off, mut in_input, mut in_padded) =
                    (o[0] * ist[0] + o[1] * ist[1], true, true);
                for d in (0..n).rev() {
                    let pos = o[2 + d] * p.s[d] + rest % p.k[d];
                    rest /= p.k[d];
                    in_padded &= pos < shape[2 + d] + p.pb[d] + p.pa[d];
                    let inside_dim = pos >= p.pb[d] && pos < shape[2 + d] + p.pb[d];
                    in_input &= inside_dim;
                    if inside_dim {
                        off += (pos - p.pb[d]) * ist[2 + d];
                    }
                }
                padded += usize::from(in_padded);
                if in_input {
                    max = max.max(x[off]);
                    sum += x[off];
                    inside += 1;
                }
            }
            match op {
                "max" => max,
                "avg" => sum / padded as f64,
                "avg_exclude" => sum / inside as f64,
                other => unreachable!("{other}"),
            }
        })
        .collect()
}

fn ints(v: &[usize]) -> String {
    lit("int32", &[v.len()], &v.iter().map(|&x| x as f64).collect::<Vec<_>>())
}

/// As the cnn: 2x2 windows, stride 2, `pad_type = "custom"` with zero pads, ceil_mode false,
/// and for avg_pool exclude_padding_from_average false; the window lists as const ops.
#[test]
fn pools_like_the_cnn() {
    let mut rng = Rng::new(40);
    let x = rng.fp16s(8 * 16 * 16, -4.0, 4.0);
    let y = rng.fp16s(16 * 8 * 8, -4.0, 4.0);
    let mil = program(
        &[("x", ty("fp16", &[1, 8, 16, 16])), ("y", ty("fp16", &[1, 16, 8, 8]))],
        &[
            format!(
                "tensor<int32, [2]> ks = const()[name = string(\"ks\"), val = {}];",
                ints(&[2, 2])
            ),
            format!(
                "tensor<int32, [2]> st = const()[name = string(\"st\"), val = {}];",
                ints(&[2, 2])
            ),
            "string pt = const()[name = string(\"pt\"), val = string(\"custom\")];".into(),
            format!(
                "tensor<int32, [4]> pd = const()[name = string(\"pd\"), val = {}];",
                ints(&[0, 0, 0, 0])
            ),
            format!(
                "{} m = max_pool(x = x, kernel_sizes = ks, strides = st, pad_type = pt, pad = pd, ceil_mode = bool(false))[name = string(\"input_7_cast_fp16\")];",
                ty("fp16", &[1, 8, 8, 8])
            ),
            format!(
                "{} a = avg_pool(exclude_padding_from_average = bool(false), x = y, kernel_sizes = ks, strides = st, pad_type = pt, pad = pd, ceil_mode = bool(false))[name = string(\"input_9_cast_fp16\")];",
                ty("fp16", &[1, 16, 4, 4])
            ),
        ],
        &["m", "a"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x), ("y", &y)]);
    let p = Pool { k: vec![2, 2], s: vec![2, 2], pb: vec![0, 0], pa: vec![0, 0], out: vec![8, 8] };
    assert_exact("max_pool", &out[0], &[1, 8, 8, 8], &pool_ref(&x, &[1, 8, 16, 16], &p, "max"));
    let p = Pool { out: vec![4, 4], ..p };
    let want: Vec<f64> =
        pool_ref(&y, &[1, 16, 8, 8], &p, "avg").iter().map(|&v| round16(v)).collect();
    assert_close("avg_pool", &out[1], &[1, 16, 4, 4], &want, |i| {
        ulp16(want[i]) + 4.0 * 2f64.powi(-21)
    });
}

/// Output sizes and windows for same, same_lower, custom asymmetric padding, ceil_mode, and
/// padding excluded from the average; 1, 2 and 3 spatial dims.
#[test]
fn pool_padding_modes() {
    struct Case {
        shape: Vec<usize>,
        attrs: String,
        pool: Pool,
    }
    let attrs = |k: &[usize], s: &[usize], pad_type: &str, pad: Option<&[usize]>, ceil: bool| {
        let mut a = format!(
            "kernel_sizes = {}, strides = {}, pad_type = string(\"{pad_type}\")",
            ints(k),
            ints(s)
        );
        if let Some(p) = pad {
            a.push_str(&format!(", pad = {}", ints(p)));
        }
        a.push_str(&format!(", ceil_mode = bool({ceil})"));
        a
    };
    let pool = |k: &[usize], s: &[usize], pb: &[usize], pa: &[usize], out: &[usize]| Pool {
        k: k.to_vec(),
        s: s.to_vec(),
        pb: pb.to_vec(),
        pa: pa.to_vec(),
        out: out.to_vec(),
    };
    let cases = [
        // same: total pad (ceil(7 / 2) - 1) * 2 + 4 - 7 = 3, one before and two after.
        Case {
            shape: vec![2, 3, 7],
            attrs: attrs(&[4], &[2], "same", None, false),
            pool: pool(&[4], &[2], &[1], &[2], &[4]),
        },
        Case {
            shape: vec![2, 3, 7],
            attrs: attrs(&[4], &[2], "same_lower", None, false),
            pool: pool(&[4], &[2], &[2], &[1], &[4]),
        },
        Case {
            shape: vec![1, 2, 5, 6],
            attrs: attrs(&[3, 2], &[1, 2], "custom", Some(&[1, 2, 0, 1]), false),
            pool: pool(&[3, 2], &[1, 2], &[1, 0], &[2, 1], &[6, 3]),
        },
        // ceil_mode: 5 with pad 1 each side, k 2, s 2 gives 3 outputs; 6 gives 4, the last
        // window reaching past the padded input.
        Case {
            shape: vec![1, 2, 5, 6],
            attrs: attrs(&[2, 2], &[2, 2], "custom", Some(&[1, 1, 1, 1]), true),
            pool: pool(&[2, 2], &[2, 2], &[1, 1], &[1, 1], &[3, 4]),
        },
        Case {
            shape: vec![1, 1, 6],
            attrs: attrs(&[3], &[2], "valid", None, true),
            pool: pool(&[3], &[2], &[0], &[0], &[3]),
        },
        Case {
            shape: vec![1, 2, 4, 5, 6],
            attrs: attrs(&[2, 3, 2], &[1, 2, 2], "same", None, false),
            pool: pool(&[2, 3, 2], &[1, 2, 2], &[0, 1, 0], &[1, 1, 0], &[4, 3, 3]),
        },
    ];
    let mut rng = Rng::new(41);
    for (c, case) in cases.iter().enumerate() {
        let x = rng.fp16s(numel(&case.shape), -1.0, 1.0);
        let out_shape: Vec<usize> = case.shape[..2].iter().chain(&case.pool.out).copied().collect();
        let t = ty("fp16", &out_shape);
        let a = &case.attrs;
        let mil = program(
            &[("x", ty("fp16", &case.shape))],
            &[
                format!("{t} m = max_pool(x = x, {a})[name = string(\"m\")];"),
                format!("{t} avg = avg_pool(x = x, {a})[name = string(\"avg\")];"),
                format!(
                    "{t} ex = avg_pool(x = x, {a}, exclude_padding_from_average = bool(true))[name = string(\"ex\")];"
                ),
            ],
            &["m", "avg", "ex"],
        );
        let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
        let what = |op: &str| format!("case {c} {op} {:?} {}", case.shape, case.attrs);
        assert_exact(
            &what("max_pool"),
            &out[0],
            &out_shape,
            &pool_ref(&x, &case.shape, &case.pool, "max"),
        );
        let k = numel(&case.pool.k) as f64;
        for (o, op) in [(1, "avg"), (2, "avg_exclude")] {
            let want: Vec<f64> =
                pool_ref(&x, &case.shape, &case.pool, op).iter().map(|&v| round16(v)).collect();
            assert_close(&what(op), &out[o], &out_shape, &want, |i| {
                ulp16(want[i]) + k * 2f64.powi(-23)
            });
        }
    }
}

#[test]
fn pools_in_an_fp32_program() {
    let shape = [1, 3, 6, 6];
    let mut rng = Rng::new(42);
    let x: Vec<f64> = (0..numel(&shape))
        .map(|_| f64::from((rng.fp16(-1.0, 1.0) + rng.fp16(-1e-3, 1e-3)) as f32))
        .collect();
    let t = ty("fp32", &[1, 3, 3, 3]);
    let a = format!(
        "kernel_sizes = {}, strides = {}, pad_type = string(\"valid\")",
        ints(&[2, 2]),
        ints(&[2, 2])
    );
    let mil = program(
        &[("x", ty("fp32", &shape))],
        &[
            format!("{t} m = max_pool(x = x, {a})[name = string(\"m\")];"),
            format!("{t} avg = avg_pool(x = x, {a})[name = string(\"avg\")];"),
        ],
        &["m", "avg"],
    );
    let p = Pool { k: vec![2, 2], s: vec![2, 2], pb: vec![0, 0], pa: vec![0, 0], out: vec![3, 3] };
    let x16: Vec<f64> = x.iter().map(|&v| round16(v)).collect();
    let out = run(&default_device(), &mil, &Weights::new(), &[("x", &x)]);
    assert_exact(
        "fp32 max_pool as on the ANE",
        &out[0],
        &[1, 3, 3, 3],
        &pool_ref(&x16, &shape, &p, "max"),
    );
    let want: Vec<f64> = pool_ref(&x16, &shape, &p, "avg").iter().map(|&v| round16(v)).collect();
    assert_close("fp32 avg_pool as on the ANE", &out[1], &[1, 3, 3, 3], &want, |i| {
        ulp16(want[i]) + 4.0 * 2f64.powi(-23)
    });
    assert_fp16_values("fp32 avg_pool as on the ANE", &out[1]);
    let out = run(&exact_fp32_device(), &mil, &Weights::new(), &[("x", &x)]);
    assert_exact("fp32 max_pool exact", &out[0], &[1, 3, 3, 3], &pool_ref(&x, &shape, &p, "max"));
    let want = pool_ref(&x, &shape, &p, "avg");
    assert_close("fp32 avg_pool exact", &out[1], &[1, 3, 3, 3], &want, |_| 4.0 * 2f64.powi(-23));
}

#[test]
fn pool_errors_name_the_problem() {
    let mil = program(
        &[("x", ty("fp16", &[1, 1, 3]))],
        &[format!(
            "{} y = max_pool(x = x, kernel_sizes = {}, strides = {}, pad_type = string(\"valid\"))[name = string(\"y\")];",
            ty("fp16", &[1, 1, 1]),
            ints(&[4]),
            ints(&[1])
        )],
        &["y"],
    );
    let e = compile_error(&mil);
    assert!(e.contains("kernel size 4 exceeds the input size 3 in spatial dim 0"), "{e}");
    let mil = program(
        &[("x", ty("fp16", &[1, 1, 4]))],
        &[format!(
            "{} y = avg_pool(x = x, kernel_sizes = {}, strides = {}, pad_type = string(\"custom\"), pad = {}, ceil_mode = bool(true))[name = string(\"y\")];",
            ty("fp16", &[1, 1, 3]),
            ints(&[2]),
            ints(&[2]),
            ints(&[1, 0])
        )],
        &["y"],
    );
    let e = compile_error(&mil);
    assert!(e.contains("pad [1, 0] is not symmetric, which ceil_mode requires"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The cnn's tail as the converter writes it.

/// max_pool -> avg_pool -> batch_norm -> relu -> instance_norm -> reshape -> linear with an
/// inline bias -> cast to fp32, as in the cnn (its convolutions left out). Each stage's output
/// is returned and checked against the reference applied to the previous stage's output.
#[test]
fn the_cnn_tail_runs_stage_by_stage() {
    let mut rng = Rng::new(50);
    let x = rng.fp16s(16 * 16 * 16, -2.0, 2.0);
    let mean = rng.fp16s(16, -0.5, 0.5);
    let var = rng.fp16s(16, 0.2, 1.5);
    let (g, b) = (rng.fp16s(16, 0.5, 1.5), rng.fp16s(16, -0.3, 0.3));
    let (ig, ib) = (rng.fp16s(16, 0.5, 1.5), rng.fp16s(16, -0.3, 0.3));
    let w = rng.fp16s(10 * 256, -0.1, 0.1);
    let bias = rng.fp16s(10, -0.05, 0.05);
    let window = format!(
        "kernel_sizes = {}, strides = {}, pad_type = string(\"custom\"), pad = {}, ceil_mode = bool(false)",
        ints(&[2, 2]),
        ints(&[2, 2]),
        ints(&[0, 0, 0, 0])
    );
    let mil = program(
        &[("image", ty("fp16", &[1, 16, 16, 16]))],
        &[
            konst("mean", "fp16", &[16], &mean),
            konst("var", "fp16", &[16], &var),
            konst("g", "fp16", &[16], &g),
            konst("b", "fp16", &[16], &b),
            konst("ig", "fp16", &[16], &ig),
            konst("ib", "fp16", &[16], &ib),
            konst("fc_weight_to_fp16", "fp16", &[10, 256], &w),
            format!(
                "{} mp = max_pool(x = image, {window})[name = string(\"mp\")];",
                ty("fp16", &[1, 16, 8, 8])
            ),
            format!(
                "{} ap = avg_pool(exclude_padding_from_average = bool(false), x = mp, {window})[name = string(\"ap\")];",
                ty("fp16", &[1, 16, 4, 4])
            ),
            format!(
                "{} bn = batch_norm(x = ap, mean = mean, variance = var, gamma = g, beta = b, epsilon = fp16({EPS16:e}))[name = string(\"bn\")];",
                ty("fp16", &[1, 16, 4, 4])
            ),
            format!("{} r = relu(x = bn)[name = string(\"r\")];", ty("fp16", &[1, 16, 4, 4])),
            format!(
                "{} inorm = instance_norm(x = r, gamma = ig, beta = ib, epsilon = fp16({EPS16:e}))[name = string(\"inorm\")];",
                ty("fp16", &[1, 16, 4, 4])
            ),
            format!(
                "{} flat = reshape(x = inorm, shape = {})[name = string(\"flat\")];",
                ty("fp16", &[1, 256]),
                ints(&[1, 256])
            ),
            format!(
                "{} lin = linear(x = flat, weight = fc_weight_to_fp16, bias = {})[name = string(\"linear_0_cast_fp16\")];",
                ty("fp16", &[1, 10]),
                lit("fp16", &[10], &bias)
            ),
            "string to32 = const()[name = string(\"to32\"), val = string(\"fp32\")];".into(),
            format!(
                "{} logits = cast(x = lin, dtype = to32)[name = string(\"cast_1\")];",
                ty("fp32", &[1, 10])
            ),
        ],
        &["mp", "ap", "bn", "inorm", "logits"],
    );
    let out = run(&default_device(), &mil, &Weights::new(), &[("image", &x)]);
    let p = Pool { k: vec![2, 2], s: vec![2, 2], pb: vec![0, 0], pa: vec![0, 0], out: vec![8, 8] };
    assert_exact(
        "tail max_pool",
        &out[0],
        &[1, 16, 8, 8],
        &pool_ref(&x, &[1, 16, 16, 16], &p, "max"),
    );
    let p = Pool { out: vec![4, 4], ..p };
    let want: Vec<f64> =
        pool_ref(&out[0].values, &[1, 16, 8, 8], &p, "avg").iter().map(|&v| round16(v)).collect();
    let s = [1, 16, 4, 4];
    assert_close("tail avg_pool", &out[1], &s, &want, |i| ulp16(want[i]) + 4.0 * 2f64.powi(-23));
    let (y, mag) = batch_norm_ref(&out[1].values, &s, &mean, &var, Some(&g), Some(&b), EPS16);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("tail batch_norm", &out[2], &s, &want, |i| batch_tolerance(want[i], mag[i]));
    let r: Vec<f64> = out[2].values.iter().map(|&v| v.max(0.0)).collect();
    let (y, z) = instance_norm_ref(&r, &s, Some(&ig), Some(&ib), EPS16);
    let want: Vec<f64> = y.iter().map(|&v| round16(v)).collect();
    assert_close("tail instance_norm", &out[3], &s, &want, |i| norm_tolerance(want[i], z[i], 16));
    let (sums, mags) = linear_ref(&out[3].values, 256, &w, 10, Some(&bias));
    let want: Vec<f64> = sums.iter().map(|&v| mac_port(v)).collect();
    assert_eq!(out[4].dtype, DType::Fp32);
    assert_close("tail linear", &out[4], &[1, 10], &want, |i| {
        linear_tolerance(want[i], mags[i], 256)
    });
}
