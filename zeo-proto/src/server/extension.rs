//! Transaction extensions: the dict a client sends with `tpc_begin`, and
//! the pickle a storage keeps.
//!
//! Python's server builds `TransactionMetaData(user, description, ext)`
//! and the storage writes `extension_bytes`: `dumps(ext, 3)` with zodbpickle
//! (memo on), or nothing for an empty dict. [`to_pickle`] writes the same
//! bytes through `zodb_core`'s exact encoder, so a Data.fs written through
//! this server is byte-identical to one written through Python's. One
//! CPython detail shows up in those bytes: the unpickled dict shares the
//! interpreter's cached one-character and empty strings and bytes, so a
//! second occurrence of such a value is a memo fetch (`BINGET`), not a copy.
//!
//! The way back ([`from_pickle`]) is for `history`, `undoLog`/`undoInfo`
//! and `iterator_next`, which return the extension as a dict.

use std::collections::HashMap;

use bytes::Bytes;
use zodb_core::pickle::{Dialect, GraphBuilder, Node, NodeId};

use crate::encoding::GlobalPolicy;
use crate::value::{ObjectKind, Value};

/// Why an extension cannot be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot pickle the transaction extension: {0}")]
pub struct ExtensionError(String);

/// Values CPython keeps one shared object for (so the pickler memoizes
/// them across the dict): empty and one-character latin-1 text, empty and
/// one-byte bytes.
#[derive(Hash, PartialEq, Eq)]
enum Singleton {
    Text(String),
    Bytes(Vec<u8>),
}

struct Builder {
    b: GraphBuilder,
    singletons: HashMap<Singleton, NodeId>,
}

impl Builder {
    fn shared(&mut self, key: Singleton, make: impl FnOnce(&mut GraphBuilder) -> NodeId) -> NodeId {
        if let Some(&id) = self.singletons.get(&key) {
            return id;
        }
        let id = make(&mut self.b);
        self.singletons.insert(key, id);
        id
    }

    fn node(&mut self, v: &Value, depth: usize) -> Result<NodeId, ExtensionError> {
        if depth > crate::encoding::MAX_DEPTH {
            return Err(ExtensionError("nested too deeply".into()));
        }
        let items = |this: &mut Builder, vs: &[Value]| -> Result<Vec<NodeId>, ExtensionError> {
            vs.iter().map(|x| this.node(x, depth + 1)).collect()
        };
        Ok(match v {
            Value::None => self.b.none(),
            Value::Bool(x) => self.b.bool(*x),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => self.b.int(i),
                Err(_) => self.b.big_int(*i),
            },
            Value::Float(f) => self.b.float(*f),
            Value::Bytes(b) if b.len() <= 1 => {
                let b = b.clone();
                self.shared(Singleton::Bytes(b.to_vec()), |g| g.bytes(b))
            }
            Value::Bytes(b) => self.b.bytes(b.clone()),
            Value::Str(s) if s.chars().count() <= 1 && s.chars().all(|c| u32::from(c) < 256) => {
                let s2 = s.clone();
                self.shared(Singleton::Text(s.clone()), |g| g.text(&s2))
            }
            Value::Str(s) => self.b.text(s),
            Value::Py2Str(b) => self.b.py2_str(b.clone()),
            Value::Tuple(vs) => {
                let ids = items(self, vs)?;
                self.b.tuple(ids)
            }
            Value::List(vs) => {
                let ids = items(self, vs)?;
                self.b.list(ids)
            }
            Value::Set(vs) => {
                let ids = items(self, vs)?;
                self.b.push(Node::Set(ids))
            }
            Value::FrozenSet(vs) => {
                let ids = items(self, vs)?;
                self.b.push(Node::FrozenSet(ids))
            }
            Value::Dict(pairs) => {
                let mut ids = Vec::with_capacity(pairs.len());
                for (k, x) in pairs {
                    ids.push((self.node(k, depth + 1)?, self.node(x, depth + 1)?));
                }
                self.b.dict(ids)
            }
            Value::Global(g) => self.b.global(&g.module, &g.name),
            Value::Object(o) => {
                let class = self.b.global(&o.class.module, &o.class.name);
                let args = items(self, &o.args)?;
                let args = self.b.tuple(args);
                let state = match &o.state {
                    Some(s) => Some(self.node(s, depth + 1)?),
                    None => None,
                };
                match o.kind {
                    ObjectKind::Reduce => self.b.reduce(class, args, state),
                    ObjectKind::NewObj => self.b.new_object(class, args, state),
                }
            }
        })
    }
}

/// The stored form of an extension dict: empty for an empty (or None)
/// extension, else its protocol-3 pickle with memo, as ZODB writes it.
pub fn to_pickle(ext: &Value) -> Result<Bytes, ExtensionError> {
    if !ext.truthy() {
        return Ok(Bytes::new());
    }
    let mut b = Builder {
        b: GraphBuilder::new(),
        singletons: HashMap::new(),
    };
    let root = b.node(ext, 0)?;
    let graph = b.b.into_graph();
    zodb_core::pickle::encode(&graph, root, Dialect::PY3)
        .map(Bytes::from)
        .map_err(|e| ExtensionError(e.to_string()))
}

/// The extension dict of a stored transaction: `{}` when there is none, or
/// when it does not unpickle into values a ZEO client could receive (a
/// class instance Python's client would refuse anyway).
pub fn from_pickle(stored: &Bytes) -> Value {
    if stored.is_empty() {
        return Value::Dict(Vec::new());
    }
    match crate::encoding::pickle::decode(stored, GlobalPolicy::FromClient) {
        Ok(v @ Value::Dict(_)) => v,
        Ok(other) => {
            tracing::warn!(
                kind = other.type_name(),
                "transaction extension is not a dict"
            );
            Value::Dict(Vec::new())
        }
        Err(e) => {
            tracing::warn!(error = %e, "transaction extension cannot be sent to clients");
            Value::Dict(Vec::new())
        }
    }
}

/// The items of an extension dict (for the dicts `history` and `undoLog`
/// merge them into).
pub fn items(stored: &Bytes) -> Vec<(Value, Value)> {
    match from_pickle(stored) {
        Value::Dict(d) => d,
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;

    #[test]
    fn empty_extensions_are_not_stored() {
        assert!(to_pickle(&Value::Dict(vec![])).unwrap().is_empty());
        assert!(to_pickle(&Value::None).unwrap().is_empty());
        assert_eq!(from_pickle(&Bytes::new()), Value::Dict(vec![]));
    }

    #[test]
    fn like_zodb_dumps() {
        // dumps({'user': 'x', 'n': 1}, 3) with zodbpickle: memoized strings.
        let ext = Value::str_dict([("user", Value::str("x")), ("n", Value::Int(1))]);
        let p = to_pickle(&ext).unwrap();
        assert_eq!(
            &p[..],
            b"\x80\x03}q\x00(X\x04\x00\x00\x00userq\x01X\x01\x00\x00\x00xq\x02X\x01\x00\x00\x00nq\x03K\x01u."
        );
        assert_eq!(from_pickle(&p), ext);
        // One-character strings are CPython singletons: the second is a GET.
        let ext = Value::str_dict([("a", Value::str("a"))]);
        assert_eq!(
            &to_pickle(&ext).unwrap()[..],
            b"\x80\x03}q\x00X\x01\x00\x00\x00aq\x01h\x01s."
        );
    }
}
