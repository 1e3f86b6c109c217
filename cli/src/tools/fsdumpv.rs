//! The verbose dump (ZODB's `FileStorage.fsdump.Dumper`): every field of
//! every record, from the first byte to the last, whatever the status.

use std::io::Write;

use filestorage::format::{DATA_HEADER_LEN, MAGIC_LEN, TXN_HEADER_LEN};
use filestorage::{DataFile, RecordKind};

use crate::ToolError;
use crate::pyrepr::{self, Flavor};

/// Writes the verbose dump of `file` to `out`.
pub fn fsdumpv(file: &DataFile, flavor: Flavor, out: &mut dyn Write) -> Result<(), ToolError> {
    let r = file.reader();
    let size = file.size();
    let mut magic = [0u8; 4];
    let n = size.min(MAGIC_LEN) as usize;
    r.backend()
        .read_exact_at(0, &mut magic[..n])
        .map_err(|e| ToolError::io(file.path(), e))?;
    writeln!(out, "{}", "*".repeat(60))?;
    writeln!(
        out,
        "file identifier: {}",
        pyrepr::bytes(&magic[..n], flavor)
    )?;
    let mut pos = MAGIC_LEN;
    while pos < size {
        let h = r.txn_header(pos)?;
        let end = pos + h.tlen;
        writeln!(out, "{}", "=".repeat(60))?;
        writeln!(out, "offset: {pos}")?;
        writeln!(out, "end pos: {end}")?;
        writeln!(out, "transaction id: {}", h.tid)?;
        writeln!(out, "trec len: {}", h.tlen)?;
        writeln!(out, "status: {}", pyrepr::bytes(&[h.status], flavor))?;
        let (user, desc, _ext) = r.txn_strings(pos, &h)?;
        writeln!(out, "user: {}", pyrepr::bytes_or_empty_str(&user, flavor))?;
        writeln!(
            out,
            "description: {}",
            pyrepr::bytes_or_empty_str(&desc, flavor)
        )?;
        writeln!(out, "len(extra): {}", h.elen)?;
        let mut dpos =
            pos + TXN_HEADER_LEN + u64::from(h.ulen) + u64::from(h.dlen) + u64::from(h.elen);
        while dpos < end {
            let rec = r.data_record(dpos)?;
            let d = rec.header;
            if d.vlen != 0 {
                return Err(r
                    .corrupt(
                        dpos,
                        RecordKind::DataRecord,
                        filestorage::format::Problem::Version(d.vlen),
                    )
                    .into());
            }
            writeln!(out, "{}", "-".repeat(60))?;
            writeln!(out, "offset: {dpos}")?;
            writeln!(out, "oid: {}", d.oid)?;
            writeln!(out, "revid: {}", d.tid)?;
            writeln!(out, "previous record offset: {}", d.prev)?;
            writeln!(out, "transaction offset: {}", d.tloc)?;
            writeln!(out, "len(data): {}", d.plen)?;
            if d.plen == 0 {
                writeln!(out, "backpointer: {}", rec.back)?;
            }
            dpos = dpos
                .saturating_add(DATA_HEADER_LEN)
                .saturating_add(if d.plen == 0 { 8 } else { d.plen });
        }
        let trailer = r.u64_at(dpos, RecordKind::Transaction)?;
        writeln!(out, "redundant trec len: {trailer}")?;
        pos = dpos + 8;
    }
    Ok(())
}
