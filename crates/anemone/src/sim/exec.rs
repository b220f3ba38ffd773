//! The simulator backend: compiles programs into plans and runs them step by step over
//! fp16/fp32 buffers, checking the ANE's rules on every evaluate (equal surface sizes,
//! loaded before evaluate). Outputs are computed in their surfaces' memory where it can
//! stand in for their buffers, and copied into the surfaces otherwise.
//!
//! It also owns the simulator's side of the weight-reload experiment: each executable keeps
//! the compiled program's weight files as a "disk" copy (the ANE backend writes them to the
//! model's temporary directory), an overwrite really replaces that copy, and [`SimReload`]
//! says whether a later unload + load reads it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use anemone_mil::blob::ReadMode;
use anemone_mil::package::Weights;
use anemone_mil::{DType, Program, TensorType, f16};

use super::kernels::elementwise::{BinaryOp, binary, unary};
use super::kernels::{
    self, Element, Scratch, attention, conv, layout, matmul, quant, reduce, softmax,
};
use super::ops as family;
use super::plan::{self, Kernel, Plan, SimOptions, Storage, ValueId};
use crate::aligned::AlignedBytes;
use crate::device::{
    AddedStep, Backend, BindingOrder, CompileJob, Compiled, DeviceKind, Executable, StepTime,
};
use crate::error::{Error, Result};
use crate::surface::{HeapMemory, Surface};

/// What an unload + load does with weight files rewritten since the compile: the hardware
/// question the weight-reload probe asks, as a model the simulator follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SimReload {
    /// A load reads nothing: the weights stay those of the compile. Measured on M3 Pro and
    /// M5 (REFERENCE.md §2: max diff 0 after rewriting the file and reloading).
    #[default]
    Snapshot,
    /// A load re-reads the weight files, so a rewritten file takes effect without a compile:
    /// what mechramc/Orion reports for its delta reload (reported, not measured here).
    ReadsDisk,
}

impl SimReload {
    /// Every model, in the order the command line lists them.
    pub const ALL: [SimReload; 2] = [SimReload::Snapshot, SimReload::ReadsDisk];

    /// `snapshot` or `reads-disk`.
    pub fn name(self) -> &'static str {
        match self {
            SimReload::Snapshot => "snapshot",
            SimReload::ReadsDisk => "reads-disk",
        }
    }
}

impl std::fmt::Display for SimReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SimReload {
    type Err = Error;

    fn from_str(s: &str) -> Result<SimReload> {
        SimReload::ALL.into_iter().find(|r| r.name() == s.trim()).ok_or_else(|| {
            Error::UnknownName(format!(
                "unknown reload model `{s}`: use `snapshot` (weights fixed at compile, as \
                 measured on the ANE) or `reads-disk` (a load re-reads the weight files)"
            ))
        })
    }
}

/// The CPU simulator backend.
#[derive(Debug, Default)]
pub struct SimBackend {
    options: SimOptions,
}

impl SimBackend {
    /// A simulator with the default options: ANE numerics, `attn_mask` ignored, weights
    /// snapshotted at compile.
    pub fn new() -> SimBackend {
        SimBackend::default()
    }

    /// A simulator with `options` ([`SimOptions`]).
    pub fn with_options(options: SimOptions) -> SimBackend {
        SimBackend { options }
    }

    /// [`Backend::compile`] with the concrete result, for callers that want to look at it.
    pub fn compile_program(&self, job: &CompileJob) -> Result<SimCompiled> {
        let plan = plan::compile(
            job.program,
            job.function,
            job.weights,
            job.read_mode,
            job.inputs,
            job.outputs,
            self.options,
        )?;
        // Only a model that re-reads the files at load needs the program to plan again.
        let source = (self.options.reload == SimReload::ReadsDisk).then(|| Source {
            program: job.program.clone(),
            function: job.function.to_string(),
            read_mode: job.read_mode,
            inputs: job.inputs.to_vec(),
            outputs: job.outputs.to_vec(),
            options: self.options,
        });
        Ok(SimCompiled { built: Arc::new(Built::new(plan)?), files: job.weights.clone(), source })
    }
}

impl Backend for SimBackend {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Simulator
    }

    /// The simulator binds as the ANE does, so that code which depends on the order is
    /// exercised everywhere.
    fn binding_order(&self) -> BindingOrder {
        BindingOrder::Alphabetical
    }

    fn compile(&self, job: &CompileJob) -> Result<Arc<dyn Compiled>> {
        Ok(Arc::new(self.compile_program(job)?))
    }
}

/// A plan, its constant GEMM operands packed for the GEMM, and the other GEMM weights widened
/// to f32.
#[derive(Debug)]
struct Built {
    plan: Plan,
    /// GEMM weights widened to f32 by the first load, indexed by constant.
    widened: OnceLock<Vec<Option<Vec<f32>>>>,
    /// The plan's `prepack` operands, packed when the plan is built, by (step, input).
    packed: HashMap<(usize, usize), Packed>,
}

/// A constant operand in the GEMM's layout.
#[derive(Debug)]
enum Packed {
    Conv(conv::PackedConvWeight),
    Matmul(matmul::PackedOperand),
}

impl Built {
    fn new(plan: Plan) -> Result<Built> {
        let packed = plan
            .prepack
            .iter()
            .map(|p| Ok(((p.step, p.input), pack(&plan, p)?)))
            .collect::<Result<_>>()?;
        Ok(Built { plan, widened: OnceLock::new(), packed })
    }

    fn widen(&self) -> &[Option<Vec<f32>>] {
        self.widened.get_or_init(|| {
            let mut out = vec![None; self.plan.constants.len()];
            for &c in &self.plan.widen {
                let halves: &[f16] = bytemuck::cast_slice(self.plan.constants[c].bytes());
                let mut wide = vec![0f32; halves.len()];
                super::numerics::f16_slice_to_f32(halves, &mut wide);
                out[c] = Some(wide);
            }
            out
        })
    }
}

/// Packs one constant operand of the plan for its step's GEMM.
fn pack(plan: &Plan, p: &plan::Prepack) -> Result<Packed> {
    let step = &plan.steps[p.step];
    let value = &plan.values[step.inputs[p.input]];
    let Storage::Const(c) = value.storage else {
        return Err(Error::State(format!("`{}` is not a constant", value.name)));
    };
    let n = value.ty.byte_size().unwrap_or(0) as usize;
    let bytes = &plan.constants[c].bytes()[..n];
    let shape = &value.ty.shape;
    fn typed<T: Element + bytemuck::Pod>(
        bytes: &[u8],
        f: impl FnOnce(&[T]) -> kernels::Result<Packed>,
    ) -> kernels::Result<Packed> {
        f(view::<T>(bytes))
    }
    let packed = match (&step.kernel, value.ty.dtype) {
        (Kernel::Conv { params }, DType::Fp16) => {
            typed::<f16>(bytes, |w| conv::pack_weight(w, shape, params).map(Packed::Conv))
        }
        (Kernel::Conv { params }, DType::Fp32) => {
            typed::<f32>(bytes, |w| conv::pack_weight(w, shape, params).map(Packed::Conv))
        }
        // linear's weight [d_out, d_in] is the GEMM's right operand, transposed.
        (Kernel::Norm(family::norm::NormKernel::Linear { .. }), DType::Fp16) => {
            typed::<f16>(bytes, |w| {
                matmul::pack_operand(w, shape, true, kernels::gemm::Side::Rhs).map(Packed::Matmul)
            })
        }
        (Kernel::Norm(family::norm::NormKernel::Linear { .. }), DType::Fp32) => {
            typed::<f32>(bytes, |w| {
                matmul::pack_operand(w, shape, true, kernels::gemm::Side::Rhs).map(Packed::Matmul)
            })
        }
        (Kernel::Matmul { transpose_x, transpose_y, .. }, dtype) => {
            let (transpose, side) = if p.input == 0 {
                (*transpose_x, kernels::gemm::Side::Lhs)
            } else {
                (*transpose_y, kernels::gemm::Side::Rhs)
            };
            match dtype {
                DType::Fp16 => typed::<f16>(bytes, |x| {
                    matmul::pack_operand(x, shape, transpose, side).map(Packed::Matmul)
                }),
                DType::Fp32 => typed::<f32>(bytes, |x| {
                    matmul::pack_operand(x, shape, transpose, side).map(Packed::Matmul)
                }),
                other => return Err(Error::Unsupported(format!("matmul on {other} constants"))),
            }
        }
        _ => return Err(Error::State(format!("no packing for `{}`", step.op_name))),
    };
    packed.map_err(|e| Error::Device {
        op: "compile",
        message: format!("{} `{}`: {e}", step.kind, step.op_name),
    })
}

/// What the compile planned from, kept to plan again from rewritten weight files.
#[derive(Debug)]
struct Source {
    program: Program,
    function: String,
    read_mode: ReadMode,
    inputs: Vec<(String, TensorType)>,
    outputs: Vec<(String, TensorType)>,
    options: SimOptions,
}

/// A compiled plan, shared by every model instantiated from it.
#[derive(Debug)]
pub struct SimCompiled {
    built: Arc<Built>,
    /// The weight files the compile read (sharing their bytes): every executable's disk
    /// copy starts as these.
    files: Weights,
    /// Present when a load re-reads the weight files ([`SimReload::ReadsDisk`]).
    source: Option<Source>,
}

impl SimCompiled {
    /// The compiled plan.
    pub fn plan(&self) -> &Plan {
        &self.built.plan
    }

    /// A new, unloaded executable whose disk holds the weight files of the compile.
    pub fn executable(self: &Arc<Self>) -> SimExecutable {
        SimExecutable {
            compiled: self.clone(),
            built: self.built.clone(),
            disk: self.files.clone(),
            disk_changed: false,
            buffers: Vec::new(),
            scratch: Scratch::new(),
            loaded: false,
        }
    }
}

impl Compiled for SimCompiled {
    fn instantiate(self: Arc<Self>) -> Result<Box<dyn Executable>> {
        Ok(Box::new(self.executable()))
    }
}

/// One loadable instance: activation buffers exist only while loaded.
///
/// Each executable has its own disk copy of the weight files. On the ANE, executables that
/// share a compiled program share its directory; here a rewrite stays with the model that
/// made it, so a later compile that hits the device's cache starts from the weights it asked
/// for.
pub struct SimExecutable {
    compiled: Arc<SimCompiled>,
    /// The plan evaluate runs: the compiled one, or one planned from rewritten files by a
    /// load that re-reads them.
    built: Arc<Built>,
    /// The weight files as they are "on disk" now, by BLOBFILE path.
    disk: Weights,
    /// Whether a file was rewritten since `built` was planned.
    disk_changed: bool,
    buffers: Vec<AlignedBytes>,
    scratch: Scratch,
    loaded: bool,
}

impl SimExecutable {
    /// The bytes of a weight file as they are on this executable's disk now.
    pub fn weight_file(&self, blob_path: &str) -> Option<&[u8]> {
        self.disk.get(blob_path).map(|f| f.bytes())
    }

    /// The load's reading of the weight files: under [`SimReload::ReadsDisk`], files
    /// rewritten since the last plan are read and planned from, as a compile would; under
    /// [`SimReload::Snapshot`] nothing is read.
    fn read_weight_files(&mut self) -> Result<()> {
        let Some(src) = &self.compiled.source else { return Ok(()) };
        if !self.disk_changed {
            return Ok(());
        }
        let plan = plan::compile(
            &src.program,
            &src.function,
            &self.disk,
            src.read_mode,
            &src.inputs,
            &src.outputs,
            src.options,
        )
        .map_err(|e| Error::Device {
            op: "load",
            message: format!("re-reading the rewritten weight files: {e}"),
        })?;
        self.built = Arc::new(Built::new(plan)?);
        self.disk_changed = false;
        Ok(())
    }
}

impl Executable for SimExecutable {
    fn load(&mut self) -> Result<()> {
        if !self.loaded {
            self.read_weight_files()?;
            self.built.widen();
            self.buffers = self
                .built
                .plan
                .memory
                .buffer_sizes
                .iter()
                .map(|&n| AlignedBytes::try_zeroed(n))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::OutOfMemory(format!("activation buffers: {e}")))?;
            self.loaded = true;
        }
        Ok(())
    }

    fn unload(&mut self) -> Result<()> {
        self.buffers = Vec::new();
        self.scratch = Scratch::new();
        self.loaded = false;
        Ok(())
    }

    fn is_loaded(&self) -> bool {
        self.loaded
    }

    fn alloc_surface(&self, name: &str, ty: TensorType, alloc_size: usize) -> Result<Surface> {
        Surface::new_heap(name, ty, alloc_size)
    }

    fn evaluate(&mut self, inputs: &[&Surface], outputs: &mut [&mut Surface]) -> Result<()> {
        self.run(inputs, outputs, None)
    }

    fn evaluate_profiled(
        &mut self,
        inputs: &[&Surface],
        outputs: &mut [&mut Surface],
    ) -> Result<Option<Vec<StepTime>>> {
        let mut seconds = Vec::with_capacity(self.built.plan.steps.len());
        self.run(inputs, outputs, Some(&mut seconds))?;
        Ok(Some(step_times(&self.built.plan, &seconds)))
    }

    /// Replaces the file on this executable's disk, as the ANE backend rewrites it in the
    /// model's directory. Whether the next load reads it is [`SimReload`]'s business.
    fn overwrite_weight_file(&mut self, blob_path: &str, bytes: &[u8]) -> Result<()> {
        if self.disk.get(blob_path).is_none() {
            let known: Vec<&str> = self.disk.iter().map(|(p, _)| p).collect();
            let known = if known.is_empty() { "none".into() } else { known.join(", ") };
            return Err(Error::UnknownName(format!(
                "`{blob_path}` is not a weight file of this program (it has: {known})"
            )));
        }
        self.disk.insert(blob_path, bytes.to_vec());
        self.disk_changed = true;
        Ok(())
    }

    fn peak_memory_bytes(&self) -> usize {
        self.built.plan.memory.peak_bytes()
    }

    fn scratch_bytes(&self) -> usize {
        self.scratch.bytes()
    }

    fn intermediate_bytes(&self) -> usize {
        self.built.plan.intermediate_bytes
    }
}

impl SimExecutable {
    /// Runs every step of the plan. With `times`, each step is timed and its seconds pushed
    /// in step order; without, no clock is read.
    fn run(
        &mut self,
        inputs: &[&Surface],
        outputs: &mut [&mut Surface],
        times: Option<&mut Vec<f64>>,
    ) -> Result<()> {
        if !self.loaded {
            return Err(Error::State("evaluate on an unloaded model: call load() first".into()));
        }
        check_equal_sizes("input", inputs.iter().map(|s| (s.name(), s.alloc_size())))?;
        check_equal_sizes("output", outputs.iter().map(|s| (s.name(), s.alloc_size())))?;
        // (Its own handle: the steps below borrow the executable mutably.)
        let built = self.built.clone();
        let plan = &built.plan;
        let widened = built.widen();
        if inputs.len() != plan.inputs.len() || outputs.len() != plan.outputs.len() {
            return Err(Error::State(format!(
                "evaluate got {} inputs and {} outputs; the program has {} and {}",
                inputs.len(),
                outputs.len(),
                plan.inputs.len(),
                plan.outputs.len()
            )));
        }
        let input_bytes: Vec<&[u8]> =
            inputs.iter().map(|s| heap_bytes(s)).collect::<Result<_>>()?;
        let lent = lend_output_memory(plan, &mut self.buffers, outputs);
        // (A panic in a kernel is caught only to give the memory back, then goes on.)
        let steps = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run_steps(&input_bytes, times)
        }));
        let result = match steps {
            Ok(result) => result.and_then(|()| {
                // The other outputs are copied out, while the lent ones are still in place
                // (one can be a reshape of another, over the same buffer).
                let env = Env {
                    plan,
                    widened,
                    packed: &built.packed,
                    step: usize::MAX,
                    inputs: &input_bytes,
                    buffers: &self.buffers,
                };
                for (i, (&v, surface)) in plan.outputs.iter().zip(outputs.iter_mut()).enumerate() {
                    if !lent.iter().any(|&(l, _, _)| l == i) {
                        let src = env.bytes(v);
                        let n = src.len();
                        surface.memory_mut().write(&mut |dst| dst[..n].copy_from_slice(src))?;
                    }
                }
                Ok(())
            }),
            Err(panic) => {
                return_output_memory(&lent, &mut self.buffers, outputs);
                std::panic::resume_unwind(panic);
            }
        };
        return_output_memory(&lent, &mut self.buffers, outputs);
        result
    }

    /// Runs the steps in order, each into its output buffers, adding each step's seconds to
    /// `times` when given.
    fn run_steps(&mut self, input_bytes: &[&[u8]], mut times: Option<&mut Vec<f64>>) -> Result<()> {
        let plan = &self.built.plan;
        let widened = self.built.widen();
        for (s, step) in plan.steps.iter().enumerate() {
            // Outputs never share a buffer with a live input (the memory plan guarantees
            // it), so they can be taken out while the inputs are read.
            let mut outs: Vec<AlignedBytes> = step
                .outputs
                .iter()
                .map(|&o| match plan.values[o].storage {
                    Storage::Buffer(b) => Ok(std::mem::take(&mut self.buffers[b])),
                    _ => Err(Error::State(format!("`{}` has no buffer", plan.values[o].name))),
                })
                .collect::<Result<_>>()?;
            let started = times.is_some().then(std::time::Instant::now);
            let result = {
                let env = Env {
                    plan,
                    widened,
                    packed: &self.built.packed,
                    step: s,
                    inputs: input_bytes,
                    buffers: &self.buffers,
                };
                run_step(&env, step, &mut outs, &mut self.scratch)
            };
            if let (Some(times), Some(started)) = (times.as_deref_mut(), started) {
                times.push(started.elapsed().as_secs_f64());
            }
            for (&o, buf) in step.outputs.iter().zip(outs) {
                if let Storage::Buffer(b) = plan.values[o].storage {
                    self.buffers[b] = buf;
                }
            }
            result.map_err(|e| Error::Device {
                op: "evaluate",
                message: format!("{} `{}`: {e}", step.kind, step.op_name),
            })?;
        }
        Ok(())
    }
}

/// Trades the memory of the output surfaces that can take an output directly for the
/// buffers the plan gave those outputs, so that the kernels write the outputs in place and
/// evaluate copies nothing at the end; returns (output index, buffer, length of the lent
/// memory) of each trade, to be traded back after the steps.
///
/// An output is lent its surface's memory when that is heap memory at least as long as the
/// output's buffer, and the buffer is the output's size: every tensor that shares the
/// buffer (the memory plan reuses it for tensors that die before the output is made) then
/// writes only bytes the output overwrites, and a surface longer than its tensor (padded to
/// the device's common size) keeps its padding.
fn lend_output_memory(
    plan: &Plan,
    buffers: &mut [AlignedBytes],
    outputs: &mut [&mut Surface],
) -> Vec<(usize, usize, usize)> {
    let mut lent: Vec<(usize, usize, usize)> = Vec::new();
    for (i, (&v, surface)) in plan.outputs.iter().zip(outputs.iter_mut()).enumerate() {
        let Storage::Buffer(b) = plan.values[v].storage else { continue };
        let n = plan.values[v].ty.byte_size().unwrap_or(0) as usize;
        if buffers[b].len() != n || lent.iter().any(|&(_, l, _)| l == b) {
            continue;
        }
        if let Some(heap) = surface.memory_mut().as_heap_mut()
            && heap.bytes().len() >= n
        {
            let len = heap.bytes().len();
            std::mem::swap(&mut buffers[b], heap.allocation_mut());
            lent.push((i, b, len));
        }
    }
    lent
}

/// Undoes [`lend_output_memory`]: the lent outputs are in their surfaces' memory, which
/// goes back to them (also after an error, which leaves the outputs' contents unspecified).
/// Only a panic in the step that held the memory can have lost it; the surface then keeps
/// the buffer.
fn return_output_memory(
    lent: &[(usize, usize, usize)],
    buffers: &mut [AlignedBytes],
    outputs: &mut [&mut Surface],
) {
    for &(i, b, len) in lent {
        if let Some(heap) = outputs[i].memory_mut().as_heap_mut()
            && buffers[b].len() == len
        {
            std::mem::swap(&mut buffers[b], heap.allocation_mut());
        }
    }
}

/// Names the timed steps. A cast the plan added around fp32 arithmetic (it has no op in
/// the program) is reported under the op it serves: a narrowing of an operand under the op
/// that reads it (the step after it that is not itself a narrowing), a widening of a
/// result under the op that produced it.
fn step_times(plan: &Plan, seconds: &[f64]) -> Vec<StepTime> {
    // Hidden fp16 copies are labelled `name(fp16)`; MIL names cannot hold parentheses.
    let hidden = |v: ValueId| plan.values[v].name.ends_with("(fp16)");
    let added: Vec<Option<AddedStep>> = plan
        .steps
        .iter()
        .map(|step| {
            if !matches!(step.kernel, Kernel::Cast) {
                None
            } else if step.outputs.first().is_some_and(|&o| hidden(o)) {
                Some(AddedStep::Narrowing)
            } else if step.inputs.first().is_some_and(|&i| hidden(i)) {
                Some(AddedStep::Widening)
            } else {
                None
            }
        })
        .collect();
    let mut out: Vec<StepTime> = Vec::with_capacity(seconds.len());
    for (s, (step, &secs)) in plan.steps.iter().zip(seconds).enumerate() {
        let (op_name, op_kind) = match added[s] {
            Some(AddedStep::Narrowing) => (s + 1..plan.steps.len())
                .find(|&n| added[n] != Some(AddedStep::Narrowing))
                .map(|n| (plan.steps[n].op_name.clone(), plan.steps[n].kind))
                .unwrap_or((step.op_name.clone(), step.kind)),
            Some(AddedStep::Widening) => {
                let producer =
                    out.iter().rev().find(|t| t.op_name == step.op_name && t.added.is_none());
                (step.op_name.clone(), producer.map_or(step.kind, |t| t.op_kind))
            }
            None => (step.op_name.clone(), step.kind),
        };
        out.push(StepTime { op_name, op_kind, added: added[s], seconds: secs });
    }
    out
}

/// The ANE fails evaluate with 0x1d when surfaces differ in allocation size (REFERENCE.md
/// §2); the simulator refuses the same way, so a backend that breaks the rule is caught.
fn check_equal_sizes<'a>(
    what: &'static str,
    sizes: impl Iterator<Item = (&'a str, usize)>,
) -> Result<()> {
    let sizes: Vec<_> = sizes.collect();
    if sizes.windows(2).any(|w| w[0].1 != w[1].1) {
        let sizes =
            sizes.iter().map(|(n, b)| format!("`{n}` {b} B")).collect::<Vec<_>>().join(", ");
        return Err(Error::UnequalSurfaces { what, sizes });
    }
    Ok(())
}

fn heap_bytes(s: &Surface) -> Result<&[u8]> {
    let mem = s.memory().as_any().downcast_ref::<HeapMemory>().ok_or_else(|| {
        Error::Unsupported(format!("surface `{}` was not allocated by the simulator", s.name()))
    })?;
    Ok(&mem.bytes()[..s.tensor_bytes()])
}

/// Read access to every value during one step.
struct Env<'a> {
    plan: &'a Plan,
    widened: &'a [Option<Vec<f32>>],
    /// Packed constant operands, by (step, input).
    packed: &'a HashMap<(usize, usize), Packed>,
    /// The step being run.
    step: usize,
    inputs: &'a [&'a [u8]],
    buffers: &'a [AlignedBytes],
}

impl<'a> Env<'a> {
    fn bytes(&self, v: ValueId) -> &'a [u8] {
        let value = &self.plan.values[v];
        let n = value.ty.byte_size().unwrap_or(0) as usize;
        match value.storage {
            Storage::Input(i) => &self.inputs[i][..n],
            Storage::Const(c) => &self.plan.constants[c].bytes()[..n],
            Storage::Buffer(b) => &self.buffers[b].bytes()[value.offset..value.offset + n],
        }
    }

    fn ty(&self, v: ValueId) -> &'a TensorType {
        &self.plan.values[v].ty
    }

    /// Input `input` of the current step, packed ahead for the GEMM.
    fn packed(&self, input: usize) -> Option<&'a Packed> {
        self.packed.get(&(self.step, input))
    }

    fn widened(&self, v: ValueId) -> Option<&'a [f32]> {
        match self.plan.values[v].storage {
            Storage::Const(c) => self.widened[c].as_deref(),
            _ => None,
        }
    }
}

/// A typed view of a tensor's bytes.
fn view<T: bytemuck::Pod>(bytes: &[u8]) -> &[T] {
    bytemuck::cast_slice(bytes)
}

fn view_mut<T: bytemuck::Pod>(bytes: &mut [u8]) -> &mut [T] {
    bytemuck::cast_slice_mut(bytes)
}

type KResult = std::result::Result<(), String>;

fn unsupported(kind: &str, dtype: DType) -> String {
    format!("{kind} on {dtype} tensors is not supported by the simulator (fp16 and fp32 are)")
}

/// Calls `$f::<T>` for the float dtype `$d` (fp16 or fp32).
macro_rules! float_dispatch {
    ($d:expr, $what:expr, $f:ident) => {
        match $d {
            DType::Fp16 => $f::<f16>,
            DType::Fp32 => $f::<f32>,
            other => return Err(unsupported($what, other)),
        }
    };
}

fn run_step(
    env: &Env,
    step: &plan::Step,
    outs: &mut [AlignedBytes],
    scratch: &mut Scratch,
) -> KResult {
    let i = &step.inputs;
    let out_ty = &env.plan.values[step.outputs[0]].ty;
    let in_dtype = env.ty(i[0]).dtype;
    let k = |r: kernels::Result<()>| r.map_err(|e| e.to_string());
    // Buffers are shared by tensors of different sizes: each output is the exact prefix.
    let mut outs: Vec<&mut [u8]> = outs
        .iter_mut()
        .zip(&step.outputs)
        .map(|(b, &v)| {
            let value = &env.plan.values[v];
            let n = value.ty.byte_size().unwrap_or(0) as usize;
            &mut b.bytes_mut()[value.offset..value.offset + n]
        })
        .collect();
    if let Some(result) = run_family(env, step, &mut outs, scratch) {
        return result;
    }
    let o0: &mut [u8] = outs[0];
    match &step.kernel {
        Kernel::Cast => cast(env.bytes(i[0]), in_dtype, o0, out_ty.dtype),
        Kernel::Binary(op) => {
            let f = float_dispatch!(in_dtype, "an elementwise op", run_binary);
            f(env, *op, i[0], i[1], o0)
        }
        Kernel::Unary(op) => {
            let f = float_dispatch!(in_dtype, "an elementwise op", run_unary);
            f(env, *op, i[0], o0)
        }
        Kernel::Conv { params } => {
            let f = float_dispatch!(in_dtype, "conv", run_conv);
            f(env, params, i, o0, scratch)
        }
        Kernel::Matmul { transpose_x, transpose_y, windows } => {
            let f = float_dispatch!(in_dtype, "matmul", run_matmul);
            f(env, (*transpose_x, *transpose_y), windows, i, o0)
        }
        Kernel::Reduce { op, axes } => {
            let f = float_dispatch!(in_dtype, "a reduction", run_reduce);
            f(env, *op, axes, i[0], o0)
        }
        Kernel::Softmax { axis } => {
            let f = float_dispatch!(in_dtype, "softmax", run_softmax);
            f(env, *axis, i[0], o0)
        }
        Kernel::Attention { apply_mask, scale } => {
            let f = float_dispatch!(in_dtype, "scaled_dot_product_attention", run_attention);
            f(env, (*apply_mask, *scale), i, o0, scratch)
        }
        Kernel::Quantize(q) => {
            let f = float_dispatch!(in_dtype, "quantize", run_quantize);
            f(env, q, i[0], o0, out_ty.dtype)
        }
        Kernel::Dequantize(q) => {
            let f = float_dispatch!(out_ty.dtype, "dequantize", run_dequantize);
            f(env, q, i[0], o0)
        }
        Kernel::Transpose { perm } => {
            let x = env.bytes(i[0]);
            let shape = &env.ty(i[0]).shape;
            by_width(in_dtype, |w| match w {
                1 => k(layout::transpose::<u8>(x, shape, perm, o0)),
                2 => k(layout::transpose::<u16>(view(x), shape, perm, view_mut(o0))),
                4 => k(layout::transpose::<u32>(view(x), shape, perm, view_mut(o0))),
                _ => k(layout::transpose::<u64>(view(x), shape, perm, view_mut(o0))),
            })
        }
        Kernel::Slice { axes } => {
            let x = env.bytes(i[0]);
            let shape = &env.ty(i[0]).shape;
            by_width(in_dtype, |w| match w {
                1 => k(layout::slice::<u8>(x, shape, axes, o0)),
                2 => k(layout::slice::<u16>(view(x), shape, axes, view_mut(o0))),
                4 => k(layout::slice::<u32>(view(x), shape, axes, view_mut(o0))),
                _ => k(layout::slice::<u64>(view(x), shape, axes, view_mut(o0))),
            })
        }
        Kernel::Concat { placed, .. } if placed.contains(&true) => {
            // The inputs follow each other in the output (the plan placed parts only so);
            // those placed are there already, and their buffer is this step's output.
            let mut at = 0;
            for (&v, &placed) in i.iter().zip(placed) {
                let n = env.ty(v).byte_size().unwrap_or(0) as usize;
                if !placed {
                    o0[at..at + n].copy_from_slice(env.bytes(v));
                }
                at += n;
            }
            Ok(())
        }
        Kernel::Concat { axis, interleave, .. } => {
            let parts: Vec<(&[u8], &[usize])> =
                i.iter().map(|&v| (env.bytes(v), env.ty(v).shape.as_slice())).collect();
            fn typed<'a, T: bytemuck::Pod>(
                parts: &[(&'a [u8], &'a [usize])],
            ) -> Vec<(&'a [T], &'a [usize])> {
                parts.iter().map(|(b, s)| (view::<T>(b), *s)).collect()
            }
            let out = o0;
            by_width(in_dtype, |w| match w {
                1 => k(layout::concat::<u8>(&typed(&parts), *axis, *interleave, out)),
                2 => k(layout::concat::<u16>(&typed(&parts), *axis, *interleave, view_mut(out))),
                4 => k(layout::concat::<u32>(&typed(&parts), *axis, *interleave, view_mut(out))),
                _ => k(layout::concat::<u64>(&typed(&parts), *axis, *interleave, view_mut(out))),
            })
        }
        Kernel::Split { axis, sizes } => {
            let x = env.bytes(i[0]);
            let shape = &env.ty(i[0]).shape;
            fn typed<'b, T: bytemuck::Pod>(outs: &'b mut [&mut [u8]]) -> Vec<&'b mut [T]> {
                outs.iter_mut().map(|o| view_mut::<T>(o)).collect()
            }
            by_width(in_dtype, |w| match w {
                1 => k(layout::split::<u8>(x, shape, *axis, sizes, &mut typed(&mut outs))),
                2 => k(layout::split::<u16>(view(x), shape, *axis, sizes, &mut typed(&mut outs))),
                4 => k(layout::split::<u32>(view(x), shape, *axis, sizes, &mut typed(&mut outs))),
                _ => k(layout::split::<u64>(view(x), shape, *axis, sizes, &mut typed(&mut outs))),
            })
        }
        Kernel::Norm(_) | Kernel::Index(_) | Kernel::Logic(_) => {
            unreachable!("run by run_family")
        }
    }
}

/// Runs a step of an op family that runs itself (`sim::ops`); None for the other kernels.
fn run_family(
    env: &Env,
    step: &plan::Step,
    outs: &mut [&mut [u8]],
    scratch: &mut Scratch,
) -> Option<KResult> {
    if !matches!(step.kernel, Kernel::Norm(_) | Kernel::Index(_) | Kernel::Logic(_)) {
        return None;
    }
    let inputs: Vec<family::In> = step
        .inputs
        .iter()
        .enumerate()
        .map(|(slot, &v)| family::In {
            bytes: env.bytes(v),
            ty: env.ty(v),
            widened: env.widened(v),
            packed: match env.packed(slot) {
                Some(Packed::Matmul(p)) => Some(p),
                _ => None,
            },
        })
        .collect();
    let mut outputs: Vec<family::Out> = outs
        .iter_mut()
        .zip(&step.outputs)
        .map(|(b, &v)| family::Out { bytes: &mut b[..], ty: env.ty(v) })
        .collect();
    Some(match &step.kernel {
        Kernel::Norm(k) => family::norm::run(k, &inputs, &mut outputs, scratch),
        Kernel::Index(k) => family::index::run(k, &inputs, &mut outputs, scratch),
        Kernel::Logic(k) => family::logic::run(k, &inputs, &mut outputs, scratch),
        _ => unreachable!("checked above"),
    })
}

/// Layout kernels move elements without looking at them: dispatch on the element width.
fn by_width(dtype: DType, f: impl FnOnce(u32) -> KResult) -> KResult {
    match dtype.bits() {
        8 | 16 | 32 | 64 => f(dtype.bits() / 8),
        _ => Err(format!("{dtype} tensors cannot be moved element by element (sub-byte type)")),
    }
}

fn run_binary<T: Element + bytemuck::Pod>(
    env: &Env,
    op: BinaryOp,
    a: ValueId,
    b: ValueId,
    out: &mut [u8],
) -> KResult {
    binary::<T>(
        op,
        view(env.bytes(a)),
        &env.ty(a).shape,
        view(env.bytes(b)),
        &env.ty(b).shape,
        view_mut(out),
    )
    .map_err(|e| e.to_string())
}

fn run_unary<T: Element + bytemuck::Pod>(
    env: &Env,
    op: kernels::elementwise::UnaryOp,
    x: ValueId,
    out: &mut [u8],
) -> KResult {
    unary::<T>(op, view(env.bytes(x)), view_mut(out)).map_err(|e| e.to_string())
}

fn run_conv<T: Element + bytemuck::Pod>(
    env: &Env,
    params: &conv::ConvParams,
    i: &[ValueId],
    out: &mut [u8],
    scratch: &mut Scratch,
) -> KResult {
    let (x, w) = (i[0], i[1]);
    let bias = i.get(2).copied();
    let result = match (env.packed(1), bias.map(|b| env.widened(b))) {
        // A constant weight was packed when the plan was built; a constant fp16 bias widened
        // at load (identical values).
        (Some(Packed::Conv(pw)), None | Some(Some(_))) => conv::conv_packed::<T, T>(
            view(env.bytes(x)),
            &env.ty(x).shape,
            pw,
            bias.and_then(|b| env.widened(b)),
            params,
            view_mut(out),
            scratch,
        ),
        _ => conv::conv::<T, T, T>(
            view(env.bytes(x)),
            &env.ty(x).shape,
            view(env.bytes(w)),
            &env.ty(w).shape,
            bias.map(|b| view(env.bytes(b))),
            params,
            view_mut(out),
            scratch,
        ),
    };
    result.map_err(|e| e.to_string())
}

fn run_matmul<T: Element + bytemuck::Pod>(
    env: &Env,
    (tx, ty): (bool, bool),
    windows: &[Option<plan::RowWindow>; 2],
    i: &[ValueId],
    out: &mut [u8],
) -> KResult {
    // Constant operands were packed when the plan was built; a windowed one is read in place
    // from the tensor its slice was cut from.
    let input = |slot: usize| {
        let v = i[slot];
        match (env.packed(slot), &windows[slot]) {
            (Some(Packed::Matmul(p)), _) => (matmul::MatmulInput::Packed(p), &env.ty(v).shape),
            (_, Some(w)) => (
                matmul::MatmulInput::Rows {
                    data: view::<T>(env.bytes(v)),
                    offset: w.offset,
                    row_stride: w.row_stride,
                },
                &w.shape,
            ),
            _ => (matmul::MatmulInput::Values(view::<T>(env.bytes(v))), &env.ty(v).shape),
        }
    };
    let ((a, sa), (b, sb)) = (input(0), input(1));
    matmul::matmul_inputs::<T, T, T>(a, sa, b, sb, tx, ty, view_mut(out)).map_err(|e| e.to_string())
}

fn run_reduce<T: Element + bytemuck::Pod>(
    env: &Env,
    op: reduce::ReduceOp,
    axes: &[usize],
    x: ValueId,
    out: &mut [u8],
) -> KResult {
    reduce::reduce::<T>(op, view(env.bytes(x)), &env.ty(x).shape, axes, view_mut(out))
        .map_err(|e| e.to_string())
}

fn run_softmax<T: Element + bytemuck::Pod>(
    env: &Env,
    axis: usize,
    x: ValueId,
    out: &mut [u8],
) -> KResult {
    softmax::softmax::<T>(view(env.bytes(x)), &env.ty(x).shape, axis, view_mut(out))
        .map_err(|e| e.to_string())
}

fn run_attention<T: Element + bytemuck::Pod>(
    env: &Env,
    (apply_mask, scale): (bool, Option<f32>),
    i: &[ValueId],
    out: &mut [u8],
    scratch: &mut Scratch,
) -> KResult {
    let (q, k, v) = (i[0], i[1], i[2]);
    let mask = match i.get(3) {
        Some(&m) if env.ty(m).dtype == env.ty(q).dtype => {
            Some(attention::AttentionMask::Additive {
                values: view::<T>(env.bytes(m)),
                shape: &env.ty(m).shape,
            })
        }
        Some(&m) => return Err(unsupported("an attention mask", env.ty(m).dtype)),
        None => None,
    };
    attention::attention_scaled::<T>(
        view(env.bytes(q)),
        &env.ty(q).shape,
        view(env.bytes(k)),
        &env.ty(k).shape,
        view(env.bytes(v)),
        &env.ty(v).shape,
        mask,
        apply_mask,
        scale,
        view_mut(out),
        scratch,
    )
    .map_err(|e| e.to_string())
}

/// The plan's zero points in the integer type the kernel works on (the registry has checked
/// that they fit).
fn zero_points<Q: quant::QuantInt>(q: &plan::Quant) -> Vec<Q> {
    q.zero_point.iter().map(|&z| Q::saturate(z as i32)).collect()
}

fn quant_params<'a, Q>(q: &'a plan::Quant, zp: &'a [Q]) -> quant::QuantParams<'a, Q> {
    quant::QuantParams { scale: &q.scale, zero_point: Some(zp), axis: q.axis }
}

fn run_quantize<T: Element + bytemuck::Pod>(
    env: &Env,
    q: &plan::Quant,
    x: ValueId,
    out: &mut [u8],
    out_dtype: DType,
) -> KResult {
    let (xs, shape) = (view::<T>(env.bytes(x)), &env.ty(x).shape);
    let r = match out_dtype {
        DType::Int8 => {
            let zp = zero_points::<i8>(q);
            let p = quant_params(q, &zp);
            quant::quantize::<T, i8>(xs, shape, p, view_mut(out))
        }
        DType::UInt8 => {
            let zp = zero_points::<u8>(q);
            let p = quant_params(q, &zp);
            quant::quantize::<T, u8>(xs, shape, p, out)
        }
        other => return Err(unsupported("quantize output", other)),
    };
    r.map_err(|e| e.to_string())
}

fn run_dequantize<T: Element + bytemuck::Pod>(
    env: &Env,
    q: &plan::Quant,
    x: ValueId,
    out: &mut [u8],
) -> KResult {
    let (bytes, shape) = (env.bytes(x), &env.ty(x).shape);
    let r = match env.ty(x).dtype {
        DType::Int8 => {
            let zp = zero_points::<i8>(q);
            let p = quant_params(q, &zp);
            quant::dequantize::<i8, T>(view(bytes), shape, p, view_mut(out))
        }
        DType::UInt8 => {
            let zp = zero_points::<u8>(q);
            let p = quant_params(q, &zp);
            quant::dequantize::<u8, T>(bytes, shape, p, view_mut(out))
        }
        other => return Err(unsupported("dequantize input", other)),
    };
    r.map_err(|e| e.to_string())
}

/// cast between every pair of dtypes the kernel knows.
fn cast(src: &[u8], from: DType, dst: &mut [u8], to: DType) -> KResult {
    macro_rules! to {
        ($S:ty, $s:expr) => {
            match to {
                DType::Fp16 => quant::cast::<$S, f16>($s, view_mut(dst)),
                DType::Fp32 => quant::cast::<$S, f32>($s, view_mut(dst)),
                DType::Int8 => quant::cast::<$S, i8>($s, view_mut(dst)),
                DType::UInt8 => quant::cast::<$S, u8>($s, dst),
                DType::Int16 => quant::cast::<$S, i16>($s, view_mut(dst)),
                DType::UInt16 => quant::cast::<$S, u16>($s, view_mut(dst)),
                DType::Int32 => quant::cast::<$S, i32>($s, view_mut(dst)),
                DType::UInt32 => quant::cast::<$S, u32>($s, view_mut(dst)),
                DType::Int64 => quant::cast::<$S, i64>($s, view_mut(dst)),
                DType::Bool => quant::cast::<$S, quant::BoolByte>($s, view_mut(dst)),
                other => return Err(unsupported("cast", other)),
            }
        };
    }
    let r = match from {
        DType::Fp16 => to!(f16, view::<f16>(src)),
        DType::Fp32 => to!(f32, view::<f32>(src)),
        DType::Int8 => to!(i8, view::<i8>(src)),
        DType::UInt8 => to!(u8, src),
        DType::Int16 => to!(i16, view::<i16>(src)),
        DType::UInt16 => to!(u16, view::<u16>(src)),
        DType::Int32 => to!(i32, view::<i32>(src)),
        DType::UInt32 => to!(u32, view::<u32>(src)),
        DType::Int64 => to!(i64, view::<i64>(src)),
        DType::Bool => to!(quant::BoolByte, view::<quant::BoolByte>(src)),
        other => return Err(unsupported("cast", other)),
    };
    r.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use anemone_mil::builder::{Builder, BuiltProgram};
    use anemone_mil::ops::OpKind;

    use super::*;

    const WEIGHT_PATH: &str = "@model_path/weights/weight.bin";

    /// `main` of `built`, compiled by a simulator with `options`.
    fn compile(
        built: &BuiltProgram,
        inputs: &[(String, TensorType)],
        outputs: &[(String, TensorType)],
        options: SimOptions,
    ) -> SimCompiled {
        let job = CompileJob {
            program: &built.program,
            function: "main",
            text: "",
            weights: &built.weights,
            read_mode: ReadMode::Strict,
            inputs,
            outputs,
        };
        SimBackend::with_options(options).compile_program(&job).unwrap()
    }

    /// A compiled 1x1 conv with identity weights, and its weight file.
    fn compiled(reload: SimReload) -> (Arc<SimCompiled>, Vec<u8>) {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", TensorType::new(DType::Fp16, [1, 4, 1, 8]));
        let eye: Vec<f32> = (0..16).map(|i| if i / 4 == i % 4 { 1.0 } else { 0.0 }).collect();
        let w = f.weight("W", TensorType::new(DType::Fp16, [4, 4, 1, 1]), &eye).unwrap();
        let y = f.conv(&x, &w, &Default::default()).unwrap();
        f.output_named(&y, "y").unwrap();
        f.finish();
        let built = b.build().unwrap();
        let io = |name: &str| vec![(name.to_string(), TensorType::new(DType::Fp16, [1, 4, 1, 8]))];
        let options = SimOptions { reload, ..SimOptions::default() };
        let compiled = compile(&built, &io("x"), &io("y"), options);
        let file = built.weights.get(WEIGHT_PATH).unwrap().bytes().to_vec();
        (Arc::new(compiled), file)
    }

    #[test]
    fn linear_weights_are_packed_at_compile_and_only_the_bias_is_widened() {
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", TensorType::new(DType::Fp16, [3, 8]));
        let values: Vec<f32> = (0..40).map(|i| i as f32 / 8.0).collect();
        let w = f.weight("W", TensorType::new(DType::Fp16, [5, 8]), &values).unwrap();
        let bias = f.weight("b", TensorType::new(DType::Fp16, [5]), &values[..5]).unwrap();
        let options = anemone_mil::builder::LinearOptions { bias: Some(bias) };
        let y = f.linear(&x, &w, &options).unwrap();
        f.output_named(&y, "y").unwrap();
        f.finish();
        let built = b.build().unwrap();
        let x_io = [("x".to_string(), TensorType::new(DType::Fp16, [3, 8]))];
        let y_io = [("y".to_string(), TensorType::new(DType::Fp16, [3, 5]))];
        let compiled = compile(&built, &x_io, &y_io, SimOptions::default());
        let plan = &compiled.built.plan;
        let step =
            plan.steps.iter().position(|s| s.kind == anemone_mil::ops::OpKind::Linear).unwrap();
        assert_eq!(plan.prepack, [plan::Prepack { step, input: 1 }]);
        assert!(matches!(compiled.built.packed.get(&(step, 1)), Some(Packed::Matmul(_))));
        let constant = |input: usize| match plan.values[plan.steps[step].inputs[input]].storage {
            Storage::Const(c) => c,
            other => panic!("input {input} is {other:?}"),
        };
        assert_eq!(plan.widen, [constant(2)]);
    }

    #[test]
    fn matmuls_read_slices_of_whole_rows_in_place_with_the_same_bits() {
        // One input packs every operand, as models with dynamic weights do: p[.., 0:8] is x,
        // read by two matmuls, p[.., 8:32] a weight read as it is stored and p[.., 32:40] one
        // read transposed. These slices are read in place. p[.., 16:24] is also an output of
        // the function, so its slice stays a step of its own.
        let mut b = Builder::new();
        let mut f = b.function("main");
        let p = f.input("p", TensorType::new(DType::Fp16, [1, 6, 1, 40]));
        let xs = f.slice_by_size(&p, &[0, 0, 0, 0], &[1, 6, 1, 8]).unwrap();
        let x = f.reshape(&xs, &[6, 8]).unwrap();
        let ws = f.slice_by_size(&p, &[0, 0, 0, 8], &[1, 6, 1, 24]).unwrap();
        let w = f.reshape(&ws, &[1, 6, 24]).unwrap();
        let y = f.matmul(&x, &w, true, false).unwrap();
        let ts = f.slice_by_size(&p, &[0, 0, 0, 32], &[1, 6, 1, 8]).unwrap();
        let t = f.reshape(&ts, &[6, 8]).unwrap();
        let z = f.matmul(&x, &t, false, true).unwrap();
        let ks = f.slice_by_size(&p, &[0, 0, 0, 16], &[1, 6, 1, 8]).unwrap();
        let k = f.reshape(&ks, &[6, 8]).unwrap();
        let kk = f.matmul(&k, &k, true, false).unwrap();
        f.output_named(&y, "y").unwrap();
        f.output_named(&z, "z").unwrap();
        f.output_named(&kk, "kk").unwrap();
        f.output_named(&ks, "ks").unwrap();
        f.finish();
        let built = b.build().unwrap();
        let io =
            |name: &str, shape: &[usize]| (name.to_string(), TensorType::new(DType::Fp16, shape));
        let outputs =
            [io("y", &[1, 8, 24]), io("z", &[6, 6]), io("kk", &[8, 8]), io("ks", &[1, 6, 1, 8])];
        let compiled = compile(&built, &[io("p", &[1, 6, 1, 40])], &outputs, SimOptions::default());
        let plan = &compiled.built.plan;
        let slices = plan.steps.iter().filter(|s| matches!(s.kernel, Kernel::Slice { .. })).count();
        assert_eq!(slices, 1, "only the slice that is also an output stays");
        let matmuls: Vec<&plan::Step> =
            plan.steps.iter().filter(|s| s.kind == anemone_mil::ops::OpKind::Matmul).collect();
        let window = |shape: &[usize], offset: usize| {
            Some(plan::RowWindow { shape: shape.to_vec(), offset, row_stride: 40 })
        };
        let x_window = window(&[6, 8], 0);
        let want = [
            [x_window.clone(), window(&[1, 6, 24], 8)],
            [x_window, window(&[6, 8], 32)],
            [None, None],
        ];
        assert_eq!(matmuls.len(), 3);
        for (step, want) in matmuls.iter().zip(want) {
            let Kernel::Matmul { windows, .. } = &step.kernel else { unreachable!() };
            assert_eq!(windows, &want);
        }

        // The products must equal those of the dense slices, bit for bit.
        let values: Vec<f32> = (0..240)
            .map(|i| f16::from_f32(((i * 37 % 101) as f32 - 50.0) / 7.0).to_f32())
            .collect();
        let mut model = crate::Device::simulator().compile(&built.program, &built.weights).unwrap();
        model.input("p").unwrap().write_f32(&values).unwrap();
        model.evaluate().unwrap();
        // Columns c0..c0 + n of the six rows of p.
        let pick = |c0: usize, n: usize| -> Vec<f16> {
            (0..6 * n).map(|i| f16::from_f32(values[i / n * 40 + c0 + i % n])).collect()
        };
        let dense = |(x, xs): (&[f16], &[usize]), (w, ws): (&[f16], &[usize]), tx, ty, len| {
            let mut out = vec![f16::ZERO; len];
            matmul::matmul(x, xs, w, ws, tx, ty, &mut out, &mut Scratch::new()).unwrap();
            out.iter().map(|v| v.to_f32()).collect::<Vec<f32>>()
        };
        let x = pick(0, 8);
        let y = dense((&x, &[6, 8]), (&pick(8, 24), &[1, 6, 24]), true, false, 8 * 24);
        assert_eq!(model.output("y").unwrap().read_f32().unwrap(), y);
        let z = dense((&x, &[6, 8]), (&pick(32, 8), &[6, 8]), false, true, 36);
        assert_eq!(model.output("z").unwrap().read_f32().unwrap(), z);
    }

    /// `built` on a simulator, each input `(name, elements, seed)` filled with scrambled
    /// values in [-3.3, 3.3]; the bits of fp16 output `output`.
    fn evaluate_fp16(
        built: &BuiltProgram,
        inputs: &[(&str, usize, u32)],
        output: &str,
    ) -> Vec<u16> {
        let mut model = crate::Device::simulator().compile(&built.program, &built.weights).unwrap();
        for &(name, n, seed) in inputs {
            let values: Vec<f32> = (0..n)
                .map(|i| {
                    (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 150.0 - 3.3
                })
                .collect();
            model.input(name).unwrap().write_f32(&values).unwrap();
        }
        model.evaluate().unwrap();
        let y = model.output(output).unwrap().read_f32().unwrap();
        y.iter().map(|&x| f16::from_f32(x).to_bits()).collect()
    }

    /// An fp16 input or output of `shape`, as a compile job names it.
    fn fp16_io(name: &str, shape: &[usize]) -> (String, TensorType) {
        (name.to_string(), TensorType::new(DType::Fp16, shape))
    }

    /// Q [2, 3, 20, 16], K [2, 3, 24, 16], V [2, 3, 24, 8] through the attention a graph
    /// spells out: matmul(Q, K^T), mul by `scale`, add a causal-style mask when `masked`,
    /// softmax, matmul by V. With `keep_scores` the scaled scores are an output too, which
    /// keeps every step of the graph. Returns the plan's step kinds and the result's bits.
    fn spelled_attention(scale: f32, masked: bool, keep_scores: bool) -> (Vec<OpKind>, Vec<u16>) {
        let (qs, ks, vs) = ([2, 3, 20, 16], [2, 3, 24, 16], [2, 3, 24, 8]);
        let mut b = Builder::new();
        let mut f = b.function("main");
        let q = f.input("q", TensorType::new(DType::Fp16, qs));
        let k = f.input("k", TensorType::new(DType::Fp16, ks));
        let v = f.input("v", TensorType::new(DType::Fp16, vs));
        let scores = f.matmul(&q, &k, false, true).unwrap();
        let c = f.scalar_fp16("scale", scale);
        let scaled = f.mul(&scores, &c).unwrap();
        let mut logits = scaled.clone();
        if masked {
            let mask: Vec<f32> =
                (0..20 * 24).map(|i| if i % 24 > i / 24 + 4 { -40000.0 } else { 0.0 }).collect();
            let m = f.weight("mask", TensorType::new(DType::Fp16, [1, 1, 20, 24]), &mask).unwrap();
            logits = f.add(&m, &scaled).unwrap();
        }
        let p = f.softmax(&logits, -1).unwrap();
        let y = f.matmul(&p, &v, false, false).unwrap();
        f.output_named(&y, "y").unwrap();
        if keep_scores {
            f.output_named(&scaled, "scaled").unwrap();
        }
        f.finish();
        let built = b.build().unwrap();
        let bits = evaluate_fp16(&built, &[("q", 1920, 1), ("k", 2304, 2), ("v", 1152, 3)], "y");
        let mut outputs = vec![fp16_io("y", &[2, 3, 20, 8])];
        if keep_scores {
            outputs.push(fp16_io("scaled", &[2, 3, 20, 24]));
        }
        let inputs = [fp16_io("q", &qs), fp16_io("k", &ks), fp16_io("v", &vs)];
        let compiled = compile(&built, &inputs, &outputs, SimOptions::default());
        (compiled.built.plan.steps.iter().map(|s| s.kind).collect(), bits)
    }

    #[test]
    fn spelled_out_attention_runs_fused_with_the_same_bits() {
        for scale in [0.25f32, 0.088388, -0.3] {
            for masked in [false, true] {
                let (fused_steps, fused) = spelled_attention(scale, masked, false);
                assert_eq!(fused_steps, [OpKind::ScaledDotProductAttention], "{scale} {masked}");
                let (steps, decomposed) = spelled_attention(scale, masked, true);
                assert_eq!(steps.len(), if masked { 5 } else { 4 }, "{scale} {masked}");
                assert_eq!(fused, decomposed, "scale {scale}, masked {masked}");
            }
        }
    }

    /// `transpose(matmul(transpose(a), b))` over a batch of 2, with a [2, 64, 48] and b
    /// [2, 64, 200] fp16 (the folded product's A is 200 x 64, more rows than one block of the
    /// GEMM). With `keep` the transposed operand and the product are outputs too, which keeps
    /// both transposes. Returns the plan's step kinds and the result's bits.
    fn transposed_product(keep: bool) -> (Vec<OpKind>, Vec<u16>) {
        let (a_shape, b_shape) = ([2, 64, 48], [2, 64, 200]);
        let mut b = Builder::new();
        let mut f = b.function("main");
        let a = f.input("a", TensorType::new(DType::Fp16, a_shape));
        let bx = f.input("b", TensorType::new(DType::Fp16, b_shape));
        let at = f.transpose(&a, &[0, 2, 1]).unwrap();
        let p = f.matmul(&at, &bx, false, false).unwrap();
        let y = f.transpose(&p, &[0, 2, 1]).unwrap();
        f.output_named(&y, "y").unwrap();
        if keep {
            f.output_named(&at, "at").unwrap();
            f.output_named(&p, "p").unwrap();
        }
        f.finish();
        let built = b.build().unwrap();
        let bits = evaluate_fp16(&built, &[("a", 2 * 64 * 48, 5), ("b", 2 * 64 * 200, 6)], "y");
        let mut outputs = vec![fp16_io("y", &[2, 200, 48])];
        if keep {
            outputs.extend([fp16_io("at", &[2, 48, 64]), fp16_io("p", &[2, 48, 200])]);
        }
        let inputs = [fp16_io("a", &a_shape), fp16_io("b", &b_shape)];
        let compiled = compile(&built, &inputs, &outputs, SimOptions::default());
        (compiled.built.plan.steps.iter().map(|s| s.kind).collect(), bits)
    }

    #[test]
    fn transposes_beside_a_matmul_fold_into_it_with_the_same_bits() {
        let (folded_steps, folded) = transposed_product(false);
        assert_eq!(folded_steps, [OpKind::Matmul]);
        let (steps, kept) = transposed_product(true);
        assert_eq!(steps, [OpKind::Transpose, OpKind::Matmul, OpKind::Transpose]);
        assert_eq!(folded, kept);
        assert!(kept.iter().any(|&b| b != 0), "the product is not all zeros");
    }

    #[test]
    fn outputs_are_made_in_their_surfaces_which_keep_their_memory_and_padding() {
        // y = x + x is an output that later ops read; z, a reshape of y, a second output over
        // its buffer; w, a slice of y, an output smaller than the surfaces' common size.
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", TensorType::new(DType::Fp16, [1, 4, 1, 8]));
        let y = f.add(&x, &x).unwrap();
        let z = f.reshape(&y, &[32]).unwrap();
        let w = f.slice_by_size(&y, &[0, 0, 0, 0], &[1, 4, 1, 2]).unwrap();
        let u = f.mul(&y, &y).unwrap();
        for (v, name) in [(&y, "y"), (&z, "z"), (&w, "w"), (&u, "u")] {
            f.output_named(v, name).unwrap();
        }
        f.finish();
        let built = b.build().unwrap();
        let outputs = [
            fp16_io("y", &[1, 4, 1, 8]),
            fp16_io("z", &[32]),
            fp16_io("w", &[1, 4, 1, 2]),
            fp16_io("u", &[1, 4, 1, 8]),
        ];
        let compiled = Arc::new(compile(
            &built,
            &[fp16_io("x", &[1, 4, 1, 8])],
            &outputs,
            SimOptions::default(),
        ));
        let mut exec = compiled.executable();
        exec.load().unwrap();
        let surface =
            |(name, ty): &(String, TensorType)| Surface::new_heap(name, ty.clone(), 64).unwrap();
        let mut x_surface = surface(&fp16_io("x", &[1, 4, 1, 8]));
        let mut outs: Vec<Surface> = outputs.iter().map(surface).collect();
        // w's 16 bytes are followed by 48 of padding, marked.
        outs[2].memory_mut().write(&mut |d| d[16..].fill(0xab)).unwrap();
        let homes: Vec<*const u8> = outs.iter().map(|s| heap_bytes(s).unwrap().as_ptr()).collect();
        for round in 0..3 {
            let xs: Vec<f32> = (0..32).map(|i| (i * (round + 1)) as f32 / 8.0 - 1.0).collect();
            x_surface.write_f32(&xs).unwrap();
            let mut refs: Vec<&mut Surface> = outs.iter_mut().collect();
            exec.evaluate(&[&x_surface], &mut refs).unwrap();
            let ys: Vec<f32> = xs.iter().map(|v| v + v).collect();
            assert_eq!(outs[0].read_f32().unwrap(), ys, "round {round}");
            assert_eq!(outs[1].read_f32().unwrap(), ys, "round {round}");
            let ws: Vec<f32> = (0..4).flat_map(|c| [ys[c * 8], ys[c * 8 + 1]]).collect();
            assert_eq!(outs[2].read_f32().unwrap(), ws, "round {round}");
            let us: Vec<f32> = ys.iter().map(|v| f16::from_f32(v * v).to_f32()).collect();
            assert_eq!(outs[3].read_f32().unwrap(), us, "round {round}");
            outs[2].memory().read(&mut |d| assert!(d[16..].iter().all(|&b| b == 0xab))).unwrap();
            let now: Vec<*const u8> =
                outs.iter().map(|s| heap_bytes(s).unwrap().as_ptr()).collect();
            assert_eq!(now, homes, "each surface keeps its own memory");
        }
    }

    #[test]
    fn concat_parts_are_made_in_place_in_the_concat_with_the_same_values() {
        // out = concat(x + x, x, x * x, k, inner) along axis 1 of [1, C, 1, 8]: x + x and
        // x * x are read by the concat alone and are made in its output; x is an input, k
        // (2x - x) is also read by another op, and inner is a concat with parts of its own
        // (x - x and relu(x)): those are copied. A concat along axis 3 (dims of 4 before it) places
        // nothing.
        let mut b = Builder::new();
        let mut f = b.function("main");
        let x = f.input("x", TensorType::new(DType::Fp16, [1, 2, 1, 8]));
        let twice = f.add(&x, &x).unwrap();
        let square = f.mul(&x, &x).unwrap();
        let doubled = f.add(&x, &x).unwrap();
        let k = f.sub(&doubled, &x).unwrap();
        let k2 = f.mul(&k, &x).unwrap();
        let zero = f.sub(&x, &x).unwrap();
        let relu = f.relu(&x).unwrap();
        let inner = f.concat(&[zero, relu], 1, false).unwrap();
        let out = f.concat(&[twice, x.clone(), square, k, inner], 1, false).unwrap();
        let wide = f.concat(&[k2.clone(), x.clone()], 3, false).unwrap();
        f.output_named(&out, "out").unwrap();
        f.output_named(&wide, "wide").unwrap();
        f.finish();
        let built = b.build().unwrap();
        let outputs = [fp16_io("out", &[1, 12, 1, 8]), fp16_io("wide", &[1, 2, 1, 16])];
        let compiled = Arc::new(compile(
            &built,
            &[fp16_io("x", &[1, 2, 1, 8])],
            &outputs,
            SimOptions::default(),
        ));
        let plan = &compiled.built.plan;
        let placed: Vec<Vec<bool>> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.kernel {
                Kernel::Concat { placed, .. } => Some(placed.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(placed, [vec![true, true], vec![true, false, true, false, false], vec![]]);
        let mut exec = compiled.executable();
        exec.load().unwrap();
        let xs: Vec<f32> = (0..16).map(|i| i as f32 / 4.0 - 2.0).collect();
        let mut x_surface = Surface::new_heap("x", fp16_io("x", &[1, 2, 1, 8]).1, 32).unwrap();
        x_surface.write_f32(&xs).unwrap();
        let mut outs: Vec<Surface> = outputs
            .iter()
            .map(|(name, ty)| Surface::new_heap(name, ty.clone(), 192).unwrap())
            .collect();
        let mut refs: Vec<&mut Surface> = outs.iter_mut().collect();
        exec.evaluate(&[&x_surface], &mut refs).unwrap();
        let r = |v: f32| f16::from_f32(v).to_f32();
        let square: Vec<f32> = xs.iter().map(|&v| r(v * v)).collect();
        let k: Vec<f32> = xs.iter().map(|&v| r(v + v - v)).collect();
        let mut want: Vec<f32> = xs.iter().map(|&v| v + v).collect();
        want.extend(&xs);
        want.extend(&square);
        want.extend(&k);
        want.extend(xs.iter().map(|_| 0.0));
        want.extend(xs.iter().map(|&v| v.max(0.0)));
        assert_eq!(outs[0].read_f32().unwrap(), want);
        let k2: Vec<f32> = k.iter().zip(&xs).map(|(&a, &v)| r(a * v)).collect();
        let wide: Vec<f32> =
            (0..2).flat_map(|c| [&k2[c * 8..c * 8 + 8], &xs[c * 8..c * 8 + 8]].concat()).collect();
        assert_eq!(outs[1].read_f32().unwrap(), wide);
    }

    #[test]
    fn an_overwrite_replaces_the_executables_file_in_either_model() {
        for reload in SimReload::ALL {
            let (compiled, original) = compiled(reload);
            let mut exec = compiled.executable();
            assert_eq!(exec.weight_file(WEIGHT_PATH), Some(&original[..]));
            let mut rewritten = original.clone();
            let last = rewritten.len() - 1;
            rewritten[last] ^= 0x40;
            exec.overwrite_weight_file(WEIGHT_PATH, &rewritten).unwrap();
            assert_eq!(exec.weight_file(WEIGHT_PATH), Some(&rewritten[..]), "{reload}");
            exec.load().unwrap();
            // The load reads the new file only when the model says it does.
            let reread = !Arc::ptr_eq(&exec.built, &compiled.built);
            assert_eq!(reread, reload == SimReload::ReadsDisk, "{reload}");
            // Other executables of the program still have the compile's file.
            assert_eq!(compiled.executable().weight_file(WEIGHT_PATH), Some(&original[..]));
        }
    }
}
