//! Pieces every op family uses: numpy broadcasting, axis normalization, reading
//! compile-time constant inputs, and building result types.

use crate::ir::{BlobRef, DType, Literal, LiteralData, TensorData, TensorType, Type};

use super::{InputArg, OpContext, OpError};

/// The numpy broadcast of two shapes: aligned at the right, each pair of dims equal or one
/// of them 1 (coremltools ops/defs/_utils.py `broadcast_shapes`). None when they clash.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad { 1 } else { s[i - pad] }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// An axis in `[-rank, rank)` as an index in `[0, rank)`; None when out of range.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The result type for a dtype and shape: a scalar for the empty shape.
pub(super) fn result(dtype: DType, shape: Vec<usize>) -> Type {
    Type::from(TensorType::new(dtype, shape))
}

/// The product of `dims`; an error about input `what` when it overflows.
pub(super) fn product(ctx: &OpContext, dims: &[usize], what: &str) -> Result<usize, OpError> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
        ctx.error(format_args!("{what} {dims:?} has more elements than fit in memory"))
            .with_subject(what)
    })
}

/// The values of a constant parameter: inline, or in a weight blob that only the runtime
/// can read (per-channel quantization scales may be stored as BLOBFILEs).
#[derive(Clone, Debug, PartialEq)]
pub enum ConstValues<T> {
    /// The values, written in the program.
    Inline(Vec<T>),
    /// Values stored in a weight file, to be read by whoever holds the weights.
    Blob {
        /// The BLOBFILE reference (path and record offset).
        blob: BlobRef,
        /// The element type the literal declares.
        dtype: DType,
        /// Number of elements the literal declares.
        len: usize,
    },
}

impl<T: Copy> ConstValues<T> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            ConstValues::Inline(v) => v.len(),
            ConstValues::Blob { len, .. } => *len,
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inline values, if they are inline.
    pub fn inline(&self) -> Option<&[T]> {
        match self {
            ConstValues::Inline(v) => Some(v),
            ConstValues::Blob { .. } => None,
        }
    }
}

impl ConstValues<f32> {
    /// The values of a numeric literal as f32 (exact for fp16, bf16, fp32 and 8/16-bit
    /// integers), or a reference to its blob.
    pub(super) fn from_literal(lit: &Literal) -> Option<ConstValues<f32>> {
        let len = lit.ty.element_count()?;
        match &lit.data {
            LiteralData::Tensor(t) => {
                let v = t.to_f64_vec()?;
                Some(ConstValues::Inline(v.into_iter().map(|x| x as f32).collect()))
            }
            LiteralData::Blob(b) => {
                Some(ConstValues::Blob { blob: b.clone(), dtype: lit.ty.dtype()?, len })
            }
            LiteralData::Dict(_) => None,
        }
    }
}

/// Readers of compile-time constant inputs. Each returns `Ok(None)` when the input is
/// absent, and an error naming the input when it is present but not a constant of the
/// right kind.
impl<'a> OpContext<'a> {
    /// The literal behind constant input `name`.
    pub fn const_literal(&self, name: &str) -> Result<Option<&'a Literal>, OpError> {
        let Some(v) = self.value(name) else {
            if let Some(InputArg::Tuple(..)) = self.arg(name) {
                return Err(self
                    .error(format_args!("{name} takes one value, not a tuple"))
                    .with_subject(name));
            }
            return Ok(None);
        };
        match v.constant {
            Some(lit) => Ok(Some(lit)),
            None => Err(self
                .error(format_args!("{name} must be a compile-time constant"))
                .with_subject(name)
                .with_help("give it as a const op or an inline literal")),
        }
    }

    /// The inline elements of constant input `name`.
    fn const_data(&self, name: &str) -> Result<Option<&'a TensorData>, OpError> {
        let Some(lit) = self.const_literal(name)? else { return Ok(None) };
        match lit.tensor_data() {
            Some(data) => Ok(Some(data)),
            None => Err(self
                .error(format_args!("{name} must be written inline, not read from a weight file"))
                .with_subject(name)),
        }
    }

    /// A constant integer list (shapes, axes, perms, begins).
    pub fn const_i64s(&self, name: &str) -> Result<Option<Vec<i64>>, OpError> {
        let Some(data) = self.const_data(name)? else { return Ok(None) };
        match data.to_i64_vec() {
            Some(v) if !matches!(data, TensorData::Bool(_)) => Ok(Some(v)),
            _ => Err(self.error(format_args!("{name} must hold integers")).with_subject(name)),
        }
    }

    /// A constant integer scalar (axis, groups).
    pub fn const_i64(&self, name: &str) -> Result<Option<i64>, OpError> {
        let Some(v) = self.const_i64s(name)? else { return Ok(None) };
        match v.as_slice() {
            [x] => Ok(Some(*x)),
            _ => Err(self
                .error(format_args!("{name} must be one integer, not {} values", v.len()))
                .with_subject(name)),
        }
    }

    /// A constant boolean list (slice masks).
    pub fn const_bools(&self, name: &str) -> Result<Option<Vec<bool>>, OpError> {
        let Some(data) = self.const_data(name)? else { return Ok(None) };
        match data {
            TensorData::Bool(v) => Ok(Some(v.clone())),
            _ => Err(self.error(format_args!("{name} must hold booleans")).with_subject(name)),
        }
    }

    /// A constant boolean scalar (transpose_x, keep_dims, interleave).
    pub fn const_bool(&self, name: &str) -> Result<Option<bool>, OpError> {
        let Some(v) = self.const_bools(name)? else { return Ok(None) };
        match v.as_slice() {
            [b] => Ok(Some(*b)),
            _ => Err(self
                .error(format_args!("{name} must be one boolean, not {} values", v.len()))
                .with_subject(name)),
        }
    }

    /// A constant string scalar (pad_type, dtype, mode).
    pub fn const_str(&self, name: &str) -> Result<Option<&'a str>, OpError> {
        let Some(lit) = self.const_literal(name)? else { return Ok(None) };
        match lit.as_str() {
            Some(s) => Ok(Some(s)),
            None => Err(self.error(format_args!("{name} must be one string")).with_subject(name)),
        }
    }

    /// A constant numeric list.
    pub fn const_f64s(&self, name: &str) -> Result<Option<Vec<f64>>, OpError> {
        let Some(data) = self.const_data(name)? else { return Ok(None) };
        match data.to_f64_vec() {
            Some(v) => Ok(Some(v)),
            None => Err(self.error(format_args!("{name} must hold numbers")).with_subject(name)),
        }
    }

    /// A constant numeric scalar (epsilon).
    pub fn const_f64(&self, name: &str) -> Result<Option<f64>, OpError> {
        let Some(v) = self.const_f64s(name)? else { return Ok(None) };
        match v.as_slice() {
            [x] => Ok(Some(*x)),
            _ => Err(self
                .error(format_args!("{name} must be one number, not {} values", v.len()))
                .with_subject(name)),
        }
    }

    /// Constant axis input `name` normalized against `rank`.
    pub(super) fn const_axis(
        &self,
        name: &str,
        rank: usize,
        default: Option<i64>,
    ) -> Result<usize, OpError> {
        let axis = match (self.const_i64(name)?, default) {
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                return Err(self.missing(name));
            }
        };
        normalize_axis(axis, rank).ok_or_else(|| {
            self.error(format_args!("{name} {axis} is out of range for rank {rank}"))
                .with_subject(name)
                .with_help(format!("an axis lies in [-{rank}, {rank})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(
            broadcast_shapes(&[1, 768, 1, 256], &[1, 1, 1, 256]),
            Some(vec![1, 768, 1, 256])
        );
        assert_eq!(broadcast_shapes(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[3], &[2, 1]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[5, 1, 4], &[3, 1]), Some(vec![5, 3, 4]));
        assert_eq!(broadcast_shapes(&[2, 3], &[4, 3]), None);
        assert_eq!(broadcast_shapes(&[0], &[1]), Some(vec![0]));
        assert_eq!(broadcast_shapes(&[], &[]), Some(vec![]));
    }

    #[test]
    fn axes_normalize_in_range_only() {
        assert_eq!(normalize_axis(-1, 4), Some(3));
        assert_eq!(normalize_axis(-4, 4), Some(0));
        assert_eq!(normalize_axis(3, 4), Some(3));
        assert_eq!(normalize_axis(4, 4), None);
        assert_eq!(normalize_axis(-5, 4), None);
        assert_eq!(normalize_axis(0, 0), None);
        assert_eq!(normalize_axis(i64::MIN, 4), None);
    }
}
