//! Exceptions as ZEO 5/6 servers report them: an error reply whose result
//! is `(class_path, state)`, where `state` is the exception's `__dict__` if
//! it has one, else its `args` (ZEO: `asyncio/marshal.py`
//! `reduce_exception`). No exception object is pickled at the top level.
//!
//! The client rebuilds the classes it knows (ZEO: `asyncio/client.py`
//! `exc_factories`): `ConflictError` and `ReadConflictError` from the dict
//! keys `message`, `oid`, `serials` and optional `class_name`;
//! `BTreesConflictError` from `p1, p2, p3, reason`; `MultipleUndoErrors`
//! from `_errs`; `POSKeyError`, `ReadOnlyError`, `StorageTransactionError`,
//! `KeyError` and `TypeError` from args. Everything else becomes a
//! `ServerException(class_path, state)` on the client, so the exact class
//! path still matters for tests that look at it.
//!
//! [`ZeoException::state`] reproduces Python's state byte for byte,
//! including attribute order (`message, oid, class_name, serials` for
//! conflicts) and ZODB's quirks: a `MultipleUndoErrors` built from
//! `(oid, UndoError)` pairs ends up with `_reason` = the first oid and
//! `_oid` = the first `UndoError` object (captured), and those nested
//! errors are pickled as `ZODB.POSException._recon(UndoError, state)`.

use zodb_core::{Oid, StorageError, Tid};

use crate::value::{Global, Object, ObjectKind, Value};

/// Module of ZODB's exceptions.
pub const POS_EXCEPTION: &str = "ZODB.POSException";

/// The fields of a `ConflictError` or `ReadConflictError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictInfo {
    /// `"database conflict error"` / `"database read conflict error"` unless
    /// a message was given.
    pub message: String,
    /// The object.
    pub oid: Option<Oid>,
    /// `module.Class` of the rejected data (get_pickle_metadata of the
    /// stored record; `"."` when it is no pickle), or None.
    pub class_name: Option<String>,
    /// `(currently committed, the one the transaction read)`.
    pub serials: Option<(Tid, Tid)>,
}

/// The fields of an `UndoError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoInfo {
    /// Why the undo is impossible.
    pub reason: String,
    /// The object that prevents it.
    pub oid: Option<Oid>,
}

/// An exception a ZEO server reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ZeoException {
    /// `ZODB.POSException.ConflictError`.
    Conflict(ConflictInfo),
    /// `ZODB.POSException.ReadConflictError` (checkCurrentSerialInTransaction).
    ReadConflict(ConflictInfo),
    /// `ZODB.POSException.BTreesConflictError(p1, p2, p3, reason)`.
    BTreesConflict {
        /// Positions in the three states (-1 when not applicable).
        p1: i64,
        /// See `p1`.
        p2: i64,
        /// See `p1`.
        p3: i64,
        /// Index into `BTreesConflictError.msgs`.
        reason: i64,
    },
    /// `ZODB.POSException.POSKeyError(*args)`: usually `(oid,)`; loadBlob
    /// raises `("No blob file", oid, serial)`.
    PosKey(Vec<Value>),
    /// `ZODB.POSException.ReadOnlyError(*args)`, usually no args.
    ReadOnly(Vec<Value>),
    /// `ZODB.POSException.StorageTransactionError(*args)`, e.g. `(None, txn)`
    /// for a vote without tpc_begin (captured) or `("Already voting",)`.
    StorageTransaction(Vec<Value>),
    /// `ZODB.POSException.UndoError(reason, oid)`.
    Undo(UndoInfo),
    /// `ZODB.POSException.MultipleUndoErrors(errs)`: `(oid, UndoError)` pairs.
    MultipleUndo(Vec<(Oid, UndoInfo)>),
    /// Any other class, kept as sent: `builtins.ValueError`,
    /// `builtins.TypeError`, `builtins.AttributeError`, `builtins.Exception`, ...
    Other {
        /// `module.Class`.
        class_path: String,
        /// Its `__dict__` or its `args`.
        state: Value,
    },
}

fn opt_oid(o: Option<Oid>) -> Value {
    o.map_or(Value::None, Value::oid)
}

fn undo_state(u: &UndoInfo) -> Vec<(&'static str, Value)> {
    vec![
        ("_reason", Value::str(u.reason.as_str())),
        ("_oid", opt_oid(u.oid)),
    ]
}

/// A nested UndoError as POSError.__reduce__ pickles it.
fn undo_object(u: &UndoInfo) -> Value {
    let mut state = undo_state(u);
    let mut args = vec![Value::str(u.reason.as_str())];
    if let Some(oid) = u.oid {
        args.push(Value::oid(oid));
    }
    state.push(("args", Value::Tuple(args)));
    Value::Object(Box::new(Object {
        kind: ObjectKind::Reduce,
        class: Global::new(POS_EXCEPTION, "_recon"),
        args: vec![
            Value::Global(Global::new(POS_EXCEPTION, "UndoError")),
            Value::str_dict(state),
        ],
        state: None,
    }))
}

/// What msgpack makes of a state: nested exception objects become
/// `(class path, __dict__ or args)` (the server's `default` hook) and
/// arrays come back as tuples.
fn msgpack_form(v: &Value) -> Value {
    match v {
        Value::Tuple(items) | Value::List(items) => {
            Value::Tuple(items.iter().map(msgpack_form).collect())
        }
        Value::Dict(items) => Value::Dict(
            items
                .iter()
                .map(|(k, v)| (msgpack_form(k), msgpack_form(v)))
                .collect(),
        ),
        Value::Object(obj) if obj.class.is(POS_EXCEPTION, "_recon") => {
            match (obj.args.first(), obj.args.get(1)) {
                (Some(Value::Global(cls)), Some(Value::Dict(state))) => {
                    let dict: Vec<(Value, Value)> = state
                        .iter()
                        .filter(|(k, _)| k.as_text() != Some("args"))
                        .map(|(k, v)| (msgpack_form(k), msgpack_form(v)))
                        .collect();
                    Value::Tuple(vec![Value::Str(cls.path()), Value::Dict(dict)])
                }
                _ => v.clone(),
            }
        }
        other => other.clone(),
    }
}

impl ZeoException {
    /// `builtins.TypeError(message)`: what Python replies to a call with
    /// wrong arguments.
    pub fn type_error(message: &str) -> ZeoException {
        ZeoException::builtin("TypeError", message)
    }

    /// `builtins.ValueError(message)`, e.g. `"unknown storage: x"` from register.
    pub fn value_error(message: &str) -> ZeoException {
        ZeoException::builtin("ValueError", message)
    }

    /// `builtins.AttributeError(message)`, e.g. for `new_oid` (captured:
    /// `"'ZEOStorage' object has no attribute 'new_oid'"`).
    pub fn attribute_error(message: &str) -> ZeoException {
        ZeoException::builtin("AttributeError", message)
    }

    /// `builtins.<name>(message)`.
    pub fn builtin(name: &str, message: &str) -> ZeoException {
        ZeoException::Other {
            class_path: format!("builtins.{name}"),
            state: Value::Tuple(vec![Value::str(message)]),
        }
    }

    /// `POSKeyError(oid)`, as loadBefore and loadSerial raise it.
    pub fn pos_key(oid: Oid) -> ZeoException {
        ZeoException::PosKey(vec![Value::oid(oid)])
    }

    /// A write conflict as FileStorage reports it at vote.
    pub fn conflict(
        oid: Oid,
        committed: Tid,
        old: Tid,
        class_name: Option<String>,
    ) -> ZeoException {
        ZeoException::Conflict(ConflictInfo {
            message: "database conflict error".to_owned(),
            oid: Some(oid),
            class_name,
            serials: Some((committed, old)),
        })
    }

    /// The class path clients match on.
    pub fn class_path(&self) -> String {
        let pos = |name: &str| format!("{POS_EXCEPTION}.{name}");
        match self {
            ZeoException::Conflict(_) => pos("ConflictError"),
            ZeoException::ReadConflict(_) => pos("ReadConflictError"),
            ZeoException::BTreesConflict { .. } => pos("BTreesConflictError"),
            ZeoException::PosKey(_) => pos("POSKeyError"),
            ZeoException::ReadOnly(_) => pos("ReadOnlyError"),
            ZeoException::StorageTransaction(_) => pos("StorageTransactionError"),
            ZeoException::Undo(_) => pos("UndoError"),
            ZeoException::MultipleUndo(_) => pos("MultipleUndoErrors"),
            ZeoException::Other { class_path, .. } => class_path.clone(),
        }
    }

    /// The reply's `state`: `__dict__` or `args`, exactly as Python's
    /// `reduce_exception` gives it.
    pub fn state(&self) -> Value {
        match self {
            ZeoException::Conflict(c) | ZeoException::ReadConflict(c) => Value::str_dict([
                ("message", Value::str(c.message.as_str())),
                ("oid", opt_oid(c.oid)),
                (
                    "class_name",
                    c.class_name.as_deref().map_or(Value::None, Value::str),
                ),
                (
                    "serials",
                    c.serials.map_or(Value::None, |(a, b)| {
                        Value::Tuple(vec![Value::tid(a), Value::tid(b)])
                    }),
                ),
            ]),
            ZeoException::BTreesConflict { p1, p2, p3, reason } => Value::str_dict([
                ("p1", Value::from(*p1)),
                ("p2", Value::from(*p2)),
                ("p3", Value::from(*p3)),
                ("reason", Value::from(*reason)),
            ]),
            ZeoException::PosKey(args)
            | ZeoException::ReadOnly(args)
            | ZeoException::StorageTransaction(args) => Value::Tuple(args.clone()),
            ZeoException::Undo(u) => Value::str_dict(undo_state(u)),
            ZeoException::MultipleUndo(errs) => {
                // UndoError.__init__(self, *errs[0]) with errs[0] = (oid, err).
                let (first_oid, first_err) = match errs.first() {
                    Some((oid, err)) => (Value::oid(*oid), undo_object(err)),
                    None => (Value::None, Value::None),
                };
                let list = errs
                    .iter()
                    .map(|(oid, err)| Value::Tuple(vec![Value::oid(*oid), undo_object(err)]))
                    .collect();
                Value::str_dict([
                    ("_reason", first_oid),
                    ("_oid", first_err),
                    ("_errs", Value::List(list)),
                ])
            }
            ZeoException::Other { state, .. } => state.clone(),
        }
    }

    /// Types an exception from an error reply's `(class_path, state)`.
    /// Known classes whose state has exactly the shape Python produces are
    /// typed; anything else stays [`ZeoException::Other`], so that
    /// re-encoding always gives back the same bytes.
    pub fn from_reply(class_path: &str, state: Value) -> ZeoException {
        let typed = ZeoException::parse(class_path, &state);
        match typed {
            Some(t)
                if t.class_path() == class_path
                    && (t.state() == state || msgpack_form(&t.state()) == state) =>
            {
                t
            }
            _ => ZeoException::Other {
                class_path: class_path.to_owned(),
                state,
            },
        }
    }

    fn parse(class_path: &str, state: &Value) -> Option<ZeoException> {
        let name = class_path.strip_prefix(POS_EXCEPTION)?.strip_prefix('.')?;
        let args = || state.as_seq().map(<[Value]>::to_vec);
        let oid_or_none = |v: &Value| match v {
            Value::None => Some(None),
            v => v.as_oid().map(Some),
        };
        let conflict = || -> Option<ConflictInfo> {
            let serials = match state.dict_get("serials")? {
                Value::None => None,
                v => match v.as_seq()? {
                    [a, b] => Some((a.as_tid()?, b.as_tid()?)),
                    _ => return None,
                },
            };
            Some(ConflictInfo {
                message: state.dict_get("message")?.as_text()?.to_owned(),
                oid: oid_or_none(state.dict_get("oid")?)?,
                class_name: match state.dict_get("class_name")? {
                    Value::None => None,
                    v => Some(v.as_text()?.to_owned()),
                },
                serials,
            })
        };
        let undo = |v: &Value| -> Option<UndoInfo> {
            Some(UndoInfo {
                reason: v.dict_get("_reason")?.as_text()?.to_owned(),
                oid: oid_or_none(v.dict_get("_oid")?)?,
            })
        };
        Some(match name {
            "ConflictError" => ZeoException::Conflict(conflict()?),
            "ReadConflictError" => ZeoException::ReadConflict(conflict()?),
            "BTreesConflictError" => {
                let int = |k| state.dict_get(k)?.as_i64();
                ZeoException::BTreesConflict {
                    p1: int("p1")?,
                    p2: int("p2")?,
                    p3: int("p3")?,
                    reason: int("reason")?,
                }
            }
            "POSKeyError" => ZeoException::PosKey(args()?),
            "ReadOnlyError" => ZeoException::ReadOnly(args()?),
            "StorageTransactionError" => ZeoException::StorageTransaction(args()?),
            "UndoError" => ZeoException::Undo(undo(state)?),
            "MultipleUndoErrors" => {
                let errs = state.dict_get("_errs")?.as_seq()?;
                let mut out = Vec::with_capacity(errs.len());
                for pair in errs {
                    let [oid, err] = pair.as_seq()? else {
                        return None;
                    };
                    // Nested errors: _recon(cls, state) objects in pickles,
                    // (class path, __dict__) pairs in msgpack.
                    let err_state = match err {
                        Value::Object(obj) => obj.args.get(1)?.clone(),
                        v => v.as_seq()?.get(1)?.clone(),
                    };
                    out.push((oid.as_oid()?, undo(&err_state)?));
                }
                ZeoException::MultipleUndo(out)
            }
            _ => return None,
        })
    }

    /// What Python's storage layer would raise for a storage error, as the
    /// server reports it.
    pub fn from_storage_error(err: &StorageError) -> ZeoException {
        match err {
            StorageError::NoSuchObject { oid }
            | StorageError::NoData { oid, .. }
            | StorageError::NoSuchRevision { oid, .. } => ZeoException::pos_key(*oid),
            StorageError::NoBlob { oid, serial, path } => ZeoException::PosKey(vec![
                Value::str(match path {
                    Some(p) => format!("No blob file at {}", p.display()),
                    None => "No blob file".to_owned(),
                }),
                Value::oid(*oid),
                Value::tid(*serial),
            ]),
            StorageError::BlobsUnsupported { .. } => ZeoException::Other {
                class_path: format!("{POS_EXCEPTION}.Unsupported"),
                state: Value::Tuple(vec![Value::str(err.to_string())]),
            },
            StorageError::ReadOnly => ZeoException::ReadOnly(Vec::new()),
            StorageError::Conflict {
                oid,
                committed,
                old,
            } => ZeoException::conflict(*oid, *committed, *old, None),
            StorageError::ReadConflict {
                oid,
                committed,
                read,
            } => ZeoException::ReadConflict(ConflictInfo {
                message: "database read conflict error".to_owned(),
                oid: Some(*oid),
                class_name: None,
                serials: Some((*committed, *read)),
            }),
            StorageError::Undo { oid, reason } => ZeoException::Undo(UndoInfo {
                reason: reason.clone(),
                oid: *oid,
            }),
            StorageError::TransactionState(msg) => {
                ZeoException::StorageTransaction(vec![Value::str(msg.as_str())])
            }
            StorageError::MetaTooLong { .. } => {
                ZeoException::builtin("ValueError", &err.to_string())
            }
            StorageError::Io(e) => ZeoException::builtin("OSError", &e.to_string()),
            StorageError::Backend(e) => ZeoException::Other {
                class_path: format!("{POS_EXCEPTION}.StorageError"),
                state: Value::Tuple(vec![Value::str(e.to_string())]),
            },
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

    #[test]
    fn typed_exceptions_round_trip_through_from_reply() {
        let cases = vec![
            ZeoException::conflict(
                Oid(1),
                Tid(5),
                Tid(3),
                Some("persistent.mapping.PersistentMapping".into()),
            ),
            ZeoException::pos_key(Oid(0xdead_beef)),
            ZeoException::ReadOnly(vec![]),
            ZeoException::StorageTransaction(vec![Value::None, Value::Int(12345)]),
            ZeoException::Undo(UndoInfo {
                reason: "nope".into(),
                oid: Some(Oid(2)),
            }),
            ZeoException::MultipleUndo(vec![
                (
                    Oid(0),
                    UndoInfo {
                        reason: "a".into(),
                        oid: Some(Oid(0)),
                    },
                ),
                (
                    Oid(2),
                    UndoInfo {
                        reason: "b".into(),
                        oid: Some(Oid(2)),
                    },
                ),
            ]),
            ZeoException::BTreesConflict {
                p1: -1,
                p2: 3,
                p3: 4,
                reason: 1,
            },
            ZeoException::value_error("unknown storage: x"),
        ];
        for e in cases {
            let back = ZeoException::from_reply(&e.class_path(), e.state());
            assert_eq!(back, e);
        }
        // An unexpected shape is kept as sent.
        let odd = ZeoException::from_reply(
            "ZODB.POSException.ConflictError",
            Value::str_dict([("message", Value::str("x"))]),
        );
        assert!(matches!(odd, ZeoException::Other { .. }));
    }

    #[test]
    fn storage_errors_map_to_zodb_classes() {
        let e = ZeoException::from_storage_error(&StorageError::NoSuchObject { oid: Oid(7) });
        assert_eq!(e.class_path(), "ZODB.POSException.POSKeyError");
        assert_eq!(e.state(), Value::Tuple(vec![Value::oid(Oid(7))]));
        let e = ZeoException::from_storage_error(&StorageError::ReadConflict {
            oid: Oid(1),
            committed: Tid(9),
            read: Tid(4),
        });
        assert_eq!(e.class_path(), "ZODB.POSException.ReadConflictError");
        assert_eq!(
            e.state().dict_get("serials"),
            Some(&Value::Tuple(vec![Value::tid(Tid(9)), Value::tid(Tid(4))]))
        );
    }
}
