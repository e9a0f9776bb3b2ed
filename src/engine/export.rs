//! An export: the immutable identity of one shelf.slot and its mutable state
//! (capacity, config string, Mac Mask and reserve lists), shared by every
//! worker of every interface that serves it.
//!
//! The state is an immutable snapshot behind an [`ArcSwap`]: the per-request
//! path loads it without a lock, and the rare edits (a QC set, a mask edit, a
//! reservation, a resize) build a new snapshot and swap it in with a
//! compare-and-swap loop, so every queue sees one consistent state.
#![forbid(unsafe_code)]

use std::sync::Arc;

use arc_swap::{ArcSwap, Cache, Guard};

use crate::wire::{mask, reserve, MacAddr, MAX_CONFIG_STRING};

/// Most Mac Mask entries: what a reply at MTU 1500 can carry (10 + 4 + 8n <= 1500).
pub const MAX_MASK_ENTRIES: usize = 185;
/// Most reserve-list entries: what a reply at MTU 1500 can carry (10 + 2 + 6n <= 1500).
pub const MAX_RESERVE_ENTRIES: usize = 248;

const _: () = assert!(24 + mask::HEADER_LEN + MAX_MASK_ENTRIES * mask::DIRECTIVE_LEN <= 1514);
const _: () = assert!(24 + reserve::HEADER_LEN + MAX_RESERVE_ENTRIES * 6 <= 1514);

/// What an export is, fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// Shelf (major). 0xffff is the wildcard and is refused by the config.
    pub shelf: u16,
    /// Slot (minor). 0xff is the wildcard and is refused by the config.
    pub slot: u8,
    /// Buffer count advertised in Query Config: how many requests per
    /// initiator the datapath can absorb.
    pub bufcnt: u16,
    /// IDENTIFY serial number (20 chars).
    pub serial: String,
    /// IDENTIFY model (40 chars).
    pub model: String,
    /// IDENTIFY firmware revision (8 chars).
    pub firmware: String,
}

/// The mutable part, replaced as a whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportState {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// Writes are refused with ABRT.
    pub read_only: bool,
    /// Query Config string (at most 1024 bytes).
    pub config: Vec<u8>,
    /// Mac Mask list: when non-empty, only these MACs may issue ATA commands.
    pub mask: Vec<MacAddr>,
    /// Reserve list: when non-empty, only these MACs may read or write.
    pub reserve: Vec<MacAddr>,
}

impl ExportState {
    /// True when `mac` passes the Mac Mask.
    pub fn mask_allows(&self, mac: MacAddr) -> bool {
        self.mask.is_empty() || self.mask.contains(&mac)
    }

    /// True when `mac` holds (or nobody holds) the reservation.
    pub fn reserve_allows(&self, mac: MacAddr) -> bool {
        self.reserve.is_empty() || self.reserve.contains(&mac)
    }
}

/// What [`Export::state_cache`] returns: revalidated on every `load`, so a
/// worker sees every swap no later than its next request.
pub type StateCache = Cache<StateHandle, Arc<ExportState>>;

/// An export seen as its state cell, for [`StateCache`].
#[derive(Debug, Clone)]
pub struct StateHandle(Arc<Export>);

impl std::ops::Deref for StateHandle {
    type Target = ArcSwap<ExportState>;

    fn deref(&self) -> &Self::Target {
        &self.0.state
    }
}

/// One export, shared (`Arc`) by the workers that serve it.
#[derive(Debug)]
pub struct Export {
    /// Identity.
    pub info: ExportInfo,
    state: ArcSwap<ExportState>,
}

impl Export {
    /// Create an export. The config string is truncated to 1024 bytes and
    /// the mask to its capacity; the config layer rejects both before this.
    pub fn new(info: ExportInfo, mut state: ExportState) -> Export {
        state.config.truncate(MAX_CONFIG_STRING);
        state.mask.truncate(MAX_MASK_ENTRIES);
        state.reserve.truncate(MAX_RESERVE_ENTRIES);
        Export {
            info,
            state: ArcSwap::from_pointee(state),
        }
    }

    /// The current snapshot (lock-free).
    pub fn state(&self) -> Guard<Arc<ExportState>> {
        self.state.load()
    }

    /// A per-worker cache of the snapshot for the request path: one plain
    /// atomic load per request while the state is unchanged (a `load()`
    /// also takes and returns a debt slot, about 10 ns of a 150 ns budget).
    pub fn state_cache(self: &Arc<Self>) -> StateCache {
        Cache::new(StateHandle(Arc::clone(self)))
    }

    /// Apply `edit` atomically: it gets the current state and returns the new
    /// one (or `None` to leave it unchanged) plus a value handed back to the
    /// caller. `edit` may run more than once under contention, so it must
    /// only compute.
    pub fn update<R>(&self, mut edit: impl FnMut(&ExportState) -> (Option<ExportState>, R)) -> R {
        let mut result = None;
        self.state.rcu(|cur| {
            let (new, r) = edit(cur);
            result = Some(r);
            match new {
                Some(s) => Arc::new(s),
                None => Arc::clone(cur),
            }
        });
        result.expect("rcu runs the closure at least once")
    }

    /// Replace the capacity (online resize).
    pub fn set_sectors(&self, sectors: u64) {
        self.update(|s| {
            (
                Some(ExportState {
                    sectors,
                    ..s.clone()
                }),
                (),
            )
        })
    }

    /// Where unsolicited announcements go, as vblade sends them: to each
    /// Mac Mask entry when the mask is set (nobody else may use the export),
    /// else to broadcast.
    pub fn announce_destinations(&self) -> Vec<MacAddr> {
        let mask = &self.state().mask;
        if mask.is_empty() {
            vec![MacAddr::BROADCAST]
        } else {
            mask.clone()
        }
    }

    /// Does a request for `major.minor` address this export?
    pub fn matches(&self, major: u16, minor: u8) -> bool {
        (major == crate::wire::aoe::MAJOR_ANY || major == self.info.shelf)
            && (minor == crate::wire::aoe::MINOR_ANY || minor == self.info.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export() -> Export {
        Export::new(
            ExportInfo {
                shelf: 1,
                slot: 2,
                bufcnt: 16,
                serial: "s".into(),
                model: "m".into(),
                firmware: "f".into(),
            },
            ExportState {
                sectors: 100,
                ..Default::default()
            },
        )
    }

    #[test]
    fn addressing() {
        let e = export();
        assert!(e.matches(1, 2));
        assert!(e.matches(0xffff, 2));
        assert!(e.matches(1, 0xff));
        assert!(e.matches(0xffff, 0xff));
        assert!(!e.matches(1, 3));
        assert!(!e.matches(2, 0xff));
    }

    #[test]
    fn update_is_atomic_snapshot() {
        let e = export();
        let before = e.state();
        let r = e.update(|s| {
            let mut n = s.clone();
            n.config = b"x".to_vec();
            (Some(n), 7)
        });
        assert_eq!(r, 7);
        assert!(before.config.is_empty(), "old snapshot unchanged");
        assert_eq!(e.state().config, b"x");
        assert_eq!(e.announce_destinations(), vec![MacAddr::BROADCAST]);
        e.set_sectors(200);
        assert_eq!(e.state().sectors, 200);
        assert_eq!(e.state().config, b"x");
    }
}
