//! ZBigArray creation, resize and append: wendelin.core's
//! `ZBigArray.__init__`, `BigArray.resize` and `BigArray.append` (spec
//! wendelin.md §6) on the writer's objects.

use zodb_core::{Oid, WriteStorage};

use super::{ArrayId, ArrayObj, Class, FileId, State, Writer};
use crate::btree::Family;
use crate::dtype::DType;
use crate::encode::{new_array_state, strides};
use crate::error::{Error, Result};
use crate::format::{ObjRef, Order};

/// What `ZBigArray(shape, dtype, order, blksize)` is given.
#[derive(Clone, Debug, PartialEq)]
pub struct ArraySpec {
    /// Element type (no Python objects).
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Memory order.
    pub order: Order,
    /// Block size of the array's ZBigFile (wendelin's default is 2 MiB).
    pub blksize: u64,
}

/// wendelin.core's default ZBigArray block size.
pub const DEFAULT_BLKSIZE: u64 = 2 << 20;

impl<'s, S: WriteStorage + ?Sized> Writer<'s, S> {
    /// `root[key] = ZBigArray(shape, dtype, order, blksize)`: a new array,
    /// its ZBigFile and the file's empty LOBTree, stored (and given oids)
    /// at the next commit. Refuses a key the root already has: replacing an
    /// array would orphan the old one, which is rarely what an import
    /// wants.
    pub fn create_array(&mut self, key: &str, spec: ArraySpec) -> Result<ArrayId> {
        self.check()?;
        if self.root_get(key)?.is_some() {
            return Err(Error::Invalid(format!("the root already has {key:?}")));
        }
        if spec.dtype.has_object() {
            return Err(Error::Invalid(
                "dtypes with Python objects cannot be stored in a BigArray".into(),
            ));
        }
        if spec.blksize == 0 {
            return Err(Error::Invalid("blksize must be positive".into()));
        }
        // ZBigArray.__init__: the geometry (BigArray._init0), then
        // `self.zfile = ZBigFile(blksize)`, whose __init__ makes the LOBTree.
        let blktab = self.new_tree(Family::LO);
        let zfile = self.new_obj(
            Class::File,
            State::File {
                blksize: spec.blksize,
                blktab,
            },
        );
        // The placeholder reference is replaced by the live one when pickled.
        let placeholder = ObjRef {
            oid: Oid(0),
            class: None,
        };
        let state = new_array_state(spec.dtype, spec.shape, spec.order, placeholder)?;
        check_span(&state.dtype, &state.shape)?;
        let a = self.new_obj(
            Class::Array,
            State::Array(Box::new(ArrayObj {
                state,
                zfile,
                record: None,
            })),
        );
        self.root_set(key, a)?;
        Ok(ArrayId(a))
    }

    fn array(&mut self, a: ArrayId) -> Result<&mut ArrayObj> {
        self.load(a.0)?;
        let d = self.describe(a.0);
        match &mut self.obj_mut(a.0)?.state {
            State::Array(x) => Ok(&mut **x),
            _ => Err(Error::Invalid(format!("{d} is not a ZBigArray"))),
        }
    }

    /// The array's ZBigFile.
    pub fn array_file(&mut self, a: ArrayId) -> Result<FileId> {
        self.check()?;
        Ok(FileId(self.array(a)?.zfile))
    }

    /// `_shape`, `_stridev`, `_order` (`'C'` when missing) and the dtype.
    pub fn geometry(&mut self, a: ArrayId) -> Result<(Vec<u64>, Vec<u64>, Order, DType)> {
        self.check()?;
        let x = self.array(a)?;
        Ok((
            x.state.shape.clone(),
            x.state.stridev.clone(),
            x.state.effective_order(),
            x.state.dtype.clone(),
        ))
    }

    /// `BigArray.resize(shape)`: `_init0` again with the same dtype and
    /// order, so only `_shape` and `_stridev` change (and an array saved
    /// before `_order` existed gets it). The file is not touched: bytes
    /// beyond a shrunk array stay, growth reads zeros until written.
    pub fn resize(&mut self, a: ArrayId, shape: &[u64]) -> Result<()> {
        self.check()?;
        let x = self.array(a)?;
        let order = x.state.effective_order();
        let stridev = strides(x.state.dtype.itemsize(), shape, order)?;
        check_span(&x.state.dtype, shape)?;
        x.state.shape = shape.to_vec();
        x.state.stridev = stridev;
        if x.state.order.is_none() {
            x.state.order = Some(order);
            x.state.attrs.push("_order".into());
        }
        self.mark_changed(a.0);
        Ok(())
    }

    /// `BigArray.append(values)`: grows the major axis (the one with the
    /// largest stride) by `values.len()` / (bytes per index of that axis)
    /// and writes `values` (in the array's order) after the old end, as
    /// dirty pages ([`write_at`](Self::write_at)).
    pub fn append(&mut self, a: ArrayId, values: &[u8]) -> Result<()> {
        self.check()?;
        let (shape, stridev, order, dtype) = self.geometry(a)?;
        // numpy.argmax: the first of the largest.
        let m = stridev
            .iter()
            .enumerate()
            .fold(None, |best: Option<(usize, u64)>, (i, &s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((i, s)),
            })
            .map(|(i, _)| i)
            .ok_or_else(|| Error::Invalid("cannot append to a 0-d array".into()))?;
        let outer = match order {
            Order::C => 0,
            Order::F => shape.len() - 1,
        };
        if m != outer {
            return Err(Error::Invalid(format!(
                "append along axis {m} (the largest stride, {order:?} order) is not contiguous"
            )));
        }
        let slab = shape
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != m)
            .try_fold(dtype.itemsize(), |acc, (_, &d)| acc.checked_mul(d))
            .ok_or_else(|| Error::Invalid("array size overflows".into()))?;
        if slab == 0 || !(values.len() as u64).is_multiple_of(slab) {
            return Err(Error::Invalid(format!(
                "{} bytes are not whole slices of {slab} bytes along the major axis",
                values.len()
            )));
        }
        let n = shape.get(m).copied().unwrap_or(0);
        let delta = values.len() as u64 / slab;
        let mut new_shape = shape.clone();
        if let Some(d) = new_shape.get_mut(m) {
            *d = n
                .checked_add(delta)
                .ok_or_else(|| Error::Invalid("array size overflows".into()))?;
        }
        self.resize(a, &new_shape)?;
        let f = self.array_file(a)?;
        let offset = n
            .checked_mul(slab)
            .ok_or_else(|| Error::Invalid("array size overflows".into()))?;
        self.write_at(f, offset, values)
    }
}

/// Refuses shapes whose bytes do not fit 64 bits.
fn check_span(dtype: &DType, shape: &[u64]) -> Result<()> {
    shape
        .iter()
        .try_fold(dtype.itemsize(), |a, &d| a.checked_mul(d))
        .map(|_| ())
        .ok_or_else(|| Error::Invalid(format!("shape {shape:?} overflows 64 bits")))
}
