//! The bits of Python's text handling that pickles depend on: the escape
//! codecs of protocol-0 strings, UTF-8 with lone surrogates, decimal integers
//! of any size, and `repr()` of str, bytes, int and float.
//!
//! These follow CPython 3.11 rule for rule because the disassembler output is
//! compared byte for byte with pickletools, and because a Python 3 `str` may
//! hold lone surrogates that Rust's `str` cannot.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]
#![allow(
    clippy::little_endian_bytes,
    reason = "pickle's LONG1/LONG4 integers are little-endian"
)]

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use super::printable::NON_PRINTABLE;

/// CPython's default `sys.get_int_max_str_digits()`: int/str conversions of
/// longer decimals raise ValueError (and would be quadratic).
pub(crate) const MAX_STR_DIGITS: usize = 4300;

/// `codecs.escape_decode`: undoes the escapes of a Python bytes literal
/// (protocol-0 STRING). Borrows when there is nothing to undo.
pub(crate) fn escape_decode(s: &[u8]) -> Result<Cow<'_, [u8]>, &'static str> {
    if !s.contains(&b'\\') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut s = s;
    loop {
        match s {
            [] => return Ok(Cow::Owned(out)),
            [b'\\'] => return Err("trailing \\ in string"),
            [b'\\', c, rest @ ..] => {
                s = rest;
                match c {
                    b'\n' => {}
                    b'\\' | b'\'' | b'"' => out.push(*c),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b't' => out.push(9),
                    b'n' => out.push(10),
                    b'v' => out.push(11),
                    b'f' => out.push(12),
                    b'r' => out.push(13),
                    b'0'..=b'7' => {
                        let mut v = u32::from(c - b'0');
                        for _ in 0..2 {
                            match s {
                                [d @ b'0'..=b'7', rest @ ..] => {
                                    v = v * 8 + u32::from(d - b'0');
                                    s = rest;
                                }
                                _ => break,
                            }
                        }
                        // CPython stores the value in a char: \777 is \xff.
                        out.push((v & 0xff) as u8);
                    }
                    b'x' => match s {
                        [h, l, rest @ ..] => match (hex_value(*h), hex_value(*l)) {
                            (Some(h), Some(l)) => {
                                out.push((h << 4 | l) as u8);
                                s = rest;
                            }
                            _ => return Err("invalid \\x escape"),
                        },
                        _ => return Err("invalid \\x escape"),
                    },
                    // Unknown escapes are kept as they are.
                    _ => out.extend_from_slice(&[b'\\', *c]),
                }
            }
            [c, rest @ ..] => {
                out.push(*c);
                s = rest;
            }
        }
    }
}

fn hex_value(c: u8) -> Option<u32> {
    char::from(c).to_digit(16)
}

/// The `raw-unicode-escape` codec (protocol-0 UNICODE), giving UTF-8 in which
/// lone surrogates are encoded like other code points (see
/// [`check_utf8_surrogatepass`]).
pub(crate) fn raw_unicode_escape_decode(s: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(s.len());
    let mut s = s;
    loop {
        match s {
            [] => return Ok(out),
            [b'\\', ..] => {
                // Only an odd run of backslashes escapes the u/U after it.
                let run = s.iter().take_while(|&&b| b == b'\\').count();
                let rest = s.get(run..).unwrap_or_default();
                let digits = match rest {
                    [b'u', ..] if run % 2 == 1 => 4,
                    [b'U', ..] if run % 2 == 1 => 8,
                    _ => {
                        out.resize(out.len() + run, b'\\');
                        s = rest;
                        continue;
                    }
                };
                out.resize(out.len() + run - 1, b'\\');
                let hex = rest.get(1..1 + digits).ok_or("truncated \\uXXXX escape")?;
                let mut cp = 0u32;
                for &h in hex {
                    cp = cp << 4 | hex_value(h).ok_or("truncated \\uXXXX escape")?;
                }
                if cp > 0x10ffff {
                    return Err("\\Uxxxxxxxx out of range");
                }
                push_code_point(&mut out, cp);
                s = rest.get(1 + digits..).unwrap_or_default();
            }
            [c, rest @ ..] => {
                push_code_point(&mut out, u32::from(*c));
                s = rest;
            }
        }
    }
}

/// Appends `cp` in UTF-8, surrogates included (Python's `surrogatepass`).
pub(crate) fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0..=0x7f => out.push(cp as u8),
        0x80..=0x7ff => out.extend_from_slice(&[0xc0 | (cp >> 6) as u8, 0x80 | (cp & 0x3f) as u8]),
        0x800..=0xffff => out.extend_from_slice(&[
            0xe0 | (cp >> 12) as u8,
            0x80 | (cp >> 6 & 0x3f) as u8,
            0x80 | (cp & 0x3f) as u8,
        ]),
        _ => out.extend_from_slice(&[
            0xf0 | (cp >> 18) as u8,
            0x80 | (cp >> 12 & 0x3f) as u8,
            0x80 | (cp >> 6 & 0x3f) as u8,
            0x80 | (cp & 0x3f) as u8,
        ]),
    }
}

/// Checks `b` the way Python decodes BINUNICODE (`utf-8`, `surrogatepass`):
/// valid UTF-8 plus encoded lone surrogates. Returns the offset of the first
/// bad byte.
pub(crate) fn check_utf8_surrogatepass(b: &[u8]) -> Result<(), usize> {
    let mut rest = b;
    let mut offset = 0;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let valid = e.valid_up_to();
                match rest.get(valid..).unwrap_or_default() {
                    [0xed, 0xa0..=0xbf, 0x80..=0xbf, more @ ..] => {
                        offset += valid + 3;
                        rest = more;
                    }
                    _ => return Err(offset + valid),
                }
            }
        }
    }
}

/// The code points of UTF-8 that may hold surrogates (anything malformed
/// comes out as U+FFFD; callers check with [`check_utf8_surrogatepass`]).
#[derive(Debug, Clone)]
pub(crate) struct CodePoints<'a>(pub &'a [u8]);

impl Iterator for CodePoints<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (&lead, mut rest) = self.0.split_first()?;
        let (follow, mut cp) = match lead {
            0..=0x7f => (0, u32::from(lead)),
            0xc0..=0xdf => (1, u32::from(lead & 0x1f)),
            0xe0..=0xef => (2, u32::from(lead & 0x0f)),
            0xf0..=0xf7 => (3, u32::from(lead & 0x07)),
            _ => (0, 0xfffd),
        };
        for _ in 0..follow {
            match rest.split_first() {
                Some((&c, more)) if c & 0xc0 == 0x80 => {
                    cp = cp << 6 | u32::from(c & 0x3f);
                    rest = more;
                }
                _ => {
                    cp = 0xfffd;
                    break;
                }
            }
        }
        self.0 = rest;
        Some(cp)
    }
}

/// `str.isprintable()` of one code point, with Python's Unicode tables.
pub(crate) fn is_printable(cp: u32) -> bool {
    NON_PRINTABLE
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                Ordering::Less
            } else if lo > cp {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
        .is_err()
}

/// `repr(str)` for the str made of `chars`.
pub(crate) fn repr_str<I: Iterator<Item = u32> + Clone>(out: &mut String, chars: I) {
    let quote = pick_quote(chars.clone());
    out.push(char::from(quote));
    for cp in chars {
        match cp {
            _ if cp == u32::from(quote) || cp == u32::from(b'\\') => {
                out.push('\\');
                out.push(char::from(cp as u8));
            }
            0x09 => out.push_str("\\t"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            _ => match char::from_u32(cp) {
                Some(c) if is_printable(cp) => out.push(c),
                _ if cp <= 0xff => {
                    let _ = write!(out, "\\x{cp:02x}");
                }
                _ if cp <= 0xffff => {
                    let _ = write!(out, "\\u{cp:04x}");
                }
                _ => {
                    let _ = write!(out, "\\U{cp:08x}");
                }
            },
        }
    }
    out.push(char::from(quote));
}

/// Python 2 `repr(unicode)` (of a wide build, as on Linux): `u'...'`, with
/// everything outside printable ASCII escaped.
pub(crate) fn repr_unicode_py2<I: Iterator<Item = u32> + Clone>(out: &mut String, chars: I) {
    let quote = pick_quote(chars.clone());
    out.push('u');
    out.push(char::from(quote));
    for cp in chars {
        match cp {
            _ if cp == u32::from(quote) || cp == u32::from(b'\\') => {
                out.push('\\');
                out.push(char::from(cp as u8));
            }
            0x10000.. => {
                let _ = write!(out, "\\U{cp:08x}");
            }
            0x100.. => {
                let _ = write!(out, "\\u{cp:04x}");
            }
            0x09 => out.push_str("\\t"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(cp as u8)),
            _ => {
                let _ = write!(out, "\\x{cp:02x}");
            }
        }
    }
    out.push(char::from(quote));
}

/// `repr(bytes)`.
pub(crate) fn repr_bytes(out: &mut String, b: &[u8]) {
    out.push('b');
    repr_bytes_quoted(out, b);
}

/// `repr(bytes)` without the `b` prefix.
pub(crate) fn repr_bytes_quoted(out: &mut String, b: &[u8]) {
    let quote = pick_quote(b.iter().map(|&c| u32::from(c)));
    out.push(char::from(quote));
    for &c in b {
        match c {
            _ if c == quote || c == b'\\' => {
                out.push('\\');
                out.push(char::from(c));
            }
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(c)),
            _ => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(char::from(quote));
}

/// Python uses `"` only when the text has a `'` and no `"`.
fn pick_quote(chars: impl Iterator<Item = u32>) -> u8 {
    let (mut single, mut double) = (false, false);
    for c in chars {
        single |= c == u32::from(b'\'');
        double |= c == u32::from(b'"');
    }
    if single && !double { b'"' } else { b'\'' }
}

/// `repr(float)`: the shortest round-tripping digits (which Rust's formatter
/// also finds), laid out by Python's rules: positional when the decimal
/// exponent is in -4..16, else `d.ddde±XX`.
pub(crate) fn repr_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust finds the shortest digit count that round-trips; Python also
    // wants, among strings of that length, the one closest to the exact
    // value with ties to even, which is the correctly rounded one whenever
    // that round-trips (Rust may pick the other neighbour of an exact tie).
    let shortest = format!("{:e}", x.abs());
    let ndigits = shortest
        .split_once('e')
        .map_or(1, |(m, _)| m.len() - usize::from(m.contains('.')));
    let rounded = format!("{:.*e}", ndigits - 1, x.abs());
    let sci = if rounded.parse::<f64>() == Ok(x.abs()) {
        rounded
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if x < 0.0 {
        out.push('-');
    }
    let point = exp + 1; // digits before the decimal point
    let ndigits = digits.len() as i32;
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(&digits);
        } else if point >= ndigits {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (point - ndigits) as usize));
            out.push_str(".0");
        } else {
            let (int, frac) = digits.split_at(point as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        let (first, more) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !more.is_empty() {
            out.push('.');
            out.push_str(more);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
    out
}

/// Python's whitespace for `int()`/`float()` of bytes (includes `\v`).
fn trim_py_space(s: &[u8]) -> &[u8] {
    let space = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = s.iter().position(|c| !space(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|c| !space(c)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// Removes PEP 515 underscores (only single ones between digits are legal).
fn strip_underscores(s: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !s.contains(&b'_') {
        return Some(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut prev_digit = false;
    let mut iter = s.iter().peekable();
    while let Some(&c) = iter.next() {
        if c == b'_' {
            let next_digit = iter.peek().is_some_and(|n| n.is_ascii_digit());
            if !prev_digit || !next_digit {
                return None;
            }
        } else {
            out.push(c);
        }
        prev_digit = c.is_ascii_digit();
    }
    Some(Cow::Owned(out))
}

/// A Python int parsed from decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PyInt {
    Small(i64),
    /// Outside i64: the sign and the digits, without leading zeros.
    Big {
        negative: bool,
        digits: Vec<u8>,
    },
}

/// `int(text)` in base 10, as Python reads INT, LONG, PUT and GET arguments:
/// surrounding whitespace, a sign, PEP 515 underscores, at most
/// [`MAX_STR_DIGITS`] digits.
pub(crate) fn parse_int(text: &[u8]) -> Option<PyInt> {
    let s = trim_py_space(text);
    let (negative, body) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    let body = strip_underscores(body)?;
    if body.is_empty() || !body.iter().all(u8::is_ascii_digit) || body.len() > MAX_STR_DIGITS {
        return None;
    }
    let start = body.iter().position(|&c| c != b'0').unwrap_or(body.len());
    let digits = body.get(start..).unwrap_or_default();
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        let next = v.checked_mul(10).and_then(|v| {
            if negative {
                v.checked_sub(d)
            } else {
                v.checked_add(d)
            }
        });
        match next {
            Some(n) => v = n,
            None => {
                return Some(PyInt::Big {
                    negative,
                    digits: digits.to_vec(),
                });
            }
        }
    }
    Some(PyInt::Small(v))
}

/// The decimal text of a big [`PyInt`].
pub(crate) fn big_to_string(negative: bool, digits: &[u8]) -> String {
    let mut s = String::with_capacity(digits.len() + 1);
    if negative {
        s.push('-');
    }
    s.extend(digits.iter().map(|&d| char::from(d)));
    s
}

/// The little-endian two's-complement bytes pickle's LONG1 uses for an int,
/// minimal as Python's `encode_long` makes them (0 is empty).
pub(crate) fn int_to_le(value: &PyInt) -> Vec<u8> {
    let (negative, mut magnitude) = match value {
        PyInt::Small(v) => (*v < 0, v.unsigned_abs().to_le_bytes().to_vec()),
        PyInt::Big { negative, digits } => (*negative, decimal_to_magnitude(digits)),
    };
    while magnitude.last() == Some(&0) {
        magnitude.pop();
    }
    if magnitude.is_empty() {
        return magnitude;
    }
    magnitude.push(0);
    if negative {
        let mut carry = true;
        for b in &mut magnitude {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    while let [.., prev, last] = magnitude.as_slice() {
        if (*last == 0 && prev & 0x80 == 0) || (*last == 0xff && prev & 0x80 != 0) {
            magnitude.pop();
        } else {
            break;
        }
    }
    magnitude
}

/// Little-endian bytes of the magnitude of a decimal digit string.
fn decimal_to_magnitude(digits: &[u8]) -> Vec<u8> {
    let mut limbs: Vec<u32> = Vec::with_capacity(digits.len() / 9 + 1);
    for chunk in digits.chunks(9) {
        let (mut carry, mul) = chunk.iter().fold((0u64, 1u64), |(v, m), &d| {
            (v * 10 + u64::from(d - b'0'), m * 10)
        });
        for limb in &mut limbs {
            let t = u64::from(*limb) * mul + carry;
            *limb = t as u32;
            carry = t >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    }
    limbs.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// The value of little-endian two's-complement bytes, if it fits in i64.
pub(crate) fn le_to_i64(b: &[u8]) -> Option<i64> {
    let negative = b.last().is_some_and(|&l| l & 0x80 != 0);
    let fill = if negative { 0xff } else { 0 };
    let mut buf = [fill; 8];
    for (i, &byte) in b.iter().enumerate() {
        match buf.get_mut(i) {
            Some(slot) => *slot = byte,
            None if byte == fill => {}
            None => return None,
        }
    }
    let v = i64::from_le_bytes(buf);
    // A longer encoding must still agree with the sign of the 8 low bytes.
    ((v < 0) == negative).then_some(v)
}

/// Decimal text of little-endian two's-complement bytes, or `None` when it
/// would exceed [`MAX_STR_DIGITS`] digits (Python raises ValueError there).
pub(crate) fn le_to_decimal(b: &[u8]) -> Option<String> {
    if let Some(v) = le_to_i64(b) {
        return Some(v.to_string());
    }
    // Drop redundant sign bytes, then reject hopeless sizes early: 8 bits
    // carry at least 2.4 decimal digits.
    let mut b = b;
    while let [rest @ .., prev, last] = b {
        if (*last == 0 && prev & 0x80 == 0) || (*last == 0xff && prev & 0x80 != 0) {
            b = b.get(..rest.len() + 1).unwrap_or_default();
        } else {
            break;
        }
    }
    if b.len().saturating_mul(12) / 5 > MAX_STR_DIGITS + 1 {
        return None;
    }
    let negative = b.last().is_some_and(|&l| l & 0x80 != 0);
    let mut mag = b.to_vec();
    if negative {
        let mut carry = true;
        for byte in &mut mag {
            *byte = !*byte;
            if carry {
                let (v, c) = byte.overflowing_add(1);
                *byte = v;
                carry = c;
            }
        }
    }
    let mut limbs: Vec<u32> = mag
        .chunks(4)
        .map(|c| c.iter().rev().fold(0u32, |acc, &x| acc << 8 | u32::from(x)))
        .collect();
    let mut groups = Vec::new(); // base 10^9, least significant first
    while limbs.iter().any(|&l| l != 0) {
        let mut rem = 0u64;
        for limb in limbs.iter_mut().rev() {
            let cur = rem << 32 | u64::from(*limb);
            *limb = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        groups.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    let mut iter = groups.iter().rev();
    let _ = write!(s, "{}", iter.next().unwrap_or(&0));
    for g in iter {
        let _ = write!(s, "{g:09}");
    }
    (s.len() - usize::from(negative) <= MAX_STR_DIGITS).then_some(s)
}

/// `float(text)` as pickletools reads FLOAT: Python's `float()` of bytes.
pub(crate) fn parse_float_lenient(text: &[u8]) -> Option<f64> {
    let s = strip_underscores(trim_py_space(text))?;
    std::str::from_utf8(&s).ok()?.parse().ok()
}

/// FLOAT as the C unpickler reads it: no surrounding space, and a finite
/// literal that overflows is an error rather than infinity.
pub(crate) fn parse_float_strict(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    let v: f64 = s.parse().ok()?;
    if v.is_infinite() && !s.to_ascii_lowercase().contains("inf") {
        return None;
    }
    Some(v)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    fn repr_of(s: &str) -> String {
        let mut out = String::new();
        let mut utf8 = Vec::new();
        for c in s.chars() {
            push_code_point(&mut utf8, c.into());
        }
        repr_str(&mut out, CodePoints(&utf8));
        out
    }

    #[test]
    fn reprs_match_python() {
        assert_eq!(repr_of("it's"), "\"it's\"");
        assert_eq!(repr_of("a'\"b"), "'a\\'\"b'");
        assert_eq!(
            repr_of("é\u{a0}\u{ad}\u{2028}\u{10ffff}😀\t\\"),
            "'é\\xa0\\xad\\u2028\\U0010ffff😀\\t\\\\'"
        );
        let mut out = String::new();
        repr_bytes(&mut out, b"a'\x00\x7f\xff\n");
        assert_eq!(out, "b\"a'\\x00\\x7f\\xff\\n\"");
        let mut out = String::new();
        let mut surrogate = Vec::new();
        push_code_point(&mut surrogate, 0xd800);
        assert_eq!(check_utf8_surrogatepass(&surrogate), Ok(()));
        assert_eq!(check_utf8_surrogatepass(b"ab\xff"), Err(2));
        repr_str(&mut out, CodePoints(&surrogate));
        assert_eq!(out, "'\\ud800'");
    }

    #[test]
    fn floats_like_python() {
        for (x, s) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.123, "123456789.123"),
            (-0.0, "-0.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1 + 0.2, "0.30000000000000004"),
            // An exact tie between two 17-digit strings: Python rounds to even.
            (f64::from_bits(0x430e1c6d958d7b72), "1059438285926254.2"),
            (-2.5, "-2.5"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(repr_float(x), s);
        }
        assert_eq!(parse_float_lenient(b" 1_0.5 "), Some(10.5));
        assert_eq!(parse_float_strict(b"1e500"), None);
        assert_eq!(parse_float_strict(b"-inf"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn ints_of_any_size() {
        assert_eq!(parse_int(b" -1_000\n"), Some(PyInt::Small(-1000)));
        assert_eq!(parse_int(b"1__0"), None);
        assert_eq!(
            parse_int(b"-9223372036854775808"),
            Some(PyInt::Small(i64::MIN))
        );
        let big = parse_int(b"-123456789012345678901234567890").unwrap();
        let le = int_to_le(&big);
        assert_eq!(
            le_to_decimal(&le).unwrap(),
            "-123456789012345678901234567890"
        );
        for v in [
            0i64,
            1,
            -1,
            127,
            128,
            255,
            -128,
            -129,
            -256,
            i64::MIN,
            i64::MAX,
        ] {
            let le = int_to_le(&PyInt::Small(v));
            assert_eq!(le_to_i64(&le), Some(v), "{v}");
            assert_eq!(le_to_decimal(&le).unwrap(), v.to_string());
        }
        assert_eq!(int_to_le(&PyInt::Small(255)), [0xff, 0]);
        assert_eq!(int_to_le(&PyInt::Small(-256)), [0, 0xff]);
        assert_eq!(le_to_i64(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None);
        assert_eq!(
            le_to_decimal(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]).unwrap(),
            "9223372036854775808"
        );
        assert_eq!(le_to_decimal(&[0xff; 2000]).as_deref(), Some("-1"));
        assert_eq!(le_to_decimal(&[0x7f; 2000]), None);
        let mut padded = vec![0u8; 2000];
        padded[8] = 1;
        assert_eq!(le_to_decimal(&padded).unwrap(), "18446744073709551616");
        assert_eq!(parse_int(&[b'1'; 4301]), None);
    }

    #[test]
    fn escape_codecs() {
        assert_eq!(
            escape_decode(b"a\\777b\\q\\x41").unwrap().as_ref(),
            b"a\xffb\\qA"
        );
        assert!(escape_decode(b"a\\x4").is_err());
        assert!(escape_decode(b"a\\").is_err());
        assert_eq!(
            raw_unicode_escape_decode(b"a\\u00e9\\\\u00e9\xe9").unwrap(),
            "aé\\\\u00e9é".as_bytes()
        );
        assert!(raw_unicode_escape_decode(b"\\u00").is_err());
        assert!(raw_unicode_escape_decode(b"\\U00110000").is_err());
    }
}
