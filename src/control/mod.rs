//! The control plane: a unix socket (root only: mode 0600, in a 0700
//! directory under systemd) answering one request per connection, the
//! client side of `xblade status|stats|resize|reload`, and an optional
//! Prometheus text endpoint.
//!
//! Requests, one line each:
//! - `status` (or `stats`): a JSON [`Status`] built from the server's
//!   inventory and the counters workers publish (lock-free snapshots;
//!   nothing here touches the request path);
//! - `resize SHELF.SLOT`: re-read that export's backing-store size, grow
//!   and announce it;
//! - `reload`: re-read the configuration file and apply it live.
//!
//! `resize` and `reload` are carried out by the thread that owns the
//! server (see [`crate::service`]); the answer is JSON `{"ok": MESSAGE}`
//! or `{"error": MESSAGE}`.
//!
//! Layout: `status` (what is reported), `server` (the socket's
//! protocol), `metrics` and `http` (the Prometheus endpoint), `exposition`
//! (its text format, written only through declared families), `reactor`
//! (the poll loop serving both listeners, one thread each: `xb-control`,
//! `xb-metrics`), `client`, `render` (text for people).

mod client;
mod exposition;
mod http;
mod metrics;
mod reactor;
mod render;
mod server;
mod status;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::info;

pub use client::{command, discover_sockets, query, STATUS_TIMEOUT};
pub use metrics::{prometheus_availability, prometheus_exports, prometheus_text};
pub use render::{render, render_counters, render_status};
pub use server::{Command, Request, MAX_COMMANDS};
pub use status::{DuplicateStatus, ExportStatus, IfaceStatus, NotServingStatus, Sources, Status};

/// Directory holding one control socket per running xblade.
pub const SOCKET_DIR: &str = "/run/xblade";

/// Default socket path of this process.
pub fn default_socket() -> PathBuf {
    PathBuf::from(SOCKET_DIR).join(format!("xblade-{}.sock", std::process::id()))
}

/// The running control plane; stops when dropped (promptly: the threads
/// wake on the stop descriptor, are joined, and the socket file goes).
#[derive(Debug)]
pub struct ControlPlane {
    socket: Option<PathBuf>,
    /// Written to (and dropped) to stop: its peer, polled by both
    /// threads, becomes readable.
    stop: Option<UnixStream>,
    threads: Vec<JoinHandle<()>>,
    metrics: Option<SocketAddr>,
}

impl ControlPlane {
    /// The address the Prometheus endpoint listens on (the real port when
    /// asked for port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut s) = self.stop.take() {
            let _ = s.write_all(b"x");
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
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
    let (stop, stop_rx) = UnixStream::pair()?;
    let stop_rx = Arc::new(stop_rx);
    let mut cp = ControlPlane {
        socket: None,
        stop: Some(stop),
        threads: Vec::new(),
        metrics: None,
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
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("--control-socket {}: cannot listen: {e}", path.display()),
            )
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        cp.socket = Some(path.to_path_buf());
        let proto = server::ControlSocket {
            src: sources.clone(),
            commands: Arc::new(AtomicUsize::new(0)),
        };
        cp.threads.push(spawn_reactor(
            "xb-control",
            listener,
            Arc::clone(&stop_rx),
            server::LIMITS,
            proto,
            "control socket",
        )?);
        info!(socket = %path.display(), "control socket ready (xblade status, stats, resize, reload)");
    }
    if let Some(addr) = metrics {
        let listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("--metrics {addr}: cannot listen: {e}"))
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        cp.metrics = Some(addr);
        let proto = metrics::Endpoint { src: sources };
        cp.threads.push(spawn_reactor(
            "xb-metrics",
            listener,
            Arc::clone(&stop_rx),
            metrics::LIMITS,
            proto,
            "metrics endpoint",
        )?);
        info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    }
    Ok(cp)
}

/// The thread `name` serving `listener` with `proto` until `stop` becomes
/// readable (see [`reactor::run`]).
fn spawn_reactor<L, P>(
    name: &str,
    listener: L,
    stop: Arc<UnixStream>,
    limits: reactor::Limits,
    mut proto: P,
    what: &'static str,
) -> io::Result<JoinHandle<()>>
where
    L: reactor::Listen + Send + 'static,
    P: reactor::Protocol<Stream = L::Stream> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || reactor::run(&listener, stop.as_raw_fd(), limits, &mut proto, what))
}
