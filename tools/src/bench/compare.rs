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
//!
//! Parts: [`plan`] (the matrix), [`testbed`] (namespaces, veth, processes),
//! [`runner`] (starting targets, running cells), [`render`] (the table).

mod plan;
mod render;
mod runner;
mod testbed;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::report::BenchReport;
use super::{parse_bytes, parse_duration};
pub use plan::{Backing, Impl, TargetCfg, Workload};
#[cfg(test)]
pub(crate) use render::sample_report;
pub use render::{add_ratios, render};
use runner::{make_file, read_trim, Runner};
use testbed::Link;
use xblade_testbed::TempPath;

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
    /// A cell without a measurement (`status` n/a or failed, for `reason`).
    pub fn unmeasured(workload: Workload, target: TargetCfg, status: Status, reason: &str) -> Cell {
        Cell {
            workload,
            target,
            label: target.label(!workload.read),
            status,
            reason: Some(reason.to_string()),
            xdp_mode: None,
            report: None,
            ratio_rps: None,
            ratio_cpu: None,
            ratio_ceiling: None,
        }
    }

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

pub(super) fn median(v: &[f64]) -> f64 {
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
    let _files = [&page_file, &direct_file, &control_socket].map(TempPath::adopt);
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
    let plan = plan::plan(a.full);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }
}
