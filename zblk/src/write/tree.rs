//! LOBTree/IOBTree inserts, deletes and lookups on the writer's objects,
//! transcribed from BTrees 6.5 (`BTreeTemplate.c`: `_BTree_set`,
//! `BTree_grow`, `BTree_split`, `BTree_split_root`, `BTree_lastBucket`,
//! `BTree_deleteNextBucket`, `BTree_clear`; `BucketTemplate.c`:
//! `_bucket_set`, `bucket_split`, `Bucket_deleteNextBucket`).
//!
//! What must match is not only the shape of the resulting tree but which
//! objects are marked changed, in which order (that is the order of the
//! records) and which new objects appear where (that decides their oids):
//! every `PER_CHANGED` of the C code is a [`Writer::mark_changed`] here, at
//! the same point.

use zodb_core::WriteStorage;

use super::{BucketObj, Class, ObjId, State, TreeObj, Writer};
use crate::btree::Family;
use crate::error::{Error, Result};

/// `max_leaf_size` of IOBTree and LOBTree: a bucket splits when an insert
/// makes it longer.
pub(super) const MAX_LEAF: usize = 60;
/// `max_internal_size`: a non-root node splits when it gets more children;
/// the root holds up to twice this minus one.
pub(super) const MAX_INTERNAL: usize = 500;

/// `_BTree_set`'s status: 0 nothing changed in size, 1 the size changed,
/// 2 (deletes only) the subtree's first bucket went away.
type Status = u8;

impl<'s, S: WriteStorage + ?Sized> Writer<'s, S> {
    fn tree(&mut self, id: ObjId) -> Result<&mut TreeObj> {
        self.load(id)?;
        let d = self.describe(id);
        match &mut self.obj_mut(id)?.state {
            State::Tree(t) => Ok(t),
            _ => Err(Error::Invalid(format!("{d} is not a BTree node"))),
        }
    }

    fn bucket(&mut self, id: ObjId) -> Result<&mut BucketObj> {
        self.load(id)?;
        let d = self.describe(id);
        match &mut self.obj_mut(id)?.state {
            State::Bucket(b) => Ok(b),
            _ => Err(Error::Invalid(format!("{d} is not a bucket"))),
        }
    }

    /// `SameType_Check(tree, child)`: a child of the tree's own class is an
    /// inner node, anything else a bucket.
    fn is_tree_node(&mut self, id: ObjId) -> Result<bool> {
        if self.class(id) == super::Class::Unknown {
            self.load(id)?;
        }
        Ok(matches!(self.class(id), Class::Tree(_)))
    }

    /// Entries of a node: children of a tree node, keys of a bucket.
    fn node_len(&mut self, id: ObjId) -> Result<usize> {
        if self.is_tree_node(id)? {
            Ok(self.tree(id)?.items.len())
        } else {
            Ok(self.bucket(id)?.keys.len())
        }
    }

    /// `BTREE_SEARCH`: the child whose range holds `key` (the last one
    /// whose separator is `<= key`; separator 0 is minus infinity).
    fn search(t: &TreeObj, key: i64) -> usize {
        t.items
            .get(1..)
            .map_or(0, |rest| rest.partition_point(|&(k, _)| k <= key))
    }

    /// `tree.get(key)`.
    pub(super) fn tree_get(&mut self, t: ObjId, key: i64) -> Result<Option<ObjId>> {
        let mut node = t;
        loop {
            if self.is_tree_node(node)? {
                let tree = self.tree(node)?;
                let Some(&(_, child)) = tree.items.get(Self::search(tree, key)) else {
                    return Ok(None);
                };
                node = child;
            } else {
                let b = self.bucket(node)?;
                return Ok(b
                    .keys
                    .binary_search(&key)
                    .ok()
                    .and_then(|i| b.values.get(i).copied()));
            }
        }
    }

    /// `tree.maxKey()`, `None` when empty.
    pub(super) fn tree_max_key(&mut self, t: ObjId) -> Result<Option<i64>> {
        if self.tree(t)?.items.is_empty() {
            return Ok(None);
        }
        let b = self.last_bucket(t)?;
        Ok(self.bucket(b)?.keys.last().copied())
    }

    /// All `(key, value)` pairs in key order (`tree.items()`).
    pub(super) fn tree_items(&mut self, t: ObjId) -> Result<Vec<(i64, ObjId)>> {
        let mut out = Vec::new();
        let mut todo = vec![t];
        while let Some(n) = todo.pop() {
            if self.is_tree_node(n)? {
                let children: Vec<ObjId> = self.tree(n)?.items.iter().map(|&(_, c)| c).collect();
                todo.extend(children.into_iter().rev());
            } else {
                let b = self.bucket(n)?;
                out.extend(b.keys.iter().copied().zip(b.values.iter().copied()));
            }
        }
        Ok(out)
    }

    /// `tree[key] = value` (`Some`) or `del tree[key]` (`None`), on the root
    /// of a tree.
    pub(super) fn tree_setitem(&mut self, t: ObjId, key: i64, value: Option<ObjId>) -> Result<()> {
        let family = self.tree(t)?.family;
        if !family.key_fits(key) {
            return Err(Error::Invalid(format!(
                "key {key} does not fit {}",
                family.tree_class()
            )));
        }
        self.btree_set(t, key, value).map(|_| ())
    }

    /// `_BTree_set`.
    fn btree_set(&mut self, t: ObjId, key: i64, value: Option<ObjId>) -> Result<Status> {
        let mut changed = false;
        if self.tree(t)?.items.is_empty() {
            if value.is_none() {
                return Err(self.key_error(t, key));
            }
            self.grow(t, 0)?;
        }
        let tree = self.tree(t)?;
        let min = Self::search(tree, key);
        let item = tree.items.get(min).copied();
        let (dkey, child) = item.ok_or_else(|| self.corrupt(t))?;
        let child_is_tree = self.is_tree_node(child)?;
        let mut status = if child_is_tree {
            self.btree_set(child, key, value)?
        } else {
            let (status, bucket_changed) = self.bucket_set(child, key, value)?;
            // A tree whose single bucket has no oid pickles that bucket
            // inside itself, so the tree is what changed.
            if bucket_changed && self.tree(t)?.items.len() == 1 && !self.has_oid(child) {
                changed = true;
            }
            status
        };
        if status == 0 {
            return self.done(t, changed, status);
        }
        let childlength = self.node_len(child)?;
        if value.is_some() {
            let max = if child_is_tree {
                MAX_INTERNAL
            } else {
                MAX_LEAF
            };
            if childlength > max {
                self.grow(t, min)?;
                changed = true;
            }
            return self.done(t, changed, status);
        }

        // A delete: the child shrank.
        if min > 0 && childlength > 0 && key == dkey {
            // The separator was the deleted key: use the child's new first key.
            let bucket = if child_is_tree {
                self.tree(child)?
                    .firstbucket
                    .ok_or_else(|| self.corrupt(child))?
            } else {
                child
            };
            let first = self.bucket(bucket)?.keys.first().copied();
            let first = first.ok_or_else(|| self.corrupt(bucket))?;
            if let Some(item) = self.tree(t)?.items.get_mut(min) {
                item.0 = first;
            }
            self.mark_changed(t);
        }
        if status == 2 {
            if min > 0 {
                let left = self.item(t, min - 1)?;
                self.btree_delete_next_bucket(left)?;
                status = 1;
            } else {
                let first = self.tree(child)?.firstbucket;
                self.tree(t)?.firstbucket = first;
                changed = true;
            }
        }
        if childlength > 0 {
            return self.done(t, changed, status);
        }
        // The child became empty: unlink it.
        if !child_is_tree {
            if min > 0 {
                let left = self.item(t, min - 1)?;
                self.bucket_delete_next(left)?;
            } else {
                let next = self.bucket(child)?.next;
                self.tree(t)?.firstbucket = next;
                status = 2;
            }
        }
        let tree = self.tree(t)?;
        tree.items.remove(min);
        if tree.items.is_empty() {
            tree.firstbucket = None;
        }
        changed = true;
        self.done(t, changed, status)
    }

    fn done(&mut self, t: ObjId, changed: bool, status: Status) -> Result<Status> {
        if changed {
            self.mark_changed(t);
        }
        Ok(status)
    }

    fn item(&mut self, t: ObjId, i: usize) -> Result<ObjId> {
        let child = self.tree(t)?.items.get(i).map(|&(_, c)| c);
        child.ok_or_else(|| self.corrupt(t))
    }

    fn corrupt(&self, id: ObjId) -> Error {
        Error::Invalid(format!("{} is not a valid BTree node", self.describe(id)))
    }

    fn key_error(&self, id: ObjId, key: i64) -> Error {
        Error::Invalid(format!("KeyError {key} in {}", self.describe(id)))
    }

    /// `_bucket_set`: (status, changed).
    fn bucket_set(&mut self, b: ObjId, key: i64, value: Option<ObjId>) -> Result<(Status, bool)> {
        let bucket = self.bucket(b)?;
        match (bucket.keys.binary_search(&key), value) {
            (Ok(i), Some(v)) => {
                // Object values have no VALUE_SAME: setting a value always
                // changes the bucket.
                if let Some(slot) = bucket.values.get_mut(i) {
                    *slot = v;
                }
                self.mark_changed(b);
                Ok((0, true))
            }
            (Ok(i), None) => {
                bucket.keys.remove(i);
                bucket.values.remove(i);
                self.mark_changed(b);
                Ok((1, true))
            }
            (Err(i), Some(v)) => {
                bucket.keys.insert(i, key);
                bucket.values.insert(i, v);
                self.mark_changed(b);
                Ok((1, true))
            }
            (Err(_), None) => Err(self.key_error(b, key)),
        }
    }

    /// `BTree_grow`: splits child `index` (or, in an empty tree, makes the
    /// first bucket).
    fn grow(&mut self, t: ObjId, index: usize) -> Result<()> {
        let family = self.tree(t)?.family;
        if self.tree(t)?.items.is_empty() {
            let b = self.new_bucket(family);
            let tree = self.tree(t)?;
            tree.items.push((0, b));
            tree.firstbucket = Some(b);
            return Ok(());
        }
        let v = self.item(t, index)?;
        let (key, e) = if self.is_tree_node(v)? {
            let e = self.new_obj(
                Class::Tree(family),
                State::Tree(TreeObj {
                    family,
                    items: Vec::new(),
                    firstbucket: None,
                }),
            );
            self.tree_split(v, e)?;
            let key = self.tree(e)?.items.first().map(|&(k, _)| k);
            (key, e)
        } else {
            let e = self.new_bucket(family);
            self.bucket_split(v, e)?;
            let key = self.bucket(e)?.keys.first().copied();
            (key, e)
        };
        let key = key.ok_or_else(|| self.corrupt(e))?;
        let tree = self.tree(t)?;
        tree.items.insert(index + 1, (key, e));
        if tree.items.len() >= MAX_INTERNAL * 2 {
            self.split_root(t)?;
        }
        Ok(())
    }

    fn new_bucket(&mut self, family: Family) -> ObjId {
        self.new_obj(
            Class::Bucket(family),
            State::Bucket(BucketObj {
                family,
                keys: Vec::new(),
                values: Vec::new(),
                next: None,
            }),
        )
    }

    /// `BTree_split(v, -1, e)`: the upper half of `v`'s children to `e`.
    fn tree_split(&mut self, v: ObjId, e: ObjId) -> Result<()> {
        let tree = self.tree(v)?;
        let index = tree.items.len() / 2;
        let moved = tree.items.split_off(index);
        let first_child = moved
            .first()
            .map(|&(_, c)| c)
            .ok_or_else(|| self.corrupt(v))?;
        let firstbucket = if self.is_tree_node(first_child)? {
            self.tree(first_child)?.firstbucket
        } else {
            Some(first_child)
        };
        let etree = self.tree(e)?;
        etree.items = moved;
        etree.firstbucket = firstbucket;
        self.mark_changed(v);
        Ok(())
    }

    /// `bucket_split(v, -1, e)`: the upper half of `v` to `e`, linked in
    /// after `v`.
    fn bucket_split(&mut self, v: ObjId, e: ObjId) -> Result<()> {
        let bucket = self.bucket(v)?;
        let index = bucket.keys.len() / 2;
        let keys = bucket.keys.split_off(index);
        let values = bucket.values.split_off(index);
        let next = bucket.next.replace(e);
        let eb = self.bucket(e)?;
        eb.keys = keys;
        eb.values = values;
        eb.next = next;
        self.mark_changed(v);
        Ok(())
    }

    /// `BTree_split_root`: the root's children move to a new node, which
    /// is then split; the root keeps its identity with two children.
    fn split_root(&mut self, t: ObjId) -> Result<()> {
        let tree = self.tree(t)?;
        let family = tree.family;
        let items = std::mem::take(&mut tree.items);
        let firstbucket = tree.firstbucket;
        let child = self.new_obj(
            Class::Tree(family),
            State::Tree(TreeObj {
                family,
                items,
                firstbucket,
            }),
        );
        self.tree(t)?.items = vec![(0, child)];
        self.grow(t, 0)
    }

    /// `BTree_lastBucket`: the rightmost bucket under `t`.
    fn last_bucket(&mut self, t: ObjId) -> Result<ObjId> {
        let mut node = t;
        loop {
            let last = self.tree(node)?.items.last().map(|&(_, c)| c);
            let child = last.ok_or_else(|| self.corrupt(node))?;
            if self.is_tree_node(child)? {
                node = child;
            } else {
                return Ok(child);
            }
        }
    }

    /// `Bucket_deleteNextBucket`: unlinks `b`'s successor.
    fn bucket_delete_next(&mut self, b: ObjId) -> Result<()> {
        let Some(succ) = self.bucket(b)?.next else {
            return Ok(());
        };
        let after = self.bucket(succ)?.next;
        self.bucket(b)?.next = after;
        self.mark_changed(b);
        Ok(())
    }

    /// `BTree_deleteNextBucket`: the same on the last bucket under `t`.
    fn btree_delete_next_bucket(&mut self, t: ObjId) -> Result<()> {
        let b = self.last_bucket(t)?;
        self.bucket_delete_next(b)
    }

    /// `tree.clear()`.
    pub(super) fn tree_clear(&mut self, t: ObjId) -> Result<()> {
        let tree = self.tree(t)?;
        if tree.items.is_empty() {
            return Ok(());
        }
        tree.items.clear();
        tree.firstbucket = None;
        self.mark_changed(t);
        Ok(())
    }

    /// A new, empty tree of `family` (`LOBTree()`, `IOBTree()`).
    pub(super) fn new_tree(&mut self, family: Family) -> ObjId {
        self.new_obj(
            Class::Tree(family),
            State::Tree(TreeObj {
                family,
                items: Vec::new(),
                firstbucket: None,
            }),
        )
    }
}
