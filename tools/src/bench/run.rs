//! One `xblade bench` run: find the target (Query Config, IDENTIFY), share
//! the window and the LBA range out over the queues, run them (one thread
//! and socket each) through the warm-up and the measured window while the
//! progress line ticks, then merge what they counted into the report.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use super::load::{self, LoadSpec, Phase, QueueResult, Shared};
use super::report::{
    self, BenchReport, CpuUse, ErrorDetail, Latency, Phases, TargetCpu, VerifyReport,
};
use super::{cpu, BenchArgs, VERIFY_DEFAULT_RANGE};
use crate::initiator::client::{Client, ClientError, Identity, Target};
use crate::initiator::window::Route;
use crate::net::socket::PacketSocket;
use crate::wire::target::{parse_target, Broadcast};
use crate::wire::{MacAddr, SECTOR_SIZE};

fn target_err(target: &str, mac: &str, iface: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("target {target} ({mac}) via {iface}: {e}")
}

/// The target as discovery found it, and what the run will ask of it.
struct Found {
    iface: String,
    /// `SHELF.SLOT`.
    name: String,
    t: Target,
    /// Every MAC it answered from (`t.mac` first).
    paths: Vec<MacAddr>,
    /// Our MAC and interface index.
    src: MacAddr,
    ifindex: u32,
    mtu: u32,
    /// Most sectors per request the target and the link allow.
    max: u8,
    /// Sectors per request of the run.
    sectors: u8,
    id: Identity,
}

impl Found {
    fn err(&self, e: impl std::fmt::Display) -> anyhow::Error {
        target_err(&self.name, &self.t.mac.to_string(), &self.iface, e)
    }
}

/// The queues' shares.
struct Plan {
    spec: LoadSpec,
    /// Requests in flight, all queues together.
    window: usize,
    /// Blocks of `sectors` in the LBA range.
    chunks: u64,
}

/// What the measured window took (wall, our CPU, the target's).
struct Window {
    wall: f64,
    cpu: (f64, f64),
    target: Option<Result<(f64, f64), String>>,
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
    let (major, minor) =
        parse_target(&target_s, Broadcast::Refuse).map_err(|e| anyhow!("--target {e}"))?;
    if a.queues == 0 || a.queues > load::MAX_QUEUES {
        bail!("--queues {}: between 1 and {}", a.queues, load::MAX_QUEUES);
    }
    if a.window == 0 {
        bail!("--window 0: need at least one request in flight");
    }
    if a.timeout == 0 {
        bail!("--timeout 0: need a positive timeout");
    }
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut notes = Vec::new();
    let found = discover(a, iface, major, minor, &mut notes)?;
    let plan = plan(a, &found, &mut notes)?;
    let socks = open_sockets(&plan.spec, &found.iface)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, interrupted.clone());
    let shared = Shared::new(plan.spec.queues(), a.warmup, a.duration);
    let (results, window) = drive(a, &plan.spec, &shared, socks, &interrupted);

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
        return Err(found.err(e));
    }
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    if ok.len() != plan.spec.queues() {
        bail!("a bench queue stopped early");
    }
    let Some(window) = window else {
        bail!("the run ended before its measured window");
    };
    let report = build_report(a, &found, &plan, &ok, window, notes, started_unix);
    print!("{}", report::render(&report));
    if let Some(path) = &a.json {
        let j = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, j + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Query Config (MAC, bufcnt, sectors; other MACs of the same target),
/// then IDENTIFY. A target that never answers is an error within about
/// two seconds.
fn discover(
    a: &BenchArgs,
    iface: String,
    major: u16,
    minor: u8,
    notes: &mut Vec<String>,
) -> Result<Found> {
    let name = format!("{major}.{minor}");
    let timeout = Duration::from_millis(a.timeout);
    let mut client = Client::open(&iface).with_context(|| format!("opening {iface}"))?;
    let per_try = timeout.min(Duration::from_millis(500));
    let qc_tries = 4;
    client.set_timeout(per_try);
    client.set_retries(qc_tries - 1);
    let t = match client.find(major, minor) {
        Ok(t) => t,
        Err(ClientError::Timeout { .. }) => bail!(
            "no AoE target {name} answered Query Config on {iface} within {:.1} s \
             ({qc_tries} broadcasts, {} ms apart): is a target serving shelf {major} slot {minor} on this link?",
            (per_try * qc_tries).as_secs_f64(),
            per_try.as_millis()
        ),
        Err(e) => return Err(anyhow!("Query Config for {name} on {iface}: {e}")),
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
            "{sectors} sectors ({}) per request is more than target {name} ({mac}) accepts \
             over {iface}: at most {max} (Query Config advertises {}, MTU {mtu} allows {by_mtu})",
            report::size(sectors as usize * SECTOR_SIZE),
            t.sectors_per_request()
        );
    }
    client.set_timeout(timeout);
    client.set_retries(a.retries);
    let id = client
        .identify(&t)
        .map_err(|e| target_err(&name, &mac, &iface, format!("IDENTIFY failed: {e}")))?;
    Ok(Found {
        src: client.mac(),
        ifindex: client.iface().index,
        iface,
        name,
        t,
        paths,
        mtu,
        max,
        sectors,
        id,
    })
}

/// The LBA range, the window (capped at bufcnt) and how both are shared
/// out over the queues.
fn plan(a: &BenchArgs, f: &Found, notes: &mut Vec<String>) -> Result<Plan> {
    let mut capacity = f.id.sectors;
    if !f.id.lba48 && capacity > 1 << 28 {
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
        bail!(
            "--lba-range {range}: target {} has only {capacity} sectors",
            f.name
        );
    }
    let sectors = f.sectors;
    let chunks = range / u64::from(sectors);
    if chunks == 0 {
        bail!("--lba-range {range} holds no request of {sectors} sectors");
    }
    let bufcnt = f.t.bufcnt;
    let mut window = a.window;
    if window > usize::from(bufcnt) && !a.over_bufcnt {
        window = usize::from(bufcnt).max(1);
        notes.push(format!(
            "window capped at the target's bufcnt {bufcnt} (asked {}; --over-bufcnt to exceed it)",
            a.window
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
        ifindex: f.ifindex,
        route: Route {
            src: f.src,
            dst: f.t.mac,
            paths: if f.paths.len() > 1 {
                f.paths.clone()
            } else {
                Vec::new()
            },
            major: f.t.major,
            minor: f.t.minor,
            lba48: f.id.lba48,
        },
        sectors,
        lba_base: 0,
        chunks,
        read_pct: a.op.read_pct,
        windows,
        cores: (0..queues).map(|q| a.cores.get(q).copied()).collect(),
        timeout: Duration::from_millis(a.timeout),
        max_tries: a.retries + 1,
        verify: a.verify,
        busy_poll: a.busy_poll,
        max_frame: f.mtu as usize + 14,
        seed: a.seed,
    };
    Ok(Plan {
        spec,
        window,
        chunks,
    })
}

/// One socket per queue, each seeing only its queue's replies.
fn open_sockets(spec: &LoadSpec, iface: &str) -> Result<Vec<PacketSocket>> {
    let queues = spec.queues();
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
    Ok(socks)
}

/// Run every queue in its thread: wait for the prefills, start the clock,
/// measure CPU over the measured window, wait for the drains.
fn drive(
    a: &BenchArgs,
    spec: &LoadSpec,
    shared: &Shared,
    socks: Vec<PacketSocket>,
    interrupted: &AtomicBool,
) -> (Vec<Result<QueueResult, load::LoadError>>, Option<Window>) {
    let queues = spec.queues();
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
    let mut progress = ProgressLine::new(bar, shared, a.warmup + a.duration);
    let out = std::thread::scope(|sc| {
        let handles: Vec<_> = socks
            .into_iter()
            .enumerate()
            .map(|(q, sock)| sc.spawn(move || load::run_queue(spec, shared, q, sock)))
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
        let win = if stop() {
            None
        } else {
            measure(a, shared, &mut progress, &stop)
        };
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
    out
}

/// Start the timed phase and take the CPU figures at the edges of the
/// measured window; `None` when `stop` cut it short.
fn measure(
    a: &BenchArgs,
    shared: &Shared,
    progress: &mut ProgressLine<'_>,
    stop: &dyn Fn() -> bool,
) -> Option<Window> {
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
    if !sleep_until(progress, warm) {
        return None;
    }
    let c0 = cpu::self_cpu();
    let tc0 = a.target_pid.map(cpu::proc_cpu);
    let w0 = Instant::now();
    if !sleep_until(progress, end) {
        return None;
    }
    let c1 = cpu::self_cpu();
    let tc1 = a.target_pid.map(cpu::proc_cpu);
    let wall = w0.elapsed().as_secs_f64();
    let target = match (tc0, tc1) {
        (Some(Ok(x)), Some(Ok(y))) => Some(Ok(y.since(&x))),
        (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e.to_string())),
        _ => None,
    };
    Some(Window {
        wall,
        cpu: c1.since(&c0),
        target,
    })
}

/// Merge the queues' counters into the report.
fn build_report(
    a: &BenchArgs,
    f: &Found,
    plan: &Plan,
    ok: &[QueueResult],
    win: Window,
    mut notes: Vec<String>,
    started_unix: u64,
) -> BenchReport {
    let mut phases = Phases::default();
    let mut measured = load::Measured::default();
    let mut hist = load::new_histogram();
    let mut mismatch_notes = Vec::new();
    for r in ok {
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
        blocks: plan.chunks,
        prefill_writes: phases.prefill.ok,
        checked: total.checked,
        mismatches: total.mismatches,
        first_mismatches: mismatch_notes,
    });
    let (sectors, queues) = (f.sectors, plan.spec.queues());
    BenchReport {
        xblade_version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix,
        target: f.name.clone(),
        target_mac: f.t.mac.to_string(),
        iface: f.iface.clone(),
        mtu: f.mtu,
        bufcnt: f.t.bufcnt,
        qc_max_sectors: f.t.sectors_per_request(),
        max_sectors: f.max,
        capacity_sectors: f.id.sectors,
        lba48: f.id.lba48,
        op: a.op.to_string(),
        read_pct: a.op.read_pct,
        sectors,
        bytes_per_request: sectors as usize * SECTOR_SIZE,
        window: plan.window,
        window_requested: a.window,
        queues,
        cores: a.cores.iter().take(queues).copied().collect(),
        lba_range: plan.chunks * u64::from(sectors),
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
    }
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
