//! The AoE request-window engine of the tools: keeps up to a window of ATA
//! READ/WRITE requests in flight against one target over one socket,
//! batched both ways. [`super::client::Client::run_window`] (tests, the
//! initiator, conformance) and `xblade bench` (one engine per queue) both run
//! on it; `benches/loadgen` keeps its own on purpose (an independent
//! measuring stick).
//!
//! - Frames move with `sendmmsg`/`recvmmsg` ([`PacketSocket`]) between two
//!   [`FramePool`]s allocated once: one transmit frame per window slot (a
//!   request is built in place in its slot and stays there until answered,
//!   so a retransmission only rewrites the tag) and one receive batch.
//! - Tags index the slot table directly: `queue << 26 | generation << 11 |
//!   slot` (bit 31 clear, as Linux and the target expect). The generation
//!   changes on every transmission (docs/aoe-protocol.md §8.1), so a late
//!   reply to the slot's previous request is recognised as stale and
//!   dropped; a late reply to an earlier try of the request in flight
//!   completes it (the bytes sent were the same). A reply must also
//!   come from the target (one of its MACs), to us, name its shelf.slot and
//!   echo the request's LBA.
//! - Lost replies: a slot unanswered after the timeout is sent again with a
//!   fresh tag (counted); after `max_tries` transmissions the run fails
//!   with [`WindowError::Timeout`] naming the request. Error replies (AoE
//!   error flag, ATA status with any of `0xA9`, a short or mismatched reply)
//!   complete the request with that [`Outcome`]: the [`Workload`] decides
//!   whether that ends the run (the client) or is counted (the bench).
//! - Nothing is allocated per request: slots, free list and send list are
//!   sized up front.
#![forbid(unsafe_code)]

use std::io;
use std::time::{Duration, Instant};

use super::request::{self, Addr};
use crate::net::socket::{FramePool, PacketSocket, MAX_BATCH};
use crate::wire::{aoe, ata, ethernet, MacAddr, AOE_OFFSET, ARG_OFFSET, ATA_DATA_OFFSET};
use crate::wire::{ETHERTYPE_AOE, SECTOR_SIZE};

/// Bits of the tag naming the queue.
pub const QUEUE_BITS: u32 = 5;
/// Most queues.
pub const MAX_QUEUES: usize = 1 << QUEUE_BITS;
/// Bits of the tag naming the slot.
pub const SLOT_BITS: u32 = 11;
/// Most requests in flight per queue.
pub const MAX_WINDOW: usize = 1 << SLOT_BITS;
const GEN_BITS: u32 = 31 - QUEUE_BITS - SLOT_BITS;
const GEN_MAX: u16 = ((1u32 << GEN_BITS) - 1) as u16;

/// The tag of transmission `gen` of slot `slot` of queue `queue`.
pub fn make_tag(queue: usize, gen: u16, slot: usize) -> u32 {
    debug_assert!(queue < MAX_QUEUES && slot < MAX_WINDOW && gen <= GEN_MAX);
    (queue as u32) << (31 - QUEUE_BITS) | u32::from(gen) << SLOT_BITS | slot as u32
}

/// `(queue, generation, slot)` of a tag.
pub fn split_tag(tag: u32) -> (usize, u16, usize) {
    (
        ((tag >> (31 - QUEUE_BITS)) & (MAX_QUEUES as u32 - 1)) as usize,
        ((tag >> SLOT_BITS) & u32::from(GEN_MAX)) as u16,
        (tag & (MAX_WINDOW as u32 - 1)) as usize,
    )
}

/// Generations run 1..=GEN_MAX, so no tag is ever 0 (the tag of
/// unsolicited announcements).
fn next_gen(g: u16) -> u16 {
    if g >= GEN_MAX {
        1
    } else {
        g + 1
    }
}

/// Who talks to whom: us and one target (its MACs, its shelf.slot).
#[derive(Debug, Clone)]
pub struct Route {
    /// Our MAC (source of requests, destination of replies).
    pub src: MacAddr,
    /// The target's MAC.
    pub dst: MacAddr,
    /// Every MAC the target answered Query Config from (`dst` first): a
    /// target with one MAC per queue (`--steer`) is a path per queue, and
    /// request slot i goes to `paths[i % paths.len()]`, as the Linux
    /// initiator rotates over a target's MACs. Empty: `dst` only.
    pub paths: Vec<MacAddr>,
    /// Shelf.
    pub major: u16,
    /// Slot.
    pub minor: u8,
    /// READ/WRITE SECTORS EXT (else the 28-bit commands).
    pub lba48: bool,
}

impl Route {
    /// Addressing of a request to `dst`.
    fn addr(&self, dst: MacAddr) -> Addr {
        Addr {
            dst,
            src: self.src,
            major: self.major,
            minor: self.minor,
        }
    }
}

/// What a window talks to and how.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// Queue number in the tags (0..[`MAX_QUEUES`]): windows sharing a MAC
    /// (the bench's queues, two clients of one process) use different ones.
    pub queue: usize,
    /// Us and the target.
    pub route: Route,
    /// Requests in flight (1..=[`MAX_WINDOW`]).
    pub window: usize,
    /// Largest request, in sectors (sizes the transmit frames).
    pub max_sectors: u8,
    /// Bytes of each reply received: a whole frame when read data is
    /// wanted, else the headers only (the kernel still reports the real
    /// length), so the copy of every reply does not bound a measurement.
    pub rx_room: usize,
    /// Read data is wanted: a read reply cut by `rx_room` is a bad reply.
    pub want_data: bool,
    /// Wait before retransmitting.
    pub timeout: Duration,
    /// Transmissions of one request before the run fails.
    pub max_tries: u32,
    /// Seeds the retransmission order and the first generation.
    pub seed: u64,
}

/// One request, as the [`Workload`] hands it over; kept in its slot and
/// given back with its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    /// WRITE (else READ).
    pub write: bool,
    /// First sector.
    pub lba: u64,
    /// Sector count.
    pub sectors: u8,
    /// The workload's own: an index, a block number.
    pub id: u64,
    /// The workload's own: the bench's pattern version.
    pub version: u32,
}

impl Request {
    /// Data bytes moved.
    pub fn bytes(&self) -> usize {
        usize::from(self.sectors) * SECTOR_SIZE
    }

    /// READ or WRITE, for messages.
    pub fn op(&self) -> &'static str {
        if self.write {
            "WRITE"
        } else {
            "READ"
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (read data checked for length).
    Ok,
    /// The AoE error flag, with its code.
    AoeError(u8),
    /// An ATA status with BSY, DF, DRQ or ERR.
    AtaError {
        /// Status register.
        status: u8,
        /// Error register.
        error: u8,
    },
    /// Too short for its data, or echoing another LBA.
    Bad,
}

/// A request answered.
#[derive(Debug)]
pub struct Completion<'a> {
    /// The request.
    pub req: Request,
    /// How.
    pub outcome: Outcome,
    /// Read data (empty for writes, errors, and without `want_data`).
    pub data: &'a [u8],
    /// Its first transmission.
    pub first_sent: Instant,
    /// When the reply was taken.
    pub now: Instant,
}

/// Why a window stopped.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// A request went unanswered through every try.
    #[error(
        "no reply to {} of {} sectors at LBA {} after {tries} tries of {} ms each",
        req.op(), req.sectors, req.lba, timeout.as_millis()
    )]
    Timeout {
        /// The request.
        req: Request,
        /// Transmissions.
        tries: u32,
        /// Wait per try.
        timeout: Duration,
    },
    /// The socket failed.
    #[error("AF_PACKET socket: {0}")]
    Io(#[from] io::Error),
}

/// What runs in a window: where requests come from and where completions go.
pub trait Workload {
    /// Error ending the run; window errors convert into it.
    type Error: From<WindowError>;

    /// The next request, or `None` when there is nothing to issue now.
    fn next(&mut self, now: Instant) -> Option<Request>;

    /// Write the payload of write `req` (`req.bytes()` bytes).
    fn fill(&mut self, req: &Request, payload: &mut [u8]);

    /// A request was answered. An error ends the run.
    fn complete(&mut self, c: Completion<'_>) -> Result<(), Self::Error>;

    /// Nothing in flight and nothing to issue: is the run over?
    fn finished(&self, now: Instant) -> bool;

    /// Called on every turn of the loop (stop flags, progress): the next
    /// instant the workload wants a turn at even if nothing arrives.
    fn tick(&mut self, _now: Instant, _w: &Window) -> Result<Option<Instant>, Self::Error> {
        Ok(None)
    }

    /// Every frame received, whatever it is (a client's capture).
    fn seen(&mut self, _frame: &[u8]) {}
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    busy: bool,
    /// Generation of the request's first transmission.
    first_gen: u16,
    /// Generation of its latest.
    gen: u16,
    tries: u32,
    req: Request,
    len: usize,
    first_sent: Instant,
    deadline: Instant,
}

impl Slot {
    /// True when a reply tagged with generation `gen` answers one of the
    /// transmissions of the request in flight.
    fn answers(&self, gen: u16) -> bool {
        let gens = u32::from(GEN_MAX);
        let since_first = (u32::from(gen) + gens - u32::from(self.first_gen)) % gens;
        self.busy && gen != 0 && since_first < self.tries
    }
}

/// One window: its frames, slots and counters. Reusable run after run
/// ([`Window::fits`], [`Window::reset`]).
#[derive(Debug)]
pub struct Window {
    spec: WindowSpec,
    tx: FramePool,
    rx: FramePool,
    rx_lens: [usize; MAX_BATCH],
    slots: Vec<Slot>,
    free: Vec<usize>,
    inflight: usize,
    pending: Vec<(usize, usize)>,
    addr: Addr,
    rop: ata::Opcode,
    wop: ata::Opcode,
    rng: u64,
    /// Retransmissions after a timeout, since creation.
    pub retransmits: u64,
    /// Replies to an earlier transmission (or to no request of ours).
    pub stale: u64,
}

impl Window {
    /// Allocate the frames and slots `spec` needs.
    pub fn new(spec: WindowSpec) -> Window {
        let window = spec.window.clamp(1, MAX_WINDOW);
        let tx = FramePool::new(window, tx_room(&spec));
        let rx = FramePool::new(MAX_BATCH, spec.rx_room.max(ARG_OFFSET));
        let mut w = Window {
            tx,
            rx,
            rx_lens: [0; MAX_BATCH],
            slots: Vec::with_capacity(window),
            free: Vec::with_capacity(window),
            inflight: 0,
            pending: Vec::with_capacity(window),
            addr: spec.route.addr(spec.route.dst),
            rop: ata::Opcode::ReadExt,
            wop: ata::Opcode::WriteExt,
            rng: 1,
            retransmits: 0,
            stale: 0,
            spec,
        };
        w.reset(w.spec.clone());
        w
    }

    /// True when this window's frames can serve `spec` (so a caller may
    /// [`Window::reset`] it instead of allocating another).
    pub fn fits(&self, spec: &WindowSpec) -> bool {
        spec.window.clamp(1, MAX_WINDOW) == self.tx.count()
            && tx_room(spec) <= self.tx.frame(0).len()
            && spec.rx_room.max(ARG_OFFSET) <= self.rx.frame(0).len()
    }

    /// Start afresh for `spec` (which [`Window::fits`]): every slot free,
    /// counters zero.
    pub fn reset(&mut self, spec: WindowSpec) {
        let window = spec.window.clamp(1, MAX_WINDOW);
        debug_assert_eq!(window, self.tx.count());
        let now = Instant::now();
        let gen = (spec.seed % u64::from(GEN_MAX)) as u16;
        self.slots.clear();
        self.slots.resize(
            window,
            Slot {
                busy: false,
                first_gen: gen,
                gen,
                tries: 0,
                req: Request::default(),
                len: 0,
                first_sent: now,
                deadline: now,
            },
        );
        self.free.clear();
        self.free.extend((0..window).rev());
        self.inflight = 0;
        self.pending.clear();
        self.addr = spec.route.addr(spec.route.dst);
        (self.rop, self.wop) = if spec.route.lba48 {
            (ata::Opcode::ReadExt, ata::Opcode::WriteExt)
        } else {
            (ata::Opcode::Read, ata::Opcode::Write)
        };
        self.rng = (spec.seed ^ (spec.queue as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        self.retransmits = 0;
        self.stale = 0;
        self.spec = spec;
    }

    /// Requests in flight.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Slots in the window.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Payload area of slot `i`'s transmit frame (to give every write a
    /// recognisable content once, before the run).
    pub fn payload_mut(&mut self, i: usize) -> &mut [u8] {
        let room = tx_room(&self.spec) - ATA_DATA_OFFSET;
        &mut self.tx.frame_mut(i)[ATA_DATA_OFFSET..ATA_DATA_OFFSET + room]
    }

    fn rand(&mut self) -> u64 {
        let x = &mut self.rng;
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Build `req` in free slot `slot` and queue it for sending.
    fn issue<W: Workload>(&mut self, slot: usize, req: Request, now: Instant, w: &mut W) {
        debug_assert!(req.sectors <= self.spec.max_sectors);
        let paths = &self.spec.route.paths;
        if !paths.is_empty() {
            self.addr.dst = paths[slot % paths.len()];
        }
        let s = &mut self.slots[slot];
        s.gen = next_gen(s.gen);
        let tag = make_tag(self.spec.queue, s.gen, slot);
        let frame = self.tx.frame_mut(slot);
        let op = if req.write { self.wop } else { self.rop };
        let mut len = request::ata(frame, &self.addr, tag, op, req.sectors, req.lba, &[]);
        if req.write {
            let end = ATA_DATA_OFFSET + req.bytes();
            w.fill(&req, &mut frame[ATA_DATA_OFFSET..end]);
            len = end;
        }
        *s = Slot {
            busy: true,
            first_gen: s.gen,
            gen: s.gen,
            tries: 1,
            req,
            len,
            first_sent: now,
            deadline: now + self.spec.timeout,
        };
        self.inflight += 1;
        self.pending.push((slot, len));
    }

    /// Send what is queued. A full queue is waited out a little; past that
    /// the requests are left to the retransmission timer, as on a real
    /// network.
    fn flush(&mut self, sock: &PacketSocket) -> io::Result<()> {
        let mut off = 0;
        let mut spins = 0;
        while off < self.pending.len() {
            let n = sock.send_batch(&self.tx, &self.pending[off..])?;
            off += n;
            if n == 0 {
                spins += 1;
                if spins > 100 {
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        self.pending.clear();
        Ok(())
    }

    /// The slot a received frame answers, or `None` (not for us; stale
    /// replies are counted).
    fn match_reply(&mut self, i: usize) -> Option<usize> {
        let len = self.rx_lens[i];
        let f = &self.rx.frame(i)[..len.min(self.rx.frame(i).len())];
        if f.len() < ARG_OFFSET {
            return None;
        }
        let eth = ethernet::Frame::new_unchecked(f);
        let from = eth.src();
        let route = &self.spec.route;
        if eth.dst() != route.src
            || eth.ethertype() != ETHERTYPE_AOE
            || (from != route.dst && !route.paths.contains(&from))
        {
            return None;
        }
        let h = aoe::Packet::new_unchecked(&f[AOE_OFFSET..]);
        if !h.is_response()
            || h.major() != route.major
            || h.minor() != route.minor
            || h.command() != aoe::Command::Ata
        {
            return None; // not an ATA reply for our target (an announcement, say)
        }
        let (q, gen, slot) = split_tag(u32::from_be_bytes(h.tag()));
        if q != self.spec.queue || slot >= self.slots.len() || !self.slots[slot].answers(gen) {
            self.stale += 1;
            return None;
        }
        Some(slot)
    }

    /// How received frame `i` answers the request of `slot`, and the read
    /// data's range in the frame.
    fn judge(&self, i: usize, slot: usize) -> (Outcome, std::ops::Range<usize>) {
        let len = self.rx_lens[i];
        let room = self.rx.frame(i).len();
        let f = &self.rx.frame(i)[..len.min(room)];
        let req = self.slots[slot].req;
        let none = ATA_DATA_OFFSET..ATA_DATA_OFFSET;
        let h = aoe::Packet::new_unchecked(&f[AOE_OFFSET..]);
        if h.is_error() {
            return (Outcome::AoeError(h.error()), none);
        }
        if f.len() < ATA_DATA_OFFSET || (self.spec.want_data && len > room) {
            return (Outcome::Bad, none);
        }
        let a = ata::Packet::new_unchecked(&f[ARG_OFFSET..]);
        if a.cmd_status() & ata::STATUS_FAIL_MASK != 0 {
            let outcome = Outcome::AtaError {
                status: a.cmd_status(),
                error: a.err_feature(),
            };
            return (outcome, none);
        }
        let mask = if self.spec.route.lba48 {
            0xffff_ffff_ffff
        } else {
            ata::LBA28_MASK
        };
        let short = !req.write && len < ATA_DATA_OFFSET + req.bytes();
        if a.lba_raw() & mask != req.lba & mask || short {
            return (Outcome::Bad, none);
        }
        if req.write || !self.spec.want_data {
            return (Outcome::Ok, none);
        }
        (Outcome::Ok, ATA_DATA_OFFSET..ATA_DATA_OFFSET + req.bytes())
    }

    /// Take what has arrived (one batch, without waiting) and hand every
    /// completion to `w`. Returns the frames received.
    fn receive<W: Workload>(&mut self, sock: &PacketSocket, w: &mut W) -> Result<usize, W::Error> {
        let n = sock
            .recv_batch(&mut self.rx, 0, MAX_BATCH, &mut self.rx_lens)
            .map_err(WindowError::from)?;
        let now = Instant::now();
        for i in 0..n {
            let room = self.rx.frame(i).len();
            w.seen(&self.rx.frame(i)[..self.rx_lens[i].min(room)]);
            let Some(slot) = self.match_reply(i) else {
                continue;
            };
            let (outcome, data) = self.judge(i, slot);
            let s = &mut self.slots[slot];
            s.busy = false;
            let (req, first_sent) = (s.req, s.first_sent);
            self.free.push(slot);
            self.inflight -= 1;
            w.complete(Completion {
                req,
                outcome,
                data: &self.rx.frame(i)[data],
                first_sent,
                now,
            })?;
        }
        Ok(n)
    }

    /// Send again, with a fresh tag, every request whose deadline passed;
    /// fail when one has had all its tries.
    fn retransmit_expired(&mut self, now: Instant) -> Result<(), WindowError> {
        // Start at a random slot: when several requests expire together
        // they are resent in a rotated order, so a periodic loss pattern
        // (every Nth reply dropped) cannot lock onto one request forever.
        let window = self.slots.len();
        let start = ((u128::from(self.rand()) * window as u128) >> 64) as usize;
        for k in 0..window {
            let slot = (start + k) % window;
            let s = self.slots[slot];
            if !s.busy || s.deadline > now {
                continue;
            }
            if s.tries >= self.spec.max_tries {
                return Err(WindowError::Timeout {
                    req: s.req,
                    tries: s.tries,
                    timeout: self.spec.timeout,
                });
            }
            // Same request, new tag (Linux does the same, docs/aoe-protocol.md §8.1).
            let gen = next_gen(s.gen);
            let tag = make_tag(self.spec.queue, gen, slot);
            aoe::Packet::new_unchecked(&mut self.tx.frame_mut(slot)[AOE_OFFSET..])
                .set_tag(tag.to_be_bytes());
            let e = &mut self.slots[slot];
            e.gen = gen;
            e.tries += 1;
            e.deadline = now + self.spec.timeout;
            self.retransmits += 1;
            self.pending.push((slot, s.len));
        }
        Ok(())
    }

    /// Run `w` to its end: the window kept full while `w` has requests,
    /// until nothing is in flight and `w` says it is finished. With
    /// `busy_poll` the socket is spun on instead of slept on in poll(2).
    pub fn run<W: Workload>(
        &mut self,
        sock: &PacketSocket,
        busy_poll: bool,
        w: &mut W,
    ) -> Result<(), W::Error> {
        let scan_every =
            (self.spec.timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(20));
        let mut now = Instant::now();
        let mut next_scan = now + scan_every;
        loop {
            let wanted = w.tick(now, self)?;
            // Fill the window.
            let mut more = true;
            if !self.free.is_empty() {
                let t = Instant::now();
                while let Some(&slot) = self.free.last() {
                    match w.next(t) {
                        Some(req) => {
                            self.free.pop();
                            self.issue(slot, req, t, w);
                        }
                        None => {
                            more = false;
                            break;
                        }
                    }
                }
            }
            if !self.pending.is_empty() {
                self.flush(sock).map_err(WindowError::from)?;
            }
            if !more && self.inflight == 0 && w.finished(Instant::now()) {
                return Ok(());
            }
            let n = self.receive(sock, w)?;
            now = Instant::now();
            if n == 0 && !busy_poll {
                let wake = wanted.map_or(next_scan, |t| t.min(next_scan));
                let d = wake.saturating_duration_since(now);
                if !d.is_zero() {
                    // poll(2) counts whole milliseconds: round up.
                    sock.poll_readable(d + Duration::from_micros(999))
                        .map_err(WindowError::from)?;
                    now = Instant::now();
                }
            }
            if now >= next_scan {
                self.retransmit_expired(now)?;
                next_scan = now + scan_every;
            }
        }
    }
}

/// Bytes of a transmit frame: the largest write.
fn tx_room(spec: &WindowSpec) -> usize {
    ATA_DATA_OFFSET + usize::from(spec.max_sectors) * SECTOR_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_stay_in_linux_space() {
        for (q, g, s) in [(0, 1, 0), (31, GEN_MAX, MAX_WINDOW - 1), (5, 77, 63)] {
            let t = make_tag(q, g, s);
            assert_eq!(t & 0x8000_0000, 0, "bit 31 clear");
            assert_ne!(t, 0);
            assert_eq!(split_tag(t), (q, g, s));
        }
        // The queue sits in the top byte, where the bench's socket filter reads it.
        let t = make_tag(9, 1, 0);
        assert_eq!(
            (t.to_be_bytes()[0] >> (7 - QUEUE_BITS)) as usize & (MAX_QUEUES - 1),
            9
        );
    }

    #[test]
    fn late_replies_to_earlier_tries_count() {
        let now = Instant::now();
        let mut s = Slot {
            busy: true,
            first_gen: GEN_MAX - 1,
            gen: 1,
            tries: 3,
            req: Request::default(),
            len: 0,
            first_sent: now,
            deadline: now,
        };
        // Tries went out as GEN_MAX - 1, GEN_MAX, 1 (wrapping past 0).
        for g in [GEN_MAX - 1, GEN_MAX, 1] {
            assert!(s.answers(g), "{g}");
        }
        for g in [0, 2, GEN_MAX - 2] {
            assert!(!s.answers(g), "{g}");
        }
        s.busy = false;
        assert!(!s.answers(1), "a free slot answers nothing");
    }

    #[test]
    fn generations_skip_zero() {
        assert_eq!(next_gen(GEN_MAX), 1);
        assert_eq!(next_gen(0), 1);
        assert_eq!(next_gen(1), 2);
    }
}
