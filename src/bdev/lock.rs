//! One writer per byte range of a backing file: an open-file-description
//! lock (`F_OFD_SETLK`, advisory) over the exported range of a writable
//! file export.
//!
//! Why: two xblade processes exporting one writable file (or device) to
//! initiators that fail over between them lose acknowledged data: a request
//! one of them received before it stalled lands after the initiator has
//! completed a newer write through the other (AoE has no sequence numbers
//! and no fencing; see docs/fencing.md). A file has no fencing primitive,
//! so the second writer is refused. The lock is on the exported byte range
//! only, so exports of disjoint slices of one file still coexist, and
//! read-only exports take none (they may share a file with anything).
//!
//! OFD locks rather than `flock`: they cover a range, they work on block
//! devices and over NFS, and they go with the descriptor (closed at exit or
//! exec, held by nothing else). Neither `F_OFD_GETLK` nor `/proc/locks` names
//! an OFD lock's holder, so the message takes the pid from `/proc/*/fdinfo`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why a write lock on a backing file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds a lock on the range.
    #[error("{path} (bytes {start}..{}) is already exported writable by {holder}: two writers on one file lose acknowledged data when one of them stalls (docs/fencing.md); stop the other export, or export read-only", if *end == u64::MAX { "EOF".to_string() } else { end.to_string() })]
    Held {
        /// The backing file.
        path: String,
        /// First byte of the export.
        start: u64,
        /// End of the export (exclusive).
        end: u64,
        /// "process PID (COMMAND)" or "another process".
        holder: String,
    },
    /// fcntl failed for another reason.
    #[error("cannot lock {path} for writing: {source}")]
    Fcntl {
        /// The backing file.
        path: String,
        /// Cause.
        source: io::Error,
    },
}

/// Take a write lock on bytes `start..end` of `file` (opened for writing;
/// `end` u64::MAX: to the end of the file, an export that grows with it),
/// held until the descriptor closes. A lock this very process already holds
/// (a reload opening an export again before closing the old one) is not a
/// conflict.
pub fn lock_range(file: &File, path: &Path, start: u64, end: u64) -> Result<(), LockError> {
    let shown = path.display().to_string();
    let mut fl = flock_for(libc::F_WRLCK, start, end);
    // SAFETY: a live descriptor and a valid struct flock for the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
        return Err(LockError::Fcntl {
            path: shown,
            source: e,
        });
    }
    let holders = file
        .metadata()
        .map(|m| lock_holders(m.dev(), m.ino()))
        .unwrap_or_default();
    let me = std::process::id() as i32;
    if !holders.is_empty() && holders.iter().all(|&p| p == me) {
        tracing::debug!(path = %shown, "backing file already locked by this process (reload)");
        return Ok(());
    }
    let holder = holders
        .iter()
        .find(|&&p| p != me)
        .map(|&p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            format!("process {p} ({})", comm.trim())
        })
        .unwrap_or_else(|| "another process".into());
    Err(LockError::Held {
        path: shown,
        start,
        end,
        holder,
    })
}

fn flock_for(kind: i32, start: u64, end: u64) -> libc::flock {
    // SAFETY: struct flock is plain data; all-zero is valid (l_pid must be 0
    // for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    // 0: to the end of the file, however far it grows.
    fl.l_len = if end == u64::MAX {
        0
    } else {
        end.saturating_sub(start) as libc::off_t
    };
    fl
}

/// Pids holding write locks on inode `ino` of device `dev`. `/proc/locks`
/// shows OFD locks with pid -1, but each holder's `/proc/PID/fdinfo/FD`
/// lists the locks of that descriptor (`lock:\t1: OFDLCK ADVISORY WRITE -1
/// fe:00:5678 0 4095`): scanned only on this error path.
fn lock_holders(dev: u64, ino: u64) -> Vec<i32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_to_string(fd.path())
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("lock:") && l.contains(" WRITE ") && l.contains(&want))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn second_writer_refused_disjoint_range_and_own_process_allowed() {
        let dir = std::env::temp_dir().join(format!("xf-lock-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 8192]).unwrap();
        let a = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        lock_range(&a, &dir, 0, 4096).unwrap();
        // Same process, new descriptor (as a reload does): allowed.
        let b = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        lock_range(&b, &dir, 0, 4096).unwrap();
        // Disjoint slice: allowed.
        let c = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        lock_range(&c, &dir, 4096, 8192).unwrap();
        std::fs::remove_file(&dir).unwrap();
    }
}
