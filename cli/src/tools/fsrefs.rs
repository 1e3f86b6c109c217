//! `fsrefs`: find references to objects that do not exist, cannot be
//! loaded, or whose creation was undone (ZODB's `ZODB/scripts/fsrefs.py`).

use std::collections::HashSet;
use std::io::Write;

use bytes::Bytes;
use filestorage::FileStorage;
use zodb_core::pickle::{class_name, decode_record};
use zodb_core::{Oid, ReadStorage, StorageError};

use crate::ToolError;
use crate::tools::refs::{get_refs, oid_repr};

/// Checks every current object of `fs` and reports its dangling references
/// to `out`. With `verbose`, objects that fail to load are explained on `err`.
pub fn fsrefs(
    fs: &FileStorage,
    verbose: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ToolError> {
    // Visit objects in file order, as fsrefs does, to read the file sequentially.
    let mut by_pos: Vec<(u64, Oid)> = fs.oids().into_iter().map(|(o, p)| (p, o)).collect();
    by_pos.sort_unstable();
    let mut undone = HashSet::new();
    let mut noload = HashSet::new();
    let mut loaded: Vec<(Oid, Bytes, zodb_core::Tid)> = Vec::new();
    let end = fs.end_pos();
    for &(pos, oid) in &by_pos {
        progress(pos / 2, end);
        match fs.load(oid) {
            Ok((data, serial)) => loaded.push((oid, data, serial)),
            Err(e) if e.is_pos_key_error() => {
                undone.insert(oid);
            }
            Err(e) => {
                if verbose {
                    writeln!(
                        err,
                        "oid {}: {}",
                        oid_repr(oid),
                        zodb_core::error_report(&e)
                    )?;
                }
                noload.insert(oid);
            }
        }
    }
    let n = loaded.len().max(1) as u64;
    for (i, (oid, data, serial)) in loaded.iter().enumerate() {
        progress(end / 2 + end / 2 * i as u64 / n, end);
        let refs = match decode_record(data) {
            Ok(rec) => get_refs(&rec),
            Err(e) => {
                // Python's get_refs would raise here and stop fsrefs; we
                // report the record and go on to check the others.
                return Err(ToolError::Storage(StorageError::Backend(Box::new(e))));
            }
        };
        let mut missing = Vec::new();
        for (r, klass) in refs {
            let klass = klass.unwrap_or_else(|| "<unknown>".to_owned());
            if fs.current_pos(r).is_none() {
                missing.push((r, klass.clone(), "missing"));
            }
            if noload.contains(&r) {
                missing.push((r, klass.clone(), "failed to load"));
            }
            if undone.contains(&r) {
                missing.push((r, klass, "object creation was undone"));
            }
        }
        if missing.is_empty() {
            continue;
        }
        let (m, c) = class_name(data);
        writeln!(out, "oid {:#x} {m}.{c}", oid.0)?;
        writeln!(
            out,
            "last updated: {}, tid={:#x}",
            serial.timestamp(),
            serial.0
        )?;
        writeln!(
            out,
            "refers to invalid object{}:",
            if missing.len() > 1 { "s" } else { "" }
        )?;
        for (r, klass, reason) in missing {
            writeln!(
                out,
                "\toid {} {reason}: {}",
                oid_repr(r),
                crate::pyrepr::str_ascii(&klass)
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}
