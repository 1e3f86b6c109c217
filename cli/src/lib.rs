//! The tools behind the `zodbrs` binary, as library functions that write to
//! any `io::Write`, so tests compare their output with the Python tools'.
pub mod bench;
pub mod pyrepr;
pub mod serve;
pub mod storage_url;
pub mod tidrange;
pub mod tools;
pub mod zeo_client_bench;

use std::path::Path;

/// Why a tool failed (its output so far may be incomplete).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Reading the Data.fs failed or found it corrupt.
    #[error(transparent)]
    FileStorage(#[from] filestorage::Error),
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] zodb_core::StorageError),
    /// Reading wendelin.core objects (ZBigFile, ZBigArray, ZBlk) failed.
    #[error(transparent)]
    Wendelin(#[from] zblk::Error),
    /// Opening a storage URL failed.
    #[error(transparent)]
    Open(#[from] crate::storage_url::OpenError),
    /// Copying a storage failed (`copy`, `bench copy`).
    #[error(transparent)]
    Copy(#[from] crate::tools::copy::CopyError),
    /// Writing the output failed.
    #[error("writing output")]
    Output(#[from] std::io::Error),
    /// A file other than the output could not be read.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Bad arguments (an unknown oid, a malformed range...).
    #[error("{0}")]
    Usage(String),
    /// A pickle the tool had to read (to disassemble it, say) is malformed;
    /// `what` names it (the transaction's extension, an object's record).
    #[error("{what}")]
    Pickle {
        /// Which pickle, for the message.
        what: String,
        /// What is wrong with it.
        source: zodb_core::pickle::PickleError,
    },
}

impl ToolError {
    /// An I/O error reading `path`.
    pub fn io(path: &Path, source: std::io::Error) -> ToolError {
        ToolError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
