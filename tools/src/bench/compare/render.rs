//! The comparison's table, and the ratios it shows.

use std::fmt::Write as _;

use super::plan::{Backing, Impl, Workload, WORKLOADS};
use super::{Cell, CompareReport, Status};
use crate::bench::report::thousands;

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

pub(super) fn runs(v: &[f64]) -> String {
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
    use super::plan::plan;
    use crate::bench::report::{BenchReport, CpuUse, TargetCpu};
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
    use super::super::plan::TargetCfg;
    use super::*;
    use crate::bench::report::BenchReport;

    #[test]
    fn ratios_against_vblade() {
        let rep = |rps: f64, ns: f64| BenchReport {
            requests_per_s: rps,
            target_cpu: Some(crate::bench::report::TargetCpu {
                pid: 1,
                name: None,
                cpu: crate::bench::report::CpuUse {
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
