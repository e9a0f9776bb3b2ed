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
mod run;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::wire::SECTOR_SIZE;
use report::BenchReport;
pub use run::run;

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
    }
}
