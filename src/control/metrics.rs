//! The Prometheus endpoint (`--metrics ADDR`): GET or HEAD `/metrics`
//! answers the text exposition format 0.0.4 of the workers' counters and
//! the exports' sizes; other paths 404, other methods 405, anything not
//! HTTP/1.x 400 (see [`super::http`]). Connections are served by
//! [`super::reactor`] on one thread, `xb-metrics`: idle or slow clients
//! cannot delay a scrape, and the thread sleeps while nobody asks.

use std::time::Duration;

use super::exposition::{Family, Num, Page};
use super::http;
use super::reactor::{Limits, Protocol, Verdict};
use super::{ExportStatus, Sources};
use crate::bdev::rbd::lease::LeaseStatus;
use crate::engine::DropReason;
use crate::stats::{WorkerStats, XdpStats};

/// Bounds of the endpoint. A scrape sends its ~200-byte request at once
/// and reads the answer at once; 3 s for the request and 10 s for the
/// answer (Prometheus's default scrape timeout) are generous for it and
/// short for anything holding a connection. 128 connections cost at most
/// 1 MiB of buffers.
pub(super) const LIMITS: Limits = Limits {
    max_conns: 128,
    max_request: http::MAX_HEAD,
    request_deadline: Duration::from_secs(3),
    response_deadline: Duration::from_secs(10),
};

/// The HTTP side of the endpoint, for [`super::reactor::run`].
pub(super) struct Endpoint {
    /// Where the counters are read.
    pub src: Sources,
}

impl Endpoint {
    /// The page: worker counters, then export gauges, then what is not
    /// served. The workers' counters are their published snapshots: a
    /// scrape takes no lock a worker waits on.
    fn page(&self) -> String {
        page_text(&self.src.workers(), &self.src.status())
    }
}

impl Protocol for Endpoint {
    type Stream = std::net::TcpStream;
    type Job = ();

    fn judge(&mut self, input: &[u8], eof: bool) -> Verdict<()> {
        let head = http::parse(input);
        match http::route(&head, || self.page()) {
            Some(r) => Verdict::Reply(r.to_bytes()),
            None if eof && !input.is_empty() => Verdict::Reply(
                http::Response::text(400, "Bad Request", "request head incomplete\n").to_bytes(),
            ),
            None => Verdict::More,
        }
    }

    fn too_large(&mut self) -> Vec<u8> {
        http::too_large().to_bytes()
    }

    fn handoff(&mut self, _stream: std::net::TcpStream, _job: ()) {}
}

/// The whole page.
fn page_text(workers: &[WorkerStats], st: &super::status::Status) -> String {
    let mut page = Page::new();
    worker_series(&mut page, workers);
    export_series(&mut page, &st.exports);
    availability_series(&mut page, st);
    page.into_string()
}

/// One part of the page on its own (for tests and tools).
fn one_part(write: impl FnOnce(&mut Page)) -> String {
    let mut page = Page::new();
    write(&mut page);
    page.into_string()
}

/// Labels of a worker's series.
const WORKER: [&str; 2] = ["iface", "queue"];
/// Labels of an export's series.
const EXPORT: [&str; 2] = ["shelf", "slot"];

/// A worker series: its family and where its value is read.
type WorkerSeries = (Family<2>, fn(&WorkerStats) -> u64);

/// The workers' own counters.
const WORKER_COUNTERS: [WorkerSeries; 10] = [
    (
        Family::counter("xblade_rx_frames_total", "Frames received.", WORKER),
        |w| w.rx_frames,
    ),
    (
        Family::counter("xblade_tx_frames_total", "Frames sent.", WORKER),
        |w| w.tx_frames,
    ),
    (
        Family::counter(
            "xblade_tx_dropped_total",
            "Replies the kernel refused.",
            WORKER,
        ),
        |w| w.tx_dropped,
    ),
    (
        Family::counter(
            "xblade_rx_kernel_dropped_total",
            "AF_PACKET: requests the kernel dropped, the socket's receive buffer being full.",
            WORKER,
        ),
        |w| w.rx_kernel_dropped,
    ),
    (
        Family::counter(
            "xblade_disk_errors_total",
            "Failed disk operations.",
            WORKER,
        ),
        |w| w.disk_errors,
    ),
    (
        Family::counter("xblade_ata_read_total", "READ requests.", WORKER),
        |w| w.engine.ata_read,
    ),
    (
        Family::counter("xblade_ata_write_total", "WRITE requests.", WORKER),
        |w| w.engine.ata_write,
    ),
    (
        Family::counter(
            "xblade_ata_errors_total",
            "ATA replies with ERR status.",
            WORKER,
        ),
        |w| w.engine.ata_errors,
    ),
    (
        Family::counter(
            "xblade_aoe_errors_total",
            "Replies with an AoE error.",
            WORKER,
        ),
        |w| w.engine.aoe_errors,
    ),
    (
        Family::counter(
            "xblade_query_config_total",
            "Query Config requests.",
            WORKER,
        ),
        |w| w.engine.query_config,
    ),
];

const DROPPED: Family<3> = Family::counter(
    "xblade_dropped_total",
    "Frames dropped without reply, by reason.",
    ["iface", "queue", "reason"],
);

const DISK_IN_FLIGHT: Family<2> = Family::gauge(
    "xblade_disk_in_flight",
    "Disk operations in flight.",
    WORKER,
);

const XDP_INFO: Family<6> = Family::gauge(
    "xblade_xdp_info",
    "XDP attach mode and socket options of a queue (value 1).",
    [
        "iface",
        "queue",
        "mode",
        "zero_copy",
        "busy_poll",
        "huge_pages",
    ],
);

/// An XDP series: its family and where its value is read.
type XdpSeries = (Family<2>, fn(&XdpStats) -> u64);

/// `xblade_xdp_FIELD_total` (counter) or `xblade_xdp_FIELD` (gauge) for
/// each numeric field of [`XdpStats`], named after the field; the test
/// `every_xdp_field_is_declared` fails when a field is added and not here.
macro_rules! xdp_series {
    ($($kind:ident $field:ident),* $(,)?) => {
        [$((
            xdp_series!(@ $kind $field),
            (|x: &XdpStats| x.$field) as fn(&XdpStats) -> u64,
        )),*]
    };
    (@ counter $field:ident) => {
        Family::counter(
            concat!("xblade_xdp_", stringify!($field), "_total"),
            concat!("AF_XDP/XDP counter ", stringify!($field), " (see xblade status --json)."),
            WORKER,
        )
    };
    (@ gauge $field:ident) => {
        Family::gauge(
            concat!("xblade_xdp_", stringify!($field)),
            concat!("AF_XDP/XDP gauge ", stringify!($field), " (see xblade status --json)."),
            WORKER,
        )
    };
}

const XDP_SERIES: [XdpSeries; 28] = xdp_series![
    counter rx_dropped,
    counter rx_invalid_descs,
    counter tx_invalid_descs,
    counter rx_ring_full,
    counter rx_fill_ring_empty,
    counter tx_ring_empty,
    counter bpf_redirected,
    counter bpf_passed_non_aoe,
    counter bpf_passed_foreign,
    counter bpf_dropped_foreign,
    counter bpf_no_socket,
    counter bpf_short,
    counter bpf_vlan,
    counter bpf_response,
    counter bpf_other_host,
    counter rx_oversize,
    counter rx_bad_desc,
    gauge fill_depth,
    counter fill_starved,
    counter backpressure,
    counter reply_no_chunk,
    counter zero_pool_replies,
    counter tx_kicks,
    counter wakeup_errors,
    counter rx_multi_buffer,
    counter idle_spin_ns,
    counter group_commits,
    counter group_commit_writes,
];

/// Prometheus text exposition of worker counters, labelled by interface and
/// queue; on the XDP datapath also every AF_XDP and XDP-program counter
/// (`xblade_xdp_*`) and an `xblade_xdp_info` gauge with the mode.
pub fn prometheus_text(workers: &[WorkerStats]) -> String {
    one_part(|p| worker_series(p, workers))
}

/// The workers' families, on `page`.
fn worker_series(page: &mut Page, workers: &[WorkerStats]) {
    for (family, get) in &WORKER_COUNTERS {
        let mut s = page.family(family);
        for w in workers {
            s.sample([&w.iface, &w.queue], get(w));
        }
    }
    let mut s = page.family(&DROPPED);
    for w in workers {
        for r in DropReason::ALL {
            s.sample([&w.iface, &w.queue, &r.name()], w.engine.drops_for(r));
        }
    }
    let mut s = page.family(&DISK_IN_FLIGHT);
    for w in workers {
        s.sample([&w.iface, &w.queue], w.disk_in_flight);
    }
    let xdp: Vec<(&WorkerStats, &XdpStats)> = workers
        .iter()
        .filter_map(|w| Some((w, w.xdp.as_ref()?)))
        .collect();
    let mut s = page.family(&XDP_INFO);
    for (w, x) in &xdp {
        s.sample(
            [
                &w.iface,
                &w.queue,
                &x.mode,
                &x.zero_copy,
                &x.busy_poll,
                &x.huge_pages,
            ],
            1u64,
        );
    }
    for (family, get) in &XDP_SERIES {
        let mut s = page.family(family);
        for (w, x) in &xdp {
            s.sample([&w.iface, &w.queue], get(x));
        }
    }
}

const EXPORT_SECTORS: Family<2> = Family::gauge(
    "xblade_export_sectors",
    "Exported capacity in 512-byte sectors.",
    EXPORT,
);

const EXPORT_READ_ONLY: Family<2> = Family::gauge(
    "xblade_export_read_only",
    "1 when the export refuses writes.",
    EXPORT,
);

const STORE_IN_FLIGHT: Family<4> = Family::gauge(
    "xblade_export_store_in_flight",
    "Requests in flight in the store's client library (librbd), by cluster.",
    ["shelf", "slot", "source", "cluster_fsid"],
);

/// Prometheus gauges of the exports: capacity and read-only flag.
pub fn prometheus_exports(exports: &[ExportStatus]) -> String {
    one_part(|p| export_series(p, exports))
}

/// The exports' families, on `page`.
fn export_series(page: &mut Page, exports: &[ExportStatus]) {
    let mut s = page.family(&EXPORT_SECTORS);
    for e in exports {
        s.sample([&e.shelf, &e.slot], e.sectors);
    }
    let mut s = page.family(&EXPORT_READ_ONLY);
    for e in exports {
        s.sample([&e.shelf, &e.slot], e.read_only);
    }
    let mut s = page.family(&STORE_IN_FLIGHT);
    for e in exports {
        if let (Some(fsid), Some(n)) = (&e.cluster_fsid, e.store_in_flight) {
            s.sample([&e.shelf, &e.slot, &e.source, fsid], n);
        }
    }
    for (family, get) in &LEASE_SERIES {
        let mut s = page.family(family);
        for e in exports {
            if let Some(l) = &e.lease {
                s.sample([&e.shelf, &e.slot], get(l));
            }
        }
    }
}

const NOT_SERVING: Family<2> = Family::gauge(
    "xblade_not_serving",
    "1 for each export, interface or duplicate pair configured but not served (status says why).",
    ["kind", "name"],
);

const DUPLICATE_RESPONSES: Family<4> = Family::counter(
    "xblade_duplicate_responses_total",
    "Query Config responses from another target for a shelf.slot served here.",
    ["iface", "shelf", "slot", "mac"],
);

/// Gauges of what is configured but not served, and counters of
/// duplicates seen while serving (each family only when it has samples).
pub fn prometheus_availability(st: &super::status::Status) -> String {
    one_part(|p| availability_series(p, st))
}

/// The availability families, on `page`.
fn availability_series(page: &mut Page, st: &super::status::Status) {
    let mut s = page.family(&NOT_SERVING);
    for n in &st.not_serving {
        s.sample([&n.kind, &n.name], 1u64);
    }
    let mut s = page.family(&DUPLICATE_RESPONSES);
    for d in &st.duplicates {
        s.sample([&d.iface, &d.shelf, &d.slot, &d.mac], d.count);
    }
}

/// A series of the gateway lease (docs/fencing.md).
type LeaseSeries = (Family<2>, fn(&LeaseStatus) -> Num);

const LEASE_SERIES: [LeaseSeries; 7] = [
    (
        Family::gauge(
            "xblade_gateway_lease_valid_ms",
            "Milliseconds this gateway's lease still holds (negative: lapsed).",
            EXPORT,
        ),
        |l| l.valid_ms.into(),
    ),
    (
        Family::gauge(
            "xblade_gateway_lease_admitting",
            "1 while this gateway admits WRITEs.",
            EXPORT,
        ),
        |l| l.admitting.into(),
    ),
    (
        Family::counter(
            "xblade_gateway_lease_renewals_total",
            "Heartbeats confirmed.",
            EXPORT,
        ),
        |l| l.renewals.into(),
    ),
    (
        Family::counter(
            "xblade_gateway_lease_missed_total",
            "Heartbeats not sent or failed.",
            EXPORT,
        ),
        |l| l.missed.into(),
    ),
    (
        Family::counter(
            "xblade_gateway_lease_fenced_peers_total",
            "Gateways this gateway blocklisted after their lease lapsed.",
            EXPORT,
        ),
        |l| l.fenced_peers.into(),
    ),
    (
        Family::counter(
            "xblade_gateway_lease_stale_dropped_total",
            "WRITEs dropped without a reply for want of a lease.",
            EXPORT,
        ),
        |l| l.stale_dropped.into(),
    ),
    (
        Family::counter(
            "xblade_gateway_lease_restarts_total",
            "Times this gateway was fenced and started again.",
            EXPORT,
        ),
        |l| l.restarts.into(),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_store_gauge_only_for_network_stores() {
        let e = |source: &str, fsid: Option<&str>| ExportStatus {
            shelf: 1,
            slot: 2,
            sectors: 8,
            read_only: false,
            config: String::new(),
            mac_mask: Vec::new(),
            reserve: Vec::new(),
            source: source.into(),
            interfaces: Vec::new(),
            offset: 0,
            fixed_length: false,
            direct: false,
            writeback: false,
            cluster_fsid: fsid.map(Into::into),
            store_in_flight: fsid.map(|_| 3),
            lease: fsid.map(|_| crate::bdev::rbd::lease::LeaseStatus {
                stale_dropped: 7,
                ..Default::default()
            }),
        };
        let t = prometheus_exports(&[e("/dev/x", None)]);
        assert!(!t.contains("store_in_flight"), "{t}");
        let t = prometheus_exports(&[e("rbd:p/i\"x", Some("f-1"))]);
        assert!(
            t.contains("xblade_export_store_in_flight{shelf=\"1\",slot=\"2\",source=\"rbd:p/i\\\"x\",cluster_fsid=\"f-1\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("xblade_gateway_lease_stale_dropped_total{shelf=\"1\",slot=\"2\"} 7"),
            "{t}"
        );
    }

    #[test]
    fn prometheus_has_labels() {
        let w = WorkerStats {
            iface: "eth1".into(),
            queue: 2,
            rx_frames: 5,
            ..Default::default()
        };
        let t = prometheus_text(&[w]);
        assert!(t.contains("xblade_rx_frames_total{iface=\"eth1\",queue=\"2\"} 5"));
        assert!(t.contains("reason=\"mask_denied\"} 0"));
        assert!(
            !t.contains("xblade_xdp_"),
            "no XDP section without XDP workers"
        );
    }

    #[test]
    fn prometheus_exports_xdp_counters() {
        let w = WorkerStats {
            iface: "eth1".into(),
            queue: 1,
            xdp: Some(XdpStats {
                mode: "native",
                zero_copy: true,
                rx_ring_full: 7,
                bpf_redirected: 42,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = prometheus_text(&[w]);
        assert!(
            t.contains("xblade_xdp_rx_ring_full_total{iface=\"eth1\",queue=\"1\"} 7"),
            "{t}"
        );
        assert!(t.contains("xblade_xdp_bpf_redirected_total{iface=\"eth1\",queue=\"1\"} 42"));
        assert!(t.contains(
            "xblade_xdp_info{iface=\"eth1\",queue=\"1\",mode=\"native\",zero_copy=\"true\",busy_poll=\"false\",huge_pages=\"false\"} 1"
        ));
        // Every line is a comment or `name{labels} value`.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').expect("value");
            assert!(v.parse::<u64>().is_ok(), "{l}");
        }
    }

    /// Every numeric field of [`XdpStats`] has its declared family, and
    /// every declared family reads a field: a field added to the struct
    /// without a declared type fails here instead of becoming a counter.
    #[test]
    fn every_xdp_field_is_declared() {
        let v = serde_json::to_value(XdpStats::default()).unwrap();
        let mut fields: Vec<&str> = v
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.is_u64())
            .map(|(k, _)| k.as_str())
            .collect();
        let mut declared: Vec<&str> = XDP_SERIES
            .iter()
            .map(|(f, _)| {
                let n = f.name().strip_prefix("xblade_xdp_").unwrap();
                n.strip_suffix("_total").unwrap_or(n)
            })
            .collect();
        fields.sort_unstable();
        declared.sort_unstable();
        assert_eq!(fields, declared);
        // And each reads its own field.
        let x = XdpStats {
            rx_ring_full: 3,
            fill_depth: 4,
            ..Default::default()
        };
        for (f, get) in &XDP_SERIES {
            let want = match f.name() {
                "xblade_xdp_rx_ring_full_total" => 3,
                "xblade_xdp_fill_depth" => 4,
                _ => 0,
            };
            assert_eq!(get(&x), want, "{}", f.name());
        }
    }

    /// The whole page with every family present: each sample belongs to
    /// the family declared just above it with `# HELP` and `# TYPE`, no
    /// family appears twice, counters and only counters end in `_total`.
    #[test]
    fn every_sample_has_its_declared_family() {
        let w = WorkerStats {
            iface: "eth1".into(),
            queue: 1,
            xdp: Some(XdpStats {
                mode: "native",
                ..Default::default()
            }),
            ..Default::default()
        };
        let st: super::super::status::Status = serde_json::from_value(serde_json::json!({
            "pid": 1, "datapath": "xdp", "workers": [],
            "exports": [{"shelf": 1, "slot": 2, "sectors": 8, "read_only": false,
                "config": "", "mac_mask": [], "reserve": [], "source": "rbd:p/i",
                "interfaces": [], "offset": 0, "fixed_length": false, "direct": false,
                "writeback": false, "cluster_fsid": "f", "store_in_flight": 1,
                "lease": {"addr": "a", "valid_ms": -5, "admitting": true, "renewals": 1,
                    "missed": 0, "fenced_peers": 0, "fence_failures": 0,
                    "stale_dropped": 0, "restarts": 0, "peers": []}}],
            "not_serving": [{"kind": "export", "name": "e1.2", "reason": "r",
                "since_secs": 1, "retry_in_secs": null, "attempts": 0}],
            "duplicates": [{"iface": "eth1", "shelf": 1, "slot": 2,
                "mac": "02:00:00:00:00:01", "count": 3, "last_secs_ago": 0}]
        }))
        .unwrap();
        let t = page_text(&[w.clone(), w], &st);
        let mut families: Vec<(&str, &str)> = Vec::new();
        let mut help: Option<&str> = None;
        for l in t.lines() {
            if let Some(r) = l.strip_prefix("# HELP ") {
                help = Some(r.split_once(' ').unwrap().0);
            } else if let Some(r) = l.strip_prefix("# TYPE ") {
                let (name, kind) = r.split_once(' ').unwrap();
                assert_eq!(help.take(), Some(name), "{l}");
                assert!(!families.iter().any(|(n, _)| *n == name), "{name} twice");
                assert_eq!(name.ends_with("_total"), kind == "counter", "{l}");
                families.push((name, kind));
            } else {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(families.last().map(|f| f.0), Some(name), "{l}");
                let (_, v) = l.rsplit_once(' ').unwrap();
                assert!(v.parse::<i64>().is_ok(), "{l}");
            }
        }
        // Every declared family is on this page.
        let all = WORKER_COUNTERS.len() + 3 + XDP_SERIES.len() + 3 + LEASE_SERIES.len() + 2;
        assert_eq!(families.len(), all, "{t}");
        assert!(t.contains("xblade_gateway_lease_valid_ms{shelf=\"1\",slot=\"2\"} -5"));
    }
}
