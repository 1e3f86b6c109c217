//! `zodbrs restore`: a dump restored is the dumped database, byte for byte
//! wherever the dump format can say it, and always the bytes zodbtools'
//! own `zodb restore` writes; restoring appends; a damaged or `--hashonly`
//! dump is refused with the line and object named.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use filestorage::format::Magic;
use filestorage::{Durability, FileStorage, OpenOptions};
use zodb_core::notify::CommitWatch;
use zodb_core::storage::{HistoryEntry, Revision, TxnIter};
use zodb_core::{Oid, ReadStorage, Tid};
use zodbrs::tools::copy::copy_transactions;
use zodbrs::tools::restore::{ParseErrorKind, RestoreError, RestoreReport, restore};
use zodbrs::tools::zodbdump::{DumpOptions, zodbdump};

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("zodbrs-restore-")
        .tempdir()
        .unwrap()
}

fn dump_range(path: &Path, lo: Option<Tid>, hi: Option<Tid>, opts: DumpOptions) -> Vec<u8> {
    let fs = FileStorage::open_read_only(path).unwrap();
    let mut out = Vec::new();
    zodbdump(&fs, lo, hi, opts, &mut out, &mut |_| {}).unwrap();
    out
}

fn dump(path: &Path) -> Vec<u8> {
    dump_range(path, None, None, DumpOptions::default())
}

fn open(path: &Path, magic: Magic) -> FileStorage {
    let opts = OpenOptions {
        new_magic: magic,
        durability: Durability::Deferred,
        ..OpenOptions::read_write()
    };
    FileStorage::open(path, &opts).unwrap()
}

/// Restores `input` into `path` (created with `magic`); the printed tids.
fn restore_into(
    path: &Path,
    magic: Magic,
    input: &[u8],
) -> (Result<RestoreReport, RestoreError>, String) {
    let fs = open(path, magic);
    let mut tids = Vec::new();
    let r = restore(&fs, &mut &input[..], &mut tids, &mut |_| {});
    (r, String::from_utf8(tids).unwrap())
}

fn magic_of(path: &Path) -> Magic {
    FileStorage::open_read_only(path).unwrap().magic()
}

/// A storage seen with the records of each transaction in oid order: what
/// a dump keeps of a database (zodbtools sorts each transaction's objects
/// so that dumps compare), and so what a restore can rebuild.
struct OidOrder<'a>(&'a FileStorage);

impl ReadStorage for OidOrder<'_> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn last_transaction(&self) -> Tid {
        self.0.last_transaction()
    }
    fn object_count(&self) -> u64 {
        self.0.object_count()
    }
    fn load_before(&self, oid: Oid, before: Tid) -> zodb_core::storage::Result<Option<Revision>> {
        self.0.load_before(oid, before)
    }
    fn load_serial(&self, oid: Oid, serial: Tid) -> zodb_core::storage::Result<bytes::Bytes> {
        self.0.load_serial(oid, serial)
    }
    fn history(&self, oid: Oid, size: usize) -> zodb_core::storage::Result<Vec<HistoryEntry>> {
        self.0.history(oid, size)
    }
    fn iter_transactions(
        &self,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> zodb_core::storage::Result<TxnIter<'_>> {
        Ok(Box::new(self.0.iter_transactions(start, stop)?.map(|t| {
            t.map(|mut t| {
                t.records.sort_by_key(|r| r.oid);
                t
            })
        })))
    }
    fn watch(&self) -> CommitWatch {
        self.0.watch()
    }
}

/// Whether every transaction of `path` stores its objects in oid order.
fn in_oid_order(path: &Path) -> bool {
    let fs = FileStorage::open_read_only(path).unwrap();
    fs.iter_transactions(None, None)
        .unwrap()
        .all(|t| t.unwrap().records.is_sorted_by_key(|r| r.oid))
}

/// `dump X | restore Y`: Y is X with each transaction's records in oid
/// order (a copy of X read in that order), which is X itself for every
/// database whose transactions are already in that order and that no pack
/// rewrote; and dump(Y) == dump(X) always.
#[test]
fn restore_of_a_dump_is_the_database() {
    let dir = scratch();
    let mut identical = 0;
    for (i, x) in zodb_it::all_databases().iter().enumerate() {
        let magic = magic_of(x);
        let dumped = dump(x);
        let y = dir.path().join(format!("{i}.fs"));
        let (r, tids) = restore_into(&y, magic, &dumped);
        let report = r.unwrap_or_else(|e| panic!("{}: {e}", x.display()));
        let source = FileStorage::open_read_only(x).unwrap();
        let expected_tids: String = source
            .iter_transactions(None, None)
            .unwrap()
            .map(|t| format!("{}\n", t.unwrap().info.tid))
            .collect();
        assert_eq!(tids, expected_tids, "{}", x.display());
        assert_eq!(report.txns as usize, tids.lines().count());
        // The database in dump order, made by copying.
        let z = dir.path().join(format!("{i}-sorted.fs"));
        copy_transactions(
            &OidOrder(&source),
            &open(&z, magic),
            &mut std::io::sink(),
            &mut |_| {},
        )
        .unwrap();
        let (ybytes, xbytes) = (zodb_it::read(&y), zodb_it::read(x));
        assert!(
            ybytes == zodb_it::read(&z),
            "{}: restore differs from the database in dump order",
            x.display()
        );
        let expressible = in_oid_order(x) && !x.ends_with("packed/Data.fs");
        assert_eq!(
            ybytes == xbytes,
            expressible,
            "{}: restore identical to the database",
            x.display()
        );
        identical += usize::from(expressible);
        zodb_it::assert_text_eq(
            &dumped,
            dump(&y),
            &format!("dump of the restore of {}", x.display()),
        );
    }
    // history, wendelin and btree store objects out of oid order, packed has
    // pack's prev pointers; zodbtools' (8), fs1/1.fs and empty are identical.
    let want = if zodb_it::shared_fixtures().is_some() {
        10
    } else {
        1
    };
    assert_eq!(identical, want);
}

/// zodbtools' `zodb restore`, run by the oracle on our dumps, writes our
/// bytes and prints our tids, for every fixture.
#[test]
fn zodbtools_restore_writes_the_same_bytes() {
    if zodb_it::python().is_none() {
        return;
    }
    let dir = scratch();
    for (i, x) in zodb_it::all_databases().iter().enumerate() {
        let dumped = dump(x);
        let ours = dir.path().join(format!("{i}.fs"));
        let theirs = dir.path().join(format!("{i}-py.fs"));
        let (r, tids) = restore_into(&ours, Magic::Fs30, &dumped);
        r.unwrap();
        let py = zodb_it::python().unwrap();
        let mut child = Command::new(py)
            .arg(zodb_it::reftool_script())
            .args([OsStr::new("zrestore"), theirs.as_os_str()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &dumped));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            x.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            tids,
            "{}",
            x.display()
        );
        assert!(
            zodb_it::read(&ours) == zodb_it::read(&theirs),
            "{}: ours and zodbtools' differ",
            x.display()
        );
    }
}

/// Restoring onto a non-empty storage appends, as zodbtools does: two
/// halves of a dump restored one after the other give the whole; a
/// transaction not later than the storage's last is refused, by line.
#[test]
fn restore_appends() {
    let x = zodb_it::project_fixtures().join("history/Data.fs");
    let fs = FileStorage::open_read_only(&x).unwrap();
    let tids: Vec<Tid> = fs
        .iter_transactions(None, None)
        .unwrap()
        .map(|t| t.unwrap().info.tid)
        .collect();
    let mid = tids[tids.len() / 2];
    let first = dump_range(&x, None, Some(mid), DumpOptions::default());
    let second = dump_range(&x, Some(mid.next()), None, DumpOptions::default());
    let dir = scratch();
    let whole = dir.path().join("whole.fs");
    let halves = dir.path().join("halves.fs");
    restore_into(&whole, Magic::Fs30, &dump(&x)).0.unwrap();
    let (r, _) = restore_into(&halves, Magic::Fs30, &first);
    assert_eq!(r.unwrap().last_tid, Some(mid));
    let size = std::fs::metadata(&halves).unwrap().len();
    // The first half again: its first transaction is too early.
    let (r, tids) = restore_into(&halves, Magic::Fs30, &first);
    let e = r.unwrap_err();
    assert!(matches!(e, RestoreError::Txn { line: 1, .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("line 1: txn {}:", tids_first(&first))),
        "{e}"
    );
    assert!(e.to_string().contains("not later than"), "{e}");
    assert_eq!(tids, "");
    assert_eq!(
        std::fs::metadata(&halves).unwrap().len(),
        size,
        "nothing written"
    );
    restore_into(&halves, Magic::Fs30, &second).0.unwrap();
    assert!(zodb_it::read(&halves) == zodb_it::read(&whole));
}

fn tids_first(dump: &[u8]) -> String {
    String::from_utf8_lossy(&dump[4..20]).into_owned()
}

/// A damaged object stops the restore at that object, named with its line;
/// the transactions before it are committed and durable.
#[test]
fn sha1_mismatch_names_the_object_and_line() {
    let x = zodb_it::project_fixtures().join("history/Data.fs");
    let mut dumped = dump(&x);
    // Damage the data of the first object of the third transaction.
    let text = dumped.clone();
    let third = find_nth(&text, b"\n\ntxn ", 1) + 2;
    let obj = third + find_nth(&text[third..], b"\nobj ", 0) + 1;
    let data = obj + text[obj..].iter().position(|&c| c == b'\n').unwrap() + 1;
    dumped[data] ^= 0x55;
    let line = text[..obj].iter().filter(|&&c| c == b'\n').count() as u64 + 1;
    let oid = String::from_utf8_lossy(&text[obj + 4..obj + 20]).into_owned();
    let dir = scratch();
    let y = dir.path().join("Data.fs");
    let (r, tids) = restore_into(&y, Magic::Fs30, &dumped);
    let e = r.unwrap_err();
    let RestoreError::Parse(p) = &e else {
        panic!("{e}")
    };
    assert_eq!(p.line, line);
    assert!(matches!(p.kind, ParseErrorKind::DataCorrupt { .. }));
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("line {line}: obj {oid}: data corrupt: sha1 = ")),
        "{msg}"
    );
    assert_eq!(tids.lines().count(), 2);
    drop(e);
    let fs = FileStorage::open_read_only(&y).unwrap();
    assert_eq!(fs.iter_transactions(None, None).unwrap().count(), 2);
}

fn find_nth(hay: &[u8], needle: &[u8], n: usize) -> usize {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .nth(n)
        .map(|(i, _)| i)
        .unwrap()
}

#[test]
fn a_hashonly_dump_cannot_be_restored() {
    let x = zodb_it::project_fixtures().join("history/Data.fs");
    let opts = DumpOptions {
        hash_only: true,
        ..DumpOptions::default()
    };
    let dumped = dump_range(&x, None, None, opts);
    let dir = scratch();
    let y = dir.path().join("Data.fs");
    let (r, _) = restore_into(&y, Magic::Fs30, &dumped);
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::HashOnly {
                line: 5,
                oid: Oid(0)
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--hashonly"), "{e}");
    assert_eq!(zodb_it::read(&y), b"FS30", "nothing committed");
}

const HEAD: &str = "user \"\"\ndescription \"\"\nextension \"\"\n";

fn obj(oid: u64, data: &[u8]) -> String {
    use sha1::Digest;
    format!(
        "obj {oid:016x} {} sha1:{}\n{}\n",
        data.len(),
        hex::encode(sha1::Sha1::digest(data)),
        String::from_utf8_lossy(data)
    )
}

/// A deletion is restored even when the object's current revision is
/// already a deletion (zodbtools' deleteObject would refuse it); `from`
/// naming no revision, and a voted status, are refused by line.
#[test]
fn hand_made_dumps() {
    let dir = scratch();
    let y = dir.path().join("Data.fs");
    let input = format!(
        "txn 0285cbac00000001 \" \"\n{HEAD}{}\n\
         txn 0285cbac00000002 \" \"\n{HEAD}obj 0000000000000001 delete\n\n\
         txn 0285cbac00000003 \"p\"\n{HEAD}obj 0000000000000001 delete\nobj 0000000000000002 delete\n\n\
         txn 0285cbac00000004 \" \"\n{HEAD}obj 0000000000000001 from 0285cbac00000001\n\n",
        obj(1, b"one")
    );
    let (r, tids) = restore_into(&y, Magic::Fs30, input.as_bytes());
    assert_eq!(r.unwrap().txns, 4, "{tids}");
    let fs = FileStorage::open_read_only(&y).unwrap();
    assert_eq!(fs.load(Oid(1)).unwrap().0, &b"one"[..]);
    let t: Vec<_> = fs
        .iter_transactions(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(t[2].info.status, zodb_core::TxnStatus::Packed);
    assert_eq!(
        t[3].records[0].data_txn,
        Some(Tid(0x0285_cbac_0000_0001)),
        "a back pointer"
    );
    drop(fs);

    let bad =
        format!("txn 0285cbac00000005 \" \"\n{HEAD}obj 0000000000000003 from 0285cbac00000002\n\n");
    let e = restore_into(&y, Magic::Fs30, bad.as_bytes()).0.unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::NoDataToCopy {
                line: 5,
                oid: Oid(3),
                ..
            }
        ),
        "{e}"
    );
    let bad = format!("txn 0285cbac00000005 \"c\"\n{HEAD}\n");
    let e = restore_into(&y, Magic::Fs30, bad.as_bytes()).0.unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::Status {
                line: 1,
                status: b'c',
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "line 1: txn 0285cbac00000005: status \"c\" cannot be restored (only \" \" and \"p\")"
    );
}

/// `txn 0000000000000000` is zodbtools' "commit with a new tid": stores
/// and deletions against the current serials, a tid from the clock.
#[test]
fn a_zero_tid_commits_with_a_new_tid() {
    let dir = scratch();
    let y = dir.path().join("Data.fs");
    let input = format!(
        "txn 0000000000000000 \" \"\n{HEAD}{}\n\
         txn 0000000000000000 \" \"\n{HEAD}{}obj 0000000000000002 delete\n\n",
        obj(2, b"two"),
        obj(1, b"one")
    );
    let (r, tids) = restore_into(&y, Magic::Fs30, input.as_bytes());
    let report = r.unwrap();
    let tids: Vec<Tid> = tids.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(tids.len(), 2);
    assert!(Tid::ZERO < tids[0] && tids[0] < tids[1]);
    assert_eq!(report.last_tid, Some(tids[1]));
    let fs = FileStorage::open_read_only(&y).unwrap();
    assert_eq!(
        fs.load(Oid(1)).unwrap(),
        (bytes::Bytes::from_static(b"one"), tids[1])
    );
    assert!(fs.load(Oid(2)).unwrap_err().is_pos_key_error());
    // Deleting what does not exist is refused, as deleteObject refuses it.
    drop(fs);
    let bad = format!("txn 0000000000000000 \" \"\n{HEAD}obj 0000000000000009 delete\n\n");
    let e = restore_into(&y, Magic::Fs30, bad.as_bytes()).0.unwrap_err();
    assert!(
        matches!(
            e,
            RestoreError::Obj {
                line: 5,
                oid: Oid(9),
                ..
            }
        ),
        "{e}"
    );
}

/// The command: `zodbrs dump X | zodbrs restore Y`, tids on stdout, Y the
/// database; an FS21 database restored with `--magic FS21`.
#[test]
fn the_command() {
    let bin = env!("CARGO_BIN_EXE_zodbrs");
    let dir = scratch();
    let mut cases = vec![(zodb_it::project_fixtures().join("history/Data.fs"), "FS30")];
    if let Some(shared) = zodb_it::shared_fixtures() {
        cases.push((shared.join("fs1/1.fs"), "FS21"));
    }
    for (i, (x, magic)) in cases.iter().enumerate() {
        let dumpfile = dir.path().join(format!("{i}.dump"));
        let out = Command::new(bin).arg("dump").arg(x).output().unwrap();
        assert!(out.status.success());
        std::fs::write(&dumpfile, &out.stdout).unwrap();
        let y = dir.path().join(format!("{i}.fs"));
        let out = Command::new(bin)
            .args([
                OsStr::new("restore"),
                OsStr::new("--magic"),
                OsStr::new(magic),
                y.as_os_str(),
            ])
            .stdin(std::fs::File::open(&dumpfile).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty());
        let n = FileStorage::open_read_only(x)
            .unwrap()
            .iter_transactions(None, None)
            .unwrap()
            .count();
        assert_eq!(out.stdout.iter().filter(|&&c| c == b'\n').count(), n);
        zodb_it::assert_text_eq(dump(x), dump(&y), "dump of the restore");
        assert_eq!(magic_of(&y), magic_of(x));
    }
    // Garbage on stdin: an error naming the line, nothing written.
    let y = dir.path().join("garbage.fs");
    let mut child = Command::new(bin)
        .arg("restore")
        .arg(&y)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1: expected `txn <tid> \"<status>\"`, found \"hello\""),
        "{err}"
    );
    assert_eq!(zodb_it::read(&y), b"FS30");
}
