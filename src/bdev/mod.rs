//! Backing stores. The engine only ever hands out ranges inside the export;
//! a backend adds the export's offset into the file or device.
//!
//! Durability is decided here, once, when the store is opened: by default
//! every write goes through a descriptor opened `O_DSYNC`, so a write is on
//! stable storage when it returns and the target may acknowledge it (the
//! Linux initiator never sends FLUSH). `writeback` opts out.
//!
//! [`uring`] is the io_uring engine of the AF_XDP datapath, the one module
//! here allowed `unsafe` (hence `deny` rather than `forbid` at this level;
//! `file` and `null` keep `forbid`).
#![deny(unsafe_code)]

pub mod file;
pub mod null;
pub mod uring;

use std::io;
use std::path::PathBuf;

pub use file::FileDisk;
pub use null::NullDisk;

use crate::wire::SECTOR_SIZE;

/// How to open a backing store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// `FILE` or `null:SIZE`.
    pub source: Source,
    /// First exported sector in the store.
    pub offset_sectors: u64,
    /// Exported length in sectors (`None`: to the end).
    pub length_sectors: Option<u64>,
    /// Refuse writes.
    pub read_only: bool,
    /// O_DIRECT (vblade `-d`).
    pub direct: bool,
    /// O_SYNC (vblade `-s`): kept for scripts; writes are durable anyway.
    pub sync: bool,
    /// Acknowledge writes from the page cache (not durable on a crash).
    pub writeback: bool,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A regular file or block device.
    File(PathBuf),
    /// Reads return zeros, writes are dropped: measures the datapath alone.
    Null {
        /// Size in bytes.
        bytes: u64,
    },
}

impl Source {
    /// Parse `null:SIZE` (with k/m/g/t suffixes) or a path.
    pub fn parse(s: &str) -> Result<Source, DiskError> {
        match s.strip_prefix("null:") {
            Some(size) => Ok(Source::Null {
                bytes: parse_size(size).ok_or_else(|| DiskError::BadSize(s.into()))?,
            }),
            None => Ok(Source::File(PathBuf::from(s))),
        }
    }
}

/// Parse `123`, `64k`, `16M`, `2G`, `1T` (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        (i, 't' | 'T') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Errors opening or using a backing store.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// open(2) failed.
    #[error("cannot open backing store {}", path.display())]
    Open {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Not a regular file or block device.
    #[error("backing store {0} is neither a regular file nor a block device")]
    NotAFile(PathBuf),
    /// Offset at or past the end.
    #[error("offset {offset} sectors is at or past the end of {path} ({sectors} sectors)")]
    OffsetPastEnd {
        /// Path.
        path: PathBuf,
        /// Requested offset.
        offset: u64,
        /// Store size.
        sectors: u64,
    },
    /// Length beyond the end.
    #[error("length {length} sectors at offset {offset} goes past the end of {path} ({sectors} sectors)")]
    LengthPastEnd {
        /// Path.
        path: PathBuf,
        /// Offset.
        offset: u64,
        /// Requested length.
        length: u64,
        /// Store size.
        sectors: u64,
    },
    /// Bad `null:` size.
    #[error("bad size in {0:?}: expected null:SIZE like null:1G")]
    BadSize(String),
    /// A zero-sector export.
    #[error("export of {0} would have no sectors")]
    Empty(String),
}

/// An opened backing store.
#[derive(Debug)]
pub enum Disk {
    /// File or block device.
    File(FileDisk),
    /// Null.
    Null(NullDisk),
}

impl Disk {
    /// Open per `spec`.
    pub fn open(spec: &DiskSpec) -> Result<Disk, DiskError> {
        match &spec.source {
            Source::File(_) => FileDisk::open(spec).map(Disk::File),
            Source::Null { bytes } => {
                let total = bytes / SECTOR_SIZE as u64;
                let sectors = export_sectors(
                    &PathBuf::from("null"),
                    total,
                    spec.offset_sectors,
                    spec.length_sectors,
                )?;
                Ok(Disk::Null(NullDisk::new(sectors)))
            }
        }
    }

    /// Exported capacity in sectors.
    pub fn sectors(&self) -> u64 {
        match self {
            Disk::File(f) => f.sectors(),
            Disk::Null(n) => n.sectors(),
        }
    }

    /// What the store could export now (online resize): the sectors past
    /// the export's offset. `None` when the export does not follow its
    /// store: a null store, or an operator-fixed length.
    pub fn probe_sectors(&self) -> Option<io::Result<u64>> {
        match self {
            Disk::File(f) if !f.fixed_length() => Some(f.probe_sectors()),
            _ => None,
        }
    }

    /// Accept requests up to `sectors` from now on (online growth; never
    /// shrinks). Returns the capacity in force.
    pub fn grow(&self, sectors: u64) -> u64 {
        match self {
            Disk::File(f) => f.grow(sectors),
            Disk::Null(n) => n.sectors(),
        }
    }

    /// Read `buf.len()` bytes at `offset` (inside the export).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Disk::File(f) => f.read_at(buf, offset),
            Disk::Null(n) => n.read_at(buf, offset),
        }
    }

    /// Write `buf` at `offset` (inside the export); durable on return unless
    /// the store was opened `writeback`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Disk::File(f) => f.write_at(buf, offset),
            Disk::Null(n) => n.write_at(buf, offset),
        }
    }

    /// Durable writes go through the page cache and are acknowledged by
    /// group commit: [`Disk::write_uncommitted`] for each write of a
    /// batch, then one [`Disk::flush`] before any of them is acknowledged.
    pub fn group_commit(&self) -> bool {
        matches!(self, Disk::File(f) if f.plain().is_some())
    }

    /// Write `buf` at `offset` (inside the export) into the page cache
    /// only, when [`Disk::group_commit`]; otherwise as [`Disk::write_at`].
    pub fn write_uncommitted(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Disk::File(f) => f.write_uncommitted(buf, offset),
            Disk::Null(n) => n.write_at(buf, offset),
        }
    }

    /// Make all completed writes durable.
    pub fn flush(&self) -> io::Result<()> {
        match self {
            Disk::File(f) => f.flush(),
            Disk::Null(_) => Ok(()),
        }
    }

    /// True when buffers must be 512-byte aligned (O_DIRECT).
    pub fn needs_alignment(&self) -> bool {
        matches!(self, Disk::File(f) if f.direct())
    }
}

/// Exported sectors for a store of `total` sectors, with the operator's
/// offset and length, refusing ranges that leave the store.
pub fn export_sectors(
    path: &std::path::Path,
    total: u64,
    offset: u64,
    length: Option<u64>,
) -> Result<u64, DiskError> {
    if offset >= total {
        return Err(DiskError::OffsetPastEnd {
            path: path.into(),
            offset,
            sectors: total,
        });
    }
    let avail = total - offset;
    let sectors = match length {
        Some(l) if l > avail => {
            return Err(DiskError::LengthPastEnd {
                path: path.into(),
                offset,
                length: l,
                sectors: total,
            })
        }
        Some(l) => l,
        None => avail,
    };
    if sectors == 0 {
        return Err(DiskError::Empty(path.display().to_string()));
    }
    Ok(sectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(
            Source::parse("null:1M").unwrap(),
            Source::Null { bytes: 1 << 20 }
        );
        assert!(Source::parse("null:lots").is_err());
    }

    #[test]
    fn export_ranges() {
        let p = std::path::Path::new("f");
        assert_eq!(export_sectors(p, 100, 0, None).unwrap(), 100);
        assert_eq!(export_sectors(p, 100, 10, None).unwrap(), 90);
        assert_eq!(export_sectors(p, 100, 10, Some(90)).unwrap(), 90);
        assert!(export_sectors(p, 100, 10, Some(91)).is_err());
        assert!(export_sectors(p, 100, 100, None).is_err());
        assert!(export_sectors(p, 100, 0, Some(0)).is_err());
    }
}
