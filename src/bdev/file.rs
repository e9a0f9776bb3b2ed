//! A regular file or block device, read with pread and written with pwrite
//! through a descriptor whose flags carry the durability policy, and its
//! synchronous channel ([`FileChannel`]): the I/O runs on the worker's
//! thread during the submit, as vblade does it. The AF_PACKET datapath
//! uses it for stores through the page cache (O_DIRECT and `-s` stores go
//! through io_uring there too), and it is the oracle the io_uring channel
//! is tested against.
#![deny(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::RawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::bounce::Bounce;
use super::{
    export_sectors, Bdev, BlockOp, BlockReq, BlockResult, Channel, ChannelCounters, ChannelCx,
    DiskError, DiskSpec, Geometry, IoEngine, Segs, Source, Submit, Tag,
};
use crate::wire::SECTOR_SIZE;

/// An opened file or block device.
#[derive(Debug)]
pub struct FileDisk {
    /// Shared with the channels (no descriptor per worker).
    file: Arc<File>,
    path: PathBuf,
    /// Byte offset of the export in the store.
    base: u64,
    /// Exported capacity; grows online ([`FileDisk::grow`]), never shrinks.
    /// Shared with the channels, which check every range against it.
    sectors: Arc<AtomicU64>,
    /// Bytes past `base` a write may reach: the store's end when it was
    /// opened or last probed. Why: a store that shrank under a live export
    /// keeps its exported size (shrinking is refused), and a pwrite past a
    /// regular file's end would silently grow the file back; such writes
    /// fail instead, as reads there do. Shared with the channels.
    store_end: Arc<AtomicU64>,
    /// The operator fixed the length (`-l`, `length =`): no online growth.
    fixed_length: bool,
    direct: bool,
    /// O_SYNC (`-s`): every write waits for the device.
    sync: bool,
    /// Writes are acknowledged once in the page cache (`--writeback`, not
    /// O_DIRECT): nothing waits for the device.
    page_cache_acks: bool,
    /// In the default durable mode through the page cache (O_DSYNC, no
    /// O_DIRECT, no `-s`, writable): a second descriptor on the same file
    /// without O_DSYNC, for group commit ([`FileDisk::write_uncommitted`]
    /// then [`FileDisk::commit`]).
    plain: Option<Arc<File>>,
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
            Some(Arc::new(p))
        } else {
            None
        };
        let total = bytes / SECTOR_SIZE as u64;
        let sectors = export_sectors(path, total, spec.offset_sectors, spec.length_sectors)?;
        if !spec.read_only {
            // One writer per range (a second one loses data on failover).
            let start = spec.offset_sectors * SECTOR_SIZE as u64;
            let end = match spec.length_sectors {
                Some(_) => start + sectors * SECTOR_SIZE as u64,
                None => u64::MAX,
            };
            super::lock::lock_range(&file, path, start, end)?;
        }
        Ok(FileDisk {
            file: Arc::new(file),
            path: path.clone(),
            base: spec.offset_sectors * SECTOR_SIZE as u64,
            sectors: Arc::new(AtomicU64::new(sectors)),
            store_end: Arc::new(AtomicU64::new(
                (total - spec.offset_sectors) * SECTOR_SIZE as u64,
            )),
            fixed_length: spec.length_sectors.is_some(),
            direct: spec.direct,
            sync: spec.sync && !spec.read_only,
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
        // Whoever grows the export has seen the store that large.
        self.store_end
            .fetch_max(sectors * SECTOR_SIZE as u64, Ordering::AcqRel);
        self.sectors
            .fetch_max(sectors, Ordering::AcqRel)
            .max(sectors)
    }

    /// Path opened.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The exported capacity as the channels share it (they check every
    /// range against it, and see online growth at once).
    pub(super) fn shared_sectors(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.sectors)
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
        self.plain.as_deref()
    }

    /// pwrite the whole range through the plain descriptor: the data stops
    /// in the page cache, so the write must not be acknowledged before a
    /// [`FileDisk::flush`] that starts after this returns. Without a plain
    /// descriptor, the same as [`FileDisk::write_at`].
    pub fn write_uncommitted(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let at = self.check(buf.len(), offset, true)?;
        self.plain
            .as_deref()
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
    /// Also moves the write fence to the store's end (see `store_end`).
    pub fn probe_sectors(&self) -> io::Result<u64> {
        let mut f: &File = &self.file;
        let bytes = f.seek(SeekFrom::End(0))?;
        let sectors = (bytes / SECTOR_SIZE as u64).saturating_sub(self.base / SECTOR_SIZE as u64);
        self.store_end
            .store(sectors * SECTOR_SIZE as u64, Ordering::Release);
        Ok(sectors)
    }

    /// The write fence, as the channels share it.
    pub(super) fn shared_store_end(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.store_end)
    }

    fn check(&self, len: usize, offset: u64, write: bool) -> io::Result<u64> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.sectors() * SECTOR_SIZE as u64) {
            // The engine never asks for this; refuse rather than trust it.
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if write && past_fence(offset, len as u64, &self.store_end) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(self.base + offset)
    }

    /// pread the whole range; a short read past EOF of a sparse regular
    /// file cannot happen (the size was checked), so short means error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let at = self.check(buf.len(), offset, false)?;
        self.file.read_exact_at(buf, at)
    }

    /// pwrite the whole range.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let at = self.check(buf.len(), offset, true)?;
        self.file.write_all_at(buf, at)
    }

    /// fdatasync: every write made before the call (through either
    /// descriptor) is on stable storage when it returns.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl FileDisk {
    /// O_DIRECT memory alignment (bytes) this store's transfers need: what
    /// `statx(STATX_DIOALIGN)` says, at least one sector; 1 without O_DIRECT.
    pub fn mem_align(&self) -> u32 {
        if !self.direct {
            return 1;
        }
        use std::os::fd::AsRawFd;
        super::uring::dio_alignment(self.file.as_raw_fd())
            .map_or(SECTOR_SIZE as u32, |(mem, _)| mem.max(SECTOR_SIZE as u32))
    }

    /// The descriptors, shared with a channel (kept open as long as it).
    pub(crate) fn channel_files(&self) -> (Arc<File>, Option<Arc<File>>) {
        (Arc::clone(&self.file), self.plain.clone())
    }
}

impl Bdev for FileDisk {
    fn sectors(&self) -> u64 {
        FileDisk::sectors(self)
    }

    fn probe_sectors(&self) -> Option<io::Result<u64>> {
        // A fixed length does not follow the store, but its write fence does.
        let probed = FileDisk::probe_sectors(self);
        (!self.fixed_length).then_some(probed)
    }

    fn grow(&self, sectors: u64) -> u64 {
        FileDisk::grow(self, sectors)
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            mem_align: self.mem_align(),
            reads_zero: false,
            asynchronous: false,
        }
    }

    fn open_channel(&self, cx: &ChannelCx) -> io::Result<Box<dyn Channel>> {
        let device_bound = self.direct || self.sync;
        match cx.engine {
            IoEngine::Uring => Ok(Box::new(super::file_uring::UringChannel::open(self, cx)?)),
            IoEngine::DeviceAsync if device_bound => {
                Ok(Box::new(super::file_uring::UringChannel::open(self, cx)?))
            }
            IoEngine::Sync | IoEngine::DeviceAsync => Ok(Box::new(FileChannel::open(self, cx)?)),
        }
    }
}

/// A write of `len` bytes at export offset `offset` would end past the
/// store's end as last seen (`store_end`): it would grow a regular file
/// that shrank under the export, so it is refused.
#[inline]
pub(super) fn past_fence(offset: u64, len: u64, store_end: &AtomicU64) -> bool {
    offset.saturating_add(len) > store_end.load(Ordering::Acquire)
}

/// A worker's synchronous channel on a [`FileDisk`]: every request runs
/// during its submit, except durable page-cache writes, which are written
/// during the submit and acknowledged after one `fdatasync` at the end of
/// the worker's batch (group commit: one device flush for the batch).
pub struct FileChannel {
    file: Arc<File>,
    /// Group commit descriptor (no O_DSYNC), when the store has one.
    plain: Option<Arc<File>>,
    base: u64,
    sectors: Arc<AtomicU64>,
    /// The store's write fence ([`FileDisk`]'s `store_end`).
    store_end: Arc<AtomicU64>,
    /// O_DIRECT: transfers must be aligned to this (0: any).
    align: usize,
    /// One page-aligned slot (O_DIRECT alignment never exceeds a page).
    bounce: Option<Bounce>,
    /// Written through `plain`, waiting for the batch's fdatasync.
    held: Vec<Tag>,
    /// Finished, waiting for `reap`.
    done: Vec<(Tag, BlockResult)>,
    counters: ChannelCounters,
}

impl std::fmt::Debug for FileChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileChannel")
            .field("held", &self.held.len())
            .field("done", &self.done.len())
            .finish()
    }
}

impl FileChannel {
    /// A channel on `disk` for a worker offering `cx`.
    pub fn open(disk: &FileDisk, cx: &ChannelCx) -> io::Result<FileChannel> {
        let (file, plain) = disk.channel_files();
        let align = if disk.direct {
            disk.mem_align() as usize
        } else {
            0
        };
        let bounce = if align > 0 {
            Some(Bounce::new(1, cx.max_io.div_ceil(align) * align)?)
        } else {
            None
        };
        let depth = cx.depth.max(1) as usize;
        Ok(FileChannel {
            file,
            plain,
            base: disk.base,
            sectors: Arc::clone(&disk.sectors),
            store_end: disk.shared_store_end(),
            align,
            bounce,
            held: Vec::with_capacity(depth),
            done: Vec::with_capacity(depth),
            counters: ChannelCounters::default(),
        })
    }

    fn errno(e: io::Error) -> i32 {
        e.raw_os_error().unwrap_or(libc::EIO)
    }

    /// Read or write every segment in turn at `at`, through `fd`.
    ///
    /// # Safety
    ///
    /// As [`Channel::submit`]: the segments are lent for the call.
    #[allow(unsafe_code)]
    #[inline]
    unsafe fn transfer(file: &File, segs: &Segs, mut at: u64, write: bool) -> BlockResult {
        for s in segs.as_slice() {
            // SAFETY: the submit contract lends each segment, valid for
            // `len` bytes (writable for a read), to this call alone.
            let buf = unsafe { std::slice::from_raw_parts_mut(s.ptr, s.len as usize) };
            let r = if write {
                file.write_all_at(buf, at)
            } else {
                file.read_exact_at(buf, at)
            };
            r.map_err(Self::errno)?;
            at += u64::from(s.len);
        }
        Ok(())
    }

    /// As [`FileChannel::transfer`], through the aligned bounce buffer when
    /// the store wants alignment the segments do not have.
    ///
    /// # Safety
    ///
    /// As [`Channel::submit`].
    #[allow(unsafe_code)]
    #[inline]
    unsafe fn rw(&mut self, file_is_plain: bool, segs: &Segs, at: u64, write: bool) -> BlockResult {
        let file: &File = match (&self.plain, file_is_plain) {
            (Some(p), true) => p,
            _ => &self.file,
        };
        if self.align == 0 || segs.aligned(self.align) {
            // SAFETY: the caller's contract.
            return unsafe { Self::transfer(file, segs, at, write) };
        }
        let total = segs.total();
        let padded = total.div_ceil(self.align) * self.align;
        let Some(b) = self.bounce.as_mut() else {
            return Err(libc::EINVAL);
        };
        if padded > b.slot_len() || padded != total {
            // Lengths come in whole sectors; a store that wants more than
            // the request carries cannot be served.
            return Err(libc::EINVAL);
        }
        // SAFETY: the channel's only bounce slot, `slot_len` bytes of an
        // anonymous mapping it owns; reachable only through `&mut self`.
        let buf = unsafe { std::slice::from_raw_parts_mut(b.ptr(0), total) };
        if write {
            let mut o = 0;
            for s in segs.as_slice() {
                // SAFETY: the caller lends the segment for the call.
                let src = unsafe { std::slice::from_raw_parts(s.ptr, s.len as usize) };
                buf[o..o + src.len()].copy_from_slice(src);
                o += src.len();
            }
            file.write_all_at(buf, at).map_err(Self::errno)
        } else {
            file.read_exact_at(buf, at).map_err(Self::errno)?;
            let mut o = 0;
            for s in segs.as_slice() {
                // SAFETY: the caller lends the segment, writable, for the call.
                let dst = unsafe { std::slice::from_raw_parts_mut(s.ptr, s.len as usize) };
                dst.copy_from_slice(&buf[o..o + dst.len()]);
                o += dst.len();
            }
            Ok(())
        }
    }

    /// fdatasync the batch's held writes and queue their completions.
    fn commit(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let r = self
            .plain
            .as_deref()
            .unwrap_or(&self.file)
            .sync_data()
            .map_err(Self::errno);
        self.counters.group_commits += 1;
        self.counters.group_commit_writes += self.held.len() as u64;
        for t in self.held.drain(..) {
            self.done.push((t, r));
        }
    }
}

impl Channel for FileChannel {
    #[allow(unsafe_code)]
    unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, tag: Tag) -> Submit {
        let end = req.offset.checked_add(u64::from(req.len));
        let cap = self.sectors.load(Ordering::Acquire) * SECTOR_SIZE as u64;
        if end.is_none_or(|e| e > cap) || segs.total() != req.len as usize {
            // The engine never asks for this; refuse rather than trust it.
            return Submit::Done(Err(libc::EINVAL));
        }
        if req.op == BlockOp::Write && past_fence(req.offset, req.len.into(), &self.store_end) {
            return Submit::Done(Err(libc::ENOSPC));
        }
        let at = self.base + req.offset;
        match req.op {
            // SAFETY: the caller's contract, passed on.
            BlockOp::Read => Submit::Done(unsafe { self.rw(false, segs, at, false) }),
            BlockOp::Write if self.plain.is_some() => {
                if self.held.len() == self.held.capacity() {
                    // More writes than the worker said it would queue: the
                    // earlier ones get their sync now.
                    self.commit();
                }
                // SAFETY: the caller's contract, passed on.
                match unsafe { self.rw(true, segs, at, true) } {
                    Ok(()) => {
                        self.held.push(tag);
                        Submit::Queued
                    }
                    Err(e) => Submit::Done(Err(e)),
                }
            }
            // SAFETY: the caller's contract, passed on.
            BlockOp::Write => Submit::Done(unsafe { self.rw(false, segs, at, true) }),
            BlockOp::Flush => Submit::Done(self.file.sync_data().map_err(Self::errno)),
        }
    }

    fn end_batch(&mut self) -> io::Result<()> {
        self.commit();
        Ok(())
    }

    fn reap(&mut self, done: &mut dyn FnMut(Tag, BlockResult)) -> usize {
        let n = self.done.len();
        for (t, r) in self.done.drain(..) {
            done(t, r);
        }
        n
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        self.held.len() + self.done.len()
    }

    fn counters(&self) -> ChannelCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: PathBuf) -> DiskSpec {
        DiskSpec {
            source: Source::File(path),
            offset_sectors: 2,
            length_sectors: Some(4),
            read_only: false,
            direct: false,
            sync: false,
            writeback: false,
            rbd: Default::default(),
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

    /// A store that shrank under its export: after the size probe, a write
    /// past the new end fails (as a read there does) instead of growing the
    /// file back; below it, writes go on.
    #[test]
    #[allow(unsafe_code)]
    fn no_write_grows_a_shrunk_store() {
        let path = std::env::temp_dir().join(format!("xblade-fence-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 16 * 512]).unwrap();
        let mut s = spec(path.clone());
        s.length_sectors = None;
        let d = FileDisk::open(&s).unwrap();
        assert_eq!(d.sectors(), 14);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(8 * 512)
            .unwrap();
        assert_eq!(Bdev::probe_sectors(&d).unwrap().unwrap(), 6);
        assert_eq!(d.sectors(), 14, "the export keeps its size");
        let e = d.write_at(&[1u8; 512], 10 * 512).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(d.write_uncommitted(&[1u8; 512], 6 * 512).is_err());
        d.write_at(&[2u8; 512], 5 * 512).unwrap();
        let mut ch = Bdev::open_channel(&d, &ChannelCx::without_memory(4096, 4)).unwrap();
        let mut buf = [3u8; 1024];
        let req = BlockReq {
            op: BlockOp::Write,
            offset: 5 * 512,
            len: 1024,
        };
        // SAFETY: `buf` outlives the call and is not touched during it.
        let r = unsafe { ch.submit(req, &Segs::one(buf.as_mut_ptr(), 1024), 1) };
        assert_eq!(r, Submit::Done(Err(libc::ENOSPC)), "ends past the new end");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            8 * 512,
            "not grown"
        );
        // The store grows back: so does the fence.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(16 * 512)
            .unwrap();
        Bdev::probe_sectors(&d).unwrap().unwrap();
        d.write_at(&[4u8; 512], 13 * 512).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn offset_and_bounds() {
        let dir = std::env::temp_dir().join(format!("xblade-file-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 16 * 512]).unwrap();
        let d = FileDisk::open(&spec(dir.clone())).unwrap();
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
        let f = &d;
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
            crate::bdev::open(&s),
            Err(DiskError::LengthPastEnd { .. })
        ));
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(
            crate::bdev::open(&spec(dir)),
            Err(DiskError::Open { .. })
        ));
    }
}
