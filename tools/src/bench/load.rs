//! The window engine: one per queue (thread, socket), keeping its share of
//! the window in flight against one target, batched both ways.
//!
//! - Frames move with `sendmmsg`/`recvmmsg` ([`PacketSocket`]) between two
//!   preallocated [`FramePool`]s: one transmit frame per window slot (a
//!   request is built in place in its slot and stays there until it is
//!   answered, so a retransmission only rewrites the tag) and one receive
//!   batch.
//! - Tags index the slot table directly: `queue << 26 | generation << 11 |
//!   slot` (bit 31 clear, as Linux and the target expect). The generation
//!   changes on every transmission, so a late reply to an earlier try, or
//!   to the slot's previous request, is recognised as stale and dropped, as
//!   the Linux initiator does (docs/aoe-protocol.md §8.1). The reply must also
//!   come from the target's MAC, to ours, and echo the request's LBA.
//! - With several queues each socket gets a classic BPF filter on the
//!   tag's queue bits, so every reply is received once, by its queue.
//! - Lost replies: a slot unanswered after the timeout is sent again with a
//!   fresh tag (counted); after `max_tries` transmissions the run fails
//!   with an error naming the request. Error replies (AoE error flag, ATA
//!   status with any of `0xA9`, a short or mismatched reply) complete the
//!   request and are counted; they are not retried.
//! - Nothing is allocated per request: slots, free list, send list, the
//!   latency histogram and the verify tables are sized up front.
//!
//! Phases: `Prefill` (with `--verify`: write the pattern over the queue's
//! blocks), `Timed` (the measured run: warm-up, then `duration`, then drain
//! what is in flight) and `Readback` (with `--verify` and writes: read every
//! block back and check it).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::pattern;
use crate::initiator::request::{self, Addr};
use crate::net::socket::{FramePool, PacketSocket, MAX_BATCH};
use crate::wire::{aoe, ata, MacAddr, ARG_OFFSET, ATA_DATA_OFFSET, ETHERTYPE_AOE, SECTOR_SIZE};

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

/// A version no write produced: the block's content is unknown (a write
/// to it failed), so reads of it are not checked.
const UNKNOWN: u32 = u32::MAX;
/// Bytes of each reply received without `--verify`: the AoE and ATA
/// headers with room to spare.
const HEADERS_ONLY: usize = ATA_DATA_OFFSET + 28;

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

/// What every queue runs.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Interface index.
    pub ifindex: u32,
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
    /// Sectors per request.
    pub sectors: u8,
    /// First LBA of the range used.
    pub lba_base: u64,
    /// Blocks of `sectors` sectors in the range.
    pub chunks: u64,
    /// Percentage of reads in the timed phase (100 read, 0 write).
    pub read_pct: u8,
    /// Requests in flight, per queue (index = queue).
    pub windows: Vec<usize>,
    /// Core per queue.
    pub cores: Vec<Option<usize>>,
    /// Wait before retransmitting.
    pub timeout: Duration,
    /// Transmissions of one request before the run fails.
    pub max_tries: u32,
    /// Write the pattern first and check every byte read.
    pub verify: bool,
    /// Spin on the socket instead of sleeping in poll(2).
    pub busy_poll: bool,
    /// Largest frame the link carries (MTU + 14).
    pub max_frame: usize,
    /// RNG seed.
    pub seed: u64,
}

impl LoadSpec {
    /// Number of queues.
    pub fn queues(&self) -> usize {
        self.windows.len()
    }

    /// Bytes per request.
    pub fn bytes(&self) -> usize {
        self.sectors as usize * SECTOR_SIZE
    }
}

/// Phases of a queue's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Not started.
    Idle = 0,
    /// Writing the verify pattern.
    Prefill = 1,
    /// Waiting for the other queues.
    Ready = 2,
    /// The measured run.
    Timed = 3,
    /// Reading everything back.
    Readback = 4,
    /// Finished.
    Done = 5,
}

impl Phase {
    /// Name for the progress line.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "starting",
            Phase::Prefill => "verify: writing pattern",
            Phase::Ready => "ready",
            Phase::Timed => "running",
            Phase::Readback => "verify: reading back",
            Phase::Done => "done",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Prefill,
            2 => Phase::Ready,
            3 => Phase::Timed,
            4 => Phase::Readback,
            5 => Phase::Done,
            _ => Phase::Idle,
        }
    }
}

/// Live counters one queue publishes for the progress line (cumulative
/// over all phases; updated every few milliseconds).
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    /// Replies accepted.
    pub completed: AtomicU64,
    /// Data bytes moved by them.
    pub bytes: AtomicU64,
    /// Retransmissions.
    pub retransmits: AtomicU64,
    /// Error replies.
    pub errors: AtomicU64,
}

impl Progress {
    /// The queue's phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }
}

/// State shared between the queues and the thread that runs them.
#[derive(Debug)]
pub struct Shared {
    /// Stop everything (an error elsewhere, or an interrupt).
    pub abort: AtomicBool,
    /// Queues done with the prefill.
    pub ready: AtomicUsize,
    /// Start of the timed phase, set once every queue is ready.
    pub start: OnceLock<Instant>,
    /// Warm-up (not measured) at the start of the timed phase.
    pub warmup: Duration,
    /// Measured part of the timed phase.
    pub duration: Duration,
    /// Per queue.
    pub progress: Vec<Progress>,
}

impl Shared {
    /// For `queues` queues.
    pub fn new(queues: usize, warmup: Duration, duration: Duration) -> Shared {
        Shared {
            abort: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            start: OnceLock::new(),
            warmup,
            duration,
            progress: (0..queues).map(|_| Progress::default()).collect(),
        }
    }
}

/// Counters of one phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// Requests issued (each once, however often transmitted).
    pub issued: u64,
    /// Requests answered (successfully or not).
    pub completed: u64,
    /// Of those, answered without error.
    pub ok: u64,
    /// Retransmissions after a timeout.
    pub retransmits: u64,
    /// Replies to an earlier transmission (or to no request of ours).
    pub stale: u64,
    /// Replies with the AoE error flag.
    pub aoe_errors: u64,
    /// The same, by AoE error code (7: code 7 and above).
    pub aoe_error_codes: [u64; 8],
    /// Replies whose ATA status had BSY, DF, DRQ or ERR.
    pub ata_errors: u64,
    /// Replies too short for their data, or echoing another LBA.
    pub bad_replies: u64,
    /// Read replies checked against the pattern.
    pub checked: u64,
    /// Read replies that did not match it.
    pub mismatches: u64,
    /// Wall time of the phase, seconds.
    pub elapsed_s: f64,
}

impl PhaseStats {
    /// Error replies of every kind.
    pub fn errors(&self) -> u64 {
        self.aoe_errors + self.ata_errors + self.bad_replies
    }

    /// Add `o` (elapsed: the longest).
    pub fn merge(&mut self, o: &PhaseStats) {
        self.issued += o.issued;
        self.completed += o.completed;
        self.ok += o.ok;
        self.retransmits += o.retransmits;
        self.stale += o.stale;
        self.aoe_errors += o.aoe_errors;
        for (a, b) in self.aoe_error_codes.iter_mut().zip(o.aoe_error_codes) {
            *a += b;
        }
        self.ata_errors += o.ata_errors;
        self.bad_replies += o.bad_replies;
        self.checked += o.checked;
        self.mismatches += o.mismatches;
        self.elapsed_s = self.elapsed_s.max(o.elapsed_s);
    }
}

/// Completions inside the measured window of the timed phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// Successful requests.
    pub requests: u64,
    /// Of which reads.
    pub reads: u64,
    /// Of which writes.
    pub writes: u64,
    /// Data bytes.
    pub bytes: u64,
}

impl Measured {
    /// Add `o`.
    pub fn merge(&mut self, o: &Measured) {
        self.requests += o.requests;
        self.reads += o.reads;
        self.writes += o.writes;
        self.bytes += o.bytes;
    }
}

/// What one queue did.
#[derive(Debug)]
pub struct QueueResult {
    /// Verify prefill.
    pub prefill: PhaseStats,
    /// The timed phase (warm-up and drain included).
    pub timed: PhaseStats,
    /// Verify read-back.
    pub readback: PhaseStats,
    /// The measured window.
    pub measured: Measured,
    /// Latency (ns) of successful requests completed in the measured window,
    /// from first transmission to reply.
    pub latency: Histogram<u64>,
    /// The first few verify mismatches, described.
    pub mismatch_notes: Vec<String>,
}

/// Why a queue stopped early.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A request went unanswered through every try.
    #[error(
        "no reply to {op} of {sectors} sectors at LBA {lba} after {tries} tries of {} ms each",
        timeout.as_millis()
    )]
    Timeout {
        /// READ or WRITE.
        op: &'static str,
        /// Sector count.
        sectors: u8,
        /// First sector.
        lba: u64,
        /// Transmissions.
        tries: u32,
        /// Wait per try.
        timeout: Duration,
    },
    /// The socket failed.
    #[error("AF_PACKET socket: {0}")]
    Io(#[from] io::Error),
    /// Another queue failed, or the run was interrupted.
    #[error("stopped")]
    Aborted,
}

/// Latency histogram: 1 ns .. 1 h at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Restrict `sock` to replies whose tag names `queue` (classic BPF on the
/// tag's top byte, frame offset 20).
pub fn attach_queue_filter(sock: &PacketSocket, queue: usize) -> io::Result<()> {
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut prog = [
        ins(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 20),
        ins(
            libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K,
            0,
            0,
            7 - QUEUE_BITS,
        ),
        ins(
            libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
            0,
            0,
            MAX_QUEUES as u32 - 1,
        ),
        ins(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            queue as u32,
        ),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, both alive for the call; the kernel
    // copies the program and the length is the struct's size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    busy: bool,
    write: bool,
    gen: u16,
    tries: u32,
    chunk: u64,
    lba: u64,
    version: u32,
    len: usize,
    first_sent: Instant,
    deadline: Instant,
}

struct Engine<'a> {
    spec: &'a LoadSpec,
    shared: &'a Shared,
    q: usize,
    sock: PacketSocket,
    tx: FramePool,
    /// Reply slots: whole frames with --verify, else [`HEADERS_ONLY`].
    rx: FramePool,
    rx_lens: [usize; MAX_BATCH],
    slots: Vec<Slot>,
    free: Vec<usize>,
    inflight: usize,
    window: usize,
    pending: Vec<(usize, usize)>,
    addr: Addr,
    rop: ata::Opcode,
    wop: ata::Opcode,
    rng: u64,
    local_chunks: u64,
    versions: Vec<u32>,
    busy: Vec<bool>,
    stats: PhaseStats,
    measured: Measured,
    hist: Histogram<u64>,
    notes: Vec<String>,
    t_warm: Instant,
    t_end: Instant,
    // Cumulative counters for the progress line.
    total_completed: u64,
    total_bytes: u64,
    total_retransmits: u64,
    total_errors: u64,
}

/// Outcome of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    AoeError(u8),
    AtaError,
    Bad,
}

impl<'a> Engine<'a> {
    fn new(spec: &'a LoadSpec, shared: &'a Shared, q: usize, sock: PacketSocket) -> Engine<'a> {
        let window = spec.windows[q].clamp(1, MAX_WINDOW);
        let nq = spec.queues() as u64;
        let local_chunks = if spec.chunks > q as u64 {
            (spec.chunks - q as u64).div_ceil(nq)
        } else {
            0
        };
        let bytes = spec.bytes();
        let mut tx = FramePool::new(window, ATA_DATA_OFFSET + bytes);
        // Write payloads without --verify: any recognisable bytes.
        for i in 0..window {
            pattern::fill(
                &mut tx.frame_mut(i)[ATA_DATA_OFFSET..ATA_DATA_OFFSET + bytes],
                i as u64,
                0,
            );
        }
        // Without --verify nothing reads the data of a reply: receive its
        // headers only (the kernel copies what fits and reports the real
        // length), so that the initiator's copy of every reply does not
        // bound the measurement.
        let rx_room = if spec.verify {
            spec.max_frame.max(ATA_DATA_OFFSET + bytes) + 64
        } else {
            HEADERS_ONLY
        };
        let rx = FramePool::new(MAX_BATCH, rx_room);
        let now = Instant::now();
        let slot = Slot {
            busy: false,
            write: false,
            gen: 0,
            tries: 0,
            chunk: 0,
            lba: 0,
            version: 0,
            len: 0,
            first_sent: now,
            deadline: now,
        };
        let (rop, wop) = if spec.lba48 {
            (ata::Opcode::ReadExt, ata::Opcode::WriteExt)
        } else {
            (ata::Opcode::Read, ata::Opcode::Write)
        };
        let verify_len = if spec.verify {
            local_chunks as usize
        } else {
            0
        };
        Engine {
            spec,
            shared,
            q,
            sock,
            tx,
            rx,
            rx_lens: [0; MAX_BATCH],
            slots: vec![slot; window],
            free: (0..window).rev().collect(),
            inflight: 0,
            window,
            pending: Vec::with_capacity(window),
            addr: Addr {
                dst: spec.dst,
                src: spec.src,
                major: spec.major,
                minor: spec.minor,
            },
            rop,
            wop,
            rng: (spec.seed ^ (q as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            local_chunks,
            versions: vec![0; verify_len],
            busy: vec![false; verify_len],
            stats: PhaseStats::default(),
            measured: Measured::default(),
            hist: new_histogram(),
            notes: Vec::with_capacity(8),
            t_warm: now,
            t_end: now,
            total_completed: 0,
            total_bytes: 0,
            total_retransmits: 0,
            total_errors: 0,
        }
    }

    fn rand(&mut self) -> u64 {
        let x = &mut self.rng;
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), without a division.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.rand()) * u128::from(n)) >> 64) as u64
    }

    fn lba_of(&self, chunk: u64) -> u64 {
        let global = chunk * self.spec.queues() as u64 + self.q as u64;
        self.spec.lba_base + global * u64::from(self.spec.sectors)
    }

    /// The next request of `phase`: `(write, chunk)`, or None when the
    /// phase has nothing more to issue right now.
    fn next_request(
        &mut self,
        phase: Phase,
        cursor: &mut u64,
        now: Instant,
    ) -> Option<(bool, u64)> {
        match phase {
            Phase::Prefill | Phase::Readback => {
                if *cursor >= self.local_chunks {
                    return None;
                }
                *cursor += 1;
                Some((phase == Phase::Prefill, *cursor - 1))
            }
            Phase::Timed => {
                if now >= self.t_end || self.local_chunks == 0 {
                    return None;
                }
                let write = match self.spec.read_pct {
                    100 => false,
                    0 => true,
                    p => self.below(100) >= u64::from(p),
                };
                let mut chunk = self.below(self.local_chunks);
                if self.spec.verify {
                    // Never two requests on one block at once: the result
                    // of a read racing a write is undefined. At most
                    // `window` blocks are busy, so this finds one.
                    let mut tries = self.local_chunks.min(self.window as u64 + 1);
                    while self.busy[chunk as usize] {
                        tries -= 1;
                        if tries == 0 {
                            return None;
                        }
                        chunk = (chunk + 1) % self.local_chunks;
                    }
                }
                Some((write, chunk))
            }
            _ => None,
        }
    }

    fn issue(&mut self, slot: usize, write: bool, chunk: u64, now: Instant) {
        let lba = self.lba_of(chunk);
        let bytes = self.spec.bytes();
        let version = if self.spec.verify {
            self.busy[chunk as usize] = true;
            let v = self.versions[chunk as usize];
            if write {
                if v >= UNKNOWN - 1 {
                    0
                } else {
                    v + 1
                }
            } else {
                v
            }
        } else {
            0
        };
        if !self.spec.paths.is_empty() {
            self.addr.dst = self.spec.paths[slot % self.spec.paths.len()];
        }
        let s = &mut self.slots[slot];
        s.gen = next_gen(s.gen);
        let tag = make_tag(self.q, s.gen, slot);
        let frame = self.tx.frame_mut(slot);
        let len = if write {
            if self.spec.verify {
                pattern::fill(
                    &mut frame[ATA_DATA_OFFSET..ATA_DATA_OFFSET + bytes],
                    lba,
                    version,
                );
            }
            request::ata(
                frame,
                &self.addr,
                tag,
                self.wop,
                self.spec.sectors,
                lba,
                &[],
            );
            ATA_DATA_OFFSET + bytes
        } else {
            request::ata(
                frame,
                &self.addr,
                tag,
                self.rop,
                self.spec.sectors,
                lba,
                &[],
            )
        };
        *s = Slot {
            busy: true,
            write,
            gen: s.gen,
            tries: 1,
            chunk,
            lba,
            version,
            len,
            first_sent: now,
            deadline: now + self.spec.timeout,
        };
        self.inflight += 1;
        self.stats.issued += 1;
        self.pending.push((slot, len));
    }

    fn flush_sends(&mut self) -> Result<(), LoadError> {
        let mut off = 0;
        let mut spins = 0;
        while off < self.pending.len() {
            let n = self.sock.send_batch(&self.tx, &self.pending[off..])?;
            off += n;
            if n == 0 {
                // A full queue: wait a little; past that the requests are
                // left to the retransmission timer, as on a real network.
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

    /// Handle received frame `i` of the batch.
    fn on_frame(&mut self, i: usize, now: Instant) {
        let len = self.rx_lens[i];
        let room = self.rx.frame(i).len();
        let f = &self.rx.frame(i)[..len.min(room)];
        if f.len() < ARG_OFFSET
            || f[0..6] != self.spec.src.0
            || (f[6..12] != self.spec.dst.0 && !self.spec.paths.iter().any(|m| f[6..12] == m.0))
            || u16::from_be_bytes([f[12], f[13]]) != ETHERTYPE_AOE
        {
            return;
        }
        let flags = f[14] & 0x0f;
        let major = u16::from_be_bytes([f[16], f[17]]);
        if flags & aoe::FLAG_RESPONSE == 0
            || major != self.spec.major
            || f[18] != self.spec.minor
            || f[19] != 0
        {
            return; // not an ATA reply for our target (an announcement, say)
        }
        let tag = u32::from_be_bytes([f[20], f[21], f[22], f[23]]);
        let (q, gen, slot) = split_tag(tag);
        if q != self.q
            || slot >= self.window
            || !self.slots[slot].busy
            || self.slots[slot].gen != gen
        {
            self.stats.stale += 1;
            return;
        }
        let s = self.slots[slot];
        let bytes = self.spec.bytes();
        let outcome = if flags & aoe::FLAG_ERROR != 0 {
            Outcome::AoeError(f[15])
        } else if f.len() < ATA_DATA_OFFSET || (self.spec.verify && len > room) {
            Outcome::Bad
        } else if f[27] & ata::STATUS_FAIL_MASK != 0 {
            Outcome::AtaError
        } else {
            let mut l = [0u8; 8];
            l[..6].copy_from_slice(&f[28..34]);
            let echoed = u64::from_le_bytes(l);
            let want = if self.spec.lba48 {
                s.lba
            } else {
                s.lba & ata::LBA28_MASK
            };
            let mask = if self.spec.lba48 {
                0xffff_ffff_ffff
            } else {
                ata::LBA28_MASK
            };
            if echoed & mask != want || (!s.write && len < ATA_DATA_OFFSET + bytes) {
                Outcome::Bad
            } else {
                Outcome::Ok
            }
        };
        // Check read data against the pattern.
        if outcome == Outcome::Ok && !s.write && self.spec.verify && s.version != UNKNOWN {
            self.stats.checked += 1;
            let data = &f[ATA_DATA_OFFSET..ATA_DATA_OFFSET + bytes];
            if let Some(d) = pattern::check(data, s.lba, s.version) {
                self.stats.mismatches += 1;
                if self.notes.len() < self.notes.capacity() {
                    let found = if d.found_version >> 32 == pattern::MAGIC {
                        format!(
                            "bench data of LBA {} version {}",
                            d.found_lba,
                            d.found_version & 0xffff_ffff
                        )
                    } else if d.found_lba == 0 && d.found_version == 0 {
                        "zeros".to_string()
                    } else {
                        "foreign data".to_string()
                    };
                    self.notes.push(format!(
                        "LBA {} byte {}: expected version {} of the pattern, found {found}",
                        d.lba, d.offset, s.version
                    ));
                }
            }
        }
        self.complete(slot, outcome, now);
    }

    fn complete(&mut self, slot: usize, outcome: Outcome, now: Instant) {
        let s = self.slots[slot];
        self.slots[slot].busy = false;
        self.free.push(slot);
        self.inflight -= 1;
        self.stats.completed += 1;
        self.total_completed += 1;
        match outcome {
            Outcome::Ok => {
                self.stats.ok += 1;
                self.total_bytes += self.spec.bytes() as u64;
                if now >= self.t_warm && now < self.t_end {
                    self.measured.requests += 1;
                    self.measured.bytes += self.spec.bytes() as u64;
                    if s.write {
                        self.measured.writes += 1;
                    } else {
                        self.measured.reads += 1;
                    }
                    let ns = now.saturating_duration_since(s.first_sent).as_nanos() as u64;
                    self.hist.saturating_record(ns.max(1));
                }
            }
            Outcome::AoeError(code) => {
                self.stats.aoe_errors += 1;
                self.stats.aoe_error_codes[usize::from(code.min(7))] += 1;
                self.total_errors += 1;
            }
            Outcome::AtaError => {
                self.stats.ata_errors += 1;
                self.total_errors += 1;
            }
            Outcome::Bad => {
                self.stats.bad_replies += 1;
                self.total_errors += 1;
            }
        }
        if self.spec.verify {
            let c = s.chunk as usize;
            self.busy[c] = false;
            if s.write {
                self.versions[c] = if outcome == Outcome::Ok {
                    s.version
                } else {
                    UNKNOWN
                };
            }
        }
    }

    fn scan_timeouts(&mut self, now: Instant) -> Result<(), LoadError> {
        // Start at a random slot: when several requests expire together
        // they are resent in a rotated order, so a periodic loss pattern
        // (every Nth reply dropped) cannot lock onto one request forever.
        let start = self.below(self.window as u64) as usize;
        for k in 0..self.window {
            let slot = (start + k) % self.window;
            let s = self.slots[slot];
            if !s.busy || s.deadline > now {
                continue;
            }
            if s.tries >= self.spec.max_tries {
                return Err(LoadError::Timeout {
                    op: if s.write { "WRITE" } else { "READ" },
                    sectors: self.spec.sectors,
                    lba: s.lba,
                    tries: s.tries,
                    timeout: self.spec.timeout,
                });
            }
            // Same request, new tag (Linux does the same, docs/aoe-protocol.md §8.1).
            let gen = next_gen(s.gen);
            let tag = make_tag(self.q, gen, slot);
            self.tx.frame_mut(slot)[20..24].copy_from_slice(&tag.to_be_bytes());
            let e = &mut self.slots[slot];
            e.gen = gen;
            e.tries += 1;
            e.deadline = now + self.spec.timeout;
            self.stats.retransmits += 1;
            self.total_retransmits += 1;
            self.pending.push((slot, s.len));
        }
        Ok(())
    }

    fn publish(&self) {
        let p = &self.shared.progress[self.q];
        p.completed.store(self.total_completed, Ordering::Relaxed);
        p.bytes.store(self.total_bytes, Ordering::Relaxed);
        p.retransmits
            .store(self.total_retransmits, Ordering::Relaxed);
        p.errors.store(self.total_errors, Ordering::Relaxed);
    }

    fn set_phase(&self, phase: Phase) {
        self.shared.progress[self.q]
            .phase
            .store(phase as u8, Ordering::Relaxed);
    }

    /// Run `phase` to its end: everything issued and answered.
    fn run_phase(&mut self, phase: Phase) -> Result<(), LoadError> {
        self.set_phase(phase);
        self.stats = PhaseStats::default();
        let started = Instant::now();
        let scan_every =
            (self.spec.timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(20));
        let publish_every = Duration::from_millis(50);
        let mut cursor = 0u64;
        let mut now = started;
        let mut next_scan = now + scan_every;
        let mut next_publish = now + publish_every;
        loop {
            if self.shared.abort.load(Ordering::Relaxed) {
                return Err(LoadError::Aborted);
            }
            // Fill the window.
            let mut more = true;
            if !self.free.is_empty() {
                let t = Instant::now();
                while let Some(&slot) = self.free.last() {
                    match self.next_request(phase, &mut cursor, t) {
                        Some((write, chunk)) => {
                            self.free.pop();
                            self.issue(slot, write, chunk, t);
                        }
                        None => {
                            more = false;
                            break;
                        }
                    }
                }
            }
            if !self.pending.is_empty() {
                self.flush_sends()?;
            }
            if !more && self.inflight == 0 {
                let finished = match phase {
                    Phase::Timed => Instant::now() >= self.t_end || self.local_chunks == 0,
                    _ => cursor >= self.local_chunks,
                };
                if finished {
                    break;
                }
            }
            let n = self
                .sock
                .recv_batch(&mut self.rx, 0, MAX_BATCH, &mut self.rx_lens)?;
            now = Instant::now();
            for i in 0..n {
                self.on_frame(i, now);
            }
            if n == 0 && !self.spec.busy_poll {
                let mut wake = next_scan.min(next_publish);
                if phase == Phase::Timed && now < self.t_end {
                    wake = wake.min(self.t_end);
                }
                let d = wake.saturating_duration_since(now);
                if !d.is_zero() {
                    // poll(2) counts whole milliseconds: round up.
                    self.sock.poll_readable(d + Duration::from_micros(999))?;
                    now = Instant::now();
                }
            }
            if now >= next_scan {
                self.scan_timeouts(now)?;
                next_scan = now + scan_every;
            }
            if now >= next_publish {
                self.publish();
                next_publish = now + publish_every;
            }
        }
        self.stats.elapsed_s = started.elapsed().as_secs_f64();
        self.publish();
        Ok(())
    }
}

/// Run queue `q` through every phase with socket `sock`. Any error sets
/// `shared.abort` so that the other queues stop too.
pub fn run_queue(
    spec: &LoadSpec,
    shared: &Shared,
    q: usize,
    sock: PacketSocket,
) -> Result<QueueResult, LoadError> {
    let r = run_queue_inner(spec, shared, q, sock);
    if r.is_err() {
        shared.abort.store(true, Ordering::Relaxed);
    }
    r
}

fn run_queue_inner(
    spec: &LoadSpec,
    shared: &Shared,
    q: usize,
    sock: PacketSocket,
) -> Result<QueueResult, LoadError> {
    if let Some(Some(core)) = spec.cores.get(q) {
        // Best effort: a core we may not use leaves the thread unpinned.
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: *core });
    }
    let mut e = Engine::new(spec, shared, q, sock);
    let prefill = if spec.verify {
        e.run_phase(Phase::Prefill)?;
        std::mem::take(&mut e.stats)
    } else {
        PhaseStats::default()
    };
    e.set_phase(Phase::Ready);
    shared.ready.fetch_add(1, Ordering::SeqCst);
    let t0 = loop {
        if shared.abort.load(Ordering::Relaxed) {
            return Err(LoadError::Aborted);
        }
        if let Some(t) = shared.start.get() {
            break *t;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    e.t_warm = t0 + shared.warmup;
    e.t_end = e.t_warm + shared.duration;
    e.run_phase(Phase::Timed)?;
    let timed = std::mem::take(&mut e.stats);
    let readback = if spec.verify && spec.read_pct < 100 {
        e.run_phase(Phase::Readback)?;
        std::mem::take(&mut e.stats)
    } else {
        PhaseStats::default()
    };
    e.set_phase(Phase::Done);
    Ok(QueueResult {
        prefill,
        timed,
        readback,
        measured: e.measured,
        latency: std::mem::replace(&mut e.hist, new_histogram()),
        mismatch_notes: std::mem::take(&mut e.notes),
    })
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
        // The queue sits in the top byte where the socket filter reads it.
        let t = make_tag(9, 1, 0);
        assert_eq!(
            (t.to_be_bytes()[0] >> (7 - QUEUE_BITS)) as usize & (MAX_QUEUES - 1),
            9
        );
    }

    #[test]
    fn generations_skip_zero() {
        assert_eq!(next_gen(GEN_MAX), 1);
        assert_eq!(next_gen(0), 1);
        assert_eq!(next_gen(1), 2);
    }
}
