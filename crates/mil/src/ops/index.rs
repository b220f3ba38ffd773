//! Indexing and shape-building ops: gather, gather_along_axis, expand_dims, squeeze, stack,
//! tile, pad, band_part, upsample_nearest_neighbor. All of them move elements without computing
//! with them; all but upsample_nearest_neighbor (fp16 and fp32 only, as coremltools defines
//! it) take any element type.
//!
//! Sources (coremltools 9.0, `coremltools/converters/mil/mil/ops/defs`):
//! - gather, gather_along_axis: iOS15/scatter_gather.py, iOS16/scatter_gather.py (`batch_dims`,
//!   int16/uint16 indices), iOS17/scatter_gather.py (`validate_indices`, int8/uint8 indices).
//! - expand_dims, squeeze: iOS15/tensor_transformation.py, iOS17/tensor_transformation.py
//!   (more element types).
//! - stack, tile, pad, band_part: iOS15/tensor_operation.py.
//! - upsample_nearest_neighbor: iOS15/image_resizing.py (unchanged since; its scales are
//!   shared with upsample_bilinear, whose registry entry is in the norm family).

use half::{bf16, f16};

use crate::ir::{DType, Type};

use super::helpers::{normalize_axis, product, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError, OpKind};

/// Element types of the data these ops move: any; the simulator moves every whole-byte type
/// bit for bit.
const DATA: DTypes = DTypes::Any;

/// Index types of gather and gather_along_axis: the union of iOS16's (int32, int16, uint16)
/// and iOS17's (adds int8, uint8).
const INDEX: DTypes =
    DTypes::OneOf(&[DType::Int32, DType::Int16, DType::UInt16, DType::Int8, DType::UInt8]);

static GATHER: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        InputSpec::required("indices", INDEX),
        InputSpec::optional("axis", DTypes::Int).constant().ranks(Ranks::SCALAR).default("0"),
        InputSpec::optional("batch_dims", DTypes::Int).constant().ranks(Ranks::SCALAR).default("0"),
        InputSpec::optional("validate_indices", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
    ],
    attributes: NAME_ONLY,
};

static GATHER_ALONG_AXIS: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        InputSpec::required("indices", INDEX).ranks(Ranks::at_least(1)),
        InputSpec::optional("axis", DTypes::Int).constant().ranks(Ranks::SCALAR).default("0"),
        InputSpec::optional("validate_indices", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
    ],
    attributes: NAME_ONLY,
};

static EXPAND_DIMS: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA),
        InputSpec::required("axes", DTypes::Int).constant().ranks(Ranks::VECTOR),
    ],
    attributes: NAME_ONLY,
};

static SQUEEZE: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        InputSpec::optional("axes", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("every axis of size 1"),
    ],
    attributes: NAME_ONLY,
};

static STACK: Signature = Signature {
    inputs: &[
        InputSpec::required("values", DATA).tuple(),
        InputSpec::required("axis", DTypes::Int).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

static TILE: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        InputSpec::required("reps", DTypes::Int).constant().ranks(Ranks::VECTOR),
    ],
    attributes: NAME_ONLY,
};

static PAD: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        // coremltools lets `pad` be computed at run time; shapes here are static, so it is a
        // compile-time constant.
        InputSpec::required("pad", DTypes::Int).constant().ranks(Ranks::VECTOR),
        InputSpec::optional("mode", DTypes::String)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("\"constant\""),
        InputSpec::optional("constant_val", DATA).constant().ranks(Ranks::SCALAR).default("0"),
    ],
    attributes: NAME_ONLY,
};

static BAND_PART: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(2)),
        InputSpec::optional("lower", DTypes::Int)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("-1 (keep every sub-diagonal)"),
        InputSpec::optional("upper", DTypes::Int)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("-1 (keep every super-diagonal)"),
    ],
    attributes: NAME_ONLY,
};

/// The types of upsample scale factors (image_resizing.py type domain U: fp32, int32).
pub(super) const SCALE_FACTOR: DTypes = DTypes::OneOf(&[DType::Fp32, DType::Int32]);

static UPSAMPLE_NEAREST_NEIGHBOR: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DTypes::Float).ranks(Ranks::at_least(3)),
        InputSpec::optional("scale_factor_height", SCALE_FACTOR)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("1"),
        InputSpec::optional("scale_factor_width", SCALE_FACTOR)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("1"),
    ],
    attributes: NAME_ONLY,
};

/// The signature of each op of this family.
pub(super) fn signature(kind: OpKind) -> &'static Signature {
    match kind {
        OpKind::Gather => &GATHER,
        OpKind::GatherAlongAxis => &GATHER_ALONG_AXIS,
        OpKind::ExpandDims => &EXPAND_DIMS,
        OpKind::Squeeze => &SQUEEZE,
        OpKind::Stack => &STACK,
        OpKind::Tile => &TILE,
        OpKind::Pad => &PAD,
        OpKind::UpsampleNearestNeighbor => &UPSAMPLE_NEAREST_NEIGHBOR,
        // Called for this family's kinds only: the one left is band_part.
        _ => &BAND_PART,
    }
}

/// Checks one op of this family and infers its result types.
pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let (dtype, shape) = match ctx.kind {
        OpKind::Gather => (ctx.tensor("x")?.dtype, GatherParams::resolve(ctx)?.output_shape),
        OpKind::GatherAlongAxis => {
            GatherAlongAxisParams::resolve(ctx)?;
            (ctx.tensor("x")?.dtype, ctx.tensor("indices")?.shape)
        }
        OpKind::ExpandDims => {
            (ctx.tensor("x")?.dtype, ExpandDimsParams::resolve(ctx)?.output_shape)
        }
        OpKind::Squeeze => (ctx.tensor("x")?.dtype, SqueezeParams::resolve(ctx)?.output_shape),
        OpKind::Stack => {
            let p = StackParams::resolve(ctx)?;
            (p.dtype, p.output_shape)
        }
        OpKind::Tile => (ctx.tensor("x")?.dtype, TileParams::resolve(ctx)?.output_shape),
        OpKind::Pad => (ctx.tensor("x")?.dtype, PadParams::resolve(ctx)?.output_shape),
        OpKind::BandPart => {
            BandPartParams::resolve(ctx)?;
            let x = ctx.tensor("x")?;
            (x.dtype, x.shape)
        }
        OpKind::UpsampleNearestNeighbor => {
            (ctx.tensor("x")?.dtype, UpsampleParams::resolve(ctx)?.output_shape)
        }
        other => return Err(ctx.error(format_args!("{other} is not an indexing op"))),
    };
    Ok(vec![result(dtype, shape)])
}

fn to_i64(d: usize) -> i64 {
    i64::try_from(d).unwrap_or(i64::MAX)
}

/// The position of flat index `i` in a tensor of `shape`, for messages: `[1, 3]`.
fn position(mut i: usize, shape: &[usize]) -> String {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
    }
    format!("{idx:?}")
}

/// `validate_indices` (iOS17), default false.
fn validate_indices(ctx: &OpContext) -> Result<bool, OpError> {
    Ok(ctx.const_bool("validate_indices")?.unwrap_or(false))
}

/// When the indices are an inline constant, checks each against the axis size at compile time
/// (iOS17 scatter_gather.py does so under `validate_indices`; an index out of range fails at
/// run time anyway, so it fails here as early as it can).
fn check_constant_indices(
    ctx: &OpContext,
    dim: usize,
    axis: usize,
    negative_from_end: bool,
) -> Result<(), OpError> {
    let Some(lit) = ctx.value("indices").and_then(|v| v.constant) else { return Ok(()) };
    let Some(values) = lit.tensor_data().and_then(|d| d.to_i64_vec()) else { return Ok(()) };
    let shape = lit.ty.as_tensor().map(|t| t.shape).unwrap_or_default();
    let low = if negative_from_end { -to_i64(dim) } else { 0 };
    if let Some((i, &v)) = values.iter().enumerate().find(|(_, v)| !(low..to_i64(dim)).contains(*v))
    {
        let why = if v < 0 && !negative_from_end {
            " (with validate_indices, negative indices are out of range)"
        } else {
            ""
        };
        return Err(ctx
            .error(format_args!(
                "index {v} at indices{} is out of range for axis {axis} of size {dim}{why}",
                position(i, &shape)
            ))
            .with_subject("indices"));
    }
    Ok(())
}

/// gather resolved: `out[b.., p.., i.., q..] = x[b.., p.., indices[b.., i..], q..]`, where
/// `b` runs over the first `batch_dims` dims (shared by x and indices), `p` over the other
/// dims of x before `axis`, `i` over the rest of the indices' dims and `q` over the dims of x
/// after `axis`. The output shape is `x[:axis] + indices[batch_dims:] + x[axis + 1:]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatherParams {
    /// The gathered axis of x, normalized to `[0, rank)` (default 0).
    pub axis: usize,
    /// Number of leading dims x and indices share (iOS16; default 0, at most `axis`).
    pub batch_dims: usize,
    /// Whether an index in `[-size, 0)` counts from the end of the axis. True unless
    /// `validate_indices` is set: iOS15/iOS16 allow negative indices, and iOS17 makes them out
    /// of range, an error only under `validate_indices` (undefined otherwise, so counting from
    /// the end is as good a meaning as any).
    pub negative_from_end: bool,
    /// `x[:axis] + indices[batch_dims:] + x[axis + 1:]`.
    pub output_shape: Vec<usize>,
}

impl GatherParams {
    /// Checks a `gather` op (axis and batch_dims in range, matching batch dims, constant indices
    /// in range) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<GatherParams, OpError> {
        let x = ctx.tensor("x")?;
        let indices = ctx.tensor("indices")?;
        let axis = ctx.const_axis("axis", x.rank(), Some(0))?;
        let batch_dims = match ctx.const_i64("batch_dims")?.unwrap_or(0) {
            b if b < 0 => {
                return Err(ctx
                    .error(format_args!("batch_dims is {b}; it counts dims, so it is 0 or more"))
                    .with_subject("batch_dims"));
            }
            b => usize::try_from(b).unwrap_or(usize::MAX),
        };
        if batch_dims > axis {
            return Err(ctx
                .error(format_args!(
                    "batch_dims {batch_dims} exceeds axis {axis}: the batch dims come before the gathered axis"
                ))
                .with_subject("batch_dims"));
        }
        if batch_dims > indices.rank() {
            return Err(ctx
                .error(format_args!(
                    "batch_dims {batch_dims} exceeds the rank {} of indices",
                    indices.rank()
                ))
                .with_subject("batch_dims"));
        }
        if x.shape[..batch_dims] != indices.shape[..batch_dims] {
            return Err(ctx
                .error(format_args!(
                    "the {batch_dims} batch dims differ: x has shape {:?}, indices {:?}",
                    x.shape, indices.shape
                ))
                .with_subject("indices"));
        }
        let negative_from_end = !validate_indices(ctx)?;
        check_constant_indices(ctx, x.shape[axis], axis, negative_from_end)?;
        let mut output_shape = x.shape[..axis].to_vec();
        output_shape.extend_from_slice(&indices.shape[batch_dims..]);
        output_shape.extend_from_slice(&x.shape[axis + 1..]);
        product(ctx, &output_shape, "indices")?;
        Ok(GatherParams { axis, batch_dims, negative_from_end, output_shape })
    }
}

/// gather_along_axis resolved: `out[p, i, q] = x[p, indices[p, i, q], q]` along `axis`;
/// indices has the rank of x and its dims except along `axis`, and the output its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatherAlongAxisParams {
    /// The gathered axis of x, normalized to `[0, rank)` (default 0).
    pub axis: usize,
    /// As [`GatherParams::negative_from_end`].
    pub negative_from_end: bool,
}

impl GatherAlongAxisParams {
    /// Checks a `gather_along_axis` op (indices of x's rank and x's dims except along `axis`,
    /// constant indices in range) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<GatherAlongAxisParams, OpError> {
        let x = ctx.tensor("x")?;
        let indices = ctx.tensor("indices")?;
        if indices.rank() != x.rank() {
            return Err(ctx
                .error(format_args!(
                    "indices has rank {} but x has rank {}; they must be equal",
                    indices.rank(),
                    x.rank()
                ))
                .with_subject("indices"));
        }
        let axis = ctx.const_axis("axis", x.rank(), Some(0))?;
        if let Some(d) = (0..x.rank()).find(|&d| d != axis && x.shape[d] != indices.shape[d]) {
            return Err(ctx
                .error(format_args!(
                    "indices has shape {:?} and x {:?}: they differ at dim {d}, and may differ only along axis {axis}",
                    indices.shape, x.shape
                ))
                .with_subject("indices"));
        }
        let negative_from_end = !validate_indices(ctx)?;
        check_constant_indices(ctx, x.shape[axis], axis, negative_from_end)?;
        Ok(GatherAlongAxisParams { axis, negative_from_end })
    }
}

/// Rejects an axis list that names an axis twice.
fn distinct(ctx: &OpContext, given: &[i64], normalized: &[usize]) -> Result<(), OpError> {
    for (i, a) in normalized.iter().enumerate() {
        if normalized[..i].contains(a) {
            return Err(ctx
                .error(format_args!("axes {given:?} name axis {a} twice"))
                .with_subject("axes"));
        }
    }
    Ok(())
}

/// expand_dims resolved: a size-1 dim at each of `axes` of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpandDimsParams {
    /// The new dims' positions in the output, ascending.
    pub axes: Vec<usize>,
    /// x's shape with a 1 inserted at each of `axes`.
    pub output_shape: Vec<usize>,
}

impl ExpandDimsParams {
    /// Each axis lies in `[-out_rank, out_rank)` with `out_rank = rank(x) + len(axes)`;
    /// negative axes count from the end of the output.
    pub fn resolve(ctx: &OpContext) -> Result<ExpandDimsParams, OpError> {
        let x = ctx.tensor("x")?;
        let given = ctx.const_i64s("axes")?.ok_or_else(|| ctx.missing("axes"))?;
        let out_rank = x.rank() + given.len();
        let mut axes = given
            .iter()
            .map(|&a| {
                normalize_axis(a, out_rank).ok_or_else(|| {
                    ctx.error(format_args!(
                        "axis {a} is out of range for the rank-{out_rank} result"
                    ))
                    .with_subject("axes")
                    .with_help(format!("an axis lies in [-{out_rank}, {out_rank})"))
                })
            })
            .collect::<Result<Vec<usize>, OpError>>()?;
        distinct(ctx, &given, &axes)?;
        axes.sort_unstable();
        let mut output_shape = x.shape.clone();
        for &a in &axes {
            output_shape.insert(a, 1);
        }
        Ok(ExpandDimsParams { axes, output_shape })
    }
}

/// squeeze resolved: the size-1 dims removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqueezeParams {
    /// The dims of x removed, ascending.
    pub axes: Vec<usize>,
    /// x's shape without the dims in `axes`.
    pub output_shape: Vec<usize>,
}

impl SqueezeParams {
    /// Without `axes`, every size-1 dim goes; with `axes`, those of them with size 1 go and
    /// the others stay (PyTorch's rule, as iOS15 tensor_transformation.py squeeze documents).
    pub fn resolve(ctx: &OpContext) -> Result<SqueezeParams, OpError> {
        let x = ctx.tensor("x")?;
        let rank = x.rank();
        let mut axes = match ctx.const_i64s("axes")? {
            None => (0..rank).filter(|&d| x.shape[d] == 1).collect(),
            Some(given) => {
                let named = given
                    .iter()
                    .map(|&a| {
                        normalize_axis(a, rank).ok_or_else(|| {
                            ctx.error(format_args!("axis {a} is out of range for rank {rank}"))
                                .with_subject("axes")
                                .with_help(format!("an axis lies in [-{rank}, {rank})"))
                        })
                    })
                    .collect::<Result<Vec<usize>, OpError>>()?;
                distinct(ctx, &given, &named)?;
                named.into_iter().filter(|&d| x.shape[d] == 1).collect::<Vec<usize>>()
            }
        };
        axes.sort_unstable();
        let output_shape =
            (0..rank).filter(|d| !axes.contains(d)).map(|d| x.shape[d]).collect::<Vec<usize>>();
        Ok(SqueezeParams { axes, output_shape })
    }
}

/// stack resolved: `values` (equal shapes and types) joined along a new dim at `axis`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackParams {
    /// The new dim's position in the output, in `[0, rank]`.
    pub axis: usize,
    /// Number of values stacked (the new dim's size).
    pub count: usize,
    /// The common element type of the values, and of the result.
    pub dtype: DType,
    /// The values' common shape with `count` inserted at `axis`.
    pub output_shape: Vec<usize>,
}

impl StackParams {
    /// `axis` lies in `[-(rank + 1), rank]`, negative counting from the end of the output
    /// (iOS15 tensor_operation.py stack).
    pub fn resolve(ctx: &OpContext) -> Result<StackParams, OpError> {
        let types = ctx.tuple_tensors("values")?;
        let first = &types[0];
        for (i, t) in types.iter().enumerate().skip(1) {
            if t.dtype != first.dtype {
                return Err(ctx
                    .error(format_args!(
                        "values[{i}] is {} but values[0] is {}",
                        t.dtype, first.dtype
                    ))
                    .with_subject("values"));
            }
            if t.shape != first.shape {
                return Err(ctx
                    .error(format_args!(
                        "values[{i}] has shape {:?} but values[0] has {:?}; stacked values have equal shapes",
                        t.shape, first.shape
                    ))
                    .with_subject("values"));
            }
        }
        let out_rank = first.rank() + 1;
        let axis = ctx.const_axis("axis", out_rank, None)?;
        let mut output_shape = first.shape.clone();
        output_shape.insert(axis, types.len());
        product(ctx, &output_shape, "values")?;
        Ok(StackParams { axis, count: types.len(), dtype: first.dtype, output_shape })
    }
}

/// tile resolved: dim `i` of x repeated `reps[i]` times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileParams {
    /// How many times each dim of x is repeated, each at least 1.
    pub reps: Vec<usize>,
    /// `x.shape[i] * reps[i]` for each dim.
    pub output_shape: Vec<usize>,
}

impl TileParams {
    /// `reps` has one positive entry per dim of x (iOS15 tensor_operation.py tile).
    pub fn resolve(ctx: &OpContext) -> Result<TileParams, OpError> {
        let x = ctx.tensor("x")?;
        let given = ctx.const_i64s("reps")?.ok_or_else(|| ctx.missing("reps"))?;
        if given.len() != x.rank() {
            return Err(ctx
                .error(format_args!(
                    "reps {given:?} has {} entries but x has rank {}",
                    given.len(),
                    x.rank()
                ))
                .with_subject("reps"));
        }
        let reps = given
            .iter()
            .map(|&r| usize::try_from(r).ok().filter(|&r| r > 0))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                ctx.error(format_args!("reps {given:?} must all be positive")).with_subject("reps")
            })?;
        let output_shape = x
            .shape
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| d.checked_mul(r))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                ctx.error(format_args!("tiling {:?} by {given:?} overflows", x.shape))
                    .with_subject("reps")
            })?;
        product(ctx, &output_shape, "reps")?;
        Ok(TileParams { reps, output_shape })
    }
}

/// How pad fills the new elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// With `constant_val`.
    Constant,
    /// Mirrored about the edge element, which is not repeated: `[a b c]` padded by 2 before
    /// is `[c b a b c]`.
    Reflect,
    /// With copies of the edge element.
    Replicate,
}

impl PadMode {
    /// The mode spelled `name` in MIL (`"constant"`, `"reflect"`, `"replicate"`); `None` otherwise.
    pub fn from_name(name: &str) -> Option<PadMode> {
        match name {
            "constant" => Some(PadMode::Constant),
            "reflect" => Some(PadMode::Reflect),
            "replicate" => Some(PadMode::Replicate),
            _ => None,
        }
    }

    /// The mode's spelling in MIL.
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Replicate => "replicate",
        }
    }
}

/// pad resolved per dim of x (dims that `pad` does not name get 0 and 0).
#[derive(Clone, Debug, PartialEq)]
pub struct PadParams {
    /// Elements added before each dim of x.
    pub before: Vec<usize>,
    /// Elements added after each dim of x.
    pub after: Vec<usize>,
    /// How the new elements are filled (default `constant`).
    pub mode: PadMode,
    /// The fill of [`PadMode::Constant`], exactly representable in x's type (default 0).
    pub constant: f64,
    /// x's shape with `before[d] + after[d]` added to each dim `d`.
    pub output_shape: Vec<usize>,
}

impl PadParams {
    /// `pad` holds `[before, after]` for each of the last `len(pad) / 2` dims; reflect pads
    /// at most `dim - 1` and replicate at most `dim` on each side (iOS15 tensor_operation.py
    /// pad).
    pub fn resolve(ctx: &OpContext) -> Result<PadParams, OpError> {
        let x = ctx.tensor("x")?;
        let rank = x.rank();
        let given = ctx.const_i64s("pad")?.ok_or_else(|| ctx.missing("pad"))?;
        if given.len() % 2 != 0 {
            return Err(ctx
                .error(format_args!(
                    "pad {given:?} has {} entries; it holds a before and an after per dim",
                    given.len()
                ))
                .with_subject("pad"));
        }
        let padded = given.len() / 2;
        if padded > rank {
            return Err(ctx
                .error(format_args!("pad {given:?} pads {padded} dims but x has rank {rank}"))
                .with_subject("pad"));
        }
        let amounts = given
            .iter()
            .map(|&p| usize::try_from(p).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                ctx.error(format_args!("pad {given:?} must not be negative")).with_subject("pad")
            })?;
        let mode = match ctx.const_str("mode")? {
            None => PadMode::Constant,
            Some(name) => PadMode::from_name(name).ok_or_else(|| {
                ctx.error(format_args!("unknown mode \"{name}\""))
                    .with_subject("mode")
                    .with_help("mode is constant, reflect or replicate")
            })?,
        };
        let mut before = vec![0; rank];
        let mut after = vec![0; rank];
        for k in 0..padded {
            let d = rank - padded + k;
            before[d] = amounts[2 * k];
            after[d] = amounts[2 * k + 1];
            let dim = x.shape[d];
            let limit = match mode {
                PadMode::Constant => usize::MAX,
                PadMode::Reflect => dim.saturating_sub(1),
                PadMode::Replicate => dim,
            };
            let widest = before[d].max(after[d]);
            if widest > limit {
                return Err(ctx
                    .error(format_args!(
                        "{} pads dim {d} of size {dim} by {widest}; it pads at most {limit} there",
                        mode.name()
                    ))
                    .with_subject("pad"));
            }
        }
        let constant = match ctx.const_f64("constant_val")? {
            None => 0.0,
            Some(v) if representable(x.dtype, v) => v,
            Some(v) => {
                return Err(ctx
                    .error(format_args!("constant_val {v} is not a value of {}", x.dtype))
                    .with_subject("constant_val"));
            }
        };
        let output_shape = (0..rank)
            .map(|d| x.shape[d].checked_add(before[d])?.checked_add(after[d]))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                ctx.error(format_args!("pad {given:?} overflows")).with_subject("pad")
            })?;
        product(ctx, &output_shape, "pad")?;
        Ok(PadParams { before, after, mode, constant, output_shape })
    }
}

/// Whether `v` is exactly a value of `dtype` (NaN and the infinities count for the float
/// types).
fn representable(dtype: DType, v: f64) -> bool {
    let int = |lo: f64, hi: f64| v.fract() == 0.0 && (lo..=hi).contains(&v);
    match dtype {
        DType::Fp64 => true,
        DType::Fp32 => v.is_nan() || f64::from(v as f32) == v,
        DType::Fp16 => v.is_nan() || f16::from_f64(v).to_f64() == v,
        DType::Bf16 => v.is_nan() || bf16::from_f64(v).to_f64() == v,
        DType::Bool => v == 0.0 || v == 1.0,
        DType::Int8 => int(-128.0, 127.0),
        DType::Int16 => int(-32768.0, 32767.0),
        DType::Int32 => int(-2_147_483_648.0, 2_147_483_647.0),
        DType::Int64 => int(-9.223_372_036_854_776e18, 9.223_372_036_854_775e18),
        DType::UInt8 => int(0.0, 255.0),
        DType::UInt16 => int(0.0, 65535.0),
        DType::UInt32 => int(0.0, 4_294_967_295.0),
        DType::UInt64 => int(0.0, 1.844_674_407_370_955e19),
        _ => false,
    }
}

/// band_part resolved: `x[.., i, j]` is kept where `(lower is None or i - j <= lower) and
/// (upper is None or j - i <= upper)`, else it is 0 (iOS15 tensor_operation.py band_part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BandPartParams {
    /// Sub-diagonals kept below the diagonal; None (a negative `lower`, the default -1)
    /// keeps them all.
    pub lower: Option<usize>,
    /// Super-diagonals kept above the diagonal; None keeps them all.
    pub upper: Option<usize>,
}

impl BandPartParams {
    /// Checks a `band_part` op and resolves `lower` and `upper`.
    pub fn resolve(ctx: &OpContext) -> Result<BandPartParams, OpError> {
        ctx.tensor("x")?;
        let band = |name: &str| -> Result<Option<usize>, OpError> {
            Ok(ctx.const_i64(name)?.and_then(|v| usize::try_from(v).ok()))
        };
        Ok(BandPartParams { lower: band("lower")?, upper: band("upper")? })
    }
}

/// The scales of upsample_nearest_neighbor and upsample_bilinear resolved: the last two dims
/// of x (height, width) grow by `scale_factor_height` and `scale_factor_width`, constant int32
/// or fp32 scalars, default 1, to `floor(size * scale)` (image_resizing.py type_inference,
/// where numpy multiplies a float32 scale by the size in float32; an int32 scale multiplies
/// exactly). Both scales must be positive and every output size at least 1.
#[derive(Clone, Debug, PartialEq)]
pub struct UpsampleParams {
    /// The scales as given (an fp32 scale exactly, widened).
    pub scale_height: f64,
    /// The width scale as given (an fp32 scale exactly, widened); default 1.
    pub scale_width: f64,
    /// x's second-to-last dim.
    pub input_height: usize,
    /// x's last dim.
    pub input_width: usize,
    /// The result's second-to-last dim, at least 1.
    pub output_height: usize,
    /// The result's last dim, at least 1.
    pub output_width: usize,
    /// x's shape with its last two dims replaced by `output_height` and `output_width`.
    pub output_shape: Vec<usize>,
}

impl UpsampleParams {
    /// Checks the scales of an `upsample_nearest_neighbor` or `upsample_bilinear` op (x of rank 3
    /// or more, positive scales, output dims at least 1) and resolves the sizes.
    pub fn resolve(ctx: &OpContext) -> Result<UpsampleParams, OpError> {
        let x = ctx.tensor("x")?;
        if x.rank() < 3 {
            return Err(ctx
                .error(format_args!("x has rank {} but must have rank 3 or more", x.rank()))
                .with_subject("x"));
        }
        let r = x.rank();
        let (input_height, input_width) = (x.shape[r - 2], x.shape[r - 1]);
        let (scale_height, output_height) = scaled(ctx, "scale_factor_height", input_height)?;
        let (scale_width, output_width) = scaled(ctx, "scale_factor_width", input_width)?;
        let mut output_shape = x.shape.clone();
        output_shape[r - 2] = output_height;
        output_shape[r - 1] = output_width;
        product(ctx, &output_shape, "x")?;
        Ok(UpsampleParams {
            scale_height,
            scale_width,
            input_height,
            input_width,
            output_height,
            output_width,
            output_shape,
        })
    }
}

/// Scale factor input `name` (default 1) and the size it makes of `size`.
fn scaled(ctx: &OpContext, name: &str, size: usize) -> Result<(f64, usize), OpError> {
    let Some(lit) = ctx.const_literal(name)? else { return Ok((1.0, size)) };
    let scale = ctx.const_f64(name)?.unwrap_or(1.0);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(ctx
            .error(format_args!("{name} is {scale}; a scale factor is positive"))
            .with_subject(name));
    }
    let out = if lit.ty.dtype() == Some(DType::Fp32) {
        f64::from((scale as f32 * size as f32).floor())
    } else {
        scale * size as f64
    };
    if out < 1.0 {
        return Err(ctx
            .error(format_args!("{name} {scale} makes a dim of {size} into {out}"))
            .with_subject(name)
            .with_help("every output dim needs at least one element"));
    }
    // Below 2^53 the float holds the integer exactly.
    if out >= 2f64.powi(53) {
        return Err(ctx
            .error(format_args!("{name} {scale} makes a dim of {size} too large"))
            .with_subject(name));
    }
    Ok((scale, out as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Literal, TensorData};
    use crate::ops::testing::{Arg, assert_error, f16, ints, op, t};

    fn idx(dtype: DType, shape: &[usize]) -> Type {
        t(dtype, shape)
    }

    fn index_const(dtype: DType, values: &[i64]) -> Literal {
        Literal::tensor(Type::tensor(dtype, [values.len()]), TensorData::Int(values.to_vec()))
    }

    #[test]
    fn gather_shapes_follow_coremltools() {
        // The converter's embedding model: fp16 table [100, 16], ids [2, 8] (int32 and int16).
        for dtype in [DType::Int32, DType::Int16, DType::UInt16, DType::Int8, DType::UInt8] {
            let g = op(OpKind::Gather)
                .var("x", f16(&[100, 16]))
                .var("indices", idx(dtype, &[2, 8]))
                .int("axis", 0)
                .int("batch_dims", 0)
                .bool("validate_indices", false);
            assert_eq!(g.infer_one(), f16(&[2, 8, 16]), "{dtype}");
        }
        // Axis in the middle; default axis 0; negative axis.
        let g = op(OpKind::Gather)
            .var("x", f16(&[2, 5, 3]))
            .var("indices", idx(DType::Int32, &[4]))
            .int("axis", -2);
        assert_eq!(g.infer_one(), f16(&[2, 4, 3]));
        let p = GatherParams::resolve(&g.ctx()).unwrap();
        assert_eq!((p.axis, p.batch_dims, p.negative_from_end), (1, 0, true));
        let g =
            op(OpKind::Gather).var("x", f16(&[5, 3])).var("indices", idx(DType::Int32, &[2, 2]));
        assert_eq!(g.infer_one(), f16(&[2, 2, 3]));
        // A scalar index drops the axis; a rank-1 x with a scalar index gives a scalar.
        let g = op(OpKind::Gather).var("x", f16(&[5, 3])).lit("indices", Literal::int32(4));
        assert_eq!(g.infer_one(), f16(&[3]));
        let g = op(OpKind::Gather)
            .var("x", t(DType::Int32, &[5]))
            .var("indices", Type::Scalar(DType::Int32));
        assert_eq!(g.infer_one(), Type::Scalar(DType::Int32));
        // batch_dims: K = D[:axis] + N[batch_dims:] + D[axis + 1:].
        let g = op(OpKind::Gather)
            .var("x", f16(&[2, 3, 7, 4]))
            .var("indices", idx(DType::Int32, &[2, 3, 5]))
            .int("axis", 2)
            .int("batch_dims", 2);
        assert_eq!(g.infer_one(), f16(&[2, 3, 5, 4]));
        let g = op(OpKind::Gather)
            .var("x", f16(&[2, 3, 7]))
            .var("indices", idx(DType::Int32, &[2, 5]))
            .int("axis", 2)
            .int("batch_dims", 1);
        assert_eq!(g.infer_one(), f16(&[2, 3, 5]));
        // Any element type moves.
        let g = op(OpKind::Gather)
            .var("x", t(DType::Bool, &[4, 2]))
            .var("indices", idx(DType::UInt8, &[3]));
        assert_eq!(g.infer_one(), t(DType::Bool, &[3, 2]));
    }

    #[test]
    fn gather_rejects_bad_parameters() {
        let base = || op(OpKind::Gather).var("x", f16(&[2, 3, 7]));
        let e = base().var("indices", idx(DType::Int32, &[2])).int("axis", 3).error();
        assert_error(&e, "axis", "gather: axis 3 is out of range for rank 3");
        let e = base().var("indices", idx(DType::Fp16, &[2])).error();
        assert_error(
            &e,
            "indices",
            "indices is fp16 but must be int32, int16, uint16, int8 or uint8",
        );
        let e = base().var("indices", idx(DType::Int64, &[2])).error();
        assert_error(&e, "indices", "indices is int64");
        let e = base()
            .var("indices", idx(DType::Int32, &[2, 5]))
            .int("axis", 1)
            .int("batch_dims", 2)
            .error();
        assert_error(&e, "batch_dims", "batch_dims 2 exceeds axis 1");
        let e = base()
            .var("indices", idx(DType::Int32, &[2]))
            .int("axis", 2)
            .int("batch_dims", 2)
            .error();
        assert_error(&e, "batch_dims", "batch_dims 2 exceeds the rank 1 of indices");
        let e = base()
            .var("indices", idx(DType::Int32, &[3, 5]))
            .int("axis", 2)
            .int("batch_dims", 1)
            .error();
        assert_error(
            &e,
            "indices",
            "the 1 batch dims differ: x has shape [2, 3, 7], indices [3, 5]",
        );
        let e = base().var("indices", idx(DType::Int32, &[2])).int("batch_dims", -1).error();
        assert_error(&e, "batch_dims", "batch_dims is -1");
        let e = op(OpKind::Gather)
            .var("x", Type::Scalar(DType::Fp16))
            .var("indices", idx(DType::Int32, &[2]))
            .error();
        assert_error(&e, "x", "x is a scalar (fp16) but must be a tensor of rank 1 or more");
        let e = base()
            .var("indices", idx(DType::Int32, &[2]))
            .var("axis", Type::Scalar(DType::Int32))
            .error();
        assert_error(&e, "axis", "axis must be a compile-time constant");
    }

    #[test]
    fn constant_indices_are_checked_at_compile_time() {
        let g = |values: &[i64], validate: bool| {
            op(OpKind::Gather)
                .var("x", f16(&[5, 3]))
                .lit("indices", index_const(DType::Int32, values))
                .bool("validate_indices", validate)
        };
        assert_eq!(g(&[0, 4, -5, -1], false).infer_one(), f16(&[4, 3]));
        let e = g(&[0, 5], false).error();
        assert_error(&e, "indices", "index 5 at indices[1] is out of range for axis 0 of size 5");
        let e = g(&[-6], false).error();
        assert_error(&e, "indices", "index -6 at indices[0] is out of range for axis 0 of size 5");
        // validate_indices (iOS17): negative indices are out of range.
        let e = g(&[2, -1], true).error();
        assert_error(&e, "indices", "index -1 at indices[1] is out of range");
        assert!(e.message.contains("negative indices are out of range"));
        let p = GatherParams::resolve(&g(&[2], true).ctx()).unwrap();
        assert!(!p.negative_from_end);
        // gather_along_axis too.
        let e = op(OpKind::GatherAlongAxis)
            .var("x", f16(&[3]))
            .lit("indices", index_const(DType::Int16, &[1, 3]))
            .error();
        assert_error(&e, "indices", "index 3 at indices[1] is out of range for axis 0 of size 3");
    }

    #[test]
    fn gather_along_axis_takes_the_shape_of_indices() {
        let g = op(OpKind::GatherAlongAxis)
            .var("x", f16(&[2, 5, 3]))
            .var("indices", idx(DType::Int16, &[2, 7, 3]))
            .int("axis", 1);
        assert_eq!(g.infer_one(), f16(&[2, 7, 3]));
        let p = GatherAlongAxisParams::resolve(&g.ctx()).unwrap();
        assert_eq!(p, GatherAlongAxisParams { axis: 1, negative_from_end: true });
        let g = op(OpKind::GatherAlongAxis)
            .var("x", t(DType::Int32, &[4, 2]))
            .var("indices", idx(DType::UInt8, &[1, 2]))
            .bool("validate_indices", true);
        assert_eq!(g.infer_one(), t(DType::Int32, &[1, 2]));
        let e = op(OpKind::GatherAlongAxis)
            .var("x", f16(&[2, 5, 3]))
            .var("indices", idx(DType::Int32, &[2, 7]))
            .int("axis", 1)
            .error();
        assert_error(&e, "indices", "indices has rank 2 but x has rank 3");
        let e = op(OpKind::GatherAlongAxis)
            .var("x", f16(&[2, 5, 3]))
            .var("indices", idx(DType::Int32, &[2, 7, 4]))
            .int("axis", 1)
            .error();
        assert_error(&e, "indices", "they differ at dim 2, and may differ only along axis 1");
    }

    #[test]
    fn expand_dims_inserts_unit_dims() {
        let ex =
            |x: &[usize], axes: &[i64]| op(OpKind::ExpandDims).var("x", f16(x)).ints("axes", axes);
        // split_concat dump: [2, 13, 8] with axes [1].
        assert_eq!(ex(&[2, 13, 8], &[1]).infer_one(), f16(&[2, 1, 13, 8]));
        assert_eq!(ex(&[2, 3], &[0, -1]).infer_one(), f16(&[1, 2, 3, 1]));
        assert_eq!(ex(&[2, 3], &[3, 0]).infer_one(), f16(&[1, 2, 3, 1]));
        assert_eq!(ex(&[2, 3], &[-3]).infer_one(), f16(&[1, 2, 3]));
        let e = ex(&[2, 3], &[-4]).error();
        assert_error(&e, "axes", "axis -4 is out of range for the rank-3 result");
        assert_eq!(ex(&[2, 3], &[-1]).infer_one(), f16(&[2, 3, 1]));
        let p = ExpandDimsParams::resolve(&ex(&[2, 3], &[-1, 1]).ctx()).unwrap();
        assert_eq!(p.axes, vec![1, 3]);
        assert_eq!(p.output_shape, vec![2, 1, 3, 1]);
        let scalar = op(OpKind::ExpandDims).var("x", Type::Scalar(DType::Bool)).ints("axes", &[0]);
        assert_eq!(scalar.infer_one(), t(DType::Bool, &[1]));
        let e = ex(&[2, 3], &[3]).error();
        assert_error(&e, "axes", "axis 3 is out of range for the rank-3 result");
        let e = ex(&[2, 3], &[-4, 0]).error();
        assert_error(&e, "axes", "axes [-4, 0] name axis 0 twice");
        let e = op(OpKind::ExpandDims).var("x", f16(&[2])).int("axes", 0).error();
        assert_error(&e, "axes", "axes is a scalar (int32) but must be a rank-1 tensor");
    }

    #[test]
    fn squeeze_removes_unit_dims_only() {
        let sq = |x: &[usize], axes: Option<&[i64]>| {
            let o = op(OpKind::Squeeze).var("x", f16(x));
            match axes {
                Some(a) => o.ints("axes", a),
                None => o,
            }
        };
        // split_concat dump: axes (2,) on [2, 4, 1, 8].
        assert_eq!(sq(&[2, 4, 1, 8], Some(&[2])).infer_one(), f16(&[2, 4, 8]));
        assert_eq!(sq(&[1, 4, 1, 1], None).infer_one(), f16(&[4]));
        assert_eq!(sq(&[1, 4, 1, 1], Some(&[-1, 0])).infer_one(), f16(&[4, 1]));
        // A named dim of size other than 1 stays (PyTorch's rule).
        assert_eq!(sq(&[2, 3, 4], Some(&[0, 1])).infer_one(), f16(&[2, 3, 4]));
        assert_eq!(sq(&[1, 1], None).infer_one(), Type::Scalar(DType::Fp16));
        let p = SqueezeParams::resolve(&sq(&[1, 4, 1, 1], Some(&[3, 0, 1])).ctx()).unwrap();
        assert_eq!(p.axes, vec![0, 3]);
        let e = sq(&[1, 4], Some(&[2])).error();
        assert_error(&e, "axes", "squeeze: axis 2 is out of range for rank 2");
        let e = sq(&[1, 4], Some(&[0, -2])).error();
        assert_error(&e, "axes", "name axis 0 twice");
        let e = op(OpKind::Squeeze).var("x", Type::Scalar(DType::Fp16)).error();
        assert_error(&e, "x", "x is a scalar");
    }

    #[test]
    fn stack_adds_a_dim() {
        let two = |a: Type, b: Type, axis: i32| {
            op(OpKind::Stack).tuple("values", vec![Arg::Var(a), Arg::Var(b)]).int("axis", axis)
        };
        // split_concat dump: two [2, 8] along axis 1.
        assert_eq!(two(f16(&[2, 8]), f16(&[2, 8]), 1).infer_one(), f16(&[2, 2, 8]));
        assert_eq!(two(f16(&[2, 8]), f16(&[2, 8]), -1).infer_one(), f16(&[2, 8, 2]));
        assert_eq!(two(f16(&[2, 8]), f16(&[2, 8]), -3).infer_one(), f16(&[2, 2, 8]));
        assert_eq!(two(f16(&[2, 8]), f16(&[2, 8]), 2).infer_one(), f16(&[2, 8, 2]));
        let scalars = two(Type::Scalar(DType::Int32), Type::Scalar(DType::Int32), 0);
        assert_eq!(scalars.infer_one(), t(DType::Int32, &[2]));
        let p = StackParams::resolve(&two(f16(&[2, 8]), f16(&[2, 8]), -1).ctx()).unwrap();
        assert_eq!((p.axis, p.count, p.dtype), (2, 2, DType::Fp16));
        let e = two(f16(&[2, 8]), f16(&[2, 8]), 3).error();
        assert_error(&e, "axis", "stack: axis 3 is out of range for rank 3");
        let e = two(f16(&[2, 8]), f16(&[8, 2]), 0).error();
        assert_error(&e, "values", "values[1] has shape [8, 2] but values[0] has [2, 8]");
        let e = two(f16(&[2]), t(DType::Fp32, &[2]), 0).error();
        assert_error(&e, "values", "values[1] is fp32 but values[0] is fp16");
        let e = op(OpKind::Stack).var("values", f16(&[2])).int("axis", 0).error();
        assert_error(&e, "values", "values takes a tuple of values");
    }

    #[test]
    fn tile_repeats_each_dim() {
        let tile = |x: &[usize], reps: &[i64]| op(OpKind::Tile).var("x", f16(x)).ints("reps", reps);
        assert_eq!(tile(&[2, 3], &[2, 1]).infer_one(), f16(&[4, 3]));
        assert_eq!(tile(&[2, 3, 1], &[1, 2, 5]).infer_one(), f16(&[2, 6, 5]));
        let e = tile(&[2, 3], &[2]).error();
        assert_error(&e, "reps", "reps [2] has 1 entries but x has rank 2");
        let e = tile(&[2, 3], &[2, 0]).error();
        assert_error(&e, "reps", "reps [2, 0] must all be positive");
        let e = tile(&[2, 3], &[i64::MAX, i64::MAX]).error();
        assert_error(&e, "reps", "overflows");
        let e = op(OpKind::Tile).var("x", f16(&[2])).var("reps", t(DType::Int32, &[1])).error();
        assert_error(&e, "reps", "reps must be a compile-time constant");
    }

    #[test]
    fn pad_resolves_the_last_dims() {
        let pad = |x: &[usize], p: &[i64]| op(OpKind::Pad).var("x", f16(x)).ints("pad", p);
        assert_eq!(pad(&[2, 3, 4], &[1, 2]).infer_one(), f16(&[2, 3, 7]));
        assert_eq!(pad(&[2, 3, 4], &[0, 1, 2, 3]).infer_one(), f16(&[2, 4, 9]));
        assert_eq!(pad(&[2, 3], &[1, 1, 0, 0]).infer_one(), f16(&[4, 3]));
        let p = PadParams::resolve(&pad(&[2, 3, 4], &[0, 1, 2, 3]).ctx()).unwrap();
        assert_eq!(p.before, vec![0, 0, 2]);
        assert_eq!(p.after, vec![0, 1, 3]);
        assert_eq!((p.mode, p.constant), (PadMode::Constant, 0.0));
        let reflect = pad(&[2, 3], &[2, 2]).string("mode", "reflect");
        assert_eq!(reflect.infer_one(), f16(&[2, 7]));
        let e = pad(&[2, 3], &[3, 0]).string("mode", "reflect").error();
        assert_error(&e, "pad", "reflect pads dim 1 of size 3 by 3; it pads at most 2 there");
        let replicate = pad(&[2, 3], &[3, 1]).string("mode", "replicate");
        assert_eq!(replicate.infer_one(), f16(&[2, 7]));
        let e = pad(&[2, 3], &[0, 4]).string("mode", "replicate").error();
        assert_error(&e, "pad", "replicate pads dim 1 of size 3 by 4; it pads at most 3 there");
        let e = pad(&[2, 3], &[0, 4]).string("mode", "edge").error();
        assert_error(&e, "mode", "unknown mode \"edge\"");
        let e = pad(&[2, 3], &[1, 1, 1]).error();
        assert_error(&e, "pad", "pad [1, 1, 1] has 3 entries");
        let e = pad(&[3], &[1, 1, 1, 1]).error();
        assert_error(&e, "pad", "pad [1, 1, 1, 1] pads 2 dims but x has rank 1");
        let e = pad(&[3], &[-1, 1]).error();
        assert_error(&e, "pad", "pad [-1, 1] must not be negative");
    }

    #[test]
    fn pad_constant_must_be_a_value_of_x() {
        let pad = |dtype: DType, c: Literal| {
            op(OpKind::Pad).var("x", t(dtype, &[3])).ints("pad", &[1, 1]).lit("constant_val", c)
        };
        let p = PadParams::resolve(&pad(DType::Fp16, Literal::fp16(-2.5)).ctx()).unwrap();
        assert_eq!(p.constant, -2.5);
        let p = PadParams::resolve(&pad(DType::Int32, Literal::int32(-7)).ctx()).unwrap();
        assert_eq!(p.constant, -7.0);
        let inf =
            Literal::tensor(Type::Scalar(DType::Fp32), TensorData::F32(vec![f32::NEG_INFINITY]));
        let p = PadParams::resolve(&pad(DType::Fp16, inf).ctx()).unwrap();
        assert_eq!(p.constant, f64::NEG_INFINITY);
        let e = pad(
            DType::Fp16,
            Literal::tensor(Type::Scalar(DType::Fp32), TensorData::F32(vec![0.1])),
        )
        .error();
        assert_error(&e, "constant_val", "constant_val 0.10000000149011612 is not a value of fp16");
        let e = pad(DType::Int8, Literal::int32(300)).error();
        assert_error(&e, "constant_val", "constant_val 300 is not a value of int8");
        let e = pad(DType::Bool, Literal::int32(2)).error();
        assert_error(&e, "constant_val", "is not a value of bool");
        assert!(pad(DType::Bool, Literal::bool(true)).infer().is_ok());
        let e = op(OpKind::Pad)
            .var("x", f16(&[3]))
            .ints("pad", &[1, 1])
            .lit("constant_val", ints(&[1]))
            .error();
        assert_error(&e, "constant_val", "must be a scalar");
    }

    #[test]
    fn band_part_keeps_the_shape_and_reads_negative_as_all() {
        let bp = |lower: Option<i32>, upper: Option<i32>| {
            let mut o = op(OpKind::BandPart).var("x", f16(&[1, 4, 16, 16]));
            if let Some(l) = lower {
                o = o.int("lower", l);
            }
            if let Some(u) = upper {
                o = o.int("upper", u);
            }
            o
        };
        assert_eq!(bp(Some(-1), Some(0)).infer_one(), f16(&[1, 4, 16, 16]));
        let p = |l, u| BandPartParams::resolve(&bp(l, u).ctx()).unwrap();
        assert_eq!(p(None, None), BandPartParams { lower: None, upper: None });
        assert_eq!(p(Some(-1), Some(0)), BandPartParams { lower: None, upper: Some(0) });
        assert_eq!(p(Some(2), Some(-7)), BandPartParams { lower: Some(2), upper: None });
        let e = op(OpKind::BandPart).var("x", f16(&[4])).error();
        assert_error(&e, "x", "must be a tensor of rank 2 or more");
        let e = op(OpKind::BandPart).var("x", f16(&[4, 4])).ints("lower", &[1]).error();
        assert_error(&e, "lower", "must be a scalar");
    }

    #[test]
    fn upsample_nearest_neighbor_scales_the_last_two_dims() {
        // The smoke test of coremltools: [1, 1, 1, 3] by (1, 2) is [1, 1, 1, 6].
        let u = op(OpKind::UpsampleNearestNeighbor)
            .var("x", f16(&[1, 1, 1, 3]))
            .int("scale_factor_height", 1)
            .int("scale_factor_width", 2);
        assert_eq!(u.infer_one(), f16(&[1, 1, 1, 6]));
        // Defaults 1; rank 3; fp32.
        let u = op(OpKind::UpsampleNearestNeighbor).var("x", t(DType::Fp32, &[2, 3, 4]));
        assert_eq!(u.infer_one(), t(DType::Fp32, &[2, 3, 4]));
        let p = UpsampleParams::resolve(&u.ctx()).unwrap();
        assert_eq!((p.scale_height, p.scale_width), (1.0, 1.0));
        // Fractional fp32 scales: floor(size * scale) in float32, where 10 * 0.7 is 7 (in
        // float64 the fp32 0.7 gives 6.99999988).
        let u = op(OpKind::UpsampleNearestNeighbor)
            .var("x", f16(&[1, 2, 10, 3]))
            .lit("scale_factor_height", Literal::fp32(0.7))
            .lit("scale_factor_width", Literal::fp32(2.5));
        assert_eq!(u.infer_one(), f16(&[1, 2, 7, 7]));
        let p = UpsampleParams::resolve(&u.ctx()).unwrap();
        assert_eq!((p.input_height, p.input_width), (10, 3));
        assert_eq!((p.output_height, p.output_width), (7, 7));
        assert_eq!(p.scale_height, 0.7f32 as f64);
    }

    #[test]
    fn upsample_nearest_neighbor_errors() {
        let up = |x: &[usize]| op(OpKind::UpsampleNearestNeighbor).var("x", f16(x));
        let e = up(&[3, 4]).error();
        assert_error(&e, "x", "must be a tensor of rank 3 or more");
        let e = op(OpKind::UpsampleNearestNeighbor).var("x", t(DType::Int32, &[1, 2, 3])).error();
        assert_error(&e, "x", "x is int32 but must be fp16 or fp32");
        let e = up(&[1, 2, 3]).lit("scale_factor_height", Literal::fp16(2.0)).error();
        assert_error(&e, "scale_factor_height", "is fp16 but must be fp32 or int32");
        let e = up(&[1, 2, 3]).int("scale_factor_width", 0).error();
        assert_error(
            &e,
            "scale_factor_width",
            "scale_factor_width is 0; a scale factor is positive",
        );
        let e = up(&[1, 2, 3]).lit("scale_factor_width", Literal::fp32(-2.0)).error();
        assert_error(&e, "scale_factor_width", "a scale factor is positive");
        let e = up(&[1, 2, 3]).lit("scale_factor_height", Literal::fp32(0.25)).error();
        assert_error(&e, "scale_factor_height", "scale_factor_height 0.25 makes a dim of 2 into 0");
        let e = up(&[1, 2, 3]).var("scale_factor_height", Type::Scalar(DType::Int32)).error();
        assert_error(&e, "scale_factor_height", "must be a compile-time constant");
        let e = up(&[1, 2, 3]).ints("scale_factor_height", &[2, 2]).error();
        assert_error(&e, "scale_factor_height", "must be a scalar");
        let e = up(&[1, 1 << 20, 1 << 20]).int("scale_factor_height", 1 << 30).error();
        assert_error(&e, "x", "has more elements than fit in memory");
    }
}
