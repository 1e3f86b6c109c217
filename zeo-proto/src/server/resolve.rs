//! Native conflict resolution for the classes whose rules are public and
//! fixed: BTrees buckets, sets, and one-bucket trees of the standard key and
//! value types, and `BTrees.Length`.
//!
//! Python's server resolves a write conflict by loading the class of the
//! object and calling its `_p_resolveConflict(old, committed, new)` (ZODB
//! `ConflictResolution.tryToResolveConflict`). We have no Python, but for
//! these classes the rules are small and fixed, so [`resolve`] applies them
//! to the three records itself and pickles the merged state the way
//! `tryToResolveConflict` does: the new record's class metadata, then the
//! state, through one fresh protocol-3 pickler. The result is byte-identical
//! to what a Python server would store (the tests compare them).
//!
//! The rules, as BTrees implements them in C (`bucket_merge` in
//! `MergeTemplate.c`, `_bucket__p_resolveConflict` in `BucketTemplate.c`,
//! `BTree__p_resolveConflict` in `BTreeTemplate.c`) and Python
//! (`Length._p_resolveConflict`):
//!
//! - A bucket (or set) merges three ways: a key left alone by both sides
//!   stays; either side may change a value, insert a key or delete one,
//!   as long as the other side does not touch the same key; every other
//!   combination is a `BTreesConflictError` with a numbered reason and the
//!   positions of the three iterators (reported by [`Unresolved::Conflict`]).
//!   The next-bucket pointers must agree (reason 0); neither side may have
//!   emptied the bucket (12); deleting the first key is refused (13, the
//!   parent's separator key would change); an empty result is refused (10).
//! - A BTree or TreeSet resolves only while it is a single bucket kept in
//!   its own state; a tree with children is reason 11.
//! - `Length` adds both deltas: `committed + new - old`.
//!
//! What is not one of these classes, or holds values whose comparison we
//! cannot reproduce exactly (other objects, lists, weak or cross-database
//! references, references to classes a server might not import), is
//! [`Unresolved::Unsupported`]: the server then hands the conflict to the
//! client, whose own `tryToResolveConflict` runs the application's code.
//! A [`Unresolved::Conflict`] goes back to the client as well; its Python
//! code reaches the same `BTreesConflictError` and reports it.
//!
//! Values are compared as the C code compares them: object keys and values
//! with Python's `<` then `==` (None below everything), so comparing a
//! string with an int, or two references to different objects, is an error
//! in Python and [`Unresolved::Unsupported`] here; integer keys and values as
//! machine integers; float values as C `float`s.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use zodb_core::pickle::{
    Dialect, Graph, GraphBuilder, Node, NodeId, PersistentRef, Record, Value, decode_record,
    encode_record,
};
use zodb_core::{Oid, storage::ConflictResolver};

/// Why three records were not merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// The rules refuse the merge: Python raises
    /// `BTreesConflictError(p1, p2, p3, reason)` with these numbers.
    Conflict {
        /// The positions of the old, committed and new iterators (1-based,
        /// -1 once exhausted), as BTrees reports them.
        positions: [i64; 3],
        /// BTrees' reason number (`BTrees.Interfaces.BTreesConflictError`).
        reason: i32,
    },
    /// Not a class or a value this module resolves; the client should.
    Unsupported(String),
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::Conflict { positions, reason } => write!(
                f,
                "BTreesConflictError({}, {}, {}, {reason})",
                positions[0], positions[1], positions[2]
            ),
            Unresolved::Unsupported(why) => write!(f, "not resolvable natively: {why}"),
        }
    }
}

impl std::error::Error for Unresolved {}

fn unsupported<T>(why: impl Into<String>) -> Result<T, Unresolved> {
    Err(Unresolved::Unsupported(why.into()))
}

fn conflict<T>(p: [i64; 3], reason: i32) -> Result<T, Unresolved> {
    Err(Unresolved::Conflict {
        positions: p,
        reason,
    })
}

/// The resolver a server installs in its storages: [`resolve`], with every
/// refusal left to the client.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeResolver;

impl ConflictResolver for NativeResolver {
    fn resolve(&self, oid: Oid, old: &[u8], committed: &[u8], new: &[u8]) -> Option<Bytes> {
        match resolve(old, committed, new) {
            Ok(b) => {
                tracing::debug!(%oid, "conflict resolved natively");
                Some(b)
            }
            Err(e) => {
                tracing::debug!(%oid, reason = %e, "conflict left to the client");
                None
            }
        }
    }
}

/// Merges `new` (the writer's record) with `committed` given `old` (the
/// record the writer started from), as the class's `_p_resolveConflict`
/// would, and returns the record `tryToResolveConflict` would store.
pub fn resolve(old: &[u8], committed: &[u8], new: &[u8]) -> Result<Bytes, Unresolved> {
    let parse = |d: &[u8], what: &str| {
        decode_record(&Bytes::copy_from_slice(d))
            .map_err(|e| Unresolved::Unsupported(format!("{what} record: {e}")))
    };
    let new = parse(new, "new")?;
    let (module, name) = new
        .class_path()
        .ok_or_else(|| Unresolved::Unsupported("class metadata of an unknown form".into()))?;
    let kind = Kind::of(module, name)
        .ok_or_else(|| Unresolved::Unsupported(format!("class {module}.{name}")))?;
    let old = parse(old, "old")?;
    let committed = parse(committed, "committed")?;
    // Sources in the order tryToResolveConflict unpickles them: the new
    // record, then the old state, then the committed one. References are
    // shared objects in that order (PersistentReferenceFactory).
    let srcs = [&new, &old, &committed];
    let mut out = Out::new(&srcs)?;
    let class = out.copy(NEW, new.class)?;
    let state = match kind {
        Kind::Length => length(&mut out, &old, &committed, &new)?,
        Kind::Bucket(t) => bucket(
            &mut out,
            t,
            (OLD, old.state),
            (COMMITTED, committed.state),
            (NEW, new.state),
        )?,
        Kind::Tree(t) => {
            let [o, c, n] = [
                (OLD, tree_bucket_state(&old)?),
                (COMMITTED, tree_bucket_state(&committed)?),
                (NEW, tree_bucket_state(&new)?),
            ];
            let b = bucket_states(&mut out, t, o, c, n)?;
            let inner = out.b.tuple([b]);
            out.b.tuple([inner])
        }
    };
    let graph = out.b.into_graph();
    encode_record(&graph, class, state, Dialect::PY3)
        .map(Bytes::from)
        .map_err(|e| Unresolved::Unsupported(format!("pickling the result: {e}")))
}

const NEW: usize = 0;
const OLD: usize = 1;
const COMMITTED: usize = 2;

/// Key or value type of a BTrees module (the letters of `OOBTree`,
/// `IFBucket`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// `O`: any comparable Python object.
    Object,
    /// `I` (int32), `L` (int64), `U` (uint32), `Q` (uint64).
    Int { min: i128, max: i128 },
    /// `F`: a C float (values only).
    Float,
}

impl Slot {
    fn of(c: u8, value: bool) -> Option<Slot> {
        Some(match c {
            b'O' => Slot::Object,
            b'I' => Slot::Int {
                min: i32::MIN.into(),
                max: i32::MAX.into(),
            },
            b'L' => Slot::Int {
                min: i64::MIN.into(),
                max: i64::MAX.into(),
            },
            b'U' => Slot::Int {
                min: 0,
                max: u32::MAX.into(),
            },
            b'Q' => Slot::Int {
                min: 0,
                max: u64::MAX.into(),
            },
            b'F' if value => Slot::Float,
            _ => return None,
        })
    }
}

/// A bucket type: key slot, and value slot for mappings (`None` for sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BucketType {
    key: Slot,
    value: Option<Slot>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Length,
    /// `XYBucket` or `XYSet`.
    Bucket(BucketType),
    /// `XYBTree` or `XYTreeSet`.
    Tree(BucketType),
}

impl Kind {
    fn of(module: &str, name: &str) -> Option<Kind> {
        if (module, name) == ("BTrees.Length", "Length") {
            return Some(Kind::Length);
        }
        let prefix = module.strip_prefix("BTrees.")?.strip_suffix("BTree")?;
        let &[k, v] = prefix.as_bytes() else {
            return None;
        };
        let rest = name.strip_prefix(prefix)?;
        let key = Slot::of(k, false)?;
        let value = Slot::of(v, true)?;
        Some(match rest {
            "Bucket" => Kind::Bucket(BucketType {
                key,
                value: Some(value),
            }),
            "Set" => Kind::Bucket(BucketType { key, value: None }),
            "BTree" => Kind::Tree(BucketType {
                key,
                value: Some(value),
            }),
            "TreeSet" => Kind::Tree(BucketType { key, value: None }),
            _ => return None,
        })
    }
}

/// `Length`: `committed + new - old`.
fn length(
    out: &mut Out<'_>,
    old: &Record,
    committed: &Record,
    new: &Record,
) -> Result<NodeId, Unresolved> {
    let int = |r: &Record| match py(r.state())? {
        Py::Int(i) => Ok(i),
        _ => unsupported("Length state is not an int"),
    };
    let (o, c, n) = (int(old)?, int(committed)?, int(new)?);
    let v = c
        .checked_add(n)
        .and_then(|s| s.checked_sub(o))
        .ok_or_else(|| Unresolved::Unsupported("Length overflow".into()))?;
    Ok(out.int(v))
}

/// A BTree's state reduced to its one bucket's state, as
/// `get_bucket_state` does: `None` (empty tree), or `((bucket_state,),)`;
/// a tree with children is reason 11.
fn tree_bucket_state(r: &Record) -> Result<Option<NodeId>, Unresolved> {
    let s = r.state();
    if s.is_none() {
        return Ok(None);
    }
    let Some(t) = s.as_tuple() else {
        return unsupported("tree state is not a tuple");
    };
    if t.len() == 2 {
        return conflict([-1, -1, -1], 11);
    }
    let inner = t
        .get(0)
        .filter(|_| t.len() == 1)
        .and_then(|v| v.as_tuple())
        .filter(|t| t.len() == 1)
        .and_then(|t| t.get(0))
        .filter(|v| v.as_tuple().is_some());
    match inner {
        Some(b) => Ok(Some(b.id())),
        None => unsupported("tree state of an unexpected shape"),
    }
}

fn bucket(
    out: &mut Out<'_>,
    t: BucketType,
    o: (usize, NodeId),
    c: (usize, NodeId),
    n: (usize, NodeId),
) -> Result<NodeId, Unresolved> {
    bucket_states(out, t, (o.0, Some(o.1)), (c.0, Some(c.1)), (n.0, Some(n.1)))
}

/// A key, or a value, of a bucket being merged.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// From an `O` slot: the Python object (a node of its source).
    Obj(NodeId),
    /// From an integer slot.
    Int(i128),
    /// From an `F` slot.
    Float(f32),
}

/// A bucket read from one source: its items and next-bucket reference.
struct Bucket {
    src: usize,
    keys: Vec<Item>,
    values: Vec<Item>,
    next: Option<RefKey>,
}

/// `_bucket__p_resolveConflict`: the three states set on fresh buckets,
/// the next pointers compared, then `bucket_merge`. Returns the merged
/// bucket's state.
fn bucket_states(
    out: &mut Out<'_>,
    t: BucketType,
    o: (usize, Option<NodeId>),
    c: (usize, Option<NodeId>),
    n: (usize, Option<NodeId>),
) -> Result<NodeId, Unresolved> {
    let b1 = out.read_bucket(t, o.0, o.1)?;
    let b2 = out.read_bucket(t, c.0, c.1)?;
    let b3 = out.read_bucket(t, n.0, n.1)?;
    if b1.next != b2.next || b1.next != b3.next {
        return conflict([-1, -1, -1], 0);
    }
    let merged = merge(out, t, &b1, &b2, &b3)?;
    let mut items = Vec::with_capacity(merged.len() * 2);
    for (src, k, v) in merged {
        items.push(out.emit(src, k)?);
        if let Some(v) = v {
            items.push(out.emit(src, v)?);
        }
    }
    let items = out.b.tuple(items);
    Ok(match &b1.next {
        Some(next) => {
            let next = out.reference(next)?;
            out.b.tuple([items, next])
        }
        None => out.b.tuple([items]),
    })
}

/// An iterator over one bucket, with BTrees' notion of position (1-based
/// while active, -1 once exhausted).
struct Iter<'a> {
    b: &'a Bucket,
    i: usize,
}

impl Iter<'_> {
    fn active(&self) -> bool {
        self.i < self.b.keys.len()
    }
    fn position(&self) -> i64 {
        if self.active() {
            i64::try_from(self.i).map_or(i64::MAX, |i| i + 1)
        } else {
            -1
        }
    }
    fn key(&self) -> Item {
        self.b.keys.get(self.i).copied().unwrap_or(Item::Int(0))
    }
    fn value(&self) -> Option<Item> {
        self.b.values.get(self.i).copied()
    }
    fn next(&mut self) {
        self.i += 1;
    }
}

type Merged = Vec<(usize, Item, Option<Item>)>;

/// `bucket_merge`, decision for decision.
fn merge(
    out: &Out<'_>,
    t: BucketType,
    s1: &Bucket,
    s2: &Bucket,
    s3: &Bucket,
) -> Result<Merged, Unresolved> {
    if s2.keys.is_empty() || s3.keys.is_empty() {
        return conflict([-1, -1, -1], 12);
    }
    let set = t.value.is_none();
    let (mut i1, mut i2, mut i3) = (
        Iter { b: s1, i: 0 },
        Iter { b: s2, i: 0 },
        Iter { b: s3, i: 0 },
    );
    let mut r: Merged = Vec::new();
    let pos = |a: &Iter<'_>, b: &Iter<'_>, c: &Iter<'_>| [a.position(), b.position(), c.position()];
    // A value comparison Python refuses leaves its exception pending and
    // counts as "different" (TEST_VALUE does not check); the next key
    // comparison (TEST_KEY_SET_OR checks PyErr_Occurred) fails with it, a
    // merge_error replaces it, and a merge that completes returns with it
    // set, which fails too.
    let pending = std::cell::Cell::new(false);
    // (Integer keys compare in C without that check.)
    let cmp_key = |a: &Iter<'_>, b: &Iter<'_>| -> Result<Ordering, Unresolved> {
        if pending.get() && t.key == Slot::Object {
            return Err(Cmp::Raises.into());
        }
        Ok(out.compare(a.b.src, a.key(), b.b.src, b.key())?)
    };
    // TEST_VALUE(a, b) == 0: the values are the same.
    let same_value = |a: &Iter<'_>, b: &Iter<'_>| -> Result<bool, Unresolved> {
        match (t.value, a.value(), b.value()) {
            (None, _, _) => Ok(true),
            // With an exception pending, a comparison that runs Python code
            // (a reference's `__lt__`) fails too: CPython turns its result
            // into a SystemError.
            (Some(_), Some(x), Some(y))
                if pending.get() && (out.is_ref(a.b.src, x) || out.is_ref(b.b.src, y)) =>
            {
                Ok(false)
            }
            (Some(_), Some(x), Some(y)) => match out.compare(a.b.src, x, b.b.src, y) {
                Ok(o) => Ok(o == Ordering::Equal),
                Err(Cmp::Raises) => {
                    pending.set(true);
                    Ok(false)
                }
                Err(Cmp::Unknown(e)) => Err(e),
            },
            _ => unsupported("bucket item without a value"),
        }
    };
    let output = |r: &mut Merged, it: &Iter<'_>| r.push((it.b.src, it.key(), it.value()));

    while i1.active() && i2.active() && i3.active() {
        let cmp12 = cmp_key(&i1, &i2)?;
        let cmp13 = cmp_key(&i1, &i3)?;
        if cmp12 == Ordering::Equal {
            if cmp13 == Ordering::Equal {
                if set || same_value(&i1, &i2)? {
                    output(&mut r, &i3);
                } else if same_value(&i1, &i3)? {
                    output(&mut r, &i2);
                } else {
                    return conflict(pos(&i1, &i2, &i3), 1);
                }
                i1.next();
                i2.next();
                i3.next();
            } else if cmp13 == Ordering::Greater {
                output(&mut r, &i3);
                i3.next();
            } else if set || same_value(&i1, &i2)? {
                if i3.position() == 1 {
                    return conflict(pos(&i1, &i2, &i3), 13);
                }
                i1.next();
                i2.next();
            } else {
                return conflict(pos(&i1, &i2, &i3), 2);
            }
        } else if cmp13 == Ordering::Equal {
            if cmp12 == Ordering::Greater {
                output(&mut r, &i2);
                i2.next();
            } else if set || same_value(&i1, &i3)? {
                if i2.position() == 1 {
                    return conflict(pos(&i1, &i2, &i3), 13);
                }
                i1.next();
                i3.next();
            } else {
                return conflict(pos(&i1, &i2, &i3), 3);
            }
        } else {
            let cmp23 = cmp_key(&i2, &i3)?;
            if cmp23 == Ordering::Equal {
                return conflict(pos(&i1, &i2, &i3), 4);
            }
            if cmp12 == Ordering::Greater {
                if cmp23 == Ordering::Greater {
                    output(&mut r, &i3);
                    i3.next();
                } else {
                    output(&mut r, &i2);
                    i2.next();
                }
            } else if cmp13 == Ordering::Greater {
                output(&mut r, &i3);
                i3.next();
            } else {
                return conflict(pos(&i1, &i2, &i3), 5);
            }
        }
    }
    while i2.active() && i3.active() {
        match cmp_key(&i2, &i3)? {
            Ordering::Equal => return conflict(pos(&i1, &i2, &i3), 6),
            Ordering::Greater => {
                output(&mut r, &i3);
                i3.next();
            }
            Ordering::Less => {
                output(&mut r, &i2);
                i2.next();
            }
        }
    }
    while i1.active() && i2.active() {
        let cmp12 = cmp_key(&i1, &i2)?;
        if cmp12 == Ordering::Greater {
            output(&mut r, &i2);
            i2.next();
        } else if cmp12 == Ordering::Equal && (set || same_value(&i1, &i2)?) {
            i1.next();
            i2.next();
        } else {
            return conflict(pos(&i1, &i2, &i3), 7);
        }
    }
    while i1.active() && i3.active() {
        let cmp13 = cmp_key(&i1, &i3)?;
        if cmp13 == Ordering::Greater {
            output(&mut r, &i3);
            i3.next();
        } else if cmp13 == Ordering::Equal && (set || same_value(&i1, &i3)?) {
            i1.next();
            i3.next();
        } else {
            return conflict(pos(&i1, &i2, &i3), 8);
        }
    }
    if i1.active() {
        return conflict(pos(&i1, &i2, &i3), 9);
    }
    while i2.active() {
        output(&mut r, &i2);
        i2.next();
    }
    while i3.active() {
        output(&mut r, &i3);
        i3.next();
    }
    if r.is_empty() {
        return conflict([-1, -1, -1], 10);
    }
    if pending.get() {
        return Err(Cmp::Raises.into());
    }
    Ok(r)
}

/// What identifies a reference for `PersistentReferenceFactory`: one
/// `PersistentReference` object per distinct reference data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RefKey {
    oid: Oid,
    class: Option<(String, String)>,
}

/// Modules whose classes every ZODB server can import: references to
/// their classes pickle back as the same GLOBAL. A Python server that
/// cannot import a reference's class writes it differently (`BadClass`),
/// so references to other classes are left to the client.
fn importable(module: &str) -> bool {
    ["BTrees.", "persistent.", "ZODB."]
        .iter()
        .any(|p| module.starts_with(p))
        || module == "persistent"
}

fn ref_key(v: Value<'_>) -> Result<RefKey, Unresolved> {
    match v.persistent_ref() {
        Ok(PersistentRef::Oid { oid, class: None }) => Ok(RefKey { oid, class: None }),
        Ok(
            r @ PersistentRef::Oid {
                oid,
                class: Some(c),
            },
        ) => match (c.as_global(), r.class_path()) {
            (Some((m, n)), _) if importable(m) => Ok(RefKey {
                oid,
                class: Some((m.to_owned(), n.to_owned())),
            }),
            _ => unsupported("reference to a class a server may not import"),
        },
        Ok(_) => unsupported("weak or cross-database reference"),
        Err(e) => unsupported(format!("reference: {e}")),
    }
}

/// A Python value as far as comparisons go.
enum Py<'g> {
    None,
    Int(i128),
    Float(f64),
    Str(&'g [u8]),
    Bytes(&'g [u8]),
    Tuple(Vec<Value<'g>>),
    Ref(RefKey),
}

fn long_value(le: &[u8]) -> Option<i128> {
    if le.len() > 16 {
        return None;
    }
    let mut buf = [0u8; 16];
    let neg = le.last().is_some_and(|b| b & 0x80 != 0);
    if neg {
        buf = [0xff; 16];
    }
    buf.get_mut(..le.len())?.copy_from_slice(le);
    Some(i128::from_le_bytes(buf))
}

fn py(v: Value<'_>) -> Result<Py<'_>, Unresolved> {
    Ok(match v.node() {
        Node::None => Py::None,
        Node::Bool(b) => Py::Int(i128::from(*b)),
        Node::Int(i) => Py::Int(i128::from(*i)),
        Node::Long(le) => Py::Int(
            long_value(le).ok_or_else(|| Unresolved::Unsupported("int beyond 128 bits".into()))?,
        ),
        Node::Float(f) => Py::Float(*f),
        Node::Unicode(s) => Py::Str(s),
        Node::Bytes(b) => Py::Bytes(b),
        Node::Tuple(_) => Py::Tuple(v.as_tuple().map(|t| t.iter().collect()).unwrap_or_default()),
        Node::PersistentId(_) => Py::Ref(ref_key(v)?),
        other => return unsupported(format!("comparing {}", node_kind(other))),
    })
}

fn node_kind(n: &Node) -> &'static str {
    match n {
        Node::None => "None",
        Node::Bool(_) => "a bool",
        Node::Int(_) | Node::Long(_) => "an int",
        Node::Float(_) => "a float",
        Node::Bytes(_) => "bytes",
        Node::Str(_) => "a Python 2 str",
        Node::Unicode(_) => "a str",
        Node::ByteArray(_) => "a bytearray",
        Node::Tuple(_) => "a tuple",
        Node::List(_) => "a list",
        Node::Dict(_) => "a dict",
        Node::Set(_) | Node::FrozenSet(_) => "a set",
        Node::Global(_) => "a class",
        Node::Object(_) => "an object",
        Node::PersistentId(_) => "a reference",
    }
}

/// How deeply keys and values may nest tuples: far beyond what a BTree
/// holds, and low enough that recursing into them cannot exhaust a stack.
const MAX_DEPTH: usize = 64;

/// Tuple nesting of `v`, counted up to just past [`MAX_DEPTH`].
fn nesting(v: Value<'_>, depth: usize) -> usize {
    if depth > MAX_DEPTH {
        return depth;
    }
    match v.as_tuple() {
        Some(t) => t
            .iter()
            .map(|x| nesting(x, depth + 1))
            .max()
            .unwrap_or(depth),
        None => depth,
    }
}

/// An int against a float, exactly as Python compares them (`None`: the
/// float is NaN, unordered).
fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    const TWO_127: f64 = 1.7014118346046923e38;
    if f.is_nan() {
        return None;
    }
    if f.abs() >= TWO_127 {
        return Some(if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        });
    }
    let floor = f.floor();
    // Integral and within i128: exact.
    let fi = floor as i128;
    Some(match i.cmp(&fi) {
        Ordering::Equal if f > floor => Ordering::Less,
        o => o,
    })
}

/// Why a comparison has no answer.
#[derive(Debug)]
enum Cmp {
    /// Python raises (TypeError between unorderable types, ValueError from
    /// `PersistentReference`); what BTrees then does is modelled.
    Raises,
    /// We cannot tell what Python would answer.
    Unknown(Unresolved),
}

impl From<Unresolved> for Cmp {
    fn from(e: Unresolved) -> Cmp {
        Cmp::Unknown(e)
    }
}

impl From<Cmp> for Unresolved {
    fn from(c: Cmp) -> Unresolved {
        match c {
            Cmp::Raises => Unresolved::Unsupported("a comparison Python refuses".into()),
            Cmp::Unknown(e) => e,
        }
    }
}

/// Python's `a == b` for the values we understand.
fn py_eq(a: &Py<'_>, b: &Py<'_>) -> Result<bool, Cmp> {
    Ok(match (a, b) {
        (Py::None, Py::None) => true,
        (Py::Int(x), Py::Int(y)) => x == y,
        (Py::Float(x), Py::Float(y)) => x == y,
        (Py::Int(x), Py::Float(y)) | (Py::Float(y), Py::Int(x)) => {
            cmp_int_float(*x, *y) == Some(Ordering::Equal)
        }
        (Py::Str(x), Py::Str(y)) | (Py::Bytes(x), Py::Bytes(y)) => x == y,
        (Py::Tuple(x), Py::Tuple(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (p, q) in x.iter().zip(y) {
                if !py_eq(&py(*p)?, &py(*q)?)? {
                    return Ok(false);
                }
            }
            true
        }
        // PersistentReference.__cmp__: equal references compare equal,
        // anything else raises ValueError.
        (Py::Ref(x), Py::Ref(y)) if x.oid == y.oid => true,
        (Py::Ref(_), _) | (_, Py::Ref(_)) => return Err(Cmp::Raises),
        _ => false,
    })
}

/// Python's `a < b` for the values we understand; a TypeError in Python is
/// [`Cmp::Raises`] here.
fn py_lt(a: &Py<'_>, b: &Py<'_>) -> Result<bool, Cmp> {
    Ok(match (a, b) {
        (Py::Int(x), Py::Int(y)) => x < y,
        (Py::Float(x), Py::Float(y)) => x < y,
        (Py::Int(x), Py::Float(y)) => cmp_int_float(*x, *y) == Some(Ordering::Less),
        (Py::Float(x), Py::Int(y)) => cmp_int_float(*y, *x) == Some(Ordering::Greater),
        // UTF-8 (surrogates included, as we store them) sorts as code points.
        (Py::Str(x), Py::Str(y)) | (Py::Bytes(x), Py::Bytes(y)) => x < y,
        (Py::Tuple(x), Py::Tuple(y)) => {
            for (p, q) in x.iter().zip(y) {
                let (p, q) = (py(*p)?, py(*q)?);
                if !py_eq(&p, &q)? {
                    return py_lt(&p, &q);
                }
            }
            x.len() < y.len()
        }
        (Py::Ref(x), Py::Ref(y)) if x.oid == y.oid => false,
        _ => return Err(Cmp::Raises),
    })
}

/// The merged graph under construction, and how nodes of the three
/// sources map into it.
struct Out<'r> {
    srcs: [&'r Record; 3],
    b: GraphBuilder,
    /// Source node → output node: one Python object stays one object.
    map: HashMap<(usize, NodeId), NodeId>,
    /// Objects CPython shares whatever their origin: the empty string and
    /// one-character latin-1 strings, empty and one-byte bytes.
    singletons: HashMap<(bool, Bytes), NodeId>,
    /// Per reference, the source and id-value node of its first
    /// occurrence: `PersistentReference.data`, one object per reference.
    refs: HashMap<RefKey, (usize, NodeId)>,
}

impl<'r> Out<'r> {
    fn new(srcs: &[&'r Record; 3]) -> Result<Out<'r>, Unresolved> {
        let mut refs = HashMap::new();
        for (s, rec) in srcs.iter().enumerate() {
            for v in rec.graph.values() {
                if let Node::PersistentId(pid) = v.node() {
                    // Unusable references only matter if they are used.
                    if let Ok(k) = ref_key(v) {
                        refs.entry(k).or_insert((s, *pid));
                    }
                }
            }
        }
        Ok(Out {
            srcs: *srcs,
            b: GraphBuilder::new(),
            map: HashMap::new(),
            singletons: HashMap::new(),
            refs,
        })
    }

    fn graph(&self, src: usize) -> &'r Graph {
        let [new, old, committed] = self.srcs;
        match src {
            OLD => &old.graph,
            COMMITTED => &committed.graph,
            _ => &new.graph,
        }
    }

    fn int(&mut self, v: i128) -> NodeId {
        match i64::try_from(v) {
            Ok(i) => self.b.int(i),
            Err(_) => self.b.big_int(v),
        }
    }

    /// Reads a bucket state as `bucket.__setstate__` does (`None`: empty).
    fn read_bucket(
        &self,
        t: BucketType,
        src: usize,
        state: Option<NodeId>,
    ) -> Result<Bucket, Unresolved> {
        let mut b = Bucket {
            src,
            keys: Vec::new(),
            values: Vec::new(),
            next: None,
        };
        let Some(state) = state else {
            return Ok(b);
        };
        let g = self.graph(src);
        let s = g.value(state);
        if s.is_none() {
            return Ok(b);
        }
        let Some(st) = s.as_tuple() else {
            return unsupported("bucket state is not a tuple");
        };
        let items = match (st.len(), st.get(0), st.get(1)) {
            (1, Some(items), _) => items,
            (2, Some(items), Some(next)) => {
                b.next = if next.is_none() {
                    None
                } else {
                    Some(ref_key(next)?)
                };
                items
            }
            _ => return unsupported("bucket state of an unexpected shape"),
        };
        let Some(items) = items.as_tuple() else {
            return unsupported("bucket items are not a tuple");
        };
        let step = if t.value.is_some() { 2 } else { 1 };
        if items.len() % step != 0 {
            return unsupported("odd bucket items");
        }
        let ids = items.ids();
        for pair in ids.chunks(step) {
            let [k, rest @ ..] = pair else { continue };
            b.keys.push(self.item(g, *k, t.key)?);
            if let (Some(slot), [v]) = (t.value, rest) {
                b.values.push(self.item(g, *v, slot)?);
            }
        }
        Ok(b)
    }

    fn item(&self, g: &Graph, id: NodeId, slot: Slot) -> Result<Item, Unresolved> {
        let v = g.value(id);
        match slot {
            Slot::Object => {
                // Check now that we can compare it, to refuse early, and
                // bound the nesting the comparisons and the copy recurse
                // into (the new record comes from a client).
                py(v)?;
                if nesting(v, 0) > MAX_DEPTH {
                    return unsupported("value nested too deeply");
                }
                Ok(Item::Obj(id))
            }
            Slot::Int { min, max } => match py(v)? {
                Py::Int(i) if (min..=max).contains(&i) => Ok(Item::Int(i)),
                _ => unsupported("integer key or value out of range"),
            },
            Slot::Float => match py(v)? {
                Py::Float(f) => Ok(Item::Float(f as f32)),
                Py::Int(i) => match i64::try_from(i) {
                    Ok(i) => Ok(Item::Float(i as f32)),
                    Err(_) => unsupported("float value from a large int"),
                },
                _ => unsupported("float value that is not a number"),
            },
        }
    }

    /// `COMPARE(a, b)` (object slots: None first, then `<`, then `==`) or
    /// the C comparison of integer and float slots.
    fn compare(&self, sa: usize, a: Item, sb: usize, b: Item) -> Result<Ordering, Cmp> {
        match (a, b) {
            (Item::Int(x), Item::Int(y)) => Ok(x.cmp(&y)),
            // C: (K < T) ? -1 : (K > T) ? 1 : 0; NaN is "equal".
            (Item::Float(x), Item::Float(y)) => Ok(if x < y {
                Ordering::Less
            } else if x > y {
                Ordering::Greater
            } else {
                Ordering::Equal
            }),
            (Item::Obj(x), Item::Obj(y)) => {
                let (x, y) = (py(self.graph(sa).value(x))?, py(self.graph(sb).value(y))?);
                match (&x, &y) {
                    (Py::None, Py::None) => Ok(Ordering::Equal),
                    (Py::None, _) => Ok(Ordering::Less),
                    (_, Py::None) => Ok(Ordering::Greater),
                    _ if py_lt(&x, &y)? => Ok(Ordering::Less),
                    _ if py_eq(&x, &y)? => Ok(Ordering::Equal),
                    _ => Ok(Ordering::Greater),
                }
            }
            _ => Err(Cmp::Unknown(Unresolved::Unsupported(
                "mixed item kinds".into(),
            ))),
        }
    }

    /// Whether an item is a persistent reference.
    fn is_ref(&self, src: usize, item: Item) -> bool {
        matches!(item, Item::Obj(id) if matches!(self.graph(src).node(id), Node::PersistentId(_)))
    }

    /// The output node for a merged key or value.
    fn emit(&mut self, src: usize, item: Item) -> Result<NodeId, Unresolved> {
        Ok(match item {
            Item::Obj(id) => self.copy(src, id)?,
            Item::Int(i) => self.int(i),
            Item::Float(f) => self.b.float(f64::from(f)),
        })
    }

    /// A reference, as `persistent_id` pickles it: the id value of the
    /// reference's first occurrence.
    fn reference(&mut self, key: &RefKey) -> Result<NodeId, Unresolved> {
        let Some(&(src, pid)) = self.refs.get(key) else {
            return unsupported("reference without an occurrence");
        };
        let data = self.copy(src, pid)?;
        Ok(self.b.persistent_id(data))
    }

    /// Copies a value of source `src` into the output, keeping identity:
    /// what was one object in the source is one node in the output.
    fn copy(&mut self, src: usize, id: NodeId) -> Result<NodeId, Unresolved> {
        self.copy_at(src, id, 0)
    }

    fn copy_at(&mut self, src: usize, id: NodeId, depth: usize) -> Result<NodeId, Unresolved> {
        if depth > MAX_DEPTH {
            return unsupported("value nested too deeply");
        }
        if let Some(&o) = self.map.get(&(src, id)) {
            return Ok(o);
        }
        let g = self.graph(src);
        let node = g.node(id);
        let singleton = match node {
            Node::Unicode(s) if is_latin1_char_or_empty(s) => Some((true, s.clone())),
            Node::Bytes(b) if b.len() <= 1 => Some((false, b.clone())),
            _ => None,
        };
        if let Some(k) = singleton {
            if let Some(&o) = self.singletons.get(&k) {
                return Ok(o);
            }
            let o = self.b.push(node.clone());
            self.singletons.insert(k, o);
            return Ok(o);
        }
        let o = match node {
            Node::None
            | Node::Bool(_)
            | Node::Int(_)
            | Node::Long(_)
            | Node::Float(_)
            | Node::Bytes(_)
            | Node::Unicode(_)
            | Node::Global(_) => self.b.push(node.clone()),
            Node::Tuple(items) => {
                let mut out = Vec::with_capacity(items.len());
                for &i in items {
                    out.push(self.copy_at(src, i, depth + 1)?);
                }
                self.b.tuple(out)
            }
            Node::PersistentId(_) => {
                let key = ref_key(g.value(id))?;
                self.reference(&key)?
            }
            other => return unsupported(format!("copying {}", node_kind(other))),
        };
        self.map.insert((src, id), o);
        Ok(o)
    }
}

/// CPython returns one shared object for `''` and for every one-character
/// string whose code point is below 256, however it was made.
fn is_latin1_char_or_empty(utf8: &[u8]) -> bool {
    match utf8 {
        [] => true,
        [c] => *c < 0x80,
        [a, _] => *a == 0xc2 || *a == 0xc3,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests may panic")]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_class_names() {
        assert_eq!(Kind::of("BTrees.Length", "Length"), Some(Kind::Length));
        assert!(matches!(
            Kind::of("BTrees.OOBTree", "OOBucket"),
            Some(Kind::Bucket(_))
        ));
        assert!(matches!(
            Kind::of("BTrees.IFBTree", "IFTreeSet"),
            Some(Kind::Tree(BucketType { value: None, .. }))
        ));
        assert_eq!(Kind::of("BTrees.OOBTree", "IOBucket"), None);
        assert_eq!(Kind::of("BTrees.fsBTree", "fsBucket"), None);
        assert_eq!(Kind::of("BTrees.FOBTree", "FOBucket"), None);
        assert_eq!(Kind::of("persistent.mapping", "PersistentMapping"), None);
    }

    #[test]
    fn longs_decode_as_twos_complement() {
        assert_eq!(long_value(&[]), Some(0));
        assert_eq!(long_value(&[0xff]), Some(-1));
        assert_eq!(long_value(&[0x00, 0x80]), Some(-32768));
        assert_eq!(long_value(&[0x00, 0x80, 0x00]), Some(32768));
        assert_eq!(long_value(&[0u8; 17]), None);
    }

    /// An OOBucket record holding `state`'s pickle opcodes.
    fn bucket_record(state: &[u8]) -> Vec<u8> {
        let mut v = b"\x80\x03cBTrees.OOBTree\nOOBucket\nq\x00.\x80\x03".to_vec();
        v.extend_from_slice(state);
        v.push(b'.');
        v
    }

    #[test]
    fn deep_values_are_refused_not_recursed() {
        // ((('a', <value nested 100000 tuples deep>),),)
        let mut deep = b"X\x01\x00\x00\x00a".to_vec();
        deep.extend(std::iter::repeat_n(b'K', 1).chain([0u8]));
        deep.extend(std::iter::repeat_n(0x85u8, 100_000)); // TUPLE1
        deep.extend_from_slice(b"\x86\x85"); // TUPLE2 (items), TUPLE1 (state)
        let new = bucket_record(&deep);
        let old = bucket_record(b"X\x01\x00\x00\x00aK\x01\x86\x85");
        let com = bucket_record(b"X\x01\x00\x00\x00aK\x02\x86\x85");
        assert_eq!(
            resolve(&old, &com, &new),
            Err(Unresolved::Unsupported("value nested too deeply".into()))
        );
    }

    #[test]
    fn garbage_never_panics() {
        let old = bucket_record(b"X\x01\x00\x00\x00aK\x01\x86\x85");
        let com = bucket_record(b"X\x01\x00\x00\x00aK\x02\x86\x85");
        for cut in 0..old.len() {
            let _ = resolve(&old, &com, &old[..cut]);
            let mut flipped = old.clone();
            flipped[cut] ^= 0x55;
            let _ = resolve(&old, &com, &flipped);
            let _ = resolve(&flipped, &com, &old);
        }
    }

    #[test]
    fn singletons() {
        assert!(is_latin1_char_or_empty(b""));
        assert!(is_latin1_char_or_empty(b"a"));
        assert!(is_latin1_char_or_empty("é".as_bytes()));
        assert!(!is_latin1_char_or_empty("ā".as_bytes()));
        assert!(!is_latin1_char_or_empty(b"ab"));
    }
}
