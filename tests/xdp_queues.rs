//! One target MAC per queue (`--steer`), on a veth with two rx queues and
//! the NIC's ntuple rules emulated on the initiator side: a tc BPF program
//! on the sending veth's egress (tests/bpf/steer_dst_mac.bpf.c, compiled
//! here with clang) puts frames for queue q's MAC on tx queue q, which a
//! veth delivers to the peer's rx queue q.
//!
//! Checked: with `--steer external` each queue's MAC answers (discovery,
//! Query Config, data) and each worker serves its own; a Mac Mask and a
//! reservation set through one MAC hold on the other; the unicast filter
//! holds the queue MAC while running and not after exit; what a SIGKILLed
//! run left is removed at the next start; `--steer ntuple` fails on a veth
//! with an error naming the interface; `auto` serves from queue 0 only and
//! says why.
//!
//! Prefixes (unique across all integration tests): xq01..xq06.

mod aoe_support;
mod common;
mod xdp_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aoe_support::*;
use aoe_wire::mask::{DirCmd, MaskCmd};
use aoe_wire::reserve::ReserveCmd;
use aoe_wire::{qc, MacAddr, SECTOR_SIZE};
use common::{sparse_file, NetPair};
use xblade::net::xdp::steer::queue_mac;
use xblade_tools::initiator::client::{Client, ClientError, Target};
use xdp_support::*;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A 2-queue veth `{prefix}mt` (target) <-> `{prefix}mi` (initiator)
/// between the pair's namespaces (deleted with them).
struct Queues {
    pair: NetPair,
    tif: String,
    iif: String,
    _obj: common::TempPath,
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac_hex(m: MacAddr) -> String {
    format!(
        "0x{}ULL",
        m.0.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Compile the steering program for `macs` (queue q gets `macs[q]`). A
/// missing clang fails the test (scripts/setup.sh installs it).
fn steer_object(macs: &[MacAddr]) -> common::TempPath {
    let obj = common::temp_file("steer.bpf.o");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/steer_dst_mac.bpf.c");
    let mut cmd = Command::new("clang");
    cmd.args([
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-Wall",
        "-I/usr/include/x86_64-linux-gnu",
    ])
    .arg(format!("-DSTEER_N={}", macs.len()));
    for (q, m) in macs.iter().enumerate() {
        cmd.arg(format!("-DSTEER_MAC_{q}={}", mac_hex(*m)));
    }
    cmd.arg("-c").arg(&src).arg("-o").arg(obj.path());
    ok(&mut cmd);
    obj
}

impl Queues {
    /// The veth, with `steer` emulating ntuple rules for the target's
    /// per-queue MACs (derived from its port MAC as xblade does).
    fn new(prefix: &str, steer: bool) -> Queues {
        let pair = NetPair::new(prefix, 1500);
        let (tif, iif) = (format!("{prefix}mt"), format!("{prefix}mi"));
        #[rustfmt::skip]
        ok(Command::new("ip").args([
            "link", "add", "name", &tif, "netns", pair.target_ns(), "numtxqueues", "2", "numrxqueues", "2",
            "type", "veth", "peer", "name", &iif, "netns", pair.initiator_ns(), "numtxqueues", "2", "numrxqueues", "2",
        ]));
        ok(Command::new("ip").args(["-n", pair.target_ns(), "link", "set", &tif, "up"]));
        ok(Command::new("ip").args(["-n", pair.initiator_ns(), "link", "set", &iif, "up"]));
        let port = MacAddr(common::mac_of(pair.target_ns(), &tif));
        let obj = steer_object(&[queue_mac(port, 0), queue_mac(port, 1)]);
        if steer {
            let tc = |args: &[&str]| {
                ok(common::ns_command(pair.initiator_ns(), "tc").args(args));
            };
            tc(&["qdisc", "add", "dev", &iif, "clsact"]);
            tc(&[
                "filter",
                "add",
                "dev",
                &iif,
                "egress",
                "bpf",
                "da",
                "obj",
                path_str(obj.path()),
                "sec",
                "tc",
            ]);
        }
        Queues {
            pair,
            tif,
            iif,
            _obj: obj,
        }
    }

    fn port_mac(&self) -> MacAddr {
        MacAddr(common::mac_of(self.pair.target_ns(), &self.tif))
    }

    fn client(&self) -> Client {
        client_in(self.pair.initiator_ns(), &self.iif)
    }

    /// `bridge fdb show dev TIF` in the target namespace.
    fn fdb(&self) -> String {
        ok(common::ns_command(self.pair.target_ns(), "bridge")
            .args(["fdb", "show", "dev", &self.tif]))
    }

    fn start(&self, args: &[&str], file: &Path) -> Xblade {
        let mut all = args.to_vec();
        all.extend(["1", "1", &self.tif, path_str(file)]);
        start_xdp(&self.pair, "native", &all)
    }
}

/// Counters of worker `q` after the next publication.
fn workers(xb: &Xblade) -> Vec<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(400));
    xb.status().workers
}

fn eng(w: &serde_json::Value, k: &str) -> u64 {
    w["engine"][k].as_u64().unwrap_or(0)
}

#[test]
fn external_steering_serves_every_queue_mac() {
    let q = Queues::new("xq01", true);
    let file = sparse_file(8 << 20);
    let xb = q.start(&["--steer", "external"], file.path());
    let (m0, m1) = (q.port_mac(), queue_mac(q.port_mac(), 1));
    assert!(
        xb.proc.log().contains("steer=\"external\""),
        "{}",
        xb.proc.log()
    );
    // The queue MAC is on the unicast filter (the port's own needs none).
    let fdb = q.fdb();
    assert!(fdb.contains(&format!("{m1} self permanent")), "{fdb}");
    let ws = workers(&xb);
    assert_eq!(ws.len(), 2, "{ws:?}");
    for (i, m) in [m0, m1].iter().enumerate() {
        assert_eq!(ws[i]["queue"], i as u64);
        assert_eq!(ws[i]["mac"], m.to_string(), "{}", ws[i]);
        assert_eq!(ws[i]["xdp"]["steer"], "external", "{}", ws[i]);
    }

    // Discovery (one broadcast, whichever queue it lands on) finds both
    // paths; a Query Config to each MAC is answered from it.
    let mut c = q.client();
    let found = discover(&mut c, 1, 1);
    let macs: Vec<MacAddr> = found.iter().map(|t| t.mac).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(macs.contains(&m0) && macs.contains(&m1), "{macs:?}");
    for m in [m0, m1] {
        let r = c
            .query_config(m, 1, 1, qc::ConfigCmd::Read, &[])
            .unwrap()
            .expect("Query Config reply");
        assert_eq!(r.header.eth.src, m);
    }

    // Data through each MAC, checked on the file; each worker serves its own.
    let before: Vec<u64> = workers(&xb).iter().map(|w| eng(w, "ata_write")).collect();
    for (k, t) in found.iter().enumerate() {
        for i in 0..20u64 {
            let lba = 1000 * (k as u64 + 1) + 2 * i;
            let d = rand_bytes(lba, 2 * SECTOR_SIZE);
            c.write(t, lba, &d).unwrap();
            assert_eq!(c.read(t, lba, 2).unwrap(), d);
            assert_eq!(file_sectors(file.path(), lba, 2), d);
        }
    }
    let ws = workers(&xb);
    for (i, w) in ws.iter().enumerate() {
        let writes = eng(w, "ata_write") - before[i];
        // At least its MAC's 20 (a retransmission may add one).
        assert!(
            writes >= 20,
            "queue {i} served {writes} of its MAC's 20 writes: {w}"
        );
        assert!(xdp_counter(w, "bpf_redirected") >= 40, "{w}");
    }

    // Clean exit: the queue MAC leaves the unicast filter.
    let mut xb = xb;
    assert!(xb.proc.stop().success(), "{}", xb.proc.log());
    let fdb = q.fdb();
    assert!(!fdb.contains(&m1.to_string()), "left behind: {fdb}");
}

#[test]
fn mask_and_reservation_hold_across_queue_macs() {
    let q = Queues::new("xq02", true);
    let file = sparse_file(4 << 20);
    let _xb = q.start(&["--steer", "external"], file.path());
    let mut a = q.client();
    let me = a.mac();
    let mut b = q.client();
    let b_mac = MacAddr([0x02, 0, 0, 0, 0, 0xb2]);
    b.set_source_mac(b_mac);
    let found = discover(&mut a, 1, 1);
    assert_eq!(found.len(), 2, "{found:?}");
    let port = q.port_mac();
    let t0: &Target = found.iter().find(|t| t.mac == port).expect("queue 0 MAC");
    let t1: &Target = found.iter().find(|t| t.mac != port).expect("queue 1 MAC");
    let timed_out = |r: Result<Vec<u8>, ClientError>| matches!(r, Err(ClientError::Timeout { .. }));

    // Mac Mask through MAC0: B is shut out on MAC1 too.
    let r = a
        .mac_mask(t0, MaskCmd::Edit, &[(DirCmd::Add, me)])
        .unwrap()
        .expect("Mac Mask reply");
    assert_eq!((r.aoe_error, r.list.clone()), (None, vec![me]));
    assert!(
        timed_out(quietly(&mut b, |b| b.read(t1, 0, 1))),
        "mask through MAC0 ignored on MAC1"
    );
    a.read(t1, 0, 1).unwrap();
    // Cleared through MAC1: B may use MAC0.
    let r = a
        .mac_mask(t1, MaskCmd::Edit, &[(DirCmd::Delete, me)])
        .unwrap()
        .expect("Mac Mask reply");
    assert_eq!(r.list, Vec::<MacAddr>::new());
    b.read(t0, 0, 1).unwrap();

    // Reservation through MAC1: B is refused (error 6) on MAC0.
    let r = a
        .reserve(t1, ReserveCmd::Set, &[me])
        .unwrap()
        .expect("Reserve reply");
    assert_eq!(r.aoe_error, None);
    assert!(
        matches!(b.read(t0, 0, 1), Err(ClientError::AoeError { code: 6 })),
        "reservation through MAC1 ignored on MAC0"
    );
    a.write(t0, 8, &[5u8; 512]).unwrap();
    // Released through MAC0: B reads on MAC1.
    a.reserve(t0, ReserveCmd::Set, &[])
        .unwrap()
        .expect("Release reply");
    assert_eq!(b.read(t1, 8, 1).unwrap(), vec![5u8; 512]);
}

#[test]
fn stale_queue_macs_of_a_killed_run_are_removed() {
    let q = Queues::new("xq03", false);
    let file = sparse_file(1 << 20);
    let m1 = queue_mac(q.port_mac(), 1);
    let mut xb = q.start(&["--steer", "external"], file.path());
    assert!(q.fdb().contains(&m1.to_string()), "{}", q.fdb());
    let pid = libc::pid_t::try_from(xb.proc.pid()).expect("pid");
    // SAFETY: kill(2) touches no memory; `pid` is our own running child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(xb.proc.wait_timeout(Duration::from_secs(5)).is_some());
    // SIGKILL: nothing ran on exit, the entry stays.
    assert!(q.fdb().contains(&m1.to_string()), "{}", q.fdb());
    assert!(wait_detached(q.pair.target_ns(), &q.tif));
    // The next start (one queue, as an operator might restart it) removes it.
    let mut xb = q.start(&["--queues", "1"], file.path());
    assert!(
        xb.proc
            .log()
            .contains("removed queue MACs left by an earlier run"),
        "{}",
        xb.proc.log()
    );
    assert!(!q.fdb().contains(&m1.to_string()), "{}", q.fdb());
    let ws = workers(&xb);
    assert_eq!(ws.len(), 1);
    assert_eq!(ws[0]["mac"], q.port_mac().to_string());
    assert_eq!(ws[0]["xdp"]["steer"], "single-queue");
    xb.proc.stop();
}

#[test]
fn ntuple_on_veth_fails_clearly() {
    let q = Queues::new("xq04", false);
    let file = sparse_file(1 << 20);
    let out = common::run_in_ns(
        q.pair.target_ns(),
        common::xblade_bin(),
        [
            "--datapath",
            "xdp",
            "--steer",
            "ntuple",
            "--control-socket",
            "none",
            "1",
            "1",
            &q.tif,
            path_str(file.path()),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: --steer ntuple", q.tif)) && err.contains("no ntuple filters"),
        "{err}"
    );
    assert!(!xdp_attached(q.pair.target_ns(), &q.tif));
    let m1 = queue_mac(q.port_mac(), 1);
    assert!(!q.fdb().contains(&m1.to_string()), "{}", q.fdb());
}

#[test]
fn auto_on_veth_serves_queue_0_only_and_says_why() {
    let q = Queues::new("xq05", true);
    let file = sparse_file(1 << 20);
    let xb = q.start(&[], file.path());
    let log = xb.proc.log();
    assert!(
        log.contains("serving from queue 0 only") && log.contains("no ntuple filters"),
        "{log}"
    );
    let ws = workers(&xb);
    assert_eq!(ws.len(), 1, "{ws:?}");
    assert_eq!(ws[0]["xdp"]["steer"], "queue0-only");
    assert_eq!(ws[0]["mac"], q.port_mac().to_string());
    let m1 = queue_mac(q.port_mac(), 1);
    assert!(!q.fdb().contains(&m1.to_string()), "{}", q.fdb());
    let mut c = q.client();
    let found = discover(&mut c, 1, 1);
    assert_eq!(found.len(), 1, "{found:?}");
    c.identify(&found[0]).unwrap();
}

/// `xblade bench` finds both MACs of the target and rotates its requests
/// over them; `--verify` checks every byte.
#[test]
fn bench_rotates_over_queue_macs() {
    let q = Queues::new("xq06", true);
    let file = sparse_file(16 << 20);
    let _xb = q.start(&["--steer", "external"], file.path());
    let mut p = common::Proc::spawn_in_ns(
        q.pair.initiator_ns(),
        common::xblade_bin(),
        [
            "bench",
            "--iface",
            &q.iif,
            "--target",
            "1.1",
            "--op",
            "mix:50",
            "--duration",
            "1s",
            "--warmup",
            "0",
            "--window",
            "16",
            "--verify",
            "--lba-range",
            "4M",
        ],
    );
    let st = p
        .wait_timeout(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("bench hung:\n{}", p.log()));
    let log = p.log();
    assert!(st.success(), "{log}");
    let m1 = queue_mac(q.port_mac(), 1);
    assert!(
        log.contains("requests rotate over them") && log.contains(&m1.to_string()),
        "{log}"
    );
    assert!(log.contains("verify          ok"), "{log}");
}
