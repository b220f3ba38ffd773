//! The training loop: data windows, micro-batches with gradient accumulation, clipping,
//! AdamW on the warm-up + cosine schedule, validation, checkpoints (and resuming them bit
//! for bit), and the loss curve. The CLI renders its [`Event`]s.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anemone::Device;

use crate::checkpoint::{self, LogPoint, TrainState};
use crate::config::Config;
use crate::data::{self, Batch, Dataset, Sampler, Split};
use crate::error::{Error, Result};
use crate::optim::{self, AdamW};
use crate::params::Params;
use crate::plot;
use crate::step::{Engine, Timing};
use crate::tokenizer::Tokenizer;

/// File name of the loss curve in the output directory.
pub const LOSS_CURVE: &str = "loss.svg";

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The model and training settings (on a resume the checkpoint's training settings
    /// replace these; the model must match).
    pub config: Config,
    /// A text file (byte-level tokens, or `tokenizer`'s) or a `.bin` token file.
    pub data: PathBuf,
    /// A Hugging Face `tokenizer.json`, for text data and for decoding.
    pub tokenizer: Option<PathBuf>,
    /// Where checkpoints and the loss curve go.
    pub out: PathBuf,
    /// The run's total optimizer steps: the schedule's horizon.
    pub steps: usize,
    /// End after this step as if interrupted (checkpointed; the horizon stays `steps`).
    pub stop_after: Option<usize>,
    /// Continue from the checkpoint in `out`.
    pub resume: bool,
    /// Start from these weights (a llama2.c `.bin` or a checkpoint) instead of random ones.
    pub init: Option<PathBuf>,
    /// Seeds the weight initialisation and the window sampler of a fresh run (a resume
    /// restores both from the checkpoint).
    pub seed: u64,
    /// Report a step every this many steps; 0 reports with each validation.
    pub log_every: usize,
}

/// One optimizer step's report.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Steps completed, this one included.
    pub step: usize,
    /// Mean training loss over the step's micro-batches.
    pub loss: f64,
    /// Validation loss, when evaluated after this step.
    pub val_loss: Option<f64>,
    /// The learning rate this step used ([`optim::lr_at`]).
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Time of the step itself (validation excluded).
    pub ms_per_step: f64,
    /// Training tokens of the step divided by its time.
    pub tokens_per_s: f64,
    /// Device compiles spent by the run so far.
    pub compiles: usize,
    /// Where the step's time went: device, surface copies, CPU.
    pub timing: Timing,
}

/// The end of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Optimizer steps completed: the step of the final checkpoint.
    pub step: usize,
    /// Steps this run took (fewer than `step` after a resume).
    pub steps_run: usize,
    /// Training loss of the last step run; `None` when no step ran.
    pub loss: Option<f64>,
    /// The last validation loss this run computed.
    pub val_loss: Option<f64>,
    /// Device compiles spent since the trainer was made.
    pub compiles: usize,
    /// The checkpoint written at the end.
    pub checkpoint: PathBuf,
    /// The loss curve (SVG), or `None` if it could not be drawn.
    pub loss_curve: Option<PathBuf>,
    /// Mean time per step of this run, split by where it went.
    pub per_step: Timing,
    /// Wall-clock seconds of the whole run, validation and checkpoints included.
    pub seconds: f64,
    /// The run stopped at `--stop-after` before the horizon.
    pub interrupted: bool,
}

/// What the loop tells its caller as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// Set up: where the run starts and what it will do.
    Started {
        /// Steps already completed (0 for a fresh run, the checkpoint's step on a resume).
        first_step: usize,
        /// The run's horizon ([`RunOptions::steps`]).
        steps: usize,
        /// Training tokens per optimizer step (`batch * accum_steps * seq_len`).
        tokens_per_step: usize,
        /// Device compiles spent setting up (at most [`crate::kernels::KERNEL_COUNT`]).
        compiles: usize,
        /// Trainable parameters.
        parameters: usize,
        /// The validation loss before the first step of a fresh run.
        initial_val_loss: Option<f64>,
    },
    /// Every step, for progress displays.
    Progress(&'a StepReport),
    /// A step to log (every `log_every` steps, each validation, and the last).
    Step(&'a StepReport),
    /// A checkpoint was written at this path.
    Checkpoint(&'a Path),
}

/// A training run in progress: the compiled kernels, the data, the weights, AdamW's state
/// and the sampler. [`Trainer::run`] trains to the horizon; [`Trainer::step`] takes one
/// optimizer step at a time.
///
/// ```
/// use anemone::Device;
/// use anemone_train::config::Config;
/// use anemone_train::trainer::{Event, RunOptions, Trainer};
///
/// let dir = tempfile::tempdir()?;
/// let data = dir.path().join("text.txt");
/// std::fs::write(&data, "the king and the queen of the night. ".repeat(60))?;
///
/// // A very small llama on byte tokens: one layer, 16-token windows, 2 per micro-batch.
/// let mut config = Config::preset("tiny").expect("a preset");
/// config.model.dim = 32;
/// config.model.hidden_dim = 64;
/// config.model.n_layers = 1;
/// config.model.n_heads = 2;
/// config.model.seq_len = 16;
/// config.train.batch = 2;
/// config.train.warmup_steps = 1;
///
/// let options = RunOptions {
///     config,
///     data,
///     tokenizer: None,
///     out: dir.path().join("run"),
///     steps: 3,
///     stop_after: None,
///     resume: false,
///     init: None,
///     seed: 0,
///     log_every: 1,
/// };
/// let mut trainer = Trainer::new(&Device::simulator(), options)?;
/// let summary = trainer.run(|event| {
///     if let Event::Step(report) = event {
///         println!("step {} loss {:.3}", report.step, report.loss);
///     }
/// })?;
/// assert_eq!(summary.step, 3);
/// // Four kernels, compiled once for every layer and step of the run.
/// assert_eq!(summary.compiles, 4);
/// assert!(summary.checkpoint.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Trainer {
    options: RunOptions,
    engine: Engine,
    eval_engine_batches: Vec<Batch>,
    dataset: Dataset,
    tokenizer: Tokenizer,
    sampler: Sampler,
    params: Params,
    grads: Params,
    adam: AdamW,
    step: usize,
    history: Vec<LogPoint>,
    compiles_at_start: usize,
    device: Device,
}

impl Trainer {
    /// Opens the data, restores or initialises the state, and compiles the kernels.
    pub fn new(device: &Device, options: RunOptions) -> Result<Trainer> {
        let mut options = options;
        if options.steps == 0 {
            return Err(Error::Config("--steps must be at least 1".into()));
        }
        let resumed = if options.resume { Some(load_resume_state(&options)?) } else { None };
        match &resumed {
            Some(state) => {
                // The model must match; training settings come from the checkpoint, and so
                // does the tokenizer unless one is given: re-reading text with another
                // tokenizer would silently train on a different token stream.
                checkpoint::check_compatible(state, &options.config)?;
                options.config.train = state.config.train.clone();
                if options.tokenizer.is_none() {
                    options.tokenizer = state.tokenizer.as_ref().map(PathBuf::from);
                }
            }
            None => {
                // A fresh run would replace the checkpoint already there at its first save.
                let existing = options.out.join(checkpoint::CHECKPOINT_FILE);
                if existing.exists() {
                    return Err(Error::Config(format!(
                        "{} already exists: pass --resume to continue that run, or choose \
                         another --out",
                        existing.display()
                    )));
                }
            }
        }
        let tokenizer = match &options.tokenizer {
            Some(p) => Tokenizer::from_file(p)?,
            None => Tokenizer::bytes(),
        };
        options.config.validate()?;
        if options.log_every == 0 {
            options.log_every = options.config.train.eval_every;
        }
        let config = options.config.clone();
        if tokenizer.vocab_size() > config.model.vocab_size {
            return Err(Error::Config(format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}",
                tokenizer.vocab_size(),
                config.model.vocab_size
            )));
        }
        let dataset = Dataset::open(
            &options.data,
            &tokenizer,
            config.model.vocab_size,
            config.model.seq_len,
            config.train.val_fraction,
        )?;
        let (params, adam, sampler, step, history) = match resumed {
            Some(state) => {
                if let Some(stop) = options.stop_after.filter(|&k| k <= state.step) {
                    return Err(Error::Config(format!(
                        "--stop-after {stop} is at or before the checkpoint's step {}",
                        state.step
                    )));
                }
                if state.step >= options.steps {
                    return Err(Error::Config(format!(
                        "the checkpoint in {} is at step {}, already at or past --steps {}",
                        options.out.display(),
                        state.step,
                        options.steps
                    )));
                }
                let adam = AdamW { m: state.adam_m, v: state.adam_v };
                (state.params, adam, Sampler::from_state(&state.rng), state.step, state.history)
            }
            None => {
                let params = match &options.init {
                    Some(path) => load_init(path, &config)?,
                    None => Params::init(&config.model, options.seed),
                };
                let adam = AdamW::new(params.layout.clone());
                (params, adam, Sampler::new(options.seed), 0, Vec::new())
            }
        };
        let before = device.budget().used();
        let mut engine = Engine::new(device, &config.model, config.train.batch, true)?;
        engine.stage_weights(&params)?;
        let eval_batches = data::val_batches(
            &dataset,
            config.train.eval_batches,
            config.train.batch,
            config.model.seq_len,
        );
        Ok(Trainer {
            grads: Params::zeros(params.layout.clone()),
            options,
            engine,
            eval_engine_batches: eval_batches,
            dataset,
            tokenizer,
            sampler,
            params,
            adam,
            step,
            history,
            compiles_at_start: before,
            device: device.clone(),
        })
    }

    /// The run's configuration (on a resume, with the checkpoint's training settings).
    pub fn config(&self) -> &Config {
        &self.options.config
    }

    /// The current weights (after the last optimizer step).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Optimizer steps completed, those of a resumed checkpoint included.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The tokenizer of the data: `tokenizer.json`'s, else bytes.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The tokenized data with its training and validation parts.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The gradient of the last step (unscaled, after clipping), for tests and reports.
    pub fn last_gradients(&self) -> &Params {
        &self.grads
    }

    /// Device compiles spent since this trainer was made (the device's budget counter).
    pub fn compiles(&self) -> usize {
        self.device.budget().used().saturating_sub(self.compiles_at_start)
    }

    /// Tokens one optimizer step trains on.
    pub fn tokens_per_step(&self) -> usize {
        let t = &self.options.config.train;
        t.batch * t.accum_steps * self.options.config.model.seq_len
    }

    /// Computes the gradient of the mean loss over `batches` (one per micro-batch) into
    /// the trainer's gradient buffer, without updating anything. Returns the mean loss.
    pub fn gradients(&mut self, batches: &[Batch]) -> Result<f64> {
        self.grads.clear();
        let scale = self.options.config.train.loss_scale;
        let k = batches.len() as f32;
        let mut loss = 0.0;
        for b in batches {
            loss += self.engine.accumulate_gradients(
                &self.params,
                &b.inputs,
                &b.targets,
                scale,
                1.0 / k,
                &mut self.grads,
            )?;
        }
        Ok(loss / batches.len() as f64)
    }

    /// One optimizer step on freshly sampled micro-batches.
    pub fn step(&mut self) -> Result<StepReport> {
        let t = &self.options.config.train;
        let (accum, batch, seq) = (t.accum_steps, t.batch, self.options.config.model.seq_len);
        let batches: Vec<Batch> = (0..accum)
            .map(|_| self.sampler.batch(&self.dataset, Split::Train, batch, seq))
            .collect();
        self.step_on(&batches)
    }

    /// One optimizer step on the given micro-batches (each `batch` sequences).
    pub fn step_on(&mut self, batches: &[Batch]) -> Result<StepReport> {
        let start = Instant::now();
        let t = self.options.config.train.clone();
        let loss = self.gradients(batches)?;
        let next = self.step + 1;
        if !loss.is_finite() {
            return Err(self.diverged(next, format!("the loss became {loss}")));
        }
        let clock = Instant::now();
        let grad_norm = optim::clip_grad_norm(&mut self.grads, t.grad_clip);
        if !grad_norm.is_finite() {
            return Err(self.diverged(next, format!("the gradient norm became {grad_norm}")));
        }
        let lr = optim::lr_at(self.step, self.options.steps, &t);
        self.adam.step(&mut self.params, &self.grads, next, lr, &t);
        let cpu = clock.elapsed();
        self.engine.stage_weights(&self.params)?;
        self.step = next;
        // The step's own time; validation is timed apart so that ms/step and tokens/s
        // stay comparable between steps with and without it.
        let mut timing = self.engine.take_timing();
        timing.cpu += cpu;
        let seconds = start.elapsed().as_secs_f64();
        let val_loss = if self.step.is_multiple_of(t.eval_every) || self.step == self.options.steps
        {
            let v = self.evaluate()?;
            self.engine.take_timing();
            Some(v)
        } else {
            None
        };
        let report = StepReport {
            step: self.step,
            loss,
            val_loss,
            lr,
            grad_norm,
            ms_per_step: seconds * 1e3,
            tokens_per_s: (batches.len() * t.batch * self.options.config.model.seq_len) as f64
                / seconds.max(1e-9),
            compiles: self.compiles(),
            timing,
        };
        let point = LogPoint {
            step: self.step,
            loss: loss as f32,
            val_loss: val_loss.map(|v| v as f32),
            lr,
        };
        self.history.push(point);
        Ok(report)
    }

    fn diverged(&self, step: usize, what: String) -> Error {
        let kept = checkpoint::load(&self.options.out)
            .map(|s| {
                format!(
                    "the last good checkpoint (step {}) is kept in {}",
                    s.step,
                    self.options.out.display()
                )
            })
            .unwrap_or_else(|_| "no checkpoint was written yet".into());
        Error::Diverged(format!(
            "step {step}: {what}; training stopped and {kept}. Lower the learning rate or \
             the loss scale (fp16 gradients overflow past 65504)"
        ))
    }

    /// Mean loss over the fixed validation windows (held-out data).
    pub fn evaluate(&mut self) -> Result<f64> {
        let mut total = 0.0;
        for b in &self.eval_engine_batches {
            total += self.engine.loss(&self.params, &b.inputs, &b.targets)?;
        }
        Ok(total / self.eval_engine_batches.len().max(1) as f64)
    }

    /// Everything a resume needs.
    pub fn state(&self) -> TrainState {
        TrainState {
            config: self.options.config.clone(),
            step: self.step,
            params: self.params.clone(),
            adam_m: self.adam.m.clone(),
            adam_v: self.adam.v.clone(),
            rng: self.sampler.state(),
            total_steps: self.options.steps,
            history: self.history.clone(),
            data: Some(self.options.data.display().to_string()),
            tokenizer: self.options.tokenizer.as_ref().map(|p| p.display().to_string()),
        }
    }

    /// Writes the checkpoint atomically (the previous one survives a failed write).
    pub fn checkpoint(&self) -> Result<PathBuf> {
        checkpoint::save(&self.options.out, &self.state())
    }

    /// Writes the loss curve of the whole run (resumed parts included).
    pub fn write_loss_curve(&self) -> Result<PathBuf> {
        let path = self.options.out.join(LOSS_CURVE);
        let train: Vec<(usize, f32)> = self.history.iter().map(|p| (p.step, p.loss)).collect();
        let val: Vec<(usize, f32)> =
            self.history.iter().filter_map(|p| p.val_loss.map(|v| (p.step, v))).collect();
        plot::write_loss_curve(&path, &train, &val, "anemone train")?;
        Ok(path)
    }

    /// Runs to `steps` (or `stop_after`), checkpointing on the way and at the end.
    pub fn run(&mut self, mut on_event: impl FnMut(Event<'_>)) -> Result<Summary> {
        let start = Instant::now();
        let first = self.step;
        let end = self.options.stop_after.map_or(self.options.steps, |s| s.min(self.options.steps));
        // A fresh run's curve starts from the untrained model's validation loss.
        let initial_val_loss = if first == 0 && self.history.is_empty() {
            let v = self.evaluate()?;
            let point = LogPoint { step: 0, loss: v as f32, val_loss: Some(v as f32), lr: 0.0 };
            self.history.push(point);
            self.engine.take_timing();
            Some(v)
        } else {
            None
        };
        on_event(Event::Started {
            first_step: first,
            steps: self.options.steps,
            tokens_per_step: self.tokens_per_step(),
            compiles: self.compiles(),
            parameters: self.params.data.len(),
            initial_val_loss,
        });
        let mut per_step = Timing::default();
        let mut last: Option<StepReport> = None;
        let mut last_val = None;
        while self.step < end {
            let report = self.step()?;
            per_step.add(&report.timing);
            if report.val_loss.is_some() {
                last_val = report.val_loss;
            }
            let logged = report.step.is_multiple_of(self.options.log_every)
                || report.step == end
                || report.val_loss.is_some();
            on_event(Event::Progress(&report));
            if logged {
                on_event(Event::Step(&report));
            }
            if report.step.is_multiple_of(self.options.config.train.checkpoint_every)
                && report.step != end
            {
                let path = self.checkpoint()?;
                on_event(Event::Checkpoint(&path));
            }
            last = Some(report);
        }
        let path = self.checkpoint()?;
        on_event(Event::Checkpoint(&path));
        let curve = self.write_loss_curve().ok();
        let steps_run = self.step - first;
        let n = steps_run.max(1) as u32;
        let mean =
            Timing { device: per_step.device / n, copy: per_step.copy / n, cpu: per_step.cpu / n };
        Ok(Summary {
            step: self.step,
            steps_run,
            loss: last.as_ref().map(|r| r.loss),
            val_loss: last_val,
            compiles: self.compiles(),
            checkpoint: path,
            loss_curve: curve,
            per_step: mean,
            seconds: start.elapsed().as_secs_f64(),
            interrupted: self.step < self.options.steps,
        })
    }
}

fn load_resume_state(options: &RunOptions) -> Result<TrainState> {
    let state = checkpoint::load(&options.out)?;
    if state.total_steps != options.steps {
        // The horizon is part of the schedule: a different --steps changes every later lr.
        eprintln!(
            "note: the checkpoint was written by a run of {} steps; continuing to {}",
            state.total_steps, options.steps
        );
    }
    Ok(state)
}

/// Initial weights from a llama2.c `.bin` model or from a checkpoint (its weights only).
fn load_init(path: &Path, config: &Config) -> Result<Params> {
    let params = if checkpoint::is_llama2c_file(path) {
        checkpoint::load_llama2c(path)?
    } else {
        checkpoint::load(path)?.params
    };
    if params.config() != &config.model {
        return Err(Error::checkpoint(
            path,
            format!(
                "its model ({}) differs from the configured one ({}); pass the model file's \
                 own config",
                describe(params.config()),
                describe(&config.model)
            ),
        ));
    }
    Ok(params)
}

/// A one-line description of a model config.
pub fn describe(m: &crate::config::ModelConfig) -> String {
    format!(
        "dim {}, hidden {}, {} layer{}, {} head{}, seq {}, vocab {}{}",
        m.dim,
        m.hidden_dim,
        m.n_layers,
        if m.n_layers == 1 { "" } else { "s" },
        m.n_heads,
        if m.n_heads == 1 { "" } else { "s" },
        m.seq_len,
        m.vocab_size,
        if m.shared_classifier { "" } else { ", separate classifier" }
    )
}
