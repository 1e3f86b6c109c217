//! `fstail`: the last transactions of a Data.fs, newest first, with a hash
//! of each one's data records (ZODB's `ZODB/scripts/fstail.py`).
//!
//! Like the Python tool it starts at the physical end of the file and
//! follows the redundant lengths backwards, so it also shows a voted
//! transaction left by a crash, and it never scans the file.

use std::io::Write;

use filestorage::DataFile;
use filestorage::format::MAGIC_LEN;
use filestorage::iter::TxnRevCursor;
use sha1::{Digest, Sha1};

use crate::ToolError;
use crate::pyrepr::{self, Flavor};

/// Writes the last `n` transactions of `file` to `out`.
pub fn fstail(
    file: &DataFile,
    n: usize,
    flavor: Flavor,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let r = file.reader();
    if file.size() <= MAGIC_LEN {
        return Ok(());
    }
    for txn in TxnRevCursor::new(r.clone(), file.size()).take(n) {
        let txn = txn?;
        let h = &txn.header;
        let data = r
            .backend()
            .bytes_at(txn.data_pos(), txn.data_end() - txn.data_pos())
            .map_err(|e| ToolError::io(file.path(), e))?;
        let hash = Sha1::digest(&data);
        writeln!(out, "{}: hash={}", h.tid.timestamp(), hex::encode(hash))?;
        writeln!(
            out,
            "user={} description={} length={} offset={} (+{})",
            pyrepr::bytes_or_empty_str(&txn.user, flavor),
            pyrepr::bytes_or_empty_str(&txn.description, flavor),
            h.tlen,
            txn.pos,
            h.header_len()
        )?;
        writeln!(out)?;
    }
    Ok(())
}
