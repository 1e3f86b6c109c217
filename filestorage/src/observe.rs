//! A seam for crash testing: every change a read-write storage makes to
//! Data.fs, in order, reported to an observer before it happens.
//!
//! A test records the stream, then rebuilds the file as a crash would have
//! left it at any byte of any write or at any sync point, and checks that
//! reopening it recovers exactly the transactions whose `finish` returned
//! (redb's crash-consistency approach). Production opens have no observer.

use std::fmt;
use std::sync::Arc;

use zodb_core::Tid;

/// One change to Data.fs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEvent<'a> {
    /// `data` is about to be written at `pos`.
    Write {
        /// Offset.
        pos: u64,
        /// Bytes.
        data: &'a [u8],
    },
    /// The file is about to be truncated (or extended) to `len`.
    SetLen(u64),
    /// Everything written so far has just been made durable.
    Sync,
    /// `finish` of the transaction `tid` returned: with
    /// [`crate::Durability::Immediate`] (the default) it must survive any
    /// crash from here on; with `Deferred`, only from the next `Sync`.
    Committed(Tid),
}

/// Receives [`WriteEvent`]s; called from the committing thread.
pub trait WriteObserver: Send + Sync {
    /// One event.
    fn event(&self, event: WriteEvent<'_>);
}

/// An optional observer in [`crate::OpenOptions`].
#[derive(Clone, Default)]
pub struct Observer(pub Option<Arc<dyn WriteObserver>>);

impl Observer {
    /// Whether anyone listens: writes may then skip making the bytes they
    /// write visible in memory (a kernel-side copy).
    pub(crate) fn is_active(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn emit(&self, event: WriteEvent<'_>) {
        if let Some(o) = &self.0 {
            o.event(event);
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(Some)"
        } else {
            "Observer(None)"
        })
    }
}
