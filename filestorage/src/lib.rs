//! ZODB FileStorage (`Data.fs`), byte-compatible with Python ZODB.
//!
//! Layers, bottom up (as in the Go ZODB's `fs1` and redb):
//! - [`format`]: the record layout, pure encode/decode, no I/O;
//! - [`backend`]: offset-addressed bytes of a file (mmap or pread);
//! - [`reader`]: typed, bounds-checked record reads with errors that name
//!   file, offset and record;
//! - [`iter`], [`scan`], [`index`], [`index_file`]: cursors, the index
//!   rebuild scan, the compact in-memory index and the `.index` file;
//! - [`storage`]: the engine, implementing [`zodb_core::ReadStorage`].
//!
//! ```no_run
//! use filestorage::FileStorage;
//! use zodb_core::{Oid, ReadStorage};
//! let fs = FileStorage::open_read_only("Data.fs")?;
//! let (root, serial) = fs.load(Oid::ROOT)?;
//! println!("root: {} bytes, serial {serial}", root.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
pub mod commit;
mod error;
pub mod file;
pub mod format;
pub mod index;
pub mod index_file;
pub mod iter;
pub mod lock;
pub mod observe;
pub mod pack;
pub mod reader;
pub mod scan;
pub mod storage;

pub use error::{Error, RecordKind, Result};
pub use file::{BackendKind, DataFile};
pub use storage::{Durability, FileStorage, OpenOptions, OpenReport};
