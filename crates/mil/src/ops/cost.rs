//! Arithmetic cost of an op: the FLOP count benchmarks report GFLOP/s against. Multiply-
//! accumulates count 2 (the convention of the ANE's published 18.6 TFLOPS figure,
//! REFERENCE.md §2); elementwise ops, reductions and softmax count one per element they
//! read; ops that only move data count none.

use super::{
    AttentionParams, ConvParams, LinearParams, MatmulParams, OpContext, OpError, OpKind,
    PoolParams, UpsampleParams,
};

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
        OpKind::Linear => {
            let p = LinearParams::resolve(ctx)?;
            let macs = product(&[p.rows, p.out_features, p.in_features]).saturating_mul(2);
            macs.saturating_add(if p.has_bias { product(&[p.rows, p.out_features]) } else { 0 })
        }
        OpKind::MaxPool | OpKind::AvgPool => {
            // One per window element read, per output.
            let p = PoolParams::resolve(ctx)?;
            product(&p.output_shape()).saturating_mul(product(&p.kernel_sizes))
        }
        // Mean, variance, normalize, scale and shift: a few passes over x; count 5.
        OpKind::LayerNorm | OpKind::BatchNorm | OpKind::InstanceNorm => {
            elements("x")?.saturating_mul(5)
        }
        OpKind::Clip | OpKind::Prelu => elements("x")?,
        // A weighted sum of the 4 input elements around each output.
        OpKind::UpsampleBilinear => {
            product(&UpsampleParams::resolve(ctx)?.output_shape).saturating_mul(4)
        }
        k if k.is_elementwise_binary() => elements("x")?.max(elements("y")?),
        k if k.is_elementwise_unary() => elements("x")?,
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax | OpKind::Softmax => {
            elements("x")?
        }
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{f16, op};

    #[test]
    fn linear_counts_its_multiply_accumulates_and_bias() {
        let base = op(OpKind::Linear).var("x", f16(&[4, 3, 16])).var("weight", f16(&[8, 16]));
        assert_eq!(flops(&base.ctx()).unwrap(), 2 * 12 * 8 * 16);
        let biased = base.var("bias", f16(&[8]));
        assert_eq!(flops(&biased.ctx()).unwrap(), 2 * 12 * 8 * 16 + 12 * 8);
    }

    #[test]
    fn activations_count_one_per_element_and_bilinear_four_per_output() {
        let leaky = op(OpKind::LeakyRelu)
            .var("x", f16(&[2, 3, 4]))
            .lit("alpha", crate::ir::Literal::fp16(0.01));
        assert_eq!(flops(&leaky.ctx()).unwrap(), 24);
        let bilinear = op(OpKind::UpsampleBilinear)
            .var("x", f16(&[1, 2, 3, 4]))
            .int("scale_factor_height", 2)
            .int("scale_factor_width", 3);
        assert_eq!(flops(&bilinear.ctx()).unwrap(), 4 * 2 * 6 * 12);
        let nearest = op(OpKind::UpsampleNearestNeighbor)
            .var("x", f16(&[1, 2, 3, 4]))
            .int("scale_factor_height", 2);
        assert_eq!(flops(&nearest.ctx()).unwrap(), 0);
    }

    #[test]
    fn pools_count_one_per_window_element_of_each_output() {
        let p = op(OpKind::MaxPool)
            .var("x", f16(&[1, 2, 8, 8]))
            .ints("kernel_sizes", &[2, 2])
            .ints("strides", &[2, 2])
            .string("pad_type", "valid");
        assert_eq!(flops(&p.ctx()).unwrap(), 2 * 4 * 4 * 4);
    }
}
