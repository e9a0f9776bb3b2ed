//! Two network namespaces joined by veth pairs, and what is asked of the
//! links inside them.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{ip, ip_in, ns_command, run};
use crate::{Error, Result};

/// How long [`NsPair::create`] waits for the new links' carrier.
pub const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a named network namespace (`/run/netns/NAME`) exists.
pub fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// `ip -o link show dev IF` inside `ns`; None when there is no such
/// namespace or interface.
pub fn link_line(ns: &str, ifname: &str) -> Option<String> {
    if !netns_exists(ns) {
        return None;
    }
    ip_in(ns, &["-o", "link", "show", "dev", ifname]).ok()
}

/// Whether interface `ifname` in `ns` is administratively up and has
/// carrier (flags UP and LOWER_UP); false when it does not exist.
pub fn link_is_up(ns: &str, ifname: &str) -> bool {
    let Some(line) = link_line(ns, ifname) else {
        return false;
    };
    let flags = line
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(f, _)| f)
        .unwrap_or("");
    flags.split(',').any(|f| f == "UP") && flags.split(',').any(|f| f == "LOWER_UP")
}

/// `sysctl -w net.ipv6.conf.X.disable_ipv6=1` inside `ns` for each X, so
/// that no router or neighbour solicitation shows up among the frames a
/// test or a benchmark counts. A kernel without IPv6 needs nothing.
fn disable_ipv6(ns: &str, confs: &[&str]) -> Result<()> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    let mut cmd = ns_command(ns, "sysctl");
    cmd.args(["-q", "-w"]);
    cmd.args(
        confs
            .iter()
            .map(|c| format!("net.ipv6.conf.{c}.disable_ipv6=1")),
    );
    let what = format!("disabling IPv6 in netns {ns} (sysctl)");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Run {
            cmd: what.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Failed {
            cmd: what,
            status: out.status,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Two network namespaces, a target's and an initiator's, joined by one or
/// more veth pairs: each link's first end lives in the target namespace,
/// its second in the initiator namespace. `lo` is up in both, IPv6 is off
/// in both (before the links exist, so they are born without it), the
/// links are up, carry no address and have the MTU asked for.
///
/// Dropping it deletes both namespaces, and with them the links. The
/// names are the caller's and global to the machine: two live pairs must
/// not share one.
#[derive(Debug)]
pub struct NsPair {
    target_ns: String,
    initiator_ns: String,
    /// (target end, initiator end) per link.
    links: Vec<(String, String)>,
}

impl NsPair {
    /// Creates namespaces `target_ns` and `initiator_ns` joined by `links`
    /// ((target end, initiator end) names) with MTU `mtu`, first removing
    /// what an earlier run killed before its clean-up left with these
    /// names (namespaces, and links left in the root namespace), and
    /// waits up to [`LINK_UP_TIMEOUT`] for carrier. On error what was
    /// created is removed again.
    pub fn create(
        target_ns: &str,
        initiator_ns: &str,
        links: Vec<(String, String)>,
        mtu: u32,
    ) -> Result<NsPair> {
        let pair = NsPair {
            target_ns: target_ns.to_owned(),
            initiator_ns: initiator_ns.to_owned(),
            links,
        };
        // From here on, an error drops `pair`, which deletes what exists.
        pair.remove_leftovers();
        for ns in [&pair.target_ns, &pair.initiator_ns] {
            ip(&["netns", "add", ns])?;
            ip_in(ns, &["link", "set", "lo", "up"])?;
            disable_ipv6(ns, &["default", "all"])?;
        }
        let mtu = mtu.to_string();
        let (tns, ins) = (pair.target_ns.as_str(), pair.initiator_ns.as_str());
        for (t, i) in &pair.links {
            // Created directly inside the namespaces: never visible in the root one.
            #[rustfmt::skip]
            ip(&[
                "link", "add", "name", t, "netns", tns, "mtu", &mtu,
                "type", "veth", "peer", "name", i, "netns", ins, "mtu", &mtu,
            ])?;
            disable_ipv6(tns, &[t])?;
            disable_ipv6(ins, &[i])?;
            ip_in(tns, &["link", "set", t, "up"])?;
            ip_in(ins, &["link", "set", i, "up"])?;
        }
        pair.wait_up(LINK_UP_TIMEOUT)?;
        Ok(pair)
    }

    /// Deletes namespaces and root-namespace interfaces with our names.
    fn remove_leftovers(&self) {
        self.delete_namespaces(false);
        for name in self.links.iter().flat_map(|(t, i)| [t, i]) {
            if ip(&["link", "show", "dev", name]).is_ok() {
                let _ = ip(&["link", "del", "dev", name]);
            }
        }
    }

    /// `ip netns del` each namespace that exists; a failure is said on
    /// stderr when `report` (at drop: nothing else can be done about it,
    /// and the leak check of scripts/test.sh then names the namespace).
    fn delete_namespaces(&self, report: bool) {
        for ns in [&self.target_ns, &self.initiator_ns] {
            if !netns_exists(ns) {
                continue;
            }
            match run("ip", &["netns", "del", ns]) {
                Ok(out) if out.status.success() => {}
                Ok(out) if report => eprintln!(
                    "testbed: `ip netns del {ns}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) if report => eprintln!("testbed: {e}"),
                _ => {}
            }
        }
    }

    /// Waits until every link is up with carrier at both ends.
    pub fn wait_up(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let all_up = self
                .links
                .iter()
                .all(|(t, i)| link_is_up(&self.target_ns, t) && link_is_up(&self.initiator_ns, i));
            if all_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::LinksDown {
                    links: format!("{}<->{}", self.target_ns, self.initiator_ns),
                    timeout,
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Target namespace.
    pub fn target_ns(&self) -> &str {
        &self.target_ns
    }

    /// Initiator namespace.
    pub fn initiator_ns(&self) -> &str {
        &self.initiator_ns
    }

    /// The links, (target end, initiator end), in the order given.
    pub fn links(&self) -> &[(String, String)] {
        &self.links
    }

    /// Sets the MTU of both ends of every link.
    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        let m = mtu.to_string();
        for (t, i) in &self.links {
            ip_in(&self.target_ns, &["link", "set", "dev", t, "mtu", &m])?;
            ip_in(&self.initiator_ns, &["link", "set", "dev", i, "mtu", &m])?;
        }
        Ok(())
    }
}

impl Drop for NsPair {
    fn drop(&mut self) {
        self.delete_namespaces(true);
    }
}
