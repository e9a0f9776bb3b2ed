//! `xblade bench --verify` against the real xblade in a namespace: every
//! byte read back must be what was written (pattern first, mixed reads and
//! writes, read-back at the end), with zero errors; once at MTU 1500 with
//! one queue, once with jumbo frames and two queues (per-queue socket
//! filters on the tag).
//!
//! Prefixes (unique across all integration tests): xbbv, xbbj.

mod aoe_support;
mod common;

use std::time::Duration;

use aoe_support::*;
use common::{sparse_file, temp_file, xblade_bin, NetPair, Proc};
use xblade::bench::report::BenchReport;

/// Longest a 2-second bench run may take, verify passes included.
const BENCH_LIMIT: Duration = Duration::from_secs(90);

/// Run `xblade bench ARGS --json FILE` in the initiator namespace; its
/// exit status, its output and its report.
pub fn run_bench(pair: &NetPair, args: &[&str]) -> (bool, String, Option<BenchReport>) {
    let json = temp_file("xblade-bench-json");
    let mut all = vec![
        "bench",
        "--iface",
        pair.initiator_if(),
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    let mut p = Proc::spawn_in_ns(pair.initiator_ns(), xblade_bin(), &all);
    let st = p
        .wait_timeout(BENCH_LIMIT)
        .unwrap_or_else(|| panic!("xblade bench hung ({BENCH_LIMIT:?}); output:\n{}", p.log()));
    let report = std::fs::read(json.path())
        .ok()
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::from_slice::<BenchReport>(&b).expect("bench JSON parses"));
    (st.success(), p.log(), report)
}

fn check_clean(ok: bool, log: &str, r: Option<BenchReport>) -> BenchReport {
    assert!(ok, "bench failed:\n{log}");
    let r = r.unwrap_or_else(|| panic!("no JSON report:\n{log}"));
    assert_eq!(r.errors, 0, "error replies:\n{log}");
    let v = r.verify.as_ref().expect("verify section");
    assert!(v.ok, "verify not ok:\n{log}");
    assert_eq!(v.mismatches, 0, "{log}");
    assert_eq!(
        v.prefill_writes, v.blocks,
        "every block written first:\n{log}"
    );
    assert!(
        v.checked > v.blocks,
        "reads checked (timed + read-back):\n{log}"
    );
    assert!(r.requests > 0 && r.reads > 0 && r.writes > 0, "{log}");
    assert!(r.requests_per_s > 0.0 && r.latency_us.p50 > 0.0, "{log}");
    assert!(log.contains("verify          ok"), "table printed:\n{log}");
    r
}

#[test]
fn verify_mixed_two_seconds_zero_errors() {
    let pair = NetPair::new("xbbv", 1500);
    let file = sparse_file(16 << 20);
    let x = start_xblade(&pair, &["1", "1", pair.target_if(), file.to_str().unwrap()]);
    let pid = x.pid().to_string();
    #[rustfmt::skip]
    let (ok, log, r) = run_bench(&pair, &[
        "--target", "1.1", "--op", "mix:70", "--duration", "2s", "--warmup", "200ms",
        "--window", "16", "--verify", "--lba-range", "4M", "--target-pid", &pid,
    ]);
    let r = check_clean(ok, &log, r);
    assert_eq!((r.sectors, r.window, r.queues), (2, 16, 1), "{log}");
    assert_eq!(r.lba_range, 8192);
    let t = r.target_cpu.as_ref().expect("target CPU with --target-pid");
    assert_eq!(t.pid, x.pid());
    assert!(t.cpu.seconds > 0.0 && t.cpu.ns_per_request > 0.0, "{log}");
    assert!(r.initiator_cpu.seconds > 0.0, "{log}");
}

#[test]
fn verify_jumbo_two_queues() {
    let pair = NetPair::new("xbbj", 9000);
    let file = sparse_file(16 << 20);
    let _x = start_xblade(&pair, &["1", "1", pair.target_if(), file.to_str().unwrap()]);
    #[rustfmt::skip]
    let (ok, log, r) = run_bench(&pair, &[
        "--target", "e1.1", "--op", "mix:50", "--bytes", "8k", "--duration", "2s",
        "--warmup", "0", "--window", "32", "--queues", "2", "--verify", "--lba-range", "8M",
    ]);
    let r = check_clean(ok, &log, r);
    assert_eq!((r.sectors, r.max_sectors, r.queues), (16, 17, 2), "{log}");
    // Each queue saw only its own replies: nothing stale on a clean link.
    assert_eq!(r.stale_replies, 0, "{log}");
}
