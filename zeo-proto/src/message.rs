//! The envelope every RPC frame carries: `(msgid, flags, name, args)` (ZEO:
//! `asyncio/base.py`; spec zeo.md §3).
//!
//! | | msgid | flags | name | args |
//! |---|---|---|---|---|
//! | client call | int ≥ 1, or `(oid, tid)` for loadBefore | `False` | method | tuple |
//! | client async call | 0 | `True` | method | tuple |
//! | heartbeat | -1 | 0 | `.reply` | None |
//! | server reply | the request's, echoed | 0 | `.reply` | the result |
//! | server error reply | echoed | 2 | `.reply` | `(class path, state)` |
//! | server async call | 0 | `True` | client method | tuple |
//!
//! [`Message`] keeps msgid and flags as the values that were sent, because
//! a reply must echo the msgid whatever it is and because Python spells
//! flags differently per direction (bools from clients, ints from
//! servers). The typed layers ([`crate::request`], [`crate::reply`]) give
//! them meaning.

use bytes::Bytes;

use crate::encoding::{DecodeError, EncodeError, Encoding, GlobalPolicy, Payload};
use crate::value::Value;

/// The method name of replies (and of the heartbeat).
pub const REPLY: &str = ".reply";

/// Reply flag: a result.
pub const FLAG_RESULT: i128 = 0;
/// Reply flag: an exception (ZEO 5 form). Clients treat any true flag on a
/// `.reply` as an exception.
pub const FLAG_EXCEPTION: i128 = 2;

/// One decoded RPC frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Echoed verbatim in the reply; `-1` marks a heartbeat, `0` an async call.
    pub msgid: Value,
    /// A bool (calls) or an int (replies); truthy means async for a call
    /// and exception for a reply.
    pub flags: Value,
    /// Method name, or `.reply`.
    pub method: String,
    /// The argument tuple of a call, or the result of a reply.
    pub args: Value,
}

/// A frame that is not a ZEO message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The payload does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// It decodes, but not to a 4-item tuple (Python's unpacking fails).
    #[error("message is a {0}, not a (msgid, flags, name, args) tuple")]
    NotAMessage(&'static str),
    /// The name is not text.
    #[error("method name is a {0}, not a str")]
    BadName(&'static str),
}

impl Message {
    /// A synchronous client call `(msgid, False, method, args)`.
    pub fn call(msgid: impl Into<Value>, method: &str, args: Vec<Value>) -> Message {
        Message {
            msgid: msgid.into(),
            flags: Value::Bool(false),
            method: method.to_owned(),
            args: Value::Tuple(args),
        }
    }

    /// An async call `(0, True, method, args)`, either direction.
    pub fn async_call(method: &str, args: Vec<Value>) -> Message {
        Message {
            msgid: Value::Int(0),
            flags: Value::Bool(true),
            method: method.to_owned(),
            args: Value::Tuple(args),
        }
    }

    /// The client's keep-alive `(-1, 0, '.reply', None)`.
    pub fn heartbeat() -> Message {
        Message {
            msgid: Value::Int(-1),
            flags: Value::Int(0),
            method: REPLY.to_owned(),
            args: Value::None,
        }
    }

    /// A result reply `(msgid, 0, '.reply', result)`.
    pub fn reply(msgid: Value, result: Value) -> Message {
        Message {
            msgid,
            flags: Value::Int(FLAG_RESULT),
            method: REPLY.to_owned(),
            args: result,
        }
    }

    /// An exception reply `(msgid, 2, '.reply', (class_path, state))`.
    pub fn error_reply(msgid: Value, class_path: &str, state: Value) -> Message {
        Message {
            msgid,
            flags: Value::Int(FLAG_EXCEPTION),
            method: REPLY.to_owned(),
            args: Value::Tuple(vec![Value::str(class_path), state]),
        }
    }

    /// Whether this is a heartbeat (msgid -1), which is ignored whatever
    /// else it says.
    pub fn is_heartbeat(&self) -> bool {
        self.msgid.py_eq(&Value::Int(-1))
    }

    /// Whether the flags are true: an async call, or an exception reply.
    pub fn flag_set(&self) -> bool {
        self.flags.truthy()
    }

    /// Whether this is a reply (or heartbeat) rather than a call.
    pub fn is_reply(&self) -> bool {
        self.method == REPLY
    }

    /// The message as a value: the 4-tuple.
    pub fn to_value(&self) -> Value {
        Value::Tuple(vec![
            self.msgid.clone(),
            self.flags.clone(),
            Value::Str(self.method.clone()),
            self.args.clone(),
        ])
    }

    /// Interprets a decoded value as a message.
    pub fn from_value(value: Value) -> Result<Message, MessageError> {
        let type_name = value.type_name();
        let items = match value {
            Value::Tuple(items) | Value::List(items) => items,
            _ => return Err(MessageError::NotAMessage(type_name)),
        };
        let [msgid, flags, method, args]: [Value; 4] = items
            .try_into()
            .map_err(|_| MessageError::NotAMessage("sequence of another length"))?;
        let method = method
            .as_text()
            .ok_or(MessageError::BadName(method.type_name()))?
            .to_owned();
        Ok(Message {
            msgid,
            flags,
            method,
            args,
        })
    }

    /// Encodes the message as one frame payload.
    pub fn encode(&self, encoding: Encoding) -> Result<Bytes, EncodeError> {
        encoding.encode(&self.to_value())
    }

    /// Encodes as [`Message::encode`] does, large byte strings shared
    /// rather than copied (see [`Encoding::encode_payload`]).
    pub fn encode_payload(&self, encoding: Encoding) -> Result<Payload, EncodeError> {
        encoding.encode_message(&self.msgid, &self.flags, &self.method, &self.args)
    }

    /// Decodes one frame payload sent by the peer `policy` names.
    pub fn decode(
        encoding: Encoding,
        data: &Bytes,
        policy: GlobalPolicy,
    ) -> Result<Message, MessageError> {
        Message::from_value(encoding.decode(data, policy)?)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i128::from(i))
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

    #[test]
    fn heartbeat_bytes_as_captured() {
        let hb = Message::heartbeat();
        assert_eq!(
            &hb.encode(Encoding::Pickle).unwrap()[..],
            b"\x80\x03(J\xff\xff\xff\xffK\x00X\x06\x00\x00\x00.replyNt."
        );
        assert_eq!(
            &hb.encode(Encoding::Msgpack).unwrap()[..],
            b"\x94\xff\x00\xa6.reply\xc0"
        );
        assert!(hb.is_heartbeat());
    }

    #[test]
    fn non_messages_are_typed_errors() {
        for (v, want) in [
            (Value::None, MessageError::NotAMessage("NoneType")),
            (
                Value::Tuple(vec![Value::Int(1)]),
                MessageError::NotAMessage("sequence of another length"),
            ),
            (
                Value::Tuple(vec![
                    Value::Int(1),
                    Value::Bool(false),
                    Value::Int(3),
                    Value::None,
                ]),
                MessageError::BadName("int"),
            ),
        ] {
            assert_eq!(Message::from_value(v), Err(want));
        }
    }
}
