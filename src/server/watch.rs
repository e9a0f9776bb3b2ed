//! Duplicate shelf.slot detection, in the control plane (never on the
//! per-request path).
//!
//! One AF_PACKET socket on every interface, filtered in the kernel (a
//! classic BPF program) down to AoE *Query Config responses*: requests,
//! which the workers answer, never reach it. XDP passes responses to the
//! stack (`bpf/xblade.bpf.c`: R flag set means XDP_PASS), so this socket
//! sees them on both datapaths.
//!
//! - Before a shelf.slot is served on an interface, [`Watch::probe`] sends
//!   a broadcast Query Config for it there and waits briefly, as an IPv4
//!   stack probes for a duplicate address: a target that answers already
//!   serves that shelf.slot on that link, and the caller refuses it.
//! - While serving, a Query Config response for a served shelf.slot that
//!   arrives on its interface (another target answering a broadcast, or
//!   announcing itself) is a duplicate: logged (rate-limited), counted,
//!   shown by `status` and Prometheus ([`DupBoard`]).
//!
//! What this cannot see: a target whose switch port drops our broadcast
//! or its answer, one whose Mac Mask excludes us, and, while serving, a
//! silent one (it must answer or announce on our link to be seen).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::Key;
use crate::net::iface::IfaceInfo;
use crate::wire::aoe::{self, Command, Repr};
use crate::wire::{MacAddr, AOE_OFFSET, ETHERTYPE_AOE, MIN_FRAME_LEN};

/// How long a probe waits for an answer. A target on the same link
/// answers within a millisecond; a loaded one (or vblade on a slow box)
/// within tens.
pub(super) const PROBE_WAIT: Duration = Duration::from_millis(500);

/// A duplicate seen while serving is logged at most this often per
/// (interface, shelf.slot); the count goes on.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A duplicate seen while serving: another target answered for a
/// shelf.slot we serve on that interface.
#[derive(Debug, Clone)]
pub struct DuplicateView {
    /// Interface it was seen on.
    pub iface: String,
    /// Shelf.
    pub shelf: u16,
    /// Slot.
    pub slot: u8,
    /// The last MAC that answered.
    pub mac: MacAddr,
    /// Responses seen.
    pub count: u64,
    /// Seconds since the last one.
    pub last_secs_ago: u64,
}

#[derive(Debug)]
struct Seen {
    count: u64,
    mac: MacAddr,
    last: Instant,
    last_log: Option<Instant>,
    unlogged: u64,
}

/// The duplicates seen while serving, read by `status` at query time.
#[derive(Debug, Clone, Default)]
pub struct DupBoard(Arc<Mutex<BTreeMap<(String, Key), Seen>>>);

impl DupBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, Key), Seen>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every (interface, shelf.slot) a duplicate answered for.
    pub fn snapshot(&self) -> Vec<DuplicateView> {
        self.lock()
            .iter()
            .map(|((iface, (shelf, slot)), s)| DuplicateView {
                iface: iface.clone(),
                shelf: *shelf,
                slot: *slot,
                mac: s.mac,
                count: s.count,
                last_secs_ago: s.last.elapsed().as_secs(),
            })
            .collect()
    }
}

/// An interface being served: what a response there is checked against.
#[derive(Debug)]
struct Served {
    name: String,
    keys: Vec<Key>,
}

#[derive(Debug, Default)]
struct State {
    /// ifindex -> the interface and the shelf.slots served on it.
    served: HashMap<u32, Served>,
    /// ifindex -> shelf.slots being probed, with the first MAC that
    /// answered.
    probing: HashMap<u32, BTreeMap<Key, Option<MacAddr>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    board: DupBoard,
    stop: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The listener (its thread) and the socket probes are sent from.
#[derive(Debug)]
pub(super) struct Watch {
    shared: Arc<Shared>,
    sock: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// Classic BPF: accept an untagged AoE frame with the response flag set
/// whose command is Query Config (64 bytes of it are enough), drop the rest.
fn filter() -> [libc::sock_filter; 8] {
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld, jmp, ret) = (libc::BPF_LD, libc::BPF_JMP, libc::BPF_RET);
    let (abs, h, b, k) = (libc::BPF_ABS, libc::BPF_H, libc::BPF_B, libc::BPF_K);
    let (jeq, jset) = (libc::BPF_JEQ, libc::BPF_JSET);
    // AoE header: byte 0 version and flags, byte 5 the command.
    let aoe = AOE_OFFSET as u32;
    [
        ins(ld | h | abs, 0, 0, 12),
        ins(jmp | jeq | k, 0, 5, u32::from(ETHERTYPE_AOE)),
        ins(ld | b | abs, 0, 0, aoe),
        ins(jmp | jset | k, 0, 3, u32::from(aoe::FLAG_RESPONSE)),
        ins(ld | b | abs, 0, 0, aoe + 5),
        ins(
            jmp | jeq | k,
            0,
            1,
            u32::from(u8::from(Command::QueryConfig)),
        ),
        ins(ret | k, 0, 0, 64),
        ins(ret | k, 0, 0, 0),
    ]
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, opt: i32, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live value of the option's type for the call and
    // the length is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    })
    .map(|_| ())
}

fn open_socket() -> io::Result<OwnedFd> {
    // Protocol 0: nothing is queued before the filter is in place.
    // SAFETY: plain socket(2); the descriptor is owned below.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32)?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETHERTYPE_AOE.to_be();
    // Index 0: every interface.
    // SAFETY: `sll` is a valid sockaddr_ll and the length matches it.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    })?;
    Ok(fd)
}

/// A broadcast Query Config (read) for `key` from `mac`.
fn probe_frame(mac: MacAddr, key: Key, tag: [u8; 4]) -> [u8; MIN_FRAME_LEN] {
    let mut f = [0u8; MIN_FRAME_LEN];
    f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_AOE.to_be_bytes());
    let mut p = aoe::Packet::new_unchecked(&mut f[AOE_OFFSET..]);
    Repr::request(key.0, key.1, Command::QueryConfig, tag).emit(&mut p);
    // The Query Config argument stays zero: ccmd 0 reads the config,
    // which every target answers.
    f
}

impl Watch {
    /// Open the socket and start the listener thread.
    pub(super) fn open() -> io::Result<Watch> {
        let sock = Arc::new(open_socket()?);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            board: DupBoard::default(),
            stop: AtomicBool::new(false),
        });
        let (s, sh) = (Arc::clone(&sock), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("xb-dupwatch".into())
            .spawn(move || listen(&s, &sh))?;
        Ok(Watch {
            shared,
            sock,
            thread: Some(thread),
        })
    }

    /// The board `status` reads.
    pub(super) fn board(&self) -> DupBoard {
        self.shared.board.clone()
    }

    /// What is served where now (after every change).
    pub(super) fn set_served(&self, served: Vec<(&IfaceInfo, Vec<Key>)>) {
        let mut st = self.shared.state();
        st.served = served
            .into_iter()
            .map(|(i, keys)| {
                (
                    i.index,
                    Served {
                        name: i.name.clone(),
                        keys,
                    },
                )
            })
            .collect();
        // Interfaces and exports no longer served leave the board.
        self.shared.board.lock().retain(|(n, k), _| {
            st.served
                .values()
                .any(|s| &s.name == n && s.keys.contains(k))
        });
    }

    /// Ask each interface whether another target serves the given
    /// shelf.slots: one broadcast Query Config per shelf.slot (sent twice,
    /// a loss is not a verdict), one wait for all. Returns those that got
    /// an answer, with the MAC that answered. An interface the probe cannot
    /// be sent on (down) is logged and not probed.
    pub(super) fn probe(
        &self,
        targets: &[(IfaceInfo, Vec<Key>)],
    ) -> BTreeMap<(String, Key), MacAddr> {
        {
            let mut st = self.shared.state();
            for (i, keys) in targets {
                let m = st.probing.entry(i.index).or_default();
                for k in keys {
                    m.insert(*k, None);
                }
            }
        }
        let tag = (std::process::id() as u32 ^ 0x5842_0000).to_be_bytes();
        for round in 0..2 {
            for (i, keys) in targets {
                for &k in keys {
                    if let Err(e) = self.send(i, &probe_frame(i.mac, k, tag)) {
                        if round == 0 {
                            warn!(iface = %i.name, error = %e, "cannot send the duplicate probe for e{}.{}: serving it unprobed", k.0, k.1);
                        }
                    }
                }
            }
            std::thread::sleep(PROBE_WAIT / 2);
        }
        let mut st = self.shared.state();
        let mut out = BTreeMap::new();
        for (i, keys) in targets {
            let Some(m) = st.probing.remove(&i.index) else {
                continue;
            };
            for k in keys {
                if let Some(Some(mac)) = m.get(k) {
                    out.insert((i.name.clone(), *k), *mac);
                }
            }
        }
        out
    }

    fn send(&self, i: &IfaceInfo, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETHERTYPE_AOE.to_be();
        sll.sll_ifindex = i32::try_from(i.index).unwrap_or(0);
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&MacAddr::BROADCAST.0);
        // SAFETY: `frame` is valid for reads of its length and `sll` is a
        // valid sockaddr_ll whose length is passed.
        let r = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The listener: every Query Config response the filter lets through.
fn listen(sock: &OwnedFd, shared: &Shared) {
    let mut buf = [0u8; 128];
    while !shared.stop.load(Ordering::Relaxed) {
        match crate::net::poll_readable(sock.as_fd(), Duration::from_millis(250)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                error!(error = %e, "duplicate watch: poll failed; stopping it");
                return;
            }
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf`, `sll` and `len` are writable and live across the
        // call; their sizes are passed.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) && e.raw_os_error() != Some(libc::ENETDOWN)
            {
                error!(error = %e, "duplicate watch: receive failed; stopping it");
                return;
            }
            continue;
        }
        let n = n as usize;
        if n < AOE_OFFSET + aoe::HEADER_LEN {
            continue;
        }
        let src = MacAddr::from_bytes(&buf[6..12]);
        let p = aoe::Packet::new_unchecked(&buf[AOE_OFFSET..n]);
        let key = (p.major(), p.minor());
        seen(shared, sll.sll_ifindex as u32, key, src);
    }
}

/// A Query Config response for `key` from `src` arrived on `ifindex`.
fn seen(shared: &Shared, ifindex: u32, key: Key, src: MacAddr) {
    let mut st = shared.state();
    if let Some(slot) = st.probing.get_mut(&ifindex).and_then(|m| m.get_mut(&key)) {
        slot.get_or_insert(src);
    }
    let Some(s) = st.served.get(&ifindex).filter(|s| s.keys.contains(&key)) else {
        return;
    };
    let now = Instant::now();
    let mut board = shared.board.lock();
    let e = board.entry((s.name.clone(), key)).or_insert_with(|| Seen {
        count: 0,
        mac: src,
        last: now,
        last_log: None,
        unlogged: 0,
    });
    e.count += 1;
    e.mac = src;
    e.last = now;
    e.unlogged += 1;
    if e.last_log
        .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
    {
        error!(
            iface = %s.name,
            mac = %src,
            responses = e.unlogged,
            "duplicate target: another target answers for e{}.{} on {} (MAC {src}): initiators may interleave writes over two different disks; stop one of them",
            key.0,
            key.1,
            s.name
        );
        e.last_log = Some(now);
        e.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_frame_is_a_query_config_request() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let f = probe_frame(mac, (7, 3), [1, 2, 3, 4]);
        let p = aoe::Packet::new_checked(&f[AOE_OFFSET..]).unwrap();
        assert!(!p.is_response());
        assert_eq!((p.major(), p.minor()), (7, 3));
        assert_eq!(p.command(), Command::QueryConfig);
        assert_eq!(&f[6..12], &mac.0);
        assert!(MacAddr::from_bytes(&f[0..6]).is_broadcast());
    }
}
