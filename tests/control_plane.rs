//! The control plane under stray and hostile clients (issue 18), on the
//! real binary in a network namespace (so the metrics port is private):
//!
//! - 50 idle TCP connections to `--metrics`, then a scrape: as fast as
//!   without them (a ratio, see [`assert_not_slowed`]); more idle
//!   connections than the cap: still served; idle ones dropped at their
//!   deadline;
//! - the same with 50 idle clients on the control socket and `xblade
//!   status`;
//! - malformed HTTP (garbage, a 1 MiB head, a request line with no end,
//!   clients that never read, wrong paths and methods) answered or
//!   dropped while a concurrent scrape loop and AoE reads go on;
//! - HTTP semantics: GET/HEAD `/metrics` 200 with the Prometheus
//!   Content-Type, 404, 405, 400;
//! - an idle daemon: the `xb-metrics` and `xb-control` threads do not
//!   wake (voluntary context switches flat over 5 s), and the main loop
//!   wakes at most twice in 5 s (it used to every 50 ms);
//! - the page parsed by the Python `prometheus_client` parser (Debian
//!   python3-prometheus-client, installed by scripts/setup.sh);
//! - `xblade status` against a control socket nobody serves (never
//!   accepts, backlog full, accepts and never answers) fails within a few
//!   seconds naming the problem;
//! - SIGTERM with idle clients on both listeners: a prompt, clean stop.
//!
//! Prefixes (unique across all integration tests): xbct1..xbct9.

mod aoe_support;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_support::{client, fill_random, start_xblade};
use aoe_wire::SECTOR_SIZE;
use common::{in_ns, sparse_file, temp_file, xblade_bin, NetPair, Proc, TempPath};

/// Where `--metrics` listens, inside the target namespace.
const METRICS: &str = "127.0.0.1:9750";

/// Every HTTP exchange in these tests gives up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The Python with Debian's python3-prometheus-client (not a pyenv or
/// venv `python3` earlier in PATH, which would lack it).
const PYTHON: &str = "/usr/bin/python3";

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A running daemon with both listeners, one export on AF_PACKET.
struct Daemon {
    proc: Proc,
    socket: TempPath,
    _file: TempPath,
    model: Vec<u8>,
}

impl Daemon {
    fn start(pair: &NetPair) -> Daemon {
        let file = sparse_file(1 << 20);
        let model = fill_random(&file, 18);
        let socket = temp_file("xblade-ctl-sock");
        let proc = start_xblade(
            pair,
            &[
                "--metrics",
                METRICS,
                "--control-socket",
                path_str(&socket),
                "--size-check",
                "0",
                "3",
                "7",
                pair.target_if(),
                path_str(&file),
            ],
        );
        Daemon {
            proc,
            socket,
            _file: file,
            model,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A TCP connection to the metrics endpoint, opened inside `ns`.
fn connect(ns: &str) -> TcpStream {
    let s = in_ns(ns, || TcpStream::connect(METRICS)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// An HTTP answer: status code, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Send `req` on a new connection, read the answer to EOF; with the time
/// from connect to EOF.
fn exchange(ns: &str, req: &[u8]) -> (Answer, Duration) {
    let t = Instant::now();
    let mut s = connect(ns);
    s.write_all(req).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read answer");
    (parse_answer(&raw), t.elapsed())
}

const SCRAPE: &[u8] =
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9750\r\nUser-Agent: control_plane test\r\nAccept: text/plain;version=0.0.4\r\n\r\n";

/// One scrape, checked: 200, Prometheus type, a page with our counters.
fn scrape(ns: &str) -> (String, Duration) {
    let (a, t) = exchange(ns, SCRAPE);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(a.body.contains("xblade_rx_frames_total{"), "{}", a.body);
    assert_eq!(
        a.header("content-length").and_then(|l| l.parse().ok()),
        Some(a.body.len())
    );
    (a.body, t)
}

/// Best (shortest) of `n` runs of `f`.
fn best_of(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().expect("n > 0")
}

/// Assert that `loaded` (best of N with idle clients) is not much slower
/// than `idle` (best of N without).
///
/// Why this holds on a noisy, shared 2-core machine: each figure is the
/// best of several runs, and noise (other builds, scheduling) only ever
/// adds time, so the minimum is what the code costs; the bound is a ratio
/// of two figures taken the same way moments apart, not an absolute time;
/// the idle figure is floored at 2 ms so that a sub-millisecond baseline
/// does not turn microseconds of jitter into a big ratio; and the bound
/// (10x) is loose against what it must catch: the old one-at-a-time
/// server took 2 s per idle client (50 clients: 100 s, a ratio of 10^4).
/// A one-second absolute ceiling is asserted too (the issue's figure),
/// far above either measured time.
fn assert_not_slowed(what: &str, idle: Duration, loaded: Duration) {
    let floor = idle.max(Duration::from_millis(2));
    let ratio = loaded.as_secs_f64() / floor.as_secs_f64();
    eprintln!(
        "{what}: idle best {idle:?}, loaded best {loaded:?}, raw ratio {:.2}, bounded ratio {ratio:.2} (idle floored at 2 ms)",
        loaded.as_secs_f64() / idle.as_secs_f64().max(1e-9)
    );
    assert!(
        ratio <= 10.0,
        "{what}: {loaded:?} with idle clients vs {idle:?} without (ratio {ratio:.1} > 10)"
    );
    assert!(loaded < Duration::from_secs(1), "{what}: {loaded:?}");
}

/// `xblade status --socket S` run from the root namespace (the socket is a
/// file): its output and wall time.
fn timed_status(socket: &Path) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let out = Command::new(xblade_bin())
        .args(["status", "--socket", path_str(socket)])
        .output()
        .expect("run xblade status");
    (out, t.elapsed())
}

/// `xblade status --socket S`, its wall time; panics unless it succeeds.
fn xblade_status(socket: &Path) -> Duration {
    let (out, el) = timed_status(socket);
    assert!(
        out.status.success(),
        "xblade status: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("e3.7"));
    el
}

#[test]
fn idle_tcp_connections_do_not_delay_a_scrape() {
    let pair = NetPair::new("xbct1", 1500);
    let mut d = Daemon::start(&pair);
    let ns = pair.target_ns();
    scrape(ns); // warm up (page cache, first render)
    let idle = best_of(7, || scrape(ns).1);

    let idlers: Vec<TcpStream> = (0..50).map(|_| connect(ns)).collect();
    let loaded = best_of(7, || scrape(ns).1);
    assert_not_slowed("scrape, 50 idle TCP connections", idle, loaded);

    // Beyond the cap (128): the oldest are dropped, new ones get in.
    let more: Vec<TcpStream> = (0..150).map(|_| connect(ns)).collect();
    let t_more = Instant::now();
    let crowded = best_of(7, || scrape(ns).1);
    assert_not_slowed("scrape, 200 idle TCP connections", idle, crowded);

    // Idle ones are dropped: the oldest to make room (or at their
    // deadline), the newest at its request deadline (3 s), not before.
    let closed = |mut s: &TcpStream| {
        let mut b = [0u8; 16];
        let n = s.read(&mut b);
        assert!(
            matches!(n, Ok(0)) || n.is_err(),
            "an idle connection got {n:?}"
        );
    };
    closed(&idlers[0]);
    closed(more.last().unwrap());
    let waited = t_more.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(8)).contains(&waited),
        "newest idle connection dropped after {waited:?} (request deadline 3 s)"
    );
    drop((idlers, more));
    assert!(d.proc.is_running(), "{}", d.proc.log());
}

#[test]
fn idle_unix_clients_do_not_delay_status() {
    let pair = NetPair::new("xbct2", 1500);
    let mut d = Daemon::start(&pair);
    xblade_status(&d.socket);
    let idle = best_of(5, || xblade_status(&d.socket));
    let idlers: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(&d.socket).expect("connect control socket"))
        .collect();
    let loaded = best_of(5, || xblade_status(&d.socket));
    assert_not_slowed("xblade status, 50 idle unix clients", idle, loaded);
    // A client that sends half a line and stalls: dropped (2 s), others fine.
    let mut half = UnixStream::connect(&d.socket).unwrap();
    half.write_all(b"sta").unwrap();
    half.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    xblade_status(&d.socket);
    let mut b = Vec::new();
    let t = Instant::now();
    let _ = half.read_to_end(&mut b);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(b.is_empty(), "{}", String::from_utf8_lossy(&b));
    drop(idlers);
    assert!(d.proc.is_running(), "{}", d.proc.log());
}

#[test]
fn http_semantics() {
    let pair = NetPair::new("xbct3", 1500);
    let _d = Daemon::start(&pair);
    let ns = pair.target_ns();
    let (body, _) = scrape(ns);
    assert!(body.contains("xblade_export_sectors{shelf=\"3\",slot=\"7\"} 2048"));

    let (head, _) = exchange(ns, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "HEAD sent a body: {head:?}");
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(len > 1000, "{head:?}");
    assert_eq!(
        head.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );

    let (q, _) = exchange(ns, b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n");
    assert_eq!(q.status, 200);
    for (req, want) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], 404),
        (b"GET /metrics/x HTTP/1.1\r\n\r\n", 404),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            405,
        ),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400), // a TLS hello
        (b"hello\r\n\r\n", 400),
    ] {
        let (a, _) = exchange(ns, req);
        assert_eq!(
            a.status,
            want,
            "{:?} -> {a:?}",
            String::from_utf8_lossy(req)
        );
        if want == 405 {
            assert_eq!(a.header("allow"), Some("GET, HEAD"));
        }
    }
}

#[test]
fn malformed_clients_do_not_disturb_scrapes_or_io() {
    let pair = NetPair::new("xbct4", 1500);
    let mut d = Daemon::start(&pair);
    let ns = pair.target_ns().to_string();
    scrape(&ns);
    let idle = best_of(5, || scrape(&ns).1);

    // A scrape loop running all along.
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (ns, stop) = (ns.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                times.push(scrape(&ns).1);
                std::thread::sleep(Duration::from_millis(20));
            }
            times
        })
    };

    // Garbage: answered 400.
    let (a, _) = exchange(&ns, b"\x00\x01\x02garbage\xff\r\n\r\n");
    assert_eq!(a.status, 400, "{a:?}");

    // A 1 MiB head: answered 400 after 8 KiB; the rest is read and
    // discarded so that the answer is not lost to a reset.
    let big = {
        let ns = ns.clone();
        std::thread::spawn(move || {
            let mut s = connect(&ns);
            let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
            req.resize(req.len() + (1 << 20), b'a');
            req.extend_from_slice(b"\r\n\r\n");
            let sent = s.write_all(&req);
            let mut raw = Vec::new();
            let got = s.read_to_end(&mut raw);
            (sent.is_ok(), got.is_ok(), raw)
        })
    };

    // A request line with no end (no CRLF, 4 KiB, then silence): dropped
    // at the request deadline.
    let mut endless = connect(&ns);
    let mut line = b"GET /metrics".to_vec();
    line.resize(4096, b'x');
    endless.write_all(&line).unwrap();

    // Clients that send a request and never read (small receive buffer).
    let deaf: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = connect(&ns);
            set_rcvbuf(&s, 256);
            (&s).write_all(SCRAPE).unwrap();
            s
        })
        .collect();

    // AoE I/O meanwhile: reads checked against the file.
    let mut c = client(&pair);
    let t = c.find(3, 7).expect("find 3.7");
    for k in 0..100u64 {
        let lba = (k * 37) % 2000;
        let got = c.read(&t, lba, 8).expect("read");
        let at = lba as usize * SECTOR_SIZE;
        assert_eq!(got, d.model[at..at + 8 * SECTOR_SIZE], "lba {lba}");
    }

    let (sent, got, raw) = big.join().unwrap();
    assert!(sent && got, "1 MiB head: send ok {sent}, read ok {got}");
    let a = parse_answer(&raw);
    assert_eq!(a.status, 400, "{a:?}");
    let t0 = Instant::now();
    let mut b = Vec::new();
    let r = endless.read_to_end(&mut b);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "request line with no end held {:?}",
        t0.elapsed()
    );
    assert!(
        r.is_err() || b.is_empty() || parse_answer(&b).status == 400,
        "{r:?} {b:?}"
    );
    // The deaf clients got dropped or served; scrapes went on.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let times = scraper.join().expect("scrape loop");
    let worst = times.iter().max().copied().unwrap_or_default();
    let best = times.iter().min().copied().unwrap_or_default();
    eprintln!(
        "{} scrapes during the barrage: best {best:?}, worst {worst:?} (idle best {idle:?})",
        times.len()
    );
    assert!(times.len() >= 5, "only {} scrapes", times.len());
    assert_not_slowed("scrape during malformed clients", idle, best);
    // Every scrape, not only the best, stayed well under a deadline's worth.
    assert!(worst < Duration::from_secs(1), "worst scrape {worst:?}");
    drop(deaf);
    assert!(d.proc.is_running(), "{}", d.proc.log());
}

fn set_rcvbuf(s: &TcpStream, bytes: libc::c_int) {
    // SAFETY: setsockopt(2) reads `bytes` (a live c_int) for the duration
    // of the call; the descriptor is ours.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::addr_of!(bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
}

/// Voluntary context switches of each thread of `pid` whose name passes
/// `keep`.
fn thread_switches(pid: u32, keep: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !keep(comm) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).expect("status");
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("voluntary_ctxt_switches");
        v.push((comm.to_string(), n));
    }
    v.sort();
    v
}

#[test]
fn idle_daemon_control_threads_do_not_wake() {
    let pair = NetPair::new("xbct5", 1500);
    let d = Daemon::start(&pair);
    // Both listeners used once, then left alone.
    scrape(pair.target_ns());
    xblade_status(&d.socket);
    std::thread::sleep(Duration::from_millis(200));
    let names = ["xb-metrics", "xb-control"];
    let all_before = thread_switches(d.pid(), |_| true);
    let before = thread_switches(d.pid(), |n| names.contains(&n));
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["xb-control", "xb-metrics"],
        "control threads by name: {before:?}"
    );
    std::thread::sleep(Duration::from_secs(5));
    let after = thread_switches(d.pid(), |n| names.contains(&n));
    let all_after = thread_switches(d.pid(), |_| true);
    eprintln!("voluntary context switches over 5 s: before {before:?}, after {after:?}");
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        // The old loops slept 50 ms at a time: 100 per 5 s each.
        assert!(b - a <= 1, "{n} woke {} times in 5 s while idle", b - a);
    }
    // For the report: every thread of the process over the same 5 s.
    let delta: Vec<(String, u64)> = all_after
        .iter()
        .map(|(n, b)| {
            let a = all_before.iter().find(|(m, _)| m == n).map_or(0, |x| x.1);
            (n.clone(), b - a)
        })
        .collect();
    eprintln!("voluntary context switches of every thread over 5 s: {delta:?}");
}

/// Voluntary context switches of the main thread of `pid` (the service
/// loop: signals, control requests, size checks, watchdog).
fn main_thread_switches(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

#[test]
fn idle_daemon_main_loop_sleeps() {
    let pair = NetPair::new("xbct8", 1500);
    // No size checks (--size-check 0), no systemd watchdog: the loop has
    // only its look at the workers' pulse (every 5 s) to wake for.
    let mut d = Daemon::start(&pair);
    xblade_status(&d.socket);
    std::thread::sleep(Duration::from_millis(200));
    let before = main_thread_switches(d.pid());
    std::thread::sleep(Duration::from_secs(5));
    let woke = main_thread_switches(d.pid()) - before;
    eprintln!("main thread: {woke} voluntary context switches over 5 s idle");
    // The old loop slept 50 ms at a time: 100 per 5 s.
    assert!(
        woke <= 2,
        "the main loop woke {woke} times in 5 s while idle"
    );
    // Still awake to what it serves: a resize (answered by the main loop)
    // at once.
    let t = Instant::now();
    let out = Command::new(xblade_bin())
        .args(["resize", "3.7", "--socket", path_str(&d.socket)])
        .output()
        .expect("run xblade resize");
    let msg =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "xblade resize: {msg}");
    assert!(msg.contains("unchanged"), "xblade resize: {msg}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "resize took {:?}",
        t.elapsed()
    );
    assert!(d.proc.is_running(), "{}", d.proc.log());
}

/// Parse `text` with the Python `prometheus_client` parser, with checks
/// the parser leaves out; returns the number of families.
fn python_parse(text: &str) -> usize {
    let script = r#"
import sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    sys.exit("prometheus_client missing (Debian python3-prometheus-client; run scripts/setup.sh): %s" % e)
text = sys.stdin.read()
fams = list(text_string_to_metric_families(text))
names = [f.name for f in fams]
assert len(names) == len(set(names)), "duplicate families: %r" % names
for f in fams:
    assert f.type in ("counter", "gauge"), (f.name, f.type)
    assert f.documentation, "no HELP for " + f.name
    assert f.samples, "no samples for " + f.name
    for s in f.samples:
        if f.type == "counter":
            assert s.name == f.name + "_total", (f.name, s.name)
        assert s.value >= 0, s
print(len(fams))
"#;
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{PYTHON}: {e} (install python3 and python3-prometheus-client: scripts/setup.sh)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the page: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn page_passes_the_prometheus_parser() {
    // The XDP section, from counters (no XDP needed for its text).
    let w = xblade::stats::WorkerStats {
        iface: "eth1".into(),
        queue: 1,
        xdp: Some(xblade::stats::XdpStats {
            mode: "native",
            zero_copy: true,
            rx_ring_full: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    let synthetic = xblade::control::prometheus_text(&[w.clone(), w]);
    let n = python_parse(&synthetic);
    assert!(n > 20, "{n} families");
    // What is not served, and duplicates seen (issue 23).
    let st: xblade::control::Status = serde_json::from_value(serde_json::json!({
        "pid": 1, "datapath": "afpacket", "exports": [], "workers": [],
        "not_serving": [
            {"kind": "export", "name": "e1.2", "reason": "cannot open \"/x\"",
             "since_secs": 1, "retry_in_secs": 2, "attempts": 1},
            {"kind": "interface", "name": "eth2", "reason": "waiting for eth2",
             "since_secs": 1, "retry_in_secs": null, "attempts": 0}
        ],
        "duplicates": [{"iface": "eth1", "shelf": 1, "slot": 2, "mac": "02:00:00:00:00:01",
                        "count": 3, "last_secs_ago": 0}]
    }))
    .unwrap();
    let page = xblade::control::prometheus_availability(&st);
    assert_eq!(python_parse(&page), 2, "{page}");

    // A live page.
    let pair = NetPair::new("xbct6", 1500);
    let _d = Daemon::start(&pair);
    let mut c = client(&pair);
    let t = c.find(3, 7).expect("find");
    c.read(&t, 0, 2).expect("read");
    let (body, _) = scrape(pair.target_ns());
    let n = python_parse(&body);
    eprintln!("live page: {n} families, {} bytes", body.len());
    assert!(n >= 10, "{n} families");
}

/// `xblade status --socket S` fails within a few seconds, saying why.
fn assert_status_fails_fast(socket: &Path, case: &str) {
    let (out, el) = timed_status(socket);
    let text = String::from_utf8_lossy(&out.stderr);
    eprintln!("{case}: {el:?}: {}", text.trim());
    assert!(!out.status.success(), "{case}: status succeeded");
    assert!(
        el < Duration::from_secs(6),
        "{case}: xblade status took {el:?}"
    );
    assert!(
        text.contains("not serving its control socket"),
        "{case}: unclear message: {text}"
    );
    assert!(text.contains(path_str(socket)), "{case}: {text}");
}

#[test]
fn status_against_a_stuck_control_socket_fails_fast() {
    let dir = std::env::temp_dir();
    let path = |k: &str| dir.join(format!("xblade-ctl-stuck-{}-{k}.sock", std::process::id()));

    // Never accepts (the connection waits in the backlog).
    let p1 = path("noaccept");
    let _ = std::fs::remove_file(&p1);
    let l1 = UnixListener::bind(&p1).unwrap();
    assert_status_fails_fast(&p1, "never accepts");

    // Backlog full: a blocking connect would wait forever.
    // SAFETY: listen(2) on our own listening socket; no memory passed.
    assert_eq!(unsafe { libc::listen(l1.as_raw_fd(), 0) }, 0);
    let mut fillers = Vec::new();
    for _ in 0..4 {
        // Non-blocking fill until the kernel refuses (at most a few: the
        // connection of the case above still waits in the backlog).
        match nonblocking_connect(&p1) {
            Some(s) => fillers.push(s),
            None => break,
        }
    }
    assert!(
        nonblocking_connect(&p1).is_none(),
        "backlog not full after {} connections",
        fillers.len()
    );
    assert_status_fails_fast(&p1, "backlog full");
    drop(l1);
    let _ = std::fs::remove_file(&p1);

    // Accepts and never answers.
    let p2 = path("noanswer");
    let _ = std::fs::remove_file(&p2);
    let l2 = UnixListener::bind(&p2).unwrap();
    let holder = std::thread::spawn(move || {
        let (s, _) = l2.accept().unwrap();
        std::thread::sleep(Duration::from_secs(8));
        drop(s);
    });
    assert_status_fails_fast(&p2, "accepts, never answers");
    let _ = std::fs::remove_file(&p2);
    drop(holder); // detached: it ends by itself
}

/// A non-blocking connect: `None` when the backlog is full (EAGAIN).
fn nonblocking_connect(p: &Path) -> Option<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor owned by nobody else.
    let s = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, b) in addr.sun_path.iter_mut().zip(p.as_os_str().as_bytes()) {
        *d = *b as libc::c_char;
    }
    // SAFETY: `addr` is live and initialised for the call; connect reads it.
    let rc = unsafe {
        libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Some(s);
    }
    let e = std::io::Error::last_os_error();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "connect: {e}");
    None
}

#[test]
fn sigterm_with_idle_clients_stops_promptly() {
    let pair = NetPair::new("xbct7", 1500);
    let mut d = Daemon::start(&pair);
    let ns = pair.target_ns();
    let _tcp: Vec<TcpStream> = (0..50).map(|_| connect(ns)).collect();
    let _unix: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    d.proc.terminate();
    let st = d
        .proc
        .wait_timeout(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("still running 3 s after SIGTERM:\n{}", d.proc.log()));
    eprintln!("stopped in {:?}: {st}", t.elapsed());
    assert!(st.success(), "{st}\n{}", d.proc.log());
    assert!(!d.socket.exists(), "control socket left behind");
}
