//! A raw AF_PACKET socket bound to one interface and the AoE ethertype, with
//! batched receive and send (`recvmmsg`/`sendmmsg`): one syscall moves a
//! whole batch of frames.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::wire::ETHERTYPE_AOE;

/// Most frames moved by one batched call.
pub const MAX_BATCH: usize = 64;

/// A bound AF_PACKET socket.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl PacketSocket {
    /// Open a socket receiving only AoE frames on `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        Self::open_proto(ifindex, ETHERTYPE_AOE)
    }

    /// Open a socket for `ethertype` on `ifindex`.
    pub fn open_proto(ifindex: u32, ethertype: u16) -> io::Result<PacketSocket> {
        let proto = ethertype.to_be() as libc::c_int;
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let raw = cvt(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto)
        })
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "AF_PACKET socket refused: run as root or grant CAP_NET_RAW",
                )
            } else {
                e
            }
        })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length matches it.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        let s = PacketSocket { fd, ifindex };
        // Frames we send ourselves must not come back to us.
        s.setsockopt(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        Ok(s)
    }

    fn setsockopt(&self, level: i32, opt: i32, val: libc::c_int) -> io::Result<()> {
        // SAFETY: `val` lives across the call and the length is its size.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                &val as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        })
        .map(|_| ())
    }

    /// Frames the kernel dropped for this socket (receive buffer full)
    /// since the last call: PACKET_STATISTICS, which resets on read.
    pub fn take_kernel_drops(&self) -> io::Result<u64> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are writable and outlive the call; `len`
        // holds the size of `st`.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        })?;
        Ok(u64::from(st.tp_drops))
    }

    /// Size the kernel receive and send buffers (forced past rmem_max when
    /// we have CAP_NET_ADMIN), so a burst of `bufcnt` requests per initiator
    /// is absorbed rather than dropped.
    pub fn set_buffers(&self, bytes: usize) -> io::Result<()> {
        let b = bytes.min(i32::MAX as usize) as libc::c_int;
        if self
            .setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, b)
            .is_err()
        {
            self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, b)?;
        }
        if self
            .setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, b)
            .is_err()
        {
            self.setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, b)?;
        }
        Ok(())
    }

    /// Send frames straight to the driver, skipping the qdisc layer.
    pub fn set_qdisc_bypass(&self) -> io::Result<()> {
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
    }

    /// Interface index bound.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Wait until readable or `timeout`; true when readable.
    pub fn poll_readable(&self, timeout: Duration) -> io::Result<bool> {
        super::poll_readable(self.fd.as_fd(), timeout)
    }

    /// Send one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of its length.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Receive one frame without blocking; `Ok(None)` when none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as usize))
    }

    /// Receive up to `n` frames into pool slots `first..first + n` without
    /// blocking. `lens[i]` gets each frame's real length, which may exceed
    /// the slot (MSG_TRUNC semantics) so that the engine sees a truncated
    /// frame as such. Returns the count.
    pub fn recv_batch(
        &self,
        pool: &mut FramePool,
        first: usize,
        n: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let n = n.min(MAX_BATCH).min(pool.count() - first);
        let mut slots = [0u16; MAX_BATCH];
        for (i, s) in slots.iter_mut().enumerate().take(n) {
            *s = (first + i) as u16;
        }
        self.recv_slots(pool, &slots[..n], lens)
    }

    /// Receive up to `slots.len()` frames with one `recvmmsg`, the i-th into
    /// pool slot `slots[i]` (distinct slots); `lens[i]` gets its length.
    /// Returns how many arrived (0 when none is waiting).
    pub fn recv_slots(
        &self,
        pool: &mut FramePool,
        slots: &[u16],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let n = slots.len().min(MAX_BATCH).min(lens.len());
        // SAFETY: iovec and mmsghdr are plain data; all-zero is valid.
        let mut iov: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            debug_assert!(!slots[..i].contains(&slots[i]), "slot given twice");
            let f = pool.frame_mut(usize::from(slots[i]));
            iov[i] = libc::iovec {
                iov_base: f.as_mut_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one iovec describing a distinct slot
        // of `pool`, which is exclusively borrowed for the call; the kernel
        // writes at most iov_len bytes into each.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                // The caller decides how to wait out a down link (is_transient).
                _ => Err(e),
            };
        }
        let got = r as usize;
        for i in 0..got {
            lens[i] = msgs[i].msg_len as usize;
        }
        Ok(got)
    }

    /// Send `(slot, len)` frames of `pool` with one syscall per 64; returns
    /// how many left. Transient refusals (queue full, link down) end the
    /// batch early: AoE initiators retransmit.
    pub fn send_batch(&self, pool: &FramePool, list: &[(usize, usize)]) -> io::Result<usize> {
        let mut total = 0;
        for chunk in list.chunks(MAX_BATCH) {
            let n = chunk.len();
            // SAFETY: plain data, all-zero is valid.
            let mut iov: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
            for (i, &(slot, len)) in chunk.iter().enumerate() {
                let f = &pool.frame(slot)[..len];
                iov[i] = libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // `done` counts messages handled: sent, or skipped because the
            // link refused that one frame (larger than an MTU lowered at
            // runtime); `sent` only those that left.
            let (mut done, mut sent) = (0, 0);
            while done < n {
                // SAFETY: the headers point at live slots of `pool`, which the
                // kernel only reads during the call.
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        msgs[done..].as_mut_ptr(),
                        (n - done) as u32,
                        0,
                    )
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EMSGSIZE) => done += 1,
                        _ if is_transient(&e) => return Ok(total + sent),
                        _ => return Err(e),
                    }
                    continue;
                }
                done += r as usize;
                sent += r as usize;
            }
            total += sent;
        }
        Ok(total)
    }
}

/// Errors that a down, flapping or congested link produces: they pass, and
/// AoE initiators retransmit, so a worker waits them out instead of dying.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENETDOWN
                | libc::ENXIO
                | libc::ENODEV
                | libc::ENOBUFS
                | libc::EAGAIN
                | libc::ENOMEM
        )
    )
}

/// Frame buffers for the AF_PACKET datapath, laid out so that frame byte 36
/// (the first data byte of an ATA request or reply) sits on a 512-byte
/// boundary: each slot starts on a 4096-byte boundary and its frame at slot
/// offset 476 (476 + 36 = 512). O_DIRECT then reads and writes straight from
/// and into the frames.
#[derive(Debug)]
pub struct FramePool {
    mem: Vec<u8>,
    start: usize,
    slot: usize,
    count: usize,
}

/// Offset of the frame in its slot.
pub const FRAME_OFFSET: usize = 512 - crate::wire::ATA_DATA_OFFSET;

impl FramePool {
    /// `count` frames of at least `room` bytes each.
    pub fn new(count: usize, room: usize) -> FramePool {
        let slot = (room + FRAME_OFFSET).div_ceil(4096) * 4096;
        let mem = vec![0u8; slot * count + 4096];
        let misalign = mem.as_ptr() as usize % 4096;
        let start = if misalign == 0 { 0 } else { 4096 - misalign };
        FramePool {
            mem,
            start,
            slot,
            count,
        }
    }

    /// Number of frames.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Frame `i`'s whole room.
    pub fn frame(&self, i: usize) -> &[u8] {
        let s = self.start + i * self.slot + FRAME_OFFSET;
        &self.mem[s..s + self.slot - FRAME_OFFSET]
    }

    /// Frame `i`'s whole room, writable.
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        let s = self.start + i * self.slot + FRAME_OFFSET;
        &mut self.mem[s..s + self.slot - FRAME_OFFSET]
    }

    /// The whole pool as one memory region (for a store that registers
    /// it). The pool's memory never moves: it is allocated once in `new`.
    pub fn region(&mut self) -> crate::bdev::MemRegion {
        crate::bdev::MemRegion {
            ptr: self.mem.as_mut_ptr().wrapping_add(self.start),
            len: self.slot * self.count,
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
