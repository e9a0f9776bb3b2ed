//! Hostile flood (issue 7, point 2): while a well-behaved initiator does
//! verified read/write I/O, a second host on the same Ethernet segment
//! floods the target as fast as it can with truncated frames, garbage,
//! wrong versions, response-flagged frames, foreign shelf.slots, oversized
//! sector counts and out-of-range LBAs, Mac Mask / Reserve / config edits
//! and valid writes from a MAC the Mac Mask does not list, frames for
//! another MAC and broadcast Query Configs.
//!
//! Asserted, on AF_PACKET and on XDP (native):
//! - the good initiator finishes with zero data errors (every read compared
//!   with a model; at the end the whole export is read back through the
//!   target and the backing file is compared on the host);
//! - the target never exits;
//! - its RSS stays within 10% of its unloaded figure measured after a
//!   warm-up (which includes a short flood);
//! - the Mac Mask, reservation and config strings are unchanged and the
//!   second export (no mask, only invalid ATA requests sent to it) is
//!   byte-for-byte unchanged;
//! - `xblade stats --json` counted each kind of hostile frame where it is
//!   refused (engine drop reasons, AoE/ATA error replies, XDP program
//!   counters); the counters are printed.
//!
//! Short form (CI): 15 s of flood per datapath. Long form: `XBLADE_LONG=1`
//! (300 s per datapath); `XBLADE_FLOOD_SECS=N` sets any length.
//!
//! ```sh
//! sudo -E cargo test --release --test reliability_flood -- --nocapture --test-threads=1
//! sudo -E XBLADE_LONG=1 cargo test --release --test reliability_flood -- --nocapture --test-threads=1
//! ```
//!
//! Prefixes: xy21 (afpacket), xy22 (xdp native).

mod aoe_support;
mod common;
mod reliability_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_support::{fill_random, raw_frame};
use aoe_wire::{mask, MacAddr, SECTOR_SIZE};
use common::{enter_ns, sparse_file, PacketSocket, ETH_P_AOE};
use reliability_support::*;

/// Sectors of export 1.1 (the good initiator's) and 1.2.
const SECTORS_1: u64 = 16 << 11; // 16 MiB
const SECTORS_2: u64 = 2 << 11; // 2 MiB

/// The kinds of hostile frames, in report order.
const KINDS: [&str; 14] = [
    "truncated header (<24 bytes)",
    "ATA with truncated argument to 1.2",
    "random garbage (AoE ethertype)",
    "wrong AoE version (2..15)",
    "response flag set",
    "foreign shelf.slot",
    "sector count over the MTU, to 1.2",
    "LBA out of range / short payload, to 1.2",
    "valid READ/WRITE to masked 1.1",
    "Mac Mask edits (1.1 and wildcard)",
    "Reserve set / force set to 1.1",
    "Query Config set to 1.1",
    "broadcast Query Config read",
    "AoE to another host's MAC",
];

fn ata_arg(aflags: u8, cmd: u8, scnt: u8, lba: u64) -> Vec<u8> {
    let l = lba.to_le_bytes();
    vec![
        aflags, 0, scnt, cmd, l[0], l[1], l[2], l[3], l[4], l[5], 0, 0,
    ]
}

/// The hostile frames, each with its kind, shuffled.
fn catalogue(tmac: MacAddr, evil: MacAddr, good: MacAddr, rng: &mut Rng) -> Vec<(usize, Vec<u8>)> {
    let mut v: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut tag = 0x8000_0000u32;
    let mut f = |dst: MacAddr, vf: u8, major: u16, minor: u8, cmd: u8, arg: &[u8]| {
        tag += 1;
        raw_frame(dst, evil, vf, major, minor, cmd, tag, arg)
    };
    for rep in 0..8u64 {
        // 0: header cut short.
        for n in 14..24 {
            let mut x = f(tmac, 0x10, 1, 1, 0, &[]);
            x.truncate(n);
            v.push((0, x));
        }
        // 1: ATA argument cut short, to the unmasked export.
        for n in 0..12 {
            v.push((1, f(tmac, 0x10, 1, 2, 0, &ata_arg(0x40, 0x24, 1, 0)[..n])));
        }
        // 2: garbage of every size.
        for _ in 0..8 {
            let len = 24 + rng.below(1514 - 24) as usize;
            let mut x = vec![0u8; len];
            rng.fill(&mut x);
            x[..6].copy_from_slice(&tmac.0);
            x[6..12].copy_from_slice(&evil.0);
            x[12..14].copy_from_slice(&ETH_P_AOE.to_be_bytes());
            // Half of them aimed at our shelf.slots.
            if rng.below(2) == 0 {
                x[16..18].copy_from_slice(&1u16.to_be_bytes());
                x[18] = 1 + rng.below(2) as u8;
            }
            v.push((2, x));
        }
        // 3: versions 2..15, ATA and QC.
        for ver in 2..16u8 {
            let cmd = ver % 2; // ATA or QC
            v.push((3, f(tmac, ver << 4, 1, 1, cmd, &ata_arg(0x40, 0x24, 1, 0))));
        }
        // 4: response flag.
        v.push((4, f(tmac, 0x18, 1, 1, 0, &ata_arg(0x40, 0x24, 1, 0))));
        v.push((4, f(tmac, 0x18, 1, 2, 1, &[0; 8])));
        v.push((4, f(MacAddr::BROADCAST, 0x18, 0xffff, 0xff, 1, &[0; 8])));
        // 5: shelf.slots not served here.
        v.push((5, f(tmac, 0x10, 7, 7, 0, &ata_arg(0x40, 0x24, 1, 0))));
        v.push((5, f(tmac, 0x10, 1, 9, 0, &ata_arg(0x41, 0x34, 1, 0))));
        v.push((5, f(MacAddr::BROADCAST, 0x10, 2, 0xff, 1, &[0; 8])));
        // 6: more sectors than a frame carries (the port allows 2).
        v.push((
            6,
            f(
                tmac,
                0x10,
                1,
                2,
                0,
                &ata_arg(0x40, 0x24, 3 + rep as u8 * 30, 0),
            ),
        ));
        v.push((6, f(tmac, 0x10, 1, 2, 0, &ata_arg(0x00, 0x20, 255, 0))));
        let mut w = ata_arg(0x41, 0x34, 3, 4);
        w.extend_from_slice(&[0xee; 2 * SECTOR_SIZE]);
        v.push((6, f(tmac, 0x10, 1, 2, 0, &w)));
        // 7: out of range, and a payload shorter than its count.
        v.push((
            7,
            f(tmac, 0x10, 1, 2, 0, &ata_arg(0x40, 0x24, 2, SECTORS_2 - 1)),
        ));
        v.push((7, f(tmac, 0x10, 1, 2, 0, &ata_arg(0x40, 0x24, 1, 1 << 40))));
        let mut w = ata_arg(0x41, 0x34, 1, SECTORS_2);
        w.extend_from_slice(&[0xee; SECTOR_SIZE]);
        v.push((7, f(tmac, 0x10, 1, 2, 0, &w)));
        let mut w = ata_arg(0x41, 0x34, 2, 8);
        w.extend_from_slice(&[0xee; SECTOR_SIZE]);
        v.push((7, f(tmac, 0x10, 1, 2, 0, &w)));
        // 8: valid requests to the masked export: must never land.
        let mut w = ata_arg(0x41, 0x34, 2, rep * 100);
        w.extend_from_slice(&[0xee; 2 * SECTOR_SIZE]);
        v.push((8, f(tmac, 0x10, 1, 1, 0, &w)));
        v.push((8, f(tmac, 0x10, 1, 1, 0, &ata_arg(0x40, 0x24, 2, rep))));
        v.push((
            8,
            f(tmac, 0x10, 1, 1, 0, &ata_arg(0x00, 0xec, 1, 0xa000_0000)),
        ));
        // 9: Mac Mask edits: add ourselves, delete the good host; also to
        // the wildcard (1.1 denies, 1.2 drops the ambiguous edit).
        let dirs = |d: &[(u8, MacAddr)]| {
            let mut a = vec![0u8, 1, 0, 0];
            a[1] = mask::MaskCmd::Edit.into();
            a[3] = d.len() as u8;
            for (c, m) in d {
                a.push(0);
                a.push(*c);
                a.extend_from_slice(&m.0);
            }
            a
        };
        let edit = dirs(&[(1, evil), (2, good)]);
        v.push((9, f(tmac, 0x10, 1, 1, 2, &edit)));
        v.push((9, f(tmac, 0x10, 0xffff, 0xff, 2, &edit)));
        v.push((9, f(MacAddr::BROADCAST, 0x10, 1, 0xff, 2, &edit)));
        // 10: reservations.
        let mut r = vec![1u8, 1];
        r.extend_from_slice(&evil.0);
        v.push((10, f(tmac, 0x10, 1, 1, 3, &r)));
        r[0] = 2;
        v.push((10, f(tmac, 0x10, 1, 1, 3, &r)));
        // 11: config string.
        let mut q = vec![0u8, 0, 0, 0, 0, 0x14, 0, 5];
        q.extend_from_slice(b"pwned");
        v.push((11, f(tmac, 0x10, 1, 1, 1, &q)));
        q[5] = 0x13;
        v.push((11, f(tmac, 0x10, 1, 1, 1, &q)));
        // 12: discovery storms.
        v.push((
            12,
            f(
                MacAddr::BROADCAST,
                0x10,
                0xffff,
                0xff,
                1,
                &[0, 0, 0, 0, 0, 0x10, 0, 0],
            ),
        ));
        // 13: AoE unicast to some other host (the bridge floods unknown
        // unicast to every port).
        v.push((
            13,
            f(
                MacAddr([2, 0x66, 0, 0, 0, 1]),
                0x10,
                1,
                1,
                0,
                &ata_arg(0x40, 0x24, 1, 0),
            ),
        ));
    }
    // Shuffle (Fisher-Yates).
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

/// Frames sent per kind, and send errors.
#[derive(Debug, Default, Clone)]
struct Sent {
    per_kind: [u64; KINDS.len()],
    errors: u64,
    elapsed: Duration,
}

impl Sent {
    fn total(&self) -> u64 {
        self.per_kind.iter().sum()
    }
}

/// Flood from host `h` until `stop`.
fn flood(h: Host, frames: Vec<(usize, Vec<u8>)>, stop: Arc<AtomicBool>) -> Sent {
    let sock = {
        let _g = enter_ns(&h.ns);
        PacketSocket::open(&h.ifname, ETH_P_AOE).expect("flood socket")
    };
    let mut s = Sent::default();
    let t0 = Instant::now();
    let mut n = 0u64;
    'outer: loop {
        for (k, fr) in &frames {
            match sock.send(fr) {
                Ok(_) => s.per_kind[*k] += 1,
                Err(_) => s.errors += 1,
            }
            n += 1;
            if n % 64 == 0 && stop.load(Ordering::Relaxed) {
                break 'outer;
            }
        }
    }
    s.elapsed = t0.elapsed();
    s
}

struct FloodRun {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Sent>,
}

fn start_flood(lan: &Lan, frames: &[(usize, Vec<u8>)]) -> FloodRun {
    let stop = Arc::new(AtomicBool::new(false));
    let (h, f, s) = (lan.hosts[2].clone(), frames.to_vec(), stop.clone());
    let handle = std::thread::spawn(move || flood(h, f, s));
    FloodRun { stop, handle }
}

impl FloodRun {
    fn finish(self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("flood thread")
    }
}

/// Counters that must have moved for each datapath (name, why).
fn expected_counters(dp: &str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        (
            "drop.mask_denied",
            "ATA, edits and sets from the unlisted MAC",
        ),
        (
            "drop.ambiguous_wildcard",
            "Mac Mask edit sent to the wildcard",
        ),
        (
            "engine.aoe_errors",
            "wrong versions, truncated ATA arguments",
        ),
        (
            "engine.ata_errors",
            "over-long sector counts, out-of-range LBAs",
        ),
        ("engine.query_config", "broadcast discovery"),
    ];
    if dp == "afpacket" {
        v.extend([
            ("drop.truncated", "header cut short"),
            ("drop.response_flag", "response flag"),
            ("drop.foreign_address", "foreign shelf.slot"),
            ("drop.not_for_us", "AoE for another MAC"),
        ]);
    } else {
        // The XDP program hands these to the kernel stack instead of the
        // socket: they never reach the worker.
        v.extend([
            ("xdp.bpf_short", "header cut short"),
            ("xdp.bpf_response", "response flag"),
            ("xdp.bpf_passed_foreign", "foreign shelf.slot"),
            ("xdp.bpf_other_host", "AoE for another MAC"),
        ]);
    }
    v
}

fn flood_test(prefix: &str, dp: &str) {
    let secs = pick("XBLADE_FLOOD_SECS", 15, 300);
    let lan = Lan::new(prefix, 1500, 3);
    let (good, evil) = (lan.hosts[1].mac, lan.hosts[2].mac);
    let f1 = sparse_file(SECTORS_1 * SECTOR_SIZE as u64);
    let f2 = sparse_file(SECTORS_2 * SECTOR_SIZE as u64);
    let model = fill_random(&f1, 21);
    let model2 = fill_random(&f2, 22);
    let mut xb = Xb::serve(
        &lan.hosts[0].ns,
        dp,
        &format!(
            "[[export]]\nshelf = 1\nslot = 1\nfile = \"{}\"\ninterfaces = [\"{}\"]\n\n\
             [[export]]\nshelf = 1\nslot = 2\nfile = \"{}\"\ninterfaces = [\"{}\"]\n",
            path_str(&f1),
            lan.hosts[0].ifname,
            path_str(&f2),
            lan.hosts[0].ifname
        ),
    );
    let mut c = patient(lan.client(1), Duration::from_millis(250), 40);
    let t = find(&mut c, 1, 1);
    assert_eq!(t.mac, lan.hosts[0].mac);
    // The good host locks the export to itself first.
    let r = c
        .mac_mask(&t, mask::MaskCmd::Edit, &[(mask::DirCmd::Add, good)])
        .expect("mask edit")
        .expect("mask edit answered");
    assert_eq!((r.merror, r.list.clone()), (0, vec![good]));
    let mut region = Region::new(t, 0, model);
    let mut rng = Rng::new(0x21);
    let frames = catalogue(lan.hosts[0].mac, evil, good, &mut rng);
    let mut tally = Tally::default();
    let io_err = |e| panic!("good initiator failed ({dp}): {e}");

    // Warm-up: verified I/O alone, then with a flood, then idle.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(2) {
        round(&mut c, &mut region, &mut rng, 64, 16, &mut tally).unwrap_or_else(io_err);
    }
    let fl = start_flood(&lan, &frames);
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(3) {
        round(&mut c, &mut region, &mut rng, 64, 16, &mut tally).unwrap_or_else(io_err);
    }
    let warm_sent = fl.finish();
    std::thread::sleep(Duration::from_secs(1));
    let rss0 = xb.rss_kb();
    let fds0 = xb.fds();
    let before = xb.counters();

    // The flood.
    let fl = start_flood(&lan, &frames);
    let mut load = Tally::default();
    let mut rss_max = rss0;
    let mut last_sample = Instant::now();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        round(&mut c, &mut region, &mut rng, 64, 16, &mut load).unwrap_or_else(io_err);
        if last_sample.elapsed() >= Duration::from_millis(250) {
            last_sample = Instant::now();
            if let Some(st) = xb.proc.try_wait() {
                panic!(
                    "{dp}: target exited during the flood ({st}):\n{}",
                    xb.proc.log()
                );
            }
            rss_max = rss_max.max(xb.rss_kb());
        }
    }
    let io_elapsed = t0.elapsed();
    let sent = fl.finish();
    let after = xb.counters();
    let d = after.since(&before);
    let rss1 = xb.rss_kb();
    let fds1 = xb.fds();

    // Everything the good host wrote, and nothing else, is there.
    let (bad, first) = verify_all(&mut c, &region, 16);
    assert!(xb.proc.is_running(), "target exited:\n{}", xb.proc.log());
    let st = xb.status();

    println!("\n==== hostile flood, datapath {dp}, {secs} s ====");
    println!(
        "flood: {} frames in {:.1} s = {:.0} frames/s ({} send errors); warm-up flood {} frames",
        sent.total(),
        sent.elapsed.as_secs_f64(),
        sent.total() as f64 / sent.elapsed.as_secs_f64(),
        sent.errors,
        warm_sent.total()
    );
    for (k, n) in KINDS.iter().zip(sent.per_kind) {
        println!("  {n:>10}  {k}");
    }
    println!(
        "good initiator under flood: {} reads + {} writes ({} sectors) in {:.1} s = {:.0} req/s, \
         {} retransmits, {} mismatches; after: {} of {} sectors differ",
        load.reads,
        load.writes,
        load.sectors,
        io_elapsed.as_secs_f64(),
        (load.reads + load.writes) as f64 / io_elapsed.as_secs_f64(),
        load.retransmits,
        load.mismatches,
        bad,
        SECTORS_1
    );
    println!(
        "target RSS: {rss0} KiB unloaded after warm-up, max {rss_max} KiB under flood, {rss1} KiB after \
         ({:+.1}%); fds {fds0} -> {fds1}",
        (rss_max as f64 / rss0 as f64 - 1.0) * 100.0
    );
    println!("target counters during the flood (xblade stats --json, summed over workers):");
    print!("{}", d.report());

    tally.add(&load);
    assert_eq!(
        tally.mismatches, 0,
        "{dp}: data errors: {:?}",
        tally.first_mismatch
    );
    assert_eq!(bad, 0, "{dp}: after the flood, {first:?} differs");
    aoe_support::assert_file_is(&f1, &region.model);
    aoe_support::assert_file_is(&f2, &model2);
    assert!(
        rss_max * 100 <= rss0 * 110,
        "{dp}: RSS grew from {rss0} KiB to {rss_max} KiB under flood"
    );
    assert_eq!(fds0, fds1, "{dp}: descriptors changed under flood");
    let e1 = &st.exports[0];
    let e2 = &st.exports[1];
    assert_eq!((e1.shelf, e1.slot, e2.slot), (1, 1, 2));
    assert_eq!(
        e1.mac_mask,
        vec![good.to_string()],
        "{dp}: mask of 1.1 changed"
    );
    assert!(
        e1.reserve.is_empty() && e1.config.is_empty(),
        "{dp}: 1.1 changed: {e1:?}"
    );
    assert!(
        e2.mac_mask.is_empty() && e2.reserve.is_empty() && e2.config.is_empty(),
        "{dp}: 1.2 changed: {e2:?}"
    );
    assert!(sent.total() > 0 && load.reads + load.writes > 0);
    let mut missing = Vec::new();
    for (name, why) in expected_counters(dp) {
        if d.get(name) == 0 {
            missing.push(format!("{name} ({why})"));
        }
    }
    assert!(
        missing.is_empty(),
        "{dp}: counters that should have counted the flood stayed at zero: {missing:?}\n{}",
        d.report()
    );
    // No hostile write was executed: every WRITE the engine ran was the
    // good host's.
    assert!(
        d.get("engine.ata_write") <= load.writes + load.retransmits,
        "{dp}: {} writes executed, the good host sent {} (+{} retransmits)",
        d.get("engine.ata_write"),
        load.writes,
        load.retransmits
    );
}

#[test]
fn flood_afpacket() {
    flood_test("xy21", "afpacket");
}

#[test]
fn flood_xdp_native() {
    flood_test("xy22", "native");
}
