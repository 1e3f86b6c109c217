//! The decoded object graph.
//!
//! Pickles memoize values by identity, mutate containers after memoizing them
//! (EMPTY_DICT, BINPUT, MARK ... SETITEMS), may share one value in several
//! places and can even be cyclic. A tree of owned values can express none of
//! that, so values live in an arena ([`Graph`]) and refer to each other by
//! [`NodeId`]. Keeping identity also lets an encoder reproduce CPython's memo
//! PUTs and GETs byte for byte.
//!
//! [`Value`] is the borrowed, ergonomic view: typed accessors that accept
//! every spelling a Python 2 or Python 3 writer uses for the same thing, and
//! a `Debug` that prints something close to Python's `repr`.

use std::fmt;

use bytes::Bytes;

use super::pytext;
use crate::Oid;

/// Identity of one value in a [`Graph`]. Ids are only meaningful for the
/// graph that issued them; using one with another graph panics or gives a
/// wrong value, as with any arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

impl NodeId {
    /// Position in [`Graph::nodes`]: ids are issued in creation order, which
    /// for a decoded pickle is the order the values appear in the stream.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One Python value. Strings keep the three kinds apart that Python 2 and 3
/// data mix (spec pickles.md §5): `bytes`, Python 2 `str` of unknown
/// encoding, and text.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// `None`.
    None,
    /// `True`/`False` (NEWTRUE/NEWFALSE, or text `I01`/`I00`).
    Bool(bool),
    /// An int from INT or BININT*; in Python 2 terms an `int`.
    Int(i64),
    /// An int from LONG, LONG1 or LONG4 (a Python 2 `long`), as
    /// little-endian two's-complement bytes, the way LONG1 stores it (empty
    /// is 0). Kept apart from [`Node::Int`] so a Python 2 `long` stays one.
    Long(Bytes),
    /// A float.
    Float(f64),
    /// Python 3 `bytes` (BINBYTES family).
    Bytes(Bytes),
    /// Python 2 `str` (STRING/BINSTRING/SHORT_BINSTRING): raw bytes whose
    /// encoding nobody recorded.
    Str(Bytes),
    /// Text (Python 3 `str`, Python 2 `unicode`), in UTF-8 where lone
    /// surrogates, which Python allows, are encoded like other code points
    /// (Python's `surrogatepass`).
    Unicode(Bytes),
    /// `bytearray` (protocol 5 BYTEARRAY8).
    ByteArray(Bytes),
    /// A tuple.
    Tuple(Vec<NodeId>),
    /// A list.
    List(Vec<NodeId>),
    /// A dict as its SETITEM(S) sequence: a repeated key is kept twice, and
    /// the last one is the value Python ends up with.
    Dict(Vec<(NodeId, NodeId)>),
    /// A set (protocol 4).
    Set(Vec<NodeId>),
    /// A frozenset (protocol 4).
    FrozenSet(Vec<NodeId>),
    /// A class or function named by GLOBAL or STACK_GLOBAL (never imported).
    Global(GlobalName),
    /// An instance built by REDUCE, NEWOBJ, INST or OBJ.
    Object(Box<Object>),
    /// A persistent id (PERSID/BINPERSID) wrapping the id value; ZODB's
    /// forms are interpreted by [`Value::persistent_ref`].
    PersistentId(NodeId),
}

/// `module` and `name` of a GLOBAL, kept as one zero-copy slice of the
/// pickle (`module\nname`) so a class reference costs no allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct GlobalName {
    text: Bytes,
    module_len: usize,
}

impl GlobalName {
    /// A global from its two parts.
    pub fn new(module: &str, name: &str) -> GlobalName {
        GlobalName {
            text: Bytes::from(format!("{module}\n{name}")),
            module_len: module.len(),
        }
    }

    /// From `module\nname` already in a buffer; `None` unless both parts are
    /// UTF-8.
    pub(crate) fn from_text(text: Bytes, module_len: usize) -> Option<GlobalName> {
        let (module, rest) = text.split_at_checked(module_len)?;
        let name = rest.strip_prefix(b"\n")?;
        (std::str::from_utf8(module).is_ok() && std::str::from_utf8(name).is_ok())
            .then_some(GlobalName { text, module_len })
    }

    /// The module, e.g. `BTrees.IOBTree`.
    pub fn module(&self) -> &str {
        let module = self.text.get(..self.module_len).unwrap_or_default();
        std::str::from_utf8(module).unwrap_or_default()
    }

    /// The name inside the module, e.g. `IOBucket`.
    pub fn name(&self) -> &str {
        let name = self.text.get(self.module_len + 1..).unwrap_or_default();
        std::str::from_utf8(name).unwrap_or_default()
    }

    /// `module\nname` as GLOBAL writes it, without the UTF-8 checks of
    /// [`module`](Self::module) and [`name`](Self::name) (the encoder's
    /// hot path).
    pub(crate) fn text(&self) -> &[u8] {
        &self.text
    }
}

impl fmt::Debug for GlobalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module(), self.name())
    }
}

/// How an [`Object`] was made; an encoder needs it to write the same opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// `callable(*args)` (REDUCE), e.g. `copy_reg._reconstructor` or `set`.
    Reduce,
    /// `cls.__new__(cls, *args)` (NEWOBJ, protocol 2).
    NewObj,
    /// `cls.__new__(cls, *args, **kwargs)` (NEWOBJ_EX, protocol 4).
    NewObjEx,
    /// Protocol 0 INST: the class is named inline, args come from a MARK.
    Inst,
    /// Protocol 1 OBJ: class and args come from a MARK.
    Obj,
}

/// An instance, with what BUILD, APPEND(S) and SETITEM(S) did to it after
/// it was made (for example an OrderedDict gets its items by SETITEMS).
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// How it was made.
    pub kind: ObjectKind,
    /// The callable (REDUCE) or the class (the other kinds).
    pub class: NodeId,
    /// The argument tuple (for INST and OBJ a tuple made from the marked items).
    pub args: NodeId,
    /// NEWOBJ_EX keyword arguments.
    pub kwargs: Option<NodeId>,
    /// The BUILD argument, i.e. what `__setstate__` gets (the last BUILD wins).
    pub state: Option<NodeId>,
    /// Items appended by APPEND/APPENDS.
    pub list_items: Vec<NodeId>,
    /// Items set by SETITEM/SETITEMS.
    pub dict_items: Vec<(NodeId, NodeId)>,
}

/// An arena of [`Node`]s.
#[derive(Clone, Default, PartialEq)]
pub struct Graph {
    nodes: Vec<Node>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// An empty graph with room for `n` nodes.
    pub fn with_capacity(n: usize) -> Graph {
        Graph {
            nodes: Vec::with_capacity(n),
        }
    }

    /// Adds a node. Panics past 2^32 - 1 nodes (the decoder reports that as
    /// an error instead).
    pub fn push(&mut self, node: Node) -> NodeId {
        self.try_push(node)
            .expect("pickle graph holds at most u32::MAX nodes")
    }

    pub(crate) fn try_push(&mut self, node: Node) -> Option<NodeId> {
        let id = NodeId(
            u32::try_from(self.nodes.len())
                .ok()
                .filter(|&n| n < u32::MAX)?,
        );
        self.nodes.push(node);
        Some(id)
    }

    /// The node `id` names.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node `id` names, to change it (the decoder fills containers this way).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// The value `id` names.
    pub fn value(&self, id: NodeId) -> Value<'_> {
        Value { graph: self, id }
    }

    /// All values in creation order, which for a decoded pickle is the order
    /// in which their opcodes appear (so, for example, persistent ids come in
    /// the order `referencesf` reports them).
    pub fn values(&self) -> impl ExactSizeIterator<Item = Value<'_>> + '_ {
        (0..self.nodes.len() as u32).map(move |i| self.value(NodeId(i)))
    }

    /// All nodes in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.nodes.iter().enumerate())
            .finish()
    }
}

/// A value in a graph: a node plus the graph to resolve its children.
#[derive(Clone, Copy)]
pub struct Value<'g> {
    graph: &'g Graph,
    id: NodeId,
}

impl<'g> Value<'g> {
    /// The value's identity.
    pub fn id(self) -> NodeId {
        self.id
    }

    /// The graph it lives in.
    pub fn graph(self) -> &'g Graph {
        self.graph
    }

    /// The raw node.
    pub fn node(self) -> &'g Node {
        self.graph.node(self.id)
    }

    fn at(self, id: NodeId) -> Value<'g> {
        Value {
            graph: self.graph,
            id,
        }
    }

    /// Whether this is `None`.
    pub fn is_none(self) -> bool {
        matches!(self.node(), Node::None)
    }

    /// A bool.
    pub fn as_bool(self) -> Option<bool> {
        match self.node() {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An int of either kind that fits in i64 (bools are not ints here).
    pub fn as_int(self) -> Option<i64> {
        match self.node() {
            Node::Int(v) => Some(*v),
            Node::Long(b) => pytext::le_to_i64(b),
            _ => None,
        }
    }

    /// A float (ints are not converted).
    pub fn as_f64(self) -> Option<f64> {
        match self.node() {
            Node::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// Binary data in any spelling writers use: `bytes`, Python 2 `str`,
    /// `bytearray`, and what Python 3 writes for bytes at protocols < 3:
    /// `_codecs.encode(text, 'latin1')` and, for empty bytes,
    /// `__builtin__.bytes()`. Zero-copy except for non-ASCII latin1 text.
    pub fn as_bytes(self) -> Option<Bytes> {
        match self.node() {
            Node::Bytes(b) | Node::Str(b) | Node::ByteArray(b) => Some(b.clone()),
            Node::Object(obj) => self.reduced_bytes(obj),
            _ => None,
        }
    }

    fn reduced_bytes(self, obj: &'g Object) -> Option<Bytes> {
        if obj.kind != ObjectKind::Reduce
            || obj.state.is_some()
            || !obj.list_items.is_empty()
            || !obj.dict_items.is_empty()
        {
            return None;
        }
        let args = self.at(obj.args).as_tuple()?;
        match self.at(obj.class).as_global()? {
            ("_codecs", "encode") if args.len() == 2 => {
                let (text, encoding) = (args.get(0)?, args.get(1)?);
                if !matches!(encoding.as_text()?, "latin1" | "latin-1") {
                    return None;
                }
                let Node::Unicode(utf8) = text.node() else {
                    return None;
                };
                if utf8.is_ascii() {
                    return Some(utf8.clone());
                }
                pytext::CodePoints(utf8)
                    .map(|cp| u8::try_from(cp).ok())
                    .collect::<Option<Vec<u8>>>()
                    .map(Bytes::from)
            }
            ("__builtin__" | "builtins", "bytes") if args.is_empty() => Some(Bytes::new()),
            _ => None,
        }
    }

    /// Text: `str`/`unicode` without lone surrogates, or a Python 2 `str`
    /// that is valid UTF-8 (ASCII included).
    pub fn as_text(self) -> Option<&'g str> {
        match self.node() {
            Node::Unicode(b) | Node::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The items of a tuple.
    pub fn as_tuple(self) -> Option<Seq<'g>> {
        match self.node() {
            Node::Tuple(ids) => Some(self.seq(ids)),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(self) -> Option<Seq<'g>> {
        match self.node() {
            Node::List(ids) => Some(self.seq(ids)),
            _ => None,
        }
    }

    /// The items of a set or frozenset.
    pub fn as_set(self) -> Option<Seq<'g>> {
        match self.node() {
            Node::Set(ids) | Node::FrozenSet(ids) => Some(self.seq(ids)),
            _ => None,
        }
    }

    fn seq(self, ids: &'g [NodeId]) -> Seq<'g> {
        Seq {
            graph: self.graph,
            ids,
        }
    }

    /// The items of a dict, in SETITEM order.
    pub fn dict_items(self) -> Option<DictItems<'g>> {
        match self.node() {
            Node::Dict(items) => Some(DictItems {
                graph: self.graph,
                items,
            }),
            _ => None,
        }
    }

    /// `d[key]` for a dict whose keys are text (`str` or Python 2 `str`);
    /// the last SETITEM of a key wins, as in Python.
    pub fn dict_get(self, key: &str) -> Option<Value<'g>> {
        self.dict_items()?.get(key)
    }

    /// `(module, name)` of a GLOBAL.
    pub fn as_global(self) -> Option<(&'g str, &'g str)> {
        match self.node() {
            Node::Global(g) => Some((g.module(), g.name())),
            _ => None,
        }
    }

    /// An instance made by REDUCE, NEWOBJ, INST or OBJ.
    pub fn as_object(self) -> Option<ObjectView<'g>> {
        match self.node() {
            Node::Object(obj) => Some(ObjectView {
                graph: self.graph,
                id: self.id,
                obj,
            }),
            _ => None,
        }
    }

    /// The id value of a persistent reference, uninterpreted.
    pub fn as_persistent_id(self) -> Option<Value<'g>> {
        match self.node() {
            Node::PersistentId(pid) => Some(self.at(*pid)),
            _ => None,
        }
    }

    /// The persistent reference, interpreted as ZODB's
    /// `ObjectReader._persistent_load` does (spec pickles.md §4).
    pub fn persistent_ref(self) -> Result<PersistentRef<'g>, RefError> {
        let pid = self.as_persistent_id().ok_or(RefError::NotPersistent)?;
        PersistentRef::from_pid(pid)
    }

    /// [`persistent_ref`](Self::persistent_ref), or `None` for anything else
    /// or a malformed reference.
    pub fn as_persistent_ref(self) -> Option<PersistentRef<'g>> {
        self.persistent_ref().ok()
    }
}

/// The items of a tuple, list or set.
#[derive(Clone, Copy)]
pub struct Seq<'g> {
    graph: &'g Graph,
    ids: &'g [NodeId],
}

impl<'g> Seq<'g> {
    /// Number of items.
    pub fn len(self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.ids.is_empty()
    }

    /// Item `i`.
    pub fn get(self, i: usize) -> Option<Value<'g>> {
        Some(self.graph.value(*self.ids.get(i)?))
    }

    /// The items' ids.
    pub fn ids(self) -> &'g [NodeId] {
        self.ids
    }

    /// The items.
    pub fn iter(self) -> SeqIter<'g> {
        SeqIter {
            graph: self.graph,
            ids: self.ids.iter(),
        }
    }
}

impl<'g> IntoIterator for Seq<'g> {
    type Item = Value<'g>;
    type IntoIter = SeqIter<'g>;
    fn into_iter(self) -> SeqIter<'g> {
        self.iter()
    }
}

/// Iterator over a [`Seq`].
#[derive(Clone, Debug)]
pub struct SeqIter<'g> {
    graph: &'g Graph,
    ids: std::slice::Iter<'g, NodeId>,
}

impl<'g> Iterator for SeqIter<'g> {
    type Item = Value<'g>;

    fn next(&mut self) -> Option<Value<'g>> {
        Some(self.graph.value(*self.ids.next()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ids.size_hint()
    }
}

impl DoubleEndedIterator for SeqIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        Some(self.graph.value(*self.ids.next_back()?))
    }
}

impl ExactSizeIterator for SeqIter<'_> {}

impl fmt::Debug for Seq<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The (key, value) pairs of a dict or of an object's SETITEMs.
#[derive(Clone)]
pub struct DictItems<'g> {
    graph: &'g Graph,
    items: &'g [(NodeId, NodeId)],
}

impl<'g> DictItems<'g> {
    /// The value of the last pair whose key is the text `key`.
    pub fn get(&self, key: &str) -> Option<Value<'g>> {
        let (_, v) = self
            .items
            .iter()
            .rev()
            .find(|(k, _)| self.graph.value(*k).as_text() == Some(key))?;
        Some(self.graph.value(*v))
    }

    /// The pairs' ids.
    pub fn ids(&self) -> &'g [(NodeId, NodeId)] {
        self.items
    }
}

impl<'g> Iterator for DictItems<'g> {
    type Item = (Value<'g>, Value<'g>);

    fn next(&mut self) -> Option<Self::Item> {
        let ((k, v), rest) = self.items.split_first()?;
        self.items = rest;
        Some((self.graph.value(*k), self.graph.value(*v)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.items.len(), Some(self.items.len()))
    }
}

impl ExactSizeIterator for DictItems<'_> {}

impl fmt::Debug for DictItems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.clone()).finish()
    }
}

/// An [`Object`] with its graph.
#[derive(Clone, Copy)]
pub struct ObjectView<'g> {
    graph: &'g Graph,
    id: NodeId,
    obj: &'g Object,
}

impl<'g> ObjectView<'g> {
    /// How it was made.
    pub fn kind(self) -> ObjectKind {
        self.obj.kind
    }

    /// The callable or class.
    pub fn class(self) -> Value<'g> {
        self.graph.value(self.obj.class)
    }

    /// `(module, name)` when the callable or class is a GLOBAL.
    pub fn class_path(self) -> Option<(&'g str, &'g str)> {
        self.class().as_global()
    }

    /// The arguments.
    pub fn args(self) -> Value<'g> {
        self.graph.value(self.obj.args)
    }

    /// NEWOBJ_EX keyword arguments.
    pub fn kwargs(self) -> Option<Value<'g>> {
        Some(self.graph.value(self.obj.kwargs?))
    }

    /// What BUILD gave `__setstate__`.
    pub fn state(self) -> Option<Value<'g>> {
        Some(self.graph.value(self.obj.state?))
    }

    /// Items added by APPEND(S).
    pub fn list_items(self) -> Seq<'g> {
        Seq {
            graph: self.graph,
            ids: &self.obj.list_items,
        }
    }

    /// Items added by SETITEM(S).
    pub fn dict_items(self) -> DictItems<'g> {
        DictItems {
            graph: self.graph,
            items: &self.obj.dict_items,
        }
    }
}

impl fmt::Debug for ObjectView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.graph.value(self.id), f)
    }
}

/// A ZODB persistent reference (spec pickles.md §4).
#[derive(Clone, Copy, Debug)]
pub enum PersistentRef<'g> {
    /// `(oid, klass)` or a bare oid: an ordinary reference. `class` is what
    /// the writer cached so a ghost can be made without loading: normally a
    /// GLOBAL, in old data a `(module, name)` tuple.
    Oid {
        /// The target.
        oid: Oid,
        /// The cached class, `None` for a bare oid.
        class: Option<Value<'g>>,
    },
    /// `['w', (oid,)]`, `['w', (oid, database)]` or the legacy `[oid]`: a
    /// `persistent.wref.WeakRef`.
    Weak {
        /// The target.
        oid: Oid,
        /// The other database, if the target is not in this one.
        database: Option<&'g str>,
    },
    /// `['n', (database, oid)]` or `['m', (database, oid, klass)]`: a
    /// reference into another database of a multi-database.
    Multi {
        /// The other database.
        database: &'g str,
        /// The target.
        oid: Oid,
        /// The cached class (`'m'` form only).
        class: Option<Value<'g>>,
    },
}

/// Why a value is not a usable persistent reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The value is no persistent id at all.
    #[error("not a persistent reference")]
    NotPersistent,
    /// The id value has none of ZODB's shapes.
    #[error("persistent id of unknown form: {0}")]
    Form(&'static str),
    /// The oid is not 8 bytes.
    #[error("persistent reference oid is {0} bytes, not 8")]
    OidLength(usize),
}

impl<'g> PersistentRef<'g> {
    /// Interprets a persistent id value.
    pub fn from_pid(pid: Value<'g>) -> Result<PersistentRef<'g>, RefError> {
        if let Some(t) = pid.as_tuple() {
            let [oid, class] = t.ids() else {
                return Err(RefError::Form("tuple is not (oid, class)"));
            };
            return Ok(PersistentRef::Oid {
                oid: oid_of(pid.at(*oid))?,
                class: Some(pid.at(*class)),
            });
        }
        if let Some(list) = pid.as_list() {
            let weak = |oid, database| Ok(PersistentRef::Weak { oid, database });
            return match list.ids() {
                [oid] => weak(oid_of(pid.at(*oid))?, None),
                [kind, args] => {
                    let args = pid.at(*args);
                    let args = args
                        .as_tuple()
                        .or_else(|| args.as_list())
                        .ok_or(RefError::Form("reference arguments are not a tuple"))?;
                    let text = |v: Value<'g>| {
                        v.as_text()
                            .ok_or(RefError::Form("database name is not text"))
                    };
                    match (pid.at(*kind).as_text(), args.ids()) {
                        (Some("w"), [oid]) => weak(oid_of(pid.at(*oid))?, None),
                        (Some("w"), [oid, db]) => {
                            weak(oid_of(pid.at(*oid))?, Some(text(pid.at(*db))?))
                        }
                        (Some("n"), [db, oid]) => Ok(PersistentRef::Multi {
                            database: text(pid.at(*db))?,
                            oid: oid_of(pid.at(*oid))?,
                            class: None,
                        }),
                        (Some("m"), [db, oid, class]) => Ok(PersistentRef::Multi {
                            database: text(pid.at(*db))?,
                            oid: oid_of(pid.at(*oid))?,
                            class: Some(pid.at(*class)),
                        }),
                        _ => Err(RefError::Form("list is not ['w'|'n'|'m', args]")),
                    }
                }
                _ => Err(RefError::Form("list is not [oid] or [kind, args]")),
            };
        }
        Ok(PersistentRef::Oid {
            oid: oid_of(pid)?,
            class: None,
        })
    }

    /// The target oid.
    pub fn oid(&self) -> Oid {
        match self {
            PersistentRef::Oid { oid, .. }
            | PersistentRef::Weak { oid, .. }
            | PersistentRef::Multi { oid, .. } => *oid,
        }
    }

    /// `(module, name)` of the cached class, from a GLOBAL or an old
    /// `(module, name)` tuple.
    pub fn class_path(&self) -> Option<(&'g str, &'g str)> {
        let class = match self {
            PersistentRef::Oid { class, .. } | PersistentRef::Multi { class, .. } => (*class)?,
            PersistentRef::Weak { .. } => return None,
        };
        class.as_global().or_else(|| {
            let t = class.as_tuple().filter(|t| t.len() == 2)?;
            Some((t.get(0)?.as_text()?, t.get(1)?.as_text()?))
        })
    }
}

/// An oid as ZODB accepts it: bytes, a Python 2 str (its raw bytes), or
/// ASCII text; 8 bytes long.
fn oid_of(v: Value<'_>) -> Result<Oid, RefError> {
    let raw: &[u8] = match v.node() {
        Node::Bytes(b) | Node::Str(b) => b,
        Node::Unicode(b) if b.is_ascii() => b,
        // Python 3 below protocol 3 pickles bytes as
        // `_codecs.encode(text, 'latin1')`, which loading turns into bytes.
        _ => {
            let b = v.as_bytes().ok_or(RefError::Form("oid is not bytes"))?;
            return Oid::from_slice(&b).ok_or(RefError::OidLength(b.len()));
        }
    };
    Oid::from_slice(raw).ok_or(RefError::OidLength(raw.len()))
}

/// Deeper values print as `…`: Debug must not overflow the stack on a
/// hostile, deeply nested graph.
const DEBUG_DEPTH: usize = 48;
/// Longer binary strings are cut, so a 2 MiB block prints as one line.
const DEBUG_BYTES: usize = 64;

/// Close to Python's `repr`, with these differences: a Python 2 `str` prints
/// as `s'...'`, a global as `module.name`, an object as
/// `callable(args...)` followed by `.__setstate__(state)` and the items it
/// got, a persistent reference as `ref(oid class)` (`wref`, `xref` for weak
/// and multi-database ones), and long strings are cut.
impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        repr(&mut out, *self, &mut Vec::new());
        f.write_str(&out)
    }
}

fn repr(out: &mut String, v: Value<'_>, path: &mut Vec<NodeId>) {
    use std::fmt::Write as _;
    if path.contains(&v.id) {
        // What Python prints for a container met again inside itself.
        out.push_str(match v.node() {
            Node::List(_) => "[...]",
            Node::Dict(_) => "{...}",
            _ => "...",
        });
        return;
    }
    if path.len() >= DEBUG_DEPTH {
        out.push('…');
        return;
    }
    path.push(v.id);
    let items = |out: &mut String, ids: &[NodeId], path: &mut Vec<NodeId>| {
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            repr(out, v.at(*id), path);
        }
    };
    let pairs = |out: &mut String, kv: &[(NodeId, NodeId)], path: &mut Vec<NodeId>| {
        for (i, (k, val)) in kv.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            repr(out, v.at(*k), path);
            out.push_str(": ");
            repr(out, v.at(*val), path);
        }
    };
    let binary = |out: &mut String, prefix: &str, b: &Bytes| {
        out.push_str(prefix);
        pytext::repr_bytes_quoted(out, b.get(..DEBUG_BYTES).unwrap_or(b));
        if b.len() > DEBUG_BYTES {
            let _ = write!(out, "...({} bytes)", b.len());
        }
    };
    match v.node() {
        Node::None => out.push_str("None"),
        Node::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Long(b) => match pytext::le_to_decimal(b) {
            Some(s) => out.push_str(&s),
            None => {
                let _ = write!(out, "<int of {} bytes>", b.len());
            }
        },
        Node::Float(x) => out.push_str(&pytext::repr_float(*x)),
        Node::Bytes(b) => binary(out, "b", b),
        Node::Str(b) => binary(out, "s", b),
        Node::Unicode(b) => {
            let cut = b.len() > 4 * DEBUG_BYTES;
            let shown = if cut {
                b.get(..4 * DEBUG_BYTES).unwrap_or(b)
            } else {
                b
            };
            pytext::repr_str(out, pytext::CodePoints(shown));
            if cut {
                let _ = write!(out, "...({} bytes)", b.len());
            }
        }
        Node::ByteArray(b) => {
            binary(out, "bytearray(b", b);
            out.push(')');
        }
        Node::Tuple(ids) => {
            out.push('(');
            items(out, ids, path);
            if ids.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Node::List(ids) => {
            out.push('[');
            items(out, ids, path);
            out.push(']');
        }
        Node::Dict(kv) => {
            out.push('{');
            pairs(out, kv, path);
            out.push('}');
        }
        Node::Set(ids) | Node::FrozenSet(ids) => {
            let frozen = matches!(v.node(), Node::FrozenSet(_));
            match (frozen, ids.is_empty()) {
                (false, true) => out.push_str("set()"),
                (true, true) => out.push_str("frozenset()"),
                _ => {
                    out.push_str(if frozen { "frozenset({" } else { "{" });
                    items(out, ids, path);
                    out.push_str(if frozen { "})" } else { "}" });
                }
            }
        }
        Node::Global(g) => {
            let _ = write!(out, "{g:?}");
        }
        Node::Object(obj) => {
            repr(out, v.at(obj.class), path);
            if matches!(obj.kind, ObjectKind::NewObj | ObjectKind::NewObjEx) {
                out.push_str(".__new__");
            }
            match v.at(obj.args).node() {
                Node::Tuple(ids) => {
                    out.push('(');
                    items(out, ids, path);
                }
                _ => {
                    out.push_str("(*");
                    repr(out, v.at(obj.args), path);
                }
            }
            if let Some(kw) = obj.kwargs {
                out.push_str(", **");
                repr(out, v.at(kw), path);
            }
            out.push(')');
            if let Some(state) = obj.state {
                out.push_str(".__setstate__(");
                repr(out, v.at(state), path);
                out.push(')');
            }
            if !obj.list_items.is_empty() {
                out.push_str(".extend([");
                items(out, &obj.list_items, path);
                out.push_str("])");
            }
            if !obj.dict_items.is_empty() {
                out.push_str(".update({");
                pairs(out, &obj.dict_items, path);
                out.push_str("})");
            }
        }
        Node::PersistentId(pid) => {
            let class = |out: &mut String, r: &PersistentRef<'_>| {
                if let Some((m, n)) = r.class_path() {
                    let _ = write!(out, " {m}.{n}");
                }
            };
            match v.persistent_ref() {
                Ok(r @ PersistentRef::Oid { oid, .. }) => {
                    let _ = write!(out, "ref({oid}");
                    class(out, &r);
                    out.push(')');
                }
                Ok(PersistentRef::Weak { oid, database }) => {
                    let _ = write!(out, "wref({oid}");
                    if let Some(db) = database {
                        let _ = write!(out, " {db:?}");
                    }
                    out.push(')');
                }
                Ok(r @ PersistentRef::Multi { database, oid, .. }) => {
                    let _ = write!(out, "xref({database:?} {oid}");
                    class(out, &r);
                    out.push(')');
                }
                Err(_) => {
                    out.push_str("persistent_id(");
                    repr(out, v.at(*pid), path);
                    out.push(')');
                }
            }
        }
    }
    path.pop();
}
