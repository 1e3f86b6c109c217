//! The ZEO 5/6 wire protocol, shared by the zodbrs ZEO server and client.
//!
//! Unmodified Python `ZEO.ClientStorage` clients and `runzeo` servers are
//! the peers, so every byte follows ZEO 6.2 (normative notes:
//! `shared/spec/zeo.md`; golden transcripts captured from ZEO 6.2 under
//! `tests/transcripts/`). The layers, bottom up, as in mini-redis and
//! NEO's Go `zrpc`:
//!
//! - [`frame`]: 4-byte big-endian length framing as a `tokio_util` codec
//!   with an explicit maximum (a 4 GiB prefix is refused before anything is
//!   allocated).
//! - [`handshake`]: `Z5`/`M5` announcement, the client's byte-string `min`,
//!   `ruok`.
//! - [`encoding`]: one frame ⇄ one [`value::Value`], as pickle protocol 3
//!   (`Z`) or msgpack (`M`), byte-exact with ZEO's marshal; pickles may only
//!   name an allowlist of globals.
//! - [`message`]: the `(msgid, flags, name, args)` envelope.
//! - [`request`]: client calls as a typed [`request::Request`], checked once
//!   (method, arity, types) with typed errors that carry the msgid.
//! - [`reply`] and [`exception`]: replies, typed results, the server's async
//!   calls, and exceptions in the exact form ZEO clients unpack.
//! - [`connection`]: a framed stream with a bounded outbound queue, the
//!   unit a server task per connection selects over.
//!
//! Format modules (`frame`, `handshake`, `encoding`, `message`, `request`,
//! `reply`, `exception`) are pure: bytes in, values out, no I/O. Input from
//! the network is never trusted: the crate denies indexing and `unwrap`,
//! and decoders are bounded in depth and work.
//!
//! ```
//! use bytes::Bytes;
//! use zeo_proto::encoding::Encoding;
//! use zeo_proto::exception::ZeoException;
//! use zeo_proto::reply::ServerMessage;
//! use zeo_proto::request::{Call, Incoming, Request};
//! use zodb_core::{Oid, Tid};
//!
//! // What ClientStorage sends for a load: msgid (oid, tid), flags False.
//! let frame = Bytes::from_static(
//!     b"\x80\x03(C\x08\x00\x00\x00\x00\x00\x00\x00\x00C\x08\x00\x00\x00\x00\x00\x00\x00\x01\x86\
//!       \x89X\n\x00\x00\x00loadBeforeC\x08\x00\x00\x00\x00\x00\x00\x00\x00\
//!       C\x08\x00\x00\x00\x00\x00\x00\x00\x01\x86t.",
//! );
//! let Incoming::Call(Call { msgid, is_async, request }) = Incoming::decode(Encoding::Pickle, &frame)? else {
//!     unreachable!("not a heartbeat")
//! };
//! assert!(!is_async);
//! assert_eq!(request, Request::LoadBefore { oid: Oid(0), before: Tid(1) });
//!
//! // On an empty database the server answers POSKeyError(oid), echoing the
//! // tuple msgid; these are the bytes Python's server writes (captured).
//! let reply = ServerMessage::Error { msgid, exception: ZeoException::pos_key(Oid(0)) };
//! assert_eq!(
//!     &reply.encode(Encoding::Pickle)?[..],
//!     &b"\x80\x03(C\x08\x00\x00\x00\x00\x00\x00\x00\x00C\x08\x00\x00\x00\x00\x00\x00\x00\x01\x86\
//!        K\x02X\x06\x00\x00\x00.replyX\x1d\x00\x00\x00ZODB.POSException.POSKeyError\
//!        C\x08\x00\x00\x00\x00\x00\x00\x00\x00\x85\x86t."[..]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

pub mod client;
#[cfg(feature = "client")]
pub mod client_storage;
pub mod connection;
pub mod encoding;
pub mod exception;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod reply;
pub mod request;
#[cfg(feature = "server")]
pub mod server;
pub mod value;
