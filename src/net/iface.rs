//! Interface facts: index, MAC, MTU, rx queue count.

use std::ffi::CString;
use std::fs;

use crate::wire::MacAddr;

/// What the datapaths need to know about a network interface.
#[derive(Debug, Clone)]
pub struct IfaceInfo {
    /// Name.
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// Hardware address.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
}

/// Errors looking up an interface.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No such interface in this network namespace.
    #[error("unknown network interface {0:?} (not found in this network namespace)")]
    Unknown(String),
    /// Sysfs could not be read.
    #[error("cannot read {path}")]
    Sysfs {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn sysfs(name: &str, attr: &str) -> Result<String, IfaceError> {
    let path = format!("/sys/class/net/{name}/{attr}");
    fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| IfaceError::Sysfs { path, source })
}

impl IfaceInfo {
    /// Look up `name`.
    pub fn lookup(name: &str) -> Result<IfaceInfo, IfaceError> {
        let c = CString::new(name).map_err(|_| IfaceError::Unknown(name.into()))?;
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(IfaceError::Unknown(name.into()));
        }
        let mac = sysfs(name, "address")?
            .parse()
            .map_err(|_| IfaceError::Unknown(name.into()))?;
        let mtu = sysfs(name, "mtu")?
            .parse()
            .map_err(|_| IfaceError::Unknown(name.into()))?;
        Ok(IfaceInfo {
            name: name.into(),
            index,
            mac,
            mtu,
        })
    }

    /// Re-read the MTU (it may change while we run).
    pub fn current_mtu(&self) -> Option<u32> {
        sysfs(&self.name, "mtu").ok()?.parse().ok()
    }

    /// Number of rx queues the interface exposes.
    pub fn rx_queues(&self) -> u32 {
        fs::read_dir(format!("/sys/class/net/{}/queues", self.name))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1)
    }
}
