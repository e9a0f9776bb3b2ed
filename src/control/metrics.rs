//! The Prometheus endpoint (`--metrics ADDR`): GET or HEAD `/metrics`
//! answers the text exposition format 0.0.4 of the workers' counters and
//! the exports' sizes; other paths 404, other methods 405, anything not
//! HTTP/1.x 400 (see [`super::http`]). Connections are served by
//! [`super::reactor`] on one thread, `xb-metrics`: idle or slow clients
//! cannot delay a scrape, and the thread sleeps while nobody asks.

use std::time::Duration;

use super::http;
use super::reactor::{Limits, Protocol, Verdict};
use super::{ExportStatus, Sources};
use crate::engine::DropReason;
use crate::stats::WorkerStats;

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
    /// The page: worker counters, then export gauges.
    fn page(&self) -> String {
        let mut body = prometheus_text(&self.src.workers());
        let st = self.src.status();
        body.push_str(&prometheus_exports(&st.exports));
        body.push_str(&prometheus_availability(&st));
        body
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

/// Fields of the XDP statistics that are levels, not counts.
const XDP_GAUGES: [&str; 1] = ["fill_depth"];

/// Prometheus text exposition of worker counters, labelled by interface and
/// queue; on the XDP datapath also every AF_XDP and XDP-program counter
/// (`xblade_xdp_*`) and an `xblade_xdp_info` gauge with the mode.
pub fn prometheus_text(workers: &[WorkerStats]) -> String {
    let mut o = String::new();
    let mut metric = |name: &str, help: &str, get: &dyn Fn(&WorkerStats) -> u64| {
        o.push_str(&format!(
            "# HELP xblade_{name} {help}\n# TYPE xblade_{name} counter\n"
        ));
        for w in workers {
            o.push_str(&format!(
                "xblade_{name}{{iface=\"{}\",queue=\"{}\"}} {}\n",
                w.iface,
                w.queue,
                get(w)
            ));
        }
    };
    metric("rx_frames_total", "Frames received.", &|w| w.rx_frames);
    metric("tx_frames_total", "Frames sent.", &|w| w.tx_frames);
    metric("tx_dropped_total", "Replies the kernel refused.", &|w| {
        w.tx_dropped
    });
    metric(
        "rx_kernel_dropped_total",
        "AF_PACKET: requests the kernel dropped, the socket's receive buffer being full.",
        &|w| w.rx_kernel_dropped,
    );
    metric("disk_errors_total", "Failed disk operations.", &|w| {
        w.disk_errors
    });
    metric("ata_read_total", "READ requests.", &|w| w.engine.ata_read);
    metric("ata_write_total", "WRITE requests.", &|w| {
        w.engine.ata_write
    });
    metric("ata_errors_total", "ATA replies with ERR status.", &|w| {
        w.engine.ata_errors
    });
    metric("aoe_errors_total", "Replies with an AoE error.", &|w| {
        w.engine.aoe_errors
    });
    metric("query_config_total", "Query Config requests.", &|w| {
        w.engine.query_config
    });
    o.push_str("# HELP xblade_dropped_total Frames dropped without reply, by reason.\n# TYPE xblade_dropped_total counter\n");
    for w in workers {
        for r in DropReason::ALL {
            o.push_str(&format!(
                "xblade_dropped_total{{iface=\"{}\",queue=\"{}\",reason=\"{}\"}} {}\n",
                w.iface,
                w.queue,
                r.name(),
                w.engine.drops_for(r)
            ));
        }
    }
    o.push_str("# HELP xblade_disk_in_flight Disk operations in flight.\n# TYPE xblade_disk_in_flight gauge\n");
    for w in workers {
        o.push_str(&format!(
            "xblade_disk_in_flight{{iface=\"{}\",queue=\"{}\"}} {}\n",
            w.iface, w.queue, w.disk_in_flight
        ));
    }
    // XDP: every numeric counter of XdpStats, by its field name.
    let xdp: Vec<(&WorkerStats, serde_json::Map<String, serde_json::Value>)> = workers
        .iter()
        .filter_map(|w| {
            let v = serde_json::to_value(w.xdp.as_ref()?).ok()?;
            Some((w, v.as_object()?.clone()))
        })
        .collect();
    if let Some((_, first)) = xdp.first() {
        o.push_str("# HELP xblade_xdp_info XDP attach mode and socket options of a queue (value 1).\n# TYPE xblade_xdp_info gauge\n");
        for (w, m) in &xdp {
            o.push_str(&format!(
                "xblade_xdp_info{{iface=\"{}\",queue=\"{}\",mode=\"{}\",zero_copy=\"{}\",busy_poll=\"{}\",huge_pages=\"{}\"}} 1\n",
                w.iface,
                w.queue,
                m.get("mode").and_then(|v| v.as_str()).unwrap_or("?"),
                m.get("zero_copy").and_then(|v| v.as_bool()).unwrap_or(false),
                m.get("busy_poll").and_then(|v| v.as_bool()).unwrap_or(false),
                m.get("huge_pages").and_then(|v| v.as_bool()).unwrap_or(false),
            ));
        }
        for (field, v) in first {
            if !v.is_u64() {
                continue;
            }
            // Gauges among the counters: no _total suffix.
            let (name, kind) = if XDP_GAUGES.contains(&field.as_str()) {
                (format!("xblade_xdp_{field}"), "gauge")
            } else {
                (format!("xblade_xdp_{field}_total"), "counter")
            };
            o.push_str(&format!(
                "# HELP {name} AF_XDP/XDP {kind} {field} (see xblade status --json).\n# TYPE {name} {kind}\n"
            ));
            for (w, m) in &xdp {
                o.push_str(&format!(
                    "{name}{{iface=\"{}\",queue=\"{}\"}} {}\n",
                    w.iface,
                    w.queue,
                    m.get(field).and_then(|v| v.as_u64()).unwrap_or(0)
                ));
            }
        }
    }
    o
}

/// Prometheus gauges of the exports: capacity and read-only flag.
pub fn prometheus_exports(exports: &[ExportStatus]) -> String {
    let mut o = String::from(
        "# HELP xblade_export_sectors Exported capacity in 512-byte sectors.\n# TYPE xblade_export_sectors gauge\n",
    );
    for e in exports {
        o.push_str(&format!(
            "xblade_export_sectors{{shelf=\"{}\",slot=\"{}\"}} {}\n",
            e.shelf, e.slot, e.sectors
        ));
    }
    o.push_str("# HELP xblade_export_read_only 1 when the export refuses writes.\n# TYPE xblade_export_read_only gauge\n");
    for e in exports {
        o.push_str(&format!(
            "xblade_export_read_only{{shelf=\"{}\",slot=\"{}\"}} {}\n",
            e.shelf,
            e.slot,
            u8::from(e.read_only)
        ));
    }
    let stores: Vec<_> = exports
        .iter()
        .filter_map(|e| Some((e, e.cluster_fsid.as_ref()?, e.store_in_flight?)))
        .collect();
    if !stores.is_empty() {
        o.push_str("# HELP xblade_export_store_in_flight Requests in flight in the store's client library (librbd), by cluster.\n# TYPE xblade_export_store_in_flight gauge\n");
        for (e, fsid, n) in stores {
            o.push_str(&format!(
                "xblade_export_store_in_flight{{shelf=\"{}\",slot=\"{}\",source=\"{}\",cluster_fsid=\"{}\"}} {n}\n",
                e.shelf,
                e.slot,
                label(&e.source),
                label(fsid)
            ));
        }
    }
    let leases: Vec<_> = exports
        .iter()
        .filter_map(|e| Some((e, e.lease.as_ref()?)))
        .collect();
    for (name, kind, help, get) in LEASE_METRICS {
        if leases.is_empty() {
            break;
        }
        o.push_str(&format!(
            "# HELP xblade_gateway_lease_{name} {help}\n# TYPE xblade_gateway_lease_{name} {kind}\n"
        ));
        for (e, l) in &leases {
            o.push_str(&format!(
                "xblade_gateway_lease_{name}{{shelf=\"{}\",slot=\"{}\"}} {}\n",
                e.shelf,
                e.slot,
                get(l)
            ));
        }
    }
    o
}

/// Gauges of what is configured but not served, and counters of
/// duplicates seen while serving (each family only when it has samples).
pub fn prometheus_availability(st: &super::status::Status) -> String {
    let mut o = String::new();
    if !st.not_serving.is_empty() {
        o.push_str("# HELP xblade_not_serving 1 for each export, interface or duplicate pair configured but not served (status says why).\n# TYPE xblade_not_serving gauge\n");
    }
    for n in &st.not_serving {
        o.push_str(&format!(
            "xblade_not_serving{{kind=\"{}\",name=\"{}\"}} 1\n",
            label(&n.kind),
            label(&n.name)
        ));
    }
    if !st.duplicates.is_empty() {
        o.push_str("# HELP xblade_duplicate_responses_total Query Config responses from another target for a shelf.slot served here.\n# TYPE xblade_duplicate_responses_total counter\n");
    }
    for d in &st.duplicates {
        o.push_str(&format!(
            "xblade_duplicate_responses_total{{iface=\"{}\",shelf=\"{}\",slot=\"{}\",mac=\"{}\"}} {}\n",
            label(&d.iface),
            d.shelf,
            d.slot,
            d.mac,
            d.count
        ));
    }
    o
}

/// The gateway lease's series (docs/fencing.md): name, type, help, value.
type LeaseMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::bdev::rbd::lease::LeaseStatus) -> i64,
);
const LEASE_METRICS: [LeaseMetric; 7] = [
    (
        "valid_ms",
        "gauge",
        "Milliseconds this gateway's lease still holds (negative: lapsed).",
        |l| l.valid_ms,
    ),
    (
        "admitting",
        "gauge",
        "1 while this gateway admits WRITEs.",
        |l| i64::from(l.admitting),
    ),
    ("renewals_total", "counter", "Heartbeats confirmed.", |l| {
        l.renewals as i64
    }),
    (
        "missed_total",
        "counter",
        "Heartbeats not sent or failed.",
        |l| l.missed as i64,
    ),
    (
        "fenced_peers_total",
        "counter",
        "Gateways this gateway blocklisted after their lease lapsed.",
        |l| l.fenced_peers as i64,
    ),
    (
        "stale_dropped_total",
        "counter",
        "WRITEs dropped without a reply for want of a lease.",
        |l| l.stale_dropped as i64,
    ),
    (
        "restarts_total",
        "counter",
        "Times this gateway was fenced and started again.",
        |l| l.restarts as i64,
    ),
];

/// A Prometheus label value, escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::XdpStats;

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
}
