//! One queue of `xblade bench` (thread, socket): the workload it runs in
//! its share of the window. The window itself (batched send and receive,
//! tag→slot table, retransmission with fresh tags, reply checks) is the
//! tools' one engine, [`crate::initiator::window`]; this file holds what
//! the bench adds on top:
//! - the requests: random blocks of the queue's share of the range, or
//!   every block in turn, never two at once on one block with `--verify`;
//! - with several queues, a classic BPF filter on the tag's queue bits per
//!   socket, so every reply is received once, by its queue;
//! - counting: error replies complete their request and are counted, not
//!   retried; latency of the measured window; verify versions and
//!   mismatches. Nothing is allocated per request.
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
use crate::initiator::window::Workload;
use crate::initiator::window::{
    Completion, Outcome, Request, Route, Window, WindowError, WindowSpec,
};
pub use crate::initiator::window::{MAX_QUEUES, MAX_WINDOW, QUEUE_BITS};
use crate::net::socket::PacketSocket;
use crate::wire::{ATA_DATA_OFFSET, SECTOR_SIZE};

/// A version no write produced: the block's content is unknown (a write
/// to it failed), so reads of it are not checked.
const UNKNOWN: u32 = u32::MAX;
/// Bytes of each reply received without `--verify`: the AoE and ATA
/// headers with room to spare.
const HEADERS_ONLY: usize = ATA_DATA_OFFSET + 28;

/// What every queue runs.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Interface index.
    pub ifindex: u32,
    /// Us and the target.
    pub route: Route,
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
    /// A request went unanswered through every try, or the socket failed.
    #[error(transparent)]
    Window(#[from] WindowError),
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

/// One queue's workload and counters (the [`Workload`] its window runs).
struct Queue<'a> {
    spec: &'a LoadSpec,
    shared: &'a Shared,
    q: usize,
    window: usize,
    phase: Phase,
    /// Next block of a sequential phase (prefill, read-back).
    cursor: u64,
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
    next_publish: Instant,
    // Cumulative counters for the progress line.
    total_completed: u64,
    total_bytes: u64,
    total_retransmits: u64,
    total_errors: u64,
}

/// Progress counters are published this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

impl<'a> Queue<'a> {
    fn new(spec: &'a LoadSpec, shared: &'a Shared, q: usize) -> Queue<'a> {
        let nq = spec.queues() as u64;
        let local_chunks = if spec.chunks > q as u64 {
            (spec.chunks - q as u64).div_ceil(nq)
        } else {
            0
        };
        let verify_len = if spec.verify {
            local_chunks as usize
        } else {
            0
        };
        let now = Instant::now();
        Queue {
            spec,
            shared,
            q,
            window: spec.windows[q].clamp(1, MAX_WINDOW),
            phase: Phase::Idle,
            cursor: 0,
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
            next_publish: now,
            total_completed: 0,
            total_bytes: 0,
            total_retransmits: 0,
            total_errors: 0,
        }
    }

    /// The window this queue runs in.
    fn window_spec(&self) -> WindowSpec {
        let spec = self.spec;
        WindowSpec {
            queue: self.q,
            route: spec.route.clone(),
            window: self.window,
            max_sectors: spec.sectors,
            // Without --verify nothing reads the data of a reply: receive
            // its headers only, so that the initiator's copy of every reply
            // does not bound the measurement.
            rx_room: if spec.verify {
                spec.max_frame.max(ATA_DATA_OFFSET + spec.bytes()) + 64
            } else {
                HEADERS_ONLY
            },
            want_data: spec.verify,
            timeout: spec.timeout,
            max_tries: spec.max_tries,
            seed: self.rng,
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

    /// The next request of the phase: `(write, chunk)`, or None when the
    /// phase has nothing more to issue right now.
    fn next_block(&mut self, now: Instant) -> Option<(bool, u64)> {
        match self.phase {
            Phase::Prefill | Phase::Readback => {
                if self.cursor >= self.local_chunks {
                    return None;
                }
                self.cursor += 1;
                Some((self.phase == Phase::Prefill, self.cursor - 1))
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

    /// Check the data of read `req` against the pattern.
    fn check_read(&mut self, req: &Request, data: &[u8]) {
        self.stats.checked += 1;
        let Some(d) = pattern::check(data, req.lba, req.version) else {
            return;
        };
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
                d.lba, d.offset, req.version
            ));
        }
    }

    /// Count a completion in the phase and the measured window.
    fn count(&mut self, c: &Completion<'_>) {
        self.stats.completed += 1;
        self.total_completed += 1;
        match c.outcome {
            Outcome::Ok => {
                self.stats.ok += 1;
                self.total_bytes += self.spec.bytes() as u64;
                if c.now >= self.t_warm && c.now < self.t_end {
                    self.measured.requests += 1;
                    self.measured.bytes += self.spec.bytes() as u64;
                    if c.req.write {
                        self.measured.writes += 1;
                    } else {
                        self.measured.reads += 1;
                    }
                    let ns = c.now.saturating_duration_since(c.first_sent).as_nanos() as u64;
                    self.hist.saturating_record(ns.max(1));
                }
            }
            Outcome::AoeError(code) => {
                self.stats.aoe_errors += 1;
                self.stats.aoe_error_codes[usize::from(code.min(7))] += 1;
                self.total_errors += 1;
            }
            Outcome::AtaError { .. } => {
                self.stats.ata_errors += 1;
                self.total_errors += 1;
            }
            Outcome::Bad => {
                self.stats.bad_replies += 1;
                self.total_errors += 1;
            }
        }
    }

    fn publish(&self) {
        let p = &self.shared.progress[self.q];
        p.completed.store(self.total_completed, Ordering::Relaxed);
        p.bytes.store(self.total_bytes, Ordering::Relaxed);
        p.retransmits
            .store(self.total_retransmits, Ordering::Relaxed);
        p.errors.store(self.total_errors, Ordering::Relaxed);
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.shared.progress[self.q]
            .phase
            .store(phase as u8, Ordering::Relaxed);
    }

    /// Run `phase` to its end in `win`: everything issued and answered.
    fn run_phase(
        &mut self,
        win: &mut Window,
        sock: &PacketSocket,
        phase: Phase,
    ) -> Result<(), LoadError> {
        self.set_phase(phase);
        self.stats = PhaseStats::default();
        self.cursor = 0;
        let (retransmits, stale) = (win.retransmits, win.stale);
        let started = Instant::now();
        win.run(sock, self.spec.busy_poll, self)?;
        self.stats.retransmits = win.retransmits - retransmits;
        self.stats.stale = win.stale - stale;
        self.stats.elapsed_s = started.elapsed().as_secs_f64();
        self.total_retransmits = win.retransmits;
        self.publish();
        Ok(())
    }
}

impl Workload for Queue<'_> {
    type Error = LoadError;

    fn next(&mut self, now: Instant) -> Option<Request> {
        let (write, chunk) = self.next_block(now)?;
        let version = if self.spec.verify {
            self.busy[chunk as usize] = true;
            let v = self.versions[chunk as usize];
            match (write, v >= UNKNOWN - 1) {
                (true, true) => 0,
                (true, false) => v + 1,
                (false, _) => v,
            }
        } else {
            0
        };
        self.stats.issued += 1;
        Some(Request {
            write,
            lba: self.lba_of(chunk),
            sectors: self.spec.sectors,
            id: chunk,
            version,
        })
    }

    fn fill(&mut self, req: &Request, payload: &mut [u8]) {
        // Without --verify the payload written once by run_queue stays.
        if self.spec.verify {
            pattern::fill(payload, req.lba, req.version);
        }
    }

    fn complete(&mut self, c: Completion<'_>) -> Result<(), LoadError> {
        let verify = self.spec.verify;
        if c.outcome == Outcome::Ok && !c.req.write && verify && c.req.version != UNKNOWN {
            self.check_read(&c.req, c.data);
        }
        self.count(&c);
        if verify {
            let chunk = c.req.id as usize;
            self.busy[chunk] = false;
            if c.req.write {
                self.versions[chunk] = if c.outcome == Outcome::Ok {
                    c.req.version
                } else {
                    UNKNOWN
                };
            }
        }
        Ok(())
    }

    fn finished(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Timed => now >= self.t_end || self.local_chunks == 0,
            _ => self.cursor >= self.local_chunks,
        }
    }

    fn tick(&mut self, now: Instant, w: &Window) -> Result<Option<Instant>, LoadError> {
        if self.shared.abort.load(Ordering::Relaxed) {
            return Err(LoadError::Aborted);
        }
        if now >= self.next_publish {
            self.total_retransmits = w.retransmits;
            self.publish();
            self.next_publish = now + PUBLISH_EVERY;
        }
        let mut wake = self.next_publish;
        if self.phase == Phase::Timed && now < self.t_end {
            wake = wake.min(self.t_end);
        }
        Ok(Some(wake))
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
    let mut e = Queue::new(spec, shared, q);
    let mut win = Window::new(e.window_spec());
    // Write payloads without --verify: any recognisable bytes.
    for i in 0..win.size() {
        pattern::fill(&mut win.payload_mut(i)[..spec.bytes()], i as u64, 0);
    }
    let prefill = if spec.verify {
        e.run_phase(&mut win, &sock, Phase::Prefill)?;
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
    e.run_phase(&mut win, &sock, Phase::Timed)?;
    let timed = std::mem::take(&mut e.stats);
    let readback = if spec.verify && spec.read_pct < 100 {
        e.run_phase(&mut win, &sock, Phase::Readback)?;
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
