//! Statistics shared between datapath workers and the control plane. Each
//! worker counts in plain integers and publishes a snapshot a few times a
//! second by swapping an `Arc`: readers never block a worker.
#![forbid(unsafe_code)]

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::target::EngineStats;

/// Counters of one worker (one interface, or one queue of it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerStats {
    /// Interface name.
    pub iface: String,
    /// Queue index (0 for AF_PACKET).
    pub queue: u32,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Replies the kernel refused (queue full, link down).
    pub tx_dropped: u64,
    /// Disk operations that failed.
    pub disk_errors: u64,
    /// Disk operations in flight right now.
    pub disk_in_flight: u64,
    /// Engine counters.
    pub engine: EngineStats,
}

/// Where a worker publishes its counters.
pub type StatsCell = Arc<ArcSwap<WorkerStats>>;

/// A fresh cell for `iface`/`queue`.
pub fn new_cell(iface: &str, queue: u32) -> StatsCell {
    Arc::new(ArcSwap::from_pointee(WorkerStats {
        iface: iface.to_string(),
        queue,
        ..Default::default()
    }))
}
