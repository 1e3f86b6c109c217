//! The write side with our engine alone: two-phase commit, conflicts,
//! abort, undo, the lock, and crash recovery on open. Interop with Python
//! ZODB (same bytes, each reads the other's files) is in `tests/`.

use std::path::Path;

use bytes::Bytes;
use filestorage::{FileStorage, OpenOptions};
use zodb_core::storage::TpcTxn;
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TxnMeta};

fn meta(desc: &str) -> TxnMeta {
    TxnMeta {
        user: Bytes::from_static(b"tester"),
        description: Bytes::copy_from_slice(desc.as_bytes()),
        extension: Bytes::new(),
    }
}

fn rw(path: &Path) -> FileStorage {
    FileStorage::open(path, &OpenOptions::read_write()).unwrap()
}

/// Commits `stores` (oid, old serial, data) in one transaction.
fn commit(fs: &FileStorage, stores: &[(Oid, Tid, &[u8])]) -> Result<Tid, StorageError> {
    let mut t = fs.begin(meta("commit"))?;
    for &(oid, serial, data) in stores {
        t.store(oid, serial, Bytes::copy_from_slice(data))?;
    }
    t.vote()?;
    Box::new(t).finish()
}

#[test]
fn create_commit_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let fs = rw(&p);
    assert_eq!(std::fs::read(&p).unwrap(), b"FS30");
    let oids = fs.new_oids(2).unwrap();
    assert_eq!(oids, vec![Oid(1), Oid(2)]);
    let t1 = commit(
        &fs,
        &[(Oid(0), Tid::ZERO, b"root-1"), (oids[0], Tid::ZERO, b"one")],
    )
    .unwrap();
    let t2 = commit(&fs, &[(Oid(0), t1, b"root-2")]).unwrap();
    assert!(t2 > t1);
    assert_eq!(fs.last_transaction(), t2);
    assert_eq!(
        fs.load(Oid(0)).unwrap(),
        (Bytes::from_static(b"root-2"), t2)
    );
    assert_eq!(
        fs.load_serial(Oid(0), t1).unwrap(),
        Bytes::from_static(b"root-1")
    );
    let before = fs.load_before(Oid(0), t2).unwrap().unwrap();
    assert_eq!((before.serial, before.next_serial), (t1, Some(t2)));
    drop(fs);
    let ro = FileStorage::open_read_only(&p).unwrap();
    assert_eq!(ro.load(oids[0]).unwrap(), (Bytes::from_static(b"one"), t1));
    assert_eq!(ro.last_transaction(), t2);
    assert_eq!(ro.object_count(), 2);
    // A reopened writer continues the oid and tid sequences.
    drop(ro);
    let fs = rw(&p);
    assert_eq!(fs.new_oids(1).unwrap(), vec![Oid(2)]);
    let t3 = commit(&fs, &[(Oid(0), t2, b"root-3")]).unwrap();
    assert!(t3 > t2);
}

#[test]
fn conflicts_and_read_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let fs = rw(&dir.path().join("Data.fs"));
    let t1 = commit(&fs, &[(Oid(0), Tid::ZERO, b"a")]).unwrap();
    let _t2 = commit(&fs, &[(Oid(0), t1, b"b")]).unwrap();
    match commit(&fs, &[(Oid(0), t1, b"c")]) {
        Err(StorageError::Conflict { oid, old, .. }) => assert_eq!((oid, old), (Oid(0), t1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut t = fs.begin(meta("check")).unwrap();
    assert!(matches!(
        t.check_current_serial(Oid(0), t1),
        Err(StorageError::ReadConflict { .. })
    ));
    assert!(matches!(
        t.delete_object(Oid(9), t1),
        Err(StorageError::NoSuchObject { .. })
    ));
    drop(t);
    assert_eq!(fs.load(Oid(0)).unwrap().0, Bytes::from_static(b"b"));
}

#[test]
fn abort_after_vote_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let fs = rw(&p);
    commit(&fs, &[(Oid(0), Tid::ZERO, b"a")]).unwrap();
    let size = std::fs::metadata(&p).unwrap().len();
    let mut t = fs.begin(meta("aborted")).unwrap();
    t.store(Oid(1), Tid::ZERO, Bytes::from_static(b"x"))
        .unwrap();
    t.vote().unwrap();
    assert!(std::fs::metadata(&p).unwrap().len() > size);
    // Voted data is on disk but not visible.
    assert!(fs.load(Oid(1)).is_err());
    Box::new(t).abort();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
    // Dropping an unfinished transaction aborts it and frees the lock.
    let mut t = fs.begin(meta("dropped")).unwrap();
    t.store(Oid(1), Tid::ZERO, Bytes::from_static(b"y"))
        .unwrap();
    t.vote().unwrap();
    drop(t);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
    commit(&fs, &[(Oid(1), Tid::ZERO, b"z")]).unwrap();
    assert_eq!(fs.load(Oid(1)).unwrap().0, Bytes::from_static(b"z"));
}

#[test]
fn undo_and_undo_log() {
    let dir = tempfile::tempdir().unwrap();
    let fs = rw(&dir.path().join("Data.fs"));
    let t1 = commit(
        &fs,
        &[(Oid(0), Tid::ZERO, b"v1"), (Oid(1), Tid::ZERO, b"new")],
    )
    .unwrap();
    let t2 = commit(&fs, &[(Oid(0), t1, b"v2")]).unwrap();
    let log = fs.undo_log(0, 20).unwrap();
    assert_eq!(
        log.iter().map(|e| e.txn.tid).collect::<Vec<_>>(),
        vec![t2, t1]
    );
    // Undo the modification: the root is back to v1, through a back pointer.
    let mut t = fs.begin(meta("undo t2")).unwrap();
    assert_eq!(t.undo(t2).unwrap(), vec![Oid(0)]);
    t.vote().unwrap();
    let t3 = Box::new(t).finish().unwrap();
    assert_eq!(fs.load(Oid(0)).unwrap(), (Bytes::from_static(b"v1"), t3));
    // The root's current data is t1's again (through t3's back pointer), so
    // t1 can be undone: both creations are undone and the objects vanish.
    let mut t = fs.begin(meta("undo t1")).unwrap();
    let mut undone = t.undo(t1).unwrap();
    undone.sort();
    assert_eq!(undone, vec![Oid(0), Oid(1)]);
    t.vote().unwrap();
    Box::new(t).finish().unwrap();
    assert!(fs.load(Oid(0)).unwrap_err().is_pos_key_error());
    assert!(fs.load(Oid(1)).unwrap_err().is_pos_key_error());
    let mut t = fs.begin(meta("undo unknown")).unwrap();
    assert!(matches!(t.undo(Tid(12345)), Err(StorageError::Undo { .. })));
}

#[test]
fn lock_excludes_a_second_writer_but_not_readers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let fs = rw(&p);
    let err = FileStorage::open(&p, &OpenOptions::read_write()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Data.fs.lock") && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    FileStorage::open_read_only(&p).unwrap();
    drop(fs);
    rw(&p);
}

#[test]
fn a_crashed_vote_is_cut_into_tr0_on_open() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/history");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let mut bytes = std::fs::read(src.join("Data.fs")).unwrap();
    let committed = bytes.len() as u64;
    let tail = std::fs::read(src.join("voted.tail")).unwrap();
    bytes.extend_from_slice(&tail);
    std::fs::write(&p, &bytes).unwrap();
    let fs = rw(&p);
    let rec = fs.open_report().recovered.clone().unwrap();
    assert_eq!(rec.pos, committed);
    assert_eq!(std::fs::read(rec.saved_to.unwrap()).unwrap(), tail);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), committed);
    // The next transaction goes where the crashed one was, with a later tid.
    let last = fs.last_transaction();
    let t = commit(&fs, &[(Oid(0), fs.load(Oid(0)).unwrap().1, b"after crash")]).unwrap();
    assert!(t > last && t > fs.open_report().scan.max_tid);
}

#[test]
fn concurrent_readers_during_commits() {
    let dir = tempfile::tempdir().unwrap();
    let fs = std::sync::Arc::new(rw(&dir.path().join("Data.fs")));
    let mut serial = commit(&fs, &[(Oid(0), Tid::ZERO, b"0")]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (fs, stop) = (fs.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (d, _) = fs.load(Oid(0)).unwrap();
                    let n: u64 = std::str::from_utf8(&d).unwrap().parse().unwrap();
                    assert!(n >= last, "went back from {last} to {n}");
                    last = n;
                }
            })
        })
        .collect();
    for i in 1..300u64 {
        serial = commit(&fs, &[(Oid(0), serial, i.to_string().as_bytes())]).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(fs.load(Oid(0)).unwrap().0, Bytes::from_static(b"299"));
}

/// A crash during finish's fsync can leave the status byte on disk without
/// the data pages (the kernel orders writeback freely): a last transaction
/// that reads committed but whose records are garbage. Its finish never
/// returned, so it is a torn tail, saved to .tr0 and cut (ZODB cannot open
/// such a file at all). The same damage before the last transaction stays
/// an error.
#[test]
fn a_last_transaction_with_unwritten_data_is_a_torn_tail() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/history/Data.fs");
    let ro = FileStorage::open_read_only(&src).unwrap();
    let last = ro.txns_rev().next().unwrap().unwrap();
    drop(ro);
    let mut bytes = std::fs::read(&src).unwrap();
    let (dstart, dend) = (last.data_pos() as usize, last.data_end() as usize);
    bytes[dstart..dend].fill(0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    std::fs::write(&p, &bytes).unwrap();
    let ro = FileStorage::open_read_only(&p).unwrap();
    assert_eq!(ro.end_pos(), last.pos);
    assert!(matches!(
        ro.open_report().scan.tail,
        filestorage::scan::Tail::Torn { .. }
    ));
    drop(ro);
    let fs = rw(&p);
    let rec = fs.open_report().recovered.clone().unwrap();
    assert_eq!(rec.pos, last.pos);
    assert_eq!(
        std::fs::read(rec.saved_to.unwrap()).unwrap(),
        &bytes[last.pos as usize..]
    );
    drop(fs);
    // The same zeros in the transaction before the last: damage.
    let prev = FileStorage::open_read_only(&src)
        .unwrap()
        .txns_rev()
        .nth(1)
        .unwrap()
        .unwrap();
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[prev.data_pos() as usize..prev.data_end() as usize].fill(0);
    std::fs::write(&p, &bytes).unwrap();
    std::fs::remove_file(dir.path().join("Data.fs.index")).ok();
    assert!(matches!(
        FileStorage::open_read_only(&p),
        Err(filestorage::Error::Corrupt { .. })
    ));
}

/// A transaction bigger than the in-memory limit goes through
/// `Data.fs.tmp` and is copied into Data.fs in the kernel: every record
/// reads back whole, at its place, after the transactions around it, and
/// after a reopen that rebuilds the index from the file.
#[test]
fn a_spilled_transaction_is_copied_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let fs = rw(&p);
    let t1 = commit(&fs, &[(Oid(0), Tid::ZERO, b"root")]).unwrap();
    // 40 records of 1 MiB + 1 byte, each a different pattern: 40 MiB,
    // past the 32 MiB spill limit.
    let records: Vec<Vec<u8>> = (0..40u32)
        .map(|i| {
            (0..(1 << 20) + 1)
                .map(|j: u32| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 7) as u8)
                .collect()
        })
        .collect();
    let stores: Vec<(Oid, Tid, &[u8])> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (Oid(i as u64 + 1), Tid::ZERO, r.as_slice()))
        .collect();
    let t2 = commit(&fs, &stores).unwrap();
    let t3 = commit(&fs, &[(Oid(0), t1, b"root after")]).unwrap();
    // Emptied once its transaction is over.
    assert_eq!(
        std::fs::metadata(dir.path().join("Data.fs.tmp"))
            .unwrap()
            .len(),
        0
    );
    let check = |fs: &FileStorage| {
        for (i, r) in records.iter().enumerate() {
            let (data, serial) = fs.load(Oid(i as u64 + 1)).unwrap();
            assert_eq!(serial, t2);
            assert!(data == r.as_slice(), "record {i} differs");
        }
        assert_eq!(fs.load(Oid(0)).unwrap().1, t3);
    };
    check(&fs);
    drop(fs);
    std::fs::remove_file(dir.path().join("Data.fs.index")).ok();
    check(&rw(&p));
}

/// Two threads commit spilled transactions back to back through one
/// storage: the next transaction spills to the same `Data.fs.tmp` as soon
/// as it has the commit lock, so the previous one must have emptied it
/// before letting go, never after. Every record reads back whole.
#[test]
fn back_to_back_spilled_transactions_from_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let fs = rw(&p);
    commit(&fs, &[(Oid(0), Tid::ZERO, b"root")]).unwrap();
    // Each transaction: 34 records of 1 MiB, past the 32 MiB limit, oids
    // of its own, bytes that name their thread, round and record.
    let record = |t: u64, round: u64, i: u64| -> Vec<u8> {
        let seed = (t << 16) | (round << 8) | i;
        (0..1u64 << 20)
            .map(|j| (j.wrapping_mul(0x9E37_79B9).wrapping_add(seed) >> 5) as u8)
            .collect()
    };
    let oid = |t: u64, round: u64, i: u64| Oid(1 + t * 1000 + round * 100 + i);
    let fs = &fs;
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                for round in 0..3u64 {
                    let records: Vec<Vec<u8>> = (0..34).map(|i| record(t, round, i)).collect();
                    let stores: Vec<(Oid, Tid, &[u8])> = records
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (oid(t, round, i as u64), Tid::ZERO, r.as_slice()))
                        .collect();
                    commit(fs, &stores).unwrap();
                }
            });
        }
    });
    for t in 0..2 {
        for round in 0..3 {
            for i in 0..34 {
                let (data, _) = fs.load(oid(t, round, i)).unwrap();
                assert!(
                    data == record(t, round, i).as_slice(),
                    "thread {t} round {round} record {i} differs"
                );
            }
        }
    }
}
