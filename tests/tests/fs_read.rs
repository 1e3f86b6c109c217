//! The FileStorage read side answers exactly what Python ZODB answers, on
//! every fixture database: every load, loadBefore, loadSerial and history
//! entry of every oid, and the whole iteration with positions.

use std::path::Path;

use filestorage::FileStorage;
use serde_json::{Value, json};
use zodb_core::storage::Revision;
use zodb_core::{Oid, ReadStorage, StorageError, Tid};

fn hx(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

fn tid(t: Tid) -> Value {
    hx(&t.to_bytes())
}

/// The name reftool gives Python's exception for our error.
fn error(e: &StorageError) -> Value {
    let name = if e.is_pos_key_error() {
        "POSKeyError"
    } else {
        "Error"
    };
    json!({ "error": name })
}

fn before(r: Result<Option<Revision>, StorageError>) -> Value {
    match r {
        Ok(None) => Value::Null,
        Ok(Some(rev)) => json!({
            "data": hx(&rev.data),
            "serial": tid(rev.serial),
            "next_serial": rev.next_serial.map(tid).unwrap_or(Value::Null),
        }),
        Err(e) => error(&e),
    }
}

fn readall(fs: &FileStorage) -> Value {
    let mut doc = serde_json::Map::new();
    for (oid, _) in fs.oids() {
        let load = match fs.load(oid) {
            Ok((d, s)) => json!({ "data": hx(&d), "serial": tid(s) }),
            Err(e) => error(&e),
        };
        let mut revisions = serde_json::Map::new();
        let history = match fs.history(oid, usize::MAX) {
            Ok(h) => {
                for e in &h {
                    let s = e.txn.tid;
                    revisions.insert(
                        hex::encode(s.to_bytes()),
                        json!({
                            "serial": match fs.load_serial(oid, s) {
                                Ok(d) => json!({ "data": hx(&d) }),
                                Err(e) => error(&e),
                            },
                            "before": before(fs.load_before(oid, s)),
                            "before_next": before(fs.load_before(oid, s.next())),
                        }),
                    );
                }
                Value::Array(
                    h.iter()
                        .map(|e| {
                            json!({
                                "tid": tid(e.txn.tid),
                                "size": e.size,
                                "user": hx(&e.txn.meta.user),
                                "description": hx(&e.txn.meta.description),
                            })
                        })
                        .collect(),
                )
            }
            Err(e) => error(&e),
        };
        doc.insert(
            hex::encode(oid.to_bytes()),
            json!({ "load": load, "history": history, "revisions": revisions }),
        );
    }
    Value::Object(doc)
}

/// Our answers in the shape of reftool's `iterate` document (also used by
/// `fs_crash`).
pub(crate) fn iterate(fs: &FileStorage) -> Value {
    let mut txns = Vec::new();
    for t in fs.txns() {
        let t = t.unwrap();
        let records: Vec<Value> = fs
            .data_records(&t)
            .map(|r| {
                let at = r.unwrap();
                let rec = fs.resolve_record(&at).unwrap();
                json!({
                    "oid": hx(&rec.oid.to_bytes()),
                    "tid": tid(rec.tid),
                    "data": rec.data.as_deref().map(hx).unwrap_or(Value::Null),
                    "data_txn": rec.data_txn.map(tid).unwrap_or(Value::Null),
                    "pos": at.pos,
                })
            })
            .collect();
        txns.push(json!({
            "tid": tid(t.tid()),
            "status": char::from(t.header.status).to_string(),
            "user": hx(&t.user),
            "description": hx(&t.description),
            "extension_bytes": hx(&t.extension),
            "pos": t.pos,
            "records": records,
        }));
    }
    json!({
        "magic": fs.magic().as_str(),
        "last_transaction": tid(fs.last_transaction()),
        "len": fs.object_count(),
        "size": fs.end_pos(),
        "transactions": txns,
    })
}

/// Python's iterate document without the decoded extension (compared as
/// bytes instead).
fn python_iterate(path: &Path) -> Value {
    let out = zodb_it::reftool(["iterate".as_ref(), path.as_os_str()]);
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for t in v["transactions"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("extension");
    }
    if v["magic"] == "" {
        v["magic"] = Value::String(String::new());
    }
    v
}

/// Where two JSON documents first differ (`a` is Python's), or `None`.
pub(crate) fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_difference(p, q, &format!("{at}.{k}")) {
                            return Some(d);
                        }
                    }
                    (p, q) => return Some(format!("{at}.{k}: python {p:?}, ours {q:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_difference(p, q, &format!("{at}[{i}]")) {
                    return Some(d);
                }
            }
            (x.len() != y.len())
                .then(|| format!("{at}: python has {} items, ours {}", x.len(), y.len()))
        }
        _ => (a != b).then(|| {
            let s = |v: &Value| {
                let t = v.to_string();
                if t.len() > 200 {
                    format!("{}...", &t[..200])
                } else {
                    t
                }
            };
            format!("{at}: python {}, ours {}", s(a), s(b))
        }),
    }
}

#[test]
fn every_read_equals_python_zodb() {
    let Some(_) = zodb_it::python() else { return };
    for path in zodb_it::all_databases() {
        let fs = FileStorage::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
        let out = zodb_it::reftool(["readall".as_ref(), path.as_os_str()]);
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ours = readall(&fs);
        if let Some(d) = first_difference(&theirs, &ours, &path.display().to_string()) {
            panic!("{d}");
        }
    }
}

#[test]
fn iteration_equals_python_zodb() {
    let Some(_) = zodb_it::python() else { return };
    for path in zodb_it::all_databases() {
        let fs = FileStorage::open_read_only(&path).unwrap();
        let theirs = python_iterate(&path);
        let ours = iterate(&fs);
        if let Some(d) = first_difference(&theirs, &ours, &path.display().to_string()) {
            panic!("{d}");
        }
    }
}

#[test]
fn snapshot_reads_see_the_past() {
    let path = zodb_it::project_fixtures().join("history/Data.fs");
    let fs = FileStorage::open_read_only(&path).unwrap();
    let txns: Vec<_> = fs.txns().map(|t| t.unwrap()).collect();
    let mid = txns[txns.len() / 2].tid();
    let snap = zodb_core::storage::Snapshot::at(&fs, mid);
    // As of `mid`, every object's serial is at most `mid`, and objects
    // created later do not exist.
    for (oid, _) in fs.oids() {
        match snap.load(oid) {
            Ok((_, serial)) => assert!(serial <= mid),
            Err(e) => assert!(e.is_pos_key_error(), "{e}"),
        }
    }
    assert!(snap.load(Oid(u64::MAX)).unwrap_err().is_pos_key_error());
}
