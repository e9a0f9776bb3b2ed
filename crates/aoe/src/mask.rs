//! Mac Mask List argument (frame bytes 24..28) and its 8-byte directives.
#![forbid(unsafe_code)]

use super::{MacAddr, Result, WireError};

mod field {
    pub const RESERVED: usize = 0;
    pub const MCMD: usize = 1;
    pub const MERROR: usize = 2;
    pub const DIR_COUNT: usize = 3;
}

/// Length of the argument before the directives.
pub const HEADER_LEN: usize = field::DIR_COUNT + 1;
/// Length of one directive.
pub const DIRECTIVE_LEN: usize = 8;

/// MCmd values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskCmd {
    /// Read the list.
    Read,
    /// Apply the directives.
    Edit,
    /// Anything else (AoE error 2).
    Unknown(u8),
}

impl From<u8> for MaskCmd {
    fn from(v: u8) -> Self {
        match v {
            0 => MaskCmd::Read,
            1 => MaskCmd::Edit,
            x => MaskCmd::Unknown(x),
        }
    }
}

impl From<MaskCmd> for u8 {
    fn from(c: MaskCmd) -> u8 {
        match c {
            MaskCmd::Read => 0,
            MaskCmd::Edit => 1,
            MaskCmd::Unknown(x) => x,
        }
    }
}

/// MError values in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MaskError {
    /// Success.
    None = 0,
    /// Unspecified error.
    Unspecified = 1,
    /// Bad DCmd directive.
    BadDirective = 2,
    /// Mask list full.
    ListFull = 3,
}

/// DCmd values of a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirCmd {
    /// No directive (used in replies).
    None,
    /// Add the MAC.
    Add,
    /// Delete the MAC.
    Delete,
    /// Anything else (MError 2).
    Unknown(u8),
}

impl From<u8> for DirCmd {
    fn from(v: u8) -> Self {
        match v {
            0 => DirCmd::None,
            1 => DirCmd::Add,
            2 => DirCmd::Delete,
            x => DirCmd::Unknown(x),
        }
    }
}

impl From<DirCmd> for u8 {
    fn from(c: DirCmd) -> u8 {
        match c {
            DirCmd::None => 0,
            DirCmd::Add => 1,
            DirCmd::Delete => 2,
            DirCmd::Unknown(x) => x,
        }
    }
}

/// View over the Mac Mask argument.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap and check the fixed part and every directive the count names.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the header and `dir_count` directives fit.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + self.dir_count() as usize * DIRECTIVE_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// MCmd.
    pub fn mcmd(&self) -> MaskCmd {
        self.buffer.as_ref()[field::MCMD].into()
    }

    /// MError.
    pub fn merror(&self) -> u8 {
        self.buffer.as_ref()[field::MERROR]
    }

    /// Directive count.
    pub fn dir_count(&self) -> u8 {
        self.buffer.as_ref()[field::DIR_COUNT]
    }

    /// Directive `i`: (DCmd, MAC).
    pub fn directive(&self, i: usize) -> (DirCmd, MacAddr) {
        let d = &self.buffer.as_ref()[HEADER_LEN + i * DIRECTIVE_LEN..][..DIRECTIVE_LEN];
        (d[1].into(), MacAddr::from_bytes(&d[2..8]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set MCmd (and zero the reserved byte).
    pub fn set_mcmd(&mut self, c: MaskCmd) {
        let b = self.buffer.as_mut();
        b[field::RESERVED] = 0;
        b[field::MCMD] = c.into();
    }

    /// Set MError.
    pub fn set_merror(&mut self, e: u8) {
        self.buffer.as_mut()[field::MERROR] = e;
    }

    /// Set the directive count.
    pub fn set_dir_count(&mut self, n: u8) {
        self.buffer.as_mut()[field::DIR_COUNT] = n;
    }

    /// Write directive `i`.
    pub fn set_directive(&mut self, i: usize, cmd: DirCmd, mac: MacAddr) {
        let d = &mut self.buffer.as_mut()[HEADER_LEN + i * DIRECTIVE_LEN..][..DIRECTIVE_LEN];
        d[0] = 0;
        d[1] = cmd.into();
        d[2..8].copy_from_slice(&mac.0);
    }
}

/// Bytes of a Mac Mask argument carrying `n` directives.
pub const fn buffer_len(n: usize) -> usize {
    HEADER_LEN + n * DIRECTIVE_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edit: add 02:..:01, delete 02:..:02.
    static EDIT: [u8; 20] = [0, 1, 0, 2, 0, 1, 2, 0, 0, 0, 0, 1, 0, 2, 2, 0, 0, 0, 0, 2];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&EDIT[..]).unwrap();
        assert_eq!(p.mcmd(), MaskCmd::Edit);
        assert_eq!(p.dir_count(), 2);
        assert_eq!(p.directive(0), (DirCmd::Add, MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(
            p.directive(1),
            (DirCmd::Delete, MacAddr([2, 0, 0, 0, 0, 2]))
        );
    }

    #[test]
    fn construct() {
        let mut b = [0xa5u8; 20];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_mcmd(MaskCmd::Edit);
        p.set_merror(0);
        p.set_dir_count(2);
        p.set_directive(0, DirCmd::Add, MacAddr([2, 0, 0, 0, 0, 1]));
        p.set_directive(1, DirCmd::Delete, MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(b, EDIT);
    }

    #[test]
    fn count_beyond_frame() {
        assert_eq!(
            Packet::new_checked(&EDIT[..19]).unwrap_err(),
            WireError::Truncated
        );
        assert!(Packet::new_checked(&EDIT[..3]).is_err());
    }
}
