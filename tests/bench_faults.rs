//! `xblade bench` against misbehaving targets:
//! - a lossy target that drops every 10th READ/WRITE reply: the run
//!   survives, counts its retransmissions, and `--verify` still passes;
//! - no target at all: a clear error naming the target and the wait, in a
//!   few seconds, not a hang;
//! - a target that answers discovery and IDENTIFY but never any I/O: a
//!   clear error naming the target, the request and the timeout.
//!
//! The misbehaving targets are in-process responders: the real engine
//! (`xblade::engine::Target`) over an in-memory disk, on the harness's raw
//! socket in the target namespace.
//!
//! Prefixes (unique across all integration tests): xbbl, xbbs, xbbq.

mod aoe_support;
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use aoe_wire::{MacAddr, ATA_DATA_OFFSET, SECTOR_SIZE};
use common::{NetPair, PacketSocket, ETH_P_AOE};
use xblade::engine::{Action, DiskOp, Export, ExportInfo, ExportState, Port, Target};

/// What the responder does with READ/WRITE replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Send all but every `n`th.
    DropEvery(u64),
    /// Send none (discovery and IDENTIFY are still answered).
    SilentIo,
}

/// An AoE target in a thread of this process: shelf 1 slot 1.
struct Responder {
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(pair: &NetPair, mode: Mode, sectors: u64) -> Responder {
        let sock = PacketSocket::open_in(pair.target_ns(), pair.target_if(), ETH_P_AOE)
            .expect("responder socket");
        let mtu = common::mtu_of(pair.target_ns(), pair.target_if());
        let export = Arc::new(Export::new(
            ExportInfo {
                shelf: 1,
                slot: 1,
                bufcnt: 64,
                serial: "lossy".into(),
                model: "xblade bench test responder".into(),
                firmware: "0".into(),
            },
            ExportState {
                sectors,
                ..Default::default()
            },
        ));
        let mut engine = Target::new(
            vec![Port::new(MacAddr(sock.mac()), mtu, vec![0])],
            vec![export],
        );
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let (st, dr, an) = (stop.clone(), dropped.clone(), answered.clone());
        let handle = std::thread::spawn(move || {
            let mut disk = vec![0u8; sectors as usize * SECTOR_SIZE];
            let mut buf = vec![0u8; 9216];
            let mut io_replies = 0u64;
            while !st.load(Ordering::Relaxed) {
                let Some(n) = sock
                    .recv(&mut buf, Duration::from_millis(50))
                    .expect("responder recv")
                else {
                    continue;
                };
                let len = match engine.handle(0, &mut buf, n) {
                    Action::Reply { len, .. } => len,
                    Action::Drop(_) => continue,
                    Action::Disk(io) => {
                        let (off, l) = (io.offset as usize, io.len as usize);
                        let data = &mut buf[ATA_DATA_OFFSET..ATA_DATA_OFFSET + l];
                        match io.op {
                            DiskOp::Read => data.copy_from_slice(&disk[off..off + l]),
                            DiskOp::Write => disk[off..off + l].copy_from_slice(data),
                            DiskOp::Flush => {}
                        }
                        let len = engine.complete(&io, Ok(()), &mut buf);
                        io_replies += 1;
                        let skip = match mode {
                            Mode::DropEvery(k) => io_replies % k == 0,
                            Mode::SilentIo => true,
                        };
                        if skip {
                            dr.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        len
                    }
                };
                sock.send(&buf[..len]).expect("responder send");
                an.fetch_add(1, Ordering::Relaxed);
            }
        });
        Responder {
            stop,
            dropped,
            answered,
            handle: Some(handle),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn lossy_target_is_survived_with_retransmits_and_verify() {
    let pair = NetPair::new("xbbl", 1500);
    let r = Responder::start(&pair, Mode::DropEvery(10), 4096);
    #[rustfmt::skip]
    let (ok, log, rep, _) = aoe_support::run_bench_within(&pair, &[
        "--target", "1.1", "--op", "mix:70", "--duration", "2s", "--warmup", "0",
        "--window", "16", "--verify", "--timeout", "50", "--retries", "8",
    ], Duration::from_secs(60));
    let dropped = r.dropped.load(Ordering::Relaxed);
    drop(r);
    assert!(ok, "bench failed against the lossy target:\n{log}");
    let rep = rep.expect("JSON report");
    assert!(
        dropped > 10,
        "the responder dropped only {dropped} replies:\n{log}"
    );
    // Every dropped reply was repaired by a retransmission with a new tag.
    assert!(
        rep.retransmits >= dropped,
        "{} retransmits for {dropped} dropped replies:\n{log}",
        rep.retransmits
    );
    assert!(rep.phases.timed.retransmits > 0, "{log}");
    assert_eq!(rep.errors, 0, "{log}");
    let v = rep.verify.as_ref().expect("verify section");
    assert!(v.ok && v.mismatches == 0 && v.checked > 0, "{log}");
    assert!(rep.requests > 0, "{log}");
    assert!(
        log.contains("retransmits"),
        "table shows retransmits:\n{log}"
    );
}

#[test]
fn absent_target_is_a_clear_error_not_a_hang() {
    let pair = NetPair::new("xbbs", 1500);
    let (ok, log, rep, took) = aoe_support::run_bench_within(
        &pair,
        &["--target", "7.3", "--duration", "2s"],
        Duration::from_secs(20),
    );
    assert!(!ok, "bench succeeded with no target:\n{log}");
    assert!(rep.is_none(), "no report without a target");
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} to give up:\n{log}"
    );
    assert!(
        log.contains("no AoE target 7.3 answered")
            && log.contains(pair.initiator_if())
            && log.contains("2.0 s"),
        "message names the target, the interface and the wait:\n{log}"
    );
}

#[test]
fn target_silent_on_io_is_a_clear_error() {
    let pair = NetPair::new("xbbq", 1500);
    let r = Responder::start(&pair, Mode::SilentIo, 4096);
    #[rustfmt::skip]
    let (ok, log, _, took) = aoe_support::run_bench_within(&pair, &[
        "--target", "1.1", "--duration", "5s", "--timeout", "100", "--retries", "3",
    ], Duration::from_secs(30));
    let answered = r.answered.load(Ordering::Relaxed);
    drop(r);
    assert!(!ok, "bench succeeded against a silent target:\n{log}");
    assert!(
        answered >= 2,
        "discovery and IDENTIFY were answered ({answered})"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}:\n{log}");
    assert!(
        log.contains("target 1.1")
            && log.contains("no reply to READ")
            && log.contains("4 tries of 100 ms"),
        "message names the target, the request and the timeout:\n{log}"
    );
}
