//! The backend's call sequence, checked line by line against the recording fake.
//!
//! The seed (`../shared/seed`, maderix's test_weight_reload.m) does, in order:
//!
//! ```text
//! desc = +[_ANEInMemoryModelDescriptor modelWithMILText:milData
//!          weights:@{path: @{offset: @0, data: wdataA}} optionsPlist:nil]
//! mdl  = +[_ANEInMemoryModel inMemoryModelWithDescriptor:desc]
//! hx   = -[mdl hexStringIdentifier]
//! td   = NSTemporaryDirectory()/hx; write td/model.mil, td/weights/weight.bin
//! -[mdl compileWithQoS:21 options:@{} error:&e]
//! -[mdl loadWithQoS:21 options:@{} error:&e]
//! ioIn, ioOut = IOSurfaceCreate(...); wI, wO = +[_ANEIOSurfaceObject objectWithIOSurface:]
//! req  = +[_ANERequest requestWithInputs:@[wI] inputIndices:@[@0] outputs:@[wO]
//!          outputIndices:@[@0] weightsBuffer:nil perfStats:nil procedureIndex:@0]
//! IOSurfaceLock(ioIn, 0); write input; IOSurfaceUnlock(ioIn, 0)
//! -[mdl evaluateWithQoS:21 options:@{} request:req error:&e]
//! IOSurfaceLock(ioOut, kIOSurfaceLockReadOnly); read output; IOSurfaceUnlock(...)
//! overwrite td/weights/weight.bin; -[mdl unloadWithQoS:21 error:&e]; -[mdl loadWithQoS:21 ...]
//! new request on the same surfaces; evaluate again
//! -[mdl unloadWithQoS:21 error:&e]; remove td; CFRelease(ioIn), CFRelease(ioOut)
//! ```
//!
//! Where the backend differs, on purpose: it asks `compiledModelExists` before compiling (a
//! cached program loads without a compile, as in ANE-LM); the model allocates its surfaces
//! (zeroed) before loading rather than after; a request is built for each evaluate, not
//! once per load; a failed load is retried once after 100 ms rather than replaced by a
//! recompile; and, without ARC, every object is released explicitly.

use std::sync::Arc;
use std::time::Duration;

use anemone_mil::blob::ReadMode;
use anemone_mil::builder::{Builder, ConvOptions};
use anemone_mil::package::Weights;
use anemone_mil::{DType, Program, TensorType, text};

use super::fake::{FakeEvaluation, FakeReload};
use super::*;
use crate::budget::{BudgetLimits, CompileBudget};
use crate::device::{Backend, CompileJob, Compiled, DeviceKind};
use crate::model::ModelOptions;
use crate::surface::Surface;
use crate::{Device, Error};

const CH: usize = 64;
const SP: usize = 32;
const WEIGHT_PATH: &str = "@model_path/weights/weight.bin";
const HEX: &str = "5EEDC0DE5EEDC0DE";

/// The seed's program: fp32 x -> cast fp16 -> 1x1 conv with `scale` x identity -> cast fp32.
fn seed_program(scale: f32) -> (Program, Weights) {
    let identity: Vec<f32> =
        (0..CH * CH).map(|i| if i / CH == i % CH { scale } else { 0.0 }).collect();
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, CH, 1, SP]));
    let x16 = f.cast(&x, DType::Fp16).unwrap();
    let w = f.weight("W", TensorType::new(DType::Fp16, [CH, CH, 1, 1]), &identity).unwrap();
    let y16 = f.conv(&x16, &w, &ConvOptions::default()).unwrap();
    let y = f.cast(&y16, DType::Fp32).unwrap();
    f.output(&y);
    f.finish();
    let built = b.build().unwrap();
    (built.program, built.weights)
}

/// Two fp16 inputs declared as `b` then `a`, and their sum.
fn two_input_program() -> Program {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let ty = TensorType::new(DType::Fp16, [1, 8, 1, 32]);
    let second = f.input("b", ty.clone());
    let first = f.input("a", ty);
    let sum = f.add(&second, &first).unwrap();
    f.output(&sum);
    f.finish();
    b.build().unwrap().program
}

/// The seed's input: channel c, position s = (c*SP + s + 1) * 0.01.
fn seed_input() -> Vec<f32> {
    (0..CH * SP).map(|i| (i + 1) as f32 * 0.01).collect()
}

fn weight_file(weights: &Weights) -> Vec<u8> {
    weights.get(WEIGHT_PATH).unwrap().bytes().to_vec()
}

/// No wait before the load retry, for tests that do not need the real one.
fn quick() -> AneOptions {
    AneOptions { load_retry_delay: Duration::ZERO, ..AneOptions::default() }
}

struct Setup {
    root: tempfile::TempDir,
    rt: Arc<RecordingRuntime>,
}

impl Setup {
    fn new() -> Setup {
        let root = tempfile::tempdir().unwrap();
        let rt = Arc::new(RecordingRuntime::new(root.path()));
        Setup { root, rt }
    }

    fn device(&self, options: AneOptions) -> Device {
        let budget = Arc::new(CompileBudget::new(BudgetLimits::default(), " per test"));
        device_with_runtime(self.rt.clone(), options, budget)
    }

    fn model_dir(&self, hex: &str) -> std::path::PathBuf {
        self.root.path().join(hex)
    }

    /// Nothing left behind: objects, surfaces, directories.
    fn assert_clean(&self) {
        assert_eq!(self.rt.live_objects(), Vec::<String>::new());
        assert_eq!(self.rt.live_surfaces(), Vec::<String>::new());
        let left: Vec<_> = std::fs::read_dir(self.root.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "left in the temporary directory: {left:?}");
    }
}

/// A backend-level compile job for the main function.
fn with_job<T>(program: &Program, weights: &Weights, f: impl FnOnce(&CompileJob) -> T) -> T {
    let text = text::print(program);
    let func = program.main_function().unwrap();
    let mut inputs: Vec<_> =
        func.inputs.iter().map(|i| (i.name.name.clone(), i.ty.as_tensor().unwrap())).collect();
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut outputs: Vec<_> = func
        .block
        .outputs
        .iter()
        .map(|o| (o.name.clone(), func.value_type(&o.name).unwrap().as_tensor().unwrap()))
        .collect();
    outputs.sort_by(|a, b| a.0.cmp(&b.0));
    f(&CompileJob {
        program,
        function: &func.name.name,
        text: &text,
        weights,
        read_mode: ReadMode::Strict,
        inputs: &inputs,
        outputs: &outputs,
    })
}

fn surface_line(bytes: usize, id: u32) -> String {
    format!(
        "IOSurfaceCreate({{width: {bytes}, height: 1, bytesPerElement: 1, bytesPerRow: {bytes}, \
         allocSize: {bytes}, pixelFormat: 0}}) -> surface#{id}"
    )
}

#[test]
fn compile_follows_the_seed() {
    let s = Setup::new();
    s.rt.set_hex_identifier(Some(HEX));
    let (program, weights) = seed_program(1.0);
    let mil = text::print(&program);
    let blob = weight_file(&weights);
    let device = s.device(AneOptions::default());
    let model = device.compile(&program, &weights).unwrap();
    assert_eq!(device.kind(), DeviceKind::Ane);
    assert!(model.is_loaded());
    let bytes = CH * SP * 4;
    let root = s.root.path().display();
    assert_eq!(
        s.rt.log(),
        [
            format!(
                "+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:] \
                 mil=<{} bytes> weights={{{WEIGHT_PATH}: {{offset: @0, data: <{} bytes>}}}} \
                 optionsPlist=nil -> descriptor#1",
                mil.len(),
                blob.len()
            ),
            "+[_ANEInMemoryModel inMemoryModelWithDescriptor:] descriptor#1 -> model#2".into(),
            format!("-[model#2 hexStringIdentifier] -> {HEX}"),
            format!("NSTemporaryDirectory() -> {root}"),
            "-[model#2 compiledModelExists] -> NO".into(),
            "-[model#2 compileWithQoS:options:error:] qos=21 options={} -> YES".into(),
            surface_line(bytes, 3),
            "IOSurfaceLock(surface#3, 0)".into(),
            "IOSurfaceUnlock(surface#3, 0)".into(),
            surface_line(bytes, 4),
            "IOSurfaceLock(surface#4, 0)".into(),
            "IOSurfaceUnlock(surface#4, 0)".into(),
            "-[model#2 loadWithQoS:options:error:] qos=21 options={} -> YES".into(),
        ]
    );
    // The program was on disk, byte for byte, when the compiler was called.
    let files = s.rt.files_at_compile();
    assert_eq!(files.len(), 1);
    let names: Vec<_> = files[0].keys().cloned().collect();
    assert_eq!(names, ["model.mil", "weights/weight.bin"]);
    assert_eq!(files[0]["model.mil"], mil.as_bytes());
    assert_eq!(files[0]["weights/weight.bin"], blob);
    assert!(s.model_dir(HEX).join("weights/weight.bin").is_file());
    // Surfaces start zeroed (the fake fills new ones with 0xA5).
    assert!(model.inputs()[0].read_bytes().iter().all(|&b| b == 0));
}

#[test]
fn evaluate_wraps_the_surfaces_in_one_request() {
    let s = Setup::new();
    let (program, weights) = seed_program(1.0);
    let device = s.device(AneOptions::default());
    let mut model = device.compile(&program, &weights).unwrap();
    let out_name = model.output_names()[0].to_string();
    s.rt.take_log();
    model.input("x").unwrap().write_f32(&seed_input()).unwrap();
    model.evaluate().unwrap();
    let y = model.output(&out_name).unwrap().read_f32().unwrap();
    assert_eq!(
        s.rt.log(),
        [
            "IOSurfaceLock(surface#3, 0)",
            "IOSurfaceUnlock(surface#3, 0)",
            "+[_ANEIOSurfaceObject objectWithIOSurface:] surface#3 -> surfaceObject#5",
            "+[_ANEIOSurfaceObject objectWithIOSurface:] surface#4 -> surfaceObject#6",
            "+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:\
             perfStats:procedureIndex:] inputs=[surfaceObject#5] inputIndices=[@0] \
             outputs=[surfaceObject#6] outputIndices=[@0] weightsBuffer=nil perfStats=nil \
             procedureIndex=@0 -> request#7",
            "-[model#2 evaluateWithQoS:options:request:error:] qos=21 options={} \
             request=request#7 -> YES",
            "-[request#7 release]",
            "-[surfaceObject#6 release]",
            "-[surfaceObject#5 release]",
            "IOSurfaceLock(surface#4, kIOSurfaceLockReadOnly)",
            "IOSurfaceUnlock(surface#4, kIOSurfaceLockReadOnly)",
        ]
    );
    // The fake evaluates as the identity: the bytes went in and came out the right surfaces.
    assert_eq!(y, seed_input());
    assert_eq!(model.stats().input_bytes, CH * SP * 4);
}

#[test]
fn surfaces_bind_in_alphabetical_order_with_indices_from_zero() {
    let s = Setup::new();
    let device = s.device(AneOptions::default());
    let program = two_input_program();
    let mut model = device.compile(&program, &Weights::new()).unwrap();
    // Declared `b` then `a`: surfaces #3 (b) and #4 (a), the output #5.
    assert_eq!(model.input_names(), ["b", "a"]);
    let a: Vec<f32> = (0..256).map(|i| i as f32).collect();
    model.input("a").unwrap().write_f32(&a).unwrap();
    model.input("b").unwrap().write_f32(&vec![-1.0; 256]).unwrap();
    s.rt.take_log();
    model.evaluate().unwrap();
    let log = s.rt.log();
    assert_eq!(log[0], "+[_ANEIOSurfaceObject objectWithIOSurface:] surface#4 -> surfaceObject#6");
    assert_eq!(log[1], "+[_ANEIOSurfaceObject objectWithIOSurface:] surface#3 -> surfaceObject#7");
    assert_eq!(log[2], "+[_ANEIOSurfaceObject objectWithIOSurface:] surface#5 -> surfaceObject#8");
    assert!(
        log[3].contains(
            "inputs=[surfaceObject#6, surfaceObject#7] inputIndices=[@0, @1] \
             outputs=[surfaceObject#8] outputIndices=[@0]"
        ),
        "{}",
        log[3]
    );
    // Identity: the output holds input 0 of the request, which is `a`.
    let out = model.output_names()[0].to_string();
    assert_eq!(model.output(&out).unwrap().read_f32().unwrap(), a);
}

#[test]
fn the_descriptor_gets_an_empty_dictionary_without_weights() {
    let s = Setup::new();
    let device = s.device(AneOptions::default());
    device.compile(&two_input_program(), &Weights::new()).unwrap();
    let first = &s.rt.log()[0];
    assert!(first.contains(" weights={} optionsPlist=nil -> descriptor#1"), "{first}");
    assert_eq!(s.rt.files_at_compile()[0].keys().collect::<Vec<_>>(), ["model.mil"]);
}

/// The seed's step 3: overwrite weights/weight.bin in the model's directory, then
/// `unloadWithQoS:21` and `loadWithQoS:21`, no compile. (On M3 Pro and M5 the ANE then
/// still computes with the old weights; that is the hardware's answer, not the fake's.)
#[test]
fn the_seeds_reload_rewrites_the_file_then_unloads_and_loads() {
    let s = Setup::new();
    let backend = AneBackend::new(s.rt.clone(), AneOptions::default());
    let (program, weights_a) = seed_program(1.0);
    let (_, weights_b) = seed_program(3.0);
    let compiled =
        Arc::new(with_job(&program, &weights_a, |job| backend.compile_program(job)).unwrap());
    assert!(compiled.compiled_on_device());
    let weight_path = compiled.temp_dir().join("weights/weight.bin");
    let mut exec = Compiled::instantiate(compiled.clone()).unwrap();
    exec.load().unwrap();
    let ty = TensorType::new(DType::Fp32, [1, CH, 1, SP]);
    let mut x = exec.alloc_surface("x", ty.clone(), 0).unwrap();
    let mut y = exec.alloc_surface("y", ty, 0).unwrap();
    x.write_f32(&seed_input()).unwrap();
    exec.evaluate(&[&x], &mut [&mut y]).unwrap();
    s.rt.take_log();

    exec.overwrite_weight_file(WEIGHT_PATH, &weight_file(&weights_b)).unwrap();
    exec.unload().unwrap();
    exec.load().unwrap();
    assert_eq!(
        s.rt.take_log(),
        [
            "-[model#2 unloadWithQoS:error:] qos=21 -> YES",
            "-[model#2 loadWithQoS:options:error:] qos=21 options={} -> YES",
        ]
    );
    assert_eq!(std::fs::read(&weight_path).unwrap(), weight_file(&weights_b));
    assert_ne!(weight_file(&weights_a), weight_file(&weights_b));
    exec.evaluate(&[&x], &mut [&mut y]).unwrap();
    assert!(s.rt.log().iter().any(|l| l.contains("evaluateWithQoS") && l.ends_with("-> YES")));

    // Cleanup as the seed's: unload, remove the directory, release the surfaces.
    s.rt.take_log();
    drop(exec);
    drop(compiled);
    drop((x, y));
    assert_eq!(
        s.rt.log(),
        [
            "-[model#2 unloadWithQoS:error:] qos=21 -> YES",
            "-[model#2 release]",
            "-[descriptor#1 release]",
            "CFRelease(surface#3)",
            "CFRelease(surface#4)",
        ]
    );
    s.assert_clean();
}

#[test]
fn overwriting_a_file_the_program_does_not_use_is_refused() {
    let s = Setup::new();
    let backend = AneBackend::new(s.rt.clone(), AneOptions::default());
    let (program, weights) = seed_program(1.0);
    let compiled =
        Arc::new(with_job(&program, &weights, |job| backend.compile_program(job)).unwrap());
    let mut exec = Compiled::instantiate(compiled.clone()).unwrap();
    let e = exec.overwrite_weight_file("@model_path/weights/other.bin", &[0; 64]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`@model_path/weights/other.bin` is not a weight file of this program (it has: \
         @model_path/weights/weight.bin)"
    );
    assert!(!compiled.temp_dir().join("weights/other.bin").exists());
}

#[test]
fn a_failed_load_is_retried_once() {
    let s = Setup::new();
    s.rt.fail(FakeCall::Load, 1, "Error Domain=com.apple.appleneuralengine Code=5 \"busy\"");
    // The real 100 ms pause, once.
    let device = s.device(AneOptions::default());
    let model = device.compile(&seed_program(1.0).0, &seed_program(1.0).1).unwrap();
    assert!(model.is_loaded());
    let loads: Vec<_> = s.rt.log().into_iter().filter(|l| l.contains(" loadWithQoS:")).collect();
    assert_eq!(
        loads,
        [
            "-[model#2 loadWithQoS:options:error:] qos=21 options={} -> NO \
             error=Error Domain=com.apple.appleneuralengine Code=5 \"busy\"",
            "-[model#2 loadWithQoS:options:error:] qos=21 options={} -> YES",
        ]
    );
}

#[test]
fn a_load_failing_twice_reports_the_nserror_and_leaves_nothing_behind() {
    let s = Setup::new();
    let nserror = "Error Domain=com.apple.appleneuralengine Code=3 \"load failed\"";
    s.rt.fail(FakeCall::Load, 2, nserror);
    let device = s.device(quick());
    let (program, weights) = seed_program(1.0);
    let e = device.compile(&program, &weights).unwrap_err();
    assert!(matches!(e, Error::Device { op: "load", .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("load failed: {nserror} (also on a retry 0 ms later)"));
    let log = s.rt.log();
    assert_eq!(log.iter().filter(|l| l.contains(" loadWithQoS:")).count(), 2);
    assert!(!log.iter().any(|l| l.contains("unloadWithQoS")), "never loaded, never unloaded");
    // The device's compile cache keeps the compiled program until the device goes.
    drop(device);
    s.assert_clean();
}

#[test]
fn different_errors_on_the_retry_are_both_reported() {
    let s = Setup::new();
    s.rt.fail(FakeCall::Load, 1, "first");
    s.rt.fail(FakeCall::Load, 1, "second");
    let device = s.device(quick());
    let e = device.compile(&two_input_program(), &Weights::new()).unwrap_err();
    assert_eq!(e.to_string(), "load failed: second (on a retry 0 ms after: first)");
}

#[test]
fn a_compile_error_carries_the_nserror_and_cleans_up() {
    let s = Setup::new();
    s.rt.set_hex_identifier(Some(HEX));
    let nserror = "Error Domain=com.apple.appleneuralengine.compiler Code=1 \
                   \"InvalidMILProgram\" UserInfo={NSLocalizedDescription=InvalidMILProgram}";
    s.rt.fail(FakeCall::Compile, 1, nserror);
    let device = s.device(AneOptions::default());
    let (program, weights) = seed_program(1.0);
    let e = device.compile(&program, &weights).unwrap_err();
    assert!(matches!(e, Error::Device { op: "compile", .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("compile failed: {nserror}"));
    let log = s.rt.log();
    assert_eq!(
        log[log.len() - 3..],
        [
            format!(
                "-[model#2 compileWithQoS:options:error:] qos=21 options={{}} -> NO error={nserror}"
            ),
            "-[model#2 release]".into(),
            "-[descriptor#1 release]".into(),
        ]
    );
    assert!(!log.iter().any(|l| l.contains(" loadWithQoS:")));
    s.assert_clean();
    assert_eq!(device.cached_programs(), 0);
}

#[test]
fn a_nil_descriptor_is_an_error_with_nothing_to_release() {
    let s = Setup::new();
    s.rt.fail(FakeCall::CreateDescriptor, 1, "the framework rejected the MIL text");
    let device = s.device(AneOptions::default());
    let e = device.compile(&two_input_program(), &Weights::new()).unwrap_err();
    assert_eq!(e.to_string(), "compile failed: the framework rejected the MIL text");
    assert_eq!(s.rt.log().len(), 1);
    s.assert_clean();
}

#[test]
fn a_hex_identifier_that_is_not_a_plain_name_is_refused() {
    let s = Setup::new();
    s.rt.set_hex_identifier(Some("../escape"));
    let device = s.device(AneOptions::default());
    let e = device.compile(&two_input_program(), &Weights::new()).unwrap_err();
    assert!(e.to_string().contains("`../escape`, which is not a directory name"), "{e}");
    assert!(!s.root.path().parent().unwrap().join("escape").exists());
    s.assert_clean();
}

#[test]
fn a_cached_program_loads_without_compiling() {
    let s = Setup::new();
    s.rt.set_compiled_model_exists(Some(true));
    let backend = AneBackend::new(s.rt.clone(), AneOptions::default());
    let (program, weights) = seed_program(1.0);
    let compiled = with_job(&program, &weights, |job| backend.compile_program(job)).unwrap();
    assert!(!compiled.compiled_on_device());
    let log = s.rt.log();
    assert!(log.contains(&"-[model#2 compiledModelExists] -> YES".to_string()), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("compileWithQoS")), "{log:#?}");
    let mut exec = Compiled::instantiate(Arc::new(compiled)).unwrap();
    exec.load().unwrap();
    assert!(s.rt.log().last().unwrap().contains(" loadWithQoS:"));
}

#[test]
fn a_second_device_reuses_the_compile_and_shares_the_directory() {
    let s = Setup::new();
    s.rt.set_hex_identifier(Some(HEX));
    let (program, weights) = seed_program(1.0);
    let first = s.device(quick());
    let second = s.device(quick());
    let m1 = first.compile(&program, &weights).unwrap();
    s.rt.take_log();
    let m2 = second.compile(&program, &weights).unwrap();
    let log = s.rt.take_log();
    assert!(log.contains(&"-[model#6 compiledModelExists] -> YES".to_string()), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("compileWithQoS")), "{log:#?}");
    // Loading a program the framework already compiled does not use up a compile.
    assert_eq!(first.budget().used(), 1);
    assert_eq!(second.budget().used(), 0);
    drop((m1, first));
    assert!(s.model_dir(HEX).join("model.mil").is_file(), "still used by the second device");
    drop((m2, second));
    s.assert_clean();
}

#[test]
fn identical_models_on_one_device_share_one_load() {
    let s = Setup::new();
    let (program, weights) = seed_program(1.0);
    let device = s.device(quick());
    let mut m1 = device.compile(&program, &weights).unwrap();
    let m2 = device.compile(&program, &weights).unwrap();
    assert!(m2.stats().cache_hit);
    let count = |what: &str| s.rt.log().iter().filter(|l| l.contains(what)).count();
    assert_eq!(count(" loadWithQoS:"), 1);
    m1.unload().unwrap();
    assert_eq!(count("unloadWithQoS"), 0, "the other model still has it loaded");
    drop(m2);
    assert_eq!(count("unloadWithQoS"), 1);
    m1.load().unwrap();
    assert_eq!(count(" loadWithQoS:"), 2);
    drop(m1);
    assert_eq!(count("unloadWithQoS"), 2);
    drop(device);
    s.assert_clean();
}

#[test]
fn dropping_unloads_releases_and_removes_the_directory() {
    let s = Setup::new();
    s.rt.set_hex_identifier(Some(HEX));
    let (program, weights) = seed_program(1.0);
    let device = s.device(AneOptions::default());
    let mut model = device.compile(&program, &weights).unwrap();
    model.evaluate().unwrap();
    s.rt.take_log();
    drop(model);
    assert_eq!(
        s.rt.take_log(),
        [
            "-[model#2 unloadWithQoS:error:] qos=21 -> YES",
            "CFRelease(surface#3)",
            "CFRelease(surface#4)"
        ]
    );
    assert!(s.model_dir(HEX).is_dir(), "the compiled program stays in the device's cache");
    drop(device);
    assert_eq!(s.rt.take_log(), ["-[model#2 release]", "-[descriptor#1 release]"]);
    s.assert_clean();
}

#[test]
fn an_evaluate_error_carries_the_nserror_and_releases_the_request() {
    let s = Setup::new();
    let nserror = "Error Domain=com.apple.appleneuralengine Code=0x1d";
    s.rt.fail(FakeCall::Evaluate, 1, nserror);
    let device = s.device(AneOptions::default());
    let mut model = device.compile(&two_input_program(), &Weights::new()).unwrap();
    let e = model.evaluate().unwrap_err();
    assert_eq!(e.to_string(), format!("evaluate failed: {nserror}"));
    let live = s.rt.live_objects();
    assert_eq!(live, ["descriptor#1", "model#2"]);
    model.evaluate().unwrap();
}

#[test]
fn evaluate_refuses_unequal_and_foreign_surfaces() {
    let s = Setup::new();
    let backend = AneBackend::new(s.rt.clone(), AneOptions::default());
    let program = two_input_program();
    let compiled = with_job(&program, &Weights::new(), |job| backend.compile_program(job)).unwrap();
    let mut exec = Compiled::instantiate(Arc::new(compiled)).unwrap();
    exec.load().unwrap();
    let ty = TensorType::new(DType::Fp16, [1, 8, 1, 32]);
    let a = exec.alloc_surface("a", ty.clone(), 0).unwrap();
    let b = exec.alloc_surface("b", ty.clone(), 1024).unwrap();
    let mut out = exec.alloc_surface("out", ty.clone(), 0).unwrap();
    let e = exec.evaluate(&[&a, &b], &mut [&mut out]).unwrap_err();
    assert!(matches!(e, Error::UnequalSurfaces { what: "input", .. }), "{e}");
    let heap = Surface::new_heap("b", ty, 0).unwrap();
    let e = exec.evaluate(&[&a, &heap], &mut [&mut out]).unwrap_err();
    assert_eq!(e.to_string(), "unsupported: surface `b` was not allocated by the ANE backend");
    assert!(!s.rt.log().iter().any(|l| l.contains("evaluateWithQoS")));
}

#[test]
fn evaluate_before_load_is_a_state_error() {
    let s = Setup::new();
    let device = s.device(AneOptions::default());
    let mut model = device.compile(&two_input_program(), &Weights::new()).unwrap();
    model.unload().unwrap();
    let e = model.evaluate().unwrap_err();
    assert!(matches!(e, Error::State(_)), "{e}");
}

#[test]
fn the_qos_is_an_option() {
    let s = Setup::new();
    let device = s.device(AneOptions { qos: 9, ..AneOptions::default() });
    let mut model = device.compile(&two_input_program(), &Weights::new()).unwrap();
    model.evaluate().unwrap();
    drop(model);
    let with_qos: Vec<_> = s.rt.log().into_iter().filter(|l| l.contains("qos=")).collect();
    assert_eq!(with_qos.len(), 4, "{with_qos:#?}");
    assert!(with_qos.iter().all(|l| l.contains(" qos=9 ")), "{with_qos:#?}");
}

#[test]
fn the_procedure_index_is_the_functions_position() {
    let s = Setup::new();
    let mut b = Builder::new();
    for name in ["first", "second"] {
        let mut f = b.function(name);
        let x = f.input("x", TensorType::new(DType::Fp16, [1, 8, 1, 32]));
        let y = f.add(&x, &x).unwrap();
        f.output(&y);
        f.finish();
    }
    let program = b.build().unwrap().program;
    let device = s.device(AneOptions::default());
    let options = ModelOptions { function: Some("second".into()), ..ModelOptions::default() };
    let mut model = device.compile_with(&program, &Weights::new(), &options).unwrap();
    model.evaluate().unwrap();
    let request = s.rt.log().into_iter().find(|l| l.contains("requestWithInputs")).unwrap();
    assert!(request.contains("procedureIndex=@1 -> request#"), "{request}");
}

#[test]
fn weight_paths_outside_the_model_directory_never_reach_the_framework() {
    let s = Setup::new();
    let backend = AneBackend::new(s.rt.clone(), AneOptions::default());
    let (program, weights) = seed_program(1.0);
    let mut evil = Weights::new();
    evil.insert_file("@model_path/../../escape.bin", weights.get(WEIGHT_PATH).unwrap().clone());
    let e = with_job(&program, &evil, |job| backend.compile_program(job)).unwrap_err();
    assert!(matches!(e, Error::Weights(_)), "{e}");
    assert!(s.rt.log().is_empty());
}

#[test]
#[cfg(not(target_os = "macos"))]
fn off_macos_the_device_is_unavailable_with_the_reason() {
    let reason = "needs macOS on Apple Silicon (AppleNeuralEngine.framework not found)";
    let e = open_device().unwrap_err();
    assert!(matches!(&e, Error::Unavailable(r) if r == reason), "{e:?}");
    assert_eq!(e.to_string(), format!("unavailable: {reason}"));
    assert_eq!(availability(), Err(reason.to_string()));
    assert_eq!(Device::auto().unwrap().kind(), DeviceKind::Simulator);
}

#[test]
fn the_ane_budget_is_one_per_process() {
    let (a, b) = (process_budget(), process_budget());
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.limits(), BudgetLimits::default());
}

#[test]
fn the_backend_binds_alphabetically_as_the_ane() {
    let s = Setup::new();
    let backend = AneBackend::new(s.rt.clone(), AneOptions::default());
    assert_eq!(backend.kind(), DeviceKind::Ane);
    assert_eq!(backend.binding_order(), crate::device::BindingOrder::Alphabetical);
    assert_eq!(
        AneOptions::default(),
        AneOptions { qos: 21, load_retry_delay: Duration::from_millis(100) }
    );
}

#[test]
fn model_weight_updates_drive_the_seeds_calls() {
    let s = Setup::new();
    let device = s.device(quick());
    let (program, weights_a) = seed_program(1.0);
    let (_, weights_b) = seed_program(3.0);
    let mut model = device.compile(&program, &weights_a).unwrap();
    s.rt.take_log();

    // Model::reload_from_disk is the seed's step 3: rewrite the file, unload, load.
    let update = model.reload_from_disk(&weights_b).unwrap();
    assert!(!update.compiled);
    let log = s.rt.take_log();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log[0].contains(" unloadWithQoS:error:] qos=21 -> YES"), "{log:#?}");
    assert!(log[1].contains(" loadWithQoS:options:error:] qos=21"), "{log:#?}");

    // Model::recompile_with is a new descriptor and a real compile, charged to the budget.
    let used = device.budget().used();
    let update = model.recompile_with(&weights_b).unwrap();
    assert!(update.compiled);
    assert_eq!(device.budget().used(), used + 1);
    let log = s.rt.take_log();
    assert!(log.iter().any(|l| l.contains("compileWithQoS")), "{log:#?}");
}

/// The probe on the ANE backend over the fake, with the fake computing the seed's conv from
/// the weight files its model holds after each load.
fn probe_on_the_fake(reload: FakeReload) -> crate::probe::WeightReloadReport {
    let s = Setup::new();
    s.rt.set_evaluation(FakeEvaluation::Conv1x1);
    s.rt.set_reload(reload);
    let device = s.device(quick());
    let mut steps = Vec::new();
    let r = crate::probe::weight_reload(&device, CH, SP, &mut |l| steps.push(l.to_string()));
    let r = r.unwrap();
    assert_eq!(r.device, "ane");
    assert!(steps[2].starts_with("step 3: overwrite weights/weight.bin"), "{steps:#?}");
    r
}

#[test]
fn the_probe_on_a_device_that_keeps_its_compiled_weights_fails() {
    let r = probe_on_the_fake(FakeReload::Snapshot);
    assert_eq!(r.verdict, crate::probe::Verdict::Fail);
    assert_eq!(r.max_change, 0.0);
    assert!(!r.methods[0].took_effect);
    // The recompile reaches the device with B and takes effect.
    assert_eq!(r.methods[1].method, "recompile");
    assert!(r.methods[1].took_effect, "{:?}", r.methods[1]);
}

#[test]
fn the_probe_on_a_device_whose_load_reads_the_disk_succeeds() {
    let r = probe_on_the_fake(FakeReload::ReadsDisk);
    assert_eq!(r.verdict, crate::probe::Verdict::Success);
    // B - A = 2 x A, and the largest input is CH * SP * 0.01.
    let expect = 2.0 * (CH * SP) as f32 * 0.01;
    assert!((r.max_change - expect).abs() < 0.05, "{} vs {expect}", r.max_change);
    assert!(r.methods[0].took_effect && r.methods[0].max_error <= 0.1, "{:?}", r.methods[0]);
}

/// A load that re-reads only the first half of the file (header, record, and the rows of
/// the first half of the output channels): those channels become 3 x A, the others stay A.
#[test]
fn the_probe_on_a_device_that_reads_part_of_the_file_is_partial() {
    let half = 128 + CH * CH; // 64-byte header + 64-byte record + half of C x C fp16 values
    let r = probe_on_the_fake(FakeReload::ReadsFirstBytes(half));
    assert_eq!(r.verdict, crate::probe::Verdict::Partial);
    assert!(r.max_change > 1.0, "{}", r.max_change);
    assert!(!r.methods[0].took_effect);
    // The channels left at A are 2 x A away from 3 x A.
    assert!(r.methods[0].max_error > r.max_change * 0.5, "{:?}", r.methods[0]);
}

#[test]
fn the_fake_computes_with_the_weights_its_load_chose() {
    let s = Setup::new();
    s.rt.set_evaluation(FakeEvaluation::Conv1x1);
    s.rt.set_reload(FakeReload::ReadsDisk);
    let (program, weights_a) = seed_program(1.0);
    let (_, weights_b) = seed_program(3.0);
    let device = s.device(quick());
    let mut model = device.compile(&program, &weights_a).unwrap();
    let out = model.output_names()[0].to_string();
    let run = |model: &mut crate::Model| {
        model.input("x").unwrap().write_f32(&seed_input()).unwrap();
        model.evaluate().unwrap();
        model.output(&out).unwrap().read_f32().unwrap()
    };
    let x = seed_input();
    assert_eq!(run(&mut model), x);
    model.reload_from_disk(&weights_b).unwrap();
    let y = run(&mut model);
    assert!(y.iter().zip(&x).all(|(y, x)| (y - 3.0 * x).abs() <= 0.1 + x.abs() / 300.0));
    // Under the snapshot model a load goes back to the weights of the compile, whatever
    // the disk holds.
    s.rt.set_reload(FakeReload::Snapshot);
    model.reload_from_disk(&weights_b).unwrap();
    assert_eq!(run(&mut model), x, "snapshot: the weights of the compile");
}

/// The seed's fallback: when the load after the rewrite fails, the model compiles with B.
/// Its output is then 3 x A, but a compile made it so: the verdict is FAIL, not SUCCESS.
#[test]
fn a_reload_that_falls_back_to_a_compile_is_not_a_success() {
    let s = Setup::new();
    s.rt.set_evaluation(FakeEvaluation::Conv1x1);
    // The first load (after compiling A) works; the reload's load and its retry fail.
    s.rt.fail_after(FakeCall::Load, 1, 2, "Error Domain=com.apple.appleneuralengine Code=5");
    let device = s.device(quick());
    let r = crate::probe::weight_reload(&device, CH, SP, &mut |_| {}).unwrap();
    assert!(r.reload_failed);
    assert_eq!(r.verdict, crate::probe::Verdict::Fail);
    assert!(!r.methods[0].took_effect);
    // The fallback did change the output, to 3 x A.
    assert!(r.max_change > 1.0 && r.methods[0].max_error <= 0.1, "{r:?}");
}

#[test]
fn an_imported_core_ml_model_reaches_the_compiler_as_its_printed_program_and_weight_file() {
    // What the ANE compiler does with it cannot be checked here; what it is handed can: the
    // program as `anemone import` prints it (masked attention rewritten) and the package's
    // weight file byte for byte.
    let package = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/coreml/sdpa-ios18/model.mlpackage");
    let imported = anemone_mil::coreml::read(&package).unwrap();
    let mut program = imported.program.clone();
    assert_eq!(anemone_mil::lower::for_ane(&mut program).len(), 1);
    let s = Setup::new();
    s.rt.set_hex_identifier(Some(HEX));
    let device = s.device(AneOptions::default());
    let mut model = device.compile(&program, &imported.weights).unwrap();
    let files = s.rt.files_at_compile();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["model.mil"], text::print(&program).as_bytes());
    let weight_file = imported.weights.get(WEIGHT_PATH).unwrap().bytes();
    assert_eq!(files[0]["weights/weight.bin"], weight_file);
    assert_eq!(model.input_names(), ["x"]);
    model.evaluate().unwrap();
    drop(model);
    drop(device);
    s.assert_clean();
}
