//! Serving what can serve: the configuration wanted against the world as
//! it is. An export whose store cannot open (a file not there yet, an LV
//! not activated, an RBD image missing), an interface that is missing (a
//! late VLAN, a bond being rebuilt, a driver reload) or cannot be served,
//! and an (interface, shelf.slot) another target already answers for are
//! set aside with their reason; the rest serves.
//!
//! [`Server::converge`] moves the configuration in force toward the one
//! wanted, through the same prepare/commit steps as a reload
//! (`reload.rs`), in two passes: first it drops the interfaces that are
//! gone or came back under a new index (their workers stop cleanly, the
//! XDP program goes with its interface), then it tries again what is due.
//! When a try fails, the failure names its culprit (an export or an
//! interface), which is set aside, and the rest is tried again: one bad
//! item never holds the others back.
//!
//! Retries: on a backoff (1 s doubling to [`MAX_BACKOFF`]), at once on a
//! link event for interfaces, and on every reload. Duplicates are retried
//! on a reload only: taking a shelf.slot over when the other target goes
//! quiet would move initiators to a different disk.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::open::by_iface;
use super::{chain, name_of, Key, ReloadReport, Server, StartError};
use crate::config::Config;
use crate::net::iface::IfaceInfo;

/// Longest wait between two tries of something set aside.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Something set aside: why, since when, when to try again.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    reason: String,
    since: Instant,
    attempts: u32,
    next: Instant,
}

impl Pending {
    fn new(reason: String, now: Instant) -> Pending {
        Pending {
            reason,
            since: now,
            attempts: 0,
            next: now,
        }
    }

    /// Another failed try: back off.
    fn failed(&mut self, reason: String, now: Instant) {
        self.attempts = self.attempts.saturating_add(1);
        let wait = Duration::from_secs(1 << (self.attempts - 1).min(6)).min(MAX_BACKOFF);
        self.next = now + wait;
        self.reason = reason;
    }
}

/// One thing configured but not served, as `status` shows it.
#[derive(Debug, Clone)]
pub struct NotServingView {
    /// "export", "interface" or "duplicate".
    pub kind: &'static str,
    /// `e1.2`, the interface name, or `e1.2 on IF`.
    pub name: String,
    /// Why, for the operator ("waiting for eth1: ...").
    pub reason: String,
    /// When it was set aside.
    pub since: Instant,
    /// Next try (None: on a reload only).
    pub next_try: Option<Instant>,
    /// Tries that failed.
    pub attempts: u32,
}

/// Why putting a configuration in force failed.
#[derive(Debug)]
pub(super) enum ApplyError {
    /// Opening something (named by the error) failed: nothing changed.
    Start(StartError),
    /// Half-way (a worker did not take its new set): partly applied.
    Commit(String),
}

/// What a failure to open names.
enum Culprit {
    Export(Key),
    Iface(String),
}

impl StartError {
    fn culprit(&self) -> Option<Culprit> {
        match self {
            StartError::Disk { shelf, slot, .. } => Some(Culprit::Export((*shelf, *slot))),
            StartError::Iface { iface, .. }
            | StartError::Socket { iface, .. }
            | StartError::Xdp { iface, .. }
            | StartError::SmallMtu { iface, .. }
            | StartError::Duplicate { iface, .. } => Some(Culprit::Iface(iface.clone())),
            StartError::Partly(_) => None,
        }
    }
}

/// Whether interface `name` still is the one served under `index`:
/// `Err(why)` when it is gone or was recreated.
fn still_there(name: &str, index: u32) -> Result<(), String> {
    match IfaceInfo::lookup(name) {
        Ok(i) if i.index == index => Ok(()),
        Ok(i) => Err(format!(
            "recreated (interface index {index} -> {})",
            i.index
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl Server {
    /// The configuration wanted minus what is set aside, except the
    /// exports and interfaces being tried.
    fn effective(&self, try_exports: &BTreeSet<Key>, try_ifaces: &BTreeSet<String>) -> Config {
        let mut c = self.wanted.clone();
        c.exports.retain(|e| {
            let k = (e.shelf, e.slot);
            !self.held.contains_key(&k) || try_exports.contains(&k)
        });
        for e in &mut c.exports {
            let k = (e.shelf, e.slot);
            e.interfaces.retain(|n| {
                (!self.waiting.contains_key(n) || try_ifaces.contains(n))
                    && !self.refused.contains_key(&(n.clone(), k))
            });
        }
        c
    }

    /// Probe the (interface, export) pairs `eff` serves that are not served
    /// yet; returns the duplicates found.
    fn probe_new(&self, eff: &Config) -> Vec<((String, Key), crate::wire::MacAddr)> {
        let Some(watch) = &self.watch else {
            return Vec::new();
        };
        let now = by_iface(&self.cfg.exports);
        let mut targets = Vec::new();
        let probed: Vec<_> = eff
            .exports
            .iter()
            .filter(|e| !super::open::shared_by_design(e))
            .cloned()
            .collect();
        for (name, keys) in by_iface(&probed) {
            let new: Vec<Key> = keys
                .into_iter()
                .filter(|k| now.get(&name).is_none_or(|s| !s.contains(k)))
                .collect();
            if new.is_empty() {
                continue;
            }
            // One that cannot be looked up fails later, with its reason.
            if let Ok(info) = IfaceInfo::lookup(&name) {
                targets.push((info, new));
            }
        }
        if targets.is_empty() {
            return Vec::new();
        }
        watch.probe(&targets).into_iter().collect()
    }

    /// `all_or_nothing`: put `cfg` in force whole or fail, a duplicate
    /// included, changing nothing.
    pub(super) fn apply_strict(&mut self, cfg: &Config) -> Result<ReloadReport, StartError> {
        let mut eff = cfg.clone();
        // Only missing interfaces of a running target are set aside.
        for e in &mut eff.exports {
            e.interfaces.retain(|n| !self.waiting.contains_key(n));
        }
        if let Some(((iface, (shelf, slot)), mac)) = self.probe_new(&eff).into_iter().next() {
            return Err(StartError::Duplicate {
                shelf,
                slot,
                iface,
                mac,
            });
        }
        self.apply(&eff).map_err(|e| match e {
            ApplyError::Start(e) => e,
            ApplyError::Commit(m) => StartError::Partly(m),
        })
    }

    /// Try everything set aside now (a start, a reload).
    pub(super) fn converge_all(&mut self) -> ReloadReport {
        let now = Instant::now();
        // Exports never opened yet (a start, a reload that adds some) are
        // tried like those set aside.
        let open: BTreeSet<Key> = self.cfg.exports.iter().map(|e| (e.shelf, e.slot)).collect();
        let wanted: Vec<Key> = self
            .wanted
            .exports
            .iter()
            .map(|e| (e.shelf, e.slot))
            .collect();
        for k in &wanted {
            if !open.contains(k) {
                self.held
                    .entry(*k)
                    .or_insert_with(|| Pending::new(String::from("not opened yet"), now));
            }
        }
        // Forget what is no longer configured.
        self.held.retain(|k, _| wanted.contains(k));
        let names: BTreeSet<String> = by_iface(&self.wanted.exports).into_keys().collect();
        self.waiting.retain(|n, _| names.contains(n));
        self.converge(true)
    }

    /// Look again at the interfaces (a link event, a worker that ended):
    /// drop those gone, serve those back.
    pub fn links_changed(&mut self) -> ReloadReport {
        for p in self.waiting.values_mut() {
            p.next = Instant::now();
        }
        self.converge(false)
    }

    /// When something set aside is next due for a try.
    pub fn next_retry(&self) -> Option<Instant> {
        self.held
            .values()
            .chain(self.waiting.values())
            .map(|p| p.next)
            .min()
    }

    /// Try what is due (the service loop calls this at [`Server::next_retry`]).
    pub fn retry_due(&mut self) -> ReloadReport {
        self.converge(false)
    }

    /// Move the configuration in force toward the one wanted: see the
    /// module comment. `force`: try everything set aside, not only what
    /// is due.
    fn converge(&mut self, force: bool) -> ReloadReport {
        let mut report = ReloadReport::default();
        let now = Instant::now();
        let gone: Vec<(String, String)> = self
            .ifaces
            .iter()
            .filter_map(|(n, r)| {
                still_there(n, r.info.index)
                    .err()
                    .map(|why| (n.clone(), why))
            })
            .collect();
        for (n, why) in &gone {
            warn!(iface = %n, "interface {n} gone ({why}): stopping its workers; it is served again when it is back, no restart needed");
            self.waiting.insert(
                n.clone(),
                Pending::new(format!("waiting for {n}: {why}"), now),
            );
        }
        if !gone.is_empty() {
            let eff = self.effective(&BTreeSet::new(), &BTreeSet::new());
            self.apply_logged(&eff, &mut report);
        }
        let mut try_exports: BTreeSet<Key> = self
            .held
            .iter()
            .filter(|(_, p)| force || p.next <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut try_ifaces = BTreeSet::new();
        for (n, p) in self.waiting.iter_mut() {
            if !force && p.next > now {
                continue;
            }
            match IfaceInfo::lookup(n) {
                Ok(_) => {
                    try_ifaces.insert(n.clone());
                }
                Err(e) => p.failed(format!("waiting for {n}: {e}"), now),
            }
        }
        // A start or a reload (`force`) puts the whole wanted configuration
        // in force, whether or not anything was set aside.
        if force || !try_exports.is_empty() || !try_ifaces.is_empty() {
            self.try_set_aside(&mut try_exports, &mut try_ifaces, &mut report);
        }
        self.publish();
        report.not_serving = self
            .not_serving_views()
            .into_iter()
            .map(|v| format!("{}: {}", v.name, v.reason))
            .collect();
        report
    }

    /// Serve what is being tried, setting aside each culprit in turn.
    fn try_set_aside(
        &mut self,
        try_exports: &mut BTreeSet<Key>,
        try_ifaces: &mut BTreeSet<String>,
        report: &mut ReloadReport,
    ) {
        let now = Instant::now();
        let eff = self.effective(try_exports, try_ifaces);
        for ((iface, key), mac) in self.probe_new(&eff) {
            error!(iface = %iface, %mac,
                "e{}.{}: another target already answers for it on {iface} (MAC {mac}): not served there (initiators would interleave writes over two different disks); stop the other target, then reload",
                key.0, key.1);
            self.refused.insert((iface, key), mac);
        }
        loop {
            let eff = self.effective(try_exports, try_ifaces);
            let e = match self.apply(&eff) {
                Ok(r) => {
                    report.applied.extend(r.applied);
                    for k in std::mem::take(try_exports) {
                        if let Some(p) = self.held.remove(&k) {
                            if p.attempts > 0 {
                                info!("{}: serving (was: {})", name_of(k), p.reason);
                            }
                        }
                    }
                    for n in std::mem::take(try_ifaces) {
                        if let Some(p) = self.waiting.remove(&n) {
                            info!(iface = %n, "interface {n} is back: serving (was: {})", p.reason);
                        }
                    }
                    return;
                }
                Err(ApplyError::Commit(m)) => {
                    // Partly applied: what was tried is in force now (the
                    // failure is a worker's, logged with the rest).
                    error!("{m}");
                    report.applied.push(m);
                    for k in std::mem::take(try_exports) {
                        self.held.remove(&k);
                    }
                    for n in std::mem::take(try_ifaces) {
                        self.waiting.remove(&n);
                    }
                    return;
                }
                Err(ApplyError::Start(e)) => e,
            };
            let why = chain(&e);
            let slot = match e.culprit() {
                Some(Culprit::Export(k)) if try_exports.remove(&k) => self.held.entry(k),
                Some(Culprit::Iface(n))
                    if try_ifaces.remove(&n) || !self.waiting.contains_key(&n) =>
                {
                    let why = format!("waiting for {n}: {why}");
                    let p = self
                        .waiting
                        .entry(n)
                        .or_insert_with(|| Pending::new(why.clone(), now));
                    note_failure(p, why, now);
                    continue;
                }
                _ => {
                    // Not one of those tried: set them all aside.
                    error!("{why}");
                    for k in std::mem::take(try_exports) {
                        if let Some(p) = self.held.get_mut(&k) {
                            note_failure(p, why.clone(), now);
                        }
                    }
                    for n in std::mem::take(try_ifaces) {
                        if let Some(p) = self.waiting.get_mut(&n) {
                            note_failure(p, why.clone(), now);
                        }
                    }
                    return;
                }
            };
            let p = slot.or_insert_with(|| Pending::new(why.clone(), now));
            note_failure(p, why, now);
        }
    }

    /// Apply `eff`, which opens nothing (interfaces dropped): a failure is
    /// logged and reported.
    fn apply_logged(&mut self, eff: &Config, report: &mut ReloadReport) {
        match self.apply(eff) {
            Ok(r) => report.applied.extend(r.applied),
            Err(ApplyError::Commit(m)) => {
                error!("{m}");
                report.applied.push(m);
            }
            Err(ApplyError::Start(e)) => error!("{}", chain(&e)),
        }
    }

    /// What `status` shows as not served.
    pub(super) fn not_serving_views(&self) -> Vec<NotServingView> {
        let mut v: Vec<NotServingView> = self
            .held
            .iter()
            .map(|(k, p)| NotServingView {
                kind: "export",
                name: name_of(*k),
                reason: p.reason.clone(),
                since: p.since,
                next_try: Some(p.next),
                attempts: p.attempts,
            })
            .collect();
        v.extend(self.waiting.iter().map(|(n, p)| NotServingView {
            kind: "interface",
            name: n.clone(),
            reason: p.reason.clone(),
            since: p.since,
            next_try: Some(p.next),
            attempts: p.attempts,
        }));
        v.extend(self.refused.iter().map(|((n, k), mac)| NotServingView {
            kind: "duplicate",
            name: format!("{} on {n}", name_of(*k)),
            reason: format!(
                "another target (MAC {mac}) answers for it on {n}: refused; stop it, then reload"
            ),
            since: Instant::now(),
            next_try: None,
            attempts: 1,
        }));
        v
    }
}

/// Record a failed try: a new reason is a warning, the same one again
/// only a debug line (a retry every few seconds must not flood the log).
fn note_failure(p: &mut Pending, why: String, now: Instant) {
    if p.attempts == 0 || p.reason != why {
        warn!("{why}: set aside, retrying");
    } else {
        debug!("{why}: still failing");
    }
    p.failed(why, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let t0 = Instant::now();
        let mut p = Pending::new("x".into(), t0);
        assert_eq!(p.next, t0, "tried at once");
        let waits: Vec<u64> = (0..7)
            .map(|_| {
                p.failed("x".into(), t0);
                (p.next - t0).as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(p.attempts, 7);
    }
}
