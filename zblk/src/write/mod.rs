//! Writing wendelin.core objects: blocks in ZBlk0, ZBlk1 or wendelin's
//! `auto` format, new ZBigFiles and ZBigArrays, resizes and appends, with
//! every record, oid and record order what Python writes for the same
//! operations in the same transactions.
//!
//! # Why a model of ZODB's Connection
//!
//! Byte-identical records are not enough for byte-identical databases:
//! which objects get stored, which oid each new object gets and in which
//! order the records of a transaction come are decided by ZODB's
//! `Connection` and by the BTrees C code, so this module reproduces both:
//!
//! - **Objects** live in an arena, one per oid as in ZODB's cache, loaded
//!   on first use through the [`WriteStorage`] (so the writer works over
//!   any storage, a ZEO client included). New objects have no oid.
//! - **`_p_changed`**: a change to an object that has an oid registers it
//!   with the transaction the first time (ZODB's `register`); a new object
//!   stays unchanged (`_p_changed` False), as `Persistent` does without a
//!   jar, which the `auto` heuristic sees.
//! - **Commit** walks the registered objects in registration order. Each
//!   is pickled; every reference to an object without an oid met while
//!   pickling gets the next oid ([`WriteStorage::new_oids`], called then,
//!   as ZODB calls `new_oid` from `persistent_id`) and is pushed on a
//!   stack, and the stack is popped (last in, first out: ZODB's
//!   `NewObjectIterator`) and stored before the next registered object.
//! - **BTrees** ([`tree`]): `LOBTree`/`IOBTree` inserts and deletes follow
//!   `BTreeTemplate.c`/`BucketTemplate.c` step by step: buckets split at
//!   61 entries into 30 + 31, inner nodes at 501 children into 250 + 251,
//!   the root at 1000 into a new node split 500 + 500; a BTree whose only
//!   bucket never got an oid pickles it inline and registers itself for
//!   that bucket's changes; a split registers the left node (and a bucket
//!   split links the new bucket through `next`, which is how it is first
//!   reached when pickling).
//!
//! Block formats ([`block`]) and arrays ([`array`]) are wendelin.core's
//! `ZBigFile.storeblk`, `ZBlk0/ZBlk1.setblkdata`, the `auto` heuristic,
//! `ZBigArray.__init__`, `resize` and `append`, on that model.
//!
//! # Memory
//!
//! Block data is held from the change to the commit only: after each
//! commit block objects are turned back into ghosts (ZBlk1 chunk trees
//! and their ZData objects are dropped whole), which bounds memory by the
//! transaction, not by the array. Block tables stay loaded: a bucket of
//! up to 60 references per 60 blocks.
//!
//! # Errors
//!
//! A failed commit aborts the storage transaction and poisons the writer
//! ([`Error::Poisoned`]): its objects no longer match the database.
//! Dropping a writer with uncommitted changes discards them, as closing a
//! Python connection does.

mod array;
mod block;
mod tree;

use std::collections::HashMap;

use bytes::Bytes;
use zodb_core::pickle::{
    Dialect, Flavor, GlobalName, GraphBuilder, Node, NodeId, Record, decode_record,
};
use zodb_core::storage::TpcTxn;
use zodb_core::{Oid, Tid, TxnMeta, TxnStatus, WriteStorage};

use crate::btree::{BucketState, Family, Node as BNode, TreeNodes, TreeState, decode_node};
use crate::encode::{self, StateBuilder};
use crate::error::{Error, Result};
use crate::format::{
    ARRAY_ZODB, Binary, BinaryKind, FILE_ZODB, ObjRef, ZBigArrayState, ZBigFileState, ZBlk0State,
    ZBlk1State, ZBlkState, ZDataState, decode_zbigarray, decode_zbigfile, decode_zblk,
    decode_zdata, record_class,
};

pub use array::{ArraySpec, DEFAULT_BLKSIZE};
pub use block::{CHUNKSIZE, WriteFormat};

/// The root object's oid.
const ROOT: Oid = Oid(0);

/// Description of the transaction that creates the root, as ZODB's `DB`
/// writes it.
pub const INITIAL_DESCRIPTION: &[u8] = b"initial database creation";

/// A handle on a ZBigArray of a [`Writer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArrayId(ObjId);

/// A handle on a ZBigFile of a [`Writer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(ObjId);

/// Index of an object in the arena.
type ObjId = usize;

/// The persistent classes the writer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `persistent.mapping.PersistentMapping` (the root).
    Mapping,
    Array,
    File,
    Tree(Family),
    Bucket(Family),
    ZBlk0,
    ZBlk1,
    ZData,
    /// Reached through a bare-oid reference: known once loaded.
    Unknown,
}

impl Class {
    fn of(module: &str, name: &str) -> Option<Class> {
        Some(match (module, name) {
            ("persistent.mapping", "PersistentMapping") => Class::Mapping,
            (ARRAY_ZODB, "ZBigArray") => Class::Array,
            (FILE_ZODB, "ZBigFile") => Class::File,
            (FILE_ZODB, "ZBlk0" | "ZBlk") => Class::ZBlk0,
            (FILE_ZODB, "ZBlk1") => Class::ZBlk1,
            (FILE_ZODB, "ZData") => Class::ZData,
            ("BTrees.LOBTree", "LOBTree") => Class::Tree(Family::LO),
            ("BTrees.LOBTree", "LOBucket") => Class::Bucket(Family::LO),
            ("BTrees.IOBTree", "IOBTree") => Class::Tree(Family::IO),
            ("BTrees.IOBTree", "IOBucket") => Class::Bucket(Family::IO),
            _ => return None,
        })
    }

    /// `(module, name)` as a new record names the class: the live class,
    /// so a legacy `ZBlk` block is written back as `ZBlk0`.
    fn path(self) -> (&'static str, &'static str) {
        match self {
            Class::Mapping => ("persistent.mapping", "PersistentMapping"),
            Class::Array => (ARRAY_ZODB, "ZBigArray"),
            Class::File => (FILE_ZODB, "ZBigFile"),
            Class::Tree(f) => (f.module(), f.tree_class()),
            Class::Bucket(f) => (f.module(), f.bucket_class()),
            Class::ZBlk0 => (FILE_ZODB, "ZBlk0"),
            Class::ZBlk1 => (FILE_ZODB, "ZBlk1"),
            Class::ZData => (FILE_ZODB, "ZData"),
            Class::Unknown => ("", ""),
        }
    }
}

/// A BTree node: `items[i] = (key, child)`, the key of item 0 unused (as
/// `data[0].key` in BTreeTemplate.c).
#[derive(Clone, Debug)]
struct TreeObj {
    family: Family,
    items: Vec<(i64, ObjId)>,
    firstbucket: Option<ObjId>,
}

/// A bucket.
#[derive(Clone, Debug)]
struct BucketObj {
    family: Family,
    keys: Vec<i64>,
    values: Vec<ObjId>,
    next: Option<ObjId>,
}

/// The root mapping: its record as read (re-pickled with the new entries,
/// so everything else in it is written back as it was), and the entries
/// set since.
#[derive(Clone, Debug)]
struct MappingObj {
    record: Option<Record>,
    set: Vec<(String, ObjId)>,
}

/// A ZBigArray.
#[derive(Clone, Debug)]
struct ArrayObj {
    state: ZBigArrayState,
    zfile: ObjId,
    /// The record it was loaded from, re-pickled with the new geometry so
    /// that the dtype and anything else keep their exact pickle.
    record: Option<Record>,
}

/// A ZBlk0's data: bytes shared with a record or a caller, or a slice of
/// memory the caller lends for the writer's life. Lent data is pickled
/// from where it lies, so a pager committing a gigabyte of dirty blocks
/// out of its mapping does not first copy them into fresh memory.
#[derive(Clone, Debug)]
enum BlockData<'s> {
    Shared(Bytes),
    Lent(&'s [u8]),
}

impl BlockData<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            BlockData::Shared(b) => b,
            BlockData::Lent(s) => s,
        }
    }
}

/// An object's state, or why it has none.
#[derive(Clone, Debug)]
enum State<'s> {
    /// Not loaded (a ghost): known by oid and class only.
    Ghost,
    /// Slot free for reuse.
    Free,
    Mapping(MappingObj),
    Array(Box<ArrayObj>),
    File {
        blksize: u64,
        blktab: ObjId,
    },
    Tree(TreeObj),
    Bucket(BucketObj),
    ZBlk0(BlockData<'s>),
    ZBlk1 {
        chunktab: ObjId,
    },
    ZData(Bytes),
}

#[derive(Clone, Debug)]
struct Obj<'s> {
    oid: Option<Oid>,
    /// Serial it was loaded at (or last stored as); ZERO for new objects.
    serial: Tid,
    class: Class,
    /// `_p_changed`.
    changed: bool,
    state: State<'s>,
}

/// How a [`Writer`] pickles.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterOptions {
    /// The pickler to imitate. `None`: the root record's (Python 3 or 2
    /// and its protocol, told apart by the first memo key, which CPython 3
    /// numbers from 0 and cPickle from 1); Python 3 protocol 3 for a new
    /// database.
    pub dialect: Option<Dialect>,
}

/// What a commit stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The transaction.
    pub tid: Tid,
    /// Oids stored, in record order.
    pub oids: Vec<Oid>,
}

/// Writes wendelin.core objects into a storage (see the module
/// documentation). One per storage at a time, like a ZODB connection
/// that is the only writer.
pub struct Writer<'s, S: WriteStorage + ?Sized> {
    storage: &'s S,
    dialect: Dialect,
    objs: Vec<Obj<'s>>,
    free: Vec<ObjId>,
    by_oid: HashMap<Oid, ObjId>,
    /// `_registered_objects`.
    registered: Vec<ObjId>,
    /// Every object whose `changed` was set this transaction (registered,
    /// or stored since: reset after the commit).
    touched: Vec<ObjId>,
    /// Block objects loaded or made this transaction, ghostified after.
    blocks: Vec<ObjId>,
    root: ObjId,
    /// Dirty pages per file, files in the order first written.
    dirty: Vec<Dirty>,
    /// The format dirty pages are stored in.
    fmt: WriteFormat,
    /// This dialect's ZBlk0 record around its data, made at the first
    /// ZBlk0 pickled (`Some(None)`: the dialect has no such frame).
    zblk0_frame: Option<Option<encode::ZBlk0Frame>>,
    poisoned: bool,
}

/// A file's dirty pages: block number to the block's whole new content.
#[derive(Debug)]
struct Dirty {
    file: ObjId,
    blocks: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl<S: WriteStorage + ?Sized> std::fmt::Debug for Writer<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("storage", &self.storage.name())
            .field("dialect", &self.dialect)
            .field("objects", &(self.objs.len() - self.free.len()))
            .field("registered", &self.registered.len())
            .finish()
    }
}

/// The dialect of an existing record: Python 2 if its first memo PUT is
/// key 1 (cPickle) rather than 0 (CPython 3), protocol from PROTO (1 when
/// absent).
pub fn detect_dialect(record: &[u8]) -> Dialect {
    let (protocol, rest) = match record {
        [0x80, p, rest @ ..] => (*p, rest),
        _ => (1, record),
    };
    // The class pickle is GLOBAL 'module\nname\n' then BINPUT k.
    let first_put = rest
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|i| rest.get(i + 1..))
        .and_then(|r| {
            r.iter()
                .position(|&b| b == b'\n')
                .and_then(|j| r.get(j + 1..))
        })
        .and_then(|r| match r {
            [b'q', k, ..] => Some(*k),
            _ => None,
        });
    let flavor = if first_put == Some(0) {
        Flavor::Py3
    } else {
        Flavor::Py2
    };
    Dialect::new(flavor, protocol.clamp(1, 3)).unwrap_or(Dialect::PY3)
}

impl<'s, S: WriteStorage + ?Sized> Writer<'s, S> {
    /// A writer on `storage`. Creates the root mapping when the storage
    /// has none, in its own transaction described as ZODB's `DB` does
    /// ([`INITIAL_DESCRIPTION`]), at `root_tid` if given (to reproduce a
    /// database exactly; it must be later than the last transaction).
    pub fn open(storage: &'s S, opts: WriterOptions, root_tid: Option<Tid>) -> Result<Self> {
        let existing = match storage.load(ROOT) {
            Ok((data, _)) => Some(data),
            Err(e) if e.is_pos_key_error() => None,
            Err(source) => return Err(Error::Load { oid: ROOT, source }),
        };
        let dialect = opts.dialect.unwrap_or_else(|| match &existing {
            Some(data) => detect_dialect(data),
            None => Dialect::PY3,
        });
        let mut w = Writer {
            storage,
            dialect,
            objs: Vec::new(),
            free: Vec::new(),
            by_oid: HashMap::new(),
            registered: Vec::new(),
            touched: Vec::new(),
            blocks: Vec::new(),
            root: 0,
            dirty: Vec::new(),
            fmt: WriteFormat::ZBlk0,
            zblk0_frame: None,
            poisoned: false,
        };
        if existing.is_none() {
            // ZODB's DB: `conn._add(PersistentMapping(), z64)` and commit.
            let root = w.alloc(Obj {
                oid: Some(ROOT),
                serial: Tid::ZERO,
                class: Class::Mapping,
                changed: false,
                state: State::Mapping(MappingObj {
                    record: None,
                    set: Vec::new(),
                }),
            });
            w.by_oid.insert(ROOT, root);
            w.root = root;
            w.mark_changed(root);
            let meta = TxnMeta {
                description: Bytes::from_static(INITIAL_DESCRIPTION),
                ..TxnMeta::default()
            };
            w.commit_inner(meta, root_tid)?;
        } else {
            w.root = w.ref_oid(ROOT, Class::Mapping);
        }
        Ok(w)
    }

    /// The dialect records are written in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The storage.
    pub fn storage(&self) -> &'s S {
        self.storage
    }

    fn check(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    // --- the arena

    fn alloc(&mut self, obj: Obj<'s>) -> ObjId {
        match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.objs.get_mut(id) {
                    *slot = obj;
                }
                id
            }
            None => {
                self.objs.push(obj);
                self.objs.len() - 1
            }
        }
    }

    /// A new object (no oid, as Python objects before they are added).
    fn new_obj(&mut self, class: Class, state: State<'s>) -> ObjId {
        self.alloc(Obj {
            oid: None,
            serial: Tid::ZERO,
            class,
            changed: false,
            state,
        })
    }

    fn obj(&self, id: ObjId) -> Result<&Obj<'s>> {
        self.objs
            .get(id)
            .ok_or_else(|| Error::Invalid(format!("object handle {id} is stale")))
    }

    fn obj_mut(&mut self, id: ObjId) -> Result<&mut Obj<'s>> {
        self.objs
            .get_mut(id)
            .ok_or_else(|| Error::Invalid(format!("object handle {id} is stale")))
    }

    fn describe(&self, id: ObjId) -> String {
        match self.objs.get(id) {
            Some(o) => {
                let (m, n) = o.class.path();
                match o.oid {
                    Some(oid) => format!("{oid} ({m}.{n})"),
                    None => format!("a new {m}.{n}"),
                }
            }
            None => format!("object handle {id}"),
        }
    }

    /// The object for `oid` (ZODB's cache: one object per oid), a ghost
    /// when not loaded yet.
    fn ref_oid(&mut self, oid: Oid, class: Class) -> ObjId {
        if let Some(&id) = self.by_oid.get(&oid) {
            return id;
        }
        let id = self.alloc(Obj {
            oid: Some(oid),
            serial: Tid::ZERO,
            class,
            changed: false,
            state: State::Ghost,
        });
        self.by_oid.insert(oid, id);
        id
    }

    fn ref_obj(&mut self, r: &ObjRef) -> ObjId {
        let class = r
            .class_path()
            .and_then(|(m, n)| Class::of(m, n))
            .unwrap_or(Class::Unknown);
        self.ref_oid(r.oid, class)
    }

    /// `_p_changed = True` (`PER_CHANGED`): registers the object with the
    /// transaction the first time. Only objects with an oid (a jar) change
    /// state: persistent's `changed()` leaves a new object up to date, so
    /// its `_p_changed` stays False, which the `auto` heuristic sees.
    fn mark_changed(&mut self, id: ObjId) {
        let Some(o) = self.objs.get_mut(id) else {
            return;
        };
        if o.changed || o.oid.is_none() {
            return;
        }
        o.changed = true;
        self.touched.push(id);
        self.registered.push(id);
    }

    fn is_changed(&self, id: ObjId) -> bool {
        self.objs.get(id).is_some_and(|o| o.changed)
    }

    fn class(&self, id: ObjId) -> Class {
        self.objs.get(id).map_or(Class::Unknown, |o| o.class)
    }

    fn has_oid(&self, id: ObjId) -> bool {
        self.objs.get(id).is_some_and(|o| o.oid.is_some())
    }

    /// Unghostifies `id`: loads and decodes its record.
    fn load(&mut self, id: ObjId) -> Result<()> {
        let o = self.obj(id)?;
        if !matches!(o.state, State::Ghost) {
            if matches!(o.state, State::Free) {
                return Err(Error::Invalid(format!("object handle {id} is stale")));
            }
            return Ok(());
        }
        let Some(oid) = o.oid else {
            return Err(Error::Invalid(format!("object handle {id} has no state")));
        };
        let expected = o.class;
        let (data, serial) = self
            .storage
            .load(oid)
            .map_err(|source| Error::Load { oid, source })?;
        let record = decode_record(&data).map_err(|source| Error::Pickle { oid, source })?;
        let class = record
            .class_path()
            .and_then(|(m, n)| Class::of(m, n))
            .filter(|c| expected == Class::Unknown || *c == expected)
            .ok_or_else(|| Error::Class {
                oid,
                found: record_class(&record),
                expected: match expected {
                    Class::Mapping => "persistent.mapping.PersistentMapping",
                    Class::Array => "wendelin.bigarray.array_zodb.ZBigArray",
                    Class::File => "wendelin.bigfile.file_zodb.ZBigFile",
                    Class::Tree(Family::LO) => "BTrees.LOBTree.LOBTree",
                    Class::Tree(Family::IO) => "BTrees.IOBTree.IOBTree",
                    Class::Bucket(Family::LO) => "BTrees.LOBTree.LOBucket",
                    Class::Bucket(Family::IO) => "BTrees.IOBTree.IOBucket",
                    Class::ZBlk0 | Class::ZBlk1 => "wendelin.bigfile.file_zodb.ZBlk0 or ZBlk1",
                    Class::ZData => "wendelin.bigfile.file_zodb.ZData",
                    Class::Unknown => "a class the writer knows",
                },
            })?;
        let state = match class {
            Class::Mapping => {
                if record
                    .state()
                    .dict_get("data")
                    .and_then(|d| d.dict_items())
                    .is_none()
                {
                    return Err(Error::state(
                        oid,
                        class.path(),
                        "state is not {'data': {...}}",
                    ));
                }
                State::Mapping(MappingObj {
                    record: Some(record),
                    set: Vec::new(),
                })
            }
            Class::Array => {
                let st = decode_zbigarray(oid, &record)?;
                let zfile = self.ref_obj(&st.zfile);
                State::Array(Box::new(ArrayObj {
                    state: st,
                    zfile,
                    record: Some(record),
                }))
            }
            Class::File => {
                let st = decode_zbigfile(oid, &record)?;
                let blktab = self.ref_obj(&st.blktab);
                if !matches!(self.class(blktab), Class::Tree(Family::LO) | Class::Unknown) {
                    return Err(Error::state(oid, class.path(), "blktab is not an LOBTree"));
                }
                if let Some(o) = self.objs.get_mut(blktab) {
                    o.class = Class::Tree(Family::LO);
                }
                State::File {
                    blksize: st.blksize,
                    blktab,
                }
            }
            Class::Tree(family) | Class::Bucket(family) => {
                match decode_node::<ObjRef>(family, oid, &record)? {
                    BNode::Bucket(b) => State::Bucket(self.bucket_from_state(family, b)),
                    BNode::Tree(t) => State::Tree(self.tree_from_state(family, t)),
                }
            }
            Class::ZBlk0 | Class::ZBlk1 => match decode_zblk(oid, &record)? {
                ZBlkState::ZBlk0(s) => State::ZBlk0(BlockData::Shared(s.data.data)),
                ZBlkState::ZBlk1(s) => {
                    let chunktab = self.ref_obj(&s.chunktab);
                    if let Some(o) = self.objs.get_mut(chunktab) {
                        o.class = Class::Tree(Family::IO);
                    }
                    State::ZBlk1 { chunktab }
                }
            },
            Class::ZData => State::ZData(decode_zdata(oid, &record)?.data.data),
            Class::Unknown => unreachable_class(oid)?,
        };
        let o = self.obj_mut(id)?;
        o.class = class;
        o.serial = serial;
        o.state = state;
        if matches!(class, Class::ZBlk0 | Class::ZBlk1) {
            self.blocks.push(id);
        }
        Ok(())
    }

    fn bucket_from_state(&mut self, family: Family, b: BucketState<ObjRef>) -> BucketObj {
        let values = b.values.iter().map(|r| self.ref_obj(r)).collect();
        let next = b.next.as_ref().map(|r| self.ref_obj(r));
        if let Some(n) = next
            && let Some(o) = self.objs.get_mut(n)
        {
            o.class = Class::Bucket(family);
        }
        BucketObj {
            family,
            keys: b.keys,
            values,
            next,
        }
    }

    /// A tree node as `_BTree_setstate` builds it: an inline bucket becomes
    /// a bucket object without oid.
    fn tree_from_state(&mut self, family: Family, t: TreeState<ObjRef>) -> TreeObj {
        match t {
            TreeState::Empty => TreeObj {
                family,
                items: Vec::new(),
                firstbucket: None,
            },
            TreeState::Inline(b) => {
                let bucket = self.bucket_from_state(family, b);
                let id = self.new_obj(Class::Bucket(family), State::Bucket(bucket));
                TreeObj {
                    family,
                    items: vec![(0, id)],
                    firstbucket: Some(id),
                }
            }
            TreeState::Nodes(n) => {
                let mut items = Vec::with_capacity(n.children.len());
                for (i, c) in n.children.iter().enumerate() {
                    let key = i
                        .checked_sub(1)
                        .and_then(|j| n.keys.get(j))
                        .copied()
                        .unwrap_or(0);
                    items.push((key, self.ref_obj(c)));
                }
                let firstbucket = self.ref_obj(&n.firstbucket);
                if let Some(o) = self.objs.get_mut(firstbucket) {
                    o.class = Class::Bucket(family);
                }
                TreeObj {
                    family,
                    items,
                    firstbucket: Some(firstbucket),
                }
            }
        }
    }

    // --- the root

    /// The oid of `root[key]`, if the root has that key.
    pub fn root_get(&mut self, key: &str) -> Result<Option<Oid>> {
        self.check()?;
        let root = self.root;
        self.load(root)?;
        let State::Mapping(m) = &self.obj(root)?.state else {
            return Err(Error::Invalid("the root is not a mapping".into()));
        };
        if let Some((_, id)) = m.set.iter().rev().find(|(k, _)| k == key) {
            return Ok(self.obj(*id)?.oid);
        }
        let Some(rec) = &m.record else {
            return Ok(None);
        };
        let data = rec.state().dict_get("data");
        let Some(v) = data.and_then(|d| d.dict_get(key)) else {
            return Ok(None);
        };
        Ok(v.persistent_ref().ok().map(|r| r.oid()))
    }

    /// `root[key] = obj` (PersistentMapping `__setitem__`).
    fn root_set(&mut self, key: &str, obj: ObjId) -> Result<()> {
        let root = self.root;
        self.load(root)?;
        if let State::Mapping(m) = &mut self.obj_mut(root)?.state {
            m.set.retain(|(k, _)| k != key);
            m.set.push((key.to_owned(), obj));
        }
        self.mark_changed(root);
        Ok(())
    }

    // --- handles

    /// Opens the ZBigArray `oid` for writing.
    pub fn open_array(&mut self, oid: Oid) -> Result<ArrayId> {
        self.check()?;
        let id = self.ref_oid(oid, Class::Array);
        if self.class(id) != Class::Array {
            return Err(Error::Class {
                oid,
                found: format!("{:?}", self.class(id)),
                expected: "wendelin.bigarray.array_zodb.ZBigArray",
            });
        }
        self.load(id)?;
        Ok(ArrayId(id))
    }

    /// Opens the ZBigFile `oid` for writing.
    pub fn open_file(&mut self, oid: Oid) -> Result<FileId> {
        self.check()?;
        let id = self.ref_oid(oid, Class::File);
        if self.class(id) != Class::File {
            return Err(Error::Class {
                oid,
                found: format!("{:?}", self.class(id)),
                expected: "wendelin.bigfile.file_zodb.ZBigFile",
            });
        }
        self.load(id)?;
        Ok(FileId(id))
    }

    /// Opens `oid` as a ZBigFile, or as the file of a ZBigArray.
    pub fn open_file_or_array(&mut self, oid: Oid) -> Result<FileId> {
        self.check()?;
        let id = self.ref_oid(oid, Class::Unknown);
        self.load(id)?;
        match self.class(id) {
            Class::File => Ok(FileId(id)),
            Class::Array => self.array_file(ArrayId(id)),
            _ => Err(Error::Class {
                oid,
                found: format!("{:?}", self.class(id)),
                expected: "a ZBigFile or ZBigArray",
            }),
        }
    }

    /// The oid of an object of this writer, `None` while it is new.
    pub fn oid_of(&self, handle: impl Into<Handle>) -> Option<Oid> {
        let id = match handle.into() {
            Handle::Array(a) => a.0,
            Handle::File(f) => f.0,
        };
        self.objs.get(id).and_then(|o| o.oid)
    }

    // --- commit

    /// Commits the changes made since the last commit as a new transaction
    /// with `meta`; `None` when nothing changed (ZODB then writes no
    /// transaction either).
    pub fn commit(&mut self, meta: TxnMeta) -> Result<Option<Committed>> {
        self.check()?;
        self.commit_inner(meta, None)
    }

    /// [`commit`](Self::commit) at a given tid (later than the last
    /// transaction): what a test needs to reproduce a Python run exactly.
    pub fn commit_at(&mut self, meta: TxnMeta, tid: Tid) -> Result<Option<Committed>> {
        self.check()?;
        self.commit_inner(meta, Some(tid))
    }

    fn commit_inner(&mut self, meta: TxnMeta, tid: Option<Tid>) -> Result<Option<Committed>> {
        if let Err(e) = self.writeout() {
            self.poisoned = true;
            return Err(e);
        }
        if self.registered.is_empty() {
            self.after_commit(&[], None);
            return Ok(None);
        }
        let storage = self.storage;
        let begun = match tid {
            Some(t) => storage.tpc_begin_restore(meta, t, TxnStatus::Committed),
            None => storage.tpc_begin(meta),
        };
        let mut txn = begun.map_err(|source| {
            self.poisoned = true;
            Error::Commit {
                what: "beginning the transaction".into(),
                source,
            }
        })?;
        let stored = match self.store_all(&mut *txn) {
            Ok(s) => s,
            Err(e) => {
                txn.abort();
                self.poisoned = true;
                return Err(e);
            }
        };
        let resolved = match txn.vote() {
            Ok(r) => r,
            Err(source) => {
                txn.abort();
                self.poisoned = true;
                return Err(Error::Commit {
                    what: "voting".into(),
                    source,
                });
            }
        };
        let tid = txn.finish().map_err(|source| {
            self.poisoned = true;
            Error::Commit {
                what: "finishing".into(),
                source,
            }
        })?;
        let mut oids = Vec::with_capacity(stored.len());
        for &id in &stored {
            if let Some(o) = self.objs.get_mut(id) {
                o.serial = tid;
                if let Some(oid) = o.oid {
                    oids.push(oid);
                    // A conflict resolver changed what was stored: forget
                    // our copy, the next use reloads it.
                    if resolved.contains(&oid) {
                        o.state = State::Ghost;
                    }
                }
            }
        }
        self.after_commit(&stored, Some(tid));
        Ok(Some(Committed { tid, oids }))
    }

    /// ZODB's `Connection.commit` + `_store_objects`: stores the registered
    /// objects in order, each followed by the new objects its pickle
    /// reached, last reached first. Returns the objects stored, in order.
    fn store_all(&mut self, txn: &mut dyn TpcTxn) -> Result<Vec<ObjId>> {
        let registered = std::mem::take(&mut self.registered);
        let mut stored = Vec::new();
        for id in registered {
            if !self.is_changed(id) || stored.contains(&id) {
                continue;
            }
            let mut stack = vec![id];
            while let Some(o) = stack.pop() {
                let data = self.serialize(o, &mut stack)?;
                let obj = self.obj(o)?;
                let (oid, serial) = (obj.oid.unwrap_or(ROOT), obj.serial);
                txn.store(oid, serial, Bytes::from(data))
                    .map_err(|source| Error::Commit {
                        what: format!("storing {}", self.describe(o)),
                        source,
                    })?;
                stored.push(o);
            }
        }
        Ok(stored)
    }

    /// Resets `_p_changed` and turns block objects back into ghosts (their
    /// data is in the database now; see "Memory" in the module docs).
    fn after_commit(&mut self, stored: &[ObjId], _tid: Option<Tid>) {
        for id in std::mem::take(&mut self.touched) {
            if let Some(o) = self.objs.get_mut(id) {
                o.changed = false;
            }
        }
        self.registered.clear();
        let mut blocks = std::mem::take(&mut self.blocks);
        blocks.extend(
            stored
                .iter()
                .copied()
                .filter(|&id| matches!(self.class(id), Class::ZBlk0 | Class::ZBlk1 | Class::ZData)),
        );
        blocks.sort_unstable();
        blocks.dedup();
        for id in blocks {
            self.ghostify_block(id);
        }
        // The root and arrays are re-read when next needed, so that their
        // records (re-pickled on the next change) hold what was just stored.
        for &id in stored {
            if let Some(o) = self.objs.get_mut(id)
                && matches!(o.class, Class::Mapping | Class::Array)
            {
                o.state = State::Ghost;
            }
        }
    }

    /// Drops a block object's data (ZBlk1: its whole chunk tree and ZData
    /// objects, which nothing else references).
    fn ghostify_block(&mut self, id: ObjId) {
        let Some(o) = self.objs.get(id) else { return };
        match (&o.state, o.class) {
            (State::ZBlk1 { chunktab }, _) => {
                let chunktab = *chunktab;
                self.free_tree(chunktab);
            }
            (State::Free, _) => return,
            (_, Class::ZBlk0 | Class::ZBlk1 | Class::ZData) => {}
            _ => return,
        }
        self.unload_or_free(id);
    }

    /// A ghost again if it has an oid; freed if it never got one (an object
    /// made and dropped in the same transaction).
    fn unload_or_free(&mut self, id: ObjId) {
        let Some(o) = self.objs.get_mut(id) else {
            return;
        };
        match o.oid {
            Some(_) => o.state = State::Ghost,
            None => {
                o.state = State::Free;
                self.free.push(id);
            }
        }
    }

    /// Frees a chunk tree: its nodes, buckets and ZData objects.
    fn free_tree(&mut self, id: ObjId) {
        let mut todo = vec![id];
        while let Some(id) = todo.pop() {
            let Some(o) = self.objs.get_mut(id) else {
                continue;
            };
            match std::mem::replace(&mut o.state, State::Free) {
                State::Tree(t) => todo.extend(t.items.iter().map(|(_, c)| *c)),
                State::Bucket(b) => todo.extend(b.values.iter().copied()),
                State::Free => continue,
                _ => {}
            }
            if let Some(oid) = o.oid {
                self.by_oid.remove(&oid);
            }
            self.free.push(id);
        }
    }

    /// A reference to `id` for a pickle being written: ZODB's
    /// `persistent_id`, which gives a new object its oid (the storage's
    /// next) and pushes it on the commit stack.
    fn reference(&mut self, id: ObjId, stack: &mut Vec<ObjId>) -> Result<ObjRef> {
        let class = self.class(id);
        let oid = match self.obj(id)?.oid {
            Some(oid) => oid,
            None => {
                let oid = self
                    .storage
                    .new_oids(1)
                    .map_err(|source| Error::Commit {
                        what: "allocating an oid".into(),
                        source,
                    })?
                    .first()
                    .copied()
                    .ok_or_else(|| Error::Invalid("the storage gave no oid".into()))?;
                self.obj_mut(id)?.oid = Some(oid);
                self.by_oid.insert(oid, id);
                stack.push(id);
                oid
            }
        };
        let (m, n) = class.path();
        Ok(ObjRef {
            oid,
            class: Some(GlobalName::new(m, n)),
        })
    }

    /// Pickles object `id` (`ObjectWriter.serialize`), allocating oids for
    /// the new objects it references, in pickle order.
    fn serialize(&mut self, id: ObjId, stack: &mut Vec<ObjId>) -> Result<Vec<u8>> {
        let d = self.dialect;
        let state = self.obj(id)?.state.clone();
        let class = self.class(id);
        match state {
            State::Mapping(m) => self.serialize_mapping(m, stack),
            State::Array(a) => self.serialize_array(*a, stack),
            State::File { blksize, blktab } => {
                let blktab = self.reference(blktab, stack)?;
                encode::encode_zbigfile(&ZBigFileState { blksize, blktab }, d)
            }
            State::Tree(t) => {
                let st = self.tree_state(&t, stack)?;
                encode::encode_tree(t.family, &st, d)
            }
            State::Bucket(b) => {
                let st = self.bucket_state(&b, stack)?;
                encode::encode_bucket(b.family, &st, d)
            }
            State::ZBlk0(data) => {
                let frame = match &self.zblk0_frame {
                    Some(f) => f,
                    None => self.zblk0_frame.insert(encode::ZBlk0Frame::new(d)?),
                };
                match (frame, data) {
                    (Some(frame), data) => frame.encode(data.as_slice()),
                    (None, data) => {
                        let data = match data {
                            BlockData::Shared(b) => b,
                            BlockData::Lent(s) => Bytes::copy_from_slice(s),
                        };
                        encode::encode_zblk(
                            &ZBlkState::ZBlk0(ZBlk0State {
                                data: self.binary(data),
                                legacy_name: false,
                            }),
                            d,
                        )
                    }
                }
            }
            State::ZBlk1 { chunktab } => {
                let chunktab = self.reference(chunktab, stack)?;
                encode::encode_zblk(&ZBlkState::ZBlk1(ZBlk1State { chunktab }), d)
            }
            State::ZData(data) => encode::encode_zdata(
                &ZDataState {
                    data: self.binary(data),
                },
                d,
            ),
            State::Ghost | State::Free => Err(Error::Invalid(format!(
                "{} ({class:?}) is registered but not loaded",
                self.describe(id)
            ))),
        }
    }

    /// Block data in this dialect's natural spelling.
    fn binary(&self, data: Bytes) -> Binary {
        let kind = match (self.dialect.flavor(), self.dialect.protocol()) {
            (Flavor::Py2, _) => BinaryKind::Str,
            (Flavor::Py3, 3) => BinaryKind::Bytes,
            (Flavor::Py3, _) if data.is_empty() => BinaryKind::EmptyBytesCall,
            (Flavor::Py3, _) => BinaryKind::Latin1,
        };
        Binary { data, kind }
    }

    fn bucket_state(
        &mut self,
        b: &BucketObj,
        stack: &mut Vec<ObjId>,
    ) -> Result<BucketState<ObjRef>> {
        let mut values = Vec::with_capacity(b.values.len());
        for &v in &b.values {
            values.push(self.reference(v, stack)?);
        }
        let next = match b.next {
            Some(n) => Some(self.reference(n, stack)?),
            None => None,
        };
        Ok(BucketState {
            keys: b.keys.clone(),
            values,
            next,
        })
    }

    /// `BTree.__getstate__`: `None`, the lone oid-less bucket inline, or
    /// children and firstbucket.
    fn tree_state(&mut self, t: &TreeObj, stack: &mut Vec<ObjId>) -> Result<TreeState<ObjRef>> {
        match t.items.as_slice() {
            [] => Ok(TreeState::Empty),
            [(_, only)]
                if matches!(self.class(*only), Class::Bucket(_)) && !self.has_oid(*only) =>
            {
                let only = *only;
                self.load(only)?;
                let State::Bucket(b) = self.obj(only)?.state.clone() else {
                    return Err(Error::Invalid("inline bucket without state".into()));
                };
                Ok(TreeState::Inline(self.bucket_state(&b, stack)?))
            }
            items => {
                let mut children = Vec::with_capacity(items.len());
                let mut keys = Vec::with_capacity(items.len());
                for (i, &(k, c)) in items.iter().enumerate() {
                    if i > 0 {
                        keys.push(k);
                    }
                    children.push(self.reference(c, stack)?);
                }
                let first = t
                    .firstbucket
                    .ok_or_else(|| Error::Invalid("BTree node without firstbucket".into()))?;
                let firstbucket = self.reference(first, stack)?;
                Ok(TreeState::Nodes(TreeNodes {
                    children,
                    keys,
                    firstbucket,
                }))
            }
        }
    }

    /// The root mapping, re-pickled from its record with the entries set
    /// since: a replaced key keeps its place, new keys come last (a dict's
    /// order). References to new objects get their oids in pickle order.
    fn serialize_mapping(&mut self, m: MappingObj, stack: &mut Vec<ObjId>) -> Result<Vec<u8>> {
        let d = self.dialect;
        let (mut sb, state, data_dict) = match m.record {
            Some(rec) => {
                let state = rec.state;
                let data = rec
                    .state()
                    .dict_items()
                    .and_then(|mut it| it.find(|(k, _)| k.as_text() == Some("data")))
                    .map(|(_, v)| v.id())
                    .ok_or_else(|| Error::Invalid("the root is not {'data': {...}}".into()))?;
                let sb = StateBuilder::with_builder(GraphBuilder::from_graph(rec.graph), d);
                (sb, state, data)
            }
            None => {
                let mut sb = StateBuilder::new(d);
                let data = sb.dict([]);
                let key = sb.name("data");
                let state = sb.dict([(key, data)]);
                (sb, state, data)
            }
        };
        // Pickle order: the dict's items in order; new references are
        // numbered as they come.
        let mut items = match sb.builder().graph().node(data_dict) {
            Node::Dict(items) => items.clone(),
            _ => return Err(Error::Invalid("the root's data is not a dict".into())),
        };
        let mut values: Vec<(usize, ObjId)> = Vec::new();
        for (key, obj) in &m.set {
            let pos = items
                .iter()
                .position(|(k, _)| sb.builder().graph().value(*k).as_text() == Some(key.as_str()));
            let i = match pos {
                Some(i) => i,
                None => {
                    let k = sb.text(key);
                    let placeholder = sb.none();
                    items.push((k, placeholder));
                    items.len() - 1
                }
            };
            values.retain(|(j, _)| *j != i);
            values.push((i, *obj));
        }
        values.sort_unstable_by_key(|(i, _)| *i);
        for (i, obj) in values {
            let r = self.reference(obj, stack)?;
            let node = sb.objref(&r);
            if let Some(item) = items.get_mut(i) {
                item.1 = node;
            }
        }
        *sb.builder().graph_mut().node_mut(data_dict) = Node::Dict(items);
        sb.record(Class::Mapping.path(), state)
    }

    /// A ZBigArray: a new one from its state, a loaded one by re-pickling
    /// its record with the new `_shape` and `_stridev` (and the `_order`
    /// that `__setstate__` adds to arrays saved before it existed, last).
    fn serialize_array(&mut self, a: ArrayObj, stack: &mut Vec<ObjId>) -> Result<Vec<u8>> {
        let d = self.dialect;
        let zfile = self.reference(a.zfile, stack)?;
        let Some(rec) = a.record else {
            let mut st = a.state;
            st.zfile = zfile;
            return encode::encode_zbigarray(&st, d);
        };
        let dict = match rec.state().as_tuple() {
            Some(t) => t.get(0).map(|v| v.id()),
            None => Some(rec.state),
        }
        .ok_or_else(|| Error::Invalid("ZBigArray state without dict".into()))?;
        let state_root = rec.state;
        let mut sb = StateBuilder::with_builder(GraphBuilder::from_graph(rec.graph), d);
        let mut items = match sb.builder().graph().node(dict) {
            Node::Dict(items) => items.clone(),
            _ => return Err(Error::Invalid("ZBigArray dict is not a dict".into())),
        };
        let find = |sb: &mut StateBuilder, items: &[(NodeId, NodeId)], k: &str| {
            items
                .iter()
                .position(|(key, _)| sb.builder().graph().value(*key).as_text() == Some(k))
        };
        let shape = sb.int_tuple(&a.state.shape)?;
        let stridev = sb.int_tuple(&a.state.stridev)?;
        for (k, v) in [("_shape", shape), ("_stridev", stridev)] {
            match find(&mut sb, &items, k) {
                Some(i) => {
                    if let Some(item) = items.get_mut(i) {
                        item.1 = v;
                    }
                }
                None => return Err(Error::Invalid(format!("ZBigArray record without {k}"))),
            }
        }
        if find(&mut sb, &items, "_order").is_none() {
            // `__setstate__` sets the default `'C'` (a singleton literal);
            // strings in the record were unpickled, and the unpickler
            // makes fresh one-character strings: no memo sharing.
            let order = a.state.order.unwrap_or(crate::format::Order::C);
            let value = sb.builder().text(&order.as_char().to_string());
            let key = sb.name("_order");
            items.push((key, value));
        }
        *sb.builder().graph_mut().node_mut(dict) = Node::Dict(items);
        // The zfile reference is rewritten too: the same oid and class, so
        // the same bytes, but from the live reference as Python pickles it.
        let _ = zfile;
        sb.record(Class::Array.path(), state_root)
    }
}

/// Which object a public handle names.
#[derive(Clone, Copy, Debug)]
pub enum Handle {
    /// A ZBigArray.
    Array(ArrayId),
    /// A ZBigFile.
    File(FileId),
}

impl From<ArrayId> for Handle {
    fn from(a: ArrayId) -> Handle {
        Handle::Array(a)
    }
}

impl From<FileId> for Handle {
    fn from(f: FileId) -> Handle {
        Handle::File(f)
    }
}

fn unreachable_class(oid: Oid) -> Result<State<'static>> {
    Err(Error::Class {
        oid,
        found: "an unknown class".into(),
        expected: "a class the writer knows",
    })
}
