//! One thread serving one listening socket without letting any client hold
//! it up: every connection is non-blocking and waits in a single `poll(2)`
//! together with the listener and a stop descriptor.
//!
//! Why a poll loop and not a thread per connection: a connection that
//! never sends its request (a half-open load-balancer check, a port scan,
//! a stuck script) would hold a thread each, so a cap on threads becomes a
//! cap that a few idle clients exhaust. Here an idle connection costs one
//! `pollfd` and a small buffer; the bounds are explicit ([`Limits`]): a
//! cap on connections (the oldest is dropped to make room, so new clients
//! always get in), a size limit on the request, a deadline to receive it
//! and one to send the answer (a client that never reads is dropped).
//!
//! While nothing happens the thread sleeps in `poll` with no timeout (or
//! the nearest connection deadline): no periodic wakeups. Stopping makes
//! the stop descriptor readable, which ends the loop at once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// Bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Connections open at once; a new one beyond it drops the oldest.
    pub max_conns: usize,
    /// Largest request in bytes (what does not fit gets
    /// [`Protocol::too_large`]).
    pub max_request: usize,
    /// From accept to a complete request.
    pub request_deadline: Duration,
    /// From a complete request to the last byte of the answer sent.
    pub response_deadline: Duration,
}

/// What a [`Protocol`] makes of the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict<J> {
    /// Not a whole request yet.
    More,
    /// Send these bytes, then close.
    Reply(Vec<u8>),
    /// Hand the connection to [`Protocol::handoff`] with this job (work
    /// that may take long, done elsewhere so this loop never waits).
    Handoff(J),
}

/// A request/answer protocol served by [`run`].
pub(super) trait Protocol {
    /// The connection type.
    type Stream;
    /// Work handed off with its connection.
    type Job;
    /// Judge `input`, everything received so far; `eof` once the peer
    /// closed its side (nothing more will come: `More` then closes).
    fn judge(&mut self, input: &[u8], eof: bool) -> Verdict<Self::Job>;
    /// The answer to a request over [`Limits::max_request`].
    fn too_large(&mut self) -> Vec<u8>;
    /// Take over a connection (blocking mode is the callee's business).
    fn handoff(&mut self, stream: Self::Stream, job: Self::Job);
}

/// A listening socket the loop accepts from.
pub(super) trait Listen: AsRawFd {
    /// Its connections.
    type Stream: Stream;
    /// Accept one (the listener is non-blocking: `WouldBlock` when none).
    fn accept_one(&self) -> io::Result<Self::Stream>;
    /// `O_NONBLOCK` on the listener.
    fn set_nonblocking(&self) -> io::Result<()>;
}

/// A connected socket.
pub(super) trait Stream: Read + Write + AsRawFd {
    /// `O_NONBLOCK` on or off.
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
    /// Send FIN after the answer (errors do not matter: we close anyway).
    fn shutdown_write(&self);
}

impl Listen for TcpListener {
    type Stream = TcpStream;
    fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
    fn set_nonblocking(&self) -> io::Result<()> {
        TcpListener::set_nonblocking(self, true)
    }
}

impl Listen for UnixListener {
    type Stream = UnixStream;
    fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
    fn set_nonblocking(&self) -> io::Result<()> {
        UnixListener::set_nonblocking(self, true)
    }
}

impl Stream for TcpStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, on)
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Stream for UnixStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        UnixStream::set_nonblocking(self, on)
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// How long the listener is left out of `poll` after an accept error
/// other than "none pending" (e.g. `EMFILE`), so that the loop does not
/// spin on a listener that stays readable.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

enum Phase {
    /// Receiving the request.
    Reading,
    /// Sending `out[sent..]`.
    Writing { out: Vec<u8>, sent: usize },
    /// Answer sent and FIN with it; reading and discarding what the peer
    /// still sends (at most `left` bytes) until its EOF, so that closing
    /// does not reset the connection while the answer is in flight (a
    /// close with unread input sends RST, and the peer may lose the
    /// answer: e.g. a 400 to a head still being sent).
    Draining { left: usize },
}

/// Most bytes discarded after an answer (a little over the 1 MiB head a
/// broken client may send).
const DRAIN_BUDGET: usize = 2 << 20;

struct Conn<S> {
    stream: S,
    input: Vec<u8>,
    phase: Phase,
    deadline: Instant,
    /// Accept order, to find the oldest.
    serial: u64,
}

enum Next<J> {
    Keep,
    Close,
    Handoff(J),
}

/// Serve `listener` with `proto` within `limits` until `stop` becomes
/// readable (or hangs up).
pub(super) fn run<L, P>(listener: &L, stop: RawFd, limits: Limits, proto: &mut P, what: &str)
where
    L: Listen,
    P: Protocol<Stream = L::Stream>,
{
    if let Err(e) = listener.set_nonblocking() {
        warn!(error = %e, "{what}: cannot make the listener non-blocking; not serving");
        return;
    }
    let mut conns: Vec<Conn<L::Stream>> = Vec::with_capacity(limits.max_conns);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(limits.max_conns + 2);
    let mut serial = 0u64;
    let mut paused_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        conns.retain(|c| {
            let alive = c.deadline > now;
            if !alive {
                debug!("{what}: dropping a connection past its deadline");
            }
            alive
        });
        if paused_until.is_some_and(|t| now >= t) {
            paused_until = None;
        }
        fds.clear();
        fds.push(pollfd(stop, libc::POLLIN));
        let listening = paused_until.is_none();
        if listening {
            fds.push(pollfd(listener.as_raw_fd(), libc::POLLIN));
        }
        let first = fds.len();
        for c in &conns {
            let ev = match c.phase {
                Phase::Reading => libc::POLLIN,
                Phase::Writing { .. } => libc::POLLOUT,
                Phase::Draining { .. } => libc::POLLIN,
            };
            fds.push(pollfd(c.stream.as_raw_fd(), ev));
        }
        let wake = conns.iter().map(|c| c.deadline).chain(paused_until).min();
        if let Err(e) = poll(&mut fds, wake.map(|t| t.saturating_duration_since(now))) {
            warn!(error = %e, "{what}: poll failed; not serving");
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        let now = Instant::now();
        // Connections first (their indices match `fds`), then new ones.
        let mut i = 0;
        let mut k = first;
        while i < conns.len() {
            let revents = fds[k].revents;
            k += 1;
            let next = if revents == 0 {
                Next::Keep
            } else {
                step(&mut conns[i], now, &limits, proto)
            };
            match next {
                Next::Keep => i += 1,
                Next::Close => {
                    conns.remove(i);
                }
                Next::Handoff(job) => {
                    let c = conns.remove(i);
                    proto.handoff(c.stream, job);
                }
            }
        }
        if listening && fds[1].revents != 0 {
            // Bounded, so a flood of connections cannot keep us here.
            for _ in 0..limits.max_conns {
                match listener.accept_one() {
                    Ok(s) => {
                        if let Err(e) = s.set_nonblocking(true) {
                            debug!(error = %e, "{what}: cannot make a connection non-blocking");
                            continue;
                        }
                        if conns.len() >= limits.max_conns {
                            if let Some(oldest) = (0..conns.len()).min_by_key(|&j| conns[j].serial)
                            {
                                debug!(
                                    "{what}: {} connections open, dropping the oldest",
                                    conns.len()
                                );
                                conns.remove(oldest);
                            }
                        }
                        serial += 1;
                        conns.push(Conn {
                            stream: s,
                            input: Vec::new(),
                            phase: Phase::Reading,
                            deadline: now + limits.request_deadline,
                            serial,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                        ) => {}
                    Err(e) => {
                        warn!(error = %e, "{what}: accept failed; pausing {ACCEPT_BACKOFF:?}");
                        paused_until = Some(now + ACCEPT_BACKOFF);
                        break;
                    }
                }
            }
        }
    }
}

/// Advance one connection that `poll` reported ready.
fn step<S: Stream, P: Protocol<Stream = S>>(
    c: &mut Conn<S>,
    now: Instant,
    limits: &Limits,
    proto: &mut P,
) -> Next<P::Job> {
    if matches!(c.phase, Phase::Reading) {
        let mut chunk = [0u8; 4096];
        // At least 1: a full buffer has already been answered.
        let room = limits.max_request.saturating_sub(c.input.len()).max(1);
        let want = room.min(chunk.len());
        let (verdict, eof) = match c.stream.read(&mut chunk[..want]) {
            Ok(0) => (proto.judge(&c.input, true), true),
            Ok(n) => {
                c.input.extend_from_slice(&chunk[..n]);
                let v = match proto.judge(&c.input, false) {
                    Verdict::More if c.input.len() >= limits.max_request => {
                        Verdict::Reply(proto.too_large())
                    }
                    v => v,
                };
                (v, false)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Next::Keep,
            Err(_) => return Next::Close,
        };
        match verdict {
            // After EOF nothing completes the request.
            Verdict::More if eof => return Next::Close,
            Verdict::More => return Next::Keep,
            Verdict::Handoff(job) => return Next::Handoff(job),
            Verdict::Reply(out) => {
                // Most answers fit the socket buffer: the loop below
                // usually sends it all at once.
                c.phase = Phase::Writing { out, sent: 0 };
                c.deadline = now + limits.response_deadline;
            }
        }
    }
    if let Phase::Writing { out, sent } = &mut c.phase {
        while *sent < out.len() {
            match c.stream.write(&out[*sent..]) {
                Ok(0) => return Next::Close,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        c.stream.shutdown_write();
        c.phase = Phase::Draining { left: DRAIN_BUDGET };
        // Within the same response deadline.
    }
    let Phase::Draining { left } = &mut c.phase else {
        return Next::Keep;
    };
    let mut chunk = [0u8; 16384];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return Next::Close,
            Ok(n) if n >= *left => return Next::Close,
            Ok(n) => *left -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` on `fds` until one is ready or `timeout` passes (`None`:
/// no timeout). `EINTR` counts as "nothing ready".
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    // Round up, so that waking finds the deadline passed.
    let ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
    });
    let n = libc::nfds_t::try_from(fds.len()).map_err(io::Error::other)?;
    // SAFETY: `fds` is a live, exclusively borrowed slice of `n` pollfd
    // structs for the duration of the call; the kernel writes only their
    // `revents` fields.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            fds.iter_mut().for_each(|f| f.revents = 0);
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// One line in; `big` answers 64 MiB, anything else `ok`.
    struct Lines;

    impl Protocol for Lines {
        type Stream = UnixStream;
        type Job = ();
        fn judge(&mut self, input: &[u8], eof: bool) -> Verdict<()> {
            match input.iter().position(|&b| b == b'\n') {
                Some(i) if &input[..i] == b"big" => Verdict::Reply(vec![b'x'; 64 << 20]),
                Some(_) => Verdict::Reply(b"ok".to_vec()),
                None if eof => Verdict::Reply(b"eof".to_vec()),
                None => Verdict::More,
            }
        }
        fn too_large(&mut self) -> Vec<u8> {
            b"too large".to_vec()
        }
        fn handoff(&mut self, _: UnixStream, _: ()) {}
    }

    /// Deadlines of 2 s: far above what an answer takes (about 0.1 ms),
    /// so "answered well within 1 s" tells "not held up by a stuck
    /// client" from "waited for its deadline" even on a loaded machine.
    const TEST_LIMITS: Limits = Limits {
        max_conns: 4,
        max_request: 64,
        request_deadline: Duration::from_secs(2),
        response_deadline: Duration::from_secs(2),
    };

    /// A reactor on a fresh socket; stops (and is joined) when dropped.
    struct Served {
        path: std::path::PathBuf,
        stop: Option<UnixStream>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Served {
        fn start() -> Served {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "xblade-reactor-{}-{}.sock",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).unwrap();
            let (stop, rx) = UnixStream::pair().unwrap();
            let thread = std::thread::spawn(move || {
                run(&l, rx.as_raw_fd(), TEST_LIMITS, &mut Lines, "test");
            });
            Served {
                path,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn ask(&self, line: &[u8]) -> (Vec<u8>, Duration) {
            let t = Instant::now();
            let mut s = UnixStream::connect(&self.path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(line).unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            (out, t.elapsed())
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            drop(self.stop.take());
            let t = Instant::now();
            self.thread.take().unwrap().join().unwrap();
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn answers_and_limits() {
        let s = Served::start();
        assert_eq!(s.ask(b"hi\n").0, b"ok");
        assert_eq!(s.ask(b"half").0, b"", "no EOF yet: dropped at the deadline");
        assert_eq!(s.ask(&[b'a'; 100]).0, b"too large");
    }

    /// A client that never reads its (huge) answer is dropped at the
    /// response deadline; one that never sends, at the request deadline;
    /// meanwhile others are answered at once.
    #[test]
    fn stuck_clients_do_not_block_others() {
        let s = Served::start();
        let mut deaf = UnixStream::connect(&s.path).unwrap();
        deaf.write_all(b"big\n").unwrap();
        let mute = UnixStream::connect(&s.path).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (a, t) = s.ask(b"hi\n");
        assert_eq!(a, b"ok");
        assert!(t < Duration::from_secs(1), "{t:?}");
        // Both gone after their deadlines.
        std::thread::sleep(TEST_LIMITS.response_deadline + Duration::from_millis(500));
        for (name, mut c) in [("deaf", deaf), ("mute", mute)] {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let t = Instant::now();
            let mut sink = vec![0u8; 1 << 20];
            // Drain what was sent; the end comes without waiting.
            loop {
                match c.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{name}: {:?}",
                t.elapsed()
            );
        }
    }

    /// Over the cap, the oldest connection goes and the new one is served.
    #[test]
    fn cap_drops_the_oldest() {
        let s = Served::start();
        let mut idle: Vec<UnixStream> = (0..TEST_LIMITS.max_conns)
            .map(|_| UnixStream::connect(&s.path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let (a, t) = s.ask(b"hi\n");
        assert_eq!(a, b"ok");
        assert!(t < Duration::from_secs(1), "{t:?}");
        let oldest = &mut idle[0];
        oldest
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut b = [0u8; 4];
        assert!(
            matches!(oldest.read(&mut b), Ok(0)),
            "the oldest should be closed before its deadline"
        );
    }
}
