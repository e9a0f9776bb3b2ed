//! systemd's service notification protocol (sd_notify(3)) without
//! libsystemd: one datagram per message to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
//!
//! `xblade serve` under `Type=notify` sends `READY=1` once its workers and
//! control socket are up, `STOPPING=1` when it stops, `STATUS=...` lines
//! for `systemctl status` (also after a reload, which `ExecReload=xblade
//! reload` performs synchronously), and `WATCHDOG=1` every half
//! `WatchdogSec` while its workers are healthy.
#![forbid(unsafe_code)]

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::debug;

/// A connection to the service manager.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when not run by systemd (or the
    /// variable is unusable).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name).ok()?,
            None if bytes.starts_with(b"/") => SocketAddr::from_pathname(&path).ok()?,
            None => return None,
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { sock, addr })
    }

    /// Send `state` (newline-separated `KEY=VALUE` assignments). Failures
    /// are logged at debug level only: the service runs on without them.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.sock.send_to_addr(state.as_bytes(), &self.addr) {
            debug!(error = %e, state, "sd_notify failed");
        }
    }
}

/// The watchdog interval systemd expects pings within (`$WATCHDOG_USEC`),
/// if it is meant for this process (`$WATCHDOG_PID`, when set).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("xblade-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let rx = UnixDatagram::bind(&dir).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&dir).unwrap(),
        };
        n.notify("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        std::fs::remove_file(&dir).unwrap();
    }
}
