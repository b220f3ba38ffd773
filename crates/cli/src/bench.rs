//! `anemone bench`: a fixed suite of programs timed on a device, each reported with its
//! evaluate time, GFLOP/s and the ratio to this machine's f32 FMA peak measured in the same
//! run, plus compile, load and unload times.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anemone::{Device, Model};
use anemone_mil::builder::{Builder, BuiltProgram, ConvOptions};
use anemone_mil::package::{Weights, synthetic_weights};
use anemone_mil::{DType, Program, TensorType, ops, text, validate};

use crate::EXIT_USAGE;

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
A ratio above 1 is not an error: the peak is the CPU's, while the ANE device runs on the
Neural Engine, and the FLOP count is nominal, so a kernel that does less work than the
program states (or a peak measured while the machine was busy) can pass it.";

#[derive(clap::Args)]
#[command(after_help = COLUMNS)]
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
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=3600.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not between 0 and 3600")) }
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
}

struct Case {
    name: String,
    program: Program,
    weights: Weights,
}

pub fn run(args: &BenchArgs) -> ExitCode {
    let device = crate::select_device(args.device.as_deref());
    let device = match device {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
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
    eprintln!("measuring this machine's f32 FMA peak on all cores...");
    let first_peak = anemone::sim::peak::measure_f32_fma_peak_gflops(0);
    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, cases.len(), case.name);
        match measure(&device, case, first_peak, args.seconds) {
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
    if args.json {
        let doc = serde_json::json!({
            "device": device.kind().name(),
            "peak_gflops": peak,
            "cases": results,
        });
        println!("{doc}");
    } else {
        print_table(device.kind().name(), peak, &results);
    }
    ExitCode::SUCCESS
}

fn measure(device: &Device, case: &Case, peak: f64, seconds: f64) -> anemone::Result<CaseResult> {
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
    println!(
        "{:<34} {:>12} {:>10} {:>8} {:>11} {:>9} {:>10}",
        "case", "evaluate", "GFLOP/s", "of peak", "compile", "load", "unload"
    );
    for r in results {
        println!(
            "{:<34} {:>9.1} us {:>10.1} {:>8.2} {:>8.2} ms {:>6.3} ms {:>7.3} ms",
            r.name, r.evaluate_us, r.gflops, r.peak_ratio, r.compile_ms, r.load_ms, r.unload_ms
        );
    }
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
        built("attention 12 heads, seq 256, dim 64", attention(12, 256, 64)),
    ];
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

/// Multi-head attention on fp16 q, k, v [1, heads, seq, dim], fused.
fn attention(heads: usize, seq: usize, dim: usize) -> BuiltProgram {
    let mut b = Builder::new();
    let mut f = b.function("main");
    let ty = TensorType::new(DType::Fp16, [1, heads, seq, dim]);
    let q = f.input("q", ty.clone());
    let k = f.input("k", ty.clone());
    let v = f.input("v", ty);
    let a = f
        .op1(
            ops::OpKind::ScaledDotProductAttention,
            "sdpa",
            &[("query", (&q).into()), ("key", (&k).into()), ("value", (&v).into())],
        )
        .expect("valid");
    f.output_named(&a, "att").expect("valid");
    f.finish();
    b.build().expect("the attention program is valid")
}
