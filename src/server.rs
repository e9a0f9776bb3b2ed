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
//!   batches, once the requests in hand have completed (on XDP: with no
//!   io_uring operation in flight, so none can complete against a store
//!   that is gone). Workers whose set does not change are not disturbed.
//! - [`Server::resize`] and [`Server::check_sizes`] grow an export whose
//!   backing store grew (never shrink it) and announce it.
//! - [`Server::health`] tells the service loop whether every worker thread
//!   runs and still publishes its counters (the systemd watchdog).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::bdev::{self, Bdev, DiskError, Source};
use crate::config::{Config, DatapathKind, ExportSpec};
use crate::engine::{Export, ExportInfo, ExportState};
use crate::net::iface::{IfaceError, IfaceInfo};
use crate::net::xdp::{self, XdpError, XdpInterface};
use crate::net::{afpacket, Control, Reconfig, WorkerSpec};
use crate::stats::{new_cell, StatsCell};

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
    #[error("export {shelf}.{slot}")]
    Iface {
        /// Shelf.
        shelf: u16,
        /// Slot.
        slot: u8,
        /// Cause.
        source: IfaceError,
    },
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

/// A running export.
#[derive(Debug)]
struct ExportRec {
    /// What is in force (restart-only fields keep their start-up values).
    spec: ExportSpec,
    export: Arc<Export>,
    disk: Arc<dyn Bdev>,
    /// The store is open for writing (a read-only export may become writable
    /// only with a new descriptor).
    writable: bool,
}

/// A worker of either datapath, opened and ready to run (moved once, into
/// its thread: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
enum Opened {
    Packet(afpacket::Worker),
    Xdp(xdp::Worker),
}

impl Opened {
    fn run(self) -> std::io::Result<()> {
        match self {
            Opened::Packet(w) => w.run(),
            Opened::Xdp(w) => w.run(),
        }
    }
}

/// A worker opened (socket bound) but not started.
struct Prepared {
    name: String,
    queue: u32,
    core: Option<usize>,
    opened: Opened,
    control: Sender<Control>,
    stats: StatsCell,
}

/// A running worker.
#[derive(Debug)]
struct WorkerRec {
    name: String,
    queue: u32,
    core: Option<usize>,
    control: Sender<Control>,
    thread: JoinHandle<std::io::Result<()>>,
    stats: StatsCell,
    /// Last `publishes` count seen and when it changed.
    beat: (u64, Instant),
}

impl Prepared {
    fn spawn(self) -> WorkerRec {
        let opened = self.opened;
        let thread = std::thread::Builder::new()
            .name(format!("xblade-{}", self.name))
            .spawn(move || opened.run())
            .expect("spawn worker thread");
        WorkerRec {
            name: self.name,
            queue: self.queue,
            core: self.core,
            control: self.control,
            thread,
            stats: self.stats,
            beat: (0, Instant::now()),
        }
    }
}

/// A served interface.
#[derive(Debug)]
struct IfaceRec {
    info: IfaceInfo,
    /// Attached XDP program (None: AF_PACKET). Dropped (detached) after the
    /// interface's workers stopped.
    xdp: Option<XdpInterface>,
    /// Exports served, in order (the workers' export lists).
    served: Vec<Key>,
    workers: Vec<WorkerRec>,
}

impl IfaceRec {
    fn datapath(&self) -> &'static str {
        if self.xdp.is_some() {
            "xdp"
        } else {
            "afpacket"
        }
    }

    /// Stop the workers (each drains what it has in hand), then detach.
    fn stop(self) -> std::io::Result<()> {
        for w in &self.workers {
            let _ = w.control.send(Control::Stop);
        }
        let mut first = Ok(());
        for w in self.workers {
            let r = match w.thread.join() {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::other(format!(
                    "worker for {} panicked",
                    w.name
                ))),
            };
            if let Err(e) = r {
                warn!(worker = %w.name, error = %e, "worker failed");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        drop(self.xdp);
        first
    }
}

/// A running target.
#[derive(Debug)]
pub struct Server {
    /// The configuration in force.
    cfg: Config,
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
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "xblade".into())
}

fn export_info(e: &ExportSpec, host: &str) -> ExportInfo {
    let mut serial = format!("{}.{}:{}", e.shelf, e.slot, host);
    serial.truncate(20);
    ExportInfo {
        shelf: e.shelf,
        slot: e.slot,
        bufcnt: e.bufcnt,
        serial,
        model: "xblade AoE target".into(),
        firmware: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Look up `name` (MTU checked), from `known` or the system.
fn iface_info(
    name: &str,
    key: Key,
    known: &BTreeMap<String, IfaceInfo>,
) -> Result<IfaceInfo, StartError> {
    if let Some(i) = known.get(name) {
        return Ok(i.clone());
    }
    let info = IfaceInfo::lookup(name).map_err(|source| StartError::Iface {
        shelf: key.0,
        slot: key.1,
        source,
    })?;
    if info.mtu < 548 {
        return Err(StartError::SmallMtu {
            iface: name.into(),
            mtu: info.mtu,
        });
    }
    Ok(info)
}

/// Open an export's store and build its shared state.
fn open_export(
    cfg: &Config,
    e: &ExportSpec,
    host: &str,
    ifaces: &BTreeMap<String, IfaceInfo>,
) -> Result<ExportRec, StartError> {
    let (shelf, slot) = (e.shelf, e.slot);
    let disk = bdev::open(&e.disk).map_err(|source| StartError::Disk {
        shelf,
        slot,
        source,
    })?;
    if e.disk.writeback {
        warn!(shelf, slot, "writeback: writes are acknowledged from the page cache and may be lost on a crash or power failure");
    }
    let mut info = export_info(e, host);
    if cfg.datapath != DatapathKind::Afpacket {
        // Advertise no more than one XDP queue absorbs while the disk is
        // busy (frames beyond it are dropped by the kernel).
        let cap = e
            .interfaces
            .iter()
            .filter_map(|n| ifaces.get(n))
            .map(|i| xdp::max_bufcnt(i.mtu))
            .min()
            .unwrap_or(u16::MAX);
        if info.bufcnt > cap {
            warn!(
                shelf,
                slot,
                bufcnt = info.bufcnt,
                cap,
                "bufcnt above what an XDP queue absorbs; advertising the cap"
            );
            info.bufcnt = cap;
        }
    }
    let state = ExportState {
        sectors: disk.sectors(),
        read_only: e.disk.read_only,
        config: e.config_string.clone(),
        mask: e.mac_mask.clone(),
        reserve: Vec::new(),
    };
    info!(shelf, slot, sectors = disk.sectors(), source = %e.disk.source,
          read_only = e.disk.read_only, direct = e.disk.direct,
          interfaces = ?e.interfaces, "export ready");
    Ok(ExportRec {
        spec: e.clone(),
        export: Arc::new(Export::new(info, state)),
        disk,
        writable: !e.disk.read_only,
    })
}

/// A worker's spec plus the ends the server keeps.
fn worker_spec(
    info: &IfaceInfo,
    queue: u32,
    set: &[(Arc<Export>, Arc<dyn Bdev>)],
    core: Option<usize>,
) -> (WorkerSpec, Sender<Control>, StatsCell) {
    let (tx, rx) = crossbeam_channel::bounded(16);
    let cell = new_cell(&info.name, queue);
    let spec = WorkerSpec {
        iface: info.clone(),
        exports: set.iter().map(|(e, _)| Arc::clone(e)).collect(),
        disks: set.iter().map(|(_, d)| Arc::clone(d)).collect(),
        control: rx,
        stats: cell.clone(),
        core,
    };
    (spec, tx, cell)
}

/// Attach XDP on `info` and open one worker per queue.
fn open_xdp(
    cfg: &Config,
    info: &IfaceInfo,
    set: &[(Arc<Export>, Arc<dyn Bdev>)],
    cores: &[usize],
    next_core: usize,
) -> Result<(XdpInterface, Vec<Prepared>), XdpError> {
    let targets: Vec<Key> = set
        .iter()
        .map(|(e, _)| (e.info.shelf, e.info.slot))
        .collect();
    let ifc = XdpInterface::attach(info, &targets, &cfg.xdp)?;
    let mut out = Vec::new();
    for q in 0..ifc.queues() {
        let core = cores.get(next_core + q as usize).copied();
        let (spec, tx, cell) = worker_spec(info, q, set, core);
        let w = xdp::Worker::open(spec, q, &ifc, &cfg.xdp)?;
        out.push(Prepared {
            name: format!("{}-q{q}", info.name),
            queue: q,
            core,
            opened: Opened::Xdp(w),
            control: tx,
            stats: cell,
        });
    }
    Ok((ifc, out))
}

/// Open the workers of one interface (XDP when asked or possible, else
/// AF_PACKET), not yet started.
fn open_iface(
    cfg: &Config,
    info: &IfaceInfo,
    set: &[(Arc<Export>, Arc<dyn Bdev>)],
    cores: &[usize],
    next_core: usize,
) -> Result<(Option<XdpInterface>, Vec<Prepared>), StartError> {
    let name = &info.name;
    if cfg.datapath != DatapathKind::Afpacket {
        match open_xdp(cfg, info, set, cores, next_core) {
            Ok((ifc, ws)) => {
                info!(iface = %name, mode = ifc.mode().name(), queues = ifc.queues(),
                      "datapath: XDP");
                return Ok((Some(ifc), ws));
            }
            Err(source) if cfg.datapath == DatapathKind::Xdp => {
                return Err(StartError::Xdp {
                    iface: name.clone(),
                    source,
                })
            }
            Err(e) => {
                info!(iface = %name, reason = %e,
                      "datapath auto: XDP unavailable, using AF_PACKET");
            }
        }
    }
    let core = cores.get(next_core).copied();
    let (spec, tx, cell) = worker_spec(info, 0, set, core);
    let w = afpacket::Worker::open(spec).map_err(|source| StartError::Socket {
        iface: name.clone(),
        source,
    })?;
    Ok((
        None,
        vec![Prepared {
            name: name.clone(),
            queue: 0,
            core,
            opened: Opened::Packet(w),
            control: tx,
            stats: cell,
        }],
    ))
}

/// Exports per interface, in configuration order.
fn by_iface(specs: &[ExportSpec]) -> BTreeMap<String, Vec<Key>> {
    let mut m: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for e in specs {
        for n in &e.interfaces {
            m.entry(n.clone()).or_default().push((e.shelf, e.slot));
        }
    }
    m
}

/// What differs between the running `old` and the configured `new` export
/// that only a restart applies.
fn restart_only_changes(old: &ExportSpec, new: &ExportSpec) -> Vec<String> {
    let mut v = Vec::new();
    let (o, n) = (&old.disk, &new.disk);
    let mut note = |what: &str, from: String, to: String| {
        v.push(format!("{what} {from} -> {to}"));
    };
    if o.source != n.source {
        note("file", o.source.to_string(), n.source.to_string());
    }
    if o.offset_sectors != n.offset_sectors {
        note(
            "offset",
            o.offset_sectors.to_string(),
            n.offset_sectors.to_string(),
        );
    }
    if o.length_sectors != n.length_sectors {
        note(
            "length",
            format!("{:?}", o.length_sectors),
            format!("{:?}", n.length_sectors),
        );
    }
    if o.direct != n.direct {
        note("direct", o.direct.to_string(), n.direct.to_string());
    }
    if o.sync != n.sync {
        note("sync", o.sync.to_string(), n.sync.to_string());
    }
    if o.writeback != n.writeback {
        note(
            "writeback",
            o.writeback.to_string(),
            n.writeback.to_string(),
        );
    }
    let set = |l: &[String]| l.iter().cloned().collect::<BTreeSet<_>>();
    if set(&old.interfaces) != set(&new.interfaces) {
        note(
            "interfaces",
            format!("{:?}", old.interfaces),
            format!("{:?}", new.interfaces),
        );
    }
    if old.bufcnt != new.bufcnt {
        note("bufcnt", old.bufcnt.to_string(), new.bufcnt.to_string());
    }
    v
}

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
    /// exports starts idle (no worker) and can be reloaded.
    pub fn start(cfg: &Config, cores: &[usize]) -> Result<Server, StartError> {
        // Before any rbd: export connects: keep librados off these cores.
        bdev::rbd::set_worker_cores(cores);
        let host = hostname();
        let mut known: BTreeMap<String, IfaceInfo> = BTreeMap::new();
        for e in &cfg.exports {
            for n in &e.interfaces {
                let info = iface_info(n, (e.shelf, e.slot), &known)?;
                known.insert(n.clone(), info);
            }
        }
        let mut exports = BTreeMap::new();
        for e in &cfg.exports {
            exports.insert((e.shelf, e.slot), open_export(cfg, e, &host, &known)?);
        }
        let mut srv = Server {
            cfg: cfg.clone(),
            cores: cores.to_vec(),
            host,
            exports,
            ifaces: BTreeMap::new(),
            next_core: 0,
            inventory: Arc::new(ArcSwap::from_pointee(Inventory::default())),
            shrunk: HashMap::new(),
        };
        let mut prepared = Vec::new();
        for (name, served) in by_iface(&cfg.exports) {
            let info = known[&name].clone();
            let set = srv.set_of(&served);
            let (xdp, ws) = open_iface(cfg, &info, &set, cores, srv.next_core)?;
            srv.next_core += ws.len();
            prepared.push((name, info, xdp, served, ws));
        }
        for (name, info, xdp, served, ws) in prepared {
            let workers = ws.into_iter().map(Prepared::spawn).collect();
            srv.ifaces.insert(
                name,
                IfaceRec {
                    info,
                    xdp,
                    served,
                    workers,
                },
            );
        }
        srv.publish();
        Ok(srv)
    }

    /// The (export, disk) list of `served`.
    fn set_of(&self, served: &[Key]) -> Vec<(Arc<Export>, Arc<dyn Bdev>)> {
        served
            .iter()
            .map(|k| {
                let r = &self.exports[k];
                (Arc::clone(&r.export), Arc::clone(&r.disk))
            })
            .collect()
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
        self.inventory.store(Arc::new(Inventory {
            datapath: self.datapath(),
            exports,
            interfaces,
            workers,
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

    /// True while every worker runs.
    pub fn healthy(&self) -> bool {
        self.ifaces
            .values()
            .flat_map(|i| i.workers.iter())
            .all(|w| !w.thread.is_finished())
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

    // ---- live reconfiguration ----------------------------------------

    /// Apply `new` live. Every store and interface it needs is opened
    /// first: any failure rejects it whole (the error names the export or
    /// interface) and nothing changes. What only a restart can change is
    /// reported, not applied.
    pub fn reload(&mut self, new: &Config) -> Result<ReloadReport, String> {
        let mut report = ReloadReport::default();
        let mut restart = |what: String| {
            warn!("{what}: needs a restart (the running value stays in force)");
            report.needs_restart.push(what);
        };
        if new.datapath != self.cfg.datapath {
            let name = |d: DatapathKind| format!("{d:?}").to_lowercase();
            restart(format!(
                "datapath {} -> {}",
                name(self.cfg.datapath),
                name(new.datapath)
            ));
        }
        if new.xdp != self.cfg.xdp {
            restart("[xdp] options".into());
        }
        // The configuration to run: new exports as written; kept ones with
        // their restart-only fields as they run.
        let mut run = self.cfg.clone();
        run.size_check_secs = new.size_check_secs;
        run.exports.clear();
        for e in &new.exports {
            let key = (e.shelf, e.slot);
            match self.exports.get(&key) {
                None => run.exports.push(e.clone()),
                Some(r) => {
                    for c in restart_only_changes(&r.spec, e) {
                        restart(format!("{}: {c}", name_of(key)));
                    }
                    let mut keep = r.spec.clone();
                    keep.disk.read_only = e.disk.read_only;
                    keep.mac_mask = e.mac_mask.clone();
                    keep.config_string = e.config_string.clone();
                    run.exports.push(keep);
                }
            }
        }
        // ---- prepare: open what is new (nothing changes on failure) ----
        let mut known: BTreeMap<String, IfaceInfo> = self
            .ifaces
            .iter()
            .map(|(n, i)| (n.clone(), i.info.clone()))
            .collect();
        for e in &run.exports {
            for n in &e.interfaces {
                let info = iface_info(n, (e.shelf, e.slot), &known).map_err(|e| chain(&e))?;
                known.insert(n.clone(), info);
            }
        }
        let mut added: BTreeMap<Key, ExportRec> = BTreeMap::new();
        // Read-only exports becoming writable: a writable descriptor.
        let mut reopened: BTreeMap<Key, Arc<dyn Bdev>> = BTreeMap::new();
        for e in &run.exports {
            let key = (e.shelf, e.slot);
            match self.exports.get(&key) {
                None => {
                    let rec = open_export(&run, e, &self.host, &known).map_err(|e| chain(&e))?;
                    added.insert(key, rec);
                }
                Some(r) if !e.disk.read_only && !r.writable => {
                    let d = bdev::open(&e.disk).map_err(|source| {
                        chain(&StartError::Disk {
                            shelf: key.0,
                            slot: key.1,
                            source,
                        })
                    })?;
                    reopened.insert(key, d);
                }
                Some(_) => {}
            }
        }
        let removed: Vec<Key> = self
            .exports
            .keys()
            .filter(|k| !run.exports.iter().any(|e| (e.shelf, e.slot) == **k))
            .copied()
            .collect();
        // The (export, disk) in force after the reload, per key.
        let pair = |k: &Key| -> (Arc<Export>, Arc<dyn Bdev>) {
            if let Some(r) = added.get(k) {
                return (Arc::clone(&r.export), Arc::clone(&r.disk));
            }
            let r = &self.exports[k];
            let d = reopened.get(k).unwrap_or(&r.disk);
            (Arc::clone(&r.export), Arc::clone(d))
        };
        let want = by_iface(&run.exports);
        // New interfaces: open their workers now.
        let mut new_ifaces = Vec::new();
        let mut next_core = self.next_core;
        for (name, served) in &want {
            if self.ifaces.contains_key(name) {
                continue;
            }
            let set: Vec<_> = served.iter().map(pair).collect();
            let (xdp, ws) = open_iface(&run, &known[name], &set, &self.cores, next_core)
                .map_err(|e| chain(&e))?;
            next_core += ws.len();
            new_ifaces.push((name.clone(), xdp, served.clone(), ws));
        }

        // ---- commit ----------------------------------------------------
        // Live fields of kept exports. Writes stop before anything else
        // changes; they resume only once every worker has the writable store.
        let mut becomes_writable = Vec::new();
        for e in &run.exports {
            let key = (e.shelf, e.slot);
            let Some(r) = self.exports.get(&key) else {
                continue;
            };
            let name = name_of(key);
            let (ro_old, ro_new) = (r.spec.disk.read_only, e.disk.read_only);
            let mask_changed = r.spec.mac_mask != e.mac_mask;
            let cs_changed = r.spec.config_string != e.config_string;
            r.export.update(|s| {
                let mut n = s.clone();
                if ro_new {
                    n.read_only = true;
                }
                if mask_changed {
                    n.mask = e.mac_mask.clone();
                }
                if cs_changed {
                    n.config = e.config_string.clone();
                }
                (Some(n), ())
            });
            if ro_old != ro_new {
                report
                    .applied
                    .push(format!("{name}: read_only {ro_old} -> {ro_new}"));
                if !ro_new {
                    becomes_writable.push(key);
                }
            }
            if mask_changed {
                report.applied.push(format!(
                    "{name}: Mac Mask set to [{}] (edits made by initiators are replaced)",
                    e.mac_mask
                        .iter()
                        .map(|m| m.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if cs_changed {
                report.applied.push(format!(
                    "{name}: config string set to {:?}",
                    String::from_utf8_lossy(&e.config_string)
                ));
            }
        }
        // Existing interfaces whose export set changes.
        let mut waits: Vec<(String, Receiver<Result<(), String>>)> = Vec::new();
        let mut stop_ifaces = Vec::new();
        for (name, rec) in &self.ifaces {
            let Some(served) = want.get(name) else {
                stop_ifaces.push(name.clone());
                continue;
            };
            let set: Vec<_> = served.iter().map(pair).collect();
            let old = self.set_of(&rec.served);
            let same = set.len() == old.len()
                && set
                    .iter()
                    .zip(&old)
                    .all(|(a, b)| Arc::ptr_eq(&a.0, &b.0) && Arc::ptr_eq(&a.1, &b.1));
            if same {
                continue;
            }
            if let Some(x) = &rec.xdp {
                for k in rec.served.iter().filter(|k| !served.contains(k)) {
                    if let Err(e) = x.set_target(k.0, k.1, false) {
                        warn!(iface = %name, error = %e, "XDP program: cannot stop steering {}", name_of(*k));
                    }
                }
            }
            let announce: Vec<Key> = served
                .iter()
                .filter(|k| !rec.served.contains(k))
                .copied()
                .collect();
            for w in &rec.workers {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let msg = Control::Reconfigure(Reconfig {
                    exports: set.iter().map(|(e, _)| Arc::clone(e)).collect(),
                    disks: set.iter().map(|(_, d)| Arc::clone(d)).collect(),
                    announce: announce.clone(),
                    done: tx,
                });
                if w.control.send_timeout(msg, RECONFIGURE_TIMEOUT).is_err() {
                    error!(worker = %w.name, "worker does not take control messages");
                }
                waits.push((w.name.clone(), rx));
            }
        }
        let deadline = Instant::now() + RECONFIGURE_TIMEOUT;
        let mut failures = Vec::new();
        for (worker, rx) in waits {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("worker {worker}: {e}")),
                Err(_) => failures.push(format!(
                    "worker {worker}: did not take its new export set within {RECONFIGURE_TIMEOUT:?}"
                )),
            }
        }
        // Steer the added exports' frames to XDP sockets that now know them.
        for (name, served) in &want {
            if let Some(rec) = self.ifaces.get_mut(name) {
                if let Some(x) = &rec.xdp {
                    for k in served.iter().filter(|k| !rec.served.contains(k)) {
                        if let Err(e) = x.set_target(k.0, k.1, true) {
                            failures.push(format!(
                                "{name}: XDP program: steering {}: {e}",
                                name_of(*k)
                            ));
                        }
                    }
                }
                rec.served = served.clone();
            }
        }
        for (name, xdp, served, ws) in new_ifaces {
            let workers = ws.into_iter().map(Prepared::spawn).collect();
            report.applied.push(format!(
                "interface {name}: serving (datapath {})",
                if xdp.is_some() { "xdp" } else { "afpacket" }
            ));
            let info = known[&name].clone();
            self.ifaces.insert(
                name,
                IfaceRec {
                    info,
                    xdp,
                    served,
                    workers,
                },
            );
        }
        self.next_core = next_core;
        for name in stop_ifaces {
            if let Some(rec) = self.ifaces.remove(&name) {
                info!(iface = %name, "no export left on the interface: stopping its workers");
                if let Err(e) = rec.stop() {
                    failures.push(format!("interface {name}: worker failed: {e}"));
                }
                report
                    .applied
                    .push(format!("interface {name}: no export left, stopped"));
            }
        }
        // Bookkeeping: removed exports go (their last Arc with the workers
        // that released them), added ones join, reopened stores replace.
        for k in &removed {
            self.exports.remove(k);
            self.shrunk.remove(k);
            report.applied.push(format!("{}: removed", name_of(*k)));
        }
        for (k, rec) in added {
            report.applied.push(format!(
                "{}: added ({} sectors on {})",
                name_of(k),
                rec.export.state().sectors,
                rec.spec.interfaces.join(",")
            ));
            self.exports.insert(k, rec);
        }
        for e in &run.exports {
            let key = (e.shelf, e.slot);
            if let Some(r) = self.exports.get_mut(&key) {
                if let Some(d) = reopened.remove(&key) {
                    r.disk = d;
                    r.writable = true;
                }
                r.spec = e.clone();
            }
        }
        for key in becomes_writable {
            let Some(r) = self.exports.get_mut(&key) else {
                continue;
            };
            if failures.is_empty() {
                r.export.update(|s| {
                    (
                        Some(ExportState {
                            read_only: false,
                            ..s.clone()
                        }),
                        (),
                    )
                });
            } else {
                // Not every worker has the writable store: stay read-only.
                r.spec.disk.read_only = true;
                if let Some(e) = run.exports.iter_mut().find(|e| (e.shelf, e.slot) == key) {
                    e.disk.read_only = true;
                }
            }
        }
        self.cfg = run;
        self.publish();
        for l in &report.applied {
            info!("reload: {l}");
        }
        if failures.is_empty() {
            Ok(report)
        } else {
            for f in &failures {
                error!("reload: {f}");
            }
            Err(format!(
                "reload partly applied: {}{}",
                failures.join("; "),
                if report.applied.is_empty() {
                    String::new()
                } else {
                    format!(" (applied: {})", report.applied.join("; "))
                }
            ))
        }
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
