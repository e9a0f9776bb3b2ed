//! The real `xblade` binary on the AF_PACKET datapath, driven by the
//! library's AoE client from another network namespace: discovery,
//! IDENTIFY, data round trips checked against the backing file on the host,
//! range checks, read-only and sub-range exports, jumbo frames, multipath
//! and shutdown.
//!
//! Prefixes (unique across all integration tests): xd01..xd12.

mod aoe_support;
mod common;

use std::time::Duration;

use aoe_support::*;
use aoe_wire::SECTOR_SIZE;
use common::{sparse_file, temp_file, NetPair};
use xblade_tools::initiator::client::{ClientError, IoRequest, QcReply, ReplyHeader};

const READ_EXT: u8 = 0x24;
const WRITE_EXT: u8 = 0x34;
const READ28: u8 = 0x20;
const WRITE28: u8 = 0x30;

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn discovery_identify_and_padding() {
    let pair = NetPair::new("xd01", 1500);
    let file = sparse_file(8 << 20); // 16384 sectors
    let mut c = client(&pair);
    c.set_capture(true);
    let mut xb = start_xblade(
        &pair,
        &["-b", "24", "7", "3", pair.target_if(), path_str(&file)],
    );
    let tmac = mac(pair.target_mac());

    // The start-up announcement: an unsolicited QC reply to broadcast, tag 0.
    let ann = c
        .wait_frame(|f| QcReply::parse(f).is_some_and(|r| r.header.tag() == 0))
        .unwrap()
        .expect("no start-up announcement");
    let ann = QcReply::parse(&ann).unwrap();
    assert!(ann.header.eth.dst.is_broadcast());
    assert_eq!((ann.header.aoe.major, ann.header.aoe.minor), (7, 3));

    for (major, minor) in [(0xffff, 0xff), (7, 0xff), (0xffff, 3), (7, 3)] {
        let found = discover(&mut c, major, minor);
        assert_eq!(found.len(), 1, "discover {major:#x}.{minor:#x}: {found:?}");
        let t = &found[0];
        assert_eq!(t.mac, tmac);
        assert_eq!(
            (t.major, t.minor),
            (7, 3),
            "reply must carry the real address"
        );
        assert_eq!(t.bufcnt, 24);
        assert_eq!(t.max_sectors, 2, "MTU 1500 carries 2 sectors");
        assert!(t.config.is_empty());
    }
    // Nobody else on the link: another address finds nothing.
    let none = quietly(&mut c, |c| c.discover(7, 4)).unwrap();
    assert!(none.is_empty(), "{none:?}");

    let t = c.find(7, 3).unwrap();
    let id = c.identify(&t).unwrap();
    assert_eq!(id.sectors, 16384);
    assert!(id.lba48);
    assert_eq!(id.lba28_sectors(), 16384);
    assert_eq!(id.lba48_sectors(), 16384);
    assert!(id.serial.starts_with("7.3"), "serial {:?}", id.serial);
    assert!(!id.model.is_empty());
    assert_eq!(id.word(49) & 0x0200, 0x0200, "LBA supported");

    // SIGHUP (to our own child, by pid) announces the export again.
    let st = std::process::Command::new("kill")
        .args(["-HUP", &xb.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    let again = c
        .wait_frame(|f| QcReply::parse(f).is_some_and(|r| r.header.tag() == 0))
        .unwrap()
        .expect("no announcement after SIGHUP");
    assert!(QcReply::parse(&again)
        .unwrap()
        .header
        .eth
        .dst
        .is_broadcast());

    let frames = c.take_captured();
    assert_replies_padded(&frames);
    assert!(xb.is_running());
}

#[test]
fn read_write_round_trips_lba28_and_lba48() {
    let pair = NetPair::new("xd03", 1500);
    let file = sparse_file(4 << 20); // 8192 sectors
    let mut model = fill_random(&file, 3);
    let mut c = client(&pair);
    let _xb = start_xblade(&pair, &["1", "2", pair.target_if(), path_str(&file)]);
    let t = c.find(1, 2).unwrap();
    let last = 8191u64;

    // Reads of what the host wrote, both opcode families.
    for lba48 in [true, false] {
        c.set_lba48(lba48);
        for (lba, n) in [(0u64, 2u64), (1, 1), (4000, 2), (last - 1, 2), (last, 1)] {
            let got = c.read(&t, lba, n).unwrap();
            assert_eq!(
                got,
                file_sectors(&file, lba, n),
                "read {n} at {lba} (lba48={lba48})"
            );
        }
    }

    // Writes, then reads back over AoE and on the host.
    let mut seed = 100;
    for (lba48, lba, n) in [
        (true, 0u64, 2u64),
        (true, 4097, 1),
        (true, last - 1, 2),
        (true, last, 1),
        (false, 1234, 2),
        (false, last, 1),
        (false, 0, 1),
    ] {
        c.set_lba48(lba48);
        seed += 1;
        let data = rand_bytes(seed, n as usize * SECTOR_SIZE);
        c.write(&t, lba, &data).unwrap();
        let off = lba as usize * SECTOR_SIZE;
        model[off..off + data.len()].copy_from_slice(&data);
        assert_eq!(c.read(&t, lba, n).unwrap(), data, "read back {n} at {lba}");
        assert_eq!(file_sectors(&file, lba, n), data, "host sees {n} at {lba}");
    }
    assert_file_is(&file, &model);

    // The raw opcodes, one of each, with the registers checked.
    let r = c.ata(&t, WRITE28, 1, 77, &rand_bytes(7, 512)).unwrap();
    assert_eq!((r.status(), r.error(), r.aoe_error), (0x40, 0, None));
    assert_eq!(r.len, 60, "write replies carry no data");
    model[77 * 512..78 * 512].copy_from_slice(&rand_bytes(7, 512));
    let r = c.ata(&t, READ28, 1, 77, &[]).unwrap();
    assert_eq!((r.status(), r.error()), (0x40, 0));
    assert_eq!(r.len, 36 + 512, "read reply is exactly 36 + data");
    assert_eq!(r.data, rand_bytes(7, 512));
    let r = c.ata(&t, WRITE_EXT, 2, 78, &rand_bytes(8, 1024)).unwrap();
    assert_eq!(r.status(), 0x40);
    model[78 * 512..80 * 512].copy_from_slice(&rand_bytes(8, 1024));
    let r = c.ata(&t, READ_EXT, 2, 78, &[]).unwrap();
    assert_eq!(r.len, 36 + 1024);
    assert_eq!(r.data, rand_bytes(8, 1024));

    // Pipelined: 1 MiB written and read back with 16 requests in flight.
    c.set_lba48(true);
    let big = rand_bytes(9, 1 << 20);
    let st = c.write_window(&t, 2048, &big, 16).unwrap();
    assert_eq!(st.completed, (1 << 20) / 1024);
    model[2048 * 512..2048 * 512 + big.len()].copy_from_slice(&big);
    assert_eq!(c.read_window(&t, 2048, 2048, 16).unwrap(), big);
    // A full advertised window of reads is absorbed without loss.
    let reqs: Vec<IoRequest<'_>> = (0..1024)
        .map(|i| IoRequest {
            lba: 2048 + 2 * i,
            sectors: 2,
            write: None,
        })
        .collect();
    let mut back = vec![0u8; big.len()];
    let st = c
        .run_window(&t, &reqs, usize::from(t.bufcnt), |i, d| {
            back[i * 1024..i * 1024 + 1024].copy_from_slice(d)
        })
        .unwrap();
    assert_eq!(t.bufcnt, 64);
    assert_eq!((st.completed, st.retransmits), (1024, 0), "{st:?}");
    assert_eq!(back, big);
    assert_file_is(&file, &model);
}

#[test]
fn lba48_beyond_128_gib() {
    // 2^28 sectors is 128 GiB: a sparse file just past it shows whether
    // 48-bit addresses survive and LBA28 capacity words are capped.
    let pair = NetPair::new("xd10", 1500);
    let sectors: u64 = (1 << 28) + 4096;
    let file = sparse_file(sectors * 512);
    let mut c = client(&pair);
    let _xb = start_xblade(&pair, &["1", "3", pair.target_if(), path_str(&file)]);
    let t = c.find(1, 3).unwrap();
    let id = c.identify(&t).unwrap();
    assert_eq!(id.sectors, sectors);
    assert_eq!(id.lba28_sectors(), 0x0fff_ffff, "words 60-61 are capped");
    for lba in [1u64 << 28, (1 << 28) + 17, sectors - 1] {
        let data = rand_bytes(lba, 512);
        c.write(&t, lba, &data).unwrap();
        assert_eq!(
            file_sectors(&file, lba, 1),
            data,
            "LBA {lba:#x} on the host"
        );
        assert_eq!(c.read(&t, lba, 1).unwrap(), data);
        // The same address with its top bits dropped must be untouched.
        assert_eq!(
            file_sectors(&file, lba & 0x0fff_ffff, 1),
            vec![0; 512],
            "LBA {lba:#x} also landed at {:#x}",
            lba & 0x0fff_ffff
        );
    }
    // Past the end by one.
    let r = c.ata(&t, READ_EXT, 1, sectors, &[]).unwrap();
    assert_eq!((r.status(), r.error()), (0x41, 0x10));
}

#[test]
fn jumbo_mtu_9000_moves_17_sectors() {
    let pair = NetPair::new("xd02", 9000);
    let file = sparse_file(4 << 20);
    let mut model = vec![0u8; 4 << 20];
    let mut c = client(&pair);
    c.set_capture(true);
    let _xb = start_xblade(&pair, &["2", "9", pair.target_if(), path_str(&file)]);
    let found = discover(&mut c, 2, 9);
    assert_eq!(found.len(), 1);
    let t = found[0].clone();
    assert_eq!(t.max_sectors, 17, "floor((9000 - 36) / 512)");

    let data = rand_bytes(17, 17 * 512);
    let r = c.ata(&t, WRITE_EXT, 17, 100, &data).unwrap();
    assert_eq!((r.status(), r.error()), (0x40, 0));
    model[100 * 512..117 * 512].copy_from_slice(&data);
    let r = c.ata(&t, READ_EXT, 17, 100, &[]).unwrap();
    assert_eq!((r.status(), r.error()), (0x40, 0));
    assert_eq!(r.len, 36 + 17 * 512, "8740-byte reply");
    assert_eq!(r.data, data);
    assert_eq!(file_sectors(&file, 100, 17), data);

    // More than advertised: refused with ABRT, disk untouched.
    let r = c.ata(&t, READ_EXT, 18, 0, &[]).unwrap();
    assert_eq!((r.status(), r.error(), r.aoe_error), (0x41, 0x04, None));

    // Pipelined jumbo I/O, split into 17-sector requests by the client.
    let big = rand_bytes(18, 17 * 512 * 40);
    let st = c.write_window(&t, 1000, &big, 16).unwrap();
    assert_eq!(st.completed, 40);
    model[1000 * 512..1000 * 512 + big.len()].copy_from_slice(&big);
    assert_eq!(c.read_window(&t, 1000, 17 * 40, 16).unwrap(), big);
    assert_file_is(&file, &model);
    assert_replies_padded(&c.take_captured());
}

#[test]
fn out_of_range_is_idnf_and_changes_nothing() {
    let pair = NetPair::new("xd04", 1500);
    let file = sparse_file(1 << 20); // 2048 sectors
    let model = fill_random(&file, 4);
    let mut c = client(&pair);
    let _xb = start_xblade(&pair, &["1", "4", pair.target_if(), path_str(&file)]);
    let t = c.find(1, 4).unwrap();

    // The last sector is readable; one further is not.
    let r = c.ata(&t, READ_EXT, 1, 2047, &[]).unwrap();
    assert_eq!((r.status(), r.error()), (0x40, 0));
    for (op, n, lba) in [
        (READ_EXT, 2u8, 2047u64),
        (READ_EXT, 1, 2048),
        (READ_EXT, 1, 1 << 40),
        (READ_EXT, 2, (1 << 48) - 1), // end wraps past 2^48
        (READ28, 2, 2047),
        (READ28, 1, 2048),
    ] {
        let r = c.ata(&t, op, n, lba, &[]).unwrap();
        assert_eq!(
            (r.status(), r.error(), r.aoe_error),
            (0x41, 0x10, None),
            "op {op:#x} {n} at {lba}"
        );
        assert_eq!(r.len, 60, "failed read carries no data");
    }
    for (op, n, lba) in [
        (WRITE_EXT, 2u8, 2047u64),
        (WRITE_EXT, 1, 2048),
        (WRITE_EXT, 1, 5000),
        (WRITE28, 2, 2047),
    ] {
        let data = rand_bytes(lba, n as usize * 512);
        let r = c.ata(&t, op, n, lba, &data).unwrap();
        assert_eq!(
            (r.status(), r.error(), r.aoe_error),
            (0x41, 0x10, None),
            "op {op:#x} {n} at {lba}"
        );
    }
    // The typed helpers turn it into an error.
    match c.read(&t, 2047, 2) {
        Err(ClientError::AtaError {
            status: 0x41,
            error: 0x10,
        }) => {}
        other => panic!("expected IDNF, got {other:?}"),
    }
    assert_file_is(&file, &model);
}

#[test]
fn read_only_export_refuses_writes() {
    let pair = NetPair::new("xd05", 1500);
    let file = sparse_file(1 << 20);
    let model = fill_random(&file, 5);
    let mut c = client(&pair);
    let _xb = start_xblade(&pair, &["-r", "1", "5", pair.target_if(), path_str(&file)]);
    let t = c.find(1, 5).unwrap();
    for op in [WRITE_EXT, WRITE28] {
        for lba in [0u64, 100, 2046] {
            let r = c.ata(&t, op, 2, lba, &rand_bytes(lba, 1024)).unwrap();
            assert_eq!(
                (r.status(), r.error(), r.aoe_error),
                (0x41, 0x04, None),
                "write {op:#x} at {lba}"
            );
        }
    }
    assert!(matches!(
        c.write(&t, 10, &[1u8; 512]),
        Err(ClientError::AtaError {
            status: 0x41,
            error: 0x04
        })
    ));
    assert_eq!(c.read(&t, 100, 2).unwrap(), file_sectors(&file, 100, 2));
    assert_eq!(c.identify(&t).unwrap().sectors, 2048);
    assert_file_is(&file, &model);
}

#[test]
fn offset_and_length_sub_exports() {
    let pair = NetPair::new("xd06", 1500);
    let file = sparse_file(1 << 20); // 2048 sectors
    let mut model = fill_random(&file, 6);
    let mut c = client(&pair);
    // Two processes on one link, two exports of one file: 6.1 is sectors
    // 100..150, 6.2 is sectors 2000..2048 (offset only).
    let _a = start_xblade(
        &pair,
        &[
            "-o",
            "100",
            "-l",
            "50",
            "6",
            "1",
            pair.target_if(),
            path_str(&file),
        ],
    );
    let _b = start_xblade(
        &pair,
        &["-o", "2000", "6", "2", pair.target_if(), path_str(&file)],
    );
    let a = c.find(6, 1).unwrap();
    let b = c.find(6, 2).unwrap();
    assert_eq!(c.identify(&a).unwrap().sectors, 50);
    assert_eq!(c.identify(&b).unwrap().sectors, 48);

    assert_eq!(c.read(&a, 0, 50).unwrap(), file_sectors(&file, 100, 50));
    assert_eq!(c.read(&b, 0, 48).unwrap(), file_sectors(&file, 2000, 48));

    for (t, base, lba, n) in [
        (&a, 100u64, 0u64, 1u64),
        (&a, 100, 48, 2),
        (&b, 2000, 47, 1),
    ] {
        let data = rand_bytes(base + lba, n as usize * 512);
        c.write(t, lba, &data).unwrap();
        let off = (base + lba) as usize * 512;
        model[off..off + data.len()].copy_from_slice(&data);
        assert_eq!(file_sectors(&file, base + lba, n), data);
    }
    for (t, lba) in [(&a, 49u64), (&a, 50), (&b, 47), (&b, 48)] {
        let r = c.ata(t, WRITE_EXT, 2, lba, &[9u8; 1024]).unwrap();
        assert_eq!(
            (r.status(), r.error()),
            (0x41, 0x10),
            "write past the export at {lba}"
        );
        let r = c.ata(t, READ_EXT, 2, lba, &[]).unwrap();
        assert_eq!(
            (r.status(), r.error()),
            (0x41, 0x10),
            "read past the export at {lba}"
        );
    }
    assert_file_is(&file, &model);
}

#[test]
fn direct_io_round_trip() {
    // -d: O_DIRECT needs 512-aligned buffers; the frame pool provides them.
    let pair = NetPair::new("xd09", 1500);
    let file = sparse_file(2 << 20);
    let mut model = fill_random(&file, 9);
    let mut c = client(&pair);
    let _xb = start_xblade(&pair, &["-d", "1", "9", pair.target_if(), path_str(&file)]);
    let t = c.find(1, 9).unwrap();
    assert_eq!(c.read_window(&t, 0, 4096, 16).unwrap(), model);
    let data = rand_bytes(99, 512 * 1000);
    c.write_window(&t, 3, &data, 16).unwrap();
    model[3 * 512..3 * 512 + data.len()].copy_from_slice(&data);
    c.flush(&t).unwrap();
    assert_eq!(c.read_window(&t, 3, 1000, 8).unwrap(), data);
    assert_file_is(&file, &model);
}

#[test]
fn multipath_one_export_on_two_links() {
    let pair = NetPair::with_links("xd07", 1500, 2);
    let file = sparse_file(1 << 20);
    let mut model = vec![0u8; 1 << 20];
    let cfg = temp_file("xblade-xd07-config");
    let (t0, t1) = (pair.link(0).0.to_string(), pair.link(1).0.to_string());
    std::fs::write(
        &cfg,
        format!(
            "datapath = \"afpacket\"\n[[export]]\nshelf = 5\nslot = 1\nfile = \"{}\"\n\
             interfaces = [\"{t0}\", \"{t1}\"]\nbufcnt = 16\n",
            path_str(&file)
        ),
    )
    .unwrap();
    let mut xb = common::Proc::spawn_in_ns(
        pair.target_ns(),
        common::xblade_bin(),
        ["serve", "--config", path_str(&cfg)],
    );
    xb.wait_for_log("xblade serving", START_TIMEOUT);

    let mut c0 = client_in(pair.initiator_ns(), pair.link(0).1);
    let mut c1 = client_in(pair.initiator_ns(), pair.link(1).1);
    let f0 = discover(&mut c0, 5, 1);
    let f1 = discover(&mut c1, 5, 1);
    assert_eq!(f0.len(), 1, "{f0:?}");
    assert_eq!(f1.len(), 1, "{f1:?}");
    let (p0, p1) = (f0[0].clone(), f1[0].clone());
    assert_eq!(p0.mac, mac(pair.mac_of(pair.target_ns(), &t0)));
    assert_eq!(p1.mac, mac(pair.mac_of(pair.target_ns(), &t1)));
    assert_ne!(p0.mac, p1.mac, "each path answers with its own MAC");
    assert_eq!((p0.major, p0.minor, p1.major, p1.minor), (5, 1, 5, 1));
    assert_eq!(c0.identify(&p0).unwrap().sectors, 2048);
    assert_eq!(c1.identify(&p1).unwrap().sectors, 2048);

    // Write on one path, read on the other, both ways.
    let a = rand_bytes(70, 64 * 512);
    c0.write_window(&p0, 10, &a, 8).unwrap();
    model[10 * 512..10 * 512 + a.len()].copy_from_slice(&a);
    assert_eq!(c1.read_window(&p1, 10, 64, 8).unwrap(), a);
    let b = rand_bytes(71, 2 * 512);
    c1.write(&p1, 11, &b).unwrap();
    model[11 * 512..13 * 512].copy_from_slice(&b);
    assert_eq!(c0.read(&p0, 11, 2).unwrap(), b);
    // State is shared too: a config string set on one path shows on the other.
    let r = c0
        .query_config(
            p0.mac,
            5,
            1,
            aoe_wire::qc::ConfigCmd::SetIfEmpty,
            b"multipath",
        )
        .unwrap()
        .expect("set reply");
    assert_eq!(r.aoe_error, None);
    assert_eq!(c1.find(5, 1).unwrap().config, b"multipath");
    assert_file_is(&file, &model);
    assert!(xb.is_running());
}

#[test]
fn two_exports_on_one_interface() {
    // One process, one link, two exports: wildcard queries get one reply
    // per export; wildcard changes and wildcard ATA are refused (ambiguous).
    let pair = NetPair::new("xd11", 1500);
    let f1 = sparse_file(1 << 20);
    let f2 = sparse_file(2 << 20);
    let cfg = temp_file("xblade-xd11-config");
    let ifname = pair.target_if();
    std::fs::write(
        &cfg,
        format!(
            "datapath = \"afpacket\"\n\
             [[export]]\nshelf = 5\nslot = 1\nfile = \"{}\"\ninterfaces = [\"{ifname}\"]\n\
             [[export]]\nshelf = 5\nslot = 2\nfile = \"{}\"\ninterfaces = [\"{ifname}\"]\n\
             config_string = \"two\"\n",
            path_str(&f1),
            path_str(&f2)
        ),
    )
    .unwrap();
    let mut xb = common::Proc::spawn_in_ns(
        pair.target_ns(),
        common::xblade_bin(),
        ["serve", "--config", path_str(&cfg)],
    );
    xb.wait_for_log("xblade serving", START_TIMEOUT);
    let mut c = client(&pair);
    c.set_capture(true);
    let tmac = mac(pair.target_mac());
    for (major, minor) in [(0xffff, 0xff), (5, 0xff)] {
        let found = discover(&mut c, major, minor);
        let addrs: Vec<_> = found.iter().map(|t| (t.mac, t.major, t.minor)).collect();
        assert_eq!(addrs, [(tmac, 5, 1), (tmac, 5, 2)], "{major:#x}.{minor:#x}");
        assert_eq!(found[1].config, b"two");
    }
    let t1 = c.find(5, 1).unwrap();
    let t2 = c.find(5, 2).unwrap();
    assert_eq!(c.identify(&t1).unwrap().sectors, 2048);
    assert_eq!(c.identify(&t2).unwrap().sectors, 4096);

    // A set addressed to both exports at once is dropped, not applied twice.
    use aoe_wire::qc::ConfigCmd;
    let r = quietly(&mut c, |c| {
        c.query_config(tmac, 0xffff, 0xff, ConfigCmd::ForceSet, b"both")
    })
    .unwrap();
    assert!(r.is_none(), "{r:?}");
    let r = c
        .query_config(tmac, 5, 2, ConfigCmd::ForceSet, b"only2")
        .unwrap()
        .unwrap();
    assert_eq!((r.header.aoe.minor, r.config()), (2, &b"only2"[..]));
    assert!(c.find(5, 1).unwrap().config.is_empty());

    // ATA to a wildcard matching two exports: no reply, nothing written.
    let wild = xblade_tools::initiator::client::Target::new(tmac, 5, 0xff);
    let r = quietly(&mut c, |c| c.ata(&wild, WRITE_EXT, 1, 0, &[0x5a; 512]));
    assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
    // Each export reaches its own file only.
    let d1 = rand_bytes(1, 512);
    let d2 = rand_bytes(2, 512);
    c.write(&t1, 0, &d1).unwrap();
    c.write(&t2, 0, &d2).unwrap();
    assert_eq!(file_sectors(&f1, 0, 1), d1);
    assert_eq!(file_sectors(&f2, 0, 1), d2);
    assert_replies_padded(&c.take_captured());
    assert!(xb.is_running());
}

fn signal(pid: u32, sig: &str) {
    // Our own child, by pid (the harness reaps it, so the pid is still ours).
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {sig} {pid}");
}

#[test]
fn retransmits_after_a_stalled_target() {
    // SIGSTOP the target: requests queue in its socket, the client times
    // out and retransmits with new tags, and after SIGCONT the target
    // answers every copy. The client completes each request once, ignores
    // the duplicates, and the data is right.
    let pair = NetPair::new("xd12", 1500);
    let file = sparse_file(1 << 20);
    let mut model = fill_random(&file, 12);
    let mut c = client(&pair);
    let xb = start_xblade(&pair, &["1", "12", pair.target_if(), path_str(&file)]);
    let pid = xb.pid();
    let t = c.find(1, 12).unwrap();
    c.set_timeout(Duration::from_millis(300));
    c.set_retries(10);
    c.set_capture(true);

    let stall = |ms: u64| {
        signal(pid, "-STOP");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            signal(pid, "-CONT");
        })
    };
    // One request at a time.
    let h = stall(800);
    assert_eq!(c.identify(&t).unwrap().sectors, 2048);
    h.join().unwrap();
    // A window of writes, then of reads.
    let data = rand_bytes(120, 64 * 1024);
    let h = stall(800);
    let st = c.write_window(&t, 100, &data, 16).unwrap();
    h.join().unwrap();
    assert_eq!(st.completed, 64);
    assert!(st.retransmits >= 16, "{st:?}");
    model[100 * 512..100 * 512 + data.len()].copy_from_slice(&data);
    let h = stall(800);
    assert_eq!(c.read_window(&t, 100, 128, 16).unwrap(), data);
    h.join().unwrap();
    assert_file_is(&file, &model);

    // Every copy was answered (late replies to old tags were ignored), each
    // with its own tag, bit 31 clear.
    std::thread::sleep(Duration::from_millis(200));
    let _ = quietly(&mut c, |c| c.wait_frame(|_| false));
    let frames = c.take_captured();
    let tags: Vec<u32> = frames
        .iter()
        .filter_map(|f| ReplyHeader::parse(f))
        .filter(|h| u8::from(h.aoe.command) == 0)
        .map(|h| h.tag())
        .collect();
    assert!(tags.len() > 1 + 64 + 64, "only {} ATA replies", tags.len());
    let mut uniq = tags.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), tags.len(), "a tag was reused");
    assert!(tags.iter().all(|t| t & 0x8000_0000 == 0));
    assert_replies_padded(&frames);
}

#[test]
fn sigterm_stops_with_status_zero() {
    let pair = NetPair::new("xd08", 1500);
    let file = sparse_file(1 << 20);
    let mut c = client(&pair);
    let mut xb = start_xblade(&pair, &["1", "8", pair.target_if(), path_str(&file)]);
    let t = c.find(1, 8).unwrap();
    // Some traffic in flight while the signal arrives.
    let data = rand_bytes(8, 256 * 512);
    c.write_window(&t, 0, &data, 16).unwrap();
    let reqs: Vec<IoRequest<'_>> = (0..64)
        .map(|i| IoRequest {
            lba: i * 2,
            sectors: 2,
            write: None,
        })
        .collect();
    c.run_window(&t, &reqs, 16, |_, _| {}).unwrap();
    xb.terminate();
    let st = xb
        .wait_timeout(Duration::from_secs(5))
        .expect("xblade did not exit within 5 s of SIGTERM");
    assert_eq!(st.code(), Some(0), "exit status {st}; log:\n{}", xb.log());
    assert!(xb.log().contains("stopped"), "log:\n{}", xb.log());
    assert_eq!(
        file_sectors(&file, 0, 256),
        data,
        "acknowledged writes are in the file"
    );
}
