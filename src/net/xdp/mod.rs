//! The AF_XDP datapath: an XDP program per interface steers AoE requests
//! into one AF_XDP socket per (interface, queue); each socket is served by
//! one worker thread, pinned to a core, with its own UMEM, its own io_uring
//! and its own engine. Nothing is shared on the request path.
//!
//! Frame life cycle (chunk states in [`umem`]):
//!
//! 1. Free chunks go to the fill ring (kept stocked, minus a reserve for
//!    reply tails and extra replies).
//! 2. A request arrives on RX as one or more fragments (multi-buffer: each
//!    fragment in its own chunk at chunk + 476). The engine parses it in
//!    place in the first fragment's chunk.
//! 3. Replies are built in place: control replies go straight to TX; a disk
//!    request becomes one io_uring operation whose memory is the frame
//!    itself. READ data lands at frame byte 36 = chunk + 512; a jumbo READ
//!    reply takes extra free chunks for its tail fragments and is read with
//!    one READV (the tails start at chunk + 476). WRITE data leaves from the
//!    request's fragments. Under O_DIRECT, pieces that are not 512-aligned
//!    (jumbo tails, multi-fragment writes) go through an aligned bounce slot.
//! 4. TX completions return chunks to the free list.
//!
//! Backpressure: the io_uring slab has a fixed number of slots. When a
//! request cannot start (no slot, no bounce slot, no reply chunk) it waits
//! in a short FIFO and the worker stops taking frames off the RX ring until
//! it has started; frames then wait in the RX ring, and beyond that the
//! kernel drops them (counted as `rx_dropped`/`rx_fill_ring_empty`).
//!
//! No allocation happens per request: every table, queue and staging array
//! is sized when the worker opens.

pub mod bpf;
pub mod ring;
pub mod socket;
pub mod steer;
pub mod umem;
pub mod zerocopy;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::bdev::commit::GroupCommit;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use self::bpf::{Attached, BpfError, XdpLink, XdpMode, XdpProgram};
use self::socket::{Xsk, XskOptions, ZeroCopy};
use self::steer::{Steer, SteerError, SteerState, Steering};
use self::umem::{ChunkState, ChunkTable, CHUNK_SIZE, DATA_OFFSET, ROOM};
use super::iface::IfaceInfo;
use super::{Control, Reconfig, WorkerSpec};
use crate::bdev::bounce::Bounce;
use crate::bdev::uring::{self, Dir, Op, Seg, Uring};
use crate::bdev::Bdev;
use crate::engine::{control, reflect, Action, DiskIo, DiskOp, Port, Target};
use crate::stats::{WorkerStats, XdpStats};
use crate::wire::{MacAddr, ATA_DATA_OFFSET, SECTOR_SIZE};

/// XDP_PKT_CONTD: more fragments of this frame follow.
pub const XDP_PKT_CONTD: u32 = 1;
/// RX descriptors taken per batch.
pub const BATCH: usize = 64;
/// Most fragments of one frame the worker handles (frames up to 5 * 3620
/// bytes); longer frames are dropped and counted.
pub const MAX_FRAGS: usize = 5;
/// Most sectors per ATA request the datapath can carry in MAX_FRAGS chunks.
pub const MAX_SECTORS: u8 = sectors_in(MAX_FRAGS);
/// Entries of each ring (fill, completion, RX, TX).
const RING: u32 = 2048;
/// UMEM chunks per socket (16 MiB).
const CHUNKS: u32 = 4096;
/// Fill-ring depth a worker starts with. Every chunk on the fill ring
/// circulates (the ring is FIFO), so its depth is the worker's working set:
/// 256 chunks (1 MiB) stay in the core's L2, where a page-cache read lands
/// in a warm reply frame; the whole ring (8 MiB) did not, and 1 KiB reads
/// cost about 10% more CPU per request (measured on veth, 2026-11-25).
/// A worker about to sleep still fills the whole ring (see `refill_to`).
const FILL_START: usize = 4 * BATCH;
/// Fill-ring depth a zero-copy worker starts with: the whole ring. In
/// zero-copy mode the driver posts chunks from the fill ring to the NIC's
/// own RX ring ahead of traffic (as many as that ring has slots, often
/// 512-4096), and a frame arriving when none is posted is dropped by the
/// NIC, not copied later: the L2 working-set argument of [`FILL_START`]
/// loses to keeping the NIC stocked.
const FILL_ZERO_COPY: usize = RING as usize;
/// Disk operations in flight per worker (io_uring slots).
const DISK_SLOTS: u32 = 128;
/// Zeroed chunks a worker with a null store keeps for READ replies (2 MiB:
/// 170 jumbo or 512 one-chunk replies on their way out; beyond that, a
/// reply's chunks are zeroed as it is built).
const ZERO_POOL: u32 = 512;
/// Durable writes a worker holds written but unacknowledged (group commit),
/// all stores together; more wait in the deferred queue.
const COMMIT_HELD_MAX: usize = DISK_SLOTS as usize;
/// io_uring fixed-buffer indexes.
const UMEM_BUF: u16 = 0;
const BOUNCE_BUF: u16 = 1;
/// How often counters are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// Longest sleep in poll before checking the control channel.
const POLL_TIMEOUT_MS: i32 = 100;
/// How long a stopping worker waits for its last TX completions.
const STOP_TX_GRACE: Duration = Duration::from_secs(1);
/// Idle turns spent kicking TX while the kernel has not taken every
/// descriptor, before sleeping 1 ms at a time.
const SPIN_TURNS: u32 = 64;
/// Default of `--spin-us`: the kernel's own suggestion for
/// `net.core.busy_poll`. Long enough to span an initiator's round trip on
/// a LAN, so a worker at window 1 never sleeps between requests; short
/// enough that an idle worker costs nothing.
pub const DEFAULT_SPIN_US: u32 = 50;

const _: () = assert!(MAX_FRAGS <= uring::MAX_SEGS);

/// Options of the XDP datapath (command line `--queues`, `--xdp-mode`,
/// `--zero-copy`, `--busy-poll`, `--xdp-drop-foreign`, `--spin-us`,
/// `--steer`; TOML `[xdp]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpOptions {
    /// Queues served per interface (default: its rx queue count).
    pub queues: Option<u32>,
    /// Attach mode.
    pub mode: XdpMode,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// How frames reach the queue of their destination MAC ([`steer`]).
    pub steer: Steer,
    /// Busy polling.
    pub busy_poll: bool,
    /// Drop (rather than pass to the stack) AoE requests for shelf.slots
    /// not served here.
    pub drop_foreign: bool,
    /// Measurement only: answer READ and WRITE without the engine or the
    /// disk ([`crate::engine::reflect`]), for the no-disk ceiling.
    pub reflect: bool,
    /// Microseconds a worker keeps polling its rings, with no system call,
    /// after its last piece of work before it sleeps in poll(2) (None:
    /// [`DEFAULT_SPIN_US`]; 0: sleep at once). Sleeping costs a wakeup on
    /// each side per burst (the IPI, the scheduler, and on veth the
    /// sender's core pays `sock_def_readable`), which bounds window-1
    /// latency; spinning costs CPU only while requests keep coming.
    pub spin_us: Option<u32>,
}

/// Hint the CPU to load the cache line at `p` (no-op off x86_64).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Most sectors per ATA request a frame of `frags` chunks carries.
pub const fn sectors_in(frags: usize) -> u8 {
    let k = (frags * ROOM).saturating_sub(ATA_DATA_OFFSET) / SECTOR_SIZE;
    if k > 255 {
        255
    } else {
        k as u8
    }
}

/// Chunks per frame a worker handles on a socket that carries at most
/// `max_buffers` (None: no driver limit).
fn max_frags(max_buffers: Option<u32>) -> usize {
    max_buffers.map_or(MAX_FRAGS, |b| (b as usize).clamp(1, MAX_FRAGS))
}

/// Chunks a frame of `len` bytes occupies.
fn frags_for(len: usize) -> usize {
    len.div_ceil(ROOM).max(1)
}

/// Largest buffer count worth advertising on an interface of `mtu`: the
/// largest requests the port accepts, as many as one queue's RX ring holds
/// while the disk is busy (further ones would be dropped by the kernel).
pub fn max_bufcnt(mtu: u32) -> u16 {
    let sectors = crate::wire::max_sectors_for_mtu(mtu).min(MAX_SECTORS) as usize;
    let frame = ATA_DATA_OFFSET + sectors * SECTOR_SIZE;
    let per_request = frags_for(frame) as u32;
    (RING / per_request).min(u32::from(u16::MAX)) as u16
}

/// Why XDP could not be set up on an interface.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// Program load or attach.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// Per-queue MACs or steering rules.
    #[error(transparent)]
    Steer(#[from] SteerError),
    /// Socket, UMEM or io_uring.
    #[error("queue {queue}")]
    Queue {
        /// Queue.
        queue: u32,
        /// Cause.
        source: io::Error,
    },
}

/// The program attached to one interface. Dropping it detaches the program
/// (drop it after the interface's workers have stopped).
#[derive(Debug)]
pub struct XdpInterface {
    link: XdpLink,
    prog: Arc<XdpProgram>,
    /// Per-queue MACs and rules (removed when dropped); its MAC list has
    /// one address per queue served.
    steering: Steering,
}

impl XdpInterface {
    /// Load and attach the program on `iface`, steering requests for
    /// `targets` (shelf, slot).
    pub fn attach(
        iface: &IfaceInfo,
        targets: &[(u16, u8)],
        opts: &XdpOptions,
    ) -> Result<XdpInterface, XdpError> {
        raise_memlock();
        let real = iface.rx_queues();
        let queues = opts.queues.unwrap_or(real).clamp(1, bpf::MAX_QUEUES);
        if queues < real {
            warn!(iface = %iface.name, queues, rx_queues = real,
                  "serving fewer queues than the interface has: AoE frames hashed to the others go to the kernel stack unanswered");
        }
        let prog = XdpProgram::load(iface.mac, targets, opts.drop_foreign)?;
        let link = prog.attach(iface.index, opts.mode)?;
        info!(iface = %iface.name, mode = link.mode().name(), queues,
              "XDP program attached (bpf_link)");
        // With the program attached, no other target owns the interface:
        // queue MACs left on it are a killed run's, and ours to clean.
        let steering = Steering::setup(iface, queues, opts.steer)?;
        for &m in steering.macs() {
            if m != iface.mac {
                prog.add_mac(m)?;
            }
        }
        Ok(XdpInterface {
            link,
            prog: Arc::new(prog),
            steering,
        })
    }

    /// Queues to serve.
    pub fn queues(&self) -> u32 {
        self.steering.macs().len() as u32
    }

    /// How the queues are steered.
    pub fn steer_state(&self) -> SteerState {
        self.steering.state()
    }

    /// The address `queue` answers from.
    pub fn queue_mac(&self, queue: u32) -> MacAddr {
        let macs = self.steering.macs();
        macs.get(queue as usize).copied().unwrap_or(macs[0])
    }

    /// Every target MAC of the interface, one per queue (duplicates
    /// removed).
    fn target_macs(&self) -> Vec<MacAddr> {
        let mut v: Vec<MacAddr> = Vec::new();
        for &m in self.steering.macs() {
            if !v.contains(&m) {
                v.push(m);
            }
        }
        v
    }

    /// Mode the program runs in.
    pub fn mode(&self) -> Attached {
        self.link.mode()
    }

    /// Start or stop steering requests for `shelf.slot` to this interface's
    /// sockets (live reconfiguration).
    pub fn set_target(&self, shelf: u16, slot: u8, serve: bool) -> Result<(), XdpError> {
        Ok(self.prog.set_target(shelf, slot, serve)?)
    }
}

/// Lift RLIMIT_MEMLOCK: the UMEM is charged to it twice (AF_XDP and the
/// io_uring registration) for processes without CAP_IPC_LOCK.
fn raise_memlock() {
    let inf = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } != 0 {
        debug!(error = %io::Error::last_os_error(), "could not lift RLIMIT_MEMLOCK");
    }
}

/// The fragments of one frame: chunk ids and lengths, in order.
#[derive(Debug, Clone, Copy, Default)]
struct Frags {
    n: u8,
    chunk: [u32; MAX_FRAGS],
    len: [u16; MAX_FRAGS],
}

impl Frags {
    fn one(c: u32, len: usize) -> Frags {
        let mut f = Frags::default();
        f.push(c, len);
        f
    }

    /// Append a fragment; false when full.
    fn push(&mut self, c: u32, len: usize) -> bool {
        let i = self.n as usize;
        if i == MAX_FRAGS {
            return false;
        }
        self.chunk[i] = c;
        self.len[i] = len as u16;
        self.n += 1;
        true
    }

    fn chunks(&self) -> &[u32] {
        &self.chunk[..self.n as usize]
    }

    fn head(&self) -> u32 {
        self.chunk[0]
    }

    fn total(&self) -> usize {
        self.len[..self.n as usize]
            .iter()
            .map(|&l| l as usize)
            .sum()
    }
}

/// A disk operation in flight: the request, the chunks it owns (head first;
/// then a READ's reply tails or a WRITE's request fragments) and its bounce
/// slot.
#[derive(Debug, Clone, Copy)]
struct IoToken {
    io: DiskIo,
    frags: Frags,
    bounce: Option<u16>,
}

/// What an io_uring operation was for.
#[derive(Debug)]
enum Token {
    /// A request's own operation.
    Req(IoToken),
    /// The group commit fdatasync of store (export) `.0`.
    Commit(usize),
}

/// Backing store of an export as the worker uses it.
#[derive(Debug, Clone, Copy)]
enum Store {
    /// Complete at once: zeros for reads, writes dropped.
    Null,
    File {
        /// io_uring fixed-file index.
        fixed: u32,
        /// Byte offset of the export in the file.
        base: u64,
        /// O_DIRECT: UMEM pieces must be 512-aligned.
        direct: bool,
        /// O_DIRECT with a memory alignment above 512: everything bounces.
        bounce_all: bool,
        /// Writes are acknowledged from the page cache: the worker
        /// pwritev()s them itself from the request's fragments, on this
        /// descriptor (kept open by the worker's `Arc<Disk>`).
        ///
        /// Why not io_uring: ext4 (among others) has no non-blocking
        /// buffered write, so io_uring hands every such write to an io-wq
        /// thread, which inherits the worker's core; each write then costs
        /// an eventfd wakeup and two context switches on that core (0.65x
        /// vblade at 1 KiB, window 64). Written inline, as vblade and the
        /// AF_PACKET datapath do, no thread hop is paid. Like them, a write
        /// that meets dirty-page throttling holds the worker meanwhile.
        inline_writes: Option<RawFd>,
        /// Default durable mode through the page cache: the worker
        /// pwritev()s on this plain descriptor (`FileDisk::plain`, no
        /// O_DSYNC, kept open by the worker's `Arc<Disk>`) and
        /// acknowledges after a group commit fdatasync (see [`commit`]).
        group_commit: Option<RawFd>,
    },
}

/// A frame being reassembled from RX fragments.
#[derive(Debug, Default)]
struct Partial {
    frags: Frags,
    /// More fragments than MAX_FRAGS, or a descriptor at a bad offset:
    /// release the rest and drop.
    bad: bool,
    /// Why it is bad.
    oversize: bool,
}

/// The disk side of a worker: one store per export, the bounce area for
/// O_DIRECT pieces that are not 512-aligned, and the io_uring with the
/// files registered in store order. Built at open and again, with nothing
/// in flight, when the export set changes.
struct DiskSide {
    // Field order is drop order: the ring (which waits for in-flight
    // operations) before the bounce area it points into.
    uring: Option<Uring<Token>>,
    bounce: Option<Bounce>,
    stores: Vec<Store>,
    /// Per store (export index): the group commit state, if it has one.
    commits: Vec<Option<GroupCommit<IoToken>>>,
}

impl DiskSide {
    /// Open the disk side for `disks` on `xsk`'s UMEM.
    ///
    /// # Safety
    ///
    /// `xsk` (its UMEM, registered with the ring) must outlive the returned
    /// ring: keep both in a Worker, whose `xsk` field is declared after
    /// `uring`.
    unsafe fn open(disks: &[Arc<dyn Bdev>], xsk: &Xsk, max_reply: usize) -> io::Result<DiskSide> {
        let mut stores = Vec::with_capacity(disks.len());
        let mut files = Vec::new();
        let mut commits = Vec::with_capacity(disks.len());
        let mut need_bounce = false;
        for d in disks {
            match d.as_file() {
                None => {
                    stores.push(Store::Null);
                    commits.push(None);
                }
                Some(f) => {
                    let fd = f.file().as_raw_fd();
                    let mut bounce_all = false;
                    if f.direct() {
                        need_bounce = true;
                        if let Some((mem, off)) = uring::dio_alignment(fd) {
                            if mem > 512 {
                                warn!(path = %f.path().display(), mem_align = mem,
                                          "O_DIRECT needs more than 512-byte aligned memory: every transfer goes through the bounce area");
                                bounce_all = true;
                            }
                            if off > 512 {
                                warn!(path = %f.path().display(), offset_align = off,
                                          "O_DIRECT needs offsets aligned beyond one sector: smaller requests will fail");
                            }
                        }
                    }
                    let group_commit = f.plain().map(|p| p.as_raw_fd());
                    commits.push(group_commit.map(|_| GroupCommit::new(COMMIT_HELD_MAX)));
                    stores.push(Store::File {
                        fixed: files.len() as u32,
                        base: f.base(),
                        direct: f.direct(),
                        bounce_all,
                        inline_writes: f.page_cache_acks().then_some(fd),
                        group_commit,
                    });
                    files.push(fd);
                }
            }
        }
        let bounce = if need_bounce {
            Some(Bounce::new(DISK_SLOTS as u16, max_reply)?)
        } else {
            None
        };
        let uring = if files.is_empty() {
            None
        } else {
            let mut bufs = vec![libc::iovec {
                iov_base: xsk.base().cast(),
                iov_len: xsk.umem_len(),
            }];
            if let Some(b) = &bounce {
                bufs.push(b.iovec());
            }
            // SAFETY: the bounce area is a field of DiskSide (then of the
            // Worker) declared after `uring`, so it is dropped after the
            // ring, whose Drop waits for every operation in flight; the
            // UMEM outlives the ring by this function's contract.
            Some(unsafe { Uring::new(DISK_SLOTS, &files, &bufs) }?)
        };
        Ok(DiskSide {
            uring,
            bounce,
            stores,
            commits,
        })
    }
}

/// An opened worker for one queue; sockets are bound before the thread
/// starts so that errors surface at start-up.
pub struct Worker {
    // Field order is drop order: the ring waits for in-flight operations
    // before the bounce area and the UMEM they point into go away.
    uring: Option<Uring<Token>>,
    bounce: Option<Bounce>,
    xsk: Xsk,
    prog: Arc<XdpProgram>,
    chunks: ChunkTable,
    engine: Target,
    spec: WorkerSpec,
    queue: u32,
    mode: Attached,
    busy_poll: bool,
    /// How long an idle worker polls before it sleeps (`--spin-us`).
    spin: Duration,
    /// `--xdp-reflect` (measurement only).
    reflect: bool,
    stores: Vec<Store>,
    /// Per store: durable writes waiting for their fdatasync.
    commits: Vec<Option<GroupCommit<IoToken>>>,
    /// Requests held by all `commits` (at most [`COMMIT_HELD_MAX`]).
    commit_held: usize,
    /// Largest reply (bytes) a disk request can produce: sizes bounce slots.
    max_reply: usize,
    /// Free chunks kept off the fill ring for reply tails and extra replies.
    reserve: usize,
    /// Chunks the worker keeps on the fill ring: [`FILL_START`], doubled
    /// (up to the ring) each time the kernel reports frames that found the
    /// fill ring empty.
    fill_depth: usize,
    /// Descriptors waiting for room on the TX ring, whole frames only.
    tx_q: Vec<ring::Desc>,
    /// TX descriptors produced and not yet completed.
    tx_outstanding: usize,
    partial: Partial,
    /// Disk requests that could not start yet, in arrival order.
    deferred: VecDeque<(Frags, DiskIo)>,
    stats: WorkerStats,
    xstats: XdpStats,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("iface", &self.spec.iface.name)
            .field("queue", &self.queue)
            .field("chunks", &self.chunks)
            .finish()
    }
}

impl Worker {
    /// Open queue `queue` of the interface `ifc` is attached to.
    pub fn open(
        spec: WorkerSpec,
        queue: u32,
        ifc: &XdpInterface,
        opts: &XdpOptions,
    ) -> Result<Worker, XdpError> {
        let qerr = |source| XdpError::Queue { queue, source };
        let xopts = XskOptions {
            chunks: CHUNKS,
            ring: RING,
            zero_copy: opts.zero_copy,
            busy_poll: opts.busy_poll,
            mtu: spec.iface.mtu,
            native: ifc.mode() == Attached::Native,
        };
        let xsk = Xsk::open(&spec.iface.name, spec.iface.index, queue, &xopts).map_err(qerr)?;
        let mac = ifc.queue_mac(queue);
        let mut port = Port::new(
            spec.iface.mac,
            spec.iface.mtu,
            (0..spec.exports.len()).collect(),
        )
        .with_macs(mac, ifc.target_macs());
        // A socket bound without XDP_USE_SG (zero-copy on a one-buffer
        // driver) carries one-chunk frames only: no request or reply may
        // need more (see `zerocopy`).
        port.max_sectors = port
            .max_sectors
            .min(MAX_SECTORS)
            .min(sectors_in(max_frags(xsk.max_buffers())));
        let max_reply = ATA_DATA_OFFSET + usize::from(port.max_sectors) * SECTOR_SIZE;
        let reply_frags =
            frags_for(max_reply.max(port.max_frame())).min(max_frags(xsk.max_buffers()));

        // SAFETY: `xsk` moves into the Worker below, whose `xsk` field is
        // declared after `uring` and `bounce`.
        let side = unsafe { DiskSide::open(&spec.disks, &xsk, max_reply) }.map_err(qerr)?;
        let engine = Target::new(vec![port], spec.exports.clone());
        // A null store answers READs from a pool of zeroed chunks.
        let pool = if side.stores.iter().any(|s| matches!(s, Store::Null)) {
            ZERO_POOL
        } else {
            0
        };
        let chunks = ChunkTable::with_zero_pool(xsk.chunks(), pool);
        for c in chunks.pool() {
            // SAFETY: pool chunks are on no ring yet and nobody else holds
            // a reference into them.
            unsafe { xsk.room(c) }.fill(0);
        }
        let reserve = DISK_SLOTS as usize * (reply_frags - 1) + 2 * BATCH;
        let stats = WorkerStats {
            iface: spec.iface.name.clone(),
            queue,
            mac: mac.to_string(),
            ..Default::default()
        };
        let spin_us = opts.spin_us.unwrap_or(DEFAULT_SPIN_US);
        let xstats = XdpStats {
            mode: ifc.mode().name(),
            zero_copy: xsk.zero_copy(),
            busy_poll: opts.busy_poll,
            huge_pages: xsk.huge_pages(),
            steer: ifc.steer_state().name(),
            ..Default::default()
        };
        info!(iface = %spec.iface.name, queue, %mac, mode = ifc.mode().name(),
              zero_copy = xsk.zero_copy(), busy_poll = opts.busy_poll, reflect = opts.reflect,
              spin_us, umem_huge_pages = xsk.huge_pages(),
              "AF_XDP socket ready ({} mode)", if xsk.zero_copy() { "zero-copy" } else { "copy" });
        let n = xsk.chunks() as usize;
        let DiskSide {
            uring,
            bounce,
            stores,
            commits,
        } = side;
        let mut w = Worker {
            uring,
            bounce,
            prog: ifc.prog.clone(),
            chunks,
            engine,
            queue,
            mode: ifc.mode(),
            busy_poll: opts.busy_poll,
            spin: Duration::from_micros(u64::from(spin_us)),
            reflect: opts.reflect,
            stores,
            commits,
            commit_held: 0,
            max_reply,
            reserve,
            fill_depth: if xsk.zero_copy() {
                FILL_ZERO_COPY
            } else {
                FILL_START
            },
            tx_q: Vec::with_capacity(n),
            tx_outstanding: 0,
            partial: Partial::default(),
            deferred: VecDeque::with_capacity(BATCH),
            stats,
            xstats,
            spec,
            xsk,
        };
        // `xblade status` shows the worker's MAC before its first counters.
        w.spec.stats.store(Arc::new(w.stats.clone()));
        // Stock the fill ring before the XDP program may steer frames here.
        w.refill().map_err(qerr)?;
        ifc.prog
            .register_socket(queue, w.xsk.fd())
            .map_err(|e| qerr(io::Error::other(e.to_string())))?;
        Ok(w)
    }

    /// Run until told to stop; then finish in-flight work and return.
    pub fn run(mut self) -> io::Result<()> {
        if let Some(core) = self.spec.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                warn!(core, iface = %self.spec.iface.name, queue = self.queue,
                      "could not pin worker to core");
            }
        }
        self.refill()?;
        self.announce(None);
        info!(iface = %self.spec.iface.name, queue = self.queue, mtu = self.spec.iface.mtu,
              max_sectors = self.engine.ports()[0].max_sectors,
              exports = self.spec.exports.len(), mode = self.mode.name(),
              "AF_XDP worker serving");
        let mut last_publish = Instant::now();
        let mut stopping: Option<Instant> = None;
        // A new export set waiting for the disk side to drain.
        let mut reconf: Option<Reconfig> = None;
        let mut idle_turns = 0u32;
        // When the current idle stretch began (valid while idle_turns > 0).
        let mut idle_since = Instant::now();
        // Sleeps since the last work.
        let mut naps = 0u32;
        let mut turn = 0u32;
        loop {
            turn = turn.wrapping_add(1);
            if stopping.is_none() && (turn % 64 == 0 || idle_turns > 0) {
                match self.spec.control.try_recv() {
                    Ok(Control::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        info!(iface = %self.spec.iface.name, queue = self.queue,
                              in_flight = self.in_flight(), "stopping: draining in-flight requests");
                        stopping = Some(Instant::now());
                    }
                    Ok(Control::Announce) => self.announce(None),
                    Ok(Control::AnnounceExports(list)) => self.announce(Some(&list)),
                    Ok(Control::Reconfigure(r)) => {
                        info!(iface = %self.spec.iface.name, queue = self.queue,
                              in_flight = self.in_flight(), deferred = self.deferred.len(),
                              "new export set: finishing the requests in hand first");
                        // A newer set replaces one still waiting (whose
                        // sender then sees its answer channel close).
                        reconf = Some(r);
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => {}
                }
            }
            // A clock read costs as much as a request's ring work: look at
            // the time every 64 busy turns only (a few times a millisecond).
            if (turn % 64 == 0 || idle_turns > 0) && last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
                last_publish = Instant::now();
            }

            let n_comp = self.reap_tx();
            let n_io = self.reap_disk()?;
            self.run_deferred()?;
            // While a new export set waits, frames stay in the RX ring: the
            // engine must not start requests against the old set.
            let rx = stopping.is_none() && reconf.is_none() && self.deferred.is_empty();
            let n_rx = if rx { self.receive()? } else { 0 };
            if self.busy_poll && n_rx == 0 && stopping.is_none() && reconf.is_none() {
                // No need_wakeup flags: drive the NIC's NAPI from here.
                let r = self.xsk.wake_rx();
                self.tolerate(r)?;
            }
            self.submit_disk()?;
            if reconf.is_some() && self.deferred.is_empty() && self.in_flight() == 0 {
                // Every operation against the old stores has completed (its
                // reply is queued): the old ring can go.
                if let Some(r) = reconf.take() {
                    self.reconfigure(r);
                }
                idle_turns = 0;
                continue;
            }
            let produced = self.flush_tx();
            let untaken = self.kick(produced, idle_turns)?;
            let filled = if stopping.is_none() {
                self.refill()?
            } else {
                0
            };

            if let Some(t) = stopping {
                let disk_done = self.deferred.is_empty() && self.in_flight() == 0;
                let tx_done = self.tx_q.is_empty()
                    && (self.tx_outstanding == 0 || t.elapsed() > STOP_TX_GRACE);
                if disk_done && tx_done {
                    break;
                }
            }
            let busy = n_rx > 0 || n_comp > 0 || n_io > 0 || produced > 0 || filled > 0;
            if busy {
                if idle_turns > 0 {
                    self.count_idle_spin(idle_since);
                }
                idle_turns = 0;
                naps = 0;
                continue;
            }
            idle_turns = idle_turns.saturating_add(1);
            if idle_turns == 1 && !self.spin.is_zero() {
                idle_since = Instant::now();
            }
            if !self.spin.is_zero()
                && stopping.is_none()
                && reconf.is_none()
                && self.in_flight() == 0
                && idle_since.elapsed() < self.spin
            {
                // Poll the rings again: no system call, no wakeup to pay.
                // Not while the disk has work: the eventfd wakes us for it,
                // and requests arriving meanwhile then reach the disk in
                // one batch rather than one system call each (O_DIRECT
                // lost 16% to spinning here).
                continue;
            }
            if untaken && idle_turns < SPIN_TURNS {
                // The kernel still has descriptors to transmit: kick again.
                continue;
            }
            let owed = self.tx_outstanding > 0 || !self.tx_q.is_empty();
            let timeout = if owed && naps < 100 {
                1
            } else {
                POLL_TIMEOUT_MS
            };
            let rx = stopping.is_none() && reconf.is_none() && self.deferred.is_empty();
            if rx {
                self.refill_to(RING as usize)?;
            }
            self.count_idle_spin(idle_since);
            self.wait(timeout, rx)?;
            naps = naps.saturating_add(1);
            if !self.spin.is_zero() {
                idle_since = Instant::now();
            }
            if stopping.is_some() && owed {
                // Collect the last completions.
                idle_turns = 0;
            }
        }
        self.release_partial();
        self.publish();
        info!(iface = %self.spec.iface.name, queue = self.queue,
              tx_unconfirmed = self.tx_outstanding, "AF_XDP worker stopped");
        Ok(())
    }

    /// An idle stretch that began at `since` ends: count it as polling
    /// (`idle_spin_ns`) when the worker polls at all.
    fn count_idle_spin(&mut self, since: Instant) {
        if !self.spin.is_zero() {
            self.xstats.idle_spin_ns += since.elapsed().as_nanos() as u64;
        }
    }

    /// Disk operations in flight plus writes waiting for their group
    /// commit: zero when nothing is owed to the disk side.
    fn in_flight(&self) -> usize {
        self.uring.as_ref().map_or(0, Uring::in_flight) + self.commit_held
    }

    /// Sleep until the socket has frames (if `rx`), a disk operation
    /// completes, or `timeout_ms` passes.
    fn wait(&mut self, timeout_ms: i32, rx: bool) -> io::Result<()> {
        let mut fds = [
            libc::pollfd {
                fd: if rx { self.xsk.fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.uring.as_ref().map_or(-1, Uring::event_fd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds; negative fds are
        // ignored by poll(2).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if fds[1].revents != 0 {
            if let Some(u) = &self.uring {
                u.clear_event();
            }
        }
        Ok(())
    }

    // ---- fill and completion rings -------------------------------------

    /// Put free chunks (beyond the reserve) on the fill ring, up to
    /// `fill_depth` while the worker runs.
    fn refill(&mut self) -> io::Result<usize> {
        self.refill_to(self.fill_depth)
    }

    /// Put free chunks (beyond the reserve) on the fill ring, up to `depth`
    /// chunks there. A worker about to sleep fills the whole ring: it
    /// cannot restock while asleep, and the kernel must not find the ring
    /// empty during the wakeup.
    fn refill_to(&mut self, depth: usize) -> io::Result<usize> {
        let below = depth.saturating_sub(self.chunks.count(ChunkState::InFill) as usize);
        if below == 0 {
            return Ok(0);
        }
        let spare = self
            .chunks
            .free_len()
            .saturating_sub(self.reserve)
            .min(below);
        let room = self.xsk.rings.fill.free(spare.max(1) as u32) as usize;
        let k = spare.min(room);
        if k == 0 {
            if spare == 0 && room > 0 {
                self.xstats.fill_starved += 1;
            }
            return Ok(0);
        }
        let mut done = 0;
        while done < k {
            let Some(c) = self.chunks.alloc(ChunkState::InFill) else {
                break;
            };
            // The table just moved `c` from Free to InFill: nobody else
            // uses it until it comes back on RX. `room` slots are free.
            let pushed = self.xsk.rings.fill.push(Xsk::fill_addr(c));
            debug_assert!(pushed);
            done += 1;
        }
        self.xsk.rings.fill.publish();
        if self.xsk.rings.fill.needs_wakeup() {
            let r = self.xsk.wake_rx();
            self.tolerate(r)?;
        }
        Ok(done)
    }

    /// Return completed TX chunks to the free list.
    fn reap_tx(&mut self) -> usize {
        if self.tx_outstanding == 0 {
            return 0;
        }
        // The completion ring returns addresses of this UMEM that we
        // produced on TX.
        let cq = &mut self.xsk.rings.comp;
        let n = cq.ready(RING);
        for i in 0..n {
            self.chunks
                .release(Xsk::chunk_of(cq.get(i) as usize), ChunkState::InTx);
        }
        cq.release(n);
        self.tx_outstanding -= n as usize;
        n as usize
    }

    // ---- TX -------------------------------------------------------------

    /// Queue `len` bytes of chunk `c` (one-fragment frame) for TX.
    fn post_one(&mut self, c: u32, len: usize, from: ChunkState) {
        if from != ChunkState::InTx {
            self.chunks.transition(c, from, ChunkState::InTx);
        }
        self.tx_q.push(Xsk::tx_desc(c, len, false));
    }

    /// Queue a frame of `len` bytes spread over `frags` (each holding ROOM
    /// bytes but the last) for TX.
    fn post_frags(&mut self, frags: &[u32], len: usize, from: ChunkState) {
        // Without XDP_USE_SG the kernel takes no XDP_PKT_CONTD chain: the
        // port's sectors are capped so that every reply fits one chunk.
        debug_assert!(
            frags.len() <= 1 || self.xsk.sg(),
            "{}-fragment reply on a socket bound without XDP_USE_SG",
            frags.len()
        );
        let mut left = len;
        for (i, &c) in frags.iter().enumerate() {
            let l = left.min(ROOM);
            left -= l;
            if from != ChunkState::InTx {
                self.chunks.transition(c, from, ChunkState::InTx);
            }
            self.tx_q.push(Xsk::tx_desc(c, l, i + 1 < frags.len()));
        }
        debug_assert_eq!(left, 0, "reply longer than its chunks");
    }

    /// Produce as many whole queued frames as the TX ring takes.
    fn flush_tx(&mut self) -> usize {
        if self.tx_q.is_empty() {
            return 0;
        }
        let tx = &mut self.xsk.rings.tx;
        let room = tx.free(self.tx_q.len() as u32) as usize;
        let mut k = room.min(self.tx_q.len());
        // A frame's fragments must go in together: cut after a last
        // fragment.
        while k > 0 && self.tx_q[k - 1].options & XDP_PKT_CONTD != 0 {
            k -= 1;
        }
        if k == 0 {
            return 0;
        }
        // Every queued descriptor names an InTx chunk of this UMEM whose
        // frame is complete; the kernel owns it until it completes.
        let mut frames = 0;
        for d in &self.tx_q[..k] {
            let pushed = tx.push(*d);
            debug_assert!(pushed, "room was checked");
            frames += usize::from(d.options & XDP_PKT_CONTD == 0);
        }
        tx.publish();
        self.stats.tx_frames += frames as u64;
        self.tx_outstanding += k;
        self.tx_q.drain(..k);
        k
    }

    /// Wake the kernel for TX. Copy mode only transmits inside sendto (at
    /// most 32 descriptors per call), so kick while the kernel has not taken
    /// every produced descriptor; returns true in that case (the caller
    /// keeps turning). With everything taken but completions still owed,
    /// kick once as the worker goes idle: on veth the completion of a reply
    /// comes when the peer frees the frame, which a kick lets run.
    fn kick(&mut self, produced: usize, idle_turns: u32) -> io::Result<bool> {
        if self.tx_outstanding == 0 {
            return Ok(false);
        }
        let untaken = produced > 0 || self.xsk.rings.tx.unconsumed() > 0;
        if !(untaken || idle_turns == 1) || !(self.busy_poll || self.xsk.rings.tx.needs_wakeup()) {
            return Ok(false);
        }
        let r = self.xsk.wake_tx();
        self.tolerate(r)?;
        self.xstats.tx_kicks += 1;
        Ok(untaken)
    }

    /// A wakeup failed: errors of a down, flapping or congested link pass
    /// (the rings keep their descriptors, initiators retransmit); anything
    /// else ends the worker.
    fn tolerate(&mut self, r: io::Result<()>) -> io::Result<()> {
        match r {
            Ok(()) => Ok(()),
            // A wakeup may also meet EBUSY (the kernel still sending) or
            // EINTR, which a receive never does.
            Err(e)
                if crate::net::socket::is_transient(&e)
                    || matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) =>
            {
                self.xstats.wakeup_errors += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    // ---- RX -------------------------------------------------------------

    /// Take a batch off the RX ring and handle every complete frame.
    fn receive(&mut self) -> io::Result<usize> {
        // The RX ring hands back descriptors of this UMEM that we put on
        // the fill ring; each slot stays ours until released below.
        let n = self.xsk.rings.rx.ready(BATCH as u32);
        // The kernel wrote these frames from another CPU (the NAPI one), so
        // the first touch of each header misses the cache: start every
        // header's load now so that the misses of a batch overlap.
        for i in 0..n {
            let a = self.xsk.rings.rx.get(i).addr as usize;
            prefetch(self.xsk.base().wrapping_add(a));
        }
        for i in 0..n {
            let d = self.xsk.rings.rx.get(i);
            let addr = d.addr as usize;
            let c = Xsk::chunk_of(addr);
            self.chunks
                .transition(c, ChunkState::InFill, ChunkState::Rx);
            let len = d.len as usize;
            if addr % CHUNK_SIZE as usize != DATA_OFFSET || len > ROOM {
                self.partial.bad = true;
                self.xstats.rx_bad_desc += 1;
                self.chunks.release(c, ChunkState::Rx);
            } else if self.partial.bad || !self.partial.frags.push(c, len) {
                if !self.partial.bad {
                    self.partial.oversize = true;
                }
                self.partial.bad = true;
                self.chunks.release(c, ChunkState::Rx);
            }
            if d.options & XDP_PKT_CONTD != 0 {
                continue;
            }
            let p = std::mem::take(&mut self.partial);
            self.stats.rx_frames += 1;
            if p.bad {
                if p.oversize {
                    self.xstats.rx_oversize += 1;
                }
                self.release_frags(p.frags.chunks(), ChunkState::Rx);
                continue;
            }
            if p.frags.n > 1 {
                self.xstats.rx_multi_buffer += 1;
            }
            if let Err(e) = self.handle_frame(p.frags) {
                self.xsk.rings.rx.release(i + 1);
                return Err(e);
            }
        }
        self.xsk.rings.rx.release(n);
        Ok(n as usize)
    }

    fn release_frags(&mut self, frags: &[u32], from: ChunkState) {
        for &c in frags {
            self.chunks.release(c, from);
        }
    }

    fn release_partial(&mut self) {
        let p = std::mem::take(&mut self.partial);
        self.release_frags(p.frags.chunks(), ChunkState::Rx);
    }

    /// Run the engine on a received frame.
    fn handle_frame(&mut self, frags: Frags) -> io::Result<()> {
        let frags = if self.reflect {
            match self.reflect_frame(frags) {
                Some(f) => f,
                None => return Ok(()),
            }
        } else {
            frags
        };
        self.engine_frame(frags)
    }

    /// `--xdp-reflect`: answer a READ or WRITE in place with no engine and
    /// no disk; hand anything else back for the engine.
    fn reflect_frame(&mut self, frags: Frags) -> Option<Frags> {
        let head = frags.head();
        let max = self.engine.ports()[0].max_sectors;
        // SAFETY: `head` is in state Rx: ours alone, on no ring.
        let frame = unsafe { self.xsk.room(head) };
        let Some(len) = reflect::reflect(frame, frags.total(), max) else {
            return Some(frags);
        };
        let tails = frags_for(len) - 1;
        if self.chunks.free_len() < tails {
            self.xstats.backpressure += 1;
            self.release_frags(frags.chunks(), ChunkState::Rx);
            return None;
        }
        let own = self.reply_frags(&frags, tails);
        self.post_frags(own.chunks(), len, ChunkState::Disk);
        None
    }

    fn engine_frame(&mut self, frags: Frags) -> io::Result<()> {
        let head = frags.head();
        // SAFETY: `head` is in state Rx: the kernel handed it to us and it
        // is on no ring; this is the only reference into it.
        let frame = unsafe { self.xsk.room(head) };
        match self.engine.handle(0, frame, frags.total()) {
            Action::Reply { len, more } => {
                self.release_frags(&frags.chunks()[1..], ChunkState::Rx);
                self.post_one(head, len, ChunkState::Rx);
                if more {
                    self.more_replies();
                }
            }
            Action::Drop(reason) => {
                debug!(reason = reason.name(), "dropped frame");
                self.release_frags(frags.chunks(), ChunkState::Rx);
            }
            Action::Disk(io) => {
                // Keep arrival order: nothing overtakes a deferred request
                // (a FLUSH must follow the writes before it).
                if !self.deferred.is_empty() || !self.start_io(frags, io)? {
                    self.xstats.backpressure += 1;
                    self.deferred.push_back((frags, io));
                }
            }
        }
        Ok(())
    }

    /// Further replies of a wildcard control request, each in a free chunk.
    fn more_replies(&mut self) {
        loop {
            let Some(c) = self.chunks.alloc(ChunkState::InTx) else {
                self.xstats.reply_no_chunk += 1;
                return;
            };
            // SAFETY: `c` was just taken off the free list (InTx, staged by
            // us only): no ring holds it, no other reference exists.
            let out = unsafe { self.xsk.room(c) };
            match self.engine.next_reply(out) {
                Some((len, more)) => {
                    self.post_one(c, len, ChunkState::InTx);
                    if !more {
                        return;
                    }
                }
                None => {
                    self.chunks.release(c, ChunkState::InTx);
                    return;
                }
            }
        }
    }

    /// Serve a new export set: a new disk side (stores, bounce area,
    /// io_uring with the new files), then the engine's export list. Called
    /// with nothing in flight and nothing deferred; on failure the old set
    /// stays in force and `done` says why.
    fn reconfigure(&mut self, r: Reconfig) {
        // SAFETY: the new ring goes into `self.uring`, declared before
        // `self.xsk`, whose UMEM it registers.
        let side = unsafe { DiskSide::open(&r.disks, &self.xsk, self.max_reply) };
        let side = match side {
            Ok(side) => side,
            Err(e) => {
                warn!(iface = %self.spec.iface.name, queue = self.queue, error = %e,
                      "new export set refused: cannot set up its disk side; the old set stays");
                let _ = r.done.send(Err(format!(
                    "{} queue {}: disk side: {e}",
                    self.spec.iface.name, self.queue
                )));
                return;
            }
        };
        debug_assert_eq!(self.in_flight(), 0);
        // Nothing in flight: the old ring first, then the bounce area it
        // pointed into, then the new ones in their place.
        self.uring = None;
        self.bounce = None;
        let DiskSide {
            uring,
            bounce,
            stores,
            commits,
        } = side;
        self.uring = uring;
        self.bounce = bounce;
        self.stores = stores;
        self.commits = commits;
        self.spec.exports = r.exports.clone();
        self.spec.disks = r.disks;
        self.engine.set_exports(r.exports);
        info!(iface = %self.spec.iface.name, queue = self.queue,
              exports = self.spec.exports.len(), "AF_XDP worker: new export set in force");
        self.announce(Some(&r.announce));
        let _ = r.done.send(Ok(()));
    }

    /// Unsolicited Query Config replies (start-up, SIGHUP), as the
    /// AF_PACKET worker sends them. Each worker with its own MAC announces
    /// from it, so initiators learn every queue's path; without per-queue
    /// MACs queue 0's worker speaks for the interface. `only` limits them
    /// to these exports (shelf, slot).
    fn announce(&mut self, only: Option<&[(u16, u8)]>) {
        if self.queue != 0 && self.engine.ports()[0].mac == self.spec.iface.mac {
            return;
        }
        let exports = self.spec.exports.clone();
        for e in &exports {
            if only.is_some_and(|o| !o.contains(&(e.info.shelf, e.info.slot))) {
                continue;
            }
            for dst in e.announce_destinations() {
                let Some(c) = self.chunks.alloc(ChunkState::InTx) else {
                    self.xstats.reply_no_chunk += 1;
                    return;
                };
                // SAFETY: fresh chunk off the free list, staged by us only.
                let out = unsafe { self.xsk.room(c) };
                match control::announce(&self.engine.ports()[0], e, dst, out) {
                    Some(len) => self.post_one(c, len, ChunkState::InTx),
                    None => self.chunks.release(c, ChunkState::InTx),
                }
            }
        }
        self.flush_tx();
        let _ = self.kick(1, 0);
    }

    // ---- disk -----------------------------------------------------------

    fn run_deferred(&mut self) -> io::Result<()> {
        while let Some(&(frags, io)) = self.deferred.front() {
            if !self.start_io(frags, io)? {
                break;
            }
            self.deferred.pop_front();
        }
        Ok(())
    }

    fn submit_disk(&mut self) -> io::Result<()> {
        if self.commit_held > 0 {
            self.start_commits();
        }
        if let Some(u) = &mut self.uring {
            u.submit()?;
        }
        Ok(())
    }

    fn reap_disk(&mut self) -> io::Result<usize> {
        let Some(mut u) = self.uring.take() else {
            return Ok(0);
        };
        let n = u.reap(|tok, res| match tok {
            Token::Req(t) => self.complete(t, res),
            Token::Commit(s) => self.committed(s, res),
        });
        self.uring = Some(u);
        self.stats.disk_in_flight = self.in_flight() as u64;
        Ok(n)
    }

    /// Start a disk request; false (nothing changed) when it must wait for
    /// resources.
    fn start_io(&mut self, frags: Frags, io: DiskIo) -> io::Result<bool> {
        match self.stores[io.export] {
            Store::Null => Ok(self.null_io(frags, io)),
            Store::File {
                inline_writes: Some(fd),
                base,
                ..
            } if io.op == DiskOp::Write => Ok(self.inline_write(frags, io, fd, base)),
            Store::File {
                group_commit: Some(fd),
                base,
                ..
            } if io.op == DiskOp::Write => Ok(self.commit_write(frags, io, fd, base)),
            Store::File {
                fixed,
                base,
                direct,
                bounce_all,
                ..
            } => Ok(self.file_io(frags, io, fixed, base, direct, bounce_all)),
        }
    }

    /// Take `n` free chunks as a READ reply's tails (state Disk).
    fn alloc_tails(&mut self, n: usize, into: &mut Frags) {
        for _ in 0..n {
            let c = self
                .chunks
                .alloc(ChunkState::Disk)
                .expect("free chunks checked by the caller");
            into.push(c, ROOM);
        }
    }

    /// The chunks of the reply to received `frags`: its head (now Disk)
    /// followed by `tails` free chunks; its other fragments go back to the
    /// free list. The caller has checked that `tails` chunks are free.
    fn reply_frags(&mut self, frags: &Frags, tails: usize) -> Frags {
        self.release_frags(&frags.chunks()[1..], ChunkState::Rx);
        let mut own = Frags::one(frags.head(), 0);
        self.chunks
            .transition(own.head(), ChunkState::Rx, ChunkState::Disk);
        self.alloc_tails(tails, &mut own);
        own
    }

    /// A null READ answered from the zero pool: the engine writes the reply
    /// header in the request's frame, which is copied into a pool head; the
    /// tails only need their first 36 bytes zeroed again (a pool chunk may
    /// have carried a header). False when the pool is short.
    fn null_read_from_pool(&mut self, frags: &Frags, io: &DiskIo) -> bool {
        let n = frags_for(ATA_DATA_OFFSET + io.len as usize);
        if self.chunks.zero_len() < n {
            return false;
        }
        let head = frags.head();
        // SAFETY: `head` is in state Rx: ours alone, on no ring.
        let frame = unsafe { self.xsk.room(head) };
        let len = self.engine.complete(io, Ok(()), frame);
        let mut own = Frags::default();
        for i in 0..n {
            let z = self
                .chunks
                .take_zero(ChunkState::InTx)
                .expect("zero pool size checked");
            // SAFETY: a pool chunk just taken: on no ring, no other
            // reference; `frame` is a different chunk.
            let room = unsafe { self.xsk.room(z) };
            if i == 0 {
                room[..ATA_DATA_OFFSET].copy_from_slice(&frame[..ATA_DATA_OFFSET]);
            } else {
                room[..ATA_DATA_OFFSET].fill(0);
            }
            own.push(z, ROOM);
        }
        self.release_frags(frags.chunks(), ChunkState::Rx);
        self.post_frags(own.chunks(), len, ChunkState::InTx);
        self.xstats.zero_pool_replies += 1;
        true
    }

    /// The null store: complete at once.
    fn null_io(&mut self, frags: Frags, io: DiskIo) -> bool {
        if io.op == DiskOp::Read && self.null_read_from_pool(&frags, &io) {
            return true;
        }
        let own = if io.op == DiskOp::Read {
            let tails = frags_for(ATA_DATA_OFFSET + io.len as usize) - 1;
            if self.chunks.free_len() < tails {
                return false;
            }
            let own = self.reply_frags(&frags, tails);
            let mut left = io.len as usize;
            for (i, &c) in own.chunks().iter().enumerate() {
                let start = if i == 0 { ATA_DATA_OFFSET } else { 0 };
                let n = left.min(ROOM - start);
                // SAFETY: the head and the tails are Disk chunks owned by
                // this request with no operation in flight.
                let room = unsafe { self.xsk.room(c) };
                room[start..start + n].fill(0);
                left -= n;
            }
            own
        } else {
            self.reply_frags(&frags, 0)
        };
        self.complete(
            IoToken {
                io,
                frags: own,
                bounce: None,
            },
            Ok(()),
        );
        true
    }

    /// A WRITE to a store that acknowledges from the page cache: pwritev
    /// straight from the request's fragments, in this thread (see
    /// [`Store::File::inline_writes`]), then reply at once.
    fn inline_write(&mut self, frags: Frags, io: DiskIo, fd: RawFd, base: u64) -> bool {
        let res = self.pwrite_frags(&frags, &io, fd, base);
        let own = self.reply_frags(&frags, 0);
        self.complete(
            IoToken {
                io,
                frags: own,
                bounce: None,
            },
            res,
        );
        true
    }

    /// A durable WRITE to a page-cache store: pwritev on the plain
    /// descriptor, then wait for the next group commit fdatasync (see
    /// [`commit`]). A failed write is answered at once.
    fn commit_write(&mut self, frags: Frags, io: DiskIo, fd: RawFd, base: u64) -> bool {
        if self.commit_held >= COMMIT_HELD_MAX {
            return false;
        }
        let res = self.pwrite_frags(&frags, &io, fd, base);
        let own = self.reply_frags(&frags, 0);
        let tok = IoToken {
            io,
            frags: own,
            bounce: None,
        };
        match (res, self.commits[io.export].as_mut()) {
            (Ok(()), Some(g)) => {
                g.written(tok);
                self.commit_held += 1;
            }
            (res, _) => self.complete(tok, res),
        }
        true
    }

    /// Queue a group commit fdatasync for every store whose written
    /// requests wait and that has none in flight.
    fn start_commits(&mut self) {
        for s in 0..self.commits.len() {
            let Some(g) = self.commits[s].as_mut() else {
                continue;
            };
            if !g.ready() {
                continue;
            }
            let Store::File { fixed, .. } = self.stores[s] else {
                continue;
            };
            let Some(ring) = self.uring.as_mut() else {
                return;
            };
            // SAFETY: an fdatasync names no memory.
            if unsafe { ring.push(fixed, 0, Op::Sync, Token::Commit(s)) }.is_err() {
                // No free slot: the next turn tries again (a completion
                // frees one).
                return;
            }
            g.started();
            self.xstats.group_commits += 1;
        }
    }

    /// Store `s`'s group commit fdatasync finished: answer its batch with
    /// the sync's result.
    fn committed(&mut self, s: usize, res: Result<(), i32>) {
        let Some(g) = self.commits[s].as_mut() else {
            return;
        };
        let mut batch = g.take_synced();
        self.commit_held -= batch.len();
        self.xstats.group_commit_writes += batch.len() as u64;
        for tok in batch.drain(..) {
            self.complete(tok, res);
        }
        if let Some(g) = self.commits[s].as_mut() {
            g.give_back(batch);
        }
    }

    /// pwritev a WRITE's data straight from its received fragments.
    fn pwrite_frags(
        &mut self,
        frags: &Frags,
        io: &DiskIo,
        fd: RawFd,
        base: u64,
    ) -> Result<(), i32> {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_FRAGS];
        let mut used = 0;
        let mut left = io.len as usize;
        for (i, &c) in frags.chunks().iter().enumerate() {
            if left == 0 {
                break;
            }
            let start = if i == 0 { ATA_DATA_OFFSET } else { 0 };
            let l = left.min((frags.len[i] as usize).saturating_sub(start));
            iov[i] = libc::iovec {
                iov_base: self.xsk.frame_ptr(c).wrapping_add(start).cast(),
                iov_len: l,
            };
            left -= l;
            used = i + 1;
        }
        debug_assert_eq!(left, 0, "the engine checked the payload length");
        let mut at = base + io.offset;
        let mut iov = &mut iov[..used];
        while !iov.is_empty() {
            // SAFETY: every iovec points into a fragment of this request,
            // in state Rx (ours, on no ring, not referenced elsewhere), for
            // at most the bytes it received; pwritev only reads them. `fd`
            // (or the plain one) stays open while the worker holds its
            // Arc<Disk>.
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
            // A short write (rare on a regular file): skip what was written.
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

    /// A file store: one io_uring operation.
    #[allow(clippy::too_many_arguments)]
    fn file_io(
        &mut self,
        frags: Frags,
        io: DiskIo,
        fixed: u32,
        base: u64,
        direct: bool,
        bounce_all: bool,
    ) -> bool {
        let Some(ring) = &self.uring else {
            return false;
        };
        if ring.is_full() {
            return false;
        }
        let head = frags.head();
        let len = io.len as usize;
        let offset = base + io.offset;
        let mut segs = [Seg::EMPTY; MAX_FRAGS];
        let mut tok = IoToken {
            io,
            frags: Frags::one(head, 0),
            bounce: None,
        };
        let (dir, nseg, buf) = match io.op {
            DiskOp::Flush => {
                tok.frags = self.reply_frags(&frags, 0);
                // SAFETY: a flush names no memory.
                let pushed = unsafe { self.uring_push(fixed, 0, Op::Flush, tok) };
                return pushed;
            }
            DiskOp::Read => {
                let tails = frags_for(ATA_DATA_OFFSET + len) - 1;
                let bounce = bounce_all || (direct && tails > 0);
                if self.chunks.free_len() < tails
                    || (bounce && !self.bounce.as_ref().is_some_and(Bounce::has_free))
                {
                    return false;
                }
                tok.frags = self.reply_frags(&frags, tails);
                let data = self.xsk.frame_ptr(head).wrapping_add(ATA_DATA_OFFSET);
                if bounce_all {
                    let b = self.take_bounce(&mut tok);
                    segs[0] = Seg {
                        ptr: b,
                        len: io.len,
                    };
                    (Dir::Read, 1, Some(BOUNCE_BUF))
                } else if tails == 0 {
                    segs[0] = Seg {
                        ptr: data,
                        len: io.len,
                    };
                    (Dir::Read, 1, Some(UMEM_BUF))
                } else if direct {
                    // O_DIRECT exception: the tails start at chunk + 476,
                    // not 512-aligned, so they are read into the aligned
                    // bounce slot and copied into place on completion. The
                    // head's 7 sectors still land directly at chunk + 512.
                    let head_len = ROOM - ATA_DATA_OFFSET;
                    let b = self.take_bounce(&mut tok);
                    segs[0] = Seg {
                        ptr: data,
                        len: head_len as u32,
                    };
                    segs[1] = Seg {
                        ptr: b,
                        len: (len - head_len) as u32,
                    };
                    // Two registered buffers: plain READV.
                    (Dir::Read, 2, None)
                } else {
                    // Page cache: one READV straight into the reply's
                    // fragments (head at chunk + 512, tails at chunk + 476).
                    let mut left = len;
                    let mut n = 0;
                    for (i, &c) in tok.frags.chunks().iter().enumerate() {
                        let (p, room) = if i == 0 {
                            (data, ROOM - ATA_DATA_OFFSET)
                        } else {
                            (self.xsk.frame_ptr(c), ROOM)
                        };
                        let l = left.min(room);
                        segs[i] = Seg {
                            ptr: p,
                            len: l as u32,
                        };
                        left -= l;
                        n += 1;
                    }
                    (Dir::Read, n, Some(UMEM_BUF))
                }
            }
            DiskOp::Write => {
                // Which fragments hold the `len` data bytes.
                let mut pieces = [Seg::EMPTY; MAX_FRAGS];
                let mut used = 0;
                let mut left = len;
                for (i, &c) in frags.chunks().iter().enumerate() {
                    if left == 0 {
                        break;
                    }
                    let start = if i == 0 { ATA_DATA_OFFSET } else { 0 };
                    let have = (frags.len[i] as usize).saturating_sub(start);
                    let l = left.min(have);
                    pieces[i] = Seg {
                        ptr: self.xsk.frame_ptr(c).wrapping_add(start),
                        len: l as u32,
                    };
                    left -= l;
                    used = i + 1;
                }
                debug_assert_eq!(left, 0, "the engine checked the payload length");
                let bounce = bounce_all || (direct && used > 1);
                if bounce && !self.bounce.as_ref().is_some_and(Bounce::has_free) {
                    return false;
                }
                // Fragments past the data (padding) are not needed.
                self.release_frags(&frags.chunks()[used..], ChunkState::Rx);
                for &c in &frags.chunks()[..used] {
                    self.chunks.transition(c, ChunkState::Rx, ChunkState::Disk);
                    if c != head {
                        tok.frags.push(c, 0);
                    }
                }
                if bounce {
                    // O_DIRECT and fragments at chunk + 476 (or a device
                    // wanting more than 512-byte alignment): gather the data
                    // into the aligned bounce slot and write it from there.
                    let b = self.take_bounce(&mut tok);
                    let mut at = 0usize;
                    for p in &pieces[..used] {
                        // SAFETY: the source is a received fragment owned by
                        // this request (Disk, no operation yet); the
                        // destination is this request's bounce slot, at
                        // least `len` bytes; they do not overlap.
                        unsafe { std::ptr::copy_nonoverlapping(p.ptr, b.add(at), p.len as usize) };
                        at += p.len as usize;
                    }
                    segs[0] = Seg {
                        ptr: b,
                        len: io.len,
                    };
                    (Dir::Write, 1, Some(BOUNCE_BUF))
                } else {
                    // Single fragment: WRITE_FIXED from chunk + 512. Several
                    // (page cache): WRITEV_FIXED over the fragments.
                    segs[..used].copy_from_slice(&pieces[..used]);
                    (Dir::Write, used, Some(UMEM_BUF))
                }
            }
        };
        let op = Op::Rw {
            dir,
            segs: &segs[..nseg],
            fixed: buf,
        };
        // SAFETY: every segment lies in a chunk this request owns in state
        // Disk (head, READ reply tails, WRITE fragments) or in its bounce
        // slot; the token carries them, and neither the chunks nor the slot
        // are touched or recycled until reap_disk() hands the token back.
        // UMEM_BUF segments are inside the registered UMEM, BOUNCE_BUF ones
        // inside the registered bounce area.
        unsafe { self.uring_push(fixed, offset, op, tok) }
    }

    fn take_bounce(&mut self, tok: &mut IoToken) -> *mut u8 {
        let b = self
            .bounce
            .as_mut()
            .expect("bounce area exists for O_DIRECT stores");
        let s = b.alloc().expect("bounce slot checked by the caller");
        tok.bounce = Some(s);
        b.ptr(s)
    }

    /// Push an operation whose resources are already taken. A refusal
    /// cannot happen (the slab was checked); if it does, the request fails
    /// with EBUSY rather than leak its chunks.
    ///
    /// # Safety
    ///
    /// As [`Uring::push`].
    unsafe fn uring_push(&mut self, fixed: u32, offset: u64, op: Op<'_>, tok: IoToken) -> bool {
        let ring = self.uring.as_mut().expect("file stores have a ring");
        // SAFETY: the caller's contract.
        if let Err(Token::Req(tok)) = unsafe { ring.push(fixed, offset, op, Token::Req(tok)) } {
            warn!("io_uring refused an operation with a free slot");
            self.complete(tok, Err(libc::EBUSY));
        }
        self.stats.disk_in_flight = self.in_flight() as u64;
        true
    }

    /// A disk operation finished: copy bounced READ data into place, free
    /// what the reply does not need, build the reply and queue it.
    fn complete(&mut self, tok: IoToken, res: Result<(), i32>) {
        let IoToken { io, frags, bounce } = tok;
        let head = frags.head();
        if let (Some(s), DiskOp::Read, Ok(())) = (bounce, io.op, res) {
            let b = self.bounce.as_ref().expect("bounce area").ptr(s);
            let bounce_all = matches!(
                self.stores[io.export],
                Store::File {
                    bounce_all: true,
                    ..
                }
            );
            let mut src = 0usize;
            let mut left = io.len as usize;
            for (i, &c) in frags.chunks().iter().enumerate() {
                let start = if i == 0 { ATA_DATA_OFFSET } else { 0 };
                let n = left.min(ROOM - start);
                if i > 0 || bounce_all {
                    // SAFETY: `c` is a Disk chunk of this request whose
                    // operation has completed; the bounce slot holds the
                    // data read for it; no other reference exists.
                    let dst = unsafe { self.xsk.room(c) };
                    // SAFETY: the slot holds at least io.len bytes.
                    let from = unsafe { std::slice::from_raw_parts(b.add(src), n) };
                    dst[start..start + n].copy_from_slice(from);
                    // The slot holds only what was bounced: everything, or
                    // the data after the head's.
                    src += n;
                }
                left -= n;
            }
        }
        if let Some(s) = bounce {
            if let Some(b) = self.bounce.as_mut() {
                b.release(s);
            }
        }
        if let Err(errno) = res {
            self.stats.disk_errors += 1;
            warn!(op = ?io.op, offset = io.offset, len = io.len,
                  error = %io::Error::from_raw_os_error(errno), "disk I/O failed");
        }
        // WRITE fragments and a failed READ's tails are not part of the reply.
        if io.op != DiskOp::Read || res.is_err() {
            self.release_frags(&frags.chunks()[1..], ChunkState::Disk);
        }
        // SAFETY: the head is a Disk chunk whose operation has completed.
        let frame = unsafe { self.xsk.room(head) };
        let len = self.engine.complete(&io, res, frame);
        if io.op == DiskOp::Read && res.is_ok() {
            self.post_frags(frags.chunks(), len, ChunkState::Disk);
        } else {
            self.post_one(head, len, ChunkState::Disk);
        }
    }

    // ---- counters -------------------------------------------------------

    /// Frames found the fill ring empty since the last look (the kernel's
    /// count moved past `before`): a burst outran the refill, so keep more
    /// chunks there (bursts of that size will come again). Never shrinks:
    /// losing frames costs initiators a retransmit timeout, far more than
    /// the cache misses of a deeper ring.
    fn grow_fill(&mut self, before: u64) {
        if self.xstats.rx_fill_ring_empty > before && self.fill_depth < RING as usize {
            self.fill_depth = (self.fill_depth * 2).min(RING as usize);
            debug!(iface = %self.spec.iface.name, queue = self.queue,
                   fill_depth = self.fill_depth, "frames met an empty fill ring: deeper fill ring");
        }
    }

    fn publish(&mut self) {
        super::follow_mtu(
            &mut self.engine,
            &self.spec.iface,
            self.max_reply,
            self.queue,
        );
        if let Ok(k) = self.xsk.statistics() {
            self.xstats.rx_dropped = k.rx_dropped();
            self.xstats.rx_invalid_descs = k.rx_invalid_descs();
            self.xstats.tx_invalid_descs = k.tx_invalid_descs();
            self.xstats.rx_ring_full = k.rx_ring_full();
            let before = self.xstats.rx_fill_ring_empty;
            self.xstats.rx_fill_ring_empty = k.rx_fill_ring_empty_descs();
            self.xstats.tx_ring_empty = k.tx_ring_empty_descs();
            self.grow_fill(before);
        }
        self.xstats.fill_depth = self.fill_depth as u64;
        let b = self.prog.counters(self.queue);
        self.xstats.bpf_redirected = b.redirected;
        self.xstats.bpf_passed_non_aoe = b.passed_non_aoe;
        self.xstats.bpf_passed_foreign = b.passed_foreign;
        self.xstats.bpf_dropped_foreign = b.dropped_foreign;
        self.xstats.bpf_no_socket = b.no_socket;
        self.xstats.bpf_short = b.short;
        self.xstats.bpf_vlan = b.vlan;
        self.xstats.bpf_response = b.response;
        self.xstats.bpf_other_host = b.other_host;
        self.stats.disk_in_flight = self.in_flight() as u64;
        self.stats.publishes += 1;
        self.stats.engine = self.engine.stats.clone();
        self.stats.xdp = Some(self.xstats.clone());
        self.spec.stats.store(Arc::new(self.stats.clone()));
        debug_assert!(self.chunks.check().is_ok(), "{:?}", self.chunks.check());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_and_limits() {
        assert_eq!(frags_for(60), 1);
        assert_eq!(frags_for(ROOM), 1);
        assert_eq!(frags_for(ROOM + 1), 2);
        // MTU 9000: 17 sectors = 8740 bytes on the wire = 3 fragments.
        assert_eq!(frags_for(36 + 17 * 512), 3);
        assert_eq!(MAX_SECTORS, 35);
        assert_eq!(max_bufcnt(1500), RING as u16);
        assert_eq!(max_bufcnt(9000), (RING / 3) as u16);
    }

    /// A socket bound without XDP_USE_SG: whatever MTU `zerocopy::decide`
    /// binds it at, every request and reply the port allows fits one chunk,
    /// and the buffer count advertised is the whole RX ring.
    #[test]
    fn one_chunk_sockets_carry_one_chunk_frames() {
        use zerocopy::{decide, Bind, Offer};
        assert_eq!(sectors_in(1), 7);
        assert_eq!(ATA_DATA_OFFSET + 7 * SECTOR_SIZE, ROOM);
        assert_eq!(max_frags(Some(1)), 1);
        assert_eq!(max_frags(Some(64)), MAX_FRAGS);
        assert_eq!(max_frags(None), MAX_FRAGS);
        for mtu in 600..12_000 {
            let o = Offer {
                iface: "eth1".into(),
                driver: "virtio_net".into(),
                features: Some(zerocopy::NETDEV_XDP_ACT_XSK_ZEROCOPY),
                zc_max_segs: 1,
                mtu,
                room: ROOM,
                native: true,
            };
            let c = decide(ZeroCopy::Auto, &o).unwrap();
            if c.bind != Bind::ZeroCopy {
                assert!(mtu > 3602, "mtu {mtu}: {c:?}");
                continue;
            }
            let port =
                crate::wire::max_sectors_for_mtu(mtu).min(sectors_in(max_frags(c.max_buffers)));
            assert_eq!(
                frags_for(ATA_DATA_OFFSET + usize::from(port) * SECTOR_SIZE),
                1
            );
            assert!(mtu as usize + 14 <= ROOM);
            assert_eq!(max_bufcnt(mtu), RING as u16);
        }
    }

    #[test]
    fn frags_hold_at_most_max() {
        let mut f = Frags::default();
        for i in 0..MAX_FRAGS as u32 {
            assert!(f.push(i, 100));
        }
        assert!(!f.push(9, 1));
        assert_eq!(f.total(), 100 * MAX_FRAGS);
        assert_eq!(f.chunks(), &[0, 1, 2, 3, 4]);
    }
}
