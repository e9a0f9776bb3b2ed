//! Starting and stopping a target: open every backing store and interface
//! first (so a bad value fails before anything serves), then one worker per
//! interface, then wait for a signal and stop them in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use thiserror::Error;
use tracing::{info, warn};

use crate::config::{Config, DatapathKind, ExportSpec};
use crate::datapath::afpacket::{Control, Worker, WorkerSpec};
use crate::datapath::iface::{IfaceError, IfaceInfo};
use crate::disk::{Disk, DiskError};
use crate::stats::{new_cell, StatsCell};
use crate::target::{Export, ExportInfo, ExportState};

/// Why a target could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// Backing store.
    #[error("export {shelf}.{slot}: {source}")]
    Disk {
        /// Shelf.
        shelf: u16,
        /// Slot.
        slot: u8,
        /// Cause.
        source: DiskError,
    },
    /// Interface.
    #[error("export {shelf}.{slot}: {source}")]
    Iface {
        /// Shelf.
        shelf: u16,
        /// Slot.
        slot: u8,
        /// Cause.
        source: IfaceError,
    },
    /// Socket.
    #[error("interface {iface}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// Cause.
        source: std::io::Error,
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
    /// Published counters, one cell per worker.
    pub stats: Vec<StatsCell>,
    /// The exports (shared with the workers).
    pub exports: Vec<Arc<Export>>,
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
        if cfg.datapath == DatapathKind::Auto {
            info!("datapath auto: using AF_PACKET (the XDP datapath is not built into this binary yet)");
        }
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
            exports.push(Arc::new(Export::new(export_info(e, &host), state)));
            disks.push(Arc::new(disk));
        }
        let mut workers = Vec::new();
        let mut controls = Vec::new();
        let mut stats = Vec::new();
        for (n, (name, idx)) in by_iface.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(16);
            let cell = new_cell(name, 0);
            let spec = WorkerSpec {
                iface: ifaces[name].clone(),
                exports: idx.iter().map(|&i| Arc::clone(&exports[i])).collect(),
                disks: idx.iter().map(|&i| Arc::clone(&disks[i])).collect(),
                control: rx,
                stats: cell.clone(),
                core: cores.get(n).copied(),
            };
            let w = Worker::open(spec).map_err(|source| StartError::Socket {
                iface: name.clone(),
                source,
            })?;
            workers.push((name.clone(), w));
            controls.push(tx);
            stats.push(cell);
        }
        let threads = workers
            .into_iter()
            .map(|(name, w)| {
                let t = std::thread::Builder::new()
                    .name(format!("xblade-{name}"))
                    .spawn(move || w.run())
                    .expect("spawn worker thread");
                (name, t)
            })
            .collect();
        Ok(Server {
            controls,
            threads,
            stats,
            exports,
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

    /// Stop the workers (each finishes its batch: in-flight writes complete)
    /// and report the first worker error.
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
        first
    }
}
