//! The storage seam.
//!
//! Everything above a storage (the ZEO server, the pager, the tools) talks to
//! these traits, so that a FileStorage, an in-memory storage and a ZEO client
//! are interchangeable. The read API is ZODB's `IStorage`/`IStorageIteration`
//! reduced to what carries information: `loadBefore` is the primitive (a
//! snapshot read), the others are conveniences with ZODB's exact semantics.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::notify::CommitWatch;
use crate::{Oid, Tid, TxnInfo, TxnMeta, TxnStatus};

/// Errors any storage can report. Backend-specific failures (a corrupt file,
/// a broken connection) travel in [`StorageError::Backend`] with their own
/// typed error inside, so callers can still downcast to them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The oid has no record at all (ZODB's `POSKeyError`).
    #[error("oid {oid}: no such object")]
    NoSuchObject {
        /// The oid looked up.
        oid: Oid,
    },
    /// The oid's revision in question says the object does not exist: it was
    /// deleted, or its creation was undone (also a `POSKeyError` in ZODB).
    #[error(
        "oid {oid}: object does not exist as of revision {serial} (deleted or creation undone)"
    )]
    NoData {
        /// The oid looked up.
        oid: Oid,
        /// The revision whose record has no data.
        serial: Tid,
    },
    /// `loadSerial` found no revision with that serial (`POSKeyError`).
    #[error("oid {oid}: no revision with serial {serial}")]
    NoSuchRevision {
        /// The oid looked up.
        oid: Oid,
        /// The serial asked for.
        serial: Tid,
    },
    /// A write was attempted on a read-only storage.
    #[error("storage is read-only")]
    ReadOnly,
    /// A store's old serial is not the object's current serial and the
    /// conflict could not be resolved (ZODB's `ConflictError`).
    #[error("conflict on oid {oid}: stored on top of {old} but {committed} is current")]
    Conflict {
        /// The object.
        oid: Oid,
        /// The serial committed by someone else.
        committed: Tid,
        /// The serial the writer based its change on.
        old: Tid,
    },
    /// `checkCurrentSerialInTransaction` found a newer revision (ZODB's
    /// `ReadConflictError`).
    #[error("read conflict on oid {oid}: read {read} but {committed} is current")]
    ReadConflict {
        /// The object.
        oid: Oid,
        /// The serial committed since.
        committed: Tid,
        /// The serial the transaction read.
        read: Tid,
    },
    /// A transaction cannot be undone (ZODB's `UndoError`).
    #[error("cannot undo{}: {reason}", .oid.map(|o| format!(" oid {o}")).unwrap_or_default())]
    Undo {
        /// The object that prevents it, if one does.
        oid: Option<Oid>,
        /// Why.
        reason: String,
    },
    /// A call out of the two-phase-commit order, or a transaction already
    /// finished or aborted (ZODB's `StorageTransactionError`).
    #[error("transaction error: {0}")]
    TransactionState(String),
    /// Transaction metadata too large for the format (65535 bytes each).
    #[error("{what} too long: {len} bytes (at most 65535)")]
    MetaTooLong {
        /// `user`, `description` or `extension`.
        what: &'static str,
        /// The length given.
        len: usize,
    },
    /// No blob file for this revision of the object: the revision has no
    /// blob, or it is gone (ZODB's `POSKeyError("No blob file", oid,
    /// serial)`).
    #[error("oid {oid}: no blob file for revision {serial}{}", .path.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default())]
    NoBlob {
        /// The object.
        oid: Oid,
        /// The revision asked for.
        serial: Tid,
        /// Where the file should have been, when the storage looked in a
        /// directory itself (a ZEO client on the server's shared blob
        /// directory), so that the message points at the directory to
        /// check.
        path: Option<PathBuf>,
    },
    /// The storage keeps no blobs (no blob directory configured, or a
    /// server whose storage does not offer them): ZODB's `Unsupported`.
    #[error("{storage}: blobs are not supported ({reason})")]
    BlobsUnsupported {
        /// The storage's name.
        storage: String,
        /// Why, and what to configure.
        reason: String,
    },
    /// An I/O error with no better context.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A failure specific to the storage implementation.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl StorageError {
    /// Whether ZODB would report this as `POSKeyError`.
    pub fn is_pos_key_error(&self) -> bool {
        matches!(
            self,
            StorageError::NoSuchObject { .. }
                | StorageError::NoData { .. }
                | StorageError::NoSuchRevision { .. }
                | StorageError::NoBlob { .. }
        )
    }
}

/// Result of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One revision of an object as a snapshot read returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The pickled object (class metadata pickle followed by state pickle).
    pub data: Bytes,
    /// The tid of the transaction that wrote this revision.
    pub serial: Tid,
    /// The tid of the next revision, `None` if this one is current.
    pub next_serial: Option<Tid>,
}

/// One entry of `history(oid)`: a revision and the transaction that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The transaction's metadata and status.
    pub txn: TxnInfo,
    /// Size of the stored pickle; 0 for a revision that borrows its data
    /// through a back pointer (as ZODB reports it).
    pub size: u64,
}

/// One object revision inside an iterated transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRecord {
    /// The object.
    pub oid: Oid,
    /// The transaction that wrote the record (equal to the enclosing tid).
    pub tid: Tid,
    /// The object's pickle, `None` if the record says the object does not exist.
    pub data: Option<Bytes>,
    /// When the record borrows its data from an earlier transaction (undo),
    /// the tid of that transaction, as ZODB's iterator reports `data_txn`.
    pub data_txn: Option<Tid>,
}

/// A committed transaction with its records, as iteration yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Header fields.
    pub info: TxnInfo,
    /// The data records, in the order they were stored.
    pub records: Vec<DataRecord>,
}

/// An iterator over committed transactions in tid order.
pub type TxnIter<'a> = Box<dyn Iterator<Item = Result<Transaction>> + Send + 'a>;

/// Read access to a ZODB storage. Implementations must allow any number of
/// threads to call these concurrently.
pub trait ReadStorage: Send + Sync {
    /// A name for messages (FileStorage: its path).
    fn name(&self) -> String;

    /// The tid of the last committed transaction, [`Tid::ZERO`] if none.
    fn last_transaction(&self) -> Tid;

    /// Number of objects (oids with a current record), like `len(storage)`.
    fn object_count(&self) -> u64;

    /// The revision of `oid` that was current just before `before`:
    /// `Ok(None)` if the object had no revision before it. The primitive of
    /// every snapshot read (ZODB's `loadBefore`).
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<Revision>>;

    /// The revision of `oid` written by transaction `serial` (`loadSerial`).
    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Bytes>;

    /// Up to `size` revisions of `oid`, newest first (`history`).
    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>>;

    /// Committed transactions with `start <= tid <= stop` (either bound
    /// optional), oldest first, like `storage.iterator(start, stop)`.
    fn iter_transactions(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TxnIter<'_>>;

    /// A queue of every transaction committed from now on.
    fn watch(&self) -> CommitWatch;

    /// The current revision of `oid` and its serial (ZODB's `load`).
    fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        match self.load_before(oid, Tid::MAX.next())? {
            Some(rev) => Ok((rev.data, rev.serial)),
            None => Err(StorageError::NoSuchObject { oid }),
        }
    }

    // Blobs (ZODB's `IBlobStorage`): a storage with a blob directory
    // overrides these; the defaults say blobs are unsupported, as ZODB
    // storages without one do.

    /// Whether [`ReadStorage::prefetch`] does anything: true for storages
    /// whose loads are round trips worth starting early (a ZEO client).
    fn supports_prefetch(&self) -> bool {
        false
    }

    /// Starts loading the revisions of `oids` current before `before`
    /// without waiting (ZODB's `IPrefetch.prefetch`), so that the loads
    /// which follow are answered from a cache. A hint: errors are left for
    /// those loads; storages without a cache ignore it.
    fn prefetch(&self, oids: &[Oid], before: Tid) {
        let _ = (oids, before);
    }

    /// Whether [`ReadStorage::load_blob`] and [`TpcTxn::store_blob`] can
    /// work (ZODB: the storage provides `IBlobStorage`).
    fn supports_blobs(&self) -> bool {
        false
    }

    /// The path of a local file holding the blob of `oid` written by
    /// transaction `serial` (ZODB's `loadBlob`). The file is committed
    /// data: never write to it, and copy it rather than move it. Fails
    /// with [`StorageError::NoBlob`] when that revision has no blob.
    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<PathBuf> {
        let _ = (oid, serial);
        Err(self.blobs_unsupported())
    }

    /// The blob of `oid` at `serial`, opened for reading (ZODB's
    /// `openCommittedBlobFile`): a storage that caches blobs keeps the file
    /// at least until it is open.
    fn open_committed_blob(&self, oid: Oid, serial: Tid) -> Result<std::fs::File> {
        let path = self.load_blob(oid, serial)?;
        Ok(std::fs::File::open(path)?)
    }

    /// A directory for uncommitted blob files on the blob directory's file
    /// system, so that [`TpcTxn::store_blob`] can take them with a rename
    /// (ZODB's `temporaryDirectory`).
    fn temporary_directory(&self) -> Result<PathBuf> {
        Err(self.blobs_unsupported())
    }

    /// The error the blob methods of a storage without blobs return.
    fn blobs_unsupported(&self) -> StorageError {
        StorageError::BlobsUnsupported {
            storage: self.name(),
            reason: "no blob directory".to_owned(),
        }
    }
}

/// Resolves a write conflict without the application: ZODB's
/// `tryToResolveConflict` (classes with `_p_resolveConflict`). A storage
/// calls it when a store's old serial is not current; returning `None`
/// makes the store fail with [`StorageError::Conflict`].
pub trait ConflictResolver: Send + Sync {
    /// The merged state of `oid` given the state the writer started from
    /// (`old`), the committed one (`committed`) and the writer's (`new`),
    /// all as full records (class pickle + state pickle).
    fn resolve(&self, oid: Oid, old: &[u8], committed: &[u8], new: &[u8]) -> Option<Bytes>;
}

/// ZODB's `tryToResolveConflict` against a storage: loads the revision the
/// writer started from (`old`) and the committed one (unless the caller
/// has it), and merges them with `new` through `resolver`. `None` when a
/// revision cannot be loaded or the resolver declines: the store conflicts.
pub fn try_resolve<S: ReadStorage + ?Sized>(
    storage: &S,
    resolver: &dyn ConflictResolver,
    oid: Oid,
    committed: Tid,
    old: Tid,
    new: &[u8],
    committed_data: Option<Bytes>,
) -> Option<Bytes> {
    let old_data = storage.load_serial(oid, old).ok()?;
    let committed_data = match committed_data {
        Some(d) => d,
        None => storage.load_serial(oid, committed).ok()?,
    };
    resolver.resolve(oid, &old_data, &committed_data, new)
}

/// One entry of `undoLog`/`undoInfo`: a transaction that may be undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndoEntry {
    /// The transaction (its tid is the undo id's content).
    pub txn: TxnInfo,
    /// The opaque id ZODB hands out: base64 of the tid without newline.
    pub id: Vec<u8>,
    /// The transaction record's length, as ZODB reports `size`.
    pub size: u64,
}

/// A two-phase commit in progress (ZODB's `tpc_*` calls on a storage).
///
/// Obtained from [`WriteStorage::tpc_begin`]; dropping it without
/// [`TpcTxn::finish`] aborts. Nothing becomes visible to readers before
/// `finish` returns.
pub trait TpcTxn: Send {
    /// The tid this transaction will commit as.
    fn tid(&self) -> Tid;

    /// Stores a new revision of `oid`. `old_serial` is the serial the
    /// writer read ([`Tid::ZERO`] for a new object); if it is not current,
    /// the conflict is resolved or the call fails with `Conflict`.
    fn store(&mut self, oid: Oid, old_serial: Tid, data: Bytes) -> Result<()>;

    /// Records that `oid` no longer exists (ZODB's `deleteObject`).
    fn delete_object(&mut self, oid: Oid, old_serial: Tid) -> Result<()>;

    /// Fails at vote time with `ReadConflict` unless `serial` is still
    /// current for `oid` (ZODB's `checkCurrentSerialInTransaction`).
    fn check_current_serial(&mut self, oid: Oid, serial: Tid) -> Result<()>;

    /// Writes a revision exactly as given (copying between storages):
    /// `data` `None` means "does not exist"; `prev_txn` names the
    /// transaction whose record holds the same data, so a back pointer can
    /// be written instead (ZODB's `restore`).
    fn restore(&mut self, oid: Oid, data: Option<Bytes>, prev_txn: Option<Tid>) -> Result<()>;

    /// Stores a new revision of `oid` whose blob is the file `blob`
    /// (ZODB's `storeBlob(oid, oldserial, data, blobfilename, '', txn)`):
    /// `data` is the object's record, as for [`TpcTxn::store`]. The
    /// storage takes ownership of the file: it is renamed (or copied and
    /// removed) now or at commit, and the caller must not use it again.
    /// Storages without blobs refuse with [`StorageError::BlobsUnsupported`]
    /// and leave the file alone.
    fn store_blob(&mut self, oid: Oid, old_serial: Tid, data: Bytes, blob: &Path) -> Result<()> {
        let _ = (oid, old_serial, data, blob);
        Err(StorageError::BlobsUnsupported {
            storage: "this storage".to_owned(),
            reason: "no blob directory".to_owned(),
        })
    }

    /// Undoes transaction `tid` inside this one, returning the oids it
    /// changes (ZODB's `undo`).
    fn undo(&mut self, tid: Tid) -> Result<Vec<Oid>>;

    /// Makes the transaction durable-but-undecided; returns the oids whose
    /// conflicts were resolved (their data changed from what was stored).
    fn vote(&mut self) -> Result<Vec<Oid>>;

    /// Commits: the transaction becomes visible and durable; returns its tid.
    fn finish(self: Box<Self>) -> Result<Tid>;

    /// Abandons the transaction; nothing of it remains.
    fn abort(self: Box<Self>);
}

/// Write access to a ZODB storage.
pub trait WriteStorage: ReadStorage {
    /// Begins a transaction. Only one runs at a time per storage (the
    /// commit lock): this waits for the previous one to finish or abort.
    fn tpc_begin(&self, meta: TxnMeta) -> Result<Box<dyn TpcTxn + '_>>;

    /// Begins a transaction that keeps a given tid and status, for copying
    /// a history (`copyTransactionsFrom`); `tid` must be later than the
    /// last transaction.
    fn tpc_begin_restore(
        &self,
        meta: TxnMeta,
        tid: Tid,
        status: TxnStatus,
    ) -> Result<Box<dyn TpcTxn + '_>>;

    /// `n` fresh oids (ZODB's `new_oid`, batched).
    fn new_oids(&self, n: usize) -> Result<Vec<Oid>>;

    /// Transactions that may be undone, newest first, from index `first`
    /// up to (not including) `last` (ZODB's `undoLog(first, last)` with a
    /// positive `last`).
    fn undo_log(&self, first: usize, last: usize) -> Result<Vec<UndoEntry>>;

    /// Removes history before `pack_time` (and, with `gc`, objects
    /// unreachable from the root).
    fn pack(&self, pack_time: Tid, gc: bool) -> Result<()>;

    /// Installs the resolver consulted on write conflicts.
    fn set_conflict_resolver(&self, resolver: Option<std::sync::Arc<dyn ConflictResolver>>);
}

/// A consistent read view of a storage as of one transaction: every load sees
/// the database exactly as it was when `at` committed, whatever commits later.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'s, S: ReadStorage + ?Sized> {
    storage: &'s S,
    at: Tid,
}

impl<'s, S: ReadStorage + ?Sized> Snapshot<'s, S> {
    /// A view of `storage` as of transaction `at`.
    pub fn at(storage: &'s S, at: Tid) -> Self {
        Snapshot { storage, at }
    }

    /// A view as of the storage's last committed transaction.
    pub fn latest(storage: &'s S) -> Self {
        Snapshot::at(storage, storage.last_transaction())
    }

    /// The tid this view is pinned at.
    pub fn tid(&self) -> Tid {
        self.at
    }

    /// The storage underneath.
    pub fn storage(&self) -> &'s S {
        self.storage
    }

    /// The object's data and serial as of the snapshot; `NoSuchObject` if it
    /// did not exist yet, `NoData` if it was deleted.
    pub fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        match self.storage.load_before(oid, self.at.next())? {
            Some(rev) => Ok((rev.data, rev.serial)),
            None => Err(StorageError::NoSuchObject { oid }),
        }
    }
}
