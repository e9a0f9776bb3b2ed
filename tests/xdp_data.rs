//! The real `xblade` binary on the AF_XDP datapath (`--datapath xdp`), in
//! native and generic (skb) XDP mode, at MTU 1500 and 9000, with the page
//! cache (durable, and `--writeback`) and with O_DIRECT (`-d`): discovery, IDENTIFY, data round trips
//! checked against the backing file, range errors, FLUSH, the null backend
//! and pipelined I/O.
//!
//! Prefixes (unique across all integration tests): xx01..xx10, xx17, xx19.

mod aoe_support;
mod common;
mod xdp_support;

use aoe_support::*;
use aoe_wire::SECTOR_SIZE;
use common::{sparse_file, NetPair};
use std::time::Duration;
use xdp_support::*;

const SECTORS: u64 = 8192; // 4 MiB backing files

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Serve a random 4 MiB file with and without O_DIRECT and check
/// everything the datapath does at this MTU.
fn data_paths(prefix: &str, mtu: u32, mode: &str) {
    let pair = NetPair::new(prefix, mtu);
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    fill_random(&file, 7);
    let max = if mtu >= 9000 { 17u8 } else { 2 };
    let sizes: &[u8] = if mtu >= 9000 {
        // 7 sectors fill exactly one chunk (36 + 3584 = 3620 bytes); 8 and
        // more span two, 15 and more three.
        &[1, 2, 7, 8, 14, 15, 17]
    } else {
        &[1, 2]
    };
    // Durable page-cache writes (written by the worker, acknowledged after
    // a group commit fdatasync), O_DIRECT (io_uring, O_DSYNC), and
    // `--writeback` (written by the worker, acknowledged at once).
    for (round, flag) in [None, Some("-d"), Some("--writeback")]
        .into_iter()
        .enumerate()
    {
        let mut args = vec!["-b", "32"];
        args.extend(flag);
        args.extend(["4", "2", pair.target_if(), path_str(&file)]);
        let xb = start_xdp(&pair, mode, &args);
        let mut c = client(&pair);
        let found = discover(&mut c, 0xffff, 0xff);
        assert_eq!(found.len(), 1, "{found:?}");
        let t = found[0].clone();
        assert_eq!((t.major, t.minor), (4, 2));
        assert_eq!(t.max_sectors, max, "advertised sectors at MTU {mtu}");
        assert_eq!(t.bufcnt, 32);
        let id = c.identify(&t).expect("identify");
        assert_eq!(id.sectors, SECTORS);

        round_trips(&mut c, &t, &file, SECTORS, sizes, round as u64 + 1, true);
        // LBA28 opcodes on the largest size.
        round_trips(
            &mut c,
            &t,
            &file,
            SECTORS,
            &sizes[sizes.len() - 1..],
            9,
            false,
        );

        if flag == Some("--writeback") {
            // The writes went through no io-wq thread (the reads hit the
            // page cache, which completes at submission; a FLUSH, below,
            // would start one).
            let wrk = io_wq_threads(xb.proc.pid());
            assert!(wrk.is_empty(), "--writeback: io-wq threads {wrk:?}");
        }

        // Out of range: ATA status 0x41 with IDNF, nothing touched.
        let before = file_sectors(&file, SECTORS - 1, 1);
        let r = c.ata(&t, READ_EXT, max, SECTORS - 1, &[]).unwrap();
        assert_eq!((r.status(), r.error()), (0x41, 0x10), "read past the end");
        let junk = vec![0xa5u8; max as usize * SECTOR_SIZE];
        let r = c.ata(&t, WRITE_EXT, max, SECTORS - 1, &junk).unwrap();
        assert_eq!((r.status(), r.error()), (0x41, 0x10), "write past the end");
        assert_eq!(file_sectors(&file, SECTORS - 1, 1), before);
        assert!(r.len >= 60);

        c.flush(&t).expect("flush");

        // Pipelined: a window of requests in flight, then read back.
        let bulk = rand_bytes(40 + round as u64, 512 * SECTOR_SIZE);
        c.write_window(&t, 2048, &bulk, 32).expect("write window");
        let back = c.read_window(&t, 2048, 512, 32).expect("read window");
        assert!(back == bulk, "windowed read-back differs");
        assert!(file_sectors(&file, 2048, 512) == bulk);

        let w = xb.worker0();
        let st = xb.status();
        assert_eq!(st.datapath, "xdp");
        assert_eq!(w["xdp"]["mode"], mode, "{w}");
        assert!(w["engine"]["ata_read"].as_u64().unwrap() > 20, "{w}");
        assert!(w["engine"]["ata_write"].as_u64().unwrap() > 20, "{w}");
        assert_eq!(w["disk_errors"], 0, "{w}");
        assert_eq!(w["disk_in_flight"], 0, "{w}");
        assert!(xdp_counter(&w, "bpf_redirected") > 40, "{w}");
        assert_eq!(xdp_counter(&w, "rx_oversize"), 0, "{w}");
        if mtu >= 9000 {
            assert!(xdp_counter(&w, "rx_multi_buffer") > 0, "{w}");
        }
        // Durable page-cache writes are acknowledged by group commit
        // fdatasyncs, several writes each when a window is in flight.
        let (commits, committed) = (
            xdp_counter(&w, "group_commits"),
            xdp_counter(&w, "group_commit_writes"),
        );
        if flag.is_none() {
            assert!(commits > 0 && committed > commits, "{w}");
        } else {
            assert_eq!((commits, committed), (0, 0), "{w}");
        }
        drop(xb);
    }
}

/// Names of the process's io_uring worker threads (`iou-wrk-*`).
fn io_wq_threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("iou-wrk"))
        .collect()
}

#[test]
fn native_mtu1500() {
    data_paths("xx01", 1500, "native");
}

#[test]
fn skb_mtu1500() {
    data_paths("xx02", 1500, "skb");
}

#[test]
fn native_mtu9000_jumbo() {
    data_paths("xx03", 9000, "native");
}

#[test]
fn skb_mtu9000_jumbo() {
    data_paths("xx04", 9000, "skb");
}

/// The null backend completes at once: zeros for reads (one fragment and
/// jumbo), writes accepted and dropped.
#[test]
fn null_backend() {
    let pair = NetPair::new("xx05", 9000);
    let xb = start_xdp(&pair, "native", &["6", "1", pair.target_if(), "null:64M"]);
    let mut c = client(&pair);
    let t = c.find(6, 1).expect("discover");
    assert_eq!(t.max_sectors, 17);
    let id = c.identify(&t).unwrap();
    assert_eq!(id.sectors, (64 << 20) / 512);
    for n in [1u8, 7, 8, 17] {
        let r = c.ata(&t, READ_EXT, n, 100, &[]).unwrap();
        r.check().unwrap();
        assert_eq!(r.data, vec![0u8; n as usize * SECTOR_SIZE], "{n} sectors");
        let d = rand_bytes(u64::from(n), n as usize * SECTOR_SIZE);
        c.ata(&t, WRITE_EXT, n, 100, &d).unwrap().check().unwrap();
    }
    c.flush(&t).unwrap();
    let big = c.read_window(&t, 0, 17 * 64, 16).unwrap();
    assert!(big.iter().all(|&b| b == 0));
    // READs come from a pool of 512 zeroed chunks, each carrying a reply
    // header as a head and data as a tail in turn: cycle through it several
    // times with mixed sizes and windows; every byte must stay zero.
    for round in 0..60u64 {
        for n in [1u8, 17, 2, 9] {
            let r = c.ata(&t, READ_EXT, n, round * 17, &[]).unwrap();
            r.check().unwrap();
            assert_eq!(
                r.data,
                vec![0u8; n as usize * SECTOR_SIZE],
                "{n} sectors, round {round}"
            );
        }
        let w = c.read_window(&t, round * 64, 17 * 8, 16).unwrap();
        assert!(w.iter().all(|&b| b == 0), "window, round {round}");
    }
    let w = xb.worker0();
    assert_eq!(w["disk_errors"], 0);
    assert!(w["engine"]["ata_read"].as_u64().unwrap() >= 68, "{w}");
    assert!(xdp_counter(&w, "zero_pool_replies") > 512, "{w}");
}

/// A worker polls its rings for `--spin-us` after its last work (the
/// `idle_spin_ns` counter says how long in all) and then sleeps: once
/// traffic stops, the process uses no CPU. `--spin-us 0` never polls.
#[test]
fn idle_polling_then_sleep() {
    let pair = NetPair::new("xx17", 1500);
    for spin in ["50", "0"] {
        let xb = start_xdp(
            &pair,
            "native",
            &["--spin-us", spin, "6", "2", pair.target_if(), "null:64M"],
        );
        let mut c = client(&pair);
        let t = c.find(6, 2).expect("discover");
        for i in 0..200u64 {
            let r = c.ata(&t, READ_EXT, 1, i, &[]).unwrap();
            r.check().unwrap();
        }
        let w = xb.worker0();
        let spun = xdp_counter(&w, "idle_spin_ns");
        if spin == "0" {
            assert_eq!(spun, 0, "{w}");
        } else {
            // At least the 50 µs after the last reply.
            assert!(spun >= 50_000, "{w}");
        }
        let cpu = || {
            let t = xblade_tools::bench::cpu::proc_cpu(xb.proc.pid()).expect("target's /proc stat");
            t.user + t.sys
        };
        let t0 = cpu();
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu() - t0;
        // Five 10 ms ticks.
        assert!(
            used <= Duration::from_millis(50),
            "--spin-us {spin}: {used:?} of CPU in 1 s with no traffic"
        );
    }
}

/// SIGTERM: the worker drains and the process exits 0 with the program
/// detached.
#[test]
fn graceful_stop_detaches() {
    let pair = NetPair::new("xx06", 1500);
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let mut xb = start_xdp(&pair, "skb", &["4", "4", pair.target_if(), path_str(&file)]);
    assert!(xdp_attached(pair.target_ns(), pair.target_if()));
    let mut c = client(&pair);
    let t = c.find(4, 4).unwrap();
    let d = rand_bytes(3, 2 * SECTOR_SIZE);
    c.write(&t, 10, &d).unwrap();
    xb.proc.terminate();
    let st = xb
        .proc
        .wait_timeout(std::time::Duration::from_secs(5))
        .expect("exits");
    assert!(st.success(), "exit status {st}:\n{}", xb.proc.log());
    let log = xb.proc.log();
    assert!(log.contains("AF_XDP worker stopped"), "{log}");
    assert!(!xdp_attached(pair.target_ns(), pair.target_if()));
    assert_eq!(file_sectors(&file, 10, 2), d);
}

/// `--busy-poll` (no need_wakeup; the worker drives the socket itself)
/// serves the same as the default.
#[test]
fn busy_poll_serves() {
    let pair = NetPair::new("xx07", 9000);
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    fill_random(&file, 17);
    let xb = start_xdp(
        &pair,
        "native",
        &["--busy-poll", "8", "8", pair.target_if(), path_str(&file)],
    );
    let mut c = client(&pair);
    let t = c.find(8, 8).unwrap();
    round_trips(&mut c, &t, &file, SECTORS, &[1, 17], 3, true);
    let w = xb.worker0();
    assert_eq!(w["xdp"]["busy_poll"], true, "{w}");
}

/// `--zero-copy on` on a veth (copy mode only) refuses to start and says
/// why; `off` serves.
#[test]
fn zero_copy_policy() {
    let pair = NetPair::new("xx08", 1500);
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let out = common::run_in_ns(
        pair.target_ns(),
        common::xblade_bin(),
        [
            "--datapath",
            "xdp",
            "--zero-copy",
            "on",
            "--control-socket",
            "none",
            "1",
            "1",
            pair.target_if(),
            path_str(&file),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zero-copy"), "{err}");
    assert!(!xdp_attached(pair.target_ns(), pair.target_if()));
    let xb = start_xdp(
        &pair,
        "native",
        &[
            "--zero-copy",
            "off",
            "1",
            "1",
            pair.target_if(),
            path_str(&file),
        ],
    );
    let mut c = client(&pair);
    let t = c.find(1, 1).unwrap();
    c.identify(&t).unwrap();
    let w = xb.worker0();
    assert_eq!(w["xdp"]["zero_copy"], false, "{w}");
}

/// Two queues, two workers pinned to two cores: a veth with 2 rx queues,
/// XPS on the initiator side sending from CPU k on queue k, one client
/// thread per CPU. Both workers serve, and the data is right.
#[test]
fn two_queues_two_workers() {
    let pair = NetPair::new("xx09", 1500);
    let (tif, iif) = ("xx09mt", "xx09mi");
    let ok = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    #[rustfmt::skip]
    ok(&[
        "link", "add", "name", tif, "netns", pair.target_ns(), "numtxqueues", "2", "numrxqueues", "2",
        "type", "veth", "peer", "name", iif, "netns", pair.initiator_ns(), "numtxqueues", "2", "numrxqueues", "2",
    ]);
    ok(&["-n", pair.target_ns(), "link", "set", tif, "up"]);
    ok(&["-n", pair.initiator_ns(), "link", "set", iif, "up"]);
    for (q, mask) in [(0, "1"), (1, "2")] {
        let out = common::run_in_ns(
            pair.initiator_ns(),
            "sh",
            [
                "-c",
                &format!("echo {mask} > /sys/class/net/{iif}/queues/tx-{q}/xps_cpus"),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    fill_random(&file, 19);
    let xb = start_xdp(
        &pair,
        "native",
        // XPS spreads the frames, not destination MACs: today's behaviour.
        &[
            "--cores",
            "0,1",
            "--steer",
            "none",
            "9",
            "1",
            tif,
            path_str(&file),
        ],
    );
    let log = xb.proc.log();
    assert!(log.contains("queue=1"), "{log}");
    let ns = pair.initiator_ns().to_string();
    let threads: Vec<_> = (0..2usize)
        .map(|cpu| {
            let ns = ns.clone();
            let path = file.path().to_path_buf();
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let mut c = client_in(&ns, iif);
                let t = c.find(9, 1).unwrap();
                for i in 0..20u64 {
                    let lba = 1000 * (cpu as u64 + 1) + 2 * i;
                    let d = rand_bytes(lba, 2 * SECTOR_SIZE);
                    c.write(&t, lba, &d).unwrap();
                    assert_eq!(c.read(&t, lba, 2).unwrap(), d);
                    assert_eq!(file_sectors(&path, lba, 2), d);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    let st = xb.status();
    assert_eq!(st.workers.len(), 2, "{:?}", st.workers);
    for (q, w) in st.workers.iter().enumerate() {
        assert_eq!(w["queue"], q as u64, "{w}");
        assert!(
            w["engine"]["ata_write"].as_u64().unwrap() >= 10,
            "queue {q} idle: {w}"
        );
    }
}

/// More requests in flight than the worker has io_uring slots (O_DIRECT
/// writes, each a device flush): the surplus waits in the RX ring
/// (backpressure) and every request completes, in order, with the right
/// data on the file.
#[test]
fn backpressure_holds_requests() {
    let pair = NetPair::new("xx10", 9000);
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let xb = start_xdp(
        &pair,
        "native",
        &[
            "-d",
            "-b",
            "600",
            "2",
            "2",
            pair.target_if(),
            path_str(&file),
        ],
    );
    let mut c = client(&pair);
    let t = c.find(2, 2).unwrap();
    assert_eq!(t.bufcnt, 600);
    let data = rand_bytes(77, 400 * 17 * SECTOR_SIZE);
    let st = c.write_window(&t, 0, &data, 400).expect("write window");
    assert_eq!(st.completed, 400);
    assert!(file_sectors(&file, 0, 400 * 17) == data);
    let back = c.read_window(&t, 0, 400 * 17, 400).expect("read window");
    assert!(back == data);
    let w = xb.worker0();
    eprintln!(
        "backpressure events: {}, retransmits: {}, rx_dropped: {}",
        xdp_counter(&w, "backpressure"),
        st.retransmits,
        xdp_counter(&w, "rx_dropped")
    );
    assert!(xdp_counter(&w, "backpressure") > 0, "{w}");
    assert_eq!(w["disk_errors"], 0);
}

/// `HugePages_Free` from /proc/meminfo.
fn free_huge_pages() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Puts `vm.nr_hugepages` back as it found it.
struct HugePagesReserved(String);

impl HugePagesReserved {
    /// Make sure `n` 2 MiB pages are free.
    fn at_least(n: u64) -> HugePagesReserved {
        let knob = "/proc/sys/vm/nr_hugepages";
        let before = std::fs::read_to_string(knob).unwrap();
        let free = free_huge_pages();
        if free < n {
            let total: u64 = before.trim().parse().unwrap();
            std::fs::write(knob, (total + n - free).to_string()).unwrap();
        }
        assert!(free_huge_pages() >= n, "could not reserve {n} huge pages");
        HugePagesReserved(before)
    }
}

impl Drop for HugePagesReserved {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", self.0.trim());
    }
}

/// With 2 MiB pages reserved (`tuning/xblade-tune.sh --hugepages`), the
/// UMEM sits on them (8 pages for 16 MiB), io_uring reads and writes into
/// it as before, and the status says so.
#[test]
fn umem_on_huge_pages_when_reserved() {
    let pair = NetPair::new("xx19", 9000);
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    fill_random(&file, 19);
    let _reserved = HugePagesReserved::at_least(8);
    let free = free_huge_pages();
    let xb = start_xdp(
        &pair,
        "native",
        &["9", "9", pair.target_if(), path_str(&file)],
    );
    let mut c = client(&pair);
    let t = c.find(9, 9).unwrap();
    round_trips(&mut c, &t, &file, SECTORS, &[1, 2, 17], 3, true);
    let w = xb.worker0();
    assert_eq!(w["xdp"]["huge_pages"], true, "{w}");
    // (A refused zero-copy attempt's UMEM is freed by deferred work: by now.)
    let now = free_huge_pages();
    assert_eq!(
        free - now,
        8,
        "a 16 MiB UMEM takes 8 huge pages ({free} free before, {now} after)"
    );
    drop(xb);
}
