//! Target addresses written as text: `SHELF.SLOT`, or `eSHELF.SLOT` as Linux
//! names the devices (`/dev/etherd/e1.2`).
//!
//! The one parser every command line and the control socket use, so that a
//! target address means the same thing everywhere:
//! - shelf (major) 0-65534 and slot (minor) 0-254 name one target;
//! - shelf 65535 (`0xffff`) and slot 255 (`0xff`) are the broadcast values
//!   AoE reserves for "any shelf" / "any slot". Only a Query Config (discovery)
//!   may carry them, so a caller says whether it accepts them
//!   ([`Broadcast::Allow`]) or not ([`Broadcast::Refuse`]: I/O, resize,
//!   benchmarks).
//!
//! Errors name the text and the value at fault.

use thiserror::Error;

/// The broadcast shelf: any shelf (Query Config only).
pub const SHELF_BROADCAST: u16 = 0xffff;
/// The broadcast slot: any slot (Query Config only).
pub const SLOT_BROADCAST: u8 = 0xff;

/// Whether a target address may use the broadcast shelf or slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// A query: shelf 65535 and slot 255 mean "any".
    Allow,
    /// One target (I/O, resize, a benchmark): the broadcast values are refused.
    Refuse,
}

/// Why a target address was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetError {
    /// Not two numbers separated by a dot.
    #[error("{0:?}: expected SHELF.SLOT, e.g. 1.2 (shelf 0-65534, slot 0-254)")]
    Syntax(String),
    /// The shelf is not a number in 0-65535.
    #[error(
        "{text:?}: shelf {shelf:?} is not a shelf number (0-65534; 65535 is the broadcast shelf)"
    )]
    Shelf {
        /// The whole address as given.
        text: String,
        /// The shelf part.
        shelf: String,
    },
    /// The slot is not a number in 0-255.
    #[error("{text:?}: slot {slot:?} is not a slot number (0-254; 255 is the broadcast slot)")]
    Slot {
        /// The whole address as given.
        text: String,
        /// The slot part.
        slot: String,
    },
    /// The broadcast shelf or slot where one target is meant.
    #[error("{0:?}: shelf 65535 and slot 255 are broadcast addresses, not a target")]
    Broadcast(String),
}

/// Parse `SHELF.SLOT` or `eSHELF.SLOT` (surrounding blanks ignored) into
/// `(shelf, slot)`, under the broadcast rule `broadcast`.
pub fn parse_target(s: &str, broadcast: Broadcast) -> Result<(u16, u8), TargetError> {
    let t = s.trim();
    let t = t.strip_prefix('e').unwrap_or(t);
    let (a, b) = t
        .split_once('.')
        .ok_or_else(|| TargetError::Syntax(s.to_string()))?;
    // `u16::from_str` accepts a leading '+'; an address has digits only.
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    let shelf: u16 = a
        .parse()
        .ok()
        .filter(|_| digits(a))
        .ok_or_else(|| TargetError::Shelf {
            text: s.to_string(),
            shelf: a.to_string(),
        })?;
    let slot: u8 = b
        .parse()
        .ok()
        .filter(|_| digits(b))
        .ok_or_else(|| TargetError::Slot {
            text: s.to_string(),
            slot: b.to_string(),
        })?;
    if broadcast == Broadcast::Refuse && (shelf == SHELF_BROADCAST || slot == SLOT_BROADCAST) {
        return Err(TargetError::Broadcast(s.to_string()));
    }
    Ok((shelf, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_target() {
        let p = |s| parse_target(s, Broadcast::Refuse);
        assert_eq!(p("1.2"), Ok((1, 2)));
        assert_eq!(p("e1.2"), Ok((1, 2)));
        assert_eq!(p(" e7.3\n"), Ok((7, 3)));
        assert_eq!(p("0.0"), Ok((0, 0)));
        assert_eq!(p("65534.254"), Ok((65534, 254)));
        assert_eq!(p("65535.1"), Err(TargetError::Broadcast("65535.1".into())));
        assert_eq!(p("1.255"), Err(TargetError::Broadcast("1.255".into())));
    }

    #[test]
    fn queries_may_broadcast() {
        let p = |s| parse_target(s, Broadcast::Allow);
        assert_eq!(p("65535.255"), Ok((SHELF_BROADCAST, SLOT_BROADCAST)));
        assert_eq!(p("e1.255"), Ok((1, SLOT_BROADCAST)));
        assert!(p("65536.0").is_err());
    }

    #[test]
    fn errors_name_the_bad_value() {
        for rule in [Broadcast::Allow, Broadcast::Refuse] {
            let p = |s| parse_target(s, rule);
            assert_eq!(p("1"), Err(TargetError::Syntax("1".into())));
            assert_eq!(p(""), Err(TargetError::Syntax("".into())));
            assert!(
                matches!(p("65536.1"), Err(TargetError::Shelf { shelf, .. }) if shelf == "65536")
            );
            assert!(matches!(p("+1.1"), Err(TargetError::Shelf { .. })));
            assert!(matches!(p("1.300"), Err(TargetError::Slot { slot, .. }) if slot == "300"));
            assert!(matches!(p("1.2.3"), Err(TargetError::Slot { .. })));
            assert!(matches!(p("x1.2"), Err(TargetError::Shelf { .. })));
            assert!(matches!(p("1.-2"), Err(TargetError::Slot { .. })));
        }
        let e = parse_target("1.300", Broadcast::Refuse).unwrap_err();
        assert!(e.to_string().contains("\"300\""), "{e}");
    }
}
