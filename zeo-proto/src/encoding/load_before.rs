//! `loadBefore` on the wire, read and written without a [`Value`] tree.
//!
//! A server busy with many readers spends most of its calls here, and so
//! does `zodbrs bench zeo`. Both sides of such a load share two machine
//! cores with the kernel's TCP, so the allocations of decoding a message
//! into a tree, typing it and encoding the answer from another tree are a
//! sizeable part of what a load costs. The call and its reply have one
//! shape in practice, the one `ClientStorage` and ZEO's server write with
//! the pickle encoding:
//!
//! ```text
//! call:  PROTO 3, MARK, (oid, tid), False, 'loadBefore', (oid, tid), TUPLE, STOP
//! reply: PROTO 3, MARK, (oid, tid), 0, '.reply', (data, start, end or None), TUPLE, STOP
//! ```
//!
//! The readers here recognise exactly that shape and return `None` for
//! anything else, which then goes through the general decoder; what they
//! do return is what the general decoder makes of the same bytes, and
//! the writers write what the general encoder writes (property tests hold
//! both together). Msgpack connections always take the general path.

use bytes::{BufMut, BytesMut};
use zodb_core::{Oid, Tid};

use super::pickle::{
    BINBYTES, BININT1, BINUNICODE, MARK, NEWFALSE, NONE, PROTO, SHORT_BINBYTES, STOP, TUPLE,
    TUPLE2, TUPLE3,
};
use crate::message::REPLY;
use crate::request::Request;
use crate::value::Value;

/// Protocol 4's short text; the general decoder reads it too.
const SHORT_BINUNICODE: u8 = 0x8c;

const METHOD: &str = "loadBefore";

/// The msgid `ClientStorage` gives a `loadBefore`: the call's own `(oid,
/// tid)`, as two 8-byte strings, so that equal loads in flight share one
/// reply. Kept as the bytes received; a client may name anything there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairId(pub [u8; 8], pub [u8; 8]);

impl PairId {
    /// The msgid `ClientStorage` uses for `loadBefore(oid, before)`.
    pub fn of(oid: Oid, before: Tid) -> PairId {
        PairId(oid.to_bytes(), before.to_bytes())
    }

    /// The msgid as the general decoder reads it: a tuple of two 8-byte
    /// strings.
    pub fn to_value(self) -> Value {
        Request::load_before_msgid(Oid::from_bytes(self.0), Tid::from_bytes(self.1))
    }
}

/// A `loadBefore` call recognised by [`parse_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadBeforeCall {
    /// The msgid to answer with.
    pub msgid: PairId,
    /// The object.
    pub oid: Oid,
    /// Load the revision current before this tid.
    pub before: Tid,
}

/// A `loadBefore` reply recognised by [`parse_reply`]: the revision, its
/// bytes borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadBeforeReply<'a> {
    /// The msgid answered.
    pub msgid: PairId,
    /// The revision's pickle.
    pub data: &'a [u8],
    /// Its tid.
    pub start: Tid,
    /// The tid of the next revision, if there is one.
    pub end: Option<Tid>,
}

/// The frame payload of `loadBefore(oid, before)` with `ClientStorage`'s
/// msgid, as the general encoder writes that call.
pub fn encode_call(oid: Oid, before: Tid) -> [u8; CALL_LEN] {
    let mut out = [0u8; CALL_LEN];
    let mut w = &mut out[..];
    w.put_slice(&[PROTO, 3, MARK]);
    put_pair(&mut w, oid.to_bytes(), before.to_bytes());
    w.put_u8(NEWFALSE);
    put_text(&mut w, METHOD);
    put_pair(&mut w, oid.to_bytes(), before.to_bytes());
    w.put_slice(&[TUPLE, STOP]);
    debug_assert!(w.is_empty());
    out
}

/// The length of [`encode_call`]'s payload.
pub const CALL_LEN: usize = 3 + PAIR_LEN + 1 + 5 + METHOD.len() + PAIR_LEN + 2;

const PAIR_LEN: usize = 2 * 10 + 1;

/// Appends the frame payload of the reply to `msgid` carrying a revision,
/// as the general encoder writes `(msgid, 0, '.reply', (data, start,
/// end))`.
///
/// # Panics
/// If `data` is 4 GiB or more, which no frame can carry.
pub fn encode_reply(out: &mut BytesMut, msgid: PairId, data: &[u8], start: Tid, end: Option<Tid>) {
    out.reserve(reply_len(data.len(), end.is_some()));
    out.put_slice(&[PROTO, 3, MARK]);
    put_pair(out, msgid.0, msgid.1);
    out.put_slice(&[BININT1, 0]);
    put_text(out, REPLY);
    match u8::try_from(data.len()) {
        Ok(n) => out.put_slice(&[SHORT_BINBYTES, n]),
        Err(_) => {
            let n = u32::try_from(data.len()).expect("a data record under 4 GiB");
            out.put_u8(BINBYTES);
            out.put_u32_le(n);
        }
    }
    out.put_slice(data);
    put_eight(out, start.to_bytes());
    match end {
        Some(t) => put_eight(out, t.to_bytes()),
        None => out.put_u8(NONE),
    }
    out.put_slice(&[TUPLE3, TUPLE, STOP]);
}

/// The length of [`encode_reply`]'s payload for `data_len` bytes of data,
/// with or without an end tid.
pub fn reply_len(data_len: usize, has_end: bool) -> usize {
    let data_head = if data_len < 256 { 2 } else { 5 };
    let end = if has_end { 10 } else { 1 };
    3 + PAIR_LEN + 2 + 5 + REPLY.len() + data_head + data_len + 10 + end + 3
}

fn put_eight(out: &mut impl BufMut, b: [u8; 8]) {
    out.put_slice(&[SHORT_BINBYTES, 8]);
    out.put_slice(&b);
}

fn put_pair(out: &mut impl BufMut, a: [u8; 8], b: [u8; 8]) {
    put_eight(out, a);
    put_eight(out, b);
    out.put_u8(TUPLE2);
}

fn put_text(out: &mut impl BufMut, s: &str) {
    out.put_u8(BINUNICODE);
    out.put_u32_le(s.len() as u32);
    out.put_slice(s.as_bytes());
}

/// Recognises a `loadBefore` call of the shape above (an unasked-for
/// reply, any other call, msgid or argument form, is `None`).
pub fn parse_call(payload: &[u8]) -> Option<LoadBeforeCall> {
    let mut r = Cursor(payload);
    r.expect(&[PROTO, 3, MARK])?;
    let msgid = r.pair()?;
    r.expect(&[NEWFALSE])?;
    r.text(METHOD)?;
    let args = r.pair()?;
    r.expect(&[TUPLE, STOP])?;
    Some(LoadBeforeCall {
        msgid: PairId(msgid.0, msgid.1),
        oid: Oid::from_bytes(args.0),
        before: Tid::from_bytes(args.1),
    })
}

/// Recognises a reply of the shape above that carries a revision. An
/// exception, a `None` (no revision), a server call or any other form is
/// `None`.
pub fn parse_reply(payload: &[u8]) -> Option<LoadBeforeReply<'_>> {
    let mut r = Cursor(payload);
    r.expect(&[PROTO, 3, MARK])?;
    let msgid = r.pair()?;
    // ZEO's server writes the flags as the int 0; False unpickles equal.
    if r.expect(&[BININT1, 0]).is_none() {
        r.expect(&[NEWFALSE])?;
    }
    r.text(REPLY)?;
    let n = match r.byte()? {
        SHORT_BINBYTES => usize::from(r.byte()?),
        BINBYTES => usize::try_from(u32::from_le_bytes(r.array()?)).ok()?,
        _ => return None,
    };
    let data = r.take(n)?;
    let start = r.eight()?;
    let end = if r.expect(&[NONE]).is_some() {
        None
    } else {
        Some(Tid::from_bytes(r.eight()?))
    };
    r.expect(&[TUPLE3, TUPLE, STOP])?;
    Some(LoadBeforeReply {
        msgid,
        data,
        start: Tid::from_bytes(start),
        end,
    })
}

/// A read position in a payload; every read is checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Consumes `want` if the payload continues with it.
    fn expect(&mut self, want: &[u8]) -> Option<()> {
        let rest = self.0.strip_prefix(want)?;
        self.0 = rest;
        Some(())
    }

    /// An 8-byte `bytes` as the general encoder writes it.
    fn eight(&mut self) -> Option<[u8; 8]> {
        self.expect(&[SHORT_BINBYTES, 8])?;
        self.array()
    }

    fn pair(&mut self) -> Option<PairId> {
        let a = self.eight()?;
        let b = self.eight()?;
        self.expect(&[TUPLE2])?;
        Some(PairId(a, b))
    }

    /// A `str` equal to `want`, in either of the forms Python writes.
    fn text(&mut self, want: &str) -> Option<()> {
        let n = match self.byte()? {
            BINUNICODE => usize::try_from(u32::from_le_bytes(self.array()?)).ok()?,
            SHORT_BINUNICODE => usize::from(self.byte()?),
            _ => return None,
        };
        (self.take(n)? == want.as_bytes()).then_some(())
    }
}
