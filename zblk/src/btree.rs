//! LOBTree/IOBTree and their buckets: state decoding and a reader that
//! walks a tree stored as separate objects (spec wendelin.md §7).
//!
//! A ZBigFile's `blktab` (LOBTree: block number → ZBlk) and a ZBlk1's
//! `chunktab` (IOBTree: offset → ZData) are BTrees whose nodes and buckets
//! are objects of their own, so reading one block means loading a path of
//! nodes. The states, as BTrees 6.5 writes them:
//!
//! | object | state |
//! |---|---|
//! | empty tree | `None` |
//! | tree whose only bucket was never stored apart | `((bucket_state,),)` |
//! | tree with stored children | `((child0, key1, child1, ...), firstbucket)` |
//! | bucket | `((k0, v0, k1, v1, ...),)` or `(..., next_bucket)` |
//!
//! The reader never trusts the data: keys must increase within a bucket and
//! across the walk, every key must lie between the separators that lead to
//! its bucket, a node met twice is a cycle, and depth is bounded. Each of
//! these is an error naming the tree and the node, instead of a loop, a
//! stack overflow or a silently wrong lookup.

use std::collections::HashSet;

use zodb_core::pickle::{Record, Value};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, Tid};

use crate::error::{Error, Result};
use crate::format::{ObjRef, describe, record_class};
use crate::store;

/// Deepest tree the reader walks. BTrees' nodes hold at least hundreds of
/// children, so ten levels already index more keys than an int64 has; the
/// bound only stops cyclic or hostile data.
pub const MAX_DEPTH: usize = 64;

/// The key type of a tree family, which also fixes its class names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `BTrees.IOBTree`: int32 keys (ZBlk1 chunk tables).
    IO,
    /// `BTrees.LOBTree`: int64 keys (ZBigFile block tables).
    LO,
}

impl Family {
    /// The module, e.g. `BTrees.LOBTree`.
    pub fn module(self) -> &'static str {
        match self {
            Family::IO => "BTrees.IOBTree",
            Family::LO => "BTrees.LOBTree",
        }
    }

    /// The tree class name, e.g. `LOBTree`.
    pub fn tree_class(self) -> &'static str {
        match self {
            Family::IO => "IOBTree",
            Family::LO => "LOBTree",
        }
    }

    /// The bucket class name, e.g. `LOBucket`.
    pub fn bucket_class(self) -> &'static str {
        match self {
            Family::IO => "IOBucket",
            Family::LO => "LOBucket",
        }
    }

    /// Whether `key` fits the family's key type.
    pub fn key_fits(self, key: i64) -> bool {
        match self {
            Family::IO => i32::try_from(key).is_ok(),
            Family::LO => true,
        }
    }

    fn tree_path(self) -> (&'static str, &'static str) {
        (self.module(), self.tree_class())
    }

    fn bucket_path(self) -> (&'static str, &'static str) {
        (self.module(), self.bucket_class())
    }
}

/// A value stored in a bucket, decoded from its pickle.
pub trait BTreeValue: Sized + Clone {
    /// Reads a value; the error says what is wrong with it.
    fn from_value(v: Value<'_>) -> Result<Self, String>;
}

impl BTreeValue for ObjRef {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        ObjRef::from_value(v)
    }
}

impl BTreeValue for i64 {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        v.as_int()
            .ok_or_else(|| format!("value {} is not an int", describe(v)))
    }
}

/// A bucket's state: sorted keys, their values, and the next bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketState<V> {
    /// Keys, strictly increasing.
    pub keys: Vec<i64>,
    /// `values[i]` belongs to `keys[i]`.
    pub values: Vec<V>,
    /// The next bucket in key order (the tree's leaf chain), if any.
    pub next: Option<ObjRef>,
}

impl<V: BTreeValue> BucketState<V> {
    /// Reads `((k0, v0, ...),)` or `((k0, v0, ...), next)`.
    pub fn from_state(family: Family, v: Value<'_>) -> Result<BucketState<V>, String> {
        let t = v
            .as_tuple()
            .ok_or_else(|| format!("bucket state is {}, expected a tuple", describe(v)))?;
        let (items, next) = match (t.get(0), t.get(1), t.len()) {
            (Some(items), None, 1) => (items, None),
            (Some(items), Some(next), 2) => (
                items,
                Some(ObjRef::from_value(next).map_err(|e| format!("next bucket: {e}"))?),
            ),
            _ => {
                return Err(format!(
                    "bucket state has {} items, expected (items,) or (items, next)",
                    t.len()
                ));
            }
        };
        let items = items
            .as_tuple()
            .ok_or_else(|| format!("bucket items are {}, expected a tuple", describe(items)))?;
        if items.len() % 2 != 0 {
            return Err(format!(
                "bucket has {} key/value items, an odd number",
                items.len()
            ));
        }
        let n = items.len() / 2;
        let mut keys = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        let mut it = items.iter();
        while let (Some(k), Some(val)) = (it.next(), it.next()) {
            let i = keys.len();
            let k = key(family, k).map_err(|e| format!("[{i}]: {e}"))?;
            if let Some(&prev) = keys.last()
                && k <= prev
            {
                return Err(format!("[{i}]: key {k} does not increase (after {prev})"));
            }
            keys.push(k);
            values.push(V::from_value(val).map_err(|e| format!("[{i}] (key {k}): {e}"))?);
        }
        Ok(BucketState { keys, values, next })
    }

    /// The value of `key`.
    pub fn get(&self, key: i64) -> Option<&V> {
        let i = self.keys.binary_search(&key).ok()?;
        self.values.get(i)
    }
}

/// The children of a tree node stored as separate objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNodes {
    /// Buckets (at the leaf level) or tree nodes of the same class.
    pub children: Vec<ObjRef>,
    /// `keys[i]` separates `children[i]` and `children[i + 1]`: every key
    /// of `children[i + 1]` is `>= keys[i]`, every key of `children[i]` is
    /// below it. One fewer than `children`, strictly increasing.
    pub keys: Vec<i64>,
    /// The leftmost leaf bucket of the whole tree.
    pub firstbucket: ObjRef,
}

/// A tree node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeState<V> {
    /// `None`: no keys at all.
    Empty,
    /// `((bucket_state,),)`: one bucket pickled inside the tree, as BTrees
    /// writes a small tree whose bucket never got an oid of its own.
    Inline(BucketState<V>),
    /// `((child0, key1, child1, ...), firstbucket)`.
    Nodes(TreeNodes),
}

impl<V: BTreeValue> TreeState<V> {
    /// Reads any of the three tree state forms.
    pub fn from_state(family: Family, v: Value<'_>) -> Result<TreeState<V>, String> {
        if v.is_none() {
            return Ok(TreeState::Empty);
        }
        let t = v
            .as_tuple()
            .ok_or_else(|| format!("tree state is {}, expected None or a tuple", describe(v)))?;
        match (t.get(0), t.get(1), t.len()) {
            (Some(inner), None, 1) => {
                let inner = inner.as_tuple().filter(|i| i.len() == 1).ok_or_else(|| {
                    format!(
                        "single-bucket tree holds {}, expected (bucket_state,)",
                        describe(inner)
                    )
                })?;
                let bucket = inner.get(0).ok_or("empty inline bucket")?;
                let b = BucketState::from_state(family, bucket)
                    .map_err(|e| format!("inline bucket: {e}"))?;
                Ok(TreeState::Inline(b))
            }
            (Some(data), Some(first), 2) => {
                let data = data
                    .as_tuple()
                    .ok_or_else(|| format!("tree data is {}, expected a tuple", describe(data)))?;
                if data.len() % 2 == 0 {
                    return Err(format!(
                        "tree data has {} items, expected an odd number",
                        data.len()
                    ));
                }
                let mut children = Vec::with_capacity(data.len() / 2 + 1);
                let mut keys = Vec::with_capacity(data.len() / 2);
                for (i, item) in data.iter().enumerate() {
                    if i % 2 == 0 {
                        children.push(
                            ObjRef::from_value(item)
                                .map_err(|e| format!("child {}: {e}", i / 2))?,
                        );
                    } else {
                        let k = key(family, item).map_err(|e| format!("key {}: {e}", i / 2 + 1))?;
                        if let Some(&prev) = keys.last()
                            && k <= prev
                        {
                            return Err(format!(
                                "key {}: separator {k} does not increase (after {prev})",
                                i / 2 + 1
                            ));
                        }
                        keys.push(k);
                    }
                }
                let firstbucket =
                    ObjRef::from_value(first).map_err(|e| format!("firstbucket: {e}"))?;
                Ok(TreeState::Nodes(TreeNodes {
                    children,
                    keys,
                    firstbucket,
                }))
            }
            _ => Err(format!("tree state has {} items, expected 1 or 2", t.len())),
        }
    }
}

fn key(family: Family, v: Value<'_>) -> Result<i64, String> {
    let k = v
        .as_int()
        .ok_or_else(|| format!("key {} is not an int", describe(v)))?;
    if !family.key_fits(k) {
        return Err(format!("key {k} does not fit {}", family.tree_class()));
    }
    Ok(k)
}

/// What an object of a tree turned out to be once loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node<V> {
    /// A bucket.
    Bucket(BucketState<V>),
    /// A tree node (the root or an inner node).
    Tree(TreeState<V>),
}

/// Decodes a loaded tree object: a bucket or a tree node of `family`.
pub fn decode_node<V: BTreeValue>(family: Family, oid: Oid, record: &Record) -> Result<Node<V>> {
    let class = record.class_path();
    if class == Some(family.bucket_path()) {
        BucketState::from_state(family, record.state())
            .map(Node::Bucket)
            .map_err(|e| Error::state(oid, family.bucket_path(), e))
    } else if class == Some(family.tree_path()) {
        TreeState::from_state(family, record.state())
            .map(Node::Tree)
            .map_err(|e| Error::state(oid, family.tree_path(), e))
    } else {
        Err(Error::Class {
            oid,
            found: record_class(record),
            expected: match family {
                Family::IO => "BTrees.IOBTree.IOBTree or IOBucket",
                Family::LO => "BTrees.LOBTree.LOBTree or LOBucket",
            },
        })
    }
}

/// How much a walk loaded: objects and their pickle bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Objects loaded.
    pub objects: u64,
    /// Sum of their pickle sizes.
    pub bytes: u64,
}

/// A BTree (or a lone bucket) as of a snapshot. The root is loaded once;
/// other nodes are loaded as lookups and walks reach them, and dropped
/// after.
#[derive(Debug)]
pub struct BTree<'s, S: ReadStorage + ?Sized, V> {
    snap: Snapshot<'s, S>,
    family: Family,
    oid: Oid,
    serial: Tid,
    root: Node<V>,
    root_size: u64,
}

impl<'s, S: ReadStorage + ?Sized, V: BTreeValue> BTree<'s, S, V> {
    /// Loads the tree (or bucket) `oid` of `family` as of `snap`.
    pub fn open(snap: Snapshot<'s, S>, family: Family, oid: Oid) -> Result<Self> {
        let loaded = store::load(&snap, oid)?;
        let root = decode_node(family, oid, &loaded.record)?;
        Ok(BTree {
            snap,
            family,
            oid,
            serial: loaded.serial,
            root,
            root_size: loaded.size,
        })
    }

    /// The root's oid.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The root's serial (the transaction that last wrote it).
    pub fn serial(&self) -> Tid {
        self.serial
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The root's decoded state.
    pub fn root(&self) -> &Node<V> {
        &self.root
    }

    /// The root's pickle size.
    pub fn root_size(&self) -> u64 {
        self.root_size
    }

    fn load_node(&self, oid: Oid, stats: &mut LoadStats) -> Result<Node<V>> {
        let loaded = store::load(&self.snap, oid)?;
        stats.objects += 1;
        stats.bytes += loaded.size;
        decode_node(self.family, oid, &loaded.record)
    }

    /// The value of `key`, loading one path from the root.
    pub fn get(&self, key: i64) -> Result<Option<V>> {
        let mut path = vec![self.oid];
        let mut stats = LoadStats::default();
        let mut owned;
        let mut node = &self.root;
        loop {
            let nodes = match node {
                Node::Bucket(b) | Node::Tree(TreeState::Inline(b)) => {
                    return Ok(b.get(key).cloned());
                }
                Node::Tree(TreeState::Empty) => return Ok(None),
                Node::Tree(TreeState::Nodes(n)) => n,
            };
            let i = nodes.keys.partition_point(|&k| k <= key);
            let Some(child) = nodes.children.get(i).map(|c| c.oid) else {
                return Ok(None);
            };
            self.enter(&mut path, child)?;
            owned = self.load_node(child, &mut stats)?;
            node = &owned;
        }
    }

    /// Checks that descending into `oid` closes no cycle and stays within
    /// [`MAX_DEPTH`], then records it on the path.
    fn enter(&self, path: &mut Vec<Oid>, oid: Oid) -> Result<()> {
        if path.contains(&oid) {
            return Err(Error::TreeCycle {
                tree: self.oid,
                oid,
            });
        }
        if path.len() >= MAX_DEPTH {
            return Err(Error::TreeDepth {
                tree: self.oid,
                oid,
                max: MAX_DEPTH,
            });
        }
        path.push(oid);
        Ok(())
    }

    /// All `(key, value)` pairs in key order.
    pub fn iter(&self) -> Iter<'_, 's, S, V> {
        Iter::new(self, None)
    }

    /// The pairs with `key >= start`, in key order; subtrees wholly below
    /// `start` are not loaded.
    pub fn iter_from(&self, start: i64) -> Iter<'_, 's, S, V> {
        Iter::new(self, Some(start))
    }

    /// The largest key and its value (BTrees' `maxKey`), `None` when the
    /// tree is empty. Loads one path, plus siblings only where a subtree
    /// turns out empty.
    pub fn last(&self) -> Result<Option<(i64, V)>> {
        let mut stats = LoadStats::default();
        let mut visited = HashSet::from([self.oid]);
        let mut stack: Vec<(TreeNodes, usize)> = Vec::new();
        let mut node = self.root.clone();
        loop {
            match node {
                Node::Bucket(b) | Node::Tree(TreeState::Inline(b)) => {
                    if let (Some(k), Some(v)) = (b.keys.last(), b.values.last()) {
                        return Ok(Some((*k, v.clone())));
                    }
                }
                Node::Tree(TreeState::Empty) => {}
                Node::Tree(TreeState::Nodes(n)) => {
                    let len = n.children.len();
                    stack.push((n, len));
                }
            }
            // Next subtree to try: the rightmost untried child.
            let child = loop {
                let Some((nodes, remaining)) = stack.last_mut() else {
                    return Ok(None);
                };
                if *remaining == 0 {
                    stack.pop();
                    continue;
                }
                *remaining -= 1;
                if let Some(c) = nodes.children.get(*remaining) {
                    break c.oid;
                }
            };
            if !visited.insert(child) {
                return Err(Error::TreeCycle {
                    tree: self.oid,
                    oid: child,
                });
            }
            if stack.len() >= MAX_DEPTH {
                return Err(Error::TreeDepth {
                    tree: self.oid,
                    oid: child,
                    max: MAX_DEPTH,
                });
            }
            node = self.load_node(child, &mut stats)?;
        }
    }

    /// The largest key, `None` when empty.
    pub fn max_key(&self) -> Result<Option<i64>> {
        Ok(self.last()?.map(|(k, _)| k))
    }
}

/// One level of an in-order walk.
enum Frame<V> {
    Tree {
        nodes: TreeNodes,
        next: usize,
        lo: Option<i64>,
        hi: Option<i64>,
    },
    Bucket {
        oid: Oid,
        bucket: BucketState<V>,
        pos: usize,
        lo: Option<i64>,
        hi: Option<i64>,
    },
}

/// In-order walk over a [`BTree`]: yields `(key, value)` pairs and loads
/// each node when reached, so memory stays one path of nodes. After an
/// error it yields nothing more.
pub struct Iter<'t, 's, S: ReadStorage + ?Sized, V> {
    tree: &'t BTree<'s, S, V>,
    start: Option<i64>,
    stack: Vec<Frame<V>>,
    visited: HashSet<Oid>,
    last_key: Option<i64>,
    stats: LoadStats,
    failed: bool,
}

impl<S: ReadStorage + ?Sized, V> std::fmt::Debug for Iter<'_, '_, S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("tree", &self.tree.oid)
            .field("depth", &self.stack.len())
            .field("last_key", &self.last_key)
            .finish()
    }
}

impl<'t, 's, S: ReadStorage + ?Sized, V: BTreeValue> Iter<'t, 's, S, V> {
    fn new(tree: &'t BTree<'s, S, V>, start: Option<i64>) -> Self {
        let mut it = Iter {
            tree,
            start,
            stack: Vec::new(),
            visited: HashSet::from([tree.oid]),
            last_key: None,
            stats: LoadStats::default(),
            failed: false,
        };
        it.push(tree.oid, tree.root.clone(), None, None);
        it
    }

    /// What the walk has loaded so far (the root not included).
    pub fn stats(&self) -> LoadStats {
        self.stats
    }

    fn push(&mut self, oid: Oid, node: Node<V>, lo: Option<i64>, hi: Option<i64>) {
        match node {
            Node::Bucket(bucket) | Node::Tree(TreeState::Inline(bucket)) => {
                let pos = self
                    .start
                    .map_or(0, |s| bucket.keys.partition_point(|&k| k < s));
                self.stack.push(Frame::Bucket {
                    oid,
                    bucket,
                    pos,
                    lo,
                    hi,
                });
            }
            Node::Tree(TreeState::Empty) => {}
            Node::Tree(TreeState::Nodes(nodes)) => {
                let next = self
                    .start
                    .map_or(0, |s| nodes.keys.partition_point(|&k| k <= s));
                self.stack.push(Frame::Tree {
                    nodes,
                    next,
                    lo,
                    hi,
                });
            }
        }
    }

    fn step(&mut self) -> Result<Option<(i64, V)>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            match top {
                Frame::Bucket {
                    oid,
                    bucket,
                    pos,
                    lo,
                    hi,
                } => {
                    let (Some(&k), Some(v)) = (bucket.keys.get(*pos), bucket.values.get(*pos))
                    else {
                        self.stack.pop();
                        continue;
                    };
                    *pos += 1;
                    let in_range = lo.is_none_or(|lo| k >= lo) && hi.is_none_or(|hi| k < hi);
                    let increasing = self.last_key.is_none_or(|last| k > last);
                    if !in_range || !increasing {
                        let what = if in_range {
                            format!(
                                "key {k} comes after key {:?} of an earlier bucket",
                                self.last_key
                            )
                        } else {
                            format!(
                                "key {k} is outside the range [{lo:?}, {hi:?}) its parent gives"
                            )
                        };
                        return Err(Error::state(*oid, self.tree.family.bucket_path(), what));
                    }
                    self.last_key = Some(k);
                    return Ok(Some((k, v.clone())));
                }
                Frame::Tree {
                    nodes,
                    next,
                    lo,
                    hi,
                    ..
                } => {
                    let i = *next;
                    let Some(child) = nodes.children.get(i) else {
                        self.stack.pop();
                        continue;
                    };
                    *next += 1;
                    let child = child.oid;
                    let child_lo = match i.checked_sub(1) {
                        Some(j) => nodes.keys.get(j).copied(),
                        None => *lo,
                    };
                    let child_hi = nodes.keys.get(i).copied().or(*hi);
                    if !self.visited.insert(child) {
                        return Err(Error::TreeCycle {
                            tree: self.tree.oid,
                            oid: child,
                        });
                    }
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(Error::TreeDepth {
                            tree: self.tree.oid,
                            oid: child,
                            max: MAX_DEPTH,
                        });
                    }
                    let node = self.tree.load_node(child, &mut self.stats)?;
                    self.push(child, node, child_lo, child_hi);
                }
            }
        }
    }
}

impl<S: ReadStorage + ?Sized, V: BTreeValue> Iterator for Iter<'_, '_, S, V> {
    type Item = Result<(i64, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(item) => item.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
