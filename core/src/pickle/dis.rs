//! A disassembler whose output is byte-identical to zodbpickle's
//! `pickletools_3.dis(pickle, out, memo)`, which `zodb dump
//! --pretty=zpickledis` prints for every extension and record.
//!
//! pickletools_3 knows protocols 0-3 only, so protocol 4 and 5 opcodes are
//! unknown here too. Its sanity checks (a MARK for every opcode that needs
//! one, memo keys stored once and only read after being stored, an empty
//! stack after STOP) fail here where they fail there.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::HashSet;
use std::fmt::Write as _;

use super::MAX_MARK_DEPTH;
use super::error::{PickleError, PickleErrorKind as K};
use super::ops::{self, Arg, ArgKind, Op, Reader, Stk};
use super::pytext::{self, CodePoints, PyInt};

/// Which pickletools to imitate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum DisFlavor {
    /// zodbpickle's `pickletools_3`, what zodbtools uses on Python 3.
    #[default]
    Python3,
    /// zodbpickle's `pickletools_2`, what zodbtools used on Python 2 (and
    /// so what the golden outputs of Python 2 era fixtures hold): strings
    /// print as Python 2 `str` (`'\x00'`, never `b'...'`) and `unicode`
    /// (`u'...'`), longs with an `L`, GLOBAL and PERSID arguments unescaped.
    Python2,
}

/// The memo keys seen so far, and the flavor of output. Pass the same memo
/// to the two `dis` calls of a record, as zodbdump does, so GETs in the
/// state pickle find the PUTs of the class pickle.
#[derive(Debug, Default, Clone)]
pub struct DisMemo {
    keys: HashSet<MemoKey>,
    flavor: DisFlavor,
}

impl DisMemo {
    /// An empty memo for `pickletools_3` output.
    pub fn new() -> DisMemo {
        DisMemo::default()
    }

    /// An empty memo for output in the given flavor.
    pub fn with_flavor(flavor: DisFlavor) -> DisMemo {
        DisMemo {
            keys: HashSet::new(),
            flavor,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MemoKey {
    Int(i64),
    Big(String),
}

/// Disassembles the pickle starting at `start` in `data` (through its STOP)
/// and appends what pickletools prints to `out`: one line per opcode whose
/// offset column counts from the start of `data`, then the
/// `highest protocol among opcodes = N` line. Returns the offset after STOP.
///
/// On error `out` holds the lines printed before the failure; pickletools
/// raises ValueError in the same cases (zodbdump then prints nothing).
pub fn dis(
    data: &[u8],
    start: usize,
    out: &mut String,
    memo: &mut DisMemo,
) -> Result<usize, PickleError> {
    // The emulated stack only needs to know which items are MARKs.
    let mut stack: Vec<bool> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut max_proto = -1;
    let mut reader = Reader::new(data, start);
    loop {
        let pos = reader.pos();
        // pickletools_3 does not know protocol 4 and 5.
        if let Some(&code) = data.get(pos)
            && ops::info(code).is_none_or(|i| i.proto > 3)
        {
            return Err(PickleError::new(pos, Some(code), K::UnknownOpcode));
        }
        let op = reader.next_op()?;
        let info = op.info;
        let arg = arg_repr(&op, memo.flavor).map_err(|k| op.err(k))?;
        let _ = write!(out, "{:5}: ", op.pos);
        let code = if info.code < 0x80 {
            char::from(info.code).to_string()
        } else {
            format!("\\x{:02x}", info.code)
        };
        let _ = write!(out, "{code:<4} {}{}", "    ".repeat(marks.len()), info.name);
        max_proto = max_proto.max(i32::from(info.proto));

        let mut to_pop = info.before.len();
        let mut mark_msg = None;
        let mut error = None;
        let takes_mark = info.before.contains(&Stk::Mark);
        if takes_mark || (info.code == ops::POP && stack.last() == Some(&true)) {
            match marks.pop() {
                Some(mark_pos) => {
                    mark_msg = Some(format!("(MARK at {mark_pos})"));
                    loop {
                        match stack.pop() {
                            Some(true) => break,
                            Some(false) => {}
                            None => return Err(op.err(K::NoMark)),
                        }
                    }
                    to_pop = info
                        .before
                        .iter()
                        .position(|s| *s == Stk::Mark)
                        .unwrap_or(0);
                }
                None => {
                    mark_msg = Some("no MARK exists on stack".to_owned());
                    error = Some(K::NoMark);
                }
            }
        }

        match info.code {
            ops::PUT | ops::BINPUT | ops::LONG_BINPUT => {
                let key = memo_key(&op)?;
                let number = key_number(&key);
                if memo.keys.contains(&key) {
                    error = Some(K::MemoRedefined(number));
                } else if stack.is_empty() {
                    error = Some(K::StackUnderflow);
                } else if stack.last() == Some(&true) {
                    error = Some(K::WrongType("can't store markobject in the memo"));
                } else {
                    memo.keys.insert(key);
                }
            }
            ops::GET | ops::BINGET | ops::LONG_BINGET => {
                let key = memo_key(&op)?;
                if !memo.keys.contains(&key) {
                    error = Some(K::MemoMissing(key_number(&key)));
                }
            }
            _ => {}
        }

        if arg.is_some() || mark_msg.is_some() {
            out.push_str(&" ".repeat(10usize.saturating_sub(info.name.len())));
            if let Some(arg) = &arg {
                out.push(' ');
                out.push_str(arg);
            }
            if let Some(msg) = &mark_msg {
                out.push(' ');
                out.push_str(msg);
            }
        }
        out.push('\n');
        if let Some(kind) = error {
            return Err(op.err(kind));
        }

        if stack.len() < to_pop {
            return Err(op.err(K::StackUnderflow));
        }
        stack.truncate(stack.len() - to_pop);
        if info.code == ops::MARK {
            if marks.len() >= MAX_MARK_DEPTH {
                return Err(op.err(K::TooDeep(MAX_MARK_DEPTH)));
            }
            marks.push(op.pos);
            stack.push(true);
        } else {
            stack.extend(std::iter::repeat_n(false, info.after.into()));
        }
        if info.code == ops::STOP {
            break;
        }
    }
    let _ = writeln!(out, "highest protocol among opcodes = {max_proto}");
    if !stack.is_empty() {
        return Err(PickleError::new(reader.pos(), None, K::StackNotEmpty));
    }
    Ok(reader.pos())
}

fn key_number(key: &MemoKey) -> u64 {
    match key {
        MemoKey::Int(v) => *v as u64,
        MemoKey::Big(_) => u64::MAX,
    }
}

/// The memo key as Python compares it (`True` is 1).
fn memo_key(op: &Op<'_>) -> Result<MemoKey, PickleError> {
    match op.arg {
        Arg::Int(v) => Ok(MemoKey::Int(v)),
        Arg::Line(b"00") => Ok(MemoKey::Int(0)),
        Arg::Line(b"01") => Ok(MemoKey::Int(1)),
        Arg::Line(text) => match pytext::parse_int(text) {
            Some(PyInt::Small(v)) => Ok(MemoKey::Int(v)),
            Some(PyInt::Big { negative, digits }) => {
                Ok(MemoKey::Big(pytext::big_to_string(negative, &digits)))
            }
            None => Err(op.err(K::BadText("memo key"))),
        },
        _ => Err(op.err(K::BadText("memo key"))),
    }
}

/// `repr()` of the argument as pickletools' readers decode it, `None` for
/// opcodes without one.
fn arg_repr(op: &Op<'_>, flavor: DisFlavor) -> Result<Option<String>, K> {
    let py2 = flavor == DisFlavor::Python2;
    let mut s = String::new();
    match (op.info.arg, op.arg) {
        (ArgKind::None, _) => return Ok(None),
        // pickletools_2 reads LONG_BINGET/LONG_BINPUT as a signed int4.
        (ArgKind::Uint4, Arg::Int(v)) if py2 => s = (v as u32 as i32).to_string(),
        (_, Arg::Int(v)) => s = v.to_string(),
        (_, Arg::Float(v)) => s = pytext::repr_float(v),
        (ArgKind::DecimalShort, Arg::Line(text)) => {
            s = match text {
                [.., b'L'] => return Err(K::BadText("INT (trailing L)")),
                b"00" => "False".to_owned(),
                b"01" => "True".to_owned(),
                _ => int_repr(text, py2)?,
            }
        }
        (ArgKind::DecimalLong, Arg::Line(text)) => {
            s = match text.strip_suffix(b"L") {
                Some(digits) => int_repr(digits, false)?,
                None if py2 => return Err(K::BadText("LONG (no trailing L)")),
                None => int_repr(text, false)?,
            };
            if py2 {
                s.push('L');
            }
        }
        (ArgKind::FloatNl, Arg::Line(text)) => {
            s = pytext::repr_float(pytext::parse_float_lenient(text).ok_or(K::BadText("FLOAT"))?)
        }
        (ArgKind::StringNl, Arg::Line(text)) => {
            // pickletools strips a quote at both ends; a lone quote is both.
            let inner: &[u8] = match text {
                [b'"' | b'\''] => &[],
                [q @ (b'"' | b'\''), inner @ .., last] if last == q => inner,
                _ => return Err(K::BadText("STRING (not quoted)")),
            };
            let raw =
                pytext::escape_decode(inner).map_err(|_| K::BadText("STRING (bad escape)"))?;
            str_repr(&mut s, &raw, py2)?;
        }
        (ArgKind::StringNlNoEscape, Arg::Line(text)) if py2 => {
            pytext::repr_bytes_quoted(&mut s, text)
        }
        (ArgKind::StringNlNoEscape, Arg::Line(text)) => {
            let raw = pytext::escape_decode(text).map_err(|_| K::BadText("PERSID (bad escape)"))?;
            str_repr(&mut s, &raw, false)?;
        }
        (ArgKind::StringNlPair, Arg::Pair(module, name)) => {
            let (module, name) = if py2 {
                (module.into(), name.into())
            } else {
                let bad = |_| K::BadText("GLOBAL (bad escape)");
                (
                    pytext::escape_decode(module).map_err(bad)?,
                    pytext::escape_decode(name).map_err(bad)?,
                )
            };
            let both = [&module[..], b" ", &name[..]].concat();
            str_repr(&mut s, &both, py2)?;
        }
        (
            ArgKind::String1 | ArgKind::String4 | ArgKind::Bytes1 | ArgKind::Bytes4,
            Arg::Data(b, _),
        ) if py2 => pytext::repr_bytes_quoted(&mut s, b),
        (ArgKind::String1 | ArgKind::String4, Arg::Data(b, _)) => {
            pytext::repr_str(&mut s, b.iter().map(|&c| u32::from(c)))
        }
        (ArgKind::Bytes1 | ArgKind::Bytes4, Arg::Data(b, _)) => pytext::repr_bytes(&mut s, b),
        (ArgKind::UnicodeNl, Arg::Line(text)) => {
            let utf8 =
                pytext::raw_unicode_escape_decode(text).map_err(|_| K::BadText("UNICODE"))?;
            unicode_repr(&mut s, &utf8, py2);
        }
        (ArgKind::Unicode4, Arg::Data(b, _)) => {
            pytext::check_utf8_surrogatepass(b)
                .map_err(|_| K::BadText("BINUNICODE (not UTF-8)"))?;
            unicode_repr(&mut s, b, py2);
        }
        (ArgKind::Long1 | ArgKind::Long4, Arg::Data(b, _)) => {
            s = pytext::le_to_decimal(b).ok_or(K::BadText("LONG (too many digits)"))?;
            if py2 {
                s.push('L');
            }
        }
        _ => return Err(K::Unsupported("opcode with an unexpected argument")),
    }
    Ok(Some(s))
}

/// An int from decimal text; Python 2 makes a `long` (shown with `L`) of
/// what does not fit in a 64-bit int.
fn int_repr(text: &[u8], py2: bool) -> Result<String, K> {
    Ok(match pytext::parse_int(text).ok_or(K::BadText("INT"))? {
        PyInt::Small(v) => v.to_string(),
        PyInt::Big { negative, digits } => {
            let mut s = pytext::big_to_string(negative, &digits);
            if py2 {
                s.push('L');
            }
            s
        }
    })
}

/// A byte string as pickletools shows it: Python 2 `str`, or on Python 3
/// the ASCII `str` it must decode to.
fn str_repr(out: &mut String, raw: &[u8], py2: bool) -> Result<(), K> {
    if py2 {
        pytext::repr_bytes_quoted(out, raw);
    } else if raw.is_ascii() {
        pytext::repr_str(out, raw.iter().map(|&c| u32::from(c)));
    } else {
        return Err(K::BadText("string (not ASCII)"));
    }
    Ok(())
}

fn unicode_repr(out: &mut String, utf8: &[u8], py2: bool) {
    if py2 {
        pytext::repr_unicode_py2(out, CodePoints(utf8));
    } else {
        pytext::repr_str(out, CodePoints(utf8));
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
    fn record_with_shared_memo() {
        let rec = b"\x80\x03cfoo\nBar\nq\x00.\x80\x03(h\x00K\x01ttq\x01.";
        let want = "    0: \\x80 PROTO      3
    2: c    GLOBAL     'foo Bar'
   11: q    BINPUT     0
   13: .    STOP
highest protocol among opcodes = 2
   14: \\x80 PROTO      3
   16: (    MARK
   17: h        BINGET     0
   19: K        BININT1    1
   21: t        TUPLE      (MARK at 16)
   22: t    TUPLE      no MARK exists on stack
";
        let mut out = String::new();
        let mut memo = DisMemo::new();
        let end = dis(rec, 0, &mut out, &mut memo).unwrap();
        let e = dis(rec, end, &mut out, &mut memo).unwrap_err();
        assert_eq!(e.kind, K::NoMark);
        assert_eq!(out, want);
    }

    fn one(p: &[u8], flavor: DisFlavor) -> Result<String, PickleError> {
        let mut out = String::new();
        dis(p, 0, &mut out, &mut DisMemo::with_flavor(flavor))?;
        Ok(out)
    }

    #[test]
    fn python2_flavor() {
        let p = b"(\x8a\x01\x05X\x02\x00\x00\x00\xc3\xa9U\x02\xe9'I99999999999999999999\nL7L\ncmod\\x41\nname\nt.";
        let want = r#"    0: (    MARK
    1: \x8a     LONG1      5L
    4: X        BINUNICODE u'\xe9'
   11: U        SHORT_BINSTRING "\xe9'"
   15: I        INT        99999999999999999999L
   37: L        LONG       7L
   41: c        GLOBAL     'mod\\x41 name'
   55: t        TUPLE      (MARK at 0)
   56: .    STOP
highest protocol among opcodes = 2
"#;
        assert_eq!(one(p, DisFlavor::Python2).unwrap(), want);
        let py3 = one(p, DisFlavor::Python3).unwrap();
        assert!(
            py3.contains("LONG1      5\n")
                && py3.contains("BINUNICODE 'é'")
                && py3.contains("'modA name'")
        );
        // pickletools_2 insists on LONG's trailing L.
        assert!(one(b"L7\n.", DisFlavor::Python2).is_err());
        assert!(one(b"L7\n.", DisFlavor::Python3).is_ok());
    }
}
