//! The JAX oracle: runs `scripts/jax_reference.py`, an independent float64 JAX
//! implementation of the model, on given parameters and tokens and reads back its loss and
//! gradients in the flat parameter layout.
//!
//! JAX is optional (`scripts/install-test-deps.sh` installs it): without it the comparison
//! is skipped, unless `ANEMONE_REQUIRE_JAX=1`, which makes a missing JAX a failure (CI).
//! The Python is `$ANEMONE_PYTHON`, else `python3`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anemone_train::Params;
use npyz::WriterBuilder;

fn python() -> String {
    std::env::var("ANEMONE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/jax_reference.py")
}

/// Whether `import jax` works with the tests' Python.
pub fn jax_importable() -> bool {
    Command::new(python())
        .args(["-c", "import jax, numpy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) {
    let file = File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    writer.extend(data.iter().copied()).unwrap();
    writer.finish().unwrap();
}

/// An f64 array written by the script, checked to have `len` values.
fn read_f64(path: &Path, len: usize) -> Vec<f64> {
    let file = File::open(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let values: Vec<f64> = npyz::NpyFile::new(std::io::BufReader::new(file))
        .and_then(|npy| npy.into_vec())
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    assert_eq!(
        values.len(),
        len,
        "{} holds {} values, expected {len}",
        path.display(),
        values.len()
    );
    values
}

/// The JAX model's mean loss and its gradient (flat, in `params.layout`) for `batch`
/// sequences of `inputs`/`targets` laid out one after another. `None` (after printing
/// "skipped: JAX not importable") when JAX is missing and not required.
pub fn jax_loss_and_grads(
    params: &Params,
    inputs: &[u32],
    targets: &[u32],
    batch: usize,
) -> Option<(f64, Vec<f64>)> {
    if !jax_importable() {
        if std::env::var("ANEMONE_REQUIRE_JAX").is_ok_and(|v| v == "1") {
            panic!(
                "ANEMONE_REQUIRE_JAX=1 but `import jax` fails with `{}`: run \
                 scripts/install-test-deps.sh (or set ANEMONE_PYTHON)",
                python()
            );
        }
        eprintln!("skipped: JAX not importable");
        return None;
    }
    let config = params.config();
    let seq = config.seq_len;
    assert_eq!(inputs.len(), batch * seq, "inputs must hold batch * seq_len tokens");
    assert_eq!(targets.len(), batch * seq, "targets must hold batch * seq_len tokens");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config_json = serde_json::to_string(config).expect("the config serialises");
    std::fs::write(dir.path().join("config.json"), config_json).unwrap();
    for (t, shape, range) in &params.layout.entries {
        let path = dir.path().join(format!("{}.npy", t.name()));
        write_npy(&path, shape, &params.data[range.clone()]);
    }
    for (name, tokens) in [("inputs", inputs), ("targets", targets)] {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        write_npy(&dir.path().join(format!("{name}.npy")), &[batch, seq], &ids);
    }

    // With JAX importable, a failing script is a bug in it or in what we wrote: fail loudly.
    let output = Command::new(python())
        .arg(script())
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python()));
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}",
        script().display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let loss = read_f64(&dir.path().join("loss.npy"), 1)[0];
    let mut grads = vec![0.0; params.layout.len];
    for (t, _, range) in &params.layout.entries {
        let path = dir.path().join(format!("grad.{}.npy", t.name()));
        grads[range.clone()].copy_from_slice(&read_f64(&path, range.len()));
    }
    Some((loss, grads))
}
