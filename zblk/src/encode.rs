//! Pickling the states of wendelin.core's classes back: the inverse of
//! [`crate::format`] and [`crate::btree`] decoding, byte for byte what
//! ZODB's `ObjectWriter` writes for the same Python objects.
//!
//! Why a builder and not just a graph: the memo makes identity visible in
//! the bytes, so a writer must share nodes exactly where Python shares
//! objects. [`StateBuilder`] does what CPython does implicitly:
//!
//! - one class object per name (GLOBAL once, then BINGET);
//! - one oid `bytes` per referenced object (the object's `_p_oid`), a fresh
//!   `(oid, class)` tuple per reference (ZODB's `persistent_id`);
//! - one object per string of at most one character: CPython keeps those
//!   as singletons, so the `'<'` of two fields of a structured dtype, or a
//!   field named `C` and a ZBigArray's `_order` `'C'`, are one memo entry;
//! - one object per native-order numeric dtype (`numpy.dtype('<f8')` is a
//!   singleton, `'>f8'` is not), see [`crate::dtype`].
//!
//! Spellings follow the [`Dialect`]: Python 3 writes `bytes` and `str`
//! (unicode); Python 2 wrote `str` for both block data and text, and its
//! oids as `str` below protocol 3 (ZODB < 5.4) or as zodbpickle `binary`
//! at protocol 3.

use std::collections::HashMap;

use bytes::Bytes;
use zodb_core::Oid;
use zodb_core::pickle::{Dialect, Flavor, GlobalName, GraphBuilder, Node, NodeId, encode_record};

use crate::btree::{BucketState, Family, TreeState};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::format::{
    ARRAY_ZODB, Binary, BinaryKind, FILE_ZODB, ObjRef, Order, ZBigArrayState, ZBigFileState,
    ZBlkState, ZDataState,
};

/// Builds one record's graph with Python's sharing (see the module
/// documentation), in the spelling of a [`Dialect`].
#[derive(Debug)]
pub struct StateBuilder {
    b: GraphBuilder,
    dialect: Dialect,
    /// Python 2 `str` nodes of interned names and one-character strings.
    py2_names: HashMap<String, NodeId>,
    /// Native-order numeric dtypes, by `dtype.str`.
    pub(crate) dtypes: HashMap<String, NodeId>,
}

impl StateBuilder {
    /// An empty builder for `dialect`.
    pub fn new(dialect: Dialect) -> StateBuilder {
        StateBuilder::with_builder(GraphBuilder::new(), dialect)
    }

    /// A builder adding to an existing graph (a decoded record being
    /// changed and written back).
    pub fn with_builder(b: GraphBuilder, dialect: Dialect) -> StateBuilder {
        StateBuilder {
            b,
            dialect,
            py2_names: HashMap::new(),
            dtypes: HashMap::new(),
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The graph builder underneath, for values this module does not know.
    pub fn builder(&mut self) -> &mut GraphBuilder {
        &mut self.b
    }

    fn py2(&self) -> bool {
        self.dialect.flavor() == Flavor::Py2
    }

    /// Binary data spelled as it was read: a Python 2 `str` stays one,
    /// everything else is `bytes` (which the pickler spells by protocol:
    /// BINBYTES at 3, `_codecs.encode` below).
    pub fn binary(&mut self, data: &Binary) -> NodeId {
        match data.kind {
            BinaryKind::Str => self.b.py2_str(data.data.clone()),
            BinaryKind::ByteArray => self.b.push(Node::ByteArray(data.data.clone())),
            BinaryKind::Bytes | BinaryKind::Latin1 | BinaryKind::EmptyBytesCall => {
                self.b.bytes(data.data.clone())
            }
        }
    }

    /// Block or chunk data as this dialect's wendelin.core writes it:
    /// `bytes` on Python 3, `str` on Python 2.
    pub fn data(&mut self, data: Bytes) -> NodeId {
        if self.py2() {
            self.b.py2_str(data)
        } else {
            self.b.bytes(data)
        }
    }

    /// Text made at run time (a `'%c%d'`-formatted type string, a field
    /// name): a fresh object, except that strings of at most one
    /// character are singletons, as in CPython.
    pub fn text(&mut self, s: &str) -> NodeId {
        if s.chars().nth(1).is_none() && s.chars().all(|c| u32::from(c) < 256) {
            return self.name(s);
        }
        if self.py2() {
            self.b.py2_str(Bytes::copy_from_slice(s.as_bytes()))
        } else {
            self.b.text(s)
        }
    }

    /// An interned string (an attribute name, a dict key written in
    /// source code, a one-character string): one node per text.
    pub fn name(&mut self, s: &str) -> NodeId {
        if !self.py2() {
            return self.b.name(s);
        }
        if let Some(&id) = self.py2_names.get(s) {
            return id;
        }
        let id = self.b.py2_str(Bytes::copy_from_slice(s.as_bytes()));
        self.py2_names.insert(s.to_owned(), id);
        id
    }

    /// An int.
    pub fn int(&mut self, v: i64) -> NodeId {
        self.b.int(v)
    }

    /// A bool; Python 2's numpy passed ints where numpy 2 passes bools.
    pub fn flag(&mut self, v: bool) -> NodeId {
        if self.py2() {
            self.b.int(i64::from(v))
        } else {
            self.b.bool(v)
        }
    }

    /// `None`.
    pub fn none(&mut self) -> NodeId {
        self.b.none()
    }

    /// A tuple.
    pub fn tuple(&mut self, items: impl IntoIterator<Item = NodeId>) -> NodeId {
        self.b.tuple(items)
    }

    /// A dict, items in order.
    pub fn dict(&mut self, items: impl IntoIterator<Item = (NodeId, NodeId)>) -> NodeId {
        self.b.dict(items)
    }

    /// A class or function.
    pub fn global(&mut self, g: &GlobalName) -> NodeId {
        self.b.global(g.module(), g.name())
    }

    /// A tuple of non-negative ints (a shape, strides).
    pub fn int_tuple(&mut self, items: &[u64]) -> Result<NodeId> {
        let mut ids = Vec::with_capacity(items.len());
        for &n in items {
            let n = i64::try_from(n).map_err(|_| Error::Unencodable {
                what: "a shape or strides".into(),
                why: format!("{n} does not fit an int64"),
            })?;
            ids.push(self.b.int(n));
        }
        Ok(self.b.tuple(ids))
    }

    /// An oid as this dialect pickles `_p_oid`: bytes, or a Python 2 `str`
    /// below protocol 3. One node per oid.
    fn oid(&mut self, oid: Oid) -> NodeId {
        if self.py2() && self.dialect.protocol() < 3 {
            self.b.py2_oid(oid)
        } else {
            self.b.oid(oid)
        }
    }

    /// A persistent reference as ZODB's `persistent_id` returns it: a new
    /// `(oid, class)` tuple, or the bare oid for classes with
    /// `__getnewargs__`.
    pub fn objref(&mut self, r: &ObjRef) -> NodeId {
        let oid = self.oid(r.oid);
        let pid = match &r.class {
            Some(g) => {
                let class = self.global(g);
                self.b.tuple([oid, class])
            }
            None => oid,
        };
        self.b.persistent_id(pid)
    }

    /// The record: class metadata (a GLOBAL, as `ObjectWriter.serialize`
    /// writes for classes without `__getnewargs__`) then `state`, through
    /// one memo.
    pub fn record(mut self, class: (&str, &str), state: NodeId) -> Result<Vec<u8>> {
        let class_node = self.b.global(class.0, class.1);
        let graph = self.b.into_graph();
        encode_record(&graph, class_node, state, self.dialect).map_err(|source| Error::Encode {
            what: format!("a {}.{} record", class.0, class.1),
            source,
        })
    }

    /// One pickle of `root` (what `pickle.dumps` gives), for values that
    /// are no record of their own (a lone dtype).
    pub fn pickle(self, root: NodeId) -> Result<Vec<u8>> {
        let graph = self.b.into_graph();
        zodb_core::pickle::encode(&graph, root, self.dialect).map_err(|source| Error::Encode {
            what: "a value".into(),
            source,
        })
    }
}

/// The record of a block object: `ZBlk0` (or, when the state says so, the
/// legacy name `ZBlk`) with its bytes, or `ZBlk1` with its chunk table.
pub fn encode_zblk(state: &ZBlkState, dialect: Dialect) -> Result<Vec<u8>> {
    let mut sb = StateBuilder::new(dialect);
    let format = state.format();
    let node = match state {
        ZBlkState::ZBlk0(s) => sb.binary(&s.data),
        ZBlkState::ZBlk1(s) => sb.objref(&s.chunktab),
    };
    sb.record((FILE_ZODB, format.class_name()), node)
}

/// A `ZBlk0` record cut around its data, for writing blocks that live in
/// someone else's memory (the pager's mapping) without first copying them
/// into a [`Bytes`] the graph could hold.
///
/// The record of a ZBlk0 is the class pickle, then the state pickle, which
/// is the block's bytes alone: one length-prefixed opcode in the middle,
/// everything around it independent of the data (the bytes object is
/// memoized the same whatever its length). So the frame is made once per
/// dialect by the general encoder on a placeholder, and each block is then
/// `head`, its opcode and length, the data, `tail`: the same bytes as
/// [`encode_zblk`], which the tests hold it to. Data shorter than the
/// placeholder goes through the general encoder: short strings have rules
/// of their own in Python 2 (the empty `str` is never memoized), and
/// copying them costs nothing.
///
/// Only for the dialects whose block data is one counted opcode: Python 2
/// (`str`) and Python 3 at protocol 3 (`bytes`). Below protocol 3 Python 3
/// spells bytes as `_codecs.encode(text, 'latin1')`, a transformation of
/// the data; [`ZBlk0Frame::new`] gives `None` there.
#[derive(Clone, Debug)]
pub struct ZBlk0Frame {
    dialect: Dialect,
    kind: BinaryKind,
    head: Vec<u8>,
    tail: Vec<u8>,
    long: u8,
    max: usize,
    what: &'static str,
}

/// The placeholder's length: long enough for the 4-byte length form, whose
/// opcode and length are then easy to find and replace.
const FRAME_PLACEHOLDER: usize = 256;

impl ZBlk0Frame {
    /// The frame for `dialect`, or `None` where block data is not written as
    /// one counted opcode.
    pub fn new(dialect: Dialect) -> Result<Option<ZBlk0Frame>> {
        // pickletools' opcodes for long bytes and Python 2 strings.
        const BINBYTES: u8 = b'B';
        const BINSTRING: u8 = b'T';
        let (kind, long, max, what) = match (dialect.flavor(), dialect.protocol()) {
            (Flavor::Py2, _) => (BinaryKind::Str, BINSTRING, i32::MAX as usize, "str"),
            (Flavor::Py3, p) if p >= 3 => (BinaryKind::Bytes, BINBYTES, u32::MAX as usize, "bytes"),
            _ => return Ok(None),
        };
        let placeholder = Bytes::from(vec![0xA5u8; FRAME_PLACEHOLDER]);
        let record = encode_zblk0_general(placeholder.clone(), kind, dialect)?;
        let mut counted = vec![long];
        counted.extend_from_slice(&(FRAME_PLACEHOLDER as u32).to_le_bytes());
        counted.extend_from_slice(&placeholder);
        let found: Vec<usize> = record
            .windows(counted.len())
            .enumerate()
            .filter(|(_, w)| *w == counted.as_slice())
            .map(|(i, _)| i)
            .collect();
        let [at] = found.as_slice() else {
            return Err(Error::Invalid(format!(
                "the {dialect:?} ZBlk0 record has {} places for its data, not one",
                found.len()
            )));
        };
        let (head, rest) = record.split_at(*at);
        Ok(Some(ZBlk0Frame {
            dialect,
            kind,
            head: head.to_vec(),
            tail: rest.get(counted.len()..).unwrap_or_default().to_vec(),
            long,
            max,
            what,
        }))
    }

    /// Appends the record of a ZBlk0 holding `data` to `out`.
    pub fn encode_into(&self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let too_large = || Error::Encode {
            what: format!("a {FILE_ZODB}.ZBlk0 record"),
            source: zodb_core::pickle::EncodeError::TooLarge {
                what: self.what,
                len: data.len(),
            },
        };
        if data.len() < FRAME_PLACEHOLDER {
            let record =
                encode_zblk0_general(Bytes::copy_from_slice(data), self.kind, self.dialect)?;
            out.extend_from_slice(&record);
            return Ok(());
        }
        let n = u32::try_from(data.len())
            .ok()
            .filter(|_| data.len() <= self.max)
            .ok_or_else(too_large)?;
        out.reserve(self.head.len() + 5 + data.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.push(self.long);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&self.tail);
        Ok(())
    }

    /// The record of a ZBlk0 holding `data`.
    pub fn encode(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(data, &mut out)?;
        Ok(out)
    }
}

/// A `ZBlk0` record (never the legacy name) through the general encoder.
fn encode_zblk0_general(data: Bytes, kind: BinaryKind, dialect: Dialect) -> Result<Vec<u8>> {
    let state = ZBlkState::ZBlk0(crate::format::ZBlk0State {
        data: Binary { data, kind },
        legacy_name: false,
    });
    encode_zblk(&state, dialect)
}

/// The record of a `ZData`.
pub fn encode_zdata(state: &ZDataState, dialect: Dialect) -> Result<Vec<u8>> {
    let mut sb = StateBuilder::new(dialect);
    let node = sb.binary(&state.data);
    sb.record((FILE_ZODB, "ZData"), node)
}

/// The record of a `ZBigFile`: `(blksize, blktab)`.
pub fn encode_zbigfile(state: &ZBigFileState, dialect: Dialect) -> Result<Vec<u8>> {
    let mut sb = StateBuilder::new(dialect);
    let blksize = i64::try_from(state.blksize).map_err(|_| Error::Unencodable {
        what: "a ZBigFile".into(),
        why: format!("blksize {} does not fit an int64", state.blksize),
    })?;
    let blksize = sb.int(blksize);
    let blktab = sb.objref(&state.blktab);
    let node = sb.tuple([blksize, blktab]);
    sb.record((FILE_ZODB, "ZBigFile"), node)
}

/// The state node of a `ZBigArray`: `(dict, {'zfile': ref})`, the dict in
/// the attribute order of `state.attrs` (`_dtype`, `_shape`, `_order`,
/// `_stridev` for arrays BigArray made; `_order` missing for arrays saved
/// before wendelin.core 0.6).
pub fn zbigarray_node(sb: &mut StateBuilder, state: &ZBigArrayState) -> Result<NodeId> {
    let what = || "a ZBigArray".to_string();
    let mut items = Vec::with_capacity(state.attrs.len());
    let mut zfile_in_dict = false;
    for attr in &state.attrs {
        let value = match attr.as_str() {
            "_dtype" => state
                .dtype
                .to_node(sb, 0)
                .map_err(|why| Error::Unencodable { what: what(), why })?,
            "_shape" => sb.int_tuple(&state.shape)?,
            "_stridev" => sb.int_tuple(&state.stridev)?,
            "_order" => match state.order {
                Some(o) => sb.text(&o.as_char().to_string()),
                None => {
                    return Err(Error::Unencodable {
                        what: what(),
                        why: "_order is listed but has no value".into(),
                    });
                }
            },
            "zfile" if !state.slots_form => {
                zfile_in_dict = true;
                sb.objref(&state.zfile)
            }
            other => {
                return Err(Error::Unencodable {
                    what: what(),
                    why: format!("the value of attribute {other:?} was not kept"),
                });
            }
        };
        let key = sb.name(attr);
        items.push((key, value));
    }
    if state.order.is_some() && !state.attrs.iter().any(|a| a == "_order") {
        return Err(Error::Unencodable {
            what: what(),
            why: "_order has a value but is not listed in attrs".into(),
        });
    }
    let dict = sb.dict(items);
    if state.slots_form {
        let key = sb.name("zfile");
        let zfile = sb.objref(&state.zfile);
        let slots = sb.dict([(key, zfile)]);
        Ok(sb.tuple([dict, slots]))
    } else if zfile_in_dict {
        Ok(dict)
    } else {
        Err(Error::Unencodable {
            what: what(),
            why: "a dict state without zfile".into(),
        })
    }
}

/// The record of a `ZBigArray` (see [`zbigarray_node`]).
pub fn encode_zbigarray(state: &ZBigArrayState, dialect: Dialect) -> Result<Vec<u8>> {
    let mut sb = StateBuilder::new(dialect);
    let node = zbigarray_node(&mut sb, state)?;
    sb.record((ARRAY_ZODB, "ZBigArray"), node)
}

/// The state of a new ZBigArray as BigArray makes it: `_dtype`, `_shape`,
/// `_order`, `_stridev` (in `_init0`'s order), strides for `order`.
pub fn new_array_state(
    dtype: DType,
    shape: Vec<u64>,
    order: Order,
    zfile: ObjRef,
) -> Result<ZBigArrayState> {
    let stridev = strides(dtype.itemsize(), &shape, order)?;
    Ok(ZBigArrayState {
        dtype,
        shape,
        order: Some(order),
        stridev,
        zfile,
        attrs: ["_dtype", "_shape", "_order", "_stridev"]
            .map(str::to_owned)
            .to_vec(),
        slots_form: true,
    })
}

/// BigArray's `_stridev`: C order `itemsize * prod(shape[i+1:])`, Fortran
/// order `itemsize * prod(shape[:i])`.
pub fn strides(itemsize: u64, shape: &[u64], order: Order) -> Result<Vec<u64>> {
    let overflow = || Error::Invalid(format!("shape {shape:?} overflows 64 bits"));
    let n = shape.len();
    let mut out = vec![0u64; n];
    let mut acc = itemsize;
    let dims: Box<dyn Iterator<Item = usize>> = match order {
        Order::C => Box::new((0..n).rev()),
        Order::F => Box::new(0..n),
    };
    for i in dims {
        if let Some(s) = out.get_mut(i) {
            *s = acc;
        }
        acc = acc
            .checked_mul(shape.get(i).copied().unwrap_or(1))
            .ok_or_else(overflow)?;
    }
    Ok(out)
}

/// The state node of a bucket: `((k0, v0, ...),)` or `(..., next)`.
pub fn bucket_node(sb: &mut StateBuilder, state: &BucketState<ObjRef>) -> NodeId {
    let mut items = Vec::with_capacity(state.keys.len() * 2);
    for (&k, v) in state.keys.iter().zip(&state.values) {
        items.push(sb.int(k));
        items.push(sb.objref(v));
    }
    let items = sb.tuple(items);
    match &state.next {
        Some(next) => {
            let next = sb.objref(next);
            sb.tuple([items, next])
        }
        None => sb.tuple([items]),
    }
}

/// The state node of a tree: `None`, `((bucket_state,),)` for a lone
/// bucket pickled inline, or `((child0, key1, child1, ...), firstbucket)`.
pub fn tree_node(sb: &mut StateBuilder, state: &TreeState<ObjRef>) -> Result<NodeId> {
    Ok(match state {
        TreeState::Empty => sb.none(),
        TreeState::Inline(b) => {
            let bucket = bucket_node(sb, b);
            let inner = sb.tuple([bucket]);
            sb.tuple([inner])
        }
        TreeState::Nodes(n) => {
            if n.children.len() != n.keys.len() + 1 {
                return Err(Error::Unencodable {
                    what: "a BTree node".into(),
                    why: format!(
                        "{} children need {} separator keys, not {}",
                        n.children.len(),
                        n.children.len().saturating_sub(1),
                        n.keys.len()
                    ),
                });
            }
            let mut items = Vec::with_capacity(n.children.len() * 2);
            for (i, child) in n.children.iter().enumerate() {
                if let Some(&k) = i.checked_sub(1).and_then(|j| n.keys.get(j)) {
                    items.push(sb.int(k));
                }
                items.push(sb.objref(child));
            }
            let items = sb.tuple(items);
            let first = sb.objref(&n.firstbucket);
            sb.tuple([items, first])
        }
    })
}

/// The record of a bucket of `family`.
pub fn encode_bucket(
    family: Family,
    state: &BucketState<ObjRef>,
    dialect: Dialect,
) -> Result<Vec<u8>> {
    let mut sb = StateBuilder::new(dialect);
    let node = bucket_node(&mut sb, state);
    sb.record((family.module(), family.bucket_class()), node)
}

/// The record of a tree node of `family`.
pub fn encode_tree(family: Family, state: &TreeState<ObjRef>, dialect: Dialect) -> Result<Vec<u8>> {
    let mut sb = StateBuilder::new(dialect);
    let node = tree_node(&mut sb, state)?;
    sb.record((family.module(), family.tree_class()), node)
}

/// A dtype pickled alone, as `pickle.dumps(dtype, protocol)` writes it.
pub fn encode_dtype(dtype: &DType, dialect: Dialect) -> Result<Vec<u8>> {
    let mut sb = StateBuilder::new(dialect);
    let node = dtype
        .to_node(&mut sb, 0)
        .map_err(|why| Error::Unencodable {
            what: format!("dtype {}", dtype.numpy_str()),
            why,
        })?;
    sb.pickle(node)
}
