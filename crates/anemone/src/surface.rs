//! Surfaces: the dense, typed tensors that carry a model's inputs and outputs, in memory a
//! backend can share with the device (an IOSurface on the ANE, an aligned heap buffer on the
//! simulator). A surface may be larger than its tensor: the ANE requires every input (and
//! every output) surface of a program to have the same allocation size, so smaller ones are
//! padded (REFERENCE.md §2, error 0x1d).

use anemone_mil::{DType, TensorType, f16};

use crate::aligned::AlignedBytes;
use crate::error::{Error, Result};

/// The memory behind a surface. Access goes through closures so that a backend can lock
/// and unlock shared memory around each access (IOSurfaceLock on macOS). Locking can fail,
/// so each access returns a `Result`; `f` runs only when the memory could be locked.
pub trait SurfaceMemory: Send {
    /// Allocation size in bytes.
    fn len(&self) -> usize;
    /// Whether the allocation is zero bytes long.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Runs `f` over the bytes, locked for reading.
    fn read(&self, f: &mut dyn FnMut(&[u8])) -> Result<()>;
    /// Runs `f` over the bytes, locked for writing.
    fn write(&mut self, f: &mut dyn FnMut(&mut [u8])) -> Result<()>;
    /// Lets a backend reach its native handle (e.g. the IOSurfaceRef).
    fn as_any(&self) -> &dyn std::any::Any;
    /// The memory as the simulator's heap memory, when it is that: the simulator then lends
    /// the allocation to its kernels for an output instead of copying the output into it.
    fn as_heap_mut(&mut self) -> Option<&mut HeapMemory> {
        None
    }
}

/// Heap memory aligned to 64 bytes: the simulator's surfaces.
pub struct HeapMemory(AlignedBytes);

impl HeapMemory {
    /// Zeroed memory of `len` bytes.
    pub fn zeroed(len: usize) -> HeapMemory {
        HeapMemory(AlignedBytes::zeroed(len))
    }

    /// Zeroed memory of `len` bytes, or an error when it cannot be had.
    pub fn try_zeroed(len: usize) -> Result<HeapMemory> {
        AlignedBytes::try_zeroed(len).map(HeapMemory).map_err(Error::OutOfMemory)
    }

    /// The whole allocation, 64-byte aligned (no lock needed on the heap).
    pub fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }

    /// The whole allocation, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.0.bytes_mut()
    }

    /// The allocation itself, for the simulator to trade with one of its own buffers of the
    /// same use for the length of an evaluate.
    pub(crate) fn allocation_mut(&mut self) -> &mut AlignedBytes {
        &mut self.0
    }
}

impl SurfaceMemory for HeapMemory {
    fn len(&self) -> usize {
        self.0.len()
    }
    /// Never fails: heap memory needs no lock.
    fn read(&self, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        f(self.bytes());
        Ok(())
    }
    /// Never fails, as `read`.
    fn write(&mut self, f: &mut dyn FnMut(&mut [u8])) -> Result<()> {
        f(self.bytes_mut());
        Ok(())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_heap_mut(&mut self) -> Option<&mut HeapMemory> {
        Some(self)
    }
}

/// A named tensor in device-shareable memory.
pub struct Surface {
    name: String,
    ty: TensorType,
    memory: Box<dyn SurfaceMemory>,
}

impl std::fmt::Debug for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surface")
            .field("name", &self.name)
            .field("type", &self.ty.to_string())
            .field("alloc_size", &self.memory.len())
            .finish()
    }
}

impl Surface {
    /// A zeroed heap surface for `ty`, allocated to `alloc_size` bytes (at least the
    /// tensor's own size).
    pub fn new_heap(name: &str, ty: TensorType, alloc_size: usize) -> Result<Surface> {
        let need = tensor_bytes(name, &ty)?;
        let memory = HeapMemory::try_zeroed(alloc_size.max(need))
            .map_err(|e| Error::OutOfMemory(format!("surface `{name}` ({ty}): {e}")))?;
        Surface::with_memory(name, ty, Box::new(memory))
    }

    /// A surface over memory a backend allocated.
    pub fn with_memory(
        name: &str,
        ty: TensorType,
        memory: Box<dyn SurfaceMemory>,
    ) -> Result<Surface> {
        let need = tensor_bytes(name, &ty)?;
        if memory.len() < need {
            return Err(Error::Shape(format!(
                "surface `{name}` of {} B cannot hold {ty} ({need} B)",
                memory.len()
            )));
        }
        Ok(Surface { name: name.to_string(), ty, memory })
    }

    /// The MIL name of the input or output this surface carries.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared tensor type (dtype and shape) of the data, not of the padded allocation.
    pub fn tensor_type(&self) -> &TensorType {
        &self.ty
    }

    /// The element type of the data on the surface.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }

    /// The tensor's shape; the data is dense and row-major over it.
    pub fn shape(&self) -> &[usize] {
        &self.ty.shape
    }

    /// Number of elements in the tensor (the product of the shape).
    pub fn element_count(&self) -> usize {
        self.ty.element_count()
    }

    /// Bytes the tensor itself takes (the rest of the allocation is padding).
    pub fn tensor_bytes(&self) -> usize {
        self.ty.byte_size().unwrap_or(0) as usize
    }

    /// Bytes allocated, padding included.
    pub fn alloc_size(&self) -> usize {
        self.memory.len()
    }

    /// The memory behind the surface, for backends and for reads that bypass conversion.
    pub fn memory(&self) -> &dyn SurfaceMemory {
        self.memory.as_ref()
    }

    /// The memory behind the surface, writable; writes here are not checked against the
    /// tensor's type.
    pub fn memory_mut(&mut self) -> &mut dyn SurfaceMemory {
        self.memory.as_mut()
    }

    /// Writes f32 values, converting to the surface's dtype (fp16 rounds to nearest even).
    pub fn write_f32(&mut self, values: &[f32]) -> Result<()> {
        self.check_len(values.len())?;
        let dtype = self.ty.dtype;
        let name = self.name.clone();
        let mut result = Ok(());
        let n = self.tensor_bytes();
        self.memory.write(&mut |bytes| {
            result = encode_f32(&name, dtype, values, &mut bytes[..n]);
        })?;
        result
    }

    /// Reads the tensor as f32 values.
    pub fn read_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.element_count()];
        let dtype = self.ty.dtype;
        let mut result = Ok(());
        let n = self.tensor_bytes();
        self.memory.read(&mut |bytes| {
            result = decode_f32(&self.name, dtype, &bytes[..n], &mut out);
        })?;
        result.map(|_| out)
    }

    /// Writes fp16 values to an fp16 surface.
    pub fn write_f16(&mut self, values: &[f16]) -> Result<()> {
        self.expect_dtype(DType::Fp16)?;
        self.check_len(values.len())?;
        self.write_bytes(bytemuck::cast_slice(values))
    }

    /// Reads an fp16 surface.
    pub fn read_f16(&self) -> Result<Vec<f16>> {
        self.expect_dtype(DType::Fp16)?;
        let mut out = vec![f16::ZERO; self.element_count()];
        self.read_bytes_into(bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Writes the tensor's raw bytes, in its own dtype (`bytes.len()` must be the tensor size).
    pub fn write_bytes(&mut self, src: &[u8]) -> Result<()> {
        let n = self.tensor_bytes();
        if src.len() != n {
            return Err(Error::Shape(format!(
                "`{}` holds {} = {n} B, got {} B",
                self.name,
                self.ty,
                src.len()
            )));
        }
        self.memory.write(&mut |bytes| bytes[..n].copy_from_slice(src))
    }

    /// Writes `src` at byte `offset` of the tensor (used for packed dynamic weights).
    pub fn write_bytes_at(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        let n = self.tensor_bytes();
        if offset.checked_add(src.len()).is_none_or(|end| end > n) {
            return Err(Error::Shape(format!(
                "write of {} B at offset {offset} is outside `{}` ({n} B)",
                src.len(),
                self.name
            )));
        }
        self.memory.write(&mut |bytes| bytes[offset..offset + src.len()].copy_from_slice(src))
    }

    /// Copies the tensor's raw bytes into `dst` (which must be the tensor size).
    pub fn read_bytes_into(&self, dst: &mut [u8]) -> Result<()> {
        let n = self.tensor_bytes();
        if dst.len() != n {
            return Err(Error::Shape(format!(
                "`{}` holds {n} B, buffer has {} B",
                self.name,
                dst.len()
            )));
        }
        self.memory.read(&mut |bytes| dst.copy_from_slice(&bytes[..n]))
    }

    /// The tensor's raw bytes, or the error of locking the memory.
    pub fn try_read_bytes(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.tensor_bytes()];
        self.read_bytes_into(&mut out)?;
        Ok(out)
    }

    /// The tensor's raw bytes.
    ///
    /// # Panics
    /// If the memory cannot be locked for reading (an `IOSurfaceLock` failure; heap memory
    /// never fails). [`Surface::try_read_bytes`] returns that as an error instead.
    pub fn read_bytes(&self) -> Vec<u8> {
        self.try_read_bytes().unwrap_or_else(|e| panic!("reading surface `{}`: {e}", self.name))
    }

    fn check_len(&self, got: usize) -> Result<()> {
        let want = self.element_count();
        if got != want {
            return Err(Error::Shape(format!(
                "`{}` is {} ({want} elements), got {got} values",
                self.name, self.ty
            )));
        }
        Ok(())
    }

    fn expect_dtype(&self, dtype: DType) -> Result<()> {
        if self.ty.dtype != dtype {
            return Err(Error::Shape(format!("`{}` is {}, not {dtype}", self.name, self.ty)));
        }
        Ok(())
    }
}

fn tensor_bytes(name: &str, ty: &TensorType) -> Result<usize> {
    ty.byte_size()
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| Error::Shape(format!("`{name}`: {ty} has no fixed byte size")))
}

/// Converts f32 values into `dst` in `dtype`'s encoding.
pub fn encode_f32(name: &str, dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    use half::slice::HalfFloatSliceExt;
    match dtype {
        DType::Fp32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
        DType::Fp16 => {
            let out: &mut [f16] = bytemuck::cast_slice_mut(dst);
            out.convert_from_f32_slice(src);
        }
        DType::Bf16 => {
            let out: &mut [half::bf16] = bytemuck::cast_slice_mut(dst);
            out.convert_from_f32_slice(src);
        }
        DType::Int8 => {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = (v as i8) as u8;
            }
        }
        DType::UInt8 => {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v as u8;
            }
        }
        DType::Int32 => {
            let out: &mut [i32] = bytemuck::cast_slice_mut(dst);
            for (d, &v) in out.iter_mut().zip(src) {
                *d = v as i32;
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "`{name}`: f32 values cannot be written to a {other} surface"
            )));
        }
    }
    Ok(())
}

/// Converts `src` in `dtype`'s encoding into f32 values.
pub fn decode_f32(name: &str, dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    use half::slice::HalfFloatSliceExt;
    match dtype {
        DType::Fp32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
        DType::Fp16 => {
            let input: &[f16] = bytemuck::cast_slice(src);
            input.convert_to_f32_slice(dst);
        }
        DType::Bf16 => {
            let input: &[half::bf16] = bytemuck::cast_slice(src);
            input.convert_to_f32_slice(dst);
        }
        DType::Int8 => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v as i8 as f32),
        DType::UInt8 => dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v as f32),
        DType::Int32 => {
            let input: &[i32] = bytemuck::cast_slice(src);
            dst.iter_mut().zip(input).for_each(|(d, &v)| *d = v as f32);
        }
        other => {
            return Err(Error::Unsupported(format!(
                "`{name}`: a {other} surface cannot be read as f32"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_surface_rounds_to_nearest_even() {
        let mut s = Surface::new_heap("x", TensorType::new(DType::Fp16, [3]), 0).unwrap();
        // 2049 is halfway between fp16 2048 and 2050: ties to even gives 2048.
        s.write_f32(&[1.0, 2049.0, 70000.0]).unwrap();
        assert_eq!(s.read_f32().unwrap(), vec![1.0, 2048.0, f32::INFINITY]);
    }

    #[test]
    fn padded_surface_keeps_tensor_size() {
        let s = Surface::new_heap("x", TensorType::new(DType::Fp32, [2, 3]), 100).unwrap();
        assert_eq!(s.alloc_size(), 100);
        assert_eq!(s.tensor_bytes(), 24);
    }

    #[test]
    fn wrong_length_is_an_error_not_a_panic() {
        let mut s = Surface::new_heap("x", TensorType::new(DType::Fp32, [4]), 0).unwrap();
        let e = s.write_f32(&[1.0]).unwrap_err().to_string();
        assert!(e.contains("4 elements") && e.contains("got 1"), "{e}");
        assert!(s.write_bytes_at(14, &[0; 4]).is_err());
    }

    /// Memory whose lock always fails, as an IOSurface can.
    struct Unlockable;

    impl SurfaceMemory for Unlockable {
        fn len(&self) -> usize {
            64
        }
        fn read(&self, _: &mut dyn FnMut(&[u8])) -> Result<()> {
            Err(Error::Device { op: "IOSurfaceLock", message: "kern_return_t 0xe00002c2".into() })
        }
        fn write(&mut self, _: &mut dyn FnMut(&mut [u8])) -> Result<()> {
            self.read(&mut |_| {})
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    #[test]
    fn a_failed_lock_is_an_error_from_every_access() {
        let ty = TensorType::new(DType::Fp16, [4]);
        let mut s = Surface::with_memory("x", ty, Box::new(Unlockable)).unwrap();
        let lock = "IOSurfaceLock failed: kern_return_t 0xe00002c2";
        let errors = [
            s.write_f32(&[1.0; 4]).unwrap_err(),
            s.write_f16(&[f16::ONE; 4]).unwrap_err(),
            s.write_bytes(&[0; 8]).unwrap_err(),
            s.write_bytes_at(2, &[0; 2]).unwrap_err(),
            s.read_f32().unwrap_err(),
            s.read_f16().unwrap_err(),
            s.read_bytes_into(&mut [0; 8]).unwrap_err(),
            s.try_read_bytes().unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.to_string(), lock);
        }
    }

    #[test]
    fn heap_memory_runs_each_access_once() {
        let mut m = HeapMemory::zeroed(8);
        let mut runs = 0;
        m.write(&mut |b| {
            b[3] = 7;
            runs += 1;
        })
        .unwrap();
        m.read(&mut |b| {
            assert_eq!(b[3], 7);
            runs += 1;
        })
        .unwrap();
        assert_eq!(runs, 2);
    }
}
