//! The one worker loop of both datapaths.
//!
//! A worker serves one socket (an AF_PACKET socket, or one AF_XDP queue):
//! it takes a batch of frames, runs the [`crate::engine`] on each, sends
//! control replies at once, hands disk actions to the export's store
//! channel ([`crate::bdev::Channel`]) with the frame's own memory, and
//! replies when the store completes, in the same frame. The datapath only
//! moves frames ([`FrameIo`]); the store only moves data; the request
//! logic lives here, once.
//!
//! Where to look: a READ goes `receive` -> [`Worker::handle_frame`] ->
//! [`Worker::start`] (store submit) -> [`Worker::finish`] (reply).
//!
//! Backpressure: when a store or the datapath has no room for a request
//! (no in-flight slot, no reply memory, [`crate::bdev::Submit::Busy`]), it
//! waits in a FIFO and the worker stops taking frames until it has
//! started; frames then wait in the socket, and beyond that the kernel
//! drops them (counted). Nothing allocates per request.

pub(crate) mod inflight;
pub(crate) mod stores;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use self::inflight::{Inflight, Req};
use self::stores::Stores;
use crate::bdev::{BlockOp, BlockReq, BlockResult, ChannelCounters, Segs, Submit};
use crate::engine::{control, reflect, Action, DiskIo, DiskOp, Target};
use crate::net::{follow_mtu, Control, Reconfig, WorkerSpec};
use crate::stats::WorkerStats;
use crate::wire::ATA_DATA_OFFSET;

/// How often counters are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// Longest sleep before the control channel is looked at again.
const POLL_TIMEOUT_MS: i32 = 100;
/// How long a stopping worker waits for its last TX completions.
const STOP_TX_GRACE: Duration = Duration::from_secs(1);
/// Idle turns spent kicking TX while the kernel has not taken every
/// descriptor, before sleeping 1 ms at a time.
const SPIN_TURNS: u32 = 64;
/// Frames taken per receive.
pub const BATCH: usize = 64;
/// Shortest gap between two disk-failure log lines of one worker.
const FAIL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Disk failures logged at a bounded rate: a dead disk or a cut Ceph
/// cluster fails every request, and one formatted line per request on the
/// pinned core would cost more than serving it. The first failure of a
/// quiet spell is logged at once; later ones within [`FAIL_LOG_EVERY`] are
/// counted and reported with the next line (or at the next publish).
/// Every failure counts in `disk_errors` whatever the log says.
#[derive(Debug, Default)]
struct FailLog {
    last: Option<Instant>,
    /// Failures not logged since `last`.
    unlogged: u64,
}

impl FailLog {
    fn failed(&mut self, io: &DiskIo, errno: i32) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < FAIL_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        warn!(op = ?io.op, offset = io.offset, len = io.len,
              error = %io::Error::from_raw_os_error(errno), unlogged_since_last = self.unlogged,
              "disk I/O failed (answered with an ATA error; further failures within {FAIL_LOG_EVERY:?} are counted, not logged)");
        self.last = Some(now);
        self.unlogged = 0;
    }

    /// Report failures counted but not logged once the spell is over.
    fn flush(&mut self) {
        if self.unlogged > 0 && self.last.is_some_and(|t| t.elapsed() >= FAIL_LOG_EVERY) {
            warn!(
                failures = self.unlogged,
                "more disk I/O failures (answered with ATA errors)"
            );
            self.unlogged = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// What a datapath's TX flush did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flushed {
    /// Descriptors (or frames) handed to the kernel.
    pub produced: usize,
    /// The kernel has not taken everything yet: turn again before sleeping.
    pub untaken: bool,
}

/// Counters the loop keeps for the datapath to publish its way.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopCounters {
    /// Requests that waited for room (a store, an in-flight slot, reply
    /// memory); RX paused meanwhile.
    pub backpressure: u64,
    /// Extra control replies not sent for lack of a frame.
    pub reply_no_frame: u64,
    /// READs of a zero store answered from zeroed frames.
    pub zero_replies: u64,
    /// Nanoseconds spent polling with nothing to do.
    pub idle_spin_ns: u64,
    /// The stores' own counters.
    pub stores: ChannelCounters,
}

/// What a datapath offers the loop: frames, their memory, and a way to
/// send them. A `Frame` is a handle that owns its memory: whoever holds it
/// may touch that memory, through the `FrameIo` that lent it.
pub trait FrameIo {
    /// An owned frame: received, or taken for a reply.
    type Frame;

    /// Take up to `max` whole received frames (and their lengths).
    fn receive(&mut self, out: &mut Vec<(Self::Frame, usize)>, max: usize) -> io::Result<()>;
    /// The frame's first buffer: the engine parses the request and builds
    /// the reply header there.
    fn head(&mut self, f: &Self::Frame) -> &mut [u8];
    /// The memory a READ reply of `data` bytes after its header occupies,
    /// taking what more it needs; `None`: not now (try again later, the
    /// frame unchanged). Calling it again returns the same segments.
    fn read_segs(&mut self, f: &mut Self::Frame, data: usize) -> Option<Segs>;
    /// The memory holding a WRITE's `data` bytes in the request (what is
    /// past them is given back). Calling it again returns the same.
    fn write_segs(&mut self, f: &mut Self::Frame, data: usize) -> Segs;
    /// Keep only the first buffer (for a reply that is a header only).
    fn trim(&mut self, f: &mut Self::Frame);
    /// Queue `f` to send, `len` bytes.
    fn post(&mut self, f: Self::Frame, len: usize);
    /// Give `f` back unsent.
    fn release(&mut self, f: Self::Frame);
    /// A free frame for an extra reply.
    fn alloc(&mut self) -> Option<Self::Frame>;
    /// Answer a READ of `data` zero bytes without a store: `header` builds
    /// the reply header in the request's first buffer and returns the
    /// reply length. `Err(f)` when the datapath cannot (then the store
    /// fills the zeros).
    fn post_zeros(
        &mut self,
        f: Self::Frame,
        data: usize,
        header: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<(), Self::Frame> {
        let _ = (data, header);
        Err(f)
    }
    /// Take back frames the kernel has sent.
    fn reap_tx(&mut self) -> usize;
    /// Hand queued frames to the kernel. `idle_turns`: how long the loop
    /// has found nothing to do (a datapath may kick then).
    fn flush(&mut self, idle_turns: u32) -> io::Result<Flushed>;
    /// Restock the receive side; `sleeping`: the worker is about to wait.
    fn refill(&mut self, sleeping: bool) -> io::Result<usize>;
    /// Sent frames not yet given back by the kernel.
    fn tx_owed(&self) -> bool;
    /// Descriptor readable when frames arrive.
    fn rx_fd(&self) -> RawFd;
    /// Nothing arrived on a busy-polled socket: drive the NIC.
    fn poll_idle(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Largest frame the buffers hold (the engine's sector cap follows).
    fn room(&self) -> usize;
    /// Put the datapath's counters (and the loop's) into `stats`.
    fn publish(&mut self, stats: &mut WorkerStats, loop_counters: &LoopCounters);
    /// The worker stops: give back frames held half-received.
    fn finish(&mut self) {}
}

/// How a worker behaves beyond its datapath.
#[derive(Debug, Clone, Copy)]
pub struct LoopOptions {
    /// Queue served (logs, counters).
    pub queue: u32,
    /// How long an idle worker polls before it sleeps.
    pub spin: Duration,
    /// Answer READ and WRITE without the engine or the stores
    /// (measurement only: [`crate::engine::reflect`]).
    pub reflect: bool,
    /// Requests in flight at once.
    pub depth: usize,
    /// Name in logs ("AF_XDP worker serving").
    pub datapath: &'static str,
}

/// A request waiting for room, in arrival order.
#[derive(Debug)]
struct Waiting<T> {
    frame: T,
    io: DiskIo,
    store: u16,
}

/// One worker: a datapath, the engine, the stores.
pub struct Worker<F: FrameIo> {
    // Field order is drop order: the stores (whose channels wait for their
    // operations in flight) and the frames they hold go before the
    // datapath whose memory those operations point into.
    stores: Stores,
    inflight: Inflight<F::Frame>,
    waiting: VecDeque<Waiting<F::Frame>>,
    io: F,
    engine: Target,
    spec: WorkerSpec,
    rx: Vec<(F::Frame, usize)>,
    /// Completions of one reap.
    done: Vec<(u32, BlockResult)>,
    stats: WorkerStats,
    counters: LoopCounters,
    opts: LoopOptions,
    fail_log: FailLog,
}

impl<F: FrameIo> std::fmt::Debug for Worker<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("iface", &self.spec.iface.name)
            .field("queue", &self.opts.queue)
            .field("in_flight", &self.inflight.len())
            .finish()
    }
}

impl<F: FrameIo> Worker<F> {
    /// A worker over `io`, serving `spec`'s exports through `stores`.
    pub fn new(
        io: F,
        engine: Target,
        spec: WorkerSpec,
        stores: Stores,
        stats: WorkerStats,
        opts: LoopOptions,
    ) -> Worker<F> {
        let w = Worker {
            io,
            engine,
            stores,
            inflight: Inflight::new(opts.depth),
            waiting: VecDeque::with_capacity(BATCH),
            rx: Vec::with_capacity(BATCH),
            done: Vec::with_capacity(opts.depth + BATCH),
            stats,
            counters: LoopCounters::default(),
            opts,
            fail_log: FailLog::default(),
            spec,
        };
        // `xblade status` shows the worker before its first counters.
        w.spec.stats.store(Arc::new(w.stats.clone()));
        w
    }

    /// Run until told to stop; then finish what is in flight and return.
    pub fn run(mut self) -> io::Result<()> {
        if let Some(core) = self.spec.core {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                warn!(core, iface = %self.spec.iface.name, queue = self.opts.queue,
                      "could not pin worker to core");
            }
        }
        follow_mtu(
            &mut self.engine,
            &self.spec.iface,
            self.io.room(),
            self.opts.queue,
        );
        self.io.refill(false)?;
        self.announce(None);
        info!(iface = %self.spec.iface.name, queue = self.opts.queue, mtu = self.spec.iface.mtu,
              max_sectors = self.engine.ports()[0].max_sectors,
              exports = self.spec.exports.len(), "{} worker serving", self.opts.datapath);
        let mut last_publish = Instant::now();
        let mut stopping: Option<Instant> = None;
        let mut idle_turns = 0u32;
        let mut idle_since = Instant::now();
        let mut naps = 0u32;
        let mut turn = 0u32;
        let mut fds: Vec<RawFd> = Vec::with_capacity(8);
        loop {
            turn = turn.wrapping_add(1);
            // A clock read or a channel poll costs as much as a request's
            // ring work: look every 64 busy turns only.
            let look = turn % 64 == 0 || idle_turns > 0;
            if stopping.is_none() && look && self.control() {
                info!(iface = %self.spec.iface.name, queue = self.opts.queue,
                      in_flight = self.inflight.len(), "stopping: finishing requests in flight");
                stopping = Some(Instant::now());
            }
            if look && last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
                last_publish = Instant::now();
            }

            let n_tx = self.io.reap_tx();
            // Room freed by the last turn's completions goes to waiting
            // requests first.
            self.run_waiting();
            let rx = stopping.is_none() && self.waiting.is_empty();
            let n_rx = match (rx, self.opts.reflect) {
                (false, _) => 0,
                (true, false) => self.receive::<false>()?,
                (true, true) => self.receive::<true>()?,
            };
            if n_rx == 0 && rx {
                self.io.poll_idle()?;
            }
            self.stores.end_batch()?;
            // One reap per turn, after the batch has started: it collects
            // what completed since the last turn and what completed during
            // the submit (page-cache io_uring reads, group commits of
            // synchronous stores), so those replies leave with this batch.
            let n_io = self.reap();
            let flushed = self.io.flush(idle_turns)?;
            let filled = if stopping.is_none() {
                self.io.refill(false)?
            } else {
                0
            };
            if let Some(t) = stopping {
                let disk_done = self.waiting.is_empty() && self.inflight.is_empty();
                let tx_done = !self.io.tx_owed() || t.elapsed() > STOP_TX_GRACE;
                if disk_done && tx_done {
                    break;
                }
            }
            let busy = n_rx > 0 || n_tx > 0 || n_io > 0 || flushed.produced > 0 || filled > 0;
            if busy {
                if idle_turns > 0 {
                    self.count_idle_spin(idle_since);
                }
                idle_turns = 0;
                naps = 0;
                continue;
            }
            idle_turns = idle_turns.saturating_add(1);
            if idle_turns == 1 && !self.opts.spin.is_zero() {
                idle_since = Instant::now();
            }
            if !self.opts.spin.is_zero()
                && stopping.is_none()
                && self.inflight.is_empty()
                && idle_since.elapsed() < self.opts.spin
            {
                // Poll again: no system call, no wakeup to pay. Not while
                // a store has work: its descriptor wakes us, and requests
                // arriving meanwhile reach it in one batch.
                continue;
            }
            if flushed.untaken && idle_turns < SPIN_TURNS {
                continue;
            }
            let owed = self.io.tx_owed();
            let timeout = if owed && naps < 100 {
                1
            } else {
                POLL_TIMEOUT_MS
            };
            if rx {
                self.io.refill(true)?;
            }
            self.count_idle_spin(idle_since);
            fds.clear();
            if rx {
                fds.push(self.io.rx_fd());
            }
            let stores_from = fds.len();
            self.stores.poll_fds(&mut fds);
            wait(&fds, stores_from, timeout)?;
            naps = naps.saturating_add(1);
            if !self.opts.spin.is_zero() {
                idle_since = Instant::now();
            }
            if stopping.is_some() && owed {
                idle_turns = 0;
            }
        }
        self.io.finish();
        self.publish();
        info!(iface = %self.spec.iface.name, queue = self.opts.queue,
              "{} worker stopped", self.opts.datapath);
        Ok(())
    }

    fn count_idle_spin(&mut self, since: Instant) {
        if !self.opts.spin.is_zero() {
            self.counters.idle_spin_ns += since.elapsed().as_nanos() as u64;
        }
    }

    /// Obey the control channel; true when told to stop.
    fn control(&mut self) -> bool {
        match self.spec.control.try_recv() {
            Ok(Control::Stop) | Err(crossbeam_channel::TryRecvError::Disconnected) => true,
            Ok(Control::Announce) => {
                self.announce(None);
                false
            }
            Ok(Control::AnnounceExports(list)) => {
                self.announce(Some(&list));
                false
            }
            Ok(Control::Reconfigure(r)) => {
                self.reconfigure(r);
                false
            }
            Err(crossbeam_channel::TryRecvError::Empty) => false,
        }
    }

    // ---- requests ------------------------------------------------------

    /// Take a batch of frames and handle each. `REFLECT`
    /// (`--xdp-reflect`, measurement only) is decided per batch, so the
    /// per-frame path of a serving worker has no branch for it.
    fn receive<const REFLECT: bool>(&mut self) -> io::Result<usize> {
        let mut batch = std::mem::take(&mut self.rx);
        batch.clear();
        let r = self.io.receive(&mut batch, BATCH);
        let n = batch.len();
        for (f, len) in batch.drain(..) {
            if REFLECT {
                if let Some(back) = self.reflect(f, len) {
                    self.handle_frame(back, len);
                }
            } else {
                self.handle_frame(f, len);
            }
        }
        self.rx = batch;
        r.map(|()| n)
    }

    /// Run the engine on a received frame.
    #[inline]
    fn handle_frame(&mut self, mut f: F::Frame, len: usize) {
        let frame = self.io.head(&f);
        match self.engine.handle(0, frame, len) {
            Action::Reply { len, more } => {
                self.io.trim(&mut f);
                self.io.post(f, len);
                if more {
                    self.more_replies();
                }
            }
            Action::Drop(reason) => {
                debug!(reason = reason.name(), "dropped frame");
                self.io.release(f);
            }
            Action::Disk(io) => {
                let store = self.stores.of_export(io.export);
                // Arrival order: nothing overtakes a waiting request (a
                // FLUSH must follow the writes before it).
                if !self.waiting.is_empty() {
                    self.waiting.push_back(Waiting {
                        frame: f,
                        io,
                        store,
                    });
                    return;
                }
                if let Err(frame) = self.start(f, io, store) {
                    self.counters.backpressure += 1;
                    self.waiting.push_back(Waiting { frame, io, store });
                }
            }
        }
    }

    /// `--xdp-reflect`: answer a READ or WRITE in place with no engine and
    /// no store; hand anything else back.
    fn reflect(&mut self, mut f: F::Frame, len: usize) -> Option<F::Frame> {
        let max = self.engine.ports()[0].max_sectors;
        let Some(reply) = reflect::reflect(self.io.head(&f), len, max) else {
            return Some(f);
        };
        if reply > ATA_DATA_OFFSET && self.io.read_segs(&mut f, reply - ATA_DATA_OFFSET).is_none() {
            self.counters.backpressure += 1;
            self.io.release(f);
            return None;
        }
        self.io.post(f, reply);
        None
    }

    /// Further replies of a wildcard control request, each in a new frame.
    fn more_replies(&mut self) {
        loop {
            let Some(f) = self.io.alloc() else {
                self.counters.reply_no_frame += 1;
                return;
            };
            match self.engine.next_reply(self.io.head(&f)) {
                Some((len, more)) => {
                    self.io.post(f, len);
                    if !more {
                        return;
                    }
                }
                None => {
                    self.io.release(f);
                    return;
                }
            }
        }
    }

    /// Start a disk request on `store`; the frame back when it must wait.
    ///
    /// This is where frame memory is lent to a store: the segments point
    /// into the frame, which moves into the in-flight table under the tag
    /// the store gets (unless the store is done during the submit), and
    /// comes out only when the tag comes back.
    #[inline]
    fn start(&mut self, mut f: F::Frame, io: DiskIo, store: u16) -> Result<(), F::Frame> {
        // One look-up: the borrow of the store is disjoint from the other
        // fields used below.
        let Some(st) = self.stores.get_mut(store) else {
            // Cannot happen: a store stays until its requests are done.
            warn!(store, "request for a closed store: answered with an error");
            self.finish(f, io, Err(libc::EIO));
            return Ok(());
        };
        let len = io.len as usize;
        if io.op == DiskOp::Read && st.reads_zero {
            let engine = &mut self.engine;
            match self
                .io
                .post_zeros(f, len, &mut |h| engine.complete(&io, Ok(()), h))
            {
                Ok(()) => {
                    self.counters.zero_replies += 1;
                    return Ok(());
                }
                Err(back) => f = back,
            }
        }
        if self.inflight.is_full() {
            return Err(f);
        }
        let (op, segs) = match io.op {
            DiskOp::Read => match self.io.read_segs(&mut f, len) {
                Some(s) => (BlockOp::Read, s),
                None => return Err(f),
            },
            DiskOp::Write => (BlockOp::Write, self.io.write_segs(&mut f, len)),
            DiskOp::Flush => (BlockOp::Flush, Segs::default()),
        };
        let req = BlockReq {
            op,
            offset: io.offset,
            len: if op == BlockOp::Flush { 0 } else { io.len },
        };
        let Some(tag) = self.inflight.reserve() else {
            return Err(f);
        };
        // SAFETY: `segs` lie in frame `f` (its first buffer and the buffers
        // read_segs/write_segs attached to it), which this worker neither
        // touches, sends nor releases until the channel is done with it:
        // at return for Done and Busy; for Queued, `f` moves (the handle,
        // not the memory) into the in-flight slot `tag` and stays there
        // until the channel hands `tag` back.
        let submitted = unsafe { st.chan.submit(req, &segs, tag) };
        match submitted {
            Submit::Queued => {
                let req = Req { frame: f, io };
                if self.inflight.fill(tag, req).is_err() {
                    unreachable!("tag {tag} was reserved just above");
                }
                Ok(())
            }
            Submit::Done(res) => {
                self.inflight.unreserve(tag);
                self.finish(f, io, res);
                Ok(())
            }
            Submit::Busy => {
                self.inflight.unreserve(tag);
                Err(f)
            }
        }
    }

    /// A disk request is done: build its reply in its frame and queue it.
    #[inline]
    fn finish(&mut self, mut f: F::Frame, io: DiskIo, res: BlockResult) {
        if res == Err(crate::bdev::DROPPED) {
            // The store may no longer write here (gateway lease, fencing):
            // no reply, the initiator retries through another gateway.
            self.io.release(f);
            return;
        }
        if let Err(errno) = res {
            self.stats.disk_errors += 1;
            self.fail_log.failed(&io, errno);
        }
        // A WRITE's data and a failed READ's reply memory are not part of
        // the reply.
        if io.op != DiskOp::Read || res.is_err() {
            self.io.trim(&mut f);
        }
        let len = self.engine.complete(&io, res, self.io.head(&f));
        self.io.post(f, len);
    }

    /// Collect the stores' completions and reply.
    #[inline]
    fn reap(&mut self) -> usize {
        let mut done = std::mem::take(&mut self.done);
        // Completions are bounded by the requests in flight: the list,
        // sized for them at open, does not grow.
        self.stores.reap(|_, tag, res| done.push((tag, res)));
        let n = done.len();
        for (tag, res) in done.drain(..) {
            self.complete(tag, res);
        }
        self.done = done;
        if n > 0 {
            let waiting = &self.waiting;
            self.stores.sweep(|s| waiting.iter().any(|w| w.store == s));
        }
        n
    }

    #[inline]
    fn complete(&mut self, tag: u32, res: BlockResult) {
        match self.inflight.remove(tag) {
            Some(r) => self.finish(r.frame, r.io, res),
            None => warn!(tag, "a store completed a tag not in flight: ignored"),
        }
    }

    /// Start waiting requests, in order, while there is room.
    fn run_waiting(&mut self) {
        while let Some(w) = self.waiting.pop_front() {
            if let Err(frame) = self.start(w.frame, w.io, w.store) {
                self.waiting.push_front(Waiting { frame, ..w });
                break;
            }
        }
    }

    // ---- control -------------------------------------------------------

    /// Serve a new export set at once: stores that stay keep their channel
    /// and their requests; requests of stores that leave complete on them
    /// (their replies go out), and those stores close when drained.
    fn reconfigure(&mut self, r: Reconfig) {
        if let Err(e) = self.stores.set(&r.disks) {
            warn!(iface = %self.spec.iface.name, queue = self.opts.queue, error = %e,
                  "new export set refused: cannot open a store channel; the old set stays");
            let _ = r.done.send(Err(format!(
                "{} queue {}: store channel: {e}",
                self.spec.iface.name, self.opts.queue
            )));
            return;
        }
        self.spec.exports = r.exports.clone();
        self.spec.disks = r.disks;
        self.engine.set_exports(r.exports);
        info!(iface = %self.spec.iface.name, queue = self.opts.queue,
              exports = self.spec.exports.len(), in_flight = self.inflight.len(),
              "new export set in force");
        self.announce(Some(&r.announce));
        let _ = r.done.send(Ok(()));
    }

    /// Unsolicited Query Config replies (start-up, SIGHUP), as vblade sends
    /// them: to each Mac Mask entry when the mask is set, else to
    /// broadcast. A worker with its own MAC announces from it, so
    /// initiators learn every queue's path; without one, queue 0 speaks
    /// for the interface. `only` limits them to these exports.
    fn announce(&mut self, only: Option<&[(u16, u8)]>) {
        if self.opts.queue != 0 && self.engine.ports()[0].mac == self.spec.iface.mac {
            return;
        }
        let exports = self.spec.exports.clone();
        for e in &exports {
            if only.is_some_and(|o| !o.contains(&(e.info.shelf, e.info.slot))) {
                continue;
            }
            for dst in e.announce_destinations() {
                let Some(f) = self.io.alloc() else {
                    self.counters.reply_no_frame += 1;
                    break;
                };
                match control::announce(&self.engine.ports()[0], e, dst, self.io.head(&f)) {
                    Some(len) => self.io.post(f, len),
                    None => self.io.release(f),
                }
            }
        }
        let _ = self.io.flush(0);
    }

    fn publish(&mut self) {
        follow_mtu(
            &mut self.engine,
            &self.spec.iface,
            self.io.room(),
            self.opts.queue,
        );
        self.fail_log.flush();
        self.counters.stores = self.stores.counters();
        self.stats.disk_in_flight = (self.inflight.len() + self.waiting.len()) as u64;
        self.stats.publishes += 1;
        self.stats.engine = self.engine.stats.clone();
        self.io.publish(&mut self.stats, &self.counters);
        self.spec.stats.store(Arc::new(self.stats.clone()));
    }
}

/// Sleep until one of `fds` is readable or `timeout_ms` passes; clear the
/// store descriptors (eventfds, from index `stores_from`) that fired.
fn wait(fds: &[RawFd], stores_from: usize, timeout_ms: i32) -> io::Result<()> {
    const MAX: usize = 16;
    let mut p = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; MAX];
    let n = fds.len().min(MAX);
    for (slot, &fd) in p.iter_mut().zip(&fds[..n]) {
        slot.fd = fd;
    }
    // SAFETY: `p` is a live array of `n` pollfds.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        return Ok(());
    }
    for q in &p[stores_from.min(n)..n] {
        if q.revents != 0 {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into `v`, a live local, from an
            // eventfd a store gave as its completion descriptor.
            let _ = unsafe { libc::read(q.fd, std::ptr::addr_of_mut!(v).cast(), 8) };
        }
    }
    Ok(())
}
