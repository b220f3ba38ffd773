//! The weight-reload probe: the seed experiment, step by step, and the answer to its
//! question. The seed compiled a 1x1 conv for the ANE with identity weights, overwrote its
//! weight file with 3x identity, unloaded and loaded without compiling, and asked whether
//! the output changed. The probe does the same on any device, then makes the same update by
//! recompiling and by dynamic weights (passed in the input), and times all three.
//!
//! Every device takes the same steps: the weight file is rewritten for real
//! (`Executable::overwrite_weight_file`), then the model unloads and loads. What the load does
//! with the file is the device's answer. On the simulator it is the reload model of
//! `sim::SimOptions::reload`: `snapshot` (as measured on the ANE) gives FAIL, `reads-disk`
//! SUCCESS, and `reads-disk` at a size where 3 x A passes the ANE's 2^15 saturation PARTIAL.

use std::time::Instant;

use anemone_mil::builder::{Builder, BuiltProgram, ConvOptions, PackedLayout};
use anemone_mil::package::Weights;
use anemone_mil::{DType, TensorType};

use crate::device::Device;
use crate::error::Result;
use crate::model::Model;

/// The seed's tolerances: an output "changed" when some element moved by more than 0.001,
/// and "equals 3 x A" when every element is within 0.1 of it. At the seed's size outputs stay
/// below 64, where 0.1 is several fp16 steps; for larger sizes the outputs grow past where one
/// fp16 step exceeds 0.1, so the comparison also allows the two roundings fp16 makes
/// (A's output and B's, 2^-10 of |3 x A| together).
pub const CHANGED_TOLERANCE: f32 = 0.001;
/// Absolute tolerance of "equals 3 x A" (widened by fp16 rounding for large outputs, as
/// described on [`CHANGED_TOLERANCE`]).
pub const TRIPLED_TOLERANCE: f32 = 0.1;

/// Whether `b` equals 3 x `a` within the seed's tolerance (widened for fp16 as above).
fn is_tripled(a: &[f32], b: &[f32]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (3.0 * x - y).abs() <= TRIPLED_TOLERANCE + (3.0 * x).abs() / 1024.0)
}

/// What the seed concluded about reloading weights from disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The output changed and equals 3 x A: reloading works.
    Success,
    /// The output changed, but not to 3 x A.
    Partial,
    /// The output did not change: weights are baked in at compile time. Also the verdict
    /// when the load after the rewrite failed and the model fell back to compiling with B
    /// (as the seed does): whatever changed then, a compile changed it.
    Fail,
}

impl Verdict {
    /// The seed's word for the verdict: `SUCCESS`, `PARTIAL` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Success => "SUCCESS",
            Verdict::Partial => "PARTIAL",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One way of changing the weights from A to B = 3 x A.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodResult {
    /// `disk-reload`, `recompile` or `dynamic`.
    pub method: &'static str,
    /// Whether the output became 3 x A (within the seed's tolerance).
    pub took_effect: bool,
    /// Largest |output - 3 x A|.
    pub max_error: f32,
    /// Milliseconds the update took (file write + unload + load; compile + load; copy).
    pub update_ms: f64,
    /// Compile+load time divided by the update time.
    pub speedup: f64,
}

/// Everything the probe measured.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightReloadReport {
    /// The device probed ([`DeviceKind::name`](crate::DeviceKind::name): `sim` or `ane`).
    pub device: &'static str,
    /// Channels of the 1x1 conv (its weight is `[channels, channels, 1, 1]`).
    pub channels: usize,
    /// Spatial size of the input `[1, channels, 1, spatial]`.
    pub spatial: usize,
    /// What the disk reload did: the seed's question answered.
    pub verdict: Verdict,
    /// Largest |B - A| after the disk reload (the seed's "Max A-B diff").
    pub max_change: f32,
    /// The load after rewriting the weight file failed, so the model compiled the program
    /// with B and loaded that instead (the seed's fallback).
    pub reload_failed: bool,
    /// Milliseconds of the first compile plus load (with weights A).
    pub compile_load_ms: f64,
    /// Milliseconds of the unload during the disk reload.
    pub unload_ms: f64,
    /// Milliseconds of the load after the weight file was rewritten (after the fallback
    /// compile, of loading its result).
    pub reload_ms: f64,
    /// The three ways of changing the weights, in order: `disk-reload`, `recompile`, `dynamic`.
    pub methods: Vec<MethodResult>,
}

const WEIGHT_PATH: &str = "@model_path/weights/weight.bin";

/// `scale` x identity, `[channels, channels]` row-major.
fn identity(channels: usize, scale: f32) -> Vec<f32> {
    (0..channels * channels)
        .map(|i| if i / channels == i % channels { scale } else { 0.0 })
        .collect()
}

/// The seed's program: fp32 x -> cast fp16 -> 1x1 conv (weight from BLOBFILE at offset 64) ->
/// cast fp32.
fn seed_program(channels: usize, spatial: usize, weights: &[f32]) -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, channels, 1, spatial]));
    let x16 = f.cast(&x, DType::Fp16).expect("valid cast");
    let w = f
        .weight("W", TensorType::new(DType::Fp16, [channels, channels, 1, 1]), weights)
        .expect("weights of the declared size");
    let y16 = f.conv(&x16, &w, &ConvOptions::default()).expect("valid conv");
    let y = f.cast(&y16, DType::Fp32).expect("valid cast");
    f.output_named(&y, "y").expect("fresh name");
    f.finish();
    b.build().expect("the seed program is valid")
}

/// The same layer with its weight passed in the input: `[1, C, 1, S + C]`, activations then
/// the weight (transposed), sliced apart in MIL.
fn dynamic_program(channels: usize, spatial: usize) -> (BuiltProgram, PackedLayout) {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let (x, ws, layout) = f
        .packed_input("x", DType::Fp32, channels, spatial, &[("W", channels)])
        .expect("valid packing");
    let x16 = f.cast(&x, DType::Fp16).expect("valid cast");
    let w16 = f.cast(&ws[0], DType::Fp16).expect("valid cast");
    let y16 = f.dynamic_linear(&x16, &w16).expect("valid matmul");
    let y = f.cast(&y16, DType::Fp32).expect("valid cast");
    f.output_named(&y, "y").expect("fresh name");
    f.finish();
    (b.build().expect("the dynamic program is valid"), layout)
}

/// The seed's input: channel c, position s = (c * spatial + s + 1) * 0.01.
fn seed_input(channels: usize, spatial: usize) -> Vec<f32> {
    (0..channels * spatial).map(|i| (i + 1) as f32 * 0.01).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn max_tripled_error(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (3.0 * x - y).abs()).fold(0.0, f32::max)
}

fn evaluate(model: &mut Model, x: &[f32]) -> Result<Vec<f32>> {
    model.input("x")?.write_f32(x)?;
    model.evaluate()?;
    model.output("y")?.read_f32()
}

/// The seed's verdict: SUCCESS when the output changed and equals 3 x A, PARTIAL when it
/// changed otherwise, FAIL when it did not change or when only a fallback compile could have
/// changed it.
fn judge(reload_failed: bool, max_change: f32, tripled: bool) -> Verdict {
    let changed = max_change > CHANGED_TOLERANCE;
    match (reload_failed, changed, tripled) {
        (true, _, _) => Verdict::Fail,
        (false, true, true) => Verdict::Success,
        (false, true, false) => Verdict::Partial,
        (false, false, _) => Verdict::Fail,
    }
}

/// Runs the probe with `channels` x `channels` weights at spatial size `spatial`. `progress`
/// receives a line per step.
pub fn weight_reload(
    device: &Device,
    channels: usize,
    spatial: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<WeightReloadReport> {
    let a = seed_program(channels, spatial, &identity(channels, 1.0));
    let b = seed_program(channels, spatial, &identity(channels, 3.0));
    let x = seed_input(channels, spatial);

    progress(&format!(
        "step 1: compile + load the {channels}x{channels} conv (spatial {spatial}) with weights A = identity"
    ));
    let start = Instant::now();
    let mut model = device.compile(&a.program, &a.weights)?;
    let compile_load_ms = start.elapsed().as_secs_f64() * 1e3;

    progress("step 2: evaluate with weights A");
    let out_a = evaluate(&mut model, &x)?;

    progress(
        "step 3: overwrite weights/weight.bin with B = 3 x identity, unload, load (no compile)",
    );
    let mut weights_b = Weights::new();
    let b_bytes = b.weights.get(WEIGHT_PATH).expect("the seed program has one weight file").bytes();
    weights_b.insert(WEIGHT_PATH, b_bytes.to_vec());
    let reload = model.reload_from_disk(&weights_b)?;

    progress("step 4: evaluate after the reload");
    let out_reload = evaluate(&mut model, &x)?;
    let max_change = max_abs_diff(&out_a, &out_reload);
    let reload_error = max_tripled_error(&out_a, &out_reload);
    let verdict = judge(reload.reload_failed, max_change, is_tripled(&out_a, &out_reload));
    let mut methods = vec![MethodResult {
        method: "disk-reload",
        took_effect: verdict == Verdict::Success,
        max_error: reload_error,
        update_ms: reload.seconds * 1e3,
        speedup: 0.0,
    }];

    progress("recompile: compile the program again with weights B");
    let mut recompiled = device.compile(&a.program, &a.weights)?;
    let update = recompiled.recompile_with(&b.weights)?;
    let out_recompile = evaluate(&mut recompiled, &x)?;
    let error = max_tripled_error(&out_a, &out_recompile);
    methods.push(MethodResult {
        method: "recompile",
        took_effect: is_tripled(&out_a, &out_recompile),
        max_error: error,
        update_ms: update.seconds * 1e3,
        speedup: 0.0,
    });

    progress("dynamic: compile once with the weight in the input, then copy B into the surface");
    let (dynamic, layout) = dynamic_program(channels, spatial);
    let mut dyn_model = device.compile(&dynamic.program, &dynamic.weights)?;
    dyn_model.use_packed_layout(layout)?;
    // The activations region is x itself ([channels, spatial]); the weight region is
    // [in, out] = W transposed, and identities are their own transposes.
    dyn_model.set_weight("activations", &x)?;
    dyn_model.set_weight("W", &identity(channels, 1.0))?;
    dyn_model.evaluate()?;
    let out_dyn_a = dyn_model.output("y")?.read_f32()?;
    let update = dyn_model.set_weight("W", &identity(channels, 3.0))?;
    dyn_model.evaluate()?;
    let out_dyn_b = dyn_model.output("y")?.read_f32()?;
    // The dynamic program computes the same layer: its A output must match the baked one.
    let error = max_tripled_error(&out_a, &out_dyn_b);
    methods.push(MethodResult {
        method: "dynamic",
        took_effect: is_tripled(&out_a, &out_dyn_b) && is_tripled(&out_dyn_a, &out_dyn_b),
        max_error: error,
        update_ms: update.seconds * 1e3,
        speedup: 0.0,
    });

    for m in &mut methods {
        m.speedup = if m.update_ms > 0.0 { compile_load_ms / m.update_ms } else { f64::INFINITY };
    }
    Ok(WeightReloadReport {
        device: device.kind().name(),
        channels,
        spatial,
        verdict,
        max_change,
        reload_failed: reload.reload_failed,
        compile_load_ms,
        unload_ms: reload.unload_seconds * 1e3,
        reload_ms: reload.load_seconds * 1e3,
        methods,
    })
}
