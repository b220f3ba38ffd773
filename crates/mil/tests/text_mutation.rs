//! The parser never panics: thousands of random byte edits of real programs (deletions,
//! insertions of structural characters, duplicated ranges, truncations) and a set of hostile
//! inputs either parse, and then print and parse back to the same program, or give a
//! diagnostic whose span lies within the text. Deterministic: a fixed seed per text.

use std::path::PathBuf;

use anemone_mil::diag::{Diagnostic, render};
use anemone_mil::text::{parse, print};

/// SplitMix64: tiny, fast, and good enough to choose edits.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that open, close or separate MIL syntax, or start numbers, strings and comments.
const STRUCTURAL: &[u8] = b"()[]{}<>,;=-+\"\\/.0123456789xXpPeE_ \n\t";

/// Non-ASCII text to splice in whole (so most edits keep the text valid UTF-8).
const WIDE: &[&str] = &["é", "€", "😀", "\u{feff}", "\u{0}", "\u{7f}", "\u{2028}"];

fn mutate(text: &[u8], rng: &mut SplitMix64) -> String {
    let mut bytes = text.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { rng.below(len + 1) };
        match rng.below(7) {
            0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                bytes.drain(at.min(end)..end);
            }
            1 => bytes.insert(at, *rng.pick(STRUCTURAL)),
            2 => bytes.insert(at, rng.below(256) as u8),
            3 => {
                let wide = rng.pick(WIDE).as_bytes();
                bytes.splice(at..at, wide.iter().copied());
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let copy = bytes[start..end].to_vec();
                bytes.splice(at..at, copy);
            }
            5 => bytes.truncate(at),
            _ if len > 0 => {
                let i = rng.below(len);
                bytes[i] = *rng.pick(STRUCTURAL);
            }
            _ => {}
        }
    }
    // A random byte can break UTF-8; the parser takes &str, so repair it the usual way.
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses `text` and checks the outcome either way; true when it parsed.
fn check_outcome(text: &str, render_it: bool) -> bool {
    match parse(text) {
        Ok(program) => {
            let printed = print(&program);
            let again = parse(&printed).unwrap_or_else(|d| {
                panic!(
                    "printed text does not parse: {d:?}\n--- input\n{text}\n--- printed\n{printed}"
                )
            });
            assert_eq!(again, program, "round trip differs for input\n{text}");
            // Whatever parses must also validate and lint without panicking, and every
            // finding must point inside the text.
            for d in anemone_mil::check(&program, None, anemone_mil::blob::ReadMode::Strict) {
                if let Some(span) = d.span {
                    assert!(span.end <= text.len(), "{d:?}");
                }
                if render_it {
                    assert!(!render(&d, "mutated.mil", text, false).is_empty());
                }
            }
            true
        }
        Err(diag) => {
            check_diagnostic(&diag, text, render_it);
            false
        }
    }
}

fn check_diagnostic(diag: &Diagnostic, text: &str, render_it: bool) {
    assert!(diag.is_error());
    assert!(diag.code.starts_with("parse::"), "{diag:?}");
    assert!(!diag.message.is_empty());
    if let Some(span) = diag.span {
        assert!(
            span.start <= span.end && span.end <= text.len(),
            "{diag:?} in {} bytes",
            text.len()
        );
    } else {
        assert!(text.trim().is_empty() || text.len() < 2, "no span: {diag:?}");
    }
    if render_it {
        assert!(!render(diag, "mutated.mil", text, false).is_empty());
    }
}

fn fixture_texts() -> Vec<(String, String)> {
    const CORPUS: &str = "shared/fixtures/mil-maderix";
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(dir) = manifest.ancestors().map(|a| a.join(CORPUS)).find(|d| d.is_dir()) else {
        assert!(
            std::env::var("ANEMONE_REQUIRE_SHARED").as_deref() != Ok("1"),
            "{CORPUS} not found and ANEMONE_REQUIRE_SHARED=1"
        );
        println!("skipped: shared fixtures not found (mutating the built-in program only)");
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mil"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// A program that uses every construct the fixtures leave out.
const EVERYTHING: &str = r#"program(1.0)
[buildInfo = dict<tensor<string, []>, string>({{"k", "v\"q\\"}, {"u", "\u{1F600}\n"}})]
{
    // comment
    func main<ios16>(tensor<fp32, [1, 4]> x, fp16 s) {
        tensor<fp16, [4]> h = const()[name = string("h"), val = tensor<fp16, [4]>([0x1.8p+1, -inf, nan(0x7e01), 1e-4])];
        tensor<int8, [2, 2]> q = const()[val = tensor<int8, [2, 2]>([-128, 127, 0x10, -0x1])];
        tensor<fp8e4m3, [2]> e = const()[val = tensor<fp8e4m3, [2]>([448, -0.5])];
        tensor<bool, [1]> b = const()[val = tensor<bool, [1]>(true)];
        dict<string, tensor<int32, [2]>> d = const()[val = dict<string, tensor<int32, [2]>>({{"a", [1, 2]}})];
        tensor<fp32, [2, 4]> y, tensor<fp32, [1]> z = split(x = (x, (x, s)), w = fp64(.5))[name = tensor<string, []>("y")];
    } -> (y, z);
    func other<ios18>() {
    } -> ();
}
"#;

#[test]
fn random_edits_never_panic() {
    let mut texts = fixture_texts();
    texts.push(("built-in".to_string(), EVERYTHING.to_string()));
    assert!(check_outcome(EVERYTHING, true), "{:?}", parse(EVERYTHING).err());
    // 10 fixtures × 550 + 600 = 6100 mutated texts (5000 of the built-in program when the
    // fixtures are absent); ANEMONE_MUTATION_SCALE=N runs N times as many.
    let scale: usize =
        std::env::var("ANEMONE_MUTATION_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut total = 0;
    let mut parsed = 0;
    for (index, (name, text)) in texts.iter().enumerate() {
        let rounds = scale
            * match (name.as_str(), texts.len()) {
                ("built-in", 1) => 5000,
                ("built-in", _) => 600,
                _ => 550,
            };
        let mut rng = SplitMix64(0x5eed_0000 + index as u64);
        for round in 0..rounds {
            let mutated = mutate(text.as_bytes(), &mut rng);
            parsed += usize::from(check_outcome(&mutated, round % 16 == 0));
            total += 1;
        }
    }
    println!("{total} mutated texts, {parsed} still parsed");
    assert!(total >= 5000);
}

#[test]
fn hostile_inputs_are_rejected_cleanly() {
    let deep = 100_000;
    let head = "program(1.3)\n{\n    func main<ios18>(fp16 x) {\n        fp16 y = ";
    let value_head = "program(1.3)\n{\n    func main<ios18>() {\n        fp16 c = const()[val = ";
    let cases: Vec<String> = vec![
        String::new(),
        "\n\n\n".into(),
        "(".repeat(deep),
        "[".repeat(deep),
        "{".repeat(deep),
        "<".repeat(deep),
        "\"".repeat(deep),
        "\\".repeat(deep),
        "-".repeat(deep),
        "/".repeat(deep),
        "1".repeat(deep),
        format!("{head}add(x = {})", "(".repeat(deep)),
        format!("{head}add(x = {}x{})[];", "(".repeat(63), ")".repeat(63)),
        format!("{value_head}{}fp16{}(1)];", "dict<".repeat(deep), ">".repeat(deep)),
        format!("{value_head}{}", "tensor<".repeat(deep)),
        format!("{value_head}tensor<fp16, [1]>([{}])];", "[".repeat(deep)),
        format!("{value_head}fp16({})];", "1".repeat(deep)),
        format!("{value_head}fp16(0x{}p1)];", "f".repeat(deep)),
        format!("{value_head}fp16(1e{})];", "9".repeat(deep)),
        format!("{value_head}fp16(0x1p-{})];", "9".repeat(deep)),
        format!("{value_head}fp16(0.{}1)];", "0".repeat(deep)),
        format!("{value_head}fp16(6550{}1)];", "4".repeat(deep)),
        format!("{value_head}tensor<fp16, [99999999999, 99999999999, 99999999999]>([1])];"),
        format!("{value_head}tensor<fp16, [99999999999999999999999]>([1])];"),
        format!("{value_head}tensor<fp16, [{}]>([1])];", vec!["1"; deep].join(",")),
        format!(
            "{value_head}tensor<fp16, [4294967296, 4294967296]>(BLOBFILE(path = string(\"w\"), \
             offset = uint64(18446744073709551615)))];\n    }} -> (c);\n}}\n"
        ),
        format!("{value_head}int64(-{})];", "9".repeat(40)),
        format!("{value_head}string(\"{}\")];", "\\u{".repeat(deep)),
        format!("{value_head}nan(0x{})];", "f".repeat(100)),
        "program(1.3) { func main<ios18>() { } -> (); }".into(),
        "program(1.3) { func main<ios18>() { } -> (); } }".into(),
        "\u{feff}program(1.3) {}".into(),
    ];
    for case in &cases {
        check_outcome(case, case.len() < 10_000);
    }
    // Deep nesting is refused with its own diagnostic, not a stack overflow.
    let err = parse(&cases[11]).unwrap_err();
    assert_eq!(err.code, "parse::too-deep");
    let err = parse(&cases[13]).unwrap_err();
    assert_eq!(err.code, "parse::too-deep");
    // Shapes are only declared, never allocated.
    assert_eq!(parse(&cases[22]).unwrap_err().code, "parse::literal-count");
    assert!(parse(&cases[25]).is_ok());
}
