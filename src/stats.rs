//! Statistics shared between datapath workers and the control plane. Each
//! worker counts in plain integers and publishes a snapshot a few times a
//! second by swapping an `Arc`: readers never block a worker.
#![forbid(unsafe_code)]

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::engine::EngineStats;

/// Counters of one worker (one interface, or one queue of it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerStats {
    /// Interface name.
    pub iface: String,
    /// Queue index (0 for AF_PACKET).
    pub queue: u32,
    /// The MAC this worker answers from (per-queue with `--steer`
    /// ntuple/external, else the interface's).
    pub mac: String,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Replies the kernel refused (queue full, link down).
    pub tx_dropped: u64,
    /// AF_PACKET: requests the kernel dropped before the worker saw them,
    /// its socket's receive buffer being full (PACKET_STATISTICS). On XDP
    /// the kernel's drops are in `xdp.rx_dropped` and its neighbours.
    pub rx_kernel_dropped: u64,
    /// Disk operations that failed.
    pub disk_errors: u64,
    /// Disk operations in flight right now.
    pub disk_in_flight: u64,
    /// Times the worker published its counters (a few times a second while
    /// its loop runs: the liveness the systemd watchdog relies on).
    pub publishes: u64,
    /// Engine counters.
    pub engine: EngineStats,
    /// AF_XDP and XDP-program counters (XDP datapath only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpStats>,
}

/// Counters of one AF_XDP queue: the kernel's (`xdp_statistics`), the XDP
/// program's for this rx queue (`bpf_*`), and the worker's own.
#[derive(Debug, Clone, Default, Serialize)]
pub struct XdpStats {
    /// How the program is attached: "native" or "skb".
    pub mode: &'static str,
    /// How the interface's queues are steered to their MACs: "ntuple",
    /// "external", "none", "queue0-only" (`auto` without ntuple rules) or
    /// "single-queue".
    pub steer: &'static str,
    /// The socket is bound in zero-copy mode.
    pub zero_copy: bool,
    /// How the socket is bound: "copy", "copy single-buffer" (a kernel
    /// without XDP_USE_SG), "zero-copy", "zero-copy multi-buffer".
    pub bind: &'static str,
    /// Bound with XDP_USE_SG: frames may span several chunks.
    pub multi_buffer: bool,
    /// Busy polling instead of need_wakeup.
    pub busy_poll: bool,
    /// The UMEM sits on 2 MiB pages (reserved with `vm.nr_hugepages`).
    pub huge_pages: bool,
    /// Kernel: frames dropped for any reason (no room, bad size).
    pub rx_dropped: u64,
    /// Kernel: invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Kernel: invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Kernel: frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Kernel: times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty: u64,
    /// Kernel: times the TX ring was empty on a kick.
    pub tx_ring_empty: u64,
    /// XDP program: frames redirected to this queue's socket.
    pub bpf_redirected: u64,
    /// XDP program: non-AoE frames passed to the stack.
    pub bpf_passed_non_aoe: u64,
    /// XDP program: AoE for shelf.slots not served, passed to the stack.
    pub bpf_passed_foreign: u64,
    /// XDP program: same, dropped (drop_foreign).
    pub bpf_dropped_foreign: u64,
    /// XDP program: AoE with no socket on the queue.
    pub bpf_no_socket: u64,
    /// XDP program: AoE header not linear.
    pub bpf_short: u64,
    /// XDP program: AoE behind a VLAN tag, passed.
    pub bpf_vlan: u64,
    /// XDP program: AoE responses, passed.
    pub bpf_response: u64,
    /// XDP program: AoE to another host's MAC (promiscuous interface),
    /// passed.
    pub bpf_other_host: u64,
    /// Frames of more fragments than the worker handles, dropped.
    pub rx_oversize: u64,
    /// RX descriptors at an unexpected chunk offset, dropped.
    pub rx_bad_desc: u64,
    /// Chunks the worker keeps on the fill ring (grows after drops).
    pub fill_depth: u64,
    /// Times the worker could not restock the fill ring (no free chunk
    /// beyond the reserve).
    pub fill_starved: u64,
    /// Requests held back because the disk budget (slots, bounce slots or
    /// reply chunks) was full; RX pauses meanwhile.
    pub backpressure: u64,
    /// Extra control replies not sent for lack of a free chunk.
    pub reply_no_chunk: u64,
    /// Null-store READs answered from the zero pool (no data zeroed).
    pub zero_pool_replies: u64,
    /// TX kicks (sendto).
    pub tx_kicks: u64,
    /// Kicks or fill wakeups that failed with a link error (down, busy).
    pub wakeup_errors: u64,
    /// Multi-buffer frames received (more than one fragment).
    pub rx_multi_buffer: u64,
    /// Nanoseconds the worker polled its rings with nothing to do before
    /// sleeping (`--spin-us`): CPU that buys latency, not request work.
    /// Subtract it from the thread's CPU time to get the cost of requests.
    pub idle_spin_ns: u64,
    /// fdatasyncs that acknowledged durable page-cache writes (group
    /// commit), and the writes they acknowledged: their ratio is the batch.
    pub group_commits: u64,
    /// Writes acknowledged by those fdatasyncs.
    pub group_commit_writes: u64,
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
