//! Running the comparison: each target started in the target namespace,
//! each cell an `xblade bench` run (and the loadgen cross-check) in the
//! initiator namespace.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::plan::{Backing, Impl, TargetCfg, Workload};
use super::render::runs;
use super::testbed::{
    last_error_line, run_bounded, spawn, wait_log, Child, IF_I, IF_T, NS_I, NS_T,
};
use super::{median, Cell, CompareArgs, LoadgenCheck, Status};
use crate::bench::report::{thousands, BenchReport};

/// Shortest run of the loadgen cross-check.
const CHECK_MIN: Duration = Duration::from_secs(2);

/// Starts each target, runs its cells, keeps count for the progress lines.
pub(super) struct Runner<'a> {
    pub(super) args: &'a CompareArgs,
    pub(super) exe: PathBuf,
    pub(super) out: PathBuf,
    pub(super) page_file: PathBuf,
    pub(super) direct_file: PathBuf,
    pub(super) control_socket: PathBuf,
    pub(super) target_core: usize,
    pub(super) bench_core: usize,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) started: Instant,
    pub(super) done: usize,
    pub(super) total: usize,
}

pub(super) fn read_trim(p: &str) -> String {
    fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Write `size` bytes of non-zero data and sync them; for the O_DIRECT file,
/// also drop them from the page cache (the other stays cached, clean).
pub(super) fn make_file(path: &Path, size: usize, drop_cache: bool) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut block = vec![0u8; 1 << 20];
    crate::bench::pattern::fill(&mut block, 0, 0xfeed);
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

    /// Every workload of `wls` (one MTU) against target `cfg`, started
    /// once for them all.
    pub(super) fn run_target(
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
        if cfg.imp == Impl::Vblade && !has_vblade {
            let reason = format!("{} not installed", self.args.vblade.display());
            self.not_available(cfg, wls, &reason, cells);
            return Ok(());
        }
        let log = self.out.join("cells").join(format!("{slug}.log"));
        let argv = self.target_argv(&cfg);
        let mut target = spawn(NS_T, self.target_core, &argv, &log)?;
        let ready = match cfg.imp {
            // vblade says nothing useful on start (its stdout is block
            // buffered); the bench's discovery retries for two seconds.
            Impl::Vblade => {
                std::thread::sleep(Duration::from_millis(200));
                if target.is_running() {
                    Ok(())
                } else {
                    Err(last_error_line(&target.log()))
                }
            }
            _ => wait_log(&mut target, "xblade serving", Duration::from_secs(15)),
        };
        if let Err(reason) = ready {
            drop(target);
            self.not_available(cfg, wls, &reason, cells);
            return Ok(());
        }
        let xdp_mode = matches!(cfg.imp, Impl::XbladeXdpNative | Impl::XbladeXdpSkb)
            .then(|| attach_mode(&target.log()))
            .flatten();
        for wl in wls {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let mut cell = self.cell(&mut target, cfg, wl, &slug, checks);
            cell.xdp_mode = xdp_mode.clone();
            cells.push(cell);
        }
        drop(target);
        Ok(())
    }

    /// Cells for `wls` on a target that could not be started.
    fn not_available(
        &mut self,
        cfg: TargetCfg,
        wls: &[Workload],
        reason: &str,
        cells: &mut Vec<Cell>,
    ) {
        for wl in wls {
            let label = cfg.label(!wl.read);
            self.progress(wl, &label, cfg.backing, &format!("n/a: {reason}"));
            cells.push(Cell::unmeasured(*wl, cfg, Status::NotAvailable, reason));
        }
    }

    /// One cell: `wl` against the running `target` (and the loadgen
    /// cross-check where it applies).
    fn cell(
        &mut self,
        target: &mut Child,
        cfg: TargetCfg,
        wl: &Workload,
        slug: &str,
        checks: &mut Vec<LoadgenCheck>,
    ) -> Cell {
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
        let res = self.bench(target, wl, &json, self.args.cell);
        if !target.is_running() {
            let reason = format!("target exited: {}", last_error_line(&target.log()));
            self.progress(wl, &label, cfg.backing, &format!("FAILED: {reason}"));
            return Cell::unmeasured(*wl, cfg, Status::Failed, &reason);
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
                match self.loadgen_check(target, wl, lg, r.requests_per_s, &label) {
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
        Cell {
            workload: *wl,
            target: cfg,
            label,
            status,
            reason,
            xdp_mode: None,
            report,
            ratio_rps: None,
            ratio_cpu: None,
            ratio_ceiling: None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_modes() {
        let log = "2026 INFO xblade::server: datapath: XDP iface=xbct mode=native queues=1";
        assert_eq!(attach_mode(log).as_deref(), Some("native"));
        assert_eq!(attach_mode("no XDP here"), None);
    }
}
