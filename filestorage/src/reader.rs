//! Typed reads of records at positions, bounded by the valid area.
//!
//! The one place where bytes from the backend become [`format`] headers.
//! Every read is checked against `end` (the end of what is known to be
//! committed), and every failure becomes an [`Error::Corrupt`] naming the
//! file, the offset and the record, so callers stay free of bounds logic.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use zodb_core::Oid;

use crate::backend::Backend;
use crate::error::{Error, RecordKind, Result};
use crate::format::{
    DATA_HEADER_LEN, DataHeader, MAGIC_LEN, Magic, Problem, TXN_HEADER_LEN, TxnHeader,
};

/// A data record header plus its back pointer (0 when it holds data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRec {
    /// The 42-byte header.
    pub header: DataHeader,
    /// The back pointer when `plen == 0` (0: no data), else 0.
    pub back: u64,
}

impl DataRec {
    /// Whether the record holds the pickle inline.
    pub fn has_data(&self) -> bool {
        self.header.plen > 0
    }
}

/// Bounded, typed access to the records of one file. Cheap to clone: it
/// shares the backend, so cursors built on it outlive any lock that
/// produced them, and keep reading the bytes they started on.
#[derive(Clone, Debug)]
pub struct Reader {
    data: Arc<dyn Backend>,
    path: Arc<Path>,
    end: u64,
}

impl Reader {
    /// Reads of `data` (the file at `path`) below `end`.
    pub fn new(data: Arc<dyn Backend>, path: Arc<Path>, end: u64) -> Reader {
        let end = end.min(data.len());
        Reader { data, path, end }
    }

    /// The same bytes, bounded at `end` instead.
    pub fn with_end(&self, end: u64) -> Reader {
        Reader::new(self.data.clone(), self.path.clone(), end)
    }

    /// The end of the readable area.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.data.as_ref()
    }

    /// An [`Error::Corrupt`] for this file.
    pub fn corrupt(&self, pos: u64, record: RecordKind, problem: Problem) -> Error {
        Error::Corrupt {
            path: self.path.to_path_buf(),
            pos,
            record,
            problem,
        }
    }

    fn check_len(&self, pos: u64, len: u64, record: RecordKind) -> Result<()> {
        let have = self.end.saturating_sub(pos);
        if pos > self.end || len > have {
            return Err(self.corrupt(pos, record, Problem::Truncated { need: len, have }));
        }
        Ok(())
    }

    fn fixed<const N: usize>(&self, pos: u64, record: RecordKind) -> Result<[u8; N]> {
        self.check_len(pos, N as u64, record)?;
        let mut buf = [0u8; N];
        match self.data.slice_at(pos, N as u64) {
            Some(s) => buf.copy_from_slice(s),
            None => self
                .data
                .read_exact_at(pos, &mut buf)
                .map_err(|e| self.io(e))?,
        }
        Ok(buf)
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.to_path_buf(),
            op: "read",
            source,
        }
    }

    /// The file's magic; an empty file has none.
    pub fn magic(&self) -> Result<Magic> {
        let m: [u8; 4] = self.fixed(0, RecordKind::FileHeader)?;
        Magic::from_bytes(m)
            .ok_or_else(|| self.corrupt(0, RecordKind::FileHeader, Problem::BadMagic(m)))
    }

    /// A big-endian u64 (a redundant length or back pointer) at `pos`.
    pub fn u64_at(&self, pos: u64, record: RecordKind) -> Result<u64> {
        Ok(u64::from_be_bytes(self.fixed(pos, record)?))
    }

    /// The fixed transaction header at `pos`, undecided about its validity.
    pub fn txn_header(&self, pos: u64) -> Result<TxnHeader> {
        if pos < MAGIC_LEN {
            return Err(self.corrupt(
                pos,
                RecordKind::Transaction,
                Problem::Truncated {
                    need: TXN_HEADER_LEN,
                    have: 0,
                },
            ));
        }
        Ok(TxnHeader::decode(
            &self.fixed(pos, RecordKind::Transaction)?,
        ))
    }

    /// User, description and extension of the transaction at `pos`.
    pub fn txn_strings(&self, pos: u64, h: &TxnHeader) -> Result<(Bytes, Bytes, Bytes)> {
        let start = pos + TXN_HEADER_LEN;
        let (u, d, e) = (u64::from(h.ulen), u64::from(h.dlen), u64::from(h.elen));
        self.check_len(start, u + d + e, RecordKind::Transaction)?;
        let all = self
            .data
            .bytes_at(start, u + d + e)
            .map_err(|e| self.io(e))?;
        let (u, d) = (u as usize, d as usize);
        Ok((all.slice(..u), all.slice(u..u + d), all.slice(u + d..)))
    }

    /// The data record at `pos`, with its back pointer read when it has one.
    pub fn data_record(&self, pos: u64) -> Result<DataRec> {
        let header = DataHeader::decode(&self.fixed(pos, RecordKind::DataRecord)?);
        let back = if header.plen == 0 {
            self.u64_at(pos + DATA_HEADER_LEN, RecordKind::DataRecord)?
        } else {
            0
        };
        Ok(DataRec { header, back })
    }

    /// The data record at `pos`, which must be for `oid` (a record reached
    /// through the index or a pointer).
    pub fn data_record_of(&self, pos: u64, oid: Oid) -> Result<DataRec> {
        let rec = self.data_record(pos)?;
        if rec.header.oid != oid {
            return Err(self.corrupt(
                pos,
                RecordKind::DataRecord,
                Problem::OidMismatch {
                    expected: oid,
                    found: rec.header.oid,
                },
            ));
        }
        if rec.header.vlen != 0 {
            return Err(self.corrupt(
                pos,
                RecordKind::DataRecord,
                Problem::Version(rec.header.vlen),
            ));
        }
        Ok(rec)
    }

    /// The pickle of the record at `pos` (which has `plen > 0`).
    pub fn pickle(&self, pos: u64, h: &DataHeader) -> Result<Bytes> {
        let start = pos + DATA_HEADER_LEN;
        self.check_len(start, h.plen, RecordKind::DataRecord)?;
        self.data.bytes_at(start, h.plen).map_err(|e| self.io(e))
    }

    /// Follows back pointers from `back` (found in record `from`) to the
    /// record that holds the data: `Ok(None)` if the chain ends in "no
    /// data". Each pointer must point backwards, so the walk terminates even
    /// on a corrupt file. Returns the data, and the position of the record
    /// holding it.
    pub fn resolve_back(&self, oid: Oid, from: u64, mut back: u64) -> Result<Option<(Bytes, u64)>> {
        let mut at = from;
        loop {
            if back == 0 {
                return Ok(None);
            }
            crate::format::check_back(at, back)
                .map_err(|p| self.corrupt(at, RecordKind::DataRecord, p))?;
            let rec = self.data_record_of(back, oid)?;
            if rec.has_data() {
                return Ok(Some((self.pickle(back, &rec.header)?, back)));
            }
            at = back;
            back = rec.back;
        }
    }
}
