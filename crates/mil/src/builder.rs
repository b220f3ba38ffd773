//! Typed construction of MIL programs.
