//! An in-memory storage with full MVCC history: ZODB's `MappingStorage`
//! with undo.
//!
//! Why a second storage next to FileStorage: the ZEO server serves
//! `<mappingstorage>` and `<demostorage>` sections (ZEO's own test suite
//! runs against them), and every layer above the storage traits wants a
//! storage that needs no files in its tests. So this is not a toy map: it
//! keeps every revision, answers `loadBefore`/`loadSerial`/`history` and
//! iteration like FileStorage, takes the commit lock at `tpc_begin`,
//! chooses tids with ZODB's `TimeStamp.laterThan` rule, reports conflicts
//! and read conflicts, undoes (undo of a creation makes the object vanish),
//! and packs to a time with or without garbage collection — with the same
//! rules as [`filestorage`](../../filestorage/index.html), so a test that
//! passes on one passes on the other.
//!
//! Layout: one `RwLock` over the committed state (a map oid → revisions,
//! oldest first, and the list of transactions). Readers hold it only to
//! copy out a `Bytes` handle; a transaction buffers its writes privately and
//! takes the write lock once, in [`TpcTxn::finish`]. Records share their
//! data (`Bytes`) between the per-object history and the transaction list.
//!
//! ```
//! use bytes::Bytes;
//! use zodb_core::memory::MemoryStorage;
//! use zodb_core::{Oid, ReadStorage, Tid, TxnMeta, WriteStorage};
//!
//! let st = MemoryStorage::new("demo");
//! let mut t = st.tpc_begin(TxnMeta::default())?;
//! t.store(Oid::ROOT, Tid::ZERO, Bytes::from_static(b"root"))?;
//! t.vote()?;
//! let tid = t.finish()?;
//! assert_eq!(st.load(Oid::ROOT)?, (Bytes::from_static(b"root"), tid));
//! assert!(st.load_before(Oid::ROOT, tid)?.is_none());
//! # Ok::<(), zodb_core::StorageError>(())
//! ```

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::notify::{CommitHub, CommitWatch, Committed};
use crate::pickle::RefScanner;
use crate::storage::{
    ConflictResolver, DataRecord, HistoryEntry, Result, Revision, TpcTxn, Transaction, TxnIter,
    UndoEntry,
};
use crate::{Oid, ReadStorage, StorageError, Tid, TimeStamp, TxnInfo, TxnMeta, TxnStatus};

/// One revision of an object.
#[derive(Clone, Debug)]
struct Rev {
    tid: Tid,
    /// `None`: the object does not exist as of this revision (deleted, or
    /// its creation undone).
    data: Option<Bytes>,
    /// The transaction whose record holds the same data (undo, restore),
    /// which iteration reports as `data_txn` like FileStorage's back
    /// pointers.
    data_txn: Option<Tid>,
}

/// The committed state.
#[derive(Debug, Default)]
struct State {
    /// oid → revisions, oldest first (tids strictly increasing).
    objects: HashMap<Oid, Vec<Rev>>,
    /// Committed transactions, oldest first. `Arc` so that an iterator is a
    /// cheap snapshot that later commits and packs do not disturb.
    txns: Vec<Arc<Transaction>>,
    last_tid: Tid,
    /// Bytes of data and metadata held, reported as the storage's size.
    size: u64,
}

impl State {
    fn txn_index(&self, tid: Tid) -> Option<usize> {
        self.txns.binary_search_by_key(&tid, |t| t.info.tid).ok()
    }

    /// The current revision of `oid`.
    fn current(&self, oid: Oid) -> Option<&Rev> {
        self.objects.get(&oid).and_then(|revs| revs.last())
    }
}

/// The commit lock: a flag and a condition variable rather than a mutex
/// guard, so that the transaction holding it may move between threads (a
/// ZEO server votes and finishes on different tasks).
#[derive(Debug, Default)]
struct CommitLock {
    busy: Mutex<bool>,
    freed: Condvar,
}

impl CommitLock {
    fn acquire(&self) {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy {
            busy = self
                .freed
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *busy = true;
    }

    fn release(&self) {
        *self.busy.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.freed.notify_one();
    }
}

/// An in-memory MVCC storage; see the [module docs](self).
pub struct MemoryStorage {
    name: String,
    state: RwLock<State>,
    commit: CommitLock,
    /// The last tid handed out: new tids must be later.
    clock: Mutex<Tid>,
    /// The largest oid stored or handed out.
    max_oid: Mutex<Oid>,
    hub: CommitHub,
    resolver: RwLock<Option<Arc<dyn ConflictResolver>>>,
    /// Set while a pack runs: undo is refused, as in FileStorage.
    packing: AtomicBool,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// ZODB's undo id for a tid: the tid in base64 without the trailing newline
/// (`base64.encodebytes(tid).rstrip()`), what FileStorage hands out and
/// what this storage hands out too, so that one decoder serves both.
pub fn undo_id(tid: Tid) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = tid.to_bytes();
    let mut out = Vec::with_capacity(12);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | u32::from(x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.extend(B64.get(((n >> (18 - 6 * i)) & 63) as usize));
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// The tid inside an undo id made by [`undo_id`] (whitespace, such as the
/// newline Python 2 kept, is ignored); `None` if it is not one.
pub fn tid_from_undo_id(id: &[u8]) -> Option<Tid> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let id: Vec<u8> = id
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    // 8 bytes are 11 characters and one '='.
    if id.len() != 12 || id.last() != Some(&b'=') {
        return None;
    }
    let mut n: u128 = 0;
    for &c in id.get(..11)? {
        n = n << 6 | u128::from(val(c)?);
    }
    // 66 bits: the last two are padding and must be zero.
    if n & 3 != 0 {
        return None;
    }
    Some(Tid((n >> 2) as u64))
}

fn now_tid(after: Tid) -> Tid {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let ts = TimeStamp::from_unix(now).unwrap_or(TimeStamp(after.to_bytes()));
    ts.later_than(after.timestamp()).tid()
}

fn meta_len(meta: &TxnMeta) -> u64 {
    (meta.user.len() + meta.description.len() + meta.extension.len()) as u64
}

impl MemoryStorage {
    /// An empty storage; `name` is what [`ReadStorage::name`] reports.
    pub fn new(name: impl Into<String>) -> MemoryStorage {
        MemoryStorage {
            name: name.into(),
            state: RwLock::new(State::default()),
            commit: CommitLock::default(),
            clock: Mutex::new(Tid::ZERO),
            max_oid: Mutex::new(Oid(0)),
            hub: CommitHub::new(),
            resolver: RwLock::new(None),
            packing: AtomicBool::new(false),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes of object data and transaction metadata held (ZODB's
    /// `getSize()` for this storage).
    pub fn size(&self) -> u64 {
        self.read().size
    }

    fn begin_with(&self, meta: TxnMeta, tid: Option<Tid>, status: TxnStatus) -> Result<MemTxn<'_>> {
        for (what, len) in [
            ("user", meta.user.len()),
            ("description", meta.description.len()),
            ("extension", meta.extension.len()),
        ] {
            // The same limit as FileStorage, so that what commits here
            // would commit there.
            if len > 65535 {
                return Err(StorageError::MetaTooLong { what, len });
            }
        }
        if !matches!(status, TxnStatus::Committed | TxnStatus::Packed) {
            return Err(StorageError::TransactionState(format!(
                "cannot commit with status {status:?}"
            )));
        }
        self.commit.acquire();
        let last = self.read().last_tid;
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let tid = match tid {
            Some(t) if t <= last || t == Tid::ZERO || t > Tid::MAX => {
                drop(clock);
                self.commit.release();
                return Err(StorageError::TransactionState(format!(
                    "restored tid {t} is not later than the last transaction {last}"
                )));
            }
            Some(t) => t,
            None => now_tid((*clock).max(last)),
        };
        *clock = (*clock).max(tid);
        drop(clock);
        Ok(MemTxn {
            st: self,
            tid,
            status,
            meta,
            writes: Vec::new(),
            index: HashMap::new(),
            resolved: Vec::new(),
            phase: Phase::Open,
        })
    }

    fn raise_max_oid(&self, oid: Oid) {
        let mut max = self.max_oid.lock().unwrap_or_else(PoisonError::into_inner);
        *max = (*max).max(oid);
    }

    fn resolver(&self) -> Option<Arc<dyn ConflictResolver>> {
        self.resolver
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// ZODB's `tryToResolveConflict`: merges the writer's state with the
    /// committed one, given the state both started from.
    fn try_resolve(
        &self,
        oid: Oid,
        committed: Tid,
        old: Tid,
        new: &[u8],
        committed_data: Option<&Bytes>,
    ) -> Option<Bytes> {
        let resolver = self.resolver()?;
        crate::storage::try_resolve(
            self,
            &*resolver,
            oid,
            committed,
            old,
            new,
            committed_data.cloned(),
        )
    }

    /// Removes history up to and including `pack_time` (and, with `gc`,
    /// objects unreachable from the root at that time), with FileStorage's
    /// rules: the revision current at the pack time survives if reachable,
    /// every later revision survives, transactions up to the pack time keep
    /// only their surviving records and get status packed (undo stops
    /// there), and emptied ones disappear. Reachability follows references
    /// from the root through the revisions current at the pack time, plus
    /// the records later undo or restore copied data from.
    fn pack_state(st: &mut State, pack_time: Tid, gc: bool) -> Result<()> {
        // Revision current at the pack time, per oid (index into its revs),
        // leaving out objects that do not exist then.
        let mut current: HashMap<Oid, usize> = HashMap::new();
        for (&oid, revs) in &st.objects {
            let n = revs.partition_point(|r| r.tid <= pack_time);
            if let Some(i) = n.checked_sub(1)
                && revs.get(i).is_some_and(|r| r.data.is_some())
            {
                current.insert(oid, i);
            }
        }
        // Surviving pre-pack revisions: (oid, tid).
        let mut keep: HashSet<(Oid, Tid)> = HashSet::new();
        let tid_of = |oid: &Oid, i: usize| -> Option<Tid> {
            st.objects.get(oid).and_then(|r| r.get(i)).map(|r| r.tid)
        };
        if !gc {
            for (oid, &i) in &current {
                keep.extend(tid_of(oid, i).map(|t| (*oid, t)));
            }
        } else {
            let mut scanner = RefScanner::new();
            let mut reached: HashSet<Oid> = HashSet::new();
            Self::mark_reachable(
                st,
                &current,
                &mut scanner,
                vec![Oid::ROOT],
                &mut reached,
                &mut keep,
            )?;
            // Later records whose data came from before the pack time
            // (undo, restore) keep that revision and what it references.
            let mut extra: Vec<(Oid, Tid)> = Vec::new();
            for (&oid, revs) in &st.objects {
                for r in revs.iter().filter(|r| r.tid > pack_time) {
                    if let Some(dt) = r.data_txn.filter(|&dt| dt <= pack_time) {
                        extra.push((oid, dt));
                    }
                }
            }
            for (oid, dt) in extra {
                keep.insert((oid, dt));
                let data = st
                    .objects
                    .get(&oid)
                    .and_then(|revs| revs.iter().find(|r| r.tid == dt))
                    .and_then(|r| r.data.clone());
                if let Some(data) = data {
                    let more = refs_of(&mut scanner, &data)?;
                    Self::mark_reachable(
                        st,
                        &current,
                        &mut scanner,
                        more,
                        &mut reached,
                        &mut keep,
                    )?;
                }
            }
        }
        // Rewrite the histories.
        // Surviving revisions up to the pack time hold their data inline
        // afterwards (FileStorage's pack copies it in place of a back
        // pointer), so they no longer report a `data_txn`.
        st.objects.retain(|&oid, revs| {
            revs.retain(|r| r.tid > pack_time || keep.contains(&(oid, r.tid)));
            for r in revs.iter_mut().filter(|r| r.tid <= pack_time) {
                r.data_txn = None;
            }
            !revs.is_empty()
        });
        // Rewrite the transactions.
        let mut txns = Vec::with_capacity(st.txns.len());
        for t in st.txns.drain(..) {
            if t.info.tid > pack_time {
                txns.push(t);
                continue;
            }
            let records: Vec<DataRecord> = t
                .records
                .iter()
                .filter(|r| keep.contains(&(r.oid, r.tid)))
                .map(|r| DataRecord {
                    data_txn: None,
                    ..r.clone()
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            let mut info = t.info.clone();
            info.status = TxnStatus::Packed;
            txns.push(Arc::new(Transaction { info, records }));
        }
        st.txns = txns;
        st.size = st
            .txns
            .iter()
            .map(|t| {
                meta_len(&t.info.meta)
                    + t.records
                        .iter()
                        .map(|r| r.data.as_ref().map_or(0, |d| d.len() as u64))
                        .sum::<u64>()
            })
            .sum();
        Ok(())
    }

    /// ZODB's `findReachableAtPacktime`: a depth-first walk from `todo`
    /// through the revisions current at the pack time.
    fn mark_reachable(
        st: &State,
        current: &HashMap<Oid, usize>,
        scanner: &mut RefScanner,
        mut todo: Vec<Oid>,
        reached: &mut HashSet<Oid>,
        keep: &mut HashSet<(Oid, Tid)>,
    ) -> Result<()> {
        while let Some(oid) = todo.pop() {
            if reached.contains(&oid) {
                continue;
            }
            let Some(&i) = current.get(&oid) else {
                if oid == Oid::ROOT && current.is_empty() {
                    // Packing to before the database was created.
                    continue;
                }
                // FileStorage (and ZODB) fail the same way: a reference
                // to an object that does not exist at the pack time.
                return Err(StorageError::Backend(
                    format!(
                        "pack failed: oid {oid} is referenced but does not exist at the pack time"
                    )
                    .into(),
                ));
            };
            reached.insert(oid);
            let Some(rev) = st.objects.get(&oid).and_then(|r| r.get(i)) else {
                continue;
            };
            keep.insert((oid, rev.tid));
            if let Some(data) = &rev.data {
                for o in refs_of(scanner, data)? {
                    if !reached.contains(&o) {
                        todo.push(o);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The oids a record refers to (ZODB's `referencesf`).
fn refs_of(scanner: &mut RefScanner, data: &Bytes) -> Result<Vec<Oid>> {
    let mut out = Vec::new();
    scanner
        .scan(data, &mut out)
        .map_err(|e| StorageError::Backend(Box::new(e)))?;
    Ok(out)
}

impl ReadStorage for MemoryStorage {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn last_transaction(&self) -> Tid {
        self.read().last_tid
    }

    fn object_count(&self) -> u64 {
        self.read().objects.len() as u64
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<Revision>> {
        let st = self.read();
        let revs = st
            .objects
            .get(&oid)
            .ok_or(StorageError::NoSuchObject { oid })?;
        let n = revs.partition_point(|r| r.tid < before);
        let Some(i) = n.checked_sub(1) else {
            return Ok(None);
        };
        let Some(rev) = revs.get(i) else {
            return Ok(None);
        };
        let data = rev.data.clone().ok_or(StorageError::NoData {
            oid,
            serial: rev.tid,
        })?;
        Ok(Some(Revision {
            data,
            serial: rev.tid,
            next_serial: revs.get(n).map(|r| r.tid),
        }))
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Bytes> {
        let st = self.read();
        let revs = st
            .objects
            .get(&oid)
            .ok_or(StorageError::NoSuchObject { oid })?;
        let i = revs
            .binary_search_by_key(&serial, |r| r.tid)
            .map_err(|_| StorageError::NoSuchRevision { oid, serial })?;
        revs.get(i)
            .and_then(|r| r.data.clone())
            .ok_or(StorageError::NoData { oid, serial })
    }

    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let st = self.read();
        let revs = st
            .objects
            .get(&oid)
            .ok_or(StorageError::NoSuchObject { oid })?;
        let mut out = Vec::new();
        for rev in revs.iter().rev().take(size) {
            let Some(t) = st.txn_index(rev.tid).and_then(|i| st.txns.get(i)) else {
                continue;
            };
            out.push(HistoryEntry {
                txn: t.info.clone(),
                // FileStorage reports 0 for a record that borrows its data.
                size: match (&rev.data, rev.data_txn) {
                    (Some(d), None) => d.len() as u64,
                    _ => 0,
                },
            });
        }
        Ok(out)
    }

    fn iter_transactions(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TxnIter<'_>> {
        let snapshot: Vec<Arc<Transaction>> = self
            .read()
            .txns
            .iter()
            .filter(|t| {
                start.is_none_or(|s| t.info.tid >= s) && stop.is_none_or(|s| t.info.tid <= s)
            })
            .cloned()
            .collect();
        Ok(Box::new(
            snapshot.into_iter().map(|t| Ok(Arc::unwrap_or_clone(t))),
        ))
    }

    fn watch(&self) -> CommitWatch {
        self.hub.subscribe()
    }

    fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        let st = self.read();
        let rev = st.current(oid).ok_or(StorageError::NoSuchObject { oid })?;
        let data = rev.data.clone().ok_or(StorageError::NoData {
            oid,
            serial: rev.tid,
        })?;
        Ok((data, rev.tid))
    }
}

impl crate::WriteStorage for MemoryStorage {
    fn tpc_begin(&self, meta: TxnMeta) -> Result<Box<dyn TpcTxn + '_>> {
        Ok(Box::new(self.begin_with(
            meta,
            None,
            TxnStatus::Committed,
        )?))
    }

    fn tpc_begin_restore(
        &self,
        meta: TxnMeta,
        tid: Tid,
        status: TxnStatus,
    ) -> Result<Box<dyn TpcTxn + '_>> {
        Ok(Box::new(self.begin_with(meta, Some(tid), status)?))
    }

    fn new_oids(&self, n: usize) -> Result<Vec<Oid>> {
        let mut max = self.max_oid.lock().unwrap_or_else(PoisonError::into_inner);
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

    fn undo_log(&self, first: usize, last: usize) -> Result<Vec<UndoEntry>> {
        let st = self.read();
        let mut out = Vec::new();
        let mut i = 0usize;
        for t in st.txns.iter().rev() {
            if i >= last {
                break;
            }
            match t.info.status {
                TxnStatus::Packed => break,
                TxnStatus::Committed => {}
                _ => continue,
            }
            if i >= first {
                out.push(UndoEntry {
                    txn: t.info.clone(),
                    id: undo_id(t.info.tid),
                    size: meta_len(&t.info.meta)
                        + t.records
                            .iter()
                            .map(|r| r.data.as_ref().map_or(0, |d| d.len() as u64))
                            .sum::<u64>(),
                });
            }
            i += 1;
        }
        Ok(out)
    }

    fn pack(&self, pack_time: Tid, gc: bool) -> Result<()> {
        // Pack works on the committed state as a whole: holding the commit
        // lock keeps a transaction from basing conflict checks or undo on
        // history that is being removed.
        self.commit.acquire();
        self.packing.store(true, Ordering::SeqCst);
        let result = {
            let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
            MemoryStorage::pack_state(&mut st, pack_time, gc)
        };
        self.packing.store(false, Ordering::SeqCst);
        self.commit.release();
        result
    }

    fn set_conflict_resolver(&self, resolver: Option<Arc<dyn ConflictResolver>>) {
        *self
            .resolver
            .write()
            .unwrap_or_else(PoisonError::into_inner) = resolver;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Voted,
    Done,
}

/// One buffered write of a transaction.
#[derive(Debug, Clone)]
struct Write {
    oid: Oid,
    data: Option<Bytes>,
    data_txn: Option<Tid>,
}

/// A transaction in progress on a [`MemoryStorage`]; see [`TpcTxn`].
#[derive(Debug)]
struct MemTxn<'s> {
    st: &'s MemoryStorage,
    tid: Tid,
    status: TxnStatus,
    meta: TxnMeta,
    /// Writes in store order; a later write of the same oid replaces the
    /// earlier one in place (an object has one revision per transaction).
    writes: Vec<Write>,
    /// oid → index into `writes`.
    index: HashMap<Oid, usize>,
    resolved: Vec<Oid>,
    phase: Phase,
}

impl MemTxn<'_> {
    fn check_open(&self) -> Result<()> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::Voted => Err(StorageError::TransactionState("already voted".into())),
            Phase::Done => Err(StorageError::TransactionState(
                "transaction is finished".into(),
            )),
        }
    }

    fn push(&mut self, w: Write) {
        match self.index.get(&w.oid).and_then(|&i| self.writes.get_mut(i)) {
            Some(slot) => *slot = w,
            None => {
                self.index.insert(w.oid, self.writes.len());
                self.writes.push(w);
            }
        }
    }

    /// The committed current revision of `oid`: (tid, data).
    fn committed(&self, oid: Oid) -> Option<(Tid, Option<Bytes>)> {
        self.st.read().current(oid).map(|r| (r.tid, r.data.clone()))
    }

    fn release(&mut self) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.st.commit.release();
        }
    }

    /// What undoing `oid`'s record of transaction `tid` writes, FileStorage's
    /// `_transactionalUndoRecord`: the data before it (or "does not exist"
    /// for a creation), provided the object was not changed since — or was
    /// changed back to the same data, or the resolver merges the change.
    fn undo_record(&self, st: &State, oid: Oid, tid: Tid) -> Result<Write> {
        let undo_err = |reason: &str| StorageError::Undo {
            oid: Some(oid),
            reason: reason.to_owned(),
        };
        let revs = st
            .objects
            .get(&oid)
            .ok_or_else(|| undo_err("Invalid undo transaction id"))?;
        let i = revs
            .binary_search_by_key(&tid, |r| r.tid)
            .map_err(|_| undo_err("Invalid undo transaction id"))?;
        let undone = revs
            .get(i)
            .ok_or_else(|| undo_err("Invalid undo transaction id"))?;
        let pre = i.checked_sub(1).and_then(|p| revs.get(p));
        // Current: this transaction's own write if any, else committed.
        let (cur_tid, cur_data) = match self.index.get(&oid).and_then(|&w| self.writes.get(w)) {
            Some(w) => (self.tid, w.data.clone()),
            None => revs
                .last()
                .map(|r| (r.tid, r.data.clone()))
                .ok_or_else(|| undo_err("Invalid undo transaction id"))?,
        };
        let mut copy = true;
        if cur_tid != tid && cur_data != undone.data {
            copy = false;
            if pre.is_none() {
                return Err(undo_err(
                    "Can't undo an add transaction followed by conflicting transactions.",
                ));
            }
        }
        let Some(pre) = pre else {
            return Ok(Write {
                oid,
                data: None,
                data_txn: None,
            });
        };
        if copy {
            return Ok(Write {
                oid,
                data: pre.data.clone(),
                data_txn: pre.data.as_ref().map(|_| pre.tid),
            });
        }
        let pre_data = pre
            .data
            .clone()
            .ok_or_else(|| undo_err("Some data were modified by a later transaction"))?;
        if let Some(d) = self
            .st
            .try_resolve(oid, cur_tid, tid, &pre_data, cur_data.as_ref())
        {
            return Ok(Write {
                oid,
                data: Some(d),
                data_txn: None,
            });
        }
        Err(undo_err("Some data were modified by a later transaction"))
    }
}

impl TpcTxn for MemTxn<'_> {
    fn tid(&self) -> Tid {
        self.tid
    }

    fn store(&mut self, oid: Oid, old_serial: Tid, data: Bytes) -> Result<()> {
        self.check_open()?;
        self.st.raise_max_oid(oid);
        let mut data = data;
        if let Some((committed, committed_data)) = self.committed(oid)
            && old_serial != committed
        {
            data = self
                .st
                .try_resolve(oid, committed, old_serial, &data, committed_data.as_ref())
                .ok_or(StorageError::Conflict {
                    oid,
                    committed,
                    old: old_serial,
                })?;
            self.resolved.push(oid);
        }
        self.push(Write {
            oid,
            data: Some(data),
            data_txn: None,
        });
        Ok(())
    }

    fn delete_object(&mut self, oid: Oid, old_serial: Tid) -> Result<()> {
        self.check_open()?;
        let Some((committed, _)) = self.committed(oid) else {
            return Err(StorageError::NoSuchObject { oid });
        };
        if committed != old_serial {
            return Err(StorageError::Conflict {
                oid,
                committed,
                old: old_serial,
            });
        }
        self.push(Write {
            oid,
            data: None,
            data_txn: None,
        });
        Ok(())
    }

    fn check_current_serial(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        self.check_open()?;
        match self.committed(oid) {
            Some((committed, Some(_))) => {
                if committed != serial {
                    return Err(StorageError::ReadConflict {
                        oid,
                        committed,
                        read: serial,
                    });
                }
                Ok(())
            }
            _ => Err(StorageError::NoSuchObject { oid }),
        }
    }

    fn restore(&mut self, oid: Oid, data: Option<Bytes>, prev_txn: Option<Tid>) -> Result<()> {
        self.check_open()?;
        self.st.raise_max_oid(oid);
        // As FileStorage: a back pointer to `prev_txn`'s record of the oid
        // when that record exists and holds the same data (or when no data
        // is given); otherwise the data as given.
        let prev = prev_txn.and_then(|pt| {
            let st = self.st.read();
            let revs = st.objects.get(&oid)?;
            let i = revs.binary_search_by_key(&pt, |r| r.tid).ok()?;
            revs.get(i).map(|r| (pt, r.data.clone()))
        });
        let write = match (data, prev) {
            (Some(d), Some((pt, Some(pd)))) if d == pd => Write {
                oid,
                data: Some(pd),
                data_txn: Some(pt),
            },
            (Some(d), _) => Write {
                oid,
                data: Some(d),
                data_txn: None,
            },
            (None, Some((pt, Some(pd)))) => Write {
                oid,
                data: Some(pd),
                data_txn: Some(pt),
            },
            (None, _) => Write {
                oid,
                data: None,
                data_txn: None,
            },
        };
        self.push(write);
        Ok(())
    }

    fn undo(&mut self, tid: Tid) -> Result<Vec<Oid>> {
        self.check_open()?;
        if self.st.packing.load(Ordering::SeqCst) {
            return Err(StorageError::Undo {
                oid: None,
                reason: "Undo is currently disabled for database maintenance".into(),
            });
        }
        let writes = {
            let st = self.st.read();
            let t = st
                .txn_index(tid)
                .and_then(|i| st.txns.get(i))
                .cloned()
                .ok_or_else(|| StorageError::Undo {
                    oid: None,
                    reason: "Invalid transaction id".into(),
                })?;
            if t.info.status != TxnStatus::Committed {
                return Err(StorageError::Undo {
                    oid: None,
                    reason: "non-undoable transaction".into(),
                });
            }
            // Every record is computed against the state before this undo,
            // then all are written (FileStorage merges the undo's index at
            // the end the same way).
            let mut writes = Vec::with_capacity(t.records.len());
            for r in &t.records {
                writes.push(self.undo_record(&st, r.oid, tid)?);
            }
            writes
        };
        let mut oids = Vec::with_capacity(writes.len());
        for w in writes {
            if !oids.contains(&w.oid) {
                oids.push(w.oid);
            }
            self.push(w);
        }
        Ok(oids)
    }

    fn vote(&mut self) -> Result<Vec<Oid>> {
        self.check_open()?;
        self.phase = Phase::Voted;
        Ok(self.resolved.clone())
    }

    fn finish(mut self: Box<Self>) -> Result<Tid> {
        if self.phase != Phase::Voted {
            return Err(StorageError::TransactionState("finish before vote".into()));
        }
        let tid = self.tid;
        let writes = std::mem::take(&mut self.writes);
        let oids: Vec<Oid> = writes.iter().map(|w| w.oid).collect();
        {
            let mut st = self
                .st
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let mut records = Vec::with_capacity(writes.len());
            let mut size = meta_len(&self.meta);
            for w in writes {
                size += w.data.as_ref().map_or(0, |d| d.len() as u64);
                records.push(DataRecord {
                    oid: w.oid,
                    tid,
                    data: w.data.clone(),
                    data_txn: w.data_txn,
                });
                st.objects.entry(w.oid).or_default().push(Rev {
                    tid,
                    data: w.data,
                    data_txn: w.data_txn,
                });
            }
            st.txns.push(Arc::new(Transaction {
                info: TxnInfo {
                    tid,
                    status: self.status,
                    meta: std::mem::take(&mut self.meta),
                },
                records,
            }));
            st.last_tid = tid;
            st.size += size;
        }
        self.release();
        self.st.hub.publish(&Committed {
            tid,
            oids: Arc::from(oids),
        });
        Ok(tid)
    }

    fn abort(mut self: Box<Self>) {
        self.release();
    }
}

impl Drop for MemTxn<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;
    use crate::WriteStorage;

    fn meta(desc: &str) -> TxnMeta {
        TxnMeta {
            user: Bytes::from_static(b"tester"),
            description: Bytes::copy_from_slice(desc.as_bytes()),
            extension: Bytes::new(),
        }
    }

    fn commit(st: &MemoryStorage, stores: &[(Oid, Tid, &[u8])]) -> Result<Tid> {
        let mut t = st.tpc_begin(meta("commit"))?;
        for &(oid, serial, data) in stores {
            t.store(oid, serial, Bytes::copy_from_slice(data))?;
        }
        t.vote()?;
        t.finish()
    }

    #[test]
    fn undo_ids_are_zodbs_base64() {
        // base64.encodebytes(b'\x02\x85\xcb\xac\x25\x8b\xf2\x66').rstrip()
        let t = Tid(0x0285_cbac_258b_f266);
        assert_eq!(undo_id(t), b"AoXLrCWL8mY=");
        assert_eq!(tid_from_undo_id(b"AoXLrCWL8mY=\n"), Some(t));
        assert_eq!(tid_from_undo_id(b"AoXLrCWL8mY"), None);
        assert_eq!(tid_from_undo_id(b"AoXLrCWL8mZ="), None);
        for v in [0u64, 1, u64::MAX >> 1, u64::MAX, 0x0102_0304_0506_0708] {
            assert_eq!(tid_from_undo_id(&undo_id(Tid(v))), Some(Tid(v)));
        }
    }

    #[test]
    fn commit_load_history_and_tids() {
        let st = MemoryStorage::new("m");
        assert_eq!(st.last_transaction(), Tid::ZERO);
        let oids = st.new_oids(2).unwrap();
        assert_eq!(oids, vec![Oid(1), Oid(2)]);
        let t1 = commit(
            &st,
            &[(Oid(0), Tid::ZERO, b"r1"), (Oid(1), Tid::ZERO, b"one")],
        )
        .unwrap();
        let t2 = commit(&st, &[(Oid(0), t1, b"r2")]).unwrap();
        assert!(t2 > t1);
        assert_eq!(st.last_transaction(), t2);
        assert_eq!(st.load(Oid(0)).unwrap(), (Bytes::from_static(b"r2"), t2));
        assert_eq!(
            st.load_serial(Oid(0), t1).unwrap(),
            Bytes::from_static(b"r1")
        );
        let rev = st.load_before(Oid(0), t2).unwrap().unwrap();
        assert_eq!((rev.serial, rev.next_serial), (t1, Some(t2)));
        assert_eq!(st.load_before(Oid(0), t1).unwrap(), None);
        let cur = st.load_before(Oid(0), t2.next()).unwrap().unwrap();
        assert_eq!((cur.serial, cur.next_serial), (t2, None));
        assert!(st.load(Oid(7)).unwrap_err().is_pos_key_error());
        assert!(matches!(
            st.load_serial(Oid(0), Tid(3)),
            Err(StorageError::NoSuchRevision { .. })
        ));
        let h = st.history(Oid(0), 10).unwrap();
        assert_eq!(
            h.iter().map(|e| (e.txn.tid, e.size)).collect::<Vec<_>>(),
            vec![(t2, 2), (t1, 2)]
        );
        assert_eq!(st.history(Oid(0), 1).unwrap().len(), 1);
        assert_eq!(st.object_count(), 2);
        // Stored oids raise the oid counter.
        let mut t = st.tpc_begin(meta("high")).unwrap();
        t.store(Oid(50), Tid::ZERO, Bytes::from_static(b"x"))
            .unwrap();
        t.vote().unwrap();
        t.finish().unwrap();
        assert_eq!(st.new_oids(1).unwrap(), vec![Oid(51)]);
    }

    #[test]
    fn tids_follow_laterthan_even_if_the_clock_is_behind() {
        let st = MemoryStorage::new("m");
        // Restore a transaction far in the future: the next tid must
        // still be later.
        let future = TimeStamp::from_date(2200, 1, 1, 0, 0, 0.0).unwrap().tid();
        let mut t = st
            .tpc_begin_restore(meta("future"), future, TxnStatus::Committed)
            .unwrap();
        t.restore(Oid(0), Some(Bytes::from_static(b"f")), None)
            .unwrap();
        t.vote().unwrap();
        assert_eq!(t.finish().unwrap(), future);
        let next = commit(&st, &[(Oid(0), future, b"g")]).unwrap();
        assert_eq!(
            next,
            future.timestamp().later_than(future.timestamp()).tid()
        );
        // A restore must be later than the last transaction.
        assert!(
            st.tpc_begin_restore(meta("past"), Tid(5), TxnStatus::Committed)
                .is_err()
        );
    }

    #[test]
    fn conflicts_read_conflicts_and_deletes() {
        let st = MemoryStorage::new("m");
        let t1 = commit(&st, &[(Oid(0), Tid::ZERO, b"a")]).unwrap();
        let t2 = commit(&st, &[(Oid(0), t1, b"b")]).unwrap();
        match commit(&st, &[(Oid(0), t1, b"c")]) {
            Err(StorageError::Conflict {
                oid,
                committed,
                old,
            }) => {
                assert_eq!((oid, committed, old), (Oid(0), t2, t1))
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let mut t = st.tpc_begin(meta("check")).unwrap();
        assert!(matches!(
            t.check_current_serial(Oid(0), t1),
            Err(StorageError::ReadConflict { .. })
        ));
        t.check_current_serial(Oid(0), t2).unwrap();
        assert!(matches!(
            t.delete_object(Oid(9), t1),
            Err(StorageError::NoSuchObject { .. })
        ));
        assert!(matches!(
            t.delete_object(Oid(0), t1),
            Err(StorageError::Conflict { .. })
        ));
        t.delete_object(Oid(0), t2).unwrap();
        t.vote().unwrap();
        let t3 = t.finish().unwrap();
        assert!(matches!(
            st.load(Oid(0)),
            Err(StorageError::NoData { serial, .. }) if serial == t3
        ));
        assert!(matches!(
            st.load_before(Oid(0), t3.next()),
            Err(StorageError::NoData { .. })
        ));
        assert_eq!(st.load_before(Oid(0), t3).unwrap().unwrap().serial, t2);
    }

    #[test]
    fn abort_and_drop_leave_nothing_and_free_the_lock() {
        let st = MemoryStorage::new("m");
        let mut t = st.tpc_begin(meta("aborted")).unwrap();
        t.store(Oid(1), Tid::ZERO, Bytes::from_static(b"x"))
            .unwrap();
        t.vote().unwrap();
        // Voted data is not visible.
        assert!(st.load(Oid(1)).is_err());
        t.abort();
        let mut t = st.tpc_begin(meta("dropped")).unwrap();
        t.store(Oid(1), Tid::ZERO, Bytes::from_static(b"y"))
            .unwrap();
        drop(t);
        assert_eq!(st.last_transaction(), Tid::ZERO);
        commit(&st, &[(Oid(1), Tid::ZERO, b"z")]).unwrap();
        assert_eq!(st.load(Oid(1)).unwrap().0, Bytes::from_static(b"z"));
    }

    #[test]
    fn the_commit_lock_serialises_transactions_across_threads() {
        let st = Arc::new(MemoryStorage::new("m"));
        let t = st.tpc_begin(meta("first")).unwrap();
        let st2 = st.clone();
        let waiter = std::thread::spawn(move || commit(&st2, &[(Oid(0), Tid::ZERO, b"b")]));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a second tpc_begin must wait");
        drop(t);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn undo_of_a_change_and_of_a_creation() {
        let st = MemoryStorage::new("m");
        let t1 = commit(
            &st,
            &[(Oid(0), Tid::ZERO, b"v1"), (Oid(1), Tid::ZERO, b"new")],
        )
        .unwrap();
        let t2 = commit(&st, &[(Oid(0), t1, b"v2")]).unwrap();
        let log = st.undo_log(0, 20).unwrap();
        assert_eq!(
            log.iter().map(|e| e.txn.tid).collect::<Vec<_>>(),
            vec![t2, t1]
        );
        assert_eq!(tid_from_undo_id(&log[0].id), Some(t2));
        assert_eq!(st.undo_log(1, 20).unwrap().len(), 1);
        let mut t = st.tpc_begin(meta("undo t2")).unwrap();
        assert_eq!(t.undo(t2).unwrap(), vec![Oid(0)]);
        t.vote().unwrap();
        let t3 = t.finish().unwrap();
        assert_eq!(st.load(Oid(0)).unwrap(), (Bytes::from_static(b"v1"), t3));
        // The undo record borrows t1's data, as a back pointer would.
        let undo_txn = st
            .iter_transactions(Some(t3), None)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(undo_txn.records[0].data_txn, Some(t1));
        // The root's data is t1's again, so t1 can be undone: both objects
        // vanish.
        let mut t = st.tpc_begin(meta("undo t1")).unwrap();
        let mut undone = t.undo(t1).unwrap();
        undone.sort();
        assert_eq!(undone, vec![Oid(0), Oid(1)]);
        t.vote().unwrap();
        t.finish().unwrap();
        assert!(st.load(Oid(0)).unwrap_err().is_pos_key_error());
        assert!(st.load(Oid(1)).unwrap_err().is_pos_key_error());
        let mut t = st.tpc_begin(meta("undo unknown")).unwrap();
        assert!(matches!(t.undo(Tid(12345)), Err(StorageError::Undo { .. })));
    }

    #[test]
    fn undo_refused_after_a_later_change() {
        let st = MemoryStorage::new("m");
        let t1 = commit(&st, &[(Oid(0), Tid::ZERO, b"v1")]).unwrap();
        let t2 = commit(&st, &[(Oid(0), t1, b"v2")]).unwrap();
        let _t3 = commit(&st, &[(Oid(0), t2, b"v3")]).unwrap();
        let mut t = st.tpc_begin(meta("undo")).unwrap();
        match t.undo(t2) {
            Err(StorageError::Undo { oid, reason }) => {
                assert_eq!(oid, Some(Oid(0)));
                assert_eq!(reason, "Some data were modified by a later transaction");
            }
            other => panic!("{other:?}"),
        }
        match t.undo(t1) {
            Err(StorageError::Undo { reason, .. }) => assert_eq!(
                reason,
                "Can't undo an add transaction followed by conflicting transactions."
            ),
            other => panic!("{other:?}"),
        }
    }

    struct TakeNew;
    impl ConflictResolver for TakeNew {
        fn resolve(&self, _oid: Oid, old: &[u8], committed: &[u8], new: &[u8]) -> Option<Bytes> {
            let mut v = old.to_vec();
            v.extend_from_slice(b"+");
            v.extend_from_slice(committed);
            v.extend_from_slice(b"+");
            v.extend_from_slice(new);
            Some(Bytes::from(v))
        }
    }

    #[test]
    fn a_resolver_merges_conflicts_and_vote_reports_them() {
        let st = MemoryStorage::new("m");
        st.set_conflict_resolver(Some(Arc::new(TakeNew)));
        let t1 = commit(&st, &[(Oid(0), Tid::ZERO, b"a")]).unwrap();
        let _t2 = commit(&st, &[(Oid(0), t1, b"b")]).unwrap();
        let mut t = st.tpc_begin(meta("late")).unwrap();
        t.store(Oid(0), t1, Bytes::from_static(b"c")).unwrap();
        assert_eq!(t.vote().unwrap(), vec![Oid(0)]);
        t.finish().unwrap();
        assert_eq!(st.load(Oid(0)).unwrap().0, Bytes::from_static(b"a+b+c"));
    }

    #[test]
    fn iteration_and_restore_with_back_pointers() {
        let st = MemoryStorage::new("m");
        let t1 = commit(&st, &[(Oid(0), Tid::ZERO, b"a")]).unwrap();
        let t2 = commit(&st, &[(Oid(0), t1, b"b")]).unwrap();
        let all: Vec<Transaction> = st
            .iter_transactions(None, None)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].info.meta.description, Bytes::from_static(b"commit"));
        assert_eq!(st.iter_transactions(Some(t2), None).unwrap().count(), 1);
        assert_eq!(st.iter_transactions(None, Some(t1)).unwrap().count(), 1);
        assert_eq!(
            st.iter_transactions(Some(t2.next()), None).unwrap().count(),
            0
        );
        // Copy into another storage with restore, keeping tids.
        let copy = MemoryStorage::new("copy");
        for t in all {
            let mut w = copy
                .tpc_begin_restore(t.info.meta.clone(), t.info.tid, t.info.status)
                .unwrap();
            for r in t.records {
                w.restore(r.oid, r.data, r.data_txn).unwrap();
            }
            w.vote().unwrap();
            w.finish().unwrap();
        }
        assert_eq!(copy.last_transaction(), t2);
        assert_eq!(copy.load(Oid(0)).unwrap(), (Bytes::from_static(b"b"), t2));
        // A restore that names an earlier record with the same data borrows it.
        let mut w = copy.tpc_begin(meta("back")).unwrap();
        w.restore(Oid(0), None, Some(t1)).unwrap();
        w.vote().unwrap();
        let t3 = w.finish().unwrap();
        let last = copy
            .iter_transactions(Some(t3), None)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(last.records[0].data, Some(Bytes::from_static(b"a")));
        assert_eq!(last.records[0].data_txn, Some(t1));
    }

    #[test]
    fn commits_are_published_in_order() {
        let st = MemoryStorage::new("m");
        let w = st.watch();
        let t1 = commit(&st, &[(Oid(0), Tid::ZERO, b"a"), (Oid(1), Tid::ZERO, b"b")]).unwrap();
        let mut t = st.tpc_begin(meta("empty")).unwrap();
        t.vote().unwrap();
        let t2 = t.finish().unwrap();
        let got = w.drain();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].tid, &got[0].oids[..]), (t1, &[Oid(0), Oid(1)][..]));
        assert_eq!((got[1].tid, got[1].oids.len()), (t2, 0));
    }

    /// A persistent reference to `oid` in a record, as ZODB pickles one:
    /// class pickle, then a state holding `(oid, None)` persistent ids.
    fn record_with_refs(refs: &[Oid]) -> Bytes {
        let mut v =
            b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03]q\x01(".to_vec();
        for r in refs {
            v.push(b'C');
            v.push(8);
            v.extend_from_slice(&r.to_bytes());
            v.extend_from_slice(b"N\x86Q");
        }
        v.extend_from_slice(b"e.");
        Bytes::from(v)
    }

    #[test]
    fn pack_keeps_what_is_current_and_reachable() {
        let st = MemoryStorage::new("m");
        let r = |refs: &[Oid]| record_with_refs(refs);
        let mut t = st.tpc_begin(meta("t1")).unwrap();
        t.store(Oid(0), Tid::ZERO, r(&[Oid(1), Oid(2)])).unwrap();
        t.store(Oid(1), Tid::ZERO, r(&[])).unwrap();
        t.store(Oid(2), Tid::ZERO, r(&[])).unwrap();
        t.vote().unwrap();
        let t1 = t.finish().unwrap();
        // Detach 2, change 1.
        let mut t = st.tpc_begin(meta("t2")).unwrap();
        t.store(Oid(0), t1, r(&[Oid(1)])).unwrap();
        t.store(Oid(1), t1, r(&[Oid(0)])).unwrap();
        t.vote().unwrap();
        let t2 = t.finish().unwrap();
        let t3 = commit(&st, &[(Oid(1), t2, &r(&[]))]).unwrap();
        // Without gc: history before t2 goes, everything current stays.
        let nogc = MemoryStorage::new("nogc");
        for t in st.iter_transactions(None, None).unwrap() {
            let t = t.unwrap();
            let mut w = nogc
                .tpc_begin_restore(t.info.meta.clone(), t.info.tid, t.info.status)
                .unwrap();
            for rec in t.records {
                w.restore(rec.oid, rec.data, rec.data_txn).unwrap();
            }
            w.vote().unwrap();
            w.finish().unwrap();
        }
        nogc.pack(t2, false).unwrap();
        assert!(nogc.load_serial(Oid(0), t1).is_err());
        assert_eq!(nogc.load(Oid(2)).unwrap().1, t1);
        assert_eq!(nogc.load_before(Oid(1), t3).unwrap().unwrap().serial, t2);
        // With gc: 2 is unreachable at t2 and vanishes.
        st.pack(t2, true).unwrap();
        assert!(st.load(Oid(2)).unwrap_err().is_pos_key_error());
        assert_eq!(st.load(Oid(1)).unwrap().1, t3);
        assert_eq!(st.load_before(Oid(1), t3).unwrap().unwrap().serial, t2);
        assert!(matches!(
            st.load_serial(Oid(1), t1),
            Err(StorageError::NoSuchRevision { .. })
        ));
        let txns: Vec<_> = st
            .iter_transactions(None, None)
            .unwrap()
            .map(|t| t.unwrap().info)
            .collect();
        assert_eq!(
            txns.iter().map(|i| (i.tid, i.status)).collect::<Vec<_>>(),
            vec![(t2, TxnStatus::Packed), (t3, TxnStatus::Committed)]
        );
        // Undo stops at the packed transaction.
        assert_eq!(st.undo_log(0, 10).unwrap().len(), 1);
        let mut t = st.tpc_begin(meta("undo packed")).unwrap();
        assert!(matches!(t.undo(t2), Err(StorageError::Undo { .. })));
    }
}
