//! The AF_PACKET datapath: one worker per interface, a batch of frames per
//! `recvmmsg` and replies in batches per `sendmmsg`. Portable (any NIC, any
//! kernel), and the fallback when XDP cannot attach.
//!
//! Frames live in a pool whose slots are owned one at a time: a received
//! frame stays out of the pool until its reply has been sent, so a store
//! may complete a request after the batch it came in.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tracing::{info, warn};

use super::socket::{is_transient, FramePool, PacketSocket, MAX_BATCH};
use super::WorkerSpec;
use crate::bdev::{ChannelCx, IoEngine, Segs};
use crate::engine::{Port, Target};
use crate::slab::Slab;
use crate::stats::WorkerStats;
use crate::wire::ATA_DATA_OFFSET;
use crate::worker::stores::Stores;
use crate::worker::{Flushed, FrameIo, LoopCounters, LoopOptions};

/// Spare frames for the extra replies of a wildcard request.
const SPARE: usize = 16;
/// Requests in flight per worker.
const DEPTH: usize = 128;
/// How long a worker waits for a down link before trying again.
const LINK_RETRY: Duration = Duration::from_millis(100);

/// A pool slot owned by whoever holds this handle.
#[derive(Debug)]
pub struct PacketFrame(u16);

/// Frames of one AF_PACKET socket.
#[derive(Debug)]
pub struct AfPacketIo {
    sock: PacketSocket,
    pool: FramePool,
    /// Pool slots held (received, in flight, queued to send): the key is
    /// the slot.
    held: Slab<()>,
    tx: Vec<(usize, usize)>,
    iface: String,
    link_up: bool,
    rx_frames: u64,
    tx_frames: u64,
    tx_dropped: u64,
    kernel_dropped: u64,
}

impl AfPacketIo {
    #[inline]
    fn data(&mut self, f: &PacketFrame, data: usize) -> Segs {
        let room = self.pool.frame_mut(usize::from(f.0));
        // The engine caps sectors by the room; were it ever larger, the
        // short segment makes the store refuse the request (never a write
        // past the frame).
        let len = data.min(room.len().saturating_sub(ATA_DATA_OFFSET));
        Segs::one(room[ATA_DATA_OFFSET..].as_mut_ptr(), len)
    }
}

impl FrameIo for AfPacketIo {
    type Frame = PacketFrame;

    fn receive(&mut self, out: &mut Vec<(PacketFrame, usize)>, max: usize) -> io::Result<()> {
        let k = max
            .min(MAX_BATCH)
            .min(self.held.capacity() - self.held.len());
        if k == 0 {
            return Ok(());
        }
        // The slots the next k frames will take; only those received are
        // taken (most turns receive a few frames of a batch of 64).
        let mut slots = [0u16; MAX_BATCH];
        for (s, key) in slots[..k].iter_mut().zip(self.held.next_keys()) {
            // Keys stay below the pool's count, a u16.
            *s = key as u16;
        }
        let mut lens = [0usize; MAX_BATCH];
        match self.sock.recv_slots(&mut self.pool, &slots[..k], &mut lens) {
            Ok(n) => {
                if !self.link_up && n > 0 {
                    info!(iface = %self.iface, "link back: serving again");
                    self.link_up = true;
                }
                for &s in &slots[..n] {
                    let taken = self.held.insert(());
                    debug_assert_eq!(taken.ok(), Some(u32::from(s)), "next_keys order");
                }
                self.rx_frames += n as u64;
                out.extend(
                    slots[..n]
                        .iter()
                        .zip(&lens[..n])
                        .map(|(&s, &l)| (PacketFrame(s), l)),
                );
                Ok(())
            }
            Err(e) if is_transient(&e) => {
                // A down link is not the end of the target: the other paths
                // keep serving and this one resumes when it is up.
                if self.link_up {
                    warn!(iface = %self.iface, error = %e, "link unusable: waiting for it");
                    self.link_up = false;
                }
                std::thread::sleep(LINK_RETRY);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    #[inline]
    fn head(&mut self, f: &PacketFrame) -> &mut [u8] {
        self.pool.frame_mut(usize::from(f.0))
    }

    #[inline]
    fn read_segs(&mut self, f: &mut PacketFrame, data: usize) -> Option<Segs> {
        Some(self.data(f, data))
    }

    #[inline]
    fn write_segs(&mut self, f: &mut PacketFrame, data: usize) -> Segs {
        self.data(f, data)
    }

    #[inline]
    fn trim(&mut self, _f: &mut PacketFrame) {}

    #[inline]
    fn post(&mut self, f: PacketFrame, len: usize) {
        self.tx.push((usize::from(f.0), len));
    }

    #[inline]
    fn release(&mut self, f: PacketFrame) {
        self.held.remove(u32::from(f.0));
    }

    #[inline]
    fn alloc(&mut self) -> Option<PacketFrame> {
        self.held.insert(()).ok().map(|s| PacketFrame(s as u16))
    }

    #[inline]
    fn reap_tx(&mut self) -> usize {
        0
    }

    fn flush(&mut self, _idle_turns: u32) -> io::Result<Flushed> {
        if self.tx.is_empty() {
            return Ok(Flushed::default());
        }
        let r = self.sock.send_batch(&self.pool, &self.tx);
        // sendmmsg copied the frames (or the link refused them): every
        // slot is free again either way.
        let n = self.tx.len();
        for (s, _) in self.tx.drain(..) {
            self.held.remove(s as u32);
        }
        let sent = r?;
        self.tx_frames += sent as u64;
        self.tx_dropped += (n - sent) as u64;
        Ok(Flushed {
            produced: sent,
            untaken: false,
        })
    }

    #[inline]
    fn refill(&mut self, _sleeping: bool) -> io::Result<usize> {
        Ok(0)
    }

    #[inline]
    fn tx_owed(&self) -> bool {
        false
    }

    #[inline]
    fn rx_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn room(&self) -> usize {
        self.pool.frame(0).len()
    }

    fn publish(&mut self, stats: &mut WorkerStats, _loop_counters: &LoopCounters) {
        if let Ok(d) = self.sock.take_kernel_drops() {
            self.kernel_dropped += d;
        }
        stats.rx_frames = self.rx_frames;
        stats.tx_frames = self.tx_frames;
        stats.tx_dropped = self.tx_dropped;
        stats.rx_kernel_dropped = self.kernel_dropped;
    }
}

/// An AF_PACKET worker.
pub type Worker = crate::worker::Worker<AfPacketIo>;

impl crate::worker::Worker<AfPacketIo> {
    /// Open the socket, the frame pool and the store channels, and build
    /// the engine: errors surface before the thread starts.
    pub fn open(spec: WorkerSpec) -> io::Result<Worker> {
        let sock = PacketSocket::open(spec.iface.index)?;
        let max_frame = spec.iface.mtu as usize + 14;
        let bufcnt: usize = spec
            .exports
            .iter()
            .map(|e| e.info.bufcnt as usize)
            .sum::<usize>()
            .max(16);
        // Room for bufcnt frames from each of several initiators, counting
        // the kernel's per-skb overhead.
        let _ = sock.set_buffers((bufcnt * (max_frame + 1024) * 8).max(4 << 20));
        let port = Port::new(
            spec.iface.mac,
            spec.iface.mtu,
            (0..spec.exports.len()).collect(),
        );
        let engine = Target::new(vec![port], spec.exports.clone());
        let count = DEPTH + MAX_BATCH + SPARE;
        let mut pool = FramePool::new(count, max_frame.max(1514));
        let room = pool.frame(0).len();
        // SAFETY: the pool's memory is allocated once and never moves; the
        // worker drops its store channels before its datapath (field
        // order of `Worker`), so it outlives every channel.
        let cx = unsafe {
            ChannelCx::new(
                vec![pool.region()],
                room.saturating_sub(ATA_DATA_OFFSET),
                DEPTH as u32,
                // O_DIRECT reads and writes in flight together (the frames
                // outlive the batch); page-cache requests in place.
                IoEngine::DeviceAsync,
            )
        };
        let stores = Stores::open(&spec.disks, cx)?;
        let io = AfPacketIo {
            sock,
            pool,
            held: Slab::new(count),
            tx: Vec::with_capacity(count),
            iface: spec.iface.name.clone(),
            link_up: true,
            rx_frames: 0,
            tx_frames: 0,
            tx_dropped: 0,
            kernel_dropped: 0,
        };
        let stats = WorkerStats {
            iface: spec.iface.name.clone(),
            mac: spec.iface.mac.to_string(),
            ..Default::default()
        };
        let opts = LoopOptions {
            queue: 0,
            spin: Duration::ZERO,
            reflect: false,
            depth: DEPTH,
            datapath: "AF_PACKET",
        };
        Ok(crate::worker::Worker::new(
            io, engine, spec, stores, stats, opts,
        ))
    }
}
