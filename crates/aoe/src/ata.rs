//! ATA command argument (frame bytes 24..36) and its data area.
#![forbid(unsafe_code)]

use super::{Result, WireError, SECTOR_SIZE};

mod field {
    use core::ops::Range;
    pub const AFLAGS: usize = 0;
    /// Features register in requests, Error register in replies.
    pub const ERR_FEATURE: usize = 1;
    pub const SECTOR_COUNT: usize = 2;
    /// Command register in requests, Status register in replies.
    pub const CMD_STATUS: usize = 3;
    /// Little-endian: lba0 is bits 0-7.
    pub const LBA: Range<usize> = 4..10;
    pub const RESERVED: Range<usize> = 10..12;
}

/// Length of the ATA argument.
pub const HEADER_LEN: usize = field::RESERVED.end;

/// AFlags: extended (LBA48) command.
pub const AFLAG_EXTENDED: u8 = 0x40;
/// AFlags: device/head register.
pub const AFLAG_DEVICE: u8 = 0x10;
/// AFlags: asynchronous write (treated as a normal write).
pub const AFLAG_ASYNC: u8 = 0x02;
/// AFlags: data flows to the device.
pub const AFLAG_WRITE: u8 = 0x01;

/// Status register: drive ready.
pub const STATUS_DRDY: u8 = 0x40;
/// Status register: error.
pub const STATUS_ERR: u8 = 0x01;
/// Status bits that make the Linux initiator fail the I/O (BSY, DF, DRQ, ERR).
pub const STATUS_FAIL_MASK: u8 = 0xa9;
/// Error register: uncorrectable (I/O error).
pub const ERROR_UNC: u8 = 0x40;
/// Error register: ID not found (address out of range).
pub const ERROR_IDNF: u8 = 0x10;
/// Error register: command aborted.
pub const ERROR_ABRT: u8 = 0x04;

/// Mask of the address bits of an LBA28 command.
pub const LBA28_MASK: u64 = 0x0fff_ffff;

/// ATA opcodes the target implements; everything else is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// READ SECTORS (LBA28).
    Read,
    /// READ SECTORS EXT (LBA48).
    ReadExt,
    /// WRITE SECTORS (LBA28).
    Write,
    /// WRITE SECTORS EXT (LBA48).
    WriteExt,
    /// IDENTIFY DEVICE.
    Identify,
    /// CHECK POWER MODE.
    CheckPower,
    /// FLUSH CACHE.
    Flush,
    /// FLUSH CACHE EXT.
    FlushExt,
    /// Any other opcode.
    Unknown(u8),
}

impl From<u8> for Opcode {
    fn from(v: u8) -> Self {
        match v {
            0x20 => Opcode::Read,
            0x24 => Opcode::ReadExt,
            0x30 => Opcode::Write,
            0x34 => Opcode::WriteExt,
            0xec => Opcode::Identify,
            0xe5 => Opcode::CheckPower,
            0xe7 => Opcode::Flush,
            0xea => Opcode::FlushExt,
            x => Opcode::Unknown(x),
        }
    }
}

impl From<Opcode> for u8 {
    fn from(o: Opcode) -> u8 {
        match o {
            Opcode::Read => 0x20,
            Opcode::ReadExt => 0x24,
            Opcode::Write => 0x30,
            Opcode::WriteExt => 0x34,
            Opcode::Identify => 0xec,
            Opcode::CheckPower => 0xe5,
            Opcode::Flush => 0xe7,
            Opcode::FlushExt => 0xea,
            Opcode::Unknown(x) => x,
        }
    }
}

impl Opcode {
    /// True for the 48-bit address forms; the address width is decided by the
    /// opcode, not the E flag (vblade, kvblade).
    pub fn is_lba48(self) -> bool {
        matches!(self, Opcode::ReadExt | Opcode::WriteExt)
    }
}

/// View over the ATA argument and data.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap and check the length.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the 12-byte argument fits. Data length is checked by the
    /// target against the sector count, since a short write is an ATA-level
    /// error, not a parse error.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// AFlags.
    pub fn aflags(&self) -> u8 {
        self.buffer.as_ref()[field::AFLAGS]
    }

    /// Features (request) or Error (reply) register.
    pub fn err_feature(&self) -> u8 {
        self.buffer.as_ref()[field::ERR_FEATURE]
    }

    /// Sector count.
    pub fn sector_count(&self) -> u8 {
        self.buffer.as_ref()[field::SECTOR_COUNT]
    }

    /// Command (request) or Status (reply) register.
    pub fn cmd_status(&self) -> u8 {
        self.buffer.as_ref()[field::CMD_STATUS]
    }

    /// The raw 48-bit LBA (little-endian bytes).
    pub fn lba_raw(&self) -> u64 {
        let b = &self.buffer.as_ref()[field::LBA];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
    }

    /// The address as the opcode defines it: 48 bits for EXT, 28 for the rest.
    pub fn lba(&self, op: Opcode) -> u64 {
        if op.is_lba48() {
            self.lba_raw()
        } else {
            self.lba_raw() & LBA28_MASK
        }
    }

    /// Data bytes after the argument.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set AFlags.
    pub fn set_aflags(&mut self, v: u8) {
        self.buffer.as_mut()[field::AFLAGS] = v;
    }

    /// Set Features/Error.
    pub fn set_err_feature(&mut self, v: u8) {
        self.buffer.as_mut()[field::ERR_FEATURE] = v;
    }

    /// Set the sector count.
    pub fn set_sector_count(&mut self, v: u8) {
        self.buffer.as_mut()[field::SECTOR_COUNT] = v;
    }

    /// Set Command/Status.
    pub fn set_cmd_status(&mut self, v: u8) {
        self.buffer.as_mut()[field::CMD_STATUS] = v;
    }

    /// Set the six LBA bytes (low 48 bits of `lba`).
    pub fn set_lba_raw(&mut self, lba: u64) {
        self.buffer.as_mut()[field::LBA].copy_from_slice(&lba.to_le_bytes()[..6]);
    }

    /// Zero the reserved bytes.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED].fill(0);
    }

    /// Mutable data area.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Semantic ATA argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// AFlags.
    pub aflags: u8,
    /// Features/Error.
    pub err_feature: u8,
    /// Sector count.
    pub sector_count: u8,
    /// Command/Status.
    pub cmd_status: u8,
    /// Raw 48-bit LBA.
    pub lba: u64,
}

impl Repr {
    /// Parse the argument.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        Ok(Repr {
            aflags: p.aflags(),
            err_feature: p.err_feature(),
            sector_count: p.sector_count(),
            cmd_status: p.cmd_status(),
            lba: p.lba_raw(),
        })
    }

    /// Bytes `emit` writes (the argument only; data is written in place).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the argument.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_aflags(self.aflags);
        p.set_err_feature(self.err_feature);
        p.set_sector_count(self.sector_count);
        p.set_cmd_status(self.cmd_status);
        p.set_lba_raw(self.lba);
        p.clear_reserved();
    }

    /// Data bytes the sector count implies.
    pub fn data_len(&self) -> usize {
        self.sector_count as usize * SECTOR_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// READ SECTORS EXT of 2 sectors at LBA 0x0102030405 (Linux sets E).
    static READ_EXT: [u8; 12] = [
        0x40, 0x00, 0x02, 0x24, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00, 0, 0,
    ];
    /// IDENTIFY as Linux sends it: lba3 = 0xa0 (device register).
    static IDENTIFY: [u8; 12] = [0x00, 0x00, 0x01, 0xec, 0, 0, 0, 0xa0, 0, 0, 0, 0];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&READ_EXT[..]).unwrap();
        assert_eq!(p.aflags(), AFLAG_EXTENDED);
        assert_eq!(p.sector_count(), 2);
        assert_eq!(Opcode::from(p.cmd_status()), Opcode::ReadExt);
        assert_eq!(p.lba(Opcode::ReadExt), 0x01_0203_0405);
        let i = Packet::new_checked(&IDENTIFY[..]).unwrap();
        assert_eq!(i.lba_raw(), 0xa000_0000);
        assert_eq!(i.lba(Opcode::Identify), 0, "device register bits masked");
    }

    #[test]
    fn lba28_masks_device_register() {
        let mut b = READ_EXT;
        b[3] = 0x20;
        b[7] = 0xe1;
        let p = Packet::new_unchecked(&b[..]);
        assert_eq!(p.lba(Opcode::Read), 0x0103_0405);
    }

    #[test]
    fn emit_parse_round_trip() {
        let r = Repr::parse(&Packet::new_unchecked(&READ_EXT[..])).unwrap();
        let mut b = [0xa5u8; 12];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, READ_EXT);
        assert_eq!(r.data_len(), 1024);
    }

    #[test]
    fn opcodes_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Opcode::from(v)), v);
        }
    }

    #[test]
    fn truncated() {
        assert!(Packet::new_checked(&READ_EXT[..11]).is_err());
    }
}
