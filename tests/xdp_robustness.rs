//! The AF_XDP datapath under abuse and failure: garbage, truncated and
//! oversized multi-buffer frames (the target survives and counts them),
//! the XDP program's steering of foreign, VLAN-tagged and response frames,
//! kill -9 (no program left attached, a restart serves again), and
//! `--datapath auto` falling back to AF_PACKET when XDP cannot attach, and
//! MTU changes while serving.
//!
//! Prefixes (unique across all integration tests): xx11..xx16, xx18.

mod aoe_support;
mod common;
mod xdp_support;

use std::time::Duration;

use aoe_support::*;
use aoe_wire::SECTOR_SIZE;
use common::{sparse_file, NetPair, PacketSocket, ETH_P_AOE};
use xdp_support::*;

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// xorshift bytes for garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn ata_arg(cmd: u8, scnt: u8, lba: u64) -> Vec<u8> {
    let l = lba.to_le_bytes();
    vec![0x40, 0, scnt, cmd, l[0], l[1], l[2], l[3], l[4], l[5], 0, 0]
}

#[test]
fn garbage_truncated_and_oversized_frames() {
    let pair = NetPair::new("xx11", 9000);
    let file = sparse_file(4 << 20);
    let model = fill_random(&file, 11);
    let xb = start_xdp(
        &pair,
        "native",
        &["3", "3", pair.target_if(), path_str(&file)],
    );
    let mut c = client(&pair);
    let t = c.find(3, 3).expect("discover");
    let tmac = t.mac;
    let me = c.mac();
    let raw = PacketSocket::open_in(pair.initiator_ns(), pair.initiator_if(), ETH_P_AOE)
        .expect("raw socket");
    let send = |f: &[u8]| {
        raw.send(f)
            .unwrap_or_else(|e| panic!("send {} bytes: {e}", f.len()));
    };
    let tag = std::cell::Cell::new(0x0100_0000u32);
    let hdr = |vf: u8, major: u16, minor: u8, cmd: u8, arg: &[u8]| {
        tag.set(tag.get() + 1);
        raw_frame(tmac, me, vf, major, minor, cmd, tag.get(), arg)
    };

    // AoE ethertype, header cut short: the XDP program passes it ("short").
    let mut short = hdr(0x10, 3, 3, 0, &[]);
    short.truncate(18);
    send(&short);
    // Truncated ATA argument: answered with AoE error 2 (bad argument).
    let r = c
        .request_raw(&hdr(0x10, 3, 3, 0, &[0x40, 0, 1]), with_tag(tag.get()))
        .unwrap()
        .expect("reply to a truncated ATA request");
    assert_eq!(r[14] & 0x04, 0x04, "E flag");
    assert_eq!(r[15], 2, "bad argument");
    assert!(r.len() >= 60);
    // Response flag set: passed to the stack, never answered.
    send(&hdr(0x18, 3, 3, 0, &ata_arg(0x24, 1, 0)));
    // VLAN-tagged AoE: passed to the stack.
    let mut vlan = Vec::new();
    vlan.extend_from_slice(&tmac.0);
    vlan.extend_from_slice(&me.0);
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x88, 0xa2]);
    vlan.extend_from_slice(&hdr(0x10, 3, 3, 0, &ata_arg(0x24, 1, 0))[14..]);
    send(&vlan);
    // Not AoE at all.
    let mut other = hdr(0x10, 3, 3, 0, &[0; 46]);
    other[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    send(&other);
    // Bad version and unknown command: AoE error replies.
    send(&hdr(0x20, 3, 3, 1, &[0; 8]));
    send(&hdr(0x10, 3, 3, 0x42, &[0; 8]));
    // Jumbo (3-fragment) frames the engine must refuse: a read of 200
    // sectors padded to 9014 bytes, a write of 18 sectors (over the 17 the
    // port allows), a write of 17 sectors whose data is cut short.
    let mut big = hdr(0x10, 3, 3, 0, &ata_arg(0x24, 200, 0));
    big.resize(9014, 0xee);
    send(&big);
    let mut w18 = hdr(0x11, 3, 3, 0, &ata_arg(0x34, 18, 0));
    w18.resize(9014, 0xee);
    let r = c
        .request_raw(&w18, with_tag(tag.get()))
        .unwrap()
        .expect("reply to 18-sector write");
    assert_eq!((r[27], r[25]), (0x41, 0x04), "ABRT for 18 sectors");
    let mut cut = hdr(0x11, 3, 3, 0, &ata_arg(0x34, 17, 0));
    cut.resize(36 + 16 * 512, 0xee);
    let r = c
        .request_raw(&cut, with_tag(tag.get()))
        .unwrap()
        .expect("reply to a cut write");
    assert_eq!((r[27], r[25]), (0x41, 0x04), "ABRT for a short payload");
    // Random garbage of every size, AoE ethertype, to us: some parse as
    // requests, most are dropped; none may hurt the target.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..600 {
        let len = 15 + (rng.next() % 9000) as usize;
        let mut f = hdr(0x10, 3, 3, (rng.next() % 4) as u8, &[]);
        while f.len() < len {
            f.extend_from_slice(&rng.next().to_le_bytes());
        }
        f.truncate(len);
        if i % 3 == 0 {
            // Keep it a request for us so the engine sees it.
            f[14] = 0x10;
            f[19] = 0;
            f[16..19].copy_from_slice(&[0, 3, 3]);
            // ...but never a write that would change the file.
            if f.len() > 27 && f[27] & 0xf0 == 0x30 {
                f[27] = 0x24;
            }
        }
        send(&f);
    }
    // Still serving, data intact (nothing above wrote to it).
    std::thread::sleep(Duration::from_millis(200));
    assert!(xb_running(&xb), "{}", xb.proc.log());
    let id = c.identify(&t).expect("identify after garbage");
    assert_eq!(id.sectors, 8192);
    let back = c
        .read_window(&t, 0, 8192, 16)
        .expect("read all after garbage");
    assert!(
        back == model,
        "file content changed or read wrong after garbage"
    );
    let d = rand_bytes(5, 17 * SECTOR_SIZE);
    c.write(&t, 100, &d).unwrap();
    assert_eq!(file_sectors(&file, 100, 17), d);

    let w = xb.worker0();
    assert!(engine_drops(&w) > 0, "engine drops: {w}");
    assert!(xdp_counter(&w, "bpf_short") >= 1, "{w}");
    assert!(xdp_counter(&w, "bpf_response") >= 1, "{w}");
    assert!(xdp_counter(&w, "bpf_vlan") >= 1, "{w}");
    assert!(xdp_counter(&w, "bpf_passed_non_aoe") >= 1, "{w}");
    assert!(xdp_counter(&w, "rx_multi_buffer") >= 3, "{w}");
    assert!(w["engine"]["aoe_errors"].as_u64().unwrap() >= 3, "{w}");
    assert_eq!(w["disk_errors"], 0, "{w}");
}

fn xb_running(xb: &Xblade) -> bool {
    // Proc::is_running needs &mut; the status socket answering is enough.
    xblade::control::query(&xb.socket).is_ok()
}

/// Requests for a shelf.slot served elsewhere reach the kernel stack (or
/// are dropped with --xdp-drop-foreign), and so do requests to another
/// host's MAC; wildcards still reach us.
#[test]
fn foreign_addresses_pass_or_drop() {
    let pair = NetPair::new("xx12", 1500);
    let file = sparse_file(1 << 20);
    for (drop_foreign, counter) in [(false, "bpf_passed_foreign"), (true, "bpf_dropped_foreign")] {
        let mut args = vec![];
        if drop_foreign {
            args.push("--xdp-drop-foreign");
        }
        args.extend(["5", "5", pair.target_if(), path_str(&file)]);
        let xb = start_xdp(&pair, "skb", &args);
        let mut c = client(&pair);
        let tmac = mac(pair.target_mac());
        let none = quietly(&mut c, |c| {
            c.query_config(tmac, 9, 9, aoe_wire::qc::ConfigCmd::Read, &[])
        })
        .unwrap();
        assert!(none.is_none());
        let found = discover(&mut c, 0xffff, 0xff);
        assert_eq!(found.len(), 1);
        let found = discover(&mut c, 5, 0xff);
        assert_eq!(found.len(), 1);
        // To another host's MAC (a promiscuous interface would see it):
        // passed to the stack by the program, never reaching the worker.
        let other = aoe_wire::MacAddr([0x02, 0, 0, 0, 0x12, 0x99]);
        let none = quietly(&mut c, |c| {
            c.query_config(other, 5, 5, aoe_wire::qc::ConfigCmd::Read, &[])
        })
        .unwrap();
        assert!(none.is_none());
        let w = xb.worker0();
        assert!(xdp_counter(&w, counter) >= 1, "{counter}: {w}");
        assert!(xdp_counter(&w, "bpf_other_host") >= 1, "{w}");
        assert_eq!(
            engine_drops(&w),
            0,
            "nothing foreign reached the engine: {w}"
        );
        drop(xb);
    }
}

/// kill -9 leaves no XDP program attached (the bpf_link dies with the
/// process) and a restart on the same queue serves again.
#[test]
fn kill9_leaves_nothing_attached_and_restart_serves() {
    let pair = NetPair::new("xx13", 9000);
    let file = sparse_file(4 << 20);
    fill_random(&file, 13);
    for mode in ["native", "skb"] {
        let mut xb = start_xdp(
            &pair,
            mode,
            &["-d", "2", "7", pair.target_if(), path_str(&file)],
        );
        assert!(xdp_attached(pair.target_ns(), pair.target_if()), "{mode}");
        let mut c = client(&pair);
        let t = c.find(2, 7).unwrap();
        let d = rand_bytes(1, 17 * SECTOR_SIZE);
        c.write(&t, 50, &d).unwrap();
        let pid = libc::pid_t::try_from(xb.proc.pid()).unwrap();
        // SAFETY: kill(2) on our own child (spawned by Proc and not yet
        // reaped, so the pid cannot have been reused).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let st = xb
            .proc
            .wait_timeout(Duration::from_secs(5))
            .expect("killed");
        assert!(!st.success());
        assert!(
            wait_detached(pair.target_ns(), pair.target_if()),
            "XDP program still attached after kill -9 ({mode}):\n{}",
            link_details(pair.target_ns(), pair.target_if())
        );
        // The write was acknowledged, so it is on the file.
        assert_eq!(file_sectors(&file, 50, 17), d);
        drop(xb);
        // Restart right away: the socket bind retries while the kernel
        // frees the old one.
        let xb = start_xdp(
            &pair,
            mode,
            &["-d", "2", "7", pair.target_if(), path_str(&file)],
        );
        let mut c = client(&pair);
        let t = c.find(2, 7).unwrap();
        assert_eq!(c.read(&t, 50, 17).unwrap(), d);
        drop(xb);
        assert!(wait_detached(pair.target_ns(), pair.target_if()));
    }
}

/// `--datapath auto` uses XDP where the program attaches and AF_PACKET
/// where it does not (here: native mode demanded on a veth... and on lo,
/// which has no native XDP), saying why; `--datapath xdp` refuses to start
/// instead.
#[test]
fn auto_falls_back_to_afpacket() {
    let pair = NetPair::new("xx14", 1500);
    let file = sparse_file(1 << 20);
    // Native XDP is impossible on lo.
    let xb = start_with(
        &pair,
        "auto",
        &["--xdp-mode", "native", "1", "9", "lo", path_str(&file)],
    );
    let log = xb.proc.log();
    assert!(log.contains("XDP unavailable, using AF_PACKET"), "{log}");
    assert_eq!(xb.status().datapath, "afpacket");
    drop(xb);
    // The same with --datapath xdp fails, naming the interface.
    let out = common::run_in_ns(
        pair.target_ns(),
        common::xblade_bin(),
        [
            "--datapath",
            "xdp",
            "--xdp-mode",
            "native",
            "--control-socket",
            "none",
            "1",
            "9",
            "lo",
            path_str(&file),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lo") && err.contains("XDP"), "{err}");
    // And auto on the veth picks XDP.
    let xb = start_with(
        &pair,
        "auto",
        &["1", "9", pair.target_if(), path_str(&file)],
    );
    assert_eq!(xb.status().datapath, "xdp");
    let mut c = client(&pair);
    let t = c.find(1, 9).unwrap();
    c.identify(&t).unwrap();
}

/// Two queues requested on a one-queue veth: the second socket cannot bind,
/// and the error says which queue.
#[test]
fn queue_count_is_checked() {
    let pair = NetPair::new("xx15", 1500);
    let file = sparse_file(1 << 20);
    let out = common::run_in_ns(
        pair.target_ns(),
        common::xblade_bin(),
        [
            "--datapath",
            "xdp",
            "--queues",
            "2",
            // auto would fall back to queue 0 only on a veth (no ntuple).
            "--steer",
            "none",
            "--control-socket",
            "none",
            "1",
            "2",
            pair.target_if(),
            path_str(&file),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue 1"), "{err}");
    assert!(
        !xdp_attached(pair.target_ns(), pair.target_if()),
        "a failed start left the program attached"
    );
}

/// The link goes down (both ends) and comes back: the worker survives and
/// serves again.
#[test]
fn link_flap_survives() {
    let pair = NetPair::new("xx16", 9000);
    let file = sparse_file(4 << 20);
    fill_random(&file, 16);
    let xb = start_xdp(
        &pair,
        "native",
        &["3", "6", pair.target_if(), path_str(&file)],
    );
    let mut c = client(&pair);
    let t = c.find(3, 6).unwrap();
    let d = rand_bytes(6, 17 * SECTOR_SIZE);
    c.write(&t, 0, &d).unwrap();
    let ip = |ns: &str, ifname: &str, state: &str| {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "link", "set", "dev", ifname, state])
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    for _ in 0..3 {
        ip(pair.target_ns(), pair.target_if(), "down");
        ip(pair.initiator_ns(), pair.initiator_if(), "down");
        // Requests into a down link: nothing answers.
        std::thread::sleep(Duration::from_millis(200));
        ip(pair.target_ns(), pair.target_if(), "up");
        ip(pair.initiator_ns(), pair.initiator_if(), "up");
        std::thread::sleep(Duration::from_millis(300));
        assert!(xb_running(&xb), "{}", xb.proc.log());
        assert_eq!(c.read(&t, 0, 17).unwrap(), d);
        let d2 = rand_bytes(7, 17 * SECTOR_SIZE);
        c.write(&t, 17, &d2).unwrap();
        assert_eq!(file_sectors(&file, 17, 17), d2);
    }
}

/// The MTU lowered while serving: the worker follows within a stats period
/// (a 17-sector READ is refused with ABRT, a new discovery sees 2 sectors)
/// and raised again, it offers jumbo requests again, up to the size it was
/// started with.
#[test]
fn mtu_changes_while_serving_are_followed() {
    let pair = NetPair::new("xx18", 9000);
    let file = sparse_file(1 << 20);
    for mode in ["native", "skb"] {
        pair.set_mtu(9000);
        let xb = start_xdp(&pair, mode, &["1", "1", pair.target_if(), path_str(&file)]);
        let mut c = client(&pair);
        let t = discover(&mut c, 1, 1).remove(0);
        assert_eq!(t.max_sectors, 17, "{mode}");
        let data = rand_bytes(3, 17 * SECTOR_SIZE);
        c.write(&t, 0, &data).unwrap();
        pair.set_mtu(1500);
        std::thread::sleep(Duration::from_millis(600));
        // A 17-sector read no longer fits the link: refused (ABRT).
        let r = c.ata(&t, 0x24, 17, 0, &[]).unwrap();
        assert_eq!((r.status(), r.error()), (0x41, 0x04), "{mode}: {r:?}");
        let mut c = client(&pair);
        let t = discover(&mut c, 1, 1).remove(0);
        assert_eq!(t.max_sectors, 2, "{mode}: what MTU 1500 carries");
        assert_eq!(c.read(&t, 0, 2).unwrap(), data[..1024], "{mode}");
        pair.set_mtu(9000);
        std::thread::sleep(Duration::from_millis(600));
        let mut c = client(&pair);
        let t = discover(&mut c, 1, 1).remove(0);
        assert_eq!(t.max_sectors, 17, "{mode}: back to jumbo");
        assert_eq!(c.read(&t, 0, 17).unwrap(), data, "{mode}");
        assert!(xb_running(&xb), "{mode}");
        drop(xb);
    }
}
