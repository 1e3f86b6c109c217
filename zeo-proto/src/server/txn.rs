//! ZEO 5 commits on the server side (ZEO: `StorageServer.py` `ZEOStorage`
//! `tpc_begin` … `tpc_finish`, `LockManager`).
//!
//! A connection buffers its transaction ([`TxnBuf`]): nothing reaches the
//! storage before `vote`. At `vote`, [`vote_worker`] starts on a blocking
//! thread, queues for the storage's commit lock (a vote cancelled while it
//! waits gives the lock back as soon as it gets it), and once it has it
//! runs storage `tpc_begin` (so the tid is chosen under the lock and tids follow
//! commit order), the buffered operations in order, then blob stores, then
//! the storage vote. The thread keeps the storage transaction (it borrows
//! the storage) and waits for the connection's decision: finish, abort — or
//! nothing, when the connection is gone or `transaction-timeout` passes,
//! which aborts too. The commit lock is released when the worker is done
//! with the storage, whatever the outcome.
//!
//! Conflicts on stores are collected rather than fatal: the storage
//! transaction is aborted, the lock released, the buffer kept, and the
//! conflicts go back in the vote result for the client to resolve and
//! store again before voting again (ZEO 5's client-side conflict
//! resolution). Every other failure aborts the transaction and is the
//! vote's exception reply.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot};
use zodb_core::storage::TpcTxn;
use zodb_core::{Oid, StorageError, Tid, TxnMeta, TxnStatus};

use super::conn::Deferred;
use super::storage::{Finished, Served, now_f64};
use crate::exception::ZeoException;
use crate::reply::VoteItem;
use crate::request::TxnId;
use crate::value::Value;

/// One buffered operation, in the order the client sent it.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `storea`.
    Store { oid: Oid, serial: Tid, data: Bytes },
    /// `deleteObject`.
    Delete { oid: Oid, serial: Tid },
    /// `checkCurrentSerialInTransaction`.
    CheckRead { oid: Oid, serial: Tid },
    /// `restorea`.
    Restore {
        oid: Oid,
        data: Option<Bytes>,
        prev_txn: Option<Tid>,
    },
    /// `undoa`.
    Undo { id: Bytes },
}

/// A blob to store with its record (`storeBlobEnd`, `storeBlobShared`).
#[derive(Debug)]
pub(crate) struct BlobUpload {
    pub(crate) oid: Oid,
    pub(crate) serial: Tid,
    pub(crate) data: Bytes,
    /// The uploaded file (in the blob directory's `tmp`, or the client's
    /// file in a shared blob directory).
    pub(crate) path: PathBuf,
}

/// Puts `d` on a connection's deferred queue from a blocking thread. A
/// full queue (a client not reading its blob stream) must not stall a
/// worker that may hold the commit lock: the message then waits in a task.
/// `false`: the connection is gone.
fn send_deferred(tx: &mpsc::Sender<Deferred>, rt: &tokio::runtime::Handle, d: Deferred) -> bool {
    match tx.try_send(d) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(d)) => {
            let tx = tx.clone();
            rt.spawn(async move {
                let _ = tx.send(d).await;
            });
            true
        }
    }
}

/// Where the vote's outcome goes: straight to the connection as
/// [`Deferred::Voted`], with the channel for its decision. Each hop
/// between threads costs a wake-up inside the commit lock, so the worker
/// answers the connection itself. Dropped unanswered (a worker that
/// panicked), it answers "no outcome".
pub(crate) struct VoteAnswer {
    pub(crate) deferred: mpsc::Sender<Deferred>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) to: Option<Value>,
    pub(crate) generation: u64,
    pub(crate) decide: Option<Sender<Decision>>,
}

impl VoteAnswer {
    /// Answers; `false` if the connection is gone (nobody will decide).
    fn send(mut self, outcome: VoteOutcome) -> bool {
        self.deliver(Some(outcome))
    }

    fn deliver(&mut self, outcome: Option<VoteOutcome>) -> bool {
        let Some(decide) = self.decide.take() else {
            return false;
        };
        let d = Deferred::Voted {
            to: self.to.take(),
            generation: self.generation,
            outcome,
            decide,
        };
        send_deferred(&self.deferred, &self.rt, d)
    }
}

impl Drop for VoteAnswer {
    fn drop(&mut self) {
        if self.decide.is_some() {
            self.deliver(None);
        }
    }
}

/// Where `tpc_finish`'s result goes: straight to the connection as
/// [`Deferred::Finished`] (see [`VoteAnswer`]). Dropped unanswered, it
/// reports the transaction aborted.
pub(crate) struct FinishAnswer {
    pub(crate) deferred: mpsc::Sender<Deferred>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) to: Option<Value>,
    pub(crate) generation: u64,
    pub(crate) sent: bool,
}

impl FinishAnswer {
    fn send(mut self, result: Result<Tid, ZeoException>) {
        self.deliver(result);
    }

    fn deliver(&mut self, result: Result<Tid, ZeoException>) {
        self.sent = true;
        let d = Deferred::Finished {
            to: self.to.take(),
            generation: self.generation,
            result,
        };
        send_deferred(&self.deferred, &self.rt, d);
    }
}

impl Drop for FinishAnswer {
    fn drop(&mut self) {
        if !self.sent {
            self.deliver(Err(ZeoException::StorageTransaction(vec![Value::str(
                "transaction was aborted",
            )])));
        }
    }
}

impl std::fmt::Debug for FinishAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishAnswer")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What the connection tells the worker holding a voted transaction.
#[derive(Debug)]
pub(crate) enum Decision {
    /// `tpc_finish`: commit, then answer with the tid.
    Finish(FinishAnswer),
    /// `tpc_abort`: abort, then acknowledge.
    Abort(oneshot::Sender<()>),
}

/// The result of a vote.
#[derive(Debug)]
pub(crate) enum VoteOutcome {
    /// Voted; the worker holds the lock and waits for a [`Decision`].
    Voted {
        /// Oids whose data the server changed (resolved, undone).
        items: Vec<VoteItem>,
    },
    /// Conflicts for the client to resolve; the storage transaction was
    /// aborted and the buffer is handed back. The commit lock is released
    /// (`client-conflict-resolution`, as ZEO does) or kept (`held`) until
    /// the client votes again or aborts.
    Conflicts {
        items: Vec<VoteItem>,
        ops: Vec<Op>,
        blobs: Vec<BlobUpload>,
        /// The newest committed serial the conflicts name.
        reveal: Tid,
        held: Option<HeldLock>,
    },
    /// The vote failed: the transaction is over.
    Failed {
        error: ZeoException,
        reveal: Tid,
        /// Whether it was a write conflict (for the statistics).
        conflict: bool,
    },
}

/// The commit lock kept by a connection between conflict rounds.
///
/// Why keep it: Python's server resolves conflicts while it holds the lock,
/// so the state it merges with cannot move. Here resolution is the
/// client's, one round trip away; if the lock were released meanwhile, a
/// busy object (a BTree bucket every client writes) could be committed
/// again before each retry, and ZEO's client gives up after 9 rounds. With
/// the lock kept, the state the client resolved against is still current
/// when it votes again, so the second round succeeds. Dropping it (abort,
/// disconnect) releases the lock.
pub(crate) struct HeldLock {
    guard: Option<OwnedMutexGuard<()>>,
    /// When the lock was taken (the transaction timeout counts from here).
    pub(crate) locked_at: Instant,
    served: Arc<Served>,
}

impl HeldLock {
    fn take(mut self) -> Option<OwnedMutexGuard<()>> {
        self.guard.take()
    }
}

impl std::fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLock")
            .field("locked_at", &self.locked_at)
            .finish_non_exhaustive()
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            *self
                .served
                .stats
                .lock_time
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }
}

/// The lock a vote starts with: just acquired, or kept from the previous
/// conflict round.
pub(crate) enum Lock {
    /// To be acquired by the worker itself: a release then wakes the next
    /// voter's thread directly, with no task in between (each hand-off is
    /// a wake-up inside the lock's hold time, which bounds the commit
    /// rate). A vote cancelled while waiting gives the lock back at once.
    Wait(VoteCancel),
    /// Kept since an earlier round.
    Held(HeldLock),
}

/// Cancels a vote that may still be waiting for the commit lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct VoteCancel(Arc<std::sync::atomic::AtomicBool>);

impl VoteCancel {
    /// The transaction is over (aborted, or its connection gone).
    pub(crate) fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything a vote needs, moved to the worker.
pub(crate) struct VoteJob {
    pub(crate) served: Arc<Served>,
    pub(crate) meta: TxnMeta,
    pub(crate) restore: Option<(Tid, TxnStatus)>,
    pub(crate) ops: Vec<Op>,
    pub(crate) blobs: Vec<BlobUpload>,
    pub(crate) conn: u64,
    pub(crate) label: String,
    /// `transaction-timeout`, counted from when the lock was taken.
    pub(crate) timeout: Option<Duration>,
    /// Keep the commit lock when returning conflicts (see [`HeldLock`]).
    pub(crate) hold_on_conflict: bool,
    /// Called (from the worker thread) when the timeout expired and the
    /// transaction was aborted: the connection must be closed.
    pub(crate) on_timeout: Box<dyn FnOnce() + Send>,
}

impl std::fmt::Debug for VoteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoteJob")
            .field("conn", &self.conn)
            .field("ops", &self.ops.len())
            .field("blobs", &self.blobs.len())
            .finish_non_exhaustive()
    }
}

/// A blob file moved into place during a vote, and where it came from (to
/// put it back if the vote turns into a conflict round).
struct Installed {
    target: PathBuf,
    from: Option<PathBuf>,
}

/// Files a vote created in the blob directory; removed on abort.
#[derive(Default)]
struct BlobLog {
    installed: Vec<Installed>,
}

impl BlobLog {
    /// Abort: committed-looking files go; uploads go back where they were
    /// (`keep_uploads`, a conflict round) or go too.
    fn roll_back(&mut self, keep_uploads: bool) {
        for i in self.installed.drain(..).rev() {
            match (&i.from, keep_uploads) {
                (Some(from), true) => {
                    if let Err(e) = std::fs::rename(&i.target, from) {
                        tracing::warn!(path = %i.target.display(), error = %e, "cannot put back a blob upload");
                    }
                }
                _ => {
                    let _ = std::fs::remove_file(&i.target);
                }
            }
        }
    }
}

fn err(e: &StorageError) -> ZeoException {
    ZeoException::from_storage_error(e)
}

/// The serial a storage error reveals to the client (to deliver the
/// invalidations up to it first).
fn revealed(e: &StorageError) -> Tid {
    match e {
        StorageError::Conflict { committed, .. } | StorageError::ReadConflict { committed, .. } => {
            *committed
        }
        StorageError::NoData { serial, .. } => *serial,
        _ => Tid::ZERO,
    }
}

/// A conflict error as the client sees it: with the class of the rejected
/// data, as ZODB's `ConflictError(oid=, serials=, data=)` reports it.
fn conflict_error(e: &StorageError, data: Option<&Bytes>) -> ZeoException {
    match (e, data) {
        (
            StorageError::Conflict {
                oid,
                committed,
                old,
            },
            Some(d),
        ) => {
            let (module, name) = zodb_core::pickle::class_name(d);
            ZeoException::conflict(*oid, *committed, *old, Some(format!("{module}.{name}")))
        }
        _ => err(e),
    }
}

/// Runs a vote on a blocking thread; see the [module docs](self). `guard`
/// is the commit lock, held until this returns (or, on success, until the
/// decision has been carried out).
pub(crate) fn vote_worker(
    job: VoteJob,
    lock: Lock,
    reply: VoteAnswer,
    decisions: Receiver<Decision>,
) {
    let VoteJob {
        served,
        meta,
        restore,
        ops,
        mut blobs,
        conn,
        label,
        timeout,
        hold_on_conflict,
        on_timeout,
    } = job;
    // `epoch`: which taking of the lock this is (see `LockActivity`).
    let (guard, locked_at, epoch) = match lock {
        Lock::Wait(cancel) => {
            served.activity.waiting.fetch_add(1, Ordering::SeqCst);
            let guard = served.commit_lock.clone().blocking_lock_owned();
            let epoch = served.activity.taken.fetch_add(1, Ordering::SeqCst) + 1;
            served.activity.waiting.fetch_sub(1, Ordering::SeqCst);
            if cancel.cancelled() {
                return;
            }
            *served
                .stats
                .lock_time
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now_f64());
            (guard, Instant::now(), epoch)
        }
        Lock::Held(h) => {
            let at = h.locked_at;
            match h.take() {
                // Nobody took the lock since this transaction did.
                Some(g) => (g, at, served.activity.taken.load(Ordering::SeqCst)),
                None => return,
            }
        }
    };
    let release = |served: &Served, guard: OwnedMutexGuard<()>| {
        *served
            .stats
            .lock_time
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        drop(guard);
    };
    let fail = |error: ZeoException, reveal: Tid, conflict: bool| VoteOutcome::Failed {
        error,
        reveal,
        conflict,
    };
    if served.failed.load(Ordering::SeqCst) {
        release(&served, guard);
        let _ = reply.send(fail(
            ZeoException::from_storage_error(&StorageError::TransactionState(
                "the storage failed to sync and accepts no more commits".into(),
            )),
            Tid::ZERO,
            false,
        ));
        return;
    }
    let storage = served.spec.storage.clone();
    let begun = match restore {
        Some((tid, status)) => storage.tpc_begin_restore(meta, tid, status),
        None => storage.tpc_begin(meta),
    };
    let mut txn: Box<dyn TpcTxn + '_> = match begun {
        Ok(t) => t,
        Err(e) => {
            release(&served, guard);
            let _ = reply.send(fail(err(&e), revealed(&e), false));
            return;
        }
    };
    let tid = txn.tid();
    tracing::debug!(storage = %served.name, conn, client = %label, ops = ops.len(), blobs = blobs.len(), %tid, "voting");
    let mut invalidated: Vec<Oid> = Vec::new();
    let mut serials: Vec<Oid> = Vec::new();
    // oid → (committed, read, data): conflicts so far; a later successful
    // store of the same oid clears its entry (the client's resolution).
    let mut conflicts: Vec<(Oid, Tid, Tid, Bytes)> = Vec::new();
    let mut log = BlobLog::default();
    let mut failure: Option<(ZeoException, Tid, bool)> = None;

    let store = |txn: &mut Box<dyn TpcTxn + '_>,
                 conflicts: &mut Vec<(Oid, Tid, Tid, Bytes)>,
                 invalidated: &mut Vec<Oid>,
                 oid: Oid,
                 serial: Tid,
                 data: &Bytes|
     -> Result<bool, (ZeoException, Tid, bool)> {
        match txn.store(oid, serial, data.clone()) {
            Ok(()) => {
                conflicts.retain(|c| c.0 != oid);
                invalidated.push(oid);
                Ok(true)
            }
            Err(StorageError::Conflict { committed, old, .. }) => {
                conflicts.retain(|c| c.0 != oid);
                conflicts.push((oid, committed, old, data.clone()));
                Ok(false)
            }
            Err(e) => Err((conflict_error(&e, Some(data)), revealed(&e), false)),
        }
    };

    for op in &ops {
        let r = match op {
            Op::Store { oid, serial, data } => store(
                &mut txn,
                &mut conflicts,
                &mut invalidated,
                *oid,
                *serial,
                data,
            )
            .map(|_| ()),
            Op::Delete { oid, serial } => txn.delete_object(*oid, *serial).map_err(|e| {
                let conflict = matches!(e, StorageError::Conflict { .. });
                (err(&e), revealed(&e), conflict)
            }),
            Op::CheckRead { oid, serial } => txn
                .check_current_serial(*oid, *serial)
                .map_err(|e| (err(&e), revealed(&e), true)),
            Op::Restore {
                oid,
                data,
                prev_txn,
            } => txn
                .restore(*oid, data.clone(), *prev_txn)
                .map_err(|e| (err(&e), revealed(&e), false)),
            Op::Undo { id } => undo(&served, &mut txn, id, &mut log).map(|oids| {
                invalidated.extend_from_slice(&oids);
                serials.extend_from_slice(&oids);
            }),
        };
        if let Err(f) = r {
            failure = Some(f);
            break;
        }
    }
    // Blobs after the other operations, last upload first, as ZEO does.
    if failure.is_none() {
        for b in blobs.iter().rev() {
            match store(
                &mut txn,
                &mut conflicts,
                &mut invalidated,
                b.oid,
                b.serial,
                &b.data,
            ) {
                Ok(true) => {
                    let Some(dir) = &served.blobs else {
                        failure = Some((
                            ZeoException::builtin(
                                "ValueError",
                                "this storage has no blob directory",
                            ),
                            Tid::ZERO,
                            false,
                        ));
                        break;
                    };
                    match dir.install(&b.path, b.oid, tid) {
                        Ok(target) => log.installed.push(Installed {
                            target,
                            from: Some(b.path.clone()),
                        }),
                        Err(e) => {
                            failure = Some((
                                ZeoException::builtin("OSError", &format!("storing blob: {e}")),
                                Tid::ZERO,
                                false,
                            ));
                            break;
                        }
                    }
                }
                Ok(false) => {}
                Err(f) => {
                    failure = Some(f);
                    break;
                }
            }
        }
    }
    if let Some((error, reveal, conflict)) = failure {
        txn.abort();
        log.roll_back(false);
        remove_uploads(&mut blobs);
        release(&served, guard);
        let _ = reply.send(fail(error, reveal, conflict));
        return;
    }
    if !conflicts.is_empty() {
        txn.abort();
        log.roll_back(true);
        let held = if hold_on_conflict {
            Some(HeldLock {
                guard: Some(guard),
                locked_at,
                served: served.clone(),
            })
        } else {
            release(&served, guard);
            None
        };
        let reveal = conflicts.iter().map(|c| c.1).max().unwrap_or(Tid::ZERO);
        let items = conflicts
            .into_iter()
            .map(|(oid, committed, read, data)| VoteItem::Conflict {
                oid,
                committed,
                read,
                data,
            })
            .collect();
        let _ = reply.send(VoteOutcome::Conflicts {
            items,
            ops,
            blobs,
            reveal,
            held,
        });
        return;
    }
    match txn.vote() {
        Ok(resolved) => {
            served
                .stats
                .conflicts_resolved
                .fetch_add(resolved.len() as u64, Ordering::Relaxed);
            serials.extend(resolved);
        }
        Err(e) => {
            txn.abort();
            log.roll_back(false);
            remove_uploads(&mut blobs);
            release(&served, guard);
            let _ = reply.send(fail(err(&e), revealed(&e), false));
            return;
        }
    }
    let items = serials.into_iter().map(VoteItem::Resolved).collect();
    if !reply.send(VoteOutcome::Voted { items }) {
        // The connection is gone: nobody will decide.
        txn.abort();
        log.roll_back(false);
        release(&served, guard);
        return;
    }
    let decision = match timeout {
        Some(t) => {
            let left = (locked_at + t).saturating_duration_since(Instant::now());
            decisions.recv_timeout(left)
        }
        None => decisions.recv().map_err(|_| RecvTimeoutError::Disconnected),
    };
    match decision {
        Ok(Decision::Finish(done)) => match txn.finish() {
            Ok(tid) => {
                // Still under the lock: commits reach publication in tid order.
                served.committed(Finished {
                    tid,
                    oids: invalidated,
                    origin: conn,
                    epoch,
                });
                release(&served, guard);
                done.send(Ok(tid));
            }
            Err(e) => {
                tracing::error!(storage = %served.name, conn, error = %e, "tpc_finish failed");
                log.roll_back(false);
                release(&served, guard);
                done.send(Err(err(&e)));
            }
        },
        Ok(Decision::Abort(ack)) => {
            txn.abort();
            log.roll_back(false);
            release(&served, guard);
            let _ = ack.send(());
        }
        Err(RecvTimeoutError::Timeout) => {
            // ZEO's StorageServer logs this at CRITICAL, as
            // "(<client label>) Transaction timeout after N seconds"; log
            // watchers and ZEO's own tests (checkTimeout) look for it.
            tracing::error!(
                critical = true,
                storage = %served.name,
                conn,
                "({label}) Transaction timeout after {} seconds",
                timeout.map_or(0.0, |t| t.as_secs_f64())
            );
            txn.abort();
            log.roll_back(false);
            release(&served, guard);
            on_timeout();
        }
        Err(RecvTimeoutError::Disconnected) => {
            tracing::info!(storage = %served.name, conn, "disconnected while holding the commit lock; aborted");
            txn.abort();
            log.roll_back(false);
            release(&served, guard);
        }
    }
}

/// `undoa` replayed: the storage's undo, plus ZODB `BlobStorage.undo`'s
/// step of giving each undone blob object a copy of the blob it goes back
/// to, under the new tid.
fn undo(
    served: &Served,
    txn: &mut Box<dyn TpcTxn + '_>,
    id: &Bytes,
    log: &mut BlobLog,
) -> Result<Vec<Oid>, (ZeoException, Tid, bool)> {
    let Some(undone) = zodb_core::memory::tid_from_undo_id(id) else {
        let e = StorageError::Undo {
            oid: None,
            reason: "Invalid transaction id".into(),
        };
        return Err((err(&e), Tid::ZERO, false));
    };
    let oids = txn
        .undo(undone)
        .map_err(|e| (undo_error(&e), revealed(&e), false))?;
    if let Some(dir) = &served.blobs {
        let new_tid = txn.tid();
        for &oid in &oids {
            if !dir.path(oid, undone).exists() {
                continue;
            }
            let from = match served.spec.storage.load_before(oid, undone) {
                Ok(Some(rev)) => rev.serial,
                _ => undone,
            };
            match dir.copy(oid, from, new_tid) {
                Ok(target) => log.installed.push(Installed { target, from: None }),
                Err(e) => {
                    return Err((
                        ZeoException::builtin("OSError", &format!("undoing blob: {e}")),
                        Tid::ZERO,
                        false,
                    ));
                }
            }
        }
    }
    Ok(oids)
}

/// An undo failure as ZODB's FileStorage raises it: a record that cannot
/// be undone is reported inside `MultipleUndoErrors` (a subclass of
/// `UndoError` that ZEO clients rebuild, where a bare `UndoError` would
/// reach them as a `ServerException`); whole-transaction refusals
/// ("Invalid transaction id", "non-undoable transaction") stay `UndoError`.
fn undo_error(e: &StorageError) -> ZeoException {
    match e {
        StorageError::Undo {
            oid: Some(oid),
            reason,
        } => ZeoException::MultipleUndo(vec![(
            *oid,
            crate::exception::UndoInfo {
                reason: reason.clone(),
                oid: Some(*oid),
            },
        )]),
        other => err(other),
    }
}

/// Deletes uploaded blob files that will not be stored.
pub(crate) fn remove_uploads(blobs: &mut Vec<BlobUpload>) {
    for b in blobs.drain(..) {
        let _ = std::fs::remove_file(&b.path);
    }
}

/// Where a connection's transaction is.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Buffering operations.
    Open,
    /// `vote` sent: waiting for the lock, or voting.
    Voting(VoteCancel),
    /// Voted: the worker holds the lock and waits for this.
    Voted(Sender<Decision>),
    /// `tpc_finish` or `tpc_abort` handed to the worker.
    Deciding,
}

/// A connection's transaction, from `tpc_begin` to its end.
#[derive(Debug)]
pub(crate) struct TxnBuf {
    pub(crate) id: TxnId,
    /// Distinguishes this transaction's late events from a later one's.
    pub(crate) generation: u64,
    pub(crate) meta: TxnMeta,
    pub(crate) restore: Option<(Tid, TxnStatus)>,
    pub(crate) ops: Vec<Op>,
    pub(crate) blobs: Vec<BlobUpload>,
    pub(crate) phase: Phase,
    /// The commit lock kept since a conflict round.
    pub(crate) held: Option<HeldLock>,
}

impl Drop for TxnBuf {
    fn drop(&mut self) {
        if let Phase::Voting(h) = &self.phase {
            h.abort();
        }
        // Uploads not handed to a worker are ours to delete.
        remove_uploads(&mut self.blobs);
    }
}
