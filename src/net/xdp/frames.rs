//! The frames of one AF_XDP socket, for the worker loop: the four rings,
//! the chunk table, multi-buffer reassembly and the fill, TX and kick
//! policy. Knows nothing of AoE or stores.
//!
//! Frame life cycle (chunk states in [`super::umem`]):
//!
//! 1. Free chunks go to the fill ring (kept stocked, minus a reserve for
//!    reply tails and extra replies).
//! 2. A request arrives on RX as one or more fragments (multi-buffer: each
//!    fragment in its own chunk at chunk + 476): one [`XdpFrame`] in state
//!    Rx. The engine parses it in place in the first fragment's chunk.
//! 3. A disk request lends the frame's memory to a store (state Disk):
//!    READ data lands at frame byte 36 = chunk + 512, a jumbo READ reply
//!    takes free chunks for its tail fragments (at chunk + 476); WRITE data
//!    leaves from the request's fragments.
//! 4. Replies go to TX (state InTx); TX completions return chunks to the
//!    free list.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use tracing::debug;

use super::bpf::XdpProgram;
use super::socket::Xsk;
use super::umem::{ChunkState, ChunkTable, CHUNK_SIZE, DATA_OFFSET, ROOM};
use super::{frags_for, ring, MAX_FRAGS, RING, XDP_PKT_CONTD};
use crate::bdev::Segs;
use crate::stats::{WorkerStats, XdpStats};
use crate::wire::ATA_DATA_OFFSET;
use crate::worker::{Flushed, FrameIo, LoopCounters};

/// Hint the CPU to load the cache line at `p` (no-op off x86_64).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The fragments of one frame: chunk ids and lengths, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Frags {
    n: u8,
    chunk: [u32; MAX_FRAGS],
    len: [u16; MAX_FRAGS],
}

impl Frags {
    #[inline]
    fn one(c: u32, len: usize) -> Frags {
        let mut f = Frags::default();
        f.push(c, len);
        f
    }

    /// Append a fragment; false when full.
    #[inline]
    fn push(&mut self, c: u32, len: usize) -> bool {
        let i = self.n as usize;
        if i == MAX_FRAGS {
            return false;
        }
        self.chunk[i] = c;
        self.len[i] = len as u16;
        self.n += 1;
        true
    }

    #[inline]
    fn chunks(&self) -> &[u32] {
        &self.chunk[..self.n as usize]
    }

    #[inline]
    fn head(&self) -> u32 {
        self.chunk[0]
    }

    #[inline]
    fn total(&self) -> usize {
        self.len[..self.n as usize]
            .iter()
            .map(|&l| l as usize)
            .sum()
    }
}

/// A frame the worker owns: its chunks, all in one state.
#[derive(Debug)]
pub struct XdpFrame {
    frags: Frags,
    state: ChunkState,
}

/// A frame being reassembled from RX fragments.
#[derive(Debug, Default)]
pub(super) struct Partial {
    frags: Frags,
    /// More fragments than MAX_FRAGS, or a descriptor at a bad offset:
    /// release the rest and drop.
    bad: bool,
    /// Why it is bad.
    oversize: bool,
}

/// One socket's frames.
pub struct XdpIo {
    pub(super) xsk: Xsk,
    pub(super) prog: Arc<XdpProgram>,
    pub(super) chunks: ChunkTable,
    pub(super) queue: u32,
    pub(super) iface: String,
    pub(super) busy_poll: bool,
    /// Largest reply a request can produce (bytes).
    pub(super) max_reply: usize,
    /// Free chunks kept off the fill ring for reply tails and extra replies.
    pub(super) reserve: usize,
    /// Chunks kept on the fill ring (grows when frames find it empty).
    pub(super) fill_depth: usize,
    /// Descriptors waiting for room on the TX ring, whole frames only.
    pub(super) tx_q: Vec<ring::Desc>,
    /// TX descriptors produced and not yet completed.
    pub(super) tx_outstanding: usize,
    pub(super) partial: Partial,
    pub(super) rx_frames: u64,
    pub(super) tx_frames: u64,
    pub(super) xstats: XdpStats,
}

impl std::fmt::Debug for XdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpIo")
            .field("iface", &self.iface)
            .field("queue", &self.queue)
            .field("chunks", &self.chunks)
            .finish()
    }
}

impl XdpIo {
    /// Put free chunks (beyond the reserve) on the fill ring, up to `depth`
    /// chunks there.
    fn refill_to(&mut self, depth: usize) -> io::Result<usize> {
        let below = depth.saturating_sub(self.chunks.count(ChunkState::InFill) as usize);
        if below == 0 {
            return Ok(0);
        }
        let spare = self
            .chunks
            .free_len()
            .saturating_sub(self.reserve)
            .min(below);
        let room = self.xsk.rings.fill.free(spare.max(1) as u32) as usize;
        let k = spare.min(room);
        if k == 0 {
            if spare == 0 && room > 0 {
                self.xstats.fill_starved += 1;
            }
            return Ok(0);
        }
        let mut done = 0;
        while done < k {
            let Some(c) = self.chunks.alloc(ChunkState::InFill) else {
                break;
            };
            // The table just moved `c` from Free to InFill: nobody else
            // uses it until it comes back on RX. `room` slots are free.
            let pushed = self.xsk.rings.fill.push(Xsk::fill_addr(c));
            debug_assert!(pushed);
            done += 1;
        }
        self.xsk.rings.fill.publish();
        if self.xsk.rings.fill.needs_wakeup() {
            let r = self.xsk.wake_rx();
            self.tolerate(r)?;
        }
        Ok(done)
    }

    /// Fill the ring as a worker starts (before the program steers here).
    pub(super) fn stock(&mut self) -> io::Result<usize> {
        self.refill_to(self.fill_depth)
    }

    /// Queue a frame of `len` bytes spread over `frags` (each holding ROOM
    /// bytes but the last) for TX.
    #[inline]
    fn post_frags(&mut self, frags: &[u32], len: usize, from: ChunkState) {
        // Without XDP_USE_SG the kernel takes no XDP_PKT_CONTD chain: the
        // port's sectors are capped so that every reply fits one chunk.
        debug_assert!(
            frags.len() <= 1 || self.xsk.sg(),
            "{}-fragment reply on a socket bound without XDP_USE_SG",
            frags.len()
        );
        let mut left = len;
        for (i, &c) in frags.iter().enumerate() {
            let l = left.min(ROOM);
            left -= l;
            if from != ChunkState::InTx {
                self.chunks.transition(c, from, ChunkState::InTx);
            }
            self.tx_q.push(Xsk::tx_desc(c, l, i + 1 < frags.len()));
        }
        debug_assert_eq!(left, 0, "reply longer than its chunks");
    }

    /// Produce as many whole queued frames as the TX ring takes.
    fn flush_tx(&mut self) -> usize {
        if self.tx_q.is_empty() {
            return 0;
        }
        let tx = &mut self.xsk.rings.tx;
        let room = tx.free(self.tx_q.len() as u32) as usize;
        let mut k = room.min(self.tx_q.len());
        // A frame's fragments must go in together: cut after a last
        // fragment.
        while k > 0 && self.tx_q[k - 1].options & XDP_PKT_CONTD != 0 {
            k -= 1;
        }
        if k == 0 {
            return 0;
        }
        // Every queued descriptor names an InTx chunk of this UMEM whose
        // frame is complete; the kernel owns it until it completes.
        let mut frames = 0;
        for d in &self.tx_q[..k] {
            let pushed = tx.push(*d);
            debug_assert!(pushed, "room was checked");
            frames += usize::from(d.options & XDP_PKT_CONTD == 0);
        }
        tx.publish();
        self.tx_frames += frames as u64;
        self.tx_outstanding += k;
        self.tx_q.drain(..k);
        k
    }

    /// Wake the kernel for TX. Copy mode only transmits inside sendto (at
    /// most 32 descriptors per call), so kick while the kernel has not taken
    /// every produced descriptor; returns true in that case (the caller
    /// keeps turning). With everything taken but completions still owed,
    /// kick once as the worker goes idle: on veth the completion of a reply
    /// comes when the peer frees the frame, which a kick lets run.
    fn kick(&mut self, produced: usize, idle_turns: u32) -> io::Result<bool> {
        if self.tx_outstanding == 0 {
            return Ok(false);
        }
        let untaken = produced > 0 || self.xsk.rings.tx.unconsumed() > 0;
        if !(untaken || idle_turns == 1) || !(self.busy_poll || self.xsk.rings.tx.needs_wakeup()) {
            return Ok(false);
        }
        let r = self.xsk.wake_tx();
        self.tolerate(r)?;
        self.xstats.tx_kicks += 1;
        Ok(untaken)
    }

    /// A wakeup failed: errors of a down, flapping or congested link pass
    /// (the rings keep their descriptors, initiators retransmit); anything
    /// else ends the worker.
    fn tolerate(&mut self, r: io::Result<()>) -> io::Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e)
                if crate::net::socket::is_transient(&e)
                    || matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) =>
            {
                self.xstats.wakeup_errors += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    #[inline]
    fn release_frags(&mut self, frags: &[u32], from: ChunkState) {
        for &c in frags {
            self.chunks.release(c, from);
        }
    }

    /// Frames found the fill ring empty since the last look: keep more
    /// chunks there (bursts of that size will come again). Never shrinks.
    fn grow_fill(&mut self, before: u64) {
        if self.xstats.rx_fill_ring_empty > before && self.fill_depth < RING as usize {
            self.fill_depth = (self.fill_depth * 2).min(RING as usize);
            debug!(iface = %self.iface, queue = self.queue,
                   fill_depth = self.fill_depth, "frames met an empty fill ring: deeper fill ring");
        }
    }

    /// The data pieces of a request's fragments: `data` bytes from frame
    /// byte 36 of the head, then from byte 0 of the others.
    #[inline]
    fn pieces(&self, frags: &Frags, data: usize) -> (Segs, usize) {
        let mut segs = Segs::default();
        let mut used = 0;
        let mut left = data;
        for (i, &c) in frags.chunks().iter().enumerate() {
            if left == 0 {
                break;
            }
            let start = if i == 0 { ATA_DATA_OFFSET } else { 0 };
            let l = left.min((frags.len[i] as usize).saturating_sub(start));
            segs.push(self.xsk.frame_ptr(c).wrapping_add(start), l);
            left -= l;
            used = i + 1;
        }
        (segs, used)
    }
}

impl FrameIo for XdpIo {
    type Frame = XdpFrame;

    #[inline]
    fn receive(&mut self, out: &mut Vec<(XdpFrame, usize)>, max: usize) -> io::Result<()> {
        // The RX ring hands back descriptors of this UMEM that we put on
        // the fill ring; each slot stays ours until released below.
        let n = self.xsk.rings.rx.ready(max as u32);
        // The kernel wrote these frames from another CPU (the NAPI one), so
        // the first touch of each header misses the cache: start every
        // header's load now so that the misses of a batch overlap.
        for i in 0..n {
            let a = self.xsk.rings.rx.get(i).addr as usize;
            prefetch(self.xsk.base().wrapping_add(a));
        }
        for i in 0..n {
            let d = self.xsk.rings.rx.get(i);
            let addr = d.addr as usize;
            let c = Xsk::chunk_of(addr);
            self.chunks
                .transition(c, ChunkState::InFill, ChunkState::Rx);
            let len = d.len as usize;
            if addr % CHUNK_SIZE as usize != DATA_OFFSET || len > ROOM {
                self.partial.bad = true;
                self.xstats.rx_bad_desc += 1;
                self.chunks.release(c, ChunkState::Rx);
            } else if self.partial.bad || !self.partial.frags.push(c, len) {
                if !self.partial.bad {
                    self.partial.oversize = true;
                }
                self.partial.bad = true;
                self.chunks.release(c, ChunkState::Rx);
            }
            if d.options & XDP_PKT_CONTD != 0 {
                continue;
            }
            let p = std::mem::take(&mut self.partial);
            self.rx_frames += 1;
            if p.bad {
                if p.oversize {
                    self.xstats.rx_oversize += 1;
                }
                self.release_frags(p.frags.chunks(), ChunkState::Rx);
                continue;
            }
            if p.frags.n > 1 {
                self.xstats.rx_multi_buffer += 1;
            }
            let total = p.frags.total();
            out.push((
                XdpFrame {
                    frags: p.frags,
                    state: ChunkState::Rx,
                },
                total,
            ));
        }
        self.xsk.rings.rx.release(n);
        Ok(())
    }

    #[inline]
    fn head(&mut self, f: &XdpFrame) -> &mut [u8] {
        // SAFETY: the frame's chunks belong to the holder of `f` (Rx, Disk
        // with no store operation, or InTx not yet posted): on no ring, and
        // the slice borrows `self` so no other reference is made meanwhile.
        unsafe { self.xsk.room(f.frags.head()) }
    }

    #[inline]
    fn read_segs(&mut self, f: &mut XdpFrame, data: usize) -> Option<Segs> {
        if f.state != ChunkState::Disk {
            // The reply's chunks: the request's head, then free chunks for
            // the tails; the request's other fragments go back.
            let tails = frags_for(ATA_DATA_OFFSET + data) - 1;
            if self.chunks.free_len() < tails {
                return None;
            }
            let from = f.state;
            self.release_frags(&f.frags.chunks()[1..], from);
            let head = f.frags.head();
            self.chunks.transition(head, from, ChunkState::Disk);
            let mut own = Frags::one(head, ROOM);
            for _ in 0..tails {
                let c = self
                    .chunks
                    .alloc(ChunkState::Disk)
                    .expect("free chunks checked above");
                own.push(c, ROOM);
            }
            *f = XdpFrame {
                frags: own,
                state: ChunkState::Disk,
            };
        }
        Some(self.pieces(&f.frags, data).0)
    }

    #[inline]
    fn write_segs(&mut self, f: &mut XdpFrame, data: usize) -> Segs {
        let (segs, used) = self.pieces(&f.frags, data);
        if f.state != ChunkState::Disk {
            let from = f.state;
            // Fragments past the data (padding) are not needed.
            self.release_frags(&f.frags.chunks()[used.max(1)..], from);
            let mut own = Frags::default();
            for i in 0..used.max(1) {
                let c = f.frags.chunk[i];
                self.chunks.transition(c, from, ChunkState::Disk);
                own.push(c, f.frags.len[i] as usize);
            }
            *f = XdpFrame {
                frags: own,
                state: ChunkState::Disk,
            };
        }
        segs
    }

    #[inline]
    fn trim(&mut self, f: &mut XdpFrame) {
        if f.frags.n > 1 {
            self.release_frags(&f.frags.chunks()[1..], f.state);
            f.frags = Frags::one(f.frags.head(), f.frags.len[0] as usize);
        }
    }

    #[inline]
    fn post(&mut self, f: XdpFrame, len: usize) {
        let XdpFrame { frags, state } = f;
        self.post_frags(frags.chunks(), len, state);
    }

    #[inline]
    fn release(&mut self, f: XdpFrame) {
        self.release_frags(f.frags.chunks(), f.state);
    }

    #[inline]
    fn alloc(&mut self) -> Option<XdpFrame> {
        let c = self.chunks.alloc(ChunkState::InTx)?;
        Some(XdpFrame {
            frags: Frags::one(c, 0),
            state: ChunkState::InTx,
        })
    }

    /// A null READ from the zero pool: the header is built in the request's
    /// frame and copied into a pool head; the tails only need their first
    /// 36 bytes zeroed again (a pool chunk may have carried a header).
    fn post_zeros(
        &mut self,
        f: XdpFrame,
        data: usize,
        header: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Result<(), XdpFrame> {
        let n = frags_for(ATA_DATA_OFFSET + data);
        if self.chunks.zero_len() < n {
            return Err(f);
        }
        let head = f.frags.head();
        // SAFETY: `head` belongs to the holder of `f`, on no ring.
        let frame = unsafe { self.xsk.room(head) };
        let len = header(frame);
        let mut own = Frags::default();
        for i in 0..n {
            let z = self
                .chunks
                .take_zero(ChunkState::InTx)
                .expect("zero pool size checked");
            // SAFETY: a pool chunk just taken: on no ring, no other
            // reference; `frame` is a different chunk.
            let room = unsafe { self.xsk.room(z) };
            if i == 0 {
                room[..ATA_DATA_OFFSET].copy_from_slice(&frame[..ATA_DATA_OFFSET]);
            } else {
                room[..ATA_DATA_OFFSET].fill(0);
            }
            own.push(z, ROOM);
        }
        self.release(f);
        self.post_frags(own.chunks(), len, ChunkState::InTx);
        Ok(())
    }

    #[inline]
    fn reap_tx(&mut self) -> usize {
        if self.tx_outstanding == 0 {
            return 0;
        }
        // The completion ring returns addresses of this UMEM that we
        // produced on TX.
        let cq = &mut self.xsk.rings.comp;
        let n = cq.ready(RING);
        for i in 0..n {
            self.chunks
                .release(Xsk::chunk_of(cq.get(i) as usize), ChunkState::InTx);
        }
        cq.release(n);
        self.tx_outstanding -= n as usize;
        n as usize
    }

    #[inline]
    fn flush(&mut self, idle_turns: u32) -> io::Result<Flushed> {
        let produced = self.flush_tx();
        let untaken = self.kick(produced, idle_turns)?;
        Ok(Flushed { produced, untaken })
    }

    /// A worker about to sleep fills the whole ring: it cannot restock while
    /// asleep, and the kernel must not find the ring empty meanwhile.
    fn refill(&mut self, sleeping: bool) -> io::Result<usize> {
        self.refill_to(if sleeping {
            RING as usize
        } else {
            self.fill_depth
        })
    }

    #[inline]
    fn tx_owed(&self) -> bool {
        self.tx_outstanding > 0 || !self.tx_q.is_empty()
    }

    #[inline]
    fn rx_fd(&self) -> RawFd {
        self.xsk.fd()
    }

    fn poll_idle(&mut self) -> io::Result<()> {
        if self.busy_poll {
            // No need_wakeup flags: drive the NIC's NAPI from here.
            let r = self.xsk.wake_rx();
            self.tolerate(r)?;
        }
        Ok(())
    }

    fn room(&self) -> usize {
        self.max_reply
    }

    fn publish(&mut self, stats: &mut WorkerStats, c: &LoopCounters) {
        if let Ok(k) = self.xsk.statistics() {
            self.xstats.rx_dropped = k.rx_dropped();
            self.xstats.rx_invalid_descs = k.rx_invalid_descs();
            self.xstats.tx_invalid_descs = k.tx_invalid_descs();
            self.xstats.rx_ring_full = k.rx_ring_full();
            let before = self.xstats.rx_fill_ring_empty;
            self.xstats.rx_fill_ring_empty = k.rx_fill_ring_empty_descs();
            self.xstats.tx_ring_empty = k.tx_ring_empty_descs();
            self.grow_fill(before);
        }
        self.xstats.fill_depth = self.fill_depth as u64;
        let b = self.prog.counters(self.queue);
        self.xstats.bpf_redirected = b.redirected;
        self.xstats.bpf_passed_non_aoe = b.passed_non_aoe;
        self.xstats.bpf_passed_foreign = b.passed_foreign;
        self.xstats.bpf_dropped_foreign = b.dropped_foreign;
        self.xstats.bpf_no_socket = b.no_socket;
        self.xstats.bpf_short = b.short;
        self.xstats.bpf_vlan = b.vlan;
        self.xstats.bpf_response = b.response;
        self.xstats.bpf_other_host = b.other_host;
        self.xstats.backpressure = c.backpressure;
        self.xstats.reply_no_chunk = c.reply_no_frame;
        self.xstats.zero_pool_replies = c.zero_replies;
        self.xstats.idle_spin_ns = c.idle_spin_ns;
        self.xstats.group_commits = c.stores.group_commits;
        self.xstats.group_commit_writes = c.stores.group_commit_writes;
        stats.rx_frames = self.rx_frames;
        stats.tx_frames = self.tx_frames;
        stats.xdp = Some(self.xstats.clone());
        debug_assert!(self.chunks.check().is_ok(), "{:?}", self.chunks.check());
    }

    fn finish(&mut self) {
        let p = std::mem::take(&mut self.partial);
        self.release_frags(p.frags.chunks(), ChunkState::Rx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frags_hold_at_most_max() {
        let mut f = Frags::default();
        for i in 0..MAX_FRAGS as u32 {
            assert!(f.push(i, 100));
        }
        assert!(!f.push(9, 1));
        assert_eq!(f.total(), 100 * MAX_FRAGS);
        assert_eq!(f.chunks(), &[0, 1, 2, 3, 4]);
    }
}
