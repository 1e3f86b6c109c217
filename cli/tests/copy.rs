//! `zodbrs copy`: the copy of every fixture database written by Python is
//! the source byte for byte (FS21 magic included), and the same bytes as
//! ZODB's own `copyTransactionsFrom` writes; out-of-order tids are retimed
//! as ZODB does; a destination holding a database is never overwritten by
//! accident, and a file is never copied onto itself.

use std::ffi::OsStr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use filestorage::format::Magic;
use filestorage::{Durability, FileStorage, OpenOptions};
use zodb_core::notify::{CommitHub, CommitWatch};
use zodb_core::storage::{DataRecord, HistoryEntry, Revision, Transaction, TxnIter};
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TxnInfo, TxnMeta, TxnStatus};
use zodbrs::tools::copy::{CopyError, CopyOptions, Retimed, copy_file, copy_transactions};
use zodbrs::tools::zodbdump::{DumpOptions, zodbdump};

mod run;
use run::zodbrs;

fn copy(src: &Path, dst: &Path, opts: CopyOptions) -> Result<(), CopyError> {
    copy_file(src, dst, opts, &mut std::io::sink(), &mut |_, _| {}).map(|_| ())
}

fn dump(path: &Path) -> Vec<u8> {
    let fs = FileStorage::open_read_only(path).unwrap();
    let mut out = Vec::new();
    zodbdump(
        &fs,
        None,
        None,
        DumpOptions::default(),
        &mut out,
        &mut |_| {},
    )
    .unwrap();
    out
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("zodbrs-copy-")
        .tempdir()
        .unwrap()
}

/// The byte ranges of the `prev` fields of `path`'s data records that
/// hold 0 although the object has an earlier record in the file: what
/// ZODB's pack leaves (it writes a kept revision with no previous one even
/// when an older revision stays for an undo's back pointer), and what no
/// commit, and so no copy, can reproduce.
fn packed_prev_fields(path: &Path) -> Vec<Range<usize>> {
    let fs = FileStorage::open_read_only(path).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for t in fs.txns() {
        let t = t.unwrap();
        for r in fs.data_records(&t) {
            let r = r.unwrap();
            if r.header.prev == 0 && seen.contains(&r.header.oid) {
                let at = r.pos as usize + 16;
                out.push(at..at + 8);
            }
            seen.insert(r.header.oid);
        }
    }
    out
}

/// Every fixture database made by Python, copied, is the source byte for
/// byte, except the prev pointers a pack zeroed (only the `packed`
/// fixture has any); and the copy dumps the same.
#[test]
fn copy_is_the_source_byte_for_byte() {
    let dir = scratch();
    let mut fs21 = 0;
    let mut packed = Vec::new();
    for (i, src) in zodb_it::all_databases().iter().enumerate() {
        let dst = dir.path().join(format!("{i}.fs"));
        copy(src, &dst, CopyOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        let (a, b) = (zodb_it::read(src), zodb_it::read(&dst));
        fs21 += usize::from(a.starts_with(b"FS21"));
        assert_eq!(a.len(), b.len(), "{}", src.display());
        if a != b {
            let allowed = packed_prev_fields(src);
            for (at, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    x == y || allowed.iter().any(|r| r.contains(&at)),
                    "{}: copy differs at byte {at}, outside a prev pointer zeroed by pack",
                    src.display()
                );
            }
            packed.push(src.clone());
        }
        zodb_it::assert_text_eq(
            dump(src),
            dump(&dst),
            &format!("dump of the copy of {}", src.display()),
        );
    }
    assert_eq!(
        packed,
        vec![zodb_it::project_fixtures().join("packed/Data.fs")]
    );
    if zodb_it::shared_fixtures().is_some() {
        assert!(fs21 >= 10, "the FS21 fixtures were copied: {fs21}");
    }
}

/// ZODB's `copyTransactionsFrom`, run by the oracle on the same sources,
/// writes exactly our bytes (the `packed` fixture included: the prev
/// pointers are the restore's in both).
#[test]
fn zodb_copy_writes_the_same_bytes() {
    if zodb_it::python().is_none() {
        return;
    }
    let dir = scratch();
    for (i, src) in zodb_it::all_databases().iter().enumerate() {
        let ours = dir.path().join(format!("{i}.fs"));
        let theirs = dir.path().join(format!("{i}-py.fs"));
        copy(src, &ours, CopyOptions::default()).unwrap();
        zodb_it::reftool([OsStr::new("copy"), src.as_os_str(), theirs.as_os_str()]);
        assert!(
            zodb_it::read(&ours) == zodb_it::read(&theirs),
            "{}: our copy and ZODB's differ",
            src.display()
        );
    }
}

/// `--magic` changes the first 4 bytes and nothing else (ZODB's copy of an
/// FS21 file into a Python 3 FileStorage is this, with FS30).
#[test]
fn magic_override_changes_only_the_magic() {
    let src = zodb_it::project_fixtures().join("history/Data.fs");
    let dir = scratch();
    let dst = dir.path().join("Data.fs");
    let opts = CopyOptions {
        magic: Some(Magic::Fs21),
        ..CopyOptions::default()
    };
    copy(&src, &dst, opts).unwrap();
    let (a, b) = (zodb_it::read(&src), zodb_it::read(&dst));
    assert_eq!(&b[..4], b"FS21");
    assert_eq!(a[4..], b[4..]);
}

#[test]
fn a_database_is_not_overwritten_unless_forced() {
    let fx = zodb_it::project_fixtures();
    let dir = scratch();
    let dst = dir.path().join("Data.fs");
    copy(&fx.join("history/Data.fs"), &dst, CopyOptions::default()).unwrap();
    let before = zodb_it::read(&dst);
    let e = copy(&fx.join("packed/Data.fs"), &dst, CopyOptions::default()).unwrap_err();
    assert!(matches!(e, CopyError::DestinationNotEmpty { .. }), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(zodb_it::read(&dst), before, "untouched");
    let force = CopyOptions {
        force: true,
        ..CopyOptions::default()
    };
    copy(&fx.join("empty/Data.fs"), &dst, force).unwrap();
    assert_eq!(zodb_it::read(&dst), b"FS30");
    // An empty database (a bare magic) holds nothing to lose.
    copy(&fx.join("history/Data.fs"), &dst, CopyOptions::default()).unwrap();
    assert_eq!(zodb_it::read(&dst), before);
    // A file that is not a FileStorage is not taken for an empty one.
    std::fs::write(&dst, b"not a database at all").unwrap();
    assert!(copy(&fx.join("history/Data.fs"), &dst, CopyOptions::default()).is_err());
    assert_eq!(zodb_it::read(&dst), b"not a database at all");
}

#[test]
fn a_file_is_never_copied_onto_itself() {
    let src = zodb_it::TempCopy::new(zodb_it::project_fixtures().join("history/Data.fs"));
    let before = zodb_it::read(src.path());
    let link = src.dir().join("link.fs");
    std::fs::hard_link(src.path(), &link).unwrap();
    for dst in [src.path(), link.as_path()] {
        let force = CopyOptions {
            force: true,
            ..CopyOptions::default()
        };
        let e = copy(src.path(), dst, force).unwrap_err();
        assert!(matches!(e, CopyError::SameFile { .. }), "{e}");
    }
    assert_eq!(zodb_it::read(src.path()), before);
}

/// Transactions in a vector: a source that is not a FileStorage (as a ZEO
/// client will be), able to hold tids a FileStorage would not.
struct MemStorage {
    txns: Vec<Transaction>,
    hub: CommitHub,
}

impl ReadStorage for MemStorage {
    fn name(&self) -> String {
        "mem".into()
    }
    fn last_transaction(&self) -> Tid {
        self.txns.last().map_or(Tid::ZERO, |t| t.info.tid)
    }
    fn object_count(&self) -> u64 {
        0
    }
    fn load_before(&self, oid: Oid, _before: Tid) -> zodb_core::storage::Result<Option<Revision>> {
        Err(StorageError::NoSuchObject { oid })
    }
    fn load_serial(&self, oid: Oid, _serial: Tid) -> zodb_core::storage::Result<Bytes> {
        Err(StorageError::NoSuchObject { oid })
    }
    fn history(&self, oid: Oid, _size: usize) -> zodb_core::storage::Result<Vec<HistoryEntry>> {
        Err(StorageError::NoSuchObject { oid })
    }
    fn iter_transactions(
        &self,
        _start: Option<Tid>,
        _stop: Option<Tid>,
    ) -> zodb_core::storage::Result<TxnIter<'_>> {
        Ok(Box::new(self.txns.clone().into_iter().map(Ok)))
    }
    fn watch(&self) -> CommitWatch {
        self.hub.subscribe()
    }
}

/// A record for [`txn`]: oid, data (`None`: no object), `data_txn`.
type Rec = (u64, Option<&'static [u8]>, Option<Tid>);

fn txn(tid: Tid, records: Vec<Rec>) -> Transaction {
    Transaction {
        info: TxnInfo {
            tid,
            status: TxnStatus::Committed,
            meta: TxnMeta {
                user: Bytes::from_static(b"u"),
                description: Bytes::from_static(b"d"),
                extension: Bytes::new(),
            },
        },
        records: records
            .into_iter()
            .map(|(oid, data, data_txn)| DataRecord {
                oid: Oid(oid),
                tid,
                data: data.map(Bytes::from_static),
                data_txn,
            })
            .collect(),
    }
}

fn open_new(path: &Path) -> FileStorage {
    let opts = OpenOptions {
        create: true,
        durability: Durability::Deferred,
        ..OpenOptions::read_write()
    };
    FileStorage::open(path, &opts).unwrap()
}

/// A tid not later than the previous one's becomes `laterThan` of it, as
/// in ZODB's `copy()`, with its notes; a back pointer to a retimed
/// transaction follows it to its new tid.
#[test]
fn out_of_order_tids_are_retimed_as_zodb_does() {
    let t = |s: &str| Tid(u64::from_str_radix(s, 16).unwrap());
    let (t1, t2, t3, t5) = (
        t("0285cbac00000000"),
        t("0285cbac11111111"),
        t("0285cbac22222222"),
        t("0285cbac55555555"),
    );
    // The low word at its maximum: the retimed tid carries into the minute.
    let edge = t("0285cbacffffffff");
    let src = MemStorage {
        txns: vec![
            txn(t1, vec![(0, Some(b"root-1"), None)]),
            txn(t3, vec![(0, Some(b"root-3"), None)]),
            txn(t2, vec![(1, Some(b"one"), None)]),
            txn(t5, vec![(1, Some(b"one"), Some(t2)), (0, None, None)]),
            txn(edge, vec![(2, Some(b"two"), None)]),
            txn(edge, vec![(2, Some(b"two'"), None)]),
        ],
        hub: CommitHub::new(),
    };
    let dir = scratch();
    let dst = open_new(&dir.path().join("Data.fs"));
    let mut log = Vec::new();
    let report = copy_transactions(&src, &dst, &mut log, &mut |_| {}).unwrap();
    let after_t3 = Tid::from_bytes(t2.timestamp().later_than(t3.timestamp()).0);
    let after_edge = Tid::from_bytes(edge.timestamp().later_than(edge.timestamp()).0);
    assert_eq!(after_t3, t("0285cbac22222223"));
    assert_eq!(
        after_edge,
        t("0285cbad00000000"),
        "the carry into the minute word"
    );
    assert_eq!(
        report.retimed,
        vec![
            Retimed {
                source: t2,
                written: after_t3
            },
            Retimed {
                source: edge,
                written: after_edge
            },
        ]
    );
    assert_eq!((report.txns, report.records), (6, 7));
    let log = String::from_utf8(log).unwrap();
    let ts = |t: Tid| t.timestamp().to_string();
    assert!(
        log.contains(&format!("Time stamps out of order {}, {}", ts(t3), ts(t2))),
        "{log}"
    );
    assert!(
        log.contains(&format!("Time stamps back in order {}", ts(t5))),
        "{log}"
    );
    assert!(
        log.contains("2 of 6 transactions were given new tids"),
        "{log}"
    );
    let written: Vec<Transaction> = dst
        .iter_transactions(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let tids: Vec<Tid> = written.iter().map(|t| t.info.tid).collect();
    assert_eq!(tids, vec![t1, t3, after_t3, t5, edge, after_edge]);
    // The back pointer names the retimed transaction, and records carry
    // their transaction's tid.
    assert_eq!(written[3].records[0].data_txn, Some(after_t3));
    assert_eq!(written[3].records[0].data.as_deref(), Some(&b"one"[..]));
    assert!(
        written
            .iter()
            .all(|t| t.records.iter().all(|r| r.tid == t.info.tid))
    );
    assert_eq!(
        dst.load(Oid(2)).unwrap(),
        (Bytes::from_static(b"two'"), after_edge)
    );

    // Appending the same history again: every tid is now too early.
    let report = copy_transactions(&src, &dst, &mut std::io::sink(), &mut |_| {}).unwrap();
    assert_eq!(report.retimed.len(), 6);
    assert!(dst.last_transaction() > after_edge);
}

/// A transaction the destination cannot take stops the copy with the
/// source tid named; what was copied before stays, consistent.
#[test]
fn a_failing_transaction_is_named() {
    let mut bad = txn(Tid(0x0285_cbac_2222_2222), vec![(1, Some(b"x"), None)]);
    bad.info.status = TxnStatus::Voted;
    let src = MemStorage {
        txns: vec![
            txn(Tid(0x0285_cbac_1111_1111), vec![(0, Some(b"r"), None)]),
            bad,
        ],
        hub: CommitHub::new(),
    };
    let dir = scratch();
    let dst = open_new(&dir.path().join("Data.fs"));
    let e = copy_transactions(&src, &dst, &mut std::io::sink(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            CopyError::Destination {
                tid: Tid(0x0285_cbac_2222_2222),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(dst.last_transaction(), Tid(0x0285_cbac_1111_1111));
}

#[test]
fn the_command() {
    let src: PathBuf = zodb_it::project_fixtures().join("history/Data.fs");
    let dir = scratch();
    let dst = dir.path().join("Data.fs");
    let out = zodbrs(&[OsStr::new("copy"), src.as_os_str(), dst.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "a quiet success"
    );
    assert_eq!(zodb_it::read(&src), zodb_it::read(&dst));
    assert!(
        filestorage::file::sibling(&dst, ".index").exists(),
        "closed with its index"
    );
    let out = zodbrs(&[OsStr::new("copy"), src.as_os_str(), dst.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("destination already holds transactions") && err.contains("--force"),
        "{err}"
    );
    let packed = zodb_it::project_fixtures().join("packed/Data.fs");
    let out = zodbrs(&[
        OsStr::new("copy"),
        OsStr::new("--force"),
        packed.as_os_str(),
        dst.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&packed), dump(&dst));
}
