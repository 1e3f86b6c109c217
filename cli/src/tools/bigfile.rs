//! `zodbrs bigfile cat`: a wendelin.core ZBigFile's bytes, as of a
//! transaction, holes as zeros; what wcfs serves as `head/bigfile/<oid>`
//! (size `(maxKey + 1) * blksize`).
//!
//! Also the helpers the wendelin tools share: the `OID` argument and a
//! byte-count progress bar.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use zblk::file::ZBigFile;
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, Tid};

use crate::ToolError;
use crate::tools::fsoids::parse_oid_arg;

/// Parses an OID argument: 16 hex digits as zodbtools and fsdump print
/// oids, anything else as a Python int literal (`17`, `0x11`), as ZODB's
/// scripts take them.
pub fn parse_oid(text: &str) -> Result<Oid, ToolError> {
    if text.len() == 16 && text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return text
            .parse()
            .map_err(|e| ToolError::Usage(format!("oid {text:?}: {e}")));
    }
    parse_oid_arg(text)
}

/// The snapshot `--at` names: the given tid, else the last transaction.
pub fn snapshot<'s>(
    stor: &'s dyn ReadStorage,
    at: Option<Tid>,
) -> Snapshot<'s, dyn ReadStorage + 's> {
    match at {
        Some(tid) => Snapshot::at(stor, tid),
        None => Snapshot::latest(stor),
    }
}

/// A bar of bytes done out of a total, drawn on stderr only when stderr is
/// a terminal and the work has run for a second (pipes and tests stay
/// quiet, small files do not flash a bar). Dropping it clears the bar.
#[derive(Debug)]
pub struct ByteProgress {
    enabled: bool,
    what: &'static str,
    total: u64,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl ByteProgress {
    /// Progress of `what` towards `total` bytes.
    pub fn new(what: &'static str, total: u64) -> ByteProgress {
        ByteProgress {
            enabled: std::io::stderr().is_terminal(),
            what,
            total,
            started: Instant::now(),
            bar: None,
        }
    }

    /// Reports `done` bytes.
    pub fn at(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        if self.bar.is_none() {
            if self.started.elapsed() < Duration::from_secs(1) {
                return;
            }
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(self.what);
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }
}

impl Drop for ByteProgress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Writes ZBigFile `oid`'s bytes as of `at` (default: latest) to `out`;
/// returns the file size.
pub fn cat(
    stor: &dyn ReadStorage,
    oid: Oid,
    at: Option<Tid>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, ToolError> {
    let file = ZBigFile::open(snapshot(stor, at), oid)?;
    let size = file.size()?;
    file.write_range(0, size, out, &mut |done| progress(done, size))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_as_hex_or_python_ints() {
        assert_eq!(parse_oid("0000000000000010").unwrap(), Oid(16));
        assert_eq!(parse_oid("00000000000000ff").unwrap(), Oid(255));
        assert_eq!(parse_oid("16").unwrap(), Oid(16));
        assert_eq!(parse_oid("0x10").unwrap(), Oid(16));
        assert_eq!(parse_oid("1_000").unwrap(), Oid(1000));
        assert!(parse_oid("ff").is_err());
        assert!(parse_oid("-1").is_err());
        assert!(parse_oid("000000000000001g").is_err());
    }
}
