use anemone::mil::validate;
use anemone::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Parse (errors show file:line:col and the line), validate, print.
    let program = text::parse_file("model.mil")?;
    let warnings = Diagnostics::from(validate::validate(&program)).into_result()?;
    println!("{} warnings\n{}", warnings.len(), text::print(&program));

    // Or build a program: shapes are inferred as you go, constants are named for you, and
    // BLOBFILE weights are packed into weights/weight.bin.
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, 64, 1, 32]));
    let x16 = f.cast(&x, DType::Fp16)?;
    let w = f.weight("W", TensorType::new(DType::Fp16, [64, 64, 1, 1]), &[0.01; 64 * 64])?;
    let y = f.conv(&x16, &w, &ConvOptions::default())?;
    // Every op of `anemone ops` has a typed method; optional inputs go in <Op>Options.
    let y = f.layer_norm(&y, &LayerNormOptions { axes: Some(vec![1]), ..Default::default() })?;
    let y = f.clip(&y, -4.0, 4.0)?;
    let y = f.gelu(&y, &GeluOptions::default())?;
    let y = f.cast(&y, DType::Fp32)?;
    f.output_named(&y, "y")?;
    f.finish();
    b.build()?.write_model_dir("my_model".as_ref())?; // model.mil + weights/weight.bin
    Ok(())
}
