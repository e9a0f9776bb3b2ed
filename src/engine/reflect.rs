//! The no-disk ceiling: answer an ATA READ or WRITE with no engine and no
//! disk, so that a benchmark can tell how much of a datapath's cost per
//! request is the datapath itself (`xblade --xdp-reflect`, hidden; rows
//! "reflect" of `xblade bench compare`).
//!
//! A reflected READ reply carries whatever bytes the buffer already holds;
//! nothing is checked against an export (shelf.slot, bounds, Mac Mask,
//! reservations). It is a measuring instrument, never a target.

use crate::wire::{aoe, ata, ethernet, ETHERTYPE_AOE, MIN_FRAME_LEN, SECTOR_SIZE};
use crate::wire::{AOE_OFFSET, ARG_OFFSET, ATA_DATA_OFFSET};

/// Turn the ATA request in `frame[..len]` into its reply in place and
/// return the reply's length: 36 bytes of headers plus the sectors asked
/// for on a read (at most `max_sectors`), zero-padded to 60 on a write.
/// Only the first 60 bytes are written: a caller whose frame spans
/// several buffers provides the room past them. `None` when the frame is
/// anything else (a response, a non-ATA command, a broadcast, more sectors
/// than `max_sectors`, IDENTIFY and the other ATA commands): the caller
/// hands it to the engine.
pub fn reflect(frame: &mut [u8], len: usize, max_sectors: u8) -> Option<usize> {
    if len < ATA_DATA_OFFSET || frame.len() < MIN_FRAME_LEN.max(len) {
        return None;
    }
    let eth = ethernet::Frame::new_unchecked(&*frame);
    let (dst, src) = (eth.dst(), eth.src());
    if eth.ethertype() != ETHERTYPE_AOE || dst.is_multicast() {
        return None;
    }
    let hdr = aoe::Packet::new_unchecked(&frame[AOE_OFFSET..ARG_OFFSET]);
    if hdr.is_response() || hdr.command() != aoe::Command::Ata {
        return None;
    }
    let a = ata::Packet::new_unchecked(&frame[ARG_OFFSET..ATA_DATA_OFFSET]);
    let write = match ata::Opcode::from(a.cmd_status()) {
        ata::Opcode::Read | ata::Opcode::ReadExt => false,
        ata::Opcode::Write | ata::Opcode::WriteExt => true,
        _ => return None,
    };
    let sectors = a.sector_count();
    if sectors > max_sectors
        || (write && len < ATA_DATA_OFFSET + usize::from(sectors) * SECTOR_SIZE)
    {
        return None;
    }
    let reply_len = if write {
        MIN_FRAME_LEN
    } else {
        (ATA_DATA_OFFSET + usize::from(sectors) * SECTOR_SIZE).max(MIN_FRAME_LEN)
    };
    let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
    eth.set_dst(src);
    eth.set_src(dst);
    let mut hdr = aoe::Packet::new_unchecked(&mut frame[AOE_OFFSET..ARG_OFFSET]);
    hdr.set_ver_flags(aoe::VERSION, aoe::FLAG_RESPONSE);
    hdr.set_error(0);
    let mut a = ata::Packet::new_unchecked(&mut frame[ARG_OFFSET..ATA_DATA_OFFSET]);
    a.set_err_feature(0);
    a.set_cmd_status(ata::STATUS_DRDY);
    if write || sectors == 0 {
        frame[ATA_DATA_OFFSET..MIN_FRAME_LEN].fill(0);
    }
    Some(reply_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::request::{self, Addr};
    use crate::wire::MacAddr;

    const US: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);
    const HOST: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    fn addr() -> Addr {
        Addr {
            src: HOST,
            dst: US,
            major: 1,
            minor: 1,
        }
    }

    #[test]
    fn read_becomes_a_reply_of_its_sectors() {
        let mut f = vec![0u8; 2048];
        let n = request::ata(&mut f, &addr(), 7, ata::Opcode::ReadExt, 2, 8, &[]);
        let len = reflect(&mut f, n, 2).expect("reflected");
        assert_eq!(len, ATA_DATA_OFFSET + 1024);
        let e = ethernet::Frame::new_unchecked(&f[..]);
        assert_eq!((e.dst(), e.src()), (HOST, US));
        let h = aoe::Packet::new_unchecked(&f[AOE_OFFSET..ARG_OFFSET]);
        assert!(h.is_response() && !h.is_error());
        assert_eq!(h.tag(), 7u32.to_be_bytes());
        let a = ata::Packet::new_unchecked(&f[ARG_OFFSET..ATA_DATA_OFFSET]);
        assert_eq!(a.cmd_status(), ata::STATUS_DRDY);
    }

    #[test]
    fn write_reply_is_padded_headers() {
        let mut f = vec![0xaau8; 2048];
        let n = request::ata(
            &mut f,
            &addr(),
            9,
            ata::Opcode::WriteExt,
            2,
            0,
            &[0x55; 1024],
        );
        assert_eq!(reflect(&mut f, n, 2), Some(MIN_FRAME_LEN));
        assert!(f[ATA_DATA_OFFSET..MIN_FRAME_LEN].iter().all(|&b| b == 0));
    }

    #[test]
    fn anything_else_goes_to_the_engine() {
        let mut f = vec![0u8; 2048];
        let n = request::ata(&mut f, &addr(), 1, ata::Opcode::ReadExt, 3, 0, &[]);
        assert_eq!(reflect(&mut f, n, 2), None, "more sectors than allowed");
        let n = request::ata(&mut f, &addr(), 1, ata::Opcode::Identify, 1, 0, &[]);
        assert_eq!(reflect(&mut f, n, 2), None, "IDENTIFY");
        let n = request::ata(&mut f, &addr(), 1, ata::Opcode::WriteExt, 2, 0, &[0; 512]);
        assert_eq!(
            reflect(&mut f, n, 2),
            None,
            "write shorter than its sectors"
        );
        let n = request::ata(&mut f, &addr(), 1, ata::Opcode::ReadExt, 1, 0, &[]);
        assert_eq!(reflect(&mut f, 20, 2), None, "truncated");
        f[0] = 0xff;
        assert_eq!(reflect(&mut f, n, 2), None, "broadcast");
    }
}
