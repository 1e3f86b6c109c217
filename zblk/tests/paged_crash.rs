//! A pager commit cut by a crash at every point of its write stream: the
//! blocks of a transaction whose status flip did not reach the file are
//! gone after recovery and the array reads as it was before, whole; once
//! the flip is there, it reads as committed. A crash between vote and
//! finish is one of the cuts.
//!
//! The write stream is recorded by FileStorage's write observer and
//! replayed onto the file as it was before the commit
//! (`filestorage/tests/crash_util`, shared by path).

#[path = "../../filestorage/tests/crash_util/mod.rs"]
mod crash_util;

use std::path::Path;
use std::sync::Arc;

use crash_util::{Event, Recorder, apply, observed};
use filestorage::{FileStorage, OpenOptions};
use pager::Options;
use zblk::array::ZBigArray;
use zblk::format::Order;
use zblk::paged::{PagedArray, PagedOptions};
use zblk::write::{ArraySpec, WriteFormat, Writer, WriterOptions};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, TxnMeta};

const BLK: u64 = 64 << 10;
const N: u64 = 40_000;

fn opts() -> PagedOptions {
    PagedOptions {
        pager: Options::with_budget(4 << 20),
        reserve: 1 << 30,
        format: WriteFormat::Auto,
    }
}

/// The array's bytes as the reader (not the pager) sees the file.
fn contents(path: &Path, oid: Oid) -> Vec<u8> {
    let fs = FileStorage::open_read_only(path).unwrap();
    let a = ZBigArray::open(Snapshot::latest(&fs), oid).unwrap();
    let mut buf = vec![0u8; a.nbytes() as usize];
    a.read_into(Order::C, &mut buf).unwrap();
    buf
}

#[test]
fn a_torn_pager_commit_recovers_to_the_previous_state() {
    if let Err(e) = pager::probe() {
        eprintln!("SKIP a_torn_pager_commit_recovers_to_the_previous_state: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    // State 1: an array with some blocks, committed through the pager.
    let oid = {
        let fs = Arc::new(
            FileStorage::open(
                &db,
                &OpenOptions {
                    create: true,
                    ..OpenOptions::read_write()
                },
            )
            .unwrap(),
        );
        let mut w = Writer::open(&*fs, WriterOptions::default(), None).unwrap();
        let dtype =
            zblk::dtype::DType::from_descr(&zblk::npy::parse_descr("'<f8'").unwrap()).unwrap();
        let a = w
            .create_array(
                "a",
                ArraySpec {
                    dtype,
                    shape: vec![N],
                    order: Order::C,
                    blksize: BLK,
                },
            )
            .unwrap();
        w.commit(TxnMeta::default()).unwrap();
        let oid = w.oid_of(a).unwrap();
        drop(w);
        let mut p = PagedArray::open(fs, oid, opts()).unwrap();
        p.view_major_mut::<f64>(0..20_000)
            .unwrap()
            .array()
            .fill(1.0);
        p.commit(TxnMeta::default()).unwrap();
        oid
    };
    let state1 = contents(&db, oid);
    let before = std::fs::read(&db).unwrap();

    // State 2: changed blocks, new blocks, a resize, through a recorded
    // storage.
    let rec = Arc::new(Recorder::default());
    {
        let fs = Arc::new(FileStorage::open(&db, &observed(&rec)).unwrap());
        let mut p = PagedArray::open(fs, oid, opts()).unwrap();
        p.view_major_mut::<f64>(100..9_000)
            .unwrap()
            .array()
            .fill(2.0);
        p.append(&[3.0; 5_000]).unwrap();
        p.source().set_format(WriteFormat::ZBlk1);
        p.commit(TxnMeta::default()).unwrap();
    }
    let state2 = contents(&db, oid);
    assert_ne!(state1, state2);
    let events = rec.events();
    let flip = events
        .iter()
        .rposition(|e| matches!(e, Event::Write { .. }))
        .unwrap();
    assert!(
        matches!(
            events.get(flip + 1..),
            Some([Event::Sync, Event::Committed(_), ..])
        ),
        "the status flip is the last write, synced before finish returns: {events:?}"
    );

    // Every cut: at each event boundary, and at 16 points inside each
    // write (the transaction goes out in one write at vote).
    let mut cuts = Vec::new();
    let mut image = before.clone();
    for (k, e) in events.iter().enumerate() {
        if let Event::Write { pos, data } = e {
            for part in 1..16 {
                let cut = data.len() * part / 16;
                if cut == 0 {
                    continue;
                }
                let mut torn = image.clone();
                apply(
                    &mut torn,
                    &Event::Write {
                        pos: *pos,
                        data: data[..cut].to_vec(),
                    },
                );
                cuts.push((format!("event {k} cut at {cut}"), torn, k > flip));
            }
        }
        apply(&mut image, e);
        cuts.push((format!("after event {k} ({e:?})"), image.clone(), k >= flip));
    }
    assert!(cuts.len() >= 19, "{} cuts", cuts.len());
    for (i, (label, bytes, committed)) in cuts.iter().enumerate() {
        let d = dir.path().join(format!("cut{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("Data.fs");
        std::fs::write(&path, bytes).unwrap();
        // A read-write open recovers (cuts a voted or torn tail).
        drop(
            FileStorage::open(&path, &OpenOptions::read_write())
                .unwrap_or_else(|e| panic!("{label}: {e}")),
        );
        let got = contents(&path, oid);
        let want = if *committed { &state2 } else { &state1 };
        assert!(got == *want, "{label}: the array is neither whole state");
        // And the pager sees the same.
        let fs = Arc::new(FileStorage::open_read_only(&path).unwrap());
        let last = fs.last_transaction();
        let p = PagedArray::open(fs, oid, opts()).unwrap();
        assert_eq!(p.snapshot(), last);
        assert_eq!(
            p.file_bytes(0..want.len()).unwrap(),
            &want[..],
            "{label}: pager"
        );
    }
}
