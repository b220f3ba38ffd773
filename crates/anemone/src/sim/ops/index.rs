//! The simulator's side of gather, gather_along_axis, stack, tile, pad, band_part and
//! upsample_nearest_neighbor (expand_dims and squeeze alias their input in the plan, like
//! reshape): parameters resolved by the op registry at compile time, and the run over typed
//! slices.
//!
//! None of these ops computes: each moves elements bit for bit, so it runs on words of the
//! element's width (1, 2, 4 or 8 bytes) whatever the element type, fp32 tensors keep their
//! fp32 values (they are not narrowed to fp16 as arithmetic is), and an index out of range
//! fails the evaluate with the op, the index and the axis size.

use anemone_mil::ops::{self, OpContext, OpError, OpKind, PadMode};
use anemone_mil::{DType, bf16, f16};

use super::{In, Out, RunResult};
use crate::sim::kernels;
use crate::sim::kernels::Scratch;
use crate::sim::kernels::index::{self as kernel, GatherAxes, NegativeIndices, PadFill};

/// A planned op of this family with its parameters resolved.
#[derive(Clone, Debug)]
pub enum IndexKernel {
    /// `gather`: inputs x, indices; slices of x along one axis picked by the indices.
    Gather(GatherAxes),
    /// `gather_along_axis`: inputs x, indices; indices of the same rank as x pick one element
    /// each along `axis`.
    GatherAlongAxis {
        /// The axis of x the indices address.
        axis: usize,
        /// Whether a negative index counts from the end or is out of range.
        negative: NegativeIndices,
    },
    /// `stack`: the `values` tuple, all of one type, joined along a new axis.
    Stack {
        /// Where the new axis is inserted in the output (0..=rank).
        axis: usize,
    },
    /// `tile`: x repeated along each axis.
    Tile {
        /// Repetitions per axis, one per dimension of x.
        reps: Vec<usize>,
    },
    /// `pad`: x with elements added before and after each axis.
    Pad {
        /// Elements added before each axis, one per dimension of x.
        before: Vec<usize>,
        /// Elements added after each axis, one per dimension of x.
        after: Vec<usize>,
        /// A constant fill holds the fill value's bits in x's element type (low bytes).
        fill: PadFill<u64>,
    },
    /// `band_part`: the last two axes kept inside a diagonal band, zero outside.
    BandPart {
        /// Sub-diagonals kept (`i - j <= lower`); `None` keeps all of them.
        lower: Option<usize>,
        /// Super-diagonals kept (`j - i <= upper`); `None` keeps all of them.
        upper: Option<usize>,
    },
    /// The height and width scales and the output height and width.
    UpsampleNearest {
        /// Height and width scale factors (output over input).
        scales: [f64; 2],
        /// Output height and width.
        output: [usize; 2],
    },
}

/// The inputs of `kind` that carry tensor data, in the order [`run`] receives them (the
/// others are parameters resolved at compile time).
pub fn data_inputs(kind: OpKind) -> &'static [&'static str] {
    match kind {
        OpKind::Gather | OpKind::GatherAlongAxis => &["x", "indices"],
        OpKind::Stack => &["values"],
        _ => &["x"],
    }
}

/// Whether the op computes (its fp32 operands then run in fp16, as on the ANE) rather than
/// only moving or comparing elements: none of this family does.
pub fn is_arithmetic(kernel: &IndexKernel) -> bool {
    match kernel {
        IndexKernel::Gather(_)
        | IndexKernel::GatherAlongAxis { .. }
        | IndexKernel::Stack { .. }
        | IndexKernel::Tile { .. }
        | IndexKernel::Pad { .. }
        | IndexKernel::BandPart { .. }
        | IndexKernel::UpsampleNearest { .. } => false,
    }
}

/// Rejects element types that are not whole bytes (int4, uint1..uint6, strings): they cannot
/// be moved element by element.
fn check_width(ctx: &OpContext, dtype: DType, input: &str) -> Result<(), OpError> {
    if matches!(dtype.bits(), 8 | 16 | 32 | 64) {
        return Ok(());
    }
    Err(ctx
        .error(format_args!(
            "the simulator moves elements of 1, 2, 4 or 8 bytes, and {dtype} is not one"
        ))
        .with_subject(input))
}

/// The bits of `value` as an element of `dtype`, in the low bytes; the registry has checked
/// that the value is one of the type.
fn fill_bits(ctx: &OpContext, dtype: DType, value: f64) -> Result<u64, OpError> {
    Ok(match dtype {
        DType::Fp16 => u64::from(f16::from_f64(value).to_bits()),
        DType::Bf16 => u64::from(bf16::from_f64(value).to_bits()),
        DType::Fp32 => u64::from((value as f32).to_bits()),
        DType::Fp64 => value.to_bits(),
        DType::Bool => u64::from(value != 0.0),
        // Two's complement; the width's low bytes are the element.
        d if d.is_signed_int() => value as i64 as u64,
        d if d.is_unsigned_int() => value as u64,
        other => {
            return Err(ctx
                .error(format_args!("cannot pad {other} tensors with a constant"))
                .with_subject("constant_val"));
        }
    })
}

/// Resolves one op of this family for the simulator.
pub fn plan(ctx: &OpContext) -> Result<IndexKernel, OpError> {
    if ctx.kind == OpKind::Stack {
        let p = ops::StackParams::resolve(ctx)?;
        check_width(ctx, p.dtype, "values")?;
        return Ok(IndexKernel::Stack { axis: p.axis });
    }
    let x = ctx.tensor("x")?;
    check_width(ctx, x.dtype, "x")?;
    let negative = |from_end: bool| {
        if from_end { NegativeIndices::FromEnd } else { NegativeIndices::OutOfRange }
    };
    Ok(match ctx.kind {
        OpKind::Gather => {
            let p = ops::GatherParams::resolve(ctx)?;
            IndexKernel::Gather(GatherAxes {
                axis: p.axis,
                batch_dims: p.batch_dims,
                negative: negative(p.negative_from_end),
            })
        }
        OpKind::GatherAlongAxis => {
            let p = ops::GatherAlongAxisParams::resolve(ctx)?;
            IndexKernel::GatherAlongAxis { axis: p.axis, negative: negative(p.negative_from_end) }
        }
        OpKind::Tile => IndexKernel::Tile { reps: ops::TileParams::resolve(ctx)?.reps },
        OpKind::Pad => {
            let p = ops::PadParams::resolve(ctx)?;
            let fill = match p.mode {
                PadMode::Constant => PadFill::Constant(fill_bits(ctx, x.dtype, p.constant)?),
                PadMode::Reflect => PadFill::Reflect,
                PadMode::Replicate => PadFill::Replicate,
            };
            IndexKernel::Pad { before: p.before, after: p.after, fill }
        }
        OpKind::BandPart => {
            let p = ops::BandPartParams::resolve(ctx)?;
            IndexKernel::BandPart { lower: p.lower, upper: p.upper }
        }
        OpKind::UpsampleNearestNeighbor => {
            let p = ops::UpsampleParams::resolve(ctx)?;
            IndexKernel::UpsampleNearest {
                scales: [p.scale_height, p.scale_width],
                output: [p.output_height, p.output_width],
            }
        }
        other => return Err(ctx.error(format_args!("{other} is not an indexing op"))),
    })
}

/// An element of some width, moved as raw bits.
trait Word: bytemuck::Pod + Default {
    /// The low bytes of `bits`.
    fn from_low_bits(bits: u64) -> Self;
}

macro_rules! word {
    ($($t:ty),*) => {$(
        impl Word for $t {
            fn from_low_bits(bits: u64) -> Self {
                bits as $t
            }
        }
    )*};
}
word!(u8, u16, u32, u64);

fn view<'a, T: bytemuck::Pod>(bytes: &'a [u8], what: &str) -> Result<&'a [T], String> {
    bytemuck::try_cast_slice(bytes)
        .map_err(|e| format!("{what} cannot be read as its elements: {e}"))
}

fn view_mut<'a, T: bytemuck::Pod>(bytes: &'a mut [u8], what: &str) -> Result<&'a mut [T], String> {
    bytemuck::try_cast_slice_mut(bytes)
        .map_err(|e| format!("{what} cannot be written as its elements: {e}"))
}

/// Runs a planned op.
pub fn run(
    kernel: &IndexKernel,
    inputs: &[In],
    outputs: &mut [Out],
    _scratch: &mut Scratch,
) -> RunResult {
    let (Some(first), Some(out)) = (inputs.first(), outputs.first_mut()) else {
        return Err("an indexing op needs an input and an output".to_string());
    };
    match first.ty.dtype.bits() {
        8 => run_words::<u8>(kernel, inputs, out),
        16 => run_words::<u16>(kernel, inputs, out),
        32 => run_words::<u32>(kernel, inputs, out),
        64 => run_words::<u64>(kernel, inputs, out),
        _ => Err(format!(
            "{} elements are not whole bytes and cannot be moved one by one",
            first.ty.dtype
        )),
    }
}

/// The op on elements of `T`'s width.
fn run_words<T: Word>(kernel: &IndexKernel, inputs: &[In], out: &mut Out) -> RunResult {
    let x = &inputs[0];
    let xs = view::<T>(x.bytes, "x")?;
    let shape = x.ty.shape.as_slice();
    let o = view_mut::<T>(out.bytes, "the output")?;
    let r = match kernel {
        IndexKernel::Gather(axes) => {
            let ind = inputs.get(1).ok_or("gather needs indices")?;
            IndexedBy::Gather(*axes).run(xs, shape, index_slice(ind)?, &ind.ty.shape, o)
        }
        IndexKernel::GatherAlongAxis { axis, negative } => {
            let ind = inputs.get(1).ok_or("gather_along_axis needs indices")?;
            let by = IndexedBy::AlongAxis { axis: *axis, negative: *negative };
            by.run(xs, shape, index_slice(ind)?, &ind.ty.shape, o)
        }
        IndexKernel::Stack { axis } => {
            let parts = inputs
                .iter()
                .map(|v| {
                    if v.ty.shape != x.ty.shape || v.ty.dtype != x.ty.dtype {
                        return Err(format!(
                            "stacked values are {} and {}; they must be alike",
                            x.ty, v.ty
                        ));
                    }
                    view::<T>(v.bytes, "values")
                })
                .collect::<Result<Vec<&[T]>, String>>()?;
            kernel::stack(&parts, shape, *axis, o)
        }
        IndexKernel::Tile { reps } => kernel::tile(xs, shape, reps, o),
        IndexKernel::Pad { before, after, fill } => {
            let fill = match *fill {
                PadFill::Constant(bits) => PadFill::Constant(T::from_low_bits(bits)),
                PadFill::Reflect => PadFill::Reflect,
                PadFill::Replicate => PadFill::Replicate,
            };
            kernel::pad(xs, shape, before, after, fill, o)
        }
        IndexKernel::BandPart { lower, upper } => kernel::band_part(xs, shape, *lower, *upper, o),
        IndexKernel::UpsampleNearest { scales, output } => {
            kernel::upsample_nearest(xs, shape, *scales, *output, o)
        }
    };
    // The step's error already names the op.
    r.map_err(|e| e.message)
}

/// Indices in their own integer type.
enum IndexSlice<'a> {
    I8(&'a [i8]),
    U8(&'a [u8]),
    I16(&'a [i16]),
    U16(&'a [u16]),
    I32(&'a [i32]),
    U32(&'a [u32]),
    I64(&'a [i64]),
    U64(&'a [u64]),
}

fn index_slice<'a>(indices: &In<'a>) -> Result<IndexSlice<'a>, String> {
    let b = indices.bytes;
    Ok(match indices.ty.dtype {
        DType::Int8 => IndexSlice::I8(view(b, "indices")?),
        DType::UInt8 => IndexSlice::U8(b),
        DType::Int16 => IndexSlice::I16(view(b, "indices")?),
        DType::UInt16 => IndexSlice::U16(view(b, "indices")?),
        DType::Int32 => IndexSlice::I32(view(b, "indices")?),
        DType::UInt32 => IndexSlice::U32(view(b, "indices")?),
        DType::Int64 => IndexSlice::I64(view(b, "indices")?),
        DType::UInt64 => IndexSlice::U64(view(b, "indices")?),
        other => return Err(format!("indices of {other} are not integers")),
    })
}

/// The two gathers, dispatched over the indices' type.
#[derive(Clone, Copy)]
enum IndexedBy {
    Gather(GatherAxes),
    AlongAxis { axis: usize, negative: NegativeIndices },
}

impl IndexedBy {
    fn run<T: Copy>(
        self,
        x: &[T],
        shape: &[usize],
        indices: IndexSlice,
        indices_shape: &[usize],
        out: &mut [T],
    ) -> kernels::Result<()> {
        match indices {
            IndexSlice::I8(i) => self.with(x, shape, i, indices_shape, out),
            IndexSlice::U8(i) => self.with(x, shape, i, indices_shape, out),
            IndexSlice::I16(i) => self.with(x, shape, i, indices_shape, out),
            IndexSlice::U16(i) => self.with(x, shape, i, indices_shape, out),
            IndexSlice::I32(i) => self.with(x, shape, i, indices_shape, out),
            IndexSlice::U32(i) => self.with(x, shape, i, indices_shape, out),
            IndexSlice::I64(i) => self.with(x, shape, i, indices_shape, out),
            IndexSlice::U64(i) => self.with(x, shape, i, indices_shape, out),
        }
    }

    fn with<T: Copy, I: kernel::IndexInt>(
        self,
        x: &[T],
        shape: &[usize],
        indices: &[I],
        indices_shape: &[usize],
        out: &mut [T],
    ) -> kernels::Result<()> {
        match self {
            IndexedBy::Gather(axes) => kernel::gather(x, shape, indices, indices_shape, axes, out),
            IndexedBy::AlongAxis { axis, negative } => {
                kernel::gather_along_axis(x, shape, indices, indices_shape, axis, negative, out)
            }
        }
    }
}
