//! Reading a `ZBigFile` as of a transaction (spec wendelin.md §2-§4).
//!
//! A ZBigFile is `(blksize, blktab)`: block `blk` covers file bytes
//! `[blk * blksize, (blk + 1) * blksize)`, and `blktab` maps block numbers
//! to block objects. A block missing from `blktab` is a hole and reads as
//! zeros; a stored block shorter than blksize (trailing NULs are stripped
//! when writing) reads zero-padded. The file's size is what wcfs reports:
//! `(maxKey + 1) * blksize`.
//!
//! Block bytes are never assembled unless the caller asks for a buffer:
//! a [`Block`] holds slices of the records it was read from (for an mmap'd
//! Data.fs, pointers into the page cache), and the streaming functions hand
//! those slices to the writer directly.

use std::io::Write;

use bytes::Bytes;
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, Tid};

use crate::btree::{BTree, Family, LoadStats, Node};
use crate::error::{Error, Result};
use crate::format::{
    BlockFormat, FILE_ZODB, ObjRef, ZBigFileState, ZBlkState, decode_zbigfile, decode_zblk,
    decode_zdata,
};
use crate::store;

/// A stored block's bytes, as slices of the records they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockData {
    /// ZBlk0 (or legacy ZBlk): one run from offset 0.
    Flat(Bytes),
    /// ZBlk1: chunks sorted by offset, checked not to overlap.
    Chunks(Vec<Chunk>),
}

/// One ZBlk1 chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset in the block.
    pub offset: u64,
    /// The chunk's bytes (trailing NULs stripped by the writer).
    pub data: Bytes,
    /// The ZData object holding them.
    pub zdata: Oid,
}

/// A piece of a file range: stored bytes, or a run of zeros (a hole, or
/// the stripped tail of a block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Stored bytes.
    Data(&'a [u8]),
    /// That many zero bytes.
    Zeros(u64),
}

impl BlockData {
    /// Where the stored bytes end: the block reads as zeros after.
    pub fn len(&self) -> u64 {
        match self {
            BlockData::Flat(b) => b.len() as u64,
            BlockData::Chunks(c) => c.last().map_or(0, |c| c.offset + c.data.len() as u64),
        }
    }

    /// Whether nothing is stored (the block reads as zeros).
    pub fn is_empty(&self) -> bool {
        self.payload() == 0
    }

    /// The number of bytes actually stored.
    pub fn payload(&self) -> u64 {
        match self {
            BlockData::Flat(b) => b.len() as u64,
            BlockData::Chunks(c) => c.iter().map(|c| c.data.len() as u64).sum(),
        }
    }

    /// Visits `[from, to)` of the block as pieces, in order.
    pub fn pieces(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(Piece<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut pos = from;
        let mut emit = |start: u64, data: &[u8]| -> Result<()> {
            let end = start + data.len() as u64;
            if end <= pos || start >= to {
                return Ok(());
            }
            if start > pos {
                f(Piece::Zeros(start - pos))?;
                pos = start;
            }
            let lo = usize::try_from(pos - start).unwrap_or(usize::MAX);
            let hi = usize::try_from(end.min(to) - start).unwrap_or(usize::MAX);
            if let Some(part) = data.get(lo..hi) {
                f(Piece::Data(part))?;
            }
            pos = end.min(to);
            Ok(())
        };
        match self {
            BlockData::Flat(b) => emit(0, b)?,
            BlockData::Chunks(chunks) => {
                for c in chunks {
                    emit(c.offset, &c.data)?;
                }
            }
        }
        if pos < to {
            f(Piece::Zeros(to - pos))?;
        }
        Ok(())
    }

    /// Copies `[off, off + dst.len())` of the block into `dst`, zeros
    /// where nothing is stored.
    pub fn read_at(&self, off: u64, dst: &mut [u8]) {
        let mut at = 0usize;
        // `pieces` only fails when the visitor does, and this one cannot.
        let _ = self.pieces(off, off.saturating_add(dst.len() as u64), &mut |p| {
            let n = match p {
                Piece::Data(d) => {
                    if let Some(out) = dst.get_mut(at..at + d.len()) {
                        out.copy_from_slice(d);
                    }
                    d.len()
                }
                Piece::Zeros(n) => {
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    if let Some(out) = dst.get_mut(at..at.saturating_add(n)) {
                        out.fill(0);
                    }
                    n
                }
            };
            at = at.saturating_add(n);
            Ok(())
        });
    }
}

/// A stored block, loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block number.
    pub blk: u64,
    /// The ZBlk object.
    pub zblk: Oid,
    /// Its class.
    pub format: BlockFormat,
    /// The ZBlk record's serial.
    pub serial: Tid,
    /// The bytes.
    pub data: BlockData,
    /// Pickle bytes of every object loaded for the block (the ZBlk and,
    /// for ZBlk1, its chunk tree and ZData objects).
    pub record_bytes: u64,
    /// Objects loaded for the block.
    pub objects: u64,
}

/// What [`ZBigFile::read_block`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// The ZBlk object.
    pub zblk: Oid,
    /// Its class.
    pub format: BlockFormat,
    /// The ZBlk record's serial.
    pub serial: Tid,
    /// Stored length (the rest of the block is zeros).
    pub len: u64,
}

/// Totals over the stored blocks of a file ([`ZBigFile::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Stored blocks per format, in [`BlockFormat::ALL`] order.
    pub blocks: [u64; 3],
    /// Highest block number + 1 (0 when no block is stored).
    pub nblocks: u64,
    /// Bytes stored in blocks (after NUL stripping).
    pub data_bytes: u64,
    /// Pickle bytes of the block objects, their chunk trees and ZData.
    pub block_record_bytes: u64,
    /// Pickle bytes of the ZBigFile and its blktab nodes.
    pub table_record_bytes: u64,
    /// Objects loaded in all.
    pub objects: u64,
}

impl FileStats {
    /// Stored blocks of `format`.
    pub fn count(&self, format: BlockFormat) -> u64 {
        let i = BlockFormat::ALL
            .iter()
            .position(|&f| f == format)
            .unwrap_or_default();
        self.blocks.get(i).copied().unwrap_or_default()
    }

    /// Stored blocks of any format.
    pub fn stored(&self) -> u64 {
        self.blocks.iter().sum()
    }
}

/// A ZBigFile as of a snapshot.
#[derive(Debug)]
pub struct ZBigFile<'s, S: ReadStorage + ?Sized> {
    snap: Snapshot<'s, S>,
    oid: Oid,
    serial: Tid,
    size: u64,
    state: ZBigFileState,
    blktab: BTree<'s, S, ObjRef>,
}

impl<'s, S: ReadStorage + ?Sized> ZBigFile<'s, S> {
    /// Loads ZBigFile `oid` and its blktab root as of `snap`.
    pub fn open(snap: Snapshot<'s, S>, oid: Oid) -> Result<Self> {
        let loaded = store::load(&snap, oid)?;
        let state = decode_zbigfile(oid, &loaded.record)?;
        let blktab = BTree::open(store::same(&snap), Family::LO, state.blktab.oid)?;
        if !matches!(blktab.root(), Node::Tree(_)) {
            return Err(Error::Class {
                oid: blktab.oid(),
                found: "BTrees.LOBTree.LOBucket".into(),
                expected: "BTrees.LOBTree.LOBTree (a ZBigFile's blktab)",
            });
        }
        Ok(ZBigFile {
            snap,
            oid,
            serial: loaded.serial,
            size: loaded.size,
            state,
            blktab,
        })
    }

    /// The file's oid.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The ZBigFile record's serial.
    pub fn serial(&self) -> Tid {
        self.serial
    }

    /// The snapshot it reads from.
    pub fn snapshot(&self) -> Snapshot<'s, S> {
        store::same(&self.snap)
    }

    /// The decoded state.
    pub fn state(&self) -> &ZBigFileState {
        &self.state
    }

    /// Block size in bytes.
    pub fn blksize(&self) -> u64 {
        self.state.blksize
    }

    /// The block table.
    pub fn blktab(&self) -> &BTree<'s, S, ObjRef> {
        &self.blktab
    }

    fn file_error(&self, what: impl Into<String>) -> Error {
        Error::state(self.oid, (FILE_ZODB, "ZBigFile"), what)
    }

    fn block_error(&self, blk: i64, zblk: Oid, format: &str, what: impl Into<String>) -> Error {
        Error::Block {
            file: self.oid,
            blk,
            zblk,
            class: format!("{FILE_ZODB}.{format}"),
            what: what.into(),
        }
    }

    /// Highest block number + 1, 0 for an empty file.
    pub fn nblocks(&self) -> Result<u64> {
        match self.blktab.last()? {
            None => Ok(0),
            Some((k, zref)) => {
                let k = u64::try_from(k)
                    .map_err(|_| self.block_error(k, zref.oid, "ZBlk", "negative block number"))?;
                Ok(k + 1)
            }
        }
    }

    /// The file size wcfs reports: `(maxKey + 1) * blksize`, so trailing
    /// holes do not count and the last block counts fully.
    pub fn size(&self) -> Result<u64> {
        self.nblocks()?
            .checked_mul(self.blksize())
            .ok_or_else(|| self.file_error("file size overflows 64 bits"))
    }

    /// The stored blocks in order, as `(block number, ZBlk reference)`.
    pub fn blocks(&self) -> impl Iterator<Item = Result<(u64, ObjRef)>> + '_ {
        self.blktab.iter().map(|item| {
            let (k, zref) = item?;
            let blk = u64::try_from(k)
                .map_err(|_| self.block_error(k, zref.oid, "ZBlk", "negative block number"))?;
            Ok((blk, zref))
        })
    }

    /// Loads block `blk`, `None` for a hole.
    pub fn load_block(&self, blk: u64) -> Result<Option<Block>> {
        let Ok(key) = i64::try_from(blk) else {
            return Ok(None);
        };
        match self.blktab.get(key)? {
            None => Ok(None),
            Some(zref) => self.load_zblk(blk, &zref).map(Some),
        }
    }

    /// Loads the block object `zref` found in blktab for `blk`.
    pub fn load_zblk(&self, blk: u64, zref: &ObjRef) -> Result<Block> {
        let key = i64::try_from(blk).unwrap_or(i64::MAX);
        let loaded = store::load(&self.snap, zref.oid)?;
        let state = decode_zblk(zref.oid, &loaded.record)?;
        let format = state.format();
        let mut block = Block {
            blk,
            zblk: zref.oid,
            format,
            serial: loaded.serial,
            data: BlockData::Flat(Bytes::new()),
            record_bytes: loaded.size,
            objects: 1,
        };
        match state {
            ZBlkState::ZBlk0(s) => block.data = BlockData::Flat(s.data.data),
            ZBlkState::ZBlk1(s) => {
                let (chunks, stats) = self.load_chunks(key, zref.oid, &s.chunktab)?;
                block.data = BlockData::Chunks(chunks);
                block.record_bytes += stats.bytes;
                block.objects += stats.objects;
            }
        }
        let len = block.data.len();
        if len > self.blksize() {
            return Err(self.block_error(
                key,
                zref.oid,
                format.class_name(),
                format!("{len} bytes of data in a block of {}", self.blksize()),
            ));
        }
        Ok(block)
    }

    /// Reads a ZBlk1's chunk table and every ZData it names. Offsets come
    /// from the table, not from an assumed chunk size (CHUNKSIZE changed
    /// over time); chunks must not overlap (ZBlk1.loadblkdata's check,
    /// extended to the last chunk).
    fn load_chunks(
        &self,
        blk: i64,
        zblk: Oid,
        chunktab: &ObjRef,
    ) -> Result<(Vec<Chunk>, LoadStats)> {
        let tree: BTree<'s, S, ObjRef> =
            BTree::open(store::same(&self.snap), Family::IO, chunktab.oid)?;
        if !matches!(tree.root(), Node::Tree(_)) {
            return Err(Error::Class {
                oid: chunktab.oid,
                found: "BTrees.IOBTree.IOBucket".into(),
                expected: "BTrees.IOBTree.IOBTree (a ZBlk1's chunktab)",
            });
        }
        let mut stats = LoadStats {
            objects: 1,
            bytes: tree.root_size(),
        };
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut end = 0u64;
        let mut it = tree.iter();
        for item in &mut it {
            let (off, zref) = item?;
            let offset = u64::try_from(off).map_err(|_| {
                self.block_error(
                    blk,
                    zblk,
                    "ZBlk1",
                    format!("chunk offset {off} is negative"),
                )
            })?;
            let loaded = store::load(&self.snap, zref.oid)?;
            stats.objects += 1;
            stats.bytes += loaded.size;
            let data = decode_zdata(zref.oid, &loaded.record)?.data.data;
            if offset < end {
                return Err(self.block_error(
                    blk,
                    zblk,
                    "ZBlk1",
                    format!("chunk at {offset} overlaps the previous chunk, which ends at {end}"),
                ));
            }
            if data.is_empty() {
                continue;
            }
            end = offset + data.len() as u64;
            chunks.push(Chunk {
                offset,
                data,
                zdata: zref.oid,
            });
        }
        let walked = it.stats();
        stats.objects += walked.objects;
        stats.bytes += walked.bytes;
        Ok((chunks, stats))
    }

    /// Reads block `blk` into `buf`, which must be exactly blksize long:
    /// holes and the unstored tail read as zeros. Returns what was stored,
    /// `None` for a hole.
    pub fn read_block(&self, blk: u64, buf: &mut [u8]) -> Result<Option<BlockInfo>> {
        if buf.len() as u64 != self.blksize() {
            return Err(Error::Buffer {
                what: "read_block",
                len: buf.len(),
                need: self.blksize(),
            });
        }
        match self.load_block(blk)? {
            None => {
                buf.fill(0);
                Ok(None)
            }
            Some(b) => {
                b.data.read_at(0, buf);
                Ok(Some(BlockInfo {
                    zblk: b.zblk,
                    format: b.format,
                    serial: b.serial,
                    len: b.data.len(),
                }))
            }
        }
    }

    /// Visits file bytes `[start, start + len)` in order as pieces of
    /// stored data and runs of zeros, walking blktab once and loading each
    /// stored block once.
    pub fn for_each_piece(
        &self,
        start: u64,
        len: u64,
        f: &mut dyn FnMut(Piece<'_>) -> Result<()>,
    ) -> Result<()> {
        let end = start.checked_add(len).ok_or(Error::Range { start, len })?;
        let bs = self.blksize();
        let mut pos = start;
        let first = i64::try_from(start / bs).unwrap_or(i64::MAX);
        for item in self.blktab.iter_from(first) {
            let (k, zref) = item?;
            let Some(blk_start) = u64::try_from(k).ok().and_then(|b| b.checked_mul(bs)) else {
                break;
            };
            if blk_start >= end {
                break;
            }
            if blk_start > pos {
                f(Piece::Zeros(blk_start - pos))?;
                pos = blk_start;
            }
            let block = self.load_zblk(blk_start / bs, &zref)?;
            let blk_end = blk_start.saturating_add(bs).min(end);
            if blk_end > pos {
                block.data.pieces(pos - blk_start, blk_end - blk_start, f)?;
                pos = blk_end;
            }
        }
        if pos < end {
            f(Piece::Zeros(end - pos))?;
        }
        Ok(())
    }

    /// Copies file bytes `[off, off + buf.len())` into `buf`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let mut at = 0usize;
        self.for_each_piece(off, buf.len() as u64, &mut |p| {
            let n = match p {
                Piece::Data(d) => d.len(),
                Piece::Zeros(n) => usize::try_from(n).unwrap_or(usize::MAX),
            };
            let out = buf.get_mut(at..at.saturating_add(n)).ok_or(Error::Buffer {
                what: "read_at",
                len: at,
                need: n as u64,
            })?;
            match p {
                Piece::Data(d) => out.copy_from_slice(d),
                Piece::Zeros(_) => out.fill(0),
            }
            at += n;
            Ok(())
        })
    }

    /// [`read_at`](Self::read_at) split over up to `threads` threads, in
    /// ranges of whole blocks. Filling fresh memory is dominated by page
    /// faults on the destination (and on the mapping of the Data.fs), which
    /// the kernel serves in parallel; on two cores this nearly halves the
    /// time of a big read. Each thread walks blktab from its own start.
    pub fn read_at_parallel(&self, off: u64, buf: &mut [u8], threads: usize) -> Result<()> {
        let bs = self.blksize();
        let len = buf.len() as u64;
        let threads = threads.clamp(1, 64) as u64;
        if threads == 1 || len < 2 * bs {
            return self.read_at(off, buf);
        }
        // Split points at block boundaries of the file, about len/threads apart.
        let per = len.div_ceil(threads);
        let mut parts: Vec<(u64, &mut [u8])> = Vec::new();
        let (mut pos, mut rest) = (off, buf);
        while !rest.is_empty() {
            let want = pos.saturating_add(per);
            let cut = want.div_ceil(bs).saturating_mul(bs).saturating_sub(pos);
            let n = usize::try_from(cut.max(1))
                .unwrap_or(usize::MAX)
                .min(rest.len());
            let (head, tail) = rest.split_at_mut(n);
            parts.push((pos, head));
            pos += n as u64;
            rest = tail;
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|(at, part)| scope.spawn(move || self.read_at(at, part)))
                .collect();
            let mut result = Ok(());
            for h in handles {
                let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }

    /// Writes file bytes `[start, start + len)` to `w` (holes as zeros),
    /// handing stored slices to the writer without copying them, and calls
    /// `progress` with the bytes written so far.
    pub fn write_range(
        &self,
        start: u64,
        len: u64,
        w: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let mut done = 0u64;
        self.for_each_piece(start, len, &mut |p| {
            match p {
                Piece::Data(d) => {
                    w.write_all(d)?;
                    done += d.len() as u64;
                }
                Piece::Zeros(n) => {
                    write_zeros(w, n)?;
                    done += n;
                }
            }
            progress(done);
            Ok(())
        })
    }

    /// Writes the whole file (`size()` bytes) to `w`.
    pub fn write_to(&self, w: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        let size = self.size()?;
        self.write_range(0, size, w, progress)?;
        Ok(size)
    }

    /// Loads every stored block once and totals what is stored.
    pub fn stats(&self) -> Result<FileStats> {
        let mut st = FileStats {
            table_record_bytes: self.size + self.blktab.root_size(),
            objects: 2,
            ..FileStats::default()
        };
        let mut it = self.blktab.iter();
        for item in &mut it {
            let (k, zref) = item?;
            let blk = u64::try_from(k)
                .map_err(|_| self.block_error(k, zref.oid, "ZBlk", "negative block number"))?;
            let b = self.load_zblk(blk, &zref)?;
            let i = BlockFormat::ALL
                .iter()
                .position(|&f| f == b.format)
                .unwrap_or_default();
            if let Some(n) = st.blocks.get_mut(i) {
                *n += 1;
            }
            st.nblocks = blk + 1;
            st.data_bytes += b.data.payload();
            st.block_record_bytes += b.record_bytes;
            st.objects += b.objects;
        }
        let walked = it.stats();
        st.table_record_bytes += walked.bytes;
        st.objects += walked.objects;
        Ok(st)
    }
}

/// Zeros to write holes from: big enough that a 2 MiB hole is 32 writes.
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// Writes `n` zero bytes.
pub(crate) fn write_zeros(w: &mut dyn Write, mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(ZEROS.get(..k).unwrap_or(&ZEROS))?;
        n -= k as u64;
    }
    Ok(())
}

/// Random-access reads over a file with a small cache of loaded blocks, for
/// access patterns that come back to the same blocks (a transposing copy
/// reads each block once per output slab). Holes are cached too, so they
/// cost one blktab lookup.
#[derive(Debug)]
pub struct BlockCursor<'f, 's, S: ReadStorage + ?Sized> {
    file: &'f ZBigFile<'s, S>,
    /// Most recently used last.
    cache: Vec<(u64, Option<BlockData>)>,
    cached_bytes: u64,
    max_entries: usize,
    max_bytes: u64,
}

impl<'f, 's, S: ReadStorage + ?Sized> BlockCursor<'f, 's, S> {
    /// A cursor keeping at most `max_entries` blocks and `max_bytes` of
    /// block data (at least one block is always kept).
    pub fn new(file: &'f ZBigFile<'s, S>, max_entries: usize, max_bytes: u64) -> Self {
        BlockCursor {
            file,
            cache: Vec::new(),
            cached_bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    fn block(&mut self, blk: u64) -> Result<Option<&BlockData>> {
        let hit = match self.cache.last() {
            Some((b, _)) if *b == blk => true,
            _ => match self.cache.iter().position(|(b, _)| *b == blk) {
                Some(i) => {
                    let e = self.cache.remove(i);
                    self.cache.push(e);
                    true
                }
                None => false,
            },
        };
        if !hit {
            let data = self.file.load_block(blk)?.map(|b| b.data);
            let size = data.as_ref().map_or(0, BlockData::payload);
            while !self.cache.is_empty()
                && (self.cache.len() >= self.max_entries
                    || self.cached_bytes + size > self.max_bytes)
            {
                let (_, old) = self.cache.remove(0);
                self.cached_bytes -= old.as_ref().map_or(0, BlockData::payload);
            }
            self.cached_bytes += size;
            self.cache.push((blk, data));
        }
        Ok(self.cache.last().and_then(|(_, d)| d.as_ref()))
    }

    /// Copies `n` items of `itemsize` bytes, found in the file from `off`
    /// on every `stride` bytes, into `out` at `at`, `at + step`, ...: the
    /// inner loop of a transposing copy. Items within one block are copied
    /// from that block's bytes directly, without a lookup per item.
    #[expect(
        clippy::too_many_arguments,
        reason = "a strided copy has two sides of three numbers each"
    )]
    pub fn gather(
        &mut self,
        off: u64,
        stride: u64,
        n: u64,
        itemsize: u64,
        out: &mut [u8],
        at: usize,
        step: usize,
    ) -> Result<()> {
        let bs = self.file.blksize();
        let e = usize::try_from(itemsize).unwrap_or(usize::MAX);
        let mut j = 0u64;
        while j < n {
            let pos = off + j * stride;
            let (blk, within) = (pos / bs, pos % bs);
            // Items j..k start in this block and end inside it.
            let k = if stride == 0 {
                n
            } else if within + itemsize <= bs {
                (j + 1 + (bs - within - itemsize) / stride).min(n)
            } else {
                j
            };
            if k == j {
                // An item that straddles two blocks.
                let o = at.saturating_add(
                    usize::try_from(j)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(step),
                );
                let dst = out.get_mut(o..o.saturating_add(e)).unwrap_or_default();
                self.read_at(pos, dst)?;
                j += 1;
                continue;
            }
            let data = self.block(blk)?;
            for i in j..k {
                let o = at.saturating_add(
                    usize::try_from(i)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(step),
                );
                let Some(dst) = out.get_mut(o..o.saturating_add(e)) else {
                    continue;
                };
                let w = within + (i - j) * stride;
                let lo = usize::try_from(w).unwrap_or(usize::MAX);
                match data {
                    // The common case: an item inside a flat block's bytes.
                    Some(BlockData::Flat(b)) if b.len() >= lo.saturating_add(e) => {
                        if let Some(src) = b.get(lo..lo + e) {
                            dst.copy_from_slice(src);
                        }
                    }
                    Some(d) => d.read_at(w, dst),
                    None => dst.fill(0),
                }
            }
            j = k;
        }
        Ok(())
    }

    /// Copies file bytes `[off, off + dst.len())` into `dst`.
    pub fn read_at(&mut self, off: u64, dst: &mut [u8]) -> Result<()> {
        let bs = self.file.blksize();
        let mut at = 0usize;
        while at < dst.len() {
            let pos = off + at as u64;
            let (blk, within) = (pos / bs, pos % bs);
            let n = (dst.len() - at).min(usize::try_from(bs - within).unwrap_or(usize::MAX));
            let out = dst.get_mut(at..at + n).unwrap_or_default();
            match self.block(blk)? {
                Some(data) => data.read_at(within, out),
                None => out.fill(0),
            }
            at += n;
        }
        Ok(())
    }
}
