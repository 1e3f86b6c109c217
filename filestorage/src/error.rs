//! Errors of the FileStorage crate. Every corruption names the file, the
//! byte offset, the kind of record and what is wrong with it, so an operator
//! can go straight to the bytes (`fsdump`, `hexdump -s`).
//!
//! An error that wraps another (an OS error, a pickle error) says what was
//! being done and leaves the cause to `source()`, so a report that walks
//! the chain (`zodb_core::error_report`, anyhow's `{:#}`) says each part once.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::format::Problem;

/// The kind of record an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// The 4-byte magic.
    FileHeader,
    /// A transaction record (header, strings or trailer).
    Transaction,
    /// A data record.
    DataRecord,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::FileHeader => "file header",
            RecordKind::Transaction => "transaction record",
            RecordKind::DataRecord => "data record",
        })
    }
}

/// Everything that can go wrong reading a FileStorage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes on disk violate the format.
    #[error("{}: {record} at offset {pos}: {problem}", path.display())]
    Corrupt {
        /// The Data.fs.
        path: PathBuf,
        /// Byte offset of the record.
        pos: u64,
        /// Which record.
        record: RecordKind,
        /// What is wrong.
        problem: Problem,
    },
    /// An operating-system error.
    #[error("{}: {op}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The `.index` file is unusable (the storage falls back to a scan; this
    /// is reported only when an index was explicitly asked for).
    #[error("{}: {problem}", path.display())]
    Index {
        /// The `.index` file.
        path: PathBuf,
        /// What is wrong.
        problem: crate::index_file::IndexFileProblem,
    },
    /// The `.lock` could not be taken: another process is writing.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// A write was attempted on a storage opened read-only.
    #[error("{}: opened read-only", path.display())]
    ReadOnly {
        /// The Data.fs.
        path: PathBuf,
    },
    /// A record's pickle could not be read where its content matters
    /// (references for pack's garbage collection).
    #[error("{}: data record at offset {pos}: undecodable pickle", path.display())]
    Pickle {
        /// The Data.fs.
        path: PathBuf,
        /// The record.
        pos: u64,
        /// The decoder's error.
        source: zodb_core::pickle::PickleError,
    },
    /// A pickle could not be written (the `.index`).
    #[error("{}: cannot encode", path.display())]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// The encoder's error.
        source: zodb_core::pickle::EncodeError,
    },
    /// A position beyond what the index format can hold (256 TiB).
    #[error("{}: data record at offset {pos} is beyond the 48-bit positions an index can hold", path.display())]
    TooLarge {
        /// The Data.fs.
        path: PathBuf,
        /// The offending position.
        pos: u64,
    },
}

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for zodb_core::StorageError {
    fn from(e: Error) -> zodb_core::StorageError {
        match e {
            Error::ReadOnly { .. } => zodb_core::StorageError::ReadOnly,
            e => zodb_core::StorageError::Backend(Box::new(e)),
        }
    }
}
