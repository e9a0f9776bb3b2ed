//! The ATA-over-Ethernet (AoE r11) protocol, sans I/O: zero-copy typed views
//! over frames, in the spirit of smoltcp's `wire`, their owned `Repr`s, and
//! request builders. No sockets, no files: the xblade target, its initiator
//! tools and its tests all build and parse frames through this crate.
//!
//! ```
//! use aoe_wire::{aoe, qc, request, MacAddr};
//!
//! // An initiator's Query Config (read) for shelf 1, slot 2 ...
//! let mut frame = [0u8; 60];
//! let addr = request::Addr {
//!     dst: MacAddr::BROADCAST,
//!     src: MacAddr([0x02, 0, 0, 0, 0, 1]),
//!     major: 1,
//!     minor: 2,
//! };
//! let len = request::query_config(&mut frame, &addr, 7, qc::ConfigCmd::Read, b"");
//! // ... and how a target reads it back.
//! let hdr = aoe::Packet::new_checked(&frame[aoe_wire::AOE_OFFSET..len]).unwrap();
//! assert_eq!((hdr.major(), hdr.minor()), (1, 2));
//! ```
//!
//! Each header has a `Packet<T: AsRef<[u8]>>` view whose getters slice one field
//! and decode it, setters in a separate `AsMut` impl, and a `check_len` after
//! which no accessor panics. Views are relative to their own header: the
//! Ethernet view covers the whole frame, the AoE view starts at frame byte 14,
//! the command argument views at frame byte 24.
//!
//! Byte order: every multi-byte field is big-endian except the six ATA LBA
//! bytes and the IDENTIFY page, which are little-endian (docs/aoe-protocol.md §1.1).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aoe;
pub mod ata;
pub mod ethernet;
pub mod identify;
pub mod mask;
pub mod qc;
pub mod request;
pub mod reserve;
pub mod target;

use core::fmt;
use core::str::FromStr;

/// Why a frame could not be parsed. Carries no payload so that it is `Copy`
/// and free to return on the per-request path; the target decides whether a
/// given error means "drop silently" or "reply with an AoE error".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header or than its own length fields say.
    #[error("frame truncated")]
    Truncated,
    /// A count or length field is out of its allowed range.
    #[error("bad argument")]
    BadArg,
}

/// Result of the wire layer.
pub type Result<T> = core::result::Result<T, WireError>;

/// AoE ethertype.
pub const ETHERTYPE_AOE: u16 = 0x88A2;
/// 802.1Q VLAN tag ethertype.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Smallest Ethernet frame without FCS; every reply is zero-padded to this.
pub const MIN_FRAME_LEN: usize = 60;
/// ATA sector size; AoE has no other.
pub const SECTOR_SIZE: usize = 512;
/// Frame offset of the AoE common header.
pub const AOE_OFFSET: usize = ethernet::HEADER_LEN;
/// Frame offset of the command argument.
pub const ARG_OFFSET: usize = AOE_OFFSET + aoe::HEADER_LEN;
/// Frame offset of ATA data (read or write sectors).
pub const ATA_DATA_OFFSET: usize = ARG_OFFSET + ata::HEADER_LEN;
/// Largest config string a target stores (AoE r11).
pub const MAX_CONFIG_STRING: usize = 1024;

/// Sectors per frame for an interface MTU, as every implementation and the
/// Linux initiator compute it: `floor((mtu - 36) / 512)`, capped at 255
/// because the Query Config field is 8 bits.
pub const fn max_sectors_for_mtu(mtu: u32) -> u8 {
    if mtu < 36 + SECTOR_SIZE as u32 {
        return 0;
    }
    let k = (mtu - 36) / SECTOR_SIZE as u32;
    if k > 255 {
        255
    } else {
        k as u8
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Build from a slice of exactly six bytes.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        MacAddr(m)
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// True for group (multicast or broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a MAC address from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad MAC address {0:?}: expected six hex bytes like 02:00:00:00:00:01")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Accepts `aa:bb:cc:dd:ee:ff`, `aa-bb-...` and the 12-digit form vblade takes.
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let t = s.trim();
        let hex: String = if t.contains(':') || t.contains('-') {
            let parts: Vec<&str> = t.split([':', '-']).collect();
            if parts.len() != 6 || parts.iter().any(|p| p.is_empty() || p.len() > 2) {
                return Err(err());
            }
            parts.iter().map(|p| format!("{p:0>2}")).collect()
        } else {
            t.to_string()
        };
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut m = [0u8; 6];
        for (i, b) in m.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(MacAddr(m))
    }
}

/// Zero the bytes from `len` up to the 60-byte Ethernet minimum and return
/// the padded length. Software links (veth, AF_PACKET, AF_XDP) do not pad,
/// and aoetools ignore anything shorter (docs/aoe-protocol.md §1.2).
#[inline]
pub fn pad_to_min(frame: &mut [u8], len: usize) -> usize {
    if len >= MIN_FRAME_LEN {
        return len;
    }
    let end = MIN_FRAME_LEN.min(frame.len());
    frame[len..end].fill(0);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_to_sectors() {
        assert_eq!(max_sectors_for_mtu(1500), 2);
        assert_eq!(max_sectors_for_mtu(4200), 8);
        assert_eq!(max_sectors_for_mtu(9000), 17);
        assert_eq!(max_sectors_for_mtu(9216), 17);
        assert_eq!(max_sectors_for_mtu(100), 0);
        assert_eq!(max_sectors_for_mtu(u32::MAX), 255);
    }

    #[test]
    fn mac_parse() {
        let m: MacAddr = "02:00:0a:0B:c:ff".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0xa, 0xb, 0xc, 0xff]);
        assert_eq!("02000a0b0cff".parse::<MacAddr>().unwrap(), m);
        assert_eq!(m.to_string(), "02:00:0a:0b:0c:ff");
        assert!("02:00:0a:0b:0c".parse::<MacAddr>().is_err());
        assert!("zz:00:0a:0b:0c:00".parse::<MacAddr>().is_err());
        assert!("".parse::<MacAddr>().is_err());
        assert!(MacAddr::BROADCAST.is_broadcast());
    }

    #[test]
    fn padding() {
        let mut f = [0xa5u8; 80];
        assert_eq!(pad_to_min(&mut f, 32), 60);
        assert!(f[32..60].iter().all(|&b| b == 0));
        assert_eq!(f[60], 0xa5);
        assert_eq!(pad_to_min(&mut f, 70), 70);
    }
}
