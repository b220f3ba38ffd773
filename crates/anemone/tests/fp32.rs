//! Programs whose arithmetic is typed fp32, on the simulator. The ANE has no fp32 arithmetic:
//! it computes fp32 tensors in fp16 (REFERENCE.md §3), and by default so does the simulator
//! (`Fp32Arithmetic::AsAne`): operands rounded to fp16, fp16 results with every fp16 rule,
//! stored exactly in the fp32 tensor. `Fp32Arithmetic::Exact` gives MIL's IEEE f32 meaning.
//! References here are computed from the format (f32 and `half`), never from the kernels.

use anemone::Device;
use anemone::sim::{Fp32Arithmetic, SimOptions};
use anemone_mil::builder::{Builder, FunctionBuilder, Var};
use anemone_mil::ops::OpKind;
use anemone_mil::{DType, Literal, TensorData, TensorType, Type};

fn device(fp32: Fp32Arithmetic) -> Device {
    Device::simulator_with(SimOptions { fp32, ..Default::default() })
}

/// Builds `main(inputs)` with `body`, runs it on the simulator with `fp32`, and returns every
/// output as f32.
fn run<F>(
    fp32: Fp32Arithmetic,
    inputs: &[(&str, DType, &[usize], &[f32])],
    body: F,
) -> Vec<Vec<f32>>
where
    F: FnOnce(&mut FunctionBuilder<'_>, &[Var]) -> Vec<Var>,
{
    let mut b = Builder::new();
    let mut f = b.function("main");
    let vars: Vec<Var> =
        inputs.iter().map(|(n, d, s, _)| f.input(n, TensorType::new(*d, *s))).collect();
    let outs = body(&mut f, &vars);
    for o in &outs {
        f.output(o);
    }
    f.finish();
    let built = b.build().unwrap();
    let mut model = device(fp32).compile(&built.program, &built.weights).unwrap();
    for (name, _, _, values) in inputs {
        model.input(name).unwrap().write_f32(values).unwrap();
    }
    model.evaluate().unwrap();
    outs.iter().map(|o| model.output(o.name()).unwrap().read_f32().unwrap()).collect()
}

/// The fp16 value nearest `x` (ties to even, ±inf past 65504), as f32.
fn h(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn fp32_const(f: &mut FunctionBuilder<'_>, shape: &[usize], values: Vec<f32>) -> Var {
    f.constant("c", Literal::tensor(Type::tensor(DType::Fp32, shape), TensorData::F32(values)))
}

#[test]
fn fp32_square_is_computed_in_fp16_by_default_and_exactly_on_request() {
    let x = [1.0001f32, 300.0];
    let square = |f: &mut FunctionBuilder<'_>, v: &[Var]| vec![f.mul(&v[0], &v[0]).unwrap()];
    let input = [("x", DType::Fp32, &[2usize][..], &x[..])];
    // 1.0001 rounds to 1.0 in fp16; 300^2 = 90000 > 65504 overflows to inf.
    let ane = run(Fp32Arithmetic::AsAne, &input, square);
    assert_eq!(ane[0], [1.0, f32::INFINITY]);
    let default = run(SimOptions::default().fp32, &input, square);
    assert_eq!(bits(&default[0]), bits(&ane[0]), "AsAne is the default");
    let exact = run(Fp32Arithmetic::Exact, &input, square);
    assert_eq!(exact[0], [1.0001f32 * 1.0001f32, 90000.0]);
    assert!((f64::from(exact[0][0]) - 1.00020001).abs() < 2e-7, "{}", exact[0][0]);
}

#[test]
fn fp32_constants_are_rounded_to_fp16_too() {
    let x = [2.0f32, 3.0];
    let body = |f: &mut FunctionBuilder<'_>, v: &[Var]| {
        let c = fp32_const(f, &[2], vec![1.0001, 0.1]);
        vec![f.mul(&v[0], &c).unwrap()]
    };
    let input = [("x", DType::Fp32, &[2usize][..], &x[..])];
    let ane = run(Fp32Arithmetic::AsAne, &input, body);
    assert_eq!(ane[0], [2.0, h(3.0 * h(0.1))]);
    let exact = run(Fp32Arithmetic::Exact, &input, body);
    assert_eq!(exact[0], [2.0 * 1.0001f32, 3.0 * 0.1f32]);
}

#[test]
fn fp32_matmul_rounds_operands_and_saturates_at_2_15() {
    // [1.0001, 3] . [1, 1] = 4 with fp16 operands (4.0001 exactly); [200, 200] . [100, 100] =
    // 40000 is past the multiply-accumulate port's 32768: inf on the ANE.
    let x = [1.0001f32, 3.0, 200.0, 200.0];
    let y = [1.0f32, 100.0, 1.0, 100.0];
    let input = [
        ("x", DType::Fp32, &[2usize, 2][..], &x[..]),
        ("y", DType::Fp32, &[2usize, 2][..], &y[..]),
    ];
    let body = |f: &mut FunctionBuilder<'_>, v: &[Var]| {
        vec![f.matmul(&v[0], &v[1], false, false).unwrap()]
    };
    let ane = run(Fp32Arithmetic::AsAne, &input, body);
    assert_eq!(ane[0], [4.0, h(1.0001) * 100.0 + 300.0, 400.0, f32::INFINITY]);
    let exact = run(Fp32Arithmetic::Exact, &input, body);
    // f32 accumulation (the last bit may depend on the GEMM's use of fused multiply-adds).
    for (got, want) in exact[0].iter().zip([4.0001, 400.01, 400.0, 40000.0]) {
        assert!((f64::from(*got) - want).abs() <= want * 1e-6, "{got} vs {want}");
    }
}

#[test]
fn fp32_softmax_and_reductions_follow_the_fp16_rules() {
    // softmax([0, 1e-4]) is [0.499975, 0.500025]: within half an fp16 ulp of 0.5.
    let x = [0.0f32, 1e-4];
    let z = [40000.0f32, 30000.0, 30000.0, 30000.0, 0.1, 0.2];
    let input = [
        ("x", DType::Fp32, &[1usize, 2][..], &x[..]),
        ("z", DType::Fp32, &[3usize, 2][..], &z[..]),
    ];
    let body = |f: &mut FunctionBuilder<'_>, v: &[Var]| {
        vec![
            f.softmax(&v[0], -1).unwrap(),
            f.reduce(OpKind::ReduceSum, &v[1], &[1], false).unwrap(),
            f.reduce(OpKind::ReduceMean, &v[1], &[1], false).unwrap(),
        ]
    };
    let ane = run(Fp32Arithmetic::AsAne, &input, body);
    assert_eq!(ane[0], [0.5, 0.5]);
    // reduce_sum overflows at the fp16 limit (70000 -> inf), not at 2^15 (60000 stays), and
    // the operands are fp16 (0.1 + 0.2 in fp16).
    assert_eq!(ane[1], [f32::INFINITY, 60000.0, h(h(0.1) + h(0.2))]);
    assert_eq!(ane[2][1..], [30000.0, h((h(0.1) + h(0.2)) / 2.0)]);
    let exact = run(Fp32Arithmetic::Exact, &input, body);
    let e = (1e-4f64).exp();
    for (got, want) in exact[0].iter().zip([1.0 / (1.0 + e), e / (1.0 + e)]) {
        assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert_eq!(exact[1], [70000.0, 60000.0, 0.1f32 + 0.2]);
}

/// A pseudo-random f32 that fp16 cannot hold exactly, in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

#[test]
fn an_fp32_program_gives_the_bits_of_the_same_program_in_fp16() {
    // matmul -> exp -> softmax -> reduce_sum, with a transpose (data movement) on the way and
    // an intermediate that is also an output: every arithmetic result must be the fp16
    // program's, widened exactly.
    let (a, b) = (values(4 * 8, 1), values(8 * 6, 2));
    let program = |dtype: DType| {
        let input =
            [("a", dtype, &[4usize, 8][..], &a[..]), ("b", dtype, &[8usize, 6][..], &b[..])];
        run(Fp32Arithmetic::AsAne, &input, |f, v| {
            let m = f.matmul(&v[0], &v[1], false, false).unwrap();
            let t = f.transpose(&m, &[1, 0]).unwrap();
            let e = f.unary(OpKind::Exp, &t).unwrap();
            let s = f.softmax(&e, 0).unwrap();
            let r = f.reduce(OpKind::ReduceSum, &s, &[1], false).unwrap();
            vec![r, m]
        })
    };
    let (wide, narrow) = (program(DType::Fp32), program(DType::Fp16));
    assert_eq!(bits(&wide[0]), bits(&narrow[0]), "reduce_sum");
    assert_eq!(bits(&wide[1]), bits(&narrow[1]), "matmul");
    assert!(a.iter().chain(&b).all(|&v| v != h(v)), "inputs fp16 cannot hold");
}

#[test]
fn fp32_data_movement_and_casts_stay_exact() {
    let x = values(6, 3);
    assert!(x.iter().any(|&v| v != h(v)));
    let input = [("x", DType::Fp32, &[2usize, 3][..], &x[..])];
    let out = run(Fp32Arithmetic::AsAne, &input, |f, v| {
        let t = f.transpose(&v[0], &[1, 0]).unwrap();
        let r = f.reshape(&t, &[6]).unwrap();
        let i = f.cast(&r, DType::Int32).unwrap();
        vec![r, f.cast(&i, DType::Fp32).unwrap()]
    });
    let want: Vec<f32> = (0..6).map(|k| x[(k % 2) * 3 + k / 2]).collect();
    assert_eq!(bits(&out[0]), bits(&want));
    assert_eq!(out[1], want.iter().map(|v| v.trunc()).collect::<Vec<_>>());
}

#[test]
fn fp32_nan_and_indeterminate_forms_follow_the_ane() {
    let x = [f32::NAN, f32::INFINITY, 2.0];
    let y = [1.0f32, f32::NEG_INFINITY, 1e-9];
    let input =
        [("x", DType::Fp32, &[3usize][..], &x[..]), ("y", DType::Fp32, &[3usize][..], &y[..])];
    let body = |f: &mut FunctionBuilder<'_>, v: &[Var]| vec![f.add(&v[0], &v[1]).unwrap()];
    // NaN is read as +inf; inf + -inf gives +0; 1e-9 is below fp16's smallest subnormal.
    let ane = run(Fp32Arithmetic::AsAne, &input, body);
    assert_eq!(bits(&ane[0]), bits(&[f32::INFINITY, 0.0, 2.0]));
    let exact = run(Fp32Arithmetic::Exact, &input, body);
    assert!(exact[0][0].is_nan() && exact[0][1].is_nan(), "{:?}", exact[0]);
    assert_eq!(exact[0][2], 2.0f32 + 1e-9);
}

#[test]
fn a_chain_of_fp32_ops_keeps_its_intermediates_in_fp16() {
    // x -> x*x -> exp -> + x -> relu: the fp16 copy of x (read twice, made once), four fp16
    // results, and one widening to fp32 for the output; no fp32 intermediate is computed.
    let build = || {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", TensorType::new(DType::Fp32, [1, 4, 1, 16]));
        let sq = f.mul(&x, &x).unwrap();
        let e = f.unary(OpKind::Exp, &sq).unwrap();
        let s = f.add(&e, &x).unwrap();
        let y = f.unary(OpKind::Relu, &s).unwrap();
        f.output(&y);
        f.finish();
        b.build().unwrap()
    };
    let built = build();
    let bytes = |fp32| {
        let model = device(fp32).compile(&built.program, &built.weights).unwrap();
        model.intermediate_bytes()
    };
    assert_eq!(bytes(Fp32Arithmetic::AsAne), 5 * 64 * 2 + 64 * 4);
    assert_eq!(bytes(Fp32Arithmetic::Exact), 4 * 64 * 4);
}
