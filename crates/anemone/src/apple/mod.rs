//! The Apple Neural Engine backend, through the private AppleNeuralEngine framework
//! (REFERENCE.md §1: no Core ML, no entitlement).
//!
//! Every library is loaded at run time, so this module builds, lints and tests on any OS;
//! where the framework does not exist, [`open_device`] answers "unavailable: needs macOS on
//! Apple Silicon (AppleNeuralEngine.framework not found)". The parts:
//!
//! - `runtime`: [`AneRuntime`], the one typed interface to Objective-C, a method per call.
//! - `loader`: dlopen/dlsym of libobjc, Foundation, CoreFoundation, IOSurface and the
//!   private framework.
//! - `objc`: [`ObjcRuntime`], the real implementation: `objc_msgSend` cast to each
//!   selector's exact signature, Foundation helpers, IOSurface calls.
//! - `fake`: [`RecordingRuntime`], a recording stand-in used by the tests on any machine.
//! - `iosurface`: [`IoSurfaceMemory`], surfaces the ANE reads and writes without copies.
//! - `backend`: [`AneBackend`], the seed's call sequence behind the runtime's traits.
//!
//! **Not run on an ANE.** Nobody on this project has a Mac with an ANE: this code follows
//! the selectors, signatures and sequences that public, working projects use (maderix/ANE,
//! libane, ANE-LM; see REFERENCE.md), and its sequence is tested against a recording fake,
//! not against hardware. On an Apple Silicon Mac, expect: the first compile in a process to
//! take seconds and later ones tens of milliseconds; about 119 compiles per process before
//! the framework fails (the device refuses at 115, counted per process); weights fixed at
//! compile time (rewriting the weight file and reloading changes nothing, as measured by
//! others); and errors that carry the framework's own NSError descriptions. The private API
//! can change with any macOS release; if a class or selector is missing, opening the device
//! says which.

mod backend;
mod fake;
mod iosurface;
mod loader;
mod objc;
mod runtime;
#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

pub use backend::{
    AneBackend, AneCompiled, AneExecutable, AneOptions, DEFAULT_QOS, LOAD_RETRY_DELAY,
};
pub use fake::{FakeCall, FakeEvaluation, FakeObject, FakeReload, FakeSurface, RecordingRuntime};
pub use iosurface::IoSurfaceMemory;
pub use loader::{Lib, LoadError};
pub use objc::{IoSurfaceHandle, ObjcObject, ObjcRuntime};
pub use runtime::{AneRuntime, WeightFile};

use crate::budget::{BudgetLimits, CompileBudget};
use crate::device::Device;
use crate::error::{Error, Result};

/// The real runtime, loaded once per process: the libraries stay open for its whole life.
pub fn runtime() -> Result<Arc<ObjcRuntime>, LoadError> {
    static RUNTIME: OnceLock<Result<Arc<ObjcRuntime>, LoadError>> = OnceLock::new();
    RUNTIME.get_or_init(|| ObjcRuntime::load().map(Arc::new)).clone()
}

/// The ANE's compile budget. The limit is per process (REFERENCE.md §2), so every ANE
/// device of the process counts against this one.
pub fn process_budget() -> Arc<CompileBudget> {
    static BUDGET: OnceLock<Arc<CompileBudget>> = OnceLock::new();
    BUDGET
        .get_or_init(|| Arc::new(CompileBudget::new(BudgetLimits::default(), " per process")))
        .clone()
}

/// Why the ANE cannot be used here, in the words `open_device` uses.
fn unavailable(e: &LoadError) -> String {
    if e.is_not_found() {
        format!("needs macOS on Apple Silicon ({e})")
    } else {
        format!("the private AppleNeuralEngine framework is not as expected: {e}")
    }
}

/// Whether the ANE can be opened in this process, and if not, why (for `anemone probe`).
/// Loading the frameworks is all it checks: nothing is compiled.
pub fn availability() -> Result<(), String> {
    runtime().map(|_| ()).map_err(|e| unavailable(&e))
}

/// Opens the ANE with the default options, or says why it is unavailable here.
pub fn open_device() -> Result<Device> {
    open_device_with(AneOptions::default())
}

/// Opens the ANE with options (QoS, load retry delay).
pub fn open_device_with(options: AneOptions) -> Result<Device> {
    let runtime = runtime().map_err(|e| Error::Unavailable(unavailable(&e)))?;
    Ok(device_with_runtime(runtime, options, process_budget()))
}

/// An ANE device over any implementation of the Objective-C layer, e.g. the
/// [`RecordingRuntime`] to see what a program would send to the framework.
pub fn device_with_runtime<R: AneRuntime>(
    runtime: Arc<R>,
    options: AneOptions,
    budget: Arc<CompileBudget>,
) -> Device {
    Device::from_backend(Box::new(AneBackend::new(runtime, options)), budget)
}
