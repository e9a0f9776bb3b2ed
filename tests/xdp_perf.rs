//! Measurement, not a pass/fail test (hence `#[ignore]`): user-space and
//! kernel CPU time per request of one datapath worker.
//!
//! Two estimates of the user share, printed side by side:
//! - ticks: /proc/PID/task/TID/stat (utime, stime) against the replies
//!   counted over the same interval (10 ms granularity: noisy);
//! - perf: the worker's CPU time per request (from /proc) times the share
//!   of `perf record -C 1` samples (cpu-clock: the dev VM has no hardware
//!   counters) of the worker thread that landed outside the kernel. Sampling
//!   costs the worker some throughput, so this figure is pessimistic.
//!
//! A flooder in the initiator namespace, pinned to CPU 0, keeps a window of
//! READ requests in flight through an AF_PACKET socket (sendmmsg and
//! recvmmsg) and never sleeps, so the worker (pinned to CPU 1, no idle
//! polling: `--spin-us 0`) stays busy.
//!
//! ```text
//! cargo test --release --test xdp_perf -- --ignored --nocapture --test-threads=1
//! XBLADE_PERF_RUNS=5 cargo test ...   # runs per scenario (default 3), then the median
//! XBLADE_PERF_ONLY="file  1-sector" cargo test ...   # only the scenarios whose label has this
//! XBLADE_PERF_KEEP=1 cargo test ...   # keep the perf data (path printed) for `perf report --sort sym`
//! ```
//!
//! Prefixes: xx20..xx29.

mod aoe_support;
mod common;
mod xdp_support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{enter_ns, sparse_file, NetPair};
use xdp_support::*;

/// Seconds measured per scenario.
const SECS: f64 = 5.0;
const WINDOW: usize = 64;
/// perf's sampling rate (cpu-clock), samples per second.
const PERF_HZ: u32 = 2000;

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes no memory.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// (utime, stime) in clock ticks of the thread of `pid` named `comm`.
fn thread_times(pid: u32, comm: &str) -> (u64, u64) {
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let p = e.unwrap().path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if name.trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap();
        // Fields after the ")" of the command: state is field 3; utime and
        // stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        return (f[11].parse().unwrap(), f[12].parse().unwrap());
    }
    panic!("no thread {comm:?} in process {pid}");
}

struct Raw {
    fd: OwnedFd,
}

impl Raw {
    fn open(ns: &str, ifname: &str) -> Raw {
        let _g = enter_ns(ns);
        let c = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: valid C string for the call.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        assert!(ifindex > 0);
        let proto = 0x88a2u16.to_be();
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is initialised and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0);
        let one: libc::c_int = 1;
        // PACKET_IGNORE_OUTGOING (23): do not see our own requests.
        // SAFETY: `one` lives for the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                23,
                std::ptr::addr_of!(one).cast(),
                4,
            );
            let big: libc::c_int = 8 << 20;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::addr_of!(big).cast(),
                4,
            );
        }
        Raw { fd }
    }

    fn send_batch(&self, frames: &[Vec<u8>]) -> usize {
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: all-zero mmsghdr is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..frames.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs point at iovecs over live frames.
        let n =
            unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        n.max(0) as usize
    }

    /// Count AoE responses received (non-blocking), at most `bufs.len()`.
    fn recv_batch(&self, bufs: &mut [Vec<u8>]) -> usize {
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: all-zero mmsghdr is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..bufs.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs point at iovecs over live buffers.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        (0..n as usize)
            .filter(|&i| msgs[i].msg_len >= 24 && bufs[i][14] & 0x08 != 0)
            .count()
    }
}

/// READ requests of `sectors` at rotating LBAs below `span` sectors.
fn requests(dst: [u8; 6], src: [u8; 6], sectors: u8, span: u64) -> Vec<Vec<u8>> {
    (0..1024u32)
        .map(|i| {
            let lba = (u64::from(i) * 97 * u64::from(sectors)) % (span - u64::from(sectors));
            let mut f = aoe_support::raw_frame(
                aoe_wire::MacAddr(dst),
                aoe_wire::MacAddr(src),
                0x10,
                1,
                1,
                0,
                i + 1,
                &[
                    0x40,
                    0,
                    sectors,
                    0x24,
                    lba as u8,
                    (lba >> 8) as u8,
                    (lba >> 16) as u8,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
            );
            f.resize(60, 0);
            f
        })
        .collect()
}

/// Flood for `secs` (after a warm-up), measuring the worker named `comm`
/// of `pid` over the same interval. Prints one line; returns the user ns per
/// request by ticks and by perf.
fn measure(
    label: &str,
    pair: &NetPair,
    pid: u32,
    comm: &str,
    sectors: u8,
    span: u64,
) -> (f64, f64) {
    let raw = Raw::open(pair.initiator_ns(), pair.initiator_if());
    let reqs = requests(pair.target_mac(), pair.initiator_mac(), sectors, span);
    let mut bufs = vec![vec![0u8; 9100]; 64];
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    let run = |dur: Duration, bufs: &mut Vec<Vec<u8>>| -> (u64, u64) {
        let (mut sent, mut got) = (0u64, 0u64);
        let mut next = 0usize;
        let end = Instant::now() + dur;
        let mut last_progress = Instant::now();
        while Instant::now() < end {
            let out = (sent - got) as usize;
            if out < WINDOW {
                let k = (WINDOW - out).min(32);
                let start = next % reqs.len();
                let k = k.min(reqs.len() - start);
                let n = raw.send_batch(&reqs[start..start + k]);
                next += n;
                sent += n as u64;
            }
            let r = raw.recv_batch(bufs) as u64;
            if r > 0 {
                got += r;
                last_progress = Instant::now();
            } else if (sent - got) as usize >= WINDOW
                && last_progress.elapsed() > Duration::from_millis(50)
            {
                // Lost frames: forget them.
                sent = got;
                last_progress = Instant::now();
            }
        }
        (sent, got)
    };
    run(Duration::from_millis(500), &mut bufs);
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let perf_data = std::env::temp_dir().join(format!(
        "xblade-xdp-perf-{}-{}.data",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let perf = perf_record(&perf_data);
    let (u0, s0) = thread_times(pid, comm);
    let t0 = Instant::now();
    let (_, got) = run(Duration::from_secs_f64(SECS), &mut bufs);
    let dt = t0.elapsed().as_secs_f64();
    let (u1, s1) = thread_times(pid, comm);
    let user_share = perf_user_share(perf, &perf_data, comm);
    let tick_ns = 1e9 / ticks_per_sec();
    let user_ns = (u1 - u0) as f64 * tick_ns / got as f64;
    let sys_ns = (s1 - s0) as f64 * tick_ns / got as f64;
    println!(
        "{label:<44} {:>8.0} req/s  CPU {:>5.0} ns/req ({:.0}% of a core)  user: ticks {:>4.0} ns/req, perf {:>4.0} ns/req ({:.1}% of {} samples)",
        got as f64 / dt,
        user_ns + sys_ns,
        ((u1 - u0) + (s1 - s0)) as f64 * tick_ns / 1e9 / dt * 100.0,
        user_ns,
        (user_ns + sys_ns) * user_share.0,
        user_share.0 * 100.0,
        user_share.1,
    );
    (user_ns, (user_ns + sys_ns) * user_share.0)
}

/// Runs of each scenario (`XBLADE_PERF_RUNS`, default 3): the VM's speed
/// drifts by several percent from one run to the next, so the summary line
/// gives the median and the range.
fn runs() -> usize {
    std::env::var("XBLADE_PERF_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

/// Median, least and greatest of the usable (not NaN) figures; NaN if none.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.retain(|x| !x.is_nan());
    v.sort_by(f64::total_cmp);
    match (v.get(v.len() / 2), v.first(), v.last()) {
        (Some(&m), Some(&lo), Some(&hi)) => (m, lo, hi),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

/// Start `perf record` on CPU 1 (the worker's) for the measured interval.
fn perf_record(out: &std::path::Path) -> std::process::Child {
    std::process::Command::new("perf")
        .args(["record", "-q", "-C", "1", "-F", &PERF_HZ.to_string(), "-o"])
        .arg(out)
        .args(["--", "sleep", &format!("{}", SECS - 0.2)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("perf (apt install linux-perf; scripts/setup.sh does)")
}

/// Share of thread `comm`'s samples outside the kernel, and their count.
fn perf_user_share(
    mut perf: std::process::Child,
    data: &std::path::Path,
    comm: &str,
) -> (f64, u64) {
    assert!(
        perf.wait().expect("perf record").success(),
        "perf record failed"
    );
    let out = std::process::Command::new("perf")
        .args([
            "report", "-q", "--stdio", "-n", "-g", "none", "--sort", "dso", "--comm", comm, "-i",
        ])
        .arg(data)
        .output()
        .expect("perf report");
    // XBLADE_PERF_KEEP=1: keep the samples for `perf report --sort sym`.
    if std::env::var_os("XBLADE_PERF_KEEP").is_none() {
        let _ = std::fs::remove_file(data);
    } else {
        eprintln!("perf data kept: {}", data.display());
    }
    // Lines: "    91.01%   12345  [kernel.kallsyms]"
    let (mut kernel, mut user) = (0u64, 0u64);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !f[0].ends_with('%') {
            continue;
        }
        let Ok(n) = f[1].parse::<u64>() else { continue };
        if f[2].starts_with("[kernel") {
            kernel += n;
        } else {
            user += n;
        }
    }
    assert!(kernel + user > 0, "no perf samples of thread {comm}");
    // perf record now and then gets a fraction of the interval (a few
    // hundred samples, all user): an unusable run, not a figure.
    let expected = f64::from(PERF_HZ) * (SECS - 0.2) * 0.3;
    if ((kernel + user) as f64) < expected {
        return (f64::NAN, kernel + user);
    }
    (user as f64 / (kernel + user) as f64, kernel + user)
}

fn scenario(prefix: &str, mtu: u32, datapath: &str, store: &str, sectors: u8, label: &str) {
    if let Ok(only) = std::env::var("XBLADE_PERF_ONLY") {
        if !label.contains(only.as_str()) {
            return;
        }
    }
    let pair = NetPair::new(prefix, mtu);
    let file;
    let backing = if store == "file" {
        file = sparse_file(64 << 20);
        aoe_support::fill_random(&file, 1);
        file.to_str().unwrap().to_string()
    } else {
        "null:64M".to_string()
    };
    let mut args = vec!["--cores", "1"];
    if datapath == "xdp" {
        // No idle polling: user time is then request work only.
        args.extend(["--xdp-mode", "native", "--spin-us", "0"]);
    }
    let tif = pair.target_if().to_string();
    args.extend(["1", "1", &tif, &backing]);
    let xb = start_with(&pair, datapath, &args);
    let comm = if datapath == "xdp" {
        format!("xblade-{tif}-q0")
    } else {
        format!("xblade-{tif}")
    };
    let (ticks, perf): (Vec<f64>, Vec<f64>) = (0..runs())
        .map(|_| {
            measure(
                label,
                &pair,
                xb.proc.pid(),
                &comm,
                sectors,
                (64 << 20) / 512,
            )
        })
        .unzip();
    let n = ticks.len();
    let (tmed, tmin, tmax) = spread(ticks);
    let (pmed, pmin, pmax) = spread(perf);
    println!(
        "{label:<44} median of {n} runs: user ticks {tmed:.0} ns/req ({tmin:.0}-{tmax:.0}), perf {pmed:.0} ns/req ({pmin:.0}-{pmax:.0})"
    );
    let w = xb.worker0();
    assert_eq!(w["disk_errors"], 0, "{w}");
}

#[test]
#[ignore = "measurement: run with --release --ignored --nocapture"]
fn ns_per_request() {
    scenario(
        "xx20",
        1500,
        "xdp",
        "null",
        1,
        "xdp native  null  1-sector READ  MTU 1500",
    );
    scenario(
        "xx21",
        1500,
        "xdp",
        "file",
        1,
        "xdp native  file  1-sector READ  MTU 1500",
    );
    scenario(
        "xx22",
        9000,
        "xdp",
        "null",
        17,
        "xdp native  null 17-sector READ  MTU 9000",
    );
    scenario(
        "xx23",
        9000,
        "xdp",
        "file",
        17,
        "xdp native  file 17-sector READ  MTU 9000",
    );
    scenario(
        "xx24",
        1500,
        "afpacket",
        "null",
        1,
        "afpacket    null  1-sector READ  MTU 1500",
    );
    scenario(
        "xx25",
        1500,
        "afpacket",
        "file",
        1,
        "afpacket    file  1-sector READ  MTU 1500",
    );
}
