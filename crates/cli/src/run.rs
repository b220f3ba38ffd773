//! `anemone run`: compile a program on a device, feed it .npy inputs, evaluate, and write
//! every output as a .npy file in its declared dtype.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anemone::device::{AddedStep, StepTime};
use anemone::{Model, ModelOptions};
use anemone_mil::blob::ReadMode;
use anemone_mil::ops::OpKind;
use anemone_mil::{DType, diag, text, validate};

use crate::EXIT_USAGE;
use anemone::npy;
use anemone::source::Source;

#[derive(clap::Args)]
pub struct RunArgs {
    /// A .mil file (weights resolved from its directory), a model directory, or a Core ML
    /// model (.mlpackage directory or .mlmodel file).
    pub path: PathBuf,
    /// An input as NAME=FILE.npy; the shape must match the declaration. Float inputs take
    /// any numeric array (float64 and integers are rounded to the declared type as
    /// `weights pack` rounds, and what was lost is reported); integer inputs take integers
    /// and whole-valued floats that fit.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Where to write NAME.npy for every output.
    #[arg(long, short = 'o', default_value = ".")]
    pub output_dir: PathBuf,
    /// sim, ane or auto (default: $ANEMONE_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<String>,
    /// The function to run (default: `main`, else the first).
    #[arg(long)]
    pub function: Option<String>,
    /// Print compile, load and evaluate times and peak memory.
    #[arg(long)]
    pub stats: bool,
    /// Timed evaluations (after the warm-up ones); the evaluate time is reported as their
    /// minimum, median and mean. Outputs are written once, from the last.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub repeat: u32,
    /// Untimed evaluations before the timed ones (first touch of buffers, scratch growth,
    /// caches).
    #[arg(long, default_value_t = 0, value_name = "K", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub warmup: u32,
    /// Time every op and print a table: op, type, time, share of the evaluate time and
    /// GFLOP/s, slowest first (averaged over the --repeat evaluations). The simulator only:
    /// the ANE runs a program as one unit.
    #[arg(long)]
    pub profile: bool,
    /// Read weight files leniently (maderix-style headers), as the ANE compiler does.
    #[arg(long)]
    pub lenient: bool,
    /// Ignore weight files and use deterministic generated weights of the declared types
    /// (to try programs that come without their weights).
    #[arg(long)]
    pub synthetic_weights: bool,
}

/// A failure with its exit status: 1 for a program or data problem, 2 for usage or I/O.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: EXIT_USAGE, message: message.into() }
}

fn data(message: impl Into<String>) -> Failure {
    Failure { code: 1, message: message.into() }
}

pub fn run(args: &RunArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn run_inner(args: &RunArgs) -> Result<(), Failure> {
    let src = Source::load(&args.path).map_err(usage)?;
    let program = text::parse(&src.text).map_err(|d| {
        let color = std::io::stderr().is_terminal();
        eprint!("{}", diag::render(&d, &src.display_name, &src.text, color));
        data("")
    })?;
    crate::print_lowerings(&src);
    let weights = if args.synthetic_weights {
        anemone_mil::package::synthetic_weights(&program, 1).map_err(data)?
    } else if let Some(weights) = src.imported_weights() {
        weights.clone()
    } else {
        src.model_dir.load_weights(&program).map_err(|diags| {
            let color = std::io::stderr().is_terminal();
            for d in &diags {
                eprint!("{}", diag::render(d, &src.display_name, &src.text, color));
            }
            usage("the weight files could not be read (--synthetic-weights runs without them)")
        })?
    };
    let device = crate::select_device(args.device.as_deref()).map_err(|e| usage(e.to_string()))?;

    let read_mode = if args.lenient { ReadMode::Lenient } else { ReadMode::Strict };
    let options = ModelOptions { function: args.function.clone(), read_mode };
    let t = Instant::now();
    let mut model = device.compile_with(&program, &weights, &options).map_err(|e| match e {
        anemone::Error::Invalid(diags) => {
            let color = std::io::stderr().is_terminal();
            for d in diags.iter().filter(|d| d.is_error()) {
                eprint!("{}", diag::render(d, &src.display_name, &src.text, color));
            }
            data("the program has errors; `anemone check` lists them with the lints")
        }
        other => data(other.to_string()),
    })?;
    let compile_and_load = t.elapsed().as_secs_f64();

    feed_inputs(&mut model, &args.inputs)?;
    let failed = |e: anemone::Error| data(e.to_string());
    for _ in 0..args.warmup {
        model.evaluate().map_err(failed)?;
    }
    let mut times = Vec::with_capacity(args.repeat as usize);
    let mut profile: Option<Profile> = None;
    for _ in 0..args.repeat {
        if args.profile {
            if let Some(steps) = model.evaluate_profiled().map_err(failed)? {
                profile.get_or_insert_with(Profile::default).add(&steps);
            }
        } else {
            model.evaluate().map_err(failed)?;
        }
        times.push(model.stats().evaluate_seconds);
    }
    write_outputs(&model, &args.output_dir)?;

    let timing = Timing::of(&times);
    if args.stats {
        print_stats(&model, compile_and_load, &timing);
    } else if args.repeat > 1 || args.warmup > 0 {
        println!("{}", timing.line(args.warmup));
    }
    if args.profile {
        match &profile {
            Some(p) => print!("{}", p.table(model.program(), model.function(), timing.mean)),
            None => println!(
                "per-op times are not available on the {} device: it runs the program as \
                 one unit (use --device sim for a per-op profile); evaluate took {:.3} ms",
                model.device().kind(),
                timing.mean * 1e3
            ),
        }
    }
    Ok(())
}

/// Evaluate times of the timed evaluations.
struct Timing {
    count: usize,
    min: f64,
    median: f64,
    mean: f64,
}

impl Timing {
    fn of(times: &[f64]) -> Timing {
        let mut sorted = times.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Timing {
            count: n,
            min: sorted.first().copied().unwrap_or(0.0),
            median,
            mean: if n == 0 { 0.0 } else { sorted.iter().sum::<f64>() / n as f64 },
        }
    }

    fn line(&self, warmup: u32) -> String {
        if self.count == 1 {
            return format!("evaluate         {:.3} ms (after {warmup} warm-up)", self.mean * 1e3);
        }
        format!(
            "evaluate         min {:.3} ms, median {:.3} ms, mean {:.3} ms ({} timed, {warmup} warm-up)",
            self.min * 1e3,
            self.median * 1e3,
            self.mean * 1e3,
            self.count
        )
    }
}

/// Per-op seconds summed over the profiled evaluations.
#[derive(Default)]
struct Profile {
    evaluations: usize,
    /// (op name, op kind, added-step marker) -> seconds, in first-seen order.
    rows: Vec<(String, OpKind, Option<AddedStep>, f64)>,
}

impl Profile {
    fn add(&mut self, steps: &[StepTime]) {
        self.evaluations += 1;
        for s in steps {
            let row = self
                .rows
                .iter_mut()
                .find(|r| r.0 == s.op_name && r.1 == s.op_kind && r.2 == s.added);
            match row {
                Some(r) => r.3 += s.seconds,
                None => self.rows.push((s.op_name.clone(), s.op_kind, s.added, s.seconds)),
            }
        }
    }

    /// The table, slowest first, with the rows' sum set against the measured mean evaluate
    /// time `total` (the difference is the copying of inputs and outputs and the loop).
    fn table(&self, program: &anemone_mil::Program, function: &str, total: f64) -> String {
        use std::fmt::Write as _;
        let flops = op_flops(program, function);
        let per_eval = self.evaluations.max(1) as f64;
        let mut rows: Vec<_> = self.rows.iter().map(|r| (r, r.3 / per_eval)).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        let label = |(name, _, added, _): &(String, OpKind, Option<AddedStep>, f64)| match added {
            Some(a) => format!("{name} [cast {}]", a.label()),
            None => name.clone(),
        };
        let width = rows.iter().map(|(r, _)| label(r).len()).max().unwrap_or(0).max(2);
        let kind_width = rows.iter().map(|(r, _)| r.1.name().len()).max().unwrap_or(0).max(4);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<width$}  {:<kind_width$}  {:>10}  {:>6}  {:>8}",
            "op", "type", "time", "share", "GFLOP/s"
        );
        let mut sum = 0.0;
        for (r, secs) in &rows {
            sum += secs;
            // A fused row's time covers several ops: no one op's FLOP count fits it.
            let gflops = match (r.2, flops.get(r.0.as_str())) {
                (None, Some(&(kind, f))) if kind == r.1 && f > 0 && *secs > 0.0 => {
                    format!("{:.1}", f as f64 / secs / 1e9)
                }
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:<kind_width$}  {:>7.3} ms  {:>5.1}%  {:>8}",
                label(r),
                r.1.name(),
                secs * 1e3,
                if total > 0.0 { secs / total * 100.0 } else { 0.0 },
                gflops
            );
        }
        let _ = writeln!(
            out,
            "sum of ops {:.3} ms of evaluate total {:.3} ms ({:.1}%; the rest copies inputs \
             and outputs){}",
            sum * 1e3,
            total * 1e3,
            if total > 0.0 { sum / total * 100.0 } else { 0.0 },
            if self.evaluations > 1 {
                format!(", means of {} evaluations", self.evaluations)
            } else {
                String::new()
            }
        );
        let fused = |r: &(String, OpKind, Option<AddedStep>, f64)| {
            flops.get(r.0.as_str()).is_some_and(|&(kind, _)| kind != r.1)
        };
        if rows.iter().any(|(r, _)| r.2.is_none() && fused(r)) {
            let _ = writeln!(
                out,
                "a row whose type is not its op's is ops run fused under the last one's name: \
                 scaled_dot_product_attention for attention spelled out as matmul, mul, \
                 [add,] softmax, matmul"
            );
        }
        if rows.iter().any(|(r, _)| r.2.is_some()) {
            let _ = writeln!(
                out,
                "[cast ...] rows are conversions the simulator adds around fp32 arithmetic, \
                 which runs in fp16 as on the ANE"
            );
        }
        out
    }
}

/// The kind and the registry's FLOP count of every op of `function`, by op name (its `name`
/// attribute, else its first result, as the profile names steps).
fn op_flops<'a>(
    program: &'a anemone_mil::Program,
    function: &str,
) -> std::collections::HashMap<&'a str, (OpKind, u64)> {
    let Some(f) = program.function(function) else { return Default::default() };
    validate::resolve_function(f)
        .ops
        .iter()
        .filter_map(|r| {
            let first = r.op.outputs.first().map(|o| o.name.name.as_str());
            let name = r.op.name_attribute().or(first)?;
            Some((name, (r.context.kind, anemone_mil::ops::flops(&r.context).unwrap_or(0))))
        })
        .collect()
}

fn feed_inputs(model: &mut Model, specs: &[String]) -> Result<(), Failure> {
    let mut given: Vec<String> = Vec::new();
    for spec in specs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| usage(format!("--input `{spec}`: expected NAME=FILE.npy")))?;
        if given.iter().any(|g| g == name) {
            return Err(usage(format!("input `{name}` is given twice")));
        }
        let surface = model.input(name).map_err(|e| usage(e.to_string()))?;
        let array = npy::read(Path::new(file)).map_err(|e| usage(e.to_string()))?;
        if array.shape != surface.shape() {
            return Err(data(format!(
                "input `{name}`: {file} has shape {:?} but the program declares {}",
                array.shape,
                surface.tensor_type()
            )));
        }
        let dtype = surface.dtype();
        if dtype.is_int() {
            let bytes = npy::integers_as(&array.data, dtype)
                .map_err(|e| data(format!("input `{name}`: {file}: {e}")))?;
            surface.write_bytes(&bytes).map_err(|e| data(e.to_string()))?;
        } else {
            match (&array.data, dtype) {
                (npy::Data::F32(v), DType::Fp32) => surface.write_f32(v),
                (npy::Data::F16(v), DType::Fp16) => surface.write_f16(v),
                (values, _) => {
                    // Any other numeric array is converted as `weights pack` converts it;
                    // what the conversion lost is said, not silently absorbed.
                    let (bytes, conversion) = npy::floats_as(values, dtype)
                        .map_err(|e| data(format!("input `{name}`: {file}: {e}")))?;
                    if !conversion.is_exact() {
                        eprintln!(
                            "{}: input `{name}`: {}",
                            if conversion.is_harmful() { "warning" } else { "note" },
                            conversion.describe(values.type_name(), dtype)
                        );
                    }
                    surface.write_bytes(&bytes)
                }
            }
            .map_err(|e| data(e.to_string()))?;
        }
        given.push(name.to_string());
    }
    let missing: Vec<&str> =
        model.input_names().into_iter().filter(|n| !given.iter().any(|g| g == n)).collect();
    if !missing.is_empty() {
        return Err(usage(format!(
            "missing input(s): {} (give each as --input NAME=FILE.npy)",
            missing.join(", ")
        )));
    }
    Ok(())
}

fn write_outputs(model: &Model, dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    for surface in model.outputs() {
        let path = dir.join(format!("{}.npy", surface.name()));
        let shape: Vec<u64> = surface.shape().iter().map(|&d| d as u64).collect();
        let bytes = match surface.dtype() {
            DType::Fp16 => {
                npy::encode_f16(&shape, &surface.read_f16().map_err(|e| data(e.to_string()))?)
            }
            d if d.is_int() || d == DType::Bool => {
                let raw = surface.try_read_bytes().map_err(|e| data(e.to_string()))?;
                npy::encode_raw(&shape, d, &raw)
            }
            _ => npy::encode_f32(&shape, &surface.read_f32().map_err(|e| data(e.to_string()))?),
        }
        .map_err(|e| data(e.to_string()))?;
        anemone_mil::blob::write_file_atomic(&path, &bytes)
            .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote {} ({})", path.display(), surface.tensor_type());
    }
    Ok(())
}

fn print_stats(model: &Model, compile_and_load: f64, timing: &Timing) {
    let s = model.stats();
    let ms = |secs: f64| secs * 1e3;
    println!("device           {}", model.device().kind());
    println!(
        "compile          {:.3} ms{}",
        ms(s.compile_seconds),
        if s.cache_hit { " (cache hit)" } else { "" }
    );
    println!("load             {:.3} ms", ms(s.load_seconds));
    println!(
        "compile+load     {:.3} ms (wall, with validation and weight snapshot)",
        ms(compile_and_load)
    );
    if timing.count > 1 {
        println!(
            "evaluate         min {:.3} ms, median {:.3} ms, mean {:.3} ms ({} timed)",
            ms(timing.min),
            ms(timing.median),
            ms(timing.mean),
            timing.count
        );
    } else {
        println!("evaluate         {:.3} ms", ms(s.evaluate_seconds));
    }
    println!(
        "peak activations {} (all intermediates together: {})",
        human_bytes(model.peak_memory_bytes()),
        human_bytes(model.intermediate_bytes())
    );
    println!("kernel scratch   {}", human_bytes(model.scratch_bytes()));
    println!("input surfaces   {}", human_bytes(s.input_bytes));
    println!("output surfaces  {}", human_bytes(s.output_bytes));
    println!("surface padding  {}", human_bytes(s.padding_bytes));
}

pub fn human_bytes(b: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
