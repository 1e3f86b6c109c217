//! The in-memory index: oid → position of the oid's current data record.
//!
//! ZODB's `fsIndex` spends 8 bytes per object (2-byte oid suffix + 6-byte
//! position in per-prefix buckets). Oids are handed out sequentially, so
//! real databases are dense; we group oids by `oid >> 8` into chunks of 256
//! and store each chunk either dense (256 six-byte positions, 0 = absent:
//! 6 bytes per object when full) or sparse (sorted 7-byte entries: suffix +
//! position), whichever is smaller. A dense database costs ~6.2 bytes per
//! object including the chunk directory, so 100M objects fit in ~620 MB.
//!
//! Positions are limited to 48 bits, as in ZODB's `.index` format.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::little_endian_bytes
)]

use std::fmt;

use zodb_core::Oid;

const CHUNK_BITS: u32 = 8;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const POS_LEN: usize = 6;
const DENSE_LEN: usize = CHUNK_LEN * POS_LEN;
const ENTRY_LEN: usize = 1 + POS_LEN;
/// A sparse chunk with more entries than this is bigger than a dense one.
const SPARSE_MAX: usize = DENSE_LEN / ENTRY_LEN;

/// The largest position an index can hold (ZODB's `.index` keeps 6 bytes).
pub const MAX_POS: u64 = (1 << 48) - 1;

fn pos_from(b: &[u8]) -> u64 {
    let mut full = [0u8; 8];
    if let (Some(dst), Some(src)) = (full.get_mut(2..), b.get(..POS_LEN)) {
        dst.copy_from_slice(src);
    }
    u64::from_be_bytes(full)
}

fn pos_to(pos: u64) -> [u8; POS_LEN] {
    let b = pos.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

enum Chunk {
    /// Entries `[suffix, pos(6)]`, sorted by suffix.
    Sparse(Vec<u8>),
    /// Position of suffix `s` at `s*6`; 0 means absent (no data record can
    /// start at 0, the magic is there).
    Dense {
        slots: Box<[u8; DENSE_LEN]>,
        count: u16,
    },
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Sparse(v) => v.len() / ENTRY_LEN,
            Chunk::Dense { count, .. } => usize::from(*count),
        }
    }

    fn sparse_find(v: &[u8], suffix: u8) -> Result<usize, usize> {
        let n = v.len() / ENTRY_LEN;
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match v.get(mid * ENTRY_LEN).map(|s| s.cmp(&suffix)) {
                Some(std::cmp::Ordering::Less) => lo = mid + 1,
                Some(std::cmp::Ordering::Equal) => return Ok(mid),
                _ => hi = mid,
            }
        }
        Err(lo)
    }

    fn get(&self, suffix: u8) -> Option<u64> {
        match self {
            Chunk::Sparse(v) => {
                let i = Chunk::sparse_find(v, suffix).ok()?;
                let at = i * ENTRY_LEN + 1;
                Some(pos_from(v.get(at..at + POS_LEN)?))
            }
            Chunk::Dense { slots, .. } => {
                let at = usize::from(suffix) * POS_LEN;
                let p = pos_from(slots.get(at..at + POS_LEN)?);
                (p != 0).then_some(p)
            }
        }
    }

    fn insert(&mut self, suffix: u8, pos: u64) -> Option<u64> {
        let pb = pos_to(pos);
        match self {
            Chunk::Sparse(v) => match Chunk::sparse_find(v, suffix) {
                Ok(i) => {
                    let at = i * ENTRY_LEN + 1;
                    let slot = v.get_mut(at..at + POS_LEN)?;
                    let old = pos_from(slot);
                    slot.copy_from_slice(&pb);
                    Some(old)
                }
                Err(i) => {
                    if v.len() / ENTRY_LEN >= SPARSE_MAX {
                        self.densify();
                        return self.insert(suffix, pos);
                    }
                    let at = i * ENTRY_LEN;
                    let mut entry = [0u8; ENTRY_LEN];
                    entry[0] = suffix;
                    if let Some(dst) = entry.get_mut(1..) {
                        dst.copy_from_slice(&pb);
                    }
                    v.splice(at..at, entry);
                    None
                }
            },
            Chunk::Dense { slots, count } => {
                let at = usize::from(suffix) * POS_LEN;
                let slot = slots.get_mut(at..at + POS_LEN)?;
                let old = pos_from(slot);
                slot.copy_from_slice(&pb);
                if old == 0 {
                    *count += 1;
                    None
                } else {
                    Some(old)
                }
            }
        }
    }

    fn remove(&mut self, suffix: u8) -> Option<u64> {
        match self {
            Chunk::Sparse(v) => {
                let i = Chunk::sparse_find(v, suffix).ok()?;
                let at = i * ENTRY_LEN;
                let old = pos_from(v.get(at + 1..at + ENTRY_LEN)?);
                v.drain(at..at + ENTRY_LEN);
                Some(old)
            }
            Chunk::Dense { slots, count } => {
                let at = usize::from(suffix) * POS_LEN;
                let slot = slots.get_mut(at..at + POS_LEN)?;
                let old = pos_from(slot);
                if old == 0 {
                    return None;
                }
                slot.fill(0);
                *count -= 1;
                Some(old)
            }
        }
    }

    fn densify(&mut self) {
        if let Chunk::Sparse(v) = self {
            let mut slots = Box::new([0u8; DENSE_LEN]);
            for e in v.chunks_exact(ENTRY_LEN) {
                if let (Some(&s), Some(p)) = (e.first(), e.get(1..)) {
                    let at = usize::from(s) * POS_LEN;
                    if let Some(dst) = slots.get_mut(at..at + POS_LEN) {
                        dst.copy_from_slice(p);
                    }
                }
            }
            let count = (v.len() / ENTRY_LEN) as u16;
            *self = Chunk::Dense { slots, count };
        }
    }

    /// Entries in suffix order.
    fn entries(&self) -> Box<dyn Iterator<Item = (u8, u64)> + '_> {
        match self {
            Chunk::Sparse(v) => Box::new(
                v.chunks_exact(ENTRY_LEN)
                    .filter_map(|e| Some((*e.first()?, pos_from(e.get(1..)?)))),
            ),
            Chunk::Dense { slots, .. } => Box::new(
                slots
                    .chunks_exact(POS_LEN)
                    .enumerate()
                    .map(|(s, p)| (s as u8, pos_from(p)))
                    .filter(|&(_, p)| p != 0),
            ),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Chunk::Sparse(v) => v.capacity(),
            Chunk::Dense { .. } => DENSE_LEN,
        }
    }
}

/// Error for a position the index cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("position {0} does not fit the index's 48 bits")]
pub struct PosTooLarge(pub u64);

/// Compact map from oid to the position of its current data record.
#[derive(Default)]
pub struct FsIndex {
    /// `oid >> 8` of each chunk, ascending.
    prefixes: Vec<u64>,
    chunks: Vec<Chunk>,
    len: u64,
}

impl fmt::Debug for FsIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsIndex")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl FsIndex {
    /// An empty index.
    pub fn new() -> FsIndex {
        FsIndex::default()
    }

    /// Number of oids.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no oid is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find_chunk(&self, prefix: u64) -> Result<usize, usize> {
        // Fast path: dense databases have chunk i at prefix first + i.
        if let Some(&first) = self.prefixes.first()
            && let Some(guess) = prefix.checked_sub(first)
            && let Ok(g) = usize::try_from(guess)
            && self.prefixes.get(g) == Some(&prefix)
        {
            return Ok(g);
        }
        self.prefixes.binary_search(&prefix)
    }

    /// Position of the oid's current record.
    pub fn get(&self, oid: Oid) -> Option<u64> {
        let i = self.find_chunk(oid.0 >> CHUNK_BITS).ok()?;
        self.chunks.get(i)?.get(oid.0 as u8)
    }

    /// Sets the oid's position, returning the previous one.
    pub fn insert(&mut self, oid: Oid, pos: u64) -> Result<Option<u64>, PosTooLarge> {
        if pos > MAX_POS || pos == 0 {
            return Err(PosTooLarge(pos));
        }
        let prefix = oid.0 >> CHUNK_BITS;
        let i = match self.find_chunk(prefix) {
            Ok(i) => i,
            Err(i) => {
                self.prefixes.insert(i, prefix);
                self.chunks.insert(i, Chunk::Sparse(Vec::new()));
                i
            }
        };
        let old = self
            .chunks
            .get_mut(i)
            .and_then(|c| c.insert(oid.0 as u8, pos));
        if old.is_none() {
            self.len += 1;
        }
        Ok(old)
    }

    /// Forgets the oid, returning its position.
    pub fn remove(&mut self, oid: Oid) -> Option<u64> {
        let i = self.find_chunk(oid.0 >> CHUNK_BITS).ok()?;
        let chunk = self.chunks.get_mut(i)?;
        let old = chunk.remove(oid.0 as u8)?;
        self.len -= 1;
        if chunk.len() == 0 {
            self.chunks.remove(i);
            self.prefixes.remove(i);
        }
        Some(old)
    }

    /// The largest oid, as `fsIndex.maxKey()`.
    pub fn max_oid(&self) -> Option<Oid> {
        let (prefix, chunk) = (self.prefixes.last()?, self.chunks.last()?);
        let (suffix, _) = chunk.entries().last()?;
        Some(Oid(prefix << CHUNK_BITS | u64::from(suffix)))
    }

    /// Every (oid, position), in oid order.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, u64)> + '_ {
        self.prefixes
            .iter()
            .zip(&self.chunks)
            .flat_map(|(&prefix, c)| {
                c.entries()
                    .map(move |(s, p)| (Oid(prefix << CHUNK_BITS | u64::from(s)), p))
            })
    }

    /// Heap memory held, in bytes (for the 8-bytes-per-object budget).
    pub fn heap_bytes(&self) -> usize {
        self.prefixes.capacity() * std::mem::size_of::<u64>()
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.chunks.iter().map(Chunk::heap_bytes).sum::<usize>()
    }

    /// Releases spare capacity after a bulk build.
    pub fn shrink_to_fit(&mut self) {
        self.prefixes.shrink_to_fit();
        self.chunks.shrink_to_fit();
        for c in &mut self.chunks {
            if let Chunk::Sparse(v) = c {
                v.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn insert_get_remove() {
        let mut ix = FsIndex::new();
        assert_eq!(ix.get(Oid(0)), None);
        assert_eq!(ix.max_oid(), None);
        assert_eq!(ix.insert(Oid(0), 52).unwrap(), None);
        assert_eq!(ix.insert(Oid(0), 256).unwrap(), Some(52));
        assert_eq!(ix.insert(Oid(1 << 40), MAX_POS).unwrap(), None);
        assert_eq!(ix.get(Oid(0)), Some(256));
        assert_eq!(ix.get(Oid(1 << 40)), Some(MAX_POS));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.max_oid(), Some(Oid(1 << 40)));
        assert_eq!(
            ix.insert(Oid(3), MAX_POS + 1),
            Err(PosTooLarge(MAX_POS + 1))
        );
        assert_eq!(ix.remove(Oid(1 << 40)), Some(MAX_POS));
        assert_eq!(ix.remove(Oid(1 << 40)), None);
        assert_eq!(ix.max_oid(), Some(Oid(0)));
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn dense_database_costs_under_seven_bytes_per_object() {
        let mut ix = FsIndex::new();
        let n = 1_000_000u64;
        for oid in 0..n {
            ix.insert(Oid(oid), 4 + oid * 100).unwrap();
        }
        ix.shrink_to_fit();
        let per = ix.heap_bytes() as f64 / n as f64;
        assert!(per < 7.0, "{per} bytes per object");
        assert_eq!(ix.get(Oid(777_777)), Some(4 + 77_777_700));
        assert_eq!(ix.iter().count() as u64, n);
    }

    #[test]
    fn chunk_converts_to_dense_and_back_on_removal() {
        let mut ix = FsIndex::new();
        for s in (0..256u64).rev() {
            ix.insert(Oid(0x1200 + s), 100 + s).unwrap();
        }
        assert!(matches!(ix.chunks[0], Chunk::Dense { count: 256, .. }));
        for s in 0..256u64 {
            assert_eq!(ix.remove(Oid(0x1200 + s)), Some(100 + s));
        }
        assert!(ix.is_empty());
        assert!(ix.chunks.is_empty());
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec(
            (0u64..2000, 1u64..MAX_POS, any::<bool>()), 0..600)) {
            let mut ix = FsIndex::new();
            let mut model = BTreeMap::new();
            for (oid, pos, ins) in ops {
                // Spread oids over a few sparse prefixes too.
                let oid = Oid(if oid % 3 == 0 { oid << 20 } else { oid });
                if ins {
                    prop_assert_eq!(ix.insert(oid, pos).unwrap(), model.insert(oid, pos));
                } else {
                    prop_assert_eq!(ix.remove(oid), model.remove(&oid));
                }
                prop_assert_eq!(ix.len(), model.len() as u64);
            }
            prop_assert_eq!(ix.iter().collect::<Vec<_>>(), model.iter().map(|(&o, &p)| (o, p)).collect::<Vec<_>>());
            prop_assert_eq!(ix.max_oid(), model.keys().next_back().copied());
            for (o, p) in &model {
                prop_assert_eq!(ix.get(*o), Some(*p));
            }
        }
    }
}
