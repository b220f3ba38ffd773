//! The crate's files on disk: training checkpoints and llama2.c model files.
//!
//! A training checkpoint is one safetensors file, `checkpoint.safetensors`, holding the
//! parameters under their [`Tensor::name`]s, the AdamW moments under `adam_m.<name>` and
//! `adam_v.<name>`, and everything else a resume needs (config, step, sampler RNG, loss
//! history) as strings in the safetensors `__metadata__`. Values are stored as
//! little-endian f32 bit for bit, so a resumed run continues exactly where it stopped.
//!
//! A llama2.c model file (`.bin`) is the format of llama2.c's `run.c` and of
//! maderix/ANE's `train_large.m`: a header of seven i32 followed by the f32 tensors.
//!
//! Both are written atomically (a temporary file in the same directory, synced, then
//! renamed over the target), so a crash or a full disk never leaves a half-written file
//! where a good one was.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::config::{Config, ModelConfig};
use crate::data::RngState;
use crate::error::{Error, Result};
use crate::params::{ParamLayout, Params, Tensor};

/// The checkpoint's file name inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The `format` metadata value that marks a training checkpoint.
pub const FORMAT: &str = "anemone-train-checkpoint";
/// The `version` metadata value this build writes and reads.
pub const VERSION: &str = "1";

/// Name prefixes of the AdamW moments; the parameters themselves have none.
const ADAM_M: &str = "adam_m.";
const ADAM_V: &str = "adam_v.";

/// safetensors refuses headers above 100 MB; say so at save time rather than writing a
/// file that cannot be read back.
const MAX_HEADER_BYTES: usize = 100_000_000;

/// Floats converted per write, so a big tensor never needs a second full-size buffer.
const WRITE_CHUNK: usize = 1 << 16;

/// Everything a run needs to continue bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Model and training settings.
    pub config: Config,
    /// Optimizer steps completed.
    pub step: usize,
    /// The model's weights.
    pub params: Params,
    /// AdamW's first moment, laid out like `params`.
    pub adam_m: Params,
    /// AdamW's second moment, laid out like `params`.
    pub adam_v: Params,
    /// The data sampler's RNG state.
    pub rng: RngState,
    /// The learning-rate schedule's horizon (the run's total steps).
    pub total_steps: usize,
    /// Logged points, so the loss curve covers the whole run after a resume.
    pub history: Vec<LogPoint>,
    /// The data file the run used (informational).
    pub data: Option<String>,
    /// The tokenizer the run used (informational).
    pub tokenizer: Option<String>,
}

/// One logged point of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogPoint {
    /// Optimizer steps completed when logged; step 0 is the untrained model, logged with its
    /// validation loss as both losses.
    pub step: usize,
    // JSON has no NaN or infinity and serde_json would write `null`, which then fails to
    // read back: a diverged loss in the history must not make the checkpoint unloadable.
    /// Mean training loss of that step.
    #[serde(with = "json_f32")]
    pub loss: f32,
    /// Validation loss, when evaluated after that step.
    #[serde(default, with = "json_f32::option")]
    pub val_loss: Option<f32>,
    /// The learning rate the step used (0 for step 0).
    #[serde(with = "json_f32")]
    pub lr: f32,
}

/// Writes `dir/checkpoint.safetensors` atomically and returns its path. `dir` is created
/// if missing. On failure (a full disk included) the previous checkpoint is left as it was
/// and no temporary file remains.
pub fn save(dir: &Path, state: &TrainState) -> Result<PathBuf> {
    let path = dir.join(CHECKPOINT_FILE);
    check_consistent(state).map_err(|m| Error::checkpoint(&path, m))?;
    save_with(dir, state, create_file)
}

/// [`save`] without the consistency check, writing through `open` (a real file, or in
/// tests a writer that runs out of space).
fn save_with<S: Sink>(
    dir: &Path,
    state: &TrainState,
    open: impl FnOnce(&Path) -> io::Result<S>,
) -> Result<PathBuf> {
    let path = dir.join(CHECKPOINT_FILE);
    let header = checkpoint_header(state).map_err(|m| Error::checkpoint(&path, m))?;
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating checkpoint directory {}", dir.display()), e))?;
    write_atomically(&path, open, |w| {
        w.write_all(&header)?;
        // The header lists the three sets in this order, each in layout order, which is
        // the order of their flat buffers.
        for p in [&state.params, &state.adam_m, &state.adam_v] {
            write_f32s(w, &p.data)?;
        }
        Ok(())
    })?;
    Ok(path)
}

/// A state whose buffers do not match its config would produce a checkpoint that loads
/// as something else (or not at all); refuse it when saving.
fn check_consistent(state: &TrainState) -> std::result::Result<(), String> {
    if state.params.layout.config != state.config.model {
        return Err("the parameters' layout does not match the state's model config".into());
    }
    for (what, p) in
        [("params", &state.params), ("adam_m", &state.adam_m), ("adam_v", &state.adam_v)]
    {
        if *p.layout != *state.params.layout {
            return Err(format!("{what} is not laid out like the parameters"));
        }
        if p.data.len() != p.layout.len {
            return Err(format!(
                "{what} holds {} values but its layout has {}",
                p.data.len(),
                p.layout.len
            ));
        }
    }
    Ok(())
}

/// The safetensors header (length prefix, JSON, padding) for `state`. Built here rather
/// than by `safetensors::serialize` so the tensor data can be streamed to disk instead of
/// first being copied into one buffer as large as the file.
fn checkpoint_header(state: &TrainState) -> std::result::Result<Vec<u8>, String> {
    let json = |what: &str, r: serde_json::Result<String>| {
        r.map_err(|e| format!("cannot encode the {what} as JSON: {e}"))
    };
    // A BTreeMap keeps the header, and so the file, identical for identical states.
    let mut meta = BTreeMap::new();
    meta.insert("format", FORMAT.to_string());
    meta.insert("version", VERSION.to_string());
    meta.insert("config", json("config", serde_json::to_string(&state.config))?);
    meta.insert("step", state.step.to_string());
    meta.insert("total_steps", state.total_steps.to_string());
    meta.insert("rng", json("RNG state", serde_json::to_string(&state.rng))?);
    meta.insert("history", json("history", serde_json::to_string(&state.history))?);
    if let Some(d) = &state.data {
        meta.insert("data", d.clone());
    }
    if let Some(t) = &state.tokenizer {
        meta.insert("tokenizer", t.clone());
    }

    let mut tensors = Vec::new();
    let mut base = 0;
    for (prefix, p) in [("", &state.params), (ADAM_M, &state.adam_m), (ADAM_V, &state.adam_v)] {
        for (t, shape, range) in &p.layout.entries {
            tensors.push((
                format!("{prefix}{}", t.name()),
                TensorInfo {
                    dtype: Dtype::F32,
                    shape: shape.clone(),
                    data_offsets: (base + 4 * range.start, base + 4 * range.end),
                },
            ));
        }
        base += 4 * p.data.len();
    }

    let mut header = serde_json::to_vec(&Header { meta: &meta, tensors: &tensors })
        .map_err(|e| format!("cannot encode the header: {e}"))?;
    if header.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "the header would be {} bytes, above safetensors' limit of {MAX_HEADER_BYTES} \
             (the loss history is too long)",
            header.len()
        ));
    }
    // safetensors pads the JSON with spaces to a multiple of 8 so the data is aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    Ok(out)
}

/// The safetensors header JSON: `__metadata__` first, then the tensors in data order.
struct Header<'a> {
    meta: &'a BTreeMap<&'static str, String>,
    tensors: &'a [(String, TensorInfo)],
}

impl Serialize for Header<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1 + self.tensors.len()))?;
        map.serialize_entry("__metadata__", self.meta)?;
        for (name, info) in self.tensors {
            map.serialize_entry(name, info)?;
        }
        map.end()
    }
}

/// Reads a checkpoint: `path` is a run directory (holding `checkpoint.safetensors`) or the
/// file itself. Every way the file can be wrong gives [`Error::Checkpoint`] saying how.
pub fn load(path: &Path) -> Result<TrainState> {
    let file = if path.is_dir() {
        let file = path.join(CHECKPOINT_FILE);
        if !file.exists() {
            return Err(Error::checkpoint(
                path,
                format!("no checkpoint in {} ({CHECKPOINT_FILE} is missing)", path.display()),
            ));
        }
        file
    } else {
        path.to_path_buf()
    };
    let map = map_file(&file, "checkpoint")?;
    decode_checkpoint(&map).map_err(|m| Error::checkpoint(&file, m))
}

fn decode_checkpoint(bytes: &[u8]) -> std::result::Result<TrainState, String> {
    let corrupt = |e: safetensors::SafeTensorError| format!("truncated or corrupt file ({e})");
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(corrupt)?;

    let meta = header
        .metadata()
        .as_ref()
        .ok_or("no `__metadata__`: not an anemone training checkpoint")?;
    let get = |key: &str| {
        meta.get(key).map(String::as_str).ok_or_else(|| format!("the `{key}` metadata is missing"))
    };
    match meta.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            return Err(format!(
                "format is `{f}`, not `{FORMAT}`: not an anemone training checkpoint"
            ));
        }
        None => return Err("no `format` metadata: not an anemone training checkpoint".into()),
    }
    let version = get("version")?;
    if version != VERSION {
        return Err(format!("version {version} is not supported (this build reads {VERSION})"));
    }
    let json_err = |key: &str, e: serde_json::Error| format!("invalid `{key}` metadata: {e}");
    let config: Config = serde_json::from_str(get("config")?).map_err(|e| json_err("config", e))?;
    config.validate().map_err(|e| format!("the stored config is invalid: {e}"))?;
    let count = |key: &str| -> std::result::Result<usize, String> {
        let text = get(key)?;
        text.parse().map_err(|e| format!("invalid `{key}` metadata `{text}`: {e}"))
    };
    let step = count("step")?;
    let total_steps = count("total_steps")?;
    let rng: RngState = serde_json::from_str(get("rng")?).map_err(|e| json_err("rng", e))?;
    let history: Vec<LogPoint> =
        serde_json::from_str(get("history")?).map_err(|e| json_err("history", e))?;

    // Each layer needs 27 tensors; a config claiming more layers than the file has
    // tensors is wrong, and building its layout could exhaust memory.
    if config.model.n_layers > tensors.len() {
        return Err(format!(
            "the stored config has {} layers but the file holds only {} tensors",
            config.model.n_layers,
            tensors.len()
        ));
    }
    let layout = Arc::new(ParamLayout::new(&config.model));
    let prefixes = ["", ADAM_M, ADAM_V];

    // Check every tensor before allocating anything, so the allocation is bounded by what
    // the file really holds.
    let mut views = Vec::with_capacity(prefixes.len() * layout.entries.len());
    let mut expected = HashSet::with_capacity(views.capacity());
    for prefix in prefixes {
        for (t, shape, _) in &layout.entries {
            let name = format!("{prefix}{}", t.name());
            let view = tensors
                .tensor(&name)
                .map_err(|_| format!("tensor `{name}` is missing (the stored config needs it)"))?;
            if view.dtype() != Dtype::F32 {
                return Err(format!("tensor `{name}` is {:?}, expected F32", view.dtype()));
            }
            if view.shape() != shape.as_slice() {
                return Err(format!(
                    "tensor `{name}` has shape {:?} but the stored config's layout needs {:?}",
                    view.shape(),
                    shape
                ));
            }
            views.push(view);
            expected.insert(name);
        }
    }
    if let Some(extra) = tensors.names().into_iter().find(|n| !expected.contains(*n)) {
        return Err(format!("unexpected tensor `{extra}`: the stored config has no such tensor"));
    }

    let mut sets = prefixes.map(|_| Params::zeros(layout.clone()));
    let mut views = views.into_iter();
    for set in &mut sets {
        for (_, _, range) in &layout.entries {
            let view = views.next().expect("one view per prefix and entry");
            read_f32s(view.data(), &mut set.data[range.clone()]);
        }
    }
    let [params, adam_m, adam_v] = sets;
    Ok(TrainState {
        config,
        step,
        params,
        adam_m,
        adam_v,
        rng,
        total_steps,
        history,
        data: meta.get("data").cloned(),
        tokenizer: meta.get("tokenizer").cloned(),
    })
}

/// Resuming needs the same model; a different one is an error naming each differing field.
/// Differences in the training settings are allowed: the caller decides which to keep.
pub fn check_compatible(state: &TrainState, config: &Config) -> Result<()> {
    let (have, want) = (&state.config.model, &config.model);
    let mut diffs = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("the checkpoint has {name} {a}, the run asks for {name} {b}"));
        }
    };
    cmp("dim", have.dim.to_string(), want.dim.to_string());
    cmp("hidden_dim", have.hidden_dim.to_string(), want.hidden_dim.to_string());
    cmp("n_layers", have.n_layers.to_string(), want.n_layers.to_string());
    cmp("n_heads", have.n_heads.to_string(), want.n_heads.to_string());
    cmp("seq_len", have.seq_len.to_string(), want.seq_len.to_string());
    cmp("vocab_size", have.vocab_size.to_string(), want.vocab_size.to_string());
    cmp(
        "shared_classifier",
        have.shared_classifier.to_string(),
        want.shared_classifier.to_string(),
    );
    // Debug formatting prints the shortest text that identifies the f32, so equal text
    // means equal values.
    cmp("norm_eps", format!("{:?}", have.norm_eps), format!("{:?}", want.norm_eps));
    cmp("rope_theta", format!("{:?}", have.rope_theta), format!("{:?}", want.rope_theta));
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "cannot resume with a different model: {}; pass the --config the run was started with",
            diffs.join("; ")
        )))
    }
}

/// Bytes of llama2.c's header: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
/// vocab_size, seq_len as little-endian i32.
const LLAMA2C_HEADER: usize = 7 * 4;
/// llama2.c's model files carry neither; these are the values its code assumes.
const LLAMA2C_NORM_EPS: f32 = 1e-5;
const LLAMA2C_ROPE_THETA: f32 = 10000.0;

/// Whether `path` names a llama2.c model file (`.bin`) rather than a checkpoint.
pub fn is_llama2c_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin"))
}

/// Reads a llama2.c model file. A negative vocab_size in the header means the classifier
/// is not shared and its weights follow the RoPE tables, which are skipped (they are
/// recomputed). The config gets llama2.c's norm_eps (1e-5) and rope_theta (10000).
pub fn load_llama2c(path: &Path) -> Result<Params> {
    let map = map_file(path, "model file")?;
    let bytes: &[u8] = &map;
    let bad = |m: String| Error::checkpoint(path, m);
    if bytes.len() < LLAMA2C_HEADER {
        return Err(bad(format!(
            "file is {} bytes, shorter than llama2.c's {LLAMA2C_HEADER}-byte header \
             (7 little-endian i32): truncated or not a llama2.c model",
            bytes.len()
        )));
    }
    let field = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len] =
        [0, 1, 2, 3, 4, 5, 6].map(field);
    for (name, v) in [
        ("dim", dim),
        ("hidden_dim", hidden_dim),
        ("n_layers", n_layers),
        ("n_heads", n_heads),
        ("n_kv_heads", n_kv_heads),
        ("seq_len", seq_len),
    ] {
        if v <= 0 {
            return Err(bad(format!(
                "header field {name} is {v}, it must be positive: corrupt or not a llama2.c model"
            )));
        }
    }
    if vocab == 0 {
        return Err(bad(
            "header field vocab_size is 0: corrupt or not a llama2.c model".to_string()
        ));
    }
    if n_kv_heads != n_heads {
        return Err(bad(format!(
            "n_kv_heads {n_kv_heads} differs from n_heads {n_heads}: grouped-query attention \
             is not supported"
        )));
    }
    // llama2.c marks an unshared classifier with a negative vocab_size.
    let shared = vocab > 0;
    let vocab = vocab.unsigned_abs();

    // The size the header implies, in u128: i32 sizes multiplied together cannot overflow
    // it, and nothing is allocated until the file is known to be that long.
    let (d, h, l, v, s) =
        (dim as u128, hidden_dim as u128, n_layers as u128, vocab as u128, seq_len as u128);
    let head_size = d / n_heads as u128;
    let per_layer = 2 * d + 4 * d * d + 3 * d * h;
    let classifier = if shared { 0 } else { v * d };
    let floats = v * d + l * per_layer + d + rope_floats(s, head_size) + classifier;
    let expected = LLAMA2C_HEADER as u128 + 4 * floats;
    let actual = bytes.len() as u128;
    if actual != expected {
        let what = if actual < expected { "truncated" } else { "longer than its header says" };
        return Err(bad(format!(
            "file is {actual} bytes but its header (dim {dim}, hidden_dim {hidden_dim}, \
             n_layers {n_layers}, n_heads {n_heads}, vocab_size {vocab}, seq_len {seq_len}, \
             {} classifier) implies {expected} bytes: {what}",
            if shared { "shared" } else { "separate" }
        )));
    }

    let config = ModelConfig {
        dim: dim as usize,
        hidden_dim: hidden_dim as usize,
        n_layers: n_layers as usize,
        n_heads: n_heads as usize,
        seq_len: seq_len as usize,
        vocab_size: vocab as usize,
        shared_classifier: shared,
        norm_eps: LLAMA2C_NORM_EPS,
        rope_theta: LLAMA2C_ROPE_THETA,
    };
    config.validate().map_err(|e| bad(format!("its model cannot be used: {e}")))?;

    let mut params = Params::zeros(Arc::new(ParamLayout::new(&config)));
    let body = &bytes[LLAMA2C_HEADER..];
    // Everything up to the final norm is one run in both layouts; the RoPE tables sit
    // between it and the classifier in the file.
    let head = llama2c_head_len(&params);
    read_f32s(&body[..4 * head], &mut params.data[..head]);
    if !shared {
        let skip = head + rope_floats(s, head_size) as usize;
        let range = params.layout.range(Tensor::Classifier);
        read_f32s(&body[4 * skip..4 * (skip + range.len())], &mut params.data[range]);
    }
    Ok(params)
}

/// Writes `params` as a llama2.c model file, atomically, with the RoPE tables llama2.c's
/// export writes, so the file runs in llama2.c's `run.c`.
pub fn save_llama2c(path: &Path, params: &Params) -> Result<()> {
    let c = params.config();
    let bad = |m: String| Error::checkpoint(path, m);
    if params.data.len() != params.layout.len {
        return Err(bad(format!(
            "the parameters hold {} values but their layout has {}",
            params.data.len(),
            params.layout.len
        )));
    }
    if c.n_heads == 0 || !c.dim.is_multiple_of(c.n_heads) || !c.head_dim().is_multiple_of(2) {
        return Err(bad(format!(
            "dim {} and n_heads {} do not give an even head size, which llama2.c needs",
            c.dim, c.n_heads
        )));
    }
    let mut header = [0i32; 7];
    for (slot, (name, v)) in header.iter_mut().zip([
        ("dim", c.dim),
        ("hidden_dim", c.hidden_dim),
        ("n_layers", c.n_layers),
        ("n_heads", c.n_heads),
        ("n_kv_heads", c.n_heads),
        ("vocab_size", c.vocab_size),
        ("seq_len", c.seq_len),
    ]) {
        *slot = i32::try_from(v)
            .map_err(|_| bad(format!("{name} {v} does not fit llama2.c's i32 header")))?;
    }
    if !c.shared_classifier {
        header[5] = -header[5];
    }
    let (real, imag) = rope_tables(c);
    let head = llama2c_head_len(params);
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
    }
    write_atomically(path, create_file, |w| {
        for v in header {
            w.write_all(&v.to_le_bytes())?;
        }
        write_f32s(w, &params.data[..head])?;
        write_f32s(w, &real)?;
        write_f32s(w, &imag)?;
        if !c.shared_classifier {
            write_f32s(w, params.get(Tensor::Classifier))?;
        }
        Ok(())
    })
}

/// Floats of llama2.c's two RoPE tables: run.c skips `seq_len * head_size / 2` twice.
fn rope_floats(seq_len: u128, head_size: u128) -> u128 {
    2 * (seq_len * head_size / 2)
}

/// Floats before the RoPE tables: all parameters except an unshared classifier.
fn llama2c_head_len(params: &Params) -> usize {
    if params.config().shared_classifier {
        params.layout.len
    } else {
        params.layout.range(Tensor::Classifier).start
    }
}

/// llama2.c's `freq_cis_real` and `freq_cis_imag`, `[seq_len, head_dim / 2]`: for channel
/// pair i, freq = 1 / theta^(2i / head_dim), and the tables hold cos and sin of pos * freq
/// (in f32, as llama2.c computes them).
fn rope_tables(c: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let head = c.head_dim();
    let pairs = head / 2;
    let mut real = Vec::with_capacity(c.seq_len * pairs);
    let mut imag = Vec::with_capacity(c.seq_len * pairs);
    for pos in 0..c.seq_len {
        for i in 0..pairs {
            let freq = 1.0 / c.rope_theta.powf((2 * i) as f32 / head as f32);
            let angle = pos as f32 * freq;
            real.push(angle.cos());
            imag.push(angle.sin());
        }
    }
    (real, imag)
}

/// Maps `path` read-only. Both formats are read from the map: tensors are copied straight
/// into their buffers, so loading never holds a second copy of the file in memory.
fn map_file(path: &Path, what: &str) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::checkpoint(path, format!("does not exist (no {what} there)"))
        } else {
            Error::io(format!("opening {what} {}", path.display()), e)
        }
    })?;
    // SAFETY: the map is only read, and only while this function's caller decodes it.
    // This crate replaces these files by renaming a new file over them, never by writing
    // in place, so the mapped file does not change under us; another program truncating it
    // meanwhile could fault, the accepted risk of every memory-mapped loader.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(format!("mapping {}", path.display()), e))
}

/// Copies little-endian f32 values from `bytes` into `out` (whose length they match).
/// Byte-wise, so neither alignment nor host endianness matters, and NaN payloads survive.
fn read_f32s(bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), 4 * out.len());
    for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes(b.try_into().unwrap());
    }
}

/// Writes `values` as little-endian f32, a chunk at a time.
fn write_f32s(w: &mut impl Write, values: &[f32]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4 * WRITE_CHUNK.min(values.len()));
    for chunk in values.chunks(WRITE_CHUNK) {
        buf.clear();
        for v in chunk {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Where a file is written before it replaces its target: a writer that can also make its
/// bytes durable.
trait Sink: Write {
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create(true).truncate(true).open(path)
}

/// Writes `path` by way of `.<name>.tmp-<pid>` in the same directory (a rename is atomic
/// only within a file system): `body` fills it, it is synced, then renamed over `path`,
/// and the directory is synced so the rename itself survives a crash. On any error the
/// temporary file is removed and `path` is untouched.
fn write_atomically<S: Sink>(
    path: &Path,
    open: impl FnOnce(&Path) -> io::Result<S>,
    body: impl FnOnce(&mut BufWriter<S>) -> io::Result<()>,
) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().ok_or_else(|| Error::checkpoint(path, "the path does not name a file"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, open(&tmp)?);
        body(&mut w)?;
        let mut file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // The temporary file may not exist (opening failed); nothing else to undo.
        let _ = fs::remove_file(&tmp);
        let message = if is_disk_full(&e) {
            format!(
                "no space left on the device (disk full) while writing {}: {e}; nothing was \
                 replaced, the previous file (if any) is intact; free disk space and retry",
                tmp.display()
            )
        } else {
            format!(
                "writing {} failed: {e}; nothing was replaced, the previous file (if any) is \
                 intact",
                tmp.display()
            )
        };
        return Err(Error::checkpoint(path, message));
    }
    sync_dir(dir);
    Ok(())
}

fn is_disk_full(e: &io::Error) -> bool {
    // ENOSPC is 28 on Linux and macOS alike, for errors that arrive without a kind.
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || e.raw_os_error() == Some(28)
}

/// Best effort: the file's data is already synced; a failure here only risks losing the
/// rename in a crash, which leaves the previous file, so it is not worth failing the save.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// f32 fields in JSON: finite values as numbers (serde_json writes the shortest text that
/// reads back to the same bits), NaN and infinities as the strings "NaN", "inf", "-inf".
mod json_f32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f32),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f32(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "NaN" => Ok(f32::NAN),
                "inf" => Ok(f32::INFINITY),
                "-inf" => Ok(f32::NEG_INFINITY),
                _ => Err(D::Error::custom(format!("`{t}` is not a number"))),
            },
        }
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => super::serialize(v, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] f32);
            Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(v)| v))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::HashMap;

    use safetensors::View;

    use super::*;
    use crate::config::TrainConfig;

    fn model(dim: usize, n_layers: usize, shared: bool) -> ModelConfig {
        ModelConfig {
            dim,
            hidden_dim: 2 * dim,
            n_layers,
            n_heads: 2,
            seq_len: 16,
            vocab_size: 32,
            shared_classifier: shared,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    fn config(dim: usize) -> Config {
        Config { model: model(dim, 2, true), train: TrainConfig::default() }
    }

    /// Values with every awkward bit pattern a bit-exact format must keep.
    fn awkward(p: &mut Params, seed: u32) {
        let specials = [
            -0.0f32,
            f32::MIN_POSITIVE,
            f32::from_bits(1), // the smallest subnormal
            f32::MAX,
            f32::from_bits(0x7fc0_1234), // a NaN with a payload
            f32::NEG_INFINITY,
        ];
        for (i, v) in p.data.iter_mut().enumerate() {
            *v = if i % 97 == 0 {
                specials[(i / 97) % specials.len()]
            } else {
                // Values over many binades, whose decimal forms would not round-trip
                // through a short text representation.
                (i as f32 * 0.618 + seed as f32).sin() * 10f32.powi((i % 9) as i32 - 6)
            };
        }
    }

    fn state_for(config: Config, seed: u64) -> TrainState {
        let params = Params::init(&config.model, seed);
        let mut adam_m = Params::zeros(params.layout.clone());
        let mut adam_v = Params::zeros(params.layout.clone());
        awkward(&mut adam_m, 1);
        awkward(&mut adam_v, 2);
        TrainState {
            config,
            step: 1234,
            params,
            adam_m,
            adam_v,
            rng: RngState { seed: [7; 32], stream: 3, word_pos: (1u128 << 100) + 7 },
            total_steps: 5000,
            history: vec![
                LogPoint { step: 10, loss: 5.25, val_loss: None, lr: 1e-4 },
                LogPoint { step: 20, loss: 0.1 + 0.2, val_loss: Some(4.75), lr: 3e-4 },
            ],
            data: Some("data/tinystories.bin".into()),
            tokenizer: None,
        }
    }

    fn bits(p: &Params) -> Vec<u32> {
        p.data.iter().map(|v| v.to_bits()).collect()
    }

    fn assert_same(a: &TrainState, b: &TrainState) {
        assert_eq!(a.config, b.config);
        assert_eq!((a.step, a.total_steps), (b.step, b.total_steps));
        assert_eq!(a.rng, b.rng);
        assert_eq!(a.history, b.history);
        assert_eq!((&a.data, &a.tokenizer), (&b.data, &b.tokenizer));
        for (x, y) in [(&a.params, &b.params), (&a.adam_m, &b.adam_m), (&a.adam_v, &b.adam_v)] {
            assert_eq!(*x.layout, *y.layout);
            assert_eq!(bits(x), bits(y));
        }
    }

    fn checkpoint_err(r: Result<TrainState>) -> (PathBuf, String) {
        match r {
            Err(Error::Checkpoint { path, message }) => (path, message),
            Err(e) => panic!("expected a checkpoint error, got {e}"),
            Ok(_) => panic!("expected a checkpoint error, the load succeeded"),
        }
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/ckpt");
        let state = state_for(config(16), 1);
        let path = save(&dir, &state).unwrap();
        assert_eq!(path, dir.join(CHECKPOINT_FILE));
        assert_same(&state, &load(&dir).unwrap());
        assert_same(&state, &load(&path).unwrap());
        // Unshared classifier and the optional strings the other way round.
        let mut c = config(16);
        c.model.shared_classifier = false;
        let mut state = state_for(c, 2);
        state.data = None;
        state.tokenizer = Some(String::new());
        save(&dir, &state).unwrap();
        assert_same(&state, &load(&dir).unwrap());
        assert_eq!(dir_names(&dir), [CHECKPOINT_FILE]);
        // Identical states give identical files.
        let first = fs::read(&path).unwrap();
        save(&dir, &state).unwrap();
        assert_eq!(first, fs::read(&path).unwrap());
    }

    #[test]
    fn other_tools_read_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let state = state_for(config(16), 3);
        let path = save(tmp.path(), &state).unwrap();
        let bytes = fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 3 * state.params.layout.entries.len());
        let v = st.tensor("adam_v.layers.1.feed_forward.w2.weight").unwrap();
        assert_eq!(v.shape(), [16, 32]);
        let want: Vec<u8> =
            state.adam_v.get(Tensor::W2(1)).iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(v.data(), want.as_slice());
        let (n, _) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(n % 8, 0);
    }

    #[test]
    fn non_finite_history_survives() {
        let p = vec![
            LogPoint { step: 1, loss: f32::NAN, val_loss: Some(f32::INFINITY), lr: 1e-3 },
            LogPoint { step: 2, loss: f32::NEG_INFINITY, val_loss: None, lr: 0.0 },
        ];
        let text = serde_json::to_string(&p).unwrap();
        let back: Vec<LogPoint> = serde_json::from_str(&text).unwrap();
        assert!(back[0].loss.is_nan());
        assert_eq!(back[0].val_loss, Some(f32::INFINITY));
        assert_eq!(back[1].loss, f32::NEG_INFINITY);
        assert_eq!(back[1].val_loss, None);
        let old: LogPoint = serde_json::from_str(r#"{"step":3,"loss":2,"lr":1e-3}"#).unwrap();
        assert_eq!(old, LogPoint { step: 3, loss: 2.0, val_loss: None, lr: 1e-3 });
    }

    #[test]
    fn missing_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, m) = checkpoint_err(load(tmp.path()));
        assert_eq!(path, tmp.path());
        assert!(m.contains("no checkpoint in") && m.contains(CHECKPOINT_FILE), "{m}");
        let file = tmp.path().join("nope.safetensors");
        let (path, m) = checkpoint_err(load(&file));
        assert_eq!(path, file);
        assert!(m.contains("does not exist"), "{m}");
    }

    #[test]
    fn truncated_or_garbage_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = save(tmp.path(), &state_for(config(16), 4)).unwrap();
        let good = fs::read(&path).unwrap();
        let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let bad = tmp.path().join("bad.safetensors");
        let cases: Vec<(&str, Vec<u8>)> = [0, 4, 8, 20, header_end - 1, header_end, header_end + 3]
            .into_iter()
            .chain([good.len() / 2, good.len() - 1])
            .map(|n| ("truncated", good[..n].to_vec()))
            .chain([
                ("longer", [good.as_slice(), &[0u8; 4]].concat()),
                ("length + 8", {
                    let mut b = good.clone();
                    b[..8].copy_from_slice(&(header_end as u64).to_le_bytes());
                    b
                }),
                ("length max", {
                    let mut b = good.clone();
                    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                    b
                }),
                ("garbage", b"this is not a checkpoint, just some text\n".to_vec()),
                ("zeros", vec![0u8; 4096]),
            ])
            .collect();
        for (what, bytes) in cases {
            fs::write(&bad, &bytes).unwrap();
            let (p, m) = checkpoint_err(load(&bad));
            assert_eq!(p, bad, "{what}");
            assert!(m.contains("truncated or corrupt"), "{what} ({} bytes): {m}", bytes.len());
            let shown = Error::checkpoint(p, m).to_string();
            assert!(shown.contains("bad.safetensors"), "{shown}");
        }
    }

    /// A tensor for rewriting test files.
    struct Raw {
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    }

    impl View for Raw {
        fn dtype(&self) -> Dtype {
            self.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.shape
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(&self.bytes)
        }
        fn data_len(&self) -> usize {
            self.bytes.len()
        }
    }

    /// Rewrites a checkpoint with `edit` applied to its metadata and tensors.
    fn rewrite(
        path: &Path,
        edit: impl FnOnce(&mut HashMap<String, String>, &mut BTreeMap<String, Raw>),
    ) {
        let bytes = fs::read(path).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: BTreeMap<String, Raw> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                let raw =
                    Raw { dtype: v.dtype(), shape: v.shape().to_vec(), bytes: v.data().to_vec() };
                (n, raw)
            })
            .collect();
        edit(&mut meta, &mut tensors);
        fs::write(path, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
    }

    fn reason_after(
        edit: impl FnOnce(&mut HashMap<String, String>, &mut BTreeMap<String, Raw>),
    ) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let path = save(tmp.path(), &state_for(config(16), 5)).unwrap();
        rewrite(&path, edit);
        let (p, m) = checkpoint_err(load(tmp.path()));
        assert_eq!(p, path);
        m
    }

    #[test]
    fn a_rewrite_that_changes_nothing_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let state = state_for(config(16), 5);
        let path = save(tmp.path(), &state).unwrap();
        rewrite(&path, |_, _| {});
        assert_same(&state, &load(&path).unwrap());
    }

    #[test]
    fn wrong_metadata() {
        let m = reason_after(|meta, _| {
            meta.insert("format".into(), "pytorch".into());
        });
        assert!(m.contains("format is `pytorch`") && m.contains(FORMAT), "{m}");
        let m = reason_after(|meta, _| {
            meta.remove("format");
        });
        assert!(m.contains("no `format`"), "{m}");
        let m = reason_after(|meta, _| {
            meta.insert("version".into(), "2".into());
        });
        assert!(m.contains("version 2"), "{m}");
        let m = reason_after(|meta, _| {
            meta.insert("config".into(), "{not json".into());
        });
        assert!(m.contains("invalid `config` metadata"), "{m}");
        let m = reason_after(|meta, _| {
            meta.insert("rng".into(), "[1, 2]".into());
        });
        assert!(m.contains("invalid `rng` metadata"), "{m}");
        let m = reason_after(|meta, _| {
            meta.insert("history".into(), r#"[{"step": 1}]"#.into());
        });
        assert!(m.contains("invalid `history` metadata"), "{m}");
        let m = reason_after(|meta, _| {
            meta.insert("step".into(), "-3".into());
        });
        assert!(m.contains("invalid `step` metadata `-3`"), "{m}");
        let m = reason_after(|meta, _| {
            meta.remove("total_steps");
        });
        assert!(m.contains("`total_steps` metadata is missing"), "{m}");
        let m = reason_after(|meta, _| {
            let mut c = config(16);
            c.model.seq_len = 20;
            meta.insert("config".into(), serde_json::to_string(&c).unwrap());
        });
        assert!(m.contains("config is invalid") && m.contains("multiple of 16"), "{m}");
        let m = reason_after(|meta, _| {
            let mut c = config(16);
            c.model.n_layers = 1 << 40;
            meta.insert("config".into(), serde_json::to_string(&c).unwrap());
        });
        assert!(m.contains("layers"), "{m}");
    }

    #[test]
    fn wrong_tensors() {
        let m = reason_after(|_, t| {
            t.remove("adam_v.norm.weight");
        });
        assert!(m.contains("tensor `adam_v.norm.weight` is missing"), "{m}");
        let m = reason_after(|_, t| {
            let r = t.get_mut("layers.0.attention_norm.weight").unwrap();
            r.dtype = Dtype::F16;
            r.bytes.truncate(r.bytes.len() / 2);
        });
        assert!(m.contains("`layers.0.attention_norm.weight` is F16, expected F32"), "{m}");
        let m = reason_after(|_, t| {
            let r = t.get_mut("adam_m.layers.1.attention.wq.weight").unwrap();
            r.shape = vec![8, 32];
        });
        assert!(
            m.contains("`adam_m.layers.1.attention.wq.weight` has shape [8, 32]")
                && m.contains("needs [16, 16]"),
            "{m}"
        );
        let m = reason_after(|_, t| {
            let e = &t["tok_embeddings.weight"];
            let copy = Raw { dtype: e.dtype, shape: e.shape.clone(), bytes: e.bytes.clone() };
            t.insert("output.weight".into(), copy);
        });
        assert!(m.contains("unexpected tensor `output.weight`"), "{m}");
    }

    #[test]
    fn tensors_of_another_config() {
        let tmp = tempfile::tempdir().unwrap();
        // The metadata says dim 16 while the tensors come from a dim 32 model.
        let mut state = state_for(config(32), 6);
        state.config = config(16);
        let (_, m) = match save(tmp.path(), &state) {
            Err(Error::Checkpoint { path, message }) => (path, message),
            other => panic!("save should refuse an inconsistent state: {other:?}"),
        };
        assert!(m.contains("does not match"), "{m}");
        assert!(!tmp.path().join(CHECKPOINT_FILE).exists());
        save_with(tmp.path(), &state, create_file).unwrap();
        let (_, m) = checkpoint_err(load(tmp.path()));
        assert!(
            m.contains("`tok_embeddings.weight` has shape [32, 32]") && m.contains("[32, 16]"),
            "{m}"
        );
    }

    #[test]
    fn compatibility_names_the_differences() {
        let state = state_for(config(16), 7);
        let mut other = config(16);
        other.train.lr = 1.0;
        other.train.batch = 4;
        check_compatible(&state, &other).unwrap();
        let mut other = config(32);
        other.model.n_layers = 3;
        other.model.rope_theta = 500000.0;
        let e = check_compatible(&state, &other).unwrap_err().to_string();
        assert!(e.contains("the checkpoint has dim 16, the run asks for dim 32"), "{e}");
        assert!(e.contains("n_layers 2, the run asks for n_layers 3"), "{e}");
        assert!(e.contains("hidden_dim 32, the run asks for hidden_dim 64"), "{e}");
        assert!(e.contains("rope_theta 10000.0, the run asks for rope_theta 500000.0"), "{e}");
        assert!(!e.contains("vocab_size"), "{e}");
    }

    /// A file that accepts `room` bytes, then reports a full disk.
    struct FullDisk {
        file: File,
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(ErrorKind::StorageFull, "No space left on device"));
            }
            let n = self.file.write(&buf[..buf.len().min(self.room)])?;
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.file.flush()
        }
    }

    impl Sink for FullDisk {
        fn sync(&mut self) -> io::Result<()> {
            self.file.sync_all()
        }
    }

    #[test]
    fn a_full_disk_keeps_the_previous_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let old = state_for(config(16), 8);
        let path = save(tmp.path(), &old).unwrap();
        let before = fs::read(&path).unwrap();
        let new = state_for(config(16), 9);
        for room in [0, 100, before.len() / 2, before.len() - 1] {
            let r = save_with(tmp.path(), &new, |p| Ok(FullDisk { file: create_file(p)?, room }));
            let message = match r {
                Err(Error::Checkpoint { path: p, message }) => {
                    assert_eq!(p, path);
                    message
                }
                other => panic!("expected a checkpoint error: {other:?}"),
            };
            assert!(
                message.contains("no space left") && message.contains("disk full"),
                "{message}"
            );
            assert!(message.contains(".checkpoint.safetensors.tmp-"), "{message}");
            assert_eq!(fs::read(&path).unwrap(), before, "room {room}");
            assert_eq!(dir_names(tmp.path()), [CHECKPOINT_FILE], "room {room}");
        }
        assert_same(&old, &load(tmp.path()).unwrap());
    }

    #[test]
    fn dev_full_keeps_the_previous_checkpoint() {
        let dev_full = Path::new("/dev/full");
        if !dev_full.exists() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = save(tmp.path(), &state_for(config(16), 10)).unwrap();
        let before = fs::read(&path).unwrap();
        let e = save_with(tmp.path(), &state_for(config(16), 11), |_| {
            OpenOptions::new().write(true).open(dev_full)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("no space left") && e.contains(&path.display().to_string()), "{e}");
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(dir_names(tmp.path()), [CHECKPOINT_FILE]);
    }

    fn llama2c_err(r: Result<Params>) -> String {
        match r {
            Err(Error::Checkpoint { message, .. }) => message,
            Err(e) => panic!("expected a checkpoint error, got {e}"),
            Ok(_) => panic!("expected a checkpoint error, the load succeeded"),
        }
    }

    fn header_file(path: &Path, header: [i32; 7], floats: usize) {
        let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.resize(bytes.len() + 4 * floats, 0);
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn llama2c_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        for shared in [true, false] {
            let c = model(16, 2, shared);
            let mut p = Params::init(&c, 12);
            awkward(&mut p, 3);
            let path = tmp.path().join(format!("models/m-{shared}.bin"));
            save_llama2c(&path, &p).unwrap();
            let bytes = fs::read(&path).unwrap();
            let rope = 16 * 8; // seq_len * head_dim
            assert_eq!(bytes.len(), 28 + 4 * (c.parameter_count() + rope));
            let vocab = i32::from_le_bytes(bytes[20..24].try_into().unwrap());
            assert_eq!(vocab, if shared { 32 } else { -32 });
            let back = load_llama2c(&path).unwrap();
            assert_eq!(*back.config(), c);
            assert_eq!(bits(&back), bits(&p));
            // The RoPE tables after the final norm, as run.c computes them: head_dim 8,
            // position 3, pair 1.
            let at = 28 + 4 * llama2c_head_len(&p);
            let float = |i: usize| {
                f32::from_le_bytes(bytes[at + 4 * i..at + 4 * i + 4].try_into().unwrap())
            };
            let freq = 1.0 / 10000f32.powf(2.0 / 8.0);
            assert_eq!(float(3 * 4 + 1), (3.0 * freq).cos());
            assert_eq!(float(16 * 4 + 3 * 4 + 1), (3.0 * freq).sin());
            assert_eq!(float(0), 1.0);
        }
        assert_eq!(dir_names(&tmp.path().join("models")), ["m-false.bin", "m-true.bin"]);
    }

    #[test]
    fn llama2c_bad_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.bin");
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("does not exist"), "{m}");

        fs::write(&path, [0u8; 10]).unwrap();
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("10 bytes") && m.contains("28-byte header"), "{m}");

        header_file(&path, [16, 0, 2, 2, 2, 32, 16], 0);
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("hidden_dim is 0"), "{m}");
        header_file(&path, [16, 32, -2, 2, 2, 32, 16], 0);
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("n_layers is -2"), "{m}");
        header_file(&path, [16, 32, 2, 2, 2, 0, 16], 0);
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("vocab_size is 0"), "{m}");

        header_file(&path, [16, 32, 2, 4, 2, 32, 16], 0);
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("grouped-query attention is not supported"), "{m}");

        // A header claiming an enormous model over a tiny file.
        let max = i32::MAX;
        header_file(&path, [max, max, max, 1, 1, -max, max], 16);
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("file is 92 bytes") && m.contains("truncated"), "{m}");

        // Right length, but not a model the trainer can take.
        let c = model(16, 1, true);
        let floats = c.parameter_count() + 8 * 8;
        header_file(&path, [16, 32, 1, 2, 2, 32, 8], floats);
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("multiple of 16"), "{m}");

        let p = Params::init(&model(16, 2, false), 13);
        save_llama2c(&path, &p).unwrap();
        let good = fs::read(&path).unwrap();
        fs::write(&path, &good[..good.len() - 4]).unwrap();
        let m = llama2c_err(load_llama2c(&path));
        let expected = format!("file is {} bytes but", good.len() - 4);
        assert!(
            m.contains(&expected) && m.contains(&format!("implies {} bytes", good.len())),
            "{m}"
        );
        assert!(m.contains("truncated"), "{m}");
        fs::write(&path, [good.as_slice(), &[0; 8]].concat()).unwrap();
        let m = llama2c_err(load_llama2c(&path));
        assert!(m.contains("longer than its header says"), "{m}");
    }
}
