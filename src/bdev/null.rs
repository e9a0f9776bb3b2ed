//! The null store: reads return zeros, writes are dropped. It measures the
//! datapath without any disk cost.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::{
    Bdev, BlockOp, BlockReq, BlockResult, Chan, Channel, ChannelCx, Extent, Geometry, Segs, Submit,
    Tag,
};

/// A store with no storage.
#[derive(Debug)]
pub struct NullDisk {
    extent: Arc<Extent>,
}

impl NullDisk {
    /// A null store exporting `extent`.
    pub fn new(extent: Extent) -> NullDisk {
        NullDisk {
            extent: Arc::new(extent),
        }
    }
}

impl Bdev for NullDisk {
    fn extent(&self) -> &Arc<Extent> {
        &self.extent
    }

    fn store_sectors(&self) -> Option<io::Result<u64>> {
        None
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            mem_align: 1,
            reads_zero: true,
        }
    }

    fn open_channel(&self, _cx: &ChannelCx) -> io::Result<Chan> {
        Ok(Chan::boxed(NullChannel))
    }
}

/// Completes everything during the submit.
#[derive(Debug)]
pub struct NullChannel;

impl Channel for NullChannel {
    #[allow(unsafe_code)]
    unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, _tag: Tag) -> Submit {
        if req.op == BlockOp::Read {
            for s in segs.as_slice() {
                // SAFETY: the caller lends each segment, writable, for the
                // duration of the call (the submit contract).
                unsafe { std::ptr::write_bytes(s.ptr, 0, s.len as usize) };
            }
        }
        Submit::Done(Ok(()))
    }

    fn end_batch(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn reap(&mut self, _done: &mut dyn FnMut(Tag, BlockResult)) -> usize {
        0
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        0
    }
}
