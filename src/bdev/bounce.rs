//! The aligned bounce area for O_DIRECT transfers whose UMEM pieces are not
//! 512-aligned: a jumbo READ's tail fragments (at chunk + 476) and the
//! fragments of a multi-buffer WRITE (docs/platform.md §3.3). One slot per disk
//! operation at most, page-aligned, registered with io_uring next to the
//! UMEM. The copies in and out of a slot ([`Bounce::gather`],
//! [`Bounce::scatter`]) are the only bounce code of the stores.

#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;

use super::Seg;
use crate::slab::Slab;

/// A private anonymous mapping cut into equal slots.
pub struct Bounce {
    ptr: NonNull<u8>,
    len: usize,
    slot_len: usize,
    /// Slots in use.
    used: Slab<()>,
}

impl std::fmt::Debug for Bounce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounce")
            .field("slots", &(self.len / self.slot_len))
            .field("slot_len", &self.slot_len)
            .field("used", &self.used.len())
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
            used: Slab::new(usize::from(slots.max(1))),
        })
    }

    /// The whole area, for io_uring buffer registration.
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.as_ptr().cast(),
            iov_len: self.len,
        }
    }

    /// Number of slots (slot keys are `0..slots()`).
    pub fn slots(&self) -> usize {
        self.used.capacity()
    }

    /// Bytes per slot.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Take a slot.
    pub fn alloc(&mut self) -> Option<u16> {
        // Keys stay below `slots`, a u16.
        self.used.insert(()).ok().map(|k| k as u16)
    }

    /// Give slot `s` back (a slot not taken is left alone).
    pub fn release(&mut self, s: u16) {
        let taken = self.used.remove(u32::from(s)).is_some();
        debug_assert!(taken, "bounce slot {s} freed twice");
    }

    /// Copy `segs`, in order, into slot `s`; the bytes copied.
    ///
    /// # Safety
    ///
    /// Every segment must be readable for its length, and slot `s` must be
    /// the caller's (taken, and not in a transfer) and hold them all.
    pub unsafe fn gather(&mut self, s: u16, segs: &[Seg]) -> usize {
        let mut p = self.ptr(s);
        let mut o = 0;
        for g in segs {
            debug_assert!(o + g.len as usize <= self.slot_len);
            // SAFETY: the caller lends the segment for reading; the slot is
            // the caller's and large enough; a mapping of ours does not
            // overlap the segment.
            unsafe {
                std::ptr::copy_nonoverlapping(g.ptr, p, g.len as usize);
                p = p.add(g.len as usize);
            }
            o += g.len as usize;
        }
        o
    }

    /// Copy slot `s`'s bytes, in order, into `segs`.
    ///
    /// # Safety
    ///
    /// Every segment must be writable for its length, and slot `s` must be
    /// the caller's (taken, its transfer done) and hold them all.
    pub unsafe fn scatter(&self, s: u16, segs: &[Seg]) {
        let mut p = self.ptr(s);
        for g in segs {
            // SAFETY: as in `gather`, the other way.
            unsafe {
                std::ptr::copy_nonoverlapping(p, g.ptr, g.len as usize);
                p = p.add(g.len as usize);
            }
        }
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
