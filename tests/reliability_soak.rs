//! Soak (issue 7, point 6): mixed verified I/O from two initiators (two
//! hosts, two MACs) on a many-export configuration (8 exports on one
//! interface, `xblade serve --config`). Each initiator owns one half of
//! every export and runs rounds of pipelined reads and writes on each in
//! turn (every read compared with its model), with an IDENTIFY, a Query
//! Config read and a FLUSH now and then. Asserted:
//! - zero data errors and no failed request; at the end every export is
//!   read back whole through the target and the backing files equal the
//!   models;
//! - memory flat: VmRSS, sampled every second, stays within 10% of its
//!   value after the warm-up;
//! - descriptors flat: the /proc/PID/fd count never changes.
//!
//! Short form (CI): 10 s per datapath. Long form: `XBLADE_LONG=1`
//! (600 s = 10 minutes per datapath); `XBLADE_SOAK_SECS=N` sets any length.
//!
//! Prefixes: xy61 (afpacket), xy62 (xdp native).

mod aoe_support;
mod common;
mod reliability_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_support::{assert_file_is, fill_random};
use aoe_wire::SECTOR_SIZE;
use common::sparse_file;
use reliability_support::*;
use xblade_tools::initiator::client::Client;

const EXPORTS: u8 = 8;
const SECTORS: u64 = 8192; // 4 MiB each

struct Side {
    tally: Tally,
    rounds: u64,
    extras: u64,
    regions: Vec<Region>,
}

/// One initiator: rounds over its half of every export until `stop`.
fn initiator(mut c: Client, mut regions: Vec<Region>, seed: u64, stop: Arc<AtomicBool>) -> Side {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut rounds = 0u64;
    let mut extras = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for r in regions.iter_mut() {
            let batch = 8 + rng.below(40) as usize;
            round(&mut c, r, &mut rng, batch, 16, &mut tally)
                .unwrap_or_else(|e| panic!("initiator {seed:#x}: {e}"));
            rounds += 1;
            if rounds % 25 == 0 {
                let t = r.target.clone();
                let id = c.identify(&t).unwrap_or_else(|e| panic!("IDENTIFY: {e}"));
                assert_eq!(id.sectors, SECTORS);
                c.find(t.major, t.minor)
                    .unwrap_or_else(|e| panic!("QC: {e}"));
                c.flush(&t).unwrap_or_else(|e| panic!("FLUSH: {e}"));
                extras += 3;
            }
        }
    }
    for r in &regions {
        let (bad, first) = verify_all(&mut c, r, 16);
        assert_eq!(bad, 0, "initiator {seed:#x}: {first:?} differs at the end");
    }
    Side {
        tally,
        rounds,
        extras,
        regions,
    }
}

fn soak_test(prefix: &str, dp: &str) {
    let secs = pick("XBLADE_SOAK_SECS", 10, 600);
    let lan = Lan::new(prefix, 1500, 3);
    let ifn = lan.hosts[0].ifname.clone();
    let files: Vec<_> = (0..EXPORTS)
        .map(|_| sparse_file(SECTORS * SECTOR_SIZE as u64))
        .collect();
    let models: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| fill_random(f, 600 + i as u64))
        .collect();
    let mut toml = String::new();
    for (i, f) in files.iter().enumerate() {
        toml.push_str(&format!(
            "[[export]]\nshelf = 6\nslot = {}\nfile = \"{}\"\ninterfaces = [\"{ifn}\"]\n\n",
            i + 1,
            path_str(f)
        ));
    }
    let mut xb = Xb::serve(&lan.hosts[0].ns, dp, &toml);
    let half = SECTORS / 2;
    let mut sides = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for (k, host) in [1usize, 2].into_iter().enumerate() {
        let mut c = patient(lan.client(host), Duration::from_millis(500), 10);
        let regions: Vec<Region> = (0..EXPORTS)
            .map(|i| {
                let t = find(&mut c, 6, i + 1);
                let lo = k as u64 * half;
                let a = lo as usize * SECTOR_SIZE;
                Region::new(
                    t,
                    lo,
                    models[i as usize][a..a + half as usize * SECTOR_SIZE].to_vec(),
                )
            })
            .collect();
        let s = stop.clone();
        sides.push(std::thread::spawn(move || {
            initiator(c, regions, 0x6100 + k as u64, s)
        }));
    }

    // Warm-up under load, then the reference figures.
    std::thread::sleep(Duration::from_secs(3));
    let rss0 = xb.rss_kb();
    let fds0 = xb.fds();
    let mut rss_max = rss0;
    let mut samples = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(st) = xb.proc.try_wait() {
            panic!("{dp}: target exited ({st}):\n{}", xb.proc.log());
        }
        if sides.iter().any(|s| s.is_finished()) {
            break; // an initiator failed: its panic is reported below
        }
        let (rss, fds) = (xb.rss_kb(), xb.fds());
        rss_max = rss_max.max(rss);
        samples += 1;
        assert_eq!(
            fds,
            fds0,
            "{dp}: descriptors went from {fds0} to {fds} after {:?}",
            t0.elapsed()
        );
        assert!(
            rss * 100 <= rss0 * 110,
            "{dp}: RSS grew from {rss0} KiB to {rss} KiB after {:?}",
            t0.elapsed()
        );
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    let mut rounds = 0;
    let mut extras = 0;
    let mut finals: Vec<Vec<u8>> = models.clone();
    for s in sides {
        let side = s.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        total.add(&side.tally);
        rounds += side.rounds;
        extras += side.extras;
        for (i, r) in side.regions.iter().enumerate() {
            let a = r.lo as usize * SECTOR_SIZE;
            finals[i][a..a + r.model.len()].copy_from_slice(&r.model);
        }
    }
    let rss1 = xb.rss_kb();
    let fds1 = xb.fds();
    let counters = xb.counters();
    for (f, m) in files.iter().zip(&finals) {
        assert_file_is(f, m);
    }
    println!(
        "\n==== soak, datapath {dp}, {EXPORTS} exports, 2 initiators, {:.0} s ====\n\
         {} reads + {} writes ({} sectors, {:.0} req/s) in {rounds} rounds, {extras} IDENTIFY/QC/FLUSH, \
         {} retransmits, {} mismatches, 0 failed requests; final read-back and files: equal\n\
         RSS {rss0} KiB after warm-up, max {rss_max} KiB, {rss1} KiB at the end ({samples} samples); \
         fds {fds0} throughout, {fds1} at the end\ncounters:\n{}",
        elapsed.as_secs_f64(),
        total.reads,
        total.writes,
        total.sectors,
        (total.reads + total.writes) as f64 / elapsed.as_secs_f64(),
        total.retransmits,
        total.mismatches,
        counters.report()
    );
    assert_eq!(total.mismatches, 0, "{dp}: {:?}", total.first_mismatch);
    assert_eq!(fds1, fds0);
    assert!(xb.proc.is_running());
}

#[test]
fn soak_afpacket() {
    soak_test("xy61", "afpacket");
}

#[test]
fn soak_xdp_native() {
    soak_test("xy62", "native");
}
