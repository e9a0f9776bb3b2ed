//! The test bed that xblade's integration tests (`tests/common`) and
//! `xblade bench compare` (xblade-tools) share: what it takes to put a
//! target and an initiator on a private Ethernet link of their own and to
//! run processes there without leaving anything behind.
//!
//! - [`cmd`]: running `ip` and other programs, failing with their stderr;
//!   commands that run inside a named network namespace.
//! - [`netns`]: two network namespaces joined by veth pairs ([`NsPair`]),
//!   removed on drop, leftovers of an earlier (killed) run removed first.
//! - [`proc`]: a supervised child ([`Supervised`]): killed by the kernel
//!   if the thread that started it dies, optionally in a session of its
//!   own, its output in a log file, stopped by pid (SIGTERM, then SIGKILL
//!   after a grace) and reaped on drop.
//! - [`temp`]: paths removed on drop ([`TempPath`]).
//!
//! The names of namespaces and interfaces are the caller's: each user has
//! its own scheme (the tests a per-test prefix, the comparison `xbc-*`), and
//! names are global to the machine. Everything here needs root (namespaces,
//! veth pairs) and iproute2; nothing touches an interface it did not create.
//! Not a public API: `publish = false`, shaped by its two users.

pub mod cmd;
pub mod netns;
pub mod proc;
pub mod temp;

pub use cmd::{ip, ip_in, ns_command, ns_command_on_core, run_ok};
pub use netns::{netns_exists, NsPair};
pub use proc::{LogWait, Session, Stopped, Supervised, STOP_GRACE};
pub use temp::TempPath;

use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong in the test bed; each variant names the command, path
/// or process concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started at all (not installed, not executable).
    #[error("cannot run `{cmd}` (is it installed? run scripts/setup.sh)")]
    Run {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed; `message` is what it said on stderr (its
    /// exit status when it said nothing).
    #[error("{cmd} failed: {message}")]
    Failed {
        cmd: String,
        status: ExitStatus,
        message: String,
    },
    /// A process to be supervised could not be started.
    #[error("starting {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or signalling a supervised process failed.
    #[error("waiting for {name}")]
    Wait {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A file of the test bed (log, temp file) could not be created.
    #[error("creating {path}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The links of a namespace pair did not come up (carrier) in time.
    #[error("veth links {links} did not come up within {timeout:?}")]
    LinksDown { links: String, timeout: Duration },
}

/// Result of the test bed's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
