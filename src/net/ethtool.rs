//! The few ethtool ioctls (`SIOCETHTOOL`) that per-queue steering needs:
//! whether ntuple filters are on, and inserting, listing and deleting
//! receive classification rules that send frames for one destination MAC to
//! one queue (`ethtool -N IF flow-type ether dst MAC action Q`).
//!
//! Why the ioctl and not ethtool netlink: the rxnfc (ntuple) commands have
//! no netlink equivalent in the kernels we support; the ioctl is what the
//! `ethtool` tool itself uses for `-N`/`-n`.
//!
//! `struct ethtool_rxnfc` is handled as a byte buffer (its `rule_locs`
//! array has a length chosen at run time) at the offsets of `#[repr(C)]`
//! types declared like linux/ethtool.h's; compile-time assertions hold them
//! to the kernel's sizes and offsets (192 bytes, rule_locs at 188).

use std::ffi::CStr;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::wire::MacAddr;

const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_GRXCLSRLCNT: u32 = 0x2e;
const ETHTOOL_GRXCLSRULE: u32 = 0x2f;
const ETHTOOL_GRXCLSRLALL: u32 = 0x30;
const ETHTOOL_SRXCLSRLDEL: u32 = 0x31;
const ETHTOOL_SRXCLSRLINS: u32 = 0x32;
/// `ETH_FLAG_NTUPLE` in the legacy flags word (= NETIF_F_NTUPLE, the
/// `ntuple-filters` feature of `ethtool -k`).
const ETH_FLAG_NTUPLE: u32 = 1 << 27;
const ETHER_FLOW: u32 = 0x12;
/// Flow type bits that modify a type (FLOW_EXT, FLOW_MAC_EXT, FLOW_RSS).
const FLOW_TYPE_FLAGS: u32 = 0x8000_0000 | 0x4000_0000 | 0x2000_0000;
const RX_CLS_LOC_ANY: u32 = 0xffff_ffff;
const RX_CLS_LOC_SPECIAL: u64 = 0x8000_0000;

/// `struct ethtool_value` (ETHTOOL_GFLAGS).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ethhdr`, the `ether_spec` member of `union ethtool_flow_union`.
#[repr(C)]
struct EthHdr {
    h_dest: [u8; 6],
    h_source: [u8; 6],
    h_proto: u16,
}

/// `union ethtool_flow_union`: 52 bytes (`hdata[52]`), 4-aligned (its
/// IPv4/IPv6 members hold `__be32` fields). Only `ether_spec` is used here,
/// so the union is its first member plus the rest of its size.
#[repr(C, align(4))]
struct FlowUnion {
    ether_spec: EthHdr,
    _rest: [u8; 52 - 14],
}

/// `struct ethtool_flow_ext`.
#[repr(C)]
struct FlowExt {
    padding: [u8; 2],
    h_dest: [u8; 6],
    vlan_etype: u16,
    vlan_tci: u16,
    data: [u32; 2],
}

/// `struct ethtool_rx_flow_spec`.
#[repr(C)]
struct RxFlowSpec {
    flow_type: u32,
    h_u: FlowUnion,
    h_ext: FlowExt,
    m_u: FlowUnion,
    m_ext: FlowExt,
    ring_cookie: u64,
    location: u32,
}

/// `struct ethtool_rxnfc` (the `rule_cnt`/`rss_context` union is its
/// `rule_cnt`; `rule_locs` is the flexible array that follows).
#[repr(C)]
struct Rxnfc {
    cmd: u32,
    flow_type: u32,
    data: u64,
    fs: RxFlowSpec,
    rule_cnt: u32,
    rule_locs: [u32; 0],
}

/// Size of `struct ethtool_rxnfc` without rule_locs.
const RXNFC_LEN: usize = size_of::<Rxnfc>();
/// Offsets inside `struct ethtool_rxnfc`, taken from the `#[repr(C)]` types
/// above (the buffers stay byte arrays because `rule_locs` has a length
/// chosen at run time).
mod off {
    use super::{EthHdr, FlowUnion, RxFlowSpec, Rxnfc};
    use std::mem::offset_of;

    pub const CMD: usize = offset_of!(Rxnfc, cmd);
    /// `flow_type` in the rxnfc itself (what SRXCLSRLINS reads).
    pub const FLOW_TYPE: usize = offset_of!(Rxnfc, flow_type);
    pub const DATA: usize = offset_of!(Rxnfc, data);
    pub const FS: usize = offset_of!(Rxnfc, fs);
    /// fs.flow_type
    pub const FS_FLOW_TYPE: usize = FS + offset_of!(RxFlowSpec, flow_type);
    /// fs.h_u.ether_spec.h_dest
    pub const FS_H_DEST: usize = FS
        + offset_of!(RxFlowSpec, h_u)
        + offset_of!(FlowUnion, ether_spec)
        + offset_of!(EthHdr, h_dest);
    /// fs.m_u.ether_spec.h_dest
    pub const FS_M_DEST: usize = FS
        + offset_of!(RxFlowSpec, m_u)
        + offset_of!(FlowUnion, ether_spec)
        + offset_of!(EthHdr, h_dest);
    pub const FS_RING_COOKIE: usize = FS + offset_of!(RxFlowSpec, ring_cookie);
    pub const FS_LOCATION: usize = FS + offset_of!(RxFlowSpec, location);
    pub const RULE_CNT: usize = offset_of!(Rxnfc, rule_cnt);
    pub const RULE_LOCS: usize = offset_of!(Rxnfc, rule_locs);
}

// The kernel's layout (include/uapi/linux/ethtool.h, every 64-bit Linux
// ABI; `offsetof`/`sizeof` printed by a C program against the header):
// a field declared wrongly above stops the build here instead of sending a
// misplaced rule to the NIC.
const _: () = {
    use std::mem::align_of;
    assert!(size_of::<EthHdr>() == 14);
    assert!(size_of::<FlowUnion>() == 52 && align_of::<FlowUnion>() == 4);
    assert!(size_of::<FlowExt>() == 20 && align_of::<FlowExt>() == 4);
    assert!(offset_of!(FlowExt, h_dest) == 2 && offset_of!(FlowExt, data) == 12);
    assert!(size_of::<RxFlowSpec>() == 168 && align_of::<RxFlowSpec>() == 8);
    assert!(offset_of!(RxFlowSpec, h_u) == 4);
    assert!(offset_of!(RxFlowSpec, h_ext) == 56);
    assert!(offset_of!(RxFlowSpec, m_u) == 76);
    assert!(offset_of!(RxFlowSpec, m_ext) == 128);
    assert!(offset_of!(RxFlowSpec, ring_cookie) == 152);
    assert!(offset_of!(RxFlowSpec, location) == 160);
    assert!(size_of::<Rxnfc>() == 192);
    assert!(off::FLOW_TYPE == 4 && off::DATA == 8 && off::FS == 16);
    assert!(off::RULE_CNT == 184 && off::RULE_LOCS == 188);
    assert!(size_of::<EthtoolValue>() == 8 && offset_of!(EthtoolValue, data) == 4);
};

/// One ETHER_FLOW rule by destination MAC, as listed by the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacRule {
    /// Rule location (what `ethtool -N IF delete LOC` takes).
    pub location: u32,
    /// Destination MAC matched.
    pub dst: MacAddr,
    /// Queue (ring cookie).
    pub queue: u64,
}

/// An ethtool handle on one interface (a datagram socket for the ioctl).
#[derive(Debug)]
pub struct Ethtool {
    sock: OwnedFd,
    name: [u8; libc::IFNAMSIZ],
}

/// An 8-byte aligned buffer for an rxnfc with `extra` rule locations.
fn rxnfc(cmd: u32, extra: usize) -> Vec<u64> {
    let mut v = vec![0u64; (RXNFC_LEN + 4 * extra).div_ceil(8)];
    put32(&mut v, off::CMD, cmd);
    v
}

fn bytes(v: &[u64]) -> &[u8] {
    // SAFETY: any u64 is 8 valid bytes; the slice covers exactly `v`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 8) }
}

fn bytes_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: any byte pattern is a valid u64; the slice covers exactly `v`
    // and borrows it mutably.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len() * 8) }
}

fn put32(v: &mut [u64], at: usize, x: u32) {
    bytes_mut(v)[at..at + 4].copy_from_slice(&x.to_ne_bytes());
}

fn get32(v: &[u64], at: usize) -> u32 {
    let b = bytes(v);
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn get64(v: &[u64], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes(v)[at..at + 8]);
    u64::from_ne_bytes(b)
}

impl Ethtool {
    /// A handle on interface `name`.
    pub fn new(name: &str) -> io::Result<Ethtool> {
        if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} is not a valid interface name"),
            ));
        }
        let mut n = [0u8; libc::IFNAMSIZ];
        n[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: plain socket(2) call; the fd is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Ethtool { sock, name: n })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        CStr::from_bytes_until_nul(&self.name)
            .ok()
            .and_then(|c| c.to_str().ok())
            .unwrap_or("?")
    }

    /// SIOCETHTOOL with `buf` as the command structure (in and out).
    fn ioctl(&self, buf: &mut [u64]) -> io::Result<()> {
        #[repr(C)]
        struct Ifreq {
            name: [u8; libc::IFNAMSIZ],
            data: *mut libc::c_void,
            _pad: [u8; 16],
        }
        let mut ifr = Ifreq {
            name: self.name,
            data: buf.as_mut_ptr().cast(),
            _pad: [0; 16],
        };
        // SAFETY: `ifr` and the buffer it points to live on this frame (and
        // in `buf`) for the whole call; the buffer is at least as large as
        // the structure the command reads and writes (callers size rule
        // lists by the count they put in it).
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the `ntuple-filters` feature is on (`ethtool -k IF`).
    pub fn ntuple_enabled(&self) -> io::Result<bool> {
        let mut v = vec![0u64; size_of::<EthtoolValue>().div_ceil(8)];
        put32(&mut v, offset_of!(EthtoolValue, cmd), ETHTOOL_GFLAGS);
        self.ioctl(&mut v)?;
        Ok(get32(&v, offset_of!(EthtoolValue, data)) & ETH_FLAG_NTUPLE != 0)
    }

    /// Number of classification rules and the table size (None when the
    /// driver does not report it). Fails (EOPNOTSUPP) when the driver has
    /// no classification rules at all.
    pub fn rule_count(&self) -> io::Result<(u32, Option<u32>)> {
        let mut v = rxnfc(ETHTOOL_GRXCLSRLCNT, 0);
        self.ioctl(&mut v)?;
        let data = get64(&v, off::DATA);
        let size = u32::try_from(data & !RX_CLS_LOC_SPECIAL)
            .ok()
            .filter(|&s| s > 0);
        Ok((get32(&v, off::RULE_CNT), size))
    }

    /// Insert `flow-type ether dst MAC action QUEUE` at `location`
    /// (`None`: let the driver choose, RX_CLS_LOC_ANY); returns the
    /// location used.
    pub fn insert_mac_rule(
        &self,
        dst: MacAddr,
        queue: u32,
        location: Option<u32>,
    ) -> io::Result<u32> {
        let mut v = rxnfc(ETHTOOL_SRXCLSRLINS, 0);
        put32(&mut v, off::FLOW_TYPE, ETHER_FLOW);
        put32(&mut v, off::FS_FLOW_TYPE, ETHER_FLOW);
        {
            let b = bytes_mut(&mut v);
            b[off::FS_H_DEST..off::FS_H_DEST + 6].copy_from_slice(&dst.0);
            // Kernel masks: set bits are compared.
            b[off::FS_M_DEST..off::FS_M_DEST + 6].fill(0xff);
            b[off::FS_RING_COOKIE..off::FS_RING_COOKIE + 8]
                .copy_from_slice(&u64::from(queue).to_ne_bytes());
        }
        put32(&mut v, off::FS_LOCATION, location.unwrap_or(RX_CLS_LOC_ANY));
        self.ioctl(&mut v)?;
        Ok(get32(&v, off::FS_LOCATION))
    }

    /// Delete the rule at `location`.
    pub fn delete_rule(&self, location: u32) -> io::Result<()> {
        let mut v = rxnfc(ETHTOOL_SRXCLSRLDEL, 0);
        put32(&mut v, off::FS_LOCATION, location);
        self.ioctl(&mut v)
    }

    /// Locations of every rule.
    pub fn rule_locations(&self) -> io::Result<Vec<u32>> {
        let (n, _) = self.rule_count()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut v = rxnfc(ETHTOOL_GRXCLSRLALL, n as usize);
        put32(&mut v, off::RULE_CNT, n);
        self.ioctl(&mut v)?;
        let got = get32(&v, off::RULE_CNT).min(n) as usize;
        Ok((0..got)
            .map(|i| get32(&v, off::RULE_LOCS + 4 * i))
            .collect())
    }

    /// The rule at `location` if it is a plain ETHER_FLOW rule matching a
    /// whole destination MAC.
    pub fn mac_rule(&self, location: u32) -> io::Result<Option<MacRule>> {
        let mut v = rxnfc(ETHTOOL_GRXCLSRULE, 0);
        put32(&mut v, off::FS_LOCATION, location);
        self.ioctl(&mut v)?;
        if get32(&v, off::FS_FLOW_TYPE) & !FLOW_TYPE_FLAGS != ETHER_FLOW {
            return Ok(None);
        }
        let b = bytes(&v);
        if b[off::FS_M_DEST..off::FS_M_DEST + 6] != [0xff; 6] {
            return Ok(None);
        }
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&b[off::FS_H_DEST..off::FS_H_DEST + 6]);
        Ok(Some(MacRule {
            location,
            dst: MacAddr(dst),
            queue: get64(&v, off::FS_RING_COOKIE),
        }))
    }

    /// A free rule location for drivers that refuse RX_CLS_LOC_ANY: the
    /// highest one not in use (as the ethtool tool picks them).
    pub fn free_location(&self) -> io::Result<Option<u32>> {
        let (_, size) = self.rule_count()?;
        let Some(size) = size else { return Ok(None) };
        let used = self.rule_locations()?;
        Ok((0..size).rev().find(|l| !used.contains(l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rxnfc_buffers_hold_the_rule_locations() {
        let mut v = rxnfc(ETHTOOL_SRXCLSRLINS, 3);
        assert_eq!(v.len() * 8, RXNFC_LEN + 16); // 3 * 4 rounded up to 8
        put32(&mut v, off::FS_LOCATION, 7);
        put32(&mut v, off::RULE_LOCS + 8, 9);
        assert_eq!(get32(&v, off::FS_LOCATION), 7);
        assert_eq!(get32(&v, off::RULE_LOCS + 8), 9);
        assert_eq!(get32(&v, off::CMD), ETHTOOL_SRXCLSRLINS);
    }

    #[test]
    fn bad_names_are_refused() {
        let e = Ethtool::new("a-name-far-too-long-for-linux").unwrap_err();
        assert!(e.to_string().contains("a-name-far-too-long"), "{e}");
    }
}
