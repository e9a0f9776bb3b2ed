//! The io_uring channel of a [`FileDisk`]: what the AF_XDP worker did with
//! its stores itself, behind [`Channel`].
//!
//! One ring per channel (per worker), the store's descriptor registered as
//! fixed file 0, the worker's memory regions ([`ChannelCx::memory`])
//! registered as fixed buffers `0..n` and, for an O_DIRECT store, an aligned
//! [`Bounce`] area as buffer `n`. Per request:
//!
//! - READ: one READ_FIXED (one segment) or READV_FIXED (several) when every
//!   segment lies in one registered region, else a plain READV. O_DIRECT
//!   and a segment that is not aligned to the store's memory alignment: the
//!   aligned leading segments (the head of a jumbo reply at chunk + 512)
//!   are read in place and the rest (the tails at chunk + 476) into a bounce
//!   slot, copied into place when the request is reaped. A store wanting
//!   more than 512-byte alignment bounces everything (a UMEM chunk offers no
//!   more than that).
//! - WRITE, `writeback` (the store acknowledges from the page cache):
//!   pwritev on the worker's thread, done during the submit. Why not
//!   io_uring: ext4 has no non-blocking buffered write, so io_uring hands
//!   each one to an io-wq thread on the worker's core, paying an eventfd
//!   wakeup and two context switches per write (0.65x vblade at 1 KiB,
//!   window 64). vblade and the synchronous channel write inline too.
//! - WRITE, durable through the page cache (the store has a plain
//!   descriptor): the same pwritev on the plain descriptor, then held in a
//!   [`GroupCommit`] until an `fdatasync` that started after it completes
//!   (one device flush for every write of the batch, see [`super::commit`]).
//! - WRITE otherwise (`-s`, O_DIRECT): WRITE_FIXED / WRITEV_FIXED (or plain
//!   WRITEV outside the regions); O_DIRECT with unaligned segments gathers
//!   the data into a bounce slot first.
//! - FLUSH: `fdatasync` ordered after everything before it (IO_DRAIN).
//!
//! Every tag comes back exactly once: from [`Submit::Done`] or from
//! [`Channel::reap`], errors included. Nothing allocates per request: the
//! ring's slab, the bounce slots and the group-commit lists are sized when
//! the channel opens.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use super::bounce::Bounce;
use super::commit::GroupCommit;
use super::uring::{self, Dir, Op, Uring};
use super::{
    BlockOp, BlockReq, BlockResult, Channel, ChannelCounters, ChannelCx, FileDisk, MemRegion, Seg,
    Segs, Submit, Tag, MAX_SEGS,
};
use crate::wire::SECTOR_SIZE;

/// Fixed-file index of the store's descriptor.
const FILE: u32 = 0;

/// What one ring operation is for.
#[derive(Debug)]
enum Token {
    /// A request's own operation.
    Req(ReqToken),
    /// The group commit `fdatasync`.
    Commit,
}

/// A request on the ring, with what its completion needs. Kept small (12
/// bytes): it is moved into the ring's slab and out again per request.
#[derive(Debug)]
struct ReqToken {
    tag: Tag,
    op: BlockOp,
    /// The bounce slot held, if any (the request's memory is kept only
    /// then: a request without one copies nothing at its completion).
    bounce: Option<Bounced>,
}

/// A bounce slot a request holds.
#[derive(Debug, Clone, Copy)]
struct Bounced {
    slot: u16,
    /// The first of the request's segments the slot stands for (a READ:
    /// the slot holds the data of `segs[from..]`, copied there when
    /// reaped). The segments are in the channel's `bounced[slot]`, not in
    /// the token: a token carrying 100 bytes of segments cost every
    /// request two copies of them through the ring's slab (issue 25).
    from: u8,
}

/// An io_uring channel on a [`FileDisk`] (see the module doc).
pub struct UringChannel {
    // Field order is drop order: the ring (whose Drop waits for every
    // operation in flight) before the bounce area it reads and writes.
    ring: Uring<Token>,
    bounce: Option<Bounce>,
    /// The memory of the request holding each bounce slot.
    bounced: Vec<Segs>,
    /// The store's descriptor (registered as fixed file [`FILE`]; also the
    /// inline pwritev target of a `writeback` store).
    file: Arc<File>,
    /// Group commit descriptor (no O_DSYNC), when the store has one.
    plain: Option<Arc<File>>,
    /// The worker's memory, registered as fixed buffers `0..regions.len()`.
    regions: Vec<MemRegion>,
    /// O_DIRECT: memory alignment transfers need (0: none).
    align: usize,
    /// O_DIRECT with an alignment above 512: every transfer bounces.
    bounce_all: bool,
    /// Writes are acknowledged from the page cache: pwritev inline.
    page_cache_acks: bool,
    /// Durable page-cache writes waiting for their fdatasync.
    commit: Option<GroupCommit<Tag>>,
    /// The group commit fdatasync occupies a ring slot.
    syncing: bool,
    /// Requests the worker may queue (the ring has one more slot, for the
    /// group commit's fdatasync).
    depth: usize,
    counters: ChannelCounters,
}

// SAFETY: the raw pointers held (regions, segments in ring tokens) name
// memory the worker owns and lends to this channel; the channel moves
// between threads only together with that worker and is used by one thread
// at a time.
unsafe impl Send for UringChannel {}

impl std::fmt::Debug for UringChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringChannel")
            .field("ring", &self.ring)
            .field("bounce", &self.bounce)
            .field("align", &self.align)
            .field("held", &self.commit.as_ref().map_or(0, GroupCommit::held))
            .finish()
    }
}

impl UringChannel {
    /// A channel on `disk` for a worker offering `cx`: its own ring of
    /// `cx.depth` requests with `cx.memory()` registered.
    pub fn open(disk: &FileDisk, cx: &ChannelCx) -> io::Result<UringChannel> {
        let (file, plain) = disk.channel_files();
        let depth = cx.depth.clamp(1, 4095) as usize;
        let align = if disk.direct() {
            disk.mem_align() as usize
        } else {
            0
        };
        if align > SECTOR_SIZE {
            tracing::warn!(path = %disk.path().display(), mem_align = align,
                "O_DIRECT needs more than 512-byte aligned memory: every transfer goes through the bounce area");
        }
        if disk.direct() {
            if let Some((_, off)) = uring::dio_alignment(file.as_raw_fd()) {
                if off as usize > SECTOR_SIZE {
                    tracing::warn!(path = %disk.path().display(), offset_align = off,
                        "O_DIRECT needs offsets aligned beyond one sector: smaller requests will fail");
                }
            }
        }
        let bounce = if align > 0 {
            let slots = u16::try_from(depth).unwrap_or(u16::MAX);
            Some(Bounce::new(slots, cx.max_io.max(SECTOR_SIZE))?)
        } else {
            None
        };
        let mut bufs: Vec<libc::iovec> = cx
            .memory()
            .iter()
            .map(|r| libc::iovec {
                iov_base: r.ptr.cast(),
                iov_len: r.len,
            })
            .collect();
        if let Some(b) = &bounce {
            bufs.push(b.iovec());
        }
        // SAFETY: the regions stay mapped while any channel opened with `cx`
        // lives (ChannelCx::new's contract); the bounce area is a field
        // declared after `ring`, so it is unmapped only after the ring's
        // Drop has waited for every operation.
        let ring = unsafe { Uring::new(depth as u32 + 1, &[file.as_raw_fd()], &bufs) }?;
        let bounced = vec![Segs::default(); bounce.as_ref().map_or(0, Bounce::slots)];
        Ok(UringChannel {
            ring,
            bounce,
            bounced,
            file,
            commit: plain.as_ref().map(|_| GroupCommit::new(depth)),
            plain,
            regions: cx.memory().to_vec(),
            align,
            bounce_all: align > SECTOR_SIZE,
            page_cache_acks: disk.page_cache_acks(),
            syncing: false,
            depth,
            counters: ChannelCounters::default(),
        })
    }

    /// Requests on the ring (the group commit's fdatasync excluded).
    fn ring_reqs(&self) -> usize {
        self.ring.in_flight() - usize::from(self.syncing)
    }

    /// Registered buffer index of the bounce area.
    fn bounce_buf(&self) -> u16 {
        self.regions.len() as u16
    }

    /// Queue the group commit fdatasync when writes wait and none runs.
    fn start_commit(&mut self) {
        let Some(g) = self.commit.as_mut() else {
            return;
        };
        if !g.ready() {
            return;
        }
        // SAFETY: an fdatasync names no memory.
        if unsafe { self.ring.push(FILE, 0, Op::Sync, Token::Commit) }.is_ok() {
            g.started();
            self.syncing = true;
        }
        // Else no slot (cannot happen: one is kept for it); the next
        // end_batch or reap tries again.
    }

    /// Start a READ or a ring WRITE. The range is checked.
    ///
    /// # Safety
    ///
    /// As [`Channel::submit`].
    #[inline]
    unsafe fn start_rw(&mut self, req: BlockReq, segs: &Segs, tag: Tag, at: u64) -> Submit {
        let s = segs.as_slice();
        let write = req.op == BlockOp::Write;
        // How many leading segments go straight to the store; the rest
        // bounce.
        let direct_n = if self.align == 0 {
            s.len()
        } else if self.bounce_all {
            0
        } else if write {
            // A WRITE gathers everything when anything is unaligned.
            if segs.aligned(self.align) {
                s.len()
            } else {
                0
            }
        } else {
            s.iter()
                .position(|g| g.ptr as usize % self.align != 0 || g.len as usize % self.align != 0)
                .unwrap_or(s.len())
        };
        // Without a bounce the request's own segments go to the ring as
        // they are; with one, the aligned head and the slot.
        // Filled only when bouncing: most requests go as they are.
        let bounced_ops: [Seg; MAX_SEGS];
        let mut ring_segs = s;
        let mut fixed = None;
        let mut bounce = None;
        if direct_n < s.len() {
            let mut ops = [Seg::EMPTY; MAX_SEGS];
            ops[..direct_n].copy_from_slice(&s[..direct_n]);
            let rest: usize = s[direct_n..].iter().map(|g| g.len as usize).sum();
            let Some(b) = self.bounce.as_mut() else {
                return Submit::Done(Err(libc::EINVAL));
            };
            if rest > b.slot_len() {
                return Submit::Done(Err(libc::EINVAL));
            }
            let Some(slot) = b.alloc() else {
                return Submit::Busy;
            };
            if write {
                // SAFETY: the segments are lent by the caller for the
                // transfer; the slot was just taken and holds `rest` bytes.
                unsafe { b.gather(slot, &s[direct_n..]) };
            }
            ops[direct_n] = Seg {
                ptr: b.ptr(slot),
                len: rest as u32,
            };
            bounced_ops = ops;
            ring_segs = &bounced_ops[..=direct_n];
            self.bounced[usize::from(slot)] = *segs;
            bounce = Some(Bounced {
                slot,
                from: direct_n as u8,
            });
            if direct_n == 0 {
                fixed = Some(self.bounce_buf());
            }
        } else if let Some(r) = MemRegion::holding(&self.regions, segs) {
            fixed = Some(r as u16);
        }
        let held = bounce.as_ref().map(|b| b.slot);
        let op = Op::Rw {
            dir: if write { Dir::Write } else { Dir::Read },
            segs: ring_segs,
            fixed,
        };
        let tok = Token::Req(ReqToken {
            tag,
            op: req.op,
            bounce,
        });
        // SAFETY: the segments are lent until `tag` is reaped (the caller's
        // contract); the bounce slot is this request's until its token is
        // reaped; `fixed` names the registered region holding every
        // segment, or the bounce area holding the one segment.
        match unsafe { self.ring.push(FILE, at, op, tok) } {
            Ok(()) => Submit::Queued,
            Err(_) => {
                if let (Some(slot), Some(b)) = (held, self.bounce.as_mut()) {
                    b.release(slot);
                }
                Submit::Busy
            }
        }
    }
}

/// pwritev every segment at `at` on `fd`, resuming after short writes.
///
/// # Safety
///
/// The segments must be readable for their lengths for the call.
unsafe fn pwritev_all(fd: RawFd, segs: &Segs, mut at: u64) -> BlockResult {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_SEGS];
    let s = segs.as_slice();
    for (v, g) in iov.iter_mut().zip(s) {
        *v = libc::iovec {
            iov_base: g.ptr.cast(),
            iov_len: g.len as usize,
        };
    }
    let mut iov = &mut iov[..s.len()];
    while !iov.is_empty() {
        // SAFETY: every iovec names (the rest of) a segment the caller lends
        // for the call; pwritev only reads them.
        let n = unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as i32, at as i64) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.raw_os_error().unwrap_or(libc::EIO));
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        at += n as u64;
        let mut n = n as usize;
        while let Some(first) = iov.first_mut() {
            if n < first.iov_len {
                first.iov_base = first.iov_base.wrapping_add(n);
                first.iov_len -= n;
                break;
            }
            n -= first.iov_len;
            iov = &mut std::mem::take(&mut iov)[1..];
        }
    }
    Ok(())
}

impl UringChannel {
    /// [`Channel::reap`] with `done` called directly: the worker's queue
    /// holds this channel by value ([`super::Chan::Uring`]), so the whole
    /// completion path inlines into its loop.
    #[inline]
    pub fn reap_each(&mut self, mut done: impl FnMut(Tag, BlockResult)) -> usize {
        let mut n = 0;
        let UringChannel {
            ring,
            bounce,
            bounced,
            commit,
            syncing,
            counters,
            ..
        } = self;
        ring.reap(|tok, res| match tok {
            Token::Req(t) => {
                if let (Some(h), Some(b)) = (t.bounce, bounce.as_mut()) {
                    if t.op == BlockOp::Read && res.is_ok() {
                        let segs = &bounced[usize::from(h.slot)];
                        // SAFETY: the read into the slot has completed; the
                        // slot holds the data of these segments in order;
                        // the segments are still lent to this request (its
                        // tag is handed back below).
                        unsafe { b.scatter(h.slot, &segs.as_slice()[usize::from(h.from)..]) };
                    }
                    b.release(h.slot);
                }
                n += 1;
                done(t.tag, res);
            }
            Token::Commit => {
                *syncing = false;
                if let Some(g) = commit.as_mut() {
                    let mut batch = g.take_synced();
                    counters.group_commits += 1;
                    counters.group_commit_writes += batch.len() as u64;
                    for t in batch.drain(..) {
                        n += 1;
                        done(t, res);
                    }
                    g.give_back(batch);
                }
            }
        });
        // Writes that arrived while the last sync ran get theirs now,
        // without waiting for the next batch.
        if self.commit.as_ref().is_some_and(GroupCommit::ready) {
            self.start_commit();
            let _ = self.ring.submit();
        }
        n
    }
}

impl Channel for UringChannel {
    #[inline]
    unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, tag: Tag) -> Submit {
        if req.op != BlockOp::Flush && segs.as_slice().is_empty() {
            // A ring transfer names one segment at least.
            return Submit::Done(Err(libc::EINVAL));
        }
        let at = req.offset;
        match req.op {
            BlockOp::Write if self.page_cache_acks => {
                // SAFETY: the caller lends the segments for the call.
                Submit::Done(unsafe { pwritev_all(self.file.as_raw_fd(), segs, at) })
            }
            BlockOp::Write if self.plain.is_some() => {
                let (Some(g), Some(p)) = (self.commit.as_mut(), self.plain.as_ref()) else {
                    return Submit::Done(Err(libc::EINVAL));
                };
                if g.held() >= self.depth {
                    return Submit::Busy;
                }
                // SAFETY: the caller lends the segments for the call.
                match unsafe { pwritev_all(p.as_raw_fd(), segs, at) } {
                    Ok(()) => {
                        g.written(tag);
                        Submit::Queued
                    }
                    Err(e) => Submit::Done(Err(e)),
                }
            }
            _ if self.ring_reqs() >= self.depth || self.ring.is_full() => Submit::Busy,
            BlockOp::Flush => {
                let tok = Token::Req(ReqToken {
                    tag,
                    op: req.op,
                    bounce: None,
                });
                // SAFETY: an fdatasync names no memory.
                match unsafe { self.ring.push(FILE, 0, Op::Flush, tok) } {
                    Ok(()) => Submit::Queued,
                    Err(_) => Submit::Busy,
                }
            }
            // SAFETY: the caller's contract, passed on.
            _ => unsafe { self.start_rw(req, segs, tag, at) },
        }
    }

    #[inline]
    fn end_batch(&mut self) -> io::Result<()> {
        self.start_commit();
        self.ring.submit()
    }

    fn reap(&mut self, done: &mut dyn FnMut(Tag, BlockResult)) -> usize {
        self.reap_each(done)
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.ring.event_fd())
    }

    fn in_flight(&self) -> usize {
        self.ring_reqs() + self.commit.as_ref().map_or(0, GroupCommit::held)
    }

    fn counters(&self) -> ChannelCounters {
        self.counters
    }
}
