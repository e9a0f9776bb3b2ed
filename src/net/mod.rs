//! Datapaths: move frames between a NIC and the one worker loop
//! ([`crate::worker`]), which runs the engine and the stores. They hold no
//! request logic of their own: each offers its frames through
//! [`crate::worker::FrameIo`].
//!
//! - [`xdp`]: AF_XDP sockets fed by an XDP program, one pinned worker per
//!   (interface, queue); stores reach the frames in UMEM directly.
//! - [`afpacket`]: portable fallback, one worker per interface, batched
//!   `recvmmsg`/`sendmmsg`, frames from a pool.
//! - [`socket`]: the raw AF_PACKET socket shared by the datapath and the
//!   initiator tools.
//!
//! Both datapaths take the same [`WorkerSpec`] and obey the same
//! [`Control`] messages.

pub(crate) mod afpacket;
pub(crate) mod ethtool;
// pub: the tools' initiator looks up its interface here.
pub mod iface;
pub(crate) mod netlink;
// pub: the tools' initiator and bench send through this socket.
pub mod socket;
// pub: `steer::queue_mac` (tests) and `DEFAULT_SPIN_US` (bench compare).
pub mod xdp;

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use tracing::info;

use crate::bdev::Bdev;
use crate::engine::{Export, Target};
use crate::stats::StatsCell;
use iface::IfaceInfo;

/// Messages from the control plane to a worker.
#[derive(Debug, Clone)]
pub enum Control {
    /// Stop taking frames, finish what is in flight (store requests and
    /// their replies) and return.
    Stop,
    /// Send an unsolicited Query Config reply for every export (after a
    /// resize or a config change).
    Announce,
    /// Send an unsolicited Query Config reply for these exports (shelf,
    /// slot) if this worker serves them (after an online resize).
    AnnounceExports(Vec<(u16, u8)>),
    /// Serve a new export set (live reconfiguration). The worker applies it
    /// at once: requests already in flight complete on the store they were
    /// given (a store that left the set closes when its last one is done;
    /// the others never wait), then it announces the exports named in it
    /// and answers on `done`.
    Reconfigure(Reconfig),
}

/// A worker's new export set.
#[derive(Debug, Clone)]
pub struct Reconfig {
    /// Exports to serve, in order.
    pub exports: Vec<Arc<Export>>,
    /// Their backing stores, in the same order.
    pub disks: Vec<Arc<dyn Bdev>>,
    /// Exports (shelf, slot) to announce once the set is in force.
    pub announce: Vec<(u16, u8)>,
    /// Told once the new set is in force, or why it could not be applied
    /// (the worker then keeps the old one).
    pub done: Sender<Result<(), String>>,
}

/// Everything a worker needs.
#[derive(Debug)]
pub struct WorkerSpec {
    /// Interface served.
    pub iface: IfaceInfo,
    /// Exports served on it.
    pub exports: Vec<Arc<Export>>,
    /// Their backing stores, in the same order.
    pub disks: Vec<Arc<dyn Bdev>>,
    /// Control channel.
    pub control: Receiver<Control>,
    /// Where counters go.
    pub stats: StatsCell,
    /// Core to pin the worker to.
    pub core: Option<usize>,
}

/// Make `engine` advertise and accept what `iface`'s MTU carries now,
/// capped by `room`, the largest frame (bytes) the worker's buffers hold:
/// a lowered MTU takes effect at once, a raised one up to that room. Both
/// datapaths call it at start and at every counter publication, so an admin
/// may change the MTU without a restart.
pub(crate) fn follow_mtu(engine: &mut Target, iface: &IfaceInfo, room: usize, queue: u32) {
    let mtu = iface.current_mtu().unwrap_or(iface.mtu);
    let cap = crate::wire::max_sectors_for_mtu(room.min(u32::MAX as usize) as u32);
    let port = &engine.ports()[0];
    if port.mtu != mtu || port.max_sectors > cap {
        engine.set_port_mtu(0, mtu, cap);
        info!(iface = %iface.name, queue, mtu,
              max_sectors = engine.ports()[0].max_sectors, "MTU now in effect");
    }
}

/// Wait until `fd` is readable or `timeout` passes; true when readable (an
/// interrupted wait is "not yet").
pub(crate) fn poll_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, on this frame for the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}
