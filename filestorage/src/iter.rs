//! Iteration over transaction and data records, with their positions.
//!
//! The tools (fsdump, fstail, fstest, dump) need the raw records and where
//! they are; the storage API needs transactions with data resolved. Both
//! come from these cursors. Forward iteration follows ZODB's `FileIterator`:
//! it stops at a voted (`c`) transaction; legacy `u` transactions are
//! skipped. Backward iteration follows the redundant trailing lengths, as
//! `fstail` does.

use bytes::Bytes;
use zodb_core::{Tid, TxnInfo, TxnMeta, TxnStatus};

use crate::error::{RecordKind, Result};
use crate::format::{DataHeader, Problem, TXN_TRAILER_LEN, TxnHeader, check_back};
use crate::reader::Reader;

/// A transaction record as found in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    /// Position of the header.
    pub pos: u64,
    /// The fixed header.
    pub header: TxnHeader,
    /// User name bytes.
    pub user: Bytes,
    /// Description bytes.
    pub description: Bytes,
    /// Extension bytes (empty or a pickled dict).
    pub extension: Bytes,
}

impl TxnRecord {
    /// The transaction's tid.
    pub fn tid(&self) -> Tid {
        self.header.tid
    }

    /// Position of the first data record.
    pub fn data_pos(&self) -> u64 {
        self.pos + self.header.header_len()
    }

    /// Position of the redundant length (end of the data records).
    pub fn data_end(&self) -> u64 {
        self.pos + self.header.tlen
    }

    /// Position of the next transaction.
    pub fn next_pos(&self) -> u64 {
        self.data_end() + TXN_TRAILER_LEN
    }

    /// Header fields as the storage API reports them.
    pub fn info(&self) -> TxnInfo {
        TxnInfo {
            tid: self.header.tid,
            status: self.header.status().unwrap_or(TxnStatus::Committed),
            meta: TxnMeta {
                user: self.user.clone(),
                description: self.description.clone(),
                extension: self.extension.clone(),
            },
        }
    }
}

/// A data record as found in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRecordAt {
    /// Position of the header.
    pub pos: u64,
    /// The fixed header.
    pub header: DataHeader,
    /// Back pointer when the record has no inline data (0: object absent).
    pub back: u64,
    /// The inline pickle when `plen > 0`.
    pub data: Option<Bytes>,
}

impl DataRecordAt {
    /// Position after this record.
    pub fn end(&self) -> u64 {
        self.pos + self.header.record_len()
    }
}

/// Reads and checks the transaction at `pos`: header, strings and trailer.
pub fn read_txn(r: &Reader, pos: u64) -> Result<TxnRecord> {
    let header = r.txn_header(pos)?;
    header
        .check()
        .map_err(|p| r.corrupt(pos, RecordKind::Transaction, p))?;
    let end = pos
        .checked_add(header.record_len())
        .filter(|&e| e <= r.end());
    if end.is_none() {
        return Err(r.corrupt(
            pos,
            RecordKind::Transaction,
            Problem::Truncated {
                need: header.record_len(),
                have: r.end().saturating_sub(pos),
            },
        ));
    }
    let trailer = r.u64_at(pos + header.tlen, RecordKind::Transaction)?;
    if trailer != header.tlen {
        return Err(r.corrupt(
            pos,
            RecordKind::Transaction,
            Problem::TrailerMismatch {
                tlen: header.tlen,
                trailer,
            },
        ));
    }
    let (user, description, extension) = r.txn_strings(pos, &header)?;
    Ok(TxnRecord {
        pos,
        header,
        user,
        description,
        extension,
    })
}

/// Forward cursor over transactions.
#[derive(Debug, Clone)]
pub struct TxnCursor {
    r: Reader,
    pos: u64,
    stop: Option<Tid>,
    done: bool,
}

impl TxnCursor {
    /// Transactions from `pos` (4: the first) to the reader's end, stopping
    /// after the last one with tid ≤ `stop`.
    pub fn new(r: Reader, pos: u64, stop: Option<Tid>) -> TxnCursor {
        TxnCursor {
            r,
            pos,
            stop,
            done: false,
        }
    }

    /// Position of the next transaction to read.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Skips transactions with tid < `start` by reading headers only.
    pub fn skip_to(&mut self, start: Tid) -> Result<()> {
        while self.pos < self.r.end() {
            let h = self.r.txn_header(self.pos)?;
            if h.tid >= start {
                break;
            }
            h.check()
                .map_err(|p| self.r.corrupt(self.pos, RecordKind::Transaction, p))?;
            self.pos = self.pos.saturating_add(h.record_len());
        }
        Ok(())
    }
}

impl Iterator for TxnCursor {
    type Item = Result<TxnRecord>;

    fn next(&mut self) -> Option<Result<TxnRecord>> {
        while !self.done && self.pos < self.r.end() {
            let h = match self.r.txn_header(self.pos) {
                Ok(h) => h,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if self.stop.is_some_and(|s| h.tid > s) || h.status == b'c' {
                break;
            }
            let t = match read_txn(&self.r, self.pos) {
                Ok(t) => t,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.pos = t.next_pos();
            if h.status == b'u' {
                continue;
            }
            return Some(Ok(t));
        }
        self.done = true;
        None
    }
}

/// Backward cursor over transactions, following the redundant lengths from
/// the end (as `fstail`).
#[derive(Debug, Clone)]
pub struct TxnRevCursor {
    r: Reader,
    /// Position just after the next transaction to return.
    pos: u64,
    done: bool,
}

impl TxnRevCursor {
    /// Transactions ending at or before `end`, newest first.
    pub fn new(r: Reader, end: u64) -> TxnRevCursor {
        TxnRevCursor {
            r,
            pos: end,
            done: false,
        }
    }
}

impl Iterator for TxnRevCursor {
    type Item = Result<TxnRecord>;

    fn next(&mut self) -> Option<Result<TxnRecord>> {
        if self.done || self.pos <= crate::format::MAGIC_LEN {
            return None;
        }
        let res = (|| {
            let tlen = self
                .r
                .u64_at(self.pos - TXN_TRAILER_LEN, RecordKind::Transaction)?;
            let tpos = self
                .pos
                .checked_sub(TXN_TRAILER_LEN + tlen)
                .filter(|&p| p >= crate::format::MAGIC_LEN);
            let Some(tpos) = tpos else {
                return Err(self.r.corrupt(
                    self.pos - TXN_TRAILER_LEN,
                    RecordKind::Transaction,
                    Problem::Truncated {
                        need: tlen,
                        have: self.pos,
                    },
                ));
            };
            let t = read_txn(&self.r, tpos)?;
            self.pos = tpos;
            Ok(t)
        })();
        if res.is_err() {
            self.done = true;
        }
        Some(res)
    }
}

/// Cursor over the data records of one transaction.
#[derive(Debug, Clone)]
pub struct DataCursor {
    r: Reader,
    tpos: u64,
    tend: u64,
    pos: u64,
    done: bool,
}

impl DataCursor {
    /// The data records of `txn`.
    pub fn new(r: Reader, txn: &TxnRecord) -> DataCursor {
        DataCursor {
            r,
            tpos: txn.pos,
            tend: txn.data_end(),
            pos: txn.data_pos(),
            done: false,
        }
    }

    fn read(&self) -> Result<DataRecordAt> {
        let rec = self.r.data_record(self.pos)?;
        let h = rec.header;
        h.check(self.pos, self.tpos, self.tend)
            .map_err(|p| self.r.corrupt(self.pos, RecordKind::DataRecord, p))?;
        let data = if h.plen > 0 {
            Some(self.r.pickle(self.pos, &h)?)
        } else {
            check_back(self.pos, rec.back)
                .map_err(|p| self.r.corrupt(self.pos, RecordKind::DataRecord, p))?;
            None
        };
        Ok(DataRecordAt {
            pos: self.pos,
            header: h,
            back: rec.back,
            data,
        })
    }
}

impl Iterator for DataCursor {
    type Item = Result<DataRecordAt>;

    fn next(&mut self) -> Option<Result<DataRecordAt>> {
        if self.done || self.pos >= self.tend {
            return None;
        }
        let res = self.read();
        match &res {
            Ok(rec) => self.pos = rec.end(),
            Err(_) => self.done = true,
        }
        Some(res)
    }
}
