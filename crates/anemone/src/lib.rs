//! anemone: the runtime.
