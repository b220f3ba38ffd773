//! Comparisons, logical ops, select, clip and integer arithmetic end to end: MIL text ->
//! parse -> simulator compile -> evaluate, each result checked against a reference computed
//! here from the op's definition (coremltools' elementwise_binary.py, elementwise_unary.py,
//! control_flow.py) and the simulator's documented fp16 read rule (a NaN read by the datapath
//! is +inf; `sim::numerics`).
//!
//! Every result here is exact: comparisons and logical ops give booleans, select and clip give
//! one of their operands, and integer arithmetic is exact with two's complement wrapping. So
//! every check is equality, bit for bit on floats (signed zeros included).

use anemone::sim::{Fp32Arithmetic, SimOptions};
use anemone::{Device, Weights};
use anemone_mil::{DType, text};
use half::f16;

/// An output as the simulator wrote it.
struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Tensor {
    /// The elements as f64 (exact for every type used here).
    fn values(&self) -> Vec<f64> {
        let b = &self.bytes;
        match self.dtype {
            DType::Bool | DType::UInt8 => b.iter().map(|&v| f64::from(v)).collect(),
            DType::Int8 => b.iter().map(|&v| f64::from(v as i8)).collect(),
            DType::Fp16 => {
                b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect()
            }
            DType::Int16 => {
                b.chunks_exact(2).map(|c| f64::from(i16::from_le_bytes([c[0], c[1]]))).collect()
            }
            DType::Fp32 => b
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            DType::Int32 => b
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            other => panic!("no decoder for {other}"),
        }
    }
}

/// `program(1.3)` with one function `main(args)` whose `body` returns `outs`.
fn program(args: &str, body: &str, outs: &str) -> String {
    format!("program(1.3)\n{{\n    func main<ios18>({args}) {{\n{body}    }} -> ({outs});\n}}\n")
}

/// Compiles `mil` on `device`, writes the inputs' bytes, evaluates, and returns the outputs in
/// the order the function lists them; the first error as text.
fn try_run_on(
    device: &Device,
    mil: &str,
    inputs: &[(&str, Vec<u8>)],
) -> Result<Vec<Tensor>, String> {
    let program = text::parse(mil).map_err(|e| format!("parse: {e:?}"))?;
    let mut model =
        device.compile(&program, &Weights::new()).map_err(|e| format!("compile: {e}"))?;
    for (name, bytes) in inputs {
        model.input(name).unwrap().write_bytes(bytes).unwrap();
    }
    model.evaluate().map_err(|e| format!("evaluate: {e}"))?;
    let function = program.main_function().unwrap();
    Ok(function
        .block
        .outputs
        .iter()
        .map(|o| {
            let s = model.output(&o.name).unwrap();
            Tensor { dtype: s.dtype(), shape: s.shape().to_vec(), bytes: s.read_bytes() }
        })
        .collect())
}

fn run(mil: &str, inputs: &[(&str, Vec<u8>)]) -> Vec<Tensor> {
    try_run_on(&Device::simulator(), mil, inputs).unwrap_or_else(|e| panic!("{e}\n{mil}"))
}

fn fp16_bytes(v: &[f64]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| {
            let h = f16::from_f64(x);
            assert!(h.to_f64() == x || x.is_nan(), "{x} is not an fp16 value");
            h.to_le_bytes()
        })
        .collect()
}

fn fp32_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
}

fn i32_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|&x| i32::try_from(x).unwrap().to_le_bytes()).collect()
}

fn bool_bytes(v: &[bool]) -> Vec<u8> {
    v.iter().map(|&b| u8::from(b)).collect()
}

/// The flat index that numpy reads from an operand of `shape` for output position `i` of an
/// output of shape `out` (right-aligned dims; a dim of 1 is read at 0).
fn read_index(i: usize, out: &[usize], shape: &[usize]) -> usize {
    let mut idx = vec![0; out.len()];
    let mut rest = i;
    for d in (0..out.len()).rev() {
        idx[d] = rest % out[d];
        rest /= out[d];
    }
    let lead = out.len() - shape.len();
    shape
        .iter()
        .enumerate()
        .fold(0, |acc, (d, &n)| acc * n + if n == 1 { 0 } else { idx[lead + d] })
}

/// Asserts the output's shape, type, and every element equal to `want` (bits of floats).
#[track_caller]
fn assert_exact(what: &str, got: &Tensor, dtype: DType, shape: &[usize], want: &[f64]) {
    assert_eq!(got.dtype, dtype, "{what}: dtype");
    assert_eq!(got.shape, shape, "{what}: shape");
    let values = got.values();
    assert_eq!(values.len(), want.len(), "{what}: length");
    for (i, (g, w)) in values.iter().zip(want).enumerate() {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(same, "{what}[{i}]: got {g:e}, want {w:e}");
    }
}

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An integer in [lo, hi].
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    /// Quarter steps in [-2, 2] (exact in fp16 and fp32, many ties between operands), with
    /// signed zeros, infinities and NaNs mixed in.
    fn floats(&mut self, n: usize) -> Vec<f64> {
        const SPECIAL: [f64; 6] = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 65504.0];
        (0..n)
            .map(|_| match self.int(0, 9) {
                0 => SPECIAL[self.int(0, 5) as usize],
                _ => self.int(-8, 8) as f64 / 4.0,
            })
            .collect()
    }
}

const COMPARISONS: [&str; 6] =
    ["equal", "not_equal", "greater", "greater_equal", "less", "less_equal"];

/// The comparison `op` in f64 (IEEE: false with a NaN but for not_equal).
fn compare(op: &str, x: f64, y: f64) -> bool {
    match op {
        "equal" => x == y,
        "not_equal" => x != y,
        "greater" => x > y,
        "greater_equal" => x >= y,
        "less" => x < y,
        "less_equal" => x <= y,
        _ => unreachable!(),
    }
}

/// A program computing all six comparisons of `x` and `y`.
fn comparisons_program(args: &str, out_shape: &[usize]) -> String {
    let body: String = COMPARISONS
        .iter()
        .map(|op| {
            format!(
                "        tensor<bool, {out_shape:?}> {op}_r = {op}(x = x, y = y)[name = string(\"{op}\")];\n"
            )
        })
        .collect();
    let outs: Vec<String> = COMPARISONS.iter().map(|op| format!("{op}_r")).collect();
    program(args, &body, &outs.join(", "))
}

#[test]
fn fp16_comparisons_read_nan_as_infinity() {
    let (xs, ys) = ([2, 3, 4], [3, 1]);
    let mut rng = Rng(1);
    let x = rng.floats(24);
    let y = rng.floats(3);
    let mil = comparisons_program("tensor<fp16, [2, 3, 4]> x, tensor<fp16, [3, 1]> y", &xs);
    let out = run(&mil, &[("x", fp16_bytes(&x)), ("y", fp16_bytes(&y))]);
    let read = |v: f64| if v.is_nan() { f64::INFINITY } else { v };
    for (op, got) in COMPARISONS.iter().zip(&out) {
        let want: Vec<f64> = (0..24)
            .map(|i| {
                let (a, b) = (x[i], y[read_index(i, &xs, &ys)]);
                f64::from(u8::from(compare(op, read(a), read(b))))
            })
            .collect();
        assert_exact(op, got, DType::Bool, &xs, &want);
    }
    // The read rule shows: a NaN equals +inf and exceeds the largest finite value.
    let nan_inf = program(
        "tensor<fp16, [2]> x",
        "        tensor<bool, [2]> e = equal(x = x, y = fp16(inf))[name = string(\"e\")];\n\
         \x20       tensor<bool, [2]> g = greater(x = x, y = fp16(65504))[name = string(\"g\")];\n",
        "e, g",
    );
    let out = run(&nan_inf, &[("x", fp16_bytes(&[f64::NAN, 1.0]))]);
    assert_exact("NaN == inf", &out[0], DType::Bool, &[2], &[1.0, 0.0]);
    assert_exact("NaN > 65504", &out[1], DType::Bool, &[2], &[1.0, 0.0]);
}

#[test]
fn fp32_comparisons_compare_the_fp32_values() {
    let (xs, ys) = ([4, 1], [5]);
    let mut rng = Rng(2);
    let mut x = rng.floats(4);
    let mut y = rng.floats(5);
    // Values fp16 cannot tell apart: 1 and 1 + 2^-20 round to the same fp16 value, so an
    // fp32 comparison narrowed to fp16 would call them equal.
    x[0] = 1.0;
    y[1] = 1.0 + 2f64.powi(-20);
    y[2] = 1.0;
    x[3] = f64::NAN;
    let mil = comparisons_program("tensor<fp32, [4, 1]> x, tensor<fp32, [5]> y", &[4, 5]);
    for fp32 in [Fp32Arithmetic::AsAne, Fp32Arithmetic::Exact] {
        let device = Device::simulator_with(SimOptions { fp32, ..Default::default() });
        let out = try_run_on(&device, &mil, &[("x", fp32_bytes(&x)), ("y", fp32_bytes(&y))])
            .unwrap_or_else(|e| panic!("{e}"));
        for (op, got) in COMPARISONS.iter().zip(&out) {
            let want: Vec<f64> = (0..20)
                .map(|i| {
                    let (a, b) = (x[read_index(i, &[4, 5], &xs)], y[read_index(i, &[4, 5], &ys)]);
                    f64::from(u8::from(compare(op, a, b)))
                })
                .collect();
            assert_exact(&format!("{op} ({fp32:?})"), got, DType::Bool, &[4, 5], &want);
        }
        // Spot checks of the cases above.
        let equal = out[0].values();
        assert_eq!(equal[1], 0.0, "1 != 1 + 2^-20 in fp32");
        assert_eq!(equal[2], 1.0);
        assert_eq!(out[1].values()[15..20], [1.0; 5], "NaN is unequal to everything");
    }
}

/// The embedding model's remap of negative token ids, as coremltools wrote it (fixture
/// embedding-ios18 in tests/coreml): ids through int16 and back, `greater_equal(x, y = 0)`,
/// `add(x, y = 100)` and `select`.
#[test]
fn integer_comparisons_and_select_remap_negative_ids() {
    let mil = program(
        "tensor<int32, [2, 8]> ids",
        "        tensor<int16, [2, 8]> ids16 = cast(x = ids, dtype = string(\"int16\"))[name = string(\"cast_5\")];\n\
         \x20       tensor<int32, [2, 8]> c = cast(x = ids16, dtype = string(\"int32\"))[name = string(\"cast_4\")];\n\
         \x20       tensor<bool, [2, 8]> ge = greater_equal(x = c, y = int32(0))[name = string(\"greater_equal_0\")];\n\
         \x20       tensor<int32, [2, 8]> wrapped = add(x = c, y = int32(100))[name = string(\"add_0\")];\n\
         \x20       tensor<int32, [2, 8]> idx = select(cond = ge, a = c, b = wrapped)[name = string(\"select_0\")];\n",
        "ge, wrapped, idx",
    );
    let mut rng = Rng(3);
    let ids: Vec<i64> = (0..16).map(|_| rng.int(-100, 99)).collect();
    let out = run(&mil, &[("ids", i32_bytes(&ids))]);
    let ge: Vec<f64> = ids.iter().map(|&i| f64::from(u8::from(i >= 0))).collect();
    assert_exact("greater_equal", &out[0], DType::Bool, &[2, 8], &ge);
    let wrapped: Vec<f64> = ids.iter().map(|&i| (i + 100) as f64).collect();
    assert_exact("add", &out[1], DType::Int32, &[2, 8], &wrapped);
    let idx: Vec<f64> = ids.iter().map(|&i| if i >= 0 { i } else { i + 100 } as f64).collect();
    assert_exact("select", &out[2], DType::Int32, &[2, 8], &idx);

    // Narrow integer types compare exactly too.
    let mil = program(
        "tensor<int8, [4]> a, tensor<uint8, [4]> b",
        "        tensor<bool, [4]> lt = less(x = a, y = int8(-1))[name = string(\"lt\")];\n\
         \x20       tensor<bool, [4]> ne = not_equal(x = b, y = uint8(200))[name = string(\"ne\")];\n",
        "lt, ne",
    );
    let a = [-128i8, -2, -1, 127];
    let b = [0u8, 199, 200, 255];
    let out = run(&mil, &[("a", a.map(|v| v as u8).to_vec()), ("b", b.to_vec())]);
    assert_exact("int8 less", &out[0], DType::Bool, &[4], &[1.0, 1.0, 0.0, 0.0]);
    assert_exact("uint8 not_equal", &out[1], DType::Bool, &[4], &[1.0, 1.0, 0.0, 1.0]);
}

#[test]
fn logical_ops_combine_comparisons() {
    let (xs, ys) = ([3, 4], [4]);
    let mut rng = Rng(4);
    let p: Vec<bool> = (0..12).map(|_| rng.int(0, 1) == 1).collect();
    let q: Vec<bool> = (0..4).map(|_| rng.int(0, 1) == 1).collect();
    let v: Vec<f64> = (0..12).map(|_| rng.int(-4, 4) as f64 / 2.0).collect();
    let mil = program(
        "tensor<bool, [3, 4]> p, tensor<bool, [4]> q, tensor<fp16, [3, 4]> v",
        "        tensor<bool, [3, 4]> and_r = logical_and(x = p, y = q)[name = string(\"and\")];\n\
         \x20       tensor<bool, [3, 4]> or_r = logical_or(x = p, y = q)[name = string(\"or\")];\n\
         \x20       tensor<bool, [3, 4]> xor_r = logical_xor(x = p, y = q)[name = string(\"xor\")];\n\
         \x20       tensor<bool, [3, 4]> not_r = logical_not(x = p)[name = string(\"not\")];\n\
         \x20       tensor<bool, [3, 4]> pos = greater(x = v, y = fp16(0))[name = string(\"pos\")];\n\
         \x20       tensor<bool, [3, 4]> small = less_equal(x = v, y = fp16(1))[name = string(\"small\")];\n\
         \x20       tensor<bool, [3, 4]> band = logical_and(x = pos, y = small)[name = string(\"band\")];\n\
         \x20       tensor<bool, [3, 4]> outside = logical_not(x = band)[name = string(\"outside\")];\n",
        "and_r, or_r, xor_r, not_r, outside",
    );
    let out = run(&mil, &[("p", bool_bytes(&p)), ("q", bool_bytes(&q)), ("v", fp16_bytes(&v))]);
    let each = |f: &dyn Fn(bool, bool) -> bool| -> Vec<f64> {
        (0..12).map(|i| f64::from(u8::from(f(p[i], q[read_index(i, &xs, &ys)])))).collect()
    };
    assert_exact("logical_and", &out[0], DType::Bool, &xs, &each(&|a, b| a && b));
    assert_exact("logical_or", &out[1], DType::Bool, &xs, &each(&|a, b| a || b));
    assert_exact("logical_xor", &out[2], DType::Bool, &xs, &each(&|a, b| a != b));
    assert_exact("logical_not", &out[3], DType::Bool, &xs, &each(&|a, _| !a));
    let outside: Vec<f64> =
        v.iter().map(|&x| f64::from(u8::from(!(x > 0.0 && x <= 1.0)))).collect();
    assert_exact("not (0 < v <= 1)", &out[4], DType::Bool, &xs, &outside);
}

/// The converted transformer's causal mask: `select(cond = mask, a = -inf, b = scores)` with a
/// constant [1, 1, 4, 4] mask over [1, 2, 4, 4] scores.
#[test]
fn select_masks_scores_like_the_converted_transformer() {
    let mask: Vec<bool> = (0..16).map(|i| i % 4 > i / 4).collect();
    let mask_text: Vec<&str> = mask.iter().map(|&m| if m { "true" } else { "false" }).collect();
    let mil = program(
        "tensor<fp16, [1, 2, 4, 4]> s",
        &format!(
            "        tensor<bool, [1, 1, 4, 4]> m = const()[name = string(\"m\"), val = tensor<bool, [1, 1, 4, 4]>([{}])];\n\
             \x20       tensor<fp16, [1, 2, 4, 4]> r = select(cond = m, a = fp16(-inf), b = s)[name = string(\"s_cast_fp16\")];\n",
            mask_text.join(", ")
        ),
        "r",
    );
    let mut rng = Rng(5);
    let s = rng.floats(32);
    let out = run(&mil, &[("s", fp16_bytes(&s))]);
    let want: Vec<f64> = (0..32)
        .map(|i| {
            if mask[i % 16] {
                f64::NEG_INFINITY
            } else if s[i].is_nan() {
                // fp16 passes a NaN on as +inf.
                f64::INFINITY
            } else {
                s[i]
            }
        })
        .collect();
    assert_exact("causal select", &out[0], DType::Fp16, &[1, 2, 4, 4], &want);
}

#[test]
fn select_on_fp32_int32_and_bool_broadcasts_all_three() {
    let (cs, as_, bs, os) = ([2, 1], [1, 3], [2, 3], [2, 3]);
    let cond = [true, false];
    let a32 = [1.0 + 2f64.powi(-20), -0.0, f64::NAN];
    let b32 = [0.1f32 as f64, 70000.0, -1e-30f32 as f64, 5.0, 6.0, 7.0];
    let ai = [1i64, -2, i32::MAX as i64];
    let bi = [10i64, 20, 30, 40, 50, i32::MIN as i64];
    let ab = [true, false, true];
    let bb = [false, true, false, true, true, false];
    let mil = program(
        "tensor<bool, [2, 1]> c, tensor<fp32, [1, 3]> a32, tensor<fp32, [2, 3]> b32, \
         tensor<int32, [1, 3]> ai, tensor<int32, [2, 3]> bi, tensor<bool, [1, 3]> ab, \
         tensor<bool, [2, 3]> bb",
        "        tensor<fp32, [2, 3]> f = select(cond = c, a = a32, b = b32)[name = string(\"f\")];\n\
         \x20       tensor<int32, [2, 3]> i = select(cond = c, a = ai, b = bi)[name = string(\"i\")];\n\
         \x20       tensor<bool, [2, 3]> b = select(cond = c, a = ab, b = bb)[name = string(\"b\")];\n\
         \x20       tensor<fp32, [2, 3]> k = select(cond = c, a = fp32(0.5), b = b32)[name = string(\"k\")];\n",
        "f, i, b, k",
    );
    let out = run(
        &mil,
        &[
            ("c", bool_bytes(&cond)),
            ("a32", fp32_bytes(&a32)),
            ("b32", fp32_bytes(&b32)),
            ("ai", i32_bytes(&ai)),
            ("bi", i32_bytes(&bi)),
            ("ab", bool_bytes(&ab)),
            ("bb", bool_bytes(&bb)),
        ],
    );
    let pick = |a: &dyn Fn(usize) -> f64, b: &dyn Fn(usize) -> f64| -> Vec<f64> {
        (0..6)
            .map(|i| {
                if cond[read_index(i, &os, &cs)] {
                    a(read_index(i, &os, &as_))
                } else {
                    b(read_index(i, &os, &bs))
                }
            })
            .collect()
    };
    // fp32 values move unchanged (select does not compute): no rounding to fp16, NaN kept.
    assert_exact("fp32", &out[0], DType::Fp32, &os, &pick(&|j| a32[j], &|j| b32[j]));
    assert_exact("int32", &out[1], DType::Int32, &os, &pick(&|j| ai[j] as f64, &|j| bi[j] as f64));
    let bools = pick(&|j| f64::from(u8::from(ab[j])), &|j| f64::from(u8::from(bb[j])));
    assert_exact("bool", &out[2], DType::Bool, &os, &bools);
    assert_exact("scalar a", &out[3], DType::Fp32, &os, &pick(&|_| 0.5, &|j| b32[j]));
}

/// clip's value as coremltools computes it, `np.minimum(np.maximum(v, lo), hi)`: numpy's
/// maximum(a, b) is a when a >= b or a is NaN, else b (so maximum(-0, 0) is -0); minimum
/// likewise with <=.
fn numpy_clip(v: f64, lo: f64, hi: f64) -> f64 {
    let m = if v >= lo || v.is_nan() { v } else { lo };
    if m <= hi || m.is_nan() { m } else { hi }
}

#[test]
fn clip_clamps_with_fp16_bounds_as_on_the_ane() {
    let mut rng = Rng(6);
    let x = rng.floats(40);
    let mil = program(
        "tensor<fp16, [5, 8]> x",
        "        tensor<fp16, [5, 8]> r = clip(x = x, alpha = fp16(-0.5), beta = fp16(0.75))[name = string(\"r\")];\n\
         \x20       tensor<fp16, [5, 8]> r6 = clip(x = x, alpha = fp16(0), beta = fp16(6))[name = string(\"relu6\")];\n",
        "r, r6",
    );
    let out = run(&mil, &[("x", fp16_bytes(&x))]);
    // NaN reads as +inf, so it clips to beta; -0 against alpha = 0 stays -0.
    let clamp =
        |v: f64, lo: f64, hi: f64| numpy_clip(if v.is_nan() { f64::INFINITY } else { v }, lo, hi);
    let want: Vec<f64> = x.iter().map(|&v| clamp(v, -0.5, 0.75)).collect();
    assert_exact("clip", &out[0], DType::Fp16, &[5, 8], &want);
    let want: Vec<f64> = x.iter().map(|&v| clamp(v, 0.0, 6.0)).collect();
    assert_exact("relu6", &out[1], DType::Fp16, &[5, 8], &want);
}

#[test]
fn fp32_clip_runs_in_fp16_unless_exact() {
    // 0.1 and 1 + 2^-20 are not fp16 values; 1e5 overflows fp16.
    let x = [0.05, 0.3, 1.0 + 2f64.powi(-20), 1e5, -0.0, f64::NAN];
    let x: Vec<f64> = x.iter().map(|&v| f64::from(v as f32)).collect();
    let (alpha, beta) = (0.1f32, 2.0f32);
    let mil = program(
        "tensor<fp32, [6]> x",
        "        tensor<fp32, [6]> r = clip(x = x, alpha = fp32(0.1), beta = fp32(2))[name = string(\"r\")];\n",
        "r",
    );
    let ane = Device::simulator();
    let out = try_run_on(&ane, &mil, &[("x", fp32_bytes(&x))]).unwrap();
    // As the ANE: x, alpha and beta rounded to fp16 (NaN read as +inf), fp16 result.
    let h = |v: f64| f16::from_f64(v).to_f64();
    let (lo, hi) = (h(f64::from(alpha)), h(f64::from(beta)));
    let want: Vec<f64> = x
        .iter()
        .map(|&v| numpy_clip(if v.is_nan() { f64::INFINITY } else { h(v) }, lo, hi))
        .collect();
    assert_exact("fp32 clip as on the ANE", &out[0], DType::Fp32, &[6], &want);
    assert_eq!(want[0], lo);
    assert_ne!(lo, f64::from(alpha), "the bound itself moved to fp16");
    let exact =
        Device::simulator_with(SimOptions { fp32: Fp32Arithmetic::Exact, ..Default::default() });
    let out = try_run_on(&exact, &mil, &[("x", fp32_bytes(&x))]).unwrap();
    let (lo, hi) = (f64::from(alpha), f64::from(beta));
    let want: Vec<f64> = x.iter().map(|&v| numpy_clip(v, lo, hi)).collect();
    assert_exact("fp32 clip exact", &out[0], DType::Fp32, &[6], &want);
}

/// The wrapped value of an exact result in a `bits`-wide two's complement integer.
fn wrap(v: i128, bits: u32, signed: bool) -> i128 {
    let m = v.rem_euclid(1 << bits);
    if signed && m >= 1 << (bits - 1) { m - (1 << bits) } else { m }
}

#[test]
fn integer_arithmetic_is_exact_and_wraps() {
    let (xs, ys) = ([2, 3], [3]);
    let x = [7i64, -7, i32::MAX as i64, i32::MIN as i64, 100_000, -1];
    let y = [2i64, -2, 3];
    let e = [0i64, 1, 3];
    let ops = ["add", "sub", "mul", "real_div", "pow", "maximum", "minimum"];
    let body: String = ops
        .iter()
        .map(|op| {
            let rhs = if *op == "pow" { "e" } else { "y" };
            format!(
                "        tensor<int32, [2, 3]> {op}_r = {op}(x = x, y = {rhs})[name = string(\"{op}\")];\n"
            )
        })
        .collect();
    let body = format!(
        "        tensor<int32, [3]> e = const()[name = string(\"e\"), val = tensor<int32, [3]>([0, 1, 3])];\n{body}"
    );
    let outs: Vec<String> = ops.iter().map(|op| format!("{op}_r")).collect();
    let mil = program("tensor<int32, [2, 3]> x, tensor<int32, [3]> y", &body, &outs.join(", "));
    let out = run(&mil, &[("x", i32_bytes(&x)), ("y", i32_bytes(&y))]);
    for (op, got) in ops.iter().zip(&out) {
        let want: Vec<f64> = (0..6)
            .map(|i| {
                let a = i128::from(x[i]);
                let j = read_index(i, &xs, &ys);
                let (b, p) = (i128::from(y[j]), e[j] as u32);
                let exact = match *op {
                    "add" => a + b,
                    "sub" => a - b,
                    "mul" => a * b,
                    // coremltools: float64 quotient stored into int32 (astype truncates).
                    "real_div" => (a as f64 / b as f64).trunc() as i128,
                    "pow" => a.pow(p),
                    "maximum" => a.max(b),
                    "minimum" => a.min(b),
                    _ => unreachable!(),
                };
                wrap(exact, 32, true) as f64
            })
            .collect();
        assert_exact(op, got, DType::Int32, &xs, &want);
    }
    // The cases that matter: -7 / -2 = 3 (toward zero), INT32_MAX + 3 wraps.
    assert_eq!(out[3].values()[1], 3.0, "-7 / -2");
    assert_eq!(out[0].values()[2], (i32::MAX as i64 + 3 - (1i64 << 32)) as f64);

    // Narrow types wrap at their own width.
    let mil = program(
        "tensor<uint8, [4]> u, tensor<int8, [4]> s, tensor<int16, [4]> h",
        "        tensor<uint8, [4]> ua = add(x = u, y = uint8(10))[name = string(\"ua\")];\n\
         \x20       tensor<uint8, [4]> us = sub(x = u, y = uint8(10))[name = string(\"us\")];\n\
         \x20       tensor<int8, [4]> sm = mul(x = s, y = int8(3))[name = string(\"sm\")];\n\
         \x20       tensor<int16, [4]> hd = real_div(x = h, y = int16(-3))[name = string(\"hd\")];\n",
        "ua, us, sm, hd",
    );
    let u = [0u8, 5, 250, 255];
    let s = [-128i8, -43, 42, 127];
    let h = [i16::MIN, -7, 7, i16::MAX];
    let out = run(
        &mil,
        &[
            ("u", u.to_vec()),
            ("s", s.map(|v| v as u8).to_vec()),
            ("h", h.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ],
    );
    let per = |f: &dyn Fn(usize) -> i128, bits, signed| -> Vec<f64> {
        (0..4).map(|i| wrap(f(i), bits, signed) as f64).collect()
    };
    assert_exact(
        "uint8 add",
        &out[0],
        DType::UInt8,
        &[4],
        &per(&|i| i128::from(u[i]) + 10, 8, false),
    );
    assert_exact(
        "uint8 sub",
        &out[1],
        DType::UInt8,
        &[4],
        &per(&|i| i128::from(u[i]) - 10, 8, false),
    );
    assert_exact("int8 mul", &out[2], DType::Int8, &[4], &per(&|i| i128::from(s[i]) * 3, 8, true));
    let div = |i: usize| (f64::from(h[i]) / -3.0).trunc() as i128;
    assert_exact("int16 real_div", &out[3], DType::Int16, &[4], &per(&div, 16, true));
}

#[test]
fn integer_faults_are_errors_at_evaluate() {
    let mil = program(
        "tensor<int32, [2, 2]> x, tensor<int32, [2]> y",
        "        tensor<int32, [2, 2]> q = real_div(x = x, y = y)[name = string(\"q\")];\n",
        "q",
    );
    let err = try_run_on(
        &Device::simulator(),
        &mil,
        &[("x", i32_bytes(&[1, 2, 3, 4])), ("y", i32_bytes(&[5, 0]))],
    )
    .err()
    .expect("division by zero must fail");
    assert!(
        err.contains("int32 division by zero at output element [0, 1] (x = 2, y = 0)"),
        "{err}"
    );
    let mil = program(
        "tensor<int32, [2]> x",
        "        tensor<int32, [2]> p = pow(x = x, y = int32(-1))[name = string(\"p\")];\n",
        "p",
    );
    let err = try_run_on(&Device::simulator(), &mil, &[("x", i32_bytes(&[1, 2]))]).err().unwrap();
    assert!(err.contains("negative exponent"), "{err}");
}

#[test]
fn malformed_ops_are_rejected_at_compile() {
    let cases = [
        (
            "tensor<fp16, [2]> x",
            "tensor<fp16, [2]> r = clip(x = x, alpha = fp16(1), beta = fp16(1))",
            "alpha 1 is not below beta 1",
        ),
        (
            "tensor<fp16, [2]> x",
            "tensor<fp16, [2]> r = clip(x = x, alpha = fp32(0), beta = fp16(1))",
            "alpha is fp32 but x is fp16",
        ),
        (
            "tensor<fp16, [2]> x",
            "tensor<bool, [2]> r = less(x = x, y = int32(0))",
            "y is int32 but x is fp16",
        ),
        (
            "tensor<bool, [2]> c, tensor<fp16, [2]> x",
            "tensor<fp16, [2]> r = select(cond = c, a = x, b = fp32(0))",
            "b is fp32 but a is fp16",
        ),
        (
            "tensor<bool, [3]> c, tensor<fp16, [2]> x",
            "tensor<fp16, [2]> r = select(cond = c, a = x, b = x)",
            "cannot broadcast cond [3] with a and b [2]",
        ),
        (
            "tensor<fp16, [2]> x",
            "tensor<bool, [2]> r = logical_not(x = x)",
            "x is fp16 but must be bool",
        ),
    ];
    for (args, stmt, needle) in cases {
        let mil = program(args, &format!("        {stmt}[name = string(\"r\")];\n"), "r");
        let err = match text::parse(&mil) {
            Err(e) => format!("{e:?}"),
            Ok(p) => match Device::simulator().compile(&p, &Weights::new()) {
                Err(e) => format!("{e:?} {e}"),
                Ok(_) => panic!("{stmt} compiled"),
            },
        };
        assert!(err.contains(needle), "{stmt}: {err}");
    }
}
