//! Elementwise kernels: binary ops with numpy broadcasting and unary activations.
//!
//! Every op is computed in f32 (gelu's erf in f64) and rounded once to the output type. fp16
//! kernels read NaN as +inf and store +0 where f32 gives NaN (see `numerics`). Scalar
//! parameters (epsilons, the alphas and betas of the parametric activations) are used as f32
//! values, as given: whether the ANE rounds an fp32 parameter to fp16 first is not measured
//! (coremltools writes them in fp16 for fp16 programs anyway). The functions are
//! the exact ones, not the ANE's piecewise-linear tables (max table error ~0.0034 on sigmoid), so
//! results differ from hardware by up to that much on activations.
//!
//! Work is done in blocks of [`BLOCK`] elements: operands widened into stack buffers (a splat
//! for a broadcast operand), one tight loop per op, then one narrowing store. After collapsing
//! the dims that broadcast alike, the innermost run of every operand is either contiguous or a
//! single repeated value, so same-shape, scalar and row-broadcast cases all stream.

use super::{
    Element, KernelError, PAR_CHUNK, Result, broadcast_shapes, broadcast_strides, check_len,
    parallel_worth_it,
};
use crate::sim::numerics;
use rayon::prelude::*;

/// Elements processed per inner block.
pub const BLOCK: usize = 256;

/// Binary elementwise ops of MIL (numpy broadcasting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `x + y`.
    Add,
    /// `x - y`.
    Sub,
    /// `x * y`.
    Mul,
    /// `x / y`.
    RealDiv,
    /// `x` to the power `y` (`powf`).
    Pow,
    /// The larger of `x` and `y`; NaN propagates, as numpy's.
    Maximum,
    /// The smaller of `x` and `y`; NaN propagates, as numpy's.
    Minimum,
}

/// Which formula `gelu` uses: the registry's resolved `mode`.
pub use anemone_mil::ops::GeluMode;

/// Unary elementwise ops of MIL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `e^x`, exact; in fp16 it overflows to +inf past x ~ 11.09, as on the ANE.
    Exp,
    /// ln(x + epsilon); MIL's default epsilon is 1e-45.
    Log {
        /// Added to x before the logarithm.
        epsilon: f32,
    },
    /// `sqrt(x)`; negative x gives NaN in f32, stored as +0 on fp16.
    Sqrt,
    /// 1 / sqrt(x + epsilon); MIL's default epsilon is 1e-12.
    Rsqrt {
        /// Added to x before the square root.
        epsilon: f32,
    },
    /// 1 / (x + epsilon); MIL's default epsilon is 1e-4.
    Inverse {
        /// Added to x before the reciprocal.
        epsilon: f32,
    },
    /// `tanh(x)`, exact (the ANE uses a piecewise-linear table).
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`, exact (the ANE's table is off by up to ~0.0034).
    Sigmoid,
    /// x sigmoid(x).
    Silu,
    /// `x * Phi(x)` by the given formula: exact (erf in f64), tanh or sigmoid approximation.
    Gelu(GeluMode),
    /// `|x|`.
    Abs,
    /// The error function.
    Erf,
    /// `sin(x)`, x in radians.
    Sin,
    /// `cos(x)`, x in radians.
    Cos,
    /// Rounds toward -inf.
    Floor,
    /// Rounds toward +inf.
    Ceil,
    /// Round half to even, as numpy's `round` (coremltools' reference for `round`).
    Round,
    /// -1, 0 or 1 (0 for ±0; NaN stays NaN and the fp16 rules apply).
    Sign,
    /// `x * x`.
    Square,
    /// `2^x`.
    Exp2,
    /// x where x >= 0, else alpha x.
    LeakyRelu {
        /// Slope for negative x.
        alpha: f32,
    },
    /// min(max(x, 0), 6).
    Relu6,
    /// min(max(alpha x + beta, 0), 1).
    SigmoidHard {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// x where x >= alpha, else 0.
    ThresholdedRelu {
        /// Threshold: x below it becomes 0.
        alpha: f32,
    },
    /// x where x >= 0, else alpha (e^x - 1).
    Elu {
        /// Scale of the negative branch.
        alpha: f32,
    },
    /// ln(1 + e^x), evaluated as max(x, 0) + ln(1 + e^-|x|) so that neither end overflows.
    Softplus,
    /// min(max(x, 0), beta) + min(min(x, 0) alpha, beta).
    ClampedRelu {
        /// Slope for negative x.
        alpha: f32,
        /// Upper clamp.
        beta: f32,
    },
    /// alpha tanh(beta x).
    ScaledTanh {
        /// Output scale.
        alpha: f32,
        /// Input scale.
        beta: f32,
    },
    /// alpha x + beta.
    LinearActivation {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// x / (1 + |x|), ±1 at ±inf (the limit, not inf / inf).
    Softsign,
}

impl BinaryOp {
    /// The op on f32 (IEEE; NaN handling is the kernel's business).
    #[inline(always)]
    pub fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::RealDiv => x / y,
            BinaryOp::Pow => x.powf(y),
            BinaryOp::Maximum => maximum(x, y),
            BinaryOp::Minimum => minimum(x, y),
        }
    }
}

/// numpy's maximum: NaN propagates.
#[inline(always)]
fn maximum(x: f32, y: f32) -> f32 {
    if x > y || x.is_nan() { x } else { y }
}

/// numpy's minimum: NaN propagates.
#[inline(always)]
fn minimum(x: f32, y: f32) -> f32 {
    if x < y || x.is_nan() { x } else { y }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

impl UnaryOp {
    /// The op on f32 (IEEE; NaN handling is the kernel's business).
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log { epsilon } => (x + epsilon).ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt { epsilon } => 1.0 / (x + epsilon).sqrt(),
            UnaryOp::Inverse { epsilon } => 1.0 / (x + epsilon),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Silu => times_gate(x, sigmoid(x)),
            UnaryOp::Gelu(GeluMode::Exact) => gelu_exact(x),
            UnaryOp::Gelu(GeluMode::TanhApproximation) => {
                let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
                times_gate(x, 0.5 * (1.0 + inner.tanh()))
            }
            UnaryOp::Gelu(GeluMode::SigmoidApproximation) => times_gate(x, sigmoid(1.702 * x)),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Erf => erf(x),
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Round => x.round_ties_even(),
            UnaryOp::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x * 0.0
                }
            }
            UnaryOp::Square => x * x,
            UnaryOp::Exp2 => x.exp2(),
            UnaryOp::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            // Comparisons rather than f32::max/min, which would drop a NaN.
            UnaryOp::Relu6 => clamp_between(x, 0.0, 6.0),
            UnaryOp::SigmoidHard { alpha, beta } => clamp_between(alpha * x + beta, 0.0, 1.0),
            UnaryOp::ThresholdedRelu { alpha } => {
                if x < alpha {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Elu { alpha } => {
                if x < 0.0 {
                    alpha * x.exp_m1()
                } else {
                    x
                }
            }
            UnaryOp::Softplus => {
                let tail = (-x.abs()).exp().ln_1p();
                if x > 0.0 { x + tail } else { tail }
            }
            UnaryOp::ClampedRelu { alpha, beta } => {
                minimum(maximum(x, 0.0), beta) + minimum(minimum(x, 0.0) * alpha, beta)
            }
            UnaryOp::ScaledTanh { alpha, beta } => alpha * (beta * x).tanh(),
            UnaryOp::LinearActivation { alpha, beta } => alpha * x + beta,
            UnaryOp::Softsign => {
                if x.is_infinite() {
                    x.signum()
                } else {
                    x / (1.0 + x.abs())
                }
            }
        }
    }
}

/// `x` limited to `[lo, hi]`; NaN stays NaN (numpy's minimum(maximum(x, lo), hi)).
#[inline(always)]
fn clamp_between(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// x * gate, with a closed gate giving 0 even for x = -inf (the limit, not inf * 0).
#[inline(always)]
fn times_gate(x: f32, gate: f32) -> f32 {
    if gate == 0.0 { 0.0 } else { x * gate }
}

/// gelu(x) = x Phi(x) = 0.5 x erfc(-x / sqrt 2), in f64 so the negative tail keeps its
/// relative accuracy.
fn gelu_exact(x: f32) -> f32 {
    let xd = x as f64;
    let phi = 0.5 * erfc64(-xd * std::f64::consts::FRAC_1_SQRT_2);
    if phi == 0.0 { 0.0 } else { (xd * phi) as f32 }
}

/// The error function; absolute error below 2e-7 (f64 internally, rounded to f32).
pub fn erf(x: f32) -> f32 {
    erf64(x as f64) as f32
}

/// erf in f64: a Taylor series near 0, else 1 - erfc. Absolute error < 2e-7.
fn erf64(x: f64) -> f64 {
    if x.abs() < 0.5 {
        // erf x = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)); 9 terms reach 1e-12 at 0.5.
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        for n in 1..9 {
            term *= -x2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if x > 0.0 {
        1.0 - erfc64(x)
    } else {
        erfc64(-x) - 1.0
    }
}

/// Complementary error function with relative error below 1.2e-7 everywhere: the classic
/// Chebyshev-fitted form erfc(z) ~ t exp(-z^2 + P(t)), t = 1 / (1 + z/2).
fn erfc64(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    const C: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let mut poly = C[9];
    for c in C[..9].iter().rev() {
        poly = poly * t + c;
    }
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Output shape of a binary op: the numpy broadcast of the operand shapes.
pub fn binary_output_shape(a_shape: &[usize], b_shape: &[usize]) -> Result<Vec<usize>> {
    broadcast_shapes(a_shape, b_shape)
}

/// `out = op(a, b)` with numpy broadcasting; `out` holds the broadcast shape.
pub fn binary<T: Element>(
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out: &mut [T],
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if let (Some(a16), Some(b16), Some(out16)) = (T::as_f16(a), T::as_f16(b), T::as_f16_mut(out))
        && T::ANE_RULES
        && let Some(arith) = x86::Arith::of(op)
    {
        return binary_f16_lanes(arith, a16, a_shape, b16, b_shape, out16);
    }
    match op {
        BinaryOp::Add => binary_with(|x, y| x + y, a, a_shape, b, b_shape, out),
        BinaryOp::Sub => binary_with(|x, y| x - y, a, a_shape, b, b_shape, out),
        BinaryOp::Mul => binary_with(|x, y| x * y, a, a_shape, b, b_shape, out),
        BinaryOp::RealDiv => binary_with(|x, y| x / y, a, a_shape, b, b_shape, out),
        BinaryOp::Pow => binary_with(f32::powf, a, a_shape, b, b_shape, out),
        BinaryOp::Maximum => binary_with(maximum, a, a_shape, b, b_shape, out),
        BinaryOp::Minimum => binary_with(minimum, a, a_shape, b, b_shape, out),
    }
}

/// `out = f(a, b)` elementwise with numpy broadcasting, computed in f32 and rounded once; fp16
/// follows the ANE's NaN rules. The building block of [`binary`], public so the plan can fuse
/// a chain of elementwise ops into one pass.
pub fn binary_with<T: Element, F>(
    f: F,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out: &mut [T],
) -> Result<()>
where
    F: Fn(f32, f32) -> f32 + Sync,
{
    let plan = Broadcast2::checked((a.len(), a_shape), (b.len(), b_shape), out.len())?;
    let run = |start: usize, chunk: &mut [T]| {
        super::with_wide_simd(
            #[inline(always)]
            || {
                let mut ba = [0.0f32; BLOCK];
                let mut bb = [0.0f32; BLOCK];
                for (i, block) in chunk.chunks_mut(BLOCK).enumerate() {
                    let n = block.len();
                    let begin = start + i * BLOCK;
                    plan.gather(a, b, begin, &mut ba[..n], &mut bb[..n]);
                    if T::ANE_RULES {
                        for (x, y) in ba[..n].iter_mut().zip(&mut bb[..n]) {
                            *x = numerics::ane_result(f(
                                numerics::ane_read(*x),
                                numerics::ane_read(*y),
                            ));
                        }
                    } else {
                        for (x, y) in ba[..n].iter_mut().zip(&bb[..n]) {
                            *x = f(*x, *y);
                        }
                    }
                    T::store(&ba[..n], block);
                }
            },
        )
    };
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| run(i * PAR_CHUNK, c));
    } else {
        run(0, out);
    }
    Ok(())
}

/// The fp16 arithmetic ops (add, sub, mul, real_div) in one pass of 16-lane vectors: each
/// lane widens its operands, reads NaN as +inf, computes, turns NaN into +0 and rounds once,
/// all in registers. [`binary_with`] takes the same steps through buffers of a block, one step
/// at a time; the vector instructions are IEEE like the scalar ones, so the bits are equal (a
/// test holds them so over every class of value and broadcast).
#[cfg(target_arch = "x86_64")]
fn binary_f16_lanes(
    arith: x86::Arith,
    a: &[half::f16],
    a_shape: &[usize],
    b: &[half::f16],
    b_shape: &[usize],
    out: &mut [half::f16],
) -> Result<()> {
    let plan = Broadcast2::checked((a.len(), a_shape), (b.len(), b_shape), out.len())?;
    fn lanes(src: &[half::f16], run: Run, len: usize) -> x86::Lanes<'_> {
        match run {
            Run::Contiguous(at) => x86::Lanes::Slice(&src[at..at + len]),
            Run::Broadcast(at) => x86::Lanes::Splat(src[at]),
        }
    }
    let run = |start: usize, chunk: &mut [half::f16]| {
        plan.for_each_run(start, chunk.len(), |filled, len, [ra, rb]| {
            let dst = &mut chunk[filled..filled + len];
            // SAFETY: Arith::of checked the CPU features; each slice holds `len` elements.
            unsafe { x86::binary_f16(arith, lanes(a, ra, len), lanes(b, rb, len), dst) };
        });
    };
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| run(i * PAR_CHUNK, c));
    } else {
        run(0, out);
    }
    Ok(())
}

/// `out = op(x)`; `out` and `x` have the same length.
///
/// On fp16 a costly op over a large tensor reads its results from a table of all 65,536
/// inputs (built once per op and parameters, by this same function's direct path), so the
/// bits are the direct path's by construction.
pub fn unary<T: Element>(op: UnaryOp, x: &[T], out: &mut [T]) -> Result<()> {
    if x.len() >= TABLE_MIN_LEN
        && op.costly()
        && x.len() == out.len()
        && let (Some(x16), Some(out16)) = (T::as_f16(x), T::as_f16_mut(out))
    {
        look_up(&f16_table(op)?, x16, out16);
        return Ok(());
    }
    unary_direct(op, x, out)
}

/// Tensors from this many elements up use the fp16 table: below, building a table (65,536
/// evaluations, about a millisecond for gelu) would cost more than it saves the first time.
const TABLE_MIN_LEN: usize = 1 << 14;

impl UnaryOp {
    /// Whether the op costs more than a table look-up per element (a transcendental function
    /// or a division); the cheap ones (comparisons, abs, affine maps) vectorize as they are.
    fn costly(self) -> bool {
        use UnaryOp::*;
        matches!(
            self,
            Exp | Log { .. }
                | Sqrt
                | Rsqrt { .. }
                | Inverse { .. }
                | Tanh
                | Sigmoid
                | Silu
                | Gelu(_)
                | Erf
                | Sin
                | Cos
                | Exp2
                | Elu { .. }
                | Softplus
                | ScaledTanh { .. }
                | Softsign
        )
    }
}

/// The fp16 result of `op` for every fp16 input, indexed by the input's bits.
type F16Table = std::sync::Arc<[half::f16]>;

/// The table of `op`, built on first use and kept for the process. Keyed by the op's debug
/// form, which spells its parameters exactly (it tells -0.0 from 0.0, which `==` does not).
fn f16_table(op: UnaryOp) -> Result<F16Table> {
    use std::sync::{Mutex, OnceLock};
    static TABLES: OnceLock<Mutex<Vec<(String, F16Table)>>> = OnceLock::new();
    let key = format!("{op:?}");
    let tables = TABLES.get_or_init(Default::default);
    if let Some((_, t)) =
        tables.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(k, _)| *k == key)
    {
        return Ok(t.clone());
    }
    // Built outside the lock (two threads may both build one; they are equal).
    let inputs: Vec<half::f16> = (0..=u16::MAX).map(half::f16::from_bits).collect();
    let mut values = vec![half::f16::ZERO; inputs.len()];
    unary_direct(op, &inputs, &mut values)?;
    // One entry of padding: the vector look-up reads 4 bytes at each entry.
    values.push(half::f16::ZERO);
    let table: F16Table = values.into();
    let mut tables = tables.lock().unwrap_or_else(|e| e.into_inner());
    if !tables.iter().any(|(k, _)| *k == key) {
        tables.push((key, table.clone()));
    }
    Ok(table)
}

/// `out[i] = table[x[i]]`, over both cores when it pays. `table` holds an entry for each of
/// the 65,536 bit patterns and one of padding.
fn look_up(table: &[half::f16], x: &[half::f16], out: &mut [half::f16]) {
    assert!(table.len() > 1 << 16, "a look-up table of {} entries", table.len());
    let run = |start: usize, chunk: &mut [half::f16]| {
        let x = &x[start..start + chunk.len()];
        #[cfg(target_arch = "x86_64")]
        if x86::gathers_pay() {
            // SAFETY: gathers_pay checked the CPU features; the table has its padding entry
            // (asserted above).
            unsafe { x86::look_up(table, x, chunk) };
            return;
        }
        look_up_one_by_one(table, x, chunk);
    };
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| run(i * PAR_CHUNK, c));
    } else {
        run(0, out);
    }
}

/// [`look_up`]'s loop for any CPU, one element at a time.
fn look_up_one_by_one(table: &[half::f16], x: &[half::f16], out: &mut [half::f16]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = table[v.to_bits() as usize];
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Whether [`look_up`] runs here: the CPU has AVX-512F and BW, and its gathers are not
    /// slowed by the microcode mitigation of Gather Data Sampling (Intel's INTEL-SA-00828),
    /// which makes them several times slower on the cores it affects (Skylake to Tiger Lake),
    /// enough to lose to the one-by-one loop. Linux says which applies in sysfs; elsewhere
    /// gathers are used.
    pub(super) fn gathers_pay() -> bool {
        static PAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *PAY.get_or_init(|| {
            let mitigated = std::fs::read_to_string(
                "/sys/devices/system/cpu/vulnerabilities/gather_data_sampling",
            )
            .is_ok_and(|s| s.starts_with("Mitigation: Microcode"));
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && !mitigated
        })
    }

    /// The binary ops whose fp16 form runs in [`binary_f16`].
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Arith {
        Add,
        Sub,
        Mul,
        Div,
    }

    impl Arith {
        /// The op's vector form, when it has one and the CPU runs it (AVX-512F, BW and VL,
        /// F16C).
        pub(super) fn of(op: super::BinaryOp) -> Option<Arith> {
            use super::BinaryOp;
            let arith = match op {
                BinaryOp::Add => Arith::Add,
                BinaryOp::Sub => Arith::Sub,
                BinaryOp::Mul => Arith::Mul,
                BinaryOp::RealDiv => Arith::Div,
                _ => return None,
            };
            let cpu = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("f16c");
            cpu.then_some(arith)
        }
    }

    /// An operand of [`binary_f16`]: one element per output lane, or one for all of them.
    pub(super) enum Lanes<'a> {
        Slice(&'a [f16]),
        Splat(f16),
    }

    /// `out = arith(a, b)` over fp16 lanes by the ANE's rules, as `binary_with` computes it.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VL and F16C; a `Lanes::Slice` holds `out.len()`
    /// elements.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn binary_f16<'a>(arith: Arith, a: Lanes<'a>, b: Lanes<'a>, out: &mut [f16]) {
        let inf = _mm512_set1_ps(f32::INFINITY);
        // NaN read as +inf.
        let read = |v: __m512| _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), inf);
        /// An operand as the loop reads it: a splat already widened and read once.
        enum Wide<'a> {
            Slice(&'a [f16]),
            Splat(__m512),
        }
        let wide = |lanes: Lanes<'a>| -> Wide<'a> {
            match lanes {
                Lanes::Slice(s) => Wide::Slice(s),
                Lanes::Splat(h) => Wide::Splat(read(_mm512_set1_ps(h.to_f32()))),
            }
        };
        let (a, b) = (wide(a), wide(b));
        let n = out.len();
        crate::sim::kernels::lanes16::steps16(n, |i, k| {
            // SAFETY: the mask k keeps every load and the store inside the n elements from i.
            unsafe {
                let load = |w: &Wide<'_>| match w {
                    Wide::Slice(s) => {
                        read(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, s.as_ptr().add(i).cast())))
                    }
                    Wide::Splat(v) => *v,
                };
                let (x, y) = (load(&a), load(&b));
                let z = match arith {
                    Arith::Add => _mm512_add_ps(x, y),
                    Arith::Sub => _mm512_sub_ps(x, y),
                    Arith::Mul => _mm512_mul_ps(x, y),
                    Arith::Div => _mm512_div_ps(x, y),
                };
                // NaN -> +0, then one rounding to fp16 (to nearest even; overflow gives ±inf).
                let z = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(z, z), z);
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(z);
                _mm256_mask_storeu_epi16(out.as_mut_ptr().add(i).cast(), k, h);
            }
        });
    }

    /// [`super::look_up`]'s loop with 16-lane gathers: each lane reads the 4 bytes that start
    /// at its entry and keeps the low two (the entry, on little-endian x86). Measured at 1.6
    /// to 2.7 times the speed of the one-by-one loop on an fp16 gelu over 786,432 elements.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and BW; `table` must hold more than 65,536 entries, so that
    /// the 4 bytes read at the last entry stay inside it.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn look_up(table: &[f16], x: &[f16], out: &mut [f16]) {
        let n = out.len().min(x.len());
        let full = n / 16 * 16;
        let base = table.as_ptr().cast::<i32>();
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= n, so the load and the store stay inside x and out; a gather
            // lane reads bytes 2e..2e + 4 of the table for an entry e <= 65,535, inside a table
            // of more than 65,536 two-byte entries (the caller's guarantee).
            unsafe {
                let bits = _mm256_loadu_si256(x.as_ptr().add(i).cast());
                let got = _mm512_i32gather_epi32::<2>(_mm512_cvtepu16_epi32(bits), base);
                _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), _mm512_cvtepi32_epi16(got));
            }
        }
        super::look_up_one_by_one(table, &x[full..n], &mut out[full..n]);
    }
}

/// `out = op(x)` evaluated element by element (the definition the fp16 tables are built from).
fn unary_direct<T: Element>(op: UnaryOp, x: &[T], out: &mut [T]) -> Result<()> {
    match op {
        UnaryOp::Exp => unary_with(f32::exp, x, out),
        UnaryOp::Log { epsilon: 0.0 } => unary_with(f32::ln, x, out),
        UnaryOp::Sqrt => unary_with(f32::sqrt, x, out),
        UnaryOp::Relu => unary_with(|v| UnaryOp::Relu.apply(v), x, out),
        UnaryOp::Tanh => unary_with(f32::tanh, x, out),
        UnaryOp::Sigmoid => unary_with(sigmoid, x, out),
        other => unary_with(|v| other.apply(v), x, out),
    }
}

/// `out = f(x)` elementwise, computed in f32 and rounded once; fp16 follows the ANE's NaN rules.
pub fn unary_with<T: Element, F>(f: F, x: &[T], out: &mut [T]) -> Result<()>
where
    F: Fn(f32) -> f32 + Sync,
{
    if x.len() != out.len() {
        return Err(KernelError::new(
            "elementwise",
            format!("input has {} elements, output {}", x.len(), out.len()),
        ));
    }
    let run = |start: usize, chunk: &mut [T]| {
        super::with_wide_simd(
            #[inline(always)]
            || {
                let mut buf = [0.0f32; BLOCK];
                for (i, block) in chunk.chunks_mut(BLOCK).enumerate() {
                    let n = block.len();
                    let begin = start + i * BLOCK;
                    T::load(&x[begin..begin + n], &mut buf[..n]);
                    if T::ANE_RULES {
                        for v in &mut buf[..n] {
                            *v = numerics::ane_result(f(numerics::ane_read(*v)));
                        }
                    } else {
                        for v in &mut buf[..n] {
                            *v = f(*v);
                        }
                    }
                    T::store(&buf[..n], block);
                }
            },
        )
    };
    if parallel_worth_it(out.len()) {
        out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| run(i * PAR_CHUNK, c));
    } else {
        run(0, out);
    }
    Ok(())
}

/// Where a piece of a broadcast operand comes from: consecutive elements from an offset, or one
/// element repeated.
#[derive(Clone, Copy, Debug)]
enum Run {
    Contiguous(usize),
    Broadcast(usize),
}

/// Index arithmetic of a two-operand broadcast, with dims that broadcast alike collapsed so
/// the innermost dim is as long as possible.
#[derive(Debug)]
struct Broadcast2 {
    /// Collapsed output dims (at least one).
    dims: Vec<usize>,
    /// Per operand, the stride of each collapsed dim (0 where broadcast).
    strides: [Vec<usize>; 2],
}

impl Broadcast2 {
    /// The broadcast of operands of `a.0` and `b.0` elements (of shapes `a.1`, `b.1`) into an
    /// output of `out_len`, after checking that every length matches its shape.
    fn checked(a: (usize, &[usize]), b: (usize, &[usize]), out_len: usize) -> Result<Self> {
        const KERNEL: &str = "elementwise";
        check_len(KERNEL, "a", a.0, a.1)?;
        check_len(KERNEL, "b", b.0, b.1)?;
        let shape = broadcast_shapes(a.1, b.1)?;
        check_len(KERNEL, "out", out_len, &shape)?;
        Ok(Broadcast2::new(&shape, a.1, b.1))
    }

    fn new(out: &[usize], a: &[usize], b: &[usize]) -> Self {
        let sa = broadcast_strides(a, out);
        let sb = broadcast_strides(b, out);
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for i in 0..out.len() {
            if out[i] == 1 {
                continue;
            }
            if let Some(&last) = dims.last() {
                let la = *strides[0].last().unwrap();
                let lb = *strides[1].last().unwrap();
                // The previous dim folds into this one when both operands step through it as
                // one run with this dim.
                if la == sa[i] * out[i] && lb == sb[i] * out[i] {
                    let n = dims.len();
                    dims[n - 1] = last * out[i];
                    strides[0][n - 1] = sa[i];
                    strides[1][n - 1] = sb[i];
                    continue;
                }
            }
            dims.push(out[i]);
            strides[0].push(sa[i]);
            strides[1].push(sb[i]);
        }
        if dims.is_empty() {
            dims.push(1);
            strides = [vec![0], vec![0]];
        }
        Broadcast2 { dims, strides }
    }

    /// Writes both operands' values for output positions `begin..begin + da.len()` (`db` is
    /// as long), in one walk over the runs.
    fn gather<T: Element>(&self, a: &[T], b: &[T], begin: usize, da: &mut [f32], db: &mut [f32]) {
        fn fill<T: Element>(src: &[T], run: Run, out: &mut [f32]) {
            match run {
                Run::Broadcast(at) => out.fill(src[at].to_f32()),
                Run::Contiguous(at) => T::load(&src[at..at + out.len()], out),
            }
        }
        self.for_each_run(begin, da.len(), |filled, len, [ra, rb]| {
            fill(a, ra, &mut da[filled..filled + len]);
            fill(b, rb, &mut db[filled..filled + len]);
        });
    }

    /// Splits output positions `begin..begin + len` at the ends of the innermost dim and calls
    /// `f(filled, run_len, [run of a, run of b])` for each piece, `filled` counting from `begin`.
    /// Within a piece each operand is read from consecutive elements or repeats one.
    fn for_each_run(&self, begin: usize, len: usize, mut f: impl FnMut(usize, usize, [Run; 2])) {
        if len == 0 {
            // (An empty output may have an empty innermost dim.)
            return;
        }
        let r = self.dims.len();
        let inner = self.dims[r - 1];
        let mut idx = begin / inner;
        let mut pos = begin % inner;
        let mut filled = 0;
        while filled < len {
            let run = (inner - pos).min(len - filled);
            let at = |which: usize| {
                let outer = self.outer_offset(idx, which);
                // An operand's innermost collapsed dim has stride 1, or 0 where it broadcasts.
                match self.strides[which][r - 1] {
                    0 => Run::Broadcast(outer),
                    s => Run::Contiguous(outer + pos * s),
                }
            };
            f(filled, run, [at(0), at(1)]);
            filled += run;
            pos = 0;
            idx += 1;
        }
    }

    /// Source offset of the start of the `idx`-th inner run.
    fn outer_offset(&self, mut idx: usize, which: usize) -> usize {
        let strides = &self.strides[which];
        let mut off = 0;
        for d in (0..self.dims.len() - 1).rev() {
            off += (idx % self.dims[d]) * strides[d];
            idx /= self.dims[d];
        }
        off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::numel;
    use crate::sim::kernels::testutil::*;
    use half::f16;

    /// f64 reference for a broadcast binary op.
    fn reference_binary(
        f: impl Fn(f64, f64) -> f64,
        a: &[f64],
        a_shape: &[usize],
        b: &[f64],
        b_shape: &[usize],
    ) -> Vec<f64> {
        let shape = broadcast_shapes(a_shape, b_shape).unwrap();
        let sa = broadcast_strides(a_shape, &shape);
        let sb = broadcast_strides(b_shape, &shape);
        (0..numel(&shape))
            .map(|lin| {
                let (mut rest, mut oa, mut ob) = (lin, 0, 0);
                for d in (0..shape.len()).rev() {
                    let i = rest % shape[d];
                    rest /= shape[d];
                    oa += i * sa[d];
                    ob += i * sb[d];
                }
                f(a[oa], b[ob])
            })
            .collect()
    }

    /// Every costly op, with parameters where it has them.
    fn costly_ops() -> Vec<UnaryOp> {
        use UnaryOp::*;
        let ops = vec![
            Exp,
            Log { epsilon: 1e-45 },
            Log { epsilon: 0.0 },
            Sqrt,
            Rsqrt { epsilon: 1e-12 },
            Inverse { epsilon: 1e-4 },
            Inverse { epsilon: 0.0 },
            Tanh,
            Sigmoid,
            Silu,
            Gelu(GeluMode::Exact),
            Gelu(GeluMode::TanhApproximation),
            Gelu(GeluMode::SigmoidApproximation),
            Erf,
            Sin,
            Cos,
            Exp2,
            Elu { alpha: 0.7 },
            Softplus,
            ScaledTanh { alpha: 1.5, beta: 0.25 },
            Softsign,
        ];
        assert!(ops.iter().all(|op| op.costly()));
        ops
    }

    #[test]
    fn fp16_tables_give_the_direct_paths_bits_for_every_input() {
        // Every fp16 bit pattern, in an order that is not the table's, three times and a bit,
        // so the look-up runs in parallel chunks that do not start at 0.
        let patterns: Vec<f16> =
            (0..=u16::MAX).map(|b| f16::from_bits(b.wrapping_mul(40503))).collect();
        let x: Vec<f16> = patterns.iter().cycle().take(3 * patterns.len() + 17).copied().collect();
        for op in costly_ops() {
            let mut fast = vec![f16::ZERO; x.len()];
            let mut direct = vec![f16::ZERO; x.len()];
            unary(op, &x, &mut fast).unwrap();
            unary_direct(op, &x, &mut direct).unwrap();
            for (i, (f, d)) in fast.iter().zip(&direct).enumerate() {
                assert_eq!(f.to_bits(), d.to_bits(), "{op:?} at x = {:?}", x[i]);
            }
        }
        // alpha = 0.0 and -0.0 compare equal but give +0 and -0: each needs its own table.
        let ones = vec![f16::ONE; TABLE_MIN_LEN];
        let mut plus = vec![f16::ONE; ones.len()];
        let mut minus = vec![f16::ONE; ones.len()];
        unary(UnaryOp::ScaledTanh { alpha: 0.0, beta: 1.0 }, &ones, &mut plus).unwrap();
        unary(UnaryOp::ScaledTanh { alpha: -0.0, beta: 1.0 }, &ones, &mut minus).unwrap();
        assert_eq!(plus[0].to_bits(), 0x0000);
        assert_eq!(minus[0].to_bits(), 0x8000);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gathered_look_ups_match_one_by_one_at_every_length() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw"))
        {
            return;
        }
        let table = f16_table(UnaryOp::Silu).unwrap();
        assert_eq!(table.len(), (1 << 16) + 1, "one entry of padding");
        // The last bit patterns (NaNs) read the padding entry's bytes; every pattern appears.
        let x: Vec<f16> = (0..=u16::MAX).rev().map(f16::from_bits).collect();
        for len in [0, 1, 15, 16, 17, 33, 1000, x.len()] {
            let mut gathered = vec![f16::ZERO; len];
            let mut one_by_one = vec![f16::ONE; len];
            // SAFETY: checked features above; the table has its padding entry.
            unsafe { x86::look_up(&table, &x[..len], &mut gathered) };
            look_up_one_by_one(&table, &x[..len], &mut one_by_one);
            let bits = |v: &[f16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gathered), bits(&one_by_one), "length {len}");
        }
    }

    #[test]
    fn small_and_f32_tensors_skip_the_table() {
        let x = values_f16(TABLE_MIN_LEN - 1, 3);
        let mut a = vec![f16::ZERO; x.len()];
        let mut b = vec![f16::ZERO; x.len()];
        unary(UnaryOp::Gelu(GeluMode::Exact), &x, &mut a).unwrap();
        unary_direct(UnaryOp::Gelu(GeluMode::Exact), &x, &mut b).unwrap();
        assert_eq!(a, b);
        let x32: Vec<f32> = (0..TABLE_MIN_LEN).map(|i| i as f32 * 1e-3 - 7.0).collect();
        let mut y = vec![0.0f32; x32.len()];
        unary(UnaryOp::Silu, &x32, &mut y).unwrap();
        for (v, r) in x32.iter().zip(&y) {
            assert_eq!(r.to_bits(), UnaryOp::Silu.apply(*v).to_bits());
        }
    }

    fn check_binary(op: BinaryOp, a_shape: &[usize], b_shape: &[usize]) {
        let mut a = values_f16(numel(a_shape), 11);
        let mut b = values_f16(numel(b_shape), 12);
        if op == BinaryOp::Pow {
            // Positive bases, moderate exponents.
            a.iter_mut().for_each(|x| *x = f16::from_f32(x.to_f32().abs() * 4.0 + 0.25));
            b.iter_mut().for_each(|x| *x = f16::from_f32(x.to_f32() * 3.0));
        }
        if op == BinaryOp::RealDiv {
            b.iter_mut().for_each(|x| *x = f16::from_f32(x.to_f32() + 1.5f32.copysign(x.to_f32())));
        }
        let f64op = |x: f64, y: f64| match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::RealDiv => x / y,
            BinaryOp::Pow => x.powf(y),
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
        };
        let want = reference_binary(f64op, &to_f64(&a), a_shape, &to_f64(&b), b_shape);
        let shape = binary_output_shape(a_shape, b_shape).unwrap();
        let mut out = vec![f16::ZERO; numel(&shape)];
        binary(op, &a, a_shape, &b, b_shape, &mut out).unwrap();
        // One rounding of an f32 result that is exact (add/sub/mul/max/min of fp16 values) or
        // within a few f32 ulps (div, pow): at most half an fp16 ulp plus a hair; 1 ulp allowed.
        assert_close_f16(&out, &want, 1.0, 0.0, &format!("{op:?} {a_shape:?} {b_shape:?}"));
        // Same data as f32 through the f32 kernel: within f32 precision of the reference.
        let a32: Vec<f32> = a.iter().map(|x| x.to_f32()).collect();
        let b32: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        let mut out32 = vec![0.0f32; out.len()];
        binary(op, &a32, a_shape, &b32, b_shape, &mut out32).unwrap();
        for (g, r) in out32.iter().zip(&want) {
            assert!((*g as f64 - r).abs() <= 1e-6 * r.abs().max(1.0), "{op:?}: {g} vs {r}");
        }
    }

    const ALL_BINARY: [BinaryOp; 7] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::RealDiv,
        BinaryOp::Pow,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
    ];

    #[test]
    fn fp16_arithmetic_in_lanes_has_the_bits_of_the_block_loop() {
        // Every fp16 bit pattern (NaNs, infinities, zeros, subnormals) against every other
        // in a scrambled order, so that all classes meet, through each kind of broadcast.
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let other: Vec<f16> =
            (0..=u16::MAX).map(|b| f16::from_bits(b.wrapping_mul(40503) ^ 0x8000)).collect();
        let cases: &[(&[usize], &[usize])] = &[
            (&[65536], &[65536]),
            (&[256, 256], &[256]),
            (&[256, 256], &[256, 1]),
            (&[256, 256], &[]),
            (&[], &[256, 256]),
            (&[16, 4096], &[1, 4096]),
            (&[2, 3, 1, 5], &[1, 3, 4, 1]),
            (&[7, 33], &[7, 33]),
            (&[4, 0], &[0]),
            (&[0, 5], &[5]),
        ];
        let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::RealDiv];
        for op in ops {
            let f = |x: f32, y: f32| match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                _ => x / y,
            };
            for (a_shape, b_shape) in cases {
                let a = &all[..numel(a_shape)];
                let b = &other[..numel(b_shape)];
                let shape = binary_output_shape(a_shape, b_shape).unwrap();
                let mut lanes = vec![f16::ZERO; numel(&shape)];
                let mut block = vec![f16::ONE; numel(&shape)];
                binary(op, a, a_shape, b, b_shape, &mut lanes).unwrap();
                binary_with(f, a, a_shape, b, b_shape, &mut block).unwrap();
                for (i, (l, r)) in lanes.iter().zip(&block).enumerate() {
                    assert_eq!(l.to_bits(), r.to_bits(), "{op:?} {a_shape:?} {b_shape:?} at {i}");
                }
            }
        }
    }

    #[test]
    fn binary_ops_on_broadcast_shapes() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[33], &[33]),
            (&[3, 17], &[3, 17]),
            (&[3, 17], &[]),
            (&[], &[3, 17]),
            (&[1], &[17]),
            (&[3, 17], &[17]),
            (&[3, 17], &[3, 1]),
            (&[2, 1, 5], &[3, 1]),
            (&[2, 3, 1, 5], &[1, 3, 4, 1]),
            (&[1, 1, 1], &[1]),
            (&[300, 3], &[300, 1]),
        ];
        for op in ALL_BINARY {
            for (a, b) in cases {
                check_binary(op, a, b);
            }
        }
    }

    #[test]
    fn large_enough_for_rayon() {
        check_binary(BinaryOp::Add, &[4, 300, 200], &[300, 1]);
        check_binary(BinaryOp::Mul, &[2, 300, 300], &[2, 300, 300]);
    }

    #[test]
    fn overflow_and_ane_special_values() {
        let inf = f16::INFINITY;
        let a = [f16::from_f32(60000.0), inf, f16::ZERO, f16::NAN, f16::from_f32(-3.0)];
        let b = [f16::from_f32(10000.0), inf, inf, f16::ONE, f16::ONE];
        let mut out = [f16::ZERO; 5];
        binary(BinaryOp::Add, &a, &[5], &b, &[5], &mut out).unwrap();
        assert_eq!(out[0], inf, "60000 + 10000 overflows");
        assert_eq!(out[3], inf, "NaN + 1 reads NaN as +inf");
        binary(BinaryOp::Sub, &a, &[5], &b, &[5], &mut out).unwrap();
        assert_eq!(out[1].to_bits(), 0, "inf - inf is +0");
        binary(BinaryOp::Mul, &a, &[5], &b, &[5], &mut out).unwrap();
        assert_eq!(out[2].to_bits(), 0, "0 * inf is +0");
        binary(BinaryOp::Maximum, &a, &[5], &b, &[5], &mut out).unwrap();
        assert_eq!(out[3], inf, "maximum(NaN, 1) is +inf");
        let mut u = [f16::ZERO; 5];
        unary(UnaryOp::Sqrt, &a, &mut u).unwrap();
        assert_eq!(u[4].to_bits(), 0, "sqrt(-3) is +0");
        unary(UnaryOp::Log { epsilon: 0.0 }, &a, &mut u).unwrap();
        assert_eq!(u[4].to_bits(), 0, "log(-3) is +0");
        unary(UnaryOp::Sigmoid, &a, &mut u).unwrap();
        assert_eq!(u[3], f16::ONE, "sigmoid(NaN) is 1");
        unary(UnaryOp::Exp, &[f16::from_f32(11.2)], &mut u[..1]).unwrap();
        assert_eq!(u[0], inf, "exp overflows near 11.09");
        unary(UnaryOp::Relu, &a, &mut u).unwrap();
        assert_eq!(u[3], inf, "relu(NaN) is +inf");
        // f32 kernels stay IEEE.
        let mut o32 = [0.0f32];
        binary(BinaryOp::Sub, &[f32::INFINITY], &[1], &[f32::INFINITY], &[1], &mut o32).unwrap();
        assert!(o32[0].is_nan());
    }

    #[test]
    fn denormals_survive() {
        let tiny = f16::from_bits(1); // 2^-24
        let mut out = [f16::ZERO];
        binary(BinaryOp::Add, &[tiny], &[], &[f16::ZERO], &[], &mut out).unwrap();
        assert_eq!(out[0], tiny);
    }

    /// erf by its Maclaurin series in f64 with enough terms (fine for |x| <= 3), or 1 - a
    /// continued fraction for erfc beyond.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() <= 3.0 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * std::f64::consts::FRAC_2_SQRT_PI
        } else {
            let z = x.abs();
            let mut cf = 0.0;
            for n in (1..200).rev() {
                cf = (n as f64 / 2.0) / (z + cf);
            }
            let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + cf);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn erf_accuracy() {
        for i in -600..=600 {
            let x = i as f64 / 100.0;
            let err = (erf64(x) - erf_reference(x)).abs();
            assert!(err < 2e-7, "erf({x}): error {err}");
        }
        // Relative accuracy of the tail that gelu uses.
        for i in 0..=80 {
            let z = i as f64 / 10.0;
            let reference = 1.0 - erf_reference(z);
            if z > 3.0 {
                let mut cf = 0.0;
                for n in (1..200).rev() {
                    cf = (n as f64 / 2.0) / (z + cf);
                }
                let r = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + cf);
                assert!((erfc64(z) / r - 1.0).abs() < 2e-7, "erfc({z})");
            } else {
                assert!((erfc64(z) - reference).abs() < 2e-7, "erfc({z})");
            }
        }
    }

    fn unary_reference(op: UnaryOp, x: f64) -> f64 {
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        match op {
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log { epsilon } => (x + epsilon as f64).ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt { epsilon } => 1.0 / (x + epsilon as f64).sqrt(),
            UnaryOp::Inverse { epsilon } => 1.0 / (x + epsilon as f64),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Sigmoid => sig(x),
            UnaryOp::Silu => x * sig(x),
            UnaryOp::Gelu(GeluMode::Exact) => 0.5 * x * (1.0 + erf_reference(x / 2f64.sqrt())),
            UnaryOp::Gelu(GeluMode::TanhApproximation) => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            UnaryOp::Gelu(GeluMode::SigmoidApproximation) => x * sig(1.702 * x),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Erf => erf_reference(x),
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Round => x.round_ties_even(),
            UnaryOp::Sign => x.signum() * (x != 0.0) as u8 as f64,
            UnaryOp::Square => x * x,
            UnaryOp::Exp2 => x.exp2(),
            // The definitions of coremltools iOS15/activation.py, in f64.
            UnaryOp::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * x
                } else {
                    x
                }
            }
            UnaryOp::Relu6 => x.clamp(0.0, 6.0),
            UnaryOp::SigmoidHard { alpha, beta } => {
                (alpha as f64 * x + beta as f64).clamp(0.0, 1.0)
            }
            UnaryOp::ThresholdedRelu { alpha } => {
                if x < alpha as f64 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Elu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            UnaryOp::Softplus => (1.0 + x.exp()).ln(),
            UnaryOp::ClampedRelu { alpha, beta } => {
                let (a, b) = (alpha as f64, beta as f64);
                x.max(0.0).min(b) + (x.min(0.0) * a).min(b)
            }
            UnaryOp::ScaledTanh { alpha, beta } => alpha as f64 * (beta as f64 * x).tanh(),
            UnaryOp::LinearActivation { alpha, beta } => alpha as f64 * x + beta as f64,
            UnaryOp::Softsign => x / (1.0 + x.abs()),
        }
    }

    #[test]
    fn unary_ops_against_f64() {
        let ops = [
            UnaryOp::Exp,
            UnaryOp::Log { epsilon: 0.0 },
            UnaryOp::Log { epsilon: 0.5 },
            UnaryOp::Sqrt,
            UnaryOp::Rsqrt { epsilon: 1e-12 },
            UnaryOp::Inverse { epsilon: 1e-4 },
            UnaryOp::Tanh,
            UnaryOp::Relu,
            UnaryOp::Sigmoid,
            UnaryOp::Silu,
            UnaryOp::Gelu(GeluMode::Exact),
            UnaryOp::Gelu(GeluMode::TanhApproximation),
            UnaryOp::Gelu(GeluMode::SigmoidApproximation),
            UnaryOp::Abs,
            UnaryOp::Erf,
            UnaryOp::Sin,
            UnaryOp::Cos,
            UnaryOp::Floor,
            UnaryOp::Ceil,
            UnaryOp::Round,
            UnaryOp::Sign,
            UnaryOp::Square,
            UnaryOp::Exp2,
            UnaryOp::LeakyRelu { alpha: 0.01 },
            UnaryOp::LeakyRelu { alpha: -1.5 },
            UnaryOp::Relu6,
            UnaryOp::SigmoidHard { alpha: 0.2, beta: 0.5 },
            UnaryOp::SigmoidHard { alpha: 1.0 / 6.0, beta: 0.5 },
            UnaryOp::ThresholdedRelu { alpha: 1.0 },
            UnaryOp::ThresholdedRelu { alpha: -3.0 },
            UnaryOp::Elu { alpha: 1.0 },
            UnaryOp::Elu { alpha: 0.3 },
            UnaryOp::Softplus,
            UnaryOp::ClampedRelu { alpha: 0.1, beta: 6.0 },
            UnaryOp::ClampedRelu { alpha: 2.0, beta: -1.0 },
            UnaryOp::ScaledTanh { alpha: 1.7159, beta: 0.6667 },
            UnaryOp::LinearActivation { alpha: 0.75, beta: -2.0 },
            UnaryOp::LinearActivation { alpha: 0.1, beta: 0.0 },
            UnaryOp::Softsign,
        ];
        let raw = values(1000, 5);
        for op in ops {
            let positive = matches!(
                op,
                UnaryOp::Log { .. }
                    | UnaryOp::Sqrt
                    | UnaryOp::Rsqrt { .. }
                    | UnaryOp::Inverse { .. }
            );
            let x: Vec<f16> = raw
                .iter()
                .map(|v| if positive { v.abs() * 8.0 + 0.01 } else { v * 8.0 })
                .map(f16::from_f32)
                .collect();
            let want: Vec<f64> = x.iter().map(|v| unary_reference(op, v.to_f64())).collect();
            let mut out = vec![f16::ZERO; x.len()];
            unary(op, &x, &mut out).unwrap();
            // f32 evaluation (relative error ~1e-6) then one rounding: 1 fp16 ulp, plus an
            // absolute 1e-6 for results near zero (cancellation in gelu/silu tails).
            assert_close_f16(&out, &want, 1.0, 1e-6, &format!("{op:?}"));
        }
    }

    #[test]
    fn activations_at_infinities() {
        let x = [f16::NEG_INFINITY, f16::INFINITY];
        let mut out = [f16::ZERO; 2];
        for op in [
            UnaryOp::Silu,
            UnaryOp::Gelu(GeluMode::Exact),
            UnaryOp::Gelu(GeluMode::TanhApproximation),
            UnaryOp::Gelu(GeluMode::SigmoidApproximation),
        ] {
            unary(op, &x, &mut out).unwrap();
            assert_eq!(out[0].to_f32(), 0.0, "{op:?}(-inf)");
            assert_eq!(out[1], f16::INFINITY, "{op:?}(inf)");
        }
    }

    #[test]
    fn parametric_activations_at_special_values() {
        let (inf, ninf) = (f16::INFINITY, f16::NEG_INFINITY);
        let x = [ninf, inf, f16::NAN, f16::ZERO, f16::from_f32(-1e-4)];
        let run = |op: UnaryOp| {
            let mut out = [f16::ZERO; 5];
            unary(op, &x, &mut out).unwrap();
            out.map(|v| v.to_f32())
        };
        // NaN reads as +inf; the limits at the infinities.
        assert_eq!(run(UnaryOp::Relu6)[..4], [0.0, 6.0, 6.0, 0.0]);
        assert_eq!(run(UnaryOp::Softsign)[..4], [-1.0, 1.0, 1.0, 0.0]);
        assert_eq!(run(UnaryOp::Softplus)[..2], [0.0, f32::INFINITY]);
        assert_eq!(run(UnaryOp::Elu { alpha: 0.5 })[..3], [-0.5, f32::INFINITY, f32::INFINITY]);
        let s = run(UnaryOp::SigmoidHard { alpha: 0.2, beta: 0.5 });
        assert_eq!(s[..4], [0.0, 1.0, 1.0, 0.5]);
        assert_eq!(run(UnaryOp::ScaledTanh { alpha: 2.0, beta: 0.5 })[..2], [-2.0, 2.0]);
        assert_eq!(
            run(UnaryOp::ClampedRelu { alpha: 0.5, beta: 6.0 })[..3],
            [f32::NEG_INFINITY, 6.0, 6.0]
        );
        // A zero slope times -inf is indeterminate: +0, as the ANE stores it.
        assert_eq!(run(UnaryOp::LeakyRelu { alpha: 0.0 })[0].to_bits(), 0);
        // elu near 0 keeps its relative accuracy (e^x - 1 without cancellation).
        let tiny = run(UnaryOp::Elu { alpha: 1.0 })[4];
        let want = x[4].to_f64().exp_m1();
        assert!((tiny as f64 - want).abs() <= 2f64.powi(-24), "elu(-1e-4) = {tiny}");
        // f32 kernels keep IEEE NaN.
        let mut o = [0.0f32];
        unary(UnaryOp::Relu6, &[f32::NAN], &mut o).unwrap();
        assert!(o[0].is_nan());
        unary(UnaryOp::ThresholdedRelu { alpha: 1.0 }, &[f32::NAN], &mut o).unwrap();
        assert!(o[0].is_nan());
    }

    #[test]
    fn length_errors() {
        let mut out = [0.0f32; 2];
        assert!(unary(UnaryOp::Exp, &[0.0f32; 3], &mut out).is_err());
        assert!(binary(BinaryOp::Add, &[0.0f32; 3], &[3], &[0.0f32; 2], &[2], &mut out).is_err());
        assert!(binary(BinaryOp::Add, &[0.0f32; 3], &[3], &[0.0f32; 3], &[3], &mut out).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::sim::kernels::numel;
    use proptest::prelude::*;

    /// Two shapes that broadcast: each dim of the common shape is kept or set to 1 per operand,
    /// and leading dims may be dropped.
    fn broadcastable() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        prop::collection::vec((1usize..5, any::<bool>(), any::<bool>()), 0..=4).prop_flat_map(
            |dims| {
                let a: Vec<usize> = dims.iter().map(|&(d, ka, _)| if ka { d } else { 1 }).collect();
                let b: Vec<usize> = dims.iter().map(|&(d, _, kb)| if kb { d } else { 1 }).collect();
                let r = dims.len();
                (Just(a), Just(b), 0..=r, 0..=r).prop_map(|(a, b, da, db)| {
                    (a[da.min(a.len())..].to_vec(), b[db.min(b.len())..].to_vec())
                })
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn broadcast_add_matches_index_arithmetic((a_shape, b_shape) in broadcastable()) {
            let a: Vec<f32> = (0..numel(&a_shape)).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..numel(&b_shape)).map(|i| (i * 1000) as f32).collect();
            let shape = broadcast_shapes(&a_shape, &b_shape).unwrap();
            let mut out = vec![0.0f32; numel(&shape)];
            binary(BinaryOp::Add, &a, &a_shape, &b, &b_shape, &mut out).unwrap();
            let sa = broadcast_strides(&a_shape, &shape);
            let sb = broadcast_strides(&b_shape, &shape);
            for (lin, got) in out.iter().enumerate() {
                let (mut rest, mut oa, mut ob) = (lin, 0, 0);
                for d in (0..shape.len()).rev() {
                    let i = rest % shape[d];
                    rest /= shape[d];
                    oa += i * sa[d];
                    ob += i * sb[d];
                }
                prop_assert_eq!(*got, a[oa] + b[ob]);
            }
        }
    }
}
