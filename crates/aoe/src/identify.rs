//! The 512-byte IDENTIFY DEVICE page: 256 little-endian words, ATA strings
//! stored with the first character in each word's high byte.
#![forbid(unsafe_code)]

use super::SECTOR_SIZE;

/// Length of the page.
pub const PAGE_LEN: usize = SECTOR_SIZE;

/// What the page describes.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// Exported capacity in 512-byte sectors.
    pub sectors: u64,
    /// Serial number (20 chars, space padded).
    pub serial: &'a str,
    /// Firmware revision (8 chars).
    pub firmware: &'a str,
    /// Model (40 chars).
    pub model: &'a str,
}

fn put_word(page: &mut [u8], w: usize, v: u16) {
    page[2 * w..2 * w + 2].copy_from_slice(&v.to_le_bytes());
}

/// Word `w` of a page.
pub fn word(page: &[u8], w: usize) -> u16 {
    u16::from_le_bytes([page[2 * w], page[2 * w + 1]])
}

/// Write an ATA string over `words` words starting at `w`.
fn put_string(page: &mut [u8], w: usize, words: usize, s: &str) {
    let mut bytes = [b' '; 80];
    let n = s.len().min(words * 2);
    bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
    for i in 0..words {
        // First character in the high byte of the little-endian word.
        page[2 * (w + i)] = bytes[2 * i + 1];
        page[2 * (w + i) + 1] = bytes[2 * i];
    }
}

/// Read an ATA string back (for tests and the bench initiator).
pub fn string(page: &[u8], w: usize, words: usize) -> String {
    let mut out = Vec::with_capacity(words * 2);
    for i in 0..words {
        out.push(page[2 * (w + i) + 1]);
        out.push(page[2 * (w + i)]);
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// LBA48 capacity from words 100-103.
pub fn lba48_sectors(page: &[u8]) -> u64 {
    (0..4).fold(0u64, |acc, i| {
        acc | (word(page, 100 + i) as u64) << (16 * i)
    })
}

/// Fill `page` (exactly 512 bytes) with the identity. The values follow the
/// recommendations of docs/aoe-protocol.md §4: LBA48 and both FLUSH commands
/// advertised (we implement them), no SMART, no volatile write cache claimed.
pub fn emit(id: &Identity<'_>, page: &mut [u8]) {
    let page = &mut page[..PAGE_LEN];
    page.fill(0);
    put_word(page, 0, 0x0040);
    put_string(page, 10, 10, id.serial);
    put_string(page, 23, 4, id.firmware);
    put_string(page, 27, 20, id.model);
    put_word(page, 47, 0x8000);
    put_word(page, 49, 0x0200); // LBA supported
    put_word(page, 50, 0x4000);
    let lba28 = id.sectors.min(0x0fff_ffff) as u32;
    put_word(page, 60, lba28 as u16);
    put_word(page, 61, (lba28 >> 16) as u16);
    put_word(page, 83, 0x7400); // bit 14 valid, 13 FLUSH EXT, 12 FLUSH, 10 LBA48
    put_word(page, 84, 0x4000);
    put_word(page, 86, 0x3400);
    put_word(page, 87, 0x4000);
    put_word(page, 93, 0x400b);
    let cap = id.sectors & 0xffff_ffff_ffff;
    for i in 0..4 {
        put_word(page, 100 + i, (cap >> (16 * i)) as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fields() {
        let mut p = [0xa5u8; 512];
        emit(
            &Identity {
                sectors: 0x1_2345_6789,
                serial: "1.1:host",
                firmware: "0.1.0",
                model: "xblade",
            },
            &mut p,
        );
        assert_eq!(word(&p, 49) & 0x0200, 0x0200);
        assert_eq!(word(&p, 83) & (1 << 10), 1 << 10);
        assert_eq!(word(&p, 86) & (1 << 13), 1 << 13);
        assert_eq!(word(&p, 60), 0xffff);
        assert_eq!(word(&p, 61), 0x0fff);
        assert_eq!(lba48_sectors(&p), 0x1_2345_6789);
        assert_eq!(string(&p, 10, 10), "1.1:host");
        assert_eq!(string(&p, 27, 20), "xblade");
        // "xb" is stored as 'b' then 'x' in memory: first char in the high byte.
        assert_eq!(&p[54..56], b"bx");
        assert_eq!(word(&p, 255), 0);
    }
}
