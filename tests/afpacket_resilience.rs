//! The AF_PACKET datapath survives what links do in production: going down
//! and up, and an MTU changed while serving; and it counts the requests the
//! kernel drops when its socket buffer overflows.
//!
//! Prefixes (unique across all integration tests): xr01..xr03.

mod aoe_support;
mod common;
mod xdp_support;

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
    assert_eq!((r.status(), r.error()), (0x41, 0x04), "{r:?}");
    assert!(xb.is_running(), "xblade exited after the MTU went down");
    let mut c = client(&pair);
    let t = discover(&mut c, 1, 1).remove(0);
    assert_eq!(t.max_sectors, 2, "advertises what the new MTU carries");
    assert_eq!(c.read(&t, 0, 2).unwrap(), data[..1024]);
}

/// A stopped worker lets its socket buffer fill: the kernel drops the
/// overflow, and once the worker runs again the counters say how many
/// (`rx_kernel_dropped`, from PACKET_STATISTICS), so received plus dropped
/// account for what was sent.
#[test]
fn kernel_drops_are_counted() {
    use aoe_wire::ata::Opcode;
    use aoe_wire::request;

    let pair = NetPair::new("xr03", 1500);
    let file = sparse_file(1 << 20);
    let xb = xdp_support::start_with(
        &pair,
        "afpacket",
        &["3", "3", pair.target_if(), path_str(&file)],
    );
    let mut c = client(&pair);
    let t = discover(&mut c, 3, 3).remove(0);
    let before = xb.worker0();
    let sock =
        common::PacketSocket::open_in(pair.initiator_ns(), pair.initiator_if(), 0x88a2).unwrap();
    let a = request::Addr {
        dst: t.mac,
        src: mac(pair.initiator_mac()),
        major: 3,
        minor: 3,
    };
    let mut buf = [0u8; 64];
    let pid = xb.proc.pid() as i32;
    const SENT: u64 = 40_000;
    // SAFETY: signals to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    for tag in 0..SENT {
        let n = request::ata(&mut buf, &a, tag as u32, Opcode::Read, 1, 0, &[]);
        sock.send(&buf[..n]).unwrap();
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    let w = xb.worker0();
    let n =
        |w: &serde_json::Value, k: &str| w[k].as_u64().unwrap_or_else(|| panic!("no {k} in {w}"));
    let received = n(&w, "rx_frames") - n(&before, "rx_frames");
    let dropped = n(&w, "rx_kernel_dropped") - n(&before, "rx_kernel_dropped");
    eprintln!("sent {SENT}: received {received}, kernel dropped {dropped}");
    assert!(
        dropped > 0,
        "a socket buffer of {SENT} requests must overflow: {w}"
    );
    // The rest may also be lost before the socket (the veth backlog); none
    // is counted twice.
    assert!(
        received + dropped <= SENT,
        "received {received} + dropped {dropped} > sent {SENT}"
    );
    assert!(
        received + dropped >= SENT * 9 / 10,
        "received {received} + dropped {dropped} of {SENT}"
    );
    let _ = c.read(&t, 0, 1).unwrap();
}
