//! Finding the frameworks at run time: `dlopen` by absolute path and `dlsym` by name, through
//! `libloading`. Nothing here is linked at build time, so the backend builds, lints and
//! tests on any OS and only fails, with a sentence, when it is opened where the frameworks
//! do not exist.
//!
//! The libraries are never closed (see [`Libraries`]), and which files are opened can be
//! replaced with `ANEMONE_OBJC_LIBS` (see [`OVERRIDE_VAR`]), which is how the Objective-C
//! layer is tested against GNUstep on Linux (`tests/objc_gnustep.rs`).

use std::ffi::{CStr, c_void};
use std::fmt;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
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

/// Replaces which files the libraries are opened from: `name=/absolute/path` entries
/// separated by `:`, the names being those of [`Lib::key`] (`AppleNeuralEngine`, `objc`,
/// `Foundation`, `CoreFoundation`, `IOSurface`). A library not named keeps its system path;
/// one file may serve several names. Honoured only when set and non-empty, and only whole:
/// an unknown or repeated name, or a path that is not absolute, makes opening fail with
/// [`LoadError::BadOverride`] rather than fall back to something else. It is read when the
/// runtime is first loaded, once per process, so it must be set before the first
/// `Device::ane()`.
///
/// Why this is safe to honour: it changes nothing but the paths given to `dlopen`, exactly
/// what `DYLD_INSERT_LIBRARIES`/`DYLD_LIBRARY_PATH` (or `LD_PRELOAD`) already let whoever
/// sets this process's environment do, so it gives them no power they lack. Absolute paths
/// only, so that no search path or working directory decides which file is loaded. The
/// libraries so named must still export every symbol and class the backend resolves, which
/// is checked at load as for the system ones.
pub const OVERRIDE_VAR: &str = "ANEMONE_OBJC_LIBS";

/// One of the libraries the backend loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    /// The private `AppleNeuralEngine.framework` (the `_ANE*` classes).
    AppleNeuralEngine,
    /// `libobjc.A.dylib`: `objc_msgSend`, `objc_getClass`, `sel_registerName`, autorelease
    /// pools.
    Objc,
    /// `Foundation.framework`: `NSTemporaryDirectory` and the `NSData`, `NSString`,
    /// `NSNumber`... classes.
    Foundation,
    /// `CoreFoundation.framework`: `CFRelease`.
    CoreFoundation,
    /// `IOSurface.framework`: `IOSurfaceCreate`, lock/unlock, base address, allocation size
    /// and the `kIOSurface*` property keys.
    IoSurface,
}

impl Lib {
    /// Every library, in the order they are opened.
    pub const ALL: [Lib; 5] =
        [Lib::AppleNeuralEngine, Lib::Objc, Lib::Foundation, Lib::CoreFoundation, Lib::IoSurface];

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

    /// The name of the library in `ANEMONE_OBJC_LIBS`.
    pub fn key(self) -> &'static str {
        match self {
            Lib::AppleNeuralEngine => "AppleNeuralEngine",
            Lib::Objc => "objc",
            Lib::Foundation => "Foundation",
            Lib::CoreFoundation => "CoreFoundation",
            Lib::IoSurface => "IOSurface",
        }
    }

    /// The system path (what is opened unless `ANEMONE_OBJC_LIBS` says otherwise).
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
    NotFound {
        /// The library that could not be opened.
        lib: Lib,
        /// The loader's message (`dlerror`).
        detail: String,
    },
    /// A function or constant the backend needs is not exported.
    MissingSymbol {
        /// The library that should export it.
        lib: Lib,
        /// The symbol's C name.
        symbol: String,
    },
    /// `objc_getClass` returned nil: the private classes were renamed or removed.
    MissingClass {
        /// The class name looked up.
        class: String,
    },
    /// A class does not answer a method the backend sends (`-[Class selector]` or
    /// `+[Class selector]`), found before any is sent.
    MissingMethod {
        /// The library the class comes from.
        lib: Lib,
        /// The method as `-[Class selector]` or `+[Class selector]`.
        method: String,
    },
    /// `ANEMONE_OBJC_LIBS` is set but malformed; nothing was opened.
    BadOverride {
        /// What is wrong with the variable's value.
        detail: String,
    },
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
            LoadError::MissingMethod { lib, method } => {
                write!(f, "{method} missing (from {})", lib.name())
            }
            LoadError::BadOverride { detail } => write!(f, "{OVERRIDE_VAR}: {detail}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The five libraries, open for the rest of the process: every function pointer taken from
/// them stays valid.
///
/// They are never closed, on purpose. An Objective-C runtime registers the classes and
/// selectors of every image it loads and cannot take them back, so unloading one leaves the
/// runtime pointing into unmapped memory; Apple's dyld refuses to unload such images for
/// that reason, and GNUstep Base registers a thread-exit destructor that crashes the
/// process once its library is gone. So each handle is wrapped in `ManuallyDrop`, from the
/// moment it is opened: a load that fails half-way leaves the libraries it opened loaded,
/// which costs nothing since the process could not have used them otherwise either.
pub struct Libraries {
    ane: ManuallyDrop<Library>,
    objc: ManuallyDrop<Library>,
    foundation: ManuallyDrop<Library>,
    core_foundation: ManuallyDrop<Library>,
    io_surface: ManuallyDrop<Library>,
}

/// Where each library is opened from: the system paths, or those of [`OVERRIDE_VAR`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibPaths {
    ane: PathBuf,
    objc: PathBuf,
    foundation: PathBuf,
    core_foundation: PathBuf,
    io_surface: PathBuf,
}

impl LibPaths {
    /// Apple's system paths.
    pub fn system() -> LibPaths {
        LibPaths {
            ane: APPLE_NEURAL_ENGINE_PATH.into(),
            objc: LIBOBJC_PATH.into(),
            foundation: FOUNDATION_PATH.into(),
            core_foundation: CORE_FOUNDATION_PATH.into(),
            io_surface: IOSURFACE_PATH.into(),
        }
    }

    /// The system paths, with [`OVERRIDE_VAR`] applied when it is set.
    pub fn from_env() -> Result<LibPaths, LoadError> {
        match std::env::var_os(OVERRIDE_VAR) {
            None => Ok(LibPaths::system()),
            Some(value) => match value.to_str() {
                Some(value) => LibPaths::with_override(value),
                None => Err(LoadError::BadOverride { detail: "not valid UTF-8".into() }),
            },
        }
    }

    /// The system paths with `spec` (the value of [`OVERRIDE_VAR`]) applied; an empty
    /// `spec` changes nothing.
    pub fn with_override(spec: &str) -> Result<LibPaths, LoadError> {
        let mut paths = LibPaths::system();
        let mut seen = Vec::new();
        let bad = |detail: String| LoadError::BadOverride { detail };
        for entry in spec.split(':').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, path) = entry
                .split_once('=')
                .ok_or_else(|| bad(format!("`{entry}` is not `name=/absolute/path`")))?;
            let lib = Lib::ALL.into_iter().find(|l| l.key() == key.trim()).ok_or_else(|| {
                let known: Vec<_> = Lib::ALL.iter().map(|l| l.key()).collect();
                bad(format!("unknown library `{}` (known: {})", key.trim(), known.join(", ")))
            })?;
            if seen.contains(&lib) {
                return Err(bad(format!("`{}` is given twice", lib.key())));
            }
            seen.push(lib);
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(bad(format!(
                    "the path of `{}` is not absolute: `{}`",
                    lib.key(),
                    path.display()
                )));
            }
            *paths.get_mut(lib) = path.to_path_buf();
        }
        Ok(paths)
    }

    /// Where `lib` is opened from.
    pub fn get(&self, lib: Lib) -> &Path {
        match lib {
            Lib::AppleNeuralEngine => &self.ane,
            Lib::Objc => &self.objc,
            Lib::Foundation => &self.foundation,
            Lib::CoreFoundation => &self.core_foundation,
            Lib::IoSurface => &self.io_surface,
        }
    }

    fn get_mut(&mut self, lib: Lib) -> &mut PathBuf {
        match lib {
            Lib::AppleNeuralEngine => &mut self.ane,
            Lib::Objc => &mut self.objc,
            Lib::Foundation => &mut self.foundation,
            Lib::CoreFoundation => &mut self.core_foundation,
            Lib::IoSurface => &mut self.io_surface,
        }
    }
}

impl Libraries {
    /// Opens the libraries from their system paths, or from those of [`OVERRIDE_VAR`]; the
    /// private framework first so that a machine without it says so (on Linux every one of
    /// them is missing; the framework is the one that matters).
    pub fn open() -> Result<Libraries, LoadError> {
        let paths = LibPaths::from_env()?;
        Ok(Libraries {
            ane: open(Lib::AppleNeuralEngine, &paths)?,
            objc: open(Lib::Objc, &paths)?,
            foundation: open(Lib::Foundation, &paths)?,
            core_foundation: open(Lib::CoreFoundation, &paths)?,
            io_surface: open(Lib::IoSurface, &paths)?,
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

fn open(lib: Lib, paths: &LibPaths) -> Result<ManuallyDrop<Library>, LoadError> {
    // SAFETY: these are Apple's system libraries, whose initialisers are what every macOS
    // process that links them runs, or the absolute paths whoever controls this process's
    // environment chose with OVERRIDE_VAR (as they could with DYLD_INSERT_LIBRARIES). Where
    // a file does not exist dlopen just fails.
    unsafe { Library::new(paths.get(lib)) }
        .map(ManuallyDrop::new)
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

    #[test]
    fn the_override_replaces_only_the_libraries_it_names() {
        assert_eq!(LibPaths::with_override("").unwrap(), LibPaths::system());
        let paths = LibPaths::with_override("objc=/opt/shim.so: IOSurface=/opt/fake.so :").unwrap();
        assert_eq!(paths.get(Lib::Objc), Path::new("/opt/shim.so"));
        assert_eq!(paths.get(Lib::IoSurface), Path::new("/opt/fake.so"));
        assert_eq!(paths.get(Lib::AppleNeuralEngine), Path::new(APPLE_NEURAL_ENGINE_PATH));
        assert_eq!(paths.get(Lib::Foundation), Path::new(FOUNDATION_PATH));
        for lib in Lib::ALL {
            let one = LibPaths::with_override(&format!("{}=/x/{}", lib.key(), lib.key())).unwrap();
            assert_eq!(one.get(lib), Path::new("/x").join(lib.key()));
        }
    }

    #[test]
    fn a_malformed_override_is_refused_whole() {
        let err = |spec: &str| LibPaths::with_override(spec).unwrap_err().to_string();
        assert_eq!(
            err("objc=libobjc.so"),
            "ANEMONE_OBJC_LIBS: the path of `objc` is not absolute: `libobjc.so`"
        );
        assert_eq!(
            err("libobjc=/x.so"),
            "ANEMONE_OBJC_LIBS: unknown library `libobjc` (known: AppleNeuralEngine, objc, \
             Foundation, CoreFoundation, IOSurface)"
        );
        assert_eq!(err("/x.so"), "ANEMONE_OBJC_LIBS: `/x.so` is not `name=/absolute/path`");
        assert_eq!(err("objc=/a.so:objc=/b.so"), "ANEMONE_OBJC_LIBS: `objc` is given twice");
        assert!(!LibPaths::with_override("objc=x").unwrap_err().is_not_found());
    }
}
