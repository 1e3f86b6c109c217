//! Reading a `ZBigArray` (spec wendelin.md §6): its geometry, and its bytes
//! streamed in C or Fortran order with bounded memory.
//!
//! A ZBigArray is a ZBigFile plus `_dtype`, `_shape`, `_order` and
//! `_stridev`. Element `idx` lives at file offset `Σ idx[k] * _stridev[k]`;
//! there is no header and no base offset. What Python sees is the ndarray
//! `BigArray.__getitem__` builds over the file mapping, so this module
//! works with the same view: NumPy appends a subarray dtype's shape to the
//! array's and uses its base type ([`Layout`]).
//!
//! Streaming in the order the array is stored is a single pass over the
//! file that hands stored slices to the writer. Any other order (an
//! F-ordered array exported in C order, or a subarray dtype in F order) is
//! a transposition: the output is produced in slabs of at most
//! [`SLAB_BYTES`], each filled by walking its elements in storage order
//! through a small block cache, so memory stays bounded whatever the size.
//! The price is one pass over the file per slab: a whole-array
//! transposition reads the array `nbytes / SLAB_BYTES` times (cheap for
//! ZBlk0, whose blocks are slices of the mapped Data.fs; ZBlk1 blocks are
//! re-assembled from their chunks on each pass).
//!
//! Padding bytes of structured items (bytes no field covers) are copied as
//! stored when the order is the storage order, and written as zeros when
//! transposing: NumPy copies structured items field by field, leaving
//! padding uninitialized in `A[:].tobytes(order)`, so no value is more
//! right than another and zeros keep the output deterministic.
//!
//! Reads into memory ([`ZBigArray::read_into`]) of tens of MiB or more run
//! on several threads: the cost is dominated by page faults on fresh
//! memory, which the kernel serves in parallel.

use std::io::Write;

use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, Tid};

use crate::dtype::{DType, Descr, py_tuple};
use crate::error::{Error, Result};
use crate::file::{BlockCursor, ZBigFile};
use crate::format::{Order, ZBigArrayState, decode_zbigarray};
use crate::npy;
use crate::store;

/// Output buffered per slab when transposing. A full transposition reads
/// the whole array once per slab, so this trades memory for passes.
pub const SLAB_BYTES: u64 = 64 << 20;

/// Reads into memory at least this big use several threads.
const PARALLEL_MIN: usize = 32 << 20;

/// Subarrays of structured items longer than this are not searched for
/// padding (see [`gaps`]).
const MAX_GAP_ITEMS: u64 = 1 << 16;

/// Blocks kept by the transposing reader's cache (and their byte budget).
const CACHE_BLOCKS: usize = 128;
const CACHE_BYTES: u64 = 256 << 20;

/// Shape and byte strides of an array view, with its element size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Byte stride of each dimension.
    pub strides: Vec<u64>,
    /// Bytes per element.
    pub itemsize: u64,
}

impl Layout {
    /// Number of elements (checked).
    pub fn size(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Bytes of the elements, `size * itemsize` (checked).
    pub fn nbytes(&self) -> Option<u64> {
        self.size()?.checked_mul(self.itemsize)
    }

    /// One past the highest byte any element touches (0 when empty),
    /// checked against overflow.
    pub fn span(&self) -> Option<u64> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        self.shape
            .iter()
            .zip(&self.strides)
            .try_fold(self.itemsize, |a, (&d, &s)| {
                a.checked_add((d - 1).checked_mul(s)?)
            })
    }

    /// NumPy's contiguity flag for `order`: the elements fill
    /// `[0, nbytes)` in that order. Dimensions of length 1 have any stride,
    /// and an empty array is contiguous, as in NumPy.
    pub fn is_contiguous(&self, order: Order) -> bool {
        if self.shape.contains(&0) {
            return true;
        }
        let mut expect = self.itemsize;
        let dims: Box<dyn Iterator<Item = (&u64, &u64)>> = match order {
            Order::C => Box::new(self.shape.iter().zip(&self.strides).rev()),
            Order::F => Box::new(self.shape.iter().zip(&self.strides)),
        };
        for (&d, &s) in dims {
            if d == 1 {
                continue;
            }
            if s != expect {
                return false;
            }
            expect = expect.saturating_mul(d);
        }
        true
    }
}

/// What NumPy's `np.save` writes for the array in its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// `descr`.
    pub descr: Descr,
    /// `fortran_order`.
    pub fortran_order: bool,
    /// `shape`.
    pub shape: Vec<u64>,
}

/// A ZBigArray as of a snapshot, with its ZBigFile.
#[derive(Debug)]
pub struct ZBigArray<'s, S: ReadStorage + ?Sized> {
    oid: Oid,
    serial: Tid,
    state: ZBigArrayState,
    view: Layout,
    nbytes: u64,
    /// Byte ranges of an element no field covers (see [`gaps`]).
    gaps: Vec<(u64, u64)>,
    file: ZBigFile<'s, S>,
}

impl<'s, S: ReadStorage + ?Sized> ZBigArray<'s, S> {
    /// Loads ZBigArray `oid`, checks its geometry, and opens its file.
    pub fn open(snap: Snapshot<'s, S>, oid: Oid) -> Result<Self> {
        let loaded = store::load(&snap, oid)?;
        let state = decode_zbigarray(oid, &loaded.record)?;
        let bad = |what: String| Error::Array { oid, what };
        if state.dtype.has_object() {
            return Err(bad(format!(
                "dtype {} holds Python objects, which BigArray does not support",
                state.dtype.numpy_str()
            )));
        }
        if state.stridev.len() != state.shape.len() {
            return Err(bad(format!(
                "_shape has {} dimensions but _stridev has {}",
                state.shape.len(),
                state.stridev.len()
            )));
        }
        let view = view_layout(&state.dtype, &state.shape, &state.stridev);
        let nbytes = view
            .nbytes()
            .ok_or_else(|| bad(format!("size of shape {:?} overflows", state.shape)))?;
        view.span()
            .ok_or_else(|| bad("the strides address beyond 2^64 bytes".into()))?;
        let file = ZBigFile::open(store::same(&snap), state.zfile.oid)?;
        let gaps = gaps(state.dtype.expand_subarray().0);
        Ok(ZBigArray {
            oid,
            serial: loaded.serial,
            state,
            view,
            nbytes,
            gaps,
            file,
        })
    }

    /// The array's oid.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The ZBigArray record's serial.
    pub fn serial(&self) -> Tid {
        self.serial
    }

    /// The decoded state.
    pub fn state(&self) -> &ZBigArrayState {
        &self.state
    }

    /// `_shape`.
    pub fn shape(&self) -> &[u64] {
        &self.state.shape
    }

    /// `_dtype`.
    pub fn dtype(&self) -> &DType {
        &self.state.dtype
    }

    /// `_order` (`'C'` when the array predates it).
    pub fn order(&self) -> Order {
        self.state.effective_order()
    }

    /// `_stridev`.
    pub fn strides(&self) -> &[u64] {
        &self.state.stridev
    }

    /// Bytes per element (`dtype.itemsize`).
    pub fn itemsize(&self) -> u64 {
        self.state.dtype.itemsize()
    }

    /// Bytes of all elements (`nbytes`).
    pub fn nbytes(&self) -> u64 {
        self.nbytes
    }

    /// The ndarray Python gets from `A[:]`: subarray dtypes expanded.
    pub fn view_layout(&self) -> &Layout {
        &self.view
    }

    /// The ndarray's dtype: `_dtype`, or its subarray base.
    pub fn view_dtype(&self) -> &DType {
        self.state.dtype.expand_subarray().0
    }

    /// The file holding the bytes.
    pub fn file(&self) -> &ZBigFile<'s, S> {
        &self.file
    }

    /// What `np.save(path, A[:])` puts in the header: the descr of the
    /// view's dtype, Fortran order only when the view is F- and not
    /// C-contiguous (NumPy's rule), and the view's shape.
    pub fn npy_header(&self) -> Result<NpyHeader> {
        let descr = self.view_dtype().npy_descr().map_err(|what| Error::Array {
            oid: self.oid,
            what: format!("cannot be saved as .npy: {what}"),
        })?;
        Ok(NpyHeader {
            descr,
            fortran_order: !self.view.is_contiguous(Order::C) && self.view.is_contiguous(Order::F),
            shape: self.view.shape.clone(),
        })
    }

    /// Writes the array's bytes in `order` (what `A[:].tobytes(order)`
    /// gives in Python) and returns their number. `progress` gets the bytes
    /// written so far.
    pub fn write_to(
        &self,
        order: Order,
        w: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        if self.nbytes == 0 {
            return Ok(0);
        }
        if self.view.is_contiguous(order) {
            self.file.write_range(0, self.nbytes, w, progress)?;
        } else {
            self.write_transposed(order, w, progress)?;
        }
        Ok(self.nbytes)
    }

    /// Reads the array's bytes in `order` into `buf` (exactly `nbytes`).
    /// A large read in storage order runs on several threads
    /// ([`ZBigFile::read_at_parallel`]).
    pub fn read_into(&self, order: Order, buf: &mut [u8]) -> Result<()> {
        if buf.len() as u64 != self.nbytes {
            return Err(Error::Buffer {
                what: "ZBigArray::read_into",
                len: buf.len(),
                need: self.nbytes,
            });
        }
        if self.view.is_contiguous(order) {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
            let threads = if buf.len() >= PARALLEL_MIN {
                threads
            } else {
                1
            };
            return self.file.read_at_parallel(0, buf, threads);
        }
        let mut w: &mut [u8] = buf;
        self.write_transposed(order, &mut w, &mut |_| {})
    }

    /// Writes a `.npy` file (format 1.0, or 2.0 when the header needs it)
    /// that `numpy.load` reads equal to `A[:]`, streamed.
    pub fn write_npy(&self, w: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        let h = self.npy_header()?;
        let header = npy::header(&h);
        w.write_all(&header)?;
        let order = if h.fortran_order { Order::F } else { Order::C };
        let n = self.write_to(order, w, progress)?;
        Ok(header.len() as u64 + n)
    }

    /// The slab transposer described in the module documentation.
    fn write_transposed(
        &self,
        order: Order,
        w: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let e = self.view.itemsize;
        let ndim = self.view.shape.len();
        let dims: Vec<usize> = match order {
            Order::C => (0..ndim).collect(),
            Order::F => (0..ndim).rev().collect(),
        };
        // Output dimensions slowest first, with storage strides and the
        // strides of a contiguous output in that order.
        let shape: Vec<u64> = dims
            .iter()
            .map(|&d| self.view.shape.get(d).copied().unwrap_or(1))
            .collect();
        let src: Vec<u64> = dims
            .iter()
            .map(|&d| self.view.strides.get(d).copied().unwrap_or(0))
            .collect();
        let mut cursor = BlockCursor::new(&self.file, CACHE_BLOCKS, CACHE_BYTES);
        if e > SLAB_BYTES {
            return self.write_huge_items(&shape, &src, &mut cursor, w, progress);
        }
        let mut dst = vec![0u64; ndim];
        let mut acc = e;
        for k in (0..ndim).rev() {
            if let Some(s) = dst.get_mut(k) {
                *s = acc;
            }
            acc = acc.saturating_mul(shape.get(k).copied().unwrap_or(1));
        }
        // Split at the slowest dimension one index of which fits a slab
        // (the last one always does: its output stride is the item size).
        let p = (0..ndim)
            .find(|&k| dst.get(k).is_some_and(|&s| s <= SLAB_BYTES))
            .unwrap_or(ndim.saturating_sub(1));
        let step = dst.get(p).copied().unwrap_or(e).max(1);
        let len_p = shape.get(p).copied().unwrap_or(1);
        let per = (SLAB_BYTES / step).clamp(1, len_p.max(1));
        let cap = usize::try_from(per * step).map_err(|_| Error::Array {
            oid: self.oid,
            what: "slab does not fit in memory".into(),
        })?;
        let mut slab = vec![0u8; cap];
        let mut tmp = Vec::new();
        let outer_shape = shape.get(..p).unwrap_or_default();
        let outer_src = src.get(..p).unwrap_or_default();
        let mut outer = vec![0u64; p];
        let eu = usize::try_from(e).unwrap_or(usize::MAX).max(1);
        let mut done = 0u64;
        loop {
            let base: u64 = outer.iter().zip(outer_src).map(|(i, s)| i * s).sum();
            let mut a = 0u64;
            while a < len_p {
                let c = per.min(len_p - a);
                let n = usize::try_from(c * step).unwrap_or(cap).min(cap);
                let buf = slab.get_mut(..n).unwrap_or_default();
                let mut sub_shape = vec![c];
                sub_shape.extend_from_slice(shape.get(p + 1..).unwrap_or_default());
                let sub = SubArray {
                    shape: &sub_shape,
                    src: src.get(p..).unwrap_or_default(),
                    dst: dst.get(p..).unwrap_or_default(),
                    itemsize: e,
                };
                let start = base + a * src.get(p).copied().unwrap_or(0);
                sub.fill(&mut cursor, start, buf, &mut tmp)?;
                if !self.gaps.is_empty() {
                    for item in buf.chunks_exact_mut(eu) {
                        zero_gaps(item, 0, &self.gaps);
                    }
                }
                w.write_all(buf)?;
                done += n as u64;
                progress(done);
                a += c;
            }
            if !odometer(&mut outer, outer_shape) {
                break;
            }
        }
        Ok(())
    }

    /// Transposition for items bigger than a slab (absurd, but a pickle can
    /// say so): items in output order, each read in slab-sized pieces.
    fn write_huge_items(
        &self,
        shape: &[u64],
        src: &[u64],
        cursor: &mut BlockCursor<'_, 's, S>,
        w: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let e = self.view.itemsize;
        let mut buf = vec![0u8; usize::try_from(SLAB_BYTES).unwrap_or(1 << 20)];
        let mut idx = vec![0u64; shape.len()];
        let mut done = 0u64;
        loop {
            let off: u64 = idx.iter().zip(src).map(|(i, s)| i * s).sum();
            let mut c0 = 0u64;
            while c0 < e {
                let n = (e - c0).min(buf.len() as u64);
                let part = buf.get_mut(..n as usize).unwrap_or_default();
                cursor.read_at(off + c0, part)?;
                zero_gaps(part, c0, &self.gaps);
                w.write_all(part)?;
                done += n;
                progress(done);
                c0 += n;
            }
            if !odometer(&mut idx, shape) {
                return Ok(());
            }
        }
    }
}

/// Zeroes the element gaps that fall in `part`, which holds element bytes
/// from offset `at` on.
fn zero_gaps(part: &mut [u8], at: u64, gaps: &[(u64, u64)]) {
    let end = at + part.len() as u64;
    for &(g, n) in gaps {
        let (lo, hi) = (g.max(at), (g + n).min(end));
        if lo < hi {
            let range = usize::try_from(lo - at).unwrap_or(usize::MAX)
                ..usize::try_from(hi - at).unwrap_or(usize::MAX);
            if let Some(x) = part.get_mut(range) {
                x.fill(0);
            }
        }
    }
}

/// Advances a row-major multi-index; false once it wraps around.
fn odometer(idx: &mut [u64], shape: &[u64]) -> bool {
    for (i, &d) in idx.iter_mut().zip(shape).rev() {
        *i += 1;
        if *i < d {
            return true;
        }
        *i = 0;
    }
    false
}

/// A slab: dimensions with their storage and output strides.
struct SubArray<'a> {
    shape: &'a [u64],
    src: &'a [u64],
    dst: &'a [u64],
    itemsize: u64,
}

impl SubArray<'_> {
    /// Fills `out` (the slab, output order) by walking the elements in
    /// storage order, so that file reads go forward and stay in the cached
    /// blocks; the innermost storage dimension is read as one run when it
    /// is contiguous.
    fn fill<S: ReadStorage + ?Sized>(
        &self,
        cursor: &mut BlockCursor<'_, '_, S>,
        start: u64,
        out: &mut [u8],
        tmp: &mut Vec<u8>,
    ) -> Result<()> {
        let e = self.itemsize;
        let eu = usize::try_from(e).unwrap_or(usize::MAX);
        // Storage order: largest stride first (stable: ties keep output order).
        let mut perm: Vec<usize> = (0..self.shape.len()).collect();
        perm.sort_by(|&a, &b| self.src.get(b).cmp(&self.src.get(a)));
        let Some((&inner, outer)) = perm.split_last() else {
            return cursor.read_at(start, out.get_mut(..eu).unwrap_or_default());
        };
        let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        let (n, s_in, d_in) = (
            at(self.shape, inner),
            at(self.src, inner),
            at(self.dst, inner),
        );
        let run = usize::try_from(n * e).unwrap_or(usize::MAX);
        let oshape: Vec<u64> = outer.iter().map(|&k| at(self.shape, k)).collect();
        let mut idx = vec![0u64; outer.len()];
        loop {
            let (mut off, mut o) = (start, 0u64);
            for (&k, &i) in outer.iter().zip(&idx) {
                off += i * at(self.src, k);
                o += i * at(self.dst, k);
            }
            let o = usize::try_from(o).unwrap_or(usize::MAX);
            if s_in == e && d_in == e {
                // Contiguous on both sides: read straight into the slab.
                cursor.read_at(
                    off,
                    out.get_mut(o..o.saturating_add(run)).unwrap_or_default(),
                )?;
            } else if s_in == e {
                tmp.resize(run, 0);
                cursor.read_at(off, tmp)?;
                let d = usize::try_from(d_in).unwrap_or(usize::MAX);
                for (j, item) in tmp.chunks_exact(eu.max(1)).enumerate() {
                    let p = o.saturating_add(j.saturating_mul(d));
                    if let Some(dst) = out.get_mut(p..p.saturating_add(eu)) {
                        dst.copy_from_slice(item);
                    }
                }
            } else {
                let d = usize::try_from(d_in).unwrap_or(usize::MAX);
                cursor.gather(off, s_in, n, e, out, o, d)?;
            }
            if !odometer(&mut idx, &oshape) {
                return Ok(());
            }
        }
    }
}

/// The bytes of an element that belong to no field: alignment padding and
/// the gaps of structured dtypes with explicit offsets. When NumPy has to
/// reorder an array it copies structured items field by field into fresh
/// memory, so these bytes of `A[:].tobytes(order)` are whatever that memory
/// held; the transposing path writes zeros there instead (see the module
/// documentation). Empty for non-structured types.
fn gaps(dtype: &DType) -> Vec<(u64, u64)> {
    if dtype.fields.is_none() {
        return Vec::new();
    }
    let mut covered = Vec::new();
    covered_ranges(dtype, 0, &mut covered, 0);
    covered.sort_unstable();
    let mut out = Vec::new();
    let mut pos = 0u64;
    for (start, end) in covered {
        if start > pos {
            out.push((pos, start - pos));
        }
        pos = pos.max(end);
    }
    if dtype.itemsize() > pos {
        out.push((pos, dtype.itemsize() - pos));
    }
    out
}

/// Byte ranges the leaf fields of `dtype` at `base` occupy.
fn covered_ranges(dtype: &DType, base: u64, out: &mut Vec<(u64, u64)>, depth: usize) {
    let leaf = |out: &mut Vec<(u64, u64)>| out.push((base, base.saturating_add(dtype.itemsize())));
    if depth > crate::dtype::MAX_DTYPE_DEPTH {
        return leaf(out);
    }
    if let Some(fields) = &dtype.fields {
        for f in fields {
            covered_ranges(&f.dtype, base.saturating_add(f.offset), out, depth + 1);
        }
    } else if let Some(sub) = dtype.subarray.as_ref().filter(|s| s.base.fields.is_some()) {
        // Walking a huge subarray of structs item by item would take
        // forever on hostile data; such a field counts as covered.
        let n = sub
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX);
        if n > MAX_GAP_ITEMS {
            return leaf(out);
        }
        for i in 0..n {
            covered_ranges(
                &sub.base,
                base.saturating_add(i.saturating_mul(sub.base.itemsize())),
                out,
                depth + 1,
            );
        }
    } else {
        leaf(out);
    }
}

/// The ndarray layout of `A[:]`: a subarray dtype's dimensions appended,
/// with C-contiguous strides inside the element (what `numpy.ndarray`
/// does with a subarray dtype).
pub(crate) fn view_layout(dtype: &DType, shape: &[u64], strides: &[u64]) -> Layout {
    let (base, sub) = dtype.expand_subarray();
    let mut shape = shape.to_vec();
    let mut strides = strides.to_vec();
    let mut inner = vec![0u64; sub.len()];
    let mut acc = base.itemsize();
    for (s, &d) in inner.iter_mut().zip(&sub).rev() {
        *s = acc;
        acc = acc.saturating_mul(d);
    }
    shape.extend_from_slice(&sub);
    strides.extend_from_slice(&inner);
    Layout {
        shape,
        strides,
        itemsize: base.itemsize(),
    }
}

/// Python's repr of a shape tuple, for reports.
pub fn shape_repr(shape: &[u64]) -> String {
    let mut s = String::new();
    py_tuple(&mut s, shape);
    s
}
