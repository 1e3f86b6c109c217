//! The encoder: a [`Graph`] back to the bytes Python's pickler writes.
//!
//! Any valid pickle would load, so why imitate CPython opcode for opcode?
//! Because records are compared byte-wise all the same: a record we rewrite
//! unchanged must not look changed (to `zodb dump` diffs, to hashes, to
//! replication), databases we write must be indistinguishable from Python's,
//! and byte identity is the strongest test we can run against the real
//! implementation. So this module follows two C picklers decision by
//! decision:
//!
//! - [`Flavor::Py3`]: zodbpickle's `_pickle_33.c` under Python 3, what ZODB
//!   on Python 3 runs (`FS30` files, protocol 3). Every value but atoms is
//!   memoized; memo keys count from 0.
//! - [`Flavor::Py2`]: cPickle / zodbpickle's `_pickle_27.c` under Python 2,
//!   what wrote `FS21` files (protocol 1, 2, or 3 from ZODB 5.4 on). Memo
//!   keys count from 1, and a value Python held by a single reference is not
//!   memoized at all (`put` checks `Py_REFCNT(ob) < 2`), which a graph
//!   cannot know; see [`Encoder::py2_single_refs`] and [`unmemoized_nodes`].
//!
//! Identity is what drives the memo: a node is PUT when first written and
//! fetched with GET when met again, exactly as Python keys its memo by
//! `id(obj)`. Classes and functions ([`Node::Global`]) are keyed by name
//! instead, since in Python each name is one object, whatever number of
//! nodes spell it.
//!
//! A record is two pickles through one memo, as ZODB's `ObjectWriter` does
//! (`clear_memo()`, dump the class metadata, dump the state): see
//! [`encode_record`], or [`Encoder::dump`] twice.
//!
//! What each node becomes (protocols 1-3; PROTO opens each pickle from 2):
//!
//! - `None`, bools (NEWTRUE/NEWFALSE, `I01`/`I00` at 1), floats (BINFLOAT).
//! - [`Node::Int`]: BININT1/BININT2/BININT within 32 bits; beyond, LONG1 (or
//!   text LONG at 1) for Python 3, text INT for Python 2. [`Node::Long`]:
//!   Python 3 treats it as an int; Python 2 always writes a long.
//! - [`Node::Bytes`]: SHORT_BINBYTES/BINBYTES at 3; below, what `save_bytes`
//!   writes: `_codecs.encode(latin-1 text, 'latin1')` or `bytes()`.
//!   [`Node::Str`] (Python 2 `str`): SHORT_BINSTRING/BINSTRING, also in the
//!   Python 3 flavor, which has no such type but must keep what it read.
//!   [`Node::Unicode`]: BINUNICODE.
//! - Tuples: EMPTY_TUPLE, TUPLE1-3 from protocol 2, else MARK ... TUPLE;
//!   a tuple that contains itself through a list, dict or object is popped
//!   and fetched back (POP / POP_MARK + GET) as `save_tuple` does. Lists and
//!   dicts: EMPTY_LIST / EMPTY_DICT, then APPEND(S) / SETITEM(S) in batches
//!   of 1000, with CPython's two batching loops (a `list` or `dict`, and the
//!   iterators `__reduce__` gives for an object's items).
//! - [`Node::Global`]: GLOBAL, never STACK_GLOBAL; names are written as
//!   given (no `fix_imports` renaming except for the builtins the encoder
//!   names itself).
//! - Objects: REDUCE or NEWOBJ (as the graph says), then the object's
//!   APPENDS, SETITEMS and BUILD; OBJ and INST for Python 2 old-style
//!   instances. NEWOBJ_EX needs protocol 4: an error.
//! - [`Node::PersistentId`]: the id value, then BINPERSID; the reference
//!   itself is never memoized (ZODB's `persistent_id` makes a new tuple per
//!   reference, which is memoized like any tuple).
//! - Sets, frozensets and bytearrays (protocol 4 and 5 opcodes): the
//!   reductions Python writes at 1-3 (`set([...])`, `bytearray(b'...')`).
//!
//! The encoder is iterative (an explicit work stack), so deep graphs cannot
//! overflow the call stack, and it never panics: ids outside the graph, and
//! the graphs no pickler can write, are [`EncodeError`]s.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]
#![allow(
    clippy::little_endian_bytes,
    reason = "pickle's binary integers and lengths are little-endian"
)]

mod build;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use super::ops::{self, *};
use super::pytext;
use super::value::{Graph, Node, NodeId, ObjectKind};
use crate::pickle::error::{PickleError, PickleErrorKind};

pub use build::GraphBuilder;

/// Items per MARK ... APPENDS / SETITEMS batch, CPython's `BATCHSIZE`.
const BATCHSIZE: usize = 1000;

/// No memo entry / not being written.
const NONE_U32: u32 = u32::MAX;

/// Which Python's pickler to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// zodbpickle under Python 3: ZODB on Python 3, `FS30` files.
    Py3,
    /// cPickle, or zodbpickle under Python 2: ZODB on Python 2, `FS21`
    /// files. [`Node::Int`] is a Python 2 `int` (text INT beyond 32 bits),
    /// [`Node::Long`] a `long`, [`Node::Str`] a `str`, [`Node::Bytes`]
    /// zodbpickle's `binary`.
    Py2,
}

/// A pickler to imitate: flavor and protocol (1, 2 or 3, the protocols
/// ZODB ever wrote; 0 and 4-5 are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dialect {
    flavor: Flavor,
    protocol: u8,
}

impl Dialect {
    /// ZODB on Python 3 (`FS30`): zodbpickle, protocol 3.
    pub const PY3: Dialect = Dialect {
        flavor: Flavor::Py3,
        protocol: 3,
    };

    /// `flavor` at `protocol`.
    pub const fn new(flavor: Flavor, protocol: u8) -> Result<Dialect, EncodeError> {
        if protocol >= 1 && protocol <= 3 {
            Ok(Dialect { flavor, protocol })
        } else {
            Err(EncodeError::Protocol(protocol))
        }
    }

    /// Python 3 at `protocol`.
    pub const fn py3(protocol: u8) -> Result<Dialect, EncodeError> {
        Dialect::new(Flavor::Py3, protocol)
    }

    /// Python 2 at `protocol`: 1 for ZODB up to 5.2, 2 for 5.3, 3 (through
    /// zodbpickle) from 5.4 (spec pickles.md §5).
    pub const fn py2(protocol: u8) -> Result<Dialect, EncodeError> {
        Dialect::new(Flavor::Py2, protocol)
    }

    /// The flavor.
    pub const fn flavor(self) -> Flavor {
        self.flavor
    }

    /// The protocol.
    pub const fn protocol(self) -> u8 {
        self.protocol
    }
}

/// A graph the pickler cannot write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Only protocols 1, 2 and 3 are written.
    #[error("pickle protocol {0} is not written here (only 1, 2 and 3, what ZODB writes)")]
    Protocol(u8),
    /// An id that names no node of the graph.
    #[error("node {0:?} is not in the graph")]
    NoSuchNode(NodeId),
    /// The node is reached from itself only through values that are
    /// memoized after their contents (tuples, object constructor arguments,
    /// persistent ids): Python's pickler recurses until RecursionError.
    #[error(
        "node {0:?} contains itself through tuples, constructor arguments or persistent ids only; no pickler can write that"
    )]
    Cycle(NodeId),
    /// A string, bytes or int too long for its opcode's length field.
    #[error("{what} of {len} bytes is too large to pickle at protocols 1-3")]
    TooLarge {
        /// What it is.
        what: &'static str,
        /// Its size.
        len: usize,
    },
    /// An int of more than 4300 digits cannot be written as text (protocol
    /// 1's LONG), Python 3.11's `int` to `str` limit.
    #[error("int of more than 4300 decimal digits cannot be written as protocol 1 text")]
    IntTooLong,
    /// More memo entries than LONG_BINPUT can number.
    #[error("more than 2^32 memo entries")]
    MemoFull,
    /// Something else the node cannot be written as.
    #[error("node {0:?}: {1}")]
    Unsupported(NodeId, &'static str),
}

/// A set of nodes of one graph (a bit per node index).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    words: Vec<u64>,
}

impl NodeSet {
    /// An empty set.
    pub fn new() -> NodeSet {
        NodeSet::default()
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: NodeId) {
        self.insert_index(id.index());
    }

    fn insert_index(&mut self, i: usize) {
        let w = i / 64;
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        if let Some(word) = self.words.get_mut(w) {
            *word |= 1 << (i % 64);
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: NodeId) -> bool {
        let i = id.index();
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The number of nodes in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The node indices ([`NodeId::index`]) in the set, ascending.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            (0..64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

impl FromIterator<NodeId> for NodeSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> NodeSet {
        let mut set = NodeSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<NodeId> for NodeSet {
    fn extend<I: IntoIterator<Item = NodeId>>(&mut self, iter: I) {
        for id in iter {
            self.insert(id);
        }
    }
}

impl fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.indices()).finish()
    }
}

/// One pickle of `root` (PROTO for protocols 2 and 3, STOP at the end).
pub fn encode(graph: &Graph, root: NodeId, dialect: Dialect) -> Result<Vec<u8>, EncodeError> {
    let mut e = Encoder::new(graph, dialect);
    e.dump(root)?;
    Ok(e.into_output())
}

/// A ZODB object record: the class metadata pickle then the state pickle,
/// through one memo, as `ObjectWriter._dump` writes them (so the state may
/// BINGET the class the first pickle memoized).
pub fn encode_record(
    graph: &Graph,
    class: NodeId,
    state: NodeId,
    dialect: Dialect,
) -> Result<Vec<u8>, EncodeError> {
    let mut e = Encoder::new(graph, dialect);
    e.dump(class)?;
    e.dump(state)?;
    Ok(e.into_output())
}

/// The nodes that the pickles in `data` (`pickles` of them, from offset 0,
/// one memo) created but never memoized, by the ids [`decode`],
/// [`decode_record`] and [`Decoder`] give them. For a Python 2 pickle these
/// are the values cPickle saw with a single reference; hand them to
/// [`Encoder::py2_single_refs`] to re-encode the decoded graph to the same
/// bytes.
///
/// Works for pickles whose PUTs directly follow the opcode that made the
/// value, as every CPython pickler writes them; any other PUT is an error.
///
/// [`decode`]: super::decode
/// [`decode_record`]: super::decode_record
/// [`Decoder`]: super::Decoder
pub fn unmemoized_nodes(data: &[u8], pickles: usize) -> Result<NodeSet, PickleError> {
    let mut reader = ops::Reader::new(data, 0);
    let mut memoized = NodeSet::new();
    let mut created = 0usize;
    let mut last: Option<usize> = None;
    for _ in 0..pickles {
        loop {
            let op = reader.next_op()?;
            let code = op.info.code;
            // Nodes the decoder creates for this opcode (INST makes the
            // argument tuple, the class and the object; OBJ the arguments and
            // the object; PERSID the id string and the reference).
            let made = match code {
                INST => 3,
                OBJ | PERSID => 2,
                NONE | NEWTRUE | NEWFALSE | INT | BININT | BININT1 | BININT2 | LONG | LONG1
                | LONG4 | FLOAT | BINFLOAT | STRING | BINSTRING | SHORT_BINSTRING | BINBYTES
                | SHORT_BINBYTES | BINBYTES8 | BYTEARRAY8 | UNICODE | SHORT_BINUNICODE
                | BINUNICODE | BINUNICODE8 | EMPTY_TUPLE | TUPLE | TUPLE1 | TUPLE2 | TUPLE3
                | EMPTY_LIST | LIST | EMPTY_DICT | DICT | EMPTY_SET | FROZENSET | GLOBAL
                | STACK_GLOBAL | REDUCE | NEWOBJ | NEWOBJ_EX | BINPERSID => 1,
                _ => 0,
            };
            match code {
                PUT | BINPUT | LONG_BINPUT | MEMOIZE => {
                    let n = last.take().ok_or_else(|| {
                        op.err(PickleErrorKind::Unsupported(
                            "a memo PUT that does not follow the value it stores",
                        ))
                    })?;
                    memoized.insert_index(n);
                    continue;
                }
                STOP => break,
                _ => {}
            }
            created += made;
            last = created.checked_sub(1).filter(|_| made > 0);
        }
    }
    let mut single = NodeSet::new();
    for i in 0..created {
        if memoized
            .words
            .get(i / 64)
            .is_none_or(|w| w & (1 << (i % 64)) == 0)
        {
            single.insert_index(i);
        }
    }
    Ok(single)
}

/// Why a value is being saved, for Python 2's reference-count guess: what
/// holds the only reference to a freshly built tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The argument of `dump` (the caller holds it too).
    Root,
    /// An element of a tuple (borrowed by `store_tuple_elements`).
    Element,
    /// What `persistent_id` returned.
    Pid,
    /// REDUCE or OBJ arguments (borrowed from the `__reduce__` tuple).
    Args,
    /// NEWOBJ arguments: `argtup[1:]`, always a new tuple.
    NewArgs,
    /// A BUILD state (borrowed from the `__reduce__` tuple).
    State,
    /// Anything else: list items (the list iterator holds a reference),
    /// dict keys and values, classes, callables.
    Other,
}

/// How Python 2 decides which values had a single reference.
#[derive(Debug, Clone)]
enum Py2Refs {
    /// Tuples built on the fly (elements of tuples, persistent ids,
    /// constructor arguments and states) and zodbpickle `binary` values;
    /// the rest is assumed to be referenced from elsewhere too.
    Guess,
    /// The given nodes.
    Exact(NodeSet),
}

/// One step of the work stack (run last-in first-out).
#[derive(Debug, Clone, Copy)]
enum Task<'g> {
    /// Write a value.
    Save(NodeId, Via),
    /// Write one opcode byte.
    Op(u8),
    /// Write each value of a slice, as `Via`.
    Items(&'g [NodeId], Via),
    /// Write each key and value of a slice.
    Pairs(&'g [(NodeId, NodeId)]),
    /// A batch of list items from `start`. `exact` is `batch_list_exact`
    /// (a `list`), otherwise `batch_list` (an iterator).
    ListBatch {
        items: &'g [NodeId],
        start: usize,
        exact: bool,
    },
    /// A batch of dict items, `batch_dict_exact` or `batch_dict`.
    DictBatch {
        items: &'g [(NodeId, NodeId)],
        start: usize,
        exact: bool,
    },
    /// After a tuple's elements.
    TupleEnd { id: NodeId, via: Via, prev: u32 },
    /// After REDUCE / NEWOBJ / OBJ / INST: memoize, then items and state.
    Built { id: NodeId, via: Via, prev: u32 },
    /// The INST opcode with the class name inline.
    Inst(NodeId),
    /// After a persistent id or a container: take it off the path.
    Leave(NodeId, u32),
    /// After the items of a fresh list or tuple made for a set: close it.
    FreshTuple1,
    /// After the REDUCE of a set or frozenset: memoize it.
    ReducedSet(NodeId, Via),
}

/// Writes pickles of values of one graph through one memo, like one CPython
/// `Pickler` object: each [`dump`](Self::dump) is one pickle, and the memo
/// carries over until [`clear_memo`](Self::clear_memo).
///
/// ```
/// use zodb_core::Oid;
/// use zodb_core::pickle::{Dialect, Encoder, GraphBuilder};
///
/// // The record of a PersistentMapping {'data': {'a': <oid 5>}}, as ZODB on
/// // Python 3 writes it: the reference BINGETs the class of pickle #1, and
/// // the reference itself (Q) is not memoized, only its id tuple.
/// let mut b = GraphBuilder::new();
/// let class = b.global("persistent.mapping", "PersistentMapping");
/// let (data, a) = (b.text("data"), b.text("a"));
/// let target = b.reference(Oid(5), class);
/// let inner = b.dict([(a, target)]);
/// let state = b.dict([(data, inner)]);
/// let graph = b.into_graph();
///
/// let mut e = Encoder::new(&graph, Dialect::PY3);
/// e.dump(class)?;
/// e.dump(state)?;
/// assert_eq!(
///     e.output(),
///     b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\
///       \x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03X\x01\x00\x00\x00aq\x04\
///       C\x08\x00\x00\x00\x00\x00\x00\x00\x05q\x05h\x00\x86q\x06Qss."
/// );
/// # Ok::<(), zodb_core::pickle::EncodeError>(())
/// ```
pub struct Encoder<'g> {
    graph: &'g Graph,
    dialect: Dialect,
    out: Vec<u8>,
    /// Per node: its memo key, and its deepest position on `path`
    /// (`NONE_U32` for none). One vector, one allocation.
    slots: Vec<Slot>,
    /// Memo keys of classes and functions by name: in Python each name is
    /// one object, however many nodes spell it.
    globals: Globals<'g>,
    /// The interned `'latin1'` that Python's `save_bytes` passes to
    /// `_codecs.encode` below protocol 3: one object, so one memo entry.
    latin1: Option<u32>,
    /// Number of memo entries (Python's `len(memo)`).
    count: u32,
    py2_refs: Py2Refs,
    /// For Python 2: how many times the pickler reaches each node, up to
    /// 2. Python's reference count is at least that.
    refs: Vec<u8>,
    tasks: Vec<Task<'g>>,
    /// Nodes being written (a container's contents are not all written).
    path: Vec<NodeId>,
    /// `Pickler.fast`: memoize nothing (ZODB's `fsIndex.save`).
    fast: bool,
}

impl fmt::Debug for Encoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("dialect", &self.dialect)
            .field("written", &self.out.len())
            .field("memo", &self.count)
            .finish()
    }
}

impl<'g> Encoder<'g> {
    /// A pickler for values of `graph`, with an empty memo.
    pub fn new(graph: &'g Graph, dialect: Dialect) -> Encoder<'g> {
        Encoder::with_output(graph, dialect, Vec::new())
    }

    /// As [`new`](Self::new), appending to `out` (to reuse a buffer or
    /// write straight into a larger one).
    pub fn with_output(graph: &'g Graph, dialect: Dialect, out: Vec<u8>) -> Encoder<'g> {
        let n = graph.len();
        let mut out = out;
        // Room for a typical record at once; big strings reserve their own.
        out.reserve(n.saturating_mul(24).clamp(64, 1 << 16));
        let mut e = Encoder {
            graph,
            dialect,
            out,
            slots: vec![Slot::EMPTY; n],
            globals: Globals::default(),
            latin1: None,
            count: 0,
            py2_refs: Py2Refs::Guess,
            refs: Vec::new(),
            tasks: Vec::new(),
            path: Vec::new(),
            fast: false,
        };
        if dialect.flavor == Flavor::Py2 {
            e.refs = reference_counts(graph);
        }
        e
    }

    /// Tells the Python 2 flavor which values Python held by a single
    /// reference while pickling them; cPickle memoizes those not at all
    /// (tuples, strings, empty lists and dicts, objects without a non-dict
    /// state). Without this the encoder guesses like ZODB's own values
    /// behave: tuples made on the fly (elements of tuples, persistent ids,
    /// constructor arguments and BUILD states) and zodbpickle `binary`
    /// values have one reference, everything else more. A node the graph
    /// itself refers to twice always counts as shared. [`unmemoized_nodes`]
    /// gives the exact set for a decoded pickle. No effect on Python 3.
    pub fn py2_single_refs(&mut self, nodes: NodeSet) {
        self.py2_refs = Py2Refs::Exact(nodes);
    }

    /// Memoizes nothing from now on, like setting `Pickler.fast`: no PUT
    /// is written, so nothing is ever fetched back (ZODB writes `.index`
    /// files this way). Shared values are written again each time they are
    /// met, as CPython does in fast mode; a value containing itself is a
    /// [`EncodeError::Cycle`] (CPython: ValueError, "can't pickle cyclic
    /// objects").
    pub fn set_fast(&mut self, fast: bool) {
        self.fast = fast;
    }

    /// Forgets the memo, like `Pickler.clear_memo()`; ZODB does it before
    /// each record.
    pub fn clear_memo(&mut self) {
        self.slots.iter_mut().for_each(|s| s.memo = NONE_U32);
        self.globals.clear();
        self.latin1 = None;
        self.count = 0;
    }

    /// The bytes written so far.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The bytes written, giving up the encoder.
    pub fn into_output(self) -> Vec<u8> {
        self.out
    }

    /// Writes one pickle of `root`: PROTO (protocols 2 and 3), the value,
    /// STOP. On error the output and the memo are as they were before.
    pub fn dump(&mut self, root: NodeId) -> Result<(), EncodeError> {
        let (start, count) = (self.out.len(), self.count);
        let result = self.run(root);
        if result.is_err() {
            self.out.truncate(start);
            self.tasks.clear();
            for id in self.path.drain(..) {
                if let Some(s) = self.slots.get_mut(id.index()) {
                    s.open = NONE_U32;
                }
            }
            // Keys from `count` on (Python 2: `count + 1` on) are this
            // pickle's.
            let first = count + u32::from(self.py2());
            let new = |k: u32| k != NONE_U32 && k >= first;
            for slot in &mut self.slots {
                if new(slot.memo) {
                    slot.memo = NONE_U32;
                }
            }
            self.globals.retain(|k| !new(k));
            self.latin1 = self.latin1.filter(|&k| !new(k));
            self.count = count;
        }
        result
    }

    fn run(&mut self, root: NodeId) -> Result<(), EncodeError> {
        if self.dialect.protocol >= 2 {
            self.out.extend_from_slice(&[PROTO, self.dialect.protocol]);
        }
        self.save(root, Via::Root)?;
        while let Some(task) = self.tasks.pop() {
            self.step(task)?;
        }
        self.out.push(STOP);
        Ok(())
    }

    #[inline]
    fn py2(&self) -> bool {
        self.dialect.flavor == Flavor::Py2
    }

    #[inline]
    fn proto(&self) -> u8 {
        self.dialect.protocol
    }

    #[inline]
    fn node(&self, id: NodeId) -> Result<&'g Node, EncodeError> {
        let graph: &'g Graph = self.graph;
        graph
            .nodes()
            .get(id.index())
            .ok_or(EncodeError::NoSuchNode(id))
    }

    fn step(&mut self, task: Task<'g>) -> Result<(), EncodeError> {
        match task {
            Task::Save(id, via) => self.save(id, via)?,
            Task::Op(op) => self.out.push(op),
            // Leaves are written in place; a container pushes its own
            // tasks, which must run before the remaining items, so the
            // rest goes below them.
            Task::Items(items, via) => {
                self.items(items, via)?;
            }
            Task::Pairs(pairs) => {
                let mut rest = pairs;
                while let Some(((k, v), tail)) = rest.split_first() {
                    rest = tail;
                    let depth = self.tasks.len();
                    self.save(*k, Via::Other)?;
                    if self.tasks.len() != depth {
                        self.tasks.insert(depth, Task::Save(*v, Via::Other));
                        if !rest.is_empty() {
                            self.tasks.insert(depth, Task::Pairs(rest));
                        }
                        break;
                    }
                    self.save(*v, Via::Other)?;
                    if self.tasks.len() != depth {
                        if !rest.is_empty() {
                            self.tasks.insert(depth, Task::Pairs(rest));
                        }
                        break;
                    }
                }
            }
            Task::ListBatch {
                items,
                start,
                exact,
            } => {
                let rest = items.get(start..).unwrap_or_default();
                // batch_list_exact special-cases a one-item list;
                // batch_list a last batch of one item.
                let single = if exact {
                    items.len() == 1
                } else {
                    rest.len() == 1
                };
                if single {
                    self.tasks.push(Task::Op(APPEND));
                    self.tasks.push(Task::Items(rest, Via::Other));
                } else if !rest.is_empty() {
                    let n = rest.len().min(BATCHSIZE);
                    self.out.push(MARK);
                    if start + n < items.len() {
                        self.tasks.push(Task::ListBatch {
                            items,
                            start: start + n,
                            exact,
                        });
                    }
                    self.tasks.push(Task::Op(APPENDS));
                    self.tasks
                        .push(Task::Items(rest.get(..n).unwrap_or_default(), Via::Other));
                }
            }
            Task::DictBatch {
                items,
                start,
                exact,
            } => {
                let rest = items.get(start..).unwrap_or_default();
                let single = if exact {
                    items.len() == 1
                } else {
                    rest.len() == 1
                };
                // batch_dict_exact loops `while (i == BATCHSIZE)`: a dict of
                // a multiple of 1000 items ends with an empty MARK SETITEMS.
                if single {
                    self.tasks.push(Task::Op(SETITEM));
                    self.tasks.push(Task::Pairs(rest));
                } else if exact || !rest.is_empty() {
                    let n = rest.len().min(BATCHSIZE);
                    self.out.push(MARK);
                    if n == BATCHSIZE && (exact || start + n < items.len()) {
                        self.tasks.push(Task::DictBatch {
                            items,
                            start: start + n,
                            exact,
                        });
                    }
                    self.tasks.push(Task::Op(SETITEMS));
                    self.tasks
                        .push(Task::Pairs(rest.get(..n).unwrap_or_default()));
                }
            }
            Task::TupleEnd { id, via, prev } => self.tuple_end(id, via, prev)?,
            Task::Built { id, via, prev } => self.built(id, via, prev)?,
            Task::Inst(class) => {
                let Node::Global(g) = self.node(class)? else {
                    return Err(EncodeError::Unsupported(
                        class,
                        "INST class is not a global",
                    ));
                };
                self.global_text(class, INST, g.text())?;
            }
            Task::Leave(id, prev) => self.leave(id, prev),
            Task::FreshTuple1 => {
                self.out
                    .push(if self.proto() >= 2 { TUPLE1 } else { TUPLE });
                // A tuple only the __reduce__ result holds: Python 2 does
                // not memoize it.
                if !self.py2() {
                    self.put_fresh()?;
                }
            }
            Task::ReducedSet(id, via) => self.memoize(id, via, false)?,
        }
        Ok(())
    }

    /// Writes `items` in place as long as they are leaves (they push no
    /// tasks); at the first container, leaves the rest to a task below the
    /// container's own. Returns whether all were written.
    fn items(&mut self, items: &'g [NodeId], via: Via) -> Result<bool, EncodeError> {
        let mut rest = items;
        while let Some((first, tail)) = rest.split_first() {
            rest = tail;
            let depth = self.tasks.len();
            self.save(*first, via)?;
            if self.tasks.len() != depth {
                if !rest.is_empty() {
                    self.tasks.insert(depth, Task::Items(rest, via));
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// CPython's `save`: atoms directly, then the memo, then by type.
    fn save(&mut self, id: NodeId, via: Via) -> Result<(), EncodeError> {
        let node = self.node(id)?;
        match node {
            Node::None => self.out.push(ops::NONE),
            Node::Bool(b) => self.bool(*b),
            Node::Int(v) => self.int(*v)?,
            Node::Long(le) => self.long(le)?,
            Node::Float(x) => {
                self.out.push(BINFLOAT);
                self.out.extend_from_slice(&x.to_be_bytes());
            }
            // Python calls persistent_id before looking at the memo, and
            // does not memoize the reference (only the id value).
            Node::PersistentId(pid) => {
                let prev = self.enter(id)?;
                let depth = self.tasks.len();
                self.save(*pid, Via::Pid)?;
                if self.tasks.len() == depth {
                    self.out.push(BINPERSID);
                    self.leave(id, prev);
                } else {
                    // The id is a container still being written.
                    self.tasks.insert(depth, Task::Leave(id, prev));
                    self.tasks.insert(depth + 1, Task::Op(BINPERSID));
                }
            }
            // Python 2 writes these without looking at the memo: strings
            // shorter than 2 and zodbpickle `binary` at protocol 3.
            Node::Str(b) if self.py2() && b.len() < 2 => self.py2_str(b)?,
            Node::Unicode(b) if self.py2() && code_points_below_2(b) => self.unicode(b)?,
            Node::Bytes(b) if self.py2() && self.proto() >= 3 => self.binbytes(b)?,
            Node::Tuple(items) if items.is_empty() => self.out.push(EMPTY_TUPLE),
            _ => {
                if let Some(key) = self.memo_of(id) {
                    self.get(key);
                    return Ok(());
                }
                self.save_new(id, node, via)?;
            }
        }
        Ok(())
    }

    /// A memoizable value not in the memo yet.
    fn save_new(&mut self, id: NodeId, node: &'g Node, via: Via) -> Result<(), EncodeError> {
        match node {
            Node::Bytes(b) if self.proto() >= 3 => {
                self.binbytes(b)?;
                self.memoize(id, via, false)?;
            }
            Node::Bytes(b) => self.bytes_reduce(id, b, via)?,
            Node::Str(b) => {
                self.py2_str(b)?;
                self.memoize(id, via, false)?;
            }
            Node::Unicode(b) => {
                self.unicode(b)?;
                self.memoize(id, via, false)?;
            }
            Node::ByteArray(b) => self.bytearray(id, b, via)?,
            Node::Tuple(items) => {
                let prev = self.enter(id)?;
                if !(self.proto() >= 2 && items.len() <= 3) {
                    self.out.push(MARK);
                }
                self.tasks.push(Task::TupleEnd { id, via, prev });
                if self.items(items, Via::Element)? {
                    // Only leaves: close it now.
                    self.tasks.pop();
                    self.tuple_end(id, via, prev)?;
                }
            }
            Node::List(items) => {
                self.out.push(EMPTY_LIST);
                // Python 2 memoizes a non-empty list whatever its
                // reference count (`put2`), an empty one only if shared.
                self.memoize(id, via, !items.is_empty())?;
                if !items.is_empty() {
                    let prev = self.enter(id)?;
                    self.tasks.push(Task::Leave(id, prev));
                    // Python 2 lists go through the iterator batching.
                    let exact = !self.py2();
                    self.tasks.push(Task::ListBatch {
                        items,
                        start: 0,
                        exact,
                    });
                }
            }
            Node::Dict(items) => {
                self.out.push(EMPTY_DICT);
                self.memoize(id, via, !items.is_empty())?;
                if !items.is_empty() {
                    let prev = self.enter(id)?;
                    self.tasks.push(Task::Leave(id, prev));
                    self.tasks.push(Task::DictBatch {
                        items,
                        start: 0,
                        exact: true,
                    });
                }
            }
            Node::Set(items) | Node::FrozenSet(items) => {
                // set.__reduce__: (type, (list(self),), None).
                let name = if matches!(node, Node::Set(_)) {
                    "set"
                } else {
                    "frozenset"
                };
                let prev = self.enter(id)?;
                self.builtin_global(name)?;
                if self.proto() < 2 {
                    self.out.push(MARK);
                }
                self.out.push(EMPTY_LIST);
                // A fresh list: Python 3 memoizes it, Python 2 only when
                // non-empty (put2).
                if !self.py2() || !items.is_empty() {
                    self.put_fresh()?;
                }
                self.tasks.push(Task::Leave(id, prev));
                self.tasks.push(Task::ReducedSet(id, via));
                self.tasks.push(Task::Op(REDUCE));
                self.tasks.push(Task::FreshTuple1);
                self.tasks.push(Task::ListBatch {
                    items,
                    start: 0,
                    exact: !self.py2(),
                });
            }
            Node::Global(g) => {
                // Another node of the same name is the same class.
                let text = g.text();
                if let Some(key) = self.globals.get(text) {
                    self.get(key);
                    return Ok(());
                }
                self.global_text(id, GLOBAL, text)?;
                if !(self.py2() && self.single_ref(id, node, via)) {
                    let key = self.put_fresh()?;
                    self.globals.insert(text, key);
                    if let Some(slot) = self.slots.get_mut(id.index()) {
                        slot.memo = key;
                    }
                }
            }
            Node::Object(obj) => {
                let prev = self.enter(id)?;
                self.tasks.push(Task::Built { id, via, prev });
                match obj.kind {
                    ObjectKind::Reduce | ObjectKind::NewObj => {
                        let (op, args_via) = if obj.kind == ObjectKind::Reduce {
                            (REDUCE, Via::Args)
                        } else {
                            (NEWOBJ, Via::NewArgs)
                        };
                        self.tasks.push(Task::Op(op));
                        self.tasks.push(Task::Save(obj.args, args_via));
                        self.tasks.push(Task::Save(obj.class, Via::Other));
                    }
                    ObjectKind::Obj => {
                        let args = self.inline_args(id, obj.args)?;
                        self.out.push(MARK);
                        self.tasks.push(Task::Op(OBJ));
                        self.tasks.push(Task::Items(args, Via::Other));
                        self.tasks.push(Task::Save(obj.class, Via::Other));
                    }
                    ObjectKind::Inst => {
                        let args = self.inline_args(id, obj.args)?;
                        self.out.push(MARK);
                        self.tasks.push(Task::Inst(obj.class));
                        self.tasks.push(Task::Items(args, Via::Other));
                    }
                    ObjectKind::NewObjEx => {
                        return Err(EncodeError::Unsupported(
                            id,
                            "NEWOBJ_EX (keyword arguments to __new__) needs protocol 4",
                        ));
                    }
                }
            }
            // Atoms, persistent ids and the Python 2 special cases were
            // handled by `save`.
            Node::None
            | Node::Bool(_)
            | Node::Int(_)
            | Node::Long(_)
            | Node::Float(_)
            | Node::PersistentId(_) => {
                return Err(EncodeError::Unsupported(id, "not memoizable"));
            }
        }
        Ok(())
    }

    /// The items an OBJ or INST takes from the stack after its MARK.
    fn inline_args(&self, id: NodeId, args: NodeId) -> Result<&'g [NodeId], EncodeError> {
        match self.node(args)? {
            Node::Tuple(items) => Ok(items),
            _ => Err(EncodeError::Unsupported(
                id,
                "OBJ/INST arguments are not a tuple",
            )),
        }
    }

    /// Puts `id` on the path of values being written. A value already on it
    /// and not memoized is being written again from inside itself: Python
    /// then writes it a second time in full, which ends only if something
    /// entered since is memoized now (the repeat fetches that with a GET
    /// and stops). Otherwise Python recurses forever.
    fn enter(&mut self, id: NodeId) -> Result<u32, EncodeError> {
        let i = id.index();
        let prev = self.slots.get(i).map_or(NONE_U32, |s| s.open);
        if prev != NONE_U32 {
            let since = self.path.get(prev as usize + 1..).unwrap_or_default();
            if !since.iter().any(|n| self.memo_of(*n).is_some()) {
                return Err(EncodeError::Cycle(id));
            }
        }
        if let Some(s) = self.slots.get_mut(i) {
            s.open = u32::try_from(self.path.len()).unwrap_or(NONE_U32 - 1);
        }
        self.path.push(id);
        Ok(prev)
    }

    fn leave(&mut self, id: NodeId, prev: u32) {
        self.path.pop();
        if let Some(s) = self.slots.get_mut(id.index()) {
            s.open = prev;
        }
    }

    /// `save_tuple` after the elements: if writing them memoized the tuple
    /// itself (it contains itself through a list, dict or object), drop
    /// what was pushed and fetch it; else build it and memoize.
    fn tuple_end(&mut self, id: NodeId, via: Via, prev: u32) -> Result<(), EncodeError> {
        self.leave(id, prev);
        let Node::Tuple(items) = self.node(id)? else {
            return Err(EncodeError::Unsupported(id, "not a tuple"));
        };
        let short = self.proto() >= 2 && items.len() <= 3;
        if let Some(key) = self.memo_of(id) {
            if short {
                self.out.extend(std::iter::repeat_n(POP, items.len()));
            } else {
                self.out.push(POP_MARK);
            }
            self.get(key);
            return Ok(());
        }
        self.out.push(match (short, items.len()) {
            (true, 1) => TUPLE1,
            (true, 2) => TUPLE2,
            (true, _) => TUPLE3,
            (false, _) => TUPLE,
        });
        self.memoize(id, via, false)
    }

    /// `save_reduce` (and `save_inst`) after the object is made.
    fn built(&mut self, id: NodeId, via: Via, prev: u32) -> Result<(), EncodeError> {
        let Node::Object(obj) = self.node(id)? else {
            return Err(EncodeError::Unsupported(id, "not an object"));
        };
        // Made again while writing its own arguments: CPython's
        // save_reduce throws this copy away and fetches the inner one.
        // (zodbpickle's C pickler would PUT it a second time under a key
        // it then reuses, a pickle that loads wrong.)
        if let Some(key) = self.memo_of(id) {
            self.out.push(POP);
            self.get(key);
            self.leave(id, prev);
            return Ok(());
        }
        // Python 2 memoizes an object with a non-dict state whatever its
        // reference count (put2).
        let always = match obj.state {
            Some(s) => !matches!(self.node(s)?, Node::Dict(_)),
            None => false,
        };
        self.memoize(id, via, always)?;
        self.tasks.push(Task::Leave(id, prev));
        if let Some(state) = obj.state {
            self.tasks.push(Task::Op(BUILD));
            self.tasks.push(Task::Save(state, Via::State));
        }
        self.tasks.push(Task::DictBatch {
            items: &obj.dict_items,
            start: 0,
            exact: false,
        });
        self.tasks.push(Task::ListBatch {
            items: &obj.list_items,
            start: 0,
            exact: false,
        });
        Ok(())
    }

    fn bool(&mut self, b: bool) {
        if self.proto() >= 2 {
            self.out.push(if b { NEWTRUE } else { NEWFALSE });
        } else {
            self.out
                .extend_from_slice(if b { b"I01\n" } else { b"I00\n" });
        }
    }

    /// `save_int`: BININT1/2 for 0..65535, BININT for the rest of the
    /// signed 32 bits; beyond, Python 2 writes a text INT (its `int` has
    /// no LONG form) and Python 3 treats the value as a long.
    fn int(&mut self, v: i64) -> Result<(), EncodeError> {
        if let Ok(v32) = i32::try_from(v) {
            self.binint(v32);
        } else if self.py2() {
            self.out.push(INT);
            self.out.extend_from_slice(v.to_string().as_bytes());
            self.out.push(b'\n');
        } else {
            self.long_big(&v.to_le_bytes())?;
        }
        Ok(())
    }

    fn binint(&mut self, v: i32) {
        let b = v.to_le_bytes();
        match b {
            [x, 0, 0, 0] => self.out.extend_from_slice(&[BININT1, x]),
            [x, y, 0, 0] => self.out.extend_from_slice(&[BININT2, x, y]),
            _ => {
                self.out.push(BININT);
                self.out.extend_from_slice(&b);
            }
        }
    }

    /// `save_long`. Python 3 has one int type, so a long that fits 32 bits
    /// is a BININT; a Python 2 `long` never is.
    fn long(&mut self, le: &[u8]) -> Result<(), EncodeError> {
        let le = minimal_le(le);
        if !self.py2()
            && let Some(v) = pytext::le_to_i64(le).and_then(|v| i32::try_from(v).ok())
        {
            self.binint(v);
            return Ok(());
        }
        self.long_big(le)
    }

    fn long_big(&mut self, le: &[u8]) -> Result<(), EncodeError> {
        let le = minimal_le(le);
        if self.proto() >= 2 {
            match u8::try_from(le.len()) {
                Ok(n) => self.out.extend_from_slice(&[LONG1, n]),
                Err(_) => {
                    let n = i32::try_from(le.len()).map_err(|_| EncodeError::TooLarge {
                        what: "int",
                        len: le.len(),
                    })?;
                    self.out.push(LONG4);
                    self.out.extend_from_slice(&n.to_le_bytes());
                }
            }
            self.out.extend_from_slice(le);
        } else {
            let text = pytext::le_to_decimal(le).ok_or(EncodeError::IntTooLong)?;
            self.out.push(LONG);
            self.out.extend_from_slice(text.as_bytes());
            self.out.extend_from_slice(b"L\n");
        }
        Ok(())
    }

    /// SHORT_BINBYTES / BINBYTES: the one memcpy a big block costs.
    fn binbytes(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        self.counted(SHORT_BINBYTES, BINBYTES, b, "bytes", u32::MAX as usize)
    }

    /// SHORT_BINSTRING / BINSTRING (a Python 2 `str`; its length field is
    /// signed).
    fn py2_str(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        self.counted(SHORT_BINSTRING, BINSTRING, b, "str", i32::MAX as usize)
    }

    fn counted(
        &mut self,
        short: u8,
        long: u8,
        b: &[u8],
        what: &'static str,
        max: usize,
    ) -> Result<(), EncodeError> {
        if let Ok(n) = u8::try_from(b.len()) {
            self.out.reserve(2 + b.len());
            self.out.extend_from_slice(&[short, n]);
        } else {
            let n = u32::try_from(b.len())
                .ok()
                .filter(|_| b.len() <= max)
                .ok_or(EncodeError::TooLarge { what, len: b.len() })?;
            self.out.reserve(5 + b.len());
            self.out.push(long);
            self.out.extend_from_slice(&n.to_le_bytes());
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    /// BINUNICODE of text held as (surrogatepass) UTF-8, which is what
    /// Python writes.
    fn unicode(&mut self, utf8: &[u8]) -> Result<(), EncodeError> {
        let n = u32::try_from(utf8.len()).map_err(|_| EncodeError::TooLarge {
            what: "str",
            len: utf8.len(),
        })?;
        self.out.reserve(5 + utf8.len());
        self.out.push(BINUNICODE);
        self.out.extend_from_slice(&n.to_le_bytes());
        self.out.extend_from_slice(utf8);
        Ok(())
    }

    /// Bytes below protocol 3, which has no opcode for them: `save_bytes`
    /// reduces them to `_codecs.encode(text, 'latin1')`, or to `bytes()`
    /// (Python 2: `str()`) when empty, so that Python 2 loads a `str` and
    /// Python 3 `bytes`.
    fn bytes_reduce(&mut self, id: NodeId, b: &[u8], via: Via) -> Result<(), EncodeError> {
        if b.is_empty() {
            self.builtin_global(if self.py2() { "str" } else { "bytes" })?;
            self.out.push(EMPTY_TUPLE);
        } else {
            self.static_global(b"_codecs\nencode")?;
            if self.proto() < 2 {
                self.out.push(MARK);
            }
            self.unicode(&latin1_to_utf8(b))?;
            // The decoded text is held by the argument tuple only: Python 2
            // does not memoize it; Python 3 memoizes everything.
            if !self.py2() {
                self.put_fresh()?;
            }
            // One interned object: memoized once, then fetched.
            match self.latin1 {
                Some(key) => self.get(key),
                None => {
                    if self.py2() {
                        self.py2_str(b"latin1")?;
                    } else {
                        self.unicode(b"latin1")?;
                    }
                    self.latin1 = Some(self.put_fresh()?).filter(|&k| k != NONE_U32);
                }
            }
            self.out
                .push(if self.proto() >= 2 { TUPLE2 } else { TUPLE });
            if !self.py2() {
                self.put_fresh()?;
            }
        }
        self.out.push(REDUCE);
        self.memoize(id, via, false)
    }

    /// `bytearray.__reduce_ex__`: `(bytearray, (bytes,))` from protocol 3,
    /// `(bytearray, (text, 'latin-1'))` below (Python 2 always), `()` args
    /// for an empty one (Python 3).
    fn bytearray(&mut self, id: NodeId, b: &[u8], via: Via) -> Result<(), EncodeError> {
        self.builtin_global("bytearray")?;
        if b.is_empty() && !self.py2() {
            self.out.push(EMPTY_TUPLE);
        } else if self.proto() >= 3 && !self.py2() {
            self.binbytes(b)?;
            self.put_fresh()?;
            self.out.push(TUPLE1);
            self.put_fresh()?;
        } else {
            if self.proto() < 2 {
                self.out.push(MARK);
            }
            // Python 2 writes neither fresh string nor the tuple to the memo
            // (one reference each); Python 3 writes all three.
            self.unicode(&latin1_to_utf8(b))?;
            if !self.py2() {
                self.put_fresh()?;
            }
            if self.py2() {
                self.py2_str(b"latin-1")?;
            } else {
                self.unicode(b"latin-1")?;
                self.put_fresh()?;
            }
            self.out
                .push(if self.proto() >= 2 { TUPLE2 } else { TUPLE });
            if !self.py2() {
                self.put_fresh()?;
            }
        }
        self.out.push(REDUCE);
        self.memoize(id, via, false)
    }

    /// A builtin type as `save_global` names it: `builtins` from protocol
    /// 3, `__builtin__` below (Python 3's `fix_imports`) and in Python 2.
    fn builtin_global(&mut self, name: &'static str) -> Result<(), EncodeError> {
        let text: &'static [u8] = match (self.proto() >= 3 && !self.py2(), name) {
            (true, "bytes") => b"builtins\nbytes",
            (true, "bytearray") => b"builtins\nbytearray",
            (true, "set") => b"builtins\nset",
            (true, _) => b"builtins\nfrozenset",
            (false, "bytes") => b"__builtin__\nbytes",
            (false, "str") => b"__builtin__\nstr",
            (false, "bytearray") => b"__builtin__\nbytearray",
            (false, "set") => b"__builtin__\nset",
            (false, _) => b"__builtin__\nfrozenset",
        };
        self.static_global(text)
    }

    /// A global the encoder itself needs (`module\nname`), memoized by name
    /// like the graph's.
    fn static_global(&mut self, text: &'static [u8]) -> Result<(), EncodeError> {
        if let Some(key) = self.globals.get(text) {
            self.get(key);
            return Ok(());
        }
        self.out.push(GLOBAL);
        self.out.extend_from_slice(text);
        self.out.push(b'\n');
        let key = self.put_fresh()?;
        self.globals.insert(text, key);
        Ok(())
    }

    /// `op` (GLOBAL or INST) and `module\nname\n`. Neither part may hold a
    /// newline; Python 3 writes names as ASCII below protocol 3 and refuses
    /// others.
    fn global_text(&mut self, id: NodeId, op: u8, text: &[u8]) -> Result<(), EncodeError> {
        if count_newlines(text) != 1 {
            return Err(EncodeError::Unsupported(
                id,
                "global name contains a newline",
            ));
        }
        if !self.py2() && self.proto() < 3 && !text.is_ascii() {
            return Err(EncodeError::Unsupported(
                id,
                "non-ASCII global name below protocol 3",
            ));
        }
        self.out.reserve(text.len() + 2);
        self.out.push(op);
        self.out.extend_from_slice(text);
        self.out.push(b'\n');
        Ok(())
    }

    /// The memo key of a node, if memoized under its id. (A global may
    /// also be memoized under another node of the same name; `save_new`
    /// looks for that.)
    #[inline]
    fn memo_of(&self, id: NodeId) -> Option<u32> {
        self.slots
            .get(id.index())
            .map(|s| s.memo)
            .filter(|&k| k != NONE_U32)
    }

    /// Memoizes a value just written. `always` is Python 2's `put2`;
    /// otherwise (`put`) Python 2 skips values it held by one reference.
    fn memoize(&mut self, id: NodeId, via: Via, always: bool) -> Result<(), EncodeError> {
        let node = self.node(id)?;
        if self.py2() && !always && self.single_ref(id, node, via) {
            return Ok(());
        }
        let key = self.put_fresh()?;
        if let Some(slot) = self.slots.get_mut(id.index()) {
            slot.memo = key;
        }
        Ok(())
    }

    /// Whether Python 2 held the value by a single reference.
    fn single_ref(&self, id: NodeId, node: &Node, via: Via) -> bool {
        if self.refs.get(id.index()).copied().unwrap_or(2) > 1 {
            return false;
        }
        match &self.py2_refs {
            Py2Refs::Exact(set) => set.contains(id),
            Py2Refs::Guess => match node {
                Node::Tuple(_) => matches!(
                    via,
                    Via::Element | Via::Pid | Via::Args | Via::NewArgs | Via::State
                ),
                Node::Bytes(_) => true,
                _ => false,
            },
        }
    }

    /// Writes a PUT of the next memo key and returns the key; in fast
    /// mode writes nothing and returns `NONE_U32` (no entry).
    #[inline]
    fn put_fresh(&mut self) -> Result<u32, EncodeError> {
        if self.fast {
            return Ok(NONE_U32);
        }
        // Python 3 numbers from 0; cPickle's put2 uses len(memo) + 1.
        let key = if self.py2() {
            self.count.checked_add(1)
        } else {
            Some(self.count)
        }
        .filter(|&k| k != NONE_U32)
        .ok_or(EncodeError::MemoFull)?;
        self.count += 1;
        if let Ok(k) = u8::try_from(key) {
            self.out.extend_from_slice(&[BINPUT, k]);
        } else {
            self.out.push(LONG_BINPUT);
            self.out.extend_from_slice(&key.to_le_bytes());
        }
        Ok(key)
    }

    #[inline]
    fn get(&mut self, key: u32) {
        if let Ok(k) = u8::try_from(key) {
            self.out.extend_from_slice(&[BINGET, k]);
        } else {
            self.out.push(LONG_BINGET);
            self.out.extend_from_slice(&key.to_le_bytes());
        }
    }
}

/// What the encoder keeps per node.
#[derive(Clone, Copy)]
struct Slot {
    memo: u32,
    open: u32,
}

impl Slot {
    const EMPTY: Slot = Slot {
        memo: NONE_U32,
        open: NONE_U32,
    };
}

/// Memo keys of globals by name (`module\nname`): a few in place (a record
/// names a few classes, and this costs no allocation), indexed by a hash
/// map once there are more.
struct Globals<'g> {
    list: [(&'g [u8], u32); Globals::LIST_MAX],
    len: usize,
    index: HashMap<&'g [u8], u32, BuildHasherDefault<Fnv>>,
}

impl Default for Globals<'_> {
    fn default() -> Self {
        Globals {
            list: [(&[], 0); Globals::LIST_MAX],
            len: 0,
            index: HashMap::default(),
        }
    }
}

impl<'g> Globals<'g> {
    const LIST_MAX: usize = 8;

    fn get(&self, text: &[u8]) -> Option<u32> {
        if self.index.is_empty() {
            let list = self.list.get(..self.len).unwrap_or_default();
            list.iter().find(|(t, _)| *t == text).map(|e| e.1)
        } else {
            self.index.get(text).copied()
        }
    }

    fn insert(&mut self, text: &'g [u8], key: u32) {
        if key == NONE_U32 {
            return;
        }
        if self.index.is_empty() {
            if let Some(slot) = self.list.get_mut(self.len) {
                *slot = (text, key);
                self.len += 1;
                return;
            }
            let list = self.list.get(..self.len).unwrap_or_default();
            self.index.extend(list.iter().copied());
            self.len = 0;
        }
        self.index.insert(text, key);
    }

    fn clear(&mut self) {
        self.len = 0;
        self.index.clear();
    }

    fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            if let Some(&e) = self.list.get(i)
                && keep(e.1)
                && let Some(slot) = self.list.get_mut(kept)
            {
                *slot = e;
                kept += 1;
            }
        }
        self.len = kept;
        self.index.retain(|_, k| keep(*k));
    }
}

/// FNV-1a: the global names hashed here are short and not chosen by an
/// attacker who could profit from collisions (at worst a slower encode).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// How many times the pickler reaches each node (0, 1, or 2 for "two or
/// more"): Python's reference count is at least that.
fn reference_counts(graph: &Graph) -> Vec<u8> {
    let mut refs = vec![0u8; graph.len()];
    let mut bump = |id: &NodeId| {
        if let Some(r) = refs.get_mut(id.index()) {
            *r = r.saturating_add(1).min(2);
        }
    };
    for node in graph.nodes() {
        match node {
            Node::Tuple(items) | Node::List(items) | Node::Set(items) | Node::FrozenSet(items) => {
                items.iter().for_each(&mut bump)
            }
            Node::Dict(pairs) => pairs.iter().for_each(|(k, v)| {
                bump(k);
                bump(v);
            }),
            Node::Object(obj) => {
                bump(&obj.class);
                bump(&obj.args);
                obj.kwargs.iter().for_each(&mut bump);
                obj.state.iter().for_each(&mut bump);
                obj.list_items.iter().for_each(&mut bump);
                obj.dict_items.iter().for_each(|(k, v)| {
                    bump(k);
                    bump(v);
                });
            }
            Node::PersistentId(pid) => bump(pid),
            _ => {}
        }
    }
    // A reference is never memoized, so the pickler reaches its id value
    // as often as the reference itself (through chains of references too).
    for (i, node) in graph.nodes().iter().enumerate() {
        if !matches!(node, Node::PersistentId(_)) || refs.get(i).is_none_or(|&r| r < 2) {
            continue;
        }
        let mut cur = node;
        while let Node::PersistentId(pid) = cur {
            match refs.get_mut(pid.index()) {
                Some(r) if *r < 2 => *r = 2,
                _ => break,
            }
            match graph.nodes().get(pid.index()) {
                Some(next) => cur = next,
                None => break,
            }
        }
    }
    refs
}

/// Newlines in `text`, eight bytes at a time (this runs for every class a
/// record names).
fn count_newlines(text: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let count = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    let mut chunks = text.chunks_exact(8);
    let mut n = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ (ONES * u64::from(b'\n'));
        // Some byte of x is zero iff the chunk holds a newline.
        if x.wrapping_sub(ONES) & !x & HIGH != 0 {
            n += count(chunk);
        }
    }
    n + count(chunks.remainder())
}

/// Little-endian two's complement without redundant sign bytes, as
/// Python's `encode_long` makes it (0 is empty).
fn minimal_le(mut le: &[u8]) -> &[u8] {
    while let [rest @ .., prev, last] = le {
        if (*last == 0 && prev & 0x80 == 0) || (*last == 0xff && prev & 0x80 != 0) {
            le = le.get(..rest.len() + 1).unwrap_or_default();
        } else {
            break;
        }
    }
    if le == [0] { &[] } else { le }
}

/// Whether UTF-8 text has fewer than 2 code points (what Python 2's save
/// dispatch tests before skipping the memo for short unicode).
fn code_points_below_2(utf8: &[u8]) -> bool {
    utf8.len() < 5 && utf8.iter().filter(|&&b| b & 0xc0 != 0x80).count() < 2
}

/// Bytes decoded as latin-1, then encoded as UTF-8.
fn latin1_to_utf8(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 2);
    for &c in b {
        if c < 0x80 {
            out.push(c);
        } else {
            out.extend_from_slice(&[0xc0 | (c >> 6), 0x80 | (c & 0x3f)]);
        }
    }
    out
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    #[test]
    fn minimal_le_matches_encode_long() {
        assert_eq!(minimal_le(&[]), &[] as &[u8]);
        assert_eq!(minimal_le(&[0, 0]), &[] as &[u8]);
        assert_eq!(minimal_le(&[0xff, 0x00]), &[0xff, 0x00]);
        assert_eq!(minimal_le(&[0x80, 0xff]), &[0x80]);
        assert_eq!(minimal_le(&[0x7f, 0xff]), &[0x7f, 0xff]);
        assert_eq!(minimal_le(&[0x05, 0x00, 0x00]), &[0x05]);
        assert_eq!(minimal_le(&[0xff, 0xff, 0xff]), &[0xff]);
    }

    #[test]
    fn short_unicode_is_counted_in_code_points() {
        assert!(code_points_below_2(b""));
        assert!(code_points_below_2("é".as_bytes()));
        assert!(code_points_below_2("😀".as_bytes()));
        assert!(!code_points_below_2(b"ab"));
        assert!(!code_points_below_2("aé".as_bytes()));
    }

    #[test]
    fn newlines() {
        for text in [
            &b""[..],
            b"\n",
            b"abcdefgh\nijklmnop",
            b"\n\n\n\n\n\n\n\n\n",
            b"a\nb",
        ] {
            assert_eq!(
                count_newlines(text),
                text.iter().filter(|&&b| b == b'\n').count()
            );
        }
    }

    #[test]
    fn latin1_text() {
        assert_eq!(latin1_to_utf8(b"a\xff\x80"), "a\u{ff}\u{80}".as_bytes());
    }

    #[test]
    fn node_set() {
        let mut s = NodeSet::new();
        let mut g = Graph::new();
        let ids: Vec<_> = (0..130).map(|_| g.push(Node::None)).collect();
        s.insert(ids[3]);
        s.insert(ids[129]);
        assert!(s.contains(ids[3]) && s.contains(ids[129]) && !s.contains(ids[4]));
        assert_eq!(s.indices().collect::<Vec<_>>(), [3, 129]);
        assert_eq!(s.len(), 2);
    }
}
