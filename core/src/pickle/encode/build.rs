//! Building graphs to encode, with identity where Python has it.
//!
//! The encoder memoizes by identity, so what shares a node decides which
//! values are written once and fetched again. Python code shares without
//! saying so: an object's `_p_oid` is one `bytes` object however many
//! references point at it, a class is one object, attribute names are
//! interned strings. [`GraphBuilder`] caches those, and makes fresh nodes
//! for what Python makes afresh (ZODB's `persistent_id` returns a new
//! `(oid, class)` tuple on every call).

use std::collections::HashMap;

use bytes::Bytes;

use crate::Oid;
use crate::pickle::value::{GlobalName, Graph, Node, NodeId, Object, ObjectKind};

/// Builds a [`Graph`] value by value, sharing nodes where Python shares
/// objects.
///
/// ```
/// use zodb_core::Oid;
/// use zodb_core::pickle::{Dialect, GraphBuilder, encode_record};
///
/// // A ZBigFile record: class, then (blksize, <ref to its LOBTree>).
/// let mut b = GraphBuilder::new();
/// let class = b.global("wendelin.bigfile.file_zodb", "ZBigFile");
/// let tree = b.global("BTrees.LOBTree", "LOBTree");
/// let blksize = b.int(2 * 1024 * 1024);
/// let blktab = b.reference(Oid(71), tree);
/// let state = b.tuple([blksize, blktab]);
/// let graph = b.into_graph();
/// let record = encode_record(&graph, class, state, Dialect::PY3)?;
/// assert!(record.ends_with(b"LOBTree\nq\x02\x86q\x03Q\x86q\x04."));
/// # Ok::<(), zodb_core::pickle::EncodeError>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct GraphBuilder {
    graph: Graph,
    globals: HashMap<(String, String), NodeId>,
    names: HashMap<String, NodeId>,
    oids: HashMap<Oid, NodeId>,
    py2_oids: HashMap<Oid, NodeId>,
}

impl GraphBuilder {
    /// An empty builder.
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// A builder that adds to `graph` (a decoded record, say). Its globals
    /// are reused by [`global`](Self::global).
    pub fn from_graph(graph: Graph) -> GraphBuilder {
        let mut b = GraphBuilder::new();
        for v in graph.values() {
            if let Some((m, n)) = v.as_global() {
                b.globals
                    .entry((m.to_owned(), n.to_owned()))
                    .or_insert(v.id());
            }
        }
        b.graph = graph;
        b
    }

    /// The graph so far.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph so far, to change a node (fill a container after the fact
    /// to make a cycle, set an object's state).
    pub fn graph_mut(&mut self) -> &mut Graph {
        &mut self.graph
    }

    /// The finished graph.
    pub fn into_graph(self) -> Graph {
        self.graph
    }

    /// Adds any node.
    pub fn push(&mut self, node: Node) -> NodeId {
        self.graph.push(node)
    }

    /// `None`.
    pub fn none(&mut self) -> NodeId {
        self.push(Node::None)
    }

    /// A bool.
    pub fn bool(&mut self, v: bool) -> NodeId {
        self.push(Node::Bool(v))
    }

    /// An int (for Python 2, an `int`).
    pub fn int(&mut self, v: i64) -> NodeId {
        self.push(Node::Int(v))
    }

    /// A Python 2 `long` (for Python 3 just an int), from its little-endian
    /// two's-complement bytes.
    pub fn long(&mut self, le: impl Into<Bytes>) -> NodeId {
        self.push(Node::Long(le.into()))
    }

    /// An int of any size given as an i128 (a Python 3 int; for Python 2 a
    /// `long`).
    pub fn big_int(&mut self, v: i128) -> NodeId {
        self.long(Bytes::copy_from_slice(&v.to_le_bytes()))
    }

    /// A float.
    pub fn float(&mut self, v: f64) -> NodeId {
        self.push(Node::Float(v))
    }

    /// `bytes` (a fresh object).
    pub fn bytes(&mut self, b: impl Into<Bytes>) -> NodeId {
        self.push(Node::Bytes(b.into()))
    }

    /// A Python 2 `str` (a fresh object).
    pub fn py2_str(&mut self, b: impl Into<Bytes>) -> NodeId {
        self.push(Node::Str(b.into()))
    }

    /// Text (a fresh object).
    pub fn text(&mut self, s: &str) -> NodeId {
        self.push(Node::Unicode(Bytes::copy_from_slice(s.as_bytes())))
    }

    /// Interned text: one node per string, as Python interns identifiers
    /// (attribute names, keyword-like dict keys written in source code).
    pub fn name(&mut self, s: &str) -> NodeId {
        if let Some(&id) = self.names.get(s) {
            return id;
        }
        let id = self.text(s);
        self.names.insert(s.to_owned(), id);
        id
    }

    /// A tuple.
    pub fn tuple(&mut self, items: impl IntoIterator<Item = NodeId>) -> NodeId {
        self.push(Node::Tuple(items.into_iter().collect()))
    }

    /// A list.
    pub fn list(&mut self, items: impl IntoIterator<Item = NodeId>) -> NodeId {
        self.push(Node::List(items.into_iter().collect()))
    }

    /// A dict, items in insertion order.
    pub fn dict(&mut self, items: impl IntoIterator<Item = (NodeId, NodeId)>) -> NodeId {
        self.push(Node::Dict(items.into_iter().collect()))
    }

    /// A class or function: one node per name, as a class is one object.
    pub fn global(&mut self, module: &str, name: &str) -> NodeId {
        let key = (module.to_owned(), name.to_owned());
        if let Some(&id) = self.globals.get(&key) {
            return id;
        }
        let id = self.push(Node::Global(GlobalName::new(module, name)));
        self.globals.insert(key, id);
        id
    }

    /// An oid as Python 3 ZODB (and Python 2 from ZODB 5.4) pickles it:
    /// 8 bytes, one node per oid (the object's `_p_oid`).
    pub fn oid(&mut self, oid: Oid) -> NodeId {
        if let Some(&id) = self.oids.get(&oid) {
            return id;
        }
        let id = self.bytes(Bytes::copy_from_slice(&oid.0.to_be_bytes()));
        self.oids.insert(oid, id);
        id
    }

    /// An oid as Python 2 ZODB before 5.4 pickles it: an 8-byte `str`, one
    /// node per oid.
    pub fn py2_oid(&mut self, oid: Oid) -> NodeId {
        if let Some(&id) = self.py2_oids.get(&oid) {
            return id;
        }
        let id = self.py2_str(Bytes::copy_from_slice(&oid.0.to_be_bytes()));
        self.py2_oids.insert(oid, id);
        id
    }

    /// A persistent reference whose id value is `pid` (BINPERSID).
    pub fn persistent_id(&mut self, pid: NodeId) -> NodeId {
        self.push(Node::PersistentId(pid))
    }

    /// ZODB's ordinary reference `(oid, class)`: a fresh tuple, as
    /// `ObjectWriter.persistent_id` returns a new one on every call, around
    /// the shared oid.
    pub fn reference(&mut self, oid: Oid, class: NodeId) -> NodeId {
        let oid = self.oid(oid);
        let pid = self.tuple([oid, class]);
        self.persistent_id(pid)
    }

    /// A reference without class (the target's class has
    /// `__getnewargs__`): the oid alone.
    pub fn bare_reference(&mut self, oid: Oid) -> NodeId {
        let oid = self.oid(oid);
        self.persistent_id(oid)
    }

    /// `callable(*args)`, then `__setstate__(state)` if given (REDUCE,
    /// BUILD).
    pub fn reduce(&mut self, callable: NodeId, args: NodeId, state: Option<NodeId>) -> NodeId {
        self.object(ObjectKind::Reduce, callable, args, state)
    }

    /// `class.__new__(class, *args)`, then `__setstate__(state)` if given
    /// (NEWOBJ, BUILD; protocol 2 and up).
    pub fn new_object(&mut self, class: NodeId, args: NodeId, state: Option<NodeId>) -> NodeId {
        self.object(ObjectKind::NewObj, class, args, state)
    }

    fn object(
        &mut self,
        kind: ObjectKind,
        class: NodeId,
        args: NodeId,
        state: Option<NodeId>,
    ) -> NodeId {
        self.push(Node::Object(Box::new(Object {
            kind,
            class,
            args,
            kwargs: None,
            state,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        })))
    }
}
