//! The FileStorage engine (read side): open a Data.fs, build or load its
//! index, and answer ZODB's read API from it.
//!
//! All reads go through the backend at explicit positions and the index is
//! immutable once open, so `&FileStorage` is shared by any number of reader
//! threads with no lock at all.

use std::path::Path;

use bytes::Bytes;
use zodb_core::notify::{CommitHub, CommitWatch};
use zodb_core::storage::{DataRecord, HistoryEntry, Revision, Transaction, TxnIter};
use zodb_core::{Oid, ReadStorage, StorageError, Tid};

use crate::error::{RecordKind, Result};
use crate::file::{BackendKind, DataFile};
use crate::format::{MAGIC_LEN, Magic, Problem};
use crate::index::FsIndex;
use crate::index_file::{self, IndexCheck, IndexOrigin};
use crate::iter::{DataCursor, DataRecordAt, TxnCursor, TxnRecord, TxnRevCursor, read_txn};
use crate::reader::Reader;
use crate::scan::{self, ScanOutcome};

/// Options for [`FileStorage::open`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Use `Data.fs.index` when it is valid (default), or always rescan.
    pub use_index: bool,
    /// How thoroughly to check a saved index before trusting it.
    pub index_check: IndexCheck,
    /// How to read the file.
    pub backend: BackendKind,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            use_index: true,
            index_check: IndexCheck::Zodb,
            backend: BackendKind::Mmap,
        }
    }
}

/// What opening found: where the index came from and what the scan saw.
#[derive(Clone, Debug)]
pub struct OpenReport {
    /// Loaded from `.index`, or rebuilt (and why).
    pub index: IndexOrigin,
    /// The scan from the index's saved position (or from the start).
    pub scan: ScanOutcome,
}

/// A FileStorage opened read-only.
#[derive(Debug)]
pub struct FileStorage {
    file: DataFile,
    magic: Option<Magic>,
    index: FsIndex,
    /// End of the last committed transaction.
    end: u64,
    last_tid: Tid,
    report: OpenReport,
    hub: CommitHub,
}

impl FileStorage {
    /// Opens `path` read-only with default options.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<FileStorage> {
        FileStorage::open(path, &OpenOptions::default())
    }

    /// Opens `path` read-only. Nothing on disk is created or changed: a
    /// missing or stale `.index` is rebuilt in memory only, and a voted or
    /// torn tail is ignored (a read-write open would recover it).
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<FileStorage> {
        FileStorage::open_with_progress(path, opts, &mut |_, _| {})
    }

    /// As [`FileStorage::open`], calling `progress(pos, size)` while scanning.
    pub fn open_with_progress(
        path: impl AsRef<Path>,
        opts: &OpenOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<FileStorage> {
        FileStorage::open_file(DataFile::open(path, opts.backend)?, opts, progress)
    }

    /// Opens an already opened [`DataFile`] (any backend) read-only.
    pub fn open_file(
        file: DataFile,
        opts: &OpenOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<FileStorage> {
        let size = file.size();
        let path = file.path().to_owned();
        let r = file.reader();
        let magic = if size == 0 { None } else { Some(r.magic()?) };

        let mut index = FsIndex::new();
        let (origin, start, ltid) = if size == 0 {
            (
                IndexOrigin::Rebuilt {
                    reason: index_file::RebuildReason::EmptyFile,
                },
                MAGIC_LEN,
                Tid::ZERO,
            )
        } else if opts.use_index {
            match index_file::load_checked(&r, &index_file::index_path(&path), opts.index_check) {
                Ok(saved) => {
                    let origin = IndexOrigin::Loaded { pos: saved.pos };
                    index = saved.index;
                    (origin, saved.pos, saved.ltid)
                }
                Err(reason) => (IndexOrigin::Rebuilt { reason }, MAGIC_LEN, Tid::ZERO),
            }
        } else {
            (
                IndexOrigin::Rebuilt {
                    reason: index_file::RebuildReason::NotRequested,
                },
                MAGIC_LEN,
                Tid::ZERO,
            )
        };
        let outcome = if size == 0 {
            ScanOutcome {
                end: MAGIC_LEN,
                last_tid: Tid::ZERO,
                max_tid: Tid::ZERO,
                txn_count: 0,
                record_count: 0,
                tail: scan::Tail::Clean,
                warnings: Vec::new(),
            }
        } else {
            scan::scan(&r, start, ltid, &mut index, &mut |pos| progress(pos, size))?
        };
        if matches!(origin, IndexOrigin::Rebuilt { .. }) {
            index.shrink_to_fit();
        }
        Ok(FileStorage {
            magic,
            end: outcome.end,
            last_tid: outcome.last_tid,
            report: OpenReport {
                index: origin,
                scan: outcome,
            },
            file,
            index,
            hub: CommitHub::new(),
        })
    }

    /// The Data.fs path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The underlying file.
    pub fn file(&self) -> &DataFile {
        &self.file
    }

    /// The file's magic (`None` for an empty file).
    pub fn magic(&self) -> Option<Magic> {
        self.magic
    }

    /// End of the last committed transaction: the storage's size as ZODB's
    /// `getSize()` reports it.
    pub fn end_pos(&self) -> u64 {
        self.end
    }

    /// The in-memory index.
    pub fn index(&self) -> &FsIndex {
        &self.index
    }

    /// What opening found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Typed access to the committed records.
    pub fn reader(&self) -> Reader<'_> {
        self.file.reader_to(self.end)
    }

    /// The transaction record at `pos`, checked.
    pub fn txn_at(&self, pos: u64) -> Result<TxnRecord> {
        read_txn(&self.reader(), pos)
    }

    /// Committed transactions, oldest first.
    pub fn txns(&self) -> TxnCursor<'_> {
        TxnCursor::new(self.reader(), MAGIC_LEN, None)
    }

    /// Committed transactions, newest first.
    pub fn txns_rev(&self) -> TxnRevCursor<'_> {
        TxnRevCursor::new(self.reader(), self.end)
    }

    /// The data records of a transaction.
    pub fn data_records(&self, txn: &TxnRecord) -> DataCursor<'_> {
        DataCursor::new(self.reader(), txn)
    }

    fn current_pos(&self, oid: Oid) -> Result<u64, StorageError> {
        self.index
            .get(oid)
            .ok_or(StorageError::NoSuchObject { oid })
    }

    /// The data of a record: inline, through its back pointers, or
    /// `NoData` when the record says the object does not exist.
    fn record_data(
        &self,
        r: &Reader<'_>,
        pos: u64,
        rec: &crate::reader::DataRec,
    ) -> Result<Bytes, StorageError> {
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
    fn prev_of(&self, r: &Reader<'_>, pos: u64, prev: u64) -> Result<u64> {
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
        let r = self.reader();
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

    /// The full transaction (records resolved) for iteration.
    pub fn transaction(&self, txn: &TxnRecord) -> Result<Transaction> {
        let records = self
            .data_records(txn)
            .map(|rec| self.resolve_record(&rec?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transaction {
            info: txn.info(),
            records,
        })
    }
}

impl ReadStorage for FileStorage {
    fn name(&self) -> String {
        self.file.path().display().to_string()
    }

    fn last_transaction(&self) -> Tid {
        self.last_tid
    }

    fn object_count(&self) -> u64 {
        self.index.len()
    }

    fn load_before(&self, oid: Oid, before: Tid) -> zodb_core::storage::Result<Option<Revision>> {
        let r = self.reader();
        let mut pos = self.current_pos(oid)?;
        let mut next_serial = None;
        loop {
            let rec = r.data_record_of(pos, oid)?;
            if rec.header.tid < before {
                let data = self.record_data(&r, pos, &rec)?;
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
            pos = self.prev_of(&r, pos, rec.header.prev)?;
        }
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> zodb_core::storage::Result<Bytes> {
        let r = self.reader();
        let mut pos = self.current_pos(oid)?;
        loop {
            let rec = r.data_record_of(pos, oid)?;
            if rec.header.tid == serial {
                return self.record_data(&r, pos, &rec);
            }
            if rec.header.tid < serial || rec.header.prev == 0 {
                return Err(StorageError::NoSuchRevision { oid, serial });
            }
            pos = self.prev_of(&r, pos, rec.header.prev)?;
        }
    }

    fn history(&self, oid: Oid, size: usize) -> zodb_core::storage::Result<Vec<HistoryEntry>> {
        let r = self.reader();
        let mut pos = self.current_pos(oid)?;
        let mut out = Vec::new();
        while out.len() < size {
            let rec = r.data_record_of(pos, oid)?;
            let txn = self.txn_at(rec.header.tloc)?;
            out.push(HistoryEntry {
                txn: txn.info(),
                size: rec.header.plen,
            });
            // ZODB reports the revision's serial, which is its transaction's.
            if let Some(last) = out.last_mut() {
                last.txn.tid = rec.header.tid;
            }
            if rec.header.prev == 0 {
                break;
            }
            pos = self.prev_of(&r, pos, rec.header.prev)?;
        }
        Ok(out)
    }

    fn iter_transactions(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> zodb_core::storage::Result<TxnIter<'_>> {
        let mut cursor = TxnCursor::new(self.reader(), MAGIC_LEN, stop);
        if let Some(start) = start {
            cursor.skip_to(start)?;
        }
        Ok(Box::new(cursor.map(move |t| Ok(self.transaction(&t?)?))))
    }

    fn watch(&self) -> CommitWatch {
        self.hub.subscribe()
    }

    fn load(&self, oid: Oid) -> zodb_core::storage::Result<(Bytes, Tid)> {
        let r = self.reader();
        let pos = self.current_pos(oid)?;
        let rec = r.data_record_of(pos, oid)?;
        Ok((self.record_data(&r, pos, &rec)?, rec.header.tid))
    }
}
