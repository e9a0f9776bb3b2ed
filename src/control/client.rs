//! The client side of the control socket (`xblade status|stats|resize|
//! reload`). Every exchange has one deadline, from connect to the last
//! byte of the answer, so a daemon whose control thread is stuck (not
//! accepting, or accepting and never answering) gives a clear error in a
//! few seconds instead of a hang.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::server::COMMAND_TIMEOUT;
use super::{Command, Status, SOCKET_DIR};

/// How long `status` may take.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest answer read (a status of thousands of workers is a few MiB).
const MAX_ANSWER: u64 = 64 << 20;

/// How often a connect is retried while the daemon's backlog is full.
const CONNECT_RETRY: Duration = Duration::from_millis(20);

/// The error of an exchange that ran out of time: names the socket and
/// says what it means.
fn stuck(socket: &Path, timeout: Duration, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{what} within {timeout:?}: the xblade behind {} is not serving its control socket \
             (its control thread may be stuck)",
            socket.display()
        ),
    )
}

/// Connect without ever blocking: a unix listener whose backlog is full
/// (nobody accepting) makes a blocking `connect(2)` wait forever, a
/// non-blocking one fails with `EAGAIN`, retried until `deadline`.
fn connect(socket: &Path, deadline: Instant, timeout: Duration) -> io::Result<UnixStream> {
    let path = socket.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if path.len() >= addr.sun_path.len() || path.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "control socket path {} is not a valid unix socket address (at most {} bytes, no NUL)",
                socket.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>())
        .map_err(io::Error::other)?;
    loop {
        // SAFETY: `addr` is a live, initialised sockaddr_un of `len` bytes
        // for the duration of the call; connect(2) only reads it.
        let rc =
            unsafe { libc::connect(fd, std::ptr::addr_of!(addr).cast::<libc::sockaddr>(), len) };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            // Backlog full: nobody accepts.
            Some(libc::EAGAIN) if Instant::now() < deadline => std::thread::sleep(CONNECT_RETRY),
            Some(libc::EAGAIN) => return Err(stuck(socket, timeout, "no connection accepted")),
            _ => return Err(e),
        }
    }
    let s = UnixStream::from(owned);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Send `line`, read the whole answer, all within `timeout`.
fn exchange(socket: &Path, line: &str, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut s = connect(socket, deadline, timeout)?;
    let Some(t) = left() else {
        return Err(stuck(socket, timeout, "no answer"));
    };
    s.set_write_timeout(Some(t))?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| timed_out(e, socket, timeout))?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut body = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let Some(t) = left() else {
            return Err(stuck(socket, timeout, "no complete answer"));
        };
        s.set_read_timeout(Some(t))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                body.extend_from_slice(&chunk[..n]);
                if body.len() as u64 > MAX_ANSWER {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: answer longer than {MAX_ANSWER} bytes",
                            socket.display()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timed_out(e, socket, timeout)),
        }
    }
    if body.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}: connection closed with no answer (the xblade may be stopping)",
                socket.display()
            ),
        ));
    }
    String::from_utf8(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A socket timeout (`EAGAIN` from SO_RCVTIMEO/SO_SNDTIMEO) as the clear
/// error; anything else as is.
fn timed_out(e: io::Error, socket: &Path, timeout: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => stuck(socket, timeout, "no answer"),
        _ => e,
    }
}

/// Ask one running xblade for its status (within [`STATUS_TIMEOUT`]).
pub fn query(socket: &Path) -> io::Result<Status> {
    let body = exchange(socket, "status", STATUS_TIMEOUT)?;
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
    // A little longer than the server waits, so its own "no answer"
    // message gets through.
    let body = exchange(socket, &line, COMMAND_TIMEOUT + Duration::from_secs(5))?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let text = |k: &str| v.get(k).and_then(|m| m.as_str()).map(str::to_string);
    Ok(match (text("ok"), text("error")) {
        (Some(m), _) => Ok(m),
        (None, Some(e)) => Err(e),
        _ => Err(format!("unexpected answer {body:?}")),
    })
}

/// Every control socket in [`SOCKET_DIR`] (a socket left by a killed
/// process refuses connections; callers skip it).
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
