//! AoE common header (frame bytes 14..24): version, flags, error, address,
//! command and tag.
#![forbid(unsafe_code)]

use super::{Result, WireError};

mod field {
    use core::ops::Range;
    /// Version in bits 7-4, flags in bits 3-0.
    pub const VER_FLAGS: usize = 0;
    pub const ERROR: usize = 1;
    /// Shelf, big-endian.
    pub const MAJOR: Range<usize> = 2..4;
    pub const MINOR: usize = 4;
    pub const COMMAND: usize = 5;
    /// Opaque to the target, copied verbatim.
    pub const TAG: Range<usize> = 6..10;
}

/// Length of the AoE common header.
pub const HEADER_LEN: usize = field::TAG.end;
/// The only protocol version.
pub const VERSION: u8 = 1;
/// Response flag.
pub const FLAG_RESPONSE: u8 = 0x08;
/// Error flag.
pub const FLAG_ERROR: u8 = 0x04;
/// Shelf wildcard.
pub const MAJOR_ANY: u16 = 0xffff;
/// Slot wildcard.
pub const MINOR_ANY: u8 = 0xff;

/// An AoE command code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Issue ATA Command.
    Ata,
    /// Query Config Information.
    QueryConfig,
    /// Mac Mask List.
    MacMask,
    /// Reserve/Release.
    Reserve,
    /// Anything else (vendor range included).
    Unknown(u8),
}

impl From<u8> for Command {
    fn from(v: u8) -> Self {
        match v {
            0 => Command::Ata,
            1 => Command::QueryConfig,
            2 => Command::MacMask,
            3 => Command::Reserve,
            x => Command::Unknown(x),
        }
    }
}

impl From<Command> for u8 {
    fn from(c: Command) -> u8 {
        match c {
            Command::Ata => 0,
            Command::QueryConfig => 1,
            Command::MacMask => 2,
            Command::Reserve => 3,
            Command::Unknown(x) => x,
        }
    }
}

/// AoE error codes (byte 15 when the E flag is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// Unrecognized command code.
    UnknownCommand = 1,
    /// Bad argument parameter.
    BadArg = 2,
    /// Device unavailable.
    DeviceUnavailable = 3,
    /// Config string present.
    ConfigPresent = 4,
    /// Unsupported version.
    BadVersion = 5,
    /// Target is reserved.
    Reserved = 6,
}

/// View over the AoE common header and what follows it.
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

    /// Ok when the common header fits.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Protocol version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_FLAGS] >> 4
    }

    /// The four flag bits.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::VER_FLAGS] & 0x0f
    }

    /// R flag.
    pub fn is_response(&self) -> bool {
        self.flags() & FLAG_RESPONSE != 0
    }

    /// E flag.
    pub fn is_error(&self) -> bool {
        self.flags() & FLAG_ERROR != 0
    }

    /// Error byte.
    pub fn error(&self) -> u8 {
        self.buffer.as_ref()[field::ERROR]
    }

    /// Shelf (major).
    pub fn major(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::MAJOR];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Slot (minor).
    pub fn minor(&self) -> u8 {
        self.buffer.as_ref()[field::MINOR]
    }

    /// Command.
    pub fn command(&self) -> Command {
        self.buffer.as_ref()[field::COMMAND].into()
    }

    /// Tag, as four raw bytes (opaque).
    pub fn tag(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::TAG];
        [b[0], b[1], b[2], b[3]]
    }

    /// Argument bytes.
    pub fn arg(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version and flags.
    pub fn set_ver_flags(&mut self, version: u8, flags: u8) {
        self.buffer.as_mut()[field::VER_FLAGS] = (version << 4) | (flags & 0x0f);
    }

    /// Set the error byte.
    pub fn set_error(&mut self, e: u8) {
        self.buffer.as_mut()[field::ERROR] = e;
    }

    /// Set the shelf.
    pub fn set_major(&mut self, m: u16) {
        self.buffer.as_mut()[field::MAJOR].copy_from_slice(&m.to_be_bytes());
    }

    /// Set the slot.
    pub fn set_minor(&mut self, m: u8) {
        self.buffer.as_mut()[field::MINOR] = m;
    }

    /// Set the command.
    pub fn set_command(&mut self, c: Command) {
        self.buffer.as_mut()[field::COMMAND] = c.into();
    }

    /// Set the tag.
    pub fn set_tag(&mut self, t: [u8; 4]) {
        self.buffer.as_mut()[field::TAG].copy_from_slice(&t);
    }

    /// Mutable argument bytes.
    pub fn arg_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Semantic AoE common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Version nibble.
    pub version: u8,
    /// Flag nibble (R, E, reserved bits).
    pub flags: u8,
    /// Error byte.
    pub error: u8,
    /// Shelf.
    pub major: u16,
    /// Slot.
    pub minor: u8,
    /// Command.
    pub command: Command,
    /// Tag.
    pub tag: [u8; 4],
}

impl Repr {
    /// Parse a header.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        Ok(Repr {
            version: p.version(),
            flags: p.flags(),
            error: p.error(),
            major: p.major(),
            minor: p.minor(),
            command: p.command(),
            tag: p.tag(),
        })
    }

    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_ver_flags(self.version, self.flags);
        p.set_error(self.error);
        p.set_major(self.major);
        p.set_minor(self.minor);
        p.set_command(self.command);
        p.set_tag(self.tag);
    }

    /// A request header (what an initiator sends).
    pub fn request(major: u16, minor: u8, command: Command, tag: [u8; 4]) -> Repr {
        Repr {
            version: VERSION,
            flags: 0,
            error: 0,
            major,
            minor,
            command,
            tag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AoE part of the Linux initiator's 32-byte discovery broadcast.
    static QC_BCAST: [u8; 10] = [0x10, 0x00, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0];
    /// A response with error 5 for shelf 7 slot 3, tag 0xdeadbeef.
    static ERR_REPLY: [u8; 10] = [0x1c, 0x05, 0x00, 0x07, 0x03, 0x00, 0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&QC_BCAST[..]).unwrap();
        assert_eq!(p.version(), 1);
        assert!(!p.is_response());
        assert_eq!(p.major(), MAJOR_ANY);
        assert_eq!(p.minor(), MINOR_ANY);
        assert_eq!(p.command(), Command::QueryConfig);
        assert_eq!(p.tag(), [0; 4]);
        let e = Packet::new_checked(&ERR_REPLY[..]).unwrap();
        assert!(e.is_response() && e.is_error());
        assert_eq!(e.error(), ErrorCode::BadVersion as u8);
    }

    #[test]
    fn construct_and_emit() {
        let r = Repr {
            version: 1,
            flags: FLAG_RESPONSE | FLAG_ERROR,
            error: 5,
            major: 7,
            minor: 3,
            command: Command::Ata,
            tag: [0xde, 0xad, 0xbe, 0xef],
        };
        let mut b = [0xa5u8; 10];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, ERR_REPLY);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])).unwrap(), r);
    }

    #[test]
    fn commands_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Command::from(v)), v);
        }
    }

    #[test]
    fn truncated() {
        assert!(Packet::new_checked(&QC_BCAST[..9]).is_err());
    }
}
