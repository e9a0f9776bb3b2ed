//! The four AF_XDP rings (fill, RX, TX, completion), read and written in
//! place in their shared mapping: one acquire load or release store per
//! batch and plain memory accesses per descriptor, with no foreign call.
//!
//! Why not xsk-rs's ring types: they copy every descriptor through a
//! non-inlined C helper (one call per descriptor, four per request) into
//! a staging buffer. Their sockets and UMEM are still used; only the rings
//! are mapped a second time here.
//!
//! Each ring is a power-of-two array of entries plus a producer and a
//! consumer index, both free-running `u32`s. The producing side writes
//! entries and then publishes its index with a release store; the consuming
//! side loads that index with acquire ordering before it reads the entries,
//! and hands slots back by a release store of its own index. Each side
//! keeps a cached copy of the other's index and reloads it only when the
//! cache says the ring is full (producer) or empty (consumer), as libxdp
//! does.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// A UMEM address (fill and completion rings).
pub type Addr = u64;

/// An RX or TX descriptor.
pub type Desc = libc::xdp_desc;

/// Pointers into one ring's memory.
struct Raw<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
}

impl<T> Raw<T> {
    /// # Safety
    ///
    /// `base` points to a live ring of `size` entries (a power of two)
    /// laid out per `off`, which outlives the returned value.
    unsafe fn new(base: *mut u8, off: &libc::xdp_ring_offset, size: u32) -> Raw<T> {
        debug_assert!(size.is_power_of_two());
        Raw {
            producer: base.wrapping_add(off.producer as usize).cast(),
            consumer: base.wrapping_add(off.consumer as usize).cast(),
            flags: base.wrapping_add(off.flags as usize).cast(),
            entries: base.wrapping_add(off.desc as usize).cast(),
            mask: size - 1,
            size,
        }
    }

    #[inline]
    fn load(p: *const AtomicU32, o: Ordering) -> u32 {
        // SAFETY: the index lies in the ring's mapping (Raw::new's
        // contract); the kernel updates it concurrently, hence the atomic.
        unsafe { (*p).load(o) }
    }

    #[inline]
    fn store(p: *const AtomicU32, v: u32) {
        // SAFETY: as in load.
        unsafe { (*p).store(v, Ordering::Release) }
    }
}

/// The side of a ring this process produces into (fill, TX).
pub struct Producer<T: Copy> {
    raw: Raw<T>,
    /// Our producer index (published by [`Producer::publish`]).
    prod: u32,
    /// The consumer index last seen, plus the ring size: `cached_end -
    /// prod` slots are certainly free.
    cached_end: u32,
    _map: Option<Mapping>,
}

/// The side of a ring this process consumes from (RX, completion).
pub struct Consumer<T: Copy> {
    raw: Raw<T>,
    /// Our consumer index (published by [`Consumer::release`]).
    cons: u32,
    /// The producer index last seen.
    cached_prod: u32,
    _map: Option<Mapping>,
}

// SAFETY: the rings are plain shared memory owned by the socket; a
// Producer or Consumer is the only user-space handle on its ring side and
// is used by one thread at a time (the worker that owns the socket).
unsafe impl<T: Copy> Send for Producer<T> {}
// SAFETY: as for Producer.
unsafe impl<T: Copy> Send for Consumer<T> {}

impl<T: Copy> Producer<T> {
    /// The producing side of `raw`; nothing else in this process may
    /// produce into it.
    #[inline]
    fn over(raw: Raw<T>, map: Option<Mapping>) -> Self {
        let prod = Raw::<T>::load(raw.producer, Ordering::Relaxed);
        let cached_end = Raw::<T>::load(raw.consumer, Ordering::Acquire).wrapping_add(raw.size);
        Producer {
            raw,
            prod,
            cached_end,
            _map: map,
        }
    }

    /// Free slots, at least `want` if the ring has them: the cached
    /// consumer index is reloaded only when it shows fewer.
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_end.wrapping_sub(self.prod);
        if free >= want {
            return free;
        }
        self.cached_end =
            Raw::<T>::load(self.raw.consumer, Ordering::Acquire).wrapping_add(self.raw.size);
        self.cached_end.wrapping_sub(self.prod)
    }

    /// Write one entry after those pending; false (nothing written) when
    /// [`Producer::free`] did not find room for it. The entry is the
    /// kernel's once [`Producer::publish`] runs.
    #[inline]
    pub fn push(&mut self, v: T) -> bool {
        if self.cached_end.wrapping_sub(self.prod) == 0 {
            return false;
        }
        let i = (self.prod & self.raw.mask) as usize;
        // SAFETY: slot `i` is inside the ring; it is free (the consumer's
        // index, plus the size, is beyond it) and unpublished, so the
        // kernel does not read it.
        unsafe { self.raw.entries.add(i).write(v) };
        self.prod = self.prod.wrapping_add(1);
        true
    }

    /// Hand every pushed entry to the kernel.
    #[inline]
    pub fn publish(&mut self) {
        Raw::<T>::store(self.raw.producer, self.prod);
    }

    /// Published entries the kernel has not consumed yet (an exact count:
    /// reads its index).
    #[inline]
    pub fn unconsumed(&self) -> u32 {
        self.prod
            .wrapping_sub(Raw::<T>::load(self.raw.consumer, Ordering::Acquire))
    }

    /// The kernel asks for a wakeup (`XDP_USE_NEED_WAKEUP`).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        Raw::<T>::load(self.raw.flags, Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

impl<T: Copy> Consumer<T> {
    /// The consuming side of `raw`; nothing else in this process may
    /// consume from it.
    #[inline]
    fn over(raw: Raw<T>, map: Option<Mapping>) -> Self {
        let cons = Raw::<T>::load(raw.consumer, Ordering::Relaxed);
        let cached_prod = Raw::<T>::load(raw.producer, Ordering::Acquire);
        Consumer {
            raw,
            cons,
            cached_prod,
            _map: map,
        }
    }

    /// Entries ready to read, at most `max`: the producer index is
    /// reloaded only when the cached one shows none.
    #[inline]
    pub fn ready(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cons);
        if n == 0 {
            self.cached_prod = Raw::<T>::load(self.raw.producer, Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cons);
        }
        n.min(max)
    }

    /// Entry `i` of those [`Consumer::ready`] reported (not yet released).
    #[inline]
    pub fn get(&self, i: u32) -> T {
        debug_assert!(i < self.cached_prod.wrapping_sub(self.cons));
        let at = (self.cons.wrapping_add(i) & self.raw.mask) as usize;
        // SAFETY: slot `at` is inside the ring, published by the producer
        // (acquire-loaded index) and not yet released: the kernel does not
        // write it until we release it.
        unsafe { self.raw.entries.add(at).read() }
    }

    /// Give the first `n` ready entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        debug_assert!(n <= self.cached_prod.wrapping_sub(self.cons));
        self.cons = self.cons.wrapping_add(n);
        Raw::<T>::store(self.raw.consumer, self.cons);
    }
}

/// One ring's own mapping of the socket's ring memory, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by map_ring and nothing refers to it
        // once its ring handle is gone.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The four rings of a bound AF_XDP socket that owns its UMEM.
pub struct Rings {
    /// Fill ring: free chunks for the kernel to receive into.
    pub fill: Producer<Addr>,
    /// Completion ring: chunks the kernel has transmitted.
    pub comp: Consumer<Addr>,
    /// RX ring: received frames (or fragments).
    pub rx: Consumer<Desc>,
    /// TX ring: frames to send.
    pub tx: Producer<Desc>,
}

impl Rings {
    /// Map the four rings of socket `fd` (bound, and the first socket of
    /// its UMEM, so that its descriptor carries the fill and completion
    /// rings too), each of `size` entries.
    ///
    /// # Safety
    ///
    /// Nothing else in this process produces into or consumes from these
    /// rings while the returned value lives (xsk-rs's own ring handles on
    /// the same socket must stay unused).
    #[inline]
    pub unsafe fn map(fd: RawFd, size: u32) -> io::Result<Rings> {
        if !size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring size {size} is not a power of two"),
            ));
        }
        // SAFETY: all-zero is a valid xdp_mmap_offsets.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `len` bytes and outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                std::ptr::addr_of_mut!(off).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("XDP_MMAP_OFFSETS: {e}")));
        }
        let addr = std::mem::size_of::<Addr>();
        let desc = std::mem::size_of::<Desc>();
        let (fb, fm) = map_ring(
            fd,
            &off.fr,
            size,
            addr,
            libc::XDP_UMEM_PGOFF_FILL_RING as i64,
            "fill",
        )?;
        let (cb, cm) = map_ring(
            fd,
            &off.cr,
            size,
            addr,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
            "completion",
        )?;
        let (rb, rm) = map_ring(fd, &off.rx, size, desc, libc::XDP_PGOFF_RX_RING, "RX")?;
        let (tb, tm) = map_ring(fd, &off.tx, size, desc, libc::XDP_PGOFF_TX_RING, "TX")?;
        // SAFETY: each base is a fresh mapping of that ring, kept alive by
        // the handle that holds it, or (older kernels) libxdp's mapping of
        // it, kept alive by xsk-rs's handles, which the caller drops after
        // these; laid out per the kernel's offsets. The caller guarantees
        // no other user of the rings in this process.
        unsafe {
            Ok(Rings {
                fill: Producer::over(Raw::new(fb, &off.fr, size), fm),
                comp: Consumer::over(Raw::new(cb, &off.cr, size), cm),
                rx: Consumer::over(Raw::new(rb, &off.rx, size), rm),
                tx: Producer::over(Raw::new(tb, &off.tx, size), tm),
            })
        }
    }
}

#[inline]
fn map_ring(
    fd: RawFd,
    off: &libc::xdp_ring_offset,
    size: u32,
    entry: usize,
    pgoff: i64,
    name: &str,
) -> io::Result<(*mut u8, Option<Mapping>)> {
    let len = off.desc as usize + size as usize * entry;
    // SAFETY: a fresh shared mapping of the socket's ring; the kernel
    // checks the length against the ring it set up.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff,
        )
    };
    if p == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        // Older kernels (6.1 here) map a socket's rings only until it is
        // bound, EBUSY after: use the mapping libxdp made before binding.
        if e.raw_os_error() == Some(libc::EBUSY) {
            if let Some(p) = existing_mapping(fd, pgoff, len) {
                return Ok((p, None));
            }
        }
        return Err(io::Error::new(
            e.kind(),
            format!("mapping the {name} ring: {e}"),
        ));
    }
    Ok((p.cast(), Some(Mapping { ptr: p, len })))
}

/// The start of this process's existing mapping of socket `fd` at page
/// offset `pgoff` (bytes) covering at least `len` bytes, from
/// /proc/self/maps. libxdp maps every ring of the socket before binding
/// it and keeps the mappings until xsk-rs's handles drop, which
/// [`super::socket::Xsk`] does after its [`Rings`].
fn existing_mapping(fd: RawFd, pgoff: i64, len: usize) -> Option<*mut u8> {
    // SAFETY: all-zero is a valid `stat`, written by fstat below.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and outlives the call.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .find_map(|l| maps_line_match(l, st.st_ino, pgoff as u64, len))
        .map(|a| a as *mut u8)
}

/// The start address of a /proc/self/maps line (`START-END PERMS OFFSET
/// DEV INODE PATH`) for inode `ino` at `offset`, at least `len` long.
fn maps_line_match(line: &str, ino: u64, offset: u64, len: usize) -> Option<usize> {
    let mut f = line.split_whitespace();
    let (range, _perms, off, _dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if inode.parse::<u64>().ok()? != ino || u64::from_str_radix(off, 16).ok()? != offset {
        return None;
    }
    let (a, b) = range.split_once('-')?;
    let (a, b) = (
        usize::from_str_radix(a, 16).ok()?,
        usize::from_str_radix(b, 16).ok()?,
    );
    (b.checked_sub(a)? >= len).then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_socket_ring_in_proc_maps() {
        let l = "7f12a4000000-7f12a4011000 rw-s 100000000 00:08 123456                     socket:[123456]";
        assert_eq!(
            maps_line_match(l, 123456, 0x1_0000_0000, 0x10040),
            Some(0x7f12_a400_0000)
        );
        assert_eq!(maps_line_match(l, 123457, 0x1_0000_0000, 0x10040), None);
        assert_eq!(maps_line_match(l, 123456, 0x1_8000_0000, 0x10040), None);
        assert_eq!(maps_line_match(l, 123456, 0x1_0000_0000, 0x12000), None);
        assert_eq!(maps_line_match("garbage", 1, 0, 0), None);
    }

    /// A ring in ordinary memory, laid out as the kernel does (indices on
    /// their own cache lines), with a test-side "kernel" poking at it.
    struct Sim {
        mem: Vec<u64>,
        off: libc::xdp_ring_offset,
        size: u32,
    }

    impl Sim {
        fn new(size: u32, start: u32) -> Sim {
            let off = libc::xdp_ring_offset {
                producer: 0,
                consumer: 64,
                flags: 128,
                desc: 192,
            };
            let s = Sim {
                mem: vec![0u64; (192 + 16 * size as usize) / 8],
                off,
                size,
            };
            s.set(0, start);
            s.set(64, start);
            s
        }
        #[inline]
        fn base(&mut self) -> *mut u8 {
            self.mem.as_mut_ptr().cast()
        }
        #[inline]
        fn idx(&self, at: usize) -> &AtomicU32 {
            // SAFETY: inside `mem`, 4-byte aligned.
            unsafe { &*self.mem.as_ptr().cast::<u8>().add(at).cast::<AtomicU32>() }
        }
        #[inline]
        fn get(&self, at: usize) -> u32 {
            self.idx(at).load(Ordering::Acquire)
        }
        #[inline]
        fn set(&self, at: usize, v: u32) {
            self.idx(at).store(v, Ordering::Release)
        }
        #[inline]
        fn entry<T: Copy>(&mut self, i: u32) -> *mut T {
            let at = 192 + (i & (self.size - 1)) as usize * std::mem::size_of::<T>();
            self.base().wrapping_add(at).cast()
        }
    }

    #[test]
    #[inline]
    fn producer_fills_publishes_and_wraps() {
        // Indices start just below u32::MAX: every step wraps.
        let mut s = Sim::new(8, u32::MAX - 3);
        let off = s.off;
        // SAFETY: `s` outlives the producer and nobody else produces.
        let mut p: Producer<Addr> = Producer::over(unsafe { Raw::new(s.base(), &off, 8) }, None);
        assert_eq!(p.free(1), 8);
        for v in 0..8u64 {
            assert!(p.push(v * 10));
        }
        assert!(!p.push(99), "full");
        assert_eq!(s.get(0), u32::MAX - 3, "nothing published yet");
        p.publish();
        assert_eq!(s.get(0), (u32::MAX - 3).wrapping_add(8));
        assert_eq!(p.unconsumed(), 8);
        // The "kernel" consumes three.
        for i in 0..3u32 {
            let e: *mut Addr = s.entry((u32::MAX - 3).wrapping_add(i));
            // SAFETY: inside the ring.
            assert_eq!(unsafe { e.read() }, u64::from(i) * 10);
        }
        s.set(64, (u32::MAX - 3).wrapping_add(3));
        assert_eq!(p.free(0), 0, "cached: still looks full");
        assert_eq!(p.free(3), 3, "reloaded");
        assert_eq!(p.unconsumed(), 5);
        assert!(p.push(1) && p.push(2) && p.push(3) && !p.push(4));
        p.publish();
        s.set(128, libc::XDP_RING_NEED_WAKEUP);
        assert!(p.needs_wakeup());
    }

    #[test]
    #[inline]
    fn consumer_reads_releases_and_wraps() {
        let mut s = Sim::new(4, u32::MAX - 1);
        let off = s.off;
        // SAFETY: `s` outlives the consumer and nobody else consumes.
        let mut c: Consumer<Desc> = Consumer::over(unsafe { Raw::new(s.base(), &off, 4) }, None);
        assert_eq!(c.ready(64), 0);
        // The "kernel" produces three descriptors.
        for i in 0..3u32 {
            let e: *mut Desc = s.entry((u32::MAX - 1).wrapping_add(i));
            let d = Desc {
                addr: 4096 * u64::from(i),
                len: 100 + i,
                options: i,
            };
            // SAFETY: inside the ring.
            unsafe { e.write(d) };
        }
        s.set(0, (u32::MAX - 1).wrapping_add(3));
        assert_eq!(c.ready(2), 2, "capped");
        assert_eq!(c.ready(64), 3);
        assert_eq!((c.get(0).addr, c.get(2).len, c.get(1).options), (0, 102, 1));
        c.release(2);
        assert_eq!(
            s.get(64),
            u32::MAX.wrapping_add(1),
            "published consumer index"
        );
        assert_eq!(c.ready(64), 1);
        assert_eq!(c.get(0).addr, 8192);
        c.release(1);
        assert_eq!(c.ready(64), 0);
        assert_eq!(s.get(64), (u32::MAX - 1).wrapping_add(3));
    }

    #[test]
    #[inline]
    fn sizes_must_be_powers_of_two() {
        // SAFETY: fails before touching the descriptor.
        let e = unsafe { Rings::map(-1, 1000) }.err().expect("refused");
        assert!(e.to_string().contains("1000"), "{e}");
    }
}
