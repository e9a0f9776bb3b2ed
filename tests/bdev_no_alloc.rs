//! The channels' per-request path allocates nothing: a counting global
//! allocator watches the io_uring file channel (every file mode) and the
//! fake asynchronous store over many READ, WRITE and FLUSH requests, their
//! batches and their completions. The fake store is compiled only with the
//! cargo feature `test-stores` (scripts/test.sh): without it the test fails.

mod alloc_support;

use std::path::PathBuf;

use xblade::bdev::{
    self, BlockOp, BlockReq, ChannelCx, DiskSpec, IoEngine, MemRegion, Queue, Segs, Source, Submit,
};
#[cfg(feature = "test-stores")]
use xblade::bdev::{fake::FakeAsync, Bdev};

/// A file removed when dropped, also on a panic.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Page-aligned frame memory: 8 requests of up to 5 chunks of 4096 bytes.
struct Frames(Box<[u8]>, usize);

impl Frames {
    fn new() -> Frames {
        let b = vec![0u8; 8 * 5 * 4096 + 4096].into_boxed_slice();
        let skip = (4096 - b.as_ptr() as usize % 4096) % 4096;
        Frames(b, skip)
    }
    fn at(&mut self, off: usize) -> *mut u8 {
        self.0[self.1 + off..].as_mut_ptr()
    }
    fn region(&mut self) -> MemRegion {
        MemRegion {
            ptr: self.at(0),
            len: 8 * 5 * 4096,
        }
    }
}

/// `rounds` batches of 8 requests (aligned reads, multi-buffer reads and
/// writes shaped as the XDP datapath lays them out, a flush), each drained.
fn run(chan: &mut Queue, frames: &mut Frames, rounds: usize) -> usize {
    let mut completed = 0;
    for r in 0..rounds {
        let mut queued = 0;
        for i in 0..8usize {
            let c = i * 5 * 4096;
            let sector = ((r * 8 + i) % 48) as u64 * 2;
            let (op, segs) = match i % 4 {
                0 => (BlockOp::Read, Segs::one(frames.at(c + 512), 1024)),
                1 | 2 => {
                    // Head at chunk + 512 (7 sectors), a tail at chunk + 476.
                    let mut s = Segs::one(frames.at(c + 512), 3584);
                    s.push(frames.at(c + 4096 + 476), 1024);
                    let op = if i % 4 == 1 {
                        BlockOp::Read
                    } else {
                        BlockOp::Write
                    };
                    (op, s)
                }
                _ => (BlockOp::Flush, Segs::default()),
            };
            let req = BlockReq {
                op,
                offset: sector * 512 * 8,
                len: segs.total() as u32,
            };
            // SAFETY: each request has its own 5 chunks of `frames`, which
            // stay untouched until the batch is drained below.
            match unsafe { chan.submit(req, &segs, (r * 8 + i) as u32) } {
                Submit::Done(res) => {
                    assert_eq!(res, Ok(()));
                    completed += 1;
                }
                Submit::Queued => queued += 1,
                Submit::Busy => panic!("busy at 8 of depth 16"),
            }
        }
        chan.end_batch().unwrap();
        while queued > 0 {
            if let Some(fd) = chan.poll_fd() {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd, a live local.
                unsafe { libc::poll(&mut p, 1, 5000) };
            }
            queued -= chan.reap(&mut |_, res| {
                assert_eq!(res, Ok(()));
                completed += 1;
            });
        }
        assert_eq!(chan.in_flight(), 0);
    }
    completed
}

/// Allocations during `rounds` batches after a warm-up.
fn steady_allocs(chan: &mut Queue, frames: &mut Frames) -> u64 {
    run(chan, frames, 2);
    alloc_support::assert_counting();
    let before = alloc_support::allocations();
    let done = run(chan, frames, 100);
    let after = alloc_support::allocations();
    assert_eq!(done, 800);
    after - before
}

#[test]
fn channels_allocate_nothing_per_request() {
    let path = TempPath(PathBuf::from(format!(
        "/var/tmp/xblade-bdev-noalloc-{}.img",
        std::process::id()
    )));
    std::fs::write(&path.0, vec![0u8; 1 << 20]).unwrap();
    // (direct, sync, writeback): page cache with group commit, writeback,
    // -s, O_DIRECT.
    for (direct, sync, writeback) in [
        (false, false, false),
        (false, false, true),
        (false, true, false),
        (true, false, false),
    ] {
        let spec = DiskSpec {
            source: Source::File(path.0.clone()),
            offset_sectors: 0,
            length_sectors: None,
            read_only: false,
            direct,
            sync,
            writeback,
            rbd: Default::default(),
        };
        let disk = bdev::open(&spec).unwrap();
        let mut frames = Frames::new();
        // SAFETY: `frames` outlives the channel (dropped explicitly first).
        let cx = unsafe { ChannelCx::new(vec![frames.region()], 35 * 512, 16, IoEngine::Uring) };
        let mut chan = disk.open_queue(&cx).unwrap();
        assert!(chan.poll_fd().is_some(), "the io_uring channel");
        let n = steady_allocs(&mut chan, &mut frames);
        assert_eq!(
            n, 0,
            "io_uring channel (direct {direct}, sync {sync}, writeback {writeback})"
        );
        drop(chan);
        drop(frames);
    }
    // One test, not two: the count is process-wide, and a second test
    // running beside this one would add its allocations.
    #[cfg(not(feature = "test-stores"))]
    panic!("the fake store is not built: run with --features xblade/test-stores (scripts/test.sh does)");
    #[cfg(feature = "test-stores")]
    {
        let fake = FakeAsync::new(2048);
        let mut frames = Frames::new();
        let mut chan = fake
            .open_queue(&ChannelCx::without_memory(35 * 512, 16))
            .unwrap();
        assert_eq!(steady_allocs(&mut chan, &mut frames), 0, "fake-async");
    }
}
