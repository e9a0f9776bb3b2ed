//! What `status` reports: the JSON [`Status`] and where it is read from
//! ([`Sources`]: the server's [`Inventory`] and the counters workers
//! publish, lock-free snapshots; nothing here touches the request path).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use super::Request;
use crate::server::Inventory;
use crate::stats::WorkerStats;

/// One export as `status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportStatus {
    /// Shelf.
    pub shelf: u16,
    /// Slot.
    pub slot: u8,
    /// Capacity in sectors.
    pub sectors: u64,
    /// Read-only.
    pub read_only: bool,
    /// Config string (lossy UTF-8).
    pub config: String,
    /// Mac Mask list.
    pub mac_mask: Vec<String>,
    /// Reserve list.
    pub reserve: Vec<String>,
    /// Backing store (path, or `null:BYTES`).
    #[serde(default)]
    pub source: String,
    /// Interfaces it is served on.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// First sector in the store.
    #[serde(default)]
    pub offset: u64,
    /// Operator-fixed length (does not follow the store's size).
    #[serde(default)]
    pub fixed_length: bool,
    /// O_DIRECT.
    #[serde(default)]
    pub direct: bool,
    /// Writes acknowledged from the page cache.
    #[serde(default)]
    pub writeback: bool,
    /// Ceph cluster fsid (rbd: exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_fsid: Option<String>,
    /// Requests in flight in the store's client library (rbd: exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_in_flight: Option<u64>,
    /// The gateway lease (rbd: exports; docs/fencing.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::bdev::rbd::lease::LeaseStatus>,
}

/// One served interface as `status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IfaceStatus {
    /// Name.
    pub name: String,
    /// "xdp" or "afpacket".
    pub datapath: String,
    /// XDP attach mode ("native", "skb"), XDP only.
    pub xdp_mode: Option<String>,
    /// MTU at start-up.
    pub mtu: u32,
    /// Workers (queues) serving it.
    pub queues: usize,
    /// Exports served on it.
    pub exports: Vec<String>,
    /// What it is served with (datapath, AF_XDP bind) and which kernel
    /// features it goes without, each with the release that brought it.
    #[serde(default)]
    pub choice: String,
}

/// Something configured but not served (`status`): an export that
/// cannot open, an interface missing ("waiting for IF"), a shelf.slot
/// another target already answers for on an interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotServingStatus {
    /// "export", "interface" or "duplicate".
    pub kind: String,
    /// `e1.2`, the interface, or `e1.2 on IF`.
    pub name: String,
    /// Why.
    pub reason: String,
    /// Seconds since it was set aside.
    pub since_secs: u64,
    /// Seconds to the next try (null: on a reload only).
    pub retry_in_secs: Option<u64>,
    /// Tries that failed.
    pub attempts: u32,
}

/// A duplicate seen while serving: another target answered for a
/// shelf.slot served here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DuplicateStatus {
    /// Interface.
    pub iface: String,
    /// Shelf.
    pub shelf: u16,
    /// Slot.
    pub slot: u8,
    /// The last MAC that answered.
    pub mac: String,
    /// Responses seen.
    pub count: u64,
    /// Seconds since the last one.
    pub last_secs_ago: u64,
}

/// The answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Process id.
    pub pid: u32,
    /// xblade version.
    #[serde(default)]
    pub version: String,
    /// Seconds since start.
    #[serde(default)]
    pub uptime_secs: u64,
    /// Configuration file (`serve --config`), if any.
    #[serde(default)]
    pub config: Option<String>,
    /// Successful reloads.
    #[serde(default)]
    pub reloads: u64,
    /// Changes of the configuration file the last reload could not apply
    /// (they take a restart): the running values differ from the file's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Datapath in use.
    pub datapath: String,
    /// Exports.
    pub exports: Vec<ExportStatus>,
    /// Interfaces.
    #[serde(default)]
    pub interfaces: Vec<IfaceStatus>,
    /// Per-worker counters ([`WorkerStats`] as JSON) plus `name`,
    /// `datapath`, `core` (pinned core or null) and `exports`.
    pub workers: Vec<serde_json::Value>,
    /// Configured but not served, with why (retried).
    #[serde(default)]
    pub not_serving: Vec<NotServingStatus>,
    /// Duplicates seen while serving.
    #[serde(default)]
    pub duplicates: Vec<DuplicateStatus>,
}

/// What the control plane reads and where it sends commands.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The server's inventory (replaced on every change).
    pub inventory: Arc<ArcSwap<Inventory>>,
    /// Where `resize`/`reload` go; `None` refuses them.
    pub requests: Option<Sender<Request>>,
    /// Configuration file, if any.
    pub config: Option<PathBuf>,
    /// Successful reloads (bumped by the service loop).
    pub reloads: Arc<AtomicU64>,
    /// What the last reload left for a restart (set by the service loop).
    pub pending_restart: Arc<ArcSwap<Vec<String>>>,
    /// Start time.
    pub started: Instant,
}

impl Sources {
    /// The status as the socket answers it.
    pub fn status(&self) -> Status {
        let inv = self.inventory.load();
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            config: self.config.as_ref().map(|p| p.display().to_string()),
            reloads: self.reloads.load(Ordering::Relaxed),
            pending_restart: (**self.pending_restart.load()).clone(),
            datapath: inv.datapath.clone(),
            exports: inv
                .exports
                .iter()
                .map(|v| {
                    let e = &v.export;
                    let s = e.state();
                    let store = v.disk.store_status();
                    ExportStatus {
                        shelf: e.info.shelf,
                        slot: e.info.slot,
                        sectors: s.sectors,
                        read_only: s.read_only,
                        config: String::from_utf8_lossy(&s.config).into_owned(),
                        mac_mask: s.mask.iter().map(|m| m.to_string()).collect(),
                        reserve: s.reserve.iter().map(|m| m.to_string()).collect(),
                        source: v.source.clone(),
                        interfaces: v.interfaces.clone(),
                        offset: v.offset,
                        fixed_length: v.fixed_length,
                        direct: v.direct,
                        writeback: v.writeback,
                        cluster_fsid: store.as_ref().and_then(|s| s.cluster_fsid.clone()),
                        store_in_flight: store.as_ref().map(|s| s.in_flight),
                        lease: store.and_then(|s| s.lease),
                    }
                })
                .collect(),
            interfaces: inv
                .interfaces
                .iter()
                .map(|i| IfaceStatus {
                    name: i.name.clone(),
                    datapath: i.datapath.into(),
                    xdp_mode: i.xdp_mode.map(Into::into),
                    mtu: i.mtu,
                    queues: i.queues,
                    exports: i.exports.clone(),
                    choice: i.choice.clone(),
                })
                .collect(),
            workers: inv
                .workers
                .iter()
                .map(|w| {
                    let mut v = serde_json::to_value(&**w.stats.load()).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("name".into(), w.name.clone().into());
                        o.insert("datapath".into(), w.datapath.into());
                        o.insert("core".into(), w.core.into());
                        o.insert("exports".into(), w.exports.clone().into());
                    }
                    v
                })
                .collect(),
            not_serving: inv
                .not_serving
                .iter()
                .map(|n| NotServingStatus {
                    kind: n.kind.into(),
                    name: n.name.clone(),
                    reason: n.reason.clone(),
                    since_secs: n.since.elapsed().as_secs(),
                    retry_in_secs: n
                        .next_try
                        .map(|t| t.saturating_duration_since(Instant::now()).as_secs()),
                    attempts: n.attempts,
                })
                .collect(),
            duplicates: inv
                .duplicates
                .snapshot()
                .into_iter()
                .map(|d| DuplicateStatus {
                    iface: d.iface,
                    shelf: d.shelf,
                    slot: d.slot,
                    mac: d.mac.to_string(),
                    count: d.count,
                    last_secs_ago: d.last_secs_ago,
                })
                .collect(),
        }
    }

    pub(super) fn workers(&self) -> Vec<WorkerStats> {
        self.inventory
            .load()
            .workers
            .iter()
            .map(|w| (**w.stats.load()).clone())
            .collect()
    }
}
