//! Between ZEO's Python-shaped results and the storage traits' types.
//!
//! The awkward one is the transaction extension. A storage keeps it as a
//! pickle (what ZODB wrote), but ZEO passes it as a dict both ways:
//! `tpc_begin` sends the dict and the server pickles it, `iterator_next`,
//! `history` and `undoLog` return it unpickled. So the client unpickles
//! the caller's bytes to send them, and re-pickles what it receives with
//! the server's encoder ([`crate::server::extension`]), which writes what
//! ZODB's `dumps(ext, 3)` writes: a history written by Python 3 ZODB reads
//! back byte-identical. (Over msgpack lists come back as tuples, and a
//! pickle written by Python 2 ZODB with protocol 1 or 2 comes back as
//! protocol 3: ClientStorage has the same limits, since the wire carries
//! only the dict.)

use bytes::Bytes;
use zodb_core::storage::{HistoryEntry, UndoEntry};
use zodb_core::{Tid, TxnInfo, TxnMeta, TxnStatus};

use crate::encoding::GlobalPolicy;
use crate::reply::{IteratedTxn, StorageInfo};
use crate::value::Value;

use super::ZeoError;

/// The dict to send with `tpc_begin` for a stored extension pickle.
pub(crate) fn extension_to_dict(stored: &Bytes) -> Result<Value, ZeoError> {
    if stored.is_empty() {
        return Ok(Value::Dict(Vec::new()));
    }
    match crate::encoding::pickle::decode(stored, GlobalPolicy::FromClient) {
        Ok(d @ Value::Dict(_)) => Ok(d),
        Ok(other) => Err(ZeoError::Extension(format!(
            "it is a pickled {}, not a dict",
            other.type_name()
        ))),
        Err(e) => Err(ZeoError::Extension(e.to_string())),
    }
}

/// The stored form of an extension dict received from the server.
pub(crate) fn extension_to_pickle(dict: &Value) -> Result<Bytes, ZeoError> {
    crate::server::extension::to_pickle(dict).map_err(|e| ZeoError::Extension(e.to_string()))
}

/// The extension made of the items of `dict` other than `fixed` (the keys
/// `history` and `undoLog` add to the transaction's extension).
fn extension_except(dict: &[(Value, Value)], fixed: &[&str]) -> Result<Bytes, ZeoError> {
    let rest: Vec<(Value, Value)> = dict
        .iter()
        .filter(|(k, _)| !k.as_text().is_some_and(|k| fixed.contains(&k)))
        .cloned()
        .collect();
    extension_to_pickle(&Value::Dict(rest))
}

fn bytes_field(dict: &Value, key: &str) -> Bytes {
    dict.dict_get(key)
        .and_then(|v| match v {
            Value::Str(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
            v => v.as_bytes().cloned(),
        })
        .unwrap_or_default()
}

fn shape(method: &'static str) -> ZeoError {
    ZeoError::Shape {
        method,
        source: crate::reply::ShapeError,
    }
}

/// A transaction header from `iterator_next`.
pub(crate) fn txn_info(t: IteratedTxn) -> Result<TxnInfo, ZeoError> {
    let status = match t.status.as_bytes() {
        [b] => TxnStatus::from_byte(*b),
        _ => None,
    }
    .ok_or_else(|| shape("iterator_next"))?;
    Ok(TxnInfo {
        tid: t.tid,
        status,
        meta: TxnMeta {
            user: t.user,
            description: t.description,
            extension: extension_to_pickle(&t.extension)?,
        },
    })
}

/// `history(oid, size)`'s list of dicts.
pub(crate) fn history(v: &Value) -> Result<Vec<HistoryEntry>, ZeoError> {
    const FIXED: [&str; 5] = ["time", "user_name", "description", "tid", "size"];
    let items = v.as_seq().ok_or_else(|| shape("history"))?;
    items
        .iter()
        .map(|d| {
            let dict = d.as_dict().ok_or_else(|| shape("history"))?;
            let tid = d
                .dict_get("tid")
                .and_then(Value::as_tid)
                .ok_or_else(|| shape("history"))?;
            let size = d
                .dict_get("size")
                .and_then(Value::as_i64)
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0);
            Ok(HistoryEntry {
                txn: TxnInfo {
                    tid,
                    // history does not say; anything it lists was committed.
                    status: TxnStatus::Committed,
                    meta: TxnMeta {
                        user: bytes_field(d, "user_name"),
                        description: bytes_field(d, "description"),
                        extension: extension_except(dict, &FIXED)?,
                    },
                },
                size,
            })
        })
        .collect()
}

/// `undoLog(first, last)`'s list of dicts.
pub(crate) fn undo_log(v: &Value) -> Result<Vec<UndoEntry>, ZeoError> {
    const FIXED: [&str; 5] = ["id", "time", "user_name", "size", "description"];
    let items = v.as_seq().ok_or_else(|| shape("undoLog"))?;
    items
        .iter()
        .map(|d| {
            let dict = d.as_dict().ok_or_else(|| shape("undoLog"))?;
            let id = d
                .dict_get("id")
                .and_then(Value::as_bytes)
                .cloned()
                .ok_or_else(|| shape("undoLog"))?;
            // FileStorage's undo ids are the tid in base64; a storage with
            // other ids still gets its entries, with the time's tid.
            let tid = undo_id_tid(&id)
                .or_else(|| {
                    d.dict_get("time")
                        .and_then(Value::as_f64)
                        .and_then(|t| zodb_core::TimeStamp::from_unix(t).ok())
                        .map(zodb_core::TimeStamp::tid)
                })
                .ok_or_else(|| shape("undoLog"))?;
            let size = d
                .dict_get("size")
                .and_then(Value::as_i64)
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0);
            Ok(UndoEntry {
                txn: TxnInfo {
                    tid,
                    status: TxnStatus::Committed,
                    meta: TxnMeta {
                        user: bytes_field(d, "user_name"),
                        description: bytes_field(d, "description"),
                        extension: extension_except(dict, &FIXED)?,
                    },
                },
                id: id.to_vec(),
                size,
            })
        })
        .collect()
}

/// Whether the server's storage can be iterated (ClientStorage looks for
/// the same interface before offering `iterator`).
pub(crate) fn supports_iteration(info: &StorageInfo) -> bool {
    info.interfaces
        .iter()
        .any(|(m, n)| m == "ZODB.interfaces" && n == "IStorageIteration")
}

/// Whether the server's storage keeps blobs (`IBlobStorage`, which
/// ClientStorage looks for too).
pub(crate) fn supports_blobs(info: &StorageInfo) -> bool {
    info.interfaces
        .iter()
        .any(|(m, n)| m == "ZODB.interfaces" && n == "IBlobStorage")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// FileStorage's undo id of a transaction: its tid in base64, no newline
/// (`base64.encodebytes(tid).rstrip()`), 12 characters.
pub(crate) fn undo_id(tid: Tid) -> Bytes {
    let b = tid.to_bytes();
    let mut out = Vec::with_capacity(12);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(B64.get(idx).copied().unwrap_or(b'='));
            } else {
                out.push(b'=');
            }
        }
    }
    Bytes::from(out)
}

/// The tid of a FileStorage undo id, if it is one.
pub(crate) fn undo_id_tid(id: &[u8]) -> Option<Tid> {
    if id.len() != 12 {
        return None;
    }
    let mut bits = 0u128;
    let mut nbits = 0u32;
    for &c in id.iter().take_while(|&&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)?;
        bits = (bits << 6) | v as u128;
        nbits += 6;
    }
    if nbits < 64 {
        return None;
    }
    let tid = (bits >> (nbits - 64)) as u64;
    (undo_id(Tid(tid)).as_ref() == id).then_some(Tid(tid))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    #[test]
    fn undo_ids_are_base64_tids() {
        // Captured from runzeo (spec zeo.md §4 undoa): b'BA1CNH86qJk='.
        let tid = Tid(0x040d_4234_7f3a_a899);
        assert_eq!(&undo_id(tid)[..], b"BA1CNH86qJk=");
        assert_eq!(undo_id_tid(b"BA1CNH86qJk="), Some(tid));
        assert_eq!(undo_id_tid(b"short"), None);
        assert_eq!(undo_id_tid(b"BA1CNH86qJk!"), None);
        for t in [0u64, 1, u64::MAX, 0x0285_cbac_258b_f266] {
            assert_eq!(undo_id_tid(&undo_id(Tid(t))), Some(Tid(t)));
        }
    }

    #[test]
    fn extensions_round_trip_as_zodb_pickles_them() {
        let stored = crate::server::extension::to_pickle(&Value::str_dict([
            ("user", Value::str("x")),
            ("n", Value::Int(1)),
        ]))
        .unwrap();
        let dict = extension_to_dict(&stored).unwrap();
        assert_eq!(extension_to_pickle(&dict).unwrap(), stored);
        assert_eq!(
            extension_to_dict(&Bytes::new()).unwrap(),
            Value::Dict(vec![])
        );
        assert!(
            extension_to_pickle(&Value::Dict(vec![]))
                .unwrap()
                .is_empty()
        );
        assert!(extension_to_dict(&Bytes::from_static(b"\x80\x03K\x01.")).is_err());
    }

    #[test]
    fn history_dicts() {
        let d = Value::List(vec![Value::str_dict([
            ("k", Value::str("v")),
            ("time", Value::Float(1.5)),
            ("user_name", Value::bytes(&b"u"[..])),
            ("description", Value::bytes(&b"d"[..])),
            ("tid", Value::tid(Tid(7))),
            ("size", Value::Int(42)),
        ])]);
        let h = history(&d).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].txn.tid, Tid(7));
        assert_eq!(h[0].size, 42);
        assert_eq!(&h[0].txn.meta.user[..], b"u");
        assert_eq!(
            extension_to_dict(&h[0].txn.meta.extension).unwrap(),
            Value::str_dict([("k", Value::str("v"))])
        );
    }
}
