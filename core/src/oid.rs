//! Object identifiers.
//!
//! ZODB stores an oid as 8 big-endian bytes; the root object is oid 0 and
//! `new_oid` hands out max-oid + 1. We keep the numeric form because every
//! consumer (index, pack, ZEO) compares and orders oids numerically, and the
//! big-endian byte order makes numeric order equal to ZODB's byte order.

use std::fmt;
use std::str::FromStr;

/// An 8-byte ZODB object id, held as the big-endian integer it encodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oid(pub u64);

impl Oid {
    /// The root object, created by `DB.__init__` in the first transaction.
    pub const ROOT: Oid = Oid(0);

    /// The oid encoded by 8 big-endian bytes.
    pub const fn from_bytes(b: [u8; 8]) -> Oid {
        Oid(u64::from_be_bytes(b))
    }

    /// The oid encoded by exactly 8 bytes, or `None` for any other length
    /// (pickled oids come from untrusted data).
    pub fn from_slice(b: &[u8]) -> Option<Oid> {
        Some(Oid::from_bytes(b.try_into().ok()?))
    }

    /// The 8 big-endian bytes ZODB writes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

/// 16 lowercase hex digits, as fsdump and zodbtools print oids.
impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Error for an oid given as text that is not hex of at most 16 digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid oid {text:?}: expected up to 16 hex digits (optionally prefixed by 0x)")]
pub struct ParseOidError {
    /// The text that was given.
    pub text: String,
}

/// Accepts `0000000000000001`, `1`, and `0x1`, as ZODB's scripts do.
impl FromStr for Oid {
    type Err = ParseOidError;
    fn from_str(s: &str) -> Result<Oid, ParseOidError> {
        let err = || ParseOidError { text: s.to_owned() };
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|c| c.is_ascii_hexdigit())
        {
            return Err(err());
        }
        u64::from_str_radix(digits, 16).map(Oid).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_order() {
        let a = Oid::from_bytes([0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(a, Oid(256));
        assert_eq!(a.to_bytes(), [0, 0, 0, 0, 0, 0, 1, 0]);
        assert!(Oid(255) < a);
        assert_eq!(Oid::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn display_and_parse() {
        assert_eq!(Oid(0x2a).to_string(), "000000000000002a");
        assert_eq!("000000000000002a".parse::<Oid>().unwrap(), Oid(42));
        assert_eq!("0x2a".parse::<Oid>().unwrap(), Oid(42));
        assert!("xyz".parse::<Oid>().is_err());
        assert!("00000000000000001".parse::<Oid>().is_err());
        assert!("".parse::<Oid>().is_err());
    }
}
