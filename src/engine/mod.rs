//! The sans-IO AoE target engine.
//!
//! The worker loop hands [`Target::handle`] a received frame in a writable buffer;
//! the engine parses it, applies AoE r11 semantics against the export's
//! state and answers with an [`Action`]:
//! - [`Action::Reply`]: a complete reply is in the buffer (built in place).
//! - [`Action::Disk`]: the reply header is in place and a disk operation
//!   ([`DiskIo`]) must run first; the worker then calls [`Target::complete`].
//! - [`Action::Drop`]: nothing to send (counted by reason).
//!
//! The engine knows nothing of sockets or files, never allocates on the ATA
//! path, and never produces a [`DiskIo`] outside its export: every range is
//! checked against the snapshot's capacity before an action is returned.
//!
//! Where to look: the ATA READ/WRITE path is [`ata`]; Query Config, Mac Mask
//! and Reserve/Release are in [`control`].
#![forbid(unsafe_code)]

pub(crate) mod ata;
pub(crate) mod control;
pub(crate) mod export;
pub(crate) mod reflect;
pub(crate) mod stats;

use std::sync::Arc;

use crate::wire::{aoe, ethernet, MacAddr, ETHERTYPE_AOE, MIN_FRAME_LEN};

pub use export::{Export, ExportInfo, ExportState, StateCache};
pub use stats::{DropReason, EngineStats};

/// Firmware version advertised in Query Config replies.
pub const FIRMWARE_VERSION: u16 = 0x0001;

/// An interface (or one queue of it) as the engine sees it.
#[derive(Debug, Clone)]
pub struct Port {
    /// Our MAC on this interface (or this queue of it): replies to
    /// broadcast requests and announcements leave with it as source.
    pub mac: MacAddr,
    /// Every target MAC of the interface, `mac` included (one per queue
    /// with per-queue steering, else just `mac`). Requests to any of them
    /// are accepted, and answered from the address they were sent to; a
    /// broadcast Query Config is answered once from each, so an initiator
    /// learns every path whichever queue the broadcast arrived on.
    pub macs: Vec<MacAddr>,
    /// Interface MTU.
    pub mtu: u32,
    /// Sectors per ATA request advertised and accepted on this port:
    /// `floor((mtu - 36) / 512)`, or less if the datapath cannot carry more.
    pub max_sectors: u8,
    /// Indices into the engine's exports of those served on this port.
    pub exports: Vec<usize>,
}

impl Port {
    /// A port advertising what its MTU allows.
    pub fn new(mac: MacAddr, mtu: u32, exports: Vec<usize>) -> Port {
        Port {
            mac,
            macs: vec![mac],
            mtu,
            max_sectors: crate::wire::max_sectors_for_mtu(mtu),
            exports,
        }
    }

    /// The same port answering from `mac`, one of the interface's target
    /// MACs `macs` (it is added to them if missing).
    pub fn with_macs(mut self, mac: MacAddr, mut macs: Vec<MacAddr>) -> Port {
        if !macs.contains(&mac) {
            macs.insert(0, mac);
        }
        self.mac = mac;
        self.macs = macs;
        self
    }

    /// Whether `dst` is one of this port's addresses.
    pub fn is_ours(&self, dst: MacAddr) -> bool {
        dst == self.mac || self.macs.contains(&dst)
    }

    /// Source address of a reply to a request sent to `dst`: that address
    /// when it is ours, else (broadcast) the port's.
    pub fn reply_from(&self, dst: MacAddr) -> MacAddr {
        if dst.is_multicast() {
            self.mac
        } else {
            dst
        }
    }

    /// Largest frame (without FCS) this port can send.
    pub fn max_frame(&self) -> usize {
        self.mtu as usize + ethernet::HEADER_LEN
    }
}

/// Kind of disk operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    /// Read `len` bytes into frame bytes `36..36 + len`.
    Read,
    /// Write frame bytes `36..36 + len`.
    Write,
    /// Make every acknowledged write durable (fdatasync).
    Flush,
}

/// A disk operation the datapath must run before it can reply. Offsets are
/// relative to the export's first byte and always inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskIo {
    /// Index of the export in the engine.
    pub export: usize,
    /// What to do.
    pub op: DiskOp,
    /// Byte offset inside the export (multiple of 512).
    pub offset: u64,
    /// Byte count (multiple of 512; 0 for Flush).
    pub len: u32,
}

/// What the datapath must do with a frame after [`Target::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the first `len` bytes of the buffer. When `more` is set, call
    /// [`Target::next_reply`] for further replies (a wildcard request
    /// answered by several exports).
    Reply {
        /// Reply length, at least 60.
        len: usize,
        /// Further replies are pending.
        more: bool,
    },
    /// Run the disk operation, then [`Target::complete`] builds the reply.
    Disk(DiskIo),
    /// Send nothing.
    Drop(DropReason),
}

/// A control request (QC, Mac Mask, Reserve, or an error reply) copied out
/// of the frame so several replies can be built from it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    port: usize,
    /// Position in the port's export list of the next export to try.
    cursor: usize,
    /// Bytes valid in `Target::scratch`.
    len: usize,
    /// The request was addressed with a wildcard matching several exports.
    ambiguous: bool,
    /// A broadcast Query Config: each export answers once from each of the
    /// port's MACs; `mac` is the index of the next one.
    fan_out: bool,
    mac: usize,
}

/// Most request bytes a control command can use: a Mac Mask edit with 255
/// directives (24 + 4 + 8 * 255).
pub const CONTROL_SCRATCH: usize = 24 + 4 + 8 * 255;

/// The per-worker engine. Each datapath worker owns one; exports are shared.
#[derive(Debug)]
pub struct Target {
    ports: Vec<Port>,
    exports: Vec<Arc<Export>>,
    /// The exports' state snapshots, cached for the ATA path.
    states: Vec<StateCache>,
    scratch: Box<[u8; CONTROL_SCRATCH]>,
    pending: Option<Pending>,
    /// Why the last control request produced no reply.
    last_drop: DropReason,
    /// Counters (published by the datapath).
    pub stats: EngineStats,
}

impl Target {
    /// An engine serving `exports` on `ports`. Port export indices must be
    /// valid indices into `exports`.
    pub fn new(ports: Vec<Port>, exports: Vec<Arc<Export>>) -> Target {
        for p in &ports {
            assert!(
                p.exports.iter().all(|&i| i < exports.len()),
                "port names an export that does not exist"
            );
        }
        Target {
            ports,
            states: exports.iter().map(Export::state_cache).collect(),
            exports,
            scratch: Box::new([0u8; CONTROL_SCRATCH]),
            pending: None,
            last_drop: DropReason::Truncated,
            stats: EngineStats::default(),
        }
    }

    /// The ports.
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Apply a new MTU to `port`: sectors per request follow it, capped at
    /// `cap` (what the datapath's buffers can carry).
    pub fn set_port_mtu(&mut self, port: usize, mtu: u32, cap: u8) {
        if let Some(p) = self.ports.get_mut(port) {
            p.mtu = mtu;
            p.max_sectors = crate::wire::max_sectors_for_mtu(mtu).min(cap);
        }
    }

    /// The exports.
    pub fn exports(&self) -> &[Arc<Export>] {
        &self.exports
    }

    /// Serve `exports` from now on, every one on every port (a live
    /// reconfiguration; the worker calls it between batches, with disk
    /// operations possibly in flight: the worker keeps each one's store by
    /// its own slot, not by the [`DiskIo`]'s export index, and
    /// [`Target::complete`] does not look at the export). Counters carry on.
    pub fn set_exports(&mut self, exports: Vec<Arc<Export>>) {
        for p in &mut self.ports {
            p.exports = (0..exports.len()).collect();
        }
        self.states = exports.iter().map(Export::state_cache).collect();
        self.exports = exports;
        self.pending = None;
    }

    /// Handle one received frame.
    ///
    /// `frame` is the writable buffer holding the request at offset 0; its
    /// length is the room available for the reply (at least 60 bytes, and
    /// `36 + 512 * max_sectors` for reads on single-buffer datapaths).
    /// `frame_len` is how many bytes were received; it may exceed
    /// `frame.len()` on multi-buffer datapaths, whose later fragments hold
    /// only write data.
    pub fn handle(&mut self, port: usize, frame: &mut [u8], frame_len: usize) -> Action {
        self.stats.frames_in += 1;
        self.pending = None;
        let avail = frame_len.min(frame.len());
        if avail < ethernet::HEADER_LEN + aoe::HEADER_LEN || frame.len() < MIN_FRAME_LEN {
            return self.drop(DropReason::Truncated);
        }
        let eth = ethernet::Frame::new_unchecked(&frame[..avail]);
        if eth.ethertype() != ETHERTYPE_AOE {
            return self.drop(DropReason::NotAoe);
        }
        let dst = eth.dst();
        let src = eth.src();
        let Some(p) = self.ports.get(port) else {
            return self.drop(DropReason::NotForUs);
        };
        if !dst.is_broadcast() && !p.is_ours(dst) {
            return self.drop(DropReason::NotForUs);
        }
        let hdr = aoe::Packet::new_unchecked(&frame[ethernet::HEADER_LEN..avail]);
        if hdr.is_response() {
            return self.drop(DropReason::Response);
        }
        let (major, minor) = (hdr.major(), hdr.minor());
        let mut first = None;
        let mut matching = 0usize;
        for (pos, &e) in p.exports.iter().enumerate() {
            if self.exports[e].matches(major, minor) {
                matching += 1;
                if first.is_none() {
                    first = Some(pos);
                }
            }
        }
        let Some(first) = first else {
            return self.drop(DropReason::ForeignAddress);
        };
        if hdr.version() == aoe::VERSION && hdr.command() == aoe::Command::Ata {
            if matching > 1 {
                return self.drop(DropReason::AmbiguousWildcard);
            }
            let e = p.exports[first];
            let from = p.reply_from(dst);
            return ata::handle(self, port, e, from, src, frame, frame_len);
        }
        // Control path (and protocol errors): copy the request so that each
        // matching export can build its own reply into the output buffer.
        let fan_out = dst.is_broadcast()
            && p.macs.len() > 1
            && hdr.version() == aoe::VERSION
            && hdr.command() == aoe::Command::QueryConfig;
        let n = avail.min(CONTROL_SCRATCH);
        self.scratch[..n].copy_from_slice(&frame[..n]);
        self.pending = Some(Pending {
            port,
            cursor: first,
            len: n,
            ambiguous: matching > 1,
            fan_out,
            mac: 0,
        });
        match self.next_reply(frame) {
            Some((len, more)) => Action::Reply { len, more },
            None => Action::Drop(self.last_drop),
        }
    }

    /// Build the next pending control reply into `out`; `None` when there is
    /// no further reply. The bool says whether another may follow.
    pub fn next_reply(&mut self, out: &mut [u8]) -> Option<(usize, bool)> {
        while let Some(pend) = self.pending.take() {
            let req = &self.scratch[..pend.len];
            let hdr = aoe::Packet::new_unchecked(&req[ethernet::HEADER_LEN..]);
            let (major, minor) = (hdr.major(), hdr.minor());
            let port = &self.ports[pend.port];
            let exports = &self.exports;
            let find = |from: usize| {
                (from..port.exports.len()).find(|&i| exports[port.exports[i]].matches(major, minor))
            };
            let pos = find(pend.cursor)?;
            let (from, more_macs) = if pend.fan_out {
                (port.macs[pend.mac], pend.mac + 1 < port.macs.len())
            } else {
                let dst = ethernet::Frame::new_unchecked(req).dst();
                (port.reply_from(dst), false)
            };
            let next = find(pos + 1);
            if more_macs {
                self.pending = Some(Pending {
                    cursor: pos,
                    mac: pend.mac + 1,
                    ..pend
                });
            } else if let Some(cursor) = next {
                self.pending = Some(Pending {
                    cursor,
                    mac: 0,
                    ..pend
                });
            }
            let more = more_macs || next.is_some();
            let export = &self.exports[port.exports[pos]];
            match control::handle(
                &mut self.stats,
                req,
                port,
                from,
                export,
                pend.ambiguous,
                out,
            ) {
                Ok(len) => {
                    self.stats.replies += 1;
                    return Some((len, more));
                }
                Err(reason) => {
                    self.stats.drop(reason);
                    self.last_drop = reason;
                }
            }
        }
        None
    }

    fn drop(&mut self, r: DropReason) -> Action {
        self.stats.drop(r);
        Action::Drop(r)
    }
}

/// Write a reply's Ethernet and AoE headers over `out[..24]`: to `dst`, from
/// `from` (one of the port's MACs), R set, E set with `error`, our real shelf.slot (never the
/// wildcard the request may have used), the request's tag.
pub(crate) fn emit_reply_header(
    out: &mut [u8],
    from: MacAddr,
    dst: MacAddr,
    info: &ExportInfo,
    command: aoe::Command,
    tag: [u8; 4],
    error: Option<aoe::ErrorCode>,
) {
    ethernet::Repr {
        dst,
        src: from,
        ethertype: ETHERTYPE_AOE,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut out[..]));
    aoe::Repr {
        version: aoe::VERSION,
        flags: aoe::FLAG_RESPONSE | if error.is_some() { aoe::FLAG_ERROR } else { 0 },
        error: error.map_or(0, |e| e as u8),
        major: info.shelf,
        minor: info.slot,
        command,
        tag,
    }
    .emit(&mut aoe::Packet::new_unchecked(
        &mut out[ethernet::HEADER_LEN..],
    ));
}

#[cfg(test)]
mod tests;
