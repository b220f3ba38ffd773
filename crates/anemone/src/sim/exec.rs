//! The simulator backend: compiles programs into plans and runs them step by step over
//! fp16/fp32 buffers, checking the ANE's rules on every evaluate (equal surface sizes,
//! loaded before evaluate).

use std::sync::{Arc, OnceLock};

use anemone_mil::{DType, TensorType, f16};

use super::kernels::elementwise::{BinaryOp, binary, unary};
use super::kernels::{
    self, Element, Scratch, attention, conv, layout, matmul, quant, reduce, softmax,
};
use super::plan::{self, Kernel, Plan, SimOptions, Storage, ValueId};
use crate::aligned::AlignedBytes;
use crate::device::{Backend, BindingOrder, CompileJob, Compiled, DeviceKind, Executable};
use crate::error::{Error, Result};
use crate::surface::{HeapMemory, Surface};

/// The CPU simulator backend.
#[derive(Debug, Default)]
pub struct SimBackend {
    options: SimOptions,
}

impl SimBackend {
    pub fn new() -> SimBackend {
        SimBackend::default()
    }

    pub fn with_options(options: SimOptions) -> SimBackend {
        SimBackend { options }
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
        let plan = plan::compile(
            job.program,
            job.function,
            job.weights,
            job.read_mode,
            job.inputs,
            job.outputs,
            self.options,
        )?;
        Ok(Arc::new(SimCompiled { plan, widened: OnceLock::new() }))
    }
}

/// A compiled plan, shared by every model instantiated from it.
#[derive(Debug)]
pub struct SimCompiled {
    pub plan: Plan,
    /// GEMM weights widened to f32 by the first load, indexed by constant.
    widened: OnceLock<Vec<Option<Vec<f32>>>>,
}

impl SimCompiled {
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

impl Compiled for SimCompiled {
    fn instantiate(self: Arc<Self>) -> Result<Box<dyn Executable>> {
        Ok(Box::new(SimExecutable {
            compiled: self,
            buffers: Vec::new(),
            scratch: Scratch::new(),
            loaded: false,
        }))
    }
}

/// One loadable instance: activation buffers exist only while loaded.
pub struct SimExecutable {
    compiled: Arc<SimCompiled>,
    buffers: Vec<AlignedBytes>,
    scratch: Scratch,
    loaded: bool,
}

impl Executable for SimExecutable {
    fn load(&mut self) -> Result<()> {
        if !self.loaded {
            self.compiled.widen();
            self.buffers = self
                .compiled
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
        if !self.loaded {
            return Err(Error::State("evaluate on an unloaded model: call load() first".into()));
        }
        check_equal_sizes("input", inputs.iter().map(|s| (s.name(), s.alloc_size())))?;
        check_equal_sizes("output", outputs.iter().map(|s| (s.name(), s.alloc_size())))?;
        let plan = &self.compiled.plan;
        let widened = self.compiled.widen();
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
        for step in &plan.steps {
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
            let result = {
                let env = Env { plan, widened, inputs: &input_bytes, buffers: &self.buffers };
                run_step(&env, step, &mut outs, &mut self.scratch)
            };
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
        let env = Env { plan, widened, inputs: &input_bytes, buffers: &self.buffers };
        for (&v, surface) in plan.outputs.iter().zip(outputs.iter_mut()) {
            let src = env.bytes(v);
            let n = src.len();
            surface.memory_mut().write(&mut |dst| dst[..n].copy_from_slice(src));
        }
        Ok(())
    }

    fn overwrite_weight_file(&mut self, _blob_path: &str, _bytes: &[u8]) -> Result<()> {
        // The plan holds its own copy of every constant, decoded at compile: like the ANE,
        // the simulator never reads the weight file again, so there is nothing to update.
        Ok(())
    }

    fn peak_memory_bytes(&self) -> usize {
        self.compiled.plan.memory.peak_bytes()
    }

    fn scratch_bytes(&self) -> usize {
        self.scratch.bytes()
    }

    fn intermediate_bytes(&self) -> usize {
        self.compiled.plan.intermediate_bytes
    }
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
            Storage::Buffer(b) => &self.buffers[b].bytes()[..n],
        }
    }

    fn ty(&self, v: ValueId) -> &'a TensorType {
        &self.plan.values[v].ty
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
            let n = env.plan.values[v].ty.byte_size().unwrap_or(0) as usize;
            &mut b.bytes_mut()[..n]
        })
        .collect();
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
        Kernel::Matmul { transpose_x, transpose_y } => {
            let f = float_dispatch!(in_dtype, "matmul", run_matmul);
            f(env, (*transpose_x, *transpose_y), i, o0, scratch)
        }
        Kernel::Reduce { op, axes } => {
            let f = float_dispatch!(in_dtype, "a reduction", run_reduce);
            f(env, *op, axes, i[0], o0)
        }
        Kernel::Softmax { axis } => {
            let f = float_dispatch!(in_dtype, "softmax", run_softmax);
            f(env, *axis, i[0], o0)
        }
        Kernel::Attention { apply_mask } => {
            let f = float_dispatch!(in_dtype, "scaled_dot_product_attention", run_attention);
            f(env, *apply_mask, i, o0, scratch)
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
        Kernel::Concat { axis, interleave } => {
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
    }
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
    let result = match (env.widened(w), bias.map(|b| env.widened(b))) {
        // Constant fp16 weights were widened at compile time (identical values).
        (Some(wf), None | Some(Some(_))) => conv::conv::<T, f32, T>(
            view(env.bytes(x)),
            &env.ty(x).shape,
            wf,
            &env.ty(w).shape,
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
    i: &[ValueId],
    out: &mut [u8],
    scratch: &mut Scratch,
) -> KResult {
    let (a, b) = (i[0], i[1]);
    let (sa, sb) = (&env.ty(a).shape, &env.ty(b).shape);
    let result = match (env.widened(a), env.widened(b)) {
        (Some(wa), Some(wb)) => {
            matmul::matmul::<f32, f32, T>(wa, sa, wb, sb, tx, ty, view_mut(out), scratch)
        }
        (Some(wa), None) => matmul::matmul::<f32, T, T>(
            wa,
            sa,
            view(env.bytes(b)),
            sb,
            tx,
            ty,
            view_mut(out),
            scratch,
        ),
        (None, Some(wb)) => matmul::matmul::<T, f32, T>(
            view(env.bytes(a)),
            sa,
            wb,
            sb,
            tx,
            ty,
            view_mut(out),
            scratch,
        ),
        (None, None) => matmul::matmul::<T, T, T>(
            view(env.bytes(a)),
            sa,
            view(env.bytes(b)),
            sb,
            tx,
            ty,
            view_mut(out),
            scratch,
        ),
    };
    result.map_err(|e| e.to_string())
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
    apply_mask: bool,
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
    attention::scaled_dot_product_attention::<T>(
        view(env.bytes(q)),
        &env.ty(q).shape,
        view(env.bytes(k)),
        &env.ty(k).shape,
        view(env.bytes(v)),
        &env.ty(v).shape,
        mask,
        apply_mask,
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
        other => return Err(unsupported("cast", other)),
    };
    r.map_err(|e| e.to_string())
}
