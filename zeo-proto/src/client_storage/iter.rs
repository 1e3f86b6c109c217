//! Iterating a ZEO server's history (IStorageIteration over ZEO).
//!
//! The protocol hands out one transaction per `iterator_next(iid)` and one
//! record per `iterator_record_next(riid)`, where `riid` comes from
//! `iterator_record_start(iid, tid)` on the transaction `iid` returned
//! last. ClientStorage makes those calls one after the other: a round trip
//! per record. Yet a record iterator stays valid after its transaction
//! iterator moves on (the server keeps the transaction it was started on),
//! so here the records of up to `iteration_window` transactions are read
//! at once: each round trip asks for the next record of every open
//! transaction and, alongside, starts the record iterator of the newest
//! transaction and asks for the next one. No request is speculative (none
//! reaches past an iterator's end), so the server never sees a call it
//! would reject; transactions are still delivered whole and in order.
//!
//! The reading runs as a task on the client's runtime, ahead of the
//! consumer by a bounded queue. If the connection is lost, the task waits
//! for the client to reconnect and resumes after the last transaction it
//! delivered.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use zodb_core::storage::{DataRecord, Transaction};
use zodb_core::{Oid, StorageError, Tid};

use crate::reply::{IteratedRecord, IteratedTxn};
use crate::request::Request;

use super::conn::{Conn, Pending, Reply};
use super::{Shared, ZeoError, call_error};

/// Transactions read ahead of the consumer.
const QUEUE: usize = 16;

/// How many times one iteration resumes after lost connections before
/// giving up.
const MAX_RESUMES: usize = 16;

/// The iterator [`ReadStorage::iter_transactions`](zodb_core::ReadStorage::iter_transactions)
/// returns for a ZEO client.
#[derive(Debug)]
pub(crate) struct TxnStream {
    rx: mpsc::Receiver<Result<Transaction, StorageError>>,
}

impl Iterator for TxnStream {
    type Item = Result<Transaction, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.blocking_recv()
    }
}

/// Starts reading transactions `start..=stop` on `runtime`.
pub(crate) fn stream(
    runtime: &tokio::runtime::Handle,
    shared: Arc<Shared>,
    start: Option<Tid>,
    stop: Option<Tid>,
) -> TxnStream {
    let (tx, rx) = mpsc::channel(QUEUE);
    runtime.spawn(produce(shared, start, stop, tx));
    TxnStream { rx }
}

/// How one pass over the history ended.
enum Outcome {
    /// Every transaction delivered.
    Done,
    /// The consumer went away.
    Abandoned,
    /// The connection was lost; `last` is the last transaction delivered.
    Lost { last: Option<Tid>, reason: String },
    /// The server refused, or a reply made no sense.
    Failed(ZeoError),
}

async fn produce(
    shared: Arc<Shared>,
    start: Option<Tid>,
    stop: Option<Tid>,
    tx: mpsc::Sender<Result<Transaction, StorageError>>,
) {
    let window = shared.opts.iteration_window.max(1);
    let mut from = start;
    let mut resumes = 0;
    loop {
        let conn = match shared.ready_conn_async().await {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let last_known = shared.view().last_tid.unwrap_or(Tid::MAX);
        match run(&conn, from, stop, window, last_known, &tx).await {
            Outcome::Done | Outcome::Abandoned => return,
            Outcome::Failed(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            Outcome::Lost { last, reason } => {
                resumes += 1;
                if resumes > MAX_RESUMES {
                    let e = ZeoError::Disconnected {
                        method: "iterator_next",
                        reason,
                    };
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                tracing::info!(%reason, "iteration resumes after a lost connection");
                if let Some(last) = last {
                    if last == Tid::MAX || stop.is_some_and(|s| last >= s) {
                        return;
                    }
                    from = Some(last.next());
                }
            }
        }
    }
}

/// A transaction whose records are being read.
struct Open {
    txn: Transaction,
    riid: Option<i64>,
    done: bool,
}

/// One request of a round, and what its reply is for.
enum Expect {
    /// `iterator_record_start` for the open transaction with this sequence
    /// number.
    RecordStart(u64),
    /// `iterator_record_next` for it.
    Record(u64),
    /// `iterator_next`.
    Next,
}

/// One pass: `iterator_start(from, stop)` and read until the end, the
/// consumer leaves or the connection fails.
///
/// An exhausted transaction iterator may free what its record iterators
/// read from (Python's FileStorage iterator closes its file: the server
/// then answers "seek of closed file"). So the `iterator_next` that may be
/// the last one — after a transaction at or beyond `last_known` (the last
/// tid the client knew when it started) or `stop` — is only sent once
/// every open transaction's records are read.
async fn run(
    conn: &Arc<Conn>,
    from: Option<Tid>,
    stop: Option<Tid>,
    window: usize,
    last_known: Tid,
    tx: &mpsc::Sender<Result<Transaction, StorageError>>,
) -> Outcome {
    let end = stop.map_or(last_known, |s| s.min(last_known));
    // Whether `iterator_next` may go out now: the window has room and it
    // cannot be the exhausting one while records are still being read.
    let may_advance = |open: &VecDeque<Open>| {
        open.len() < window
            && (open.back().is_none_or(|o| o.txn.info.tid < end) || open.iter().all(|o| o.done))
    };
    let mut last: Option<Tid> = None;
    let lost = |last: Option<Tid>, e: ZeoError| match e {
        ZeoError::Disconnected { reason, .. } => Outcome::Lost { last, reason },
        e => Outcome::Failed(e),
    };
    let iid = match super::call_async(conn, &Request::IteratorStart { start: from, stop }).await {
        Ok(v) => match v.as_i64() {
            Some(i) => i,
            None => return Outcome::Failed(shape("iterator_start")),
        },
        Err(e) => return lost(last, e),
    };
    // Open transactions, oldest first; `base` is the sequence number of
    // the front one.
    let mut open: VecDeque<Open> = VecDeque::new();
    let mut base: u64 = 0;
    let mut chain_done = false;
    let mut inflight: Vec<(Expect, Pending<Reply>)> = Vec::new();
    match send(conn, &Request::IteratorNext { iid }).await {
        Ok(p) => inflight.push((Expect::Next, p)),
        Err(e) => return lost(last, e),
    }
    loop {
        // This round: the next record of every transaction whose record
        // iterator is known.
        for (i, o) in open.iter().enumerate() {
            if let (Some(riid), false) = (o.riid, o.done) {
                match send(conn, &Request::IteratorRecordNext { iid: riid }).await {
                    Ok(p) => inflight.push((Expect::Record(base + i as u64), p)),
                    Err(e) => return lost(last, e),
                }
            }
        }
        let round = std::mem::take(&mut inflight);
        if round.is_empty() {
            // Nothing in flight and nothing to ask: everything delivered.
            return Outcome::Done;
        }
        for (expect, pending) in round {
            let reply = match pending.get().await.and_then(|r| r) {
                Ok(v) => v,
                Err(e) => {
                    gc(conn, iid, chain_done, &open).await;
                    return lost(last, call_error(&Request::IteratorNext { iid }, e));
                }
            };
            match expect {
                Expect::Next => match IteratedTxn::from_value(&reply) {
                    Ok(None) => chain_done = true,
                    Ok(Some(t)) => {
                        let tid = t.tid;
                        let info = match super::convert::txn_info(t) {
                            Ok(i) => i,
                            Err(e) => return Outcome::Failed(e),
                        };
                        let seq = base + open.len() as u64;
                        open.push_back(Open {
                            txn: Transaction {
                                info,
                                records: Vec::new(),
                            },
                            riid: None,
                            done: false,
                        });
                        // The record iterator must start before the
                        // transaction iterator moves on.
                        match send(conn, &Request::IteratorRecordStart { txn_iid: iid, tid }).await
                        {
                            Ok(p) => inflight.push((Expect::RecordStart(seq), p)),
                            Err(e) => return lost(last, e),
                        }
                        if may_advance(&open) {
                            match send(conn, &Request::IteratorNext { iid }).await {
                                Ok(p) => inflight.push((Expect::Next, p)),
                                Err(e) => return lost(last, e),
                            }
                        }
                    }
                    Err(_) => return Outcome::Failed(shape("iterator_next")),
                },
                Expect::RecordStart(seq) => {
                    let Some(riid) = reply.as_i64() else {
                        return Outcome::Failed(shape("iterator_record_start"));
                    };
                    if let Some(o) = seq.checked_sub(base).and_then(|i| open.get_mut(i as usize)) {
                        o.riid = Some(riid);
                    }
                }
                Expect::Record(seq) => {
                    let rec = match IteratedRecord::from_value(&reply) {
                        Ok(r) => r,
                        Err(_) => return Outcome::Failed(shape("iterator_record_next")),
                    };
                    if let Some(o) = seq.checked_sub(base).and_then(|i| open.get_mut(i as usize)) {
                        match rec {
                            None => o.done = true,
                            Some(r) => o.txn.records.push(DataRecord {
                                oid: r.oid,
                                tid: r.tid,
                                data: r.data,
                                data_txn: r.data_txn,
                            }),
                        }
                    }
                }
            }
        }
        // Deliver the finished transactions at the front, in order.
        while open.front().is_some_and(|o| o.done) {
            let Some(o) = open.pop_front() else { break };
            base += 1;
            let tid = o.txn.info.tid;
            if tx.send(Ok(o.txn)).await.is_err() {
                gc(conn, iid, chain_done, &open).await;
                return Outcome::Abandoned;
            }
            last = Some(tid);
        }
        // Every open transaction's record iterator was started as soon as
        // it arrived, so the transaction iterator may move on whenever the
        // window has room.
        let next_asked = inflight.iter().any(|(e, _)| matches!(e, Expect::Next));
        if !chain_done && !next_asked && may_advance(&open) {
            match send(conn, &Request::IteratorNext { iid }).await {
                Ok(p) => inflight.push((Expect::Next, p)),
                Err(e) => return lost(last, e),
            }
        }
        if chain_done && open.is_empty() && inflight.is_empty() {
            return Outcome::Done;
        }
    }
}

async fn send(conn: &Arc<Conn>, req: &Request) -> Result<Pending<Reply>, ZeoError> {
    conn.call(req).await.map_err(|e| call_error(req, e))
}

fn shape(method: &'static str) -> ZeoError {
    ZeoError::Shape {
        method,
        source: crate::reply::ShapeError,
    }
}

/// Frees the server's iterators of an abandoned pass.
async fn gc(conn: &Arc<Conn>, iid: i64, chain_done: bool, open: &VecDeque<Open>) {
    let mut iids: Vec<i64> = open
        .iter()
        .filter(|o| !o.done)
        .filter_map(|o| o.riid)
        .collect();
    if !chain_done {
        iids.push(iid);
    }
    if !iids.is_empty() {
        let _ = conn.send_async(&Request::IteratorGc { iids }).await;
    }
}

/// The oids each transaction after `after` up to `upto` changed, read from
/// the history: what cache verification tells the commit watchers when
/// the server's invalidation queue does not reach back far enough.
pub(crate) async fn changes_between(
    conn: &Arc<Conn>,
    after: Tid,
    upto: Tid,
) -> Result<Vec<(Tid, Vec<Oid>)>, ZeoError> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let reading = async move {
        let o = run(conn, Some(after.next()), Some(upto), 8, upto, &tx).await;
        drop(tx);
        o
    };
    let collecting = async {
        let mut out = Vec::new();
        while let Some(t) = rx.recv().await {
            match t {
                Ok(t) => out.push((t.info.tid, t.records.iter().map(|r| r.oid).collect())),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    };
    let (outcome, collected) = tokio::join!(reading, collecting);
    match outcome {
        Outcome::Done | Outcome::Abandoned => {
            collected.map_err(|e| ZeoError::Unsupported(e.to_string()))
        }
        Outcome::Lost { reason, .. } => Err(ZeoError::Disconnected {
            method: "iterator_next",
            reason,
        }),
        Outcome::Failed(e) => Err(e),
    }
}
