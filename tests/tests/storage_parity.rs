//! The in-memory storage against FileStorage: one scenario, run through
//! the storage traits on both, must give the same answers (with tids
//! replaced by their commit number, since the clocks differ). FileStorage
//! is proven against ZODB elsewhere, so agreement here carries ZODB's
//! semantics over to `MemoryStorage`, which the ZEO server serves for
//! `<mappingstorage>` and `<demostorage>`.

use bytes::Bytes;
use filestorage::{FileStorage, OpenOptions};
use zodb_core::memory::{MemoryStorage, tid_from_undo_id};
use zodb_core::storage::TpcTxn;
use zodb_core::{Oid, StorageError, Tid, TxnMeta, TxnStatus, WriteStorage};

fn meta(desc: &str) -> TxnMeta {
    TxnMeta {
        user: Bytes::from_static(b"u"),
        description: Bytes::copy_from_slice(desc.as_bytes()),
        extension: Bytes::new(),
    }
}

/// A record referring to `refs` the way ZODB pickles persistent references.
fn rec(tag: &str, refs: &[Oid]) -> Bytes {
    let mut v = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03]q\x01(".to_vec();
    for r in refs {
        v.push(b'C');
        v.push(8);
        v.extend_from_slice(&r.to_bytes());
        v.extend_from_slice(b"N\x86Q");
    }
    v.push(b'X');
    v.extend_from_slice(&(tag.len() as u32).to_le_bytes());
    v.extend_from_slice(tag.as_bytes());
    v.extend_from_slice(b"e.");
    Bytes::from(v)
}

/// Everything the scenario observed, with tids as commit numbers.
struct Log {
    tids: Vec<Tid>,
    lines: Vec<String>,
}

impl Log {
    fn t(&self, tid: Tid) -> String {
        match self.tids.iter().position(|&t| t == tid) {
            Some(i) => format!("T{}", i + 1),
            None if tid == Tid::ZERO => "z64".into(),
            None => "T?".into(),
        }
    }

    fn err(&self, e: &StorageError) -> String {
        match e {
            StorageError::NoSuchObject { oid } => format!("NoSuchObject({oid})"),
            StorageError::NoData { oid, serial } => format!("NoData({oid},{})", self.t(*serial)),
            StorageError::NoSuchRevision { oid, serial } => {
                format!("NoSuchRevision({oid},{})", self.t(*serial))
            }
            StorageError::Conflict {
                oid,
                committed,
                old,
            } => format!("Conflict({oid},{},{})", self.t(*committed), self.t(*old)),
            StorageError::ReadConflict {
                oid,
                committed,
                read,
            } => format!(
                "ReadConflict({oid},{},{})",
                self.t(*committed),
                self.t(*read)
            ),
            StorageError::Undo { oid, reason } => format!("Undo({oid:?},{reason})"),
            other => format!("other: {other}"),
        }
    }

    fn push(&mut self, s: String) {
        self.lines.push(s);
    }
}

fn commit_with(
    st: &dyn WriteStorage,
    log: &mut Log,
    desc: &str,
    f: impl FnOnce(&mut dyn TpcTxn, &Log) -> Result<(), StorageError>,
) -> Option<Tid> {
    let mut t = st.tpc_begin(meta(desc)).unwrap();
    let r = f(&mut *t, log).and_then(|()| t.vote());
    match r {
        Ok(resolved) => {
            let tid = t.finish().unwrap();
            log.tids.push(tid);
            log.push(format!(
                "{desc}: committed {} resolved {resolved:?}",
                log.t(tid)
            ));
            Some(tid)
        }
        Err(e) => {
            let line = format!("{desc}: {}", log.err(&e));
            log.push(line);
            t.abort();
            None
        }
    }
}

fn observe(st: &dyn WriteStorage, log: &mut Log, oids: &[Oid]) {
    for &oid in oids {
        let line = match st.load(oid) {
            Ok((d, s)) => format!("load {oid}: {} bytes @{}", d.len(), log.t(s)),
            Err(e) => format!("load {oid}: {}", log.err(&e)),
        };
        log.push(line);
        let tids = log.tids.clone();
        for &before in tids.iter().chain([Tid::MAX].iter()) {
            let line = match st.load_before(oid, before) {
                Ok(Some(r)) => format!(
                    "loadBefore {oid} <{}: @{} next {}",
                    log.t(before),
                    log.t(r.serial),
                    r.next_serial.map_or("None".into(), |n| log.t(n))
                ),
                Ok(None) => format!("loadBefore {oid} <{}: None", log.t(before)),
                Err(e) => format!("loadBefore {oid} <{}: {}", log.t(before), log.err(&e)),
            };
            log.push(line);
        }
        let line = match st.history(oid, 100) {
            Ok(h) => format!(
                "history {oid}: {:?}",
                h.iter()
                    .map(|e| (log.t(e.txn.tid), e.size))
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("history {oid}: {}", log.err(&e)),
        };
        log.push(line);
    }
    let txns: Vec<String> = st
        .iter_transactions(None, None)
        .unwrap()
        .map(|t| {
            let t = t.unwrap();
            let status = match t.info.status {
                TxnStatus::Packed => "p",
                _ => " ",
            };
            let recs: Vec<String> = t
                .records
                .iter()
                .map(|r| {
                    format!(
                        "{}:{}:{}",
                        r.oid,
                        r.data.as_ref().map_or(0, |d| d.len()),
                        r.data_txn.map_or("-".into(), |d| log.t(d))
                    )
                })
                .collect();
            format!("{}{status}{recs:?}", log.t(t.info.tid))
        })
        .collect();
    log.push(format!("iterate: {txns:?}"));
    let undo: Vec<String> = st
        .undo_log(0, 100)
        .unwrap()
        .iter()
        .map(|e| log.t(tid_from_undo_id(&e.id).unwrap()))
        .collect();
    log.push(format!("undoLog: {undo:?}"));
}

fn scenario(st: &dyn WriteStorage) -> Vec<String> {
    let mut log = Log {
        tids: Vec::new(),
        lines: Vec::new(),
    };
    let oids = [Oid(0), Oid(1), Oid(2), Oid(3)];
    let t1 = commit_with(st, &mut log, "create", |t, _| {
        t.store(Oid(0), Tid::ZERO, rec("root", &[Oid(1), Oid(2)]))?;
        t.store(Oid(1), Tid::ZERO, rec("one", &[]))?;
        t.store(Oid(2), Tid::ZERO, rec("two", &[]))
    })
    .unwrap();
    let t2 = commit_with(st, &mut log, "change 1", |t, _| {
        t.store(Oid(1), t1, rec("one-b", &[]))
    })
    .unwrap();
    commit_with(st, &mut log, "stale store", |t, _| {
        t.store(Oid(1), t1, rec("one-c", &[]))
    });
    commit_with(st, &mut log, "read conflict", |t, _| {
        t.check_current_serial(Oid(1), t1)
    });
    commit_with(st, &mut log, "check missing", |t, _| {
        t.check_current_serial(Oid(9), t1)
    });
    commit_with(st, &mut log, "empty", |_, _| Ok(()));
    let t4 = commit_with(st, &mut log, "detach 2, add 3", |t, _| {
        t.store(Oid(0), t1, rec("root", &[Oid(1), Oid(3)]))?;
        t.store(Oid(3), Tid::ZERO, rec("three", &[]))
    })
    .unwrap();
    commit_with(st, &mut log, "undo change 1", |t, _| t.undo(t2).map(|_| ()));
    commit_with(st, &mut log, "undo create (conflicts)", |t, _| {
        t.undo(t1).map(|_| ())
    });
    commit_with(st, &mut log, "undo add 3", |t, _| t.undo(t4).map(|_| ()));
    commit_with(st, &mut log, "delete 2 stale", |t, _| {
        t.delete_object(Oid(2), Tid::ZERO)
    });
    commit_with(st, &mut log, "delete 2", |t, _| t.delete_object(Oid(2), t1));
    observe(st, &mut log, &oids);
    let last = *log.tids.last().unwrap();
    // Pack to before the last transaction, with gc.
    let pack_to = log.tids[log.tids.len() - 2];
    st.pack(pack_to, true).unwrap();
    log.push(format!("packed to {}", log.t(pack_to)));
    observe(st, &mut log, &oids);
    assert_eq!(st.last_transaction(), last);
    log.lines
}

#[test]
fn memory_storage_answers_like_filestorage() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FileStorage::open(dir.path().join("Data.fs"), &OpenOptions::read_write()).unwrap();
    let ours = scenario(&MemoryStorage::new("mem"));
    let theirs = scenario(&fs);
    let diffs: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("memory:      {a}\nfilestorage: {b}"))
        .collect();
    assert!(
        diffs.is_empty() && ours.len() == theirs.len(),
        "{} differences:\n{}\n\nfull filestorage log:\n{}",
        diffs.len(),
        diffs.join("\n"),
        theirs.join("\n")
    );
}
