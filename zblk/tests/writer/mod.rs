//! Shared by the writer tests: operation scripts, run through the Python
//! stand-ins (`tests/py/zblk_write_oracle.py`) and through [`Writer`], and
//! the comparison of the two databases record by record.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use filestorage::{FileStorage, OpenOptions};
use serde_json::{Value as Json, json};
use zblk::dtype::DType;
use zblk::format::{BlockFormat, Order};
use zblk::npy::parse_descr;
use zblk::write::{ArrayId, ArraySpec, WriteFormat, Writer, WriterOptions};
use zodb_core::pickle::{DisMemo, dis};
use zodb_core::{ReadStorage, Tid, TimeStamp, TxnMeta};

/// One operation of a script (see zblk_write_oracle.py).
#[derive(Clone, Debug)]
pub enum Op {
    Create {
        key: String,
        shape: Vec<u64>,
        descr: String,
        order: Order,
        blksize: u64,
    },
    Format(WriteFormat),
    Write {
        key: String,
        offset: u64,
        data: Vec<u8>,
    },
    StoreBlk {
        key: String,
        blk: u64,
        data: Vec<u8>,
        fmt: WriteFormat,
    },
    Resize {
        key: String,
        shape: Vec<u64>,
    },
    Append {
        key: String,
        data: Vec<u8>,
    },
    Convert {
        key: String,
        to: BlockFormat,
    },
    /// Python only: `del a.__dict__['_order']`, an array as saved before
    /// wendelin.core 0.6.
    DropOrder {
        key: String,
    },
}

/// Transactions of operations, and a tid for each (plus the root's).
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub txns: Vec<Vec<Op>>,
    /// ZODB's pickle protocol (`None`: 3).
    pub protocol: Option<u8>,
    /// Runs on an existing database, its transactions after `base`
    /// seconds from the first script time.
    pub continue_at: Option<f64>,
}

impl Script {
    /// Tids from a fixed time, 1.5 s apart: the root's first.
    pub fn tids(&self) -> Vec<Tid> {
        let base = 1_700_000_000.0 + self.continue_at.unwrap_or(0.0);
        (0..=self.txns.len())
            .map(|i| {
                TimeStamp::from_unix(base + 1.5 * i as f64)
                    .expect("a valid time")
                    .tid()
            })
            .collect()
    }

    /// Writes the script as JSON in `dir` (data in files beside it) and
    /// returns its path.
    pub fn save(&self, dir: &Path) -> PathBuf {
        let mut n = 0;
        let mut data = |bytes: &[u8]| -> String {
            n += 1;
            let p = dir.join(format!("data{n}.bin"));
            std::fs::write(&p, bytes).unwrap();
            p.to_str().unwrap().to_owned()
        };
        let txns: Vec<Json> = self
            .txns
            .iter()
            .map(|ops| {
                Json::Array(
                    ops.iter()
                        .map(|op| match op {
                            Op::Create {
                                key,
                                shape,
                                descr,
                                order,
                                blksize,
                            } => json!({"op": "create", "key": key, "shape": shape,
                                "descr": descr, "order": order.as_char().to_string(), "blksize": blksize}),
                            Op::Format(f) => json!({"op": "format", "fmt": f.name()}),
                            Op::Write { key, offset, data: d } => {
                                json!({"op": "write", "key": key, "offset": offset, "data": data(d)})
                            }
                            Op::StoreBlk {
                                key,
                                blk,
                                data: d,
                                fmt,
                            } => json!({"op": "storeblk", "key": key, "blk": blk, "data": data(d),
                                "fmt": fmt.name()}),
                            Op::Resize { key, shape } => {
                                json!({"op": "resize", "key": key, "shape": shape})
                            }
                            Op::Append { key, data: d } => {
                                json!({"op": "append", "key": key, "data": data(d)})
                            }
                            Op::Convert { key, to } => {
                                json!({"op": "convert", "key": key, "to": to.class_name()})
                            }
                            Op::DropOrder { key } => json!({"op": "drop_order", "key": key}),
                        })
                        .collect(),
                )
            })
            .collect();
        let tids: Vec<String> = self.tids().iter().map(|t| t.to_string()).collect();
        let path = dir.join("ops.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({"tids": tids, "txns": txns,
                "protocol": self.protocol.unwrap_or(3), "continue": self.continue_at.is_some()}))
            .unwrap(),
        )
        .unwrap();
        path
    }

    /// Runs the script through our writer into a new FileStorage at `db`.
    pub fn run_ours(&self, db: &Path) {
        let fs = FileStorage::open(
            db,
            &OpenOptions {
                create: self.continue_at.is_none(),
                ..OpenOptions::read_write()
            },
        )
        .unwrap();
        let tids = self.tids();
        let opts = WriterOptions {
            dialect: self
                .protocol
                .map(|p| zodb_core::pickle::Dialect::py3(p).unwrap()),
        };
        let mut w = Writer::open(&fs, opts, Some(tids[0])).unwrap();
        self.apply(&mut w, &tids[1..]);
    }

    /// Applies the script to a writer, committing each transaction at its
    /// tid.
    pub fn apply<S: zodb_core::WriteStorage + ?Sized>(&self, w: &mut Writer<'_, S>, tids: &[Tid]) {
        let mut arrays: HashMap<String, ArrayId> = HashMap::new();
        for (i, txn) in self.txns.iter().enumerate() {
            for op in txn {
                let key = match op {
                    Op::Write { key, .. }
                    | Op::StoreBlk { key, .. }
                    | Op::Resize { key, .. }
                    | Op::Append { key, .. }
                    | Op::Convert { key, .. }
                    | Op::DropOrder { key } => Some(key),
                    _ => None,
                };
                if let Some(key) = key
                    && !arrays.contains_key(key)
                {
                    let oid = w.root_get(key).unwrap().expect("an array of the database");
                    arrays.insert(key.clone(), w.open_array(oid).unwrap());
                }
                let what = format!("txn {i}: {op:?}");
                let what = &what[..what.len().min(200)];
                match op {
                    Op::Create {
                        key,
                        shape,
                        descr,
                        order,
                        blksize,
                    } => {
                        let dtype = DType::from_descr(&parse_descr(descr).unwrap()).unwrap();
                        let a = w
                            .create_array(
                                key,
                                ArraySpec {
                                    dtype,
                                    shape: shape.clone(),
                                    order: *order,
                                    blksize: *blksize,
                                },
                            )
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        arrays.insert(key.clone(), a);
                    }
                    Op::Format(f) => w.set_format(*f),
                    Op::Write { key, offset, data } => {
                        let f = w.array_file(arrays[key]).unwrap();
                        w.write_at(f, *offset, data)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                    Op::StoreBlk {
                        key,
                        blk,
                        data,
                        fmt,
                    } => {
                        let f = w.array_file(arrays[key]).unwrap();
                        w.store_block(f, *blk, data, *fmt)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                    Op::Resize { key, shape } => {
                        w.resize(arrays[key], shape)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                    Op::Append { key, data } => {
                        w.append(arrays[key], data)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                    Op::Convert { key, to } => {
                        let f = w.array_file(arrays[key]).unwrap();
                        for (blk, _) in w.blocks(f).unwrap() {
                            w.convert_block(f, blk, *to)
                                .unwrap_or_else(|e| panic!("{what}: {e}"));
                        }
                    }
                    Op::DropOrder { .. } => panic!("{what}: the writer makes no legacy arrays"),
                }
            }
            w.commit_at(TxnMeta::default(), tids[i])
                .unwrap_or_else(|e| panic!("commit {i}: {e}"));
        }
    }
}

pub fn oracle_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/zblk_write_oracle.py")
}

/// Runs the oracle; panics with its stderr on failure.
pub fn oracle(py: &Path, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg(oracle_script())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(
        out.status.success(),
        "zblk_write_oracle.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a script through Python only, into a new database at `db`.
pub fn python_only(script: &Script, db: &Path) -> Option<()> {
    let py = zodb_it::python()?;
    let dir = tempfile::tempdir().unwrap();
    let ops = script.save(dir.path());
    oracle(&py, &["apply", ops.to_str().unwrap(), db.to_str().unwrap()]);
    Some(())
}

/// Both sides run the script; the files must be equal byte for byte, and
/// Python must read ours as the script says. Returns the transactions and
/// records compared.
pub fn check_script(script: &Script, what: &str) -> Option<(usize, usize)> {
    check_script_from(None, script, what)
}

/// [`check_script`] on copies of an existing database made by Python from
/// the first script, when given (Python then checks the arrays of both
/// scripts).
pub fn check_script_from(
    base: Option<(&Path, &Script)>,
    script: &Script,
    what: &str,
) -> Option<(usize, usize)> {
    let py = zodb_it::python()?;
    let dir = tempfile::Builder::new()
        .prefix("zblk-w-")
        .tempdir()
        .unwrap();
    // ZBLK_KEEP=1 keeps the script and both databases for a post-mortem.
    let dir = if std::env::var_os("ZBLK_KEEP").is_some() {
        let p = dir.keep();
        eprintln!("{what}: files kept in {}", p.display());
        Dir::Kept(p)
    } else {
        Dir::Temp(dir)
    };
    let ops = script.save(dir.path());
    let theirs = dir.path().join("python.fs");
    let ours = dir.path().join("ours.fs");
    let mut whole = script.clone();
    if let Some((base, first)) = base {
        std::fs::copy(base, &theirs).unwrap();
        std::fs::copy(base, &ours).unwrap();
        whole.txns = first.txns.iter().chain(&script.txns).cloned().collect();
    }
    oracle(
        &py,
        &["apply", ops.to_str().unwrap(), theirs.to_str().unwrap()],
    );
    script.run_ours(&ours);
    let counts = compare(&theirs, &ours, what);
    let check_dir = dir.path().join("whole");
    std::fs::create_dir_all(&check_dir).unwrap();
    let whole_ops = whole.save(&check_dir);
    let out = oracle(
        &py,
        &[
            "verify",
            whole_ops.to_str().unwrap(),
            ours.to_str().unwrap(),
        ],
    );
    assert!(out.starts_with("ok "), "{what}: verify printed {out}");
    Some(counts)
}

/// A scratch directory, kept on request.
enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(d) => d.path(),
            Dir::Kept(p) => p,
        }
    }
}

/// Compares two Data.fs files: equal bytes, or a panic naming the first
/// record that differs, both pickles disassembled.
pub fn compare(theirs: &Path, ours: &Path, what: &str) -> (usize, usize) {
    let a = FileStorage::open_read_only(theirs).unwrap();
    let b = FileStorage::open_read_only(ours).unwrap();
    let ta: Vec<_> = a
        .iter_transactions(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let tb: Vec<_> = b
        .iter_transactions(None, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut records = 0;
    for (i, (x, y)) in ta.iter().zip(&tb).enumerate() {
        assert_eq!(x.info, y.info, "{what}: transaction {i} header");
        let oa: Vec<_> = x.records.iter().map(|r| r.oid).collect();
        let ob: Vec<_> = y.records.iter().map(|r| r.oid).collect();
        assert_eq!(
            oa, ob,
            "{what}: transaction {i} ({}) stores other oids or in another order",
            x.info.tid
        );
        for (ra, rb) in x.records.iter().zip(&y.records) {
            if ra.data != rb.data {
                panic!(
                    "{what}: transaction {i} ({}): record of {} differs\n--- Python\n{}\n--- ours\n{}",
                    x.info.tid,
                    ra.oid,
                    show(ra.data.as_deref().unwrap_or_default()),
                    show(rb.data.as_deref().unwrap_or_default())
                );
            }
            records += 1;
        }
    }
    assert_eq!(ta.len(), tb.len(), "{what}: number of transactions");
    let (fa, fb) = (std::fs::read(theirs).unwrap(), std::fs::read(ours).unwrap());
    if fa != fb {
        let at = fa
            .iter()
            .zip(&fb)
            .position(|(x, y)| x != y)
            .unwrap_or(fa.len().min(fb.len()));
        panic!(
            "{what}: files differ at byte {at} (sizes {} Python, {} ours) though the records agree",
            fa.len(),
            fb.len()
        );
    }
    (ta.len(), records)
}

/// A record's two pickles disassembled (long strings cut).
pub fn show(data: &[u8]) -> String {
    let mut out = String::new();
    let mut memo = DisMemo::new();
    let mut pos = 0;
    for _ in 0..2 {
        match dis(data, pos, &mut out, &mut memo) {
            Ok(end) => pos = end,
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
                break;
            }
        }
    }
    out.lines()
        .map(|l| if l.len() > 160 { &l[..160] } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// xorshift64*: a small seeded generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` bytes: random, with runs of zeros (whole 4 KiB chunks too) so
    /// that stripping and chunk deletion happen; all zeros sometimes.
    pub fn data(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        match self.below(6) {
            0 => {}
            1 => {
                for b in v.iter_mut() {
                    *b = self.next() as u8;
                }
            }
            _ => {
                let mut i = 0;
                while i < n {
                    let run = 1 + self.below(6000) as usize;
                    let end = (i + run).min(n);
                    if self.chance(0.5) {
                        for b in &mut v[i..end] {
                            *b = (self.next() as u8) | 1;
                        }
                    }
                    i = end;
                }
            }
        }
        v
    }
}
