//! Server → client messages: replies, exception replies and the async calls
//! a ZEO 5/6 client accepts (`invalidateTransaction`, `info`,
//! `receiveBlobStart/Chunk/Stop`; ZEO: `asyncio/client.py`
//! `client_methods`), plus typed forms of the results the server returns.
//!
//! ZEO 4's `serialnos` is deliberately absent: ZEO 5 removed it and a ZEO
//! 5/6 client rejects any other method name (spec zeo.md §5), so a server
//! must never send it and a client decodes it as
//! [`ServerMessageError::UnknownClientMethod`].
//!
//! Result dicts are built with Python's key order, because the order is
//! the bytes: `get_info` (`length, size, name, supportsUndo,
//! supports_record_iternext, interfaces`), `history` (the transaction's
//! extension first, then `time, user_name, description, tid, size` through
//! `dict.update`), `undoLog`/`undoInfo` (`id, time, user_name, size,
//! description`, then the extension), client-side conflicts (`oid, serials,
//! data`).

use bytes::Bytes;
use zodb_core::{Oid, Tid};

use crate::encoding::{EncodeError, Encoding, GlobalPolicy, Payload};
use crate::exception::ZeoException;
use crate::message::{Message, MessageError};
use crate::value::Value;

/// An async call the server makes on the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCall {
    /// `invalidateTransaction(tid, oids)`: sent for every commit to every
    /// other client of the storage, also with an empty list; oids may repeat.
    InvalidateTransaction {
        /// The committed transaction.
        tid: Tid,
        /// What it changed.
        oids: Vec<Oid>,
    },
    /// `info({'length': …, 'size': …})`: new size statistics.
    Info {
        /// Number of objects.
        length: i64,
        /// Storage size in bytes.
        size: i64,
    },
    /// `receiveBlobStart(oid, serial)`.
    ReceiveBlobStart {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
    /// `receiveBlobChunk(oid, serial, chunk)` (59000-byte chunks).
    ReceiveBlobChunk {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
        /// The bytes.
        chunk: Bytes,
    },
    /// `receiveBlobStop(oid, serial)`.
    ReceiveBlobStop {
        /// The object.
        oid: Oid,
        /// The revision.
        serial: Tid,
    },
}

impl ClientCall {
    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            ClientCall::InvalidateTransaction { .. } => "invalidateTransaction",
            ClientCall::Info { .. } => "info",
            ClientCall::ReceiveBlobStart { .. } => "receiveBlobStart",
            ClientCall::ReceiveBlobChunk { .. } => "receiveBlobChunk",
            ClientCall::ReceiveBlobStop { .. } => "receiveBlobStop",
        }
    }

    /// The argument tuple as Python's server sends it.
    pub fn to_args(&self) -> Vec<Value> {
        match self {
            ClientCall::InvalidateTransaction { tid, oids } => {
                vec![Value::tid(*tid), oid_list(oids)]
            }
            ClientCall::Info { length, size } => vec![Value::str_dict([
                ("length", Value::from(*length)),
                ("size", Value::from(*size)),
            ])],
            ClientCall::ReceiveBlobStart { oid, serial }
            | ClientCall::ReceiveBlobStop { oid, serial } => {
                vec![Value::oid(*oid), Value::tid(*serial)]
            }
            ClientCall::ReceiveBlobChunk { oid, serial, chunk } => {
                vec![
                    Value::oid(*oid),
                    Value::tid(*serial),
                    Value::Bytes(chunk.clone()),
                ]
            }
        }
    }

    fn from_args(name: &str, args: &Value) -> Result<ClientCall, ServerMessageError> {
        let bad = || ServerMessageError::BadArguments {
            method: name.to_owned(),
        };
        let a = args.as_seq().ok_or_else(bad)?;
        let oid = |i: usize| a.get(i).and_then(Value::as_oid).ok_or_else(bad);
        let tid = |i: usize| a.get(i).and_then(Value::as_tid).ok_or_else(bad);
        let arity = |n: usize| if a.len() == n { Ok(()) } else { Err(bad()) };
        Ok(match name {
            "invalidateTransaction" => {
                arity(2)?;
                let oids = a
                    .get(1)
                    .and_then(Value::as_seq)
                    .ok_or_else(bad)?
                    .iter()
                    .map(|v| v.as_oid().ok_or_else(bad))
                    .collect::<Result<_, _>>()?;
                ClientCall::InvalidateTransaction { tid: tid(0)?, oids }
            }
            "info" => {
                arity(1)?;
                let d = a.first().ok_or_else(bad)?;
                let int = |k| d.dict_get(k).and_then(Value::as_i64).ok_or_else(bad);
                ClientCall::Info {
                    length: int("length")?,
                    size: int("size")?,
                }
            }
            "receiveBlobStart" => {
                arity(2)?;
                ClientCall::ReceiveBlobStart {
                    oid: oid(0)?,
                    serial: tid(1)?,
                }
            }
            "receiveBlobChunk" => {
                arity(3)?;
                ClientCall::ReceiveBlobChunk {
                    oid: oid(0)?,
                    serial: tid(1)?,
                    chunk: a
                        .get(2)
                        .and_then(Value::as_bytes)
                        .cloned()
                        .ok_or_else(bad)?,
                }
            }
            "receiveBlobStop" => {
                arity(2)?;
                ClientCall::ReceiveBlobStop {
                    oid: oid(0)?,
                    serial: tid(1)?,
                }
            }
            _ => {
                return Err(ServerMessageError::UnknownClientMethod {
                    method: name.to_owned(),
                });
            }
        })
    }
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `(msgid, 0, '.reply', result)`.
    Reply {
        /// The request's msgid.
        msgid: Value,
        /// The return value.
        result: Value,
    },
    /// `(msgid, 2, '.reply', (class_path, state))`.
    Error {
        /// The request's msgid.
        msgid: Value,
        /// The exception.
        exception: ZeoException,
    },
    /// `(0, True, name, args)`.
    Call(ClientCall),
}

/// A server message a client cannot act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerMessageError {
    /// Not a decodable ZEO message.
    #[error("undecodable message: {0}")]
    Undecodable(#[from] MessageError),
    /// A call to a method ZEO 5/6 clients do not have (e.g. ZEO 4's
    /// `serialnos`); Python's client raises AttributeError and drops it.
    #[error("server called unknown client method {method:?}")]
    UnknownClientMethod {
        /// The name.
        method: String,
    },
    /// A known client method with arguments of the wrong shape.
    #[error("bad arguments for client method {method:?}")]
    BadArguments {
        /// The name.
        method: String,
    },
    /// An exception reply whose result is not `(class_path, state)`.
    #[error("malformed exception reply")]
    BadException,
}

impl ServerMessage {
    /// A result reply.
    pub fn reply(msgid: Value, result: Value) -> ServerMessage {
        ServerMessage::Reply { msgid, result }
    }

    /// The envelope, with Python's flags: 0 for results, 2 for exceptions,
    /// True (and msgid 0) for calls.
    pub fn to_message(&self) -> Message {
        match self {
            ServerMessage::Reply { msgid, result } => Message::reply(msgid.clone(), result.clone()),
            ServerMessage::Error { msgid, exception } => {
                Message::error_reply(msgid.clone(), &exception.class_path(), exception.state())
            }
            ServerMessage::Call(call) => Message::async_call(call.name(), call.to_args()),
        }
    }

    /// Encodes as one frame payload.
    pub fn encode(&self, encoding: Encoding) -> Result<Bytes, EncodeError> {
        self.to_message().encode(encoding)
    }

    /// Encodes as one frame payload, large byte strings (data records)
    /// shared rather than copied.
    pub fn encode_payload(&self, encoding: Encoding) -> Result<Payload, EncodeError> {
        match self {
            // The common case, without cloning the result into a message.
            ServerMessage::Reply { msgid, result } => encoding.encode_message(
                msgid,
                &Value::Int(crate::message::FLAG_RESULT),
                crate::message::REPLY,
                result,
            ),
            _ => self.to_message().encode_payload(encoding),
        }
    }

    /// Types a decoded message (client side).
    pub fn from_message(msg: Message) -> Result<ServerMessage, ServerMessageError> {
        if msg.is_reply() {
            if msg.flag_set() {
                let Some([class_path, state]) = msg.args.as_seq() else {
                    return Err(ServerMessageError::BadException);
                };
                let class_path = class_path
                    .as_text()
                    .ok_or(ServerMessageError::BadException)?;
                return Ok(ServerMessage::Error {
                    msgid: msg.msgid,
                    exception: ZeoException::from_reply(class_path, state.clone()),
                });
            }
            return Ok(ServerMessage::Reply {
                msgid: msg.msgid,
                result: msg.args,
            });
        }
        Ok(ServerMessage::Call(ClientCall::from_args(
            &msg.method,
            &msg.args,
        )?))
    }

    /// Decodes one frame from the server.
    pub fn decode(encoding: Encoding, data: &Bytes) -> Result<ServerMessage, ServerMessageError> {
        ServerMessage::from_message(Message::decode(encoding, data, GlobalPolicy::FromServer)?)
    }
}

/// A list of oids as ZEO sends them (new_oids, invalidations).
pub fn oid_list(oids: &[Oid]) -> Value {
    Value::List(oids.iter().map(|o| Value::oid(*o)).collect())
}

/// The items of a list (or tuple) of oids.
pub fn parse_oids(v: &Value) -> Option<Vec<Oid>> {
    v.as_seq()?.iter().map(Value::as_oid).collect()
}

/// `dict.update(fixed)` onto `base`: existing keys keep their place and
/// take the new value, new keys are appended (Python's dict semantics).
fn dict_update(base: &mut Vec<(Value, Value)>, fixed: Vec<(&str, Value)>) {
    for (k, v) in fixed {
        match base.iter_mut().find(|(key, _)| key.as_text() == Some(k)) {
            Some(slot) => slot.1 = v,
            None => base.push((Value::str(k), v)),
        }
    }
}

/// A result whose shape is not the one the method returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reply value has an unexpected shape")]
pub struct ShapeError;

/// What `loadBefore` returns when a revision exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRevision {
    /// The record.
    pub data: Bytes,
    /// The tid that wrote it.
    pub start: Tid,
    /// The tid that replaced it, None if current.
    pub end: Option<Tid>,
}

impl LoadedRevision {
    /// The reply value: `(data, start, end)`, or None for "no revision
    /// before that tid".
    pub fn to_value(rev: Option<&LoadedRevision>) -> Value {
        match rev {
            None => Value::None,
            Some(r) => Value::Tuple(vec![
                Value::Bytes(r.data.clone()),
                Value::tid(r.start),
                r.end.map_or(Value::None, Value::tid),
            ]),
        }
    }

    /// Parses a loadBefore result; [`ShapeError`] if it has another shape.
    pub fn from_value(v: &Value) -> Result<Option<LoadedRevision>, ShapeError> {
        if v.is_none() {
            return Ok(None);
        }
        let Some([data, start, end]) = v.as_seq() else {
            return Err(ShapeError);
        };
        Ok(Some(LoadedRevision {
            data: data.as_bytes().cloned().ok_or(ShapeError)?,
            start: start.as_tid().ok_or(ShapeError)?,
            end: match end {
                Value::None => None,
                e => Some(e.as_tid().ok_or(ShapeError)?),
            },
        }))
    }
}

/// What `get_info` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageInfo {
    /// Object count.
    pub length: i64,
    /// Size in bytes.
    pub size: i64,
    /// Storage name (FileStorage: its path).
    pub name: String,
    /// Undo is supported.
    pub supports_undo: bool,
    /// `record_iternext` is supported.
    pub supports_record_iternext: bool,
    /// `(module, name)` of every interface the storage provides, in
    /// `__iro__` order (ZEO tests compare it exactly).
    pub interfaces: Vec<(String, String)>,
}

impl StorageInfo {
    /// The dict, in Python's key order.
    pub fn to_value(&self) -> Value {
        Value::str_dict([
            ("length", Value::from(self.length)),
            ("size", Value::from(self.size)),
            ("name", Value::str(self.name.as_str())),
            ("supportsUndo", Value::Bool(self.supports_undo)),
            (
                "supports_record_iternext",
                Value::Bool(self.supports_record_iternext),
            ),
            (
                "interfaces",
                Value::Tuple(
                    self.interfaces
                        .iter()
                        .map(|(m, n)| {
                            Value::Tuple(vec![Value::str(m.as_str()), Value::str(n.as_str())])
                        })
                        .collect(),
                ),
            ),
        ])
    }

    /// Parses a get_info result.
    pub fn from_value(v: &Value) -> Option<StorageInfo> {
        let interfaces = v
            .dict_get("interfaces")?
            .as_seq()?
            .iter()
            .map(|i| match i.as_seq()? {
                [m, n] => Some((m.as_text()?.to_owned(), n.as_text()?.to_owned())),
                _ => None,
            })
            .collect::<Option<_>>()?;
        Some(StorageInfo {
            length: v.dict_get("length")?.as_i64()?,
            size: v.dict_get("size")?.as_i64()?,
            name: v.dict_get("name")?.as_text()?.to_owned(),
            supports_undo: v.dict_get("supportsUndo")?.truthy(),
            supports_record_iternext: v.dict_get("supports_record_iternext")?.truthy(),
            interfaces,
        })
    }
}

/// One item of the `vote` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteItem {
    /// An oid whose data the server changed (resolved conflict, undo): the
    /// client must not cache what it stored.
    Resolved(Oid),
    /// A conflict left to the client (`client-conflict-resolution`):
    /// `{'oid', 'serials': (committed, read), 'data'}`.
    Conflict {
        /// The object.
        oid: Oid,
        /// The committed serial.
        committed: Tid,
        /// The serial the client read.
        read: Tid,
        /// The data the client stored.
        data: Bytes,
    },
}

impl VoteItem {
    /// The vote result list.
    pub fn list_to_value(items: &[VoteItem]) -> Value {
        Value::List(
            items
                .iter()
                .map(|i| match i {
                    VoteItem::Resolved(oid) => Value::oid(*oid),
                    VoteItem::Conflict {
                        oid,
                        committed,
                        read,
                        data,
                    } => Value::str_dict([
                        ("oid", Value::oid(*oid)),
                        (
                            "serials",
                            Value::Tuple(vec![Value::tid(*committed), Value::tid(*read)]),
                        ),
                        ("data", Value::Bytes(data.clone())),
                    ]),
                })
                .collect(),
        )
    }

    /// Parses a vote result (None counts as empty, as the client does).
    pub fn list_from_value(v: &Value) -> Option<Vec<VoteItem>> {
        if v.is_none() {
            return Some(Vec::new());
        }
        v.as_seq()?
            .iter()
            .map(|i| {
                if let Some(oid) = i.as_oid() {
                    return Some(VoteItem::Resolved(oid));
                }
                let [committed, read] = i.dict_get("serials")?.as_seq()? else {
                    return None;
                };
                Some(VoteItem::Conflict {
                    oid: i.dict_get("oid")?.as_oid()?,
                    committed: committed.as_tid()?,
                    read: read.as_tid()?,
                    data: i.dict_get("data")?.as_bytes()?.clone(),
                })
            })
            .collect()
    }
}

/// What `getInvalidations` returns: None (unknown, drop the cache) or the
/// newest tid with the oids changed since the client's tid.
pub fn invalidations_to_value(inv: Option<(Tid, &[Oid])>) -> Value {
    match inv {
        None => Value::None,
        Some((tid, oids)) => Value::Tuple(vec![Value::tid(tid), oid_list(oids)]),
    }
}

/// One `history` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The transaction's extension items (they come first in the dict).
    pub extension: Vec<(Value, Value)>,
    /// `TimeStamp(tid).timeTime()`.
    pub time: f64,
    /// User.
    pub user_name: Bytes,
    /// Description.
    pub description: Bytes,
    /// The revision's tid.
    pub tid: Tid,
    /// Record length.
    pub size: i64,
}

impl HistoryEntry {
    /// The dict as FileStorage.history builds it.
    pub fn to_value(&self) -> Value {
        let mut d = self.extension.clone();
        dict_update(
            &mut d,
            vec![
                ("time", Value::Float(self.time)),
                ("user_name", Value::Bytes(self.user_name.clone())),
                ("description", Value::Bytes(self.description.clone())),
                ("tid", Value::tid(self.tid)),
                ("size", Value::from(self.size)),
            ],
        );
        Value::Dict(d)
    }
}

/// One `undoLog`/`undoInfo` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoLogEntry {
    /// The undo id (FileStorage: base64 of the tid, no newline).
    pub id: Bytes,
    /// Commit time.
    pub time: f64,
    /// User.
    pub user_name: Bytes,
    /// Transaction record length.
    pub size: i64,
    /// Description.
    pub description: Bytes,
    /// Extension items, merged last.
    pub extension: Vec<(Value, Value)>,
}

impl UndoLogEntry {
    /// The dict as FileStorage's UndoSearch builds it.
    pub fn to_value(&self) -> Value {
        let mut d = vec![
            (Value::str("id"), Value::Bytes(self.id.clone())),
            (Value::str("time"), Value::Float(self.time)),
            (
                Value::str("user_name"),
                Value::Bytes(self.user_name.clone()),
            ),
            (Value::str("size"), Value::from(self.size)),
            (
                Value::str("description"),
                Value::Bytes(self.description.clone()),
            ),
        ];
        for (k, v) in &self.extension {
            match d.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => d.push((k.clone(), v.clone())),
            }
        }
        Value::Dict(d)
    }
}

/// What `iterator_next` returns for a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct IteratedTxn {
    /// Its tid.
    pub tid: Tid,
    /// Status as a one-character str.
    pub status: String,
    /// User.
    pub user: Bytes,
    /// Description.
    pub description: Bytes,
    /// The extension dict.
    pub extension: Value,
}

impl IteratedTxn {
    /// `(tid, status, user, description, extension)` or None at the end.
    pub fn to_value(t: Option<&IteratedTxn>) -> Value {
        t.map_or(Value::None, |t| {
            Value::Tuple(vec![
                Value::tid(t.tid),
                Value::str(t.status.as_str()),
                Value::Bytes(t.user.clone()),
                Value::Bytes(t.description.clone()),
                t.extension.clone(),
            ])
        })
    }

    /// Parses an iterator_next result; [`ShapeError`] on another shape.
    pub fn from_value(v: &Value) -> Result<Option<IteratedTxn>, ShapeError> {
        if v.is_none() {
            return Ok(None);
        }
        let Some([tid, status, user, description, extension]) = v.as_seq() else {
            return Err(ShapeError);
        };
        Ok(Some(IteratedTxn {
            tid: tid.as_tid().ok_or(ShapeError)?,
            status: status.as_text().ok_or(ShapeError)?.to_owned(),
            user: user.as_bytes().cloned().ok_or(ShapeError)?,
            description: description.as_bytes().cloned().ok_or(ShapeError)?,
            extension: extension.clone(),
        }))
    }
}

/// What `iterator_record_next` returns for a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IteratedRecord {
    /// The object.
    pub oid: Oid,
    /// The transaction.
    pub tid: Tid,
    /// The data, None for "does not exist".
    pub data: Option<Bytes>,
    /// The transaction whose data a back pointer borrows, if any.
    pub data_txn: Option<Tid>,
}

impl IteratedRecord {
    /// `(oid, tid, data, data_txn)` or None at the end.
    pub fn to_value(r: Option<&IteratedRecord>) -> Value {
        r.map_or(Value::None, |r| {
            Value::Tuple(vec![
                Value::oid(r.oid),
                Value::tid(r.tid),
                r.data.clone().map_or(Value::None, Value::Bytes),
                r.data_txn.map_or(Value::None, Value::tid),
            ])
        })
    }

    /// Parses an iterator_record_next result; [`ShapeError`] on another shape.
    pub fn from_value(v: &Value) -> Result<Option<IteratedRecord>, ShapeError> {
        if v.is_none() {
            return Ok(None);
        }
        let Some([oid, tid, data, data_txn]) = v.as_seq() else {
            return Err(ShapeError);
        };
        Ok(Some(IteratedRecord {
            oid: oid.as_oid().ok_or(ShapeError)?,
            tid: tid.as_tid().ok_or(ShapeError)?,
            data: match data {
                Value::None => None,
                d => Some(d.as_bytes().cloned().ok_or(ShapeError)?),
            },
            data_txn: match data_txn {
                Value::None => None,
                t => Some(t.as_tid().ok_or(ShapeError)?),
            },
        }))
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

    #[test]
    fn captured_commit_frames() {
        // spec zeo.md §6: info then the tid reply, pickled.
        let info = ServerMessage::Call(ClientCall::Info {
            length: 1,
            size: 0xa6,
        });
        assert_eq!(
            &info.encode(Encoding::Pickle).unwrap()[..],
            b"\x80\x03(K\x00\x88X\x04\x00\x00\x00info}(X\x06\x00\x00\x00lengthK\x01X\x04\x00\x00\x00sizeK\xa6u\x85t."
        );
        let tid = Tid(0x040d_4234_7336_e555);
        let reply = ServerMessage::reply(Value::Int(4), Value::tid(tid));
        assert_eq!(
            &reply.encode(Encoding::Pickle).unwrap()[..],
            b"\x80\x03(K\x04K\x00X\x06\x00\x00\x00.replyC\x08\x04\x0dB4s6\xe5Ut."
        );
        let inv = ServerMessage::Call(ClientCall::InvalidateTransaction {
            tid,
            oids: vec![Oid(0)],
        });
        let back =
            ServerMessage::decode(Encoding::Msgpack, &inv.encode(Encoding::Msgpack).unwrap())
                .unwrap();
        assert_eq!(back, inv);
    }

    #[test]
    fn serialnos_is_not_a_zeo5_client_method() {
        let m = Message::async_call("serialnos", vec![Value::List(vec![])]);
        let err = ServerMessage::from_message(m).unwrap_err();
        assert!(matches!(
            err,
            ServerMessageError::UnknownClientMethod { .. }
        ));
    }

    #[test]
    fn typed_results_round_trip() {
        let rev = LoadedRevision {
            data: Bytes::from_static(b"d"),
            start: Tid(3),
            end: None,
        };
        assert_eq!(
            LoadedRevision::from_value(&LoadedRevision::to_value(Some(&rev))),
            Ok(Some(rev))
        );
        let items = vec![
            VoteItem::Resolved(Oid(1)),
            VoteItem::Conflict {
                oid: Oid(2),
                committed: Tid(5),
                read: Tid(4),
                data: Bytes::from_static(b"x"),
            },
        ];
        assert_eq!(
            VoteItem::list_from_value(&VoteItem::list_to_value(&items)),
            Some(items)
        );
        let h = HistoryEntry {
            extension: vec![
                (Value::str("time"), Value::Int(1)),
                (Value::str("k"), Value::Int(2)),
            ],
            time: 1.5,
            user_name: Bytes::new(),
            description: Bytes::new(),
            tid: Tid(1),
            size: 10,
        };
        // dict.update keeps an extension key's place but takes the new value.
        let d = h.to_value();
        assert_eq!(
            d.as_dict().unwrap()[0],
            (Value::str("time"), Value::Float(1.5))
        );
        assert_eq!(d.as_dict().unwrap().len(), 6);
    }
}
