//! `fstest`: an independent consistency check of a Data.fs, with ZODB's
//! `ZODB/scripts/fstest.py` messages.
//!
//! It deliberately does not use the engine's scan: a checker that shares
//! the reader's logic would share its bugs. It decodes headers through
//! [`filestorage::format`] and applies fstest's own rules, reporting the
//! first problem in fstest's words. Unlike Python 3's fstest it accepts
//! `FS21` files as well as `FS30`.

use std::io::Write;

use filestorage::DataFile;
use filestorage::format::{
    DATA_HEADER_LEN, DataHeader, MAGIC_LEN, Magic, TXN_HEADER_LEN, TxnHeader,
};

use crate::ToolError;
use crate::pyrepr::{self, Flavor};

/// The first inconsistency found, worded as fstest words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

fn hexify(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

/// Checks `file`, writing fstest's progress lines to `out` at `verbose` ≥ 1
/// (transactions) and ≥ 2 (objects). `Ok(Err(_))` is a format problem
/// (fstest exits with it), `Err(_)` an I/O failure.
pub fn fstest(
    file: &DataFile,
    verbose: u32,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Result<(), FormatError>, ToolError> {
    let path = file.path().display().to_string();
    let b = file.backend();
    let size = file.size();
    let read = |pos: u64, buf: &mut [u8]| -> usize {
        // Like Python's file.read: as many bytes as the file has.
        let n = (size.saturating_sub(pos)).min(buf.len() as u64) as usize;
        if let Some(dst) = buf.get_mut(..n)
            && b.read_exact_at(pos, dst).is_err()
        {
            return 0;
        }
        n
    };
    if size == 0 {
        return Ok(Err(FormatError("empty file".into())));
    }
    let mut magic = [0u8; 4];
    if read(0, &mut magic) != 4 || Magic::from_bytes(magic).is_none() {
        return Ok(Err(FormatError("invalid file header".into())));
    }
    let mut pos = MAGIC_LEN;
    let mut ltid = [0u8; 8];
    let mut i = 0u64;
    loop {
        progress(pos, size);
        let mut hb = [0u8; TXN_HEADER_LEN as usize];
        let n = read(pos, &mut hb);
        if n == 0 {
            break;
        }
        if n != hb.len() {
            return Ok(Err(FormatError(format!("{path} truncated at {pos}"))));
        }
        let h = TxnHeader::decode(&hb);
        let tid = h.tid.to_bytes();
        let tmeta_len = h.header_len();
        if tid <= ltid {
            return Ok(Err(FormatError(format!(
                "{path} time-stamp reduction at {pos}: {} <= {}",
                hexify(&tid),
                hexify(&ltid)
            ))));
        }
        ltid = tid;
        let tl = h.tlen;
        if pos
            .checked_add(tl)
            .and_then(|x| x.checked_add(8))
            .is_none_or(|e| e > size)
        {
            return Ok(Err(FormatError(format!(
                "{path} truncated possibly because of damaged records at {pos}"
            ))));
        }
        if h.status == b'c' {
            return Ok(Err(FormatError(format!(
                "{path} checkpoint flag was not cleared at {pos}"
            ))));
        }
        if !matches!(h.status, b' ' | b'u' | b'p') {
            return Ok(Err(FormatError(format!(
                "{path} has invalid status '{}' at {pos}",
                pyrepr::bytes(&[h.status], Flavor::Py3)
            ))));
        }
        if tmeta_len > tl {
            return Ok(Err(FormatError(format!(
                "{path} has an invalid transaction header at {pos}"
            ))));
        }
        let tpos = pos;
        let tend = tpos + tl;
        if h.status != b'u' {
            pos = tpos + tmeta_len;
            let mut j = 0u64;
            while pos < tend {
                let dpos = pos;
                let mut db = [0u8; DATA_HEADER_LEN as usize];
                if read(pos, &mut db) != db.len() {
                    return Ok(Err(FormatError(format!("{path} truncated at {pos}"))));
                }
                let d = DataHeader::decode(&db);
                // Records of ZODB < 3.9 with a version carry 16 more bytes and the version string.
                let extra = if d.vlen != 0 {
                    16 + u128::from(d.vlen)
                } else {
                    0
                };
                if d.tloc != tpos {
                    return Ok(Err(FormatError(format!(
                        "{path} data record exceeds transaction record at {pos}: tloc {} != tpos {tpos}",
                        d.tloc
                    ))));
                }
                // Python's integers do not overflow: report the true end.
                let end = u128::from(pos)
                    + u128::from(DATA_HEADER_LEN)
                    + u128::from(if d.plen == 0 { 8 } else { d.plen })
                    + extra;
                if end > u128::from(tend) {
                    return Ok(Err(FormatError(format!(
                        "{path} has data records that extend beyond the transaction record; end at {end}"
                    ))));
                }
                pos = end as u64;
                if verbose >= 2 {
                    writeln!(
                        out,
                        "{dpos:10}: object oid {} #{j}",
                        hexify(&d.oid.to_bytes())
                    )?;
                }
                j += 1;
            }
        }
        let mut rtl = [0u8; 8];
        if read(tend, &mut rtl) != 8 || u64::from_be_bytes(rtl) != tl {
            return Ok(Err(FormatError(format!(
                "{path} has inconsistent transaction length for undone transaction at {pos}"
            ))));
        }
        if verbose >= 1 {
            writeln!(out, "{tpos:10}: transaction tid {} #{i} ", hexify(&tid))?;
        }
        i += 1;
        pos = tend + 8;
    }
    if verbose >= 1 {
        write!(out, "no errors detected")?;
    }
    Ok(Ok(()))
}
