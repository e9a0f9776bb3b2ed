//! The control socket's server side: one request line per connection,
//! served by [`super::reactor`] on the thread `xb-control`.
//!
//! `status`/`stats` are answered on that thread (a lock-free read of the
//! inventory). `resize` and `reload` are carried out by the thread that
//! owns the server and may take seconds (a reload waits for the workers),
//! so each goes with its connection to a short-lived thread
//! (`xb-control-cmd`, at most [`MAX_COMMANDS`] at once) that waits for
//! the answer; the socket keeps answering `status` meanwhile.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender};
use tracing::{debug, warn};

use super::reactor::{Limits, Protocol, Verdict};
use super::Sources;
use crate::wire::target::{parse_target, Broadcast};

/// How long `resize`/`reload` may take, client and server side (a reload
/// waits up to 10 s for workers to take their new export sets).
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// `resize`/`reload` commands waiting at once; more are refused with a
/// message (the service loop takes them one at a time anyway).
pub const MAX_COMMANDS: usize = 4;

/// Bounds of the control socket. Requests are one short line, sent at
/// once by `xblade`; answers are a few KiB of JSON read at once.
pub(super) const LIMITS: Limits = Limits {
    max_conns: 64,
    max_request: 256,
    request_deadline: Duration::from_secs(2),
    response_deadline: Duration::from_secs(5),
};

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

pub(super) fn parse_command(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("reload"), None, _) => Ok(Command::Reload),
        (Some("resize"), Some(t), None) => parse_target(t, Broadcast::Refuse)
            .map(|(a, b)| Command::Resize(a, b))
            .map_err(|e| format!("resize {e}")),
        _ => Err(format!("unknown request {line:?}")),
    }
}

/// The JSON answer to a command.
fn answer(r: Result<String, String>) -> Vec<u8> {
    match r {
        Ok(m) => serde_json::json!({ "ok": m }),
        Err(e) => serde_json::json!({ "error": e }),
    }
    .to_string()
    .into_bytes()
}

/// The control socket protocol, for [`super::reactor::run`].
pub(super) struct ControlSocket {
    /// What `status` reads, where commands go.
    pub src: Sources,
    /// Command threads running.
    pub commands: Arc<AtomicUsize>,
}

impl Protocol for ControlSocket {
    type Stream = UnixStream;
    type Job = (Command, Sender<Request>);

    fn judge(&mut self, input: &[u8], eof: bool) -> Verdict<Self::Job> {
        let line = match input.iter().position(|&b| b == b'\n') {
            Some(i) => &input[..i],
            None if eof => input,
            None => return Verdict::More,
        };
        let Ok(line) = std::str::from_utf8(line) else {
            return Verdict::Reply(answer(Err(format!(
                "request {:?} is not UTF-8",
                String::from_utf8_lossy(line)
            ))));
        };
        match line.trim() {
            "status" | "stats" => match serde_json::to_vec(&self.src.status()) {
                Ok(v) => Verdict::Reply(v),
                Err(e) => Verdict::Reply(answer(Err(format!("status: {e}")))),
            },
            other => match (parse_command(other), &self.src.requests) {
                (Err(e), _) => Verdict::Reply(answer(Err(e))),
                (Ok(_), None) => {
                    Verdict::Reply(answer(Err("this xblade takes no commands".into())))
                }
                (Ok(c), Some(tx)) => Verdict::Handoff((c, tx.clone())),
            },
        }
    }

    fn too_large(&mut self) -> Vec<u8> {
        answer(Err(format!(
            "request longer than {} bytes",
            LIMITS.max_request
        )))
    }

    fn handoff(&mut self, stream: UnixStream, (command, tx): Self::Job) {
        let busy = || {
            answer(Err(format!(
                "busy: {MAX_COMMANDS} resize/reload commands already waiting; try again"
            )))
        };
        let n = self.commands.fetch_add(1, Ordering::AcqRel);
        if n >= MAX_COMMANDS {
            self.commands.fetch_sub(1, Ordering::AcqRel);
            send_answer(stream, &busy());
            return;
        }
        // Gives the slot back however the thread ends (or if it cannot
        // start: the closure, and the stream with it, is dropped and the
        // client sees the connection closed).
        let slot = Slot(Arc::clone(&self.commands));
        let spawned = std::thread::Builder::new()
            .name("xb-control-cmd".into())
            .spawn(move || {
                let _slot = slot;
                let r = run_command(command, &tx);
                send_answer(stream, &answer(r));
            });
        if let Err(e) = spawned {
            warn!(error = %e, "control socket: cannot start a command thread");
        }
    }
}

/// One of the [`MAX_COMMANDS`] command slots, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Hand `command` to the service loop and wait for its answer.
fn run_command(command: Command, tx: &Sender<Request>) -> Result<String, String> {
    let (reply, rx) = crossbeam_channel::bounded(1);
    tx.send_timeout(Request { command, reply }, COMMAND_TIMEOUT)
        .map_err(|e| match e {
            SendTimeoutError::Timeout(_) => "the server thread takes no command (busy)".to_string(),
            SendTimeoutError::Disconnected(_) => "xblade is stopping".to_string(),
        })?;
    rx.recv_timeout(COMMAND_TIMEOUT)
        .map_err(|_| "no answer from the server thread".to_string())?
}

/// Write `body` on a handed-off connection, blocking up to the response
/// deadline.
fn send_answer(mut stream: UnixStream, body: &[u8]) {
    let r = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(LIMITS.response_deadline)))
        .and_then(|()| stream.write_all(body));
    if let Err(e) = r {
        debug!(error = %e, "control client gone before its answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any line parses to a command or an error naming it, never a
        /// panic; every valid target round-trips, with or without `e`.
        #[test]
        fn any_line(line in "\\PC{0,80}", shelf in 0u16..=65534, slot in 0u8..=254, e in any::<bool>()) {
            if let Err(m) = parse_command(&line) {
                prop_assert!(!m.is_empty());
            }
            let t = format!("{}{shelf}.{slot}", if e { "e" } else { "" });
            prop_assert_eq!(parse_command(&format!("resize {t}")), Ok(Command::Resize(shelf, slot)));
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
        assert!(parse_command("resize 65535.1").is_err(), "broadcast shelf");
        assert!(parse_command("shutdown").is_err());
    }
}
