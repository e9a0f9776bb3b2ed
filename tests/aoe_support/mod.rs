//! Helpers shared by the AoE integration tests, on top of `tests/common`:
//! starting the real `xblade` binary in a target namespace, opening an
//! [`xblade_tools::initiator::client::Client`] in an initiator namespace, hand-made
//! frames and deterministic test data.
//!
//! Use with `mod common; mod aoe_support;` in the test crate.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use aoe_wire::{MacAddr, ETHERTYPE_AOE, SECTOR_SIZE};
use xblade::net::iface::IfaceInfo;
use xblade_tools::initiator::client::{Client, ReplyHeader};

use crate::common::{enter_ns, mtu_of, xblade_bin, NetPair, PacketSocket as HarnessSocket, Proc};

/// How long xblade may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait used where silence is the expected answer.
pub const SILENCE: Duration = Duration::from_millis(300);

/// A `MacAddr` from the harness's byte arrays.
pub fn mac(b: [u8; 6]) -> MacAddr {
    MacAddr(b)
}

/// Open a client on `ifname` in namespace `ns`. The interface facts come
/// from the harness (sysfs in this process shows the root namespace, so
/// `Client::open` cannot be used from a `setns`ed thread); the socket is
/// opened inside `ns` and stays there.
pub fn client_in(ns: &str, ifname: &str) -> Client {
    let probe = HarnessSocket::open_in(ns, ifname, ETHERTYPE_AOE)
        .unwrap_or_else(|e| panic!("probe socket on {ifname} in {ns}: {e}"));
    let info = IfaceInfo {
        name: ifname.to_string(),
        index: u32::try_from(probe.ifindex()).expect("ifindex"),
        mac: MacAddr(probe.mac()),
        mtu: mtu_of(ns, ifname),
    };
    drop(probe);
    let _g = enter_ns(ns);
    Client::with_iface(info).unwrap_or_else(|e| panic!("client on {ifname} in {ns}: {e}"))
}

/// The initiator-side client of link 0.
pub fn client(pair: &NetPair) -> Client {
    client_in(pair.initiator_ns(), pair.initiator_if())
}

/// Start `xblade --datapath afpacket ARGS...` in the pair's target namespace
/// and wait until it serves.
pub fn start_xblade(pair: &NetPair, args: &[&str]) -> Proc {
    let mut all = vec!["--datapath", "afpacket"];
    all.extend_from_slice(args);
    let mut p = Proc::spawn_in_ns(pair.target_ns(), xblade_bin(), &all);
    p.wait_for_log("xblade serving", START_TIMEOUT);
    p
}

/// Run `f` with a short timeout and no retransmission: for requests whose
/// expected answer is silence.
pub fn quietly<T>(c: &mut Client, f: impl FnOnce(&mut Client) -> T) -> T {
    let (t, r) = (c.timeout(), c.retries());
    c.set_timeout(SILENCE);
    c.set_retries(0);
    let out = f(c);
    c.set_timeout(t);
    c.set_retries(r);
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn rand_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `n` sectors of the file at sector `lba`, read on the host.
pub fn file_sectors(path: &Path, lba: u64, n: u64) -> Vec<u8> {
    let f = fs::File::open(path).expect("open backing file");
    let mut b = vec![0u8; n as usize * SECTOR_SIZE];
    f.read_exact_at(&mut b, lba * SECTOR_SIZE as u64)
        .expect("read backing file");
    b
}

/// Fill the whole file with random bytes and return them.
pub fn fill_random(path: &Path, seed: u64) -> Vec<u8> {
    let len = fs::metadata(path).expect("stat").len() as usize;
    let data = rand_bytes(seed, len);
    fs::write(path, &data).expect("fill backing file");
    data
}

/// Assert the file's bytes equal `model`, naming the first differing sector.
pub fn assert_file_is(path: &Path, model: &[u8]) {
    let now = fs::read(path).expect("read backing file");
    assert_eq!(now.len(), model.len(), "backing file changed size");
    if let Some(i) = now.iter().zip(model).position(|(a, b)| a != b) {
        panic!(
            "backing file differs from the expected content at byte {i} (sector {})",
            i / SECTOR_SIZE
        );
    }
}

/// A hand-made AoE frame (the initiator's own builder).
#[allow(unused_imports)]
// not every test binary that includes this module builds frames by hand
pub use aoe_wire::request::raw_frame;

/// The 12-byte argument of an IDENTIFY as Linux sends it.
pub const IDENTIFY_ARG: [u8; 12] = [0, 0, 1, 0xec, 0, 0, 0, 0xa0, 0, 0, 0, 0];

/// Matches any frame carrying `tag` (request or reply, any addressing), so
/// that "no reply" checks see anything at all that answers.
pub fn with_tag(tag: u32) -> impl Fn(&[u8]) -> bool {
    move |f| ReplyHeader::parse(f).is_some_and(|h| h.tag() == tag)
}

/// Every frame in `frames` is at least the 60-byte Ethernet minimum, and
/// where a reply's natural length is below 60 the filler is zeros (vblade
/// sends stale buffer bytes there). Error replies (E set) echo the
/// request's argument, whose length the reply does not state, so only
/// their size is checked.
pub fn assert_replies_padded(frames: &[Vec<u8>]) {
    assert!(!frames.is_empty(), "no frame captured");
    for f in frames {
        let head = &f[..f.len().min(40)];
        assert!(
            f.len() >= 60,
            "a {}-byte frame arrived from the target (all must be padded to 60): {head:02x?}",
            f.len()
        );
        let Some(h) = ReplyHeader::parse(f) else {
            continue;
        };
        if h.is_error() || !h.is_response() {
            continue;
        }
        let natural = match u8::from(h.aoe.command) {
            0 if f.len() == 60 => 36,
            1 => 32 + usize::from(u16::from_be_bytes([f[30], f[31]])),
            2 => 28 + 8 * usize::from(f[27]),
            3 => 26 + 6 * usize::from(f[25]),
            _ => 60,
        };
        if natural < 60 {
            assert!(
                f[natural..60].iter().all(|&b| b == 0),
                "reply padding after byte {natural} is not zero: {:02x?}",
                &f[..60]
            );
        }
    }
}

/// `discover` waits its whole timeout for further replies: on a veth link
/// every reply is in within microseconds, so a short window suffices.
pub fn discover(
    c: &mut Client,
    major: u16,
    minor: u8,
) -> Vec<xblade_tools::initiator::client::Target> {
    let t = c.timeout();
    c.set_timeout(Duration::from_millis(250));
    let found = c.discover(major, minor);
    c.set_timeout(t);
    found.unwrap_or_else(|e| panic!("discover {major:#x}.{minor:#x}: {e}"))
}

/// [`discover`] until at least `want` targets answered (at most 4
/// broadcasts, answers merged, sorted by minor). AoE discovery is a
/// broadcast with no retransmission of single replies: a reply lost on the
/// way is only made up by asking again, as initiators do (the Linux aoe
/// driver re-sends its Query Config periodically). A test that needs every
/// target of a wildcard asks again instead of failing on one lost frame.
pub fn discover_at_least(
    c: &mut Client,
    major: u16,
    minor: u8,
    want: usize,
) -> Vec<xblade_tools::initiator::client::Target> {
    let mut all: Vec<xblade_tools::initiator::client::Target> = Vec::new();
    for _ in 0..4 {
        for t in discover(c, major, minor) {
            if !all
                .iter()
                .any(|x| (x.mac, x.major, x.minor) == (t.mac, t.major, t.minor))
            {
                all.push(t);
            }
        }
        if all.len() >= want {
            break;
        }
    }
    all.sort_by_key(|t| (t.major, t.minor));
    all
}

// ---- xblade bench --verify ---------------------------------------------

/// Longest a 2-second bench run may take, verify passes included.
pub const BENCH_LIMIT: Duration = Duration::from_secs(90);

/// Run `xblade bench ARGS --json FILE` in the initiator namespace; its
/// exit status, its output and its report.
pub fn run_bench(
    pair: &crate::common::NetPair,
    args: &[&str],
) -> (
    bool,
    String,
    Option<xblade_tools::bench::report::BenchReport>,
) {
    let (ok, log, report, _) = run_bench_within(pair, args, BENCH_LIMIT);
    (ok, log, report)
}

/// As [`run_bench`], failing past `limit`; also the wall time it took.
pub fn run_bench_within(
    pair: &crate::common::NetPair,
    args: &[&str],
    limit: Duration,
) -> (
    bool,
    String,
    Option<xblade_tools::bench::report::BenchReport>,
    Duration,
) {
    crate::common::require_tools_bin();
    let json = crate::common::temp_file("xblade-bench-json");
    let mut all = vec![
        "bench",
        "--iface",
        pair.initiator_if(),
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    let t0 = std::time::Instant::now();
    let mut p = Proc::spawn_in_ns(pair.initiator_ns(), xblade_bin(), &all);
    let st = p
        .wait_timeout(limit)
        .unwrap_or_else(|| panic!("xblade bench hung (over {limit:?}); output:\n{}", p.log()));
    let took = t0.elapsed();
    let report = std::fs::read(json.path())
        .ok()
        .filter(|b| !b.is_empty())
        .map(|b| {
            serde_json::from_slice::<xblade_tools::bench::report::BenchReport>(&b)
                .expect("bench JSON parses")
        });
    (st.success(), p.log(), report, took)
}

pub fn check_clean(
    ok: bool,
    log: &str,
    r: Option<xblade_tools::bench::report::BenchReport>,
) -> xblade_tools::bench::report::BenchReport {
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
