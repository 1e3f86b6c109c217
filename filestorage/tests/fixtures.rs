//! The read side on the real databases in `../shared/fixtures`: every file
//! opens, with and without its Python-written `.index`, and both ways agree
//! on every object and revision.

use std::path::{Path, PathBuf};

use filestorage::index_file::{IndexCheck, IndexOrigin, RebuildReason};
use filestorage::scan::Tail;
use filestorage::{BackendKind, FileStorage, OpenOptions};
use zodb_core::{Oid, ReadStorage, Tid};

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{} is missing: CI must run the fixture tests", p.display());
    }
    eprintln!(
        "notice: {} not found; skipping shared-fixture tests",
        p.display()
    );
    None
}

fn databases(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["wendelin", "zodbtools/1", "zodbtools/1_nozext"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let d = e.unwrap().path();
            for name in ["zblk.fs", "data.fs"] {
                if d.join(name).exists() {
                    out.push(d.join(name));
                }
            }
        }
    }
    out.push(root.join("fs1/1.fs"));
    out.push(root.join("btree/1.fs"));
    out.sort();
    out
}

fn no_index() -> OpenOptions {
    OpenOptions {
        use_index: false,
        ..OpenOptions::default()
    }
}

#[test]
fn every_fixture_opens_the_same_with_and_without_its_index() {
    let Some(root) = shared() else { return };
    for path in databases(&root) {
        let with = FileStorage::open(
            &path,
            &OpenOptions {
                index_check: IndexCheck::Deep { txns: 100 },
                ..OpenOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            matches!(with.open_report().index, IndexOrigin::Loaded { .. }),
            "{}: saved index not used: {:?}",
            path.display(),
            with.open_report().index
        );
        let without = FileStorage::open(&path, &no_index()).unwrap();
        let pread = FileStorage::open(
            &path,
            &OpenOptions {
                backend: BackendKind::Pread,
                ..no_index()
            },
        )
        .unwrap();
        assert_eq!(with.oids(), without.oids(), "{}", path.display());
        assert_eq!(with.last_transaction(), without.last_transaction());
        assert_eq!(with.end_pos(), std::fs::metadata(&path).unwrap().len());
        assert_eq!(without.open_report().scan.tail, Tail::Clean);
        assert!(
            without.open_report().scan.warnings.is_empty(),
            "{:?}",
            without.open_report().scan.warnings
        );
        for (oid, _) in without.oids() {
            let a = with.load(oid).map_err(|e| e.to_string());
            let b = without.load(oid).map_err(|e| e.to_string());
            let c = pread.load(oid).map_err(|e| e.to_string());
            assert_eq!(a, b, "{} oid {oid}", path.display());
            assert_eq!(b, c);
            // Every revision the history names loads by serial, and
            // loadBefore(serial + 1) returns it.
            for h in with.history(oid, usize::MAX).unwrap() {
                let serial = h.txn.tid;
                match with.load_serial(oid, serial) {
                    Ok(data) => {
                        let rev = with.load_before(oid, serial.next()).unwrap().unwrap();
                        assert_eq!(rev.data, data);
                        assert_eq!(rev.serial, serial);
                    }
                    Err(e) => assert!(e.is_pos_key_error(), "{e}"),
                }
            }
        }
    }
}

#[test]
fn wendelin_roots_hold_the_described_objects() {
    let Some(root) = shared() else { return };
    for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
        let path = root.join("wendelin").join(kind).join("zblk.fs");
        let fs = FileStorage::open_read_only(&path).unwrap();
        assert_eq!(fs.object_count(), 72, "{kind}");
        let (data, _) = fs.load(Oid::ROOT).unwrap();
        assert_eq!(
            zodb_core::pickle::references(&data).unwrap(),
            vec![Oid(1), Oid(2), Oid(3)],
            "{kind}"
        );
        let (m, c) = zodb_core::pickle::class_name(&fs.load(Oid(2)).unwrap().0);
        assert_eq!(
            (m.as_str(), c.as_str()),
            ("wendelin.bigfile.file_zodb", "ZBlk0")
        );
    }
}

#[test]
fn iteration_matches_history_of_the_fs1_fixture() {
    let Some(root) = shared() else { return };
    let fs = FileStorage::open_read_only(root.join("fs1/1.fs")).unwrap();
    let txns: Vec<_> = fs
        .iter_transactions(None, None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(txns.len(), 59);
    assert!(txns.windows(2).all(|w| w[0].info.tid < w[1].info.tid));
    assert_eq!(txns.last().unwrap().info.tid, fs.last_transaction());
    // Bounds are inclusive, like ZODB's iterator(start, stop).
    let (a, b) = (txns[10].info.tid, txns[20].info.tid);
    let part: Vec<_> = fs
        .iter_transactions(Some(a), Some(b))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(part.len(), 11);
    assert_eq!(part, txns[10..=20].to_vec());
    let none: Vec<_> = fs
        .iter_transactions(Some(Tid(b.0 + 1)), Some(b))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(none.is_empty());
    // Undo records report data through back pointers and data_txn.
    let undone: Vec<_> = txns
        .iter()
        .flat_map(|t| &t.records)
        .filter(|r| r.data_txn.is_some())
        .collect();
    assert!(!undone.is_empty());
    let deleted = txns
        .iter()
        .flat_map(|t| &t.records)
        .filter(|r| r.data.is_none())
        .count();
    assert!(deleted > 0);
}

#[test]
fn voted_tail_is_not_committed_and_nothing_is_written() {
    let Some(root) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1.fs");
    let mut bytes = std::fs::read(root.join("fs1/1.fs")).unwrap();
    let committed = bytes.len() as u64;
    let tail = std::fs::read(root.join("fs1/1voted.tail")).unwrap();
    bytes.extend_from_slice(&tail);
    std::fs::write(&path, &bytes).unwrap();
    let fs = FileStorage::open_read_only(&path).unwrap();
    assert_eq!(fs.end_pos(), committed);
    let Tail::Voted { pos, tid } = fs.open_report().scan.tail else {
        panic!(
            "expected a voted tail, got {:?}",
            fs.open_report().scan.tail
        )
    };
    assert_eq!(pos, committed);
    assert!(tid > fs.last_transaction());
    assert_eq!(fs.open_report().scan.max_tid, tid);
    assert_eq!(fs.txns().count(), 59);
    assert!(matches!(
        fs.open_report().index,
        IndexOrigin::Rebuilt {
            reason: RebuildReason::Missing
        }
    ));
    drop(fs);
    // Read-only: no .index, no .lock, no .tr0, and the file is unchanged.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("1.fs")]);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn empty_fixture_is_an_empty_storage() {
    let Some(root) = shared() else { return };
    let fs = FileStorage::open_read_only(root.join("fs1/empty.fs")).unwrap();
    assert_eq!(fs.object_count(), 0);
    assert_eq!(fs.last_transaction(), Tid::ZERO);
    assert!(fs.load(Oid::ROOT).unwrap_err().is_pos_key_error());
    assert_eq!(fs.txns().count(), 0);
}
