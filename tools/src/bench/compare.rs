//! `xblade bench compare`: the side-by-side comparison.
//!
//! It builds its own link (namespaces `xbc-t` and `xbc-i`, veth `xbct` <->
//! `xbci`), makes two backing files in `--dir` (one left in the page cache,
//! one served with O_DIRECT `-d`), and then, for each MTU block, starts each
//! target in turn pinned to the target core and runs `xblade bench` cells
//! pinned to the bench core:
//!
//! | target | how it is started |
//! |---|---|
//! | vblade | `vblade -b 64 [-d] 1 1 xbct FILE` |
//! | xblade afpacket | `xblade --datapath afpacket [-d] [--writeback] ...` |
//! | xblade xdp native / skb | `xblade --datapath xdp --xdp-mode native/skb ...` (n/a if it does not start) |
//! | xblade null | `xblade ... null:1G` (the datapath alone) |
//!
//! Workloads: 1 KiB reads and writes at MTU 1500 and 8 KiB reads at MTU
//! 9000, each at window 1 (latency) and 64 (throughput). vblade gets
//! `-b 64` so that both sides advertise the same window. vblade
//! acknowledges writes from the page cache, xblade only once they are on
//! stable storage unless `--writeback`: write rows are run both ways and
//! labelled.
//!
//! With `--loadgen PATH` the independent load generator
//! (benches/loadgen/loadgen.rs) is run on 1 KiB reads at window 64 against
//! vblade and xblade afpacket (every datapath with `--full`), alternating
//! with `xblade bench` runs of the same workload (`--check-runs` each), and
//! the medians are compared: they should agree within 10 %. Those runs last
//! at least two seconds each.
//!
//! Output: one table with ratios to vblade (stdout and `OUT/compare.txt`),
//! `OUT/compare.json`, `OUT/compare.svg`, and each cell's bench JSON in
//! `OUT/cells/`. Everything it creates is removed at the end, including on
//! Ctrl-C; it only ever signals processes it started itself.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::report::{thousands, BenchReport};
use super::{parse_bytes, parse_duration};

/// Shortest run of the loadgen cross-check.
const CHECK_MIN: Duration = Duration::from_secs(2);

const NS_T: &str = "xbc-t";
const NS_I: &str = "xbc-i";
const IF_T: &str = "xbct";
const IF_I: &str = "xbci";

/// Options of `xblade bench compare`.
#[derive(Debug, Args, Clone)]
pub struct CompareArgs {
    /// Directory for compare.json, compare.svg, compare.txt and cells/.
    #[arg(long, value_name = "DIR", default_value = "target/bench-compare")]
    pub out: PathBuf,
    /// Measured time of each cell.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub cell: Duration,
    /// Warm-up of each cell (not measured).
    #[arg(long, value_name = "DUR", default_value = "300ms", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The vblade binary.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/vblade")]
    pub vblade: PathBuf,
    /// The independent load generator (benches/loadgen); without it the
    /// cross-check is skipped.
    #[arg(long, value_name = "PATH")]
    pub loadgen: Option<PathBuf>,
    /// Runs of loadgen (and of the bench) in the cross-check; their
    /// medians are compared.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub check_runs: usize,
    /// Target core and bench core.
    #[arg(long, value_name = "TARGET,BENCH", value_delimiter = ',', default_values_t = [1usize, 0])]
    pub cores: Vec<usize>,
    /// Size of each backing file.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_bytes)]
    pub size: usize,
    /// Where the backing files go (a real file system, for O_DIRECT).
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Every combination: every workload on O_DIRECT and null too.
    #[arg(long)]
    pub full: bool,
}

/// Implementations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impl {
    /// /usr/sbin/vblade.
    Vblade,
    /// xblade --datapath afpacket.
    XbladeAfpacket,
    /// xblade --datapath xdp --xdp-mode native.
    XbladeXdpNative,
    /// xblade --datapath xdp --xdp-mode skb.
    XbladeXdpSkb,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Vblade => "vblade",
            Impl::XbladeAfpacket => "xblade afpacket",
            Impl::XbladeXdpNative => "xblade xdp native",
            Impl::XbladeXdpSkb => "xblade xdp skb",
        }
    }
}

/// Backing stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// A file whose pages are in the page cache.
    PageCache,
    /// A file opened with O_DIRECT (`-d`).
    Direct,
    /// xblade's `null:1G`.
    Null,
    /// xblade `--xdp-reflect` on `null:1G`: no engine, no disk; the
    /// datapath's ceiling.
    Reflect,
}

impl Backing {
    fn name(self) -> &'static str {
        match self {
            Backing::PageCache => "page cache",
            Backing::Direct => "O_DIRECT",
            Backing::Null => "null",
            Backing::Reflect => "reflect",
        }
    }
}

/// One target configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TargetCfg {
    /// Implementation.
    pub imp: Impl,
    /// Backing store.
    pub backing: Backing,
    /// xblade `--writeback` (acknowledge writes from the page cache).
    pub writeback: bool,
}

impl TargetCfg {
    /// The implementation's name.
    pub fn imp_name(&self) -> &'static str {
        self.imp.name()
    }

    /// Row label: implementation, plus the write policy on write rows.
    pub fn label(&self, write: bool) -> String {
        let mut s = self.imp.name().to_string();
        if write && self.backing != Backing::Null {
            s.push_str(match (self.imp, self.writeback) {
                (Impl::Vblade, _) => " (page-cache ack)",
                (_, true) => " --writeback",
                (_, false) => " (durable)",
            });
        }
        s
    }
}

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Short name.
    pub name: &'static str,
    /// Reads (else writes).
    pub read: bool,
    /// Bytes per request.
    pub bytes: usize,
    /// Link MTU.
    pub mtu: u32,
    /// Requests in flight.
    pub window: usize,
}

const WORKLOADS: [Workload; 6] = [
    Workload {
        name: "1K read w1",
        read: true,
        bytes: 1024,
        mtu: 1500,
        window: 1,
    },
    Workload {
        name: "1K read w64",
        read: true,
        bytes: 1024,
        mtu: 1500,
        window: 64,
    },
    Workload {
        name: "1K write w1",
        read: false,
        bytes: 1024,
        mtu: 1500,
        window: 1,
    },
    Workload {
        name: "1K write w64",
        read: false,
        bytes: 1024,
        mtu: 1500,
        window: 64,
    },
    Workload {
        name: "8K read w1 (MTU 9000)",
        read: true,
        bytes: 8192,
        mtu: 9000,
        window: 1,
    },
    Workload {
        name: "8K read w64 (MTU 9000)",
        read: true,
        bytes: 8192,
        mtu: 9000,
        window: 64,
    },
];

/// Outcome of one cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured.
    Ok,
    /// Measured, but the target answered some requests with errors.
    Errors,
    /// Not available in this binary or on this link (reason given).
    NotAvailable,
    /// The bench failed (reason given).
    Failed,
}

/// One (target, workload) measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Workload.
    pub workload: Workload,
    /// Target.
    pub target: TargetCfg,
    /// Row label.
    pub label: String,
    /// Outcome.
    pub status: Status,
    /// Why n/a or failed.
    pub reason: Option<String>,
    /// XDP attach mode xblade reported, when XDP.
    pub xdp_mode: Option<String>,
    /// The bench's report.
    pub report: Option<BenchReport>,
    /// requests/s divided by vblade's on the same workload and backing
    /// (page cache for null).
    pub ratio_rps: Option<f64>,
    /// Target CPU ns per request divided by vblade's (below 1: cheaper).
    pub ratio_cpu: Option<f64>,
    /// Target CPU ns per request divided by the same datapath's reflect
    /// row on the same workload: the cost of the engine and the disk over
    /// the datapath's ceiling.
    #[serde(default)]
    pub ratio_ceiling: Option<f64>,
}

impl Cell {
    /// requests/s, when measured.
    pub fn rps(&self) -> Option<f64> {
        self.report.as_ref().map(|r| r.requests_per_s)
    }

    /// Target CPU ns per request, when measured.
    pub fn target_ns(&self) -> Option<f64> {
        self.report
            .as_ref()
            .and_then(|r| r.target_cpu.as_ref())
            .map(|t| t.cpu.ns_per_request)
            .filter(|&v| v > 0.0)
    }
}

/// The independent cross-check of one target: loadgen and `xblade bench`
/// alternate (bench, loadgen, bench, loadgen, ...) so that both see the
/// same drift in the machine's load, and the medians are compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadgenCheck {
    /// Target label.
    pub target: String,
    /// Workload.
    pub workload: String,
    /// Measured seconds of each run.
    pub run_s: f64,
    /// loadgen's requests/s, per run.
    pub loadgen_rps: Vec<f64>,
    /// loadgen's own summary lines (stale replies, resends).
    pub loadgen_output: Vec<String>,
    /// `xblade bench` requests/s, per run.
    pub bench_rps: Vec<f64>,
    /// (median bench - median loadgen) / median loadgen, percent.
    pub diff_pct: f64,
    /// |diff| <= 10 %.
    pub within_10pct: bool,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Facts about the machine, for the reader.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Machine {
    /// uname -r.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// /proc/loadavg at the start.
    pub loadavg_start: String,
    /// /proc/loadavg at the end.
    pub loadavg_end: String,
    /// Target core, bench core.
    pub cores: Vec<usize>,
    /// vblade binary.
    pub vblade: String,
    /// File system of the backing files.
    pub backing_dir: String,
}

/// The `compare.json` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompareReport {
    /// Machine notes.
    pub machine: Machine,
    /// Measured seconds per cell.
    pub cell_s: f64,
    /// Warm-up per cell.
    pub warmup_s: f64,
    /// Every cell.
    pub cells: Vec<Cell>,
    /// The loadgen cross-check.
    pub loadgen: Vec<LoadgenCheck>,
    /// Wall time of the whole comparison.
    pub elapsed_s: f64,
}

// ------------------------------------------------------------------------
// Processes and the link
// ------------------------------------------------------------------------

/// `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// The two namespaces and the veth pair; deleted on drop.
struct Link;

impl Link {
    fn create() -> Result<Link> {
        Link::remove();
        let link = Link;
        for ns in [NS_T, NS_I] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // No IPv6 chatter on the link.
            let _ = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        #[rustfmt::skip]
        ip(&["link", "add", "name", IF_T, "netns", NS_T, "type", "veth",
             "peer", "name", IF_I, "netns", NS_I])?;
        ip(&["-n", NS_T, "link", "set", IF_T, "up"])?;
        ip(&["-n", NS_I, "link", "set", IF_I, "up"])?;
        Ok(link)
    }

    fn set_mtu(&self, mtu: u32) -> Result<()> {
        let m = mtu.to_string();
        ip(&["-n", NS_T, "link", "set", "dev", IF_T, "mtu", &m])?;
        ip(&["-n", NS_I, "link", "set", "dev", IF_I, "mtu", &m])?;
        // Carrier comes back within milliseconds; give it a moment.
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }

    fn remove() {
        for ns in [NS_T, NS_I] {
            if ns_exists(ns) {
                let _ = ip(&["netns", "del", ns]);
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        Link::remove();
    }
}

/// A process we started in a namespace, pinned to a core; stopped (this
/// pid only) on drop, and killed by the kernel if we die first.
struct Child {
    child: std::process::Child,
    log: PathBuf,
    exited: bool,
}

impl Child {
    fn spawn(ns: &str, core: usize, argv: &[String], log: &Path) -> Result<Child> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "taskset", "-c", &core.to_string()])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: runs in the forked child before exec; prctl, setsid,
        // open, write and close are async-signal-safe system calls and
        // nothing is allocated (the path and value are static).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Each target and bench in a session (an autogroup) of its
                // own, ahead of other sessions: without it, on a machine
                // busy with other work, the scheduler gave the whole
                // comparison one session's share of each core and the
                // cells measured that share, not the datapaths
                // (docs/bench/writeback-amd-2026-12-03.txt). Best effort.
                libc::setsid();
                let fd = libc::open(c"/proc/self/autogroup".as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    let v = b"-19";
                    libc::write(fd, v.as_ptr().cast(), v.len());
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", argv.join(" ")))?;
        Ok(Child {
            child,
            log: log.to_path_buf(),
            exited: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        if self.exited {
            return false;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            self.exited = true;
        }
        !self.exited
    }

    /// Wait until the log holds `needle`; Err with the log's last lines
    /// when the process exits first or `timeout` passes.
    fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if !self.running() {
                return Err(last_error_line(&self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("not serving after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&mut self, sig: libc::c_int) {
        if self.running() {
            // SAFETY: kill(2) on our own unreaped child: the pid cannot
            // have been reused.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.running() {
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

fn last_error_line(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("error") || l.contains("ERROR"))
        .or_else(|| log.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("exited without a message");
    // Drop the log timestamp and level, keep the message.
    let line = line
        .split_once(" ERROR ")
        .map(|(_, m)| m)
        .unwrap_or(line)
        .trim();
    line.chars().take(200).collect()
}

// ------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------

struct Runner<'a> {
    args: &'a CompareArgs,
    exe: PathBuf,
    out: PathBuf,
    page_file: PathBuf,
    direct_file: PathBuf,
    control_socket: PathBuf,
    target_core: usize,
    bench_core: usize,
    stop: Arc<AtomicBool>,
    started: Instant,
    done: usize,
    total: usize,
}

/// Temp files removed on drop.
struct Files(Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = fs::remove_file(f);
        }
    }
}

/// The cells to run, in order: (config, workloads).
fn plan(full: bool) -> Vec<(TargetCfg, Vec<Workload>)> {
    let all: Vec<Workload> = WORKLOADS.to_vec();
    let writes: Vec<Workload> = WORKLOADS.iter().copied().filter(|w| !w.read).collect();
    let direct: Vec<Workload> = if full {
        all.clone()
    } else {
        WORKLOADS
            .iter()
            .copied()
            .filter(|w| w.window == 64)
            .collect()
    };
    let null: Vec<Workload> = if full {
        all.clone()
    } else {
        WORKLOADS
            .iter()
            .copied()
            .filter(|w| w.read && (w.window == 64 || w.mtu == 1500))
            .collect()
    };
    let cfg = |imp, backing, writeback| TargetCfg {
        imp,
        backing,
        writeback,
    };
    use Backing::*;
    use Impl::*;
    let mut p = Vec::new();
    for imp in [Vblade, XbladeAfpacket, XbladeXdpNative, XbladeXdpSkb] {
        p.push((cfg(imp, PageCache, false), all.clone()));
        if imp != Vblade {
            p.push((cfg(imp, PageCache, true), writes.clone()));
        }
    }
    let direct_impls: &[Impl] = if full {
        &[Vblade, XbladeAfpacket, XbladeXdpNative, XbladeXdpSkb]
    } else {
        &[Vblade, XbladeAfpacket, XbladeXdpNative]
    };
    for &imp in direct_impls {
        p.push((cfg(imp, Direct, false), direct.clone()));
    }
    let null_impls: &[Impl] = if full {
        &[XbladeAfpacket, XbladeXdpNative, XbladeXdpSkb]
    } else {
        &[XbladeAfpacket, XbladeXdpNative]
    };
    for &imp in null_impls {
        p.push((cfg(imp, Null, false), null.clone()));
    }
    // The ceiling of each XDP mode, and its null row to compare with.
    let reads64: Vec<Workload> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| w.read && w.window == 64)
        .collect();
    if !full {
        p.push((cfg(XbladeXdpSkb, Null, false), reads64.clone()));
    }
    for imp in [XbladeXdpNative, XbladeXdpSkb] {
        p.push((cfg(imp, Reflect, false), reads64.clone()));
    }
    p
}

/// Entry point.
pub fn run(a: &CompareArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "xblade bench compare must run as root: it creates network namespaces and raw sockets"
        );
    }
    if a.cores.len() != 2 {
        bail!("--cores TARGET,BENCH: two core numbers");
    }
    let exe = crate::daemon_beside()?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone());

    let out = a.out.clone();
    fs::create_dir_all(out.join("cells")).with_context(|| format!("creating {}", out.display()))?;
    let has_vblade = a.vblade.exists();
    let machine_start = Machine {
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        cpu: fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        loadavg_start: read_trim("/proc/loadavg"),
        loadavg_end: String::new(),
        cores: a.cores.clone(),
        vblade: a.vblade.display().to_string(),
        backing_dir: a.dir.display().to_string(),
    };

    // Backing files: one written through the page cache (and left there),
    // one for O_DIRECT.
    let pid = std::process::id();
    let page_file = a.dir.join(format!("xbc-pagecache-{pid}.img"));
    let direct_file = a.dir.join(format!("xbc-direct-{pid}.img"));
    let control_socket = std::env::temp_dir().join(format!("xbc-control-{pid}.sock"));
    let _files = Files(vec![
        page_file.clone(),
        direct_file.clone(),
        control_socket.clone(),
    ]);
    eprintln!(
        "compare: writing two {} MiB backing files in {}",
        a.size >> 20,
        a.dir.display()
    );
    make_file(&page_file, a.size, false)?;
    make_file(&direct_file, a.size, true)?;

    let link = Link::create()?;
    let mut r = Runner {
        args: a,
        exe,
        out: out.clone(),
        page_file,
        direct_file,
        control_socket,
        target_core: a.cores[0],
        bench_core: a.cores[1],
        stop: stop.clone(),
        started,
        done: 0,
        total: 0,
    };
    let plan = plan(a.full);
    r.total = plan.iter().map(|(_, w)| w.len()).sum();
    let mut cells = Vec::with_capacity(r.total);
    let mut checks = Vec::new();
    for mtu in [1500u32, 9000] {
        link.set_mtu(mtu)?;
        for (cfg, wls) in &plan {
            let wls: Vec<Workload> = wls.iter().copied().filter(|w| w.mtu == mtu).collect();
            if wls.is_empty() {
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            r.run_target(*cfg, &wls, has_vblade, &mut cells, &mut checks)?;
        }
    }
    drop(link);
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    add_ratios(&mut cells);
    let mut machine = machine_start;
    machine.loadavg_end = read_trim("/proc/loadavg");
    let report = CompareReport {
        machine,
        cell_s: a.cell.as_secs_f64(),
        warmup_s: a.warmup.as_secs_f64(),
        cells,
        loadgen: checks,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let table = render(&report);
    print!("{table}");
    fs::write(out.join("compare.txt"), &table)?;
    fs::write(
        out.join("compare.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    super::chart::write_svg(&report, &out.join("compare.svg"))?;
    eprintln!(
        "compare: done in {:.0} s; wrote {}/compare.{{txt,json,svg}}",
        report.elapsed_s,
        out.display()
    );
    Ok(())
}

fn read_trim(p: &str) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Write `size` bytes of non-zero data and sync them; for the O_DIRECT file,
/// also drop them from the page cache (the other stays cached, clean).
fn make_file(path: &Path, size: usize, drop_cache: bool) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut block = vec![0u8; 1 << 20];
    super::pattern::fill(&mut block, 0, 0xfeed);
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        f.write_all(&block[..n])?;
        left -= n;
    }
    // On disk before anything is measured: background writeback of fresh
    // dirty pages stalls a target's reads for hundreds of milliseconds.
    f.sync_all()?;
    if drop_cache {
        use std::os::fd::AsRawFd;
        // SAFETY: advisory call on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

impl Runner<'_> {
    fn target_argv(&self, cfg: &TargetCfg) -> Vec<String> {
        let file = match cfg.backing {
            Backing::PageCache => self.page_file.display().to_string(),
            Backing::Direct => self.direct_file.display().to_string(),
            Backing::Null | Backing::Reflect => "null:1G".to_string(),
        };
        let mut v: Vec<String> = Vec::new();
        match cfg.imp {
            Impl::Vblade => {
                v.push(self.args.vblade.display().to_string());
                v.extend(["-b".into(), "64".into()]);
            }
            imp => {
                v.push(self.exe.display().to_string());
                let dp: &[&str] = match imp {
                    Impl::XbladeAfpacket => &["--datapath", "afpacket"],
                    Impl::XbladeXdpNative => &["--datapath", "xdp", "--xdp-mode", "native"],
                    _ => &["--datapath", "xdp", "--xdp-mode", "skb"],
                };
                v.extend(dp.iter().map(|s| s.to_string()));
                // Its own control socket, removed with the run's files (the
                // default would go to /run/xblade).
                v.extend([
                    "--cores".into(),
                    self.target_core.to_string(),
                    "--control-socket".into(),
                    self.control_socket.display().to_string(),
                    "-b".into(),
                    "64".into(),
                ]);
                if cfg.writeback {
                    v.push("--writeback".into());
                }
                if cfg.backing == Backing::Reflect {
                    v.push("--xdp-reflect".into());
                }
                if imp != Impl::XbladeAfpacket
                    && matches!(cfg.backing, Backing::Null | Backing::Reflect)
                {
                    // These rows measure CPU per reply: a worker polling
                    // while it waits for the bench would count idle time.
                    v.extend(["--spin-us".into(), "0".into()]);
                }
            }
        }
        if cfg.backing == Backing::Direct {
            v.push("-d".into());
        }
        v.extend(["1".into(), "1".into(), IF_T.into(), file]);
        v
    }

    fn progress(&mut self, wl: &Workload, label: &str, backing: Backing, what: &str) {
        self.done += 1;
        eprintln!(
            "compare: [{:>2}/{} {:>5.0} s] {:<24} {:<34} {:<10} {what}",
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64(),
            wl.name,
            label,
            backing.name()
        );
    }

    fn run_target(
        &mut self,
        cfg: TargetCfg,
        wls: &[Workload],
        has_vblade: bool,
        cells: &mut Vec<Cell>,
        checks: &mut Vec<LoadgenCheck>,
    ) -> Result<()> {
        let slug = format!(
            "{}-{}{}-mtu{}",
            cfg.imp.name().replace(' ', "_"),
            cfg.backing.name().replace([' ', '_'], "").to_lowercase(),
            if cfg.writeback { "-writeback" } else { "" },
            wls[0].mtu
        );
        let na = |reason: String, cells: &mut Vec<Cell>, me: &mut Self| {
            for wl in wls {
                me.progress(
                    wl,
                    &cfg.label(!wl.read),
                    cfg.backing,
                    &format!("n/a: {reason}"),
                );
                cells.push(Cell {
                    workload: *wl,
                    target: cfg,
                    label: cfg.label(!wl.read),
                    status: Status::NotAvailable,
                    reason: Some(reason.clone()),
                    xdp_mode: None,
                    report: None,
                    ratio_rps: None,
                    ratio_cpu: None,
                    ratio_ceiling: None,
                });
            }
        };
        if cfg.imp == Impl::Vblade && !has_vblade {
            na(
                format!("{} not installed", self.args.vblade.display()),
                cells,
                self,
            );
            return Ok(());
        }
        let log = self.out.join("cells").join(format!("{slug}.log"));
        let argv = self.target_argv(&cfg);
        let mut target = Child::spawn(NS_T, self.target_core, &argv, &log)?;
        let ready = match cfg.imp {
            // vblade says nothing useful on start (its stdout is block
            // buffered); the bench's discovery retries for two seconds.
            Impl::Vblade => {
                std::thread::sleep(Duration::from_millis(200));
                if target.running() {
                    Ok(())
                } else {
                    Err(last_error_line(&target.log()))
                }
            }
            _ => target.wait_log("xblade serving", Duration::from_secs(15)),
        };
        if let Err(reason) = ready {
            drop(target);
            na(reason, cells, self);
            return Ok(());
        }
        let xdp_mode = matches!(cfg.imp, Impl::XbladeXdpNative | Impl::XbladeXdpSkb)
            .then(|| attach_mode(&target.log()))
            .flatten();
        for wl in wls {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let label = cfg.label(!wl.read);
            let name = format!(
                "{slug}-{}",
                wl.name
                    .split(' ')
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("_")
                    .to_lowercase()
            );
            let json = self.out.join("cells").join(format!("{name}.json"));
            let res = self.bench(&target, wl, &json, self.args.cell);
            if !target.running() {
                let reason = format!("target exited: {}", last_error_line(&target.log()));
                self.progress(wl, &label, cfg.backing, &format!("FAILED: {reason}"));
                cells.push(Cell {
                    workload: *wl,
                    target: cfg,
                    label,
                    status: Status::Failed,
                    reason: Some(reason),
                    xdp_mode: xdp_mode.clone(),
                    report: None,
                    ratio_rps: None,
                    ratio_cpu: None,
                    ratio_ceiling: None,
                });
                continue;
            }
            let (status, reason, report) = match res {
                Ok(r) if r.errors == 0 => (Status::Ok, None, Some(r)),
                Ok(r) => (
                    Status::Errors,
                    Some(format!("{} error replies", r.errors)),
                    Some(r),
                ),
                Err(e) => (Status::Failed, Some(e), None),
            };
            let what = match (&report, &reason) {
                (Some(r), _) => format!(
                    "{:>9} req/s  target {:>6} ns/req{}",
                    thousands(r.requests_per_s.round() as u64),
                    r.target_cpu
                        .as_ref()
                        .map(|t| thousands(t.cpu.ns_per_request.round() as u64))
                        .unwrap_or_else(|| "-".into()),
                    reason
                        .as_ref()
                        .map(|s| format!("  ({s})"))
                        .unwrap_or_default()
                ),
                (None, Some(e)) => format!("FAILED: {e}"),
                _ => String::new(),
            };
            self.progress(wl, &label, cfg.backing, &what);
            // The independent cross-check, at window 64 on 1 KiB reads.
            if wl.name == "1K read w64"
                && cfg.backing == Backing::PageCache
                && !cfg.writeback
                && (matches!(cfg.imp, Impl::Vblade | Impl::XbladeAfpacket) || self.args.full)
            {
                if let (Some(lg), Some(r)) = (&self.args.loadgen, &report) {
                    match self.loadgen_check(&target, wl, lg, r.requests_per_s, &label) {
                        Ok(c) => {
                            eprintln!(
                                "compare:        cross-check {label}: loadgen {} req/s, bench {} req/s: {:+.1} %{}",
                                runs(&c.loadgen_rps),
                                runs(&c.bench_rps),
                                c.diff_pct,
                                if c.within_10pct { "" } else { "  (more than 10 % apart)" }
                            );
                            checks.push(c);
                        }
                        Err(e) => {
                            eprintln!("compare:        loadgen cross-check {label} failed: {e}")
                        }
                    }
                }
            }
            cells.push(Cell {
                workload: *wl,
                target: cfg,
                label,
                status,
                reason,
                xdp_mode: xdp_mode.clone(),
                report,
                ratio_rps: None,
                ratio_cpu: None,
                ratio_ceiling: None,
            });
        }
        drop(target);
        Ok(())
    }

    /// One `xblade bench` run in the initiator namespace.
    fn bench(
        &self,
        target: &Child,
        wl: &Workload,
        json: &Path,
        duration: Duration,
    ) -> Result<BenchReport, String> {
        let _ = fs::remove_file(json);
        let argv: Vec<String> = vec![
            self.exe.display().to_string(),
            "bench".into(),
            "--iface".into(),
            IF_I.into(),
            "--target".into(),
            "1.1".into(),
            "--op".into(),
            if wl.read { "read" } else { "write" }.into(),
            "--bytes".into(),
            wl.bytes.to_string(),
            "--window".into(),
            wl.window.to_string(),
            "--duration".into(),
            format!("{}ms", duration.as_millis()),
            "--warmup".into(),
            format!("{}ms", self.args.warmup.as_millis()),
            "--cores".into(),
            self.bench_core.to_string(),
            "--target-pid".into(),
            target.pid().to_string(),
            "--timeout".into(),
            "1000".into(),
            "--retries".into(),
            "3".into(),
            // Spin rather than sleep: on veth the receive of each reply runs
            // on the target's core, and waking a sleeping bench there costs
            // the target about 10% (a wakeup per reply); a real NIC bills
            // that to the initiator's machine.
            "--busy-poll".into(),
            "--quiet".into(),
            "--json".into(),
            json.display().to_string(),
        ];
        let limit = duration + self.args.warmup + Duration::from_secs(30);
        let (ok, stderr) = run_bounded(NS_I, self.bench_core, &argv, limit)?;
        match fs::read(json) {
            Ok(b) => serde_json::from_slice::<BenchReport>(&b).map_err(|e| e.to_string()),
            Err(_) if !ok => Err(stderr),
            Err(e) => Err(format!("no JSON from the bench: {e}")),
        }
    }

    fn loadgen_check(
        &self,
        target: &Child,
        wl: &Workload,
        loadgen: &Path,
        first_rps: f64,
        label: &str,
    ) -> Result<LoadgenCheck, String> {
        // Runs of at least two seconds: the machine's load drifts, and
        // longer runs average more of it out.
        let dur = self.args.cell.max(CHECK_MIN);
        let secs = dur.as_secs_f64();
        let argv: Vec<String> = vec![
            loadgen.display().to_string(),
            IF_I.into(),
            "1.1".into(),
            wl.window.to_string(),
            (wl.bytes / 512).to_string(),
            format!("{secs}"),
            format!("{}", self.args.warmup.as_secs_f64()),
            // The same LBA range as the bench: the whole backing file.
            (self.args.size >> 20).max(1).to_string(),
            // Spinning, headers only: as the bench runs.
            "1".into(),
        ];
        let limit = dur + self.args.warmup + Duration::from_secs(30);
        let runs = self.args.check_runs.max(1);
        let mut loadgen_rps = Vec::with_capacity(runs);
        let mut loadgen_output = Vec::with_capacity(runs);
        // The matrix cell counts as the first bench run when it was as long.
        let mut bench_rps = Vec::with_capacity(runs);
        if self.args.cell >= dur {
            bench_rps.push(first_rps);
        }
        for k in 0..runs {
            if bench_rps.len() <= k {
                let json = self
                    .out
                    .join("cells")
                    .join(format!("check-{}-{k}.json", label.replace(' ', "_")));
                bench_rps.push(self.bench(target, wl, &json, dur)?.requests_per_s);
            }
            let (ok, out) = run_bounded(NS_I, self.bench_core, &argv, limit)?;
            if !ok {
                return Err(out);
            }
            let line = out
                .lines()
                .find(|l| l.starts_with("loadgen:"))
                .unwrap_or_default()
                .to_string();
            let rps: f64 = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("requests_per_s="))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("unexpected loadgen output: {out}"))?;
            loadgen_rps.push(rps);
            loadgen_output.push(line);
        }
        let (b, l) = (median(&bench_rps), median(&loadgen_rps));
        let diff_pct = if l > 0.0 {
            (b - l) / l * 100.0
        } else {
            f64::INFINITY
        };
        Ok(LoadgenCheck {
            target: label.to_string(),
            workload: wl.name.to_string(),
            run_s: secs,
            loadgen_rps,
            loadgen_output,
            bench_rps,
            diff_pct,
            within_10pct: diff_pct.abs() <= 10.0,
        })
    }
}

/// Run `argv` in `ns` on `core`, killed after `limit`; (success, output).
fn run_bounded(
    ns: &str,
    core: usize,
    argv: &[String],
    limit: Duration,
) -> Result<(bool, String), String> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let log = std::env::temp_dir().join(format!(
        "xbc-run-{}-{}.log",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut c = Child::spawn(ns, core, argv, &log).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + limit;
    while c.running() {
        if Instant::now() > deadline {
            c.stop();
            let _ = fs::remove_file(&log);
            return Err(format!("{} did not finish within {limit:?}", argv[0]));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = c.child.wait().map(|s| s.success()).unwrap_or(false);
    let text = c.log();
    let _ = fs::remove_file(&log);
    let msg = if ok {
        text
    } else {
        let l = last_error_line(&text);
        l.trim_start_matches("xblade: error: ").to_string()
    };
    Ok((ok, msg))
}

/// The mode xblade logged when attaching XDP (`mode=native` ...).
fn attach_mode(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains("datapath: XDP") || l.contains("XDP program attached"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("mode="))
                .map(|m| m.trim_matches('"').to_string())
        })
}

/// Fill in the ratios to vblade: same workload and backing (page cache
/// for null).
pub fn add_ratios(cells: &mut [Cell]) {
    let refs: Vec<(Workload, Backing, Option<f64>, Option<f64>)> = cells
        .iter()
        .filter(|c| c.target.imp == Impl::Vblade && c.report.is_some())
        .map(|c| (c.workload, c.target.backing, c.rps(), c.target_ns()))
        .collect();
    for c in cells.iter_mut() {
        let want = if matches!(c.target.backing, Backing::Null | Backing::Reflect) {
            Backing::PageCache
        } else {
            c.target.backing
        };
        let Some(&(_, _, rps, ns)) = refs
            .iter()
            .find(|(w, b, _, _)| w.name == c.workload.name && *b == want)
        else {
            continue;
        };
        c.ratio_rps = quotient(c.rps(), rps);
        c.ratio_cpu = quotient(c.target_ns(), ns);
    }
    let ceilings: Vec<(Workload, Impl, Option<f64>)> = cells
        .iter()
        .filter(|c| c.target.backing == Backing::Reflect && c.report.is_some())
        .map(|c| (c.workload, c.target.imp, c.target_ns()))
        .collect();
    for c in cells.iter_mut() {
        if c.target.writeback {
            continue;
        }
        let Some(&(_, _, ns)) = ceilings
            .iter()
            .find(|(w, i, _)| w.name == c.workload.name && *i == c.target.imp)
        else {
            continue;
        };
        c.ratio_ceiling = quotient(c.target_ns(), ns);
    }
}

/// `x / v` when both were measured and `v` is positive.
fn quotient(x: Option<f64>, v: Option<f64>) -> Option<f64> {
    match (x, v) {
        (Some(x), Some(v)) if v > 0.0 => Some(x / v),
        _ => None,
    }
}

fn runs(v: &[f64]) -> String {
    v.iter()
        .map(|x| thousands(x.round() as u64))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn ratio(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

/// The comparison table.
pub fn render(r: &CompareReport) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "xblade bench compare: {} cells of {:.1} s (+{:.1} s warm-up); target on core {}, bench on core {}",
        r.cells.len(),
        r.cell_s,
        r.warmup_s,
        m.cores.first().copied().unwrap_or(1),
        m.cores.get(1).copied().unwrap_or(0)
    );
    let _ = writeln!(
        s,
        "machine: kernel {}, {} x {}, load average {} at start, {} at end",
        m.kernel, m.cpus, m.cpu, m.loadavg_start, m.loadavg_end
    );
    let _ = writeln!(
        s,
        "veth pair between two namespaces; vblade -b 64; ratios are to vblade on the same workload and backing (null: page cache); CPU x < 1 is cheaper"
    );
    let _ = writeln!(
        s,
        "bench: AF_PACKET, spinning (--busy-poll), reply headers only (no --verify), qdisc bypassed; the same for every target"
    );
    let _ = writeln!(
        s,
        "xblade XDP workers poll {} µs before sleeping (default --spin-us), except on null and reflect rows (--spin-us 0: their CPU is request work only)",
        crate::net::xdp::DEFAULT_SPIN_US
    );
    let _ = writeln!(s);
    let head = format!(
        "{:<24} {:<34} {:<10} {:>9} {:>7} {:>8} {:>8} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "workload",
        "target",
        "backing",
        "req/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "tgt ns/req",
        "bench ns/r",
        "x req/s",
        "x CPU",
        "x ceil"
    );
    let _ = writeln!(s, "{head}");
    let _ = writeln!(s, "{}", "-".repeat(head.chars().count()));
    for wl in WORKLOADS {
        let mut first = true;
        for c in r.cells.iter().filter(|c| c.workload.name == wl.name) {
            let name = if first { wl.name } else { "" };
            first = false;
            let mut label = c.label.clone();
            if let Some(m) = &c.xdp_mode {
                if !label.contains(m.as_str()) {
                    let _ = write!(label, " [{m}]");
                }
            }
            match (&c.report, &c.status) {
                (Some(b), _) => {
                    let _ = writeln!(
                        s,
                        "{:<24} {:<34} {:<10} {:>9} {:>7.1} {:>8.0} {:>8.0} {:>10} {:>10} {:>8} {:>8} {:>8}{}",
                        name,
                        label,
                        c.target.backing.name(),
                        thousands(b.requests_per_s.round() as u64),
                        b.mb_per_s,
                        b.latency_us.p50,
                        b.latency_us.p99,
                        c.target_ns()
                            .map(|v| thousands(v.round() as u64))
                            .unwrap_or_else(|| "-".into()),
                        thousands(b.initiator_cpu.ns_per_request.round() as u64),
                        ratio(c.ratio_rps),
                        ratio(c.ratio_cpu),
                        ratio(c.ratio_ceiling),
                        if c.status == Status::Errors {
                            format!("  ! {} errors", b.errors)
                        } else {
                            String::new()
                        }
                    );
                }
                (None, st) => {
                    let _ = writeln!(
                        s,
                        "{:<24} {:<34} {:<10} {:>9}   {}",
                        name,
                        label,
                        c.target.backing.name(),
                        if *st == Status::NotAvailable {
                            "n/a"
                        } else {
                            "FAILED"
                        },
                        c.reason.clone().unwrap_or_default()
                    );
                }
            }
        }
    }
    if !r.loadgen.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "independent check (benches/loadgen vs xblade bench, alternating runs of {:.1} s, 1 KiB reads, window 64, MTU 1500; medians compared)",
            r.loadgen[0].run_s
        );
        for c in &r.loadgen {
            let _ = writeln!(
                s,
                "  {:<18} loadgen {:>27} req/s   bench {:>27} req/s   median {:+6.1} %  {}",
                c.target,
                runs(&c.loadgen_rps),
                runs(&c.bench_rps),
                c.diff_pct,
                if c.within_10pct {
                    "within 10 %"
                } else {
                    "NOT within 10 %"
                }
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "write rows: vblade acknowledges from the page cache; xblade (durable) acknowledges once the write is on stable storage (O_DSYNC with O_DIRECT, group-commit fdatasync through the page cache); xblade --writeback like vblade"
    );
    let _ = writeln!(
        s,
        "CPU: utime+stime from /proc/PID/stat (10 ms ticks) over the measured window; on veth the receive softirq of each frame runs on the sender's core, so part of each side's kernel work is billed to the other"
    );
    let _ = writeln!(s, "total time {:.0} s", r.elapsed_s);
    s
}

/// A made-up report over the whole default plan, for tests of the table
/// and the chart.
#[cfg(test)]
pub(crate) fn sample_report() -> CompareReport {
    use super::report::{CpuUse, TargetCpu};
    let mut cells = Vec::new();
    for (i, (cfg, wls)) in plan(false).into_iter().enumerate() {
        for (j, wl) in wls.into_iter().enumerate() {
            let rps = 1000.0 * (1 + i + 3 * j) as f64 * if wl.window == 64 { 20.0 } else { 1.0 };
            cells.push(Cell {
                workload: wl,
                target: cfg,
                label: cfg.label(!wl.read),
                status: Status::Ok,
                reason: None,
                xdp_mode: None,
                report: Some(BenchReport {
                    requests_per_s: rps,
                    target_cpu: Some(TargetCpu {
                        pid: 1,
                        name: None,
                        cpu: CpuUse::new((0.5, 0.5), 1.0, rps as u64),
                    }),
                    ..Default::default()
                }),
                ratio_rps: None,
                ratio_cpu: None,
                ratio_ceiling: None,
            });
        }
    }
    add_ratios(&mut cells);
    CompareReport {
        cells,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_matrix() {
        let p = plan(false);
        let cells: usize = p.iter().map(|(_, w)| w.len()).sum();
        // About 2 s a cell (with start-up): the whole run stays near two
        // minutes.
        assert!(cells <= 52, "{cells} cells: too slow for two minutes");
        for wl in WORKLOADS {
            for imp in [
                Impl::Vblade,
                Impl::XbladeAfpacket,
                Impl::XbladeXdpNative,
                Impl::XbladeXdpSkb,
            ] {
                assert!(
                    p.iter().any(|(c, w)| c.imp == imp
                        && c.backing == Backing::PageCache
                        && w.contains(&wl)),
                    "{} on {:?}",
                    wl.name,
                    imp
                );
            }
        }
        // Write rows both durable and --writeback for every xblade datapath.
        for imp in [
            Impl::XbladeAfpacket,
            Impl::XbladeXdpNative,
            Impl::XbladeXdpSkb,
        ] {
            assert!(p
                .iter()
                .any(|(c, w)| c.imp == imp && c.writeback && w.iter().all(|w| !w.read)));
        }
        assert!(p
            .iter()
            .any(|(c, _)| c.backing == Backing::Direct && c.imp == Impl::Vblade));
        assert!(p.iter().any(|(c, _)| c.backing == Backing::Null));
        assert!(plan(true).iter().map(|(_, w)| w.len()).sum::<usize>() > cells);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn labels_and_modes() {
        let c = TargetCfg {
            imp: Impl::XbladeAfpacket,
            backing: Backing::PageCache,
            writeback: true,
        };
        assert_eq!(c.label(true), "xblade afpacket --writeback");
        assert_eq!(c.label(false), "xblade afpacket");
        let log = "2026 INFO xblade::server: datapath: XDP iface=xbct mode=native queues=1";
        assert_eq!(attach_mode(log).as_deref(), Some("native"));
        assert_eq!(
            last_error_line("a\n2026-01-01T00:00:00Z ERROR xblade: boom\n"),
            "xblade: boom"
        );
    }

    #[test]
    fn ratios_against_vblade() {
        let rep = |rps: f64, ns: f64| BenchReport {
            requests_per_s: rps,
            target_cpu: Some(super::super::report::TargetCpu {
                pid: 1,
                name: None,
                cpu: super::super::report::CpuUse {
                    seconds: 1.0,
                    cores: 1.0,
                    ns_per_request: ns,
                    ..Default::default()
                },
            }),
            ..Default::default()
        };
        let cell = |imp, backing, rps, ns| Cell {
            workload: WORKLOADS[1],
            target: TargetCfg {
                imp,
                backing,
                writeback: false,
            },
            label: String::new(),
            status: Status::Ok,
            reason: None,
            xdp_mode: None,
            report: Some(rep(rps, ns)),
            ratio_rps: None,
            ratio_cpu: None,
            ratio_ceiling: None,
        };
        let mut cells = vec![
            cell(Impl::Vblade, Backing::PageCache, 100.0, 2000.0),
            cell(Impl::XbladeAfpacket, Backing::PageCache, 250.0, 1000.0),
            cell(Impl::XbladeAfpacket, Backing::Null, 400.0, 500.0),
            cell(Impl::XbladeXdpNative, Backing::PageCache, 300.0, 900.0),
            cell(Impl::XbladeXdpNative, Backing::Reflect, 450.0, 600.0),
        ];
        add_ratios(&mut cells);
        assert_eq!(cells[3].ratio_ceiling, Some(1.5));
        assert_eq!(cells[4].ratio_ceiling, Some(1.0));
        assert_eq!(cells[1].ratio_ceiling, None, "no afpacket ceiling");
        assert_eq!(cells[0].ratio_rps, Some(1.0));
        assert_eq!(cells[1].ratio_rps, Some(2.5));
        assert_eq!(cells[1].ratio_cpu, Some(0.5));
        assert_eq!(cells[2].ratio_rps, Some(4.0));
        let t = render(&CompareReport {
            cells,
            ..Default::default()
        });
        assert!(t.contains("2.50x"), "{t}");
    }
}
