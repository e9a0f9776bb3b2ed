//! Request builders: each writes a complete request frame into `buf` and
//! returns its length (unpadded, as the Linux initiator sends them).
#![forbid(unsafe_code)]

use crate::{
    aoe, ata, ethernet, mask, qc, reserve, MacAddr, ARG_OFFSET, ATA_DATA_OFFSET, ETHERTYPE_AOE,
};

/// Addressing shared by every request.
#[derive(Debug, Clone, Copy)]
pub struct Addr {
    /// Target MAC (or broadcast).
    pub dst: MacAddr,
    /// Our MAC.
    pub src: MacAddr,
    /// Shelf (0xffff for any).
    pub major: u16,
    /// Slot (0xff for any).
    pub minor: u8,
}

fn header(buf: &mut [u8], a: &Addr, command: aoe::Command, tag: u32) {
    ethernet::Repr {
        dst: a.dst,
        src: a.src,
        ethertype: ETHERTYPE_AOE,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut buf[..]));
    aoe::Repr::request(a.major, a.minor, command, tag.to_be_bytes()).emit(
        &mut aoe::Packet::new_unchecked(&mut buf[ethernet::HEADER_LEN..]),
    );
}

/// Query Config request.
pub fn query_config(buf: &mut [u8], a: &Addr, tag: u32, ccmd: qc::ConfigCmd, s: &[u8]) -> usize {
    header(buf, a, aoe::Command::QueryConfig, tag);
    let r = qc::Repr {
        bufcnt: 0,
        fwver: 0,
        sector_count: 0,
        aoe_version: aoe::VERSION,
        ccmd,
        string: s,
    };
    r.emit(&mut qc::Packet::new_unchecked(&mut buf[ARG_OFFSET..]));
    ARG_OFFSET + r.buffer_len()
}

/// ATA request. `data` is the write payload (appended after the argument).
/// The E flag is set for the EXT opcodes, W for writes.
pub fn ata(
    buf: &mut [u8],
    a: &Addr,
    tag: u32,
    opcode: ata::Opcode,
    sector_count: u8,
    lba: u64,
    data: &[u8],
) -> usize {
    header(buf, a, aoe::Command::Ata, tag);
    let mut aflags = 0;
    if opcode.is_lba48() {
        aflags |= ata::AFLAG_EXTENDED;
    }
    let is_write = matches!(opcode, ata::Opcode::Write | ata::Opcode::WriteExt);
    if is_write {
        aflags |= ata::AFLAG_WRITE;
    }
    let lba = if opcode.is_lba48() {
        lba
    } else if opcode == ata::Opcode::Identify {
        0xa000_0000
    } else {
        (lba & ata::LBA28_MASK) | 0xe000_0000
    };
    ata::Repr {
        aflags,
        err_feature: 0,
        sector_count,
        cmd_status: opcode.into(),
        lba,
    }
    .emit(&mut ata::Packet::new_unchecked(&mut buf[ARG_OFFSET..]));
    buf[ATA_DATA_OFFSET..ATA_DATA_OFFSET + data.len()].copy_from_slice(data);
    ATA_DATA_OFFSET + data.len()
}

/// Mac Mask request with `(DCmd, MAC)` directives.
pub fn mac_mask(
    buf: &mut [u8],
    a: &Addr,
    tag: u32,
    mcmd: mask::MaskCmd,
    dirs: &[(mask::DirCmd, MacAddr)],
) -> usize {
    header(buf, a, aoe::Command::MacMask, tag);
    let mut p = mask::Packet::new_unchecked(&mut buf[ARG_OFFSET..]);
    p.set_mcmd(mcmd);
    p.set_merror(0);
    p.set_dir_count(dirs.len() as u8);
    for (i, (c, m)) in dirs.iter().enumerate() {
        p.set_directive(i, *c, *m);
    }
    ARG_OFFSET + mask::buffer_len(dirs.len())
}

/// Reserve/Release request.
pub fn reserve(
    buf: &mut [u8],
    a: &Addr,
    tag: u32,
    rcmd: reserve::ReserveCmd,
    macs: &[MacAddr],
) -> usize {
    header(buf, a, aoe::Command::Reserve, tag);
    let mut p = reserve::Packet::new_unchecked(&mut buf[ARG_OFFSET..]);
    p.set_rcmd(rcmd);
    p.set_macs(macs);
    ARG_OFFSET + reserve::buffer_len(macs.len())
}

/// A hand-made AoE frame, for checks that need what the builders above never
/// produce (a bad version, the response flag, an unknown command, a short
/// argument): Ethernet header, byte 14 = `ver_flags`, error byte 0, `major`,
/// `minor`, `command`, `tag`, then `arg` (not padded).
#[allow(clippy::too_many_arguments)]
pub fn raw_frame(
    dst: MacAddr,
    src: MacAddr,
    ver_flags: u8,
    major: u16,
    minor: u8,
    command: u8,
    tag: u32,
    arg: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(24 + arg.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE_AOE.to_be_bytes());
    f.extend_from_slice(&[ver_flags, 0]);
    f.extend_from_slice(&major.to_be_bytes());
    f.extend_from_slice(&[minor, command]);
    f.extend_from_slice(&tag.to_be_bytes());
    f.extend_from_slice(arg);
    f
}
