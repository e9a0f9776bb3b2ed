//! The null backend: reads return zeros, writes are dropped. It measures the
//! datapath without any disk cost.
#![forbid(unsafe_code)]

use std::io;

/// A store with no storage.
#[derive(Debug)]
pub struct NullDisk {
    sectors: u64,
}

impl NullDisk {
    /// A null store of `sectors`.
    pub fn new(sectors: u64) -> NullDisk {
        NullDisk { sectors }
    }

    /// Capacity.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Zero-fill.
    pub fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }

    /// Drop.
    pub fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }
}
