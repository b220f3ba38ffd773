//! `anemone weights bind`: store named arrays in a model's weight file and point the
//! program's `const` ops of the same names at them.
//!
//! What a user has: a model directory whose model.mil was written by hand or by the builder,
//! and a checkpoint (a PyTorch `.safetensors`, a numpy `.npz`, loose `.npy` files). Binding:
//! 1. each array is matched to consts by name: a const's result name, else its `name`
//!    attribute, else the result name the builder gives the array's name (`fc1.weight`
//!    becomes `fc1_weight`); a name that matches nothing is an error with the nearest
//!    const name, unless `--skip-unmatched`;
//! 2. each array's shape must equal its const's declared shape, and its values are converted
//!    to the const's dtype by `pack`'s rules (rounding reported with counts);
//! 3. the weight file (default `@model_path/weights/weight.bin`) is rebuilt: the bound
//!    arrays, then every blob the program still reads from that file, each once; consts
//!    that were inline become BLOBFILE references (scalars, and dtypes weight files cannot
//!    hold, stay inline with the new values);
//! 4. the program is rewritten through the IR and printed canonically, and the files are
//!    replaced together: each is written to a temporary file first, and if putting one in
//!    place fails the ones already replaced are put back, so the model directory holds the
//!    old model or the new one, never a mix.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anemone::npy::Array;
use anemone_mil::blob::{BlobFile, BlobWriter, ReadMode, dtype_code};
use anemone_mil::package::{MIL_FILE_NAME, MODEL_PATH_PREFIX, blob_relative_path};
use anemone_mil::{Argument, BlobRef, DType, Literal, LiteralData, Program, TensorType, text};

use super::Failure;
use super::convert;
use super::inputs::Inputs;
use anemone::source::Source;

#[derive(Debug, clap::Args)]
pub struct BindArgs {
    /// The model: a directory holding model.mil, or a .mil file (its directory is the model
    /// directory that `@model_path` names).
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// The arrays: NAME=FILE.npy, FILE.npy (named after the file), FILE.npz or
    /// FILE.safetensors (every array it holds, under its own name), or [NAME=]FILE:MEMBER
    /// (one array of an .npz or .safetensors file, bound as NAME).
    #[arg(required = true, value_name = "ARRAYS")]
    pub arrays: Vec<String>,
    /// Write the bound model here instead of over MODEL: a directory (DIR/model.mil and its
    /// weight files, created as needed) or a .mil file. Weight files the program reads
    /// from besides the bound one are copied along.
    #[arg(short, long, value_name = "DIR|FILE.mil")]
    pub output: Option<PathBuf>,
    /// The weight file the bound arrays go to, as a BLOBFILE path or a path inside the
    /// model directory.
    #[arg(long, value_name = "PATH", default_value = "@model_path/weights/weight.bin")]
    pub weight_file: String,
    /// Store float values beyond a const's range as ±inf (with a warning) instead of
    /// refusing them: for additive masks that hold -1e9.
    #[arg(long)]
    pub allow_inf: bool,
    /// Leave out arrays whose names match no const (a note lists them) instead of failing:
    /// for checkpoints that also hold optimizer state or buffers.
    #[arg(long)]
    pub skip_unmatched: bool,
    /// Rewrite a model.mil that has `//` comments in place; the rewritten program does not
    /// keep them.
    #[arg(long)]
    pub drop_comments: bool,
}

/// A `const` op of the program.
struct Const {
    func: usize,
    op: usize,
    /// The value it defines.
    output: String,
    /// Its `name` attribute, if it has one.
    name: Option<String>,
    /// The declared type of its value, as a tensor type.
    ty: TensorType,
    /// The declared type as written (a scalar, or a tensor type).
    val_ty: anemone_mil::Type,
    /// Where it is, for messages: `model.mil:12`.
    place: String,
    /// Whether its value is a BLOBFILE reference now.
    in_blob: bool,
}

impl Const {
    /// Whether it looks like a weight: in a weight file, or a float tensor (not the int32
    /// shapes, axes and flags that programs also hold as consts).
    fn is_weight_like(&self) -> bool {
        self.in_blob || (self.ty.dtype.is_float() && !self.ty.shape.is_empty())
    }
}

/// Where the bound model goes.
struct Destination {
    /// The model directory: what `@model_path` stands for.
    root: PathBuf,
    mil: PathBuf,
    /// Whether `mil` is the file being read.
    overwrites: bool,
    /// Whether `root` is the model directory being read (its weight files stay where they
    /// are).
    same_root: bool,
}

pub fn bind(args: &BindArgs) -> Result<(), Failure> {
    let src = Source::load(&args.model).map_err(Failure::Usage)?;
    if src.imported.is_some() {
        return Err(Failure::Usage(format!(
            "{} is a Core ML model: write it as a model directory first with `anemone import \
             {} -o DIR`, then bind to DIR",
            args.model.display(),
            args.model.display()
        )));
    }
    let mut program = text::parse_source(&src.display_name, &src.text)
        .map_err(|d| Failure::Data(d.to_string()))?;
    let target = blob_path(&args.weight_file)?;
    let dest = destination(&src, &args.model, args.output.as_deref());
    let shown_mil = src.mil_path.display().to_string();
    if crate::fmt::has_comments(&src.text) {
        if dest.overwrites && !args.drop_comments {
            return Err(Failure::Usage(format!(
                "{shown_mil} has `//` comments, which rewriting it drops: pass \
                 --drop-comments, or write the bound model elsewhere with -o DIR"
            )));
        }
        if !dest.overwrites {
            eprintln!("note: the `//` comments of {shown_mil} are not carried over");
        }
    }

    let inputs = Inputs::open(&args.arrays)?;
    let consts = find_consts(&program, &src.text, &shown_mil);
    let bindings = match_names(&inputs, &consts, &shown_mil, args.skip_unmatched)?;

    // Convert every bound array into the new weight file (or an inline literal); collect
    // every problem before giving up, so that one run shows them all.
    let mut writer = BlobWriter::new();
    let mut new_vals: Vec<(usize, Literal)> = Vec::new();
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for (entry, bound) in &bindings {
        let e = &inputs.entries[*entry];
        let array = inputs.load(*entry)?;
        let mut stored: HashMap<DType, u64> = HashMap::new();
        for &c in bound {
            let k = &consts[c];
            match bind_one(&array, k, &target, &mut writer, &mut stored, args.allow_inf) {
                Ok((lit, rounding, shown)) => {
                    if let Some(r) = rounding
                        && let Some(line) = convert::rounding_line(
                            &format!("{} -> {}", e.name, k.output),
                            &array,
                            k.ty.dtype,
                            &r,
                        )
                    {
                        eprintln!("{line}");
                    }
                    report.push(format!("{} <- {}: {} {shown}", k.output, e.origin, k.val_ty));
                    new_vals.push((c, lit));
                }
                Err(msg) => problems.push(format!(
                    "`{}` ({}) cannot be bound to const `{}` ({}): {msg}",
                    e.name, e.origin, k.output, k.place
                )),
            }
        }
    }
    if !problems.is_empty() {
        return Err(Failure::Data(problems.join("\n")));
    }

    // The blobs the program keeps reading from the rebuilt file come along, each once.
    let rebound: HashSet<(usize, usize)> =
        new_vals.iter().map(|(c, _)| (consts[*c].func, consts[*c].op)).collect();
    let carried = carry_over(&mut program, &rebound, &target, &src, &mut writer)?;
    for (c, lit) in new_vals {
        let k = &consts[c];
        let op = &mut program.functions[k.func].block.operations[k.op];
        if let Some(val) = op.attributes.iter_mut().find(|a| a.name.name == "val") {
            val.value = lit;
        }
    }

    // Other weight files the program reads from go along to a new model directory.
    let mut staged = Vec::new();
    let others: HashSet<String> = program
        .blob_refs()
        .into_iter()
        .map(|(b, _, _)| b.path.clone())
        .filter(|p| !same_file(p, &target))
        .collect();
    if !dest.same_root {
        for path in others {
            match src.model_dir.resolve(&path) {
                Ok(from) => {
                    let bytes = fs::read(&from)
                        .map_err(|e| Failure::Usage(format!("{}: {e}", from.display())))?;
                    staged.push(stage(&dest.root, &path, &bytes)?);
                }
                Err(e) => eprintln!("warning: {e}; not copied"),
            }
        }
    }
    let uses_target = program.blob_refs().iter().any(|(b, _, _)| same_file(&b.path, &target));
    let weight_path =
        dest.root.join(blob_relative_path(&target).map_err(|e| Failure::Usage(e.to_string()))?);
    if uses_target {
        staged.push(stage(&dest.root, &target, writer.as_bytes())?);
    }
    let mil_text = text::print(&program);
    staged.push(stage_file(&dest.mil, mil_text.as_bytes())?);
    commit(staged)?;

    for line in &report {
        println!("{line}");
    }
    let bound: HashSet<usize> = bindings.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let unbound: Vec<&str> = consts
        .iter()
        .enumerate()
        .filter(|(i, k)| !bound.contains(i) && k.is_weight_like())
        .map(|(_, k)| k.output.as_str())
        .collect();
    if !unbound.is_empty() {
        eprintln!(
            "note: {} const{} left as {} (no array has {} name): {}",
            unbound.len(),
            if unbound.len() == 1 { " is" } else { "s are" },
            if unbound.len() == 1 { "it was" } else { "they were" },
            if unbound.len() == 1 { "its" } else { "their" },
            list(&unbound, 12)
        );
    }
    if uses_target {
        eprintln!(
            "wrote {}: {} blob{} ({} bound, {carried} kept), {} bytes",
            weight_path.display(),
            writer.count(),
            if writer.count() == 1 { "" } else { "s" },
            writer.count() as usize - carried,
            writer.as_bytes().len()
        );
    }
    eprintln!(
        "wrote {}: {} const{} bound",
        dest.mil.display(),
        report.len(),
        if report.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `@model_path/...` for a `--weight-file` given either way.
fn blob_path(given: &str) -> Result<String, Failure> {
    let path = if given.starts_with(MODEL_PATH_PREFIX) {
        given.to_string()
    } else {
        format!("{MODEL_PATH_PREFIX}{}", given.trim_start_matches("./"))
    };
    blob_relative_path(&path).map_err(|e| Failure::Usage(format!("--weight-file: {e}")))?;
    Ok(path)
}

/// Whether two BLOBFILE paths name one file (`@model_path/weights/./w.bin` and
/// `@model_path/weights/w.bin` do).
fn same_file(a: &str, b: &str) -> bool {
    a == b || matches!((blob_relative_path(a), blob_relative_path(b)), (Ok(x), Ok(y)) if x == y)
}

fn destination(src: &Source, model: &Path, output: Option<&Path>) -> Destination {
    // The directory as the user named it, for messages; `@model_path` is the same place.
    let root = if model.is_dir() {
        model.to_path_buf()
    } else {
        match model.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let Some(out) = output else {
        return Destination { root, mil: src.mil_path.clone(), overwrites: true, same_root: true };
    };
    let (out_root, mil) = if out.extension().is_some_and(|e| e == "mil") {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (parent, out.to_path_buf())
    } else {
        (out.to_path_buf(), out.join(MIL_FILE_NAME))
    };
    let same = |a: &Path, b: &Path| match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let overwrites = same(&mil, &src.mil_path);
    let same_root = same(&out_root, &root);
    Destination { root: out_root, mil, overwrites, same_root }
}

/// Every `const` op with a tensor or scalar value, in program order.
fn find_consts(program: &Program, text: &str, mil: &str) -> Vec<Const> {
    let mut out = Vec::new();
    for (fi, f) in program.functions.iter().enumerate() {
        for (oi, op) in f.block.operations.iter().enumerate() {
            if op.op.name != "const" {
                continue;
            }
            let (Some(val), Some(result)) = (op.attribute("val"), op.outputs.first()) else {
                continue;
            };
            let Some(ty) = val.ty.as_tensor() else { continue };
            let place = if op.span.is_none() {
                format!("{mil}, function {}", f.name)
            } else {
                let line = text[..op.span.start.min(text.len())].matches('\n').count() + 1;
                format!("{mil}:{line}")
            };
            out.push(Const {
                func: fi,
                op: oi,
                output: result.name.name.clone(),
                name: op.name_attribute().map(str::to_string),
                ty,
                val_ty: val.ty.clone(),
                place,
                in_blob: matches!(val.data, LiteralData::Blob(_)),
            });
        }
    }
    out
}

/// The name the builder gives a value hinted `name`: characters other than ASCII letters,
/// digits and `_` become `_`, and a leading digit gets `v_` before it.
fn identifier(name: &str) -> String {
    let base: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
        format!("v_{base}")
    } else {
        base
    }
}

/// The consts each array binds to: by result name, else by `name` attribute, else by the
/// builder's identifier for the array's name.
fn match_names(
    inputs: &Inputs,
    consts: &[Const],
    mil: &str,
    skip_unmatched: bool,
) -> Result<Vec<(usize, Vec<usize>)>, Failure> {
    let find = |name: &str| -> Vec<usize> {
        let by = |f: &dyn Fn(&Const) -> bool| -> Vec<usize> {
            consts.iter().enumerate().filter(|(_, c)| f(c)).map(|(i, _)| i).collect()
        };
        let found = by(&|c| c.output == name);
        if !found.is_empty() {
            return found;
        }
        let found = by(&|c| c.name.as_deref() == Some(name));
        if !found.is_empty() {
            return found;
        }
        let ident = identifier(name);
        if ident == name { Vec::new() } else { by(&|c| c.output == ident) }
    };
    let mut bindings = Vec::new();
    let mut unmatched = Vec::new();
    let mut owner: HashMap<usize, usize> = HashMap::new();
    for (i, e) in inputs.entries.iter().enumerate() {
        let found = find(&e.name);
        if found.is_empty() {
            unmatched.push(i);
            continue;
        }
        for &c in &found {
            if let Some(&j) = owner.get(&c) {
                let other = &inputs.entries[j];
                return Err(Failure::Usage(format!(
                    "const `{}` ({}) is matched by both `{}` ({}) and `{}` ({}): bind one \
                     of them, e.g. with {}=FILE:MEMBER",
                    consts[c].output,
                    consts[c].place,
                    other.name,
                    other.origin,
                    e.name,
                    e.origin,
                    consts[c].output
                )));
            }
            owner.insert(c, i);
        }
        bindings.push((i, found));
    }
    if !unmatched.is_empty() {
        let names: Vec<&str> = unmatched.iter().map(|&i| inputs.entries[i].name.as_str()).collect();
        if skip_unmatched {
            eprintln!(
                "note: {} array{} left out (no const of {mil} has {} name): {}",
                names.len(),
                if names.len() == 1 { " is" } else { "s are" },
                if names.len() == 1 { "its" } else { "their" },
                list(&names, 12)
            );
        } else {
            let candidates: Vec<&str> = consts
                .iter()
                .flat_map(|c| std::iter::once(c.output.as_str()).chain(c.name.as_deref()))
                .collect();
            let mut msg = format!(
                "{} match{} no const of {mil}:",
                if names.len() == 1 {
                    "1 array".to_string()
                } else {
                    format!("{} arrays", names.len())
                },
                if names.len() == 1 { "es" } else { "" }
            );
            for &i in &unmatched {
                let e = &inputs.entries[i];
                msg.push_str(&format!("\n  `{}` ({})", e.name, e.origin));
                if let Some(s) = nearest(&e.name, &candidates) {
                    msg.push_str(&format!(": did you mean `{s}`?"));
                }
            }
            let weights: Vec<&str> =
                consts.iter().filter(|c| c.is_weight_like()).map(|c| c.output.as_str()).collect();
            if !weights.is_empty() {
                msg.push_str(&format!("\nthe weight consts are: {}", list(&weights, 12)));
            }
            msg.push_str(
                "\n(rename with NAME=FILE:MEMBER, or leave such arrays out with --skip-unmatched)",
            );
            return Err(Failure::Usage(msg));
        }
    }
    if bindings.is_empty() {
        return Err(Failure::Usage(format!("none of the arrays matches a const of {mil}")));
    }
    Ok(bindings)
}

/// `a, b, c` (at most `most`, then `and N more`).
fn list(names: &[&str], most: usize) -> String {
    let mut s = names.iter().take(most).copied().collect::<Vec<_>>().join(", ");
    if names.len() > most {
        s.push_str(&format!(" and {} more", names.len() - most));
    }
    s
}

/// The candidate nearest to `name` when it is close enough to be a likely typo: compared
/// in lower case with separators alike, counting a swap of neighbours as one edit.
fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| identifier(&s.to_ascii_lowercase());
    let want = norm(name);
    let limit = (want.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|&c| (edit_distance(&want, &norm(c)), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Edits (insert, delete, replace, swap of neighbours) that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Binds `array` to `k`: checks the shape, converts the values, and stores them in the
/// weight file (once per dtype: `stored`) or inline. Returns the new value, what rounding
/// did, and where the value went, for the report.
fn bind_one(
    array: &Array,
    k: &Const,
    target: &str,
    writer: &mut BlobWriter,
    stored: &mut HashMap<DType, u64>,
    allow_inf: bool,
) -> Result<(Literal, Option<anemone::npy::FloatConversion>, String), String> {
    if array.shape != k.ty.shape {
        return Err(shape_mismatch(&array.shape, &k.ty.shape, &k.val_ty));
    }
    let dtype = k.ty.dtype;
    let blob = |offset| {
        Literal::new(
            k.val_ty.clone(),
            LiteralData::Blob(BlobRef { path: target.to_string(), offset }),
        )
    };
    let blobbable = matches!(
        dtype,
        DType::Fp16
            | DType::Bf16
            | DType::Fp32
            | DType::Int8
            | DType::UInt8
            | DType::Int16
            | DType::UInt16
            | DType::Int32
            | DType::UInt32
    );
    if blobbable && !k.ty.shape.is_empty() {
        debug_assert!(dtype_code(dtype).is_some());
        if let Some(&offset) = stored.get(&dtype) {
            return Ok((blob(offset), None, format!("at offset {offset} (shared)")));
        }
        let c = convert::to_bytes(array, dtype, allow_inf)?;
        let offset =
            writer.add_raw(dtype, &c.bytes, array.len() as u64).map_err(|e| e.to_string())?;
        stored.insert(dtype, offset);
        return Ok((blob(offset), c.rounding, format!("at offset {offset}")));
    }
    let inline_ok =
        blobbable || matches!(dtype, DType::Fp64 | DType::Int64 | DType::UInt64 | DType::Bool);
    if !inline_ok {
        return Err(format!(
            "its dtype is {dtype}; arrays can be bound to fp16, bf16, fp32, fp64, bool and \
             (u)int8..64 consts"
        ));
    }
    let (data, rounding) = convert::to_inline(array, dtype, allow_inf)?;
    Ok((Literal::tensor(k.val_ty.clone(), data), rounding, "inline".to_string()))
}

/// `expected tensor<fp16, [128, 64]>, got [64, 128]`, with a hint when the shapes are
/// close.
fn shape_mismatch(got: &[usize], expected: &[usize], ty: &anemone_mil::Type) -> String {
    let mut msg = format!("the shape does not match: expected {ty}, got {got:?}");
    let count = |s: &[usize]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let reversed: Vec<usize> = got.iter().rev().copied().collect();
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if got.len() == 2 && reversed == expected {
        msg.push_str(" (its axes are swapped: transpose the array first)");
    } else if count(got) == count(expected) && squeeze(got) == squeeze(expected) {
        msg.push_str(&format!(
            " (they differ only in axes of size 1: reshape the array to {expected:?} first)"
        ));
    }
    msg
}

/// Copies into `writer` every blob the program still reads from `target` (once per offset
/// and type), and points its references at the copies; returns how many were copied.
fn carry_over(
    program: &mut Program,
    rebound: &HashSet<(usize, usize)>,
    target: &str,
    src: &Source,
    writer: &mut BlobWriter,
) -> Result<usize, Failure> {
    let mut old: Option<BlobFile> = None;
    let mut moved: HashMap<(u64, TensorType), u64> = HashMap::new();
    let mut carry = |lit: &mut Literal, what: &str| -> Result<(), Failure> {
        let LiteralData::Blob(b) = &lit.data else { return Ok(()) };
        if !same_file(&b.path, target) {
            return Ok(());
        }
        let unreadable = |e: String| {
            Failure::Data(format!(
                "{what} keeps its data in {target}, which is rewritten, and that data cannot \
                 be read: {e}\n(bind an array to it too, or put the arrays in another file \
                 with --weight-file)"
            ))
        };
        let ty = lit.ty.as_tensor().ok_or_else(|| unreadable(format!("its type is {}", lit.ty)))?;
        let key = (b.offset, ty.clone());
        let offset = match moved.get(&key) {
            Some(&o) => o,
            None => {
                if old.is_none() {
                    let path =
                        src.model_dir.resolve(target).map_err(|e| unreadable(e.to_string()))?;
                    old = Some(BlobFile::map(&path).map_err(|e| unreadable(e.to_string()))?);
                }
                let file = old.as_ref().expect("loaded above");
                let data = file
                    .read(b.offset, &ty, ReadMode::Lenient)
                    .map_err(|e| unreadable(e.to_string()))?;
                let count = ty.checked_element_count().unwrap_or(0) as u64;
                let o =
                    writer.add_raw(ty.dtype, data, count).map_err(|e| unreadable(e.to_string()))?;
                moved.insert(key, o);
                o
            }
        };
        lit.data = LiteralData::Blob(BlobRef { path: target.to_string(), offset });
        Ok(())
    };
    for a in &mut program.attributes {
        walk_literal(&mut a.value, "a program attribute", &mut carry)?;
    }
    for (fi, f) in program.functions.iter_mut().enumerate() {
        for (oi, op) in f.block.operations.iter_mut().enumerate() {
            let what = match op.outputs.first() {
                Some(o) => format!("`{}` ({})", o.name.name, op.op.name),
                None => format!("a `{}` op", op.op.name),
            };
            let skip_val = rebound.contains(&(fi, oi));
            for a in &mut op.attributes {
                if skip_val && a.name.name == "val" {
                    continue;
                }
                walk_literal(&mut a.value, &what, &mut carry)?;
            }
            for i in &mut op.inputs {
                walk_argument(&mut i.value, &what, &mut carry)?;
            }
        }
    }
    Ok(moved.len())
}

type Visit<'a> = dyn FnMut(&mut Literal, &str) -> Result<(), Failure> + 'a;

fn walk_literal(lit: &mut Literal, what: &str, f: &mut Visit<'_>) -> Result<(), Failure> {
    if let LiteralData::Dict(entries) = &mut lit.data {
        for (k, v) in entries {
            walk_literal(k, what, f)?;
            walk_literal(v, what, f)?;
        }
        return Ok(());
    }
    f(lit, what)
}

fn walk_argument(arg: &mut Argument, what: &str, f: &mut Visit<'_>) -> Result<(), Failure> {
    match arg {
        Argument::Literal(l) => walk_literal(l, what, f),
        Argument::Tuple(items, _) => items.iter_mut().try_for_each(|a| walk_argument(a, what, f)),
        Argument::Var(_) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Replacing several files together

/// A file's new contents, written and synced to a temporary file beside it.
struct Staged {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

/// Stages the weight file `blob_path` of the model directory `root`, after checking that
/// its directory (created as needed) lies inside `root`, symlinks followed.
fn stage(root: &Path, blob_path: &str, bytes: &[u8]) -> Result<Staged, Failure> {
    let rel = blob_relative_path(blob_path).map_err(|e| Failure::Usage(e.to_string()))?;
    let target = root.join(rel);
    let parent = target.parent().unwrap_or(root);
    fs::create_dir_all(parent).map_err(|e| Failure::Usage(format!("{}: {e}", parent.display())))?;
    let real =
        |p: &Path| fs::canonicalize(p).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())));
    if !real(parent)?.starts_with(real(root)?) {
        return Err(Failure::Usage(format!(
            "\"{blob_path}\" leads to {}, outside the model directory {}",
            real(parent)?.display(),
            root.display()
        )));
    }
    stage_file(&target, bytes)
}

fn stage_file(target: &Path, bytes: &[u8]) -> Result<Staged, Failure> {
    let io = |e: std::io::Error| Failure::Usage(format!("cannot write {}: {e}", target.display()));
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io)?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut builder = tempfile::Builder::new();
    let prefix = format!(".{name}.");
    builder.prefix(&prefix).suffix(".tmp");
    // A new file gets the usual permissions (0666 less the umask), not a temporary file's.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    if let Ok(meta) = fs::metadata(target) {
        tmp.as_file().set_permissions(meta.permissions()).map_err(io)?;
    }
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    Ok(Staged { tmp, target: target.to_path_buf() })
}

/// Renames every staged file over its target, in order. If one cannot be put in place, the
/// ones before it get their old contents back (kept as hard links until the end), so the
/// targets hold all the old contents or all the new ones.
fn commit(staged: Vec<Staged>) -> Result<(), Failure> {
    let mut done: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    let mut result = Ok(());
    for s in staged {
        let backup = backup_link(&s.target);
        match s.tmp.persist(&s.target) {
            Ok(_) => done.push((s.target, backup)),
            Err(e) => {
                if let Some(b) = backup {
                    let _ = fs::remove_file(b);
                }
                result = Err(Failure::Usage(format!(
                    "cannot write {}: {}; the model was left as it was",
                    s.target.display(),
                    e.error
                )));
                break;
            }
        }
    }
    let failed = result.is_err();
    for (target, backup) in done.into_iter().rev() {
        match (failed, backup) {
            (true, Some(b)) => {
                let _ = fs::rename(&b, &target);
            }
            (true, None) => {
                let _ = fs::remove_file(&target);
            }
            (false, Some(b)) => {
                let _ = fs::remove_file(&b);
            }
            (false, None) => {}
        }
    }
    result
}

/// A hard link to `target`'s current contents under a fresh name beside it, if it exists
/// and the file system allows.
fn backup_link(target: &Path) -> Option<PathBuf> {
    let dir = target.parent()?;
    let name = target.file_name()?.to_string_lossy().into_owned();
    if !target.is_file() {
        return None;
    }
    (0..100).find_map(|n| {
        let b = dir.join(format!(".{name}.{}.{n}.old", std::process::id()));
        fs::hard_link(target, &b).ok().map(|_| b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_builder() {
        assert_eq!(identifier("fc1.weight"), "fc1_weight");
        assert_eq!(identifier("0.w"), "v_0_w");
        assert_eq!(identifier("layers/3/attn"), "layers_3_attn");
    }

    #[test]
    fn near_names_are_suggested() {
        let c = ["fc1_weight", "fc1_bias", "ln_gamma"];
        assert_eq!(nearest("fc1.wieght", &c), Some("fc1_weight"));
        assert_eq!(nearest("FC1.Bias", &c), Some("fc1_bias"));
        assert_eq!(nearest("decoder.embed", &c), None);
    }

    #[test]
    fn shape_hints() {
        let hint = |got: &[usize], want: &[usize]| {
            shape_mismatch(got, want, &anemone_mil::Type::tensor(DType::Fp16, want))
        };
        assert!(hint(&[64, 128], &[128, 64]).contains("axes are swapped"));
        let m = hint(&[128, 64], &[128, 64, 1, 1]);
        assert!(m.contains("expected tensor<fp16, [128, 64, 1, 1]>, got [128, 64]"), "{m}");
        assert!(m.contains("reshape the array to [128, 64, 1, 1]"), "{m}");
        assert!(!hint(&[3], &[128, 64, 1, 1]).contains('('));
    }
}
