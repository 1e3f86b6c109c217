//! [`ZBigFileSource`]: a ZBigFile as the pager's [`BlockSource`].
//!
//! Loads read block `i` of the file as of a snapshot (a tid) exactly as
//! [`ZBigFile::read_block`](crate::file::ZBigFile::read_block) does; stores
//! go through the [`Writer`], so the records are the ones wendelin.core
//! writes; changes come from the storage's stream of committed transactions
//! ([`ReadStorage::watch`]), which FileStorage, the in-memory storage and the
//! ZEO client all publish, so another node's commits reach the pager the same
//! way as this process's own.
//!
//! # Which blocks a commit changed
//!
//! wendelin.core marks a block's ZBlk object changed whenever the block's
//! content changes (for ZBlk1 too, besides its ZData chunks), so a commit
//! that stores a known ZBlk oid changed that block. A commit with any other
//! oid may have changed the block table (a new block, a block replaced by
//! one of another format, a hole punched): then the tables at both ends of
//! the range are compared. Reading a table walks the LOBTree's buckets, 60
//! entries each, so that costs one bucket load per 60 blocks; commits that
//! only rewrite existing blocks, the common case, never pay it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pager::{BlockChange, BlockSource, Changes, DirtyBlock, Snapshot, SourceError};
use zodb_core::notify::CommitWatch;
use zodb_core::storage::Snapshot as View;
use zodb_core::{Oid, StorageError, Tid, TxnMeta, WriteStorage};

use crate::error::Error;
use crate::file::ZBigFile;
use crate::write::{WriteFormat, Writer, WriterOptions};

/// A ZBigFile served to a [`pager::Mapping`]; see the module documentation.
///
/// One source serves one mapping: [`changes`](BlockSource::changes) forgets
/// the commits at or before the snapshot it is asked about, which the
/// mapping never asks about again.
pub struct ZBigFileSource<S: WriteStorage + ?Sized> {
    storage: Arc<S>,
    file: Oid,
    blksize: usize,
    track: Mutex<Track>,
    pending: Mutex<Pending>,
    /// The block loaded last, to tell a sequential reader.
    last_load: AtomicU64,
}

/// Blocks whose loads a sequential reader starts ahead over a storage
/// with round trips (4 × 2 MiB fits the ZEO client's default 20 MB cache
/// with room for the block being read).
const PREFETCH_BLOCKS: u64 = 4;

impl<S: WriteStorage + ?Sized> std::fmt::Debug for ZBigFileSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZBigFileSource")
            .field("storage", &self.storage.name())
            .field("file", &self.file)
            .field("blksize", &self.blksize)
            .finish_non_exhaustive()
    }
}

/// What the source knows of the storage's history.
struct Track {
    watch: CommitWatch,
    /// Commits seen on the watch and not yet asked about, oldest first.
    log: Vec<(Tid, Arc<[Oid]>)>,
    /// The newest tid known to be complete: every commit up to it is in
    /// `log` or older than what the mapping holds.
    head: Tid,
    /// Block of each ZBlk oid met in a block table.
    block_of: HashMap<Oid, u64>,
    /// The block table at one tid, to compare the next one with.
    table: Option<(Tid, BTreeMap<u64, Oid>)>,
}

/// What the next store writes besides blocks.
#[derive(Default)]
struct Pending {
    format: Option<WriteFormat>,
    meta: TxnMeta,
    /// A ZBigArray whose shape changes in the same transaction.
    resize: Option<(Oid, Vec<u64>)>,
    /// The tid the next store commits at, instead of one from the clock.
    tid: Option<Tid>,
}

impl<S: WriteStorage + ?Sized> ZBigFileSource<S> {
    /// Serves ZBigFile `file` of `storage` (the file of a ZBigArray: see
    /// [`PagedArray`](super::PagedArray)). Blocks are stored in wendelin's
    /// `auto` format unless [`set_format`](Self::set_format) says otherwise.
    pub fn new(storage: Arc<S>, file: Oid) -> Result<Self, Error> {
        // Subscribe first: every commit after the head read below is then
        // on the watch.
        let watch = storage.watch();
        let head = storage.last_transaction();
        let (blksize, table) = {
            let f = ZBigFile::open(View::at(&*storage, head), file)?;
            let blksize = usize::try_from(f.blksize()).map_err(|_| {
                Error::Invalid(format!(
                    "{file}: blksize {} does not fit memory",
                    f.blksize()
                ))
            })?;
            (blksize, read_table(&f)?)
        };
        let block_of = table.iter().map(|(&b, &z)| (z, b)).collect();
        Ok(ZBigFileSource {
            storage,
            file,
            blksize,
            track: Mutex::new(Track {
                watch,
                log: Vec::new(),
                head,
                block_of,
                table: Some((head, table)),
            }),
            pending: Mutex::new(Pending {
                format: Some(WriteFormat::Auto),
                ..Pending::default()
            }),
            last_load: AtomicU64::new(u64::MAX),
        })
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    /// The ZBigFile's oid.
    pub fn file(&self) -> Oid {
        self.file
    }

    /// The block format of the following stores: ZBlk0, ZBlk1 or `auto`.
    pub fn set_format(&self, format: WriteFormat) {
        self.pending().format = Some(format);
    }

    /// Metadata (user, description, extension) of the next store's
    /// transaction; reset after it.
    pub fn set_meta(&self, meta: TxnMeta) {
        self.pending().meta = meta;
    }

    /// Commits the next store at `tid` (later than the storage's last
    /// transaction) instead of a tid from the clock: to replay a recorded
    /// history exactly, as tests comparing files with Python's do.
    pub fn set_next_tid(&self, tid: Option<Tid>) {
        self.pending().tid = tid;
    }

    /// Makes the next store also set the shape of ZBigArray `array` (whose
    /// file this is), so that a resize and the blocks it uncovers commit
    /// together; `None` cancels.
    pub(crate) fn set_resize(&self, resize: Option<(Oid, Vec<u64>)>) {
        self.pending().resize = resize;
    }

    /// Whether a resize waits for the next store.
    pub(crate) fn has_resize(&self) -> bool {
        self.pending().resize.is_some()
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn track(&self) -> MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves what the watch has into the log.
    fn drain(&self, t: &mut Track) {
        for c in t.watch.drain() {
            t.head = t.head.max(c.tid);
            t.log.push((c.tid, c.oids));
        }
    }

    /// The block table as of `at`, from the cache when it is that one.
    fn table_at(&self, t: &Track, at: Tid) -> Result<BTreeMap<u64, Oid>, SourceError> {
        if let Some((tid, table)) = &t.table
            && *tid == at
        {
            return Ok(table.clone());
        }
        let f = ZBigFile::open(View::at(&*self.storage, at), self.file)
            .map_err(|e| backend(format!("opening ZBigFile {} at {at}", self.file), e))?;
        read_table(&f).map_err(|e| backend(format!("reading the block table at {at}"), e))
    }

    /// Blocks changed in `(since, t.head]`, with the tid of their newest
    /// change.
    fn changed(&self, t: &mut Track, since: Tid) -> Result<BTreeMap<u64, Tid>, SourceError> {
        let mut out = BTreeMap::new();
        let mut unknown = false;
        for (tid, oids) in t.log.iter().filter(|(tid, _)| *tid > since) {
            for oid in oids.iter() {
                match t.block_of.get(oid) {
                    Some(&b) => {
                        let e = out.entry(b).or_insert(*tid);
                        *e = (*e).max(*tid);
                    }
                    None => unknown = true,
                }
            }
        }
        if unknown {
            let head = t.head;
            let before = self.table_at(t, since)?;
            let after = self.table_at(t, head)?;
            let mut diff = |b: u64| {
                out.entry(b).or_insert(head);
            };
            for (b, z) in &before {
                if after.get(b) != Some(z) {
                    diff(*b);
                }
            }
            for (b, z) in &after {
                if !before.contains_key(b) {
                    diff(*b);
                }
                t.block_of.insert(*z, *b);
            }
            t.table = Some((head, after));
        }
        Ok(out)
    }
}

impl<S: WriteStorage + ?Sized + 'static> BlockSource for ZBigFileSource<S> {
    fn block_size(&self) -> usize {
        self.blksize
    }

    fn head(&self) -> Result<Snapshot, SourceError> {
        let mut t = self.track();
        self.drain(&mut t);
        Ok(Snapshot(t.head.0))
    }

    fn load(&self, at: Snapshot, block: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        if buf.len() != self.blksize {
            return Err(SourceError::BadLength {
                block,
                got: buf.len(),
                want: self.blksize,
            });
        }
        let at = Tid(at.0);
        let f = ZBigFile::open(View::at(&*self.storage, at), self.file)
            .map_err(|e| backend(format!("opening ZBigFile {} at {at}", self.file), e))?;
        // A sequential reader over a storage whose loads are round trips
        // (ZEO): start the next blocks' loads now, so that they travel
        // while this one is copied and the reader works.
        let previous = self.last_load.swap(block, Ordering::Relaxed);
        if self.storage.supports_prefetch() && previous.wrapping_add(1) == block {
            let next: Vec<Oid> = (1..=PREFETCH_BLOCKS)
                .filter_map(|d| i64::try_from(block + d).ok())
                .filter_map(|k| f.blktab().get(k).ok().flatten())
                .map(|z| z.oid)
                .collect();
            self.storage.prefetch(&next, at.next());
        }
        let found = f
            .read_block(block, buf)
            .map_err(|e| backend(format!("loading block {block} of {} at {at}", self.file), e))?;
        if let Some(info) = found {
            self.track().block_of.insert(info.zblk, block);
        }
        Ok(())
    }

    fn store(&self, base: Snapshot, blocks: &[DirtyBlock<'_>]) -> Result<Snapshot, SourceError> {
        let base_tid = Tid(base.0);
        let (format, meta, resize, tid) = {
            let mut p = self.pending();
            (
                p.format.unwrap_or(WriteFormat::Auto),
                std::mem::take(&mut p.meta),
                p.resize.clone(),
                p.tid.take(),
            )
        };
        for b in blocks {
            if b.data.len() != self.blksize {
                return Err(SourceError::BadLength {
                    block: b.index,
                    got: b.data.len(),
                    want: self.blksize,
                });
            }
        }
        let mut w = Writer::open(&*self.storage, WriterOptions::default(), None)
            .map_err(|e| backend("opening a writer".into(), e))?;
        let f = w
            .open_file(self.file)
            .map_err(|e| backend(format!("opening ZBigFile {}", self.file), e))?;
        if let Some((array, shape)) = &resize {
            let a = w
                .open_array(*array)
                .map_err(|e| backend(format!("opening ZBigArray {array}"), e))?;
            w.resize(a, shape)
                .map_err(|e| backend(format!("resizing ZBigArray {array} to {shape:?}"), e))?;
        }
        // The blocks are lent, not copied: they stay put in the mapping
        // until this commit is done, and the writer pickles them from there.
        for b in blocks {
            w.store_block_lent(f, b.index, b.data, format)
                .map_err(|e| backend(format!("storing block {}", b.index), e))?;
        }
        // The writer loaded the current revisions: a commit after those
        // loads fails the storage's serial check; one between `base` and
        // the loads is found here.
        {
            let mut t = self.track();
            self.drain(&mut t);
            let changed = self.changed(&mut t, base_tid)?;
            if let Some((&block, &at)) = blocks.iter().find_map(|b| changed.get_key_value(&b.index))
            {
                return Err(SourceError::Conflict {
                    block,
                    base,
                    changed_at: Snapshot(at.0),
                });
            }
        }
        let result = match tid {
            Some(tid) => w.commit_at(meta, tid),
            None => w.commit(meta),
        };
        let committed = match result {
            Ok(c) => c,
            Err(Error::Commit {
                source: StorageError::Conflict { oid, committed, .. },
                ..
            }) => {
                let block = self
                    .track()
                    .block_of
                    .get(&oid)
                    .copied()
                    .or_else(|| blocks.first().map(|b| b.index))
                    .unwrap_or(0);
                return Err(SourceError::Conflict {
                    block,
                    base,
                    changed_at: Snapshot(committed.0),
                });
            }
            Err(e) => return Err(backend("committing the blocks".into(), e)),
        };
        self.pending().resize = None;
        let mut t = self.track();
        match committed {
            Some(c) => {
                // Our own commit is complete as soon as finish returned,
                // even if its event is still on its way to the watch.
                t.head = t.head.max(c.tid);
                Ok(Snapshot(c.tid.0))
            }
            None => {
                self.drain(&mut t);
                Ok(Snapshot(t.head.0))
            }
        }
    }

    fn changes(&self, since: Snapshot) -> Result<Changes, SourceError> {
        let since = Tid(since.0);
        let mut t = self.track();
        self.drain(&mut t);
        let changed = self.changed(&mut t, since)?;
        // The mapping never asks about `since` or older again.
        t.log.retain(|(tid, _)| *tid > since);
        Ok(Changes {
            head: Snapshot(t.head.0),
            blocks: changed
                .into_iter()
                .map(|(index, at)| BlockChange {
                    index,
                    at: Snapshot(at.0),
                })
                .collect(),
        })
    }
}

/// Block number → ZBlk oid of a file.
fn read_table<S: zodb_core::ReadStorage + ?Sized>(
    f: &ZBigFile<'_, S>,
) -> Result<BTreeMap<u64, Oid>, Error> {
    f.blocks().map(|r| r.map(|(b, z)| (b, z.oid))).collect()
}

fn backend(what: String, e: Error) -> SourceError {
    SourceError::Backend {
        what,
        source: Box::new(e),
    }
}
