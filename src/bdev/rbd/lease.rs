//! Leases and fencing of gateways that export one RBD image together
//! (active/active). The argument is in docs/fencing.md; in short:
//!
//! - every gateway process (one librados client instance) writes a
//!   heartbeat every [`HEARTBEAT`] into an xattr of the object
//!   [`LEASE_OBJECT`] of each pool it exports writable images from: a
//!   counter, its client address, host and pid;
//! - its own lease runs until the *send* time of its last confirmed
//!   heartbeat plus [`OWN_VALID`], on its own clock (CLOCK_BOOTTIME, which
//!   keeps counting while the process is stopped or the host suspended);
//!   a worker submits a WRITE only while it holds ([`Lease::admits_write`],
//!   one atomic load and a vDSO clock read, no lock) and drops it silently
//!   otherwise (the initiator retries elsewhere);
//! - a gateway renews only while every worker turns its loop and no write
//!   has been in flight longer than [`WRITE_AGE_MAX`]: a stalled worker or
//!   a request stuck on the way to an OSD lets the lease lapse;
//! - a peer whose counter has not changed for [`PEER_LAPSE`] on the
//!   observer's clock is blocklisted (`rados_blocklist_add`, then the
//!   latest OSD map) by any gateway whose own lease holds: the OSDs then
//!   refuse whatever the stalled gateway still has queued. Meanwhile, and
//!   until every peer entry has been seen to advance or has been fenced,
//!   the observer drops writes too;
//! - a gateway that finds itself blocklisted execs itself again: rings,
//!   FIFO and librbd requests go with the old image, and the new instance
//!   (a new client address) rejoins.
//!
//! A gateway that cannot renew never fences anyone, so a slow cluster
//! (every heartbeat late) stops writes instead of making gateways fence
//! each other.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{cstr, RbdError};
use super::ffi::{self, Ioctx, Rados, XattrsIter};

/// The object holding the gateways' heartbeats, one per pool.
pub const LEASE_OBJECT: &str = "xblade.gateways";
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Lease duration D.
pub const LEASE: Duration = Duration::from_secs(3);
/// Safety margin m.
pub const MARGIN: Duration = Duration::from_secs(1);
/// Own lease after a confirmed heartbeat: D - m from its send time.
pub const OWN_VALID: Duration = LEASE.saturating_sub(MARGIN);
/// A peer whose heartbeat has not changed for D + m is fenced.
pub const PEER_LAPSE: Duration = Duration::from_secs(LEASE.as_secs() + MARGIN.as_secs());
/// A write in flight longer than this stops renewal.
pub const WRITE_AGE_MAX: Duration = OWN_VALID;
/// A worker that has not turned its loop for this long stops renewal.
pub const WORKER_SILENT_MAX: Duration = Duration::from_millis(1500);
/// Blocklist entries expire after this (a fenced instance never comes
/// back: its process execs a new one).
pub const BLOCKLIST_EXPIRY_SECS: u32 = 3600;
/// Environment variable counting restarts after being fenced (kept across
/// the exec).
pub const RESTARTS_ENV: &str = "XBLADE_FENCED_RESTARTS";

/// CLOCK_BOOTTIME in nanoseconds: keeps counting through SIGSTOP and
/// suspend, unlike a clock that could make a stalled gateway think no time
/// passed.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain vDSO call with a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// What a worker's RBD channel shares with the lease thread: when it last
/// turned its loop, and when each of its in-flight writes was submitted
/// (0: none).
#[derive(Debug)]
pub struct ChannelWatch {
    /// [`now_ns`] of the last reap.
    pub alive: AtomicU64,
    /// Per slot: [`now_ns`] at submit of a write in flight, else 0.
    pub writes: Box<[AtomicU64]>,
}

impl ChannelWatch {
    /// A watch for a channel of `depth` slots.
    pub fn new(depth: usize) -> ChannelWatch {
        ChannelWatch {
            alive: AtomicU64::new(now_ns()),
            writes: (0..depth).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A peer's entry as this gateway sees it.
#[derive(Debug, Clone)]
struct Peer {
    pool: usize,
    name: CString,
    value: String,
    /// [`now_ns`] when the value was first seen as it is.
    since: u64,
    /// Seen to change at least once: a live gateway.
    advanced: bool,
    fenced: bool,
}

/// A peer as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// Pool of the lease object.
    pub pool: String,
    /// Client address.
    pub addr: String,
    /// Milliseconds since its heartbeat last changed.
    pub silent_ms: u64,
    /// Seen alive (its heartbeat changed since this gateway looks).
    pub alive: bool,
}

/// The lease as `status` and metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseStatus {
    /// This gateway's client address.
    pub addr: String,
    /// Milliseconds the lease still holds (negative: lapsed since).
    pub valid_ms: i64,
    /// Writes admitted now.
    pub admitting: bool,
    /// Heartbeats confirmed.
    pub renewals: u64,
    /// Heartbeats not sent (a stalled worker, an old write) or failed.
    pub missed: u64,
    /// Peers this gateway blocklisted.
    pub fenced_peers: u64,
    /// Blocklist attempts that failed.
    pub fence_failures: u64,
    /// WRITEs dropped without a reply (no lease, or fenced).
    pub stale_dropped: u64,
    /// Times this process was fenced and exec'd itself again.
    pub restarts: u64,
    /// Peers seen in the lease objects.
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Default)]
struct Tick {
    pools: Vec<(String, Ioctx)>,
    peers: Vec<Peer>,
    counter: u64,
    last_tick: u64,
    last_warn: u64,
}

/// See the module documentation. One per cluster connection.
#[derive(Debug)]
pub struct Lease {
    lib: &'static ffi::Lib,
    rados: Rados,
    /// Our xattr name: `gw.<instance id>`.
    me: CString,
    addr: String,
    ident: String,
    /// [`now_ns`] until which writes may be submitted.
    deadline: AtomicU64,
    /// Every peer known alive or fenced, no fence in progress.
    peers_ok: AtomicBool,
    /// Other gateways share the pools (another one can answer).
    has_peers: AtomicBool,
    renewals: AtomicU64,
    missed: AtomicU64,
    fenced_peers: AtomicU64,
    fence_failures: AtomicU64,
    /// Counted by the channels.
    pub stale_dropped: AtomicU64,
    restarts: u64,
    watches: Mutex<Vec<Arc<ChannelWatch>>>,
    tick: Mutex<Tick>,
}

// SAFETY: the rados handle is thread-safe once connected; the pool
// contexts are used under the `tick` mutex only.
unsafe impl Send for Lease {}
// SAFETY: as for Send.
unsafe impl Sync for Lease {}

impl Lease {
    /// Probe the blocklist capability (refused: the key cannot fence, and
    /// the export must not start), then start the heartbeat thread.
    /// `rados` must stay connected for the process's life (the cluster
    /// connection is never shut down).
    pub(crate) fn start(
        lib: &'static ffi::Lib,
        rados: Rados,
        id: &str,
    ) -> Result<Arc<Lease>, RbdError> {
        // SAFETY: a connected handle.
        let instance = unsafe { (lib.rados_get_instance_id)(rados) };
        let mut p: *mut c_char = std::ptr::null_mut();
        // SAFETY: a connected handle; out pointer to a malloc'd string.
        let r = unsafe { (lib.rados_getaddrs)(rados, &mut p) };
        let addr = if r >= 0 && !p.is_null() {
            // SAFETY: librados wrote a NUL-terminated string.
            let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            // SAFETY: malloc'd by librados (strdup), freed once.
            unsafe { libc::free(p.cast()) };
            blocklist_form(&s)
        } else {
            return Err(RbdError::Library(format!(
                "cannot read this client's address (rados_getaddrs): {}",
                ffi::strerror(r.into())
            )));
        };
        // The probe: an address no client has (TEST-NET-1), for a second.
        let probe = cstr(&format!("192.0.2.1:0/{}", std::process::id()))?;
        let mut probe = probe.into_bytes_with_nul();
        // SAFETY: a connected handle; a NUL-terminated, writable string.
        let r = unsafe { (lib.rados_blocklist_add)(rados, probe.as_mut_ptr().cast(), 1) };
        if r < 0 {
            return Err(RbdError::NoBlocklist {
                id: id.into(),
                message: ffi::strerror(r.into()),
            });
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        let lease = Arc::new(Lease {
            lib,
            rados,
            me: cstr(&format!("gw.{instance}"))?,
            ident: format!("{host} pid {}", std::process::id()),
            addr,
            deadline: AtomicU64::new(0),
            peers_ok: AtomicBool::new(true),
            has_peers: AtomicBool::new(false),
            renewals: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            fenced_peers: AtomicU64::new(0),
            fence_failures: AtomicU64::new(0),
            stale_dropped: AtomicU64::new(0),
            restarts: std::env::var(RESTARTS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            watches: Mutex::new(Vec::new()),
            tick: Mutex::new(Tick::default()),
        });
        let l = Arc::clone(&lease);
        std::thread::Builder::new()
            .name("xblade-lease".into())
            .spawn(move || loop {
                let t0 = now_ns();
                l.tick();
                let spent = now_ns().saturating_sub(t0);
                std::thread::sleep(HEARTBEAT.saturating_sub(Duration::from_nanos(spent)));
            })
            .map_err(|e| RbdError::Library(format!("cannot start the lease thread: {e}")))?;
        tracing::info!(addr = %lease.addr, restarts = lease.restarts,
                       "gateway lease started (blocklist capability present)");
        Ok(lease)
    }

    /// Heartbeat into `pool`'s lease object from now on; one heartbeat and
    /// one look at the peers before returning, so a lone gateway admits
    /// writes as soon as it serves.
    pub(crate) fn add_pool(&self, pool: &str) -> Result<(), RbdError> {
        {
            let mut t = self.tick.lock().unwrap_or_else(|p| p.into_inner());
            if t.pools.iter().any(|(p, _)| p == pool) {
                return Ok(());
            }
            let cpool = cstr(pool)?;
            let mut io: Ioctx = std::ptr::null_mut();
            // SAFETY: a connected handle; out pointer; NUL-terminated name.
            let r = unsafe { (self.lib.rados_ioctx_create)(self.rados, cpool.as_ptr(), &mut io) };
            if r < 0 {
                return Err(RbdError::Library(format!(
                    "cannot open pool {pool:?} for the gateway lease: {}",
                    ffi::strerror(r.into())
                )));
            }
            // Never destroyed: the heartbeat goes on for the process's life.
            t.pools.push((pool.into(), io));
        }
        self.tick();
        Ok(())
    }

    /// Count a channel's loop and writes in the renewal rule.
    pub(crate) fn watch(&self, w: Arc<ChannelWatch>) {
        self.watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w);
    }

    /// Stop counting a closed channel.
    pub(crate) fn unwatch(&self, w: &Arc<ChannelWatch>) {
        self.watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| !Arc::ptr_eq(x, w));
    }

    /// May a WRITE be submitted now? Lock-free: the request path's check.
    #[inline]
    pub fn admits_write(&self) -> bool {
        self.peers_ok.load(Ordering::Acquire) && now_ns() < self.deadline.load(Ordering::Acquire)
    }

    /// One heartbeat and one look at the peers.
    fn tick(&self) {
        let mut t = self.tick.lock().unwrap_or_else(|p| p.into_inner());
        let start = now_ns();
        if t.last_tick != 0 && start - t.last_tick > ns(HEARTBEAT) * 4 {
            // This thread itself stalled (or a heartbeat blocked in
            // librados): what it saw of the peers is old.
            tracing::warn!(
                late_ms = (start - t.last_tick) / 1_000_000,
                "lease thread ran late (stalled, or a heartbeat waited on the cluster): peers observed afresh"
            );
            for p in &mut t.peers {
                p.since = start;
                p.advanced = false;
            }
        }
        t.last_tick = start;
        if let Some(why) = self.unhealthy(start) {
            self.missed.fetch_add(1, Ordering::Relaxed);
            if start.saturating_sub(t.last_warn) > 1_000_000_000 {
                t.last_warn = start;
                tracing::warn!(why, "gateway lease not renewed");
            }
        } else if !t.pools.is_empty() {
            t.counter += 1;
            let value = format!("{} {} {}", t.counter, self.addr, self.ident);
            let obj = cstr(LEASE_OBJECT).expect("no NUL");
            let mut failed = Vec::new();
            for (pool, io) in &t.pools {
                // SAFETY: a live pool context; NUL-terminated names; `value`
                // holds len bytes.
                let r = unsafe {
                    (self.lib.rados_setxattr)(
                        *io,
                        obj.as_ptr(),
                        self.me.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                    )
                };
                if r == -ffi::EBLOCKLISTED {
                    self.fenced();
                }
                if r < 0 {
                    failed.push((pool.clone(), r));
                }
            }
            if let Some((pool, r)) = failed.first() {
                self.missed.fetch_add(1, Ordering::Relaxed);
                if start.saturating_sub(t.last_warn) > 1_000_000_000 {
                    t.last_warn = start;
                    tracing::warn!(pool, error = %ffi::strerror((*r).into()), "gateway heartbeat failed");
                }
            } else {
                // Valid from the send time: however late the answer came.
                self.deadline
                    .fetch_max(start + ns(OWN_VALID), Ordering::AcqRel);
                self.renewals.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.look_at_peers(&mut t);
    }

    /// Why this gateway must not renew now, if it must not.
    fn unhealthy(&self, now: u64) -> Option<&'static str> {
        let w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        for c in w.iter() {
            if now.saturating_sub(c.alive.load(Ordering::Acquire)) > ns(WORKER_SILENT_MAX) {
                return Some("a worker has not turned its loop for 1.5 s");
            }
            if c.writes.iter().any(|s| {
                let at = s.load(Ordering::Acquire);
                at != 0 && now.saturating_sub(at) > ns(WRITE_AGE_MAX)
            }) {
                return Some("a write has been in flight longer than the lease");
            }
        }
        None
    }

    fn look_at_peers(&self, t: &mut Tick) {
        let now = now_ns();
        let obj = cstr(LEASE_OBJECT).expect("no NUL");
        let mut seen: Vec<(usize, CString, String)> = Vec::new();
        for (i, (_, io)) in t.pools.iter().enumerate() {
            let mut it: XattrsIter = std::ptr::null_mut();
            // SAFETY: a live pool context; out pointer.
            let r = unsafe { (self.lib.rados_getxattrs)(*io, obj.as_ptr(), &mut it) };
            if r == -ffi::EBLOCKLISTED {
                self.fenced();
            }
            if r < 0 {
                // Cannot see the peers: admit nothing new.
                self.peers_ok.store(false, Ordering::Release);
                return;
            }
            loop {
                let (mut n, mut v, mut len) = (std::ptr::null(), std::ptr::null(), 0usize);
                // SAFETY: a live iterator; out pointers.
                let r = unsafe { (self.lib.rados_getxattrs_next)(it, &mut n, &mut v, &mut len) };
                if r < 0 || n.is_null() {
                    break;
                }
                // SAFETY: librados hands a NUL-terminated name and `len`
                // value bytes, valid until the next call.
                let (name, value) = unsafe {
                    (
                        CStr::from_ptr(n).to_owned(),
                        String::from_utf8_lossy(std::slice::from_raw_parts(v.cast::<u8>(), len))
                            .into_owned(),
                    )
                };
                if name.as_bytes().starts_with(b"gw.") && name != self.me {
                    seen.push((i, name, value));
                }
            }
            // SAFETY: the iterator, ended once.
            unsafe { (self.lib.rados_getxattrs_end)(it) };
        }
        // Entries gone (fenced and removed by someone) are forgotten.
        t.peers
            .retain(|p| seen.iter().any(|(i, n, _)| *i == p.pool && *n == p.name));
        for (i, name, value) in seen {
            match t.peers.iter_mut().find(|p| p.pool == i && p.name == name) {
                Some(p) if p.value != value => {
                    p.value = value;
                    p.since = now;
                    p.advanced = true;
                    p.fenced = false;
                }
                Some(_) => {}
                None => t.peers.push(Peer {
                    pool: i,
                    name,
                    value,
                    since: now,
                    advanced: false,
                    fenced: false,
                }),
            }
        }
        let valid = now < self.deadline.load(Ordering::Acquire);
        let mut ok = true;
        for k in 0..t.peers.len() {
            let p = t.peers[k].clone();
            if p.fenced {
                self.remove_entry(t, &p);
                continue;
            }
            if now.saturating_sub(p.since) <= ns(PEER_LAPSE) {
                ok &= p.advanced;
                continue;
            }
            ok = false;
            if !valid {
                // Our own lease is not held: we may be the slow one.
                continue;
            }
            if self.fence(t, &p) {
                t.peers[k].fenced = true;
            }
        }
        self.has_peers.store(!t.peers.is_empty(), Ordering::Release);
        self.peers_ok.store(ok, Ordering::Release);
    }

    /// May a failed request be answered with an ATA error? Not by a
    /// gateway without its lease while others serve the image: the error
    /// would fail an I/O that another gateway can complete (the initiator
    /// moves a request it gets no answer for).
    pub fn may_answer_errors(&self) -> bool {
        self.admits_write() || !self.has_peers.load(Ordering::Acquire)
    }

    /// Blocklist peer `p` and wait for the OSD map that carries it; then
    /// remove its entry. True when blocklisted.
    fn fence(&self, t: &Tick, p: &Peer) -> bool {
        let addr = p.value.split_whitespace().nth(1).unwrap_or("").to_string();
        let silent = (now_ns() - p.since) / 1_000_000;
        let Ok(c) = CString::new(addr.clone()) else {
            return false;
        };
        let mut c = c.into_bytes_with_nul();
        let t0 = now_ns();
        // SAFETY: a connected handle; a writable NUL-terminated string.
        let r = unsafe {
            (self.lib.rados_blocklist_add)(self.rados, c.as_mut_ptr().cast(), BLOCKLIST_EXPIRY_SECS)
        };
        if r < 0 {
            self.fence_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(peer = %addr, entry = %p.value, error = %ffi::strerror(r.into()),
                            "cannot blocklist a silent gateway: writes stay stopped here");
            return false;
        }
        // SAFETY: a connected handle.
        let r = unsafe { (self.lib.rados_wait_for_latest_osdmap)(self.rados) };
        if r < 0 {
            self.fence_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(peer = %addr, error = %ffi::strerror(r.into()),
                            "blocklisted a silent gateway but could not fetch the OSD map");
            return false;
        }
        self.fenced_peers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %addr, entry = %p.value, silent_ms = silent,
                       blocklist_ms = (now_ns() - t0) / 1_000_000,
                       "fenced a gateway whose lease lapsed (blocklisted for {BLOCKLIST_EXPIRY_SECS} s)");
        self.remove_entry(t, p);
        true
    }

    fn remove_entry(&self, t: &Tick, p: &Peer) {
        let obj = cstr(LEASE_OBJECT).expect("no NUL");
        if let Some((_, io)) = t.pools.get(p.pool) {
            // SAFETY: a live pool context; NUL-terminated names.
            unsafe { (self.lib.rados_rmxattr)(*io, obj.as_ptr(), p.name.as_ptr()) };
        }
    }

    /// This client instance is blocklisted: nothing it holds may reach the
    /// image. Exec the same program again (same pid, same arguments): the
    /// kernel drops the rings, the FIFO and every librbd request with the
    /// old image; the new process connects as a new instance and rejoins.
    fn fenced(&self) -> ! {
        tracing::error!(addr = %self.addr, restarts = self.restarts + 1,
                        stale_dropped = self.stale_dropped.load(Ordering::Relaxed),
                        "this gateway was fenced (blocklisted): dropping everything it holds and starting again as a new client");
        use std::os::unix::process::CommandExt;
        // Every descriptor but stdio closes at the exec, including those
        // libraries opened without O_CLOEXEC (an AF_XDP socket left open
        // would keep its queue busy for the new process).
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            for fd in fds.flatten() {
                if let Some(fd) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                    if fd > 2 {
                        // SAFETY: sets a flag on a descriptor number; one
                        // that is not open fails harmlessly (EBADF).
                        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                    }
                }
            }
        }
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_else(|| "xblade".into());
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(argv0)
            .args(args)
            .env(RESTARTS_ENV, (self.restarts + 1).to_string())
            .exec();
        tracing::error!(error = %err, "cannot exec xblade again after being fenced: exiting");
        std::process::exit(75)
    }

    /// What `status` shows.
    pub fn status(&self) -> LeaseStatus {
        let now = now_ns();
        let deadline = self.deadline.load(Ordering::Acquire);
        let t = self.tick.lock().unwrap_or_else(|p| p.into_inner());
        LeaseStatus {
            addr: self.addr.clone(),
            valid_ms: (deadline as i64 - now as i64) / 1_000_000,
            admitting: self.admits_write(),
            renewals: self.renewals.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            fenced_peers: self.fenced_peers.load(Ordering::Relaxed),
            fence_failures: self.fence_failures.load(Ordering::Relaxed),
            stale_dropped: self.stale_dropped.load(Ordering::Relaxed),
            restarts: self.restarts,
            peers: t
                .peers
                .iter()
                .map(|p| PeerStatus {
                    pool: t.pools.get(p.pool).map(|x| x.0.clone()).unwrap_or_default(),
                    addr: p.value.split_whitespace().nth(1).unwrap_or("").into(),
                    silent_ms: now.saturating_sub(p.since) / 1_000_000,
                    alive: p.advanced,
                })
                .collect(),
        }
    }
}

/// The address `rados_blocklist_add` takes (`IP:PORT/NONCE`) from what
/// `rados_getaddrs` prints (`[v2:IP:PORT/NONCE,v1:...]` or `IP:PORT/NONCE`).
fn blocklist_form(s: &str) -> String {
    let first = s
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .next()
        .unwrap_or("");
    first
        .strip_prefix("v2:")
        .or_else(|| first.strip_prefix("v1:"))
        .or_else(|| first.strip_prefix("any:"))
        .unwrap_or(first)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_blocklist_form() {
        assert_eq!(blocklist_form("127.0.0.1:0/123"), "127.0.0.1:0/123");
        assert_eq!(
            blocklist_form("[v2:10.0.0.1:0/77,v1:10.0.0.1:0/77]"),
            "10.0.0.1:0/77"
        );
        assert_eq!(blocklist_form("any:127.0.0.1:0/5"), "127.0.0.1:0/5");
    }

    #[test]
    fn own_lease_ends_before_peers_fence() {
        // Observers fence only after the stalled gateway's own lease ran
        // out, with a second to spare for scheduling.
        assert!(PEER_LAPSE >= OWN_VALID + Duration::from_secs(1));
        // Detection (one heartbeat to notice, the lapse, one more tick)
        // leaves room for the blocklist under the Linux initiator's 10 s.
        assert!(HEARTBEAT * 2 + PEER_LAPSE <= Duration::from_secs(6));
    }
}
