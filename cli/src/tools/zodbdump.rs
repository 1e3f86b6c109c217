//! `dump`: zodbtools' `zodb dump`, the text-and-binary format that
//! `zodb restore` reads back, or its `--pretty=zpickledis` variant with every
//! pickle disassembled.
//!
//! Per transaction, in tid order:
//!
//! ```text
//! txn <tid> <qq(status)>
//! user <qq(user)>
//! description <qq(description)>
//! extension <qq(raw extension)>
//! obj <oid> (delete | from <tid> | <size> sha1:<hex> (" -" | LF <data>)) LF
//! ...
//! LF
//! ```
//!
//! Objects are listed in oid order, not storage order (zodbtools sorts them
//! so that dumps of equal databases compare equal). `delete` is a record
//! without data (a deletion or an undone creation, even when it reached that
//! state through a back pointer); `from <tid>` is a record that borrows its
//! data from the transaction `<tid>` (undo), which is the transaction its
//! back pointer names directly, as ZODB's iterator reports `data_txn`.
//!
//! The disassembly is what zodbtools prints under Python 3, for Python 2
//! era files too: a `BINBYTES` argument shows as `b'...'` where Python 2's
//! zodbtools printed `'...'` (the shared `py2_pickle3` goldens were made
//! that way; zodbtools' own test rewrites them before comparing).
//!
//! The tool only needs [`ReadStorage`] iteration, so it dumps any storage.
//! Reading, hashing and writing overlap: a reader thread fetches the next
//! batch of transactions while the current one is hashed on two threads
//! (SHA-1 is most of a dump's CPU time) and written.

use std::io::{BufWriter, Write};
use std::sync::mpsc::{self, SyncSender};

use sha1::{Digest, Sha1};
use zodb_core::pickle::{DisFlavor, DisMemo, dis};
use zodb_core::storage::{DataRecord, Transaction};
use zodb_core::{ReadStorage, StorageError, Tid};

use crate::ToolError;
use crate::tools::qq::qq_into;

/// How object data (and extensions) are shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pretty {
    /// The raw bytes, restorable by `zodb restore` (the default).
    #[default]
    Raw,
    /// zodbpickle's `pickletools.dis` of each pickle, indented by two
    /// spaces: the extension alone, the class and state pickles of a record
    /// with one memo between them (the state may refer to the class's memo
    /// entries, as ZODB writes them).
    ZPickleDis,
}

/// What to dump and how.
#[derive(Clone, Copy, Debug, Default)]
pub struct DumpOptions {
    /// Print `obj <oid> <size> sha1:<hex> -` instead of the data.
    pub hash_only: bool,
    /// Raw data or disassembled pickles.
    pub pretty: Pretty,
    /// Which zodbtools to reproduce in `zpickledis` output: Python 3's
    /// (default) or Python 2's, which printed byte strings without `b`
    /// (the goldens recorded by Python 2 era zodbtools).
    pub dis_flavor: DisFlavor,
}

/// Output buffer size: large writes amortise the syscalls of a dump that is
/// as big as the database itself.
const OUT_BUFFER: usize = 1 << 20;

/// Transactions are read in batches of about this many data bytes. A
/// reader thread fetches the next batch while the current one is hashed
/// (on two threads: SHA-1 is most of a dump's CPU time) and written.
const BATCH_BYTES: usize = 8 << 20;

/// ... or this many transactions, whichever comes first.
const BATCH_TXNS: usize = 4096;

/// Batches read ahead of the one being written.
const READ_AHEAD: usize = 2;

/// Below this many bytes a batch is hashed on one thread: starting a
/// thread would cost more than it saves.
const PARALLEL_HASH_MIN: usize = 1 << 20;

/// Transactions read by the reader thread, records in oid order; `failed`
/// is the error that ended reading after them.
struct Batch {
    txns: Vec<Transaction>,
    failed: Option<StorageError>,
}

/// Dumps the transactions of `stor` with `tidmin <= tid <= tidmax` (either
/// bound optional) to `out`, calling `progress` with each transaction's tid.
///
/// A pickle that `--pretty=zpickledis` cannot disassemble ends the dump with
/// [`ToolError::Pickle`] after its `obj` line, as zodbtools dies there too.
/// A storage error ends it after the transactions before the failing one.
pub fn zodbdump(
    stor: &dyn ReadStorage,
    tidmin: Option<Tid>,
    tidmax: Option<Tid>,
    opts: DumpOptions,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Tid),
) -> Result<(), ToolError> {
    let mut w = BufWriter::with_capacity(OUT_BUFFER, out);
    let mut d = Dumper::new(opts);
    let mut digests: Vec<[u8; 20]> = Vec::new();
    let parallel = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        scope.spawn(move || read_batches(stor, tidmin, tidmax, &tx));
        // Returning early drops `rx`, which stops the reader.
        for batch in rx {
            hash_batch(&batch.txns, &mut digests, parallel);
            let mut digests = digests.iter();
            for txn in &batch.txns {
                progress(txn.info.tid);
                d.txn(txn, &mut digests, &mut w)?;
            }
            if let Some(e) = batch.failed {
                w.flush()?;
                return Err(e.into());
            }
        }
        w.flush()?;
        Ok(())
    })
}

/// Sends the transactions of the range to `tx` in batches, until they or
/// the receiver end.
fn read_batches(
    stor: &dyn ReadStorage,
    tidmin: Option<Tid>,
    tidmax: Option<Tid>,
    tx: &SyncSender<Batch>,
) {
    let mut txns = match stor.iter_transactions(tidmin, tidmax) {
        Ok(txns) => txns,
        Err(e) => {
            let _ = tx.send(Batch {
                txns: Vec::new(),
                failed: Some(e),
            });
            return;
        }
    };
    loop {
        let mut batch = Batch {
            txns: Vec::new(),
            failed: None,
        };
        let mut bytes = 0;
        while bytes < BATCH_BYTES && batch.txns.len() < BATCH_TXNS {
            match txns.next() {
                None => break,
                Some(Err(e)) => {
                    batch.failed = Some(e);
                    break;
                }
                Some(Ok(mut txn)) => {
                    // zodbtools' txnobjv: canonical (oid) order; the sort is stable.
                    if !txn.records.is_sorted_by_key(|r| r.oid) {
                        txn.records.sort_by_key(|r| r.oid);
                    }
                    bytes += txn
                        .records
                        .iter()
                        .filter_map(hashed_data)
                        .map(<[u8]>::len)
                        .sum::<usize>();
                    batch.txns.push(txn);
                }
            }
        }
        let last = batch.failed.is_some() || batch.txns.len() < BATCH_TXNS && bytes < BATCH_BYTES;
        if (batch.txns.is_empty() && batch.failed.is_none()) || tx.send(batch).is_err() || last {
            return;
        }
    }
}

/// The data a record's `obj` line hashes: records with their own data, not
/// deletions nor `from` records.
fn hashed_data(rec: &DataRecord) -> Option<&[u8]> {
    match (&rec.data, rec.data_txn) {
        (Some(d), None) => Some(d),
        _ => None,
    }
}

/// The SHA-1 of every hashed record of `batch`, in dump order; with
/// `parallel`, the second half (by bytes) is hashed on another thread.
fn hash_batch(batch: &[Transaction], digests: &mut Vec<[u8; 20]>, parallel: bool) {
    let data: Vec<&[u8]> = batch
        .iter()
        .flat_map(|t| t.records.iter().filter_map(hashed_data))
        .collect();
    digests.clear();
    digests.resize(data.len(), [0; 20]);
    let hash = |data: &[&[u8]], out: &mut [[u8; 20]]| {
        for (d, o) in data.iter().zip(out.iter_mut()) {
            *o = Sha1::digest(d).into();
        }
    };
    let total: usize = data.iter().map(|d| d.len()).sum();
    if !parallel || total < PARALLEL_HASH_MIN {
        hash(&data, digests);
        return;
    }
    let mut acc = 0;
    let split = data
        .iter()
        .position(|d| {
            acc += d.len();
            acc >= total / 2
        })
        .map_or(data.len(), |i| i + 1);
    let (d1, d2) = data.split_at(split);
    let (o1, o2) = digests.split_at_mut(split);
    std::thread::scope(|s| {
        s.spawn(|| hash(d2, o2));
        hash(d1, o1);
    });
}

/// Reusable buffers for formatting, so a dump allocates per transaction at
/// most what its records need.
#[derive(Debug, Default)]
struct Dumper {
    opts: DumpOptions,
    /// Text being assembled before one write.
    line: Vec<u8>,
    /// Disassembly output.
    dis: String,
}

impl Dumper {
    fn new(opts: DumpOptions) -> Dumper {
        Dumper {
            opts,
            ..Dumper::default()
        }
    }

    /// Writes one transaction, whose records are in oid order; `digests`
    /// yields the SHA-1s of its hashed records, in order.
    fn txn(
        &mut self,
        txn: &Transaction,
        digests: &mut std::slice::Iter<'_, [u8; 20]>,
        w: &mut dyn Write,
    ) -> Result<(), ToolError> {
        let info = &txn.info;
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"txn ");
        push_hex16(line, info.tid.0);
        line.push(b' ');
        qq_into(line, &[info.status.as_byte()]);
        line.extend_from_slice(b"\nuser ");
        qq_into(line, &info.meta.user);
        line.extend_from_slice(b"\ndescription ");
        qq_into(line, &info.meta.description);
        line.push(b'\n');
        let ext = &info.meta.extension;
        match self.opts.pretty {
            Pretty::Raw => {
                line.extend_from_slice(b"extension ");
                qq_into(line, ext);
                line.push(b'\n');
            }
            Pretty::ZPickleDis if ext.is_empty() => line.extend_from_slice(b"extension \"\"\n"),
            Pretty::ZPickleDis => {
                line.extend_from_slice(b"extension\n");
                self.dis.clear();
                let end = match dis(
                    ext,
                    0,
                    &mut self.dis,
                    &mut DisMemo::with_flavor(self.opts.dis_flavor),
                ) {
                    Ok(end) => end,
                    Err(source) => {
                        // zodbtools has printed the header lines by then.
                        w.write_all(line)?;
                        let what = format!("txn {}: extension", info.tid);
                        return Err(ToolError::Pickle { what, source });
                    }
                };
                push_indented(line, &self.dis);
                push_extra(line, ext.get(end..).unwrap_or_default());
            }
        }
        w.write_all(line)?;

        for rec in &txn.records {
            let digest = if hashed_data(rec).is_some() {
                digests.next()
            } else {
                None
            };
            self.obj(info.tid, rec, digest, w)?;
        }
        w.write_all(b"\n")?;
        Ok(())
    }

    /// Writes one `obj` entry; `digest` is the SHA-1 of the record's data
    /// when it has some of its own (computed ahead, on the hashing threads).
    fn obj(
        &mut self,
        tid: Tid,
        rec: &DataRecord,
        digest: Option<&[u8; 20]>,
        w: &mut dyn Write,
    ) -> Result<(), ToolError> {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"obj ");
        push_hex16(line, rec.oid.0);
        line.push(b' ');
        let data = match (&rec.data, rec.data_txn) {
            (None, _) => {
                line.extend_from_slice(b"delete\n");
                return Ok(w.write_all(line)?);
            }
            (Some(_), Some(from)) => {
                line.extend_from_slice(b"from ");
                push_hex16(line, from.0);
                line.push(b'\n');
                return Ok(w.write_all(line)?);
            }
            (Some(data), None) => data,
        };
        push_decimal(line, data.len() as u64);
        line.extend_from_slice(b" sha1:");
        let digest = match digest {
            Some(d) => *d,
            None => Sha1::digest(data).into(),
        };
        let at = line.len();
        line.resize(at + 2 * digest.len(), 0);
        if let Some(dst) = line.get_mut(at..) {
            // The slice is exactly twice the digest's length.
            let _ = hex::encode_to_slice(digest, dst);
        }
        if self.opts.hash_only {
            line.extend_from_slice(b" -\n");
            return Ok(w.write_all(line)?);
        }
        line.push(b'\n');
        match self.opts.pretty {
            Pretty::Raw => {
                w.write_all(line)?;
                w.write_all(data)?;
                w.write_all(b"\n")?;
            }
            Pretty::ZPickleDis => {
                // zodbtools writes the disassembly only once both pickles
                // went through; on error the obj line is all that is out.
                w.write_all(line)?;
                line.clear();
                self.dis.clear();
                let what = |source| ToolError::Pickle {
                    what: format!("txn {tid}: obj {}", rec.oid),
                    source,
                };
                let mut memo = DisMemo::with_flavor(self.opts.dis_flavor);
                let end = dis(data, 0, &mut self.dis, &mut memo).map_err(what)?;
                let end = dis(data, end, &mut self.dis, &mut memo).map_err(what)?;
                push_indented(line, &self.dis);
                push_extra(line, data.get(end..).unwrap_or_default());
                line.push(b'\n');
                w.write_all(line)?;
            }
        }
        Ok(())
    }
}

/// `text` with every line prefixed by two spaces (zodbdump's `indent`; the
/// disassembly has no line breaks other than `\n`, since pickletools'
/// reprs escape all the others).
fn push_indented(out: &mut Vec<u8>, text: &str) {
    for l in text.split_inclusive('\n') {
        out.extend_from_slice(b"  ");
        out.extend_from_slice(l.as_bytes());
    }
}

/// Bytes after the last pickle, which zodbdump shows quoted.
fn push_extra(out: &mut Vec<u8>, extra: &[u8]) {
    if !extra.is_empty() {
        out.extend_from_slice(b"  + extra data ");
        qq_into(out, extra);
        out.push(b'\n');
    }
}

/// 16 lowercase hex digits, as zodbtools prints oids and tids.
fn push_hex16(out: &mut Vec<u8>, v: u64) {
    let at = out.len();
    out.resize(at + 16, 0);
    if let Some(dst) = out.get_mut(at..) {
        let _ = hex::encode_to_slice(v.to_be_bytes(), dst);
    }
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        push_hex16(&mut v, 0x0285_cbac_258b_f266);
        v.push(b' ');
        push_decimal(&mut v, 0);
        v.push(b' ');
        push_decimal(&mut v, u64::MAX);
        assert_eq!(v, b"0285cbac258bf266 0 18446744073709551615");
    }

    #[test]
    fn indent_keeps_a_last_partial_line() {
        let mut v = Vec::new();
        push_indented(&mut v, "a\nb\n\nc");
        assert_eq!(v, b"  a\n  b\n  \n  c");
    }
}
