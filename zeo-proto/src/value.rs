//! The values ZEO messages carry, independent of the encoding.
//!
//! Both encodings carry the same small Python data model (None, bools,
//! ints, floats, bytes, text, tuples, lists, dicts), plus what pickles can
//! name and msgpack cannot: sets, Python 2 `str`, and instances of the few
//! classes that may travel (see [`crate::encoding::GlobalPolicy`]). The
//! model keeps every distinction Python keeps, because ZEO's peers observe
//! them: a tuple is not a list to Python (`(1,) != [1]`), `bytes` is not
//! `str`, and a dict keeps its insertion order (which fixes the bytes an
//! encoder writes). Unlike `zodb_core::pickle::Graph` it is an owned tree:
//! ZEO messages have no shared or cyclic parts, and a tree is what request
//! and reply types are built from.

use std::fmt;

use bytes::Bytes;
use zodb_core::{Oid, Tid};

/// A Python value as ZEO exchanges it.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// `None` (pickle NONE, msgpack nil).
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An int. Python ints are unbounded; ZEO's are oid counts, sizes,
    /// msgids and `id(txn)`, all far inside 128 bits, and both decoders
    /// reject wider ones rather than truncate.
    Int(i128),
    /// A float (msgpack float32 is widened, as Python does).
    Float(f64),
    /// `bytes`: oids, tids, data records, blob chunks, user, description.
    Bytes(Bytes),
    /// Text (`str`): method names, storage names, dict keys, statuses.
    Str(String),
    /// A Python 2 `str` (pickle STRING/BINSTRING/SHORT_BINSTRING) from an old
    /// client: bytes whose meaning (binary or text) the writer did not
    /// record. Typed accessors accept it as either.
    Py2Str(Bytes),
    /// A tuple (msgpack arrays decode to tuples, as ZEO's `use_list=False`).
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A set.
    Set(Vec<Value>),
    /// A frozenset.
    FrozenSet(Vec<Value>),
    /// A class or function reference (pickle GLOBAL), e.g. the exception
    /// class inside `ZODB.POSException._recon(UndoError, state)`.
    Global(Global),
    /// An instance of an allowed class (see [`Object`]).
    Object(Box<Object>),
}

/// `module.name` of a pickled global.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Global {
    /// E.g. `ZODB.POSException`.
    pub module: String,
    /// E.g. `UndoError`.
    pub name: String,
}

impl Global {
    /// A global from its two parts.
    pub fn new(module: impl Into<String>, name: impl Into<String>) -> Global {
        Global {
            module: module.into(),
            name: name.into(),
        }
    }

    /// Whether this is `module.name`.
    pub fn is(&self, module: &str, name: &str) -> bool {
        self.module == module && self.name == name
    }

    /// `module.name`, the form ZEO uses for exception class paths.
    pub fn path(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

impl fmt::Debug for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// How an [`Object`] is rebuilt, which decides the opcodes an encoder writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// `callable(*args)` (REDUCE), e.g. `ZODB.POSException._recon(cls, state)`.
    Reduce,
    /// `cls.__new__(cls, *args)` then `__setstate__` (NEWOBJ; Python 2's
    /// OBJ/INST decode to this too), e.g. `ZopeUndo.Prefix.Prefix`.
    NewObj,
}

/// An instance of an allowed class: what a pickle REDUCE or NEWOBJ (with an
/// optional BUILD) describes, without running anything.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// REDUCE or NEWOBJ.
    pub kind: ObjectKind,
    /// The callable (REDUCE) or class (NEWOBJ).
    pub class: Global,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// The BUILD state, if any.
    pub state: Option<Value>,
}

impl Value {
    /// Text.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// Bytes from anything byte-like.
    pub fn bytes(b: impl Into<Bytes>) -> Value {
        Value::Bytes(b.into())
    }

    /// An oid as ZEO sends it: 8 big-endian bytes.
    pub fn oid(oid: Oid) -> Value {
        Value::Bytes(Bytes::copy_from_slice(&oid.to_bytes()))
    }

    /// A tid as ZEO sends it: 8 big-endian bytes.
    pub fn tid(tid: Tid) -> Value {
        Value::Bytes(Bytes::copy_from_slice(&tid.to_bytes()))
    }

    /// An int.
    pub fn int(i: impl Into<i128>) -> Value {
        Value::Int(i.into())
    }

    /// A dict from text keys, in the given order.
    pub fn str_dict<'a>(items: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(items.into_iter().map(|(k, v)| (Value::str(k), v)).collect())
    }

    /// Whether this is `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// Binary data: `bytes`, or a Python 2 `str` (which is what Python 2
    /// clients send for oids and records).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) | Value::Py2Str(b) => Some(b),
            _ => None,
        }
    }

    /// Text: `str`, or a Python 2 `str` that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Py2Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// An int (not a bool: Python's `isinstance(True, int)` is a trap here).
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// An int that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        i64::try_from(self.as_int()?).ok()
    }

    /// A float, or an int converted to one (Python accepts both wherever a
    /// time is expected).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The items of a tuple or a list (msgpack cannot tell them apart, and
    /// ZEO's methods accept either).
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The pairs of a dict.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// `d[key]` for a text key; the last pair wins as in Python.
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
    }

    /// 8 bytes as an oid.
    pub fn as_oid(&self) -> Option<Oid> {
        Oid::from_slice(self.as_bytes()?)
    }

    /// 8 bytes as a tid.
    pub fn as_tid(&self) -> Option<Tid> {
        Tid::from_slice(self.as_bytes()?)
    }

    /// Python's truth value, for the places ZEO tests one (`read_only`,
    /// `wait`, the async flag).
    pub fn truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Bytes(b) | Value::Py2Str(b) => !b.is_empty(),
            Value::Str(s) => !s.is_empty(),
            Value::Tuple(v) | Value::List(v) | Value::Set(v) | Value::FrozenSet(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Global(_) | Value::Object(_) => true,
        }
    }

    /// Python's `==`: bools, ints and floats compare by number (`0 == False
    /// == 0.0`), sets ignore order, dicts compare as mappings, and nothing
    /// else crosses types (`(1,) != [1]`, `b"a" != "a"`). A Python 2 `str`
    /// equals the bytes it holds. Used to check that the typed layer keeps
    /// everything a Python peer could observe.
    pub fn py_eq(&self, other: &Value) -> bool {
        use Value as V;
        fn num(v: &Value) -> Option<f64> {
            match v {
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                Value::Int(i) => Some(*i as f64),
                Value::Float(f) => Some(*f),
                _ => None,
            }
        }
        fn int(v: &Value) -> Option<i128> {
            match v {
                Value::Bool(b) => Some(i128::from(*b)),
                Value::Int(i) => Some(*i),
                _ => None,
            }
        }
        fn seq_eq(a: &[Value], b: &[Value]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.py_eq(y))
        }
        fn set_eq(a: &[Value], b: &[Value]) -> bool {
            a.iter().all(|x| b.iter().any(|y| x.py_eq(y)))
                && b.iter().all(|y| a.iter().any(|x| x.py_eq(y)))
        }
        fn dict_get<'a>(d: &'a [(Value, Value)], k: &Value) -> Option<&'a Value> {
            d.iter().rev().find(|(key, _)| key.py_eq(k)).map(|(_, v)| v)
        }
        match (self, other) {
            (V::None, V::None) => true,
            (a, b) if int(a).is_some() && int(b).is_some() => int(a) == int(b),
            (a, b) if num(a).is_some() && num(b).is_some() => num(a) == num(b),
            (V::Bytes(a) | V::Py2Str(a), V::Bytes(b) | V::Py2Str(b)) => a == b,
            (V::Str(a), V::Str(b)) => a == b,
            (V::Tuple(a), V::Tuple(b)) | (V::List(a), V::List(b)) => seq_eq(a, b),
            (V::Set(a) | V::FrozenSet(a), V::Set(b) | V::FrozenSet(b)) => set_eq(a, b),
            // As mappings: a key set twice counts with its last value.
            (V::Dict(a), V::Dict(b)) => {
                let same = |k: &Value| match (dict_get(a, k), dict_get(b, k)) {
                    (Some(x), Some(y)) => x.py_eq(y),
                    _ => false,
                };
                a.iter().all(|(k, _)| same(k)) && b.iter().all(|(k, _)| same(k))
            }
            (V::Global(a), V::Global(b)) => a == b,
            (V::Object(a), V::Object(b)) => {
                a.kind == b.kind
                    && a.class == b.class
                    && seq_eq(&a.args, &b.args)
                    && match (&a.state, &b.state) {
                        (None, None) => true,
                        (Some(x), Some(y)) => x.py_eq(y),
                        _ => false,
                    }
            }
            _ => false,
        }
    }

    /// The Python type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Py2Str(_) => "str (Python 2)",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global(_) => "global",
            Value::Object(_) => "object",
        }
    }
}

/// Close to Python's `repr`, so logs and test failures read like ZEO's.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(
            f: &mut fmt::Formatter<'_>,
            open: &str,
            items: &[Value],
            close: &str,
        ) -> fmt::Result {
            f.write_str(open)?;
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{v:?}")?;
            }
            if open == "(" && items.len() == 1 {
                f.write_str(",")?;
            }
            f.write_str(close)
        }
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bytes(b) => write!(f, "b{:?}", crate::value::ByteRepr(b)),
            Value::Py2Str(b) => write!(f, "py2str{:?}", crate::value::ByteRepr(b)),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Tuple(v) => seq(f, "(", v, ")"),
            Value::List(v) => seq(f, "[", v, "]"),
            Value::Set(v) => seq(f, "{", v, "}"),
            Value::FrozenSet(v) => seq(f, "frozenset({", v, "})"),
            Value::Dict(d) => {
                f.write_str("{")?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: {v:?}")?;
                }
                f.write_str("}")
            }
            Value::Global(g) => write!(f, "{g:?}"),
            Value::Object(o) => {
                write!(f, "{:?}", o.class)?;
                seq(f, "(", &o.args, ")")?;
                match &o.state {
                    Some(s) => write!(f, ".__setstate__({s:?})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Bytes printed as Python prints them: `'\x00\x01ab'`.
struct ByteRepr<'a>(&'a [u8]);

impl fmt::Debug for ByteRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'")?;
        for &c in self.0 {
            match c {
                b'\\' => f.write_str("\\\\")?,
                b'\'' => f.write_str("\\'")?,
                b'\n' => f.write_str("\\n")?,
                b'\r' => f.write_str("\\r")?,
                b'\t' => f.write_str("\\t")?,
                0x20..=0x7e => write!(f, "{}", c as char)?,
                _ => write!(f, "\\x{c:02x}")?,
            }
        }
        f.write_str("'")
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
    fn python_equality() {
        assert!(Value::Bool(false).py_eq(&Value::Int(0)));
        assert!(Value::Int(1).py_eq(&Value::Float(1.0)));
        assert!(!Value::Tuple(vec![Value::Int(1)]).py_eq(&Value::List(vec![Value::Int(1)])));
        assert!(!Value::bytes(&b"a"[..]).py_eq(&Value::str("a")));
        assert!(Value::Py2Str(Bytes::from_static(b"a")).py_eq(&Value::bytes(&b"a"[..])));
        let d1 = Value::str_dict([("a", Value::Int(1)), ("b", Value::Int(2))]);
        let d2 = Value::str_dict([("b", Value::Int(2)), ("a", Value::Bool(true))]);
        assert!(d1.py_eq(&d2));
        let s1 = Value::Set(vec![Value::Int(1), Value::Int(2)]);
        let s2 = Value::FrozenSet(vec![Value::Int(2), Value::Int(1)]);
        assert!(s1.py_eq(&s2));
        // {'a': 1, 'a': 2} is {'a': 2} (found by fuzzing).
        let dup = Value::str_dict([("a", Value::Int(1)), ("a", Value::Int(2))]);
        assert!(dup.py_eq(&dup));
        assert!(dup.py_eq(&Value::str_dict([("a", Value::Int(2))])));
    }

    #[test]
    fn repr_reads_like_python() {
        let v = Value::Tuple(vec![
            Value::Int(1),
            Value::Bool(false),
            Value::str("register"),
            Value::Tuple(vec![Value::bytes(&b"\x00a'"[..])]),
        ]);
        assert_eq!(format!("{v:?}"), r#"(1, False, "register", (b'\x00a\'',))"#);
    }
}
