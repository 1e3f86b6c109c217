//! Test support: an in-memory storage of hand-made records, and a small
//! pickle writer to make them (protocol 2 opcodes, as NEO/go and Python 2
//! ZODB 5.3 write; no memo), so tests can build the broken objects real
//! databases should never hold.

// Pickle lengths and BININT values are little-endian by format; not every
// test binary uses every helper.
#![allow(dead_code, clippy::little_endian_bytes)]

use std::collections::HashMap;

use bytes::Bytes;
use zodb_core::notify::{CommitHub, CommitWatch};
use zodb_core::storage::{HistoryEntry, Result, Revision, TxnIter};
use zodb_core::{Oid, ReadStorage, StorageError, Tid};

/// All objects written by one transaction, tid 1.
#[derive(Debug, Default)]
pub struct MemStore {
    pub objects: HashMap<Oid, Bytes>,
    hub: CommitHub,
}

pub const TID: Tid = Tid(1);

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    pub fn put(&mut self, oid: u64, record: Vec<u8>) {
        self.objects.insert(Oid(oid), Bytes::from(record));
    }
}

impl ReadStorage for MemStore {
    fn name(&self) -> String {
        "mem".into()
    }
    fn last_transaction(&self) -> Tid {
        TID
    }
    fn object_count(&self) -> u64 {
        self.objects.len() as u64
    }
    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<Revision>> {
        let data = self
            .objects
            .get(&oid)
            .ok_or(StorageError::NoSuchObject { oid })?;
        Ok((before > TID).then(|| Revision {
            data: data.clone(),
            serial: TID,
            next_serial: None,
        }))
    }
    fn load_serial(&self, oid: Oid, _serial: Tid) -> Result<Bytes> {
        Ok(self.load(oid)?.0)
    }
    fn history(&self, _oid: Oid, _size: usize) -> Result<Vec<HistoryEntry>> {
        Ok(Vec::new())
    }
    fn iter_transactions(&self, _start: Option<Tid>, _stop: Option<Tid>) -> Result<TxnIter<'_>> {
        Ok(Box::new(std::iter::empty()))
    }
    fn watch(&self) -> CommitWatch {
        self.hub.subscribe()
    }
}

/// A pickled value, built bottom-up.
#[derive(Clone, Debug)]
pub enum P {
    None,
    Int(i64),
    Bool(bool),
    Bytes(Vec<u8>),
    Str(Vec<u8>),
    Text(String),
    Tuple(Vec<P>),
    List(Vec<P>),
    Dict(Vec<(P, P)>),
    Global(String, String),
    /// `callable(*args)` then BUILD with `state`, if any.
    Reduce(Box<P>, Vec<P>, Option<Box<P>>),
    /// A persistent reference `(oid, class)`.
    Ref(u64, &'static str, &'static str),
    /// A raw persistent id value.
    Pid(Box<P>),
}

impl P {
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            P::None => out.push(b'N'),
            P::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
            P::Int(i) => match i32::try_from(*i) {
                Ok(v) => {
                    out.push(b'J');
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Err(_) => {
                    out.push(0x8a);
                    out.push(8);
                    out.extend_from_slice(&i.to_le_bytes());
                }
            },
            P::Bytes(b) => {
                out.push(b'B');
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            P::Str(b) => {
                out.push(b'T');
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            P::Text(t) => {
                out.push(b'X');
                out.extend_from_slice(&(t.len() as u32).to_le_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            P::Tuple(items) => {
                out.push(b'(');
                for i in items {
                    i.write(out);
                }
                out.push(b't');
            }
            P::List(items) => {
                out.push(b'(');
                for i in items {
                    i.write(out);
                }
                out.push(b'l');
            }
            P::Dict(items) => {
                out.push(b'}');
                if !items.is_empty() {
                    out.push(b'(');
                    for (k, v) in items {
                        k.write(out);
                        v.write(out);
                    }
                    out.push(b'u');
                }
            }
            P::Global(m, n) => {
                out.push(b'c');
                out.extend_from_slice(m.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(n.as_bytes());
                out.push(b'\n');
            }
            P::Reduce(f, args, state) => {
                f.write(out);
                P::Tuple(args.clone()).write(out);
                out.push(b'R');
                if let Some(s) = state {
                    s.write(out);
                    out.push(b'b');
                }
            }
            P::Ref(oid, m, n) => {
                P::Tuple(vec![
                    P::Bytes(oid.to_be_bytes().to_vec()),
                    P::Global((*m).into(), (*n).into()),
                ])
                .write(out);
                out.push(b'Q');
            }
            P::Pid(v) => {
                v.write(out);
                out.push(b'Q');
            }
        }
    }
}

/// A record: class `module.name` (GLOBAL) and `state`.
pub fn record(module: &str, name: &str, state: &P) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    P::Global(module.into(), name.into()).write(&mut out);
    out.push(b'.');
    out.extend_from_slice(&[0x80, 2]);
    state.write(&mut out);
    out.push(b'.');
    out
}

pub const FZ: &str = "wendelin.bigfile.file_zodb";
pub const LO: &str = "BTrees.LOBTree";
pub const IO: &str = "BTrees.IOBTree";

pub fn t(items: Vec<P>) -> P {
    P::Tuple(items)
}

/// A bucket state `((k0, v0, ...),)` or with a next bucket.
pub fn bucket(items: Vec<(i64, P)>, next: Option<P>) -> P {
    let flat = items
        .into_iter()
        .flat_map(|(k, v)| [P::Int(k), v])
        .collect();
    let mut s = vec![P::Tuple(flat)];
    s.extend(next);
    P::Tuple(s)
}

/// A numpy dtype pickle for a simple type string, e.g. ("f8", "<").
pub fn dtype(typestr: &str, order: &str) -> P {
    P::Reduce(
        Box::new(P::Global("numpy".into(), "dtype".into())),
        vec![P::Text(typestr.into()), P::Bool(false), P::Bool(true)],
        Some(Box::new(t(vec![
            P::Int(3),
            P::Text(order.into()),
            P::None,
            P::None,
            P::None,
            P::Int(-1),
            P::Int(-1),
            P::Int(0),
        ]))),
    )
}
