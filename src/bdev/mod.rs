//! Block devices under the exports: the one storage interface of both
//! datapaths.
//!
//! Shaped after SPDK's bdev and io_channel: a [`Bdev`] per export, shared by
//! every worker, knows its size and what its memory must look like
//! ([`Geometry`]); each worker opens its own [`Queue`] on it
//! ([`Bdev::open_queue`]) and submits requests there, single-threaded, with
//! the segments of frame memory the data lands in (READ) or leaves from
//! (WRITE) and a [`Tag`]. A request completes at once ([`Submit::Done`]:
//! pread, null) or later (io_uring, a network store), and then its tag
//! comes back exactly once through [`Queue::reap`]; it may also be refused
//! with nothing taken ([`Submit::Busy`]), and the worker then stops taking
//! frames until something completes.
//!
//! The bdev core ([`extent`]) is the part no store writes: the range check,
//! the `-o/-l` window, online growth and the write fence of a shrunk store.
//! A [`Queue`] applies it and hands the request, moved into the store, to
//! the store's [`Channel`], which only moves bytes. What a store needs and
//! a datapath should not know lives behind the channel: O_DIRECT alignment
//! (the bounce copies are [`bounce`]'s), group commit ([`commit`]), the
//! durability policy.
//!
//! ## Writing a store
//!
//! A new store is one file here with two types and one line in [`open`]:
//!
//! 1. The store (`impl Bdev`, shared by every worker): build its
//!    [`Extent`] with [`Extent::new`] from the store's size and the
//!    [`DiskSpec`] (offset, length), return it from [`Bdev::extent`], say
//!    what the store's size is now in [`Bdev::store_sectors`] (`None` when
//!    it never changes) and what its memory must look like in
//!    [`Bdev::geometry`]. Size, growth and probing come with the extent.
//! 2. The channel (`impl Channel`, one per worker): `submit` gets requests
//!    already checked and moved into the store (byte offsets in the store,
//!    inside the export, the segments holding exactly `len` bytes), moves
//!    the bytes or starts moving them, and hands every tag back once: in
//!    [`Submit::Done`] or through `reap`. A store completing later gives a
//!    [`Channel::poll_fd`] the worker waits on; one with a fixed number of
//!    operation slots keeps them in a `Slab` (`src/slab.rs`) sized at open,
//!    so nothing allocates per request (`tests/bdev_no_alloc.rs` checks).
//!    `open_channel` returns it as [`Chan::boxed`]: the queue calls it
//!    through the trait. Only the file channels, the hot ones, are held by
//!    value ([`Chan::Uring`], [`Chan::File`]) so that their calls inline
//!    into the worker's loop.
//!
//! [`null`] is the smallest example, `fake` (tests only: cargo feature
//! `test-stores`) one completing later.
//!
//! Durability is decided when the store is opened: by default every write
//! goes through a descriptor opened `O_DSYNC`, or through a plain one
//! followed by an `fdatasync` before it is acknowledged (group commit), so
//! a write is on stable storage when its completion comes back (the Linux
//! initiator never sends FLUSH). `writeback` opts out.
//!
//! Implementations: [`null`] (complete at once), [`file`](mod@file) (pread/pwritev on
//! the worker's thread), [`file_uring`] (the same file through io_uring with
//! fixed files and buffers, O_DIRECT; its ring in [`uring`]), `fake`
//! (tests: completes later, out of order, through an eventfd; compiled only
//! with the cargo feature `test-stores`, so the shipped daemon lacks it).
#![deny(unsafe_code)]

pub mod bounce;
#[cfg(test)]
mod channel_tests;
pub mod commit;
pub mod extent;
#[cfg(feature = "test-stores")]
pub mod fake;
pub mod file;
pub mod file_uring;
pub mod lock;
pub mod null;
pub mod rbd;
pub mod uring;

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

pub use extent::{Chan, Extent, Queue};
pub use file::FileDisk;
pub use null::NullDisk;

use crate::wire::SECTOR_SIZE;

/// Most memory segments one request may name (a jumbo frame's fragments).
pub const MAX_SEGS: usize = 6;

/// One piece of memory a request transfers to or from.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    /// Start.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: u32,
}

impl Seg {
    /// An empty segment (fills unused slots).
    pub const EMPTY: Seg = Seg {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
}

/// The memory of one request, in order: at most [`MAX_SEGS`] segments.
#[derive(Debug, Clone, Copy)]
pub struct Segs {
    n: u8,
    seg: [Seg; MAX_SEGS],
}

impl Default for Segs {
    fn default() -> Segs {
        Segs {
            n: 0,
            seg: [Seg::EMPTY; MAX_SEGS],
        }
    }
}

impl Segs {
    /// One segment.
    #[inline]
    pub fn one(ptr: *mut u8, len: usize) -> Segs {
        let mut s = Segs::default();
        s.push(ptr, len);
        s
    }

    /// Append a segment; false (nothing appended) when full.
    #[inline]
    pub fn push(&mut self, ptr: *mut u8, len: usize) -> bool {
        let i = usize::from(self.n);
        if i == MAX_SEGS {
            return false;
        }
        self.seg[i] = Seg {
            ptr,
            len: len as u32,
        };
        self.n += 1;
        true
    }

    /// The segments.
    #[inline]
    pub fn as_slice(&self) -> &[Seg] {
        &self.seg[..usize::from(self.n)]
    }

    /// Bytes in all segments.
    #[inline]
    pub fn total(&self) -> usize {
        self.as_slice().iter().map(|s| s.len as usize).sum()
    }

    /// Every segment starts and ends on a multiple of `align` bytes.
    #[inline]
    pub fn aligned(&self, align: usize) -> bool {
        align <= 1
            || self
                .as_slice()
                .iter()
                .all(|s| s.ptr as usize % align == 0 && s.len as usize % align == 0)
    }
}

/// Direction and kind of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOp {
    /// Store to memory.
    Read,
    /// Memory to store.
    Write,
    /// Every write completed before it is on stable storage.
    Flush,
}

/// A request: byte offset and length inside the export (to a [`Queue`];
/// the engine has checked the range against the export's size), or inside
/// the store (to a [`Channel`], from its queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockReq {
    /// What to do.
    pub op: BlockOp,
    /// Byte offset inside the export.
    pub offset: u64,
    /// Bytes (0 for a flush).
    pub len: u32,
}

/// The submitter's name for a request, handed back with its result.
pub type Tag = u32;

/// A request's result: `Err(errno)` on failure.
pub type BlockResult = Result<(), i32>;

/// What [`Channel::submit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// Completed during the call; its memory is the caller's again and the
    /// tag will not come back from [`Channel::reap`].
    Done(BlockResult),
    /// Taken: the tag comes back once from [`Channel::reap`], and the
    /// memory stays the channel's until then.
    Queued,
    /// Nothing taken (no slot, no bounce room): submit again after
    /// something completes.
    Busy,
}

/// What a store needs from the memory it is given, and what it can do
/// without any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Memory and length alignment for a transfer without a copy (1: any;
    /// 512 or more under O_DIRECT). A channel copies through an aligned
    /// bounce buffer what does not meet it, so this is a hint for where
    /// datapaths place data, not a rule for them.
    pub mem_align: u32,
    /// READs return zeros (null store): a datapath may answer them from
    /// frames it keeps zeroed, without submitting them.
    pub reads_zero: bool,
}

/// How a file channel does its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// pread/pwritev on the worker's thread.
    #[default]
    Sync,
    /// io_uring with the worker's frame memory registered as fixed buffers.
    Uring,
    /// io_uring where every request waits for the device (O_DIRECT,
    /// O_SYNC): many in flight at once; pread/pwritev through the page
    /// cache, where a request costs less than an io_uring round trip.
    DeviceAsync,
}

/// A piece of memory a worker lends to its channels for their whole life
/// (its UMEM or frame pool): an io_uring channel registers it as a fixed
/// buffer once, so later transfers into it skip the page pinning.
#[derive(Debug, Clone, Copy)]
pub struct MemRegion {
    /// Start.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

impl MemRegion {
    /// Index of the region in `regions` that holds every segment of `segs`.
    #[inline]
    pub fn holding(regions: &[MemRegion], segs: &Segs) -> Option<usize> {
        regions.iter().position(|r| {
            let (lo, hi) = (r.ptr as usize, r.ptr as usize + r.len);
            segs.as_slice()
                .iter()
                .all(|s| s.ptr as usize >= lo && s.ptr as usize + s.len as usize <= hi)
        })
    }
}

/// What a worker offers the channels it opens.
#[derive(Debug, Clone)]
pub struct ChannelCx {
    memory: Vec<MemRegion>,
    /// Longest transfer of one request in bytes (sizes bounce buffers).
    pub max_io: usize,
    /// Requests the worker may have queued on the channel at once.
    pub depth: u32,
    /// How file channels do their I/O.
    pub engine: IoEngine,
}

// SAFETY: the regions are addresses of memory owned by the worker that
// opens the channels and moves with them; nothing here dereferences them.
#[allow(unsafe_code)]
unsafe impl Send for ChannelCx {}

impl ChannelCx {
    /// A context lending `memory`.
    ///
    /// # Safety
    ///
    /// Every region must stay mapped, neither unmapped nor remapped, for as
    /// long as any channel opened with this context lives: an io_uring
    /// channel registers the regions and the kernel keeps their pages
    /// pinned.
    #[allow(unsafe_code)]
    pub unsafe fn new(memory: Vec<MemRegion>, max_io: usize, depth: u32, engine: IoEngine) -> Self {
        ChannelCx {
            memory,
            max_io,
            depth,
            engine,
        }
    }

    /// A context lending no memory (synchronous channels, tests).
    pub fn without_memory(max_io: usize, depth: u32) -> Self {
        ChannelCx {
            memory: Vec::new(),
            max_io,
            depth,
            engine: IoEngine::Sync,
        }
    }

    /// The lent regions.
    pub fn memory(&self) -> &[MemRegion] {
        &self.memory
    }
}

/// A block device under one export, shared by every worker. A store
/// implements the required methods; the provided ones are the bdev core's
/// (see the module documentation).
pub trait Bdev: Send + Sync + fmt::Debug {
    /// Where the export lies in the store and how far it reaches.
    fn extent(&self) -> &Arc<Extent>;
    /// The store's whole size in sectors now (from sector 0, not from the
    /// export's offset), `None` when it never changes (null, tests).
    fn store_sectors(&self) -> Option<io::Result<u64>>;
    /// Alignment needs and capabilities.
    fn geometry(&self) -> Geometry;
    /// The store's channel for one worker (use [`Bdev::open_queue`]: a
    /// channel takes requests already checked and moved into the store).
    fn open_channel(&self, cx: &ChannelCx) -> io::Result<Chan>;
    /// What a network store reports about itself (status, metrics); `None`
    /// for local stores.
    fn store_status(&self) -> Option<StoreStatus> {
        None
    }

    /// Exported capacity in sectors.
    fn sectors(&self) -> u64 {
        self.extent().sectors()
    }
    /// What the store could export now (online resize), `None` when the
    /// export does not follow its store (null, an operator-fixed length).
    /// Also moves the write fence to the store's end, fixed length or not.
    fn probe_sectors(&self) -> Option<io::Result<u64>> {
        let e = self.extent();
        let probed = self.store_sectors()?.map(|s| e.store_resized(s));
        (!e.fixed_length()).then_some(probed)
    }
    /// Accept requests up to `sectors` from now on (online growth; never
    /// shrinks). Returns the capacity in force.
    fn grow(&self, sectors: u64) -> u64 {
        self.extent().grow(sectors)
    }
    /// A worker's queue to this export: the core's checks in front of the
    /// store's channel.
    fn open_queue(&self, cx: &ChannelCx) -> io::Result<Queue> {
        Ok(Queue::new(
            Arc::clone(self.extent()),
            self.open_channel(cx)?,
        ))
    }
}

/// What `status` shows of a network store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// The cluster the store belongs to (rbd: the Ceph cluster's fsid).
    pub cluster_fsid: Option<String>,
    /// Requests in flight in the store's client library.
    pub in_flight: u64,
    /// The gateway lease (rbd: exports of a process with a writable one).
    pub lease: Option<rbd::lease::LeaseStatus>,
}

/// A store's result that asks for no reply at all: the request was dropped
/// because this gateway may no longer write (its lease lapsed, or it was
/// fenced), and the initiator must retry it elsewhere. An ATA error would
/// fail the initiator's I/O instead. Not an errno: a file store whose
/// filesystem fails with some errno must still be answered with an ATA
/// error, so a store maps its own fencing errors (Ceph's EBLOCKLISTED) to
/// this value explicitly.
pub const DROPPED: i32 = -1;

/// What a channel counts about its own work (published with the worker's
/// counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// fdatasyncs that acknowledged durable page-cache writes (group
    /// commit).
    pub group_commits: u64,
    /// Writes acknowledged by those fdatasyncs.
    pub group_commit_writes: u64,
}

impl std::ops::AddAssign for ChannelCounters {
    fn add_assign(&mut self, o: ChannelCounters) {
        self.group_commits += o.group_commits;
        self.group_commit_writes += o.group_commit_writes;
    }
}

/// One worker's channel to a store: single-threaded, owned by the worker's
/// [`Queue`], which has checked every request it passes on.
pub trait Channel: Send + fmt::Debug {
    /// Start `req` on `segs` (READ: written into; WRITE: read from; FLUSH:
    /// none). `req.offset` is a byte offset in the store, the request lies
    /// inside the export (a WRITE inside the store's end as last probed),
    /// and the segments hold exactly `req.len` bytes.
    ///
    /// # Safety
    ///
    /// Every segment must be valid for the transfer (writable for a READ)
    /// and lie inside one of the context's regions or stay mapped, and no
    /// one else may touch it until the request is done: at return for
    /// [`Submit::Done`] and [`Submit::Busy`], else until [`Channel::reap`]
    /// hands `tag` back.
    #[allow(unsafe_code)]
    unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, tag: Tag) -> Submit;
    /// The worker has submitted a batch: start what was queued (io_uring
    /// submit, a group commit's fdatasync).
    fn end_batch(&mut self) -> io::Result<()>;
    /// Hand every finished request's tag to `done`, with its result;
    /// returns how many. A tag comes back exactly once.
    fn reap(&mut self, done: &mut dyn FnMut(Tag, BlockResult)) -> usize;
    /// A descriptor that becomes readable when [`Channel::reap`] has work
    /// (`None`: completions come only from `submit` and `end_batch`).
    fn poll_fd(&self) -> Option<RawFd>;
    /// Requests taken and not yet reaped.
    fn in_flight(&self) -> usize;
    /// Counters since the channel opened.
    fn counters(&self) -> ChannelCounters {
        ChannelCounters::default()
    }
}

/// Open the store `spec` names.
pub fn open(spec: &DiskSpec) -> Result<Arc<dyn Bdev>, DiskError> {
    match &spec.source {
        Source::File(_) => Ok(Arc::new(FileDisk::open(spec)?)),
        Source::Null { bytes } => {
            let total = bytes / SECTOR_SIZE as u64;
            let extent = Extent::new(&PathBuf::from("null"), total, spec)?;
            Ok(Arc::new(NullDisk::new(extent)))
        }
        #[cfg(feature = "test-stores")]
        Source::FakeAsync { bytes } => {
            let total = bytes / SECTOR_SIZE as u64;
            let path = PathBuf::from("fake-async");
            let extent = Extent::new(&path, total, spec)?;
            let store = fake::FakeAsync::from_env(total, extent)
                .map_err(|source| DiskError::Open { path, source })?;
            Ok(Arc::new(store))
        }
        Source::Rbd {
            pool,
            namespace,
            image,
        } => Ok(Arc::new(rbd::RbdDisk::open(
            spec,
            pool,
            namespace.as_deref(),
            image,
        )?)),
    }
}

/// How to open a backing store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// `FILE` or `null:SIZE`.
    pub source: Source,
    /// First exported sector in the store.
    pub offset_sectors: u64,
    /// Exported length in sectors (`None`: to the end).
    pub length_sectors: Option<u64>,
    /// Refuse writes.
    pub read_only: bool,
    /// O_DIRECT (vblade `-d`).
    pub direct: bool,
    /// O_SYNC (vblade `-s`): kept for scripts; writes are durable anyway.
    pub sync: bool,
    /// Acknowledge writes from the page cache (not durable on a crash).
    pub writeback: bool,
    /// How `rbd:` sources reach their cluster.
    pub rbd: rbd::RbdOptions,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A regular file or block device.
    File(PathBuf),
    /// Reads return zeros, writes are dropped: measures the datapath alone.
    Null {
        /// Size in bytes.
        bytes: u64,
    },
    /// Tests only (`fake-async:SIZE`, built with the cargo feature
    /// `test-stores` and accepted when the environment has
    /// `XBLADE_TEST_STORES=1`): memory that completes every request later,
    /// out of order, through an eventfd ([`fake`]); lost at exit.
    #[cfg(feature = "test-stores")]
    FakeAsync {
        /// Size in bytes.
        bytes: u64,
    },
    /// A Ceph RBD image (`rbd:POOL/IMAGE`, `rbd:POOL/NAMESPACE/IMAGE`),
    /// through librbd ([`rbd`]).
    Rbd {
        /// Pool.
        pool: String,
        /// RADOS namespace inside the pool.
        namespace: Option<String>,
        /// Image.
        image: String,
    },
}

impl fmt::Display for Source {
    /// As the operator writes it (`FILE`, `null:BYTES`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Null { bytes } => write!(f, "null:{bytes}"),
            #[cfg(feature = "test-stores")]
            Source::FakeAsync { bytes } => write!(f, "fake-async:{bytes}"),
            Source::Rbd {
                pool,
                namespace: Some(ns),
                image,
            } => write!(f, "rbd:{pool}/{ns}/{image}"),
            Source::Rbd {
                pool,
                namespace: None,
                image,
            } => write!(f, "rbd:{pool}/{image}"),
        }
    }
}

/// Environment variable that lets `fake-async:SIZE` through (in a build
/// with the cargo feature `test-stores`).
#[cfg(feature = "test-stores")]
pub const TEST_STORES_ENV: &str = "XBLADE_TEST_STORES";

impl Source {
    /// Parse `null:SIZE` (with k/m/g/t suffixes), `rbd:POOL/[NAMESPACE/]IMAGE`
    /// or a path.
    pub fn parse(s: &str) -> Result<Source, DiskError> {
        if let Some(rest) = s.strip_prefix("rbd:") {
            let parts: Vec<&str> = rest.split('/').collect();
            let bad = parts
                .iter()
                .any(|p| p.is_empty() || p.contains(['\0', '@']) || p.trim() != *p);
            return match parts.as_slice() {
                [pool, image] if !bad => Ok(Source::Rbd {
                    pool: (*pool).into(),
                    namespace: None,
                    image: (*image).into(),
                }),
                [pool, ns, image] if !bad => Ok(Source::Rbd {
                    pool: (*pool).into(),
                    namespace: Some((*ns).into()),
                    image: (*image).into(),
                }),
                _ => Err(DiskError::BadRbdSpec(s.into())),
            };
        }
        if let Some(size) = s.strip_prefix("null:") {
            return Ok(Source::Null {
                bytes: parse_size(size).ok_or_else(|| DiskError::BadSize(s.into()))?,
            });
        }
        if let Some(size) = s.strip_prefix("fake-async:") {
            return Source::fake_async(s, size);
        }
        Ok(Source::File(PathBuf::from(s)))
    }

    /// `fake-async:SIZE` (`s`), in a test build: refused unless the
    /// environment has `XBLADE_TEST_STORES=1`, so that a test binary
    /// started by hand still cannot serve memory as a disk.
    #[cfg(feature = "test-stores")]
    fn fake_async(s: &str, size: &str) -> Result<Source, DiskError> {
        if std::env::var(TEST_STORES_ENV).as_deref() != Ok("1") {
            return Err(DiskError::TestOnly(s.into()));
        }
        Ok(Source::FakeAsync {
            bytes: parse_size(size).ok_or_else(|| DiskError::BadSize(s.into()))?,
        })
    }

    /// `fake-async:SIZE` (`s`) in the shipped daemon: the store is not
    /// compiled in. Said by name rather than taken for a file path (which
    /// would fail with a puzzling "no such file").
    #[cfg(not(feature = "test-stores"))]
    fn fake_async(s: &str, _size: &str) -> Result<Source, DiskError> {
        Err(DiskError::TestStoreNotBuilt(s.into()))
    }
}

/// Parse `123`, `64k`, `16M`, `2G`, `1T` (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        (i, 't' | 'T') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Errors opening or using a backing store.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// open(2) failed.
    #[error("cannot open backing store {}", path.display())]
    Open {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Not a regular file or block device.
    #[error("backing store {0} is neither a regular file nor a block device")]
    NotAFile(PathBuf),
    /// Offset at or past the end.
    #[error("offset {offset} sectors is at or past the end of {path} ({sectors} sectors)")]
    OffsetPastEnd {
        /// Path.
        path: PathBuf,
        /// Requested offset.
        offset: u64,
        /// Store size.
        sectors: u64,
    },
    /// Length beyond the end.
    #[error("length {length} sectors at offset {offset} goes past the end of {path} ({sectors} sectors)")]
    LengthPastEnd {
        /// Path.
        path: PathBuf,
        /// Offset.
        offset: u64,
        /// Requested length.
        length: u64,
        /// Store size.
        sectors: u64,
    },
    /// Bad `null:` size.
    #[error("bad size in {0:?}: expected null:SIZE like null:1G")]
    BadSize(String),
    /// A test-only store asked for outside the tests.
    #[cfg(feature = "test-stores")]
    #[error("{0:?} is a test store (memory, lost at exit): set XBLADE_TEST_STORES=1 to use it")]
    TestOnly(String),
    /// A test-only store asked of a daemon built without them.
    #[cfg(not(feature = "test-stores"))]
    #[error("{0}: test store not built into this xblade (cargo feature test-stores)")]
    TestStoreNotBuilt(String),
    /// A malformed `rbd:` spec.
    #[error("bad RBD spec {0:?}: expected rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE (no snapshots, no empty names)")]
    BadRbdSpec(String),
    /// An RBD image could not be opened.
    #[error(transparent)]
    Rbd(#[from] rbd::RbdError),
    /// A zero-sector export.
    #[error("export of {0} would have no sectors")]
    Empty(String),
    /// Another process exports the same range of the file writable.
    #[error(transparent)]
    Locked(#[from] lock::LockError),
}

/// Exported sectors for a store of `total` sectors, with the operator's
/// offset and length, refusing ranges that leave the store.
pub fn export_sectors(
    path: &std::path::Path,
    total: u64,
    offset: u64,
    length: Option<u64>,
) -> Result<u64, DiskError> {
    if offset >= total {
        return Err(DiskError::OffsetPastEnd {
            path: path.into(),
            offset,
            sectors: total,
        });
    }
    let avail = total - offset;
    let sectors = match length {
        Some(l) if l > avail => {
            return Err(DiskError::LengthPastEnd {
                path: path.into(),
                offset,
                length: l,
                sectors: total,
            })
        }
        Some(l) => l,
        None => avail,
    };
    if sectors == 0 {
        return Err(DiskError::Empty(path.display().to_string()));
    }
    Ok(sectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(
            Source::parse("null:1M").unwrap(),
            Source::Null { bytes: 1 << 20 }
        );
        assert!(Source::parse("null:lots").is_err());
    }

    /// The shipped daemon names the test store it lacks rather than taking
    /// it for a file (tests/scripts/81-deb.sh checks the packaged one).
    #[cfg(not(feature = "test-stores"))]
    #[test]
    fn test_store_not_built_in() {
        let e = Source::parse("fake-async:64M").unwrap_err().to_string();
        assert_eq!(
            e,
            "fake-async:64M: test store not built into this xblade (cargo feature test-stores)"
        );
    }

    #[test]
    fn rbd_specs() {
        for (s, pool, ns, image) in [
            ("rbd:rbd/disk1", "rbd", None, "disk1"),
            ("rbd:pool/ns/img", "pool", Some("ns"), "img"),
        ] {
            let src = Source::parse(s).unwrap();
            assert_eq!(
                src,
                Source::Rbd {
                    pool: pool.into(),
                    namespace: ns.map(Into::into),
                    image: image.into()
                }
            );
            assert_eq!(src.to_string(), s);
        }
        for bad in [
            "rbd:",
            "rbd:pool",
            "rbd:pool/",
            "rbd:/img",
            "rbd:a/b/c/d",
            "rbd:pool//img",
            "rbd:pool/img@snap",
        ] {
            let e = Source::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn export_ranges() {
        let p = std::path::Path::new("f");
        assert_eq!(export_sectors(p, 100, 0, None).unwrap(), 100);
        assert_eq!(export_sectors(p, 100, 10, None).unwrap(), 90);
        assert_eq!(export_sectors(p, 100, 10, Some(90)).unwrap(), 90);
        assert!(export_sectors(p, 100, 10, Some(91)).is_err());
        assert!(export_sectors(p, 100, 100, None).is_err());
        assert!(export_sectors(p, 100, 0, Some(0)).is_err());
    }
}
