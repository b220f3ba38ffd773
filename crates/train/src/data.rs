//! Training data: a UTF-8 text file (tokenized on load, bytes by default) or a
//! llama2.c-style token file (uint16 little-endian ids, memory-mapped), split into a
//! training part and a held-out tail; random windows drawn from a seeded RNG whose state
//! can be checkpointed, and the fixed windows that validation uses.

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The state of the window sampler's RNG (ChaCha8), enough to continue the exact stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    /// The ChaCha8 key the generator was seeded with.
    pub seed: [u8; 32],
    /// The ChaCha8 stream number.
    pub stream: u64,
    /// Position in the keystream, in 32-bit words: where the next draw starts.
    pub word_pos: u128,
}

/// How to read a data file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataFormat {
    /// Token ids when the extension is `.bin` or `.tok` (llama2.c's pretokenized
    /// shards), text otherwise.
    #[default]
    Auto,
    /// UTF-8 text, tokenized on load.
    Text,
    /// uint16 little-endian token ids.
    Tokens,
}

impl DataFormat {
    /// `Text` or `Tokens` for `path`.
    pub fn resolve(self, path: &Path) -> DataFormat {
        match self {
            DataFormat::Auto => {
                let is_tokens = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("bin") || e.eq_ignore_ascii_case("tok")
                });
                if is_tokens { DataFormat::Tokens } else { DataFormat::Text }
            }
            other => other,
        }
    }
}

/// Which part of the data a window comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training part: the file's head.
    Train,
    /// The held-out tail (`val_fraction` of the tokens), or the training part when nothing is
    /// held out.
    Val,
}

enum Storage {
    /// The raw bytes of a token file: two little-endian bytes per id. Read through
    /// `u16::from_le_bytes` rather than cast so the layout holds on any host.
    Mapped(Mmap),
    Owned(Vec<u16>),
}

/// A tokenized corpus with its training/validation split.
pub struct Dataset {
    /// The file it came from (for messages).
    source: PathBuf,
    storage: Storage,
    len: usize,
    /// Tokens `0..train_len` are for training, the rest is held out.
    train_len: usize,
    held_out: bool,
}

impl fmt::Debug for Dataset {
    // The derived form would print every token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("source", &self.source)
            .field("mapped", &matches!(self.storage, Storage::Mapped(_)))
            .field("len", &self.len)
            .field("train_tokens", &self.train_tokens())
            .field("val_tokens", &self.val_tokens())
            .field("held_out", &self.held_out)
            .finish()
    }
}

impl Dataset {
    /// Opens `path` as a token file (`.bin`, `.tok`) or as UTF-8 text tokenized with
    /// `tokenizer`; see [`Dataset::open_with_format`].
    pub fn open(
        path: &Path,
        tokenizer: &Tokenizer,
        vocab_size: usize,
        seq_len: usize,
        val_fraction: f32,
    ) -> Result<Dataset> {
        Dataset::open_with_format(
            path,
            DataFormat::Auto,
            tokenizer,
            vocab_size,
            seq_len,
            val_fraction,
        )
    }

    /// Opens `path` in `format`, checks every id against `vocab_size`, and holds out the
    /// last `val_fraction` of the tokens for validation (at least one window of
    /// `seq_len + 1` tokens, at most all but one training window). With `val_fraction`
    /// 0 nothing is held out and validation reads the training part.
    pub fn open_with_format(
        path: &Path,
        format: DataFormat,
        tokenizer: &Tokenizer,
        vocab_size: usize,
        seq_len: usize,
        val_fraction: f32,
    ) -> Result<Dataset> {
        let fail = |why: String| Error::Data(format!("{}: {why}", path.display()));
        check_settings(path, seq_len, val_fraction)?;
        let bytes = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(fail("is a directory, not a data file".into())),
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail("no such file".into()));
            }
            Err(e) => return Err(fail(format!("cannot read: {e}"))),
        };
        if bytes == 0 {
            return Err(fail("the file is empty".into()));
        }
        let storage = match format.resolve(path) {
            DataFormat::Tokens => {
                if bytes % 2 != 0 {
                    return Err(fail(format!(
                        "{bytes} bytes is an odd length, but a token file holds 16-bit \
                         little-endian ids (is it a text file? only .bin and .tok files are \
                         read as tokens)"
                    )));
                }
                let file =
                    std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
                // SAFETY: the map is only read, and token files are inputs that nothing
                // writes while training runs; like every reader of mapped files we rely on
                // that, since a concurrent truncation could not be prevented from here.
                let map = unsafe { Mmap::map(&file) }
                    .map_err(|e| fail(format!("cannot memory-map: {e}")))?;
                let ids = map.chunks_exact(2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])));
                check_ids(ids, vocab_size).map_err(fail)?;
                Storage::Mapped(map)
            }
            _ => {
                let raw = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
                let text = std::str::from_utf8(&raw).map_err(|e| {
                    fail(format!(
                        "not valid UTF-8 at byte offset {} (token files must end in .bin or \
                         .tok)",
                        e.valid_up_to()
                    ))
                })?;
                Storage::Owned(tokenize(text, tokenizer, vocab_size).map_err(fail)?)
            }
        };
        Dataset::split(path.to_path_buf(), storage, seq_len, val_fraction)
    }

    /// A dataset over tokens already in memory (tests, generated corpora), checked and
    /// split as [`Dataset::open_with_format`] does.
    pub fn from_tokens(
        tokens: Vec<u16>,
        vocab_size: usize,
        seq_len: usize,
        val_fraction: f32,
    ) -> Result<Dataset> {
        let source = PathBuf::from("<in-memory tokens>");
        let fail = |why: String| Error::Data(format!("{}: {why}", source.display()));
        check_settings(&source, seq_len, val_fraction)?;
        if tokens.is_empty() {
            return Err(fail("there are no tokens".into()));
        }
        check_ids(tokens.iter().map(|&t| u32::from(t)), vocab_size).map_err(fail)?;
        Dataset::split(source, Storage::Owned(tokens), seq_len, val_fraction)
    }

    fn split(
        source: PathBuf,
        storage: Storage,
        seq_len: usize,
        val_fraction: f32,
    ) -> Result<Dataset> {
        let len = match &storage {
            Storage::Mapped(m) => m.len() / 2,
            Storage::Owned(v) => v.len(),
        };
        let window = seq_len + 1;
        let held_out = val_fraction > 0.0;
        let needed = if held_out { 2 * window } else { window };
        if len < needed {
            let what = if held_out {
                format!(
                    "one training window and one validation window of seq_len + 1 = {window} \
                     tokens each need {needed}"
                )
            } else {
                format!("one training window of seq_len + 1 = {window} tokens needs {needed}")
            };
            return Err(Error::Data(format!(
                "{}: {len} tokens are too few: {what}; use a smaller seq_len or more text",
                source.display()
            )));
        }
        let train_len = if held_out {
            // Clamped so that both parts hold at least one whole window.
            let val = (len as f64 * f64::from(val_fraction)).round() as usize;
            len - val.clamp(window, len - window)
        } else {
            len
        };
        Ok(Dataset { source, storage, len, train_len, held_out })
    }

    /// The file the tokens came from.
    pub fn path(&self) -> &Path {
        &self.source
    }

    /// All tokens, both parts.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: opening refuses data too short for one window.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens in the training part (the head of the file).
    pub fn train_tokens(&self) -> usize {
        self.train_len
    }

    /// Tokens validation reads: the held-out tail, or the training part when nothing is
    /// held out.
    pub fn val_tokens(&self) -> usize {
        self.range(Split::Val).len()
    }

    /// Whether validation has its own tokens (`val_fraction > 0`); otherwise the
    /// validation loss is measured on training data.
    pub fn has_held_out(&self) -> bool {
        self.held_out
    }

    /// The token positions of `split`.
    pub fn range(&self, split: Split) -> Range<usize> {
        match split {
            Split::Val if self.held_out => self.train_len..self.len,
            _ => 0..self.train_len,
        }
    }

    /// The token at position `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn token(&self, i: usize) -> u16 {
        match &self.storage {
            Storage::Mapped(m) => u16::from_le_bytes([m[2 * i], m[2 * i + 1]]),
            Storage::Owned(v) => v[i],
        }
    }

    /// Appends tokens `range` to `out` as ids.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn extend_with(&self, range: Range<usize>, out: &mut Vec<u32>) {
        match &self.storage {
            Storage::Mapped(m) => out.extend(
                m[2 * range.start..2 * range.end]
                    .chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))),
            ),
            Storage::Owned(v) => out.extend(v[range].iter().map(|&t| u32::from(t))),
        }
    }
}

fn check_settings(source: &Path, seq_len: usize, val_fraction: f32) -> Result<()> {
    if seq_len == 0 {
        return Err(Error::Data(format!("{}: seq_len must be at least 1", source.display())));
    }
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::Data(format!(
            "{}: val_fraction {val_fraction} must lie in [0, 1)",
            source.display()
        )));
    }
    Ok(())
}

/// Finds the first id the model cannot embed.
fn check_ids(ids: impl Iterator<Item = u32>, vocab_size: usize) -> Result<(), String> {
    for (i, id) in ids.enumerate() {
        if id as usize >= vocab_size {
            return Err(format!(
                "token {id} at position {i} is outside the vocabulary (vocab_size \
                 {vocab_size}): the data was tokenized for a larger vocabulary"
            ));
        }
    }
    Ok(())
}

/// Tokenizes `text` into 16-bit ids below `vocab_size`.
fn tokenize(text: &str, tokenizer: &Tokenizer, vocab_size: usize) -> Result<Vec<u16>, String> {
    let tokens: Vec<u16> = if tokenizer.is_bytes() {
        // Bytes are their own ids; no need for the u32 detour.
        text.bytes().map(u16::from).collect()
    } else {
        let ids = tokenizer.encode(text).map_err(|e| e.to_string())?;
        let mut tokens = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let t = u16::try_from(id).map_err(|_| {
                format!(
                    "the tokenizer gave id {id} at token {i}, which does not fit the 16 bits \
                     token storage allows (vocabularies up to 65536)"
                )
            })?;
            tokens.push(t);
        }
        tokens
    };
    check_ids(tokens.iter().map(|&t| u32::from(t)), vocab_size)?;
    Ok(tokens)
}

/// `batch` windows of `seq_len + 1` tokens: `inputs` holds the first `seq_len` tokens of
/// each window and `targets` the last `seq_len` (each input's next token), one sequence
/// after another (`[batch, seq_len]` row-major).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Input token ids, `[batch, seq_len]` row-major.
    pub inputs: Vec<u32>,
    /// Target ids, `[batch, seq_len]`: each input's next token.
    pub targets: Vec<u32>,
    /// Number of sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
}

impl Batch {
    /// The windows starting at `starts`.
    fn at(data: &Dataset, starts: impl ExactSizeIterator<Item = usize>, seq_len: usize) -> Batch {
        let batch = starts.len();
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        let mut window = Vec::with_capacity(seq_len + 1);
        for start in starts {
            window.clear();
            data.extend_with(start..start + seq_len + 1, &mut window);
            inputs.extend_from_slice(&window[..seq_len]);
            targets.extend_from_slice(&window[1..]);
        }
        Batch { inputs, targets, batch, seq_len }
    }

    /// The inputs (or targets) of sequence `b`.
    pub fn sequence(&self, b: usize) -> (&[u32], &[u32]) {
        let r = b * self.seq_len..(b + 1) * self.seq_len;
        (&self.inputs[r.clone()], &self.targets[r])
    }
}

/// The possible starts of a `seq_len + 1` window within `split`, panicking with the sizes
/// if there is none (a `seq_len` larger than the one the dataset was opened with).
fn window_starts(data: &Dataset, split: Split, seq_len: usize) -> RangeInclusive<usize> {
    let range = data.range(split);
    assert!(
        seq_len > 0 && range.len() > seq_len,
        "{split:?} part of {} has {} tokens, too few for a window of seq_len + 1 = {}",
        data.path().display(),
        range.len(),
        seq_len + 1
    );
    range.start..=range.end - seq_len - 1
}

/// Draws training (or validation) windows at uniformly random starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampler {
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler whose sequence of window starts is determined by `seed` alone.
    pub fn new(seed: u64) -> Sampler {
        Sampler { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Continues exactly where the sampler that gave `state` was.
    pub fn from_state(state: &RngState) -> Sampler {
        let mut rng = ChaCha8Rng::from_seed(state.seed);
        // The stream first: setting it keeps the word position, which is then replaced.
        rng.set_stream(state.stream);
        rng.set_word_pos(state.word_pos);
        Sampler { rng }
    }

    /// What a checkpoint needs to continue this stream.
    pub fn state(&self) -> RngState {
        RngState {
            seed: self.rng.get_seed(),
            stream: self.rng.get_stream(),
            word_pos: self.rng.get_word_pos(),
        }
    }

    /// `batch` windows of `seq_len + 1` tokens at independent uniform starts in `split`.
    ///
    /// # Panics
    /// If `split` holds fewer than `seq_len + 1` tokens (only possible with a `seq_len`
    /// larger than the one `data` was opened with) or `seq_len` is 0.
    pub fn batch(&mut self, data: &Dataset, split: Split, batch: usize, seq_len: usize) -> Batch {
        let range = window_starts(data, split, seq_len);
        let rng = &mut self.rng;
        let starts: Vec<usize> = (0..batch).map(|_| rng.random_range(range.clone())).collect();
        Batch::at(data, starts.into_iter(), seq_len)
    }
}

/// `n` batches of validation windows whose starts are spread evenly over the validation
/// part, the first at its start and the last at its end. They are the same on every call,
/// so validation losses from different steps compare the same tokens.
///
/// # Panics
/// As [`Sampler::batch`].
pub fn val_batches(data: &Dataset, n: usize, batch: usize, seq_len: usize) -> Vec<Batch> {
    let starts = window_starts(data, Split::Val, seq_len);
    let (first, last) = (*starts.start(), *starts.end());
    let windows = n * batch;
    let start = |k: usize| {
        // u128 so that `k * span` cannot overflow whatever the sizes.
        let span = (last - first) as u128;
        let offset = if windows > 1 { k as u128 * span / (windows as u128 - 1) } else { 0 };
        first + offset as usize
    };
    (0..n).map(|i| Batch::at(data, (i * batch..(i + 1) * batch).map(start), seq_len)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Tokens equal to their position (mod 2^16), so a window shows where it came from.
    fn counting(n: usize) -> Vec<u16> {
        (0..n).map(|i| i as u16).collect()
    }

    fn data_error(r: Result<Dataset>) -> String {
        match r {
            Err(Error::Data(msg)) => msg,
            Err(other) => panic!("expected a data error, got {other}"),
            Ok(d) => panic!("expected a data error, got {d:?}"),
        }
    }

    fn assert_windows(data: &Dataset, split: Split, b: &Batch) {
        let range = data.range(split);
        assert_eq!(b.inputs.len(), b.batch * b.seq_len);
        assert_eq!(b.targets.len(), b.batch * b.seq_len);
        for s in 0..b.batch {
            let (inputs, targets) = b.sequence(s);
            let first = inputs[0] as usize;
            assert!(range.contains(&first), "{first} outside {range:?}");
            assert!(first + b.seq_len < range.end, "window from {first} passes {range:?}");
            for j in 0..b.seq_len {
                assert_eq!(inputs[j] as usize, first + j);
                assert_eq!(targets[j] as usize, first + j + 1);
            }
        }
    }

    #[test]
    fn split_sizes() {
        let d = Dataset::from_tokens(counting(1000), 1000, 16, 0.1).unwrap();
        assert_eq!((d.len(), d.train_tokens(), d.val_tokens()), (1000, 900, 100));
        assert!(d.has_held_out());
        assert_eq!(d.range(Split::Val), 900..1000);

        // A small fraction still holds out one whole window.
        let d = Dataset::from_tokens(counting(1000), 1000, 16, 0.001).unwrap();
        assert_eq!((d.train_tokens(), d.val_tokens()), (983, 17));
        // A large one leaves one training window.
        let d = Dataset::from_tokens(counting(40), 1000, 16, 0.89).unwrap();
        assert_eq!((d.train_tokens(), d.val_tokens()), (17, 23));

        let d = Dataset::from_tokens(counting(1000), 1000, 16, 0.0).unwrap();
        assert!(!d.has_held_out());
        assert_eq!((d.train_tokens(), d.val_tokens()), (1000, 1000));
        assert_eq!(d.range(Split::Val), d.range(Split::Train));
    }

    #[test]
    fn windows_stay_in_their_split_and_targets_shift() {
        let d = Dataset::from_tokens(counting(500), 500, 16, 0.2).unwrap();
        let mut s = Sampler::new(1);
        for _ in 0..50 {
            assert_windows(&d, Split::Train, &s.batch(&d, Split::Train, 4, 16));
            assert_windows(&d, Split::Val, &s.batch(&d, Split::Val, 4, 16));
        }
        let v = val_batches(&d, 3, 2, 16);
        assert_eq!(v.len(), 3);
        for b in &v {
            assert_windows(&d, Split::Val, b);
        }
        // Spread from the first start of the held-out part to its last.
        assert_eq!(v[0].inputs[0], 400);
        assert_eq!(v[2].sequence(1).1[15], 499);
        assert_eq!(v, val_batches(&d, 3, 2, 16));
        let single = val_batches(&d, 1, 1, 16);
        assert_eq!(single[0].inputs[0], 400);
    }

    #[test]
    fn sampling_is_seeded_and_resumable() {
        let d = Dataset::from_tokens(counting(5000), 5000, 32, 0.1).unwrap();
        let draw = |s: &mut Sampler, k: usize| -> Vec<Batch> {
            (0..k).map(|_| s.batch(&d, Split::Train, 3, 32)).collect()
        };
        assert_eq!(draw(&mut Sampler::new(9), 4), draw(&mut Sampler::new(9), 4));
        assert_ne!(draw(&mut Sampler::new(9), 4), draw(&mut Sampler::new(10), 4));

        let mut s = Sampler::new(42);
        draw(&mut s, 3);
        let state = s.state();
        let json = serde_json::to_string(&state).unwrap();
        let next = draw(&mut s, 2);
        let restored: RngState = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, state);
        let mut r = Sampler::from_state(&restored);
        assert_eq!(draw(&mut r, 2), next);
        assert_eq!(r, s);

        // A non-default stream survives too.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        rng.set_stream(77);
        let mut s = Sampler { rng };
        draw(&mut s, 1);
        let mut r = Sampler::from_state(&s.state());
        assert_eq!(draw(&mut r, 2), draw(&mut s, 2));
    }

    #[test]
    fn token_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<u16> = (0..300u32).map(|i| ((i * 7919) % 32000) as u16).collect();
        let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
        for name in ["data.bin", "DATA.TOK"] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let d = Dataset::open(&path, &Tokenizer::bytes(), 32000, 16, 0.1).unwrap();
            assert_eq!(d.len(), 300);
            let back: Vec<u16> = (0..d.len()).map(|i| d.token(i)).collect();
            assert_eq!(back, ids);
            let mut all = Vec::new();
            d.extend_with(0..300, &mut all);
            assert!(all.iter().zip(&ids).all(|(&a, &b)| a == u32::from(b)));
            assert_eq!(d.path(), path);
        }
        // The same bytes forced to be text are not UTF-8 here, and `Tokens` reads any name.
        let path = dir.path().join("data.txt");
        std::fs::write(&path, &bytes).unwrap();
        let d = Dataset::open_with_format(
            &path,
            DataFormat::Tokens,
            &Tokenizer::bytes(),
            32000,
            16,
            0.0,
        )
        .unwrap();
        assert_eq!(d.token(299), ids[299]);
    }

    #[test]
    fn text_files_are_tokenized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.txt");
        let text = "Once upon a time, a crab 🦀 lived by the sea. ".repeat(10);
        std::fs::write(&path, &text).unwrap();
        let d = Dataset::open(&path, &Tokenizer::bytes(), 256, 32, 0.25).unwrap();
        assert_eq!(d.len(), text.len());
        let mut got = Vec::new();
        d.extend_with(0..d.len(), &mut got);
        assert_eq!(Tokenizer::bytes().decode(&got).unwrap(), text);
        assert_eq!(d.val_tokens(), (text.len() as f64 * 0.25).round() as usize);
    }

    #[test]
    fn hugging_face_text_is_checked_against_16_bits() {
        let dir = tempfile::tempdir().unwrap();
        let tok_path = dir.path().join("tokenizer.json");
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1, "big": 70000},
                "unk_token": "<unk>"}
        });
        std::fs::write(&tok_path, json.to_string()).unwrap();
        let tok = Tokenizer::from_file(&tok_path).unwrap();
        let path = dir.path().join("words.txt");
        std::fs::write(&path, "a a a a a a big a a").unwrap();
        let msg = data_error(Dataset::open(&path, &tok, 65536, 2, 0.0));
        assert!(msg.contains("70000") && msg.contains("at token 6"), "{msg}");
        std::fs::write(&path, "a a a zzz a a a a").unwrap();
        let d = Dataset::open(&path, &tok, 2, 2, 0.0).unwrap();
        assert_eq!(d.token(3), 0);
        assert_eq!(d.len(), 8);
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = Tokenizer::bytes();
        let open = |name: &str, contents: Option<&[u8]>, vocab: usize, f: f32| {
            let path = dir.path().join(name);
            if let Some(c) = contents {
                std::fs::write(&path, c).unwrap();
            }
            let msg = data_error(Dataset::open(&path, &bytes, vocab, 16, f));
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            msg
        };
        assert!(open("missing.txt", None, 256, 0.1).contains("no such file"));
        assert!(open("empty.txt", Some(b""), 256, 0.1).contains("empty"));
        assert!(open("empty.bin", Some(b""), 256, 0.1).contains("empty"));
        assert!(open("odd.bin", Some(&[1, 0, 2]), 256, 0.1).contains("odd length"));

        let mut ids: Vec<u8> = (0..40u16).flat_map(|t| t.to_le_bytes()).collect();
        ids[2 * 23..2 * 24].copy_from_slice(&300u16.to_le_bytes());
        let msg = open("range.bin", Some(&ids), 256, 0.1);
        assert!(msg.contains("token 300 at position 23") && msg.contains("256"), "{msg}");

        let mut text = b"hello world, ".repeat(5);
        text[17] = 0xFF;
        let msg = open("latin1.txt", Some(&text), 256, 0.1);
        assert!(msg.contains("UTF-8") && msg.contains("byte offset 17"), "{msg}");
        // Bytes need a vocabulary of 256.
        let msg = open("ascii.txt", Some(b"hello world hello world hello world!"), 100, 0.0);
        assert!(msg.contains("token 104 at position 0"), "{msg}");

        let msg = open("short.txt", Some(b"twenty-five bytes of text"), 256, 0.1);
        assert!(
            msg.contains("25 tokens") && msg.contains("need 34") && msg.contains("seq_len"),
            "{msg}"
        );
        let msg = open("shorter.txt", Some(b"sixteen bytes!!!"), 256, 0.0);
        assert!(msg.contains("16 tokens") && msg.contains("needs 17"), "{msg}");
        // Enough for training alone is not enough once a window must be held out.
        Dataset::open(&dir.path().join("short.txt"), &bytes, 256, 16, 0.0).unwrap();

        assert!(open("short.txt", None, 256, 1.0).contains("val_fraction"));
        assert!(open("short.txt", None, 256, f32::NAN).contains("val_fraction"));
        assert!(open("dir", None, 256, 0.0).contains("no such file"));
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        assert!(open("dir", None, 256, 0.0).contains("directory"));
    }

    #[test]
    #[should_panic(expected = "too few for a window")]
    fn windows_longer_than_the_data_panic_clearly() {
        let d = Dataset::from_tokens(counting(40), 40, 16, 0.0).unwrap();
        Sampler::new(0).batch(&d, Split::Train, 1, 64);
    }

    proptest! {
        #[test]
        fn sampled_windows_stay_in_bounds(
            len in 2usize..3000,
            seq_len in 1usize..200,
            val_fraction in prop_oneof![Just(0.0f32), 0.0f32..0.9],
            batch in 1usize..6,
            seed in any::<u64>(),
        ) {
            let d = Dataset::from_tokens(counting(len), len, seq_len, val_fraction);
            let needed = if val_fraction > 0.0 { 2 * (seq_len + 1) } else { seq_len + 1 };
            prop_assert_eq!(d.is_ok(), len >= needed);
            let Ok(d) = d else { return Ok(()) };
            prop_assert_eq!(d.train_tokens() + if d.has_held_out() { d.val_tokens() } else { 0 }, len);
            prop_assert!(d.train_tokens() > seq_len && d.val_tokens() > seq_len);
            let mut s = Sampler::new(seed);
            for split in [Split::Train, Split::Val] {
                for _ in 0..4 {
                    assert_windows(&d, split, &s.batch(&d, split, batch, seq_len));
                }
            }
            for b in val_batches(&d, 2, batch, seq_len) {
                assert_windows(&d, Split::Val, &b);
            }
        }
    }
}
