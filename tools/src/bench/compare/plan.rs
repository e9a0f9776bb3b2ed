//! The comparison's matrix: implementations, backing stores, workloads,
//! and which cells run.

use serde::Serialize;

/// Implementations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impl {
    /// /usr/sbin/vblade.
    Vblade,
    /// xblade --datapath afpacket.
    XbladeAfpacket,
    /// xblade --datapath xdp --xdp-mode native.
    XbladeXdpNative,
    /// xblade --datapath xdp --xdp-mode skb.
    XbladeXdpSkb,
}

impl Impl {
    pub(super) fn name(self) -> &'static str {
        match self {
            Impl::Vblade => "vblade",
            Impl::XbladeAfpacket => "xblade afpacket",
            Impl::XbladeXdpNative => "xblade xdp native",
            Impl::XbladeXdpSkb => "xblade xdp skb",
        }
    }
}

/// Backing stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// A file whose pages are in the page cache.
    PageCache,
    /// A file opened with O_DIRECT (`-d`).
    Direct,
    /// xblade's `null:1G`.
    Null,
    /// xblade `--xdp-reflect` on `null:1G`: no engine, no disk; the
    /// datapath's ceiling.
    Reflect,
}

impl Backing {
    pub(super) fn name(self) -> &'static str {
        match self {
            Backing::PageCache => "page cache",
            Backing::Direct => "O_DIRECT",
            Backing::Null => "null",
            Backing::Reflect => "reflect",
        }
    }
}

/// One target configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TargetCfg {
    /// Implementation.
    pub imp: Impl,
    /// Backing store.
    pub backing: Backing,
    /// xblade `--writeback` (acknowledge writes from the page cache).
    pub writeback: bool,
}

impl TargetCfg {
    /// The implementation's name.
    pub fn imp_name(&self) -> &'static str {
        self.imp.name()
    }

    /// Row label: implementation, plus the write policy on write rows.
    pub fn label(&self, write: bool) -> String {
        let mut s = self.imp.name().to_string();
        if write && self.backing != Backing::Null {
            s.push_str(match (self.imp, self.writeback) {
                (Impl::Vblade, _) => " (page-cache ack)",
                (_, true) => " --writeback",
                (_, false) => " (durable)",
            });
        }
        s
    }
}

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Short name.
    pub name: &'static str,
    /// Reads (else writes).
    pub read: bool,
    /// Bytes per request.
    pub bytes: usize,
    /// Link MTU.
    pub mtu: u32,
    /// Requests in flight.
    pub window: usize,
}

pub(super) const WORKLOADS: [Workload; 6] = [
    Workload {
        name: "1K read w1",
        read: true,
        bytes: 1024,
        mtu: 1500,
        window: 1,
    },
    Workload {
        name: "1K read w64",
        read: true,
        bytes: 1024,
        mtu: 1500,
        window: 64,
    },
    Workload {
        name: "1K write w1",
        read: false,
        bytes: 1024,
        mtu: 1500,
        window: 1,
    },
    Workload {
        name: "1K write w64",
        read: false,
        bytes: 1024,
        mtu: 1500,
        window: 64,
    },
    Workload {
        name: "8K read w1 (MTU 9000)",
        read: true,
        bytes: 8192,
        mtu: 9000,
        window: 1,
    },
    Workload {
        name: "8K read w64 (MTU 9000)",
        read: true,
        bytes: 8192,
        mtu: 9000,
        window: 64,
    },
];

/// The cells to run, in order: (config, workloads).
pub(super) fn plan(full: bool) -> Vec<(TargetCfg, Vec<Workload>)> {
    let all: Vec<Workload> = WORKLOADS.to_vec();
    let writes: Vec<Workload> = WORKLOADS.iter().copied().filter(|w| !w.read).collect();
    let direct: Vec<Workload> = if full {
        all.clone()
    } else {
        WORKLOADS
            .iter()
            .copied()
            .filter(|w| w.window == 64)
            .collect()
    };
    let null: Vec<Workload> = if full {
        all.clone()
    } else {
        WORKLOADS
            .iter()
            .copied()
            .filter(|w| w.read && (w.window == 64 || w.mtu == 1500))
            .collect()
    };
    let cfg = |imp, backing, writeback| TargetCfg {
        imp,
        backing,
        writeback,
    };
    use Backing::*;
    use Impl::*;
    let mut p = Vec::new();
    for imp in [Vblade, XbladeAfpacket, XbladeXdpNative, XbladeXdpSkb] {
        p.push((cfg(imp, PageCache, false), all.clone()));
        if imp != Vblade {
            p.push((cfg(imp, PageCache, true), writes.clone()));
        }
    }
    let direct_impls: &[Impl] = if full {
        &[Vblade, XbladeAfpacket, XbladeXdpNative, XbladeXdpSkb]
    } else {
        &[Vblade, XbladeAfpacket, XbladeXdpNative]
    };
    for &imp in direct_impls {
        p.push((cfg(imp, Direct, false), direct.clone()));
    }
    let null_impls: &[Impl] = if full {
        &[XbladeAfpacket, XbladeXdpNative, XbladeXdpSkb]
    } else {
        &[XbladeAfpacket, XbladeXdpNative]
    };
    for &imp in null_impls {
        p.push((cfg(imp, Null, false), null.clone()));
    }
    // The ceiling of each XDP mode, and its null row to compare with.
    let reads64: Vec<Workload> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| w.read && w.window == 64)
        .collect();
    if !full {
        p.push((cfg(XbladeXdpSkb, Null, false), reads64.clone()));
    }
    for imp in [XbladeXdpNative, XbladeXdpSkb] {
        p.push((cfg(imp, Reflect, false), reads64.clone()));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_matrix() {
        let p = plan(false);
        let cells: usize = p.iter().map(|(_, w)| w.len()).sum();
        // About 2 s a cell (with start-up): the whole run stays near two
        // minutes.
        assert!(cells <= 52, "{cells} cells: too slow for two minutes");
        for wl in WORKLOADS {
            for imp in [
                Impl::Vblade,
                Impl::XbladeAfpacket,
                Impl::XbladeXdpNative,
                Impl::XbladeXdpSkb,
            ] {
                assert!(
                    p.iter().any(|(c, w)| c.imp == imp
                        && c.backing == Backing::PageCache
                        && w.contains(&wl)),
                    "{} on {:?}",
                    wl.name,
                    imp
                );
            }
        }
        // Write rows both durable and --writeback for every xblade datapath.
        for imp in [
            Impl::XbladeAfpacket,
            Impl::XbladeXdpNative,
            Impl::XbladeXdpSkb,
        ] {
            assert!(p
                .iter()
                .any(|(c, w)| c.imp == imp && c.writeback && w.iter().all(|w| !w.read)));
        }
        assert!(p
            .iter()
            .any(|(c, _)| c.backing == Backing::Direct && c.imp == Impl::Vblade));
        assert!(p.iter().any(|(c, _)| c.backing == Backing::Null));
        assert!(plan(true).iter().map(|(_, w)| w.len()).sum::<usize>() > cells);
    }

    #[test]
    fn labels() {
        let c = TargetCfg {
            imp: Impl::XbladeAfpacket,
            backing: Backing::PageCache,
            writeback: true,
        };
        assert_eq!(c.label(true), "xblade afpacket --writeback");
        assert_eq!(c.label(false), "xblade afpacket");
    }
}
