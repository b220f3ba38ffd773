//! The Apple Neural Engine backend, through the private AppleNeuralEngine framework.

use crate::device::Device;
use crate::error::{Error, Result};

/// Opens the ANE, or says why it is unavailable here.
pub fn open_device() -> Result<Device> {
    Err(Error::Unavailable(
        "needs macOS on Apple Silicon (AppleNeuralEngine.framework not found)".into(),
    ))
}
