//! The process's one connection to a Ceph cluster, and keeping librados's
//! threads off the workers' cores.
#![allow(unsafe_code)]

use std::ffi::c_char;
use std::io;
use std::sync::{Arc, Mutex};

use super::error::{cstr, RbdError};
use super::ffi::{self, Rados};
use super::lease::Lease;
use super::RbdOptions;

/// The process's connection to a cluster (librados handle): shared by every
/// `rbd:` export, never shut down (librados threads live for the process).
#[derive(Debug)]
pub struct Cluster {
    pub(crate) rados: Rados,
    fsid: String,
    pub(crate) lib: &'static ffi::Lib,
    /// Client id (for messages).
    id: String,
    /// The gateway lease, started by the first writable export.
    lease: Mutex<Option<Arc<Lease>>>,
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
            id: id.into(),
            lease: Mutex::new(None),
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
            // Writes leave from the request frame without a copy: the
            // frame stays the request's until librbd completes it (the
            // channel contract), which is what librbd needs to borrow it.
            ("rbd_disable_zero_copy_writes", "false"),
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

    /// The gateway lease, heartbeating into `pool` from now on: started
    /// (blocklist capability probed) by the first writable export.
    pub(crate) fn lease(&self, pool: &str) -> Result<Arc<Lease>, RbdError> {
        let mut l = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let lease = match &*l {
            Some(x) => Arc::clone(x),
            None => {
                let x = Lease::start(self.lib, self.rados, &self.id)?;
                *l = Some(Arc::clone(&x));
                x
            }
        };
        drop(l);
        lease.add_pool(pool)?;
        Ok(lease)
    }

    /// The lease, if a writable export started one.
    pub(crate) fn lease_if_any(&self) -> Option<Arc<Lease>> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
