//! A store that completes later, out of order, through an eventfd (the
//! test-only `fake-async:SIZE`, see `src/bdev/fake.rs`), served by both
//! datapaths through the one worker loop: `xblade bench --verify` at window
//! 64 must read back every byte it wrote, with no error. This is the shape
//! of a network store (librbd): a frame stays owned by its request across
//! batches until the store hands its tag back. Built with the cargo feature
//! `test-stores` (scripts/test.sh); without it the test in `test_stores` fails.
//!
//! Prefixes: xbfa (AF_PACKET), xbfx (XDP), xbfj (XDP jumbo), xbfe.

mod aoe_support;
mod common;
mod test_stores;
mod xdp_support;

#[cfg(feature = "test-stores")]
use aoe_support::*;
#[cfg(feature = "test-stores")]
use common::{xblade_bin, NetPair, Proc};

#[cfg(feature = "test-stores")]
fn verify(pair: &NetPair, bytes: &str, pid: u32) {
    let pid = pid.to_string();
    #[rustfmt::skip]
    let (ok, log, r) = run_bench(pair, &[
        "--target", "1.1", "--op", "mix:60", "--bytes", bytes, "--duration", "2s",
        "--warmup", "200ms", "--window", "64", "--verify", "--lba-range", "8M",
        "--target-pid", &pid,
    ]);
    let r = check_clean(ok, &log, r);
    assert_eq!(r.window, 64, "{log}");
}

#[cfg(feature = "test-stores")]
#[test]
fn afpacket_serves_an_async_store() {
    test_stores::allow();
    let pair = NetPair::new("xbfa", 1500);
    let x = start_xblade(&pair, &["1", "1", pair.target_if(), "fake-async:16M"]);
    verify(&pair, "1k", x.pid());
}

#[cfg(feature = "test-stores")]
#[test]
fn xdp_serves_an_async_store() {
    test_stores::allow();
    let pair = NetPair::new("xbfx", 1500);
    let x = xdp_support::start_xdp(
        &pair,
        "native",
        &["1", "1", pair.target_if(), "fake-async:16M"],
    );
    verify(&pair, "1k", x.proc.pid());
    let w = x.worker0();
    assert_eq!(w["disk_errors"], 0, "{w}");
    assert_eq!(w["disk_in_flight"], 0, "{w}");
}

/// Jumbo frames: READ replies and WRITE requests of several fragments, whose
/// memory the store reaches through several segments.
#[cfg(feature = "test-stores")]
#[test]
fn xdp_jumbo_serves_an_async_store() {
    test_stores::allow();
    let pair = NetPair::new("xbfj", 9000);
    let x = xdp_support::start_xdp(
        &pair,
        "native",
        &["1", "1", pair.target_if(), "fake-async:16M"],
    );
    verify(&pair, "8k", x.proc.pid());
}

/// Outside the tests the store is refused, and the error names it.
#[cfg(feature = "test-stores")]
#[test]
fn fake_store_needs_the_test_switch() {
    let pair = NetPair::new("xbfe", 1500);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", pair.target_ns()])
        .arg(xblade_bin())
        .args([
            "--datapath",
            "afpacket",
            "1",
            "1",
            pair.target_if(),
            "fake-async:1M",
        ])
        .env_remove(xblade::bdev::TEST_STORES_ENV);
    let mut p = Proc::spawn(cmd, "xblade fake-async without switch");
    let st = p
        .wait_timeout(std::time::Duration::from_secs(10))
        .expect("xblade exits");
    assert!(!st.success());
    let log = p.log();
    assert!(
        log.contains("fake-async:1M") && log.contains("XBLADE_TEST_STORES=1"),
        "{log}"
    );
}
