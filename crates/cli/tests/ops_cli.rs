//! `anemone ops` as a user runs it: the list, one op's description, the hint for a misspelt
//! name, and docs/ops.md kept equal to what the command generates.

use std::path::PathBuf;
use std::process::{Command, Output};

use anemone_mil::ops::OpKind;

fn anemone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anemone")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn lists_every_op_on_one_line() {
    let o = anemone(&["ops"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), OpKind::ALL.len(), "{out}");
    for (line, kind) in lines.iter().zip(OpKind::ALL) {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some(kind.name()), "{line}");
    }
    let conv = lines.iter().find(|l| l.starts_with("conv ")).unwrap();
    assert!(conv.contains("linear algebra") && conv.contains("cross-correlation"), "{conv}");
}

#[test]
fn describes_conv_inputs_defaults_ane_notes_and_lints() {
    let o = anemone(&["ops", "conv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in\n{out}"))
            .to_string()
    };
    let x = line("x");
    assert!(x.contains("required") && x.contains("fp16 or fp32"), "{x}");
    assert!(x.contains("a tensor of rank 3 to 5"), "{x}");
    let groups = line("groups");
    assert!(groups.contains("optional, constant") && groups.ends_with("default: 1"), "{groups}");
    assert!(line("pad_type").ends_with("default: \"valid\""));
    assert!(line("strides").ends_with("default: 1 in every spatial dim"));
    assert!(line("dilations").ends_with("default: 1 in every spatial dim"));
    assert!(line("bias").ends_with("default: zeros"));
    assert!(out.contains("result shape:") && out.contains("ceil(size / stride)"), "{out}");
    assert!(out.contains("ANE notes:") && out.contains("baked in at compile"), "{out}");
    assert!(out.contains("ane::fp32-arithmetic"), "{out}");
}

#[test]
fn shows_compiler_reports_and_per_op_defaults() {
    let out = stdout(&anemone(&["ops", "gelu"]));
    assert!(out.contains("reported rejected") && out.contains("ane::op-reported-rejected"));
    assert!(out.contains("default: \"EXACT\""), "{out}");
    // log and rsqrt share a signature but not an epsilon.
    assert!(stdout(&anemone(&["ops", "log"])).contains("default: 1e-45"));
    assert!(stdout(&anemone(&["ops", "rsqrt"])).contains("default: 1e-12"));
    let sdpa = stdout(&anemone(&["ops", "scaled_dot_product_attention"]));
    assert!(sdpa.contains("ane::sdpa-attn-mask-ignored"), "{sdpa}");
    assert!(sdpa.contains("ane::mask-below-fp16-min"), "{sdpa}");
}

#[test]
fn a_misspelt_name_suggests_the_nearest_op() {
    let o = anemone(&["ops", "convv"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("unknown op `convv`") && err.contains("did you mean `conv`?"), "{err}");
    assert!(stdout(&o).is_empty());
    let err = stderr(&anemone(&["ops", "Softmax"]));
    assert!(err.contains("did you mean `softmax`?"), "{err}");
    let o = anemone(&["ops", "nothing_like_any_op"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`anemone ops` lists every op"), "{}", stderr(&o));
}

#[test]
fn docs_ops_md_is_up_to_date() {
    let o = anemone(&["ops", "--markdown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let generated = stdout(&o);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/ops.md");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/ops.md is out of date with the op registry; regenerate it from the repository \
         root with\n    cargo run -p anemone-cli -- ops --markdown > docs/ops.md"
    );
    for kind in OpKind::ALL {
        assert!(generated.contains(&format!("\n## {}\n", kind.name())), "{kind}");
    }
    assert!(generated.contains("| `groups` | no | yes | an integer type | a scalar | no | 1 |"));
}
