//! Pack: remove history before a pack time (and, with garbage collection,
//! objects unreachable from the root), producing exactly the file ZODB's
//! `fspack.py` produces.
//!
//! The algorithm is ZODB's, in three parts:
//! - **GC** scans the transactions up to the pack time for each oid's
//!   current record then, with `gc`, marks what is reachable from the root
//!   (following references, and back pointers written after the pack time
//!   that point before it).
//! - **Phase 1** copies, into `Data.fs.pack`, the reachable records of the
//!   transactions before the pack time: status `p`, `prev` 0, data inline.
//! - **Phase 2** copies every later transaction as it is (prev pointers
//!   and back pointers re-targeted into the new file), taking the commit
//!   lock only between transactions, so commits go on while packing; at
//!   the end of the file, still holding the lock, the files are swapped:
//!   `Data.fs` → `Data.fs.old`, `Data.fs.pack` → `Data.fs`.
//!
//! Memory is O(index): the pack index, the current-at-packtime index and
//! the reachable set are compact [`FsIndex`]es; records are streamed.
//! Unlike ZODB, the `.pack` file and the directory are fsynced before and
//! after the rename, so a crash cannot leave a `Data.fs` whose data never
//! reached the disk.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use zodb_core::pickle::RefScanner;
use zodb_core::{Oid, StorageError, Tid};

use crate::error::{Error, RecordKind, Result};
use crate::format::{
    DATA_HEADER_LEN, DataHeader, MAGIC_LEN, Problem, TXN_HEADER_LEN, TXN_TRAILER_LEN, TxnHeader,
};
use crate::index::FsIndex;
use crate::iter::read_txn;
use crate::reader::{DataRec, Reader};
use crate::storage::{FileStorage, Writer};

/// What a pack did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackOutcome {
    /// The storage holds no object: nothing to do.
    Empty,
    /// Everything before the pack time was already packed and nothing was
    /// committed since (ZODB's `RedundantPackWarning`): nothing done.
    Redundant,
    /// Packing would free nothing: the file is unchanged.
    NothingToFree,
    /// The file was replaced by its packed copy; the old one is kept as
    /// `Data.fs.old`.
    Packed {
        /// Size of the file before (its committed part).
        old_size: u64,
        /// Size after.
        new_size: u64,
        /// Transactions appended by commits during the pack, copied too.
        concurrent_txns: u64,
    },
}

fn pack_err(reason: impl Into<String>) -> StorageError {
    StorageError::Backend(Box::new(PackError(reason.into())))
}

/// Pack cannot go on (ZODB's `PackError`, or a consistency failure of the
/// scan); the storage is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pack failed: {0}")]
pub struct PackError(pub String);

/// Checks a transaction as ZODB's `checkTxn` does during pack.
fn check_txn(r: &Reader, pos: u64, h: &TxnHeader, ltid: &mut Tid) -> Result<()> {
    let fail = |p: Problem| r.corrupt(pos, RecordKind::Transaction, p);
    if h.tid <= *ltid {
        return Err(fail(Problem::TidNotIncreasing {
            tid: h.tid,
            prev: *ltid,
        }));
    }
    *ltid = h.tid;
    if h.status == b'c' {
        return Err(fail(Problem::VotedNotLast {
            later: pos + h.record_len(),
        }));
    }
    if !matches!(h.status, b' ' | b'p' | b'u') {
        return Err(fail(Problem::BadStatus(h.status)));
    }
    if h.tlen < h.header_len() {
        return Err(fail(Problem::TlenTooSmall {
            tlen: h.tlen,
            header_len: h.header_len(),
        }));
    }
    Ok(())
}

/// Checks a data record as ZODB's `checkData` does, reading its back pointer.
fn check_data(r: &Reader, tpos: u64, tend: u64, pos: u64) -> Result<DataRec> {
    let rec = r.data_record(pos)?;
    rec.header
        .check(pos, tpos, tend)
        .map_err(|p| r.corrupt(pos, RecordKind::DataRecord, p))?;
    if rec.back != 0 {
        crate::format::check_back(pos, rec.back)
            .map_err(|p| r.corrupt(pos, RecordKind::DataRecord, p))?;
    }
    Ok(rec)
}

fn check_trailer(r: &Reader, tpos: u64, h: &TxnHeader) -> Result<()> {
    let trailer = r.u64_at(tpos + h.tlen, RecordKind::Transaction)?;
    if trailer != h.tlen {
        return Err(r.corrupt(
            tpos,
            RecordKind::Transaction,
            Problem::TrailerMismatch {
                tlen: h.tlen,
                trailer,
            },
        ));
    }
    Ok(())
}

/// ZODB's `GC`: which record positions survive the pack.
struct Gc {
    packpos: u64,
    /// oid → the one reachable record (the common case).
    reachable: FsIndex,
    /// oid → further reachable records (back pointers from the future to
    /// revisions that were not current at the pack time).
    reach_ex: HashMap<Oid, Vec<u64>>,
}

impl Gc {
    fn is_reachable(&self, oid: Oid, pos: u64) -> bool {
        match self.reachable.get(oid) {
            None => false,
            Some(p) if p == pos => true,
            Some(_) => self.reach_ex.get(&oid).is_some_and(|l| l.contains(&pos)),
        }
    }
}

/// The oids referenced by the data of the record at `pos` (following its
/// back pointers), as ZODB's `GC.findrefs`.
fn findrefs(r: &Reader, scanner: &mut RefScanner, pos: u64) -> Result<Vec<Oid>> {
    let mut at = pos;
    let mut rec = r.data_record(at)?;
    while rec.back != 0 {
        crate::format::check_back(at, rec.back)
            .map_err(|p| r.corrupt(at, RecordKind::DataRecord, p))?;
        at = rec.back;
        rec = r.data_record(at)?;
    }
    if rec.header.plen == 0 {
        return Ok(Vec::new());
    }
    let data = r.pickle(at, &rec.header)?;
    let mut out = Vec::new();
    scanner.scan(&data, &mut out).map_err(|e| Error::Pickle {
        path: r.path().to_owned(),
        pos: at,
        source: e,
    })?;
    Ok(out)
}

/// `GC.buildPackIndex` then the reachability passes.
fn find_reachable(
    r: &Reader,
    pack_time: Tid,
    gc: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> std::result::Result<Option<Gc>, StorageError> {
    let eof = r.end();
    let mut oid2curpos = FsIndex::new();
    let mut pos = MAGIC_LEN;
    let mut ltid = Tid::ZERO;
    let mut unpacked = false;
    let mut last_header: Option<TxnHeader> = None;
    while pos < eof {
        progress(pos, eof);
        let th = r.txn_header(pos)?;
        if th.tid > pack_time {
            break;
        }
        check_txn(r, pos, &th, &mut ltid)?;
        if th.status != b'p' {
            unpacked = true;
        }
        let tpos = pos;
        let end = pos + th.tlen;
        pos += th.header_len();
        while pos < end {
            let rec = check_data(r, tpos, end, pos)?;
            if rec.header.plen != 0 || rec.back != 0 {
                oid2curpos
                    .insert(rec.header.oid, pos)
                    .map_err(|e| Error::TooLarge {
                        path: r.path().to_owned(),
                        pos: e.0,
                    })?;
            } else {
                oid2curpos.remove(rec.header.oid);
            }
            pos += rec.header.record_len();
        }
        check_trailer(r, tpos, &th)?;
        pos += TXN_TRAILER_LEN;
        last_header = Some(th);
    }
    let packpos = pos;
    if !unpacked {
        // Redundant if the transaction after the pack point, or (at the end
        // of the file) the last one before it, was packed already.
        let after = if pos < eof {
            Some(r.txn_header(pos)?)
        } else {
            last_header
        };
        if after.is_some_and(|h| h.status == b'p') {
            return Ok(None);
        }
    }
    let mut scanner = RefScanner::new();
    let mut g = Gc {
        packpos,
        reachable: FsIndex::new(),
        reach_ex: HashMap::new(),
    };
    if !gc {
        g.reachable = oid2curpos;
        return Ok(Some(g));
    }
    // Reachable at the pack time, from the root.
    mark_reachable(
        r,
        &mut scanner,
        &oid2curpos,
        &mut g.reachable,
        vec![Oid::ROOT],
    )?;
    // Back pointers after the pack time into history before it.
    let mut extra_roots = Vec::new();
    let mut pos = packpos;
    while pos < eof {
        progress(pos, eof);
        let th = r.txn_header(pos)?;
        check_txn(r, pos, &th, &mut ltid)?;
        let tpos = pos;
        let end = pos + th.tlen;
        pos += th.header_len();
        while pos < end {
            let rec = check_data(r, tpos, end, pos)?;
            let oid = rec.header.oid;
            if rec.back != 0 && rec.back < packpos {
                if g.reachable.get(oid).is_some() {
                    let l = g.reach_ex.entry(oid).or_default();
                    if !l.contains(&rec.back) {
                        l.push(rec.back);
                        extra_roots.push(rec.back);
                    }
                } else {
                    g.reachable
                        .insert(oid, rec.back)
                        .map_err(|e| Error::TooLarge {
                            path: r.path().to_owned(),
                            pos: e.0,
                        })?;
                }
            }
            pos += rec.header.record_len();
        }
        check_trailer(r, tpos, &th)?;
        pos += TXN_TRAILER_LEN;
    }
    for root in extra_roots {
        let refs = findrefs(r, &mut scanner, root)?;
        mark_reachable(r, &mut scanner, &oid2curpos, &mut g.reachable, refs)?;
    }
    Ok(Some(g))
}

/// `GC.findReachableAtPacktime`: a depth-first walk from `roots`.
fn mark_reachable(
    r: &Reader,
    scanner: &mut RefScanner,
    oid2curpos: &FsIndex,
    reachable: &mut FsIndex,
    roots: Vec<Oid>,
) -> std::result::Result<(), StorageError> {
    let mut todo = roots;
    while let Some(oid) = todo.pop() {
        if reachable.get(oid).is_some() {
            continue;
        }
        let Some(pos) = oid2curpos.get(oid) else {
            if oid == Oid::ROOT && oid2curpos.is_empty() {
                // Packing to before the database was created.
                continue;
            }
            // ZODB fails with KeyError here too: a reference to an object
            // that does not exist at the pack time.
            return Err(pack_err(format!(
                "oid {oid} is referenced but does not exist at the pack time"
            )));
        };
        reachable.insert(oid, pos).map_err(|e| Error::TooLarge {
            path: r.path().to_owned(),
            pos: e.0,
        })?;
        for o in findrefs(r, scanner, pos)? {
            if reachable.get(o).is_none() {
                todo.push(o);
            }
        }
    }
    Ok(())
}

/// The `.pack` file being written: buffered appends at a known position,
/// with random-access patches and reads for the few places that need them.
struct Out {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    flushed: u64,
}

impl Out {
    fn pos(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, self.flushed)
                .map_err(self.io("write"))?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn patch_u64(&mut self, at: u64, v: u64) -> Result<()> {
        self.flush()?;
        self.file
            .write_all_at(&v.to_be_bytes(), at)
            .map_err(self.io("write"))
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<()> {
        self.flush()?;
        self.file.read_exact_at(buf, at).map_err(self.io("read"))
    }

    fn u64_at(&mut self, at: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_at(at, &mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn txn_header(&mut self, at: u64) -> Result<TxnHeader> {
        let mut b = [0u8; TXN_HEADER_LEN as usize];
        self.read_at(at, &mut b)?;
        Ok(TxnHeader::decode(&b))
    }

    fn data_header(&mut self, at: u64) -> Result<DataHeader> {
        let mut b = [0u8; DATA_HEADER_LEN as usize];
        self.read_at(at, &mut b)?;
        Ok(DataHeader::decode(&b))
    }
}

/// ZODB's `PackCopier`: phase 2 records, back pointers re-targeted.
struct Copier {
    /// oid → position in the new file (committed part of the copy).
    index: FsIndex,
    /// oid → position, for the transaction being copied.
    tindex: Vec<(Oid, u64)>,
}

impl Copier {
    /// `PackCopier._txn_find`: the new position of transaction `tid`,
    /// searching back from `from` in the output.
    fn txn_find(out: &mut Out, from: u64, tid: Tid) -> std::result::Result<u64, StorageError> {
        let mut pos = from;
        while pos > MAGIC_LEN {
            let tlen = out.u64_at(pos - TXN_TRAILER_LEN)?;
            pos = match pos.checked_sub(tlen + TXN_TRAILER_LEN) {
                Some(p) => p,
                None => break,
            };
            if out.txn_header(pos)?.tid == tid {
                return Ok(pos);
            }
        }
        Err(pack_err("Invalid backpointer transaction id"))
    }

    /// `PackCopier._data_find`: the first record of `oid` in the output
    /// transaction at `tpos` that the copied record may point back to.
    fn data_find(out: &mut Out, tpos: u64, oid: Oid, data: Option<&[u8]>) -> Result<u64> {
        let th = out.txn_header(tpos)?;
        let tend = tpos + th.tlen;
        let mut pos = tpos + th.header_len();
        while pos < tend {
            let h = out.data_header(pos)?;
            if h.oid == oid {
                if h.plen == 0 {
                    return Ok(pos);
                }
                let Some(data) = data else { return Ok(0) };
                if h.plen != data.len() as u64 {
                    return Ok(0);
                }
                let mut stored = vec![0u8; data.len()];
                out.read_at(pos + DATA_HEADER_LEN, &mut stored)?;
                return Ok(if stored == data { pos } else { 0 });
            }
            pos += h.record_len();
        }
        Ok(0)
    }
}

/// `fetchDataViaBackpointer`: the data a back pointer resolves to.
fn fetch_back(r: &Reader, oid: Oid, from: u64, back: u64) -> Result<Option<Bytes>> {
    Ok(r.resolve_back(oid, from, back)?.map(|(d, _)| d))
}

impl FileStorage {
    /// Packs the storage as ZODB's `pack(t, referencesf, gc)` does, to the
    /// tid `pack_time` (ZODB converts its float time with
    /// `TimeStamp(*gmtime(t)[:5] + (t % 60,))`). Commits may go on meanwhile.
    pub fn pack(&self, pack_time: Tid, gc: bool) -> std::result::Result<PackOutcome, StorageError> {
        self.pack_with_progress(pack_time, gc, &mut |_, _, _| {})
    }

    /// As [`FileStorage::pack`], calling `progress(stage, pos, end)` as it
    /// goes: stage `"gc"` while finding what is reachable, `"copy"` while
    /// copying (positions in the file being packed).
    pub fn pack_with_progress(
        &self,
        pack_time: Tid,
        gc: bool,
        progress: &mut dyn FnMut(&'static str, u64, u64),
    ) -> std::result::Result<PackOutcome, StorageError> {
        let w = self.writer.as_ref().ok_or(StorageError::ReadOnly)?;
        if pack_time == Tid::ZERO {
            return Err(pack_err("Invalid pack time"));
        }
        if self.read_state().index.is_empty() {
            return Ok(PackOutcome::Empty);
        }
        if w.packing.swap(true, Ordering::SeqCst) {
            return Err(pack_err("Already packing"));
        }
        let result = self.pack_locked_out(w, pack_time, gc, progress);
        w.packing.store(false, Ordering::SeqCst);
        result
    }

    fn pack_locked_out(
        &self,
        w: &Writer,
        pack_time: Tid,
        gc: bool,
        progress: &mut dyn FnMut(&'static str, u64, u64),
    ) -> std::result::Result<PackOutcome, StorageError> {
        let old = crate::file::sibling(&self.path, ".old");
        if old.exists() {
            std::fs::remove_file(&old).map_err(|source| Error::Io {
                path: old.clone(),
                op: "remove",
                source,
            })?;
        }
        // Everything up to here is committed and immutable; commits append.
        let r = self.reader();
        let Some(g) = find_reachable(&r, pack_time, gc, &mut |pos, end| progress("gc", pos, end))?
        else {
            return Ok(PackOutcome::Redundant);
        };
        let pack_path = crate::file::sibling(&self.path, ".pack");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&pack_path)
            .map_err(|source| Error::Io {
                path: pack_path.clone(),
                op: "create",
                source,
            })?;
        let mut out = Out {
            file,
            path: pack_path.clone(),
            buf: Vec::with_capacity(2 << 20),
            flushed: 0,
        };
        let outcome = self.copy_and_swap(w, &r, &g, &mut out, &mut |pos, end| {
            progress("copy", pos, end)
        });
        match outcome {
            Ok(Some(o)) => Ok(o),
            Ok(None) => {
                let _ = std::fs::remove_file(&pack_path);
                Ok(PackOutcome::NothingToFree)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&pack_path);
                Err(e)
            }
        }
    }

    /// Phase 1, then phase 2 and the swap; `None` when phase 1 freed nothing.
    fn copy_and_swap(
        &self,
        w: &Writer,
        r: &Reader,
        g: &Gc,
        out: &mut Out,
        progress: &mut dyn FnMut(u64, u64),
    ) -> std::result::Result<Option<PackOutcome>, StorageError> {
        let mut magic = [0u8; 4];
        r.backend()
            .read_exact_at(0, &mut magic)
            .map_err(|source| Error::Io {
                path: self.path.to_path_buf(),
                op: "read",
                source,
            })?;
        out.write(&magic)?;
        let mut copier = Copier {
            index: FsIndex::new(),
            tindex: Vec::new(),
        };

        // Phase 1: reachable records before the pack time.
        let mut pos = MAGIC_LEN;
        while pos < g.packpos {
            progress(pos, r.end());
            let th = r.txn_header(pos)?;
            let tend = pos + th.tlen;
            let mut dpos = pos + th.header_len();
            let mut new_tpos = None;
            while dpos < tend {
                let rec = r.data_record(dpos)?;
                let h = rec.header;
                let here = dpos;
                dpos += h.record_len();
                if !g.is_reachable(h.oid, here) {
                    continue;
                }
                let tpos = match new_tpos {
                    Some(t) => t,
                    None => {
                        let t = out.pos();
                        let mut ph = th;
                        ph.status = b'p';
                        let (u, d, e) = r.txn_strings(pos, &th)?;
                        out.write(&ph.encode())?;
                        out.write(&u)?;
                        out.write(&d)?;
                        out.write(&e)?;
                        new_tpos = Some(t);
                        t
                    }
                };
                let data = if h.plen > 0 {
                    Some(r.pickle(here, &h)?)
                } else {
                    fetch_back(r, h.oid, here, rec.back)?
                };
                let data = data.unwrap_or_default();
                let at = out.pos();
                copier
                    .index
                    .insert(h.oid, at)
                    .map_err(|e| Error::TooLarge {
                        path: out.path.clone(),
                        pos: e.0,
                    })?;
                let nh = DataHeader {
                    oid: h.oid,
                    tid: h.tid,
                    prev: 0,
                    tloc: tpos,
                    vlen: 0,
                    plen: data.len() as u64,
                };
                out.write(&nh.encode())?;
                out.write(&data)?;
                if data.is_empty() {
                    out.write(&[0u8; 8])?;
                }
            }
            if let Some(tpos) = new_tpos {
                let new_end = out.pos() + TXN_TRAILER_LEN;
                let tlen = new_end - tpos - TXN_TRAILER_LEN;
                out.patch_u64(tpos + 8, tlen)?;
                out.write(&tlen.to_be_bytes())?;
            }
            check_trailer(r, pos, &th)?;
            pos = tend + TXN_TRAILER_LEN;
        }
        let (ipos, opos) = (pos, out.pos());
        if ipos == opos {
            return Ok(None);
        }

        // Phase 2: everything after the pack time, as it is, including what
        // is committed meanwhile. The commit lock is held between
        // transactions and at the end, released while copying each one.
        w.commit.acquire();
        let mut locked = true;
        let result = (|| -> std::result::Result<PackOutcome, StorageError> {
            let mut ipos = ipos;
            let mut concurrent = 0u64;
            let start_end = r.end();
            loop {
                let cur = self.reader();
                if ipos >= cur.end() {
                    break;
                }
                progress(ipos, cur.end());
                let th = cur.txn_header(ipos)?;
                w.commit.release();
                locked = false;
                self.copy_one(&cur, ipos, &th, &mut copier, out)?;
                if ipos >= start_end {
                    concurrent += 1;
                }
                ipos += th.record_len();
                w.commit.acquire();
                locked = true;
            }
            // Swap, still holding the commit lock.
            out.flush()?;
            let new_size = out.pos();
            let sync = |f: &File, p: &Path| {
                f.sync_all().map_err(|source| Error::Io {
                    path: p.to_owned(),
                    op: "fsync",
                    source,
                })
            };
            sync(&out.file, &out.path)?;
            let old = crate::file::sibling(&self.path, ".old");
            let rename = |a: &Path, b: &Path| {
                std::fs::rename(a, b).map_err(|source| Error::Io {
                    path: a.to_owned(),
                    op: "rename",
                    source,
                })
            };
            rename(&self.path, &old)?;
            // Beyond the point of no return: the packed file becomes Data.fs.
            rename(&out.path, &self.path)?;
            if let Some(dir) = self.path.parent() {
                let d = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if let Ok(f) = File::open(d) {
                    let _ = f.sync_all();
                }
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(|source| Error::Io {
                    path: self.path.to_path_buf(),
                    op: "open",
                    source,
                })?;
            let file = Arc::new(file);
            let data = crate::storage::remap(&file, w.backend, new_size, &self.path)?;
            {
                let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
                st.index = std::mem::take(&mut copier.index);
                st.end = new_size;
                st.data = data;
            }
            *w.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
            Ok(PackOutcome::Packed {
                old_size: ipos,
                new_size,
                concurrent_txns: concurrent,
            })
        })();
        if locked {
            w.commit.release();
        }
        let outcome = result?;
        self.save_index().map_err(StorageError::from)?;
        Ok(Some(outcome))
    }

    /// `FileStoragePacker.copyOne`: one transaction after the pack time.
    fn copy_one(
        &self,
        r: &Reader,
        ipos: u64,
        th: &TxnHeader,
        copier: &mut Copier,
        out: &mut Out,
    ) -> std::result::Result<(), StorageError> {
        let tpos = out.pos();
        let (u, d, e) = r.txn_strings(ipos, th)?;
        out.write(&th.encode())?;
        out.write(&u)?;
        out.write(&d)?;
        out.write(&e)?;
        let tend = ipos + th.tlen;
        let mut dpos = ipos + th.header_len();
        while dpos < tend {
            let rec = r.data_record(dpos)?;
            let h = rec.header;
            let here = dpos;
            dpos += h.record_len();
            let (data, prev_txn) = if h.plen > 0 {
                (Some(r.pickle(here, &h)?), None)
            } else {
                let data = fetch_back(r, h.oid, here, rec.back)?;
                let prev_txn = if rec.back != 0 {
                    Some(r.data_record_of(rec.back, h.oid)?.header.tid)
                } else {
                    None
                };
                (data, prev_txn)
            };
            let mut prev_pos = 0;
            if let Some(pt) = prev_txn {
                let found = Copier::txn_find(out, tpos, pt)?;
                prev_pos = Copier::data_find(out, found, h.oid, data.as_deref())?;
            }
            let old = copier.index.get(h.oid).unwrap_or(0);
            let at = out.pos();
            copier.tindex.push((h.oid, at));
            let body: Option<&[u8]> = if prev_pos != 0 { None } else { data.as_deref() };
            let nh = DataHeader {
                oid: h.oid,
                tid: h.tid,
                prev: old,
                tloc: tpos,
                vlen: 0,
                plen: body.map_or(0, |b| b.len() as u64),
            };
            out.write(&nh.encode())?;
            match body {
                Some(b) => out.write(b)?,
                None => out.write(&prev_pos.to_be_bytes())?,
            }
        }
        let tlen = out.pos() - tpos;
        if tlen != th.tlen {
            // ZODB asserts this: a back pointer whose target changed form.
            return Err(pack_err(format!(
                "transaction at {ipos} would change length in the packed file ({} -> {tlen})",
                th.tlen
            )));
        }
        out.write(&tlen.to_be_bytes())?;
        for (oid, at) in copier.tindex.drain(..) {
            copier.index.insert(oid, at).map_err(|e| Error::TooLarge {
                path: out.path.clone(),
                pos: e.0,
            })?;
        }
        let _ = read_txn;
        Ok(())
    }
}
