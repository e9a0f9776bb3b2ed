//! What a bench run measured: the JSON document (`--json`) and the table
//! printed at the end.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::load::PhaseStats;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// CPU time used over the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// User + system seconds.
    pub seconds: f64,
    /// Of which user.
    pub user_s: f64,
    /// Of which system (kernel).
    pub sys_s: f64,
    /// Seconds per wall second: 1.0 is one core busy all the time.
    pub cores: f64,
    /// CPU nanoseconds per measured request.
    pub ns_per_request: f64,
}

impl CpuUse {
    /// `user` + `sys` seconds over `wall` seconds for `requests` requests.
    pub fn new((user, sys): (f64, f64), wall: f64, requests: u64) -> CpuUse {
        let cpu = user + sys;
        CpuUse {
            seconds: cpu,
            user_s: user,
            sys_s: sys,
            cores: if wall > 0.0 { cpu / wall } else { 0.0 },
            ns_per_request: if requests > 0 {
                cpu * 1e9 / requests as f64
            } else {
                0.0
            },
        }
    }
}

/// The target's CPU (`--target-pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetCpu {
    /// Process id.
    pub pid: u32,
    /// Its name (`/proc/PID/comm`).
    pub name: Option<String>,
    /// Use over the measured window (utime + stime of all its threads;
    /// resolution one clock tick).
    pub cpu: CpuUse,
}

/// Error replies, by kind (all phases).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// AoE error flag set.
    pub aoe: u64,
    /// By AoE error code (index 7: 7 and above).
    pub aoe_codes: [u64; 8],
    /// ATA status with BSY, DF, DRQ or ERR.
    pub ata: u64,
    /// Too short for the data, or echoing another LBA.
    pub bad_replies: u64,
}

/// `--verify` outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// No mismatch, no error.
    pub ok: bool,
    /// Blocks (of `sectors` sectors) in the range.
    pub blocks: u64,
    /// Pattern writes before the run.
    pub prefill_writes: u64,
    /// Read replies checked (timed phase and read-back).
    pub checked: u64,
    /// Of those, differing from what was written.
    pub mismatches: u64,
    /// The first few mismatches.
    pub first_mismatches: Vec<String>,
}

/// Per-phase counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Pattern writes (`--verify`).
    pub prefill: PhaseStats,
    /// The run, warm-up and drain included.
    pub timed: PhaseStats,
    /// Read-back (`--verify` with writes).
    pub readback: PhaseStats,
}

impl Phases {
    /// All phases added up.
    pub fn total(&self) -> PhaseStats {
        let mut t = self.prefill;
        t.merge(&self.timed);
        t.merge(&self.readback);
        t
    }
}

/// Everything one `xblade bench` run measured (the `--json` document).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// xblade version of the bench.
    pub xblade_version: String,
    /// Seconds since the epoch at the start.
    pub started_unix: u64,
    /// SHELF.SLOT.
    pub target: String,
    /// The MAC that answered.
    pub target_mac: String,
    /// Our interface.
    pub iface: String,
    /// Its MTU.
    pub mtu: u32,
    /// Buffer count the target advertises.
    pub bufcnt: u16,
    /// Sectors per request the target advertises (Query Config).
    pub qc_max_sectors: u8,
    /// Sectors per request the path allows (QC and our MTU).
    pub max_sectors: u8,
    /// Capacity (IDENTIFY), sectors.
    pub capacity_sectors: u64,
    /// READ/WRITE SECTORS EXT used.
    pub lba48: bool,
    /// read, write or mix:P.
    pub op: String,
    /// Percentage of reads.
    pub read_pct: u8,
    /// Sectors per request.
    pub sectors: u8,
    /// Bytes per request.
    pub bytes_per_request: usize,
    /// Requests in flight (all queues).
    pub window: usize,
    /// The window asked for (before capping at bufcnt).
    pub window_requested: usize,
    /// Queues (threads, sockets).
    pub queues: usize,
    /// Cores the queues were pinned to.
    pub cores: Vec<usize>,
    /// Sectors of the LBA range used (from LBA 0).
    pub lba_range: u64,
    /// Retransmission timeout, ms.
    pub timeout_ms: u64,
    /// Warm-up, s (not measured).
    pub warmup_s: f64,
    /// Measured window, s.
    pub duration_s: f64,
    /// Successful requests completed in the measured window.
    pub requests: u64,
    /// Of which reads.
    pub reads: u64,
    /// Of which writes.
    pub writes: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Data MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Latency, first transmission to reply.
    pub latency_us: Latency,
    /// Error replies, all phases.
    pub errors: u64,
    /// By kind.
    pub error_detail: ErrorDetail,
    /// Retransmissions after a timeout, all phases.
    pub retransmits: u64,
    /// Replies to superseded transmissions, all phases.
    pub stale_replies: u64,
    /// This process over the measured window.
    pub initiator_cpu: CpuUse,
    /// The target process over the measured window (`--target-pid`).
    pub target_cpu: Option<TargetCpu>,
    /// `--verify`.
    pub verify: Option<VerifyReport>,
    /// Per phase.
    pub phases: Phases,
    /// Remarks (window capped, range capped, ...).
    pub notes: Vec<String>,
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds, compactly.
pub fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

/// Bytes as `1 KiB`, `8.5 KiB`, `512 B`.
pub fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn cpu_line(c: &CpuUse) -> String {
    format!(
        "{:.2} s (user {:.2}, sys {:.2}) = {:.0}% of a core, {} ns/request",
        c.seconds,
        c.user_s,
        c.sys_s,
        c.cores * 100.0,
        thousands(c.ns_per_request.round() as u64)
    )
}

/// The human-readable table.
pub fn render(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "xblade bench: target {} ({}) via {}, MTU {}, bufcnt {}, {} sectors/request max",
        r.target, r.target_mac, r.iface, r.mtu, r.bufcnt, r.max_sectors
    );
    let row = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "  {k:<15} {v}");
    };
    let cap = if r.window < r.window_requested {
        format!(" (asked {}, capped at bufcnt)", r.window_requested)
    } else {
        String::new()
    };
    row(
        &mut s,
        "workload",
        format!(
            "{}, {} sectors ({}) per request, window {}{cap}, {} queue{}, LBA range {} sectors",
            r.op,
            r.sectors,
            size(r.bytes_per_request),
            r.window,
            r.queues,
            if r.queues == 1 { "" } else { "s" },
            thousands(r.lba_range)
        ),
    );
    row(
        &mut s,
        "measured",
        format!("{:.2} s after {:.2} s warm-up", r.duration_s, r.warmup_s),
    );
    row(
        &mut s,
        "requests/s",
        thousands(r.requests_per_s.round() as u64),
    );
    row(&mut s, "MB/s", format!("{:.1}", r.mb_per_s));
    let l = &r.latency_us;
    row(
        &mut s,
        "latency",
        format!(
            "p50 {}   p99 {}   p99.9 {}   (min {}, mean {}, max {})",
            us(l.p50),
            us(l.p99),
            us(l.p999),
            us(l.min),
            us(l.mean),
            us(l.max)
        ),
    );
    row(
        &mut s,
        "requests",
        format!(
            "{} ({} reads, {} writes)",
            thousands(r.requests),
            thousands(r.reads),
            thousands(r.writes)
        ),
    );
    let e = &r.error_detail;
    let mut err = thousands(r.errors);
    if r.errors > 0 {
        let codes: Vec<String> = e
            .aoe_codes
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(c, n)| format!("code {c}: {n}"))
            .collect();
        let _ = write!(
            err,
            " (AoE error {}{}, ATA error {}, bad reply {})",
            e.aoe,
            if codes.is_empty() {
                String::new()
            } else {
                format!(" [{}]", codes.join(", "))
            },
            e.ata,
            e.bad_replies
        );
    }
    row(&mut s, "errors", err);
    row(
        &mut s,
        "retransmits",
        format!(
            "{} (stale replies dropped: {})",
            thousands(r.retransmits),
            thousands(r.stale_replies)
        ),
    );
    row(&mut s, "initiator CPU", cpu_line(&r.initiator_cpu));
    match &r.target_cpu {
        Some(t) => row(
            &mut s,
            "target CPU",
            format!(
                "{} (pid {}{})",
                cpu_line(&t.cpu),
                t.pid,
                t.name
                    .as_ref()
                    .map(|n| format!(", {n}"))
                    .unwrap_or_default()
            ),
        ),
        None => row(&mut s, "target CPU", "- (give --target-pid PID)".into()),
    }
    if let Some(v) = &r.verify {
        let mut line = format!(
            "{}: {} blocks written first, {} reads checked, {} mismatches",
            if v.ok { "ok" } else { "FAILED" },
            thousands(v.blocks),
            thousands(v.checked),
            thousands(v.mismatches)
        );
        for m in &v.first_mismatches {
            let _ = write!(line, "\n{:18}{m}", "");
        }
        row(&mut s, "verify", line);
    }
    for n in &r.notes {
        row(&mut s, "note", n.clone());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(size(1024), "1 KiB");
        assert_eq!(size(8704), "8.5 KiB");
        assert_eq!(us(12.34), "12.3 µs");
        assert_eq!(us(250.0), "250 µs");
        assert_eq!(us(25_000.0), "25.0 ms");
    }

    #[test]
    fn json_round_trip_and_table() {
        let r = BenchReport {
            target: "1.1".into(),
            requests: 10,
            requests_per_s: 5.0,
            errors: 1,
            error_detail: ErrorDetail {
                aoe: 1,
                aoe_codes: [0, 0, 0, 0, 0, 0, 1, 0],
                ..Default::default()
            },
            target_cpu: Some(TargetCpu {
                pid: 7,
                name: Some("vblade".into()),
                cpu: CpuUse::new((0.25, 0.75), 2.0, 10),
            }),
            ..Default::default()
        };
        let j = serde_json::to_string(&r).unwrap();
        let back: BenchReport = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
        let t = render(&r);
        assert!(t.contains("code 6: 1"), "{t}");
        assert!(t.contains("100,000,000 ns/request"), "{t}");
    }
}
