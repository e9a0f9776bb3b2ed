//! The comparison's test bed: its own two namespaces and veth pair, and
//! the processes it starts in them (pinned, in sessions of their own,
//! killed if it dies, stopped by pid). Everything is removed on drop.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Target namespace.
pub(super) const NS_T: &str = "xbc-t";
/// Initiator namespace.
pub(super) const NS_I: &str = "xbc-i";
/// Target end of the veth pair.
pub(super) const IF_T: &str = "xbct";
/// Initiator end.
pub(super) const IF_I: &str = "xbci";

/// `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// The two namespaces and the veth pair; deleted on drop.
pub(super) struct Link;

impl Link {
    pub(super) fn create() -> Result<Link> {
        Link::remove();
        let link = Link;
        for ns in [NS_T, NS_I] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // No IPv6 chatter on the link.
            let _ = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        #[rustfmt::skip]
        ip(&["link", "add", "name", IF_T, "netns", NS_T, "type", "veth",
             "peer", "name", IF_I, "netns", NS_I])?;
        ip(&["-n", NS_T, "link", "set", IF_T, "up"])?;
        ip(&["-n", NS_I, "link", "set", IF_I, "up"])?;
        Ok(link)
    }

    pub(super) fn set_mtu(&self, mtu: u32) -> Result<()> {
        let m = mtu.to_string();
        ip(&["-n", NS_T, "link", "set", "dev", IF_T, "mtu", &m])?;
        ip(&["-n", NS_I, "link", "set", "dev", IF_I, "mtu", &m])?;
        // Carrier comes back within milliseconds; give it a moment.
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }

    fn remove() {
        for ns in [NS_T, NS_I] {
            if ns_exists(ns) {
                let _ = ip(&["netns", "del", ns]);
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        Link::remove();
    }
}

/// A process we started in a namespace, pinned to a core; stopped (this
/// pid only) on drop, and killed by the kernel if we die first.
pub(super) struct Child {
    child: std::process::Child,
    log: PathBuf,
    exited: bool,
}

impl Child {
    pub(super) fn spawn(ns: &str, core: usize, argv: &[String], log: &Path) -> Result<Child> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "taskset", "-c", &core.to_string()])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: runs in the forked child before exec; prctl, setsid,
        // open, write and close are async-signal-safe system calls and
        // nothing is allocated (the path and value are static).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Each target and bench in a session (an autogroup) of its
                // own, ahead of other sessions: without it, on a machine
                // busy with other work, the scheduler gave the whole
                // comparison one session's share of each core and the
                // cells measured that share, not the datapaths
                // (docs/bench/writeback-amd-2026-12-03.txt). Best effort.
                libc::setsid();
                let fd = libc::open(c"/proc/self/autogroup".as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    let v = b"-19";
                    libc::write(fd, v.as_ptr().cast(), v.len());
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", argv.join(" ")))?;
        Ok(Child {
            child,
            log: log.to_path_buf(),
            exited: false,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub(super) fn running(&mut self) -> bool {
        if self.exited {
            return false;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            self.exited = true;
        }
        !self.exited
    }

    /// Wait until the log holds `needle`; Err with the log's last lines
    /// when the process exits first or `timeout` passes.
    pub(super) fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if !self.running() {
                return Err(last_error_line(&self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("not serving after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&mut self, sig: libc::c_int) {
        if self.running() {
            // SAFETY: kill(2) on our own unreaped child: the pid cannot
            // have been reused.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    pub(super) fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.running() {
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(super) fn last_error_line(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("error") || l.contains("ERROR"))
        .or_else(|| log.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("exited without a message");
    // Drop the log timestamp and level, keep the message.
    let line = line
        .split_once(" ERROR ")
        .map(|(_, m)| m)
        .unwrap_or(line)
        .trim();
    line.chars().take(200).collect()
}

/// Temp files removed on drop.
pub(super) struct Files(pub(super) Vec<PathBuf>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = fs::remove_file(f);
        }
    }
}

/// Run `argv` in `ns` on `core`, killed after `limit`; (success, output).
pub(super) fn run_bounded(
    ns: &str,
    core: usize,
    argv: &[String],
    limit: Duration,
) -> Result<(bool, String), String> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let log = std::env::temp_dir().join(format!(
        "xbc-run-{}-{}.log",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut c = Child::spawn(ns, core, argv, &log).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + limit;
    while c.running() {
        if Instant::now() > deadline {
            c.stop();
            let _ = fs::remove_file(&log);
            return Err(format!("{} did not finish within {limit:?}", argv[0]));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = c.child.wait().map(|s| s.success()).unwrap_or(false);
    let text = c.log();
    let _ = fs::remove_file(&log);
    let msg = if ok {
        text
    } else {
        let l = last_error_line(&text);
        l.trim_start_matches("xblade: error: ").to_string()
    };
    Ok((ok, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines() {
        assert_eq!(
            last_error_line("a\n2026-01-01T00:00:00Z ERROR xblade: boom\n"),
            "xblade: boom"
        );
        assert_eq!(last_error_line(""), "exited without a message");
    }
}
