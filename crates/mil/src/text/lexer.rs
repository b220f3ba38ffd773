//! The lexer: MIL text to tokens, each a kind and a byte span, produced on demand; token
//! text is read back from the source, so lexing allocates nothing per token.
//!
//! At the first malformed token it keeps the diagnostic and yields [`Tok::Error`] from then
//! on, so the parser reports whichever problem comes first in the text.

use crate::diag::Diagnostic;
use crate::ir::Span;

/// What a number literal looks like; the parser decides what it means for the dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NumKind {
    /// `42`
    DecInt,
    /// `1.5`, `.5`, `1e-4`
    DecFloat,
    /// `0x1F`
    HexInt,
    /// `0x1.8p+1`
    HexFloat,
}

impl NumKind {
    pub fn is_integer(self) -> bool {
        matches!(self, NumKind::DecInt | NumKind::HexInt)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tok {
    Ident,
    /// Unsigned; a leading `-` is a separate token.
    Number(NumKind),
    /// A double-quoted string; `escaped` when it holds backslash escapes.
    Str {
        escaped: bool,
    },
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Less,
    Greater,
    Comma,
    Equals,
    Semicolon,
    Minus,
    Plus,
    Arrow,
    Eof,
    /// The text could not be tokenized here; [`Lexer::error`] says why.
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Tok,
    pub span: Span,
}

pub(super) struct Lexer<'s> {
    src: &'s str,
    bytes: &'s [u8],
    pos: usize,
    /// The final token (`Eof` or `Error`) once reached; it repeats from then on.
    end: Option<Token>,
    error: Option<Diagnostic>,
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Lexer<'s> {
        // Some editors start UTF-8 files with a byte order mark; it is not text.
        let pos = if src.starts_with('\u{feff}') { 3 } else { 0 };
        Lexer { src, bytes: src.as_bytes(), pos, end: None, error: None }
    }

    /// The next token; after the end of input or an error, that same token again.
    pub fn next_token(&mut self) -> Token {
        if let Some(end) = self.end {
            return end;
        }
        match self.lex() {
            Ok(token) => {
                if token.kind == Tok::Eof {
                    self.end = Some(token);
                }
                token
            }
            Err(diag) => {
                let at = diag.span.map_or(self.pos, |s| s.start);
                let token = Token { kind: Tok::Error, span: Span::new(at, at) };
                self.error = Some(diag);
                self.end = Some(token);
                token
            }
        }
    }

    /// Why the lexer stopped, once it yields [`Tok::Error`].
    pub fn error(&self) -> Option<&Diagnostic> {
        self.error.as_ref()
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn eat_while(&mut self, pred: impl Fn(u8) -> bool) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn skip_trivia(&mut self) {
        loop {
            self.eat_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
            if self.peek() == Some(b'/') && self.peek_at(1) == Some(b'/') {
                self.eat_while(|b| b != b'\n');
            } else {
                return;
            }
        }
    }

    fn lex(&mut self) -> Result<Token, Diagnostic> {
        self.skip_trivia();
        let start = self.pos;
        let Some(b) = self.peek() else {
            return Ok(Token { kind: Tok::Eof, span: Span::new(start, start) });
        };
        let kind = match b {
            b'(' => self.single(Tok::LParen),
            b')' => self.single(Tok::RParen),
            b'[' => self.single(Tok::LBracket),
            b']' => self.single(Tok::RBracket),
            b'{' => self.single(Tok::LBrace),
            b'}' => self.single(Tok::RBrace),
            b'<' => self.single(Tok::Less),
            b'>' => self.single(Tok::Greater),
            b',' => self.single(Tok::Comma),
            b'=' => self.single(Tok::Equals),
            b';' => self.single(Tok::Semicolon),
            b'+' => self.single(Tok::Plus),
            b'-' if self.peek_at(1) == Some(b'>') => {
                self.pos += 2;
                Tok::Arrow
            }
            b'-' => self.single(Tok::Minus),
            b'"' => self.string()?,
            b'0'..=b'9' => self.number()?,
            b'.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => self.number()?,
            _ if is_ident_start(b) => {
                self.eat_while(is_ident_continue);
                Tok::Ident
            }
            _ => return Err(self.unexpected_character()),
        };
        Ok(Token { kind, span: Span::new(start, self.pos) })
    }

    fn single(&mut self, kind: Tok) -> Tok {
        self.pos += 1;
        kind
    }

    fn unexpected_character(&self) -> Diagnostic {
        let c = self.src.get(self.pos..).and_then(|s| s.chars().next()).unwrap_or('\u{fffd}');
        let span = Span::new(self.pos, self.pos + c.len_utf8());
        let shown =
            if c.is_control() || c.is_whitespace() { format!("{:?}", c) } else { format!("`{c}`") };
        let help = match c {
            '/' => "comments start with `//`",
            '\'' => "strings are written in double quotes",
            _ => "MIL text uses names, numbers, double-quoted strings and ( ) [ ] { } < > , = ; ->",
        };
        Diagnostic::error("parse::unexpected-character", format!("unexpected character {shown}"))
            .at(span)
            .with_label("not part of MIL syntax")
            .with_help(help)
    }

    /// A number: decimal `12`, `1.5`, `.5`, `1e-4`, or hexadecimal `0x1F`, `0x1.8p+1`.
    fn number(&mut self) -> Result<Tok, Diagnostic> {
        let start = self.pos;
        let kind = if self.peek() == Some(b'0') && matches!(self.peek_at(1), Some(b'x' | b'X')) {
            self.pos += 2;
            self.hex_number(start)?
        } else {
            self.decimal_number(start)?
        };
        // `12abc` or `1.2.3`: one malformed number, not a number and a name.
        if self.peek().is_some_and(|b| is_ident_continue(b) || b == b'.') {
            let bad = self.pos;
            self.eat_while(|b| is_ident_continue(b) || b == b'.');
            let found = self.src.get(bad..self.pos).unwrap_or("");
            return Err(bad_number(
                Span::new(start, self.pos),
                format!("unexpected `{found}` in a number"),
                "numbers are decimal (`12`, `-0.5`, `1e-4`) or C99 hexadecimal (`0x1p-3`)",
            ));
        }
        Ok(Tok::Number(kind))
    }

    fn decimal_number(&mut self, start: usize) -> Result<NumKind, Diagnostic> {
        let mut kind = NumKind::DecInt;
        self.eat_while(|b| b.is_ascii_digit());
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.eat_while(|b| b.is_ascii_digit());
            kind = NumKind::DecFloat;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            self.exponent(start, "1e-4")?;
            kind = NumKind::DecFloat;
        }
        Ok(kind)
    }

    fn hex_number(&mut self, start: usize) -> Result<NumKind, Diagnostic> {
        let mut digits = self.eat_while(|b| b.is_ascii_hexdigit());
        let dot = self.peek() == Some(b'.');
        if dot {
            self.pos += 1;
            digits += self.eat_while(|b| b.is_ascii_hexdigit());
        }
        if digits == 0 {
            return Err(bad_number(
                Span::new(start, self.pos),
                "a hexadecimal number needs digits after `0x`",
                "write e.g. `0x1F` or `0x1.8p+1`",
            ));
        }
        if matches!(self.peek(), Some(b'p' | b'P')) {
            self.pos += 1;
            self.exponent(start, "0x1p-3")?;
            return Ok(NumKind::HexFloat);
        }
        if dot {
            return Err(bad_number(
                Span::new(start, self.pos),
                "a hexadecimal float needs a binary exponent",
                "C99 hexadecimal floats end in `p` and a power of two, e.g. `0x1.8p+1`",
            ));
        }
        Ok(NumKind::HexInt)
    }

    fn exponent(&mut self, start: usize, example: &str) -> Result<(), Diagnostic> {
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        if self.eat_while(|b| b.is_ascii_digit()) == 0 {
            return Err(bad_number(
                Span::new(start, self.pos),
                "the exponent of this number has no digits",
                format!("write the exponent in decimal digits, e.g. `{example}`"),
            ));
        }
        Ok(())
    }

    /// A double-quoted string on one line; escapes are checked here and decoded later by
    /// [`string_value`].
    fn string(&mut self) -> Result<Tok, Diagnostic> {
        let start = self.pos;
        self.pos += 1;
        let mut escaped = false;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Tok::Str { escaped });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(b'\n') | None => return Err(self.unterminated_string(start)),
                Some(_) => self.pos += 1,
            }
        }
    }

    fn unterminated_string(&self, start: usize) -> Diagnostic {
        Diagnostic::error("parse::unterminated-string", "unterminated string")
            .at(Span::new(start, self.pos))
            .with_label("this string has no closing `\"`")
            .with_help("close the string with `\"` on the same line; write a newline as `\\n`")
    }

    fn escape(&mut self) -> Result<(), Diagnostic> {
        let start = self.pos;
        self.pos += 1; // the backslash
        match self.peek() {
            Some(b'"' | b'\\' | b'n' | b't' | b'r' | b'0' | b'\'') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                self.unicode_escape(start)
            }
            _ => {
                let c = self.src.get(self.pos..).and_then(|s| s.chars().next());
                self.pos += c.map_or(0, char::len_utf8);
                Err(bad_escape(Span::new(start, self.pos)))
            }
        }
    }

    /// `\u{1F600}`: one to six hex digits naming a Unicode scalar value.
    fn unicode_escape(&mut self, start: usize) -> Result<(), Diagnostic> {
        if self.peek() != Some(b'{') {
            return Err(bad_escape(Span::new(start, self.pos)));
        }
        self.pos += 1;
        let digits_start = self.pos;
        let count = self.eat_while(|b| b.is_ascii_hexdigit());
        let digits = self.src.get(digits_start..self.pos).unwrap_or("");
        let valid = (1..=6).contains(&count)
            && self.peek() == Some(b'}')
            && u32::from_str_radix(digits, 16).ok().and_then(char::from_u32).is_some();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        }
        if valid { Ok(()) } else { Err(bad_escape(Span::new(start, self.pos))) }
    }
}

fn bad_number(span: Span, message: impl Into<String>, help: impl Into<String>) -> Diagnostic {
    Diagnostic::error("parse::bad-number", message)
        .at(span)
        .with_label("malformed number")
        .with_help(help)
}

fn bad_escape(span: Span) -> Diagnostic {
    Diagnostic::error("parse::bad-escape", "unknown escape sequence in a string")
        .at(span)
        .with_label("not a valid escape")
        .with_help("strings take \\\" \\\\ \\n \\t \\r \\0 \\' and \\u{...} with 1 to 6 hex digits")
}

/// The value of a string token (quotes removed, escapes decoded). The lexer already checked
/// every escape, so decoding cannot fail; anything odd decodes to U+FFFD, never a panic.
pub(super) fn string_value(src: &str, token: Token) -> String {
    let raw = src.get(token.span.start + 1..token.span.end.saturating_sub(1)).unwrap_or("");
    if token.kind != (Tok::Str { escaped: true }) {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('0') => '\0',
            Some('u') => {
                let rest = chars.as_str();
                let close = rest.find('}').unwrap_or(rest.len());
                let code = rest.get(1..close).and_then(|h| u32::from_str_radix(h, 16).ok());
                chars = rest.get(close + 1..).unwrap_or("").chars();
                code.and_then(char::from_u32).unwrap_or('\u{fffd}')
            }
            Some(other) => other,
            None => '\u{fffd}',
        };
        out.push(decoded);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token up to and including the final one, and the error if any.
    fn tokenize(src: &str) -> (Vec<Token>, Option<Diagnostic>) {
        let mut lexer = Lexer::new(src);
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next_token();
            tokens.push(token);
            if matches!(token.kind, Tok::Eof | Tok::Error) {
                return (tokens, lexer.error().cloned());
            }
        }
    }

    fn kinds(src: &str) -> Vec<Tok> {
        let (tokens, err) = tokenize(src);
        assert!(err.is_none(), "{err:?}");
        tokens.iter().map(|t| t.kind).collect()
    }

    fn error_code(src: &str) -> &'static str {
        tokenize(src).1.expect("an error").code
    }

    #[test]
    fn punctuation_names_and_arrow() {
        use Tok::*;
        assert_eq!(
            kinds("func main<ios18>() {} -> (y); // done\n"),
            vec![
                Ident, Ident, Less, Ident, Greater, LParen, RParen, LBrace, RBrace, Arrow, LParen,
                Ident, RParen, Semicolon, Eof
            ]
        );
        assert_eq!(kinds("-5 - >"), vec![Minus, Number(NumKind::DecInt), Minus, Greater, Eof]);
    }

    #[test]
    fn numbers() {
        use NumKind::*;
        for (text, kind) in [
            ("42", DecInt),
            ("1.3", DecFloat),
            (".5", DecFloat),
            ("5.", DecFloat),
            ("1e-4", DecFloat),
            ("2E+10", DecFloat),
            ("0x1F", HexInt),
            ("0x1p-3", HexFloat),
            ("0x1.fffep15", HexFloat),
            ("0X.8P1", HexFloat),
        ] {
            assert_eq!(kinds(text), vec![Tok::Number(kind), Tok::Eof], "{text}");
        }
        for bad in ["1e", "1e+", "0x", "0x1.8", "12abc", "1.2.3", "0x1pz"] {
            assert_eq!(error_code(bad), "parse::bad-number", "{bad}");
        }
    }

    #[test]
    fn strings_and_escapes() {
        let src = r#""a\"b\\c\n\u{1F600}é""#;
        let (tokens, err) = tokenize(src);
        assert!(err.is_none());
        assert_eq!(string_value(src, tokens[0]), "a\"b\\c\n😀é");
        assert_eq!(error_code("\"abc"), "parse::unterminated-string");
        assert_eq!(error_code("\"abc\ndef\""), "parse::unterminated-string");
        assert_eq!(error_code(r#""\q""#), "parse::bad-escape");
        assert_eq!(error_code(r#""\u{110000}""#), "parse::bad-escape");
        assert_eq!(error_code(r#""\u{}""#), "parse::bad-escape");
        assert_eq!(error_code("\"\\"), "parse::bad-escape");
    }

    #[test]
    fn stops_at_the_first_bad_character() {
        let (tokens, err) = tokenize("a b ? c");
        let err = err.unwrap();
        assert_eq!(err.code, "parse::unexpected-character");
        let span = err.span.unwrap();
        assert_eq!((span.start, span.end), (4, 5));
        assert_eq!(tokens.last().unwrap().kind, Tok::Error);
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokenize("€").1.unwrap().span.map(|s| s.len()), Some(3));
        assert_eq!(tokenize("\u{feff}a").0[0].span.start, 3);
    }
}
