//! One target MAC per queue, so that initiators spread AoE over the queues.
//!
//! A NIC's RSS hashes IP headers; AoE has none, so every AoE frame lands on
//! one queue. AoE's own multipath does the spreading instead: the Linux aoe
//! driver treats each MAC a shelf.slot answers from as a path and rotates
//! its frames over all of them. So the worker of queue q answers from its
//! own address [`queue_mac`], and frames *to* that address must reach queue
//! q: a NIC ntuple rule by destination MAC (`ethtool -N IF flow-type ether
//! dst MAC_q action q`), or something outside (a switch, tc, the tests).
//!
//! What is set up per interface ([`Steering::setup`], undone on drop):
//! - every queue MAC but queue 0's (the port's own) goes on the port's
//!   unicast filter (`bridge fdb add MAC dev IF self`);
//! - with ntuple steering, one rule per queue q >= 1 (queue 0's traffic is
//!   the port MAC's, which RSS sends to queue 0 for non-IP frames);
//! - before that, what a killed run left behind is removed: the derivation
//!   is deterministic, so the derived MACs of every possible queue found
//!   on the filter, and the ether rules for them, are ours.
//!
//! `--steer`: `auto` uses ntuple rules when the NIC has them, else serves
//! from queue 0 only and says why; `ntuple` fails without them; `external`
//! sets up the MACs and leaves steering to others; `none` answers from the
//! port MAC on every queue (the behaviour before per-queue MACs, for setups
//! that spread frames some other way, e.g. XPS on a veth peer).

use std::io;

use tracing::{debug, info, warn};

use super::bpf::MAX_QUEUES;
use crate::net::ethtool::Ethtool;
use crate::net::iface::IfaceInfo;
use crate::net::netlink::Rtnl;
use crate::wire::MacAddr;

/// How frames reach the queue whose MAC they are sent to (`--steer`, TOML
/// `[xdp] steer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Steer {
    /// ntuple rules where the NIC has them, else queue 0 only.
    #[default]
    Auto,
    /// ntuple rules, or fail at start.
    Ntuple,
    /// Per-queue MACs; steering by destination MAC is done elsewhere.
    External,
    /// Every queue answers from the port MAC (no per-queue MACs).
    None,
}

/// The address queue `q` answers from on a port whose MAC is `port`.
///
/// Queue 0 keeps the port's own MAC. For q >= 1: octet 0 gets the locally
/// administered bit (0x02) and the low 6 bits of q XORed into its upper 6
/// bits; queues 64 and up also XOR q / 64 into octet 1; the other octets
/// stay the port's. Hence: unicast, locally administered, stable across
/// restarts, distinct for every queue and from the port MAC (even when the
/// port MAC is itself locally administered, as veth addresses are), and
/// sibling ports of one NIC (whose MACs differ in the last octets) never
/// share a derived address.
pub fn queue_mac(port: MacAddr, q: u32) -> MacAddr {
    if q == 0 {
        return port;
    }
    let mut m = port.0;
    m[0] = (m[0] ^ (((q & 0x3f) as u8) << 2)) | 0x02;
    m[0] &= !0x01;
    m[1] ^= ((q >> 6) & 0xff) as u8;
    MacAddr(m)
}

/// Why steering could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// `--steer ntuple` on an interface without usable ntuple rules.
    #[error("{iface}: --steer ntuple: {why}")]
    NoNtuple {
        /// Interface.
        iface: String,
        /// What is missing.
        why: String,
    },
    /// The unicast filter refused an address.
    #[error("{iface}: adding queue {queue}'s MAC {mac} to the unicast filter (bridge fdb add {mac} dev {iface} self)")]
    Fdb {
        /// Interface.
        iface: String,
        /// Queue.
        queue: u32,
        /// Address.
        mac: MacAddr,
        /// Cause.
        source: io::Error,
    },
}

/// What is in force on an interface; undone when dropped.
#[derive(Debug)]
pub struct Steering {
    iface: String,
    ifindex: u32,
    /// Address of each served queue (its length is the queue count).
    macs: Vec<MacAddr>,
    state: SteerState,
    /// Addresses we put on the unicast filter.
    fdb: Vec<MacAddr>,
    /// ntuple rule locations we inserted.
    rules: Vec<u32>,
}

/// How an interface's queues are steered (`xblade status`: `steer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerState {
    /// One queue: nothing to steer.
    Single,
    /// `--steer none`: every queue answers from the port MAC.
    None,
    /// Per-queue MACs, NIC ntuple rules steer them.
    Ntuple,
    /// Per-queue MACs, steered by someone else.
    External,
    /// `auto` without ntuple rules: queue 0 only.
    Queue0Only,
}

impl SteerState {
    /// Name for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            SteerState::Single => "single-queue",
            SteerState::None => "none",
            SteerState::Ntuple => "ntuple",
            SteerState::External => "external",
            SteerState::Queue0Only => "queue0-only",
        }
    }
}

/// Why the NIC cannot steer by destination MAC (None: it can, as far as
/// the feature flags tell).
fn ntuple_missing(eth: &Ethtool) -> Option<String> {
    let name = eth.name();
    match eth.ntuple_enabled() {
        Ok(true) => None,
        Ok(false) => Some(match eth.rule_count() {
            Ok(_) => format!(
                "ntuple filters are off on {name} (turn them on: ethtool -K {name} ntuple on)"
            ),
            Err(_) => format!(
                "the driver of {name} has no ntuple filters (ethtool -k {name}: ntuple-filters off [fixed]), so it cannot steer by destination MAC"
            ),
        }),
        Err(e) => Some(format!("cannot read the features of {name}: {e}")),
    }
}

impl Steering {
    /// Decide and install steering for `queues` queues of `iface` with
    /// policy `steer`. Call it with the XDP program attached (so no other
    /// target owns the interface), before the workers start.
    pub fn setup(iface: &IfaceInfo, queues: u32, steer: Steer) -> Result<Steering, SteerError> {
        let mut s = Steering {
            iface: iface.name.clone(),
            ifindex: iface.index,
            macs: vec![iface.mac],
            state: SteerState::Single,
            fdb: Vec::new(),
            rules: Vec::new(),
        };
        let mut rtnl = match Rtnl::open() {
            Ok(r) => Some(r),
            Err(e) => {
                debug!(iface = %iface.name, error = %e, "no rtnetlink socket: stale queue MACs not checked");
                None
            }
        };
        let eth = Ethtool::new(&iface.name).ok();
        s.clean_stale(iface.mac, rtnl.as_mut(), eth.as_ref());
        if queues <= 1 {
            return Ok(s);
        }
        if steer == Steer::None {
            s.macs = vec![iface.mac; queues as usize];
            s.state = SteerState::None;
            info!(iface = %iface.name, queues, steer = "none",
                  "queue steering: none (every queue answers from the port MAC; the initiator sees one path)");
            return Ok(s);
        }
        let macs: Vec<MacAddr> = (0..queues).map(|q| queue_mac(iface.mac, q)).collect();
        if matches!(steer, Steer::Auto | Steer::Ntuple) {
            let missing = match &eth {
                Some(e) => ntuple_missing(e),
                None => Some(format!("no ethtool handle on {}", iface.name)),
            };
            let failed = match (missing, &eth) {
                (None, Some(e)) => s.insert_rules(e, &macs).err(),
                (m, _) => m,
            };
            if let Some(why) = failed {
                if steer == Steer::Ntuple {
                    s.remove();
                    return Err(SteerError::NoNtuple {
                        iface: iface.name.clone(),
                        why,
                    });
                }
                warn!(iface = %iface.name, queues, steer = "auto", reason = %why,
                      "queue steering: serving from queue 0 only, since AoE (not IP) is not spread by RSS and the NIC cannot steer by destination MAC; use --steer external if a switch or tc steers by destination MAC, or --queues 1 to silence this");
                s.remove();
                s.state = SteerState::Queue0Only;
                return Ok(s);
            }
            s.state = SteerState::Ntuple;
        } else {
            s.state = SteerState::External;
        }
        if let Err(e) = s.add_fdb(rtnl.as_mut(), &macs) {
            s.remove();
            return Err(e);
        }
        s.macs = macs;
        info!(iface = %iface.name, queues, steer = s.state.name(),
              macs = %s.macs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(","),
              "queue steering: one target MAC per queue{}",
              if s.state == SteerState::External { " (steering by destination MAC left to the network)" } else { " (ntuple rules installed)" });
        Ok(s)
    }

    /// The address of each served queue; its length is the number of
    /// queues to serve.
    pub fn macs(&self) -> &[MacAddr] {
        &self.macs
    }

    /// What is in force.
    pub fn state(&self) -> SteerState {
        self.state
    }

    fn add_fdb(&mut self, rtnl: Option<&mut Rtnl>, macs: &[MacAddr]) -> Result<(), SteerError> {
        let Some(rtnl) = rtnl else {
            return Err(SteerError::Fdb {
                iface: self.iface.clone(),
                queue: 1,
                mac: macs[1],
                source: io::Error::other("no rtnetlink socket"),
            });
        };
        for (q, &mac) in macs.iter().enumerate().skip(1) {
            rtnl.fdb_add(self.ifindex, mac)
                .map_err(|source| SteerError::Fdb {
                    iface: self.iface.clone(),
                    queue: q as u32,
                    mac,
                    source,
                })?;
            self.fdb.push(mac);
        }
        Ok(())
    }

    /// One rule per queue q >= 1; on failure, why (rules already inserted
    /// are in `self.rules`, for [`Steering::remove`]).
    fn insert_rules(&mut self, eth: &Ethtool, macs: &[MacAddr]) -> Result<(), String> {
        for (q, &mac) in macs.iter().enumerate().skip(1) {
            let q = q as u32;
            let loc = match eth.insert_mac_rule(mac, q, None) {
                Ok(l) => l,
                // Drivers without RX_CLS_LOC_ANY want a location.
                Err(_) => match eth.free_location() {
                    Ok(Some(l)) => eth.insert_mac_rule(mac, q, Some(l)),
                    Ok(None) => Err(io::Error::other("no free rule location")),
                    Err(e) => Err(e),
                }
                .map_err(|e| {
                    format!(
                        "ethtool -N {} flow-type ether dst {mac} action {q} failed: {e}",
                        self.iface
                    )
                })?,
            };
            self.rules.push(loc);
        }
        Ok(())
    }

    /// Remove what a killed run on this interface left: derived MACs of
    /// every possible queue on the unicast filter, and ether rules for them.
    fn clean_stale(&mut self, port: MacAddr, rtnl: Option<&mut Rtnl>, eth: Option<&Ethtool>) {
        let derived: Vec<MacAddr> = (1..MAX_QUEUES).map(|q| queue_mac(port, q)).collect();
        let mut fdb = 0;
        if let Some(rtnl) = rtnl {
            for &m in &derived {
                match rtnl.fdb_del(self.ifindex, m) {
                    Ok(true) => fdb += 1,
                    Ok(false) => {}
                    Err(e) => {
                        debug!(iface = %self.iface, error = %e, "cannot check the unicast filter for stale queue MACs");
                        break;
                    }
                }
            }
        }
        let mut rules = 0;
        if let Some(eth) = eth {
            for loc in eth.rule_locations().unwrap_or_default() {
                if let Ok(Some(r)) = eth.mac_rule(loc) {
                    if derived.contains(&r.dst) && eth.delete_rule(loc).is_ok() {
                        rules += 1;
                    }
                }
            }
        }
        if fdb + rules > 0 {
            info!(iface = %self.iface, unicast_filter = fdb, ntuple_rules = rules,
                  "removed queue MACs left by an earlier run that did not exit cleanly");
        }
    }

    /// Undo everything installed.
    fn remove(&mut self) {
        if !self.rules.is_empty() {
            match Ethtool::new(&self.iface) {
                Ok(eth) => {
                    for &loc in &self.rules {
                        if let Err(e) = eth.delete_rule(loc) {
                            warn!(iface = %self.iface, location = loc, error = %e, "could not delete ntuple rule");
                        }
                    }
                }
                Err(e) => warn!(iface = %self.iface, error = %e, "could not delete ntuple rules"),
            }
            self.rules.clear();
        }
        if !self.fdb.is_empty() {
            match Rtnl::open() {
                Ok(mut rtnl) => {
                    for &m in &self.fdb {
                        if let Err(e) = rtnl.fdb_del(self.ifindex, m) {
                            warn!(iface = %self.iface, mac = %m, error = %e, "could not remove queue MAC from the unicast filter");
                        }
                    }
                }
                Err(e) => warn!(iface = %self.iface, error = %e, "could not remove queue MACs"),
            }
            self.fdb.clear();
        }
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_macs_are_distinct_local_unicast() {
        for port in [
            MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4b, 0x10]), // universal
            MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]), // local (veth)
            MacAddr([0xfe, 0xff, 0xff, 0xff, 0xff, 0xfe]),
        ] {
            assert_eq!(queue_mac(port, 0), port);
            let all: Vec<MacAddr> = (0..MAX_QUEUES).map(|q| queue_mac(port, q)).collect();
            for (q, m) in all.iter().enumerate().skip(1) {
                assert!(!m.is_multicast(), "{m}");
                assert_eq!(m.0[0] & 0x02, 0x02, "{m}");
                assert_eq!(m.0[2..], port.0[2..]);
                assert!(!all[..q].contains(m), "queue {q}: {m} repeats");
                assert_eq!(queue_mac(port, q as u32), *m, "stable");
            }
        }
    }

    #[test]
    fn fixed_derivation() {
        let p = MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4b, 0x10]);
        assert_eq!(queue_mac(p, 1).to_string(), "06:1b:21:3a:4b:10");
        assert_eq!(queue_mac(p, 2).to_string(), "0a:1b:21:3a:4b:10");
        assert_eq!(queue_mac(p, 64).to_string(), "02:1a:21:3a:4b:10");
        let v = MacAddr([0x02, 0, 0, 0, 0, 1]);
        assert_eq!(queue_mac(v, 1).to_string(), "06:00:00:00:00:01");
    }

    #[test]
    fn sibling_ports_never_share() {
        let a = MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4b, 0x10]);
        let b = MacAddr([0x00, 0x1b, 0x21, 0x3a, 0x4b, 0x11]);
        for qa in 0..MAX_QUEUES {
            for qb in 0..MAX_QUEUES {
                assert_ne!(queue_mac(a, qa), queue_mac(b, qb));
            }
        }
    }
}
