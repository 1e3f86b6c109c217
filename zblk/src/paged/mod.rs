//! wendelin.core's `ZBigFile` and `ZBigArray` on the fault-driven pager.
//!
//! [`ZBigFileSource`] is the pager's [`BlockSource`](pager::BlockSource)
//! for a ZBigFile in any storage (FileStorage, the in-memory storage, a ZEO
//! client): blocks load as of the mapping's snapshot, stores write ZBlk0,
//! ZBlk1 or `auto` blocks exactly as wendelin.core does, and other commits
//! reach the mapping through the storage's commit stream.
//!
//! [`PagedArray`] is wendelin.core's `A[:]`: `ndarray` views of a whole
//! ZBigArray or a range of its major axis, `append` in O(δ), `resize` in
//! O(1), `commit`/`abort` of the blocks touched and the shape.
//!
//! ```no_run
//! use std::sync::Arc;
//! use zblk::paged::{PagedArray, PagedOptions};
//! # fn f(fs: Arc<filestorage::FileStorage>, oid: zodb_core::Oid) -> Result<(), Box<dyn std::error::Error>> {
//! let mut a = PagedArray::open(fs, oid, PagedOptions::default())?;
//! let mean = a.view::<f64>()?.mean();
//! a.view_mut::<f64>()?.array().fill(1.0);
//! a.commit(zodb_core::TxnMeta::default())?;
//! # Ok(()) }
//! ```

mod array;
mod source;

pub use array::{ArrayMut, NpyElement, PagedArray, PagedError, PagedOptions};
pub use source::ZBigFileSource;
