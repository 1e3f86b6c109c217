//! `zodbrs pack`: ZODB's pack (as `zeopack` or `DB.pack(days=...)` run it)
//! on a FileStorage or through a ZEO server, and `zodbrs reindex`: rebuild
//! and write `.index`.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use filestorage::pack::PackOutcome;
use filestorage::{FileStorage, OpenOptions};
use zodb_core::{ReadStorage, Tid, TimeStamp, WriteStorage};

use crate::ToolError;

/// Parses a pack time: Unix seconds (`1764000000.25`), an ISO 8601 UTC time
/// (`2025-11-24T16:00:00Z`, fractions allowed), or a 16-hex-digit tid.
pub fn parse_pack_time(s: &str) -> Result<Tid, ToolError> {
    let bad = |why: &str| ToolError::Usage(format!("invalid pack time {s:?}: {why}"));
    if s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return s.parse::<Tid>().map_err(|e| bad(&e.to_string()));
    }
    if let Ok(t) = s.parse::<f64>() {
        if !t.is_finite() || t <= 0.0 {
            return Err(bad("must be a positive number of seconds"));
        }
        return TimeStamp::from_unix(t)
            .map(TimeStamp::tid)
            .map_err(|e| bad(&e.to_string()));
    }
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e: jiff::Error| bad(&format!("not Unix seconds, ISO 8601 or a tid ({e})")))?;
    let t = ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9;
    TimeStamp::from_unix(t)
        .map(TimeStamp::tid)
        .map_err(|e| bad(&e.to_string()))
}

/// The pack time for `--days N`: now minus N days, as `DB.pack(days=N)`.
pub fn days_ago(days: f64) -> Result<Tid, ToolError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    TimeStamp::from_unix(now - days * 86400.0)
        .map(TimeStamp::tid)
        .map_err(|e| ToolError::Usage(format!("invalid --days {days}: {e}")))
}

/// Packs `path` to `pack_time`, reporting what happened to `out`.
pub fn pack(
    path: &Path,
    pack_time: Tid,
    gc: bool,
    out: &mut dyn Write,
) -> Result<PackOutcome, ToolError> {
    let mut bar = crate::tools::progress::ByteProgress::new("pack");
    let fs = FileStorage::open_with_progress(path, &OpenOptions::read_write(), &mut |p, s| {
        bar.at(p, s)
    })?;
    let outcome = fs.pack_with_progress(pack_time, gc, &mut |_, p, s| bar.at(p, s))?;
    drop(bar);
    match &outcome {
        PackOutcome::Empty => writeln!(out, "{}: empty, nothing to pack", path.display())?,
        PackOutcome::Redundant => writeln!(
            out,
            "{}: already packed to a later time, or no change since the last pack",
            path.display()
        )?,
        PackOutcome::NothingToFree => writeln!(
            out,
            "{}: packing to {} frees nothing; unchanged",
            path.display(),
            pack_time.timestamp()
        )?,
        PackOutcome::Packed {
            old_size,
            new_size,
            concurrent_txns,
        } => {
            writeln!(
                out,
                "{}: packed to {} ({}): {old_size} -> {new_size} bytes ({:.1}%), old file kept as {}.old",
                path.display(),
                pack_time,
                pack_time.timestamp(),
                100.0 * *new_size as f64 / (*old_size).max(1) as f64,
                path.display()
            )?;
            if *concurrent_txns > 0 {
                writeln!(
                    out,
                    "{concurrent_txns} transactions committed during the pack were kept"
                )?;
            }
        }
    }
    Ok(outcome)
}

/// Packs any writable storage to `pack_time` (`zodbrs pack zeo://...`: the
/// server packs its storage, and this waits until it has), reporting to
/// `out` under the name `what`. A ZEO server's own configuration decides
/// garbage collection, so `gc == false` is refused there.
pub fn pack_storage(
    stor: &dyn WriteStorage,
    what: &str,
    pack_time: Tid,
    gc: bool,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    stor.pack(pack_time, gc)?;
    writeln!(
        out,
        "{what}: packed to {} ({})",
        pack_time,
        pack_time.timestamp()
    )?;
    Ok(())
}

/// Rebuilds the index of `path` by a full scan and writes `.index`.
pub fn reindex(
    path: &Path,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ToolError> {
    let opts = OpenOptions {
        use_index: false,
        ..OpenOptions::read_write()
    };
    let fs = FileStorage::open_with_progress(path, &opts, progress)?;
    fs.save_index()?;
    writeln!(
        out,
        "{}: {} objects, {} bytes of committed data, index written",
        path.display(),
        fs.object_count(),
        fs.end_pos()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_times() {
        assert_eq!(
            parse_pack_time("03805ec800000000").unwrap(),
            Tid(0x0380_5ec8_0000_0000)
        );
        assert_eq!(
            parse_pack_time("1251660000").unwrap().to_string(),
            "03805ec800000000"
        );
        assert_eq!(
            parse_pack_time("2009-08-30T19:20:00Z").unwrap().to_string(),
            "03805ec800000000"
        );
        assert_eq!(
            parse_pack_time("1251660000.25").unwrap(),
            TimeStamp::from_unix(1_251_660_000.25).unwrap().tid()
        );
        assert!(parse_pack_time("yesterday-ish").is_err());
        assert!(parse_pack_time("-5").is_err());
    }
}
