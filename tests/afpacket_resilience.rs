//! The AF_PACKET datapath survives what links do in production: going down
//! and up, and an MTU changed while serving.
//!
//! Prefixes (unique across all integration tests): xr01..xr02.

mod aoe_support;
mod common;

use std::time::Duration;

use aoe_support::*;
use common::{run_in_ns, sparse_file, NetPair};

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn link_down_and_up_keeps_serving() {
    let pair = NetPair::new("xr01", 1500);
    let file = sparse_file(1 << 20);
    let mut xb = start_xblade(&pair, &["1", "1", pair.target_if(), path_str(&file)]);
    let mut c = client(&pair);
    let t = discover(&mut c, 1, 1).remove(0);
    let data = rand_bytes(1, 1024);
    c.write(&t, 4, &data).unwrap();
    let ip = |state: &str| {
        let out = run_in_ns(
            pair.target_ns(),
            "ip",
            ["link", "set", pair.target_if(), state],
        );
        assert!(out.status.success(), "ip link set {state}");
    };
    ip("down");
    std::thread::sleep(Duration::from_millis(500));
    assert!(xb.is_running(), "xblade exited when its link went down");
    ip("up");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.read(&t, 4, 2).unwrap(),
        data,
        "served again after link up"
    );
    assert!(xb.is_running());
    xb.wait_for_log("link back", Duration::from_secs(5));
}

#[test]
fn mtu_lowered_while_serving_is_followed() {
    let pair = NetPair::new("xr02", 9000);
    let file = sparse_file(1 << 20);
    let mut xb = start_xblade(&pair, &["1", "1", pair.target_if(), path_str(&file)]);
    let mut c = client(&pair);
    let t = discover(&mut c, 1, 1).remove(0);
    assert_eq!(t.max_sectors, 17);
    let data = rand_bytes(2, 17 * 512);
    c.write(&t, 0, &data).unwrap();
    pair.set_mtu(1500);
    std::thread::sleep(Duration::from_millis(600));
    // A 17-sector read no longer fits the link: refused (ABRT), not fatal.
    let r = c.ata(&t, 0x24, 17, 0, &[]).unwrap();
    assert_eq!((r.status, r.error), (0x41, 0x04), "{r:?}");
    assert!(xb.is_running(), "xblade exited after the MTU went down");
    let mut c = client(&pair);
    let t = discover(&mut c, 1, 1).remove(0);
    assert_eq!(t.max_sectors, 2, "advertises what the new MTU carries");
    assert_eq!(c.read(&t, 0, 2).unwrap(), data[..1024]);
}
