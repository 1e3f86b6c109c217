//! `zodbrs bigfile cat`: a wendelin.core ZBigFile's bytes, as of a
//! transaction, holes as zeros; what wcfs serves as `head/bigfile/<oid>`
//! (size `(maxKey + 1) * blksize`).
//!
//! Also the helpers the wendelin tools share: the `OID` argument and the
//! snapshot to read at.

use std::io::Write;

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
