//! ZODB's pickles, read without Python.
//!
//! A ZODB object record is two pickles, class metadata then state, written
//! through one memo (spec pickles.md). Generic pickle crates cannot read them:
//! they lose persistent ids and class globals, fold Python 2 `str` into text,
//! and cannot keep a memo across two pickles. This module is a small, exact
//! codec for what ZODB and wendelin.core write, protocols 0 to 5:
//!
//! - [`decode`], [`decode_record`], [`decode_stream`] and [`Decoder`] build
//!   a [`Graph`] of [`Node`]s (identity kept, strings zero-copy) viewed
//!   through [`Value`]; [`Value::persistent_ref`] reads ZODB's reference
//!   forms.
//! - [`references`] is ZODB's `referencesf` (the oids a record refers to, as
//!   pack's garbage collection needs them) without building a graph.
//! - [`class_name`] is ZODB's `get_pickle_metadata` (what fsdump and friends
//!   print as the class of a record).
//! - [`dis`] prints what zodbpickle's `pickletools.dis` prints, byte for
//!   byte, for `zodb dump --pretty=zpickledis`.
//!
//! Every reader here is iterative and checks every length against the input
//! before using it: records come from disk and from the network.
//!
//! ```
//! use bytes::Bytes;
//! use zodb_core::Oid;
//! use zodb_core::pickle::{class_name, decode_record, references};
//!
//! // A PersistentMapping {'data': {'a': <oid 5>}} as Python 3 ZODB writes it;
//! // the reference reuses the class the first pickle memoized (BINGET 0).
//! let record = Bytes::from_static(
//!     b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\
//!       \x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03X\x01\x00\x00\x00aq\x04\
//!       C\x08\x00\x00\x00\x00\x00\x00\x00\x05q\x05h\x00\x86q\x06Qq\x07ss.",
//! );
//! let rec = decode_record(&record)?;
//! assert_eq!(rec.class_path(), Some(("persistent.mapping", "PersistentMapping")));
//! let a = rec.state().dict_get("data").unwrap().dict_get("a").unwrap();
//! let target = a.persistent_ref()?;
//! assert_eq!(target.oid(), Oid(5));
//! assert_eq!(target.class_path(), Some(("persistent.mapping", "PersistentMapping")));
//! assert_eq!(format!("{:?}", rec.state()), "{'data': {'a': ref(0000000000000005 persistent.mapping.PersistentMapping)}}");
//!
//! assert_eq!(references(&record)?, [Oid(5)]);
//! assert_eq!(class_name(&record), ("persistent.mapping".into(), "PersistentMapping".into()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod decode;
mod dis;
mod encode;
mod error;
mod meta;
mod ops;
mod printable;
mod pytext;
mod refs;
mod value;

pub use decode::{Decoder, Record, decode, decode_record, decode_stream};
pub use dis::{DisFlavor, DisMemo, dis};
pub use encode::{
    Dialect, EncodeError, Encoder, Flavor, GraphBuilder, NodeSet, encode, encode_record,
    unmemoized_nodes,
};
pub use error::{PickleError, PickleErrorKind};
pub use meta::class_name;
pub use refs::{RefScanner, references};
pub use value::{
    DictItems, GlobalName, Graph, Node, NodeId, Object, ObjectKind, ObjectView, PersistentRef,
    RefError, Seq, SeqIter, Value,
};

/// How deeply MARKs may nest. CPython's pickler recurses once per nesting
/// level and stops near 1000, so real data stays far below this; the bound
/// keeps a hostile record from making the disassembler's indentation (and
/// the stacks) grow without limit.
pub const MAX_MARK_DEPTH: usize = 4096;
