//! A minimal ZEO client: one call at a time, speaking exactly what
//! `ClientStorage` sends (same messages, same msgids for `loadBefore`).
//!
//! It is what the server's tests and `zodbrs bench zeo` drive servers
//! with; it has no cache, no reconnection and no threads. Async calls the
//! server makes (`invalidateTransaction`, `info`, blob transfers) are kept
//! in arrival order for the caller to inspect.

use std::collections::VecDeque;

use tokio::io::{AsyncRead, AsyncWrite};
use zodb_core::{Oid, Tid};

use crate::connection::{Connection, ConnectionError};
use crate::encoding::GlobalPolicy;
use crate::exception::ZeoException;
use crate::frame::DEFAULT_MAX_FRAME_LENGTH;
use crate::handshake::Protocol;
use crate::reply::{ClientCall, LoadedRevision, ServerMessage, ServerMessageError, ShapeError};
use crate::request::{Request, TxnId};
use crate::value::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection failed or closed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The server sent something this client cannot understand.
    #[error(transparent)]
    Message(#[from] ServerMessageError),
    /// The server replied with an exception.
    #[error("server raised {}: {:?}", .0.class_path(), .0.state())]
    Raised(ZeoException),
    /// A reply of the wrong shape.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
}

/// A connected ZEO client.
#[derive(Debug)]
pub struct Client<T> {
    conn: Connection<T>,
    protocol: Protocol,
    next_msgid: i64,
    /// Server calls received, oldest first.
    pub calls: VecDeque<ClientCall>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Client<T> {
    /// Handshakes over an open stream.
    pub async fn handshake(io: T) -> Result<Client<T>, ClientError> {
        let mut conn = Connection::new(io, DEFAULT_MAX_FRAME_LENGTH);
        let protocol = conn.client_handshake().await?;
        Ok(Client {
            conn,
            protocol,
            next_msgid: 1,
            calls: VecDeque::new(),
        })
    }

    /// The stream and the bytes read from it but not yet taken as frames,
    /// for a caller that goes on with the connection itself (a load
    /// generator that reads replies in place).
    pub async fn into_parts(self) -> Result<(T, bytes::BytesMut), ClientError> {
        Ok(self
            .conn
            .into_parts()
            .await
            .map_err(ConnectionError::from)?)
    }

    /// The negotiated protocol.
    pub fn protocol(&self) -> &Protocol {
        &self.protocol
    }

    /// Sends a request without waiting; returns the msgid used (0 for
    /// async methods).
    pub async fn send(&mut self, req: &Request) -> Result<Value, ClientError> {
        let msgid = match req {
            Request::LoadBefore { oid, before } => Request::load_before_msgid(*oid, *before),
            _ if req.method().is_async() => Value::Int(0),
            _ => {
                let id = self.next_msgid;
                self.next_msgid += 1;
                Value::from(id)
            }
        };
        self.conn
            .write_message(&req.to_message(msgid.clone()), self.protocol.encoding)
            .await?;
        Ok(msgid)
    }

    /// Reads messages until the reply to `msgid`, keeping server calls.
    pub async fn reply_to(&mut self, msgid: &Value) -> Result<Value, ClientError> {
        loop {
            match self.read().await? {
                ServerMessage::Reply { msgid: m, result } if m.py_eq(msgid) => return Ok(result),
                ServerMessage::Error {
                    msgid: m,
                    exception,
                } if m.py_eq(msgid) => {
                    return Err(ClientError::Raised(exception));
                }
                ServerMessage::Call(c) => self.calls.push_back(c),
                // A reply to something else (a previous call's late reply).
                _ => {}
            }
        }
    }

    /// Reads the next message from the server.
    pub async fn read(&mut self) -> Result<ServerMessage, ClientError> {
        let msg = self
            .conn
            .read_message(self.protocol.encoding, GlobalPolicy::FromServer)
            .await?
            .ok_or(ClientError::Closed)?;
        Ok(ServerMessage::from_message(msg)?)
    }

    /// A synchronous call: send, then wait for its reply.
    pub async fn call(&mut self, req: &Request) -> Result<Value, ClientError> {
        let msgid = self.send(req).await?;
        self.reply_to(&msgid).await
    }

    /// `register(storage, read_only)`: the storage's last tid.
    pub async fn register(&mut self, storage: &str, read_only: bool) -> Result<Tid, ClientError> {
        let v = self
            .call(&Request::Register {
                storage: storage.to_owned(),
                read_only,
            })
            .await?;
        v.as_tid().ok_or(ClientError::Shape(ShapeError))
    }

    /// `loadBefore(oid, before)`.
    pub async fn load_before(
        &mut self,
        oid: Oid,
        before: Tid,
    ) -> Result<Option<LoadedRevision>, ClientError> {
        let v = self.call(&Request::LoadBefore { oid, before }).await?;
        Ok(LoadedRevision::from_value(&v)?)
    }

    /// One transaction storing `stores` (oid, serial read, data): the tid,
    /// or the vote's conflicts as the server returned them.
    pub async fn commit(
        &mut self,
        txn: i64,
        stores: &[(Oid, Tid, bytes::Bytes)],
    ) -> Result<CommitResult, ClientError> {
        let txn = TxnId(txn);
        self.send(&Request::TpcBegin {
            txn,
            user: bytes::Bytes::new(),
            description: bytes::Bytes::new(),
            extension: Value::Dict(Vec::new()),
            tid: None,
            status: zodb_core::TxnStatus::Committed,
        })
        .await?;
        for (oid, serial, data) in stores {
            self.send(&Request::Storea {
                oid: *oid,
                serial: *serial,
                data: data.clone(),
                txn,
            })
            .await?;
        }
        let voted = match self.call(&Request::Vote { txn }).await {
            Ok(v) => v,
            Err(e) => {
                self.call(&Request::TpcAbort { txn }).await?;
                return Err(e);
            }
        };
        let items = crate::reply::VoteItem::list_from_value(&voted).ok_or(ShapeError)?;
        if items
            .iter()
            .any(|i| matches!(i, crate::reply::VoteItem::Conflict { .. }))
        {
            self.call(&Request::TpcAbort { txn }).await?;
            return Ok(CommitResult::Conflicts(items));
        }
        let tid = self.call(&Request::TpcFinish { txn }).await?;
        Ok(CommitResult::Committed(
            tid.as_tid().ok_or(ClientError::Shape(ShapeError))?,
        ))
    }
}

/// What [`Client::commit`] ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// Committed with this tid.
    Committed(Tid),
    /// The vote returned conflicts for the client to resolve (the
    /// transaction was aborted).
    Conflicts(Vec<crate::reply::VoteItem>),
}
