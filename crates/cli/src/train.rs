//! `anemone train` and `anemone generate`: train a llama-style transformer with the
//! device kernels of anemone-train, and sample text from what it learned.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anemone_train::checkpoint;
use anemone_train::generate::{Generator, SamplerSettings, TokenSampler};
use anemone_train::step::Timing;
use anemone_train::tokenizer::Tokenizer;
use anemone_train::trainer::{Event, RunOptions, StepReport, Summary, Trainer, describe};
use anemone_train::{Config, Error, Params};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::EXIT_USAGE;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A preset (tiny, stories15m, stories110m) or a JSON/TOML file with
    /// `{"model": {...}, "train": {...}}` [default: tiny; with --resume, the checkpoint's].
    #[arg(long)]
    pub config: Option<String>,
    /// Training data: a UTF-8 text file (byte-level tokens unless --tokenizer is given) or
    /// a llama2.c token file (`.bin`: uint16 little-endian ids).
    #[arg(long)]
    pub data: PathBuf,
    /// A Hugging Face tokenizer.json for text data and for decoding.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Total optimizer steps of the run (the learning-rate schedule's horizon).
    #[arg(long)]
    pub steps: usize,
    /// Directory for the checkpoint and the loss curve.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out up to --steps, with its training settings,
    /// weights, optimizer state and data position (--config must give the same model).
    #[arg(long, conflicts_with = "init")]
    pub resume: bool,
    /// End after this step as if interrupted (checkpointed; the horizon stays --steps).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Start from these weights: a llama2.c `.bin` model or a checkpoint.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// sim, ane or auto (default: $ANEMONE_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
    /// Seed of the weight initialisation and of the data windows [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Peak learning rate (default: the config's).
    // Negative numbers reach the config's validation, which says what is wrong with them.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub accum: Option<usize>,
    /// Warm-up steps of the schedule.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Static loss scale of the fp16 backward pass.
    #[arg(long, allow_negative_numbers = true)]
    pub loss_scale: Option<f32>,
    /// Validation loss every this many steps.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// A report line every this many steps (default: with each validation).
    #[arg(long)]
    pub log_every: Option<usize>,
    /// One JSON object per logged step on stdout, and a final summary object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A training output directory, a checkpoint file or a llama2.c `.bin` model.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The text to continue.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// How many tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub tokens: usize,
    /// Sampling temperature; 0 picks the most likely token.
    // Negative numbers are let through so that validation, not the parser, explains them.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Nucleus sampling: draw from the most likely tokens holding this much probability
    /// (in (0, 1]; 1 draws from every token).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampler: the same model, prompt, settings and seed give the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A Hugging Face tokenizer.json (default: the one the run used, else bytes).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// sim, ane or auto (default: $ANEMONE_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
}

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

/// Exit status of a problem found before a run starts: usage and input problems exit 2,
/// a device that fails to build or compile the kernels exits 1.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Diverged(_) | Error::Device(_) | Error::Kernel { .. } => 1,
        _ => EXIT_USAGE,
    }
}

/// Exit status of a run that started and then failed (diverged, a device error, a
/// checkpoint that could not be written): whatever the cause, the input was accepted.
const EXIT_RUN_FAILED: u8 = 1;

/// The training-setting flags given on the command line.
fn training_flags_given(args: &TrainArgs) -> Vec<&'static str> {
    [
        ("--lr", args.lr.is_some()),
        ("--batch", args.batch.is_some()),
        ("--accum", args.accum.is_some()),
        ("--warmup", args.warmup.is_some()),
        ("--loss-scale", args.loss_scale.is_some()),
        ("--eval-every", args.eval_every.is_some()),
        ("--seed", args.seed.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect()
}

fn build_config(args: &TrainArgs) -> Result<Config, Error> {
    if args.resume && args.config.is_none() {
        // The run continues as it was started, whatever model it was started with (a
        // preset, a file or a llama2.c model).
        return Ok(checkpoint::load(&args.out)?.config);
    }
    let name = args.config.as_deref().unwrap_or("tiny");
    let mut config = match &args.init {
        // A llama2.c model carries its own shape; the training settings come from --config.
        Some(path) if checkpoint::is_llama2c_file(path) => {
            let params = checkpoint::load_llama2c(path)?;
            Config { model: params.config().clone(), train: Config::load(name)?.train }
        }
        _ => Config::load(name)?,
    };
    if args.resume {
        // The run continues with the checkpoint's settings (the caller says so); applying
        // the flags here could only refuse values that are ignored anyway.
        return Ok(config);
    }
    let t = &mut config.train;
    if let Some(v) = args.lr {
        t.lr = v;
    }
    if let Some(v) = args.batch {
        t.batch = v;
    }
    if let Some(v) = args.accum {
        t.accum_steps = v;
    }
    if let Some(v) = args.warmup {
        t.warmup_steps = v;
    }
    if let Some(v) = args.loss_scale {
        t.loss_scale = v;
    }
    if let Some(v) = args.eval_every {
        t.eval_every = v;
    }
    config.validate()?;
    Ok(config)
}

/// One JSON line on stdout. A reader that went away (`| head`) must not stop the run
/// before its checkpoint is written, so write errors are ignored rather than fatal.
fn emit(value: &serde_json::Value) {
    let _ = writeln!(std::io::stdout().lock(), "{value}");
}

pub fn train(args: &TrainArgs) -> ExitCode {
    if args.stop_after == Some(0) {
        return fail("--stop-after must be at least 1 (it is the last step to run)", EXIT_USAGE);
    }
    if args.resume {
        let ignored = training_flags_given(args);
        if !ignored.is_empty() {
            eprintln!(
                "note: --resume continues with the checkpoint's training settings; ignoring {}",
                ignored.join(", ")
            );
        }
    }
    let config = match build_config(args) {
        Ok(c) => c,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    let device = match crate::select_device(args.device.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    // 0: with each validation, at the run's own (on a resume, the checkpoint's) interval.
    let log_every = args.log_every.unwrap_or(0);
    let options = RunOptions {
        config: config.clone(),
        data: args.data.clone(),
        tokenizer: args.tokenizer.clone(),
        out: args.out.clone(),
        steps: args.steps,
        stop_after: args.stop_after,
        resume: args.resume,
        init: args.init.clone(),
        seed: args.seed.unwrap_or(0),
        log_every,
    };
    if !args.json {
        eprintln!("device: {}", device.kind());
        eprintln!(
            "model: {} ({} parameters)",
            describe(&config.model),
            config.model.parameter_count()
        );
    }
    let mut trainer = match Trainer::new(&device, options) {
        Ok(t) => t,
        Err(e) => return fail(&e, exit_code(&e)),
    };
    let data = trainer.dataset();
    if !args.json {
        eprintln!(
            "data: {} ({} training tokens, {} held out{})",
            args.data.display(),
            data.train_tokens(),
            data.val_tokens(),
            if data.has_held_out() { "" } else { "; validation reuses training data" }
        );
    }
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(args.stop_after.unwrap_or(args.steps).min(args.steps) as u64);
        // The bar takes what the text leaves of the terminal's width: a fixed-width line
        // longer than an 80-column terminal wraps and scrolls on every redraw.
        let style =
            ProgressStyle::with_template("{wide_bar} {pos}/{len}  {msg}  [{elapsed} < {eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    };
    let json = args.json;
    let result = trainer.run(|event| match event {
        Event::Started {
            first_step, steps, tokens_per_step, compiles, initial_val_loss, ..
        } => {
            bar.set_position(first_step as u64);
            // A resumed run jumps to its first step at once; that is not a rate to
            // estimate the remaining time from.
            bar.reset_eta();
            if !json {
                // println on a hidden bar (stderr not a terminal) prints nothing.
                bar.suspend(|| {
                    eprintln!(
                        "training steps {}..{steps}: {tokens_per_step} tokens per step, \
                         {compiles} device compiles",
                        first_step + 1
                    );
                    if let Some(v) = initial_val_loss {
                        eprintln!("step      0  val {v:.4} (untrained)");
                    }
                });
            }
        }
        Event::Step(r) => {
            if json {
                emit(&step_json(r));
            } else {
                bar.suspend(|| eprintln!("{}", step_line(r)));
            }
        }
        Event::Progress(r) => {
            bar.set_position(r.step as u64);
            bar.set_message(format!(
                "loss {:.4}  {:.0} tok/s  {:.1} ms/step",
                r.loss, r.tokens_per_s, r.ms_per_step
            ));
        }
        Event::Checkpoint(_) => {}
    });
    bar.finish_and_clear();
    match result {
        Ok(summary) => {
            if json {
                emit(&summary_json(&summary));
            } else {
                print_summary(&summary);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, EXIT_RUN_FAILED),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn step_line(r: &StepReport) -> String {
    let val = r.val_loss.map_or(String::new(), |v| format!("  val {v:.4}"));
    format!(
        "step {:>6}  loss {:.4}{val}  lr {:.2e}  |g| {:.3}  {:.1} ms/step  {:.0} tok/s",
        r.step, r.loss, r.lr, r.grad_norm, r.ms_per_step, r.tokens_per_s
    )
}

fn step_json(r: &StepReport) -> serde_json::Value {
    json!({
        "step": r.step,
        "loss": r.loss,
        "val_loss": r.val_loss,
        "lr": r.lr,
        "ms_per_step": r.ms_per_step,
        "tokens_per_s": r.tokens_per_s,
        "compiles": r.compiles,
    })
}

fn timing_json(t: &Timing) -> serde_json::Value {
    json!({
        "total": ms(t.total()),
        "device": ms(t.device),
        "cpu": ms(t.cpu),
        "copy": ms(t.copy),
    })
}

fn summary_json(s: &Summary) -> serde_json::Value {
    json!({
        "done": true,
        "step": s.step,
        "loss": s.loss,
        "val_loss": s.val_loss,
        "compiles": s.compiles,
        "checkpoint": s.checkpoint.display().to_string(),
        "ms_per_step": timing_json(&s.per_step),
    })
}

fn print_summary(s: &Summary) {
    let t = &s.per_step;
    let fmt_loss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    eprintln!(
        "{} at step {} ({} steps in {:.1} s): loss {}, validation loss {}",
        if s.interrupted { "stopped" } else { "done" },
        s.step,
        s.steps_run,
        s.seconds,
        fmt_loss(s.loss),
        fmt_loss(s.val_loss)
    );
    eprintln!("device compiles: {} (the kernels, compiled once for the whole run)", s.compiles);
    eprintln!(
        "ms/step: {:.1} total = {:.1} device + {:.1} cpu + {:.1} copy",
        ms(t.total()),
        ms(t.device),
        ms(t.cpu),
        ms(t.copy)
    );
    eprintln!("checkpoint: {}", s.checkpoint.display());
    if s.interrupted {
        // Given again, --stop-after would end the resumed run before its first step.
        eprintln!("to continue: the same command with --resume, without --stop-after");
    }
    if let Some(curve) = &s.loss_curve {
        eprintln!("loss curve: {}", curve.display());
    }
}

/// The weights, and the tokenizer recorded with them, from a checkpoint or model file.
fn load_model(path: &Path) -> Result<(Params, Option<PathBuf>), Error> {
    if checkpoint::is_llama2c_file(path) {
        return Ok((checkpoint::load_llama2c(path)?, None));
    }
    let state = checkpoint::load(path)?;
    Ok((state.params, state.tokenizer.map(PathBuf::from)))
}

/// The tokenizer for generation: --tokenizer, else the one the run recorded, else bytes
/// for a 256-token vocabulary.
fn generation_tokenizer(
    given: Option<&Path>,
    recorded: Option<&Path>,
    vocab_size: usize,
) -> Result<Tokenizer, String> {
    match (given, recorded) {
        (Some(p), _) => Tokenizer::from_file(p).map_err(|e| e.to_string()),
        // A recorded path is relative to where training ran, so it may not resolve here.
        (None, Some(p)) => Tokenizer::from_file(p).map_err(|e| {
            format!(
                "{e} (the tokenizer recorded in the checkpoint); pass the model's \
                 tokenizer.json with --tokenizer"
            )
        }),
        (None, None) if vocab_size == 256 => Ok(Tokenizer::bytes()),
        (None, None) => Err(format!(
            "the model has a vocabulary of {vocab_size} tokens: pass its tokenizer.json with \
             --tokenizer"
        )),
    }
}

pub fn generate(args: &GenerateArgs) -> ExitCode {
    let settings =
        SamplerSettings { temperature: args.temperature, top_p: args.top_p, seed: args.seed };
    if let Err(e) = settings.validate() {
        return fail(e, EXIT_USAGE);
    }
    let (params, recorded) = match load_model(&args.checkpoint) {
        Ok(m) => m,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    let tokenizer = match generation_tokenizer(
        args.tokenizer.as_deref(),
        recorded.as_deref(),
        params.config().vocab_size,
    ) {
        Ok(t) => t,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    if tokenizer.vocab_size() > params.config().vocab_size {
        return fail(
            format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}: it is not this \
                 model's tokenizer",
                tokenizer.vocab_size(),
                params.config().vocab_size
            ),
            EXIT_USAGE,
        );
    }
    let mut context = match tokenizer.encode(&args.prompt) {
        Ok(ids) => ids,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    if let Some(bos) = tokenizer.bos_id() {
        context.insert(0, bos);
    }
    if context.is_empty() {
        // No prompt and no start token: a newline starts a fresh paragraph. It is encoded
        // rather than taken as byte 10, which is some other token in a learned vocabulary.
        match tokenizer.encode("\n") {
            Ok(ids) if !ids.is_empty() => context = ids,
            _ => {
                return fail(
                    "the prompt is empty and the tokenizer has no start token to begin \
                     from: pass some text with --prompt",
                    EXIT_USAGE,
                );
            }
        }
    }
    let device = match crate::select_device(args.device.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    let mut generator = match Generator::new(&device, params) {
        Ok(g) => g,
        Err(e) => return fail(&e, exit_code(&e)),
    };
    generator.limit_vocab(tokenizer.vocab_size());
    let mut sampler = TokenSampler::new(settings);
    let mut stream = match tokenizer.stream_after(&context) {
        Ok(s) => s,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{}", args.prompt);
    let _ = stdout.flush();
    let result = generator.generate(&mut context, args.tokens, &mut sampler, |id| {
        let text = stream.push(id)?;
        write!(stdout, "{text}")
            .and_then(|_| stdout.flush())
            .map_err(|e| Error::io("writing generated text", e))
    });
    let rest = stream.finish();
    let _ = writeln!(stdout, "{rest}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader closed the pipe (`| head`): it has all the text it wanted.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, EXIT_RUN_FAILED),
    }
}
