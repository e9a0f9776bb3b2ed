//! One fixed-capacity slab: the table behind every "N things in flight,
//! named by a small integer" of the daemon (in-flight requests, io_uring and
//! librbd operation slots, bounce slots, frame slots).
//!
//! Why one type: each of those had its own `Box<[Option<T>]>` plus a free
//! list, each with its own idea of what a stale or repeated index does. Here
//! the rules are written once:
//!
//! - capacity fixed at creation; nothing allocates afterwards (the free list
//!   is allocated full and never holds more than the capacity);
//! - insert, remove, reserve and fill are O(1);
//! - keys are checked: removing or filling a key that is not in the state
//!   the call expects returns `None`/`false` (or the value back) instead of
//!   corrupting the free list, so a store that hands back a tag twice is a
//!   logged bug, not a reused frame.
//!
//! A key can be *reserved* before its value exists ([`Slab::reserve`], then
//! [`Slab::fill`] or [`Slab::unreserve`]): the worker names a request by its
//! tag before the store decides whether it keeps the frame, and an io_uring
//! slot number goes into the submission entry before the entry is accepted.
//!
//! Keys are `u32`; the capacity is at most `u32::MAX` entries.

/// A slot's state.
#[derive(Debug)]
enum Entry<T> {
    /// On the free list.
    Free,
    /// Handed out by [`Slab::reserve`], no value yet.
    Reserved,
    /// Holding a value.
    Used(T),
}

/// A fixed-capacity slab (see the module documentation).
#[derive(Debug)]
pub struct Slab<T> {
    entries: Box<[Entry<T>]>,
    /// Free keys; the next one handed out is the last.
    free: Vec<u32>,
}

impl<T> Slab<T> {
    /// Room for `capacity` values (at least one).
    pub fn new(capacity: usize) -> Slab<T> {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Slab {
            entries: (0..capacity).map(|_| Entry::Free).collect(),
            // Lowest keys first: handed out in order 0, 1, 2, ...
            free: (0..capacity as u32).rev().collect(),
        }
    }

    /// Most values held at once.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Keys in use (held or reserved).
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// No key in use.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.free.len() == self.entries.len()
    }

    /// No key free.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Hold `value` under a free key; the value back when full.
    #[inline]
    pub fn insert(&mut self, value: T) -> Result<u32, T> {
        match self.free.pop() {
            Some(k) => {
                self.entries[k as usize] = Entry::Used(value);
                Ok(k)
            }
            None => Err(value),
        }
    }

    /// The key [`reserve`](Self::reserve) or [`insert`](Self::insert) would
    /// hand out next (`None` when full); nothing changes.
    #[inline]
    pub fn next_key(&self) -> Option<u32> {
        self.free.last().copied()
    }

    /// The keys [`reserve`](Self::reserve) or [`insert`](Self::insert)
    /// would hand out next, in that order; nothing changes. A caller that
    /// names memory by key before it knows how many it needs (a receive
    /// batch) takes only those it used afterwards, rather than taking a
    /// whole batch and giving most of it back on every call.
    #[inline]
    pub fn next_keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.free.iter().rev().copied()
    }

    /// Take a free key with no value yet (`None` when full).
    #[inline]
    pub fn reserve(&mut self) -> Option<u32> {
        let k = self.free.pop()?;
        self.entries[k as usize] = Entry::Reserved;
        Some(k)
    }

    /// Put `value` under reserved key `key`; the value back when `key` is
    /// not reserved.
    #[inline]
    pub fn fill(&mut self, key: u32, value: T) -> Result<(), T> {
        match self.entries.get_mut(key as usize) {
            Some(e @ Entry::Reserved) => {
                *e = Entry::Used(value);
                Ok(())
            }
            _ => Err(value),
        }
    }

    /// Give back reserved key `key` unused; false when it was not reserved.
    #[inline]
    pub fn unreserve(&mut self, key: u32) -> bool {
        match self.entries.get_mut(key as usize) {
            Some(e @ Entry::Reserved) => {
                *e = Entry::Free;
                self.free.push(key);
                true
            }
            _ => false,
        }
    }

    /// Take the value of `key` out and free the key (`None`: no value
    /// there; nothing changes).
    #[inline]
    pub fn remove(&mut self, key: u32) -> Option<T> {
        let e = self.entries.get_mut(key as usize)?;
        if !matches!(e, Entry::Used(_)) {
            return None;
        }
        let Entry::Used(v) = std::mem::replace(e, Entry::Free) else {
            unreachable!("checked just above")
        };
        self.free.push(key);
        Some(v)
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: u32) -> Option<&T> {
        match self.entries.get(key as usize)? {
            Entry::Used(v) => Some(v),
            _ => None,
        }
    }

    /// Every held value with its key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(k, e)| match e {
                Entry::Used(v) => Some((k as u32, v)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_keys_are_the_keys_handed_out_next() {
        let mut s: Slab<u8> = Slab::new(4);
        let a = s.insert(1).unwrap();
        let _ = s.insert(2).unwrap();
        s.remove(a);
        let next: Vec<u32> = s.next_keys().collect();
        assert_eq!(next.len(), 3);
        assert_eq!(s.next_key(), next.first().copied());
        let taken: Vec<u32> = (0..3).map(|v| s.insert(v).unwrap()).collect();
        assert_eq!(taken, next, "insert takes them in next_keys order");
        assert_eq!(s.next_keys().count(), 0);
    }

    #[test]
    fn keys_are_checked_and_come_back_once() {
        let mut s = Slab::new(2);
        assert_eq!(s.capacity(), 2);
        let a = s.insert('a').unwrap();
        let b = s.insert('b').unwrap();
        assert_eq!((a, b), (0, 1), "lowest keys first");
        assert!(s.is_full());
        assert_eq!(s.insert('c'), Err('c'));
        assert_eq!(s.get(b), Some(&'b'));
        assert_eq!(s.remove(b), Some('b'));
        assert_eq!(s.remove(b), None, "a key is freed once");
        assert_eq!(s.remove(99), None);
        assert_eq!(s.get(b), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, &'a')]);
        assert_eq!(s.remove(a), Some('a'));
        assert!(s.is_empty());
        // The free list never outgrows the capacity: no allocation.
        let cap = s.free.capacity();
        for _ in 0..10 {
            let k = s.insert('x').unwrap();
            assert!(s.remove(k).is_some());
            assert!(s.remove(k).is_none());
        }
        assert_eq!(s.free.capacity(), cap);
    }

    #[test]
    fn reserve_then_fill_or_unreserve() {
        let mut s = Slab::new(1);
        assert_eq!(s.next_key(), Some(0));
        let k = s.reserve().unwrap();
        assert!(s.is_full());
        assert_eq!(s.reserve(), None);
        assert_eq!(s.get(k), None, "reserved holds no value");
        assert_eq!(s.remove(k), None, "nor can one be removed");
        assert!(s.unreserve(k));
        assert!(!s.unreserve(k), "unreserved once");
        assert_eq!(s.fill(k, 5), Err(5), "a free key cannot be filled");
        let k = s.reserve().unwrap();
        assert_eq!(s.fill(k, 7), Ok(()));
        assert_eq!(s.fill(k, 8), Err(8), "filled once");
        assert!(!s.unreserve(k), "a filled key is not reserved");
        assert_eq!(s.remove(k), Some(7));
        assert!(s.is_empty());
    }
}
