//! `anemone train` and `anemone generate` as a user runs them: a small model on a small
//! generated text, so that every run takes a fraction of a second on the simulator.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anemone_train::checkpoint;
use serde_json::Value;

/// The kernels a training run compiles, once for the whole run.
const KERNELS: u64 = 4;

fn anemone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone"))
        .args(args)
        // The simulator everywhere: the same numbers on every machine, and fast.
        .env("ANEMONE_DEVICE", "sim")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Asserts the exit code and that stderr holds every one of `parts`; returns stderr.
#[track_caller]
fn assert_fails(o: &Output, code: i32, parts: &[&str]) -> String {
    assert_exit(o, code);
    let err = stderr(o);
    for part in parts {
        assert!(err.contains(part), "stderr lacks {part:?}:\n{err}");
    }
    err
}

/// A few KB of English-like text: sentences drawn from a small vocabulary by a fixed LCG,
/// so the model has something learnable and every run sees the same bytes.
fn corpus() -> String {
    const WORDS: &[&str] = &[
        "the", "a", "king", "queen", "speaks", "walks", "to", "castle", "and", "night", "of",
        "her", "his", "sword", "love", "comes", "with", "light", "old", "friend", "in", "garden",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % n
    };
    let mut text = String::new();
    while text.len() < 4000 {
        let words = 4 + next(8);
        let sentence: Vec<&str> = (0..words).map(|_| WORDS[next(WORDS.len())]).collect();
        let mut sentence = sentence.join(" ");
        sentence[..1].make_ascii_uppercase();
        text.push_str(&sentence);
        text.push_str(if next(5) == 0 { ".\n" } else { ". " });
    }
    text
}

/// The model of every test unless a test asks for another.
const MODEL: &str =
    r#""dim": 32, "hidden_dim": 64, "n_layers": 1, "n_heads": 2, "seq_len": 16, "vocab_size": 256"#;
const TRAIN: &str = r#""batch": 2, "accum_steps": 1, "lr": 0.003, "warmup_steps": 2, "eval_every": 5, "eval_batches": 2, "checkpoint_every": 5"#;

/// A temporary directory holding a config file and a text to train on.
struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("text.txt");
        std::fs::write(&data, corpus()).unwrap();
        let config = dir.path().join("small.json");
        std::fs::write(&config, format!(r#"{{"model": {{{MODEL}}}, "train": {{{TRAIN}}}}}"#))
            .unwrap();
        Fixture { dir, config, data }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config file `name` with `model` as its model and the usual training settings.
    fn config_with_model(&self, name: &str, model: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!(r#"{{"model": {{{model}}}, "train": {{{TRAIN}}}}}"#))
            .unwrap();
        path
    }

    /// `anemone train` with the fixture's config and data into `out`, plus `extra`.
    fn train(&self, out: &Path, extra: &[&str]) -> Output {
        self.train_with(&self.config, &self.data, out, extra)
    }

    fn train_with(&self, config: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "train",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        anemone(&args)
    }
}

/// Every stdout line of a `--json` run, parsed.
#[track_caller]
fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

/// The names in a directory, to show that a failure left nothing behind.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn train_writes_checkpoint_and_curve_and_summarises_the_run() {
    let f = Fixture::new();
    let out = f.path("run");
    let o = f.train(&out, &["--steps", "6"]);
    assert_exit(&o, 0);
    let checkpoint = out.join("checkpoint.safetensors");
    assert!(checkpoint.is_file());
    let curve = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(curve.contains("<svg"), "{curve}");
    assert_eq!(listing(&out), ["checkpoint.safetensors", "loss.svg"]);
    // Reports go to stderr; stdout stays free for --json.
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    for part in [
        "device: sim",
        "model: dim 32",
        "training steps 1..6",
        "done at step 6 (6 steps",
        &format!("device compiles: {KERNELS}"),
        "ms/step:",
        " device + ",
        " cpu + ",
        " copy",
        &format!("checkpoint: {}", checkpoint.display()),
        &format!("loss curve: {}", out.join("loss.svg").display()),
    ] {
        assert!(err.contains(part), "stderr lacks {part:?}:\n{err}");
    }
    let state = checkpoint::load(&out).unwrap();
    assert_eq!((state.step, state.total_steps), (6, 6));

    // A run stopped early says so, and how to go on.
    let o = f.train(&f.path("stopped"), &["--steps", "6", "--stop-after", "2"]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(err.contains("stopped at step 2 (2 steps"), "{err}");
    assert!(err.contains("--resume, without --stop-after"), "{err}");
}

#[test]
fn json_lines_have_fixed_keys_and_the_kernels_compile_once() {
    let f = Fixture::new();
    let step_keys =
        set(&["step", "loss", "val_loss", "lr", "ms_per_step", "tokens_per_s", "compiles"]);
    for steps in [3_u64, 30] {
        let out = f.path(&format!("run{steps}"));
        let o = f.train(&out, &["--steps", &steps.to_string(), "--json", "--log-every", "1"]);
        assert_exit(&o, 0);
        let lines = json_lines(&o);
        let (last, logged) = lines.split_last().unwrap();
        assert_eq!(logged.len() as u64, steps, "one line per step with --log-every 1");
        for (i, line) in logged.iter().enumerate() {
            let step = i as u64 + 1;
            assert_eq!(keys(line), step_keys, "{line}");
            assert_eq!(line["step"], step, "{line}");
            assert!(line["loss"].as_f64().unwrap().is_finite(), "{line}");
            assert!(line["lr"].as_f64().unwrap() > 0.0, "{line}");
            assert!(line["ms_per_step"].as_f64().unwrap() > 0.0, "{line}");
            assert!(line["tokens_per_s"].as_f64().unwrap() > 0.0, "{line}");
            assert_eq!(line["compiles"], KERNELS, "{line}");
            // Validation runs every eval_every (5) steps and after the last.
            let evaluated = step.is_multiple_of(5) || step == steps;
            assert_eq!(line["val_loss"].is_f64(), evaluated, "{line}");
            if !evaluated {
                assert!(line["val_loss"].is_null(), "{line}");
            }
        }
        assert_eq!(
            keys(last),
            set(&["done", "step", "loss", "val_loss", "compiles", "checkpoint", "ms_per_step"]),
            "{last}"
        );
        assert_eq!(last["done"], true);
        assert_eq!(last["step"], steps);
        assert_eq!(last["compiles"], KERNELS, "{last}");
        assert_eq!(last["loss"], logged.last().unwrap()["loss"]);
        assert_eq!(last["val_loss"], logged.last().unwrap()["val_loss"]);
        let checkpoint = out.join("checkpoint.safetensors");
        assert_eq!(last["checkpoint"], checkpoint.display().to_string());
        assert!(checkpoint.is_file());
        let ms = &last["ms_per_step"];
        assert_eq!(keys(ms), set(&["total", "device", "cpu", "copy"]), "{ms}");
        let part = |k: &str| ms[k].as_f64().unwrap();
        assert!(part("device") > 0.0 && part("cpu") > 0.0 && part("copy") >= 0.0, "{ms}");
        let sum = part("device") + part("cpu") + part("copy");
        assert!((part("total") - sum).abs() <= 1e-6 * sum.max(1.0), "{ms}");
    }
}

/// Step number and the exact loss, val_loss and lr values of every step line.
fn step_values(lines: &[Value]) -> Vec<(u64, u64, Option<u64>, u64)> {
    lines
        .iter()
        .filter(|l| l.get("done").is_none())
        .map(|l| {
            let bits = |v: &Value| v.as_f64().unwrap().to_bits();
            (
                l["step"].as_u64().unwrap(),
                bits(&l["loss"]),
                l["val_loss"].as_f64().map(f64::to_bits),
                bits(&l["lr"]),
            )
        })
        .collect()
}

#[test]
fn a_resumed_run_continues_bit_for_bit() {
    let f = Fixture::new();
    let (resumed, whole) = (f.path("resumed"), f.path("whole"));
    let first =
        f.train(&resumed, &["--steps", "12", "--stop-after", "6", "--json", "--log-every", "1"]);
    assert_exit(&first, 0);
    let first = json_lines(&first);
    assert_eq!(step_values(&first).len(), 6);
    let summary = first.last().unwrap();
    assert_eq!((summary["done"].clone(), summary["step"].clone()), (true.into(), 6.into()));
    assert_eq!(checkpoint::load(&resumed).unwrap().step, 6);

    // Training settings on the command line do not apply to a resumed run: it says so, and
    // the numbers below show they were indeed ignored.
    let second = f.train(
        &resumed,
        &["--resume", "--steps", "12", "--json", "--log-every", "1", "--lr", "0.5", "--batch", "4"],
    );
    assert_exit(&second, 0);
    let err = stderr(&second);
    assert!(
        err.contains(
            "note: --resume continues with the checkpoint's training settings; ignoring --lr, \
             --batch"
        ),
        "{err}"
    );
    let second = json_lines(&second);
    let continued = step_values(&second);
    assert_eq!(continued.iter().map(|s| s.0).collect::<Vec<_>>(), (7..=12).collect::<Vec<_>>());
    assert_eq!(second.last().unwrap()["compiles"], KERNELS);

    let whole_run = f.train(&whole, &["--steps", "12", "--json", "--log-every", "1"]);
    assert_exit(&whole_run, 0);
    let uninterrupted = step_values(&json_lines(&whole_run));
    assert_eq!(uninterrupted.len(), 12);
    assert_eq!(step_values(&first), uninterrupted[..6], "steps 1..6 before the stop");
    assert_eq!(continued, uninterrupted[6..], "steps 7..12 after the resume");
    // And so the final states agree too.
    let (a, b) = (checkpoint::load(&resumed).unwrap(), checkpoint::load(&whole).unwrap());
    assert_eq!(a.step, 12);
    assert!(a.params.data.iter().zip(&b.params.data).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(a.history, b.history);
}

#[test]
fn generate_continues_the_prompt_reproducibly() {
    let f = Fixture::new();
    let out = f.path("run");
    assert_exit(&f.train(&out, &["--steps", "10"]), 0);
    let dir = out.to_str().unwrap();
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--checkpoint", dir, "--tokens", "40"];
        args.extend_from_slice(extra);
        anemone(&args)
    };
    let prompt = "The queen speaks";
    let sampled = generate(&["--prompt", prompt, "--seed", "7"]);
    assert_exit(&sampled, 0);
    let text = stdout(&sampled);
    assert!(text.starts_with(prompt), "{text:?}");
    assert!(text.len() > prompt.len() + 1, "nothing generated: {text:?}");
    assert!(text.ends_with('\n'), "{text:?}");
    assert_eq!(stdout(&generate(&["--prompt", prompt, "--seed", "7"])), text, "same seed");
    assert_ne!(stdout(&generate(&["--prompt", prompt, "--seed", "8"])), text, "another seed");

    // Temperature 0 takes the most likely token: the seed no longer matters.
    let greedy = generate(&["--prompt", prompt, "--temperature", "0", "--seed", "1"]);
    assert_exit(&greedy, 0);
    let greedy_text = stdout(&greedy);
    assert!(greedy_text.starts_with(prompt), "{greedy_text:?}");
    let again = generate(&["--prompt", prompt, "--temperature", "0", "--seed", "2"]);
    assert_eq!(stdout(&again), greedy_text);

    // The checkpoint file itself works as well as its directory.
    let file = out.join("checkpoint.safetensors");
    let o = anemone(&[
        "generate",
        "--checkpoint",
        file.to_str().unwrap(),
        "--tokens",
        "40",
        "--prompt",
        prompt,
        "--temperature",
        "0",
    ]);
    assert_eq!(stdout(&o), greedy_text);

    // No prompt: the model starts a fresh paragraph.
    let empty = anemone(&["generate", "--checkpoint", dir, "--tokens", "8"]);
    assert_exit(&empty, 0);
    assert!(!stdout(&empty).trim().is_empty(), "{:?}", stdout(&empty));

    for (flag, value, message) in [
        ("--top-p", "0", "top_p 0 must lie in (0, 1]"),
        ("--top-p", "1.5", "top_p 1.5 must lie in (0, 1]"),
        ("--temperature", "-1", "temperature -1 must be finite and at least 0"),
    ] {
        let o = generate(&[flag, value]);
        assert_fails(&o, 2, &[message]);
        assert_eq!(stdout(&o), "", "{flag} {value}");
    }
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing_behind() {
    let f = Fixture::new();
    let config = f.config.to_str().unwrap().to_string();
    let fresh = |name: &str, config: &Path, data: &Path, extra: &[&str], parts: &[&str]| {
        let out = f.path(name);
        let o = f.train_with(config, data, &out, extra);
        assert_fails(&o, 2, parts);
        assert!(!out.exists(), "{name}: a refused run wrote {}", out.display());
    };
    let steps: &[&str] = &["--steps", "3"];

    let missing = f.path("missing.txt");
    fresh("missing", &f.config, &missing, steps, &[&missing.display().to_string(), "no such file"]);

    let empty = f.path("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fresh("empty", &f.config, &empty, steps, &[&empty.display().to_string(), "empty"]);

    let short = f.path("short.txt");
    std::fs::write(&short, "Too short.").unwrap();
    fresh(
        "short",
        &f.config,
        &short,
        steps,
        &[&short.display().to_string(), "10 tokens are too few", "seq_len + 1 = 17"],
    );

    // A token file whose ids do not fit the model's 256-token vocabulary.
    let tokens = f.path("tokens.bin");
    let mut ids: Vec<u16> = (0..200).map(|i| (i % 200) as u16).collect();
    ids[57] = 300;
    std::fs::write(&tokens, ids.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    fresh(
        "tokens",
        &f.config,
        &tokens,
        steps,
        &[&tokens.display().to_string(), "token 300 at position 57", "vocab_size 256"],
    );

    let seq60 =
        f.config_with_model("seq60.json", &MODEL.replace("\"seq_len\": 16", "\"seq_len\": 60"));
    fresh(
        "seq60",
        &seq60,
        &f.data,
        steps,
        &[&seq60.display().to_string(), "seq_len 60", "multiple of 16"],
    );
    let wide = f.config_with_model("wide.json", &MODEL.replace("\"dim\": 32", "\"dim\": 20000"));
    fresh("wide", &wide, &f.data, steps, &[&wide.display().to_string(), "dim 20000", "channels"]);

    fresh("preset", Path::new("stories1b"), &f.data, steps, &["stories1b", "neither a preset"]);
    let garbled = f.path("garbled.json");
    std::fs::write(&garbled, "{\"model\": {\"dim\": 32,").unwrap();
    fresh("garbled", &garbled, &f.data, steps, &[&garbled.display().to_string()]);
    // A directory where the config file should be.
    fresh("dirconfig", f.dir.path(), &f.data, steps, &[&f.dir.path().display().to_string()]);

    fresh("zero", &f.config, &f.data, &["--steps", "0"], &["--steps must be at least 1"]);
    fresh(
        "stop0",
        &f.config,
        &f.data,
        &["--steps", "3", "--stop-after", "0"],
        &["--stop-after must be at least 1"],
    );
    fresh(
        "badlr",
        &f.config,
        &f.data,
        &["--steps", "3", "--lr", "-1"],
        &["lr, loss_scale and eps must be positive"],
    );

    let nothing = f.path("nothing");
    std::fs::create_dir(&nothing).unwrap();
    let o = f.train(&nothing, &["--steps", "3", "--resume"]);
    assert_fails(&o, 2, &[&nothing.display().to_string(), "checkpoint.safetensors is missing"]);
    assert!(listing(&nothing).is_empty());

    let o = anemone(&[
        "train",
        "--config",
        &config,
        "--data",
        f.data.to_str().unwrap(),
        "--out",
        nothing.to_str().unwrap(),
        "--steps",
        "3",
        "--resume",
        "--init",
        "model.bin",
    ]);
    assert_fails(&o, 2, &["--resume", "--init"]);

    let missing_model = f.path("no-such-run");
    let o = anemone(&["generate", "--checkpoint", missing_model.to_str().unwrap()]);
    assert_fails(&o, 2, &[&missing_model.display().to_string(), "does not exist"]);
    assert_eq!(stdout(&o), "");
}

#[test]
fn a_bad_checkpoint_stops_a_resume_and_is_left_as_it_was() {
    let f = Fixture::new();
    let out = f.path("run");
    assert_exit(&f.train(&out, &["--steps", "3"]), 0);
    let file = out.join("checkpoint.safetensors");
    let before = listing(&out);

    // Another model: the message names each field that differs.
    let wider = f.config_with_model("wider.json", &MODEL.replace("\"dim\": 32", "\"dim\": 64"));
    let bytes = std::fs::read(&file).unwrap();
    let o = f.train_with(&wider, &f.data, &out, &["--steps", "6", "--resume"]);
    assert_fails(&o, 2, &["cannot resume with a different model", "dim 32", "dim 64"]);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    assert_eq!(listing(&out), before);

    // Already at the horizon.
    let o = f.train(&out, &["--steps", "3", "--resume"]);
    assert_fails(&o, 2, &["at step 3", "--steps 3"]);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // Cut in half, as by a crash of something that does not write atomically.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let o = f.train(&out, &["--steps", "6", "--resume"]);
    assert_fails(&o, 2, &[&file.display().to_string(), "truncated or corrupt"]);
    assert_eq!(std::fs::read(&file).unwrap().len(), bytes.len() / 2);
    assert_eq!(listing(&out), before);
    let o = anemone(&["generate", "--checkpoint", out.to_str().unwrap()]);
    assert_fails(&o, 2, &[&file.display().to_string(), "truncated or corrupt"]);
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let f = Fixture::new();
    let out = f.path("run");
    assert_exit(&f.train(&out, &["--steps", "3"]), 0);
    // Weights far past fp16's range make the device's activations overflow.
    let mut state = checkpoint::load(&out).unwrap();
    for w in &mut state.params.data {
        *w *= 1e30;
    }
    let file = checkpoint::save(&out, &state).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let before = listing(&out);

    let o = f.train(&out, &["--steps", "6", "--resume", "--json"]);
    let err = assert_fails(
        &o,
        1,
        &["step 4:", "became", "the last good checkpoint (step 3) is kept", out.to_str().unwrap()],
    );
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    assert_eq!(stdout(&o), "", "no step finished");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the checkpoint was rewritten");
    assert_eq!(listing(&out), before);
}

#[test]
fn help_lists_every_option() {
    for (command, options) in [
        (
            "train",
            &[
                "--config",
                "--data",
                "--tokenizer",
                "--steps",
                "--out",
                "--resume",
                "--stop-after",
                "--init",
                "--device",
                "--seed",
                "--lr",
                "--batch",
                "--accum",
                "--warmup",
                "--loss-scale",
                "--eval-every",
                "--log-every",
                "--json",
            ][..],
        ),
        (
            "generate",
            &[
                "--checkpoint",
                "--prompt",
                "--tokens",
                "--temperature",
                "--top-p",
                "--seed",
                "--tokenizer",
                "--device",
            ][..],
        ),
    ] {
        let o = anemone(&[command, "--help"]);
        assert_exit(&o, 0);
        let help = stdout(&o);
        for option in options {
            assert!(help.contains(option), "`anemone {command} --help` lacks {option}:\n{help}");
        }
    }
}

/// A Hugging Face WordLevel tokenizer over the words of [`corpus`], written by hand.
fn word_tokenizer(path: &Path) -> Vec<String> {
    let mut words: Vec<String> = corpus()
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.sort();
    words.dedup();
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), 0.into());
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.clone(), (i + 1).into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(path, json.to_string()).unwrap();
    words
}

#[test]
fn token_files_train_and_decode_through_a_tokenizer_json() {
    let f = Fixture::new();
    let tokenizer = f.path("tokenizer.json");
    let words = word_tokenizer(&tokenizer);
    // A llama2.c-style token file: the corpus as word ids, uint16 little-endian.
    let ids: Vec<u16> = corpus()
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| 1 + words.iter().position(|x| *x == w.to_lowercase()).unwrap() as u16)
        .collect();
    let tokens = f.path("tokens.bin");
    std::fs::write(&tokens, ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let model = r#""dim": 32, "hidden_dim": 64, "n_layers": 1, "n_heads": 2, "seq_len": 16, "vocab_size": 64"#;
    let config = f.config_with_model("words.json", model);
    let out = f.path("words");
    let tok = tokenizer.to_str().unwrap();
    let o = f.train_with(&config, &tokens, &out, &["--steps", "4", "--tokenizer", tok]);
    assert_exit(&o, 0);
    // The checkpoint remembers its tokenizer: generate decodes words with it.
    let o = anemone(&[
        "generate",
        "--checkpoint",
        out.to_str().unwrap(),
        "--prompt",
        "the king",
        "--tokens",
        "12",
        "--seed",
        "3",
    ]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    let generated: Vec<&str> = text.split_whitespace().collect();
    assert!(generated.len() >= 8, "{text}");
    for w in &generated {
        let w = w.trim_matches(|c: char| !c.is_ascii_alphabetic()).to_lowercase();
        assert!(
            w.is_empty() || w == "king" || words.contains(&w),
            "`{w}` is not a word of the vocabulary: {text}"
        );
    }
}

#[test]
fn llama2c_models_generate_and_start_a_fine_tune() {
    let f = Fixture::new();
    let out = f.path("base");
    assert_exit(&f.train(&out, &["--steps", "20"]), 0);
    let state = checkpoint::load(&out).unwrap();
    let bin = f.path("model.bin");
    checkpoint::save_llama2c(&bin, &state.params).unwrap();
    // Generation straight from the llama2.c file (byte vocabulary: no tokenizer needed).
    let o = anemone(&[
        "generate",
        "--checkpoint",
        bin.to_str().unwrap(),
        "--prompt",
        "The ",
        "--tokens",
        "20",
        "--temperature",
        "0",
    ]);
    assert_exit(&o, 0);
    let from_bin = stdout(&o);
    let o = anemone(&[
        "generate",
        "--checkpoint",
        out.to_str().unwrap(),
        "--prompt",
        "The ",
        "--tokens",
        "20",
        "--temperature",
        "0",
    ]);
    assert_eq!(from_bin, stdout(&o), "the .bin and the checkpoint hold the same weights");
    // Fine-tuning starts from the file's weights: the first loss equals the base model's
    // loss on the same batch, far below an untrained model's ln(256) = 5.55.
    let tuned = f.path("tuned");
    let o = f.train(&tuned, &["--steps", "2", "--init", bin.to_str().unwrap(), "--json"]);
    assert_exit(&o, 0);
    let lines = json_lines(&o);
    let first = lines[0]["loss"].as_f64().unwrap();
    assert!(first < 5.4, "fine-tuning did not start from the model's weights: loss {first}");
    // A run started from the model file resumes without naming its shape again.
    let again = f.path("again");
    let (data, again_s, bin_s) =
        (f.data.to_str().unwrap(), again.to_str().unwrap(), bin.to_str().unwrap());
    let start = ["train", "--data", data, "--out", again_s, "--steps", "4"];
    let o = anemone(&[&start[..], &["--init", bin_s, "--stop-after", "2"]].concat());
    assert_exit(&o, 0);
    let o = anemone(&[&start[..], &["--resume", "--json"]].concat());
    assert_exit(&o, 0);
    assert_eq!(json_lines(&o).last().unwrap()["step"], 4);
    // A model file that does not match the config is refused with both shapes named.
    let other = f.config_with_model(
        "other.json",
        r#""dim": 64, "hidden_dim": 64, "n_layers": 1, "n_heads": 2, "seq_len": 16, "vocab_size": 256"#,
    );
    let o = f.train_with(
        &other,
        &f.data,
        &f.path("x"),
        &["--steps", "2", "--init", f.path("base/checkpoint.safetensors").to_str().unwrap()],
    );
    assert_fails(&o, 2, &["dim 32", "dim 64"]);
}

#[test]
fn a_fresh_run_never_replaces_an_existing_checkpoint() {
    let f = Fixture::new();
    let out = f.path("run");
    assert_exit(&f.train(&out, &["--steps", "3"]), 0);
    let file = out.join("checkpoint.safetensors");
    let before = std::fs::read(&file).unwrap();
    let o = f.train(&out, &["--steps", "6"]);
    assert_fails(&o, 2, &["already exists", "--resume"]);
    assert_eq!(std::fs::read(&file).unwrap(), before, "the checkpoint was touched");
}

#[test]
fn resume_keeps_the_recorded_tokenizer_and_generate_refuses_a_foreign_one() {
    let f = Fixture::new();
    let tokenizer = f.path("tokenizer.json");
    word_tokenizer(&tokenizer);
    let model = r#""dim": 32, "hidden_dim": 64, "n_layers": 1, "n_heads": 2, "seq_len": 16, "vocab_size": 64"#;
    let config = f.config_with_model("words.json", model);
    let out = f.path("words");
    let tok = tokenizer.to_str().unwrap();
    let o = f.train_with(
        &config,
        &f.data,
        &out,
        &["--steps", "4", "--stop-after", "2", "--tokenizer", tok],
    );
    assert_exit(&o, 0);
    // Resumed without --tokenizer: the text is read with the recorded one, and the next
    // checkpoint still names it.
    assert_exit(&f.train_with(&config, &f.data, &out, &["--steps", "4", "--resume"]), 0);
    let state = checkpoint::load(&out).unwrap();
    assert_eq!(state.tokenizer.as_deref(), Some(tok));
    // A tokenizer with more tokens than the model cannot be its tokenizer.
    let small = f.path("small");
    assert_exit(&f.train(&small, &["--steps", "2"]), 0);
    let big = f.path("big.json");
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "far": 999}, "unk_token": "<unk>"}
    });
    std::fs::write(&big, json.to_string()).unwrap();
    let o = anemone(&[
        "generate",
        "--checkpoint",
        small.to_str().unwrap(),
        "--tokenizer",
        big.to_str().unwrap(),
        "--prompt",
        "far",
    ]);
    assert_fails(&o, 2, &["1000 tokens", "vocabulary is 256"]);
    assert!(stdout(&o).is_empty());
}
