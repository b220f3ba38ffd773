//! A compiled model and the ANE's lifecycle: compile (validate, plan, snapshot weights),
//! load, evaluate, unload. Inputs and outputs are addressed by MIL name; the model binds
//! them in whatever order the backend needs and pads surfaces so they share one size.

use std::sync::Arc;
use std::time::Instant;

use anemone_mil::builder::{PackedLayout, PackedRegion};
use anemone_mil::{Program, TensorType, Type, text, validate};

use crate::device::{BindingOrder, CacheKey, CompileJob, Device, Executable, StepTime};
use crate::error::{Error, Result};
use crate::surface::{Surface, encode_f32};
use anemone_mil::blob::ReadMode;
use anemone_mil::package::{self, Weights};

/// Options for `Device::compile_with`.
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// The function to run (default: `main`, else the first).
    pub function: Option<String>,
    /// How weight records are read: strictly (default) or leniently, as the ANE compiler
    /// does, for the irregular files some research code writes.
    pub read_mode: ReadMode,
}

/// Timings and sizes of a model, for `anemone run --stats` and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct ModelStats {
    /// Seconds spent compiling: validation, printing, hashing for the cache, and the
    /// backend's compile (skipped on a cache hit).
    pub compile_seconds: f64,
    /// Whether the compile was served by the device's cache.
    pub cache_hit: bool,
    /// Seconds of the last load.
    pub load_seconds: f64,
    /// Seconds of the last unload.
    pub unload_seconds: f64,
    /// Seconds of the last evaluate.
    pub evaluate_seconds: f64,
    /// Bytes of the input surfaces (padding included).
    pub input_bytes: usize,
    /// Bytes of the output surfaces (padding included).
    pub output_bytes: usize,
    /// Bytes of padding added so that surfaces share one size.
    pub padding_bytes: usize,
}

/// A program compiled for a device, with its input and output surfaces.
pub struct Model {
    device: Device,
    program: Arc<Program>,
    function: String,
    weights: Weights,
    exec: Box<dyn Executable>,
    /// Surfaces in declaration order.
    inputs: Vec<Surface>,
    outputs: Vec<Surface>,
    /// Indices into `inputs`/`outputs` in the backend's binding order.
    input_binding: Vec<usize>,
    output_binding: Vec<usize>,
    stats: ModelStats,
    options: ModelOptions,
    /// Where dynamic weights sit in packed inputs (`set_weight`).
    layouts: Vec<PackedLayout>,
}

/// What one weight update took.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WeightUpdate {
    /// Seconds, end to end.
    pub seconds: f64,
    /// Seconds spent unloading (disk reload).
    pub unload_seconds: f64,
    /// Seconds spent loading again (disk reload, recompile).
    pub load_seconds: f64,
    /// Whether a real compile happened (it counts against the budget).
    pub compiled: bool,
    /// [`Model::reload_from_disk`] only: the load after rewriting the weight files failed,
    /// so the program was compiled again with the new weights and that was loaded instead
    /// (the seed's fallback). `compiled` says whether that took a real compile (a program
    /// already in the device's cache takes none).
    pub reload_failed: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("device", &self.device.kind())
            .field("function", &self.function)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// Everything that goes into a compile, prepared before the backend sees it.
pub(crate) struct Prepared {
    pub function: String,
    pub text: String,
    pub key: CacheKey,
    /// (name, type) in declaration order.
    pub inputs: Vec<(String, TensorType)>,
    pub outputs: Vec<(String, TensorType)>,
    pub input_binding: Vec<usize>,
    pub output_binding: Vec<usize>,
}

impl Prepared {
    pub fn new(
        device: &Device,
        program: &Program,
        weights: &Weights,
        options: &ModelOptions,
    ) -> Result<Prepared> {
        let diags = validate::validate(program);
        if diags.iter().any(|d| d.is_error()) {
            return Err(Error::Invalid(diags));
        }
        let func = match &options.function {
            Some(name) => program.function(name).ok_or_else(|| {
                let names: Vec<_> =
                    program.functions.iter().map(|f| f.name.name.as_str()).collect();
                Error::UnknownName(format!(
                    "the program has no function `{name}` (it has: {})",
                    names.join(", ")
                ))
            })?,
            None => program
                .main_function()
                .ok_or_else(|| Error::UnknownName("the program has no function".into()))?,
        };
        let as_tensor = |name: &str, ty: &Type| {
            ty.as_tensor().ok_or_else(|| {
                Error::Unsupported(format!("`{name}` is {ty}; inputs and outputs must be tensors"))
            })
        };
        let inputs = func
            .inputs
            .iter()
            .map(|i| Ok((i.name.name.clone(), as_tensor(&i.name.name, &i.ty)?)))
            .collect::<Result<Vec<_>>>()?;
        let outputs = func
            .block
            .outputs
            .iter()
            .map(|o| {
                let ty = func.value_type(&o.name).ok_or_else(|| {
                    Error::UnknownName(format!("output `{}` is not defined", o.name))
                })?;
                Ok((o.name.clone(), as_tensor(&o.name, ty)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let blob_errors: Vec<_> = package::check_blob_refs(program, weights, options.read_mode)
            .into_iter()
            .filter(|d| d.is_error())
            .collect();
        if let Some(first) = blob_errors.first() {
            return Err(Error::Weights(first.message.clone()));
        }
        let text = text::print(program);
        let key = cache_key(&text, &func.name.name, weights, options.read_mode);
        let order = device.binding_order();
        Ok(Prepared {
            function: func.name.name.clone(),
            input_binding: binding(&inputs, order),
            output_binding: binding(&outputs, order),
            text,
            key,
            inputs,
            outputs,
        })
    }
}

/// Indices of `io` in binding order.
fn binding(io: &[(String, TensorType)], order: BindingOrder) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..io.len()).collect();
    if order == BindingOrder::Alphabetical {
        idx.sort_by(|&a, &b| io[a].0.cmp(&io[b].0));
    }
    idx
}

/// A hash of everything a compile depends on.
fn cache_key(text: &str, function: &str, weights: &Weights, mode: ReadMode) -> CacheKey {
    let mut h = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(text.as_bytes());
    field(function.as_bytes());
    field(&[mode as u8]);
    for (path, file) in weights.iter() {
        field(path.as_bytes());
        field(file.bytes());
    }
    *h.finalize().as_bytes()
}

impl Model {
    pub(crate) fn compile(
        device: &Device,
        program: &Program,
        weights: &Weights,
        options: &ModelOptions,
    ) -> Result<Model> {
        let start = Instant::now();
        let prep = Prepared::new(device, program, weights, options)?;
        // The backend copies what it needs out of the weights while compiling: later changes
        // to the files (or to `weights`) do not reach this model, as on the ANE.
        let weights = weights.clone();
        let in_bound: Vec<_> = prep.input_binding.iter().map(|&i| prep.inputs[i].clone()).collect();
        let out_bound: Vec<_> =
            prep.output_binding.iter().map(|&i| prep.outputs[i].clone()).collect();
        let job = CompileJob {
            program,
            function: &prep.function,
            text: &prep.text,
            weights: &weights,
            read_mode: options.read_mode,
            inputs: &in_bound,
            outputs: &out_bound,
        };
        let outcome = device.compile_cached(prep.key, &job)?;
        // Validation, printing and hashing are part of what a compile costs.
        let compile_seconds = start.elapsed().as_secs_f64();
        let exec = outcome.compiled.clone().instantiate()?;
        let mut model = Model {
            device: device.clone(),
            program: Arc::new(program.clone()),
            function: prep.function,
            weights,
            exec,
            inputs: Vec::new(),
            outputs: Vec::new(),
            input_binding: prep.input_binding,
            output_binding: prep.output_binding,
            stats: ModelStats {
                compile_seconds,
                cache_hit: outcome.cache_hit,
                ..ModelStats::default()
            },
            options: options.clone(),
            layouts: Vec::new(),
        };
        model.inputs = model.alloc_surfaces(&prep.inputs)?;
        model.outputs = model.alloc_surfaces(&prep.outputs)?;
        model.stats.input_bytes = model.inputs.iter().map(Surface::alloc_size).sum();
        model.stats.output_bytes = model.outputs.iter().map(Surface::alloc_size).sum();
        model.stats.padding_bytes = model
            .inputs
            .iter()
            .chain(&model.outputs)
            .map(|s| s.alloc_size() - s.tensor_bytes())
            .sum();
        model.load()?;
        Ok(model)
    }

    /// Surfaces for `io`, all of one allocation size (the largest tensor's), as the ANE
    /// requires (REFERENCE.md §2, error 0x1d).
    fn alloc_surfaces(&self, io: &[(String, TensorType)]) -> Result<Vec<Surface>> {
        let size = io
            .iter()
            .map(|(_, t)| t.byte_size().and_then(|b| usize::try_from(b).ok()).unwrap_or(0))
            .max()
            .unwrap_or(0);
        io.iter().map(|(name, ty)| self.exec.alloc_surface(name, ty.clone(), size)).collect()
    }

    /// The device the model was compiled for (its budget and cache are shared with the device).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The program the model was compiled from (a copy: later edits to the caller's program do
    /// not reach it).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The name of the function this model runs ([`ModelOptions::function`], else `main`, else
    /// the first function).
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The weights the model was compiled with.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Compile, load, unload and evaluate timings and surface sizes so far.
    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Peak activation memory of the executable (its buffers), in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.exec.peak_memory_bytes()
    }

    /// Kernel scratch space held now, in bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.exec.scratch_bytes()
    }

    /// What all intermediate tensors would take without buffer reuse, in bytes.
    pub fn intermediate_bytes(&self) -> usize {
        self.exec.intermediate_bytes()
    }

    /// Input names in declaration order.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(Surface::name).collect()
    }

    /// Output names in declaration order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(Surface::name).collect()
    }

    /// The input surfaces, in declaration order (not the backend's binding order).
    pub fn inputs(&self) -> &[Surface] {
        &self.inputs
    }

    /// The output surfaces, in declaration order; they hold the results of the last evaluate.
    pub fn outputs(&self) -> &[Surface] {
        &self.outputs
    }

    /// The input surface called `name`.
    pub fn input(&mut self, name: &str) -> Result<&mut Surface> {
        let names = self.input_names().join(", ");
        self.inputs.iter_mut().find(|s| s.name() == name).ok_or_else(|| {
            Error::UnknownName(format!("`{name}` is not an input of this model (inputs: {names})"))
        })
    }

    /// The output surface called `name`.
    pub fn output(&self, name: &str) -> Result<&Surface> {
        self.outputs.iter().find(|s| s.name() == name).ok_or_else(|| {
            Error::UnknownName(format!(
                "`{name}` is not an output of this model (outputs: {})",
                self.output_names().join(", ")
            ))
        })
    }

    /// Whether the program is loaded, i.e. [`Model::evaluate`] may run. A new model is loaded.
    pub fn is_loaded(&self) -> bool {
        self.exec.is_loaded()
    }

    /// Loads the compiled program onto the device (cheap after the first time).
    pub fn load(&mut self) -> Result<()> {
        let t = Instant::now();
        self.exec.load()?;
        self.stats.load_seconds = t.elapsed().as_secs_f64();
        Ok(())
    }

    /// Unloads it; a later `load` brings it back without compiling.
    pub fn unload(&mut self) -> Result<()> {
        let t = Instant::now();
        self.exec.unload()?;
        self.stats.unload_seconds = t.elapsed().as_secs_f64();
        Ok(())
    }

    /// Runs the program on the current inputs, filling the outputs. Fails with
    /// [`Error::State`] when the model is unloaded; a failure inside the program (an index
    /// out of range, ...) names the op.
    ///
    /// Inputs keep their contents between evaluations: write only what changes.
    ///
    /// ```
    /// use anemone::prelude::*;
    ///
    /// let mut b = Builder::new();
    /// let mut f = b.function("main");
    /// let x = f.input("x", TensorType::new(DType::Fp32, [1, 8]));
    /// let y = f.mul(&x, &x)?;
    /// f.output_named(&y, "y")?;
    /// f.finish();
    /// let built = b.build()?;
    ///
    /// let mut model = Device::simulator().compile(&built.program, &built.weights)?;
    /// model.input("x")?.write_f32(&[300.0; 8])?;
    /// model.evaluate()?;
    /// // fp32 arithmetic runs in fp16, as on the ANE: 300^2 overflows fp16's 65504.
    /// assert_eq!(model.output("y")?.read_f32()?, [f32::INFINITY; 8]);
    ///
    /// model.unload()?;
    /// assert!(model.evaluate().is_err()); // load first
    /// model.load()?;
    /// model.evaluate()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn evaluate(&mut self) -> Result<()> {
        self.run(false).map(|_| ())
    }

    /// Evaluates as [`Model::evaluate`] does and returns how long each step took, in
    /// execution order (`stats().evaluate_seconds` is the whole evaluation, so the steps'
    /// sum falls short of it by the surfaces' copying). `None` on a device that runs the
    /// program as one unit and cannot time single ops (the ANE); the evaluation happened
    /// all the same.
    ///
    /// Timing adds a clock read per step; [`Model::evaluate`] reads none.
    pub fn evaluate_profiled(&mut self) -> Result<Option<Vec<StepTime>>> {
        self.run(true)
    }

    fn run(&mut self, profile: bool) -> Result<Option<Vec<StepTime>>> {
        if !self.exec.is_loaded() {
            return Err(Error::State(
                "evaluate on an unloaded model: call load() first".to_string(),
            ));
        }
        let t = Instant::now();
        let inputs: Vec<&Surface> = self.input_binding.iter().map(|&i| &self.inputs[i]).collect();
        let mut slots: Vec<Option<&mut Surface>> = self.outputs.iter_mut().map(Some).collect();
        let mut outputs: Vec<&mut Surface> = Vec::with_capacity(slots.len());
        for &i in &self.output_binding {
            outputs.push(slots[i].take().expect("binding is a permutation"));
        }
        let steps = if profile {
            self.exec.evaluate_profiled(&inputs, &mut outputs)?
        } else {
            self.exec.evaluate(&inputs, &mut outputs)?;
            None
        };
        self.stats.evaluate_seconds = t.elapsed().as_secs_f64();
        Ok(steps)
    }

    /// The seed's experiment: writes each weight file where the compiled model was built
    /// from, then unloads and loads without compiling. On the ANE this is reported not to
    /// take effect (weights are baked in at compile, REFERENCE.md §2); on the simulator it
    /// depends on `SimOptions::reload` (by default it does not take effect either, as
    /// measured). Use [`Model::recompile_with`] or dynamic weights
    /// ([`Model::set_weight`]) to change weights.
    ///
    /// If that load fails, the model falls back as the seed does: it compiles the program
    /// with `weights` and loads the result ([`Model::recompile_with`]), which counts
    /// against the compile budget; the returned update then has `reload_failed` set. When
    /// the fallback fails too, the error gives both reasons and the model stays unloaded.
    pub fn reload_from_disk(&mut self, weights: &Weights) -> Result<WeightUpdate> {
        let start = Instant::now();
        for (path, file) in weights.iter() {
            self.exec.overwrite_weight_file(path, file.bytes())?;
        }
        self.unload()?;
        let unload_seconds = self.stats.unload_seconds;
        if let Err(load_error) = self.load() {
            let update = self.recompile_with(weights).map_err(|compile_error| Error::Device {
                op: "reload",
                message: format!(
                    "loading after the weight files were rewritten failed ({load_error}), and \
                     so did compiling with the new weights ({compile_error}); the model is \
                     unloaded"
                ),
            })?;
            return Ok(WeightUpdate {
                seconds: start.elapsed().as_secs_f64(),
                unload_seconds,
                reload_failed: true,
                ..update
            });
        }
        Ok(WeightUpdate {
            seconds: start.elapsed().as_secs_f64(),
            unload_seconds,
            load_seconds: self.stats.load_seconds,
            compiled: false,
            reload_failed: false,
        })
    }

    /// Compiles the same program with other weights and swaps it in: always takes effect,
    /// counts against the compile budget (unless the cache already holds this program with
    /// these weights), keeps the input surfaces and their contents.
    pub fn recompile_with(&mut self, weights: &Weights) -> Result<WeightUpdate> {
        let start = Instant::now();
        let prep = Prepared::new(&self.device, &self.program, weights, &self.options)?;
        let bound = |io: &[(String, TensorType)], order: &[usize]| -> Vec<(String, TensorType)> {
            order.iter().map(|&i| io[i].clone()).collect()
        };
        let (ins, outs) =
            (bound(&prep.inputs, &prep.input_binding), bound(&prep.outputs, &prep.output_binding));
        let job = CompileJob {
            program: &self.program,
            function: &prep.function,
            text: &prep.text,
            weights,
            read_mode: self.options.read_mode,
            inputs: &ins,
            outputs: &outs,
        };
        let outcome = self.device.compile_cached(prep.key, &job)?;
        let compile_seconds = start.elapsed().as_secs_f64();
        let mut exec = outcome.compiled.clone().instantiate()?;
        let t = Instant::now();
        exec.load()?;
        let load_seconds = t.elapsed().as_secs_f64();
        if self.exec.is_loaded() {
            self.exec.unload()?;
        }
        self.exec = exec;
        self.weights = weights.clone();
        self.stats.compile_seconds = compile_seconds;
        self.stats.cache_hit = outcome.cache_hit;
        self.stats.load_seconds = load_seconds;
        Ok(WeightUpdate {
            seconds: start.elapsed().as_secs_f64(),
            unload_seconds: 0.0,
            load_seconds,
            compiled: !outcome.cache_hit,
            reload_failed: false,
        })
    }

    /// Tells the model where dynamic weights sit in a packed input (from
    /// `FunctionBuilder::packed_input`), so that [`Model::set_weight`] can write them.
    pub fn use_packed_layout(&mut self, layout: PackedLayout) -> Result<()> {
        let surface = self.input(&layout.input)?;
        let want = TensorType::new(layout.dtype, [1, layout.channels, 1, layout.width]);
        if surface.tensor_type() != &want {
            return Err(Error::Shape(format!(
                "packed layout expects input `{}` to be {want}, the program declares {}",
                layout.input,
                surface.tensor_type()
            )));
        }
        if let Some(r) = layout.regions.iter().find(|r| r.cols == 0) {
            return Err(Error::Shape(format!(
                "region `{}` of `{}` has no columns",
                r.name, layout.input
            )));
        }
        let outside =
            |r: &&PackedRegion| r.offset.checked_add(r.cols).is_none_or(|end| end > layout.width);
        if let Some(r) = layout.regions.iter().find(outside) {
            // No `offset + cols` here: it is what overflowed.
            return Err(Error::Shape(format!(
                "region `{}` ({} columns at column {}) lies outside the {} columns of `{}`",
                r.name, r.cols, r.offset, layout.width, layout.input
            )));
        }
        self.layouts.retain(|l| l.input != layout.input);
        self.layouts.push(layout);
        Ok(())
    }

    /// The packed layouts given with [`Model::use_packed_layout`].
    pub fn packed_layouts(&self) -> &[PackedLayout] {
        &self.layouts
    }

    /// Writes the weight `name` of a packed input: `values` is its `[channels, cols]`
    /// matrix, row-major, converted to the input's dtype. No compile, no reload: the next
    /// evaluate uses it.
    pub fn set_weight(&mut self, name: &str, values: &[f32]) -> Result<WeightUpdate> {
        let start = Instant::now();
        let (layout, region) = self
            .layouts
            .iter()
            .find_map(|l| l.region(name).map(|r| (l.clone(), r.clone())))
            .ok_or_else(|| {
                Error::UnknownName(format!(
                    "no packed weight `{name}`: give the layout with use_packed_layout first"
                ))
            })?;
        let want = layout.channels.checked_mul(region.cols);
        if want != Some(values.len()) {
            let count = want.map_or_else(|| "more than can be addressed".into(), |n| n.to_string());
            return Err(Error::Shape(format!(
                "weight `{name}` is [{}, {}] ({count} values), got {}",
                layout.channels,
                region.cols,
                values.len()
            )));
        }
        let surface = self.input(&layout.input)?;
        let dtype = surface.dtype();
        let elem = (dtype.bits() / 8) as usize;
        let surface_name = surface.name().to_string();
        // Where row `c` of the region starts and ends, in bytes; None if past the surface.
        // `use_packed_layout` checked the layout against the surface's type, so this only
        // guards against arithmetic that does not fit.
        let span = |c: usize| {
            let at = c.checked_mul(layout.width)?.checked_add(region.offset)?.checked_mul(elem)?;
            Some(at..at.checked_add(region.cols.checked_mul(elem)?)?)
        };
        let mut result = Ok(());
        surface.memory_mut().write(&mut |bytes| {
            for (c, row) in values.chunks_exact(region.cols).enumerate() {
                let Some(dst) = span(c).and_then(|r| bytes.get_mut(r)) else {
                    result = Err(Error::Shape(format!(
                        "row {c} of weight `{name}` lies outside input `{surface_name}`"
                    )));
                    return;
                };
                if let Err(e) = encode_f32(name, dtype, row, dst) {
                    result = Err(e);
                    return;
                }
            }
        })?;
        result?;
        Ok(WeightUpdate { seconds: start.elapsed().as_secs_f64(), ..WeightUpdate::default() })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use anemone_mil::DType;
    use anemone_mil::builder::Builder;

    use super::*;
    use crate::apple::{AneOptions, FakeCall, RecordingRuntime, device_with_runtime};
    use crate::budget::{BudgetLimits, CompileBudget};

    /// fp16 x [1, 8, 1, 8] -> 1x1 conv with `scale` x identity -> y.
    fn scaled_identity(scale: f32) -> (Program, Weights) {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", TensorType::new(DType::Fp16, [1, 8, 1, 8]));
        let w: Vec<f32> = (0..64).map(|i| if i / 8 == i % 8 { scale } else { 0.0 }).collect();
        let w = f.weight("W", TensorType::new(DType::Fp16, [8, 8, 1, 1]), &w).unwrap();
        let y = f.conv(&x, &w, &Default::default()).unwrap();
        f.output_named(&y, "y").unwrap();
        f.finish();
        let built = b.build().unwrap();
        (built.program, built.weights)
    }

    fn weight_bytes(weights: &Weights) -> Vec<u8> {
        weights.get("@model_path/weights/weight.bin").unwrap().bytes().to_vec()
    }

    /// An ANE device over the recording fake, with a budget that refuses at `refuse_at`.
    fn fake_ane(root: &tempfile::TempDir, refuse_at: usize) -> (Arc<RecordingRuntime>, Device) {
        let rt = Arc::new(RecordingRuntime::new(root.path()));
        let options = AneOptions { load_retry_delay: Duration::ZERO, ..AneOptions::default() };
        let limits = BudgetLimits { warn_at: refuse_at, refuse_at };
        let budget = Arc::new(CompileBudget::new(limits, " per test"));
        (rt.clone(), device_with_runtime(rt, options, budget))
    }

    #[test]
    fn a_failed_load_after_rewriting_the_weights_falls_back_to_a_compile() {
        let root = tempfile::tempdir().unwrap();
        let (rt, device) = fake_ane(&root, 10);
        let (program, weights_a) = scaled_identity(1.0);
        let (_, weights_b) = scaled_identity(3.0);
        let mut model = device.compile(&program, &weights_a).unwrap();
        assert_eq!(device.budget().used(), 1);
        // The load after the rewrite fails, and so does its retry.
        rt.fail(FakeCall::Load, 2, "ANE load failed");
        rt.take_log();

        let update = model.reload_from_disk(&weights_b).unwrap();
        assert!(update.reload_failed && update.compiled, "{update:?}");
        assert_eq!(device.budget().used(), 2, "the fallback compile is charged");
        assert!(model.is_loaded());
        assert_eq!(weight_bytes(model.weights()), weight_bytes(&weights_b));
        let log = rt.take_log();
        let position = |what: &str| log.iter().position(|l| l.contains(what));
        let failed_load = position("loadWithQoS:options:error:] qos=21 options={} -> NO");
        let compile = position("compileWithQoS:options:error:] qos=21 options={} -> YES");
        assert!(failed_load.is_some() && compile > failed_load, "{log:#?}");
        assert!(log.last().unwrap().contains("loadWithQoS:options:error:] qos=21"), "{log:#?}");
        assert!(log.last().unwrap().ends_with("-> YES"), "{log:#?}");
    }

    #[test]
    fn a_reload_that_loads_compiles_nothing() {
        let root = tempfile::tempdir().unwrap();
        let (_rt, device) = fake_ane(&root, 10);
        let (program, weights_a) = scaled_identity(1.0);
        let (_, weights_b) = scaled_identity(3.0);
        let mut model = device.compile(&program, &weights_a).unwrap();
        let update = model.reload_from_disk(&weights_b).unwrap();
        assert!(!update.reload_failed && !update.compiled, "{update:?}");
        assert_eq!(device.budget().used(), 1);
        // The model keeps the weights it was compiled with.
        assert_eq!(weight_bytes(model.weights()), weight_bytes(&weights_a));
    }

    #[test]
    fn when_the_fallback_fails_too_the_error_gives_both_reasons() {
        let root = tempfile::tempdir().unwrap();
        // One compile allowed: the fallback's is refused.
        let (rt, device) = fake_ane(&root, 1);
        let (program, weights_a) = scaled_identity(1.0);
        let (_, weights_b) = scaled_identity(3.0);
        let mut model = device.compile(&program, &weights_a).unwrap();
        rt.fail(FakeCall::Load, 2, "ANE load failed");
        let e = model.reload_from_disk(&weights_b).unwrap_err().to_string();
        assert!(e.contains("ANE load failed"), "{e}");
        assert!(e.contains("compile budget spent"), "{e}");
        assert!(!model.is_loaded());
        assert_eq!(device.budget().used(), 1);
    }

    /// x [1, 4, 1, 16] holding weight `A` in columns 0..4.
    fn packed_model() -> (Model, PackedLayout) {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", TensorType::new(DType::Fp16, [1, 4, 1, 16]));
        let y = f.cast(&x, DType::Fp32).unwrap();
        f.output_named(&y, "y").unwrap();
        f.finish();
        let program = b.build().unwrap().program;
        let model = Device::simulator().compile(&program, &Weights::new()).unwrap();
        let layout = PackedLayout {
            input: "x".into(),
            dtype: DType::Fp16,
            channels: 4,
            width: 16,
            regions: vec![PackedRegion { name: "A".into(), offset: 0, cols: 4 }],
        };
        (model, layout)
    }

    #[test]
    fn layouts_with_huge_offsets_are_refused_with_a_message() {
        let (mut model, mut layout) = packed_model();
        layout.regions[0].offset = usize::MAX;
        let e = model.use_packed_layout(layout).unwrap_err().to_string();
        assert!(e.contains(&format!("4 columns at column {}", usize::MAX)), "{e}");
        assert!(e.contains("outside the 16 columns of `x`"), "{e}");
    }

    #[test]
    fn weights_of_the_wrong_size_are_refused_and_the_right_size_lands() {
        let (mut model, layout) = packed_model();
        model.use_packed_layout(layout).unwrap();
        let e = model.set_weight("A", &[1.0; 15]).unwrap_err().to_string();
        assert!(e.contains("[4, 4] (16 values), got 15"), "{e}");
        let values: Vec<f32> = (0..16).map(|i| i as f32).collect();
        model.set_weight("A", &values).unwrap();
        let x = model.input("x").unwrap().read_f32().unwrap();
        for c in 0..4 {
            assert_eq!(&x[c * 16..c * 16 + 4], &values[c * 4..c * 4 + 4]);
            assert!(x[c * 16 + 4..(c + 1) * 16].iter().all(|&v| v == 0.0));
        }
    }
}
