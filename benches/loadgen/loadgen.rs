//! loadgen: a deliberately independent AoE read load generator, to check
//! `xblade bench`'s numbers. It shares no code with xblade (no crate at
//! all: the few libc calls are declared here) and is built with plain
//! `rustc -O benches/loadgen/loadgen.rs` by benches/compare.sh.
//!
//! It broadcasts a Query Config for SHELF.SLOT, takes the first answer's
//! MAC, then keeps WINDOW READ SECTORS EXT requests of SECTORS sectors at
//! random LBAs (inside the first RANGE MiB, default 64) in flight, receiving replies in
//! batches with recvmmsg(2) and sending the follow-up requests of a batch
//! with one sendmmsg(2), and counts the replies that arrive in the measured
//! window. Lost replies are resent after a second. Output: one line,
//! `loadgen: requests_per_s=N replies=N seconds=S stale=N resent=N`.
//!
//! Usage: loadgen IFACE SHELF.SLOT [WINDOW [SECTORS [SECONDS [WARMUP [RANGE]]]]]
//! (run inside the initiator's network namespace; needs CAP_NET_RAW).

use std::ffi::CString;
use std::io;
use std::time::{Duration, Instant};

#[allow(non_camel_case_types)]
type c_int = i32;

#[repr(C)]
struct SockaddrLl {
    family: u16,
    protocol: u16,
    ifindex: i32,
    hatype: u16,
    pkttype: u8,
    halen: u8,
    addr: [u8; 8],
}

#[repr(C)]
struct IoVec {
    base: *mut u8,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: *mut u8,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut u8,
    controllen: usize,
    flags: c_int,
}

#[repr(C)]
struct MMsgHdr {
    hdr: MsgHdr,
    len: u32,
}

/// One message header per iovec, each over that single iovec.
fn headers(iov: &mut [IoVec]) -> Vec<MMsgHdr> {
    iov.iter_mut()
        .map(|v| MMsgHdr {
            hdr: MsgHdr {
                name: std::ptr::null_mut(),
                namelen: 0,
                iov: v,
                iovlen: 1,
                control: std::ptr::null_mut(),
                controllen: 0,
                flags: 0,
            },
            len: 0,
        })
        .collect()
}

const BATCH: usize = 64;

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

extern "C" {
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn bind(fd: c_int, addr: *const SockaddrLl, len: u32) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_int, len: u32) -> c_int;
    fn send(fd: c_int, buf: *const u8, len: usize, flags: c_int) -> isize;
    fn recv(fd: c_int, buf: *mut u8, len: usize, flags: c_int) -> isize;
    fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int;
    fn recvmmsg(fd: c_int, v: *mut MMsgHdr, n: u32, flags: c_int, t: *mut u8) -> c_int;
    fn sendmmsg(fd: c_int, v: *mut MMsgHdr, n: u32, flags: c_int) -> c_int;
    fn if_nametoindex(name: *const std::ffi::c_char) -> u32;
}

const AF_PACKET: c_int = 17;
const SOCK_RAW: c_int = 3;
const SOL_SOCKET: c_int = 1;
const SO_RCVBUF: c_int = 8;
const SOL_PACKET: c_int = 263;
const PACKET_IGNORE_OUTGOING: c_int = 23;
const MSG_DONTWAIT: c_int = 0x40;
const MSG_TRUNC: c_int = 0x20;
const POLLIN: i16 = 1;
const ETH_AOE: u16 = 0x88a2;

struct Sock(c_int);

impl Sock {
    fn open(ifindex: u32) -> io::Result<Sock> {
        // SAFETY: plain syscalls with valid arguments.
        unsafe {
            let fd = socket(AF_PACKET, SOCK_RAW, ETH_AOE.to_be() as c_int);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let sll = SockaddrLl {
                family: AF_PACKET as u16,
                protocol: ETH_AOE.to_be(),
                ifindex: ifindex as i32,
                hatype: 0,
                pkttype: 0,
                halen: 0,
                addr: [0; 8],
            };
            if bind(fd, &sll, std::mem::size_of::<SockaddrLl>() as u32) != 0 {
                return Err(io::Error::last_os_error());
            }
            let one: c_int = 1;
            setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, 4);
            let buf: c_int = 8 << 20;
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, 4);
            Ok(Sock(fd))
        }
    }

    fn send(&self, f: &[u8]) {
        // SAFETY: `f` is valid for its length. A failed send is a lost
        // frame, repaired by the resend timer.
        unsafe { send(self.0, f.as_ptr(), f.len(), 0) };
    }

    fn try_recv(&self, b: &mut [u8]) -> Option<usize> {
        // SAFETY: `b` is valid for writes of its length.
        let n = unsafe { recv(self.0, b.as_mut_ptr(), b.len(), MSG_DONTWAIT) };
        (n >= 0).then_some(n as usize)
    }

    /// Receive up to BATCH frames into `bufs` (each `room` bytes);
    /// their lengths go to `lens`.
    fn recv_batch(&self, bufs: &mut [u8], room: usize, lens: &mut [usize; BATCH]) -> usize {
        let mut iov: Vec<IoVec> = (0..BATCH)
            .map(|i| IoVec {
                base: bufs[i * room..].as_mut_ptr(),
                len: room,
            })
            .collect();
        let mut msgs = headers(&mut iov);
        // SAFETY: every header points at one iovec over a distinct part of `bufs`.
        let n = unsafe {
            recvmmsg(
                self.0,
                msgs.as_mut_ptr(),
                BATCH as u32,
                // The real length even when the buffer is smaller.
                MSG_DONTWAIT | MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        for i in 0..n as usize {
            lens[i] = msgs[i].len as usize;
        }
        n as usize
    }

    /// Send `frames[i]` for every i in `which`.
    fn send_batch(&self, frames: &mut [[u8; 36]], which: &[usize]) {
        let mut iov: Vec<IoVec> = which
            .iter()
            .map(|&i| IoVec {
                base: frames[i].as_mut_ptr(),
                len: 36,
            })
            .collect();
        let mut msgs = headers(&mut iov);
        let mut done = 0;
        while done < msgs.len() {
            // SAFETY: the headers point at live frames, only read.
            let r = unsafe {
                sendmmsg(
                    self.0,
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as u32,
                    0,
                )
            };
            if r <= 0 {
                return; // lost frames are resent by the timer
            }
            done += r as usize;
        }
    }

    fn wait(&self, ms: c_int) {
        let mut p = PollFd {
            fd: self.0,
            events: POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { poll(&mut p, 1, ms) };
    }
}

fn header(f: &mut [u8], dst: [u8; 6], src: [u8; 6], shelf: u16, slot: u8, cmd: u8, tag: u32) {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETH_AOE.to_be_bytes());
    f[14] = 0x10; // version 1, no flags
    f[15] = 0;
    f[16..18].copy_from_slice(&shelf.to_be_bytes());
    f[18] = slot;
    f[19] = cmd;
    f[20..24].copy_from_slice(&tag.to_be_bytes());
}

fn read_req(f: &mut [u8; 36], tag: u32, sectors: u8, lba: u64) {
    f[20..24].copy_from_slice(&tag.to_be_bytes());
    f[24] = 0x40; // E: LBA48
    f[25] = 0;
    f[26] = sectors;
    f[27] = 0x24; // READ SECTORS EXT
    f[28..34].copy_from_slice(&lba.to_le_bytes()[..6]);
    f[34] = 0;
    f[35] = 0;
}

fn die(msg: String) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1)
}

/// Query Config, broadcast: the first reply names the target MAC.
fn discover(sock: &Sock, me: [u8; 6], shelf: u16, slot: u8, rx: &mut [u8]) -> [u8; 6] {
    let mut qc = [0u8; 60];
    header(&mut qc, [0xff; 6], me, shelf, slot, 1, 0x7000_0001);
    qc[24 + 5] = 0x10; // AoE version 1, ccmd 0 (read)
    let mut target = None;
    'discover: for _ in 0..4 {
        sock.send(&qc[..36]);
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            sock.wait(50);
            while let Some(n) = sock.try_recv(rx) {
                let f = &rx[..n];
                if n >= 32
                    && f[0..6] == me
                    && f[14] & 0x08 != 0
                    && f[19] == 1
                    && f[20..24] == 0x7000_0001u32.to_be_bytes()
                {
                    let mut t = [0u8; 6];
                    t.copy_from_slice(&f[6..12]);
                    target = Some(t);
                    break 'discover;
                }
            }
        }
    }
    target.unwrap_or_else(|| die(format!("no answer from {shelf}.{slot}")))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        die(
            "usage: loadgen IFACE SHELF.SLOT [WINDOW [SECTORS [SECONDS [WARMUP [RANGE_MIB [SPIN]]]]]]"
                .into(),
        );
    }
    let arg = |i: usize, d: f64| -> f64 {
        args.get(i)
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| die(format!("bad number {s:?}")))
            })
            .unwrap_or(d)
    };
    let window = arg(3, 64.0) as usize;
    let sectors = arg(4, 2.0) as u8;
    let seconds = arg(5, 3.0);
    let warmup = arg(6, 0.5);
    let range_mib = arg(7, 64.0) as u64;
    // SPIN 1: never sleep, and take only the headers of each reply (as
    // `xblade bench --busy-poll` without --verify).
    let spin = arg(8, 0.0) != 0.0;
    let ifname = &args[1];
    let (shelf, slot) = args[2]
        .trim_start_matches('e')
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u8>().ok()?)))
        .unwrap_or_else(|| die(format!("bad target {:?}", args[2])));
    let cname = CString::new(ifname.as_str()).unwrap_or_else(|_| die("bad interface".into()));
    // SAFETY: NUL-terminated name.
    let ifindex = unsafe { if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        die(format!("no interface {ifname}"));
    }
    let mac_s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .unwrap_or_else(|e| die(format!("{ifname} address: {e}")));
    let mut me = [0u8; 6];
    for (i, p) in mac_s.trim().split(':').enumerate().take(6) {
        me[i] = u8::from_str_radix(p, 16).unwrap_or_else(|_| die("bad MAC".into()));
    }
    let sock = Sock::open(ifindex).unwrap_or_else(|e| die(format!("socket: {e}")));
    let mut rx = vec![0u8; 65536];

    let target = discover(&sock, me, shelf, slot, &mut rx);

    // One request per slot; tag = slot | sequence << 12, bit 31 clear.
    let range: u64 = (range_mib << 20) / 512 / u64::from(sectors);
    let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next_lba = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % range) * u64::from(sectors)
    };
    let mut frames = vec![[0u8; 36]; window];
    let mut tags = vec![0u32; window];
    let mut sent_at = vec![Instant::now(); window];
    let mut seq: u32 = 1;
    for (i, f) in frames.iter_mut().enumerate() {
        header(f, target, me, shelf, slot, 0, 0);
        tags[i] = (i as u32) | (seq << 12);
        read_req(f, tags[i], sectors, next_lba());
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let all: Vec<usize> = (0..window).collect();
    sock.send_batch(&mut frames, &all);
    let (mut replies, mut stale, mut resent) = (0u64, 0u64, 0u64);
    let mut last_check = Instant::now();
    let want_len = 36 + 512 * usize::from(sectors);
    let room = if spin { 64 } else { 9216 };
    let mut bufs = vec![0u8; room * BATCH];
    let mut lens = [0usize; BATCH];
    let mut again: Vec<usize> = Vec::with_capacity(window);
    loop {
        let n = sock.recv_batch(&mut bufs, room, &mut lens);
        let now = Instant::now();
        again.clear();
        for k in 0..n {
            let full = lens[k];
            let f = &bufs[k * room..k * room + full.min(room)];
            if f.len() < 36
                || f[0..6] != me
                || f[6..12] != target
                || f[14] & 0x08 == 0
                || f[19] != 0
            {
                continue;
            }
            let tag = u32::from_be_bytes([f[20], f[21], f[22], f[23]]);
            let i = (tag & 0xfff) as usize;
            if i >= window || tags[i] != tag || f[14] & 0x04 != 0 || full < want_len {
                stale += 1;
                continue;
            }
            if now >= measure_from && now < end {
                replies += 1;
            }
            if now >= end {
                continue;
            }
            seq = (seq + 1) & 0x7ffff;
            tags[i] = (i as u32) | (seq << 12);
            let lba = next_lba();
            read_req(&mut frames[i], tags[i], sectors, lba);
            sent_at[i] = now;
            again.push(i);
        }
        if !again.is_empty() {
            sock.send_batch(&mut frames, &again);
        }
        if now >= end {
            break;
        }
        if n == 0 && !spin {
            sock.wait(10);
        }
        if now.duration_since(last_check) > Duration::from_millis(100) {
            last_check = now;
            again.clear();
            for i in 0..window {
                if now.duration_since(sent_at[i]) > Duration::from_secs(1) {
                    seq = (seq + 1) & 0x7ffff;
                    tags[i] = (i as u32) | (seq << 12);
                    frames[i][20..24].copy_from_slice(&tags[i].to_be_bytes());
                    sent_at[i] = now;
                    again.push(i);
                    resent += 1;
                }
            }
            sock.send_batch(&mut frames, &again);
        }
    }
    println!(
        "loadgen: requests_per_s={:.0} replies={replies} seconds={seconds} stale={stale} resent={resent}",
        replies as f64 / seconds
    );
}
