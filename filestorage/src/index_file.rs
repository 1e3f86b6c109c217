//! The `Data.fs.index` file: ZODB's saved `fsIndex`, so a storage opens
//! without scanning the whole file.
//!
//! Format (ZODB ≥ 3.10, `fsIndex.save`): pickles back to back, written with
//! the file's pickle protocol and `fast` mode (no memo):
//! the int `pos` (end of the last transaction when saved); then one tuple
//! `(prefix, data)` per 6-byte oid prefix in ascending order, where `data`
//! is every 2-byte oid suffix followed by every 6-byte position; then `None`.
//! Python 2 files hold the strings as py2 `str`, Python 3 files as `bytes`;
//! both are accepted here (ZODB 6 itself cannot read the Python 2 ones).
//!
//! A loaded index is only trusted after the same sanity check ZODB does
//! (`_check_sanity`), optionally followed by a deeper one (the Go reader's:
//! every oid in the last N transactions). Anything wrong means "rebuild by
//! scanning", never an error for the user.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use zodb_core::{Oid, Tid};

use crate::error::RecordKind;
use crate::format::{MAGIC_LEN, TXN_TRAILER_LEN};
use crate::index::FsIndex;
use crate::iter::DataCursor;
use crate::reader::Reader;

/// `Data.fs` → `Data.fs.index`.
pub fn index_path(data_fs: &Path) -> PathBuf {
    crate::file::sibling(data_fs, ".index")
}

/// How thoroughly a saved index is checked before it is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexCheck {
    /// ZODB's check: the position is plausible and the first (up to 5)
    /// records of the last non-empty transaction agree with the index.
    #[default]
    Zodb,
    /// ZODB's check, then every oid written by the last `txns`
    /// transactions must point at its newest record there (the Go
    /// reader's `Verify`); when that covers the whole file, also no extra oids.
    Deep {
        /// Number of transactions to check, from the end.
        txns: usize,
    },
}

/// Where the in-memory index came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexOrigin {
    /// Loaded from `.index`, then completed by scanning from `pos`.
    Loaded {
        /// The position saved in the file.
        pos: u64,
    },
    /// Built by scanning the whole file.
    Rebuilt {
        /// Why the `.index` was not used.
        reason: RebuildReason,
    },
}

/// Why an index was rebuilt by scanning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebuildReason {
    /// There is no `.index` file.
    Missing,
    /// The caller asked not to use it.
    NotRequested,
    /// The Data.fs is empty.
    EmptyFile,
    /// The `.index` exists but was unusable.
    Invalid(IndexFileProblem),
}

/// What is wrong with a `.index` file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexFileProblem {
    /// It could not be read.
    #[error("cannot read index file: {0}")]
    Io(String),
    /// A pickle in it does not decode.
    #[error("pickle error at byte {offset}: {message}")]
    Pickle {
        /// Offset of the failing pickle in the file.
        offset: usize,
        /// The decoder's message.
        message: String,
    },
    /// ZODB ≤ 3.9's single-pickle format (ZODB converts it; we rescan).
    #[error("old (ZODB <= 3.9) index format")]
    OldFormat,
    /// A value of an unexpected shape.
    #[error("unexpected value at byte {offset}: {what}")]
    BadEntry {
        /// Offset of the pickle.
        offset: usize,
        /// What was wrong.
        what: String,
    },
    /// The saved position is not a transaction end of this file.
    #[error("saved position {pos} is implausible for a file of {size} bytes")]
    BadPos {
        /// The saved position.
        pos: u64,
        /// The Data.fs size.
        size: u64,
    },
    /// The file does not look, at the saved position, like ZODB's check requires.
    #[error("index does not match the data file: {0}")]
    Mismatch(String),
}

/// A checked index loaded from `.index`.
#[derive(Debug)]
pub struct SavedIndex {
    /// The index.
    pub index: FsIndex,
    /// The position saved with it; scanning resumes there.
    pub pos: u64,
    /// Tid of the last transaction before `pos`.
    pub ltid: Tid,
}

/// Parses a `.index` file's bytes into (saved pos, index), without
/// checking it against a Data.fs.
pub fn parse(bytes: &Bytes) -> Result<(u64, FsIndex), IndexFileProblem> {
    use zodb_core::pickle::Decoder;

    let bad = |offset: usize, what: String| IndexFileProblem::BadEntry { offset, what };
    // The pickles are written in fast mode (no memo), so each one is decoded
    // on its own: memory stays bounded by one entry, whatever the index size.
    let mut offset = 0usize;
    let mut next = || -> Result<(Decoder, zodb_core::pickle::NodeId, usize), IndexFileProblem> {
        let at = offset;
        let mut d = Decoder::new(bytes.slice(at..));
        let root = d.load().map_err(|e| IndexFileProblem::Pickle {
            offset: at,
            message: e.to_string(),
        })?;
        offset = at + d.offset();
        Ok((d, root, at))
    };
    let (d, root, _) = next()?;
    let pos = match d.graph().value(root).as_int() {
        Some(p) => u64::try_from(p).map_err(|_| bad(0, format!("negative position {p}")))?,
        None => return Err(IndexFileProblem::OldFormat),
    };
    let mut index = FsIndex::new();
    loop {
        let (d, root, at) = next()?;
        let v = d.graph().value(root);
        if v.is_none() {
            break;
        }
        let items = v
            .as_tuple()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| bad(at, format!("expected (prefix, data), found {v:?}")))?;
        let (Some(prefix), Some(data)) = (
            items.get(0).and_then(|x| x.as_bytes()),
            items.get(1).and_then(|x| x.as_bytes()),
        ) else {
            return Err(bad(at, "prefix and data must be byte strings".into()));
        };
        let prefix: [u8; 6] = prefix
            .as_ref()
            .try_into()
            .map_err(|_| bad(at, format!("prefix of {} bytes, expected 6", prefix.len())))?;
        if data.len() % 8 != 0 {
            return Err(bad(
                at,
                format!("bucket data of {} bytes is not a multiple of 8", data.len()),
            ));
        }
        let (suffixes, positions) = data.split_at(data.len() / 4);
        for (s, p) in suffixes.chunks_exact(2).zip(positions.chunks_exact(6)) {
            let mut o = [0u8; 8];
            o[..6].copy_from_slice(&prefix);
            o[6..].copy_from_slice(s);
            let mut full = [0u8; 8];
            full[2..].copy_from_slice(p);
            index
                .insert(Oid::from_bytes(o), u64::from_be_bytes(full))
                .map_err(|e| bad(at, format!("position {} is not a record position", e.0)))?;
        }
    }
    Ok((pos, index))
}

/// ZODB's `_check_sanity`: walks back from `pos` over empty and `u`
/// transactions to the last non-empty one and checks its first records
/// against the index. Returns the tid of the transaction just before `pos`.
pub fn check_sanity(r: &Reader, index: &FsIndex, pos: u64) -> Result<Tid, IndexFileProblem> {
    let size = r.end();
    if pos < 100 || size < pos {
        return Err(IndexFileProblem::BadPos { pos, size });
    }
    let mismatch = |what: String| IndexFileProblem::Mismatch(what);
    let corrupt = |e: crate::Error| IndexFileProblem::Mismatch(e.to_string());
    let mut ltid = None;
    let mut end = pos;
    loop {
        let tl = r
            .u64_at(end - TXN_TRAILER_LEN, RecordKind::Transaction)
            .map_err(corrupt)?;
        let tpos = end
            .checked_sub(tl + TXN_TRAILER_LEN)
            .filter(|&p| p >= MAGIC_LEN)
            .ok_or_else(|| {
                mismatch(format!(
                    "transaction length {tl} before {end} points before the file start"
                ))
            })?;
        let h = r.txn_header(tpos).map_err(corrupt)?;
        let ltid = *ltid.get_or_insert(h.tid);
        if h.tlen != tl {
            return Err(mismatch(format!(
                "transaction at {tpos}: length {} != trailer {tl}",
                h.tlen
            )));
        }
        end = tpos;
        if h.status == b'u' {
            continue;
        }
        if !matches!(h.status, b' ' | b'p') {
            return Err(mismatch(format!(
                "transaction at {tpos}: status {:?}",
                char::from(h.status)
            )));
        }
        if tl < h.header_len() {
            return Err(mismatch(format!(
                "transaction at {tpos}: length {tl} < header {}",
                h.header_len()
            )));
        }
        let tend = tpos + tl;
        let mut opos = tpos + h.header_len();
        if opos == tend {
            continue;
        }
        let mut checked = 0;
        while opos < tend && checked < 5 {
            let rec = r.data_record(opos).map_err(corrupt)?;
            if opos + rec.header.record_len() > tend || rec.header.tloc != tpos {
                return Err(mismatch(format!(
                    "data record at {opos} does not fit its transaction at {tpos}"
                )));
            }
            if index.get(rec.header.oid) != Some(opos) {
                return Err(mismatch(format!(
                    "oid {} is at {opos} in the file but at {:?} in the index",
                    rec.header.oid,
                    index.get(rec.header.oid)
                )));
            }
            checked += 1;
            opos += rec.header.record_len();
        }
        return Ok(ltid);
    }
}

/// The Go reader's deeper check: walking back from `pos` over `txns`
/// transactions, the newest record of every oid met must be where the index
/// says; if that covers the whole file, the index must hold no other oid.
pub fn verify_tail(
    r: &Reader,
    index: &FsIndex,
    pos: u64,
    txns: usize,
) -> Result<(), IndexFileProblem> {
    let limited = r.with_end(pos);
    let mut seen = std::collections::HashSet::new();
    let mut cursor = crate::iter::TxnRevCursor::new(limited.clone(), pos);
    let mismatch = |e: crate::Error| IndexFileProblem::Mismatch(e.to_string());
    let mut remaining = txns;
    let covered_all = loop {
        let Some(t) = cursor.next() else { break true };
        if remaining == 0 {
            break false;
        }
        remaining -= 1;
        let t = t.map_err(mismatch)?;
        for rec in DataCursor::new(limited.clone(), &t) {
            let rec = rec.map_err(mismatch)?;
            let oid = rec.header.oid;
            if !seen.insert(oid) {
                continue;
            }
            match index.get(oid) {
                Some(p) if p == rec.pos => {}
                Some(p) => {
                    return Err(IndexFileProblem::Mismatch(format!(
                        "oid {oid}: newest record at {} but the index says {p}",
                        rec.pos
                    )));
                }
                None => {
                    return Err(IndexFileProblem::Mismatch(format!(
                        "oid {oid} at {}: no index entry",
                        rec.pos
                    )));
                }
            }
        }
    };
    if covered_all
        && seen.len() as u64 != index.len()
        && let Some((oid, p)) = index.iter().find(|(o, _)| !seen.contains(o))
    {
        return Err(IndexFileProblem::Mismatch(format!(
            "oid {oid} at {p} is in the index but not in the data"
        )));
    }
    Ok(())
}

/// Loads `index_path` and checks it against the file `r` reads, as ZODB's
/// `_restore_index` does. Any problem is a reason to rebuild.
pub fn load_checked(
    r: &Reader,
    index_path: &Path,
    check: IndexCheck,
) -> Result<SavedIndex, RebuildReason> {
    let bytes = match std::fs::read(index_path) {
        Ok(b) => Bytes::from(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RebuildReason::Missing),
        Err(e) => return Err(RebuildReason::Invalid(IndexFileProblem::Io(e.to_string()))),
    };
    let (pos, index) = parse(&bytes).map_err(RebuildReason::Invalid)?;
    let ltid = check_sanity(r, &index, pos).map_err(RebuildReason::Invalid)?;
    if let IndexCheck::Deep { txns } = check {
        verify_tail(r, &index, pos, txns).map_err(RebuildReason::Invalid)?;
    }
    Ok(SavedIndex { index, pos, ltid })
}

/// The pickler dialect of the `.index` we write for a file: protocol 3
/// with `bytes` for `FS30` (byte-identical to ZODB 6); protocol 1 with
/// Python 2 `str` for `FS21`, which every Python 2 ZODB reads.
pub fn dialect_for(magic: crate::format::Magic) -> zodb_core::pickle::Dialect {
    use zodb_core::pickle::{Dialect, Flavor};
    match magic {
        crate::format::Magic::Fs30 => Dialect::PY3,
        crate::format::Magic::Fs21 => Dialect::new(Flavor::Py2, 1).unwrap_or(Dialect::PY3),
    }
}

/// The `.index` bytes ZODB's `fsIndex.save(pos, fname)` writes with the
/// pickler `dialect`: pickles in fast mode (no memo) of `pos`, then
/// `(prefix, data)` per 6-byte oid prefix in ascending order, then `None`.
pub fn encode(
    pos: u64,
    index: &FsIndex,
    dialect: zodb_core::pickle::Dialect,
) -> Result<Vec<u8>, zodb_core::pickle::EncodeError> {
    use zodb_core::pickle::{Encoder, Flavor, GraphBuilder};

    let py3 = dialect.flavor() == Flavor::Py3;
    let mut out = Vec::with_capacity(index.len() as usize * 8 + 64);
    let dump = |build: &dyn Fn(&mut GraphBuilder) -> zodb_core::pickle::NodeId,
                out: &mut Vec<u8>| {
        let mut b = GraphBuilder::new();
        let root = build(&mut b);
        let graph = b.into_graph();
        let mut enc = Encoder::with_output(&graph, dialect, std::mem::take(out));
        enc.set_fast(true);
        enc.dump(root)?;
        *out = enc.into_output();
        Ok::<(), zodb_core::pickle::EncodeError>(())
    };
    dump(&|b| b.int(pos as i64), &mut out)?;
    let mut entries = index.iter().peekable();
    while let Some((first, _)) = entries.peek().copied() {
        let prefix = first.0 >> 16;
        let mut suffixes = Vec::new();
        let mut positions = Vec::new();
        while let Some((oid, p)) = entries.peek().copied() {
            if oid.0 >> 16 != prefix {
                break;
            }
            suffixes.extend_from_slice(&(oid.0 as u16).to_be_bytes());
            positions.extend_from_slice(&p.to_be_bytes()[2..]);
            entries.next();
        }
        suffixes.extend_from_slice(&positions);
        let prefix_bytes = prefix.to_be_bytes()[2..].to_vec();
        dump(
            &|b| {
                let (k, v) = if py3 {
                    (b.bytes(prefix_bytes.clone()), b.bytes(suffixes.clone()))
                } else {
                    (b.py2_str(prefix_bytes.clone()), b.py2_str(suffixes.clone()))
                };
                b.tuple([k, v])
            },
            &mut out,
        )?;
    }
    dump(&|b| b.none(), &mut out)?;
    Ok(out)
}

/// Writes `index` (valid up to `pos`) as `<data_fs>.index` the way ZODB
/// does: to `.index.index_tmp`, then renamed over the old index; fsynced,
/// so a crash leaves the old index or the new one, never half of one.
pub fn save(
    data_fs: &Path,
    pos: u64,
    index: &FsIndex,
    magic: crate::format::Magic,
) -> crate::Result<()> {
    use std::io::Write;
    let target = index_path(data_fs);
    let tmp = crate::file::sibling(&target, ".index_tmp");
    let bytes = encode(pos, index, dialect_for(magic)).map_err(|source| crate::Error::Encode {
        path: target.clone(),
        source,
    })?;
    let io = |path: &Path, op| {
        let path = path.to_owned();
        move |source| crate::Error::Io { path, op, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp, "create"))?;
    f.write_all(&bytes).map_err(io(&tmp, "write"))?;
    f.sync_all().map_err(io(&tmp, "fsync"))?;
    std::fs::rename(&tmp, &target).map_err(io(&tmp, "rename"))?;
    Ok(())
}
