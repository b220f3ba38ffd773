//! The library as a user meets it: one crate, one prelude, errors that work with `?` and
//! `Box<dyn Error>` and say where, named arrays in and out, and README code that compiles.

use std::error::Error;

use anemone::mil;
use anemone::prelude::*;

#[path = "../examples/mlp.rs"]
mod mlp;
// The README's examples read and write files in the working directory: compiled here (so
// that the README's code is known to build), not run.
#[allow(dead_code)]
#[path = "../examples/readme_build.rs"]
mod readme_build;
#[allow(dead_code)]
#[path = "../examples/readme_run.rs"]
mod readme_run;

/// The perceptron of `examples/mlp.rs` in f64, with the weights rounded to fp16 as stored.
fn mlp_reference(x: &[f32]) -> Vec<f64> {
    let [n_in, n_hidden, n_out] = mlp::SIZES;
    let w = |layer, i| f64::from(mil::f16::from_f32(mlp::weight(layer, i)).to_f32());
    let xin = |i: usize| f64::from(mil::f16::from_f32(x[i]).to_f32());
    let h: Vec<f64> = (0..n_hidden)
        .map(|j| {
            ((0..n_in).map(|i| xin(i) * w(1, i * n_hidden + j)).sum::<f64>() + w(2, j)).max(0.0)
        })
        .collect();
    (0..n_out)
        .map(|k| (0..n_hidden).map(|j| h[j] * w(3, j * n_out + k)).sum::<f64>() + w(4, k))
        .collect()
}

#[test]
fn the_mlp_example_runs_and_computes_the_perceptron() -> Result<(), Box<dyn Error>> {
    let x: Vec<f32> = (0..mlp::SIZES[0]).map(|i| (i as f32 - 7.0) / 4.0).collect();
    let y = mlp::run(&Device::simulator(), &x)?;
    let want = mlp_reference(&x);
    assert_eq!(y.len(), want.len());
    for (got, want) in y.iter().zip(&want) {
        // fp16 activations: a few units in the last place of values near 1.
        assert!((f64::from(*got) - want).abs() < 0.02 + want.abs() * 0.01, "{y:?} vs {want:?}");
    }
    // Not all zero: the relu layer passes something through.
    assert!(want.iter().any(|v| v.abs() > 0.1), "{want:?}");
    // The example's own `main`, `?` and all, on whatever device this machine has.
    mlp::main()
}

#[test]
fn the_readme_examples_are_the_readme_blocks() {
    // The README's "Running programs" section shows these files verbatim; this test
    // compiles them (as modules) and checks that the README has not drifted from them.
    let readme = include_str!("../../../README.md");
    let start =
        readme.find("\n## Running programs").expect("the README has a Running programs section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let blocks: Vec<&str> = section
        .split("```rust,no_run\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("a closed code block")])
        .collect();
    assert_eq!(
        blocks,
        [include_str!("../examples/readme_run.rs"), include_str!("../examples/readme_build.rs")],
        "README.md's Running programs blocks differ from examples/readme_*.rs"
    );
}

#[test]
fn parse_errors_show_file_line_column_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mil");
    std::fs::write(&path, "program(1.3)\n{\n  func main<ios18>(tensor<fp32, [1]> x) {\n    tensor<fp32, [1]> y = relu(x = z)[name = string(\"y\")];\n  } -> (y);\n}\n").unwrap();
    let program = text::parse_file(&path).unwrap();
    // Parses, but does not validate: `z` is not defined.
    let errors = Diagnostics::from(mil::validate::validate(&program));
    assert!(errors.has_errors());

    std::fs::write(&path, "program(1.3)\n{\n  bogus\n}\n").unwrap();
    let err: Box<dyn Error> = text::parse_file(&path).unwrap_err().into();
    let shown = err.to_string();
    let first = shown.lines().next().unwrap();
    assert!(first.starts_with(&format!("{}:3:3: error[parse::", path.display())), "{shown}");
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[1], "  3 |   bogus", "{shown}");
    assert!(lines[2].starts_with("    |   ^^^^^"), "{shown}");
    assert!(!shown.contains('\u{1b}'), "no colour codes in an error value: {shown:?}");

    let missing = text::parse_file(dir.path().join("nope.mil")).unwrap_err().to_string();
    assert!(missing.contains("nope.mil"), "{missing}");
}

#[test]
fn model_directories_round_trip_and_weight_errors_point_into_the_text() -> Result<(), Box<dyn Error>>
{
    let dir = tempfile::tempdir()?;
    let built = mlp::build()?;
    built.write_model_dir(dir.path())?;
    let (program, weights) = read_model_dir(dir.path())?;
    assert_eq!(program, built.program);
    let x = vec![0.25; mlp::SIZES[0]];
    let mut model = Device::simulator().compile(&program, &weights)?;
    let y = model.predict(&[("x", &Array::from_f32(vec![1, mlp::SIZES[0]], x.clone())?)])?;
    assert_eq!(y["y"].data.to_f32(), mlp::run(&Device::simulator(), &x)?);

    std::fs::remove_file(dir.path().join("weights/weight.bin"))?;
    let shown = read_model_dir(dir.path()).unwrap_err().to_string();
    let first = shown.lines().next().unwrap();
    assert!(first.contains("model.mil:") && first.contains("error[blob::missing-file]"), "{shown}");
    assert!(shown.contains("BLOBFILE"), "the source line is shown: {shown}");
    Ok(())
}

fn scale_program() -> Result<BuiltProgram, Box<dyn Error>> {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [2, 3]));
    let n = f.input("n", TensorType::new(DType::Int32, [2, 3]));
    let nf = f.cast(&n, DType::Fp32)?;
    let y = f.mul(&x, &nf)?;
    let y = f.output_named(&y, "y")?;
    let y16 = f.cast(&y, DType::Fp16)?;
    f.output_named(&y16, "y16")?;
    f.finish();
    Ok(b.build()?)
}

#[test]
fn predict_takes_and_returns_named_arrays_in_their_dtypes() -> Result<(), Box<dyn Error>> {
    let built = scale_program()?;
    let mut model = Device::simulator().compile(&built.program, &built.weights)?;
    let x = Array::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    // A float64 array of whole numbers fills an int32 input.
    let n = Array::new(vec![2, 3], Data::F64(vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]))?;
    let out = model.predict(&[("n", &n), ("x", &x)])?;
    assert_eq!(out.len(), 2);
    assert_eq!(out["y"].shape, [2, 3]);
    assert_eq!(out["y"].data, Data::F32(vec![1.0, 4.0, 9.0, 4.0, 10.0, 18.0]));
    assert!(matches!(&out["y16"].data, Data::F16(_)), "{:?}", out["y16"]);
    assert_eq!(out["y16"].data.to_f32(), out["y"].data.to_f32());
    Ok(())
}

#[test]
fn predict_names_what_is_wrong_with_its_inputs() -> Result<(), Box<dyn Error>> {
    let built = scale_program()?;
    let mut model = Device::simulator().compile(&built.program, &built.weights)?;
    let x = Array::from_f32(vec![2, 3], vec![1.0; 6])?;
    let n = Array::new(vec![2, 3], Data::Int(vec![1; 6]))?;
    let err = |r: anemone::Result<_>| r.unwrap_err().to_string();

    let e = err(model.predict(&[("x", &x)]));
    assert!(e.contains("missing input(s): n"), "{e}");
    let e = err(model.predict(&[("x", &x), ("n", &n), ("z", &x)]));
    assert!(e.contains("`z` is not an input") && e.contains("x") && e.contains("n"), "{e}");
    let e = err(model.predict(&[("x", &x), ("x", &x), ("n", &n)]));
    assert!(e.contains("given twice"), "{e}");
    let flat = Array::from_f32(vec![6], vec![1.0; 6])?;
    let e = err(model.predict(&[("x", &flat), ("n", &n)]));
    assert!(e.contains("input `x`") && e.contains("[6]"), "{e}");
    let half = Array::new(vec![2, 3], Data::F32(vec![0.5; 6]))?;
    let e = err(model.predict(&[("x", &x), ("n", &half)]));
    assert!(e.contains("input `n`") && e.contains("not an integer"), "{e}");
    Ok(())
}

#[test]
fn invalid_programs_list_their_errors_with_codes_and_hints() {
    let program = text::parse(
        "program(1.3)\n{\n  func main<ios18>(tensor<fp32, [1]> x) {\n    tensor<fp32, [1]> y = relu(x = z)[name = string(\"y\")];\n  } -> (y);\n}\n",
    )
    .unwrap();
    let e = Device::simulator().compile(&program, &Weights::new()).unwrap_err();
    let shown = e.to_string();
    assert!(matches!(e, anemone::Error::Invalid(_)));
    assert!(shown.starts_with("the program is not valid: error[validate::"), "{shown}");
    assert!(shown.contains('z'), "{shown}");
    // Usable as any other error.
    let boxed: Box<dyn Error> = e.into();
    assert_eq!(boxed.to_string(), shown);
}

#[test]
fn arrays_round_trip_through_npy_files() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("x.npy");
    let a = Array::new(vec![2, 2], Data::Int(vec![-1, 2, -3, 4]))?;
    npy::write(&path, &a)?;
    assert_eq!(npy::read(&path)?, a);
    Ok(())
}
