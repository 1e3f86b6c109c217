//! ZBigArrays on the pager against Python: what the pager commits is, byte
//! for byte, what wendelin.core (the Python stand-ins over ZODB 6.4 and
//! BTrees) writes for the same transactions; Python reads it back; abort
//! leaves the file untouched; two arrays on one storage keep their
//! snapshots until their next transaction boundary and conflict on a
//! block both changed.
//!
//! Needs userfaultfd (skipped with a notice without it; CI runs as root)
//! and, for the Python comparisons, the venv Python (skipped with a notice
//! outside CI).

mod writer;

use std::path::Path;
use std::sync::Arc;

use filestorage::{FileStorage, OpenOptions};
use pager::Options;
use writer::{Op, Rng, Script, compare, oracle};
use zblk::format::Order;
use zblk::paged::{PagedArray, PagedError, PagedOptions};
use zblk::write::{WriteFormat, Writer, WriterOptions};
use zodb_core::{Oid, ReadStorage, TxnMeta};

const BLK: u64 = 64 << 10;

fn uffd(test: &str) -> bool {
    match pager::probe() {
        Ok(_) => true,
        Err(e) => {
            // The pager's own tests fail in CI without it; here a notice
            // suffices.
            eprintln!("SKIP {test}: {e}");
            false
        }
    }
}

fn opts() -> PagedOptions {
    PagedOptions {
        pager: Options::with_budget(4 << 20),
        reserve: 1 << 30,
        format: WriteFormat::Auto,
    }
}

fn bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

fn f64s(data: &[u8]) -> Vec<f64> {
    data.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The transactions after the creation: writes through memory in each
/// format, a resize that uncovers a block written in the same
/// transaction, an append, a shrink.
fn script() -> Script {
    script_for(vec![30_000], Order::C, 1)
}

/// [`script`] for an array of `shape` (its major axis grown by the
/// append) in `order`; `rows` is the product of the other dimensions.
fn script_for(shape: Vec<u64>, order: Order, rows: u64) -> Script {
    let mut rng = Rng(0x5EED_0007);
    let mut grown = shape.clone();
    let major = if order == Order::C {
        0
    } else {
        shape.len() - 1
    };
    grown[major] = 40_000 / rows;
    let mut shrunk = shape.clone();
    shrunk[major] = 10_000 / rows;
    let key = "a".to_string();
    let w = |offset: u64, data: Vec<u8>| Op::Write {
        key: key.clone(),
        offset,
        data,
    };
    Script {
        txns: vec![
            vec![Op::Create {
                key: key.clone(),
                shape,
                descr: "'<f8'".into(),
                order,
                blksize: BLK,
            }],
            vec![
                Op::Format(WriteFormat::ZBlk0),
                w(0, bytes(&mut rng, 100_000)),
            ],
            vec![
                Op::Format(WriteFormat::Auto),
                w(70_000, bytes(&mut rng, 100)),
                w(150_000, bytes(&mut rng, 5_000)),
            ],
            vec![
                Op::Format(WriteFormat::ZBlk1),
                w(200_000, bytes(&mut rng, 30_000)),
            ],
            vec![
                Op::Format(WriteFormat::ZBlk0),
                Op::Resize {
                    key: key.clone(),
                    shape: grown,
                },
                w(300_000, bytes(&mut rng, 16)),
            ],
            vec![Op::Append {
                key: key.clone(),
                data: bytes(&mut rng, 8 * 1_000 * rows as usize),
            }],
            vec![Op::Resize {
                key: key.clone(),
                shape: shrunk,
            }],
        ],
        protocol: None,
        continue_at: None,
    }
}

/// Runs `script`'s first transaction through the writer (creating the
/// array is not the pager's business) and the others through a
/// [`PagedArray`], each at the script's tid.
fn run_paged(script: &Script, db: &Path) {
    let fs = Arc::new(
        FileStorage::open(
            db,
            &OpenOptions {
                create: true,
                ..OpenOptions::read_write()
            },
        )
        .unwrap(),
    );
    let tids = script.tids();
    let oid = {
        let mut w = Writer::open(&*fs, WriterOptions::default(), Some(tids[0])).unwrap();
        Script {
            txns: script.txns[..1].to_vec(),
            ..script.clone()
        }
        .apply(&mut w, &tids[1..2]);
        w.root_get("a").unwrap().unwrap()
    };
    let mut a = PagedArray::open(Arc::clone(&fs), oid, opts()).unwrap();
    for (i, txn) in script.txns.iter().enumerate().skip(1) {
        for op in txn {
            match op {
                Op::Format(f) => a.source().set_format(*f),
                Op::Write { offset, data, .. } => {
                    let at = *offset as usize;
                    a.file_bytes_mut(at..at + data.len())
                        .unwrap()
                        .copy_from_slice(data);
                }
                Op::Resize { shape, .. } => a.resize(shape).unwrap(),
                Op::Append { data, .. } => a.append(&f64s(data)).unwrap(),
                other => panic!("not a pager operation: {other:?}"),
            }
        }
        a.source().set_next_tid(Some(tids[i + 1]));
        a.commit(TxnMeta::default())
            .unwrap_or_else(|e| panic!("commit {i}: {e}"));
    }
}

#[test]
fn pager_commits_what_python_writes() {
    if !uffd("pager_commits_what_python_writes") {
        return;
    }
    let Some(py) = zodb_it::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = script();
    let ops = script.save(dir.path());
    let theirs = dir.path().join("python.fs");
    let ours = dir.path().join("ours.fs");
    oracle(
        &py,
        &["apply", ops.to_str().unwrap(), theirs.to_str().unwrap()],
    );
    run_paged(&script, &ours);
    let (txns, records) = compare(&theirs, &ours, "pager");
    assert_eq!(txns, script.txns.len() + 1);
    assert!(records > 10, "{records} records compared");
    let out = oracle(
        &py,
        &["verify", ops.to_str().unwrap(), ours.to_str().unwrap()],
    );
    assert!(out.starts_with("ok "), "verify printed {out}");
}

/// The pager reads what Python wrote: every view equals the array
/// `ZBigArray::read_into` (checked against Python by the reader's tests).
#[test]
fn pager_reads_what_python_wrote() {
    if !uffd("pager_reads_what_python_wrote") {
        return;
    }
    let Some(py) = zodb_it::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = script();
    let ops = script.save(dir.path());
    let db = dir.path().join("python.fs");
    oracle(&py, &["apply", ops.to_str().unwrap(), db.to_str().unwrap()]);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    oracle(
        &py,
        &["readall", db.to_str().unwrap(), out.to_str().unwrap()],
    );
    let expect = f64s(&std::fs::read(out.join("a.bin")).unwrap());
    let fs = Arc::new(FileStorage::open_read_only(&db).unwrap());
    let oid = root_array(&fs, "a");
    // Read-only storages serve loads; the pager never stores here.
    let a = PagedArray::open(fs, oid, opts()).unwrap();
    assert_eq!(a.shape(), &[10_000]);
    let v = a.view::<f64>().unwrap();
    assert_eq!(v.len(), expect.len());
    assert!(
        v.iter()
            .zip(&expect)
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
    let part = a.view_major::<f64>(1_000..2_500).unwrap();
    assert!(
        part.iter()
            .zip(&expect[1_000..2_500])
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
    assert!(matches!(a.view::<f32>(), Err(PagedError::DType { .. })));
    assert!(matches!(
        a.view_major::<f64>(9_000..10_001),
        Err(PagedError::Invalid { .. })
    ));
}

fn root_array(fs: &FileStorage, key: &str) -> Oid {
    // The writer reads the root mapping for us; it writes nothing unless
    // asked to commit.
    let w = Writer::open(fs, WriterOptions::default(), None);
    match w {
        Ok(mut w) => w.root_get(key).unwrap().unwrap(),
        Err(e) => panic!("root of {}: {e}", fs.name()),
    }
}

fn new_db(dir: &Path, shape: u64) -> (Arc<FileStorage>, Oid) {
    let fs = Arc::new(
        FileStorage::open(
            dir.join("Data.fs"),
            &OpenOptions {
                create: true,
                ..OpenOptions::read_write()
            },
        )
        .unwrap(),
    );
    let mut w = Writer::open(&*fs, WriterOptions::default(), None).unwrap();
    let dtype = zblk::dtype::DType::from_descr(&zblk::npy::parse_descr("'<f8'").unwrap()).unwrap();
    let a = w
        .create_array(
            "a",
            zblk::write::ArraySpec {
                dtype,
                shape: vec![shape],
                order: Order::C,
                blksize: BLK,
            },
        )
        .unwrap();
    w.commit(TxnMeta::default()).unwrap();
    let oid = w.oid_of(a).unwrap();
    (fs, oid)
}

#[test]
fn abort_leaves_the_file_untouched() {
    if !uffd("abort_leaves_the_file_untouched") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (fs, oid) = new_db(dir.path(), 50_000);
    let mut a = PagedArray::open(Arc::clone(&fs), oid, opts()).unwrap();
    a.view_mut::<f64>().unwrap().array().fill(2.5);
    let t1 = a.commit(TxnMeta::default()).unwrap();
    let size = std::fs::metadata(dir.path().join("Data.fs")).unwrap().len();
    a.view_mut::<f64>().unwrap().array().fill(-1.0);
    a.append(&[7.0; 10]).unwrap();
    assert_eq!(a.shape(), &[50_010]);
    let t2 = a.abort().unwrap();
    assert_eq!(t2, t1);
    assert_eq!(fs.last_transaction(), t1);
    assert_eq!(
        std::fs::metadata(dir.path().join("Data.fs")).unwrap().len(),
        size
    );
    assert_eq!(a.shape(), &[50_000]);
    assert!(a.view::<f64>().unwrap().iter().all(|&x| x == 2.5));
}

#[test]
fn snapshots_hold_until_the_next_boundary_and_same_block_conflicts() {
    if !uffd("snapshots_hold_until_the_next_boundary_and_same_block_conflicts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (fs, oid) = new_db(dir.path(), 40_000);
    let mut a = PagedArray::open(Arc::clone(&fs), oid, opts()).unwrap();
    let mut b = PagedArray::open(Arc::clone(&fs), oid, opts()).unwrap();
    // b touches everything at the first snapshot.
    assert!(b.view::<f64>().unwrap().iter().all(|&x| x == 0.0));
    a.view_major_mut::<f64>(0..100).unwrap().array().fill(1.0);
    a.append(&[3.0; 8]).unwrap();
    let t1 = a.commit(TxnMeta::default()).unwrap();
    // b keeps its snapshot: old data, old shape.
    assert_eq!(b.shape(), &[40_000]);
    assert_eq!(b.view::<f64>().unwrap()[[0]], 0.0);
    assert_eq!(b.sync().unwrap(), t1);
    assert_eq!(b.shape(), &[40_008]);
    assert_eq!(b.view::<f64>().unwrap()[[0]], 1.0);
    assert_eq!(b.view::<f64>().unwrap()[[40_007]], 3.0);

    // Both change block 0 in concurrent transactions: the second commit
    // conflicts and stores nothing; a block only b changed commits.
    a.view_major_mut::<f64>(0..1).unwrap().array().fill(10.0);
    b.view_major_mut::<f64>(1..2).unwrap().array().fill(20.0);
    let t2 = a.commit(TxnMeta::default()).unwrap();
    match b.commit(TxnMeta::default()) {
        Err(PagedError::Pager(pager::Error::Conflict { block, .. })) => assert_eq!(block, 0),
        other => panic!("expected a conflict on block 0, got {other:?}"),
    }
    assert_eq!(fs.last_transaction(), t2);
    b.abort().unwrap();
    assert_eq!(b.view::<f64>().unwrap()[[0]], 10.0);
    assert_eq!(b.view::<f64>().unwrap()[[1]], 1.0);
    let far = (3 * BLK / 8) as usize;
    b.view_mut::<f64>().unwrap().array()[[far]] = 5.0;
    let t3 = b.commit(TxnMeta::default()).unwrap();
    assert!(t3 > t2);
    a.sync().unwrap();
    assert_eq!(a.view::<f64>().unwrap()[[far]], 5.0);
    assert_eq!(a.view::<f64>().unwrap()[[0]], 10.0);
}

/// Threads fault random ranges of one array (a budget small enough to
/// evict under them) while another array on the same storage commits;
/// every value read is what the committed history says at the reader's
/// snapshot, and after `sync` the readers move to the newest one.
#[test]
fn threads_read_one_snapshot_while_another_array_commits() {
    if !uffd("threads_read_one_snapshot_while_another_array_commits") {
        return;
    }
    const BLOCKS: u64 = 16;
    let per_block = (BLK / 8) as usize;
    let n = BLOCKS * BLK / 8;
    let dir = tempfile::tempdir().unwrap();
    let (fs, oid) = new_db(dir.path(), n);
    let small = PagedOptions {
        pager: Options::with_budget(4 * BLK as usize),
        ..opts()
    };
    let mut a = PagedArray::open(Arc::clone(&fs), oid, small.clone()).unwrap();
    let mut b = PagedArray::open(Arc::clone(&fs), oid, small).unwrap();
    // block → [(tid, value)]: every element of the block holds the value.
    let mut history: Vec<Vec<(zodb_core::Tid, f64)>> = vec![Vec::new(); BLOCKS as usize];
    let value_at = |h: &Vec<Vec<(zodb_core::Tid, f64)>>, blk: usize, at: zodb_core::Tid| {
        h[blk]
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map_or(0.0, |&(_, v)| v)
    };
    let mut rng = Rng(0x57_4E55);
    for round in 1..=8u64 {
        let at = a.snapshot();
        let expected: Vec<f64> = (0..BLOCKS as usize)
            .map(|blk| value_at(&history, blk, at))
            .collect();
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let arr = &a;
                let expected = &expected;
                s.spawn(move || {
                    let mut r = Rng(0xABCD ^ (round << 8) ^ t);
                    for _ in 0..40 {
                        let blk = r.below(BLOCKS) as usize;
                        let start = (blk * per_block + r.below(per_block as u64) as usize) as u64;
                        let len = 1 + r.below(2 * per_block as u64);
                        let end = (start + len).min(n);
                        let v = arr.view_major::<f64>(start..end).unwrap();
                        for (i, x) in v.iter().enumerate() {
                            let b = (start as usize + i) / per_block;
                            assert_eq!(*x, expected[b], "round {round}: block {b} at {at}");
                        }
                    }
                });
            }
            // Meanwhile another array changes random blocks and commits.
            for _ in 0..3 {
                let blk = rng.below(BLOCKS);
                let v = (round * 100 + blk) as f64;
                let lo = blk * per_block as u64;
                b.view_major_mut::<f64>(lo..lo + per_block as u64)
                    .unwrap()
                    .array()
                    .fill(v);
                let tid = b.commit(TxnMeta::default()).unwrap();
                history[blk as usize].push((tid, v));
            }
        });
        let now = a.sync().unwrap();
        assert_eq!(now, fs.last_transaction());
        let v = a.view::<f64>().unwrap();
        for blk in 0..BLOCKS as usize {
            assert_eq!(
                v[[blk * per_block]],
                value_at(&history, blk, now),
                "after sync"
            );
        }
    }
}
