//! Helpers of the reliability tests (`tests/reliability_*.rs`, issue 7), on
//! top of `tests/common`, `tests/aoe_support` and `tests/xdp_support`:
//!
//! - [`Lan`]: one Ethernet segment (a bridge in a "switch" namespace) with
//!   several hosts, each a namespace with one veth into the bridge, so a
//!   target, a well-behaved initiator and a hostile host are three
//!   different machines as far as the target can tell;
//! - [`Xb`]: the real binary started in a namespace with a control socket,
//!   its counters (`xblade stats --json`), RSS and descriptor count;
//! - [`Region`] and [`round`]: verified pipelined I/O against an in-memory
//!   model of the disk (every read compared, every acknowledged write
//!   applied to the model);
//! - the long-form switch: `XBLADE_LONG=1` selects the long forms.
//!
//! Namespaces are named `{prefix}-s` and `{prefix}-h{k}`, prefixes `xy` +
//! digits, unique per test; dropping the [`Lan`] deletes them.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aoe_wire::{MacAddr, SECTOR_SIZE};
use xblade::control::Status;
use xblade_tools::initiator::client::{Client, ClientError, IoRequest, Target};

use crate::aoe_support::{client_in, START_TIMEOUT};
use crate::common::{require_root, xblade_bin, Proc};

// ---------------------------------------------------------------------------
// Long forms
// ---------------------------------------------------------------------------

/// True when the long forms were asked for (`XBLADE_LONG=1`).
pub fn long() -> bool {
    std::env::var("XBLADE_LONG").is_ok_and(|v| v == "1")
}

/// `short` normally, `long` with `XBLADE_LONG=1`; `var` (seconds or a count)
/// overrides both.
pub fn pick(var: &str, short: u64, long_form: u64) -> u64 {
    if let Some(v) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
        return v;
    }
    if long() {
        long_form
    } else {
        short
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Run `program args` in namespace `ns`, returning stdout (must succeed).
pub fn in_ns_ok(ns: &str, program: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run_ok("ip", &all)
}

// ---------------------------------------------------------------------------
// A LAN: hosts on one bridge
// ---------------------------------------------------------------------------

/// One host of a [`Lan`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace.
    pub ns: String,
    /// Its interface into the LAN.
    pub ifname: String,
    /// The interface's MAC.
    pub mac: MacAddr,
}

/// Hosts `0..n` on one bridge. Host 0 is where the tests run the target.
#[derive(Debug)]
pub struct Lan {
    switch_ns: String,
    /// The hosts.
    pub hosts: Vec<Host>,
}

/// MAC of host `k` of a LAN: locally administered, fixed.
pub fn host_mac(k: usize) -> MacAddr {
    MacAddr([0x02, 0x78, 0x79, 0, 0, k as u8 + 1])
}

impl Lan {
    /// `n` hosts (2..=9) with interfaces of MTU `mtu` on one bridge.
    pub fn new(prefix: &str, mtu: u32, n: usize) -> Lan {
        require_root();
        assert!(
            prefix.starts_with("xy") && prefix.len() <= 10 && (2..=9).contains(&n),
            "bad LAN {prefix} of {n} hosts"
        );
        let lan = Lan {
            switch_ns: format!("{prefix}-s"),
            hosts: (0..n)
                .map(|k| Host {
                    ns: format!("{prefix}-h{k}"),
                    ifname: format!("{prefix}h{k}"),
                    mac: host_mac(k),
                })
                .collect(),
        };
        // A panic from here on drops `lan`, which deletes what exists.
        lan.delete();
        let m = mtu.to_string();
        let mut all_ns = vec![lan.switch_ns.clone()];
        all_ns.extend(lan.hosts.iter().map(|h| h.ns.clone()));
        for ns in &all_ns {
            run_ok("ip", &["netns", "add", ns]);
            run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
            if Path::new("/proc/sys/net/ipv6").exists() {
                in_ns_ok(
                    ns,
                    "sysctl",
                    &[
                        "-q",
                        "-w",
                        "net.ipv6.conf.default.disable_ipv6=1",
                        "net.ipv6.conf.all.disable_ipv6=1",
                    ],
                );
            }
        }
        let s = lan.switch_ns.as_str();
        #[rustfmt::skip]
        run_ok("ip", &["-n", s, "link", "add", "br0", "type", "bridge",
                       "stp_state", "0", "mcast_snooping", "0"]);
        for (k, h) in lan.hosts.iter().enumerate() {
            let port = format!("{prefix}s{k}");
            let mac = h.mac.to_string();
            #[rustfmt::skip]
            run_ok("ip", &[
                "link", "add", "name", &h.ifname, "netns", &h.ns, "address", &mac, "mtu", &m,
                "type", "veth", "peer", "name", &port, "netns", s, "mtu", &m,
            ]);
            run_ok("ip", &["-n", s, "link", "set", &port, "master", "br0"]);
            run_ok("ip", &["-n", s, "link", "set", &port, "up"]);
            run_ok("ip", &["-n", &h.ns, "link", "set", &h.ifname, "up"]);
        }
        run_ok("ip", &["-n", s, "link", "set", "br0", "mtu", &m, "up"]);
        lan.wait_up(Duration::from_secs(5));
        lan
    }

    fn wait_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.hosts.iter().all(|h| {
                run_ok("ip", &["-n", &h.ns, "-o", "link", "show", "dev", &h.ifname])
                    .contains("LOWER_UP")
            });
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "LAN links did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn delete(&self) {
        for ns in std::iter::once(&self.switch_ns).chain(self.hosts.iter().map(|h| &h.ns)) {
            if ns_exists(ns) {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }

    /// A client on host `k`.
    pub fn client(&self, k: usize) -> Client {
        let h = &self.hosts[k];
        client_in(&h.ns, &h.ifname)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.delete();
    }
}

// ---------------------------------------------------------------------------
// The target
// ---------------------------------------------------------------------------

/// A running xblade with a control socket.
pub struct Xb {
    /// The process.
    pub proc: Proc,
    /// Its control socket.
    pub socket: PathBuf,
    /// The config file, if any (deleted on drop).
    pub config: Option<PathBuf>,
}

impl Drop for Xb {
    fn drop(&mut self) {
        self.proc.stop();
        let _ = fs::remove_file(&self.socket);
        if let Some(c) = &self.config {
            let _ = fs::remove_file(c);
        }
    }
}

fn unique(stem: &str, ext: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "xblade-{stem}-{}-{}.{ext}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// `--datapath` arguments for a datapath name: "afpacket", "native", "skb".
pub fn datapath_args(dp: &str) -> Vec<&'static str> {
    match dp {
        "afpacket" => vec!["--datapath", "afpacket"],
        "native" => vec!["--datapath", "xdp", "--xdp-mode", "native"],
        "skb" => vec!["--datapath", "xdp", "--xdp-mode", "skb"],
        other => panic!("unknown datapath {other}"),
    }
}

impl Xb {
    /// Start `xblade DATAPATH-ARGS --control-socket S ARGS...` in `ns`.
    pub fn start(ns: &str, dp: &str, args: &[&str]) -> Xb {
        Xb::start_with(ns, dp, args, None)
    }

    /// Start `xblade serve --config FILE` with `toml` as the file.
    pub fn serve(ns: &str, dp: &str, toml: &str) -> Xb {
        let cfg = unique("cfg", "toml");
        fs::write(&cfg, toml).expect("write config");
        let c = cfg.to_str().expect("utf-8").to_string();
        Xb::start_with(ns, dp, &["serve", "--config", &c], Some(cfg))
    }

    fn start_with(ns: &str, dp: &str, args: &[&str], config: Option<PathBuf>) -> Xb {
        let socket = unique("ctl", "sock");
        let sock = socket.to_str().expect("utf-8").to_string();
        let mut all: Vec<&str> = Vec::new();
        // `serve` must come first; the run options follow it.
        let (head, rest) = if args.first() == Some(&"serve") {
            (&args[..1], &args[1..])
        } else {
            (&args[..0], args)
        };
        all.extend_from_slice(head);
        all.extend(datapath_args(dp));
        all.extend(["--control-socket", &sock]);
        all.extend_from_slice(rest);
        let mut proc = Proc::spawn_in_ns(ns, xblade_bin(), &all);
        proc.wait_for_log("xblade serving", START_TIMEOUT);
        if dp != "afpacket" {
            proc.wait_for_log("AF_XDP worker serving", START_TIMEOUT);
        }
        let xb = Xb {
            proc,
            socket,
            config,
        };
        // The control socket is up once `status` answers.
        let deadline = Instant::now() + START_TIMEOUT;
        while xblade::control::query(&xb.socket).is_err() {
            assert!(Instant::now() < deadline, "control socket never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        xb
    }

    /// Pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Status over the control socket (counters are published every
    /// 250 ms).
    pub fn status(&self) -> Status {
        xblade::control::query(&self.socket)
            .unwrap_or_else(|e| panic!("query {}: {e}\n{}", self.socket.display(), self.proc.log()))
    }

    /// Counters summed over workers, after the next publication.
    pub fn counters(&self) -> Counters {
        std::thread::sleep(Duration::from_millis(400));
        Counters::from_status(&self.status())
    }

    /// VmRSS in KiB.
    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }

    /// Open descriptors, settled: the least of three counts 5 ms apart
    /// (the target opens sysfs files for a few microseconds now and then,
    /// and every control-socket query is a connection; a leak persists).
    pub fn fds(&self) -> usize {
        (0..3)
            .map(|i| {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                fd_count(self.pid())
            })
            .min()
            .expect("three counts")
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        assert!(
            self.proc.is_running(),
            "target already gone:\n{}",
            self.proc.log()
        );
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) on our own child, not yet reaped (is_running just
        // said so), so the pid cannot have been reused.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let st = self
            .proc
            .wait_timeout(Duration::from_secs(10))
            .expect("killed target exits");
        assert!(!st.success());
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Number of open descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// Counters of every worker, summed, by the names `xblade stats --json` uses.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// The whole JSON of worker 0 (for the report).
    pub raw: Vec<serde_json::Value>,
    /// Top-level worker counters (rx_frames ...) and engine counters.
    pub vals: std::collections::BTreeMap<String, u64>,
}

impl Counters {
    /// Sum the workers of a status.
    pub fn from_status(st: &Status) -> Counters {
        let mut c = Counters {
            raw: st.workers.clone(),
            ..Default::default()
        };
        for w in &st.workers {
            let mut add = |k: String, v: u64| *c.vals.entry(k).or_default() += v;
            for (k, v) in w.as_object().into_iter().flatten() {
                if let Some(n) = v.as_u64() {
                    add(k.clone(), n);
                }
            }
            for (k, v) in w["engine"].as_object().into_iter().flatten() {
                if let Some(n) = v.as_u64() {
                    add(format!("engine.{k}"), n);
                }
            }
            if let Some(d) = w["engine"]["drops"].as_array() {
                for (r, v) in xblade::engine::DropReason::ALL.iter().zip(d) {
                    add(format!("drop.{}", r.name()), v.as_u64().unwrap_or(0));
                }
            }
            for (k, v) in w["xdp"].as_object().into_iter().flatten() {
                if let Some(n) = v.as_u64() {
                    add(format!("xdp.{k}"), n);
                }
            }
        }
        c
    }

    /// One counter (0 when absent).
    pub fn get(&self, k: &str) -> u64 {
        self.vals.get(k).copied().unwrap_or(0)
    }

    /// `self - before`, counter by counter.
    pub fn since(&self, before: &Counters) -> Counters {
        let mut c = self.clone();
        for (k, v) in c.vals.iter_mut() {
            *v = v.saturating_sub(before.get(k));
        }
        c
    }

    /// The non-zero counters, one `name value` per line.
    pub fn report(&self) -> String {
        self.vals
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| format!("  {k:<28} {v}\n"))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// XDP leftovers
// ---------------------------------------------------------------------------

/// AF_XDP sockets open in namespace `ns` (`ss -a --xdp`).
pub fn xdp_sockets(ns: &str) -> usize {
    let out = in_ns_ok(ns, "ss", &["-a", "-n", "--xdp"]);
    out.lines()
        .skip(1) // header
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Wait up to 3 s until no AF_XDP socket is left in `ns`; the count left.
pub fn wait_no_xdp_sockets(ns: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = xdp_sockets(ns);
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// xorshift64*: deterministic per seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator; seed 0 is replaced.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fill `b` with random bytes.
    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

// ---------------------------------------------------------------------------
// Verified I/O
// ---------------------------------------------------------------------------

/// A range of sectors of one export and what it must hold.
pub struct Region {
    /// The export.
    pub target: Target,
    /// First sector.
    pub lo: u64,
    /// One past the last sector.
    pub hi: u64,
    /// Expected content of sectors `lo..hi`.
    pub model: Vec<u8>,
}

impl Region {
    /// A region whose expected content is `model`.
    pub fn new(target: Target, lo: u64, model: Vec<u8>) -> Region {
        let hi = lo + (model.len() / SECTOR_SIZE) as u64;
        Region {
            target,
            lo,
            hi,
            model,
        }
    }

    /// Expected bytes of `n` sectors at `lba`.
    pub fn expected(&self, lba: u64, n: u64) -> &[u8] {
        let a = (lba - self.lo) as usize * SECTOR_SIZE;
        &self.model[a..a + n as usize * SECTOR_SIZE]
    }
}

/// What verified I/O did.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// READ requests completed (and compared).
    pub reads: u64,
    /// WRITE requests acknowledged.
    pub writes: u64,
    /// Sectors moved.
    pub sectors: u64,
    /// Reads whose data differed from the model.
    pub mismatches: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// The first mismatch, described.
    pub first_mismatch: Option<String>,
}

impl Tally {
    /// Add another tally.
    pub fn add(&mut self, o: &Tally) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.sectors += o.sectors;
        self.mismatches += o.mismatches;
        self.retransmits += o.retransmits;
        if self.first_mismatch.is_none() {
            self.first_mismatch = o.first_mismatch.clone();
        }
    }
}

/// One planned request.
#[derive(Debug, Clone)]
pub struct Planned {
    /// First sector.
    pub lba: u64,
    /// Sectors.
    pub sectors: u8,
    /// Write payload, or `None` for a read.
    pub data: Option<Vec<u8>>,
}

/// `batch` requests at distinct, non-overlapping places of `r` (so their
/// order of execution does not matter), reads or writes of 1..=`max`
/// sectors, about `write_pct`% writes.
pub fn plan(r: &Region, rng: &mut Rng, batch: usize, max: u8, write_pct: u64) -> Vec<Planned> {
    let max = u64::from(max.max(1));
    let slots = (r.hi - r.lo) / max;
    let batch = batch.min(slots as usize);
    let mut used = HashSet::with_capacity(batch);
    let mut out = Vec::with_capacity(batch);
    while out.len() < batch {
        let s = rng.below(slots);
        if !used.insert(s) {
            continue;
        }
        let n = 1 + rng.below(max);
        let lba = r.lo + s * max + rng.below(max - n + 1);
        let data = (rng.below(100) < write_pct).then(|| {
            let mut d = vec![0u8; n as usize * SECTOR_SIZE];
            rng.fill(&mut d);
            d
        });
        out.push(Planned {
            lba,
            sectors: n as u8,
            data,
        });
    }
    out
}

/// Run `reqs` with `window` in flight; compare every read with the model,
/// then apply the writes (all acknowledged when this returns `Ok`).
pub fn run_planned(
    c: &mut Client,
    r: &mut Region,
    reqs: &[Planned],
    window: usize,
    tally: &mut Tally,
) -> Result<(), ClientError> {
    let io: Vec<IoRequest<'_>> = reqs
        .iter()
        .map(|p| IoRequest {
            lba: p.lba,
            sectors: p.sectors,
            write: p.data.as_deref(),
        })
        .collect();
    let mut mism = 0u64;
    let mut first = None;
    let region = &*r;
    let st = c.run_window(&region.target, &io, window, |i, data| {
        let p = &reqs[i];
        if p.data.is_none() && data != region.expected(p.lba, u64::from(p.sectors)) {
            mism += 1;
            if first.is_none() {
                first = Some(format!(
                    "READ of {} sectors at LBA {} of {}.{} differs from the model",
                    p.sectors, p.lba, region.target.major, region.target.minor
                ));
            }
        }
    })?;
    tally.retransmits += st.retransmits;
    tally.mismatches += mism;
    if tally.first_mismatch.is_none() {
        tally.first_mismatch = first;
    }
    for p in reqs {
        tally.sectors += u64::from(p.sectors);
        match &p.data {
            Some(d) => {
                tally.writes += 1;
                let a = (p.lba - r.lo) as usize * SECTOR_SIZE;
                r.model[a..a + d.len()].copy_from_slice(d);
            }
            None => tally.reads += 1,
        }
    }
    Ok(())
}

/// One round of verified I/O: [`plan`] then [`run_planned`].
pub fn round(
    c: &mut Client,
    r: &mut Region,
    rng: &mut Rng,
    batch: usize,
    window: usize,
    tally: &mut Tally,
) -> Result<(), ClientError> {
    let max = c.sectors_per_request(&r.target);
    let reqs = plan(r, rng, batch, max, 50);
    run_planned(c, r, &reqs, window, tally)
}

/// Read the whole region through the target with `window` in flight and
/// count sectors differing from the model (first one described).
pub fn verify_all(c: &mut Client, r: &Region, window: usize) -> (u64, Option<String>) {
    let got = c
        .read_window(&r.target, r.lo, r.hi - r.lo, window)
        .unwrap_or_else(|e| panic!("full read of {}.{}: {e}", r.target.major, r.target.minor));
    let mut bad = 0;
    let mut first = None;
    for (i, (a, b)) in got
        .chunks(SECTOR_SIZE)
        .zip(r.model.chunks(SECTOR_SIZE))
        .enumerate()
    {
        if a != b {
            bad += 1;
            if first.is_none() {
                first = Some(format!(
                    "sector {} of {}.{}",
                    r.lo + i as u64,
                    r.target.major,
                    r.target.minor
                ));
            }
        }
    }
    (bad, first)
}

/// A client tuned for a loaded link: short per-try timeout, many retries
/// (a lost frame costs one timeout; only a target that stops answering for
/// `timeout * (retries + 1)` fails the run).
pub fn patient(mut c: Client, timeout: Duration, retries: u32) -> Client {
    c.set_timeout(timeout);
    c.set_retries(retries);
    c
}

/// Discover `major.minor` from `c` (broadcast QC), retrying for a while.
pub fn find(c: &mut Client, major: u16, minor: u8) -> Target {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.find(major, minor) {
            Ok(t) => return t,
            Err(e) if Instant::now() < deadline => {
                eprintln!("find {major}.{minor}: {e}; retrying");
            }
            Err(e) => panic!("find {major}.{minor}: {e}"),
        }
    }
}

/// `path` as &str.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
