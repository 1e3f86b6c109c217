//! The one error type of the pickle codec.
//!
//! Every failure carries the byte offset of the opcode that failed and the
//! opcode itself, because the input is usually one record among millions and
//! "bad pickle" alone sends the reader to a hex dump.

use std::fmt;

use super::ops;

/// A pickle that could not be decoded, scanned or disassembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}{}", OpLabel(*.opcode))]
pub struct PickleError {
    /// Offset of the failing opcode from the start of the buffer given (for
    /// a record: from the start of the record, also inside the state pickle).
    pub offset: usize,
    /// The failing opcode byte, `None` when the input ended before one.
    pub opcode: Option<u8>,
    /// What is wrong.
    pub kind: PickleErrorKind,
}

/// What is wrong with a pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleErrorKind {
    /// The input ends inside an opcode's argument or before STOP.
    #[error("pickle data was truncated")]
    Truncated,
    /// A byte that is no opcode of protocols 0-5.
    #[error("unknown opcode")]
    UnknownOpcode,
    /// An opcode that is valid pickle but cannot be given a meaning here.
    #[error("cannot decode: {0}")]
    Unsupported(&'static str),
    /// PROTO names a protocol newer than 5.
    #[error("unsupported pickle protocol {0}")]
    Protocol(u8),
    /// An opcode needs more stack items than there are above the last MARK.
    #[error("stack underflow")]
    StackUnderflow,
    /// An opcode that consumes a MARK found none.
    #[error("no MARK on the stack")]
    NoMark,
    /// MARKs nested deeper than [`MAX_MARK_DEPTH`](super::MAX_MARK_DEPTH).
    #[error("MARKs nested deeper than {0}")]
    TooDeep(usize),
    /// A GET of a memo key that no PUT stored.
    #[error("memo key {0} was never stored")]
    MemoMissing(u64),
    /// A PUT over a key already stored (only the disassembler objects, as
    /// pickletools does; unpicklers overwrite).
    #[error("memo key {0} stored twice")]
    MemoRedefined(u64),
    /// A text argument (INT, LONG, FLOAT, PUT/GET, STRING, ...) that does not parse.
    #[error("bad {0} argument")]
    BadText(&'static str),
    /// A counted argument with a negative length.
    #[error("negative length {0}")]
    NegativeLength(i64),
    /// A counted argument longer than the rest of the input.
    #[error("length {len} runs past the end of the input ({available} bytes left)")]
    LengthPastEnd {
        /// The length the pickle claims.
        len: u64,
        /// What is left after the length field.
        available: usize,
    },
    /// An operand of the wrong kind, e.g. APPEND onto a tuple.
    #[error("{0}")]
    WrongType(&'static str),
    /// A persistent id that is none of ZODB's reference forms.
    #[error("bad persistent reference: {0}")]
    BadReference(&'static str),
    /// A persistent reference whose oid is not 8 bytes.
    #[error("persistent reference oid is {0} bytes, not 8")]
    BadOid(usize),
    /// Items left on the stack after STOP (only the disassembler objects).
    #[error("stack not empty after STOP")]
    StackNotEmpty,
    /// Bytes after the last expected STOP.
    #[error("{0} bytes of trailing data after the pickle")]
    TrailingData(usize),
    /// More than 2^32 - 1 values in one graph.
    #[error("too many values for one graph")]
    TooLarge,
}

impl PickleError {
    pub(crate) fn new(offset: usize, opcode: Option<u8>, kind: PickleErrorKind) -> PickleError {
        PickleError {
            offset,
            opcode,
            kind,
        }
    }
}

/// ` (BINGET)`, ` (opcode 0xff)` or nothing.
struct OpLabel(Option<u8>);

impl fmt::Display for OpLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => Ok(()),
            Some(code) => match ops::info(code) {
                Some(info) => write!(f, " ({})", info.name),
                None => write!(f, " (opcode {code:#04x})"),
            },
        }
    }
}
