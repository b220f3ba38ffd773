//! A two-layer perceptron, built, compiled and run with nothing but the `anemone` crate:
//! `cargo run -p anemone --example mlp` (on the ANE where there is one, else the simulator).

use std::error::Error;

use anemone::prelude::*;

/// Input features, hidden units and outputs.
pub const SIZES: [usize; 3] = [16, 32, 4];

/// A deterministic weight: small values of both signs, different for every element.
pub fn weight(layer: usize, i: usize) -> f32 {
    ((i * 7 + layer * 5) % 13) as f32 / 26.0 - 0.25
}

/// `y = W2 · relu(W1 · x + b1) + b2`, as a MIL program with its weights.
pub fn build() -> Result<BuiltProgram, Box<dyn Error>> {
    let [n_in, n_hidden, n_out] = SIZES;
    let values = |layer: usize, n: usize| (0..n).map(|i| weight(layer, i)).collect::<Vec<_>>();
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, n_in]));
    // The ANE computes in fp16: cast in, compute, cast out.
    let x16 = f.cast(&x, DType::Fp16)?;
    let w1 = f.weight(
        "W1",
        TensorType::new(DType::Fp16, [n_in, n_hidden]),
        &values(1, n_in * n_hidden),
    )?;
    let b1 = f.weight("b1", TensorType::new(DType::Fp16, [1, n_hidden]), &values(2, n_hidden))?;
    let w2 = f.weight(
        "W2",
        TensorType::new(DType::Fp16, [n_hidden, n_out]),
        &values(3, n_hidden * n_out),
    )?;
    let b2 = f.weight("b2", TensorType::new(DType::Fp16, [1, n_out]), &values(4, n_out))?;
    let h = f.matmul(&x16, &w1, false, false)?;
    let h = f.add(&h, &b1)?;
    let h = f.unary(OpKind::Relu, &h)?;
    let y = f.matmul(&h, &w2, false, false)?;
    let y = f.add(&y, &b2)?;
    let y = f.cast(&y, DType::Fp32)?;
    f.output_named(&y, "y")?;
    f.finish();
    Ok(b.build()?)
}

/// Builds the perceptron, compiles it on `device` and runs it on `x`.
pub fn run(device: &Device, x: &[f32]) -> Result<Vec<f32>, Box<dyn Error>> {
    let built = build()?;
    let mut model = device.compile(&built.program, &built.weights)?;
    let x = Array::from_f32(vec![1, SIZES[0]], x.to_vec())?;
    let outputs = model.predict(&[("x", &x)])?;
    Ok(outputs["y"].data.to_f32())
}

/// Runs the perceptron on the best device here and prints its outputs.
pub fn main() -> Result<(), Box<dyn Error>> {
    let device = Device::auto()?;
    let x: Vec<f32> = (0..SIZES[0]).map(|i| i as f32 / 8.0 - 1.0).collect();
    let y = run(&device, &x)?;
    println!("{} ran the perceptron: y = {y:?}", device.kind());
    Ok(())
}
