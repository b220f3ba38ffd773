//! The one interface between the backend's sequence logic and Objective-C: a trait with one
//! method per operation the backend performs on the ANE (REFERENCE.md §1). Two types
//! implement it: [`super::ObjcRuntime`], which sends the real messages through the
//! runtime-loaded frameworks, and [`super::RecordingRuntime`], which records each call as a
//! readable line so that the sequence can be tested on any machine.
//!
//! Ownership is the same for every method: an object or surface a method returns belongs to
//! the caller, who hands it back to [`AneRuntime::release`] or
//! [`AneRuntime::release_surface`] exactly once. Handles cannot be copied, so a released
//! handle cannot be used again.

use std::path::PathBuf;

/// One weight file handed to the compiler with the MIL text.
#[derive(Clone, Copy, Debug)]
pub struct WeightFile<'a> {
    /// The exact BLOBFILE path string of the program (`@model_path/weights/weight.bin`).
    pub blob_path: &'a str,
    /// The whole file, header included.
    pub bytes: &'a [u8],
}

/// The Objective-C operations of the ANE path, each named after its selector or C function.
///
/// Errors are the framework's own words: the `NSError` description where the method has an
/// `error:` out-parameter, else a sentence saying which call returned nil.
pub trait AneRuntime: Send + Sync + 'static {
    /// A retained Objective-C object (descriptor, model, surface object or request).
    type Object: Send + 'static;
    /// A retained IOSurface.
    type Surface: Send + 'static;

    /// `+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]` with the MIL
    /// text as NSData, the weights as `{blob path: {offset: @0, data: NSData}}` (an empty
    /// dictionary when there are none, never nil) and `optionsPlist:nil`.
    fn create_descriptor(
        &self,
        mil: &[u8],
        weights: &[WeightFile<'_>],
    ) -> Result<Self::Object, String>;

    /// `+[_ANEInMemoryModel inMemoryModelWithDescriptor:]`.
    fn in_memory_model(&self, descriptor: &Self::Object) -> Result<Self::Object, String>;

    /// `-[_ANEInMemoryModel hexStringIdentifier]`: names the model's temporary directory.
    fn hex_identifier(&self, model: &Self::Object) -> Result<String, String>;

    /// `NSTemporaryDirectory()`: where the framework looks for `<hex>/model.mil`.
    fn temp_dir(&self) -> PathBuf;

    /// `-[_ANEInMemoryModel compiledModelExists]`: a compiled program is cached already.
    fn compiled_model_exists(&self, model: &Self::Object) -> Result<bool, String>;

    /// `-[_ANEInMemoryModel compileWithQoS:options:@{} error:]`.
    fn compile(&self, model: &Self::Object, qos: u32) -> Result<(), String>;

    /// `-[_ANEInMemoryModel loadWithQoS:options:@{} error:]`.
    fn load(&self, model: &Self::Object, qos: u32) -> Result<(), String>;

    /// `-[_ANEInMemoryModel unloadWithQoS:error:]`.
    fn unload(&self, model: &Self::Object, qos: u32) -> Result<(), String>;

    /// `-[_ANEInMemoryModel evaluateWithQoS:options:@{} request:error:]`.
    fn evaluate(
        &self,
        model: &Self::Object,
        request: &Self::Object,
        qos: u32,
    ) -> Result<(), String>;

    /// `IOSurfaceCreate` with width = `bytes`, height 1, 1 byte per element, `bytes` per
    /// row, allocation size `bytes` and pixel format 0.
    fn make_surface(&self, bytes: usize) -> Result<Self::Surface, String>;

    /// `IOSurfaceGetAllocSize`.
    fn surface_alloc_size(&self, surface: &Self::Surface) -> usize;

    /// Runs `f` over the surface's bytes (`IOSurfaceGetAllocSize` of them) between
    /// `IOSurfaceLock(kIOSurfaceLockReadOnly)` and `IOSurfaceUnlock`.
    fn read_surface(&self, surface: &Self::Surface, f: &mut dyn FnMut(&[u8]))
    -> Result<(), String>;

    /// Runs `f` over the surface's bytes between `IOSurfaceLock(0)` and `IOSurfaceUnlock`.
    fn write_surface(
        &self,
        surface: &Self::Surface,
        f: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), String>;

    /// `+[_ANEIOSurfaceObject objectWithIOSurface:]`.
    fn wrap_surface(&self, surface: &Self::Surface) -> Result<Self::Object, String>;

    /// `+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:nil
    /// perfStats:nil procedureIndex:]`, every index an NSNumber.
    fn make_request(
        &self,
        inputs: &[&Self::Object],
        input_indices: &[u32],
        outputs: &[&Self::Object],
        output_indices: &[u32],
        procedure_index: u32,
    ) -> Result<Self::Object, String>;

    /// `-[NSObject release]`.
    fn release(&self, object: Self::Object);

    /// `CFRelease` of a surface.
    fn release_surface(&self, surface: Self::Surface);
}
