//! The control plane: a unix socket (root only: mode 0600, in a 0700
//! directory under systemd) answering one request per connection, the
//! client side of `xblade status|stats|resize|reload`, and an optional
//! Prometheus text endpoint.
//!
//! Requests, one line each:
//! - `status` (or `stats`): a JSON [`Status`] built from the server's
//!   [`Inventory`] and the counters workers publish (lock-free snapshots;
//!   nothing here touches the request path);
//! - `resize SHELF.SLOT`: re-read that export's backing-store size, grow
//!   and announce it;
//! - `reload`: re-read the configuration file and apply it live.
//!
//! `resize` and `reload` are carried out by the thread that owns the
//! server (see [`crate::service`]); the answer is JSON `{"ok": MESSAGE}`
//! or `{"error": MESSAGE}`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::server::Inventory;
use crate::stats::WorkerStats;
use crate::target::DropReason;

/// Directory holding one control socket per running xblade.
pub const SOCKET_DIR: &str = "/run/xblade";

/// How long a client waits for `resize`/`reload` (a reload waits up to 10 s
/// for workers to take their new export sets).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// An operation the thread owning the server carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Re-read an export's store size, grow and announce it.
    Resize(u16, u8),
    /// Re-read the configuration and apply it.
    Reload,
}

/// A [`Command`] and where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// The answer: a message for the operator, or why it failed.
    pub reply: Sender<Result<String, String>>,
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
            datapath: inv.datapath.clone(),
            exports: inv
                .exports
                .iter()
                .map(|v| {
                    let e = &v.export;
                    let s = e.state();
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
        }
    }

    fn workers(&self) -> Vec<WorkerStats> {
        self.inventory
            .load()
            .workers
            .iter()
            .map(|w| (**w.stats.load()).clone())
            .collect()
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
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                // Only root may reach the sockets inside.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
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
        info!(socket = %path.display(), "control socket ready (xblade status, stats, resize, reload)");
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

/// Parse `SHELF.SLOT` (optionally `eSHELF.SLOT`, as Linux names devices).
pub fn parse_target(s: &str) -> Option<(u16, u8)> {
    let t = s.trim();
    let t = t.strip_prefix('e').unwrap_or(t);
    let (a, b) = t.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_command(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("reload"), None, _) => Ok(Command::Reload),
        (Some("resize"), Some(t), None) => parse_target(t)
            .map(|(a, b)| Command::Resize(a, b))
            .ok_or_else(|| format!("resize {t:?}: expected SHELF.SLOT, e.g. 1.2")),
        _ => Err(format!("unknown request {line:?}")),
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
    let answer = |r: Result<String, String>| match r {
        Ok(m) => serde_json::json!({ "ok": m }),
        Err(e) => serde_json::json!({ "error": e }),
    };
    let body = match line.trim() {
        "status" | "stats" => serde_json::to_value(src.status()).map_err(io::Error::other)?,
        other => answer(parse_command(other).and_then(|command| {
            let Some(tx) = &src.requests else {
                return Err("this xblade takes no commands".into());
            };
            let (reply, rx) = crossbeam_channel::bounded(1);
            tx.send(Request { command, reply })
                .map_err(|_| "xblade is stopping".to_string())?;
            rx.recv_timeout(COMMAND_TIMEOUT)
                .map_err(|_| "no answer from the server thread".to_string())?
        })),
    };
    out.write_all(body.to_string().as_bytes())?;
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
                let mut body = prometheus_text(&src.workers());
                body.push_str(&prometheus_exports(&src.status().exports));
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

/// Fields of the XDP statistics that are levels, not counts.
const XDP_GAUGES: [&str; 1] = ["fill_depth"];

/// Prometheus text exposition of worker counters, labelled by interface and
/// queue; on the XDP datapath also every AF_XDP and XDP-program counter
/// (`xblade_xdp_*`) and an `xblade_xdp_info` gauge with the mode.
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
    metric(
        "rx_kernel_dropped_total",
        "AF_PACKET: requests the kernel dropped, the socket's receive buffer being full.",
        &|w| w.rx_kernel_dropped,
    );
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
    // XDP: every numeric counter of XdpStats, by its field name.
    let xdp: Vec<(&WorkerStats, serde_json::Map<String, serde_json::Value>)> = workers
        .iter()
        .filter_map(|w| {
            let v = serde_json::to_value(w.xdp.as_ref()?).ok()?;
            Some((w, v.as_object()?.clone()))
        })
        .collect();
    if let Some((_, first)) = xdp.first() {
        o.push_str("# HELP xblade_xdp_info XDP attach mode and socket options of a queue (value 1).\n# TYPE xblade_xdp_info gauge\n");
        for (w, m) in &xdp {
            o.push_str(&format!(
                "xblade_xdp_info{{iface=\"{}\",queue=\"{}\",mode=\"{}\",zero_copy=\"{}\",busy_poll=\"{}\",huge_pages=\"{}\"}} 1\n",
                w.iface,
                w.queue,
                m.get("mode").and_then(|v| v.as_str()).unwrap_or("?"),
                m.get("zero_copy").and_then(|v| v.as_bool()).unwrap_or(false),
                m.get("busy_poll").and_then(|v| v.as_bool()).unwrap_or(false),
                m.get("huge_pages").and_then(|v| v.as_bool()).unwrap_or(false),
            ));
        }
        for (field, v) in first {
            if !v.is_u64() {
                continue;
            }
            // Gauges among the counters: no _total suffix.
            let (name, kind) = if XDP_GAUGES.contains(&field.as_str()) {
                (format!("xblade_xdp_{field}"), "gauge")
            } else {
                (format!("xblade_xdp_{field}_total"), "counter")
            };
            o.push_str(&format!(
                "# HELP {name} AF_XDP/XDP {kind} {field} (see xblade status --json).\n# TYPE {name} {kind}\n"
            ));
            for (w, m) in &xdp {
                o.push_str(&format!(
                    "{name}{{iface=\"{}\",queue=\"{}\"}} {}\n",
                    w.iface,
                    w.queue,
                    m.get(field).and_then(|v| v.as_u64()).unwrap_or(0)
                ));
            }
        }
    }
    o
}

/// Prometheus gauges of the exports: capacity and read-only flag.
pub fn prometheus_exports(exports: &[ExportStatus]) -> String {
    let mut o = String::from(
        "# HELP xblade_export_sectors Exported capacity in 512-byte sectors.\n# TYPE xblade_export_sectors gauge\n",
    );
    for e in exports {
        o.push_str(&format!(
            "xblade_export_sectors{{shelf=\"{}\",slot=\"{}\"}} {}\n",
            e.shelf, e.slot, e.sectors
        ));
    }
    o.push_str("# HELP xblade_export_read_only 1 when the export refuses writes.\n# TYPE xblade_export_read_only gauge\n");
    for e in exports {
        o.push_str(&format!(
            "xblade_export_read_only{{shelf=\"{}\",slot=\"{}\"}} {}\n",
            e.shelf,
            e.slot,
            u8::from(e.read_only)
        ));
    }
    o
}

fn exchange(socket: &Path, line: &str, timeout: Duration) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Ask one running xblade for its status.
pub fn query(socket: &Path) -> io::Result<Status> {
    let body = exchange(socket, "status", Duration::from_secs(3))?;
    serde_json::from_str(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Send `resize SHELF.SLOT` or `reload` to one running xblade: `Ok(Ok)`
/// with its message, `Ok(Err)` with its refusal, `Err` when it could not
/// be asked.
pub fn command(socket: &Path, command: &Command) -> io::Result<Result<String, String>> {
    let line = match command {
        Command::Reload => "reload".to_string(),
        Command::Resize(a, b) => format!("resize {a}.{b}"),
    };
    let body = exchange(socket, &line, COMMAND_TIMEOUT)?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let text = |k: &str| v.get(k).and_then(|m| m.as_str()).map(str::to_string);
    Ok(match (text("ok"), text("error")) {
        (Some(m), _) => Ok(m),
        (None, Some(e)) => Err(e),
        _ => Err(format!("unexpected answer {body:?}")),
    })
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

fn sectors_human(sectors: u64) -> String {
    let b = sectors as f64 * 512.0;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

fn uptime_human(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Per-worker counters for people: one line per worker. With `rates`
/// (seconds since `prev` was taken), frames and requests per second too.
pub fn render(st: &Status) -> String {
    render_counters(st, None)
}

/// [`render`] with per-second rates against an earlier status.
pub fn render_counters(st: &Status, prev: Option<(&Status, f64)>) -> String {
    let mut o = format!("xblade pid {} datapath {}\n", st.pid, st.datapath);
    for e in &st.exports {
        o.push_str(&format!(
            "  e{}.{}  {} sectors ({}){}{}{}\n",
            e.shelf,
            e.slot,
            e.sectors,
            sectors_human(e.sectors),
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
        "  {:<12} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "iface", "queue", "rx", "tx", "reads", "writes", "errors", "drops", "inflight"
    ));
    if prev.is_some() {
        o.push_str(&format!(
            " {:>9} {:>9} {:>9}",
            "rx/s", "reads/s", "writes/s"
        ));
    }
    o.push('\n');
    let g = |w: &serde_json::Value, k: &str| w.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let e =
        |w: &serde_json::Value, k: &str| w["engine"].get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    for w in &st.workers {
        let drops: u64 = w["engine"]["drops"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        o.push_str(&format!(
            "  {:<12} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8} {:>8}",
            w["iface"].as_str().unwrap_or("?"),
            g(w, "queue"),
            g(w, "rx_frames"),
            g(w, "tx_frames"),
            e(w, "ata_read"),
            e(w, "ata_write"),
            e(w, "ata_errors") + e(w, "aoe_errors") + g(w, "disk_errors"),
            drops,
            g(w, "disk_in_flight"),
        ));
        if let Some((p, secs)) = prev {
            let same = p
                .workers
                .iter()
                .find(|x| x["iface"] == w["iface"] && x["queue"] == w["queue"]);
            let rate = |now: u64, get: &dyn Fn(&serde_json::Value) -> u64| {
                let before = same.map_or(now, get);
                now.saturating_sub(before) as f64 / secs.max(1e-3)
            };
            o.push_str(&format!(
                " {:>9.0} {:>9.0} {:>9.0}",
                rate(g(w, "rx_frames"), &|x| g(x, "rx_frames")),
                rate(e(w, "ata_read"), &|x| e(x, "ata_read")),
                rate(e(w, "ata_write"), &|x| e(x, "ata_write")),
            ));
        }
        o.push('\n');
    }
    o
}

/// The whole status for people: process, exports, interfaces, workers.
pub fn render_status(st: &Status) -> String {
    let mut o = format!(
        "xblade {} pid {}, up {}, datapath {}\n",
        st.version,
        st.pid,
        uptime_human(st.uptime_secs),
        st.datapath
    );
    match &st.config {
        Some(c) => o.push_str(&format!("config {c} (reloaded {} times)\n", st.reloads)),
        None => o.push_str("config: command line (vblade form)\n"),
    }
    o.push_str(&format!("exports: {}\n", st.exports.len()));
    if st.exports.is_empty() {
        o.push_str("  (none configured: add [[export]] tables and run xblade reload)\n");
    }
    for e in &st.exports {
        let mut flags = vec![if e.read_only { "ro" } else { "rw" }.to_string()];
        if e.direct {
            flags.push("direct".into());
        }
        if e.writeback {
            flags.push("writeback".into());
        }
        if e.fixed_length {
            flags.push("fixed-length".into());
        }
        o.push_str(&format!(
            "  e{}.{:<4} {:>12} sectors ({:>9})  {}  {}{}  on {}\n",
            e.shelf,
            e.slot,
            e.sectors,
            sectors_human(e.sectors),
            flags.join(","),
            e.source,
            if e.offset > 0 {
                format!(" @{}", e.offset)
            } else {
                String::new()
            },
            e.interfaces.join(","),
        ));
        if !e.mac_mask.is_empty() {
            o.push_str(&format!("           mask {}\n", e.mac_mask.join(",")));
        }
        if !e.reserve.is_empty() {
            o.push_str(&format!("           reserved to {}\n", e.reserve.join(",")));
        }
        if !e.config.is_empty() {
            o.push_str(&format!("           config string {:?}\n", e.config));
        }
    }
    o.push_str(&format!("interfaces: {}\n", st.interfaces.len()));
    for i in &st.interfaces {
        o.push_str(&format!(
            "  {:<12} {:<8} {:<6} mtu {:<5} queues {:<3} exports {}\n",
            i.name,
            i.datapath,
            i.xdp_mode.as_deref().unwrap_or("-"),
            i.mtu,
            i.queues,
            i.exports.join(","),
        ));
    }
    o.push_str(&format!("workers: {}\n", st.workers.len()));
    if !st.workers.is_empty() {
        o.push_str(&format!(
            "  {:<14} {:<8} {:>4} {:<10} {:>10} {:>10} {:>10} {:>7} {:>8}  {:<17} {}\n",
            "worker",
            "datapath",
            "core",
            "xdp",
            "rx",
            "reads",
            "writes",
            "errors",
            "inflight",
            "mac",
            "steer"
        ));
    }
    for w in &st.workers {
        let g = |k: &str| w.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let e = |k: &str| w["engine"].get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let xdp = match w.get("xdp") {
            Some(x) if x.is_object() => format!(
                "{}{}",
                x["mode"].as_str().unwrap_or("?"),
                if x["zero_copy"].as_bool() == Some(true) {
                    ",zc"
                } else {
                    ",copy"
                }
            ),
            _ => "-".into(),
        };
        o.push_str(&format!(
            "  {:<14} {:<8} {:>4} {:<10} {:>10} {:>10} {:>10} {:>7} {:>8}  {:<17} {}\n",
            w["name"].as_str().or(w["iface"].as_str()).unwrap_or("?"),
            w["datapath"].as_str().unwrap_or("?"),
            w["core"].as_u64().map_or("-".into(), |c| c.to_string()),
            xdp,
            g("rx_frames"),
            e("ata_read"),
            e("ata_write"),
            e("ata_errors") + e("aoe_errors") + g("disk_errors"),
            g("disk_in_flight"),
            w["mac"].as_str().unwrap_or("-"),
            w["xdp"]["steer"].as_str().unwrap_or("-"),
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::XdpStats;

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
        assert!(
            !t.contains("xblade_xdp_"),
            "no XDP section without XDP workers"
        );
    }

    #[test]
    fn prometheus_exports_xdp_counters() {
        let w = WorkerStats {
            iface: "eth1".into(),
            queue: 1,
            xdp: Some(XdpStats {
                mode: "native",
                zero_copy: true,
                rx_ring_full: 7,
                bpf_redirected: 42,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = prometheus_text(&[w]);
        assert!(
            t.contains("xblade_xdp_rx_ring_full_total{iface=\"eth1\",queue=\"1\"} 7"),
            "{t}"
        );
        assert!(t.contains("xblade_xdp_bpf_redirected_total{iface=\"eth1\",queue=\"1\"} 42"));
        assert!(t.contains(
            "xblade_xdp_info{iface=\"eth1\",queue=\"1\",mode=\"native\",zero_copy=\"true\",busy_poll=\"false\",huge_pages=\"false\"} 1"
        ));
        // Every line is a comment or `name{labels} value`.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').expect("value");
            assert!(v.parse::<u64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("reload"), Ok(Command::Reload));
        assert_eq!(parse_command("resize 1.2"), Ok(Command::Resize(1, 2)));
        assert_eq!(
            parse_command("resize e65534.254"),
            Ok(Command::Resize(65534, 254))
        );
        assert!(parse_command("resize 1").is_err());
        assert!(parse_command("resize 1.300").is_err());
        assert!(parse_command("shutdown").is_err());
        assert_eq!(parse_target("e7.3"), Some((7, 3)));
    }
}
