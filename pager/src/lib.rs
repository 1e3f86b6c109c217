//! The fault-driven block pager: a block-structured file (wendelin.core's
//! `BigFile`) mapped into memory with userfaultfd.
//!
//! A [`Mapping`] reserves address space for a whole file. The first touch of
//! any byte of a block loads that block through a [`BlockSource`] as of the
//! mapping's snapshot; the first write marks the block dirty (userfaultfd
//! write-protect, per block); [`Mapping::commit`] hands exactly the dirty
//! blocks to the source in one transaction, [`Mapping::abort`] forgets them.
//! Clean blocks beyond a memory budget are evicted, so files larger than RAM
//! can be worked on. Storage is behind the [`BlockSource`] trait; this crate
//! knows nothing about ZODB ([`MemSource`] is an in-memory implementation).
//!
//! ```no_run
//! use std::sync::Arc;
//! use pager::{Mapping, MemSource, Options};
//!
//! let source = Arc::new(MemSource::new(2 << 20));
//! let mut m = Mapping::new(Arc::clone(&source), 1 << 30, Options::with_budget(256 << 20))?;
//! m.slice_mut::<f64>(0, 1000)?.fill(1.5);
//! let at = m.commit()?;
//! assert_eq!(source.stored_in(at), vec![0]);
//! let sum: f64 = m.slice::<f64>(0, 1000)?.iter().sum();
//! assert_eq!(sum, 1500.0);
//! # Ok::<(), pager::Error>(())
//! ```
//!
//! Each mapping owns a userfaultfd, a fault-handler thread and a readahead
//! thread; blocks are installed by `UFFDIO_MOVE` of a filled 2 MiB pool slot
//! (huge pages kept) or, on kernels before 6.8, by `UFFDIO_COPY`. [`probe`]
//! tells whether this process may use userfaultfd at all.
//!
//! `unsafe` code lives only in the `uffd` (raw syscalls) and `mapping`
//! (memory and views) modules; `docs/pager-design.md` states the block
//! states and the invariants their `// SAFETY:` comments rely on.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod error;
mod mapping;
mod source;
mod table;
mod uffd;

pub use error::Error;
pub use mapping::{Element, HUGE_PAGE, InstallMode, Mapping, Options, Stats, ViewMut, probe};
pub use source::{BlockChange, BlockSource, Changes, DirtyBlock, MemSource, Snapshot, SourceError};
pub use uffd::Features;
