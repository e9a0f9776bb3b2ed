//! Replies as the client reads them: the Ethernet and AoE headers of any
//! frame, and each command's argument, owned (they outlive the receive
//! buffer). Parsing is lenient where a target's reply may be: a short
//! frame reads as zero registers, a config string longer than its frame
//! is cut, never trusted.
#![forbid(unsafe_code)]

use super::client::ClientError;
use crate::wire::{
    aoe, ata, ethernet, identify, mask, qc, reserve, MacAddr, AOE_OFFSET, ARG_OFFSET,
    ATA_DATA_OFFSET, ETHERTYPE_AOE, MIN_FRAME_LEN,
};

/// Human name of an AoE error code (docs/aoe-protocol.md §2).
pub fn aoe_error_name(code: u8) -> &'static str {
    match code {
        1 => "unrecognized command code",
        2 => "bad argument parameter",
        3 => "device unavailable",
        4 => "config string present",
        5 => "unsupported version",
        6 => "target is reserved",
        _ => "unknown error code",
    }
}

/// The Ethernet and AoE headers of a received reply, as [`crate::wire`]
/// parses them, and the frame's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    /// Ethernet header (`src`: the target interface that answered).
    pub eth: ethernet::Repr,
    /// AoE common header.
    pub aoe: aoe::Repr,
    /// Frame length as received (the padding rule is about this).
    pub len: usize,
}

impl ReplyHeader {
    /// Parse the Ethernet and AoE headers of any AoE frame of at least 24 bytes.
    pub fn parse(frame: &[u8]) -> Option<ReplyHeader> {
        let eth = ethernet::Repr::parse(&ethernet::Frame::new_unchecked(frame)).ok()?;
        if eth.ethertype != ETHERTYPE_AOE {
            return None;
        }
        let aoe = aoe::Repr::parse(&aoe::Packet::new_unchecked(frame.get(AOE_OFFSET..)?)).ok()?;
        Some(ReplyHeader {
            eth,
            aoe,
            len: frame.len(),
        })
    }

    /// The tag as a number (big-endian on the wire).
    pub fn tag(&self) -> u32 {
        u32::from_be_bytes(self.aoe.tag)
    }

    /// R flag.
    pub fn is_response(&self) -> bool {
        self.aoe.flags & aoe::FLAG_RESPONSE != 0
    }

    /// E flag.
    pub fn is_error(&self) -> bool {
        self.aoe.flags & aoe::FLAG_ERROR != 0
    }

    /// The AoE error code when E is set.
    pub fn aoe_error(&self) -> Option<u8> {
        self.is_error().then_some(self.aoe.error)
    }
}

/// A target found by discovery: one (MAC, shelf, slot) that answered.
/// With multipath, the same shelf.slot shows up once per target MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The answering interface's MAC (requests are unicast to it).
    pub mac: MacAddr,
    /// Shelf.
    pub major: u16,
    /// Slot.
    pub minor: u8,
    /// Advertised buffer count (outstanding requests it absorbs).
    pub bufcnt: u16,
    /// Firmware version.
    pub fwver: u16,
    /// Advertised sectors per ATA request (0 means 2, the legacy default).
    pub max_sectors: u8,
    /// Config string.
    pub config: Vec<u8>,
}

impl Target {
    /// Address a target known without discovery (for example a broadcast
    /// probe): nothing advertised yet, so 2 sectors per request.
    pub fn new(mac: MacAddr, major: u16, minor: u8) -> Target {
        Target {
            mac,
            major,
            minor,
            bufcnt: 2,
            fwver: 0,
            max_sectors: 0,
            config: Vec::new(),
        }
    }

    /// Sectors per request the target accepts (QC's 0 means 2).
    pub fn sectors_per_request(&self) -> u8 {
        if self.max_sectors == 0 {
            2
        } else {
            self.max_sectors
        }
    }

    pub(super) fn from_qc(r: &QcReply) -> Target {
        let arg = r.arg();
        Target {
            mac: r.header.eth.src,
            major: r.header.aoe.major,
            minor: r.header.aoe.minor,
            bufcnt: arg.bufcnt,
            fwver: arg.fwver,
            max_sectors: arg.sector_count,
            config: arg.string.to_vec(),
        }
    }
}

/// A Query Config reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QcReply {
    /// Common header.
    pub header: ReplyHeader,
    /// The frame (the argument is read from it by [`QcReply::arg`]).
    frame: Vec<u8>,
    /// AoE error code when E is set.
    pub aoe_error: Option<u8>,
    /// Frame length.
    pub len: usize,
}

impl QcReply {
    /// Parse a QC reply frame (at least 32 bytes).
    pub fn parse(frame: &[u8]) -> Option<QcReply> {
        let header = ReplyHeader::parse(frame)?;
        qc::Packet::new_checked(frame.get(ARG_OFFSET..)?).ok()?;
        Some(QcReply {
            header,
            frame: frame.to_vec(),
            aoe_error: header.aoe_error(),
            len: frame.len(),
        })
    }

    /// The argument: buffer count, firmware version, sectors, version,
    /// subcommand and config string (cut to what the frame holds).
    pub fn arg(&self) -> qc::Repr<'_> {
        qc::Repr::parse_cut(&qc::Packet::new_unchecked(&self.frame[ARG_OFFSET..]))
    }

    /// The target's config string (cut to what the frame holds).
    pub fn config(&self) -> &[u8] {
        self.arg().string
    }
}

/// An ATA reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtaReply {
    /// Common header.
    pub header: ReplyHeader,
    /// The registers: `cmd_status` is the status, `err_feature` the error
    /// register. Zero where the frame stops before them (an AoE error reply
    /// may be header-only).
    pub arg: ata::Repr,
    /// Data after the 12-byte argument, only when the frame is longer than
    /// the 60-byte minimum (a data reply is at least 36 + 512 bytes; the
    /// bytes of a shorter frame are padding, not data).
    pub data: Vec<u8>,
    /// AoE error code when E is set.
    pub aoe_error: Option<u8>,
    /// Frame length.
    pub len: usize,
}

impl AtaReply {
    /// Parse an ATA reply frame.
    pub fn parse(frame: &[u8]) -> Option<AtaReply> {
        let header = ReplyHeader::parse(frame)?;
        let mut regs = [0u8; ata::HEADER_LEN];
        let have = frame.get(ARG_OFFSET..).unwrap_or_default();
        let n = have.len().min(regs.len());
        regs[..n].copy_from_slice(&have[..n]);
        let arg = ata::Repr::parse(&ata::Packet::new_unchecked(&regs[..])).ok()?;
        let data = if frame.len() > MIN_FRAME_LEN {
            frame[ATA_DATA_OFFSET..].to_vec()
        } else {
            Vec::new()
        };
        Some(AtaReply {
            header,
            arg,
            data,
            aoe_error: header.aoe_error(),
            len: frame.len(),
        })
    }

    /// Status register.
    pub fn status(&self) -> u8 {
        self.arg.cmd_status
    }

    /// Error register.
    pub fn error(&self) -> u8 {
        self.arg.err_feature
    }

    /// True when neither the AoE error flag nor a failing ATA status bit
    /// (BSY, DF, DRQ, ERR: the Linux initiator's 0xA9 test) is set.
    pub fn is_ok(&self) -> bool {
        self.aoe_error.is_none() && self.status() & ata::STATUS_FAIL_MASK == 0
    }

    /// `Ok` when [`AtaReply::is_ok`], else the matching [`ClientError`].
    pub fn check(&self) -> Result<(), ClientError> {
        if let Some(code) = self.aoe_error {
            return Err(ClientError::AoeError { code });
        }
        if self.status() & ata::STATUS_FAIL_MASK != 0 {
            return Err(ClientError::AtaError {
                status: self.status(),
                error: self.error(),
            });
        }
        Ok(())
    }
}

/// A parsed Mac Mask List reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskReply {
    /// Common header.
    pub header: ReplyHeader,
    /// MCmd echoed.
    pub mcmd: u8,
    /// MError (0 ok, 1 unspecified, 2 bad directive, 3 list full).
    pub merror: u8,
    /// Dir Count as sent.
    pub dir_count: u8,
    /// MACs of the directives the frame holds (the list, on success).
    pub list: Vec<MacAddr>,
    /// AoE error code when E is set.
    pub aoe_error: Option<u8>,
    /// Frame length.
    pub len: usize,
}

impl MaskReply {
    /// Parse a Mac Mask reply frame (at least 28 bytes).
    pub fn parse(frame: &[u8]) -> Option<MaskReply> {
        let header = ReplyHeader::parse(frame)?;
        let arg = &frame[ARG_OFFSET..];
        if arg.len() < mask::HEADER_LEN {
            return None;
        }
        let p = mask::Packet::new_unchecked(arg);
        let fit = (arg.len() - mask::HEADER_LEN) / mask::DIRECTIVE_LEN;
        let n = (p.dir_count() as usize).min(fit);
        Some(MaskReply {
            header,
            mcmd: u8::from(p.mcmd()),
            merror: p.merror(),
            dir_count: p.dir_count(),
            list: (0..n).map(|i| p.directive(i).1).collect(),
            aoe_error: header.aoe_error(),
            len: frame.len(),
        })
    }
}

/// A parsed Reserve/Release reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveReply {
    /// Common header.
    pub header: ReplyHeader,
    /// RCmd echoed.
    pub rcmd: u8,
    /// NMacs as sent.
    pub nmacs: u8,
    /// The reserve list the frame holds.
    pub list: Vec<MacAddr>,
    /// AoE error code when E is set.
    pub aoe_error: Option<u8>,
    /// Frame length.
    pub len: usize,
}

impl ReserveReply {
    /// Parse a Reserve/Release reply frame (at least 26 bytes).
    pub fn parse(frame: &[u8]) -> Option<ReserveReply> {
        let header = ReplyHeader::parse(frame)?;
        let arg = &frame[ARG_OFFSET..];
        if arg.len() < reserve::HEADER_LEN {
            return None;
        }
        let p = reserve::Packet::new_unchecked(arg);
        let fit = (arg.len() - reserve::HEADER_LEN) / 6;
        let n = (p.nmacs() as usize).min(fit);
        Some(ReserveReply {
            header,
            rcmd: u8::from(p.rcmd()),
            nmacs: p.nmacs(),
            list: (0..n).map(|i| p.mac(i)).collect(),
            aoe_error: header.aoe_error(),
            len: frame.len(),
        })
    }
}

/// What an IDENTIFY DEVICE page says, decoded as Linux reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Capacity: words 100-103 when LBA48 is advertised, else words 60-61.
    pub sectors: u64,
    /// Serial number (words 10-19, trailing spaces removed).
    pub serial: String,
    /// Model (words 27-46).
    pub model: String,
    /// Firmware revision (words 23-26).
    pub firmware: String,
    /// Word 83 or 86 bit 10: the device takes the EXT (48-bit) opcodes.
    pub lba48: bool,
    /// The page itself.
    pub raw: [u8; 512],
}

impl Identity {
    /// Decode a 512-byte page.
    pub fn parse(page: &[u8]) -> Option<Identity> {
        let raw: [u8; 512] = page.get(..identify::PAGE_LEN)?.try_into().ok()?;
        let lba48 = (identify::word(&raw, 83) | identify::word(&raw, 86)) & (1 << 10) != 0;
        let sectors = if lba48 {
            identify::lba48_sectors(&raw)
        } else {
            u64::from(identify::word(&raw, 60)) | u64::from(identify::word(&raw, 61)) << 16
        };
        Some(Identity {
            sectors,
            serial: identify::string(&raw, 10, 10).trim().to_string(),
            model: identify::string(&raw, 27, 20).trim().to_string(),
            firmware: identify::string(&raw, 23, 4).trim().to_string(),
            lba48,
            raw,
        })
    }

    /// Word `w` of the page.
    pub fn word(&self, w: usize) -> u16 {
        identify::word(&self.raw, w)
    }

    /// LBA28 capacity, words 60-61.
    pub fn lba28_sectors(&self) -> u32 {
        u32::from(self.word(60)) | u32::from(self.word(61)) << 16
    }

    /// LBA48 capacity, words 100-103.
    pub fn lba48_sectors(&self) -> u64 {
        identify::lba48_sectors(&self.raw)
    }
}

/// A frame from 02:00:00:00:00:10 to 02:00:00:00:00:01 carrying `bytes`
/// after the Ethernet header.
#[cfg(test)]
pub(super) fn test_frame(bytes: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x10]);
    f[12..14].copy_from_slice(&ETHERTYPE_AOE.to_be_bytes());
    f.extend_from_slice(bytes);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_frame as frame;

    #[test]
    fn parse_unpadded_qc_reply() {
        // vblade's 32-byte reply: bufcnt 16, fwver 0x4019, 2 sectors, "".
        let f = frame(&[
            0x18, 0, 0, 3, 4, 1, 0, 0, 0, 9, 0, 16, 0x40, 0x19, 2, 0x10, 0, 0,
        ]);
        let r = QcReply::parse(&f).unwrap();
        assert_eq!((r.header.aoe.major, r.header.aoe.minor), (3, 4));
        assert_eq!(r.header.tag(), 9);
        let a = r.arg();
        assert_eq!((a.bufcnt, a.fwver, a.sector_count), (16, 0x4019, 2));
        assert!(r.config().is_empty() && r.aoe_error.is_none() && r.len == 32);
        // A cslen longer than the frame is cut, not trusted.
        let f = frame(&[
            0x18, 0, 0, 3, 4, 1, 0, 0, 0, 9, 0, 16, 0x40, 0x19, 2, 0x10, 0, 9, b'a',
        ]);
        assert_eq!(QcReply::parse(&f).unwrap().config(), b"a");
    }

    #[test]
    fn parse_ata_replies() {
        // A 36-byte failed read (vblade): no data, registers present.
        let f = frame(&[
            0x18, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0x40, 0x10, 2, 0x41, 5, 0, 0, 0, 0, 0, 0, 0,
        ]);
        let r = AtaReply::parse(&f).unwrap();
        assert_eq!((r.status(), r.error(), r.arg.sector_count), (0x41, 0x10, 2));
        assert!(r.data.is_empty() && !r.is_ok());
        assert!(matches!(
            r.check(),
            Err(ClientError::AtaError {
                status: 0x41,
                error: 0x10
            })
        ));
        // A header-only AoE error reply.
        let f = frame(&[0x1c, 6, 0, 1, 1, 0, 0, 0, 0, 1]);
        let r = AtaReply::parse(&f).unwrap();
        assert_eq!(r.aoe_error, Some(6));
        assert!(matches!(r.check(), Err(ClientError::AoeError { code: 6 })));
    }

    #[test]
    fn identity_decodes_capacity() {
        let mut page = [0u8; 512];
        identify::emit(
            &identify::Identity {
                sectors: 0x1_0000_0001,
                serial: "1.2:h",
                firmware: "0.1",
                model: "xblade",
            },
            &mut page,
        );
        let id = Identity::parse(&page).unwrap();
        assert!(id.lba48);
        assert_eq!(id.sectors, 0x1_0000_0001);
        assert_eq!(id.lba28_sectors(), 0x0fff_ffff);
        assert_eq!((id.serial.as_str(), id.model.as_str()), ("1.2:h", "xblade"));
    }
}
