//! The AF_PACKET datapath: one worker thread per interface, a batch of
//! frames per `recvmmsg`, each handled by the engine with the disk I/O done
//! in place in the frame, and all replies of the batch sent with one
//! `sendmmsg`. Portable (any NIC, any kernel), and the fallback when XDP
//! cannot attach.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::socket::{is_transient, FramePool, PacketSocket, MAX_BATCH};
pub use super::{Control, Reconfig, WorkerSpec};
use crate::engine::{control, Action, DiskIo, DiskOp, Port, Target};
use crate::stats::WorkerStats;
use crate::wire::ATA_DATA_OFFSET;

/// Spare frames for the extra replies of a wildcard request.
const SPARE: usize = 16;
/// How often counters are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// How long a worker sleeps in poll before checking its control channel.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// An opened, ready worker: sockets are bound before the thread starts so
/// that configuration errors surface at start-up.
#[derive(Debug)]
pub struct Worker {
    spec: WorkerSpec,
    sock: PacketSocket,
    engine: Target,
}

impl Worker {
    /// Open the socket and build the engine.
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
        Ok(Worker { spec, sock, engine })
    }

    /// Run until told to stop.
    pub fn run(mut self) -> io::Result<()> {
        if let Some(core) = self.spec.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                warn!(core, iface = %self.spec.iface.name, "could not pin worker to core");
            }
        }
        let room = self.spec.iface.mtu as usize + 14;
        let mut pool = FramePool::new(MAX_BATCH + SPARE, room.max(1514));
        let mut lens = [0usize; MAX_BATCH];
        let mut tx: Vec<(usize, usize)> = Vec::with_capacity(MAX_BATCH + SPARE);
        // Durable writes of the batch already in the page cache, answered
        // after their stores' fdatasync (group commit), and those stores.
        let mut uncommitted: Vec<(usize, DiskIo)> = Vec::with_capacity(MAX_BATCH);
        let mut to_flush: Vec<usize> = Vec::with_capacity(MAX_BATCH);
        let mut counters = WorkerStats {
            iface: self.spec.iface.name.clone(),
            mac: self.spec.iface.mac.to_string(),
            ..Default::default()
        };
        let mut last_publish = Instant::now();
        let mut link_up = true;
        super::follow_mtu(&mut self.engine, &self.spec.iface, pool.frame(0).len(), 0);
        self.announce(&mut pool, &mut counters, None);
        info!(iface = %self.spec.iface.name, mtu = self.spec.iface.mtu,
              exports = self.spec.exports.len(), "AF_PACKET worker serving");
        loop {
            match self.spec.control.try_recv() {
                Ok(Control::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                Ok(Control::Announce) => self.announce(&mut pool, &mut counters, None),
                Ok(Control::AnnounceExports(list)) => {
                    self.announce(&mut pool, &mut counters, Some(&list))
                }
                // Between batches: every request of the last one was
                // answered (disk I/O is synchronous here), nothing is in flight.
                Ok(Control::Reconfigure(r)) => self.reconfigure(r, &mut pool, &mut counters),
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            if last_publish.elapsed() >= PUBLISH_EVERY {
                super::follow_mtu(&mut self.engine, &self.spec.iface, pool.frame(0).len(), 0);
                self.publish(&mut counters);
                last_publish = Instant::now();
            }
            let n = match self.sock.recv_batch(&mut pool, 0, MAX_BATCH, &mut lens) {
                Ok(n) => {
                    if !link_up && n > 0 {
                        info!(iface = %self.spec.iface.name, "link back: serving again");
                        link_up = true;
                    }
                    n
                }
                Err(e) if is_transient(&e) => {
                    // A down link is not the end of the target: the other
                    // paths keep serving and this one resumes when it is up.
                    if link_up {
                        warn!(iface = %self.spec.iface.name, error = %e, "link unusable: waiting for it");
                        link_up = false;
                    }
                    std::thread::sleep(POLL_TIMEOUT);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                match self.sock.poll_readable(POLL_TIMEOUT) {
                    Err(e) if !is_transient(&e) => return Err(e),
                    _ => {}
                }
                continue;
            }
            counters.rx_frames += n as u64;
            tx.clear();
            let mut spare = MAX_BATCH;
            for (i, &len) in lens.iter().enumerate().take(n) {
                match self.engine.handle(0, pool.frame_mut(i), len) {
                    Action::Reply { len, more } => {
                        tx.push((i, len));
                        let mut more = more;
                        while more {
                            if spare == pool.count() {
                                self.flush_tx(&pool, &mut tx, &mut counters)?;
                                spare = MAX_BATCH;
                            }
                            match self.engine.next_reply(pool.frame_mut(spare)) {
                                Some((len, m)) => {
                                    tx.push((spare, len));
                                    spare += 1;
                                    more = m;
                                }
                                None => more = false,
                            }
                        }
                    }
                    Action::Disk(io)
                        if io.op == DiskOp::Write
                            && self.spec.disks[io.export]
                                .as_file()
                                .is_some_and(|f| f.plain().is_some()) =>
                    {
                        match self.disk_io(&io, pool.frame_mut(i)) {
                            Ok(()) => {
                                uncommitted.push((i, io));
                                if !to_flush.contains(&io.export) {
                                    to_flush.push(io.export);
                                }
                            }
                            Err(e) => {
                                counters.disk_errors += 1;
                                let len = self.engine.complete(&io, Err(e), pool.frame_mut(i));
                                tx.push((i, len));
                            }
                        }
                    }
                    Action::Disk(io) => {
                        let result = self.disk_io(&io, pool.frame_mut(i));
                        if result.is_err() {
                            counters.disk_errors += 1;
                        }
                        let len = self.engine.complete(&io, result, pool.frame_mut(i));
                        tx.push((i, len));
                    }
                    Action::Drop(reason) => {
                        debug!(reason = reason.name(), "dropped frame");
                    }
                }
            }
            // Group commit: one fdatasync per store covers every write of
            // the batch to it; only then are they acknowledged.
            for &e in &to_flush {
                let synced = self.spec.disks[e]
                    .as_file()
                    .map_or(Ok(()), |f| f.flush())
                    .map_err(|err| {
                        warn!(export = e, error = %err, "fdatasync of a batch of writes failed");
                        err.raw_os_error().unwrap_or(libc::EIO)
                    });
                for &(i, io) in uncommitted.iter().filter(|(_, io)| io.export == e) {
                    if synced.is_err() {
                        counters.disk_errors += 1;
                    }
                    let len = self.engine.complete(&io, synced, pool.frame_mut(i));
                    tx.push((i, len));
                }
            }
            uncommitted.clear();
            to_flush.clear();
            self.flush_tx(&pool, &mut tx, &mut counters)?;
        }
        self.publish(&mut counters);
        info!(iface = %self.spec.iface.name, "AF_PACKET worker stopped");
        Ok(())
    }

    fn flush_tx(
        &self,
        pool: &FramePool,
        tx: &mut Vec<(usize, usize)>,
        c: &mut WorkerStats,
    ) -> io::Result<()> {
        if tx.is_empty() {
            return Ok(());
        }
        let sent = self.sock.send_batch(pool, tx)?;
        c.tx_frames += sent as u64;
        c.tx_dropped += (tx.len() - sent) as u64;
        tx.clear();
        Ok(())
    }

    /// Run a disk operation against the frame, synchronously.
    fn disk_io(&self, io: &DiskIo, frame: &mut [u8]) -> Result<(), i32> {
        let disk = &self.spec.disks[io.export];
        let data = ATA_DATA_OFFSET..ATA_DATA_OFFSET + io.len as usize;
        if data.end > frame.len() {
            // Cannot happen while max_sectors fits the room; refuse, never panic.
            return Err(libc::EINVAL);
        }
        let r = match (io.op, disk.as_file()) {
            (DiskOp::Read, Some(f)) => f.read_at(&mut frame[data], io.offset),
            (DiskOp::Read, None) => {
                frame[data].fill(0);
                Ok(())
            }
            // Group-committed stores: into the page cache; the caller
            // flushes before acknowledging.
            (DiskOp::Write, Some(f)) => f.write_uncommitted(&frame[data], io.offset),
            (DiskOp::Flush, Some(f)) => f.flush(),
            (_, None) => Ok(()),
        };
        r.map_err(|e| {
            warn!(op = ?io.op, offset = io.offset, len = io.len, error = %e, "disk I/O failed");
            e.raw_os_error().unwrap_or(libc::EIO)
        })
    }

    /// Serve a new export set.
    fn reconfigure(&mut self, r: Reconfig, pool: &mut FramePool, c: &mut WorkerStats) {
        self.spec.exports = r.exports.clone();
        self.spec.disks = r.disks;
        self.engine.set_exports(r.exports);
        info!(iface = %self.spec.iface.name, exports = self.spec.exports.len(),
              "AF_PACKET worker: new export set in force");
        self.announce(pool, c, Some(&r.announce));
        let _ = r.done.send(Ok(()));
    }

    /// Unsolicited Query Config replies, as vblade sends at start-up: to
    /// each Mac Mask entry when the mask is set, else to broadcast. `only`
    /// limits them to these exports (shelf, slot).
    fn announce(&self, pool: &mut FramePool, c: &mut WorkerStats, only: Option<&[(u16, u8)]>) {
        let port = &self.engine.ports()[0];
        let mut list = Vec::new();
        for e in &self.spec.exports {
            if only.is_some_and(|o| !o.contains(&(e.info.shelf, e.info.slot))) {
                continue;
            }
            for dst in e.announce_destinations() {
                let slot = list.len();
                if slot >= pool.count() {
                    break;
                }
                if let Some(len) = control::announce(port, e, dst, pool.frame_mut(slot)) {
                    list.push((slot, len));
                }
            }
        }
        let _ = self.flush_tx(pool, &mut list, c);
    }

    fn publish(&self, c: &mut WorkerStats) {
        c.publishes += 1;
        if let Ok(d) = self.sock.take_kernel_drops() {
            c.rx_kernel_dropped += d;
        }
        c.engine = self.engine.stats.clone();
        self.spec.stats.store(Arc::new(c.clone()));
    }
}
