//! `xblade serve` (and the vblade form) as a long-running service: start
//! the [`Server`], the control plane, then loop on signals, control-socket
//! commands, the periodic size check and the systemd watchdog until told to
//! stop.
//!
//! - SIGINT/SIGTERM: stop after the requests in hand are answered.
//! - SIGHUP: reload the configuration file (when there is one), grow the
//!   exports whose store grew, and announce every export again.
//! - `xblade reload`, `xblade resize SHELF.SLOT`: over the control socket,
//!   answered with what was done or why not.
//! - Every `size_check_interval` seconds: grow and announce exports whose
//!   store grew.
//! - Under systemd (`Type=notify`): READY=1 once serving, STATUS= lines,
//!   WATCHDOG=1 every half `WatchdogSec` while every worker runs and still
//!   publishes its counters, STOPPING=1 on the way out.
//!
//! - An rtnetlink link event (an interface created, deleted, up, down):
//!   interfaces gone stop their workers ("waiting for IF" in `status`),
//!   those back are served again, with no restart.
//! - The next retry of an export or interface set aside (partial start).
//!
//! The loop sleeps until one of these is due or arrives (signals come
//! through a channel from a thread of their own; a worker thread that ends
//! says so on another, and one that ended unasked stops the daemon at
//! once): an idle daemon wakes only for its size checks, a watchdog ping
//! when systemd asked for one, and a look at the workers' pulse every few
//! seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{Command, Request};
use crate::sdnotify::{watchdog_interval, Notifier};
use crate::server::Server;

/// How often the loop looks at the workers' pulse when nothing else wakes
/// it (a stuck worker is logged, and unhealthy ones stop the watchdog
/// pings, within about this); a worker thread that ends wakes it at once.
const STALL_CHECK: Duration = Duration::from_secs(5);

/// After a link event, wait this long for the rest of its burst (a
/// deletion and re-creation, then the link coming up) before looking.
const LINK_SETTLE: Duration = Duration::from_millis(200);

/// Deadlines this close are taken together, in one wake.
const SLACK: Duration = Duration::from_millis(20);

/// Re-reads the configuration for a reload (file plus command-line
/// overrides, validated).
pub type Loader = Box<dyn Fn() -> Result<Config>>;

/// How to run.
pub struct Options {
    /// Pin worker i to core `cores[i]`.
    pub cores: Vec<usize>,
    /// Control socket (`None`: none).
    pub control_socket: Option<PathBuf>,
    /// Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
    /// The configuration file and how to reload it (`None`: vblade form,
    /// nothing to reload).
    pub config: Option<(PathBuf, Loader)>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("cores", &self.cores)
            .field("control_socket", &self.control_socket)
            .field("metrics", &self.metrics)
            .field("config", &self.config.as_ref().map(|c| &c.0))
            .finish()
    }
}

fn status_line(server: &Server) -> String {
    let aside = server.not_serving_count();
    format!(
        "STATUS=serving {} export(s) on {} interface(s), datapath {}{}",
        server.export_count(),
        server.iface_count(),
        server.datapath(),
        if aside > 0 {
            format!("; {aside} not serving (xblade status)")
        } else {
            String::new()
        }
    )
}

/// Follow rtnetlink link events on a thread of its own: each burst is one
/// message on the channel (bounded to one: bursts coalesce). Without the
/// socket (it did not open), interfaces are still looked at on every
/// retry and pulse.
fn link_events() -> (
    crossbeam_channel::Receiver<()>,
    Option<std::thread::JoinHandle<()>>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let ev = match crate::net::netlink::LinkEvents::open() {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "cannot follow link events (rtnetlink): interfaces that go and come back are noticed on the next periodic look only");
            return (crossbeam_channel::never(), None, stop);
        }
    };
    let st = Arc::clone(&stop);
    let t = std::thread::Builder::new()
        .name("xb-links".into())
        .spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match ev.wait(Duration::from_millis(250)) {
                    Ok(true) => {
                        let _ = tx.try_send(());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        error!(error = %e, "link events: receive failed; no longer followed");
                        return;
                    }
                }
            }
        })
        .ok();
    (rx, t, stop)
}

/// Reload from `loader` into `server`; the message for the operator. A
/// reload that left changes for a restart is an `Err` (what was applied is
/// in force, and said): the operator's `xblade reload` exits non-zero, and
/// `pending` (shown by `status`) lists what runs differently from the file.
fn reload(
    server: &mut Server,
    loader: &Loader,
    pending: &ArcSwap<Vec<String>>,
) -> Result<String, String> {
    let cfg = loader().map_err(|e| format!("configuration refused, nothing changed: {e:#}"))?;
    let r = server.reload(&cfg)?;
    let mut m = if r.applied.is_empty() {
        "reloaded: nothing to change".to_string()
    } else {
        format!("reloaded: {}", r.applied.join("; "))
    };
    pending.store(Arc::new(r.needs_restart.clone()));
    if server.export_count() == 0 {
        m.push_str("; no export configured: serving nothing");
    }
    let mut refused = false;
    if !r.needs_restart.is_empty() {
        m.push_str(&format!(
            "; NOT applied, needs a restart: {}",
            r.needs_restart.join("; ")
        ));
        refused = true;
    }
    if !r.not_serving.is_empty() {
        // Applied, but not all of it serves: not a success.
        m.push_str(&format!(
            "; not serving (set aside, retried): {}",
            r.not_serving.join("; ")
        ));
        refused = true;
    }
    if refused {
        return Err(m);
    }
    Ok(m)
}

/// Log a reload's outcome and count it (a partly applied one counts: its
/// applied part is in force).
fn log_reload(r: &Result<String, String>, reloads: &AtomicU64) {
    match r {
        Ok(m) => {
            reloads.fetch_add(1, Ordering::Relaxed);
            info!("{m}");
        }
        Err(e) if e.starts_with("reloaded:") => {
            reloads.fetch_add(1, Ordering::Relaxed);
            warn!("{e}");
        }
        Err(e) => error!("{e}"),
    }
}

/// Carry out a control-socket command; the answer for the operator.
fn answer(
    server: &mut Server,
    opts: &Options,
    reloads: &AtomicU64,
    pending: &ArcSwap<Vec<String>>,
    command: Command,
    notify: &dyn Fn(&str),
) -> Result<String, String> {
    match command {
        Command::Resize(shelf, slot) => server.resize(shelf, slot),
        Command::Reload => match &opts.config {
            None => Err("started without --config (vblade form): nothing to reload".to_string()),
            Some((_, loader)) => {
                let r = reload(server, loader, pending);
                log_reload(&r, reloads);
                notify(&status_line(server));
                r
            }
        },
    }
}

/// Signals on a channel, from their own thread, so that the service loop
/// waits for them in the same select as everything else.
fn signal_thread(
    mut signals: signal_hook::iterator::Signals,
) -> Result<(
    crossbeam_channel::Receiver<i32>,
    std::thread::JoinHandle<()>,
)> {
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("xb-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if sig_tx.send(s).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok((sig_rx, thread))
}

/// The service loop's deadlines: retries of set-aside exports and
/// interfaces, size checks, a look at the workers' pulse and the systemd
/// watchdog ping (only if systemd asked for one).
struct Timers {
    watchdog: Option<Duration>,
    /// A stuck worker stops the pings within a ping interval; one that
    /// turns again resumes them as soon.
    pulse_every: Duration,
    last_ping: Option<Instant>,
    last_size_check: Instant,
    last_health: Instant,
    stalled: bool,
}

impl Timers {
    fn new(watchdog: Option<Duration>) -> Timers {
        Timers {
            watchdog,
            pulse_every: watchdog.map_or(STALL_CHECK, |w| (w / 2).min(STALL_CHECK)),
            last_ping: None,
            last_size_check: Instant::now(),
            last_health: Instant::now(),
            stalled: false,
        }
    }

    /// When the loop must wake at the latest.
    fn wake(&self, server: &Server) -> Instant {
        let size_every = Duration::from_secs(server.config().size_check_secs);
        let mut wake = self.last_health + self.pulse_every;
        if !size_every.is_zero() {
            wake = wake.min(self.last_size_check + size_every);
        }
        if let Some(w) = self.watchdog.filter(|_| !self.stalled) {
            wake = wake.min(self.last_ping.map_or_else(Instant::now, |t| t + w / 2));
        }
        if let Some(t) = server.next_retry() {
            wake = wake.min(t);
        }
        wake
    }

    /// Do what is due; false when a worker is dead.
    fn run_due(&mut self, server: &mut Server, notify: &dyn Fn(&str)) -> bool {
        let now = Instant::now();
        if server.next_retry().is_some_and(|t| now + SLACK >= t) {
            server.retry_due();
            notify(&status_line(server));
        }
        let size_every = Duration::from_secs(server.config().size_check_secs);
        if !size_every.is_zero() && now + SLACK >= self.last_size_check + size_every {
            server.check_sizes();
            self.last_size_check = now;
        }
        let health = server.health();
        self.last_health = now;
        if !health.alive {
            return false;
        }
        if health.responsive == self.stalled {
            self.stalled = !health.responsive;
            if self.stalled {
                warn!("a worker has not turned its loop for seconds (stuck disk?): the systemd watchdog is no longer pinged");
                notify("STATUS=a worker is stuck");
            } else {
                info!("every worker turns its loop again");
                notify(&status_line(server));
            }
        }
        if let Some(w) = self.watchdog {
            if health.responsive && self.last_ping.is_none_or(|t| now + SLACK >= t + w / 2) {
                notify("WATCHDOG=1");
                self.last_ping = Some(now);
            }
        }
        true
    }
}

/// Serve `cfg` until SIGINT/SIGTERM or a worker failure.
pub fn run(cfg: Config, opts: Options) -> Result<()> {
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let notifier = Notifier::from_env();
    let watchdog = watchdog_interval();
    let mut server = Server::start(&cfg, &opts.cores)?;
    let config_path = opts.config.as_ref().map(|c| c.0.clone());
    if cfg.exports.is_empty() {
        let config = config_path
            .as_ref()
            .map_or_else(|| "(command line)".to_string(), |p| p.display().to_string());
        warn!(%config,
              "no export configured: serving nothing until exports are added and xblade is reloaded (xblade reload, or SIGHUP)");
    }
    let (req_tx, mut req_rx) = crossbeam_channel::bounded::<Request>(4);
    let reloads = Arc::new(AtomicU64::new(0));
    let pending = Arc::new(ArcSwap::from_pointee(Vec::new()));
    let _control = crate::control::start(
        crate::control::Sources {
            inventory: server.inventory(),
            requests: Some(req_tx),
            config: config_path.clone(),
            reloads: Arc::clone(&reloads),
            pending_restart: Arc::clone(&pending),
            started: Instant::now(),
        },
        opts.control_socket.as_deref(),
        opts.metrics,
    )
    .context("starting the control plane")?;
    info!(
        exports = cfg.exports.len(),
        datapath = %server.datapath(),
        "xblade serving; SIGINT or SIGTERM to stop, SIGHUP or xblade reload to reload"
    );
    let notify = |s: &str| {
        if let Some(n) = &notifier {
            n.notify(s);
        }
    };
    notify(&format!("READY=1\n{}", status_line(&server)));
    if let Some(w) = watchdog {
        info!(interval = ?w, "systemd watchdog: pinging while the workers are healthy");
    }

    // Signals arrive on a channel from their own thread, so the loop
    // below sleeps in one select until a signal, a control request or a
    // worker's exit, or until the next deadline: a size check, a watchdog
    // ping (only if systemd asked for one), a look at the workers' pulse.
    let handle = signals.handle();
    let (mut sig_rx, sig_thread) = signal_thread(signals)?;
    let exits = server.worker_exits();
    let (links, links_thread, links_stop) = link_events();
    let mut timers = Timers::new(watchdog);
    let mut stop_reason = None;
    let mut failed = false;
    while stop_reason.is_none() {
        let wake = timers.wake(&server);
        crossbeam_channel::select! {
            recv(sig_rx) -> sig => match sig {
                Ok(SIGHUP) => {
                    info!("SIGHUP: reloading, checking sizes, announcing exports again");
                    if let Some((_, loader)) = &opts.config {
                        log_reload(&reload(&mut server, loader, &pending), &reloads);
                        notify(&status_line(&server));
                    }
                    server.check_sizes();
                    server.announce();
                }
                Ok(s) => stop_reason = Some(s),
                Err(_) => {
                    // Not expected before `handle.close()`: serve on.
                    error!("the signal thread ended: signals are no longer handled");
                    sig_rx = crossbeam_channel::never();
                }
            },
            recv(req_rx) -> req => match req {
                Ok(req) => {
                    let answer = answer(&mut server, &opts, &reloads, &pending, req.command, &notify);
                    let _ = req.reply.send(answer);
                }
                // Without a control socket the sender is gone: never ready.
                Err(_) => req_rx = crossbeam_channel::never(),
            },
            recv(exits) -> id => {
                if let Ok(id) = id {
                    // A worker whose interface went away may end first:
                    // that interface is then set aside, not a failure.
                    if server.ended_unasked(id).is_some() {
                        server.links_changed();
                        notify(&status_line(&server));
                    }
                    if let Some(name) = server.ended_unasked(id) {
                        error!(worker = %name, "worker thread ended");
                        failed = true;
                    }
                }
            },
            recv(links) -> _ => {
                // Let a burst (delete, create, rename, up) settle first.
                std::thread::sleep(LINK_SETTLE);
                while links.try_recv().is_ok() {}
                server.links_changed();
                notify(&status_line(&server));
            },
            default(wake.saturating_duration_since(Instant::now())) => {}
        }
        if failed || !timers.run_due(&mut server, &notify) {
            failed = true;
            break;
        }
    }
    handle.close();
    let _ = sig_thread.join();
    links_stop.store(true, Ordering::Relaxed);
    if let Some(t) = links_thread {
        let _ = t.join();
    }
    notify("STOPPING=1");
    if failed {
        error!("a worker stopped: shutting down");
    }
    let why = match stop_reason {
        Some(SIGTERM) => "SIGTERM",
        Some(SIGINT) => "SIGINT",
        Some(_) => "a signal",
        None => "a worker stopped",
    };
    info!("stopping ({why}): finishing in-flight requests");
    server.stop().context("a worker failed")?;
    if failed {
        anyhow::bail!("a worker stopped unexpectedly (see the log above)");
    }
    info!("stopped");
    Ok(())
}
