//! The write side: ZODB's two-phase commit on a FileStorage, crash
//! recovery of a torn tail, `restore` for copying, and undo.
//!
//! The bytes and their order are ZODB's (`FileStorage.py`): data records
//! are collected aside (in memory, spilling to `Data.fs.tmp` for big
//! transactions); `vote` writes the whole transaction at the end of the
//! file with status `c` (no fsync); `finish` flips that one status byte to
//! `' '` and fsyncs, and only then does the transaction become visible.
//! A crash before the status flip leaves a `c` transaction, which the next
//! read-write open cuts off into `Data.fs.trN`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use zodb_core::notify::Committed as CommitEvent;
use zodb_core::storage::{ConflictResolver, Result as SResult, TpcTxn, UndoEntry};
use zodb_core::{Oid, StorageError, Tid, TimeStamp, TxnInfo, TxnMeta, TxnStatus};

use crate::error::{Error, RecordKind, Result};
use crate::format::{DATA_HEADER_LEN, DataHeader, TXN_HEADER_LEN, TXN_TRAILER_LEN, TxnHeader};
use crate::observe::{Observer, WriteEvent};
use crate::reader::Reader;
use crate::scan::Tail;
use crate::storage::{FileStorage, Recovered, Writer};

/// Transactions whose data records exceed this are spilled to `Data.fs.tmp`.
const SPILL_BYTES: usize = 32 << 20;
/// Transactions whose records are at most this are written with one
/// `pwrite` (header, records and trailer copied together).
const ONE_WRITE_BYTES: usize = 256 << 10;
/// Largest user, description or extension ZODB can store (a u16 length).
const MAX_META: usize = 0xffff;

fn io_err<'p>(path: &'p Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Read-write open: cut off a crashed tail as ZODB does. A short header
/// is dropped; anything else is first copied to the first unused
/// `Data.fs.trN` so no byte is lost, then the file is truncated at `pos`.
pub(crate) fn truncate_tail(
    file: &File,
    path: &Path,
    pos: u64,
    size: u64,
    tail: &Tail,
) -> Result<Recovered> {
    let mut saved_to = None;
    if !matches!(tail, Tail::ShortHeader { .. }) {
        let mut n = 0;
        let tr = loop {
            let candidate = crate::file::sibling(path, &format!(".tr{n}"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let len = usize::try_from(size - pos).map_err(|_| Error::TooLarge {
            path: path.to_owned(),
            pos: size,
        })?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, pos)
            .map_err(io_err(path, "read tail"))?;
        let out = File::create(&tr).map_err(io_err(&tr, "create"))?;
        out.write_all_at(&bytes, 0).map_err(io_err(&tr, "write"))?;
        out.sync_all().map_err(io_err(&tr, "fsync"))?;
        saved_to = Some(tr);
    }
    file.set_len(pos).map_err(io_err(path, "truncate"))?;
    file.sync_all().map_err(io_err(path, "fsync"))?;
    Ok(Recovered {
        pos,
        len: size - pos,
        saved_to,
    })
}

/// The data records of the transaction being built.
#[derive(Debug)]
struct TmpBuf {
    mem: Vec<u8>,
    spill: Option<File>,
    len: u64,
    path: PathBuf,
}

impl TmpBuf {
    fn new(path: PathBuf) -> TmpBuf {
        TmpBuf {
            mem: Vec::new(),
            spill: None,
            len: 0,
            path,
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// Empties the spill file once its transaction is over (ZODB leaves
    /// the records in it): the file takes no disk, and its dirty pages are
    /// dropped before the kernel writes them back, which would take disk
    /// bandwidth from the commits that follow. Must run before the commit
    /// lock is released: the next transaction spills to the same file.
    fn clear(&mut self) {
        if let Some(f) = self.spill.take() {
            let _ = f.set_len(0);
        }
        self.mem = Vec::new();
        self.len = 0;
    }

    fn push(&mut self, parts: &[&[u8]]) -> Result<()> {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if self.spill.is_none() && self.mem.len() + n > SPILL_BYTES {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)
                .map_err(io_err(&self.path, "create"))?;
            f.write_all_at(&self.mem, 0)
                .map_err(io_err(&self.path, "write"))?;
            self.mem = Vec::new();
            self.spill = Some(f);
        }
        match &self.spill {
            Some(f) => {
                let mut at = self.len;
                for p in parts {
                    f.write_all_at(p, at).map_err(io_err(&self.path, "write"))?;
                    at += p.len() as u64;
                }
            }
            None => {
                for p in parts {
                    self.mem.extend_from_slice(p);
                }
            }
        }
        self.len += n as u64;
        Ok(())
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<()> {
        match &self.spill {
            Some(f) => f
                .read_exact_at(buf, pos)
                .map_err(io_err(&self.path, "read")),
            None => {
                let start = usize::try_from(pos).unwrap_or(usize::MAX);
                let src = start
                    .checked_add(buf.len())
                    .and_then(|end| self.mem.get(start..end))
                    .ok_or_else(|| Error::Io {
                        path: self.path.clone(),
                        op: "read",
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "past the transaction's records",
                        ),
                    })?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Copies the records to `file` at `at`.
    fn write_to(&self, file: &File, path: &Path, at: u64, obs: &Observer) -> Result<()> {
        match &self.spill {
            None => {
                obs.emit(WriteEvent::Write {
                    pos: at,
                    data: &self.mem,
                });
                file.write_all_at(&self.mem, at)
                    .map_err(io_err(path, "write"))
            }
            Some(f) if !obs.is_active() => {
                // In the kernel (copy_file_range where the filesystem has
                // it): the records go from the spill's page cache to
                // Data.fs's without passing through this process, which
                // for a gigabyte transaction saves a read and a copy of
                // every byte.
                use std::io::{Read, Seek, SeekFrom};
                let mut src = f;
                let mut dst = file;
                src.seek(SeekFrom::Start(0))
                    .map_err(io_err(&self.path, "seek"))?;
                dst.seek(SeekFrom::Start(at))
                    .map_err(io_err(path, "seek"))?;
                let copied =
                    io::copy(&mut src.take(self.len), &mut dst).map_err(io_err(path, "write"))?;
                if copied != self.len {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        op: "read",
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{copied} of the transaction's {} bytes", self.len),
                        ),
                    });
                }
                Ok(())
            }
            Some(f) => {
                let mut buf = vec![0u8; 8 << 20];
                let mut done = 0u64;
                while done < self.len {
                    let n = (self.len - done).min(buf.len() as u64) as usize;
                    let chunk = &mut buf[..n];
                    f.read_exact_at(chunk, done)
                        .map_err(io_err(&self.path, "read"))?;
                    obs.emit(WriteEvent::Write {
                        pos: at + done,
                        data: chunk,
                    });
                    file.write_all_at(chunk, at + done)
                        .map_err(io_err(path, "write"))?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Voted { tlen: u64 },
    Done,
}

/// A transaction in progress on a [`FileStorage`]; see [`TpcTxn`].
#[derive(Debug)]
pub struct FsTxn<'s> {
    fs: &'s FileStorage,
    w: &'s Writer,
    /// The Data.fs handle, fixed for the transaction's life.
    file: Arc<File>,
    tid: Tid,
    status: u8,
    meta: TxnMeta,
    /// Where the transaction will be written: the committed end at begin
    /// (it cannot move while we hold the commit lock).
    pos: u64,
    thl: u64,
    buf: TmpBuf,
    /// oid → absolute position of its last record in this transaction.
    tindex: HashMap<Oid, u64>,
    /// Oids in first-store order, for the commit event.
    order: Vec<Oid>,
    resolved: Vec<Oid>,
    phase: Phase,
    /// The mapping to install at finish when the file outgrew the old one.
    new_map: Option<Arc<dyn crate::backend::Backend>>,
}

fn storage_err(e: Error) -> StorageError {
    StorageError::from(e)
}

impl FileStorage {
    fn writer(&self) -> Result<&Writer> {
        self.writer.as_ref().ok_or_else(|| Error::ReadOnly {
            path: self.path.to_path_buf(),
        })
    }

    /// Begins a transaction with a new tid (ZODB's `tpc_begin`): waits for
    /// the commit lock.
    pub fn begin(&self, meta: TxnMeta) -> SResult<FsTxn<'_>> {
        self.begin_with(meta, None, TxnStatus::Committed)
    }

    /// Begins a transaction that keeps `tid` and `status` (copying).
    pub fn begin_restore(&self, meta: TxnMeta, tid: Tid, status: TxnStatus) -> SResult<FsTxn<'_>> {
        self.begin_with(meta, Some(tid), status)
    }

    fn begin_with(&self, meta: TxnMeta, tid: Option<Tid>, status: TxnStatus) -> SResult<FsTxn<'_>> {
        let w = self.writer().map_err(storage_err)?;
        for (what, len) in [
            ("user", meta.user.len()),
            ("description", meta.description.len()),
            ("extension", meta.extension.len()),
        ] {
            if len > MAX_META {
                return Err(StorageError::MetaTooLong { what, len });
            }
        }
        if !matches!(status, TxnStatus::Committed | TxnStatus::Packed) {
            return Err(StorageError::TransactionState(format!(
                "cannot commit with status {:?}",
                status
            )));
        }
        w.commit.acquire();
        let (pos, last) = {
            let st = self.read_state();
            (st.end, st.last_tid)
        };
        let mut clock = w.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let tid = match tid {
            Some(t) if t <= last || t == Tid::ZERO || t > Tid::MAX => {
                drop(clock);
                w.commit.release();
                return Err(StorageError::TransactionState(format!(
                    "restored tid {t} is not later than the last transaction {last}"
                )));
            }
            Some(t) => t,
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let ts = TimeStamp::from_unix(now).unwrap_or(TimeStamp(clock.to_bytes()));
                ts.later_than(clock.timestamp()).tid()
            }
        };
        *clock = (*clock).max(tid);
        drop(clock);
        let thl = TXN_HEADER_LEN
            + (meta.user.len() + meta.description.len() + meta.extension.len()) as u64;
        Ok(FsTxn {
            fs: self,
            w,
            file: w.current_file(),
            tid,
            status: status.as_byte(),
            meta,
            pos,
            thl,
            buf: TmpBuf::new(crate::file::sibling(&self.path, ".tmp")),
            tindex: HashMap::new(),
            order: Vec::new(),
            resolved: Vec::new(),
            phase: Phase::Open,
            new_map: None,
        })
    }

    /// `n` fresh oids, after every oid stored so far (ZODB's `new_oid`).
    pub fn new_oids(&self, n: usize) -> SResult<Vec<Oid>> {
        let w = self.writer().map_err(storage_err)?;
        let mut max = w.max_oid.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            max.0 = max
                .0
                .checked_add(1)
                .ok_or_else(|| StorageError::TransactionState("oid space exhausted".into()))?;
            out.push(*max);
        }
        Ok(out)
    }

    /// Installs the resolver consulted on write conflicts.
    pub fn set_conflict_resolver(&self, resolver: Option<Arc<dyn ConflictResolver>>) {
        *self
            .resolver
            .write()
            .unwrap_or_else(PoisonError::into_inner) = resolver;
    }

    /// Transactions that may be undone, newest first: entries `first..last`
    /// of ZODB's `undoLog` (it stops at the first packed transaction).
    pub fn undo_log(&self, first: usize, last: usize) -> SResult<Vec<UndoEntry>> {
        self.refuse_undo_while_packing()?;
        let r = self.reader();
        let mut pos = r.end();
        let mut i = 0usize;
        let mut out = Vec::new();
        while i < last && pos >= 39 {
            let tlen = r
                .u64_at(pos - TXN_TRAILER_LEN, RecordKind::Transaction)
                .map_err(storage_err)?;
            pos = pos.checked_sub(tlen + TXN_TRAILER_LEN).ok_or_else(|| {
                storage_err(r.corrupt(
                    pos,
                    RecordKind::Transaction,
                    crate::format::Problem::Truncated {
                        need: tlen,
                        have: pos,
                    },
                ))
            })?;
            let t = crate::iter::read_txn(&r, pos).map_err(storage_err)?;
            match t.header.status {
                b'p' => break,
                b' ' => {}
                _ => continue,
            }
            if i >= first {
                out.push(UndoEntry {
                    id: undo_id(t.tid()),
                    size: t.header.tlen,
                    txn: t.info(),
                });
            }
            i += 1;
        }
        Ok(out)
    }

    /// ZODB refuses undo while a pack runs: pack copies history that undo
    /// would point into.
    fn refuse_undo_while_packing(&self) -> SResult<()> {
        if self
            .writer
            .as_ref()
            .is_some_and(|w| w.packing.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(StorageError::Undo {
                oid: None,
                reason: "Undo is currently disabled for database maintenance".into(),
            });
        }
        Ok(())
    }

    /// The position of the transaction `tid`, searching back from the end
    /// (ZODB's `_txn_find`).
    ///
    /// ZODB's undo asks it to stop at the first packed (`p`) transaction,
    /// but on Python 3 that check compares an int with `b'p'` and never
    /// fires. We search the whole file as ZODB 5/6 does: in a packed file
    /// every transaction before the pack point is itself `p`, and undoing
    /// one is refused by its status, so only hand-made files can tell.
    fn txn_find(r: &Reader, tid: Tid) -> SResult<u64> {
        let mut pos = r.end();
        while pos > 39 {
            let tlen = r
                .u64_at(pos - TXN_TRAILER_LEN, RecordKind::Transaction)
                .map_err(storage_err)?;
            pos = match pos.checked_sub(tlen + TXN_TRAILER_LEN) {
                Some(p) if p >= crate::format::MAGIC_LEN => p,
                _ => break,
            };
            let h = r.txn_header(pos).map_err(storage_err)?;
            if h.tid == tid {
                return Ok(pos);
            }
        }
        Err(StorageError::Undo {
            oid: None,
            reason: "Invalid transaction id".into(),
        })
    }

    /// ZODB's `_data_find`: the record of `oid` in the transaction at
    /// `tpos` that a restored record may point back to, or 0. A back pointer
    /// there is trusted; data must equal `data`.
    fn data_find(r: &Reader, tpos: u64, oid: Oid, data: Option<&[u8]>) -> SResult<u64> {
        let t = crate::iter::read_txn(r, tpos).map_err(storage_err)?;
        let mut found = None;
        for rec in crate::iter::DataCursor::new(r.clone(), &t) {
            let rec = rec.map_err(storage_err)?;
            if rec.header.oid == oid {
                found = Some(rec);
            }
        }
        let Some(rec) = found else { return Ok(0) };
        match (&rec.data, data) {
            (None, _) => Ok(rec.pos),
            (Some(stored), Some(d)) if stored.as_ref() == d => Ok(rec.pos),
            _ => Ok(0),
        }
    }
}

/// ZODB's undo id: the tid in base64, without the trailing newline.
pub fn undo_id(tid: Tid) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = tid.to_bytes();
    let mut out = Vec::with_capacity(12);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | u32::from(x) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// The tid in an undo id (base64 of 8 bytes).
pub fn tid_from_undo_id(id: &[u8]) -> Option<Tid> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let id: Vec<u8> = id
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if id.len() != 12 || &id[11..] != b"=" {
        return None;
    }
    let mut out = Vec::with_capacity(9);
    for chunk in id.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' {
                pad += 1;
                0
            } else {
                val(c)?
            };
            n |= v << (18 - 6 * i);
        }
        for i in 0..(3 - pad) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Tid::from_slice(&out)
}

impl FsTxn<'_> {
    fn check_open(&self) -> SResult<()> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::Voted { .. } => Err(StorageError::TransactionState("already voted".into())),
            Phase::Done => Err(StorageError::TransactionState(
                "transaction is finished".into(),
            )),
        }
    }

    fn raise_max_oid(&self, oid: Oid) {
        let mut max = self
            .w
            .max_oid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *max = (*max).max(oid);
    }

    /// The committed current record of `oid`: its position and tid.
    fn committed(&self, oid: Oid) -> SResult<Option<(u64, crate::reader::DataRec)>> {
        let r = self.fs.reader();
        let Some(pos) = self.fs.current_pos(oid) else {
            return Ok(None);
        };
        Ok(Some((
            pos,
            r.data_record_of(pos, oid).map_err(storage_err)?,
        )))
    }

    /// Appends a data record for `oid`: inline data, or a back pointer.
    fn append(&mut self, oid: Oid, prev: u64, body: Body<'_>) -> SResult<()> {
        let here = self.pos + self.thl + self.buf.len();
        let plen = match body {
            Body::Data(d) => d.len() as u64,
            Body::Back(_) => 0,
        };
        let h = DataHeader {
            oid,
            tid: self.tid,
            prev,
            tloc: self.pos,
            vlen: 0,
            plen,
        };
        let back;
        let parts: [&[u8]; 2] = match body {
            Body::Data(d) => [&h.encode(), d],
            Body::Back(b) => {
                back = b.to_be_bytes();
                [&h.encode(), &back]
            }
        };
        self.buf.push(&parts).map_err(storage_err)?;
        if self.tindex.insert(oid, here).is_none() {
            self.order.push(oid);
        }
        Ok(())
    }

    fn resolver(&self) -> Option<Arc<dyn ConflictResolver>> {
        self.fs
            .resolver
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// ZODB's `tryToResolveConflict`: the states at `old` and `committed`
    /// and the new one, merged by the resolver, or `None`.
    fn try_resolve(
        &self,
        oid: Oid,
        committed: Tid,
        old: Tid,
        new: &[u8],
        committed_data: Option<&[u8]>,
    ) -> Option<Bytes> {
        let resolver = self.resolver()?;
        zodb_core::storage::try_resolve(
            self.fs,
            &*resolver,
            oid,
            committed,
            old,
            new,
            committed_data.map(Bytes::copy_from_slice),
        )
    }

    /// Reads the data of a record written earlier in this transaction.
    fn tmp_record(&self, abs: u64) -> SResult<(DataHeader, Option<Bytes>, u64)> {
        let off = abs - self.pos - self.thl;
        let mut hb = [0u8; DATA_HEADER_LEN as usize];
        self.buf.read_at(off, &mut hb).map_err(storage_err)?;
        let h = DataHeader::decode(&hb);
        if h.plen > 0 {
            let mut d = vec![0u8; h.plen as usize];
            self.buf
                .read_at(off + DATA_HEADER_LEN, &mut d)
                .map_err(storage_err)?;
            Ok((h, Some(Bytes::from(d)), 0))
        } else {
            let mut b = [0u8; 8];
            self.buf
                .read_at(off + DATA_HEADER_LEN, &mut b)
                .map_err(storage_err)?;
            Ok((h, None, u64::from_be_bytes(b)))
        }
    }

    /// ZODB's `_transactionalUndoRecord`: what to write to undo the record
    /// of `oid` at `pos` (written by `tid`, with previous revision `pre`).
    /// Returns (data, back pointer, prev for the new record).
    fn undo_record(
        &self,
        r: &Reader,
        oid: Oid,
        pos: u64,
        tid: Tid,
        pre: u64,
    ) -> SResult<(Option<Bytes>, u64, u64)> {
        let undo_err = |reason: &str| StorageError::Undo {
            oid: Some(oid),
            reason: reason.to_owned(),
        };
        let load_back = |at: u64| -> Result<Option<Bytes>> {
            Ok(r.resolve_back(oid, at + 1, at)?.map(|(d, _)| d))
        };
        let mut copy = true;
        let tpos = self.tindex.get(&oid).copied().unwrap_or(0);
        let ipos = self.fs.current_pos(oid).unwrap_or(0);
        let tipos = if tpos != 0 { tpos } else { ipos };
        let mut ctid = Tid::ZERO;
        let mut current_data: Option<Bytes> = None;
        if tipos != pos {
            // The transaction being undone is not current for this object.
            let (cdataptr, cdata) = if tpos != 0 {
                let (h, data, back) = self.tmp_record(tpos)?;
                if h.oid != oid {
                    return Err(undo_err("Invalid undo transaction id"));
                }
                ctid = h.tid;
                match data {
                    Some(d) => (tpos, Some(d)),
                    None => (back, None),
                }
            } else {
                let rec = r
                    .data_record_of(ipos, oid)
                    .map_err(|_| undo_err("Invalid undo transaction id"))?;
                ctid = rec.header.tid;
                if rec.has_data() {
                    (
                        ipos,
                        Some(r.pickle(ipos, &rec.header).map_err(storage_err)?),
                    )
                } else {
                    (rec.back, None)
                }
            };
            current_data = cdata;
            if cdataptr != pos {
                let to_undo = load_back(pos)
                    .map_err(storage_err)?
                    .ok_or_else(|| undo_err("_loadBack() failed"))?;
                if current_data.as_ref().is_none_or(|d| d.is_empty()) {
                    current_data = Some(
                        load_back(cdataptr)
                            .map_err(storage_err)?
                            .ok_or_else(|| undo_err("_loadBack() failed"))?,
                    );
                }
                if current_data.as_deref() != Some(to_undo.as_ref()) {
                    copy = false;
                    if pre == 0 {
                        return Err(undo_err(
                            "Can't undo an add transaction followed by conflicting transactions.",
                        ));
                    }
                }
            }
        }
        if pre == 0 {
            return Ok((None, 0, ipos));
        }
        if copy {
            return Ok((None, pre, ipos));
        }
        let pre_data = load_back(pre)
            .map_err(storage_err)?
            .ok_or_else(|| undo_err("_loadBack() failed"))?;
        if let Some(d) = self.try_resolve(oid, ctid, tid, &pre_data, current_data.as_deref()) {
            return Ok((Some(d), 0, ipos));
        }
        Err(undo_err("Some data were modified by a later transaction"))
    }
}

#[derive(Clone, Copy)]
enum Body<'a> {
    Data(&'a [u8]),
    Back(u64),
}

impl TpcTxn for FsTxn<'_> {
    fn tid(&self) -> Tid {
        self.tid
    }

    fn store(&mut self, oid: Oid, old_serial: Tid, data: Bytes) -> SResult<()> {
        self.check_open()?;
        if data.is_empty() {
            // ZODB would write plen 0 and no back pointer: a corrupt record.
            return Err(StorageError::TransactionState(format!(
                "oid {oid}: empty pickle"
            )));
        }
        self.raise_max_oid(oid);
        let mut data = data;
        let old = self.committed(oid)?;
        if let Some((_, rec)) = &old {
            let committed = rec.header.tid;
            if old_serial != committed {
                data = self
                    .try_resolve(oid, committed, old_serial, &data, None)
                    .ok_or(StorageError::Conflict {
                        oid,
                        committed,
                        old: old_serial,
                    })?;
                self.resolved.push(oid);
            }
        }
        let prev = old.map_or(0, |(p, _)| p);
        self.append(oid, prev, Body::Data(&data))
    }

    fn delete_object(&mut self, oid: Oid, old_serial: Tid) -> SResult<()> {
        self.check_open()?;
        let Some((prev, rec)) = self.committed(oid)? else {
            return Err(StorageError::NoSuchObject { oid });
        };
        if rec.header.tid != old_serial {
            return Err(StorageError::Conflict {
                oid,
                committed: rec.header.tid,
                old: old_serial,
            });
        }
        self.append(oid, prev, Body::Back(0))
    }

    fn check_current_serial(&mut self, oid: Oid, serial: Tid) -> SResult<()> {
        self.check_open()?;
        match self.committed(oid)? {
            Some((_, rec)) if rec.has_data() || rec.back != 0 => {
                if rec.header.tid != serial {
                    return Err(StorageError::ReadConflict {
                        oid,
                        committed: rec.header.tid,
                        read: serial,
                    });
                }
                Ok(())
            }
            _ => Err(StorageError::NoSuchObject { oid }),
        }
    }

    fn restore(&mut self, oid: Oid, data: Option<Bytes>, prev_txn: Option<Tid>) -> SResult<()> {
        self.check_open()?;
        self.raise_max_oid(oid);
        let r = self.fs.reader();
        let mut prev_pos = 0;
        if let Some(pt) = prev_txn {
            let tpos = FileStorage::txn_find(&r, pt)?;
            prev_pos = FileStorage::data_find(&r, tpos, oid, data.as_deref())?;
        }
        let old = self.fs.current_pos(oid).unwrap_or(0);
        match (&data, prev_pos) {
            (Some(d), 0) if !d.is_empty() => self.append(oid, old, Body::Data(d)),
            (Some(d), 0) => Err(StorageError::TransactionState(format!(
                "oid {oid}: empty pickle ({} bytes)",
                d.len()
            ))),
            (_, back) => self.append(oid, old, Body::Back(back)),
        }
    }

    fn undo(&mut self, tid: Tid) -> SResult<Vec<Oid>> {
        self.check_open()?;
        self.fs.refuse_undo_while_packing()?;
        let r = self.fs.reader();
        let tpos = FileStorage::txn_find(&r, tid)?;
        let t = crate::iter::read_txn(&r, tpos).map_err(storage_err)?;
        if t.header.status != b' ' {
            return Err(StorageError::Undo {
                oid: None,
                reason: "non-undoable transaction".into(),
            });
        }
        // Records are computed against the transaction as it was before
        // this undo (ZODB merges the undo's own index at the end), then
        // written.
        let mut failures: Vec<(Oid, StorageError)> = Vec::new();
        let mut writes: Vec<(Oid, Option<Bytes>, u64, u64)> = Vec::new();
        for rec in crate::iter::DataCursor::new(r.clone(), &t) {
            let rec = rec.map_err(|e| match e {
                Error::Corrupt { .. } => StorageError::Undo {
                    oid: None,
                    reason: "non-undoable transaction".into(),
                },
                e => storage_err(e),
            })?;
            let oid = rec.header.oid;
            failures.retain(|(o, _)| *o != oid);
            match self.undo_record(&r, oid, rec.pos, rec.header.tid, rec.header.prev) {
                Ok((data, back, ipos)) => writes.push((oid, data, back, ipos)),
                Err(e) => failures.push((oid, e)),
            }
        }
        if let Some((_, e)) = failures.into_iter().next() {
            return Err(e);
        }
        let mut oids = Vec::new();
        let mut local: HashMap<Oid, u64> = HashMap::new();
        let saved = self.tindex.clone();
        for (oid, data, back, ipos) in writes {
            let here = self.pos + self.thl + self.buf.len();
            match &data {
                Some(d) => self.append(oid, ipos, Body::Data(d))?,
                None => self.append(oid, ipos, Body::Back(back))?,
            }
            local.insert(oid, here);
            if !oids.contains(&oid) {
                oids.push(oid);
            }
        }
        // The transaction's index is the one before the undo plus the undo's.
        let mut merged = saved;
        merged.extend(local);
        self.tindex = merged;
        Ok(oids)
    }

    fn vote(&mut self) -> SResult<Vec<Oid>> {
        self.check_open()?;
        let tlen = self.thl + self.buf.len();
        if self.pos + tlen + TXN_TRAILER_LEN > crate::index::MAX_POS {
            return Err(storage_err(Error::TooLarge {
                path: self.fs.path.to_path_buf(),
                pos: self.pos + tlen,
            }));
        }
        let h = TxnHeader {
            tid: self.tid,
            tlen,
            status: b'c',
            ulen: self.meta.user.len() as u16,
            dlen: self.meta.description.len() as u16,
            elen: self.meta.extension.len() as u16,
        };
        let path = self.fs.path.to_path_buf();
        let file = &self.file;
        let obs = &self.w.observer;
        let result = (|| -> Result<()> {
            // Small transactions go out in one write; for big ones a second
            // copy of the records costs more than two more syscalls.
            let one_write = self.buf.spill.is_none() && self.buf.mem.len() <= ONE_WRITE_BYTES;
            let mut head = Vec::with_capacity(
                self.thl as usize + if one_write { self.buf.mem.len() + 8 } else { 0 },
            );
            head.extend_from_slice(&h.encode());
            head.extend_from_slice(&self.meta.user);
            head.extend_from_slice(&self.meta.description);
            head.extend_from_slice(&self.meta.extension);
            if one_write {
                head.extend_from_slice(&self.buf.mem);
                head.extend_from_slice(&tlen.to_be_bytes());
                obs.emit(WriteEvent::Write {
                    pos: self.pos,
                    data: &head,
                });
                return file
                    .write_all_at(&head, self.pos)
                    .map_err(io_err(&path, "write"));
            }
            obs.emit(WriteEvent::Write {
                pos: self.pos,
                data: &head,
            });
            file.write_all_at(&head, self.pos)
                .map_err(io_err(&path, "write"))?;
            self.buf.write_to(file, &path, self.pos + self.thl, obs)?;
            let trailer = tlen.to_be_bytes();
            obs.emit(WriteEvent::Write {
                pos: self.pos + tlen,
                data: &trailer,
            });
            file.write_all_at(&trailer, self.pos + tlen)
                .map_err(io_err(&path, "write"))
        })();
        if let Err(e) = result {
            // Leave no partial transaction behind (a full disk, say).
            obs.emit(WriteEvent::SetLen(self.pos));
            let _ = file.set_len(self.pos);
            return Err(storage_err(e));
        }
        // A larger window over the grown file, made now so that nothing
        // after the durable status flip in `finish` can fail.
        let end = self.pos + tlen + TXN_TRAILER_LEN;
        if end > self.fs.read_state().data.len() {
            match crate::storage::remap(&self.file, self.w.backend, end, &self.fs.path) {
                Ok(data) => self.new_map = Some(data),
                Err(e) => {
                    obs.emit(WriteEvent::SetLen(self.pos));
                    let _ = file.set_len(self.pos);
                    return Err(storage_err(e));
                }
            }
        }
        self.phase = Phase::Voted { tlen };
        Ok(self.resolved.clone())
    }

    fn finish(mut self: Box<Self>) -> SResult<Tid> {
        let Phase::Voted { tlen } = self.phase else {
            return Err(StorageError::TransactionState("finish before vote".into()));
        };
        let path = self.fs.path.to_path_buf();
        let file = self.file.clone();
        let obs = &self.w.observer;
        obs.emit(WriteEvent::Write {
            pos: self.pos + 16,
            data: &[self.status],
        });
        let deferred = self.w.durability == crate::storage::Durability::Deferred;
        let flipped = file
            .write_all_at(&[self.status], self.pos + 16)
            .and_then(|()| if deferred { Ok(()) } else { file.sync_data() })
            .map_err(io_err(&path, "finish"));
        if flipped.is_ok() && !deferred {
            obs.emit(WriteEvent::Sync);
        }
        if let Err(e) = flipped {
            // Not durable: take it back so it cannot surface after a crash.
            obs.emit(WriteEvent::SetLen(self.pos));
            let _ = file.set_len(self.pos);
            self.release();
            return Err(storage_err(e));
        }
        let end = self.pos + tlen + TXN_TRAILER_LEN;
        {
            let mut st = self
                .fs
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut entries: Vec<(u64, Oid)> = self.tindex.iter().map(|(&o, &p)| (p, o)).collect();
            entries.sort_unstable();
            for (p, o) in entries {
                // Positions were checked against the index's 48 bits at vote.
                let _ = st.index.insert(o, p);
            }
            st.end = end;
            st.last_tid = self.tid;
            if let Some(data) = self.new_map.take() {
                st.data = data;
            }
        }
        self.release();
        obs.emit(WriteEvent::Committed(self.tid));
        self.fs.hub.publish(&CommitEvent {
            tid: self.tid,
            oids: Arc::from(std::mem::take(&mut self.order)),
        });
        Ok(self.tid)
    }

    fn abort(mut self: Box<Self>) {
        self.rollback();
    }
}

impl zodb_core::WriteStorage for FileStorage {
    fn tpc_begin(&self, meta: TxnMeta) -> SResult<Box<dyn TpcTxn + '_>> {
        Ok(Box::new(self.begin(meta)?))
    }

    fn tpc_begin_restore(
        &self,
        meta: TxnMeta,
        tid: Tid,
        status: TxnStatus,
    ) -> SResult<Box<dyn TpcTxn + '_>> {
        Ok(Box::new(self.begin_restore(meta, tid, status)?))
    }

    fn new_oids(&self, n: usize) -> SResult<Vec<Oid>> {
        FileStorage::new_oids(self, n)
    }

    fn undo_log(&self, first: usize, last: usize) -> SResult<Vec<UndoEntry>> {
        FileStorage::undo_log(self, first, last)
    }

    fn pack(&self, pack_time: Tid, gc: bool) -> SResult<()> {
        FileStorage::pack(self, pack_time, gc).map(|_| ())
    }

    fn set_conflict_resolver(&self, resolver: Option<Arc<dyn ConflictResolver>>) {
        FileStorage::set_conflict_resolver(self, resolver)
    }
}

impl FsTxn<'_> {
    fn rollback(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        if let Phase::Voted { .. } = self.phase {
            self.w.observer.emit(WriteEvent::SetLen(self.pos));
            let _ = self.file.set_len(self.pos);
        }
        self.release();
    }

    /// Ends the transaction: its spill emptied, then the commit lock
    /// given to the next one.
    fn release(&mut self) {
        self.buf.clear();
        self.phase = Phase::Done;
        self.w.commit.release();
    }

    /// The transaction's header fields.
    pub fn info(&self) -> TxnInfo {
        TxnInfo {
            tid: self.tid,
            status: TxnStatus::from_byte(self.status).unwrap_or(TxnStatus::Committed),
            meta: self.meta.clone(),
        }
    }
}

impl Drop for FsTxn<'_> {
    fn drop(&mut self) {
        self.rollback();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_ids_are_zodbs_base64() {
        // base64.encodebytes(b'\x02\x85\xcb\xac\x25\x8b\xf2\x66').rstrip()
        let t = Tid(0x0285_cbac_258b_f266);
        assert_eq!(undo_id(t), b"AoXLrCWL8mY=");
        assert_eq!(tid_from_undo_id(b"AoXLrCWL8mY=\n"), Some(t));
        assert_eq!(tid_from_undo_id(b"AoXLrCWL8mY"), None);
        for v in [0u64, 1, u64::MAX >> 1, 0x0102_0304_0506_0708] {
            assert_eq!(tid_from_undo_id(&undo_id(Tid(v))), Some(Tid(v)));
        }
    }
}
