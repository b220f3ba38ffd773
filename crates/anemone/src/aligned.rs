//! Byte buffers aligned to 64 bytes, so that typed views of any element type (f16, f32,
//! i64...) over them are sound and kernels see cache-line-aligned data.
//!
//! Buffers of a few megabytes and more (packed weights, activations, surfaces) are also laid on
//! transparent huge pages where Linux offers them: evaluations stream through them again and
//! again, and with 4 KiB pages each pass takes a TLB miss for every page, a miss that costs the
//! most under virtualization, where the page walk is two-dimensional. Measured on the 2-core
//! VM the project is built on, the same program with and without, alternating in one process:
//! a 1x1 conv 768->2048 (6 MiB of packed weights) 2-4% quicker at its fastest and 3-8% at its
//! median; fixture 08 0-1% and 2-5%; a transformer MLP block (two 9 MiB weights) no change
//! beyond the noise.

/// Zero-initialised bytes aligned to 64.
#[derive(Debug, Default)]
pub struct AlignedBytes {
    store: Store,
    len: usize,
}

#[derive(Debug)]
enum Store {
    /// Blocks of 64 bytes on the heap.
    Blocks(Vec<Block>),
    /// An anonymous mapping with huge pages advised; the bytes start at `start`, a multiple of
    /// the huge page size from any alignment the mapping has.
    #[cfg(target_os = "linux")]
    Mapped { map: memmap2::MmapMut, start: usize },
}

impl Default for Store {
    fn default() -> Store {
        Store::Blocks(Vec::new())
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Block([u8; 64]);

// SAFETY: Block is repr(C) around [u8; 64]: no padding, and all-zero bytes are a valid value.
unsafe impl bytemuck::Zeroable for Block {}
// SAFETY: as above; every bit pattern is valid, and Block is Copy and 'static.
unsafe impl bytemuck::Pod for Block {}

/// The size of an x86_64 or arm64 Linux huge page.
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// Buffers from this size up are mapped on huge pages: from two of them, so that the up to one
/// huge page of address space the alignment skips is at most a third of the mapping (it is
/// never touched, so it costs no memory).
#[cfg(target_os = "linux")]
const MAPPED_FROM: usize = 2 * HUGE_PAGE;

impl AlignedBytes {
    /// `len` zero bytes, starting on a 64-byte boundary. Aborts or panics when the memory
    /// cannot be had; use [`AlignedBytes::try_zeroed`] for sizes that come from user input.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes::try_zeroed(len).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`AlignedBytes::zeroed`], but says so instead of aborting the process when the
    /// memory cannot be had (a huge declared shape must be an error, not a crash).
    pub fn try_zeroed(len: usize) -> Result<AlignedBytes, String> {
        let refused =
            || format!("cannot allocate {len} bytes ({:.1} GiB)", len as f64 / (1u64 << 30) as f64);
        #[cfg(target_os = "linux")]
        if len >= MAPPED_FROM {
            let size = len.checked_add(HUGE_PAGE).ok_or_else(refused)?;
            // Zero pages until written, so the skipped head and the tail cost nothing.
            let map = memmap2::MmapMut::map_anon(size).map_err(|_| refused())?;
            let start = (map.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - map.as_ptr() as usize;
            // A hint: where huge pages are off, the mapping keeps 4 KiB pages and works alike.
            let _ = map.advise(memmap2::Advice::HugePage);
            return Ok(AlignedBytes { store: Store::Mapped { map, start }, len });
        }
        let mut blocks: Vec<Block> = Vec::new();
        blocks.try_reserve_exact(len.div_ceil(64)).map_err(|_| refused())?;
        blocks.resize(len.div_ceil(64), bytemuck::Zeroable::zeroed());
        Ok(AlignedBytes { store: Store::Blocks(blocks), len })
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
        match &self.store {
            Store::Blocks(blocks) => &bytemuck::cast_slice(blocks)[..self.len],
            #[cfg(target_os = "linux")]
            Store::Mapped { map, start } => &map[*start..*start + self.len],
        }
    }

    /// The `len()` bytes, writable; the slice starts 64-byte aligned.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.store {
            Store::Blocks(blocks) => &mut bytemuck::cast_slice_mut(blocks)[..self.len],
            #[cfg(target_os = "linux")]
            Store::Mapped { map, start } => &mut map[*start..*start + self.len],
        }
    }
}

impl Clone for AlignedBytes {
    fn clone(&self) -> AlignedBytes {
        AlignedBytes::from_bytes(self.bytes())
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
        assert!(AlignedBytes::try_zeroed(usize::MAX).unwrap_err().contains("cannot allocate"));
    }

    #[test]
    fn large_buffers_are_zeroed_aligned_writable_and_clone() {
        // Above and below the size that is mapped on huge pages, and an odd length.
        for len in [(4 << 20) - 64, 4 << 20, (9 << 20) + 7] {
            let mut a = AlignedBytes::zeroed(len);
            assert_eq!(a.len(), len);
            assert_eq!(a.bytes().as_ptr() as usize % 64, 0);
            assert!(a.bytes().iter().all(|&b| b == 0));
            a.bytes_mut()[len - 1] = 7;
            a.bytes_mut()[0] = 3;
            let b = a.clone();
            assert_eq!(b.bytes(), a.bytes());
            a.bytes_mut()[0] = 4;
            assert_eq!((a.bytes()[0], b.bytes()[0], b.bytes()[len - 1]), (4, 3, 7));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_start_on_a_huge_page() {
        let a = AlignedBytes::zeroed(MAPPED_FROM);
        assert!(matches!(a.store, Store::Mapped { .. }));
        assert_eq!(a.bytes().as_ptr() as usize % HUGE_PAGE, 0);
    }
}
