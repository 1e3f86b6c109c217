//! Helpers for the encoder tests: describing a graph to the Python oracle
//! (pickle_encode_oracle.py builds the same objects and pickles them), a
//! proptest generator of graphs, and a structural comparison of graphs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::Bytes;
use proptest::prelude::*;
use zodb_core::Oid;
use zodb_core::pickle::{Graph, GraphBuilder, Node, NodeId, ObjectKind, Value};

pub fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Which Python pickler the oracle runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oracle {
    /// zodbpickle's, as ZODB runs it.
    Zodbpickle,
    /// zodbpickle's in fast mode (no memo), as `fsIndex.save` runs it.
    ZodbpickleFast,
    /// The standard library's (CPython 3.11 `_pickle`).
    Stdlib,
}

/// One oracle case: the graph's nodes, then which roots to dump (one
/// Pickler, so a record's two pickles share the memo).
pub fn oracle_case(graph: &Graph, roots: &[NodeId], protocol: u8, oracle: Oracle) -> String {
    let mut s = String::new();
    let which = match oracle {
        Oracle::Zodbpickle => "z",
        Oracle::ZodbpickleFast => "zf",
        Oracle::Stdlib => "s",
    };
    let _ = write!(s, "case {protocol} {which}");
    for r in roots {
        let _ = write!(s, " {}", r.index());
    }
    s.push('\n');
    let ids = |v: &[NodeId]| {
        v.iter()
            .map(|i| i.index().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let csv = |v: &[NodeId]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter()
                .map(|i| i.index().to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    for node in graph.nodes() {
        let line = match node {
            Node::None => "N".to_string(),
            Node::Bool(b) => format!("B {}", u8::from(*b)),
            Node::Int(v) => format!("I {v}"),
            Node::Long(le) => format!("L {}", hex(le)),
            Node::Float(x) => format!("F {}", hex(&x.to_be_bytes())),
            Node::Bytes(b) => format!("Y {}", hex(b)),
            Node::Str(b) => format!("S {}", hex(b)),
            Node::Unicode(b) => format!("U {}", hex(b)),
            Node::ByteArray(b) => format!("A {}", hex(b)),
            Node::Tuple(v) => format!("T {}", ids(v)),
            Node::List(v) => format!("Li {}", ids(v)),
            Node::Set(v) => format!("Se {}", ids(v)),
            Node::FrozenSet(v) => format!("Fs {}", ids(v)),
            Node::Dict(kv) => {
                let flat: Vec<NodeId> = kv.iter().flat_map(|(k, v)| [*k, *v]).collect();
                format!("D {}", ids(&flat))
            }
            Node::Global(g) => format!(
                "G {} {}",
                hex(g.module().as_bytes()),
                hex(g.name().as_bytes())
            ),
            Node::PersistentId(p) => format!("P {}", p.index()),
            Node::Object(o) => {
                let kind = match o.kind {
                    ObjectKind::Reduce => "R",
                    ObjectKind::NewObj => "N",
                    ObjectKind::NewObjEx => "X",
                    ObjectKind::Inst => "I",
                    ObjectKind::Obj => "O",
                };
                let opt = |x: Option<NodeId>| x.map_or("-".to_string(), |i| i.index().to_string());
                let flat: Vec<NodeId> = o.dict_items.iter().flat_map(|(k, v)| [*k, *v]).collect();
                format!(
                    "O {kind} {} {} {} {} {} {}",
                    o.class.index(),
                    o.args.index(),
                    opt(o.kwargs),
                    opt(o.state),
                    csv(&o.list_items),
                    csv(&flat)
                )
            }
        };
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s.push_str("end\n");
    s
}

/// A value to generate; materialized into a graph by [`Gen`].
#[derive(Clone, Debug)]
pub enum T {
    None,
    Bool(bool),
    Int(i64),
    /// Little-endian two's complement of any size.
    Big(Vec<u8>),
    Float(f64),
    Bytes(Vec<u8>),
    /// A Python 2 str (only where Python 3 is not the oracle).
    Str(Vec<u8>),
    Text(String),
    Tuple(Vec<T>),
    List(Vec<T>),
    /// Values under distinct generated keys.
    Dict(Vec<T>),
    Global(u8),
    /// ZODB's (oid, class) reference.
    Ref(u8, u8),
    /// A persistent id of any value.
    Pid(Box<T>),
    Object {
        new: bool,
        class: u8,
        args: Vec<T>,
        state: Option<Box<T>>,
        list: Vec<T>,
        dict: Vec<T>,
    },
    /// Python 2 INST / OBJ objects (not for a Python 3 oracle).
    OldObject {
        inst: bool,
        class: u8,
        args: Vec<T>,
        state: Option<Box<T>>,
    },
    /// The n-th value completed before (sharing, never a cycle).
    Share(u16),
    /// A list that ends with itself.
    SelfList(Vec<T>),
    /// A dict with itself under a key.
    SelfDict(Vec<T>),
    /// (list, x) where the list holds the tuple: CPython's POP_MARK/GET.
    TupleCycle(Vec<T>),
}

/// What the generator may produce.
#[derive(Clone, Copy, Debug)]
pub struct Allow {
    /// Python 2 str, INST and OBJ (no Python 3 oracle can make them).
    pub py2: bool,
    /// NEWOBJ objects (Python writes them only from protocol 2).
    pub newobj: bool,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,6}",
        "[a-z]{0,300}",
        Just("\u{ff}é€😀".to_string()),
        Just(String::new()),
    ]
}

fn bin() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

pub fn tree(allow: Allow) -> impl Strategy<Value = T> {
    let leaf = prop_oneof![
        Just(T::None),
        any::<bool>().prop_map(T::Bool),
        any::<i64>().prop_map(T::Int),
        (-70000i64..70000).prop_map(T::Int),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(T::Big),
        any::<f64>().prop_map(T::Float),
        bin().prop_map(T::Bytes),
        bin().prop_map(move |b| if allow.py2 { T::Str(b) } else { T::Bytes(b) }),
        text().prop_map(T::Text),
        any::<u8>().prop_map(T::Global),
        (any::<u8>(), any::<u8>()).prop_map(|(o, c)| T::Ref(o % 8, c)),
        any::<u16>().prop_map(T::Share),
    ];
    leaf.prop_recursive(5, 96, 8, move |inner| {
        let obj = (
            any::<bool>(),
            any::<u8>(),
            prop::collection::vec(inner.clone(), 0..4),
            prop::option::of(inner.clone()),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner.clone(), 0..3),
        )
            .prop_map(move |(new, class, args, state, list, dict)| T::Object {
                new: new && allow.newobj,
                class,
                args,
                state: state.map(Box::new),
                list,
                dict,
            });
        let old = (
            any::<bool>(),
            any::<u8>(),
            prop::collection::vec(inner.clone(), 0..3),
            prop::option::of(inner.clone()),
        )
            .prop_map(move |(inst, class, args, state)| {
                if allow.py2 {
                    T::OldObject {
                        inst,
                        class,
                        args,
                        state: state.map(Box::new),
                    }
                } else {
                    T::Tuple(args)
                }
            });
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(T::Tuple),
            prop::collection::vec(inner.clone(), 0..6).prop_map(T::List),
            prop::collection::vec(inner.clone(), 0..5).prop_map(T::Dict),
            inner.clone().prop_map(|t| T::Pid(Box::new(t))),
            obj,
            old,
            prop::collection::vec(inner.clone(), 0..3).prop_map(T::SelfList),
            prop::collection::vec(inner.clone(), 0..3).prop_map(T::SelfDict),
            prop::collection::vec(inner, 0..3).prop_map(T::TupleCycle),
        ]
    })
}

/// Builds graphs from [`T`]s. Equal strings and bytes of length 0 or 1
/// share one node, as CPython caches those objects (so its pickler finds
/// them in the memo).
#[derive(Default)]
pub struct Gen {
    pub b: GraphBuilder,
    done: Vec<NodeId>,
    short: HashMap<(u8, Vec<u8>), NodeId>,
    keys: usize,
}

impl Gen {
    pub fn new() -> Gen {
        Gen::default()
    }

    fn short(
        &mut self,
        kind: u8,
        b: &[u8],
        make: impl FnOnce(&mut GraphBuilder) -> NodeId,
    ) -> NodeId {
        if b.len() > 1 {
            return make(&mut self.b);
        }
        if let Some(&id) = self.short.get(&(kind, b.to_vec())) {
            return id;
        }
        let id = make(&mut self.b);
        self.short.insert((kind, b.to_vec()), id);
        id
    }

    fn class(&mut self, k: u8) -> NodeId {
        self.b
            .global(&format!("zodbrs_gen.m{}", k % 3), &format!("C{}", k % 16))
    }

    /// A fresh dict key, distinct from every other.
    fn key(&mut self) -> NodeId {
        self.keys += 1;
        if self.keys.is_multiple_of(2) {
            self.b.int(self.keys as i64 * 7919)
        } else {
            self.b.text(&format!("key{}", self.keys))
        }
    }

    pub fn build(&mut self, t: &T) -> NodeId {
        let id = match t {
            T::None => self.b.none(),
            T::Bool(v) => self.b.bool(*v),
            T::Int(v) => self.b.int(*v),
            T::Big(le) => self.b.long(Bytes::copy_from_slice(le)),
            T::Float(v) => self.b.float(*v),
            T::Bytes(v) => self.short(0, v, |b| b.bytes(Bytes::copy_from_slice(v))),
            T::Str(v) => self.short(1, v, |b| b.py2_str(Bytes::copy_from_slice(v))),
            T::Text(s) => {
                let n = s.chars().count();
                if n <= 1 {
                    self.short(2, s.as_bytes(), |b| b.text(s))
                } else {
                    self.b.text(s)
                }
            }
            T::Tuple(items) => {
                let ids: Vec<_> = items.iter().map(|t| self.build(t)).collect();
                self.b.tuple(ids)
            }
            T::List(items) => {
                let ids: Vec<_> = items.iter().map(|t| self.build(t)).collect();
                self.b.list(ids)
            }
            T::Dict(items) => {
                let kv: Vec<_> = items
                    .iter()
                    .map(|t| {
                        let k = self.key();
                        (k, self.build(t))
                    })
                    .collect();
                self.b.dict(kv)
            }
            T::Global(k) => self.class(*k),
            T::Ref(oid, class) => {
                let class = self.class(*class);
                self.b.reference(Oid(u64::from(*oid)), class)
            }
            T::Pid(t) => {
                // persistent_id returning None means "not persistent", and
                // Python saves the id itself without asking persistent_id.
                let mut pid = self.build(t);
                match self.b.graph().node(pid) {
                    Node::None => pid = self.b.int(0),
                    Node::PersistentId(_) => pid = self.b.tuple([pid]),
                    _ => {}
                }
                self.b.persistent_id(pid)
            }
            T::Object {
                new,
                class,
                args,
                state,
                list,
                dict,
            } => {
                let class = self.class(*class);
                let args: Vec<_> = args.iter().map(|t| self.build(t)).collect();
                let args = self.b.tuple(args);
                // Python writes no BUILD for a None state.
                let state = state
                    .as_deref()
                    .filter(|s| !matches!(s, T::None))
                    .map(|s| self.build(s));
                let list: Vec<_> = list.iter().map(|t| self.build(t)).collect();
                let dict: Vec<_> = dict
                    .iter()
                    .map(|t| {
                        let k = self.key();
                        (k, self.build(t))
                    })
                    .collect();
                let id = if *new {
                    self.b.new_object(class, args, state)
                } else {
                    self.b.reduce(class, args, state)
                };
                if let Node::Object(o) = self.b.graph_mut().node_mut(id) {
                    o.list_items = list;
                    o.dict_items = dict;
                }
                id
            }
            T::OldObject {
                inst,
                class,
                args,
                state,
            } => {
                let class = self.class(*class);
                let args: Vec<_> = args.iter().map(|t| self.build(t)).collect();
                let args = self.b.tuple(args);
                let state = state.as_deref().map(|s| self.build(s));
                let id = self.b.reduce(class, args, state);
                if let Node::Object(o) = self.b.graph_mut().node_mut(id) {
                    o.kind = if *inst {
                        ObjectKind::Inst
                    } else {
                        ObjectKind::Obj
                    };
                }
                id
            }
            T::Share(n) => match self.done.len() {
                0 => self.b.none(),
                len => self.done[usize::from(*n) % len],
            },
            T::SelfList(items) => {
                let mut ids: Vec<_> = items.iter().map(|t| self.build(t)).collect();
                let id = self.b.list([]);
                ids.push(id);
                *self.b.graph_mut().node_mut(id) = Node::List(ids);
                id
            }
            T::SelfDict(items) => {
                let mut kv: Vec<_> = items
                    .iter()
                    .map(|t| {
                        let k = self.key();
                        (k, self.build(t))
                    })
                    .collect();
                let id = self.b.dict([]);
                let k = self.key();
                kv.push((k, id));
                *self.b.graph_mut().node_mut(id) = Node::Dict(kv);
                id
            }
            T::TupleCycle(items) => {
                let mut ids: Vec<_> = items.iter().map(|t| self.build(t)).collect();
                let list = self.b.list([]);
                ids.insert(0, list);
                let tuple = self.b.tuple(ids);
                *self.b.graph_mut().node_mut(list) = Node::List(vec![tuple]);
                tuple
            }
        };
        self.done.push(id);
        id
    }
}

/// How two graphs may differ and still count as the same value.
#[derive(Clone, Copy, Debug)]
pub struct Same {
    /// Python 3 has one int type: a long that fits 32 bits comes back as
    /// an int, an int beyond 32 bits as a long.
    pub ints_by_value: bool,
    /// Below protocol 3 bytes come back as `_codecs.encode(...)` objects.
    pub bytes_reduced: bool,
    /// Python 2 leaves strings shorter than 2 and zodbpickle `binary` out
    /// of the memo: they come back unshared.
    pub py2_unshared: bool,
}

/// Whether `a` and `b` are the same value: same shape and contents, and
/// identity kept (two places share a node in one iff they do in the
/// other), except for values pickles do not memoize (atoms, persistent
/// ids, the empty tuple), which compare by value, and globals, by name.
pub fn same_value(a: Value<'_>, b: Value<'_>, how: Same) -> Result<(), String> {
    let mut fwd = HashMap::new();
    let mut back = HashMap::new();
    same(a, b, how, &mut fwd, &mut back, 0)
}

fn same(
    a: Value<'_>,
    b: Value<'_>,
    how: Same,
    fwd: &mut HashMap<NodeId, NodeId>,
    back: &mut HashMap<NodeId, NodeId>,
    depth: usize,
) -> Result<(), String> {
    let fail = |why: &str| Err(format!("{why}: {a:?} vs {b:?}"));
    if depth > 200 {
        return fail("too deep");
    }
    let by_value = match a.node() {
        Node::None
        | Node::Bool(_)
        | Node::Int(_)
        | Node::Long(_)
        | Node::Float(_)
        | Node::PersistentId(_)
        | Node::Global(_) => true,
        Node::Tuple(v) => v.is_empty(),
        Node::Str(s) => how.py2_unshared && s.len() < 2,
        Node::Unicode(s) => {
            how.py2_unshared && std::str::from_utf8(s).is_ok_and(|s| s.chars().count() < 2)
        }
        Node::Bytes(_) => how.py2_unshared,
        _ => false,
    };
    if !by_value {
        match (fwd.get(&a.id()), back.get(&b.id())) {
            (Some(x), _) if *x == b.id() => return Ok(()),
            (None, None) => {
                fwd.insert(a.id(), b.id());
                back.insert(b.id(), a.id());
            }
            _ => return fail("identity differs"),
        }
    }
    let seq = |x: &[NodeId],
               y: &[NodeId],
               fwd: &mut HashMap<NodeId, NodeId>,
               back: &mut HashMap<NodeId, NodeId>| {
        if x.len() != y.len() {
            return fail("lengths differ");
        }
        for (p, q) in x.iter().zip(y) {
            same(
                a.graph().value(*p),
                b.graph().value(*q),
                how,
                fwd,
                back,
                depth + 1,
            )?;
        }
        Ok(())
    };
    let pairs = |x: &[(NodeId, NodeId)],
                 y: &[(NodeId, NodeId)],
                 fwd: &mut HashMap<NodeId, NodeId>,
                 back: &mut HashMap<NodeId, NodeId>| {
        if x.len() != y.len() {
            return fail("lengths differ");
        }
        for ((k1, v1), (k2, v2)) in x.iter().zip(y) {
            same(
                a.graph().value(*k1),
                b.graph().value(*k2),
                how,
                fwd,
                back,
                depth + 1,
            )?;
            same(
                a.graph().value(*v1),
                b.graph().value(*v2),
                how,
                fwd,
                back,
                depth + 1,
            )?;
        }
        Ok(())
    };
    match (a.node(), b.node()) {
        (Node::Int(_) | Node::Long(_), Node::Int(_) | Node::Long(_)) => {
            // Longs compare by value (their bytes need not be minimal);
            // Python 2 keeps int and long apart, Python 3 does not.
            let kinds = matches!(
                (a.node(), b.node()),
                (Node::Int(_), Node::Int(_)) | (Node::Long(_), Node::Long(_))
            );
            if int_le(a) != int_le(b) || (!how.ints_by_value && !kinds) {
                return fail("ints differ");
            }
        }
        (Node::Bytes(x), _) if how.bytes_reduced && !matches!(b.node(), Node::Bytes(_)) => {
            let ok = b.as_bytes().is_some_and(|y| y == *x)
                || (x.is_empty()
                    && b.as_object()
                        .is_some_and(|o| o.class_path() == Some(("__builtin__", "str"))));
            if !ok {
                return fail("reduced bytes differ");
            }
        }
        (Node::Float(x), Node::Float(y)) => {
            if x.to_bits() != y.to_bits() {
                return fail("floats differ");
            }
        }
        (Node::Tuple(x), Node::Tuple(y))
        | (Node::List(x), Node::List(y))
        | (Node::Set(x), Node::Set(y))
        | (Node::FrozenSet(x), Node::FrozenSet(y)) => seq(x, y, fwd, back)?,
        (Node::Dict(x), Node::Dict(y)) => pairs(x, y, fwd, back)?,
        (Node::Global(_), Node::Global(_)) => {
            if a.as_global() != b.as_global() {
                return fail("globals differ");
            }
        }
        (Node::PersistentId(x), Node::PersistentId(y)) => same(
            a.graph().value(*x),
            b.graph().value(*y),
            how,
            fwd,
            back,
            depth + 1,
        )?,
        (Node::Object(x), Node::Object(y)) => {
            if x.kind != y.kind {
                return fail("object kinds differ");
            }
            same(
                a.graph().value(x.class),
                b.graph().value(y.class),
                how,
                fwd,
                back,
                depth + 1,
            )?;
            if matches!(x.kind, ObjectKind::Inst | ObjectKind::Obj) {
                // The argument tuple is made by the decoder, not memoized.
                let (Some(p), Some(q)) = (
                    a.graph().value(x.args).as_tuple(),
                    b.graph().value(y.args).as_tuple(),
                ) else {
                    return fail("arguments are not tuples");
                };
                seq(p.ids(), q.ids(), fwd, back)?;
            } else {
                same(
                    a.graph().value(x.args),
                    b.graph().value(y.args),
                    how,
                    fwd,
                    back,
                    depth + 1,
                )?;
            }
            match (x.state, y.state) {
                (None, None) => {}
                (Some(p), Some(q)) => same(
                    a.graph().value(p),
                    b.graph().value(q),
                    how,
                    fwd,
                    back,
                    depth + 1,
                )?,
                _ => return fail("states differ"),
            }
            seq(&x.list_items, &y.list_items, fwd, back)?;
            pairs(&x.dict_items, &y.dict_items, fwd, back)?;
        }
        (x, y) => {
            if x != y {
                return fail("values differ");
            }
        }
    }
    Ok(())
}

/// An int of either kind as minimal little-endian bytes.
fn int_le(v: Value<'_>) -> Vec<u8> {
    let mut le = match v.node() {
        Node::Int(i) => i.to_le_bytes().to_vec(),
        Node::Long(b) => b.to_vec(),
        _ => return Vec::new(),
    };
    while let [.., prev, last] = le.as_slice() {
        if (*last == 0 && prev & 0x80 == 0) || (*last == 0xff && prev & 0x80 != 0) {
            le.pop();
        } else {
            break;
        }
    }
    if le == [0] {
        le.clear();
    }
    le
}
