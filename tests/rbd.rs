//! Exports on Ceph RBD (`rbd:POOL/IMAGE`) against a real one-node cluster
//! (`../shared/tools/ceph-one-node.sh`, memstore OSD), on both datapaths:
//! data round trips checked byte for byte (bench --verify, and `rbd export`
//! against what the initiator wrote), errors that name a missing pool,
//! image or cluster, exclusive-lock refused with the command that fixes it,
//! `rbd resize` seen live, and the cluster stopped mid-I/O (SIGSTOP of the
//! OSD): ATA errors within the timeout, service again after SIGCONT.
//!
//! The Ceph daemons bind 127.0.0.1, so each test runs its own cluster inside
//! its pair's target namespace (about 1 s to bring up, 0.2 s down): the
//! gateway reaches it there and nothing leaks between tests. Every ceph/rbd
//! command runs under `timeout` (without a mgr some never answer).
//!
//! Needs root, ceph-mon, ceph-osd, ceph-common and librbd1
//! (scripts/setup.sh); fails (never skips) without them.
//! Prefixes: xbra (AF_PACKET), xbrx (XDP), xbre (errors), xbrz (resize),
//! xbrc (cluster cut).

mod aoe_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aoe_support::*;
use aoe_wire::SECTOR_SIZE;
use common::{ns_command, require_root, xblade_bin, NetPair, Proc};
use xblade_tools::initiator::client::Client;

const ONE_NODE: &str = "../shared/tools/ceph-one-node.sh";

/// Path of the cluster tool: `XBLADE_CEPH_ONE_NODE`, else next to the repo.
fn one_node() -> PathBuf {
    if let Ok(p) = std::env::var("XBLADE_CEPH_ONE_NODE") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(ONE_NODE);
    if p.exists() {
        return p;
    }
    PathBuf::from("/work/shared/tools/ceph-one-node.sh")
}

/// A one-node cluster inside a namespace, brought down on drop.
struct Cluster {
    ns: String,
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    /// Up in `ns` with pool `rbd` and `images` (NAME:SIZE).
    fn up(ns: &str, images: &[&str]) -> Cluster {
        require_root();
        let dir = PathBuf::from(format!("/var/tmp/xbr-{ns}-{}", std::process::id()));
        let _ = Command::new(one_node()).arg("down").arg(&dir).output();
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = ns_command(ns, "timeout");
        cmd.arg("60").arg(one_node()).arg("up").arg(&dir);
        for i in images {
            cmd.args(["--image", i]);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", one_node().display()));
        assert!(
            out.status.success(),
            "ceph-one-node.sh up failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let conf = dir.join("ceph.conf").to_str().expect("utf-8").to_string();
        Cluster {
            ns: ns.into(),
            dir,
            conf,
        }
    }

    /// `timeout 30 PROGRAM ARGS` in the cluster's namespace, with its conf.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        ns_command(&self.ns, "timeout")
            .arg("30")
            .arg(program)
            .args(args)
            .env("CEPH_CONF", &self.conf)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    fn rbd(&self, args: &[&str]) -> String {
        let out = self.run("rbd", args);
        assert!(
            out.status.success(),
            "rbd {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The image's bytes (`rbd export`).
    fn export(&self, image: &str) -> Vec<u8> {
        let f = self.dir.join("export.img");
        let _ = std::fs::remove_file(&f);
        self.rbd(&["export", "--no-progress", image, f.to_str().expect("utf-8")]);
        let b = std::fs::read(&f).expect("read rbd export");
        let _ = std::fs::remove_file(&f);
        b
    }

    /// The OSD's pid (from its pid file).
    fn osd_pid(&self) -> i32 {
        let p = self.dir.join("run/osd.0.pid");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .parse()
            .expect("pid")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A stopped OSD would make `down` wait for its SIGKILL fallback.
        if let Ok(s) = std::fs::read_to_string(self.dir.join("run/osd.0.pid")) {
            if let Ok(pid) = s.trim().parse::<i32>() {
                // SAFETY: plain syscall on the pid this cluster started.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
        let _ = Command::new("timeout")
            .arg("30")
            .arg(one_node())
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// xblade with a control socket, CEPH_CONF set.
struct Gateway {
    proc: Proc,
    socket: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Gateway {
    fn status(&self) -> xblade::control::Status {
        xblade::control::query(&self.socket)
            .unwrap_or_else(|e| panic!("query {}: {e}\n{}", self.socket.display(), self.proc.log()))
    }
}

/// The xblade command in the target namespace: `--datapath DP [extra] ARGS`.
fn xblade_cmd(pair: &NetPair, cl: &Cluster, datapath: &str, args: &[&str]) -> (Command, PathBuf) {
    let socket = std::env::temp_dir().join(format!(
        "xblade-{}-{}.sock",
        pair.prefix(),
        std::process::id()
    ));
    let mut cmd = ns_command(pair.target_ns(), xblade_bin());
    cmd.args(["--datapath", datapath, "--control-socket"])
        .arg(&socket)
        .args(args)
        .env("CEPH_CONF", &cl.conf);
    (cmd, socket)
}

fn start(pair: &NetPair, cl: &Cluster, datapath: &str, args: &[&str]) -> Gateway {
    let (cmd, socket) = xblade_cmd(pair, cl, datapath, args);
    let mut proc = Proc::spawn(cmd, &format!("xblade-{datapath}"));
    proc.wait_for_log("xblade serving", START_TIMEOUT);
    if datapath == "xdp" {
        proc.wait_for_log("AF_XDP worker serving", START_TIMEOUT);
    }
    Gateway { proc, socket }
}

/// Start xblade expecting it to refuse; its log.
fn refused(pair: &NetPair, cl: &Cluster, args: &[&str]) -> String {
    let (cmd, _) = xblade_cmd(pair, cl, "afpacket", args);
    let mut p = Proc::spawn(cmd, "xblade-refused");
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("xblade did not exit:\n{}", p.log()));
    assert!(!st.success(), "xblade started:\n{}", p.log());
    p.log()
}

fn bench_verify(pair: &NetPair, bytes: &str, pid: u32) -> xblade_tools::bench::report::BenchReport {
    let pid = pid.to_string();
    #[rustfmt::skip]
    let (ok, log, r) = run_bench(pair, &[
        "--target", "1.1", "--op", "mix:60", "--bytes", bytes, "--duration", "2s",
        "--warmup", "200ms", "--window", "64", "--verify", "--lba-range", "8M",
        "--target-pid", &pid,
    ]);
    let r = check_clean(ok, &log, r);
    eprintln!(
        "bench {bytes} mix:60 window 64: {:.0} requests/s, p50 {:.0} us",
        r.requests_per_s, r.latency_us.p50
    );
    r
}

/// Write random data at a few places (across object boundaries: RBD
/// objects are 4 MiB), FLUSH, read it back through the target, and compare
/// `rbd export` with it.
fn initiator_round_trip(c: &mut Client, cl: &Cluster, image: &str, seed: u64) {
    let t = c.find(1, 1).expect("find 1.1");
    let mut model = cl.export(image);
    let sectors = (model.len() / SECTOR_SIZE) as u64;
    for (k, lba) in [0u64, 8191, 8192 - 1, sectors / 2 + 5, sectors - 16]
        .into_iter()
        .enumerate()
    {
        let data = rand_bytes(seed * 100 + k as u64, 16 * SECTOR_SIZE);
        c.write(&t, lba, &data)
            .unwrap_or_else(|e| panic!("write 16 sectors at {lba}: {e}"));
        let at = lba as usize * SECTOR_SIZE;
        model[at..at + data.len()].copy_from_slice(&data);
        let back = c.read(&t, lba, 16).expect("read back");
        assert!(back == data, "read back 16 sectors at {lba}: data differs");
    }
    c.flush(&t).expect("flush");
    let now = cl.export(image);
    assert_eq!(now.len(), model.len());
    if let Some(i) = now.iter().zip(&model).position(|(a, b)| a != b) {
        panic!(
            "rbd export differs from what was written at byte {i} (sector {})",
            i / SECTOR_SIZE
        );
    }
}

#[test]
fn afpacket_serves_an_rbd_image() {
    let pair = NetPair::new("xbra", 1500);
    let cl = Cluster::up(pair.target_ns(), &["disk1:64M"]);
    let gw = start(
        &pair,
        &cl,
        "afpacket",
        &["1", "1", pair.target_if(), "rbd:rbd/disk1"],
    );
    bench_verify(&pair, "1k", gw.proc.pid());
    let mut c = client(&pair);
    initiator_round_trip(&mut c, &cl, "rbd/disk1", 1);
    let st = gw.status();
    let e = &st.exports[0];
    assert_eq!(e.source, "rbd:rbd/disk1", "{e:?}");
    assert_eq!(e.sectors, 64 << 11);
    let w = &st.workers[0];
    assert_eq!(w["disk_errors"], 0, "{w}");
    // The cluster and librbd's requests in flight (none now).
    let fsid = String::from_utf8_lossy(&cl.run("ceph", &["fsid"]).stdout)
        .trim()
        .to_string();
    assert_eq!(e.cluster_fsid.as_deref(), Some(fsid.as_str()), "{e:?}");
    assert_eq!(e.store_in_flight, Some(0), "{e:?}");
    // A lone gateway holds its lease and admits writes (docs/fencing.md).
    let l = e
        .lease
        .as_ref()
        .expect("a writable rbd: export has a lease");
    assert!(l.admitting && l.renewals > 0 && l.peers.is_empty(), "{l:?}");
    let out = Command::new(xblade_bin())
        .args(["status", "--socket"])
        .arg(&gw.socket)
        .output()
        .expect("xblade status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("ceph cluster {fsid}, librbd requests in flight 0")),
        "{text}"
    );
}

/// XDP at MTU 9000: 8 KiB requests whose frame memory is several segments
/// (rbd_aio_readv/writev with several iovecs).
#[test]
fn xdp_serves_an_rbd_image() {
    let pair = NetPair::new("xbrx", 9000);
    let cl = Cluster::up(pair.target_ns(), &["disk1:64M"]);
    let gw = start(
        &pair,
        &cl,
        "xdp",
        &[
            "--xdp-mode",
            "native",
            "1",
            "1",
            pair.target_if(),
            "rbd:rbd/disk1",
        ],
    );
    bench_verify(&pair, "8k", gw.proc.pid());
    let mut c = client(&pair);
    initiator_round_trip(&mut c, &cl, "rbd/disk1", 2);
    std::thread::sleep(Duration::from_millis(400));
    let w = &gw.status().workers[0];
    assert_eq!(w["disk_errors"], 0, "{w}");
    assert_eq!(w["disk_in_flight"], 0, "{w}");
}

/// A namespace inside the pool (`rbd:POOL/NAMESPACE/IMAGE`).
#[test]
fn namespace_images_are_served() {
    let pair = NetPair::new("xbrn", 1500);
    let cl = Cluster::up(pair.target_ns(), &[]);
    cl.rbd(&["namespace", "create", "rbd/tenant"]);
    cl.rbd(&[
        "create",
        "--image-feature",
        "layering",
        "--size",
        "16M",
        "rbd/tenant/img",
    ]);
    let _gw = start(
        &pair,
        &cl,
        "afpacket",
        &["1", "1", pair.target_if(), "rbd:rbd/tenant/img"],
    );
    let mut c = client(&pair);
    initiator_round_trip(&mut c, &cl, "rbd/tenant/img", 3);
}

#[test]
fn errors_name_what_is_missing() {
    let pair = NetPair::new("xbre", 1500);
    let cl = Cluster::up(pair.target_ns(), &["disk1:16M"]);
    let ifc = pair.target_if();

    let log = refused(&pair, &cl, &["1", "1", ifc, "rbd:nopool/disk1"]);
    assert!(
        log.contains("\"nopool\"") && log.contains("no such pool"),
        "{log}"
    );

    let log = refused(&pair, &cl, &["1", "1", ifc, "rbd:rbd/nosuch"]);
    assert!(
        log.contains("\"nosuch\"") && log.contains("no such image"),
        "{log}"
    );

    let log = refused(&pair, &cl, &["1", "1", ifc, "rbd:rbd"]);
    assert!(
        log.contains("rbd:rbd") && log.contains("rbd:POOL/IMAGE"),
        "{log}"
    );

    cl.rbd(&[
        "create",
        "--size",
        "16M",
        "--image-feature",
        "layering,exclusive-lock,object-map,fast-diff",
        "rbd/locked",
    ]);
    let log = refused(&pair, &cl, &["1", "1", ifc, "rbd:rbd/locked"]);
    assert!(
        log.contains("rbd feature disable rbd/locked fast-diff object-map exclusive-lock"),
        "{log}"
    );

    // No cluster: a configuration whose monitor nobody runs. Bounded by
    // --rbd-timeout.
    let gone = cl.dir.join("gone.conf");
    std::fs::write(
        &gone,
        std::fs::read_to_string(&cl.conf)
            .expect("conf")
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("mon") && l.contains("host") {
                    "mon host = [v2:127.0.0.1:9,v1:127.0.0.1:10]".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
    .expect("write conf");
    let (mut cmd, _) = xblade_cmd(
        &pair,
        &cl,
        "afpacket",
        &["--rbd-timeout", "2", "1", "1", ifc, "rbd:rbd/disk1"],
    );
    cmd.env("CEPH_CONF", &gone);
    let t0 = Instant::now();
    let mut p = Proc::spawn(cmd, "xblade-nocluster");
    let st = p.wait_timeout(Duration::from_secs(30)).expect("exits");
    let took = t0.elapsed();
    let log = p.log();
    assert!(!st.success());
    assert!(
        log.contains("cannot connect to the Ceph cluster") && log.contains("gone.conf"),
        "{log}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}: {log}");
    eprintln!("no cluster: refused after {took:?}");

    // A client id the cluster does not know (--rbd-id).
    let log = refused(
        &pair,
        &cl,
        &[
            "--rbd-id",
            "nobody",
            "--rbd-timeout",
            "3",
            "1",
            "1",
            ifc,
            "rbd:rbd/disk1",
        ],
    );
    assert!(log.contains("client.nobody"), "{log}");

    // A key that may not blocklist (fencing a stalled gateway needs it):
    // writable exports are refused with the caps to give.
    let key = cl.dir.join("ceph.client.xbrnofence.keyring");
    let out = cl.run(
        "ceph",
        &[
            "auth",
            "get-or-create",
            "client.xbrnofence",
            "mon",
            "allow r",
            "osd",
            "profile rbd",
            "-o",
            key.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "ceph auth: {out:?}");
    let log = refused(
        &pair,
        &cl,
        &["--rbd-id", "xbrnofence", "1", "1", ifc, "rbd:rbd/disk1"],
    );
    assert!(
        log.contains("client.xbrnofence may not blocklist") && log.contains("mon 'profile rbd'"),
        "{log}"
    );

    // No configuration at all.
    let (mut cmd, _) = xblade_cmd(&pair, &cl, "afpacket", &["1", "1", ifc, "rbd:rbd/disk1"]);
    cmd.env("CEPH_CONF", "/nonexistent/xbr.conf");
    let mut p = Proc::spawn(cmd, "xblade-noconf");
    p.wait_timeout(Duration::from_secs(30)).expect("exits");
    let log = p.log();
    assert!(log.contains("/nonexistent/xbr.conf"), "{log}");
}

/// `rbd resize` grows the export live: the periodic size check (1 s here)
/// sees it, the status shows it and an initiator's IDENTIFY reports it.
#[test]
fn rbd_resize_is_seen_live() {
    let pair = NetPair::new("xbrz", 1500);
    let cl = Cluster::up(pair.target_ns(), &["disk1:32M"]);
    let gw = start(
        &pair,
        &cl,
        "afpacket",
        &[
            "--size-check",
            "1",
            "1",
            "1",
            pair.target_if(),
            "rbd:rbd/disk1",
        ],
    );
    let mut c = client(&pair);
    let t = c.find(1, 1).expect("find");
    assert_eq!(c.identify(&t).expect("identify").lba48_sectors(), 32 << 11);
    cl.rbd(&["resize", "--size", "48M", "rbd/disk1"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.status().exports[0].sectors != 48 << 11 {
        assert!(
            Instant::now() < deadline,
            "resize not seen: {:?}\n{}",
            gw.status().exports[0],
            gw.proc.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.identify(&t).expect("identify").lba48_sectors(), 48 << 11);
    // The new end is writable.
    let data = rand_bytes(7, 8 * SECTOR_SIZE);
    c.write(&t, (48 << 11) - 8, &data)
        .expect("write at the new end");
    assert!(c.read(&t, (48 << 11) - 8, 8).expect("read") == data);
}

/// Wait (up to 5 s) until every thread of `pid` is in state T (stopped).
fn wait_stopped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("OSD task dir")
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .all(|st| st[st.rfind(')').unwrap_or(0)..].starts_with(") T"));
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "OSD {pid} did not stop within 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The OSD stopped in the middle of I/O: requests fail with an ATA error
/// within the timeout (3 s here) instead of hanging, and the gateway serves
/// again once the OSD runs.
fn cluster_cut(prefix: &str, datapath: &str) {
    let pair = NetPair::new(prefix, 1500);
    let cl = Cluster::up(pair.target_ns(), &["disk1:16M"]);
    let mut args = vec!["--rbd-timeout", "3"];
    if datapath == "xdp" {
        args.extend(["--xdp-mode", "native"]);
    }
    args.extend(["1", "1", pair.target_if(), "rbd:rbd/disk1"]);
    let gw = start(&pair, &cl, datapath, &args);
    let mut c = client(&pair);
    let t = c.find(1, 1).expect("find");
    let data = rand_bytes(11, 2 * SECTOR_SIZE);
    c.write(&t, 100, &data).expect("write before the cut");

    let osd = cl.osd_pid();
    // SAFETY: plain syscall on the OSD this test's cluster started.
    assert_eq!(unsafe { libc::kill(osd, libc::SIGSTOP) }, 0);
    // kill(2) returns before every thread of the OSD has stopped: a request
    // sent meanwhile could still be served. Wait until all are stopped.
    wait_stopped(osd);
    c.set_timeout(Duration::from_secs(20));
    c.set_retries(0);
    let t0 = Instant::now();
    let r = c
        .ata(&t, 0x34, 2, 200, &data)
        .expect("an answer while the OSD is stopped");
    let took = t0.elapsed();
    assert!(!r.is_ok(), "a write succeeded with the OSD stopped: {r:?}");
    assert!(r.aoe_error.is_none(), "an ATA error, not an AoE one: {r:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "ATA error after {took:?}"
    );
    let t1 = Instant::now();
    let r = c.ata(&t, 0x24, 2, 100, &[]).expect("read answered");
    assert!(!r.is_ok(), "{r:?}");
    eprintln!(
        "{datapath}: OSD stopped: write ATA error after {took:?}, read after {:?}",
        t1.elapsed()
    );

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(osd, libc::SIGCONT) }, 0);
    let t2 = Instant::now();
    c.set_timeout(Duration::from_secs(5));
    let back = loop {
        match c.read(&t, 100, 2) {
            Ok(b) => break b,
            Err(e) => {
                assert!(
                    t2.elapsed() < Duration::from_secs(30),
                    "no service 30 s after SIGCONT: {e}\n{}",
                    gw.proc.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    eprintln!("{datapath}: served again {:?} after SIGCONT", t2.elapsed());
    assert!(back == data, "data written before the cut differs");
    c.set_retries(5);
    let fresh = rand_bytes(12, 2 * SECTOR_SIZE);
    c.write(&t, 300, &fresh).expect("write after");
    assert!(c.read(&t, 300, 2).expect("read after") == fresh);
    assert!(gw.proc.log().contains("xblade serving"));
}

#[test]
fn afpacket_cluster_cut_gives_ata_errors_then_recovers() {
    cluster_cut("xbrc", "afpacket");
}

#[test]
fn xdp_cluster_cut_gives_ata_errors_then_recovers() {
    cluster_cut("xbrd", "xdp");
}

/// `-r`: the image is opened read-only (rbd_open_read_only); reads are
/// served, writes refused.
#[test]
fn read_only_export() {
    let pair = NetPair::new("xbro", 1500);
    let cl = Cluster::up(pair.target_ns(), &["disk1:16M"]);
    let _gw = start(
        &pair,
        &cl,
        "afpacket",
        &["-r", "1", "1", pair.target_if(), "rbd:rbd/disk1"],
    );
    let mut c = client(&pair);
    let t = c.find(1, 1).expect("find");
    assert!(c.read(&t, 0, 8).expect("read") == vec![0u8; 8 * SECTOR_SIZE]);
    let r = c
        .ata(&t, 0x34, 1, 0, &[0xa5; SECTOR_SIZE])
        .expect("answered");
    assert!(!r.is_ok(), "a write to a read-only export succeeded: {r:?}");
    assert!(cl.export("rbd/disk1").iter().all(|&b| b == 0));
}

/// xblade loads librbd only when an rbd: export asks for it (dlopen): the
/// binary does not link it, so it runs on hosts without Ceph.
#[test]
fn binary_does_not_link_librbd() {
    let out = Command::new("ldd")
        .arg(xblade_bin())
        .output()
        .expect("run ldd");
    assert!(out.status.success(), "ldd failed");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(
        !libs.contains("librbd") && !libs.contains("librados"),
        "xblade links Ceph libraries:\n{libs}"
    );
}
