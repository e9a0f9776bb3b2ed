//! Table-style tests of the engine on byte fixtures, and property tests.

use std::sync::Arc;

use super::*;
use crate::wire::request::{self, Addr};
use crate::wire::{ata, identify, mask, qc, reserve, MacAddr, ARG_OFFSET, ATA_DATA_OFFSET};

const TARGET_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);
const HOST: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const OTHER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

/// The Linux initiator's 32-byte discovery broadcast (aoecmd_cfg_pkts).
static LINUX_QC_BCAST: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xa2, 0x10, 0x00, 0xff, 0xff,
    0xff, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A 36-byte IDENTIFY for 1.1 as Linux sends it (tag 0x00010203).
static LINUX_IDENTIFY: [u8; 36] = [
    0x02, 0, 0, 0, 0, 0x10, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xa2, 0x10, 0x00, 0x00, 0x01, 0x01, 0x00,
    0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x01, 0xec, 0, 0, 0, 0xa0, 0, 0, 0, 0,
];

fn export(shelf: u16, slot: u8, sectors: u64) -> Arc<Export> {
    Arc::new(Export::new(
        ExportInfo {
            shelf,
            slot,
            bufcnt: 16,
            serial: format!("{shelf}.{slot}:test"),
            model: "xblade".into(),
            firmware: "0.1.0".into(),
        },
        ExportState {
            sectors,
            ..Default::default()
        },
    ))
}

fn target_mtu(mtu: u32, exports: Vec<Arc<Export>>) -> Target {
    let idx = (0..exports.len()).collect();
    Target::new(vec![Port::new(TARGET_MAC, mtu, idx)], exports)
}

fn target() -> Target {
    target_mtu(1500, vec![export(1, 1, 1000)])
}

fn addr(src: MacAddr) -> Addr {
    Addr {
        dst: TARGET_MAC,
        src,
        major: 1,
        minor: 1,
    }
}

/// A frame buffer pre-filled with 0xa5 so stale bytes show.
fn buf() -> Vec<u8> {
    vec![0xa5u8; 9100]
}

fn run(t: &mut Target, frame: &mut [u8], len: usize) -> Action {
    t.handle(0, &mut frame[..], len)
}

fn reply_len(a: Action) -> usize {
    match a {
        Action::Reply { len, .. } => len,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn check_reply_header(f: &[u8], shelf: u16, slot: u8, to: MacAddr) {
    let h = aoe::Packet::new_unchecked(&f[14..]);
    assert!(h.is_response());
    assert_eq!(h.version(), 1);
    assert_eq!(h.major(), shelf);
    assert_eq!(h.minor(), slot);
    assert_eq!(ethernet::Frame::new_unchecked(f).dst(), to);
    assert_eq!(ethernet::Frame::new_unchecked(f).src(), TARGET_MAC);
}

fn aoe_error(f: &[u8]) -> Option<u8> {
    let h = aoe::Packet::new_unchecked(&f[14..]);
    h.is_error().then(|| h.error())
}

fn ata_regs(f: &[u8]) -> (u8, u8, u8) {
    let a = ata::Packet::new_unchecked(&f[ARG_OFFSET..]);
    (a.cmd_status(), a.err_feature(), a.sector_count())
}

fn ata_req(
    t: &mut Target,
    src: MacAddr,
    op: ata::Opcode,
    scnt: u8,
    lba: u64,
    data: &[u8],
) -> (Action, Vec<u8>) {
    let mut f = buf();
    let n = request::ata(&mut f, &addr(src), 7, op, scnt, lba, data);
    let a = run(t, &mut f, n);
    (a, f)
}

#[test]
fn linux_discovery_broadcast_gets_padded_reply_with_real_address() {
    for (mtu, scnt) in [(1500, 2), (9000, 17)] {
        let mut t = target_mtu(mtu, vec![export(1, 1, 1000)]);
        let mut f = buf();
        f[..32].copy_from_slice(&LINUX_QC_BCAST);
        let len = reply_len(run(&mut t, &mut f, 32));
        assert_eq!(len, 60);
        check_reply_header(&f, 1, 1, HOST);
        assert!(f[32..60].iter().all(|&b| b == 0), "zero padding");
        let q = qc::Packet::new_checked(&f[ARG_OFFSET..len]).unwrap();
        assert_eq!(q.bufcnt(), 16);
        assert_eq!(q.sector_count(), scnt);
        assert_eq!(q.aoe_version(), 1);
        assert_eq!(q.cslen(), 0);
        assert_eq!(q.fwver(), FIRMWARE_VERSION);
    }
}

#[test]
fn identify_page() {
    let mut t = target();
    let mut f = buf();
    f[..36].copy_from_slice(&LINUX_IDENTIFY);
    let len = reply_len(run(&mut t, &mut f, 36));
    assert_eq!(len, 36 + 512);
    check_reply_header(&f, 1, 1, HOST);
    assert_eq!(&f[20..24], &[0, 1, 2, 3], "tag copied");
    assert_eq!(ata_regs(&f).0, 0x40);
    let page = &f[36..548];
    assert_eq!(identify::lba48_sectors(page), 1000);
    assert_eq!(identify::word(page, 60), 1000);
    assert_eq!(identify::string(page, 27, 20), "xblade");
    assert_eq!(identify::string(page, 10, 10), "1.1:test");
}

#[test]
fn read_in_range_goes_to_disk_then_completes_without_trailing_bytes() {
    let mut t = target();
    for (op, lba) in [(ata::Opcode::ReadExt, 998), (ata::Opcode::Read, 0)] {
        let (a, mut f) = ata_req(&mut t, HOST, op, 2, lba, &[]);
        let io = match a {
            Action::Disk(io) => io,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            io,
            DiskIo {
                export: 0,
                op: DiskOp::Read,
                offset: lba * 512,
                len: 1024
            }
        );
        check_reply_header(&f, 1, 1, HOST);
        let len = t.complete(&io, Ok(()), &mut f);
        assert_eq!(len, 36 + 1024);
        assert_eq!(ata_regs(&f), (0x40, 0, 0));
    }
}

#[test]
fn read_errors_use_ata_registers() {
    let mut t = target();
    // Past the end, overflowing LBA, too many sectors for the MTU.
    for (lba, scnt, err) in [
        (999, 2, ata::ERROR_IDNF),
        (1000, 1, ata::ERROR_IDNF),
        (0xffff_ffff_ffff, 2, ata::ERROR_IDNF),
        (0, 3, ata::ERROR_ABRT),
    ] {
        let (a, f) = ata_req(&mut t, HOST, ata::Opcode::ReadExt, scnt, lba, &[]);
        assert_eq!(reply_len(a), 60, "lba {lba}");
        assert_eq!(aoe_error(&f), None, "ATA failures never use the AoE E flag");
        assert_eq!(ata_regs(&f), (0x41, err, scnt));
        assert!(f[36..60].iter().all(|&b| b == 0));
    }
    // LBA28 ignores the device register nibble.
    let (a, _) = ata_req(&mut t, HOST, ata::Opcode::Read, 1, 5, &[]);
    assert!(matches!(a, Action::Disk(DiskIo { offset: 2560, .. })));
}

#[test]
fn read_of_zero_sectors_is_an_empty_success() {
    let mut t = target();
    let (a, f) = ata_req(&mut t, HOST, ata::Opcode::ReadExt, 0, 0, &[]);
    assert_eq!(reply_len(a), 60);
    assert_eq!(ata_regs(&f).0, 0x40);
}

#[test]
fn writes() {
    let mut t = target();
    let data = vec![0x5au8; 1024];
    let (a, mut f) = ata_req(&mut t, HOST, ata::Opcode::WriteExt, 2, 10, &data);
    let io = match a {
        Action::Disk(io) => io,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        io,
        DiskIo {
            export: 0,
            op: DiskOp::Write,
            offset: 5120,
            len: 1024
        }
    );
    assert_eq!(
        &f[ATA_DATA_OFFSET..ATA_DATA_OFFSET + 1024],
        &data[..],
        "payload untouched until done"
    );
    assert_eq!(t.complete(&io, Ok(()), &mut f), 60);
    assert!(f[36..60].iter().all(|&b| b == 0), "no write data echoed");
    // A short payload is refused, disk untouched.
    let (a, f) = ata_req(&mut t, HOST, ata::Opcode::WriteExt, 2, 10, &data[..1000]);
    assert_eq!(reply_len(a), 60);
    assert_eq!(ata_regs(&f).1, ata::ERROR_ABRT);
    // Out of range.
    let (a, f) = ata_req(&mut t, HOST, ata::Opcode::WriteExt, 2, 999, &data);
    assert_eq!(reply_len(a), 60);
    assert_eq!(ata_regs(&f).1, ata::ERROR_IDNF);
    // An I/O error is UNC.
    let (a, mut f) = ata_req(&mut t, HOST, ata::Opcode::Write, 1, 1, &data[..512]);
    let Action::Disk(io) = a else { panic!() };
    assert_eq!(t.complete(&io, Err(libc::EIO), &mut f), 60);
    assert_eq!(ata_regs(&f), (0x41, ata::ERROR_UNC, 1));
}

#[test]
fn read_only_export_refuses_writes() {
    let e = export(1, 1, 1000);
    e.update(|s| {
        (
            Some(ExportState {
                read_only: true,
                ..s.clone()
            }),
            (),
        )
    });
    let mut t = target_mtu(1500, vec![e]);
    let (a, f) = ata_req(&mut t, HOST, ata::Opcode::WriteExt, 1, 0, &[0; 512]);
    assert_eq!(reply_len(a), 60);
    assert_eq!(ata_regs(&f), (0x41, ata::ERROR_ABRT, 1));
    let (a, _) = ata_req(&mut t, HOST, ata::Opcode::ReadExt, 1, 0, &[]);
    assert!(matches!(a, Action::Disk(_)));
}

#[test]
fn flush_check_power_and_unknown_opcodes() {
    let mut t = target();
    for op in [ata::Opcode::Flush, ata::Opcode::FlushExt] {
        let (a, mut f) = ata_req(&mut t, HOST, op, 0, 0, &[]);
        let Action::Disk(io) = a else { panic!("{a:?}") };
        assert_eq!(io.op, DiskOp::Flush);
        assert_eq!(t.complete(&io, Ok(()), &mut f), 60);
        assert_eq!(ata_regs(&f).0, 0x40);
    }
    for scnt in [0, 1, 200, 255] {
        let (a, f) = ata_req(&mut t, HOST, ata::Opcode::CheckPower, scnt, 0, &[]);
        assert_eq!(reply_len(a), 60);
        assert_eq!(ata_regs(&f), (0x40, 0, 0xff));
    }
    for code in [0xefu8, 0xb0, 0x00, 0xc8] {
        let (a, f) = ata_req(&mut t, HOST, ata::Opcode::Unknown(code), 1, 0, &[]);
        assert_eq!(reply_len(a), 60);
        assert_eq!(ata_regs(&f), (0x41, ata::ERROR_ABRT, 1));
    }
}

#[test]
fn header_checks() {
    let mut t = target();
    let mut f = buf();
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    // Response flag: ignored.
    f[14] = 0x18;
    assert_eq!(run(&mut t, &mut f, 32), Action::Drop(DropReason::Response));
    // Version 2: error 5.
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    f[14] = 0x20;
    assert_eq!(reply_len(run(&mut t, &mut f, 32)), 60);
    assert_eq!(aoe_error(&f), Some(5));
    check_reply_header(&f, 1, 1, HOST);
    // Unknown command: error 1.
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    f[19] = 0xf0;
    assert_eq!(reply_len(run(&mut t, &mut f, 32)), 60);
    assert_eq!(aoe_error(&f), Some(1));
    // Another shelf.slot: ignored.
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    f[16..19].copy_from_slice(&[0, 2, 1]);
    assert_eq!(
        run(&mut t, &mut f, 32),
        Action::Drop(DropReason::ForeignAddress)
    );
    // Unicast to another MAC: ignored.
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    f[..6].copy_from_slice(&OTHER.0);
    assert_eq!(run(&mut t, &mut f, 32), Action::Drop(DropReason::NotForUs));
    // Truncated below the header.
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    assert_eq!(run(&mut t, &mut f, 23), Action::Drop(DropReason::Truncated));
    // ATA argument missing: AoE error 2, padded.
    let mut f = buf();
    request::ata(&mut f, &addr(HOST), 9, ata::Opcode::ReadExt, 1, 0, &[]);
    assert_eq!(reply_len(run(&mut t, &mut f, 30)), 60);
    assert_eq!(aoe_error(&f), Some(2));
    assert!(f[30..60].iter().all(|&b| b == 0));
    assert_eq!(t.stats.drops_for(DropReason::Response), 1);
}

fn qc_req(t: &mut Target, src: MacAddr, ccmd: qc::ConfigCmd, s: &[u8]) -> (Action, Vec<u8>) {
    let mut f = buf();
    let n = request::query_config(&mut f, &addr(src), 0x8000_0001, ccmd, s);
    let a = run(t, &mut f, n);
    (a, f)
}

fn qc_string(f: &[u8]) -> Vec<u8> {
    let q = qc::Packet::new_checked(&f[ARG_OFFSET..]).unwrap();
    q.string().to_vec()
}

#[test]
fn query_config_subcommands() {
    use qc::ConfigCmd::*;
    let mut t = target();
    let (a, f) = qc_req(&mut t, HOST, SetIfEmpty, b"owner=a");
    reply_len(a);
    assert_eq!(aoe_error(&f), None);
    assert_eq!(qc_string(&f), b"owner=a");
    assert_eq!(&f[20..24], &[0x80, 0, 0, 1], "tag with bit 31 copied");
    // Same string again: accepted.
    let (_, f) = qc_req(&mut t, HOST, SetIfEmpty, b"owner=a");
    assert_eq!(aoe_error(&f), None);
    // Different string: error 4 with the current string.
    let (_, f) = qc_req(&mut t, HOST, SetIfEmpty, b"owner=b");
    assert_eq!(aoe_error(&f), Some(4));
    assert_eq!(qc_string(&f), b"owner=a");
    // Tests.
    assert!(matches!(
        qc_req(&mut t, HOST, TestExact, b"owner=a").0,
        Action::Reply { .. }
    ));
    assert_eq!(
        qc_req(&mut t, HOST, TestExact, b"owner").0,
        Action::Drop(DropReason::ConfigTestMismatch)
    );
    assert!(matches!(
        qc_req(&mut t, HOST, TestPrefix, b"owner").0,
        Action::Reply { .. }
    ));
    assert!(matches!(
        qc_req(&mut t, HOST, TestPrefix, b"").0,
        Action::Reply { .. }
    ));
    assert_eq!(
        qc_req(&mut t, HOST, TestPrefix, b"x").0,
        Action::Drop(DropReason::ConfigTestMismatch)
    );
    // Force set.
    let (_, f) = qc_req(&mut t, HOST, ForceSet, b"owner=b");
    assert_eq!(qc_string(&f), b"owner=b");
    // 1024 bytes is the maximum.
    let long = vec![b'x'; 1024];
    let (a, f) = qc_req(&mut t, HOST, ForceSet, &long);
    assert_eq!(reply_len(a), 32 + 1024);
    assert_eq!(aoe_error(&f), None);
    // Unknown subcommand: error 2.
    let (_, f) = qc_req(&mut t, HOST, Unknown(7), b"");
    assert_eq!(aoe_error(&f), Some(2));
    // cslen > 1024: error 2, string unchanged.
    let mut f = buf();
    let n = request::query_config(&mut f, &addr(HOST), 1, ForceSet, &vec![b'y'; 1025]);
    reply_len(run(&mut t, &mut f, n));
    assert_eq!(aoe_error(&f), Some(2));
    assert_eq!(t.exports()[0].state().config, long);
    // cslen beyond the frame: error 2.
    let mut f = buf();
    let n = request::query_config(&mut f, &addr(HOST), 1, ForceSet, b"abcdef");
    reply_len(run(&mut t, &mut f, n - 3));
    assert_eq!(aoe_error(&f), Some(2));
}

fn mask_req(
    t: &mut Target,
    src: MacAddr,
    mcmd: mask::MaskCmd,
    dirs: &[(mask::DirCmd, MacAddr)],
) -> (Action, Vec<u8>) {
    let mut f = buf();
    let n = request::mac_mask(&mut f, &addr(src), 3, mcmd, dirs);
    let a = run(t, &mut f, n);
    (a, f)
}

fn mask_list(f: &[u8]) -> (u8, Vec<MacAddr>) {
    let p = mask::Packet::new_checked(&f[ARG_OFFSET..]).unwrap();
    (
        p.merror(),
        (0..p.dir_count() as usize)
            .map(|i| p.directive(i).1)
            .collect(),
    )
}

#[test]
fn mac_mask_edit_read_delete_and_enforcement() {
    use mask::{DirCmd, MaskCmd};
    let mut t = target();
    let m = |i: u8| MacAddr([2, 0, 0, 0, 1, i]);
    let (a, f) = mask_req(
        &mut t,
        HOST,
        MaskCmd::Edit,
        &[
            (DirCmd::Add, HOST),
            (DirCmd::Add, m(1)),
            (DirCmd::Add, m(2)),
            (DirCmd::Add, m(1)),
        ],
    );
    assert_eq!(reply_len(a), 60);
    assert_eq!(mask_list(&f), (0, vec![HOST, m(1), m(2)]));
    // vblade 25 aborts on this delete; we must not.
    let (_, f) = mask_req(
        &mut t,
        HOST,
        MaskCmd::Edit,
        &[(DirCmd::Delete, m(1)), (DirCmd::Delete, m(9))],
    );
    assert_eq!(mask_list(&f), (0, vec![HOST, m(2)]));
    let (_, f) = mask_req(&mut t, HOST, MaskCmd::Read, &[]);
    assert_eq!(mask_list(&f), (0, vec![HOST, m(2)]));
    // A bad directive stops the edit: MError 2, Dir Count = its index.
    let (_, f) = mask_req(
        &mut t,
        HOST,
        MaskCmd::Edit,
        &[(DirCmd::Add, m(3)), (DirCmd::Unknown(9), m(4))],
    );
    let p = mask::Packet::new_unchecked(&f[ARG_OFFSET..]);
    assert_eq!((p.merror(), p.dir_count()), (2, 1));
    assert_eq!(t.exports()[0].state().mask, vec![HOST, m(2), m(3)]);
    // Enforcement: ATA and edits from an unlisted MAC are dropped; QC read is answered.
    assert_eq!(
        ata_req(&mut t, OTHER, ata::Opcode::ReadExt, 1, 0, &[]).0,
        Action::Drop(DropReason::MaskDenied)
    );
    assert_eq!(
        mask_req(&mut t, OTHER, MaskCmd::Edit, &[(DirCmd::Add, OTHER)]).0,
        Action::Drop(DropReason::MaskDenied)
    );
    assert_eq!(
        qc_req(&mut t, OTHER, qc::ConfigCmd::ForceSet, b"x").0,
        Action::Drop(DropReason::MaskDenied)
    );
    assert!(matches!(
        qc_req(&mut t, OTHER, qc::ConfigCmd::Read, b"").0,
        Action::Reply { .. }
    ));
    assert!(matches!(
        ata_req(&mut t, HOST, ata::Opcode::ReadExt, 1, 0, &[]).0,
        Action::Disk(_)
    ));
    // Unknown MCmd: AoE error 2.
    let (_, f) = mask_req(&mut t, HOST, MaskCmd::Unknown(5), &[]);
    assert_eq!(aoe_error(&f), Some(2));
}

#[test]
fn mac_mask_full() {
    use mask::{DirCmd, MaskCmd};
    let mut t = target();
    let dirs: Vec<_> = (0..200u8)
        .map(|i| (DirCmd::Add, MacAddr([2, 0, 0, 0, 2, i])))
        .collect();
    let mut f = buf();
    let mut a = addr(MacAddr([2, 0, 0, 0, 2, 0]));
    a.dst = TARGET_MAC;
    let n = request::mac_mask(&mut f, &a, 3, MaskCmd::Edit, &dirs);
    reply_len(t.handle(0, &mut f, n));
    let p = mask::Packet::new_unchecked(&f[ARG_OFFSET..]);
    assert_eq!(
        (p.merror(), p.dir_count() as usize),
        (3, export::MAX_MASK_ENTRIES)
    );
}

fn rr_req(
    t: &mut Target,
    src: MacAddr,
    rcmd: reserve::ReserveCmd,
    macs: &[MacAddr],
) -> (Action, Vec<u8>) {
    let mut f = buf();
    let n = request::reserve(&mut f, &addr(src), 4, rcmd, macs);
    let a = run(t, &mut f, n);
    (a, f)
}

#[test]
fn reserve_release() {
    use reserve::ReserveCmd::*;
    let mut t = target();
    let (a, f) = rr_req(&mut t, HOST, Set, &[HOST]);
    assert_eq!(reply_len(a), 60);
    assert_eq!(aoe_error(&f), None);
    // Non-holder: ATA refused with error 6, IDENTIFY allowed, set refused.
    let (a, f) = ata_req(&mut t, OTHER, ata::Opcode::ReadExt, 1, 0, &[]);
    reply_len(a);
    assert_eq!(aoe_error(&f), Some(6));
    check_reply_header(&f, 1, 1, OTHER);
    let (a, _) = ata_req(&mut t, OTHER, ata::Opcode::Identify, 1, 0, &[]);
    assert_eq!(reply_len(a), 548);
    let (_, f) = rr_req(&mut t, OTHER, Set, &[OTHER]);
    assert_eq!(aoe_error(&f), Some(6));
    let p = reserve::Packet::new_checked(&f[ARG_OFFSET..]).unwrap();
    assert_eq!((p.nmacs(), p.mac(0)), (1, HOST));
    // Holder reads and writes.
    assert!(matches!(
        ata_req(&mut t, HOST, ata::Opcode::ReadExt, 1, 0, &[]).0,
        Action::Disk(_)
    ));
    // Force set by anyone, then release by the new holder.
    let (_, f) = rr_req(&mut t, OTHER, ForceSet, &[OTHER]);
    assert_eq!(aoe_error(&f), None);
    let (_, f) = rr_req(&mut t, OTHER, Set, &[]);
    assert_eq!(aoe_error(&f), None);
    assert!(t.exports()[0].state().reserve.is_empty());
    let (_, f) = rr_req(&mut t, HOST, Unknown(9), &[]);
    assert_eq!(aoe_error(&f), Some(2));
}

#[test]
fn wildcards_answer_for_each_export_with_real_addresses() {
    let mut t = target_mtu(
        1500,
        vec![export(1, 1, 100), export(1, 2, 100), export(2, 1, 100)],
    );
    let mut f = buf();
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    let a = run(&mut t, &mut f, 32);
    assert_eq!(
        a,
        Action::Reply {
            len: 60,
            more: true
        }
    );
    let mut seen = vec![(aoe::Packet::new_unchecked(&f[14..]).major(), f[18])];
    loop {
        let mut o = buf();
        let Some((len, more)) = t.next_reply(&mut o) else {
            break;
        };
        assert_eq!(len, 60);
        seen.push((aoe::Packet::new_unchecked(&o[14..]).major(), o[18]));
        if !more {
            break;
        }
    }
    assert_eq!(seen, vec![(1, 1), (1, 2), (2, 1)]);
    // Shelf 1, any slot: two.
    let mut f = buf();
    let mut a = addr(HOST);
    a.minor = 0xff;
    let n = request::query_config(&mut f, &a, 1, qc::ConfigCmd::Read, b"");
    assert_eq!(
        run(&mut t, &mut f, n),
        Action::Reply {
            len: 60,
            more: true
        }
    );
    assert!(t.next_reply(&mut buf()).is_some());
    assert!(t.next_reply(&mut buf()).is_none());
    // ATA through a wildcard matching several exports: refused.
    let mut f = buf();
    let n = request::ata(&mut f, &a, 1, ata::Opcode::ReadExt, 1, 0, &[]);
    assert_eq!(
        run(&mut t, &mut f, n),
        Action::Drop(DropReason::AmbiguousWildcard)
    );
    // ...but matching exactly one, it runs, and the reply names the export.
    a.major = 2;
    let n = request::ata(&mut f, &a, 1, ata::Opcode::ReadExt, 1, 0, &[]);
    assert!(matches!(
        run(&mut t, &mut f, n),
        Action::Disk(DiskIo { export: 2, .. })
    ));
    check_reply_header(&f, 2, 1, HOST);
}

/// A second queue MAC of the same interface (as steer::queue_mac makes
/// them).
const QUEUE1_MAC: MacAddr = MacAddr([0x06, 0, 0, 0, 0, 0x10]);

/// Two workers of one interface, one per queue, each answering from its
/// own MAC, sharing the exports.
fn two_queue_targets(exports: Vec<Arc<Export>>) -> (Target, Target) {
    let idx: Vec<usize> = (0..exports.len()).collect();
    let macs = vec![TARGET_MAC, QUEUE1_MAC];
    let p0 = Port::new(TARGET_MAC, 1500, idx.clone()).with_macs(TARGET_MAC, macs.clone());
    let p1 = Port::new(TARGET_MAC, 1500, idx).with_macs(QUEUE1_MAC, macs);
    (
        Target::new(vec![p0], exports.clone()),
        Target::new(vec![p1], exports),
    )
}

fn src_of(f: &[u8]) -> MacAddr {
    ethernet::Frame::new_unchecked(f).src()
}

#[test]
fn broadcast_query_config_is_answered_from_every_queue_mac() {
    let (_, mut t1) = two_queue_targets(vec![export(1, 1, 100), export(1, 2, 100)]);
    let mut f = buf();
    f[..32].copy_from_slice(&LINUX_QC_BCAST);
    let a = run(&mut t1, &mut f, 32);
    assert_eq!(
        a,
        Action::Reply {
            len: 60,
            more: true
        }
    );
    let mut seen = vec![(f[18], src_of(&f))];
    loop {
        let mut o = buf();
        let Some((len, more)) = t1.next_reply(&mut o) else {
            break;
        };
        assert_eq!(len, 60);
        assert_eq!(ethernet::Frame::new_unchecked(&o[..]).dst(), HOST);
        seen.push((o[18], src_of(&o)));
        if !more {
            break;
        }
    }
    // For each export, once from each of the interface's MACs (in queue
    // order, whichever queue the broadcast arrived on).
    assert_eq!(
        seen,
        vec![
            (1, TARGET_MAC),
            (1, QUEUE1_MAC),
            (2, TARGET_MAC),
            (2, QUEUE1_MAC)
        ]
    );
}

#[test]
fn unicast_requests_are_answered_from_the_mac_they_were_sent_to() {
    let (mut t0, mut t1) = two_queue_targets(vec![export(1, 1, 100)]);
    for (q, to) in [(0, QUEUE1_MAC), (1, QUEUE1_MAC), (1, TARGET_MAC)] {
        let t = if q == 0 { &mut t0 } else { &mut t1 };
        let mut a = addr(HOST);
        a.dst = to;
        let mut f = buf();
        let n = request::query_config(&mut f, &a, 1, qc::ConfigCmd::Read, b"");
        assert_eq!(
            run(t, &mut f, n),
            Action::Reply {
                len: 60,
                more: false
            }
        );
        assert_eq!(src_of(&f), to);
        let mut f = buf();
        let n = request::ata(&mut f, &a, 2, ata::Opcode::Identify, 1, 0, &[]);
        assert_eq!(reply_len(run(t, &mut f, n)), 548);
        assert_eq!(src_of(&f), to);
    }
    // Another host's MAC is still not ours.
    let mut a = addr(HOST);
    a.dst = OTHER;
    let mut f = buf();
    let n = request::query_config(&mut f, &a, 1, qc::ConfigCmd::Read, b"");
    assert_eq!(run(&mut t1, &mut f, n), Action::Drop(DropReason::NotForUs));
}

#[test]
fn mask_and_reservation_hold_across_queue_macs() {
    use mask::{DirCmd, MaskCmd};
    use reserve::ReserveCmd;
    let (mut t0, mut t1) = two_queue_targets(vec![export(1, 1, 100)]);
    let to = |mac: MacAddr, src: MacAddr| Addr {
        dst: mac,
        ..addr(src)
    };
    // Mac Mask set through queue 0's MAC: OTHER is shut out on queue 1's.
    let mut f = buf();
    let n = request::mac_mask(
        &mut f,
        &to(TARGET_MAC, HOST),
        3,
        MaskCmd::Edit,
        &[(DirCmd::Add, HOST)],
    );
    reply_len(run(&mut t0, &mut f, n));
    assert_eq!(aoe_error(&f), None);
    let mut f = buf();
    let n = request::ata(
        &mut f,
        &to(QUEUE1_MAC, OTHER),
        1,
        ata::Opcode::ReadExt,
        1,
        0,
        &[],
    );
    assert_eq!(
        run(&mut t1, &mut f, n),
        Action::Drop(DropReason::MaskDenied)
    );
    let mut f = buf();
    let n = request::ata(
        &mut f,
        &to(QUEUE1_MAC, HOST),
        1,
        ata::Opcode::ReadExt,
        1,
        0,
        &[],
    );
    assert!(matches!(run(&mut t1, &mut f, n), Action::Disk(_)));
    // Cleared through queue 1's MAC: OTHER may use queue 0's again.
    let mut f = buf();
    let n = request::mac_mask(
        &mut f,
        &to(QUEUE1_MAC, HOST),
        3,
        MaskCmd::Edit,
        &[(DirCmd::Delete, HOST)],
    );
    reply_len(run(&mut t1, &mut f, n));
    let mut f = buf();
    let n = request::ata(
        &mut f,
        &to(TARGET_MAC, OTHER),
        1,
        ata::Opcode::ReadExt,
        1,
        0,
        &[],
    );
    assert!(matches!(run(&mut t0, &mut f, n), Action::Disk(_)));
    // Reservation through queue 1's MAC holds on queue 0's.
    let mut f = buf();
    let n = request::reserve(&mut f, &to(QUEUE1_MAC, HOST), 4, ReserveCmd::Set, &[HOST]);
    reply_len(run(&mut t1, &mut f, n));
    assert_eq!(aoe_error(&f), None);
    let mut f = buf();
    let n = request::ata(
        &mut f,
        &to(TARGET_MAC, OTHER),
        1,
        ata::Opcode::ReadExt,
        1,
        0,
        &[],
    );
    reply_len(run(&mut t0, &mut f, n));
    assert_eq!(aoe_error(&f), Some(6));
    assert_eq!(src_of(&f), TARGET_MAC);
}

#[test]
fn announce_is_a_padded_qc_reply() {
    let t = target();
    let mut o = buf();
    let n = control::announce(&t.ports()[0], &t.exports()[0], MacAddr::BROADCAST, &mut o).unwrap();
    assert_eq!(n, 60);
    check_reply_header(&o, 1, 1, MacAddr::BROADCAST);
    assert_eq!(&o[20..24], &[0; 4]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Run arbitrary frames (some built to look like real requests) through
    /// one engine, carrying state across frames. Every disk action must be
    /// inside the export, every reply at least 60 bytes, within the MTU, and
    /// carry our real address.
    fn check(frames: Vec<(Vec<u8>, usize)>) {
        let mut t = target_mtu(1500, vec![export(1, 1, 64), export(1, 2, 8)]);
        for (mut f, cut) in frames {
            let len = f.len();
            let rx_len = cut.min(len);
            f.resize(1514.max(len), 0xa5);
            let a = t.handle(0, &mut f, rx_len);
            let check_reply = |f: &[u8], len: usize| {
                assert!(len >= 60, "runt reply {len}");
                assert!(len <= 1514, "reply beyond MTU");
                let h = aoe::Packet::new_unchecked(&f[14..]);
                assert!(h.is_response());
                assert_ne!(h.major(), 0xffff);
                assert_ne!(h.minor(), 0xff);
            };
            match a {
                Action::Reply { len, more } => {
                    check_reply(&f, len);
                    if more {
                        let mut o = vec![0u8; 1514];
                        while let Some((len, more)) = t.next_reply(&mut o) {
                            check_reply(&o, len);
                            if !more {
                                break;
                            }
                        }
                    }
                }
                Action::Disk(io) => {
                    let sectors = t.exports()[io.export].state().sectors;
                    assert!(io.offset % 512 == 0 && io.len % 512 == 0);
                    assert!(
                        io.offset + io.len as u64 <= sectors * 512,
                        "disk action outside the export: {io:?}"
                    );
                    if io.op == DiskOp::Write {
                        assert!(rx_len >= 36 + io.len as usize, "write beyond payload");
                    }
                    let n = t.complete(&io, Ok(()), &mut f);
                    check_reply(&f, n);
                }
                Action::Drop(_) => {}
            }
        }
    }

    fn frame_strategy() -> impl Strategy<Value = (Vec<u8>, usize)> {
        let header = (
            prop_oneof![Just(TARGET_MAC.0), Just([0xff; 6]), any::<[u8; 6]>()],
            prop_oneof![Just(HOST.0), Just(OTHER.0)],
            prop_oneof![Just(0x10u8), Just(0x18), any::<u8>()],
            prop_oneof![Just(1u16), Just(0xffff), any::<u16>()],
            prop_oneof![Just(1u8), Just(2), Just(0xff), any::<u8>()],
            prop_oneof![0u8..4, any::<u8>()],
            prop::collection::vec(any::<u8>(), 0..1600),
            any::<usize>(),
        );
        header.prop_map(|(dst, src, vf, major, minor, cmd, body, cut)| {
            let mut f = Vec::with_capacity(24 + body.len());
            f.extend_from_slice(&dst);
            f.extend_from_slice(&src);
            f.extend_from_slice(&[0x88, 0xa2, vf, 0]);
            f.extend_from_slice(&major.to_be_bytes());
            f.extend_from_slice(&[minor, cmd, 1, 2, 3, 4]);
            f.extend_from_slice(&body);
            let n = f.len();
            (f, if cut % 4 == 0 { cut % (n + 1) } else { n })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn structured_frames_keep_invariants(frames in prop::collection::vec(frame_strategy(), 1..20)) {
            check(frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(frames in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..200), any::<usize>()), 1..10)) {
            check(frames);
        }
    }
}
