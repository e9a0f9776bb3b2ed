//! What the operator asked for: exports, interfaces, datapath. Built from
//! the vblade-style command line or from a TOML file, validated as a whole
//! before anything starts, with errors that name the bad value.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bdev::{DiskSpec, Source};
use crate::net::xdp::bpf::XdpMode;
use crate::net::xdp::socket::ZeroCopy;
use crate::net::xdp::steer::Steer;
use crate::net::xdp::XdpOptions;
use crate::wire::{MacAddr, MAX_CONFIG_STRING};

/// Default advertised buffer count: what one AF_PACKET worker absorbs per
/// initiator without loss (the Linux initiator caps its window at 64).
pub const DEFAULT_BUFCNT: u16 = 64;

/// Default seconds between checks of the backing stores' sizes (online
/// resize).
pub const DEFAULT_SIZE_CHECK_SECS: u64 = 5;

/// Which datapath to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatapathKind {
    /// XDP when it attaches, else AF_PACKET (and say why).
    #[default]
    Auto,
    /// AF_PACKET sockets.
    Afpacket,
    /// AF_XDP sockets fed by an XDP program.
    Xdp,
}

/// One export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// Shelf.
    pub shelf: u16,
    /// Slot.
    pub slot: u8,
    /// Backing store.
    pub disk: DiskSpec,
    /// Interfaces it is served on (multipath when several).
    pub interfaces: Vec<String>,
    /// Advertised buffer count.
    pub bufcnt: u16,
    /// Initial Mac Mask list.
    pub mac_mask: Vec<MacAddr>,
    /// Initial config string.
    pub config_string: Vec<u8>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Exports.
    pub exports: Vec<ExportSpec>,
    /// Datapath.
    pub datapath: DatapathKind,
    /// Options of the XDP datapath (TOML `[xdp]`, command line flags).
    pub xdp: XdpOptions,
    /// Seconds between checks of the backing stores' sizes: an export whose
    /// store grew is resized and announced (0: only on `xblade resize` or
    /// SIGHUP).
    pub size_check_secs: u64,
    /// Refuse to start (or reload) unless every export opens on every
    /// interface, as before partial start: without it an export or
    /// interface that cannot open is set aside, retried, and the others
    /// serve (TOML `all_or_nothing`, `--all-or-nothing`).
    pub all_or_nothing: bool,
}

/// A configuration error; the message names the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or type error (message carries line and column).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What toml said, with line and column.
        message: String,
    },
    /// File unreadable.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A semantic error.
    #[error("{0}")]
    Invalid(String),
}

/// Check one export and the whole set. A configuration without exports is
/// valid: `xblade serve` then starts idle and serves what a reload adds.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    validate_indexed(cfg).map_err(|(_, m)| ConfigError::Invalid(m))
}

/// [`validate`], saying which export (index) is at fault, if one is.
fn validate_indexed(cfg: &Config) -> Result<(), (Option<usize>, String)> {
    let bad = |m: String| Err((None, m));
    if let Some(q) = cfg.xdp.queues {
        if !(1..=crate::net::xdp::bpf::MAX_QUEUES).contains(&q) {
            return bad(format!(
                "xdp queues {q}: use 1-{}",
                crate::net::xdp::bpf::MAX_QUEUES
            ));
        }
    }
    let mut seen: HashMap<(u16, u8), usize> = HashMap::new();
    for (i, e) in cfg.exports.iter().enumerate() {
        let name = format!("export {} ({}.{})", i + 1, e.shelf, e.slot);
        let bad = |m: String| Err((Some(i), m));
        if e.shelf == 0xffff {
            return bad(format!(
                "{name}: shelf 65535 is the broadcast shelf; use 0-65534"
            ));
        }
        if e.slot == 0xff {
            return bad(format!("{name}: slot 255 is the broadcast slot; use 0-254"));
        }
        if e.interfaces.is_empty() {
            return bad(format!("{name}: no interface given"));
        }
        if e.bufcnt < 2 {
            return bad(format!(
                "{name}: bufcnt {} is unusable (the Linux initiator needs at least 2)",
                e.bufcnt
            ));
        }
        if e.config_string.len() > MAX_CONFIG_STRING {
            return bad(format!(
                "{name}: config string of {} bytes is longer than 1024",
                e.config_string.len()
            ));
        }
        if e.mac_mask.len() > crate::engine::export::MAX_MASK_ENTRIES {
            return bad(format!(
                "{name}: {} Mac Mask entries, at most {}",
                e.mac_mask.len(),
                crate::engine::export::MAX_MASK_ENTRIES
            ));
        }
        if let Some(j) = seen.insert((e.shelf, e.slot), i) {
            return bad(format!(
                "duplicate shelf.slot {}.{} in exports {} and {}",
                e.shelf,
                e.slot,
                j + 1,
                i + 1
            ));
        }
        if let Source::File(p) = &e.disk.source {
            if p.as_os_str().is_empty() {
                return bad(format!("{name}: file = \"\": no backing store named"));
            }
        }
        if e.disk.length_sectors == Some(0) {
            return bad(format!(
                "{name}: length = 0: an export needs at least one sector (leave length out to export to the end)"
            ));
        }
        if let Some(m) = e
            .mac_mask
            .iter()
            .find(|m| m.is_multicast() || m.0 == [0; 6])
        {
            return bad(format!(
                "{name}: Mac Mask entry {m} is a {} address: no initiator sends from it",
                if m.0 == [0; 6] {
                    "zero"
                } else if m.is_broadcast() {
                    "broadcast"
                } else {
                    "multicast"
                }
            ));
        }
        let mut ifs = e.interfaces.clone();
        ifs.sort();
        ifs.dedup();
        if ifs.len() != e.interfaces.len() {
            return bad(format!("{name}: an interface is listed twice"));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    datapath: DatapathKind,
    /// Seconds between backing-store size checks (0: off).
    size_check_interval: Option<u64>,
    /// Default for every export.
    #[serde(default)]
    writeback: bool,
    /// Ceph client id of rbd: exports (default admin).
    rbd_id: Option<String>,
    /// Seconds a Ceph operation may take (rbd: exports; default 10).
    rbd_timeout: Option<u64>,
    #[serde(default, rename = "export")]
    exports: Vec<FileExport>,
    #[serde(default)]
    xdp: FileXdp,
    /// Refuse to start unless every export serves (default false).
    #[serde(default)]
    all_or_nothing: bool,

    #[serde(default)]
    service: ServiceSettings,
}

/// `[service]`: how `xblade serve` runs, for a packaged unit that should
/// not need its `ExecStart=` overridden. The command line wins over these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Prometheus endpoint, e.g. "127.0.0.1:9750" (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
    /// Pin worker i to core `cores[i]` (`--cores`).
    #[serde(default)]
    pub cores: Vec<usize>,
    /// Control socket path, or "none" (`--control-socket`).
    pub control_socket: Option<PathBuf>,
}

/// `[xdp]`: options of the XDP datapath.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileXdp {
    /// Queues per interface (default: the interface's rx queue count).
    queues: Option<u32>,
    /// auto | native | skb
    #[serde(default)]
    mode: XdpMode,
    /// auto | on | off
    #[serde(default)]
    zero_copy: ZeroCopy,
    /// auto | ntuple | external | none
    #[serde(default)]
    steer: Steer,
    #[serde(default)]
    busy_poll: bool,
    #[serde(default)]
    drop_foreign: bool,
    /// Microseconds of polling before a worker sleeps (default 50).
    spin_us: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileExport {
    shelf: u16,
    slot: u8,
    file: String,
    interfaces: Vec<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    offset: u64,
    length: Option<u64>,
    #[serde(default)]
    direct: bool,
    #[serde(default)]
    sync: bool,
    writeback: Option<bool>,
    bufcnt: Option<u16>,
    #[serde(default)]
    mac_mask: Vec<String>,
    #[serde(default)]
    config_string: String,
}

/// 1-based line of the `n`th (0-based) `[[export]]` header in `text`.
fn export_line(text: &str, n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            l.starts_with("[[export]]")
        })
        .nth(n)
        .map(|(k, _)| k + 1)
}

/// Parse a TOML configuration (see `xblade.example.toml`). Errors name the
/// file and line: toml's own, or the `[[export]]` table at fault.
#[cfg(test)]
pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
    from_toml_with_service(path, text).map(|(c, _)| c)
}

/// Parse a TOML configuration and its `[service]` table; errors name the
/// file and line.
pub fn from_toml_with_service(
    path: &Path,
    text: &str,
) -> Result<(Config, ServiceSettings), ConfigError> {
    let f: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    let at = |i: Option<usize>, message: String| match i.and_then(|i| export_line(text, i)) {
        Some(line) => ConfigError::Parse {
            path: path.into(),
            message: format!("line {line}: {message}"),
        },
        None => ConfigError::Parse {
            path: path.into(),
            message,
        },
    };
    let rbd = crate::bdev::rbd::RbdOptions {
        id: f.rbd_id.clone(),
        timeout: match f.rbd_timeout {
            None => crate::bdev::rbd::DEFAULT_TIMEOUT,
            Some(t @ 1..=3600) => std::time::Duration::from_secs(t),
            Some(t) => {
                return Err(at(
                    None,
                    format!("rbd_timeout = {t}: expected seconds from 1 to 3600"),
                ))
            }
        },
    };
    if let Some(id) = f
        .rbd_id
        .as_deref()
        .filter(|i| i.is_empty() || i.contains(['\0', ' ']))
    {
        return Err(at(
            None,
            format!("rbd_id = {id:?}: expected a Ceph client id such as admin"),
        ));
    }
    let mut exports = Vec::new();
    for (i, e) in f.exports.into_iter().enumerate() {
        let mut mask = Vec::new();
        for m in &e.mac_mask {
            mask.push(m.parse::<MacAddr>().map_err(|err| {
                at(
                    Some(i),
                    format!("export {} ({}.{}): {err}", i + 1, e.shelf, e.slot),
                )
            })?);
        }
        let source = Source::parse(&e.file).map_err(|err| {
            at(
                Some(i),
                format!("export {} ({}.{}): {err}", i + 1, e.shelf, e.slot),
            )
        })?;
        if let Source::File(p) = &source {
            if !p.as_os_str().is_empty() && p.is_relative() {
                // Relative to serve's working directory, which differs
                // between a shell and the service (/): ambiguous.
                return Err(at(
                    Some(i),
                    format!(
                        "export {} ({}.{}): file = {:?} is a relative path: give an absolute one",
                        i + 1,
                        e.shelf,
                        e.slot,
                        e.file
                    ),
                ));
            }
        }
        exports.push(ExportSpec {
            shelf: e.shelf,
            slot: e.slot,
            disk: DiskSpec {
                source,
                offset_sectors: e.offset,
                length_sectors: e.length,
                read_only: e.read_only,
                direct: e.direct,
                sync: e.sync,
                writeback: e.writeback.unwrap_or(f.writeback),
                rbd: rbd.clone(),
            },
            interfaces: e.interfaces,
            bufcnt: e.bufcnt.unwrap_or(DEFAULT_BUFCNT),
            mac_mask: mask,
            config_string: e.config_string.into_bytes(),
        });
    }
    let cfg = Config {
        exports,
        datapath: f.datapath,
        xdp: XdpOptions {
            queues: f.xdp.queues,
            mode: f.xdp.mode,
            zero_copy: f.xdp.zero_copy,
            steer: f.xdp.steer,
            busy_poll: f.xdp.busy_poll,
            drop_foreign: f.xdp.drop_foreign,
            spin_us: f.xdp.spin_us,
            // A measuring instrument: command line only.
            reflect: false,
        },
        size_check_secs: f.size_check_interval.unwrap_or(DEFAULT_SIZE_CHECK_SECS),
        all_or_nothing: f.all_or_nothing,
    };
    validate_indexed(&cfg).map_err(|(i, m)| at(i, m))?;
    if f.service.cores.len() > 1024 {
        return Err(at(None, "[service] cores: more than 1024 entries".into()));
    }
    Ok((cfg, f.service))
}

/// Read and parse a TOML file, with the `[service]` table.
pub fn load_with_service(path: &Path) -> Result<(Config, ServiceSettings), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    from_toml_with_service(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
datapath = "afpacket"
[[export]]
shelf = 1
slot = 1
file = "/var/tmp/a.img"
interfaces = ["eth1", "eth2"]
mac_mask = ["02:00:00:00:00:01"]
config_string = "hello"
[[export]]
shelf = 1
slot = 2
file = "null:1G"
interfaces = ["eth1"]
read_only = true
offset = 8
length = 16
writeback = true
"#;

    #[test]
    fn parses() {
        let c = from_toml(Path::new("x.toml"), GOOD).unwrap();
        assert_eq!(c.datapath, DatapathKind::Afpacket);
        assert_eq!(c.exports.len(), 2);
        assert_eq!(c.exports[0].interfaces, vec!["eth1", "eth2"]);
        assert_eq!(c.exports[0].bufcnt, DEFAULT_BUFCNT);
        assert!(!c.exports[0].disk.writeback);
        assert!(c.exports[1].disk.writeback);
        assert_eq!(c.exports[1].disk.source, Source::Null { bytes: 1 << 30 });
        assert_eq!(c.exports[1].disk.length_sectors, Some(16));
    }

    fn err(text: &str) -> String {
        from_toml(Path::new("x.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn xdp_table() {
        let c = from_toml(
            Path::new("x.toml"),
            &format!("{GOOD}\n[xdp]\nqueues = 2\nmode = \"skb\"\nzero_copy = \"off\"\nsteer = \"external\"\nbusy_poll = true\ndrop_foreign = true\nspin_us = 0\n"),
        )
        .unwrap();
        assert_eq!(
            c.xdp,
            XdpOptions {
                queues: Some(2),
                mode: XdpMode::Skb,
                zero_copy: ZeroCopy::Off,
                steer: Steer::External,
                busy_poll: true,
                drop_foreign: true,
                reflect: false,
                spin_us: Some(0),
            }
        );
        assert_eq!(
            from_toml(Path::new("x.toml"), GOOD).unwrap().xdp,
            XdpOptions::default()
        );
        let e = err(&format!("{GOOD}\n[xdp]\nmode = \"turbo\"\n"));
        assert!(e.contains("turbo"), "{e}");
        let e = err(&format!("{GOOD}\n[xdp]\nqueues = 0\n"));
        assert!(e.contains("queues 0"), "{e}");
    }

    #[test]
    fn rbd_options() {
        let c = from_toml(
            Path::new("x.toml"),
            &format!(
                "rbd_id = \"gw1\"\nrbd_timeout = 4\n{}",
                GOOD.replace("null:1G", "rbd:pool/ns/img")
            ),
        )
        .unwrap();
        let d = &c.exports[1].disk;
        assert_eq!(
            d.source,
            Source::Rbd {
                pool: "pool".into(),
                namespace: Some("ns".into()),
                image: "img".into()
            }
        );
        assert_eq!(d.rbd.client_id(), "gw1");
        assert_eq!(d.rbd.timeout, std::time::Duration::from_secs(4));
        let d = &from_toml(Path::new("x.toml"), GOOD).unwrap().exports[0].disk;
        assert_eq!(d.rbd.client_id(), "admin");
        assert_eq!(d.rbd.timeout, crate::bdev::rbd::DEFAULT_TIMEOUT);
        let e = err(&format!("rbd_timeout = 0\n{GOOD}"));
        assert!(e.contains("rbd_timeout = 0"), "{e}");
        let e = err(&format!("rbd_id = \"\"\n{GOOD}"));
        assert!(e.contains("rbd_id = \"\""), "{e}");
        let e = err(&GOOD.replace("null:1G", "rbd:pool"));
        assert!(e.contains("rbd:pool") && e.contains("line 10"), "{e}");
    }

    #[test]
    fn errors_name_the_value() {
        let dup = GOOD.replace("slot = 2", "slot = 1");
        assert!(
            err(&dup).contains("duplicate shelf.slot 1.1"),
            "{}",
            err(&dup)
        );
        let e = err(&GOOD.replace("slot = 2", "slot = 300"));
        assert!(e.contains("line") && e.contains("300"), "{e}");
        let e = err(&GOOD.replace("shelf = 1\nslot = 2", "shelf = 65535\nslot = 2"));
        assert!(e.contains("65535"), "{e}");
        let e = err(&GOOD.replace("02:00:00:00:00:01", "02:00:zz"));
        assert!(e.contains("02:00:zz"), "{e}");
        let e = err(&GOOD.replace("read_only", "readonly"));
        assert!(e.contains("readonly"), "{e}");
        // No export at all is valid: serve starts idle.
        assert!(from_toml(Path::new("x.toml"), "")
            .unwrap()
            .exports
            .is_empty());
        // Semantic errors name the line of the export's table.
        let e = err(&GOOD.replace("slot = 2", "slot = 1"));
        assert!(e.starts_with("x.toml: line 10: duplicate"), "{e}");
        let e = err(&GOOD.replace("interfaces = [\"eth1\"]", "interfaces = []"));
        assert!(e.contains("line 10: export 2 (1.2): no interface"), "{e}");
        let e = err(&GOOD.replace("02:00:00:00:00:01", "02:00:zz"));
        assert!(e.contains("line 3:"), "{e}");
        let e = err(&GOOD.replace("file = \"null:1G\"", "file = \"null:lots\""));
        assert!(e.contains("null:lots"), "{e}");
        let e = err(&GOOD.replace("/var/tmp/a.img", ""));
        assert!(e.contains("line 3:") && e.contains("file = \"\""), "{e}");
        let e = err(&GOOD.replace("/var/tmp/a.img", "a.img"));
        assert!(e.contains("\"a.img\" is a relative path"), "{e}");
        let e = err(&GOOD.replace("length = 16", "length = 0"));
        assert!(e.contains("length = 0"), "{e}");
        for (m, what) in [
            ("ff:ff:ff:ff:ff:ff", "broadcast"),
            ("00:00:00:00:00:00", "zero"),
            ("01:00:5e:00:00:01", "multicast"),
        ] {
            let e = err(&GOOD.replace("02:00:00:00:00:01", m));
            assert!(e.contains(m) && e.contains(what), "{e}");
        }
    }

    #[test]
    fn service_table() {
        let (_, s) = from_toml_with_service(
            Path::new("x.toml"),
            &format!("{GOOD}\n[service]\nmetrics = \"127.0.0.1:9750\"\ncores = [0, 1]\ncontrol_socket = \"/run/xblade/a.sock\"\n"),
        )
        .unwrap();
        assert_eq!(s.metrics, Some("127.0.0.1:9750".parse().unwrap()));
        assert_eq!(s.cores, vec![0, 1]);
        assert_eq!(s.control_socket, Some(PathBuf::from("/run/xblade/a.sock")));
        let e = err(&format!("{GOOD}\n[service]\nmetrics = \"localhost\"\n"));
        assert!(e.contains("metrics") || e.contains("localhost"), "{e}");
        let e = err(&format!("{GOOD}\n[service]\nmetric = \"127.0.0.1:1\"\n"));
        assert!(e.contains("metric"), "{e}");
    }
}
