//! Surface memory on an IOSurface: what the ANE reads inputs from and writes outputs to,
//! with no copy. The CPU touches the bytes only between `IOSurfaceLock` and
//! `IOSurfaceUnlock` (REFERENCE.md §1), which the runtime layer does around each access.

use std::sync::Arc;

use super::runtime::AneRuntime;
use crate::error::{Error, Result};
use crate::surface::SurfaceMemory;

/// One IOSurface of `len` bytes, released (`CFRelease`) when dropped.
pub struct IoSurfaceMemory<R: AneRuntime> {
    runtime: Arc<R>,
    /// Present until drop.
    surface: Option<R::Surface>,
    /// The size asked for: the ANE compares allocation sizes, and every surface of one
    /// side is created with the same request (the system may round the allocation up).
    len: usize,
}

impl<R: AneRuntime> IoSurfaceMemory<R> {
    /// A zeroed surface of `len` bytes.
    pub fn new(runtime: Arc<R>, len: usize) -> Result<IoSurfaceMemory<R>, String> {
        let surface = runtime.make_surface(len)?;
        let memory = IoSurfaceMemory { runtime, surface: Some(surface), len };
        let actual = memory.runtime.surface_alloc_size(memory.surface());
        if actual < len {
            return Err(format!("IOSurfaceCreate gave {actual} bytes where {len} were asked"));
        }
        // Fresh pages are probably zero already, but nothing documents it; the simulator's
        // surfaces start zeroed, and so do these.
        memory.runtime.write_surface(memory.surface(), &mut |bytes| bytes.fill(0))?;
        Ok(memory)
    }

    /// The IOSurface, for wrapping in an `_ANEIOSurfaceObject`.
    pub fn surface(&self) -> &R::Surface {
        self.surface.as_ref().expect("an IOSurfaceMemory holds its surface until dropped")
    }
}

impl<R: AneRuntime> SurfaceMemory for IoSurfaceMemory<R> {
    fn len(&self) -> usize {
        self.len
    }

    /// Fails with the lock's `kern_return_t` when `IOSurfaceLock` refuses; `f` then does
    /// not run.
    fn read(&self, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        let len = self.len;
        self.runtime
            .read_surface(self.surface(), &mut |bytes| f(&bytes[..len]))
            .map_err(|message| Error::Device { op: "reading an IOSurface", message })
    }

    /// As `read`, locked for writing.
    fn write(&mut self, f: &mut dyn FnMut(&mut [u8])) -> Result<()> {
        let len = self.len;
        self.runtime
            .write_surface(self.surface(), &mut |bytes| f(&mut bytes[..len]))
            .map_err(|message| Error::Device { op: "writing an IOSurface", message })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl<R: AneRuntime> Drop for IoSurfaceMemory<R> {
    fn drop(&mut self) {
        if let Some(surface) = self.surface.take() {
            self.runtime.release_surface(surface);
        }
    }
}
