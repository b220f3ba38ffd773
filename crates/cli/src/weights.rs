//! `anemone weights`: make and inspect weight blob files, and bind arrays to a program.
//!
//! - `anemone weights pack ARRAYS... -o weights/weight.bin [--dtype fp16]` stores each
//!   array as one blob (in the order given) and prints, per name, the BLOBFILE literal to
//!   paste into MIL.
//! - `anemone weights bind MODEL ARRAYS...` stores each array whose name matches a `const`
//!   of the program in the model's weight file and points the const at it (see [`bind`]).
//! - `anemone weights list FILE [--lenient]` prints every record of a blob file.
//!
//! ARRAYS are .npy files, .npz archives and .safetensors checkpoints ([`inputs`]); both
//! commands convert them by the same rules ([`convert`]).
//!
//! Exit codes: 0 success, 1 invalid or corrupt data (a damaged blob file, a value the target
//! dtype cannot hold, an unreadable array file, a shape that does not match), 2 usage or I/O
//! problems.

mod bind;
mod convert;
mod inputs;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anemone_mil::blob::{BlobFile, BlobRecord, BlobWriter, ReadMode};
use anemone_mil::package::{MIL_FILE_NAME, MODEL_PATH_PREFIX, blob_relative_path};
use anemone_mil::{DType, TensorType, Type};

use inputs::Inputs;

#[derive(Debug, clap::Subcommand)]
pub enum WeightsCommand {
    /// Write a blob file from .npy, .npz and .safetensors arrays and print the BLOBFILE
    /// literal of each.
    Pack(PackArgs),
    /// Store arrays in a model's weight file and point the program's consts of the same
    /// names at them.
    ///
    /// Each array is bound to the `const` whose result (or `name` attribute) has the
    /// array's name; a PyTorch key such as `fc1.weight` also finds `fc1_weight`, the name
    /// the builder gives it. Shapes must match the consts' types exactly; values are
    /// converted to each const's dtype as `pack` converts them. The weight file is
    /// rewritten to hold the bound arrays and every blob the program still uses from it,
    /// and model.mil is rewritten with the consts as BLOBFILE references (inline consts
    /// included). Both files are replaced together, or neither is.
    ///
    /// Example: `anemone weights bind mlp/ model.safetensors` then `anemone run mlp/ ...`.
    Bind(bind::BindArgs),
    /// List the records of a blob file.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// The arrays, one blob each, stored in the order given: NAME=FILE.npy, FILE.npy
    /// (named after the file), FILE.npz or FILE.safetensors (every array it holds, under
    /// its own name), or [NAME=]FILE:MEMBER (one array of an .npz or .safetensors file).
    /// float16/32/64, bfloat16, (u)int8..64 and bool arrays are read.
    #[arg(required = true, value_name = "ARRAYS")]
    pub arrays: Vec<String>,
    /// The blob file to write; it is replaced atomically.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// The storage type of every blob. Float targets round to nearest even (a note counts
    /// the values rounded) and refuse finite values that would overflow; integer targets
    /// refuse values that are not integers or do not fit.
    #[arg(long, value_enum, default_value_t = PackDType::Fp16)]
    pub dtype: PackDType,
    /// Store float values beyond the target's range as ±inf (with a warning) instead of
    /// refusing them: for additive masks that hold -1e9.
    #[arg(long)]
    pub allow_inf: bool,
    /// Where the output sits inside the model directory (the directory holding model.mil),
    /// for the printed BLOBFILE paths: e.g. `weights` gives
    /// `@model_path/weights/<output file name>`. By default it is worked out from a
    /// model.mil in a directory above the output; without one, a directory named `weights`
    /// is taken to sit in the model directory, and any other place is taken to be the
    /// model directory's `weights/` (a note says so).
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
        WeightsCommand::Bind(args) => bind::bind(&args),
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
    let (blob_path, note) = blob_path_for(&args.output, args.model_path_prefix.as_deref())?;
    let inputs = Inputs::open(&args.arrays)?;

    let mut writer = BlobWriter::new();
    let mut lines = Vec::new();
    for (i, entry) in inputs.entries.iter().enumerate() {
        let array = inputs.load(i)?;
        let name = &entry.name;
        let converted = convert::to_bytes(&array, dtype, args.allow_inf)
            .map_err(|e| Failure::Data(format!("{name} ({}): {e}", entry.origin)))?;
        if let Some(line) =
            converted.rounding.as_ref().and_then(|c| convert::rounding_line(name, &array, dtype, c))
        {
            eprintln!("{line}");
        }
        let offset = writer
            .add_raw(dtype, &converted.bytes, array.len() as u64)
            .map_err(|e| Failure::Data(format!("{name} ({}): {e}", entry.origin)))?;
        let ty = Type::from(TensorType::new(dtype, array.shape.clone()));
        lines.push(format!(
            "{name}: {ty}(BLOBFILE(path = string(\"{blob_path}\"), offset = uint64({offset})))"
        ));
    }
    // A model directory's `weights/` folder is made if missing; a missing model directory
    // is more likely a mistyped path, and is reported.
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists())
        && dir.parent().is_none_or(|up| up.as_os_str().is_empty() || up.is_dir())
    {
        std::fs::create_dir(dir).map_err(|e| Failure::Usage(format!("{}: {e}", dir.display())))?;
    }
    writer.write_to(&args.output).map_err(|e| Failure::Usage(e.to_string()))?;
    for l in lines {
        println!("{l}");
    }
    if let Some(note) = note {
        eprintln!("{note}");
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

/// The BLOBFILE path string for the output file, and a note when where the output sits in
/// the model directory was assumed rather than known.
fn blob_path_for(output: &Path, prefix: Option<&str>) -> Result<(String, Option<String>), Failure> {
    let file_name = output
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| Failure::Usage(format!("{}: not a UTF-8 file name", output.display())))?;
    let with_dir = |dir: &str| {
        if dir.is_empty() {
            format!("{MODEL_PATH_PREFIX}{file_name}")
        } else {
            format!("{MODEL_PATH_PREFIX}{dir}/{file_name}")
        }
    };
    let (dir, note) = match prefix {
        Some(p) => {
            let p = p.strip_prefix("@model_path").unwrap_or(p);
            (p.trim_matches('/').to_string(), None)
        }
        None => {
            let abs = std::path::absolute(output)
                .map_err(|e| Failure::Usage(format!("{}: {e}", output.display())))?;
            let parent = abs.parent().unwrap_or(Path::new("/"));
            let model_dir = parent.ancestors().find(|d| d.join(MIL_FILE_NAME).is_file());
            match model_dir {
                Some(root) => {
                    let rel = parent.strip_prefix(root).unwrap_or(Path::new(""));
                    let dir: Vec<String> =
                        rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
                    let dir = dir.join("/");
                    // The usual layout needs no word; any other is worth saying.
                    let note = (dir != "weights").then(|| {
                        format!(
                            "note: {} holds {MIL_FILE_NAME}, so the BLOBFILE path is \"{}\" \
                             (--model-path-prefix DIR says otherwise)",
                            root.display(),
                            with_dir(&dir)
                        )
                    });
                    (dir, note)
                }
                None if parent.file_name().and_then(|n| n.to_str()) == Some("weights") => {
                    ("weights".to_string(), None)
                }
                None => {
                    let note = format!(
                        "note: no {MIL_FILE_NAME} above {}, so it is taken to go in the model \
                         directory's weights/ folder (\"{}\"): move it there, or say where \
                         it goes with --model-path-prefix DIR (e.g. --model-path-prefix . \
                         for next to {MIL_FILE_NAME})",
                        output.display(),
                        with_dir("weights")
                    );
                    ("weights".to_string(), Some(note))
                }
            }
        }
    };
    let dir = if dir == "." { String::new() } else { dir };
    let path = with_dir(&dir);
    blob_relative_path(&path).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((path, note))
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
