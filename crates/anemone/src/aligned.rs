//! Byte buffers aligned to 64 bytes, so that typed views of any element type (f16, f32,
//! i64...) over them are sound and kernels see cache-line-aligned data.

/// Zero-initialised bytes aligned to 64.
#[derive(Clone, Debug, Default)]
pub struct AlignedBytes {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Block([u8; 64]);

// SAFETY: Block is repr(C) around [u8; 64]: no padding, and all-zero bytes are a valid value.
unsafe impl bytemuck::Zeroable for Block {}
// SAFETY: as above; every bit pattern is valid, and Block is Copy and 'static.
unsafe impl bytemuck::Pod for Block {}

impl AlignedBytes {
    /// `len` zero bytes, starting on a 64-byte boundary. Aborts or panics when the memory
    /// cannot be had; use [`AlignedBytes::try_zeroed`] for sizes that come from user input.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes { blocks: vec![bytemuck::Zeroable::zeroed(); len.div_ceil(64)], len }
    }

    /// Like [`AlignedBytes::zeroed`], but says so instead of aborting the process when the
    /// memory cannot be had (a huge declared shape must be an error, not a crash).
    pub fn try_zeroed(len: usize) -> Result<AlignedBytes, String> {
        let mut blocks: Vec<Block> = Vec::new();
        blocks.try_reserve_exact(len.div_ceil(64)).map_err(|_| {
            format!("cannot allocate {len} bytes ({:.1} GiB)", len as f64 / (1u64 << 30) as f64)
        })?;
        blocks.resize(len.div_ceil(64), bytemuck::Zeroable::zeroed());
        Ok(AlignedBytes { blocks, len })
    }

    /// A 64-byte-aligned copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(bytes.len());
        a.bytes_mut().copy_from_slice(bytes);
        a
    }

    /// Length in bytes (the allocation is rounded up to a multiple of 64; this is not).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `len()` bytes; the slice starts 64-byte aligned.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.blocks)[..self.len]
    }

    /// The `len()` bytes, writable; the slice starts 64-byte aligned.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.blocks)[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let a = AlignedBytes::zeroed(130);
        assert_eq!(a.bytes().as_ptr() as usize % 64, 0);
        assert_eq!(a.bytes(), &[0u8; 130][..]);
        assert_eq!(AlignedBytes::from_bytes(&[1, 2, 3]).bytes(), &[1, 2, 3]);
        let e = AlignedBytes::try_zeroed(1 << 60).unwrap_err();
        assert!(e.contains("cannot allocate"), "{e}");
    }
}
