//! Starting and stopping a target: open every backing store and interface
//! first (so a bad value fails before anything serves), then the workers:
//! on the XDP datapath one per (interface, queue) behind an XDP program
//! attached to the interface, on AF_PACKET one per interface. `auto` tries
//! XDP per interface and falls back to AF_PACKET, saying why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use thiserror::Error;
use tracing::{info, warn};

use crate::config::{Config, DatapathKind, ExportSpec};
use crate::datapath::iface::{IfaceError, IfaceInfo};
use crate::datapath::xdp::{self, XdpError, XdpInterface};
use crate::datapath::{afpacket, Control, WorkerSpec};
use crate::disk::{Disk, DiskError};
use crate::stats::{new_cell, StatsCell};
use crate::target::{Export, ExportInfo, ExportState};

/// Why a target could not start.
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

/// A running target.
#[derive(Debug)]
pub struct Server {
    controls: Vec<Sender<Control>>,
    threads: Vec<(String, JoinHandle<std::io::Result<()>>)>,
    /// XDP programs attached, one per XDP interface; dropped (detached)
    /// after the workers stopped.
    xdp: Vec<XdpInterface>,
    /// Published counters, one cell per worker.
    pub stats: Vec<StatsCell>,
    /// The exports (shared with the workers).
    pub exports: Vec<Arc<Export>>,
    /// Datapath in use: "xdp", "afpacket", or "xdp+afpacket" when `auto`
    /// fell back on some interfaces.
    pub datapath: String,
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

/// A worker's spec plus the ends the server keeps.
fn worker_spec(
    info: &IfaceInfo,
    queue: u32,
    idx: &[usize],
    exports: &[Arc<Export>],
    disks: &[Arc<Disk>],
    core: Option<usize>,
) -> (WorkerSpec, Sender<Control>, StatsCell) {
    let (tx, rx) = crossbeam_channel::bounded(16);
    let cell = new_cell(&info.name, queue);
    let spec = WorkerSpec {
        iface: info.clone(),
        exports: idx.iter().map(|&i| Arc::clone(&exports[i])).collect(),
        disks: idx.iter().map(|&i| Arc::clone(&disks[i])).collect(),
        control: rx,
        stats: cell.clone(),
        core,
    };
    (spec, tx, cell)
}

type Started = (String, Opened, Sender<Control>, StatsCell);

/// Attach XDP on `info` and open one worker per queue.
fn open_xdp(
    cfg: &Config,
    info: &IfaceInfo,
    idx: &[usize],
    exports: &[Arc<Export>],
    disks: &[Arc<Disk>],
    cores: &[usize],
    next_core: usize,
) -> Result<(XdpInterface, Vec<Started>), XdpError> {
    let targets: Vec<(u16, u8)> = idx
        .iter()
        .map(|&i| (exports[i].info.shelf, exports[i].info.slot))
        .collect();
    let ifc = XdpInterface::attach(info, &targets, &cfg.xdp)?;
    let mut out = Vec::new();
    for q in 0..ifc.queues() {
        let core = cores.get(next_core + q as usize).copied();
        let (spec, tx, cell) = worker_spec(info, q, idx, exports, disks, core);
        let w = xdp::Worker::open(spec, q, &ifc, &cfg.xdp)?;
        out.push((format!("{}-q{q}", info.name), Opened::Xdp(w), tx, cell));
    }
    Ok((ifc, out))
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

impl Server {
    /// Open everything and start the workers.
    pub fn start(cfg: &Config, cores: &[usize]) -> Result<Server, StartError> {
        let host = hostname();
        let mut exports = Vec::new();
        let mut disks = Vec::new();
        // Interface name -> indices of the exports it serves.
        let mut by_iface: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut ifaces: BTreeMap<String, IfaceInfo> = BTreeMap::new();
        for (i, e) in cfg.exports.iter().enumerate() {
            let (shelf, slot) = (e.shelf, e.slot);
            let disk = Disk::open(&e.disk).map_err(|source| StartError::Disk {
                shelf,
                slot,
                source,
            })?;
            for name in &e.interfaces {
                if !ifaces.contains_key(name) {
                    let info = IfaceInfo::lookup(name).map_err(|source| StartError::Iface {
                        shelf,
                        slot,
                        source,
                    })?;
                    if info.mtu < 548 {
                        return Err(StartError::SmallMtu {
                            iface: name.clone(),
                            mtu: info.mtu,
                        });
                    }
                    ifaces.insert(name.clone(), info);
                }
                by_iface.entry(name.clone()).or_default().push(i);
            }
            if e.disk.writeback {
                warn!(shelf, slot, "writeback: writes are acknowledged from the page cache and may be lost on a crash or power failure");
            }
            let mut info = export_info(e, &host);
            if cfg.datapath != DatapathKind::Afpacket {
                // Advertise no more than one XDP queue absorbs while the
                // disk is busy (frames beyond it are dropped by the kernel).
                let cap = e
                    .interfaces
                    .iter()
                    .map(|n| xdp::max_bufcnt(ifaces[n].mtu))
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
            info!(shelf, slot, sectors = disk.sectors(), source = ?e.disk.source,
                  read_only = e.disk.read_only, direct = e.disk.direct,
                  interfaces = ?e.interfaces, "export ready");
            exports.push(Arc::new(Export::new(info, state)));
            disks.push(Arc::new(disk));
        }
        let mut started: Vec<Started> = Vec::new();
        let mut xdp_ifaces = Vec::new();
        let mut kinds = std::collections::BTreeSet::new();
        for (name, idx) in &by_iface {
            let info = &ifaces[name];
            if cfg.datapath != DatapathKind::Afpacket {
                match open_xdp(cfg, info, idx, &exports, &disks, cores, started.len()) {
                    Ok((ifc, ws)) => {
                        info!(iface = %name, mode = ifc.mode().name(), queues = ifc.queues(),
                              "datapath: XDP");
                        started.extend(ws);
                        xdp_ifaces.push(ifc);
                        kinds.insert("xdp");
                        continue;
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
            let core = cores.get(started.len()).copied();
            let (spec, tx, cell) = worker_spec(info, 0, idx, &exports, &disks, core);
            let w = afpacket::Worker::open(spec).map_err(|source| StartError::Socket {
                iface: name.clone(),
                source,
            })?;
            started.push((name.clone(), Opened::Packet(w), tx, cell));
            kinds.insert("afpacket");
        }
        let mut controls = Vec::new();
        let mut stats = Vec::new();
        let mut threads = Vec::new();
        for (name, w, tx, cell) in started {
            let t = std::thread::Builder::new()
                .name(format!("xblade-{name}"))
                .spawn(move || w.run())
                .expect("spawn worker thread");
            threads.push((name, t));
            controls.push(tx);
            stats.push(cell);
        }
        Ok(Server {
            controls,
            threads,
            xdp: xdp_ifaces,
            stats,
            exports,
            datapath: kinds.into_iter().collect::<Vec<_>>().join("+"),
        })
    }

    /// Ask every worker to announce its exports again.
    pub fn announce(&self) {
        for c in &self.controls {
            let _ = c.try_send(Control::Announce);
        }
    }

    /// True while every worker runs.
    pub fn healthy(&self) -> bool {
        self.threads.iter().all(|(_, t)| !t.is_finished())
    }

    /// Stop the workers (each finishes its batch: in-flight writes complete
    /// and their replies go out), then detach the XDP programs, and report
    /// the first worker error.
    pub fn stop(self) -> std::io::Result<()> {
        for c in &self.controls {
            let _ = c.send(Control::Stop);
        }
        let mut first = Ok(());
        for (name, t) in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(iface = %name, error = %e, "worker failed");
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
                Err(_) => {
                    if first.is_ok() {
                        first = Err(std::io::Error::other(format!("worker for {name} panicked")));
                    }
                }
            }
        }
        drop(self.xdp);
        first
    }
}
