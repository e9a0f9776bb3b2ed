//! `xblade status` and `xblade stats` for people: the [`Status`] as text.

use super::Status;

fn sectors_human(sectors: u64) -> String {
    let b = sectors as f64 * 512.0;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

fn uptime_human(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Per-worker counters for people: one line per worker. With `rates`
/// (seconds since `prev` was taken), frames and requests per second too.
pub fn render(st: &Status) -> String {
    render_counters(st, None)
}

/// [`render`] with per-second rates against an earlier status.
pub fn render_counters(st: &Status, prev: Option<(&Status, f64)>) -> String {
    let mut o = format!("xblade pid {} datapath {}\n", st.pid, st.datapath);
    for e in &st.exports {
        o.push_str(&format!(
            "  e{}.{}  {} sectors ({}){}{}{}\n",
            e.shelf,
            e.slot,
            e.sectors,
            sectors_human(e.sectors),
            if e.read_only { "  read-only" } else { "" },
            if e.mac_mask.is_empty() {
                String::new()
            } else {
                format!("  mask {}", e.mac_mask.join(","))
            },
            if e.reserve.is_empty() {
                String::new()
            } else {
                format!("  reserved to {}", e.reserve.join(","))
            },
        ));
    }
    o.push_str(&format!(
        "  {:<12} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "iface", "queue", "rx", "tx", "reads", "writes", "errors", "drops", "inflight"
    ));
    if prev.is_some() {
        o.push_str(&format!(
            " {:>9} {:>9} {:>9}",
            "rx/s", "reads/s", "writes/s"
        ));
    }
    o.push('\n');
    let g = |w: &serde_json::Value, k: &str| w.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let e =
        |w: &serde_json::Value, k: &str| w["engine"].get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    for w in &st.workers {
        let drops: u64 = w["engine"]["drops"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        o.push_str(&format!(
            "  {:<12} {:>5} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8} {:>8}",
            w["iface"].as_str().unwrap_or("?"),
            g(w, "queue"),
            g(w, "rx_frames"),
            g(w, "tx_frames"),
            e(w, "ata_read"),
            e(w, "ata_write"),
            e(w, "ata_errors") + e(w, "aoe_errors") + g(w, "disk_errors"),
            drops,
            g(w, "disk_in_flight"),
        ));
        if let Some((p, secs)) = prev {
            let same = p
                .workers
                .iter()
                .find(|x| x["iface"] == w["iface"] && x["queue"] == w["queue"]);
            let rate = |now: u64, get: &dyn Fn(&serde_json::Value) -> u64| {
                let before = same.map_or(now, get);
                now.saturating_sub(before) as f64 / secs.max(1e-3)
            };
            o.push_str(&format!(
                " {:>9.0} {:>9.0} {:>9.0}",
                rate(g(w, "rx_frames"), &|x| g(x, "rx_frames")),
                rate(e(w, "ata_read"), &|x| e(x, "ata_read")),
                rate(e(w, "ata_write"), &|x| e(x, "ata_write")),
            ));
        }
        o.push('\n');
    }
    o
}

/// The whole status for people: process, exports, interfaces, workers.
pub fn render_status(st: &Status) -> String {
    let mut o = format!(
        "xblade {} pid {}, up {}, datapath {}\n",
        st.version,
        st.pid,
        uptime_human(st.uptime_secs),
        st.datapath
    );
    match &st.config {
        Some(c) => o.push_str(&format!("config {c} (reloaded {} times)\n", st.reloads)),
        None => o.push_str("config: command line (vblade form)\n"),
    }
    for p in &st.pending_restart {
        o.push_str(&format!(
            "  pending restart (the file differs from what runs): {p}\n"
        ));
    }
    o.push_str(&format!("exports: {}\n", st.exports.len()));
    if st.exports.is_empty() {
        o.push_str("  (none configured: add [[export]] tables and run xblade reload)\n");
    }
    for e in &st.exports {
        export_lines(&mut o, e);
    }
    o.push_str(&format!("interfaces: {}\n", st.interfaces.len()));
    for i in &st.interfaces {
        o.push_str(&format!(
            "  {:<12} {:<8} {:<6} mtu {:<5} queues {:<3} exports {}\n",
            i.name,
            i.datapath,
            i.xdp_mode.as_deref().unwrap_or("-"),
            i.mtu,
            i.queues,
            i.exports.join(","),
        ));
        if !i.choice.is_empty() {
            o.push_str(&format!("               {}\n", i.choice));
        }
    }
    if !st.not_serving.is_empty() {
        o.push_str(&format!("not serving: {}\n", st.not_serving.len()));
        for n in &st.not_serving {
            let when = match n.retry_in_secs {
                Some(s) => format!("retry in {s}s"),
                None => "retried on reload".into(),
            };
            o.push_str(&format!(
                "  {:<8} {}: {} ({when})\n",
                n.kind, n.name, n.reason
            ));
        }
    }
    for d in &st.duplicates {
        o.push_str(&format!(
            "  DUPLICATE e{}.{} on {}: {} response(s) from {} (last {}s ago)\n",
            d.shelf, d.slot, d.iface, d.count, d.mac, d.last_secs_ago
        ));
    }
    worker_lines(&mut o, &st.workers);
    o
}

/// An export's lines of `xblade status`.
fn export_lines(o: &mut String, e: &super::status::ExportStatus) {
    let mut flags = vec![if e.read_only { "ro" } else { "rw" }.to_string()];
    if e.direct {
        flags.push("direct".into());
    }
    if e.writeback {
        flags.push("writeback".into());
    }
    if e.fixed_length {
        flags.push("fixed-length".into());
    }
    o.push_str(&format!(
        "  e{}.{:<4} {:>12} sectors ({:>9})  {}  {}{}  on {}\n",
        e.shelf,
        e.slot,
        e.sectors,
        sectors_human(e.sectors),
        flags.join(","),
        e.source,
        if e.offset > 0 {
            format!(" @{}", e.offset)
        } else {
            String::new()
        },
        if e.interfaces.is_empty() {
            "no interface yet (see not serving)".to_string()
        } else {
            e.interfaces.join(",")
        },
    ));
    if let Some(fsid) = &e.cluster_fsid {
        o.push_str(&format!(
            "           ceph cluster {fsid}, librbd requests in flight {}\n",
            e.store_in_flight.unwrap_or(0)
        ));
    }
    if let Some(l) = &e.lease {
        o.push_str(&format!(
            "           gateway lease {} ({}, {} ms left), {} renewals, {} missed, fenced {} peers, {} writes dropped stale, {} restarts after being fenced, {} peers seen\n",
            l.addr,
            if l.admitting { "admitting writes" } else { "NOT admitting writes" },
            l.valid_ms,
            l.renewals,
            l.missed,
            l.fenced_peers,
            l.stale_dropped,
            l.restarts,
            l.peers.len()
        ));
    }
    if !e.mac_mask.is_empty() {
        o.push_str(&format!("           mask {}\n", e.mac_mask.join(",")));
    }
    if !e.reserve.is_empty() {
        o.push_str(&format!("           reserved to {}\n", e.reserve.join(",")));
    }
    if !e.config.is_empty() {
        o.push_str(&format!("           config string {:?}\n", e.config));
    }
}

/// The workers' table of `xblade status`.
fn worker_lines(o: &mut String, workers: &[serde_json::Value]) {
    o.push_str(&format!("workers: {}\n", workers.len()));
    if !workers.is_empty() {
        o.push_str(&format!(
            "  {:<14} {:<8} {:>4} {:<10} {:>10} {:>10} {:>10} {:>7} {:>8}  {:<17} {}\n",
            "worker",
            "datapath",
            "core",
            "xdp",
            "rx",
            "reads",
            "writes",
            "errors",
            "inflight",
            "mac",
            "steer"
        ));
    }
    for w in workers {
        let g = |k: &str| w.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let e = |k: &str| w["engine"].get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let xdp = match w.get("xdp") {
            Some(x) if x.is_object() => format!(
                "{}{}",
                x["mode"].as_str().unwrap_or("?"),
                if x["zero_copy"].as_bool() == Some(true) {
                    ",zc"
                } else {
                    ",copy"
                }
            ),
            _ => "-".into(),
        };
        o.push_str(&format!(
            "  {:<14} {:<8} {:>4} {:<10} {:>10} {:>10} {:>10} {:>7} {:>8}  {:<17} {}\n",
            w["name"].as_str().or(w["iface"].as_str()).unwrap_or("?"),
            w["datapath"].as_str().unwrap_or("?"),
            w["core"].as_u64().map_or("-".into(), |c| c.to_string()),
            xdp,
            g("rx_frames"),
            e("ata_read"),
            e("ata_write"),
            e("ata_errors") + e("aoe_errors") + g("disk_errors"),
            g("disk_in_flight"),
            w["mac"].as_str().unwrap_or("-"),
            w["xdp"]["steer"].as_str().unwrap_or("-"),
        ));
    }
}
