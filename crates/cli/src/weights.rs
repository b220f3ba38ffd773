//! `anemone weights`: make and inspect weight blob files.
//!
//! - `anemone weights pack NAME=FILE.npy ... -o weights/weight.bin [--dtype fp16]` stores
//!   each .npy array as one blob (in the order given) and prints, per NAME, the BLOBFILE
//!   literal to paste into MIL.
//! - `anemone weights list FILE [--lenient]` prints every record of a blob file.
//!
//! Exit codes: 0 success, 1 invalid or corrupt data (a damaged blob file, a value the target
//! dtype cannot hold, an unreadable .npy), 2 usage or I/O problems.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anemone_mil::blob::{BlobFile, BlobRecord, BlobWriter, ReadMode};
use anemone_mil::package::{MODEL_PATH_PREFIX, blob_relative_path};
use anemone_mil::{DType, TensorType, Type, bf16, f16};

use anemone::npy;

#[derive(Debug, clap::Subcommand)]
pub enum WeightsCommand {
    /// Write a blob file from .npy arrays and print the BLOBFILE literal of each.
    Pack(PackArgs),
    /// List the records of a blob file.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// One blob per NAME=FILE.npy, stored in the order given. float16/32/64, (u)int8..64 and
    /// bool arrays are read, in C or Fortran order.
    #[arg(required = true, value_name = "NAME=FILE.npy")]
    pub arrays: Vec<String>,
    /// The blob file to write; it is replaced atomically.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// The storage type of every blob. Float targets round to nearest even and refuse finite
    /// values that would overflow; integer targets refuse values that are not integers or do
    /// not fit.
    #[arg(long, value_enum, default_value_t = PackDType::Fp16)]
    pub dtype: PackDType,
    /// Where the output sits inside the model directory (the directory holding model.mil),
    /// for the printed BLOBFILE paths: e.g. `weights` gives
    /// `@model_path/weights/<output file name>`. Needed unless the output is written into a
    /// directory named `weights`, which is then taken to sit in the model directory.
    #[arg(long, value_name = "DIR")]
    pub model_path_prefix: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The blob file.
    pub file: PathBuf,
    /// Accept files from hand-written producers: ignore the header's count and find records
    /// by their sentinel at 64-byte boundaries.
    #[arg(long)]
    pub lenient: bool,
}

/// The storage types `pack` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PackDType {
    Fp16,
    Fp32,
    Bf16,
    Int8,
    Uint8,
    Int16,
    Uint16,
    Int32,
    Uint32,
}

impl PackDType {
    pub fn dtype(self) -> DType {
        match self {
            PackDType::Fp16 => DType::Fp16,
            PackDType::Fp32 => DType::Fp32,
            PackDType::Bf16 => DType::Bf16,
            PackDType::Int8 => DType::Int8,
            PackDType::Uint8 => DType::UInt8,
            PackDType::Int16 => DType::Int16,
            PackDType::Uint16 => DType::UInt16,
            PackDType::Int32 => DType::Int32,
            PackDType::Uint32 => DType::UInt32,
        }
    }
}

/// A failure and the exit code it maps to.
#[derive(Debug)]
enum Failure {
    /// Bad arguments or files that cannot be read or written: exit 2.
    Usage(String),
    /// Data that is invalid or corrupt: exit 1.
    Data(String),
}

pub fn run(cmd: WeightsCommand) -> ExitCode {
    let result = match cmd {
        WeightsCommand::Pack(args) => pack(&args),
        WeightsCommand::List(args) => list(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Data(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// pack

fn pack(args: &PackArgs) -> Result<(), Failure> {
    let dtype = args.dtype.dtype();
    let blob_path = blob_path_for(&args.output, args.model_path_prefix.as_deref())?;
    let mut inputs: Vec<(&str, &str)> = Vec::new();
    for spec in &args.arrays {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("`{spec}` is not NAME=FILE.npy")))?;
        if name.is_empty() || file.is_empty() {
            return Err(Failure::Usage(format!("`{spec}` is not NAME=FILE.npy")));
        }
        if inputs.iter().any(|(n, _)| *n == name) {
            return Err(Failure::Usage(format!("the name `{name}` is given twice")));
        }
        inputs.push((name, file));
    }

    let mut writer = BlobWriter::new();
    let mut lines = Vec::new();
    for (name, file) in inputs {
        let bytes = std::fs::read(file).map_err(|e| Failure::Usage(format!("{file}: {e}")))?;
        let array = npy::parse(&bytes).map_err(|e| Failure::Data(format!("{file}: {e}")))?;
        let offset = store(&mut writer, &array, dtype)
            .map_err(|e| Failure::Data(format!("{name} ({file}): {e}")))?;
        let ty = Type::from(TensorType::new(dtype, array.shape.clone()));
        lines.push(format!(
            "{name}: {ty}(BLOBFILE(path = string(\"{blob_path}\"), offset = uint64({offset})))"
        ));
    }
    writer.write_to(&args.output).map_err(|e| Failure::Usage(e.to_string()))?;
    for l in lines {
        println!("{l}");
    }
    eprintln!(
        "wrote {}: {} blob{} of {dtype}, {} bytes",
        args.output.display(),
        writer.count(),
        if writer.count() == 1 { "" } else { "s" },
        writer.as_bytes().len()
    );
    Ok(())
}

/// The BLOBFILE path string for the output file.
fn blob_path_for(output: &Path, prefix: Option<&str>) -> Result<String, Failure> {
    let file_name = output
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| Failure::Usage(format!("{}: not a UTF-8 file name", output.display())))?;
    let dir = match prefix {
        Some(p) => {
            let p = p.strip_prefix("@model_path").unwrap_or(p);
            p.trim_matches('/').to_string()
        }
        None => {
            let abs = std::path::absolute(output)
                .map_err(|e| Failure::Usage(format!("{}: {e}", output.display())))?;
            let parent_name = abs.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
            if parent_name != Some("weights") {
                return Err(Failure::Usage(format!(
                    "cannot tell where {} sits in the model directory: write it into a \
                     `weights` directory next to model.mil, or say where it goes with \
                     --model-path-prefix (e.g. --model-path-prefix weights)",
                    output.display()
                )));
            }
            "weights".to_string()
        }
    };
    let path = if dir.is_empty() {
        format!("{MODEL_PATH_PREFIX}{file_name}")
    } else {
        format!("{MODEL_PATH_PREFIX}{dir}/{file_name}")
    };
    blob_relative_path(&path).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(path)
}

/// Converts `array` to `dtype` and adds it to `writer`; returns the record offset.
fn store(writer: &mut BlobWriter, array: &npy::Array, dtype: DType) -> Result<u64, String> {
    use npy::Data;
    let at = |i: usize| npy::index_name(&array.shape, i);
    match (dtype, &array.data) {
        (DType::Fp16, Data::F16(v)) => return Ok(writer.add_f16(v)),
        (DType::Fp32, Data::F32(v)) => return Ok(writer.add_f32(v)),
        _ => {}
    }
    if dtype.is_float() {
        // The same conversion `anemone run` applies to its inputs; here an overflow is
        // refused rather than stored as infinity.
        let (bytes, conversion) = npy::floats_as(&array.data, dtype).map_err(|e| e.to_string())?;
        if let Some(i) = conversion.first_overflow {
            return Err(float_range_error(
                dtype,
                array.data.get_f64(i).unwrap_or(f64::NAN),
                &at(i),
            ));
        }
        let n = array.data.len();
        return writer.add_raw(dtype, &bytes, n as u64).map_err(|e| e.to_string());
    }

    let (min, max) = dtype.int_range().ok_or_else(|| format!("cannot store {dtype}"))?;
    let width = dtype.bits() as usize / 8;
    let n = array.data.len();
    let mut bytes = Vec::with_capacity(n * width);
    for i in 0..n {
        let v = array.data.get_int(i).map_err(|x| {
            format!("{} is {x}, not an integer: {dtype} holds integers only", at(i))
        })?;
        if v < min || v > max {
            return Err(format!("{} is {v}, outside the range of {dtype} ({min}..={max})", at(i)));
        }
        bytes.extend_from_slice(&(v as i64).to_le_bytes()[..width]);
    }
    writer.add_raw(dtype, &bytes, n as u64).map_err(|e| e.to_string())
}

fn float_range_error(dtype: DType, x: f64, at: &str) -> String {
    let max = match dtype {
        DType::Fp16 => f16::MAX.to_f64(),
        DType::Bf16 => bf16::MAX.to_f64(),
        _ => f32::MAX as f64,
    };
    format!("{at} is {x}, outside the range of {dtype} (largest finite value {max})")
}

// ---------------------------------------------------------------------------------------
// list

fn list(args: &ListArgs) -> Result<(), Failure> {
    let mode = if args.lenient { ReadMode::Lenient } else { ReadMode::Strict };
    let file = BlobFile::map(&args.file).map_err(|e| Failure::Usage(e.to_string()))?;
    let header =
        file.header().map_err(|e| Failure::Data(format!("{}: {e}", args.file.display())))?;
    let scan = file.scan(mode);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} bytes, version {}, header count {}, {} record{} found{}",
        args.file.display(),
        file.len(),
        header.version,
        header.count,
        scan.records.len(),
        if scan.records.len() == 1 { "" } else { "s" },
        if args.lenient { " (lenient)" } else { "" }
    );
    if !scan.records.is_empty() {
        out.push_str(&table(&scan.records));
    }
    print!("{out}");
    if let Some(err) = scan.error {
        let mut msg = format!("{}: {err}", args.file.display());
        if mode == ReadMode::Strict && file.records(ReadMode::Lenient).is_ok() {
            msg.push_str("\n(`--lenient` lists files from producers that bend the format)");
        }
        return Err(Failure::Data(msg));
    }
    Ok(())
}

fn table(records: &[BlobRecord]) -> String {
    let head = ["index", "offset", "dtype", "size", "data_offset", "padding_bits", "elements"];
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            [
                r.index.to_string(),
                r.metadata_offset.to_string(),
                match r.dtype() {
                    Some(d) => d.to_string(),
                    None => format!("?({})", r.dtype_code),
                },
                r.size.to_string(),
                r.data_offset.to_string(),
                r.padding_bits.to_string(),
                r.element_count().map_or("-".to_string(), |n| n.to_string()),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| if i == 2 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, &head);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    out
}
