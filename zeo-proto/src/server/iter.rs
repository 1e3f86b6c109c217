//! `iterator_start`/`iterator_next` and the record iterators
//! (IStorageIteration over ZEO).
//!
//! A storage's transaction iterator borrows the storage and may read a
//! large file, so each open iterator lives on a thread of its own that owns
//! a handle to the storage and produces one transaction per request. The
//! connection keeps the last transaction each iterator returned, from which
//! `iterator_record_start` iterates records without touching the storage.
//! Closing the request channel (iterator exhausted, `iterator_gc`, the
//! connection gone) ends the thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use tokio::sync::oneshot;
use zodb_core::storage::Transaction;
use zodb_core::{StorageError, Tid, WriteStorage};

/// Iterators a connection may have open at once: each is a thread.
pub const MAX_OPEN: usize = 256;

/// One `next` request.
type NextReply = oneshot::Sender<Result<Option<Transaction>, StorageError>>;

/// An open transaction iterator.
#[derive(Debug)]
pub(crate) struct TxnIterator {
    requests: SyncSender<NextReply>,
    /// The transaction `next` returned last, for `iterator_record_start`.
    pub(crate) last: Option<Arc<Transaction>>,
}

/// An open record iterator over one transaction.
#[derive(Debug)]
pub(crate) struct RecordIterator {
    pub(crate) txn: Arc<Transaction>,
    pub(crate) pos: usize,
}

/// A connection's iterators, numbered from 0 by one counter shared by both
/// kinds (as ZEO numbers them).
#[derive(Debug, Default)]
pub(crate) struct Iterators {
    next_id: i64,
    pub(crate) txns: HashMap<i64, TxnIterator>,
    pub(crate) records: HashMap<i64, RecordIterator>,
}

impl Iterators {
    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Opens a transaction iterator over `start..=stop`.
    pub(crate) fn start(
        &mut self,
        storage: Arc<dyn WriteStorage>,
        start: Option<Tid>,
        stop: Option<Tid>,
    ) -> std::io::Result<i64> {
        if self.txns.len() + self.records.len() >= MAX_OPEN {
            return Err(std::io::Error::other(format!(
                "too many open iterators (at most {MAX_OPEN})"
            )));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<NextReply>(1);
        std::thread::Builder::new()
            .name("zeo-iterator".into())
            .spawn(move || produce(&*storage, start, stop, &rx))?;
        let id = self.take_id();
        self.txns.insert(
            id,
            TxnIterator {
                requests: tx,
                last: None,
            },
        );
        Ok(id)
    }

    /// Asks iterator `iid` for its next transaction; `None` if there is no
    /// such iterator.
    pub(crate) fn next(
        &self,
        iid: i64,
    ) -> Option<oneshot::Receiver<Result<Option<Transaction>, StorageError>>> {
        let it = self.txns.get(&iid)?;
        let (tx, rx) = oneshot::channel();
        it.requests.send(tx).ok()?;
        Some(rx)
    }

    /// Opens a record iterator over what `txn_iid` returned last.
    pub(crate) fn start_records(&mut self, txn: Arc<Transaction>) -> i64 {
        let id = self.take_id();
        self.records.insert(id, RecordIterator { txn, pos: 0 });
        id
    }

    /// Frees iterators (`iterator_gc`); unknown ids are ignored.
    pub(crate) fn gc(&mut self, iids: &[i64]) {
        for iid in iids {
            self.txns.remove(iid);
            self.records.remove(iid);
        }
    }
}

fn produce(
    storage: &dyn WriteStorage,
    start: Option<Tid>,
    stop: Option<Tid>,
    requests: &Receiver<NextReply>,
) {
    let mut it = match storage.iter_transactions(start, stop) {
        Ok(it) => it,
        Err(e) => {
            if let Ok(reply) = requests.recv() {
                let _ = reply.send(Err(e));
            }
            return;
        }
    };
    while let Ok(reply) = requests.recv() {
        let item = it.next().transpose();
        let end = !matches!(item, Ok(Some(_)));
        let _ = reply.send(item);
        if end {
            return;
        }
    }
}
