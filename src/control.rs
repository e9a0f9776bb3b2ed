//! The control plane: a unix socket (root only) answering `status` and
//! `stats` with JSON, the `xblade stats` client that reads it, and an
//! optional Prometheus text endpoint. Everything here reads the counters
//! workers publish (lock-free snapshots); nothing touches the request path.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::stats::{StatsCell, WorkerStats};
use crate::target::{DropReason, Export};

/// Directory holding one control socket per running xblade.
pub const SOCKET_DIR: &str = "/run/xblade";

/// Default socket path of this process.
pub fn default_socket() -> PathBuf {
    PathBuf::from(SOCKET_DIR).join(format!("xblade-{}.sock", std::process::id()))
}

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
}

/// The answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Process id.
    pub pid: u32,
    /// Datapath in use.
    pub datapath: String,
    /// Exports.
    pub exports: Vec<ExportStatus>,
    /// Per-worker counters.
    pub workers: Vec<serde_json::Value>,
}

/// What the control plane reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Datapath name.
    pub datapath: String,
    /// Exports.
    pub exports: Vec<Arc<Export>>,
    /// Worker counters.
    pub stats: Vec<StatsCell>,
}

impl Sources {
    fn status(&self) -> Status {
        Status {
            pid: std::process::id(),
            datapath: self.datapath.clone(),
            exports: self
                .exports
                .iter()
                .map(|e| {
                    let s = e.state();
                    ExportStatus {
                        shelf: e.info.shelf,
                        slot: e.info.slot,
                        sectors: s.sectors,
                        read_only: s.read_only,
                        config: String::from_utf8_lossy(&s.config).into_owned(),
                        mac_mask: s.mask.iter().map(|m| m.to_string()).collect(),
                        reserve: s.reserve.iter().map(|m| m.to_string()).collect(),
                    }
                })
                .collect(),
            workers: self
                .stats
                .iter()
                .map(|c| serde_json::to_value(&**c.load()).unwrap_or_default())
                .collect(),
        }
    }

    fn workers(&self) -> Vec<WorkerStats> {
        self.stats.iter().map(|c| (**c.load()).clone()).collect()
    }
}

/// The running control plane; stops when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    socket: Option<PathBuf>,
    stop: Arc<AtomicBool>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Start the unix socket at `socket` (mode 0600) and, if asked, the
/// Prometheus endpoint at `metrics`.
pub fn start(
    sources: Sources,
    socket: Option<&Path>,
    metrics: Option<SocketAddr>,
) -> io::Result<ControlPlane> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut cp = ControlPlane {
        socket: None,
        stop: stop.clone(),
    };
    if let Some(path) = socket {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        cp.socket = Some(path.to_path_buf());
        let (src, stop) = (sources.clone(), stop.clone());
        std::thread::Builder::new()
            .name("xblade-control".into())
            .spawn(move || serve_unix(listener, src, stop))?;
        info!(socket = %path.display(), "control socket ready (xblade stats)");
    }
    if let Some(addr) = metrics {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let (src, stop) = (sources, stop);
        std::thread::Builder::new()
            .name("xblade-metrics".into())
            .spawn(move || serve_metrics(listener, src, stop))?;
        info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    }
    Ok(cp)
}

fn serve_unix(listener: UnixListener, src: Sources, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer_unix(stream, &src) {
                    warn!(error = %e, "control client");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                warn!(error = %e, "control socket accept");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn answer_unix(stream: UnixStream, src: &Sources) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?)
        .take(256)
        .read_line(&mut line)?;
    let mut out = stream;
    match line.trim() {
        "status" | "stats" => {
            let body = serde_json::to_string(&src.status()).map_err(io::Error::other)?;
            out.write_all(body.as_bytes())?;
        }
        other => {
            out.write_all(format!("{{\"error\":\"unknown request {other:?}\"}}").as_bytes())?;
        }
    }
    Ok(())
}

fn serve_metrics(listener: TcpListener, src: Sources, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let body = prometheus_text(&src.workers());
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Prometheus text exposition of worker counters, labelled by interface and
/// queue.
pub fn prometheus_text(workers: &[WorkerStats]) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, help: &str, get: &dyn Fn(&WorkerStats) -> u64| {
        o.push_str(&format!(
            "# HELP xblade_{name} {help}\n# TYPE xblade_{name} counter\n"
        ));
        for w in workers {
            o.push_str(&format!(
                "xblade_{name}{{iface=\"{}\",queue=\"{}\"}} {}\n",
                w.iface,
                w.queue,
                get(w)
            ));
        }
    };
    metric("rx_frames_total", "Frames received.", &|w| w.rx_frames);
    metric("tx_frames_total", "Frames sent.", &|w| w.tx_frames);
    metric("tx_dropped_total", "Replies the kernel refused.", &|w| {
        w.tx_dropped
    });
    metric("disk_errors_total", "Failed disk operations.", &|w| {
        w.disk_errors
    });
    metric("ata_read_total", "READ requests.", &|w| w.engine.ata_read);
    metric("ata_write_total", "WRITE requests.", &|w| {
        w.engine.ata_write
    });
    metric("ata_errors_total", "ATA replies with ERR status.", &|w| {
        w.engine.ata_errors
    });
    metric("aoe_errors_total", "Replies with an AoE error.", &|w| {
        w.engine.aoe_errors
    });
    metric("query_config_total", "Query Config requests.", &|w| {
        w.engine.query_config
    });
    o.push_str("# HELP xblade_dropped_total Frames dropped without reply, by reason.\n# TYPE xblade_dropped_total counter\n");
    for w in workers {
        for r in DropReason::ALL {
            o.push_str(&format!(
                "xblade_dropped_total{{iface=\"{}\",queue=\"{}\",reason=\"{}\"}} {}\n",
                w.iface,
                w.queue,
                r.name(),
                w.engine.drops_for(r)
            ));
        }
    }
    o.push_str("# HELP xblade_disk_in_flight Disk operations in flight.\n# TYPE xblade_disk_in_flight gauge\n");
    for w in workers {
        o.push_str(&format!(
            "xblade_disk_in_flight{{iface=\"{}\",queue=\"{}\"}} {}\n",
            w.iface, w.queue, w.disk_in_flight
        ));
    }
    o
}

/// Ask one running xblade for its status.
pub fn query(socket: &Path) -> io::Result<Status> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"status\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    serde_json::from_str(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Every control socket in [`SOCKET_DIR`] whose process still runs.
pub fn discover_sockets() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(SOCKET_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Render a status for people.
pub fn render(st: &Status) -> String {
    let mut o = format!("xblade pid {} datapath {}\n", st.pid, st.datapath);
    for e in &st.exports {
        o.push_str(&format!(
            "  e{}.{}  {} sectors ({:.1} GiB){}{}{}\n",
            e.shelf,
            e.slot,
            e.sectors,
            e.sectors as f64 * 512.0 / (1u64 << 30) as f64,
            if e.read_only { "  read-only" } else { "" },
            if e.mac_mask.is_empty() {
                String::new()
            } else {
                format!("  mask {}", e.mac_mask.join(","))
            },
            if e.reserve.is_empty() {
                String::new()
            } else {
                format!("  reserved to {}", e.reserve.join(","))
            },
        ));
    }
    o.push_str(&format!(
        "  {:<12} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8} {:>8}\n",
        "iface", "queue", "rx", "tx", "reads", "writes", "errors", "drops", "inflight"
    ));
    for w in &st.workers {
        let g = |k: &str| w.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let e = |k: &str| w["engine"].get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let drops: u64 = w["engine"]["drops"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        o.push_str(&format!(
            "  {:<12} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8} {:>8}\n",
            w["iface"].as_str().unwrap_or("?"),
            g("queue"),
            g("rx_frames"),
            g("tx_frames"),
            e("ata_read"),
            e("ata_write"),
            e("ata_errors") + e("aoe_errors") + g("disk_errors"),
            drops,
            g("disk_in_flight"),
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_has_labels() {
        let w = WorkerStats {
            iface: "eth1".into(),
            queue: 2,
            rx_frames: 5,
            ..Default::default()
        };
        let t = prometheus_text(&[w]);
        assert!(t.contains("xblade_rx_frames_total{iface=\"eth1\",queue=\"2\"} 5"));
        assert!(t.contains("reason=\"mask_denied\"} 0"));
    }
}
