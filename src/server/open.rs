//! What a start or a reload opens, before anything is in force: an
//! export's store and shared state, an interface's XDP program and
//! workers (bound, not started). The records the [`Server`](super::Server)
//! keeps for what runs live here too, with how a worker starts and stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;
use tracing::{info, warn};

use super::{Key, StartError, WorkerId};
use crate::bdev::{self, Bdev};
use crate::config::{Config, DatapathKind, ExportSpec};
use crate::engine::{Export, ExportInfo, ExportState};
use crate::net::iface::IfaceInfo;
use crate::net::xdp::{self, XdpError, XdpInterface};
use crate::net::{afpacket, Control, WorkerSpec};
use crate::stats::{new_cell, StatsCell};

/// A running export.
#[derive(Debug)]
pub(super) struct ExportRec {
    /// What is in force (restart-only fields keep their start-up values).
    pub(super) spec: ExportSpec,
    pub(super) export: Arc<Export>,
    pub(super) disk: Arc<dyn Bdev>,
    /// The store is open for writing (a read-only export may become writable
    /// only with a new descriptor).
    pub(super) writable: bool,
}

/// A worker of either datapath, opened and ready to run (moved once, into
/// its thread: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
pub(super) enum Opened {
    Packet(afpacket::Worker),
    Xdp(xdp::Worker),
}

impl Opened {
    pub(super) fn run(self) -> std::io::Result<()> {
        match self {
            Opened::Packet(w) => w.run(),
            Opened::Xdp(w) => w.run(),
        }
    }
}

/// A worker opened (socket bound) but not started.
pub(super) struct ReadyWorker {
    pub(super) name: String,
    pub(super) queue: u32,
    pub(super) core: Option<usize>,
    pub(super) opened: Opened,
    pub(super) control: Sender<Control>,
    pub(super) stats: StatsCell,
}

/// A running worker.
#[derive(Debug)]
pub(super) struct WorkerRec {
    pub(super) name: String,
    pub(super) queue: u32,
    pub(super) core: Option<usize>,
    pub(super) control: Sender<Control>,
    pub(super) thread: JoinHandle<std::io::Result<()>>,
    pub(super) stats: StatsCell,
    /// Sent on the exits channel when its thread ends (never reused).
    pub(super) id: WorkerId,
    /// Last `publishes` count seen and when it changed.
    pub(super) beat: (u64, Instant),
}

/// Sends the worker's id on `exits` when its thread ends, by return or
/// by panic, so the service loop learns it at once instead of polling.
struct ExitNote {
    id: WorkerId,
    exits: Sender<WorkerId>,
}

impl Drop for ExitNote {
    fn drop(&mut self) {
        let _ = self.exits.send(self.id);
    }
}

impl ReadyWorker {
    /// Start the worker's thread; `id` goes to `exits` when it ends.
    pub(super) fn spawn(self, id: WorkerId, exits: &Sender<WorkerId>) -> WorkerRec {
        let opened = self.opened;
        let note = ExitNote {
            id,
            exits: exits.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("xblade-{}", self.name))
            .spawn(move || {
                let _note = note;
                opened.run()
            })
            .expect("spawn worker thread");
        WorkerRec {
            name: self.name,
            queue: self.queue,
            core: self.core,
            control: self.control,
            thread,
            stats: self.stats,
            id,
            beat: (0, Instant::now()),
        }
    }
}

/// A served interface.
#[derive(Debug)]
pub(super) struct IfaceRec {
    pub(super) info: IfaceInfo,
    /// Attached XDP program (None: AF_PACKET). Dropped (detached) after the
    /// interface's workers stopped.
    pub(super) xdp: Option<XdpInterface>,
    /// Exports served, in order (the workers' export lists).
    pub(super) served: Vec<Key>,
    pub(super) workers: Vec<WorkerRec>,
    /// What it is served with and which kernel features it goes without
    /// (the start-up line; `status` shows it).
    pub(super) choice: String,
}

impl IfaceRec {
    pub(super) fn datapath(&self) -> &'static str {
        if self.xdp.is_some() {
            "xdp"
        } else {
            "afpacket"
        }
    }

    /// Stop the workers (each drains what it has in hand), then detach.
    pub(super) fn stop(self) -> std::io::Result<()> {
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

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "xblade".into())
}

pub(super) fn export_info(e: &ExportSpec, host: &str) -> ExportInfo {
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
pub(super) fn iface_info(
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
        iface: name.into(),
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
pub(super) fn open_export(
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
            // No interface up yet (all set aside): the advertised count is
            // fixed now, so take the cap of the largest MTU.
            .unwrap_or_else(|| xdp::max_bufcnt(u32::from(u16::MAX)));
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
pub(super) fn worker_spec(
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
pub(super) fn open_xdp(
    cfg: &Config,
    info: &IfaceInfo,
    set: &[(Arc<Export>, Arc<dyn Bdev>)],
    cores: &[usize],
    next_core: usize,
) -> Result<(XdpInterface, Vec<ReadyWorker>), XdpError> {
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
        out.push(ReadyWorker {
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
/// AF_PACKET), not yet started; with the line saying what was chosen and
/// what the kernel lacked.
pub(super) fn open_iface(
    cfg: &Config,
    info: &IfaceInfo,
    set: &[(Arc<Export>, Arc<dyn Bdev>)],
    cores: &[usize],
    next_core: usize,
) -> Result<(Option<XdpInterface>, Vec<ReadyWorker>, String), StartError> {
    let name = &info.name;
    let mut choice = format!("{name}: AF_PACKET (--datapath afpacket)");
    if cfg.datapath != DatapathKind::Afpacket {
        match open_xdp(cfg, info, set, cores, next_core) {
            Ok((ifc, ws)) => {
                let choice = ifc.choice().to_owned();
                info!(iface = %name, mode = ifc.mode().name(), queues = ifc.queues(),
                      "datapath: XDP: {choice}");
                return Ok((Some(ifc), ws, choice));
            }
            Err(source) if cfg.datapath == DatapathKind::Xdp => {
                return Err(StartError::Xdp {
                    iface: name.clone(),
                    source,
                })
            }
            Err(e) if e.to_string().contains("Device or resource busy") => {
                // Another program holds the interface: maybe another xblade,
                // which the duplicate probe cannot see from the same host.
                warn!(iface = %name, reason = %e,
                      "datapath auto: XDP unavailable, using AF_PACKET: another XDP program is attached to {name} (another xblade on this host?). Two targets on one host and interface do not see each other's probes: make sure this one is not a duplicate");
            }
            Err(e) => {
                let reason = super::chain(&e);
                choice = format!(
                    "{name}: {reason}; this is Linux {}: {name} serves MTU {} over AF_PACKET",
                    crate::net::xdp::kernel_release(),
                    info.mtu
                );
                info!(iface = %name, reason = %reason,
                      "datapath auto: XDP unavailable, using AF_PACKET: {choice}");
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
        vec![ReadyWorker {
            name: name.clone(),
            queue: 0,
            core,
            opened: Opened::Packet(w),
            control: tx,
            stats: cell,
        }],
        choice,
    ))
}

/// Exports per interface, in configuration order.
/// Exports that several targets serve on purpose under one shelf.slot:
/// an `rbd:` image is served by every gateway of it (active/active, fenced
/// by their leases: docs/fencing.md), so another target answering for it
/// is a peer, not a duplicate. Duplicate detection leaves them out.
pub(super) fn shared_by_design(e: &ExportSpec) -> bool {
    matches!(e.disk.source, crate::bdev::Source::Rbd { .. })
}

pub(super) fn by_iface(specs: &[ExportSpec]) -> BTreeMap<String, Vec<Key>> {
    let mut m: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for e in specs {
        for n in &e.interfaces {
            m.entry(n.clone()).or_default().push((e.shelf, e.slot));
        }
    }
    m
}
