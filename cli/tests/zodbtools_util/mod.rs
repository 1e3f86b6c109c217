//! What the zodbtools tests share beyond the `zodb_it` harness (fixture
//! lookup, the Python oracle, readable diffs): the fixture lists, and how
//! zodbtools' outputs are brought to the form its master branch prints.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Output;

use filestorage::FileStorage;
use zodb_core::{Oid, ReadStorage, Tid};

/// The shared fixtures directory, canonical so that Python and Rust are
/// given (and `info` prints) the same path text; `None` when absent (see
/// `zodb_it::shared_fixtures` for the CI policy).
pub fn shared() -> Option<PathBuf> {
    let dir = zodb_it::shared_fixtures()?;
    Some(dir.canonicalize().expect("canonical fixtures path"))
}

/// Whether the Python oracle is there (skips with a notice when not).
pub fn oracle() -> bool {
    zodb_it::python().is_some()
}

/// The eight zodbtools fixture directories (`1/py2_pickle1`, ...).
pub fn zodbtools_dirs(shared: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for set in ["1", "1_nozext"] {
        for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
            dirs.push(shared.join("zodbtools").join(set).join(kind));
        }
    }
    dirs
}

/// Every fixture database, plus the shared `fs1/empty.fs` (the magic only).
pub fn all_databases(shared: &Path) -> Vec<PathBuf> {
    let mut dbs: Vec<PathBuf> = zodb_it::all_databases()
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| p.canonicalize().expect("canonical database path"))
        .collect();
    dbs.push(shared.join("fs1/empty.fs"));
    dbs
}

/// Opens a fixture read-only.
pub fn open(path: &Path) -> FileStorage {
    FileStorage::open_read_only(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (oid, tid, has data) of `fs`, in storage order.
pub fn records(fs: &FileStorage) -> Vec<(Oid, Tid, bool)> {
    let mut out = Vec::new();
    for txn in fs.iter_transactions(None, None).expect("iterate") {
        let txn = txn.expect("transaction");
        for r in txn.records {
            out.push((r.oid, r.tid, r.data.is_some()));
        }
    }
    out
}

/// `reftool.py ARGS`, which must succeed: its stdout.
pub fn py(args: &[&str]) -> Vec<u8> {
    zodb_it::reftool(args).stdout
}

/// `reftool.py ARGS`, whatever its exit status.
pub fn py_run(args: &[&str]) -> Output {
    zodb_it::reftool_output(args).expect("the oracle was checked for")
}

/// Asserts `got` equals `want` byte for byte, with a readable report.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    zodb_it::assert_text_eq(want, got, what);
}
