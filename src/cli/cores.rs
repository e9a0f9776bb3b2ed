//! `--cores`: the cores this process may run on.

use anyhow::{bail, Context, Result};

/// `--cores`: each one must be a core this process may run on.
pub(super) fn check_cores(cores: &[usize]) -> Result<()> {
    if cores.is_empty() {
        return Ok(());
    }
    let allowed = allowed_cpus().context("reading the CPUs this process may use")?;
    if let Some(c) = cores.iter().find(|c| !allowed.contains(c)) {
        bail!(
            "--cores: core {c} is not available (this process may use cores {})",
            cpu_list(&allowed)
        );
    }
    Ok(())
}

/// Cpus_allowed_list of /proc/self/status ("0-3,6"): online CPUs in this
/// process's affinity mask.
fn allowed_cpus() -> Result<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .context("no Cpus_allowed_list in /proc/self/status")?;
    let mut v = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
        v.extend(a..=b);
    }
    if let Ok(online) = std::fs::read_to_string("/sys/devices/system/cpu/online") {
        let mut on = Vec::new();
        for part in online.trim().split(',').filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                on.extend(a..=b);
            }
        }
        if !on.is_empty() {
            v.retain(|c| on.contains(c));
        }
    }
    Ok(v)
}

/// "0-1" / "0, 2, 5" for messages.
fn cpu_list(cpus: &[usize]) -> String {
    match cpus {
        [] => "none".into(),
        [a, .., b] if b - a + 1 == cpus.len() => format!("{a}-{b}"),
        _ => cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}
