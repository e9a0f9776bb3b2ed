//! The aligned bounce area for O_DIRECT transfers whose UMEM pieces are not
//! 512-aligned: a jumbo READ's tail fragments (at chunk + 476) and the
//! fragments of a multi-buffer WRITE (docs/platform.md §3.3). One slot per disk
//! operation at most, page-aligned, registered with io_uring next to the
//! UMEM.

#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;

/// A private anonymous mapping cut into equal slots.
pub struct Bounce {
    ptr: NonNull<u8>,
    len: usize,
    slot_len: usize,
    free: Vec<u16>,
}

impl std::fmt::Debug for Bounce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounce")
            .field("slots", &(self.len / self.slot_len))
            .field("slot_len", &self.slot_len)
            .field("free", &self.free.len())
            .finish()
    }
}

// SAFETY: the mapping is owned by this struct alone and moves with it; only
// the owning worker thread touches it.
unsafe impl Send for Bounce {}

impl Bounce {
    /// `slots` slots of at least `slot_len` bytes (rounded up to a page).
    pub fn new(slots: u16, slot_len: usize) -> io::Result<Bounce> {
        let slot_len = slot_len.max(1).div_ceil(4096) * 4096;
        let len = slot_len * usize::from(slots.max(1));
        // SAFETY: anonymous private mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Bounce {
            ptr,
            len,
            slot_len,
            free: (0..slots.max(1)).rev().collect(),
        })
    }

    /// The whole area, for io_uring buffer registration.
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.as_ptr().cast(),
            iov_len: self.len,
        }
    }

    /// Bytes per slot.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Take a slot.
    pub fn alloc(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Whether a slot is available.
    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Give slot `s` back.
    pub fn release(&mut self, s: u16) {
        debug_assert!(!self.free.contains(&s), "bounce slot {s} freed twice");
        self.free.push(s);
    }

    /// First byte of slot `s` (page-aligned).
    pub fn ptr(&self, s: u16) -> *mut u8 {
        debug_assert!(usize::from(s) * self.slot_len < self.len);
        self.ptr
            .as_ptr()
            .wrapping_add(usize::from(s) * self.slot_len)
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the worker drops
        // its io_uring (which waits for every operation) before this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
