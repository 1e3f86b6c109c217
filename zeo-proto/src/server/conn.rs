//! One client connection: handshake, `register`, then requests until the
//! client leaves, misbehaves or the server shuts down.
//!
//! The task owns the socket and is its only writer, so everything sent to
//! the client is ordered by this task: replies in the order they are
//! computed, invalidations in commit order, and — the rule ZEO clients
//! depend on — every invalidation of a commit before any reply that shows
//! that commit (see [`Conn::catch_up`]). Replies are written without a
//! flush while more requests are already buffered, and flushed once the
//! input runs dry, so a client that pipelines is answered in batches.
//!
//! Requests are dispatched by one exhaustive `match` over
//! [`Request`]. What Python's server does in the same case is the
//! specification (ZEO: `asyncio/server.py` `message_received`,
//! `StorageServer.py` `ZEOStorage`): a sync call that fails gets an
//! exception reply; an async call that fails, a message that does not
//! decode, an unknown method, a call before `register` or a second
//! `register` close the connection. Other connections are never affected.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use zodb_core::storage::{Revision, Transaction};
use zodb_core::{Oid, StorageError, Tid, TimeStamp, TxnMeta, TxnStatus};

use super::Shared;
use super::iter::Iterators;
use super::storage::{Notice, Served, now_f64};
use super::txn::{
    BlobUpload, Decision, FinishAnswer, Lock, Op, Phase, TxnBuf, VoteAnswer, VoteCancel, VoteJob,
    VoteOutcome, vote_worker,
};
use crate::encoding::{Encoding, GlobalPolicy, Payload, load_before};
use crate::exception::ZeoException;
use crate::frame::{FrameCodec, HEADER_LEN};
use crate::handshake::{self, ClientHello};
use crate::message::Message;
use crate::reply::{
    ClientCall, HistoryEntry, IteratedRecord, IteratedTxn, LoadedRevision, ServerMessage,
    StorageInfo, UndoLogEntry, VoteItem, invalidations_to_value, oid_list,
};
use crate::request::{Call, Incoming, Method, Request, RequestError, TxnId};
use crate::value::Value;

/// Deferred replies and events queued for one connection. Bounded: a
/// blob streamed to a client that does not read waits here, not in memory.
const DEFERRED_QUEUE: usize = 64;

/// How long a reply waits for the invalidations it must follow (a group
/// fsync in progress) before it is sent anyway with a warning.
const CATCH_UP: Duration = Duration::from_secs(30);

/// How long shutdown waits for a `tpc_finish` under way.
const FINISH_ON_SHUTDOWN: Duration = Duration::from_secs(30);

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed.
    Eof,
    /// The socket failed.
    Io(String),
    /// The client broke the protocol; Python's server closes too.
    Protocol(String),
    /// Server shutdown.
    Stopped,
    /// Held the commit lock past `transaction-timeout`.
    TimedOut,
    /// Its notice queue overflowed (it stopped reading).
    FellBehind,
    /// The storage failed.
    Fatal(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Eof => f.write_str("client closed"),
            End::Io(e) => write!(f, "socket error: {e}"),
            End::Protocol(why) => f.write_str(why),
            End::Stopped => f.write_str("server shutdown"),
            End::TimedOut => f.write_str("transaction timeout"),
            End::FellBehind => f.write_str("client stopped reading its invalidations"),
            End::Fatal(why) => write!(f, "storage failure: {why}"),
        }
    }
}

/// Results of work done off the connection task, delivered back to it.
#[derive(Debug)]
pub(crate) enum Deferred {
    /// A reply computed elsewhere (pack, undo logs, invalidations by age).
    Reply {
        to: Option<Value>,
        result: Result<Value, ZeoException>,
        reveal: Tid,
    },
    /// An encoded frame to send as is (blob chunks).
    Frame(Bytes),
    /// A vote finished (or the worker died: `None`).
    Voted {
        to: Option<Value>,
        generation: u64,
        outcome: Option<VoteOutcome>,
        decide: std::sync::mpsc::Sender<Decision>,
    },
    /// `tpc_finish` done.
    Finished {
        to: Option<Value>,
        generation: u64,
        result: Result<Tid, ZeoException>,
    },
    /// `tpc_abort` done (the worker released the lock).
    Aborted { to: Option<Value> },
    /// `pack(wait=True)` done: `info` with the new size, then the reply.
    Packed {
        to: Option<Value>,
        result: Result<Value, ZeoException>,
    },
    /// `iterator_next` answered.
    IterNext {
        to: Option<Value>,
        iid: i64,
        result: Result<Option<Transaction>, ZeoException>,
    },
    /// The transaction held the lock too long and was aborted.
    TimedOut { generation: u64 },
    /// The transaction timeout passed while the lock was kept between
    /// conflict rounds.
    HeldTooLong { generation: u64 },
}

/// What dispatching a request produced.
enum Out {
    /// Reply with this value, after the invalidations up to `Tid`.
    Reply(Value, Tid),
    /// Reply with this exception, after the invalidations up to `Tid`.
    Error(ZeoException, Tid),
    /// The reply will come as a [`Deferred`].
    Pending,
    /// Close the connection.
    Close(End),
}

fn reply(v: Value) -> Out {
    Out::Reply(v, Tid::ZERO)
}

/// The answer to a `loadBefore`.
fn loaded(r: Result<Option<Revision>, StorageError>) -> Out {
    match r {
        Ok(Some(rev)) => {
            let reveal = rev.serial;
            let v = LoadedRevision {
                data: rev.data,
                start: rev.serial,
                end: rev.next_serial,
            };
            Out::Reply(LoadedRevision::to_value(Some(&v)), reveal)
        }
        Ok(None) => reply(Value::None),
        Err(e) => storage_error(&e),
    }
}

fn storage_error(e: &StorageError) -> Out {
    let reveal = match e {
        StorageError::NoData { serial, .. } => *serial,
        _ => Tid::ZERO,
    };
    Out::Error(ZeoException::from_storage_error(e), reveal)
}

/// The connection's registration with a storage.
struct Registered {
    served: Arc<Served>,
    notices: mpsc::Receiver<Notice>,
    /// The newest commit whose invalidation this client has been sent (or
    /// that was already committed when it registered).
    delivered: Tid,
}

struct Conn<S> {
    id: u64,
    shared: Arc<Shared>,
    framed: Framed<S, FrameCodec>,
    enc: Encoding,
    peer: String,
    label: String,
    reg: Option<Registered>,
    read_only: bool,
    deferred_tx: mpsc::Sender<Deferred>,
    deferred_rx: mpsc::Receiver<Deferred>,
    txn: Option<TxnBuf>,
    generation: u64,
    /// `storeBlobStart` … `storeBlobEnd` in progress.
    upload: Option<(std::path::PathBuf, std::fs::File)>,
    iters: Iterators,
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    io: S,
    peer: String,
    stop: super::shutdown::StopSignal,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut framed = Framed::new(io, FrameCodec::new(shared.config.max_frame_length));
    let announced = shared.config.encoding;
    if framed
        .send(handshake::server_announcement(announced))
        .await
        .is_err()
    {
        return;
    }
    let hello = tokio::select! {
        r = tokio::time::timeout(shared.config.handshake_timeout, framed.next()) => r,
        _ = stop.stopped() => return,
    };
    let frame = match hello {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(crate::frame::FrameError::Io(e)))) => {
            // Port probes and clients giving up: nothing to report.
            tracing::debug!(conn = id, %peer, error = %e, "closed before the handshake");
            return;
        }
        Ok(Some(Err(e))) => {
            tracing::error!(conn = id, %peer, error = %e, "bad handshake frame");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::warn!(conn = id, %peer, "no handshake in time");
            return;
        }
    };
    let enc = match handshake::parse_client_hello(&frame) {
        Ok(ClientHello::Ruok) => {
            let status = Value::Dict(
                shared
                    .storages
                    .iter()
                    .map(|(name, s)| (Value::str(name.as_str()), s.status_value()))
                    .collect(),
            );
            let json = super::status::to_json(&status);
            let _ = framed.send(Bytes::from(json)).await;
            return;
        }
        Ok(ClientHello::Protocol(p)) => {
            tracing::info!(conn = id, %peer, protocol = %String::from_utf8_lossy(&p.to_bytes()), "received handshake");
            p.encoding
        }
        Err(e) => {
            tracing::error!(conn = id, %peer, error = %e, "bad handshake");
            return;
        }
    };
    let (deferred_tx, deferred_rx) = mpsc::channel(DEFERRED_QUEUE);
    let read_only = shared.config.read_only;
    let mut conn = Conn {
        id,
        shared,
        framed,
        enc,
        label: peer.clone(),
        peer,
        reg: None,
        read_only,
        deferred_tx,
        deferred_rx,
        txn: None,
        generation: 0,
        upload: None,
        iters: Iterators::default(),
    };
    let end = conn.run(&stop).await;
    conn.close(end).await;
}

async fn next_notice(reg: &mut Option<Registered>) -> Option<Notice> {
    match reg {
        Some(r) => r.notices.recv().await,
        None => std::future::pending().await,
    }
}

enum Event {
    Stop,
    Deferred(Option<Deferred>),
    Notice(Option<Notice>),
    Frame(Option<Result<Bytes, crate::frame::FrameError>>),
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn served(&self) -> Option<&Arc<Served>> {
        self.reg.as_ref().map(|r| &r.served)
    }

    /// Whether a complete frame is already buffered (then answering it
    /// comes before flushing).
    fn frame_buffered(&self) -> bool {
        let buf = self.framed.read_buffer();
        match buf.first_chunk::<HEADER_LEN>() {
            Some(h) => buf.len() - HEADER_LEN >= u32::from_be_bytes(*h) as usize,
            None => false,
        }
    }

    async fn run(&mut self, stop: &super::shutdown::StopSignal) -> End {
        loop {
            if !self.frame_buffered()
                && let Err(e) = SinkExt::<Bytes>::flush(&mut self.framed).await
            {
                return End::Io(e.to_string());
            }
            let ev = {
                let Conn {
                    framed,
                    deferred_rx,
                    reg,
                    ..
                } = self;
                tokio::select! {
                    biased;
                    _ = stop.stopped() => Event::Stop,
                    d = deferred_rx.recv() => Event::Deferred(d),
                    n = next_notice(reg) => Event::Notice(n),
                    f = framed.next() => Event::Frame(f),
                }
            };
            let r = match ev {
                Event::Stop => return self.stop().await,
                Event::Deferred(Some(d)) => self.on_deferred(d).await,
                Event::Deferred(None) => Ok(()),
                Event::Notice(Some(n)) => self.deliver(n).await,
                Event::Notice(None) => Err(End::FellBehind),
                Event::Frame(Some(Ok(frame))) => self.on_frame(frame).await,
                Event::Frame(Some(Err(e))) => Err(End::Protocol(e.to_string())),
                Event::Frame(None) => Err(End::Eof),
            };
            if let Err(end) = r {
                return end;
            }
        }
    }

    /// Shutdown: a `tpc_finish` under way completes and is answered; any
    /// other transaction is aborted by closing.
    async fn stop(&mut self) -> End {
        if self
            .txn
            .as_ref()
            .is_some_and(|t| matches!(t.phase, Phase::Deciding))
        {
            let deadline = tokio::time::Instant::now() + FINISH_ON_SHUTDOWN;
            while self.txn.is_some() {
                match tokio::time::timeout_at(deadline, self.deferred_rx.recv()).await {
                    Ok(Some(d)) => {
                        if self.on_deferred(d).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        End::Stopped
    }

    async fn close(&mut self, end: End) {
        match &end {
            End::Eof | End::Stopped => {
                tracing::debug!(conn = self.id, peer = %self.peer, reason = %end, "connection closed")
            }
            End::Protocol(_) => {
                tracing::error!(conn = self.id, peer = %self.peer, reason = %end, "closing connection")
            }
            _ => {
                tracing::warn!(conn = self.id, peer = %self.peer, reason = %end, "closing connection")
            }
        }
        if let Some(t) = &self.txn {
            let locked = matches!(t.phase, Phase::Voted(_) | Phase::Deciding);
            tracing::info!(
                conn = self.id,
                "disconnected during {} transaction",
                if locked { "locked" } else { "unlocked" }
            );
            if let Some(s) = self.served() {
                s.stats.aborts.fetch_add(1, Ordering::Relaxed);
            }
            self.clear_txn();
        }
        if let Some(path) = self.upload.take().map(|(p, _)| p) {
            let _ = std::fs::remove_file(path);
        }
        if let Some(reg) = &self.reg {
            reg.served.unsubscribe(self.id);
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            SinkExt::<Bytes>::flush(&mut self.framed),
        )
        .await;
    }

    /// Ends the transaction on this side: dropping the buffer aborts a vote
    /// in progress and (by dropping the decision channel) a voted one.
    fn clear_txn(&mut self) {
        if self.txn.take().is_some()
            && let Some(s) = self.served()
        {
            s.stats.active_txns.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn feed(&mut self, payload: Bytes) -> Result<(), End> {
        self.framed
            .feed(payload)
            .await
            .map_err(|e| End::Io(e.to_string()))
    }

    /// Queues a payload; one with large shared parts (a data record) is
    /// written at once, after what is queued, straight from its parts.
    async fn feed_payload(&mut self, p: Payload) -> Result<(), End> {
        if p.parts().len() <= 1 {
            return self.feed(p.into_bytes()).await;
        }
        SinkExt::<Bytes>::flush(&mut self.framed)
            .await
            .map_err(|e| End::Io(e.to_string()))?;
        let max = self.framed.codec().max_frame_length();
        crate::frame::write_frame_parts(self.framed.get_mut(), p.parts(), max)
            .await
            .map_err(|e| End::Io(e.to_string()))
    }

    async fn send(&mut self, msg: ServerMessage) -> Result<(), End> {
        match msg.encode_payload(self.enc) {
            Ok(p) => self.feed_payload(p).await,
            Err(e) => {
                // What Python's server does with an unpicklable result.
                tracing::error!(conn = self.id, error = %e, "unencodable response");
                match msg {
                    ServerMessage::Reply { msgid, .. } | ServerMessage::Error { msgid, .. } => {
                        let fallback = ServerMessage::Error {
                            msgid,
                            exception: ZeoException::value_error("Couldn't pickle response"),
                        };
                        let p = fallback
                            .encode(self.enc)
                            .map_err(|e| End::Protocol(e.to_string()))?;
                        self.feed(p).await
                    }
                    ServerMessage::Call(_) => Ok(()),
                }
            }
        }
    }

    /// Sends a reply (if the call wants one) after the invalidations of
    /// every commit up to `reveal`.
    async fn reply(
        &mut self,
        to: Option<Value>,
        result: Result<Value, ZeoException>,
        reveal: Tid,
    ) -> Result<(), End> {
        let Some(msgid) = to else {
            return Ok(());
        };
        self.catch_up(reveal).await?;
        let msg = match result {
            Ok(result) => ServerMessage::Reply { msgid, result },
            Err(exception) => ServerMessage::Error { msgid, exception },
        };
        self.send(msg).await
    }

    /// Delivers queued notices until this client has been told about every
    /// commit up to `upto`. Commits are published shortly after they are
    /// visible in the storage (at once, or after the group fsync), so this
    /// waits at most that long — and only when a reply shows a commit the
    /// client has not heard of yet.
    async fn catch_up(&mut self, upto: Tid) -> Result<(), End> {
        loop {
            let Some(reg) = self.reg.as_mut() else {
                return Ok(());
            };
            if reg.delivered >= upto {
                return Ok(());
            }
            match tokio::time::timeout(CATCH_UP, reg.notices.recv()).await {
                Ok(Some(n)) => self.deliver(n).await?,
                Ok(None) => return Err(End::FellBehind),
                Err(_) => {
                    tracing::warn!(conn = self.id, %upto, "commit not published in time; replying anyway");
                    return Ok(());
                }
            }
        }
    }

    async fn deliver(&mut self, n: Notice) -> Result<(), End> {
        match n {
            Notice::Commit(c) => {
                if let Some(reg) = self.reg.as_mut() {
                    reg.delivered = reg.delivered.max(c.tid);
                }
                if c.origin == self.id {
                    return Ok(());
                }
                let p = c
                    .frame(self.enc)
                    .map_err(|e| End::Protocol(e.to_string()))?;
                self.feed(p).await
            }
            Notice::Info { length, size } => {
                self.send(ServerMessage::Call(ClientCall::Info { length, size }))
                    .await
            }
            Notice::Fatal(why) => Err(End::Fatal(why)),
        }
    }

    async fn on_frame(&mut self, frame: Bytes) -> Result<(), End> {
        if self.enc == Encoding::Pickle
            && let Some(call) = load_before::parse_call(&frame)
            && let Some(served) = self.served().cloned()
        {
            return self.load_before(&served, call).await;
        }
        let msg = Message::decode(self.enc, &frame, GlobalPolicy::FromClient)
            .map_err(|e| End::Protocol(format!("undecodable message: {e}")))?;
        // A storage looks an oid up before it checks anything else, so
        // `history(None, ...)` is a POSKeyError in ZODB, not a TypeError.
        let history_key = (msg.method == "history")
            .then(|| msg.args.as_seq().and_then(|a| a.first()).cloned())
            .flatten()
            .filter(|k| k.as_oid().is_none());
        let call = match Incoming::from_message(msg) {
            Ok(Incoming::Heartbeat) => return Ok(()),
            Ok(Incoming::Call(call)) => call,
            Err(e) => return self.on_bad_request(e, history_key).await,
        };
        let Call {
            msgid,
            is_async,
            request,
        } = call;
        let method = request.method();
        match (&self.reg, method) {
            (None, Method::Register) => {}
            (None, m) => {
                return Err(End::Protocol(format!(
                    "{} called before register",
                    m.name()
                )));
            }
            (Some(_), Method::Register) => {
                return Err(End::Protocol("register called twice".into()));
            }
            _ => {}
        }
        let to = (!is_async).then(|| msgid.clone());
        let out = self.dispatch(to.clone(), request).await;
        self.answer(to, method, out).await
    }

    /// A `loadBefore` recognised on the wire ([`load_before::parse_call`]):
    /// what [`Conn::dispatch`] does for it, with the reply of a revision
    /// written straight into the outgoing buffer.
    async fn load_before(
        &mut self,
        served: &Served,
        call: load_before::LoadBeforeCall,
    ) -> Result<(), End> {
        let r = served.load_before(call.oid, call.before);
        if let Ok(Some(rev)) = &r
            && rev.data.len() < crate::encoding::SHARE_MIN
        {
            self.catch_up(rev.serial).await?;
            // As `feed` does: past the boundary, what is buffered goes out
            // first (a client pipelining loads would grow it otherwise).
            if self.framed.write_buffer().len() >= self.framed.backpressure_boundary() {
                SinkExt::<Bytes>::flush(&mut self.framed)
                    .await
                    .map_err(|e| End::Io(e.to_string()))?;
            }
            let len = load_before::reply_len(rev.data.len(), rev.next_serial.is_some());
            let buf = self.framed.write_buffer_mut();
            buf.reserve(HEADER_LEN + len);
            buf.put_u32(len as u32);
            load_before::encode_reply(buf, call.msgid, &rev.data, rev.serial, rev.next_serial);
            return Ok(());
        }
        self.answer(Some(call.msgid.to_value()), Method::LoadBefore, loaded(r))
            .await
    }

    /// Sends what dispatching a call to `method` produced.
    async fn answer(&mut self, to: Option<Value>, method: Method, out: Out) -> Result<(), End> {
        let is_async = to.is_none();
        match out {
            Out::Reply(v, reveal) => self.reply(to, Ok(v), reveal).await,
            Out::Error(e, reveal) => {
                if is_async {
                    return Err(End::Protocol(format!(
                        "async {} raised {}",
                        method.name(),
                        e.class_path()
                    )));
                }
                if !matches!(
                    e,
                    ZeoException::PosKey(_)
                        | ZeoException::Conflict(_)
                        | ZeoException::ReadConflict(_)
                ) {
                    tracing::warn!(conn = self.id, method = method.name(), exception = %e.class_path(), "call raised");
                }
                self.reply(to, Err(e), reveal).await
            }
            Out::Pending => Ok(()),
            Out::Close(end) => Err(end),
        }
    }

    async fn on_bad_request(
        &mut self,
        e: RequestError,
        history_key: Option<Value>,
    ) -> Result<(), End> {
        let allowed = match &e {
            RequestError::BadArguments { method, .. } => {
                self.reg.is_some() != (*method == Method::Register)
            }
            _ => false,
        };
        if !allowed {
            return Err(End::Protocol(e.to_string()));
        }
        if let (
            RequestError::BadArguments {
                msgid,
                method: Method::History,
                is_async: false,
                ..
            },
            Some(key),
        ) = (&e, history_key)
        {
            let exc = ZeoException::PosKey(vec![key]);
            return self.reply(Some(msgid.clone()), Err(exc), Tid::ZERO).await;
        }
        match e.disposition() {
            crate::request::Disposition::Close => Err(End::Protocol(e.to_string())),
            crate::request::Disposition::Reply { msgid, exception } => {
                tracing::warn!(conn = self.id, error = %e, "bad arguments");
                self.reply(Some(msgid), Err(exception), Tid::ZERO).await
            }
        }
    }

    /// ZEO's `_check_tid`: the transaction named must be this connection's
    /// current one. `Ok(None)` means "no such transaction, ignore" (for
    /// `tpc_finish`/`tpc_abort`).
    fn check_txn(&self, txn: TxnId, strict: bool) -> Result<bool, ZeoException> {
        if self.read_only {
            return Err(ZeoException::ReadOnly(Vec::new()));
        }
        match &self.txn {
            None if strict => Err(ZeoException::StorageTransaction(vec![
                Value::None,
                Value::from(txn.0),
            ])),
            Some(t) if t.id != txn && strict => Err(ZeoException::StorageTransaction(vec![
                Value::from(t.id.0),
                Value::from(txn.0),
            ])),
            Some(t) => Ok(t.id == txn),
            None => Ok(false),
        }
    }

    /// The buffer of the current transaction, after [`Conn::check_txn`].
    fn buffer(&mut self, txn: TxnId) -> Result<&mut TxnBuf, ZeoException> {
        self.check_txn(txn, true)?;
        self.txn
            .as_mut()
            .ok_or_else(|| ZeoException::StorageTransaction(vec![Value::None, Value::from(txn.0)]))
    }

    fn count_store(&self) {
        if let Some(s) = self.served() {
            s.stats.stores.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn buffer_op(&mut self, txn: TxnId, op: Op, store: bool) -> Out {
        match self.buffer(txn) {
            Ok(t) => {
                t.ops.push(op);
                if store {
                    self.count_store();
                }
                reply(Value::None)
            }
            Err(e) => Out::Error(e, Tid::ZERO),
        }
    }

    /// Runs `f` on a blocking thread and replies with its result.
    fn spawn_reply<F>(&self, to: Option<Value>, f: F)
    where
        F: FnOnce() -> (Result<Value, ZeoException>, Tid) + Send + 'static,
    {
        let tx = self.deferred_tx.clone();
        self.shared.work.spawn_blocking(move || {
            let (result, reveal) = f();
            let _ = tx.blocking_send(Deferred::Reply { to, result, reveal });
        });
    }

    async fn dispatch(&mut self, to: Option<Value>, request: Request) -> Out {
        // Everything but register needs the storage.
        let served = match (&request, self.served()) {
            (Request::Register { storage, read_only }, _) => {
                return self.register(storage, *read_only);
            }
            (_, Some(s)) => s.clone(),
            (_, None) => return Out::Close(End::Protocol("not registered".into())),
        };
        let storage = served.spec.storage.clone();
        match request {
            Request::Register { .. } => Out::Close(End::Protocol("register called twice".into())),
            Request::GetInfo => {
                let (length, size) = served.size_info();
                let info = StorageInfo {
                    length,
                    size,
                    name: storage.name(),
                    supports_undo: served.spec.supports_undo,
                    supports_record_iternext: served.spec.record_cursor.is_some(),
                    interfaces: served.spec.interfaces.clone(),
                };
                reply(info.to_value())
            }
            Request::LastTransaction => {
                let last = served.last_published();
                Out::Reply(Value::tid(last), last)
            }
            Request::GetInvalidations { tid } => self.get_invalidations(to, &served, tid),
            Request::NewOids { n } => {
                let n = n.unwrap_or(100).min(100);
                if self.read_only {
                    return Out::Error(ZeoException::ReadOnly(Vec::new()), Tid::ZERO);
                }
                let n = if n <= 0 { 1 } else { n as usize };
                match storage.new_oids(n) {
                    Ok(oids) => reply(oid_list(&oids)),
                    Err(e) => storage_error(&e),
                }
            }
            Request::NewOid => Out::Error(
                ZeoException::attribute_error("'ZEOStorage' object has no attribute 'new_oid'"),
                Tid::ZERO,
            ),
            Request::Pack { time, wait } => self.pack(to, &served, time, wait),
            Request::LoadBefore { oid, before } => loaded(served.load_before(oid, before)),
            Request::LoadSerial { oid, serial } => match storage.load_serial(oid, serial) {
                Ok(data) => Out::Reply(Value::Bytes(data), serial),
                Err(e) => storage_error(&e),
            },
            Request::GetTid { oid } => match storage.load(oid) {
                Ok((_, tid)) => Out::Reply(Value::tid(tid), tid),
                Err(e) => Out::Error(ZeoException::pos_key(oid), e_reveal(&e)),
            },
            Request::History { oid, size } => {
                match storage.history(oid, usize::try_from(size).unwrap_or(0)) {
                    Ok(entries) => {
                        let reveal = entries.first().map_or(Tid::ZERO, |e| e.txn.tid);
                        let list = entries
                            .iter()
                            .map(|e| {
                                HistoryEntry {
                                    extension: super::extension::items(&e.txn.meta.extension),
                                    time: e.txn.tid.timestamp().time_time(),
                                    user_name: e.txn.meta.user.clone(),
                                    description: e.txn.meta.description.clone(),
                                    tid: e.txn.tid,
                                    size: i64::try_from(e.size).unwrap_or(i64::MAX),
                                }
                                .to_value()
                            })
                            .collect();
                        Out::Reply(Value::List(list), reveal)
                    }
                    Err(e) => storage_error(&e),
                }
            }
            Request::RecordIternext { next } => {
                let Some(cursor) = served.spec.record_cursor.clone() else {
                    return Out::Error(
                        ZeoException::attribute_error(
                            "'ZEOStorage' object has no attribute 'record_iternext'",
                        ),
                        Tid::ZERO,
                    );
                };
                let from = match next.as_deref().map(Oid::from_slice) {
                    None => None,
                    Some(Some(o)) => Some(o),
                    Some(None) => {
                        return Out::Error(ZeoException::type_error("bad oid"), Tid::ZERO);
                    }
                };
                let Some((oid, next_oid)) = cursor(from) else {
                    return Out::Error(ZeoException::value_error("empty tree"), Tid::ZERO);
                };
                match storage.load(oid) {
                    Ok((data, tid)) => Out::Reply(
                        Value::Tuple(vec![
                            Value::oid(oid),
                            Value::tid(tid),
                            Value::Bytes(data),
                            next_oid.map_or(Value::None, Value::oid),
                        ]),
                        tid,
                    ),
                    Err(e) => storage_error(&e),
                }
            }
            Request::Storea {
                oid,
                serial,
                data,
                txn,
            } => self.buffer_op(txn, Op::Store { oid, serial, data }, true),
            Request::CheckCurrentSerialInTransaction { oid, serial, txn } => {
                self.buffer_op(txn, Op::CheckRead { oid, serial }, false)
            }
            Request::Restorea {
                oid,
                serial: _,
                data,
                prev_txn,
                txn,
            } => self.buffer_op(
                txn,
                Op::Restore {
                    oid,
                    data,
                    prev_txn,
                },
                true,
            ),
            Request::DeleteObject { oid, serial, txn } => {
                self.buffer_op(txn, Op::Delete { oid, serial }, true)
            }
            Request::StoreBlobStart => {
                let Some(dir) = &served.blobs else {
                    return Out::Error(
                        ZeoException::builtin("ValueError", "no blob directory"),
                        Tid::ZERO,
                    );
                };
                if self.upload.is_some() {
                    return Out::Error(
                        ZeoException::builtin("AssertionError", "blob upload already started"),
                        Tid::ZERO,
                    );
                }
                match dir.temp_file() {
                    Ok(f) => {
                        self.upload = Some(f);
                        reply(Value::None)
                    }
                    Err(e) => {
                        Out::Error(ZeoException::builtin("OSError", &e.to_string()), Tid::ZERO)
                    }
                }
            }
            Request::StoreBlobChunk { chunk } => match &mut self.upload {
                Some((_, f)) => match f.write_all(&chunk) {
                    Ok(()) => reply(Value::None),
                    Err(e) => {
                        Out::Error(ZeoException::builtin("OSError", &e.to_string()), Tid::ZERO)
                    }
                },
                None => Out::Error(
                    ZeoException::builtin("TypeError", "no blob upload in progress"),
                    Tid::ZERO,
                ),
            },
            Request::StoreBlobEnd {
                oid,
                serial,
                data,
                txn,
            } => {
                let Some((path, file)) = self.upload.take() else {
                    return Out::Error(
                        ZeoException::builtin("TypeError", "no blob upload in progress"),
                        Tid::ZERO,
                    );
                };
                drop(file);
                match self.buffer(txn) {
                    Ok(t) => {
                        t.blobs.push(BlobUpload {
                            oid,
                            serial,
                            data,
                            path,
                        });
                        reply(Value::None)
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(path);
                        Out::Error(e, Tid::ZERO)
                    }
                }
            }
            Request::StoreBlobShared {
                oid,
                serial,
                data,
                filename,
                txn,
            } => {
                let path = served
                    .blobs
                    .as_ref()
                    .and_then(|d| d.shared_upload(oid, &filename));
                let Some(path) = path else {
                    tracing::error!(
                        conn = self.id,
                        %oid,
                        %filename,
                        "storeBlobShared: not a plain .tmp name of a regular file in the oid's blob directory"
                    );
                    return Out::Error(ZeoException::value_error(&filename), Tid::ZERO);
                };
                match self.buffer(txn) {
                    Ok(t) => {
                        t.blobs.push(BlobUpload {
                            oid,
                            serial,
                            data,
                            path,
                        });
                        reply(Value::None)
                    }
                    Err(e) => Out::Error(e, Tid::ZERO),
                }
            }
            Request::SendBlob { oid, serial } => self.send_blob(to, &served, oid, serial),
            Request::TpcBegin {
                txn,
                user,
                description,
                extension,
                tid,
                status,
            } => self.tpc_begin(&served, txn, user, description, &extension, tid, status),
            Request::Vote { txn } => self.vote(to, &served, txn),
            Request::TpcFinish { txn } => self.tpc_finish(to, txn),
            Request::TpcAbort { txn } => self.tpc_abort(to, &served, txn),
            Request::Undoa { undo_id, txn } => self.buffer_op(txn, Op::Undo { id: undo_id }, false),
            Request::UndoLog { first, last } => {
                if !served.spec.supports_undo {
                    return reply(Value::Tuple(Vec::new()));
                }
                self.spawn_reply(to, move || undo_log(&*storage, first, last, None));
                Out::Pending
            }
            Request::UndoInfo { first, last, spec } => {
                if !served.spec.supports_undo {
                    return reply(Value::Tuple(Vec::new()));
                }
                self.spawn_reply(to, move || undo_log(&*storage, first, last, Some(&spec)));
                Out::Pending
            }
            Request::IteratorStart { start, stop } => {
                match self.iters.start(storage, start, stop) {
                    Ok(iid) => reply(Value::from(iid)),
                    Err(e) => Out::Error(
                        ZeoException::builtin("RuntimeError", &e.to_string()),
                        Tid::ZERO,
                    ),
                }
            }
            Request::IteratorNext { iid } => {
                let Some(rx) = self.iters.next(iid) else {
                    return Out::Error(key_error(iid), Tid::ZERO);
                };
                let tx = self.deferred_tx.clone();
                tokio::spawn(async move {
                    let result = match rx.await {
                        Ok(Ok(t)) => Ok(t),
                        Ok(Err(e)) => Err(ZeoException::from_storage_error(&e)),
                        Err(_) => Err(key_error(iid)),
                    };
                    let _ = tx.send(Deferred::IterNext { to, iid, result }).await;
                });
                Out::Pending
            }
            Request::IteratorRecordStart { txn_iid, tid } => {
                let Some(last) = self.iters.txns.get(&txn_iid).and_then(|t| t.last.clone()) else {
                    return Out::Error(key_error(txn_iid), Tid::ZERO);
                };
                if last.info.tid != tid {
                    return Out::Error(
                        ZeoException::builtin(
                            "Exception",
                            &format!(
                                "Out-of-order request for record iterator for transaction {:?}",
                                Value::tid(tid)
                            ),
                        ),
                        Tid::ZERO,
                    );
                }
                reply(Value::from(self.iters.start_records(last)))
            }
            Request::IteratorRecordNext { iid } => {
                let Some(it) = self.iters.records.get_mut(&iid) else {
                    return Out::Error(key_error(iid), Tid::ZERO);
                };
                match it.txn.records.get(it.pos) {
                    Some(r) => {
                        it.pos += 1;
                        let rec = IteratedRecord {
                            oid: r.oid,
                            tid: r.tid,
                            data: r.data.clone(),
                            data_txn: r.data_txn,
                        };
                        reply(IteratedRecord::to_value(Some(&rec)))
                    }
                    None => {
                        self.iters.records.remove(&iid);
                        reply(Value::None)
                    }
                }
            }
            Request::IteratorGc { iids } => {
                self.iters.gc(&iids);
                reply(Value::None)
            }
            Request::ServerStatus => reply(served.status_value()),
            Request::SetClientLabel { label } => {
                let text = match &label {
                    Value::Str(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                self.label = format!("{text} {}", self.peer);
                tracing::info!(conn = self.id, label = %self.label, "client label");
                reply(Value::None)
            }
            Request::Ping => {
                let last = storage.last_transaction();
                Out::Reply(Value::None, last)
            }
        }
    }

    fn register(&mut self, name: &str, read_only: bool) -> Out {
        let Some(served) = self.shared.storages.get(name).cloned() else {
            tracing::warn!(conn = self.id, storage = name, "unknown storage_id");
            return Out::Error(
                ZeoException::value_error(&format!("unknown storage: {name}")),
                Tid::ZERO,
            );
        };
        if !read_only && (self.read_only || served.spec.read_only) {
            return Out::Error(ZeoException::ReadOnly(Vec::new()), Tid::ZERO);
        }
        self.read_only |= read_only;
        let sub = served.subscribe(self.id, self.shared.config.notice_queue);
        let since = sub.since;
        tracing::info!(conn = self.id, peer = %self.peer, storage = name, read_only = self.read_only, "registered");
        self.reg = Some(Registered {
            served,
            notices: sub.rx,
            delivered: since,
        });
        reply(Value::tid(since))
    }

    fn get_invalidations(&mut self, to: Option<Value>, served: &Arc<Served>, tid: Tid) -> Out {
        if let Some((latest, oids)) = served.queued_invalidations(tid) {
            tracing::info!(conn = self.id, count = oids.len(), %latest, "returning invalidations");
            return Out::Reply(invalidations_to_value(Some((latest, &oids))), latest);
        }
        let young = self
            .shared
            .config
            .invalidation_age
            .is_some_and(|age| now_f64() - tid.timestamp().time_time() < age.as_secs_f64());
        if !young {
            tracing::info!(conn = self.id, %tid, "tid too old for the invalidation queue");
            return reply(Value::None);
        }
        let storage = served.spec.storage.clone();
        self.spawn_reply(to, move || {
            let mut seen = std::collections::HashSet::new();
            let mut oids = Vec::new();
            let mut latest = None;
            let it = match storage.iter_transactions(Some(tid.next()), None) {
                Ok(it) => it,
                Err(e) => return (Err(ZeoException::from_storage_error(&e)), Tid::ZERO),
            };
            for t in it {
                let t = match t {
                    Ok(t) => t,
                    Err(e) => return (Err(ZeoException::from_storage_error(&e)), Tid::ZERO),
                };
                for r in &t.records {
                    if seen.insert(r.oid) {
                        oids.push(r.oid);
                    }
                }
                latest = Some(t.info.tid);
            }
            match latest {
                Some(l) => (Ok(invalidations_to_value(Some((l, &oids)))), l),
                None => (Ok(Value::None), Tid::ZERO),
            }
        });
        Out::Pending
    }

    fn pack(&mut self, to: Option<Value>, served: &Arc<Served>, time: f64, wait: bool) -> Out {
        let pack_time = match TimeStamp::from_unix(time) {
            Ok(ts) => ts.tid(),
            Err(e) => return Out::Error(ZeoException::value_error(&e.to_string()), Tid::ZERO),
        };
        let served = served.clone();
        let id = self.id;
        let job = move || -> Result<Value, ZeoException> {
            tracing::info!(conn = id, storage = %served.name, time, "pack started");
            let gc = served.spec.pack_gc;
            served
                .spec
                .storage
                .pack(pack_time, gc)
                .map_err(|e| ZeoException::from_storage_error(&e))?;
            if let Some(dir) = &served.blobs {
                dir.pack(&*served.spec.storage)
                    .map_err(|e| ZeoException::builtin("OSError", &e.to_string()))?;
            }
            tracing::info!(conn = id, storage = %served.name, "pack complete");
            served.broadcast_info(wait.then_some(id));
            Ok(Value::None)
        };
        if wait {
            let tx = self.deferred_tx.clone();
            self.shared.work.spawn_blocking(move || {
                let result = job();
                let _ = tx.blocking_send(Deferred::Packed { to, result });
            });
            Out::Pending
        } else {
            self.shared.work.spawn_blocking(move || {
                if let Err(e) = job() {
                    tracing::error!(conn = id, error = %e.class_path(), "pack failed");
                }
            });
            reply(Value::None)
        }
    }

    fn send_blob(&mut self, to: Option<Value>, served: &Arc<Served>, oid: Oid, serial: Tid) -> Out {
        let no_blob = || {
            ZeoException::PosKey(vec![
                Value::str("No blob file"),
                Value::oid(oid),
                Value::tid(serial),
            ])
        };
        let Some(dir) = &served.blobs else {
            return Out::Error(no_blob(), Tid::ZERO);
        };
        let path = dir.path(oid, serial);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => return Out::Error(no_blob(), Tid::ZERO),
        };
        let tx = self.deferred_tx.clone();
        let enc = self.enc;
        self.shared.work.spawn_blocking(move || {
            use std::io::Read as _;
            let send_call = |call: ClientCall| -> bool {
                match ServerMessage::Call(call).encode(enc) {
                    Ok(p) => tx.blocking_send(Deferred::Frame(p)).is_ok(),
                    Err(_) => false,
                }
            };
            if !send_call(ClientCall::ReceiveBlobStart { oid, serial }) {
                return;
            }
            let mut file = file;
            let mut buf = vec![0u8; super::blob::CHUNK];
            let result = loop {
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read(buf.get_mut(filled..).unwrap_or_default()) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            return {
                                let _ = tx.blocking_send(Deferred::Reply {
                                    to,
                                    result: Err(ZeoException::builtin("OSError", &e.to_string())),
                                    reveal: Tid::ZERO,
                                });
                            };
                        }
                    }
                }
                if filled == 0 {
                    break Ok(Value::None);
                }
                let chunk = Bytes::copy_from_slice(buf.get(..filled).unwrap_or_default());
                if !send_call(ClientCall::ReceiveBlobChunk { oid, serial, chunk }) {
                    return;
                }
                if filled < buf.len() {
                    break Ok(Value::None);
                }
            };
            if !send_call(ClientCall::ReceiveBlobStop { oid, serial }) {
                return;
            }
            let _ = tx.blocking_send(Deferred::Reply {
                to,
                result,
                reveal: Tid::ZERO,
            });
        });
        Out::Pending
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of tpc_begin")]
    fn tpc_begin(
        &mut self,
        served: &Arc<Served>,
        txn: TxnId,
        user: Bytes,
        description: Bytes,
        extension: &Value,
        tid: Option<Tid>,
        status: TxnStatus,
    ) -> Out {
        if self.read_only {
            return Out::Error(ZeoException::ReadOnly(Vec::new()), Tid::ZERO);
        }
        if let Some(t) = &self.txn {
            if t.id == txn {
                tracing::info!(conn = self.id, "duplicate tpc_begin");
                return reply(Value::None);
            }
            return Out::Error(
                ZeoException::StorageTransaction(vec![Value::str(
                    "Multiple simultaneous tpc_begin requests from one client.",
                )]),
                Tid::ZERO,
            );
        }
        let extension = match super::extension::to_pickle(extension) {
            Ok(e) => e,
            Err(e) => return Out::Error(ZeoException::value_error(&e.to_string()), Tid::ZERO),
        };
        let restore = match tid {
            Some(t) => Some((t, status)),
            None => {
                if status != TxnStatus::Committed {
                    tracing::warn!(
                        conn = self.id,
                        ?status,
                        "tpc_begin with a status but no tid: committing with a new tid and status ' '"
                    );
                }
                None
            }
        };
        self.generation += 1;
        self.txn = Some(TxnBuf {
            id: txn,
            generation: self.generation,
            meta: TxnMeta {
                user,
                description,
                extension,
            },
            restore,
            ops: Vec::new(),
            blobs: Vec::new(),
            phase: Phase::Open,
            held: None,
        });
        served.stats.active_txns.fetch_add(1, Ordering::Relaxed);
        reply(Value::None)
    }

    fn vote(&mut self, to: Option<Value>, served: &Arc<Served>, txn: TxnId) -> Out {
        if let Err(e) = self.check_txn(txn, true) {
            return Out::Error(e, Tid::ZERO);
        }
        let Some(t) = self.txn.as_mut() else {
            return Out::Error(
                ZeoException::StorageTransaction(vec![Value::None, Value::from(txn.0)]),
                Tid::ZERO,
            );
        };
        match t.phase {
            Phase::Open => {}
            Phase::Voting(_) => {
                return Out::Error(
                    ZeoException::StorageTransaction(vec![Value::str("Already voting (waiting)")]),
                    Tid::ZERO,
                );
            }
            Phase::Voted(_) | Phase::Deciding => {
                return Out::Error(
                    ZeoException::StorageTransaction(vec![Value::str("Already voting (locked)")]),
                    Tid::ZERO,
                );
            }
        }
        let generation = t.generation;
        let ops = std::mem::take(&mut t.ops);
        let blobs = std::mem::take(&mut t.blobs);
        let meta = t.meta.clone();
        let restore = t.restore;
        let served = served.clone();
        let deferred = self.deferred_tx.clone();
        let timeout = self.shared.config.transaction_timeout;
        let conn = self.id;
        let label = self.label.clone();
        let held = t.held.take();
        let hold_on_conflict = !self.shared.config.client_conflict_resolution;
        let cancel = VoteCancel::default();
        let lock = match held {
            Some(h) => Lock::Held(h),
            None => Lock::Wait(cancel.clone()),
        };
        let on_timeout = {
            let deferred = deferred.clone();
            Box::new(move || {
                let _ = deferred.blocking_send(Deferred::TimedOut { generation });
            })
        };
        let job = VoteJob {
            served,
            meta,
            restore,
            ops,
            blobs,
            conn,
            label,
            timeout,
            hold_on_conflict,
            on_timeout,
        };
        let (decide_tx, decide_rx) = std::sync::mpsc::channel();
        let answer = VoteAnswer {
            deferred,
            rt: tokio::runtime::Handle::current(),
            to,
            generation,
            decide: Some(decide_tx),
        };
        tokio::task::spawn_blocking(move || vote_worker(job, lock, answer, decide_rx));
        t.phase = Phase::Voting(cancel);
        Out::Pending
    }

    fn tpc_finish(&mut self, to: Option<Value>, txn: TxnId) -> Out {
        match self.check_txn(txn, false) {
            Err(e) => return Out::Error(e, Tid::ZERO),
            Ok(false) => return reply(Value::None),
            Ok(true) => {}
        }
        let Some(t) = self.txn.as_mut() else {
            return reply(Value::None);
        };
        let Phase::Voted(decide) = std::mem::replace(&mut t.phase, Phase::Deciding) else {
            // Python's server asserts here.
            return Out::Error(
                ZeoException::builtin("AssertionError", "finished called wo lock"),
                Tid::ZERO,
            );
        };
        let answer = FinishAnswer {
            deferred: self.deferred_tx.clone(),
            rt: tokio::runtime::Handle::current(),
            to,
            generation: t.generation,
            sent: false,
        };
        if let Err(std::sync::mpsc::SendError(Decision::Finish(mut answer))) =
            decide.send(Decision::Finish(answer))
        {
            // The worker is gone; no answer from it.
            answer.sent = true;
            self.clear_txn();
            return Out::Error(
                ZeoException::StorageTransaction(vec![Value::str("transaction was aborted")]),
                Tid::ZERO,
            );
        }
        Out::Pending
    }

    fn tpc_abort(&mut self, to: Option<Value>, served: &Arc<Served>, txn: TxnId) -> Out {
        match self.check_txn(txn, false) {
            Err(e) => return Out::Error(e, Tid::ZERO),
            Ok(false) => return reply(Value::None),
            Ok(true) => {}
        }
        served.stats.aborts.fetch_add(1, Ordering::Relaxed);
        let Some(t) = self.txn.as_mut() else {
            return reply(Value::None);
        };
        match std::mem::replace(&mut t.phase, Phase::Deciding) {
            Phase::Voted(decide) => {
                self.clear_txn();
                let (ack_tx, ack_rx) = oneshot::channel();
                if decide.send(Decision::Abort(ack_tx)).is_err() {
                    return reply(Value::None);
                }
                let deferred = self.deferred_tx.clone();
                tokio::spawn(async move {
                    let _ = ack_rx.await;
                    let _ = deferred.send(Deferred::Aborted { to }).await;
                });
                Out::Pending
            }
            Phase::Voting(h) => {
                h.abort();
                self.clear_txn();
                reply(Value::None)
            }
            Phase::Open | Phase::Deciding => {
                self.clear_txn();
                reply(Value::None)
            }
        }
    }

    async fn on_deferred(&mut self, d: Deferred) -> Result<(), End> {
        match d {
            Deferred::Reply { to, result, reveal } => self.reply(to, result, reveal).await,
            Deferred::Frame(p) => self.feed(p).await,
            Deferred::Voted {
                to,
                generation,
                outcome,
                decide,
            } => {
                let Some(t) = self
                    .txn
                    .as_mut()
                    .filter(|t| t.generation == generation && matches!(t.phase, Phase::Voting(_)))
                else {
                    // Aborted meanwhile: dropping `decide` aborts the vote.
                    return Ok(());
                };
                match outcome {
                    Some(VoteOutcome::Voted { items }) => {
                        t.phase = Phase::Voted(decide);
                        self.reply(to, Ok(VoteItem::list_to_value(&items)), Tid::ZERO)
                            .await
                    }
                    Some(VoteOutcome::Conflicts {
                        items,
                        ops,
                        blobs,
                        reveal,
                        held,
                    }) => {
                        // A kept lock still counts against the transaction
                        // timeout while the client resolves.
                        if let (Some(h), Some(timeout)) =
                            (&held, self.shared.config.transaction_timeout)
                        {
                            let deadline = tokio::time::Instant::from_std(h.locked_at + timeout);
                            let deferred = self.deferred_tx.clone();
                            let generation = t.generation;
                            tokio::spawn(async move {
                                tokio::time::sleep_until(deadline).await;
                                let _ = deferred.send(Deferred::HeldTooLong { generation }).await;
                            });
                        }
                        t.held = held;
                        // Keep the buffer: the client resolves, stores the
                        // results after what it sent, and votes again.
                        let mut ops = ops;
                        ops.append(&mut t.ops);
                        t.ops = ops;
                        let mut blobs = blobs;
                        blobs.append(&mut t.blobs);
                        t.blobs = blobs;
                        t.phase = Phase::Open;
                        tracing::debug!(
                            conn = self.id,
                            conflicts = items.len(),
                            "conflicts returned to the client"
                        );
                        self.reply(to, Ok(VoteItem::list_to_value(&items)), reveal)
                            .await
                    }
                    Some(VoteOutcome::Failed {
                        error,
                        reveal,
                        conflict,
                    }) => {
                        if conflict && let Some(s) = self.served() {
                            s.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        self.clear_txn();
                        self.reply(to, Err(error), reveal).await
                    }
                    None => {
                        self.clear_txn();
                        self.reply(
                            to,
                            Err(ZeoException::builtin("RuntimeError", "vote failed")),
                            Tid::ZERO,
                        )
                        .await
                    }
                }
            }
            Deferred::Finished {
                to,
                generation,
                result,
            } => {
                if self
                    .txn
                    .as_ref()
                    .is_some_and(|t| t.generation == generation)
                {
                    self.clear_txn();
                }
                match result {
                    Ok(tid) => {
                        if let Some(s) = self.served() {
                            s.stats.commits.fetch_add(1, Ordering::Relaxed);
                        }
                        // The commit is published (durable) once our own
                        // notice comes by; the client hears about every
                        // earlier commit first.
                        self.catch_up(tid).await?;
                        if let Some(s) = self.served().cloned() {
                            let (length, size) = s.size_info();
                            self.send(ServerMessage::Call(ClientCall::Info { length, size }))
                                .await?;
                        }
                        self.reply(to, Ok(Value::tid(tid)), tid).await
                    }
                    Err(e) => self.reply(to, Err(e), Tid::ZERO).await,
                }
            }
            Deferred::Aborted { to } => self.reply(to, Ok(Value::None), Tid::ZERO).await,
            Deferred::Packed { to, result } => {
                if result.is_ok()
                    && let Some(s) = self.served().cloned()
                {
                    let (length, size) = s.size_info();
                    self.send(ServerMessage::Call(ClientCall::Info { length, size }))
                        .await?;
                }
                self.reply(to, result, Tid::ZERO).await
            }
            Deferred::IterNext { to, iid, result } => match result {
                Ok(Some(t)) => {
                    let tid = t.info.tid;
                    let it = IteratedTxn {
                        tid,
                        status: char::from(t.info.status.as_byte()).to_string(),
                        user: t.info.meta.user.clone(),
                        description: t.info.meta.description.clone(),
                        extension: super::extension::from_pickle(&t.info.meta.extension),
                    };
                    if let Some(slot) = self.iters.txns.get_mut(&iid) {
                        slot.last = Some(Arc::new(t));
                    }
                    self.reply(to, Ok(IteratedTxn::to_value(Some(&it))), tid)
                        .await
                }
                Ok(None) => {
                    self.iters.txns.remove(&iid);
                    self.reply(to, Ok(Value::None), Tid::ZERO).await
                }
                Err(e) => {
                    self.iters.txns.remove(&iid);
                    self.reply(to, Err(e), Tid::ZERO).await
                }
            },
            Deferred::HeldTooLong { generation } => {
                if self
                    .txn
                    .as_ref()
                    .is_some_and(|t| t.generation == generation && t.held.is_some())
                {
                    tracing::error!(
                        conn = self.id,
                        client = %self.label,
                        "transaction timeout while resolving conflicts: aborting and closing the connection"
                    );
                    return Err(End::TimedOut);
                }
                Ok(())
            }
            Deferred::TimedOut { generation } => {
                if self
                    .txn
                    .as_ref()
                    .is_some_and(|t| t.generation == generation)
                {
                    return Err(End::TimedOut);
                }
                Ok(())
            }
        }
    }
}

fn e_reveal(e: &StorageError) -> Tid {
    match e {
        StorageError::NoData { serial, .. } => *serial,
        _ => Tid::ZERO,
    }
}

fn key_error(iid: i64) -> ZeoException {
    ZeoException::Other {
        class_path: "builtins.KeyError".into(),
        state: Value::Tuple(vec![Value::from(iid)]),
    }
}

/// `undoLog`/`undoInfo`: ZODB's `UndoSearch` with an optional
/// `undoInfo` specification (every key must match; `ZopeUndo.Prefix`
/// values match path prefixes).
fn undo_log(
    storage: &dyn zodb_core::WriteStorage,
    first: i64,
    last: i64,
    spec: Option<&Value>,
) -> (Result<Value, ZeoException>, Tid) {
    let first_u = usize::try_from(first.max(0)).unwrap_or(0);
    // "-last is the max number of transactions": last = first - last.
    let last = if last < 0 {
        first.saturating_sub(last)
    } else {
        last
    };
    let last_u = usize::try_from(last.max(0)).unwrap_or(0);
    let spec: Vec<(Value, Value)> = match spec {
        Some(Value::Dict(d)) if !d.is_empty() => d.clone(),
        _ => Vec::new(),
    };
    let entry_value = |e: &zodb_core::storage::UndoEntry| {
        UndoLogEntry {
            id: Bytes::from(e.id.clone()),
            time: e.txn.tid.timestamp().time_time(),
            user_name: e.txn.meta.user.clone(),
            size: i64::try_from(e.size).unwrap_or(i64::MAX),
            description: e.txn.meta.description.clone(),
            extension: super::extension::items(&e.txn.meta.extension),
        }
        .to_value()
    };
    let mut out = Vec::new();
    let mut reveal = Tid::ZERO;
    if spec.is_empty() {
        match storage.undo_log(first_u, last_u) {
            Ok(entries) => {
                for e in &entries {
                    reveal = reveal.max(e.txn.tid);
                    out.push(entry_value(e));
                }
            }
            Err(e) => return (Err(ZeoException::from_storage_error(&e)), Tid::ZERO),
        }
        return (Ok(Value::List(out)), reveal);
    }
    // With a filter, entries are counted only when they match: read the
    // log in chunks until enough matched.
    const CHUNK: usize = 256;
    let mut pos = 0usize;
    let mut matched = 0usize;
    'scan: while matched < last_u {
        let entries = match storage.undo_log(pos, pos + CHUNK) {
            Ok(e) => e,
            Err(e) => return (Err(ZeoException::from_storage_error(&e)), Tid::ZERO),
        };
        if entries.is_empty() {
            break;
        }
        pos += entries.len();
        for e in &entries {
            let d = entry_value(e);
            if !spec.iter().all(|(k, v)| spec_matches(&d, k, v)) {
                continue;
            }
            if matched >= first_u {
                reveal = reveal.max(e.txn.tid);
                out.push(d);
            }
            matched += 1;
            if matched >= last_u {
                break 'scan;
            }
        }
        if entries.len() < CHUNK {
            break;
        }
    }
    (Ok(Value::List(out)), reveal)
}

/// `desc.get(k) == v` with Python's equality, where `v` may be a
/// `ZopeUndo.Prefix.Prefix` (equal to any path it is a prefix of, ignoring
/// a trailing " user" part).
fn spec_matches(desc: &Value, key: &Value, want: &Value) -> bool {
    let got = desc
        .as_dict()
        .and_then(|d| d.iter().rev().find(|(k, _)| k.py_eq(key)))
        .map(|(_, v)| v);
    if let Value::Object(o) = want
        && o.class.is("ZopeUndo.Prefix", "Prefix")
    {
        let path: Option<Vec<String>> = o
            .state
            .as_ref()
            .and_then(|s| s.dict_get("path"))
            .and_then(Value::as_seq)
            .and_then(|p| p.iter().map(|x| x.as_text().map(str::to_owned)).collect());
        let Some(path) = path else {
            return false;
        };
        let text = match got {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Bytes(b) | Value::Py2Str(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return false,
        };
        let mut other: Vec<String> = text.split('/').map(str::to_owned).collect();
        if let Some(last) = other.last_mut()
            && let Some(pos) = last.rfind(' ')
        {
            last.truncate(pos);
        }
        return other.get(..path.len()) == Some(&path[..]);
    }
    got.is_some_and(|g| g.py_eq(want)) || (got.is_none() && want.is_none())
}
