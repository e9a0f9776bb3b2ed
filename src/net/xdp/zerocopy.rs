//! How to bind an interface's AF_XDP sockets: copy mode, zero-copy, or
//! zero-copy with multi-buffer (`XDP_USE_SG`), from what the driver offers,
//! the interface MTU and the `--zero-copy` policy.
//!
//! Why it is not simply "zero-copy when the driver offers it": the kernel
//! refuses `XDP_ZEROCOPY | XDP_USE_SG` (EOPNOTSUPP, `xp_assign_dev`) when the
//! driver takes one buffer per frame in zero-copy mode (`xdp_zc_max_segs ==
//! 1`: virtio_net, igb and most others; only ice, i40e and idpf take more),
//! while `XDP_ZEROCOPY` alone binds. So (docs/platform.md §5.1):
//!
//! - the largest frame at the MTU fits one chunk: zero-copy without SG, and
//!   the worker never produces or accepts a frame of more than one chunk
//!   (its sectors per request are capped to what one chunk carries);
//! - it does not, and the driver's `xdp_zc_max_segs` covers the buffers it
//!   needs: zero-copy with SG;
//! - else copy mode (with SG) for that interface. A UMEM chunk above 4 KiB
//!   would let a jumbo frame fit one buffer, but the kernel refuses it:
//!   `XDP_UMEM_REG` with 8192- or 16384-byte chunks fails with EINVAL on
//!   6.18, on a 2 MiB-page (MAP_HUGETLB) UMEM too (docs/platform.md §1.1 on the
//!   dev VM; again 2026-12-03 in the 6.18.15 guest of
//!   tests/scripts/75-xdp-zerocopy.sh with a raw probe, where the same UMEM
//!   with 4096-byte chunks bound `XDP_ZEROCOPY` on virtio_net and
//!   `XDP_ZEROCOPY | XDP_USE_SG` failed with EOPNOTSUPP). So there is no
//!   zero-copy for jumbo frames on one-buffer drivers.
//!
//! The decision ([`decide`]) is pure and unit-tested; [`probe`] gathers its
//! inputs from the kernel.
//!
//! What zero-copy mode changes for the rest of the datapath, where frames
//! are the NIC's DMA buffers (checked 2026-12-03, in the qemu guest of
//! tests/scripts/75-xdp-zerocopy.sh where noted):
//!
//! - Headroom and O_DIRECT alignment: the driver receives at the same place
//!   as the copy path (chunk + 256 + [`super::umem::FRAME_HEADROOM`] =
//!   chunk + 476; `Worker::receive` drops a descriptor anywhere else and
//!   counts `rx_bad_desc`), so frame byte 36 stays at chunk + 512 and
//!   one-chunk READs and WRITEs go to an O_DIRECT store in place. Guest:
//!   O_DIRECT export, `bench --verify`, `rx_bad_desc` 0.
//! - Chunk ownership ([`super::umem::ChunkTable`]): the four rings carry the
//!   same addresses as in copy mode. `InFill` also covers the chunks the
//!   driver took from the fill ring into the NIC's RX ring, and the frames
//!   the XDP program passes to the stack or drops: the kernel recycles those
//!   into its own pool (`xsk_buff_free`) and uses them for later receives,
//!   never handing them back on RX. All of them are the kernel's, as
//!   `InFill` says; the counts hold.
//! - Fill-ring starvation: a zero-copy worker keeps the whole fill ring
//!   stocked from the start (`FILL_ZERO_COPY` in the worker): the NIC posts
//!   its buffers from it and drops a frame when none is posted. xsk-rs binds
//!   inside `Socket::new`, before the worker can fill the ring, so the
//!   driver's first refill finds it empty and the kernel counts
//!   `rx_fill_ring_empty` at start-up (thousands in the guest, before any
//!   traffic); the guest test checks that it does not move while requests
//!   are served.
//! - The stack's traffic: in zero-copy mode every frame of a served queue
//!   lands in a UMEM chunk first, non-AoE ones included; the kernel copies
//!   what the XDP program passes into a socket buffer. So the fill ring
//!   feeds the host's own traffic on that queue too, one more reason to
//!   keep it stocked, and a queue whose worker has stopped taking frames
//!   (backpressure) delays the stack's frames with the AoE ones.
//! - TX completion order: `Worker::reap_tx` frees each completed address by
//!   value and assumes no order.
//! - Replies built in the request's chunk: the pool DMA-maps the whole UMEM
//!   in both directions, so a received chunk goes back out as it is. On a
//!   socket without `XDP_USE_SG` no reply spans two chunks: the port's
//!   sectors are capped to one chunk (a debug assertion guards
//!   `post_frags`), and the kernel delivers no multi-buffer frame to it.
//! - The null store's zero pool: pool chunks never go to the fill ring, so
//!   the NIC never writes them; TX only reads them. Guest: a null export's
//!   READs served from the pool in zero-copy mode.

use std::ffi::CString;
use std::io;

use libbpf_rs::libbpf_sys;

use super::socket::ZeroCopy;

/// `NETDEV_XDP_ACT_XSK_ZEROCOPY` from linux/netdev.h (not in libbpf-sys's
/// bindings).
pub const NETDEV_XDP_ACT_XSK_ZEROCOPY: u64 = 1 << 3;

/// Bytes a received frame takes beyond the MTU: the Ethernet header and one
/// VLAN tag (drivers size receive buffers for a tagged frame too; AoE frames
/// are never tagged here, but the stack's may be, and in zero-copy mode
/// every frame of the queue lands in a UMEM chunk first).
pub const FRAME_OVERHEAD: u32 = 14 + 4;

/// How a socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// `XDP_COPY | XDP_USE_SG`: the kernel copies every frame.
    Copy,
    /// `XDP_COPY` alone: the kernel copies every frame, one chunk each.
    /// For kernels before 6.6, which refuse `XDP_USE_SG` (EINVAL), at an
    /// MTU whose frames fit one chunk.
    CopyOne,
    /// `XDP_ZEROCOPY` without `XDP_USE_SG`: one chunk per frame.
    ZeroCopy,
    /// `XDP_ZEROCOPY | XDP_USE_SG`: frames over several chunks.
    ZeroCopySg,
}

impl Bind {
    /// Bound in zero-copy mode.
    pub fn zero_copy(self) -> bool {
        matches!(self, Bind::ZeroCopy | Bind::ZeroCopySg)
    }

    /// Bound with `XDP_USE_SG` (multi-buffer frames).
    pub fn sg(self) -> bool {
        matches!(self, Bind::Copy | Bind::ZeroCopySg)
    }

    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Bind::Copy => "copy",
            Bind::CopyOne => "copy single-buffer",
            Bind::ZeroCopy => "zero-copy",
            Bind::ZeroCopySg => "zero-copy multi-buffer",
        }
    }
}

/// What the kernel says about an interface, and the facts the choice
/// depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Interface name (for messages).
    pub iface: String,
    /// Driver name (`ethtool -i`), for messages.
    pub driver: String,
    /// XDP feature flags (`NETDEV_XDP_ACT_*`); None when the kernel does not
    /// report them (before 6.3) or the query failed.
    pub features: Option<u64>,
    /// Buffers per frame the driver takes in zero-copy mode
    /// (`xdp_zc_max_segs`, kernel 6.6+); 0 when not reported.
    pub zc_max_segs: u32,
    /// Interface MTU.
    pub mtu: u32,
    /// Frame bytes one UMEM chunk receives (`umem::ROOM`).
    pub room: usize,
    /// The XDP program runs in native (driver) mode: generic XDP cannot feed
    /// a zero-copy socket.
    pub native: bool,
}

impl Offer {
    /// Chunks the largest frame at the MTU takes.
    pub fn buffers_needed(&self) -> u32 {
        buffers_for(self.mtu, self.room)
    }

    /// Buffers per frame in zero-copy mode; an unreported limit counts as 1,
    /// the kernel's default for every driver.
    fn zc_segs(&self) -> u32 {
        self.zc_max_segs.max(1)
    }

    fn offers_zero_copy(&self) -> Option<bool> {
        self.features.map(|f| f & NETDEV_XDP_ACT_XSK_ZEROCOPY != 0)
    }
}

/// Chunks of `room` bytes the largest frame at `mtu` takes.
pub fn buffers_for(mtu: u32, room: usize) -> u32 {
    let frame = mtu as usize + FRAME_OVERHEAD as usize;
    frame.div_ceil(room.max(1)).max(1) as u32
}

/// Largest MTU whose frames fit `buffers` chunks of `room` bytes.
pub fn mtu_for(buffers: u32, room: usize) -> u32 {
    (buffers as usize * room).saturating_sub(FRAME_OVERHEAD as usize) as u32
}

/// The bind to use and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// How to bind.
    pub bind: Bind,
    /// If a zero-copy bind fails anyway, bind in copy mode (`auto`).
    pub fallback: bool,
    /// Most chunks per frame this bind carries (None: the datapath's own
    /// limit); the worker caps its sectors per request to it.
    pub max_buffers: Option<u32>,
    /// Why, for the log.
    pub reason: String,
}

/// `--zero-copy on` cannot be honoured: what the driver lacks and what
/// would work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZeroCopyError {
    /// The program runs in generic mode.
    #[error("{iface}: --zero-copy on, but the XDP program runs in generic (skb) mode, which cannot feed a zero-copy socket: use --xdp-mode native (if {driver} has native XDP) or --zero-copy auto")]
    Generic {
        /// Interface.
        iface: String,
        /// Driver.
        driver: String,
    },
    /// The driver has no AF_XDP zero-copy.
    #[error("{iface}: --zero-copy on, but {driver} offers no AF_XDP zero-copy (XDP features {features:#x}): use --zero-copy auto or off")]
    NotOffered {
        /// Interface.
        iface: String,
        /// Driver.
        driver: String,
        /// Its XDP feature flags.
        features: u64,
    },
    /// The MTU needs more buffers per frame than the driver takes.
    #[error("{iface}: {driver} takes {segs} buffer{s} per frame in zero-copy mode, MTU {mtu} needs {needs} (frames of MTU + {FRAME_OVERHEAD} bytes, {room} per buffer): lower the MTU to {fit_mtu} or use --zero-copy auto", s = if *segs == 1 { "" } else { "s" })]
    Buffers {
        /// Interface.
        iface: String,
        /// Driver.
        driver: String,
        /// Its `xdp_zc_max_segs`.
        segs: u32,
        /// Interface MTU.
        mtu: u32,
        /// Buffers a frame at that MTU takes.
        needs: u32,
        /// Frame bytes per buffer.
        room: usize,
        /// Largest MTU that fits `segs` buffers.
        fit_mtu: u32,
    },
}

/// Choose the bind for `o` under `policy`. Only `ZeroCopy::On` fails.
pub fn decide(policy: ZeroCopy, o: &Offer) -> Result<Choice, ZeroCopyError> {
    let copy = |reason: String| Choice {
        bind: Bind::Copy,
        fallback: false,
        max_buffers: None,
        reason,
    };
    let on = policy == ZeroCopy::On;
    if policy == ZeroCopy::Off {
        return Ok(copy("--zero-copy off".into()));
    }
    if !o.native {
        if on {
            return Err(ZeroCopyError::Generic {
                iface: o.iface.clone(),
                driver: o.driver.clone(),
            });
        }
        return Ok(copy(
            "the XDP program runs in generic (skb) mode, which cannot feed a zero-copy socket"
                .into(),
        ));
    }
    match (o.offers_zero_copy(), o.features) {
        (Some(false), Some(features)) => {
            if on {
                return Err(ZeroCopyError::NotOffered {
                    iface: o.iface.clone(),
                    driver: o.driver.clone(),
                    features,
                });
            }
            return Ok(copy(format!(
                "{} offers no AF_XDP zero-copy (XDP features {features:#x})",
                o.driver
            )));
        }
        (None, _) => {
            // An old kernel that reports no features: try zero-copy without
            // SG where a frame fits one chunk (any zero-copy driver takes
            // that); a multi-buffer zero-copy bind would be a blind guess.
            let needs = o.buffers_needed();
            if needs == 1 {
                return Ok(Choice {
                    bind: Bind::ZeroCopy,
                    fallback: !on,
                    max_buffers: Some(1),
                    reason: format!(
                        "the kernel reports no XDP features; MTU {} fits one {}-byte buffer: trying zero-copy",
                        o.mtu, o.room
                    ),
                });
            }
            if on {
                return Ok(Choice {
                    bind: Bind::ZeroCopySg,
                    fallback: false,
                    max_buffers: Some(needs),
                    reason: format!(
                        "--zero-copy on; the kernel reports no XDP features; MTU {} needs {needs} buffers per frame: trying zero-copy multi-buffer",
                        o.mtu
                    ),
                });
            }
            return Ok(copy(format!(
                "the kernel reports no XDP features, and MTU {} needs {needs} buffers per frame: zero-copy with multi-buffer would be a guess",
                o.mtu
            )));
        }
        _ => {}
    }
    let needs = o.buffers_needed();
    let segs = o.zc_segs();
    if needs == 1 {
        return Ok(Choice {
            bind: Bind::ZeroCopy,
            fallback: !on,
            max_buffers: Some(1),
            reason: format!(
                "{} offers AF_XDP zero-copy and a frame at MTU {} fits one {}-byte buffer: zero-copy without multi-buffer",
                o.driver, o.mtu, o.room
            ),
        });
    }
    if segs >= needs {
        return Ok(Choice {
            bind: Bind::ZeroCopySg,
            fallback: !on,
            max_buffers: Some(segs),
            reason: format!(
                "{} takes {segs} buffers per frame in zero-copy mode and MTU {} needs {needs}: zero-copy multi-buffer",
                o.driver, o.mtu
            ),
        });
    }
    let fit_mtu = mtu_for(segs, o.room);
    if on {
        return Err(ZeroCopyError::Buffers {
            iface: o.iface.clone(),
            driver: o.driver.clone(),
            segs,
            mtu: o.mtu,
            needs,
            room: o.room,
            fit_mtu,
        });
    }
    Ok(copy(format!(
        "{} takes {segs} buffer{} per frame in zero-copy mode, MTU {} needs {needs}: copy mode (an MTU of {fit_mtu} or less would allow zero-copy)",
        o.driver,
        if segs == 1 { "" } else { "s" },
        o.mtu
    )))
}

/// The bind to try after `failed` was refused with `err`, if any: a
/// zero-copy bind that may fall back goes to copy mode; a copy-mode bind
/// refused with EINVAL (`kind` InvalidInput) may be a kernel without
/// `XDP_USE_SG` (Linux 6.6): [`copy_one`] is then tried, which tells (see
/// `Xsk::open`). Else the error stands.
pub fn next_bind(failed: &Choice, err: &io::Error) -> Option<Choice> {
    if failed.fallback && failed.bind.zero_copy() {
        return Some(Choice {
            bind: Bind::Copy,
            fallback: false,
            max_buffers: None,
            reason: format!("zero-copy bind refused: {err}"),
        });
    }
    (failed.bind == Bind::Copy && err.kind() == io::ErrorKind::InvalidInput).then(|| copy_one(err))
}

/// Copy mode without `XDP_USE_SG`, one chunk per frame: after `err`
/// refused the copy bind with it.
pub fn copy_one(err: &io::Error) -> Choice {
    Choice {
        bind: Bind::CopyOne,
        fallback: false,
        max_buffers: Some(1),
        reason: format!("{SG_FEATURE} refused ({err}): copy mode, one buffer per frame"),
    }
}

/// The kernel binds without `XDP_USE_SG` what it refused with it (`err`),
/// and `o`'s MTU needs more than one chunk: the error naming the feature.
pub fn sg_missing(o: &Offer, err: &io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{SG_FEATURE}, needed above MTU {} ({} buffers per frame at MTU {}), refused by this kernel ({err})",
            mtu_for(1, o.room),
            o.buffers_needed(),
            o.mtu
        ),
    )
}

/// The kernel feature a socket needs for frames over one chunk, and the
/// release that brought it (for messages).
pub const SG_FEATURE: &str = "AF_XDP multi-buffer (XDP_USE_SG, Linux 6.6)";

/// Ask the kernel for everything [`decide`] needs about `iface` (index
/// `ifindex`); `mtu` and `room` come from the caller.
pub fn probe(iface: &str, ifindex: u32, mtu: u32, room: usize, native: bool) -> Offer {
    let (features, zc_max_segs) = query(ifindex).unwrap_or((None, 0));
    Offer {
        iface: iface.into(),
        driver: driver_name(iface).unwrap_or_else(|| "its driver".into()),
        features,
        zc_max_segs,
        mtu,
        room,
        native,
    }
}

/// The driver's XDP features (None: not reported, kernel before 6.3) and
/// `xdp_zc_max_segs` (0: not reported), from `bpf_xdp_query`.
fn query(ifindex: u32) -> Option<(Option<u64>, u32)> {
    let ifindex = i32::try_from(ifindex).ok()?;
    // SAFETY: bpf_xdp_query_opts is a plain C struct for which all-zero is
    // the documented default; `sz` is set right after.
    let mut opts: libbpf_sys::bpf_xdp_query_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t;
    // SAFETY: `opts` lives on this stack frame for the whole call and its
    // size is declared in `sz`.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex, 0, &mut opts) };
    if rc != 0 {
        return None;
    }
    // No features at all: an old kernel that does not report them.
    let features = (opts.feature_flags != 0).then_some(opts.feature_flags);
    Some((features, opts.xdp_zc_max_segs))
}

/// `SIOCETHTOOL` / `ETHTOOL_GDRVINFO` (linux/sockios.h, linux/ethtool.h).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with the `ifr_data` member.
#[repr(C)]
struct IfReqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The driver of `iface` as `ethtool -i` names it (`virtio_net`, `veth`,
/// `ice`): the ETHTOOL_GDRVINFO ioctl, else the sysfs driver link.
pub fn driver_name(iface: &str) -> Option<String> {
    drvinfo(iface).ok().or_else(|| {
        std::fs::read_link(format!("/sys/class/net/{iface}/device/driver"))
            .ok()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    })
}

fn drvinfo(iface: &str) -> io::Result<String> {
    let c = CString::new(iface).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: DrvInfo is plain integers and byte arrays: all-zero is valid.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data: std::ptr::addr_of_mut!(info).cast(),
        _pad: [0; 16],
    };
    for (d, &s) in req.name.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `req` and the `info` it points to live on this stack frame for
    // the whole call; the kernel writes at most size_of::<DrvInfo>() bytes.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL, std::ptr::addr_of_mut!(req)) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is the socket opened above, owned here only.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err);
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    let name = String::from_utf8_lossy(&info.driver[..end]).into_owned();
    if name.is_empty() {
        return Err(io::ErrorKind::NotFound.into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::xdp::umem::ROOM;

    /// virtio_net's flags on 6.18 with `iommu_platform=on` (measured in the
    /// guest): basic, redirect, ndo_xmit, xsk_zerocopy, rx_sg, ndo_xmit_sg.
    const VIRTIO_FEATURES: u64 = 0x6f;
    /// veth's flags on 6.18 (measured): basic, redirect, rx_sg; no
    /// zero-copy.
    const VETH_FEATURES: u64 = 0x23;

    fn offer(driver: &str, features: Option<u64>, segs: u32, mtu: u32) -> Offer {
        Offer {
            iface: "eth1".into(),
            driver: driver.into(),
            features,
            zc_max_segs: segs,
            mtu,
            room: ROOM,
            native: true,
        }
    }

    #[test]
    fn buffers_and_mtus() {
        assert_eq!(ROOM, 3620);
        assert_eq!(buffers_for(1500, ROOM), 1);
        assert_eq!(buffers_for(3602, ROOM), 1);
        assert_eq!(buffers_for(3603, ROOM), 2);
        assert_eq!(buffers_for(9000, ROOM), 3);
        assert_eq!(mtu_for(1, ROOM), 3602);
        assert_eq!(mtu_for(3, ROOM), 10842);
        for mtu in [576, 1500, 3602, 3603, 9000, 9216] {
            let b = buffers_for(mtu, ROOM);
            assert!(mtu <= mtu_for(b, ROOM) && mtu > mtu_for(b - 1, ROOM));
        }
    }

    #[test]
    fn one_buffer_driver_at_1500_binds_zero_copy_without_sg() {
        for policy in [ZeroCopy::Auto, ZeroCopy::On] {
            let c = decide(policy, &offer("virtio_net", Some(VIRTIO_FEATURES), 1, 1500)).unwrap();
            assert_eq!(c.bind, Bind::ZeroCopy);
            assert!(!c.bind.sg());
            assert_eq!(c.max_buffers, Some(1));
            assert_eq!(c.fallback, policy == ZeroCopy::Auto);
            assert_eq!(
                c.reason,
                "virtio_net offers AF_XDP zero-copy and a frame at MTU 1500 fits one 3620-byte buffer: zero-copy without multi-buffer"
            );
        }
    }

    #[test]
    fn one_buffer_driver_at_9000() {
        let o = offer("virtio_net", Some(VIRTIO_FEATURES), 1, 9000);
        let c = decide(ZeroCopy::Auto, &o).unwrap();
        assert_eq!(c.bind, Bind::Copy);
        assert_eq!(
            c.reason,
            "virtio_net takes 1 buffer per frame in zero-copy mode, MTU 9000 needs 3: copy mode (an MTU of 3602 or less would allow zero-copy)"
        );
        let e = decide(ZeroCopy::On, &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "eth1: virtio_net takes 1 buffer per frame in zero-copy mode, MTU 9000 needs 3 (frames of MTU + 18 bytes, 3620 per buffer): lower the MTU to 3602 or use --zero-copy auto"
        );
        // Not reported (kernel 6.3-6.5): the kernel's default of 1.
        let o0 = offer("virtio_net", Some(VIRTIO_FEATURES), 0, 9000);
        assert_eq!(decide(ZeroCopy::Auto, &o0).unwrap().bind, Bind::Copy);
    }

    #[test]
    fn multi_buffer_drivers() {
        // ice takes up to 5 buffers per frame (example value).
        let c = decide(
            ZeroCopy::Auto,
            &offer("ice", Some(VIRTIO_FEATURES), 5, 9000),
        )
        .unwrap();
        assert_eq!(c.bind, Bind::ZeroCopySg);
        assert_eq!(c.max_buffers, Some(5));
        assert_eq!(
            c.reason,
            "ice takes 5 buffers per frame in zero-copy mode and MTU 9000 needs 3: zero-copy multi-buffer"
        );
        // Two buffers do not carry a 9000 MTU frame.
        let o = offer("i40e", Some(VIRTIO_FEATURES), 2, 9000);
        assert_eq!(decide(ZeroCopy::Auto, &o).unwrap().bind, Bind::Copy);
        assert_eq!(
            decide(ZeroCopy::On, &o).unwrap_err().to_string(),
            "eth1: i40e takes 2 buffers per frame in zero-copy mode, MTU 9000 needs 3 (frames of MTU + 18 bytes, 3620 per buffer): lower the MTU to 7222 or use --zero-copy auto"
        );
        // At 1500 even a multi-buffer driver gets the one-buffer bind.
        let c = decide(ZeroCopy::On, &offer("ice", Some(VIRTIO_FEATURES), 5, 1500)).unwrap();
        assert_eq!(c.bind, Bind::ZeroCopy);
    }

    #[test]
    fn no_zero_copy_offered() {
        let o = offer("veth", Some(VETH_FEATURES), 0, 1500);
        let c = decide(ZeroCopy::Auto, &o).unwrap();
        assert_eq!(c.bind, Bind::Copy);
        assert_eq!(
            c.reason,
            "veth offers no AF_XDP zero-copy (XDP features 0x23)"
        );
        assert_eq!(
            decide(ZeroCopy::On, &o).unwrap_err().to_string(),
            "eth1: --zero-copy on, but veth offers no AF_XDP zero-copy (XDP features 0x23): use --zero-copy auto or off"
        );
    }

    #[test]
    fn off_and_generic() {
        let o = offer("virtio_net", Some(VIRTIO_FEATURES), 1, 1500);
        let c = decide(ZeroCopy::Off, &o).unwrap();
        assert_eq!((c.bind, c.reason.as_str()), (Bind::Copy, "--zero-copy off"));
        let g = Offer { native: false, ..o };
        assert_eq!(decide(ZeroCopy::Auto, &g).unwrap().bind, Bind::Copy);
        assert_eq!(
            decide(ZeroCopy::On, &g).unwrap_err().to_string(),
            "eth1: --zero-copy on, but the XDP program runs in generic (skb) mode, which cannot feed a zero-copy socket: use --xdp-mode native (if virtio_net has native XDP) or --zero-copy auto"
        );
        assert_eq!(decide(ZeroCopy::Off, &g).unwrap().bind, Bind::Copy);
    }

    #[test]
    fn kernel_without_features() {
        let o = offer("virtio_net", None, 0, 1500);
        let c = decide(ZeroCopy::Auto, &o).unwrap();
        assert_eq!((c.bind, c.fallback), (Bind::ZeroCopy, true));
        let j = offer("virtio_net", None, 0, 9000);
        assert_eq!(decide(ZeroCopy::Auto, &j).unwrap().bind, Bind::Copy);
        let c = decide(ZeroCopy::On, &j).unwrap();
        assert_eq!((c.bind, c.fallback), (Bind::ZeroCopySg, false));
    }

    #[test]
    fn zero_copy_without_sg_only_where_a_frame_fits_one_chunk() {
        for mtu in (68..=16_000).step_by(7) {
            for segs in [0, 1, 2, 3, 5, 17] {
                let o = offer("x", Some(VIRTIO_FEATURES), segs, mtu);
                match decide(ZeroCopy::Auto, &o).unwrap().bind {
                    Bind::ZeroCopy => assert!(mtu as usize + 18 <= ROOM, "mtu {mtu}"),
                    Bind::ZeroCopySg => assert!(buffers_for(mtu, ROOM) <= segs.max(1)),
                    Bind::Copy => assert!(buffers_for(mtu, ROOM) > segs.max(1)),
                    Bind::CopyOne => panic!("decide never picks the pre-6.6 bind"),
                }
            }
        }
    }

    #[test]
    fn a_kernel_without_use_sg() {
        // Linux 6.1 on virtio_net: no feature report, the zero-copy bind is
        // refused (EOPNOTSUPP), then the copy bind with XDP_USE_SG (EINVAL).
        let o = offer("virtio_net", None, 0, 1500);
        let zc = decide(ZeroCopy::Auto, &o).unwrap();
        let eopnotsupp = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        let copy = next_bind(&zc, &eopnotsupp).unwrap();
        assert_eq!(copy.bind, Bind::Copy);
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        let one = next_bind(&copy, &einval).unwrap();
        assert_eq!((one.bind, one.max_buffers), (Bind::CopyOne, Some(1)));
        assert!(!one.bind.sg() && !one.bind.zero_copy());
        // Nothing after it, nor after another error.
        assert!(next_bind(&one, &einval).is_none());
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert!(next_bind(&copy, &eperm).is_none());
        // Jumbo frames cannot be carried: the error names the feature.
        let j = offer("virtio_net", None, 0, 9000);
        let e = sg_missing(&j, &einval);
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(
            e.to_string().starts_with(
                "AF_XDP multi-buffer (XDP_USE_SG, Linux 6.6), needed above MTU 3602 (3 buffers per frame at MTU 9000), refused by this kernel"
            ),
            "{e}"
        );
    }
}
