//! Client → server calls as one typed enum, decoded once per message.
//!
//! Python's server dispatches with `getattr(zeo_storage, name)(*args)`
//! after checking `name` against an allowlist (ZEO: `StorageServer.py`
//! `registered_methods`, anti-pattern 5 of style.md). Here each message is
//! checked once — method known, arity and argument types right — and
//! becomes a [`Request`] that the server handles with one exhaustive
//! `match`. Failures are typed and carry the msgid and whether the call
//! was async, which is what the server needs to answer as Python does:
//!
//! | failure | Python's server | [`RequestError::disposition`] |
//! |---|---|---|
//! | undecodable, not a 4-tuple, forbidden global | logs, closes | `Close` |
//! | method not in the allowlist | logs, closes | `Close` |
//! | wrong arity or types, sync call | replies `builtins.TypeError` | `Reply(TypeError)` |
//! | wrong arity or types, async call | closes | `Close` |
//!
//! Argument types follow what Python's `ClientStorage` sends and what the
//! server-side code would accept: oids and tids are 8 bytes (or a Python 2
//! `str` of 8 bytes), `read_only`/`wait` are truth values, optional trailing
//! arguments take Python's defaults. [`Request::to_message`] writes a call
//! exactly as `ClientStorage` does, so a Rust client is indistinguishable
//! on the wire.

use bytes::Bytes;
use zodb_core::{Oid, Tid, TxnStatus};

use crate::encoding::{Encoding, GlobalPolicy};
use crate::exception::ZeoException;
use crate::message::{Message, MessageError};
use crate::value::Value;

/// `id(txn)` in the client: the key of a transaction on one connection.
/// Python compares it for equality only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxnId(pub i64);

macro_rules! methods {
    ($($variant:ident = $name:literal,)*) => {
        /// The methods a ZEO 5/6 server serves (`register` plus
        /// `registered_methods` of ZEO 6.2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method { $(
            #[doc = concat!("`", $name, "`")]
            $variant,
        )* }

        impl Method {
            /// Every method, for tests and tools.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)*];

            /// The wire name.
            pub fn name(self) -> &'static str {
                match self { $(Method::$variant => $name,)* }
            }

            /// The method of a wire name; `None` for anything a ZEO 5/6
            /// server does not serve (`undo`, ZEO 4's `loadEx`, ...).
            pub fn from_name(name: &str) -> Option<Method> {
                match name { $($name => Some(Method::$variant),)* _ => None }
            }
        }
    };
}

methods! {
    Register = "register",
    GetInfo = "get_info",
    LastTransaction = "lastTransaction",
    GetInvalidations = "getInvalidations",
    NewOids = "new_oids",
    NewOid = "new_oid",
    Pack = "pack",
    LoadBefore = "loadBefore",
    LoadSerial = "loadSerial",
    GetTid = "getTid",
    History = "history",
    RecordIternext = "record_iternext",
    Storea = "storea",
    CheckCurrentSerialInTransaction = "checkCurrentSerialInTransaction",
    Restorea = "restorea",
    DeleteObject = "deleteObject",
    StoreBlobStart = "storeBlobStart",
    StoreBlobChunk = "storeBlobChunk",
    StoreBlobEnd = "storeBlobEnd",
    StoreBlobShared = "storeBlobShared",
    SendBlob = "sendBlob",
    TpcBegin = "tpc_begin",
    Vote = "vote",
    TpcFinish = "tpc_finish",
    TpcAbort = "tpc_abort",
    Undoa = "undoa",
    UndoLog = "undoLog",
    UndoInfo = "undoInfo",
    IteratorStart = "iterator_start",
    IteratorNext = "iterator_next",
    IteratorRecordStart = "iterator_record_start",
    IteratorRecordNext = "iterator_record_next",
    IteratorGc = "iterator_gc",
    ServerStatus = "server_status",
    SetClientLabel = "set_client_label",
    Ping = "ping",
}

impl Method {
    /// Whether `ClientStorage` sends this method as an async call (msgid 0,
    /// no reply). The server must not reply to async calls whatever the
    /// method; this is what a client should use.
    pub fn is_async(self) -> bool {
        matches!(
            self,
            Method::TpcBegin
                | Method::Storea
                | Method::CheckCurrentSerialInTransaction
                | Method::Restorea
                | Method::DeleteObject
                | Method::StoreBlobStart
                | Method::StoreBlobChunk
                | Method::StoreBlobEnd
                | Method::StoreBlobShared
                | Method::Undoa
                | Method::IteratorGc
                | Method::SetClientLabel
        )
    }
}

/// One typed client call.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `register(storage_id, read_only)`: select the storage; returns its
    /// last tid.
    Register {
        /// The storage name (`"1"` by default).
        storage: String,
        /// Read-only connection.
        read_only: bool,
    },
    /// `get_info()`: the storage info dict.
    GetInfo,
    /// `lastTransaction()`.
    LastTransaction,
    /// `getInvalidations(tid)`: oids changed after `tid`, or None.
    GetInvalidations {
        /// The client cache's last tid.
        tid: Tid,
    },
    /// `new_oids(n=100)`.
    NewOids {
        /// How many; `None` when the client sent no argument (it then gets
        /// 100, which is what `ClientStorage` always asks for).
        n: Option<i64>,
    },
    /// `new_oid`: in Python's allowlist but not implemented; the reply is
    /// `builtins.AttributeError` (captured). Its arguments are never looked at.
    NewOid,
    /// `pack(t, wait=1)`.
    Pack {
        /// Pack time (seconds since the epoch).
        time: f64,
        /// Reply only after the pack is done.
        wait: bool,
    },
    /// `loadBefore(oid, tid)`; its msgid is `(oid, tid)`.
    LoadBefore {
        /// The object.
        oid: Oid,
        /// The revision current just before this tid is wanted.
        before: Tid,
    },
    /// `loadSerial(oid, serial)`.
    LoadSerial {
        /// The object.
        oid: Oid,
        /// The exact revision.
        serial: Tid,
    },
    /// `getTid(oid)` (deprecated; ZODB's tests use it).
    GetTid {
        /// The object.
        oid: Oid,
    },
    /// `history(oid, size=1)`.
    History {
        /// The object.
        oid: Oid,
        /// How many revisions at most.
        size: i64,
    },
    /// `record_iternext(next=None)`.
    RecordIternext {
        /// The cookie the previous call returned.
        next: Option<Bytes>,
    },
    /// `storea(oid, serial, data, txn)` (async).
    Storea {
        /// The object.
        oid: Oid,
        /// The tid the client read ([`Tid::ZERO`] for a new object).
        serial: Tid,
        /// The record.
        data: Bytes,
        /// The transaction.
        txn: TxnId,
    },
    /// `checkCurrentSerialInTransaction(oid, serial, txn)` (async).
    CheckCurrentSerialInTransaction {
        /// The object.
        oid: Oid,
        /// The serial that must still be current at vote.
        serial: Tid,
        /// The transaction.
        txn: TxnId,
    },
    /// `restorea(oid, serial, data, prev_txn, txn)` (async).
    Restorea {
        /// The object.
        oid: Oid,
        /// The serial to write.
        serial: Tid,
        /// The record, `None` for "does not exist".
        data: Option<Bytes>,
        /// Where the same data already lives (back pointer), if anywhere.
        prev_txn: Option<Tid>,
        /// The transaction.
        txn: TxnId,
    },
    /// `deleteObject(oid, serial, txn)` (async, IExternalGC).
    DeleteObject {
        /// The object.
        oid: Oid,
        /// Its current serial.
        serial: Tid,
        /// The transaction.
        txn: TxnId,
    },
    /// `storeBlobStart()` (async): a blob upload begins.
    StoreBlobStart,
    /// `storeBlobChunk(chunk)` (async): up to 59000 bytes of it.
    StoreBlobChunk {
        /// The bytes.
        chunk: Bytes,
    },
    /// `storeBlobEnd(oid, serial, data, txn)` (async): the uploaded file is
    /// the blob of this store.
    StoreBlobEnd {
        /// The object.
        oid: Oid,
        /// The tid the client read.
        serial: Tid,
        /// The record.
        data: Bytes,
        /// The transaction.
        txn: TxnId,
    },
    /// `storeBlobShared(oid, serial, data, filename, txn)` (async): the blob
    /// is already in a shared blob directory under `filename`.
    StoreBlobShared {
        /// The object.
        oid: Oid,
        /// The tid the client read.
        serial: Tid,
        /// The record.
        data: Bytes,
        /// Basename in the oid's blob directory (must end in `.tmp`).
        filename: String,
        /// The transaction.
        txn: TxnId,
    },
    /// `sendBlob(oid, serial)`: stream the blob back with receiveBlob* calls.
    SendBlob {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
    /// `tpc_begin(txn, user, description, ext, tid=None, status=' ')` (async).
    TpcBegin {
        /// The transaction.
        txn: TxnId,
        /// `user` (bytes; text is UTF-8 encoded as ZODB does).
        user: Bytes,
        /// `description`.
        description: Bytes,
        /// The extension dict, as sent (the storage pickles it).
        extension: Value,
        /// A tid to commit as (restore / copy), else None.
        tid: Option<Tid>,
        /// The status to commit with (restore / copy), else committed.
        status: TxnStatus,
    },
    /// `vote(txn)`.
    Vote {
        /// The transaction.
        txn: TxnId,
    },
    /// `tpc_finish(txn)`.
    TpcFinish {
        /// The transaction.
        txn: TxnId,
    },
    /// `tpc_abort(txn)`.
    TpcAbort {
        /// The transaction.
        txn: TxnId,
    },
    /// `undoa(undo_id, txn)` (async).
    Undoa {
        /// The opaque id from undoLog/undoInfo.
        undo_id: Bytes,
        /// The transaction.
        txn: TxnId,
    },
    /// `undoLog(first, last)`.
    UndoLog {
        /// First entry.
        first: i64,
        /// Last entry, or a negative count.
        last: i64,
    },
    /// `undoInfo(first, last, spec)`.
    UndoInfo {
        /// First entry.
        first: i64,
        /// Last entry, or a negative count.
        last: i64,
        /// None or a dict of field → value or `ZopeUndo.Prefix` object.
        spec: Value,
    },
    /// `iterator_start(start, stop)`.
    IteratorStart {
        /// First tid, or from the beginning.
        start: Option<Tid>,
        /// Last tid, or to the end.
        stop: Option<Tid>,
    },
    /// `iterator_next(iid)`.
    IteratorNext {
        /// Iterator id.
        iid: i64,
    },
    /// `iterator_record_start(txn_iid, tid)`.
    IteratorRecordStart {
        /// The transaction iterator.
        txn_iid: i64,
        /// The tid it last returned.
        tid: Tid,
    },
    /// `iterator_record_next(iid)`.
    IteratorRecordNext {
        /// Iterator id.
        iid: i64,
    },
    /// `iterator_gc(iids)` (async).
    IteratorGc {
        /// Iterators to free.
        iids: Vec<i64>,
    },
    /// `server_status()`.
    ServerStatus,
    /// `set_client_label(label)` (async; logging only).
    SetClientLabel {
        /// Whatever the client gave (Python logs `str(label)`).
        label: Value,
    },
    /// `ping()`: a round trip.
    Ping,
}

/// Why a call's arguments do not fit its method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

/// Positional arguments with Python-like checks.
struct Args<'a> {
    method: Method,
    items: &'a [Value],
}

impl<'a> Args<'a> {
    fn new(method: Method, args: &'a Value, min: usize, max: usize) -> Result<Args<'a>, ArgError> {
        let items = args.as_seq().ok_or_else(|| {
            ArgError(format!(
                "{}() argument list is a {}",
                method.name(),
                args.type_name()
            ))
        })?;
        if items.len() < min || items.len() > max {
            // Python counts `self`.
            let takes = if min == max {
                format!("{}", max + 1)
            } else {
                format!("from {} to {}", min + 1, max + 1)
            };
            let plural = if min == max && max == 0 { "" } else { "s" };
            return Err(ArgError(format!(
                "{}() takes {takes} positional argument{plural} but {} were given",
                method.name(),
                items.len() + 1
            )));
        }
        Ok(Args { method, items })
    }

    fn get(&self, i: usize) -> Option<&'a Value> {
        self.items.get(i)
    }

    fn bad(&self, i: usize, want: &str) -> ArgError {
        let got = self.get(i).map_or("nothing", Value::type_name);
        ArgError(format!(
            "{}() argument {} must be {want}, not {got}",
            self.method.name(),
            i + 1
        ))
    }

    fn oid(&self, i: usize) -> Result<Oid, ArgError> {
        self.get(i)
            .and_then(Value::as_oid)
            .ok_or_else(|| self.bad(i, "an 8-byte oid"))
    }

    fn tid(&self, i: usize) -> Result<Tid, ArgError> {
        self.get(i)
            .and_then(Value::as_tid)
            .ok_or_else(|| self.bad(i, "an 8-byte tid"))
    }

    fn opt_tid(&self, i: usize) -> Result<Option<Tid>, ArgError> {
        match self.get(i) {
            None | Some(Value::None) => Ok(None),
            Some(v) => v
                .as_tid()
                .map(Some)
                .ok_or_else(|| self.bad(i, "an 8-byte tid or None")),
        }
    }

    /// The serial of a `storea`, as ZODB's storages take it: 8 bytes;
    /// `None` for a new object (read as z64); or 8 characters of text,
    /// which ZEO's own thread tests send for z64 (`'\0' * 8`) and a
    /// storage compares only for objects that exist.
    fn store_serial(&self, i: usize) -> Result<Tid, ArgError> {
        match self.get(i) {
            None | Some(Value::None) => Ok(Tid::ZERO),
            Some(Value::Str(s)) => {
                let bytes: Option<Vec<u8>> =
                    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                bytes
                    .as_deref()
                    .and_then(Tid::from_slice)
                    .ok_or_else(|| self.bad(i, "an 8-byte tid or None"))
            }
            Some(v) => v
                .as_tid()
                .ok_or_else(|| self.bad(i, "an 8-byte tid or None")),
        }
    }

    fn bytes(&self, i: usize) -> Result<Bytes, ArgError> {
        self.get(i)
            .and_then(Value::as_bytes)
            .cloned()
            .ok_or_else(|| self.bad(i, "bytes"))
    }

    fn opt_bytes(&self, i: usize) -> Result<Option<Bytes>, ArgError> {
        match self.get(i) {
            None | Some(Value::None) => Ok(None),
            Some(v) => v
                .as_bytes()
                .cloned()
                .map(Some)
                .ok_or_else(|| self.bad(i, "bytes or None")),
        }
    }

    /// Bytes, or text encoded as UTF-8 (ZODB's TransactionMetaData does so).
    fn bytes_or_text(&self, i: usize) -> Result<Bytes, ArgError> {
        match self.get(i) {
            Some(Value::Str(s)) => Ok(Bytes::copy_from_slice(s.as_bytes())),
            Some(v) => v
                .as_bytes()
                .cloned()
                .ok_or_else(|| self.bad(i, "bytes or str")),
            None => Err(self.bad(i, "bytes or str")),
        }
    }

    fn text(&self, i: usize) -> Result<String, ArgError> {
        self.get(i)
            .and_then(Value::as_text)
            .map(str::to_owned)
            .ok_or_else(|| self.bad(i, "str"))
    }

    fn int(&self, i: usize) -> Result<i64, ArgError> {
        match self.get(i) {
            Some(Value::Bool(b)) => Ok(i64::from(*b)),
            Some(v) => v.as_i64().ok_or_else(|| self.bad(i, "an int")),
            None => Err(self.bad(i, "an int")),
        }
    }

    fn txn(&self, i: usize) -> Result<TxnId, ArgError> {
        self.get(i)
            .and_then(Value::as_i64)
            .map(TxnId)
            .ok_or_else(|| self.bad(i, "a transaction id (int)"))
    }

    fn truthy(&self, i: usize, default: bool) -> bool {
        self.get(i).map_or(default, Value::truthy)
    }
}

fn status_of(v: Option<&Value>) -> Option<TxnStatus> {
    let b = match v? {
        Value::Str(s) => s.as_bytes(),
        Value::Bytes(b) | Value::Py2Str(b) => b,
        _ => return None,
    };
    match b {
        [c] => TxnStatus::from_byte(*c),
        _ => None,
    }
}

impl Request {
    /// The method.
    pub fn method(&self) -> Method {
        match self {
            Request::Register { .. } => Method::Register,
            Request::GetInfo => Method::GetInfo,
            Request::LastTransaction => Method::LastTransaction,
            Request::GetInvalidations { .. } => Method::GetInvalidations,
            Request::NewOids { .. } => Method::NewOids,
            Request::NewOid => Method::NewOid,
            Request::Pack { .. } => Method::Pack,
            Request::LoadBefore { .. } => Method::LoadBefore,
            Request::LoadSerial { .. } => Method::LoadSerial,
            Request::GetTid { .. } => Method::GetTid,
            Request::History { .. } => Method::History,
            Request::RecordIternext { .. } => Method::RecordIternext,
            Request::Storea { .. } => Method::Storea,
            Request::CheckCurrentSerialInTransaction { .. } => {
                Method::CheckCurrentSerialInTransaction
            }
            Request::Restorea { .. } => Method::Restorea,
            Request::DeleteObject { .. } => Method::DeleteObject,
            Request::StoreBlobStart => Method::StoreBlobStart,
            Request::StoreBlobChunk { .. } => Method::StoreBlobChunk,
            Request::StoreBlobEnd { .. } => Method::StoreBlobEnd,
            Request::StoreBlobShared { .. } => Method::StoreBlobShared,
            Request::SendBlob { .. } => Method::SendBlob,
            Request::TpcBegin { .. } => Method::TpcBegin,
            Request::Vote { .. } => Method::Vote,
            Request::TpcFinish { .. } => Method::TpcFinish,
            Request::TpcAbort { .. } => Method::TpcAbort,
            Request::Undoa { .. } => Method::Undoa,
            Request::UndoLog { .. } => Method::UndoLog,
            Request::UndoInfo { .. } => Method::UndoInfo,
            Request::IteratorStart { .. } => Method::IteratorStart,
            Request::IteratorNext { .. } => Method::IteratorNext,
            Request::IteratorRecordStart { .. } => Method::IteratorRecordStart,
            Request::IteratorRecordNext { .. } => Method::IteratorRecordNext,
            Request::IteratorGc { .. } => Method::IteratorGc,
            Request::ServerStatus => Method::ServerStatus,
            Request::SetClientLabel { .. } => Method::SetClientLabel,
            Request::Ping => Method::Ping,
        }
    }

    /// Checks a call's arguments and builds the request.
    pub fn from_args(method: Method, args: &Value) -> Result<Request, ArgError> {
        use Method as M;
        let a = |min, max| Args::new(method, args, min, max);
        Ok(match method {
            M::Register => {
                let a = a(2, 2)?;
                Request::Register {
                    storage: a.text(0)?,
                    read_only: a.truthy(1, false),
                }
            }
            M::GetInfo => {
                a(0, 0)?;
                Request::GetInfo
            }
            M::LastTransaction => {
                a(0, 0)?;
                Request::LastTransaction
            }
            M::GetInvalidations => Request::GetInvalidations {
                tid: a(1, 1)?.tid(0)?,
            },
            M::NewOids => {
                let a = a(0, 1)?;
                Request::NewOids {
                    n: if a.items.is_empty() {
                        None
                    } else {
                        Some(a.int(0)?)
                    },
                }
            }
            M::NewOid => Request::NewOid,
            M::Pack => {
                let a = a(1, 2)?;
                Request::Pack {
                    time: a
                        .get(0)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| a.bad(0, "a number"))?,
                    wait: a.truthy(1, true),
                }
            }
            M::LoadBefore => {
                let a = a(2, 2)?;
                Request::LoadBefore {
                    oid: a.oid(0)?,
                    before: a.tid(1)?,
                }
            }
            M::LoadSerial => {
                let a = a(2, 2)?;
                Request::LoadSerial {
                    oid: a.oid(0)?,
                    serial: a.tid(1)?,
                }
            }
            M::GetTid => Request::GetTid {
                oid: a(1, 1)?.oid(0)?,
            },
            M::History => {
                let a = a(1, 2)?;
                Request::History {
                    oid: a.oid(0)?,
                    size: if a.items.len() > 1 { a.int(1)? } else { 1 },
                }
            }
            M::RecordIternext => Request::RecordIternext {
                next: a(0, 1)?.opt_bytes(0)?,
            },
            M::Storea => {
                let a = a(4, 4)?;
                Request::Storea {
                    oid: a.oid(0)?,
                    // ZODB's storages accept `None` as the serial of a new
                    // object (ZODB's own tests store that way): it means
                    // "no revision read", i.e. z64.
                    serial: a.store_serial(1)?,
                    data: a.bytes(2)?,
                    txn: a.txn(3)?,
                }
            }
            M::CheckCurrentSerialInTransaction => {
                let a = a(3, 3)?;
                Request::CheckCurrentSerialInTransaction {
                    oid: a.oid(0)?,
                    serial: a.tid(1)?,
                    txn: a.txn(2)?,
                }
            }
            M::Restorea => {
                let a = a(5, 5)?;
                Request::Restorea {
                    oid: a.oid(0)?,
                    serial: a.tid(1)?,
                    data: a.opt_bytes(2)?,
                    prev_txn: a.opt_tid(3)?,
                    txn: a.txn(4)?,
                }
            }
            M::DeleteObject => {
                let a = a(3, 3)?;
                Request::DeleteObject {
                    oid: a.oid(0)?,
                    serial: a.tid(1)?,
                    txn: a.txn(2)?,
                }
            }
            M::StoreBlobStart => {
                a(0, 0)?;
                Request::StoreBlobStart
            }
            M::StoreBlobChunk => Request::StoreBlobChunk {
                chunk: a(1, 1)?.bytes(0)?,
            },
            M::StoreBlobEnd => {
                let a = a(4, 4)?;
                Request::StoreBlobEnd {
                    oid: a.oid(0)?,
                    serial: a.tid(1)?,
                    data: a.bytes(2)?,
                    txn: a.txn(3)?,
                }
            }
            M::StoreBlobShared => {
                let a = a(5, 5)?;
                Request::StoreBlobShared {
                    oid: a.oid(0)?,
                    serial: a.tid(1)?,
                    data: a.bytes(2)?,
                    filename: a.text(3)?,
                    txn: a.txn(4)?,
                }
            }
            M::SendBlob => {
                let a = a(2, 2)?;
                Request::SendBlob {
                    oid: a.oid(0)?,
                    serial: a.tid(1)?,
                }
            }
            M::TpcBegin => {
                let a = a(4, 6)?;
                let extension = match a.get(3) {
                    Some(d @ Value::Dict(_)) => d.clone(),
                    // TransactionMetaData(extension=None) means {}.
                    Some(Value::None) => Value::Dict(Vec::new()),
                    _ => return Err(a.bad(3, "a dict")),
                };
                let status = match a.get(5) {
                    None => TxnStatus::Committed,
                    v => status_of(v).ok_or_else(|| a.bad(5, "a one-character status"))?,
                };
                Request::TpcBegin {
                    txn: a.txn(0)?,
                    user: a.bytes_or_text(1)?,
                    description: a.bytes_or_text(2)?,
                    extension,
                    tid: a.opt_tid(4)?,
                    status,
                }
            }
            M::Vote => Request::Vote {
                txn: a(1, 1)?.txn(0)?,
            },
            M::TpcFinish => Request::TpcFinish {
                txn: a(1, 1)?.txn(0)?,
            },
            M::TpcAbort => Request::TpcAbort {
                txn: a(1, 1)?.txn(0)?,
            },
            M::Undoa => {
                let a = a(2, 2)?;
                Request::Undoa {
                    undo_id: a.bytes(0)?,
                    txn: a.txn(1)?,
                }
            }
            M::UndoLog => {
                let a = a(2, 2)?;
                Request::UndoLog {
                    first: a.int(0)?,
                    last: a.int(1)?,
                }
            }
            M::UndoInfo => {
                let a = a(3, 3)?;
                Request::UndoInfo {
                    first: a.int(0)?,
                    last: a.int(1)?,
                    spec: a.get(2).cloned().unwrap_or(Value::None),
                }
            }
            M::IteratorStart => {
                let a = a(2, 2)?;
                Request::IteratorStart {
                    start: a.opt_tid(0)?,
                    stop: a.opt_tid(1)?,
                }
            }
            M::IteratorNext => Request::IteratorNext {
                iid: a(1, 1)?.int(0)?,
            },
            M::IteratorRecordStart => {
                let a = a(2, 2)?;
                Request::IteratorRecordStart {
                    txn_iid: a.int(0)?,
                    tid: a.tid(1)?,
                }
            }
            M::IteratorRecordNext => Request::IteratorRecordNext {
                iid: a(1, 1)?.int(0)?,
            },
            M::IteratorGc => {
                let a = a(1, 1)?;
                let items = a
                    .get(0)
                    .and_then(|v| match v {
                        Value::Set(s) | Value::FrozenSet(s) => Some(s.as_slice()),
                        v => v.as_seq(),
                    })
                    .ok_or_else(|| a.bad(0, "a list of iterator ids"))?;
                let iids = items
                    .iter()
                    .map(|v| v.as_i64().ok_or_else(|| a.bad(0, "a list of ints")))
                    .collect::<Result<_, _>>()?;
                Request::IteratorGc { iids }
            }
            M::ServerStatus => {
                a(0, 0)?;
                Request::ServerStatus
            }
            M::SetClientLabel => Request::SetClientLabel {
                label: a(1, 1)?.get(0).cloned().unwrap_or(Value::None),
            },
            M::Ping => {
                a(0, 0)?;
                Request::Ping
            }
        })
    }

    /// The argument tuple as `ClientStorage` sends it.
    pub fn to_args(&self) -> Vec<Value> {
        let oid = Value::oid;
        let tid = Value::tid;
        let txn = |t: &TxnId| Value::from(t.0);
        let opt_tid = |t: &Option<Tid>| t.map_or(Value::None, Value::tid);
        let opt_bytes = |b: &Option<Bytes>| b.clone().map_or(Value::None, Value::Bytes);
        match self {
            Request::Register { storage, read_only } => {
                // ClientStorage passes its read_only option as given: 0 by
                // default, True for read-only (captured).
                let ro = if *read_only {
                    Value::Bool(true)
                } else {
                    Value::Int(0)
                };
                vec![Value::str(storage.as_str()), ro]
            }
            Request::GetInfo
            | Request::LastTransaction
            | Request::NewOid
            | Request::StoreBlobStart
            | Request::ServerStatus
            | Request::Ping => vec![],
            Request::GetInvalidations { tid: t } => vec![tid(*t)],
            Request::NewOids { n } => n.iter().map(|n| Value::from(*n)).collect(),
            Request::Pack { time, wait } => {
                vec![Value::Float(*time), Value::Int(i128::from(*wait))]
            }
            Request::LoadBefore { oid: o, before } => vec![oid(*o), tid(*before)],
            Request::LoadSerial { oid: o, serial } | Request::SendBlob { oid: o, serial } => {
                vec![oid(*o), tid(*serial)]
            }
            Request::GetTid { oid: o } => vec![oid(*o)],
            Request::History { oid: o, size } => vec![oid(*o), Value::from(*size)],
            Request::RecordIternext { next } => vec![opt_bytes(next)],
            Request::Storea {
                oid: o,
                serial,
                data,
                txn: t,
            }
            | Request::StoreBlobEnd {
                oid: o,
                serial,
                data,
                txn: t,
            } => {
                vec![oid(*o), tid(*serial), Value::Bytes(data.clone()), txn(t)]
            }
            Request::CheckCurrentSerialInTransaction {
                oid: o,
                serial,
                txn: t,
            }
            | Request::DeleteObject {
                oid: o,
                serial,
                txn: t,
            } => {
                vec![oid(*o), tid(*serial), txn(t)]
            }
            Request::Restorea {
                oid: o,
                serial,
                data,
                prev_txn,
                txn: t,
            } => {
                vec![
                    oid(*o),
                    tid(*serial),
                    opt_bytes(data),
                    opt_tid(prev_txn),
                    txn(t),
                ]
            }
            Request::StoreBlobChunk { chunk } => vec![Value::Bytes(chunk.clone())],
            Request::StoreBlobShared {
                oid: o,
                serial,
                data,
                filename,
                txn: t,
            } => vec![
                oid(*o),
                tid(*serial),
                Value::Bytes(data.clone()),
                Value::str(filename.as_str()),
                txn(t),
            ],
            Request::TpcBegin {
                txn: t,
                user,
                description,
                extension,
                tid: restore_tid,
                status,
            } => {
                vec![
                    txn(t),
                    Value::Bytes(user.clone()),
                    Value::Bytes(description.clone()),
                    extension.clone(),
                    opt_tid(restore_tid),
                    Value::Str(char::from(status.as_byte()).to_string()),
                ]
            }
            Request::Vote { txn: t }
            | Request::TpcFinish { txn: t }
            | Request::TpcAbort { txn: t } => {
                vec![txn(t)]
            }
            Request::Undoa { undo_id, txn: t } => vec![Value::Bytes(undo_id.clone()), txn(t)],
            Request::UndoLog { first, last } => vec![Value::from(*first), Value::from(*last)],
            Request::UndoInfo { first, last, spec } => {
                vec![Value::from(*first), Value::from(*last), spec.clone()]
            }
            Request::IteratorStart { start, stop } => vec![opt_tid(start), opt_tid(stop)],
            Request::IteratorNext { iid } | Request::IteratorRecordNext { iid } => {
                vec![Value::from(*iid)]
            }
            Request::IteratorRecordStart { txn_iid, tid: t } => {
                vec![Value::from(*txn_iid), tid(*t)]
            }
            Request::IteratorGc { iids } => {
                vec![Value::List(iids.iter().map(|i| Value::from(*i)).collect())]
            }
            Request::SetClientLabel { label } => vec![label.clone()],
        }
    }

    /// The call as `ClientStorage` writes it: async methods with msgid 0
    /// and flag True, others with `msgid` and flag False. For `loadBefore`
    /// Python uses `(oid, tid)` as the msgid; any unique msgid works.
    pub fn to_message(&self, msgid: Value) -> Message {
        let method = self.method();
        if method.is_async() {
            Message::async_call(method.name(), self.to_args())
        } else {
            Message::call(msgid, method.name(), self.to_args())
        }
    }

    /// The msgid `ClientStorage` uses for a `loadBefore`: `(oid, tid)`, so
    /// that duplicate in-flight loads collapse.
    pub fn load_before_msgid(oid: Oid, before: Tid) -> Value {
        Value::Tuple(vec![Value::oid(oid), Value::tid(before)])
    }
}

/// A decoded client message.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived, moved once into the dispatch; boxing would allocate per message"
)]
pub enum Incoming {
    /// `(-1, 0, '.reply', None)`: ignore, never reply.
    Heartbeat,
    /// A call.
    Call(Call),
}

/// A typed call with what its reply needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// To echo in the reply.
    pub msgid: Value,
    /// Async calls get no reply, not even an error (Python closes the
    /// connection when one fails).
    pub is_async: bool,
    /// The request.
    pub request: Request,
}

/// A client message the server cannot act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not a decodable ZEO message (including forbidden globals).
    #[error("undecodable message: {0}")]
    Undecodable(#[from] MessageError),
    /// A method the server does not serve.
    #[error("unknown method {method:?}")]
    UnknownMethod {
        /// The call's msgid.
        msgid: Value,
        /// The name.
        method: String,
        /// Whether it was sent as async.
        is_async: bool,
    },
    /// Wrong arity or argument types.
    #[error("{source}")]
    BadArguments {
        /// The call's msgid.
        msgid: Value,
        /// The method.
        method: Method,
        /// Whether it was sent as async.
        is_async: bool,
        /// What is wrong (the text of the TypeError replied).
        source: ArgError,
    },
}

/// What the server does about a [`RequestError`].
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Close the connection (Python logs and closes).
    Close,
    /// Reply with this exception to this msgid and go on.
    Reply {
        /// The msgid to echo.
        msgid: Value,
        /// The exception.
        exception: ZeoException,
    },
}

impl RequestError {
    /// What Python's server does in the same case.
    pub fn disposition(&self) -> Disposition {
        match self {
            RequestError::BadArguments {
                msgid,
                is_async: false,
                source,
                ..
            } => Disposition::Reply {
                msgid: msgid.clone(),
                exception: ZeoException::type_error(&source.0),
            },
            _ => Disposition::Close,
        }
    }
}

impl Incoming {
    /// Decodes one frame from a client: envelope, method, arguments.
    pub fn decode(encoding: Encoding, data: &Bytes) -> Result<Incoming, RequestError> {
        let msg = Message::decode(encoding, data, GlobalPolicy::FromClient)?;
        Incoming::from_message(msg)
    }

    /// Types a decoded message.
    pub fn from_message(msg: Message) -> Result<Incoming, RequestError> {
        if msg.is_heartbeat() {
            return Ok(Incoming::Heartbeat);
        }
        let is_async = msg.flag_set();
        let Some(method) = Method::from_name(&msg.method) else {
            return Err(RequestError::UnknownMethod {
                msgid: msg.msgid,
                method: msg.method,
                is_async,
            });
        };
        match Request::from_args(method, &msg.args) {
            Ok(request) => Ok(Incoming::Call(Call {
                msgid: msg.msgid,
                is_async,
                request,
            })),
            Err(source) => Err(RequestError::BadArguments {
                msgid: msg.msgid,
                method,
                is_async,
                source,
            }),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    fn call(method: &str, args: Vec<Value>) -> Result<Incoming, RequestError> {
        Incoming::from_message(Message::call(Value::Int(7), method, args))
    }

    #[test]
    fn every_method_name_round_trips() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(*m));
        }
        assert_eq!(Method::from_name("undo"), None);
        assert_eq!(Method::from_name("loadEx"), None);
    }

    #[test]
    fn arity_errors_reply_type_error_like_python() {
        let err = call("lastTransaction", vec![Value::str("extra")]).unwrap_err();
        match err.disposition() {
            Disposition::Reply { msgid, exception } => {
                assert_eq!(msgid, Value::Int(7));
                assert_eq!(exception.class_path(), "builtins.TypeError");
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(
            err.to_string(),
            "lastTransaction() takes 1 positional argument but 2 were given"
        );
        // Async calls that fail close the connection.
        let err = Incoming::from_message(Message::async_call("storea", vec![])).unwrap_err();
        assert_eq!(err.disposition(), Disposition::Close);
    }

    #[test]
    fn unknown_methods_close_and_keep_the_msgid() {
        let err = call("undo", vec![Value::bytes(&b"x"[..]), Value::Int(1)]).unwrap_err();
        assert!(matches!(
            &err,
            RequestError::UnknownMethod { msgid: Value::Int(7), method, is_async: false } if method == "undo"
        ));
        assert_eq!(err.disposition(), Disposition::Close);
    }

    #[test]
    fn types_are_checked() {
        let short_oid = call(
            "loadBefore",
            vec![Value::bytes(&b"\x00"[..]), Value::tid(Tid(1))],
        );
        assert!(matches!(short_oid, Err(RequestError::BadArguments { .. })));
        // A Python 2 client's oids are str: accepted.
        let py2 = call(
            "loadBefore",
            vec![
                Value::Py2Str(Bytes::from_static(&[0; 8])),
                Value::tid(Tid(1)),
            ],
        )
        .unwrap();
        assert!(matches!(
            py2,
            Incoming::Call(Call {
                request: Request::LoadBefore {
                    oid: Oid(0),
                    before: Tid(1)
                },
                ..
            })
        ));
        let hb = Incoming::from_message(Message::heartbeat()).unwrap();
        assert_eq!(hb, Incoming::Heartbeat);
    }

    #[test]
    fn defaults_follow_python() {
        let Incoming::Call(c) = call("history", vec![Value::oid(Oid(1))]).unwrap() else {
            panic!()
        };
        assert_eq!(
            c.request,
            Request::History {
                oid: Oid(1),
                size: 1
            }
        );
        let Incoming::Call(c) = call("pack", vec![Value::Int(12)]).unwrap() else {
            panic!()
        };
        assert_eq!(
            c.request,
            Request::Pack {
                time: 12.0,
                wait: true
            }
        );
        let Incoming::Call(c) = call(
            "tpc_begin",
            vec![
                Value::Int(5),
                Value::str("u"),
                Value::bytes(&b"d"[..]),
                Value::None,
            ],
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            c.request,
            Request::TpcBegin {
                txn: TxnId(5),
                user: Bytes::from_static(b"u"),
                description: Bytes::from_static(b"d"),
                extension: Value::Dict(vec![]),
                tid: None,
                status: TxnStatus::Committed,
            }
        );
    }
}
