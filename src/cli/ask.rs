//! Talking to running daemons over their control sockets: `xblade status`,
//! `stats`, `resize` and `reload`, and the sockets left by killed ones.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The control sockets to talk to: the one given, or every one found.
fn sockets(socket: &Option<PathBuf>) -> Result<Vec<PathBuf>> {
    let v = match socket {
        Some(s) => vec![s.clone()],
        None => crate::control::discover_sockets(),
    };
    if v.is_empty() {
        bail!(
            "no running xblade found (no control socket in {}; --socket PATH names one)",
            crate::control::SOCKET_DIR
        );
    }
    Ok(v)
}

/// `xblade resize` / `xblade reload`: ask every running xblade (or the one
/// at `socket`); succeed if one did it.
pub(super) fn send_command(socket: Option<PathBuf>, cmd: crate::control::Command) -> Result<()> {
    let mut done = 0;
    let mut refusals = Vec::new();
    let mut stale_count = 0;
    let list = sockets(&socket)?;
    for s in &list {
        match crate::control::command(s, &cmd) {
            Ok(Ok(m)) => {
                println!("{m}");
                done += 1;
            }
            Ok(Err(e)) => refusals.push(format!("{}: {e}", s.display())),
            Err(e) if socket.is_some() => {
                return Err(e).with_context(|| format!("asking {}", s.display()))
            }
            // A socket left by a killed process.
            Err(e) if stale(&e) => {
                stale_count += 1;
                forget_stale(s);
            }
            Err(e) => refusals.push(format!("{}: {e}", s.display())),
        }
    }
    if done == 0 {
        match refusals.len() {
            0 => bail!("{}", none_answered(&list, stale_count)),
            1 if socket.is_some() => bail!(
                "{}",
                refusals[0]
                    .split_once(": ")
                    .map_or(refusals[0].as_str(), |x| x.1)
            ),
            _ => bail!("{}", refusals.join("\n")),
        }
    }
    Ok(())
}

/// `xblade status` (`full`) and `xblade stats`.
pub(super) fn status(
    socket: Option<PathBuf>,
    json: bool,
    watch: Option<f64>,
    full: bool,
) -> Result<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut prev: Vec<(PathBuf, crate::control::Status, Instant)> = Vec::new();
    loop {
        let list = sockets(&socket)?;
        let mut found = 0;
        let mut out = String::new();
        let mut now = Vec::new();
        let mut docs = Vec::new();
        let mut stale_count = 0;
        for s in &list {
            match crate::control::query(s) {
                Ok(st) => {
                    found += 1;
                    if json {
                        docs.push(serde_json::to_value(&st)?);
                    } else if full {
                        out.push_str(&crate::control::render_status(&st));
                    } else {
                        let p = prev
                            .iter()
                            .find(|(q, _, _)| q == s)
                            .map(|(_, st, t)| (st, t.elapsed().as_secs_f64()));
                        out.push_str(&crate::control::render_counters(&st, p));
                    }
                    now.push((s.clone(), st, Instant::now()));
                }
                Err(e) if socket.is_some() => {
                    return Err(e).with_context(|| format!("querying {}", s.display()))
                }
                // A socket left by a killed process: skip it.
                Err(e) if stale(&e) => {
                    stale_count += 1;
                    forget_stale(s);
                }
                // A live process that does not answer: say so, go on.
                Err(e) => {
                    eprintln!("xblade: querying {}: {e}", s.display());
                }
            }
        }
        if found == 0 {
            bail!("{}", none_answered(&list, stale_count));
        }
        if json {
            // One JSON document: the object of the one xblade that
            // answered, an array when several did.
            let doc = match docs.len() {
                1 => docs.remove(0),
                _ => serde_json::Value::Array(docs),
            };
            out.push_str(&serde_json::to_string(&doc)?);
            out.push('\n');
        }
        match watch {
            Some(secs) if secs > 0.0 => {
                if tty && !json {
                    // Clear the screen: a live view.
                    print!("\x1b[H\x1b[2J");
                }
                print!("{out}");
                if !tty || json {
                    println!();
                }
                prev = now;
                std::thread::sleep(Duration::from_secs_f64(secs));
            }
            _ => {
                print!("{out}");
                return Ok(());
            }
        }
    }
}

/// Why nothing answered, for the operator (no debug list of paths).
fn none_answered(list: &[PathBuf], stale: usize) -> String {
    match (list.len(), stale) {
        (1, 1) => format!(
            "no xblade listens on {} (a socket left by a process that was killed)",
            list[0].display()
        ),
        (n, s) if s == n => format!(
            "no running xblade: the {n} socket(s) in {} were left by processes that are gone",
            crate::control::SOCKET_DIR
        ),
        (n, s) => format!("no running xblade answered ({n} socket(s) tried, {s} stale)"),
    }
}

/// A discovered socket `xblade-PID.sock` whose process is gone (killed
/// with SIGKILL, it could not remove it): removed, and said once, so it
/// is not listed forever. A socket whose process still exists (or that
/// does not follow the naming) is left alone.
fn forget_stale(path: &Path) {
    let pid = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("xblade-")?.strip_suffix(".sock"))
        .and_then(|p| p.parse::<u32>().ok());
    let Some(pid) = pid else { return };
    if Path::new(&format!("/proc/{pid}")).exists() {
        return;
    }
    match std::fs::remove_file(path) {
        Ok(()) => eprintln!(
            "xblade: removed stale control socket {} (process {pid} is gone)",
            path.display()
        ),
        Err(e) => eprintln!(
            "xblade: ignoring stale control socket {} (process {pid} is gone; cannot remove it: {e})",
            path.display()
        ),
    }
}

/// A control socket left by a process that is gone (refused, or removed
/// since it was listed): skipped when sockets are discovered.
fn stale(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
    )
}
