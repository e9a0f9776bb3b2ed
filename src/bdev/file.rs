//! A regular file or block device, read with pread and written with pwrite
//! through a descriptor whose flags carry the durability policy.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{export_sectors, DiskError, DiskSpec, Source};
use crate::wire::SECTOR_SIZE;

/// An opened file or block device.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    path: PathBuf,
    /// Byte offset of the export in the store.
    base: u64,
    /// Exported capacity; grows online ([`FileDisk::grow`]), never shrinks.
    sectors: AtomicU64,
    /// The operator fixed the length (`-l`, `length =`): no online growth.
    fixed_length: bool,
    direct: bool,
    /// Writes are acknowledged once in the page cache (`--writeback`, not
    /// O_DIRECT): nothing waits for the device.
    page_cache_acks: bool,
    /// In the default durable mode through the page cache (O_DSYNC, no
    /// O_DIRECT, no `-s`, writable): a second descriptor on the same file
    /// without O_DSYNC, for group commit ([`FileDisk::write_uncommitted`]
    /// then [`FileDisk::commit`]).
    plain: Option<File>,
}

impl FileDisk {
    /// Open per `spec`; `spec.source` must be a path.
    pub fn open(spec: &DiskSpec) -> Result<FileDisk, DiskError> {
        let Source::File(path) = &spec.source else {
            return Err(DiskError::NotAFile(PathBuf::from("null")));
        };
        let mut flags = 0;
        if spec.direct {
            flags |= libc::O_DIRECT;
        }
        if spec.sync {
            flags |= libc::O_SYNC;
        } else if !spec.writeback && !spec.read_only {
            flags |= libc::O_DSYNC;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(!spec.read_only)
            .custom_flags(flags)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: path.clone(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| DiskError::Open {
            path: path.clone(),
            source,
        })?;
        let ft = meta.file_type();
        let bytes = if ft.is_file() {
            meta.len()
        } else if ft.is_block_device() {
            // lseek(SEEK_END) reports a block device's size (BLKGETSIZE64).
            file.seek(SeekFrom::End(0))
                .map_err(|source| DiskError::Open {
                    path: path.clone(),
                    source,
                })?
        } else {
            return Err(DiskError::NotAFile(path.clone()));
        };
        let plain = if !spec.writeback && !spec.sync && !spec.direct && !spec.read_only {
            // Through /proc: the very file opened above, whatever its path
            // names by now.
            use std::os::fd::AsRawFd;
            let p = OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map_err(|source| DiskError::Open {
                    path: path.clone(),
                    source,
                })?;
            Some(p)
        } else {
            None
        };
        let total = bytes / SECTOR_SIZE as u64;
        let sectors = export_sectors(path, total, spec.offset_sectors, spec.length_sectors)?;
        Ok(FileDisk {
            file,
            path: path.clone(),
            base: spec.offset_sectors * SECTOR_SIZE as u64,
            sectors: AtomicU64::new(sectors),
            fixed_length: spec.length_sectors.is_some(),
            direct: spec.direct,
            page_cache_acks: spec.writeback && !spec.sync && !spec.direct && !spec.read_only,
            plain,
        })
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors.load(Ordering::Acquire)
    }

    /// The export has an operator-fixed length and does not follow the store.
    pub fn fixed_length(&self) -> bool {
        self.fixed_length
    }

    /// Accept requests up to `sectors` (online growth). Refuses to shrink:
    /// returns the capacity in force afterwards.
    pub fn grow(&self, sectors: u64) -> u64 {
        self.sectors
            .fetch_max(sectors, Ordering::AcqRel)
            .max(sectors)
    }

    /// Path opened.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Opened O_DIRECT.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Writes land in the page cache and are acknowledged from there
    /// (`--writeback` without O_DIRECT or `-s`): a datapath may then write
    /// in its own context, since no write waits for the device.
    pub fn page_cache_acks(&self) -> bool {
        self.page_cache_acks
    }

    /// The descriptor without O_DSYNC, in the default durable mode through
    /// the page cache (None otherwise). Why: with O_DSYNC every write pays
    /// its own device flush; a datapath instead writes a batch through this
    /// descriptor and acknowledges it after one fdatasync (group commit).
    pub fn plain(&self) -> Option<&File> {
        self.plain.as_ref()
    }

    /// pwrite the whole range through the plain descriptor: the data stops
    /// in the page cache, so the write must not be acknowledged before a
    /// [`FileDisk::flush`] that starts after this returns. Without a plain
    /// descriptor, the same as [`FileDisk::write_at`].
    pub fn write_uncommitted(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let at = self.check(buf.len(), offset)?;
        self.plain
            .as_ref()
            .unwrap_or(&self.file)
            .write_all_at(buf, at)
    }

    /// Byte offset of the export in the store (for io_uring backends).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The descriptor (for io_uring backends).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Current size of the store in sectors past the export offset (online
    /// resize detection).
    pub fn probe_sectors(&self) -> io::Result<u64> {
        let mut f = &self.file;
        let bytes = f.seek(SeekFrom::End(0))?;
        Ok((bytes / SECTOR_SIZE as u64).saturating_sub(self.base / SECTOR_SIZE as u64))
    }

    fn check(&self, len: usize, offset: u64) -> io::Result<u64> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.sectors() * SECTOR_SIZE as u64) {
            // The engine never asks for this; refuse rather than trust it.
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(self.base + offset)
    }

    /// pread the whole range; a short read past EOF of a sparse regular
    /// file cannot happen (the size was checked), so short means error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let at = self.check(buf.len(), offset)?;
        self.file.read_exact_at(buf, at)
    }

    /// pwrite the whole range.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let at = self.check(buf.len(), offset)?;
        self.file.write_all_at(buf, at)
    }

    /// fdatasync: every write made before the call (through either
    /// descriptor) is on stable storage when it returns.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::Disk;

    fn spec(path: PathBuf) -> DiskSpec {
        DiskSpec {
            source: Source::File(path),
            offset_sectors: 2,
            length_sectors: Some(4),
            read_only: false,
            direct: false,
            sync: false,
            writeback: false,
        }
    }

    #[test]
    fn page_cache_acks_only_with_writeback() {
        let path = std::env::temp_dir().join(format!("xblade-acks-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 16 * 512]).unwrap();
        let acks = |f: fn(&mut DiskSpec)| {
            let mut s = spec(path.clone());
            f(&mut s);
            FileDisk::open(&s).unwrap().page_cache_acks()
        };
        assert!(!acks(|_| {}), "durable by default");
        let plain = |f: fn(&mut DiskSpec)| {
            let mut s = spec(path.clone());
            f(&mut s);
            FileDisk::open(&s).unwrap().plain().is_some()
        };
        assert!(plain(|_| {}), "the default mode");
        assert!(!plain(|s| s.writeback = true));
        assert!(!plain(|s| s.sync = true));
        assert!(!plain(|s| s.direct = true));
        assert!(!plain(|s| s.read_only = true));
        // The plain descriptor reaches the same file, without O_DSYNC.
        let d = FileDisk::open(&spec(path.clone())).unwrap();
        d.write_uncommitted(&[5u8; 512], 512).unwrap();
        d.flush().unwrap();
        let mut b = [0u8; 512];
        d.read_at(&mut b, 512).unwrap();
        assert_eq!(b, [5u8; 512]);
        assert_eq!(
            std::fs::read(&path).unwrap()[3 * 512],
            5,
            "export offset 2 sectors"
        );
        assert!(
            d.write_uncommitted(&[1u8; 512], 4 * 512).is_err(),
            "past the export"
        );
        let flags = |f: &File| {
            use std::os::fd::AsRawFd;
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
            let v = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
            i32::from_str_radix(v.trim(), 8).unwrap()
        };
        assert_ne!(flags(d.file()) & libc::O_DSYNC, 0);
        assert_eq!(flags(d.plain().unwrap()) & libc::O_DSYNC, 0);
        assert!(acks(|s| s.writeback = true));
        assert!(!acks(|s| {
            s.writeback = true;
            s.sync = true;
        }));
        assert!(!acks(|s| {
            s.writeback = true;
            s.read_only = true;
        }));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn offset_and_bounds() {
        let dir = std::env::temp_dir().join(format!("xblade-file-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 16 * 512]).unwrap();
        let d = Disk::open(&spec(dir.clone())).unwrap();
        assert_eq!(d.sectors(), 4);
        d.write_at(&[7u8; 512], 512).unwrap();
        let raw = std::fs::read(&dir).unwrap();
        assert_eq!(raw[3 * 512], 7, "offset applied");
        assert_eq!(raw[2 * 512], 0);
        assert!(d.write_at(&[1u8; 512], 4 * 512).is_err(), "past the export");
        let mut b = [0u8; 512];
        d.read_at(&mut b, 512).unwrap();
        assert_eq!(b, [7u8; 512]);
        d.flush().unwrap();
        let Disk::File(f) = &d else { unreachable!() };
        assert!(f.fixed_length());
        assert_eq!(f.grow(6), 6);
        assert_eq!(f.grow(5), 6, "never shrinks");
        d.write_at(&[9u8; 512], 5 * 512).unwrap();
        assert!(
            d.write_at(&[1u8; 512], 6 * 512).is_err(),
            "past the grown end"
        );
        let mut s = spec(dir.clone());
        s.length_sectors = Some(15);
        assert!(matches!(
            Disk::open(&s),
            Err(DiskError::LengthPastEnd { .. })
        ));
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(
            Disk::open(&spec(dir)),
            Err(DiskError::Open { .. })
        ));
    }
}
