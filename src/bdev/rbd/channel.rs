//! A worker's queue to an RBD image: its own image handle, requests started
//! with librbd's asynchronous calls on the frame memory itself, completions
//! announced on the image's eventfd and collected with
//! `rbd_poll_io_events` (no librbd callback: nothing of ours runs on
//! librbd's threads).
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ffi::{self, Completion};
use super::lease::{now_ns, ChannelWatch, Lease};
use super::{open_image, ImageHandle, RbdDisk, SharedImage};
use crate::bdev::{
    BlockOp, BlockReq, BlockResult, Channel, ChannelCx, Segs, Submit, Tag, MAX_SEGS,
};
use crate::slab::Slab;

/// Completions collected per `rbd_poll_io_events` call.
const POLL_BATCH: usize = 32;

/// One request in flight.
#[derive(Debug)]
struct Slot {
    tag: Tag,
    op: BlockOp,
    len: u32,
    comp: Completion,
}

/// See the module documentation.
pub struct RbdChannel {
    lib: &'static ffi::Lib,
    /// Requests in flight; the key is the completion's argument.
    slots: Slab<Slot>,
    /// The iovec array of each slot (same key). librbd keeps the array of a
    /// readv until it completes (it copies the data there at the end), so
    /// it lives here, in memory that does not move while the channel lives.
    iovs: Box<[[libc::iovec; MAX_SEGS]]>,
    /// librbd requests in flight over the export (status).
    export_in_flight: Arc<AtomicU64>,
    /// The export's registry of channel handles (size probe).
    registry: Arc<std::sync::Mutex<Vec<SharedImage>>>,
    /// The gateway lease (writable exports): gates writes.
    lease: Option<Arc<Lease>>,
    /// What the lease thread sees of this channel: loop turns, write ages.
    watch: Arc<ChannelWatch>,
    /// Field order is drop order after `Drop::drop` has waited for the
    /// requests: the image closes before the eventfd it writes to.
    handle: ImageHandle,
    event: OwnedFd,
}

// SAFETY: the raw pointers (completions, iovec bases) belong to requests of
// this channel, which moves between threads only as a whole.
unsafe impl Send for RbdChannel {}

impl std::fmt::Debug for RbdChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdChannel")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl RbdChannel {
    /// Open the worker's own image handle and its eventfd.
    pub fn open(disk: &RbdDisk, cx: &ChannelCx) -> io::Result<RbdChannel> {
        let lib = disk.pool.cluster.lib;
        // From a thread off the workers' cores: opening starts librbd
        // threads, which inherit the opener's CPU mask.
        let handle = super::off_workers(|| open_image(&disk.pool, &disk.name, disk.read_only))
            .map_err(io::Error::other)?
            .map_err(|r| io::Error::from_raw_os_error(-r))?;
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an open image; the eventfd outlives it (field order).
        let r =
            unsafe { (lib.rbd_set_image_notification)(handle.image, fd, ffi::EVENT_TYPE_EVENTFD) };
        if r < 0 {
            return Err(io::Error::from_raw_os_error(-r));
        }
        disk.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SharedImage(handle.image));
        let depth = cx.depth.max(1);
        let watch = Arc::new(ChannelWatch::new(depth as usize));
        if let Some(l) = &disk.lease {
            l.watch(Arc::clone(&watch));
        }
        let iovs = (0..depth)
            .map(|_| {
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_SEGS]
            })
            .collect();
        Ok(RbdChannel {
            lib,
            slots: Slab::new(depth as usize),
            iovs,
            export_in_flight: Arc::clone(&disk.in_flight),
            registry: Arc::clone(&disk.handles),
            lease: disk.lease.clone(),
            watch,
            handle,
            event,
        })
    }

    /// The result of a finished request from librbd's return value: bytes
    /// (reads must return all of them) or -errno.
    fn result(op: BlockOp, len: u32, r: isize) -> BlockResult {
        // A fenced gateway answers nothing: the initiator retries the
        // request through another gateway.
        if r == -(super::ffi::EBLOCKLISTED as isize) {
            return Err(crate::bdev::DROPPED);
        }
        if r < 0 {
            return Err(i32::try_from(-r).unwrap_or(libc::EIO));
        }
        let ok = match op {
            BlockOp::Read => r as usize == len as usize,
            // librbd reports 0 or the length for a write.
            BlockOp::Write => r == 0 || r as usize == len as usize,
            BlockOp::Flush => true,
        };
        if ok {
            Ok(())
        } else {
            Err(libc::EIO)
        }
    }

    /// Release slot `i` and its completion.
    fn finish(&mut self, i: u32) {
        let Some(s) = self.slots.remove(i) else {
            return;
        };
        // SAFETY: the completion is finished (returned by
        // rbd_poll_io_events or waited for) and released once: its slot
        // is gone.
        unsafe { (self.lib.rbd_aio_release)(s.comp) };
        self.watch.writes[i as usize].store(0, Ordering::Release);
        self.export_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Channel for RbdChannel {
    unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, tag: Tag) -> Submit {
        if req.op == BlockOp::Write {
            if let Some(l) = self.lease.as_deref().filter(|l| !l.admits_write()) {
                // No lease: the initiator may complete this request
                // through another gateway; it must not land here later.
                l.stale_dropped.fetch_add(1, Ordering::Relaxed);
                return Submit::Done(Err(crate::bdev::DROPPED));
            }
        }
        let Some(i) = self.slots.next_key() else {
            return Submit::Busy;
        };
        let mut comp: Completion = std::ptr::null_mut();
        // SAFETY: out pointer; the argument is the slot index (no callback:
        // completion is announced on the eventfd).
        let r = unsafe {
            (self.lib.rbd_aio_create_completion)(i as usize as *mut c_void, None, &mut comp)
        };
        if r < 0 {
            return Submit::Done(Err(-r));
        }
        let slot = Slot {
            tag,
            op: req.op,
            len: req.len,
            comp,
        };
        let key = self.slots.insert(slot);
        debug_assert_eq!(key.ok(), Some(i), "the slab hands out next_key");
        let iov = &mut self.iovs[i as usize];
        for (v, g) in iov.iter_mut().zip(segs.as_slice()) {
            v.iov_base = g.ptr.cast();
            v.iov_len = g.len as usize;
        }
        if req.op == BlockOp::Write {
            self.watch.writes[i as usize].store(now_ns(), Ordering::Release);
        }
        let n = segs.as_slice().len() as i32;
        let at = req.offset;
        let img = self.handle.image;
        // SAFETY: the caller lends the segments until this tag is reaped
        // (the submit contract), and the iovec array sits in this slot,
        // which stays put and untouched until then; the completion is this
        // request's.
        let r = unsafe {
            match req.op {
                BlockOp::Read => (self.lib.rbd_aio_readv)(img, iov.as_ptr(), n, at, comp),
                BlockOp::Write => (self.lib.rbd_aio_writev)(img, iov.as_ptr(), n, at, comp),
                BlockOp::Flush => (self.lib.rbd_aio_flush)(img, comp),
            }
        };
        self.export_in_flight.fetch_add(1, Ordering::Relaxed);
        if r < 0 {
            // Refused before it started: the completion never fires.
            self.finish(i);
            return Submit::Done(Err(-r));
        }
        Submit::Queued
    }

    fn end_batch(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn reap(&mut self, done: &mut dyn FnMut(Tag, BlockResult)) -> usize {
        // The worker reaps on every turn of its loop: proof of life for
        // the lease (a stalled worker must not keep it).
        self.watch.alive.store(now_ns(), Ordering::Release);
        let mut n = 0;
        let mut comps: [Completion; POLL_BATCH] = [std::ptr::null_mut(); POLL_BATCH];
        loop {
            // SAFETY: an open image; `comps` holds POLL_BATCH entries.
            let got = unsafe {
                (self.lib.rbd_poll_io_events)(
                    self.handle.image,
                    comps.as_mut_ptr(),
                    POLL_BATCH as i32,
                )
            };
            if got <= 0 {
                break;
            }
            for &c in &comps[..got as usize] {
                // SAFETY: a finished completion of this image, created by
                // this channel with its slot index as argument.
                let (i, r) = unsafe {
                    (
                        (self.lib.rbd_aio_get_arg)(c) as usize,
                        (self.lib.rbd_aio_get_return_value)(c),
                    )
                };
                let Some(s) = self.slots.get(i as u32).filter(|s| s.comp == c) else {
                    tracing::error!(
                        slot = i,
                        "librbd returned a completion this channel does not own"
                    );
                    continue;
                };
                let (tag, mut res) = (s.tag, Self::result(s.op, s.len, r));
                if res.is_err()
                    && self
                        .lease
                        .as_deref()
                        .is_some_and(|l| !l.may_answer_errors())
                {
                    res = Err(crate::bdev::DROPPED);
                }
                self.finish(i as u32);
                done(tag, res);
                n += 1;
            }
            if (got as usize) < POLL_BATCH {
                break;
            }
        }
        n
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.event.as_raw_fd())
    }

    fn in_flight(&self) -> usize {
        self.slots.len()
    }
}

impl Drop for RbdChannel {
    fn drop(&mut self) {
        // Requests still out hold pointers into frames and into our slots:
        // wait for each before the image (and the slots) go.
        for (_, s) in self.slots.iter() {
            // SAFETY: an unreleased completion of this channel.
            unsafe { (self.lib.rbd_aio_wait_for_complete)(s.comp) };
        }
        // Take them off the image's event queue, then release every one.
        self.reap(&mut |_, _| {});
        for i in 0..self.slots.capacity() as u32 {
            self.finish(i);
        }
        if let Some(l) = &self.lease {
            l.unwatch(&self.watch);
        }
        let me = SharedImage(self.handle.image);
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|h| *h != me);
    }
}
