//! Reserve/Release argument (frame bytes 24..26) and its MAC list.
#![forbid(unsafe_code)]

use super::{MacAddr, Result, WireError};

mod field {
    pub const RCMD: usize = 0;
    pub const NMACS: usize = 1;
}

/// Length of the argument before the MACs.
pub const HEADER_LEN: usize = field::NMACS + 1;

/// RCmd values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveCmd {
    /// Read the reserve list.
    Read,
    /// Set it if empty or held by the requester (NMacs 0 releases).
    Set,
    /// Set unconditionally.
    ForceSet,
    /// Anything else (AoE error 2).
    Unknown(u8),
}

impl From<u8> for ReserveCmd {
    fn from(v: u8) -> Self {
        match v {
            0 => ReserveCmd::Read,
            1 => ReserveCmd::Set,
            2 => ReserveCmd::ForceSet,
            x => ReserveCmd::Unknown(x),
        }
    }
}

impl From<ReserveCmd> for u8 {
    fn from(c: ReserveCmd) -> u8 {
        match c {
            ReserveCmd::Read => 0,
            ReserveCmd::Set => 1,
            ReserveCmd::ForceSet => 2,
            ReserveCmd::Unknown(x) => x,
        }
    }
}

/// View over the Reserve/Release argument.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap and check that `nmacs` MACs fit.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok when the header and `nmacs` MACs fit.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + 6 * self.nmacs() as usize {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// RCmd.
    pub fn rcmd(&self) -> ReserveCmd {
        self.buffer.as_ref()[field::RCMD].into()
    }

    /// Number of MACs.
    pub fn nmacs(&self) -> u8 {
        self.buffer.as_ref()[field::NMACS]
    }

    /// MAC `i`.
    pub fn mac(&self, i: usize) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[HEADER_LEN + 6 * i..])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set RCmd.
    pub fn set_rcmd(&mut self, c: ReserveCmd) {
        self.buffer.as_mut()[field::RCMD] = c.into();
    }

    /// Set the list (count and MACs); the caller sized the buffer.
    pub fn set_macs(&mut self, macs: &[MacAddr]) {
        let b = self.buffer.as_mut();
        b[field::NMACS] = macs.len() as u8;
        for (i, m) in macs.iter().enumerate() {
            b[HEADER_LEN + 6 * i..HEADER_LEN + 6 * i + 6].copy_from_slice(&m.0);
        }
    }
}

/// Bytes of an RR argument carrying `n` MACs.
pub const fn buffer_len(n: usize) -> usize {
    HEADER_LEN + 6 * n
}

#[cfg(test)]
mod tests {
    use super::*;

    static SET_TWO: [u8; 14] = [1, 2, 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&SET_TWO[..]).unwrap();
        assert_eq!(p.rcmd(), ReserveCmd::Set);
        assert_eq!(p.nmacs(), 2);
        assert_eq!(p.mac(1), MacAddr([2, 0, 0, 0, 0, 2]));
    }

    #[test]
    fn construct() {
        let mut b = [0xa5u8; 14];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_rcmd(ReserveCmd::Set);
        p.set_macs(&[MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2])]);
        assert_eq!(b, SET_TWO);
    }

    #[test]
    fn truncated() {
        assert!(Packet::new_checked(&SET_TWO[..13]).is_err());
        assert!(Packet::new_checked(&SET_TWO[..1]).is_err());
    }
}
