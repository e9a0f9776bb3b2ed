//! Requests between their submit to a store and their completion.
//!
//! Each in-flight request owns its frame: the frame handle (a datapath's
//! non-`Copy` token for its memory) moves into the slot when the request is
//! submitted and out when its tag comes back, so nothing else can reuse the
//! memory a store is reading into or writing from. The table is a
//! [`Slab`] sized when the worker opens: a full table is backpressure, and
//! a tag a store hands back twice finds nothing (the worker logs it).

use crate::engine::DiskIo;
use crate::slab::Slab;

/// One request in flight.
#[derive(Debug)]
pub struct Req<T> {
    /// The frame the request arrived in; its reply is built there.
    pub frame: T,
    /// The engine's disk action.
    pub io: DiskIo,
}

/// The in-flight table, indexed by tag. A tag is reserved before the
/// submit ([`Slab::reserve`]) so that a store completing during the submit
/// never makes the frame move in and out; the frame moves in
/// ([`Slab::fill`]) only when the store keeps the request.
pub type Inflight<T> = Slab<Req<T>>;
