//! The `anemone` command: check, format, pack weights for, run and benchmark MIL programs,
//! and import Core ML models.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod check;
mod fmt;
mod import;
mod ops;
mod probe;
mod run;
mod train;
mod weights;

/// Program Apple's Neural Engine from MIL: check and format programs, pack weights, and run
/// them on the ANE or on a faithful CPU simulator.
#[derive(Parser)]
#[command(name = "anemone", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate a MIL program: errors, then Neural Engine lints.
    ///
    /// Exits 0 when there are no errors (warnings allowed), 1 when there are, 2 when the
    /// program cannot be read or the command line is wrong.
    Check(check::CheckArgs),
    /// Print a MIL program in canonical form (the form the ANE compiler takes).
    Fmt(fmt::FmtArgs),
    /// The op reference: every op on one line each, or one op's inputs, types, defaults,
    /// attributes, result shape, ANE notes and lints.
    ///
    /// With --markdown, the whole reference as Markdown (docs/ops.md).
    Ops(ops::OpsArgs),
    /// Compile a program on a device, evaluate it on .npy inputs, write .npy outputs.
    ///
    /// Takes MIL (a .mil file or model directory) or a Core ML model (.mlpackage or
    /// .mlmodel), which runs as imported, with the rewrites the ANE needs.
    Run(run::RunArgs),
    /// Write a Core ML model (.mlpackage or .mlmodel) as a model directory: model.mil and
    /// weights/, rewritten where the ANE deviates from MIL.
    Import(import::ImportArgs),
    /// Time a fixed suite of programs on a device: evaluate time, GFLOP/s, ratio to this
    /// machine's f32 FMA peak, and compile, load and unload times.
    Bench(bench::BenchArgs),
    /// Probe a device: the weight-reload experiment, available backends.
    Probe {
        #[command(subcommand)]
        cmd: probe::ProbeCommand,
    },
    /// Train a llama-style transformer on text with compile-once device kernels.
    ///
    /// Writes DIR/checkpoint.safetensors (weights, AdamW state, step, data RNG) and
    /// DIR/loss.svg. Exits 0 when the run finished or stopped at --stop-after, 1 when it
    /// failed (e.g. the loss became NaN; the last good checkpoint is kept), 2 on bad input.
    Train(Box<train::TrainArgs>),
    /// Generate text from a trained model (a training directory, checkpoint or llama2.c
    /// .bin), streaming tokens as the device produces them.
    Generate(train::GenerateArgs),
    /// Write, inspect and bind weight files (MILBlob v2, weights/*.bin) from .npy, .npz and
    /// .safetensors arrays.
    Weights {
        #[command(subcommand)]
        cmd: weights::WeightsCommand,
    },
}

/// Exit status for usage and I/O problems, as clap uses for bad arguments.
pub const EXIT_USAGE: u8 = 2;

/// The device `--device` names, else the one `ANEMONE_DEVICE` names, else auto.
pub fn select_device(name: Option<&str>) -> anemone::Result<anemone::Device> {
    match name {
        Some(name) => anemone::Device::by_name(name),
        None => anemone::Device::from_env(),
    }
}

/// Prints the rewrites made to a Core ML program for the ANE as notes on stderr.
pub fn print_lowerings(src: &anemone::source::Source) {
    for l in src.lowerings() {
        eprintln!("note: rewritten for the ANE: {l}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Fmt(args) => fmt::run(&args),
        Command::Ops(args) => ops::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Probe { cmd } => probe::run(cmd),
        Command::Weights { cmd } => weights::run(cmd),
        Command::Train(args) => train::train(&args),
        Command::Generate(args) => train::generate(&args),
    }
}
