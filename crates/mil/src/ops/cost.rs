//! Arithmetic cost of an op: the FLOP count benchmarks report GFLOP/s against. Multiply-
//! accumulates count 2 (the convention of the ANE's published 18.6 TFLOPS figure,
//! REFERENCE.md §2); elementwise ops, reductions and softmax count one per element they
//! read; ops that only move data count none.

use super::{AttentionParams, ConvParams, MatmulParams, OpContext, OpError, OpKind};

/// FLOPs one execution of the op performs.
pub fn flops(ctx: &OpContext) -> Result<u64, OpError> {
    let elements =
        |name: &str| -> Result<u64, OpError> { Ok(ctx.tensor(name)?.element_count() as u64) };
    Ok(match ctx.kind {
        OpKind::Conv => {
            let p = ConvParams::resolve(ctx)?;
            let outputs = (p.batch * p.out_channels) as u64
                * p.output_spatial.iter().product::<usize>() as u64;
            let taps = (p.in_channels / p.groups.max(1)) as u64
                * p.kernel.iter().product::<usize>() as u64;
            2 * outputs * taps
        }
        OpKind::Matmul => {
            let p = MatmulParams::resolve(ctx)?;
            2 * p.batch.iter().product::<usize>() as u64 * (p.m * p.n * p.k) as u64
        }
        OpKind::ScaledDotProductAttention => {
            let p = AttentionParams::resolve(ctx)?;
            let heads = p.batch.iter().product::<usize>() as u64;
            let scores = (p.target_len * p.source_len) as u64;
            // Q·Kᵀ and P·V, plus scale and softmax on the scores.
            heads * (2 * scores * p.embed as u64 + 2 * scores * p.value_embed as u64 + 2 * scores)
        }
        k if k.is_elementwise_binary() => elements("x")?.max(elements("y")?),
        k if k.is_elementwise_unary() => elements("x")?,
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax | OpKind::Softmax => {
            elements("x")?
        }
        _ => 0,
    })
}
