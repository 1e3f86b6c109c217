//! Pack against Python ZODB: for the same file and pack time, the packed
//! file is byte-identical, with and without garbage collection; redundant
//! packs and packs that free nothing leave the file alone in both.

use std::path::Path;

use filestorage::pack::PackOutcome;
use filestorage::{FileStorage, OpenOptions};
use serde_json::Value;
use zodb_core::{ReadStorage, TimeStamp};

fn python_pack(path: &Path, t: f64, gc: bool) -> Value {
    let ts = format!("{t}");
    let mut args = vec!["pack".to_owned()];
    if !gc {
        args.push("--no-gc".into());
    }
    args.push(path.to_string_lossy().into_owned());
    args.push(ts);
    serde_json::from_slice(&zodb_it::reftool(&args).stdout).unwrap()
}

/// Packs a copy of `src` with Python and another with us; compares.
fn compare(src: &Path, t: f64, gc: bool) -> PackOutcome {
    let theirs = zodb_it::TempCopy::new(src);
    let ours = zodb_it::TempCopy::new(src);
    let py = python_pack(theirs.path(), t, gc);
    let fs = FileStorage::open(ours.path(), &OpenOptions::read_write()).unwrap();
    let outcome = fs.pack(TimeStamp::from_unix(t).unwrap().tid(), gc);
    drop(fs);
    let what = format!("{} packed at {t} (gc={gc})", src.display());
    match (&outcome, py.get("error")) {
        (Ok(_), None) => {}
        (Err(e), Some(name)) => {
            // Both refuse; the file is left unchanged by both.
            eprintln!("{what}: both fail: python {name}, ours {e}");
            assert_eq!(
                std::fs::read(theirs.path()).unwrap(),
                std::fs::read(src).unwrap()
            );
        }
        (a, b) => panic!("{what}: ours {a:?}, python {b:?} ({py})"),
    }
    let old = |p: &Path| filestorage::file::sibling(p, ".old").exists();
    assert_eq!(old(theirs.path()), old(ours.path()), "{what}: .old");
    zodb_it::assert_text_eq(
        std::fs::read(theirs.path()).unwrap(),
        std::fs::read(ours.path()).unwrap(),
        &what,
    );
    // The packed file opens, its index matches a scan, and Python agrees.
    let ro = FileStorage::open_read_only(ours.path()).unwrap();
    assert!(
        matches!(
            ro.open_report().index,
            filestorage::index_file::IndexOrigin::Loaded { .. }
        ),
        "{what}: index not saved"
    );
    let _ = ro.last_transaction();
    outcome.unwrap_or(PackOutcome::NothingToFree)
}

fn tids_as_times(path: &Path) -> Vec<f64> {
    let fs = FileStorage::open_read_only(path).unwrap();
    fs.txns()
        .map(|t| t.unwrap().tid().timestamp().time_time())
        .collect()
}

#[test]
fn packing_the_history_equals_zodb() {
    let Some(_) = zodb_it::python() else { return };
    let src = zodb_it::project_fixtures().join("history/Data.fs");
    let times = tids_as_times(&src);
    let mut packed = 0;
    for frac in [0.1, 0.35, 0.6, 0.9, 1.0] {
        let i = ((times.len() - 1) as f64 * frac) as usize;
        let t = times[i] + 0.0001;
        for gc in [true, false] {
            if let PackOutcome::Packed { .. } = compare(&src, t, gc) {
                packed += 1;
            }
        }
    }
    assert!(packed >= 6, "only {packed} packs did anything");
}

#[test]
fn packing_a_packed_file_equals_zodb() {
    let Some(_) = zodb_it::python() else { return };
    let src = zodb_it::project_fixtures().join("packed/Data.fs");
    let times = tids_as_times(&src);
    for t in [
        times[0] - 10.0,
        times[10],
        times[times.len() / 2] + 0.0001,
        times[times.len() - 1] + 1.0,
    ] {
        for gc in [true, false] {
            compare(&src, t, gc);
        }
    }
    // Packing everything twice (without gc: this history references a
    // deleted object, which gc refuses, as ZODB does): the second pack is
    // redundant. Packing twice to a middle time frees nothing the second time.
    let copy = zodb_it::TempCopy::new(&src);
    let fs = FileStorage::open(copy.path(), &OpenOptions::read_write()).unwrap();
    let end = TimeStamp::from_unix(times[times.len() - 1] + 1.0)
        .unwrap()
        .tid();
    assert!(matches!(
        fs.pack(end, false).unwrap(),
        PackOutcome::Packed { .. }
    ));
    let size = std::fs::metadata(copy.path()).unwrap().len();
    assert_eq!(fs.pack(end, false).unwrap(), PackOutcome::Redundant);
    assert_eq!(std::fs::metadata(copy.path()).unwrap().len(), size);
    let copy = zodb_it::TempCopy::new(&src);
    let fs = FileStorage::open(copy.path(), &OpenOptions::read_write()).unwrap();
    let mid = TimeStamp::from_unix(times[times.len() / 2] + 0.0001)
        .unwrap()
        .tid();
    assert!(matches!(
        fs.pack(mid, true).unwrap(),
        PackOutcome::Packed { .. }
    ));
    assert_eq!(fs.pack(mid, true).unwrap(), PackOutcome::NothingToFree);
}

#[test]
fn packing_the_shared_databases_equals_zodb() {
    let Some(_) = zodb_it::python() else { return };
    let Some(shared) = zodb_it::shared_fixtures() else {
        return;
    };
    for p in [
        "zodbtools/1/py3_pickle3/data.fs",
        "wendelin/py3_pickle3/zblk.fs",
        "zodbtools/1_nozext/py3_pickle3/data.fs",
    ] {
        let src = shared.join(p);
        let times = tids_as_times(&src);
        for t in [
            times[times.len() / 2] + 0.0001,
            times[times.len() - 1] + 1.0,
        ] {
            for gc in [true, false] {
                compare(&src, t, gc);
            }
        }
    }
}

#[test]
fn commits_go_on_while_packing() {
    use bytes::Bytes;
    use zodb_core::storage::TpcTxn;
    use zodb_core::{Oid, TxnMeta};

    let src = zodb_it::project_fixtures().join("history/Data.fs");
    let times = tids_as_times(&src);
    let copy = zodb_it::TempCopy::new(&src);
    let fs =
        std::sync::Arc::new(FileStorage::open(copy.path(), &OpenOptions::read_write()).unwrap());
    let oid = fs.new_oids(1).unwrap()[0];
    let writer = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let mut serial = zodb_core::Tid::ZERO;
            for i in 0..60u32 {
                let mut t = fs.begin(TxnMeta::default()).unwrap();
                // A valid pickle: class builtins.object, state an int.
                let data = [
                    b"\x80\x03cbuiltins\nobject\nq\x00.\x80\x03J".as_slice(),
                    &i.to_le_bytes(),
                    b".",
                ]
                .concat();
                t.store(oid, serial, Bytes::from(data)).unwrap();
                t.vote().unwrap();
                serial = Box::new(t).finish().unwrap();
            }
            serial
        })
    };
    let t = TimeStamp::from_unix(times[times.len() / 2] + 0.0001)
        .unwrap()
        .tid();
    let outcome = fs.pack(t, false).unwrap();
    let last = writer.join().unwrap();
    assert!(matches!(outcome, PackOutcome::Packed { .. }), "{outcome:?}");
    assert_eq!(fs.load(oid).unwrap().1, last);
    assert_eq!(fs.load(Oid::ROOT).unwrap().0, {
        let orig = FileStorage::open_read_only(&src).unwrap();
        orig.load(Oid::ROOT).unwrap().0
    });
    assert_eq!(fs.history(oid, 100).unwrap().len(), 60);
    drop(fs);
    if zodb_it::python().is_some() {
        let out = zodb_it::reftool(["fstest".as_ref(), copy.path().as_os_str()]);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
