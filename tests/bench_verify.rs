//! `xblade bench --verify` against the real xblade in a namespace: every
//! byte read back must be what was written (pattern first, mixed reads and
//! writes, read-back at the end), with zero errors; once at MTU 1500 with
//! one queue, once with jumbo frames and two queues (per-queue socket
//! filters on the tag).
//!
//! Prefixes (unique across all integration tests): xbbv, xbbj.

mod aoe_support;
mod common;

use aoe_support::*;
use common::{sparse_file, NetPair};

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
