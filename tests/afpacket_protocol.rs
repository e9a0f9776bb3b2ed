//! Protocol rules of the real `xblade` binary on the AF_PACKET datapath:
//! Query Config strings, Mac Mask List, Reserve/Release, the common-header
//! acceptance rules and the non-data ATA commands, driven from another
//! network namespace by the library's AoE client and by hand-made frames.
//!
//! A second "host" on the link is a second client with another source MAC
//! (`Client::set_source_mac`): veth delivers the target's replies to it.
//!
//! Prefixes (unique across all integration tests): xp01..xp06.

mod aoe_support;
mod common;

use aoe_support::*;
use aoe_wire::mask::{DirCmd, MaskCmd};
use aoe_wire::qc::ConfigCmd;
use aoe_wire::reserve::ReserveCmd;
use aoe_wire::MacAddr;
use common::{sparse_file, NetPair};
use xblade_tools::initiator::client::{
    AtaCommand, AtaReply, Client, ClientError, MaskReply, QcReply, ReplyHeader, ReserveReply,
    Target,
};

const OTHER_X: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
const OTHER_Y: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x9a]);
const OTHER_Z: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x9b]);

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A Query Config argument (request side: bufcnt, fwver, scnt zero).
fn qc_arg(ver_ccmd: u8, cslen: u16, s: &[u8]) -> Vec<u8> {
    let mut a = vec![0, 0, 0, 0, 0, ver_ccmd];
    a.extend_from_slice(&cslen.to_be_bytes());
    a.extend_from_slice(s);
    a
}

/// A second host on the same link.
fn other_host(pair: &NetPair, m: MacAddr) -> Client {
    let mut c = client(pair);
    c.set_source_mac(m);
    c
}

fn assert_silent(c: &mut Client, frame: &[u8], why: &str) {
    let tag = ReplyHeader::parse(frame).expect("hand-made frame").tag();
    let got = quietly(c, |c| c.request_raw(frame, with_tag(tag))).unwrap();
    assert!(got.is_none(), "{why}: expected no reply, got {got:02x?}");
}

fn raw_reply(c: &mut Client, frame: &[u8]) -> ReplyHeader {
    let tag = ReplyHeader::parse(frame).expect("hand-made frame").tag();
    let f = c
        .request_raw(frame, with_tag(tag))
        .unwrap()
        .unwrap_or_else(|| panic!("no reply to {:02x?}", &frame[..frame.len().min(40)]));
    ReplyHeader::parse(&f).unwrap()
}

#[test]
fn query_config_strings() {
    let pair = NetPair::new("xp01", 1500);
    let file = sparse_file(1 << 20);
    let mut c = client(&pair);
    c.set_capture(true);
    let _xb = start_xblade(&pair, &["4", "1", pair.target_if(), path_str(&file)]);
    let t = c.find(4, 1).unwrap();
    let tm = t.mac;
    let qc = |c: &mut Client, ccmd: ConfigCmd, s: &[u8]| -> Option<QcReply> {
        c.query_config(tm, 4, 1, ccmd, s).unwrap()
    };

    let r = qc(&mut c, ConfigCmd::Read, b"ignored").expect("read reply");
    assert_eq!(
        (r.aoe_error, u8::from(r.arg().ccmd), r.arg().aoe_version),
        (None, 0, 1)
    );
    assert_eq!((r.header.aoe.major, r.header.aoe.minor), (4, 1));
    assert!(r.config().is_empty());
    assert!(r.len >= 60, "{}-byte QC reply", r.len);
    assert!(
        qc(&mut c, ConfigCmd::TestExact, b"").is_some(),
        "empty == empty"
    );

    let r = qc(&mut c, ConfigCmd::SetIfEmpty, b"alpha").expect("set reply");
    assert_eq!((r.aoe_error, u8::from(r.arg().ccmd)), (None, 3));
    assert_eq!(r.config(), b"alpha");
    // A different string while one is set: error 4 and the current string.
    let r = qc(&mut c, ConfigCmd::SetIfEmpty, b"beta").expect("set reply");
    assert_eq!(r.aoe_error, Some(4));
    assert!(r.header.is_error() && r.header.is_response());
    assert_eq!(r.config(), b"alpha");
    // The same string again is accepted (vblade, ggaoed, kvblade agree).
    let r = qc(&mut c, ConfigCmd::SetIfEmpty, b"alpha").expect("set reply");
    assert_eq!(r.aoe_error, None);
    assert_eq!(qc(&mut c, ConfigCmd::Read, b"").unwrap().config(), b"alpha");

    // Tests: a reply on a match, silence otherwise.
    for (ccmd, s, hit) in [
        (ConfigCmd::TestExact, &b"alpha"[..], true),
        (ConfigCmd::TestExact, b"alp", false),
        (ConfigCmd::TestExact, b"alphabet", false),
        (ConfigCmd::TestExact, b"", false),
        (ConfigCmd::TestPrefix, b"alp", true),
        (ConfigCmd::TestPrefix, b"", true),
        (ConfigCmd::TestPrefix, b"alpha", true),
        (ConfigCmd::TestPrefix, b"alz", false),
        (ConfigCmd::TestPrefix, b"alphabet", false),
    ] {
        let r = if hit {
            qc(&mut c, ccmd, s)
        } else {
            quietly(&mut c, |c| c.query_config(tm, 4, 1, ccmd, s).unwrap())
        };
        match (hit, r) {
            (true, Some(r)) => {
                assert_eq!(r.aoe_error, None);
                assert_eq!(r.config(), b"alpha");
                assert_eq!(u8::from(r.arg().ccmd), u8::from(ccmd));
            }
            (false, None) => {}
            (h, r) => panic!(
                "{ccmd:?} {:?}: expected {}, got {r:?}",
                String::from_utf8_lossy(s),
                if h { "a reply" } else { "silence" }
            ),
        }
    }
    // Broadcast tests too (how aoecfg finds a target by its string).
    let r = c
        .query_config(
            MacAddr::BROADCAST,
            0xffff,
            0xff,
            ConfigCmd::TestExact,
            b"alpha",
        )
        .unwrap()
        .expect("broadcast exact test");
    assert_eq!(
        (r.header.eth.src, r.header.aoe.major, r.header.aoe.minor),
        (tm, 4, 1)
    );

    // Force set replaces; the new string shows in discovery.
    let r = qc(&mut c, ConfigCmd::ForceSet, b"beta").expect("force reply");
    assert_eq!((r.aoe_error, u8::from(r.arg().ccmd)), (None, 4));
    assert_eq!(r.config(), b"beta");
    assert_eq!(c.find(4, 1).unwrap().config, b"beta");
    // The largest string fits a 1500-byte frame.
    let long = rand_bytes(1, 1024);
    let r = qc(&mut c, ConfigCmd::ForceSet, &long).unwrap();
    assert_eq!(
        (r.aoe_error, r.config().len(), r.len),
        (None, 1024, 14 + 10 + 8 + 1024)
    );
    let r = qc(&mut c, ConfigCmd::ForceSet, b"gamma").unwrap();
    assert_eq!(r.config(), b"gamma");

    // Unknown subcommand: error 2, string unchanged.
    let r = qc(&mut c, ConfigCmd::Unknown(7), b"x").unwrap();
    assert_eq!(r.aoe_error, Some(2));
    assert_eq!(r.config(), b"gamma");
    // cslen beyond the frame, or above 1024: error 2, string unchanged.
    let me = c.mac();
    for (cslen, body) in [(10u16, &b"abc"[..]), (1025, &[b'z'; 1025][..])] {
        let f = raw_frame(
            tm,
            me,
            0x10,
            4,
            1,
            1,
            c.next_tag(),
            &qc_arg(0x14, cslen, body),
        );
        let h = raw_reply(&mut c, &f);
        assert_eq!(h.aoe_error(), Some(2), "cslen {cslen}");
    }
    assert_eq!(qc(&mut c, ConfigCmd::Read, b"").unwrap().config(), b"gamma");
    assert_replies_padded(&c.take_captured());
}

#[test]
fn mac_mask_list() {
    let pair = NetPair::new("xp02", 1500);
    let file = sparse_file(1 << 20);
    let mut a = client(&pair);
    a.set_capture(true);
    let mut xb = start_xblade(&pair, &["4", "2", pair.target_if(), path_str(&file)]);
    let me = a.mac();
    let b_mac = MacAddr([0x02, 0, 0, 0, 0, 0xb0]);
    let mut b = other_host(&pair, b_mac);
    let t = a.find(4, 2).unwrap();
    let mask = |c: &mut Client, mcmd: MaskCmd, dirs: &[(DirCmd, MacAddr)]| -> MaskReply {
        c.mac_mask(&t, mcmd, dirs).unwrap().expect("Mac Mask reply")
    };

    let r = mask(&mut a, MaskCmd::Read, &[]);
    assert_eq!(
        (r.aoe_error, r.mcmd, r.merror, r.dir_count),
        (None, 0, 0, 0)
    );
    assert!(r.len >= 60);

    // Three entries, ourselves in the middle.
    let r = mask(
        &mut a,
        MaskCmd::Edit,
        &[
            (DirCmd::Add, OTHER_X),
            (DirCmd::Add, me),
            (DirCmd::Add, OTHER_Y),
        ],
    );
    assert_eq!((r.aoe_error, r.mcmd, r.merror), (None, 1, 0));
    assert_eq!(r.list, [OTHER_X, me, OTHER_Y]);
    assert_eq!(
        mask(&mut a, MaskCmd::Read, &[]).list,
        [OTHER_X, me, OTHER_Y]
    );
    // Adding a present MAC is a no-op.
    let r = mask(&mut a, MaskCmd::Edit, &[(DirCmd::Add, OTHER_Y)]);
    assert_eq!(r.list, [OTHER_X, me, OTHER_Y]);

    // A host not on the list: no ATA reply, no mask access.
    assert!(matches!(
        quietly(&mut b, |b| b.identify(&t)),
        Err(ClientError::Timeout { .. })
    ));
    assert!(quietly(&mut b, |b| b.read(&t, 0, 1)).is_err());
    assert_eq!(
        quietly(&mut b, |b| b.mac_mask(
            &t,
            MaskCmd::Edit,
            &[(DirCmd::Add, b_mac)]
        ))
        .unwrap(),
        None
    );
    assert_eq!(
        quietly(&mut b, |b| b.mac_mask(&t, MaskCmd::Read, &[])).unwrap(),
        None
    );
    // By design it still sees the export (QC read), as discovery must work
    // to diagnose a mask; vblade and ggaoed drop it as well.
    assert_eq!(b.find(4, 2).unwrap().mac, t.mac);
    // We are on it.
    a.identify(&t).unwrap();

    // Delete the first of three entries: vblade 25 aborts here (docs/aoe-protocol.md §6.3).
    let r = mask(&mut a, MaskCmd::Edit, &[(DirCmd::Delete, OTHER_X)]);
    assert_eq!((r.aoe_error, r.merror), (None, 0));
    assert_eq!(r.list, [me, OTHER_Y]);
    // Deleting an absent MAC is a no-op.
    let r = mask(&mut a, MaskCmd::Edit, &[(DirCmd::Delete, OTHER_X)]);
    assert_eq!(r.list, [me, OTHER_Y]);
    assert!(xb.is_running(), "xblade died on a Mac Mask delete");
    a.identify(&t).unwrap();

    // A bad directive stops the edit there; the ones before it stay.
    let r = mask(
        &mut a,
        MaskCmd::Edit,
        &[
            (DirCmd::Add, OTHER_Z),
            (DirCmd::Unknown(7), OTHER_X),
            (DirCmd::Add, OTHER_X),
        ],
    );
    assert_eq!((r.aoe_error, r.merror, r.dir_count), (None, 2, 1));
    assert_eq!(
        mask(&mut a, MaskCmd::Read, &[]).list,
        [me, OTHER_Y, OTHER_Z]
    );

    // Malformed: directive count beyond the frame, unknown MCmd.
    let mut arg = vec![0, 1, 0, 3];
    arg.extend_from_slice(&[0, 1, 2, 0, 0, 0, 0, 0x77]);
    let f = raw_frame(t.mac, me, 0x10, 4, 2, 2, a.next_tag(), &arg);
    assert_eq!(raw_reply(&mut a, &f).aoe_error(), Some(2));
    let f = raw_frame(t.mac, me, 0x10, 4, 2, 2, a.next_tag(), &[0, 5, 0, 0]);
    assert_eq!(raw_reply(&mut a, &f).aoe_error(), Some(2));
    assert_eq!(
        mask(&mut a, MaskCmd::Read, &[]).list,
        [me, OTHER_Y, OTHER_Z]
    );

    // The list holds 185 entries (what one reply at MTU 1500 carries);
    // the 186th add fails with MError 3 at that directive.
    let fill: Vec<(DirCmd, MacAddr)> = (0..100u8)
        .map(|i| (DirCmd::Add, MacAddr([0x02, 0, 0, 1, 0, i])))
        .collect();
    let r = mask(&mut a, MaskCmd::Edit, &fill);
    assert_eq!((r.merror, r.list.len()), (0, 103));
    let more: Vec<(DirCmd, MacAddr)> = (0..90u8)
        .map(|i| (DirCmd::Add, MacAddr([0x02, 0, 0, 2, 0, i])))
        .collect();
    let r = mask(&mut a, MaskCmd::Edit, &more);
    assert_eq!((r.aoe_error, r.merror, r.dir_count), (None, 3, 82));
    let r = mask(&mut a, MaskCmd::Read, &[]);
    assert_eq!((r.list.len(), r.len), (185, 14 + 10 + 4 + 185 * 8));
    let drop_all: Vec<(DirCmd, MacAddr)> = r
        .list
        .iter()
        .skip(3)
        .map(|m| (DirCmd::Delete, *m))
        .collect();
    let r = mask(&mut a, MaskCmd::Edit, &drop_all);
    assert_eq!(r.list, [me, OTHER_Y, OTHER_Z]);

    // Empty the list (ourselves last): open access again.
    let r = mask(
        &mut a,
        MaskCmd::Edit,
        &[
            (DirCmd::Delete, OTHER_Y),
            (DirCmd::Delete, OTHER_Z),
            (DirCmd::Delete, me),
        ],
    );
    assert!(r.list.is_empty() && r.merror == 0);
    assert_eq!(b.identify(&t).unwrap().sectors, 2048);
    assert!(xb.is_running());
    assert_replies_padded(&a.take_captured());
}

#[test]
fn mac_mask_seeded_from_command_line() {
    let pair = NetPair::new("xp03", 1500);
    let file = sparse_file(1 << 20);
    let mut a = client(&pair);
    let me = a.mac();
    let listed = MacAddr([0x02, 0, 0, 0, 0, 0x42]);
    let unlisted = MacAddr([0x02, 0, 0, 0, 0, 0x43]);
    let seed = format!("{me},{listed}");
    let _xb = start_xblade(
        &pair,
        &["-m", &seed, "4", "3", pair.target_if(), path_str(&file)],
    );
    // With a mask, the start-up announcement goes to each listed MAC.
    let ann = a
        .wait_frame(|f| {
            QcReply::parse(f).is_some_and(|r| r.header.tag() == 0 && r.header.eth.dst == me)
        })
        .unwrap()
        .expect("no announcement to a listed MAC");
    assert_eq!(
        (
            QcReply::parse(&ann).unwrap().header.aoe.major,
            QcReply::parse(&ann).unwrap().header.aoe.minor
        ),
        (4, 3)
    );

    let t = a.find(4, 3).unwrap();
    let r = a
        .mac_mask(&t, MaskCmd::Read, &[])
        .unwrap()
        .expect("mask read");
    assert_eq!(r.list, [me, listed]);
    a.identify(&t).unwrap();
    let mut l = other_host(&pair, listed);
    assert_eq!(l.identify(&t).unwrap().sectors, 2048);
    let mut u = other_host(&pair, unlisted);
    assert!(matches!(
        quietly(&mut u, |u| u.identify(&t)),
        Err(ClientError::Timeout { .. })
    ));
}

#[test]
fn reserve_and_release() {
    let pair = NetPair::new("xp04", 1500);
    let file = sparse_file(1 << 20);
    let mut a = client(&pair);
    a.set_capture(true);
    let _xb = start_xblade(&pair, &["4", "4", pair.target_if(), path_str(&file)]);
    let me = a.mac();
    let b_mac = MacAddr([0x02, 0, 0, 0, 0, 0xb1]);
    let mut b = other_host(&pair, b_mac);
    let t = a.find(4, 4).unwrap();
    let rr = |c: &mut Client, rcmd: ReserveCmd, macs: &[MacAddr]| -> ReserveReply {
        c.reserve(&t, rcmd, macs)
            .unwrap()
            .expect("Reserve/Release reply")
    };
    let ata_err = |r: Result<AtaReply, ClientError>| r.unwrap().aoe_error;

    let r = rr(&mut a, ReserveCmd::Read, &[]);
    assert_eq!((r.aoe_error, r.rcmd, r.nmacs), (None, 0, 0));
    assert!(r.len >= 60);

    let r = rr(&mut a, ReserveCmd::Set, &[me]);
    assert_eq!((r.aoe_error, r.rcmd), (None, 1));
    assert_eq!(r.list, [me]);
    // B may look but not touch.
    assert_eq!(rr(&mut b, ReserveCmd::Read, &[]).list, [me]);
    assert_eq!(ata_err(b.ata(&t, 0x24, 1, 0, &[])), Some(6), "READ by B");
    assert_eq!(
        ata_err(b.ata(&t, 0x34, 1, 0, &[0u8; 512])),
        Some(6),
        "WRITE by B"
    );
    assert_eq!(ata_err(b.ata(&t, 0xe7, 0, 0, &[])), Some(6), "FLUSH by B");
    assert!(matches!(
        b.read(&t, 0, 1),
        Err(ClientError::AoeError { code: 6 })
    ));
    // IDENTIFY stays open: Linux re-identifies after every discovery.
    assert_eq!(b.identify(&t).unwrap().sectors, 2048);
    assert_eq!(b.find(4, 4).unwrap().mac, t.mac, "QC stays open");
    // B cannot take it over with a plain set.
    let r = rr(&mut b, ReserveCmd::Set, &[b_mac]);
    assert_eq!(r.aoe_error, Some(6));
    assert_eq!(r.list, [me]);
    // The holder works normally.
    a.write(&t, 5, &[7u8; 1024]).unwrap();
    assert_eq!(a.read(&t, 5, 2).unwrap(), vec![7u8; 1024]);

    // Release (set with no MACs): B can read.
    let r = rr(&mut a, ReserveCmd::Set, &[]);
    assert_eq!((r.aoe_error, r.nmacs), (None, 0));
    assert_eq!(b.read(&t, 5, 2).unwrap(), vec![7u8; 1024]);

    // Force set breaks a reservation held by someone else.
    let r = rr(&mut b, ReserveCmd::ForceSet, &[b_mac, OTHER_X]);
    assert_eq!((r.aoe_error, r.rcmd), (None, 2));
    assert_eq!(r.list, [b_mac, OTHER_X]);
    assert_eq!(ata_err(a.ata(&t, 0x24, 1, 0, &[])), Some(6));
    let r = rr(&mut a, ReserveCmd::ForceSet, &[]);
    assert_eq!(r.aoe_error, None);
    a.read(&t, 0, 1).unwrap();

    // Unknown RCmd and NMacs beyond the frame: error 2, list unchanged.
    let r = rr(&mut a, ReserveCmd::Unknown(9), &[]);
    assert_eq!(r.aoe_error, Some(2));
    let f = raw_frame(
        t.mac,
        me,
        0x10,
        4,
        4,
        3,
        a.next_tag(),
        &[1, 4, 2, 0, 0, 0, 0, 1],
    );
    assert_eq!(raw_reply(&mut a, &f).aoe_error(), Some(2));
    assert!(rr(&mut a, ReserveCmd::Read, &[]).list.is_empty());
    assert_replies_padded(&a.take_captured());
}

#[test]
fn header_acceptance_rules() {
    let pair = NetPair::new("xp05", 1500);
    let file = sparse_file(1 << 20);
    let mut c = client(&pair);
    c.set_capture(true);
    let _xb = start_xblade(&pair, &["5", "5", pair.target_if(), path_str(&file)]);
    let t = c.find(5, 5).unwrap();
    let (tm, me) = (t.mac, c.mac());
    let read_qc = qc_arg(0x10, 0, b"");

    // Version 2: error 5, answered as version 1 with our real address.
    for (cmd, arg) in [(1u8, &read_qc[..]), (0, &IDENTIFY_ARG[..])] {
        let f = raw_frame(tm, me, 0x20, 5, 5, cmd, c.next_tag(), arg);
        let h = raw_reply(&mut c, &f);
        assert_eq!(
            (h.aoe.version, h.aoe.flags, h.aoe.error),
            (1, 0x0c, 5),
            "command {cmd}"
        );
        assert_eq!(
            (h.aoe.major, h.aoe.minor, u8::from(h.aoe.command)),
            (5, 5, cmd)
        );
    }
    let f = raw_frame(
        MacAddr::BROADCAST,
        me,
        0x20,
        0xffff,
        0xff,
        1,
        c.next_tag(),
        &read_qc,
    );
    assert_eq!(raw_reply(&mut c, &f).aoe_error(), Some(5));

    // Unknown commands, vendor range included: error 1.
    for cmd in [4u8, 7, 0x0f, 0xf0, 0xff] {
        let f = raw_frame(tm, me, 0x10, 5, 5, cmd, c.next_tag(), &[0; 8]);
        let h = raw_reply(&mut c, &f);
        assert_eq!(
            (h.aoe.flags, h.aoe.error, u8::from(h.aoe.command)),
            (0x0c, 1, cmd),
            "command {cmd:#x}"
        );
    }

    // Silence: response flag, another shelf.slot, another destination MAC,
    // a frame too short for the header.
    let f = raw_frame(tm, me, 0x18, 5, 5, 1, c.next_tag(), &read_qc);
    assert_silent(&mut c, &f, "QC with the response flag");
    let f = raw_frame(tm, me, 0x18, 5, 5, 0, c.next_tag(), &IDENTIFY_ARG);
    assert_silent(&mut c, &f, "IDENTIFY with the response flag");
    for (major, minor) in [(5u16, 6u8), (6, 5), (0, 0), (0xffff, 6), (6, 0xff)] {
        let f = raw_frame(
            MacAddr::BROADCAST,
            me,
            0x10,
            major,
            minor,
            1,
            c.next_tag(),
            &read_qc,
        );
        assert_silent(&mut c, &f, &format!("QC for {major}.{minor}"));
        let f = raw_frame(tm, me, 0x10, major, minor, 0, c.next_tag(), &IDENTIFY_ARG);
        assert_silent(&mut c, &f, &format!("IDENTIFY for {major}.{minor}"));
    }
    let elsewhere = MacAddr([0x02, 0, 0, 0, 0, 0x55]);
    let f = raw_frame(elsewhere, me, 0x10, 5, 5, 0, c.next_tag(), &IDENTIFY_ARG);
    assert_silent(&mut c, &f, "IDENTIFY to another MAC");
    let tag = c.next_tag();
    let f = raw_frame(tm, me, 0x10, 5, 5, 1, tag, &[]);
    let got = quietly(&mut c, |c| c.request_raw(&f[..20], with_tag(tag))).unwrap();
    assert!(got.is_none(), "20-byte frame answered: {got:02x?}");
    assert_eq!(c.identify(&t).unwrap().sectors, 2048, "still serving");

    // Unpadded requests as Linux sends them on virtual links.
    let f = raw_frame(
        MacAddr::BROADCAST,
        me,
        0x10,
        0xffff,
        0xff,
        1,
        c.next_tag(),
        &read_qc,
    );
    assert_eq!(f.len(), 32);
    let h = raw_reply(&mut c, &f);
    assert_eq!(
        (h.aoe.flags, h.aoe.major, h.aoe.minor, h.eth.src),
        (0x08, 5, 5, tm)
    );
    assert!(h.len >= 60, "{}-byte reply", h.len);
    let f = raw_frame(tm, me, 0x10, 5, 5, 0, c.next_tag(), &IDENTIFY_ARG);
    assert_eq!(f.len(), 36);
    let tag = ReplyHeader::parse(&f).unwrap().tag();
    let r = c
        .request_raw(&f, with_tag(tag))
        .unwrap()
        .expect("IDENTIFY reply");
    let r = AtaReply::parse(&r).unwrap();
    assert_eq!((r.status(), r.len, r.data.len()), (0x40, 36 + 512, 512));

    // Reserved flag bits and a stale error byte are ignored on input and
    // zero on output; the tag comes back verbatim, bit 31 included.
    let mut f = raw_frame(tm, me, 0x13, 5, 5, 1, 0xdead_beef, &read_qc);
    f[15] = 0x55;
    let h = raw_reply(&mut c, &f);
    assert_eq!(
        (h.aoe.version, h.aoe.flags, h.aoe.error, h.tag()),
        (1, 0x08, 0, 0xdead_beef)
    );

    // Arguments too short for their command: error 2.
    let f = raw_frame(tm, me, 0x10, 5, 5, 0, c.next_tag(), &IDENTIFY_ARG[..6]);
    assert_eq!(raw_reply(&mut c, &f).aoe_error(), Some(2), "30-byte ATA");
    let f = raw_frame(tm, me, 0x10, 5, 5, 1, c.next_tag(), &read_qc[..4]);
    assert_eq!(raw_reply(&mut c, &f).aoe_error(), Some(2), "28-byte QC");
    assert_replies_padded(&c.take_captured());
}

#[test]
fn ata_commands_without_data() {
    let pair = NetPair::new("xp06", 1500);
    let file = sparse_file(1 << 20);
    let model = fill_random(&file, 66);
    let mut c = client(&pair);
    c.set_capture(true);
    let _xb = start_xblade(&pair, &["5", "6", pair.target_if(), path_str(&file)]);
    let t: Target = c.find(5, 6).unwrap();

    // CHECK POWER: active/idle (0xFF) whatever count the request carried.
    assert_eq!(c.check_power(&t).unwrap(), 0xff);
    for scnt in [0u8, 1, 0x80] {
        let r = c.ata(&t, 0xe5, scnt, 0, &[]).unwrap();
        assert_eq!(
            (r.status(), r.arg.sector_count, r.aoe_error),
            (0x40, 0xff, None)
        );
    }
    // Both FLUSH commands really flush and succeed.
    for op in [0xe7u8, 0xea] {
        let r = c.ata(&t, op, 0, 0, &[]).unwrap();
        assert_eq!(
            (r.status(), r.error(), r.len),
            (0x40, 0, 60),
            "flush {op:#x}"
        );
    }
    c.flush(&t).unwrap();
    // Unsupported opcodes abort (ATA status, not an AoE error).
    for op in [0x00u8, 0xef, 0xb0, 0xc8, 0x25] {
        let r = c.ata(&t, op, 1, 0, &[]).unwrap();
        assert_eq!(
            (r.status(), r.error(), r.aoe_error, r.len),
            (0x41, 0x04, None, 60),
            "opcode {op:#x}"
        );
    }
    // A zero-sector read succeeds with no data.
    let r = c.ata(&t, 0x24, 0, 10, &[]).unwrap();
    assert_eq!((r.status(), r.len), (0x40, 60));
    // A write payload shorter than its count is refused, disk untouched.
    let r = c.ata(&t, 0x34, 2, 10, &[1u8; 512]).unwrap();
    assert_eq!((r.status(), r.error()), (0x41, 0x04));
    // A READ carrying zero padding (Linux's probe of a tainted target) gets
    // exactly its data back.
    let cmd = AtaCommand {
        aflags: 0x40,
        feature: 0,
        sector_count: 2,
        command: 0x24,
        lba: 4,
    };
    let r = c.ata_raw(&t, &cmd, &[0u8; 1024]).unwrap();
    assert_eq!((r.status(), r.len), (0x40, 36 + 1024));
    assert_eq!(r.data, file_sectors(&file, 4, 2));
    // The async-write bit is a normal, acknowledged write.
    let cmd = AtaCommand {
        aflags: 0x43,
        feature: 0,
        sector_count: 1,
        command: 0x34,
        lba: 20,
    };
    let data = rand_bytes(20, 512);
    let r = c.ata_raw(&t, &cmd, &data).unwrap();
    assert_eq!((r.status(), r.error()), (0x40, 0));
    assert_eq!(file_sectors(&file, 20, 1), data);
    let mut model = model;
    model[20 * 512..21 * 512].copy_from_slice(&data);
    assert_file_is(&file, &model);
    assert_replies_padded(&c.take_captured());
}
