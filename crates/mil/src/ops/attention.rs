//! scaled_dot_product_attention: `softmax(Q K^T / sqrt(E) + mask) V` (coremltools
//! ops/defs/iOS18/transformers.py; REFERENCE.md §6). The ANE is reported to ignore the
//! mask (REFERENCE.md §2); see [`super::compiler_note`].

use crate::ir::{DType, TensorType, Type};

use super::helpers::{broadcast_shapes, result};
use super::signature::{DTypes, InputSpec, NAME_ONLY, Ranks, Signature};
use super::{OpContext, OpError};

pub(super) static SDPA: Signature = Signature {
    inputs: &[
        InputSpec::required("query", DTypes::Float).ranks(Ranks::at_least(3)),
        InputSpec::required("key", DTypes::Float).ranks(Ranks::at_least(3)),
        InputSpec::required("value", DTypes::Float).ranks(Ranks::at_least(3)),
        InputSpec::optional("attn_mask", DTypes::OneOf(&[DType::Bool, DType::Fp16, DType::Fp32]))
            .ranks(Ranks::at_least(1)),
    ],
    attributes: NAME_ONLY,
};

/// Attention resolved: query `[*batch, target_len, embed]`, key
/// `[*batch, source_len, embed]`, value `[*batch, source_len, value_embed]`, result
/// `[*batch, target_len, value_embed]`. A bool mask keeps the scores where it is true; a
/// float mask is added to them.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionParams {
    /// The leading dims query, key and value share (at least one).
    pub batch: Vec<usize>,
    /// L: query positions (query's second-to-last dim).
    pub target_len: usize,
    /// S: key and value positions.
    pub source_len: usize,
    /// E: the query/key embedding size, which the scores are scaled by.
    pub embed: usize,
    /// EV: value's last dim, and the result's.
    pub value_embed: usize,
    /// The mask's type; it broadcasts to `[*batch, target_len, source_len]`.
    pub mask: Option<TensorType>,
    /// `1 / sqrt(embed)`.
    pub scale: f64,
}

impl AttentionParams {
    /// The result shape `[*batch, target_len, value_embed]`.
    pub fn output_shape(&self) -> Vec<usize> {
        let mut s = self.batch.clone();
        s.extend([self.target_len, self.value_embed]);
        s
    }

    /// Checks a `scaled_dot_product_attention` op (equal ranks of 3 or more, one type, equal
    /// batch dims, matching embedding and sequence dims, a mask that broadcasts to
    /// `[*batch, L, S]`) and resolves its parameters.
    pub fn resolve(ctx: &OpContext) -> Result<AttentionParams, OpError> {
        let q = ctx.tensor("query")?;
        let k = ctx.tensor("key")?;
        let v = ctx.tensor("value")?;
        let rank = q.rank();
        if rank < 3 {
            return Err(ctx
                .error(format_args!("query has rank {rank}; it must be [B, *, L, E]"))
                .with_subject("query"));
        }
        for (name, t) in [("key", &k), ("value", &v)] {
            if t.rank() != rank {
                return Err(ctx
                    .error(format_args!("{name} has rank {} but query has rank {rank}", t.rank()))
                    .with_subject(name));
            }
            if t.dtype != q.dtype {
                return Err(ctx
                    .error(format_args!("{name} is {} but query is {}", t.dtype, q.dtype))
                    .with_subject(name));
            }
            if t.shape[..rank - 2] != q.shape[..rank - 2] {
                return Err(ctx
                    .error(format_args!(
                        "{name} has batch dims {:?} but query has {:?}; they must be equal",
                        &t.shape[..rank - 2],
                        &q.shape[..rank - 2]
                    ))
                    .with_subject(name));
            }
        }
        let (target_len, embed) = (q.shape[rank - 2], q.shape[rank - 1]);
        let (source_len, key_embed) = (k.shape[rank - 2], k.shape[rank - 1]);
        let (value_len, value_embed) = (v.shape[rank - 2], v.shape[rank - 1]);
        if key_embed != embed {
            return Err(ctx
                .error(format_args!("key has embedding dim {key_embed} but query has {embed}"))
                .with_subject("key"));
        }
        if value_len != source_len {
            return Err(ctx
                .error(format_args!(
                    "value has sequence length {value_len} but key has {source_len}"
                ))
                .with_subject("value"));
        }
        let batch = q.shape[..rank - 2].to_vec();
        let mask = ctx.optional_tensor("attn_mask")?;
        if let Some(m) = &mask {
            let mut target = batch.clone();
            target.extend([target_len, source_len]);
            if m.rank() > target.len()
                || broadcast_shapes(&m.shape, &target).as_ref() != Some(&target)
            {
                return Err(ctx
                    .error(format_args!(
                        "attn_mask {:?} does not broadcast to {target:?} ([B, *, L, S])",
                        m.shape
                    ))
                    .with_subject("attn_mask"));
            }
        }
        Ok(AttentionParams {
            batch,
            target_len,
            source_len,
            embed,
            value_embed,
            mask,
            scale: 1.0 / (embed as f64).sqrt(),
        })
    }
}

pub(super) fn infer(ctx: &OpContext) -> Result<Vec<Type>, OpError> {
    let q = ctx.tensor("query")?;
    Ok(vec![result(q.dtype, AttentionParams::resolve(ctx)?.output_shape())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Literal, TensorData};
    use crate::ops::OpKind;
    use crate::ops::testing::{TestOp, assert_error, f16, op, t};

    fn sdpa(q: &[usize], k: &[usize], v: &[usize]) -> TestOp {
        op(OpKind::ScaledDotProductAttention)
            .var("query", f16(q))
            .var("key", f16(k))
            .var("value", f16(v))
    }

    #[test]
    fn fixture_with_inline_mask() {
        // 10: 12 heads, seq 8, head dim 64, a [1, 1, 8, 8] fp16 literal mask.
        let mask = Literal::tensor(
            Type::tensor(DType::Fp16, [1, 1, 8, 8]),
            TensorData::F16(vec![half::f16::ZERO; 64]),
        );
        let s = sdpa(&[1, 12, 8, 64], &[1, 12, 8, 64], &[1, 12, 8, 64]).lit("attn_mask", mask);
        assert_eq!(s.infer_one(), f16(&[1, 12, 8, 64]));
        let p = AttentionParams::resolve(&s.ctx()).unwrap();
        assert_eq!(
            (p.batch.clone(), p.target_len, p.source_len, p.embed, p.value_embed),
            (vec![1, 12], 8, 8, 64, 64)
        );
        assert_eq!(p.scale, 0.125);
        assert_eq!(p.mask.unwrap().shape, vec![1, 1, 8, 8]);
    }

    #[test]
    fn lengths_and_value_width_may_differ() {
        let s = sdpa(&[2, 5, 16], &[2, 7, 16], &[2, 7, 3]);
        assert_eq!(s.infer_one(), f16(&[2, 5, 3]));
        let s = sdpa(&[2, 5, 16], &[2, 7, 16], &[2, 7, 3]).var("attn_mask", t(DType::Bool, &[7]));
        assert_eq!(s.infer_one(), f16(&[2, 5, 3]));
        let s =
            sdpa(&[2, 5, 16], &[2, 7, 16], &[2, 7, 3]).var("attn_mask", t(DType::Fp32, &[2, 5, 7]));
        assert_eq!(s.infer_one(), f16(&[2, 5, 3]));
    }

    #[test]
    fn errors() {
        let e = sdpa(&[1, 12, 8, 64], &[1, 8, 8, 64], &[1, 12, 8, 64]).error();
        assert_error(
            &e,
            "key",
            "key has batch dims [1, 8] but query has [1, 12]; they must be equal",
        );
        let e = sdpa(&[1, 8, 64], &[1, 8, 32], &[1, 8, 64]).error();
        assert_error(&e, "key", "key has embedding dim 32 but query has 64");
        let e = sdpa(&[1, 8, 64], &[1, 8, 64], &[1, 9, 64]).error();
        assert_error(&e, "value", "value has sequence length 9 but key has 8");
        let e = sdpa(&[1, 8, 64], &[1, 1, 8, 64], &[1, 8, 64]).error();
        assert_error(&e, "key", "key has rank 4 but query has rank 3");
        let e =
            sdpa(&[1, 8, 64], &[1, 8, 64], &[1, 8, 64]).var("attn_mask", f16(&[1, 8, 9])).error();
        assert_error(
            &e,
            "attn_mask",
            "attn_mask [1, 8, 9] does not broadcast to [1, 8, 8] ([B, *, L, S])",
        );
        let e = sdpa(&[1, 8, 64], &[1, 8, 64], &[1, 8, 64])
            .var("attn_mask", f16(&[2, 1, 8, 8]))
            .error();
        assert_error(&e, "attn_mask", "does not broadcast");
        let e = sdpa(&[8, 64], &[8, 64], &[8, 64]).error();
        assert_error(&e, "query", "query is a rank-2 tensor");
        let e = op(OpKind::ScaledDotProductAttention)
            .var("query", f16(&[1, 8, 64]))
            .var("key", t(DType::Fp32, &[1, 8, 64]))
            .var("value", f16(&[1, 8, 64]))
            .error();
        assert_error(&e, "key", "key is fp32 but query is fp16");
        let e = sdpa(&[1, 8, 64], &[1, 8, 64], &[1, 8, 64])
            .var("attn_mask", t(DType::Int32, &[8, 8]))
            .error();
        assert_error(&e, "attn_mask", "attn_mask is int32 but must be bool, fp16 or fp32");
    }
}
