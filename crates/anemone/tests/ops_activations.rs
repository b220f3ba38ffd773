//! The activations coremltools writes for CNNs, end to end: MIL text -> validation -> simulator
//! compile -> evaluate. Covered: leaky_relu, relu6, sigmoid_hard, thresholded_relu, elu,
//! softplus, clamped_relu, scaled_tanh, linear_activation, softsign (coremltools
//! ops/defs/iOS15/activation.py, iOS17/activation.py), prelu (same files), and the upsamples
//! upsample_nearest_neighbor and upsample_bilinear (iOS15/image_resizing.py,
//! iOS16/image_resizing.py). The programs use the argument forms of the converter: inline fp16
//! parameters, fp32 ones (iOS17 lets them differ from x's type), per-channel slopes as a const
//! op, int32 and fp32 scale factors, `align_corners = bool(false)`.
//!
//! Every result is compared with a reference computed here in f64 from the op's definition and
//! rounded once to fp16 by a rounding written here from the format, never by the simulator's
//! kernels. Tolerances, for an exact value `r` (`ulp` = the fp16 spacing at `r`):
//! - leaky_relu, relu6, thresholded_relu, clamped_relu (with beta >= 0), prelu: exactly `r`
//!   rounded once. Each is x, a constant, or one product of two fp16 values, which f32 holds
//!   exactly, so the one rounding is the only one.
//! - sigmoid_hard, linear_activation: one ulp: a product exact in f32, one f32 addition (an
//!   error of 2^-24 relative), then the rounding to fp16.
//! - elu, softplus, scaled_tanh, softsign: one ulp plus 2^-24 absolute: f32 evaluations of
//!   exp, log and tanh within a few f32 ulps, then the rounding.
//! - upsample_nearest_neighbor: exact (a copy), fp32 values included.
//! - upsample_bilinear: one ulp plus 2^-16 absolute for values below 4 in magnitude: weights
//!   rounded to f32 and three interpolations in f32.
//!
//! Programs typed fp32 run in fp16 by default, as on the ANE (`Fp32Arithmetic::AsAne`): their
//! reference takes the inputs rounded to fp16 and every output must be an fp16 value. With
//! `Fp32Arithmetic::Exact` they are IEEE f32, checked at f32 precision.

use anemone::sim::{Fp32Arithmetic, SimOptions};
use anemone::{Device, Weights};
use anemone_mil::DType;
use anemone_mil::text;

// ---------------------------------------------------------------------------------------------
// Reference arithmetic and test plumbing.

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` values uniform in [lo, hi), each rounded to fp16.
    fn fp16s(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
                fp16(lo + (hi - lo) * u)
            })
            .collect()
    }
}

/// The exponent e of the fp16 binade [2^e, 2^(e + 1)) holding magnitude `a`; -14 for the
/// subnormals below 2^-14.
fn binade(a: f64) -> i32 {
    let mut e = 15;
    while e > -14 && a < 2f64.powi(e) {
        e -= 1;
    }
    e
}

/// The fp16 value nearest `x`: 10 bits after the leading one (a fixed 2^-24 step among the
/// subnormals), ties to the even significand, ±inf once the rounded value passes 65504.
fn fp16(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let step = 2f64.powi(binade(x.abs()) - 10);
    let r = (x.abs() / step).round_ties_even() * step;
    if r > 65504.0 { f64::INFINITY.copysign(x) } else { r.copysign(x) }
}

/// The fp16 spacing at the magnitude of `x` once rounded (that of 65504 for infinities).
fn ulp(x: f64) -> f64 {
    let r = fp16(x).abs();
    2f64.powi(binade(r.min(65504.0)) - 10)
}

/// The f32 value nearest `x`.
fn fp32(x: f64) -> f64 {
    f64::from(x as f32)
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn ty(dtype: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("tensor<{dtype}, [{}]>", dims.join(", "))
}

/// An inline tensor literal, values printed exactly.
fn tensor(dtype: &str, shape: &[usize], values: &[f64]) -> String {
    let v: Vec<String> = values
        .iter()
        .map(|x| if dtype.starts_with("int") { format!("{}", *x as i64) } else { format!("{x:e}") })
        .collect();
    format!("{}([{}])", ty(dtype, shape), v.join(", "))
}

/// A program with one function `main` of these inputs, operation lines and outputs.
fn program(inputs: &[(&str, String)], lines: &[String], outputs: &[&str]) -> String {
    let params: Vec<String> = inputs.iter().map(|(n, t)| format!("{t} {n}")).collect();
    let body: String = lines.iter().map(|l| format!("        {l}\n")).collect();
    format!(
        "program(1.3)\n{{\n    func main<ios18>({}) {{\n{body}    }} -> ({});\n}}\n",
        params.join(", "),
        outputs.join(", ")
    )
}

/// One output: its shape, dtype and values (exact, as f64).
struct Output {
    shape: Vec<usize>,
    dtype: DType,
    values: Vec<f64>,
}

fn as_ane() -> Device {
    Device::simulator()
}

fn exact_fp32() -> Device {
    Device::simulator_with(SimOptions { fp32: Fp32Arithmetic::Exact, ..SimOptions::default() })
}

/// Compiles and runs `mil` with these inputs (written as f32, converted to each input's type)
/// and returns the outputs in order.
fn run(device: &Device, mil: &str, inputs: &[(&str, &[f64])]) -> Vec<Output> {
    let program = text::parse(mil).unwrap_or_else(|e| panic!("parse: {e:?}\n{mil}"));
    let mut model =
        device.compile(&program, &Weights::new()).unwrap_or_else(|e| panic!("compile: {e}\n{mil}"));
    for (name, values) in inputs {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        model.input(name).unwrap().write_f32(&v).unwrap();
    }
    model.evaluate().unwrap_or_else(|e| panic!("evaluate: {e}"));
    let outputs = &program.main_function().unwrap().block.outputs;
    outputs
        .iter()
        .map(|o| {
            let s = model.output(&o.name).unwrap();
            let values = s.read_f32().unwrap().into_iter().map(f64::from).collect();
            Output { shape: s.shape().to_vec(), dtype: s.dtype(), values }
        })
        .collect()
}

fn compile_error(mil: &str) -> String {
    let program = text::parse(mil).unwrap_or_else(|e| panic!("parse: {e:?}\n{mil}"));
    match as_ane().compile(&program, &Weights::new()) {
        Ok(_) => panic!("compiled, but should not have:\n{mil}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts the output's shape and dtype, and `|got - want| <= tol(want)` per element, where
/// infinities must match exactly.
#[track_caller]
fn check(
    what: &str,
    out: &Output,
    dtype: DType,
    shape: &[usize],
    want: &[f64],
    tol: impl Fn(f64) -> f64,
) {
    assert_eq!((out.dtype, out.shape.as_slice()), (dtype, shape), "{what}: type");
    assert_eq!(out.values.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in out.values.iter().zip(want).enumerate() {
        let ok = if g.is_infinite() || w.is_infinite() { g == w } else { (g - w).abs() <= tol(w) };
        assert!(ok, "{what}[{i}]: got {g:e}, want {w:e} (tolerance {:e})", tol(w));
    }
}

/// Asserts every value is exactly `want`'s rounded once to fp16.
#[track_caller]
fn check_rounded(what: &str, out: &Output, dtype: DType, shape: &[usize], exact: &[f64]) {
    let want: Vec<f64> = exact.iter().map(|&v| fp16(v)).collect();
    check(what, out, dtype, shape, &want, |_| 0.0);
}

/// Every value of an fp32 output is an fp16 value (the program ran as on the ANE).
#[track_caller]
fn assert_fp16_values(what: &str, out: &Output) {
    assert_eq!(out.dtype, DType::Fp32, "{what}");
    for (i, &v) in out.values.iter().enumerate() {
        assert_eq!(fp16(v), v, "{what}[{i}]: {v:e} is not an fp16 value");
    }
}

#[test]
fn reference_rounding_follows_the_format() {
    let cases = [
        (1.0 + 2f64.powi(-11), 1.0),
        (1.0 + 3.0 * 2f64.powi(-11), 1.0 + 2f64.powi(-9)),
        (4097.0, 4096.0),
        (4099.0, 4100.0),
        (65519.0, 65504.0),
        (65520.0, f64::INFINITY),
        (-65520.0, f64::NEG_INFINITY),
        (2f64.powi(-25), 0.0),
        (3.0 * 2f64.powi(-25), 2f64.powi(-23)),
        (0.01, 0.010_002_136_230_468_75),
    ];
    for (x, want) in cases {
        assert_eq!(fp16(x), want, "fp16({x:e})");
    }
    let mut rng = Rng(7);
    for _ in 0..4000 {
        let e = (rng.next() % 44) as i32 - 26;
        let x = ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2f64.powi(e);
        let want = half::f16::from_f64(x).to_f64();
        assert_eq!(fp16(x).to_bits(), want.to_bits(), "{x:e}");
    }
    assert_eq!((ulp(1.0), ulp(65504.0), ulp(1e-6)), (2f64.powi(-10), 32.0, 2f64.powi(-24)));
}

// ---------------------------------------------------------------------------------------------
// Activations with scalar parameters, and relu6, softplus, softsign.

/// How closely an activation's result must match its exact value (see the module doc).
#[derive(Clone, Copy)]
enum Fit {
    Rounded,
    OneUlp,
    Transcendental,
}

/// One activation as a program line: its name, its parameters, and its definition in f64.
struct Activation {
    op: &'static str,
    alpha: Option<f64>,
    beta: Option<f64>,
    exact: fn(f64, f64, f64) -> f64,
    fit: Fit,
}

/// The activations of iOS15/activation.py with parameters as PyTorch models use them (and
/// coremltools writes them): LeakyReLU's 0.01, Hardsigmoid's 1/6 and 0.5, ELU's 1, ReLU6 as
/// clamped_relu (0, 6), LeCun's scaled tanh 1.7159 tanh(2x / 3).
fn activations() -> Vec<Activation> {
    fn leaky(x: f64, a: f64, _: f64) -> f64 {
        if x < 0.0 { a * x } else { x }
    }
    fn relu6(x: f64, _: f64, _: f64) -> f64 {
        x.clamp(0.0, 6.0)
    }
    fn hard_sigmoid(x: f64, a: f64, b: f64) -> f64 {
        (a * x + b).clamp(0.0, 1.0)
    }
    fn thresholded(x: f64, a: f64, _: f64) -> f64 {
        if x < a { 0.0 } else { x }
    }
    fn elu(x: f64, a: f64, _: f64) -> f64 {
        if x < 0.0 { a * (x.exp() - 1.0) } else { x }
    }
    fn softplus(x: f64, _: f64, _: f64) -> f64 {
        // ln(1 + e^x), written so that e^x cannot overflow.
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }
    fn clamped(x: f64, a: f64, b: f64) -> f64 {
        x.max(0.0).min(b) + (x.min(0.0) * a).min(b)
    }
    fn scaled_tanh(x: f64, a: f64, b: f64) -> f64 {
        a * (b * x).tanh()
    }
    fn linear(x: f64, a: f64, b: f64) -> f64 {
        a * x + b
    }
    fn softsign(x: f64, _: f64, _: f64) -> f64 {
        // The limit at the infinities.
        if x.is_infinite() { x.signum() } else { x / (1.0 + x.abs()) }
    }
    let act = |op, alpha: Option<f64>, beta: Option<f64>, exact, fit| Activation {
        op,
        alpha: alpha.map(fp16),
        beta: beta.map(fp16),
        exact,
        fit,
    };
    vec![
        act("leaky_relu", Some(0.01), None, leaky, Fit::Rounded),
        act("relu6", None, None, relu6, Fit::Rounded),
        act("sigmoid_hard", Some(1.0 / 6.0), Some(0.5), hard_sigmoid, Fit::OneUlp),
        act("thresholded_relu", Some(1.0), None, thresholded, Fit::Rounded),
        act("elu", Some(1.0), None, elu, Fit::Transcendental),
        act("softplus", None, None, softplus, Fit::Transcendental),
        act("clamped_relu", Some(0.1), Some(6.0), clamped, Fit::Rounded),
        act("scaled_tanh", Some(1.7159), Some(2.0 / 3.0), scaled_tanh, Fit::Transcendental),
        act("linear_activation", Some(0.75), Some(-2.0), linear, Fit::OneUlp),
        act("softsign", None, None, softsign, Fit::Transcendental),
    ]
}

/// The op's arguments after x, with parameters of `dtype` (`fp16` or `fp32`).
fn parameters(a: &Activation, dtype: &str) -> String {
    let mut s = String::new();
    for (name, v) in [("alpha", a.alpha), ("beta", a.beta)] {
        if let Some(v) = v {
            s.push_str(&format!(", {name} = {dtype}({v:e})"));
        }
    }
    s
}

fn tolerance(fit: Fit, exact: f64) -> f64 {
    match fit {
        Fit::Rounded => 0.0,
        Fit::OneUlp => ulp(exact),
        Fit::Transcendental => ulp(exact) + 2f64.powi(-24),
    }
}

/// Random fp16 values over the ranges where the activations bend, and the edges: zeros,
/// the thresholds 1 and 6, the fp16 extremes and the infinities.
fn activation_inputs(n: usize) -> Vec<f64> {
    let mut x = Rng(11).fp16s(n - 12, -9.0, 9.0);
    x.extend([0.0, -0.0, 1.0, 6.0, -6.0, 1e-3, -1e-3, 30.0, -30.0, 65504.0]);
    x.extend([f64::INFINITY, f64::NEG_INFINITY]);
    x.iter().map(|&v| fp16(v)).collect()
}

#[test]
fn activations_in_fp16_match_their_definitions() {
    let shape = [4, 64];
    let x = activation_inputs(numel(&shape));
    let acts = activations();
    let t = ty("fp16", &shape);
    let lines: Vec<String> = acts
        .iter()
        .map(|a| {
            format!(
                "{t} {op}_y = {op}(x = x{})[name = string(\"{op}\")];",
                parameters(a, "fp16"),
                op = a.op
            )
        })
        .collect();
    let names: Vec<String> = acts.iter().map(|a| format!("{}_y", a.op)).collect();
    let outputs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mil = program(&[("x", t.clone())], &lines, &outputs);
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    for (a, o) in acts.iter().zip(&out) {
        let (alpha, beta) = (a.alpha.unwrap_or(0.0), a.beta.unwrap_or(0.0));
        let exact: Vec<f64> = x.iter().map(|&v| (a.exact)(v, alpha, beta)).collect();
        match a.fit {
            Fit::Rounded => check_rounded(a.op, o, DType::Fp16, &shape, &exact),
            fit => check(a.op, o, DType::Fp16, &shape, &exact, |w| tolerance(fit, w)),
        }
    }
}

#[test]
fn activations_at_the_edges() {
    // The limits and clamps a user relies on, stated outright.
    let x = [f64::NEG_INFINITY, -1.0, -0.0, 0.5, 1.0, 7.0, f64::INFINITY];
    let t = ty("fp16", &[7]);
    let line =
        |op: &str, args: &str| format!("{t} {op}_y = {op}(x = x{args})[name = string(\"{op}\")];");
    let mil = program(
        &[("x", t.clone())],
        &[
            line("relu6", ""),
            line("softsign", ""),
            line("thresholded_relu", ", alpha = fp16(1)"),
            line("elu", ", alpha = fp16(0.5)"),
            line("softplus", ""),
            line("sigmoid_hard", ", alpha = fp16(0.25), beta = fp16(0.5)"),
        ],
        &["relu6_y", "softsign_y", "thresholded_relu_y", "elu_y", "softplus_y", "sigmoid_hard_y"],
    );
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    let inf = f64::INFINITY;
    assert_eq!(out[0].values, [0.0, 0.0, 0.0, 0.5, 1.0, 6.0, 6.0], "relu6");
    assert_eq!(out[1].values, [-1.0, -0.5, 0.0, fp16(1.0 / 3.0), 0.5, 0.875, 1.0], "softsign");
    // x >= alpha keeps x: 1 stays.
    assert_eq!(out[2].values, [0.0, 0.0, 0.0, 0.0, 1.0, 7.0, inf], "thresholded_relu");
    assert_eq!(out[3].values[0], -0.5, "elu(-inf) is -alpha");
    assert_eq!(out[3].values[6], inf, "elu(inf)");
    assert_eq!((out[4].values[0], out[4].values[6]), (0.0, inf), "softplus at the infinities");
    assert_eq!(out[5].values, [0.0, 0.25, 0.5, 0.625, 0.75, 1.0, 1.0], "sigmoid_hard");
}

#[test]
fn activations_in_fp32_run_in_fp16_or_exactly() {
    // iOS17 lets alpha and beta be fp32 under any x; here everything is fp32, with inputs that
    // fp16 cannot hold.
    let shape = [3, 40];
    let n = numel(&shape);
    let x: Vec<f64> = Rng(21).fp16s(n, -8.0, 8.0).iter().map(|v| fp32(v * 1.000_123)).collect();
    let acts = activations();
    let t = ty("fp32", &shape);
    let lines: Vec<String> = acts
        .iter()
        .map(|a| {
            format!(
                "{t} {op}_y = {op}(x = x{})[name = string(\"{op}\")];",
                parameters(a, "fp32"),
                op = a.op
            )
        })
        .collect();
    let names: Vec<String> = acts.iter().map(|a| format!("{}_y", a.op)).collect();
    let outputs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mil = program(&[("x", t)], &lines, &outputs);

    // As the ANE: x rounded to fp16, the op computed with the fp32 parameters, one rounding.
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    for (a, o) in acts.iter().zip(&out) {
        let (alpha, beta) = (a.alpha.unwrap_or(0.0), a.beta.unwrap_or(0.0));
        let exact: Vec<f64> = x.iter().map(|&v| (a.exact)(fp16(v), alpha, beta)).collect();
        assert_fp16_values(a.op, o);
        check(a.op, o, DType::Fp32, &shape, &exact, |w| tolerance(a.fit, w).max(ulp(w) / 2.0));
    }
    // IEEE f32: within a few f32 ulps of the exact value.
    let out = run(&exact_fp32(), &mil, &[("x", &x)]);
    for (a, o) in acts.iter().zip(&out) {
        let (alpha, beta) = (a.alpha.unwrap_or(0.0), a.beta.unwrap_or(0.0));
        let exact: Vec<f64> = x.iter().map(|&v| (a.exact)(v, alpha, beta)).collect();
        let what = format!("{} exact fp32", a.op);
        check(&what, o, DType::Fp32, &shape, &exact, |w| 8.0 * 2f64.powi(-24) * (w.abs() + 1.0));
    }
}

#[test]
fn activation_parameters_are_required_and_checked() {
    let t = ty("fp16", &[2]);
    let one = |line: String| program(&[("x", t.clone())], &[line], &["y"]);
    let e = compile_error(&one(format!("{t} y = leaky_relu(x = x)[name = string(\"y\")];")));
    assert!(e.contains("missing required input alpha"), "{e}");
    let e = compile_error(&one(format!(
        "{t} y = linear_activation(x = x, alpha = fp16(2))[name = string(\"y\")];"
    )));
    assert!(e.contains("missing required input beta"), "{e}");
    let e = compile_error(&one(format!(
        "{t} y = scaled_tanh(x = x, alpha = fp16(1), beta = fp32(1))[name = string(\"y\")];"
    )));
    assert!(e.contains("beta is fp32 but alpha is fp16"), "{e}");
    let i = ty("int32", &[2]);
    let e = compile_error(&program(
        &[("x", i.clone())],
        &[format!("{i} y = relu6(x = x)[name = string(\"y\")];")],
        &["y"],
    ));
    assert!(e.contains("x is int32 but must be fp16 or fp32"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// prelu

/// `max(x, 0) + min(x, 0) alpha[c]` for x `[B, C, *]`.
fn prelu_ref(x: &[f64], shape: &[usize], alpha: &[f64]) -> Vec<f64> {
    let plane = numel(&shape[2..]);
    let c = shape[1];
    x.iter().enumerate().map(|(i, &v)| v.max(0.0) + v.min(0.0) * alpha[(i / plane) % c]).collect()
}

#[test]
fn prelu_per_channel_as_a_cnn_writes_it() {
    // PyTorch's PReLU(num_parameters=4) after a conv: slopes as a const op, x [2, 4, 3, 5].
    let shape = [2, 4, 3, 5];
    let mut rng = Rng(31);
    let x = rng.fp16s(numel(&shape), -6.0, 6.0);
    let alpha = rng.fp16s(4, -0.5, 0.5);
    let t = ty("fp16", &shape);
    let mil = program(
        &[("x", t.clone())],
        &[
            format!(
                "{} a = const()[name = string(\"a\"), val = {}];",
                ty("fp16", &[4]),
                tensor("fp16", &[4], &alpha)
            ),
            format!("{t} y = prelu(x = x, alpha = a)[name = string(\"y\")];"),
        ],
        &["y"],
    );
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    check_rounded("prelu", &out[0], DType::Fp16, &shape, &prelu_ref(&x, &shape, &alpha));

    // PReLU on [N, C]: the converter expands x to rank 4 and squeezes the result back.
    let alpha = [0.25, -1.5, 0.125];
    let x2 = rng.fp16s(6, -4.0, 4.0);
    let mil = program(
        &[("x", ty("fp16", &[2, 3]))],
        &[
            format!(
                "{} e = expand_dims(x = x, axes = {})[name = string(\"e\")];",
                ty("fp16", &[2, 3, 1, 1]),
                tensor("int32", &[2], &[2.0, 3.0])
            ),
            format!(
                "{} p = prelu(x = e, alpha = {})[name = string(\"p\")];",
                ty("fp16", &[2, 3, 1, 1]),
                tensor("fp16", &[3], &alpha)
            ),
            format!(
                "{} y = squeeze(x = p, axes = {})[name = string(\"y\")];",
                ty("fp16", &[2, 3]),
                tensor("int32", &[2], &[2.0, 3.0])
            ),
        ],
        &["y"],
    );
    let out = run(&as_ane(), &mil, &[("x", &x2)]);
    let want = prelu_ref(&x2, &[2, 3, 1, 1], &alpha);
    check_rounded("prelu rank 2", &out[0], DType::Fp16, &[2, 3], &want);
}

#[test]
fn prelu_in_fp32_and_at_rank_3() {
    // fp32 x and slopes; rank 3 takes one slope for every channel.
    let shape = [2, 3, 7];
    let x: Vec<f64> =
        Rng(41).fp16s(numel(&shape), -5.0, 5.0).iter().map(|v| fp32(v * 1.0003)).collect();
    let alpha = [0.2, 0.2, 0.2];
    let t = ty("fp32", &shape);
    let mil = program(
        &[("x", t.clone())],
        &[format!(
            "{t} y = prelu(x = x, alpha = {})[name = string(\"y\")];",
            tensor("fp32", &[3], &alpha)
        )],
        &["y"],
    );
    let a32: Vec<f64> = alpha.iter().map(|&a| fp32(a)).collect();
    // As the ANE: x and the slopes rounded to fp16, one product, one rounding.
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    let xs: Vec<f64> = x.iter().map(|&v| fp16(v)).collect();
    let a16: Vec<f64> = a32.iter().map(|&a| fp16(a)).collect();
    assert_fp16_values("prelu fp32", &out[0]);
    check_rounded("prelu fp32", &out[0], DType::Fp32, &shape, &prelu_ref(&xs, &shape, &a16));
    let out = run(&exact_fp32(), &mil, &[("x", &x)]);
    let want: Vec<f64> = prelu_ref(&x, &shape, &a32).iter().map(|&v| fp32(v)).collect();
    check("prelu exact fp32", &out[0], DType::Fp32, &shape, &want, |_| 0.0);

    let e = compile_error(&program(
        &[("x", t.clone())],
        &[format!(
            "{t} y = prelu(x = x, alpha = {})[name = string(\"y\")];",
            tensor("fp32", &[3], &[0.1, 0.2, 0.3])
        )],
        &["y"],
    ));
    assert!(e.contains("alpha holds different slopes"), "{e}");
    let e = compile_error(&program(
        &[("x", t.clone())],
        &[format!(
            "{t} y = prelu(x = x, alpha = {})[name = string(\"y\")];",
            tensor("fp32", &[2], &[0.1, 0.1])
        )],
        &["y"],
    ));
    assert!(e.contains("alpha has shape [2] but x [2, 3, 7] has 3 channels"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// upsample_nearest_neighbor, upsample_bilinear

/// The input position output `i` copies when `n` positions grow by `scale`: the last input
/// cell `[j scale, (j + 1) scale)` starting at or before `i`.
fn nearest_source(i: usize, scale: f64, n: usize) -> usize {
    let mut j = 0;
    while j + 1 < n && (j + 1) as f64 * scale <= i as f64 {
        j += 1;
    }
    j
}

/// upsample_nearest_neighbor of `x [*, h, w]` to `[*, oh, ow]`.
fn nearest_ref(x: &[f64], shape: &[usize], scales: [f64; 2], out: [usize; 2]) -> Vec<f64> {
    let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let mut y = Vec::new();
    for plane in x.chunks(h * w) {
        for i in 0..out[0] {
            for j in 0..out[1] {
                y.push(
                    plane[nearest_source(i, scales[0], h) * w + nearest_source(j, scales[1], w)],
                );
            }
        }
    }
    y
}

#[test]
fn upsample_nearest_neighbor_copies_elements() {
    // nn.Upsample(scale_factor=2, mode="nearest") as the converter writes it: int32 scales.
    let shape = [1, 3, 4, 5];
    let x = Rng(51).fp16s(numel(&shape), -100.0, 100.0);
    let mil = program(
        &[("x", ty("fp16", &shape))],
        &[
            format!(
                "{} y = upsample_nearest_neighbor(x = x, scale_factor_height = int32(2), scale_factor_width = int32(3))[name = string(\"y\")];",
                ty("fp16", &[1, 3, 8, 15])
            ),
            // Fractional fp32 scales: floor(4 * 1.5) = 6 rows, floor(5 * 2.5) = 12 columns.
            format!(
                "{} z = upsample_nearest_neighbor(x = x, scale_factor_height = fp32(1.5), scale_factor_width = fp32(2.5))[name = string(\"z\")];",
                ty("fp16", &[1, 3, 6, 12])
            ),
            // Defaults: scale 1, a plain copy.
            format!(
                "{} c = upsample_nearest_neighbor(x = x)[name = string(\"c\")];",
                ty("fp16", &shape)
            ),
        ],
        &["y", "z", "c"],
    );
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    let want = nearest_ref(&x, &shape, [2.0, 3.0], [8, 15]);
    check("nearest x2 x3", &out[0], DType::Fp16, &[1, 3, 8, 15], &want, |_| 0.0);
    let want = nearest_ref(&x, &shape, [1.5, 2.5], [6, 12]);
    check("nearest x1.5 x2.5", &out[1], DType::Fp16, &[1, 3, 6, 12], &want, |_| 0.0);
    check("nearest x1", &out[2], DType::Fp16, &shape, &x, |_| 0.0);
}

#[test]
fn upsample_nearest_neighbor_keeps_fp32_values() {
    // Data movement: fp32 values that fp16 cannot hold come out unchanged, even as on the ANE.
    let shape = [2, 2, 3];
    let x: Vec<f64> =
        Rng(61).fp16s(numel(&shape), -3.0, 3.0).iter().map(|v| fp32(v * 1.000_01 + 1e-6)).collect();
    let mil = program(
        &[("x", ty("fp32", &shape))],
        &[format!(
            "{} y = upsample_nearest_neighbor(x = x, scale_factor_height = int32(3), scale_factor_width = int32(2))[name = string(\"y\")];",
            ty("fp32", &[2, 6, 6])
        )],
        &["y"],
    );
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    let want = nearest_ref(&x, &shape, [3.0, 2.0], [6, 6]);
    check("nearest fp32", &out[0], DType::Fp32, &[2, 6, 6], &want, |_| 0.0);
    assert!(out[0].values.iter().any(|&v| fp16(v) != v), "the values are not all fp16 values");
}

/// upsample_bilinear's sampling position of output `i` of `m` from `n` inputs, by the notes of
/// coremltools' image_resizing.py (and TensorFlow's legacy rule without half pixels).
fn bilinear_position(align_corners: bool, half_pixel: bool, i: usize, n: usize, m: usize) -> f64 {
    let (i, n, m) = (i as f64, n as f64, m as f64);
    let p = if align_corners {
        if m > 1.0 { i * (n - 1.0) / (m - 1.0) } else { 0.0 }
    } else if half_pixel {
        let spacing = n / m;
        i * spacing + 0.5 * spacing - 0.5
    } else {
        i * n / m
    };
    p.clamp(0.0, n - 1.0)
}

/// upsample_bilinear of `x [*, h, w]` to `[*, oh, ow]` in f64.
fn bilinear_ref(
    x: &[f64],
    shape: &[usize],
    out: [usize; 2],
    align_corners: bool,
    half_pixel: bool,
) -> Vec<f64> {
    let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let neighbours = |p: f64, n: usize| {
        let lo = p.floor() as usize;
        (lo, (lo + 1).min(n - 1), p - lo as f64)
    };
    let mut y = Vec::new();
    for plane in x.chunks(h * w) {
        for i in 0..out[0] {
            let (y0, y1, ty) =
                neighbours(bilinear_position(align_corners, half_pixel, i, h, out[0]), h);
            for j in 0..out[1] {
                let (x0, x1, tx) =
                    neighbours(bilinear_position(align_corners, half_pixel, j, w, out[1]), w);
                let at = |r: usize, c: usize| plane[r * w + c];
                let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
                let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
                y.push(top * (1.0 - ty) + bottom * ty);
            }
        }
    }
    y
}

#[test]
fn upsample_bilinear_in_every_sampling_mode() {
    let shape = [1, 2, 5, 6];
    let x = Rng(71).fp16s(numel(&shape), -4.0, 4.0);
    let line = |name: &str, out: [usize; 2], args: &str| {
        format!(
            "{} {name} = upsample_bilinear(x = x{args})[name = string(\"{name}\")];",
            ty("fp16", &[1, 2, out[0], out[1]])
        )
    };
    let mil = program(
        &[("x", ty("fp16", &shape))],
        &[
            // nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True).
            line(
                "a",
                [10, 12],
                ", scale_factor_height = int32(2), scale_factor_width = int32(2), align_corners = bool(true)",
            ),
            // align_corners=False: half pixel centers, fractional scales.
            line(
                "b",
                [7, 15],
                ", scale_factor_height = fp32(1.5), scale_factor_width = fp32(2.5), align_corners = bool(false)",
            ),
            // iOS16: neither aligned corners nor half pixel centers.
            line(
                "c",
                [10, 18],
                ", scale_factor_height = int32(2), scale_factor_width = int32(3), align_corners = bool(false), half_pixel_centers = bool(false)",
            ),
            // Defaults: scale 1 and aligned corners, the identity.
            line("d", [5, 6], ""),
        ],
        &["a", "b", "c", "d"],
    );
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    let tol = |w: f64| ulp(w) + 2f64.powi(-16);
    for (o, (what, size, align, half)) in out.iter().zip([
        ("aligned corners", [10, 12], true, false),
        ("half pixel centers", [7, 15], false, true),
        ("asymmetric", [10, 18], false, false),
        ("identity", [5, 6], true, false),
    ]) {
        let want = bilinear_ref(&x, &shape, size, align, half);
        check(what, o, DType::Fp16, &[1, 2, size[0], size[1]], &want, tol);
    }
    assert_eq!(out[3].values, x, "scale 1 with aligned corners copies");

    let e = compile_error(&program(
        &[("x", ty("fp16", &shape))],
        &[line("y", [5, 6], ", align_corners = bool(true), half_pixel_centers = bool(true)")],
        &["y"],
    ));
    assert!(e.contains("align_corners and half_pixel_centers are both true"), "{e}");
}

#[test]
fn upsample_bilinear_in_fp32() {
    // A 1-d linear upsample as the converter writes it: x [N, C, L] expanded to
    // [N, C, L, 1], scaled in height only, and squeezed back.
    let x: Vec<f64> =
        Rng(81).fp16s(2 * 3 * 4, -2.0, 2.0).iter().map(|v| fp32(v * 1.0001)).collect();
    let mil = program(
        &[("x", ty("fp32", &[2, 3, 4]))],
        &[
            format!(
                "{} e = expand_dims(x = x, axes = {})[name = string(\"e\")];",
                ty("fp32", &[2, 3, 4, 1]),
                tensor("int32", &[1], &[3.0])
            ),
            format!(
                "{} u = upsample_bilinear(x = e, scale_factor_height = fp32(2), scale_factor_width = fp32(1), align_corners = bool(false))[name = string(\"u\")];",
                ty("fp32", &[2, 3, 8, 1])
            ),
            format!(
                "{} y = squeeze(x = u, axes = {})[name = string(\"y\")];",
                ty("fp32", &[2, 3, 8]),
                tensor("int32", &[1], &[3.0])
            ),
        ],
        &["y"],
    );
    let out = run(&as_ane(), &mil, &[("x", &x)]);
    let xs: Vec<f64> = x.iter().map(|&v| fp16(v)).collect();
    let want = bilinear_ref(&xs, &[2, 3, 4, 1], [8, 1], false, true);
    assert_fp16_values("bilinear fp32", &out[0]);
    check("bilinear fp32", &out[0], DType::Fp32, &[2, 3, 8], &want, |w| ulp(w) + 2f64.powi(-16));
    let out = run(&exact_fp32(), &mil, &[("x", &x)]);
    let want = bilinear_ref(&x, &[2, 3, 4, 1], [8, 1], false, true);
    check("bilinear exact fp32", &out[0], DType::Fp32, &[2, 3, 8], &want, |w| {
        4.0 * 2f64.powi(-24) * (w.abs() + 1.0)
    });
}
