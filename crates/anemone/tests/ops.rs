//! Every MIL op end to end through the runtime: typed builder (or MIL text) -> validation ->
//! simulator compile -> evaluate. Each result is compared with a reference computed here in f64
//! from the op's definition (REFERENCE.md §6) and the documented fp16 rules (§3,
//! `sim::numerics`), never with the simulator's kernels, and rounded once to fp16 by a rounding
//! function written here from the format.
//!
//! Tolerances, in fp16 ulps (the spacing of fp16 values at the reference's magnitude; 2^-24
//! below 2^-14):
//! - exact: data movement, cast, relu, maximum/minimum, reduce_max, add/sub/mul/real_div/sqrt,
//!   quantize and the dequantizing ops. The simulator computes these in f32 and rounds once;
//!   f32 carries 24 >= 2*11 + 2 significant bits, so for +, -, *, / and sqrt the f32 result
//!   rounded to fp16 is the correctly rounded result, i.e. the f64 result rounded once.
//! - 1 ulp: exp, log, rsqrt, inverse, tanh, sigmoid, silu, gelu, pow, softmax. These take a few
//!   f32 operations, each within a few f32 ulps (2^-24 relative, 2^13 times finer than fp16):
//!   that error changes the final rounding only when the exact value lies that close to a
//!   rounding boundary, and then by one fp16 ulp.
//! - dot products (conv, matmul) and sums (reduce_sum, reduce_mean): 2 ulps plus
//!   K * 2^-23 * sum|a_i b_i| for K terms. Products of fp16 values are exact in f32; summing K
//!   of them in f32, in any order, errs by at most (K - 1) * 2^-24 * sum|a_i b_i| (doubled for
//!   slack); then the simulator rounds once (1/2 ulp) and the reference rounds once (1/2 ulp).
//!   A conv bias is added in fp16 after the accumulator is rounded (documented), which adds one
//!   ulp at the accumulator's magnitude.
//! - scaled_dot_product_attention: a bound derived from the fp16 storage of the scores, see
//!   `sdpa_matches_a_decomposed_f64_reference`.
//!
//! The ANE evaluates activations through piecewise-linear tables and accumulates dot products
//! in fp16 groups of 4; the simulator documents that it does neither (exact functions, f32
//! accumulation), and these tolerances hold it to what it documents.

// Reference code indexes several arrays with the same multi-index; index loops read clearer.
#![allow(clippy::needless_range_loop)]

use anemone::Weights;
use anemone_mil::blob::BlobWriter;
use anemone_mil::builder::{Arg, ConvOptions, Var};
use anemone_mil::ops::OpKind;
use anemone_mil::{DType, Literal, TensorData, TensorType, Type, text};

use support::*;

mod support {
    use anemone::{Device, Weights};
    use anemone_mil::builder::{Builder, FunctionBuilder, Var};
    use anemone_mil::{DType, Program, TensorType};

    /// Deterministic pseudo-random numbers (SplitMix64).
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Uniform in [lo, hi).
        pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.unit()
        }

        /// `n` fp16 values, uniform in [lo, hi) before rounding.
        pub fn fp16s(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
            (0..n).map(|_| fp16(self.uniform(lo, hi)) as f32).collect()
        }

        /// `n` fp16 values of magnitude in [lo, hi) and random sign.
        pub fn signed_fp16s(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let m = fp16(self.uniform(lo, hi)) as f32;
                    if self.next_u64() & 1 == 1 { -m } else { m }
                })
                .collect()
        }

        /// `n` integers in [lo, hi], as f32.
        pub fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<f32> {
            let span = (hi - lo + 1) as u64;
            (0..n).map(|_| (lo + (self.next_u64() % span) as i64) as f32).collect()
        }
    }

    /// Spacing of fp16 values in the binade of `a` (> 0): 2^(e - 10) for 2^e <= a < 2^(e+1)
    /// with e >= -14, and the fixed subnormal spacing 2^-24 below 2^-14.
    fn spacing(a: f64) -> f64 {
        if a < 2f64.powi(-14) {
            return 2f64.powi(-24);
        }
        // `a` is a normal f64 here, so its biased exponent field is floor(log2 a) + 1023.
        let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        2f64.powi(e - 10)
    }

    /// The fp16 value nearest `x`, ties to even; ±inf when the rounded magnitude exceeds the
    /// largest finite fp16 value 65504; NaN stays NaN; the sign of zero is kept.
    pub fn fp16(x: f64) -> f64 {
        if !x.is_finite() || x == 0.0 {
            return x;
        }
        let a = x.abs();
        let s = spacing(a);
        // a / s and the product back are exact: s is a power of two.
        let r = (a / s).round_ties_even() * s;
        let r = if r > 65504.0 { f64::INFINITY } else { r };
        r.copysign(x)
    }

    /// One fp16 ulp at the magnitude of `x` once rounded (32, the last finite spacing, for
    /// values that round to infinity).
    pub fn ulp(x: f64) -> f64 {
        let r = fp16(x).abs();
        if r.is_infinite() {
            32.0
        } else if r == 0.0 {
            2f64.powi(-24)
        } else {
            spacing(r)
        }
    }

    /// The matmul / multi-tap conv output port (REFERENCE.md §3): the sum rounded once to
    /// fp16, and a result of magnitude 32768 or more after that rounding is ±inf.
    pub fn mac_port(sum: f64) -> f64 {
        let r = fp16(sum);
        if r.abs() >= 32768.0 { f64::INFINITY.copysign(r) } else { r }
    }

    /// Decodes fp16 bits: sign, 5-bit exponent (bias 15), 10-bit fraction.
    pub fn fp16_bits_to_f64(h: u16) -> f64 {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let e = i32::from((h >> 10) & 0x1f);
        let m = f64::from(h & 0x3ff);
        match e {
            0 => sign * m * 2f64.powi(-24),
            31 if m == 0.0 => sign * f64::INFINITY,
            31 => f64::NAN,
            _ => sign * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
        }
    }

    pub fn numel(shape: &[usize]) -> usize {
        shape.iter().product()
    }

    /// The row-major multi-index of flat index `i`.
    pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        idx
    }

    pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
    }

    /// numpy's broadcast of two shapes (right-aligned; a 1 stretches).
    pub fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
        let r = a.len().max(b.len());
        let dim = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
        (0..r)
            .map(|i| {
                let (x, y) = (dim(a, i), dim(b, i));
                assert!(x == y || x == 1 || y == 1, "{a:?} and {b:?} do not broadcast");
                x.max(y)
            })
            .collect()
    }

    /// The flat index into an operand of `shape` that numpy broadcasting reads for the output
    /// multi-index `out_idx` (shapes right-aligned, unit dims read at 0).
    pub fn broadcast_index(out_idx: &[usize], shape: &[usize]) -> usize {
        let off = out_idx.len() - shape.len();
        let idx: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(d, &n)| if n == 1 { 0 } else { out_idx[off + d] })
            .collect();
        ravel(&idx, shape)
    }

    /// A function input and the values written to it.
    pub struct Input {
        pub name: String,
        pub ty: TensorType,
        pub values: Vec<f32>,
    }

    pub fn input(name: &str, dtype: DType, shape: &[usize], values: Vec<f32>) -> Input {
        assert_eq!(values.len(), numel(shape), "input {name}: {shape:?}");
        Input { name: name.into(), ty: TensorType::new(dtype, shape), values }
    }

    pub fn input_f16(name: &str, shape: &[usize], values: Vec<f32>) -> Input {
        input(name, DType::Fp16, shape, values)
    }

    /// An output as the device wrote it.
    pub struct Output {
        pub name: String,
        pub shape: Vec<usize>,
        pub dtype: DType,
        pub bytes: Vec<u8>,
    }

    impl Output {
        /// The elements, decoded here from their bytes.
        pub fn values(&self) -> Vec<f64> {
            let b = &self.bytes;
            match self.dtype {
                DType::Fp16 => b
                    .chunks_exact(2)
                    .map(|c| fp16_bits_to_f64(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
                DType::Fp32 => b
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                DType::Int32 => b
                    .chunks_exact(4)
                    .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                DType::Int8 => b.iter().map(|&v| f64::from(v as i8)).collect(),
                DType::UInt8 => b.iter().map(|&v| f64::from(v)).collect(),
                other => panic!("output `{}`: no decoder for {other}", self.name),
            }
        }
    }

    /// Builds `main(inputs)` whose body `body` returns the outputs, then runs it.
    pub fn run<F>(inputs: &[Input], body: F) -> Vec<Output>
    where
        F: FnOnce(&mut FunctionBuilder<'_>, &[Var]) -> Vec<Var>,
    {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let vars: Vec<Var> = inputs.iter().map(|i| f.input(&i.name, i.ty.clone())).collect();
        let outs = body(&mut f, &vars);
        for o in &outs {
            f.output(o);
        }
        f.finish();
        let built = b.build().unwrap_or_else(|e| panic!("build: {e}"));
        run_program(&built.program, &built.weights, inputs)
    }

    /// Compiles `program` on a fresh simulator, writes the inputs, evaluates, and returns the
    /// outputs in the order the function lists them.
    pub fn run_program(program: &Program, weights: &Weights, inputs: &[Input]) -> Vec<Output> {
        let mut model = Device::simulator()
            .compile(program, weights)
            .unwrap_or_else(|e| panic!("compile: {e}\n{}", anemone_mil::text::print(program)));
        for i in inputs {
            model.input(&i.name).unwrap().write_f32(&i.values).unwrap();
        }
        model.evaluate().unwrap_or_else(|e| panic!("evaluate: {e}"));
        let function = program.main_function().unwrap();
        function
            .block
            .outputs
            .iter()
            .map(|o| {
                let s = model.output(&o.name).unwrap();
                Output {
                    name: o.name.clone(),
                    shape: s.shape().to_vec(),
                    dtype: s.dtype(),
                    bytes: s.read_bytes(),
                }
            })
            .collect()
    }

    fn same(got: f64, want: f64) -> bool {
        if want.is_nan() {
            return got.is_nan();
        }
        got == want && (want != 0.0 || got.is_sign_negative() == want.is_sign_negative())
    }

    /// Asserts bit-level agreement (value and sign of zero) with an already rounded reference.
    pub fn assert_exact(what: &str, out: &Output, shape: &[usize], want: &[f64]) {
        assert_eq!(out.shape, shape, "{what}: shape");
        let got = out.values();
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(same(g, w), "{what}[{:?}]: got {g:e}, want {w:e}", unravel(i, shape));
        }
    }

    /// Asserts |got - want| <= tol(i) for a rounded reference `want`; infinities must match.
    pub fn assert_close(
        what: &str,
        out: &Output,
        shape: &[usize],
        want: &[f64],
        tol: impl Fn(usize) -> f64,
    ) {
        assert_eq!(out.shape, shape, "{what}: shape");
        let got = out.values();
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let t = tol(i);
            let ok = if g.is_infinite() || w.is_infinite() || w.is_nan() {
                same(g, w)
            } else {
                (g - w).abs() <= t
            };
            assert!(
                ok,
                "{what}[{:?}]: got {g:e}, want {w:e} (|diff| {:e} > tolerance {t:e})",
                unravel(i, shape),
                (g - w).abs()
            );
        }
    }

    /// Tolerance of a K-term fp16 dot product accumulated in f32, against the reference
    /// rounded once; see the file's doc.
    pub fn dot_tolerance(exact: f64, abs_sum: f64, k: usize) -> f64 {
        2.0 * ulp(exact) + k as f64 * 2f64.powi(-23) * abs_sum
    }
}

// ---------------------------------------------------------------------------------------------
// Checks of the reference helpers themselves.

#[test]
fn reference_rounding_agrees_with_ieee_conversion() {
    let mut rng = Rng::new(1);
    for _ in 0..20_000 {
        // Magnitudes across the whole fp16 range and past it, subnormals included. Compared
        // with the f32 conversion (correctly rounded) on f32 values: `half`'s f64 conversion
        // goes through f32 on x86, which rounds twice.
        let x = (rng.uniform(-1.0, 1.0) * 2f64.powf(rng.uniform(-27.0, 17.0))) as f32;
        let want = half::f16::from_f32(x).to_f64();
        assert_eq!(fp16(f64::from(x)).to_bits(), want.to_bits(), "{x:e}");
    }
    for h in (0..=u16::MAX).step_by(7) {
        let v = fp16_bits_to_f64(h);
        let want = half::f16::from_bits(h).to_f64();
        assert!(v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()), "{h:#x}");
    }
    assert_eq!(fp16(65519.99), 65504.0);
    assert_eq!(fp16(65520.0), f64::INFINITY);
    assert_eq!(ulp(1.0), 2f64.powi(-10));
    assert_eq!(ulp(1e-6), 2f64.powi(-24));
}

#[test]
fn reference_erf_matches_published_values() {
    // Abramowitz & Stegun table 7.1 and standard values.
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (-1.5, -0.966_105_146_475_310_7),
    ] {
        assert!((1.0 - erfc(x) - want).abs() < 1e-13, "erf({x})");
    }
    for (x, want) in [
        (2.5, 4.069_520_174_449_59e-4),
        (3.0, 2.209_049_699_858_544e-5),
        (5.0, 1.537_459_794_428_035e-12),
    ] {
        assert!((erfc(x) / want - 1.0).abs() < 1e-11, "erfc({x})");
    }
}

// ---------------------------------------------------------------------------------------------
// cast

#[test]
fn cast_fp32_to_fp16_rounds_to_nearest_even_and_overflows_to_inf() {
    let p = |e: i32| 2f32.powi(e);
    let mut x: Vec<f32> = vec![
        1.0 + p(-11),       // halfway between 1 and 1 + 2^-10: the even 1
        1.0 + 3.0 * p(-11), // halfway between 1 + 2^-10 and 1 + 2^-9: the even 1 + 2^-9
        -(1.0 + p(-11)),
        2049.0, // halfway between 2048 and 2050: 2048
        2051.0, // halfway between 2050 and 2052: 2052
        -2051.0,
        65504.0,
        65519.0, // below the midpoint to 65536: 65504
        65520.0, // the midpoint: rounds to 65536, which is inf
        -65520.0,
        1e6,
        -1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        p(-25),       // half the smallest subnormal: ties to the even 0
        3.0 * p(-25), // 1.5 subnormal steps: ties to the even 2 * 2^-24
        -3.0 * p(-26),
        1e-10,
        p(-14) - p(-25), // halfway between the largest subnormal and 2^-14: 2^-14
        0.1,
        1.0 / 3.0,
        0.0,
        -0.0,
    ];
    let mut rng = Rng::new(2);
    // Arbitrary f32 values over the whole fp16 range.
    x.extend(
        (0..200).map(|_| (rng.uniform(-1.0, 1.0) * 2f64.powf(rng.uniform(-26.0, 16.5))) as f32),
    );
    let n = x.len();
    let out = run(&[input("x", DType::Fp32, &[n], x.clone())], |f, v| {
        vec![f.cast(&v[0], DType::Fp16).unwrap()]
    });
    let want: Vec<f64> = x.iter().map(|&v| fp16(f64::from(v))).collect();
    assert_exact("cast fp32->fp16", &out[0], &[n], &want);
}

#[test]
fn cast_fp32_nan_to_fp16_is_plus_inf() {
    // The ANE holds no NaN: a NaN read by the datapath is +inf (REFERENCE.md §3).
    let out = run(&[input("x", DType::Fp32, &[2], vec![f32::NAN, -f32::NAN])], |f, v| {
        vec![f.cast(&v[0], DType::Fp16).unwrap()]
    });
    assert_exact("cast NaN", &out[0], &[2], &[f64::INFINITY, f64::INFINITY]);
}

#[test]
fn cast_fp16_to_fp32_is_exact() {
    // Every 13th finite fp16 bit pattern of each sign (subnormals included), and the ends.
    let mut bits: Vec<u16> = (0..0x7c00).step_by(13).collect();
    bits.extend((0x8000..0xfc00).step_by(13));
    bits.extend([0x0001, 0x03ff, 0x0400, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x8000]);
    let x: Vec<f32> = bits.iter().map(|&h| fp16_bits_to_f64(h) as f32).collect();
    let n = x.len();
    let out =
        run(&[input_f16("x", &[n], x.clone())], |f, v| vec![f.cast(&v[0], DType::Fp32).unwrap()]);
    let want: Vec<f64> = bits.iter().map(|&h| fp16_bits_to_f64(h)).collect();
    assert_exact("cast fp16->fp32", &out[0], &[n], &want);
}

#[test]
fn cast_float_to_int32_truncates_toward_zero() {
    let x32: Vec<f32> = vec![
        2.7,
        -2.7,
        0.5,
        -0.5,
        0.99,
        -0.99,
        7.0,
        -7.0,
        1_000_000.5,
        -123.99,
        16_777_215.0,
        -2_147_483_520.0,
        0.0,
    ];
    let x16: Vec<f32> = vec![2.5, -3.75, 1000.5, -0.25, 65504.0, -65504.0, 0.000_1, 17.0, -1.0];
    let (n32, n16) = (x32.len(), x16.len());
    let out = run(
        &[input("a", DType::Fp32, &[n32], x32.clone()), input_f16("b", &[n16], x16.clone())],
        |f, v| vec![f.cast(&v[0], DType::Int32).unwrap(), f.cast(&v[1], DType::Int32).unwrap()],
    );
    let trunc = |xs: &[f32]| xs.iter().map(|&v| f64::from(v).trunc() + 0.0).collect::<Vec<_>>();
    assert_exact("cast fp32->int32", &out[0], &[n32], &trunc(&x32));
    assert_exact("cast fp16->int32", &out[1], &[n16], &trunc(&x16));
}

// ---------------------------------------------------------------------------------------------
// conv

/// A conv case: shapes `[N, C, *spatial]` and `[C_out, C_in / groups, *kernel]`.
struct Conv<'a> {
    x: &'a [usize],
    w: &'a [usize],
    strides: &'a [i32],
    dilations: &'a [i32],
    pad_type: &'a str,
    pad: &'a [i32],
    groups: usize,
    bias: bool,
    /// The weight as a function input instead of a BLOBFILE constant.
    dynamic_weight: bool,
}

impl Default for Conv<'_> {
    fn default() -> Self {
        Conv {
            x: &[],
            w: &[],
            strides: &[1, 1],
            dilations: &[1, 1],
            pad_type: "valid",
            pad: &[0, 0, 0, 0],
            groups: 1,
            bias: false,
            dynamic_weight: false,
        }
    }
}

/// Padding before and after one spatial dim, from the definitions of the pad types: `same`
/// gives ceil(in / stride) outputs with the odd element of padding after, `same_lower` before.
fn conv_pads(
    pad_type: &str,
    size: usize,
    k: usize,
    s: usize,
    d: usize,
    custom: (usize, usize),
) -> (usize, usize) {
    let extent = (k - 1) * d + 1;
    let same_total = || ((size.div_ceil(s) - 1) * s + extent).saturating_sub(size);
    match pad_type {
        "valid" => (0, 0),
        "custom" => custom,
        "same" => (same_total() / 2, same_total() - same_total() / 2),
        "same_lower" => (same_total() - same_total() / 2, same_total() / 2),
        other => panic!("pad type {other}"),
    }
}

/// Cross-correlation in f64. Returns the output shape and, per output, the exact sum with
/// the bias, the sum without it, and sum|x w|.
fn conv_reference(
    c: &Conv,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<usize>, Vec<f64>, Vec<f64>, Vec<f64>) {
    // A 1-D conv is a 2-D conv of height 1.
    let lift = |v: &[usize]| if v.len() == 3 { vec![v[0], v[1], 1, v[2]] } else { v.to_vec() };
    let (xs, ws) = (lift(c.x), lift(c.w));
    let two = |v: &[i32]| {
        let v: Vec<usize> = v.iter().map(|&a| a as usize).collect();
        if v.len() == 1 { vec![1, v[0]] } else { v }
    };
    let (st, di) = (two(c.strides), two(c.dilations));
    let custom: Vec<(usize, usize)> =
        c.pad.chunks(2).map(|p| (p[0] as usize, p[1] as usize)).collect();
    let custom = if custom.len() == 1 { vec![(0, 0), custom[0]] } else { custom };
    let (n, cin, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (cout, cin_g, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let ph = conv_pads(c.pad_type, h, kh, st[0], di[0], custom[0]);
    let pw = conv_pads(c.pad_type, wd, kw, st[1], di[1], custom[1]);
    let oh = (h + ph.0 + ph.1 - ((kh - 1) * di[0] + 1)) / st[0] + 1;
    let ow = (wd + pw.0 + pw.1 - ((kw - 1) * di[1] + 1)) / st[1] + 1;
    let cout_g = cout / c.groups;
    let (mut exact, mut acc, mut abs) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..n {
        for oc in 0..cout {
            let g = oc / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut s, mut a) = (0.0f64, 0.0f64);
                    for ic in 0..cin_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * st[0] + ky * di[0]) as isize - ph.0 as isize;
                                let ix = (ox * st[1] + kx * di[1]) as isize - pw.0 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                let xv =
                                    f64::from(x[((b * cin + g * cin_g + ic) * h + iy) * wd + ix]);
                                let wv = f64::from(w[((oc * cin_g + ic) * kh + ky) * kw + kx]);
                                s += xv * wv;
                                a += (xv * wv).abs();
                            }
                        }
                    }
                    acc.push(s);
                    abs.push(a);
                    exact.push(s + bias.map_or(0.0, |b| f64::from(b[oc])));
                }
            }
        }
    }
    let shape = if c.x.len() == 3 { vec![n, cout, ow] } else { vec![n, cout, oh, ow] };
    (shape, exact, acc, abs)
}

fn check_conv(what: &str, c: Conv, seed: u64) {
    let mut rng = Rng::new(seed);
    let xv = rng.fp16s(numel(c.x), -1.0, 1.0);
    let wv = rng.fp16s(numel(c.w), -1.0, 1.0);
    let bv = rng.fp16s(c.w[0], -2.0, 2.0);
    let mut inputs = vec![input_f16("x", c.x, xv.clone())];
    if c.dynamic_weight {
        inputs.push(input_f16("w", c.w, wv.clone()));
    }
    let out = run(&inputs, |f, v| {
        let w = if c.dynamic_weight {
            v[1].clone()
        } else {
            f.weight("w", TensorType::new(DType::Fp16, c.w), &wv).unwrap()
        };
        let bias = c.bias.then(|| f.tensor_fp16("b", &[c.w[0]], &bv).unwrap());
        let o = ConvOptions {
            strides: c.strides.to_vec(),
            dilations: c.dilations.to_vec(),
            pad_type: c.pad_type.into(),
            pad: c.pad.to_vec(),
            groups: c.groups as i32,
            bias,
        };
        vec![f.conv(&v[0], &w, &o).unwrap()]
    });
    let (shape, exact, acc, abs) = conv_reference(&c, &xv, &wv, c.bias.then_some(&bv[..]));
    let taps = numel(&c.w[1..]);
    // The documented output port: the accumulator is rounded (saturating at 2^15 when two or
    // more taps are summed), then the bias is added in fp16.
    let want: Vec<f64> = exact
        .iter()
        .zip(&acc)
        .map(|(&e, &a)| if taps >= 2 && mac_port(a).is_infinite() { mac_port(a) } else { fp16(e) })
        .collect();
    assert_close(what, &out[0], &shape, &want, |i| {
        dot_tolerance(exact[i], abs[i], taps) + if c.bias { ulp(acc[i]) } else { 0.0 }
    });
}

#[test]
fn conv_1x1() {
    check_conv("conv 1x1", Conv { x: &[1, 8, 3, 5], w: &[6, 8, 1, 1], ..Conv::default() }, 10);
    // Odd sizes: one channel, one pixel; and 17 channels.
    check_conv("conv 1x1 1ch", Conv { x: &[1, 1, 1, 1], w: &[3, 1, 1, 1], ..Conv::default() }, 11);
    check_conv(
        "conv 1x1 17ch",
        Conv { x: &[2, 17, 1, 3], w: &[5, 17, 1, 1], ..Conv::default() },
        12,
    );
}

#[test]
fn conv_3x3_same_padding_with_bias_on_a_3x5_image() {
    let c = Conv {
        x: &[2, 3, 3, 5],
        w: &[4, 3, 3, 3],
        pad_type: "same",
        bias: true,
        ..Conv::default()
    };
    check_conv("conv 3x3 same", c, 20);
}

#[test]
fn conv_3x3_custom_padding() {
    // [top, bottom, left, right], all different.
    let c = Conv {
        x: &[1, 3, 6, 5],
        w: &[2, 3, 3, 3],
        pad_type: "custom",
        pad: &[1, 0, 2, 1],
        ..Conv::default()
    };
    check_conv("conv 3x3 custom pad", c, 30);
}

#[test]
fn conv_stride_2_same_and_same_lower() {
    // 7 rows and 6 columns with stride 2: ceil gives 4 x 3 outputs; the total pad is odd
    // along the columns, so same and same_lower put the extra zero on different sides.
    for (pad_type, seed) in [("same", 40), ("same_lower", 41), ("valid", 42)] {
        let c = Conv {
            x: &[1, 2, 7, 6],
            w: &[3, 2, 3, 3],
            strides: &[2, 2],
            pad_type,
            ..Conv::default()
        };
        check_conv(&format!("conv stride 2 {pad_type}"), c, seed);
    }
}

#[test]
fn conv_dilation_2() {
    let c = Conv { x: &[1, 2, 9, 8], w: &[2, 2, 3, 3], dilations: &[2, 2], ..Conv::default() };
    check_conv("conv dilation 2", c, 50);
    let c = Conv {
        x: &[1, 2, 9, 8],
        w: &[2, 2, 3, 3],
        dilations: &[2, 1],
        pad_type: "same",
        ..Conv::default()
    };
    check_conv("conv dilation 2x1 same", c, 51);
}

#[test]
fn conv_groups_2() {
    let c =
        Conv { x: &[1, 4, 5, 5], w: &[6, 2, 3, 3], groups: 2, pad_type: "same", ..Conv::default() };
    check_conv("conv groups 2", c, 60);
}

#[test]
fn conv_depthwise_with_bias() {
    let c = Conv {
        x: &[1, 3, 6, 6],
        w: &[3, 1, 3, 3],
        groups: 3,
        pad_type: "same",
        bias: true,
        ..Conv::default()
    };
    check_conv("conv depthwise", c, 70);
    // Depthwise with a channel multiplier of 2 and stride 2.
    let c =
        Conv { x: &[1, 3, 7, 5], w: &[6, 1, 3, 3], groups: 3, strides: &[2, 2], ..Conv::default() };
    check_conv("conv depthwise x2", c, 71);
}

#[test]
fn conv_1d_with_a_dynamic_weight() {
    let c = Conv {
        x: &[1, 4, 17],
        w: &[5, 4, 3],
        strides: &[1],
        dilations: &[1],
        pad_type: "custom",
        pad: &[2, 1],
        dynamic_weight: true,
        ..Conv::default()
    };
    check_conv("conv 1d custom", c, 80);
    let c = Conv {
        x: &[2, 4, 17],
        w: &[6, 2, 3],
        strides: &[2],
        dilations: &[2],
        pad_type: "same",
        pad: &[0, 0],
        groups: 2,
        bias: true,
        dynamic_weight: true,
    };
    check_conv("conv 1d strided dilated grouped", c, 81);
}

#[test]
fn conv_saturates_at_2_15_with_two_taps_but_not_with_one() {
    // Two taps: 32000 + 759 = 32759 rounds to 32752 (finite); 32000 + 760 = 32760 rounds to
    // 32768 and saturates; one tap: 200 * 200 = 40000 keeps the full fp16 range.
    // x is [1, C = 2, 1, 3]: the columns are (32000, 759), (32000, 760), (-32000, -760).
    let x = vec![32000.0, 32000.0, -32000.0, 759.0, 760.0, -760.0];
    let two_taps = run(&[input_f16("x", &[1, 2, 1, 3], x)], |f, v| {
        let w = f.weight("w", TensorType::new(DType::Fp16, [1, 2, 1, 1]), &[1.0, 1.0]).unwrap();
        vec![f.conv(&v[0], &w, &ConvOptions::default()).unwrap()]
    });
    assert_exact(
        "two taps",
        &two_taps[0],
        &[1, 1, 1, 3],
        &[32752.0, f64::INFINITY, f64::NEG_INFINITY],
    );
    let one_tap = run(&[input_f16("x", &[1, 1, 1, 2], vec![200.0, -200.0])], |f, v| {
        let w = f.weight("w", TensorType::new(DType::Fp16, [1, 1, 1, 1]), &[200.0]).unwrap();
        vec![f.conv(&v[0], &w, &ConvOptions::default()).unwrap()]
    });
    assert_exact("one tap", &one_tap[0], &[1, 1, 1, 2], &[40000.0, -40000.0]);
}

// ---------------------------------------------------------------------------------------------
// matmul

/// numpy matmul in f64 with MIL's transposes. Returns the output shape, the exact sums,
/// sum|x y| per output, and K.
fn matmul_reference(
    x: &[f32],
    xs: &[usize],
    y: &[f32],
    ys: &[usize],
    tx: bool,
    ty: bool,
) -> (Vec<usize>, Vec<f64>, Vec<f64>, usize) {
    // A rank-1 x is a row [1, k], a rank-1 y a column [k, 1]; transposes leave them alone.
    let xm: Vec<usize> = if xs.len() == 1 { vec![1, xs[0]] } else { xs.to_vec() };
    let ym: Vec<usize> = if ys.len() == 1 { vec![ys[0], 1] } else { ys.to_vec() };
    let (tx, ty) = (tx && xs.len() > 1, ty && ys.len() > 1);
    let (xr, xc) = (xm[xm.len() - 2], xm[xm.len() - 1]);
    let (yr, yc) = (ym[ym.len() - 2], ym[ym.len() - 1]);
    let (m, k) = if tx { (xc, xr) } else { (xr, xc) };
    let (k2, n) = if ty { (yc, yr) } else { (yr, yc) };
    assert_eq!(k, k2);
    let (xb, yb) = (&xm[..xm.len() - 2], &ym[..ym.len() - 2]);
    let batch = broadcast(xb, yb);
    let (mut exact, mut abs) = (Vec::new(), Vec::new());
    for bi in 0..numel(&batch) {
        let bidx = unravel(bi, &batch);
        let xo = broadcast_index(&bidx, xb) * xr * xc;
        let yo = broadcast_index(&bidx, yb) * yr * yc;
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut a) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let xv = if tx { x[xo + p * xc + i] } else { x[xo + i * xc + p] };
                    let yv = if ty { y[yo + j * yc + p] } else { y[yo + p * yc + j] };
                    let prod = f64::from(xv) * f64::from(yv);
                    s += prod;
                    a += prod.abs();
                }
                exact.push(s);
                abs.push(a);
            }
        }
    }
    let mut shape = batch;
    if xs.len() > 1 {
        shape.push(m);
    }
    if ys.len() > 1 {
        shape.push(n);
    }
    (shape, exact, abs, k)
}

/// Where a matmul operand comes from.
#[derive(Clone, Copy, PartialEq)]
enum Src {
    Input,
    /// A BLOBFILE weight constant.
    Weight,
}

fn check_matmul(xs: &[usize], ys: &[usize], tx: bool, ty: bool, srcs: (Src, Src), seed: u64) {
    let what = format!(
        "matmul {xs:?}{} x {ys:?}{}",
        if tx { "^T" } else { "" },
        if ty { "^T" } else { "" }
    );
    let mut rng = Rng::new(seed);
    let xv = rng.fp16s(numel(xs), -2.0, 2.0);
    let yv = rng.fp16s(numel(ys), -2.0, 2.0);
    let mut inputs = Vec::new();
    if srcs.0 == Src::Input {
        inputs.push(input_f16("x", xs, xv.clone()));
    }
    if srcs.1 == Src::Input {
        inputs.push(input_f16("y", ys, yv.clone()));
    }
    let out = run(&inputs, |f, v| {
        let mut v = v.iter();
        let mut operand = |src: Src, name: &str, shape: &[usize], values: &[f32]| match src {
            Src::Input => v.next().unwrap().clone(),
            Src::Weight => f.weight(name, TensorType::new(DType::Fp16, shape), values).unwrap(),
        };
        let x = operand(srcs.0, "x", xs, &xv);
        let y = operand(srcs.1, "y", ys, &yv);
        vec![f.matmul(&x, &y, tx, ty).unwrap()]
    });
    let (shape, exact, abs, k) = matmul_reference(&xv, xs, &yv, ys, tx, ty);
    let want: Vec<f64> = exact.iter().map(|&e| mac_port(e)).collect();
    assert_close(&what, &out[0], &shape, &want, |i| dot_tolerance(exact[i], abs[i], k));
}

#[test]
fn matmul_plain_and_transposed() {
    let io = (Src::Input, Src::Input);
    check_matmul(&[3, 4], &[4, 5], false, false, io, 100);
    check_matmul(&[4, 3], &[4, 5], true, false, io, 101);
    check_matmul(&[3, 4], &[5, 4], false, true, io, 102);
    check_matmul(&[4, 3], &[5, 4], true, true, io, 103);
    // Batched with transposes, K = 64.
    check_matmul(&[2, 64, 5], &[2, 7, 64], true, true, io, 104);
}

#[test]
fn matmul_with_constant_operands() {
    check_matmul(&[3, 4], &[4, 5], false, false, (Src::Input, Src::Weight), 110);
    check_matmul(&[4, 3], &[5, 4], true, true, (Src::Weight, Src::Input), 111);
    check_matmul(&[2, 3, 17], &[17, 4], false, false, (Src::Input, Src::Weight), 112);
}

#[test]
fn matmul_broadcasts_batch_dims() {
    let io = (Src::Input, Src::Input);
    check_matmul(&[2, 1, 3, 4], &[5, 4, 6], false, false, io, 120);
    check_matmul(&[2, 1, 4, 3], &[5, 6, 4], true, true, io, 121);
    check_matmul(&[3, 4], &[2, 3, 4, 2], false, false, io, 122);
    check_matmul(&[1, 3, 2, 4], &[2, 1, 4, 3], false, false, io, 123);
}

#[test]
fn matmul_with_rank_1_operands() {
    let io = (Src::Input, Src::Input);
    check_matmul(&[4], &[2, 4, 3], false, false, io, 130);
    check_matmul(&[2, 3, 4], &[4], false, false, io, 131);
    check_matmul(&[17], &[17], false, false, io, 132);
    // Transposes do not apply to rank-1 operands.
    check_matmul(&[5], &[3, 5], false, true, io, 133);
}

#[test]
fn matmul_odd_sizes() {
    let io = (Src::Input, Src::Input);
    check_matmul(&[1, 17], &[17, 1], false, false, io, 140);
    check_matmul(&[3, 17, 33], &[33, 1], false, false, io, 141);
    check_matmul(&[1, 1], &[1, 1], false, false, io, 142);
}

#[test]
fn matmul_saturates_at_2_15() {
    // 181 * 181 + 0.5 * 1 = 32761.5 rounds to 32768: inf at the matmul output port, while
    // 181 * 181 through mul stays finite (elementwise ops overflow only past 65504).
    let x = vec![181.0, 0.5];
    let out =
        run(&[input_f16("x", &[1, 2], x), input_f16("y", &[2, 1], vec![181.0, 1.0])], |f, v| {
            vec![f.matmul(&v[0], &v[1], false, false).unwrap(), f.mul(&v[0], &v[0]).unwrap()]
        });
    assert_exact("matmul port", &out[0], &[1, 1], &[f64::INFINITY]);
    assert_exact("mul 181 * 181", &out[1], &[1, 2], &[32768.0, 0.25]);
    // Just below and at the rounding threshold 32760.
    let out = run(&[input_f16("x", &[2, 2], vec![32000.0, 759.0, 32000.0, 760.0])], |f, v| {
        let ones = f.weight("ones", TensorType::new(DType::Fp16, [2, 1]), &[1.0, 1.0]).unwrap();
        vec![f.matmul(&v[0], &ones, false, false).unwrap()]
    });
    assert_exact("matmul 32759 / 32760", &out[0], &[2, 1], &[32752.0, f64::INFINITY]);
}

// ---------------------------------------------------------------------------------------------
// Elementwise binary ops

/// An operand of a binary op.
#[derive(Clone)]
enum Operand {
    /// A function input of this shape.
    Input(Vec<usize>),
    /// An inline fp16 tensor constant of this shape.
    Const(Vec<usize>),
    /// A scalar fp16 constant.
    Scalar,
}

impl Operand {
    fn shape(&self) -> Vec<usize> {
        match self {
            Operand::Input(s) | Operand::Const(s) => s.clone(),
            Operand::Scalar => vec![],
        }
    }
}

/// How operand values are drawn.
#[derive(Clone, Copy)]
enum Draw {
    Uniform(f64, f64),
    /// Magnitude in [lo, hi), random sign.
    Signed(f64, f64),
    Ints(i64, i64),
}

fn draw(rng: &mut Rng, n: usize, d: Draw) -> Vec<f32> {
    match d {
        Draw::Uniform(lo, hi) => rng.fp16s(n, lo, hi),
        Draw::Signed(lo, hi) => rng.signed_fp16s(n, lo, hi),
        Draw::Ints(lo, hi) => rng.ints(n, lo, hi),
    }
}

fn binary_reference(kind: OpKind, a: f64, b: f64) -> f64 {
    match kind {
        OpKind::Add => a + b,
        OpKind::Sub => a - b,
        OpKind::Mul => a * b,
        OpKind::RealDiv => a / b,
        OpKind::Pow => a.powf(b),
        OpKind::Maximum => {
            if a > b {
                a
            } else {
                b
            }
        }
        OpKind::Minimum => {
            if a < b {
                a
            } else {
                b
            }
        }
        other => panic!("{other} is not binary"),
    }
}

/// Runs `kind(x, y)` and compares with the f64 reference rounded once, within `ulps`.
fn check_binary(kind: OpKind, x: Operand, y: Operand, draws: (Draw, Draw), ulps: f64, seed: u64) {
    let what = format!("{kind} {:?} {:?}", x.shape(), y.shape());
    let mut rng = Rng::new(seed);
    let (xs, ys) = (x.shape(), y.shape());
    let xv = draw(&mut rng, numel(&xs), draws.0);
    let yv = draw(&mut rng, numel(&ys), draws.1);
    let mut inputs = Vec::new();
    for (name, op, values) in [("x", &x, &xv), ("y", &y, &yv)] {
        if let Operand::Input(s) = op {
            inputs.push(input_f16(name, s, values.clone()));
        }
    }
    let out = run(&inputs, |f, v| {
        let mut v = v.iter();
        let mut operand = |name: &str, op: &Operand, values: &[f32]| match op {
            Operand::Input(_) => v.next().unwrap().clone(),
            Operand::Const(s) => f.tensor_fp16(name, s, values).unwrap(),
            Operand::Scalar => f.scalar_fp16(name, values[0]),
        };
        let (a, b) = (operand("x", &x, &xv), operand("y", &y, &yv));
        vec![f.binary(kind, &a, &b).unwrap()]
    });
    let shape = broadcast(&xs, &ys);
    let exact: Vec<f64> = (0..numel(&shape))
        .map(|i| {
            let idx = unravel(i, &shape);
            let a = f64::from(xv[broadcast_index(&idx, &xs)]);
            let b = f64::from(yv[broadcast_index(&idx, &ys)]);
            binary_reference(kind, a, b)
        })
        .collect();
    let want: Vec<f64> = exact.iter().map(|&e| fp16(e)).collect();
    if ulps == 0.0 {
        assert_exact(&what, &out[0], &shape, &want);
    } else {
        assert_close(&what, &out[0], &shape, &want, |i| ulps * ulp(exact[i]));
    }
}

/// The broadcasting patterns every binary op is tried with.
fn operand_pairs() -> Vec<(Operand, Operand)> {
    use Operand::*;
    vec![
        (Input(vec![2, 3, 4]), Input(vec![2, 3, 4])),
        (Input(vec![3, 1]), Input(vec![1, 4])),
        (Input(vec![2, 3, 4]), Input(vec![4])),
        (Input(vec![1, 3, 1]), Input(vec![2, 1, 5])),
        (Input(vec![2, 3]), Scalar),
        (Scalar, Input(vec![3, 2])),
        (Input(vec![17]), Input(vec![1])),
        (Input(vec![1]), Input(vec![1])),
        (Const(vec![3, 1]), Input(vec![2, 3, 5])),
        (Input(vec![2, 3, 5]), Const(vec![5])),
    ]
}

fn check_binary_everywhere(kind: OpKind, draws: (Draw, Draw), ulps: f64, seed: u64) {
    for (i, (x, y)) in operand_pairs().into_iter().enumerate() {
        check_binary(kind, x, y, draws, ulps, seed + i as u64);
    }
}

#[test]
fn add_sub_mul_broadcast_exactly() {
    let d = (Draw::Uniform(-4.0, 4.0), Draw::Uniform(-4.0, 4.0));
    check_binary_everywhere(OpKind::Add, d, 0.0, 200);
    check_binary_everywhere(OpKind::Sub, d, 0.0, 220);
    check_binary_everywhere(OpKind::Mul, d, 0.0, 240);
    // Operands far apart in magnitude.
    let d = (Draw::Signed(1000.0, 60000.0), Draw::Signed(1e-3, 1.0));
    check_binary_everywhere(OpKind::Add, d, 0.0, 260);
    check_binary_everywhere(OpKind::Sub, d, 0.0, 280);
}

#[test]
fn real_div_is_correctly_rounded() {
    let d = (Draw::Uniform(-8.0, 8.0), Draw::Signed(0.25, 4.0));
    check_binary_everywhere(OpKind::RealDiv, d, 0.0, 300);
}

#[test]
fn maximum_and_minimum() {
    let d = (Draw::Uniform(-4.0, 4.0), Draw::Uniform(-4.0, 4.0));
    check_binary_everywhere(OpKind::Maximum, d, 0.0, 320);
    check_binary_everywhere(OpKind::Minimum, d, 0.0, 340);
}

#[test]
fn pow_within_one_ulp() {
    check_binary_everywhere(
        OpKind::Pow,
        (Draw::Uniform(0.1, 4.0), Draw::Uniform(-2.0, 2.0)),
        1.0,
        360,
    );
    // Negative bases with integer exponents.
    check_binary_everywhere(OpKind::Pow, (Draw::Uniform(-3.0, -0.1), Draw::Ints(-2, 3)), 1.0, 380);
}

#[test]
fn elementwise_overflow_past_65504_and_subnormal_results() {
    let p = |e: i32| 2f32.powi(e);
    let pairs: Vec<(f32, f32)> = vec![
        (60000.0, 10000.0),   // 70000: inf
        (-60000.0, -10000.0), // -inf
        (65504.0, 8.0),       // 65512 rounds down to 65504
        (65504.0, 16.0),      // 65520 is the midpoint: ties to 65536, which is inf
        (40000.0, 25504.0),   // exactly the largest finite value
        (32768.0, 32768.0),   // 65536: inf (add saturates at 65504, not at 2^15)
        (65504.0, -65504.0),  // +0
        (p(-14), p(-24)),     // a normal plus a subnormal
        (-p(-20), p(-24)),
    ];
    let (x, y): (Vec<f32>, Vec<f32>) = pairs.iter().copied().unzip();
    let n = x.len();
    let out = run(&[input_f16("x", &[n], x.clone()), input_f16("y", &[n], y.clone())], |f, v| {
        vec![f.add(&v[0], &v[1]).unwrap()]
    });
    let want: Vec<f64> = pairs.iter().map(|&(a, b)| fp16(f64::from(a) + f64::from(b))).collect();
    assert_exact("add overflow", &out[0], &[n], &want);
    assert_eq!(want[..4], [f64::INFINITY, f64::NEG_INFINITY, 65504.0, f64::INFINITY]);

    // Products: overflow, and subnormal results kept, rounding ties to even.
    let pairs: Vec<(f32, f32)> = vec![
        (256.0, 256.0),         // 65536: inf
        (255.875, 256.0),       // 65504
        (-300.0, 300.0),        // -inf
        (p(-12), p(-12)),       // 2^-24, the smallest subnormal
        (p(-13), p(-12)),       // 2^-25: ties to the even 0
        (3.0 * p(-13), p(-12)), // 1.5 * 2^-24: ties to the even 2^-23
        (-p(-13), p(-12)),      // -0
        (p(-7), 0.75 * p(-10)), // 0.75 * 2^-17, a subnormal exactly
    ];
    let (x, y): (Vec<f32>, Vec<f32>) = pairs.iter().copied().unzip();
    let n = x.len();
    let out = run(&[input_f16("x", &[n], x), input_f16("y", &[n], y)], |f, v| {
        vec![f.mul(&v[0], &v[1]).unwrap()]
    });
    let want: Vec<f64> = pairs.iter().map(|&(a, b)| fp16(f64::from(a) * f64::from(b))).collect();
    assert_exact("mul overflow and subnormals", &out[0], &[n], &want);
    assert_eq!(want[4..7], [0.0, 2f64.powi(-23), -0.0]);
}

#[test]
fn elementwise_nan_inputs_read_as_inf_and_indeterminate_forms_give_zero() {
    // The documented fp16 rules (REFERENCE.md §3): a NaN read by the datapath is +inf, and
    // an indeterminate result (inf - inf, 0 * inf, sqrt(-1)) is stored as +0.
    let x = vec![f32::NAN, f32::INFINITY, 0.0, f32::NAN, 2.0];
    let y = vec![1.0, f32::NEG_INFINITY, f32::INFINITY, f32::NEG_INFINITY, 3.0];
    let out = run(&[input_f16("x", &[5], x), input_f16("y", &[5], y)], |f, v| {
        let sum = f.add(&v[0], &v[1]).unwrap();
        let prod = f.mul(&v[0], &v[1]).unwrap();
        let neg = f.scalar_fp16("neg", -1.0);
        let shifted = f.mul(&v[0], &neg).unwrap();
        let root = f.unary(OpKind::Sqrt, &shifted).unwrap();
        vec![sum, prod, root]
    });
    let inf = f64::INFINITY;
    // x + y: inf + 1, inf - inf, 0 + inf, inf - inf, 5.
    assert_exact("add", &out[0], &[5], &[inf, 0.0, inf, 0.0, 5.0]);
    // x * y: inf * 1, inf * -inf, 0 * inf, inf * -inf, 6.
    assert_exact("mul", &out[1], &[5], &[inf, -inf, 0.0, -inf, 6.0]);
    // sqrt(-x): sqrt(-inf), sqrt(-inf), sqrt(-0), sqrt(-inf), sqrt(-2).
    assert_exact("sqrt", &out[2], &[5], &[0.0, 0.0, -0.0, 0.0, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// Elementwise unary ops

/// erfc in f64: the Maclaurin series of erf for |x| < 2.5 (terms up to e^6.25 in size, so
/// ~1e-13 absolute error, 1e-10 relative at worst), a continued fraction beyond (~1e-13
/// relative).
fn erfc(x: f64) -> f64 {
    if x.abs() < 2.5 {
        let (x2, mut term, mut sum) = (x * x, x, x);
        for n in 1..80 {
            term *= -x2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        1.0 - sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if x > 0.0 {
        // erfc x = e^(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...)))).
        let mut f = x;
        for n in (1..=120).rev() {
            f = x + (n as f64 / 2.0) / f;
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    } else {
        2.0 - erfc(-x)
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Runs a unary op with extra constant inputs on `x` and compares with `reference` rounded
/// once, within `ulps` (0: exact).
fn check_unary(
    what: &str,
    kind: OpKind,
    extra: &[(&str, Literal)],
    x: &[f32],
    reference: impl Fn(f64) -> f64,
    ulps: f64,
) {
    let shape = [x.len()];
    let out = run(&[input_f16("x", &shape, x.to_vec())], |f, v| {
        let mut args: Vec<(&str, Arg)> = vec![("x", (&v[0]).into())];
        args.extend(extra.iter().map(|(n, l)| (*n, Arg::from(l.clone()))));
        vec![f.op1(kind, kind.name(), &args).unwrap()]
    });
    let exact: Vec<f64> = x.iter().map(|&v| reference(f64::from(v))).collect();
    let want: Vec<f64> = exact.iter().map(|&e| fp16(e)).collect();
    if ulps == 0.0 {
        assert_exact(what, &out[0], &shape, &want);
    } else {
        assert_close(what, &out[0], &shape, &want, |i| ulps * ulp(exact[i]));
    }
}

/// `n` random fp16 values in [lo, hi) followed by `extra`.
fn values(seed: u64, n: usize, lo: f64, hi: f64, extra: &[f32]) -> Vec<f32> {
    let mut v = Rng::new(seed).fp16s(n, lo, hi);
    v.extend(extra.iter().map(|&e| fp16(f64::from(e)) as f32));
    v
}

#[test]
fn exp_within_one_ulp_and_overflows_past_11_09() {
    // exp(11.0) = 59874 is finite, exp(11.1015625) = 66274 is inf; exp(-17) is subnormal,
    // exp(-20) rounds to 0.
    let x = values(400, 48, -10.0, 10.0, &[0.0, 11.0, 11.1015625, -17.0, -20.0, 1.0]);
    check_unary("exp", OpKind::Exp, &[], &x, f64::exp, 1.0);
}

#[test]
fn log_within_one_ulp() {
    // The default epsilon (1e-45) is below fp16 and f32 resolution for these inputs.
    let x = values(410, 48, 0.001, 100.0, &[1.0, 2.0, 65504.0, 6.1e-5]);
    check_unary("log", OpKind::Log, &[], &x, f64::ln, 1.0);
}

#[test]
fn log_adds_its_epsilon() {
    // log(x + epsilon) (coremltools iOS17 elementwise_unary.py), as for rsqrt and inverse; the
    // registry resolves the epsilon in `EpsilonParams`.
    let x = values(415, 31, 0.0, 10.0, &[0.0]);
    check_unary(
        "log eps 1",
        OpKind::Log,
        &[("epsilon", Literal::fp16(1.0))],
        &x,
        |v| (v + 1.0).ln(),
        1.0,
    );
}

#[test]
fn sqrt_is_correctly_rounded() {
    let x = values(420, 48, 0.0, 100.0, &[0.0, 2.0, 65504.0, 1e-7, 2.0f32.powi(-24)]);
    check_unary("sqrt", OpKind::Sqrt, &[], &x, f64::sqrt, 0.0);
}

#[test]
fn rsqrt_with_default_and_custom_epsilon() {
    let x = values(430, 40, 0.01, 100.0, &[1.0, 4.0, 0.25]);
    check_unary("rsqrt", OpKind::Rsqrt, &[], &x, |v| 1.0 / (v + 1e-12).sqrt(), 1.0);
    let x = values(431, 30, 0.0, 4.0, &[0.0]);
    let eps = [("epsilon", Literal::fp16(0.25))];
    check_unary("rsqrt eps 0.25", OpKind::Rsqrt, &eps, &x, |v| 1.0 / (v + 0.25).sqrt(), 1.0);
}

#[test]
fn inverse_with_default_and_custom_epsilon() {
    let mut x = values(440, 24, 0.1, 10.0, &[1.0, 0.5]);
    x.extend(values(441, 24, -10.0, -0.1, &[-1.0]));
    check_unary("inverse", OpKind::Inverse, &[], &x, |v| 1.0 / (v + 1e-4), 1.0);
    let x = values(442, 30, 0.0, 4.0, &[0.0]);
    let eps = [("epsilon", Literal::fp16(0.5))];
    check_unary("inverse eps 0.5", OpKind::Inverse, &eps, &x, |v| 1.0 / (v + 0.5), 1.0);
}

#[test]
fn tanh_sigmoid_silu_within_one_ulp() {
    let x = values(450, 64, -8.0, 8.0, &[0.0, 1e-3, -1e-3, 12.0, -12.0]);
    check_unary("tanh", OpKind::Tanh, &[], &x, f64::tanh, 1.0);
    check_unary("sigmoid", OpKind::Sigmoid, &[], &x, sigmoid, 1.0);
    check_unary("silu", OpKind::Silu, &[], &x, |v| v * sigmoid(v), 1.0);
    let x = values(451, 17, -30.0, 30.0, &[-16.0, 16.0]);
    check_unary("sigmoid wide", OpKind::Sigmoid, &[], &x, sigmoid, 1.0);
    check_unary("silu wide", OpKind::Silu, &[], &x, |v| v * sigmoid(v), 1.0);
}

#[test]
fn relu_is_exact() {
    let x = values(460, 33, -4.0, 4.0, &[0.0, -65504.0, 65504.0, -1e-7, 1e-7]);
    check_unary("relu", OpKind::Relu, &[], &x, |v| if v < 0.0 { 0.0 } else { v }, 0.0);
}

#[test]
fn gelu_modes_within_one_ulp() {
    let x = values(470, 96, -6.0, 6.0, &[0.0, 1.0, -1.0, 2.5, -2.5]);
    let exact = |v: f64| 0.5 * v * erfc(-v / std::f64::consts::SQRT_2);
    check_unary("gelu default", OpKind::Gelu, &[], &x, exact, 1.0);
    let mode = |m: &str| [("mode", Literal::string(m))];
    check_unary("gelu EXACT", OpKind::Gelu, &mode("EXACT"), &x, exact, 1.0);
    let tanh_approx = |v: f64| {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
    };
    check_unary("gelu TANH", OpKind::Gelu, &mode("TANH_APPROXIMATION"), &x, tanh_approx, 1.0);
    let sigmoid_approx = |v: f64| v * sigmoid(1.702 * v);
    check_unary(
        "gelu SIGMOID",
        OpKind::Gelu,
        &mode("SIGMOID_APPROXIMATION"),
        &x,
        sigmoid_approx,
        1.0,
    );
    // The exact form far into the negative tail, where 1 + erf cancels (the result is tiny
    // but in range), and the positive side where it tends to x.
    let x = values(471, 16, -5.0, -3.0, &[6.0, 10.0]);
    check_unary("gelu tails", OpKind::Gelu, &[], &x, exact, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Data movement: reshape, transpose, slices, concat, split. Elements move bit for bit.

/// Distinct fp16 values 0.25 * (i - n / 2), exact.
fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.25 * (i as f32 - (n / 2) as f32)).collect()
}

fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn reshape_with_minus_one_and_zero() {
    let x = iota(24);
    let out = run(&[input_f16("x", &[2, 3, 4], x.clone())], |f, v| {
        let a = f.reshape(&v[0], &[0, -1, 2]).unwrap();
        let b = f.reshape(&v[0], &[-1, 4, 1, 2]).unwrap();
        // A computed value reshaped, then used by another op.
        let two = f.scalar_fp16("two", 2.0);
        let doubled = f.mul(&v[0], &two).unwrap();
        let c = f.reshape(&doubled, &[4, 0, -1]).unwrap();
        let d = f.reshape(&c, &[24]).unwrap();
        let one = f.scalar_fp16("one", 1.0);
        let e = f.add(&d, &one).unwrap();
        vec![a, b, c, e]
    });
    assert_exact("reshape [0, -1, 2]", &out[0], &[2, 6, 2], &as_f64(&x));
    assert_exact("reshape [-1, 4, 1, 2]", &out[1], &[3, 4, 1, 2], &as_f64(&x));
    let doubled: Vec<f64> = x.iter().map(|&v| 2.0 * f64::from(v)).collect();
    assert_exact("reshape [4, 0, -1]", &out[2], &[4, 3, 2], &doubled);
    let plus_one: Vec<f64> = doubled.iter().map(|&v| v + 1.0).collect();
    assert_exact("reshape then add", &out[3], &[24], &plus_one);
}

/// out[i] = x[j] where j[perm[k]] = i[k].
fn transpose_reference(x: &[f32], shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<f64>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let want = (0..numel(&out_shape))
        .map(|i| {
            let oi = unravel(i, &out_shape);
            let mut xi = vec![0; shape.len()];
            for (k, &p) in perm.iter().enumerate() {
                xi[p] = oi[k];
            }
            f64::from(x[ravel(&xi, shape)])
        })
        .collect();
    (out_shape, want)
}

#[test]
fn transpose_rank_4() {
    let shape = [2, 3, 4, 5];
    let x = iota(120);
    let out = run(&[input_f16("x", &shape, x.clone())], |f, v| {
        vec![
            f.transpose(&v[0], &[2, 0, 3, 1]).unwrap(),
            // Negative entries count from the end: [3, 1, 0, 2].
            f.transpose(&v[0], &[-1, 1, 0, -2]).unwrap(),
            f.transpose(&v[0], &[0, 1, 3, 2]).unwrap(),
        ]
    });
    for (o, perm) in out.iter().zip([[2, 0, 3, 1], [3, 1, 0, 2], [0, 1, 3, 2]]) {
        let (s, want) = transpose_reference(&x, &shape, &perm);
        assert_exact(&format!("transpose {perm:?}"), o, &s, &want);
    }
}

/// The elements of `x` at the per-axis index lists `picks`; axes in `squeeze` are dropped
/// from the shape.
fn gather(
    x: &[f32],
    shape: &[usize],
    picks: &[Vec<usize>],
    squeeze: &[bool],
) -> (Vec<usize>, Vec<f64>) {
    let full: Vec<usize> = picks.iter().map(Vec::len).collect();
    let want = (0..numel(&full))
        .map(|i| {
            let oi = unravel(i, &full);
            let xi: Vec<usize> = oi.iter().zip(picks).map(|(&o, p)| p[o]).collect();
            f64::from(x[ravel(&xi, shape)])
        })
        .collect();
    let out_shape = full.iter().zip(squeeze).filter(|(_, s)| !**s).map(|(&d, _)| d).collect();
    (out_shape, want)
}

#[test]
fn slice_by_size_with_negative_begin_and_size_minus_one() {
    let shape = [3, 5, 7];
    let x = iota(105);
    let out = run(&[input_f16("x", &shape, x.clone())], |f, v| {
        vec![
            f.slice_by_size(&v[0], &[1, 0, 2], &[2, -1, 3]).unwrap(),
            f.slice_by_size(&v[0], &[-2, 1, 0], &[-1, 3, -1]).unwrap(),
            f.slice_by_size(&v[0], &[2, 4, 6], &[1, 1, 1]).unwrap(),
        ]
    });
    let r = |a: usize, b: usize| (a..b).collect::<Vec<_>>();
    let cases =
        [[r(1, 3), r(0, 5), r(2, 5)], [r(1, 3), r(1, 4), r(0, 7)], [r(2, 3), r(4, 5), r(6, 7)]];
    for (k, (o, picks)) in out.iter().zip(cases).enumerate() {
        let (s, want) = gather(&x, &shape, &picks, &[false; 3]);
        assert_exact(&format!("slice_by_size {k}"), o, &s, &want);
    }
}

/// Python slicing of one axis of size `dim`: the indices taken. (coremltools clamps a negative
/// end at 0 where Python clamps it at -1 for negative strides; the cases below avoid that
/// corner.)
fn python_slice(
    dim: usize,
    begin: i64,
    end: i64,
    stride: i64,
    bmask: bool,
    emask: bool,
) -> Vec<usize> {
    let d = dim as i64;
    let mut out = Vec::new();
    if stride > 0 {
        let clamp = |v: i64| if v < 0 { (v + d).max(0) } else { v.min(d) };
        let start = if bmask { 0 } else { clamp(begin) };
        let stop = if emask { d } else { clamp(end) };
        let mut i = start;
        while i < stop {
            out.push(i as usize);
            i += stride;
        }
    } else {
        let clamp = |v: i64| if v < 0 { (v + d).max(-1) } else { v.min(d - 1) };
        let start = if bmask { d - 1 } else { clamp(begin) };
        let stop = if emask { -1 } else { clamp(end) };
        let mut i = start;
        while i > stop {
            out.push(i as usize);
            i += stride;
        }
    }
    out
}

fn bools(v: &[bool]) -> Literal {
    Literal::tensor(Type::tensor(DType::Bool, [v.len()]), TensorData::Bool(v.to_vec()))
}

/// One slice_by_index call.
struct ByIndex {
    begin: [i32; 3],
    end: [i32; 3],
    stride: [i32; 3],
    begin_mask: [bool; 3],
    end_mask: [bool; 3],
    squeeze: [bool; 3],
}

#[test]
fn slice_by_index_with_negative_indices_strides_masks_and_squeeze() {
    let shape = [4, 6, 5];
    let x = iota(120);
    let f3 = [false; 3];
    let cases = [
        // Negative begin and end, stride 2 on the middle axis.
        ByIndex {
            begin: [1, -5, 0],
            end: [-1, 6, 5],
            stride: [1, 2, 1],
            begin_mask: f3,
            end_mask: f3,
            squeeze: f3,
        },
        // Masks replace begin (axis 0) and end (axis 2).
        ByIndex {
            begin: [3, 2, 4],
            end: [2, 5, 0],
            stride: [1, 1, 1],
            begin_mask: [true, false, false],
            end_mask: [false, false, true],
            squeeze: f3,
        },
        // Reversed with stride -2 from the last element, and stride -1 from 4 down to 2.
        ByIndex {
            begin: [0, -1, 4],
            end: [0, 0, 1],
            stride: [1, -2, -1],
            begin_mask: [true, false, false],
            end_mask: [true, true, false],
            squeeze: f3,
        },
        // Squeezed axes take the single element at begin (negative counts from the end).
        ByIndex {
            begin: [-1, 0, 2],
            end: [0, 6, 3],
            stride: [1, 1, 1],
            begin_mask: f3,
            end_mask: f3,
            squeeze: [true, false, true],
        },
        // Stride 3, past-the-end end, and a squeeze in the middle.
        ByIndex {
            begin: [0, 1, -4],
            end: [100, 2, 100],
            stride: [3, 1, 3],
            begin_mask: f3,
            end_mask: f3,
            squeeze: [false, true, false],
        },
    ];
    let out = run(&[input_f16("x", &shape, x.clone())], |f, v| {
        cases
            .iter()
            .map(|c| {
                f.op1(
                    OpKind::SliceByIndex,
                    "slice",
                    &[
                        ("x", (&v[0]).into()),
                        ("begin", Literal::int32_list(&c.begin).into()),
                        ("end", Literal::int32_list(&c.end).into()),
                        ("stride", Literal::int32_list(&c.stride).into()),
                        ("begin_mask", bools(&c.begin_mask).into()),
                        ("end_mask", bools(&c.end_mask).into()),
                        ("squeeze_mask", bools(&c.squeeze).into()),
                    ],
                )
                .unwrap()
            })
            .collect()
    });
    for (k, (o, c)) in out.iter().zip(&cases).enumerate() {
        let picks: Vec<Vec<usize>> = (0..3)
            .map(|a| {
                if c.squeeze[a] {
                    let b = i64::from(c.begin[a]);
                    vec![if b < 0 { (b + shape[a] as i64) as usize } else { b as usize }]
                } else {
                    let (b, e, s) = (c.begin[a].into(), c.end[a].into(), c.stride[a].into());
                    python_slice(shape[a], b, e, s, c.begin_mask[a], c.end_mask[a])
                }
            })
            .collect();
        let (s, want) = gather(&x, &shape, &picks, &c.squeeze);
        assert_exact(&format!("slice_by_index case {k}"), o, &s, &want);
    }
}

#[test]
fn concat_on_the_last_axis_and_interleaved() {
    let sizes = [1, 3, 17];
    let parts: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &s)| iota(6 * s).iter().map(|v| v + 100.0 * k as f32).collect())
        .collect();
    let inputs: Vec<Input> = sizes
        .iter()
        .zip(&parts)
        .enumerate()
        .map(|(k, (&s, p))| input_f16(&format!("p{k}"), &[2, 3, s], p.clone()))
        .collect();
    let out = run(&inputs, |f, v| vec![f.concat(v, -1, false).unwrap()]);
    let mut want = Vec::new();
    for row in 0..6 {
        for (p, &s) in parts.iter().zip(&sizes) {
            want.extend(p[row * s..(row + 1) * s].iter().map(|&v| f64::from(v)));
        }
    }
    assert_exact("concat axis -1", &out[0], &[2, 3, 21], &want);

    // interleave: along axis 1, output index j * 3 + i holds values[i] at index j.
    let shape = [2, 2, 3];
    let parts: Vec<Vec<f32>> =
        (0..3).map(|k| iota(12).iter().map(|v| v + 100.0 * k as f32).collect()).collect();
    let inputs: Vec<Input> = parts
        .iter()
        .enumerate()
        .map(|(k, p)| input_f16(&format!("p{k}"), &shape, p.clone()))
        .collect();
    let out = run(&inputs, |f, v| {
        vec![
            f.concat(v, 1, true).unwrap(),
            f.concat(v, -1, true).unwrap(),
            f.concat(v, 0, false).unwrap(),
        ]
    });
    for (o, axis) in out.iter().zip([1, 2]) {
        let mut out_shape = shape;
        out_shape[axis] *= 3;
        let want: Vec<f64> = (0..36)
            .map(|i| {
                let mut idx = unravel(i, &out_shape);
                let part = idx[axis] % 3;
                idx[axis] /= 3;
                f64::from(parts[part][ravel(&idx, &shape)])
            })
            .collect();
        assert_exact(&format!("concat interleave axis {axis}"), o, &out_shape, &want);
    }
    let want: Vec<f64> = parts.iter().flatten().map(|&v| f64::from(v)).collect();
    assert_exact("concat axis 0", &out[2], &[6, 2, 3], &want);
}

#[test]
fn split_by_count_and_by_sizes() {
    let x = iota(24);
    let out = run(&[input_f16("x", &[6, 4], x.clone())], |f, v| {
        f.op(
            OpKind::Split,
            "split",
            &[
                ("x", (&v[0]).into()),
                ("num_splits", Literal::int32(3).into()),
                ("axis", Literal::int32(0).into()),
            ],
        )
        .unwrap()
    });
    assert_eq!(out.len(), 3);
    for (k, o) in out.iter().enumerate() {
        assert_exact(&format!("split {k}/3"), o, &[2, 4], &as_f64(&x[k * 8..(k + 1) * 8]));
    }

    let x = iota(21);
    let out = run(&[input_f16("x", &[3, 7], x.clone())], |f, v| {
        f.op(
            OpKind::Split,
            "split",
            &[
                ("x", (&v[0]).into()),
                ("split_sizes", Literal::int32_list(&[1, 2, 4]).into()),
                ("axis", Literal::int32(-1).into()),
            ],
        )
        .unwrap()
    });
    let mut start = 0;
    for (k, (o, s)) in out.iter().zip([1, 2, 4]).enumerate() {
        let picks = [vec![0, 1, 2], (start..start + s).collect()];
        let (shape, want) = gather(&x, &[3, 7], &picks, &[false; 2]);
        assert_exact(&format!("split_sizes part {k}"), o, &shape, &want);
        start += s;
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions

/// Per output element: sum, sum|x|, max and count, over `axes` of `shape`.
struct Reduced {
    shape: Vec<usize>,
    sum: Vec<f64>,
    abs: Vec<f64>,
    max: Vec<f64>,
    count: usize,
}

fn reduce_reference(x: &[f32], shape: &[usize], axes: &[i32], keep_dims: bool) -> Reduced {
    let rank = shape.len() as i32;
    let axes: Vec<usize> =
        axes.iter().map(|&a| if a < 0 { a + rank } else { a } as usize).collect();
    let kept: Vec<usize> =
        shape.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
    let m = numel(&kept);
    let (mut sum, mut abs, mut max) = (vec![0.0; m], vec![0.0; m], vec![f64::NEG_INFINITY; m]);
    for (i, &v) in x.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &a in &axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &kept);
        let v = f64::from(v);
        sum[o] += v;
        abs[o] += v.abs();
        max[o] = max[o].max(v);
    }
    let out_shape = if keep_dims {
        kept
    } else {
        shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect()
    };
    Reduced { shape: out_shape, sum, abs, max, count: numel(shape) / m }
}

#[test]
fn reduce_sum_mean_max_over_several_and_negative_axes() {
    let shape = [2, 3, 4, 5];
    let x = Rng::new(500).fp16s(120, -2.0, 2.0);
    let cases: [(OpKind, &[i32], bool); 9] = [
        (OpKind::ReduceSum, &[1, -1], true),
        (OpKind::ReduceSum, &[1, -1], false),
        (OpKind::ReduceSum, &[0, 1, 2, 3], true),
        (OpKind::ReduceMean, &[0, 2], false),
        (OpKind::ReduceMean, &[-3], true),
        (OpKind::ReduceMean, &[-4, -3, -2, -1], true),
        (OpKind::ReduceMax, &[-1, -2], false),
        (OpKind::ReduceMax, &[3, 0, 1, 2], true),
        (OpKind::ReduceMax, &[2], false),
    ];
    let out = run(&[input_f16("x", &shape, x.clone())], |f, v| {
        cases.iter().map(|&(kind, axes, keep)| f.reduce(kind, &v[0], axes, keep).unwrap()).collect()
    });
    for (o, &(kind, axes, keep)) in out.iter().zip(&cases) {
        let what = format!("{kind} axes {axes:?} keep_dims {keep}");
        let r = reduce_reference(&x, &shape, axes, keep);
        let n = r.count as f64;
        match kind {
            OpKind::ReduceMax => {
                let want: Vec<f64> = r.max.iter().map(|&m| fp16(m)).collect();
                assert_exact(&what, o, &r.shape, &want);
            }
            OpKind::ReduceSum => {
                let want: Vec<f64> = r.sum.iter().map(|&s| fp16(s)).collect();
                assert_close(&what, o, &r.shape, &want, |i| {
                    dot_tolerance(r.sum[i], r.abs[i], r.count)
                });
            }
            _ => {
                // The f32 sum's error, divided by n, plus one f32 rounding of the quotient.
                let mean: Vec<f64> = r.sum.iter().map(|&s| s / n).collect();
                let want: Vec<f64> = mean.iter().map(|&m| fp16(m)).collect();
                assert_close(&what, o, &r.shape, &want, |i| {
                    dot_tolerance(mean[i], r.abs[i] / n, r.count + 1)
                });
            }
        }
    }
}

#[test]
fn reduce_odd_sizes_and_overflow() {
    // 17 and 1 elements; a sum that passes 65504 is inf (reductions overflow at the fp16
    // limit, not at 2^15).
    let x = Rng::new(510).fp16s(17, -1.0, 1.0);
    let out = run(
        &[
            input_f16("x", &[17], x.clone()),
            input_f16("y", &[1, 1], vec![-3.5]),
            input_f16("z", &[2, 2], vec![40000.0, 30000.0, 20000.0, 30000.0]),
        ],
        |f, v| {
            vec![
                f.reduce(OpKind::ReduceSum, &v[0], &[0], true).unwrap(),
                f.reduce(OpKind::ReduceMax, &v[1], &[-1], false).unwrap(),
                f.reduce(OpKind::ReduceSum, &v[2], &[1], false).unwrap(),
            ]
        },
    );
    let r = reduce_reference(&x, &[17], &[0], true);
    assert_close("sum of 17", &out[0], &[1], &[fp16(r.sum[0])], |_| {
        dot_tolerance(r.sum[0], r.abs[0], 17)
    });
    assert_exact("max of 1", &out[1], &[1], &[-3.5]);
    // 20000 + 30000 = 50000 is a tie between 49984 and 50016: the even 49984.
    assert_exact("sum overflow", &out[2], &[2], &[f64::INFINITY, 49984.0]);
}

// ---------------------------------------------------------------------------------------------
// softmax

/// softmax along `axis` in f64, with the max subtracted.
fn softmax_reference(x: &[f32], shape: &[usize], axis: usize) -> Vec<f64> {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0.0; x.len()];
    for outer in 0..x.len() / (n * inner) {
        for j in 0..inner {
            let at = |k: usize| outer * n * inner + k * inner + j;
            let max = (0..n).map(|k| f64::from(x[at(k)])).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..n).map(|k| (f64::from(x[at(k)]) - max).exp()).sum();
            for k in 0..n {
                out[at(k)] = (f64::from(x[at(k)]) - max).exp() / z;
            }
        }
    }
    out
}

#[test]
fn softmax_on_axis_1_and_minus_1_within_one_ulp() {
    let shape = [2, 5, 7];
    let x = Rng::new(600).fp16s(70, -4.0, 4.0);
    let out = run(&[input_f16("x", &shape, x.clone())], |f, v| {
        vec![
            f.softmax(&v[0], 1).unwrap(),
            f.softmax(&v[0], -1).unwrap(),
            f.softmax(&v[0], -3).unwrap(),
        ]
    });
    for (o, axis) in out.iter().zip([1, 2, 0]) {
        let exact = softmax_reference(&x, &shape, axis);
        let want: Vec<f64> = exact.iter().map(|&e| fp16(e)).collect();
        assert_close(&format!("softmax axis {axis}"), o, &shape, &want, |i| ulp(exact[i]));
    }
}

#[test]
fn softmax_subtracts_the_max() {
    // [1000, 1, 2, 3] -> [1, 0, 0, 0] exactly, where exp(1000) alone would overflow.
    let x = vec![1000.0, 1.0, 2.0, 3.0, -1000.0, -1001.0, -1002.0, -999.0];
    let out =
        run(&[input_f16("x", &[2, 4], x.clone())], |f, v| vec![f.softmax(&v[0], -1).unwrap()]);
    let exact = softmax_reference(&x, &[2, 4], 1);
    assert_eq!(exact[..4], [1.0, 0.0, 0.0, 0.0]);
    let want: Vec<f64> = exact.iter().map(|&e| fp16(e)).collect();
    assert_close("softmax large", &out[0], &[2, 4], &want, |i| ulp(exact[i]));
    assert_eq!(out[0].values()[..4], [1.0, 0.0, 0.0, 0.0], "softmax [1000, 1, 2, 3]");

    // Odd sizes: 17 along the axis, and an axis of size 1 (all ones).
    let x = Rng::new(601).fp16s(51, -8.0, 8.0);
    let out = run(
        &[input_f16("x", &[3, 17], x.clone()), input_f16("y", &[3, 1], vec![5.0, -2.0, 0.0])],
        |f, v| vec![f.softmax(&v[0], 1).unwrap(), f.softmax(&v[1], 1).unwrap()],
    );
    let exact = softmax_reference(&x, &[3, 17], 1);
    let want: Vec<f64> = exact.iter().map(|&e| fp16(e)).collect();
    assert_close("softmax 17", &out[0], &[3, 17], &want, |i| ulp(exact[i]));
    assert_exact("softmax of one", &out[1], &[3, 1], &[1.0, 1.0, 1.0]);
}

// ---------------------------------------------------------------------------------------------
// scaled_dot_product_attention

#[test]
fn sdpa_matches_a_decomposed_f64_reference() {
    let (b, h, l, s, e, ev) = (2, 3, 5, 7, 8, 6);
    let mut rng = Rng::new(700);
    let q = rng.fp16s(b * h * l * e, -1.0, 1.0);
    let k = rng.fp16s(b * h * s * e, -1.0, 1.0);
    let v = rng.fp16s(b * h * s * ev, -1.0, 1.0);
    let inputs = [
        input_f16("q", &[b, h, l, e], q.clone()),
        input_f16("k", &[b, h, s, e], k.clone()),
        input_f16("v", &[b, h, s, ev], v.clone()),
    ];
    let out = run(&inputs, |f, x| {
        let args = [("query", (&x[0]).into()), ("key", (&x[1]).into()), ("value", (&x[2]).into())];
        vec![f.op1(OpKind::ScaledDotProductAttention, "att", &args).unwrap()]
    });
    // Decomposed in f64: scores = Q K^T / sqrt(E), p = softmax(scores), out = p V.
    //
    // Tolerance: the simulator stores the scores in fp16 after Q K^T and again after the
    // scale (which is itself fp16(1/sqrt(8)), so each scaled score z carries a relative error
    // of at most 3 * 2^-11 (plus f32 accumulation, far smaller): |dz| <= d = 3.1 * 2^-11 * max|z|
    // over the row. Shifting every score by at most d scales each p_j by at most e^(+-2d),
    // so sum_j |dp_j| |v_j| <= (e^(2d) - 1) * sum_j p_j |v_j|. p is then stored in fp16
    // (2^-11 relative, or 2^-25 absolute below 2^-14, per term), and the output is rounded
    // once (1/2 ulp) as is the reference (1/2 ulp).
    let scale = 1.0 / (e as f64).sqrt();
    let mut exact = Vec::new();
    let mut tol = Vec::new();
    for bh in 0..b * h {
        for i in 0..l {
            let z: Vec<f64> = (0..s)
                .map(|j| {
                    let dot: f64 = (0..e)
                        .map(|d| {
                            f64::from(q[(bh * l + i) * e + d]) * f64::from(k[(bh * s + j) * e + d])
                        })
                        .sum();
                    dot * scale
                })
                .collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = z.iter().map(|&zj| (zj - max).exp()).collect();
            let total: f64 = w.iter().sum();
            let p: Vec<f64> = w.iter().map(|wj| wj / total).collect();
            let zmax = z.iter().fold(0.0f64, |a, &zj| a.max(zj.abs()));
            let d = 3.1 * 2f64.powi(-11) * zmax;
            for c in 0..ev {
                let vs = |j: usize| f64::from(v[(bh * s + j) * ev + c]);
                let o: f64 = (0..s).map(|j| p[j] * vs(j)).sum();
                let pv: f64 = (0..s).map(|j| p[j] * vs(j).abs()).sum();
                let vmax = (0..s).fold(0.0f64, |a, j| a.max(vs(j).abs()));
                exact.push(o);
                tol.push(
                    ((2.0 * d).exp() - 1.0 + 2f64.powi(-11)) * pv
                        + s as f64 * 2f64.powi(-25) * vmax
                        + ulp(o),
                );
            }
        }
    }
    let want: Vec<f64> = exact.iter().map(|&o| fp16(o)).collect();
    assert_close("sdpa", &out[0], &[b, h, l, ev], &want, |i| tol[i]);
}

// ---------------------------------------------------------------------------------------------
// quantize, dequantize, constexpr_affine_dequantize

fn int_literal(dtype: DType, shape: Option<&[usize]>, values: &[i64]) -> Literal {
    let ty = match shape {
        Some(s) => Type::tensor(dtype, s),
        None => Type::Scalar(dtype),
    };
    let data = if dtype.is_signed_int() {
        TensorData::Int(values.to_vec())
    } else {
        TensorData::UInt(values.iter().map(|&v| v as u64).collect())
    };
    Literal::tensor(ty, data)
}

fn fp16_vector(values: &[f64]) -> Literal {
    let data = values.iter().map(|&v| half::f16::from_f64(fp16(v))).collect();
    Literal::tensor(Type::tensor(DType::Fp16, [values.len()]), TensorData::F16(data))
}

/// clamp(round_half_even(x / scale) + zero_point) into [lo, hi]. The quotient of two fp16
/// values is never within f32 rounding of a half-integer without being one, so the f32
/// division of the simulator rounds to the same integer as this f64 one.
fn quantize_reference(x: f64, scale: f64, zero_point: f64, lo: f64, hi: f64) -> f64 {
    ((x / scale).round_ties_even() + zero_point).clamp(lo, hi)
}

/// The index along `axis` of flat element `i` of `shape`.
fn along(i: usize, shape: &[usize], axis: usize) -> usize {
    unravel(i, shape)[axis]
}

#[test]
fn quantize_per_tensor_int8_rounds_half_even_and_clamps() {
    // scale 0.5, zero point 3: x / 0.5 = 2x.
    let mut x: Vec<f32> = vec![
        0.25, 0.75, 1.25, -0.25, -0.75, -1.25, // ties: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, ...
        100.0, -100.0, // clamp to 127 and -128
        62.0, 62.5, -65.5, -65.0, // the edges: 127, 128 -> 127, -128, -127
        0.0, 65504.0, -65504.0,
    ];
    x.extend(Rng::new(800).fp16s(32, -70.0, 70.0));
    let n = x.len();
    let out = run(&[input_f16("x", &[n], x.clone())], |f, v| {
        let q = f
            .op1(
                OpKind::Quantize,
                "q",
                &[
                    ("input", (&v[0]).into()),
                    ("scale", Literal::fp16(0.5).into()),
                    ("zero_point", int_literal(DType::Int8, None, &[3]).into()),
                    ("output_dtype", Literal::string("int8").into()),
                ],
            )
            .unwrap();
        let dq = f
            .op1(
                OpKind::Dequantize,
                "dq",
                &[
                    ("input", (&q).into()),
                    ("scale", Literal::fp16(0.5).into()),
                    ("zero_point", int_literal(DType::Int8, None, &[3]).into()),
                ],
            )
            .unwrap();
        vec![q, dq]
    });
    let q: Vec<f64> =
        x.iter().map(|&v| quantize_reference(f64::from(v), 0.5, 3.0, -128.0, 127.0)).collect();
    assert_eq!(
        q[..14],
        [3.0, 5.0, 5.0, 3.0, 1.0, 1.0, 127.0, -128.0, 127.0, 127.0, -128.0, -127.0, 3.0, 127.0]
    );
    assert_exact("quantize int8", &out[0], &[n], &q);
    let dq: Vec<f64> = q.iter().map(|&q| fp16(0.5 * (q - 3.0))).collect();
    assert_exact("dequantize int8", &out[1], &[n], &dq);
}

#[test]
fn quantize_and_dequantize_per_axis_uint8() {
    let shape = [2, 3, 4];
    let scales = [0.5, 0.25, 0.1];
    let zero_points = [128i64, 0, 250];
    let x = Rng::new(810).fp16s(24, -40.0, 40.0);
    let out = run(&[input_f16("x", &shape, x.clone())], |f, v| {
        let params = |input: &Var| -> Vec<(&'static str, Arg)> {
            vec![
                ("input", input.into()),
                ("scale", fp16_vector(&scales).into()),
                ("zero_point", int_literal(DType::UInt8, Some(&[3]), &zero_points).into()),
                // Axis 1, written from the end.
                ("axis", Literal::int32(-2).into()),
            ]
        };
        let mut q_args = params(&v[0]);
        q_args.push(("output_dtype", Literal::string("uint8").into()));
        let q = f.op1(OpKind::Quantize, "q", &q_args).unwrap();
        let dq = f.op1(OpKind::Dequantize, "dq", &params(&q)).unwrap();
        vec![q, dq]
    });
    let c = |i: usize| along(i, &shape, 1);
    let q: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            quantize_reference(
                f64::from(v),
                fp16(scales[c(i)]),
                zero_points[c(i)] as f64,
                0.0,
                255.0,
            )
        })
        .collect();
    // Both clamps are reached: channel 2 (zero point 250) saturates at 255 for x >= 0.55,
    // channel 0 (zero point 128) at 0 for x <= -64.25 (not drawn) and channel 1 at 0 for x < 0.
    assert!(q.contains(&255.0) && q.contains(&0.0));
    assert_exact("quantize uint8 per axis", &out[0], &shape, &q);
    let dq: Vec<f64> = q
        .iter()
        .enumerate()
        .map(|(i, &q)| fp16(fp16(scales[c(i)]) * (q - zero_points[c(i)] as f64)))
        .collect();
    assert_exact("dequantize uint8 per axis", &out[1], &shape, &dq);
}

#[test]
fn dequantize_an_int8_input_per_axis() {
    let shape = [3, 5];
    let scales = [0.1, 3.0, 0.0078125];
    let zero_points = [-5i64, 0, 127];
    let mut q = vec![-128.0, 127.0, 0.0, -5.0, 5.0];
    q.extend(Rng::new(820).ints(10, -128, 127));
    let out = run(&[input("q", DType::Int8, &shape, q.clone())], |f, v| {
        let args: [(&str, Arg); 4] = [
            ("input", (&v[0]).into()),
            ("scale", fp16_vector(&scales).into()),
            ("zero_point", int_literal(DType::Int8, Some(&[3]), &zero_points).into()),
            ("axis", Literal::int32(0).into()),
        ];
        vec![f.op1(OpKind::Dequantize, "dq", &args).unwrap()]
    });
    let want: Vec<f64> = q
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = along(i, &shape, 0);
            fp16(fp16(scales[c]) * (f64::from(v) - zero_points[c] as f64))
        })
        .collect();
    assert_exact("dequantize int8 input", &out[0], &shape, &want);
}

/// The iOS16 attribute form of constexpr_affine_dequantize, as in fixture 09, written as MIL
/// text with its int8 data in a weight blob.
#[test]
fn constexpr_affine_dequantize_in_the_ios16_attribute_form() {
    let (cout, cin) = (6, 4);
    let mut rng = Rng::new(900);
    let w_q: Vec<i8> = rng.ints(cout * cin, -128, 127).iter().map(|&v| v as i8).collect();
    let w_u: Vec<u8> = rng.ints(12, 0, 255).iter().map(|&v| v as u8).collect();
    let scales = [0.125, 0.0625, 0.5, 0.3, 1.0, 0.01];
    let zero_points = [0i64, -3, 7, 127, -128, 1];
    let mut blob = BlobWriter::new();
    let off_q = blob.add_i8(&w_q);
    let off_u = blob.add_u8(&w_u);
    let path = "@model_path/weights/weight.bin";
    let list = |v: &[String]| v.join(", ");
    let scale_text = list(&scales.iter().map(|&s| format!("{:e}", fp16(s))).collect::<Vec<_>>());
    let zp_text = list(&zero_points.iter().map(|z| z.to_string()).collect::<Vec<_>>());
    let mil = format!(
        r#"program(1.3)
[buildInfo = dict<string, string>({{{{"coremlc-component-MIL", "3510.2.1"}}, {{"coremlc-version", "3505.4.1"}}, {{"coremltools-component-milinternal", ""}}, {{"coremltools-version", "9.0"}}}})]
{{
    func main<ios18>(tensor<fp16, [1, {cin}, 3, 5]> x) {{
        string c_pad_type = const()[name = string("c_pad_type"), val = string("valid")];
        tensor<int32, [2]> c_strides = const()[name = string("c_strides"), val = tensor<int32, [2]>([1, 1])];
        tensor<int32, [4]> c_pad = const()[name = string("c_pad"), val = tensor<int32, [4]>([0, 0, 0, 0])];
        tensor<int32, [2]> c_dilations = const()[name = string("c_dilations"), val = tensor<int32, [2]>([1, 1])];
        int32 c_groups = const()[name = string("c_groups"), val = int32(1)];
        fp16 zero = const()[name = string("zero"), val = fp16(0)];
        tensor<fp16, [{cout}, {cin}, 1, 1]> W = constexpr_affine_dequantize()[axis = int32(0), name = string("W"), quantized_data = tensor<int8, [{cout}, {cin}, 1, 1]>(BLOBFILE(path = string("{path}"), offset = uint64({off_q}))), scale = tensor<fp16, [{cout}]>([{scale_text}]), zero_point = tensor<int8, [{cout}]>([{zp_text}])];
        tensor<fp16, [3, 4]> U = constexpr_affine_dequantize()[axis = int32(1), name = string("U"), quantized_data = tensor<uint8, [3, 4]>(BLOBFILE(path = string("{path}"), offset = uint64({off_u}))), scale = fp16(0x1p-3), zero_point = uint8(128)];
        tensor<fp16, [{cout}, {cin}, 1, 1]> w_out = add(x = W, y = zero)[name = string("w_out")];
        tensor<fp16, [3, 4]> u_out = add(x = U, y = zero)[name = string("u_out")];
        tensor<fp16, [1, {cout}, 3, 5]> y = conv(dilations = c_dilations, groups = c_groups, pad = c_pad, pad_type = c_pad_type, strides = c_strides, weight = W, x = x)[name = string("y")];
    }} -> (w_out, u_out, y);
}}
"#
    );
    let program = text::parse(&mil).unwrap_or_else(|e| panic!("parse: {e:?}\n{mil}"));
    let mut weights = Weights::new();
    weights.insert(path, blob.finish());
    let x = rng.fp16s(cin * 15, -1.0, 1.0);
    let out = run_program(&program, &weights, &[input_f16("x", &[1, cin, 3, 5], x.clone())]);

    // scale * (q - zero_point), per output channel, rounded once.
    let w: Vec<f64> = w_q
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let c = i / cin;
            fp16(fp16(scales[c]) * (f64::from(q) - zero_points[c] as f64))
        })
        .collect();
    assert_exact("constexpr int8 per channel", &out[0], &[cout, cin, 1, 1], &w);
    let u: Vec<f64> = w_u.iter().map(|&q| fp16(0.125 * (f64::from(q) - 128.0))).collect();
    assert_exact("constexpr uint8 per tensor", &out[1], &[3, 4], &u);

    // And the dequantized weight drives a 1x1 conv.
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let c = Conv { x: &[1, cin, 3, 5], w: &[cout, cin, 1, 1], ..Conv::default() };
    let (shape, exact, _, abs) = conv_reference(&c, &x, &w32, None);
    let want: Vec<f64> = exact.iter().map(|&e| mac_port(e)).collect();
    assert_close("conv on constexpr weight", &out[2], &shape, &want, |i| {
        dot_tolerance(exact[i], abs[i], cin)
    });
}

/// The newer form, with the parameters as (constant) inputs, from the builder.
#[test]
fn constexpr_affine_dequantize_with_inputs_from_the_builder() {
    let data: Vec<i64> = vec![-128, -1, 0, 1, 2, 127, 50, -50];
    let out = run(&[input_f16("x", &[2, 4], vec![0.0; 8])], |f, v| {
        let args: [(&str, Arg); 4] = [
            ("quantized_data", int_literal(DType::Int8, Some(&[2, 4]), &data).into()),
            ("zero_point", int_literal(DType::Int8, Some(&[2]), &[1, -2]).into()),
            ("scale", fp16_vector(&[0.25, 3.0]).into()),
            ("axis", Literal::int32(0).into()),
        ];
        let w = f.op1(OpKind::ConstexprAffineDequantize, "w", &args).unwrap();
        vec![f.add(&v[0], &w).unwrap()]
    });
    let want: Vec<f64> = data
        .iter()
        .enumerate()
        .map(|(i, &q)| if i < 4 { fp16(0.25 * (q - 1) as f64) } else { fp16(3.0 * (q + 2) as f64) })
        .collect();
    assert_exact("constexpr from inputs", &out[0], &[2, 4], &want);
}
