//! The FileStorage engine: open a Data.fs (read-only, or read-write with
//! ZODB's lock and crash recovery), build or load its index, and answer
//! ZODB's read API; the write side lives in [`crate::commit`].
//!
//! Concurrency: the committed state (index, end of data, last tid, the
//! mapping) sits behind one `RwLock` that readers hold only to find a
//! position and clone the mapping's handle; the bytes are then read with no
//! lock, because committed bytes never change. A commit takes the write
//! lock only to merge its few index entries. Writers are serialised by the
//! commit lock (one transaction at a time, as in ZODB).

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};

use bytes::Bytes;
use zodb_core::notify::{CommitHub, CommitWatch};
use zodb_core::storage::{
    ConflictResolver, DataRecord, HistoryEntry, Revision, Transaction, TxnIter,
};
use zodb_core::{Oid, ReadStorage, StorageError, Tid};

use crate::backend::{Backend, FileBackend, MmapBackend};
use crate::error::{Error, RecordKind, Result};
use crate::file::{BackendKind, DataFile};
use crate::format::{MAGIC_LEN, Magic, Problem};
use crate::index::FsIndex;
use crate::index_file::{self, IndexCheck, IndexOrigin, RebuildReason};
use crate::iter::{DataCursor, DataRecordAt, TxnCursor, TxnRecord, TxnRevCursor, read_txn};
use crate::lock::LockFile;
use crate::reader::{DataRec, Reader};
use crate::scan::{self, ScanOutcome, Tail};

/// Options for [`FileStorage::open`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Open without writing anything, ever (the default: tools must not
    /// disturb a database). A read-write open takes the `.lock`, recovers a
    /// crashed tail and may create the file.
    pub read_only: bool,
    /// Read-write only: start a new, empty storage even if the file exists
    /// (ZODB's `create=True`).
    pub create: bool,
    /// The magic of a file created here: `FS30` (default), or `FS21` for a
    /// database Python 2 programs must open.
    pub new_magic: Magic,
    /// Use `Data.fs.index` when it is valid (default), or always rescan.
    pub use_index: bool,
    /// How thoroughly to check a saved index before trusting it.
    pub index_check: IndexCheck,
    /// How to read the file.
    pub backend: BackendKind,
    /// Read-write only: told of every change to the file (crash tests).
    pub observer: crate::observe::Observer,
    /// Read-write only: when commits reach the disk.
    pub durability: Durability,
}

/// When a finished transaction is on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// At every `finish`, as ZODB does (fsync before `finish` returns).
    #[default]
    Immediate,
    /// Only at [`FileStorage::sync`] and when the storage is dropped: for
    /// bulk work that is restarted from scratch if interrupted (copying a
    /// database, importing a dump). A crash may lose the last transactions
    /// but never leaves a partial one visible: recovery cuts the tail.
    Deferred,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            read_only: true,
            create: false,
            new_magic: Magic::Fs30,
            use_index: true,
            index_check: IndexCheck::Zodb,
            backend: BackendKind::Mmap,
            observer: crate::observe::Observer::default(),
            durability: Durability::Immediate,
        }
    }
}

impl OpenOptions {
    /// Options for a read-write open (everything else default).
    pub fn read_write() -> OpenOptions {
        OpenOptions {
            read_only: false,
            ..OpenOptions::default()
        }
    }
}

/// What opening found: where the index came from, what the scan saw, and
/// what recovery did.
#[derive(Clone, Debug)]
pub struct OpenReport {
    /// Loaded from `.index`, or rebuilt (and why).
    pub index: IndexOrigin,
    /// The scan from the index's saved position (or from the start).
    pub scan: ScanOutcome,
    /// Read-write opens only: the crashed tail that was cut off, and the
    /// `.trN` file its bytes were saved to (none for a short header, which
    /// ZODB also drops without a copy).
    pub recovered: Option<Recovered>,
}

/// A tail removed by crash recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Where the file was truncated.
    pub pos: u64,
    /// How many bytes were removed.
    pub len: u64,
    /// The `Data.fs.trN` holding them.
    pub saved_to: Option<std::path::PathBuf>,
}

/// The committed state readers see.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) index: FsIndex,
    /// End of the last committed transaction.
    pub(crate) end: u64,
    pub(crate) last_tid: Tid,
    /// The bytes: a mapping (or pread) window at least `end` long.
    pub(crate) data: Arc<dyn Backend>,
}

/// The commit lock: one transaction at a time. A flag and a condition
/// variable rather than a mutex guard, so that the transaction holding it
/// can move between threads (a ZEO server votes and finishes on different
/// tasks).
#[derive(Debug, Default)]
pub(crate) struct CommitLock {
    busy: Mutex<bool>,
    freed: Condvar,
}

impl CommitLock {
    pub(crate) fn acquire(&self) {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy {
            busy = self
                .freed
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *busy = true;
    }

    pub(crate) fn release(&self) {
        *self.busy.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.freed.notify_one();
    }
}

/// What only a read-write storage has.
#[derive(Debug)]
pub(crate) struct Writer {
    /// The open Data.fs; replaced by pack's swap (under the commit lock,
    /// so a transaction's handle stays valid from begin to finish).
    pub(crate) file: Mutex<Arc<File>>,
    /// Set while a pack runs: a second pack, and undo, are refused.
    pub(crate) packing: std::sync::atomic::AtomicBool,
    pub(crate) _lock: LockFile,
    pub(crate) commit: CommitLock,
    /// The last tid handed out or seen (including a crashed tail's): new
    /// tids must be later.
    pub(crate) clock: Mutex<Tid>,
    /// The largest oid stored or handed out.
    pub(crate) max_oid: Mutex<Oid>,
    pub(crate) backend: BackendKind,
    pub(crate) observer: crate::observe::Observer,
    pub(crate) durability: Durability,
}

impl Writer {
    /// The current Data.fs handle.
    pub(crate) fn current_file(&self) -> Arc<File> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A ZODB FileStorage.
pub struct FileStorage {
    pub(crate) path: Arc<Path>,
    pub(crate) magic: Magic,
    pub(crate) state: RwLock<Committed>,
    pub(crate) writer: Option<Writer>,
    report: OpenReport,
    pub(crate) hub: CommitHub,
    pub(crate) resolver: RwLock<Option<Arc<dyn ConflictResolver>>>,
}

/// Closing a writable storage syncs deferred commits and saves the
/// `.index`, as ZODB's `close()` does (errors cannot be reported from a
/// drop; the next open rebuilds a missing or stale index).
impl Drop for FileStorage {
    fn drop(&mut self) {
        if let Some(w) = &self.writer {
            if w.durability == Durability::Deferred {
                let _ = w.current_file().sync_data();
            }
            let _ = self.save_index();
        }
    }
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("path", &self.path)
            .field("magic", &self.magic)
            .field("read_only", &self.writer.is_none())
            .finish_non_exhaustive()
    }
}

/// Virtual size of the mapping of a writable file: room to grow without
/// remapping on every commit (address space only; nothing is committed).
fn map_window(size: u64) -> u64 {
    (size + (256 << 20)).next_power_of_two()
}

/// A new window over a writable file that has grown to `end`.
pub(crate) fn remap(
    file: &Arc<File>,
    kind: BackendKind,
    end: u64,
    path: &Path,
) -> Result<Arc<dyn Backend>> {
    map(file, kind, map_window(end), path)
}

fn map(file: &Arc<File>, kind: BackendKind, len: u64, path: &Path) -> Result<Arc<dyn Backend>> {
    Ok(match kind {
        BackendKind::Mmap => Arc::new(MmapBackend::map(file, len).map_err(|source| Error::Io {
            path: path.to_owned(),
            op: "mmap",
            source,
        })?),
        BackendKind::Pread => Arc::new(FileBackend::new(file.clone(), len)),
    })
}

impl FileStorage {
    /// Opens `path` read-only with default options.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<FileStorage> {
        FileStorage::open(path, &OpenOptions::default())
    }

    /// Opens `path` as `opts` say. Read-only (the default) changes nothing
    /// on disk: a missing or stale `.index` is rebuilt in memory only, and a
    /// crashed tail is ignored. Read-write takes the lock, recovers the tail
    /// like ZODB (its bytes saved to `.trN`), and creates a missing file.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<FileStorage> {
        FileStorage::open_with_progress(path, opts, &mut |_, _| {})
    }

    /// As [`FileStorage::open`], calling `progress(pos, size)` while scanning.
    pub fn open_with_progress(
        path: impl AsRef<Path>,
        opts: &OpenOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<FileStorage> {
        if opts.read_only {
            if opts.create {
                return Err(Error::Io {
                    path: path.as_ref().to_owned(),
                    op: "open",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "can't create a read-only file",
                    ),
                });
            }
            FileStorage::open_file(DataFile::open(path, opts.backend)?, opts, progress)
        } else {
            FileStorage::open_writable(path.as_ref(), opts, progress)
        }
    }

    /// Opens an already opened [`DataFile`] (any backend) read-only.
    pub fn open_file(
        file: DataFile,
        opts: &OpenOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<FileStorage> {
        let size = file.size();
        let r = file.reader();
        let magic = if size == 0 { Magic::Fs30 } else { r.magic()? };
        let (index, report) = load_index(&r, opts, progress)?;
        Ok(FileStorage {
            path: file.path().into(),
            magic,
            state: RwLock::new(Committed {
                index,
                end: report.scan.end,
                last_tid: report.scan.last_tid,
                data: file.shared_backend(),
            }),
            writer: None,
            report,
            hub: CommitHub::new(),
            resolver: RwLock::new(None),
        })
    }

    fn open_writable(
        path: &Path,
        opts: &OpenOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<FileStorage> {
        let io = |op, source| Error::Io {
            path: path.to_owned(),
            op,
            source,
        };
        let lock = LockFile::lock(crate::file::sibling(path, ".lock")).map_err(Error::Lock)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(opts.create)
            .open(path)
            .map_err(|e| io("open", e))?;
        let file = Arc::new(file);
        let mut size = file.metadata().map_err(|e| io("stat", e))?.len();
        if size == 0 {
            use std::os::unix::fs::FileExt;
            file.write_all_at(opts.new_magic.as_bytes(), 0)
                .map_err(|e| io("write", e))?;
            file.sync_all().map_err(|e| io("fsync", e))?;
            size = MAGIC_LEN;
        }
        let data = map(&file, opts.backend, map_window(size), path)?;
        let path: Arc<Path> = path.into();
        let r = Reader::new(data.clone(), path.clone(), size);
        let magic = r.magic()?;
        let (index, mut report) = load_index(&r, opts, progress)?;
        if let Some(pos) = report.scan.tail.pos() {
            report.recovered = Some(crate::commit::truncate_tail(
                &file,
                &path,
                pos,
                size,
                &report.scan.tail,
            )?);
        }
        let max_oid = index.max_oid().unwrap_or(Oid(0));
        let clock = report.scan.max_tid.max(report.scan.last_tid);
        let fs = FileStorage {
            path,
            magic,
            state: RwLock::new(Committed {
                index,
                end: report.scan.end,
                last_tid: report.scan.last_tid,
                data,
            }),
            writer: Some(Writer {
                file: Mutex::new(file),
                packing: std::sync::atomic::AtomicBool::new(false),
                _lock: lock,
                commit: CommitLock::default(),
                clock: Mutex::new(clock),
                max_oid: Mutex::new(max_oid),
                backend: opts.backend,
                observer: opts.observer.clone(),
                durability: opts.durability,
            }),
            report,
            hub: CommitHub::new(),
            resolver: RwLock::new(None),
        };
        if matches!(fs.report.index, IndexOrigin::Rebuilt { .. }) {
            // As ZODB: the next open should not have to scan again.
            fs.save_index()?;
        }
        Ok(fs)
    }

    /// Makes every finished transaction durable (fsync). Needed only with
    /// [`Durability::Deferred`]; a no-op for read-only storages.
    pub fn sync(&self) -> Result<()> {
        if let Some(w) = &self.writer {
            w.commit.acquire();
            let r = w.current_file().sync_data().map_err(|source| Error::Io {
                path: self.path.to_path_buf(),
                op: "fsync",
                source,
            });
            if r.is_ok() {
                w.observer.emit(crate::observe::WriteEvent::Sync);
            }
            w.commit.release();
            r?;
        }
        Ok(())
    }

    /// Makes every transaction finished so far durable without waiting for
    /// the commit lock (with [`Durability::Deferred`]): a group-commit
    /// syncer calls it while the next transaction is already being written.
    /// That transaction's bytes may reach the disk too, which is harmless:
    /// until its status byte is flipped by `finish`, recovery cuts it off.
    /// After a pack swapped files, the handle taken here is the new file,
    /// which pack synced itself.
    pub fn sync_finished(&self) -> Result<()> {
        if let Some(w) = &self.writer {
            w.current_file().sync_data().map_err(|source| Error::Io {
                path: self.path.to_path_buf(),
                op: "fsync",
                source,
            })?;
            w.observer.emit(crate::observe::WriteEvent::Sync);
        }
        Ok(())
    }

    /// Writes `Data.fs.index` for the committed state, as ZODB does at
    /// close, after a rebuild and after pack.
    pub fn save_index(&self) -> Result<()> {
        if self.writer.is_none() {
            return Err(Error::ReadOnly {
                path: self.path.to_path_buf(),
            });
        }
        let st = self.read_state();
        index_file::save(&self.path, st.end, &st.index, self.magic)
    }

    /// The Data.fs path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's magic (`FS30` for a read-only empty file).
    pub fn magic(&self) -> Magic {
        self.magic
    }

    /// Whether this storage refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// End of the last committed transaction: the storage's size as ZODB's
    /// `getSize()` reports it.
    pub fn end_pos(&self) -> u64 {
        self.read_state().end
    }

    /// What opening found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, Committed> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the index. Do not call other methods of this storage
    /// from `f`: a commit waiting for the index would deadlock with it.
    pub fn with_index<R>(&self, f: impl FnOnce(&FsIndex) -> R) -> R {
        f(&self.read_state().index)
    }

    /// Every (oid, position of its current record), in oid order: a
    /// snapshot of the index.
    pub fn oids(&self) -> Vec<(Oid, u64)> {
        self.with_index(|ix| ix.iter().collect())
    }

    /// Position of the oid's current record.
    pub fn current_pos(&self, oid: Oid) -> Option<u64> {
        self.with_index(|ix| ix.get(oid))
    }

    /// Typed access to the committed records.
    pub fn reader(&self) -> Reader {
        let st = self.read_state();
        Reader::new(st.data.clone(), self.path.clone(), st.end)
    }

    /// The current record's position and a reader that includes it, taken
    /// together so that a concurrent commit cannot separate them.
    fn locate(&self, oid: Oid) -> Result<(u64, Reader), StorageError> {
        let st = self.read_state();
        let pos = st
            .index
            .get(oid)
            .ok_or(StorageError::NoSuchObject { oid })?;
        Ok((pos, Reader::new(st.data.clone(), self.path.clone(), st.end)))
    }

    /// The transaction record at `pos`, checked.
    pub fn txn_at(&self, pos: u64) -> Result<TxnRecord> {
        read_txn(&self.reader(), pos)
    }

    /// Committed transactions, oldest first.
    pub fn txns(&self) -> TxnCursor {
        TxnCursor::new(self.reader(), MAGIC_LEN, None)
    }

    /// Committed transactions, newest first.
    pub fn txns_rev(&self) -> TxnRevCursor {
        let r = self.reader();
        let end = r.end();
        TxnRevCursor::new(r, end)
    }

    /// The data records of a transaction.
    pub fn data_records(&self, txn: &TxnRecord) -> DataCursor {
        DataCursor::new(self.reader(), txn)
    }

    /// The data of a record: inline, through its back pointers, or
    /// `NoData` when the record says the object does not exist.
    pub(crate) fn record_data(r: &Reader, pos: u64, rec: &DataRec) -> Result<Bytes, StorageError> {
        let oid = rec.header.oid;
        if rec.has_data() {
            return Ok(r.pickle(pos, &rec.header)?);
        }
        match r.resolve_back(oid, pos, rec.back)? {
            Some((data, _)) => Ok(data),
            None => Err(StorageError::NoData {
                oid,
                serial: rec.header.tid,
            }),
        }
    }

    /// Moves from the record at `pos` to the previous revision, checking the
    /// pointer goes backwards so a corrupt chain cannot loop.
    pub(crate) fn prev_of(r: &Reader, pos: u64, prev: u64) -> Result<u64> {
        if prev >= pos {
            return Err(r.corrupt(
                pos,
                RecordKind::DataRecord,
                Problem::PrevNotBackwards { prev },
            ));
        }
        Ok(prev)
    }

    /// A record as the iterator API reports it: data resolved through the
    /// whole back-pointer chain, `data_txn` the tid of the record the back
    /// pointer names directly (ZODB's `TransactionRecordIterator`).
    pub fn resolve_record(&self, rec: &DataRecordAt) -> Result<DataRecord> {
        resolve_record(&self.reader(), rec)
    }

    /// The full transaction (records resolved) for iteration.
    pub fn transaction(&self, txn: &TxnRecord) -> Result<Transaction> {
        let r = self.reader();
        let records = DataCursor::new(r.clone(), txn)
            .map(|rec| resolve_record(&r, &rec?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transaction {
            info: txn.info(),
            records,
        })
    }
}

fn resolve_record(r: &Reader, rec: &DataRecordAt) -> Result<DataRecord> {
    let (data, data_txn) = match (&rec.data, rec.back) {
        (Some(d), _) => (Some(d.clone()), None),
        (None, 0) => (None, None),
        (None, back) => {
            let target = r.data_record_of(back, rec.header.oid)?;
            let data = r
                .resolve_back(rec.header.oid, rec.pos, back)?
                .map(|(d, _)| d);
            (data, Some(target.header.tid))
        }
    };
    Ok(DataRecord {
        oid: rec.header.oid,
        tid: rec.header.tid,
        data,
        data_txn,
    })
}

/// Loads or rebuilds the index for the file `r` reads, as ZODB's open does.
fn load_index(
    r: &Reader,
    opts: &OpenOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(FsIndex, OpenReport)> {
    let size = r.end();
    let empty_scan = || ScanOutcome {
        end: MAGIC_LEN,
        last_tid: Tid::ZERO,
        max_tid: Tid::ZERO,
        txn_count: 0,
        record_count: 0,
        tail: Tail::Clean,
        warnings: Vec::new(),
    };
    if size == 0 {
        let origin = IndexOrigin::Rebuilt {
            reason: RebuildReason::EmptyFile,
        };
        return Ok((
            FsIndex::new(),
            OpenReport {
                index: origin,
                scan: empty_scan(),
                recovered: None,
            },
        ));
    }
    let mut index = FsIndex::new();
    let (origin, start, ltid) = if opts.use_index {
        match index_file::load_checked(r, &index_file::index_path(r.path()), opts.index_check) {
            Ok(saved) => {
                index = saved.index;
                (
                    IndexOrigin::Loaded { pos: saved.pos },
                    saved.pos,
                    saved.ltid,
                )
            }
            Err(reason) => (IndexOrigin::Rebuilt { reason }, MAGIC_LEN, Tid::ZERO),
        }
    } else {
        (
            IndexOrigin::Rebuilt {
                reason: RebuildReason::NotRequested,
            },
            MAGIC_LEN,
            Tid::ZERO,
        )
    };
    let outcome = scan::scan(r, start, ltid, &mut index, &mut |pos| progress(pos, size))?;
    if matches!(origin, IndexOrigin::Rebuilt { .. }) {
        index.shrink_to_fit();
    }
    Ok((
        index,
        OpenReport {
            index: origin,
            scan: outcome,
            recovered: None,
        },
    ))
}

impl ReadStorage for FileStorage {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn last_transaction(&self) -> Tid {
        self.read_state().last_tid
    }

    fn object_count(&self) -> u64 {
        self.read_state().index.len()
    }

    fn load_before(&self, oid: Oid, before: Tid) -> zodb_core::storage::Result<Option<Revision>> {
        let (mut pos, r) = self.locate(oid)?;
        let mut next_serial = None;
        loop {
            let rec = r.data_record_of(pos, oid)?;
            if rec.header.tid < before {
                let data = FileStorage::record_data(&r, pos, &rec)?;
                return Ok(Some(Revision {
                    data,
                    serial: rec.header.tid,
                    next_serial,
                }));
            }
            next_serial = Some(rec.header.tid);
            if rec.header.prev == 0 {
                return Ok(None);
            }
            pos = FileStorage::prev_of(&r, pos, rec.header.prev)?;
        }
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> zodb_core::storage::Result<Bytes> {
        let (mut pos, r) = self.locate(oid)?;
        loop {
            let rec = r.data_record_of(pos, oid)?;
            if rec.header.tid == serial {
                return FileStorage::record_data(&r, pos, &rec);
            }
            if rec.header.tid < serial || rec.header.prev == 0 {
                return Err(StorageError::NoSuchRevision { oid, serial });
            }
            pos = FileStorage::prev_of(&r, pos, rec.header.prev)?;
        }
    }

    fn history(&self, oid: Oid, size: usize) -> zodb_core::storage::Result<Vec<HistoryEntry>> {
        let (mut pos, r) = self.locate(oid)?;
        let mut out = Vec::new();
        while out.len() < size {
            let rec = r.data_record_of(pos, oid)?;
            let mut txn = read_txn(&r, rec.header.tloc)?.info();
            // ZODB reports the revision's serial, which is its transaction's.
            txn.tid = rec.header.tid;
            out.push(HistoryEntry {
                txn,
                size: rec.header.plen,
            });
            if rec.header.prev == 0 {
                break;
            }
            pos = FileStorage::prev_of(&r, pos, rec.header.prev)?;
        }
        Ok(out)
    }

    fn iter_transactions(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> zodb_core::storage::Result<TxnIter<'_>> {
        let r = self.reader();
        let mut cursor = TxnCursor::new(r.clone(), MAGIC_LEN, stop);
        if let Some(start) = start {
            cursor.skip_to(start)?;
        }
        Ok(Box::new(cursor.map(move |t| {
            let t = t?;
            let records = DataCursor::new(r.clone(), &t)
                .map(|rec| resolve_record(&r, &rec?))
                .collect::<Result<Vec<_>>>()?;
            Ok(Transaction {
                info: t.info(),
                records,
            })
        })))
    }

    fn watch(&self) -> CommitWatch {
        self.hub.subscribe()
    }

    fn load(&self, oid: Oid) -> zodb_core::storage::Result<(Bytes, Tid)> {
        let (pos, r) = self.locate(oid)?;
        let rec = r.data_record_of(pos, oid)?;
        Ok((FileStorage::record_data(&r, pos, &rec)?, rec.header.tid))
    }
}
