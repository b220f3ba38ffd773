//! Arithmetic cost of an op: the FLOP count benchmarks report GFLOP/s against. Multiply-
//! accumulates count 2 (the convention of the ANE's published 18.6 TFLOPS figure,
//! REFERENCE.md §2); elementwise ops, reductions and softmax count one per element they
//! read; ops that only move data count none.

use super::{AttentionParams, ConvParams, MatmulParams, OpContext, OpError, OpKind};

/// Product of dims, saturating: declared shapes can be absurd, and a count must never
/// overflow.
fn product(dims: &[usize]) -> u64 {
    dims.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// FLOPs one execution of the op performs.
pub fn flops(ctx: &OpContext) -> Result<u64, OpError> {
    let elements = |name: &str| -> Result<u64, OpError> { Ok(product(&ctx.tensor(name)?.shape)) };
    Ok(match ctx.kind {
        OpKind::Conv => {
            let p = ConvParams::resolve(ctx)?;
            let outputs =
                product(&[p.batch, p.out_channels]).saturating_mul(product(&p.output_spatial));
            let taps =
                ((p.in_channels / p.groups.max(1)) as u64).saturating_mul(product(&p.kernel));
            outputs.saturating_mul(taps).saturating_mul(2)
        }
        OpKind::Matmul => {
            let p = MatmulParams::resolve(ctx)?;
            product(&p.batch).saturating_mul(product(&[p.m, p.n, p.k])).saturating_mul(2)
        }
        OpKind::ScaledDotProductAttention => {
            let p = AttentionParams::resolve(ctx)?;
            let scores = product(&p.batch).saturating_mul(product(&[p.target_len, p.source_len]));
            // Q·Kᵀ and P·V, plus scale and softmax on the scores.
            let per_score =
                2 * (p.embed as u64).saturating_add(p.value_embed as u64).saturating_add(1);
            scores.saturating_mul(per_score)
        }
        k if k.is_elementwise_binary() => elements("x")?.max(elements("y")?),
        k if k.is_elementwise_unary() => elements("x")?,
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax | OpKind::Softmax => {
            elements("x")?
        }
        _ => 0,
    })
}
