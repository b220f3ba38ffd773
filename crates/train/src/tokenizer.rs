//! Tokenizers: bytes (the default, vocab 256) or a Hugging Face `tokenizer.json`, and the
//! streaming decoder that turns generated ids into text as soon as the text is complete.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Turns text into token ids and back.
///
/// Cloning is cheap: a Hugging Face tokenizer is shared, not copied, so a
/// [`StreamDecoder`] can own its tokenizer instead of borrowing it.
#[derive(Clone)]
pub struct Tokenizer {
    model: Model,
    /// Computed once: the Hugging Face count walks the whole vocabulary.
    vocab_size: usize,
    bos_id: Option<u32>,
}

#[derive(Clone)]
enum Model {
    /// Each UTF-8 byte is its own id (0..256).
    Bytes,
    HuggingFace(Arc<tokenizers::Tokenizer>),
}

impl fmt::Debug for Tokenizer {
    // The derived form would print the whole vocabulary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.model {
            Model::Bytes => "bytes",
            Model::HuggingFace(_) => "hugging-face",
        };
        f.debug_struct("Tokenizer")
            .field("kind", &kind)
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .finish()
    }
}

impl Default for Tokenizer {
    fn default() -> Tokenizer {
        Tokenizer::bytes()
    }
}

impl Tokenizer {
    /// The byte-level tokenizer: vocab 256, no special tokens.
    pub fn bytes() -> Tokenizer {
        Tokenizer { model: Model::Bytes, vocab_size: 256, bos_id: None }
    }

    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let fail = |why: String| Error::Tokenizer(format!("{}: {why}", path.display()));
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail("no such file".into()));
            }
            Err(e) => return Err(fail(format!("cannot read: {e}"))),
            Ok(m) if m.is_dir() => {
                return Err(fail("is a directory, not a tokenizer.json file".into()));
            }
            Ok(_) => {}
        }
        let hf = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| fail(format!("not a valid Hugging Face tokenizer.json: {e}")))?;
        // Ids index the embedding, so the model needs one row per id up to the largest,
        // which is the count of tokens unless the vocabulary has holes.
        let vocab_size = hf
            .get_vocab(true)
            .values()
            .max()
            .map(|&id| id as usize + 1)
            .ok_or_else(|| fail("the vocabulary is empty".into()))?;
        let bos_id = hf.token_to_id("<s>");
        Ok(Tokenizer { model: Model::HuggingFace(Arc::new(hf)), vocab_size, bos_id })
    }

    /// Whether this is the byte-level tokenizer.
    pub fn is_bytes(&self) -> bool {
        matches!(self.model, Model::Bytes)
    }

    /// The number of ids (256 for bytes; one past the largest id, added tokens included,
    /// for Hugging Face).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The beginning-of-sequence id: the `<s>` token of a Hugging Face tokenizer that has
    /// one (llama2.c starts every sequence with it). Bytes have none.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The ids of `text`, without special tokens (prepend [`Tokenizer::bos_id`] where the
    /// model expects it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.model {
            Model::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Model::HuggingFace(hf) => hf
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}"))),
        }
    }

    /// The text of `ids`. Special tokens (such as `<s>`) are left out. Byte ids that do
    /// not form valid UTF-8 (for instance a sequence cut in the middle of a character)
    /// become U+FFFD; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        match &self.model {
            Model::Bytes => {
                // `check_ids` guarantees every id fits in a byte.
                let bytes: Vec<u8> = ids.iter().map(|&id| id as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Model::HuggingFace(hf) => hf
                .decode(ids, true)
                .map_err(|e| Error::Tokenizer(format!("cannot decode ids: {e}"))),
        }
    }

    /// A decoder for ids that arrive one at a time (generation).
    pub fn stream(&self) -> StreamDecoder {
        let state = match &self.model {
            Model::Bytes => Stream::Bytes { pending: Vec::new() },
            Model::HuggingFace(_) => {
                Stream::HuggingFace { ids: Vec::new(), context: 0, prefix: String::new() }
            }
        };
        StreamDecoder { tokenizer: self.clone(), state }
    }

    /// A stream decoder for ids that continue `context` (a prompt already shown): the last
    /// few context ids prime the decoder, so the first generated token is decoded as it
    /// reads after them (a word-separating space, a merged character) rather than as the
    /// start of a text.
    pub fn stream_after(&self, context: &[u32]) -> Result<StreamDecoder> {
        let mut stream = self.stream();
        if let Stream::HuggingFace { ids, context: emitted, prefix } = &mut stream.state {
            // A handful of ids is context enough for every decoder's neighbour rules.
            let tail = &context[context.len().saturating_sub(8)..];
            self.check_ids(tail)?;
            ids.extend_from_slice(tail);
            *emitted = ids.len();
            *prefix = self.decode(ids)?;
        }
        Ok(stream)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        // The Hugging Face decoder silently drops unknown ids, which would hide a model
        // or vocabulary mismatch; bytes cannot represent them at all.
        let known = |id: u32| match &self.model {
            Model::Bytes => id < 256,
            Model::HuggingFace(hf) => hf.id_to_token(id).is_some(),
        };
        match ids.iter().position(|&id| !known(id)) {
            None => Ok(()),
            Some(i) => Err(Error::Tokenizer(format!(
                "id {} at position {i} is not in the vocabulary (size {})",
                ids[i], self.vocab_size
            ))),
        }
    }
}

/// Decodes generated ids incrementally: [`StreamDecoder::push`] returns only the text
/// that became complete with that id, so printing each result in turn prints exactly the
/// decoded text, never half a character.
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    state: Stream,
}

#[derive(Clone, Debug)]
enum Stream {
    /// `pending` holds the start of a UTF-8 sequence whose remaining bytes have not
    /// arrived (at most three bytes).
    Bytes { pending: Vec<u8> },
    /// `ids[..context]` were already emitted and decode to `prefix`; the ids after them
    /// are not yet emitted. The context is kept because decoders depend on neighbours
    /// (a leading space is dropped only at the very start, byte-fallback tokens merge
    /// into one character), so new text is what `ids` decodes to beyond `prefix`.
    HuggingFace { ids: Vec<u32>, context: usize, prefix: String },
}

impl StreamDecoder {
    /// Adds one id and returns the text it completed (often empty while a character or
    /// a token group is still unfinished). With a Hugging Face tokenizer, text ending in
    /// U+FFFD counts as unfinished, so a token that really is U+FFFD appears with the next
    /// one (or from [`StreamDecoder::finish`]).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tokenizer.check_ids(&[id])?;
        match &mut self.state {
            Stream::Bytes { pending } => {
                pending.push(id as u8);
                Ok(take_complete_utf8(pending))
            }
            Stream::HuggingFace { ids, context, prefix } => {
                ids.push(id);
                let text = self.tokenizer.decode(ids)?;
                // A trailing U+FFFD means the last ids end inside a character (byte
                // fallback tokens); wait for the rest rather than print a placeholder.
                if text.ends_with('\u{FFFD}') || text.len() <= prefix.len() {
                    return Ok(String::new());
                }
                let new = text[common_prefix_len(&text, prefix)..].to_string();
                // The ids just emitted become the context of the next ones; older ids
                // are dropped so each push decodes a short list.
                ids.drain(..*context);
                *context = ids.len();
                *prefix = self.tokenizer.decode(ids)?;
                Ok(new)
            }
        }
    }

    /// Ends the stream, returning whatever text is still held back; incomplete
    /// characters become U+FFFD.
    pub fn finish(self) -> String {
        match self.state {
            Stream::Bytes { pending } => String::from_utf8_lossy(&pending).into_owned(),
            Stream::HuggingFace { ids, prefix, .. } => {
                // Every id was checked on push, so decoding can only fail inside the
                // Hugging Face decoder itself; there is nothing better to return then.
                let text = self.tokenizer.decode(&ids).unwrap_or_default();
                text[common_prefix_len(&text, &prefix)..].to_string()
            }
        }
    }
}

/// Removes and returns the longest decodable start of `pending`, leaving an unfinished
/// UTF-8 sequence at its end in place. Bytes that can never become valid are replaced
/// by U+FFFD so that one bad byte does not stall the stream.
fn take_complete_utf8(pending: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(pending) {
            Ok(s) => {
                out.push_str(s);
                pending.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // The first `valid` bytes are UTF-8, so this conversion is exact.
                out.push_str(&String::from_utf8_lossy(&pending[..valid]));
                match e.error_len() {
                    None => {
                        pending.drain(..valid);
                        return out;
                    }
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        pending.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

/// The length in bytes of the longest common start of `a` and `b` that ends on a
/// character boundary of both.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merged pieces of the test vocabulary, after the special and byte tokens.
    const PIECES: [&str; 17] = [
        "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁he", "▁hell", "▁hello", "or", "▁w",
        "▁wor", "▁world",
    ];

    /// A llama-style tokenizer written out by hand: BPE over Metaspace pieces with byte
    /// fallback, and the decoder sequence Hugging Face uses for llama2.
    fn tiny_llama_json() -> String {
        let mut vocab = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
        vocab.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        vocab.extend(PIECES.iter().map(|p| p.to_string()));
        let vocab: serde_json::Map<String, serde_json::Value> =
            vocab.into_iter().enumerate().map(|(i, t)| (t, i.into())).collect();
        let merges = [
            ("h", "e"),
            ("l", "l"),
            ("▁", "he"),
            ("▁he", "ll"),
            ("▁hell", "o"),
            ("o", "r"),
            ("▁", "w"),
            ("▁w", "or"),
        ];
        // No merge reaches `▁world` (there is no `▁worl`), so that word stays in three
        // tokens and the stream sees a word arrive in pieces.
        let special = |id: u32, content: &str| {
            serde_json::json!({"id": id, "content": content, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        };
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
            ]},
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<unk>",
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab,
                "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()
            }
        })
        .to_string()
    }

    fn write_tokenizer(json: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    fn stream_all(tok: &Tokenizer, ids: &[u32]) -> (Vec<String>, String) {
        let mut s = tok.stream();
        let pieces: Vec<String> = ids.iter().map(|&id| s.push(id).unwrap()).collect();
        let rest = s.finish();
        (pieces, rest)
    }

    #[test]
    fn bytes_round_trip() {
        let tok = Tokenizer::bytes();
        assert_eq!(tok.vocab_size(), 256);
        assert_eq!(tok.bos_id(), None);
        let text = "héllo, 世界 🦀!";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert!(ids.iter().all(|&id| id < 256));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Cut inside a character: decoded lossily.
        assert_eq!(tok.decode(&ids[..2]).unwrap(), "h\u{FFFD}");
        let e = tok.decode(&[300]).unwrap_err().to_string();
        assert!(e.contains("300") && e.contains("not in the vocabulary"), "{e}");
    }

    #[test]
    fn byte_stream_holds_back_split_characters() {
        let tok = Tokenizer::bytes();
        let text = "a🦀é";
        let ids = tok.encode(text).unwrap();
        let (pieces, rest) = stream_all(&tok, &ids);
        // 'a' at once, the crab after its 4th byte, 'é' after its 2nd.
        assert_eq!(pieces, ["a", "", "", "", "🦀", "", "é"]);
        assert_eq!(rest, "");
        assert_eq!(pieces.concat(), text);

        // An unfinished character at the end is flushed lossily.
        let (pieces, rest) = stream_all(&tok, &[0x61, 0xE4, 0xB8]);
        assert_eq!(pieces, ["a", "", ""]);
        assert_eq!(rest, "\u{FFFD}");

        // A byte that can never start a character does not stall what follows.
        let (pieces, rest) = stream_all(&tok, &[0xFF, 0x62, 0xC3, 0x62]);
        assert_eq!(pieces, ["\u{FFFD}", "b", "", "\u{FFFD}b"]);
        assert_eq!(rest, "");

        let mut s = tok.stream();
        assert!(s.push(256).is_err());
    }

    #[test]
    fn hugging_face_tokenizer() {
        let (_dir, path) = write_tokenizer(&tiny_llama_json());
        let tok = Tokenizer::from_file(&path).unwrap();
        assert!(!tok.is_bytes());
        assert_eq!(tok.vocab_size(), 3 + 256 + 17);
        assert_eq!(tok.bos_id(), Some(1));

        let text = "hello world é";
        let ids = tok.encode(text).unwrap();
        let id = |t: &str| 3 + 256 + PIECES.iter().position(|p| *p == t).unwrap() as u32;
        // "▁worl" is no token (its merge is missing), so `▁world` falls apart further.
        assert_eq!(ids[0], id("▁hello"));
        assert_eq!(&ids[1..4], [id("▁wor"), id("l"), id("d")]);
        // ' é' -> '▁' then the two UTF-8 bytes of 'é' as byte-fallback tokens.
        assert_eq!(&ids[4..], [id("▁"), 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Special tokens are not part of the text.
        let mut with_bos = vec![1];
        with_bos.extend(&ids);
        assert_eq!(tok.decode(&with_bos).unwrap(), text);
        assert!(tok.decode(&[10_000]).is_err());

        let (pieces, rest) = stream_all(&tok, &ids);
        assert_eq!(pieces, ["hello", " wor", "l", "d", " ", "", "é"]);
        assert_eq!(rest, "");
        assert_eq!(pieces.concat() + &rest, text);

        // A stream cut after half a character flushes it lossily.
        let (pieces, rest) = stream_all(&tok, &ids[..6]);
        assert_eq!(pieces.concat(), "hello world ");
        assert_eq!(rest, "\u{FFFD}");

        // A leading BOS adds nothing and does not disturb the first word's space
        // handling.
        let (pieces, rest) = stream_all(&tok, &with_bos);
        assert_eq!(pieces.concat() + &rest, text);
    }

    #[test]
    fn word_level_ids_beyond_sixteen_bits_are_counted() {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1, "big": 70000},
                "unk_token": "<unk>"}
        });
        let (_dir, path) = write_tokenizer(&json.to_string());
        let tok = Tokenizer::from_file(&path).unwrap();
        assert_eq!(tok.vocab_size(), 70001);
        assert_eq!(tok.bos_id(), None);
        assert_eq!(tok.encode("a big zzz").unwrap(), [1, 70000, 0]);
    }

    #[test]
    fn bad_tokenizer_files_name_the_file() {
        let (dir, path) = write_tokenizer("{\"version\": \"1.0\", \"model\": ");
        let e = Tokenizer::from_file(&path).unwrap_err();
        assert!(matches!(e, Error::Tokenizer(_)));
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("not a valid"), "{msg}");

        let missing = dir.path().join("missing.json");
        let msg = Tokenizer::from_file(&missing).unwrap_err().to_string();
        assert!(
            msg.contains(&missing.display().to_string()) && msg.contains("no such file"),
            "{msg}"
        );

        let msg = Tokenizer::from_file(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("directory"), "{msg}");
    }
}
