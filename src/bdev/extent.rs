//! The bdev core: what every store shares and none writes itself.
//!
//! SPDK's bdev layer checks each request against the device before a
//! module sees it; here the same happens once, for every store:
//!
//! - [`Extent`]: where the export lies in its store (the `-o` offset, the
//!   `base` every request is moved by), how far it reaches (the exported
//!   size, the `-l` length or the store's size; grows online, never
//!   shrinks), and the write fence (a store that shrank under a live export
//!   keeps the export's size, but a write past the store's end would grow a
//!   regular file back, so such writes fail, as reads there do: issue 23).
//! - [`Queue`]: a worker's queue to an export. It checks each request
//!   against the extent (range, segment lengths, fence), moves it by
//!   `base`, and hands it to the store's [`Channel`], which then only moves
//!   bytes. It holds that channel as a [`Chan`]: the file channels by value,
//!   any other behind the trait.
//!
//! A store provides the [`Extent`] through [`super::Bdev::extent`] and
//! reports its own size through [`super::Bdev::store_sectors`]; growth and
//! the fence follow from there.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{
    export_sectors, BlockOp, BlockReq, BlockResult, Channel, ChannelCounters, DiskError, DiskSpec,
    Segs, Submit, Tag,
};
use crate::wire::SECTOR_SIZE;

const SECTOR: u64 = SECTOR_SIZE as u64;

/// Where an export lies in its store, and how far it reaches (see the
/// module documentation). Shared by the store and every worker's queue.
#[derive(Debug)]
pub struct Extent {
    /// Byte offset of the export in the store.
    base: u64,
    /// Exported capacity in sectors; grows online, never shrinks.
    sectors: AtomicU64,
    /// Bytes past `base` a write may reach: the store's end when it was
    /// opened or last probed, or the export's end once grown past it.
    store_end: AtomicU64,
    /// The operator fixed the length (`-l`, `length =`): the export does
    /// not follow the store.
    fixed_length: bool,
}

impl Extent {
    /// The export `spec` asks for (offset, length) in a store of
    /// `store_sectors`, refusing ranges that leave the store; `name` names
    /// the store in errors.
    pub fn new(name: &Path, store_sectors: u64, spec: &DiskSpec) -> Result<Extent, DiskError> {
        let sectors = export_sectors(
            name,
            store_sectors,
            spec.offset_sectors,
            spec.length_sectors,
        )?;
        Ok(Extent {
            base: spec.offset_sectors * SECTOR,
            sectors: AtomicU64::new(sectors),
            store_end: AtomicU64::new((store_sectors - spec.offset_sectors) * SECTOR),
            fixed_length: spec.length_sectors.is_some(),
        })
    }

    /// An export of a whole store of `sectors` that never changes size
    /// (null, tests).
    pub fn fixed(sectors: u64) -> Extent {
        Extent {
            base: 0,
            sectors: AtomicU64::new(sectors),
            store_end: AtomicU64::new(sectors * SECTOR),
            fixed_length: true,
        }
    }

    /// Exported capacity in sectors.
    #[inline]
    pub fn sectors(&self) -> u64 {
        self.sectors.load(Ordering::Acquire)
    }

    /// Byte offset of the export in the store.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The operator fixed the length: the export does not follow the store.
    pub fn fixed_length(&self) -> bool {
        self.fixed_length
    }

    /// Accept requests up to `sectors` from now on (online growth). Never
    /// shrinks: returns the capacity in force afterwards.
    pub fn grow(&self, sectors: u64) -> u64 {
        // Whoever grows the export has seen the store that large.
        self.store_end.fetch_max(sectors * SECTOR, Ordering::AcqRel);
        self.sectors
            .fetch_max(sectors, Ordering::AcqRel)
            .max(sectors)
    }

    /// The store has `store_sectors` now: the write fence moves to its end
    /// (either way). Returns the sectors the export could have past its
    /// offset.
    pub fn store_resized(&self, store_sectors: u64) -> u64 {
        let past_base = store_sectors.saturating_sub(self.base / SECTOR);
        self.store_end.store(past_base * SECTOR, Ordering::Release);
        past_base
    }

    /// Check `req` on `segs` against the export: the store's byte offset
    /// to use, or the errno to answer with (EINVAL: outside the export or
    /// segments not holding exactly `req.len` bytes, which the engine never
    /// asks for; ENOSPC: a write past the fence).
    #[inline]
    pub fn check(&self, req: &BlockReq, segs: &Segs) -> Result<u64, i32> {
        let len = u64::from(req.len);
        let end = req.offset.checked_add(len);
        if end.is_none_or(|e| e > self.sectors() * SECTOR) || segs.total() != req.len as usize {
            // Refuse rather than trust the caller.
            return Err(libc::EINVAL);
        }
        if req.op == BlockOp::Write
            && req.offset.saturating_add(len) > self.store_end.load(Ordering::Acquire)
        {
            return Err(libc::ENOSPC);
        }
        Ok(self.base + req.offset)
    }
}

/// A store's channel as a worker's [`Queue`] holds it. The two local file
/// channels, under every file store, are held by value and called
/// directly, so that their submit and reap inline into the worker's loop;
/// any other store's channel goes through the [`Channel`] trait
/// ([`Chan::boxed`]). Issue 25 measured the dyn calls (a submit, a reap and
/// a completion callback per request) as part of what the bdev seam cost a
/// page-cache READ.
#[derive(Debug)]
// One per store and worker: the size does not matter, a pointer chase per
// request would.
#[allow(clippy::large_enum_variant)]
pub enum Chan {
    /// [`super::file_uring::UringChannel`], statically dispatched.
    Uring(super::file_uring::UringChannel),
    /// [`super::file::FileChannel`] (pread/pwritev), statically dispatched.
    File(super::file::FileChannel),
    /// Any other channel.
    Dyn(Box<dyn Channel>),
}

impl Chan {
    /// `c` behind the trait.
    pub fn boxed(c: impl Channel + 'static) -> Chan {
        Chan::Dyn(Box::new(c))
    }
}

/// A worker's queue to one export: the core's checks in front of the
/// store's [`Channel`] (see the module documentation). Requests name byte
/// offsets inside the export; the channel sees them inside the store.
#[derive(Debug)]
pub struct Queue {
    extent: Arc<Extent>,
    chan: Chan,
}

/// `$body` with `$c` bound to the queue's channel, whichever it is: the
/// file channels by value (static calls the compiler inlines), any other
/// through the trait.
macro_rules! with_chan {
    ($chan:expr, $c:ident => $body:expr) => {
        match $chan {
            Chan::Uring($c) => $body,
            Chan::File($c) => $body,
            Chan::Dyn($c) => $body,
        }
    };
}

impl Queue {
    /// `chan`, a channel of the store `extent` belongs to, behind the
    /// checks.
    pub fn new(extent: Arc<Extent>, chan: Chan) -> Queue {
        Queue { extent, chan }
    }

    /// Start `req` (offset inside the export) on `segs`, as
    /// [`Channel::submit`]; a request the export cannot take is done at
    /// once with its errno.
    ///
    /// # Safety
    ///
    /// As [`Channel::submit`].
    #[allow(unsafe_code)]
    #[inline(always)]
    pub unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, tag: Tag) -> Submit {
        match self.extent.check(&req, segs) {
            Ok(at) => {
                let req = BlockReq { offset: at, ..req };
                // SAFETY: the caller's contract, passed on; the request
                // lies inside the export.
                with_chan!(&mut self.chan, c => unsafe { c.submit(req, segs, tag) })
            }
            Err(errno) => Submit::Done(Err(errno)),
        }
    }

    /// As [`Channel::end_batch`].
    #[inline]
    pub fn end_batch(&mut self) -> io::Result<()> {
        with_chan!(&mut self.chan, c => c.end_batch())
    }

    /// As [`Channel::reap`], with `done` called directly (not through a
    /// `dyn FnMut`) for the file channels.
    #[inline(always)]
    pub fn reap(&mut self, mut done: impl FnMut(Tag, BlockResult)) -> usize {
        match &mut self.chan {
            Chan::Uring(c) => c.reap_each(done),
            Chan::File(c) => c.reap_each(done),
            Chan::Dyn(c) => c.reap(&mut done),
        }
    }

    /// As [`Channel::poll_fd`].
    pub fn poll_fd(&self) -> Option<RawFd> {
        with_chan!(&self.chan, c => c.poll_fd())
    }

    /// As [`Channel::in_flight`].
    pub fn in_flight(&self) -> usize {
        with_chan!(&self.chan, c => c.in_flight())
    }

    /// As [`Channel::counters`].
    pub fn counters(&self) -> ChannelCounters {
        with_chan!(&self.chan, c => c.counters())
    }

    /// The export's extent.
    pub fn extent(&self) -> &Extent {
        &self.extent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(offset: u64, length: Option<u64>) -> DiskSpec {
        DiskSpec {
            source: super::super::Source::File(PathBuf::from("f")),
            offset_sectors: offset,
            length_sectors: length,
            read_only: false,
            direct: false,
            sync: false,
            writeback: false,
            rbd: Default::default(),
        }
    }

    fn req(op: BlockOp, sector: u64, sectors: u32) -> (BlockReq, Segs) {
        let len = sectors * SECTOR_SIZE as u32;
        let segs = Segs::one(std::ptr::null_mut(), len as usize);
        (
            BlockReq {
                op,
                offset: sector * SECTOR,
                len,
            },
            segs,
        )
    }

    #[test]
    fn window_range_and_growth() {
        let p = Path::new("f");
        let e = Extent::new(p, 16, &spec(2, Some(4))).unwrap();
        assert_eq!((e.sectors(), e.base(), e.fixed_length()), (4, 1024, true));
        let (r, s) = req(BlockOp::Read, 3, 1);
        assert_eq!(
            e.check(&r, &s),
            Ok(1024 + 3 * SECTOR),
            "moved by the offset"
        );
        let (r, s) = req(BlockOp::Read, 3, 2);
        assert_eq!(e.check(&r, &s), Err(libc::EINVAL), "past the export");
        let (r, _) = req(BlockOp::Read, 0, 2);
        assert_eq!(
            e.check(&r, &Segs::one(std::ptr::null_mut(), 512)),
            Err(libc::EINVAL)
        );
        let r = BlockReq {
            op: BlockOp::Read,
            offset: u64::MAX - 1,
            len: 512,
        };
        assert_eq!(
            e.check(&r, &Segs::one(std::ptr::null_mut(), 512)),
            Err(libc::EINVAL)
        );
        assert_eq!(e.grow(6), 6);
        assert_eq!(e.grow(5), 6, "never shrinks");
        let (w, s) = req(BlockOp::Write, 5, 1);
        assert_eq!(e.check(&w, &s), Ok(1024 + 5 * SECTOR));
        assert!(Extent::new(p, 16, &spec(2, Some(15))).is_err());
        assert!(Extent::new(p, 16, &spec(16, None)).is_err());
    }

    /// Issue 23: a store that shrank under its export keeps the export's
    /// size; writes past the store's new end fail, reads and writes below
    /// it go on, and the fence follows the store back up.
    #[test]
    fn no_write_past_a_shrunk_store() {
        let e = Extent::new(Path::new("f"), 16, &spec(2, None)).unwrap();
        assert_eq!(e.sectors(), 14);
        assert_eq!(e.store_resized(8), 6);
        assert_eq!(e.sectors(), 14, "the export keeps its size");
        let (w, s) = req(BlockOp::Write, 5, 2);
        assert_eq!(e.check(&w, &s), Err(libc::ENOSPC));
        let (w, s) = req(BlockOp::Write, 5, 1);
        assert!(e.check(&w, &s).is_ok());
        let (r, s) = req(BlockOp::Read, 10, 1);
        assert!(e.check(&r, &s).is_ok(), "reads are the store's to fail");
        assert_eq!(e.store_resized(16), 14);
        let (w, s) = req(BlockOp::Write, 13, 1);
        assert!(e.check(&w, &s).is_ok());
    }
}
