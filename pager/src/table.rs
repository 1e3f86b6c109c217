//! Bookkeeping of a mapping, kept apart from the memory it describes so it
//! can be tested without userfaultfd: which blocks are resident and in which
//! state, their eviction order, and which pool slots hold pages.
//!
//! Everything here is protected by the mapping's state mutex; see
//! `docs/pager-design.md` for the states and their transitions.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// State of a resident block. A block absent from the table is *empty*: its
/// address range holds no pages and the next touch faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockState {
    /// Content equals the source at the mapping's snapshot; write-protected;
    /// may be evicted at any time.
    Clean,
    /// Written in this transaction; writable; pinned until commit or abort.
    Dirty,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Resident {
    pub(crate) state: BlockState,
    /// Installed by moving a pool slot (huge-page capable), as opposed to a
    /// 4 KiB-page copy. Only such blocks are moved back into the pool.
    pub(crate) moved: bool,
    /// Eviction order key (clean blocks only are in the LRU index).
    tick: u64,
}

/// Resident blocks, their states and the least-recently-faulted order of the
/// clean ones.
#[derive(Debug, Default)]
pub(crate) struct Table {
    resident: HashMap<u64, Resident>,
    /// tick → block, clean blocks only; the smallest tick is evicted first.
    lru: BTreeMap<u64, u64>,
    dirty: BTreeSet<u64>,
    tick: u64,
}

impl Table {
    pub(crate) fn get(&self, block: u64) -> Option<Resident> {
        self.resident.get(&block).copied()
    }

    pub(crate) fn resident_count(&self) -> usize {
        self.resident.len()
    }

    pub(crate) fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// Dirty blocks in increasing order.
    pub(crate) fn dirty(&self) -> impl Iterator<Item = u64> + '_ {
        self.dirty.iter().copied()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Record a freshly installed block. Panics if it is already resident,
    /// which would mean its pages were installed twice.
    pub(crate) fn insert(&mut self, block: u64, state: BlockState, moved: bool) {
        let tick = self.next_tick();
        let old = self.resident.insert(block, Resident { state, moved, tick });
        assert!(old.is_none(), "block {block} installed twice");
        match state {
            BlockState::Clean => {
                self.lru.insert(tick, block);
            }
            BlockState::Dirty => {
                self.dirty.insert(block);
            }
        }
    }

    /// Clean → dirty (first write). Returns false if the block was not clean.
    pub(crate) fn mark_dirty(&mut self, block: u64) -> bool {
        match self.resident.get_mut(&block) {
            Some(r) if r.state == BlockState::Clean => {
                r.state = BlockState::Dirty;
                self.lru.remove(&r.tick);
                self.dirty.insert(block);
                true
            }
            _ => false,
        }
    }

    /// Dirty → clean (after commit re-armed write protection). It becomes
    /// the most recently used clean block.
    pub(crate) fn mark_clean(&mut self, block: u64) {
        let tick = self.next_tick();
        if let Some(r) = self.resident.get_mut(&block)
            && r.state == BlockState::Dirty
        {
            r.state = BlockState::Clean;
            r.tick = tick;
            self.dirty.remove(&block);
            self.lru.insert(tick, block);
        }
    }

    /// Forget a block (evicted, invalidated or aborted).
    pub(crate) fn remove(&mut self, block: u64) -> Option<Resident> {
        let r = self.resident.remove(&block)?;
        match r.state {
            BlockState::Clean => {
                self.lru.remove(&r.tick);
            }
            BlockState::Dirty => {
                self.dirty.remove(&block);
            }
        }
        Some(r)
    }

    /// The clean block faulted in least recently.
    pub(crate) fn lru_victim(&self) -> Option<u64> {
        self.lru.values().next().copied()
    }
}

/// What a pool slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// No pages: the next write into it allocates (and zeroes) fresh ones.
    Empty,
    /// Holds pages from an evicted block or an earlier copy install: reusing
    /// it skips the kernel's zeroing.
    Populated,
    /// Being filled by a loader, which alone may touch it until it gives
    /// the slot back.
    InUse,
}

/// Loaders that may hold a slot at once without waiting: the fault handler,
/// the readahead thread and one `prefetch` caller.
const LOADERS: usize = 3;

/// The pool's slots: `keep` populated spares plus one per loader.
#[derive(Debug)]
pub(crate) struct Pool {
    slots: Vec<Slot>,
    keep: usize,
}

impl Pool {
    pub(crate) fn new(keep: usize) -> Self {
        Pool {
            slots: vec![Slot::Empty; keep + LOADERS],
            keep,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn populated(&self) -> usize {
        self.slots.iter().filter(|s| **s == Slot::Populated).count()
    }

    /// Whether `keep` slots hold pages already.
    pub(crate) fn full(&self) -> bool {
        self.populated() >= self.keep
    }

    /// Take a slot to load a block into: a populated one if any (no
    /// zeroing), else an empty one; `None` if every slot is in use.
    pub(crate) fn take(&mut self) -> Option<usize> {
        let i = self
            .slots
            .iter()
            .position(|s| *s == Slot::Populated)
            .or_else(|| self.slots.iter().position(|s| *s == Slot::Empty))?;
        self.slots[i] = Slot::InUse;
        Some(i)
    }

    /// Return a taken slot, telling whether it still holds pages.
    pub(crate) fn give_back(&mut self, slot: usize, populated: bool) {
        debug_assert_eq!(self.slots[slot], Slot::InUse);
        self.slots[slot] = if populated {
            Slot::Populated
        } else {
            Slot::Empty
        };
    }

    /// An empty slot to move an evicted block's pages into, if the pool may
    /// keep one more populated slot. The caller marks it populated.
    pub(crate) fn for_evict(&self) -> Option<usize> {
        if self.populated() >= self.keep {
            return None;
        }
        self.slots.iter().position(|s| *s == Slot::Empty)
    }

    pub(crate) fn set_populated(&mut self, slot: usize) {
        debug_assert_eq!(self.slots[slot], Slot::Empty);
        self.slots[slot] = Slot::Populated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_orders_clean_blocks_by_install_and_skips_dirty() {
        let mut t = Table::default();
        t.insert(5, BlockState::Clean, true);
        t.insert(1, BlockState::Clean, true);
        t.insert(9, BlockState::Dirty, true);
        assert_eq!(t.lru_victim(), Some(5));
        assert!(t.mark_dirty(5));
        assert!(!t.mark_dirty(5), "already dirty");
        assert_eq!(t.lru_victim(), Some(1));
        assert_eq!(t.dirty().collect::<Vec<_>>(), vec![5, 9]);
        t.mark_clean(5);
        t.remove(1);
        assert_eq!(t.lru_victim(), Some(5));
        assert_eq!(t.dirty_count(), 1);
        assert_eq!(t.resident_count(), 2);
        t.remove(9);
        t.remove(5);
        assert_eq!(t.lru_victim(), None);
        assert_eq!(t.resident_count(), 0);
    }

    #[test]
    #[should_panic(expected = "installed twice")]
    fn double_install_is_a_bug() {
        let mut t = Table::default();
        t.insert(1, BlockState::Clean, true);
        t.insert(1, BlockState::Dirty, true);
    }

    #[test]
    fn pool_prefers_populated_slots_and_caps_them() {
        let mut p = Pool::new(2);
        assert_eq!(p.len(), 2 + LOADERS);
        let s = p.for_evict().unwrap();
        p.set_populated(s);
        assert_eq!(p.take(), Some(s), "populated first");
        p.give_back(s, true);
        let s2 = p.for_evict().unwrap();
        p.set_populated(s2);
        assert_eq!(p.for_evict(), None, "keep reached");
        let t = p.take().unwrap();
        p.give_back(t, false);
        assert!(p.for_evict().is_some());
        // Every slot taken: nothing left.
        let taken: Vec<usize> = std::iter::from_fn(|| p.take()).collect();
        assert_eq!(taken.len(), p.len());
        assert_eq!(p.take(), None);
    }
}
