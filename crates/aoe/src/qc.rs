//! Query Config Information argument (frame bytes 24..32) and config string.
#![forbid(unsafe_code)]

use super::{Result, WireError, MAX_CONFIG_STRING};

mod field {
    use core::ops::Range;
    pub const BUFCNT: Range<usize> = 0..2;
    pub const FWVER: Range<usize> = 2..4;
    pub const SECTOR_COUNT: usize = 4;
    /// AoE version in bits 7-4, CCmd in bits 3-0.
    pub const VER_CCMD: usize = 5;
    pub const CSLEN: Range<usize> = 6..8;
}

/// Length of the QC argument before the string.
pub const HEADER_LEN: usize = field::CSLEN.end;

/// Query Config subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigCmd {
    /// Read the config string.
    Read,
    /// Reply only if the string matches exactly.
    TestExact,
    /// Reply only if the request string is a prefix.
    TestPrefix,
    /// Set if empty (error 4 if a different string is set).
    SetIfEmpty,
    /// Set unconditionally.
    ForceSet,
    /// 5-15.
    Unknown(u8),
}

impl From<u8> for ConfigCmd {
    fn from(v: u8) -> Self {
        match v & 0x0f {
            0 => ConfigCmd::Read,
            1 => ConfigCmd::TestExact,
            2 => ConfigCmd::TestPrefix,
            3 => ConfigCmd::SetIfEmpty,
            4 => ConfigCmd::ForceSet,
            x => ConfigCmd::Unknown(x),
        }
    }
}

impl From<ConfigCmd> for u8 {
    fn from(c: ConfigCmd) -> u8 {
        match c {
            ConfigCmd::Read => 0,
            ConfigCmd::TestExact => 1,
            ConfigCmd::TestPrefix => 2,
            ConfigCmd::SetIfEmpty => 3,
            ConfigCmd::ForceSet => 4,
            ConfigCmd::Unknown(x) => x & 0x0f,
        }
    }
}

/// View over the QC argument.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap and check the fixed part (the string is checked by
    /// [`Packet::check_string`], since only ccmd 1-4 use it).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the fixed part fits.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Ok when cslen is at most 1024 and the string fits in the buffer.
    pub fn check_string(&self) -> Result<()> {
        let n = self.cslen() as usize;
        if n > MAX_CONFIG_STRING {
            Err(WireError::BadArg)
        } else if self.buffer.as_ref().len() < HEADER_LEN + n {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Buffer count.
    pub fn bufcnt(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::BUFCNT];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Firmware version.
    pub fn fwver(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FWVER];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Max sectors per ATA request.
    pub fn sector_count(&self) -> u8 {
        self.buffer.as_ref()[field::SECTOR_COUNT]
    }

    /// AoE version nibble of the argument.
    pub fn aoe_version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_CCMD] >> 4
    }

    /// Subcommand.
    pub fn ccmd(&self) -> ConfigCmd {
        self.buffer.as_ref()[field::VER_CCMD].into()
    }

    /// Config string length.
    pub fn cslen(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CSLEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The config string; call [`Packet::check_string`] first.
    pub fn string(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.cslen() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the buffer count.
    pub fn set_bufcnt(&mut self, v: u16) {
        self.buffer.as_mut()[field::BUFCNT].copy_from_slice(&v.to_be_bytes());
    }

    /// Set the firmware version.
    pub fn set_fwver(&mut self, v: u16) {
        self.buffer.as_mut()[field::FWVER].copy_from_slice(&v.to_be_bytes());
    }

    /// Set max sectors.
    pub fn set_sector_count(&mut self, v: u8) {
        self.buffer.as_mut()[field::SECTOR_COUNT] = v;
    }

    /// Set version nibble and subcommand.
    pub fn set_ver_ccmd(&mut self, version: u8, c: ConfigCmd) {
        self.buffer.as_mut()[field::VER_CCMD] = (version << 4) | u8::from(c);
    }

    /// Set the string and its length; the caller sized the buffer.
    pub fn set_string(&mut self, s: &[u8]) {
        let n = s.len() as u16;
        self.buffer.as_mut()[field::CSLEN].copy_from_slice(&n.to_be_bytes());
        self.buffer.as_mut()[HEADER_LEN..HEADER_LEN + s.len()].copy_from_slice(s);
    }
}

/// Semantic QC argument with a borrowed string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Buffer count.
    pub bufcnt: u16,
    /// Firmware version.
    pub fwver: u16,
    /// Max sectors per request.
    pub sector_count: u8,
    /// AoE version nibble.
    pub aoe_version: u8,
    /// Subcommand.
    pub ccmd: ConfigCmd,
    /// Config string (at most 1024 bytes).
    pub string: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parse, checking the string length.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>) -> Result<Repr<'a>> {
        p.check_len()?;
        p.check_string()?;
        Ok(Repr::parse_cut(p))
    }

    /// Parse a reply from another implementation, where a string longer
    /// than the buffer is cut to what the buffer holds instead of refused
    /// (an initiator shows what it got; a target uses [`Repr::parse`]).
    /// The buffer must hold the 8-byte header ([`Packet::new_checked`]).
    pub fn parse_cut<T: AsRef<[u8]> + ?Sized>(p: &Packet<&'a T>) -> Repr<'a> {
        let buf: &'a T = p.buffer;
        let buf: &'a [u8] = buf.as_ref();
        let n = (p.cslen() as usize).min(buf.len() - HEADER_LEN);
        Repr {
            bufcnt: p.bufcnt(),
            fwver: p.fwver(),
            sector_count: p.sector_count(),
            aoe_version: p.aoe_version(),
            ccmd: p.ccmd(),
            string: &buf[HEADER_LEN..HEADER_LEN + n],
        }
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.string.len()
    }

    /// Write the argument and string.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_bufcnt(self.bufcnt);
        p.set_fwver(self.fwver);
        p.set_sector_count(self.sector_count);
        p.set_ver_ccmd(self.aoe_version, self.ccmd);
        p.set_string(self.string);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply: bufcnt 16, fwver 0x4019, 17 sectors, version 1, read, "hi".
    static REPLY: [u8; 10] = [0x00, 0x10, 0x40, 0x19, 0x11, 0x10, 0x00, 0x02, b'h', b'i'];

    fn repr() -> Repr<'static> {
        Repr {
            bufcnt: 16,
            fwver: 0x4019,
            sector_count: 17,
            aoe_version: 1,
            ccmd: ConfigCmd::Read,
            string: b"hi",
        }
    }

    #[test]
    fn deconstruct_parse() {
        let p = Packet::new_checked(&REPLY[..]).unwrap();
        assert_eq!(p.bufcnt(), 16);
        assert_eq!(p.sector_count(), 17);
        assert_eq!(p.string(), b"hi");
        assert_eq!(Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn emit() {
        let mut b = [0xa5u8; 10];
        repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, REPLY);
    }

    #[test]
    fn bad_lengths() {
        let mut b = REPLY;
        b[7] = 3; // cslen beyond the buffer
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().check_string(),
            Err(WireError::Truncated)
        );
        let mut big = vec![0u8; 8 + 1100];
        big[6..8].copy_from_slice(&1025u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&big[..]).unwrap().check_string(),
            Err(WireError::BadArg)
        );
        assert!(Packet::new_checked(&REPLY[..7]).is_err());
    }

    #[test]
    fn parse_cut_trusts_no_length() {
        let mut b = REPLY;
        b[7] = 9; // cslen beyond the buffer: refused, or cut
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(Repr::parse(&p).is_err());
        assert_eq!(Repr::parse_cut(&p).string, b"hi");
        let p = Packet::new_checked(&REPLY[..]).unwrap();
        assert_eq!(Repr::parse_cut(&p), repr());
    }

    #[test]
    fn ccmd_round_trip() {
        for v in 0..16u8 {
            assert_eq!(u8::from(ConfigCmd::from(v)), v);
        }
    }
}
