//! Parse and validate time of the largest real program, fixture 08 (Qwen3 attention with
//! dynamic weights, 9 KB, 90 operations). Run with
//! `cargo bench -p anemone-mil --bench parse_validate`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anemone_mil::{lint, text, validate};

const RUNS: usize = 2000;

/// The median of `RUNS` timed calls, robust to the odd preempted run.
fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn main() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/mil-maderix/08_qwen3_sdpa_fwd_dynamic_rope.mil");
    let Ok(src) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: {} not found", path.display());
        return;
    };
    let program = text::parse(&src).expect("fixture 08 parses");
    let ops = program.functions[0].block.operations.len();
    println!(
        "parse_validate: fixture 08 ({} bytes, {ops} operations), median of {RUNS}",
        src.len()
    );
    let report = |what: &str, d: Duration| println!("{what:<24} {:>9.1} us", d.as_secs_f64() * 1e6);
    report("parse", median(|| drop(black_box(text::parse(black_box(&src))))));
    report("validate", median(|| drop(black_box(validate::validate(black_box(&program))))));
    report("lint", median(|| drop(black_box(lint::lint(black_box(&program))))));
    report(
        "parse + validate",
        median(|| {
            let p = text::parse(black_box(&src)).unwrap();
            black_box(validate::validate(&p));
        }),
    );
    report("print", median(|| drop(black_box(text::print(black_box(&program))))));
}
