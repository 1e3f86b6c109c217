//! `fsoids`: every appearance of some oids in a Data.fs: their revisions,
//! the objects that reference them and those they reference (ZODB's
//! `ZODB/scripts/fsoids.py`, `ZODB.FileStorage.fsoids.Tracer`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use bytes::Bytes;
use filestorage::FileStorage;
use zodb_core::pickle::{class_name, decode_record};
use zodb_core::{Oid, StorageError, Tid};

use crate::ToolError;
use crate::pyrepr::{self, Flavor};
use crate::tools::refs::{get_refs, oid_repr};

const NOT_SEEN: &str = "this oid was not defined (no data record for it found)";

fn get_class(data: &[u8]) -> String {
    let (m, c) = class_name(data);
    format!("{m}.{c}")
}

/// fsoids' `shorten`: at most 50 bytes, with ` ... ` in the middle.
fn shorten(s: &[u8]) -> Vec<u8> {
    const SIZE: usize = 50;
    if s.len() <= SIZE {
        return s.to_vec();
    }
    let nleading = (SIZE - 5) / 2;
    let ntrailing = SIZE - nleading;
    let mut out = s[..nleading].to_vec();
    out.extend_from_slice(b" ... ");
    out.extend_from_slice(&s[s.len() - ntrailing..]);
    out
}

/// Parses an oid as Python's `int(text, 0)`: decimal, or `0x`/`0o`/`0b`
/// prefixed, underscores allowed between digits.
pub fn parse_oid_arg(text: &str) -> Result<Oid, ToolError> {
    let bad = || ToolError::Usage(format!("invalid literal for int() with base 0: {text:?}"));
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else {
        if lower.len() > 1
            && lower.starts_with('0')
            && lower.bytes().any(|c| c != b'0' && c != b'_')
        {
            return Err(bad());
        }
        (10, lower.as_str())
    };
    let digits = digits.strip_prefix('_').unwrap_or(digits);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(bad());
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    let v = u64::from_str_radix(&clean, radix).map_err(|_| bad())?;
    if neg && v != 0 {
        return Err(ToolError::Usage(format!("oid {text} is negative")));
    }
    Ok(Oid(v))
}

struct TxnInfo {
    user: Bytes,
    description: Bytes,
    pos: u64,
}

/// Traces `oids` through `fs` and writes fsoids' report to `out`.
pub fn fsoids(
    fs: &FileStorage,
    oids: &[Oid],
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ToolError> {
    if oids.is_empty() {
        return Err(ToolError::Usage("no oids specified".into()));
    }
    // Interesting oid -> revisions seen.
    let mut revisions: BTreeMap<Oid, u64> = oids.iter().map(|&o| (o, 0)).collect();
    let mut oid2name: HashMap<Oid, String> = HashMap::new();
    let mut ref2name: HashMap<Oid, String> = HashMap::new();
    let mut tid2info: HashMap<Tid, TxnInfo> = HashMap::new();
    // (oid, tid, message): sorted at the end as Python sorts its tuples.
    let mut msgs: Vec<(Oid, Option<Tid>, String)> = Vec::new();

    let end = fs.end_pos();
    for txn in fs.txns() {
        let txn = txn?;
        progress(txn.pos, end);
        let tid = txn.tid();
        let produced_before = msgs.len();
        let mut saved: Vec<(Oid, Bytes, u64)> = Vec::new();
        let mut records_map: HashMap<Oid, Bytes> = HashMap::new();
        for rec in fs.data_records(&txn) {
            let at = rec?;
            let pos = at.pos;
            let rec = fs.resolve_record(&at)?;
            match rec.data {
                Some(data) => {
                    if let Some(n) = revisions.get_mut(&rec.oid) {
                        let klass = get_class(&data);
                        msgs.push((rec.oid, Some(tid), format!("new revision {klass} at {pos}")));
                        *n += 1;
                        oid2name.insert(rec.oid, klass.clone());
                        ref2name.insert(rec.oid, klass);
                    }
                    records_map.insert(rec.oid, data.clone());
                    saved.push((rec.oid, data, pos));
                }
                None => {
                    if revisions.contains_key(&rec.oid) {
                        msgs.push((rec.oid, Some(tid), format!("creation undo at {pos}")));
                    }
                }
            }
        }
        for (oid, data, pos) in &saved {
            let refs = get_refs(
                &decode_record(data)
                    .map_err(|e| ToolError::Storage(StorageError::Backend(Box::new(e))))?,
            );
            let oid_interesting = revisions.contains_key(oid);
            for (r, klass) in refs {
                if revisions.contains_key(&r) {
                    let oidclass = ref2name
                        .entry(*oid)
                        .or_insert_with(|| get_class(data))
                        .clone();
                    msgs.push((
                        r,
                        Some(tid),
                        format!("referenced by {} {oidclass} at {pos}", oid_repr(*oid)),
                    ));
                }
                if oid_interesting {
                    let klass = match klass {
                        Some(k) => {
                            ref2name.insert(r, k.clone());
                            k
                        }
                        None => match ref2name.get(&r) {
                            Some(k) => k.clone(),
                            None => match records_map.get(&r) {
                                Some(d) => {
                                    let k = get_class(d);
                                    ref2name.insert(r, k.clone());
                                    k
                                }
                                None => "<unknown>".to_owned(),
                            },
                        },
                    };
                    msgs.push((
                        *oid,
                        Some(tid),
                        format!("references {} {klass} at {pos}", oid_repr(r)),
                    ));
                }
            }
        }
        if msgs.len() > produced_before {
            tid2info.insert(
                tid,
                TxnInfo {
                    user: txn.user.clone(),
                    description: txn.description.clone(),
                    pos: txn.pos,
                },
            );
        }
    }

    for &oid in revisions.keys() {
        if !oid2name.contains_key(&oid) {
            msgs.push((oid, None, NOT_SEEN.to_owned()));
        }
    }
    msgs.sort();
    let mut current: Option<(Oid, Option<Tid>)> = None;
    for (oid, tid, msg) in &msgs {
        if current.map(|c| c.0) != Some(*oid) {
            let nrev = revisions.get(oid).copied().unwrap_or(0);
            let name = oid2name.get(oid).map(String::as_str).unwrap_or("<unknown>");
            let plural = if nrev != 1 { "s" } else { "" };
            writeln!(out, "oid {} {name} {nrev} revision{plural}", oid_repr(*oid))?;
            current = Some((*oid, None));
            if tid.is_none() {
                writeln!(out, "    {msg}")?;
                continue;
            }
        }
        if let Some(t) = tid
            && current.and_then(|c| c.1) != Some(*t)
        {
            current = Some((*oid, Some(*t)));
            if let Some(info) = tid2info.get(t) {
                writeln!(
                    out,
                    "    tid {} offset={} {}",
                    oid_repr(Oid(t.0)),
                    info.pos,
                    t.timestamp()
                )?;
                writeln!(
                    out,
                    "        tid user={}",
                    pyrepr::bytes(&shorten(&info.user), Flavor::Py3)
                )?;
                writeln!(
                    out,
                    "        tid description={}",
                    pyrepr::bytes(&shorten(&info.description), Flavor::Py3)
                )?;
            }
        }
        writeln!(out, "        {msg}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_args_like_python_int_base_0() {
        assert_eq!(parse_oid_arg("0x1f").unwrap(), Oid(31));
        assert_eq!(parse_oid_arg("17").unwrap(), Oid(17));
        assert_eq!(parse_oid_arg("0").unwrap(), Oid(0));
        assert_eq!(parse_oid_arg("0b101").unwrap(), Oid(5));
        assert_eq!(parse_oid_arg("1_000").unwrap(), Oid(1000));
        assert!(parse_oid_arg("017").is_err());
        assert!(parse_oid_arg("x").is_err());
    }

    #[test]
    fn shorten_like_fsoids() {
        assert_eq!(shorten(b"short"), b"short");
        let long: Vec<u8> = (0..60).map(|i| b'a' + (i % 26) as u8).collect();
        let s = shorten(&long);
        assert_eq!(s.len(), 55);
        assert_eq!(&s[22..27], b" ... ");
    }
}
