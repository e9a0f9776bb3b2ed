//! Tests only: a memory store whose channel completes every request later,
//! out of order, through an eventfd, as a network store (librbd) does.
//! Filled in by the storage-interface work.
#![allow(unsafe_code)]

use std::io;

use super::{Bdev, Channel, ChannelCx, Geometry};

/// A memory store completing asynchronously.
#[derive(Debug)]
pub struct FakeAsync {
    sectors: u64,
}

impl FakeAsync {
    /// A store of `sectors`, zero-filled.
    pub fn new(sectors: u64) -> FakeAsync {
        FakeAsync { sectors }
    }
}

impl Bdev for FakeAsync {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn probe_sectors(&self) -> Option<io::Result<u64>> {
        None
    }
    fn grow(&self, _sectors: u64) -> u64 {
        self.sectors
    }
    fn geometry(&self) -> Geometry {
        Geometry {
            mem_align: 1,
            reads_zero: false,
            asynchronous: true,
        }
    }
    fn open_channel(&self, _cx: &ChannelCx) -> io::Result<Box<dyn Channel>> {
        Err(io::Error::other("fake-async: not implemented yet"))
    }
}
