//! `xblade check-config`: everything `xblade serve` does before serving,
//! without serving, so that a configuration is judged before a restart (and
//! by the unit's `ExecStartPre=`) rather than by an outage.
//!
//! It parses and validates the file as `serve` does, then for each export
//! opens its backing store read-only (an `rbd:` image through the cluster,
//! as `serve` would) and checks offset and length against the store's size,
//! looks up its interfaces, and looks across exports for one backing store
//! exported twice over overlapping ranges with a writer. Nothing is written
//! and no frame is sent.
//!
//! Exit codes (documented in `--help` and the README):
//! - 0: `serve` would serve every export (warnings may have been printed);
//! - 1: the file is refused as a whole (unreadable, syntax, a bad value):
//!   `serve` would not start, and a reload would change nothing;
//! - 2: the command line is wrong;
//! - 3: the file is valid but an export cannot be served now (its store is
//!   missing or too small for its offset and length, or, with
//!   `--strict-interfaces`, an interface is missing). With `--partial-ok`
//!   these are warnings (for a `serve` that starts the exports it can).
#![forbid(unsafe_code)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::bdev::{self, DiskSpec, Source};
use crate::config::{self, Config, ExportSpec};
use crate::net::iface::IfaceInfo;
use crate::wire::SECTOR_SIZE;

/// The file is refused as a whole.
pub const EXIT_INVALID: i32 = 1;
/// An export cannot be served now.
pub const EXIT_NOT_READY: i32 = 3;

/// How strict the check is.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// A missing interface is an error (default: a warning, since a VLAN or
    /// bond may be created after xblade starts).
    pub strict_interfaces: bool,
    /// Exports that cannot be served now are warnings, not errors.
    pub partial_ok: bool,
}

/// What the check found, for printing.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per export, as it would be served.
    pub exports: Vec<String>,
    /// Problems that do not stop serving.
    pub warnings: Vec<String>,
    /// Problems that stop an export.
    pub errors: Vec<String>,
}

impl Report {
    /// The exit code this report deserves (0 or [`EXIT_NOT_READY`]).
    pub fn exit_code(&self) -> i32 {
        if self.errors.is_empty() {
            0
        } else {
            EXIT_NOT_READY
        }
    }
}

/// Parse, validate and check the file at `path`. `Err` is a configuration
/// refused as a whole ([`EXIT_INVALID`]).
pub fn check_file(path: &Path, opts: CheckOptions) -> Result<Report, config::ConfigError> {
    let (cfg, _service) = config::load_with_service(path)?;
    Ok(check(&cfg, opts))
}

/// The checks past parsing, on a valid configuration.
pub fn check(cfg: &Config, opts: CheckOptions) -> Report {
    let mut r = Report::default();
    // (device, inode) of each opened file, with the export's byte range.
    let mut files: Vec<(u64, u64, u64, u64, bool, String)> = Vec::new();
    for (i, e) in cfg.exports.iter().enumerate() {
        let name = format!("export {} ({}.{})", i + 1, e.shelf, e.slot);
        r.exports.push(describe(e));
        let not_ready = |r: &mut Report, m: String| {
            if opts.partial_ok {
                r.warnings
                    .push(format!("{m} (not served until it is fixed)"));
            } else {
                r.errors.push(m);
            }
        };
        match open_read_only(&e.disk) {
            Ok(sectors) => {
                if let Err(m) = writable(&e.disk) {
                    not_ready(&mut r, format!("{name}: {m}"));
                }
                if let Some(id) = file_id(&e.disk.source) {
                    let start = e.disk.offset_sectors * SECTOR_SIZE as u64;
                    let end = start + sectors * SECTOR_SIZE as u64;
                    files.push((id.0, id.1, start, end, !e.disk.read_only, name.clone()));
                }
            }
            Err(err) => not_ready(&mut r, format!("{name}: {}", chain(&err))),
        }
        for ifname in &e.interfaces {
            if let Err(err) = IfaceInfo::lookup(ifname) {
                let m = format!("{name}: {err}");
                if opts.strict_interfaces {
                    not_ready(&mut r, m);
                } else {
                    r.warnings.push(format!(
                        "{m}: served once it appears if it is created later (a VLAN, a bond); --strict-interfaces makes this an error"
                    ));
                }
            }
        }
    }
    for (a, x) in files.iter().enumerate() {
        for y in &files[a + 1..] {
            let same = x.0 == y.0 && x.1 == y.1;
            let overlap = x.2 < y.3 && y.2 < x.3;
            if same && overlap && (x.4 || y.4) {
                r.errors.push(format!(
                    "{} and {} export overlapping ranges of the same backing store, one of them writable: an initiator writing through one corrupts what the other serves",
                    x.5, y.5
                ));
            }
        }
    }
    r
}

/// One export as the operator wrote it.
fn describe(e: &ExportSpec) -> String {
    let mut flags = Vec::new();
    if e.disk.read_only {
        flags.push("read-only");
    }
    if e.disk.direct {
        flags.push("direct");
    }
    if e.disk.writeback {
        flags.push("writeback (acknowledged writes can be lost on a crash)");
    }
    let range = match (e.disk.offset_sectors, e.disk.length_sectors) {
        (0, None) => String::new(),
        (o, None) => format!(" from sector {o}"),
        (o, Some(l)) => format!(" sectors {o}+{l}"),
    };
    format!(
        "{}.{}: {}{} on {}{}",
        e.shelf,
        e.slot,
        e.disk.source,
        range,
        e.interfaces.join(","),
        if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(", "))
        }
    )
}

/// Open the store as `serve` would, but read-only: its exported sectors.
fn open_read_only(spec: &DiskSpec) -> Result<u64, bdev::DiskError> {
    let mut ro = spec.clone();
    ro.read_only = true;
    // O_DIRECT and O_SYNC change nothing about sizes; some filesystems
    // refuse O_DIRECT, which serve would then report itself.
    ro.direct = false;
    ro.sync = false;
    bdev::open(&ro).map(|d| d.sectors())
}

/// A writable export's regular file can be opened for writing, as `serve`
/// will (no data is written; no file is created or truncated). Why: under the
/// packaged unit's `ProtectSystem=strict`, a file outside `ReadWritePaths=`
/// opens read-only only, and this is the place to say so.
fn writable(spec: &DiskSpec) -> Result<(), String> {
    let Source::File(p) = &spec.source else {
        return Ok(());
    };
    // Regular files only: closing a block device opened for writing makes
    // udev probe it again, a side effect a check must not have (and /dev
    // stays writable under ProtectSystem=strict).
    if spec.read_only || !std::fs::metadata(p).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    match std::fs::OpenOptions::new().write(true).open(p) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => Err(format!(
            "{} cannot be opened for writing: {e} (under the packaged unit: a path outside ReadWritePaths=, see systemctl edit xblade; or export it read_only)",
            p.display()
        )),
        Err(e) => Err(format!(
            "{} cannot be opened for writing: {e} (or export it read_only)",
            p.display()
        )),
    }
}

/// (device, inode) of a file store, to find one store exported twice.
fn file_id(source: &Source) -> Option<(u64, u64)> {
    let Source::File(p) = source else {
        return None;
    };
    let m = std::fs::metadata(p).ok()?;
    if m.file_type().is_block_device() {
        Some((m.rdev(), 0))
    } else {
        Some((m.dev(), m.ino()))
    }
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        config::from_toml(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn stores_are_opened_and_sized() {
        let dir = std::env::temp_dir().join(format!("xblade-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("d.img");
        std::fs::write(&f, vec![0u8; 64 * 512]).unwrap();
        let one = |extra: &str| {
            format!(
                "[[export]]\nshelf = 1\nslot = 1\nfile = \"{}\"\ninterfaces = [\"lo\"]\n{extra}\n",
                f.display()
            )
        };
        let r = check(&cfg(&one("")), CheckOptions::default());
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(r.exit_code(), 0);
        let r = check(&cfg(&one("offset = 999999999")), CheckOptions::default());
        assert!(r.errors[0].contains("offset 999999999"), "{r:?}");
        assert_eq!(r.exit_code(), EXIT_NOT_READY);
        let r = check(&cfg(&one("length = 65")), CheckOptions::default());
        assert!(r.errors[0].contains("length 65"), "{r:?}");
        let r = check(
            &cfg(&one("").replace("d.img", "missing.img")),
            CheckOptions::default(),
        );
        assert!(r.errors[0].contains("missing.img"), "{r:?}");
        let r = check(
            &cfg(&one("").replace("d.img", "missing.img")),
            CheckOptions {
                partial_ok: true,
                ..Default::default()
            },
        );
        assert!(r.errors.is_empty() && r.warnings[0].contains("missing.img"));
        let r = check(
            &cfg(&one("").replace("\"lo\"", "\"xo-none0\"")),
            CheckOptions::default(),
        );
        assert!(
            r.errors.is_empty() && r.warnings[0].contains("xo-none0"),
            "{r:?}"
        );
        let r = check(
            &cfg(&one("").replace("\"lo\"", "\"xo-none0\"")),
            CheckOptions {
                strict_interfaces: true,
                ..Default::default()
            },
        );
        assert!(r.errors[0].contains("xo-none0"), "{r:?}");
        // One file twice: overlapping and writable is refused, disjoint
        // ranges (partitions) are not.
        let two = format!(
            "{}{}",
            one("length = 32"),
            one("offset = 16").replace("slot = 1", "slot = 2")
        );
        let r = check(&cfg(&two), CheckOptions::default());
        assert!(r.errors[0].contains("overlapping"), "{r:?}");
        let two = format!(
            "{}{}",
            one("length = 32"),
            one("offset = 32").replace("slot = 1", "slot = 2")
        );
        assert!(check(&cfg(&two), CheckOptions::default()).errors.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
