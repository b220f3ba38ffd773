//! `anemone ops`: the op reference. Lists every op the registry knows, describes one (inputs,
//! attributes, defaults, result shape, ANE notes, lints), or prints the whole reference as
//! Markdown, which is what docs/ops.md holds.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anemone_mil::ops::{InputSpec, OpKind, Ranks, docs};
use anemone_mil::validate::nearest_op;

use crate::EXIT_USAGE;

/// The command that writes docs/ops.md, quoted in the file and by the test that checks it.
pub const REGENERATE: &str = "cargo run -p anemone-cli -- ops --markdown > docs/ops.md";

#[derive(clap::Args)]
pub struct OpsArgs {
    /// The op to describe (e.g. conv); without it, every op is listed, one per line.
    pub name: Option<String>,
    /// Print the whole reference as Markdown (the content of docs/ops.md).
    #[arg(long, conflicts_with = "name")]
    pub markdown: bool,
}

pub fn run(args: &OpsArgs) -> ExitCode {
    let out = if args.markdown {
        markdown()
    } else if let Some(name) = &args.name {
        match OpKind::from_name(name) {
            Some(kind) => describe(kind),
            None => {
                eprintln!("error: unknown op `{name}`");
                match nearest_op(&name.to_ascii_lowercase()) {
                    Some(k) => {
                        eprintln!("  help: did you mean `{k}`? (`anemone ops` lists them all)")
                    }
                    None => eprintln!("  help: `anemone ops` lists every op"),
                }
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else {
        list()
    };
    // A closed pipe (`anemone ops | head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

/// One line per op: name, category, summary.
fn list() -> String {
    let name_width = OpKind::ALL.iter().map(|k| k.name().len()).max().unwrap_or(0);
    let cat_width = OpKind::ALL.iter().map(|k| docs::category(*k).len()).max().unwrap_or(0);
    let mut out = String::new();
    for kind in OpKind::ALL {
        let _ = writeln!(
            out,
            "{:name_width$}  {:cat_width$}  {}",
            kind.name(),
            docs::category(kind),
            docs::summary(kind)
        );
    }
    out
}

fn rank_text(ranks: Ranks) -> String {
    if ranks == Ranks::ANY { "any rank".to_string() } else { ranks.describe() }
}

/// How an input is passed: required or optional, constant, tuple, attribute form.
fn input_kind(spec: &InputSpec) -> String {
    let mut parts = vec![if spec.required { "required" } else { "optional" }];
    if spec.constant {
        parts.push("constant");
    }
    if spec.arity == anemone_mil::ops::Arity::Tuple {
        parts.push("tuple");
    }
    if spec.or_attribute {
        parts.push("or attribute");
    }
    parts.join(", ")
}

/// Greedy word wrap of `text` to `width` columns, each line after the first indented.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in text.split_whitespace() {
        if line_len > 0 && line_len + 1 + word.len() > width {
            out.push('\n');
            out.push_str(indent);
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}

/// Everything about one op, for the terminal.
fn describe(kind: OpKind) -> String {
    let sig = kind.signature();
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", kind.name(), docs::category(kind));
    let _ = writeln!(out, "  {}", wrap(docs::summary(kind), 88, "  "));

    out.push_str("\ninputs:\n");
    if sig.inputs.is_empty() {
        out.push_str("  none\n");
    }
    let rows: Vec<[String; 5]> = sig
        .inputs
        .iter()
        .map(|s| {
            [
                s.name.to_string(),
                input_kind(s),
                s.dtypes.describe(),
                rank_text(s.ranks),
                docs::input_default(kind, s).map(|d| format!("default: {d}")).unwrap_or_default(),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    for row in &rows {
        let line =
            format!("  {:w0$}  {:w1$}  {:w2$}  {:w3$}  {}", row[0], row[1], row[2], row[3], row[4]);
        let _ = writeln!(out, "{}", line.trim_end());
    }

    out.push_str("\nattributes:\n");
    let aw = sig.attributes.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for a in sig.attributes {
        let need = if a.required { "required" } else { "optional" };
        let _ = writeln!(out, "  {:aw$}  {need}  {}", a.name, a.dtypes.describe());
    }

    let _ = writeln!(out, "\nresult shape:\n  {}", wrap(docs::shape_rule(kind), 88, "  "));

    out.push_str("\nANE notes:\n");
    let notes = docs::ane_notes(kind);
    if notes.is_empty() {
        out.push_str("  none reported\n");
    }
    for n in notes {
        let _ = writeln!(out, "  - {}", wrap(&n, 86, "    "));
    }

    out.push_str("\nlints:\n");
    let lints = docs::lints(kind);
    if lints.is_empty() {
        out.push_str("  none beyond those on a function's inputs and outputs\n");
    }
    for l in lints {
        let _ = writeln!(out, "  {}\n      {}", l.code, wrap(&l.when, 84, "      "));
    }
    out
}

/// Prose for Markdown: `*` escaped outside code spans, so that shapes such as
/// `[N, C, *spatial]` do not turn into emphasis.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '`' => in_code = !in_code,
            '*' if !in_code => out.push('\\'),
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A Markdown table cell: prose escaped, pipes too, empty shown as a dash.
fn cell(text: &str) -> String {
    if text.is_empty() { "-".to_string() } else { md(text).replace('|', "\\|") }
}

/// The whole reference as Markdown (docs/ops.md).
fn markdown() -> String {
    let mut out = String::new();
    out.push_str("# Op reference\n\n");
    let _ = writeln!(out, "<!-- Generated by `{REGENERATE}`; do not edit by hand. -->\n");
    let _ = writeln!(
        out,
        "Every MIL op anemone knows ({} of them), from its op registry \
         (`crates/mil/src/ops`): the inputs each op takes, their element types, ranks and \
         defaults, the shape of the result, what is known about the op on the Apple Neural \
         Engine and the `anemone check` lints that look at it. `anemone ops` lists the ops, \
         `anemone ops NAME` prints one of them in the terminal.\n",
        OpKind::ALL.len()
    );
    out.push_str(
        "A constant input must be known at compile time (a `const` op or an inline literal); \
         a tuple input takes several values, `values = (a, b)`. Every op takes an optional \
         `name` attribute.\n\n",
    );
    out.push_str("| op | category | what it computes |\n|---|---|---|\n");
    for kind in OpKind::ALL {
        let _ = writeln!(
            out,
            "| [`{0}`](#{0}) | {1} | {2} |",
            kind.name(),
            docs::category(kind),
            cell(docs::summary(kind))
        );
    }

    for kind in OpKind::ALL {
        let sig = kind.signature();
        let _ = writeln!(out, "\n## {}\n", kind.name());
        let _ = writeln!(out, "*{}*: {}.\n", docs::category(kind), md(docs::summary(kind)));
        if sig.inputs.is_empty() {
            out.push_str("No inputs.\n\n");
        } else {
            out.push_str(
                "| input | required | constant | element types | rank | tuple | default |\n\
                 |---|---|---|---|---|---|---|\n",
            );
            let yes = |b: bool| if b { "yes" } else { "no" };
            for s in sig.inputs {
                let name = if s.or_attribute {
                    format!("`{}` (or attribute)", s.name)
                } else {
                    format!("`{}`", s.name)
                };
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {} | {} | {} |",
                    yes(s.required),
                    yes(s.constant),
                    cell(&s.dtypes.describe()),
                    cell(&rank_text(s.ranks)),
                    yes(s.arity == anemone_mil::ops::Arity::Tuple),
                    cell(&docs::input_default(kind, s).unwrap_or_default())
                );
            }
            out.push('\n');
        }
        let attrs: Vec<String> = sig
            .attributes
            .iter()
            .map(|a| {
                let need = if a.required { "required" } else { "optional" };
                format!("`{}` ({need}, {})", a.name, a.dtypes.describe())
            })
            .collect();
        let _ = writeln!(out, "Attributes: {}.\n", attrs.join(", "));
        let _ = writeln!(out, "Result shape: {}.\n", md(docs::shape_rule(kind)));
        let notes = docs::ane_notes(kind);
        if notes.is_empty() {
            out.push_str("ANE notes: none reported.\n");
        } else {
            out.push_str("ANE notes:\n\n");
            for n in notes {
                let _ = writeln!(out, "- {}", md(&n));
            }
        }
        let lints = docs::lints(kind);
        if lints.is_empty() {
            out.push_str("\nLints: none beyond those on a function's inputs and outputs.\n");
        } else {
            out.push_str("\nLints:\n\n");
            for l in lints {
                let _ = writeln!(out, "- `{}` {}", l.code, md(&l.when));
            }
        }
    }
    out
}
