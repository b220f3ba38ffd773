//! anemone: the runtime.

pub mod sim;
