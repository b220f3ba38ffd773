//! Random byte edits of the real coremltools packages (flips, deleted and duplicated ranges,
//! cuts) never make the reader, the validator, the rewrites for the ANE or the simulator
//! panic: each edited model is refused with an error, or is a program that prints as MIL
//! text that parses back to it, and compiles and runs or fails with an error.

use std::fs;
use std::path::{Path, PathBuf};

use anemone::Device;
use anemone_mil::{coreml, lower, text, validate};

/// Deterministic pseudo-random numbers (SplitMix64) for the edits below.
struct Edits(u64);

impl Edits {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One random edit: a flipped byte, a deleted range, a duplicated range or a cut.
    fn apply(&mut self, bytes: &mut Vec<u8>) {
        let n = bytes.len();
        match self.below(4) {
            0 => {
                let i = self.below(n);
                bytes[i] ^= 1 << self.below(8);
            }
            1 => {
                let i = self.below(n);
                let len = 1 + self.below(16).min(n - i - 1);
                bytes.drain(i..i + len);
            }
            2 => {
                let i = self.below(n);
                let len = 1 + self.below(32).min(n - i - 1);
                let copy: Vec<u8> = bytes[i..i + len].to_vec();
                let at = self.below(n);
                bytes.splice(at..at, copy);
            }
            _ => bytes.truncate(self.below(n)),
        }
    }
}

#[test]
fn random_edits_of_real_coremltools_models_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/coreml");
    let mut paths: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path().join("model.mlpackage"))
        .filter(|p| p.is_dir())
        .collect();
    paths.sort();
    assert!(paths.len() >= 12, "the fixture packages are missing from {}", root.display());
    let (mut accepted, mut refused, mut ran) = (0, 0, 0);
    for (seed, path) in paths.iter().enumerate() {
        let weights = coreml::read(path).unwrap().weights;
        let file = path.join("Data/com.apple.CoreML/model.mlmodel");
        let original = fs::read(&file).unwrap();
        let mut edits = Edits(seed as u64 + 1);
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..1 + edits.below(3) {
                if bytes.len() > 1 {
                    edits.apply(&mut bytes);
                }
            }
            let converted = coreml::decode_model(&bytes)
                .ok()
                .and_then(|m| coreml::convert(&m, Path::new("edited.mlmodel")).ok());
            match converted {
                Some(c) => {
                    accepted += 1;
                    // Whatever is accepted validates without panicking and round-trips, and
                    // a valid program is rewritten for the ANE and compiled and run on the
                    // simulator without panicking (errors are fine).
                    let valid = validate::validate(&c.program).iter().all(|d| !d.is_error());
                    if valid {
                        let mut program = c.program.clone();
                        lower::for_ane(&mut program);
                        if let Ok(mut model) = Device::simulator().compile(&program, &weights) {
                            ran += usize::from(model.evaluate().is_ok());
                        }
                    }
                    let printed = text::print(&c.program);
                    match text::parse(&printed) {
                        Ok(p) => assert_eq!(p, c.program, "{printed}"),
                        Err(d) => {
                            let at = d.span.map_or(0, |s| s.start);
                            let line = printed[..at].lines().count();
                            let text = printed.lines().nth(line.saturating_sub(1)).unwrap_or("");
                            panic!(
                                "{}: printed text does not parse: {}\n{text}",
                                path.display(),
                                d.message
                            )
                        }
                    }
                }
                None => refused += 1,
            }
        }
    }
    eprintln!(
        "{accepted} edited models accepted ({ran} of them ran), {refused} refused, none panicked"
    );
}
