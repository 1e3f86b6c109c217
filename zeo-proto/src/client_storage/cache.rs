//! The client's object cache: revisions of objects, bounded in bytes,
//! kept coherent by invalidations.
//!
//! ZEO's `ClientCache` keeps, per oid, at most one *current* revision
//! (`start`, no end: the newest the client knows of) and any number of
//! *non-current* ones (`start..end`, immutable history). A load before `t`
//! is answered by the revision with `start < t <= end` (a current revision
//! has no end). An invalidation of `oid` by transaction `t` ends the current
//! revision at `t`; it stays useful for snapshots older than `t`. This is
//! the same model, in memory only (ZEO's persistent `.zec` file buys a warm
//! start that a process-local cache does not need).
//!
//! Every method here runs under the client's view lock, in the order the
//! connection's messages arrived: that is what keeps a load reply computed
//! before a commit from being cached as current after the commit's
//! invalidation (spec zeo.md §6, ordering rules).
//!
//! Eviction is CLOCK (second chance): an insertion queue is swept from the
//! front, and a revision used since it was last swept goes to the back
//! instead of out. It approximates LRU with O(1) work per insertion and no
//! per-hit bookkeeping beyond one flag.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use zodb_core::storage::Revision;
use zodb_core::{Oid, Tid};

/// Bytes counted per cached revision on top of its data: the map entry and
/// the queue slot. An estimate, so that a cache of tiny objects is bounded
/// too.
const ENTRY_OVERHEAD: usize = 64;

/// Counters for tests and tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads answered from the cache.
    pub hits: u64,
    /// Loads that had to ask the server.
    pub misses: u64,
    /// Revisions held.
    pub revisions: usize,
    /// Bytes held (data plus a fixed overhead per revision).
    pub bytes: usize,
    /// The budget.
    pub budget: usize,
}

#[derive(Debug)]
struct Rev {
    start: Tid,
    end: Option<Tid>,
    data: Bytes,
    referenced: bool,
}

impl Rev {
    fn cost(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD
    }

    fn covers(&self, before: Tid) -> bool {
        self.start < before && self.end.is_none_or(|end| before <= end)
    }
}

/// The revisions of objects the client has loaded or committed.
#[derive(Debug)]
pub(crate) struct Cache {
    budget: usize,
    used: usize,
    objects: HashMap<Oid, Vec<Rev>>,
    clock: VecDeque<(Oid, Tid)>,
    hits: u64,
    misses: u64,
}

impl Cache {
    /// An empty cache holding at most `budget` bytes; 0 disables it.
    pub(crate) fn new(budget: usize) -> Cache {
        Cache {
            budget,
            used: 0,
            objects: HashMap::new(),
            clock: VecDeque::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// The revision current just before `before`, if cached.
    pub(crate) fn load_before(&mut self, oid: Oid, before: Tid) -> Option<Revision> {
        let found = self
            .objects
            .get_mut(&oid)
            .and_then(|revs| revs.iter_mut().find(|r| r.covers(before)));
        match found {
            Some(r) => {
                r.referenced = true;
                self.hits += 1;
                Some(Revision {
                    data: r.data.clone(),
                    serial: r.start,
                    next_serial: r.end,
                })
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Records a revision the server returned or the client committed:
    /// `start..end`, `end` `None` for the current one.
    pub(crate) fn store(&mut self, oid: Oid, start: Tid, end: Option<Tid>, data: Bytes) {
        let rev = Rev {
            start,
            end,
            data,
            referenced: false,
        };
        if self.budget == 0 || rev.cost() > self.budget / 2 {
            // Not worth evicting half the cache for one object.
            return;
        }
        let revs = self.objects.entry(oid).or_default();
        if let Some(same) = revs.iter_mut().find(|r| r.start == start) {
            // Known already; an end learnt later is news (the revision was
            // replaced by a commit whose invalidation is still on its way).
            if same.end.is_none() && end.is_some() {
                same.end = end;
            }
            return;
        }
        if end.is_none()
            && let Some(pos) = revs.iter().position(|r| r.end.is_none())
        {
            let cur = revs.get(pos).map_or(start, |r| r.start);
            if cur > start {
                // A newer current revision is known: this one is stale
                // and its end is unknown, so it cannot be kept.
                return;
            }
            // The server has a newer revision than the one we held as
            // current; where the old one ended is unknown: drop it.
            let old = revs.swap_remove(pos);
            self.used -= old.cost();
        }
        self.used += rev.cost();
        revs.push(rev);
        self.clock.push_back((oid, start));
        self.evict();
    }

    /// Transaction `tid` changed `oid`: its current revision ends there.
    /// A current revision that is already `tid`'s own (a load answered
    /// after the commit, before its invalidation arrived) stays current.
    pub(crate) fn invalidate(&mut self, oid: Oid, tid: Tid) {
        if let Some(cur) = self
            .objects
            .get_mut(&oid)
            .and_then(|revs| revs.iter_mut().find(|r| r.end.is_none()))
            && cur.start < tid
        {
            cur.end = Some(tid);
        }
    }

    /// Forgets `oid`'s current revision (ZEO's `invalidate(oid, None)`):
    /// used when a reconnection learns that `oid` changed at some tid it
    /// is not told. Its history stays valid.
    pub(crate) fn forget_current(&mut self, oid: Oid) {
        if let Some(revs) = self.objects.get_mut(&oid) {
            if let Some(pos) = revs.iter().position(|r| r.end.is_none()) {
                let old = revs.swap_remove(pos);
                self.used -= old.cost();
            }
            if revs.is_empty() {
                self.objects.remove(&oid);
            }
        }
    }

    /// Drops everything (the server cannot tell what changed).
    pub(crate) fn clear(&mut self) {
        self.objects.clear();
        self.clock.clear();
        self.used = 0;
    }

    /// Every oid with a cached revision.
    pub(crate) fn oids(&self) -> Vec<Oid> {
        let mut v: Vec<Oid> = self.objects.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            revisions: self.objects.values().map(Vec::len).sum(),
            bytes: self.used,
            budget: self.budget,
        }
    }

    /// Sweeps the clock until the cache fits its budget.
    fn evict(&mut self) {
        // Each queue slot is looked at most twice per sweep (once to clear
        // its flag, once to evict), so this ends.
        let mut budget_steps = self.clock.len().saturating_mul(2);
        while self.used > self.budget && budget_steps > 0 {
            budget_steps -= 1;
            let Some((oid, start)) = self.clock.pop_front() else {
                break;
            };
            let Some(revs) = self.objects.get_mut(&oid) else {
                continue; // forgotten already: a stale slot
            };
            let Some(pos) = revs.iter().position(|r| r.start == start) else {
                continue;
            };
            let second_chance = revs.get_mut(pos).is_some_and(|r| {
                let was = r.referenced;
                r.referenced = false;
                was
            });
            if second_chance {
                self.clock.push_back((oid, start));
                continue;
            }
            let old = revs.swap_remove(pos);
            self.used -= old.cost();
            if revs.is_empty() {
                self.objects.remove(&oid);
            }
        }
        // Slots of revisions forgotten or replaced pile up in the queue;
        // rebuild it when it is mostly stale.
        let live: usize = self.objects.values().map(Vec::len).sum();
        if self.clock.len() > 2 * live + 1024 {
            let objects = &self.objects;
            self.clock.retain(|(oid, start)| {
                objects
                    .get(oid)
                    .is_some_and(|revs| revs.iter().any(|r| r.start == *start))
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn current_and_noncurrent_revisions() {
        let mut c = Cache::new(1 << 20);
        c.store(Oid(1), Tid(10), None, b("a"));
        assert_eq!(c.load_before(Oid(1), Tid(10)), None);
        assert_eq!(c.load_before(Oid(1), Tid(11)).unwrap().data, b("a"));
        assert_eq!(c.load_before(Oid(1), Tid::MAX).unwrap().next_serial, None);
        c.invalidate(Oid(1), Tid(20));
        let r = c.load_before(Oid(1), Tid(20)).unwrap();
        assert_eq!((r.serial, r.next_serial), (Tid(10), Some(Tid(20))));
        assert_eq!(c.load_before(Oid(1), Tid(21)), None);
        c.store(Oid(1), Tid(20), None, b("b"));
        assert_eq!(c.load_before(Oid(1), Tid(21)).unwrap().data, b("b"));
        assert_eq!(c.load_before(Oid(1), Tid(15)).unwrap().data, b("a"));
    }

    #[test]
    fn an_invalidation_older_than_the_current_revision_is_ignored() {
        // The load was answered after commit 20 but before its
        // invalidation arrived: revision 20 is current already.
        let mut c = Cache::new(1 << 20);
        c.store(Oid(1), Tid(20), None, b("new"));
        c.invalidate(Oid(1), Tid(20));
        assert_eq!(c.load_before(Oid(1), Tid::MAX).unwrap().data, b("new"));
    }

    #[test]
    fn a_newer_current_revision_replaces_the_old_one() {
        let mut c = Cache::new(1 << 20);
        c.store(Oid(1), Tid(10), None, b("a"));
        c.store(Oid(1), Tid(30), None, b("c"));
        // Where 10 ended is unknown: not answered from the cache.
        assert_eq!(c.load_before(Oid(1), Tid(25)), None);
        assert_eq!(c.load_before(Oid(1), Tid(31)).unwrap().data, b("c"));
        // A stale current revision arriving late is not kept.
        c.store(Oid(1), Tid(20), None, b("b"));
        assert_eq!(c.load_before(Oid(1), Tid(25)), None);
        // A reply that tells where a revision ended completes it.
        c.store(Oid(1), Tid(30), Some(Tid(40)), b("c"));
        assert_eq!(c.load_before(Oid(1), Tid(41)), None);
    }

    #[test]
    fn forget_keeps_history() {
        let mut c = Cache::new(1 << 20);
        c.store(Oid(1), Tid(10), Some(Tid(20)), b("a"));
        c.store(Oid(1), Tid(20), None, b("b"));
        c.forget_current(Oid(1));
        assert_eq!(c.load_before(Oid(1), Tid::MAX), None);
        assert_eq!(c.load_before(Oid(1), Tid(20)).unwrap().data, b("a"));
        c.clear();
        assert_eq!(c.stats().bytes, 0);
        assert_eq!(c.load_before(Oid(1), Tid(20)), None);
    }

    #[test]
    fn the_budget_holds_and_used_entries_survive() {
        let budget = 100 * (100 + ENTRY_OVERHEAD);
        let mut c = Cache::new(budget);
        let data = Bytes::from(vec![7u8; 100]);
        for i in 0..100u64 {
            c.store(Oid(i), Tid(1), None, data.clone());
        }
        assert_eq!(c.stats().revisions, 100);
        // Oid 0 is used; the next insertions evict others first.
        assert!(c.load_before(Oid(0), Tid::MAX).is_some());
        for i in 100..150u64 {
            c.store(Oid(i), Tid(1), None, data.clone());
        }
        let s = c.stats();
        assert!(s.bytes <= budget, "{s:?}");
        assert!(c.load_before(Oid(0), Tid::MAX).is_some());
        assert!(c.load_before(Oid(1), Tid::MAX).is_none());
        for i in 0..100_000u64 {
            c.store(Oid(i % 500), Tid(i + 2), None, data.clone());
        }
        assert!(c.stats().bytes <= budget);
        assert!(c.clock.len() <= 2 * c.stats().revisions + 1024);
        // Disabled, and too big for the cache.
        let mut off = Cache::new(0);
        off.store(Oid(1), Tid(1), None, data.clone());
        assert_eq!(off.stats().revisions, 0);
        let mut small = Cache::new(150);
        small.store(Oid(1), Tid(1), None, data);
        assert_eq!(small.stats().revisions, 0);
    }
}
