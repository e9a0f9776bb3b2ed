//! Day-2 operations on the real binary, between network namespaces:
//!
//! - live reload (`xblade reload`, SIGHUP) on AF_PACKET and XDP: exports
//!   added (on a served and on a new interface), removed, changed (read-only,
//!   Mac Mask, config string; restart-only fields reported), a bad
//!   configuration refused whole, an interface left without exports
//!   stopped (XDP program detached), while a client keeps doing verified
//!   I/O on an untouched export with no retransmission and no error;
//! - an idle start (no export configured) then a reload that adds one;
//! - online resize on AF_PACKET and XDP: `xblade resize`, SIGHUP and the
//!   periodic size check grow an export and announce it; shrinking and a
//!   fixed length are refused and the size kept;
//! - the systemd protocol: READY=1, WATCHDOG=1 pings, STOPPING=1;
//! - migration from vblade: persistence files imported and served.
//!
//! Prefixes (unique across all integration tests): xo01..xo09.

mod aoe_support;
mod common;
mod xdp_support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aoe_support::*;
use aoe_wire::{qc, MacAddr, SECTOR_SIZE};
use common::{sparse_file, xblade_bin, NetPair, Proc, TempPath};
use xblade::control::Status;
use xblade_tools::initiator::client::{IoRequest, QcReply};
use xdp_support::{wait_detached, xdp_attached};

const SECTORS: u64 = 8192; // 4 MiB backing files

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `xblade ARGS...` (a control-socket client), its output.
fn xblade(args: &[&str]) -> Output {
    Command::new(xblade_bin())
        .args(args)
        .output()
        .expect("run xblade")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A temp file path (not created) removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(stem: &str, ext: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        Scratch(std::env::temp_dir().join(format!(
            "xblade-{stem}-{}-{}.{ext}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }
    fn s(&self) -> &str {
        path_str(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `[[export]]` table.
fn export(shelf: u16, slot: u8, file: &Path, ifs: &[&str], extra: &str) -> String {
    let ifs: Vec<String> = ifs.iter().map(|i| format!("{i:?}")).collect();
    format!(
        "[[export]]\nshelf = {shelf}\nslot = {slot}\nfile = {:?}\ninterfaces = [{}]\n{extra}\n",
        path_str(file),
        ifs.join(", ")
    )
}

/// A running `xblade serve --config`.
struct Served {
    proc: Proc,
    socket: Scratch,
}

impl Served {
    fn start(pair: &NetPair, config: &Scratch, extra: &[&str]) -> Served {
        let socket = Scratch::new("ops", "sock");
        let mut args = vec![
            "serve",
            "--config",
            config.s(),
            "--control-socket",
            socket.s(),
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn_in_ns(pair.target_ns(), xblade_bin(), &args);
        proc.wait_for_log("xblade serving", START_TIMEOUT);
        Served { proc, socket }
    }

    fn status(&self) -> Status {
        xblade::control::query(&self.socket.0)
            .unwrap_or_else(|e| panic!("status: {e}\n{}", self.proc.log()))
    }

    fn reload(&self) -> Output {
        xblade(&["reload", "--socket", self.socket.s()])
    }

    fn sighup(&mut self) {
        assert!(self.proc.is_running(), "{}", self.proc.log());
        let pid = libc::pid_t::try_from(self.proc.pid()).expect("pid");
        // SAFETY: kill(2) touches no memory; the child is ours and running
        // (not reaped), so the pid is not reused.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }

    fn exports(&self) -> Vec<(u16, u8)> {
        self.status()
            .exports
            .iter()
            .map(|e| (e.shelf, e.slot))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Verified background I/O
// ---------------------------------------------------------------------------

struct LoadResult {
    rounds: u64,
    retransmits: u64,
    error: Option<String>,
    model: Vec<u8>,
}

/// A client writing and reading back export `shelf.slot` (whose content is
/// `model`) in a loop until stopped, checking every byte.
struct Load {
    stop: Arc<AtomicBool>,
    rounds: Arc<std::sync::atomic::AtomicU64>,
    handle: JoinHandle<LoadResult>,
}

impl Load {
    fn start(ns: &str, ifname: &str, shelf: u16, slot: u8, model: Vec<u8>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (ns, ifname) = (ns.to_string(), ifname.to_string());
        let (st, rn) = (stop.clone(), rounds.clone());
        let handle = std::thread::spawn(move || {
            let mut r = LoadResult {
                rounds: 0,
                retransmits: 0,
                error: None,
                model,
            };
            let mut c = client_in(&ns, &ifname);
            let t = match c.find(shelf, slot) {
                Ok(t) => t,
                Err(e) => {
                    r.error = Some(format!("find {shelf}.{slot}: {e}"));
                    return r;
                }
            };
            let n = 64u64; // sectors per round
            while !st.load(Ordering::Relaxed) {
                let lba = (r.rounds * 131) % (SECTORS - n);
                let data = rand_bytes(1000 + r.rounds, n as usize * SECTOR_SIZE);
                match c.write_window(&t, lba, &data, 16) {
                    Ok(s) => r.retransmits += s.retransmits,
                    Err(e) => {
                        r.error = Some(format!("round {}: write at {lba}: {e}", r.rounds));
                        return r;
                    }
                }
                let at = lba as usize * SECTOR_SIZE;
                r.model[at..at + data.len()].copy_from_slice(&data);
                // Read back this region and another one, checked against the model.
                let other = (r.rounds * 977 + 4000) % (SECTORS - n);
                for l in [lba, other] {
                    let reqs: Vec<IoRequest<'_>> = (0..n / 2)
                        .map(|k| IoRequest {
                            lba: l + 2 * k,
                            sectors: 2,
                            write: None,
                        })
                        .collect();
                    let mut got = vec![0u8; n as usize * SECTOR_SIZE];
                    match c.run_window(&t, &reqs, 16, |i, d| {
                        let o = i * 2 * SECTOR_SIZE;
                        got[o..o + d.len()].copy_from_slice(d);
                    }) {
                        Ok(s) => r.retransmits += s.retransmits,
                        Err(e) => {
                            r.error = Some(format!("round {}: read at {l}: {e}", r.rounds));
                            return r;
                        }
                    }
                    let at = l as usize * SECTOR_SIZE;
                    if got[..] != r.model[at..at + got.len()] {
                        r.error = Some(format!("round {}: data read at {l} differs", r.rounds));
                        return r;
                    }
                }
                r.rounds += 1;
                rn.store(r.rounds, Ordering::Relaxed);
            }
            r
        });
        Load {
            stop,
            rounds,
            handle,
        }
    }

    /// Wait until `k` more rounds are done (the load runs across a change).
    fn wait_rounds(&self, k: u64) {
        let start = self.rounds.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rounds.load(Ordering::Relaxed) < start + k {
            assert!(
                !self.handle.is_finished(),
                "the background client stopped early"
            );
            assert!(Instant::now() < deadline, "background I/O stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("load thread")
    }
}

// ---------------------------------------------------------------------------
// Live reload
// ---------------------------------------------------------------------------

/// The whole reload scenario on one datapath (`xdp_mode`: None for
/// AF_PACKET).
fn reload_scenario(prefix: &str, xdp_mode: Option<&str>) {
    let pair = NetPair::with_links(prefix, 1500, 2);
    let (t0, t1) = (pair.link(0).0.to_string(), pair.link(1).0.to_string());
    let (i0, i1) = (pair.link(0).1.to_string(), pair.link(1).1.to_string());
    let tns = pair.target_ns().to_string();
    let a = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let model_a = fill_random(&a, 1);
    let b = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let c_file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let c_other = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let d = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let e = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let dp = if xdp_mode.is_some() {
        "xdp"
    } else {
        "afpacket"
    };
    let head = format!("datapath = {dp:?}\n");
    let cfg = Scratch::new("ops-reload", "toml");
    let write_cfg = |body: &str| std::fs::write(&cfg.0, format!("{head}{body}")).unwrap();

    // v1: A (untouched throughout; O_DIRECT: on XDP its worker has a
    // bounce area, rebuilt with the rest of its disk side), B, C on link 0.
    let a_tbl = export(5, 1, &a, &[&t0], "direct = true");
    write_cfg(&format!(
        "{a_tbl}{}{}",
        export(5, 2, &b, &[&t0], ""),
        export(5, 3, &c_file, &[&t0], "config_string = \"one\"")
    ));
    let extra: Vec<&str> = match xdp_mode {
        Some(m) => vec!["--xdp-mode", m],
        None => vec![],
    };
    let mut xb = Served::start(&pair, &cfg, &extra);
    assert_eq!(xb.exports(), vec![(5, 1), (5, 2), (5, 3)]);
    if xdp_mode.is_some() {
        xb.proc.wait_for_log("AF_XDP worker serving", START_TIMEOUT);
    }

    let load = Load::start(pair.initiator_ns(), &i0, 5, 1, model_a);
    load.wait_rounds(3);
    let mut c0 = client_in(pair.initiator_ns(), &i0);
    let mut c1 = client_in(pair.initiator_ns(), &i1);
    let me0 = c0.mac();

    // v2: B removed; C changed (read-only, Mac Mask, config string; its file
    // too, which needs a restart); D added on link 1 (a new interface), E on
    // link 0 (served already).
    write_cfg(&format!(
        "{a_tbl}{}{}{}",
        export(
            5,
            3,
            &c_other,
            &[&t0],
            &format!("read_only = true\nconfig_string = \"two\"\nmac_mask = [\"{me0}\"]")
        ),
        export(5, 4, &d, &[&t1], ""),
        export(5, 5, &e, &[&t0], "")
    ));
    let t = Instant::now();
    let out = xb.reload();
    let msg = text(&out);
    // Not fully applied (C's file needs a restart): non-zero, and said.
    assert!(!out.status.success(), "partial reload exited 0: {msg}");
    eprintln!("reload v2 took {:?}: {msg}", t.elapsed());
    for want in [
        "e5.2: removed",
        "e5.4: added",
        "e5.5: added",
        "e5.3: read_only false -> true",
        "e5.3: config string set to \"two\"",
        "interface ",
        "NOT applied, needs a restart: e5.3: file ",
    ] {
        assert!(msg.contains(want), "reload output lacks {want:?}: {msg}");
    }
    assert!(
        xb.proc.log().contains("needs a restart"),
        "{}",
        xb.proc.log()
    );
    assert_eq!(xb.exports(), vec![(5, 1), (5, 3), (5, 4), (5, 5)]);
    load.wait_rounds(2);

    // Added: D on the new interface, E on the old one, both with data.
    let found = discover(&mut c1, 5, 0xff);
    assert_eq!(
        found.iter().map(|t| t.minor).collect::<Vec<_>>(),
        vec![4],
        "{found:?}"
    );
    let td = found[0].clone();
    c1.write(&td, 100, &rand_bytes(4, 8 * SECTOR_SIZE)).unwrap();
    assert_eq!(file_sectors(&d, 100, 8), rand_bytes(4, 8 * SECTOR_SIZE));
    let found = discover_at_least(&mut c0, 5, 0xff, 3);
    assert_eq!(
        found.iter().map(|t| t.minor).collect::<Vec<_>>(),
        vec![1, 3, 5],
        "B gone, E there: {found:?}"
    );
    let te = found[2].clone();
    c0.write(&te, 7, &rand_bytes(5, 4 * SECTOR_SIZE)).unwrap();
    assert_eq!(c0.read(&te, 7, 4).unwrap(), rand_bytes(5, 4 * SECTOR_SIZE));
    assert_eq!(file_sectors(&e, 7, 4), rand_bytes(5, 4 * SECTOR_SIZE));
    // Removed: B answers nothing.
    let silent = quietly(&mut c0, |c| {
        c.query_config(MacAddr::BROADCAST, 5, 2, qc::ConfigCmd::Read, &[])
    });
    assert!(
        matches!(silent, Ok(None)),
        "removed export answered: {silent:?}"
    );
    // Changed: C reads, refuses writes, shows the new string and mask; its
    // file is still the old one.
    let tc = found[1].clone();
    assert_eq!(tc.config, b"two");
    let r = c0
        .ata(&tc, 0x34, 1, 0, &[0xaa; SECTOR_SIZE])
        .expect("write to read-only C");
    assert_eq!(
        r.status() & 0x01,
        0x01,
        "write to a read-only export must fail"
    );
    c0.read(&tc, 0, 2).expect("read C");
    assert_eq!(file_sectors(&c_file, 0, 1), vec![0u8; SECTOR_SIZE]);
    let st = xb.status();
    let cst = st.exports.iter().find(|x| x.slot == 3).unwrap();
    assert_eq!(cst.mac_mask, vec![me0.to_string()]);
    assert_eq!(cst.source, path_str(&c_file), "file change not applied");
    assert!(cst.read_only);
    assert!(
        st.pending_restart.len() == 1 && st.pending_restart[0].starts_with("e5.3: file "),
        "status shows what is pending: {:?}",
        st.pending_restart
    );
    let out = xblade(&["status", "--socket", xb.socket.s()]);
    assert!(text(&out).contains("pending restart"), "{}", text(&out));

    // Quick successive reloads, E off and on again, under load.
    let good = std::fs::read_to_string(&cfg.0).unwrap();
    let e_tbl = export(5, 5, &e, &[&t0], "");
    assert!(good.contains(&e_tbl));
    let t = Instant::now();
    for k in 0..10 {
        let body = if k % 2 == 0 {
            good.replace(&e_tbl, "")
        } else {
            good.clone()
        };
        std::fs::write(&cfg.0, body).unwrap();
        let out = xb.reload();
        // C's file change stays pending: applied otherwise, exit non-zero.
        assert!(
            !out.status.success()
                && text(&out).contains("reloaded: ")
                && text(&out).contains("NOT applied"),
            "reload {k}: {}",
            text(&out)
        );
    }
    eprintln!("10 reloads (E removed, added) in {:?}", t.elapsed());
    assert_eq!(xb.exports(), vec![(5, 1), (5, 3), (5, 4), (5, 5)]);
    let te = c0.find(5, 5).expect("E back");
    assert_eq!(c0.read(&te, 7, 4).unwrap(), rand_bytes(5, 4 * SECTOR_SIZE));
    load.wait_rounds(2);

    // A bad configuration changes nothing: a syntax error, then an added
    // export whose file does not exist, then a duplicate.
    std::fs::write(&cfg.0, good.replace("slot = 4", "slot = = 4")).unwrap();
    let out = xb.reload();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("line ") && text(&out).contains("nothing changed"),
        "{}",
        text(&out)
    );
    std::fs::write(
        &cfg.0,
        format!(
            "{good}{}",
            export(5, 6, Path::new("/var/tmp/xo-no-such.img"), &[&t0], "")
        ),
    )
    .unwrap();
    let out = xb.reload();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("xo-no-such.img") && text(&out).contains("5.6"),
        "{}",
        text(&out)
    );
    std::fs::write(&cfg.0, format!("{good}{}", export(5, 1, &b, &[&t0], ""))).unwrap();
    let out = xb.reload();
    assert!(
        text(&out).contains("duplicate shelf.slot 5.1"),
        "{}",
        text(&out)
    );
    assert_eq!(xb.exports(), vec![(5, 1), (5, 3), (5, 4), (5, 5)]);
    c1.read(&td, 100, 8)
        .expect("D still serves after refused reloads");
    load.wait_rounds(2);

    // v3 by SIGHUP: D removed (link 1 left without exports: its worker
    // stops, on XDP its program detaches), C writable again.
    if xdp_mode.is_some() {
        assert!(xdp_attached(&tns, &t1));
    }
    write_cfg(&format!(
        "{a_tbl}{}{}",
        export(5, 3, &c_file, &[&t0], "config_string = \"two\""),
        export(5, 5, &e, &[&t0], "")
    ));
    xb.sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while xb.exports() != vec![(5, 1), (5, 3), (5, 5)] {
        assert!(
            Instant::now() < deadline,
            "SIGHUP reload not applied: {}",
            xb.proc.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = xb.status();
    assert_eq!(st.interfaces.len(), 1, "{:?}", st.interfaces);
    assert!(st.pending_restart.is_empty(), "{:?}", st.pending_restart);
    if xdp_mode.is_some() {
        assert!(wait_detached(&tns, &t1), "XDP program left on {t1}");
        assert!(xdp_attached(&tns, &t0));
    }
    c0.write(&tc, 9, &rand_bytes(6, 2 * SECTOR_SIZE))
        .expect("C writable again");
    assert_eq!(file_sectors(&c_file, 9, 2), rand_bytes(6, 2 * SECTOR_SIZE));
    load.wait_rounds(2);

    let r = load.finish();
    assert!(r.error.is_none(), "background I/O: {:?}", r.error);
    assert_eq!(
        r.retransmits, 0,
        "retransmissions on the untouched export across the reloads"
    );
    assert!(r.rounds >= 9, "{} rounds", r.rounds);
    xb.proc.stop();
    assert_file_is(&a, &r.model);
    eprintln!(
        "{prefix}: {} verified rounds of 64 sectors on e5.1 across 3 reloads, no retransmission",
        r.rounds
    );
}

#[test]
fn reload_live_afpacket() {
    reload_scenario("xo01", None);
}

#[test]
fn reload_live_xdp() {
    reload_scenario("xo02", Some("native"));
}

/// The packaged default: no export, xblade starts idle, stays up, and a
/// reload adds an export.
#[test]
fn idle_start_then_reload() {
    let pair = NetPair::new("xo03", 1500);
    let cfg = Scratch::new("ops-idle", "toml");
    std::fs::write(&cfg.0, "datapath = \"afpacket\"\n# nothing yet\n").unwrap();
    let mut xb = Served::start(&pair, &cfg, &[]);
    xb.proc.wait_for_log("no export configured", START_TIMEOUT);
    let st = xb.status();
    assert!(st.exports.is_empty() && st.workers.is_empty(), "{st:?}");
    assert_eq!(st.datapath, "none");
    let status_text = text(&xblade(&["status", "--socket", xb.socket.s()]));
    assert!(status_text.contains("none configured"), "{status_text}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(xb.proc.is_running());

    let f = sparse_file(SECTORS * SECTOR_SIZE as u64);
    std::fs::write(
        &cfg.0,
        format!(
            "datapath = \"afpacket\"\n{}",
            export(6, 1, &f, &[pair.target_if()], "")
        ),
    )
    .unwrap();
    let out = xb.reload();
    assert!(out.status.success(), "{}", text(&out));
    let mut c = client(&pair);
    let t = c.find(6, 1).expect("the added export answers");
    c.write(&t, 0, &rand_bytes(9, 2 * SECTOR_SIZE)).unwrap();
    assert_eq!(file_sectors(&f, 0, 2), rand_bytes(9, 2 * SECTOR_SIZE));
    let st = xb.status();
    assert_eq!(st.reloads, 1);
    assert_eq!(st.workers.len(), 1);
    assert_eq!(st.workers[0]["exports"][0], "e6.1");
    assert_eq!(st.workers[0]["datapath"], "afpacket");
}

// ---------------------------------------------------------------------------
// Online resize
// ---------------------------------------------------------------------------

fn identify_sectors(c: &mut xblade_tools::initiator::client::Client, shelf: u16, slot: u8) -> u64 {
    let t = c.find(shelf, slot).expect("find");
    c.identify(&t).expect("identify").sectors
}

fn wait_sectors(c: &mut xblade_tools::initiator::client::Client, want: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = identify_sectors(c, 7, 1);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: IDENTIFY says {n}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn resize_scenario(prefix: &str, xdp_mode: Option<&str>) {
    let pair = NetPair::new(prefix, 1500);
    let f = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let socket = Scratch::new("ops-resize", "sock");
    let mut args: Vec<&str> = vec!["--control-socket", socket.s(), "--size-check", "0"];
    match xdp_mode {
        Some(m) => args.extend(["--datapath", "xdp", "--xdp-mode", m, "-d"]),
        None => args.extend(["--datapath", "afpacket"]),
    }
    args.extend(["7", "1", pair.target_if(), path_str(&f)]);
    let mut proc = Proc::spawn_in_ns(pair.target_ns(), xblade_bin(), &args);
    proc.wait_for_log("xblade serving", START_TIMEOUT);
    let mut c = client(&pair);
    let t = c.find(7, 1).unwrap();
    assert_eq!(c.identify(&t).unwrap().sectors, SECTORS);

    // Grown on disk, not yet exported: past the old end is refused.
    let grown = SECTORS + 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(grown * SECTOR_SIZE as u64)
        .unwrap();
    let r = c.ata(&t, 0x34, 2, SECTORS + 10, &[1u8; 1024]).unwrap();
    assert_eq!((r.status(), r.error()), (0x41, 0x10), "beyond the old end");

    // xblade resize: grown and announced (an unsolicited QC reply, tag 0).
    c.set_capture(true);
    let out = xblade(&["resize", "7.1", "--socket", socket.s()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("grown from {SECTORS} to {grown} sectors")),
        "{}",
        text(&out)
    );
    let ann = c
        .wait_frame(|fr| QcReply::parse(fr).is_some_and(|q| q.header.tag() == 0))
        .unwrap()
        .expect("no announcement after the resize");
    assert!(QcReply::parse(&ann).unwrap().header.eth.dst.is_broadcast());
    c.set_capture(false);
    assert_eq!(c.identify(&t).unwrap().sectors, grown);
    let data = rand_bytes(11, 2 * SECTOR_SIZE);
    c.write(&t, grown - 2, &data).expect("write at the new end");
    assert_eq!(c.read(&t, grown - 2, 2).unwrap(), data);
    assert_eq!(file_sectors(&f, grown - 2, 2), data);

    // Shrinking is refused; the size stays.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len((grown - 1000) * SECTOR_SIZE as u64)
        .unwrap();
    let out = xblade(&["resize", "e7.1", "--socket", socket.s()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("shrank") && text(&out).contains(&format!("still exporting {grown}")),
        "{}",
        text(&out)
    );
    assert_eq!(c.identify(&t).unwrap().sectors, grown);
    // Past the store's new end a WRITE fails, as a READ does, and the file
    // does not grow back.
    let r = c.ata(&t, 0x34, 2, grown - 10, &[1u8; 1024]).unwrap();
    assert_eq!(r.status() & 0x01, 0x01, "write past the shrunk end: {r:?}");
    let r = c.ata(&t, 0x24, 2, grown - 10, &[]).unwrap();
    assert_eq!(r.status() & 0x01, 0x01, "read past the shrunk end: {r:?}");
    assert_eq!(
        std::fs::metadata(&f).unwrap().len(),
        (grown - 1000) * SECTOR_SIZE as u64,
        "a write grew the shrunk store"
    );
    c.write(&t, 8, &data).expect("write below the new end");

    // SIGHUP checks sizes too.
    let bigger = grown + 2048;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(bigger * SECTOR_SIZE as u64)
        .unwrap();
    let pid = libc::pid_t::try_from(proc.pid()).unwrap();
    // SAFETY: kill(2) touches no memory; the child is ours and running.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_sectors(&mut c, bigger, "after SIGHUP");
    let out = xblade(&["resize", "7.9", "--socket", socket.s()]);
    assert!(text(&out).contains("no export 7.9"), "{}", text(&out));
    assert!(proc.is_running());
    drop(proc);

    // The periodic check, and a fixed length (-l) that does not follow.
    let g = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let mut args: Vec<&str> = vec!["--control-socket", socket.s(), "--size-check", "1"];
    if let Some(m) = xdp_mode {
        args.extend(["--datapath", "xdp", "--xdp-mode", m]);
    } else {
        args.extend(["--datapath", "afpacket"]);
    }
    args.extend(["7", "1", pair.target_if(), path_str(&g)]);
    let mut proc = Proc::spawn_in_ns(pair.target_ns(), xblade_bin(), &args);
    proc.wait_for_log("xblade serving", START_TIMEOUT);
    assert_eq!(identify_sectors(&mut c, 7, 1), SECTORS);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&g)
        .unwrap()
        .set_len(2 * SECTORS * SECTOR_SIZE as u64)
        .unwrap();
    wait_sectors(&mut c, 2 * SECTORS, "periodic size check");
    proc.wait_for_log("grown from", START_TIMEOUT);
    drop(proc);

    let args = [
        "--datapath",
        "afpacket",
        "--control-socket",
        socket.s(),
        "-l",
        "100",
        "7",
        "1",
        pair.target_if(),
        path_str(&g),
    ];
    let mut proc = Proc::spawn_in_ns(pair.target_ns(), xblade_bin(), args);
    proc.wait_for_log("xblade serving", START_TIMEOUT);
    let out = xblade(&["resize", "7.1", "--socket", socket.s()]);
    assert!(
        !out.status.success() && text(&out).contains("fixed"),
        "{}",
        text(&out)
    );
    assert_eq!(identify_sectors(&mut c, 7, 1), 100);
}

#[test]
fn resize_online_afpacket() {
    resize_scenario("xo04", None);
}

#[test]
fn resize_online_xdp() {
    resize_scenario("xo05", Some("native"));
}

// ---------------------------------------------------------------------------
// systemd notification protocol
// ---------------------------------------------------------------------------

#[test]
fn systemd_ready_watchdog_stopping() {
    let pair = NetPair::new("xo06", 1500);
    let f = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let sock_path = Scratch::new("ops-notify", "sock");
    let rx = UnixDatagram::bind(&sock_path.0).expect("bind notify socket");
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = common::ns_command(pair.target_ns(), xblade_bin());
    cmd.env("NOTIFY_SOCKET", &sock_path.0)
        .env("WATCHDOG_USEC", "400000")
        .args([
            "--datapath",
            "afpacket",
            "--control-socket",
            "none",
            "8",
            "1",
            pair.target_if(),
            path_str(&f),
        ]);
    let mut proc = Proc::spawn(cmd, "xblade-notify");
    let mut msgs = Vec::new();
    let mut buf = [0u8; 512];
    let t0 = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); got {msgs:?}\n{}", proc.log()));
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m == "WATCHDOG=1" {
            pings += 1;
        }
        msgs.push(m);
    }
    assert!(
        msgs[0].starts_with("READY=1\nSTATUS=serving 1 export(s)"),
        "{msgs:?}"
    );
    // 3 pings at 200 ms each, never before READY.
    assert!(t0.elapsed() < Duration::from_secs(3), "{msgs:?}");
    proc.terminate();
    loop {
        let n = rx.recv(&mut buf).expect("STOPPING=1");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
    assert!(proc.wait_timeout(Duration::from_secs(5)).is_some());
}

// ---------------------------------------------------------------------------
// Migration from vblade
// ---------------------------------------------------------------------------

#[test]
fn import_vblade_then_serve() {
    let pair = NetPair::new("xo07", 1500);
    let dir = Scratch::new("ops-vblade", "d");
    std::fs::create_dir_all(&dir.0).unwrap();
    let f1 = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let model = fill_random(&f1, 21);
    let f2: TempPath = sparse_file(2 * SECTORS * SECTOR_SIZE as u64);
    let tif = pair.target_if();
    // Files as the Debian vblade package writes them (vbladed reads them).
    std::fs::write(
        dir.0.join("disk1.conf"),
        format!(
            "shelf=11\nslot=1\nnetif={tif}\nfilename={}\noptions='-r -b 16'\n",
            path_str(&f1)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.0.join("disk2.conf"),
        format!(
            "# second disk\nshelf=11\nslot=2\nnetif={tif}\nfilename=\"{}\"\noptions='-o 1024 -m 02:00:00:00:00:01'\n",
            path_str(&f2)
        ),
    )
    .unwrap();
    let cfg = Scratch::new("ops-imported", "toml");
    let out = xblade(&["import-vblade", "--dir", dir.s(), "-o", cfg.s()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 export(s)"), "{}", text(&out));
    let out = xblade(&["check-config", cfg.s()]);
    assert!(out.status.success(), "{}", text(&out));

    let xb = Served::start(&pair, &cfg, &["--datapath", "afpacket"]);
    let mut c = client(&pair);
    let found = discover_at_least(&mut c, 11, 0xff, 2);
    assert_eq!(
        found
            .iter()
            .map(|t| (t.minor, t.bufcnt))
            .collect::<Vec<_>>(),
        vec![(1, 16), (2, 64)],
        "{found:?}"
    );
    // 11.1: read-only, the file's content.
    let t1 = &found[0];
    assert_eq!(c.identify(t1).unwrap().sectors, SECTORS);
    assert_eq!(
        c.read(t1, 5, 4).unwrap(),
        model[5 * SECTOR_SIZE..9 * SECTOR_SIZE]
    );
    let r = c.ata(t1, 0x34, 1, 0, &[0u8; SECTOR_SIZE]).unwrap();
    assert_eq!(r.status() & 1, 1, "read-only (-r) imported");
    // 11.2: offset 1024 sectors, Mac Mask of another MAC: discovery works,
    // ATA from us is dropped (the mask was imported).
    let t2 = &found[1];
    let st = xb.status();
    let e2 = st.exports.iter().find(|e| e.slot == 2).unwrap();
    assert_eq!(e2.sectors, 2 * SECTORS - 1024);
    assert_eq!(e2.offset, 1024);
    assert_eq!(e2.mac_mask, vec!["02:00:00:00:00:01".to_string()]);
    let denied = quietly(&mut c, |c| c.identify(t2));
    assert!(denied.is_err(), "the imported Mac Mask must keep us out");
}
