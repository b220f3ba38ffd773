//! Finding the frameworks at run time: `dlopen` by absolute path and `dlsym` by name, through
//! `libloading`. Nothing here is linked at build time, so the backend builds, lints and
//! tests on any OS and only fails, with a sentence, when it is opened where the frameworks
//! do not exist.

use std::ffi::{CStr, c_void};
use std::fmt;
use std::ptr::NonNull;

use libloading::Library;

/// The private framework (in the dyld shared cache; dlopen by path finds it there).
pub const APPLE_NEURAL_ENGINE_PATH: &str =
    "/System/Library/PrivateFrameworks/AppleNeuralEngine.framework/AppleNeuralEngine";
pub const LIBOBJC_PATH: &str = "/usr/lib/libobjc.A.dylib";
pub const FOUNDATION_PATH: &str = "/System/Library/Frameworks/Foundation.framework/Foundation";
pub const CORE_FOUNDATION_PATH: &str =
    "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation";
pub const IOSURFACE_PATH: &str = "/System/Library/Frameworks/IOSurface.framework/IOSurface";

/// One of the libraries the backend loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    AppleNeuralEngine,
    Objc,
    Foundation,
    CoreFoundation,
    IoSurface,
}

impl Lib {
    /// The name said in messages.
    pub fn name(self) -> &'static str {
        match self {
            Lib::AppleNeuralEngine => "AppleNeuralEngine.framework",
            Lib::Objc => "libobjc.A.dylib",
            Lib::Foundation => "Foundation.framework",
            Lib::CoreFoundation => "CoreFoundation.framework",
            Lib::IoSurface => "IOSurface.framework",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Lib::AppleNeuralEngine => APPLE_NEURAL_ENGINE_PATH,
            Lib::Objc => LIBOBJC_PATH,
            Lib::Foundation => FOUNDATION_PATH,
            Lib::CoreFoundation => CORE_FOUNDATION_PATH,
            Lib::IoSurface => IOSURFACE_PATH,
        }
    }
}

/// Why the real runtime could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// `dlopen` failed: not macOS, or a macOS without the framework.
    NotFound { lib: Lib, detail: String },
    /// A function or constant the backend needs is not exported.
    MissingSymbol { lib: Lib, symbol: String },
    /// `objc_getClass` returned nil: the private classes were renamed or removed.
    MissingClass { class: String },
}

impl LoadError {
    /// True when the frameworks are absent altogether (as on Linux), rather than present but
    /// different from what the backend expects.
    pub fn is_not_found(&self) -> bool {
        matches!(self, LoadError::NotFound { .. })
    }

    /// The loader's own words (`dlerror`), for a verbose report.
    pub fn detail(&self) -> Option<&str> {
        match self {
            LoadError::NotFound { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { lib, .. } => write!(f, "{} not found", lib.name()),
            LoadError::MissingSymbol { lib, symbol } => {
                write!(f, "{} does not export `{symbol}`", lib.name())
            }
            LoadError::MissingClass { class } => write!(
                f,
                "the Objective-C class `{class}` does not exist (this macOS may have renamed \
                 the private AppleNeuralEngine classes)"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The five libraries, open for as long as this value lives: every function pointer taken
/// from them must not outlive it.
pub struct Libraries {
    ane: Library,
    objc: Library,
    foundation: Library,
    core_foundation: Library,
    io_surface: Library,
}

impl Libraries {
    /// Opens the libraries, the private framework first so that a machine without it says so
    /// (on Linux every one of them is missing; the framework is the one that matters).
    pub fn open() -> Result<Libraries, LoadError> {
        Ok(Libraries {
            ane: open(Lib::AppleNeuralEngine)?,
            objc: open(Lib::Objc)?,
            foundation: open(Lib::Foundation)?,
            core_foundation: open(Lib::CoreFoundation)?,
            io_surface: open(Lib::IoSurface)?,
        })
    }

    fn library(&self, lib: Lib) -> &Library {
        match lib {
            Lib::AppleNeuralEngine => &self.ane,
            Lib::Objc => &self.objc,
            Lib::Foundation => &self.foundation,
            Lib::CoreFoundation => &self.core_foundation,
            Lib::IoSurface => &self.io_surface,
        }
    }

    /// The address of an exported function or variable, never null.
    pub fn symbol(&self, lib: Lib, name: &CStr) -> Result<NonNull<c_void>, LoadError> {
        let missing =
            || LoadError::MissingSymbol { lib, symbol: name.to_string_lossy().into_owned() };
        // SAFETY: the symbol is read as a plain address (a data pointer), which is what dlsym
        // returns for functions and variables alike; the caller casts it to the right type.
        let address =
            unsafe { self.library(lib).get::<*mut c_void>(name) }.map_err(|_| missing())?;
        NonNull::new(*address).ok_or_else(missing)
    }
}

fn open(lib: Lib) -> Result<Library, LoadError> {
    // SAFETY: these are Apple's system libraries; their initialisers are what every macOS
    // process that links them runs. Where they do not exist dlopen just fails.
    unsafe { Library::new(lib.path()) }
        .map_err(|e| LoadError::NotFound { lib, detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(target_os = "macos"))]
    fn without_the_framework_the_error_names_it() {
        let Err(e) = Libraries::open() else { panic!("the ANE framework loaded off macOS") };
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "AppleNeuralEngine.framework not found");
        assert!(e.detail().is_some_and(|d| !d.is_empty()));
    }
}
