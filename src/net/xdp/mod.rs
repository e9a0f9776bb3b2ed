//! The AF_XDP datapath: an XDP program per interface steers AoE requests
//! into one AF_XDP socket per (interface, queue); each socket is served by
//! one worker thread ([`crate::worker`]), pinned to a core, with its own
//! UMEM, its own store channels and its own engine. Nothing is shared on
//! the request path.
//!
//! - [`bpf`]: the program, its maps and counters; [`steer`]: one target MAC
//!   per queue and the NIC rules that steer it; [`zerocopy`]: whether a
//!   socket binds zero-copy.
//! - [`socket`], [`ring`], [`umem`]: the AF_XDP socket, its four rings and
//!   the ownership of UMEM chunks.
//! - [`frames`]: the frames of one socket as the worker loop sees them
//!   (multi-buffer reassembly, fill, TX and kick policy).
//!
//! Disk I/O goes through the stores' channels straight into UMEM (the
//! channels register it with io_uring): READ data lands at frame byte 36 =
//! chunk + 512, WRITE data leaves from the request's fragments.
//!
//! No allocation happens per request: every table, queue and staging array
//! is sized when the worker opens.

pub(crate) mod bpf;
pub(crate) mod frames;
pub(crate) mod ring;
pub(crate) mod socket;
// pub: `queue_mac`, for the tests that send to one queue's MAC.
pub mod steer;
pub(crate) mod umem;
pub(crate) mod zerocopy;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use self::bpf::{Attached, BpfError, XdpLink, XdpMode, XdpProgram};
use self::frames::XdpIo;
use self::socket::{Xsk, XskOptions, ZeroCopy};
use self::steer::{Steer, SteerError, SteerState, Steering};
use self::umem::{ChunkTable, ROOM};
use super::iface::IfaceInfo;
use super::WorkerSpec;
use crate::bdev::{ChannelCx, IoEngine, MemRegion, MAX_SEGS};
use crate::engine::{Port, Target};
use crate::stats::{WorkerStats, XdpStats};
use crate::wire::{MacAddr, ATA_DATA_OFFSET, SECTOR_SIZE};
use crate::worker::stores::Stores;
use crate::worker::{LoopOptions, BATCH};

/// XDP_PKT_CONTD: more fragments of this frame follow.
pub const XDP_PKT_CONTD: u32 = 1;
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
/// Disk operations a store channel takes at once (io_uring slots).
const DISK_SLOTS: u32 = 128;
/// Requests a worker holds in flight: a full ring plus as many durable
/// writes waiting for their group commit.
const IN_FLIGHT: usize = 2 * DISK_SLOTS as usize;
/// Zeroed chunks a worker with a null store keeps for READ replies (2 MiB:
/// 170 jumbo or 512 one-chunk replies on their way out; beyond that, a
/// reply's chunks are zeroed as it is built).
const ZERO_POOL: u32 = 512;
/// Default of `--spin-us`: the kernel's own suggestion for
/// `net.core.busy_poll`. Long enough to span an initiator's round trip on
/// a LAN, so a worker at window 1 never sleeps between requests; short
/// enough that an idle worker costs nothing.
pub const DEFAULT_SPIN_US: u32 = 50;

const _: () = assert!(MAX_FRAGS <= MAX_SEGS);

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
    /// What was chosen and what the kernel lacked, set by queue 0's
    /// worker once its socket is bound ([`XdpInterface::choice`]).
    choice: std::sync::OnceLock<String>,
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
            choice: std::sync::OnceLock::new(),
        })
    }

    /// One line saying what the interface is served with and which kernel
    /// features it goes without (each with the release that brought it),
    /// for the log and `status`.
    pub fn choice(&self) -> &str {
        self.choice.get().map_or("", String::as_str)
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

/// The running kernel's release (`uname -r`), for messages.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The per-interface line of [`XdpInterface::choice`]: the datapath and
/// bind in use, then every kernel feature xblade would use here and did not
/// get, with what it does instead.
fn describe_choice(iface: &str, mtu: u32, ifc: &XdpInterface, xsk: &Xsk) -> String {
    let mut missing = Vec::new();
    if xsk.bind() == zerocopy::Bind::CopyOne {
        missing.push(format!(
            "{}: one {ROOM}-byte buffer per frame, enough up to MTU {}",
            zerocopy::SG_FEATURE,
            zerocopy::mtu_for(1, ROOM)
        ));
    }
    if !ifc.prog.frags() {
        missing.push(
            "XDP multi-buffer programs (xdp.frags, Linux 5.18): program loaded without frags"
                .to_owned(),
        );
    }
    if crate::bdev::uring::kernel_has_vectored_fixed() == Some(false) {
        missing.push(
            "io_uring READV_FIXED/WRITEV_FIXED (Linux 6.15): multi-chunk file transfers use READV/WRITEV"
                .to_owned(),
        );
    }
    let head = format!(
        "{iface}: AF_XDP {} ({} XDP) at MTU {mtu}, {} queue{}, Linux {}",
        if xsk.zero_copy() {
            xsk.bind().name()
        } else if xsk.bind().sg() {
            "copy multi-buffer"
        } else {
            "copy single-buffer"
        },
        ifc.mode().name(),
        ifc.queues(),
        if ifc.queues() == 1 { "" } else { "s" },
        kernel_release()
    );
    if missing.is_empty() {
        head
    } else {
        format!("{head}; missing: {}", missing.join("; "))
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

/// An AF_XDP worker: the one worker loop over one queue's frames.
pub type Worker = crate::worker::Worker<XdpIo>;

impl crate::worker::Worker<XdpIo> {
    /// Open queue `queue` of the interface `ifc` is attached to: socket,
    /// UMEM, store channels (which register the UMEM), engine. Errors
    /// surface here, before the thread starts.
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
        if queue == 0 {
            let _ = ifc
                .choice
                .set(describe_choice(&spec.iface.name, spec.iface.mtu, ifc, &xsk));
        }
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

        // SAFETY: the UMEM is mapped once by `xsk` and stays mapped until
        // the XdpIo holding it drops, which the Worker does after its store
        // channels (field order of `Worker`).
        let cx = unsafe {
            ChannelCx::new(
                vec![MemRegion {
                    ptr: xsk.base(),
                    len: xsk.umem_len(),
                }],
                max_reply,
                DISK_SLOTS,
                IoEngine::Uring,
            )
        };
        let stores = Stores::open(&spec.disks, cx).map_err(qerr)?;
        let engine = Target::new(vec![port], spec.exports.clone());
        // A null store answers READs from a pool of zeroed chunks.
        let pool = if stores.any_reads_zero() {
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
            bind: xsk.bind().name(),
            multi_buffer: xsk.sg(),
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
        let mut io = XdpIo {
            prog: ifc.prog.clone(),
            chunks,
            queue,
            iface: spec.iface.name.clone(),
            busy_poll: opts.busy_poll,
            max_reply,
            reserve,
            fill_depth: if xsk.zero_copy() {
                FILL_ZERO_COPY
            } else {
                FILL_START
            },
            tx_q: Vec::with_capacity(n),
            tx_outstanding: 0,
            partial: Default::default(),
            rx_frames: 0,
            tx_frames: 0,
            xstats,
            xsk,
        };
        // Stock the fill ring before the XDP program may steer frames here.
        io.stock().map_err(qerr)?;
        ifc.prog
            .register_socket(queue, io.xsk.fd())
            .map_err(|e| qerr(io::Error::other(e.to_string())))?;
        let lopts = LoopOptions {
            queue,
            spin: Duration::from_micros(u64::from(spin_us)),
            reflect: opts.reflect,
            depth: IN_FLIGHT,
            datapath: "AF_XDP",
        };
        Ok(crate::worker::Worker::new(
            io, engine, spec, stores, stats, lopts,
        ))
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
}
