//! Diagnostics: one error or warning about MIL text or a program, with the span it points
//! at, and its rendering as `file:line:col` with the text underlined (through miette) or as
//! JSON-ready fields.

use std::fmt;

use crate::ir::Span;

/// How serious a [`Diagnostic`] is. Orders `Warning < Error`, so sorting by `Reverse`
/// puts errors first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// A likely problem (typically a Neural Engine lint): the program is still well formed.
    Warning,
    /// The program or its text is invalid: it cannot be compiled or run as written.
    Error,
}

impl Severity {
    /// The lowercase word used when rendering: `"warning"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One finding about a program or its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Whether this is an error or a warning.
    pub severity: Severity,
    /// A stable identifier, e.g. `parse::unexpected-token` or `ane::spatial-multiple-of-16`.
    pub code: &'static str,
    /// What is wrong, in one sentence with the names and numbers involved.
    pub message: String,
    /// Where in the text; `None` for built programs and whole-file problems.
    pub span: Option<Span>,
    /// The short text printed under the underlined span.
    pub label: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with the given code and message, pointing nowhere yet (see [`Diagnostic::at`]).
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: None,
            label: None,
            help: None,
        }
    }

    /// A warning with the given code and message, pointing nowhere yet.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    /// Points the diagnostic at `span` (ignored when the span is [`Span::NONE`]).
    pub fn at(mut self, span: Span) -> Diagnostic {
        if !span.is_none() {
            self.span = Some(span);
        }
        self
    }

    /// Sets the short text shown under the underlined span.
    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Sets the hint saying what to do about it.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Whether the severity is [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Attaches the text the span refers to, for rendering with miette.
    pub fn with_source(&self, file_name: &str, text: &str) -> SourceDiagnostic {
        SourceDiagnostic {
            diagnostic: self.clone(),
            source: miette::NamedSource::new(file_name, text.to_string()),
            location: self.span.map(|s| LineCol::of(text, s.start)),
            file_name: file_name.to_string(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    /// Line number, from 1.
    pub line: usize,
    /// Column, from 1, counted in characters (Unicode scalar values), not bytes.
    pub column: usize,
}

impl LineCol {
    /// The position of byte `offset` in `text` (clamped to the text).
    pub fn of(text: &str, offset: usize) -> LineCol {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        LineCol { line, column }
    }
}

/// A diagnostic together with its source text: renders as `file:line:col` plus the
/// underlined text and the hint.
#[derive(Debug)]
pub struct SourceDiagnostic {
    /// The finding itself.
    pub diagnostic: Diagnostic,
    /// The file name and full text, for miette to excerpt.
    pub source: miette::NamedSource<String>,
    /// Line and column of the span's start; `None` when the diagnostic has no span.
    pub location: Option<LineCol>,
    /// The name shown in `file:line:col`.
    pub file_name: String,
}

impl SourceDiagnostic {
    /// `file:line:col` (or just `file` when there is no span).
    pub fn position(&self) -> String {
        match self.location {
            Some(lc) => format!("{}:{}:{}", self.file_name, lc.line, lc.column),
            None => self.file_name.clone(),
        }
    }
}

impl fmt::Display for SourceDiagnostic {
    /// `file:line:col: severity[code]: message`, the line miette puts above the excerpt.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.diagnostic;
        write!(f, "{}: {}[{}]: {}", self.position(), d.severity.as_str(), d.code, d.message)
    }
}

impl std::error::Error for SourceDiagnostic {}

impl miette::Diagnostic for SourceDiagnostic {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diagnostic.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diagnostic.span.map(|_| &self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = self.diagnostic.span?;
        let label = self.diagnostic.label.clone();
        Some(Box::new(std::iter::once(miette::LabeledSpan::new_with_span(label, span))))
    }
}

/// Renders a diagnostic for a terminal: `file:line:col: severity[code]: message`, then the
/// underlined excerpt and the hint. `color` selects ANSI colours.
pub fn render(diag: &Diagnostic, file_name: &str, text: &str, color: bool) -> String {
    let sd = diag.with_source(file_name, text);
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(160);
    let mut out = String::new();
    if handler.render_report(&mut out, &sd).is_err() {
        out = format!("{sd}\n");
    }
    out
}

/// A list of diagnostics as one error value, so that `?` can carry the findings of
/// [`parse_file`](crate::text::parse_file), [`read_model_dir`](crate::read_model_dir) or
/// [`validate`](crate::validate::validate) into a `Box<dyn Error>`.
///
/// With the text the spans point into (see [`Diagnostics::with_source`]) it displays each
/// diagnostic as `file:line:col: error[code]: message` followed by the source line with the
/// span underlined and the hint, without colours; without it, as `error[code]: message`
/// plus the hint.
///
/// ```
/// use anemone_mil::text;
///
/// let src = "program(1.3)\n{\n  bogus\n}\n";
/// let err = text::parse_source("model.mil", src).unwrap_err();
/// assert!(err.to_string().starts_with("model.mil:3:3: error[parse::"));
/// assert!(err.to_string().contains("bogus"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Diagnostics {
    diagnostics: Vec<Diagnostic>,
    /// The file name and text the spans point into.
    source: Option<(String, String)>,
}

impl Diagnostics {
    /// Diagnostics whose spans are not tied to any text.
    pub fn new(diagnostics: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics { diagnostics, source: None }
    }

    /// Attaches the text the spans point into and the name to show for it, so that the
    /// diagnostics display as `file:line:col` with the source line.
    pub fn with_source(mut self, file_name: impl Into<String>, text: impl Into<String>) -> Self {
        self.source = Some((file_name.into(), text.into()));
        self
    }

    /// `Ok` with the warnings when no diagnostic is an error, else `Err(self)`: turns what
    /// [`validate`](crate::validate::validate) or [`check`](crate::check) return into a
    /// `Result`.
    pub fn into_result(self) -> Result<Vec<Diagnostic>, Diagnostics> {
        if self.has_errors() { Err(self) } else { Ok(self.diagnostics) }
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The errors, in order.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// The file name and text given to [`Diagnostics::with_source`].
    pub fn source(&self) -> Option<(&str, &str)> {
        self.source.as_ref().map(|(f, t)| (f.as_str(), t.as_str()))
    }

    /// The diagnostics, without their source.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.diagnostics
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(diagnostics: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics::new(diagnostics)
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Diagnostics {
        Diagnostics::new(vec![diagnostic])
    }
}

impl std::ops::Deref for Diagnostics {
    type Target = [Diagnostic];

    fn deref(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.diagnostics.is_empty() {
            return f.write_str("no diagnostics");
        }
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                // A blank line between excerpts keeps each one readable.
                f.write_str(if self.source.is_some() { "\n\n" } else { "\n" })?;
            }
            match &self.source {
                Some((file, text)) => f.write_str(&render_plain(d, file, text))?,
                None => write_plain(f, d)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// `severity[code]: message`, then the label and the hint on indented lines: a diagnostic
/// without text to point into.
pub fn write_plain(f: &mut impl fmt::Write, d: &Diagnostic) -> fmt::Result {
    write!(f, "{}[{}]: {}", d.severity.as_str(), d.code, d.message)?;
    if let Some(label) = &d.label {
        write!(f, "\n  = note: {label}")?;
    }
    if let Some(help) = &d.help {
        write!(f, "\n  = help: {help}")?;
    }
    Ok(())
}

/// Renders `diag` against `text` as `file:line:col: severity[code]: message`, then the
/// source line with the span underlined, then the hint: plain text without colours, for
/// error values that end up in logs as often as on terminals.
///
/// ```text
/// model.mil:3:3: error[parse::unexpected-token]: expected `func`
///   3 |   bogus
///     |   ^^^^^ this is not a function
///   = help: a program body holds `func` blocks
/// ```
pub fn render_plain(diag: &Diagnostic, file_name: &str, text: &str) -> String {
    use fmt::Write as _;
    let sd = diag.with_source(file_name, text);
    let mut out = sd.to_string();
    if let (Some(span), Some(lc)) = (diag.span, sd.location) {
        let start = floor_char_boundary(text, span.start);
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[line_start..line_end].trim_end_matches('\r');
        // The underline stays on the first line of the span; `max` keeps a span that starts
        // on a trailing `\r` from making the range empty.
        let line_end = (line_start + line.len()).max(start);
        let end = floor_char_boundary(text, span.end).clamp(start, line_end);
        let number = lc.line.to_string();
        let pad = " ".repeat(number.len());
        // Tabs stay tabs so that the carets line up under them in any tab width.
        let indent: String =
            text[line_start..start].chars().map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        let carets = "^".repeat(text[start..end].chars().count().max(1));
        let _ = write!(out, "\n  {number} | {line}\n  {pad} | {indent}{carets}");
        if let Some(label) = &diag.label {
            let _ = write!(out, " {label}");
        }
    } else if let Some(label) = &diag.label {
        let _ = write!(out, "\n  = note: {label}");
    }
    if let Some(help) = &diag.help {
        let _ = write!(out, "\n  = help: {help}");
    }
    out
}

/// The largest char boundary of `text` at or below `offset` (clamped to the text).
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(LineCol::of(text, 0), LineCol { line: 1, column: 1 });
        assert_eq!(LineCol::of(text, 3), LineCol { line: 2, column: 1 });
        assert_eq!(LineCol::of(text, 7), LineCol { line: 2, column: 4 });
        assert_eq!(LineCol::of(text, 999), LineCol { line: 3, column: 2 });
    }

    #[test]
    fn diagnostics_display_with_and_without_their_source() {
        let text = "a\r\n\tbad thing\n";
        let d = Diagnostic::error("x::y", "no good").at(Span::new(4, 7)).with_label("here");
        let w = Diagnostic::warning("x::w", "careful").at(Span::new(1, 9)).with_help("look");
        let plain = Diagnostics::new(vec![d.clone(), w.clone()]);
        assert_eq!(
            plain.to_string(),
            "error[x::y]: no good\n  = note: here\nwarning[x::w]: careful\n  = help: look"
        );
        let shown = plain.clone().with_source("f.mil", text).to_string();
        assert_eq!(
            shown,
            "f.mil:2:2: error[x::y]: no good\n  2 | \tbad thing\n    | \t^^^ here\n\n\
             f.mil:1:2: warning[x::w]: careful\n  1 | a\n    |  ^\n  = help: look"
        );
        assert_eq!(plain.clone().into_result().unwrap_err(), plain);
        assert_eq!(Diagnostics::new(vec![w.clone()]).into_result().unwrap(), vec![w]);
        // Spans past the end of the text still render.
        let far = Diagnostic::error("x::z", "eof").at(Span::new(90, 99));
        assert!(render_plain(&far, "f.mil", text).starts_with("f.mil:3:1: error[x::z]: eof"));
    }

    #[test]
    fn render_names_file_line_and_column_and_underlines() {
        let text = "program(1.3)\n{ bogus }\n";
        let d = Diagnostic::error("parse::unexpected-token", "expected `func`")
            .at(Span::new(15, 20))
            .with_label("this is not a function")
            .with_help("a program body holds `func` blocks");
        let out = render(&d, "m.mil", text, false);
        assert!(
            out.contains("m.mil:2:3: error[parse::unexpected-token]: expected `func`"),
            "{out}"
        );
        assert!(out.contains("bogus"), "{out}");
        assert!(out.contains("this is not a function"), "{out}");
        assert!(out.contains("a program body holds `func` blocks"), "{out}");
    }
}
