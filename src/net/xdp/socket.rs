//! One AF_XDP socket with its own UMEM (created and bound by xsk-rs), bound
//! to one queue of one interface in copy or zero-copy mode; its rings
//! (mapped by [`super::ring`]) and raw access to the UMEM's chunks.

use std::error::Error as _;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::socket::XdpStatistics;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::ring::{Addr, Desc, Rings};
use super::umem::{CHUNK_SIZE, DATA_OFFSET, FRAME_HEADROOM, ROOM};
use super::zerocopy::{self, Bind, Choice};

/// Zero-copy policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopy {
    /// Zero-copy where the driver and the MTU allow it, else copy mode;
    /// logs which and why. (Shown by --help: plain text, no doc links.)
    #[default]
    Auto,
    /// Zero-copy or fail at start, naming the driver's limit and what
    /// would work.
    On,
    /// Copy mode.
    Off,
}

/// Socket sizing and options.
#[derive(Debug, Clone, Copy)]
pub struct XskOptions {
    /// UMEM chunks.
    pub chunks: u32,
    /// Entries of each of the four rings.
    pub ring: u32,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// SO_PREFER_BUSY_POLL + SO_BUSY_POLL instead of need_wakeup.
    pub busy_poll: bool,
    /// Interface MTU (how many chunks its largest frame takes).
    pub mtu: u32,
    /// The XDP program runs in native mode (generic XDP feeds no
    /// zero-copy socket).
    pub native: bool,
}

// Socket options not in every libc release.
const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
/// Microseconds a syscall on the socket may busy-poll the NIC.
const BUSY_POLL_USECS: libc::c_int = 20;

/// An open AF_XDP socket and its UMEM.
pub struct Xsk {
    /// The four rings, driven in place.
    pub rings: Rings,
    /// xsk-rs's handles: they keep the socket open; only `rx` is used (for
    /// its descriptor and statistics), never their rings.
    _fq: FillQueue,
    _cq: CompQueue,
    _tx: TxQueue,
    rx: RxQueue,
    /// Chunks in the UMEM.
    chunks: u32,
    /// First byte of the UMEM mapping.
    base: *mut u8,
    /// Bound in zero-copy mode.
    zero_copy: bool,
    /// Most chunks per frame the bind carries (None: no limit of the
    /// driver's; see [`zerocopy::Choice::max_buffers`]).
    max_buffers: Option<u32>,
    /// How it is bound.
    bind: Bind,
    /// Bound with XDP_USE_SG.
    sg: bool,
    /// The UMEM sits on 2 MiB pages.
    huge_pages: bool,
    /// Declared last: dropped after the socket handles that reference it
    /// (it holds the UMEM mapping `base` points into).
    _umem: Umem,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("chunks", &self.chunks)
            .field("zero_copy", &self.zero_copy)
            .field("sg", &self.sg)
            .field("huge_pages", &self.huge_pages)
            .finish()
    }
}

// SAFETY: `base` points into the UMEM mapping kept alive by `umem` (an Arc
// inside xsk-rs), which moves with this struct; the xsk-rs handles and the
// rings are Send. Only the owning worker thread uses the socket.
unsafe impl Send for Xsk {}

fn errno_of(e: &xsk_rs::socket::SocketCreateError) -> Option<i32> {
    e.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Create the UMEM, on 2 MiB pages when enough are reserved
/// (`vm.nr_hugepages`, which `tuning/xblade-tune.sh --hugepages` sets):
/// 16 MiB then takes 8 TLB entries instead of 4096, which counts on a
/// zero-copy NIC whose IOMMU maps it too. Otherwise 4 KiB pages, which
/// work everywhere. Returns whether the pages are huge.
fn create_umem(
    cfg: UmemConfig,
    n: NonZeroU32,
    chunks: u32,
) -> io::Result<(Umem, Vec<FrameDesc>, bool)> {
    match Umem::new(cfg, n, true) {
        Ok((umem, descs)) => return Ok((umem, descs, true)),
        Err(e) => debug!(reason = %chain(&e), "UMEM on 2 MiB pages refused; using 4 KiB pages"),
    }
    let (umem, descs) = Umem::new(cfg, n, false).map_err(|e| {
        let errno = e
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        io::Error::new(
            errno.map_or(io::ErrorKind::Other, |c| {
                io::Error::from_raw_os_error(c).kind()
            }),
            format!(
                "creating the UMEM ({} MiB): {}",
                (chunks * CHUNK_SIZE) >> 20,
                chain(&e)
            ),
        )
    })?;
    Ok((umem, descs, false))
}

impl Xsk {
    /// Create a UMEM of `opts.chunks` chunks and bind a socket to
    /// `ifname` (index `ifindex`) / `queue`, in the mode
    /// [`zerocopy::decide`] picks from the driver's offer, the MTU and
    /// `opts.zero_copy`. Queue 0 logs the choice and its reason for the
    /// interface (every queue decides alike); `--zero-copy on` that the
    /// driver cannot honour fails here with what would work.
    pub fn open(ifname: &str, ifindex: u32, queue: u32, opts: &XskOptions) -> io::Result<Xsk> {
        let offer = zerocopy::probe(ifname, ifindex, opts.mtu, ROOM, opts.native);
        let choice = zerocopy::decide(opts.zero_copy, &offer)
            .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e.to_string()))?;
        if queue == 0 {
            info!(iface = ifname, driver = %offer.driver, policy = ?opts.zero_copy,
                  mtu = opts.mtu, xdp_features = offer.features.unwrap_or(0),
                  xdp_zc_max_segs = offer.zc_max_segs, bind = choice.bind.name(),
                  "AF_XDP bind mode: {}", choice.reason);
        } else {
            debug!(iface = ifname, queue, bind = choice.bind.name(), reason = %choice.reason,
                   "AF_XDP bind mode");
        }
        let mut choice = choice;
        loop {
            let e = match Xsk::open_with(ifname, queue, opts, &choice) {
                Ok(x) => return Ok(x),
                Err(e) => e,
            };
            let Some(next) = zerocopy::next_bind(&choice, &e) else {
                return Err(e);
            };
            if next.bind != Bind::CopyOne {
                warn!(iface = ifname, queue, refused = choice.bind.name(), reason = %e,
                      "AF_XDP bind refused; trying {}", next.bind.name());
                choice = next;
                continue;
            }
            // Copy mode refused with EINVAL: probe whether XDP_USE_SG is
            // what this kernel lacks (before 6.6) by binding without it.
            // If that fails too, the first error was about something else
            // and stands.
            let Ok(x) = Xsk::open_with(ifname, queue, opts, &next) else {
                return Err(e);
            };
            if offer.buffers_needed() > 1 {
                return Err(zerocopy::sg_missing(&offer, &e));
            }
            warn!(iface = ifname, queue, reason = %e,
                  "AF_XDP bind with XDP_USE_SG refused (multi-buffer sockets arrived in Linux 6.6): copy mode, one buffer per frame, enough at MTU {}", opts.mtu);
            return Ok(x);
        }
    }

    fn open_with(ifname: &str, queue: u32, opts: &XskOptions, choice: &Choice) -> io::Result<Xsk> {
        let zc = choice.bind.zero_copy();
        let bad = |what: &str, e: &dyn std::error::Error| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {}", chain(e)))
        };
        let qsize = QueueSize::new(opts.ring).map_err(|e| bad("ring size", &e))?;
        let ucfg = UmemConfig::builder()
            .frame_size(FrameSize::new(CHUNK_SIZE).map_err(|e| bad("chunk size", &e))?)
            .frame_headroom(FRAME_HEADROOM)
            .fill_queue_size(qsize)
            .comp_queue_size(qsize)
            .build()
            .map_err(|e| bad("UMEM config", &e))?;
        let n = NonZeroU32::new(opts.chunks).ok_or_else(|| io::Error::other("zero chunks"))?;
        let (umem, descs, huge_pages) = create_umem(ucfg, n, opts.chunks)?;
        let mut flags = match choice.bind {
            Bind::Copy => BindFlags::XDP_COPY | BindFlags::XDP_USE_SG,
            Bind::CopyOne => BindFlags::XDP_COPY,
            Bind::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            Bind::ZeroCopySg => BindFlags::XDP_ZEROCOPY | BindFlags::XDP_USE_SG,
        };
        if !opts.busy_poll {
            flags |= BindFlags::XDP_USE_NEED_WAKEUP;
        }
        let scfg = SocketConfig::builder()
            .rx_queue_size(qsize)
            .tx_queue_size(qsize)
            .bind_flags(flags)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .build();
        let ifc = ifname
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
        let start = Instant::now();
        let (tx, rx, rings) = loop {
            // SAFETY: `umem` is fresh and used by no other socket; the
            // socket is bound to one interface queue, served only by the
            // worker that will own this struct.
            match unsafe { Socket::new(scfg, &umem, &ifc, queue) } {
                Ok(s) => break s,
                // The previous socket's pool on this queue is freed by
                // deferred work (~10-20 ms after close): retry.
                Err(e)
                    if errno_of(&e) == Some(libc::EBUSY)
                        && start.elapsed() < Duration::from_secs(2) =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    let kind = errno_of(&e).map_or(io::ErrorKind::Other, |c| {
                        io::Error::from_raw_os_error(c).kind()
                    });
                    return Err(io::Error::new(
                        kind,
                        format!(
                            "AF_XDP socket on {ifname} queue {queue} ({} mode): {}",
                            choice.bind.name(),
                            chain(&e)
                        ),
                    ));
                }
            }
        };
        let (fq, cq) =
            rings.ok_or_else(|| io::Error::other("socket got no fill/completion rings"))?;
        let mut d0 = descs[0];
        debug_assert_eq!(d0.addr(), DATA_OFFSET);
        // xsk-rs exposes no base pointer: take the data pointer of chunk 0's
        // fresh descriptor and step back by its UMEM offset
        // (docs/platform.md §1.3).
        // SAFETY: `d0` describes chunk 0 of this UMEM, which no ring holds
        // yet; the slice is dropped at the end of the statement.
        let p = unsafe { umem.data_mut(&mut d0) }
            .contents_mut()
            .as_mut_ptr();
        let base = p.wrapping_sub(d0.addr());
        // SAFETY: the socket owns its UMEM (first and only socket on it), so
        // its descriptor carries all four rings; xsk-rs's ring handles
        // (kept only to hold the socket open) are never used.
        let rings = unsafe { Rings::map(rx.fd().as_raw_fd(), opts.ring) }?;
        let x = Xsk {
            rings,
            _fq: fq,
            _cq: cq,
            _tx: tx,
            rx,
            chunks: descs.len() as u32,
            base,
            zero_copy: false,
            max_buffers: choice.max_buffers,
            sg: choice.bind.sg(),
            bind: choice.bind,
            huge_pages,
            _umem: umem,
        };
        let zero_copy = x.query_zero_copy().unwrap_or(zc);
        if zc && !zero_copy {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel bound the socket in copy mode",
            ));
        }
        if opts.busy_poll {
            x.set_busy_poll()?;
        }
        debug!(iface = ifname, queue, zero_copy, "AF_XDP socket bound");
        Ok(Xsk { zero_copy, ..x })
    }

    fn query_zero_copy(&self) -> io::Result<bool> {
        let mut v = [0u32; 1];
        let mut len = 4 as libc::socklen_t;
        // SAFETY: `v` is writable for `len` bytes and outlives the call; the
        // fd is the socket owned by `self`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                SOL_XDP,
                XDP_OPTIONS,
                v.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v[0] & XDP_OPTIONS_ZEROCOPY != 0)
    }

    fn set_busy_poll(&self) -> io::Result<()> {
        for (opt, val) in [
            (SO_PREFER_BUSY_POLL, 1),
            (SO_BUSY_POLL, BUSY_POLL_USECS),
            (SO_BUSY_POLL_BUDGET, super::BATCH as libc::c_int),
        ] {
            // SAFETY: `val` is a live c_int for the call; the fd is ours.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd(),
                    libc::SOL_SOCKET,
                    opt,
                    std::ptr::addr_of!(val).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::other(format!(
                    "busy poll socket option {opt}: {}",
                    io::Error::last_os_error()
                )));
            }
        }
        Ok(())
    }

    /// The socket descriptor (for the XSKMAP and poll).
    #[inline]
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// How it is bound.
    pub fn bind(&self) -> Bind {
        self.bind
    }

    /// Bound with XDP_USE_SG: frames may span several chunks. Without it
    /// the kernel delivers only one-chunk frames and a TX descriptor must
    /// never carry XDP_PKT_CONTD.
    #[inline]
    pub fn sg(&self) -> bool {
        self.sg
    }

    /// Most chunks per frame (RX and TX) this socket carries; None: only the
    /// datapath's own limit applies.
    pub fn max_buffers(&self) -> Option<u32> {
        self.max_buffers
    }

    /// The UMEM sits on 2 MiB pages.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// Size of the UMEM mapping in bytes.
    pub fn umem_len(&self) -> usize {
        self.chunks as usize * CHUNK_SIZE as usize
    }

    /// The kernel's counters for this socket (`XDP_STATISTICS`).
    pub fn statistics(&self) -> io::Result<XdpStatistics> {
        self.rx.fd().xdp_statistics()
    }

    /// Let the kernel process the fill and RX rings (need_wakeup or busy
    /// poll): a zero-timeout poll(2).
    pub fn wake_rx(&self) -> io::Result<()> {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd for the call.
        if unsafe { libc::poll(&mut p, 1, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Let the kernel transmit what the TX ring holds (copy mode sends only
    /// from inside this call). A busy or full device, or a link going
    /// down, is not an error: the descriptors stay on the ring.
    pub fn wake_tx(&self) -> io::Result<()> {
        // SAFETY: sendto with no buffer and no address on our socket.
        let rc = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EBUSY | libc::ENETDOWN) => {}
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// First byte of the UMEM mapping (for io_uring buffer registration).
    #[inline]
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Chunk holding UMEM offset `addr`.
    #[inline]
    pub fn chunk_of(addr: usize) -> u32 {
        (addr / CHUNK_SIZE as usize) as u32
    }

    /// Frame byte 0 of chunk `c` (chunk + [`DATA_OFFSET`]).
    #[inline]
    pub fn frame_ptr(&self, c: u32) -> *mut u8 {
        debug_assert!(c < self.chunks());
        self.base
            .wrapping_add(c as usize * CHUNK_SIZE as usize + DATA_OFFSET)
    }

    /// The frame room of chunk `c`: ROOM bytes from chunk + DATA_OFFSET.
    ///
    /// # Safety
    ///
    /// The caller owns `c` per its chunk table (Rx; Disk with no operation
    /// in flight; or freshly allocated and not yet on a ring) and holds no
    /// other reference into it while the slice lives.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn room(&self, c: u32) -> &mut [u8] {
        // SAFETY: the chunk lies inside the UMEM mapping, which lives as long
        // as `self`; exclusive access is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.frame_ptr(c), ROOM) }
    }

    /// The fill-ring address of chunk `c` (the kernel receives at chunk +
    /// [`DATA_OFFSET`] whatever the offset given).
    #[inline]
    pub fn fill_addr(c: u32) -> Addr {
        u64::from(c) * u64::from(CHUNK_SIZE) + DATA_OFFSET as u64
    }

    /// A TX descriptor for `len` bytes of chunk `c` at chunk + DATA_OFFSET,
    /// with XDP_PKT_CONTD when `more` fragments follow.
    #[inline]
    pub fn tx_desc(c: u32, len: usize, more: bool) -> Desc {
        Desc {
            addr: Xsk::fill_addr(c),
            len: len as u32,
            options: if more { super::XDP_PKT_CONTD } else { 0 },
        }
    }
}
