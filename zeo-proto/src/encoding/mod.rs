//! The two encodings of a ZEO message body: pickle (`Z`) and msgpack (`M`).
//!
//! Both turn one frame payload into one [`Value`] and back, exactly as
//! ZEO's `asyncio/marshal.py` does: the pickle side writes what zodbpickle's
//! `Pickler(f, 3)` with `fast = 1` writes (protocol 3, no memo), the
//! msgpack side what `packb(..., use_bin_type=True)` writes; decoding
//! follows `Unpickler.load()` (trailing bytes after STOP ignored) and
//! `unpackb(raw=False, use_list=False)` (arrays become tuples, trailing
//! bytes are an error).
//!
//! Pickles can name Python globals, and unpickling one in Python imports
//! and may call it. Nothing is ever imported or called here, but a peer
//! that names a global outside [`GlobalPolicy`] is refused with
//! [`DecodeError::ForbiddenGlobal`] all the same: such a message has no
//! meaning in ZEO and Python's server closes the connection on it too.

mod fast_pickle;
pub mod load_before;
pub mod msgpack;
pub mod pickle;

use bytes::{BufMut, Bytes, BytesMut};

use crate::value::Value;

/// How messages after the handshake are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `Z`: pickle protocol 3 (the default).
    Pickle,
    /// `M`: msgpack (server option `msgpack true`).
    Msgpack,
}

impl Encoding {
    /// The handshake letter.
    pub fn letter(self) -> u8 {
        match self {
            Encoding::Pickle => b'Z',
            Encoding::Msgpack => b'M',
        }
    }

    /// The encoding a handshake letter names.
    pub fn from_letter(letter: u8) -> Option<Encoding> {
        match letter {
            b'Z' => Some(Encoding::Pickle),
            b'M' => Some(Encoding::Msgpack),
            _ => None,
        }
    }

    /// Encodes a value as ZEO's encoder for this format would.
    pub fn encode(self, value: &Value) -> Result<Bytes, EncodeError> {
        self.encode_payload(value).map(Payload::into_bytes)
    }

    /// Encodes a value as [`Encoding::encode`] does, but shares byte
    /// strings of [`SHARE_MIN`] bytes or more instead of copying them: a
    /// 2 MiB data record goes from the storage to the socket without
    /// another copy in between.
    pub fn encode_payload(self, value: &Value) -> Result<Payload, EncodeError> {
        let mut out = PayloadWriter::default();
        match self {
            Encoding::Pickle => pickle::save_message(&mut out, value)?,
            Encoding::Msgpack => msgpack::write_message(&mut out, value)?,
        }
        Ok(out.finish())
    }

    /// Encodes the message tuple `(msgid, flags, method, args)` from its
    /// parts, as [`Encoding::encode_payload`] encodes that tuple, without
    /// building (and cloning into) it.
    pub fn encode_message(
        self,
        msgid: &Value,
        flags: &Value,
        method: &str,
        args: &Value,
    ) -> Result<Payload, EncodeError> {
        let mut out = PayloadWriter::default();
        match self {
            Encoding::Pickle => pickle::save_message_tuple(&mut out, msgid, flags, method, args)?,
            Encoding::Msgpack => {
                msgpack::write_message_tuple(&mut out, msgid, flags, method, args)?
            }
        }
        Ok(out.finish())
    }

    /// Decodes a frame payload. `policy` says who sent it, which decides
    /// the globals a pickle may name (msgpack cannot name any).
    pub fn decode(self, data: &Bytes, policy: GlobalPolicy) -> Result<Value, DecodeError> {
        match self {
            Encoding::Pickle => pickle::decode(data, policy),
            Encoding::Msgpack => msgpack::decode(data),
        }
    }
}

/// Byte strings at least this long are shared by an encoded [`Payload`]
/// rather than copied into it. Below this, one contiguous buffer (and one
/// `write`) costs less than a vectored write.
pub const SHARE_MIN: usize = 64 << 10;

/// An encoded frame payload: its bytes are the concatenation of
/// [`Payload::parts`], in order. Large byte strings of the value are parts
/// of their own, shared with whoever else holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    parts: Vec<Bytes>,
    len: usize,
}

impl Payload {
    /// The pieces, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The payload as one buffer (a copy when it has several parts).
    pub fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in &self.parts {
                    out.put_slice(p);
                }
                out.freeze()
            }
        }
    }
}

/// Where the encoders write: a growing buffer, cut into a new part
/// wherever a large byte string is shared.
#[derive(Debug)]
pub(crate) struct PayloadWriter {
    buf: BytesMut,
    parts: Vec<Bytes>,
    len: usize,
}

impl Default for PayloadWriter {
    /// Room for a typical message (a call, a small record's reply) without
    /// growing.
    fn default() -> PayloadWriter {
        PayloadWriter {
            buf: BytesMut::with_capacity(256),
            parts: Vec::new(),
            len: 0,
        }
    }
}

impl PayloadWriter {
    /// Appends `b`: shared when large, copied otherwise.
    pub(crate) fn put_bytes(&mut self, b: &Bytes) {
        if b.len() >= SHARE_MIN {
            self.cut();
            self.len += b.len();
            self.parts.push(b.clone());
        } else {
            self.buf.put_slice(b);
        }
    }

    fn cut(&mut self) {
        if !self.buf.is_empty() {
            let head = self.buf.split().freeze();
            self.len += head.len();
            self.parts.push(head);
        }
    }

    /// The payload as one buffer.
    pub(crate) fn finish_bytes(self) -> Bytes {
        self.finish().into_bytes()
    }

    fn finish(mut self) -> Payload {
        self.cut();
        Payload {
            parts: self.parts,
            len: self.len,
        }
    }
}

impl std::ops::Deref for PayloadWriter {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl std::ops::DerefMut for PayloadWriter {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

impl std::io::Write for PayloadWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.put_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which Python globals a received pickle may name, by who sent it.
///
/// The lists are what real peers send, not what Python would import.
/// Python's server accepts any global of the modules `builtins`,
/// `__builtin__`, `copy_reg`, `zodbpickle` and `ZopeUndo.Prefix` — that
/// includes `builtins.eval` — while real clients only ever need the
/// handful below; anything else is refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPolicy {
    /// A message from a client, read by a server. Allowed:
    /// - `builtins.set`/`frozenset` (and `__builtin__.*`, Python 2): what
    ///   protocol 3 writes for sets, e.g. inside a transaction extension;
    /// - `builtins.bytes()`/`__builtin__.bytes()` with no argument (empty
    ///   bytes at protocol < 3);
    /// - `builtins.dict(pairs)`, `list(items)`, `tuple(items)`: a container
    ///   subclass that reduces itself to its plain base (a transaction
    ///   extension, say);
    /// - `zodbpickle.binary(s)`: oids of Python 2 ZODB ≥ 5.4 clients
    ///   (ZEO 5.1.2 changelog);
    /// - `ZopeUndo.Prefix.Prefix` instances (NEWOBJ or Python 2's
    ///   OBJ/INST or `copy_reg._reconstructor`): Zope's `undoInfo` filter.
    FromClient,
    /// A message from a server, read by a client: the above, plus what
    /// Python's client accepts because servers send it — exception classes
    /// of `ZODB.POSException`, `ZEO.Exceptions` and `builtins`, and
    /// `ZODB.POSException._recon(cls, state)`, which is how a
    /// `MultipleUndoErrors` carries its nested `UndoError`s (captured).
    FromServer,
}

/// A frame payload that does not decode to a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The pickle itself is malformed (offset and opcode inside).
    #[error("bad pickle: {0}")]
    Pickle(#[from] zodb_core::pickle::PickleError),
    /// The msgpack data is malformed.
    #[error("bad msgpack at byte {offset}: {what}")]
    Msgpack {
        /// Offset of the failing item.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A pickle names a global the policy does not allow.
    #[error("forbidden global {module}.{name}")]
    ForbiddenGlobal {
        /// The module.
        module: String,
        /// The name in it.
        name: String,
    },
    /// An allowed global used in a way no real peer uses it.
    #[error("unexpected use of {0}")]
    BadObject(String),
    /// Valid in the format but meaningless for ZEO (a persistent id, a
    /// msgpack ext type, protocol 5 out-of-band buffers, ...).
    #[error("cannot decode: {0}")]
    Unsupported(&'static str),
    /// An int wider than 128 bits.
    #[error("integer too large")]
    IntTooLarge,
    /// Text that is not UTF-8 (or holds lone surrogates).
    #[error("text is not valid UTF-8")]
    BadText,
    /// Nested deeper than [`MAX_DEPTH`], or (pickle) more values than the
    /// input can honestly describe: a cycle or a memo bomb.
    #[error("value nested too deeply or too large")]
    TooLarge,
    /// Bytes after a complete msgpack value (`unpackb` raises ExtraData).
    #[error("{0} bytes of trailing data")]
    TrailingData(usize),
}

/// A value that the encoding cannot represent (Python would raise while
/// encoding, e.g. msgpack has no sets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {what} as {encoding}")]
pub struct EncodeError {
    /// `pickle` or `msgpack`.
    pub encoding: &'static str,
    /// What could not be encoded.
    pub what: String,
}

/// Deepest nesting the decoders and encoders accept. ZEO messages nest a
/// few levels (the 4-tuple, args, a vote result's dicts, an extension
/// dict); the bound keeps the recursive readers and writers well inside a
/// task's stack (tokio's default is 2 MiB) even in debug builds.
pub const MAX_DEPTH: usize = 100;
