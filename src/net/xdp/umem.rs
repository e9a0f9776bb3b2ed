//! UMEM layout and chunk ownership.
//!
//! The UMEM is `CHUNK_SIZE`-byte chunks. The kernel receives every packet
//! at `chunk + XDP_PACKET_HEADROOM (256) + FRAME_HEADROOM` (the headroom
//! registered with the UMEM), replies go out from the same place, and we pick
//! `FRAME_HEADROOM = 220` so that a frame starts at `chunk + 476` and frame
//! byte 36 (the first sector of an ATA request or reply) sits at
//! `chunk + 512`: 512-aligned, as O_DIRECT wants. A frame longer than the
//! room (`CHUNK_SIZE - 476 = 3620` bytes) spans several chunks (AF_XDP
//! multi-buffer), each fragment again at its chunk + 476.
//!
//! [`ChunkTable`] records who owns each chunk. A chunk is in exactly one
//! [`ChunkState`] at any time and every transition is checked (in debug
//! builds) against the state the caller believes it is in:
//!
//! ```text
//!   Free ──fill──> InFill ──rx──> Rx ──submit──> Disk ──complete──> InTx ──completion──> Free
//!    │                             │ └──reply──────────────────────> InTx
//!    │                             └──drop / unneeded fragment──> Free        Disk ──> Free
//!    └──alloc (reply tails, extra replies)──> Disk | InTx
//!
//!   Zero ──null read reply──> InTx ──completion──> Zero
//! ```
//!
//! A worker serving a null store keeps a pool of `Zero` chunks: their frame
//! area is all zeros and stays so (the kernel only reads them on TX, user
//! space writes only a reply's 36 header bytes into a head, or re-zeroes
//! those 36 bytes of a tail), so a null READ is answered from them without
//! zeroing the data. They never go to the fill ring or the disk; a
//! completed one returns to the pool, not to the free list.
//!
//! While a chunk is `InFill` or `InTx` the kernel owns it and user space
//! must not touch it (in zero-copy mode `InFill` also covers chunks posted
//! to the NIC's RX ring and frames the XDP program passed or dropped, which
//! the kernel recycles for later receives: see [`super::zerocopy`]); `Rx` and `Disk` chunks belong to the worker (`Disk`:
//! to the io_uring operation in flight, which the worker must not touch
//! either until the completion).

use std::fmt;

/// Bytes per UMEM chunk (xsk-rs accepts only 2048 and 4096).
pub const CHUNK_SIZE: u32 = 4096;
/// `frame_headroom` given to xsk-rs (on top of the kernel's 256).
pub const FRAME_HEADROOM: u32 = 220;
/// Offset of frame byte 0 in its chunk.
pub const DATA_OFFSET: usize = 256 + FRAME_HEADROOM as usize;
/// Bytes of frame one chunk holds.
pub const ROOM: usize = CHUNK_SIZE as usize - DATA_OFFSET;

const _: () = assert!((DATA_OFFSET + crate::wire::ATA_DATA_OFFSET) % 512 == 0);

/// Who owns a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkState {
    /// On the worker's free list.
    Free,
    /// Posted to the fill ring: the kernel's until it shows up on RX.
    InFill,
    /// Received; the worker is handling it.
    Rx,
    /// Under an io_uring operation: nobody else may touch it.
    Disk,
    /// Posted (or queued) for TX: the kernel's until it completes.
    InTx,
    /// In the zero pool (null stores): frame area all zeros.
    Zero,
}

impl ChunkState {
    /// Every state, in table order.
    #[cfg(test)]
    pub const ALL: [ChunkState; 6] = [
        ChunkState::Free,
        ChunkState::InFill,
        ChunkState::Rx,
        ChunkState::Disk,
        ChunkState::InTx,
        ChunkState::Zero,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Whether `self -> to` is one of the transitions in the module docs.
    #[inline]
    pub fn may_become(self, to: ChunkState) -> bool {
        use ChunkState::*;
        matches!(
            (self, to),
            (Free, InFill | Disk | InTx)
                | (InFill, Rx | Free)
                | (Rx, Disk | InTx | Free)
                | (Disk, InTx | Free)
                | (InTx, Free | Zero)
                | (Zero, InTx)
        )
    }
}

/// One state per chunk plus the free list and the zero pool. Sized once;
/// never allocates after [`ChunkTable::with_zero_pool`].
pub struct ChunkTable {
    state: Box<[ChunkState]>,
    free: Vec<u32>,
    /// Zero pool chunks not in use.
    zero: Vec<u32>,
    /// Chunks from here up are the zero pool.
    pool_lo: u32,
    counts: [u32; 6],
}

impl fmt::Debug for ChunkTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkTable")
            .field("chunks", &self.state.len())
            .field("counts", &self.counts)
            .finish()
    }
}

impl ChunkTable {
    /// `n` chunks: the last `pool` (at most `n`) in the zero pool, the
    /// others free. The caller zeroes the pool's frame areas.
    pub fn with_zero_pool(n: u32, pool: u32) -> ChunkTable {
        let pool_lo = n - pool.min(n);
        let mut counts = [0; 6];
        counts[ChunkState::Free.index()] = pool_lo;
        counts[ChunkState::Zero.index()] = n - pool_lo;
        let mut state = vec![ChunkState::Free; n as usize];
        state[pool_lo as usize..].fill(ChunkState::Zero);
        ChunkTable {
            state: state.into_boxed_slice(),
            // Popped from the end: hand out low chunks first.
            free: (0..pool_lo).rev().collect(),
            zero: (pool_lo..n).rev().collect(),
            pool_lo,
            counts,
        }
    }

    /// The zero pool's chunks, whether in the pool or out on TX.
    pub fn pool(&self) -> std::ops::Range<u32> {
        self.pool_lo..self.len()
    }

    /// Zero pool chunks available.
    #[inline]
    pub fn zero_len(&self) -> usize {
        self.zero.len()
    }

    /// Take a chunk of the zero pool into state `to`.
    #[inline]
    pub fn take_zero(&mut self, to: ChunkState) -> Option<u32> {
        let c = self.zero.pop()?;
        self.set(c, ChunkState::Zero, to);
        Some(c)
    }

    /// Number of chunks.
    pub fn len(&self) -> u32 {
        self.state.len() as u32
    }

    /// Chunks in `s`.
    #[inline]
    pub fn count(&self, s: ChunkState) -> u32 {
        self.counts[s.index()]
    }

    /// Chunks on the free list.
    #[inline]
    pub fn free_len(&self) -> usize {
        self.free.len()
    }

    /// Take a free chunk into state `to`.
    #[inline]
    pub fn alloc(&mut self, to: ChunkState) -> Option<u32> {
        let c = self.free.pop()?;
        self.set(c, ChunkState::Free, to);
        Some(c)
    }

    /// Move `c` from `from` to `to` (not for `to == Free`: use [`release`](Self::release)).
    #[inline]
    pub fn transition(&mut self, c: u32, from: ChunkState, to: ChunkState) {
        debug_assert_ne!(to, ChunkState::Free, "use release() to free chunk {c}");
        self.set(c, from, to);
    }

    /// Return `c`, in state `from`, to the free list, or to the zero pool
    /// if it belongs there.
    #[inline]
    pub fn release(&mut self, c: u32, from: ChunkState) {
        if c >= self.pool_lo {
            self.set(c, from, ChunkState::Zero);
            self.zero.push(c);
        } else {
            self.set(c, from, ChunkState::Free);
            self.free.push(c);
        }
    }

    fn set(&mut self, c: u32, from: ChunkState, to: ChunkState) {
        let cur = self.state[c as usize];
        debug_assert_eq!(
            cur, from,
            "chunk {c}: expected {from:?} for {from:?} -> {to:?}, but it is {cur:?}"
        );
        debug_assert!(
            from.may_become(to),
            "chunk {c}: illegal transition {from:?} -> {to:?}"
        );
        self.counts[cur.index()] -= 1;
        self.counts[to.index()] += 1;
        self.state[c as usize] = to;
    }

    /// Recount every state from scratch and compare with the running
    /// counts and the free list (tests and debug checks).
    pub fn check(&self) -> Result<(), String> {
        let mut counts = [0u32; 6];
        for (c, s) in self.state.iter().enumerate() {
            counts[s.index()] += 1;
            let pooled = c as u32 >= self.pool_lo;
            // Pool chunks are only ever in the pool or on TX; no other
            // chunk is ever Zero.
            let ok = if pooled {
                matches!(s, ChunkState::Zero | ChunkState::InTx)
            } else {
                *s != ChunkState::Zero
            };
            if !ok {
                return Err(format!("chunk {c} (pool: {pooled}) is {s:?}"));
            }
        }
        if counts != self.counts {
            return Err(format!("counts {:?} != recount {counts:?}", self.counts));
        }
        if counts.iter().sum::<u32>() != self.len() {
            return Err("states do not sum to the chunk count".into());
        }
        if self.free.len() != counts[ChunkState::Free.index()] as usize {
            return Err(format!(
                "free list has {} chunks, {} are Free",
                self.free.len(),
                counts[0]
            ));
        }
        if let Some(c) = self
            .free
            .iter()
            .find(|&&c| self.state[c as usize] != ChunkState::Free)
        {
            return Err(format!("chunk {c} is on the free list but not Free"));
        }
        if self.zero.len() != counts[ChunkState::Zero.index()] as usize
            || self
                .zero
                .iter()
                .any(|&c| self.state[c as usize] != ChunkState::Zero)
        {
            return Err("the zero pool list and the Zero chunks differ".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// A model of the worker and the kernel around a chunk table: fill ring,
    /// RX ring, disk operations, TX ring, completion ring.
    #[derive(Default)]
    struct Model {
        fill: VecDeque<u32>,
        rx: VecDeque<u32>,
        held: Vec<u32>,
        disk: Vec<u32>,
        tx: VecDeque<u32>,
        comp: VecDeque<u32>,
    }

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Fill(u8),
        KernelRx(u8),
        Consume(u8),
        Drop(u8),
        Submit(u8),
        Reply(u8),
        AllocTail,
        AllocExtraReply,
        ZeroReply(u8),
        Complete(u8),
        CompleteWrite(u8),
        KernelTx(u8),
        Reap(u8),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            any::<u8>().prop_map(Event::Fill),
            any::<u8>().prop_map(Event::KernelRx),
            any::<u8>().prop_map(Event::Consume),
            any::<u8>().prop_map(Event::Drop),
            any::<u8>().prop_map(Event::Submit),
            any::<u8>().prop_map(Event::Reply),
            Just(Event::AllocTail),
            Just(Event::AllocExtraReply),
            any::<u8>().prop_map(Event::ZeroReply),
            any::<u8>().prop_map(Event::Complete),
            any::<u8>().prop_map(Event::CompleteWrite),
            any::<u8>().prop_map(Event::KernelTx),
            any::<u8>().prop_map(Event::Reap),
        ]
    }

    fn pick(v: &mut Vec<u32>, k: u8) -> Option<u32> {
        if v.is_empty() {
            None
        } else {
            let i = k as usize % v.len();
            Some(v.swap_remove(i))
        }
    }

    impl Model {
        fn apply(&mut self, t: &mut ChunkTable, e: Event) {
            use ChunkState::*;
            match e {
                Event::Fill(n) => {
                    for _ in 0..n % 8 {
                        if let Some(c) = t.alloc(InFill) {
                            self.fill.push_back(c);
                        }
                    }
                }
                Event::KernelRx(n) => {
                    for _ in 0..n % 8 {
                        if let Some(c) = self.fill.pop_front() {
                            self.rx.push_back(c);
                        }
                    }
                }
                Event::Consume(n) => {
                    for _ in 0..n % 8 {
                        if let Some(c) = self.rx.pop_front() {
                            t.transition(c, InFill, Rx);
                            self.held.push(c);
                        }
                    }
                }
                Event::Drop(k) => {
                    if let Some(c) = pick(&mut self.held, k) {
                        t.release(c, Rx);
                    }
                }
                Event::Submit(k) => {
                    if let Some(c) = pick(&mut self.held, k) {
                        t.transition(c, Rx, Disk);
                        self.disk.push(c);
                    }
                }
                Event::Reply(k) => {
                    if let Some(c) = pick(&mut self.held, k) {
                        t.transition(c, Rx, InTx);
                        self.tx.push_back(c);
                    }
                }
                Event::AllocTail => {
                    if let Some(c) = t.alloc(Disk) {
                        self.disk.push(c);
                    }
                }
                Event::AllocExtraReply => {
                    if let Some(c) = t.alloc(InTx) {
                        self.tx.push_back(c);
                    }
                }
                Event::ZeroReply(n) => {
                    // A null READ reply of 1 to 3 pool chunks.
                    for _ in 0..1 + n % 3 {
                        if let Some(c) = t.take_zero(InTx) {
                            self.tx.push_back(c);
                        }
                    }
                }
                Event::Complete(k) => {
                    if let Some(c) = pick(&mut self.disk, k) {
                        t.transition(c, Disk, InTx);
                        self.tx.push_back(c);
                    }
                }
                Event::CompleteWrite(k) => {
                    if let Some(c) = pick(&mut self.disk, k) {
                        t.release(c, Disk);
                    }
                }
                Event::KernelTx(n) => {
                    for _ in 0..n % 8 {
                        if let Some(c) = self.tx.pop_front() {
                            self.comp.push_back(c);
                        }
                    }
                }
                Event::Reap(n) => {
                    for _ in 0..n % 8 {
                        if let Some(c) = self.comp.pop_front() {
                            t.release(c, InTx);
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn states_are_conserved(
            pool in 0u32..16,
            events in proptest::collection::vec(event(), 0..400),
        ) {
            let n = 64;
            let mut t = ChunkTable::with_zero_pool(n, pool);
            let mut m = Model::default();
            for e in events {
                m.apply(&mut t, e);
                t.check().map_err(TestCaseError::fail)?;
                let total: u32 = ChunkState::ALL.iter().map(|&s| t.count(s)).sum();
                prop_assert_eq!(total, n);
                prop_assert_eq!(t.count(ChunkState::InFill) as usize, m.fill.len() + m.rx.len());
                prop_assert_eq!(t.count(ChunkState::Rx) as usize, m.held.len());
                prop_assert_eq!(t.count(ChunkState::Disk) as usize, m.disk.len());
                prop_assert_eq!(t.count(ChunkState::InTx) as usize, m.tx.len() + m.comp.len());
                // Pool chunks go to TX and back, never to the fill ring,
                // the worker's hands or the disk.
                let pooled = t.pool();
                prop_assert!(m.fill.iter().chain(&m.rx).chain(&m.held).chain(&m.disk).all(|c| !pooled.contains(c)));
                let out = m.tx.iter().chain(&m.comp).filter(|c| pooled.contains(c)).count();
                prop_assert_eq!(t.zero_len() + out, pool as usize);
            }
        }
    }

    #[test]
    fn layout_puts_sector_data_on_512() {
        assert_eq!(DATA_OFFSET, 476);
        assert_eq!(ROOM, 3620);
        assert_eq!((DATA_OFFSET + 36) % 512, 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "expected Rx")]
    fn wrong_state_is_caught() {
        let mut t = ChunkTable::with_zero_pool(4, 0);
        let c = t.alloc(ChunkState::InFill).unwrap();
        t.transition(c, ChunkState::Rx, ChunkState::Disk);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "illegal transition")]
    fn illegal_transition_is_caught() {
        let mut t = ChunkTable::with_zero_pool(4, 0);
        let c = t.alloc(ChunkState::InTx).unwrap();
        t.transition(c, ChunkState::InTx, ChunkState::Rx);
    }
}
