//! Datapaths: move frames between a NIC, the [`crate::target`] engine and
//! the [`crate::disk`] backends. They hold no request logic of their own.
//!
//! - [`xdp`]: AF_XDP sockets fed by an XDP program, one pinned worker per
//!   (interface, queue), disk I/O through io_uring straight into UMEM.
//! - [`afpacket`]: portable fallback, one worker per interface, batched
//!   `recvmmsg`/`sendmmsg`.
//! - [`socket`]: the raw AF_PACKET socket shared by the datapath and the
//!   initiator tools.
//!
//! Both datapaths take the same [`WorkerSpec`] and obey the same
//! [`Control`] messages.

pub mod afpacket;
pub mod iface;
pub mod socket;
pub mod xdp;

use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::disk::Disk;
use crate::stats::StatsCell;
use crate::target::Export;
use iface::IfaceInfo;

/// Messages from the control plane to a worker.
#[derive(Debug, Clone)]
pub enum Control {
    /// Stop taking frames, finish what is in flight (the current batch;
    /// on XDP also the io_uring operations and their replies) and return.
    Stop,
    /// Send an unsolicited Query Config reply for every export (after a
    /// resize or a config change).
    Announce,
}

/// Everything a worker needs.
#[derive(Debug)]
pub struct WorkerSpec {
    /// Interface served.
    pub iface: IfaceInfo,
    /// Exports served on it.
    pub exports: Vec<Arc<Export>>,
    /// Their backing stores, in the same order.
    pub disks: Vec<Arc<Disk>>,
    /// Control channel.
    pub control: Receiver<Control>,
    /// Where counters go.
    pub stats: StatsCell,
    /// Core to pin the worker to.
    pub core: Option<usize>,
}
