//! Ops that move data without arithmetic: reshape, transpose, slice_by_size,
//! slice_by_index, concat, split (coremltools ops/defs/iOS15/tensor_transformation.py and
//! ops/defs/iOS15/tensor_operation.py).

use crate::ir::Type;

use super::helpers::{normalize_axis, product, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{InputArg, OpContext, OpError, OpKind};

/// Element types of the data-movement ops (T: fp16, fp32, int32, bool in coremltools; any
/// integer width is let through here).
const DATA: DTypes = DTypes::Any;

pub(super) static RESHAPE: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA),
        InputSpec::required("shape", DTypes::Int).constant().ranks(Ranks::VECTOR),
    ],
    attributes: NAME_ONLY,
};

pub(super) static TRANSPOSE: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA),
        InputSpec::required("perm", DTypes::Int).constant().ranks(Ranks::VECTOR),
    ],
    attributes: NAME_ONLY,
};

pub(super) static SLICE_BY_SIZE: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        InputSpec::required("begin", DTypes::Int).constant().ranks(Ranks::VECTOR),
        InputSpec::required("size", DTypes::Int).constant().ranks(Ranks::VECTOR),
    ],
    attributes: NAME_ONLY,
};

pub(super) static SLICE_BY_INDEX: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        InputSpec::required("begin", DTypes::Int).constant().ranks(Ranks::VECTOR),
        InputSpec::required("end", DTypes::Int).constant().ranks(Ranks::VECTOR),
        InputSpec::optional("stride", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("1 on every axis"),
        InputSpec::optional("begin_mask", DTypes::Bool)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("false on every axis"),
        InputSpec::optional("end_mask", DTypes::Bool)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("false on every axis"),
        InputSpec::optional("squeeze_mask", DTypes::Bool)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("false on every axis"),
    ],
    attributes: NAME_ONLY,
};

pub(super) static CONCAT: Signature = Signature {
    inputs: &[
        InputSpec::required("values", DATA).tuple().ranks(Ranks::at_least(1)),
        InputSpec::required("axis", DTypes::Int).constant().ranks(Ranks::SCALAR),
        InputSpec::optional("interleave", DTypes::Bool)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("false"),
    ],
    attributes: NAME_ONLY,
};

pub(super) static SPLIT: Signature = Signature {
    inputs: &[
        InputSpec::required("x", DATA).ranks(Ranks::at_least(1)),
        InputSpec::optional("num_splits", DTypes::Int)
            .constant()
            .ranks(Ranks::SCALAR)
            .default("the length of split_sizes"),
        InputSpec::optional("split_sizes", DTypes::Int)
            .constant()
            .ranks(Ranks::VECTOR)
            .default("num_splits equal parts"),
        InputSpec::required("axis", DTypes::Int).constant().ranks(Ranks::SCALAR),
    ],
    attributes: NAME_ONLY,
};

fn to_i64(d: usize) -> i64 {
    i64::try_from(d).unwrap_or(i64::MAX)
}

/// reshape's target shape, resolved: `-1` inferred, `0` copied from x.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReshapeParams {
    /// The result shape, every entry resolved; its element count equals x's.
    pub shape: Vec<usize>,
}

impl ReshapeParams {
    /// Checks a `reshape` op (constant `shape`, at most one -1, 0 only when `shape` has x's rank,
    /// element count preserved) and resolves the target shape.
    pub fn resolve(ctx: &OpContext) -> Result<ReshapeParams, OpError> {
        let x = ctx.tensor("x")?;
        let spec = ctx.const_i64s("shape")?.ok_or_else(|| ctx.missing("shape"))?;
        // 0 copies the dim of x at the same index, which needs len(shape) == rank(x)
        // (iOS15 tensor_transformation.py reshape).
        if spec.contains(&0) && spec.len() != x.rank() {
            return Err(ctx
                .error(format_args!(
                    "shape {spec:?} has a 0, which copies the dim of x at that index, but has {} entries and x has rank {}",
                    spec.len(),
                    x.rank()
                ))
                .with_subject("shape"));
        }
        let mut shape = Vec::with_capacity(spec.len());
        let mut infer_at = None;
        for (i, &d) in spec.iter().enumerate() {
            match d {
                -1 => {
                    if let Some(first) = infer_at {
                        return Err(ctx
                            .error(format_args!(
                                "shape {spec:?} has more than one -1 (at {first} and {i})"
                            ))
                            .with_subject("shape"));
                    }
                    infer_at = Some(i);
                    shape.push(1);
                }
                0 => shape.push(x.shape[i]),
                d => shape.push(usize::try_from(d).map_err(|_| {
                    ctx.error(format_args!(
                        "shape {spec:?} has {d}; dims are positive, -1 (inferred) or 0 (copied)"
                    ))
                    .with_subject("shape")
                })?),
            }
        }
        let total = product(ctx, &x.shape, "x")?;
        let known = product(ctx, &shape, "shape")?;
        match infer_at {
            Some(i) => {
                if known == 0 || total % known != 0 {
                    return Err(ctx
                        .error(format_args!(
                            "cannot infer the -1 in shape {spec:?}: x has {total} elements, not a multiple of {known}"
                        ))
                        .with_subject("shape"));
                }
                shape[i] = total / known;
            }
            None => {
                if known != total {
                    return Err(ctx
                        .error(format_args!(
                            "shape {shape:?} has {known} elements but x has {total}"
                        ))
                        .with_subject("shape"));
                }
            }
        }
        Ok(ReshapeParams { shape })
    }
}

pub(super) fn infer_reshape(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    Ok(vec![result(x.dtype, ReshapeParams::resolve(ctx)?.shape)])
}

/// transpose's permutation, normalized: output dim `i` is input dim `perm[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransposeParams {
    /// For each output dim, the input dim it takes, normalized to `[0, rank)`.
    pub perm: Vec<usize>,
}

impl TransposeParams {
    /// Checks a `transpose` op (`perm` a permutation of x's dims, negative entries counting from
    /// the end) and resolves it.
    pub fn resolve(ctx: &OpContext) -> Result<TransposeParams, OpError> {
        let x = ctx.tensor("x")?;
        let given = ctx.const_i64s("perm")?.ok_or_else(|| ctx.missing("perm"))?;
        let rank = x.rank();
        if given.len() != rank {
            return Err(ctx
                .error(format_args!(
                    "perm {given:?} has {} entries but x has rank {rank}",
                    given.len()
                ))
                .with_subject("perm"));
        }
        let mut perm = Vec::with_capacity(rank);
        let mut seen = vec![false; rank];
        for &p in &given {
            let a = normalize_axis(p, rank).ok_or_else(|| {
                ctx.error(format_args!("perm {given:?} has {p}, out of range for rank {rank}"))
                    .with_subject("perm")
            })?;
            if std::mem::replace(&mut seen[a], true) {
                return Err(ctx
                    .error(format_args!(
                        "perm {given:?} is not a permutation: axis {a} appears twice"
                    ))
                    .with_subject("perm"));
            }
            perm.push(a);
        }
        Ok(TransposeParams { perm })
    }
}

pub(super) fn infer_transpose(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    let p = TransposeParams::resolve(ctx)?;
    Ok(vec![result(x.dtype, p.perm.iter().map(|&a| x.shape[a]).collect())])
}

/// A slice resolved per axis of x, for slice_by_size and slice_by_index alike: along axis
/// `i` the elements taken are `begin[i] + j * stride[i]` for `j` in `0..size[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceParams {
    /// Index of the first element taken.
    pub begin: Vec<usize>,
    /// Exclusive end, `begin + size * stride` (negative when a reversed slice reaches 0).
    pub end: Vec<i64>,
    /// Step; negative steps walk backwards (slice_by_index only).
    pub stride: Vec<i64>,
    /// Number of elements taken (1 on squeezed axes).
    pub size: Vec<usize>,
    /// Axes removed from the result (slice_by_index `squeeze_mask`).
    pub squeeze: Vec<bool>,
}

impl SliceParams {
    /// The result shape: `size` without the squeezed axes.
    pub fn output_shape(&self) -> Vec<usize> {
        self.size.iter().zip(&self.squeeze).filter(|(_, s)| !**s).map(|(d, _)| *d).collect()
    }

    /// Checks a `slice_by_size` or `slice_by_index` op (one entry per axis, non-zero strides, at
    /// least one element taken per axis) and resolves the slice per axis, masks and clamping
    /// applied.
    pub fn resolve(ctx: &OpContext) -> Result<SliceParams, OpError> {
        match ctx.kind {
            OpKind::SliceBySize => by_size(ctx),
            OpKind::SliceByIndex => by_index(ctx),
            other => Err(ctx.error(format_args!("{other} is not a slice"))),
        }
    }
}

/// A per-axis integer list of exactly `rank` entries.
fn per_axis<T>(
    ctx: &OpContext,
    name: &str,
    values: Option<Vec<T>>,
    rank: usize,
    default: T,
) -> Result<Vec<T>, OpError>
where
    T: Clone,
{
    match values {
        None => Ok(vec![default; rank]),
        Some(v) if v.len() == rank => Ok(v),
        Some(v) => Err(ctx
            .error(format_args!("{name} has {} entries but x has rank {rank}", v.len()))
            .with_subject(name)),
    }
}

fn required_list(ctx: &OpContext, name: &str, rank: usize) -> Result<Vec<i64>, OpError> {
    let v = ctx.const_i64s(name)?.ok_or_else(|| ctx.missing(name))?;
    per_axis(ctx, name, Some(v), rank, 0)
}

/// slice_by_size: `size` -1 takes the rest of the dim; a negative begin counts from the
/// end (iOS15 tensor_transformation.py slice_by_size value_inference).
fn by_size(ctx: &OpContext) -> Result<SliceParams, OpError> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let begin = required_list(ctx, "begin", rank)?;
    let size = required_list(ctx, "size", rank)?;
    let mut p = SliceParams {
        begin: Vec::with_capacity(rank),
        end: Vec::with_capacity(rank),
        stride: vec![1; rank],
        size: Vec::with_capacity(rank),
        squeeze: vec![false; rank],
    };
    for i in 0..rank {
        let dim = x.shape[i];
        let b = if begin[i] < 0 { begin[i].saturating_add(to_i64(dim)) } else { begin[i] };
        let Ok(b) = usize::try_from(b) else {
            return Err(ctx
                .error(format_args!("begin {} is out of range for dim {i} of size {dim}", begin[i]))
                .with_subject("begin"));
        };
        let s = match size[i] {
            -1 => {
                if b >= dim {
                    return Err(ctx
                        .error(format_args!(
                            "begin {b} leaves nothing of dim {i} of size {dim} for size -1"
                        ))
                        .with_subject("begin"));
                }
                dim - b
            }
            s if s >= 1 => {
                let s = usize::try_from(s).unwrap_or(usize::MAX);
                if b.checked_add(s).is_none_or(|e| e > dim) {
                    return Err(ctx
                        .error(format_args!("begin {b} + size {s} exceeds dim {i} of size {dim}"))
                        .with_subject("size"));
                }
                s
            }
            s => {
                return Err(ctx
                    .error(format_args!(
                        "size[{i}] is {s}; sizes are positive, or -1 for the rest of the dim"
                    ))
                    .with_subject("size"));
            }
        };
        p.begin.push(b);
        p.end.push(to_i64(b + s));
        p.size.push(s);
    }
    Ok(p)
}

/// slice_by_index, numpy-like, with the clamping of coremltools ops/defs/_utils.py
/// `solve_slice_by_index_shape`: negative indices count from the end (clamped at 0), ends
/// clamp to the dim, masks replace begin/end by the dim's bounds, and a squeezed axis takes
/// the single element at `begin`.
fn by_index(ctx: &OpContext) -> Result<SliceParams, OpError> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let begin = required_list(ctx, "begin", rank)?;
    let end = required_list(ctx, "end", rank)?;
    let stride = per_axis(ctx, "stride", ctx.const_i64s("stride")?, rank, 1)?;
    let begin_mask = per_axis(ctx, "begin_mask", ctx.const_bools("begin_mask")?, rank, false)?;
    let end_mask = per_axis(ctx, "end_mask", ctx.const_bools("end_mask")?, rank, false)?;
    let squeeze = per_axis(ctx, "squeeze_mask", ctx.const_bools("squeeze_mask")?, rank, false)?;

    let mut p = SliceParams {
        begin: Vec::with_capacity(rank),
        end: Vec::with_capacity(rank),
        stride: Vec::with_capacity(rank),
        size: Vec::with_capacity(rank),
        squeeze: squeeze.clone(),
    };
    for i in 0..rank {
        let dim = to_i64(x.shape[i]);
        let s = stride[i];
        if s == 0 {
            return Err(ctx
                .error(format_args!("stride {stride:?} has 0 at dim {i}"))
                .with_subject("stride"));
        }
        if squeeze[i] {
            let b = if begin[i] < 0 { begin[i].saturating_add(dim) } else { begin[i] };
            if !(0..dim).contains(&b) {
                return Err(ctx
                    .error(format_args!(
                        "squeeze_mask takes index {} of dim {i}, which has size {dim}",
                        begin[i]
                    ))
                    .with_subject("begin"));
            }
            p.begin.push(b as usize);
            p.end.push(b + 1);
            p.stride.push(1);
            p.size.push(1);
            continue;
        }
        let from_end = |v: i64| if v < 0 { v.saturating_add(dim).max(0) } else { v };
        let (start, count) = if s > 0 {
            let start = if begin_mask[i] { 0 } else { from_end(begin[i]) };
            let stop = if end_mask[i] { dim } else { from_end(end[i]).min(dim) };
            (start, ceil_div(stop.saturating_sub(start), s))
        } else {
            let start = if begin_mask[i] { dim - 1 } else { from_end(begin[i]).min(dim - 1) };
            let stop = if end_mask[i] { -1 } else { from_end(end[i]) };
            (start, ceil_div(start.saturating_sub(stop), s.saturating_neg()))
        };
        if count <= 0 {
            return Err(ctx
                .error(format_args!(
                    "takes no elements of dim {i} (size {dim}): begin {}{}, end {}{}, stride {s}",
                    begin[i],
                    if begin_mask[i] { " (masked)" } else { "" },
                    end[i],
                    if end_mask[i] { " (masked)" } else { "" },
                ))
                .with_subject("end"));
        }
        p.begin.push(start as usize);
        p.end.push(start.saturating_add(count.saturating_mul(s)));
        p.stride.push(s);
        p.size.push(count as usize);
    }
    Ok(p)
}

/// ceil(a / b) for b > 0; 0 when a <= 0.
fn ceil_div(a: i64, b: i64) -> i64 {
    if a <= 0 { 0 } else { a / b + i64::from(a % b != 0) }
}

pub(super) fn infer_slice(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    Ok(vec![result(x.dtype, SliceParams::resolve(ctx)?.output_shape())])
}

/// concat resolved. With `interleave`, all inputs have the same shape and input `i`
/// fills `out[i::n]` along `axis`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcatParams {
    /// The concatenation axis, normalized to `[0, rank)`.
    pub axis: usize,
    /// Whether the inputs are interleaved instead of appended (default false).
    pub interleave: bool,
    /// Each input's size along `axis`.
    pub sizes: Vec<usize>,
    /// The inputs' common shape, with `sizes` summed along `axis`.
    pub output_shape: Vec<usize>,
}

impl ConcatParams {
    /// Checks a `concat` op (a non-empty tuple of one element type and rank, shapes agreeing
    /// except along `axis`, or everywhere with `interleave`) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<ConcatParams, OpError> {
        let shapes = ctx.tuple_tensors("values")?;
        let first = &shapes[0];
        let rank = first.rank();
        let axis = ctx.const_axis("axis", rank, None)?;
        let interleave = ctx.const_bool("interleave")?.unwrap_or(false);
        for (i, t) in shapes.iter().enumerate().skip(1) {
            if t.dtype != first.dtype {
                return Err(ctx
                    .error(format_args!(
                        "values[{i}] is {} but values[0] is {}",
                        t.dtype, first.dtype
                    ))
                    .with_subject("values"));
            }
            if t.rank() != rank {
                return Err(ctx
                    .error(format_args!(
                        "values[{i}] has rank {} but values[0] has rank {rank}",
                        t.rank()
                    ))
                    .with_subject("values"));
            }
            let clash =
                (0..rank).find(|&d| t.shape[d] != first.shape[d] && (interleave || d != axis));
            if let Some(d) = clash {
                let why = if interleave {
                    "interleave needs equal shapes".to_string()
                } else {
                    format!("they must agree except on axis {axis}")
                };
                return Err(ctx
                    .error(format_args!(
                        "values[{i}] has shape {:?} but values[0] has {:?} (dim {d} differs); {why}",
                        t.shape, first.shape
                    ))
                    .with_subject("values"));
            }
        }
        let sizes: Vec<usize> = shapes.iter().map(|t| t.shape[axis]).collect();
        let total = sizes
            .iter()
            .try_fold(0usize, |acc, &s| acc.checked_add(s))
            .ok_or_else(|| ctx.error("the concatenated dim overflows").with_subject("values"))?;
        let mut output_shape = first.shape.clone();
        output_shape[axis] = total;
        Ok(ConcatParams { axis, interleave, sizes, output_shape })
    }
}

pub(super) fn infer_concat(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let p = ConcatParams::resolve(ctx)?;
    let dtype = match ctx.arg("values") {
        Some(InputArg::Tuple(v, _)) => v[0].ty.dtype(),
        _ => None,
    };
    let dtype =
        dtype.ok_or_else(|| ctx.error("values has no element type").with_subject("values"))?;
    Ok(vec![result(dtype, p.output_shape)])
}

/// split resolved: output `i` takes `sizes[i]` elements along `axis`, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitParams {
    /// The split axis, normalized to `[0, rank)`.
    pub axis: usize,
    /// Each output's size along `axis`; they add up to x's dim.
    pub sizes: Vec<usize>,
}

impl SplitParams {
    /// Even splits need a dim that num_splits divides; split_sizes must sum to the dim
    /// (iOS15 tensor_operation.py split).
    pub fn resolve(ctx: &OpContext) -> Result<SplitParams, OpError> {
        let x = ctx.tensor("x")?;
        let axis = ctx.const_axis("axis", x.rank(), None)?;
        let dim = x.shape[axis];
        let num_splits = ctx.const_i64("num_splits")?;
        let split_sizes = ctx.const_i64s("split_sizes")?;
        let sizes = match (num_splits, split_sizes) {
            (None, None) => {
                return Err(ctx
                    .error("needs num_splits or split_sizes")
                    .with_subject("num_splits"));
            }
            (n, Some(given)) => {
                if let Some(n) = n
                    && usize::try_from(n).ok() != Some(given.len())
                {
                    return Err(ctx
                        .error(format_args!(
                            "num_splits is {n} but split_sizes {given:?} has {} entries",
                            given.len()
                        ))
                        .with_subject("num_splits"));
                }
                let sizes = given
                    .iter()
                    .map(|&s| usize::try_from(s).ok().filter(|&s| s > 0))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| {
                        ctx.error(format_args!("split_sizes {given:?} must all be positive"))
                            .with_subject("split_sizes")
                    })?;
                let sum = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
                if sum != Some(dim) {
                    return Err(ctx
                        .error(format_args!(
                            "split_sizes {given:?} sum to {} but dim {axis} has size {dim}",
                            given.iter().fold(0i64, |a, &s| a.saturating_add(s))
                        ))
                        .with_subject("split_sizes"));
                }
                sizes
            }
            (Some(n), None) => {
                let n = usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                    ctx.error(format_args!("num_splits must be positive, not {n}"))
                        .with_subject("num_splits")
                })?;
                if dim % n != 0 {
                    return Err(ctx
                        .error(format_args!(
                            "num_splits {n} does not divide dim {axis} of size {dim}"
                        ))
                        .with_subject("num_splits")
                        .with_help("give split_sizes for uneven splits"));
                }
                vec![dim / n; n]
            }
        };
        Ok(SplitParams { axis, sizes })
    }
}

pub(super) fn infer_split(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let x = ctx.tensor("x")?;
    let p = SplitParams::resolve(ctx)?;
    Ok(p.sizes
        .iter()
        .map(|&s| {
            let mut shape = x.shape.clone();
            shape[p.axis] = s;
            result(x.dtype, shape)
        })
        .collect())
}

#[cfg(test)]
mod tests;
