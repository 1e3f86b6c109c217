//! One connection to the server: the msgid → reply table, the writer and
//! reader loops, and how each reply and server call is applied.
//!
//! Like ZEO's `asyncio/client.py` and NEO's Go `zrpc`, a request registers
//! a waiter under its msgid and is queued for the writer; the reader
//! matches each reply to its waiter, so any number of requests are in
//! flight at once and replies may come in any order (vote waits for the
//! commit lock while loads are answered). `loadBefore` uses `(oid, tid)`
//! as its msgid, as ClientStorage does, so that identical loads in flight
//! collapse into one request.
//!
//! Everything that changes what the client knows of the database — a load
//! reply entering the cache, an invalidation, the client's own commit — is
//! applied by the reader, in the order the messages arrived, before the
//! waiting caller is woken. The server writes a reply computed before a
//! commit ahead of that commit's invalidation, so applying in arrival order
//! is what keeps the cache from holding a stale revision as current.
//!
//! When the connection ends, every waiter gets
//! [`CallError::Lost`] at once and the connection refuses new requests:
//! nothing waits for a reply that cannot come.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use zodb_core::{Oid, Tid};

use crate::encoding::{Encoding, Payload};
use crate::exception::ZeoException;
use crate::frame::FrameCodec;
use crate::message::Message;
use crate::reply::{ClientCall, LoadedRevision, ServerMessage, ServerMessageError, ShapeError};
use crate::request::Request;
use crate::value::Value;

use super::Shared;

/// Frames queued for the writer before callers wait: enough to keep a
/// pipeline full, small enough that a large commit is written as it is
/// produced rather than buffered whole.
const OUTBOX_FRAMES: usize = 256;

/// ClientStorage's heartbeat period (`Protocol.heartbeat_interval`).
const HEARTBEAT: Duration = Duration::from_secs(60);

/// A reply's key in the table: the msgid as the server echoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Id(i64),
    Load(Oid, Tid),
}

impl Key {
    fn from_value(v: &Value) -> Option<Key> {
        if let Some(i) = v.as_i64() {
            return Some(Key::Id(i));
        }
        match v.as_seq()? {
            [oid, tid] => Some(Key::Load(oid.as_oid()?, tid.as_tid()?)),
            _ => None,
        }
    }
}

/// Why a request got no result.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The server raised an exception.
    Raised(ZeoException),
    /// The connection ended first.
    Lost(Arc<str>),
    /// The reply has the wrong shape.
    Shape(ShapeError),
}

pub(crate) type Reply = Result<Value, CallError>;
pub(crate) type LoadReply = Result<Option<LoadedRevision>, CallError>;

/// What the client's own commit changes once `tpc_finish` returns its tid.
#[derive(Debug, Default)]
pub(crate) struct OwnCommit {
    /// Every oid the transaction wrote, in order, with the data to cache
    /// as the new current revision (`None`: only invalidate).
    pub(crate) updates: Vec<(Oid, Option<Bytes>)>,
}

/// A blob the client asked for with `sendBlob`, being written by the
/// reader as the server's `receiveBlob*` calls arrive.
#[derive(Debug)]
pub(crate) struct Download {
    /// Where the chunks go.
    pub(crate) path: std::path::PathBuf,
    file: Option<std::fs::File>,
    /// `receiveBlobStop` arrived: the file is complete.
    pub(crate) complete: bool,
    /// Writing failed (the rest of the blob was dropped).
    pub(crate) error: Option<std::io::Error>,
}

/// Who waits for a reply, and what applying it involves.
#[derive(Debug)]
enum Waiter {
    Call(oneshot::Sender<Reply>),
    Load {
        oid: Oid,
        waiters: Vec<oneshot::Sender<LoadReply>>,
    },
    Finish {
        reply: oneshot::Sender<Reply>,
        commit: OwnCommit,
    },
}

#[derive(Debug)]
struct Table {
    next_msgid: i64,
    pending: HashMap<Key, Waiter>,
    /// Set when the connection ended, with the reason.
    dead: Option<Arc<str>>,
}

/// One established connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Counts connections of this client, from 1.
    pub(crate) generation: u64,
    pub(crate) encoding: Encoding,
    out: mpsc::Sender<Payload>,
    table: Mutex<Table>,
    kill: Notify,
    /// Blobs requested with `sendBlob` and not yet taken by the caller.
    downloads: Mutex<HashMap<(Oid, Tid), Download>>,
}

/// A reply to wait for.
pub(crate) struct Pending<T> {
    rx: oneshot::Receiver<T>,
    conn: Arc<Conn>,
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("generation", &self.conn.generation)
            .finish_non_exhaustive()
    }
}

impl<T> Pending<T> {
    /// Blocks the calling thread (never a runtime thread) until the reply.
    pub(crate) fn wait(self) -> Result<T, CallError> {
        let conn = self.conn;
        self.rx.blocking_recv().map_err(|_| conn.lost())
    }

    /// Waits inside the runtime.
    pub(crate) async fn get(self) -> Result<T, CallError> {
        let conn = self.conn;
        self.rx.await.map_err(|_| conn.lost())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Conn {
    fn new(generation: u64, encoding: Encoding, out: mpsc::Sender<Payload>) -> Conn {
        Conn {
            generation,
            encoding,
            out,
            table: Mutex::new(Table {
                next_msgid: 1,
                pending: HashMap::new(),
                dead: None,
            }),
            kill: Notify::new(),
            downloads: Mutex::new(HashMap::new()),
        }
    }

    /// Prepares to receive the blob of `oid` at `serial` into `path`
    /// (before `sendBlob` is sent).
    pub(crate) fn expect_blob(&self, oid: Oid, serial: Tid, path: std::path::PathBuf) {
        lock(&self.downloads).insert(
            (oid, serial),
            Download {
                path,
                file: None,
                complete: false,
                error: None,
            },
        );
    }

    /// The download of `oid` at `serial`, once `sendBlob` has answered
    /// (or failed): from then on the reader ignores its chunks.
    pub(crate) fn take_download(&self, oid: Oid, serial: Tid) -> Option<Download> {
        let mut d = lock(&self.downloads).remove(&(oid, serial))?;
        d.file = None;
        Some(d)
    }

    /// Applies one of the server's `receiveBlob*` calls: written to the
    /// requested download's file, in the reader (ZEO's client writes them
    /// in its I/O thread too; chunks are 59000 bytes).
    fn receive_blob(&self, oid: Oid, serial: Tid, part: BlobPart) {
        use std::io::Write as _;
        let mut downloads = lock(&self.downloads);
        let Some(d) = downloads.get_mut(&(oid, serial)) else {
            tracing::warn!(%oid, %serial, "unrequested blob data from the server; ignored");
            return;
        };
        if d.error.is_some() {
            return;
        }
        let result = match part {
            BlobPart::Start => std::fs::File::create(&d.path).map(|f| d.file = Some(f)),
            BlobPart::Chunk(chunk) => match &mut d.file {
                Some(f) => f.write_all(&chunk),
                None => Err(std::io::Error::other(
                    "receiveBlobChunk before receiveBlobStart",
                )),
            },
            // Closed here; the caller syncs it before it is installed, off
            // the reader.
            BlobPart::Stop => match d.file.take() {
                Some(_) => {
                    d.complete = true;
                    Ok(())
                }
                None => Err(std::io::Error::other(
                    "receiveBlobStop before receiveBlobStart",
                )),
            },
        };
        if let Err(e) = result {
            d.file = None;
            d.error = Some(e);
        }
    }

    /// Whether the connection has ended.
    pub(crate) fn is_dead(&self) -> bool {
        lock(&self.table).dead.is_some()
    }

    /// Why the connection ended (or that it did).
    fn lost(&self) -> CallError {
        CallError::Lost(
            lock(&self.table)
                .dead
                .clone()
                .unwrap_or_else(|| Arc::from("connection closed")),
        )
    }

    /// Ends the connection (its task closes the socket and fails every
    /// waiter). ClientStorage does this when it can no longer trust the
    /// connection's state, e.g. after a failed `tpc_finish`.
    pub(crate) fn close(&self) {
        self.kill.notify_one();
    }

    /// Registers `waiter` under a fresh msgid and encodes the call.
    fn register(&self, req: &Request, waiter: Waiter) -> Result<Payload, CallError> {
        let msgid = {
            let mut t = lock(&self.table);
            if let Some(reason) = &t.dead {
                return Err(CallError::Lost(reason.clone()));
            }
            let id = t.next_msgid;
            t.next_msgid += 1;
            t.pending.insert(Key::Id(id), waiter);
            id
        };
        match req
            .to_message(Value::from(msgid))
            .encode_payload(self.encoding)
        {
            Ok(frame) => Ok(frame),
            Err(e) => {
                lock(&self.table).pending.remove(&Key::Id(msgid));
                Err(CallError::Raised(ZeoException::type_error(&e.to_string())))
            }
        }
    }

    fn check_alive(&self) -> Result<(), CallError> {
        match &lock(&self.table).dead {
            Some(reason) => Err(CallError::Lost(reason.clone())),
            None => Ok(()),
        }
    }

    /// Encodes an async call (no reply).
    fn encode_async(&self, req: &Request) -> Result<Payload, CallError> {
        self.check_alive()?;
        req.to_message(Value::Int(0))
            .encode_payload(self.encoding)
            .map_err(|e| CallError::Raised(ZeoException::type_error(&e.to_string())))
    }

    fn push_blocking(&self, frame: Payload) -> Result<(), CallError> {
        self.out.blocking_send(frame).map_err(|_| self.lost())
    }

    async fn push(&self, frame: Payload) -> Result<(), CallError> {
        self.out.send(frame).await.map_err(|_| self.lost())
    }

    /// Sends a synchronous call from a caller's thread.
    pub(crate) fn call_blocking(
        self: &Arc<Self>,
        req: &Request,
    ) -> Result<Pending<Reply>, CallError> {
        let (tx, rx) = oneshot::channel();
        let frame = self.register(req, Waiter::Call(tx))?;
        self.push_blocking(frame)?;
        Ok(Pending {
            rx,
            conn: self.clone(),
        })
    }

    /// Sends a synchronous call from inside the runtime.
    pub(crate) async fn call(self: &Arc<Self>, req: &Request) -> Result<Pending<Reply>, CallError> {
        let (tx, rx) = oneshot::channel();
        let frame = self.register(req, Waiter::Call(tx))?;
        self.push(frame).await?;
        Ok(Pending {
            rx,
            conn: self.clone(),
        })
    }

    /// Sends an async call (`tpc_begin`, `storea`, ...) from a caller's
    /// thread. The server answers nothing; if it rejects the call it closes
    /// the connection, which every later request of the transaction sees.
    pub(crate) fn send_async_blocking(&self, req: &Request) -> Result<(), CallError> {
        let frame = self.encode_async(req)?;
        self.push_blocking(frame)
    }

    /// Sends an async call from inside the runtime.
    pub(crate) async fn send_async(&self, req: &Request) -> Result<(), CallError> {
        let frame = self.encode_async(req)?;
        self.push(frame).await
    }

    /// `tpc_finish(txn)`, whose reply applies `commit` to the cache and the
    /// client's view before the caller sees the tid.
    pub(crate) fn finish_blocking(
        self: &Arc<Self>,
        req: &Request,
        commit: OwnCommit,
    ) -> Result<Pending<Reply>, CallError> {
        let (tx, rx) = oneshot::channel();
        let frame = self.register(req, Waiter::Finish { reply: tx, commit })?;
        self.push_blocking(frame)?;
        Ok(Pending {
            rx,
            conn: self.clone(),
        })
    }

    /// `loadBefore(oid, before)` with msgid `(oid, before)`; joins an
    /// identical load already in flight instead of sending another.
    pub(crate) fn load_blocking(
        self: &Arc<Self>,
        oid: Oid,
        before: Tid,
    ) -> Result<Pending<LoadReply>, CallError> {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            rx,
            conn: self.clone(),
        };
        let key = Key::Load(oid, before);
        {
            let mut t = lock(&self.table);
            if let Some(reason) = &t.dead {
                return Err(CallError::Lost(reason.clone()));
            }
            match t.pending.get_mut(&key) {
                Some(Waiter::Load { waiters, .. }) => {
                    waiters.push(tx);
                    return Ok(pending);
                }
                Some(_) => return Err(CallError::Shape(ShapeError)),
                None => {
                    t.pending.insert(
                        key,
                        Waiter::Load {
                            oid,
                            waiters: vec![tx],
                        },
                    );
                }
            }
        }
        let req = Request::LoadBefore { oid, before };
        let frame = req
            .to_message(Request::load_before_msgid(oid, before))
            .encode_payload(self.encoding)
            .map_err(|e| CallError::Raised(ZeoException::type_error(&e.to_string())))?;
        self.push_blocking(frame)?;
        Ok(pending)
    }

    /// Marks the connection dead and fails every waiter with `reason`.
    fn fail_all(&self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        let pending = {
            let mut t = lock(&self.table);
            if t.dead.is_none() {
                t.dead = Some(reason.clone());
            }
            std::mem::take(&mut t.pending)
        };
        for (_, w) in pending {
            let err = || CallError::Lost(reason.clone());
            match w {
                Waiter::Call(tx) | Waiter::Finish { reply: tx, .. } => {
                    let _ = tx.send(Err(err()));
                }
                Waiter::Load { waiters, .. } => {
                    for tx in waiters {
                        let _ = tx.send(Err(err()));
                    }
                }
            }
        }
    }

    /// Applies one message from the server.
    fn dispatch(&self, shared: &Shared, msg: ServerMessage) {
        let (msgid, result) = match msg {
            ServerMessage::Reply { msgid, result } => (msgid, Ok(result)),
            ServerMessage::Error { msgid, exception } => (msgid, Err(CallError::Raised(exception))),
            ServerMessage::Call(call) => return self.server_call(shared, call),
        };
        let Some(key) = Key::from_value(&msgid) else {
            tracing::warn!(?msgid, "reply with a msgid this client never uses; ignored");
            return;
        };
        let Some(waiter) = lock(&self.table).pending.remove(&key) else {
            tracing::warn!(?msgid, "reply to no pending request; ignored");
            return;
        };
        match waiter {
            Waiter::Call(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Load { oid, waiters } => {
                let loaded =
                    result.and_then(|v| LoadedRevision::from_value(&v).map_err(CallError::Shape));
                if let Ok(Some(rev)) = &loaded {
                    shared.cache_loaded(self.generation, oid, rev);
                }
                for tx in waiters {
                    let _ = tx.send(loaded.clone());
                }
            }
            Waiter::Finish { reply, commit } => {
                if let Ok(v) = &result {
                    match v.as_tid() {
                        Some(tid) => shared.apply_own_commit(self.generation, tid, commit),
                        None => {
                            let _ = reply.send(Err(CallError::Shape(ShapeError)));
                            return;
                        }
                    }
                }
                let _ = reply.send(result);
            }
        }
    }

    fn server_call(&self, shared: &Shared, call: ClientCall) {
        match call {
            ClientCall::InvalidateTransaction { tid, oids } => {
                shared.invalidate(self.generation, tid, oids);
            }
            ClientCall::Info { length, size } => shared.update_size(length, size),
            ClientCall::ReceiveBlobStart { oid, serial } => {
                self.receive_blob(oid, serial, BlobPart::Start);
            }
            ClientCall::ReceiveBlobChunk { oid, serial, chunk } => {
                self.receive_blob(oid, serial, BlobPart::Chunk(chunk));
            }
            ClientCall::ReceiveBlobStop { oid, serial } => {
                self.receive_blob(oid, serial, BlobPart::Stop);
            }
        }
    }
}

/// One of the `receiveBlob*` calls.
enum BlobPart {
    Start,
    Chunk(Bytes),
    Stop,
}

/// The two halves of a connected stream, framed.
pub(crate) struct Framed<R, W> {
    pub(crate) reader: FramedRead<R, FrameCodec>,
    pub(crate) writer: FramedWrite<W, FrameCodec>,
}

/// Starts the tasks of a connection whose handshake is done: returns the
/// connection and the task, which ends (with the reason) when the
/// connection does.
pub(crate) fn start<R, W>(
    shared: Arc<Shared>,
    generation: u64,
    encoding: Encoding,
    framed: Framed<R, W>,
) -> (Arc<Conn>, tokio::task::JoinHandle<String>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
    let conn = Arc::new(Conn::new(generation, encoding, tx));
    let task_conn = conn.clone();
    let task = tokio::spawn(async move {
        let heartbeat = Message::heartbeat()
            .encode(encoding)
            .unwrap_or_else(|_| Bytes::new());
        let reason = tokio::select! {
            r = read_loop(&shared, &task_conn, framed.reader) => r,
            r = write_loop(framed.writer, rx, heartbeat) => r,
            () = task_conn.kill.notified() => "connection closed by the client".to_owned(),
        };
        task_conn.fail_all(&reason);
        reason
    });
    (conn, task)
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    conn: &Conn,
    mut reader: FramedRead<R, FrameCodec>,
) -> String {
    loop {
        let frame = match reader.next().await {
            None => return "connection closed by the server".to_owned(),
            Some(Err(e)) => return format!("reading from the server: {e}"),
            Some(Ok(frame)) => frame,
        };
        match ServerMessage::decode(conn.encoding, &frame) {
            Ok(msg) => conn.dispatch(shared, msg),
            Err(ServerMessageError::UnknownClientMethod { method }) => {
                // Python's client raises AttributeError in its handler, logs
                // it and carries on.
                tracing::warn!(method, "server called an unknown client method; ignored");
            }
            Err(e) => {
                return format!("undecodable message from the server: {e}");
            }
        }
    }
}

/// Queues one frame; a payload with large shared parts (a data record of
/// a `storea`) is written at once, after what is queued, from its parts.
async fn put<W: AsyncWrite + Unpin>(
    writer: &mut FramedWrite<W, FrameCodec>,
    frame: Payload,
) -> Result<(), crate::frame::FrameError> {
    if frame.parts().len() <= 1 {
        return writer.feed(frame.into_bytes()).await;
    }
    SinkExt::<Bytes>::flush(writer).await?;
    let max = writer.encoder().max_frame_length();
    crate::frame::write_frame_parts(writer.get_mut(), frame.parts(), max).await
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FramedWrite<W, FrameCodec>,
    mut rx: mpsc::Receiver<Payload>,
    heartbeat: Bytes,
) -> String {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        let written = tokio::select! {
            frame = rx.recv() => match frame {
                // The connection object is gone: nobody can send any more.
                None => return "connection dropped".to_owned(),
                Some(frame) => async {
                    put(&mut writer, frame).await?;
                    // Batch whatever else is queued into the same write.
                    while let Ok(more) = rx.try_recv() {
                        put(&mut writer, more).await?;
                    }
                    SinkExt::<Bytes>::flush(&mut writer).await
                }.await,
            },
            _ = tick.tick() => writer.send(heartbeat.clone()).await,
        };
        if let Err(e) = written {
            return format!("writing to the server: {e}");
        }
    }
}
