//! Devices and the backend trait. A [`Device`] is one backend (the CPU simulator or the
//! ANE) with its compile budget and compile cache; `Device::compile` turns a validated
//! program and its weights into a [`Model`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anemone_mil::ops::OpKind;
use anemone_mil::{Program, TensorType};

use crate::budget::{BudgetLimits, Charge, CompileBudget};
use crate::error::{Error, Result};
use crate::model::{Model, ModelOptions};
use crate::surface::Surface;
use anemone_mil::blob::ReadMode;
use anemone_mil::package::Weights;

/// Which backend a device runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// The CPU simulator: runs anywhere, follows the ANE's rules and fp16 numerics.
    Simulator,
    /// Apple's Neural Engine through the private AppleNeuralEngine framework.
    Ane,
}

impl DeviceKind {
    /// The short name used by `ANEMONE_DEVICE` and [`Device::by_name`]: `sim` or `ane`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Simulator => "sim",
            DeviceKind::Ane => "ane",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the backend binds input and output surfaces to the program's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingOrder {
    /// In declaration order.
    Declaration,
    /// Sorted by MIL name: the ANE binds this way, whatever the declaration order
    /// (REFERENCE.md §2: Orion issues #3 #13 #14, reported).
    Alphabetical,
}

/// What a backend needs to compile one function.
pub struct CompileJob<'a> {
    /// The whole validated program (the simulator plans from its IR).
    pub program: &'a Program,
    /// The name of the function to compile.
    pub function: &'a str,
    /// The program as MIL text (what the ANE compiler reads).
    pub text: &'a str,
    /// The weight files its BLOBFILE constants point into, keyed by `@model_path/...` path;
    /// the backend copies what it needs (weights are snapshotted at compile).
    pub weights: &'a Weights,
    /// How strictly weight records are read.
    pub read_mode: ReadMode,
    /// Inputs and outputs, in the backend's binding order.
    pub inputs: &'a [(String, TensorType)],
    /// Outputs, in the backend's binding order.
    pub outputs: &'a [(String, TensorType)],
}

/// A backend: compiles programs into artifacts that can be instantiated as executables.
pub trait Backend: Send + Sync {
    /// Which device this backend drives.
    fn kind(&self) -> DeviceKind;
    /// The order in which [`Executable::evaluate`] expects input and output surfaces.
    fn binding_order(&self) -> BindingOrder;
    /// Compiles one function. Each call is a real compile that counts against the budget.
    fn compile(&self, job: &CompileJob) -> Result<Arc<dyn Compiled>>;
}

/// The product of a compile, shareable between models (the compile cache holds these).
pub trait Compiled: Send + Sync {
    /// A new, unloaded executable of this compiled program.
    fn instantiate(self: Arc<Self>) -> Result<Box<dyn Executable>>;
    /// Whether producing this took a real compile on the device. The ANE can find a
    /// program compiled earlier (`compiledModelExists`) and load it without compiling,
    /// which does not use up one of its compiles.
    fn used_a_compile(&self) -> bool {
        true
    }
}

/// One loaded (or loadable) instance of a compiled program: the ANE's lifecycle.
pub trait Executable: Send {
    /// Makes the program ready to evaluate (the ANE's `loadWithQoS:`, retried once after a
    /// failure); no compile, no budget. Loading a loaded executable does nothing.
    fn load(&mut self) -> Result<()>;
    /// Releases the loaded program; a later [`Executable::load`] brings it back without
    /// compiling. Unloading does not return a compile to the budget.
    fn unload(&mut self) -> Result<()>;
    /// Whether [`Executable::evaluate`] may be called now.
    fn is_loaded(&self) -> bool;
    /// Allocates a surface in memory this backend can hand to the device.
    fn alloc_surface(&self, name: &str, ty: TensorType, alloc_size: usize) -> Result<Surface>;
    /// Runs the program. Surfaces come in the backend's binding order.
    fn evaluate(&mut self, inputs: &[&Surface], outputs: &mut [&mut Surface]) -> Result<()>;
    /// Runs the program as [`Executable::evaluate`] does, timing each step. `None` when the
    /// backend runs the program as one unit and cannot time its ops (it evaluated anyway).
    fn evaluate_profiled(
        &mut self,
        inputs: &[&Surface],
        outputs: &mut [&mut Surface],
    ) -> Result<Option<Vec<StepTime>>> {
        self.evaluate(inputs, outputs).map(|()| None)
    }
    /// Overwrites a weight file where the compiled program was built from (the seed's
    /// experiment). Whether a later unload + load picks it up is the device's business.
    fn overwrite_weight_file(&mut self, blob_path: &str, bytes: &[u8]) -> Result<()>;
    /// Bytes of activation memory the executable holds (its buffers at their peak).
    fn peak_memory_bytes(&self) -> usize {
        0
    }
    /// Bytes of kernel scratch space held now (im2col, widened operands).
    fn scratch_bytes(&self) -> usize {
        0
    }
    /// Bytes all intermediate tensors would take without buffer reuse.
    fn intermediate_bytes(&self) -> usize {
        0
    }
}

/// How long one step of a profiled evaluation took ([`Model::evaluate_profiled`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StepTime {
    /// The MIL op the step belongs to: its `name` attribute, else its first result.
    pub op_name: String,
    /// That op's kind.
    pub op_kind: OpKind,
    /// Set for a cast the simulator adds around fp32 arithmetic (computed in fp16, as on
    /// the ANE); such a step has no op of its own and is reported under the op it serves.
    pub added: Option<AddedStep>,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
}

/// A step with no op of its own in the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddedStep {
    /// Rounds an fp32 operand to fp16 before the op reads it.
    Narrowing,
    /// Widens the op's fp16 result into its fp32 tensor.
    Widening,
}

impl AddedStep {
    /// A short label for tables: `fp32->fp16` or `fp16->fp32`.
    pub fn label(self) -> &'static str {
        match self {
            AddedStep::Narrowing => "fp32->fp16",
            AddedStep::Widening => "fp16->fp32",
        }
    }
}

/// A key for the compile cache: a hash of the program text, the function and the weights.
pub type CacheKey = [u8; 32];

/// A backend with its compile budget and compile cache.
#[derive(Clone)]
pub struct Device {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    backend: Box<dyn Backend>,
    budget: Arc<CompileBudget>,
    cache: Mutex<HashMap<CacheKey, Arc<dyn Compiled>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("kind", &self.kind())
            .field("compiles", &self.inner.budget.used())
            .finish()
    }
}

/// The outcome of one `Device::compile_cached`.
pub(crate) struct CompileOutcome {
    pub compiled: Arc<dyn Compiled>,
    pub cache_hit: bool,
}

impl Device {
    /// The CPU simulator, with the default compile budget (its own: simulator devices do
    /// not share a budget, so independent tests do not interfere).
    pub fn simulator() -> Device {
        Device::simulator_with_budget(BudgetLimits::default())
    }

    /// The CPU simulator with a budget of your choosing.
    pub fn simulator_with_budget(limits: BudgetLimits) -> Device {
        Device::from_backend(
            Box::new(crate::sim::SimBackend::new()),
            Arc::new(CompileBudget::new(limits, " per simulator device")),
        )
    }

    /// The CPU simulator with options (e.g. applying `attn_mask`, which the ANE ignores).
    pub fn simulator_with(options: crate::sim::SimOptions) -> Device {
        Device::from_backend(
            Box::new(crate::sim::SimBackend::with_options(options)),
            Arc::new(CompileBudget::new(BudgetLimits::default(), " per simulator device")),
        )
    }

    /// The Apple Neural Engine. Fails with "unavailable: ..." where there is none.
    pub fn ane() -> Result<Device> {
        crate::apple::open_device()
    }

    /// The ANE when present, else the simulator.
    pub fn auto() -> Result<Device> {
        match Device::ane() {
            Ok(d) => Ok(d),
            Err(Error::Unavailable(_)) => Ok(Device::simulator()),
            Err(e) => Err(e),
        }
    }

    /// The device `ANEMONE_DEVICE` asks for (`sim`, `ane` or `auto`; unset means `auto`).
    pub fn from_env() -> Result<Device> {
        match std::env::var("ANEMONE_DEVICE") {
            Ok(v) => Device::by_name(&v),
            Err(_) => Device::auto(),
        }
    }

    /// The device called `name`: `sim` (also `simulator`, `cpu`), `ane`, or `auto` (also
    /// empty). `ane` fails with [`Error::Unavailable`] where there is no ANE; any other name
    /// is [`Error::UnknownName`].
    ///
    /// ```
    /// use anemone::{Device, DeviceKind};
    ///
    /// assert_eq!(Device::by_name("sim")?.kind(), DeviceKind::Simulator);
    /// // The ANE on an Apple Silicon Mac, the simulator anywhere else.
    /// let device = Device::by_name("auto")?;
    /// println!("running on {}", device.kind());
    /// assert!(Device::by_name("gpu").is_err());
    /// # Ok::<(), anemone::Error>(())
    /// ```
    pub fn by_name(name: &str) -> Result<Device> {
        match name.trim() {
            "sim" | "simulator" | "cpu" => Ok(Device::simulator()),
            "ane" => Device::ane(),
            "auto" | "" => Device::auto(),
            other => Err(Error::UnknownName(format!(
                "unknown device `{other}`: use `sim`, `ane` or `auto`"
            ))),
        }
    }

    pub(crate) fn from_backend(backend: Box<dyn Backend>, budget: Arc<CompileBudget>) -> Device {
        Device {
            inner: Arc::new(DeviceInner { backend, budget, cache: Mutex::new(HashMap::new()) }),
        }
    }

    /// Which backend this device runs on.
    pub fn kind(&self) -> DeviceKind {
        self.inner.backend.kind()
    }

    /// How this device's backend binds surfaces to MIL names: alphabetically, on the ANE and
    /// on the simulator alike (it follows the ANE's rule). [`Model`] hides this; it matters
    /// to code that drives an [`Executable`] directly.
    pub fn binding_order(&self) -> BindingOrder {
        self.inner.backend.binding_order()
    }

    /// The compile budget this device counts against.
    pub fn budget(&self) -> &CompileBudget {
        &self.inner.budget
    }

    /// Compiles the program's main function with its weights (snapshotted now: later
    /// changes to the weight files do not reach this model) and loads it.
    ///
    /// The program is validated first; an invalid one is [`Error::Invalid`], a weight
    /// reference that does not resolve [`Error::Weights`]. A compile of a program and weights
    /// this device compiled before is served by its cache and spends no budget; any other
    /// counts against [`Device::budget`] and is refused with [`Error::BudgetExhausted`]
    /// once it is spent.
    ///
    /// ```
    /// use anemone::prelude::*;
    ///
    /// // y = 2 x as a 1x1 conv over [1, C, 1, S], the ANE's native layout.
    /// let mut b = Builder::new();
    /// let mut f = b.function("main");
    /// let x = f.input("x", TensorType::new(DType::Fp16, [1, 4, 1, 16]));
    /// let twice: Vec<f32> = (0..16).map(|i| if i % 5 == 0 { 2.0 } else { 0.0 }).collect();
    /// let w = f.weight("W", TensorType::new(DType::Fp16, [4, 4, 1, 1]), &twice)?;
    /// let y = f.conv(&x, &w, &ConvOptions::default())?;
    /// f.output_named(&y, "y")?;
    /// f.finish();
    /// let built = b.build()?;
    ///
    /// let device = Device::simulator();
    /// let mut model = device.compile(&built.program, &built.weights)?;
    /// model.input("x")?.write_f32(&[0.25; 64])?;
    /// model.evaluate()?;
    /// assert_eq!(model.output("y")?.read_f32()?, [0.5; 64]);
    ///
    /// // The same program and weights again: a cache hit, no compile spent.
    /// let again = device.compile(&built.program, &built.weights)?;
    /// assert!(again.stats().cache_hit);
    /// assert_eq!(device.budget().used(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compile(&self, program: &Program, weights: &Weights) -> Result<Model> {
        Model::compile(self, program, weights, &ModelOptions::default())
    }

    /// Compiles with options (function to run, ...).
    pub fn compile_with(
        &self,
        program: &Program,
        weights: &Weights,
        options: &ModelOptions,
    ) -> Result<Model> {
        Model::compile(self, program, weights, options)
    }

    /// Compiles through the cache: an identical program and weights reuse the earlier
    /// result and spend no budget.
    pub(crate) fn compile_cached(&self, key: CacheKey, job: &CompileJob) -> Result<CompileOutcome> {
        if let Some(hit) = self.cache().get(&key).cloned() {
            return Ok(CompileOutcome { compiled: hit, cache_hit: true });
        }
        if let Charge::Warn { used, remaining } = self.inner.budget.charge()? {
            eprintln!(
                "warning: {used} compiles so far on the {} device; {remaining} left before \
                 compiles are refused (the ANE crashes past ~119 per process)",
                self.kind()
            );
        }
        let compiled = match self.inner.backend.compile(job) {
            Ok(c) => c,
            Err(e) => {
                // A compile that failed before reaching the device took no slot; one that
                // the device itself refused may have.
                if !matches!(e, Error::Device { .. }) {
                    self.inner.budget.refund();
                }
                return Err(e);
            }
        };
        if !compiled.used_a_compile() {
            self.inner.budget.refund();
        }
        self.cache().insert(key, compiled.clone());
        Ok(CompileOutcome { compiled, cache_hit: false })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Arc<dyn Compiled>>> {
        // A panic while holding the lock cannot leave the map half-updated (single
        // insert/get), so a poisoned lock is safe to keep using.
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of compiled programs in the cache.
    pub fn cached_programs(&self) -> usize {
        self.cache().len()
    }

    /// Forgets every cached compile (models already made keep theirs). The cache keeps each
    /// program's weights alive for as long as it holds it; a long run that recompiles with
    /// new weights can drop them here. Compiling them again costs budget again.
    pub fn clear_cache(&self) {
        self.cache().clear();
    }
}
