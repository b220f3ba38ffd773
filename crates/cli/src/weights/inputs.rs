//! The named arrays `weights pack` and `weights bind` take from the command line: `.npy`
//! files, `.npz` archives and `.safetensors` files, each opened once and decoded one array
//! at a time, so that a large checkpoint is never held decoded all at once.
//!
//! The forms of an argument:
//! - `NAME=FILE`: the one array of a .npy file (or of an archive holding one), as NAME;
//! - `FILE.npy`: its array, named after the file;
//! - `FILE.npz`, `FILE.safetensors`: every array the archive holds, under its own name;
//! - `[NAME=]FILE:MEMBER`: one array of an archive, as NAME (default MEMBER).
//!
//! A file's kind is told by its first bytes (then by its extension), so checkpoints with
//! other names work too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anemone::npy::{self, Array};
use anemone::npz::Npz;
use anemone::safetensors::SafeTensors;

use super::Failure;

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Npy,
    Npz,
    SafeTensors,
}

/// An opened file.
enum Opened {
    Npy,
    // `Npz::array` reads through the archive's reader, hence the cell.
    Npz(RefCell<Npz<BufReader<File>>>),
    SafeTensors(SafeTensors),
}

struct OpenFile {
    path: PathBuf,
    opened: Opened,
}

/// One array to take: the name it is taken as, and where it comes from.
pub struct Entry {
    /// The name: given with `NAME=`, else the array's own name (a .npy file's stem).
    pub name: String,
    /// Where it comes from, for messages: `w.npy`, `model.safetensors:fc1.weight`.
    pub origin: String,
    file: usize,
    /// The array's name inside an archive; `None` for a .npy file.
    member: Option<String>,
}

/// Every array the arguments name, in the order given (an archive's in its own order).
pub struct Inputs {
    files: Vec<OpenFile>,
    pub entries: Vec<Entry>,
}

impl Inputs {
    /// Opens every file the arguments name and lists the arrays they take; nothing is
    /// decoded yet. Names must be unique.
    pub fn open(specs: &[String]) -> Result<Inputs, Failure> {
        let mut inputs = Inputs { files: Vec::new(), entries: Vec::new() };
        let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
        for spec in specs {
            let (name, path, member) = split_spec(spec)?;
            let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            let file = match by_path.get(&key) {
                Some(&i) => i,
                None => {
                    let opened = open(&path)?;
                    inputs.files.push(OpenFile { path: path.clone(), opened });
                    by_path.insert(key, inputs.files.len() - 1);
                    inputs.files.len() - 1
                }
            };
            inputs.add(spec, file, name, member)?;
        }
        let mut first: HashMap<&str, &str> = HashMap::new();
        for e in &inputs.entries {
            if let Some(other) = first.insert(&e.name, &e.origin) {
                return Err(Failure::Usage(format!(
                    "the name `{}` is given twice ({other} and {})",
                    e.name, e.origin
                )));
            }
        }
        Ok(inputs)
    }

    /// Adds the entries one argument takes from `file`.
    fn add(
        &mut self,
        spec: &str,
        file: usize,
        name: Option<String>,
        member: Option<String>,
    ) -> Result<(), Failure> {
        let f = &self.files[file];
        let shown = f.path.display().to_string();
        let names: Vec<String> = match &f.opened {
            Opened::Npy => {
                if member.is_some() {
                    return Err(Failure::Usage(format!(
                        "`{spec}`: {shown} is a .npy file, which holds one array and no members"
                    )));
                }
                let stem = || {
                    f.path.file_stem().and_then(|s| s.to_str()).map(str::to_string).ok_or_else(
                        || Failure::Usage(format!("`{spec}`: give the array a name: NAME={shown}")),
                    )
                };
                let name = match name {
                    Some(n) => n,
                    None => stem()?,
                };
                self.entries.push(Entry { name, origin: shown, file, member: None });
                return Ok(());
            }
            Opened::Npz(npz) => npz.borrow().names().map(str::to_string).collect(),
            Opened::SafeTensors(st) => st.tensors().iter().map(|t| t.name.clone()).collect(),
        };
        let listing = || {
            let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            let more = if names.len() > shown.len() { ", ..." } else { "" };
            format!("{}{more}", shown.join(", "))
        };
        let entry = |name: String, member: String| Entry {
            name,
            origin: format!("{shown}:{member}"),
            file,
            member: Some(member),
        };
        match (name, member) {
            (name, Some(member)) => {
                if !names.contains(&member) {
                    return Err(Failure::Usage(format!(
                        "`{spec}`: {shown} has no array named `{member}` (it holds {})",
                        listing()
                    )));
                }
                self.entries.push(entry(name.unwrap_or_else(|| member.clone()), member));
            }
            (Some(name), None) => {
                if names.len() != 1 {
                    return Err(Failure::Usage(format!(
                        "`{spec}`: {shown} holds {} arrays, so NAME=FILE cannot say which: \
                         write NAME=FILE:MEMBER (it holds {})",
                        names.len(),
                        listing()
                    )));
                }
                let member = names[0].clone();
                self.entries.push(entry(name, member));
            }
            (None, None) => {
                if names.is_empty() {
                    return Err(Failure::Data(format!("{shown}: holds no arrays")));
                }
                for member in names {
                    self.entries.push(entry(member.clone(), member));
                }
            }
        }
        Ok(())
    }

    /// Decodes entry `i`'s array.
    pub fn load(&self, i: usize) -> Result<Array, Failure> {
        let e = &self.entries[i];
        let f = &self.files[e.file];
        match (&f.opened, &e.member) {
            (Opened::Npz(npz), Some(m)) => {
                npz.borrow_mut().array(m).map_err(|e| Failure::Data(e.to_string()))
            }
            (Opened::SafeTensors(st), Some(m)) => {
                st.array(m).map_err(|e| Failure::Data(e.to_string()))
            }
            _ => {
                let shown = f.path.display();
                let bytes =
                    std::fs::read(&f.path).map_err(|e| Failure::Usage(format!("{shown}: {e}")))?;
                npy::parse(&bytes).map_err(|e| Failure::Data(format!("{shown}: {e}")))
            }
        }
    }
}

/// Splits an argument into its name, file and member (see the module documentation).
fn split_spec(spec: &str) -> Result<(Option<String>, PathBuf, Option<String>), Failure> {
    let usage = |msg: String| Failure::Usage(msg);
    // A file whose own name holds `=` or `:` is taken as it is.
    if Path::new(spec).is_file() {
        return Ok((None, PathBuf::from(spec), None));
    }
    let (name, rest) = match spec.split_once('=') {
        Some((name, rest)) => (Some(name), rest),
        None => (None, spec),
    };
    if name == Some("") || rest.is_empty() {
        return Err(usage(format!("`{spec}` is not NAME=FILE: a name and a file are needed")));
    }
    let name = name.map(str::to_string);
    if Path::new(rest).is_file() {
        return Ok((name, PathBuf::from(rest), None));
    }
    for (i, _) in rest.match_indices(':') {
        let (file, member) = (&rest[..i], &rest[i + 1..]);
        if !file.is_empty() && Path::new(file).is_file() {
            if member.is_empty() {
                return Err(usage(format!("`{spec}`: no array name after `{file}:`")));
            }
            return Ok((name, PathBuf::from(file), Some(member.to_string())));
        }
    }
    match (&name, std::fs::metadata(rest)) {
        (_, Ok(_)) => Err(usage(format!("{rest}: not a file"))),
        (Some(_), Err(e)) => Err(usage(format!("{rest}: {e}"))),
        (None, Err(_)) => Err(usage(format!(
            "`{spec}` is not NAME=FILE.npy, nor a .npy, .npz or .safetensors file: no such file"
        ))),
    }
}

/// Opens `path` as what its first bytes say it is.
fn open(path: &Path) -> Result<Opened, Failure> {
    let data = |e: npy::NpyError| Failure::Data(e.to_string());
    Ok(match kind(path)? {
        Kind::Npy => Opened::Npy,
        Kind::Npz => Opened::Npz(RefCell::new(Npz::open(path).map_err(data)?)),
        Kind::SafeTensors => Opened::SafeTensors(SafeTensors::open(path).map_err(data)?),
    })
}

/// Tells a file's kind by its first bytes: .npy files start with `\x93NUMPY`, zip archives
/// with `PK`, safetensors files with an 8-byte length and then the header's `{`. Files too
/// short or damaged to tell go by their extension, so that the reader for it explains.
fn kind(path: &Path) -> Result<Kind, Failure> {
    let shown = path.display();
    let mut head = Vec::with_capacity(9);
    File::open(path)
        .and_then(|f| f.take(9).read_to_end(&mut head))
        .map_err(|e| Failure::Usage(format!("{shown}: {e}")))?;
    if head.starts_with(b"\x93NUMPY") {
        return Ok(Kind::Npy);
    }
    if head.starts_with(b"PK") {
        return Ok(Kind::Npz);
    }
    if head.get(8) == Some(&b'{') {
        return Ok(Kind::SafeTensors);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "npy" => Ok(Kind::Npy),
        "npz" => Ok(Kind::Npz),
        "safetensors" => Ok(Kind::SafeTensors),
        _ => Err(Failure::Data(format!(
            "{shown}: not a .npy, .npz or .safetensors file (by its first bytes)"
        ))),
    }
}
