//! Crash and restart (issue 7, point 3): a writer records every
//! acknowledged write; the target is killed with SIGKILL at a random moment
//! while writes are in flight, restarted, and:
//! - every acknowledged write reads back (through the restarted target, and
//!   on the backing file);
//! - nothing outside the written ranges changed (every sector of the export
//!   is compared with the model);
//! - a write that was in flight but not acknowledged left each of its
//!   sectors either wholly old or wholly new (counted, not a failure);
//! - no XDP program stays attached (`ip -d link`) and no AF_XDP socket is
//!   left (`ss -a --xdp`) after the kill.
//!
//! Default (durable) mode, MTU 9000 (1..17-sector writes, multi-buffer
//! frames on XDP), on AF_PACKET and XDP native.
//!
//! What this proves and what it does not: SIGKILL ends the process, not the
//! kernel; the page cache survives, so data that reached the kernel before
//! the kill is read back even without O_DSYNC. The test therefore proves
//! that no write is acknowledged before the target handed it to the kernel
//! (pwrite or io_uring completion), that a crash loses or tears nothing
//! else and leaves no kernel state behind, and that restarts are clean.
//! That acknowledged data also survives a power loss rests on the
//! descriptor being O_DSYNC (tests/reliability_ack.rs).
//!
//! Short form (CI): 5 kills per datapath. Long form: `XBLADE_LONG=1`
//! (20 kills per datapath); `XBLADE_KILLS=N` sets any count.
//!
//! Prefixes: xy31 (afpacket), xy32 (xdp native).

mod aoe_support;
mod common;
mod reliability_support;
mod xdp_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aoe_support::{assert_file_is, file_sectors, fill_random};
use aoe_wire::SECTOR_SIZE;
use common::sparse_file;
use reliability_support::*;
use xblade_tools::initiator::client::IoRequest;
use xdp_support::{link_details, wait_detached, xdp_attached};

const SECTORS: u64 = 8 << 11; // 8 MiB

#[derive(Debug, Default)]
struct Totals {
    kills: u64,
    acked_writes: u64,
    acked_sectors: u64,
    /// Unacknowledged writes of the interrupted batches.
    in_flight_writes: u64,
    unacked_new: u64,
    unacked_old: u64,
    restart_ms_max: u128,
    /// Rounds where the writer timed out before the kill fired.
    early_timeouts: u64,
}

fn crash_test(prefix: &str, dp: &str) {
    let kills = pick("XBLADE_KILLS", 5, 20);
    let lan = Lan::new(prefix, 9000, 2);
    let host = &lan.hosts[0];
    let file = sparse_file(SECTORS * SECTOR_SIZE as u64);
    let mut model = fill_random(&file, 31);
    let args = ["-b", "64", "1", "1", host.ifname.as_str(), path_str(&file)];
    let mut rng = Rng::new(0x31 + kills);
    let mut tot = Totals::default();

    for round in 0..kills {
        let t_start = Instant::now();
        let mut xb = Xb::start(&host.ns, dp, &args);
        let restart_ms = t_start.elapsed().as_millis();
        tot.restart_ms_max = tot.restart_ms_max.max(restart_ms);
        // Short timeout, few retries: the writer notices the kill quickly.
        let mut c = patient(lan.client(1), Duration::from_millis(300), 3);
        let t = find(&mut c, 1, 1);
        let mut region = Region::new(t, 0, std::mem::take(&mut model));

        // After a restart: everything acknowledged before is there (this
        // also checks the previous round's in-flight writes, resolved
        // below on the previous iteration).
        let (bad, first) = verify_all(&mut c, &region, 16);
        assert_eq!(
            bad, 0,
            "{dp}, restart {round}: {first:?} differs after restart"
        );

        // The killer: SIGKILL at a random moment of the write stream.
        let delay = Duration::from_millis(100 + rng.below(1100));
        let pid = libc::pid_t::try_from(xb.pid()).expect("pid");
        let fired = Arc::new(AtomicBool::new(false));
        let f2 = fired.clone();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: kill(2) on the target, our child: the main thread
            // does not reap it before joining this thread.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            f2.store(true, Ordering::SeqCst);
            rc
        });

        // The writer: batches of non-overlapping writes; each
        // acknowledgement goes into the model at once.
        // Unacknowledged writes of the interrupted batch (at most the
        // window, 16, were sent; the rest never left).
        let in_flight: Vec<Planned>;
        loop {
            let max = c.sectors_per_request(&region.target);
            let reqs = plan(&region, &mut rng, 48, max, 100);
            let io: Vec<IoRequest<'_>> = reqs
                .iter()
                .map(|p| IoRequest {
                    lba: p.lba,
                    sectors: p.sectors,
                    write: p.data.as_deref(),
                })
                .collect();
            let mut acked = vec![false; reqs.len()];
            let res = c.run_window(&region.target, &io, 16, |i, _| acked[i] = true);
            for (p, _) in reqs.iter().zip(&acked).filter(|(_, a)| **a) {
                let d = p.data.as_ref().expect("writes only");
                let a = p.lba as usize * SECTOR_SIZE;
                region.model[a..a + d.len()].copy_from_slice(d);
                tot.acked_writes += 1;
                tot.acked_sectors += u64::from(p.sectors);
            }
            match res {
                Ok(_) => continue,
                Err(e) => {
                    // Normally the kill; on a loaded machine a write may
                    // also time out just before it. Either way the batch's
                    // unacknowledged writes are undecided until the check
                    // below, after the kill.
                    if !fired.load(Ordering::SeqCst) {
                        tot.early_timeouts += 1;
                        eprintln!("{dp}: writer gave up before the kill: {e}");
                    }
                    in_flight = reqs
                        .into_iter()
                        .zip(&acked)
                        .filter(|(_, a)| !**a)
                        .map(|(p, _)| p)
                        .collect();
                    break;
                }
            }
        }
        assert_eq!(killer.join().expect("killer"), 0, "kill failed");
        let st = xb
            .proc
            .wait_timeout(Duration::from_secs(10))
            .expect("killed target exits");
        assert!(!st.success(), "{dp}: target survived SIGKILL?");
        tot.kills += 1;

        // Nothing left in the kernel.
        assert!(
            wait_detached(&host.ns, &host.ifname),
            "{dp}, kill {round}: XDP program still attached:\n{}",
            link_details(&host.ns, &host.ifname)
        );
        let left = wait_no_xdp_sockets(&host.ns);
        assert_eq!(
            left,
            0,
            "{dp}, kill {round}: AF_XDP sockets left:\n{}",
            in_ns_ok(&host.ns, "ss", &["-a", "-n", "--xdp"])
        );
        drop(xb);

        // Writes that were in flight: each sector is old or new (the file
        // is read on the host: the next round reads it through the target).
        tot.in_flight_writes += in_flight.len() as u64;
        for p in &in_flight {
            let d = p.data.as_ref().expect("writes only");
            let now = file_sectors(&file, p.lba, u64::from(p.sectors));
            for (s, (got, new)) in now
                .chunks(SECTOR_SIZE)
                .zip(d.chunks(SECTOR_SIZE))
                .enumerate()
            {
                let lba = p.lba + s as u64;
                let a = lba as usize * SECTOR_SIZE;
                let old = &region.model[a..a + SECTOR_SIZE];
                if got == new {
                    tot.unacked_new += 1;
                    region.model[a..a + SECTOR_SIZE].copy_from_slice(new);
                } else if got == old {
                    tot.unacked_old += 1;
                } else {
                    panic!(
                        "{dp}, kill {round}: sector {lba} of an unacknowledged write is neither \
                         its old nor its new content (torn)"
                    );
                }
            }
        }
        // Every other sector is exactly the model: acknowledged writes are
        // there and nothing else changed.
        assert_file_is(&file, &region.model);
        model = region.model;
        println!(
            "{dp}: kill {round} after {delay:?}: {} writes acknowledged so far, {} of the batch unacknowledged at the kill; restart took {restart_ms} ms",
            tot.acked_writes,
            in_flight.len()
        );
    }

    // A last restart serves the final state.
    let xb = Xb::start(&host.ns, dp, &args);
    let mut c = patient(lan.client(1), Duration::from_millis(300), 5);
    let t = find(&mut c, 1, 1);
    let region = Region::new(t, 0, model);
    let (bad, first) = verify_all(&mut c, &region, 16);
    assert_eq!(bad, 0, "{dp}: after the last restart {first:?} differs");
    drop(xb);
    assert!(wait_detached(&host.ns, &host.ifname));
    assert!(!xdp_attached(&host.ns, &host.ifname));
    println!(
        "\n==== crash and restart, datapath {dp} ====\n\
         {} SIGKILLs survived; {} acknowledged writes ({} sectors) all read back; \
         {} writes unacknowledged at the kills (sent or not): {} sectors found new, {} old, 0 torn; \
         slowest restart {} ms; {} writer timeouts before a kill; \
         no XDP program or AF_XDP socket left after any kill",
        tot.kills,
        tot.acked_writes,
        tot.acked_sectors,
        tot.in_flight_writes,
        tot.unacked_new,
        tot.unacked_old,
        tot.restart_ms_max,
        tot.early_timeouts
    );
}

#[test]
fn kill9_afpacket() {
    crash_test("xy31", "afpacket");
}

#[test]
fn kill9_xdp_native() {
    crash_test("xy32", "native");
}
