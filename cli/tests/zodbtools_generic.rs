//! The zodbtools commands over a storage that is not a FileStorage: a small
//! in-memory [`ReadStorage`], as a ZEO client will be. This pins what the
//! tools take from the storage API (iteration order, `data_txn`, deletions,
//! snapshot loads) and the cases the fixtures do not hold: records out of
//! oid order, pickles that do not disassemble, extra bytes after a pickle.

use bytes::Bytes;
use zodb_core::notify::{CommitHub, CommitWatch};
use zodb_core::storage::{DataRecord, HistoryEntry, Result, Revision, Transaction, TxnIter};
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TxnInfo, TxnMeta, TxnStatus};
use zodbrs::ToolError;
use zodbrs::tools::analyze::{analyze, report};
use zodbrs::tools::catobj::{CatMode, Xid, catobj};
use zodbrs::tools::info::{StorageSize, zodbinfo};
use zodbrs::tools::zodbdump::{DumpOptions, Pretty, zodbdump};

/// Transactions in a vector; loads scan them.
struct MemStorage {
    txns: Vec<Transaction>,
    hub: CommitHub,
}

impl MemStorage {
    /// The revision of `oid` current before `before`, following `data_txn`.
    fn find(&self, oid: Oid, before: Tid) -> Option<(&DataRecord, Option<Tid>)> {
        let mut found = None;
        for t in self.txns.iter().filter(|t| t.info.tid < before) {
            for r in t.records.iter().filter(|r| r.oid == oid) {
                found = Some(r);
            }
        }
        let next = self
            .txns
            .iter()
            .filter(|t| t.info.tid >= before)
            .find(|t| t.records.iter().any(|r| r.oid == oid))
            .map(|t| t.info.tid);
        found.map(|r| (r, next))
    }
}

impl ReadStorage for MemStorage {
    fn name(&self) -> String {
        "mem".into()
    }
    fn last_transaction(&self) -> Tid {
        self.txns.last().map_or(Tid::ZERO, |t| t.info.tid)
    }
    fn object_count(&self) -> u64 {
        0
    }
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<Revision>> {
        match self.find(oid, before) {
            None => Ok(None),
            Some((r, next)) => match &r.data {
                Some(d) => Ok(Some(Revision {
                    data: d.clone(),
                    serial: r.tid,
                    next_serial: next,
                })),
                None => Err(StorageError::NoData { oid, serial: r.tid }),
            },
        }
    }
    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Bytes> {
        Err(StorageError::NoSuchRevision { oid, serial })
    }
    fn history(&self, _oid: Oid, _size: usize) -> Result<Vec<HistoryEntry>> {
        Ok(Vec::new())
    }
    fn iter_transactions(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TxnIter<'_>> {
        let txns: Vec<Transaction> = self
            .txns
            .iter()
            .filter(|t| {
                start.is_none_or(|s| t.info.tid >= s) && stop.is_none_or(|s| t.info.tid <= s)
            })
            .cloned()
            .collect();
        Ok(Box::new(txns.into_iter().map(Ok)))
    }
    fn watch(&self) -> CommitWatch {
        self.hub.subscribe()
    }
}

impl StorageSize for MemStorage {
    fn storage_size(&self) -> u64 {
        42
    }
}

fn txn(tid: u64, user: &[u8], ext: &[u8], records: Vec<DataRecord>) -> Transaction {
    Transaction {
        info: TxnInfo {
            tid: Tid(tid),
            status: TxnStatus::Committed,
            meta: TxnMeta {
                user: Bytes::copy_from_slice(user),
                description: Bytes::from_static(b"d\xc3\xa9\x00\"q\""),
                extension: Bytes::copy_from_slice(ext),
            },
        },
        records,
    }
}

fn rec(oid: u64, tid: u64, data: Option<&'static [u8]>, data_txn: Option<u64>) -> DataRecord {
    DataRecord {
        oid: Oid(oid),
        tid: Tid(tid),
        data: data.map(Bytes::from_static),
        data_txn: data_txn.map(Tid),
    }
}

/// Class pickle `foo.A` then state `1`, protocol 2; and one of class `foo.B`.
const A1: &[u8] = b"\x80\x02cfoo\nA\nq\x00.\x80\x02K\x01.";
const A2: &[u8] = b"\x80\x02cfoo\nA\nq\x00.\x80\x02h\x00.";
const B1: &[u8] = b"\x80\x02cfoo\nB\nq\x00.\x80\x02K\x02.extra";

fn storage() -> MemStorage {
    let ext = b"\x80\x02}q\x00U\x01xK\x01s.";
    MemStorage {
        txns: vec![
            // Records out of oid order: the dump sorts them.
            txn(
                0x10,
                b"u1",
                ext,
                vec![rec(2, 0x10, Some(B1), None), rec(1, 0x10, Some(A1), None)],
            ),
            txn(
                0x20,
                b"",
                b"",
                vec![rec(1, 0x20, Some(A2), None), rec(3, 0x20, Some(A1), None)],
            ),
            // Undo: oid 1 back to 0x10's data, oid 3's creation undone.
            txn(
                0x30,
                b"\x01\t",
                b"",
                vec![
                    rec(3, 0x30, None, Some(0x20)),
                    rec(1, 0x30, Some(A1), Some(0x10)),
                ],
            ),
        ],
        hub: CommitHub::new(),
    }
}

fn sha1(d: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(d))
}

fn dump(
    stor: &dyn ReadStorage,
    hash_only: bool,
    pretty: Pretty,
) -> (Vec<u8>, std::result::Result<(), ToolError>) {
    let mut out = Vec::new();
    let r = zodbdump(
        stor,
        None,
        None,
        DumpOptions {
            hash_only,
            pretty,
            ..DumpOptions::default()
        },
        &mut out,
        &mut |_| {},
    );
    (out, r)
}

#[test]
fn dump_raw_over_any_storage() {
    let (out, r) = dump(&storage(), false, Pretty::Raw);
    r.unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(
        b"txn 0000000000000010 \" \"\nuser \"u1\"\ndescription \"d\xc3\xa9\\x00\\\"q\\\"\"\n",
    );
    want.extend_from_slice(b"extension \"\\x80\\x02}q\\x00U\\x01xK\\x01s.\"\n");
    want.extend_from_slice(
        format!("obj 0000000000000001 {} sha1:{}\n", A1.len(), sha1(A1)).as_bytes(),
    );
    want.extend_from_slice(A1);
    want.extend_from_slice(
        format!("\nobj 0000000000000002 {} sha1:{}\n", B1.len(), sha1(B1)).as_bytes(),
    );
    want.extend_from_slice(B1);
    want.extend_from_slice(b"\n\n");
    want.extend_from_slice(b"txn 0000000000000020 \" \"\nuser \"\"\ndescription \"d\xc3\xa9\\x00\\\"q\\\"\"\nextension \"\"\n");
    want.extend_from_slice(
        format!("obj 0000000000000001 {} sha1:{}\n", A2.len(), sha1(A2)).as_bytes(),
    );
    want.extend_from_slice(A2);
    want.extend_from_slice(
        format!("\nobj 0000000000000003 {} sha1:{}\n", A1.len(), sha1(A1)).as_bytes(),
    );
    want.extend_from_slice(A1);
    want.extend_from_slice(b"\n\n");
    want.extend_from_slice(b"txn 0000000000000030 \" \"\nuser \"\\x01\\t\"\ndescription \"d\xc3\xa9\\x00\\\"q\\\"\"\nextension \"\"\n");
    want.extend_from_slice(
        b"obj 0000000000000001 from 0000000000000010\nobj 0000000000000003 delete\n\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn dump_zpickledis_over_any_storage() {
    let (out, r) = dump(&storage(), false, Pretty::ZPickleDis);
    r.unwrap();
    let out = String::from_utf8(out).unwrap();
    let want = format!(
        "txn 0000000000000010 \" \"
user \"u1\"
description \"d\u{e9}\\x00\\\"q\\\"\"
extension
      0: \\x80 PROTO      2
      2: }}    EMPTY_DICT
      3: q    BINPUT     0
      5: U    SHORT_BINSTRING 'x'
      8: K    BININT1    1
     10: s    SETITEM
     11: .    STOP
  highest protocol among opcodes = 2
obj 0000000000000001 {} sha1:{}
      0: \\x80 PROTO      2
      2: c    GLOBAL     'foo A'
      9: q    BINPUT     0
     11: .    STOP
  highest protocol among opcodes = 2
     12: \\x80 PROTO      2
     14: K    BININT1    1
     16: .    STOP
  highest protocol among opcodes = 2
",
        A1.len(),
        sha1(A1)
    );
    assert!(out.starts_with(&want), "{out}");
    // The state pickle of A2 GETs memo 0 that its class pickle PUT; B1 has
    // bytes after its state pickle.
    assert!(out.contains("     14: h    BINGET     0\n"), "{out}");
    assert!(
        out.contains("  highest protocol among opcodes = 2\n  + extra data \"extra\"\n\n"),
        "{out}"
    );
}

#[test]
fn dump_stops_at_a_pickle_it_cannot_disassemble() {
    let mut stor = storage();
    stor.txns[1].records[1].data =
        Some(Bytes::from_static(b"\x80\x02cfoo\nA\nq\x00.\x80\x02h\x07."));
    let (out, r) = dump(&stor, false, Pretty::ZPickleDis);
    let e = r.unwrap_err();
    assert!(matches!(e, ToolError::Pickle { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "txn 0000000000000020: obj 0000000000000003",
        "{e}"
    );
    assert!(
        std::error::Error::source(&e).is_some(),
        "the pickle error is the cause"
    );
    let out = String::from_utf8(out).unwrap();
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("obj 0000000000000003 ") && last.contains(" sha1:"),
        "{last}"
    );
    // The raw and hash-only forms do not read pickles, and succeed.
    dump(&stor, false, Pretty::Raw).1.unwrap();
    dump(&stor, true, Pretty::ZPickleDis).1.unwrap();

    // A bad extension: the header lines, `extension`, then the error.
    let mut stor = storage();
    stor.txns[0].info.meta.extension = Bytes::from_static(b"\x80\x02}q\x00");
    let (out, r) = dump(&stor, false, Pretty::ZPickleDis);
    assert_eq!(
        r.unwrap_err().to_string(),
        "txn 0000000000000010: extension"
    );
    assert!(String::from_utf8(out).unwrap().ends_with("\"\nextension\n"));
}

#[test]
fn analyze_over_any_storage() {
    let rep = analyze(&storage(), None, None, &mut |_| {}).unwrap();
    let mut out = Vec::new();
    report(&rep, true, &mut out).unwrap();
    // foo.A: 4 records of 17 bytes with data (1@10, 1@20, 3@20, and 1@30
    // through data_txn); current: oids 1 and 3; old: 1@10 and 1@20. foo.B:
    // one record of 22 bytes. The undone creation of 3 counts as a record
    // only. Smaller total first.
    let want = "Class Name,T.Count,T.Bytes,Pct,AvgSize,C.Count,C.Bytes,O.Count,O.Bytes\n\
                foo.B,1,22,24.444444%,22.000000,1,22,0,0\n\
                foo.A,4,68,75.555556%,17.000000,2,34,2,34\n";
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert_eq!((rep.records, rep.txns), (6, 3));
}

#[test]
fn catobj_and_info_over_any_storage() {
    let stor = storage();
    let mut out = Vec::new();
    let xids = [
        Xid {
            oid: Oid(1),
            at: Some(Tid(0x1f)),
        },
        Xid {
            oid: Oid(1),
            at: None,
        },
    ];
    catobj(&stor, &xids, CatMode::HashOnly, &mut out).unwrap();
    let want = format!(
        "obj 0000000000000001 {} sha1:{} -\nobj 0000000000000001 {} sha1:{} -\n",
        A1.len(),
        sha1(A1),
        A1.len(),
        sha1(A1)
    );
    assert_eq!(String::from_utf8(out).unwrap(), want);
    // Not yet created; deleted by undo.
    assert!(
        catobj(
            &stor,
            &[Xid {
                oid: Oid(3),
                at: Some(Tid(0x1f))
            }],
            CatMode::Raw,
            &mut Vec::new()
        )
        .is_err()
    );
    assert!(
        catobj(
            &stor,
            &[Xid {
                oid: Oid(3),
                at: None
            }],
            CatMode::Raw,
            &mut Vec::new()
        )
        .is_err()
    );

    let (mut out, mut err) = (Vec::new(), Vec::new());
    zodbinfo(&stor, "mem", &[], &mut out, &mut err).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "name=mem\nsize=42\nhead=0000000000000030\nlast_tid=0000000000000030\n"
    );
    assert_eq!(
        String::from_utf8(err).unwrap(),
        "W: last_tid is deprecated alias for head\n"
    );
}

/// A storage whose iteration fails after its first transaction.
struct Failing(MemStorage);

impl ReadStorage for Failing {
    fn name(&self) -> String {
        self.0.name()
    }
    fn last_transaction(&self) -> Tid {
        self.0.last_transaction()
    }
    fn object_count(&self) -> u64 {
        0
    }
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<Revision>> {
        self.0.load_before(oid, before)
    }
    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Bytes> {
        self.0.load_serial(oid, serial)
    }
    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        self.0.history(oid, size)
    }
    fn iter_transactions(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TxnIter<'_>> {
        let first = self.0.iter_transactions(start, stop)?.take(1);
        let broken = std::iter::once(Err(StorageError::Io(std::io::Error::other("disk on fire"))));
        Ok(Box::new(first.chain(broken)))
    }
    fn watch(&self) -> CommitWatch {
        self.0.watch()
    }
}

#[test]
fn storage_errors_end_the_dump_after_the_good_transactions() {
    let (want, r) = dump(&storage(), false, Pretty::Raw);
    r.unwrap();
    let first_txn = &want[..want.windows(5).position(|w| w == b"\n\ntxn").unwrap() + 2];
    let (out, r) = dump(&Failing(storage()), false, Pretty::Raw);
    assert!(r.unwrap_err().to_string().contains("disk on fire"));
    assert_eq!(out, first_txn);
    let e = analyze(&Failing(storage()), None, None, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("disk on fire"));
}

/// Many transactions (more than one read-ahead batch): the dump is the
/// concatenation of the dumps of each transaction alone, and progress sees
/// every tid once, in order.
#[test]
fn batches_join_seamlessly() {
    let mut txns = Vec::new();
    for i in 1..=10_000u64 {
        let data: &'static [u8] = if i % 3 == 0 { B1 } else { A1 };
        let mut recs = vec![
            rec(i % 7, i, Some(data), None),
            rec(100 + i % 5, i, Some(A2), None),
        ];
        if i % 11 == 0 {
            recs.push(rec(1, i, None, None));
        }
        txns.push(txn(i, b"u", b"", recs));
    }
    let stor = MemStorage {
        txns,
        hub: CommitHub::new(),
    };
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let opts = DumpOptions {
        hash_only: false,
        pretty: Pretty::Raw,
        ..DumpOptions::default()
    };
    zodbdump(&stor, None, None, opts, &mut out, &mut |t| seen.push(t.0)).unwrap();
    assert_eq!(seen, (1..=10_000).collect::<Vec<_>>());
    let mut want = Vec::new();
    for i in (1..=10_000u64).step_by(997).chain([10_000]) {
        let mut one = Vec::new();
        zodbdump(
            &stor,
            Some(Tid(i)),
            Some(Tid(i)),
            opts,
            &mut one,
            &mut |_| {},
        )
        .unwrap();
        want.push(one);
    }
    for one in &want {
        assert!(
            out.windows(one.len()).any(|w| w == &one[..]),
            "a transaction's dump is missing"
        );
    }
    assert!(out.ends_with(want.last().unwrap()));
    let blocks = out.windows(5).filter(|w| w == b"\n\ntxn").count() + 1;
    assert_eq!(blocks, 10_000);
}
