//! Why an `rbd:` export could not be opened: each error names the spec,
//! pool, image, client id or configuration at fault.

use std::ffi::CString;

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
    /// The client's key may not blocklist: a stalled gateway could not be
    /// fenced, so writable exports are refused.
    #[error("client.{id} may not blocklist other clients ({message}): gateways exporting an image together fence a stalled one with `osd blocklist`, without which a gateway waking from a stall could overwrite newer data; give the key `mon 'profile rbd'` (ceph auth caps client.{id} mon 'profile rbd' osd 'profile rbd'), or export read-only")]
    NoBlocklist {
        /// Client id.
        id: String,
        /// What the monitor answered.
        message: String,
    },
}

pub(crate) fn cstr(s: &str) -> Result<CString, RbdError> {
    CString::new(s).map_err(|_| RbdError::BadName(s.into()))
}
