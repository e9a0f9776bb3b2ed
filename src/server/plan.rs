//! The first step of a reload: what changes, from configurations alone
//! (no I/O), so it can be tested on plain values. The next two steps,
//! prepare and commit, act on the [`ReloadPlan`] (`reload.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::open::by_iface;
use super::{name_of, Key};
use crate::config::{Config, DatapathKind, ExportSpec};
use crate::wire::MacAddr;
/// What a reload changes, computed from configurations alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReloadPlan {
    /// The configuration to run: new exports as written, kept ones with
    /// their restart-only fields as they run, the running datapath and
    /// `[xdp]` options, the new size-check interval.
    pub(super) run: Config,
    /// What only a restart applies (kept as it runs), one line each.
    pub(super) needs_restart: Vec<String>,
    /// Exports to open and serve, in configuration order.
    pub(super) added: Vec<Key>,
    /// Exports no longer configured.
    pub(super) removed: Vec<Key>,
    /// Kept exports whose live fields change.
    pub(super) changed: Vec<LiveChange>,
    /// Kept exports becoming writable whose store is open read-only: they
    /// need a writable descriptor.
    pub(super) reopened: Vec<Key>,
    /// Interfaces to start serving, with their exports (by name).
    pub(super) attach: Vec<(String, Vec<Key>)>,
    /// Interfaces left without an export: their workers stop.
    pub(super) detach: Vec<String>,
    /// Served interfaces whose workers get a new export set (an export
    /// joins or leaves, or one of their stores is reopened).
    pub(super) retarget: Vec<Retarget>,
}

/// The live fields of a kept export that change (`None`: unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LiveChange {
    /// The export.
    pub(super) key: Key,
    /// New `read_only` (the old one is its negation).
    pub(super) read_only: Option<bool>,
    /// New Mac Mask list (replaces edits made by initiators).
    pub(super) mac_mask: Option<Vec<MacAddr>>,
    /// New config string.
    pub(super) config_string: Option<Vec<u8>>,
}

/// An interface whose workers change export sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Retarget {
    /// Interface.
    pub(super) iface: String,
    /// Exports served now, in order.
    pub(super) from: Vec<Key>,
    /// Exports served after the reload, in order.
    pub(super) to: Vec<Key>,
}

/// Compare the configuration in force (`old`, whose exports with a store
/// open for writing are `writable`) with `new`.
pub(super) fn plan(old: &Config, writable: &BTreeSet<Key>, new: &Config) -> ReloadPlan {
    plan_with(old, writable, new, false)
}

/// [`plan`] for the server's own changes (an interface gone or back, an
/// export set aside or opened at last): an export's interface list
/// changes live, as its interfaces' export sets do.
pub(super) fn plan_live(old: &Config, writable: &BTreeSet<Key>, new: &Config) -> ReloadPlan {
    plan_with(old, writable, new, true)
}

fn plan_with(
    old: &Config,
    writable: &BTreeSet<Key>,
    new: &Config,
    live_ifaces: bool,
) -> ReloadPlan {
    let mut needs_restart = Vec::new();
    if new.datapath != old.datapath {
        let name = |d: DatapathKind| format!("{d:?}").to_lowercase();
        needs_restart.push(format!(
            "datapath {} -> {}",
            name(old.datapath),
            name(new.datapath)
        ));
    }
    if new.xdp != old.xdp {
        needs_restart.push("[xdp] options".into());
    }
    let running: BTreeMap<Key, &ExportSpec> =
        old.exports.iter().map(|e| ((e.shelf, e.slot), e)).collect();
    let mut run = old.clone();
    run.size_check_secs = new.size_check_secs;
    run.exports.clear();
    let (mut added, mut changed, mut reopened) = (Vec::new(), Vec::new(), Vec::new());
    for e in &new.exports {
        let key = (e.shelf, e.slot);
        let Some(r) = running.get(&key) else {
            added.push(key);
            run.exports.push(e.clone());
            continue;
        };
        for c in restart_only_changes(r, e, live_ifaces) {
            needs_restart.push(format!("{}: {c}", name_of(key)));
        }
        let change = LiveChange {
            key,
            read_only: (r.disk.read_only != e.disk.read_only).then_some(e.disk.read_only),
            mac_mask: (r.mac_mask != e.mac_mask).then(|| e.mac_mask.clone()),
            config_string: (r.config_string != e.config_string).then(|| e.config_string.clone()),
        };
        if change.read_only.is_some() || change.mac_mask.is_some() || change.config_string.is_some()
        {
            changed.push(change);
        }
        if !e.disk.read_only && !writable.contains(&key) {
            reopened.push(key);
        }
        let mut keep = (*r).clone();
        keep.disk.read_only = e.disk.read_only;
        keep.mac_mask = e.mac_mask.clone();
        keep.config_string = e.config_string.clone();
        if live_ifaces {
            keep.interfaces = e.interfaces.clone();
        }
        run.exports.push(keep);
    }
    let removed = running
        .keys()
        .filter(|k| !run.exports.iter().any(|e| (e.shelf, e.slot) == **k))
        .copied()
        .collect();
    let before = by_iface(&old.exports);
    let after = by_iface(&run.exports);
    let detach = before
        .keys()
        .filter(|n| !after.contains_key(*n))
        .cloned()
        .collect();
    let mut attach = Vec::new();
    let mut retarget = Vec::new();
    for (name, to) in after {
        match before.get(&name) {
            None => attach.push((name, to)),
            Some(from) if *from != to || to.iter().any(|k| reopened.contains(k)) => {
                retarget.push(Retarget {
                    iface: name,
                    from: from.clone(),
                    to,
                })
            }
            Some(_) => {}
        }
    }
    ReloadPlan {
        run,
        needs_restart,
        added,
        removed,
        changed,
        reopened,
        attach,
        detach,
        retarget,
    }
}

/// What differs between the running `old` and the configured `new` export
/// that only a restart applies.
fn restart_only_changes(old: &ExportSpec, new: &ExportSpec, live_ifaces: bool) -> Vec<String> {
    let mut v = Vec::new();
    let (o, n) = (&old.disk, &new.disk);
    let mut note = |what: &str, from: String, to: String| {
        v.push(format!("{what} {from} -> {to}"));
    };
    if o.source != n.source {
        note("file", o.source.to_string(), n.source.to_string());
    }
    if o.offset_sectors != n.offset_sectors {
        note(
            "offset",
            o.offset_sectors.to_string(),
            n.offset_sectors.to_string(),
        );
    }
    if o.length_sectors != n.length_sectors {
        note(
            "length",
            o.length_sectors
                .map_or("(to the end)".into(), |l| l.to_string()),
            n.length_sectors
                .map_or("(to the end)".into(), |l| l.to_string()),
        );
    }
    if o.direct != n.direct {
        note("direct", o.direct.to_string(), n.direct.to_string());
    }
    if o.sync != n.sync {
        note("sync", o.sync.to_string(), n.sync.to_string());
    }
    if o.writeback != n.writeback {
        note(
            "writeback",
            o.writeback.to_string(),
            n.writeback.to_string(),
        );
    }
    let set = |l: &[String]| l.iter().cloned().collect::<BTreeSet<_>>();
    if !live_ifaces && set(&old.interfaces) != set(&new.interfaces) {
        note(
            "interfaces",
            old.interfaces.join(","),
            new.interfaces.join(","),
        );
    }
    if old.bufcnt != new.bufcnt {
        note("bufcnt", old.bufcnt.to_string(), new.bufcnt.to_string());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::{DiskSpec, Source};
    use crate::net::xdp::XdpOptions;

    fn export(shelf: u16, slot: u8, ifaces: &[&str]) -> ExportSpec {
        ExportSpec {
            shelf,
            slot,
            disk: DiskSpec {
                source: Source::File(format!("/srv/e{shelf}.{slot}").into()),
                offset_sectors: 0,
                length_sectors: None,
                read_only: false,
                direct: false,
                sync: false,
                writeback: false,
                rbd: Default::default(),
            },
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            bufcnt: 64,
            mac_mask: Vec::new(),
            config_string: Vec::new(),
        }
    }

    fn config(exports: Vec<ExportSpec>) -> Config {
        Config {
            exports,
            datapath: DatapathKind::Auto,
            xdp: XdpOptions::default(),
            size_check_secs: 5,
            all_or_nothing: false,
        }
    }

    /// Every export of `cfg` whose store is writable (as a start leaves it).
    fn writable(cfg: &Config) -> BTreeSet<Key> {
        cfg.exports
            .iter()
            .filter(|e| !e.disk.read_only)
            .map(|e| (e.shelf, e.slot))
            .collect()
    }

    fn empty_plan(run: Config) -> ReloadPlan {
        ReloadPlan {
            run,
            needs_restart: vec![],
            added: vec![],
            removed: vec![],
            changed: vec![],
            reopened: vec![],
            attach: vec![],
            detach: vec![],
            retarget: vec![],
        }
    }

    #[test]
    fn same_configuration_changes_nothing() {
        let old = config(vec![export(1, 1, &["a"]), export(1, 2, &["a", "b"])]);
        let p = plan(&old, &writable(&old), &old.clone());
        assert_eq!(p, empty_plan(old));
    }

    #[test]
    fn idle_start_then_an_export() {
        let old = config(vec![]);
        let new = config(vec![export(3, 0, &["a"])]);
        let p = plan(&old, &BTreeSet::new(), &new);
        assert_eq!(
            p,
            ReloadPlan {
                added: vec![(3, 0)],
                attach: vec![("a".into(), vec![(3, 0)])],
                ..empty_plan(new)
            }
        );
    }

    #[test]
    fn export_joins_and_leaves_a_served_interface() {
        let old = config(vec![export(1, 1, &["a"]), export(1, 2, &["a"])]);
        let new = config(vec![export(1, 1, &["a"]), export(1, 3, &["a", "b"])]);
        let p = plan(&old, &writable(&old), &new);
        assert_eq!(p.added, [(1, 3)]);
        assert_eq!(p.removed, [(1, 2)]);
        assert_eq!(p.attach, [("b".to_string(), vec![(1, 3)])]);
        assert!(p.detach.is_empty());
        assert_eq!(
            p.retarget,
            [Retarget {
                iface: "a".into(),
                from: vec![(1, 1), (1, 2)],
                to: vec![(1, 1), (1, 3)],
            }]
        );
        assert_eq!(p.run, new);
        assert!(p.changed.is_empty() && p.reopened.is_empty() && p.needs_restart.is_empty());
    }

    #[test]
    fn last_export_of_an_interface_removed_detaches_it() {
        let old = config(vec![export(1, 1, &["a"]), export(2, 1, &["b"])]);
        let new = config(vec![export(1, 1, &["a"])]);
        let p = plan(&old, &writable(&old), &new);
        assert_eq!(
            p,
            ReloadPlan {
                removed: vec![(2, 1)],
                detach: vec!["b".into()],
                ..empty_plan(new)
            }
        );
    }

    #[test]
    fn reorder_alone_retargets_in_the_new_order() {
        let old = config(vec![export(1, 1, &["a"]), export(1, 2, &["a"])]);
        let new = config(vec![export(1, 2, &["a"]), export(1, 1, &["a"])]);
        let p = plan(&old, &writable(&old), &new);
        assert_eq!(p.retarget.len(), 1);
        assert_eq!(p.retarget[0].to, [(1, 2), (1, 1)]);
        assert!(p.added.is_empty() && p.removed.is_empty());
    }

    #[test]
    fn read_only_to_writable_reopens_only_a_read_only_descriptor() {
        let mut ro = export(1, 1, &["a", "b"]);
        ro.disk.read_only = true;
        let old = config(vec![ro.clone(), export(1, 2, &["b"])]);
        let new = config(vec![export(1, 1, &["a", "b"]), export(1, 2, &["b"])]);
        // Started read-only: its store needs a writable descriptor, and the
        // workers of both interfaces the new store.
        let p = plan(&old, &writable(&old), &new);
        assert_eq!(p.reopened, [(1, 1)]);
        let change = LiveChange {
            key: (1, 1),
            read_only: Some(false),
            mac_mask: None,
            config_string: None,
        };
        assert_eq!(p.changed, std::slice::from_ref(&change));
        let ifaces: Vec<&str> = p.retarget.iter().map(|t| t.iface.as_str()).collect();
        assert_eq!(ifaces, ["a", "b"]);
        assert!(p.retarget.iter().all(|t| t.from == t.to));
        // Already open for writing (it was writable before): no new store,
        // no worker disturbed.
        let all: BTreeSet<Key> = [(1, 1), (1, 2)].into();
        let p = plan(&old, &all, &new);
        assert!(p.reopened.is_empty() && p.retarget.is_empty());
        assert_eq!(p.changed, [change]);
        // Writable to read-only: live, nothing reopened.
        let p = plan(&new, &all, &old);
        assert!(p.reopened.is_empty() && p.retarget.is_empty());
        assert_eq!(p.changed[0].read_only, Some(true));
    }

    #[test]
    fn live_fields_change_without_disturbing_workers() {
        let old = config(vec![export(1, 1, &["a"])]);
        let mut e = export(1, 1, &["a"]);
        e.mac_mask = vec!["02:00:00:00:00:01".parse().unwrap()];
        e.config_string = b"hello".to_vec();
        let mut new = config(vec![e.clone()]);
        new.size_check_secs = 0;
        let p = plan(&old, &writable(&old), &new);
        assert_eq!(
            p,
            ReloadPlan {
                changed: vec![LiveChange {
                    key: (1, 1),
                    read_only: None,
                    mac_mask: Some(e.mac_mask.clone()),
                    config_string: Some(b"hello".to_vec()),
                }],
                ..empty_plan(new)
            }
        );
    }

    #[test]
    fn restart_only_changes_are_reported_and_kept_as_they_run() {
        let old = config(vec![export(1, 1, &["a"])]);
        let mut e = export(1, 1, &["a", "b"]);
        e.disk.source = Source::File("/srv/other".into());
        e.disk.direct = true;
        e.bufcnt = 16;
        e.config_string = b"live".to_vec();
        let mut new = config(vec![e]);
        new.datapath = DatapathKind::Xdp;
        new.xdp.zero_copy = crate::net::xdp::socket::ZeroCopy::On;
        let p = plan(&old, &writable(&old), &new);
        assert_eq!(
            p.needs_restart,
            [
                "datapath auto -> xdp",
                "[xdp] options",
                "e1.1: file /srv/e1.1 -> /srv/other",
                "e1.1: direct false -> true",
                "e1.1: interfaces a -> a,b",
                "e1.1: bufcnt 64 -> 16",
            ]
        );
        // Runs as before, but for the live field; no interface attached.
        let mut want = old.clone();
        want.exports[0].config_string = b"live".to_vec();
        assert_eq!(p.run, want);
        assert!(p.attach.is_empty() && p.retarget.is_empty() && p.added.is_empty());
        assert_eq!(p.changed.len(), 1);
    }

    #[test]
    fn live_plan_moves_an_export_between_interfaces() {
        // The server's own change: b gone (e1.1 leaves it), c back.
        let old = config(vec![export(1, 1, &["a", "b"]), export(1, 2, &["b"])]);
        let new = config(vec![export(1, 1, &["a", "c"]), export(1, 2, &[])]);
        let p = plan_live(&old, &writable(&old), &new);
        assert!(p.needs_restart.is_empty(), "{:?}", p.needs_restart);
        assert_eq!(p.run, new);
        assert_eq!(p.detach, ["b"]);
        assert_eq!(p.attach, [("c".to_string(), vec![(1, 1)])]);
        assert!(p.added.is_empty() && p.removed.is_empty() && p.retarget.is_empty());
        // The operator's reload still needs a restart for the same change.
        let p = plan(&old, &writable(&old), &new);
        assert_eq!(p.needs_restart.len(), 2, "{:?}", p.needs_restart);
        assert!(p.attach.is_empty() && p.detach.is_empty());
    }
}
