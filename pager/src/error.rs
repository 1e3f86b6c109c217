//! Errors of the pager. Each variant says what failed and where (block,
//! snapshot, address range), so a caller can act on it without parsing text.
#![forbid(unsafe_code)]

use std::io;

use crate::source::{Snapshot, SourceError};

/// Everything a [`Mapping`](crate::Mapping) operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel refuses userfaultfd to this process.
    #[error(
        "userfaultfd is not permitted for this process (errno {errno}): run as root or with \
         CAP_SYS_PTRACE, or allow unprivileged users with `sysctl -w vm.unprivileged_userfaultfd=1` \
         (or give this user read-write access to /dev/userfaultfd)"
    )]
    UffdNotPermitted {
        /// errno of the `userfaultfd` syscall.
        errno: i32,
    },
    /// The kernel has no userfaultfd at all.
    #[error(
        "userfaultfd is not available (errno {errno}): the pager needs Linux built with \
         CONFIG_USERFAULTFD"
    )]
    UffdUnavailable {
        /// errno of the `userfaultfd` syscall.
        errno: i32,
    },
    /// userfaultfd works but lacks a feature the pager cannot do without.
    #[error("userfaultfd lacks {feature}, which the pager needs ({why})")]
    UffdMissingFeature {
        /// The missing feature.
        feature: &'static str,
        /// What the pager uses it for and which kernel brings it.
        why: &'static str,
    },
    /// A system call on the pager's memory failed.
    #[error("{op} on [{addr:#x}, +{len:#x}) failed: {source}")]
    Syscall {
        /// Which call (`mmap`, `UFFDIO_MOVE`, ...).
        op: &'static str,
        /// Start of the address range it was applied to.
        addr: usize,
        /// Length of that range.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The source's block size or the options cannot be used.
    #[error("invalid mapping configuration: {what}")]
    Config {
        /// What is wrong.
        what: String,
    },
    /// A byte range outside the mapping.
    #[error("range {start}..{end} is outside the mapping of {len} bytes")]
    OutOfBounds {
        /// Requested start.
        start: usize,
        /// Requested end.
        end: usize,
        /// Mapping length.
        len: usize,
    },
    /// A typed view at an offset not aligned for its element type.
    #[error("offset {offset} is not a multiple of {align}, the alignment of {ty}")]
    Misaligned {
        /// Requested byte offset.
        offset: usize,
        /// Required alignment.
        align: usize,
        /// Element type name.
        ty: &'static str,
    },
    /// The source failed to load a block.
    #[error("loading block {block} as of snapshot {at}: {source}")]
    Load {
        /// Block index.
        block: u64,
        /// Snapshot it was loaded at.
        at: Snapshot,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// The source failed to store the dirty blocks (not a conflict).
    #[error("storing {blocks} dirty blocks on top of snapshot {base}: {source}")]
    Store {
        /// Number of dirty blocks handed over.
        blocks: usize,
        /// Snapshot the transaction started from.
        base: Snapshot,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// The source failed to report changes since a snapshot.
    #[error("listing blocks changed since snapshot {since}: {source}")]
    Changes {
        /// Snapshot the changes were asked from.
        since: Snapshot,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// Another transaction changed a block this one dirtied. The dirty blocks
    /// are kept; abort to continue.
    #[error(
        "conflict: block {block} was changed at snapshot {changed_at} by another transaction, \
         after this transaction's snapshot {base}; abort and retry"
    )]
    Conflict {
        /// The conflicting block.
        block: u64,
        /// This transaction's snapshot.
        base: Snapshot,
        /// Snapshot of the other change.
        changed_at: Snapshot,
    },
    /// Holding one more block would exceed the memory budget because dirty
    /// blocks fill it (dirty blocks cannot be evicted before commit/abort).
    #[error(
        "memory budget of {budget} bytes exceeded at block {block}: {dirty} bytes of dirty blocks \
         cannot be evicted before commit or abort; commit in smaller transactions or raise the \
         budget"
    )]
    OverBudget {
        /// The block that did not fit.
        block: u64,
        /// Bytes held by dirty blocks.
        dirty: usize,
        /// The budget.
        budget: usize,
    },
    /// A fault could not be served (the faulting thread got SIGBUS); the
    /// transaction's content is unknown and must be aborted.
    #[error("transaction poisoned by a fault that could not be served: {what}; abort it")]
    Poisoned {
        /// The original failure.
        what: String,
    },
    /// `sync` with dirty blocks, which would silently rebase them.
    #[error("sync with {dirty} dirty blocks: commit or abort first")]
    DirtyAtSync {
        /// Number of dirty blocks.
        dirty: usize,
    },
    /// The fault handler thread could not be started.
    #[error("starting the fault handler thread: {0}")]
    Thread(#[source] io::Error),
}
