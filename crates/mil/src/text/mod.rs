//! MIL text: reading it into the IR and writing the IR back out.
//!
//! - [`parse`] takes the text the Neural Engine compiler takes (REFERENCE.md §4), including
//!   older coremlc forms such as `program(1.0)` and `tensor<string, []>("x")`, and returns a
//!   [`Program`] with byte spans on its nodes, or the first error as a [`Diagnostic`].
//! - [`print()`] writes a program in the compiler's canonical style.
//!
//! Literals keep every bit: each element is stored in its dtype's representation, and
//! floats print as the shortest text that parses back to the same bits, so
//! `parse(&print(&p)) == p` for every program `parse` returns.
//!
//! Literal syntax beyond what real programs use: `inf`, `-inf`, `nan`, `-nan`, and
//! `nan(0x7e01)` naming a NaN's full bit pattern; strings take `\"`, `\\`, `\n`, `\t`, `\r`,
//! `\0`, `\'` and `\u{...}`; fp8 values are written as numbers and stored as their bytes.

mod decimal;
mod float;
mod lexer;
mod parser;
mod printer;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::{Literal, Program};

/// Parses MIL text into a program.
///
/// Never panics, whatever the input: malformed text gives a [`Diagnostic`] with a code such
/// as `parse::unexpected-token`, a span on the offending text, a label and a hint.
pub fn parse(src: &str) -> Result<Program, Diagnostic> {
    parser::parse_program(src)
}

/// Parses MIL text read from `file_name`: like [`parse`], but the error keeps the text, so
/// that it displays as `file:line:col: error[code]: message` with the source line underlined.
///
/// ```
/// use anemone_mil::{DType, Type, text};
///
/// let src = r#"program(1.3)
/// {
///     func main<ios18>(tensor<fp16, [1, 64]> x) {
///         tensor<fp16, [1, 64]> y = relu(x = x)[name = string("relu")];
///     } -> (y);
/// }
/// "#;
/// let program = text::parse_source("model.mil", src)?;
/// let main = program.main_function().unwrap();
/// assert_eq!(main.block.operations[0].op.name, "relu");
/// assert_eq!(main.value_type("y"), Some(&Type::tensor(DType::Fp16, [1, 64])));
///
/// // A mistake is reported at its place in the file.
/// let err = text::parse_source("model.mil", &src.replace("-> (y);", "-> (y)")).unwrap_err();
/// assert!(err.to_string().starts_with("model.mil:5:12: error[parse::missing-semicolon]"));
/// # Ok::<(), anemone_mil::Diagnostics>(())
/// ```
pub fn parse_source(file_name: &str, src: &str) -> Result<Program, Diagnostics> {
    parse(src).map_err(|d| Diagnostics::from(d).with_source(file_name, src))
}

/// Reads and parses a MIL file; errors display as `file:line:col` with the source line.
///
/// ```
/// use anemone_mil::text;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model.mil");
/// std::fs::write(
///     &path,
///     "program(1.3)\n{\n    func main<ios18>(tensor<fp32, [4]> x) {\n        \
///      tensor<fp32, [4]> y = exp(x = x)[name = string(\"e\")];\n    } -> (y);\n}\n",
/// )?;
/// let program = text::parse_file(&path)?;
/// assert_eq!(program.functions[0].name.name, "main");
///
/// // A missing file is an error value, like bad text.
/// let err = text::parse_file(dir.path().join("absent.mil")).unwrap_err();
/// assert_eq!(err[0].code, "package::io");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_file(path: impl AsRef<Path>) -> Result<Program, Diagnostics> {
    let path = path.as_ref();
    let src = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::error("package::io", format!("cannot read {}: {e}", path.display()))
    })?;
    parse_source(&path.display().to_string(), &src)
}

/// Prints a program as MIL text in the form the ANE compiler takes.
///
/// Names are written as they are: a name that is not an identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`), which only a built program can hold, makes text that does
/// not parse back. Magnitudes below 1e-7 or from 1e16 up print in scientific notation
/// (`6e-8`).
pub fn print(program: &Program) -> String {
    printer::print_program(program)
}

/// Prints one literal as it appears in MIL text, e.g. `tensor<int32, [2]>([1, 1])`.
pub fn print_literal(literal: &Literal) -> String {
    let mut out = String::new();
    printer::write_literal(&mut out, literal);
    out
}
