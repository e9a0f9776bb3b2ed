//! A store that fails requests (the test-only `fake-async:SIZE` with
//! `XBLADE_TEST_FAIL_SECTORS`, see `src/bdev/fake.rs`): each failed READ or
//! WRITE must reach the initiator as an ATA error reply to that very
//! request, at once, on both datapaths, for one-chunk (1 KiB at MTU 1500)
//! and multi-chunk (8 KiB at MTU 9000) requests, at window 1 and 16.
//! `xblade bench` then counts every request as an ATA error, with no
//! retransmission and no stale reply (issue 22: error replies went out one
//! per retry, each answering an older request). The failures count in
//! `disk_errors` (status and Prometheus) and are logged at a bounded rate.
//!
//! Built with the cargo feature `test-stores` (scripts/test.sh); without it
//! the test in `test_stores` fails.
//!
//! Prefixes: xkea, xkej (AF_PACKET), xkex, xkey (XDP).

mod aoe_support;
mod common;
mod test_stores;
mod xdp_support;

#[cfg(feature = "test-stores")]
use aoe_support::*;
#[cfg(feature = "test-stores")]
use common::NetPair;

/// Let `fake-async:` through and fail every sector of it.
#[cfg(feature = "test-stores")]
fn fail_everything() {
    test_stores::allow();
    std::env::set_var(xblade::bdev::fake::FAIL_ENV, "0-1000000000");
}

/// Bench `bytes` requests, half reads, at `window`: every one must come
/// back as an ATA error at the first transmission. Returns the requests
/// issued.
#[cfg(feature = "test-stores")]
fn every_request_is_an_ata_error(pair: &NetPair, bytes: &str, window: &str) -> u64 {
    #[rustfmt::skip]
    let (ok, log, r) = run_bench(pair, &[
        "--target", "1.1", "--op", "mix:50", "--bytes", bytes, "--duration", "1s",
        "--warmup", "100ms", "--window", window, "--lba-range", "8M",
        "--timeout", "700", "--retries", "2",
    ]);
    assert!(!ok, "bench must fail on error replies:\n{log}");
    assert!(
        log.contains("answered") && log.contains("with errors"),
        "the run fails for the error replies, not for lost ones:\n{log}"
    );
    let r = r.unwrap_or_else(|| panic!("no JSON report:\n{log}"));
    let t = &r.phases.timed;
    assert!(t.issued > 0, "{log}");
    assert_eq!(t.ok, 0, "{log}");
    assert_eq!(r.error_detail.ata, r.errors, "only ATA errors:\n{log}");
    assert_eq!(
        t.ata_errors, t.completed,
        "every request an ATA error:\n{log}"
    );
    assert_eq!(t.completed, t.issued, "every request answered:\n{log}");
    assert_eq!(
        r.retransmits, 0,
        "answered at once, not after a retry:\n{log}"
    );
    assert_eq!(
        r.stale_replies, 0,
        "no reply to an older transmission:\n{log}"
    );
    t.issued
}

/// Both windows, then the counters: every request failed in the store once.
#[cfg(feature = "test-stores")]
fn check(pair: &NetPair, bytes: &str, status: impl Fn() -> serde_json::Value) {
    let n = every_request_is_an_ata_error(pair, bytes, "1")
        + every_request_is_an_ata_error(pair, bytes, "16");
    std::thread::sleep(std::time::Duration::from_millis(400));
    let w = status();
    assert_eq!(w["disk_errors"].as_u64(), Some(n), "{w}");
    assert_eq!(w["disk_in_flight"], 0, "{w}");
}

/// Serve `fake-async:16M` failing everything on `datapath` at `mtu` and
/// check `bytes` requests.
#[cfg(feature = "test-stores")]
fn run(prefix: &str, datapath: &str, mtu: u32, bytes: &str) {
    fail_everything();
    let pair = NetPair::new(prefix, mtu);
    let args = ["1", "1", pair.target_if(), "fake-async:16M"];
    let x = if datapath == "xdp" {
        xdp_support::start_xdp(&pair, "native", &args)
    } else {
        xdp_support::start_with(&pair, datapath, &args)
    };
    check(&pair, bytes, || x.status().workers[0].clone());
    // Bounded logging: hundreds of failures, a handful of lines.
    let lines = x.proc.log().matches("disk I/O failed").count();
    assert!((1..=30).contains(&lines), "{lines} failure lines");
}

#[cfg(feature = "test-stores")]
#[test]
fn afpacket_one_chunk_errors_answered_at_once() {
    run("xkea", "afpacket", 1500, "1k");
}

#[cfg(feature = "test-stores")]
#[test]
fn afpacket_jumbo_errors_answered_at_once() {
    run("xkej", "afpacket", 9000, "8k");
}

#[cfg(feature = "test-stores")]
#[test]
fn xdp_one_chunk_errors_answered_at_once() {
    run("xkex", "xdp", 1500, "1k");
}

#[cfg(feature = "test-stores")]
#[test]
fn xdp_multi_buffer_errors_answered_at_once() {
    run("xkey", "xdp", 9000, "8k");
}
