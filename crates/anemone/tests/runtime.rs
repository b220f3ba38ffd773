//! The ANE's rules, as the runtime and the simulator keep them: weights snapshotted at
//! compile, equal-size surfaces (error 0x1d otherwise), inputs of different sizes padded by
//! the runtime, the compile budget, and the compile cache.

use std::sync::Arc;

use anemone::device::{Backend, CompileJob};
use anemone::sim::SimBackend;
use anemone::{BudgetLimits, Device, Error, Surface, Weights};
use anemone_mil::blob::ReadMode;
use anemone_mil::builder::{Builder, BuiltProgram, ConvOptions};
use anemone_mil::package::ModelDir;
use anemone_mil::{DType, TensorType};

const CH: usize = 64;
const SP: usize = 32;

fn identity(scale: f32) -> Vec<f32> {
    (0..CH * CH).map(|i| if i / CH == i % CH { scale } else { 0.0 }).collect()
}

/// The seed's program: fp32 x -> fp16 -> 1x1 conv with weights `w` -> fp32.
fn seed_program(w: &[f32]) -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, CH, 1, SP]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let w = f.weight("W", TensorType::new(DType::Fp16, [CH, CH, 1, 1]), w).unwrap();
    let y16 = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
    let y = f.cast(&y16, DType::Fp32).unwrap();
    f.output_named(&y, "y").unwrap();
    f.finish();
    b.build().unwrap()
}

/// The seed's input pattern: (c * SP + s + 1) * 0.01.
fn seed_input() -> Vec<f32> {
    (0..CH * SP).map(|i| (i + 1) as f32 * 0.01).collect()
}

#[test]
fn weights_are_snapshotted_at_compile() {
    let dir = tempfile::tempdir().unwrap();
    let built = seed_program(&identity(1.0));
    let model_dir = built.write_model_dir(dir.path()).unwrap();
    let weights = model_dir.load_weights(&built.program).unwrap();
    let device = Device::simulator();
    let mut model = device.compile(&built.program, &weights).unwrap();
    model.input("x").unwrap().write_f32(&seed_input()).unwrap();
    model.evaluate().unwrap();
    let a = model.output("y").unwrap().read_f32().unwrap();

    // Rewrite the weight file on disk with 3x identity, unload and load: nothing changes.
    let tripled = seed_program(&identity(3.0));
    let path = model_dir.resolve("@model_path/weights/weight.bin").unwrap();
    let bytes = tripled.weights.get("@model_path/weights/weight.bin").unwrap().bytes().to_vec();
    anemone_mil::blob::write_file_atomic(&path, &bytes).unwrap();
    model.unload().unwrap();
    assert!(model.evaluate().is_err(), "evaluate after unload must fail");
    model.load().unwrap();
    model.evaluate().unwrap();
    assert_eq!(model.output("y").unwrap().read_f32().unwrap(), a);

    // Compiling again from the directory picks the new file up.
    let reread = ModelDir::open(dir.path()).unwrap().load_weights(&built.program).unwrap();
    let mut recompiled = device.compile(&built.program, &reread).unwrap();
    recompiled.input("x").unwrap().write_f32(&seed_input()).unwrap();
    recompiled.evaluate().unwrap();
    let b = recompiled.output("y").unwrap().read_f32().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((y - 3.0 * x).abs() <= 3.0 * x.abs() * 1e-3, "{y} vs 3 x {x}");
    }
}

/// A program with inputs of 8 KiB and 24 KiB (fixture 03's shape): x [1,64,32], W [1,96,64].
fn two_input_program() -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, 64, 32]));
    let w = f.input("W", TensorType::new(DType::Fp32, [1, 96, 64]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let w16 = f.cast(&w, DType::Fp16).unwrap();
    let y = f.matmul(&w16, &x16, false, false).unwrap();
    let y = f.cast(&y, DType::Fp32).unwrap();
    f.output_named(&y, "y").unwrap();
    f.finish();
    b.build().unwrap()
}

#[test]
fn inputs_of_different_sizes_work_through_the_runtime() {
    let built = two_input_program();
    let mut model = Device::simulator().compile(&built.program, &built.weights).unwrap();
    // The runtime padded both input surfaces to the larger size.
    let sizes: Vec<usize> = model.inputs().iter().map(Surface::alloc_size).collect();
    assert_eq!(sizes, vec![64 * 32 * 4 + 96 * 64 * 4 - 64 * 32 * 4; 2]);
    assert_eq!(model.stats().padding_bytes, 96 * 64 * 4 - 64 * 32 * 4);
    model.input("x").unwrap().write_f32(&vec![1.0; 64 * 32]).unwrap();
    model.input("W").unwrap().write_f32(&vec![0.5; 96 * 64]).unwrap();
    model.evaluate().unwrap();
    assert!(model.output("y").unwrap().read_f32().unwrap().iter().all(|&v| v == 32.0));
}

#[test]
fn unequal_surfaces_reaching_the_simulator_fail_with_0x1d() {
    let built = two_input_program();
    let inputs = vec![
        ("W".to_string(), TensorType::new(DType::Fp32, [1, 96, 64])),
        ("x".to_string(), TensorType::new(DType::Fp32, [1, 64, 32])),
    ];
    let outputs = vec![("y".to_string(), TensorType::new(DType::Fp32, [1, 96, 32]))];
    let text = anemone_mil::text::print(&built.program);
    let job = CompileJob {
        program: &built.program,
        function: "main",
        text: &text,
        weights: &built.weights,
        read_mode: ReadMode::Strict,
        inputs: &inputs,
        outputs: &outputs,
    };
    let compiled = SimBackend::new().compile(&job).unwrap();
    let mut exec = Arc::clone(&compiled).instantiate().unwrap();
    exec.load().unwrap();
    // Surfaces of their own sizes, unpadded: what a backend that forgot the rule would pass.
    let w = exec.alloc_surface("W", inputs[0].1.clone(), 0).unwrap();
    let x = exec.alloc_surface("x", inputs[1].1.clone(), 0).unwrap();
    let mut y = exec.alloc_surface("y", outputs[0].1.clone(), 0).unwrap();
    let e = exec.evaluate(&[&w, &x], &mut [&mut y]).unwrap_err();
    assert!(matches!(e, Error::UnequalSurfaces { what: "input", .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("0x1d") && msg.contains("`W` 24576 B") && msg.contains("`x` 8192 B"),
        "{msg}"
    );
}

#[test]
fn the_compile_budget_refuses_past_its_limit() {
    let device = Device::simulator_with_budget(BudgetLimits { warn_at: 1, refuse_at: 3 });
    let programs: Vec<_> = (1..=4).map(|k| seed_program(&identity(k as f32))).collect();
    for p in &programs[..3] {
        device.compile(&p.program, &p.weights).unwrap();
    }
    assert_eq!(device.budget().used(), 3);
    let e = device.compile(&programs[3].program, &programs[3].weights).unwrap_err();
    assert!(matches!(e, Error::BudgetExhausted { used: 3, limit: 3, .. }), "{e}");
    assert!(e.to_string().contains("dynamic weights"), "{e}");
    // A program compiled before is still served from the cache, budget or not.
    let again = device.compile(&programs[0].program, &programs[0].weights).unwrap();
    assert!(again.stats().cache_hit);
    // Budgets belong to devices on the simulator: a fresh device starts at zero.
    assert_eq!(Device::simulator().budget().used(), 0);
}

#[test]
fn the_cache_avoids_a_second_compile_and_unload_load_is_cheap() {
    let device = Device::simulator();
    let p = seed_program(&identity(1.0));
    let mut first = device.compile(&p.program, &p.weights).unwrap();
    let second = device.compile(&p.program, &p.weights).unwrap();
    assert!(!first.stats().cache_hit);
    assert!(second.stats().cache_hit);
    assert_eq!(device.budget().used(), 1);
    assert_eq!(device.cached_programs(), 1);
    // Other weights are another program.
    let q = seed_program(&identity(2.0));
    assert!(!device.compile(&q.program, &q.weights).unwrap().stats().cache_hit);
    assert_eq!(device.budget().used(), 2);
    device.clear_cache();
    assert_eq!(device.cached_programs(), 0);
    assert!(!device.compile(&q.program, &q.weights).unwrap().stats().cache_hit);
    assert_eq!(device.budget().used(), 3);

    first.input("x").unwrap().write_f32(&seed_input()).unwrap();
    first.evaluate().unwrap();
    let before = first.output("y").unwrap().read_f32().unwrap();
    for _ in 0..3 {
        first.unload().unwrap();
        assert!(!first.is_loaded());
        first.load().unwrap();
    }
    first.evaluate().unwrap();
    assert_eq!(first.output("y").unwrap().read_f32().unwrap(), before);
    assert_eq!(device.budget().used(), 3, "load does not compile");
}

#[test]
fn names_are_checked_and_bind_alphabetically() {
    let built = two_input_program();
    let mut model = Device::simulator().compile(&built.program, &built.weights).unwrap();
    // Declaration order is x, W; the surfaces are still found by name.
    assert_eq!(model.input_names(), vec!["x", "W"]);
    let e = model.input("w").unwrap_err().to_string();
    assert!(e.contains("`w` is not an input") && e.contains("x, W"), "{e}");
    assert!(model.output("nope").is_err());
    let e = model.input("x").unwrap().write_f32(&[1.0]).unwrap_err().to_string();
    assert!(e.contains("2048 elements"), "{e}");
}

#[test]
fn invalid_programs_and_missing_weights_are_refused_at_compile() {
    let p = seed_program(&identity(1.0));
    let e = Device::simulator().compile(&p.program, &Weights::new()).unwrap_err();
    assert!(matches!(e, Error::Weights(_)), "{e}");
    assert!(e.to_string().contains("@model_path/weights/weight.bin"), "{e}");
}

fn run_text(text: &str, inputs: &[(&str, &[f32])], output: &str) -> anemone::Result<Vec<f32>> {
    let program = anemone_mil::text::parse(text).unwrap_or_else(|d| panic!("{}", d.message));
    let mut model = Device::simulator().compile(&program, &Weights::new())?;
    for (name, values) in inputs {
        model.input(name)?.write_f32(values)?;
    }
    model.evaluate()?;
    model.output(output)?.read_f32()
}

#[test]
fn an_inline_literal_never_shadows_a_value_of_the_program() {
    // The literal of op `a` would be labelled `a_y`, the name of a real value.
    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [4]> x) {\n        tensor<fp16, [4]> a_y = relu(x = x)[name = string(\"r\")];\n        tensor<fp16, [4]> a = add(x = x, y = tensor<fp16, [4]>([1, 1, 1, 1]))[name = string(\"a\")];\n        tensor<fp16, [4]> out = add(x = a_y, y = a)[name = string(\"out\")];\n    } -> (out, a_y);\n}\n";
    let x = [-1.0, 2.0, -3.0, 4.0];
    assert_eq!(run_text(text, &[("x", &x)], "out").unwrap(), vec![0.0, 5.0, -2.0, 9.0]);
    assert_eq!(run_text(text, &[("x", &x)], "a_y").unwrap(), vec![0.0, 2.0, 0.0, 4.0]);
}

#[test]
fn constexpr_dequantize_takes_a_per_channel_zero_point_with_a_scalar_scale() {
    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [2, 2]> x) {\n        tensor<fp16, [2, 2]> w = constexpr_affine_dequantize()[axis = int32(0), name = string(\"w\"), quantized_data = tensor<int8, [2, 2]>([1, 1, 1, 1]), scale = fp16(1), zero_point = tensor<int8, [2]>([0, 1])];\n        tensor<fp16, [2, 2]> y = add(x = x, y = w)[name = string(\"y\")];\n    } -> (y);\n}\n";
    assert_eq!(run_text(text, &[("x", &[0.0; 4])], "y").unwrap(), vec![1.0, 1.0, 0.0, 0.0]);
}

#[test]
fn a_shape_too_large_for_memory_is_an_error_not_a_crash() {
    let text = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 65536, 65536, 64]> x) {\n        tensor<fp16, [1, 65536, 65536, 64]> y = relu(x = x)[name = string(\"y\")];\n    } -> (y);\n}\n";
    let program = anemone_mil::text::parse(text).unwrap();
    let e = Device::simulator().compile(&program, &Weights::new()).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
    assert!(e.to_string().contains("cannot allocate"), "{e}");
}
