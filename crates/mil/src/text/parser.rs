//! The recursive-descent parser: tokens to a [`Program`] with a span on every node, or a
//! [`Diagnostic`] for the first problem in the text.
//!
//! No input can make it panic or exhaust memory or stack: nesting is capped at
//! [`MAX_DEPTH`], and it holds only what is written, never anything sized by a declared
//! shape. Literal elements are converted to the declared dtype as they are read.

use half::{bf16, f16};

use super::float::{self, Format, Overflow};
use super::lexer::{self, Lexer, NumKind, Tok, Token};
use super::printer;
use crate::diag::Diagnostic;
use crate::ir::*;

/// How deep tuples, types and dict payloads may nest. Real programs nest two or three
/// levels; the cap keeps the recursion far from the stack limit on any thread.
pub(super) const MAX_DEPTH: usize = 64;

type PResult<T> = Result<T, Diagnostic>;

pub(super) fn parse_program(src: &str) -> PResult<Program> {
    let mut lexer = Lexer::new(src);
    let ahead = [lexer.next_token(), lexer.next_token()];
    let mut parser = Parser { src, lexer, ahead, last: None, depth: 0 };
    parser.program()
}

struct Parser<'s> {
    src: &'s str,
    lexer: Lexer<'s>,
    /// The next two tokens: the grammar never needs to look further.
    ahead: [Token; 2],
    /// The last consumed token.
    last: Option<Token>,
    depth: usize,
}

/// One element of a literal as written, before it is given the declared dtype.
enum Element<'s> {
    Number { negative: bool, kind: NumKind, text: &'s str },
    Infinity { negative: bool },
    Nan { negative: bool, bits: Option<u64> },
    Bool(bool),
    Str(String),
}

// Token access.
impl<'s> Parser<'s> {
    /// The next token (`ahead` 0) or the one after (1). The stream ends with `Eof` or
    /// `Error`, and nothing expects `Error`: the parser reports the lexer's diagnostic when
    /// it meets it (see [`Parser::unexpected`]).
    fn peek_nth(&self, ahead: usize) -> Token {
        self.ahead[ahead.min(1)]
    }

    fn peek(&self) -> Token {
        self.ahead[0]
    }

    /// Consumes the next token; the final `Eof` or `Error` is never consumed.
    fn bump(&mut self) -> Token {
        let token = self.ahead[0];
        if !matches!(token.kind, Tok::Eof | Tok::Error) {
            self.ahead = [self.ahead[1], self.lexer.next_token()];
            self.last = Some(token);
        }
        token
    }

    fn at(&self, kind: Tok) -> bool {
        self.peek().kind == kind
    }

    fn eat(&mut self, kind: Tok) -> bool {
        let found = self.at(kind);
        if found {
            self.bump();
        }
        found
    }

    fn text(&self, token: Token) -> &'s str {
        self.src.get(token.span.start..token.span.end).unwrap_or("")
    }

    fn is_word(&self, token: Token, word: &str) -> bool {
        token.kind == Tok::Ident && self.text(token) == word
    }

    fn expect(&mut self, kind: Tok, what: &str) -> PResult<Token> {
        let token = self.peek();
        if token.kind != kind {
            return Err(self.unexpected(token, what));
        }
        Ok(self.bump())
    }

    fn expect_word(&mut self, word: &str, what: &str) -> PResult<Token> {
        let token = self.peek();
        if !self.is_word(token, word) {
            return Err(self.unexpected(token, what));
        }
        Ok(self.bump())
    }

    fn ident(&mut self, what: &str) -> PResult<Ident> {
        let token = self.expect(Tok::Ident, what)?;
        Ok(Ident { name: self.text(token).to_string(), span: token.span })
    }

    /// Enters one level of nesting, refusing to go deeper than [`MAX_DEPTH`].
    fn enter(&mut self, at: Token) -> PResult<()> {
        if self.depth >= MAX_DEPTH {
            return Err(Diagnostic::error(
                "parse::too-deep",
                format!("nesting is deeper than {MAX_DEPTH} levels"),
            )
            .at(at.span)
            .with_label("too deeply nested")
            .with_help("real programs nest a few levels deep at most; is a bracket unbalanced?"));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

// Diagnostics.
impl Parser<'_> {
    /// "expected WHAT, found TOKEN", with a code that names the commonest mistakes.
    fn unexpected(&self, found: Token, what: &str) -> Diagnostic {
        if found.kind == Tok::Error {
            return self.lex_error();
        }
        if found.kind == Tok::Eof {
            return Diagnostic::error(
                "parse::unexpected-eof",
                format!("unexpected end of input: expected {what}"),
            )
            .at(found.span)
            .with_label("the text ends here")
            .with_help("the text looks truncated");
        }
        let message = format!("expected {what}, found {}", self.describe(found));
        let expected = what.split(" after ").next().unwrap_or(what);
        let (code, help) = match what.split(' ').next() {
            Some("`;`") => ("parse::missing-semicolon", "statements and functions end with `;`"),
            Some("`->`") => {
                ("parse::missing-arrow", "a function body is followed by its outputs: `} -> (y);`")
            }
            _ => {
                return Diagnostic::error("parse::unexpected-token", message)
                    .at(found.span)
                    .with_label(format!("expected {expected}"));
            }
        };
        // What is missing belongs after the previous token, often on an earlier line than
        // the token found instead: point there.
        let (span, label) = match self.last {
            Some(last) => (last.span, format!("expected {expected} after this")),
            None => (found.span, format!("expected {expected}")),
        };
        Diagnostic::error(code, message).at(span).with_label(label).with_help(help)
    }

    /// Where the last consumed token ends.
    fn last_end(&self) -> usize {
        self.last.map_or(0, |t| t.span.end)
    }

    /// Why the lexer stopped.
    fn lex_error(&self) -> Diagnostic {
        self.lexer.error().cloned().unwrap_or_else(|| {
            Diagnostic::error("parse::unexpected-character", "malformed text").at(self.peek().span)
        })
    }

    fn describe(&self, token: Token) -> String {
        match token.kind {
            Tok::Eof => "the end of input".to_string(),
            Tok::Number(_) => format!("number `{}`", self.text(token)),
            Tok::Str { .. } => "a string".to_string(),
            _ => {
                let text = self.text(token);
                let short: String = text.chars().take(40).collect();
                format!("`{short}`")
            }
        }
    }

    fn literal_type_error(&self, span: Span, message: String, help: &str) -> Diagnostic {
        Diagnostic::error("parse::literal-type", message)
            .at(span)
            .with_label("does not match the declared type")
            .with_help(help.to_string())
    }

    fn out_of_range(&self, span: Span, message: String, help: String) -> Diagnostic {
        Diagnostic::error("parse::value-out-of-range", message)
            .at(span)
            .with_label("out of range")
            .with_help(help)
    }
}

// Program structure.
impl Parser<'_> {
    fn program(&mut self) -> PResult<Program> {
        self.expect_word("program", "`program` at the start of the text").map_err(|d| {
            d.with_help("a MIL program starts with `program(1.3)` and a `{ ... }` body")
        })?;
        self.expect(Tok::LParen, "`(` after `program`")?;
        let version = self.peek();
        if !matches!(version.kind, Tok::Number(NumKind::DecInt | NumKind::DecFloat)) {
            return Err(self.unexpected(version, "a version number such as `1.3`"));
        }
        self.bump();
        self.expect(Tok::RParen, "`)` after the program version")?;
        let attributes = self.optional_attributes()?;
        self.expect(Tok::LBrace, "`{` to open the program body")?;
        let mut functions = Vec::new();
        while !self.at(Tok::RBrace) {
            functions.push(self.function()?);
        }
        self.bump();
        self.expect(Tok::Eof, "the end of input after the program's closing `}`")?;
        Ok(Program { version: self.text(version).to_string(), attributes, functions })
    }

    /// `[name = value, ...]` if present.
    fn optional_attributes(&mut self) -> PResult<Vec<Named<Literal>>> {
        if !self.eat(Tok::LBracket) {
            return Ok(Vec::new());
        }
        let mut attributes = Vec::new();
        if !self.eat(Tok::RBracket) {
            loop {
                let name = self.ident("an attribute name")?;
                self.expect(Tok::Equals, "`=` after the attribute name")?;
                let value = self.value()?;
                attributes.push(Named { name, value });
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RBracket, "`,` or `]` after an attribute")?;
        }
        Ok(attributes)
    }

    fn function(&mut self) -> PResult<Function> {
        let start = self.expect_word("func", "`func` or the `}` that closes the program")?;
        let name = self.ident("a function name after `func`")?;
        self.expect(Tok::Less, "`<` and an opset after the function name, as in `main<ios18>`")?;
        let opset = self.ident("an opset name such as `ios18`")?;
        self.expect(Tok::Greater, "`>` after the opset")?;
        self.expect(Tok::LParen, "`(` to open the function inputs")?;
        let mut inputs = Vec::new();
        if !self.eat(Tok::RParen) {
            loop {
                inputs.push(self.typed_name()?);
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RParen, "`,` or `)` after a function input")?;
        }
        self.expect(Tok::LBrace, "`{` to open the function body")?;
        let mut operations = Vec::new();
        while !self.at(Tok::RBrace) {
            operations.push(self.operation()?);
        }
        self.bump();
        self.expect(Tok::Arrow, "`->` and the function outputs after the function body")?;
        self.expect(Tok::LParen, "`(` to open the function outputs")?;
        let mut outputs = Vec::new();
        if !self.eat(Tok::RParen) {
            loop {
                outputs.push(self.ident("the name of an output")?);
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RParen, "`,` or `)` after a function output")?;
        }
        let end = self.expect(Tok::Semicolon, "`;` after the function outputs")?;
        Ok(Function {
            name,
            opset,
            inputs,
            block: Block { operations, outputs },
            span: start.span.to(end.span),
        })
    }

    /// `type name, type name = op(inputs)[attributes];`
    fn operation(&mut self) -> PResult<Operation> {
        let start = self.peek();
        let mut outputs = Vec::new();
        loop {
            outputs.push(self.typed_name()?);
            if !self.eat(Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::Equals, "`=` after the operation's results")?;
        let op = self.ident("an operation name")?;
        self.expect(Tok::LParen, "`(` and the inputs after the operation name")?;
        let mut inputs = Vec::new();
        if !self.eat(Tok::RParen) {
            loop {
                let name = self.ident("an input name")?;
                self.expect(Tok::Equals, "`=` after the input name")?;
                let value = self.argument()?;
                inputs.push(Named { name, value });
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RParen, "`,` or `)` after an input")?;
        }
        let attributes = self.optional_attributes()?;
        let end = self.expect(Tok::Semicolon, "`;` after the operation")?;
        Ok(Operation { op, inputs, attributes, outputs, span: start.span.to(end.span) })
    }

    fn typed_name(&mut self) -> PResult<TypedName> {
        let (ty, ty_span) = self.ty()?;
        let name = self.ident("a name after the type")?;
        Ok(TypedName { ty, name, ty_span })
    }

    /// An input: a variable, a typed value, or a tuple of inputs.
    fn argument(&mut self) -> PResult<Argument> {
        let token = self.peek();
        match token.kind {
            Tok::LParen => self.tuple(),
            Tok::Ident if self.starts_value()? => Ok(Argument::Literal(self.value()?)),
            Tok::Ident => {
                self.bump();
                Ok(Argument::Var(Ident { name: self.text(token).to_string(), span: token.span }))
            }
            Tok::Number(_) | Tok::Str { .. } | Tok::Minus | Tok::Plus => Err(Diagnostic::error(
                "parse::untyped-literal",
                "a literal input needs its type, e.g. `fp16(0.5)` or `string(\"x\")`",
            )
            .at(token.span)
            .with_label("no type")
            .with_help("write the value as TYPE(VALUE), or name a `const`")),
            _ => Err(self.unexpected(token, "a variable, a typed value or a `(...)` tuple")),
        }
    }

    /// A name followed by what makes it a type: `tensor<`, `dict<`, or `fp16(`.
    fn starts_value(&self) -> PResult<bool> {
        let word = self.text(self.peek());
        let next = self.peek_nth(1).kind;
        Ok(match word {
            "tensor" | "dict" => next == Tok::Less,
            _ => next == Tok::LParen && DType::from_name(word).is_some(),
        })
    }

    fn tuple(&mut self) -> PResult<Argument> {
        let open = self.peek();
        self.enter(open)?;
        self.bump();
        let mut items = Vec::new();
        if !self.eat(Tok::RParen) {
            loop {
                items.push(self.argument()?);
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RParen, "`,` or `)` in the tuple")?;
        }
        self.leave();
        Ok(Argument::Tuple(items, Span::new(open.span.start, self.last_end())))
    }
}

// Types.
impl Parser<'_> {
    /// A type and where it was written; `tensor<T, []>` is the scalar `T`.
    fn ty(&mut self) -> PResult<(Type, Span)> {
        let start = self.peek();
        self.enter(start)?;
        let ty = if self.is_word(start, "tensor") {
            self.bump();
            self.expect(Tok::Less, "`<` after `tensor`")?;
            let dtype = self.dtype(true)?;
            self.expect(Tok::Comma, "`,` and the shape after the element type")?;
            let shape = self.shape()?;
            self.expect(Tok::Greater, "`>` to close the tensor type")?;
            Type::from(TensorType { dtype, shape })
        } else if self.is_word(start, "dict") {
            self.bump();
            self.expect(Tok::Less, "`<` after `dict`")?;
            let (key, _) = self.ty()?;
            self.expect(Tok::Comma, "`,` between the key and value types")?;
            let (value, _) = self.ty()?;
            self.expect(Tok::Greater, "`>` to close the dict type")?;
            Type::Dict(Box::new(key), Box::new(value))
        } else {
            Type::Scalar(self.dtype(false)?)
        };
        self.leave();
        Ok((ty, Span::new(start.span.start, self.last_end())))
    }

    /// A scalar type name; `element` when it names a tensor's element type, where `tensor`
    /// and `dict` cannot appear.
    fn dtype(&mut self, element: bool) -> PResult<DType> {
        let token = self.peek();
        if token.kind != Tok::Ident {
            return Err(self.unexpected(token, "a type such as `fp16` or `tensor<fp16, [1, 64]>`"));
        }
        let name = self.text(token);
        if let Some(dtype) = DType::from_name(name) {
            self.bump();
            return Ok(dtype);
        }
        if element && (name == "tensor" || name == "dict") {
            return Err(Diagnostic::error(
                "parse::unknown-dtype",
                format!("a tensor's element type cannot be `{name}`"),
            )
            .at(token.span)
            .with_label("not a scalar type")
            .with_help("tensor elements are scalars, e.g. `tensor<fp16, [1, 64]>`"));
        }
        Err(unknown_dtype(name, token.span, !element))
    }

    fn shape(&mut self) -> PResult<Vec<usize>> {
        self.expect(Tok::LBracket, "`[` to open the shape")?;
        let mut shape = Vec::new();
        if !self.eat(Tok::RBracket) {
            loop {
                shape.push(self.dimension()?);
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RBracket, "`,` or `]` in the shape")?;
        }
        Ok(shape)
    }

    fn dimension(&mut self) -> PResult<usize> {
        let token = self.peek();
        let text = self.text(token);
        match token.kind {
            Tok::Number(kind) if kind.is_integer() => {
                self.bump();
                match parse_unsigned(kind, text).and_then(|v| usize::try_from(v).ok()) {
                    Some(d) => Ok(d),
                    None => Err(self.out_of_range(
                        token.span,
                        format!("dimension `{text}` is too large"),
                        "dimensions must fit a 64-bit size".to_string(),
                    )),
                }
            }
            Tok::Ident => Err(Diagnostic::error(
                "parse::symbolic-dimension",
                format!("symbolic dimension `{text}` is not supported"),
            )
            .at(token.span)
            .with_label("symbolic")
            .with_help("the Neural Engine compiles fully known shapes: write the size, e.g. `64`")),
            Tok::Minus | Tok::Number(_) => {
                let end = self.peek_nth(1);
                let span =
                    if token.kind == Tok::Minus { token.span.to(end.span) } else { token.span };
                let written = self.src.get(span.start..span.end).unwrap_or("");
                Err(Diagnostic::error(
                    "parse::bad-dimension",
                    format!("dimension `{written}` is not a non-negative whole number"),
                )
                .at(span)
                .with_label("not a size")
                .with_help("shape dimensions are sizes such as `1` or `64`"))
            }
            _ => Err(self.unexpected(token, "a dimension such as `64`")),
        }
    }
}

// Values.
impl Parser<'_> {
    /// `TYPE(PAYLOAD)`.
    fn value(&mut self) -> PResult<Literal> {
        let (ty, ty_span) = self.ty()?;
        self.expect(Tok::LParen, "`(` and the value after the type")?;
        let data = self.payload(&ty)?;
        let close = self.expect(Tok::RParen, "`)` to close the value")?;
        Ok(Literal { ty, data, span: ty_span.to(close.span) })
    }

    fn payload(&mut self, ty: &Type) -> PResult<LiteralData> {
        let token = self.peek();
        if self.is_word(token, "BLOBFILE") {
            return self.blob(ty);
        }
        match ty {
            Type::Dict(key, value) => {
                if matches!(token.kind, Tok::Eof | Tok::Error) {
                    return Err(self.unexpected(token, "`{` and the dict's entries"));
                }
                if token.kind != Tok::LBrace {
                    let message =
                        format!("a `{}` value is written `{{{{key, value}}, ...}}`", type_text(ty));
                    return Err(self.literal_type_error(token.span, message, "open with `{`"));
                }
                self.dict(key, value)
            }
            _ => self.tensor_payload(ty),
        }
    }

    /// A single element or a flat `[...]` list, checked against the declared count.
    fn tensor_payload(&mut self, ty: &Type) -> PResult<LiteralData> {
        let dtype = ty.dtype().unwrap_or(DType::Fp32);
        let mut data = empty_data(dtype);
        let open = self.peek();
        match open.kind {
            Tok::LBracket => {
                self.bump();
                if !self.eat(Tok::RBracket) {
                    loop {
                        self.list_element(dtype, &mut data)?;
                        if !self.eat(Tok::Comma) {
                            break;
                        }
                    }
                    self.expect(Tok::RBracket, "`,` or `]` in the list")?;
                }
            }
            Tok::LBrace => {
                let message = format!("`{{...}}` is a dict, but the type is `{}`", type_text(ty));
                return Err(self.literal_type_error(
                    open.span,
                    message,
                    "tensors are written as one flat list `[a, b, ...]`",
                ));
            }
            _ => self.element(dtype, &mut data)?,
        }
        let span = Span::new(open.span.start, self.last_end());
        self.check_count(ty, data.len(), span)?;
        Ok(LiteralData::Tensor(data))
    }

    fn list_element(&mut self, dtype: DType, data: &mut TensorData) -> PResult<()> {
        let token = self.peek();
        if token.kind == Tok::LBracket {
            return Err(Diagnostic::error("parse::nested-list", "nested lists are not supported")
                .at(token.span)
                .with_label("a list inside a list")
                .with_help("write inline tensors as one flat row-major list, whatever the rank"));
        }
        self.element(dtype, data)
    }

    fn check_count(&self, ty: &Type, written: usize, span: Span) -> PResult<()> {
        let declared = ty.element_count();
        if declared == Some(written) {
            return Ok(());
        }
        let declared_text = match declared {
            Some(1) => "1 element".to_string(),
            Some(n) => format!("{n} elements"),
            None => "more elements than can be counted".to_string(),
        };
        let written_text = if written == 1 { "1 is".to_string() } else { format!("{written} are") };
        let message =
            format!("`{}` declares {declared_text}, but {written_text} written", type_text(ty));
        Err(Diagnostic::error("parse::literal-count", message)
            .at(span)
            .with_label(format!("{written} written"))
            .with_help("inline tensors list every element once, flat and row-major"))
    }

    /// `{{key, value}, ...}`
    fn dict(&mut self, key: &Type, value: &Type) -> PResult<LiteralData> {
        let open = self.peek();
        self.enter(open)?;
        self.bump();
        let mut entries = Vec::new();
        if !self.eat(Tok::RBrace) {
            loop {
                self.expect(Tok::LBrace, "`{` to open a dict entry `{key, value}`")?;
                let k = self.entry(key)?;
                self.expect(Tok::Comma, "`,` between a dict key and its value")?;
                let v = self.entry(value)?;
                self.expect(Tok::RBrace, "`}` to close the dict entry")?;
                entries.push((k, v));
                if !self.eat(Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RBrace, "`,` or `}` in the dict")?;
        }
        self.leave();
        Ok(LiteralData::Dict(entries))
    }

    /// A dict key or value: a payload of the dict's key or value type.
    fn entry(&mut self, ty: &Type) -> PResult<Literal> {
        let start = self.peek().span.start;
        let data = self.payload(ty)?;
        Ok(Literal { ty: ty.clone(), data, span: Span::new(start, self.last_end()) })
    }

    /// `BLOBFILE(path = string("..."), offset = uint64(N))`
    fn blob(&mut self, ty: &Type) -> PResult<LiteralData> {
        let keyword = self.bump();
        // A BLOBFILE's fields are values, which may be BLOBFILEs again: count the nesting.
        self.enter(keyword)?;
        let result = self.blob_fields(ty, keyword);
        self.leave();
        result
    }

    fn blob_fields(&mut self, ty: &Type, keyword: Token) -> PResult<LiteralData> {
        if matches!(ty, Type::Dict(..)) {
            return Err(bad_blob(keyword.span, "a dict cannot be read from a BLOBFILE".into()));
        }
        self.expect(Tok::LParen, "`(` after `BLOBFILE`")?;
        let mut path = None;
        let mut offset = None;
        loop {
            let field = self.ident("`path` or `offset`")?;
            self.expect(Tok::Equals, "`=` after the BLOBFILE field name")?;
            let value = self.value()?;
            match field.name.as_str() {
                "path" if path.is_none() => path = Some(blob_path(&value)?),
                "offset" if offset.is_none() => offset = Some(blob_offset(&value)?),
                "path" | "offset" => {
                    return Err(bad_blob(field.span, format!("`{}` is given twice", field.name)));
                }
                other => {
                    let message =
                        format!("unknown BLOBFILE field `{other}`: expected `path` or `offset`");
                    return Err(bad_blob(field.span, message));
                }
            }
            if !self.eat(Tok::Comma) {
                break;
            }
        }
        let close = self.expect(Tok::RParen, "`,` or `)` in BLOBFILE")?;
        match (path, offset) {
            (Some(path), Some(offset)) => Ok(LiteralData::Blob(BlobRef { path, offset })),
            _ => Err(bad_blob(
                keyword.span.to(close.span),
                "BLOBFILE needs both `path` and `offset`".into(),
            )),
        }
    }
}

fn bad_blob(span: Span, message: String) -> Diagnostic {
    Diagnostic::error("parse::bad-blobfile", message).at(span).with_label("here").with_help(
        "write BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), offset = uint64(64))",
    )
}

fn blob_path(value: &Literal) -> PResult<String> {
    match value.as_str() {
        Some(path) if value.ty == Type::Scalar(DType::String) => Ok(path.to_string()),
        _ => Err(bad_blob(value.span, "the BLOBFILE path must be a string".into())),
    }
}

fn blob_offset(value: &Literal) -> PResult<u64> {
    let offset = match (&value.ty, value.tensor_data()) {
        (Type::Scalar(d), Some(TensorData::UInt(v))) if d.is_unsigned_int() => v.first().copied(),
        (Type::Scalar(d), Some(TensorData::Int(v))) if d.is_signed_int() => {
            v.first().and_then(|&o| u64::try_from(o).ok())
        }
        _ => None,
    };
    offset.ok_or_else(|| {
        bad_blob(value.span, "the BLOBFILE offset must be a non-negative integer".into())
    })
}

// Literal elements.
impl<'s> Parser<'s> {
    /// Reads one element and appends it to `data` in the representation of `dtype`.
    fn element(&mut self, dtype: DType, data: &mut TensorData) -> PResult<()> {
        let (element, span) = self.raw_element()?;
        match element {
            Element::Number { negative, kind, text } => {
                self.push_number(dtype, data, negative, kind, text, span)
            }
            Element::Infinity { negative } => self.push_special(dtype, data, span, |f| {
                f.infinity().map(|bits| if negative { bits | f.sign_bit() } else { bits })
            }),
            Element::Nan { negative, bits } => self.push_special(dtype, data, span, |f| {
                let bits = bits.unwrap_or_else(|| f.canonical_nan());
                let bits = if negative { bits | f.sign_bit() } else { bits };
                (bits.checked_shr(f.width()).unwrap_or(0) == 0 && f.is_nan(bits)).then_some(bits)
            }),
            Element::Bool(b) => match data {
                TensorData::Bool(v) => {
                    v.push(b);
                    Ok(())
                }
                _ => Err(self.mismatch(dtype, span, "a boolean")),
            },
            Element::Str(s) => match data {
                TensorData::Str(v) => {
                    v.push(s);
                    Ok(())
                }
                _ => Err(self.mismatch(dtype, span, "a string")),
            },
        }
    }

    fn raw_element(&mut self) -> PResult<(Element<'s>, Span)> {
        let first = self.peek();
        let negative = first.kind == Tok::Minus;
        let signed = negative || first.kind == Tok::Plus;
        if signed {
            self.bump();
        }
        let token = self.peek();
        let word = self.text(token);
        let element = match token.kind {
            Tok::Number(kind) => Element::Number { negative, kind, text: word },
            Tok::Ident if word == "inf" => Element::Infinity { negative },
            Tok::Ident if word == "nan" => {
                self.bump();
                let bits = self.nan_bits()?;
                let span = Span::new(first.span.start, self.last_end());
                return Ok((Element::Nan { negative, bits }, span));
            }
            Tok::Ident if !signed && (word == "true" || word == "false") => {
                Element::Bool(word == "true")
            }
            Tok::Str { .. } if !signed => Element::Str(lexer::string_value(self.src, token)),
            _ => {
                let what = if signed {
                    "a number, `inf` or `nan` after the sign"
                } else {
                    "a literal value (a number, a string, `true` or `false`)"
                };
                return Err(self.unexpected(token, what));
            }
        };
        self.bump();
        Ok((element, first.span.to(token.span)))
    }

    /// The optional `(0xBITS)` after `nan` that names a NaN's exact bits.
    fn nan_bits(&mut self) -> PResult<Option<u64>> {
        if !self.eat(Tok::LParen) {
            return Ok(None);
        }
        let token = self.peek();
        let bits = match token.kind {
            Tok::Number(NumKind::HexInt) => parse_unsigned(NumKind::HexInt, self.text(token)),
            _ => None,
        };
        let Some(bits) = bits else {
            return Err(self.unexpected(token, "the NaN's bits in hexadecimal, e.g. `nan(0x7e01)`"));
        };
        self.bump();
        self.expect(Tok::RParen, "`)` after the NaN's bits")?;
        Ok(Some(bits))
    }

    fn push_number(
        &self,
        dtype: DType,
        data: &mut TensorData,
        negative: bool,
        kind: NumKind,
        text: &str,
        span: Span,
    ) -> PResult<()> {
        let written = self.src.get(span.start..span.end).unwrap_or(text);
        if let Some(format) = Format::of(dtype) {
            let bits = match kind {
                NumKind::DecInt | NumKind::DecFloat => {
                    float::decimal_to_bits(format, negative, text)
                }
                NumKind::HexInt | NumKind::HexFloat => float::hex_to_bits(format, negative, text),
            };
            return match bits {
                Ok(bits) => {
                    push_float(data, bits);
                    Ok(())
                }
                Err(Overflow) => Err(self.float_out_of_range(format, written, span)),
            };
        }
        let Some((min, max)) = dtype.int_range() else {
            return Err(self.mismatch(dtype, span, "a number"));
        };
        if !kind.is_integer() {
            let message = format!("`{written}` is not an integer, but the type is {dtype}");
            return Err(self.literal_type_error(span, message, "integer types take whole numbers"));
        }
        let value = parse_unsigned(kind, text)
            .map(i128::from)
            .map(|v| if negative { -v } else { v })
            .filter(|v| (min..=max).contains(v));
        match (value, data) {
            (Some(v), TensorData::Int(values)) => {
                values.push(v as i64);
                Ok(())
            }
            (Some(v), TensorData::UInt(values)) => {
                values.push(v as u64);
                Ok(())
            }
            (Some(_), _) => Err(self.mismatch(dtype, span, "a number")),
            (None, _) => Err(self.out_of_range(
                span,
                format!("`{written}` is out of range for {dtype}"),
                format!("{dtype} holds {min} to {max}"),
            )),
        }
    }

    fn float_out_of_range(&self, format: Format, written: &str, span: Span) -> Diagnostic {
        let dtype = format.dtype;
        let mut largest = String::new();
        float::write_shortest(&mut largest, format, format.max_finite_bits());
        let help = match format.infinity() {
            Some(_) => format!("the largest finite {dtype} is {largest}; write `inf` for infinity"),
            None => format!("{dtype} has no infinity; its largest value is {largest}"),
        };
        self.out_of_range(span, format!("`{written}` is out of range for {dtype}"), help)
    }

    /// `inf` or `nan` for a float dtype; `bits_of` gives None when the format cannot hold it.
    fn push_special(
        &self,
        dtype: DType,
        data: &mut TensorData,
        span: Span,
        bits_of: impl FnOnce(Format) -> Option<u64>,
    ) -> PResult<()> {
        let written = self.src.get(span.start..span.end).unwrap_or("");
        let Some(format) = Format::of(dtype) else {
            return Err(self.mismatch(dtype, span, &format!("`{written}`")));
        };
        match bits_of(format) {
            Some(bits) => {
                push_float(data, bits);
                Ok(())
            }
            None if written.contains("inf") => Err(self.float_out_of_range(format, written, span)),
            None => Err(Diagnostic::error(
                "parse::bad-number",
                format!("`{written}` is not a NaN of {dtype}"),
            )
            .at(span)
            .with_label("not a NaN bit pattern")
            .with_help(format!("`nan(0x...)` names the full bits of a {dtype} NaN"))),
        }
    }

    fn mismatch(&self, dtype: DType, span: Span, found: &str) -> Diagnostic {
        let help = match dtype {
            DType::Bool => "bool values are `true` or `false`",
            DType::String => "strings are written in double quotes",
            d if d.is_int() => "integer types take whole numbers",
            _ => "numeric types take numbers such as `1`, `-0.5`, `1e-4` or `0x1p-3`",
        };
        self.literal_type_error(
            span,
            format!("expected a value of type {dtype}, found {found}"),
            help,
        )
    }
}

/// An empty element list in the representation `dtype` is stored in.
fn empty_data(dtype: DType) -> TensorData {
    match dtype {
        DType::Fp16 => TensorData::F16(Vec::new()),
        DType::Bf16 => TensorData::BF16(Vec::new()),
        DType::Fp32 => TensorData::F32(Vec::new()),
        DType::Fp64 => TensorData::F64(Vec::new()),
        DType::Bool => TensorData::Bool(Vec::new()),
        DType::String => TensorData::Str(Vec::new()),
        d if d.is_signed_int() => TensorData::Int(Vec::new()),
        // Unsigned integers, and fp8 as raw bytes.
        _ => TensorData::UInt(Vec::new()),
    }
}

fn push_float(data: &mut TensorData, bits: u64) {
    match data {
        TensorData::F16(v) => v.push(f16::from_bits(bits as u16)),
        TensorData::BF16(v) => v.push(bf16::from_bits(bits as u16)),
        TensorData::F32(v) => v.push(f32::from_bits(bits as u32)),
        TensorData::F64(v) => v.push(f64::from_bits(bits)),
        TensorData::UInt(v) => v.push(bits),
        _ => {}
    }
}

/// The value of an unsigned integer token, None when it does not fit 64 bits.
fn parse_unsigned(kind: NumKind, text: &str) -> Option<u64> {
    match kind {
        NumKind::DecInt => text.parse().ok(),
        NumKind::HexInt => u64::from_str_radix(text.get(2..)?, 16).ok(),
        _ => None,
    }
}

fn type_text(ty: &Type) -> String {
    let mut out = String::new();
    printer::write_type(&mut out, ty);
    out
}

fn unknown_dtype(name: &str, span: Span, compound_allowed: bool) -> Diagnostic {
    let shown: String = name.chars().take(40).collect();
    let help = match suggest_dtype(name, compound_allowed) {
        Some(s) => format!("did you mean `{s}`?"),
        None => {
            let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            format!("types are {}, `tensor<...>` and `dict<...>`", names.join(", "))
        }
    };
    Diagnostic::error("parse::unknown-dtype", format!("unknown type `{shown}`"))
        .at(span)
        .with_label("not a MIL type")
        .with_help(help)
}

/// A likely intended type name: a common alias, or one within two edits (`tensor` and
/// `dict` only where they may appear).
fn suggest_dtype(name: &str, compound_allowed: bool) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "float16" | "half" | "f16" => Some("fp16"),
        "float" | "float32" | "f32" | "single" => Some("fp32"),
        "float64" | "double" | "f64" => Some("fp64"),
        "bfloat16" => Some("bf16"),
        "int" | "i32" => Some("int32"),
        "i8" => Some("int8"),
        "i16" => Some("int16"),
        "i64" | "long" => Some("int64"),
        "u8" | "byte" => Some("uint8"),
        "u16" => Some("uint16"),
        "u32" | "uint" => Some("uint32"),
        "u64" => Some("uint64"),
        "str" => Some("string"),
        "boolean" => Some("bool"),
        _ => None,
    };
    if alias.is_some() {
        return alias;
    }
    let compound: &[&'static str] = if compound_allowed { &["tensor", "dict"] } else { &[] };
    let candidates = DType::ALL.iter().map(|d| d.name()).chain(compound.iter().copied());
    candidates
        .map(|c| (edit_distance(&lower, c), c))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of neighbours
/// (`fp61` is one edit from `fp16`). For short names only: longer input is far from all.
fn edit_distance(a: &str, b: &str) -> usize {
    if a.len() > 32 {
        return usize::MAX;
    }
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let substitute = d[(i - 1) * width + j - 1] + usize::from(a[i - 1] != b[j - 1]);
                let mut best =
                    substitute.min(d[(i - 1) * width + j] + 1).min(d[i * width + j - 1] + 1);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_dtype("fp61", true), Some("fp16"));
        assert_eq!(suggest_dtype("float16", true), Some("fp16"));
        assert_eq!(suggest_dtype("float", true), Some("fp32"));
        assert_eq!(suggest_dtype("Int32", true), Some("int32"));
        assert_eq!(suggest_dtype("tensr", true), Some("tensor"));
        assert_eq!(suggest_dtype("tensr", false), None);
        assert_eq!(suggest_dtype("banana", true), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("fp61", "fp16"), 1);
    }
}
