//! Supervised processes: started with their output in a log file, killed
//! by the kernel if their starter dies, stopped by pid and reaped.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long [`Supervised::stop`] (and drop) waits after SIGTERM before
/// sending SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The session a [`Supervised`] process runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The starter's session (and scheduler autogroup), as any child.
    Inherit,
    /// A session of its own (`setsid`), whose autogroup is raised to nice
    /// -19, best effort. For measurements: on a machine busy with other
    /// work, the scheduler gave a whole benchmark run, all in one session,
    /// one session's share of each core, and the cells measured that share
    /// rather than the datapaths (docs/bench/writeback-amd-2026-12-03.txt).
    Own,
}

/// How [`Supervised::wait_for_log`] ended without finding its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWait {
    /// The process exited first (with this status).
    Exited(ExitStatus),
    /// The time given passed.
    TimedOut,
}

/// How [`Supervised::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether it ignored SIGTERM for [`STOP_GRACE`] and was killed.
    pub killed: bool,
}

/// A child process whose stdout and stderr go to a log file. It gets
/// SIGKILL from the kernel if the *thread* that spawned it ends
/// (`PR_SET_PDEATHSIG`), so a test binary or a benchmark killed by a
/// timeout leaves no process behind holding a namespace; hence it must
/// not outlive that thread. Dropping it stops *this one pid* (SIGTERM,
/// then SIGKILL after [`STOP_GRACE`]) and reaps it. The log file is the
/// caller's (kept or removed as it likes).
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    name: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Supervised {
    /// Starts `cmd` (stdin closed, stdout and stderr to `log`, created or
    /// emptied) in `session`. `name` names it in messages. Use
    /// [`crate::ns_command`] or [`crate::ns_command_on_core`] for a
    /// process in a namespace.
    pub fn spawn(mut cmd: Command, name: &str, log: &Path, session: Session) -> Result<Supervised> {
        let file_err = |source| Error::File {
            path: log.to_path_buf(),
            source,
        };
        // Append: the two descriptors (stdout, stderr) never overwrite
        // each other, nor what a reader of the log appended.
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(file_err)?;
        out.set_len(0).map_err(file_err)?;
        let err = out.try_clone().map_err(file_err)?;
        let parent = std::process::id();
        let own_session = session == Session::Own;
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, getppid, setsid,
        // open, write, close) on values prepared before the fork; it
        // allocates nothing on success.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                if own_session {
                    libc::setsid();
                    let fd = libc::open(c"/proc/self/autogroup".as_ptr(), libc::O_WRONLY);
                    if fd >= 0 {
                        let v = b"-19";
                        libc::write(fd, v.as_ptr().cast(), v.len());
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_owned(),
                source,
            })?;
        Ok(Supervised {
            child,
            name: name.to_owned(),
            log: log.to_path_buf(),
            status: None,
        })
    }

    /// Its pid (the program's own when started through `ip netns exec`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it wrote so far (stdout and stderr interleaved); empty
    /// when the log cannot be read.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Its exit status once it has exited (then reaped), None while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| Error::Wait {
                name: self.name.clone(),
                source,
            })?;
        }
        Ok(self.status)
    }

    /// Whether it still runs. A failing wait (it is no longer ours to
    /// wait for) counts as not running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit by itself; None if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until its log contains `needle`; Err when it exits first
    /// (having not written it) or `timeout` passes.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), LogWait> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Ok(Some(st)) = self.try_wait() {
                // It may have written the needle just before exiting.
                if self.log().contains(needle) {
                    return Ok(());
                }
                return Err(LogWait::Exited(st));
            }
            if Instant::now() >= deadline {
                return Err(LogWait::TimedOut);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` unless it has been reaped (then the pid may be another
    /// process's).
    pub fn signal(&mut self, sig: libc::c_int) {
        if !self.is_running() {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) touches no memory. `pid` is our own child, not
        // reaped yet (try_wait said it runs), so it cannot have been reused.
        unsafe { libc::kill(pid, sig) };
    }

    /// Stops it: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; reaps it.
    pub fn stop(&mut self) -> Result<Stopped> {
        if let Some(status) = self.try_wait()? {
            return Ok(Stopped {
                status,
                killed: false,
            });
        }
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_timeout(STOP_GRACE)? {
            return Ok(Stopped {
                status,
                killed: false,
            });
        }
        self.signal(libc::SIGKILL);
        let status = self.child.wait().map_err(|source| Error::Wait {
            name: self.name.clone(),
            source,
        })?;
        self.status = Some(status);
        Ok(Stopped {
            status,
            killed: true,
        })
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("testbed: stopping {} (pid {}): {e}", self.name, self.pid());
        }
    }
}
