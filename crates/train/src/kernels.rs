//! The training kernels that run on the device: four MIL programs, built with the typed
//! builder and shared by every layer, whose weights travel in their inputs (dynamic
//! weights, REFERENCE.md §2), so that a training run compiles exactly [`KERNEL_COUNT`]
//! programs however many layers and steps it has.
//!
//! Activations use the ANE's native layout `[1, channels, 1, tokens]`, where `tokens` is
//! `batch * seq_len` (sequences side by side along the spatial axis). Each kernel's first
//! input is a packed input `[1, dim, 1, cols]`: activations first, then each weight as a
//! `[dim, n]` region (see [`PackedLayout`]). A region holds `W^T` for a weight whose input
//! side is `dim` (wq, wk, wv, wo, w1, w3) and `W` itself for w2 (`[dim, hidden]`), so that
//! every weight has `dim` rows; forward and backward kernels read the same regions and pick
//! the orientation with matmul's `transpose_x`.
//!
//! | kernel     | inputs                                      | outputs                 |
//! |------------|---------------------------------------------|-------------------------|
//! | `attn_fwd` | xn \| wq wk wv wo                           | y, o, q, k, v           |
//! | `ffn_fwd`  | xn \| w1 w3 w2                              | y, h1, h3, g            |
//! | `attn_bwd` | dy \| q k v \| wq wk wv wo                  | dx, dq, dk, dv          |
//! | `ffn_bwd`  | dy \| w1 w3 w2; h = h1 \| h3                | dx, dh1, dh3            |
//!
//! `q` and `k` leave `attn_fwd` with RoPE applied; `attn_bwd` takes them so, recomputes the
//! attention probabilities, and returns `dq`/`dk` with RoPE undone (gradients of the
//! projections' outputs). Causal masking is an explicit add of [`MASK_VALUE`]: the ANE
//! ignores `scaled_dot_product_attention`'s `attn_mask` (REFERENCE.md §2), so the kernels
//! spell attention out as matmul, mask add, softmax, matmul.

use anemone_mil::builder::{BuildError, Builder, BuiltProgram, FunctionBuilder, PackedLayout, Var};
use anemone_mil::ops::OpKind;
use anemone_mil::{DType, TensorType};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// How many programs a training run compiles.
pub const KERNEL_COUNT: usize = 4;

/// Masked attention scores get this added. Not -inf (fp16 softmax of a row of -inf is NaN)
/// and not -1e9 (overflows fp16): REFERENCE.md §2 reports -40000 working on the ANE.
pub const MASK_VALUE: f32 = -40000.0;

/// The four device kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// `attn_fwd`: QKV projections, RoPE, causal attention, output projection.
    AttnFwd,
    /// `ffn_fwd`: the SwiGLU FFN, `W2 (silu(W1 x) * W3 x)`.
    FfnFwd,
    /// `attn_bwd`: attention's input gradient and the gradients of q, k, v.
    AttnBwd,
    /// `ffn_bwd`: the FFN's input gradient and the gradients of h1 and h3.
    FfnBwd,
}

impl KernelKind {
    /// Every kernel, forward ones first.
    pub const ALL: [KernelKind; KERNEL_COUNT] =
        [KernelKind::AttnFwd, KernelKind::FfnFwd, KernelKind::AttnBwd, KernelKind::FfnBwd];

    /// The kernel's name in messages and reports (`attn_fwd`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::AttnFwd => "attn_fwd",
            KernelKind::FfnFwd => "ffn_fwd",
            KernelKind::AttnBwd => "attn_bwd",
            KernelKind::FfnBwd => "ffn_bwd",
        }
    }

    /// Forward kernels are all that evaluation and generation need.
    pub fn is_forward(self) -> bool {
        matches!(self, KernelKind::AttnFwd | KernelKind::FfnFwd)
    }
}

/// The sizes a kernel is built for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelShape {
    /// Model width ([`ModelConfig::dim`]).
    pub dim: usize,
    /// FFN hidden width ([`ModelConfig::hidden_dim`]).
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Channels per head (`dim / heads`).
    pub head_dim: usize,
    /// Tokens per sequence; RoPE positions and the causal mask restart every `seq` tokens.
    pub seq: usize,
    /// Sequences per evaluation.
    pub batch: usize,
    /// RoPE base.
    pub rope_theta: f32,
}

impl KernelShape {
    /// The shape for `config` with `batch` sequences per evaluation.
    pub fn new(config: &ModelConfig, batch: usize) -> KernelShape {
        KernelShape {
            dim: config.dim,
            hidden: config.hidden_dim,
            heads: config.n_heads,
            head_dim: config.head_dim(),
            seq: config.seq_len,
            batch,
            rope_theta: config.rope_theta,
        }
    }

    /// Tokens per evaluation: the spatial size of every activation.
    pub fn tokens(&self) -> usize {
        self.batch * self.seq
    }
}

/// A built kernel: the program, its constants (RoPE tables, mask) as weight files, and
/// where each region of its inputs sits.
#[derive(Clone, Debug)]
pub struct KernelProgram {
    /// Which kernel.
    pub kind: KernelKind,
    /// The sizes it was built for.
    pub shape: KernelShape,
    /// The MIL program and its weight files (RoPE tables, causal mask).
    pub built: BuiltProgram,
    /// One layout per input, in declaration order.
    pub inputs: Vec<PackedLayout>,
}

impl KernelProgram {
    /// The layout of input `name`.
    pub fn input(&self, name: &str) -> Option<&PackedLayout> {
        self.inputs.iter().find(|l| l.input == name)
    }
}

/// Builds one kernel for `shape`.
pub fn build(kind: KernelKind, shape: KernelShape) -> Result<KernelProgram> {
    let err = |e: BuildError| Error::Kernel { kernel: kind.name(), message: e.to_string() };
    let mut b = Builder::new();
    let inputs = {
        let mut f = b.function("main");
        let mut k = Kernel { f: &mut f, s: shape };
        let inputs = match kind {
            KernelKind::AttnFwd => k.attn_fwd(),
            KernelKind::FfnFwd => k.ffn_fwd(),
            KernelKind::AttnBwd => k.attn_bwd(),
            KernelKind::FfnBwd => k.ffn_bwd(),
        }
        .map_err(err)?;
        f.finish();
        inputs
    };
    let built = b.build().map_err(err)?;
    Ok(KernelProgram { kind, shape, built, inputs })
}

/// Angle of RoPE pair `pair` (over all heads) at token column `token`: llama2.c's
/// `pos * theta^(-2i/head_dim)` with `i` the pair's index within its head.
pub fn rope_angle(shape: &KernelShape, pair: usize, token: usize) -> f64 {
    let i = pair % (shape.head_dim / 2);
    let pos = token % shape.seq;
    pos as f64 * f64::from(shape.rope_theta).powf(-2.0 * i as f64 / shape.head_dim as f64)
}

/// Builds one kernel for a model config and a batch of sequences per evaluation.
pub fn build_for(kind: KernelKind, config: &ModelConfig, batch: usize) -> Result<KernelProgram> {
    build(kind, KernelShape::new(config, batch))
}

type Built<T> = std::result::Result<T, BuildError>;

struct Kernel<'f, 'b> {
    f: &'f mut FunctionBuilder<'b>,
    s: KernelShape,
}

fn dim(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Kernel<'_, '_> {
    fn t(&self) -> usize {
        self.s.tokens()
    }

    /// `[1, 1, rows, T]` or `[1, rows, 1, T]` -> `[1, rows, 1, T]`.
    fn as_activation(&mut self, x: &Var, rows: usize) -> Built<Var> {
        if x.shape() == [1, rows, 1, self.t()] {
            return Ok(x.clone());
        }
        self.f.reshape(x, &[1, dim(rows), 1, dim(self.t())])
    }

    /// `y = M x` where `m` is a `[1, 1, dim, n]` region and `x` `[1, r, 1, T]` with `r` =
    /// `dim` (`transpose` = true, y = M^T x) or `n` (false, y = M x).
    fn region_matmul(&mut self, m: &Var, x: &Var, transpose: bool) -> Built<Var> {
        let (rows, cols) = (m.shape()[2], m.shape()[3]);
        let (k, out) = if transpose { (rows, cols) } else { (cols, rows) };
        let x4 = self.f.reshape(x, &[1, 1, dim(k), dim(self.t())])?;
        let y = self.f.matmul(m, &x4, transpose, false)?;
        self.f.reshape(&y, &[1, dim(out), 1, dim(self.t())])
    }

    /// `[1, D, 1, T]` (channel = head * head_dim + i, token = b * seq + pos) ->
    /// `[B, heads, seq, head_dim]`.
    fn split_heads(&mut self, x: &Var) -> Built<Var> {
        let s = self.s;
        let x = self.f.reshape(x, &[dim(s.heads), dim(s.head_dim), dim(s.batch), dim(s.seq)])?;
        self.f.transpose(&x, &[2, 0, 3, 1])
    }

    /// The inverse of [`Kernel::split_heads`].
    fn merge_heads(&mut self, x: &Var) -> Built<Var> {
        let s = self.s;
        let x = self.f.transpose(x, &[1, 3, 0, 2])?;
        self.f.reshape(&x, &[1, dim(s.dim), 1, dim(self.t())])
    }

    /// RoPE on `[1, D, 1, T]`: channel pairs (2p, 2p+1) rotate by their angle; `inverse`
    /// rotates back (the transpose of the rotation, i.e. its backward pass).
    fn rope(&mut self, x: &Var, tables: &(Var, Var), inverse: bool) -> Built<Var> {
        let (pairs, t) = (dim(self.s.dim / 2), dim(self.t()));
        let x = self.f.reshape(x, &[1, pairs, 2, t])?;
        let a = self.f.slice_by_size(&x, &[0, 0, 0, 0], &[1, pairs, 1, t])?;
        let b = self.f.slice_by_size(&x, &[0, 0, 1, 0], &[1, pairs, 1, t])?;
        let (cos, sin) = tables;
        let (ac, as_) = (self.f.mul(&a, cos)?, self.f.mul(&a, sin)?);
        let (bc, bs) = (self.f.mul(&b, cos)?, self.f.mul(&b, sin)?);
        let (ra, rb) = if inverse {
            (self.f.add(&ac, &bs)?, self.f.binary(OpKind::Sub, &bc, &as_)?)
        } else {
            (self.f.binary(OpKind::Sub, &ac, &bs)?, self.f.add(&as_, &bc)?)
        };
        let r = self.f.concat(&[ra, rb], 2, false)?;
        self.f.reshape(&r, &[1, dim(self.s.dim), 1, t])
    }

    /// cos and sin tables `[1, D/2, 1, T]` as fp16 constants in the weight file.
    fn rope_tables(&mut self) -> Built<(Var, Var)> {
        let (pairs, t) = (self.s.dim / 2, self.t());
        let mut cos = Vec::with_capacity(pairs * t);
        let mut sin = Vec::with_capacity(pairs * t);
        for p in 0..pairs {
            for tok in 0..t {
                let angle = rope_angle(&self.s, p, tok);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let ty = TensorType::new(DType::Fp16, [1, pairs, 1, t]);
        Ok((self.f.weight("rope_cos", ty.clone(), &cos)?, self.f.weight("rope_sin", ty, &sin)?))
    }

    /// The causal mask `[1, 1, seq, seq]`: 0 where key <= query, [`MASK_VALUE`] above.
    fn causal_mask(&mut self) -> Built<Var> {
        let n = self.s.seq;
        let values: Vec<f32> =
            (0..n * n).map(|i| if i % n <= i / n { 0.0 } else { MASK_VALUE }).collect();
        self.f.weight("causal_mask", TensorType::new(DType::Fp16, [1, 1, n, n]), &values)
    }

    /// softmax(Q K^T / sqrt(hd) + mask) for `[B, H, seq, hd]` operands.
    fn probabilities(&mut self, q: &Var, k: &Var) -> Built<Var> {
        let scale = self.f.scalar_fp16("scale", 1.0 / (self.s.head_dim as f32).sqrt());
        let mask = self.causal_mask()?;
        let scores = self.f.matmul(q, k, false, true)?;
        let scores = self.f.mul(&scores, &scale)?;
        let scores = self.f.add(&scores, &mask)?;
        self.f.softmax(&scores, -1)
    }

    fn output(&mut self, v: &Var, name: &str) -> Built<()> {
        self.f.output_named(v, name).map(|_| ())
    }

    fn attn_fwd(&mut self) -> Built<Vec<PackedLayout>> {
        let d = self.s.dim;
        let (xn, w, layout) = self.f.packed_input(
            "x",
            DType::Fp16,
            d,
            self.t(),
            &[("wq", d), ("wk", d), ("wv", d), ("wo", d)],
        )?;
        let tables = self.rope_tables()?;
        let q = self.region_matmul(&w[0], &xn, true)?;
        let k = self.region_matmul(&w[1], &xn, true)?;
        let v = self.region_matmul(&w[2], &xn, true)?;
        let q = self.rope(&q, &tables, false)?;
        let k = self.rope(&k, &tables, false)?;
        let (qh, kh, vh) = (self.split_heads(&q)?, self.split_heads(&k)?, self.split_heads(&v)?);
        let p = self.probabilities(&qh, &kh)?;
        let oh = self.f.matmul(&p, &vh, false, false)?;
        let o = self.merge_heads(&oh)?;
        let y = self.region_matmul(&w[3], &o, true)?;
        self.output(&y, "y")?;
        self.output(&o, "o")?;
        self.output(&q, "q")?;
        self.output(&k, "k")?;
        self.output(&v, "v")?;
        Ok(vec![layout])
    }

    fn ffn_fwd(&mut self) -> Built<Vec<PackedLayout>> {
        let (d, h) = (self.s.dim, self.s.hidden);
        let (xn, w, layout) = self.f.packed_input(
            "x",
            DType::Fp16,
            d,
            self.t(),
            &[("w1", h), ("w3", h), ("w2", h)],
        )?;
        let h1 = self.region_matmul(&w[0], &xn, true)?;
        let h3 = self.region_matmul(&w[1], &xn, true)?;
        let act = self.f.unary(OpKind::Silu, &h1)?;
        let g = self.f.mul(&act, &h3)?;
        let y = self.region_matmul(&w[2], &g, false)?;
        self.output(&y, "y")?;
        self.output(&h1, "h1")?;
        self.output(&h3, "h3")?;
        self.output(&g, "g")?;
        Ok(vec![layout])
    }

    fn attn_bwd(&mut self) -> Built<Vec<PackedLayout>> {
        let (d, t) = (self.s.dim, self.t());
        let (dy, w, layout) = self.f.packed_input(
            "dy",
            DType::Fp16,
            d,
            t,
            &[("q", t), ("k", t), ("v", t), ("wq", d), ("wk", d), ("wv", d), ("wo", d)],
        )?;
        let tables = self.rope_tables()?;
        let (q, k, v) = (self.as_activation(&w[0], d)?, self.as_activation(&w[1], d)?, {
            self.as_activation(&w[2], d)?
        });
        // do = Wo^T dy: the region holds Wo^T.
        let d_o = self.region_matmul(&w[6], &dy, false)?;
        let (qh, kh, vh) = (self.split_heads(&q)?, self.split_heads(&k)?, self.split_heads(&v)?);
        let doh = self.split_heads(&d_o)?;
        let p = self.probabilities(&qh, &kh)?;
        let dvh = self.f.matmul(&p, &doh, true, false)?;
        let dp = self.f.matmul(&doh, &vh, false, true)?;
        // Softmax backward: dS = P * (dP - rowsum(P * dP)), then the 1/sqrt(hd) scale.
        let pdp = self.f.mul(&p, &dp)?;
        let rows = self.f.reduce(OpKind::ReduceSum, &pdp, &[-1], true)?;
        let centered = self.f.binary(OpKind::Sub, &dp, &rows)?;
        let ds = self.f.mul(&p, &centered)?;
        let scale = self.f.scalar_fp16("scale_bwd", 1.0 / (self.s.head_dim as f32).sqrt());
        let ds = self.f.mul(&ds, &scale)?;
        let dqh = self.f.matmul(&ds, &kh, false, false)?;
        let dkh = self.f.matmul(&ds, &qh, true, false)?;
        let dq = self.merge_heads(&dqh)?;
        let dk = self.merge_heads(&dkh)?;
        let dv = self.merge_heads(&dvh)?;
        let dq = self.rope(&dq, &tables, true)?;
        let dk = self.rope(&dk, &tables, true)?;
        // dxn = Wq^T dq + Wk^T dk + Wv^T dv: the regions hold the transposes.
        let dxq = self.region_matmul(&w[3], &dq, false)?;
        let dxk = self.region_matmul(&w[4], &dk, false)?;
        let dxv = self.region_matmul(&w[5], &dv, false)?;
        let dx = self.f.add(&dxq, &dxk)?;
        let dx = self.f.add(&dx, &dxv)?;
        self.output(&dx, "dx")?;
        self.output(&dq, "dq")?;
        self.output(&dk, "dk")?;
        self.output(&dv, "dv")?;
        Ok(vec![layout])
    }

    fn ffn_bwd(&mut self) -> Built<Vec<PackedLayout>> {
        let (d, h, t) = (self.s.dim, self.s.hidden, self.t());
        let (dy, w, layout) =
            self.f.packed_input("dy", DType::Fp16, d, t, &[("w1", h), ("w3", h), ("w2", h)])?;
        // The forward's h1 and h3 side by side: `[1, hidden, 1, 2T]`.
        let saved = self.f.input("h", TensorType::new(DType::Fp16, [1, h, 1, 2 * t]));
        let h1 = self.f.slice_by_size(&saved, &[0, 0, 0, 0], &[1, dim(h), 1, dim(t)])?;
        let h3 = self.f.slice_by_size(&saved, &[0, 0, 0, dim(t)], &[1, dim(h), 1, dim(t)])?;
        // dg = W2^T dy: the region holds W2 itself.
        let dg = self.region_matmul(&w[2], &dy, true)?;
        let sig = self.f.unary(OpKind::Sigmoid, &h1)?;
        let act = self.f.mul(&h1, &sig)?;
        let dh3 = self.f.mul(&dg, &act)?;
        let dact = self.f.mul(&dg, &h3)?;
        // silu'(z) = s (1 + z (1 - s)), s = sigmoid(z).
        let one = self.f.scalar_fp16("one", 1.0);
        let one_minus = self.f.binary(OpKind::Sub, &one, &sig)?;
        let z_one_minus = self.f.mul(&h1, &one_minus)?;
        let inner = self.f.add(&z_one_minus, &one)?;
        let slope = self.f.mul(&sig, &inner)?;
        let dh1 = self.f.mul(&dact, &slope)?;
        let dx1 = self.region_matmul(&w[0], &dh1, false)?;
        let dx3 = self.region_matmul(&w[1], &dh3, false)?;
        let dx = self.f.add(&dx1, &dx3)?;
        self.output(&dx, "dx")?;
        self.output(&dh1, "dh1")?;
        self.output(&dh3, "dh3")?;
        let saved_layout = PackedLayout {
            input: saved.name().to_string(),
            dtype: DType::Fp16,
            channels: h,
            width: 2 * t,
            regions: vec![
                anemone_mil::builder::PackedRegion { name: "h1".into(), offset: 0, cols: t },
                anemone_mil::builder::PackedRegion { name: "h3".into(), offset: t, cols: t },
            ],
        };
        Ok(vec![layout, saved_layout])
    }
}
