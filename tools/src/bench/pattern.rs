//! The data `--verify` writes and expects back: every 512-byte sector is a
//! deterministic function of its LBA and a version number (how many times
//! the bench rewrote that block), so any sector read back can be checked
//! without keeping a copy of the disk.
//!
//! Sector layout (little-endian 64-bit words): word 0 is the LBA, word 1 is
//! `MAGIC << 32 | version` (readable in a hex dump), words 2..64 are an
//! xorshift64* stream seeded from both. A sector from another LBA, another
//! version, a stale buffer or a zero page never matches.
#![forbid(unsafe_code)]

use crate::wire::SECTOR_SIZE;

/// Marks bench-written sectors in a hex dump ("xbnc").
pub const MAGIC: u64 = 0x7862_6e63;

const WORDS: usize = SECTOR_SIZE / 8;

fn seed(lba: u64, version: u32) -> u64 {
    // splitmix64 of the pair: neighbouring LBAs get unrelated streams.
    let mut z = lba
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(version).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_add(0x1656_67B1_9E37_79F9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

#[inline]
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[inline]
fn word(lba: u64, version: u32, i: usize, x: &mut u64) -> u64 {
    match i {
        0 => lba,
        1 => MAGIC << 32 | u64::from(version),
        _ => next(x),
    }
}

/// Fill `buf` (a whole number of sectors) with the pattern of the sectors
/// from `lba` at `version`.
pub fn fill(buf: &mut [u8], lba: u64, version: u32) {
    debug_assert_eq!(buf.len() % SECTOR_SIZE, 0);
    for (s, sector) in buf.chunks_exact_mut(SECTOR_SIZE).enumerate() {
        let lba = lba + s as u64;
        let mut x = seed(lba, version);
        for (i, w) in sector.chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&word(lba, version, i, &mut x).to_le_bytes());
        }
    }
}

/// Where a sector differs from its expected pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difference {
    /// LBA of the first differing sector.
    pub lba: u64,
    /// Byte offset inside that sector.
    pub offset: usize,
    /// The LBA word found in that sector (which block the data came from,
    /// when it is bench data at all).
    pub found_lba: u64,
    /// The version word found (`MAGIC << 32 | version` when bench data).
    pub found_version: u64,
}

/// Check `buf` against the pattern of the sectors from `lba` at `version`;
/// the first difference, if any.
pub fn check(buf: &[u8], lba: u64, version: u32) -> Option<Difference> {
    for (s, sector) in buf.chunks_exact(SECTOR_SIZE).enumerate() {
        let lba = lba + s as u64;
        let mut x = seed(lba, version);
        for (i, w) in sector.chunks_exact(8).enumerate() {
            let want = word(lba, version, i, &mut x);
            let got = u64::from_le_bytes(w.try_into().expect("8-byte chunk"));
            if got != want {
                let at = (0..8).find(|&b| w[b] != want.to_le_bytes()[b]).unwrap_or(0);
                let word_at = |k: usize| {
                    u64::from_le_bytes(sector[k * 8..k * 8 + 8].try_into().expect("8 bytes"))
                };
                return Some(Difference {
                    lba,
                    offset: i * 8 + at,
                    found_lba: word_at(0),
                    found_version: word_at(1),
                });
            }
        }
        debug_assert_eq!(WORDS * 8, SECTOR_SIZE);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_sensitivity() {
        let mut b = vec![0u8; 4 * SECTOR_SIZE];
        fill(&mut b, 1000, 3);
        assert_eq!(check(&b, 1000, 3), None);
        assert_eq!(&b[..8], &1000u64.to_le_bytes());
        // Another version, another LBA, a shifted buffer: all differ.
        assert!(check(&b, 1000, 4).is_some());
        assert!(check(&b, 1001, 3).is_some());
        let d = check(&b[SECTOR_SIZE..], 1000, 3).unwrap();
        assert_eq!((d.lba, d.offset, d.found_lba), (1000, 0, 1001));
        // One flipped bit deep inside sector 2.
        b[2 * SECTOR_SIZE + 300] ^= 0x10;
        let d = check(&b, 1000, 3).unwrap();
        assert_eq!((d.lba, d.offset), (1002, 300));
        // Zeros are never a valid pattern.
        assert!(check(&[0u8; SECTOR_SIZE], 0, 0).is_some());
    }

    #[test]
    fn sectors_are_independent_of_request_size() {
        let mut one = vec![0u8; 2 * SECTOR_SIZE];
        fill(&mut one, 7, 1);
        let mut two = vec![0u8; SECTOR_SIZE];
        fill(&mut two, 8, 1);
        assert_eq!(&one[SECTOR_SIZE..], &two[..]);
    }
}
