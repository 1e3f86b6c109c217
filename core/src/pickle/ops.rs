//! The opcode table and the argument reader shared by the decoder, the
//! reference scanner and the disassembler.
//!
//! Reading an opcode's argument is where untrusted lengths meet the input, so
//! it is done once, here: every length is checked against what is left before
//! anything is sliced, and nothing is allocated.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]
#![allow(
    clippy::little_endian_bytes,
    reason = "pickle's binary integers are little-endian"
)]

use super::error::{PickleError, PickleErrorKind};

/// How an opcode's argument is encoded in the stream (pickletools' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    None,
    Uint1,
    Uint2,
    Int4,
    Uint4,
    Uint8,
    /// `INT`/`GET`/`PUT`: a decimal line (`00`/`01` are booleans for INT).
    DecimalShort,
    /// `LONG`: a decimal line with an optional trailing `L`.
    DecimalLong,
    /// `STRING`: a quoted line with Python escapes.
    StringNl,
    /// `PERSID`: a line.
    StringNlNoEscape,
    /// `GLOBAL`/`INST`: two lines.
    StringNlPair,
    /// `BINSTRING`: signed 4-byte length.
    String4,
    String1,
    Bytes1,
    Bytes4,
    Bytes8,
    /// `UNICODE`: a raw-unicode-escape line.
    UnicodeNl,
    Unicode1,
    Unicode4,
    Unicode8,
    FloatNl,
    Float8,
    Long1,
    /// `LONG4`: signed 4-byte length.
    Long4,
    ByteArray8,
}

/// What an opcode takes from the stack, as pickletools describes it; the
/// disassembler needs it to indent MARK blocks exactly as pickletools does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stk {
    Any,
    Mark,
    Slice,
}

/// Static facts about one opcode.
#[derive(Debug)]
pub(crate) struct OpInfo {
    pub code: u8,
    pub name: &'static str,
    /// Protocol that introduced it.
    pub proto: u8,
    pub arg: ArgKind,
    pub before: &'static [Stk],
    /// How many items it pushes (MARK pushes the mark, counted here as 1).
    pub after: u8,
}

macro_rules! opcodes {
    ($($name:ident = $code:literal, $proto:literal, $arg:ident, [$($b:ident),*] -> $after:literal;)*) => {
        $(pub(crate) const $name: u8 = $code;)*

        /// The facts about `code`, `None` if it is no opcode of protocols 0-5.
        pub(crate) fn info(code: u8) -> Option<&'static OpInfo> {
            match code {
                $($code => Some(&OpInfo {
                    code: $code,
                    name: stringify!($name),
                    proto: $proto,
                    arg: ArgKind::$arg,
                    before: &[$(Stk::$b),*],
                    after: $after,
                }),)*
                _ => None,
            }
        }
    };
}

opcodes! {
    INT = b'I', 0, DecimalShort, [] -> 1;
    BININT = b'J', 1, Int4, [] -> 1;
    BININT1 = b'K', 1, Uint1, [] -> 1;
    BININT2 = b'M', 1, Uint2, [] -> 1;
    LONG = b'L', 0, DecimalLong, [] -> 1;
    LONG1 = 0x8a, 2, Long1, [] -> 1;
    LONG4 = 0x8b, 2, Long4, [] -> 1;
    STRING = b'S', 0, StringNl, [] -> 1;
    BINSTRING = b'T', 1, String4, [] -> 1;
    SHORT_BINSTRING = b'U', 1, String1, [] -> 1;
    BINBYTES = b'B', 3, Bytes4, [] -> 1;
    SHORT_BINBYTES = b'C', 3, Bytes1, [] -> 1;
    BINBYTES8 = 0x8e, 4, Bytes8, [] -> 1;
    BYTEARRAY8 = 0x96, 5, ByteArray8, [] -> 1;
    NEXT_BUFFER = 0x97, 5, None, [] -> 1;
    READONLY_BUFFER = 0x98, 5, None, [Any] -> 1;
    NONE = b'N', 0, None, [] -> 1;
    NEWTRUE = 0x88, 2, None, [] -> 1;
    NEWFALSE = 0x89, 2, None, [] -> 1;
    UNICODE = b'V', 0, UnicodeNl, [] -> 1;
    SHORT_BINUNICODE = 0x8c, 4, Unicode1, [] -> 1;
    BINUNICODE = b'X', 1, Unicode4, [] -> 1;
    BINUNICODE8 = 0x8d, 4, Unicode8, [] -> 1;
    FLOAT = b'F', 0, FloatNl, [] -> 1;
    BINFLOAT = b'G', 1, Float8, [] -> 1;
    EMPTY_LIST = b']', 1, None, [] -> 1;
    APPEND = b'a', 0, None, [Any, Any] -> 1;
    APPENDS = b'e', 1, None, [Any, Mark, Slice] -> 1;
    LIST = b'l', 0, None, [Mark, Slice] -> 1;
    EMPTY_TUPLE = b')', 1, None, [] -> 1;
    TUPLE = b't', 0, None, [Mark, Slice] -> 1;
    TUPLE1 = 0x85, 2, None, [Any] -> 1;
    TUPLE2 = 0x86, 2, None, [Any, Any] -> 1;
    TUPLE3 = 0x87, 2, None, [Any, Any, Any] -> 1;
    EMPTY_DICT = b'}', 1, None, [] -> 1;
    DICT = b'd', 0, None, [Mark, Slice] -> 1;
    SETITEM = b's', 0, None, [Any, Any, Any] -> 1;
    SETITEMS = b'u', 1, None, [Any, Mark, Slice] -> 1;
    EMPTY_SET = 0x8f, 4, None, [] -> 1;
    ADDITEMS = 0x90, 4, None, [Any, Mark, Slice] -> 1;
    FROZENSET = 0x91, 4, None, [Mark, Slice] -> 1;
    POP = b'0', 0, None, [Any] -> 0;
    DUP = b'2', 0, None, [Any] -> 2;
    MARK = b'(', 0, None, [] -> 1;
    POP_MARK = b'1', 1, None, [Mark, Slice] -> 0;
    GET = b'g', 0, DecimalShort, [] -> 1;
    BINGET = b'h', 1, Uint1, [] -> 1;
    LONG_BINGET = b'j', 1, Uint4, [] -> 1;
    PUT = b'p', 0, DecimalShort, [] -> 0;
    BINPUT = b'q', 1, Uint1, [] -> 0;
    LONG_BINPUT = b'r', 1, Uint4, [] -> 0;
    MEMOIZE = 0x94, 4, None, [Any] -> 1;
    EXT1 = 0x82, 2, Uint1, [] -> 1;
    EXT2 = 0x83, 2, Uint2, [] -> 1;
    EXT4 = 0x84, 2, Int4, [] -> 1;
    GLOBAL = b'c', 0, StringNlPair, [] -> 1;
    STACK_GLOBAL = 0x93, 4, None, [Any, Any] -> 1;
    REDUCE = b'R', 0, None, [Any, Any] -> 1;
    BUILD = b'b', 0, None, [Any, Any] -> 1;
    INST = b'i', 0, StringNlPair, [Mark, Slice] -> 1;
    OBJ = b'o', 1, None, [Mark, Any, Slice] -> 1;
    NEWOBJ = 0x81, 2, None, [Any, Any] -> 1;
    NEWOBJ_EX = 0x92, 4, None, [Any, Any, Any] -> 1;
    PROTO = 0x80, 2, Uint1, [] -> 0;
    FRAME = 0x95, 4, Uint8, [] -> 0;
    STOP = b'.', 0, None, [Any] -> 0;
    PERSID = b'P', 0, StringNlNoEscape, [] -> 1;
    BINPERSID = b'Q', 1, None, [Any] -> 1;
}

/// An opcode's argument, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arg<'a> {
    None,
    /// Fixed-size integers (uint1, uint2, int4, uint4).
    Int(i64),
    /// FRAME's 8-byte length.
    U64(u64),
    Float(f64),
    /// A text line, without its `\n`.
    Line(&'a [u8]),
    /// GLOBAL/INST: module line and name line.
    Pair(&'a [u8], &'a [u8]),
    /// A counted payload and its offset in the input (for zero-copy slicing).
    Data(&'a [u8], usize),
}

/// One opcode as read from the stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    pub pos: usize,
    pub info: &'static OpInfo,
    pub arg: Arg<'a>,
}

impl Op<'_> {
    /// An error about this opcode.
    pub fn err(&self, kind: PickleErrorKind) -> PickleError {
        PickleError::new(self.pos, Some(self.info.code), kind)
    }
}

/// Reads opcodes and their arguments, pickletools' `genops` without the
/// interpretation of text arguments (each user needs its own).
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Reader<'a> {
        Reader { data, pos }
    }

    /// Offset of the next opcode.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Reads the next opcode and its argument.
    pub fn next_op(&mut self) -> Result<Op<'a>, PickleError> {
        let pos = self.pos;
        let Some(&code) = self.data.get(pos) else {
            return Err(PickleError::new(pos, None, PickleErrorKind::Truncated));
        };
        let Some(info) = info(code) else {
            return Err(PickleError::new(
                pos,
                Some(code),
                PickleErrorKind::UnknownOpcode,
            ));
        };
        self.pos = pos + 1;
        let err = |kind| PickleError::new(pos, Some(code), kind);
        let arg = match info.arg {
            ArgKind::None => Arg::None,
            ArgKind::Uint1 => {
                let [b] = self.fixed().map_err(err)?;
                Arg::Int(b.into())
            }
            ArgKind::Uint2 => Arg::Int(u16::from_le_bytes(self.fixed().map_err(err)?).into()),
            ArgKind::Int4 => Arg::Int(i32::from_le_bytes(self.fixed().map_err(err)?).into()),
            ArgKind::Uint4 => Arg::Int(u32::from_le_bytes(self.fixed().map_err(err)?).into()),
            ArgKind::Uint8 => Arg::U64(u64::from_le_bytes(self.fixed().map_err(err)?)),
            ArgKind::Float8 => Arg::Float(f64::from_be_bytes(self.fixed().map_err(err)?)),
            ArgKind::DecimalShort
            | ArgKind::DecimalLong
            | ArgKind::StringNl
            | ArgKind::StringNlNoEscape
            | ArgKind::UnicodeNl
            | ArgKind::FloatNl => Arg::Line(self.line().map_err(err)?),
            ArgKind::StringNlPair => {
                let module = self.line().map_err(err)?;
                Arg::Pair(module, self.line().map_err(err)?)
            }
            ArgKind::String1 | ArgKind::Bytes1 | ArgKind::Unicode1 | ArgKind::Long1 => {
                let [n] = self.fixed().map_err(err)?;
                self.counted(n.into()).map_err(err)?
            }
            ArgKind::String4 | ArgKind::Long4 => {
                let n = i32::from_le_bytes(self.fixed().map_err(err)?);
                let n =
                    u64::try_from(n).map_err(|_| err(PickleErrorKind::NegativeLength(n.into())))?;
                self.counted(n).map_err(err)?
            }
            ArgKind::Bytes4 | ArgKind::Unicode4 => {
                let n = u32::from_le_bytes(self.fixed().map_err(err)?);
                self.counted(n.into()).map_err(err)?
            }
            ArgKind::Bytes8 | ArgKind::Unicode8 | ArgKind::ByteArray8 => {
                let n = u64::from_le_bytes(self.fixed().map_err(err)?);
                self.counted(n).map_err(err)?
            }
        };
        Ok(Op { pos, info, arg })
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], PickleErrorKind> {
        let (head, _) = self
            .rest()
            .split_first_chunk::<N>()
            .ok_or(PickleErrorKind::Truncated)?;
        self.pos += N;
        Ok(*head)
    }

    fn line(&mut self) -> Result<&'a [u8], PickleErrorKind> {
        let rest = self.rest();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleErrorKind::Truncated)?;
        self.pos += n + 1;
        rest.get(..n).ok_or(PickleErrorKind::Truncated)
    }

    fn counted(&mut self, n: u64) -> Result<Arg<'a>, PickleErrorKind> {
        let rest = self.rest();
        let past_end = || PickleErrorKind::LengthPastEnd {
            len: n,
            available: rest.len(),
        };
        let len = usize::try_from(n).map_err(|_| past_end())?;
        let payload = rest.get(..len).ok_or_else(past_end)?;
        let start = self.pos;
        self.pos += len;
        Ok(Arg::Data(payload, start))
    }
}

/// An unpickler memo. Picklers number keys densely (BINPUT 0, 1, 2, ...),
/// so they live in a vector; a key of half the input length or more cannot
/// be dense (every PUT costs at least two bytes) and goes to a map instead,
/// so a hostile `LONG_BINPUT 0xffffffff` cannot make us allocate gigabytes.
#[derive(Debug, Clone)]
pub(crate) struct Memo<T> {
    dense: Vec<Option<T>>,
    sparse: std::collections::HashMap<u64, T>,
    dense_limit: usize,
    len: usize,
}

impl<T> Default for Memo<T> {
    fn default() -> Memo<T> {
        Memo {
            dense: Vec::new(),
            sparse: std::collections::HashMap::new(),
            dense_limit: 0,
            len: 0,
        }
    }
}

impl<T: Copy> Memo<T> {
    /// Forgets everything, for an input of `input_len` bytes.
    pub fn reset(&mut self, input_len: usize) {
        self.dense.clear();
        self.sparse.clear();
        self.dense_limit = input_len / 2 + 1;
        self.len = 0;
    }

    pub fn get(&self, key: u64) -> Option<T> {
        match usize::try_from(key) {
            Ok(k) if k < self.dense_limit => self.dense.get(k).copied().flatten(),
            _ => self.sparse.get(&key).copied(),
        }
    }

    pub fn put(&mut self, key: u64, value: T) {
        let old = match usize::try_from(key) {
            Ok(k) if k < self.dense_limit => {
                if self.dense.len() <= k {
                    self.dense.resize(k + 1, None);
                }
                self.dense.get_mut(k).and_then(|slot| slot.replace(value))
            }
            _ => self.sparse.insert(key, value),
        };
        if old.is_none() {
            self.len += 1;
        }
    }

    /// Number of keys stored (MEMOIZE uses it as the next key).
    pub fn len(&self) -> usize {
        self.len
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
    fn reads_arguments_and_rejects_bad_lengths() {
        let data = b"K\x05X\x02\x00\x00\x00hiT\xff\xff\xff\xff";
        let mut r = Reader::new(data, 0);
        assert_eq!(r.next_op().unwrap().arg, Arg::Int(5));
        let op = r.next_op().unwrap();
        assert_eq!(op.arg, Arg::Data(b"hi", 7));
        let e = r.next_op().unwrap_err();
        assert_eq!((e.offset, e.kind), (9, PickleErrorKind::NegativeLength(-1)));

        let e = Reader::new(b"B\xff\xff\xff\xffab", 0)
            .next_op()
            .unwrap_err();
        assert_eq!(
            e.kind,
            PickleErrorKind::LengthPastEnd {
                len: 0xffff_ffff,
                available: 2
            }
        );
        let e = Reader::new(b"cmod\nname", 0).next_op().unwrap_err();
        assert_eq!(e.kind, PickleErrorKind::Truncated);
        let e = Reader::new(b"\xff", 0).next_op().unwrap_err();
        assert_eq!(e.to_string(), "unknown opcode at byte 0 (opcode 0xff)");
        assert_eq!(Reader::new(b"", 0).next_op().unwrap_err().opcode, None);
    }

    #[test]
    fn memo_keeps_far_keys_out_of_the_vector() {
        let mut memo = Memo::default();
        memo.reset(100);
        memo.put(3, 'a');
        memo.put(u64::from(u32::MAX), 'b');
        memo.put(3, 'c');
        assert_eq!(
            (memo.get(3), memo.get(u64::from(u32::MAX)), memo.get(4)),
            (Some('c'), Some('b'), None)
        );
        assert_eq!(memo.len(), 2);
        assert!(memo.dense.len() <= 51);
    }
}
