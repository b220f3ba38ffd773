//! `anemone bench`: a fixed suite of programs timed on a device, each reported with its
//! evaluate time, GFLOP/s and the ratio to this machine's f32 FMA peak measured in the same
//! run, plus compile, load and unload times and, where the device can time single ops, the
//! slowest op. `--json` writes the results as one versioned document ([`JSON_VERSION`]);
//! `--compare` reads such a document back and checks this run against it for regressions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anemone::{Device, Model};
use anemone_mil::builder::{
    Builder, BuiltProgram, ConvOptions, GeluOptions, LayerNormOptions, LinearOptions,
    ScaledDotProductAttentionOptions,
};
use anemone_mil::package::{Weights, synthetic_weights};
use anemone_mil::{DType, Program, TensorType, ops, text, validate};
use anemone_train::config::Config;
use anemone_train::kernels::{self, KernelKind};

use crate::EXIT_USAGE;

/// The version of the `--json` document; raised when a field changes meaning or goes away
/// (new fields may appear without a raise). Documents without the field predate it and are
/// read as version 0: the same case fields, without `slowest_op`.
const JSON_VERSION: u64 = 1;

/// What the table's columns mean, for `--help` and the table itself.
const COLUMNS: &str = "\
Columns:
  evaluate  median wall time of one evaluate, after 3 warm-up evaluations
  GFLOP/s   the op registry's FLOP count of the program as written, divided by that time
  of peak   GFLOP/s divided by this machine's f32 FMA peak on all CPU cores, measured
            before the cases and again after them (the higher counts: other work on the
            machine can only lower a measurement; stderr shows both)
  compile   validation, printing, hashing and the backend's compile (a fresh device per
            case, so never a cache hit); load and unload: one each, after the compile
  slowest op  the op that took the largest share of 3 profiled evaluations after the
            timed ones: its MIL type, its output and its share of the evaluate time (casts
            the simulator adds count for the op they serve); `-` on a device that runs a
            program as one unit (the ANE)
A ratio above 1 is not an error: the peak is the CPU's, while the ANE device runs on the
Neural Engine, and the FLOP count is nominal, so a kernel that does less work than the
program states (or a peak measured while the machine was busy) can pass it.";

/// The `--json` document and `--compare`, for `--help`.
const JSON_HELP: &str = "\
JSON (--json), version 1: {\"version\": 1, \"device\", \"peak_gflops\", \"seconds\" (the
minimum time per case), \"cases\": [{\"name\", \"flops\", \"evaluate_us\", \"gflops\",
\"peak_ratio\", \"compile_ms\", \"load_ms\", \"unload_ms\", \"evaluations\" (timed ones),
\"slowest_op\": {\"type\", \"output\", \"us\", \"share\" (0 to 1)} or null, with --ops N also
\"ops\": the N slowest in that form}], and with --compare
\"comparison\": {\"baseline\", \"tolerance_percent\", \"cases\": [{\"name\", \"old_us\",
\"new_us\", \"speedup\" (old_us / new_us), \"slower\"}], \"only_in_baseline\",
\"only_in_run\", \"slower\" (how many)}}. Times are microseconds unless the name says ms.

--compare FILE reads an earlier `bench --json` document (any version up to 1) and sets
each case's evaluate time against the one of the same name there. A case more than
--tolerance percent slower (new > old * (1 + tolerance / 100)) is marked SLOWER and makes
the exit status 1; cases present on one side only are listed and do not fail the check.";

#[derive(clap::Args)]
#[command(after_help = format!("{COLUMNS}\n\n{JSON_HELP}"))]
pub struct BenchArgs {
    /// sim, ane or auto (default: $ANEMONE_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
    /// Print one JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where the fixture programs 04, 05 and 08 are (default: ../shared/fixtures/mil-maderix
    /// or shared/fixtures/mil-maderix, whichever exists).
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Minimum time spent evaluating each case, in seconds (0 to 3600).
    #[arg(long, default_value_t = 0.5, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    pub only: Option<String>,
    /// Print the names of the cases (after --only) one a line, and run nothing.
    #[arg(long)]
    pub list: bool,
    /// Compare with an earlier `anemone bench --json` document: exit status 1 when a case
    /// got slower by more than --tolerance.
    #[arg(long, value_name = "FILE.json")]
    pub compare: Option<PathBuf>,
    /// How much slower than in the --compare document a case may get, in percent (0 to
    /// 1000; a trailing % is allowed).
    #[arg(long, default_value = "10", value_parser = parse_tolerance, value_name = "PERCENT")]
    pub tolerance: f64,
    /// After the table, list each case's N slowest ops with their times (and, with --json,
    /// add them to each case as `ops`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub ops: Option<u16>,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=3600.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not between 0 and 3600")) }
}

fn parse_tolerance(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%');
    let v: f64 = t.parse().map_err(|_| format!("`{s}` is not a percentage"))?;
    if (0.0..=1000.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v}% is not between 0% and 1000%"))
    }
}

/// One measured case.
#[derive(serde::Serialize)]
struct CaseResult {
    name: String,
    flops: u64,
    evaluate_us: f64,
    gflops: f64,
    peak_ratio: f64,
    compile_ms: f64,
    load_ms: f64,
    unload_ms: f64,
    evaluations: usize,
    /// `None` on a device without a per-op profile.
    slowest_op: Option<SlowestOp>,
    /// The slowest ops, slowest first, when `--ops` asked for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ops: Vec<SlowestOp>,
}

/// An op's share of a case's profiled evaluations.
#[derive(serde::Serialize, Clone)]
struct SlowestOp {
    /// The MIL op type (`conv`, `matmul`, ...).
    #[serde(rename = "type")]
    kind: String,
    /// The op's first output, as the program names it.
    output: String,
    /// Mean microseconds per evaluation.
    us: f64,
    /// Its share of the evaluate time, 0 to 1.
    share: f64,
}

struct Case {
    name: String,
    program: Program,
    weights: Weights,
}

pub fn run(args: &BenchArgs) -> ExitCode {
    let cases = match suite(args.fixtures.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| args.only.as_ref().is_none_or(|o| c.name.contains(o.as_str())))
        .collect();
    if args.list {
        for c in &cases {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
    }
    // Read the baseline before spending minutes on the suite: a typo fails at once.
    let baseline = match args.compare.as_deref().map(read_baseline).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: --compare {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let device = match crate::select_device(args.device.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if cases.is_empty() {
        eprintln!("note: no case name contains `{}`", args.only.as_deref().unwrap_or(""));
    }
    eprintln!("measuring this machine's f32 FMA peak on all cores...");
    let first_peak = anemone::sim::peak::measure_f32_fma_peak_gflops(0);
    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, cases.len(), case.name);
        let top = args.ops.map_or(1, usize::from);
        match measure(&device, case, first_peak, args.seconds, top) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: {}: {e}", case.name);
                return ExitCode::from(1);
            }
        }
    }
    // Measured again at the end: other work on the machine can only lower a measurement,
    // so the higher of the two is the better estimate of the true peak.
    let last_peak = anemone::sim::peak::measure_f32_fma_peak_gflops(0);
    let peak = first_peak.max(last_peak);
    eprintln!(
        "peak: {peak:.1} GFLOP/s (measured before the cases: {first_peak:.1}, after: \
         {last_peak:.1}; the higher is used)"
    );
    for r in &mut results {
        r.peak_ratio = r.gflops / peak;
    }
    let comparison = baseline.map(|b| compare(b, &results, args.tolerance));
    if let Some(c) = &comparison
        && let Some(old) = &c.baseline_device
        && old != device.kind().name()
    {
        eprintln!(
            "note: {} was measured on device {old}, this run on {}",
            c.baseline,
            device.kind().name()
        );
    }
    if args.json {
        let mut doc = serde_json::json!({
            "version": JSON_VERSION,
            "device": device.kind().name(),
            "peak_gflops": peak,
            "seconds": args.seconds,
            "cases": results,
        });
        if let Some(c) = &comparison {
            doc["comparison"] = serde_json::to_value(c).unwrap_or_default();
        }
        println!("{doc}");
    } else {
        print_table(device.kind().name(), peak, &results);
        if let Some(c) = &comparison {
            print_comparison(c, peak);
        }
    }
    match comparison {
        Some(c) if c.slower > 0 => {
            eprintln!(
                "{} case{} slower than {} by more than {}%",
                c.slower,
                if c.slower == 1 { "" } else { "s" },
                c.baseline,
                c.tolerance_percent
            );
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Times `case`; `top` is how many of its slowest ops to keep (at least the slowest).
fn measure(
    device: &Device,
    case: &Case,
    peak: f64,
    seconds: f64,
    top: usize,
) -> anemone::Result<CaseResult> {
    let flops = program_flops(&case.program);
    // A fresh device per case: every case pays a real compile, not a cache hit.
    let device = Device::by_name(device.kind().name())?;
    let mut model = device.compile(&case.program, &case.weights)?;
    let compile = model.stats().compile_seconds;
    fill_inputs(&mut model)?;
    model.unload()?;
    let unload = model.stats().unload_seconds;
    model.load()?;
    let load = model.stats().load_seconds;

    // Warm up (first-touch of buffers, scratch growth), then time single evaluations until
    // the budget is spent; report the median.
    for _ in 0..3 {
        model.evaluate()?;
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 100_000) {
        let t = Instant::now();
        model.evaluate()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gflops = flops as f64 / median / 1e9;
    // After the timed evaluations, so that the profile's clock reads cannot touch them.
    let mut ops = slowest_ops(&mut model, &case.program)?;
    ops.truncate(top);
    let slowest_op = ops.first().cloned();
    if top == 1 {
        ops.clear();
    }
    Ok(CaseResult {
        name: case.name.clone(),
        flops,
        evaluate_us: median * 1e6,
        gflops,
        peak_ratio: gflops / peak,
        compile_ms: compile * 1e3,
        load_ms: load * 1e3,
        unload_ms: unload * 1e3,
        evaluations: times.len(),
        slowest_op,
        ops,
    })
}

/// Profiled evaluations per case for the slowest op: more than one, so that a single
/// interruption does not crown the wrong op.
const PROFILE_RUNS: usize = 3;

/// Every op's time over [`PROFILE_RUNS`] profiled evaluations, slowest first; empty when the
/// device has no per-op profile.
fn slowest_ops(model: &mut Model, program: &Program) -> anemone::Result<Vec<SlowestOp>> {
    // (op name, op type) -> seconds, in first-seen order; a cast the simulator adds counts
    // for the op it serves, as its step carries that op's name.
    let mut per_op: Vec<(String, ops::OpKind, f64)> = Vec::new();
    let mut total = 0.0;
    for _ in 0..PROFILE_RUNS {
        let Some(steps) = model.evaluate_profiled()? else { return Ok(Vec::new()) };
        total += model.stats().evaluate_seconds;
        for step in steps {
            match per_op.iter_mut().find(|r| r.0 == step.op_name && r.1 == step.op_kind) {
                Some(r) => r.2 += step.seconds,
                None => per_op.push((step.op_name, step.op_kind, step.seconds)),
            }
        }
    }
    per_op.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(per_op
        .into_iter()
        .map(|(name, kind, seconds)| SlowestOp {
            kind: kind.name().to_string(),
            output: first_output(program, &name).unwrap_or(name),
            us: seconds / PROFILE_RUNS as f64 * 1e6,
            share: if total > 0.0 { (seconds / total).min(1.0) } else { 0.0 },
        })
        .collect())
}

/// The first output of the main function's op that the profile calls `op_name` (its `name`
/// attribute, else its first output).
fn first_output(program: &Program, op_name: &str) -> Option<String> {
    let f = program.main_function()?;
    f.block.operations.iter().find_map(|op| {
        let first = op.outputs.first()?.name.name.as_str();
        (op.name_attribute().unwrap_or(first) == op_name).then(|| first.to_string())
    })
}

/// Sum of the registry's FLOP counts over the main function.
fn program_flops(program: &Program) -> u64 {
    let Some(f) = program.main_function() else { return 0 };
    validate::resolve_function(f).ops.iter().map(|r| ops::flops(&r.context).unwrap_or(0)).sum()
}

/// Deterministic inputs in [-1, 1).
fn fill_inputs(model: &mut Model) -> anemone::Result<()> {
    let names: Vec<String> = model.input_names().iter().map(|s| s.to_string()).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for name in names {
        let s = model.input(&name)?;
        let values: Vec<f32> = (0..s.element_count())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        s.write_f32(&values)?;
    }
    Ok(())
}

fn print_table(device: &str, peak: f64, results: &[CaseResult]) {
    println!("device {device}, f32 FMA peak {peak:.1} GFLOP/s (all cores, measured now)");
    println!("{COLUMNS}\n");
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    println!(
        "{:<width$} {:>12} {:>10} {:>8} {:>11} {:>9} {:>10}  slowest op",
        "case", "evaluate", "GFLOP/s", "of peak", "compile", "load", "unload"
    );
    for r in results {
        let slowest = match &r.slowest_op {
            Some(op) => format!("{} {} {:.0}%", op.kind, op.output, op.share * 100.0),
            None => "-".to_string(),
        };
        println!(
            "{:<width$} {:>9.1} us {:>10.1} {:>8.2} {:>8.2} ms {:>6.3} ms {:>7.3} ms  {slowest}",
            r.name, r.evaluate_us, r.gflops, r.peak_ratio, r.compile_ms, r.load_ms, r.unload_ms
        );
    }
    if results.iter().any(|r| !r.ops.is_empty()) {
        println!("\nslowest ops (mean per evaluation, share of the evaluate time)");
        for r in results.iter().filter(|r| !r.ops.is_empty()) {
            println!("{}", r.name);
            for op in &r.ops {
                println!(
                    "  {:>10.1} us {:>5.1}%  {} {}",
                    op.us,
                    op.share * 100.0,
                    op.kind,
                    op.output
                );
            }
        }
    }
}

/// An earlier `--json` document, as much of it as a comparison needs.
#[derive(serde::Deserialize)]
struct Baseline {
    /// Absent in documents written before the field existed (version 0).
    #[serde(default)]
    version: u64,
    device: Option<String>,
    peak_gflops: Option<f64>,
    cases: Vec<BaselineCase>,
    #[serde(skip)]
    path: String,
}

#[derive(serde::Deserialize)]
struct BaselineCase {
    name: String,
    evaluate_us: f64,
}

fn read_baseline(path: &Path) -> Result<Baseline, String> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut doc: Baseline = serde_json::from_str(&text)
        .map_err(|e| format!("{shown}: not an `anemone bench --json` document: {e}"))?;
    if doc.version > JSON_VERSION {
        return Err(format!(
            "{shown}: document version {} is newer than this anemone reads (up to \
             {JSON_VERSION})",
            doc.version
        ));
    }
    for (i, c) in doc.cases.iter().enumerate() {
        if !(c.evaluate_us.is_finite() && c.evaluate_us > 0.0) {
            return Err(format!(
                "{shown}: case `{}`: evaluate_us is {}, not a positive time",
                c.name, c.evaluate_us
            ));
        }
        if doc.cases[..i].iter().any(|d| d.name == c.name) {
            return Err(format!("{shown}: case `{}` appears twice", c.name));
        }
    }
    doc.path = shown;
    Ok(doc)
}

/// This run set against a baseline, case by case.
#[derive(serde::Serialize)]
struct Comparison {
    baseline: String,
    #[serde(skip)]
    baseline_device: Option<String>,
    #[serde(skip)]
    baseline_peak: Option<f64>,
    tolerance_percent: f64,
    cases: Vec<CaseComparison>,
    only_in_baseline: Vec<String>,
    only_in_run: Vec<String>,
    /// How many cases got slower by more than the tolerance.
    slower: usize,
}

#[derive(serde::Serialize)]
struct CaseComparison {
    name: String,
    old_us: f64,
    new_us: f64,
    /// old / new: above 1 is faster now.
    speedup: f64,
    /// Slower by more than the tolerance.
    slower: bool,
}

fn compare(baseline: Baseline, results: &[CaseResult], tolerance_percent: f64) -> Comparison {
    let limit = 1.0 + tolerance_percent / 100.0;
    let mut cases = Vec::new();
    let mut only_in_run = Vec::new();
    for r in results {
        match baseline.cases.iter().find(|c| c.name == r.name) {
            Some(old) => cases.push(CaseComparison {
                name: r.name.clone(),
                old_us: old.evaluate_us,
                new_us: r.evaluate_us,
                speedup: old.evaluate_us / r.evaluate_us,
                slower: r.evaluate_us > old.evaluate_us * limit,
            }),
            None => only_in_run.push(r.name.clone()),
        }
    }
    let only_in_baseline = baseline
        .cases
        .iter()
        .filter(|c| !results.iter().any(|r| r.name == c.name))
        .map(|c| c.name.clone())
        .collect();
    Comparison {
        slower: cases.iter().filter(|c| c.slower).count(),
        baseline: baseline.path,
        baseline_device: baseline.device,
        baseline_peak: baseline.peak_gflops,
        tolerance_percent,
        cases,
        only_in_baseline,
        only_in_run,
    }
}

fn print_comparison(c: &Comparison, peak: f64) {
    let old_peak = match c.baseline_peak {
        Some(p) => format!("peak {p:.1} GFLOP/s then, {peak:.1} now"),
        None => format!("peak {peak:.1} GFLOP/s now"),
    };
    println!(
        "\ncompared with {} ({old_peak}); speed-up = old / new time; SLOWER: more than {}% \
         slower",
        c.baseline, c.tolerance_percent
    );
    let width = c.cases.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    println!("{:<width$} {:>12} {:>12} {:>9}", "case", "old", "new", "speed-up");
    for r in &c.cases {
        let mark = if r.slower {
            format!("  SLOWER (+{:.1}%)", (r.new_us / r.old_us - 1.0) * 100.0)
        } else {
            String::new()
        };
        println!(
            "{:<width$} {:>9.1} us {:>9.1} us {:>8.2}x{mark}",
            r.name, r.old_us, r.new_us, r.speedup
        );
    }
    for (label, names) in
        [("only in the baseline", &c.only_in_baseline), ("only in this run", &c.only_in_run)]
    {
        if !names.is_empty() {
            println!("{label}: {}", names.join("; "));
        }
    }
    println!("{} of {} compared cases slower", c.slower, c.cases.len());
}

/// The fixed suite.
fn suite(fixtures: Option<&Path>) -> Result<Vec<Case>, String> {
    let built = |name: &str, b: BuiltProgram| Case {
        name: name.to_string(),
        program: b.program,
        weights: b.weights,
    };
    let mut cases = vec![
        built("seed conv 64x64, spatial 32", seed_conv()),
        built("conv 1x1 768->768, spatial 256", conv_1x1(768, 768, 256)),
        built("conv 1x1 768->2048, spatial 256", conv_1x1(768, 2048, 256)),
        built("conv 3x3 64->64, 56x56", conv_3x3(64, 64, 56)),
        built("attention 12 heads, seq 256, dim 64", attention(12, 256, 64)),
        built("mlp: layer_norm + linear + gelu", mlp(256, 768, 3072)),
    ];
    // The training kernels exactly as a stories15m run builds and compiles them: the
    // preset's batch of sequences per evaluation, the train crate's own builders.
    let preset = "stories15m";
    let config = Config::preset(preset).ok_or_else(|| format!("no {preset} preset"))?;
    let tokens = format!("{}x{}", config.train.batch, config.model.seq_len);
    for kind in KernelKind::ALL {
        let k = kernels::build_for(kind, &config.model, config.train.batch)
            .map_err(|e| format!("{preset} {}: {e}", kind.name()))?;
        cases.push(built(&format!("{preset} {}, {tokens} tokens", kind.name()), k.built));
    }
    match find_fixtures(fixtures) {
        Some(dir) => {
            for (prefix, name) in [
                ("04", "fixture 04 (sdpa fwd + taps)"),
                ("05", "fixture 05 (ffn bwd)"),
                ("08", "fixture 08 (qwen3 dynamic rope)"),
            ] {
                let path = std::fs::read_dir(&dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| {
                        p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                    })
                    .ok_or_else(|| format!("no fixture {prefix} in {}", dir.display()))?;
                let src = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let program =
                    text::parse(&src).map_err(|d| format!("{}: {}", path.display(), d.message))?;
                let weights = synthetic_weights(&program, 1)?;
                cases.push(Case { name: name.to_string(), program, weights });
            }
        }
        None => eprintln!(
            "note: fixture programs not found (pass --fixtures DIR); skipping fixtures 04, 05, 08"
        ),
    }
    Ok(cases)
}

fn find_fixtures(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = given {
        return Some(d.to_path_buf());
    }
    ["../shared/fixtures/mil-maderix", "shared/fixtures/mil-maderix"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
}

/// A deterministic weight pattern in [-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn pattern(n: usize, fan_in: usize) -> Vec<f32> {
    let scale = 1.0 / (fan_in as f32).sqrt();
    (0..n)
        .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 2001) as f32 / 1000.0 - 1.0)
        .map(|v| v * scale)
        .collect()
}

/// The seed's program: fp32 x -> fp16 -> 1x1 conv 64x64 -> fp32, spatial 32.
fn seed_conv() -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp32, [1, 64, 1, 32]));
    let x16 = f.cast(&x, DType::Fp16).expect("valid");
    let w = f
        .weight("W", TensorType::new(DType::Fp16, [64, 64, 1, 1]), &pattern(64 * 64, 64))
        .expect("valid");
    let y = f.conv(&x16, &w, &ConvOptions::default()).expect("valid");
    let y = f.cast(&y, DType::Fp32).expect("valid");
    f.output_named(&y, "y").expect("valid");
    f.finish();
    b.build().expect("the seed program is valid")
}

/// fp16 [1, cin, 1, spatial] -> 1x1 conv -> [1, cout, 1, spatial].
fn conv_1x1(cin: usize, cout: usize, spatial: usize) -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp16, [1, cin, 1, spatial]));
    let w = f
        .weight("W", TensorType::new(DType::Fp16, [cout, cin, 1, 1]), &pattern(cin * cout, cin))
        .expect("valid");
    let y = f.conv(&x, &w, &ConvOptions::default()).expect("valid");
    f.output_named(&y, "y").expect("valid");
    f.finish();
    b.build().expect("the conv program is valid")
}

/// fp16 [1, cin, size, size] -> 3x3 conv, padding `same`, with bias -> [1, cout, size, size].
fn conv_3x3(cin: usize, cout: usize, size: usize) -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp16, [1, cin, size, size]));
    let w = f
        .weight(
            "W",
            TensorType::new(DType::Fp16, [cout, cin, 3, 3]),
            &pattern(cout * cin * 9, cin * 9),
        )
        .expect("valid");
    let bias =
        f.weight("bias", TensorType::new(DType::Fp16, [cout]), &pattern(cout, 1)).expect("valid");
    let options = ConvOptions { pad_type: "same".into(), bias: Some(bias), ..Default::default() };
    let y = f.conv(&x, &w, &options).expect("valid");
    f.output_named(&y, "y").expect("valid");
    f.finish();
    b.build().expect("the conv program is valid")
}

/// A GPT-2 style MLP block on fp16 x [1, seq, dim]: layer_norm over the last axis (gamma,
/// beta), linear dim -> hidden with bias, gelu (tanh approximation), linear hidden -> dim
/// with bias.
fn mlp(seq: usize, dim: usize, hidden: usize) -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let x = f.input("x", TensorType::new(DType::Fp16, [1, seq, dim]));
    let vector = |f: &mut anemone_mil::builder::FunctionBuilder<'_>, name: &str, n, offset| {
        let values: Vec<f32> = pattern(n, 16).iter().map(|v| v + offset).collect();
        f.weight(name, TensorType::new(DType::Fp16, [n]), &values).expect("valid")
    };
    let gamma = vector(&mut f, "gamma", dim, 1.0);
    let beta = vector(&mut f, "beta", dim, 0.0);
    let norm = LayerNormOptions {
        axes: Some(vec![-1]),
        gamma: Some(gamma),
        beta: Some(beta),
        epsilon: Some(1e-5),
    };
    let h = f.layer_norm(&x, &norm).expect("valid");
    let w1 = f
        .weight("w1", TensorType::new(DType::Fp16, [hidden, dim]), &pattern(hidden * dim, dim))
        .expect("valid");
    let b1 = vector(&mut f, "b1", hidden, 0.0);
    let h = f.linear(&h, &w1, &LinearOptions { bias: Some(b1) }).expect("valid");
    let gelu = GeluOptions { mode: Some("TANH_APPROXIMATION".into()) };
    let h = f.gelu(&h, &gelu).expect("valid");
    let w2 = f
        .weight("w2", TensorType::new(DType::Fp16, [dim, hidden]), &pattern(dim * hidden, hidden))
        .expect("valid");
    let b2 = vector(&mut f, "b2", dim, 0.0);
    let y = f.linear(&h, &w2, &LinearOptions { bias: Some(b2) }).expect("valid");
    f.output_named(&y, "y").expect("valid");
    f.finish();
    b.build().expect("the mlp program is valid")
}

/// Multi-head attention on fp16 q, k, v [1, heads, seq, dim], fused.
fn attention(heads: usize, seq: usize, dim: usize) -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let ty = TensorType::new(DType::Fp16, [1, heads, seq, dim]);
    let q = f.input("q", ty.clone());
    let k = f.input("k", ty.clone());
    let v = f.input("v", ty);
    let a = f
        .scaled_dot_product_attention(&q, &k, &v, &ScaledDotProductAttentionOptions::default())
        .expect("valid");
    f.output_named(&a, "att").expect("valid");
    f.finish();
    b.build().expect("the attention program is valid")
}
