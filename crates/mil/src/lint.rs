//! ANE compatibility lints.
