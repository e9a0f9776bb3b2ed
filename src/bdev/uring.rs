//! The io_uring ring under the io_uring file store
//! ([`crate::bdev::file_uring`]), whichever datapath (AF_XDP or AF_PACKET)
//! the worker runs: one ring per worker channel, the export file registered
//! as a fixed file, the worker's memory regions
//! ([`crate::bdev::ChannelCx::memory`]) and an aligned bounce area
//! registered as fixed buffers, and a [`Slab`] of operation slots of fixed
//! capacity.
//!
//! Every operation carries a caller token `T` (for the file store: the
//! request's tag and segments). [`Uring::push`] hands the token back when the
//! slab is full: that is the backpressure signal, and the worker then stops
//! taking frames off its RX ring until a slot frees. [`Uring::reap`] returns
//! each token exactly once with the operation's result (`Err(errno)` for
//! `res < 0`, `Err(EIO)` for a short transfer).
//!
//! Durability: files come from [`crate::bdev::FileDisk`], opened `O_DSYNC`
//! unless the export is `writeback`, so a completed write through the
//! registered descriptor is already on stable storage and no `RWF_DSYNC` is
//! needed. FLUSH is `fsync(DATASYNC)` submitted with `IOSQE_IO_DRAIN`, so it
//! starts only after every earlier operation of the ring has completed.
//!
//! `unsafe` is allowed here, as in the other modules that lend memory to
//! the kernel or to a C library: pushing a submission entry is `unsafe`
//! because the kernel writes into memory the borrow checker does not see.
//! The contract is pushed up to the caller ([`Uring::push`] is an
//! `unsafe fn`), whose `SAFETY` line names who owns the memory until the
//! token comes back.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::{Seg, MAX_SEGS};
use crate::slab::Slab;

/// Direction of a data transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// File to memory.
    Read,
    /// Memory to file.
    Write,
}

/// An operation for [`Uring::push`].
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Read or write `segs` (in order) at the file offset. With `fixed`,
    /// every segment lies in registered buffer `fixed` (READ/WRITE_FIXED
    /// for one segment, READV/WRITEV_FIXED for several); without, plain
    /// READV/WRITEV.
    Rw {
        /// Direction.
        dir: Dir,
        /// Memory, 1..=[`MAX_SEGS`] segments.
        segs: &'a [Seg],
        /// Registered buffer holding every segment, if any.
        fixed: Option<u16>,
    },
    /// `fdatasync`, ordered after every operation pushed before it.
    Flush,
    /// `fdatasync` with no ordering against the ring's other operations:
    /// it covers what reached the page cache before it was pushed (group
    /// commit of writes made outside the ring), and reads keep flowing
    /// while it runs.
    Sync,
}

/// An operation on the ring.
#[derive(Debug)]
struct Pending<T> {
    token: T,
    /// Bytes the operation must transfer (0 for a flush).
    expect: u32,
}

/// A ring with its registered files and buffers and a slot slab.
pub struct Uring<T> {
    ring: IoUring,
    /// Operations on the ring; the key is the entry's user_data.
    slots: Slab<Pending<T>>,
    /// Iovec arrays of the vectored opcodes, one per slot (same key): they
    /// must stay put until the completion, and this array never moves or
    /// grows.
    iovs: Box<[[libc::iovec; MAX_SEGS]]>,
    unsubmitted: usize,
    eventfd: OwnedFd,
    /// The kernel has READV_FIXED / WRITEV_FIXED (Linux 6.15): probed at
    /// open, see [`Uring::vectored_fixed`].
    vectored_fixed: bool,
}

impl<T> std::fmt::Debug for Uring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("capacity", &self.slots.capacity())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

// SAFETY: the raw pointers inside `slots` (iovecs) point into memory owned by
// the caller's worker, which moves together with the ring; nothing is shared
// with another thread.
unsafe impl<T: Send> Send for Uring<T> {}

impl<T> Uring<T> {
    /// A ring with `capacity` slots (≤ 4096), `files` registered as fixed
    /// files (index = position; `-1` leaves a hole) and `buffers` registered
    /// as fixed buffers (index = position).
    ///
    /// # Safety
    ///
    /// Every buffer must stay mapped, and must not be unmapped or remapped,
    /// for as long as the returned ring lives: the kernel keeps the pages
    /// pinned and reads and writes them for fixed operations.
    pub unsafe fn new(capacity: u32, files: &[RawFd], buffers: &[libc::iovec]) -> io::Result<Self> {
        // SAFETY: this function's contract, passed on.
        unsafe { Self::build(capacity, files, buffers, true) }
    }

    /// [`new`](Self::new), with IORING_SETUP_SUBMIT_ALL asked for or not
    /// (tests check `submit` without it).
    unsafe fn build(
        capacity: u32,
        files: &[RawFd],
        buffers: &[libc::iovec],
        submit_all: bool,
    ) -> io::Result<Self> {
        let capacity = capacity.clamp(1, 4096);
        // SUBMIT_ALL (5.18): without it the kernel stops a submission at
        // the first entry it refuses while preparing it, and leaves the
        // rest in the SQ; `submit` copes with that too, but going on is
        // what we want.
        let mut b = IoUring::builder();
        b.setup_cqsize(capacity * 2);
        let ring = match submit_all {
            true => match b.clone().setup_submit_all().build(capacity) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => b.build(capacity)?,
                r => r?,
            },
            false => b.build(capacity)?,
        };
        let vectored_fixed = probe_vectored_fixed(&ring);
        if !files.is_empty() {
            ring.submitter().register_files(files)?;
        }
        if !buffers.is_empty() {
            // SAFETY: the caller guarantees the buffers outlive the ring
            // (this function's contract).
            unsafe { ring.submitter().register_buffers(buffers)? };
        }
        // SAFETY: plain eventfd(2) call; no memory is passed.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh descriptor owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let iovs = (0..capacity)
            .map(|_| {
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_SEGS]
            })
            .collect();
        Ok(Uring {
            ring,
            slots: Slab::new(capacity as usize),
            iovs,
            unsubmitted: 0,
            eventfd,
            vectored_fixed,
        })
    }

    /// The kernel offers READV_FIXED and WRITEV_FIXED (Linux 6.15), so a
    /// multi-segment transfer in registered memory is one fixed operation.
    /// Without them (6.12 and older, where those opcodes fail every
    /// request with EINVAL) it is one plain READV / WRITEV: the same single
    /// operation per request, with the same completion and error, only
    /// with the pages looked up per request. One READ_FIXED per segment
    /// would keep the registration but turn one request into several
    /// operations, each able to fail on its own: not worth it for the
    /// multi-chunk requests only.
    pub fn vectored_fixed(&self) -> bool {
        self.vectored_fixed
    }

    /// Slots in the slab.
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Operations pushed and not yet reaped.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// No slot is free: [`push`](Self::push) would hand the token back.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.slots.is_full()
    }

    /// Descriptor that becomes readable when completions are posted (for
    /// poll(2) next to the socket; the worker resets it after its poll).
    pub fn event_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queue `op` on fixed file `file` at byte `offset`. Returns the token
    /// back when no slot is free (nothing was queued). The operation starts
    /// at the next [`submit`](Self::submit).
    ///
    /// # Safety
    ///
    /// Every segment of `op` must be valid for the transfer (writable for a
    /// read) and must be neither accessed by anyone else nor unmapped until
    /// [`reap`](Self::reap) returns `token`. With `fixed`, every segment
    /// must lie inside that registered buffer.
    #[inline]
    pub unsafe fn push(&mut self, file: u32, offset: u64, op: Op<'_>, token: T) -> Result<(), T> {
        // The slot is taken only once the entry is in the SQ.
        let Some(s) = self.slots.next_key() else {
            return Err(token);
        };
        let vectored_fixed = self.vectored_fixed;
        let iovs = &mut self.iovs[s as usize];
        let fd = types::Fixed(file);
        let (sqe, expect) = match op {
            Op::Flush => (
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .flags(squeue::Flags::IO_DRAIN),
                0,
            ),
            Op::Sync => (
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                0,
            ),
            Op::Rw { dir, segs, fixed } => {
                assert!(
                    !segs.is_empty() && segs.len() <= MAX_SEGS,
                    "1..={MAX_SEGS} segments"
                );
                let total: u32 = segs.iter().map(|g| g.len).sum();
                let sqe = if segs.len() == 1 && fixed.is_some() {
                    let (g, b) = (segs[0], fixed.unwrap_or(0));
                    match dir {
                        Dir::Read => opcode::ReadFixed::new(fd, g.ptr, g.len, b)
                            .offset(offset)
                            .build(),
                        Dir::Write => opcode::WriteFixed::new(fd, g.ptr, g.len, b)
                            .offset(offset)
                            .build(),
                    }
                } else {
                    for (v, g) in iovs.iter_mut().zip(segs) {
                        *v = libc::iovec {
                            iov_base: g.ptr.cast(),
                            iov_len: g.len as usize,
                        };
                    }
                    let iov = iovs.as_ptr();
                    let n = segs.len() as u32;
                    // Decided at open (see `vectored_fixed`): plain
                    // vectored I/O reaches registered memory all the same.
                    match (dir, fixed.filter(|_| vectored_fixed)) {
                        (Dir::Read, Some(b)) => opcode::ReadvFixed::new(fd, iov, n, b)
                            .offset(offset)
                            .build(),
                        (Dir::Write, Some(b)) => opcode::WritevFixed::new(fd, iov, n, b)
                            .offset(offset)
                            .build(),
                        (Dir::Read, None) => opcode::Readv::new(fd, iov, n).offset(offset).build(),
                        (Dir::Write, None) => {
                            opcode::Writev::new(fd, iov, n).offset(offset).build()
                        }
                    }
                };
                (sqe, total)
            }
        };
        let sqe = sqe.user_data(u64::from(s));
        // SAFETY: the caller guarantees every segment stays valid and
        // exclusively the kernel's until the token is reaped (this function's
        // contract); the iovec array lives in the slab, which never moves.
        // The SQ cannot be full: it has as many entries as the slab has
        // slots, and this slot is free.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            return Err(token);
        }
        let key = self.slots.insert(Pending { token, expect });
        debug_assert_eq!(key.ok(), Some(s), "the slab hands out next_key");
        self.unsubmitted += 1;
        Ok(())
    }

    /// Start every queued operation. `EBUSY`/`EAGAIN` (the kernel wants
    /// completions reaped first) are not errors: the entries stay queued.
    ///
    /// A kernel without SUBMIT_ALL stops at an entry it refuses while
    /// preparing it (its completion carries the error) and leaves the
    /// entries behind it in the SQ: submit again until the SQ is empty.
    /// Counting them as submitted would leave them there until the next
    /// request's submission, and their replies with them (issue 22: ATA
    /// error replies going out one per retry, each for an older request).
    pub fn submit(&mut self) -> io::Result<()> {
        while self.unsubmitted > 0 {
            match self.ring.submit() {
                Ok(_) => {
                    let left = self.ring.submission().len();
                    let progress = left < self.unsubmitted;
                    self.unsubmitted = left;
                    if !progress {
                        break;
                    }
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Hand every completed operation's token to `f` with its result; returns
    /// how many completed.
    #[inline]
    pub fn reap(&mut self, mut f: impl FnMut(T, Result<(), i32>)) -> usize {
        let mut n = 0;
        // Completions are copied out one at a time so that `f` may push new
        // operations (reusing the slot just freed).
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            let s = cqe.user_data() as u32;
            let res = cqe.result();
            let Some(Pending { token, expect }) = self.slots.remove(s) else {
                debug_assert!(false, "completion for empty slot {s}");
                continue;
            };
            let r = if res < 0 {
                Err(-res)
            } else if res as u32 != expect {
                // A short transfer inside the export cannot happen on a
                // healthy store.
                Err(libc::EIO)
            } else {
                Ok(())
            };
            n += 1;
            f(token, r);
        }
        n
    }

    /// Submit and block until at least one operation completes (no-op when
    /// nothing is in flight).
    pub fn wait(&mut self) -> io::Result<()> {
        if self.in_flight() == 0 {
            return Ok(());
        }
        match self.ring.submit_and_wait(1) {
            Ok(_) => {
                self.unsubmitted = self.ring.submission().len();
                self.submit()
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Wait for every operation in flight, handing each token to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(T, Result<(), i32>)) -> io::Result<()> {
        while self.in_flight() > 0 {
            self.reap(&mut f);
            if self.in_flight() > 0 {
                self.wait()?;
            }
        }
        Ok(())
    }
}

/// Whether `ring`'s kernel has READV_FIXED and WRITEV_FIXED (asked once
/// per ring with IORING_REGISTER_PROBE, never guessed from the version).
/// The first ring of the process logs what it found.
fn probe_vectored_fixed(ring: &IoUring) -> bool {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut probe = io_uring::Probe::new();
    let ok = ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(opcode::ReadvFixed::CODE)
        && probe.is_supported(opcode::WritevFixed::CODE);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        if ok {
            tracing::debug!("io_uring: READV_FIXED / WRITEV_FIXED offered");
        } else {
            tracing::info!(
                "io_uring READV_FIXED / WRITEV_FIXED (Linux 6.15) not offered by this kernel: \
                 multi-segment transfers use READV / WRITEV"
            );
        }
    }
    ok
}

/// Whether this kernel's io_uring has READV_FIXED and WRITEV_FIXED (a
/// throwaway ring; for status and the start-up summary).
pub fn kernel_has_vectored_fixed() -> Option<bool> {
    let ring = IoUring::new(2).ok()?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).ok()?;
    Some(
        probe.is_supported(opcode::ReadvFixed::CODE)
            && probe.is_supported(opcode::WritevFixed::CODE),
    )
}

/// O_DIRECT alignment of an open file (`statx(STATX_DIOALIGN)`): memory
/// alignment and file offset alignment in bytes, `None` when the kernel or
/// file system does not say.
pub fn dio_alignment(fd: RawFd) -> Option<(u32, u32)> {
    const STATX_DIOALIGN: libc::c_uint = 0x2000;
    // struct statx is 256 bytes; stx_dio_mem_align is at 0x98 and
    // stx_dio_offset_align at 0x9c, stx_mask at 0.
    let mut buf = [0u64; 32];
    // SAFETY: statx(2) writes at most 256 bytes into `buf`, which is 256
    // bytes long and outlives the call; the path is a NUL-terminated "".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_statx,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    let mask = buf[0] as u32;
    if mask & STATX_DIOALIGN == 0 {
        return None;
    }
    let w = buf[0x98 / 8];
    let (mem, off) = (w as u32, (w >> 32) as u32);
    (mem != 0).then_some((mem, off))
}

impl<T> Drop for Uring<T> {
    /// Never let the kernel write into memory after its owner went away:
    /// wait for whatever is still in flight (the tokens are dropped).
    fn drop(&mut self) {
        if self.in_flight() > 0 {
            let _ = self.drain(|_, _| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;

    /// A 4096-aligned heap buffer.
    struct Aligned {
        ptr: *mut u8,
        layout: std::alloc::Layout,
    }

    impl Aligned {
        fn new(len: usize) -> Aligned {
            let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: non-zero size.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            Aligned { ptr, layout }
        }
        fn iovec(&self) -> libc::iovec {
            libc::iovec {
                iov_base: self.ptr.cast(),
                iov_len: self.layout.size(),
            }
        }
        #[allow(clippy::mut_from_ref)]
        fn slice(&self) -> &mut [u8] {
            // SAFETY: the allocation is live and only this test touches it
            // between operations.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
        }
        fn at(&self, off: usize) -> *mut u8 {
            self.ptr.wrapping_add(off)
        }
    }

    impl Drop for Aligned {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) }
        }
    }

    /// A file path removed when dropped (also when a test panics).
    struct TempPath(std::path::PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    impl std::ops::Deref for TempPath {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    fn temp(direct: bool) -> (TempPath, std::fs::File) {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = TempPath(std::path::PathBuf::from(format!(
            "/var/tmp/xblade-uring-{}-{}.img",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )));
        std::fs::write(&*p, vec![0u8; 1 << 20]).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 } | libc::O_DSYNC)
            .open(&*p)
            .unwrap();
        (p, f)
    }

    fn round_trip(direct: bool) {
        let (path, file) = temp(direct);
        let buf = Aligned::new(64 << 10);
        for (i, b) in buf.slice().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        // SAFETY: `buf` outlives the ring (dropped after it, below).
        let mut u: Uring<u32> =
            unsafe { Uring::new(4, &[file.as_raw_fd()], &[buf.iovec()]) }.unwrap();
        let w = [Seg {
            ptr: buf.at(0),
            len: 4096,
        }];
        let op = Op::Rw {
            dir: Dir::Write,
            segs: &w,
            fixed: Some(0),
        };
        // SAFETY: the segment is in `buf`, untouched until reaped below.
        unsafe { u.push(0, 8192, op, 1) }.unwrap();
        // SAFETY: no memory.
        unsafe { u.push(0, 0, Op::Flush, 2) }.unwrap();
        // Vectored read of the same 4096 bytes into two places.
        let r = [
            Seg {
                ptr: buf.at(16384),
                len: 1024,
            },
            Seg {
                ptr: buf.at(32768),
                len: 3072,
            },
        ];
        let op = Op::Rw {
            dir: Dir::Read,
            segs: &r,
            fixed: Some(0),
        };
        u.submit().unwrap();
        let mut done = Vec::new();
        u.drain(|t, r| done.push((t, r))).unwrap();
        // SAFETY: as above.
        unsafe { u.push(0, 8192, op, 3) }.unwrap();
        // SAFETY: no memory.
        unsafe { u.push(0, 0, Op::Sync, 4) }.unwrap();
        u.drain(|t, r| done.push((t, r))).unwrap();
        done.sort();
        assert_eq!(
            done,
            vec![(1, Ok(())), (2, Ok(())), (3, Ok(())), (4, Ok(()))]
        );
        let s = buf.slice();
        assert_eq!(&s[16384..16384 + 1024], &s[0..1024]);
        assert_eq!(&s[32768..32768 + 3072], &s[1024..4096]);
        let on_disk = std::fs::read(&*path).unwrap();
        assert_eq!(&on_disk[8192..8192 + 4096], &s[..4096]);
        drop(u);
        drop(buf);
        drop(path);
    }

    #[test]
    fn dio_alignment_of_var_tmp() {
        let (path, file) = temp(true);
        // The dev VM's ext4 on virtio-blk reports 512/512 (docs/platform.md §3.2).
        let a = dio_alignment(file.as_raw_fd());
        assert!(
            matches!(a, Some((m, o)) if m.is_power_of_two() && o.is_power_of_two()),
            "{a:?}"
        );
        drop(path);
    }

    #[test]
    fn page_cache_round_trip() {
        round_trip(false);
    }

    #[test]
    fn direct_round_trip() {
        round_trip(true);
    }

    #[test]
    fn vectored_without_the_fixed_opcodes() {
        // What a kernel before 6.15 gets: plain READV / WRITEV over the
        // registered memory, results identical.
        let (path, file) = temp(true);
        let buf = Aligned::new(16384);
        // SAFETY: `buf` outlives the ring.
        let mut u: Uring<u32> =
            unsafe { Uring::new(4, &[file.as_raw_fd()], &[buf.iovec()]) }.unwrap();
        u.vectored_fixed = false;
        buf.slice()[..4096].fill(0x5a);
        let segs = [
            Seg {
                ptr: buf.at(0),
                len: 1024,
            },
            Seg {
                ptr: buf.at(1024),
                len: 3072,
            },
        ];
        let back = [
            Seg {
                ptr: buf.at(8192),
                len: 512,
            },
            Seg {
                ptr: buf.at(12288),
                len: 3584,
            },
        ];
        let mut got = Vec::new();
        for (t, dir, segs) in [(1, Dir::Write, &segs), (2, Dir::Read, &back)] {
            let op = Op::Rw {
                dir,
                segs,
                fixed: Some(0),
            };
            // SAFETY: the segments are in `buf`, untouched until reaped.
            unsafe { u.push(0, 4096, op, t) }.unwrap();
            u.drain(|t, r| got.push((t, r))).unwrap();
        }
        assert_eq!(got, vec![(1, Ok(())), (2, Ok(()))]);
        let s = buf.slice();
        assert!(s[8192..8704]
            .iter()
            .chain(&s[12288..15872])
            .all(|&b| b == 0x5a));
        drop(u);
        drop(path);
    }

    #[test]
    fn an_entry_refused_at_submission_holds_back_nothing_behind_it() {
        // Without SUBMIT_ALL the kernel stops at an entry it refuses while
        // preparing it: the ones behind it must still start with this
        // submit, not with the next request's.
        for submit_all in [false, true] {
            let (path, file) = temp(false);
            let buf = Aligned::new(8192);
            // SAFETY: `buf` outlives the ring.
            let mut u: Uring<u32> =
                unsafe { Uring::build(8, &[file.as_raw_fd()], &[buf.iovec()], submit_all) }
                    .unwrap();
            // An IOSQE flag no kernel knows: refused while preparing.
            let bad = opcode::Nop::new()
                .build()
                .flags(squeue::Flags::from_bits_retain(0x80))
                .user_data(0);
            let key = u.slots.insert(Pending {
                token: 100,
                expect: 0,
            });
            assert_eq!(key.ok(), Some(0));
            // SAFETY: a NOP names no memory.
            unsafe { u.ring.submission().push(&bad) }.unwrap();
            u.unsubmitted += 1;
            for t in 1..=3 {
                // SAFETY: no memory.
                unsafe { u.push(0, 0, Op::Sync, t) }.unwrap();
            }
            u.submit().unwrap();
            assert_eq!(u.unsubmitted, 0, "submit_all {submit_all}");
            let mut got = Vec::new();
            let t0 = std::time::Instant::now();
            while got.len() < 4 && t0.elapsed() < std::time::Duration::from_secs(3) {
                // Not `wait`, which submits again: the worker waits on
                // the eventfd, which only submitted entries can signal.
                u.reap(|t, r| got.push((t, r)));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            got.sort();
            assert_eq!(
                got,
                vec![
                    (1, Ok(())),
                    (2, Ok(())),
                    (3, Ok(())),
                    (100, Err(libc::EINVAL))
                ],
                "submit_all {submit_all}"
            );
            drop(u);
            drop(path);
        }
    }

    #[test]
    fn full_slab_hands_the_token_back_and_errors_carry_errno() {
        let (path, file) = temp(false);
        let buf = Aligned::new(8192);
        // SAFETY: `buf` outlives the ring.
        let mut u: Uring<u32> =
            unsafe { Uring::new(2, &[file.as_raw_fd()], &[buf.iovec()]) }.unwrap();
        assert_eq!(u.capacity(), 2);
        let seg = [Seg {
            ptr: buf.at(0),
            len: 512,
        }];
        let rd = Op::Rw {
            dir: Dir::Read,
            segs: &seg,
            fixed: Some(0),
        };
        // SAFETY: reads into `buf`, which outlives the ring.
        unsafe {
            u.push(0, 0, rd, 1).unwrap();
            u.push(0, 0, rd, 2).unwrap();
            assert_eq!(u.push(0, 0, rd, 3), Err(3));
        }
        assert!(u.is_full());
        let mut got = Vec::new();
        u.drain(|t, r| got.push((t, r))).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(u.in_flight(), 0);
        // Past the end of the file: a short (zero-byte) read is EIO.
        // SAFETY: as above.
        unsafe { u.push(0, 1 << 30, rd, 4) }.unwrap();
        // An unaligned O_DIRECT-less write into a bad fixed buffer index.
        let bad = Op::Rw {
            dir: Dir::Write,
            segs: &seg,
            fixed: Some(7),
        };
        // SAFETY: the kernel refuses the buffer index before touching memory.
        unsafe { u.push(0, 0, bad, 5) }.unwrap();
        got.clear();
        u.drain(|t, r| got.push((t, r))).unwrap();
        got.sort();
        assert_eq!(got[0], (4, Err(libc::EIO)));
        assert_eq!(got[1], (5, Err(libc::EFAULT)));
        drop(u);
        drop(path);
    }
}
