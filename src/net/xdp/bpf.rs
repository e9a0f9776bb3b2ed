//! The XDP steering program (bpf/xblade.bpf.c, built by build.rs): loading
//! one copy per interface, filling its maps, and attaching it through a
//! `bpf_link`.
//!
//! A bpf_link belongs to its file descriptor: when the process exits for any
//! reason (SIGKILL included) the kernel closes the fd and detaches the
//! program, so a crashed target never leaves an XDP program stealing AoE
//! frames from the interface. Netlink attachment (`bpf_xdp_attach`) would
//! survive the process and is deliberately not used.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, Object, ObjectBuilder};
use serde::Serialize;

use crate::wire::MacAddr;

/// The object file, aligned for libelf.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

static OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xblade.bpf.o")));

/// Entries of the XSKMAP (`max_entries` in the C source): queue ids served.
pub const MAX_QUEUES: u32 = 256;

/// How to attach the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode when the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver mode (XDP_FLAGS_DRV_MODE).
    Native,
    /// Generic mode (XDP_FLAGS_SKB_MODE): any interface, slower.
    Skb,
}

/// Mode a program was actually attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// Driver mode.
    Native,
    /// Generic mode.
    Skb,
}

impl Attached {
    /// Name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            Attached::Native => "native",
            Attached::Skb => "skb",
        }
    }
}

/// Counters of the program, per queue (summed over CPUs). Index order must
/// match the enum in bpf/xblade.bpf.c.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BpfCounters {
    /// Redirected into the queue's AF_XDP socket.
    pub redirected: u64,
    /// Not AoE: passed to the stack.
    pub passed_non_aoe: u64,
    /// AoE for a shelf.slot not served here: passed to the stack.
    pub passed_foreign: u64,
    /// Same, dropped (`drop_foreign`).
    pub dropped_foreign: u64,
    /// AoE on a queue without a socket: passed.
    pub no_socket: u64,
    /// AoE header not in the linear part: passed.
    pub short: u64,
    /// AoE behind a VLAN tag: passed.
    pub vlan: u64,
    /// AoE responses: passed.
    pub response: u64,
    /// AoE to another host's MAC (promiscuous interface): passed.
    pub other_host: u64,
}

/// Number of counters per queue in the C program.
const N_COUNTERS: u32 = 9;

impl BpfCounters {
    fn set(&mut self, i: u32, v: u64) {
        match i {
            0 => self.redirected = v,
            1 => self.passed_non_aoe = v,
            2 => self.passed_foreign = v,
            3 => self.dropped_foreign = v,
            4 => self.no_socket = v,
            5 => self.short = v,
            6 => self.vlan = v,
            7 => self.response = v,
            _ => self.other_host = v,
        }
    }
}

/// What can go wrong loading or attaching.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// libbpf refused the object (verifier, kernel too old, no BPF rights).
    #[error("loading the XDP program: {0}")]
    Load(String),
    /// A map update failed.
    #[error("XDP program map {map}")]
    Map {
        /// Which map.
        map: &'static str,
        /// Cause.
        source: libbpf_rs::Error,
    },
    /// bpf_link_create failed in every mode tried.
    #[error("attaching XDP to ifindex {ifindex}: {detail}")]
    Attach {
        /// Interface.
        ifindex: u32,
        /// What each mode said.
        detail: String,
    },
}

/// One loaded copy of the program (one per interface: the XSKMAP is keyed
/// by queue id, which is only unique within an interface).
#[derive(Debug)]
pub struct XdpProgram {
    _obj: Object,
    /// Loaded multi-buffer aware (BPF_F_XDP_HAS_FRAGS).
    frags: bool,
    prog: OwnedFd,
    xsks: MapHandle,
    counters: MapHandle,
    targets: MapHandle,
    macs: MapHandle,
}

/// Key of the `targets` map: struct target_key { u16 major; u8 minor; u8
/// pad; }, host order.
fn target_key(major: u16, minor: u8) -> [u8; 4] {
    let mut key = [0u8; 4];
    key[..2].copy_from_slice(&major.to_ne_bytes());
    key[2] = minor;
    key
}

fn map(obj: &Object, name: &'static str) -> Result<MapHandle, BpfError> {
    let m = obj
        .maps()
        .find(|m| m.name() == name)
        .ok_or_else(|| BpfError::Load(format!("object has no map {name}")))?;
    MapHandle::try_from(&m).map_err(|source| BpfError::Map { map: name, source })
}

impl XdpProgram {
    /// Load the program for the interface whose address is `mac`. `targets`
    /// are the shelf.slot pairs served on it: requests for other
    /// (non-wildcard) addresses are passed to the stack, or dropped when
    /// `drop_foreign`; requests to another host's MAC are passed.
    pub fn load(
        mac: MacAddr,
        targets: &[(u16, u8)],
        drop_foreign: bool,
    ) -> Result<XdpProgram, BpfError> {
        // Probe by trying: the program is built multi-buffer aware
        // (`xdp.frags`, BPF_F_XDP_HAS_FRAGS, Linux 5.18); a kernel that
        // refuses the flag gets the same program without it, which serves
        // single-buffer frames.
        let (obj, frags) = match load_object(true) {
            Ok(o) => (o, true),
            Err(e) => match load_object(false) {
                Ok(o) => {
                    tracing::info!(error = %e,
                        "XDP multi-buffer programs (xdp.frags, Linux 5.18) refused: loaded the program without frags (one-buffer frames only)");
                    (o, false)
                }
                Err(_) => return Err(e),
            },
        };
        let prog = obj
            .progs()
            .find(|p| p.name() == "xblade_xdp")
            .ok_or_else(|| BpfError::Load("object has no program xblade_xdp".into()))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| BpfError::Load(e.to_string()))?;
        let xsks = map(&obj, "xsks")?;
        let counters = map(&obj, "counters")?;
        let tmap = map(&obj, "targets")?;
        let config = map(&obj, "config")?;
        let macs = map(&obj, "macs")?;
        for &(major, minor) in targets {
            tmap.update(&target_key(major, minor), &[1u8], MapFlags::ANY)
                .map_err(|source| BpfError::Map {
                    map: "targets",
                    source,
                })?;
        }
        // struct cfg { u32 drop_foreign; u32 filter; u8 mac[6]; u8 pad[2]; }
        let mut cfg = [0u8; 16];
        cfg[..4].copy_from_slice(&u32::from(drop_foreign).to_ne_bytes());
        cfg[4..8].copy_from_slice(&1u32.to_ne_bytes());
        cfg[8..14].copy_from_slice(&mac.0);
        config
            .update(&0u32.to_ne_bytes(), &cfg, MapFlags::ANY)
            .map_err(|source| BpfError::Map {
                map: "config",
                source,
            })?;
        Ok(XdpProgram {
            _obj: obj,
            frags,
            prog,
            xsks,
            counters,
            targets: tmap,
            macs,
        })
    }

    /// Loaded multi-buffer aware (`xdp.frags`); false on a kernel that
    /// refused BPF_F_XDP_HAS_FRAGS.
    pub fn frags(&self) -> bool {
        self.frags
    }

    /// Treat AoE requests to `mac` (a per-queue target MAC of the
    /// interface) as ours, like those to the interface's own address.
    pub fn add_mac(&self, mac: MacAddr) -> Result<(), BpfError> {
        self.macs
            .update(&mac.0, &[1u8], MapFlags::ANY)
            .map_err(|source| BpfError::Map {
                map: "macs",
                source,
            })
    }

    /// Start (`serve`) or stop steering requests for `major.minor` to the
    /// sockets (live reconfiguration).
    pub fn set_target(&self, major: u16, minor: u8, serve: bool) -> Result<(), BpfError> {
        let key = target_key(major, minor);
        let r = if serve {
            self.targets.update(&key, &[1u8], MapFlags::ANY)
        } else {
            match self.targets.delete(&key) {
                // Absent already: nothing to stop.
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        r.map_err(|source| BpfError::Map {
            map: "targets",
            source,
        })
    }

    /// Steer AoE frames received on `queue` into the AF_XDP socket `fd`.
    pub fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), BpfError> {
        self.xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| BpfError::Map {
                map: "xsks",
                source,
            })
    }

    /// Attach to `ifindex` in `mode` (`Auto`: native, then generic).
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<XdpLink, BpfError> {
        let tries: &[Attached] = match mode {
            XdpMode::Auto => &[Attached::Native, Attached::Skb],
            XdpMode::Native => &[Attached::Native],
            XdpMode::Skb => &[Attached::Skb],
        };
        let mut detail = String::new();
        for &m in tries {
            match link_create(self.prog.as_raw_fd(), ifindex, m) {
                Ok(fd) => return Ok(XdpLink { _fd: fd, mode: m }),
                Err(e) => {
                    if !detail.is_empty() {
                        detail.push_str("; ");
                    }
                    detail.push_str(&format!("{} mode: {e}", m.name()));
                }
            }
        }
        Err(BpfError::Attach { ifindex, detail })
    }

    /// The counters of `queue`, summed over CPUs.
    pub fn counters(&self, queue: u32) -> BpfCounters {
        let mut c = BpfCounters::default();
        let q = queue.min(MAX_QUEUES - 1);
        for i in 0..N_COUNTERS {
            let key = (q * N_COUNTERS + i).to_ne_bytes();
            let sum = match self.counters.lookup_percpu(&key, MapFlags::ANY) {
                Ok(Some(per_cpu)) => per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                    .map(u64::from_ne_bytes)
                    .sum(),
                _ => 0,
            };
            c.set(i, sum);
        }
        c
    }
}

/// Open and load the embedded object, its program flagged multi-buffer
/// aware or not.
fn load_object(frags: bool) -> Result<Object, BpfError> {
    let mut open = ObjectBuilder::default()
        .open_memory(&OBJECT.0)
        .map_err(|e| BpfError::Load(e.to_string()))?;
    if !frags {
        // `xdp.frags` sets BPF_F_XDP_HAS_FRAGS and nothing else: a plain
        // `xdp` program has no flags.
        for mut p in open.progs_mut() {
            p.set_flags(0);
        }
    }
    open.load().map_err(|e| BpfError::Load(e.to_string()))
}

/// An attached program: dropping it (or the process dying) detaches it.
#[derive(Debug)]
pub struct XdpLink {
    _fd: OwnedFd,
    mode: Attached,
}

impl XdpLink {
    /// Mode it runs in.
    pub fn mode(&self) -> Attached {
        self.mode
    }
}

fn link_create(prog_fd: RawFd, ifindex: u32, mode: Attached) -> io::Result<OwnedFd> {
    let flags = match mode {
        Attached::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
        Attached::Skb => libbpf_sys::XDP_FLAGS_SKB_MODE,
    };
    // SAFETY: bpf_link_create_opts is a plain C struct for which all-zero is
    // the documented default; `sz` is set right after.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t;
    opts.flags = flags;
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `prog_fd` is a loaded program owned by the caller's
    // XdpProgram; `opts` lives on this stack frame for the whole call.
    let fd = unsafe { libbpf_sys::bpf_link_create(prog_fd, ifindex, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a fresh link fd returned to us and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_embedded_and_aligned() {
        assert!(OBJECT.0.starts_with(b"\x7fELF"));
        assert_eq!(OBJECT.0.as_ptr() as usize % 8, 0);
    }
}
