//! `reindex --check`: compare `Data.fs.index` with the index a full scan
//! of the file builds, and report every difference.
//!
//! ZODB only checks a handful of records before trusting an index; this is
//! the exhaustive check an operator runs when they suspect the index.

use std::io::Write;

use filestorage::index_file;
use filestorage::{FileStorage, OpenOptions};
use zodb_core::ReadStorage;

use crate::ToolError;

/// What the comparison found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Entries compared.
    pub oids_in_file: u64,
    /// Entries in the saved index.
    pub oids_in_index: u64,
    /// Differences found.
    pub mismatches: u64,
}

/// Checks the `.index` beside `path`, writing one line per difference and
/// a summary to `out`. A missing or unreadable index is reported, not an error.
pub fn check(path: &std::path::Path, out: &mut dyn Write) -> Result<CheckReport, ToolError> {
    let fs = FileStorage::open(
        path,
        &OpenOptions {
            use_index: false,
            ..OpenOptions::default()
        },
    )?;
    let ipath = index_file::index_path(path);
    let bytes = match std::fs::read(&ipath) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => {
            writeln!(out, "{}: cannot read: {e}", ipath.display())?;
            return Ok(CheckReport {
                oids_in_file: fs.object_count(),
                mismatches: 1,
                ..CheckReport::default()
            });
        }
    };
    let mut report = CheckReport {
        oids_in_file: fs.object_count(),
        ..CheckReport::default()
    };
    let (pos, saved) = match index_file::parse(&bytes) {
        Ok(x) => x,
        Err(p) => {
            writeln!(out, "{}: unusable: {p}", ipath.display())?;
            report.mismatches = 1;
            return Ok(report);
        }
    };
    report.oids_in_index = saved.len();
    let mut bad = |out: &mut dyn Write, line: String| -> Result<(), ToolError> {
        report.mismatches += 1;
        writeln!(out, "{line}")?;
        Ok(())
    };
    // The saved index describes the file up to its saved position; records
    // after that are legitimately missing from it.
    let end = fs.end_pos();
    if pos > end {
        bad(
            out,
            format!("saved position {pos} is past the end of committed data {end}"),
        )?;
    } else if let Err(p) = index_file::check_sanity(&fs.reader().with_end(u64::MAX), &saved, pos) {
        bad(out, format!("ZODB's sanity check would reject it: {p}"))?;
    }
    let expected = index_at(&fs, pos.min(end))?;
    report.oids_in_file = expected.len();
    let mut a = expected.iter().peekable();
    let mut b = saved.iter().peekable();
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (None, None) => break,
            (Some((oa, pa)), Some((ob, pb))) if oa == ob => {
                if pa != pb {
                    bad(out, format!("oid {oa}: index says {pb}, file says {pa}"))?;
                }
                a.next();
                b.next();
            }
            (Some((oa, pa)), Some((ob, _))) if oa < ob => {
                bad(
                    out,
                    format!("oid {oa}: missing from the index (current record at {pa})"),
                )?;
                a.next();
            }
            (Some((oa, pa)), None) => {
                bad(
                    out,
                    format!("oid {oa}: missing from the index (current record at {pa})"),
                )?;
                a.next();
            }
            (_, Some((ob, pb))) => {
                bad(
                    out,
                    format!("oid {ob}: in the index at {pb}, but not in the file"),
                )?;
                b.next();
            }
        }
    }
    writeln!(
        out,
        "{}: {} oids in the index (saved at {pos}), {} in the file; {} mismatch{}",
        ipath.display(),
        report.oids_in_index,
        report.oids_in_file,
        report.mismatches,
        if report.mismatches == 1 { "" } else { "es" }
    )?;
    Ok(report)
}

/// The index of `fs` as of position `pos` (a transaction boundary): every
/// record before it, newest per oid.
fn index_at(fs: &FileStorage, pos: u64) -> Result<filestorage::index::FsIndex, ToolError> {
    let mut ix = filestorage::index::FsIndex::new();
    for txn in fs.txns() {
        let txn = txn?;
        if txn.pos >= pos {
            break;
        }
        for rec in fs.data_records(&txn) {
            let rec = rec?;
            ix.insert(rec.header.oid, rec.pos)
                .map_err(|e| ToolError::Usage(e.to_string()))?;
        }
    }
    Ok(ix)
}
