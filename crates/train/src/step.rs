//! One training step's forward and backward pass across the device and the CPU.
//!
//! [`Engine`] owns the device side: the four kernels compiled once ([`crate::kernels`]) and,
//! for every layer, its own loaded instance of each (identical programs hit the device's
//! compile cache, so they cost no compile) whose packed inputs hold that layer's weights.
//! Weights are staged once per optimizer step ([`Engine::stage_weights`]); a micro-batch
//! then writes only activations, as the anchor does (REFERENCE.md §7).
//!
//! The CPU side follows the anchor's split: embedding, RMSNorm, residuals, classifier and
//! cross-entropy, and every weight gradient as an f32 GEMM. Weight gradients run on a
//! worker thread while the device computes the next layer's input gradients.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anemone::{Device, Model};
use anemone_mil::builder::PackedLayout;
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::config::ModelConfig;
use crate::cpu::{self, Mat};
use crate::error::{Error, Result};
use crate::kernels::{self, KernelKind, KernelProgram, KernelShape};
use crate::params::{Params, Tensor};

/// Where the time of a pass went. `cpu` is the main thread's own work (and waiting for the
/// weight-gradient worker at the end); weight gradients overlapping device work are not
/// counted twice.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Inside the device's evaluate.
    pub device: Duration,
    /// Writing inputs to and reading outputs from device surfaces (with fp16 conversion).
    pub copy: Duration,
    /// Everything else.
    pub cpu: Duration,
}

impl Timing {
    /// Device, copy and CPU time together.
    pub fn total(&self) -> Duration {
        self.device + self.copy + self.cpu
    }

    /// Adds `other`'s times to these, part by part.
    pub fn add(&mut self, other: &Timing) {
        self.device += other.device;
        self.copy += other.copy;
        self.cpu += other.cpu;
    }
}

/// A layer's loaded kernels.
struct LayerModels {
    attn_fwd: Model,
    ffn_fwd: Model,
    /// Absent in an inference-only engine.
    attn_bwd: Option<Model>,
    ffn_bwd: Option<Model>,
}

/// What the forward pass keeps of a layer for the backward pass (channel-major).
struct LayerActivations {
    x: Vec<f32>,
    r_attn: Vec<f32>,
    xn: Vec<f32>,
    o: Vec<f32>,
    qkv: [Vec<f16>; 3],
    x_mid: Vec<f32>,
    r_ffn: Vec<f32>,
    xn2: Vec<f32>,
    h1: Vec<f16>,
    h3: Vec<f16>,
    g: Vec<f32>,
}

/// The forward pass's result: the final normed hidden state and what backward needs.
struct Forward {
    x_final: Vec<f32>,
    r_final: Vec<f32>,
    xf: Vec<f32>,
    layers: Vec<LayerActivations>,
}

/// The device side of training and inference for one model shape.
pub struct Engine {
    device: Device,
    config: ModelConfig,
    shape: KernelShape,
    programs: Vec<KernelProgram>,
    layers: Vec<LayerModels>,
    /// Compiles this engine spent (the device's budget counter before and after).
    compiles: usize,
    timing: Timing,
}

impl Engine {
    /// Builds and compiles the kernels for `batch` sequences per evaluation, and loads one
    /// instance per layer. `training` adds the backward kernels.
    pub fn new(
        device: &Device,
        config: &ModelConfig,
        batch: usize,
        training: bool,
    ) -> Result<Engine> {
        config.validate()?;
        let shape = KernelShape::new(config, batch);
        let before = device.budget().used();
        let kinds: Vec<KernelKind> =
            KernelKind::ALL.into_iter().filter(|k| training || k.is_forward()).collect();
        let programs =
            kinds.iter().map(|&k| kernels::build(k, shape)).collect::<Result<Vec<_>>>()?;
        let compile = |kind: KernelKind| -> Result<Model> {
            let p = programs.iter().find(|p| p.kind == kind).expect("kernel was built");
            let mut model = device.compile(&p.built.program, &p.built.weights).map_err(|e| {
                Error::Kernel { kernel: kind.name(), message: format!("compile: {e}") }
            })?;
            model.load()?;
            for layout in &p.inputs {
                model.use_packed_layout(layout.clone())?;
            }
            Ok(model)
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for _ in 0..config.n_layers {
            layers.push(LayerModels {
                attn_fwd: compile(KernelKind::AttnFwd)?,
                ffn_fwd: compile(KernelKind::FfnFwd)?,
                attn_bwd: training.then(|| compile(KernelKind::AttnBwd)).transpose()?,
                ffn_bwd: training.then(|| compile(KernelKind::FfnBwd)).transpose()?,
            });
        }
        let compiles = device.budget().used().saturating_sub(before);
        Ok(Engine {
            device: device.clone(),
            config: config.clone(),
            shape,
            programs,
            layers,
            compiles,
            timing: Timing::default(),
        })
    }

    /// The device the kernels were compiled for.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The sizes the kernels were built for (model dims and sequences per evaluation).
    pub fn shape(&self) -> KernelShape {
        self.shape
    }

    /// Compiles spent building this engine: at most [`kernels::KERNEL_COUNT`], fewer when the
    /// device's cache already held the programs.
    pub fn compiles(&self) -> usize {
        self.compiles
    }

    /// The kernels' programs (for inspection and `--explain`-style output).
    pub fn programs(&self) -> &[KernelProgram] {
        &self.programs
    }

    /// Time spent since the last [`Engine::take_timing`].
    pub fn take_timing(&mut self) -> Timing {
        std::mem::take(&mut self.timing)
    }

    /// Writes every layer's weights into its kernels' packed inputs. Call after each
    /// optimizer step; micro-batches in between reuse them.
    pub fn stage_weights(&mut self, params: &Params) -> Result<()> {
        let t0 = Instant::now();
        let (d, h) = (self.config.dim, self.config.hidden_dim);
        for (l, models) in self.layers.iter_mut().enumerate() {
            let attn = [
                ("wq", transpose(params.get(Tensor::Wq(l)), d, d)),
                ("wk", transpose(params.get(Tensor::Wk(l)), d, d)),
                ("wv", transpose(params.get(Tensor::Wv(l)), d, d)),
                ("wo", transpose(params.get(Tensor::Wo(l)), d, d)),
            ];
            let ffn = [
                ("w1", transpose(params.get(Tensor::W1(l)), h, d)),
                ("w3", transpose(params.get(Tensor::W3(l)), h, d)),
                ("w2", params.get(Tensor::W2(l)).to_vec()),
            ];
            for (name, values) in &attn {
                models.attn_fwd.set_weight(name, values)?;
                if let Some(m) = models.attn_bwd.as_mut() {
                    m.set_weight(name, values)?;
                }
            }
            for (name, values) in &ffn {
                models.ffn_fwd.set_weight(name, values)?;
                if let Some(m) = models.ffn_bwd.as_mut() {
                    m.set_weight(name, values)?;
                }
            }
        }
        self.timing.copy += t0.elapsed();
        Ok(())
    }

    fn check_tokens(&self, ids: &[u32]) -> Result<()> {
        let t = self.shape.tokens();
        if ids.len() != t {
            return Err(Error::Data(format!(
                "a micro-batch has {} tokens; this engine runs {} ({} x {})",
                ids.len(),
                t,
                self.shape.batch,
                self.shape.seq
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(Error::Data(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// The forward pass over `ids` (`batch * seq` tokens). Keeps what backward needs when
    /// `keep` is set.
    fn forward(&mut self, params: &Params, ids: &[u32], keep: bool) -> Result<Forward> {
        self.check_tokens(ids)?;
        let cfg = &self.config;
        let (d, h, t, eps) = (cfg.dim, cfg.hidden_dim, self.shape.tokens(), cfg.norm_eps);
        let mut timing = Timing::default();
        let mut clock = Instant::now();
        let mut x = vec![0.0f32; d * t];
        cpu::embed(params.get(Tensor::Embedding), d, ids, &mut x);
        let mut saved = Vec::with_capacity(if keep { cfg.n_layers } else { 0 });
        for (l, models) in self.layers.iter_mut().enumerate() {
            let mut xn = vec![0.0f32; d * t];
            let r_attn = cpu::rmsnorm(&x, params.get(Tensor::AttnNorm(l)), eps, t, &mut xn);
            timing.cpu += lap_since(&mut clock);
            let m = &mut models.attn_fwd;
            write_region(m, "activations", &xn)?;
            timing.copy += lap_since(&mut clock);
            m.evaluate()?;
            timing.device += lap_since(&mut clock);
            let y = read_f32(m, "y")?;
            let o = if keep { read_f32(m, "o")? } else { Vec::new() };
            let qkv = if keep {
                [read_f16(m, "q")?, read_f16(m, "k")?, read_f16(m, "v")?]
            } else {
                Default::default()
            };
            timing.copy += lap_since(&mut clock);
            let mut x_mid = x.clone();
            add_into(&mut x_mid, &y);
            let mut xn2 = vec![0.0f32; d * t];
            let r_ffn = cpu::rmsnorm(&x_mid, params.get(Tensor::FfnNorm(l)), eps, t, &mut xn2);
            timing.cpu += lap_since(&mut clock);
            let m = &mut models.ffn_fwd;
            write_region(m, "activations", &xn2)?;
            timing.copy += lap_since(&mut clock);
            m.evaluate()?;
            timing.device += lap_since(&mut clock);
            let y2 = read_f32(m, "y")?;
            let (h1, h3, g) = if keep {
                (read_f16(m, "h1")?, read_f16(m, "h3")?, read_f32(m, "g")?)
            } else {
                Default::default()
            };
            timing.copy += lap_since(&mut clock);
            let mut x_next = x_mid.clone();
            add_into(&mut x_next, &y2);
            debug_assert_eq!(h1.len(), if keep { h * t } else { 0 });
            if keep {
                saved.push(LayerActivations {
                    x: std::mem::take(&mut x),
                    r_attn,
                    xn,
                    o,
                    qkv,
                    x_mid,
                    r_ffn,
                    xn2,
                    h1,
                    h3,
                    g,
                });
            }
            x = x_next;
            timing.cpu += lap_since(&mut clock);
        }
        let mut xf = vec![0.0f32; d * t];
        let r_final = cpu::rmsnorm(&x, params.get(Tensor::FinalNorm), eps, t, &mut xf);
        timing.cpu += lap_since(&mut clock);
        self.timing.add(&timing);
        Ok(Forward { x_final: x, r_final, xf, layers: saved })
    }

    /// The final normed hidden state `[dim, tokens]` for `ids` (for generation: the
    /// classifier is applied to the columns wanted).
    pub fn hidden(&mut self, params: &Params, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(self.forward(params, ids, false)?.xf)
    }

    /// The mean cross-entropy of predicting `targets` from `ids`.
    pub fn loss(&mut self, params: &Params, ids: &[u32], targets: &[u32]) -> Result<f64> {
        let fwd = self.forward(params, ids, false)?;
        let clock = Instant::now();
        let mut logits = self.logits(params, &fwd.xf);
        let loss = cpu::cross_entropy(&mut logits, targets, 0.0) / targets.len() as f64;
        self.timing.cpu += clock.elapsed();
        Ok(loss)
    }

    /// Token-major logits `[tokens, vocab]` = xf^T C^T, so that each token's softmax reads
    /// one contiguous row.
    fn logits(&self, params: &Params, xf: &[f32]) -> Vec<f32> {
        let (v, d, t) = (self.config.vocab_size, self.config.dim, self.shape.tokens());
        let mut logits = vec![0.0f32; t * v];
        let c = Mat::new(params.classifier(), v, d);
        cpu::matmul(&mut logits, Mat::new(xf, d, t).t(), c.t(), 1.0, false, cpu_threads());
        logits
    }

    /// Forward and backward over one micro-batch. Adds `grad_scale` times the gradient of
    /// the mean loss to `grads` and returns the mean loss. The backward pass runs on values
    /// multiplied by `loss_scale` (so that small fp16 gradients do not flush to zero,
    /// REFERENCE.md §2) and divides it out of the weight gradients.
    pub fn accumulate_gradients(
        &mut self,
        params: &Params,
        ids: &[u32],
        targets: &[u32],
        loss_scale: f32,
        grad_scale: f32,
        grads: &mut Params,
    ) -> Result<f64> {
        if targets.len() != ids.len() {
            return Err(Error::Data(format!("{} inputs but {} targets", ids.len(), targets.len())));
        }
        if self.layers.iter().any(|m| m.attn_bwd.is_none()) {
            return Err(Error::Config("this engine was built for inference only".into()));
        }
        let fwd = self.forward(params, ids, true)?;
        let cfg = self.config.clone();
        let (d, hd, v, t) = (cfg.dim, cfg.hidden_dim, cfg.vocab_size, self.shape.tokens());
        let mut timing = Timing::default();
        let mut clock = Instant::now();
        let mut logits = self.logits(params, &fwd.xf);
        let loss = cpu::cross_entropy(&mut logits, targets, loss_scale / t as f32) / t as f64;
        let dlogits = logits;
        // Every gradient below carries loss_scale; the weight gradients drop it here.
        let unscale = grad_scale / loss_scale;
        // dxf [d, t] = C^T dlogits^T.
        let mut dxf = vec![0.0f32; d * t];
        let c = Mat::new(params.classifier(), v, d);
        cpu::matmul(&mut dxf, c.t(), Mat::new(&dlogits, t, v).t(), 1.0, false, cpu_threads());
        let mut dx = vec![0.0f32; d * t];
        let mut d_final_norm = vec![0.0f32; d];
        cpu::rmsnorm_backward(
            &fwd.x_final,
            params.get(Tensor::FinalNorm),
            &fwd.r_final,
            &dxf,
            t,
            &mut dx,
            &mut d_final_norm,
        );
        timing.cpu += lap_since(&mut clock);
        let classifier = params.classifier_tensor();
        let layers = &mut self.layers;
        let result = std::thread::scope(|scope| -> Result<()> {
            let (jobs, queue) = mpsc::channel::<Job<'_>>();
            let worker = scope.spawn(move || {
                for job in queue {
                    job(grads, unscale);
                }
            });
            let xf = fwd.xf;
            jobs.send(Box::new(move |g: &mut Params, s: f32| {
                // dC [v, d] += dlogits^T xf^T.
                let (dl, x) = (Mat::new(&dlogits, t, v).t(), Mat::new(&xf, d, t).t());
                cpu::matmul(g.get_mut(classifier), dl, x, s, true, 1);
                axpy(g.get_mut(Tensor::FinalNorm), &d_final_norm, s);
            }))
            .expect("the gradient worker outlives the sender");
            for (l, acts) in fwd.layers.into_iter().enumerate().rev() {
                let models = &mut layers[l];
                // FFN: dy is the residual gradient.
                let m = models.ffn_bwd.as_mut().expect("training engine");
                write_region(m, "activations", &dx)?;
                write_region_f16(m, "h1", &acts.h1)?;
                write_region_f16(m, "h3", &acts.h3)?;
                timing.copy += lap_since(&mut clock);
                m.evaluate()?;
                timing.device += lap_since(&mut clock);
                let dxn2 = read_f32(m, "dx")?;
                let dh1 = read_f32(m, "dh1")?;
                let dh3 = read_f32(m, "dh3")?;
                timing.copy += lap_since(&mut clock);
                let mut d_ffn_norm = vec![0.0f32; d];
                let mut dx_mid = dx.clone();
                cpu::rmsnorm_backward(
                    &acts.x_mid,
                    params.get(Tensor::FfnNorm(l)),
                    &acts.r_ffn,
                    &dxn2,
                    t,
                    &mut dx_mid,
                    &mut d_ffn_norm,
                );
                let (xn2, g_act, dy_ffn) = (acts.xn2, acts.g, dx);
                jobs.send(Box::new(move |g: &mut Params, s: f32| {
                    // dW = dY X^T for each projection, added straight into the gradient.
                    let xn2 = Mat::new(&xn2, d, t).t();
                    cpu::matmul(g.get_mut(Tensor::W1(l)), Mat::new(&dh1, hd, t), xn2, s, true, 1);
                    cpu::matmul(g.get_mut(Tensor::W3(l)), Mat::new(&dh3, hd, t), xn2, s, true, 1);
                    let (dy, act) = (Mat::new(&dy_ffn, d, t), Mat::new(&g_act, hd, t).t());
                    cpu::matmul(g.get_mut(Tensor::W2(l)), dy, act, s, true, 1);
                    axpy(g.get_mut(Tensor::FfnNorm(l)), &d_ffn_norm, s);
                }))
                .expect("the gradient worker outlives the sender");
                timing.cpu += lap_since(&mut clock);
                // Attention.
                let m = models.attn_bwd.as_mut().expect("training engine");
                write_region(m, "activations", &dx_mid)?;
                for (name, values) in ["q", "k", "v"].iter().zip(&acts.qkv) {
                    write_region_f16(m, name, values)?;
                }
                timing.copy += lap_since(&mut clock);
                m.evaluate()?;
                timing.device += lap_since(&mut clock);
                let dxn = read_f32(m, "dx")?;
                let dq = read_f32(m, "dq")?;
                let dk = read_f32(m, "dk")?;
                let dv = read_f32(m, "dv")?;
                timing.copy += lap_since(&mut clock);
                let mut d_attn_norm = vec![0.0f32; d];
                let mut dx_in = dx_mid.clone();
                cpu::rmsnorm_backward(
                    &acts.x,
                    params.get(Tensor::AttnNorm(l)),
                    &acts.r_attn,
                    &dxn,
                    t,
                    &mut dx_in,
                    &mut d_attn_norm,
                );
                let (xn, o, dy_attn) = (acts.xn, acts.o, dx_mid);
                jobs.send(Box::new(move |g: &mut Params, s: f32| {
                    let xn = Mat::new(&xn, d, t).t();
                    let pairs = [(Tensor::Wq(l), &dq), (Tensor::Wk(l), &dk), (Tensor::Wv(l), &dv)];
                    for (tensor, grad_out) in pairs {
                        cpu::matmul(g.get_mut(tensor), Mat::new(grad_out, d, t), xn, s, true, 1);
                    }
                    let (dy, o) = (Mat::new(&dy_attn, d, t), Mat::new(&o, d, t).t());
                    cpu::matmul(g.get_mut(Tensor::Wo(l)), dy, o, s, true, 1);
                    axpy(g.get_mut(Tensor::AttnNorm(l)), &d_attn_norm, s);
                }))
                .expect("the gradient worker outlives the sender");
                dx = dx_in;
                timing.cpu += lap_since(&mut clock);
            }
            let ids = ids.to_vec();
            jobs.send(Box::new(move |g: &mut Params, s: f32| {
                cpu::embed_backward(&dx, d, &ids, s, g.get_mut(Tensor::Embedding));
            }))
            .expect("the gradient worker outlives the sender");
            drop(jobs);
            worker
                .join()
                .map_err(|_| Error::Config("the weight-gradient worker panicked".into()))?;
            timing.cpu += lap_since(&mut clock);
            Ok(())
        });
        result?;
        self.timing.add(&timing);
        Ok(loss)
    }
}

/// A weight-gradient computation for the worker: gets the gradient buffer and the factor
/// that removes the loss scale.
type Job<'a> = Box<dyn FnOnce(&mut Params, f32) + Send + 'a>;

/// Threads for the classifier's GEMMs on the main thread: all of rayon's (the device and
/// the gradient worker are idle while they run).
fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// `y += a * x`.
fn axpy(y: &mut [f32], x: &[f32], a: f32) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

fn add_into(y: &mut [f32], x: &[f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += xv;
    }
}

/// `[rows, cols]` row-major -> `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

/// The time since `clock`, which then restarts.
fn lap_since(clock: &mut Instant) -> Duration {
    let now = Instant::now();
    let d = now - *clock;
    *clock = now;
    d
}

/// The layout holding region `name` in `model`'s packed inputs.
fn region_of<'m>(layouts: &'m [PackedLayout], name: &str) -> Option<&'m PackedLayout> {
    layouts.iter().find(|l| l.region(name).is_some())
}

/// Writes a `[channels, cols]` f32 matrix into region `name` (converted to fp16).
fn write_region(model: &mut Model, name: &str, values: &[f32]) -> Result<()> {
    model.set_weight(name, values)?;
    Ok(())
}

/// Writes a `[channels, cols]` fp16 matrix into region `name` without conversion.
fn write_region_f16(model: &mut Model, name: &str, values: &[f16]) -> Result<()> {
    let layout = region_of(model.packed_layouts(), name)
        .cloned()
        .ok_or_else(|| Error::Config(format!("no packed region `{name}`")))?;
    let region = layout.region(name).expect("found above").clone();
    if values.len() != layout.channels * region.cols {
        return Err(Error::Data(format!(
            "region `{name}` is [{}, {}], got {} values",
            layout.channels,
            region.cols,
            values.len()
        )));
    }
    let surface = model.input(&layout.input)?;
    surface.memory_mut().write(&mut |bytes| {
        let dst: &mut [f16] =
            bytemuck::cast_slice_mut(&mut bytes[..layout.channels * layout.width * 2]);
        for (c, row) in values.chunks_exact(region.cols).enumerate() {
            let at = c * layout.width + region.offset;
            dst[at..at + region.cols].copy_from_slice(row);
        }
    })?;
    Ok(())
}

fn read_f16(model: &Model, name: &str) -> Result<Vec<f16>> {
    Ok(model.output(name)?.read_f16()?)
}

fn read_f32(model: &Model, name: &str) -> Result<Vec<f32>> {
    let h = read_f16(model, name)?;
    let mut out = vec![0.0f32; h.len()];
    h.convert_to_f32_slice(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::kernels::KERNEL_COUNT;

    pub(crate) fn small_config() -> ModelConfig {
        ModelConfig {
            dim: 32,
            hidden_dim: 64,
            n_layers: 2,
            n_heads: 2,
            seq_len: 16,
            vocab_size: 64,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    #[test]
    fn smoke_loss_and_gradients() {
        let cfg = small_config();
        let device = Device::simulator();
        let mut engine = Engine::new(&device, &cfg, 2, true).unwrap();
        assert_eq!(engine.compiles(), KERNEL_COUNT);
        let params = Params::init(&cfg, 1);
        engine.stage_weights(&params).unwrap();
        let ids: Vec<u32> = (0..32).map(|i| (i * 7 % 64) as u32).collect();
        let targets: Vec<u32> = (0..32).map(|i| (i * 5 % 64) as u32).collect();
        let mut grads = Params::zeros(params.layout.clone());
        let loss =
            engine.accumulate_gradients(&params, &ids, &targets, 256.0, 1.0, &mut grads).unwrap();
        assert!((loss - (64f64).ln()).abs() < 0.1, "{loss}");
        assert!(grads.all_finite());
        let eval = engine.loss(&params, &ids, &targets).unwrap();
        assert!((eval - loss).abs() < 1e-9);
    }
}
