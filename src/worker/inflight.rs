//! Requests between their submit to a store and their completion.
//!
//! Each in-flight request owns its frame: the frame handle (a datapath's
//! non-`Copy` token for its memory) moves into the slot when the request is
//! submitted and out when its tag comes back, so nothing else can reuse the
//! memory a store is reading into or writing from. The table is sized when
//! the worker opens and never grows: a full table is backpressure.

use crate::bdev::Tag;
use crate::engine::DiskIo;

/// One request in flight.
#[derive(Debug)]
pub struct Req<T> {
    /// The frame the request arrived in; its reply is built there.
    pub frame: T,
    /// The engine's disk action.
    pub io: DiskIo,
    /// Which store (index in the worker's store table) it went to.
    pub store: u16,
}

/// A fixed-size slab of in-flight requests, indexed by tag.
#[derive(Debug)]
pub struct Inflight<T> {
    slots: Box<[Option<Req<T>>]>,
    free: Vec<Tag>,
}

impl<T> Inflight<T> {
    /// Room for `capacity` requests.
    pub fn new(capacity: usize) -> Inflight<T> {
        let capacity = capacity.max(1);
        Inflight {
            slots: (0..capacity).map(|_| None).collect(),
            free: (0..capacity as Tag).rev().collect(),
        }
    }

    /// Requests in flight.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// No room for another request.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Hold `req`; its tag, or the request back when full.
    pub fn insert(&mut self, req: Req<T>) -> Result<Tag, Req<T>> {
        match self.free.pop() {
            Some(t) => {
                self.slots[t as usize] = Some(req);
                Ok(t)
            }
            None => Err(req),
        }
    }

    /// Take a tag for a request about to be submitted, before its frame
    /// moves in: a store that completes during the submit never makes the
    /// frame move in and out. `None` when full.
    #[inline]
    pub fn reserve(&mut self) -> Option<Tag> {
        self.free.pop()
    }

    /// The store took the request under `tag` (from [`Inflight::reserve`]):
    /// its frame moves in.
    #[inline]
    pub fn fill(&mut self, tag: Tag, req: Req<T>) {
        debug_assert!(self.slots[tag as usize].is_none());
        self.slots[tag as usize] = Some(req);
    }

    /// The request of a reserved `tag` was not taken (done during the
    /// submit, or refused): the tag is free again.
    #[inline]
    pub fn unreserve(&mut self, tag: Tag) {
        debug_assert!(self.slots[tag as usize].is_none());
        self.free.push(tag);
    }

    /// The request of `tag` (None: not in flight, a store's bug: the caller
    /// logs it and carries on).
    #[inline]
    pub fn take(&mut self, tag: Tag) -> Option<Req<T>> {
        let r = self.slots.get_mut(tag as usize)?.take()?;
        self.free.push(tag);
        Some(r)
    }

    /// Requests in flight on store `store`.
    pub fn on_store(&self, store: u16) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|r| r.store == store)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DiskOp;

    fn io() -> DiskIo {
        DiskIo {
            export: 0,
            op: DiskOp::Read,
            offset: 0,
            len: 512,
        }
    }

    #[test]
    fn tags_come_back_once() {
        let mut f = Inflight::new(2);
        let a = f
            .insert(Req {
                frame: 'a',
                io: io(),
                store: 0,
            })
            .unwrap();
        let b = f
            .insert(Req {
                frame: 'b',
                io: io(),
                store: 1,
            })
            .unwrap();
        assert!(f.is_full());
        assert!(f
            .insert(Req {
                frame: 'c',
                io: io(),
                store: 0
            })
            .is_err());
        assert_eq!(f.on_store(1), 1);
        assert_eq!(f.take(b).unwrap().frame, 'b');
        assert!(f.take(b).is_none(), "a tag completes once");
        assert_eq!(f.take(a).unwrap().frame, 'a');
        assert!(f.is_empty());
        assert!(f.take(99).is_none());
    }
}
