//! MIL text: lexer, parser, printer.
