//! Transaction metadata as storages keep it.

use bytes::Bytes;

use crate::Tid;

/// The status byte of a FileStorage transaction record, which ZEO and the
/// iterator API also expose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    /// `' '`: committed and not yet packed.
    Committed,
    /// `'p'`: committed, and written (or kept) by pack; undo stops here.
    Packed,
    /// `'c'`: voted but not finished. Only ever at a file's tail, after a crash.
    Voted,
    /// `'u'`: legacy "undone" status; readers skip such transactions.
    Undone,
}

impl TxnStatus {
    /// The status of a status byte, or `None` for a byte ZODB never writes.
    pub const fn from_byte(b: u8) -> Option<TxnStatus> {
        match b {
            b' ' => Some(TxnStatus::Committed),
            b'p' => Some(TxnStatus::Packed),
            b'c' => Some(TxnStatus::Voted),
            b'u' => Some(TxnStatus::Undone),
            _ => None,
        }
    }

    /// The byte written on disk.
    pub const fn as_byte(self) -> u8 {
        match self {
            TxnStatus::Committed => b' ',
            TxnStatus::Packed => b'p',
            TxnStatus::Voted => b'c',
            TxnStatus::Undone => b'u',
        }
    }
}

/// What a committer says about its transaction: user, description and the
/// extension. The strings are raw bytes because that is what is stored (ZODB
/// encodes text as UTF-8 but Python 2 wrote whatever it was given); the
/// extension is kept as its pickled bytes so that copying it is exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnMeta {
    /// `user` field (ZODB: `user_name`).
    pub user: Bytes,
    /// `description` field.
    pub description: Bytes,
    /// The extension as stored: empty, or a pickled dict.
    pub extension: Bytes,
}

/// The header of a committed transaction, as an iterator yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnInfo {
    /// The transaction's id.
    pub tid: Tid,
    /// Its status byte.
    pub status: TxnStatus,
    /// User, description and extension.
    pub meta: TxnMeta,
}
