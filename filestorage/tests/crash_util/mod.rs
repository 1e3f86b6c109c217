//! Crash images of a FileStorage, built from a recorded write stream
//! (redb's crash-testing approach).
//!
//! A workload runs on a read-write storage whose write observer records
//! every change to Data.fs, in order ([`Event`]). Replaying part of that
//! record onto the file as it was before the workload gives a file that a
//! crash at that moment could have left on disk: a *crash image*. Each image
//! comes with what recovery must make of it, derived from the workload's
//! model ([`Recording`]) and never from the engine under test.
//!
//! What a kernel persists between two fsyncs is unknown, so two models of
//! the disk are used:
//!
//! * **prefix** ([`prefix_images`]): any prefix of the write stream, torn
//!   inside any write. Every such image must recover to exactly the
//!   transactions whose status flip it contains; and, because `finish` syncs
//!   before it returns, every transaction whose `Committed` event came
//!   before the cut. The image as of the last sync (the unsynced
//!   transaction entirely absent) is one of these, flagged
//!   [`Image::sync_event`], and [`assert_durable`] checks from the engine's
//!   answers on those images that every finished transaction was in the
//!   file as of the sync before its `finish` returned.
//! * **lost data, kept length** ([`zero_tail_images`]): the file's new size
//!   reached the disk but the data written since the last sync did not, so
//!   it reads as zeros (ext4 `data=writeback`, XFS after a power cut).
//!
//! The workloads take their tids from the clock (except restores), so the
//! bytes differ from run to run but nothing that matters does: the cuts
//! are chosen from the structure of the writes and a fixed seed, and every
//! expectation comes from the model.
//!
//! Shared by `filestorage/tests/crash.rs` (our engine against the model) and
//! `tests/tests/fs_crash.rs` (our engine against Python ZODB), which
//! includes this file with `#[path]`.
#![allow(dead_code)] // each test crate that includes it uses a part of this module

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use filestorage::format::{DATA_HEADER_LEN, DataHeader, TXN_HEADER_LEN, TxnHeader};
use filestorage::observe::{Observer, WriteEvent, WriteObserver};
use filestorage::{Durability, FileStorage, OpenOptions};
use zodb_core::storage::TpcTxn;
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TxnMeta, TxnStatus};

/// One recorded change to Data.fs: an owned [`WriteEvent`].
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// `data` written at `pos`.
    Write {
        /// Offset.
        pos: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Truncated (or extended) to this length.
    SetLen(u64),
    /// Everything before is durable.
    Sync,
    /// `finish` of this transaction returned.
    Committed(Tid),
}

/// Writes show their position, length and first bytes only: a failure
/// message must stay readable when a write is megabytes long.
impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Write { pos, data } => {
                write!(f, "Write {{ pos: {pos}, len: {}, data: ", data.len())?;
                for b in data.iter().take(24) {
                    write!(f, "{b:02x}")?;
                }
                f.write_str(if data.len() > 24 { "... }" } else { " }" })
            }
            Event::SetLen(len) => write!(f, "SetLen({len})"),
            Event::Sync => f.write_str("Sync"),
            Event::Committed(tid) => write!(f, "Committed({tid})"),
        }
    }
}

/// A [`WriteObserver`] that keeps every event.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of events so far: the index the next event will get.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The events from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Event> {
        self.lock()[from..].to_vec()
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }
}

impl WriteObserver for Recorder {
    fn event(&self, event: WriteEvent<'_>) {
        let e = match event {
            WriteEvent::Write { pos, data } => Event::Write {
                pos,
                data: data.to_vec(),
            },
            WriteEvent::SetLen(len) => Event::SetLen(len),
            WriteEvent::Sync => Event::Sync,
            WriteEvent::Committed(tid) => Event::Committed(tid),
        };
        self.lock().push(e);
    }
}

/// Read-write options that report every change to `rec`.
pub fn observed(rec: &Arc<Recorder>) -> OpenOptions {
    OpenOptions {
        observer: Observer(Some(rec.clone() as Arc<dyn WriteObserver>)),
        ..OpenOptions::read_write()
    }
}

/// A transaction of the workload whose `finish` returned.
#[derive(Clone, Debug)]
pub struct ModelTxn {
    /// Its tid.
    pub tid: Tid,
    /// Its final status byte (`' '` or `'p'`).
    pub status: u8,
    /// User, description, extension.
    pub meta: TxnMeta,
    /// Each written oid and its data after this transaction (`None`: the
    /// object does not exist), in record order.
    pub writes: Vec<(Oid, Option<Bytes>)>,
    /// Where it ends (the next transaction's position).
    pub end: u64,
    /// Index of the event that flips its status byte: an image holds this
    /// transaction exactly when it holds that byte.
    pub flip_event: usize,
    /// Index of its `Committed` event: from then on it must survive.
    pub committed_event: usize,
}

/// One vote: the writes that append a transaction with status `c`.
#[derive(Clone, Debug)]
pub struct Vote {
    /// Where the transaction starts.
    pub pos: u64,
    /// Its tid.
    pub tid: Tid,
    /// The events of the vote (all writes).
    pub events: Range<usize>,
    /// Whether it was finished (else aborted after the vote).
    pub finished: bool,
}

/// A workload's write stream and what it committed.
#[derive(Clone, Debug)]
pub struct Recording {
    /// Data.fs right after the read-write open, before the first event.
    pub initial: Vec<u8>,
    /// Every change the workload made, in order.
    pub events: Vec<Event>,
    /// The finished transactions, in order.
    pub txns: Vec<ModelTxn>,
    /// Every vote, finished or not, in order.
    pub votes: Vec<Vote>,
}

/// Each oid's revisions, oldest first: (tid, data or `None` if the object
/// does not exist in that revision).
pub type History = BTreeMap<Oid, Vec<(Tid, Option<Bytes>)>>;

impl Recording {
    /// Number of transactions whose status flip is before event `event`.
    pub fn visible_before(&self, event: usize) -> usize {
        self.txns.iter().filter(|t| t.flip_event < event).count()
    }

    /// Number of transactions whose `finish` returned before event `event`.
    pub fn committed_before(&self, event: usize) -> usize {
        self.txns
            .iter()
            .filter(|t| t.committed_event < event)
            .count()
    }

    /// End of the data of the first `n` transactions.
    pub fn end_after(&self, n: usize) -> u64 {
        match n {
            0 => self.initial.len() as u64,
            n => self.txns[n - 1].end,
        }
    }

    /// The last tid of the first `n` transactions ([`Tid::ZERO`] for none).
    pub fn last_tid(&self, n: usize) -> Tid {
        match n {
            0 => Tid::ZERO,
            n => self.txns[n - 1].tid,
        }
    }

    /// Every oid's revisions after the first `n` transactions.
    pub fn history_after(&self, n: usize) -> History {
        let mut h = History::new();
        for t in &self.txns[..n] {
            for (oid, data) in &t.writes {
                h.entry(*oid).or_default().push((t.tid, data.clone()));
            }
        }
        h
    }

    /// Every oid the workload ever wrote.
    pub fn all_oids(&self) -> BTreeSet<Oid> {
        self.txns
            .iter()
            .flat_map(|t| t.writes.iter().map(|(o, _)| *o))
            .collect()
    }

    /// The vote that event `event` belongs to.
    pub fn vote_of(&self, event: usize) -> Option<&Vote> {
        self.votes.iter().find(|v| v.events.contains(&event))
    }

    /// The file after every event.
    pub fn final_image(&self) -> Vec<u8> {
        let mut state = self.initial.clone();
        for e in &self.events {
            apply(&mut state, e);
        }
        state
    }

    /// What recovery must make of `image`.
    pub fn expected(&self, image: &Image) -> Expected {
        let end = self.end_after(image.visible);
        let tail = image
            .bytes
            .get(end as usize..)
            .unwrap_or_else(|| panic!("{}: shorter than its committed data", image.label))
            .to_vec();
        Expected {
            visible: image.visible,
            end,
            last_tid: self.last_tid(image.visible),
            saved: tail.len() as u64 >= TXN_HEADER_LEN,
            tail,
        }
    }
}

/// What recovery must produce from one image.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Number of transactions left.
    pub visible: usize,
    /// The recovered file's length: everything before is kept unchanged.
    pub end: u64,
    /// The last committed tid.
    pub last_tid: Tid,
    /// The bytes recovery removes.
    pub tail: Vec<u8>,
    /// Whether they are saved to `.tr0`: ZODB drops a tail shorter than a
    /// transaction header without a copy.
    pub saved: bool,
}

impl Expected {
    /// The tid in the removed tail's header, when it has a whole header:
    /// what ZODB's `lastTransaction()` reports after removing it, and the
    /// floor both engines keep for new tids.
    pub fn tail_tid(&self) -> Option<Tid> {
        self.saved
            .then(|| Tid::from_slice(&self.tail[..8]).expect("8 bytes"))
    }

    /// ZODB's `lastTransaction()` right after its read-write open: the tid
    /// of the last transaction header its scan read, including a removed
    /// tail's.
    pub fn zodb_last_transaction(&self) -> Tid {
        self.tail_tid().unwrap_or(self.last_tid)
    }
}

/// Applies one event to a file's bytes.
pub fn apply(state: &mut Vec<u8>, e: &Event) {
    match e {
        Event::Write { pos, data } => write_at(state, *pos, data),
        Event::SetLen(len) => state.resize(*len as usize, 0),
        Event::Sync | Event::Committed(_) => {}
    }
}

/// Writes `data` at `pos`, growing `state` as a file grows. The grown
/// part is appended with `extend_from_slice` (a memcpy) rather than
/// `resize` then copy: unoptimised test builds fill a `resize` byte by
/// byte, which dominated the time of 33 MiB images.
fn write_at(state: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let pos = pos as usize;
    if state.len() < pos {
        state.resize(pos, 0);
    }
    let overlap = (state.len() - pos).min(data.len());
    state[pos..pos + overlap].copy_from_slice(&data[..overlap]);
    state.extend_from_slice(&data[overlap..]);
}

// ---------------------------------------------------------------------------
// Workloads.

/// One operation of a workload transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// `store(oid, current serial, data)`.
    Store(Oid, Bytes),
    /// `delete_object(oid, current serial)`.
    Delete(Oid),
    /// `undo(tid)`: every object the transaction wrote goes back to its
    /// revision before it.
    Undo(Tid),
    /// `restore(oid, data, prev_txn)`.
    Restore(Oid, Option<Bytes>, Option<Tid>),
}

/// Runs transactions on an observed storage and keeps the model.
#[derive(Debug)]
pub struct Driver<'s> {
    fs: &'s FileStorage,
    rec: Arc<Recorder>,
    txns: Vec<ModelTxn>,
    votes: Vec<Vote>,
}

impl<'s> Driver<'s> {
    /// A driver for `fs`, opened with [`observed`]`(rec)`.
    pub fn new(fs: &'s FileStorage, rec: Arc<Recorder>) -> Driver<'s> {
        Driver {
            fs,
            rec,
            txns: Vec::new(),
            votes: Vec::new(),
        }
    }

    fn history(&self) -> History {
        let mut h = History::new();
        for t in &self.txns {
            for (oid, data) in &t.writes {
                h.entry(*oid).or_default().push((t.tid, data.clone()));
            }
        }
        h
    }

    fn serial(&self, oid: Oid) -> Tid {
        self.history()
            .get(&oid)
            .and_then(|revs| revs.last())
            .map_or(Tid::ZERO, |r| r.0)
    }

    /// Commits `ops` with a new tid; returns it.
    pub fn commit(&mut self, meta: TxnMeta, ops: &[Op]) -> Tid {
        let t = self.fs.begin(meta.clone()).expect("begin");
        self.run(Box::new(t), meta, b' ', ops, true)
            .expect("finished")
    }

    /// Commits `ops` keeping `tid` and `status` (copying).
    pub fn commit_restore(&mut self, meta: TxnMeta, tid: Tid, status: TxnStatus, ops: &[Op]) {
        let t = self
            .fs
            .begin_restore(meta.clone(), tid, status)
            .expect("begin_restore");
        self.run(Box::new(t), meta, status.as_byte(), ops, true);
    }

    /// `FileStorage::sync`: with deferred durability, the commits so far
    /// become durable.
    pub fn sync(&mut self) {
        self.fs.sync().expect("sync");
    }

    /// Votes `ops`, then aborts: the transaction must vanish.
    pub fn vote_then_abort(&mut self, meta: TxnMeta, ops: &[Op]) {
        let t = self.fs.begin(meta.clone()).expect("begin");
        self.run(Box::new(t), meta, b' ', ops, false);
    }

    fn run(
        &mut self,
        mut t: Box<dyn TpcTxn + 's>,
        meta: TxnMeta,
        status: u8,
        ops: &[Op],
        finish: bool,
    ) -> Option<Tid> {
        let tid = t.tid();
        let pos = self.fs.end_pos();
        let before = self.history();
        let mut writes = Vec::new();
        for op in ops {
            match op {
                Op::Store(oid, data) => {
                    t.store(*oid, self.serial(*oid), data.clone())
                        .expect("store");
                    writes.push((*oid, Some(data.clone())));
                }
                Op::Delete(oid) => {
                    t.delete_object(*oid, self.serial(*oid)).expect("delete");
                    writes.push((*oid, None));
                }
                Op::Undo(undone) => {
                    let oids = t.undo(*undone).expect("undo");
                    let target = self
                        .txns
                        .iter()
                        .find(|m| m.tid == *undone)
                        .expect("undo of a finished transaction");
                    let mut expect: Vec<Oid> = Vec::new();
                    for (oid, _) in &target.writes {
                        if expect.contains(oid) {
                            continue;
                        }
                        expect.push(*oid);
                        let revs = &before[oid];
                        let i = revs.iter().position(|r| r.0 == *undone).expect("revision");
                        let data = i.checked_sub(1).and_then(|p| revs[p].1.clone());
                        writes.push((*oid, data));
                    }
                    assert_eq!(oids, expect, "undo of {undone} changes these oids");
                }
                Op::Restore(oid, data, prev) => {
                    t.restore(*oid, data.clone(), *prev).expect("restore");
                    writes.push((*oid, data.clone()));
                }
            }
        }
        let v0 = self.rec.len();
        t.vote().expect("vote");
        self.votes.push(Vote {
            pos,
            tid,
            events: v0..self.rec.len(),
            finished: finish,
        });
        if !finish {
            t.abort();
            return None;
        }
        let f0 = self.rec.len();
        assert_eq!(t.finish().expect("finish"), tid);
        let events = self.rec.since(f0);
        let at = |pred: &dyn Fn(&Event) -> bool, what: &str| {
            f0 + events
                .iter()
                .position(pred)
                .unwrap_or_else(|| panic!("finish of {tid}: no {what} in {events:?}"))
        };
        let flip_event = at(
            &|e| matches!(e, Event::Write { pos: p, data } if *p == pos + 16 && data.len() == 1),
            "status flip",
        );
        let committed_event = at(&|e| *e == Event::Committed(tid), "Committed event");
        self.txns.push(ModelTxn {
            tid,
            status,
            meta,
            writes,
            end: self.fs.end_pos(),
            flip_event,
            committed_event,
        });
        Some(tid)
    }

    /// The recording, given the file as it was before the first event.
    pub fn finish(self, initial: Vec<u8>) -> Recording {
        Recording {
            initial,
            events: self.rec.events(),
            txns: self.txns,
            votes: self.votes,
        }
    }
}

/// Transaction metadata.
pub fn meta(user: &str, description: &str, extension: &[u8]) -> TxnMeta {
    TxnMeta {
        user: Bytes::copy_from_slice(user.as_bytes()),
        description: Bytes::copy_from_slice(description.as_bytes()),
        extension: Bytes::copy_from_slice(extension),
    }
}

/// `{'k': 'v', 'n': 1}` pickled by ZODB on Python 3: a real extension, so
/// that Python's iterator can decode it.
pub const EXT: &[u8] =
    b"\x80\x03}q\x00(X\x01\x00\x00\x00kq\x01X\x01\x00\x00\x00vq\x02X\x01\x00\x00\x00nq\x03K\x01u.";

/// A small valid record: class `builtins.object`, state a text.
#[allow(clippy::little_endian_bytes)] // pickle lengths are little-endian
pub fn pickle(text: &str) -> Bytes {
    let mut p = b"\x80\x03cbuiltins\nobject\nq\x00.\x80\x03X".to_vec();
    p.extend_from_slice(&(text.len() as u32).to_le_bytes());
    p.extend_from_slice(text.as_bytes());
    p.extend_from_slice(b"q\x01.");
    Bytes::from(p)
}

/// `len` deterministic pseudo-random bytes (xorshift from `seed`): data
/// that no structure of the file format can be mistaken for.
pub fn noise(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_be_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// xorshift64: the deterministic "random" choices of the tests.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (> 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A tid far in the future (2123): restored transactions may carry tids
/// from a machine whose clock is ahead, and a crashed one must still raise
/// the floor for new tids.
pub const FUTURE_TID: Tid = Tid(0x0700_0000_0000_0000);

/// The oid whose data is [`database_file`] in the mixed workload.
pub const STORED_DATABASE: Oid = Oid(41);

/// The bytes of a small Data.fs, as an application may store a file (a
/// backup, an upload) in an object: one transaction, with a tid later
/// than any the workload commits before its future-dated restore.
pub fn database_file() -> Bytes {
    let dir = scratch_dir();
    let p = dir.path().join("stored.fs");
    let fs = FileStorage::open(&p, &OpenOptions::read_write()).expect("create stored.fs");
    let mut t = fs
        .begin_restore(meta("", "inner", b""), FUTURE_TID, TxnStatus::Committed)
        .expect("begin");
    t.store(Oid(0), Tid::ZERO, pickle("inner root"))
        .expect("store");
    t.vote().expect("vote");
    Box::new(t).finish().expect("finish");
    drop(fs);
    Bytes::from(std::fs::read(&p).expect("read stored.fs"))
}

/// The crash image whose torn vote ends exactly after the bytes of
/// [`database_file`]: its last 8 bytes are the redundant length of a
/// well-formed transaction later than the torn one.
pub fn stored_database_image(rec: &Recording) -> Image {
    let db = database_file();
    let tid = rec
        .txns
        .iter()
        .find(|t| t.writes.iter().any(|(o, _)| *o == STORED_DATABASE))
        .expect("the workload stores a database file")
        .tid;
    let vote = rec.votes.iter().find(|v| v.tid == tid).expect("its vote");
    let Event::Write { data, .. } = &rec.events[vote.events.start] else {
        panic!("a vote starts with a write")
    };
    let at = data
        .windows(db.len())
        .position(|w| w == db.as_ref())
        .expect("the database file is in the vote")
        + db.len();
    let mut found = None;
    for_each_prefix_cut_at(
        rec,
        |event, _, _| {
            if event == vote.events.start {
                BTreeSet::from([at])
            } else {
                BTreeSet::new()
            }
        },
        |img| {
            if img.kind
                == (Kind::Prefix {
                    event: vote.events.start,
                    bytes: at,
                })
            {
                found = Some(img);
            }
        },
    );
    found.expect("the image")
}

/// Opens a new storage at `dir/Data.fs` with a recorder, runs `body`, and
/// returns the recording.
pub fn record(dir: &Path, body: impl FnOnce(&mut Driver<'_>)) -> Recording {
    record_with(dir, Durability::Immediate, body)
}

/// As [`record`], with commits made durable as `durability` says.
pub fn record_with(
    dir: &Path,
    durability: Durability,
    body: impl FnOnce(&mut Driver<'_>),
) -> Recording {
    let path = dir.join("Data.fs");
    let rec = Arc::new(Recorder::default());
    let opts = OpenOptions {
        durability,
        ..observed(&rec)
    };
    let fs = FileStorage::open(&path, &opts).expect("create the workload storage");
    let initial = std::fs::read(&path).expect("read the new Data.fs");
    assert_eq!(rec.len(), 0, "opening wrote through the observer");
    let mut d = Driver::new(&fs, rec);
    body(&mut d);
    let recording = d.finish(initial);
    drop(fs);
    assert_eq!(
        std::fs::read(&path).expect("read Data.fs"),
        recording.final_image(),
        "the recorded events rebuild the file the workload left"
    );
    recording
}

/// The mixed workload: every kind of transaction ZODB writes, small enough
/// that most of its writes are cut at every byte.
///
/// 1. the root and three objects, with user, description and extension;
/// 2. a 20 KiB object (crosses page boundaries; its cuts are sampled);
/// 3. a vote, then an abort: its bytes are removed again;
/// 4. twelve small objects (many record boundaries), where 3 was;
/// 5. an undo of 2: back pointers, and a creation undone;
/// 6. a deletion;
/// 7. an object whose data is a whole Data.fs ([`database_file`]), as the
///    transaction's last record: cut right after it, the file ends with a
///    well-formed transaction later than the torn one;
/// 8. a restore with a tid in the future (inline data, a back pointer
///    found through `prev_txn`, and "does not exist");
/// 9. the smallest transaction: no metadata, one object, its tid after
///    the future one;
/// 10. a restore with status `p`.
pub fn mixed_workload(dir: &Path) -> Recording {
    record(dir, |d| {
        let t1 = d.commit(
            meta("alice", "initial database creation", EXT),
            &[
                Op::Store(Oid(0), pickle("root")),
                Op::Store(Oid(1), pickle("one")),
                Op::Store(Oid(2), pickle("two")),
                Op::Store(Oid(3), pickle("three")),
            ],
        );
        let t2 = d.commit(
            meta("bob", "a big object", b""),
            &[
                Op::Store(Oid(1), noise(20 << 10, 2)),
                Op::Store(Oid(4), pickle("four, created by t2")),
            ],
        );
        d.vote_then_abort(
            meta("carol", "aborted after its vote", EXT),
            &[
                Op::Store(Oid(2), pickle("never")),
                Op::Store(Oid(5), pickle("never either")),
            ],
        );
        let many: Vec<Op> = (10..22)
            .map(|i| Op::Store(Oid(i), pickle(&format!("object {i}"))))
            .collect();
        d.commit(meta("dave", "twelve objects", b""), &many);
        d.commit(meta("erin", "undo the big object", b""), &[Op::Undo(t2)]);
        d.commit(meta("", "delete three", b""), &[Op::Delete(Oid(3))]);
        d.commit(
            meta("frank", "stores a database file", b""),
            &[
                Op::Store(Oid(40), pickle("a folder")),
                Op::Store(STORED_DATABASE, database_file()),
            ],
        );
        d.commit_restore(
            meta("copier", "restored from a clock ahead", EXT),
            FUTURE_TID,
            TxnStatus::Committed,
            &[
                Op::Restore(Oid(30), Some(pickle("restored inline")), None),
                Op::Restore(Oid(2), Some(pickle("two")), Some(t1)),
                Op::Restore(Oid(31), None, None),
            ],
        );
        d.commit(TxnMeta::default(), &[Op::Store(Oid(0), pickle("r"))]);
        d.commit_restore(
            meta("packer", "packed", b""),
            Tid(FUTURE_TID.0 + (1 << 32)),
            TxnStatus::Packed,
            &[Op::Restore(Oid(12), Some(pickle("p")), None)],
        );
    })
}

// ---------------------------------------------------------------------------
// Images.

/// Where a crash image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The events before `event`, and the first `bytes` bytes of event
    /// `event` (a write; 0: nothing of it).
    Prefix {
        /// First event not (fully) applied.
        event: usize,
        /// Bytes of it applied.
        bytes: usize,
    },
    /// The file as of the last sync before event `event`, extended with
    /// zeros to `len`: the size reached the disk, the data did not.
    ZeroTail {
        /// The cut whose length this image has.
        event: usize,
        /// Its length.
        len: u64,
    },
}

/// A file a crash could leave, and what is known about it.
#[derive(Clone, Debug)]
pub struct Image {
    /// Where it comes from.
    pub kind: Kind,
    /// For messages: the kind, the cut, and the transaction being written.
    pub label: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Transactions whose status flip it holds: what recovery must keep.
    pub visible: usize,
    /// Transactions whose `finish` had returned at the cut: what must
    /// survive (at most `visible`, or durability is broken).
    pub committed: usize,
    /// The index of a `Sync` event that happened at exactly this state:
    /// the image a crash leaves when nothing written after it persisted.
    pub sync_event: Option<usize>,
}

/// How many cuts to make inside writes.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// Writes of a vote whose transaction is at most this long are cut
    /// after every byte.
    pub every_byte_up_to: u64,
    /// Otherwise: this many cuts at each end of each write, ...
    pub edge: usize,
    /// ... at every record and field boundary (and a byte before and after
    /// it when `neighbours`), and this many at deterministic random offsets.
    pub random: usize,
    /// Whether to cut a byte before and after each boundary too.
    pub neighbours: bool,
    /// Seed of the random offsets.
    pub seed: u64,
}

/// Positions inside one voted transaction where a cut is most telling:
/// the ends of every header field, string and record, and the trailer.
fn boundaries(rec: &Recording, vote: &Vote) -> BTreeSet<u64> {
    let mut txn = Vec::new();
    for e in &rec.events[vote.events.clone()] {
        if let Event::Write { pos, data } = e {
            write_at(&mut txn, pos - vote.pos, data);
        }
    }
    let mut out = BTreeSet::new();
    let h = TxnHeader::decode(txn[..TXN_HEADER_LEN as usize].try_into().expect("23 bytes"));
    let mut rel: Vec<u64> = vec![0, 8, 16, 17, 19, 21, 23];
    let strings = [h.ulen, h.dlen, h.elen];
    let mut at = TXN_HEADER_LEN;
    for l in strings {
        at += u64::from(l);
        rel.push(at);
    }
    while at < h.tlen {
        let dh = DataHeader::decode(
            txn[at as usize..(at + DATA_HEADER_LEN) as usize]
                .try_into()
                .expect("42 bytes"),
        );
        rel.extend([8, 16, 24, 32, 34, 42].map(|o| at + o));
        at += dh.record_len();
        rel.push(at);
    }
    rel.push(h.tlen + 8);
    for r in rel {
        out.insert(vote.pos + r);
    }
    out
}

/// Offsets `k` (0 < k < len) at which to cut the write of `len` bytes at
/// `pos` (event `event`).
fn cuts(
    rec: &Recording,
    s: &Sampling,
    event: usize,
    pos: u64,
    len: usize,
    rng: &mut Rng,
) -> BTreeSet<usize> {
    let Some(vote) = rec.vote_of(event) else {
        // The status flip: one byte, nothing to tear.
        return (1..len).collect();
    };
    let total: u64 = rec.events[vote.events.clone()]
        .iter()
        .map(|e| match e {
            Event::Write { data, .. } => data.len() as u64,
            _ => 0,
        })
        .sum();
    if total <= s.every_byte_up_to {
        return (1..len).collect();
    }
    let mut out: BTreeSet<usize> = (1..len.min(s.edge + 1))
        .chain(len.saturating_sub(s.edge).max(1)..len)
        .collect();
    let end = pos + len as u64;
    for b in boundaries(rec, vote).range(pos..=end) {
        let k = (b - pos) as usize;
        out.insert(k);
        if s.neighbours {
            out.extend([k + 1, k.saturating_sub(1)]);
        }
    }
    for _ in 0..s.random {
        out.insert(1 + rng.below(len as u64) as usize);
    }
    out.retain(|&k| 0 < k && k < len);
    out
}

fn vote_label(rec: &Recording, event: usize) -> String {
    match rec.vote_of(event) {
        Some(v) => format!(
            "vote of {} at {}{}",
            v.tid,
            v.pos,
            if v.finished { "" } else { " (aborted later)" }
        ),
        None => match &rec.events.get(event) {
            Some(Event::Write { pos, .. }) => format!("status flip at {pos}"),
            Some(Event::SetLen(l)) => format!("truncation to {l}"),
            Some(e) => format!("{e:?}"),
            None => "end of the workload".into(),
        },
    }
}

/// Calls `f` with every prefix image: the state before the first event,
/// after every write and truncation, and torn inside each write at the
/// offsets `s` picks. Lazy, because images of big transactions are big.
pub fn for_each_prefix(rec: &Recording, s: Sampling, f: impl FnMut(Image)) {
    let mut rng = Rng(s.seed | 1);
    for_each_prefix_cut_at(
        rec,
        |event, pos, len| cuts(rec, &s, event, pos, len, &mut rng),
        f,
    );
}

/// As [`for_each_prefix`], torn inside write `event` (at `pos`, `len`
/// bytes long) at the offsets `choose(event, pos, len)` returns (those
/// outside `1..len` are ignored).
pub fn for_each_prefix_cut_at(
    rec: &Recording,
    mut choose: impl FnMut(usize, u64, usize) -> BTreeSet<usize>,
    mut f: impl FnMut(Image),
) {
    let mut state = rec.initial.clone();
    let boundary = |state: &Vec<u8>, next: usize| {
        // The state stays until the next write or truncation; a sync before
        // that makes it a sync point.
        let sync_event = rec.events[next..]
            .iter()
            .take_while(|e| matches!(e, Event::Sync | Event::Committed(_)))
            .position(|e| *e == Event::Sync)
            .map(|i| next + i);
        Image {
            kind: Kind::Prefix {
                event: next,
                bytes: 0,
            },
            label: format!(
                "prefix before event {next} ({}){}",
                vote_label(rec, next),
                if sync_event.is_some() {
                    ", a sync point"
                } else {
                    ""
                }
            ),
            bytes: state.clone(),
            visible: rec.visible_before(next),
            committed: rec.committed_before(next),
            sync_event,
        }
    };
    f(boundary(&state, 0));
    for (i, e) in rec.events.iter().enumerate() {
        if let Event::Write { pos, data } = e {
            for k in choose(i, *pos, data.len()) {
                if k == 0 || k >= data.len() {
                    continue;
                }
                let mut bytes = state.clone();
                write_at(&mut bytes, *pos, &data[..k]);
                f(Image {
                    kind: Kind::Prefix { event: i, bytes: k },
                    label: format!(
                        "prefix torn after {k} of {} bytes of event {i} ({})",
                        data.len(),
                        vote_label(rec, i)
                    ),
                    bytes,
                    visible: rec.visible_before(i),
                    committed: rec.committed_before(i),
                    sync_event: None,
                });
            }
        }
        apply(&mut state, e);
        if matches!(e, Event::Write { .. } | Event::SetLen(_)) {
            f(boundary(&state, i + 1));
        }
    }
}

/// Every prefix image, collected.
pub fn prefix_images(rec: &Recording, s: Sampling) -> Vec<Image> {
    let mut out = Vec::new();
    for_each_prefix(rec, s, |i| out.push(i));
    out
}

/// Images where the file's size persisted but the data written since the
/// last sync did not: the durable state, then zeros up to the length of
/// every state before the next sync, and up to the lengths that make the
/// zeros shorter than, exactly, and just longer than a transaction header.
pub fn zero_tail_images(rec: &Recording) -> Vec<Image> {
    let mut out = Vec::new();
    let mut state = rec.initial.clone();
    let mut durable = (state.clone(), 0usize);
    // length -> first event index at which the file had it
    // (`durable.1`: the index of the sync that made `durable.0` durable)
    let mut lens: BTreeMap<u64, usize> = BTreeMap::new();
    let mut flush = |durable: &(Vec<u8>, usize), lens: &mut BTreeMap<u64, usize>| {
        let d = durable.0.len() as u64;
        let Some((&max, &last_event)) = lens.iter().next_back() else {
            return;
        };
        for extra in [1, TXN_HEADER_LEN - 1, TXN_HEADER_LEN, TXN_HEADER_LEN + 1] {
            if d + extra <= max {
                lens.entry(d + extra).or_insert(last_event);
            }
        }
        for (&len, &event) in lens.iter() {
            let mut bytes = durable.0.clone();
            bytes.resize(len as usize, 0);
            let since = match durable.1 {
                0 => "the open".to_owned(),
                sync => format!("the sync at event {sync}"),
            };
            out.push(Image {
                kind: Kind::ZeroTail { event, len },
                label: format!("zeros from {d} to {len}: data since {since} lost, size kept"),
                bytes,
                visible: rec.visible_before(durable.1),
                committed: rec.committed_before(event),
                sync_event: None,
            });
        }
        lens.clear();
    };
    for (i, e) in rec.events.iter().enumerate() {
        if *e == Event::Sync {
            flush(&durable, &mut lens);
            durable = (state.clone(), i);
        }
        apply(&mut state, e);
        if state.len() > durable.0.len() {
            lens.entry(state.len() as u64).or_insert(i + 1);
        }
    }
    flush(&durable, &mut lens);
    out
}

// ---------------------------------------------------------------------------
// Checking recovery with our engine.

/// A directory for images: in `/dev/shm` when there is one, because
/// recovery fsyncs and thousands of fsyncs on a disk would take minutes
/// while proving nothing more.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let b = {
        let mut b = tempfile::Builder::new();
        b.prefix("fs-crash-");
        b
    };
    if shm.is_dir()
        && let Ok(d) = b.tempdir_in(shm)
    {
        return d;
    }
    b.tempdir().expect("create a scratch directory")
}

/// Empties `dir` and writes `bytes` as `dir/Data.fs`.
pub fn write_image(dir: &Path, bytes: &[u8]) -> PathBuf {
    for entry in std::fs::read_dir(dir).expect("list the scratch directory") {
        let p = entry.expect("directory entry").path();
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    }
    let p = dir.join("Data.fs");
    std::fs::write(&p, bytes).expect("write the image");
    p
}

/// The `Data.fs.trN` files beside `data_fs`, by N, with their bytes.
pub fn tr_files(data_fs: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = data_fs.parent().expect("a directory");
    tr_sizes(data_fs)
        .into_iter()
        .map(|(name, _)| {
            let bytes = std::fs::read(dir.join(&name)).expect("read a .trN file");
            (name, bytes)
        })
        .collect()
}

/// The names and sizes of the `Data.fs.trN` files beside `data_fs`, by N.
pub fn tr_sizes(data_fs: &Path) -> Vec<(String, u64)> {
    let dir = data_fs.parent().expect("a directory");
    let stem = format!(
        "{}.tr",
        data_fs.file_name().expect("a name").to_string_lossy()
    );
    let mut out: Vec<(u64, String, u64)> = std::fs::read_dir(dir)
        .expect("list the directory")
        .filter_map(|e| {
            let e = e.expect("directory entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u64 = name.strip_prefix(&stem)?.parse().ok()?;
            let size = e.metadata().expect("stat a .trN file").len();
            Some((n, name, size))
        })
        .collect();
    out.sort();
    out.into_iter()
        .map(|(_, name, size)| (name, size))
        .collect()
}

/// Asserts that `fs` holds exactly the first `n` transactions of `rec`:
/// the transaction list with its metadata, every object's current data and
/// every revision, and nothing of later transactions.
pub fn assert_state(fs: &FileStorage, rec: &Recording, n: usize, label: &str) {
    assert_eq!(fs.last_transaction(), rec.last_tid(n), "{label}: last tid");
    assert_eq!(fs.end_pos(), rec.end_after(n), "{label}: end");
    let listed: Vec<(Tid, u8, TxnMeta)> = fs
        .txns()
        .map(|t| {
            let t = t.unwrap_or_else(|e| panic!("{label}: iterating: {e}"));
            let info = t.info();
            (info.tid, t.header.status, info.meta)
        })
        .collect();
    let model: Vec<(Tid, u8, TxnMeta)> = rec.txns[..n]
        .iter()
        .map(|t| (t.tid, t.status, t.meta.clone()))
        .collect();
    assert_eq!(listed, model, "{label}: transactions");
    let history = rec.history_after(n);
    assert_eq!(fs.object_count(), history.len() as u64, "{label}: objects");
    for oid in rec.all_oids() {
        let Some(revs) = history.get(&oid) else {
            match fs.load(oid) {
                Err(StorageError::NoSuchObject { .. }) => continue,
                other => panic!("{label}: oid {oid} is not written yet, load gave {other:?}"),
            }
        };
        let (tid, data) = revs.last().expect("a revision");
        match (fs.load(oid), data) {
            (Ok((got, serial)), Some(d)) => {
                assert_eq!((&got, serial), (d, *tid), "{label}: load {oid}")
            }
            (Err(StorageError::NoData { serial, .. }), None) => {
                assert_eq!(serial, *tid, "{label}: load {oid}")
            }
            (got, want) => panic!("{label}: load {oid}: {got:?}, want {want:?} at {tid}"),
        }
        for (tid, data) in revs {
            match (fs.load_serial(oid, *tid), data) {
                (Ok(got), Some(d)) => assert_eq!(&got, d, "{label}: loadSerial {oid} {tid}"),
                (Err(StorageError::NoData { .. }), None) => {}
                (got, want) => panic!("{label}: loadSerial {oid} {tid}: {got:?}, want {want:?}"),
            }
        }
    }
}

/// What our engine made of an image.
#[derive(Debug)]
pub struct Outcome {
    /// Data.fs after the read-write open.
    pub data_fs: Vec<u8>,
    /// The `.trN` files.
    pub trs: Vec<(String, Vec<u8>)>,
    /// How many transactions it holds.
    pub txns: usize,
}

/// Opens `image` read-write in `dir` with our engine and checks that it
/// recovers as the model says: it opens; it holds exactly the transactions
/// the image has status flips for, loading exactly the model's data; the
/// bytes before the tail are unchanged; the tail is cut and, unless
/// shorter than a header, saved in `.tr0`; new tids are above the removed
/// tail's; a second open is a no-op; and the next transaction goes where
/// the crashed one was.
pub fn check_recovery(rec: &Recording, image: &Image, dir: &Path) -> Outcome {
    let label = image.label.as_str();
    let want = rec.expected(image);
    assert!(
        image.committed <= image.visible,
        "{label}: {} transactions had finished but only {} are in the image: \
         finish returned before its commit was durable",
        image.committed,
        image.visible
    );
    let p = write_image(dir, &image.bytes);
    let fs = FileStorage::open(&p, &OpenOptions::read_write())
        .unwrap_or_else(|e| panic!("{label}: a crash image must open read-write: {e}"));
    let recovered = fs.open_report().recovered.clone();
    match (&recovered, want.tail.is_empty()) {
        (None, true) => {}
        (Some(r), false) => {
            assert_eq!(
                (r.pos, r.len),
                (want.end, want.tail.len() as u64),
                "{label}: recovery cut"
            );
            assert_eq!(r.saved_to.is_some(), want.saved, "{label}: .trN written");
        }
        (r, _) => panic!(
            "{label}: recovery {r:?}, but the model has {} tail bytes",
            want.tail.len()
        ),
    }
    assert_state(&fs, rec, want.visible, label);
    let last_tid = fs.last_transaction();
    let txns = fs.txns().count();
    // New tids stay above the removed tail's, which this process may have
    // handed out before the crash (ZODB: the tail's tid becomes `_ltid`).
    // The floor lives in this session only, as in ZODB: `begin` picks the
    // tid, and an abort before the vote writes nothing.
    let floor = want
        .tail_tid()
        .map_or(want.last_tid, |t| t.max(want.last_tid));
    let t = fs
        .begin(meta("", "after recovery", b""))
        .unwrap_or_else(|e| panic!("{label}: begin after recovery: {e}"));
    assert!(
        t.tid() > floor,
        "{label}: new tid {} not above {floor}",
        t.tid()
    );
    Box::new(t).abort();
    drop(fs);
    let data_fs = std::fs::read(&p).expect("read the recovered file");
    assert!(
        data_fs.len() as u64 == want.end && data_fs[..] == image.bytes[..want.end as usize],
        "{label}: the recovered file must be the image's first {} bytes (it has {})",
        want.end,
        data_fs.len()
    );
    let trs = tr_files(&p);
    let tr_ok = match (&trs[..], want.saved) {
        ([], false) => true,
        ([(name, bytes)], true) => name == "Data.fs.tr0" && *bytes == want.tail,
        _ => false,
    };
    assert!(
        tr_ok,
        "{label}: .trN files {:?}; want {} tail bytes {}",
        trs.iter().map(|(n, b)| (n, b.len())).collect::<Vec<_>>(),
        want.tail.len(),
        if want.saved {
            "in Data.fs.tr0"
        } else {
            "dropped"
        }
    );

    // Recovery is idempotent: a second open finds a clean file and
    // changes nothing.
    let fs = FileStorage::open(&p, &OpenOptions::read_write())
        .unwrap_or_else(|e| panic!("{label}: second open: {e}"));
    assert_eq!(
        fs.open_report().recovered,
        None,
        "{label}: second open recovered again"
    );
    assert_eq!(fs.last_transaction(), last_tid, "{label}: second open");
    assert_eq!(fs.end_pos(), want.end, "{label}: second open");
    assert_eq!(
        std::fs::read(&p).expect("read Data.fs"),
        data_fs,
        "{label}: second open changed Data.fs"
    );
    assert_eq!(
        tr_sizes(&p),
        trs.iter()
            .map(|(n, b)| (n.clone(), b.len() as u64))
            .collect::<Vec<_>>(),
        "{label}: second open touched the .trN files"
    );
    // And the file takes the next transaction where the crashed one was.
    let mut t = fs
        .begin(meta("", "after recovery", b""))
        .unwrap_or_else(|e| panic!("{label}: begin after reopen: {e}"));
    t.store(Oid(0xdead), Tid::ZERO, pickle("after recovery"))
        .unwrap_or_else(|e| panic!("{label}: store after recovery: {e}"));
    t.vote()
        .unwrap_or_else(|e| panic!("{label}: vote after recovery: {e}"));
    let tid = Box::new(t)
        .finish()
        .unwrap_or_else(|e| panic!("{label}: finish after recovery: {e}"));
    assert_eq!(
        fs.txn_at(want.end).map(|t| t.tid()).ok(),
        Some(tid),
        "{label}: the next transaction goes where the crashed one was"
    );
    drop(fs);
    Outcome { data_fs, trs, txns }
}

/// Checks `images` on up to two threads (the tests run beside builds on a
/// 2-core machine), each with its own scratch directory; returns what the
/// engine made of each, in order.
pub fn check_all(rec: &Recording, images: &[Image]) -> Vec<Outcome> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2);
    let chunk = images.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let dir = scratch_dir();
                    part.iter()
                        .map(|img| check_recovery(rec, img, dir.path()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The durability promise, checked on what the engine recovered from the
/// sync-point images (`(sync event, transactions recovered)`): every
/// transaction whose `finish` returned was in the file as of the last sync
/// before that, so it survives a crash that loses everything unsynced.
pub fn assert_durable(rec: &Recording, sync_points: &[(usize, usize)]) {
    for (i, t) in rec.txns.iter().enumerate() {
        let durable = sync_points
            .iter()
            .filter(|(sync, _)| *sync < t.committed_event)
            .max_by_key(|(sync, _)| *sync)
            .map_or(0, |&(_, n)| n);
        assert!(
            durable > i,
            "transaction {} ({}): finish returned, but the file as of the last sync before \
             that holds only {durable} transactions",
            i + 1,
            t.tid
        );
    }
}
