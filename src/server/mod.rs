//! Starting, changing and stopping a target: open every backing store and
//! interface first (so a bad value fails before anything serves), then the
//! workers: on the XDP datapath one per (interface, queue) behind an XDP
//! program attached to the interface, on AF_PACKET one per interface.
//! `auto` tries XDP per interface and falls back to AF_PACKET, saying why.
//!
//! Day-2 operations run here too, on the thread that owns the [`Server`]:
//!
//! - [`Server::reload`] applies a new configuration live. Everything the
//!   new one needs (backing stores, interfaces, sockets, XDP programs) is
//!   opened first; any failure rejects it whole and nothing changes. Then
//!   each worker whose export set changes gets a [`Control::Reconfigure`]
//!   with its new lists of `Arc<Export>`/`Arc<dyn Bdev>` and swaps them between
//!   batches without waiting for I/O: requests in flight complete on the
//!   store they started on, and a store that leaves the set is closed only
//!   once its last request is reaped (`worker/stores.rs`), so none completes
//!   against a store that is gone. Workers whose set does not change are
//!   not disturbed.
//!   Three steps: `plan.rs` (what changes, from configurations alone),
//!   `reload.rs` (prepare: open; commit: put in force).
//! - [`Server::resize`] and [`Server::check_sizes`] grow an export whose
//!   backing store grew (never shrink it) and announce it.
//! - [`Server::health`] tells the service loop whether every worker thread
//!   runs and still publishes its counters (the systemd watchdog);
//!   [`Server::worker_exits`] wakes it when a worker thread ends.
//!
//! `open.rs` holds what a start or a reload opens, and the records of
//! what runs.
//!
//! What cannot serve is set aside rather than fatal (`converge.rs`): the
//! configuration wanted ([`Server::wanted`]) and the one in force
//! ([`Server::cfg`]) differ by the exports that cannot open, the
//! interfaces that are missing (or came back under a new index), and the
//! (interface, shelf.slot) pairs another target already answers for
//! (`watch.rs`). Each is retried on a backoff, on a link event and on a
//! reload, and `status` shows it with its reason. `all_or_nothing` keeps
//! the strict start and reload.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use thiserror::Error;
use tracing::{info, warn};

use crate::bdev::{Bdev, DiskError, Source};
use crate::config::Config;
use crate::engine::Export;
use crate::net::iface::IfaceError;
use crate::net::xdp::XdpError;
use crate::net::Control;
use crate::stats::StatsCell;

mod converge;
mod open;
mod plan;
mod reload;
mod watch;

pub use converge::NotServingView;
use converge::Pending;
pub use watch::DupBoard;
use watch::Watch;

use open::{hostname, ExportRec, IfaceRec, ReadyWorker, WorkerRec};

/// Why a target could not start (or a reload was refused).
#[derive(Debug, Error)]
pub enum StartError {
    /// Backing store.
    #[error("export {shelf}.{slot}")]
    Disk {
        /// Shelf.
        shelf: u16,
        /// Slot.
        slot: u8,
        /// Cause.
        source: DiskError,
    },
    /// Interface.
    #[error("export {shelf}.{slot}: interface {iface}")]
    Iface {
        /// Shelf.
        shelf: u16,
        /// Slot.
        slot: u8,
        /// Interface.
        iface: String,
        /// Cause.
        source: IfaceError,
    },
    /// Another target already answers for this shelf.slot on this link.
    #[error("export {shelf}.{slot}: another target already answers for e{shelf}.{slot} on {iface} (MAC {mac}): refused, so that initiators do not interleave writes over two different disks")]
    Duplicate {
        /// Shelf.
        shelf: u16,
        /// Slot.
        slot: u8,
        /// Interface.
        iface: String,
        /// The MAC that answered.
        mac: crate::wire::MacAddr,
    },
    /// Putting the configuration in force failed half-way (a worker that
    /// did not take its new set).
    #[error("{0}")]
    Partly(String),
    /// Socket.
    #[error("interface {iface}")]
    Socket {
        /// Interface.
        iface: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The XDP datapath was required and could not start.
    #[error("interface {iface}: XDP datapath")]
    Xdp {
        /// Interface.
        iface: String,
        /// Cause.
        source: XdpError,
    },
    /// Interface MTU too small to carry a sector.
    #[error("interface {iface}: MTU {mtu} cannot carry one 512-byte sector (need at least 548)")]
    SmallMtu {
        /// Interface.
        iface: String,
        /// MTU.
        mtu: u32,
    },
}

/// How long a reload waits for the workers to take their new export sets.
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker that has not published its counters for this long (it does so
/// every 250 ms) is stuck: the watchdog is no longer pinged.
const STALL_AFTER: Duration = Duration::from_secs(5);

/// What the control plane shows: a snapshot the server replaces after
/// every change (read lock-free by `xblade status`, never by the workers).
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Datapath in use: "xdp", "afpacket", "xdp+afpacket", or "none".
    pub datapath: String,
    /// Exports.
    pub exports: Vec<ExportView>,
    /// Interfaces served.
    pub interfaces: Vec<IfaceView>,
    /// Worker threads.
    pub workers: Vec<WorkerView>,
    /// What is configured but not served, with why (an export that cannot
    /// open, an interface missing, a duplicate refused).
    pub not_serving: Vec<NotServingView>,
    /// Duplicates seen while serving (read at query time).
    pub duplicates: DupBoard,
}

/// One export as the control plane shows it.
#[derive(Debug, Clone)]
pub struct ExportView {
    /// The export (its state is read at query time).
    pub export: Arc<Export>,
    /// Backing store (path or `null:BYTES`).
    pub source: String,
    /// Interfaces it is served on.
    pub interfaces: Vec<String>,
    /// First sector in the store.
    pub offset: u64,
    /// Operator-fixed length: the export does not follow its store.
    pub fixed_length: bool,
    /// O_DIRECT.
    pub direct: bool,
    /// Writes acknowledged from the page cache.
    pub writeback: bool,
    /// The store (network stores report their cluster and requests in
    /// flight at query time).
    pub disk: Arc<dyn Bdev>,
}

/// One served interface.
#[derive(Debug, Clone)]
pub struct IfaceView {
    /// Name.
    pub name: String,
    /// "xdp" or "afpacket".
    pub datapath: &'static str,
    /// XDP attach mode ("native", "skb").
    pub xdp_mode: Option<&'static str>,
    /// MTU at start-up.
    pub mtu: u32,
    /// Workers (queues) serving it.
    pub queues: usize,
    /// Exports served on it ("e1.2").
    pub exports: Vec<String>,
    /// What it is served with and which kernel features it goes without.
    pub choice: String,
}

/// One worker thread.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Thread name suffix (`eth1`, `eth1-q0`).
    pub name: String,
    /// Interface.
    pub iface: String,
    /// Queue.
    pub queue: u32,
    /// "xdp" or "afpacket".
    pub datapath: &'static str,
    /// Core it is pinned to.
    pub core: Option<usize>,
    /// Exports it serves ("e1.2").
    pub exports: Vec<String>,
    /// Its published counters.
    pub stats: StatsCell,
}

/// What a reload changed, for the log and `xblade reload`.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// One line per change applied.
    pub applied: Vec<String>,
    /// One line per change that needs a restart (not applied).
    pub needs_restart: Vec<String>,
    /// One line per export, interface or pair configured but not served
    /// (set aside, retried).
    pub not_serving: Vec<String>,
}

/// Worker health, for the service loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Every worker thread runs.
    pub alive: bool,
    /// Every worker published its counters recently (its loop turns).
    pub responsive: bool,
}

type Key = (u16, u8);

fn name_of((shelf, slot): Key) -> String {
    format!("e{shelf}.{slot}")
}

/// A running target.
#[derive(Debug)]
pub struct Server {
    /// The configuration in force: what is open and served.
    cfg: Config,
    /// The configuration wanted (restart-only fields as they run): `cfg`
    /// plus what is set aside below.
    wanted: Config,
    /// Exports that could not open: retried.
    held: BTreeMap<Key, Pending>,
    /// Interfaces missing or that could not be served: retried.
    waiting: BTreeMap<String, Pending>,
    /// (interface, export) pairs another target answered for: retried on
    /// a reload only (taking over when the other one goes silent would
    /// switch initiators to a different disk).
    refused: BTreeMap<(String, Key), crate::wire::MacAddr>,
    /// Duplicate detection (None: its socket could not open).
    watch: Option<Watch>,
    board: DupBoard,
    cores: Vec<usize>,
    host: String,
    exports: BTreeMap<Key, ExportRec>,
    ifaces: BTreeMap<String, IfaceRec>,
    /// Cores handed out so far (new workers continue the list).
    next_core: usize,
    inventory: Arc<ArcSwap<Inventory>>,
    /// Shrunk stores already reported (key -> size seen), so the periodic
    /// check does not repeat itself.
    shrunk: HashMap<Key, u64>,
    /// Every worker thread sends its id here when it ends (a stop, a
    /// failure or a panic): the service loop sleeps on the receiver.
    exits: (Sender<WorkerId>, Receiver<WorkerId>),
    /// Workers started so far (the next one's id).
    spawned: u64,
}

/// A worker thread, for [`Server::worker_exits`]: unique for the life of
/// the process (a name comes back when a reload serves an interface again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerId(u64);

/// An error with its causes, for the operator (`xblade reload`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Messages that already quote their cause are not repeated.
        let t = c.to_string();
        if !m.ends_with(&t) {
            m.push_str(": ");
            m.push_str(&t);
        }
        cur = c.source();
    }
    m
}

fn source_name(s: &Source) -> String {
    s.to_string()
}

impl Server {
    /// Open everything and start the workers. A configuration without
    /// exports starts idle (no worker) and can be reloaded. With
    /// `all_or_nothing`, the first export or interface that cannot serve
    /// (a duplicate included) is the error; without, it is set aside and
    /// retried, and the others serve.
    pub fn start(cfg: &Config, cores: &[usize]) -> Result<Server, StartError> {
        // Before any rbd: export connects: keep librados off these cores.
        crate::bdev::rbd::set_worker_cores(cores);
        let watch = Watch::open()
            .map_err(|e| {
                warn!(error = %e, "duplicate shelf.slot detection unavailable (its AF_PACKET socket did not open)");
            })
            .ok();
        let board = watch.as_ref().map(Watch::board).unwrap_or_default();
        let mut idle = cfg.clone();
        idle.exports.clear();
        let mut srv = Server {
            cfg: idle,
            wanted: cfg.clone(),
            held: BTreeMap::new(),
            waiting: BTreeMap::new(),
            refused: BTreeMap::new(),
            watch,
            board,
            cores: cores.to_vec(),
            host: hostname(),
            exports: BTreeMap::new(),
            ifaces: BTreeMap::new(),
            next_core: 0,
            inventory: Arc::new(ArcSwap::from_pointee(Inventory::default())),
            shrunk: HashMap::new(),
            exits: crossbeam_channel::unbounded(),
            spawned: 0,
        };
        if cfg.all_or_nothing {
            srv.apply_strict(cfg)?;
        } else {
            srv.converge_all();
        }
        srv.publish();
        Ok(srv)
    }

    /// What the control plane shows; replaced after every change.
    pub fn inventory(&self) -> Arc<ArcSwap<Inventory>> {
        Arc::clone(&self.inventory)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Datapath in use: "xdp", "afpacket", "xdp+afpacket" when `auto` fell
    /// back on some interfaces, "none" without interfaces.
    pub fn datapath(&self) -> String {
        let kinds: BTreeSet<&str> = self.ifaces.values().map(IfaceRec::datapath).collect();
        if kinds.is_empty() {
            return "none".into();
        }
        kinds.into_iter().collect::<Vec<_>>().join("+")
    }

    /// Number of exports served.
    pub fn export_count(&self) -> usize {
        self.exports.len()
    }

    /// Exports, interfaces and duplicate pairs configured but not served.
    pub fn not_serving_count(&self) -> usize {
        self.held.len() + self.waiting.len() + self.refused.len()
    }

    /// Number of interfaces served.
    pub fn iface_count(&self) -> usize {
        self.ifaces.len()
    }

    fn publish(&self) {
        let exports = self
            .exports
            .values()
            .map(|r| ExportView {
                export: Arc::clone(&r.export),
                source: source_name(&r.spec.disk.source),
                interfaces: r.spec.interfaces.clone(),
                offset: r.spec.disk.offset_sectors,
                fixed_length: r.spec.disk.length_sectors.is_some(),
                direct: r.spec.disk.direct,
                writeback: r.spec.disk.writeback,
                disk: Arc::clone(&r.disk),
            })
            .collect();
        let mut interfaces = Vec::new();
        let mut workers = Vec::new();
        for (name, i) in &self.ifaces {
            let served: Vec<String> = i.served.iter().map(|&k| name_of(k)).collect();
            interfaces.push(IfaceView {
                name: name.clone(),
                datapath: i.datapath(),
                xdp_mode: i.xdp.as_ref().map(|x| x.mode().name()),
                mtu: i.info.mtu,
                queues: i.workers.len(),
                exports: served.clone(),
                choice: i.choice.clone(),
            });
            for w in &i.workers {
                workers.push(WorkerView {
                    name: w.name.clone(),
                    iface: name.clone(),
                    queue: w.queue,
                    datapath: i.datapath(),
                    core: w.core,
                    exports: served.clone(),
                    stats: w.stats.clone(),
                });
            }
        }
        if let Some(w) = &self.watch {
            // Gateways of one rbd: image answer for it together: not watched.
            let peers: Vec<Key> = self
                .cfg
                .exports
                .iter()
                .filter(|e| open::shared_by_design(e))
                .map(|e| (e.shelf, e.slot))
                .collect();
            w.set_served(
                self.ifaces
                    .values()
                    .map(|i| {
                        let keys = i.served.iter().filter(|k| !peers.contains(k));
                        (&i.info, keys.copied().collect())
                    })
                    .collect(),
            );
        }
        self.inventory.store(Arc::new(Inventory {
            datapath: self.datapath(),
            exports,
            interfaces,
            workers,
            not_serving: self.not_serving_views(),
            duplicates: self.board.clone(),
        }));
    }

    /// Ask every worker to announce its exports again.
    pub fn announce(&self) {
        for i in self.ifaces.values() {
            for w in &i.workers {
                let _ = w.control.try_send(Control::Announce);
            }
        }
    }

    /// Announce one export on every interface serving it.
    fn announce_export(&self, key: Key) {
        for i in self.ifaces.values().filter(|i| i.served.contains(&key)) {
            for w in &i.workers {
                let _ = w.control.try_send(Control::AnnounceExports(vec![key]));
            }
        }
    }

    /// Start a worker's thread.
    fn spawn(&mut self, w: ReadyWorker) -> WorkerRec {
        let id = WorkerId(self.spawned);
        self.spawned += 1;
        w.spawn(id, &self.exits.0)
    }

    /// Receives a worker's id when its thread ends, whether the server
    /// stopped it (a reload, a stop) or it ended on its own: ask
    /// [`Server::ended_unasked`] which.
    pub fn worker_exits(&self) -> Receiver<WorkerId> {
        self.exits.1.clone()
    }

    /// The name of worker `id` if it ended while still in service (it
    /// failed or panicked): the server forgets a worker before it stops
    /// one, so a worker it stopped is not found.
    pub fn ended_unasked(&self, id: WorkerId) -> Option<&str> {
        self.ifaces
            .values()
            .flat_map(|i| i.workers.iter())
            .find(|w| w.id == id)
            .map(|w| w.name.as_str())
    }

    /// Whether every worker thread runs and has published its counters in
    /// the last few seconds.
    pub fn health(&mut self) -> Health {
        let mut h = Health {
            alive: true,
            responsive: true,
        };
        let now = Instant::now();
        for w in self.ifaces.values_mut().flat_map(|i| i.workers.iter_mut()) {
            if w.thread.is_finished() {
                h.alive = false;
            }
            let n = w.stats.load().publishes;
            if n != w.beat.0 {
                w.beat = (n, now);
            } else if now.duration_since(w.beat.1) > STALL_AFTER {
                h.responsive = false;
            }
        }
        h
    }

    // ---- online resize ------------------------------------------------

    /// Re-read the size of export `shelf.slot`'s backing store; grow the
    /// export if the store grew, and announce it either way. A store that
    /// shrank below the export is refused (the export keeps its size).
    pub fn resize(&mut self, shelf: u16, slot: u8) -> Result<String, String> {
        let key = (shelf, slot);
        let r = self.grow(key, true);
        if r.is_ok() {
            self.announce_export(key);
        }
        r
    }

    /// Grow every export whose store grew (and announce those); log stores
    /// that shrank, once per size.
    pub fn check_sizes(&mut self) {
        let keys: Vec<Key> = self.exports.keys().copied().collect();
        for key in keys {
            if let Ok(msg) = self.grow(key, false) {
                if !msg.is_empty() {
                    self.announce_export(key);
                }
            }
        }
    }

    /// The resize itself. With `explicit` (an operator asked), every outcome
    /// is a message; without, `Ok("")` means nothing changed.
    fn grow(&mut self, key: Key, explicit: bool) -> Result<String, String> {
        let name = name_of(key);
        let Some(r) = self.exports.get(&key) else {
            return Err(format!("no export {}.{} here", key.0, key.1));
        };
        let cur = r.export.state().sectors;
        let probed = match r.disk.probe_sectors() {
            None if r.spec.disk.length_sectors.is_some() => {
                return Err(format!(
                    "{name}: its length is fixed by the configuration ({cur} sectors): it does not follow its backing store"
                ))
            }
            None => return Err(format!("{name}: a null store has a fixed size")),
            Some(Err(e)) => {
                let m = format!("{name}: cannot read the size of its backing store: {e}");
                if explicit {
                    warn!("{m}");
                }
                return Err(m);
            }
            Some(Ok(n)) => n,
        };
        if probed < cur {
            let m = format!(
                "{name}: backing store shrank to {probed} sectors, below the {cur} exported: refused, still exporting {cur} sectors (shrinking a live export is not supported; reads and writes past the new end fail)"
            );
            if explicit || self.shrunk.get(&key) != Some(&probed) {
                warn!("{m}");
                self.shrunk.insert(key, probed);
            }
            return Err(m);
        }
        self.shrunk.remove(&key);
        if probed == cur {
            return Ok(if explicit {
                format!("{name}: {cur} sectors, unchanged (announced again)")
            } else {
                String::new()
            });
        }
        // The store accepts the larger range before the engine hands it out.
        r.disk.grow(probed);
        r.export.set_sectors(probed);
        let m = format!(
            "{name}: grown from {cur} to {probed} sectors ({:.1} MiB); announced",
            probed as f64 * 512.0 / (1u64 << 20) as f64
        );
        info!("{m}");
        Ok(m)
    }

    /// Stop the workers (each finishes its batch: in-flight writes complete
    /// and their replies go out), then detach the XDP programs, and report
    /// the first worker error.
    pub fn stop(self) -> std::io::Result<()> {
        for i in self.ifaces.values() {
            for w in &i.workers {
                let _ = w.control.send(Control::Stop);
            }
        }
        let mut first = Ok(());
        for (_, i) in self.ifaces {
            let r = i.stop();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
