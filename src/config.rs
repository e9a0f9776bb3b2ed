//! What the operator asked for: exports, interfaces, datapath. Built from
//! the vblade-style command line or from a TOML file, validated as a whole
//! before anything starts, with errors that name the bad value.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

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
    /// TOML syntax or type error that toml could not place (its message
    /// carries what it knows).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What toml said.
        message: String,
    },
    /// An error at a place in the file: a syntax or type error (toml's
    /// message), or a bad value (ours), at the value's line and column.
    #[error("{path}: line {line}, column {column}: {message}")]
    At {
        /// File.
        path: PathBuf,
        /// 1-based line of the bad value (or of its `[[export]]` header).
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong, naming the value.
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

/// Where a fault of [`validate_placed`] lies, for a file's line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// `[xdp] queues`.
    XdpQueues,
    /// A key of the `n`th (0-based) export.
    Export(usize, Key),
}

/// A key of an `[[export]]` table; `Table` is its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Table,
    Shelf,
    Slot,
    File,
    Interfaces,
    Bufcnt,
    ConfigString,
    /// The `n`th entry of `mac_mask`.
    MacMask(usize),
    Length,
}

/// Check one export and the whole set. A configuration without exports is
/// valid: `xblade serve` then starts idle and serves what a reload adds.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    validate_placed(cfg).map_err(|(_, m)| ConfigError::Invalid(m))
}

/// [`validate`], saying where the fault lies.
fn validate_placed(cfg: &Config) -> Result<(), (Place, String)> {
    let bad = |m: String| Err((Place::XdpQueues, m));
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
        let bad = |k: Key, m: String| Err((Place::Export(i, k), m));
        if e.shelf == 0xffff {
            return bad(
                Key::Shelf,
                format!("{name}: shelf 65535 is the broadcast shelf; use 0-65534"),
            );
        }
        if e.slot == 0xff {
            return bad(
                Key::Slot,
                format!("{name}: slot 255 is the broadcast slot; use 0-254"),
            );
        }
        if e.interfaces.is_empty() {
            return bad(Key::Interfaces, format!("{name}: no interface given"));
        }
        if e.bufcnt < 2 {
            return bad(
                Key::Bufcnt,
                format!(
                    "{name}: bufcnt {} is unusable (the Linux initiator needs at least 2)",
                    e.bufcnt
                ),
            );
        }
        if e.config_string.len() > MAX_CONFIG_STRING {
            return bad(
                Key::ConfigString,
                format!(
                    "{name}: config string of {} bytes is longer than 1024",
                    e.config_string.len()
                ),
            );
        }
        if e.mac_mask.len() > crate::engine::export::MAX_MASK_ENTRIES {
            return bad(
                Key::MacMask(crate::engine::export::MAX_MASK_ENTRIES),
                format!(
                    "{name}: {} Mac Mask entries, at most {}",
                    e.mac_mask.len(),
                    crate::engine::export::MAX_MASK_ENTRIES
                ),
            );
        }
        if let Some(j) = seen.insert((e.shelf, e.slot), i) {
            return bad(
                Key::Table,
                format!(
                    "duplicate shelf.slot {}.{} in exports {} and {}",
                    e.shelf,
                    e.slot,
                    j + 1,
                    i + 1
                ),
            );
        }
        if let Source::File(p) = &e.disk.source {
            if p.as_os_str().is_empty() {
                return bad(
                    Key::File,
                    format!("{name}: file = \"\": no backing store named"),
                );
            }
        }
        if e.disk.length_sectors == Some(0) {
            return bad(Key::Length, format!(
                "{name}: length = 0: an export needs at least one sector (leave length out to export to the end)"
            ));
        }
        if let Some((k, m)) = e
            .mac_mask
            .iter()
            .enumerate()
            .find(|(_, m)| m.is_multicast() || m.0 == [0; 6])
        {
            return bad(
                Key::MacMask(k),
                format!(
                    "{name}: Mac Mask entry {m} is a {} address: no initiator sends from it",
                    if m.0 == [0; 6] {
                        "zero"
                    } else if m.is_broadcast() {
                        "broadcast"
                    } else {
                        "multicast"
                    }
                ),
            );
        }
        let mut ifs = e.interfaces.clone();
        ifs.sort();
        ifs.dedup();
        if ifs.len() != e.interfaces.len() {
            return bad(
                Key::Interfaces,
                format!("{name}: an interface is listed twice"),
            );
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
    rbd_id: Option<Spanned<String>>,
    /// Seconds a Ceph operation may take (rbd: exports; default 10).
    rbd_timeout: Option<Spanned<u64>>,
    #[serde(default, rename = "export")]
    exports: Vec<Spanned<FileExport>>,
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
    queues: Option<Spanned<u32>>,
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
    shelf: Spanned<u16>,
    slot: Spanned<u8>,
    file: Spanned<String>,
    interfaces: Spanned<Vec<String>>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    offset: u64,
    length: Option<Spanned<u64>>,
    #[serde(default)]
    direct: bool,
    #[serde(default)]
    sync: bool,
    writeback: Option<bool>,
    bufcnt: Option<Spanned<u16>>,
    #[serde(default)]
    mac_mask: Vec<Spanned<String>>,
    #[serde(default)]
    config_string: Option<Spanned<String>>,
}

impl FileExport {
    /// Where `key` is in the file: the value's span, else (a key left out)
    /// the table's.
    fn span(&self, table: &Range<usize>, key: Key) -> Range<usize> {
        let s = match key {
            Key::Table => None,
            Key::Shelf => Some(self.shelf.span()),
            Key::Slot => Some(self.slot.span()),
            Key::File => Some(self.file.span()),
            Key::Interfaces => Some(self.interfaces.span()),
            Key::Bufcnt => self.bufcnt.as_ref().map(Spanned::span),
            Key::ConfigString => self.config_string.as_ref().map(Spanned::span),
            Key::MacMask(j) => self.mac_mask.get(j).map(Spanned::span),
            Key::Length => self.length.as_ref().map(Spanned::span),
        };
        s.unwrap_or_else(|| table.clone())
    }
}

/// The line of `text` holding byte `at`, trimmed, at most 80 characters.
fn source_line(text: &str, at: usize) -> &str {
    let at = floor_char_boundary(text, at);
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[start..end].trim();
    match line.char_indices().nth(80) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

/// `at`, or the char boundary before it, within `text`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// 1-based line and column (in characters) of byte `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, at)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Parse a TOML configuration (see `xblade.example.toml`). Errors name the
/// file, and the line and column of the bad value (toml's spans).
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
    let at = |span: Option<Range<usize>>, message: String| match span {
        Some(s) => {
            let (line, column) = line_column(text, s.start);
            ConfigError::At {
                path: path.into(),
                line,
                column,
                message,
            }
        }
        None => ConfigError::Parse {
            path: path.into(),
            message,
        },
    };
    // toml's own errors, in the form of ours: the line as written (which
    // names the key and the value: toml's messages often name neither),
    // then what is wrong.
    let f: FileConfig = toml::from_str(text).map_err(|e| match e.span() {
        Some(s) => {
            let message = e.message().trim_end().replace('\n', "; ");
            let message = match source_line(text, s.start) {
                "" => message,
                line => format!("{line}: {message}"),
            };
            at(Some(s), message)
        }
        None => at(None, e.to_string().trim_end().to_string()),
    })?;
    let rbd = crate::bdev::rbd::RbdOptions {
        id: f.rbd_id.as_ref().map(|i| i.get_ref().clone()),
        timeout: match &f.rbd_timeout {
            None => crate::bdev::rbd::DEFAULT_TIMEOUT,
            Some(t) if (1..=3600).contains(t.get_ref()) => {
                std::time::Duration::from_secs(*t.get_ref())
            }
            Some(t) => {
                return Err(at(
                    Some(t.span()),
                    format!(
                        "rbd_timeout = {}: expected seconds from 1 to 3600",
                        t.get_ref()
                    ),
                ))
            }
        },
    };
    if let Some(id) = f
        .rbd_id
        .as_ref()
        .filter(|i| i.get_ref().is_empty() || i.get_ref().contains(['\0', ' ']))
    {
        return Err(at(
            Some(id.span()),
            format!(
                "rbd_id = {:?}: expected a Ceph client id such as admin",
                id.get_ref()
            ),
        ));
    }
    let mut exports = Vec::new();
    for (i, t) in f.exports.iter().enumerate() {
        let e = t.get_ref();
        let (shelf, slot) = (*e.shelf.get_ref(), *e.slot.get_ref());
        let here = |key: Key, m: String| {
            at(
                Some(e.span(&t.span(), key)),
                format!("export {} ({shelf}.{slot}): {m}", i + 1),
            )
        };
        let mut mask = Vec::new();
        for (j, m) in e.mac_mask.iter().enumerate() {
            mask.push(
                m.get_ref()
                    .parse::<MacAddr>()
                    .map_err(|err| here(Key::MacMask(j), err.to_string()))?,
            );
        }
        let file = e.file.get_ref();
        let source = Source::parse(file).map_err(|err| here(Key::File, err.to_string()))?;
        if let Source::File(p) = &source {
            if !p.as_os_str().is_empty() && p.is_relative() {
                // Relative to serve's working directory, which differs
                // between a shell and the service (/): ambiguous.
                return Err(here(
                    Key::File,
                    format!("file = {file:?} is a relative path: give an absolute one"),
                ));
            }
        }
        exports.push(ExportSpec {
            shelf,
            slot,
            disk: DiskSpec {
                source,
                offset_sectors: e.offset,
                length_sectors: e.length.as_ref().map(|l| *l.get_ref()),
                read_only: e.read_only,
                direct: e.direct,
                sync: e.sync,
                writeback: e.writeback.unwrap_or(f.writeback),
                rbd: rbd.clone(),
            },
            interfaces: e.interfaces.get_ref().clone(),
            bufcnt: e.bufcnt.as_ref().map_or(DEFAULT_BUFCNT, |b| *b.get_ref()),
            mac_mask: mask,
            config_string: e
                .config_string
                .as_ref()
                .map(|c| c.get_ref().as_bytes().to_vec())
                .unwrap_or_default(),
        });
    }
    let cfg = Config {
        exports,
        datapath: f.datapath,
        xdp: XdpOptions {
            queues: f.xdp.queues.as_ref().map(|q| *q.get_ref()),
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
    validate_placed(&cfg).map_err(|(place, m)| {
        let span = match place {
            Place::XdpQueues => f.xdp.queues.as_ref().map(Spanned::span),
            Place::Export(i, key) => f.exports.get(i).map(|t| t.get_ref().span(&t.span(), key)),
        };
        at(span, m)
    })?;
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
        assert!(
            e.contains("rbd:pool") && e.contains("line 13, column 8:"),
            "{e}"
        );
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
        // Semantic errors name the line and column of the bad value (a
        // duplicate: the later export's table).
        let e = err(&GOOD.replace("slot = 2", "slot = 1"));
        assert!(e.starts_with("x.toml: line 10, column 1: duplicate"), "{e}");
        let e = err(&GOOD.replace("interfaces = [\"eth1\"]", "interfaces = []"));
        assert!(
            e.contains("line 14, column 14: export 2 (1.2): no interface"),
            "{e}"
        );
        let e = err(&GOOD.replace("02:00:00:00:00:01", "02:00:zz"));
        assert!(e.contains("line 8, column 13: export 1 (1.1): "), "{e}");
        let e = err(&GOOD.replace("file = \"null:1G\"", "file = \"null:lots\""));
        assert!(e.contains("null:lots"), "{e}");
        let e = err(&GOOD.replace("/var/tmp/a.img", ""));
        assert!(
            e.contains("line 6, column 8:") && e.contains("file = \"\""),
            "{e}"
        );
        let e = err(&GOOD.replace("/var/tmp/a.img", "a.img"));
        assert!(e.contains("\"a.img\" is a relative path"), "{e}");
        let e = err(&GOOD.replace("length = 16", "length = 0"));
        assert!(
            e.contains("line 17, column 10: export 2 (1.2): length = 0"),
            "{e}"
        );
        // toml's own errors, in the same form.
        let e = err(&GOOD.replace("slot = 2", "slot = 300"));
        assert!(
            e.starts_with("x.toml: line 12, column 8: slot = 300: "),
            "{e}"
        );
        let e = err(&GOOD.replace("slot = 2", "slot = = 2"));
        assert!(e.starts_with("x.toml: line 12, column "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        for (m, what) in [
            ("ff:ff:ff:ff:ff:ff", "broadcast"),
            ("00:00:00:00:00:00", "zero"),
            ("01:00:5e:00:00:01", "multicast"),
        ] {
            let e = err(&GOOD.replace("02:00:00:00:00:01", m));
            assert!(e.contains(m) && e.contains(what), "{e}");
        }
    }

    /// The example of issue 25: `length = 0` in the third `[[export]]`
    /// names its line and column; a key left out names the table.
    #[test]
    fn errors_name_line_and_column() {
        let third = format!(
            "{GOOD}[[export]]\nshelf = 1\nslot = 3\nfile = \"null:1M\"\ninterfaces = [\"eth1\"]\n  length =  0\n"
        );
        let e = err(&third);
        assert_eq!(
            e,
            "x.toml: line 24, column 13: export 3 (1.3): length = 0: an export needs at least one sector (leave length out to export to the end)"
        );
        let e = err(&third.replace("  length =  0\n", "bufcnt = 1\n"));
        assert!(
            e.starts_with("x.toml: line 24, column 10: export 3 (1.3): bufcnt 1"),
            "{e}"
        );
        let e = err(&format!("{GOOD}\n[xdp]\nqueues = 0\n"));
        assert!(
            e.starts_with("x.toml: line 21, column 10: xdp queues 0"),
            "{e}"
        );
        assert_eq!(line_column("a\né = 1\n", 5), (2, 3));
        assert_eq!(line_column("ab", 99), (1, 3));
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
