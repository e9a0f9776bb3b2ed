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
use std::sync::Arc;

use super::bounce::Bounce;
use super::{
    Bdev, BlockOp, BlockReq, BlockResult, Chan, Channel, ChannelCounters, ChannelCx, DiskError,
    DiskSpec, Extent, Geometry, IoEngine, Segs, Source, Submit, Tag,
};
use crate::wire::SECTOR_SIZE;

/// An opened file or block device.
#[derive(Debug)]
pub struct FileDisk {
    /// Shared with the channels (no descriptor per worker).
    file: Arc<File>,
    path: PathBuf,
    /// The export's window, size and write fence (the bdev core's; the
    /// fence matters most here: a pwrite past a regular file's end would
    /// silently grow a file that shrank under the export).
    extent: Arc<Extent>,
    direct: bool,
    /// O_SYNC (`-s`): every write waits for the device.
    sync: bool,
    /// Writes are acknowledged once in the page cache (`--writeback`, not
    /// O_DIRECT): nothing waits for the device.
    page_cache_acks: bool,
    /// In the default durable mode through the page cache (O_DSYNC, no
    /// O_DIRECT, no `-s`, writable): a second descriptor on the same file
    /// without O_DSYNC, for group commit (the channels write through it and
    /// acknowledge after one fdatasync).
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
        let open_err = |source| DiskError::Open {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!spec.read_only)
            .custom_flags(flags)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let ft = meta.file_type();
        let bytes = if ft.is_file() {
            meta.len()
        } else if ft.is_block_device() {
            // lseek(SEEK_END) reports a block device's size (BLKGETSIZE64).
            file.seek(SeekFrom::End(0)).map_err(open_err)?
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
                .map_err(open_err)?;
            Some(Arc::new(p))
        } else {
            None
        };
        let extent = Extent::new(path, bytes / SECTOR_SIZE as u64, spec)?;
        if !spec.read_only {
            // One writer per range (a second one loses data on failover).
            let start = extent.base();
            let end = match spec.length_sectors {
                Some(_) => start + extent.sectors() * SECTOR_SIZE as u64,
                None => u64::MAX,
            };
            super::lock::lock_range(&file, path, start, end)?;
        }
        Ok(FileDisk {
            file: Arc::new(file),
            path: path.clone(),
            extent: Arc::new(extent),
            direct: spec.direct,
            sync: spec.sync && !spec.read_only,
            page_cache_acks: spec.writeback && !spec.sync && !spec.direct && !spec.read_only,
            plain,
        })
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
    fn extent(&self) -> &Arc<Extent> {
        &self.extent
    }

    fn store_sectors(&self) -> Option<io::Result<u64>> {
        let mut f: &File = &self.file;
        Some(f.seek(SeekFrom::End(0)).map(|b| b / SECTOR_SIZE as u64))
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            mem_align: self.mem_align(),
            reads_zero: false,
        }
    }

    fn open_channel(&self, cx: &ChannelCx) -> io::Result<Chan> {
        let device_bound = self.direct || self.sync;
        let uring = match cx.engine {
            IoEngine::Uring => true,
            IoEngine::DeviceAsync => device_bound,
            IoEngine::Sync => false,
        };
        Ok(if uring {
            Chan::Uring(super::file_uring::UringChannel::open(self, cx)?)
        } else {
            Chan::File(FileChannel::open(self, cx)?)
        })
    }
}

/// A worker's synchronous channel on a [`FileDisk`]: every request runs
/// during its submit, except durable page-cache writes, which are written
/// during the submit and acknowledged after one `fdatasync` at the end of
/// the worker's batch (group commit: one device flush for the batch).
pub struct FileChannel {
    file: Arc<File>,
    /// Group commit descriptor (no O_DSYNC), when the store has one.
    plain: Option<Arc<File>>,
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
        // The channel's only bounce slot (never taken: it is this call's).
        const SLOT: u16 = 0;
        if write {
            // SAFETY: the caller lends the segments for the call; they fit
            // the slot (checked above).
            unsafe { b.gather(SLOT, segs.as_slice()) };
        }
        // SAFETY: the slot is `slot_len` >= `total` bytes of an anonymous
        // mapping the channel owns, reachable only through `&mut self`.
        let buf = unsafe { std::slice::from_raw_parts_mut(b.ptr(SLOT), total) };
        if write {
            file.write_all_at(buf, at).map_err(Self::errno)
        } else {
            file.read_exact_at(buf, at).map_err(Self::errno)?;
            // SAFETY: the caller lends the segments, writable, for the call.
            unsafe { b.scatter(SLOT, segs.as_slice()) };
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

    /// [`Channel::reap`] with `done` called directly (the worker's queue
    /// holds this channel by value: [`super::Chan::File`]).
    #[inline]
    pub fn reap_each(&mut self, mut done: impl FnMut(Tag, BlockResult)) -> usize {
        let n = self.done.len();
        for (t, r) in self.done.drain(..) {
            done(t, r);
        }
        n
    }
}

impl Channel for FileChannel {
    #[allow(unsafe_code)]
    #[inline]
    unsafe fn submit(&mut self, req: BlockReq, segs: &Segs, tag: Tag) -> Submit {
        let at = req.offset;
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
        self.reap_each(done)
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
    use crate::bdev::Queue;

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

    /// `op` on `buf` at export byte `offset` through `q`, to its end (a
    /// held write gets its group commit).
    #[allow(unsafe_code)]
    fn io(q: &mut Queue, op: BlockOp, offset: u64, buf: &mut [u8]) -> BlockResult {
        let req = BlockReq {
            op,
            offset,
            len: buf.len() as u32,
        };
        // SAFETY: `buf` outlives the request: it is reaped below.
        match unsafe { q.submit(req, &Segs::one(buf.as_mut_ptr(), buf.len()), 7) } {
            Submit::Done(r) => r,
            Submit::Busy => panic!("busy"),
            Submit::Queued => {
                q.end_batch().unwrap();
                let mut got = None;
                q.reap(&mut |t, r| got = Some((t, r)));
                let (t, r) = got.expect("completed at the batch's end");
                assert_eq!(t, 7);
                r
            }
        }
    }

    fn queue(d: &FileDisk) -> Queue {
        d.open_queue(&ChannelCx::without_memory(4096, 4)).unwrap()
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
            FileDisk::open(&s).unwrap().channel_files().1.is_some()
        };
        assert!(plain(|_| {}), "the default mode");
        assert!(!plain(|s| s.writeback = true));
        assert!(!plain(|s| s.sync = true));
        assert!(!plain(|s| s.direct = true));
        assert!(!plain(|s| s.read_only = true));
        // Writes go through the plain descriptor to the same file, and are
        // acknowledged after the batch's fdatasync.
        let d = FileDisk::open(&spec(path.clone())).unwrap();
        let mut q = queue(&d);
        assert_eq!(io(&mut q, BlockOp::Write, 512, &mut [5u8; 512]), Ok(()));
        assert_eq!(q.counters().group_commit_writes, 1);
        let mut b = [0u8; 512];
        assert_eq!(io(&mut q, BlockOp::Read, 512, &mut b), Ok(()));
        assert_eq!(b, [5u8; 512]);
        assert_eq!(
            std::fs::read(&path).unwrap()[3 * 512],
            5,
            "export offset 2 sectors"
        );
        assert_eq!(
            io(&mut q, BlockOp::Write, 4 * 512, &mut [1u8; 512]),
            Err(libc::EINVAL),
            "past the export"
        );
        let flags = |f: &File| {
            use std::os::fd::AsRawFd;
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
            let v = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
            i32::from_str_radix(v.trim(), 8).unwrap()
        };
        let (file, plain) = d.channel_files();
        assert_ne!(flags(&file) & libc::O_DSYNC, 0);
        assert_eq!(flags(&plain.unwrap()) & libc::O_DSYNC, 0);
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
        assert_eq!(d.probe_sectors().unwrap().unwrap(), 6);
        assert_eq!(d.sectors(), 14, "the export keeps its size");
        let mut q = queue(&d);
        for (offset, len) in [(10 * 512, 512), (6 * 512, 512), (5 * 512, 1024)] {
            let mut buf = vec![1u8; len];
            assert_eq!(
                io(&mut q, BlockOp::Write, offset, &mut buf),
                Err(libc::ENOSPC),
                "{offset}+{len} ends past the new end"
            );
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            8 * 512,
            "not grown"
        );
        assert_eq!(io(&mut q, BlockOp::Write, 5 * 512, &mut [2u8; 512]), Ok(()));
        // The store grows back: so does the fence.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(16 * 512)
            .unwrap();
        d.probe_sectors().unwrap().unwrap();
        assert_eq!(
            io(&mut q, BlockOp::Write, 13 * 512, &mut [4u8; 512]),
            Ok(())
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn offset_and_bounds() {
        let dir = std::env::temp_dir().join(format!("xblade-file-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 16 * 512]).unwrap();
        let d = FileDisk::open(&spec(dir.clone())).unwrap();
        assert_eq!(d.sectors(), 4);
        let mut q = queue(&d);
        assert_eq!(io(&mut q, BlockOp::Write, 512, &mut [7u8; 512]), Ok(()));
        let raw = std::fs::read(&dir).unwrap();
        assert_eq!(raw[3 * 512], 7, "offset applied");
        assert_eq!(raw[2 * 512], 0);
        assert_eq!(
            io(&mut q, BlockOp::Write, 4 * 512, &mut [1u8; 512]),
            Err(libc::EINVAL),
            "past the export"
        );
        let mut b = [0u8; 512];
        assert_eq!(io(&mut q, BlockOp::Read, 512, &mut b), Ok(()));
        assert_eq!(b, [7u8; 512]);
        assert_eq!(io(&mut q, BlockOp::Flush, 0, &mut []), Ok(()));
        assert!(d.probe_sectors().is_none(), "a fixed length");
        assert_eq!(d.grow(6), 6);
        assert_eq!(d.grow(5), 6, "never shrinks");
        assert_eq!(io(&mut q, BlockOp::Write, 5 * 512, &mut [9u8; 512]), Ok(()));
        assert_eq!(
            io(&mut q, BlockOp::Write, 6 * 512, &mut [1u8; 512]),
            Err(libc::EINVAL),
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
