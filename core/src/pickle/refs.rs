//! ZODB's `referencesf`: the oids a record refers to.
//!
//! Pack runs this over every record, so it does not build a graph. Like
//! ZODB's `noload` it runs the opcodes but only tracks what can become part
//! of a persistent id: strings (as spans of the input), tuples (as their
//! first element), lists, and "anything else". The result is identical to
//! ZODB's (spec pickles.md §6): every persistent id in order of appearance,
//! duplicates kept, list forms (weak and cross-database references)
//! skipped. Where Python 3 ZODB would fail on a Python 2 `str` that is not
//! ASCII, its raw bytes are used, as the spec asks.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::borrow::Cow;

use super::MAX_MARK_DEPTH;
use super::decode::memo_key;
use super::error::{PickleError, PickleErrorKind as K};
use super::ops::{self, Memo, Op, Reader};
use super::pytext;
use crate::Oid;

/// The oids referenced by a record's two pickles, as ZODB's `referencesf`.
/// Bytes after the second pickle are ignored, as Python does.
pub fn references(data: &[u8]) -> Result<Vec<Oid>, PickleError> {
    let mut out = Vec::new();
    RefScanner::new().scan(data, &mut out)?;
    Ok(out)
}

/// A reusable [`references`] that keeps its buffers between records.
#[derive(Debug, Default)]
pub struct RefScanner {
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: Memo<Item>,
    /// Strings that had to be unescaped (protocol 0 only).
    owned: Vec<Vec<u8>>,
}

/// What the scanner knows about a stack value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Other,
    List,
    /// bytes, a Python 2 `str`, or text.
    Str,
    /// A tuple whose first element is a string (whose place is given).
    TupleOfStr,
    /// Any other tuple.
    Tuple,
}

/// A stack value: its kind and, for a string or a tuple starting with one,
/// where that string is: `len` bytes at `at` in the input, or the `at`-th
/// unescaped string. One flat 16-byte struct, since pushing items is most of
/// what the scanner does.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Item {
    at: usize,
    /// Saturated: only 8 matters.
    len: u32,
    kind: Kind,
    owned: bool,
    /// Text, which ZODB encodes to ASCII (bytes and Python 2 `str` are used as they are).
    text: bool,
}

impl Item {
    const OTHER: Item = Item::of(Kind::Other);
    const LIST: Item = Item::of(Kind::List);

    const fn of(kind: Kind) -> Item {
        Item {
            at: 0,
            len: 0,
            kind,
            owned: false,
            text: false,
        }
    }

    /// The string `b`, a slice of `data`.
    fn input(data: &[u8], b: &[u8], text: bool) -> Item {
        Item {
            at: b.as_ptr() as usize - data.as_ptr() as usize,
            len: u32::try_from(b.len()).unwrap_or(u32::MAX),
            kind: Kind::Str,
            owned: false,
            text,
        }
    }

    /// A tuple whose first element is `first`.
    fn tuple(first: Option<Item>) -> Item {
        match first {
            Some(item) if item.kind == Kind::Str => Item {
                kind: Kind::TupleOfStr,
                ..item
            },
            _ => Item::of(Kind::Tuple),
        }
    }
}

impl RefScanner {
    /// A scanner with empty buffers.
    pub fn new() -> RefScanner {
        RefScanner::default()
    }

    /// Appends the oids referenced by the record `data` to `out` (on error,
    /// `out` may have got those found before the failure).
    pub fn scan(&mut self, data: &[u8], out: &mut Vec<Oid>) -> Result<(), PickleError> {
        self.memo.reset(data.len());
        self.owned.clear();
        let mut reader = Reader::new(data, 0);
        for _ in 0..2 {
            self.stack.clear();
            self.marks.clear();
            loop {
                let op = reader.next_op()?;
                let stop = self.step(&op, data, out).map_err(|k| op.err(k))?;
                if stop {
                    break;
                }
            }
        }
        Ok(())
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Item, K> {
        if self.stack.len() <= self.fence() {
            return Err(K::StackUnderflow);
        }
        self.stack.pop().ok_or(K::StackUnderflow)
    }

    fn top(&self) -> Result<Item, K> {
        if self.stack.len() <= self.fence() {
            return Err(K::StackUnderflow);
        }
        self.stack.last().copied().ok_or(K::StackUnderflow)
    }

    /// Drops the items above the innermost MARK and the MARK; returns the
    /// first of them.
    fn pop_mark(&mut self) -> Result<Option<Item>, K> {
        let k = self.marks.pop().ok_or(K::NoMark)?;
        let first = self.stack.get(k).copied();
        if k > self.stack.len() {
            return Err(K::StackUnderflow);
        }
        self.stack.truncate(k);
        Ok(first)
    }

    fn owned(&mut self, bytes: Vec<u8>, text: bool) -> Item {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.owned.push(bytes);
        Item {
            at: self.owned.len() - 1,
            len,
            kind: Kind::Str,
            owned: true,
            text,
        }
    }

    /// Runs one opcode; `true` at STOP.
    fn step(&mut self, op: &Op<'_>, data: &[u8], out: &mut Vec<Oid>) -> Result<bool, K> {
        use ops::*;
        let item = match (op.info.code, op.arg) {
            (STOP, _) => {
                self.pop()?;
                return Ok(true);
            }
            (PROTO, Arg::Int(v)) if v > 5 => return Err(K::Protocol(v as u8)),
            (PROTO | FRAME, _) => return Ok(false),
            (MARK, _) => {
                if self.marks.len() >= MAX_MARK_DEPTH {
                    return Err(K::TooDeep(MAX_MARK_DEPTH));
                }
                self.marks.push(self.stack.len());
                return Ok(false);
            }
            (POP, _) => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
                return Ok(false);
            }
            (POP_MARK, _) => {
                self.pop_mark()?;
                return Ok(false);
            }
            (DUP, _) => self.top()?,
            (PUT | BINPUT | LONG_BINPUT, arg) => {
                let key = memo_key(arg, "PUT")?;
                let top = self.top()?;
                self.memo.put(key, top);
                return Ok(false);
            }
            (MEMOIZE, _) => {
                let top = self.top()?;
                self.memo.put(self.memo.len() as u64, top);
                return Ok(false);
            }
            (GET | BINGET | LONG_BINGET, arg) => {
                let key = memo_key(arg, "GET")?;
                self.memo.get(key).ok_or(K::MemoMissing(key))?
            }
            (
                BINSTRING | SHORT_BINSTRING | BINBYTES | SHORT_BINBYTES | BINBYTES8,
                Arg::Data(b, _),
            ) => Item::input(data, b, false),
            (BINUNICODE | SHORT_BINUNICODE | BINUNICODE8, Arg::Data(b, _)) => {
                pytext::check_utf8_surrogatepass(b)
                    .map_err(|_| K::BadText("BINUNICODE (not UTF-8)"))?;
                Item::input(data, b, true)
            }
            (STRING, Arg::Line(text)) => {
                let inner = match text {
                    [q @ (b'\'' | b'"'), inner @ .., last] if last == q => inner,
                    _ => return Err(K::BadText("STRING (not quoted)")),
                };
                match pytext::escape_decode(inner).map_err(|_| K::BadText("STRING (bad escape)"))? {
                    Cow::Borrowed(b) => Item::input(data, b, false),
                    Cow::Owned(v) => self.owned(v, false),
                }
            }
            (UNICODE, Arg::Line(text)) => {
                let v =
                    pytext::raw_unicode_escape_decode(text).map_err(|_| K::BadText("UNICODE"))?;
                self.owned(v, true)
            }
            (INT, Arg::Line(text)) => {
                if text != b"00" && text != b"01" {
                    pytext::parse_int(text).ok_or(K::BadText("INT"))?;
                }
                Item::OTHER
            }
            (LONG, Arg::Line(text)) => {
                pytext::parse_int(text.strip_suffix(b"L").unwrap_or(text))
                    .ok_or(K::BadText("LONG"))?;
                Item::OTHER
            }
            (FLOAT, Arg::Line(text)) => {
                pytext::parse_float_strict(text).ok_or(K::BadText("FLOAT"))?;
                Item::OTHER
            }
            (
                NONE | NEWTRUE | NEWFALSE | BININT | BININT1 | BININT2 | LONG1 | LONG4 | BINFLOAT
                | BYTEARRAY8,
                _,
            ) => Item::OTHER,
            (EMPTY_DICT | EMPTY_SET | GLOBAL, _) => Item::OTHER,
            (EMPTY_TUPLE, _) => Item::of(Kind::Tuple),
            (TUPLE, _) => {
                let first = self.pop_mark()?;
                Item::tuple(first)
            }
            (TUPLE1 | TUPLE2 | TUPLE3, _) => {
                let n = usize::from(op.info.code - TUPLE1 + 1);
                if self.stack.len() < self.fence() + n {
                    return Err(K::StackUnderflow);
                }
                let k = self.stack.len() - n;
                let first = self.stack.get(k).copied();
                self.stack.truncate(k);
                Item::tuple(first)
            }
            (EMPTY_LIST, _) => Item::LIST,
            (LIST, _) => {
                self.pop_mark()?;
                Item::LIST
            }
            (FROZENSET, _) => {
                self.pop_mark()?;
                Item::OTHER
            }
            (DICT, _) => {
                let k = *self.marks.last().ok_or(K::NoMark)?;
                if !self.stack.len().saturating_sub(k).is_multiple_of(2) {
                    return Err(K::WrongType("odd number of items for DICT"));
                }
                self.pop_mark()?;
                Item::OTHER
            }
            (INST, _) => {
                self.pop_mark()?;
                Item::OTHER
            }
            (OBJ, _) => {
                self.pop_mark()?.ok_or(K::StackUnderflow)?;
                Item::OTHER
            }
            // The target stays on the stack, whatever it is.
            (APPEND | BUILD, _) => {
                self.pop()?;
                self.top()?;
                return Ok(false);
            }
            (SETITEM, _) => {
                self.pop()?;
                self.pop()?;
                self.top()?;
                return Ok(false);
            }
            (APPENDS | SETITEMS | ADDITEMS, _) => {
                let k = *self.marks.last().ok_or(K::NoMark)?;
                if op.info.code == SETITEMS && !self.stack.len().saturating_sub(k).is_multiple_of(2)
                {
                    return Err(K::WrongType("odd number of items for SETITEMS"));
                }
                self.pop_mark()?;
                self.top()?;
                return Ok(false);
            }
            (REDUCE | NEWOBJ | STACK_GLOBAL, _) => {
                self.pop()?;
                self.pop()?;
                Item::OTHER
            }
            (NEWOBJ_EX, _) => {
                self.pop()?;
                self.pop()?;
                self.pop()?;
                Item::OTHER
            }
            (PERSID, Arg::Line(text)) => {
                self.record(Item::input(data, text, false), data, out)?;
                Item::OTHER
            }
            (BINPERSID, _) => {
                let pid = self.pop()?;
                self.record(pid, data, out)?;
                Item::OTHER
            }
            (EXT1 | EXT2 | EXT4, _) => {
                return Err(K::Unsupported(
                    "EXT1/EXT2/EXT4 name entries of the writer's copyreg registry, which the pickle does not carry",
                ));
            }
            (NEXT_BUFFER, _) => {
                return Err(K::Unsupported(
                    "NEXT_BUFFER refers to an out-of-band buffer, which stored data cannot have",
                ));
            }
            (READONLY_BUFFER, _) => {
                self.top()?;
                return Ok(false);
            }
            _ => return Err(K::Unsupported("opcode with an unexpected argument")),
        };
        self.stack.push(item);
        Ok(false)
    }

    /// ZODB's conversion of one persistent id to an oid.
    fn record(&self, pid: Item, data: &[u8], out: &mut Vec<Oid>) -> Result<(), K> {
        let span = match pid.kind {
            Kind::List => return Ok(()),
            Kind::Str | Kind::TupleOfStr => pid,
            Kind::Tuple => return Err(K::BadReference("tuple does not start with an oid")),
            Kind::Other => return Err(K::BadReference("neither a tuple, an oid nor a list")),
        };
        if span.len != 8 {
            return Err(K::BadOid(span.len as usize));
        }
        let raw = if span.owned {
            self.owned.get(span.at).map(Vec::as_slice)
        } else {
            data.get(span.at..span.at + 8)
        };
        let raw = raw.unwrap_or_default();
        if span.text && !raw.is_ascii() {
            return Err(K::BadReference("text oid is not ASCII"));
        }
        out.push(Oid::from_slice(raw).ok_or(K::BadOid(raw.len()))?);
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    #[test]
    fn items_stay_small() {
        assert!(std::mem::size_of::<Item>() <= 16);
    }

    #[test]
    fn reference_forms() {
        let oid5 = b"\0\0\0\0\0\0\0\x05";
        let rec = |state: &[u8]| [&b"cfoo\nBar\nq\x01."[..], state].concat();
        let refs = |state: &[u8]| references(&rec(state));
        // (oid, class), bare bytes, bare py2 str, py2 protocol 1 MARK TUPLE.
        let tuple = [&b"C\x08"[..], oid5, b"h\x01\x86Q."].concat();
        assert_eq!(refs(&tuple), Ok(vec![Oid(5)]));
        assert_eq!(
            refs(&[&b"U\x08"[..], oid5, b"Q."].concat()),
            Ok(vec![Oid(5)])
        );
        assert_eq!(
            refs(&[&b"(U\x08"[..], oid5, b"h\x01tQ."].concat()),
            Ok(vec![Oid(5)])
        );
        // Weak and cross-database references are lists: skipped.
        assert_eq!(refs(&[&b"(C\x08"[..], oid5, b"lQ."].concat()), Ok(vec![]));
        // Errors Python raises too.
        assert_eq!(
            refs(b"NQ.").unwrap_err().kind,
            K::BadReference("neither a tuple, an oid nor a list")
        );
        assert_eq!(refs(b"C\x03abcQ.").unwrap_err().kind, K::BadOid(3));
        assert_eq!(
            refs(b")Q.").unwrap_err().kind,
            K::BadReference("tuple does not start with an oid")
        );
        assert!(references(b"").is_err());
        // Trailing bytes after the state pickle are ignored, as in Python.
        assert_eq!(
            references(&[rec(&tuple), b"junk".to_vec()].concat()),
            Ok(vec![Oid(5)])
        );
    }
}
