//! Tests only: a memory store whose channel completes every request later,
//! out of order, through an eventfd, as a network store (librbd) does.
//!
//! Why: it lets the datapaths' tests catch what a synchronous store hides.
//! A request's data moves only when it completes (a datapath that reuses a
//! frame before the tag comes back sends or stores the wrong bytes), the
//! completions of a batch come back in a shuffled order and only part of
//! them per [`Channel::reap`] (a datapath that assumes FIFO or "everything
//! by the next turn" misbehaves), and the worker must wait on
//! [`Channel::poll_fd`] to see them at all. The order is pseudo-random but
//! deterministic (a fixed seed per channel), so a failure reproduces.
//!
//! A FLUSH completes only after every WRITE submitted before it.
//!
//! Error injection: with `XBLADE_TEST_FAIL_SECTORS=FIRST-LAST` in the
//! environment, every READ and WRITE touching a sector of that range
//! (inclusive) completes, as late as the others, with EIO and moves no
//! data: how a dying disk or a cut cluster looks to the worker, for tests
//! that each such request gets its ATA error reply at once.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{
    Bdev, BlockOp, BlockReq, BlockResult, Chan, Channel, ChannelCx, Extent, Geometry, Segs, Submit,
    Tag,
};
use crate::wire::SECTOR_SIZE;

/// A memory store completing asynchronously.
#[derive(Debug)]
pub struct FakeAsync {
    extent: Arc<Extent>,
    /// The data, shared by every channel (tests only: a lock is fine).
    mem: Arc<Mutex<Vec<u8>>>,
    /// Seeds the channels' orders (each channel its own).
    channels: AtomicU64,
    /// Sectors whose READs and WRITEs fail (first, last; inclusive).
    fail: Option<(u64, u64)>,
}

/// Environment variable naming the sectors whose requests fail
/// (`FIRST-LAST`), see the module documentation.
pub const FAIL_ENV: &str = "XBLADE_TEST_FAIL_SECTORS";

/// Parse `FIRST-LAST` (sectors, inclusive, FIRST <= LAST).
fn parse_fail(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

impl FakeAsync {
    /// A store of `sectors`, zero-filled, exported whole.
    pub fn new(sectors: u64) -> FakeAsync {
        FakeAsync::with_extent(sectors, Extent::fixed(sectors))
    }

    /// A store of `sectors`, zero-filled, exporting `extent` of it.
    fn with_extent(sectors: u64, extent: Extent) -> FakeAsync {
        FakeAsync {
            extent: Arc::new(extent),
            mem: Arc::new(Mutex::new(vec![0u8; sectors as usize * SECTOR_SIZE])),
            channels: AtomicU64::new(0),
            fail: None,
        }
    }

    /// A store of `sectors` exporting `extent`, failing the sectors
    /// [`FAIL_ENV`] names (in the store), if set.
    pub fn from_env(sectors: u64, extent: Extent) -> io::Result<FakeAsync> {
        let mut f = FakeAsync::with_extent(sectors, extent);
        if let Ok(v) = std::env::var(FAIL_ENV) {
            f.fail = Some(parse_fail(&v).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{FAIL_ENV}={v:?}: expected FIRST-LAST, sectors, FIRST <= LAST"),
                )
            })?);
        }
        Ok(f)
    }

    /// A copy of the store's bytes (tests compare it).
    pub fn snapshot(&self) -> Vec<u8> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Bdev for FakeAsync {
    fn extent(&self) -> &Arc<Extent> {
        &self.extent
    }
    fn store_sectors(&self) -> Option<io::Result<u64>> {
        None
    }
    fn geometry(&self) -> Geometry {
        Geometry {
            mem_align: 1,
            reads_zero: false,
        }
    }
    fn open_channel(&self, cx: &ChannelCx) -> io::Result<Chan> {
        let n = self.channels.fetch_add(1, Ordering::Relaxed);
        let mut c = FakeChannel::new(
            Arc::clone(&self.mem),
            cx.depth,
            0x9e37_79b9_7f4a_7c15 ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d),
        )?;
        c.fail = self.fail;
        Ok(Chan::boxed(c))
    }
}

/// A request taken and not completed yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    req: BlockReq,
    segs: Segs,
    tag: Tag,
    /// Submission order (a FLUSH waits for the WRITEs before it).
    seq: u64,
}

/// A channel of [`FakeAsync`].
#[derive(Debug)]
pub struct FakeChannel {
    mem: Arc<Mutex<Vec<u8>>>,
    eventfd: OwnedFd,
    pending: Vec<Pending>,
    /// Scratch for reap (indices, then the chosen requests): allocated once.
    pick: Vec<usize>,
    chosen: Vec<Pending>,
    seq: u64,
    rng: u64,
    /// Sectors whose READs and WRITEs fail (see [`FakeAsync`]).
    fail: Option<(u64, u64)>,
}

// SAFETY: the segments held name memory the worker lends to this channel
// until their tags are reaped; the channel moves with that worker and is
// used by one thread at a time.
unsafe impl Send for FakeChannel {}

impl FakeChannel {
    fn new(mem: Arc<Mutex<Vec<u8>>>, depth: u32, seed: u64) -> io::Result<FakeChannel> {
        // SAFETY: plain eventfd(2) call; no memory is passed.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh descriptor owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let depth = depth.max(1) as usize;
        Ok(FakeChannel {
            mem,
            eventfd,
            pending: Vec::with_capacity(depth),
            pick: Vec::with_capacity(depth),
            chosen: Vec::with_capacity(depth),
            seq: 0,
            rng: seed | 1,
            fail: None,
        })
    }

    /// Whether `req` touches the failing sectors.
    fn fails(&self, req: &BlockReq) -> bool {
        let Some((first, last)) = self.fail else {
            return false;
        };
        if req.op == BlockOp::Flush || req.len == 0 {
            return false;
        }
        let s = req.offset / SECTOR_SIZE as u64;
        let e = (req.offset + u64::from(req.len) - 1) / SECTOR_SIZE as u64;
        s <= last && e >= first
    }

    /// xorshift64*: deterministic, good enough to shuffle.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn signal(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from `one`, a live local, to a non-blocking
        // eventfd owned by `self`.
        let _ = unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                std::ptr::addr_of!(one).cast::<libc::c_void>(),
                8,
            )
        };
    }

    fn clear(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v`, a live local, from a non-blocking
        // eventfd owned by `self`.
        let _ = unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                std::ptr::addr_of_mut!(v).cast::<libc::c_void>(),
                8,
            )
        };
    }

    /// Move the data of a completing request.
    ///
    /// # Safety
    ///
    /// The request's segments are still lent to this channel.
    unsafe fn finish(mem: &mut [u8], p: &Pending) -> BlockResult {
        let mut at = p.req.offset as usize;
        for s in p.segs.as_slice() {
            let len = s.len as usize;
            let store = &mut mem[at..at + len];
            match p.req.op {
                // SAFETY: the caller lends the segment, writable, until the
                // tag is handed back, which happens after this.
                BlockOp::Read => unsafe {
                    std::ptr::copy_nonoverlapping(store.as_ptr(), s.ptr, len)
                },
                // SAFETY: as above, readable.
                BlockOp::Write => unsafe {
                    std::ptr::copy_nonoverlapping(s.ptr, store.as_mut_ptr(), len)
                },
                BlockOp::Flush => {}
            }
            at += len;
        }
        Ok(())
    }
}

impl Channel for FakeChannel {
    unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, tag: Tag) -> Submit {
        if self.pending.len() == self.pending.capacity() {
            return Submit::Busy;
        }
        self.seq += 1;
        self.pending.push(Pending {
            req,
            segs: *segs,
            tag,
            seq: self.seq,
        });
        Submit::Queued
    }

    fn end_batch(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.signal();
        }
        Ok(())
    }

    fn reap(&mut self, done: &mut dyn FnMut(Tag, BlockResult)) -> usize {
        self.clear();
        let n = self.pending.len();
        if n == 0 {
            return 0;
        }
        // Eligible: anything but a FLUSH with an earlier WRITE still
        // pending. The oldest request always is.
        self.pick.clear();
        for i in 0..n {
            let p = &self.pending[i];
            let blocked = p.req.op == BlockOp::Flush
                && self
                    .pending
                    .iter()
                    .any(|w| w.req.op == BlockOp::Write && w.seq < p.seq);
            if !blocked {
                self.pick.push(i);
            }
        }
        // How many: at least one, never all of several.
        let most = self.pick.len().min(n - 1).max(1);
        let k = 1 + self.below(most);
        // Partial Fisher-Yates: the first k of `pick` are the chosen ones.
        for i in 0..k {
            let j = i + self.below(self.pick.len() - i);
            self.pick.swap(i, j);
        }
        self.pick.truncate(k);
        self.pick.sort_unstable_by(|a, b| b.cmp(a));
        self.chosen.clear();
        for &i in &self.pick {
            self.chosen.push(self.pending.swap_remove(i));
        }
        // Completion order: shuffled again (the removal sorted them).
        for i in (1..self.chosen.len()).rev() {
            let j = self.below(i + 1);
            self.chosen.swap(i, j);
        }
        for p in &self.chosen {
            if self.fails(&p.req) {
                done(p.tag, Err(libc::EIO));
                continue;
            }
            let mut mem = self.mem.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: `p` is still pending: its segments are lent to this
            // channel until `done` gets its tag, just below.
            let r = unsafe { Self::finish(&mut mem, p) };
            // Unlocked before `done`, which may use another channel.
            drop(mem);
            done(p.tag, r);
        }
        if !self.pending.is_empty() {
            self.signal();
        }
        self.chosen.len()
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.eventfd.as_raw_fd())
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }
}
