//! Diagnostics: one error or warning about MIL text or a program, with the span it points
//! at, and its rendering as `file:line:col` with the text underlined (through miette) or as
//! JSON-ready fields.

use std::fmt;

use crate::ir::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
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
    pub severity: Severity,
    /// A stable identifier, e.g. `parse::unexpected-token` or `ane::spatial-multiple-of-16`.
    pub code: &'static str,
    pub message: String,
    /// Where in the text; `None` for built programs and whole-file problems.
    pub span: Option<Span>,
    /// The short text printed under the underlined span.
    pub label: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
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

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

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
    pub line: usize,
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
    pub diagnostic: Diagnostic,
    pub source: miette::NamedSource<String>,
    pub location: Option<LineCol>,
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
