//! Whole-program validation.
