//! The comparison's use of the shared test bed (`xblade-testbed`): its own
//! two namespaces and veth pair, and the processes it starts in them
//! (pinned, in sessions of their own, killed if it dies, stopped by pid).
//! Everything is removed on drop.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Result;
use xblade_testbed::{ns_command_on_core, LogWait, NsPair, Session, Supervised, TempPath};

/// Target namespace.
pub(super) const NS_T: &str = "xbc-t";
/// Initiator namespace.
pub(super) const NS_I: &str = "xbc-i";
/// Target end of the veth pair.
pub(super) const IF_T: &str = "xbct";
/// Initiator end.
pub(super) const IF_I: &str = "xbci";

/// A process the comparison started (a target or a bench).
pub(super) type Child = Supervised;

/// The two namespaces and the veth pair; deleted on drop.
pub(super) struct Link(NsPair);

impl Link {
    pub(super) fn create() -> Result<Link> {
        let links = vec![(IF_T.to_owned(), IF_I.to_owned())];
        Ok(Link(NsPair::create(NS_T, NS_I, links, 1500)?))
    }

    pub(super) fn set_mtu(&self, mtu: u32) -> Result<()> {
        self.0.set_mtu(mtu)?;
        // Carrier comes back within milliseconds; give it a moment.
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }
}

/// Starts `argv` in `ns` pinned to `core`, its output in `log`.
pub(super) fn spawn(ns: &str, core: usize, argv: &[String], log: &Path) -> Result<Child> {
    let mut cmd = ns_command_on_core(ns, core, &argv[0]);
    cmd.args(&argv[1..]);
    Ok(Supervised::spawn(cmd, &argv.join(" "), log, Session::Own)?)
}

/// Wait until `target`'s log holds `needle`; Err with the log's last
/// error line when it exits first or `timeout` passes.
pub(super) fn wait_log(target: &mut Child, needle: &str, timeout: Duration) -> Result<(), String> {
    match target.wait_for_log(needle, timeout) {
        Ok(()) => Ok(()),
        Err(LogWait::Exited(_)) => Err(last_error_line(&target.log())),
        Err(LogWait::TimedOut) => Err(format!("not serving after {timeout:?}")),
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

/// Run `argv` in `ns` on `core`, killed after `limit`; (success, output).
pub(super) fn run_bounded(
    ns: &str,
    core: usize,
    argv: &[String],
    limit: Duration,
) -> Result<(bool, String), String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let log = TempPath::adopt(std::env::temp_dir().join(format!(
        "xbc-run-{}-{}.log",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )));
    let mut c = spawn(ns, core, argv, &log).map_err(|e| e.to_string())?;
    let Some(status) = c.wait_timeout(limit).map_err(|e| e.to_string())? else {
        let _ = c.stop();
        return Err(format!("{} did not finish within {limit:?}", argv[0]));
    };
    let ok = status.success();
    let text = c.log();
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
