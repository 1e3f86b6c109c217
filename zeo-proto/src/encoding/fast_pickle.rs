//! A direct reader for the pickles ZEO peers actually write: protocol 2–5
//! opcodes for None, bools, ints, floats, bytes, strings, tuples and lists,
//! straight into a [`Value`], without the general decoder's graph.
//!
//! Every message of a busy server goes through a decoder — a `loadBefore`
//! is a tuple of an int, a bool, a str and two 8-byte strings — and
//! building the graph, then converting it, cost more than the rest of
//! answering the call. This reader handles only that subset and says
//! `None` for anything else (a memo opcode, a global, a dict, a malformed
//! or oversized pickle), which then goes to the general decoder: what it
//! returns is what the general decoder returns, and every error is the
//! general decoder's (a property test holds the two together).

use bytes::Bytes;

use super::MAX_DEPTH;
use crate::value::Value;

use super::pickle::{
    APPEND, APPENDS, BINBYTES, BINFLOAT, BININT, BININT1, BININT2, BINSTRING, BINUNICODE,
    EMPTY_LIST, EMPTY_TUPLE, LONG1, MARK, NEWFALSE, NEWTRUE, NONE, PROTO, SHORT_BINBYTES,
    SHORT_BINSTRING, STOP, TUPLE, TUPLE1, TUPLE2, TUPLE3,
};

/// Protocol 4's short text, which Python peers may send (ZEO writes 3).
const SHORT_BINUNICODE: u8 = 0x8c;

/// A value on the stack with the height of its tree (a leaf is 0), so the
/// general decoder's depth limit can be honoured without a second walk.
struct Item {
    value: Value,
    height: usize,
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<std::ops::Range<usize>> {
        let end = self.pos.checked_add(n)?;
        if end > self.data.len() {
            return None;
        }
        let r = self.pos..end;
        self.pos = end;
        Some(r)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let r = self.take(N)?;
        self.data.get(r)?.try_into().ok()
    }

    fn u32_len(&mut self) -> Option<usize> {
        usize::try_from(u32::from_le_bytes(self.array()?)).ok()
    }

    fn bytes(&mut self, n: usize) -> Option<Bytes> {
        let r = self.take(n)?;
        Some(self.data.slice(r))
    }

    fn text(&mut self, n: usize) -> Option<Value> {
        let r = self.take(n)?;
        let s = std::str::from_utf8(self.data.get(r)?).ok()?;
        Some(Value::Str(s.to_owned()))
    }
}

/// Decodes `data` when it is a pickle of the subset above; `None` means
/// "ask the general decoder".
pub(crate) fn decode(data: &Bytes) -> Option<Value> {
    let mut r = Reader { data, pos: 0 };
    if r.byte()? != PROTO || !(2..=5).contains(&r.byte()?) {
        return None;
    }
    let mut stack: Vec<Item> = Vec::with_capacity(8);
    let mut marks: Vec<usize> = Vec::with_capacity(2);
    let leaf = |value| Item { value, height: 0 };
    loop {
        let op = r.byte()?;
        let item = match op {
            STOP => break,
            MARK => {
                marks.push(stack.len());
                continue;
            }
            NONE => leaf(Value::None),
            NEWTRUE => leaf(Value::Bool(true)),
            NEWFALSE => leaf(Value::Bool(false)),
            BININT1 => leaf(Value::Int(i128::from(r.byte()?))),
            BININT2 => leaf(Value::Int(i128::from(u16::from_le_bytes(r.array()?)))),
            BININT => leaf(Value::Int(i128::from(i32::from_le_bytes(r.array()?)))),
            LONG1 => {
                let n = usize::from(r.byte()?);
                let range = r.take(n)?;
                leaf(Value::Int(
                    super::pickle::long_to_i128(data.get(range)?).ok()?,
                ))
            }
            BINFLOAT => leaf(Value::Float(f64::from_be_bytes(r.array()?))),
            SHORT_BINBYTES => {
                let n = usize::from(r.byte()?);
                leaf(Value::Bytes(r.bytes(n)?))
            }
            BINBYTES => {
                let n = r.u32_len()?;
                leaf(Value::Bytes(r.bytes(n)?))
            }
            SHORT_BINSTRING => {
                let n = usize::from(r.byte()?);
                leaf(Value::Py2Str(r.bytes(n)?))
            }
            BINSTRING => {
                // A signed length in the general decoder: refuse the odd ones.
                let n = i32::from_le_bytes(r.array()?);
                leaf(Value::Py2Str(r.bytes(usize::try_from(n).ok()?)?))
            }
            BINUNICODE => {
                let n = r.u32_len()?;
                leaf(r.text(n)?)
            }
            SHORT_BINUNICODE => {
                let n = usize::from(r.byte()?);
                leaf(r.text(n)?)
            }
            EMPTY_TUPLE => leaf(Value::Tuple(Vec::new())),
            EMPTY_LIST => leaf(Value::List(Vec::new())),
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = usize::from(op - TUPLE1) + 1;
                let start = stack.len().checked_sub(n)?;
                if marks.last().is_some_and(|&m| m > start) {
                    return None;
                }
                container(stack.drain(start..), Value::Tuple)
            }
            TUPLE => {
                let start = marks.pop()?;
                container(stack.drain(start..), Value::Tuple)
            }
            APPEND => {
                let item = stack.pop()?;
                if marks.last().is_some_and(|&m| m > stack.len()) {
                    return None;
                }
                let list = stack.last_mut()?;
                let Value::List(items) = &mut list.value else {
                    return None;
                };
                items.push(item.value);
                list.height = list.height.max(item.height + 1);
                continue;
            }
            APPENDS => {
                let start = marks.pop()?;
                let new: Vec<Item> = stack.drain(start..).collect();
                let list = stack.last_mut()?;
                let Value::List(items) = &mut list.value else {
                    return None;
                };
                for item in new {
                    list.height = list.height.max(item.height + 1);
                    items.push(item.value);
                }
                continue;
            }
            _ => return None,
        };
        if item.height > MAX_DEPTH {
            return None;
        }
        stack.push(item);
    }
    if !marks.is_empty() || stack.len() != 1 {
        return None;
    }
    let root = stack.pop()?;
    (root.height <= MAX_DEPTH).then_some(root.value)
}

fn container(items: std::vec::Drain<'_, Item>, make: fn(Vec<Value>) -> Value) -> Item {
    let mut height = 0;
    let values = items
        .map(|i| {
            height = height.max(i.height + 1);
            i.value
        })
        .collect();
    Item {
        value: make(values),
        height,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;

    #[test]
    fn a_load_before_call_is_read_directly() {
        let frame = Bytes::from_static(
            b"\x80\x03(K\x07\x89X\x0a\x00\x00\x00loadBeforeC\x08\x00\x00\x00\x00\x00\x00\x00\x01C\x08\x03\xff\x00\x00\x00\x00\x00\x00\x86t.",
        );
        let v = decode(&frame).unwrap();
        assert_eq!(
            v,
            Value::Tuple(vec![
                Value::Int(7),
                Value::Bool(false),
                Value::Str("loadBefore".into()),
                Value::Tuple(vec![
                    Value::Bytes(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1])),
                    Value::Bytes(Bytes::from_static(&[3, 0xff, 0, 0, 0, 0, 0, 0])),
                ]),
            ])
        );
    }

    #[test]
    fn anything_else_goes_to_the_general_decoder() {
        for frame in [
            &b""[..],
            b"\x80\x03",
            b"\x80\x03N",
            b"\x80\x03NN.",
            b"\x80\x03(N.",
            b"\x80\x03}.",
            b"\x80\x03cbuiltins\nset\n.",
            b"\x80\x03X\x01\x00\x00\x00\xff.",
            b"\x80\x03N\x94.",
            b"\x80\x06N.",
            b"N.",
            b"\x80\x03(N\x86.",
            b"\x80\x03Na.",
        ] {
            assert_eq!(decode(&Bytes::from_static(frame)), None, "{frame:?}");
        }
    }
}
