//! A synchronous AoE initiator over a raw AF_PACKET socket: discovery,
//! IDENTIFY, READ/WRITE, the control commands (Query Config, Mac Mask,
//! Reserve/Release) and hand-made frames. The integration tests drive the
//! real target with it and operators can manage exports with it. Its
//! pipelined I/O ([`Client::run_window`], in `pipelined.rs`) runs on the
//! window engine `xblade bench` uses too ([`super::window`]); replies are
//! read into the types of [`super::reply`].
//!
//! Behaviour follows the Linux initiator where it matters to a target
//! (docs/aoe-protocol.md §8):
//! - tags come from a per-process counter with bit 31 clear (the set half
//!   belongs to userland tools in Linux's scheme, and we want our replies to
//!   look like the ones Linux gets);
//! - a reply is matched by tag **and** source MAC (and must be addressed to
//!   us); anything else arriving on the socket is ignored;
//! - on timeout a request is retransmitted with a **new** tag, up to
//!   [`Client::set_retries`] times. A late reply to an earlier tag of the
//!   same request is still accepted, since the request bytes were identical.
//!
//! Requests are sent unpadded, exactly as the builders in
//! [`super::request`] produce them (32-byte QC, 36-byte IDENTIFY), because
//! that is what Linux sends on virtual links and a target must accept it.
//!
//! Failures are typed ([`ClientError`]): an AoE error flag becomes
//! [`ClientError::AoeError`], an ATA status with any of BSY/DF/DRQ/ERR
//! becomes [`ClientError::AtaError`] (the same `0xA9` test Linux applies),
//! no reply becomes [`ClientError::Timeout`]. The raw entry points
//! ([`Client::ata`], [`Client::query_config`], ...) return the parsed reply
//! instead, error fields included, so tests can check them.
#![forbid(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use super::pipelined::{IoRequest, WindowStats};
pub use super::reply::{
    aoe_error_name, AtaReply, Identity, MaskReply, QcReply, ReplyHeader, ReserveReply, Target,
};
use super::request::{self, Addr};
use super::window::Window;
use crate::net::iface::{IfaceError, IfaceInfo};
use crate::net::socket::PacketSocket;
use crate::wire::{
    ata, mask, max_sectors_for_mtu, qc, reserve, MacAddr, ARG_OFFSET, ATA_DATA_OFFSET, SECTOR_SIZE,
};

/// Default time to wait for one reply before retransmitting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of retransmissions after the first try.
pub const DEFAULT_RETRIES: u32 = 3;

/// Largest frame the client sends or receives: a full 255-sector ATA
/// request plus headers (far above any MTU; the kernel refuses what the
/// link cannot carry, which is reported as an I/O error).
const MAX_FRAME: usize = ATA_DATA_OFFSET + 255 * SECTOR_SIZE;
/// Receive buffer: any frame a 64 KiB MTU could carry, so nothing is cut.
const RX_BUF: usize = 65536 + 64;

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No matching reply arrived.
    #[error("no reply to {what} after {tries} tries of {timeout:?} each")]
    Timeout {
        /// The request.
        what: String,
        /// Transmissions made (first try plus retransmissions).
        tries: u32,
        /// Wait per try.
        timeout: Duration,
    },
    /// The ATA status had BSY, DF, DRQ or ERR set.
    #[error("ATA command failed: status {status:#04x}, error {error:#04x}")]
    AtaError {
        /// Status register.
        status: u8,
        /// Error register.
        error: u8,
    },
    /// The reply carried the AoE error flag.
    #[error("AoE error {code} ({})", aoe_error_name(*code))]
    AoeError {
        /// AoE error code (byte 15).
        code: u8,
    },
    /// A reply that matched our tag but could not be understood.
    #[error("malformed reply to {what}: {why}")]
    BadReply {
        /// The request.
        what: String,
        /// What was wrong.
        why: String,
    },
    /// The caller asked for something no frame can carry.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The interface could not be looked up.
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// The socket failed.
    #[error("AF_PACKET socket: {0}")]
    Io(#[from] io::Error),
}

/// Every register of an ATA request, for commands the typed helpers do not
/// build (odd AFlags, features, device bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtaCommand {
    /// AFlags (E 0x40, D 0x10, A 0x02, W 0x01).
    pub aflags: u8,
    /// Features register.
    pub feature: u8,
    /// Sector count.
    pub sector_count: u8,
    /// Command opcode.
    pub command: u8,
    /// The six LBA bytes, sent as given (no masking, no device bits).
    pub lba: u64,
}

/// Tags for every client of this process come from one counter, so two
/// clients sharing a MAC (two sockets on one interface) never confuse
/// their replies. Seeded from the pid so that concurrent processes on one
/// link start far apart. Bit 31 stays clear and tag 0 (unsolicited
/// announcements) is never used.
pub(super) fn next_tag() -> u32 {
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    let c = COUNTER.get_or_init(|| AtomicU32::new((std::process::id() & 0x7fff) << 16));
    loop {
        let t = c.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        if t != 0 {
            return t;
        }
    }
}

fn is_ok_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::ENETDOWN)
    )
}

/// A reply to one of `tags` from `from` (any source when `from` is the
/// broadcast address), addressed to `me`.
fn is_reply_to(f: &[u8], me: MacAddr, from: MacAddr, tags: &[u32]) -> bool {
    let Some(h) = ReplyHeader::parse(f) else {
        return false;
    };
    h.is_response()
        && h.eth.dst == me
        && (from.is_broadcast() || h.eth.src == from)
        && tags.contains(&h.tag())
}

/// A synchronous AoE initiator bound to one interface.
#[derive(Debug)]
pub struct Client {
    pub(super) sock: PacketSocket,
    pub(super) iface: IfaceInfo,
    /// Source MAC of our requests (the interface's, unless overridden).
    pub(super) src: MacAddr,
    pub(super) timeout: Duration,
    pub(super) retries: u32,
    pub(super) lba48: bool,
    pub(super) rx: Vec<u8>,
    pub(super) tx: Vec<u8>,
    pub(super) capture: Option<Vec<Vec<u8>>>,
    /// The window of [`Client::run_window`], kept for the next run.
    pub(super) window: Option<Window>,
}

impl Client {
    /// Open a client on interface `ifname`, looking up its index, MAC and
    /// MTU. The MAC and MTU come from sysfs, which shows the network
    /// namespace sysfs was mounted in: run this in a process inside the
    /// namespace (`ip netns exec` remounts sysfs). A thread that merely
    /// `setns()`ed should use [`Client::with_iface`].
    pub fn open(ifname: &str) -> Result<Client, ClientError> {
        let info = IfaceInfo::lookup(ifname)?;
        // The index comes from the thread's own namespace; a different
        // index in sysfs means sysfs describes another namespace's device.
        if let Ok(s) = std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex")) {
            if s.trim().parse::<u32>().ok() != Some(info.index) {
                return Err(ClientError::InvalidRequest(format!(
                    "sysfs describes another network namespace's {ifname}; \
                     use Client::with_iface with the interface's MAC and MTU"
                )));
            }
        }
        Client::with_iface(info)
    }

    /// Open a client on an interface described by the caller. The socket is
    /// created in the calling thread's network namespace.
    pub fn with_iface(iface: IfaceInfo) -> Result<Client, ClientError> {
        let sock = PacketSocket::open(iface.index)?;
        // Room for a full window of jumbo replies; best effort.
        let _ = sock.set_buffers(8 << 20);
        Ok(Client {
            sock,
            src: iface.mac,
            iface,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            lba48: true,
            rx: vec![0; RX_BUF],
            tx: vec![0; MAX_FRAME],
            capture: None,
            window: None,
        })
    }

    /// Time to wait for each reply before retransmitting.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Current per-try timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Retransmissions after the first try (0: send once).
    pub fn set_retries(&mut self, retries: u32) {
        self.retries = retries;
    }

    /// Current retransmission count.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Use READ/WRITE SECTORS EXT (default, what Linux does once IDENTIFY
    /// reports LBA48) or the 28-bit READ/WRITE SECTORS in [`Client::read`],
    /// [`Client::write`] and the windowed helpers.
    pub fn set_lba48(&mut self, on: bool) {
        self.lba48 = on;
    }

    /// Send requests from `mac` instead of the interface's own address, and
    /// accept replies addressed to it: a second "host" on the same link for
    /// Mac Mask and reservation tests. Replies to a foreign unicast MAC only
    /// reach us where the link delivers them (veth does; a physical NIC
    /// needs promiscuous mode).
    pub fn set_source_mac(&mut self, mac: MacAddr) {
        self.src = mac;
    }

    /// The source MAC of our requests.
    pub fn mac(&self) -> MacAddr {
        self.src
    }

    /// The interface.
    pub fn iface(&self) -> &IfaceInfo {
        &self.iface
    }

    /// Keep a copy of every frame received from now on (or stop and drop
    /// them), to check properties of everything a target sent.
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on.then(Vec::new);
    }

    /// The frames captured so far (capture stays on).
    pub fn take_captured(&mut self) -> Vec<Vec<u8>> {
        self.capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// A fresh tag (bit 31 clear, never 0), for hand-made frames.
    pub fn next_tag(&self) -> u32 {
        next_tag()
    }

    /// Addressing of a request from us to `dst` for `major.minor`.
    pub fn addr(&self, dst: MacAddr, major: u16, minor: u8) -> Addr {
        Addr {
            dst,
            src: self.src,
            major,
            minor,
        }
    }

    /// Sectors per request to `t`: what it advertises, capped by our own
    /// interface's MTU.
    pub fn sectors_per_request(&self, t: &Target) -> u8 {
        t.sectors_per_request()
            .min(max_sectors_for_mtu(self.iface.mtu).max(1))
    }

    // ----------------------------------------------------------------
    // Socket plumbing
    // ----------------------------------------------------------------

    fn send_tx(&self, len: usize) -> Result<(), ClientError> {
        match self.sock.send(&self.tx[..len]) {
            Ok(_) => Ok(()),
            // A full queue or a link going down loses the frame; the
            // retransmission timer repairs it, as on a real network.
            Err(e) if is_ok_errno(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Receive until a frame satisfies `accept` (its length in `self.rx` is
    /// returned) or `deadline` passes.
    fn recv_until(
        &mut self,
        deadline: Instant,
        mut accept: impl FnMut(&[u8]) -> bool,
    ) -> Result<Option<usize>, ClientError> {
        loop {
            while let Some(n) = self.sock.try_recv(&mut self.rx)? {
                let n = n.min(self.rx.len());
                let f = &self.rx[..n];
                if let Some(c) = self.capture.as_mut() {
                    c.push(f.to_vec());
                }
                if accept(f) {
                    return Ok(Some(n));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.sock
                .poll_readable((deadline - now).max(Duration::from_millis(1)))?;
        }
    }

    /// Send the request `build` writes (given a fresh tag) to `dst` and wait
    /// for its reply, retransmitting with a new tag on each timeout. `None`
    /// when every try timed out.
    fn exchange(
        &mut self,
        dst: MacAddr,
        mut build: impl FnMut(&mut [u8], u32) -> usize,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let me = self.src;
        let mut tags = Vec::with_capacity(self.retries as usize + 1);
        for _ in 0..=self.retries {
            let tag = next_tag();
            tags.push(tag);
            let len = build(&mut self.tx, tag);
            self.send_tx(len)?;
            let deadline = Instant::now() + self.timeout;
            if let Some(n) = self.recv_until(deadline, |f| is_reply_to(f, me, dst, &tags))? {
                return Ok(Some(self.rx[..n].to_vec()));
            }
        }
        Ok(None)
    }

    fn timeout_error(&self, what: impl Into<String>) -> ClientError {
        ClientError::Timeout {
            what: what.into(),
            tries: self.retries + 1,
            timeout: self.timeout,
        }
    }

    // ----------------------------------------------------------------
    // Query Config and discovery
    // ----------------------------------------------------------------

    /// Send a Query Config request to `dst` (a target MAC or broadcast) for
    /// `major.minor` (wildcards allowed) and return the first reply, or
    /// `None` when nothing answered: the test subcommands (exact, prefix)
    /// get no reply at all on a mismatch, so silence is an answer here.
    pub fn query_config(
        &mut self,
        dst: MacAddr,
        major: u16,
        minor: u8,
        ccmd: qc::ConfigCmd,
        string: &[u8],
    ) -> Result<Option<QcReply>, ClientError> {
        if string.len() > crate::wire::MAX_CONFIG_STRING {
            return Err(ClientError::InvalidRequest(format!(
                "config string of {} bytes (at most 1024)",
                string.len()
            )));
        }
        let a = self.addr(dst, major, minor);
        let reply = self.exchange(dst, |b, tag| {
            request::query_config(b, &a, tag, ccmd, string)
        })?;
        match reply {
            None => Ok(None),
            Some(f) => QcReply::parse(&f)
                .map(Some)
                .ok_or_else(|| bad_reply("Query Config", "shorter than 32 bytes")),
        }
    }

    /// Broadcast a Query Config read for `major.minor` (wildcards allowed)
    /// and collect every reply that arrives within the timeout, one
    /// [`Target`] per (MAC, shelf, slot). If nothing answers, the query is
    /// repeated with a new tag up to the retry count; an empty list means
    /// no target answered at all.
    pub fn discover(&mut self, major: u16, minor: u8) -> Result<Vec<Target>, ClientError> {
        let a = self.addr(MacAddr::BROADCAST, major, minor);
        let me = self.src;
        let mut found: Vec<Target> = Vec::new();
        for _ in 0..=self.retries {
            let tag = next_tag();
            let len = request::query_config(&mut self.tx, &a, tag, qc::ConfigCmd::Read, &[]);
            self.send_tx(len)?;
            let deadline = Instant::now() + self.timeout;
            while let Some(n) =
                self.recv_until(deadline, |f| is_reply_to(f, me, MacAddr::BROADCAST, &[tag]))?
            {
                if let Some(r) = QcReply::parse(&self.rx[..n]) {
                    let t = Target::from_qc(&r);
                    if !found
                        .iter()
                        .any(|x| (x.mac, x.major, x.minor) == (t.mac, t.major, t.minor))
                    {
                        found.push(t);
                    }
                }
            }
            if !found.is_empty() {
                break;
            }
        }
        found.sort_by_key(|x| (x.major, x.minor, x.mac));
        Ok(found)
    }

    /// The first target answering a broadcast Query Config read for
    /// `major.minor`, without waiting for others (retransmitting as usual).
    pub fn find(&mut self, major: u16, minor: u8) -> Result<Target, ClientError> {
        match self.query_config(MacAddr::BROADCAST, major, minor, qc::ConfigCmd::Read, &[])? {
            Some(r) => Ok(Target::from_qc(&r)),
            None => Err(self.timeout_error(format!("Query Config for {major}.{minor}"))),
        }
    }

    // ----------------------------------------------------------------
    // ATA
    // ----------------------------------------------------------------

    /// Send an ATA command built from every register and return the reply
    /// as it is (errors included); only a missing reply is an error.
    pub fn ata_raw(
        &mut self,
        t: &Target,
        cmd: &AtaCommand,
        data: &[u8],
    ) -> Result<AtaReply, ClientError> {
        if data.len() > MAX_FRAME - ATA_DATA_OFFSET {
            return Err(ClientError::InvalidRequest(format!(
                "{} data bytes do not fit a frame",
                data.len()
            )));
        }
        let a = self.addr(t.mac, t.major, t.minor);
        let cmd = *cmd;
        let reply = self.exchange(t.mac, |b, tag| {
            // The builder writes the Ethernet and AoE headers; its ATA
            // argument is then replaced register by register.
            let n = request::ata(b, &a, tag, ata::Opcode::Identify, 0, 0, &[]);
            debug_assert_eq!(n, ATA_DATA_OFFSET);
            ata::Repr {
                aflags: cmd.aflags,
                err_feature: cmd.feature,
                sector_count: cmd.sector_count,
                cmd_status: cmd.command,
                lba: cmd.lba,
            }
            .emit(&mut ata::Packet::new_unchecked(&mut b[ARG_OFFSET..]));
            b[ATA_DATA_OFFSET..ATA_DATA_OFFSET + data.len()].copy_from_slice(data);
            ATA_DATA_OFFSET + data.len()
        })?;
        let what = || {
            format!(
                "ATA command {:#04x} to {}.{}",
                cmd.command, t.major, t.minor
            )
        };
        match reply {
            None => Err(self.timeout_error(what())),
            Some(f) => AtaReply::parse(&f).ok_or_else(|| bad_reply(&what(), "too short")),
        }
    }

    /// Send ATA command `opcode` the way Linux builds it (E flag for the
    /// EXT opcodes, W for writes, device bits in lba3 for the 28-bit ones)
    /// and return the reply as it is.
    pub fn ata(
        &mut self,
        t: &Target,
        opcode: u8,
        sector_count: u8,
        lba: u64,
        data: &[u8],
    ) -> Result<AtaReply, ClientError> {
        if data.len() > MAX_FRAME - ATA_DATA_OFFSET {
            return Err(ClientError::InvalidRequest(format!(
                "{} data bytes do not fit a frame",
                data.len()
            )));
        }
        let a = self.addr(t.mac, t.major, t.minor);
        let op = ata::Opcode::from(opcode);
        let reply = self.exchange(t.mac, |b, tag| {
            request::ata(b, &a, tag, op, sector_count, lba, data)
        })?;
        let what = || format!("ATA command {opcode:#04x} to {}.{}", t.major, t.minor);
        match reply {
            None => Err(self.timeout_error(what())),
            Some(f) => AtaReply::parse(&f).ok_or_else(|| bad_reply(&what(), "too short")),
        }
    }

    /// IDENTIFY DEVICE.
    pub fn identify(&mut self, t: &Target) -> Result<Identity, ClientError> {
        let r = self.ata(t, ata::Opcode::Identify.into(), 1, 0, &[])?;
        r.check()?;
        Identity::parse(&r.data).ok_or_else(|| {
            bad_reply(
                "IDENTIFY",
                &format!("{} data bytes instead of 512", r.data.len()),
            )
        })
    }

    fn rw_opcodes(&self) -> (ata::Opcode, ata::Opcode) {
        if self.lba48 {
            (ata::Opcode::ReadExt, ata::Opcode::WriteExt)
        } else {
            (ata::Opcode::Read, ata::Opcode::Write)
        }
    }

    pub(super) fn check_range(&self, lba: u64, sectors: u64) -> Result<(), ClientError> {
        let limit = if self.lba48 { 1 << 48 } else { 1 << 28 };
        match lba.checked_add(sectors) {
            Some(end) if end <= limit => Ok(()),
            _ => Err(ClientError::InvalidRequest(format!(
                "sectors {lba}..{lba}+{sectors} exceed the {}-bit address space",
                if self.lba48 { 48 } else { 28 }
            ))),
        }
    }

    /// Read `sectors` sectors from `lba`, split into requests of the size
    /// the target and the link allow, one at a time.
    pub fn read(&mut self, t: &Target, lba: u64, sectors: u64) -> Result<Vec<u8>, ClientError> {
        self.check_range(lba, sectors)?;
        let (op, _) = self.rw_opcodes();
        let step = u64::from(self.sectors_per_request(t));
        let mut out = Vec::with_capacity(sectors as usize * SECTOR_SIZE);
        let mut at = lba;
        while at < lba + sectors {
            let n = step.min(lba + sectors - at) as u8;
            let r = self.ata(t, op.into(), n, at, &[])?;
            r.check()?;
            let want = n as usize * SECTOR_SIZE;
            if r.data.len() < want {
                return Err(bad_reply(
                    "READ",
                    &format!("{} data bytes for {n} sectors", r.data.len()),
                ));
            }
            out.extend_from_slice(&r.data[..want]);
            at += u64::from(n);
        }
        Ok(out)
    }

    /// Write `data` (a multiple of 512 bytes) from `lba`, split like
    /// [`Client::read`].
    pub fn write(&mut self, t: &Target, lba: u64, data: &[u8]) -> Result<(), ClientError> {
        let sectors = sector_count(data)?;
        self.check_range(lba, sectors)?;
        let (_, op) = self.rw_opcodes();
        let step = self.sectors_per_request(t) as usize * SECTOR_SIZE;
        for (i, chunk) in data.chunks(step).enumerate() {
            let at = lba + (i * step / SECTOR_SIZE) as u64;
            let n = (chunk.len() / SECTOR_SIZE) as u8;
            self.ata(t, op.into(), n, at, chunk)?.check()?;
        }
        Ok(())
    }

    /// FLUSH CACHE (0xE7): every acknowledged write is durable afterwards.
    pub fn flush(&mut self, t: &Target) -> Result<(), ClientError> {
        self.ata(t, ata::Opcode::Flush.into(), 0, 0, &[])?.check()
    }

    /// CHECK POWER MODE; returns the sector count register (0xFF: active or
    /// idle). Sent with sector count 0xFF, as vblade needs to answer at all.
    pub fn check_power(&mut self, t: &Target) -> Result<u8, ClientError> {
        let r = self.ata(t, ata::Opcode::CheckPower.into(), 0xff, 0, &[])?;
        r.check()?;
        Ok(r.arg.sector_count)
    }

    // ----------------------------------------------------------------
    // Mac Mask and Reserve/Release
    // ----------------------------------------------------------------

    /// Mac Mask List command with `(DCmd, MAC)` directives. `None` when the
    /// target stays silent (a Mac Mask that excludes us drops the request).
    pub fn mac_mask(
        &mut self,
        t: &Target,
        mcmd: mask::MaskCmd,
        dirs: &[(mask::DirCmd, MacAddr)],
    ) -> Result<Option<MaskReply>, ClientError> {
        if dirs.len() > 255 {
            return Err(ClientError::InvalidRequest(format!(
                "{} directives (at most 255)",
                dirs.len()
            )));
        }
        let a = self.addr(t.mac, t.major, t.minor);
        let reply = self.exchange(t.mac, |b, tag| request::mac_mask(b, &a, tag, mcmd, dirs))?;
        match reply {
            None => Ok(None),
            Some(f) => MaskReply::parse(&f)
                .map(Some)
                .ok_or_else(|| bad_reply("Mac Mask", "shorter than 28 bytes")),
        }
    }

    /// Reserve/Release command. `None` when the target stays silent.
    pub fn reserve(
        &mut self,
        t: &Target,
        rcmd: reserve::ReserveCmd,
        macs: &[MacAddr],
    ) -> Result<Option<ReserveReply>, ClientError> {
        if macs.len() > 255 {
            return Err(ClientError::InvalidRequest(format!(
                "{} MACs (at most 255)",
                macs.len()
            )));
        }
        let a = self.addr(t.mac, t.major, t.minor);
        let reply = self.exchange(t.mac, |b, tag| request::reserve(b, &a, tag, rcmd, macs))?;
        match reply {
            None => Ok(None),
            Some(f) => ReserveReply::parse(&f)
                .map(Some)
                .ok_or_else(|| bad_reply("Reserve/Release", "shorter than 26 bytes")),
        }
    }

    // ----------------------------------------------------------------
    // Hand-made frames
    // ----------------------------------------------------------------

    /// Send `frame` exactly as given (no padding, no retransmission: its tag
    /// is the caller's) and return the first received frame for which
    /// `expect` is true within the timeout. Every received frame is offered
    /// to `expect`, whatever its addressing.
    pub fn request_raw(
        &mut self,
        frame: &[u8],
        expect: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        match self.sock.send(frame) {
            Ok(_) => {}
            Err(e) if is_ok_errno(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.wait_frame(expect)
    }

    /// Wait up to the timeout for a received frame satisfying `expect`
    /// (an unsolicited announcement, say), sending nothing.
    pub fn wait_frame(
        &mut self,
        expect: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        Ok(self
            .recv_until(deadline, expect)?
            .map(|n| self.rx[..n].to_vec()))
    }
}

pub(super) fn sector_count(data: &[u8]) -> Result<u64, ClientError> {
    if data.len() % SECTOR_SIZE != 0 {
        return Err(ClientError::InvalidRequest(format!(
            "{} bytes is not a whole number of 512-byte sectors",
            data.len()
        )));
    }
    Ok((data.len() / SECTOR_SIZE) as u64)
}

pub(super) fn bad_reply(what: &str, why: &str) -> ClientError {
    ClientError::BadReply {
        what: what.to_string(),
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initiator::reply::test_frame as frame;

    #[test]
    fn tags_clear_bit_31_and_differ() {
        let a = next_tag();
        let b = next_tag();
        assert_ne!(a, b);
        assert_eq!(a & 0x8000_0000, 0);
        assert_ne!(a, 0);
    }

    #[test]
    fn reply_matching() {
        let me = MacAddr([2, 0, 0, 0, 0, 1]);
        let tgt = MacAddr([2, 0, 0, 0, 0, 0x10]);
        let f = frame(&[0x18, 0, 0, 1, 1, 0, 0, 0, 0, 7]);
        assert!(is_reply_to(&f, me, tgt, &[7]));
        assert!(is_reply_to(&f, me, MacAddr::BROADCAST, &[7]));
        assert!(!is_reply_to(&f, me, tgt, &[8]), "other tag");
        assert!(!is_reply_to(&f, MacAddr([2, 0, 0, 0, 0, 2]), tgt, &[7]));
        assert!(!is_reply_to(&f, me, MacAddr([2, 0, 0, 0, 0, 0x11]), &[7]));
        let mut req = f.clone();
        req[14] = 0x10; // R clear: a request, not a reply
        assert!(!is_reply_to(&req, me, tgt, &[7]));
    }
}
