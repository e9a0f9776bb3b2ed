//! Ceph RBD images as exports (`rbd:POOL/IMAGE`, `rbd:POOL/NAMESPACE/IMAGE`)
//! through librbd's asynchronous C API, loaded with dlopen ([`ffi`]).
//!
//! xblade is then a stateless gateway: the data lives on the cluster and
//! several gateways may export one image at once, each its own process.
//! Hence: one cluster connection per process ([`Cluster`], made in
//! `bdev::open` on the main thread before workers start, from a thread kept
//! off the workers' cores because librados's threads inherit its CPU mask);
//! images with exclusive-lock refused (two writers would ping-pong the lock
//! at a seventh of the speed); `rbd_cache=false`, so a completed write is
//! on the OSDs; OSD and monitor op timeouts, so a gateway cut off from the
//! cluster answers ATA errors in bounded time instead of hanging.
//!
//! Each worker opens its own image handle ([`channel::RbdChannel`]):
//! requests go out with `rbd_aio_readv`/`writev`/`flush` straight on the
//! frame memory, and completions come back through the image's eventfd,
//! which the worker waits on with its other descriptors.
#![allow(unsafe_code)]

pub mod channel;
pub mod cluster;
pub mod error;
pub mod ffi;
pub mod lease;

use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Bdev, Chan, ChannelCx, DiskSpec, Extent, Geometry};
use crate::wire::SECTOR_SIZE;
pub(crate) use cluster::off_workers;
pub use cluster::{set_worker_cores, Cluster};
use error::cstr;
pub use error::RbdError;
use ffi::{Image, Ioctx};

/// How xblade talks to Ceph: process-wide options of `rbd:` exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdOptions {
    /// Client id (`client.ID` in the keyring); `admin` when unset.
    pub id: Option<String>,
    /// Bound on a monitor or OSD operation (and on connecting), so requests
    /// fail with an ATA error instead of waiting for a cluster that is gone.
    pub timeout: Duration,
}

/// Default [`RbdOptions::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for RbdOptions {
    fn default() -> Self {
        RbdOptions {
            id: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl RbdOptions {
    /// The client id in force.
    pub fn client_id(&self) -> &str {
        self.id.as_deref().unwrap_or("admin")
    }
}

/// A pool (and namespace) context, shared by an export and its channels.
#[derive(Debug)]
pub(crate) struct PoolCtx {
    cluster: Arc<Cluster>,
    ioctx: Ioctx,
}

// SAFETY: the context is only used to open images (rbd_open duplicates it),
// which librados allows from any thread.
unsafe impl Send for PoolCtx {}
// SAFETY: as for Send.
unsafe impl Sync for PoolCtx {}

impl Drop for PoolCtx {
    fn drop(&mut self) {
        // SAFETY: created by rados_ioctx_create; every image opened on it
        // is closed (channels and the export hold this Arc until then).
        unsafe { (self.cluster.lib.rados_ioctx_destroy)(self.ioctx) }
    }
}

/// An open image handle, closed on drop.
#[derive(Debug)]
pub(crate) struct ImageHandle {
    pub(crate) image: Image,
    lib: &'static ffi::Lib,
    /// Keeps the pool context (and cluster) alive past the handle.
    _pool: Arc<PoolCtx>,
}

// SAFETY: librbd image handles may be used from any thread; the channel's
// is used by one worker at a time.
unsafe impl Send for ImageHandle {}
// SAFETY: the export's own handle is only asked for its size and features,
// which librbd serialises internally.
unsafe impl Sync for ImageHandle {}

impl Drop for ImageHandle {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open; no request is in flight on it (the
        // channel waits for its requests before dropping it).
        unsafe { (self.lib.rbd_close)(self.image) };
    }
}

/// An `rbd:` export.
#[derive(Debug)]
pub struct RbdDisk {
    pool: Arc<PoolCtx>,
    name: CString,
    /// The export's own handle: size (online growth) and features.
    handle: ImageHandle,
    read_only: bool,
    /// The export's window and size in the image (the bdev core's).
    extent: Arc<Extent>,
    /// librbd requests in flight over every channel.
    in_flight: Arc<AtomicU64>,
    /// The channels' image handles (see [`RbdDisk::store_sectors`]).
    handles: Arc<Mutex<Vec<SharedImage>>>,
    /// The gateway lease gating writes (writable exports).
    lease: Option<Arc<lease::Lease>>,
}

/// A channel's image handle as the export's size probe sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedImage(pub(crate) Image);

// SAFETY: only rbd_get_size is called through it, from the control thread,
// while the channel owning the handle runs; librbd's image calls are
// thread-safe (the image lock serialises the header refresh).
unsafe impl Send for SharedImage {}

impl RbdDisk {
    /// Connect (once per process) and open the image `spec` names, from a
    /// thread kept off the workers' cores ([`off_workers`]).
    pub fn open(
        spec: &DiskSpec,
        pool: &str,
        namespace: Option<&str>,
        image: &str,
    ) -> Result<RbdDisk, RbdError> {
        off_workers(|| Self::open_here(spec, pool, namespace, image))
            .unwrap_or_else(|e| Err(RbdError::Library(e)))
    }

    fn open_here(
        spec: &DiskSpec,
        pool: &str,
        namespace: Option<&str>,
        image: &str,
    ) -> Result<RbdDisk, RbdError> {
        let shown = spec.source.to_string();
        let cluster = Cluster::get(&spec.rbd)?;
        let lib = cluster.lib;
        let cpool = cstr(pool)?;
        let mut ioctx: Ioctx = std::ptr::null_mut();
        // SAFETY: a connected cluster; out pointer; NUL-terminated name.
        let r = unsafe { (lib.rados_ioctx_create)(cluster.rados, cpool.as_ptr(), &mut ioctx) };
        if r < 0 {
            return Err(RbdError::Pool {
                spec: shown,
                pool: pool.into(),
                message: if r == -libc::ENOENT {
                    "no such pool".into()
                } else {
                    ffi::strerror(r.into())
                },
            });
        }
        let pctx = Arc::new(PoolCtx {
            cluster: Arc::clone(&cluster),
            ioctx,
        });
        if let Some(ns) = namespace {
            let cns = cstr(ns)?;
            // SAFETY: a live context not yet shared with another thread.
            unsafe { (lib.rados_ioctx_set_namespace)(ioctx, cns.as_ptr()) };
        }
        let name = cstr(image)?;
        let img_err = |message: String| RbdError::Image {
            spec: shown.clone(),
            namespace: namespace.map(Into::into),
            image: image.into(),
            message,
        };
        let handle = open_image(&pctx, &name, spec.read_only).map_err(|r| {
            img_err(if r == -libc::ENOENT {
                "no such image".into()
            } else {
                ffi::strerror(r.into())
            })
        })?;
        let mut features = 0u64;
        // SAFETY: an open image; out pointer.
        let r = unsafe { (lib.rbd_get_features)(handle.image, &mut features) };
        if r < 0 {
            return Err(img_err(format!(
                "cannot read its features: {}",
                ffi::strerror(r.into())
            )));
        }
        if features & ffi::FEATURE_EXCLUSIVE_LOCK != 0 {
            let mut f = Vec::new();
            for (bit, n) in [
                (ffi::FEATURE_JOURNALING, "journaling"),
                (ffi::FEATURE_FAST_DIFF, "fast-diff"),
                (ffi::FEATURE_OBJECT_MAP, "object-map"),
                (ffi::FEATURE_EXCLUSIVE_LOCK, "exclusive-lock"),
            ] {
                if features & bit != 0 {
                    f.push(n);
                }
            }
            return Err(RbdError::ExclusiveLock {
                name: shown.trim_start_matches("rbd:").into(),
                spec: shown,
                features: f.join(" "),
            });
        }
        let bytes = image_size(&handle)
            .map_err(|r| img_err(format!("cannot read its size: {}", ffi::strerror(r.into()))))?;
        // Writable: hold the gateway lease (and refuse a key that cannot
        // fence a stalled peer) before serving a single write.
        let lease = if spec.read_only {
            None
        } else {
            Some(cluster.lease(pool)?)
        };
        let path = std::path::PathBuf::from(&shown);
        let extent = Extent::new(&path, bytes / SECTOR_SIZE as u64, spec)
            .map_err(|e| img_err(e.to_string()))?;
        tracing::info!(spec = %shown, fsid = cluster.fsid(), bytes, features, "RBD image opened");
        Ok(RbdDisk {
            pool: pctx,
            name,
            handle,
            read_only: spec.read_only,
            extent: Arc::new(extent),
            in_flight: Arc::new(AtomicU64::new(0)),
            handles: Arc::new(Mutex::new(Vec::new())),
            lease,
        })
    }

    /// The cluster's fsid.
    pub fn fsid(&self) -> &str {
        self.pool.cluster.fsid()
    }

    /// librbd requests in flight over every worker.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// rbd_open (or rbd_open_read_only) `name` in `pool`; Err(-errno).
pub(crate) fn open_image(
    pool: &Arc<PoolCtx>,
    name: &CString,
    read_only: bool,
) -> Result<ImageHandle, i32> {
    let lib = pool.cluster.lib;
    let mut image: Image = std::ptr::null_mut();
    let f = if read_only {
        lib.rbd_open_read_only
    } else {
        lib.rbd_open
    };
    // SAFETY: a live pool context; out pointer; NUL-terminated name; NULL
    // snapshot (the image head).
    let r = unsafe { f(pool.ioctx, name.as_ptr(), &mut image, std::ptr::null()) };
    if r < 0 {
        return Err(r);
    }
    Ok(ImageHandle {
        image,
        lib,
        _pool: Arc::clone(pool),
    })
}

fn image_size(h: &ImageHandle) -> Result<u64, i32> {
    let mut bytes = 0u64;
    // SAFETY: an open image; out pointer. librbd refreshes the header first
    // when a resize was announced on the image's watch.
    let r = unsafe { (h.lib.rbd_get_size)(h.image, &mut bytes) };
    if r < 0 {
        return Err(r);
    }
    Ok(bytes)
}

impl Bdev for RbdDisk {
    fn extent(&self) -> &Arc<Extent> {
        &self.extent
    }

    /// The smallest size any of the export's image handles knows: each
    /// handle learns of an `rbd resize` from its own watch notification,
    /// and librbd refuses I/O past the size a handle knows (EINVAL), so the
    /// export grows once every worker's handle has caught up (rbd_get_size
    /// refreshes a notified handle).
    fn store_sectors(&self) -> Option<io::Result<u64>> {
        Some({
            let mut bytes = image_size(&self.handle);
            let lib = self.pool.cluster.lib;
            for h in self
                .handles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                let mut b = 0u64;
                // SAFETY: a registered handle is open (a channel removes it
                // before closing it, under this lock); out pointer.
                let r = unsafe { (lib.rbd_get_size)(h.0, &mut b) };
                bytes = match (bytes, r) {
                    (Err(e), _) => Err(e),
                    (Ok(_), r) if r < 0 => Err(r),
                    (Ok(a), _) => Ok(a.min(b)),
                };
            }
            bytes
                .map(|b| b / SECTOR_SIZE as u64)
                .map_err(|r| io::Error::from_raw_os_error(-r))
        })
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            mem_align: 1,
            reads_zero: false,
        }
    }

    fn open_channel(&self, cx: &ChannelCx) -> io::Result<Chan> {
        Ok(Chan::boxed(channel::RbdChannel::open(self, cx)?))
    }

    fn store_status(&self) -> Option<super::StoreStatus> {
        Some(super::StoreStatus {
            cluster_fsid: Some(self.fsid().to_string()),
            in_flight: self.in_flight(),
            lease: self
                .lease
                .clone()
                .or_else(|| self.pool.cluster.lease_if_any())
                .map(|l| l.status()),
        })
    }
}
