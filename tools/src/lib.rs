//! xblade's initiator side, kept out of the daemon so that the installed
//! target links none of the benchmark's crates (plotters, indicatif,
//! hdrhistogram, clap_mangen):
//! - [`initiator`]: the AoE client of the integration tests and of
//!   `xblade bench`, and the conformance check list (`xblade conformance`);
//! - [`bench`]: `xblade bench` and `xblade bench compare`;
//! - [`man`]: the manual pages of xblade and xblade-bench (packaging).
//!
//! The binary `xblade-bench` serves `xblade bench ...` and
//! `xblade conformance ...`: the daemon runs it, found beside itself.

pub mod bench;
pub mod initiator;
pub mod man;

// The paths these modules were written with inside the daemon crate: the
// protocol crate as `wire`, and the daemon's AF_PACKET socket and interface
// look-up (`net::socket`, `net::iface`) that the initiator sends through.
pub(crate) use aoe_wire as wire;
pub(crate) use xblade::net;

use std::path::PathBuf;

/// The daemon's binary name: `bench compare` runs the targets it measures
/// from the `xblade` installed or built beside this binary.
pub const DAEMON_BIN: &str = "xblade";

/// The `xblade` binary beside this one (`target/release/`, `/usr/sbin/`):
/// the one `bench compare` measures, of the same build as the bench.
pub fn daemon_beside() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().map_err(|e| {
        anyhow::anyhow!("locating this binary (to find {DAEMON_BIN} beside it): {e}")
    })?;
    let p = me.with_file_name(DAEMON_BIN);
    if !p.is_file() {
        anyhow::bail!(
            "no {} beside {} (bench compare runs the target from there: build the workspace, or install the xblade package)",
            p.display(),
            me.display()
        );
    }
    Ok(p)
}
