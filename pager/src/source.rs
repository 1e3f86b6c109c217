//! Where blocks come from and go to: the [`BlockSource`] trait and
//! [`MemSource`], an in-memory versioned implementation.
//!
//! The trait is the pager's only view of storage (wendelin.core's
//! `bigfile_ops`: `loadblk`/`storeblk`, plus the invalidation feed that
//! `ZBigFile` gets from ZODB). It knows nothing about ZODB: a snapshot is an
//! opaque, totally ordered `u64` (a ZODB tid fits), a block is an index and
//! `block_size` bytes.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A point in the source's history. Larger is newer; every successful
/// [`BlockSource::store`] creates a new one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Snapshot(pub u64);

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// One dirty block handed to [`BlockSource::store`].
#[derive(Clone, Copy, Debug)]
pub struct DirtyBlock<'a> {
    /// Block index.
    pub index: u64,
    /// Its full content (`block_size` bytes).
    pub data: &'a [u8],
}

/// The last change of one block within a range of snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockChange {
    /// Block index.
    pub index: u64,
    /// Snapshot of its newest change in the range.
    pub at: Snapshot,
}

/// Answer of [`BlockSource::changes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The newest snapshot; the changes cover `(since, head]`.
    pub head: Snapshot,
    /// Every block changed in that range, once, with its newest change.
    pub blocks: Vec<BlockChange>,
}

/// Failures of a [`BlockSource`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// `store` found a block changed after the transaction's base snapshot.
    #[error("block {block} was changed at {changed_at}, after the base snapshot {base}")]
    Conflict {
        /// The block.
        block: u64,
        /// The transaction's base snapshot.
        base: Snapshot,
        /// Snapshot of the other change.
        changed_at: Snapshot,
    },
    /// A snapshot newer than the source's head.
    #[error("snapshot {at} is newer than the head {head}")]
    UnknownSnapshot {
        /// The snapshot asked for.
        at: Snapshot,
        /// The newest snapshot.
        head: Snapshot,
    },
    /// A buffer or block of the wrong length.
    #[error("block {block}: {got} bytes, the block size is {want}")]
    BadLength {
        /// The block.
        block: u64,
        /// Bytes given.
        got: usize,
        /// Block size.
        want: usize,
    },
    /// Any other failure of the backing storage.
    #[error("{what}: {source}")]
    Backend {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Storage of a block-structured file with snapshot isolation.
///
/// # Calling context
/// `load` is called from the pager's fault-handler thread (or from the thread
/// calling [`Mapping::prefetch`](crate::Mapping::prefetch)) while a thread of
/// the application is blocked in a page fault on that block. It must
/// therefore not touch the pager's mapped memory and must not wait for locks
/// the application may hold while touching that memory. `store` and
/// `changes` are called from the thread doing commit/abort/sync.
pub trait BlockSource: Send + Sync + 'static {
    /// Size of every block in bytes; constant for the source's life. The
    /// pager needs a multiple of the 4 KiB page size; 2 MiB (wendelin's
    /// default) lets blocks be mapped as huge pages.
    fn block_size(&self) -> usize;

    /// The newest snapshot.
    fn head(&self) -> Result<Snapshot, SourceError>;

    /// Fill `buf` (exactly `block_size` bytes) with block `block` as of
    /// snapshot `at`. A block never written, or stored shorter, reads as
    /// zeros: the whole buffer must be written.
    fn load(&self, at: Snapshot, block: u64, buf: &mut [u8]) -> Result<(), SourceError>;

    /// Store `blocks` in one transaction on top of `base` and return the new
    /// snapshot. Fails with [`SourceError::Conflict`], storing nothing, if
    /// any of them changed after `base`.
    fn store(&self, base: Snapshot, blocks: &[DirtyBlock<'_>]) -> Result<Snapshot, SourceError>;

    /// Which blocks changed after `since`, and the snapshot that is now the
    /// newest. Used at transaction boundaries to drop stale clean blocks.
    fn changes(&self, since: Snapshot) -> Result<Changes, SourceError>;
}

impl<S: BlockSource + ?Sized> BlockSource for Arc<S> {
    fn block_size(&self) -> usize {
        (**self).block_size()
    }
    fn head(&self) -> Result<Snapshot, SourceError> {
        (**self).head()
    }
    fn load(&self, at: Snapshot, block: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        (**self).load(at, block, buf)
    }
    fn store(&self, base: Snapshot, blocks: &[DirtyBlock<'_>]) -> Result<Snapshot, SourceError> {
        (**self).store(base, blocks)
    }
    fn changes(&self, since: Snapshot) -> Result<Changes, SourceError> {
        (**self).changes(since)
    }
}

/// In-memory, versioned [`BlockSource`]: every store is a new snapshot, old
/// snapshots stay readable, and a store conflicts when one of its blocks
/// changed after the base snapshot. For tests and benchmarks of the pager and
/// of code built on it.
///
/// Block data is kept with trailing zeros stripped (an all-zero block takes
/// no memory), as wendelin's ZBlk0 does.
#[derive(Debug)]
pub struct MemSource {
    block_size: usize,
    inner: Mutex<MemInner>,
    loads: AtomicU64,
}

/// Versions of one block in increasing snapshot order: (snapshot, data with
/// trailing zeros stripped).
type Versions = Vec<(u64, Arc<[u8]>)>;

#[derive(Debug, Default)]
struct MemInner {
    head: u64,
    /// block → versions in increasing snapshot order.
    versions: HashMap<u64, Versions>,
    /// snapshot → blocks stored in it.
    log: BTreeMap<u64, Vec<u64>>,
}

impl MemSource {
    /// An empty source (every block a hole) at snapshot 0.
    pub fn new(block_size: usize) -> Self {
        MemSource {
            block_size,
            inner: Mutex::new(MemInner::default()),
            loads: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A panic while holding the lock leaves the maps consistent (every
        // mutation is a single insert/push), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `blocks` on top of the head (setting up a test); data shorter
    /// than a block is zero-padded, like a stripped ZBlk0. Returns the new
    /// snapshot.
    pub fn write(&self, blocks: &[(u64, &[u8])]) -> Result<Snapshot, SourceError> {
        let padded: Vec<(u64, Vec<u8>)> = blocks
            .iter()
            .map(|&(index, data)| {
                let mut v = data.to_vec();
                if v.len() < self.block_size {
                    v.resize(self.block_size, 0);
                }
                (index, v)
            })
            .collect();
        let dirty: Vec<DirtyBlock<'_>> = padded
            .iter()
            .map(|(index, data)| DirtyBlock {
                index: *index,
                data,
            })
            .collect();
        let head = self.lock().head;
        self.store(Snapshot(head), &dirty)
    }

    /// Block `block` as of `at`, as a fresh vector (for checking results).
    pub fn read(&self, at: Snapshot, block: u64) -> Result<Vec<u8>, SourceError> {
        let mut buf = vec![0; self.block_size];
        self.load_inner(at, block, &mut buf)?;
        Ok(buf)
    }

    /// Blocks stored by the transaction that created `at`, sorted.
    pub fn stored_in(&self, at: Snapshot) -> Vec<u64> {
        self.lock().log.get(&at.0).cloned().unwrap_or_default()
    }

    /// The newest snapshot (infallible form of [`BlockSource::head`]).
    pub fn head_snapshot(&self) -> Snapshot {
        Snapshot(self.lock().head)
    }

    /// How many `load` calls were served (by the pager's faults).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn load_inner(&self, at: Snapshot, block: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        if buf.len() != self.block_size {
            return Err(SourceError::BadLength {
                block,
                got: buf.len(),
                want: self.block_size,
            });
        }
        let data = {
            let inner = self.lock();
            if at.0 > inner.head {
                return Err(SourceError::UnknownSnapshot {
                    at,
                    head: Snapshot(inner.head),
                });
            }
            inner.versions.get(&block).and_then(|v| {
                let n = v.partition_point(|(s, _)| *s <= at.0);
                n.checked_sub(1).map(|i| Arc::clone(&v[i].1))
            })
        };
        // Copy outside the lock: concurrent loads of different blocks run in
        // parallel.
        let len = data.as_ref().map_or(0, |d| d.len());
        if let Some(d) = &data {
            buf[..len].copy_from_slice(d);
        }
        buf[len..].fill(0);
        Ok(())
    }
}

impl BlockSource for MemSource {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn head(&self) -> Result<Snapshot, SourceError> {
        Ok(Snapshot(self.lock().head))
    }

    fn load(&self, at: Snapshot, block: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.load_inner(at, block, buf)
    }

    fn store(&self, base: Snapshot, blocks: &[DirtyBlock<'_>]) -> Result<Snapshot, SourceError> {
        for b in blocks {
            if b.data.len() != self.block_size {
                return Err(SourceError::BadLength {
                    block: b.index,
                    got: b.data.len(),
                    want: self.block_size,
                });
            }
        }
        // Strip trailing zeros before taking the lock: the copy is the slow part.
        let stripped: Versions = blocks
            .iter()
            .map(|b| {
                let end = b.data.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
                (b.index, Arc::from(&b.data[..end]))
            })
            .collect();
        let mut inner = self.lock();
        if base.0 > inner.head {
            return Err(SourceError::UnknownSnapshot {
                at: base,
                head: Snapshot(inner.head),
            });
        }
        for b in blocks {
            if let Some(&(last, _)) = inner.versions.get(&b.index).and_then(|v| v.last())
                && last > base.0
            {
                return Err(SourceError::Conflict {
                    block: b.index,
                    base,
                    changed_at: Snapshot(last),
                });
            }
        }
        inner.head += 1;
        let at = inner.head;
        let mut indices = Vec::with_capacity(stripped.len());
        for (index, data) in stripped {
            inner.versions.entry(index).or_default().push((at, data));
            indices.push(index);
        }
        indices.sort_unstable();
        indices.dedup();
        inner.log.insert(at, indices);
        Ok(Snapshot(at))
    }

    fn changes(&self, since: Snapshot) -> Result<Changes, SourceError> {
        let inner = self.lock();
        if since.0 > inner.head {
            return Err(SourceError::UnknownSnapshot {
                at: since,
                head: Snapshot(inner.head),
            });
        }
        let mut newest: BTreeMap<u64, u64> = BTreeMap::new();
        for (&at, blocks) in inner.log.range(since.0 + 1..) {
            for &b in blocks {
                newest.insert(b, at);
            }
        }
        Ok(Changes {
            head: Snapshot(inner.head),
            blocks: newest
                .into_iter()
                .map(|(index, at)| BlockChange {
                    index,
                    at: Snapshot(at),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_and_short_blocks_read_as_zeros() {
        let s = MemSource::new(8);
        assert_eq!(s.read(Snapshot(0), 3).unwrap(), vec![0; 8]);
        let at = s.write(&[(3, &[1, 2, 0, 0, 0, 0, 0, 0])]).unwrap();
        assert_eq!(s.read(at, 3).unwrap(), vec![1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            s.read(Snapshot(0), 3).unwrap(),
            vec![0; 8],
            "old snapshot unchanged"
        );
    }

    #[test]
    fn store_conflicts_on_blocks_changed_after_base() {
        let s = MemSource::new(4);
        let base = s.head().unwrap();
        let a = s.write(&[(1, &[1; 4])]).unwrap();
        let err = s
            .store(
                base,
                &[DirtyBlock {
                    index: 1,
                    data: &[2; 4],
                }],
            )
            .unwrap_err();
        assert!(
            matches!(err, SourceError::Conflict { block: 1, changed_at, .. } if changed_at == a)
        );
        assert_eq!(s.head().unwrap(), a, "nothing stored on conflict");
        // A different block does not conflict.
        let b = s
            .store(
                base,
                &[DirtyBlock {
                    index: 2,
                    data: &[2; 4],
                }],
            )
            .unwrap();
        assert_eq!(s.stored_in(b), vec![2]);
    }

    #[test]
    fn changes_report_the_newest_change_per_block() {
        let s = MemSource::new(4);
        let a = s.write(&[(1, &[1; 4]), (2, &[1; 4])]).unwrap();
        let b = s.write(&[(2, &[2; 4])]).unwrap();
        let ch = s.changes(Snapshot(0)).unwrap();
        assert_eq!(ch.head, b);
        assert_eq!(
            ch.blocks,
            vec![
                BlockChange { index: 1, at: a },
                BlockChange { index: 2, at: b }
            ]
        );
        assert_eq!(s.changes(b).unwrap().blocks, vec![]);
        assert!(s.changes(Snapshot(9)).is_err());
    }

    #[test]
    fn wrong_lengths_are_rejected() {
        let s = MemSource::new(4);
        assert!(matches!(
            s.load(Snapshot(0), 0, &mut [0; 3]),
            Err(SourceError::BadLength {
                got: 3,
                want: 4,
                ..
            })
        ));
        assert!(s.write(&[(0, &[1; 5])]).is_err());
        assert!(s.write(&[(0, &[1; 3])]).is_ok(), "short data is padded");
    }
}
