//! The simulator's side of comparisons, logical ops, select, clip, and of the integer (and
//! bool) arithmetic of the binary elementwise ops: parameters resolved by the op registry at
//! compile time, and the run over typed slices (kernels in `sim::kernels::logic`).
//!
//! Comparisons, logical ops and select only compare or move elements, so the plan keeps fp32
//! operands as they are (an fp32 comparison compares the fp32 values); on fp16 they see what
//! the ANE datapath reads, NaN as +inf (`sim::numerics`). clip computes, so an fp32 clip runs
//! in fp16 as the ANE runs it. Integer arithmetic is exact, wraps on overflow and never
//! touches the fp16 datapath.

use std::borrow::Cow;

use anemone_mil::DType;
use anemone_mil::ops::{LogicParams, LogicalOp, OpContext, OpError, OpKind};
use bytemuck::Pod;
use half::f16;

use super::{In, Out, RunResult};
use crate::sim::kernels::Scratch;
use crate::sim::kernels::elementwise::BinaryOp;
use crate::sim::kernels::logic::{self as kernel, Comparison};

/// A planned op of this family with its parameters resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum LogicKernel {
    /// `np.where(cond, a, b)`.
    Select,
    /// `equal`, `not_equal`, `less`, `less_equal`, `greater`, `greater_equal`: a bool tensor.
    Compare(Comparison),
    /// logical_and, logical_or, logical_xor; also add/maximum (or) and mul/minimum (and) on
    /// bool tensors.
    Logical(LogicalOp),
    /// logical_not.
    Not,
    /// `min(max(x, alpha), beta)`.
    Clip {
        /// Lower bound.
        alpha: f64,
        /// Upper bound.
        beta: f64,
    },
    /// add, sub, mul, real_div, pow, maximum or minimum on integer tensors.
    Integer(BinaryOp),
}

/// The inputs of `kind` that carry tensor data, in the order [`run`] receives them (the
/// others are parameters resolved at compile time).
pub fn data_inputs(kind: OpKind) -> &'static [&'static str] {
    match kind {
        OpKind::Select => &["cond", "a", "b"],
        OpKind::LogicalNot | OpKind::Clip => &["x"],
        _ => &["x", "y"],
    }
}

/// Whether the op computes (its fp32 operands then run in fp16, as on the ANE) rather than
/// only moving or comparing elements. Integer arithmetic is exact and has no fp32 operands.
pub fn is_arithmetic(kernel: &LogicKernel) -> bool {
    matches!(kernel, LogicKernel::Clip { .. })
}

/// Resolves one op of this family for the simulator.
pub fn plan(ctx: &OpContext) -> Result<LogicKernel, OpError> {
    if let Some(op) = binary_op(ctx.kind) {
        return plan_arithmetic(ctx, op);
    }
    let kernel = match LogicParams::resolve(ctx)? {
        LogicParams::Select => {
            check_width(ctx, "a")?;
            LogicKernel::Select
        }
        LogicParams::Compare(c) => {
            check_width(ctx, "x")?;
            LogicKernel::Compare(c)
        }
        LogicParams::Logical(op) => LogicKernel::Logical(op),
        LogicParams::Not => LogicKernel::Not,
        LogicParams::Clip(p) => LogicKernel::Clip { alpha: p.alpha, beta: p.beta },
    };
    Ok(kernel)
}

/// The arithmetic op of a binary elementwise kind.
fn binary_op(kind: OpKind) -> Option<BinaryOp> {
    Some(match kind {
        OpKind::Add => BinaryOp::Add,
        OpKind::Sub => BinaryOp::Sub,
        OpKind::Mul => BinaryOp::Mul,
        OpKind::RealDiv => BinaryOp::RealDiv,
        OpKind::Pow => BinaryOp::Pow,
        OpKind::Maximum => BinaryOp::Maximum,
        OpKind::Minimum => BinaryOp::Minimum,
        _ => return None,
    })
}

/// Integer arithmetic, and the bool ops that have a logical meaning (numpy's: `+` and
/// maximum are or, `*` and minimum are and).
fn plan_arithmetic(ctx: &OpContext, op: BinaryOp) -> Result<LogicKernel, OpError> {
    let x = ctx.tensor("x")?;
    let y = ctx.tensor("y")?;
    if x.dtype != y.dtype {
        return Err(ctx
            .error(format_args!("y is {} but x is {}", y.dtype, x.dtype))
            .with_subject("y"));
    }
    match x.dtype {
        DType::Bool => match op {
            BinaryOp::Add | BinaryOp::Maximum => Ok(LogicKernel::Logical(LogicalOp::Or)),
            BinaryOp::Mul | BinaryOp::Minimum => Ok(LogicKernel::Logical(LogicalOp::And)),
            _ => Err(ctx
                .error("has no meaning on bool tensors")
                .with_subject("x")
                .with_help("cast to an integer or float type first")),
        },
        d if d.is_int() => {
            check_width(ctx, "x")?;
            Ok(LogicKernel::Integer(op))
        }
        d => Err(ctx
            .error(format_args!("{d} arithmetic is not run by this family (integers only)"))
            .with_subject("x")),
    }
}

/// Sub-byte integers (int4, uint1..uint6) are packed weights, not elements the simulator
/// addresses one by one.
fn check_width(ctx: &OpContext, name: &str) -> Result<(), OpError> {
    let d = ctx.tensor(name)?.dtype;
    if d.bits() < 8 {
        return Err(ctx
            .error(format_args!("{d} tensors are not supported by the simulator (sub-byte type)"))
            .with_subject(name)
            .with_help("cast to int8 or uint8 first"));
    }
    Ok(())
}

/// An input's elements as `T`: the bytes themselves when aligned, else a copy.
fn elements<T: Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            bytes.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned).collect(),
        ),
    }
}

/// Runs `f` on the output's elements as `T`: in place when aligned, else through a copy.
fn with_output<T: Pod>(bytes: &mut [u8], f: impl FnOnce(&mut [T]) -> RunResult) -> RunResult {
    match bytemuck::try_cast_slice_mut(bytes) {
        Ok(s) => f(s),
        Err(_) => {
            let mut tmp = vec![T::zeroed(); bytes.len() / size_of::<T>()];
            f(&mut tmp)?;
            let src: &[u8] = bytemuck::cast_slice(&tmp);
            bytes
                .get_mut(..src.len())
                .ok_or("output buffer shorter than its elements")?
                .copy_from_slice(src);
            Ok(())
        }
    }
}

fn k(r: crate::sim::kernels::Result<()>) -> RunResult {
    r.map_err(|e| e.to_string())
}

/// Calls `$body` with `$t` bound to the element type of `$dtype`, for every type with one byte
/// or more per element that MIL computes with; a clear error for the others.
macro_rules! by_type {
    ($dtype:expr, $what:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::Fp16 => {
                type $t = f16;
                $body
            }
            DType::Fp32 => {
                type $t = f32;
                $body
            }
            DType::Int8 => {
                type $t = i8;
                $body
            }
            DType::Int16 => {
                type $t = i16;
                $body
            }
            DType::Int32 => {
                type $t = i32;
                $body
            }
            DType::Int64 => {
                type $t = i64;
                $body
            }
            DType::UInt8 => {
                type $t = u8;
                $body
            }
            DType::UInt16 => {
                type $t = u16;
                $body
            }
            DType::UInt32 => {
                type $t = u32;
                $body
            }
            DType::UInt64 => {
                type $t = u64;
                $body
            }
            other => Err(format!("{} on {other} tensors is not supported by the simulator", $what)),
        }
    };
}

/// Runs a planned op.
pub fn run(
    kernel: &LogicKernel,
    inputs: &[In],
    outputs: &mut [Out],
    _scratch: &mut Scratch,
) -> RunResult {
    let [out] = outputs else {
        return Err(format!("{kernel:?} writes one output, not {}", outputs.len()));
    };
    let out_ty = out.ty;
    let out = &mut *out.bytes;
    match (kernel, inputs) {
        (LogicKernel::Select, [c, a, b]) => {
            let cond = c.bytes;
            let (cs, as_, bs) = (&c.ty.shape, &a.ty.shape, &b.ty.shape);
            if a.ty.dtype != b.ty.dtype || out_ty.dtype != a.ty.dtype {
                return Err(format!(
                    "select: a is {}, b is {}, the result {}",
                    a.ty.dtype, b.ty.dtype, out_ty.dtype
                ));
            }
            if a.ty.dtype == DType::Bool {
                k(kernel::select::<u8>(cond, cs, a.bytes, as_, b.bytes, bs, out))?;
                // A bool is 0 or 1 whatever byte it was read from.
                out.iter_mut().for_each(|v| *v = u8::from(*v != 0));
                return Ok(());
            }
            by_type!(a.ty.dtype, "select", T => {
                let (a, b) = (elements::<T>(a.bytes), elements::<T>(b.bytes));
                with_output::<T>(out, |o| k(kernel::select(cond, cs, &a, as_, &b, bs, o)))
            })
        }
        (LogicKernel::Compare(op), [x, y]) => {
            if x.ty.dtype != y.ty.dtype {
                return Err(format!("compare: x is {} but y is {}", x.ty.dtype, y.ty.dtype));
            }
            by_type!(x.ty.dtype, "comparison", T => {
                let (xv, yv) = (elements::<T>(x.bytes), elements::<T>(y.bytes));
                k(kernel::compare(*op, &xv, &x.ty.shape, &yv, &y.ty.shape, out))
            })
        }
        (LogicKernel::Logical(op), [x, y]) => {
            k(kernel::logical(*op, x.bytes, &x.ty.shape, y.bytes, &y.ty.shape, out))
        }
        (LogicKernel::Not, [x]) => k(kernel::logical_not(x.bytes, out)),
        (LogicKernel::Clip { alpha, beta }, [x]) => match x.ty.dtype {
            DType::Fp16 => {
                let xv = elements::<f16>(x.bytes);
                with_output::<f16>(out, |o| k(kernel::clip(&xv, *alpha, *beta, o)))
            }
            DType::Fp32 => {
                let xv = elements::<f32>(x.bytes);
                with_output::<f32>(out, |o| k(kernel::clip(&xv, *alpha, *beta, o)))
            }
            other => Err(format!("clip on {other} tensors (fp16 and fp32 only)")),
        },
        (LogicKernel::Integer(op), [x, y]) => {
            if x.ty.dtype != y.ty.dtype {
                return Err(format!(
                    "integer arithmetic: x is {} but y is {}",
                    x.ty.dtype, y.ty.dtype
                ));
            }
            macro_rules! int {
                ($t:ty) => {{
                    let (xv, yv) = (elements::<$t>(x.bytes), elements::<$t>(y.bytes));
                    with_output::<$t>(out, |o| {
                        k(kernel::int_binary(*op, &xv, &x.ty.shape, &yv, &y.ty.shape, o))
                    })
                }};
            }
            match x.ty.dtype {
                DType::Int8 => int!(i8),
                DType::Int16 => int!(i16),
                DType::Int32 => int!(i32),
                DType::Int64 => int!(i64),
                DType::UInt8 => int!(u8),
                DType::UInt16 => int!(u16),
                DType::UInt32 => int!(u32),
                DType::UInt64 => int!(u64),
                other => Err(format!("integer arithmetic on {other} tensors")),
            }
        }
        (kernel, inputs) => Err(format!("{kernel:?} was handed {} inputs", inputs.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anemone_mil::ops::{InputArg, InputValue};
    use anemone_mil::{Span, TensorType, Type};

    /// A context for `kind` with variables of the given types.
    fn ctx<'a>(kind: OpKind, vars: &[(&'a str, Type)]) -> OpContext<'a> {
        let inputs = vars
            .iter()
            .map(|(n, ty)| {
                (*n, InputArg::One(InputValue { ty: ty.clone(), constant: None, span: Span::NONE }))
            })
            .collect();
        OpContext { kind, inputs, attributes: &[], span: Span::NONE }
    }

    fn t(dtype: DType, shape: &[usize]) -> Type {
        Type::tensor(dtype, shape)
    }

    #[test]
    fn arithmetic_plans_by_element_type() {
        let ints = [("x", t(DType::Int16, &[3])), ("y", t(DType::Int16, &[1]))];
        assert_eq!(plan(&ctx(OpKind::RealDiv, &ints)), Ok(LogicKernel::Integer(BinaryOp::RealDiv)));
        let bools = [("x", t(DType::Bool, &[3])), ("y", t(DType::Bool, &[3]))];
        assert_eq!(plan(&ctx(OpKind::Add, &bools)), Ok(LogicKernel::Logical(LogicalOp::Or)));
        assert_eq!(plan(&ctx(OpKind::Minimum, &bools)), Ok(LogicKernel::Logical(LogicalOp::And)));
        let e = plan(&ctx(OpKind::Sub, &bools)).unwrap_err();
        assert_eq!(e.message, "sub: has no meaning on bool tensors");
        let packed = [("x", t(DType::Int4, &[4])), ("y", t(DType::Int4, &[4]))];
        let e = plan(&ctx(OpKind::Add, &packed)).unwrap_err();
        assert!(e.message.contains("int4 tensors are not supported by the simulator"), "{e}");
        let floats = [("x", t(DType::Fp16, &[4])), ("y", t(DType::Fp16, &[4]))];
        assert!(plan(&ctx(OpKind::Add, &floats)).is_err());
    }

    #[test]
    fn only_clip_computes() {
        let kernels = [
            LogicKernel::Select,
            LogicKernel::Compare(Comparison::Less),
            LogicKernel::Logical(LogicalOp::Xor),
            LogicKernel::Not,
            LogicKernel::Integer(BinaryOp::Mul),
        ];
        assert!(kernels.iter().all(|k| !is_arithmetic(k)));
        assert!(is_arithmetic(&LogicKernel::Clip { alpha: 0.0, beta: 1.0 }));
        assert_eq!(data_inputs(OpKind::Select), ["cond", "a", "b"]);
        assert_eq!(data_inputs(OpKind::Clip), ["x"]);
        assert_eq!(data_inputs(OpKind::GreaterEqual), ["x", "y"]);
    }

    #[test]
    fn unaligned_bytes_and_wrong_inputs_are_handled() {
        // int32 elements one byte past a 4-aligned address are copied, not misread.
        let mut words = [0u32; 3];
        let storage: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        storage[1..5].copy_from_slice(&5i32.to_le_bytes());
        storage[5..9].copy_from_slice(&(-7i32).to_le_bytes());
        let ty = TensorType::new(DType::Int32, [2]);
        let one = TensorType::new(DType::Int32, [1]);
        let three = 3i32.to_le_bytes();
        let x = In { bytes: &storage[1..9], ty: &ty, widened: None, packed: None };
        let y = In { bytes: &three, ty: &one, widened: None, packed: None };
        let mut out_words = [0u32; 3];
        let out_storage: &mut [u8] = bytemuck::cast_slice_mut(&mut out_words);
        let mut outs = [Out { bytes: &mut out_storage[1..9], ty: &ty }];
        run(&LogicKernel::Integer(BinaryOp::Mul), &[x, y], &mut outs, &mut Scratch::new()).unwrap();
        let e = run(&LogicKernel::Not, &[x, y], &mut outs, &mut Scratch::new()).unwrap_err();
        assert_eq!(e, "Not was handed 2 inputs");
        let zero = 0i32.to_le_bytes();
        let z = In { bytes: &zero, ty: &one, widened: None, packed: None };
        let e =
            run(&LogicKernel::Integer(BinaryOp::RealDiv), &[x, z], &mut outs, &mut Scratch::new())
                .unwrap_err();
        assert!(e.contains("division by zero at output element [0]"), "{e}");
        let got: Vec<i32> = out_storage[1..9]
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [15, -21]);
    }
}
