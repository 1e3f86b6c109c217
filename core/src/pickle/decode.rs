//! The decoder: a stack machine over the opcode stream that builds a
//! [`Graph`] instead of Python objects.
//!
//! It is iterative (no recursion, whatever the nesting), treats every length
//! as hostile, and follows CPython's C unpickler where the two could differ:
//! items below the innermost MARK cannot be popped, a PUT may overwrite a
//! key, and each `load` starts with an empty stack but keeps the memo, which
//! is what lets a record's state pickle refer to its class pickle's memo.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fmt;

use bytes::Bytes;

use super::MAX_MARK_DEPTH;
use super::error::{PickleError, PickleErrorKind as K};
use super::ops::{self, Arg, Memo, Op, Reader};
use super::pytext::{self, PyInt};
use super::value::{GlobalName, Graph, Node, NodeId, Object, ObjectKind, Value};

/// Decodes one pickle and requires it to fill `data` exactly (Python would
/// ignore trailing bytes; use a [`Decoder`] for that).
pub fn decode(data: &Bytes) -> Result<(Graph, NodeId), PickleError> {
    let mut d = Decoder::new(data.clone());
    let root = d.load()?;
    d.expect_end()?;
    Ok((d.into_graph(), root))
}

/// Decodes a ZODB object record: the class pickle and the state pickle,
/// through one memo, with nothing after them.
pub fn decode_record(data: &Bytes) -> Result<Record, PickleError> {
    let mut d = Decoder::new(data.clone());
    let class = d.load()?;
    let state = d.load()?;
    d.expect_end()?;
    Ok(Record {
        graph: d.into_graph(),
        class,
        state,
    })
}

/// Decodes pickles written back to back until the input ends (an `.index`
/// file is one), sharing one memo as one Python Unpickler would. Returns each
/// root with the offset just past its STOP.
pub fn decode_stream(data: &Bytes) -> Result<(Graph, Vec<(NodeId, usize)>), PickleError> {
    let mut d = Decoder::new(data.clone());
    let mut roots = Vec::new();
    while !d.is_at_end() {
        let root = d.load()?;
        roots.push((root, d.offset()));
    }
    Ok((d.into_graph(), roots))
}

/// A decoded object record.
#[derive(Clone)]
pub struct Record {
    /// Every value of both pickles.
    pub graph: Graph,
    /// Root of pickle #1: the class metadata (spec pickles.md §2).
    pub class: NodeId,
    /// Root of pickle #2: the object state.
    pub state: NodeId,
}

impl Record {
    /// The class metadata value.
    pub fn class(&self) -> Value<'_> {
        self.graph.value(self.class)
    }

    /// The state value.
    pub fn state(&self) -> Value<'_> {
        self.graph.value(self.state)
    }

    /// `(module, name)` of the object's class, read from any of the class
    /// metadata forms as ZODB's `getGhost` does: a GLOBAL, `(GLOBAL, args)`,
    /// `((module, name), args)`. `None` for persistent classes (referenced
    /// by persistent id) and anything unexpected.
    pub fn class_path(&self) -> Option<(&str, &str)> {
        let mut klass = self.class();
        if let Some(t) = klass.as_tuple() {
            if t.len() != 2 {
                return None;
            }
            klass = t.get(0)?;
            if let Some(t) = klass.as_tuple() {
                if t.len() != 2 {
                    return None;
                }
                return Some((t.get(0)?.as_text()?, t.get(1)?.as_text()?));
            }
        }
        klass.as_global()
    }

    /// The arguments for `__new__` that forms 2-7 carry, `None` for the plain
    /// GLOBAL form or when they are `None`.
    pub fn class_args(&self) -> Option<Value<'_>> {
        let t = self.class().as_tuple().filter(|t| t.len() == 2)?;
        t.get(1).filter(|a| !a.is_none())
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("class", &self.class())
            .field("state", &self.state())
            .finish()
    }
}

/// Decodes the pickles in a buffer one after the other into one graph,
/// keeping the memo between them.
pub struct Decoder {
    data: Bytes,
    pos: usize,
    graph: Graph,
    memo: Memo<NodeId>,
    stack: Vec<NodeId>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("len", &self.data.len())
            .field("offset", &self.pos)
            .field("nodes", &self.graph.len())
            .field("memo", &self.memo.len())
            .finish()
    }
}

impl Decoder {
    /// A decoder at the start of `data`. Strings in the graph will be
    /// slices of `data`, not copies.
    pub fn new(data: Bytes) -> Decoder {
        let mut memo = Memo::default();
        memo.reset(data.len());
        Decoder {
            // Node counts follow opcode counts, not sizes (a 2 MiB block is
            // one node), so start small.
            graph: Graph::with_capacity(16),
            data,
            pos: 0,
            memo,
            stack: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// Decodes the next pickle (through its STOP) and returns its root.
    /// After an error the decoder is in an unspecified (but safe) state.
    pub fn load(&mut self) -> Result<NodeId, PickleError> {
        self.stack.clear();
        self.marks.clear();
        let data = self.data.clone();
        let mut reader = Reader::new(&data, self.pos);
        loop {
            let op = reader.next_op()?;
            if let Some(root) = self.step(&op, &data, reader.pos()).map_err(|k| op.err(k))? {
                self.pos = reader.pos();
                return Ok(root);
            }
        }
    }

    /// Offset just past the last pickle loaded.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Whether the input is used up.
    pub fn is_at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Forgets the memo, as `Unpickler.memo.clear()` would.
    pub fn clear_memo(&mut self) {
        self.memo.reset(self.data.len());
    }

    /// The values decoded so far.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// All values decoded.
    pub fn into_graph(self) -> Graph {
        self.graph
    }

    fn expect_end(&self) -> Result<(), PickleError> {
        match self.data.len() - self.pos.min(self.data.len()) {
            0 => Ok(()),
            n => Err(PickleError::new(
                self.pos,
                self.data.get(self.pos).copied(),
                K::TrailingData(n),
            )),
        }
    }

    /// The innermost MARK: nothing below it may be popped.
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<NodeId, K> {
        if self.stack.len() <= self.fence() {
            return Err(K::StackUnderflow);
        }
        self.stack.pop().ok_or(K::StackUnderflow)
    }

    fn top(&self) -> Result<NodeId, K> {
        if self.stack.len() <= self.fence() {
            return Err(K::StackUnderflow);
        }
        self.stack.last().copied().ok_or(K::StackUnderflow)
    }

    /// Closes the innermost MARK; returns where its items start.
    fn close_mark(&mut self) -> Result<usize, K> {
        let k = self.marks.pop().ok_or(K::NoMark)?;
        if k > self.stack.len() {
            return Err(K::StackUnderflow);
        }
        Ok(k)
    }

    /// Pops everything above the innermost MARK and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<NodeId>, K> {
        let k = self.close_mark()?;
        Ok(self.stack.split_off(k))
    }

    /// For APPENDS, SETITEMS, ADDITEMS: closes the MARK and returns where its
    /// items start and the container below them.
    fn mark_target(&mut self) -> Result<(usize, NodeId), K> {
        let k = self.close_mark()?;
        if k <= self.fence() {
            return Err(K::StackUnderflow);
        }
        let target = self.stack.get(k - 1).copied().ok_or(K::StackUnderflow)?;
        Ok((k, target))
    }

    fn new_node(&mut self, node: Node) -> Result<NodeId, K> {
        self.graph.try_push(node).ok_or(K::TooLarge)
    }

    fn push(&mut self, node: Node) -> Result<(), K> {
        let id = self.new_node(node)?;
        self.stack.push(id);
        Ok(())
    }

    fn push_object(
        &mut self,
        kind: ObjectKind,
        class: NodeId,
        args: NodeId,
        kwargs: Option<NodeId>,
    ) -> Result<(), K> {
        self.push(Node::Object(Box::new(Object {
            kind,
            class,
            args,
            kwargs,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        })))
    }

    /// Executes one opcode; returns the root at STOP. `next` is the offset
    /// after the opcode.
    fn step(&mut self, op: &Op<'_>, data: &Bytes, next: usize) -> Result<Option<NodeId>, K> {
        use ops::*;
        let code = op.info.code;
        match (code, op.arg) {
            (STOP, _) => return self.pop().map(Some),
            (PROTO, Arg::Int(v)) => {
                if v > 5 {
                    return Err(K::Protocol(v as u8));
                }
            }
            (FRAME, Arg::U64(n)) => {
                // Frames only group opcodes for buffering; the frame must
                // still be there.
                if n > (data.len() - next) as u64 {
                    return Err(K::LengthPastEnd {
                        len: n,
                        available: data.len() - next,
                    });
                }
            }
            (MARK, _) => {
                if self.marks.len() >= MAX_MARK_DEPTH {
                    return Err(K::TooDeep(MAX_MARK_DEPTH));
                }
                self.marks.push(self.stack.len());
            }
            (POP, _) => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            (POP_MARK, _) => {
                self.pop_mark()?;
            }
            (DUP, _) => {
                let top = self.top()?;
                self.stack.push(top);
            }
            (PUT | BINPUT | LONG_BINPUT, arg) => {
                let key = memo_key(arg, "PUT")?;
                let top = self.top()?;
                self.memo.put(key, top);
            }
            (MEMOIZE, _) => {
                let top = self.top()?;
                self.memo.put(self.memo.len() as u64, top);
            }
            (GET | BINGET | LONG_BINGET, arg) => {
                let key = memo_key(arg, "GET")?;
                let id = self.memo.get(key).ok_or(K::MemoMissing(key))?;
                self.stack.push(id);
            }
            (NONE, _) => self.push(Node::None)?,
            (NEWTRUE, _) => self.push(Node::Bool(true))?,
            (NEWFALSE, _) => self.push(Node::Bool(false))?,
            (INT, Arg::Line(b"00")) => self.push(Node::Bool(false))?,
            (INT, Arg::Line(b"01")) => self.push(Node::Bool(true))?,
            (INT, Arg::Line(text)) => match pytext::parse_int(text).ok_or(K::BadText("INT"))? {
                PyInt::Small(v) => self.push(Node::Int(v))?,
                big => self.push(Node::Long(pytext::int_to_le(&big).into()))?,
            },
            (BININT | BININT1 | BININT2, Arg::Int(v)) => self.push(Node::Int(v))?,
            (LONG, Arg::Line(text)) => {
                let text = text.strip_suffix(b"L").unwrap_or(text);
                let v = pytext::parse_int(text).ok_or(K::BadText("LONG"))?;
                self.push(Node::Long(pytext::int_to_le(&v).into()))?;
            }
            (LONG1 | LONG4, Arg::Data(b, _)) => self.push(Node::Long(data.slice_ref(b)))?,
            (FLOAT, Arg::Line(text)) => {
                let v = pytext::parse_float_strict(text).ok_or(K::BadText("FLOAT"))?;
                self.push(Node::Float(v))?;
            }
            (BINFLOAT, Arg::Float(v)) => self.push(Node::Float(v))?,
            (STRING, Arg::Line(text)) => {
                let inner = match text {
                    [q @ (b'\'' | b'"'), inner @ .., last] if last == q => inner,
                    _ => return Err(K::BadText("STRING (not quoted)")),
                };
                let s = match pytext::escape_decode(inner)
                    .map_err(|_| K::BadText("STRING (bad escape)"))?
                {
                    std::borrow::Cow::Borrowed(b) => data.slice_ref(b),
                    std::borrow::Cow::Owned(v) => Bytes::from(v),
                };
                self.push(Node::Str(s))?;
            }
            (BINSTRING | SHORT_BINSTRING, Arg::Data(b, _)) => {
                self.push(Node::Str(data.slice_ref(b)))?
            }
            (BINBYTES | SHORT_BINBYTES | BINBYTES8, Arg::Data(b, _)) => {
                self.push(Node::Bytes(data.slice_ref(b)))?
            }
            (BYTEARRAY8, Arg::Data(b, _)) => self.push(Node::ByteArray(data.slice_ref(b)))?,
            (UNICODE, Arg::Line(text)) => {
                let s = if text.is_ascii() && !text.contains(&b'\\') {
                    data.slice_ref(text)
                } else {
                    Bytes::from(
                        pytext::raw_unicode_escape_decode(text)
                            .map_err(|_| K::BadText("UNICODE"))?,
                    )
                };
                self.push(Node::Unicode(s))?;
            }
            (BINUNICODE | SHORT_BINUNICODE | BINUNICODE8, Arg::Data(b, _)) => {
                pytext::check_utf8_surrogatepass(b)
                    .map_err(|_| K::BadText("BINUNICODE (not UTF-8)"))?;
                self.push(Node::Unicode(data.slice_ref(b)))?;
            }
            (EMPTY_TUPLE, _) => self.push(Node::Tuple(Vec::new()))?,
            (TUPLE, _) => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items))?;
            }
            (TUPLE1 | TUPLE2 | TUPLE3, _) => {
                let n = usize::from(code - TUPLE1 + 1);
                if self.stack.len() < self.fence() + n {
                    return Err(K::StackUnderflow);
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items))?;
            }
            (EMPTY_LIST, _) => self.push(Node::List(Vec::new()))?,
            (LIST, _) => {
                let items = self.pop_mark()?;
                self.push(Node::List(items))?;
            }
            (APPEND, _) => {
                let v = self.pop()?;
                let target = self.top()?;
                append(&mut self.graph, target, &[v])?;
            }
            (APPENDS, _) => {
                let (k, target) = self.mark_target()?;
                append(
                    &mut self.graph,
                    target,
                    self.stack.get(k..).unwrap_or_default(),
                )?;
                self.stack.truncate(k);
            }
            (EMPTY_DICT, _) => self.push(Node::Dict(Vec::new()))?,
            (DICT, _) => {
                let items = self.pop_mark()?;
                if !items.len().is_multiple_of(2) {
                    return Err(K::WrongType("odd number of items for DICT"));
                }
                self.push(Node::Dict(pairs(&items).collect()))?;
            }
            (SETITEM, _) => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?;
                set_items(&mut self.graph, target, &[k, v])?;
            }
            (SETITEMS, _) => {
                let (k, target) = self.mark_target()?;
                set_items(
                    &mut self.graph,
                    target,
                    self.stack.get(k..).unwrap_or_default(),
                )?;
                self.stack.truncate(k);
            }
            (EMPTY_SET, _) => self.push(Node::Set(Vec::new()))?,
            (ADDITEMS, _) => {
                let (k, target) = self.mark_target()?;
                let items = self.stack.get(k..).unwrap_or_default();
                match self.graph.node_mut(target) {
                    Node::Set(set) => set.extend_from_slice(items),
                    _ => return Err(K::WrongType("ADDITEMS target is not a set")),
                }
                self.stack.truncate(k);
            }
            (FROZENSET, _) => {
                let items = self.pop_mark()?;
                self.push(Node::FrozenSet(items))?;
            }
            (GLOBAL, Arg::Pair(module, name)) => {
                let g = global(data, op.pos, module, name)?;
                self.push(Node::Global(g))?;
            }
            (STACK_GLOBAL, _) => {
                let name = self.pop()?;
                let module = self.pop()?;
                let text = |id| match self.graph.node(id) {
                    Node::Unicode(b) => std::str::from_utf8(b).ok(),
                    _ => None,
                };
                let (Some(module), Some(name)) = (text(module), text(name)) else {
                    return Err(K::WrongType("STACK_GLOBAL requires str"));
                };
                let g = GlobalName::new(module, name);
                self.push(Node::Global(g))?;
            }
            (REDUCE | NEWOBJ, _) => {
                let args = self.pop()?;
                let class = self.pop()?;
                let kind = if code == REDUCE {
                    ObjectKind::Reduce
                } else {
                    ObjectKind::NewObj
                };
                self.push_object(kind, class, args, None)?;
            }
            (NEWOBJ_EX, _) => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                self.push_object(ObjectKind::NewObjEx, class, args, Some(kwargs))?;
            }
            (INST, Arg::Pair(module, name)) => {
                let items = self.pop_mark()?;
                let args = self.new_node(Node::Tuple(items))?;
                let class = self.new_node(Node::Global(global(data, op.pos, module, name)?))?;
                self.push_object(ObjectKind::Inst, class, args, None)?;
            }
            (OBJ, _) => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(K::StackUnderflow);
                }
                let class = items.remove(0);
                let args = self.new_node(Node::Tuple(items))?;
                self.push_object(ObjectKind::Obj, class, args, None)?;
            }
            (BUILD, _) => {
                let state = self.pop()?;
                let target = self.top()?;
                match self.graph.node_mut(target) {
                    Node::Object(obj) => obj.state = Some(state),
                    _ => return Err(K::WrongType("BUILD target is not an object")),
                }
            }
            (PERSID, Arg::Line(text)) => {
                let pid = self.new_node(Node::Str(data.slice_ref(text)))?;
                self.push(Node::PersistentId(pid))?;
            }
            (BINPERSID, _) => {
                let pid = self.pop()?;
                self.push(Node::PersistentId(pid))?;
            }
            (EXT1 | EXT2 | EXT4, _) => {
                return Err(K::Unsupported(
                    "EXT1/EXT2/EXT4 name entries of the writer's copyreg registry, which the pickle does not carry",
                ));
            }
            (NEXT_BUFFER, _) => {
                return Err(K::Unsupported(
                    "NEXT_BUFFER refers to an out-of-band buffer, which stored data cannot have",
                ));
            }
            // Marks an in-band buffer read-only; the value stays what it is.
            (READONLY_BUFFER, _) => {
                self.top()?;
            }
            _ => return Err(K::Unsupported("opcode with an unexpected argument")),
        }
        Ok(None)
    }
}

/// APPEND(S): onto a list, or an object's list items (`obj.extend`). An
/// empty APPENDS changes nothing and checks nothing, as in CPython.
fn append(graph: &mut Graph, target: NodeId, items: &[NodeId]) -> Result<(), K> {
    if items.is_empty() {
        return Ok(());
    }
    match graph.node_mut(target) {
        Node::List(list) => list.extend_from_slice(items),
        Node::Object(obj) => obj.list_items.extend_from_slice(items),
        _ => return Err(K::WrongType("APPEND target is not a list")),
    }
    Ok(())
}

/// SETITEM(S): into a dict, or an object's dict items (`obj[k] = v`).
fn set_items(graph: &mut Graph, target: NodeId, items: &[NodeId]) -> Result<(), K> {
    if !items.len().is_multiple_of(2) {
        return Err(K::WrongType("odd number of items for SETITEMS"));
    }
    if items.is_empty() {
        return Ok(());
    }
    match graph.node_mut(target) {
        Node::Dict(dict) => dict.extend(pairs(items)),
        Node::Object(obj) => obj.dict_items.extend(pairs(items)),
        _ => return Err(K::WrongType("SETITEM target is not a dict")),
    }
    Ok(())
}

/// `[k1, v1, k2, v2, ...]` as pairs (callers check the length is even).
fn pairs(items: &[NodeId]) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
    items
        .chunks_exact(2)
        .filter_map(|kv| Some((*kv.first()?, *kv.get(1)?)))
}

/// The memo key of a PUT/GET: a byte, a u32, or non-negative decimal text.
pub(crate) fn memo_key(arg: Arg<'_>, what: &'static str) -> Result<u64, K> {
    match arg {
        Arg::Int(v) => u64::try_from(v).map_err(|_| K::BadText(what)),
        Arg::Line(text) => match pytext::parse_int(text) {
            Some(PyInt::Small(v)) => u64::try_from(v).map_err(|_| K::BadText(what)),
            _ => Err(K::BadText(what)),
        },
        _ => Err(K::BadText(what)),
    }
}

/// A GLOBAL/INST argument as a zero-copy [`GlobalName`]: the two lines
/// follow the opcode byte at `pos`.
fn global(data: &Bytes, pos: usize, module: &[u8], name: &[u8]) -> Result<GlobalName, K> {
    let start = pos + 1;
    let text = data
        .get(start..start + module.len() + 1 + name.len())
        .ok_or(K::Truncated)?;
    GlobalName::from_text(data.slice_ref(text), module.len())
        .ok_or(K::BadText("GLOBAL (not UTF-8)"))
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    fn one(p: &[u8]) -> (Graph, NodeId) {
        decode(&Bytes::copy_from_slice(p)).unwrap()
    }

    fn err(p: &[u8]) -> PickleError {
        decode(&Bytes::copy_from_slice(p)).unwrap_err()
    }

    #[test]
    fn memo_identity_and_mutation_after_put() {
        // [x, x] where x = {} is filled after being memoized.
        let (g, root) = one(b"\x80\x02]q\x00(}q\x01h\x01e.");
        let v = g.value(root);
        let l = v.as_list().unwrap();
        assert_eq!(l.get(0).unwrap().id(), l.get(1).unwrap().id());
        // Cycle: l = []; l.append(l)
        let (g, root) = one(b"]q\x00h\x00a.");
        assert_eq!(format!("{:?}", g.value(root)), "[[...]]");
    }

    #[test]
    fn text_forms() {
        let (g, root) = one(
            b"(I01\nI00\nI-7\nI99999999999999999999\nL5L\nF1.5\nS'a\\x41'\nVa\\u00e9\np3\ng3\nt.",
        );
        let t = g.value(root).as_tuple().unwrap();
        let v: Vec<_> = t.iter().collect();
        assert_eq!(v[0].as_bool(), Some(true));
        assert_eq!(v[1].as_bool(), Some(false));
        assert_eq!(v[2].as_int(), Some(-7));
        assert_eq!(format!("{:?}", v[3]), "99999999999999999999");
        assert_eq!(v[4].as_int(), Some(5));
        assert_eq!(v[5].as_f64(), Some(1.5));
        assert_eq!(v[6].as_bytes().unwrap(), &b"aA"[..]);
        assert_eq!(v[7].as_text(), Some("aé"));
        assert_eq!(v[7].id(), v[8].id());
    }

    #[test]
    fn errors_carry_offset_and_opcode() {
        let e = err(b"(N");
        assert_eq!((e.offset, e.kind.clone()), (2, K::Truncated));
        let e = err(b"N\x85\x86.");
        assert_eq!(
            (e.offset, e.opcode, e.kind.clone()),
            (2, Some(0x86), K::StackUnderflow)
        );
        assert_eq!(e.to_string(), "stack underflow at byte 2 (TUPLE2)");
        assert_eq!(err(b"h\x05.").kind, K::MemoMissing(5));
        assert_eq!(err(b"N(\x85.").kind, K::StackUnderflow);
        assert_eq!(err(b"Nt.").kind, K::NoMark);
        assert_eq!(err(b"N.N").kind, K::TrailingData(1));
        assert_eq!(err(b"INaN\n.").kind, K::BadText("INT"));
        assert_eq!(err(b"\x80\x06N.").kind, K::Protocol(6));
        assert_eq!(
            err(b"N)b.").kind,
            K::WrongType("BUILD target is not an object")
        );
        assert_eq!(
            err(&[b'('; MAX_MARK_DEPTH + 1]).kind,
            K::TooDeep(MAX_MARK_DEPTH)
        );
    }

    #[test]
    fn protocol_4_opcodes() {
        // frozenset({'a'}), set() + ADDITEMS, STACK_GLOBAL, MEMOIZE
        let p = b"\x80\x04\x95\x17\x00\x00\x00\x00\x00\x00\x00(\x8c\x01a\x94\x91\x8f(h\x00\x90\x8c\x01m\x8c\x01n\x93\x94)\x81\x87.";
        let (g, root) = one(p);
        assert_eq!(
            format!("{:?}", g.value(root)),
            "(frozenset({'a'}), {'a'}, m.n.__new__())"
        );
    }
}
