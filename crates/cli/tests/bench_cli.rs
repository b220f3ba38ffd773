//! `anemone bench` as a user runs it: the suite's cases, the slowest-op column and the
//! `--compare` regression check against a saved `--json` document.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::{stderr, stdout};

fn anemone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone"))
        .args(args)
        .env_remove("ANEMONE_DEVICE")
        .output()
        .unwrap()
}

/// `bench --device sim --seconds 0` plus `extra`: the shortest run there is.
fn quick_bench(extra: &[&str]) -> Output {
    let mut args = vec!["bench", "--device", "sim", "--seconds", "0"];
    args.extend_from_slice(extra);
    anemone(&args)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn write(dir: &Path, name: &str, doc: &serde_json::Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

const SEED: &str = "seed conv 64x64, spatial 32";
const CONV3: &str = "conv 3x3 64->64, 56x56";
const MLP: &str = "mlp: layer_norm + linear + gelu";

#[test]
fn list_names_every_case_of_the_suite_and_runs_nothing() {
    let o = anemone(&["bench", "--list", "--fixtures", "/nonexistent/fixtures/dir"]);
    // A fixtures directory that does not exist is an error, as in a measured run.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let o = anemone(&["bench", "--list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let names: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    for expected in [
        SEED,
        "conv 1x1 768->768, spatial 256",
        "conv 1x1 768->2048, spatial 256",
        CONV3,
        "attention 12 heads, seq 256, dim 64",
        MLP,
        "stories15m attn_fwd, 4x256 tokens",
        "stories15m ffn_fwd, 4x256 tokens",
        "stories15m attn_bwd, 4x256 tokens",
        "stories15m ffn_bwd, 4x256 tokens",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(!stderr(&o).contains("measuring"), "--list measured: {}", stderr(&o));

    let o = anemone(&["bench", "--list", "--only", "stories15m"]);
    assert_eq!(stdout(&o).lines().count(), 4, "{}", stdout(&o));
}

#[test]
fn the_new_cases_compile_and_run_on_the_simulator() {
    let o = quick_bench(&["--json", "--only", "conv 3x3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = json(&o);
    assert_eq!(doc["cases"][0]["name"], CONV3);
    // 2 FLOPs per multiply-add: 64 x 64 x 3 x 3 per output position, 56 x 56 positions.
    assert_eq!(doc["cases"][0]["flops"], 2 * 64 * 64 * 9 * 56 * 56);

    let o = quick_bench(&["--json", "--only", "mlp:"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = json(&o);
    assert_eq!(doc["cases"][0]["name"], MLP);
    // The two linears dominate: 2 x (256 x 768 x 3072) multiply-adds.
    let flops = doc["cases"][0]["flops"].as_u64().unwrap();
    assert!(flops >= 2 * 2 * 256 * 768 * 3072, "{flops}");

    let o = quick_bench(&["--json", "--only", "stories15m"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = json(&o);
    let names: Vec<&str> =
        doc["cases"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["attn_fwd", "ffn_fwd", "attn_bwd", "ffn_bwd"]
            .map(|k| format!("stories15m {k}, 4x256 tokens"))
    );
    for c in doc["cases"].as_array().unwrap() {
        assert!(c["evaluate_us"].as_f64().unwrap() > 0.0, "{c}");
    }
}

#[test]
fn the_slowest_op_is_named_in_the_table_and_the_json() {
    let o = quick_bench(&["--only", "seed conv"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let header = text.lines().find(|l| l.starts_with("case ")).unwrap();
    assert!(header.trim_end().ends_with("slowest op"), "{header}");
    let row = text.lines().find(|l| l.starts_with(SEED)).unwrap();
    // The conv (its output is `conv`; the program's output `y` is the cast after it) with
    // its share in percent.
    let last = row.split_whitespace().rev().take(3).collect::<Vec<_>>();
    assert_eq!(&last[1..], ["conv", "conv"], "{row}");
    assert!(last[0].ends_with('%'), "{row}");

    let o = quick_bench(&["--json", "--only", "seed conv"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = json(&o);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["seconds"], 0.0);
    let op = &doc["cases"][0]["slowest_op"];
    assert_eq!(op["type"], "conv", "{op}");
    assert_eq!(op["output"], "conv", "{op}");
    let share = op["share"].as_f64().unwrap();
    assert!(share > 0.0 && share <= 1.0, "{op}");
    assert!(op["us"].as_f64().unwrap() > 0.0, "{op}");
}

#[test]
fn ops_lists_each_cases_slowest_ops_slowest_first() {
    // The seed case is conv + the simulator's casts: two ops at most, so --ops 5 lists what
    // there is; the JSON carries the same list, slowest first, led by slowest_op.
    let o = quick_bench(&["--json", "--ops", "5", "--only", "seed conv"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = json(&o);
    let case = &doc["cases"][0];
    let ops = case["ops"].as_array().unwrap();
    assert!(!ops.is_empty() && ops.len() <= 5, "{case}");
    assert_eq!(ops[0], case["slowest_op"]);
    let us: Vec<f64> = ops.iter().map(|op| op["us"].as_f64().unwrap()).collect();
    assert!(us.windows(2).all(|w| w[0] >= w[1]), "{us:?}");

    let o = quick_bench(&["--ops", "2", "--only", "mlp"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let section: Vec<&str> =
        text.lines().skip_while(|l| !l.starts_with("slowest ops")).skip(1).collect();
    assert_eq!(section.first(), Some(&MLP), "{text}");
    assert_eq!(section.len(), 3, "the case and its two slowest ops: {text}");
    assert!(section[1..].iter().all(|l| l.contains(" us ") && l.contains('%')), "{text}");

    // Without --ops the JSON has no list, and 0 is refused.
    let o = quick_bench(&["--json", "--only", "seed conv"]);
    assert!(json(&o)["cases"][0].get("ops").is_none());
    let o = quick_bench(&["--ops", "0", "--only", "seed conv"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn compare_marks_a_case_slower_beyond_the_tolerance_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    // The seed conv took a second before (so it is faster now); the 3x3 conv a nanosecond
    // (so it is slower now, by far more than any tolerance).
    let baseline = serde_json::json!({
        "version": 1,
        "device": "sim",
        "peak_gflops": 100.0,
        "cases": [
            {"name": SEED, "evaluate_us": 1e6},
            {"name": CONV3, "evaluate_us": 0.001},
            {"name": "a case this version no longer has", "evaluate_us": 5.0},
        ],
    });
    let file = write(dir.path(), "old.json", &baseline);
    let o = quick_bench(&["--only", "conv", "--compare", &file]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    let row = |name: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with("compared with"))
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no comparison row for {name}: {text}"))
            .to_string()
    };
    assert!(row(SEED).contains("1000000.0 us") && !row(SEED).contains("SLOWER"), "{text}");
    assert!(row(CONV3).contains("SLOWER"), "{text}");
    assert!(text.contains("only in the baseline: a case this version no longer has"), "{text}");
    assert!(text.contains("only in this run: conv 1x1 768->768, spatial 256"), "{text}");
    assert!(text.contains("1 of 2 compared cases slower"), "{text}");
    assert!(stderr(&o).contains("1 case slower than"), "{}", stderr(&o));

    // The same check as JSON: the verdict per case, and the exit status still 1.
    let o = quick_bench(&["--only", "conv", "--compare", &file, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let c = &json(&o)["comparison"];
    assert_eq!(c["tolerance_percent"], 10.0);
    assert_eq!(c["slower"], 1);
    let cases = c["cases"].as_array().unwrap();
    let seed = cases.iter().find(|x| x["name"] == SEED).unwrap();
    assert_eq!(seed["slower"], false);
    assert!(seed["speedup"].as_f64().unwrap() > 1.0, "{seed}");
    let conv3 = cases.iter().find(|x| x["name"] == CONV3).unwrap();
    assert_eq!(conv3["slower"], true);
    assert!(conv3["speedup"].as_f64().unwrap() < 1.0, "{conv3}");
    assert_eq!(c["only_in_baseline"], serde_json::json!(["a case this version no longer has"]));
    assert_eq!(c["only_in_run"].as_array().unwrap().len(), 2, "{c}");
}

#[test]
fn compare_passes_when_nothing_got_slower_and_reads_documents_without_a_version() {
    let dir = tempfile::tempdir().unwrap();
    // Written before the version field existed; a device of another name only gives a note.
    let baseline = serde_json::json!({
        "device": "ane",
        "peak_gflops": 100.0,
        "cases": [{"name": SEED, "evaluate_us": 1e6, "gflops": 1.0}],
    });
    let file = write(dir.path(), "old.json", &baseline);
    let o = quick_bench(&["--only", "seed conv", "--compare", &file, "--tolerance", "0%"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("0 of 1 compared cases slower"), "{}", stdout(&o));
    assert!(stderr(&o).contains("measured on device ane"), "{}", stderr(&o));

    // A baseline with no case of this run compares nothing and fails nothing.
    let other = serde_json::json!({"version": 1, "cases": [{"name": "x", "evaluate_us": 1.0}]});
    let file = write(dir.path(), "other.json", &other);
    let o = quick_bench(&["--only", "seed conv", "--compare", &file]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("only in the baseline: x"), "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!("only in this run: {SEED}")), "{}", stdout(&o));
}

#[test]
fn compare_refuses_a_bad_baseline_before_measuring_anything() {
    let dir = tempfile::tempdir().unwrap();
    let case = |us: f64| serde_json::json!({"name": SEED, "evaluate_us": us});
    let bad = [
        ("newer.json", serde_json::json!({"version": 99, "cases": []}), "version 99"),
        ("zero.json", serde_json::json!({"cases": [case(0.0)]}), "not a positive time"),
        ("twice.json", serde_json::json!({"cases": [case(1.0), case(2.0)]}), "appears twice"),
        ("shape.json", serde_json::json!({"runs": []}), "not an `anemone bench --json`"),
    ];
    for (name, doc, message) in bad {
        let file = write(dir.path(), name, &doc);
        let o = quick_bench(&["--only", "seed conv", "--compare", &file]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{name}: {}", stderr(&o));
        assert!(!stderr(&o).contains("measuring"), "{name}: {}", stderr(&o));
    }
    let missing = dir.path().join("missing.json");
    let o = quick_bench(&["--compare", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.json"), "{}", stderr(&o));

    for bad in ["-1", "ten", "2000%"] {
        let o = quick_bench(&["--only", "seed conv", "--tolerance", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
}
