//! `anemone run`: compile a program on a device, feed it .npy inputs, evaluate, and write
//! every output as a .npy file in its declared dtype.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anemone::{Model, ModelOptions};
use anemone_mil::blob::ReadMode;
use anemone_mil::{DType, diag, text};

use crate::EXIT_USAGE;
use crate::npy;
use crate::source::Source;

#[derive(clap::Args)]
pub struct RunArgs {
    /// A .mil file (weights resolved from its directory), a model directory, or a Core ML
    /// model (.mlpackage directory or .mlmodel file).
    pub path: PathBuf,
    /// An input as NAME=FILE.npy (float32 or float16 for float inputs, integers for integer
    /// inputs; the shape must match the declaration).
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
    src.print_lowerings();
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
    model.evaluate().map_err(|e| data(e.to_string()))?;
    write_outputs(&model, &args.output_dir)?;

    if args.stats {
        print_stats(&model, compile_and_load);
    }
    Ok(())
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
        let array = npy::read(Path::new(file)).map_err(usage)?;
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
            if !matches!(array.data, npy::Data::F32(_) | npy::Data::F16(_)) {
                return Err(data(format!(
                    "input `{name}`: {file} must hold float32 or float16 values"
                )));
            }
            surface.write_f32(&array.data.to_f32()).map_err(|e| data(e.to_string()))?;
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
        .map_err(data)?;
        anemone_mil::blob::write_file_atomic(&path, &bytes)
            .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote {} ({})", path.display(), surface.tensor_type());
    }
    Ok(())
}

fn print_stats(model: &Model, compile_and_load: f64) {
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
    println!("evaluate         {:.3} ms", ms(s.evaluate_seconds));
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
