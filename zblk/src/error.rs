//! The crate's one error type.
//!
//! A wendelin database is millions of small records; "bad state" alone
//! sends the reader to a hex dump. Every variant therefore names the object
//! (its oid), what it was supposed to be (its class) and what is wrong, and
//! errors inside a file or a tree also name the file or tree they were
//! reached from.
//!
//! Wrapped errors (the storage's, the pickle decoder's, I/O) are the
//! [`source`](std::error::Error::source) and not repeated in the message,
//! so that `{:#}` (anyhow) prints each part of the chain once.

use std::io;

use zodb_core::pickle::{EncodeError, PickleError};
use zodb_core::{Oid, StorageError};

/// What went wrong reading wendelin.core objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage could not load an object (missing, deleted, I/O, corrupt
    /// Data.fs).
    #[error("loading {oid}")]
    Load {
        /// The object.
        oid: Oid,
        /// What the storage said.
        #[source]
        source: StorageError,
    },
    /// An object's record is not a valid pickle.
    #[error("{oid}: unpickling the record")]
    Pickle {
        /// The object.
        oid: Oid,
        /// Where and why decoding stopped.
        #[source]
        source: PickleError,
    },
    /// An object has another class than the place it was reached from
    /// requires (a ZBigFile's blktab pointing to a ZData, say).
    #[error("{oid}: class {found}, expected {expected}")]
    Class {
        /// The object.
        oid: Oid,
        /// Its class as `module.name` (or a description when the record
        /// names none).
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An object's state does not have the shape its class writes.
    #[error("{oid} ({class}): {what}")]
    State {
        /// The object.
        oid: Oid,
        /// Its class as `module.name`.
        class: String,
        /// What is wrong.
        what: String,
    },
    /// A BTree node is reached twice while walking a tree: the tree is
    /// cyclic or shares a node, and walking it would not end or would
    /// yield keys twice.
    #[error("BTree {tree}: node {oid} is reached twice (cycle or shared node)")]
    TreeCycle {
        /// The tree's root.
        tree: Oid,
        /// The node met again.
        oid: Oid,
    },
    /// A BTree deeper than any real one: BTrees' fan-out keeps real trees
    /// under ten levels even for billions of keys.
    #[error("BTree {tree}: deeper than {max} levels at node {oid}")]
    TreeDepth {
        /// The tree's root.
        tree: Oid,
        /// The node that went over the limit.
        oid: Oid,
        /// The limit.
        max: usize,
    },
    /// A block of a ZBigFile is malformed (too long, overlapping chunks, a
    /// negative block number...).
    #[error("ZBigFile {file}: block {blk} ({zblk} {class}): {what}")]
    Block {
        /// The file.
        file: Oid,
        /// The block number as stored in blktab.
        blk: i64,
        /// The ZBlk object holding the block.
        zblk: Oid,
        /// Its class as `module.name`.
        class: String,
        /// What is wrong.
        what: String,
    },
    /// A ZBigArray whose geometry cannot be read (shape, strides and dtype
    /// disagree, sizes overflow, a dtype NumPy cannot express...).
    #[error("{oid} (wendelin.bigarray.array_zodb.ZBigArray): {what}")]
    Array {
        /// The array.
        oid: Oid,
        /// What is wrong.
        what: String,
    },
    /// The caller's buffer does not have the size the operation needs.
    #[error("{what}: buffer of {len} bytes, {need} needed")]
    Buffer {
        /// The operation.
        what: &'static str,
        /// Size given.
        len: usize,
        /// Size needed.
        need: u64,
    },
    /// A byte range that ends past 2^64.
    #[error("byte range of {len} bytes from {start} ends past 2^64")]
    Range {
        /// First byte.
        start: u64,
        /// Length.
        len: u64,
    },
    /// Writing the output failed.
    #[error("writing output")]
    Output(#[from] io::Error),
    /// The pickler refused a state (a string longer than 4 GiB, say).
    #[error("pickling {what}")]
    Encode {
        /// The object or state being pickled.
        what: String,
        /// What the pickler said.
        #[source]
        source: EncodeError,
    },
    /// A state holds something the writer cannot pickle back as it was
    /// (attribute values it did not keep, dtype metadata dicts...).
    #[error("cannot pickle {what}: {why}")]
    Unencodable {
        /// The state.
        what: String,
        /// Why.
        why: String,
    },
    /// A storage call of a commit failed (`new_oids`, `tpc_begin`, `store`,
    /// `vote`, `finish`): the transaction was aborted and nothing of it is
    /// visible.
    #[error("{what}")]
    Commit {
        /// The call, and the object for `store`.
        what: String,
        /// What the storage said.
        #[source]
        source: StorageError,
    },
    /// A [`Writer`](crate::write::Writer) whose commit failed: its objects
    /// may no longer match the database, so it refuses further work and
    /// must be opened again.
    #[error("the writer's last commit failed; open a new writer")]
    Poisoned,
    /// A write the objects do not allow (block data longer than the block,
    /// a key that is already in the root, a shape that does not fit...).
    #[error("{0}")]
    Invalid(String),
    /// A `.npy` file whose header cannot be read.
    #[error(".npy header: {0}")]
    NpyHeader(String),
}

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A state error for `oid` of class `module.name`.
    pub(crate) fn state(oid: Oid, class: (&str, &str), what: impl Into<String>) -> Error {
        Error::State {
            oid,
            class: format!("{}.{}", class.0, class.1),
            what: what.into(),
        }
    }
}
