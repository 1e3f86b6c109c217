//! The FileStorage record format, and nothing else: fixed-size headers
//! decoded from and encoded to bytes. No I/O happens here; the engine reads
//! bytes through a [`crate::backend`] and hands them to these functions.
//!
//! ```text
//! file:        magic "FS21" | "FS30", then transaction records back to back
//! transaction: tid u64 | tlen u64 | status u8 | ulen u16 | dlen u16 | elen u16   (23 bytes)
//!              user[ulen] | description[dlen] | extension[elen]
//!              data records ...
//!              tlen u64 (redundant copy; the next transaction starts at pos + tlen + 8)
//! data record: oid u64 | tid u64 | prev u64 | tloc u64 | vlen u16 | plen u64     (42 bytes)
//!              pickle[plen]  or, when plen == 0, back u64 (0: the object does not exist)
//! ```
//! All integers are big-endian. See `docs/filestorage-format.md` and
//! ZODB's `FileStorage/format.py` for the reference.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::little_endian_bytes
)]

use zodb_core::{Oid, Tid, TxnStatus};

/// Length of the file magic; the first transaction starts right after it.
pub const MAGIC_LEN: u64 = 4;
/// Fixed part of a transaction header (before user/description/extension).
pub const TXN_HEADER_LEN: u64 = 23;
/// A data record header.
pub const DATA_HEADER_LEN: u64 = 42;
/// The redundant length that ends every transaction record.
pub const TXN_TRAILER_LEN: u64 = 8;

/// Which Python wrote the file; it decides the pickle protocol of appended
/// records (Python 2 readers cannot read protocol 3 from old stacks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Magic {
    /// `FS21`: written by ZODB on Python 2 (pickle protocol 1, 2 or 3).
    Fs21,
    /// `FS30`: written by ZODB on Python 3 (pickle protocol 3).
    Fs30,
}

impl Magic {
    /// The magic of a file's first 4 bytes, or `None` if it is not FileStorage.
    pub fn from_bytes(b: [u8; 4]) -> Option<Magic> {
        match &b {
            b"FS21" => Some(Magic::Fs21),
            b"FS30" => Some(Magic::Fs30),
            _ => None,
        }
    }

    /// The 4 bytes written at the start of the file.
    pub const fn as_bytes(self) -> &'static [u8; 4] {
        match self {
            Magic::Fs21 => b"FS21",
            Magic::Fs30 => b"FS30",
        }
    }

    /// The magic as text, `FS21` or `FS30`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Magic::Fs21 => "FS21",
            Magic::Fs30 => "FS30",
        }
    }
}

fn be64(b: &[u8; 8]) -> u64 {
    u64::from_be_bytes(*b)
}

/// Splits a fixed-size array into fixed-size pieces without indexing that
/// could panic: the sizes are checked by the type system.
macro_rules! take {
    ($buf:expr, $at:expr, $n:expr) => {{
        let mut out = [0u8; $n];
        out.copy_from_slice(&$buf[$at..$at + $n]);
        out
    }};
}

/// The fixed 23-byte header of a transaction record, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnHeader {
    /// Transaction id.
    pub tid: Tid,
    /// Record length without the 8-byte trailer: header, strings and data records.
    pub tlen: u64,
    /// Raw status byte (`' '`, `'p'`, `'c'`, `'u'`; anything else is corrupt).
    pub status: u8,
    /// Length of the user name.
    pub ulen: u16,
    /// Length of the description.
    pub dlen: u16,
    /// Length of the extension.
    pub elen: u16,
}

impl TxnHeader {
    /// Decodes the fixed header; any bytes are a structurally valid header,
    /// so consistency is the reader's job ([`TxnHeader::check`]).
    #[allow(clippy::indexing_slicing)] // constant ranges inside a [u8; 23]
    pub fn decode(b: &[u8; 23]) -> TxnHeader {
        TxnHeader {
            tid: Tid(be64(&take!(b, 0, 8))),
            tlen: be64(&take!(b, 8, 8)),
            status: b[16],
            ulen: u16::from_be_bytes(take!(b, 17, 2)),
            dlen: u16::from_be_bytes(take!(b, 19, 2)),
            elen: u16::from_be_bytes(take!(b, 21, 2)),
        }
    }

    /// The 23 bytes ZODB writes for this header.
    #[allow(clippy::indexing_slicing)] // constant ranges inside a [u8; 23]
    pub fn encode(&self) -> [u8; 23] {
        let mut b = [0u8; 23];
        b[0..8].copy_from_slice(&self.tid.to_bytes());
        b[8..16].copy_from_slice(&self.tlen.to_be_bytes());
        b[16] = self.status;
        b[17..19].copy_from_slice(&self.ulen.to_be_bytes());
        b[19..21].copy_from_slice(&self.dlen.to_be_bytes());
        b[21..23].copy_from_slice(&self.elen.to_be_bytes());
        b
    }

    /// The status, or `None` for a byte ZODB never writes.
    pub fn status(&self) -> Option<TxnStatus> {
        TxnStatus::from_byte(self.status)
    }

    /// Fixed header plus the three strings: where the data records start,
    /// relative to the transaction's position.
    pub fn header_len(&self) -> u64 {
        TXN_HEADER_LEN + u64::from(self.ulen) + u64::from(self.dlen) + u64::from(self.elen)
    }

    /// The whole record including the redundant trailing length, i.e. the
    /// distance to the next transaction. Saturates on absurd lengths (the
    /// reader rejects those against the file size first).
    pub fn record_len(&self) -> u64 {
        self.tlen.saturating_add(TXN_TRAILER_LEN)
    }

    /// Checks the header's internal consistency. Status and the
    /// strings-fit-in-tlen rule are what ZODB's `checkTxn` requires of
    /// every committed transaction.
    pub fn check(&self) -> Result<(), Problem> {
        if self.status().is_none() {
            return Err(Problem::BadStatus(self.status));
        }
        if self.tlen < self.header_len() {
            return Err(Problem::TlenTooSmall {
                tlen: self.tlen,
                header_len: self.header_len(),
            });
        }
        Ok(())
    }
}

/// The fixed 42-byte header of a data record, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// The object.
    pub oid: Oid,
    /// The revision's serial (the enclosing transaction's tid).
    pub tid: Tid,
    /// Position of the oid's previous revision, 0 if none.
    pub prev: u64,
    /// Position of the enclosing transaction record.
    pub tloc: u64,
    /// Version-string length: always 0 since ZODB 3.9 removed versions.
    pub vlen: u16,
    /// Pickle length; 0 means an 8-byte back pointer follows instead.
    pub plen: u64,
}

impl DataHeader {
    /// Decodes the fixed header (any 42 bytes decode; see [`DataHeader::check`]).
    #[allow(clippy::indexing_slicing)] // constant ranges inside a [u8; 42]
    pub fn decode(b: &[u8; 42]) -> DataHeader {
        DataHeader {
            oid: Oid(be64(&take!(b, 0, 8))),
            tid: Tid(be64(&take!(b, 8, 8))),
            prev: be64(&take!(b, 16, 8)),
            tloc: be64(&take!(b, 24, 8)),
            vlen: u16::from_be_bytes(take!(b, 32, 2)),
            plen: be64(&take!(b, 34, 8)),
        }
    }

    /// The 42 bytes ZODB writes for this header.
    #[allow(clippy::indexing_slicing)] // constant ranges inside a [u8; 42]
    pub fn encode(&self) -> [u8; 42] {
        let mut b = [0u8; 42];
        b[0..8].copy_from_slice(&self.oid.to_bytes());
        b[8..16].copy_from_slice(&self.tid.to_bytes());
        b[16..24].copy_from_slice(&self.prev.to_be_bytes());
        b[24..32].copy_from_slice(&self.tloc.to_be_bytes());
        b[32..34].copy_from_slice(&self.vlen.to_be_bytes());
        b[34..42].copy_from_slice(&self.plen.to_be_bytes());
        b
    }

    /// Header plus pickle, or header plus back pointer when `plen == 0`.
    pub fn record_len(&self) -> u64 {
        DATA_HEADER_LEN.saturating_add(if self.plen == 0 { 8 } else { self.plen })
    }

    /// Checks this record (at `pos`) against its transaction (at `tpos`,
    /// ending at `tend` = tpos + tlen), as ZODB's `checkData` and
    /// `read_index` do: it belongs to that transaction, fits inside it, and
    /// points only backwards. The back pointer is checked by the caller once
    /// read ([`check_back`]).
    pub fn check(&self, pos: u64, tpos: u64, tend: u64) -> Result<(), Problem> {
        if self.vlen != 0 {
            return Err(Problem::Version(self.vlen));
        }
        if self.tloc != tpos {
            return Err(Problem::WrongTxn {
                tloc: self.tloc,
                tpos,
            });
        }
        let end = pos.saturating_add(self.record_len());
        if end > tend {
            return Err(Problem::DataPastTxn { end, tend });
        }
        if self.prev >= pos {
            return Err(Problem::PrevNotBackwards { prev: self.prev });
        }
        Ok(())
    }
}

/// Checks a back pointer read at data record `pos`: it must point backwards
/// (so that resolving a chain always terminates).
pub fn check_back(pos: u64, back: u64) -> Result<(), Problem> {
    if back >= pos {
        return Err(Problem::BackNotBackwards { back });
    }
    Ok(())
}

/// Reads a big-endian u64 from exactly 8 bytes.
pub fn decode_u64(b: [u8; 8]) -> u64 {
    u64::from_be_bytes(b)
}

/// What is wrong with a record. Carries the evidence; the position and the
/// file are added by [`crate::Error::Corrupt`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not `FS21`/`FS30`.
    #[error("bad magic {0:?}: not a FileStorage file (expected \"FS21\" or \"FS30\")")]
    BadMagic([u8; 4]),
    /// The record extends past the end of the file (or of the valid area).
    #[error("truncated: needs {need} bytes, only {have} available")]
    Truncated {
        /// Bytes the record needs from its position.
        need: u64,
        /// Bytes available from its position.
        have: u64,
    },
    /// Status byte not in `' '`, `'p'`, `'c'`, `'u'`.
    #[error("invalid transaction status {:?}", char::from(*.0))]
    BadStatus(u8),
    /// The record is shorter than its own header.
    #[error("transaction length {tlen} is less than its header length {header_len}")]
    TlenTooSmall {
        /// Length field.
        tlen: u64,
        /// Header plus strings.
        header_len: u64,
    },
    /// The redundant length at the end disagrees with the header.
    #[error("redundant transaction length {trailer} != header length {tlen}")]
    TrailerMismatch {
        /// Length in the header.
        tlen: u64,
        /// Length in the trailer.
        trailer: u64,
    },
    /// Tids must grow strictly through the file.
    #[error("tid {tid} is not greater than the previous transaction's {prev}")]
    TidNotIncreasing {
        /// This transaction's tid.
        tid: Tid,
        /// The previous transaction's tid.
        prev: Tid,
    },
    /// Data records do not exactly fill the transaction.
    #[error("data records end at {end}, transaction data ends at {tend}")]
    DataMisaligned {
        /// Where the last record ended.
        end: u64,
        /// Where the transaction's data ends.
        tend: u64,
    },
    /// A data record's version length is set (ZODB < 3.9 versions).
    #[error("non-zero version length {0}: versions are not supported by ZODB since 3.9")]
    Version(u16),
    /// tloc does not point at the enclosing transaction.
    #[error("data record points to transaction at {tloc}, but is inside the one at {tpos}")]
    WrongTxn {
        /// The record's tloc.
        tloc: u64,
        /// The enclosing transaction's position.
        tpos: u64,
    },
    /// The record runs past its transaction.
    #[error("data record ends at {end}, past its transaction's end {tend}")]
    DataPastTxn {
        /// Record end.
        end: u64,
        /// Transaction data end.
        tend: u64,
    },
    /// prev must point to an earlier record.
    #[error("previous-revision pointer {prev} does not point backwards")]
    PrevNotBackwards {
        /// The pointer.
        prev: u64,
    },
    /// back must point to an earlier record.
    #[error("back pointer {back} does not point backwards")]
    BackNotBackwards {
        /// The pointer.
        back: u64,
    },
    /// A record reached through the index or a pointer is for another oid.
    #[error("expected a record of oid {expected}, found oid {found}")]
    OidMismatch {
        /// The oid being looked up.
        expected: Oid,
        /// The oid in the record.
        found: Oid,
    },
    /// A record's tid is not its transaction's.
    #[error("data record tid {found} differs from its transaction's tid {txn}")]
    TidMismatch {
        /// The transaction's tid.
        txn: Tid,
        /// The record's tid.
        found: Tid,
    },
    /// A voted (unfinished) transaction with committed ones after it.
    #[error(
        "transaction has status 'c' (voted, unfinished) but a committed transaction follows at {later}"
    )]
    VotedNotLast {
        /// Position of the later committed transaction.
        later: u64,
    },
    /// A tid that ZODB never writes (0 or above `maxtid`).
    #[error("invalid tid {0}")]
    InvalidTid(Tid),
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fresh_database_first_transaction() {
        // The first transaction of a ZODB 6.4 database (spec §2, verified).
        let mut raw = [0u8; 23];
        raw.copy_from_slice(&hex("040d42357a3fa577000000000000009a20000000190000"));
        let h = TxnHeader::decode(&raw);
        assert_eq!(h.tid, Tid(0x040d_4235_7a3f_a577));
        assert_eq!(h.tlen, 154);
        assert_eq!(h.status(), Some(TxnStatus::Committed));
        assert_eq!((h.ulen, h.dlen, h.elen), (0, 25, 0));
        assert_eq!(h.header_len(), 48);
        assert_eq!(h.record_len(), 162);
        assert_eq!(h.check(), Ok(()));
        assert_eq!(h.encode(), raw);
    }

    #[test]
    fn data_record_checks() {
        let h = DataHeader {
            oid: Oid(1),
            tid: Tid(5),
            prev: 0,
            tloc: 4,
            vlen: 0,
            plen: 10,
        };
        assert_eq!(h.record_len(), 52);
        assert_eq!(h.check(52, 4, 200), Ok(()));
        assert_eq!(
            h.check(52, 5, 200),
            Err(Problem::WrongTxn { tloc: 4, tpos: 5 })
        );
        assert_eq!(
            h.check(52, 4, 100),
            Err(Problem::DataPastTxn {
                end: 104,
                tend: 100
            })
        );
        let back = DataHeader {
            plen: 0,
            prev: 60,
            ..h
        };
        assert_eq!(back.record_len(), 50);
        assert_eq!(
            back.check(52, 4, 200),
            Err(Problem::PrevNotBackwards { prev: 60 })
        );
        assert_eq!(
            check_back(52, 52),
            Err(Problem::BackNotBackwards { back: 52 })
        );
        assert_eq!(
            DataHeader { vlen: 3, ..h }.check(52, 4, 200),
            Err(Problem::Version(3))
        );
    }

    #[test]
    fn txn_header_checks() {
        let h = TxnHeader {
            tid: Tid(1),
            tlen: 30,
            status: b'x',
            ulen: 5,
            dlen: 5,
            elen: 0,
        };
        assert_eq!(h.check(), Err(Problem::BadStatus(b'x')));
        let h = TxnHeader { status: b' ', ..h };
        assert_eq!(
            h.check(),
            Err(Problem::TlenTooSmall {
                tlen: 30,
                header_len: 33
            })
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0))
            .collect()
    }

    proptest! {
        #[test]
        fn txn_header_round_trips(tid: u64, tlen: u64, status: u8, ulen: u16, dlen: u16, elen: u16) {
            let h = TxnHeader { tid: Tid(tid), tlen, status, ulen, dlen, elen };
            prop_assert_eq!(TxnHeader::decode(&h.encode()), h);
            let _ = h.check();
            let _ = h.record_len();
        }

        #[test]
        fn data_header_round_trips(oid: u64, tid: u64, prev: u64, tloc: u64, vlen: u16, plen: u64,
                                   pos: u64, tpos: u64, tend: u64) {
            let h = DataHeader { oid: Oid(oid), tid: Tid(tid), prev, tloc, vlen, plen };
            prop_assert_eq!(DataHeader::decode(&h.encode()), h);
            let _ = h.check(pos, tpos, tend);
        }

        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 42)) {
            let mut d = [0u8; 42];
            d.copy_from_slice(&b);
            let h = DataHeader::decode(&d);
            prop_assert_eq!(h.encode(), d);
            let mut t = [0u8; 23];
            t.copy_from_slice(&b[..23]);
            prop_assert_eq!(TxnHeader::decode(&t).encode(), t);
        }
    }
}
