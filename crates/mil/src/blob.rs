//! MILBlob v2 weight files (REFERENCE.md §5).
