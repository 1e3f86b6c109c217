//! wendelin.core's persistent objects, read and written without Python.
//!
//! wendelin.core keeps big arrays in ZODB: a `ZBigArray` (dtype, shape,
//! order, strides) over a `ZBigFile` (`blksize` and an LOBTree of blocks),
//! whose blocks are `ZBlk0` objects (the bytes in one record) or `ZBlk1`
//! objects (4 KiB `ZData` chunks under an IOBTree). This crate reads all of
//! it, as written by every wendelin.core version on Python 2 and 3 (spec
//! `wendelin.md`):
//!
//! - [`format`](mod@format): the pickled states as Rust values, pure (no I/O), keeping
//!   what a writer needs to pickle them back unchanged;
//! - [`dtype`]: NumPy dtype pickles, with `dtype.str` and `.npy` descrs;
//! - [`btree`]: LO/IO BTree and bucket states and a reader that walks trees
//!   stored as separate objects, checked against cycles and bad key order;
//! - [`file`](mod@file): a ZBigFile as of a transaction: blocks into buffers, holes as
//!   zeros, ranges streamed without copying;
//! - [`array`](mod@array): a ZBigArray's geometry, and its bytes streamed in C or
//!   Fortran order, or as a `.npy` file ([`npy`]);
//! - [`encode`]: the states pickled back, byte for byte as Python pickles
//!   them;
//! - [`write`]: blocks stored in ZBlk0, ZBlk1 or wendelin's `auto` format,
//!   new arrays, resizes and appends, with the records, oids and record
//!   order Python writes for the same operations.
//!
//! Every reader goes through a [`Snapshot`](zodb_core::storage::Snapshot),
//! so a file or array is read consistently as of one transaction while
//! others commit. Data comes from disk: nothing here panics on bad bytes,
//! and every error names the object, its class and what is wrong
//! ([`Error`]).
//!
//! ```no_run
//! use filestorage::FileStorage;
//! use zblk::array::ZBigArray;
//! use zblk::format::Order;
//! use zodb_core::Oid;
//! use zodb_core::storage::Snapshot;
//!
//! let fs = FileStorage::open_read_only("Data.fs")?;
//! let a = ZBigArray::open(Snapshot::latest(&fs), Oid(5))?;
//! println!("{} {:?} {:?}", a.dtype().numpy_str(), a.shape(), a.order());
//! let mut bytes = vec![0u8; a.nbytes() as usize];
//! a.read_into(Order::C, &mut bytes)?;
//! a.write_npy(&mut std::fs::File::create("a.npy")?, &mut |_| {})?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

pub mod array;
pub mod btree;
pub mod dtype;
pub mod encode;
mod error;
pub mod file;
pub mod format;
pub mod npy;
pub mod paged;
mod store;
pub mod write;

pub use error::{Error, Result};
