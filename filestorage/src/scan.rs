//! The forward scan that (re)builds the index: ZODB's `read_index`.
//!
//! It walks transactions from `start`, indexes every data record of each
//! complete transaction, and stops at the first transaction that is not
//! committed: a voted (`c`) one, one cut short by the end of the file, or a
//! short header. What ZODB only logs (a tid that does not increase, an odd
//! status byte, a `prev` pointer that disagrees with the index) we collect as
//! warnings; what ZODB treats as fatal corruption is an error here too.

use zodb_core::{Oid, Tid};

use crate::error::{Error, RecordKind, Result};
use crate::format::{DATA_HEADER_LEN, Problem, TXN_HEADER_LEN, TXN_TRAILER_LEN};
use crate::index::FsIndex;
use crate::reader::Reader;

/// What lies after the last committed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the file ends exactly after the last transaction.
    Clean,
    /// Fewer bytes than a transaction header.
    ShortHeader {
        /// Where they start.
        pos: u64,
    },
    /// A transaction that was voted but never finished (status `c`).
    Voted {
        /// Its position.
        pos: u64,
        /// Its tid.
        tid: Tid,
    },
    /// A transaction whose length runs past the end of the file.
    Torn {
        /// Its position.
        pos: u64,
        /// The tid in its header.
        tid: Tid,
    },
    /// A header whose length is smaller than its own strings, with a file
    /// end that does not look like a valid transaction: junk left by a crash.
    Junk {
        /// Where the junk starts.
        pos: u64,
    },
}

impl Tail {
    /// Position from which the file holds no committed data, if any.
    pub fn pos(&self) -> Option<u64> {
        match *self {
            Tail::Clean => None,
            Tail::ShortHeader { pos }
            | Tail::Voted { pos, .. }
            | Tail::Torn { pos, .. }
            | Tail::Junk { pos } => Some(pos),
        }
    }
}

/// An inconsistency ZODB tolerates (it logs it) and so do we.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanWarning {
    /// A transaction's tid is not greater than the previous one's.
    TidNotIncreasing {
        /// Transaction position.
        pos: u64,
        /// Its tid.
        tid: Tid,
        /// The previous tid.
        prev: Tid,
    },
    /// A status byte other than `' '`, `'p'`, `'u'`.
    BadStatus {
        /// Transaction position.
        pos: u64,
        /// The byte.
        status: u8,
    },
    /// A data record's `prev` is not the oid's position before it.
    PrevMismatch {
        /// Record position.
        pos: u64,
        /// The oid.
        oid: Oid,
        /// Where the index says the previous revision is (0: none).
        expected: u64,
        /// What the record says.
        found: u64,
    },
}

/// Result of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOutcome {
    /// End of the last committed transaction (where the next one goes).
    pub end: u64,
    /// Tid of the last committed transaction scanned, or the `ltid` passed in.
    pub last_tid: Tid,
    /// The largest tid seen, including a voted or torn tail's: new tids
    /// must be later than it (ZODB's `_ltid` after recovery).
    pub max_tid: Tid,
    /// Number of committed transactions scanned.
    pub txn_count: u64,
    /// Number of data records indexed.
    pub record_count: u64,
    /// What follows `end`.
    pub tail: Tail,
    /// Tolerated inconsistencies.
    pub warnings: Vec<ScanWarning>,
}

/// How often (in bytes scanned) the progress callback runs.
const PROGRESS_STEP: u64 = 16 << 20;

/// Scans from `start` (4, or the position saved in a valid `.index`) to the
/// end of the reader's area, adding every committed record to `index`.
/// `ltid` is the tid of the transaction before `start` (zero at 4).
/// `progress` is called with the current position now and then.
pub fn scan(
    r: &Reader,
    start: u64,
    ltid: Tid,
    index: &mut FsIndex,
    progress: &mut dyn FnMut(u64),
) -> Result<ScanOutcome> {
    let file_size = r.end();
    let mut out = ScanOutcome {
        end: start,
        last_tid: ltid,
        max_tid: ltid,
        txn_count: 0,
        record_count: 0,
        tail: Tail::Clean,
        warnings: Vec::new(),
    };
    let mut pos = start;
    let mut prev_tid = ltid;
    let mut tindex: Vec<(Oid, u64)> = Vec::new();
    let mut next_progress = pos + PROGRESS_STEP;
    loop {
        if pos >= file_size {
            break;
        }
        if file_size - pos < TXN_HEADER_LEN {
            out.tail = Tail::ShortHeader { pos };
            break;
        }
        if pos >= next_progress {
            progress(pos);
            next_progress = pos + PROGRESS_STEP;
        }
        let h = r.txn_header(pos)?;
        if h.tid <= prev_tid {
            out.warnings.push(ScanWarning::TidNotIncreasing {
                pos,
                tid: h.tid,
                prev: prev_tid,
            });
        }
        prev_tid = h.tid;
        out.max_tid = out.max_tid.max(h.tid);
        let fits = h
            .tlen
            .checked_add(TXN_TRAILER_LEN)
            .and_then(|l| pos.checked_add(l))
            .is_some_and(|e| e <= file_size);
        if !fits || h.status == b'c' {
            // ZODB treats this as a crashed last transaction and (read-write)
            // truncates the file here. If committed transactions follow, it
            // is damage in the middle, and truncating would destroy them.
            if let Some(later) = committed_after(r, pos, h.tid) {
                let problem = if fits {
                    Problem::VotedNotLast { later }
                } else {
                    Problem::Truncated {
                        need: h.record_len(),
                        have: file_size - pos,
                    }
                };
                return Err(r.corrupt(pos, RecordKind::Transaction, problem));
            }
            out.tail = if fits {
                Tail::Voted { pos, tid: h.tid }
            } else {
                Tail::Torn { pos, tid: h.tid }
            };
            break;
        }
        if !matches!(h.status, b' ' | b'p' | b'u') {
            out.warnings.push(ScanWarning::BadStatus {
                pos,
                status: h.status,
            });
        }
        if h.tlen < h.header_len() {
            // Junk at the end of the file, or corruption in the middle?
            // ZODB decides by whether the file's last 8 bytes are a
            // plausible redundant length.
            let rtl = r.u64_at(file_size - 8, RecordKind::Transaction)?;
            if file_size.saturating_sub(rtl) < pos || rtl < TXN_HEADER_LEN {
                out.tail = Tail::Junk { pos };
                break;
            }
            return Err(r.corrupt(
                pos,
                RecordKind::Transaction,
                Problem::TlenTooSmall {
                    tlen: h.tlen,
                    header_len: h.header_len(),
                },
            ));
        }
        let tpos = pos;
        let tend = tpos + h.tlen;
        if h.status == b'u' {
            // Legacy undone transaction: not indexed.
            check_trailer(r, tend, h.tlen)?;
            pos = tend + TXN_TRAILER_LEN;
            continue;
        }
        let warnings_before = out.warnings.len();
        if let Err(e) = scan_records(r, tpos, &h, index, &mut out.warnings, &mut tindex) {
            // A committed-looking last transaction whose records do not
            // hold together is what a crash during finish's fsync can leave
            // when the kernel wrote the status page before the data pages:
            // its finish never returned, so it is a torn tail (ZODB fails
            // to open such a file). Anywhere else it is damage.
            if tend + TXN_TRAILER_LEN == file_size {
                tindex.clear();
                out.warnings.truncate(warnings_before);
                out.tail = Tail::Torn { pos, tid: h.tid };
                break;
            }
            return Err(e);
        }
        out.record_count += tindex.len() as u64;
        for (oid, p) in tindex.drain(..) {
            index.insert(oid, p).map_err(|e| Error::TooLarge {
                path: r.path().to_owned(),
                pos: e.0,
            })?;
        }
        pos = tend + TXN_TRAILER_LEN;
        out.txn_count += 1;
        out.last_tid = h.tid;
        out.end = pos;
    }
    progress(pos);
    Ok(out)
}

/// Checks the data records and the trailer of the transaction at `tpos`,
/// collecting `(oid, pos)` of each record into `tindex`.
fn scan_records(
    r: &Reader,
    tpos: u64,
    h: &crate::format::TxnHeader,
    index: &FsIndex,
    warnings: &mut Vec<ScanWarning>,
    tindex: &mut Vec<(Oid, u64)>,
) -> Result<()> {
    let tend = tpos + h.tlen;
    let mut dpos = tpos + h.header_len();
    while dpos < tend {
        if tend - dpos < DATA_HEADER_LEN {
            return Err(r.corrupt(
                dpos,
                RecordKind::DataRecord,
                Problem::DataPastTxn {
                    end: dpos + DATA_HEADER_LEN,
                    tend,
                },
            ));
        }
        let rec = r.data_record(dpos)?;
        let dh = rec.header;
        if dh.vlen != 0 {
            return Err(r.corrupt(dpos, RecordKind::DataRecord, Problem::Version(dh.vlen)));
        }
        let dend = dpos.saturating_add(dh.record_len());
        if dend > tend {
            return Err(r.corrupt(
                dpos,
                RecordKind::DataRecord,
                Problem::DataPastTxn { end: dend, tend },
            ));
        }
        if dh.tloc != tpos {
            return Err(r.corrupt(
                dpos,
                RecordKind::DataRecord,
                Problem::WrongTxn {
                    tloc: dh.tloc,
                    tpos,
                },
            ));
        }
        let expected = index.get(dh.oid).unwrap_or(0);
        if expected != dh.prev {
            warnings.push(ScanWarning::PrevMismatch {
                pos: dpos,
                oid: dh.oid,
                expected,
                found: dh.prev,
            });
        }
        tindex.push((dh.oid, dpos));
        dpos = dend;
    }
    if dpos != tend {
        return Err(r.corrupt(
            tpos,
            RecordKind::Transaction,
            Problem::DataMisaligned { end: dpos, tend },
        ));
    }
    check_trailer(r, tend, h.tlen)
}

/// Whether committed transactions follow the transaction at `pos` (tid
/// `tid`) that looks unfinished: the evidence that it is damage in the
/// middle of the file, not a crashed tail. Returns the position of the
/// first of them.
///
/// The evidence is a chain: walking back from the end of the file through
/// the redundant lengths, every transaction is well formed, committed and
/// later than `tid`, and the walk lands exactly on `pos`. Damage to a
/// transaction's header leaves its trailer, and the chain, intact. A torn
/// last transaction whose *data* holds a transaction (an object storing a
/// copy of a Data.fs) can end the file with a well-formed later
/// transaction, but the chain from it leads elsewhere: checking only the
/// last transaction took such a crash image for damage and refused to open
/// it, where ZODB truncates it.
fn committed_after(r: &Reader, pos: u64, tid: Tid) -> Option<u64> {
    let mut end = r.end();
    let mut first = None;
    loop {
        let trailer = end.checked_sub(TXN_TRAILER_LEN)?;
        let rtl = r.u64_at(trailer, RecordKind::Transaction).ok()?;
        let tpos = trailer.checked_sub(rtl)?;
        if tpos <= pos {
            return first.filter(|_| tpos == pos);
        }
        let h = r.txn_header(tpos).ok()?;
        if !(h.tlen == rtl && h.tid > tid && matches!(h.status, b' ' | b'p') && h.check().is_ok()) {
            return None;
        }
        first = Some(tpos);
        end = tpos;
    }
}

fn check_trailer(r: &Reader, tend: u64, tlen: u64) -> Result<()> {
    let trailer = r.u64_at(tend, RecordKind::Transaction)?;
    if trailer != tlen {
        return Err(r.corrupt(
            tend - tlen,
            RecordKind::Transaction,
            Problem::TrailerMismatch { tlen, trailer },
        ));
    }
    Ok(())
}
