//! Operations that survive real life (issue 23, points 1-3), on the real
//! binary between network namespaces:
//!
//! - duplicate shelf.slot: a second target for a shelf.slot already served
//!   on the link is refused (the vblade form exits naming the MAC that
//!   answered; `serve` sets that pair aside and serves the rest), the first
//!   keeps serving, and a duplicate answer seen while serving is counted;
//! - an interface deleted and recreated: its workers stop, `status` says
//!   "waiting for IF", and it serves again within 15 s, no restart;
//! - partial start: an export with a missing file and one on a missing
//!   interface are set aside while the others serve, and both serve once
//!   they appear; `--all-or-nothing` refuses to start instead.
//!
//! AF_PACKET and XDP where the datapath matters. Prefixes (unique across
//! all integration tests): xn01..xn09.

mod aoe_support;
mod common;
mod xdp_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aoe_support::*;
use aoe_wire::{MacAddr, SECTOR_SIZE};
use common::{sparse_file, xblade_bin, NetPair, PacketSocket, Proc};
use xblade::control::Status;
use xblade_tools::initiator::client::Client;
use xdp_support::xdp_attached;

const SECTORS: u64 = 2048; // 1 MiB backing files

/// A temp path (not created) removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(stem: &str, ext: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        Scratch(std::env::temp_dir().join(format!(
            "xn-{stem}-{}-{}.{ext}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }
    fn s(&self) -> &str {
        self.0.to_str().expect("utf-8 temp dir")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One `[[export]]` table.
fn export(shelf: u16, slot: u8, file: &Path, ifs: &[&str]) -> String {
    let ifs: Vec<String> = ifs.iter().map(|i| format!("{i:?}")).collect();
    format!(
        "[[export]]\nshelf = {shelf}\nslot = {slot}\nfile = {:?}\ninterfaces = [{}]\n",
        file.to_str().expect("utf-8 path"),
        ifs.join(", ")
    )
}

/// A running `xblade serve --config` in namespace `ns`.
struct Served {
    proc: Proc,
    socket: Scratch,
    _cfg: Scratch,
}

impl Served {
    fn start(ns: &str, datapath: &str, body: &str, extra: &[&str]) -> Served {
        let cfg = Scratch::new("cfg", "toml");
        std::fs::write(&cfg.0, format!("datapath = {datapath:?}\n{body}")).unwrap();
        let socket = Scratch::new("ctl", "sock");
        let mut args = vec!["serve", "--config", cfg.s(), "--control-socket", socket.s()];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn_in_ns(ns, xblade_bin(), &args);
        proc.wait_for_log("xblade serving", START_TIMEOUT);
        Served {
            proc,
            socket,
            _cfg: cfg,
        }
    }

    fn status(&self) -> Status {
        xblade::control::query(&self.socket.0)
            .unwrap_or_else(|e| panic!("status: {e}\n{}", self.proc.log()))
    }

    /// Wait up to `limit` for `ok(status)`; the last status on timeout.
    fn wait_status(&self, limit: Duration, what: &str, ok: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.status();
            if ok(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; status {st:#?}\nlog:\n{}",
                self.proc.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn mac_str(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

fn dp_args(xdp: bool) -> (&'static str, Vec<&'static str>) {
    if xdp {
        ("xdp", vec!["--xdp-mode", "native"])
    } else {
        ("afpacket", vec![])
    }
}

/// Write a pattern to `shelf.slot` through `c`, read it back, find it in
/// `file`.
fn io_round_trip(c: &mut Client, shelf: u16, slot: u8, file: &Path, seed: u64) {
    let t = c
        .find(shelf, slot)
        .unwrap_or_else(|e| panic!("find {shelf}.{slot}: {e}"));
    let data = rand_bytes(seed, 8 * SECTOR_SIZE);
    c.write(&t, 16, &data)
        .unwrap_or_else(|e| panic!("write {shelf}.{slot}: {e}"));
    let back = c
        .read(&t, 16, 8)
        .unwrap_or_else(|e| panic!("read {shelf}.{slot}: {e}"));
    assert_eq!(back, data, "{shelf}.{slot}: read back differs");
    assert_eq!(
        file_sectors(file, 16, 8),
        data,
        "{shelf}.{slot}: not in the file"
    );
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A veth `t` (in `tns`) <-> `i` (in `ins`), both up.
fn add_veth(tns: &str, t: &str, ins: &str, i: &str) {
    #[rustfmt::skip]
    ip(&["link", "add", "name", t, "netns", tns, "type", "veth", "peer", "name", i, "netns", ins]);
    ip(&["-n", tns, "link", "set", t, "up"]);
    ip(&["-n", ins, "link", "set", i, "up"]);
}

/// Target interface, initiator interface, target and initiator namespaces.
fn names(pair: &NetPair) -> [String; 4] {
    [
        pair.target_if(),
        pair.initiator_if(),
        pair.target_ns(),
        pair.initiator_ns(),
    ]
    .map(String::from)
}

// ---------------------------------------------------------------------------

fn duplicate_scenario(prefix: &str, xdp: bool) {
    let pair = NetPair::new(prefix, 1500);
    let (t, i) = (
        pair.target_if().to_string(),
        pair.initiator_if().to_string(),
    );
    let (dp, extra) = dp_args(xdp);
    let a = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let first = Served::start(pair.target_ns(), dp, &export(1, 1, &a, &[&t]), &extra);
    let target_mac = mac_str(pair.target_mac());

    // The vblade form on the other end of the link, same shelf.slot: it
    // refuses to start and names the MAC that answered.
    let b = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let bs = b.to_str().unwrap().to_string();
    let mut second = Proc::spawn_in_ns(
        pair.initiator_ns(),
        xblade_bin(),
        ["--datapath", "afpacket", "1", "1", i.as_str(), bs.as_str()],
    );
    let st = second
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the duplicate target did not exit:\n{}", second.log()));
    assert!(!st.success(), "the duplicate started:\n{}", second.log());
    let log = second.log();
    assert!(
        log.contains("another target already answers") && log.contains(&target_mac),
        "the refusal does not name the MAC {target_mac}:\n{log}"
    );

    // `serve` there: the duplicate pair is set aside, the other export
    // serves, and status says why.
    let b2 = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let body = format!("{}{}", export(1, 1, &b, &[&i]), export(1, 2, &b2, &[&i]));
    let partial = Served::start(pair.initiator_ns(), "afpacket", &body, &[]);
    let st = partial.status();
    let served: Vec<(u16, u8, Vec<String>)> = st
        .exports
        .iter()
        .map(|e| (e.shelf, e.slot, e.interfaces.clone()))
        .collect();
    assert!(
        served.contains(&(1, 2, vec![i.clone()])) && served.contains(&(1, 1, vec![])),
        "{st:#?}"
    );
    let dup = st
        .not_serving
        .iter()
        .find(|n| n.kind == "duplicate")
        .unwrap_or_else(|| panic!("no duplicate in status: {st:#?}"));
    assert_eq!(dup.name, format!("e1.1 on {i}"));
    assert!(dup.reason.contains(&target_mac), "{dup:?}");
    drop(partial);

    // Its own announcements and the probes it answered are no duplicate.
    let st = first.status();
    assert!(st.duplicates.is_empty(), "{:?}", st.duplicates);
    // While serving, an answer for 1.1 from another MAC is counted.
    let s = PacketSocket::open_in(pair.initiator_ns(), &i, 0x88a2).expect("raw socket");
    let mut payload = vec![0x18, 0, 0, 1, 1, 1, 9, 9, 9, 9];
    payload.resize(46, 0);
    let frame = common::eth_frame([0xff; 6], s.mac(), 0x88a2, &payload);
    s.send(&frame).expect("send the forged response");
    let initiator_mac = mac_str(pair.initiator_mac());
    let st = first.wait_status(Duration::from_secs(5), "duplicate counted", |st| {
        st.duplicates.iter().any(|d| d.count >= 1)
    });
    let d = &st.duplicates[0];
    assert_eq!(
        (d.iface.as_str(), d.shelf, d.slot, d.mac.as_str()),
        (t.as_str(), 1, 1, initiator_mac.as_str())
    );
    assert!(
        first.proc.log().contains("duplicate target"),
        "not logged:\n{}",
        first.proc.log()
    );

    // The first target serves on, its own disk.
    let mut c = client(&pair);
    io_round_trip(&mut c, 1, 1, &a, 11);
}

#[test]
fn duplicate_refused_afpacket() {
    duplicate_scenario("xn01", false);
}

#[test]
fn duplicate_refused_xdp() {
    duplicate_scenario("xn02", true);
}

// ---------------------------------------------------------------------------

fn recreated_scenario(prefix: &str, xdp: bool) {
    let pair = NetPair::new(prefix, 1500);
    let [t, i, tns, ins] = names(&pair);
    let (dp, extra) = dp_args(xdp);
    let a = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let mut xb = Served::start(&tns, dp, &export(2, 1, &a, &[&t]), &extra);
    let pid = xb.proc.pid();
    {
        let mut c = client(&pair);
        io_round_trip(&mut c, 2, 1, &a, 21);
    }

    ip(&["-n", &tns, "link", "del", &t]);
    let st = xb.wait_status(Duration::from_secs(10), "waiting for the interface", |st| {
        st.interfaces.is_empty()
            && st.workers.is_empty()
            && st
                .not_serving
                .iter()
                .any(|n| n.kind == "interface" && n.reason.contains(&format!("waiting for {t}")))
    });
    assert_eq!(st.exports.len(), 1, "{st:#?}");
    assert!(xb.proc.is_running(), "{}", xb.proc.log());

    let back = Instant::now();
    add_veth(&tns, &t, &ins, &i);
    xb.wait_status(Duration::from_secs(15), "serving again", |st| {
        st.interfaces.iter().any(|f| f.name == t) && st.not_serving.is_empty()
    });
    if xdp {
        assert!(xdp_attached(&tns, &t), "XDP not attached again");
    }
    let mut c = client(&pair);
    io_round_trip(&mut c, 2, 1, &a, 22);
    let took = back.elapsed();
    eprintln!("{prefix}: interface recreated, serving again (verified I/O) after {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "serving again took {took:?}"
    );
    assert!(xb.proc.is_running(), "{}", xb.proc.log());
    assert_eq!(xb.proc.pid(), pid);
    let log = xb.proc.log();
    assert!(log.contains(&format!("interface {t} is back")), "{log}");
}

#[test]
fn interface_recreated_afpacket() {
    recreated_scenario("xn03", false);
}

#[test]
fn interface_recreated_xdp() {
    recreated_scenario("xn04", true);
}

// ---------------------------------------------------------------------------

#[test]
fn partial_start_then_served() {
    let pair = NetPair::new("xn05", 1500);
    let [t, i, tns, ins] = names(&pair);
    let (t1, i1) = (format!("{t}1"), format!("{i}1"));
    let good = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let late = Scratch::new("late", "img");
    let other = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let body = format!(
        "{}{}{}",
        export(3, 1, &good, &[&t]),
        export(3, 2, &late.0, &[&t]),
        export(3, 3, &other, &[&t1])
    );

    // Strict: no start at all, the first problem (interfaces are looked
    // up before stores are opened) named.
    let cfg = Scratch::new("strict", "toml");
    std::fs::write(&cfg.0, format!("datapath = \"afpacket\"\n{body}")).unwrap();
    let mut strict = Proc::spawn_in_ns(
        &tns,
        xblade_bin(),
        ["serve", "--config", cfg.s(), "--all-or-nothing"],
    );
    let st = strict
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("--all-or-nothing started:\n{}", strict.log()));
    assert!(!st.success());
    assert!(
        strict
            .log()
            .contains(&format!("unknown network interface \"{t1}\"")),
        "{}",
        strict.log()
    );

    let xb = Served::start(&tns, "afpacket", &body, &[]);
    let st = xb.status();
    let keys: Vec<(u16, u8)> = st.exports.iter().map(|e| (e.shelf, e.slot)).collect();
    assert_eq!(keys, vec![(3, 1), (3, 3)], "{st:#?}");
    let find = |kind: &str, name: &str| {
        st.not_serving
            .iter()
            .find(|n| n.kind == kind && n.name == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {st:#?}"))
            .clone()
    };
    assert!(find("export", "e3.2").reason.contains(late.s()));
    assert!(find("interface", &t1)
        .reason
        .contains(&format!("waiting for {t1}")));
    let mut c = client(&pair);
    io_round_trip(&mut c, 3, 1, &good, 31);

    // Both appear: served without a reload.
    std::fs::File::create(&late.0)
        .and_then(|f| f.set_len(SECTORS * SECTOR_SIZE as u64))
        .expect("create the late file");
    add_veth(&tns, &t1, &ins, &i1);
    xb.wait_status(Duration::from_secs(20), "both served", |st| {
        st.not_serving.is_empty()
            && st.exports.len() == 3
            && st.interfaces.iter().any(|f| f.name == t1)
    });
    io_round_trip(&mut c, 3, 2, &late.0, 32);
    let mut c1 = client_in(&ins, &i1);
    io_round_trip(&mut c1, 3, 3, &other, 33);
}
