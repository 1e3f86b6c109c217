//! `copy`: ZODB's `copyTransactionsFrom` (`BaseStorage.copy`): every
//! transaction of a source storage, oldest first, is committed into a
//! FileStorage with the same tid, status, metadata and records, through the
//! storage's `restore` (records keep their data, deletions and back
//! pointers: `restore` writes a back pointer where the source's record
//! borrowed its data from an earlier transaction, `data_txn`).
//!
//! For a FileStorage source the result is the source file byte for byte:
//! same transactions at the same offsets, same back pointers. The magic is
//! the one exception ZODB makes: its copy into a new FileStorage writes the
//! new storage's own magic (`FS30` on Python 3), so an `FS21` source copied
//! by ZODB differs in its first 4 bytes. [`copy_file`] creates the
//! destination with the source's magic instead (unless told otherwise), so
//! an `FS21` database stays readable by the Python 2 programs that wrote it
//! and the copy is identical.
//!
//! Tids must increase in a FileStorage. When the source's do not (a
//! hand-made or damaged history), ZODB gives each such transaction the
//! smallest tid later than the previous one (`TimeStamp.laterThan`) and
//! prints "Time stamps out of order"; so do we, and a later back pointer to
//! a retimed transaction follows it to its new tid (ZODB would fail to find
//! it). The records of a retimed transaction carry the new tid; ZODB writes
//! the source's tid into them, records that no transaction of the copy
//! has.
//!
//! The source is any [`ReadStorage`] (a ZEO client too); reading it runs on
//! its own thread, ahead of the writes.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use zodb_core::storage::Transaction;
use zodb_core::{ReadStorage, StorageError, Tid, TimeStamp, TxnStatus, WriteStorage};

use filestorage::format::Magic;
use filestorage::{Durability, FileStorage, OpenOptions};

use crate::storage_url::{self, Access, OpenError, StorageUrl};

/// Transactions read ahead of the one being written. Each is held whole
/// in memory (its records are views of the source's mapping, or owned
/// buffers for a remote source), so the window stays small.
const READ_AHEAD: usize = 64;

/// Why a copy failed. The destination then holds the transactions copied
/// before the failure (a consistent prefix); rerun with `--force`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Opening or syncing a FileStorage failed.
    #[error(transparent)]
    FileStorage(#[from] filestorage::Error),
    /// The destination already holds transactions.
    #[error(
        "{}: destination already holds transactions (last {last}); \
         copy into a new file, or pass --force to replace it",
        path.display()
    )]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
        /// Its last transaction.
        last: Tid,
    },
    /// Opening the source or a ZEO destination failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The destination ZEO server's storage already holds transactions.
    #[error(
        "{url}: the server's storage already holds transactions (last {last}); \
         copy into an empty one, or pass --force to append"
    )]
    ServerNotEmpty {
        /// The destination URL.
        url: String,
        /// Its last transaction.
        last: Tid,
    },
    /// Source and destination are the same ZEO storage.
    #[error("{url}: source and destination are the same storage")]
    SameStorage {
        /// The URL.
        url: String,
    },
    /// Source and destination are the same file.
    #[error("{}: source and destination are the same file", path.display())]
    SameFile {
        /// The file.
        path: PathBuf,
    },
    /// Reading the source failed (after `after`, the last transaction read).
    #[error("reading the source{}: {source}", after.map(|t| format!(" after transaction {t}")).unwrap_or_default())]
    Source {
        /// The last transaction read whole, if any.
        after: Option<Tid>,
        /// The storage's error.
        source: StorageError,
    },
    /// The destination refused or failed to write a transaction.
    #[error("writing transaction {tid}: {source}")]
    Destination {
        /// The source transaction being copied.
        tid: Tid,
        /// The storage's error.
        source: StorageError,
    },
    /// A destination path whose directory could not be inspected.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing the out-of-order notes failed.
    #[error("writing notes: {0}")]
    Log(#[source] std::io::Error),
}

/// A source transaction copied under a new tid, its own not being later
/// than the previous one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retimed {
    /// Its tid in the source.
    pub source: Tid,
    /// Its tid in the destination.
    pub written: Tid,
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Transactions copied.
    pub txns: u64,
    /// Data records copied.
    pub records: u64,
    /// Bytes of object data passed to `restore` (back pointers count the
    /// data they stand for, as the source reports it).
    pub data_bytes: u64,
    /// Transactions given a new tid, in copy order.
    pub retimed: Vec<Retimed>,
    /// The destination's size afterwards.
    pub end: u64,
}

/// Copies every transaction of `src` into `dst` as `copyTransactionsFrom`
/// does, calling `progress` with each source tid and writing ZODB's
/// "Time stamps out of order" notes to `log`.
///
/// `dst` may already hold transactions: the copy is then appended, and a
/// source tid not later than `dst`'s last is retimed like any other
/// out-of-order tid. Durability is the caller's: open `dst` with
/// [`Durability::Deferred`] and call [`FileStorage::sync`] after (as
/// [`copy_file`] does) so that a copy costs one fsync, not one per
/// transaction.
pub fn copy_transactions(
    src: &dyn ReadStorage,
    dst: &FileStorage,
    log: &mut dyn Write,
    progress: &mut dyn FnMut(Tid),
) -> Result<CopyReport, CopyError> {
    let mut report = copy_into(src, dst, log, progress)?;
    report.end = dst.end_pos();
    Ok(report)
}

/// [`copy_transactions`] into any writable storage (a ZEO server: `zodbrs
/// copy file.fs zeo://...`), which makes each transaction durable as it
/// commits it. [`CopyReport::end`] is left 0.
pub fn copy_into(
    src: &dyn ReadStorage,
    dst: &dyn WriteStorage,
    log: &mut dyn Write,
    progress: &mut dyn FnMut(Tid),
) -> Result<CopyReport, CopyError> {
    let mut report = CopyReport::default();
    let last = dst.last_transaction();
    let mut prev: Option<TimeStamp> = (last != Tid::ZERO).then(|| last.timestamp());
    let mut in_order = true;
    // Source tid → destination tid, for the retimed transactions only.
    let mut renamed: HashMap<Tid, Tid> = HashMap::new();
    let mut last_read = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Transaction, StorageError>>(READ_AHEAD);
        scope.spawn(move || match src.iter_transactions(None, None) {
            Ok(txns) => {
                for t in txns {
                    let failed = t.is_err();
                    // A closed channel means the writer stopped: so do we.
                    if tx.send(t).is_err() || failed {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        });
        // Returning early drops `rx`, which stops the reader.
        for t in rx {
            let t = t.map_err(|source| CopyError::Source {
                after: last_read,
                source,
            })?;
            let source_tid = t.info.tid;
            last_read = Some(source_tid);
            progress(source_tid);
            let ts = source_tid.timestamp();
            let tid = match prev {
                Some(p) if ts <= p => {
                    let new = ts.later_than(p);
                    if in_order {
                        writeln!(log, "Time stamps out of order {p}, {ts}")
                            .map_err(CopyError::Log)?;
                        in_order = false;
                    }
                    prev = Some(new);
                    let new = Tid::from_bytes(new.0);
                    renamed.insert(source_tid, new);
                    report.retimed.push(Retimed {
                        source: source_tid,
                        written: new,
                    });
                    new
                }
                _ => {
                    if !in_order {
                        writeln!(log, "Time stamps back in order {ts}").map_err(CopyError::Log)?;
                        in_order = true;
                    }
                    prev = Some(ts);
                    source_tid
                }
            };
            report.records += t.records.len() as u64;
            report.data_bytes += t
                .records
                .iter()
                .map(|r| r.data.as_ref().map_or(0, |d| d.len() as u64))
                .sum::<u64>();
            copy_one(dst, t, tid, &renamed).map_err(|source| CopyError::Destination {
                tid: source_tid,
                source,
            })?;
            report.txns += 1;
        }
        Ok::<(), CopyError>(())
    })?;
    if !report.retimed.is_empty() {
        writeln!(
            log,
            "{} of {} transactions were given new tids (their own were not later than the previous one)",
            report.retimed.len(),
            report.txns
        )
        .map_err(CopyError::Log)?;
    }
    Ok(report)
}

/// Restores one source transaction as `tid`.
fn copy_one(
    dst: &dyn WriteStorage,
    t: Transaction,
    tid: Tid,
    renamed: &HashMap<Tid, Tid>,
) -> Result<(), StorageError> {
    let status = t.info.status;
    if !matches!(status, TxnStatus::Committed | TxnStatus::Packed) {
        return Err(StorageError::TransactionState(format!(
            "source transaction {} has status {:?}, which cannot be copied",
            t.info.tid, status
        )));
    }
    let mut txn = dst.tpc_begin_restore(t.info.meta, tid, status)?;
    for r in t.records {
        let prev_txn = r.data_txn.map(|p| renamed.get(&p).copied().unwrap_or(p));
        txn.restore(r.oid, r.data, prev_txn)?;
    }
    txn.vote()?;
    txn.finish()?;
    Ok(())
}

/// How [`copy_file`] treats the destination.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// Replace a destination that already holds transactions (default:
    /// refuse, so that a mistyped argument cannot destroy a database).
    pub force: bool,
    /// The destination's magic; `None`: the source's (`FS30` for a source
    /// that is not a file yet, i.e. empty).
    pub magic: Option<Magic>,
}

/// Copies the FileStorage `src` into a new FileStorage `dst` (`zodbrs
/// copy`): the source is opened read-only (nothing is written beside it),
/// the destination is created, or replaced when empty or with
/// [`CopyOptions::force`], filled with [`Durability::Deferred`] commits and
/// synced once at the end.
///
/// Why one sync: a copy is restarted from scratch if interrupted, so an
/// fsync per transaction (ZODB's default) would buy nothing but a copy
/// bound by disk latency; the final sync makes the whole copy durable
/// before success is reported, and recovery cuts any torn tail of an
/// interrupted one. The destination's `.index` is written when it closes.
pub fn copy_file(
    src: &Path,
    dst: &Path,
    opts: CopyOptions,
    log: &mut dyn Write,
    progress: &mut dyn FnMut(Tid, Tid),
) -> Result<CopyReport, CopyError> {
    let file = |p: &Path| StorageUrl::File {
        path: p.to_owned(),
        read_only: false,
    };
    copy_url(&file(src), &file(dst), opts, log, progress)
}

/// Copies the storage at `src` into `dst`, each a FileStorage or a ZEO
/// server (`zodbrs copy SRC DST` in any direction). Into a file, as
/// [`copy_file`]: created (with the source file's magic, `FS30` for a ZEO
/// source), or replaced when empty or with [`CopyOptions::force`], synced
/// once at the end. Into a ZEO server: the server's storage must be empty
/// unless [`CopyOptions::force`], which appends (a source tid not later
/// than the server's last is retimed); each transaction is committed with
/// `tpc_begin(tid, status)` and `restorea`, as ZEO's `copyTransactionsFrom`
/// through a ClientStorage does, and is durable when the server's
/// `tpc_finish` answers.
pub fn copy_url(
    src: &StorageUrl,
    dst: &StorageUrl,
    opts: CopyOptions,
    log: &mut dyn Write,
    progress: &mut dyn FnMut(Tid, Tid),
) -> Result<CopyReport, CopyError> {
    let source = storage_url::open(src, Access::READ)?;
    let last = source.read().last_transaction();
    match dst {
        StorageUrl::File { path: dst_path, .. } => {
            if let StorageUrl::File {
                read_only: true, ..
            } = dst
            {
                return Err(OpenError::ReadOnlyUrl {
                    url: dst.to_string(),
                }
                .into());
            }
            let src_path = source.file().map(|(_, p)| p.to_owned());
            check_destination(src_path.as_deref(), dst_path, opts.force)?;
            let magic = opts
                .magic
                .unwrap_or_else(|| source.file().map_or(Magic::Fs30, |(fs, _)| fs.magic()));
            let dst_opts = OpenOptions {
                create: true,
                new_magic: magic,
                durability: Durability::Deferred,
                ..OpenOptions::read_write()
            };
            let dest = FileStorage::open(dst_path, &dst_opts)?;
            let report =
                copy_transactions(source.read(), &dest, log, &mut |tid| progress(tid, last));
            // Also after a failure: what was copied is a consistent prefix.
            let synced = dest.sync();
            let report = report?;
            synced?;
            Ok(report)
        }
        StorageUrl::Zeo { .. } => {
            if let (
                StorageUrl::Zeo {
                    address: a,
                    options: o,
                },
                StorageUrl::Zeo {
                    address: b,
                    options: p,
                },
            ) = (src, dst)
                && a == b
                && o.storage == p.storage
            {
                return Err(CopyError::SameStorage {
                    url: dst.to_string(),
                });
            }
            let dest = storage_url::open(dst, Access::write(false))?;
            let dest_last = dest.read().last_transaction();
            if dest_last != Tid::ZERO && !opts.force {
                return Err(CopyError::ServerNotEmpty {
                    url: dst.to_string(),
                    last: dest_last,
                });
            }
            copy_into(source.read(), dest.write(), log, &mut |tid| {
                progress(tid, last)
            })
        }
    }
}

/// Refuses to copy a file onto itself, or over a database unless forced.
fn check_destination(src: Option<&Path>, dst: &Path, force: bool) -> Result<(), CopyError> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(dst) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CopyError::Io {
                path: dst.to_owned(),
                source,
            });
        }
    };
    if let Some(src) = src {
        let src_meta = std::fs::metadata(src).map_err(|source| CopyError::Io {
            path: src.to_owned(),
            source,
        })?;
        if (meta.dev(), meta.ino()) == (src_meta.dev(), src_meta.ino()) {
            return Err(CopyError::SameFile {
                path: dst.to_owned(),
            });
        }
    }
    // A bare magic (or nothing) holds no transaction: nothing to lose.
    if force || meta.len() <= filestorage::format::MAGIC_LEN {
        return Ok(());
    }
    let existing = FileStorage::open_read_only(dst)?;
    let last = existing.last_transaction();
    if last == Tid::ZERO && existing.end_pos() <= filestorage::format::MAGIC_LEN {
        return Ok(());
    }
    Err(CopyError::DestinationNotEmpty {
        path: dst.to_owned(),
        last,
    })
}
