//! Two-phase commit over ZEO.
//!
//! Everything before the vote is an async call the server only buffers
//! (`tpc_begin`, `storea`, `deleteObject`, `checkCurrentSerialInTransaction`,
//! `restorea`, `undoa`): nothing reaches the storage and no lock is taken
//! until `vote`, which the server answers once it holds the commit lock
//! and the storage has voted. So a lost connection before the vote's reply
//! always means "nothing committed": the server aborts the transactions of
//! a closed connection. The transaction stays bound to the connection it
//! began on; it is never continued on a new one (the new server-side
//! connection has no such transaction, and would close on the first call
//! naming it).
//!
//! The vote's result lists the oids whose data the server changed
//! (conflicts it resolved, objects an undo touched): the client does not
//! cache its own data for those. With the server's
//! `client-conflict-resolution` option the result also carries conflicts
//! for the client to resolve, which it does with the installed
//! [`ConflictResolver`](zodb_core::storage::ConflictResolver), storing the
//! merged state and voting again, at most 9 rounds as ClientStorage.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bytes::Bytes;
use zodb_core::storage::TpcTxn;
use zodb_core::{Oid, StorageError, Tid};

use crate::reply::VoteItem;
use crate::request::{Request, TxnId};

use super::blob::Blobs;
use super::conn::{CallError, Conn, OwnCommit};
use super::error::{Subject, storage_error};
use super::{Shared, ZeoError, call_on};

/// Vote rounds for client-side conflict resolution (ClientStorage's 9).
const MAX_VOTE_ROUNDS: usize = 9;

/// One transaction at a time per client: ClientStorage's `tpc_begin`
/// waits for the previous transaction too.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    busy: Mutex<bool>,
    freed: Condvar,
}

/// Holds the [`Slot`] until dropped.
#[derive(Debug)]
pub(crate) struct SlotGuard<'a>(&'a Slot);

impl Slot {
    pub(crate) fn acquire(&self) -> SlotGuard<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy {
            busy = self
                .freed
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *busy = true;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.0.freed.notify_one();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Voted,
    /// Finished, aborted, or failed and aborted.
    Done,
    /// A call failed: only abort is left.
    Failed,
}

/// A transaction in progress on a ZEO server, from
/// [`WriteStorage::tpc_begin`](zodb_core::WriteStorage::tpc_begin) of a
/// [`ZeoClient`](super::ZeoClient). Dropping it unfinished aborts it.
#[derive(Debug)]
pub struct ZeoTxn<'c> {
    shared: &'c Shared,
    conn: Arc<Conn>,
    id: TxnId,
    restore_tid: Option<Tid>,
    /// Oids written, in order, with the data to cache after the commit.
    updates: Vec<(Oid, Option<Bytes>)>,
    positions: HashMap<Oid, usize>,
    kept_bytes: usize,
    /// Blob files stored, owned by the transaction until it ends.
    blobs: Vec<super::blob::PendingBlob>,
    state: State,
    _slot: SlotGuard<'c>,
}

impl<'c> ZeoTxn<'c> {
    pub(crate) fn begin(
        shared: &'c Shared,
        id: i64,
        meta: zodb_core::TxnMeta,
        restore: Option<(Tid, zodb_core::TxnStatus)>,
    ) -> Result<ZeoTxn<'c>, StorageError> {
        if shared.opts.read_only {
            return Err(StorageError::ReadOnly);
        }
        let extension = super::convert::extension_to_dict(&meta.extension)?;
        let slot = shared.commit_slot.acquire();
        let conn = shared.ready_conn()?;
        let id = TxnId(id);
        let req = Request::TpcBegin {
            txn: id,
            user: meta.user,
            description: meta.description,
            extension,
            tid: restore.map(|(t, _)| t),
            status: restore.map_or(zodb_core::TxnStatus::Committed, |(_, s)| s),
        };
        conn.send_async_blocking(&req)
            .map_err(|e| lost(&e, "tpc_begin"))?;
        Ok(ZeoTxn {
            shared,
            conn,
            id,
            restore_tid: restore.map(|(t, _)| t),
            updates: Vec::new(),
            positions: HashMap::new(),
            kept_bytes: 0,
            blobs: Vec::new(),
            state: State::Open,
            _slot: slot,
        })
    }

    fn check_open(&self, what: &str) -> Result<(), StorageError> {
        match self.state {
            State::Open => Ok(()),
            State::Voted => Err(StorageError::TransactionState(format!("{what} after vote"))),
            State::Done | State::Failed => Err(StorageError::TransactionState(format!(
                "{what} in a transaction that failed or ended"
            ))),
        }
    }

    /// Sends one of the buffered calls.
    fn send(&mut self, req: &Request) -> Result<(), StorageError> {
        self.conn.send_async_blocking(req).map_err(|e| {
            self.state = State::Failed;
            lost(&e, req.method().name())
        })
    }

    /// Records that `oid` is written, with the data to cache if it fits.
    fn note(&mut self, oid: Oid, data: Option<Bytes>) {
        let budget = self.shared.opts.cache_size / 2;
        let data = data.filter(|d| {
            if self.kept_bytes + d.len() <= budget {
                self.kept_bytes += d.len();
                true
            } else {
                false
            }
        });
        match self.positions.get(&oid) {
            Some(&i) => {
                if let Some(slot) = self.updates.get_mut(i) {
                    slot.1 = data;
                }
            }
            None => {
                self.positions.insert(oid, self.updates.len());
                self.updates.push((oid, data));
            }
        }
    }

    /// The vote's result, with client-side conflicts resolved.
    fn vote_rounds(&mut self) -> Result<Vec<Oid>, StorageError> {
        let mut changed = Vec::new();
        for _ in 0..MAX_VOTE_ROUNDS {
            let v = match call_on(&self.conn, &Request::Vote { txn: self.id }) {
                Ok(v) => v,
                Err(ZeoError::Server(exc)) => {
                    if let crate::exception::ZeoException::Conflict(c) = &*exc {
                        // ClientStorage's band-aid: a conflict may mean the
                        // cached revision is stale; drop it.
                        if let Some(oid) = c.oid {
                            self.shared.view().cache.forget_current(oid);
                        }
                    }
                    return Err(storage_error(*exc, None));
                }
                Err(ZeoError::Disconnected { reason, .. }) => {
                    return Err(ZeoError::TransactionLost { reason }.into());
                }
                Err(e) => return Err(e.into()),
            };
            let items = VoteItem::list_from_value(&v).ok_or(ZeoError::Shape {
                method: "vote",
                source: crate::reply::ShapeError,
            })?;
            let mut conflicts = false;
            for item in items {
                match item {
                    VoteItem::Resolved(oid) => {
                        self.note(oid, None);
                        changed.push(oid);
                    }
                    VoteItem::Conflict {
                        oid,
                        committed,
                        read,
                        data,
                    } => {
                        let merged = self.resolve(oid, committed, read, &data)?.ok_or(
                            StorageError::Conflict {
                                oid,
                                committed,
                                old: read,
                            },
                        )?;
                        self.send(&Request::Storea {
                            oid,
                            serial: committed,
                            data: merged.clone(),
                            txn: self.id,
                        })?;
                        self.note(oid, Some(merged));
                        changed.push(oid);
                        conflicts = true;
                    }
                }
            }
            if !conflicts {
                let mut seen = std::collections::HashSet::new();
                changed.retain(|o| seen.insert(*o));
                return Ok(changed);
            }
        }
        Err(StorageError::TransactionState(format!(
            "conflicts still unresolved after {MAX_VOTE_ROUNDS} votes"
        )))
    }

    /// Client-side conflict resolution of `oid`.
    fn resolve(
        &self,
        oid: Oid,
        committed: Tid,
        read: Tid,
        new: &[u8],
    ) -> Result<Option<Bytes>, StorageError> {
        let Some(resolver) = self.shared.resolver.get() else {
            return Ok(None);
        };
        let load = |serial: Tid| -> Result<Bytes, StorageError> {
            let req = Request::LoadSerial { oid, serial };
            match call_on(&self.conn, &req) {
                Ok(v) => v.as_bytes().cloned().ok_or_else(|| {
                    ZeoError::Shape {
                        method: "loadSerial",
                        source: crate::reply::ShapeError,
                    }
                    .into()
                }),
                Err(ZeoError::Server(exc)) => {
                    Err(storage_error(*exc, Some(Subject::Revision(oid, serial))))
                }
                Err(e) => Err(e.into()),
            }
        };
        let old = if read == Tid::ZERO {
            Bytes::new()
        } else {
            load(read)?
        };
        let current = load(committed)?;
        Ok(resolver.resolve(oid, &old, &current, new))
    }

    /// Sends `tpc_abort` without waiting: the server handles it before
    /// anything sent later on the connection, and a hung server must not
    /// hang whoever drops a transaction.
    fn abort_now(&mut self) {
        super::blob::discard(std::mem::take(&mut self.blobs));
        if matches!(self.state, State::Done) {
            return;
        }
        self.state = State::Done;
        if let Ok(pending) = self.conn.call_blocking(&Request::TpcAbort { txn: self.id }) {
            drop(pending);
        }
    }
}

/// A buffered call failed because the connection is gone: the server
/// aborts the transaction.
fn lost(e: &CallError, method: &'static str) -> StorageError {
    match e {
        CallError::Lost(reason) => ZeoError::TransactionLost {
            reason: reason.to_string(),
        }
        .into(),
        CallError::Raised(exc) => storage_error(exc.clone(), None),
        CallError::Shape(source) => ZeoError::Shape {
            method,
            source: *source,
        }
        .into(),
    }
}

impl TpcTxn for ZeoTxn<'_> {
    /// The tid given to `tpc_begin_restore`. A ZEO server chooses the tid
    /// of any other transaction under its commit lock, at vote, and tells
    /// it only in `tpc_finish`'s reply: until then this is [`Tid::ZERO`];
    /// [`TpcTxn::finish`] returns the real one.
    fn tid(&self) -> Tid {
        self.restore_tid.unwrap_or(Tid::ZERO)
    }

    fn store(&mut self, oid: Oid, old_serial: Tid, data: Bytes) -> Result<(), StorageError> {
        self.check_open("store")?;
        self.send(&Request::Storea {
            oid,
            serial: old_serial,
            data: data.clone(),
            txn: self.id,
        })?;
        self.note(oid, Some(data));
        Ok(())
    }

    fn delete_object(&mut self, oid: Oid, old_serial: Tid) -> Result<(), StorageError> {
        self.check_open("deleteObject")?;
        self.send(&Request::DeleteObject {
            oid,
            serial: old_serial,
            txn: self.id,
        })?;
        self.note(oid, None);
        Ok(())
    }

    fn check_current_serial(&mut self, oid: Oid, serial: Tid) -> Result<(), StorageError> {
        self.check_open("checkCurrentSerialInTransaction")?;
        self.send(&Request::CheckCurrentSerialInTransaction {
            oid,
            serial,
            txn: self.id,
        })
    }

    fn restore(
        &mut self,
        oid: Oid,
        data: Option<Bytes>,
        prev_txn: Option<Tid>,
    ) -> Result<(), StorageError> {
        self.check_open("restore")?;
        let Some(serial) = self.restore_tid else {
            return Err(StorageError::TransactionState(
                "restore over ZEO needs a transaction begun with tpc_begin_restore \
                 (restorea sends the record's tid, which the server chooses otherwise)"
                    .to_owned(),
            ));
        };
        self.send(&Request::Restorea {
            oid,
            serial,
            data,
            prev_txn,
            txn: self.id,
        })?;
        self.note(oid, None);
        Ok(())
    }

    /// ClientStorage's `storeBlob`. With a cache: takes the file into the
    /// cache's `tmp`, sends `storea`, then the file with `storeBlobStart`,
    /// `storeBlobChunk`… and `storeBlobEnd`. With the server's directory:
    /// moves the file into the oid's directory there, sends `storea` and
    /// `storeBlobShared` naming it (module `blob`).
    fn store_blob(
        &mut self,
        oid: Oid,
        old_serial: Tid,
        data: Bytes,
        blob: &std::path::Path,
    ) -> Result<(), StorageError> {
        self.check_open("storeBlob")?;
        let shared = self.shared;
        match shared.blobs()? {
            Blobs::Shared(dir) => {
                let (path, filename) = dir.take_shared_upload(oid, old_serial, blob)?;
                self.blobs.push(super::blob::PendingBlob { oid, path });
                self.store(oid, old_serial, data.clone())?;
                self.send(&Request::StoreBlobShared {
                    oid,
                    serial: old_serial,
                    data,
                    filename,
                    txn: self.id,
                })
            }
            Blobs::Cache { cache, .. } => {
                let path = super::blob::take_file(cache, blob)?;
                self.blobs.push(super::blob::PendingBlob {
                    oid,
                    path: path.clone(),
                });
                self.store(oid, old_serial, data.clone())?;
                let txn = self.id;
                let sent =
                    super::blob::upload(&path, oid, old_serial, &data, txn, |req| self.send(req));
                if sent.is_err() {
                    // Part of an upload reached the server: the connection's
                    // state is unknown, only abort is left.
                    self.state = State::Failed;
                }
                sent
            }
        }
    }

    /// Sends `undoa`. The oids it changes are known only at vote (ZEO 5
    /// reports them in the vote's result, which [`TpcTxn::vote`] returns),
    /// so this returns none.
    fn undo(&mut self, tid: Tid) -> Result<Vec<Oid>, StorageError> {
        self.check_open("undo")?;
        self.send(&Request::Undoa {
            undo_id: super::convert::undo_id(tid),
            txn: self.id,
        })?;
        Ok(Vec::new())
    }

    fn vote(&mut self) -> Result<Vec<Oid>, StorageError> {
        self.check_open("vote")?;
        match self.vote_rounds() {
            Ok(changed) => {
                self.state = State::Voted;
                Ok(changed)
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Result<Tid, StorageError> {
        if self.state == State::Open {
            self.vote()?;
        }
        if self.state != State::Voted {
            return Err(StorageError::TransactionState(
                "finish of a transaction whose vote failed".to_owned(),
            ));
        }
        let commit = OwnCommit {
            updates: std::mem::take(&mut self.updates),
        };
        let req = Request::TpcFinish { txn: self.id };
        let reply = self
            .conn
            .finish_blocking(&req, commit)
            .and_then(super::conn::Pending::wait)
            .and_then(|r| r);
        self.state = State::Done;
        let blobs = std::mem::take(&mut self.blobs);
        match reply {
            Ok(v) => match v.as_tid() {
                Some(tid) => {
                    // In a shared directory the server moved the files into
                    // place at the vote.
                    if let Some(Blobs::Cache { cache, checker }) = &self.shared.blobs {
                        super::blob::install_committed(cache, checker.as_ref(), blobs, tid);
                    }
                    Ok(tid)
                }
                None => {
                    super::blob::discard(blobs);
                    Err(ZeoError::Shape {
                        method: "tpc_finish",
                        source: crate::reply::ShapeError,
                    }
                    .into())
                }
            },
            Err(CallError::Lost(reason)) => {
                // Committed or not, a later load downloads the blob again.
                super::blob::discard(blobs);
                Err(ZeoError::FinishOutcomeUnknown {
                    reason: reason.to_string(),
                }
                .into())
            }
            Err(CallError::Raised(exc)) => {
                super::blob::discard(blobs);
                // ClientStorage drops the connection here: what the server
                // did is unclear, and a fresh connection verifies the cache.
                self.conn.close();
                Err(storage_error(exc, None))
            }
            Err(CallError::Shape(source)) => {
                super::blob::discard(blobs);
                self.conn.close();
                Err(ZeoError::Shape {
                    method: "tpc_finish",
                    source,
                }
                .into())
            }
        }
    }

    fn abort(mut self: Box<Self>) {
        self.abort_now();
    }
}

impl Drop for ZeoTxn<'_> {
    fn drop(&mut self) {
        self.abort_now();
    }
}
