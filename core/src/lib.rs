//! What every zodbrs crate shares.
//!
//! - [`Oid`], [`Tid`] and [`TimeStamp`]: identifiers and ZODB's tid clock,
//!   bit-exact with `persistent.TimeStamp`.
//! - [`TxnMeta`], [`TxnInfo`], [`TxnStatus`]: transaction metadata.
//! - [`storage`]: the traits every storage implements and everything above
//!   one (ZEO server, pager, tools) uses, including snapshot reads.
//! - [`notify`]: the stream of committed transactions that servers turn into
//!   invalidations and the pager into dropped blocks.
//! - [`pickle`]: a ZODB-aware pickle decoder (classes, persistent references,
//!   Python 2 `str` kept apart from `bytes` and `unicode`).
//!
//! ```
//! use zodb_core::{Tid, TimeStamp};
//! let tid: Tid = "0285cbac258bf266".parse().unwrap();
//! assert_eq!(tid.timestamp().to_string(), "1979-01-03 21:00:08.800000");
//! let later = TimeStamp::from_unix(0.0).unwrap().later_than(tid.timestamp());
//! assert!(later.tid() > tid);
//! ```

pub mod memory;
pub mod notify;
mod oid;
pub mod pickle;
pub mod storage;
mod tid;
mod txn;

pub use oid::{Oid, ParseOidError};
pub use storage::{ReadStorage, StorageError, TpcTxn, WriteStorage};
pub use tid::{ParseTidError, Tid, TimeStamp, TimeStampError};
pub use txn::{TxnInfo, TxnMeta, TxnStatus};

/// An error and its chain of causes as one line, `what: why: root cause`,
/// for logs and for messages sent to ZEO clients. Our error types name what
/// was being done and leave each cause to `source()`, so every part appears
/// once.
pub fn error_report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
