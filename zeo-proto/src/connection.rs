//! A framed connection with a bounded outbound queue (mini-redis's
//! `Connection`, plus the queue the ZEO server needs).
//!
//! A ZEO server connection has two sources of output: replies to this
//! client's requests and async calls caused by *other* connections
//! (`invalidateTransaction` after their commits, `info` after a pack). Both
//! must leave in the order they were produced, replies computed before an
//! invalidation must be written before it (spec zeo.md §6, ordering rules),
//! and a slow client must not make the server buffer without bound. So
//! everything outbound goes through one bounded [`Outbox`] per connection:
//! producers wait (or, for broadcasts, see [`Outbox::try_send`] fail and
//! can drop the client) when it is full, and the connection's task is the
//! only writer of the socket.
//!
//! The server's per-connection task then looks like:
//!
//! ```no_run
//! # use zeo_proto::connection::{Connection, Event, outbox};
//! # use zeo_proto::encoding::Encoding;
//! # async fn serve(io: tokio::io::DuplexStream, mut shutdown: tokio::sync::broadcast::Receiver<()>)
//! #     -> Result<(), zeo_proto::connection::ConnectionError> {
//! let mut conn = Connection::new(io, 64 << 20);
//! let (outbox, mut queue) = outbox(128);
//! // hand `outbox` clones to the storage's invalidation fan-out ...
//! let hello = conn.server_handshake(Encoding::Pickle).await?;
//! loop {
//!     match conn.next_event(&mut queue, shutdown.recv()).await? {
//!         Event::Frame(frame) => { /* Incoming::decode, dispatch, outbox.send(reply) */ }
//!         Event::Closed | Event::Shutdown => break,
//!     }
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::pin;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::encoding::{EncodeError, Encoding, GlobalPolicy};
use crate::frame::{FrameCodec, FrameError};
use crate::handshake::{self, ClientHello, HandshakeError, Protocol};
use crate::message::{Message, MessageError};

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Framing or I/O.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A bad first frame.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A message that does not decode.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A message that cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The peer closed before the handshake finished.
    #[error("connection closed during the handshake")]
    ClosedInHandshake,
}

/// What [`Connection::next_event`] returns.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A frame from the peer.
    Frame(Bytes),
    /// The peer closed the stream cleanly (between frames).
    Closed,
    /// The shutdown future completed.
    Shutdown,
}

/// Sender side of a connection's bounded outbound queue; clone it for every
/// producer (the request handler, the invalidation fan-out).
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
}

/// Receiver side, owned by the connection's task.
#[derive(Debug)]
pub struct OutboxQueue {
    rx: mpsc::Receiver<Bytes>,
}

/// A bounded outbound queue holding at most `capacity` encoded frames.
pub fn outbox(capacity: usize) -> (Outbox, OutboxQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Outbox { tx }, OutboxQueue { rx })
}

/// The connection's task is gone (closed or closing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection closed")]
pub struct OutboxClosed;

/// Why [`Outbox::try_send`] did not queue the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// The queue is full: the client is not reading.
    #[error("outbound queue full")]
    Full,
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
}

impl Outbox {
    /// Queues an encoded frame payload, waiting while the queue is full.
    pub async fn send(&self, payload: Bytes) -> Result<(), OutboxClosed> {
        self.tx.send(payload).await.map_err(|_| OutboxClosed)
    }

    /// Encodes and queues a message.
    pub async fn send_message(
        &self,
        msg: &Message,
        encoding: Encoding,
    ) -> Result<(), ConnectionError> {
        let payload = msg.encode(encoding)?;
        // A closed queue means the task ended; nothing is left to tell.
        let _ = self.send(payload).await;
        Ok(())
    }

    /// Queues without waiting: for broadcasts, where one slow client must
    /// not hold up a commit (the caller decides whether to drop it).
    pub fn try_send(&self, payload: Bytes) -> Result<(), TrySendError> {
        self.tx.try_send(payload).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TrySendError::Full,
            mpsc::error::TrySendError::Closed(_) => TrySendError::Closed,
        })
    }

    /// Whether the connection's task has dropped its queue.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A stream framed with [`FrameCodec`].
#[derive(Debug)]
pub struct Connection<T> {
    framed: Framed<T, FrameCodec>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// Frames `io`, refusing frames above `max_frame_length` bytes.
    pub fn new(io: T, max_frame_length: usize) -> Connection<T> {
        Connection {
            framed: Framed::new(io, FrameCodec::new(max_frame_length)),
        }
    }

    /// The next frame; `None` when the peer closed between frames. Cancel
    /// safe: a partly received frame stays buffered.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.framed.next().await.transpose()
    }

    /// Writes one frame and flushes.
    pub async fn write_frame(&mut self, payload: Bytes) -> Result<(), FrameError> {
        self.framed.send(payload).await
    }

    /// Reads and decodes one message.
    pub async fn read_message(
        &mut self,
        encoding: Encoding,
        policy: GlobalPolicy,
    ) -> Result<Option<Message>, ConnectionError> {
        match self.read_frame().await? {
            Some(frame) => Ok(Some(Message::decode(encoding, &frame, policy)?)),
            None => Ok(None),
        }
    }

    /// Encodes and writes one message.
    pub async fn write_message(
        &mut self,
        msg: &Message,
        encoding: Encoding,
    ) -> Result<(), ConnectionError> {
        let payload = msg.encode(encoding)?;
        self.write_frame(payload).await?;
        Ok(())
    }

    /// Server side of the handshake: announce `Z5`/`M5`, read the answer.
    /// On [`ClientHello::Ruok`] the caller writes the JSON status with
    /// [`Connection::write_frame`] and drops the connection.
    pub async fn server_handshake(
        &mut self,
        encoding: Encoding,
    ) -> Result<ClientHello, ConnectionError> {
        self.write_frame(handshake::server_announcement(encoding))
            .await?;
        let hello = self
            .read_frame()
            .await?
            .ok_or(ConnectionError::ClosedInHandshake)?;
        Ok(handshake::parse_client_hello(&hello)?)
    }

    /// Client side: read the announcement, answer with the protocol a ZEO
    /// 5/6 client would choose.
    pub async fn client_handshake(&mut self) -> Result<Protocol, ConnectionError> {
        let announcement = self
            .read_frame()
            .await?
            .ok_or(ConnectionError::ClosedInHandshake)?;
        let protocol = handshake::client_answer(&announcement, handshake::CLIENT_VERSIONS)?;
        self.write_frame(protocol.to_bytes()).await?;
        Ok(protocol)
    }

    /// Waits for the next inbound frame while writing whatever the outbox
    /// holds, in queue order, until a frame arrives, the peer closes, or
    /// `shutdown` completes. Outbound frames are written as they come (one
    /// flush each), so replies and invalidations are never held back by a
    /// client that sends nothing.
    pub async fn next_event<F: Future>(
        &mut self,
        queue: &mut OutboxQueue,
        shutdown: F,
    ) -> Result<Event, ConnectionError> {
        let mut shutdown = pin!(shutdown);
        let mut queue_open = true;
        loop {
            tokio::select! {
                // Drain output first so a chatty client cannot starve it.
                biased;
                out = queue.rx.recv(), if queue_open => match out {
                    Some(payload) => self.write_frame(payload).await?,
                    // Every Outbox dropped: nothing more will be queued.
                    None => queue_open = false,
                },
                frame = self.framed.next() => {
                    return match frame.transpose()? {
                        Some(frame) => Ok(Event::Frame(frame)),
                        None => Ok(Event::Closed),
                    };
                }
                _ = &mut shutdown => return Ok(Event::Shutdown),
            }
        }
    }

    /// Writes everything already queued (e.g. before closing on shutdown).
    pub async fn flush_queue(&mut self, queue: &mut OutboxQueue) -> Result<(), ConnectionError> {
        while let Ok(payload) = queue.rx.try_recv() {
            self.write_frame(payload).await?;
        }
        Ok(())
    }

    /// The underlying stream.
    pub fn into_inner(self) -> T {
        self.framed.into_inner()
    }

    /// The underlying stream and what was read from it but not yet taken
    /// as frames, for a caller that goes on reading frames itself.
    /// Anything written is flushed first.
    pub async fn into_parts(mut self) -> Result<(T, BytesMut), FrameError> {
        SinkExt::<Bytes>::flush(&mut self.framed).await?;
        let parts = self.framed.into_parts();
        Ok((parts.io, parts.read_buf))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;
    use crate::frame::frame_bytes;
    use crate::request::{Call, Incoming, Request};
    use crate::value::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn handshake_then_pipelined_calls_and_ordered_output() {
        let (a, b) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            let mut conn = Connection::new(a, 1 << 20);
            let hello = conn.server_handshake(Encoding::Msgpack).await.unwrap();
            assert_eq!(
                hello,
                ClientHello::Protocol(Protocol::v5(Encoding::Msgpack))
            );
            let (outbox, mut queue) = outbox(2);
            // An invalidation from "another connection" queued first.
            let inval = Message::async_call(
                "invalidateTransaction",
                vec![Value::tid(zodb_core::Tid(9)), Value::List(vec![])],
            );
            outbox
                .send_message(&inval, Encoding::Msgpack)
                .await
                .unwrap();
            let mut served = 0;
            loop {
                match conn
                    .next_event(&mut queue, std::future::pending::<()>())
                    .await
                    .unwrap()
                {
                    Event::Frame(f) => {
                        let Incoming::Call(Call { msgid, request, .. }) =
                            Incoming::decode(Encoding::Msgpack, &f).unwrap()
                        else {
                            panic!()
                        };
                        assert_eq!(request, Request::Ping);
                        let reply = Message::reply(msgid, Value::None);
                        outbox
                            .send_message(&reply, Encoding::Msgpack)
                            .await
                            .unwrap();
                        served += 1;
                    }
                    Event::Closed => break,
                    Event::Shutdown => unreachable!(),
                }
            }
            served
        });
        let mut client = Connection::new(b, 1 << 20);
        let p = client.client_handshake().await.unwrap();
        assert_eq!(p, Protocol::v5(Encoding::Msgpack));
        for id in 1..=5i64 {
            client
                .write_message(&Request::Ping.to_message(Value::from(id)), p.encoding)
                .await
                .unwrap();
        }
        let first = client
            .read_message(p.encoding, GlobalPolicy::FromServer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.method, "invalidateTransaction");
        for id in 1..=5i64 {
            let m = client
                .read_message(p.encoding, GlobalPolicy::FromServer)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((m.is_reply(), m.msgid), (true, Value::from(id)));
        }
        drop(client);
        assert_eq!(server.await.unwrap(), 5);
    }

    #[tokio::test]
    async fn four_gib_prefix_and_truncation_are_errors() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = Connection::new(a, 1 << 20);
        b.write_all(b"\xff\xff\xff\xff").await.unwrap();
        assert!(matches!(
            conn.read_frame().await,
            Err(FrameError::TooLong { .. })
        ));

        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = Connection::new(a, 1 << 20);
        b.write_all(b"\x00\x00\x00\x10abc").await.unwrap();
        drop(b);
        assert!(matches!(
            conn.read_frame().await,
            Err(FrameError::Truncated { .. })
        ));
    }

    #[tokio::test]
    async fn ruok_and_bad_handshakes() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = Connection::new(a, 1 << 20);
        b.write_all(&frame_bytes(b"ruok").unwrap()).await.unwrap();
        assert_eq!(
            conn.server_handshake(Encoding::Pickle).await.unwrap(),
            ClientHello::Ruok
        );
        let mut announce = [0u8; 6];
        b.read_exact(&mut announce).await.unwrap();
        assert_eq!(&announce, b"\x00\x00\x00\x02Z5");

        let (a, mut b) = tokio::io::duplex(64);
        let mut conn = Connection::new(a, 1 << 20);
        b.write_all(&frame_bytes(b"Z4").unwrap()).await.unwrap();
        assert!(matches!(
            conn.server_handshake(Encoding::Pickle).await,
            Err(ConnectionError::Handshake(
                HandshakeError::UnsupportedVersion { .. }
            ))
        ));
        let (a, b) = tokio::io::duplex(64);
        drop(b);
        let mut conn = Connection::new(a, 1 << 20);
        assert!(conn.server_handshake(Encoding::Pickle).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_and_backpressure() {
        let (a, _b) = tokio::io::duplex(64);
        let mut conn = Connection::new(a, 1 << 20);
        let (outbox, mut queue) = outbox(1);
        let ev = conn.next_event(&mut queue, async {}).await.unwrap();
        assert_eq!(ev, Event::Shutdown);
        outbox.try_send(Bytes::from_static(b"x")).unwrap();
        assert_eq!(
            outbox.try_send(Bytes::from_static(b"y")),
            Err(TrySendError::Full)
        );
        drop(queue);
        assert_eq!(
            outbox.try_send(Bytes::from_static(b"z")),
            Err(TrySendError::Closed)
        );
        assert!(outbox.is_closed());
    }

    #[tokio::test]
    async fn slow_reader_blocks_producers_not_memory() {
        // The peer never reads: the socket buffer (64 bytes) fills, the
        // task blocks in write, the queue (2) fills, and senders wait.
        let (a, _b) = tokio::io::duplex(64);
        let mut conn = Connection::new(a, 1 << 20);
        let (outbox, mut queue) = outbox(2);
        let task = tokio::spawn(async move {
            let _ = conn
                .next_event(&mut queue, std::future::pending::<()>())
                .await;
        });
        let big = Bytes::from(vec![0u8; 1000]);
        for _ in 0..3 {
            outbox.send(big.clone()).await.unwrap();
        }
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(100), async {
            for _ in 0..3 {
                outbox.send(big.clone()).await.unwrap();
            }
        })
        .await;
        assert!(blocked.is_err(), "the bounded queue must push back");
        task.abort();
    }
}
