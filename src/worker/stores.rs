//! A worker's channels, one per store it serves, and which export uses
//! which.
//!
//! Requests name their store by its index in this table, not by the
//! engine's export index, so the export set can change under requests in
//! flight: a store that leaves the set is kept (retiring) until its last
//! request is reaped, and the others never wait. A store that stays (the
//! same `Arc<dyn Bdev>`) keeps its channel.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use tracing::debug;

use crate::bdev::{Bdev, BlockResult, ChannelCounters, ChannelCx, Queue, Tag};

/// One store's channel.
#[derive(Debug)]
pub struct Store {
    /// The device (kept to recognise it across export sets).
    pub bdev: Arc<dyn Bdev>,
    /// This worker's queue to it.
    pub chan: Queue,
    /// READs are zeros (answered from a zero pool when the datapath has one).
    pub reads_zero: bool,
    /// Still in the export set (false: retiring, dropped once drained).
    pub live: bool,
}

/// The table.
#[derive(Debug)]
pub struct Stores {
    slots: Vec<Option<Store>>,
    /// Engine export index -> slot.
    by_export: Vec<u16>,
    cx: ChannelCx,
    /// Counters of channels already dropped.
    retired: ChannelCounters,
    retiring: usize,
}

fn same(a: &Arc<dyn Bdev>, b: &Arc<dyn Bdev>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Stores {
    /// Channels on `disks` (in export order) for a worker offering `cx`.
    pub fn open(disks: &[Arc<dyn Bdev>], cx: ChannelCx) -> io::Result<Stores> {
        let mut s = Stores {
            slots: Vec::new(),
            by_export: Vec::new(),
            cx,
            retired: ChannelCounters::default(),
            retiring: 0,
        };
        s.set(disks)?;
        Ok(s)
    }

    /// Serve `disks` (in export order) from now on. Stores kept keep their
    /// channel; new ones get one (on failure nothing changes); the others
    /// retire. Requests already in flight or waiting complete on the
    /// store they were given.
    pub fn set(&mut self, disks: &[Arc<dyn Bdev>]) -> io::Result<()> {
        let mut opened: Vec<(usize, Store)> = Vec::new();
        for (e, d) in disks.iter().enumerate() {
            let kept = self
                .slots
                .iter()
                .flatten()
                .any(|s| s.live && same(&s.bdev, d));
            let earlier = disks[..e].iter().any(|o| same(o, d));
            if kept || earlier {
                continue;
            }
            let chan = d.open_queue(&self.cx)?;
            opened.push((
                e,
                Store {
                    bdev: Arc::clone(d),
                    chan,
                    reads_zero: d.geometry().reads_zero,
                    live: true,
                },
            ));
        }
        // Retire the stores that left the set.
        for s in self.slots.iter_mut().flatten() {
            if s.live && !disks.iter().any(|d| same(&s.bdev, d)) {
                s.live = false;
                self.retiring += 1;
            }
        }
        for (_, store) in opened {
            match self.slots.iter().position(Option::is_none) {
                Some(i) => self.slots[i] = Some(store),
                None => self.slots.push(Some(store)),
            }
        }
        self.by_export = disks
            .iter()
            .map(|d| {
                self.slots
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.live && same(&s.bdev, d)))
                    .expect("every store of the set has a live slot") as u16
            })
            .collect();
        Ok(())
    }

    /// The store of engine export `export`.
    #[inline]
    pub fn of_export(&self, export: usize) -> u16 {
        self.by_export[export]
    }

    /// Store `i`.
    #[inline]
    pub fn get_mut(&mut self, i: u16) -> Option<&mut Store> {
        self.slots.get_mut(usize::from(i))?.as_mut()
    }

    /// Start everything queued on every channel.
    pub fn end_batch(&mut self) -> io::Result<()> {
        for s in self.slots.iter_mut().flatten() {
            s.chan.end_batch()?;
        }
        Ok(())
    }

    /// Reap every channel: `done(store, tag, result)` per completion.
    #[inline(always)]
    pub fn reap(&mut self, mut done: impl FnMut(u16, Tag, BlockResult)) -> usize {
        let mut n = 0;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(s) = s {
                n += s.chan.reap(|t, r| done(i as u16, t, r));
            }
        }
        n
    }

    /// Drop retiring stores with nothing in flight; `waiting(store)` says
    /// whether requests not yet submitted still name it.
    pub fn sweep(&mut self, waiting: impl Fn(u16) -> bool) {
        if self.retiring == 0 {
            return;
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let done = slot
                .as_ref()
                .is_some_and(|s| !s.live && s.chan.in_flight() == 0 && !waiting(i as u16));
            if done {
                if let Some(s) = slot.take() {
                    self.retired += s.chan.counters();
                    self.retiring -= 1;
                    debug!(store = i, "retired store drained: channel closed");
                }
            }
        }
    }

    /// Requests the channels hold.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.chan.in_flight())
            .sum()
    }

    /// Descriptors to wait on for completions.
    pub fn poll_fds(&self, out: &mut Vec<RawFd>) {
        out.extend(self.slots.iter().flatten().filter_map(|s| s.chan.poll_fd()));
    }

    /// Counters of every channel this worker had.
    pub fn counters(&self) -> ChannelCounters {
        let mut c = self.retired;
        for s in self.slots.iter().flatten() {
            c += s.chan.counters();
        }
        c
    }

    /// Some store reads zeros.
    pub fn any_reads_zero(&self) -> bool {
        self.slots.iter().flatten().any(|s| s.reads_zero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::{BlockReq, Chan, Channel, Extent, Geometry, Segs, Submit};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store whose channel completes one request per reap.
    #[derive(Debug)]
    struct Held {
        extent: Arc<Extent>,
        opened: AtomicUsize,
    }

    impl Default for Held {
        fn default() -> Held {
            Held {
                extent: Arc::new(Extent::fixed(8)),
                opened: AtomicUsize::new(0),
            }
        }
    }

    #[derive(Debug, Default)]
    struct HeldChan {
        queued: Vec<Tag>,
    }

    impl Bdev for Held {
        fn extent(&self) -> &Arc<Extent> {
            &self.extent
        }
        fn store_sectors(&self) -> Option<io::Result<u64>> {
            None
        }
        fn geometry(&self) -> Geometry {
            Geometry {
                mem_align: 1,
                reads_zero: false,
            }
        }
        fn open_channel(&self, _cx: &ChannelCx) -> io::Result<Chan> {
            self.opened.fetch_add(1, Ordering::Relaxed);
            Ok(Chan::boxed(HeldChan::default()))
        }
    }

    impl Channel for HeldChan {
        #[allow(unsafe_code)]
        unsafe fn submit(&mut self, _req: BlockReq, _segs: &Segs, tag: Tag) -> Submit {
            self.queued.push(tag);
            Submit::Queued
        }
        fn end_batch(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn reap(&mut self, done: &mut dyn FnMut(Tag, BlockResult)) -> usize {
            // Completes one request per reap.
            match self.queued.pop() {
                Some(t) => {
                    done(t, Ok(()));
                    1
                }
                None => 0,
            }
        }
        fn poll_fd(&self) -> Option<RawFd> {
            None
        }
        fn in_flight(&self) -> usize {
            self.queued.len()
        }
    }

    fn submit(s: &mut Stores, store: u16, tag: Tag) {
        let req = BlockReq {
            op: crate::bdev::BlockOp::Flush,
            offset: 0,
            len: 0,
        };
        let st = s.get_mut(store).unwrap();
        // SAFETY: a flush names no memory.
        #[allow(unsafe_code)]
        let r = unsafe { st.chan.submit(req, &Segs::default(), tag) };
        assert_eq!(r, Submit::Queued);
    }

    /// Removing one export does not wait for, or disturb, another's
    /// requests; the removed store's requests still complete on it, and
    /// its channel closes once they have.
    #[test]
    fn a_removed_store_drains_alone() {
        let (ha, hb) = (Arc::new(Held::default()), Arc::new(Held::default()));
        let a: Arc<dyn Bdev> = ha.clone();
        let b: Arc<dyn Bdev> = hb.clone();
        let mut s =
            Stores::open(&[a.clone(), b.clone()], ChannelCx::without_memory(512, 4)).unwrap();
        let (sa, sb) = (s.of_export(0), s.of_export(1));
        submit(&mut s, sa, 1);
        submit(&mut s, sb, 2);
        submit(&mut s, sb, 3);
        // New set: only `a`, which keeps its channel and its request.
        s.set(std::slice::from_ref(&a)).unwrap();
        assert_eq!(s.of_export(0), sa);
        assert_eq!(s.in_flight(), 3);
        let mut got = Vec::new();
        s.reap(&mut |st, t, _| got.push((st, t)));
        s.sweep(|_| false);
        assert!(s.get_mut(sb).is_some(), "b still has a request in flight");
        s.reap(&mut |st, t, _| got.push((st, t)));
        s.sweep(|_| false);
        assert!(s.get_mut(sb).is_none(), "b drained: closed");
        got.sort();
        assert_eq!(got, vec![(sa, 1), (sb, 2), (sb, 3)]);
        // `b` back: a fresh channel; `a` was never reopened.
        s.set(&[a.clone(), b.clone()]).unwrap();
        assert!(s.get_mut(s.of_export(1)).is_some());
        let opened = |h: &Held| h.opened.load(Ordering::Relaxed);
        assert_eq!((opened(&ha), opened(&hb)), (1, 2));
    }
}
