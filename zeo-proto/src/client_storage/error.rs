//! The client's errors, and how they map onto [`StorageError`].
//!
//! Through the storage traits every failure must be a [`StorageError`]:
//! what ZODB names (conflicts, POSKeyError, ReadOnlyError, UndoError,
//! StorageTransactionError) maps to the matching variant, so that callers
//! written against FileStorage handle a ZEO server the same way; the rest
//! (network, protocol, server exceptions without an equivalent) travels as
//! [`StorageError::Backend`] holding a [`ZeoError`], which callers can
//! downcast to.

use std::time::Duration;

use zodb_core::{Oid, StorageError, Tid};

use crate::connection::ConnectionError;
use crate::exception::ZeoException;
use crate::reply::{ServerMessageError, ShapeError};

/// Why a ZEO client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZeoError {
    /// The server's address could not be reached.
    #[error("cannot connect to ZEO server {address}")]
    Connect {
        /// `host:port` or the socket path.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to ZEO server {address} timed out after {after:?}")]
    ConnectTimeout {
        /// `host:port` or the socket path.
        address: String,
        /// The timeout.
        after: Duration,
    },
    /// The handshake or framing failed.
    #[error("ZEO connection to {address} failed")]
    Connection {
        /// `host:port` or the socket path.
        address: String,
        /// What went wrong.
        source: ConnectionError,
    },
    /// `register` was refused (unknown storage name: `ValueError`; a
    /// writable connection to a read-only server: `ReadOnlyError`).
    #[error("ZEO server {address} refused to register storage {storage:?}: {}", exception_summary(.exception))]
    Register {
        /// `host:port` or the socket path.
        address: String,
        /// The storage name asked for.
        storage: String,
        /// The server's exception.
        exception: Box<ZeoException>,
    },
    /// The server's last transaction is older than what this client has
    /// already seen: it was restored from an older copy, or it is another
    /// database. ClientStorage refuses such a server too ("Server behind
    /// client"); the client keeps trying to reconnect.
    #[error(
        "ZEO server {address} is behind this client: its last transaction is {server}, the client has seen {client}"
    )]
    ServerBehind {
        /// `host:port` or the socket path.
        address: String,
        /// The server's last transaction.
        server: Tid,
        /// The client's.
        client: Tid,
    },
    /// The connection was lost while this request waited for its reply.
    /// Nothing is known about its effect unless the method says so.
    #[error("connection to the ZEO server lost during {method}: {reason}")]
    Disconnected {
        /// The method that was waiting.
        method: &'static str,
        /// Why the connection ended.
        reason: String,
    },
    /// No connection came up within the wait timeout.
    #[error("not connected to ZEO server {address} (waited {waited:?}){}", .last_error.as_ref().map(|e| format!("; last attempt: {e}")).unwrap_or_default())]
    NotConnected {
        /// `host:port` or the socket path.
        address: String,
        /// How long the call waited.
        waited: Duration,
        /// Why the last connection attempt failed, if one did.
        last_error: Option<String>,
    },
    /// The connection was lost after `tpc_finish` was sent and before its
    /// reply: the server may or may not have committed (all of the
    /// transaction or nothing: a storage never commits part of one). The
    /// client's cache is verified on reconnection either way.
    #[error(
        "connection to the ZEO server lost during tpc_finish: the transaction may or may not have committed ({reason})"
    )]
    FinishOutcomeUnknown {
        /// Why the connection ended.
        reason: String,
    },
    /// The connection of a transaction in progress was lost: the server
    /// aborted it (a ZEO server aborts the transactions of a closed
    /// connection), so nothing of it was committed.
    #[error(
        "transaction aborted: the connection to the ZEO server was lost before the vote finished ({reason})"
    )]
    TransactionLost {
        /// Why the connection ended.
        reason: String,
    },
    /// The server replied with an exception that has no storage-level
    /// meaning here.
    #[error("ZEO server raised {}", exception_summary(.0))]
    Server(Box<ZeoException>),
    /// The server sent a message this client cannot act on.
    #[error("protocol error from the ZEO server")]
    Protocol(#[from] ServerMessageError),
    /// A reply of the wrong shape for its method.
    #[error("unexpected reply to {method} from the ZEO server")]
    Shape {
        /// The method.
        method: &'static str,
        /// The shape error.
        source: ShapeError,
    },
    /// The server does not offer what the operation needs.
    #[error("{0}")]
    Unsupported(String),
    /// A transaction extension that cannot be sent as a dict.
    #[error("transaction extension cannot be sent to a ZEO server: {0}")]
    Extension(String),
    /// The blob cache directory cannot be used.
    #[error("blob cache directory {}", .path.display())]
    BlobCache {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server's blob directory (`shared_blob_dir`) cannot be used.
    #[error("shared blob directory {}", .path.display())]
    SharedBlobDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// [`ClientOptions`](super::ClientOptions) that contradict each other
    /// or are out of range.
    #[error("ZEO client options: {0}")]
    Options(String),
    /// The client was closed.
    #[error("ZEO client closed")]
    Closed,
    /// The client's runtime could not be started.
    #[error("cannot start the ZEO client's I/O thread")]
    Runtime(#[source] std::io::Error),
}

/// `class path: state`, short, for messages.
fn exception_summary(e: &ZeoException) -> String {
    let mut state = format!("{:?}", e.state());
    if state.len() > 300 {
        let mut cut = 300;
        while !state.is_char_boundary(cut) {
            cut -= 1;
        }
        state.truncate(cut);
        state.push('…');
    }
    format!("{}: {state}", e.class_path())
}

impl From<ZeoError> for StorageError {
    fn from(e: ZeoError) -> StorageError {
        match e {
            ZeoError::Server(exc) => storage_error(*exc, None),
            other => StorageError::Backend(Box::new(other)),
        }
    }
}

/// What a call was about, to give a POSKeyError its meaning.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject {
    /// A load of the object's current or earlier revision.
    Object(Oid),
    /// A load of one exact revision.
    Revision(Oid, Tid),
}

/// The [`StorageError`] ZODB would raise for a server exception.
pub(crate) fn storage_error(exc: ZeoException, subject: Option<Subject>) -> StorageError {
    match exc {
        ZeoException::Conflict(ref c) => match (c.oid, c.serials) {
            (Some(oid), Some((committed, old))) => StorageError::Conflict {
                oid,
                committed,
                old,
            },
            _ => StorageError::Backend(Box::new(ZeoError::Server(Box::new(exc)))),
        },
        ZeoException::ReadConflict(ref c) => match (c.oid, c.serials) {
            (Some(oid), Some((committed, read))) => StorageError::ReadConflict {
                oid,
                committed,
                read,
            },
            _ => StorageError::Backend(Box::new(ZeoError::Server(Box::new(exc)))),
        },
        ZeoException::PosKey(ref args) => {
            let oid = args.first().and_then(crate::value::Value::as_oid);
            match (subject, oid) {
                (Some(Subject::Revision(oid, serial)), _) => {
                    StorageError::NoSuchRevision { oid, serial }
                }
                (Some(Subject::Object(oid)), _) | (None, Some(oid)) => {
                    StorageError::NoSuchObject { oid }
                }
                (None, None) => StorageError::Backend(Box::new(ZeoError::Server(Box::new(exc)))),
            }
        }
        ZeoException::ReadOnly(_) => StorageError::ReadOnly,
        ZeoException::Undo(u) => StorageError::Undo {
            oid: u.oid,
            reason: u.reason,
        },
        ZeoException::MultipleUndo(errs) => StorageError::Undo {
            oid: errs.first().map(|(oid, _)| *oid),
            reason: errs
                .iter()
                .map(|(oid, u)| format!("{oid}: {}", u.reason))
                .collect::<Vec<_>>()
                .join("; "),
        },
        ZeoException::StorageTransaction(ref args) => StorageError::TransactionState(
            args.iter()
                .map(|a| a.as_text().map_or_else(|| format!("{a:?}"), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => StorageError::Backend(Box::new(ZeoError::Server(Box::new(other)))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn zodb_exceptions_become_storage_errors() {
        let e = storage_error(ZeoException::conflict(Oid(1), Tid(5), Tid(3), None), None);
        assert!(matches!(
            e,
            StorageError::Conflict {
                oid: Oid(1),
                committed: Tid(5),
                old: Tid(3)
            }
        ));
        let e = storage_error(
            ZeoException::pos_key(Oid(7)),
            Some(Subject::Revision(Oid(7), Tid(2))),
        );
        assert!(matches!(
            e,
            StorageError::NoSuchRevision {
                oid: Oid(7),
                serial: Tid(2)
            }
        ));
        assert!(storage_error(ZeoException::pos_key(Oid(7)), None).is_pos_key_error());
        assert!(matches!(
            storage_error(ZeoException::ReadOnly(vec![]), None),
            StorageError::ReadOnly
        ));
        let e = storage_error(
            ZeoException::StorageTransaction(vec![Value::str("Already voting")]),
            None,
        );
        assert_eq!(e.to_string(), "transaction error: Already voting");
        let e = StorageError::from(ZeoError::Server(Box::new(ZeoException::value_error("x"))));
        assert!(matches!(e, StorageError::Backend(_)));
        assert!(e.to_string().contains("builtins.ValueError"));
    }
}
