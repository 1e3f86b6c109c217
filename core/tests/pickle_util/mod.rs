//! Helpers shared by the pickle tests: finding the shared fixtures and the
//! Python oracle, and a minimal Data.fs walker to get records out of the
//! fixtures (the filestorage crate is the real reader; this one only needs
//! well-formed files, and panics on anything else).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use zodb_core::Oid;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `../shared/fixtures` beside the workspace, or `None` (with a notice)
/// when it is absent outside CI.
pub fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        !ci(),
        "CI=true but the fixtures are missing at {}",
        dir.display()
    );
    eprintln!(
        "notice: {} not found; skipping this fixture test",
        dir.display()
    );
    None
}

/// The venv's Python (the reference implementation), or `None` (with a
/// notice) when it is absent outside CI.
pub fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        !ci(),
        "CI=true but the Python oracle is missing at {} (run scripts/setup-python.sh)",
        py.display()
    );
    eprintln!(
        "notice: {} not found; skipping the comparison with Python",
        py.display()
    );
    None
}

/// Runs `script` (a file in core/tests) with the venv's Python, feeding it
/// `input`, and returns its output.
pub fn run_python(python: &Path, script: &str, input: &str) -> String {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let mut child = Command::new(python)
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("run python");
    writer
        .join()
        .expect("writer thread")
        .expect("write to python");
    assert!(out.status.success(), "{script} failed: {}", out.status);
    String::from_utf8(out.stdout).expect("python output is UTF-8")
}

/// Every Data.fs among the fixtures.
pub fn databases(fixtures: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
        v.push(fixtures.join("wendelin").join(kind).join("zblk.fs"));
        for variant in ["1", "1_nozext"] {
            v.push(
                fixtures
                    .join("zodbtools")
                    .join(variant)
                    .join(kind)
                    .join("data.fs"),
            );
        }
    }
    v.push(fixtures.join("fs1/1.fs"));
    v.push(fixtures.join("btree/1.fs"));
    v
}

/// A transaction of a Data.fs.
#[derive(Debug)]
pub struct Txn {
    pub pos: u64,
    pub tid: u64,
    pub status: u8,
    pub ext: Bytes,
    pub records: Vec<DataRec>,
}

/// A data record; `data` is `None` for a back pointer (or deletion).
#[derive(Debug)]
pub struct DataRec {
    pub pos: u64,
    pub oid: Oid,
    pub data: Option<Bytes>,
    pub back: u64,
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap()).into()
}

/// All transactions of the Data.fs at `path`.
pub fn read_fs(path: &Path) -> Vec<Txn> {
    let file =
        Bytes::from(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    assert!(
        file.starts_with(b"FS21") || file.starts_with(b"FS30"),
        "{}: bad magic",
        path.display()
    );
    let mut txns = Vec::new();
    let mut pos = 4;
    while pos < file.len() {
        let tid = be64(&file, pos);
        let tlen = be64(&file, pos + 8) as usize;
        let status = file[pos + 16];
        let (ulen, dlen, elen) = (
            be16(&file, pos + 17),
            be16(&file, pos + 19),
            be16(&file, pos + 21),
        );
        let ext_at = pos + 23 + ulen + dlen;
        let ext = file.slice(ext_at..ext_at + elen);
        let end = pos + tlen;
        let mut records = Vec::new();
        let mut at = ext_at + elen;
        while at < end {
            let oid = Oid(be64(&file, at));
            assert_eq!(be16(&file, at + 32), 0, "version records are not expected");
            let plen = be64(&file, at + 34) as usize;
            let (data, back, len) = if plen == 0 {
                (None, be64(&file, at + 42), 50)
            } else {
                (Some(file.slice(at + 42..at + 42 + plen)), 0, 42 + plen)
            };
            records.push(DataRec {
                pos: at as u64,
                oid,
                data,
                back,
            });
            at += len;
        }
        assert_eq!(
            at,
            end,
            "{}: records overrun the transaction at {pos}",
            path.display()
        );
        assert_eq!(
            be64(&file, end),
            tlen as u64,
            "{}: redundant length at {end}",
            path.display()
        );
        txns.push(Txn {
            pos: pos as u64,
            tid,
            status,
            ext,
            records,
        });
        pos = end + 8;
    }
    txns
}

/// Every record with data in the file, in file order.
pub fn records(path: &Path) -> Vec<(Oid, Bytes)> {
    read_fs(path)
        .into_iter()
        .flat_map(|t| t.records)
        .filter_map(|r| Some((r.oid, r.data?)))
        .collect()
}

/// The latest data of each oid.
pub fn latest(path: &Path) -> std::collections::BTreeMap<Oid, Bytes> {
    records(path).into_iter().collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
