//! Live reconfiguration ([`Server::reload`]) in three steps, so each can be
//! read and tested alone:
//!
//! 1. [`plan`] (in `plan.rs`): pure. The configuration in force and the
//!    new one give a [`ReloadPlan`]: exports added, removed, changed live,
//!    reopened for writing; interfaces to attach, detach, or whose workers
//!    get a new export set; what only a restart would change. No I/O.
//! 2. [`Server::prepare`]: opens what the plan needs (backing stores,
//!    interface lookups, XDP programs and worker sockets of new
//!    interfaces). Nothing is in force yet: on error the [`Staged`] value is
//!    dropped, which closes what was opened, and the error names the bad
//!    export or interface.
//! 3. [`Server::commit`]: puts it in force. Live fields first, then a
//!    [`Control::Reconfigure`] to each worker whose set changes (waiting
//!    until each took it), XDP steering, new workers started, old ones
//!    stopped, records swapped, the inventory published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use tracing::{error, info, warn};

use super::converge::ApplyError;
use super::open::{
    by_iface, iface_info, open_export, open_iface, ExportRec, IfaceRec, ReadyWorker,
};
use super::plan::{plan, plan_live, LiveChange, ReloadPlan, Retarget};
use super::{chain, name_of, Key, ReloadReport, Server, StartError, RECONFIGURE_TIMEOUT};
use crate::bdev::{self, Bdev};
use crate::config::Config;
use crate::engine::{Export, ExportState};
use crate::net::iface::IfaceInfo;
use crate::net::xdp::XdpInterface;
use crate::net::{Control, Reconfig};

/// A new interface opened by [`Server::prepare`]: XDP attached (or not),
/// workers bound, none started.
struct NewIface {
    name: String,
    xdp: Option<XdpInterface>,
    served: Vec<Key>,
    workers: Vec<ReadyWorker>,
    choice: String,
}

/// What [`Server::prepare`] opened for a plan. Nothing in it is in force:
/// dropping it closes the stores, sockets and XDP programs again.
pub(super) struct Staged {
    /// Every interface the new configuration serves, looked up.
    known: BTreeMap<String, IfaceInfo>,
    /// Added exports, opened.
    added: BTreeMap<Key, ExportRec>,
    /// Writable stores for the plan's `reopened` exports.
    reopened: BTreeMap<Key, Arc<dyn Bdev>>,
    /// Interfaces to attach, in name order.
    attach: Vec<NewIface>,
    /// The next free entry of the core list once the new workers have theirs.
    next_core: usize,
}

impl Server {
    /// Apply `new` live. What only a restart can change is reported, not
    /// applied. With `all_or_nothing`, every store and interface it needs
    /// is opened first and any failure rejects it whole (the error names
    /// the export or interface): nothing changes. Without, what cannot
    /// open is set aside and retried (listed in the report), the rest is
    /// applied, and what was set aside before is tried again (duplicates
    /// included).
    pub fn reload(&mut self, new: &Config) -> Result<ReloadReport, String> {
        // The operator's view: restart-only fields against what was
        // wanted. Exports never opened take their new fields as written.
        let mut old = self.wanted.clone();
        old.exports
            .retain(|e| !self.held.contains_key(&(e.shelf, e.slot)));
        let all = old.exports.iter().map(|e| (e.shelf, e.slot)).collect();
        let wanted = plan(&old, &all, new);
        for what in &wanted.needs_restart {
            warn!("{what}: needs a restart (the running value stays in force)");
        }
        let mut report = if self.cfg.all_or_nothing {
            let before = std::mem::replace(&mut self.wanted, wanted.run);
            match self.apply_strict(&self.wanted.clone()) {
                Ok(r) => r,
                Err(e) => {
                    self.wanted = before;
                    return Err(chain(&e));
                }
            }
        } else {
            self.wanted = wanted.run;
            self.refused.clear();
            self.converge_all()
        };
        report.needs_restart.extend(wanted.needs_restart);
        report.needs_restart.dedup();
        Ok(report)
    }

    /// Put `eff` (a configuration with nothing set aside) in force as a
    /// reload of the configuration in force; an error names what failed.
    pub(super) fn apply(&mut self, eff: &Config) -> Result<ReloadReport, ApplyError> {
        debug_assert!(
            self.ifaces
                .iter()
                .map(|(n, i)| (n.clone(), i.served.clone()))
                .eq(by_iface(&self.cfg.exports)),
            "interfaces serve what the configuration in force says"
        );
        let writable = self
            .exports
            .iter()
            .filter(|(_, r)| r.writable)
            .map(|(k, _)| *k)
            .collect();
        let plan = plan_live(&self.cfg, &writable, eff);
        let staged = self.prepare(&plan).map_err(ApplyError::Start)?;
        self.commit(plan, staged).map_err(ApplyError::Commit)
    }

    /// The (export, store) an export has once `staged` is in force.
    fn pair_after(&self, staged: &Staged, k: &Key) -> (Arc<Export>, Arc<dyn Bdev>) {
        if let Some(r) = staged.added.get(k) {
            return (Arc::clone(&r.export), Arc::clone(&r.disk));
        }
        let r = &self.exports[k];
        let d = staged.reopened.get(k).unwrap_or(&r.disk);
        (Arc::clone(&r.export), Arc::clone(d))
    }

    /// Open everything `plan` needs; nothing changes here, and the first
    /// failure is returned (naming the export or interface).
    pub(super) fn prepare(&self, plan: &ReloadPlan) -> Result<Staged, StartError> {
        let mut known: BTreeMap<String, IfaceInfo> = self
            .ifaces
            .iter()
            .map(|(n, i)| (n.clone(), i.info.clone()))
            .collect();
        for e in &plan.run.exports {
            for n in &e.interfaces {
                let info = iface_info(n, (e.shelf, e.slot), &known)?;
                known.insert(n.clone(), info);
            }
        }
        let mut staged = Staged {
            known,
            added: BTreeMap::new(),
            reopened: BTreeMap::new(),
            attach: Vec::new(),
            next_core: self.next_core,
        };
        for e in &plan.run.exports {
            let key = (e.shelf, e.slot);
            if plan.added.contains(&key) {
                let rec = open_export(&plan.run, e, &self.host, &staged.known)?;
                staged.added.insert(key, rec);
            } else if plan.reopened.contains(&key) {
                let d = bdev::open(&e.disk).map_err(|source| StartError::Disk {
                    shelf: key.0,
                    slot: key.1,
                    source,
                })?;
                staged.reopened.insert(key, d);
            }
        }
        for (name, served) in &plan.attach {
            let set: Vec<_> = served.iter().map(|k| self.pair_after(&staged, k)).collect();
            let info = &staged.known[name];
            let (xdp, workers, choice) =
                open_iface(&plan.run, info, &set, &self.cores, staged.next_core)?;
            staged.next_core += workers.len();
            staged.attach.push(NewIface {
                name: name.clone(),
                xdp,
                served: served.clone(),
                workers,
                choice,
            });
        }
        Ok(staged)
    }

    /// Put a prepared plan in force. Errors here (a worker that does not
    /// take its new set, XDP steering) leave the reload partly applied; the
    /// message says what failed and what was applied.
    pub(super) fn commit(
        &mut self,
        plan: ReloadPlan,
        mut staged: Staged,
    ) -> Result<ReloadReport, String> {
        let ReloadPlan {
            mut run,
            needs_restart,
            changed,
            retarget,
            detach,
            removed,
            ..
        } = plan;
        let mut applied = Vec::new();
        // Writes stop before anything else changes; they resume only once
        // every worker has the writable store.
        let becomes_writable = self.apply_live(&changed, &mut applied);
        let mut failures = self.retarget_workers(&retarget, &staged);
        self.steer_added(&retarget, &mut failures);
        self.start_ifaces(&mut staged, &mut applied);
        self.stop_ifaces(&detach, &mut applied, &mut failures);
        self.swap_records(&removed, &mut staged, &run, &mut applied);
        for key in becomes_writable {
            self.writable_again(key, failures.is_empty(), &mut run);
        }
        self.cfg = run;
        self.publish();
        for l in &applied {
            info!("reload: {l}");
        }
        if failures.is_empty() {
            return Ok(ReloadReport {
                applied,
                needs_restart,
                not_serving: Vec::new(),
            });
        }
        for f in &failures {
            error!("reload: {f}");
        }
        Err(format!(
            "reload partly applied: {}{}",
            failures.join("; "),
            if applied.is_empty() {
                String::new()
            } else {
                format!(" (applied: {})", applied.join("; "))
            }
        ))
    }

    /// The live fields of kept exports; returns the exports that become
    /// writable (still read-only until [`Server::writable_again`]).
    fn apply_live(&self, changed: &[LiveChange], applied: &mut Vec<String>) -> Vec<Key> {
        let mut becomes_writable = Vec::new();
        for c in changed {
            let r = &self.exports[&c.key];
            let name = name_of(c.key);
            r.export.update(|s| {
                let mut n = s.clone();
                if c.read_only == Some(true) {
                    n.read_only = true;
                }
                if let Some(m) = &c.mac_mask {
                    n.mask = m.clone();
                }
                if let Some(cs) = &c.config_string {
                    n.config = cs.clone();
                }
                (Some(n), ())
            });
            if let Some(ro) = c.read_only {
                applied.push(format!("{name}: read_only {} -> {ro}", !ro));
                if !ro {
                    becomes_writable.push(c.key);
                }
            }
            if let Some(m) = &c.mac_mask {
                applied.push(format!(
                    "{name}: Mac Mask set to [{}] (edits made by initiators are replaced)",
                    m.iter()
                        .map(|m| m.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(cs) = &c.config_string {
                applied.push(format!(
                    "{name}: config string set to {:?}",
                    String::from_utf8_lossy(cs)
                ));
            }
        }
        becomes_writable
    }

    /// Steer the added exports' frames to XDP sockets that now know them;
    /// the interfaces' records take their new export lists.
    fn steer_added(&mut self, retarget: &[Retarget], failures: &mut Vec<String>) {
        for t in retarget {
            let Some(rec) = self.ifaces.get_mut(&t.iface) else {
                continue;
            };
            if let Some(x) = &rec.xdp {
                for k in t.to.iter().filter(|k| !t.from.contains(k)) {
                    if let Err(e) = x.set_target(k.0, k.1, true) {
                        failures.push(format!(
                            "{}: XDP program: steering {}: {e}",
                            t.iface,
                            name_of(*k)
                        ));
                    }
                }
            }
            rec.served = t.to.clone();
        }
    }

    /// Start the workers of the interfaces `staged` opened.
    fn start_ifaces(&mut self, staged: &mut Staged, applied: &mut Vec<String>) {
        for n in std::mem::take(&mut staged.attach) {
            let workers = n.workers.into_iter().map(|w| self.spawn(w)).collect();
            applied.push(format!(
                "interface {}: serving (datapath {})",
                n.name,
                if n.xdp.is_some() { "xdp" } else { "afpacket" }
            ));
            let info = staged.known[&n.name].clone();
            self.ifaces.insert(
                n.name,
                IfaceRec {
                    info,
                    xdp: n.xdp,
                    served: n.served,
                    workers,
                    choice: n.choice,
                },
            );
        }
        self.next_core = staged.next_core;
    }

    /// Stop the workers of interfaces left without an export (forgotten
    /// first, so their exit is not taken for a failure), then detach.
    fn stop_ifaces(
        &mut self,
        detach: &[String],
        applied: &mut Vec<String>,
        failures: &mut Vec<String>,
    ) {
        for name in detach {
            if let Some(rec) = self.ifaces.remove(name) {
                info!(iface = %name, "interface no longer served: stopping its workers");
                if let Err(e) = rec.stop() {
                    failures.push(format!("interface {name}: worker failed: {e}"));
                }
                applied.push(format!("interface {name}: stopped"));
            }
        }
    }

    /// Bookkeeping: removed exports go (their last Arc with the workers
    /// that released them), added ones join, reopened stores replace, and
    /// every kept export takes its spec from `run`.
    fn swap_records(
        &mut self,
        removed: &[Key],
        staged: &mut Staged,
        run: &Config,
        applied: &mut Vec<String>,
    ) {
        for k in removed {
            self.exports.remove(k);
            self.shrunk.remove(k);
            applied.push(format!("{}: removed", name_of(*k)));
        }
        for (k, rec) in std::mem::take(&mut staged.added) {
            applied.push(format!(
                "{}: added ({} sectors on {})",
                name_of(k),
                rec.export.state().sectors,
                if rec.spec.interfaces.is_empty() {
                    "no interface yet".to_string()
                } else {
                    rec.spec.interfaces.join(",")
                }
            ));
            self.exports.insert(k, rec);
        }
        for e in &run.exports {
            let key = (e.shelf, e.slot);
            if let Some(r) = self.exports.get_mut(&key) {
                if let Some(d) = staged.reopened.remove(&key) {
                    r.disk = d;
                    r.writable = true;
                }
                r.spec = e.clone();
            }
        }
    }

    /// Let export `key` take writes again once every worker has its
    /// writable store (`all_took`); otherwise it stays read-only, in its
    /// record and in the configuration in force (`run`).
    fn writable_again(&mut self, key: Key, all_took: bool, run: &mut Config) {
        let Some(r) = self.exports.get_mut(&key) else {
            return;
        };
        if all_took {
            r.export.update(|s| {
                (
                    Some(ExportState {
                        read_only: false,
                        ..s.clone()
                    }),
                    (),
                )
            });
        } else {
            r.spec.disk.read_only = true;
            if let Some(e) = run.exports.iter_mut().find(|e| (e.shelf, e.slot) == key) {
                e.disk.read_only = true;
            }
        }
    }

    /// Hand each worker of a retargeted interface its new export set, stop
    /// steering the exports it loses, and wait (up to
    /// [`RECONFIGURE_TIMEOUT`] in all) until every one took it. Returns
    /// one line per worker that did not.
    fn retarget_workers(&self, retarget: &[Retarget], staged: &Staged) -> Vec<String> {
        let mut waits: Vec<(String, Receiver<Result<(), String>>)> = Vec::new();
        for t in retarget {
            let Some(rec) = self.ifaces.get(&t.iface) else {
                continue;
            };
            let set: Vec<_> = t.to.iter().map(|k| self.pair_after(staged, k)).collect();
            if let Some(x) = &rec.xdp {
                for k in t.from.iter().filter(|k| !t.to.contains(k)) {
                    if let Err(e) = x.set_target(k.0, k.1, false) {
                        warn!(iface = %t.iface, error = %e, "XDP program: cannot stop steering {}", name_of(*k));
                    }
                }
            }
            let announce: Vec<Key> =
                t.to.iter()
                    .filter(|k| !t.from.contains(k))
                    .copied()
                    .collect();
            for w in &rec.workers {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let msg = Control::Reconfigure(Reconfig {
                    exports: set.iter().map(|(e, _)| Arc::clone(e)).collect(),
                    disks: set.iter().map(|(_, d)| Arc::clone(d)).collect(),
                    announce: announce.clone(),
                    done: tx,
                });
                if w.control.send_timeout(msg, RECONFIGURE_TIMEOUT).is_err() {
                    error!(worker = %w.name, "worker does not take control messages");
                }
                waits.push((w.name.clone(), rx));
            }
        }
        let deadline = Instant::now() + RECONFIGURE_TIMEOUT;
        let mut failures = Vec::new();
        for (worker, rx) in waits {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("worker {worker}: {e}")),
                Err(_) => failures.push(format!(
                    "worker {worker}: did not take its new export set within {RECONFIGURE_TIMEOUT:?}"
                )),
            }
        }
        failures
    }
}
