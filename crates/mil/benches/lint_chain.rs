//! Time of parse, validate and lint on a long program: a chain of 40,000 `add`s, each reading
//! the previous result. Every stage should grow linearly with the number of operations; a
//! lookup by name that scans the whole function turns this chain into billions of string
//! comparisons. Run with `cargo bench -p anemone-mil --bench lint_chain`.

use std::fmt::Write;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anemone_mil::{lint, text, validate};

const OPS: usize = 40_000;
const RUNS: usize = 5;

/// The MIL text of `main(x) = x + x + ... + x`, `ops` additions long.
fn chain(ops: usize) -> String {
    let ty = "tensor<fp16, [1, 4, 1, 16]>";
    let mut src = format!("program(1.3)\n{{\n    func main<ios18>({ty} x) {{\n");
    let mut prev = "x".to_string();
    for i in 0..ops {
        let _ =
            writeln!(src, "        {ty} a{i} = add(x = {prev}, y = x)[name = string(\"a{i}\")];");
        prev = format!("a{i}");
    }
    let _ = write!(src, "    }} -> ({prev});\n}}\n");
    src
}

/// The median of `RUNS` timed calls.
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
    let src = chain(OPS);
    let program = text::parse(&src).expect("the chain parses");
    assert!(validate::validate(&program).is_empty(), "the chain is valid");
    println!("lint_chain: {OPS} chained adds ({} bytes), median of {RUNS}", src.len());
    let report = |what: &str, d: Duration| println!("{what:<28} {:>9.1} ms", d.as_secs_f64() * 1e3);
    report("parse", median(|| drop(black_box(text::parse(black_box(&src))))));
    report("validate", median(|| drop(black_box(validate::validate(black_box(&program))))));
    report("lint", median(|| drop(black_box(lint::lint(black_box(&program))))));
    report(
        "parse + validate + lint",
        median(|| {
            let p = text::parse(black_box(&src)).unwrap();
            black_box(validate::validate(&p));
            black_box(lint::lint(&p));
        }),
    );
}
