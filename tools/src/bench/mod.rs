//! `xblade bench`: the benchmark initiator, and `xblade bench compare`, the
//! side-by-side comparison of targets.
//!
//! - [`load`]: the window engine (batched AF_PACKET, preallocated tag→slot
//!   table, retransmission with fresh tags, verify bookkeeping).
//! - [`pattern`]: the per-LBA data `--verify` writes and checks.
//! - [`cpu`]: CPU time of the bench and of the target process.
//! - [`report`]: the JSON document and the final table.
//! - [`compare`], [`chart`]: the comparison matrix and its SVG chart.
//!
//! A run: Query Config to the target (its MAC, bufcnt, sectors per
//! request), IDENTIFY (capacity), then the queues run their window for the
//! warm-up plus the measured duration, drain, and the table is printed.
//! A target that never answers is an error within about two seconds.

pub mod chart;
pub mod compare;
pub mod cpu;
pub mod load;
pub mod pattern;
pub mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};

use crate::initiator::client::{Client, ClientError};
use crate::net::socket::PacketSocket;
use crate::wire::SECTOR_SIZE;
use load::{LoadSpec, Phase, Shared};
use report::{BenchReport, CpuUse, ErrorDetail, Latency, Phases, TargetCpu, VerifyReport};

/// `xblade bench ...`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCli {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Run the same workloads against vblade and xblade's datapaths over a
    /// veth pair it builds itself, and print one table with ratios to
    /// vblade (plus JSON and an SVG chart).
    Compare(compare::CompareArgs),
    /// Run the AoE r11 conformance check list against SHELF.SLOT through
    /// IFACE (a target this host cannot start itself:
    /// tests/scripts/75-xdp-zerocopy.sh). Writes to the export's first 64
    /// and last sectors. Run as `xblade conformance`.
    #[command(hide = true)]
    Conformance(crate::initiator::conformance::ConformanceArgs),
}

/// Options of a bench run.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Interface to send on (run inside the initiator's namespace).
    #[arg(long, value_name = "IF", required = true)]
    pub iface: Option<String>,
    /// Target address, SHELF.SLOT (e.g. 1.1 or e1.1).
    #[arg(long, value_name = "SHELF.SLOT", required = true)]
    pub target: Option<String>,
    /// read, write, or mix:P (P percent reads, e.g. mix:70).
    #[arg(long, default_value = "read", value_parser = parse_op)]
    pub op: OpMix,
    /// Sectors per request (default: the most the target and link allow).
    #[arg(long, value_name = "N", conflicts_with = "bytes")]
    pub sectors: Option<u8>,
    /// Bytes per request, a multiple of 512 (1k, 8k, 4096, ...).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub bytes: Option<usize>,
    /// Requests in flight (all queues together; capped at the target's
    /// bufcnt unless --over-bufcnt).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub window: usize,
    /// Allow a window above the target's advertised bufcnt.
    #[arg(long)]
    pub over_bufcnt: bool,
    /// Measured time (10s, 500ms, 2m; a bare number is seconds).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, value_name = "DUR", default_value = "500ms", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Queues: threads, each with its own socket and share of the window.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub queues: usize,
    /// Pin queue i to core `LIST[i]` (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Write a known per-LBA pattern over the LBA range first, check every
    /// byte read, read everything back at the end when there were writes;
    /// any mismatch fails the run.
    #[arg(long)]
    pub verify: bool,
    /// Write every result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Target process: report its CPU time (all threads) and CPU ns per
    /// request.
    #[arg(long, value_name = "PID")]
    pub target_pid: Option<u32>,
    /// Wait for a reply before retransmitting, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub timeout: u64,
    /// Retransmissions of one request before the run fails.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Sectors from LBA 0 to spread requests over (a bare number; or a
    /// size like 64M). Default: the whole disk; with --verify at most 8 MiB.
    #[arg(long, value_name = "N", value_parser = parse_lba_range)]
    pub lba_range: Option<u64>,
    /// Spin on the socket instead of sleeping in poll(2) (lower latency,
    /// one busy core per queue).
    #[arg(long)]
    pub busy_poll: bool,
    /// Seed of the random LBA and op sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Read/write proportion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpMix {
    /// Percentage of reads.
    pub read_pct: u8,
}

impl std::fmt::Display for OpMix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.read_pct {
            100 => write!(f, "read"),
            0 => write!(f, "write"),
            p => write!(f, "mix:{p}"),
        }
    }
}

/// `read`, `write`, `mix` (50 % reads) or `mix:P`.
pub fn parse_op(s: &str) -> Result<OpMix, String> {
    let read_pct = match s {
        "read" | "r" => 100,
        "write" | "w" => 0,
        "mix" => 50,
        _ => match s.strip_prefix("mix:") {
            Some(p) => p
                .trim_end_matches('%')
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= 100)
                .ok_or_else(|| format!("bad read percentage in {s:?} (mix:0..100)"))?,
            None => return Err(format!("{s:?}: expected read, write or mix:P")),
        },
    };
    Ok(OpMix { read_pct })
}

/// `10s`, `500ms`, `2m`, `1.5s`, `10` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 10s, 500ms, 2m"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?}: negative or invalid duration"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// `1k`, `8k`, `4096`, `1KiB`: a whole number of sectors, at least one.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim().trim_end_matches("iB").trim_end_matches(['B', 'b']);
    let n = xblade::bdev::parse_size(t).ok_or_else(|| format!("{s:?}: expected a size like 1k"))?;
    if n == 0 || n % SECTOR_SIZE as u64 != 0 {
        return Err(format!("{s:?}: not a positive multiple of 512 bytes"));
    }
    Ok(n as usize)
}

/// A bare number of sectors, or a size (`64M`) turned into sectors.
pub fn parse_lba_range(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.trim().parse::<u64>() {
        return if n == 0 {
            Err("--lba-range 0: need at least one block".into())
        } else {
            Ok(n)
        };
    }
    parse_bytes(s).map(|b| (b / SECTOR_SIZE) as u64)
}

/// `1.1`, `e1.1`: (shelf, slot); the broadcast values are refused.
pub fn parse_target(s: &str) -> Result<(u16, u8)> {
    let t = s.trim().trim_start_matches('e');
    let (a, b) = t
        .split_once('.')
        .ok_or_else(|| anyhow!("--target {s:?}: expected SHELF.SLOT, e.g. 1.1"))?;
    let shelf: u16 = a
        .parse()
        .map_err(|_| anyhow!("--target {s:?}: bad shelf {a:?}"))?;
    let slot: u8 = b
        .parse()
        .map_err(|_| anyhow!("--target {s:?}: bad slot {b:?}"))?;
    if shelf == 0xffff || slot == 0xff {
        bail!("--target {s:?}: shelf 65535 and slot 255 are broadcast addresses, not a target");
    }
    Ok((shelf, slot))
}

/// Default LBA range with `--verify`: 8 MiB, so the pattern is written
/// quickly even to a target that syncs every write.
pub const VERIFY_DEFAULT_RANGE: u64 = (8 << 20) / SECTOR_SIZE as u64;

/// Entry point of `xblade bench`.
pub fn main(cli: BenchCli) -> Result<()> {
    match cli.command {
        Some(BenchCommand::Compare(c)) => compare::run(&c),
        Some(BenchCommand::Conformance(c)) => crate::initiator::conformance::main(&c),
        None => {
            let report = run(&cli.args)?;
            finish(&report)
        }
    }
}

/// Turn a finished report into the exit status: mismatches and error
/// replies fail the run (after the table and JSON are out).
pub fn finish(r: &BenchReport) -> Result<()> {
    if let Some(v) = &r.verify {
        if v.mismatches > 0 {
            bail!(
                "verify FAILED: {} of {} reads returned data other than what was written",
                v.mismatches,
                v.checked
            );
        }
    }
    if r.errors > 0 {
        bail!(
            "target {} answered {} requests with errors (see the table)",
            r.target,
            r.errors
        );
    }
    Ok(())
}

fn target_err(target: &str, mac: &str, iface: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("target {target} ({mac}) via {iface}: {e}")
}

/// Run a bench, print its table (and write its JSON); the report is
/// returned whatever it says.
pub fn run(a: &BenchArgs) -> Result<BenchReport> {
    let iface = a
        .iface
        .clone()
        .ok_or_else(|| anyhow!("--iface is required"))?;
    let target_s = a
        .target
        .clone()
        .ok_or_else(|| anyhow!("--target is required"))?;
    let (major, minor) = parse_target(&target_s)?;
    let target = format!("{major}.{minor}");
    if a.queues == 0 || a.queues > load::MAX_QUEUES {
        bail!("--queues {}: between 1 and {}", a.queues, load::MAX_QUEUES);
    }
    if a.window == 0 {
        bail!("--window 0: need at least one request in flight");
    }
    if a.timeout == 0 {
        bail!("--timeout 0: need a positive timeout");
    }
    let timeout = Duration::from_millis(a.timeout);
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    // --- Discovery: Query Config (MAC, bufcnt, sectors), then IDENTIFY.
    let mut client = Client::open(&iface).with_context(|| format!("opening {iface}"))?;
    let per_try = timeout.min(Duration::from_millis(500));
    let qc_tries = 4;
    client.set_timeout(per_try);
    client.set_retries(qc_tries - 1);
    let t = match client.find(major, minor) {
        Ok(t) => t,
        Err(ClientError::Timeout { .. }) => bail!(
            "no AoE target {target} answered Query Config on {iface} within {:.1} s \
             ({qc_tries} broadcasts, {} ms apart): is a target serving shelf {major} slot {minor} on this link?",
            (per_try * qc_tries).as_secs_f64(),
            per_try.as_millis()
        ),
        Err(e) => return Err(anyhow!("Query Config for {target} on {iface}: {e}")),
    };
    // Other MACs of the same target (one per queue with `--steer`): the
    // answers to one more broadcast within a short wait.
    let mut paths = vec![t.mac];
    client.set_timeout(Duration::from_millis(200));
    client.set_retries(0);
    if let Ok(found) = client.discover(major, minor) {
        for f in found {
            if (f.major, f.minor) == (t.major, t.minor) && !paths.contains(&f.mac) {
                paths.push(f.mac);
            }
        }
    }
    let mac = t.mac.to_string();
    let mtu = client.iface().mtu;
    let by_mtu = crate::wire::max_sectors_for_mtu(mtu);
    let max = client.sectors_per_request(&t);
    let sectors = match (a.sectors, a.bytes) {
        (Some(n), _) => n,
        (None, Some(b)) => u8::try_from(b / SECTOR_SIZE).unwrap_or(u8::MAX),
        (None, None) => max,
    };
    if sectors == 0 {
        bail!("--sectors 0: a request needs at least one sector");
    }
    if sectors > max {
        bail!(
            "{sectors} sectors ({}) per request is more than target {target} ({mac}) accepts \
             over {iface}: at most {max} (Query Config advertises {}, MTU {mtu} allows {by_mtu})",
            report::size(sectors as usize * SECTOR_SIZE),
            t.sectors_per_request()
        );
    }
    client.set_timeout(timeout);
    client.set_retries(a.retries);
    let id = client
        .identify(&t)
        .map_err(|e| target_err(&target, &mac, &iface, format!("IDENTIFY failed: {e}")))?;
    let mut capacity = id.sectors;
    let mut notes = Vec::new();
    if paths.len() > 1 {
        notes.push(format!(
            "target answers from {} MACs ({}): requests rotate over them",
            paths.len(),
            paths
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !id.lba48 && capacity > 1 << 28 {
        capacity = 1 << 28;
        notes.push("no LBA48: using the first 2^28 sectors".to_string());
    }
    let range = match a.lba_range {
        Some(r) => r,
        None if a.verify => {
            if capacity > VERIFY_DEFAULT_RANGE {
                notes.push(format!(
                    "verify: LBA range {VERIFY_DEFAULT_RANGE} sectors (8 MiB) by default; --lba-range to change"
                ));
            }
            capacity.min(VERIFY_DEFAULT_RANGE)
        }
        None => capacity,
    };
    if range > capacity {
        bail!("--lba-range {range}: target {target} has only {capacity} sectors");
    }
    let chunks = range / u64::from(sectors);
    if chunks == 0 {
        bail!("--lba-range {range} holds no request of {sectors} sectors");
    }
    let mut window = a.window;
    if window > usize::from(t.bufcnt) && !a.over_bufcnt {
        window = usize::from(t.bufcnt).max(1);
        notes.push(format!(
            "window capped at the target's bufcnt {} (asked {}; --over-bufcnt to exceed it)",
            t.bufcnt, a.window
        ));
    }
    // Every queue needs at least one request in flight and one block.
    let queues = a
        .queues
        .min(window)
        .min(chunks.min(usize::MAX as u64) as usize);
    if window > queues * load::MAX_WINDOW {
        bail!("--window {window}: at most {} per queue", load::MAX_WINDOW);
    }
    let windows: Vec<usize> = (0..queues)
        .map(|q| window / queues + usize::from(q < window % queues))
        .collect();
    if a.verify && chunks < window as u64 * 2 {
        notes.push(format!(
            "verify: only {chunks} blocks for a window of {window}: fewer requests in flight"
        ));
    }
    let spec = LoadSpec {
        ifindex: client.iface().index,
        src: client.mac(),
        dst: t.mac,
        paths: if paths.len() > 1 {
            paths.clone()
        } else {
            Vec::new()
        },
        major,
        minor,
        lba48: id.lba48,
        sectors,
        lba_base: 0,
        chunks,
        read_pct: a.op.read_pct,
        windows,
        cores: (0..queues).map(|q| a.cores.get(q).copied()).collect(),
        timeout,
        max_tries: a.retries + 1,
        verify: a.verify,
        busy_poll: a.busy_poll,
        max_frame: mtu as usize + 14,
        seed: a.seed,
    };
    drop(client);

    let mut socks = Vec::with_capacity(queues);
    for q in 0..queues {
        let s = PacketSocket::open(spec.ifindex).with_context(|| format!("socket on {iface}"))?;
        let _ = s.set_buffers(8 << 20);
        // A load generator measures the target, not the qdisc layer.
        let _ = s.set_qdisc_bypass();
        if queues > 1 {
            load::attach_queue_filter(&s, q).context("attaching the per-queue socket filter")?;
        }
        socks.push(s);
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, interrupted.clone());

    let shared = Shared::new(queues, a.warmup, a.duration);
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(5),
        );
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    });
    let mut progress = ProgressLine::new(bar, &shared, a.warmup + a.duration);

    struct Window {
        wall: f64,
        cpu: (f64, f64),
        target: Option<Result<(f64, f64), String>>,
    }
    let target_cpu = cpu::proc_cpu;

    let (results, measured_window) = std::thread::scope(|sc| {
        let handles: Vec<_> = socks
            .into_iter()
            .enumerate()
            .map(|(q, sock)| {
                let (spec, shared) = (&spec, &shared);
                sc.spawn(move || load::run_queue(spec, shared, q, sock))
            })
            .collect();
        let stop = || {
            interrupted.load(Ordering::Relaxed)
                || shared.abort.load(Ordering::Relaxed)
                || handles.iter().any(|h| h.is_finished())
        };
        // Wait for every queue to finish its prefill.
        while shared.ready.load(Ordering::SeqCst) < queues && !stop() {
            progress.tick();
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut win = None;
        if !stop() {
            let t0 = Instant::now();
            let _ = shared.start.set(t0);
            progress.start(t0);
            let warm = t0 + a.warmup;
            let end = warm + a.duration;
            let sleep_until = |p: &mut ProgressLine, until: Instant| {
                while !stop() {
                    let now = Instant::now();
                    if now >= until {
                        return true;
                    }
                    p.tick();
                    std::thread::sleep((until - now).min(Duration::from_millis(100)));
                }
                false
            };
            if sleep_until(&mut progress, warm) {
                let c0 = cpu::self_cpu();
                let tc0 = a.target_pid.map(target_cpu);
                let w0 = Instant::now();
                if sleep_until(&mut progress, end) {
                    let c1 = cpu::self_cpu();
                    let tc1 = a.target_pid.map(target_cpu);
                    let wall = w0.elapsed().as_secs_f64();
                    let target = match (tc0, tc1) {
                        (Some(Ok(x)), Some(Ok(y))) => Some(Ok(y.since(&x))),
                        (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e.to_string())),
                        _ => None,
                    };
                    win = Some(Window {
                        wall,
                        cpu: c1.since(&c0),
                        target,
                    });
                }
            }
        }
        while handles.iter().any(|h| !h.is_finished()) {
            if interrupted.load(Ordering::Relaxed) {
                shared.abort.store(true, Ordering::Relaxed);
            }
            progress.tick();
            std::thread::sleep(Duration::from_millis(20));
        }
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("bench queue panicked"))
            .collect();
        (results, win)
    });
    progress.finish();

    // The first real error (not the "stopped" of the others) wins.
    let mut ok = Vec::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(x) => ok.push(x),
            Err(load::LoadError::Aborted) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(target_err(&target, &mac, &iface, e));
    }
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    if ok.len() != queues {
        bail!("a bench queue stopped early");
    }
    let Some(win) = measured_window else {
        bail!("the run ended before its measured window");
    };

    let mut phases = Phases::default();
    let mut measured = load::Measured::default();
    let mut hist = load::new_histogram();
    let mut mismatch_notes = Vec::new();
    for r in &ok {
        phases.prefill.merge(&r.prefill);
        phases.timed.merge(&r.timed);
        phases.readback.merge(&r.readback);
        measured.merge(&r.measured);
        let _ = hist.add(&r.latency);
        mismatch_notes.extend(r.mismatch_notes.iter().take(8).cloned());
    }
    mismatch_notes.truncate(8);
    let total = phases.total();
    let dur = a.duration.as_secs_f64();
    let target_cpu = match (a.target_pid, win.target) {
        (Some(pid), Some(Ok(secs))) => Some(TargetCpu {
            pid,
            name: cpu::proc_name(pid),
            cpu: CpuUse::new(secs, win.wall, measured.requests),
        }),
        (Some(pid), Some(Err(e))) => {
            notes.push(format!("target CPU: cannot read /proc/{pid}/stat: {e}"));
            None
        }
        _ => None,
    };
    let verify = a.verify.then(|| VerifyReport {
        ok: total.mismatches == 0 && total.errors() == 0,
        blocks: chunks,
        prefill_writes: phases.prefill.ok,
        checked: total.checked,
        mismatches: total.mismatches,
        first_mismatches: mismatch_notes,
    });
    let report = BenchReport {
        xblade_version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix,
        target,
        target_mac: mac,
        iface,
        mtu,
        bufcnt: t.bufcnt,
        qc_max_sectors: t.sectors_per_request(),
        max_sectors: max,
        capacity_sectors: id.sectors,
        lba48: id.lba48,
        op: a.op.to_string(),
        read_pct: a.op.read_pct,
        sectors,
        bytes_per_request: sectors as usize * SECTOR_SIZE,
        window,
        window_requested: a.window,
        queues,
        cores: a.cores.iter().take(queues).copied().collect(),
        lba_range: chunks * u64::from(sectors),
        timeout_ms: a.timeout,
        warmup_s: a.warmup.as_secs_f64(),
        duration_s: dur,
        requests: measured.requests,
        reads: measured.reads,
        writes: measured.writes,
        requests_per_s: measured.requests as f64 / dur.max(1e-9),
        mb_per_s: measured.bytes as f64 / 1e6 / dur.max(1e-9),
        latency_us: Latency::from_histogram(&hist),
        errors: total.errors(),
        error_detail: ErrorDetail {
            aoe: total.aoe_errors,
            aoe_codes: total.aoe_error_codes,
            ata: total.ata_errors,
            bad_replies: total.bad_replies,
        },
        retransmits: total.retransmits,
        stale_replies: total.stale,
        initiator_cpu: CpuUse::new(win.cpu, win.wall, measured.requests),
        target_cpu,
        verify,
        phases,
        notes,
    };
    print!("{}", report::render(&report));
    if let Some(path) = &a.json {
        let j = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, j + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The live progress line (stderr, only on a terminal).
struct ProgressLine<'a> {
    bar: Option<indicatif::ProgressBar>,
    shared: &'a Shared,
    total: Duration,
    t0: Option<Instant>,
    last: Instant,
    last_done: u64,
    last_bytes: u64,
}

impl<'a> ProgressLine<'a> {
    fn new(bar: Option<indicatif::ProgressBar>, shared: &'a Shared, total: Duration) -> Self {
        ProgressLine {
            bar,
            shared,
            total,
            t0: None,
            last: Instant::now(),
            last_done: 0,
            last_bytes: 0,
        }
    }

    fn start(&mut self, t0: Instant) {
        self.t0 = Some(t0);
    }

    fn tick(&mut self) {
        let Some(bar) = &self.bar else { return };
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        if dt < 0.2 {
            return;
        }
        let p = &self.shared.progress;
        let sum = |f: fn(&load::Progress) -> u64| p.iter().map(f).sum::<u64>();
        let done = sum(|x| x.completed.load(Ordering::Relaxed));
        let bytes = sum(|x| x.bytes.load(Ordering::Relaxed));
        let retr = sum(|x| x.retransmits.load(Ordering::Relaxed));
        let errs = sum(|x| x.errors.load(Ordering::Relaxed));
        let phase = p
            .iter()
            .map(|x| x.phase())
            .min_by_key(|&ph| ph as u8)
            .unwrap_or(Phase::Idle);
        let elapsed = match (phase, self.t0) {
            (Phase::Timed, Some(t0)) => format!(
                "{:.1}/{:.1} s",
                now.duration_since(t0).as_secs_f64(),
                self.total.as_secs_f64()
            ),
            _ => String::new(),
        };
        bar.set_message(format!(
            "[{}] {elapsed}  {} req/s  {:.1} MB/s  retransmits {}  errors {}",
            phase.name(),
            report::thousands(((done - self.last_done.min(done)) as f64 / dt) as u64),
            (bytes - self.last_bytes.min(bytes)) as f64 / dt / 1e6,
            retr,
            errs
        ));
        bar.tick();
        self.last = now;
        self.last_done = done;
        self.last_bytes = bytes;
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        assert_eq!(parse_op("read").unwrap().read_pct, 100);
        assert_eq!(parse_op("write").unwrap().read_pct, 0);
        assert_eq!(parse_op("mix:70").unwrap().read_pct, 70);
        assert_eq!(parse_op("mix:70").unwrap().to_string(), "mix:70");
        assert!(parse_op("mix:101").is_err());
        assert!(parse_op("trim").is_err());
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_bytes("1k").unwrap(), 1024);
        assert_eq!(parse_bytes("8KiB").unwrap(), 8192);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("1000").is_err());
        assert_eq!(parse_lba_range("2048").unwrap(), 2048);
        assert_eq!(parse_lba_range("64M").unwrap(), 131072);
        assert_eq!(parse_target("e1.2").unwrap(), (1, 2));
        assert_eq!(parse_target("65534.254").unwrap(), (65534, 254));
        assert!(parse_target("65535.1").is_err());
        assert!(parse_target("1.255").is_err());
        assert!(parse_target("1").is_err());
    }
}
