//! [`PagedArray`]: a ZBigArray as memory, through the pager.

use std::ops::Range;
use std::sync::Arc;

use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn, ShapeBuilder};
use pager::{Element, Mapping, Options, Snapshot, ViewMut};
use zodb_core::storage::Snapshot as View;
use zodb_core::{Oid, Tid, TxnMeta, WriteStorage};

use super::source::ZBigFileSource;
use crate::array::ZBigArray;
use crate::dtype::DType;
use crate::error::Error as ZError;
use crate::format::Order;
use crate::write::WriteFormat;

/// Failures of a [`PagedArray`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PagedError {
    /// Reading the array's objects failed.
    #[error("ZBigArray {oid}")]
    Array {
        /// The array.
        oid: Oid,
        /// What failed.
        #[source]
        source: ZError,
    },
    /// The pager failed (userfaultfd, a load, a store, a conflict).
    #[error(transparent)]
    Pager(#[from] pager::Error),
    /// A typed view whose element type is not the array's dtype.
    #[error("ZBigArray {oid} holds {dtype}, not {asked}")]
    DType {
        /// The array.
        oid: Oid,
        /// Its dtype, as NumPy writes it.
        dtype: String,
        /// The element type asked for.
        asked: &'static str,
    },
    /// A shape, range or append that the array does not allow.
    #[error("ZBigArray {oid}: {what}")]
    Invalid {
        /// The array.
        oid: Oid,
        /// What is wrong.
        what: String,
    },
}

/// A Rust element type with its NumPy dtype string (native byte order).
pub trait NpyElement: Element {
    /// `numpy.dtype(T).str` on a little-endian machine.
    const DESCR: &'static str;
}

macro_rules! npy_elements {
    ($($t:ty => $d:literal),* $(,)?) => {$(
        impl NpyElement for $t {
            const DESCR: &'static str = $d;
        }
    )*};
}

#[cfg(target_endian = "little")]
npy_elements!(
    u8 => "|u1", i8 => "|i1", u16 => "<u2", i16 => "<i2", u32 => "<u4", i32 => "<i4",
    u64 => "<u8", i64 => "<i8", f32 => "<f4", f64 => "<f8",
);

/// How [`PagedArray::open`] maps the array.
#[derive(Clone, Debug)]
pub struct PagedOptions {
    /// The pager's options (memory budget, readahead...).
    pub pager: Options,
    /// Address space reserved for the array's file: the most it can grow
    /// to by `append`/`resize` without being opened again. Only address
    /// space; nothing is allocated for it.
    pub reserve: usize,
    /// Block format of stores.
    pub format: WriteFormat,
}

impl Default for PagedOptions {
    fn default() -> Self {
        PagedOptions {
            pager: Options::default(),
            reserve: 1 << 44,
            format: WriteFormat::Auto,
        }
    }
}

/// The geometry of the array as of one snapshot (or as changed by this
/// transaction's resizes).
#[derive(Clone, Debug, PartialEq)]
struct Geometry {
    shape: Vec<u64>,
    /// Byte strides of the element view (sub-array dtypes expanded).
    strides: Vec<u64>,
    /// The element dtype of views (a sub-array dtype's base).
    elem: DType,
    /// The array's own dtype, as stored.
    dtype: DType,
    /// Shape of a view: the array's shape plus the sub-array's dimensions.
    view_shape: Vec<u64>,
    order: Order,
    nbytes: u64,
}

/// A wendelin.core ZBigArray mapped into memory: `A[:]` of wendelin.core.
///
/// Views ([`view`](Self::view), [`view_mut`](Self::view_mut)) are real
/// `ndarray` views of the mapped file: the first touch of a block loads it,
/// the first write marks it dirty, and [`commit`](Self::commit) stores
/// exactly the dirty blocks (and a changed shape) in one transaction.
/// The array sees one snapshot until the next commit, abort or
/// [`sync`](Self::sync); a block changed both here and by another commit is
/// a conflict at commit.
pub struct PagedArray<S: WriteStorage + ?Sized + 'static> {
    oid: Oid,
    source: Arc<ZBigFileSource<S>>,
    map: Mapping<Arc<ZBigFileSource<S>>>,
    geo: Geometry,
}

impl<S: WriteStorage + ?Sized + 'static> std::fmt::Debug for PagedArray<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedArray")
            .field("oid", &self.oid)
            .field("shape", &self.geo.shape)
            .field("dtype", &self.geo.dtype.numpy_str())
            .field("order", &self.geo.order)
            .finish_non_exhaustive()
    }
}

impl<S: WriteStorage + ?Sized + 'static> PagedArray<S> {
    /// Maps ZBigArray `oid` of `storage` as of its last transaction.
    pub fn open(storage: Arc<S>, oid: Oid, opts: PagedOptions) -> Result<Self, PagedError> {
        let at = storage.last_transaction();
        let (file, geo) = read_geometry(&*storage, oid, at)?;
        let source = Arc::new(
            ZBigFileSource::new(storage, file)
                .map_err(|source| PagedError::Array { oid, source })?,
        );
        source.set_format(opts.format);
        let len = opts
            .reserve
            .max(usize::try_from(geo.nbytes).unwrap_or(usize::MAX));
        let map = Mapping::new(Arc::clone(&source), len, opts.pager)?;
        let mut a = PagedArray {
            oid,
            source,
            map,
            geo,
        };
        // The mapping may have started at a newer snapshot than `at`.
        a.reload()?;
        Ok(a)
    }

    /// The array's oid.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// `shape`, including this transaction's resizes.
    pub fn shape(&self) -> &[u64] {
        &self.geo.shape
    }

    /// The array's dtype.
    pub fn dtype(&self) -> &DType {
        &self.geo.dtype
    }

    /// Memory order.
    pub fn order(&self) -> Order {
        self.geo.order
    }

    /// Bytes of the elements.
    pub fn nbytes(&self) -> u64 {
        self.geo.nbytes
    }

    /// The snapshot the array sees.
    pub fn snapshot(&self) -> Tid {
        Tid(self.map.snapshot().0)
    }

    /// The pager underneath (statistics, prefetch, resident blocks).
    pub fn mapping(&self) -> &Mapping<Arc<ZBigFileSource<S>>> {
        &self.map
    }

    /// The block source underneath (format, transaction metadata).
    pub fn source(&self) -> &ZBigFileSource<S> {
        &self.source
    }

    /// The whole array, read-only: `A[:]`.
    pub fn view<T: NpyElement>(&self) -> Result<ArrayViewD<'_, T>, PagedError> {
        self.view_major(0..self.major_len())
    }

    /// Indices `range` of the major axis (the first for C order, the last
    /// for F order), read-only: `A[a:b]` (or `A[..., a:b]`).
    pub fn view_major<T: NpyElement>(
        &self,
        range: Range<u64>,
    ) -> Result<ArrayViewD<'_, T>, PagedError> {
        let (shape, strides, bytes) = self.layout::<T>(range)?;
        let data = self.map.slice::<T>(bytes.start, elems::<T>(&bytes))?;
        ArrayViewD::from_shape(IxDyn(&shape).strides(IxDyn(&strides)), data)
            .map_err(|e| self.invalid(format!("view: {e}")))
    }

    /// The whole array, writable. The guard keeps the pager's write view
    /// open; take the `ndarray` view with [`ArrayMut::array`].
    pub fn view_mut<T: NpyElement>(&mut self) -> Result<ArrayMut<'_, T>, PagedError> {
        let n = self.major_len();
        self.view_major_mut(0..n)
    }

    /// Indices `range` of the major axis, writable.
    pub fn view_major_mut<T: NpyElement>(
        &mut self,
        range: Range<u64>,
    ) -> Result<ArrayMut<'_, T>, PagedError> {
        let (shape, strides, bytes) = self.layout::<T>(range)?;
        let data = self.map.slice_mut::<T>(bytes.start, elems::<T>(&bytes))?;
        Ok(ArrayMut {
            data,
            shape,
            strides,
        })
    }

    /// Bytes `range` of the array's file, writable: raw access for data
    /// laid out by hand (the typed views are the usual way).
    pub fn file_bytes_mut(&mut self, range: Range<usize>) -> Result<ViewMut<'_, u8>, PagedError> {
        Ok(self.map.bytes_mut(range)?)
    }

    /// Bytes `range` of the array's file, read-only.
    pub fn file_bytes(&self, range: Range<usize>) -> Result<&[u8], PagedError> {
        Ok(self.map.bytes(range)?)
    }

    /// The elements as one slice, read-only, for a contiguous array.
    pub fn as_slice<T: NpyElement>(&self) -> Result<&[T], PagedError> {
        let (_, _, bytes) = self.layout::<T>(0..self.major_len())?;
        if !self.contiguous() {
            return Err(self.invalid("its strides are not contiguous".into()));
        }
        Ok(self.map.slice::<T>(bytes.start, elems::<T>(&bytes))?)
    }

    /// `BigArray.resize(shape)`: only the shape changes (committed with the
    /// next commit); the data stays where it is, so growth reads zeros until
    /// written and a shrink keeps the bytes beyond the end. O(1).
    pub fn resize(&mut self, shape: &[u64]) -> Result<(), PagedError> {
        if shape.len() != self.geo.shape.len() {
            return Err(self.invalid(format!(
                "cannot resize {} dimensions to {shape:?}",
                self.geo.shape.len()
            )));
        }
        let geo = geometry(self.geo.dtype.clone(), shape.to_vec(), self.geo.order)
            .map_err(|what| self.invalid(what))?;
        if geo.nbytes > self.map.len() as u64 {
            return Err(self.invalid(format!(
                "{} bytes exceed the {} reserved when the array was opened",
                geo.nbytes,
                self.map.len()
            )));
        }
        self.source.set_resize(Some((self.oid, shape.to_vec())));
        self.geo = geo;
        Ok(())
    }

    /// `BigArray.append(values)`: grows the major axis by whole slices and
    /// writes `values` (in the array's order) after the old end. O(len of
    /// values): nothing before the old end is read or written.
    pub fn append<T: NpyElement>(&mut self, values: &[T]) -> Result<(), PagedError> {
        self.check_dtype::<T>()?;
        let m = self.major_axis();
        let slab_elems: u64 = self
            .geo
            .view_shape
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != m)
            .map(|(_, &d)| d)
            .product();
        let n = values.len() as u64;
        if slab_elems == 0 || !n.is_multiple_of(slab_elems) {
            return Err(self.invalid(format!(
                "{n} values are not whole slices of {slab_elems} along the major axis"
            )));
        }
        let old = self.major_len();
        let mut shape = self.geo.shape.clone();
        if let Some(d) = shape.get_mut(m) {
            *d = old + n / slab_elems;
        }
        self.resize(&shape)?;
        let mut tail = self.view_major_mut::<T>(old..old + n / slab_elems)?;
        tail.data.copy_from_slice(values);
        Ok(())
    }

    /// Stores the dirty blocks and the changed shape in one transaction
    /// with `meta`, then moves to the newest snapshot. On a conflict nothing
    /// is stored and the changes stay: [`abort`](Self::abort).
    pub fn commit(&mut self, meta: TxnMeta) -> Result<Tid, PagedError> {
        self.source.set_meta(meta);
        let snap = if self.map.dirty_blocks().is_empty() && self.source.has_resize() {
            use pager::BlockSource;
            let at = self
                .source
                .store(self.map.snapshot(), &[])
                .map_err(|source| pager::Error::Store {
                    blocks: 0,
                    base: self.map.snapshot(),
                    source,
                })?;
            self.map.sync()?;
            at
        } else {
            self.map.commit()?
        };
        self.source.set_meta(TxnMeta::default());
        self.reload()?;
        Ok(Tid(snap.0))
    }

    /// Forgets this transaction's writes and resizes and moves to the
    /// newest snapshot.
    pub fn abort(&mut self) -> Result<Tid, PagedError> {
        self.source.set_resize(None);
        self.source.set_meta(TxnMeta::default());
        let at = self.map.abort()?;
        self.reload()?;
        Ok(Tid(at.0))
    }

    /// Starts a new transaction without changes: the newest snapshot, with
    /// blocks other commits changed dropped. Refused with changes pending.
    pub fn sync(&mut self) -> Result<Tid, PagedError> {
        if self.source.has_resize() {
            return Err(self.invalid("a resize is not committed; commit or abort".into()));
        }
        let at = self.map.sync()?;
        self.reload()?;
        Ok(Tid(at.0))
    }

    /// Re-reads the shape at the mapping's snapshot (another node may have
    /// resized the array).
    fn reload(&mut self) -> Result<(), PagedError> {
        let at: Snapshot = self.map.snapshot();
        let (_, geo) = read_geometry(&**self.source.storage(), self.oid, Tid(at.0))?;
        self.geo = geo;
        Ok(())
    }

    fn invalid(&self, what: String) -> PagedError {
        PagedError::Invalid {
            oid: self.oid,
            what,
        }
    }

    fn check_dtype<T: NpyElement>(&self) -> Result<(), PagedError> {
        let d = &self.geo.elem;
        if d.fields.is_some() || d.subarray.is_some() || d.numpy_str() != T::DESCR {
            return Err(PagedError::DType {
                oid: self.oid,
                dtype: self.geo.dtype.numpy_str(),
                asked: std::any::type_name::<T>(),
            });
        }
        Ok(())
    }

    /// `numpy.argmax(strides)` as BigArray picks the axis to append along,
    /// which is the first for C order and the last for F.
    fn major_axis(&self) -> usize {
        match self.geo.order {
            Order::C => 0,
            Order::F => self.geo.shape.len().saturating_sub(1),
        }
    }

    fn major_len(&self) -> u64 {
        self.geo.shape.get(self.major_axis()).copied().unwrap_or(1)
    }

    fn contiguous(&self) -> bool {
        crate::array::Layout {
            shape: self.geo.view_shape.clone(),
            strides: self.geo.strides.clone(),
            itemsize: self.geo.elem.itemsize(),
        }
        .is_contiguous(self.geo.order)
    }

    /// Shape and element strides of the view of `range` along the major
    /// axis, and the bytes of the file it spans.
    #[allow(clippy::type_complexity, reason = "three plain parts of one layout")]
    fn layout<T: NpyElement>(
        &self,
        range: Range<u64>,
    ) -> Result<(Vec<usize>, Vec<usize>, Range<usize>), PagedError> {
        self.check_dtype::<T>()?;
        let item = std::mem::size_of::<T>() as u64;
        let m = self.major_axis();
        if range.start > range.end || range.end > self.major_len() {
            return Err(self.invalid(format!(
                "range {range:?} outside 0..{} of the major axis",
                self.major_len()
            )));
        }
        let mut shape = self.geo.view_shape.clone();
        if !shape.is_empty()
            && let Some(d) = shape.get_mut(m)
        {
            *d = range.end - range.start;
        }
        let stride_m = self.geo.strides.get(m).copied().unwrap_or(0);
        let start = range.start * stride_m;
        let span = crate::array::Layout {
            shape: shape.clone(),
            strides: self.geo.strides.clone(),
            itemsize: item,
        }
        .span()
        .ok_or_else(|| self.invalid("size overflows".into()))?;
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| self.invalid("too large".into()));
        let mut strides = Vec::with_capacity(self.geo.strides.len());
        for &s in &self.geo.strides {
            if s % item != 0 {
                return Err(self.invalid(format!("stride {s} is not a multiple of {item}")));
            }
            strides.push(to_usize(s / item)?);
        }
        let shape = shape.into_iter().map(to_usize).collect::<Result<_, _>>()?;
        Ok((shape, strides, to_usize(start)?..to_usize(start + span)?))
    }
}

/// A writable view of a [`PagedArray`]; [`array`](Self::array) gives the
/// `ndarray` view. Dropping it ends the write view.
#[derive(Debug)]
pub struct ArrayMut<'a, T: NpyElement> {
    data: ViewMut<'a, T>,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl<T: NpyElement> ArrayMut<'_, T> {
    /// The `ndarray` view of the elements.
    pub fn array(&mut self) -> ArrayViewMutD<'_, T> {
        match ArrayViewMutD::from_shape(
            IxDyn(&self.shape).strides(IxDyn(&self.strides)),
            &mut self.data[..],
        ) {
            Ok(v) => v,
            // The layout was checked against the slice when the guard was
            // made; an empty view is the only sane answer otherwise.
            Err(_) => ArrayViewMutD::from_shape(IxDyn(&[0]), &mut [][..])
                .unwrap_or_else(|_| unreachable!("an empty view always fits")),
        }
    }

    /// The elements as one slice (the view's whole byte range).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }
}

fn elems<T>(bytes: &Range<usize>) -> usize {
    (bytes.end - bytes.start) / std::mem::size_of::<T>()
}

/// The array's file and geometry as of `at`.
fn read_geometry<S: WriteStorage + ?Sized>(
    storage: &S,
    oid: Oid,
    at: Tid,
) -> Result<(Oid, Geometry), PagedError> {
    let a = ZBigArray::open(View::at(storage, at), oid)
        .map_err(|source| PagedError::Array { oid, source })?;
    let layout = a.view_layout();
    Ok((
        a.file().oid(),
        Geometry {
            shape: a.shape().to_vec(),
            strides: layout.strides.clone(),
            elem: a.view_dtype().clone(),
            dtype: a.dtype().clone(),
            view_shape: layout.shape.clone(),
            order: a.order(),
            nbytes: a.nbytes(),
        },
    ))
}

/// The geometry after a resize to `shape`: BigArray's `_init0` strides,
/// with a sub-array dtype expanded as `A[:]` does.
fn geometry(array_dtype: DType, shape: Vec<u64>, order: Order) -> Result<Geometry, String> {
    let stridev =
        crate::encode::strides(array_dtype.itemsize(), &shape, order).map_err(|e| e.to_string())?;
    let layout = crate::array::view_layout(&array_dtype, &shape, &stridev);
    let nbytes = layout
        .nbytes()
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    Ok(Geometry {
        shape,
        strides: layout.strides,
        elem: array_dtype.expand_subarray().0.clone(),
        dtype: array_dtype,
        view_shape: layout.shape,
        order,
        nbytes,
    })
}
