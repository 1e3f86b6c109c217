//! `Z`: pickle protocol 3 as ZEO's marshal writes it, and any protocol
//! 0–5 pickle read through `zodb_core`'s decoder.
//!
//! Reading: `zodb_core::pickle::Decoder` builds a graph without running
//! anything; [`decode`] turns it into a [`Value`] tree, resolving the few
//! globals [`GlobalPolicy`] allows into plain values (a `set` REDUCE becomes
//! [`Value::Set`], `zodbpickle.binary(s)` becomes bytes) and refusing the
//! rest. The conversion is bounded in depth and in total work, because a
//! pickle's memo can make a short input describe a cycle or a value
//! exponentially larger than itself.
//!
//! Writing: [`encode`] is a small protocol-3 writer that reproduces
//! zodbpickle's C `Pickler(f, 3)` with `fast = 1` byte for byte: no memo
//! opcodes, smallest BININT form, LONG1 for the rest, BINUNICODE for all
//! text, SHORT_BINBYTES/BINBYTES, TUPLE1-3, batches of 1000 for
//! APPENDS/SETITEMS (with the C pickler's quirks: one item is APPEND or
//! SETITEM, and a dict of exactly 1000·k items ends with an empty
//! `MARK SETITEMS`), and sets as `builtins.set([...])`. It lives here
//! until the shared exact encoder (`zodb_core::pickle::encode`) lands; ZEO
//! needs only this one protocol and mode.

use bytes::{BufMut, Bytes, BytesMut};
use zodb_core::pickle::{Decoder, Graph, Node, NodeId, Object as PObject, ObjectKind as PKind};

use super::{DecodeError, EncodeError, GlobalPolicy, MAX_DEPTH, PayloadWriter};
use crate::value::{Global, Object, ObjectKind, Value};

/// Decodes one pickle (the first one in `data`; trailing bytes are ignored
/// as `Unpickler.load()` ignores them).
pub fn decode(data: &Bytes, policy: GlobalPolicy) -> Result<Value, DecodeError> {
    if let Some(v) = super::fast_pickle::decode(data) {
        return Ok(v);
    }
    decode_general(data, policy)
}

/// What the fast reader makes of `data` (`None`: the general decoder's
/// case); for tests that hold the two together.
#[doc(hidden)]
pub fn decode_fast(data: &Bytes) -> Option<Value> {
    super::fast_pickle::decode(data)
}

/// [`decode`] through `zodb_core`'s decoder only (tests hold the fast
/// reader to it).
#[doc(hidden)]
pub fn decode_general(data: &Bytes, policy: GlobalPolicy) -> Result<Value, DecodeError> {
    let mut decoder = Decoder::new(data.clone());
    let root = decoder.load()?;
    let graph = decoder.into_graph();
    // A pickle without memo sharing visits each node once; allow generous
    // sharing (Python 2 pickles memoize strings) but not a memo bomb.
    let budget = graph.len().saturating_mul(8).max(1024);
    let mut conv = Converter {
        graph: &graph,
        policy,
        budget,
    };
    conv.value(root, 0)
}

struct Converter<'g> {
    graph: &'g Graph,
    policy: GlobalPolicy,
    budget: usize,
}

impl Converter<'_> {
    fn value(&mut self, id: NodeId, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH || self.budget == 0 {
            return Err(DecodeError::TooLarge);
        }
        self.budget -= 1;
        Ok(match self.graph.node(id) {
            Node::None => Value::None,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::Int(i128::from(*i)),
            Node::Long(le) => Value::Int(long_to_i128(le)?),
            Node::Float(f) => Value::Float(*f),
            Node::Bytes(b) => Value::Bytes(b.clone()),
            Node::Str(b) => Value::Py2Str(b.clone()),
            Node::Unicode(b) => Value::Str(
                std::str::from_utf8(b)
                    .map_err(|_| DecodeError::BadText)?
                    .to_owned(),
            ),
            Node::ByteArray(_) => return Err(DecodeError::Unsupported("bytearray")),
            Node::Tuple(ids) => Value::Tuple(self.values(ids, depth)?),
            Node::List(ids) => Value::List(self.values(ids, depth)?),
            Node::Set(ids) => Value::Set(self.values(ids, depth)?),
            Node::FrozenSet(ids) => Value::FrozenSet(self.values(ids, depth)?),
            Node::Dict(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (k, v) in items {
                    out.push((self.value(*k, depth + 1)?, self.value(*v, depth + 1)?));
                }
                Value::Dict(out)
            }
            Node::Global(g) => {
                let global = Global::new(g.module(), g.name());
                if self.policy == GlobalPolicy::FromServer && is_exception_class(&global) {
                    Value::Global(global)
                } else {
                    return Err(forbidden(&global));
                }
            }
            Node::Object(obj) => self.object(obj, depth)?,
            Node::PersistentId(_) => {
                return Err(DecodeError::Unsupported("persistent id in a ZEO message"));
            }
        })
    }

    fn values(&mut self, ids: &[NodeId], depth: usize) -> Result<Vec<Value>, DecodeError> {
        ids.iter().map(|id| self.value(*id, depth + 1)).collect()
    }

    fn global(&self, id: NodeId) -> Result<Global, DecodeError> {
        match self.graph.node(id) {
            Node::Global(g) => Ok(Global::new(g.module(), g.name())),
            _ => Err(DecodeError::Unsupported(
                "object whose class is not a global",
            )),
        }
    }

    fn object(&mut self, obj: &PObject, depth: usize) -> Result<Value, DecodeError> {
        let class = self.global(obj.class)?;
        let bad = || DecodeError::BadObject(class.path());
        if !obj.list_items.is_empty() || !obj.dict_items.is_empty() || obj.kwargs.is_some() {
            return Err(bad());
        }
        let Node::Tuple(arg_ids) = self.graph.node(obj.args) else {
            return Err(bad());
        };
        let is_prefix = |g: &Global| g.is("ZopeUndo.Prefix", "Prefix");
        // Python 2, protocol < 2: copy_reg._reconstructor(cls, object, None),
        // looked at before converting the args (a bare class is no value).
        if obj.kind == PKind::Reduce && class.is("copy_reg", "_reconstructor") {
            let [cls, base, base_state] = arg_ids.as_slice() else {
                return Err(bad());
            };
            let cls = self.global(*cls)?;
            let base = self.global(*base)?;
            let base_ok = base.is("__builtin__", "object") || base.is("builtins", "object");
            if !is_prefix(&cls) {
                return Err(forbidden(&cls));
            }
            if !base_ok || !matches!(self.graph.node(*base_state), Node::None) {
                return Err(bad());
            }
            let state = match obj.state {
                Some(s) => Some(self.value(s, depth + 1)?),
                None => None,
            };
            return Ok(Value::Object(Box::new(Object {
                kind: ObjectKind::NewObj,
                class: cls,
                args: Vec::new(),
                state,
            })));
        }
        let allowed = match obj.kind {
            PKind::Reduce => {
                ["set", "frozenset", "bytes", "dict", "list", "tuple"]
                    .iter()
                    .any(|n| class.is("builtins", n) || class.is("__builtin__", n))
                    || class.is("zodbpickle", "binary")
                    || (self.policy == GlobalPolicy::FromServer
                        && class.is("ZODB.POSException", "_recon"))
            }
            PKind::NewObj | PKind::Inst | PKind::Obj => is_prefix(&class),
            PKind::NewObjEx => false,
        };
        if !allowed {
            return Err(forbidden(&class));
        }
        let args = self.values(arg_ids, depth)?;
        let state = match obj.state {
            Some(s) => Some(self.value(s, depth + 1)?),
            None => None,
        };
        let builtin = |name: &str| {
            (class.module == "builtins" || class.module == "__builtin__") && class.name == name
        };
        match obj.kind {
            PKind::Reduce if builtin("set") || builtin("frozenset") => {
                let items = match args.as_slice() {
                    [] => Vec::new(),
                    [Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v)] => {
                        v.clone()
                    }
                    _ => return Err(bad()),
                };
                if state.is_some() {
                    return Err(bad());
                }
                Ok(if class.name == "set" {
                    Value::Set(items)
                } else {
                    Value::FrozenSet(items)
                })
            }
            // `dict(pairs)`, `list(items)`, `tuple(items)`: what a dict or
            // list subclass reduces to when it wants to arrive as a plain
            // one (ZODB's tests send such a transaction extension).
            PKind::Reduce
                if (builtin("dict") || builtin("list") || builtin("tuple")) && state.is_none() =>
            {
                let items: &[Value] = match args.as_slice() {
                    [] => &[],
                    [Value::List(v) | Value::Tuple(v)] => v,
                    [Value::Dict(d)] if builtin("dict") => return Ok(Value::Dict(d.clone())),
                    _ => return Err(bad()),
                };
                Ok(match class.name.as_str() {
                    "dict" => Value::Dict(
                        items
                            .iter()
                            .map(|pair| match pair.as_seq() {
                                Some([k, v]) => Ok((k.clone(), v.clone())),
                                _ => Err(bad()),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    "list" => Value::List(items.to_vec()),
                    _ => Value::Tuple(items.to_vec()),
                })
            }
            PKind::Reduce if builtin("bytes") && args.is_empty() && state.is_none() => {
                Ok(Value::Bytes(Bytes::new()))
            }
            PKind::Reduce if class.is("zodbpickle", "binary") && state.is_none() => {
                match args.as_slice() {
                    [Value::Bytes(b) | Value::Py2Str(b)] => Ok(Value::Bytes(b.clone())),
                    [Value::Str(s)] => Ok(Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))),
                    _ => Err(bad()),
                }
            }
            PKind::Reduce
                if self.policy == GlobalPolicy::FromServer
                    && class.is("ZODB.POSException", "_recon") =>
            {
                // _recon(exception class, state dict): args were converted
                // above, so the class already passed is_exception_class.
                match args.as_slice() {
                    [Value::Global(_), Value::Dict(_)] if state.is_none() => {
                        Ok(Value::Object(Box::new(Object {
                            kind: ObjectKind::Reduce,
                            class,
                            args,
                            state,
                        })))
                    }
                    _ => Err(bad()),
                }
            }
            PKind::NewObj | PKind::Inst | PKind::Obj if is_prefix(&class) => {
                Ok(Value::Object(Box::new(Object {
                    kind: ObjectKind::NewObj,
                    class,
                    args,
                    state,
                })))
            }
            _ => Err(forbidden(&class)),
        }
    }
}

fn forbidden(g: &Global) -> DecodeError {
    DecodeError::ForbiddenGlobal {
        module: g.module.clone(),
        name: g.name.clone(),
    }
}

/// Exception classes a server may name (Python's client accepts any
/// `Exception` subclass; these are the modules servers raise from).
fn is_exception_class(g: &Global) -> bool {
    const BUILTIN: &[&str] = &[
        "Exception",
        "KeyError",
        "TypeError",
        "ValueError",
        "AttributeError",
        "IndexError",
        "RuntimeError",
        "NotImplementedError",
        "AssertionError",
        "OSError",
        "IOError",
        "EOFError",
    ];
    let ident = !g.name.is_empty()
        && g.name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_');
    match g.module.as_str() {
        "ZODB.POSException" => {
            ident
                && (g.name.ends_with("Error")
                    || g.name.ends_with("Errors")
                    || g.name == "Unsupported")
        }
        "ZEO.Exceptions" => ident && (g.name.ends_with("Error") || g.name == "ClientDisconnected"),
        "builtins" | "exceptions" => BUILTIN.contains(&g.name.as_str()),
        _ => false,
    }
}

/// A LONG/LONG1/LONG4 value (little-endian two's complement) as i128.
#[expect(
    clippy::little_endian_bytes,
    reason = "pickle's LONG1/LONG4 are little-endian"
)]
pub(super) fn long_to_i128(le: &[u8]) -> Result<i128, DecodeError> {
    if le.is_empty() {
        return Ok(0);
    }
    let negative = le.last().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    // Bytes beyond 16 must be pure sign extension.
    if let Some(extra) = le.get(16..)
        && extra.iter().any(|&b| b != fill)
    {
        return Err(DecodeError::IntTooLarge);
    }
    let mut buf = [fill; 16];
    for (dst, src) in buf.iter_mut().zip(le) {
        *dst = *src;
    }
    let v = i128::from_le_bytes(buf);
    // A 16-byte prefix whose sign differs from the full number's overflowed.
    if (v < 0) != negative {
        return Err(DecodeError::IntTooLarge);
    }
    Ok(v)
}

// Opcodes written (protocol 3), and read by the fast reader.
pub(super) const PROTO: u8 = 0x80;
pub(super) const STOP: u8 = b'.';
pub(super) const MARK: u8 = b'(';
pub(super) const NONE: u8 = b'N';
pub(super) const NEWTRUE: u8 = 0x88;
pub(super) const NEWFALSE: u8 = 0x89;
pub(super) const BININT: u8 = b'J';
pub(super) const BININT1: u8 = b'K';
pub(super) const BININT2: u8 = b'M';
pub(super) const LONG1: u8 = 0x8a;
pub(super) const BINFLOAT: u8 = b'G';
pub(super) const SHORT_BINBYTES: u8 = b'C';
pub(super) const BINBYTES: u8 = b'B';
pub(super) const SHORT_BINSTRING: u8 = b'U';
pub(super) const BINSTRING: u8 = b'T';
pub(super) const BINUNICODE: u8 = b'X';
pub(super) const EMPTY_TUPLE: u8 = b')';
pub(super) const TUPLE: u8 = b't';
pub(super) const TUPLE1: u8 = 0x85;
pub(super) const TUPLE2: u8 = 0x86;
pub(super) const TUPLE3: u8 = 0x87;
pub(super) const EMPTY_LIST: u8 = b']';
pub(super) const APPEND: u8 = b'a';
pub(super) const APPENDS: u8 = b'e';
const EMPTY_DICT: u8 = b'}';
const SETITEM: u8 = b's';
const SETITEMS: u8 = b'u';
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const NEWOBJ: u8 = 0x81;
const BUILD: u8 = b'b';

/// The C pickler's batch size for APPENDS and SETITEMS.
const BATCHSIZE: usize = 1000;

/// Pickles `value` as `Pickler(f, 3)` with `fast = 1` does.
pub fn encode(value: &Value) -> Result<Bytes, EncodeError> {
    let mut out = PayloadWriter::default();
    save_message(&mut out, value)?;
    Ok(out.finish_bytes())
}

/// The pickle of the tuple `(msgid, flags, method, args)`, byte for byte
/// what [`save_message`] writes for it.
pub(crate) fn save_message_tuple(
    out: &mut PayloadWriter,
    msgid: &Value,
    flags: &Value,
    method: &str,
    args: &Value,
) -> Result<(), EncodeError> {
    out.put_u8(PROTO);
    out.put_u8(3);
    out.put_u8(MARK);
    save(out, msgid, 1)?;
    save(out, flags, 1)?;
    out.put_u8(BINUNICODE);
    out.put_u32_le(len_u32(method.len(), "str over 4 GiB")?);
    out.put_slice(method.as_bytes());
    save(out, args, 1)?;
    out.put_u8(TUPLE);
    out.put_u8(STOP);
    Ok(())
}

/// The whole pickle of `value`, into `out`.
pub(crate) fn save_message(out: &mut PayloadWriter, value: &Value) -> Result<(), EncodeError> {
    out.put_u8(PROTO);
    out.put_u8(3);
    save(out, value, 0)?;
    out.put_u8(STOP);
    Ok(())
}

fn too_big(what: &str) -> EncodeError {
    EncodeError {
        encoding: "pickle",
        what: what.to_owned(),
    }
}

fn len_u32(len: usize, what: &str) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| too_big(what))
}

fn save(out: &mut PayloadWriter, v: &Value, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_DEPTH {
        return Err(too_big("a value nested this deeply"));
    }
    match v {
        Value::None => out.put_u8(NONE),
        Value::Bool(b) => out.put_u8(if *b { NEWTRUE } else { NEWFALSE }),
        Value::Int(i) => save_int(out, *i),
        Value::Float(f) => {
            out.put_u8(BINFLOAT);
            out.put_f64(*f);
        }
        Value::Bytes(b) => {
            if let Ok(n) = u8::try_from(b.len()) {
                out.put_u8(SHORT_BINBYTES);
                out.put_u8(n);
            } else {
                out.put_u8(BINBYTES);
                out.put_u32_le(len_u32(b.len(), "bytes over 4 GiB")?);
            }
            out.put_bytes(b);
        }
        Value::Py2Str(b) => {
            if let Ok(n) = u8::try_from(b.len()) {
                out.put_u8(SHORT_BINSTRING);
                out.put_u8(n);
            } else {
                out.put_u8(BINSTRING);
                out.put_u32_le(len_u32(b.len(), "str over 4 GiB")?);
            }
            out.put_bytes(b);
        }
        Value::Str(s) => {
            out.put_u8(BINUNICODE);
            out.put_u32_le(len_u32(s.len(), "str over 4 GiB")?);
            out.put_slice(s.as_bytes());
        }
        Value::Tuple(items) => save_tuple(out, items, depth)?,
        Value::List(items) => {
            out.put_u8(EMPTY_LIST);
            save_list_items(out, items, depth)?;
        }
        Value::Dict(items) => {
            out.put_u8(EMPTY_DICT);
            save_dict_items(out, items, depth)?;
        }
        Value::Set(items) | Value::FrozenSet(items) => {
            // Protocol < 4: set.__reduce_ex__ gives (set, (list(self),), None).
            let name = if matches!(v, Value::Set(_)) {
                "set"
            } else {
                "frozenset"
            };
            save_global(out, &Global::new("builtins", name));
            out.put_u8(EMPTY_LIST);
            save_list_items(out, items, depth)?;
            out.put_u8(TUPLE1);
            out.put_u8(REDUCE);
        }
        Value::Global(g) => save_global(out, g),
        Value::Object(obj) => {
            save_global(out, &obj.class);
            save_tuple(out, &obj.args, depth)?;
            out.put_u8(match obj.kind {
                ObjectKind::Reduce => REDUCE,
                ObjectKind::NewObj => NEWOBJ,
            });
            if let Some(state) = &obj.state {
                save(out, state, depth + 1)?;
                out.put_u8(BUILD);
            }
        }
    }
    Ok(())
}

#[expect(
    clippy::little_endian_bytes,
    reason = "pickle's LONG1 is little-endian"
)]
fn save_int(out: &mut BytesMut, i: i128) {
    if let Ok(small) = i32::try_from(i) {
        if let Ok(b) = u8::try_from(small) {
            out.put_u8(BININT1);
            out.put_u8(b);
        } else if let Ok(w) = u16::try_from(small) {
            out.put_u8(BININT2);
            out.put_u16_le(w);
        } else {
            out.put_u8(BININT);
            out.put_i32_le(small);
        }
        return;
    }
    // LONG1 with the fewest two's-complement bytes (Python's encode_long).
    let le = i.to_le_bytes();
    let mut n = le.len();
    while n > 1 {
        let (Some(&top), Some(&next)) = (le.get(n - 1), le.get(n - 2)) else {
            break;
        };
        let redundant = (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        n -= 1;
    }
    out.put_u8(LONG1);
    out.put_u8(n as u8);
    out.put_slice(le.get(..n).unwrap_or_default());
}

fn save_global(out: &mut BytesMut, g: &Global) {
    out.put_u8(GLOBAL);
    out.put_slice(g.module.as_bytes());
    out.put_u8(b'\n');
    out.put_slice(g.name.as_bytes());
    out.put_u8(b'\n');
}

fn save_tuple(out: &mut PayloadWriter, items: &[Value], depth: usize) -> Result<(), EncodeError> {
    if items.is_empty() {
        out.put_u8(EMPTY_TUPLE);
        return Ok(());
    }
    let short = match items.len() {
        1 => Some(TUPLE1),
        2 => Some(TUPLE2),
        3 => Some(TUPLE3),
        _ => None,
    };
    if short.is_none() {
        out.put_u8(MARK);
    }
    for item in items {
        save(out, item, depth + 1)?;
    }
    out.put_u8(short.unwrap_or(TUPLE));
    Ok(())
}

fn save_list_items(
    out: &mut PayloadWriter,
    items: &[Value],
    depth: usize,
) -> Result<(), EncodeError> {
    if let [only] = items {
        save(out, only, depth + 1)?;
        out.put_u8(APPEND);
        return Ok(());
    }
    for batch in items.chunks(BATCHSIZE) {
        out.put_u8(MARK);
        for item in batch {
            save(out, item, depth + 1)?;
        }
        out.put_u8(APPENDS);
    }
    Ok(())
}

fn save_dict_items(
    out: &mut PayloadWriter,
    items: &[(Value, Value)],
    depth: usize,
) -> Result<(), EncodeError> {
    match items {
        [] => return Ok(()),
        [(k, v)] => {
            save(out, k, depth + 1)?;
            save(out, v, depth + 1)?;
            out.put_u8(SETITEM);
            return Ok(());
        }
        _ => {}
    }
    // batch_dict_exact: do { MARK; up to 1000 pairs; SETITEMS } while the
    // batch was full, so 1000·k items end with an empty MARK SETITEMS.
    let mut rest = items;
    loop {
        let (batch, tail) = rest.split_at(rest.len().min(BATCHSIZE));
        out.put_u8(MARK);
        for (k, v) in batch {
            save(out, k, depth + 1)?;
            save(out, v, depth + 1)?;
        }
        out.put_u8(SETITEMS);
        if batch.len() < BATCHSIZE {
            return Ok(());
        }
        rest = tail;
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

    fn dec(p: &[u8], policy: GlobalPolicy) -> Result<Value, DecodeError> {
        decode(&Bytes::copy_from_slice(p), policy)
    }

    #[test]
    fn captured_heartbeat_round_trips() {
        // (-1, 0, '.reply', None), captured from a ZEO 6.2 client.
        let wire = b"\x80\x03(J\xff\xff\xff\xffK\x00X\x06\x00\x00\x00.replyNt.";
        let v = dec(wire, GlobalPolicy::FromClient).unwrap();
        assert_eq!(
            v,
            Value::Tuple(vec![
                Value::Int(-1),
                Value::Int(0),
                Value::str(".reply"),
                Value::None
            ])
        );
        assert_eq!(&encode(&v).unwrap()[..], wire);
    }

    #[test]
    fn ints_use_the_smallest_form() {
        let cases: &[(i128, &[u8])] = &[
            (0, b"K\x00"),
            (255, b"K\xff"),
            (256, b"M\x00\x01"),
            (65535, b"M\xff\xff"),
            (65536, b"J\x00\x00\x01\x00"),
            (-1, b"J\xff\xff\xff\xff"),
            (i128::from(i32::MAX) + 1, b"\x8a\x05\x00\x00\x00\x80\x00"),
            (i128::from(i32::MIN) - 1, b"\x8a\x05\xff\xff\xff\x7f\xff"),
            (-(1 << 39), b"\x8a\x05\x00\x00\x00\x00\x80"),
            (140562528196048, b"\x8a\x06\xd0\xd5\x8f\x43\xd7\x7f"),
        ];
        for (i, want) in cases {
            let got = encode(&Value::Int(*i)).unwrap();
            assert_eq!(&got[2..got.len() - 1], *want, "{i}");
            assert_eq!(dec(&got, GlobalPolicy::FromClient).unwrap(), Value::Int(*i));
        }
    }

    #[test]
    fn forbidden_globals_are_typed_errors() {
        // (1, False, 'register', (os.system('true'),))
        let p = b"\x80\x03(K\x01\x89X\x08\x00\x00\x00registercos\nsystem\nX\x04\x00\x00\x00true\x85R\x85t.";
        assert_eq!(
            dec(p, GlobalPolicy::FromClient),
            Err(DecodeError::ForbiddenGlobal {
                module: "os".into(),
                name: "system".into()
            })
        );
        // builtins is an allowed *module* in Python's server; eval is not here.
        let p = b"\x80\x03cbuiltins\neval\nX\x01\x00\x00\x001\x85R.";
        assert!(matches!(
            dec(p, GlobalPolicy::FromClient),
            Err(DecodeError::ForbiddenGlobal { .. })
        ));
        // A bare global reference is refused too.
        assert!(matches!(
            dec(b"cbuiltins\nKeyError\n.", GlobalPolicy::FromClient),
            Err(DecodeError::ForbiddenGlobal { .. })
        ));
        assert_eq!(
            dec(b"cbuiltins\nKeyError\n.", GlobalPolicy::FromServer).unwrap(),
            Value::Global(Global::new("builtins", "KeyError"))
        );
        // Persistent ids have no meaning in ZEO (Python: no persistent_load).
        assert!(matches!(
            dec(b"K\x01Q.", GlobalPolicy::FromClient),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn allowed_globals_become_values() {
        // Python 3, protocol 3: {1, 2}
        let v = dec(
            b"\x80\x03cbuiltins\nset\n]q\x00(K\x01K\x02e\x85q\x01Rq\x02.",
            GlobalPolicy::FromClient,
        )
        .unwrap();
        assert_eq!(v, Value::Set(vec![Value::Int(1), Value::Int(2)]));
        // Python 2 ZODB 5.4: zodbpickle.binary('\x00...') at protocol 1.
        let v = dec(
            b"czodbpickle\nbinary\n(U\x08\x00\x00\x00\x00\x00\x00\x00\x01tR.",
            GlobalPolicy::FromClient,
        )
        .unwrap();
        assert_eq!(v, Value::bytes(&b"\x00\x00\x00\x00\x00\x00\x00\x01"[..]));
        // ZopeUndo Prefix('/ alice') as Python 3 pickles it.
        let p = b"\x80\x03cZopeUndo.Prefix\nPrefix\n)\x81}(X\x06\x00\x00\x00lengthK\x02X\x04\x00\x00\x00path]q\x00(X\x00\x00\x00\x00X\x06\x00\x00\x00 aliceeub.";
        let v = dec(p, GlobalPolicy::FromClient).unwrap();
        let Value::Object(obj) = &v else {
            panic!("{v:?}")
        };
        assert!(obj.class.is("ZopeUndo.Prefix", "Prefix"));
        assert_eq!(
            obj.state.as_ref().unwrap().dict_get("length"),
            Some(&Value::Int(2))
        );
        // Re-encoded as Python writes it (fast mode: no memo PUTs).
        let again = encode(&v).unwrap();
        assert_eq!(dec(&again, GlobalPolicy::FromClient).unwrap(), v);
    }

    #[test]
    fn cycles_and_memo_bombs_are_bounded() {
        // l = []; l.append(l)
        assert_eq!(
            dec(b"]q\x00h\x00a.", GlobalPolicy::FromClient),
            Err(DecodeError::TooLarge)
        );
        // 40 levels of [x, x]: 2^40 leaves from a few hundred bytes.
        let mut p = b"\x80\x03N".to_vec();
        for i in 0..40u8 {
            p.extend_from_slice(&[b'q', i, b'h', i, 0x86]);
        }
        p.push(b'.');
        assert_eq!(
            dec(&p, GlobalPolicy::FromClient),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn python2_strings_are_kept_apart() {
        let v = dec(b"U\x03abc.", GlobalPolicy::FromClient).unwrap();
        assert_eq!(v, Value::Py2Str(Bytes::from_static(b"abc")));
        assert_eq!(v.as_text(), Some("abc"));
        assert_eq!(v.as_bytes().unwrap(), &b"abc"[..]);
        assert_eq!(&encode(&v).unwrap()[..], b"\x80\x03U\x03abc.");
    }

    #[test]
    fn long_bounds() {
        assert_eq!(long_to_i128(&[]).unwrap(), 0);
        assert_eq!(long_to_i128(&[0xff]).unwrap(), -1);
        let mut big = vec![0u8; 16];
        big.push(1);
        assert_eq!(long_to_i128(&big), Err(DecodeError::IntTooLarge));
        let mut wide_neg = vec![0xffu8; 20];
        wide_neg[0] = 0xfe;
        assert_eq!(long_to_i128(&wide_neg).unwrap(), -2);
        let mut top = vec![0u8; 15];
        top.push(0x80);
        top.push(0);
        assert_eq!(long_to_i128(&top), Err(DecodeError::IntTooLarge));
    }
}
