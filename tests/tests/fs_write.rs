//! The write side against Python ZODB: the same transactions committed by
//! both give the same bytes and the same outcomes, and each reads what the
//! other wrote.

use std::path::Path;

use bytes::Bytes;
use filestorage::{FileStorage, OpenOptions};
use serde_json::{Value, json};
use zodb_core::storage::TpcTxn;
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TxnMeta, TxnStatus};

/// xorshift: a fixed sequence of choices for the plan.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A small valid record: class `builtins.object`, state a text.
#[allow(clippy::little_endian_bytes)] // pickle lengths are little-endian
fn pickle(text: &str) -> Vec<u8> {
    let mut p = b"\x80\x03cbuiltins\nobject\nq\x00.\x80\x03X".to_vec();
    p.extend_from_slice(&(text.len() as u32).to_le_bytes());
    p.extend_from_slice(text.as_bytes());
    p.extend_from_slice(b"q\x01.");
    p
}

fn py_error(e: &StorageError) -> &'static str {
    match e {
        StorageError::Conflict { .. } => "ConflictError",
        StorageError::ReadConflict { .. } => "ReadConflictError",
        StorageError::Undo { oid: Some(_), .. } => "MultipleUndoErrors",
        StorageError::Undo { oid: None, .. } => "UndoError",
        e if e.is_pos_key_error() => "POSKeyError",
        _ => "other",
    }
}

/// Runs one planned transaction on our storage; returns reftool's result line.
fn apply_ours(fs: &FileStorage, t: &Value) -> Value {
    let h = |k: &str| Bytes::from(hex::decode(t[k].as_str().unwrap_or("")).unwrap());
    let meta = TxnMeta {
        user: h("user"),
        description: h("description"),
        extension: h("extension"),
    };
    let tid = Tid::from_slice(&hex::decode(t["tid"].as_str().unwrap()).unwrap()).unwrap();
    let status = if t["status"] == "p" {
        TxnStatus::Packed
    } else {
        TxnStatus::Committed
    };
    let oid = |v: &Value| Oid::from_slice(&hex::decode(v.as_str().unwrap()).unwrap()).unwrap();
    let tidv = |v: &Value| Tid::from_slice(&hex::decode(v.as_str().unwrap()).unwrap()).unwrap();
    let mut txn = match fs.begin_restore(meta, tid, status) {
        Ok(x) => x,
        Err(e) => return json!({ "error": py_error(&e) }),
    };
    let mut undone = Vec::new();
    let run = (|| -> Result<Vec<Oid>, StorageError> {
        for op in t["ops"].as_array().unwrap() {
            match op["op"].as_str().unwrap() {
                "store" => txn.store(
                    oid(&op["oid"]),
                    tidv(&op["serial"]),
                    Bytes::from(hex::decode(op["data"].as_str().unwrap()).unwrap()),
                )?,
                "delete" => txn.delete_object(oid(&op["oid"]), tidv(&op["serial"]))?,
                "check" => txn.check_current_serial(oid(&op["oid"]), tidv(&op["serial"]))?,
                "undo" => undone.extend(txn.undo(tidv(&op["tid"]))?),
                "restore" => {
                    let data = op["data"]
                        .as_str()
                        .map(|d| Bytes::from(hex::decode(d).unwrap()));
                    let prev = (!op["prev_txn"].is_null()).then(|| tidv(&op["prev_txn"]));
                    txn.restore(oid(&op["oid"]), data, prev)?
                }
                other => panic!("unknown op {other}"),
            }
        }
        txn.vote()
    })();
    match run {
        Err(e) => json!({ "error": py_error(&e) }),
        Ok(_) if t["abort"] == true => {
            Box::new(txn).abort();
            json!({ "aborted": true })
        }
        Ok(resolved) => {
            let tid = Box::new(txn).finish().unwrap();
            let mut r: Vec<String> = resolved.iter().map(|o| hex::encode(o.to_bytes())).collect();
            r.sort();
            json!({ "tid": hex::encode(tid.to_bytes()), "resolved": r, "undone": undone.iter().map(|o| hex::encode(o.to_bytes())).collect::<Vec<_>>() })
        }
    }
}

/// Builds a plan of `n` transactions step by step against our storage (so
/// that serials are mostly right and sometimes stale), applying each.
fn plan_and_apply(fs: &FileStorage, n: usize, seed: u64) -> (Value, Vec<Value>) {
    let mut rng = Rng(seed);
    let mut plan = Vec::new();
    let mut results = Vec::new();
    let mut tids: Vec<Tid> = Vec::new();
    let mut next_oid = 0u64;
    let mut tid = Tid(0x03f5_8e00_0000_0000);
    let ext_choices = [
        "",
        "80037d71002858010000006b7101580100000076710258010000006e71034b01752e",
    ];
    for i in 0..n {
        tid = Tid(tid.0 + 0x1_0000_0000 + rng.below(1 << 20));
        let mut ops = Vec::new();
        let nops = 1 + rng.below(4);
        let current: Vec<(Oid, Tid)> = fs
            .oids()
            .into_iter()
            .filter_map(|(o, _)| fs.load(o).ok().map(|(_, s)| (o, s)))
            .collect();
        for _ in 0..nops {
            let pick = rng.below(100);
            let existing =
                (!current.is_empty()).then(|| current[rng.below(current.len() as u64) as usize]);
            let op = match (pick, existing) {
                (0..=29, _) | (_, None) => {
                    let o = Oid(next_oid);
                    next_oid += 1;
                    json!({"op": "store", "oid": hex::encode(o.to_bytes()), "serial": "0000000000000000", "data": hex::encode(pickle(&format!("new {i}")))})
                }
                (30..=59, Some((o, s))) => {
                    // Mostly the right serial, sometimes a stale one.
                    let s = if rng.below(8) == 0 { Tid(s.0 - 1) } else { s };
                    json!({"op": "store", "oid": hex::encode(o.to_bytes()), "serial": hex::encode(s.to_bytes()), "data": hex::encode(pickle(&format!("v{i}")))})
                }
                (60..=64, Some((o, s))) => {
                    json!({"op": "delete", "oid": hex::encode(o.to_bytes()), "serial": hex::encode(s.to_bytes())})
                }
                (65..=72, Some((o, s))) => {
                    let s = if rng.below(4) == 0 { Tid(s.0 + 1) } else { s };
                    json!({"op": "check", "oid": hex::encode(o.to_bytes()), "serial": hex::encode(s.to_bytes())})
                }
                (73..=89, _) if !tids.is_empty() => {
                    let t = tids[tids.len() - 1 - rng.below(tids.len().min(6) as u64) as usize];
                    json!({"op": "undo", "tid": hex::encode(t.to_bytes())})
                }
                (_, Some((o, _))) if !tids.is_empty() => {
                    let t = tids[rng.below(tids.len() as u64) as usize];
                    // Data None never comes with a back pointer hint (ZODB's
                    // copy passes data_txn only for records with data).
                    if rng.below(3) == 0 {
                        json!({"op": "restore", "oid": hex::encode(o.to_bytes()), "data": Value::Null, "prev_txn": Value::Null})
                    } else {
                        let data = hex::encode(pickle(&format!("r{i}")));
                        json!({"op": "restore", "oid": hex::encode(o.to_bytes()), "data": data, "prev_txn": hex::encode(t.to_bytes())})
                    }
                }
                _ => {
                    json!({"op": "check", "oid": "0000000000000000", "serial": "0000000000000000"})
                }
            };
            ops.push(op);
        }
        let user: Vec<u8> = if i % 7 == 0 {
            b"user \x00\x01\n'\"\xff".to_vec()
        } else {
            format!("user{i}").into_bytes()
        };
        let t = json!({
            "tid": hex::encode(tid.to_bytes()),
            "status": if i % 11 == 5 { "p" } else { " " },
            "user": hex::encode(&user),
            "description": hex::encode(format!("txn {i} ünïcode").as_bytes()),
            "extension": ext_choices[i % 2],
            "abort": i % 13 == 7,
            "ops": ops,
        });
        let r = apply_ours(fs, &t);
        if r.get("tid").is_some() {
            tids.push(tid);
        }
        plan.push(t);
        results.push(r);
    }
    (Value::Array(plan), results)
}

#[test]
fn same_transactions_give_the_same_bytes_as_zodb() {
    let Some(_) = zodb_it::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ours_path = dir.path().join("ours.fs");
    let theirs_path = dir.path().join("theirs.fs");
    let fs = FileStorage::open(&ours_path, &OpenOptions::read_write()).unwrap();
    let (plan, ours) = plan_and_apply(&fs, 160, 0x5eed_1234_5678_9abc);
    drop(fs);
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
    let out = zodb_it::reftool([
        "apply".as_ref(),
        theirs_path.as_os_str(),
        plan_path.as_os_str(),
    ]);
    let theirs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), ours.len());
    let mut outcomes = std::collections::BTreeMap::new();
    for (i, (a, b)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(a, b, "transaction {i}: {}", plan[i]);
        *outcomes
            .entry(a.get("error").and_then(Value::as_str).unwrap_or(
                if a.get("aborted").is_some() {
                    "aborted"
                } else {
                    "committed"
                },
            ))
            .or_insert(0) += 1;
    }
    // The plan must exercise every path, not only the happy one.
    for k in [
        "committed",
        "aborted",
        "ConflictError",
        "ReadConflictError",
        "UndoError",
    ] {
        assert!(
            outcomes.get(k).copied().unwrap_or(0) > 0,
            "no {k} among {outcomes:?}"
        );
    }
    zodb_it::assert_text_eq(
        std::fs::read(&theirs_path).unwrap(),
        std::fs::read(&ours_path).unwrap(),
        "Data.fs written by ZODB vs by us",
    );
}

#[test]
fn python_reads_what_we_write_and_we_read_what_python_writes() {
    let Some(_) = zodb_it::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Data.fs");
    let fs = FileStorage::open(&p, &OpenOptions::read_write()).unwrap();
    plan_and_apply(&fs, 60, 42);
    drop(fs);
    // Python's fstest and fsrefs-free checks, and every read, agree.
    let fstest = zodb_it::reftool(["fstest".as_ref(), p.as_os_str()]);
    assert!(fstest.stdout.is_empty() && fstest.stderr.is_empty());
    let ours = FileStorage::open_read_only(&p).unwrap();
    let theirs: Value =
        serde_json::from_slice(&zodb_it::reftool(["iterate".as_ref(), p.as_os_str()]).stdout)
            .unwrap();
    assert_eq!(
        theirs["transactions"].as_array().unwrap().len(),
        ours.txns().count()
    );
    assert_eq!(
        theirs["last_transaction"],
        hex::encode(ours.last_transaction().to_bytes())
    );
    // And we append to a file Python wrote.
    let py_path = dir.path().join("py.fs");
    zodb_it::reftool([
        "apply".as_ref(),
        py_path.as_os_str(),
        Path::new(&write_plan(dir.path())).as_os_str(),
    ]);
    let fs = FileStorage::open(&py_path, &OpenOptions::read_write()).unwrap();
    let (_, serial) = fs.load(Oid(0)).unwrap();
    let mut t = fs.begin(TxnMeta::default()).unwrap();
    t.store(Oid(0), serial, Bytes::from(pickle("appended by zodbrs")))
        .unwrap();
    t.vote().unwrap();
    let tid = Box::new(t).finish().unwrap();
    drop(fs);
    let load: Value = serde_json::from_slice(
        &zodb_it::reftool(["load".as_ref(), py_path.as_os_str(), "0".as_ref()]).stdout,
    )
    .unwrap();
    assert_eq!(load["serial"], hex::encode(tid.to_bytes()));
    assert_eq!(load["data"], hex::encode(pickle("appended by zodbrs")));
}

fn write_plan(dir: &Path) -> String {
    let plan = json!([{
        "tid": "03f58e0000000001", "user": "", "description": "", "extension": "",
        "ops": [{"op": "store", "oid": "0000000000000000", "serial": "0000000000000000", "data": hex::encode(pickle("by python"))}]
    }]);
    let p = dir.join("small.json");
    std::fs::write(&p, serde_json::to_vec(&plan).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn the_lock_excludes_python_and_python_excludes_us() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let Some(py) = zodb_it::python() else { return };
    let copy = zodb_it::TempCopy::new(zodb_it::project_fixtures().join("history/Data.fs"));
    // We hold it: Python's read-write open fails with zc.lockfile's error.
    let fs = FileStorage::open(copy.path(), &OpenOptions::read_write()).unwrap();
    let out: Value = serde_json::from_slice(
        &zodb_it::reftool(["tryopen".as_ref(), copy.path().as_os_str()]).stdout,
    )
    .unwrap();
    assert_eq!(out["error"], "LockError", "{out}");
    drop(fs);
    // Python holds it: our read-write open fails naming Python's pid;
    // read-only opens still work.
    let mut child = Command::new(py)
        .arg(zodb_it::reftool_script())
        .arg("hold")
        .arg(copy.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line.trim().strip_prefix("locked ").unwrap().to_owned();
    let err = FileStorage::open(copy.path(), &OpenOptions::read_write()).unwrap_err();
    assert!(matches!(err, filestorage::Error::Lock(_)), "{err}");
    assert!(
        err.to_string().contains(&pid),
        "{err} should name pid {pid}"
    );
    FileStorage::open_read_only(copy.path()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    // Released: we can write again.
    FileStorage::open(copy.path(), &OpenOptions::read_write()).unwrap();
}
