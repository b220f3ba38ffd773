//! The parts of a training step that stay on the CPU, in f32, on channel-major activations
//! (`[channels, tokens]`, the device's layout; the classifier's logits are token-major):
//! embedding and its gradient, RMSNorm forward and backward, the cross-entropy, and the
//! GEMM behind the classifier and the weight gradients.

use gemm::Parallelism;
use rayon::prelude::*;

/// `out[:, t] = table[ids[t]]` for a `[vocab, dim]` table: a `[dim, tokens]` matrix.
pub fn embed(table: &[f32], dim: usize, ids: &[u32], out: &mut [f32]) {
    let t = ids.len();
    debug_assert_eq!(out.len(), dim * t);
    for (col, &id) in ids.iter().enumerate() {
        let row = &table[id as usize * dim..(id as usize + 1) * dim];
        for (c, &v) in row.iter().enumerate() {
            out[c * t + col] = v;
        }
    }
}

/// Adds `scale` times each token's gradient column of `dx` (`[dim, tokens]`) to its
/// embedding row.
pub fn embed_backward(dx: &[f32], dim: usize, ids: &[u32], scale: f32, grad_table: &mut [f32]) {
    let t = ids.len();
    for (col, &id) in ids.iter().enumerate() {
        let row = &mut grad_table[id as usize * dim..(id as usize + 1) * dim];
        for (c, g) in row.iter_mut().enumerate() {
            *g += scale * dx[c * t + col];
        }
    }
}

/// RMSNorm over the channels of each token: `y[c, t] = x[c, t] * r[t] * w[c]` with
/// `r[t] = 1 / sqrt(mean_c x[c, t]^2 + eps)`. Returns `r` (the backward pass needs it).
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, tokens: usize, y: &mut [f32]) -> Vec<f32> {
    let d = w.len();
    let mut sums = vec![0.0f32; tokens];
    for row in x.chunks_exact(tokens) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v * v;
        }
    }
    let r: Vec<f32> = sums.iter().map(|&s| 1.0 / (s / d as f32 + eps).sqrt()).collect();
    for ((yrow, xrow), &wc) in y.chunks_exact_mut(tokens).zip(x.chunks_exact(tokens)).zip(w) {
        for ((yv, &xv), &rv) in yrow.iter_mut().zip(xrow).zip(&r) {
            *yv = xv * rv * wc;
        }
    }
    r
}

/// RMSNorm backward. With `r = 1/rms(x)`, the input gradient is
/// `dx_j = r w_j dy_j - (r^3 / d) x_j sum_k(dy_k w_k x_k)`: the correction term is not
/// multiplied by `w_j` (the anchor's cpu_ops.h does so, a bug noted in REFERENCE.md §7).
/// Adds into `dx` (a residual gradient is usually there already) and into `dw`.
pub fn rmsnorm_backward(
    x: &[f32],
    w: &[f32],
    r: &[f32],
    dy: &[f32],
    tokens: usize,
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let d = w.len();
    let mut dots = vec![0.0f32; tokens];
    for ((xrow, dyrow), &wc) in x.chunks_exact(tokens).zip(dy.chunks_exact(tokens)).zip(w) {
        for ((s, &xv), &g) in dots.iter_mut().zip(xrow).zip(dyrow) {
            *s += g * wc * xv;
        }
    }
    let coef: Vec<f32> = r.iter().zip(&dots).map(|(&rv, &s)| rv * rv * rv * s / d as f32).collect();
    let rows = x.chunks_exact(tokens).zip(dy.chunks_exact(tokens)).zip(dx.chunks_exact_mut(tokens));
    for (((xrow, dyrow), dxrow), (&wc, dwc)) in rows.zip(w.iter().zip(dw.iter_mut())) {
        let mut acc = 0.0f32;
        for (((&xv, &g), out), (&rv, &cv)) in
            xrow.iter().zip(dyrow).zip(dxrow.iter_mut()).zip(r.iter().zip(&coef))
        {
            *out += rv * wc * g - cv * xv;
            acc += g * xv * rv;
        }
        *dwc += acc;
    }
}

/// Softmax cross-entropy over token-major `logits` (`[tokens, vocab]`), in place and in
/// parallel over tokens: on return `logits` holds `scale * (softmax - onehot(target))`, the
/// loss gradient times `scale`. Returns the summed loss (not averaged) in f64.
pub fn cross_entropy(logits: &mut [f32], targets: &[u32], scale: f32) -> f64 {
    let vocab = logits.len() / targets.len().max(1);
    logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter())
        .map(|(row, &target)| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0.0f32;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let p = row[target as usize] / sum;
            let k = scale / sum;
            for v in row.iter_mut() {
                *v *= k;
            }
            row[target as usize] -= scale;
            -f64::from(p.max(f32::MIN_POSITIVE)).ln()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

/// A row-major matrix operand, possibly read transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// The `rows * cols` values, row-major.
    pub data: &'a [f32],
    /// Rows as stored.
    pub rows: usize,
    /// Columns as stored.
    pub cols: usize,
    /// Read as its transpose (`cols x rows`).
    pub transposed: bool,
}

impl<'a> Mat<'a> {
    /// `data` as a `rows x cols` row-major matrix. Panics when `data.len() != rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        assert_eq!(data.len(), rows * cols, "matrix data does not match its shape");
        Mat { data, rows, cols, transposed: false }
    }

    /// The same data read as its transpose (no copy).
    pub fn t(self) -> Mat<'a> {
        Mat { transposed: !self.transposed, ..self }
    }

    fn shape(&self) -> (usize, usize) {
        if self.transposed { (self.cols, self.rows) } else { (self.rows, self.cols) }
    }

    /// (row stride, column stride) of the matrix as read.
    fn strides(&self) -> (isize, isize) {
        if self.transposed { (1, self.cols as isize) } else { (self.cols as isize, 1) }
    }
}

/// `dst (m x n, row-major) = [dst +] scale * a * b` in f32: `accumulate` adds to `dst`,
/// else overwrites it. `threads` > 1 lets gemm use that many rayon threads.
pub fn matmul(
    dst: &mut [f32],
    a: Mat<'_>,
    b: Mat<'_>,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "matmul: inner dimensions differ");
    assert_eq!(dst.len(), m * n, "matmul: destination has the wrong size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: `Mat::new` checked that each operand's slice holds rows x cols values, and the
    // strides above address exactly those (as read, m x k and k x n); dst holds m x n
    // values, is borrowed mutably and so cannot alias the operands. With read_dst false
    // gemm never reads dst's old contents.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_with_transposes_and_accumulation() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|v| (v as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![0.0; m * n];
        matmul(&mut got, Mat::new(&a, m, k), Mat::new(&b, k, n), 1.0, false, 1);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        // a^T stored as [k, m], read transposed.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut acc = vec![1.0; m * n];
        matmul(&mut acc, Mat::new(&at, k, m).t(), Mat::new(&b, k, n), 0.5, true, 2);
        for (g, w) in acc.iter().zip(&want) {
            assert!((g - (0.5 * w + 1.0)).abs() < 1e-5);
        }
    }

    #[test]
    fn cross_entropy_gradient_sums_to_zero_per_token() {
        let (vocab, t) = (6, 4);
        let mut logits: Vec<f32> = (0..vocab * t).map(|v| (v as f32 * 0.7).sin() * 3.0).collect();
        let orig = logits.clone();
        let targets = [0u32, 5, 2, 2];
        let loss = cross_entropy(&mut logits, &targets, 2.0);
        let mut want = 0.0f64;
        for (tok, &tg) in targets.iter().enumerate() {
            let row: Vec<f64> =
                orig[tok * vocab..(tok + 1) * vocab].iter().map(|&v| f64::from(v)).collect();
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            want += lse - row[tg as usize];
            let grad = &logits[tok * vocab..(tok + 1) * vocab];
            assert!(grad.iter().sum::<f32>().abs() < 1e-5);
            for (v, (&g, &x)) in grad.iter().zip(&row).enumerate() {
                let p = (x - lse).exp();
                let onehot = if v == tg as usize { 1.0 } else { 0.0 };
                assert!((f64::from(g) - 2.0 * (p - onehot)).abs() < 1e-5);
            }
        }
        assert!((loss - want).abs() < 1e-5);
    }

    #[test]
    fn rmsnorm_backward_matches_finite_differences() {
        let (d, t) = (6, 3);
        let x: Vec<f32> = (0..d * t).map(|v| (v as f32 * 0.9).sin()).collect();
        let w: Vec<f32> = (0..d).map(|v| 0.5 + v as f32 * 0.3).collect();
        let dy: Vec<f32> = (0..d * t).map(|v| (v as f32 * 0.4).cos()).collect();
        let mut y = vec![0.0; d * t];
        let r = rmsnorm(&x, &w, 1e-5, t, &mut y);
        let mut dx = vec![0.0; d * t];
        let mut dw = vec![0.0; d];
        rmsnorm_backward(&x, &w, &r, &dy, t, &mut dx, &mut dw);
        let f = |x: &[f32], w: &[f32]| -> f64 {
            let mut y = vec![0.0; d * t];
            rmsnorm(x, w, 1e-5, t, &mut y);
            y.iter().zip(&dy).map(|(a, b)| f64::from(a * b)).sum()
        };
        let h = 1e-2;
        for i in 0..d * t {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (f(&xp, &w) - f(&xm, &w)) / (2.0 * f64::from(h));
            assert!((fd - f64::from(dx[i])).abs() < 2e-3, "dx[{i}]: {fd} vs {}", dx[i]);
        }
        for i in 0..d {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[i] += h;
            wm[i] -= h;
            let fd = (f(&x, &wp) - f(&x, &wm)) / (2.0 * f64::from(h));
            assert!((fd - f64::from(dw[i])).abs() < 2e-3, "dw[{i}]: {fd} vs {}", dw[i]);
        }
    }

    #[test]
    fn embedding_round_trip() {
        let (vocab, d) = (4, 3);
        let table: Vec<f32> = (0..vocab * d).map(|v| v as f32).collect();
        let ids = [2u32, 0, 2];
        let mut out = vec![0.0; d * ids.len()];
        embed(&table, d, &ids, &mut out);
        assert_eq!(out, vec![6.0, 0.0, 6.0, 7.0, 1.0, 7.0, 8.0, 2.0, 8.0]);
        let mut g = vec![0.0; vocab * d];
        embed_backward(&out, d, &ids, 0.5, &mut g);
        assert_eq!(&g[6..9], &[6.0, 7.0, 8.0]);
        assert_eq!(&g[0..3], &[0.0, 0.5, 1.0]);
    }
}
