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
pub mod ffi;

use std::ffi::{c_char, CString};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{export_sectors, Bdev, Channel, ChannelCx, DiskSpec, Geometry};
use crate::wire::SECTOR_SIZE;
use ffi::{Image, Ioctx, Rados};

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

/// Why an `rbd:` export could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RbdError {
    /// librbd/librados missing or too old.
    #[error("{0}")]
    Library(String),
    /// A name with a NUL byte.
    #[error("bad name {0:?} (NUL byte)")]
    BadName(String),
    /// The Ceph configuration could not be read.
    #[error("cannot read the Ceph configuration {path}: {message} (set CEPH_CONF or create /etc/ceph/ceph.conf)")]
    Config {
        /// CEPH_CONF or the default path.
        path: String,
        /// Cause.
        message: String,
    },
    /// An option librados refused.
    #[error("Ceph option {name}={value} refused: {message}")]
    Option {
        /// Option.
        name: String,
        /// Value.
        value: String,
        /// Cause.
        message: String,
    },
    /// No cluster answered.
    #[error("cannot connect to the Ceph cluster of {conf} as client.{id}: {message} (after at most {timeout_secs} s)")]
    Connect {
        /// Configuration used.
        conf: String,
        /// Client id.
        id: String,
        /// Cause.
        message: String,
        /// The connect bound.
        timeout_secs: u64,
    },
    /// The pool is missing or not usable.
    #[error("{spec}: Ceph pool {pool:?}: {message}")]
    Pool {
        /// The export's spec.
        spec: String,
        /// Pool name.
        pool: String,
        /// Cause.
        message: String,
    },
    /// The image is missing or not usable.
    #[error("{spec}: RBD image {image:?}{}: {message}", namespace.as_ref().map(|n| format!(" in namespace {n:?}")).unwrap_or_default())]
    Image {
        /// The export's spec.
        spec: String,
        /// Namespace.
        namespace: Option<String>,
        /// Image name.
        image: String,
        /// Cause.
        message: String,
    },
    /// Exclusive-lock (or a feature depending on it) is enabled.
    #[error("{spec}: the image has {features} enabled: exclusive-lock lets one client write at a time, so gateways exporting it together would pass the lock back and forth on every write; disable it with: rbd feature disable {name} {features}")]
    ExclusiveLock {
        /// The export's spec.
        spec: String,
        /// `POOL/[NS/]IMAGE` as the rbd command takes it.
        name: String,
        /// Features to disable, dependents first.
        features: String,
    },
}

fn cstr(s: &str) -> Result<CString, RbdError> {
    CString::new(s).map_err(|_| RbdError::BadName(s.into()))
}

/// The process's connection to a cluster (librados handle): shared by every
/// `rbd:` export, never shut down (librados threads live for the process).
#[derive(Debug)]
pub struct Cluster {
    rados: Rados,
    fsid: String,
    lib: &'static ffi::Lib,
}

// SAFETY: a rados_t is thread-safe once connected (librados's documented
// model: one handle shared by every thread of a client).
unsafe impl Send for Cluster {}
// SAFETY: as for Send.
unsafe impl Sync for Cluster {}

/// Cores workers are pinned to (kept free of librados's threads).
static WORKER_CORES: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// The connections made, by options (one in practice).
static CLUSTERS: Mutex<Vec<(RbdOptions, Arc<Cluster>)>> = Mutex::new(Vec::new());

/// Tell the connection code which cores workers will be pinned to (the
/// server's `--cores`), before the first `rbd:` export opens: librados
/// starts its threads from the connecting thread and they inherit its CPU
/// mask, so the connection is made from a thread allowed only the other
/// cores (when some are left).
pub fn set_worker_cores(cores: &[usize]) {
    *WORKER_CORES.lock().unwrap_or_else(|p| p.into_inner()) = cores.to_vec();
}

impl Cluster {
    /// The connection for `opts`, made on first use.
    pub fn get(opts: &RbdOptions) -> Result<Arc<Cluster>, RbdError> {
        let mut all = CLUSTERS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = all.iter().find(|(o, _)| o == opts) {
            return Ok(Arc::clone(c));
        }
        let lib = ffi::lib().map_err(RbdError::Library)?;
        let c = off_workers(|| Cluster::connect(lib, opts)).unwrap_or_else(|e| {
            Err(RbdError::Connect {
                conf: conf_path(),
                id: opts.client_id().into(),
                message: e,
                timeout_secs: opts.timeout.as_secs(),
            })
        })?;
        let c = Arc::new(c);
        all.push((opts.clone(), Arc::clone(&c)));
        Ok(c)
    }

    fn connect(lib: &'static ffi::Lib, opts: &RbdOptions) -> Result<Cluster, RbdError> {
        let id = opts.client_id();
        let cid = cstr(id)?;
        let mut rados: Rados = std::ptr::null_mut();
        // SAFETY: `rados` is an out pointer; `cid` is NUL-terminated.
        let r = unsafe { (lib.rados_create)(&mut rados, cid.as_ptr()) };
        if r < 0 {
            return Err(RbdError::Library(format!(
                "rados_create failed: {}",
                ffi::strerror(r.into())
            )));
        }
        let mut c = Cluster {
            rados,
            fsid: String::new(),
            lib,
        };
        // From here on a failure shuts the handle down (Drop).
        // SAFETY: NULL path: librados searches CEPH_CONF, then the default
        // locations (/etc/ceph/ceph.conf), as every Ceph client does.
        let r = unsafe { (lib.rados_conf_read_file)(c.rados, std::ptr::null()) };
        if r < 0 {
            return Err(RbdError::Config {
                path: conf_path(),
                message: ffi::strerror(r.into()),
            });
        }
        // SAFETY: NULL: the CEPH_ARGS variable, as the Ceph tools do.
        unsafe { (lib.rados_conf_parse_env)(c.rados, std::ptr::null()) };
        let t = opts.timeout.as_secs().max(1).to_string();
        for (k, v) in [
            // Acknowledged means on the OSDs.
            ("rbd_cache", "false"),
            ("rados_osd_op_timeout", t.as_str()),
            ("rados_mon_op_timeout", t.as_str()),
            ("client_mount_timeout", t.as_str()),
        ] {
            let (ck, cv) = (cstr(k)?, cstr(v)?);
            // SAFETY: a created, unconnected handle; NUL-terminated strings.
            let r = unsafe { (lib.rados_conf_set)(c.rados, ck.as_ptr(), cv.as_ptr()) };
            if r < 0 {
                return Err(RbdError::Option {
                    name: k.into(),
                    value: v.into(),
                    message: ffi::strerror(r.into()),
                });
            }
        }
        // SAFETY: a configured handle.
        let r = unsafe { (lib.rados_connect)(c.rados) };
        if r < 0 {
            let why = ffi::strerror(r.into());
            return Err(RbdError::Connect {
                conf: conf_path(),
                id: id.into(),
                message: match -r {
                    libc::ENOENT => format!(
                        "{why}: no keyring for client.{id} (the configuration's keyring option, or /etc/ceph/ceph.client.{id}.keyring)"
                    ),
                    libc::EACCES | libc::EPERM => {
                        format!("{why}: the monitors refused client.{id}'s key")
                    }
                    _ => why,
                },
                timeout_secs: opts.timeout.as_secs(),
            });
        }
        let mut buf = [0 as c_char; 64];
        // SAFETY: a connected handle; `buf` holds `len` bytes.
        let n = unsafe { (lib.rados_cluster_fsid)(c.rados, buf.as_mut_ptr(), buf.len()) };
        let fsid = if n > 0 {
            // SAFETY: librados wrote a NUL-terminated string into `buf`.
            unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        tracing::info!(id, %fsid, timeout_secs = opts.timeout.as_secs(), "connected to the Ceph cluster");
        c.fsid = fsid;
        Ok(c)
    }

    /// The cluster's fsid.
    pub fn fsid(&self) -> &str {
        &self.fsid
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: created by rados_create; nothing uses it any more (every
        // pool context holds an Arc of the cluster).
        unsafe { (self.lib.rados_shutdown)(self.rados) }
    }
}

/// Run `f` on a short-lived thread allowed only the cores no worker is
/// pinned to: librados and librbd start threads (messenger, timers, the
/// image's work queues) from whichever thread connects or opens an image,
/// and those inherit its CPU mask. Err: the thread could not run.
pub(crate) fn off_workers<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let avoid = WORKER_CORES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("xblade-rados".into())
            .spawn_scoped(s, move || {
                keep_off(&avoid);
                f()
            })
            .map_err(|e| format!("cannot start a thread for librados: {e}"))?
            .join()
            .map_err(|_| "librados panicked".to_string())
    })
}

/// Where librados looks for its configuration (for messages).
fn conf_path() -> String {
    std::env::var("CEPH_CONF").unwrap_or_else(|_| "/etc/ceph/ceph.conf".into())
}

/// Limit the calling thread to the allowed cores that are not in `avoid`
/// (unchanged when that leaves none).
fn keep_off(avoid: &[usize]) {
    if avoid.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return;
    }
    let mut left = 0;
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            if avoid.contains(&cpu) {
                // SAFETY: as above.
                unsafe { libc::CPU_CLR(cpu, &mut set) };
            } else {
                left += 1;
            }
        }
    }
    if left == 0 {
        tracing::warn!(
            ?avoid,
            "every core runs a worker: librados threads share them"
        );
        return;
    }
    // SAFETY: as for sched_getaffinity.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot keep librados off the workers' cores");
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
    /// Byte offset of the export in the image.
    base: u64,
    sectors: Arc<AtomicU64>,
    fixed_length: bool,
    /// librbd requests in flight over every channel.
    in_flight: Arc<AtomicU64>,
    /// The channels' image handles (see [`RbdDisk::probe_sectors`]).
    handles: Arc<Mutex<Vec<SharedImage>>>,
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
        let path = std::path::PathBuf::from(&shown);
        let sectors = export_sectors(
            &path,
            bytes / SECTOR_SIZE as u64,
            spec.offset_sectors,
            spec.length_sectors,
        )
        .map_err(|e| img_err(e.to_string()))?;
        tracing::info!(spec = %shown, fsid = cluster.fsid(), bytes, features, "RBD image opened");
        Ok(RbdDisk {
            pool: pctx,
            name,
            handle,
            read_only: spec.read_only,
            base: spec.offset_sectors * SECTOR_SIZE as u64,
            sectors: Arc::new(AtomicU64::new(sectors)),
            fixed_length: spec.length_sectors.is_some(),
            in_flight: Arc::new(AtomicU64::new(0)),
            handles: Arc::new(Mutex::new(Vec::new())),
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
    fn sectors(&self) -> u64 {
        self.sectors.load(Ordering::Acquire)
    }

    /// The smallest size any of the export's image handles knows: each
    /// handle learns of an `rbd resize` from its own watch notification,
    /// and librbd refuses I/O past the size a handle knows (EINVAL), so the
    /// export grows once every worker's handle has caught up (rbd_get_size
    /// refreshes a notified handle).
    fn probe_sectors(&self) -> Option<io::Result<u64>> {
        (!self.fixed_length).then(|| {
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
                .map(|b| (b / SECTOR_SIZE as u64).saturating_sub(self.base / SECTOR_SIZE as u64))
                .map_err(|r| io::Error::from_raw_os_error(-r))
        })
    }

    fn grow(&self, sectors: u64) -> u64 {
        self.sectors
            .fetch_max(sectors, Ordering::AcqRel)
            .max(sectors)
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            mem_align: 1,
            reads_zero: false,
            asynchronous: true,
        }
    }

    fn open_channel(&self, cx: &ChannelCx) -> io::Result<Box<dyn Channel>> {
        Ok(Box::new(channel::RbdChannel::open(self, cx)?))
    }

    fn store_status(&self) -> Option<super::StoreStatus> {
        Some(super::StoreStatus {
            cluster_fsid: self.fsid().to_string(),
            in_flight: self.in_flight(),
        })
    }
}
