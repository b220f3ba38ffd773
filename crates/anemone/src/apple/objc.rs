//! The real Objective-C layer: [`ObjcRuntime`] implements [`AneRuntime`] by sending the
//! messages of REFERENCE.md §1 to the private `_ANE*` classes, with Foundation objects built
//! by small helpers (`ns_data`, `ns_dict`, `ns_int`...), and IOSurfaces created and locked
//! through the IOSurface framework. All of it is resolved at run time (see `loader`).
//!
//! `objc_msgSend` is a trampoline that jumps to the method's implementation with the
//! argument registers untouched, so it must be called through a pointer of the method's
//! exact C signature; arm64 passes variadic arguments differently, so calling it as
//! variadic breaks. Each selector below is therefore paired with its own function-pointer
//! type. The pointers are `extern "C-unwind"`: if the framework throws an Objective-C
//! exception, it unwinds as a foreign exception (which ends the process) instead of being
//! undefined behaviour.
//!
//! Memory management is manual (no ARC): every message is sent inside an autorelease pool
//! (each method pushes its own, releases included), and objects that outlive the call are
//! retained for the caller and released by [`AneRuntime::release`].
//!
//! Loading checks that every class answers every selector sent to it (`SENT`:
//! `+respondsToSelector:` for class methods, `+instancesRespondToSelector:` for instance
//! methods), so that a macOS whose private classes changed is refused at load, naming the
//! first missing method, rather than aborting on an unrecognised selector later.
//!
//! Nobody on this project has run this file on an ANE; it follows the selectors and
//! signatures that public, working projects use (REFERENCE.md §1).

use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt;
use std::path::PathBuf;
use std::ptr::{self, NonNull};

use super::loader::{Lib, Libraries, LoadError};
use super::runtime::{AneRuntime, WeightFile};

/// `id` (an object, or a class: classes are objects too).
type Id = *mut c_void;
/// `SEL`.
type Sel = *const c_void;
/// `IOSurfaceRef`.
type IoSurfaceRef = *mut c_void;

/// `BOOL`: `bool` on arm64, `signed char` on x86_64 macOS.
#[cfg(target_arch = "aarch64")]
type ObjcBool = bool;
#[cfg(not(target_arch = "aarch64"))]
type ObjcBool = i8;

#[cfg(target_arch = "aarch64")]
fn is_yes(b: ObjcBool) -> bool {
    b
}
#[cfg(not(target_arch = "aarch64"))]
fn is_yes(b: ObjcBool) -> bool {
    b != 0
}

/// `kIOSurfaceLockReadOnly`.
const LOCK_READ_ONLY: u32 = 1;
/// Lock options for writing.
const LOCK_WRITE: u32 = 0;

// One function-pointer type per method signature, named after the selectors that use it.
/// `+modelWithMILText:weights:optionsPlist:`
type IdIdIdToId = unsafe extern "C-unwind" fn(Id, Sel, Id, Id, Id) -> Id;
/// `+inMemoryModelWithDescriptor:`, `+objectWithIOSurface:` (an `IOSurfaceRef` is a pointer
/// argument like any object)
type IdToId = unsafe extern "C-unwind" fn(Id, Sel, Id) -> Id;
/// `-hexStringIdentifier`, `-description`, `-retain`
type NoArgToId = unsafe extern "C-unwind" fn(Id, Sel) -> Id;
/// `-release`
type NoArgToVoid = unsafe extern "C-unwind" fn(Id, Sel);
/// `-compiledModelExists`
type NoArgToBool = unsafe extern "C-unwind" fn(Id, Sel) -> ObjcBool;
/// `-compileWithQoS:options:error:`, `-loadWithQoS:options:error:`
type QosOptionsError = unsafe extern "C-unwind" fn(Id, Sel, u32, Id, *mut Id) -> ObjcBool;
/// `-evaluateWithQoS:options:request:error:`
type QosOptionsRequestError =
    unsafe extern "C-unwind" fn(Id, Sel, u32, Id, Id, *mut Id) -> ObjcBool;
/// `-unloadWithQoS:error:`
type QosError = unsafe extern "C-unwind" fn(Id, Sel, u32, *mut Id) -> ObjcBool;
/// `+requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:perfStats:procedureIndex:`
type SevenIdsToId = unsafe extern "C-unwind" fn(Id, Sel, Id, Id, Id, Id, Id, Id, Id) -> Id;
/// `+dataWithBytes:length:` (`NSUInteger` is `usize`)
type BytesLengthToId = unsafe extern "C-unwind" fn(Id, Sel, *const c_void, usize) -> Id;
/// `+stringWithUTF8String:`
type CStrToId = unsafe extern "C-unwind" fn(Id, Sel, *const c_char) -> Id;
/// `-UTF8String`
type NoArgToCStr = unsafe extern "C-unwind" fn(Id, Sel) -> *const c_char;
/// `+numberWithUnsignedLongLong:`
type U64ToId = unsafe extern "C-unwind" fn(Id, Sel, u64) -> Id;
/// `+numberWithInt:`
type I32ToId = unsafe extern "C-unwind" fn(Id, Sel, i32) -> Id;
/// `+dictionaryWithObjects:forKeys:count:`
type ObjectsKeysCountToId = unsafe extern "C-unwind" fn(Id, Sel, *const Id, *const Id, usize) -> Id;
/// `+arrayWithObjects:count:`
type ObjectsCountToId = unsafe extern "C-unwind" fn(Id, Sel, *const Id, usize) -> Id;
/// `+respondsToSelector:`, `+instancesRespondToSelector:`
type SelToBool = unsafe extern "C-unwind" fn(Id, Sel, Sel) -> ObjcBool;

/// A method's function-pointer type, with the number of arguments after `self` and `_cmd`.
trait Signature: Copy {
    const ARGS: usize;
}

// The count comes from the function type itself, so a pointer type with one argument too
// many or too few for its selector does not compile.
macro_rules! signatures {
    ($($n:expr => ($($arg:ident),*)),* $(,)?) => {
        $(
            impl<Ret, $($arg),*> Signature
                for unsafe extern "C-unwind" fn(Id, Sel $(, $arg)*) -> Ret
            {
                const ARGS: usize = $n;
            }
        )*
    };
}

signatures! {
    0 => (),
    1 => (A),
    2 => (A, B),
    3 => (A, B, C),
    4 => (A, B, C, D),
    5 => (A, B, C, D, E),
    6 => (A, B, C, D, E, F),
    7 => (A, B, C, D, E, F, G),
}

/// The longest selector, kept out of the table below for width.
const REQUEST_WITH_INPUTS: &CStr =
    c"requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:perfStats:procedureIndex:";

/// The number of arguments a selector takes: one per colon.
const fn selector_args(name: &CStr) -> usize {
    let bytes = name.to_bytes();
    let (mut i, mut n) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b':' {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Whether a method is sent to the class object (`+`) or to instances of the class (`-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Class,
    Instance,
}

/// A method the backend sends: the class that must answer it, and how.
#[derive(Clone, Copy, Debug)]
struct Method {
    /// The library the class comes from, named when the method is missing.
    lib: Lib,
    class: &'static CStr,
    side: Side,
    selector: &'static CStr,
}

impl Method {
    const fn class(lib: Lib, class: &'static CStr, selector: &'static CStr) -> Method {
        Method { lib, class, side: Side::Class, selector }
    }

    const fn instance(lib: Lib, class: &'static CStr, selector: &'static CStr) -> Method {
        Method { lib, class, side: Side::Instance, selector }
    }
}

/// `+[Class selector]` or `-[Class selector]`, as Objective-C writes methods.
impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.side {
            Side::Class => '+',
            Side::Instance => '-',
        };
        let (class, selector) = (self.class.to_string_lossy(), self.selector.to_string_lossy());
        write!(f, "{sign}[{class} {selector}]")
    }
}

/// Every method [`ObjcRuntime`] sends, checked at load so that a macOS whose private
/// classes changed is refused with the method's name instead of aborting on the first
/// unrecognised selector (an Objective-C exception ends the process). `sel!` refuses to
/// compile a selector that is not listed here.
const SENT: &[Method] = {
    use Lib::{AppleNeuralEngine as Ane, Foundation};
    &[
        Method::class(
            Ane,
            c"_ANEInMemoryModelDescriptor",
            c"modelWithMILText:weights:optionsPlist:",
        ),
        Method::class(Ane, c"_ANEInMemoryModel", c"inMemoryModelWithDescriptor:"),
        Method::instance(Ane, c"_ANEInMemoryModel", c"hexStringIdentifier"),
        Method::instance(Ane, c"_ANEInMemoryModel", c"compiledModelExists"),
        Method::instance(Ane, c"_ANEInMemoryModel", c"compileWithQoS:options:error:"),
        Method::instance(Ane, c"_ANEInMemoryModel", c"loadWithQoS:options:error:"),
        Method::instance(Ane, c"_ANEInMemoryModel", c"evaluateWithQoS:options:request:error:"),
        Method::instance(Ane, c"_ANEInMemoryModel", c"unloadWithQoS:error:"),
        Method::class(Ane, c"_ANEIOSurfaceObject", c"objectWithIOSurface:"),
        Method::class(Ane, c"_ANERequest", REQUEST_WITH_INPUTS),
        Method::class(Foundation, c"NSData", c"dataWithBytes:length:"),
        Method::class(Foundation, c"NSString", c"stringWithUTF8String:"),
        Method::instance(Foundation, c"NSString", c"UTF8String"),
        Method::class(Foundation, c"NSNumber", c"numberWithUnsignedLongLong:"),
        Method::class(Foundation, c"NSNumber", c"numberWithInt:"),
        Method::class(Foundation, c"NSDictionary", c"dictionaryWithObjects:forKeys:count:"),
        Method::class(Foundation, c"NSArray", c"arrayWithObjects:count:"),
        // Sent to the NSError a failing call leaves in its out-parameter.
        Method::instance(Foundation, c"NSError", c"description"),
        // Sent to every object the backend keeps (all of them NSObjects).
        Method::instance(Lib::Objc, c"NSObject", c"retain"),
        Method::instance(Lib::Objc, c"NSObject", c"release"),
    ]
};

/// Whether `selector` is in [`SENT`] (at compile time, for `sel!`).
const fn is_listed(selector: &CStr) -> bool {
    let mut i = 0;
    while i < SENT.len() {
        if bytes_equal(SENT[i].selector.to_bytes(), selector.to_bytes()) {
            return true;
        }
        i += 1;
    }
    false
}

const fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The first of `methods` that `responds` says the framework lacks, as the error that
/// refuses the runtime. `responds` is the only part that talks to Objective-C.
fn first_missing(
    methods: &[Method],
    mut responds: impl FnMut(&Method) -> Result<bool, LoadError>,
) -> Result<(), LoadError> {
    for m in methods {
        if !responds(m)? {
            // The loader's error for anything a library lacks; it names the library and
            // the method as `-[Class selector]`.
            return Err(LoadError::MissingMethod { lib: m.lib, method: m.to_string() });
        }
    }
    Ok(())
}

/// A selector with `objc_msgSend` cast to the exact signature of its method.
#[derive(Clone, Copy)]
struct Msg<F> {
    sel: Sel,
    send: F,
}

/// What a retained object is, so that a model is never sent a request's messages (an
/// unrecognised selector would raise an Objective-C exception).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Descriptor,
    Model,
    SurfaceObject,
    Request,
}

/// An Objective-C object retained once for its holder. Only [`ObjcRuntime`] makes these,
/// from non-nil objects it has just retained, and they cannot be copied: a live
/// `ObjcObject` always names a live object.
pub struct ObjcObject {
    ptr: NonNull<c_void>,
    kind: Kind,
}

impl fmt::Debug for ObjcObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{:p}", self.kind, self.ptr)
    }
}

// SAFETY: retain and release are atomic in the Objective-C runtime, so the object may be
// released from any thread; the backend sends all other messages to one model from one
// thread at a time (its state sits behind a mutex).
unsafe impl Send for ObjcObject {}

/// An IOSurface this process created (`IOSurfaceCreate` follows the create rule: the holder
/// owns one reference, given back by `CFRelease`).
pub struct IoSurfaceHandle(NonNull<c_void>);

impl fmt::Debug for IoSurfaceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IOSurface@{:p}", self.0)
    }
}

// SAFETY: IOSurfaces are shared between processes by design; their reference count is
// atomic, and CPU access goes through IOSurfaceLock/IOSurfaceUnlock.
unsafe impl Send for IoSurfaceHandle {}

/// The `CFStringRef` keys of the `IOSurfaceCreate` properties.
struct SurfaceKeys {
    width: Id,
    height: Id,
    bytes_per_element: Id,
    bytes_per_row: Id,
    alloc_size: Id,
    pixel_format: Id,
}

/// The frameworks, loaded, with every class, selector and function the backend uses.
pub struct ObjcRuntime {
    // Open for as long as the runtime lives: every pointer below points into them.
    _libraries: Libraries,

    pool_push: unsafe extern "C-unwind" fn() -> *mut c_void,
    pool_pop: unsafe extern "C-unwind" fn(*mut c_void),
    ns_temporary_directory: unsafe extern "C-unwind" fn() -> Id,
    io_surface_create: unsafe extern "C-unwind" fn(Id) -> IoSurfaceRef,
    io_surface_lock: unsafe extern "C-unwind" fn(IoSurfaceRef, u32, *mut u32) -> i32,
    io_surface_unlock: unsafe extern "C-unwind" fn(IoSurfaceRef, u32, *mut u32) -> i32,
    io_surface_get_base_address: unsafe extern "C-unwind" fn(IoSurfaceRef) -> *mut c_void,
    io_surface_get_alloc_size: unsafe extern "C-unwind" fn(IoSurfaceRef) -> usize,
    cf_release: unsafe extern "C-unwind" fn(*const c_void),
    surface_keys: SurfaceKeys,

    descriptor_class: Id,
    model_class: Id,
    request_class: Id,
    surface_object_class: Id,
    ns_data_class: Id,
    ns_string_class: Id,
    ns_number_class: Id,
    ns_dictionary_class: Id,
    ns_array_class: Id,

    model_with_mil_text: Msg<IdIdIdToId>,
    in_memory_model_with_descriptor: Msg<IdToId>,
    hex_string_identifier: Msg<NoArgToId>,
    compiled_model_exists: Msg<NoArgToBool>,
    compile_with_qos: Msg<QosOptionsError>,
    load_with_qos: Msg<QosOptionsError>,
    evaluate_with_qos: Msg<QosOptionsRequestError>,
    unload_with_qos: Msg<QosError>,
    object_with_io_surface: Msg<IdToId>,
    request_with_inputs: Msg<SevenIdsToId>,
    data_with_bytes: Msg<BytesLengthToId>,
    string_with_utf8_string: Msg<CStrToId>,
    utf8_string: Msg<NoArgToCStr>,
    number_with_unsigned_long_long: Msg<U64ToId>,
    number_with_int: Msg<I32ToId>,
    dictionary_with_objects: Msg<ObjectsKeysCountToId>,
    array_with_objects: Msg<ObjectsCountToId>,
    description: Msg<NoArgToId>,
    retain: Msg<NoArgToId>,
    release: Msg<NoArgToVoid>,
    responds_to_selector: Msg<SelToBool>,
    instances_respond_to_selector: Msg<SelToBool>,
}

impl fmt::Debug for ObjcRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObjcRuntime(AppleNeuralEngine.framework)")
    }
}

// SAFETY: after loading, the struct is immutable: function pointers, class objects and
// selectors are process-wide registrations that never move or change, and the CFString
// keys are immortal constants. Every call it makes is safe from any thread (autorelease
// pools are per thread, pushed and popped within one call).
unsafe impl Send for ObjcRuntime {}
// SAFETY: as above.
unsafe impl Sync for ObjcRuntime {}

/// Casts a C function's address to its function-pointer type.
macro_rules! c_fn {
    ($libs:expr, $lib:expr, $name:literal as $ty:ty) => {{
        let address = $libs.symbol($lib, $name)?;
        // SAFETY: `$ty` is the C declaration of `$name` in Apple's headers, and a function
        // pointer has the size of a data pointer on every Apple platform.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(address.as_ptr()) }
    }};
}

impl ObjcRuntime {
    /// Loads the frameworks and resolves everything. On Linux (or any machine without the
    /// framework) this fails with "AppleNeuralEngine.framework not found".
    pub fn load() -> Result<ObjcRuntime, LoadError> {
        let libs = Libraries::open()?;
        let msg_send = libs.symbol(Lib::Objc, c"objc_msgSend")?.as_ptr();
        let sel_register_name = c_fn!(
            libs,
            Lib::Objc,
            c"sel_registerName" as unsafe extern "C-unwind" fn(*const c_char) -> Sel
        );
        let get_class = c_fn!(
            libs,
            Lib::Objc,
            c"objc_getClass" as unsafe extern "C-unwind" fn(*const c_char) -> Id
        );

        let class = |name: &CStr| -> Result<Id, LoadError> {
            // SAFETY: objc_getClass takes a NUL-terminated name and returns nil if unknown.
            let class = unsafe { get_class(name.as_ptr()) };
            if class.is_null() {
                Err(LoadError::MissingClass { class: name.to_string_lossy().into_owned() })
            } else {
                Ok(class)
            }
        };
        fn msg<F: Signature>(
            msg_send: *mut c_void,
            register: unsafe extern "C-unwind" fn(*const c_char) -> Sel,
            name: &CStr,
        ) -> Msg<F> {
            const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
            // SAFETY: sel_registerName takes a NUL-terminated name and always returns the
            // selector (registering it if new).
            let sel = unsafe { register(name.as_ptr()) };
            // SAFETY: every `F` this is called with is an `extern "C-unwind" fn` type spelled
            // out above with the exact C signature of the method `name`, which is how
            // objc_msgSend must be called; the sizes are equal (checked above).
            let send = unsafe { std::mem::transmute_copy::<*mut c_void, F>(&msg_send) };
            Msg { sel, send }
        }
        // Each selector is written next to its signature type, and the number of arguments
        // is checked against the selector's colons while compiling, as is its presence in
        // the list of methods checked at load.
        macro_rules! sel {
            ($name:tt as $ty:ty) => {{
                const {
                    assert!(
                        selector_args($name) == <$ty as Signature>::ARGS,
                        "the signature does not take the selector's arguments"
                    );
                    assert!(is_listed($name), "the selector is missing from SENT");
                };
                msg::<$ty>(msg_send, sel_register_name, $name)
            }};
        }
        let key = |name: &CStr| -> Result<Id, LoadError> {
            let address = libs.symbol(Lib::IoSurface, name)?;
            // SAFETY: the symbol is a `const CFStringRef` variable; reading it gives the key.
            let value = unsafe { *(address.as_ptr() as *const Id) };
            if value.is_null() {
                Err(LoadError::MissingSymbol {
                    lib: Lib::IoSurface,
                    symbol: name.to_string_lossy().into_owned(),
                })
            } else {
                Ok(value)
            }
        };

        let runtime = ObjcRuntime {
            pool_push: c_fn!(
                libs,
                Lib::Objc,
                c"objc_autoreleasePoolPush" as unsafe extern "C-unwind" fn() -> *mut c_void
            ),
            pool_pop: c_fn!(
                libs,
                Lib::Objc,
                c"objc_autoreleasePoolPop" as unsafe extern "C-unwind" fn(*mut c_void)
            ),
            ns_temporary_directory: c_fn!(
                libs,
                Lib::Foundation,
                c"NSTemporaryDirectory" as unsafe extern "C-unwind" fn() -> Id
            ),
            io_surface_create: c_fn!(
                libs,
                Lib::IoSurface,
                c"IOSurfaceCreate" as unsafe extern "C-unwind" fn(Id) -> IoSurfaceRef
            ),
            io_surface_lock: c_fn!(
                libs,
                Lib::IoSurface,
                c"IOSurfaceLock" as unsafe extern "C-unwind" fn(IoSurfaceRef, u32, *mut u32) -> i32
            ),
            io_surface_unlock: c_fn!(
                libs,
                Lib::IoSurface,
                c"IOSurfaceUnlock"
                    as unsafe extern "C-unwind" fn(IoSurfaceRef, u32, *mut u32) -> i32
            ),
            io_surface_get_base_address: c_fn!(
                libs,
                Lib::IoSurface,
                c"IOSurfaceGetBaseAddress"
                    as unsafe extern "C-unwind" fn(IoSurfaceRef) -> *mut c_void
            ),
            io_surface_get_alloc_size: c_fn!(
                libs,
                Lib::IoSurface,
                c"IOSurfaceGetAllocSize" as unsafe extern "C-unwind" fn(IoSurfaceRef) -> usize
            ),
            cf_release: c_fn!(
                libs,
                Lib::CoreFoundation,
                c"CFRelease" as unsafe extern "C-unwind" fn(*const c_void)
            ),
            surface_keys: SurfaceKeys {
                width: key(c"kIOSurfaceWidth")?,
                height: key(c"kIOSurfaceHeight")?,
                bytes_per_element: key(c"kIOSurfaceBytesPerElement")?,
                bytes_per_row: key(c"kIOSurfaceBytesPerRow")?,
                alloc_size: key(c"kIOSurfaceAllocSize")?,
                pixel_format: key(c"kIOSurfacePixelFormat")?,
            },

            descriptor_class: class(c"_ANEInMemoryModelDescriptor")?,
            model_class: class(c"_ANEInMemoryModel")?,
            request_class: class(c"_ANERequest")?,
            surface_object_class: class(c"_ANEIOSurfaceObject")?,
            ns_data_class: class(c"NSData")?,
            ns_string_class: class(c"NSString")?,
            ns_number_class: class(c"NSNumber")?,
            ns_dictionary_class: class(c"NSDictionary")?,
            ns_array_class: class(c"NSArray")?,

            model_with_mil_text: sel!(c"modelWithMILText:weights:optionsPlist:" as IdIdIdToId),
            in_memory_model_with_descriptor: sel!(c"inMemoryModelWithDescriptor:" as IdToId),
            hex_string_identifier: sel!(c"hexStringIdentifier" as NoArgToId),
            compiled_model_exists: sel!(c"compiledModelExists" as NoArgToBool),
            compile_with_qos: sel!(c"compileWithQoS:options:error:" as QosOptionsError),
            load_with_qos: sel!(c"loadWithQoS:options:error:" as QosOptionsError),
            evaluate_with_qos: sel!(
                c"evaluateWithQoS:options:request:error:" as QosOptionsRequestError
            ),
            unload_with_qos: sel!(c"unloadWithQoS:error:" as QosError),
            object_with_io_surface: sel!(c"objectWithIOSurface:" as IdToId),
            request_with_inputs: sel!(REQUEST_WITH_INPUTS as SevenIdsToId),
            data_with_bytes: sel!(c"dataWithBytes:length:" as BytesLengthToId),
            string_with_utf8_string: sel!(c"stringWithUTF8String:" as CStrToId),
            utf8_string: sel!(c"UTF8String" as NoArgToCStr),
            number_with_unsigned_long_long: sel!(c"numberWithUnsignedLongLong:" as U64ToId),
            number_with_int: sel!(c"numberWithInt:" as I32ToId),
            dictionary_with_objects: sel!(
                c"dictionaryWithObjects:forKeys:count:" as ObjectsKeysCountToId
            ),
            array_with_objects: sel!(c"arrayWithObjects:count:" as ObjectsCountToId),
            description: sel!(c"description" as NoArgToId),
            retain: sel!(c"retain" as NoArgToId),
            release: sel!(c"release" as NoArgToVoid),
            // The two questions the check below asks; NSObject answers them for every class,
            // so they are not themselves in SENT.
            responds_to_selector: msg(msg_send, sel_register_name, c"respondsToSelector:"),
            instances_respond_to_selector: msg(
                msg_send,
                sel_register_name,
                c"instancesRespondToSelector:",
            ),
            _libraries: libs,
        };
        {
            let _pool = runtime.pool();
            first_missing(SENT, |m| {
                let class = class(m.class)?;
                // SAFETY: sel_registerName takes a NUL-terminated name and returns its
                // selector (registering it if new).
                let sel = unsafe { sel_register_name(m.selector.as_ptr()) };
                Ok(runtime.responds(class, m.side, sel))
            })?;
        }
        Ok(runtime)
    }

    /// Whether `class` (a class object) answers `sel` itself (`+respondsToSelector:`), or
    /// whether its instances do (`+instancesRespondToSelector:`).
    fn responds(&self, class: Id, side: Side, sel: Sel) -> bool {
        let m = match side {
            Side::Class => self.responds_to_selector,
            Side::Instance => self.instances_respond_to_selector,
        };
        // SAFETY: `class` is a class object from objc_getClass, and both methods are
        // NSObject's, taking a SEL and returning a BOOL; the caller holds a pool for
        // whatever `+initialize` autoreleases on this first message to the class.
        is_yes(unsafe { (m.send)(class, m.sel, sel) })
    }

    /// An autorelease pool for the rest of the calling scope.
    fn pool(&self) -> Pool<'_> {
        // SAFETY: objc_autoreleasePoolPush takes nothing and returns a token for the pop.
        Pool { runtime: self, token: unsafe { (self.pool_push)() } }
    }

    /// The object behind `handle`, if it is of the expected kind.
    fn expect(handle: &ObjcObject, kind: Kind) -> Result<Id, String> {
        if handle.kind == kind {
            Ok(handle.ptr.as_ptr())
        } else {
            Err(format!("expected a {kind:?} object, got a {:?}", handle.kind))
        }
    }

    /// Keeps an autoreleased result past the current pool.
    ///
    /// # Safety
    /// `object` is nil or a live object of `kind`, inside an autorelease pool.
    unsafe fn adopt(&self, object: Id, kind: Kind, call: &str) -> Result<ObjcObject, String> {
        let ptr = NonNull::new(object).ok_or_else(|| format!("{call} returned nil"))?;
        // SAFETY: `object` is live (contract); retain returns it with one more reference.
        unsafe { (self.retain.send)(ptr.as_ptr(), self.retain.sel) };
        Ok(ObjcObject { ptr, kind })
    }

    /// `[NSData dataWithBytes:length:]` (copies the bytes).
    ///
    /// # Safety
    /// Inside an autorelease pool.
    unsafe fn ns_data(&self, bytes: &[u8]) -> Id {
        let m = self.data_with_bytes;
        // SAFETY: `bytes` is valid for its length; NSData copies it before returning.
        unsafe { (m.send)(self.ns_data_class, m.sel, bytes.as_ptr().cast(), bytes.len()) }
    }

    /// `[NSString stringWithUTF8String:]`.
    ///
    /// # Safety
    /// Inside an autorelease pool.
    unsafe fn ns_string(&self, s: &str) -> Result<Id, String> {
        let c = CString::new(s).map_err(|_| format!("`{s}` contains a NUL character"))?;
        let m = self.string_with_utf8_string;
        // SAFETY: `c` is a NUL-terminated UTF-8 string that NSString copies.
        Ok(unsafe { (m.send)(self.ns_string_class, m.sel, c.as_ptr()) })
    }

    /// `@(n)` for an `int` literal, as the seed writes `@0` and `@1`.
    ///
    /// # Safety
    /// Inside an autorelease pool.
    unsafe fn ns_int(&self, n: u32) -> Result<Id, String> {
        let n = i32::try_from(n).map_err(|_| format!("{n} does not fit an NSNumber int"))?;
        let m = self.number_with_int;
        // SAFETY: plain value argument.
        Ok(unsafe { (m.send)(self.ns_number_class, m.sel, n) })
    }

    /// `@(n)` for a byte count.
    ///
    /// # Safety
    /// Inside an autorelease pool.
    unsafe fn ns_u64(&self, n: u64) -> Id {
        let m = self.number_with_unsigned_long_long;
        // SAFETY: plain value argument.
        unsafe { (m.send)(self.ns_number_class, m.sel, n) }
    }

    /// `[NSDictionary dictionaryWithObjects:forKeys:count:]`; `@{}` when `pairs` is empty.
    ///
    /// # Safety
    /// Inside an autorelease pool; every key and value is a live object.
    unsafe fn ns_dict(&self, pairs: &[(Id, Id)]) -> Id {
        let keys: Vec<Id> = pairs.iter().map(|p| p.0).collect();
        let values: Vec<Id> = pairs.iter().map(|p| p.1).collect();
        let m = self.dictionary_with_objects;
        // SAFETY: both arrays hold `pairs.len()` live objects (contract); the dictionary
        // retains them. Empty vectors give dangling but non-null pointers, read 0 times.
        unsafe {
            (m.send)(self.ns_dictionary_class, m.sel, values.as_ptr(), keys.as_ptr(), keys.len())
        }
    }

    /// `[NSArray arrayWithObjects:count:]`.
    ///
    /// # Safety
    /// Inside an autorelease pool; every item is a live object.
    unsafe fn ns_array(&self, items: &[Id]) -> Id {
        let m = self.array_with_objects;
        // SAFETY: `items` holds `items.len()` live objects (contract); the array retains them.
        unsafe { (m.send)(self.ns_array_class, m.sel, items.as_ptr(), items.len()) }
    }

    /// A Rust copy of an NSString (`-UTF8String`), or None for nil.
    ///
    /// # Safety
    /// Inside an autorelease pool; `s` is nil or a live NSString.
    unsafe fn string_of(&self, s: Id) -> Option<String> {
        if s.is_null() {
            return None;
        }
        let m = self.utf8_string;
        // SAFETY: `s` is a live NSString; UTF8String returns a NUL-terminated buffer that
        // lives as long as the current pool, and it is copied before the pool pops.
        unsafe {
            let c = (m.send)(s, m.sel);
            (!c.is_null()).then(|| CStr::from_ptr(c).to_string_lossy().into_owned())
        }
    }

    /// The NSError's description, or a sentence when the call gave none.
    ///
    /// # Safety
    /// Inside an autorelease pool; `error` is nil or a live NSError.
    unsafe fn error_text(&self, error: Id, call: &str) -> String {
        if error.is_null() {
            return format!("{call} returned NO without an NSError");
        }
        let m = self.description;
        // SAFETY: `error` is live; -description returns an autoreleased NSString.
        let text = unsafe { self.string_of((m.send)(error, m.sel)) };
        text.unwrap_or_else(|| format!("{call} returned NO; its NSError has no description"))
    }

    /// Sends one of the `...WithQoS:options:error:` messages and turns NO into the error text.
    fn qos_options_error(
        &self,
        model: &ObjcObject,
        m: Msg<QosOptionsError>,
        qos: u32,
        call: &str,
    ) -> Result<(), String> {
        let model = Self::expect(model, Kind::Model)?;
        let _pool = self.pool();
        // SAFETY: `model` is a live _ANEInMemoryModel (an ObjcObject of kind Model); the
        // options are an empty dictionary as in every working project, and `error` is a
        // valid out-pointer that the method may fill with an autoreleased NSError, read
        // before the pool pops.
        unsafe {
            let options = self.ns_dict(&[]);
            let mut error: Id = ptr::null_mut();
            if is_yes((m.send)(model, m.sel, qos, options, &mut error)) {
                Ok(())
            } else {
                Err(self.error_text(error, call))
            }
        }
    }

    /// Runs `f` over a locked surface, unlocking on every path out (a panic included).
    fn with_locked(
        &self,
        surface: &IoSurfaceHandle,
        options: u32,
        f: &mut dyn FnMut(*mut u8, usize),
    ) -> Result<(), String> {
        let s = surface.0.as_ptr();
        // SAFETY: `s` is a live IOSurface this process created; the seed pointer may be null.
        let status = unsafe { (self.io_surface_lock)(s, options, ptr::null_mut()) };
        if status != 0 {
            return Err(format!("IOSurfaceLock failed (kern_return_t {status:#x})"));
        }
        let _unlock = Unlock { runtime: self, surface: s, options };
        // SAFETY: the surface is live and locked.
        let (base, len) =
            unsafe { ((self.io_surface_get_base_address)(s), (self.io_surface_get_alloc_size)(s)) };
        if base.is_null() {
            return Err("IOSurfaceGetBaseAddress returned NULL".into());
        }
        f(base.cast(), len);
        Ok(())
    }
}

/// Pops an autorelease pool when dropped.
struct Pool<'a> {
    runtime: &'a ObjcRuntime,
    token: *mut c_void,
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        // SAFETY: the token came from the matching push on this thread, and pools nest:
        // every pool pushed after it has been popped by its own guard already.
        unsafe { (self.runtime.pool_pop)(self.token) }
    }
}

/// Unlocks a surface when dropped.
struct Unlock<'a> {
    runtime: &'a ObjcRuntime,
    surface: IoSurfaceRef,
    options: u32,
}

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        // SAFETY: the surface is live and was locked with these options by this thread.
        unsafe { (self.runtime.io_surface_unlock)(self.surface, self.options, ptr::null_mut()) };
    }
}

impl AneRuntime for ObjcRuntime {
    type Object = ObjcObject;
    type Surface = IoSurfaceHandle;

    fn create_descriptor(
        &self,
        mil: &[u8],
        weights: &[WeightFile<'_>],
    ) -> Result<ObjcObject, String> {
        let _pool = self.pool();
        // SAFETY: inside the pool; every object passed on was just created by Foundation and
        // is live until the pool pops, and the descriptor is retained before that.
        unsafe {
            let mil = self.ns_data(mil);
            let offset_key = self.ns_string("offset")?;
            let data_key = self.ns_string("data")?;
            let zero = self.ns_int(0)?;
            let mut entries = Vec::with_capacity(weights.len());
            for w in weights {
                let value = self.ns_dict(&[(offset_key, zero), (data_key, self.ns_data(w.bytes))]);
                entries.push((self.ns_string(w.blob_path)?, value));
            }
            // Never nil: the framework expects a dictionary, empty when there are no weights.
            let weights = self.ns_dict(&entries);
            let m = self.model_with_mil_text;
            let descriptor = (m.send)(self.descriptor_class, m.sel, mil, weights, ptr::null_mut());
            self.adopt(
                descriptor,
                Kind::Descriptor,
                "+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]",
            )
        }
    }

    fn in_memory_model(&self, descriptor: &ObjcObject) -> Result<ObjcObject, String> {
        let descriptor = Self::expect(descriptor, Kind::Descriptor)?;
        let _pool = self.pool();
        let m = self.in_memory_model_with_descriptor;
        // SAFETY: `descriptor` is a live _ANEInMemoryModelDescriptor; the result is retained
        // before the pool pops.
        unsafe {
            let model = (m.send)(self.model_class, m.sel, descriptor);
            self.adopt(model, Kind::Model, "+[_ANEInMemoryModel inMemoryModelWithDescriptor:]")
        }
    }

    fn hex_identifier(&self, model: &ObjcObject) -> Result<String, String> {
        let model = Self::expect(model, Kind::Model)?;
        let _pool = self.pool();
        let m = self.hex_string_identifier;
        // SAFETY: `model` is a live _ANEInMemoryModel; the NSString is copied inside the pool.
        unsafe { self.string_of((m.send)(model, m.sel)) }
            .ok_or_else(|| "-[_ANEInMemoryModel hexStringIdentifier] returned nil".to_string())
    }

    fn temp_dir(&self) -> PathBuf {
        let _pool = self.pool();
        // SAFETY: NSTemporaryDirectory takes nothing and returns an autoreleased NSString,
        // copied inside the pool.
        unsafe { self.string_of((self.ns_temporary_directory)()) }
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
    }

    fn compiled_model_exists(&self, model: &ObjcObject) -> Result<bool, String> {
        let model = Self::expect(model, Kind::Model)?;
        let _pool = self.pool();
        let m = self.compiled_model_exists;
        // SAFETY: `model` is a live _ANEInMemoryModel; the method returns a BOOL (and may
        // autorelease what it looks up, hence the pool).
        Ok(is_yes(unsafe { (m.send)(model, m.sel) }))
    }

    fn compile(&self, model: &ObjcObject, qos: u32) -> Result<(), String> {
        self.qos_options_error(model, self.compile_with_qos, qos, "compileWithQoS:options:error:")
    }

    fn load(&self, model: &ObjcObject, qos: u32) -> Result<(), String> {
        self.qos_options_error(model, self.load_with_qos, qos, "loadWithQoS:options:error:")
    }

    fn unload(&self, model: &ObjcObject, qos: u32) -> Result<(), String> {
        let model = Self::expect(model, Kind::Model)?;
        let _pool = self.pool();
        let m = self.unload_with_qos;
        // SAFETY: `model` is a live _ANEInMemoryModel; `error` is a valid out-pointer read
        // before the pool pops.
        unsafe {
            let mut error: Id = ptr::null_mut();
            if is_yes((m.send)(model, m.sel, qos, &mut error)) {
                Ok(())
            } else {
                Err(self.error_text(error, "unloadWithQoS:error:"))
            }
        }
    }

    fn evaluate(&self, model: &ObjcObject, request: &ObjcObject, qos: u32) -> Result<(), String> {
        let model = Self::expect(model, Kind::Model)?;
        let request = Self::expect(request, Kind::Request)?;
        let _pool = self.pool();
        let m = self.evaluate_with_qos;
        // SAFETY: `model` and `request` are live objects of the right classes; `error` is a
        // valid out-pointer read before the pool pops.
        unsafe {
            let options = self.ns_dict(&[]);
            let mut error: Id = ptr::null_mut();
            if is_yes((m.send)(model, m.sel, qos, options, request, &mut error)) {
                Ok(())
            } else {
                Err(self.error_text(error, "evaluateWithQoS:options:request:error:"))
            }
        }
    }

    fn make_surface(&self, bytes: usize) -> Result<IoSurfaceHandle, String> {
        let _pool = self.pool();
        let k = &self.surface_keys;
        // SAFETY: the keys are the framework's CFString constants (toll-free bridged to
        // NSString) and the values fresh NSNumbers, so the NSDictionary is a valid
        // CFDictionaryRef for IOSurfaceCreate, which copies what it needs.
        let surface = unsafe {
            let n = self.ns_u64(bytes as u64);
            let one = self.ns_int(1)?;
            let zero = self.ns_int(0)?;
            let properties = self.ns_dict(&[
                (k.width, n),
                (k.height, one),
                (k.bytes_per_element, one),
                (k.bytes_per_row, n),
                (k.alloc_size, n),
                (k.pixel_format, zero),
            ]);
            (self.io_surface_create)(properties)
        };
        NonNull::new(surface)
            .map(IoSurfaceHandle)
            .ok_or_else(|| format!("IOSurfaceCreate returned NULL for {bytes} bytes"))
    }

    fn surface_alloc_size(&self, surface: &IoSurfaceHandle) -> usize {
        // SAFETY: the surface is live.
        unsafe { (self.io_surface_get_alloc_size)(surface.0.as_ptr()) }
    }

    fn read_surface(
        &self,
        surface: &IoSurfaceHandle,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        self.with_locked(surface, LOCK_READ_ONLY, &mut |base, len| {
            // SAFETY: while locked, the base address is valid for the allocation size, and
            // no Rust reference to these bytes exists elsewhere (surfaces are only reached
            // through this lock).
            f(unsafe { std::slice::from_raw_parts(base, len) })
        })
    }

    fn write_surface(
        &self,
        surface: &IoSurfaceHandle,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), String> {
        self.with_locked(surface, LOCK_WRITE, &mut |base, len| {
            // SAFETY: as in `read_surface`; the caller holds the surface mutably (the
            // `SurfaceMemory::write` contract), so this is the only view of the bytes.
            f(unsafe { std::slice::from_raw_parts_mut(base, len) })
        })
    }

    fn wrap_surface(&self, surface: &IoSurfaceHandle) -> Result<ObjcObject, String> {
        let _pool = self.pool();
        let m = self.object_with_io_surface;
        // SAFETY: the surface is live; the _ANEIOSurfaceObject is retained before the pool
        // pops.
        unsafe {
            let object = (m.send)(self.surface_object_class, m.sel, surface.0.as_ptr());
            self.adopt(object, Kind::SurfaceObject, "+[_ANEIOSurfaceObject objectWithIOSurface:]")
        }
    }

    fn make_request(
        &self,
        inputs: &[&ObjcObject],
        input_indices: &[u32],
        outputs: &[&ObjcObject],
        output_indices: &[u32],
        procedure_index: u32,
    ) -> Result<ObjcObject, String> {
        let objects = |list: &[&ObjcObject]| {
            list.iter().map(|o| Self::expect(o, Kind::SurfaceObject)).collect::<Result<Vec<_>, _>>()
        };
        let (inputs, outputs) = (objects(inputs)?, objects(outputs)?);
        let _pool = self.pool();
        // SAFETY: every element is a live _ANEIOSurfaceObject or a fresh NSNumber; the
        // request is retained before the pool pops. weightsBuffer and perfStats are nil as
        // in every working project.
        unsafe {
            let numbers = |indices: &[u32]| -> Result<Vec<Id>, String> {
                indices.iter().map(|&i| self.ns_int(i)).collect()
            };
            let input_indices = self.ns_array(&numbers(input_indices)?);
            let output_indices = self.ns_array(&numbers(output_indices)?);
            let m = self.request_with_inputs;
            let request = (m.send)(
                self.request_class,
                m.sel,
                self.ns_array(&inputs),
                input_indices,
                self.ns_array(&outputs),
                output_indices,
                ptr::null_mut(),
                ptr::null_mut(),
                self.ns_int(procedure_index)?,
            );
            self.adopt(
                request,
                Kind::Request,
                "+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:\
                 weightsBuffer:perfStats:procedureIndex:]",
            )
        }
    }

    fn release(&self, object: ObjcObject) {
        // A last release runs -dealloc, which may autorelease.
        let _pool = self.pool();
        let m = self.release;
        // SAFETY: the handle owns one reference (it was retained by `adopt`) and is consumed
        // here, so it is released exactly once.
        unsafe { (m.send)(object.ptr.as_ptr(), m.sel) }
    }

    fn release_surface(&self, surface: IoSurfaceHandle) {
        // Not a message, but freeing the IOSurface may send some.
        let _pool = self.pool();
        // SAFETY: the handle owns the reference IOSurfaceCreate returned and is consumed here.
        unsafe { (self.cf_release)(surface.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(target_os = "macos"))]
    fn loading_off_macos_says_the_framework_is_missing() {
        let e = ObjcRuntime::load().unwrap_err();
        assert_eq!(e.to_string(), "AppleNeuralEngine.framework not found");
    }

    #[test]
    fn selectors_count_their_arguments_by_colons() {
        assert_eq!(selector_args(c"hexStringIdentifier"), 0);
        assert_eq!(selector_args(c"unloadWithQoS:error:"), 2);
        assert_eq!(selector_args(REQUEST_WITH_INPUTS), SevenIdsToId::ARGS);
    }

    #[test]
    fn a_missing_method_is_named_as_objective_c_writes_it() {
        let load = c"loadWithQoS:options:error:";
        let e = first_missing(SENT, |m| Ok(m.selector != load)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-[_ANEInMemoryModel loadWithQoS:options:error:] missing (from \
             AppleNeuralEngine.framework)"
        );
        let e = first_missing(SENT, |m| Ok(m.side == Side::Instance)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:] missing (from \
             AppleNeuralEngine.framework)"
        );
        let utf8 = c"UTF8String";
        let e = first_missing(SENT, |m| Ok(m.selector != utf8)).unwrap_err();
        assert_eq!(e.to_string(), "-[NSString UTF8String] missing (from Foundation.framework)");
    }

    #[test]
    fn the_check_asks_about_every_method_in_order_and_stops_at_the_first_gap() {
        let mut asked = Vec::new();
        first_missing(SENT, |m| {
            asked.push(m.to_string());
            Ok(true)
        })
        .unwrap();
        assert_eq!(asked.len(), SENT.len());
        assert_eq!(
            asked[0],
            "+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]"
        );
        assert!(asked.contains(&"-[_ANEInMemoryModel compiledModelExists]".to_string()));
        assert!(asked.contains(&"-[NSObject release]".to_string()));

        let mut count = 0;
        let e = first_missing(SENT, |m| {
            count += 1;
            Ok(m.selector != c"hexStringIdentifier")
        });
        assert!(e.is_err());
        assert_eq!(count, 3, "nothing is asked past the first missing method");
    }

    #[test]
    fn a_missing_class_stops_the_check_with_its_own_error() {
        let e = first_missing(SENT, |m| {
            Err(LoadError::MissingClass { class: m.class.to_string_lossy().into_owned() })
        })
        .unwrap_err();
        assert!(
            matches!(&e, LoadError::MissingClass { class } if class == "_ANEInMemoryModelDescriptor")
        );
    }

    #[test]
    fn every_listed_selector_is_known_to_the_compile_time_check() {
        assert!(SENT.iter().all(|m| is_listed(m.selector)));
        assert!(!is_listed(c"loadWithQoS:options:"));
        assert!(!is_listed(c"respondsToSelector:"));
    }

    #[test]
    fn objects_of_the_wrong_kind_are_refused_before_any_message() {
        let request = ObjcObject { ptr: NonNull::dangling(), kind: Kind::Request };
        let e = ObjcRuntime::expect(&request, Kind::Model).unwrap_err();
        assert_eq!(e, "expected a Model object, got a Request");
    }
}
