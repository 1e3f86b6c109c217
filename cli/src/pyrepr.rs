//! Python's `repr()` of byte strings, as the ZODB tools print user names,
//! descriptions and status bytes.
//!
//! Python 3 prints `bytes` as `b'...'`; Python 2 printed the same `str`
//! without the `b`. The tools run by Python 3 on a Python 2 era file (and
//! the goldens recorded by Python 2) differ only in that, so one function
//! with a [`Flavor`] covers both.

use std::fmt::Write;

/// Which Python's output to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    /// Python 3 (ZODB 5/6): bytes print as `b'...'`.
    #[default]
    Py3,
    /// Python 2 (ZODB 3-5 on Python 2): the same bytes print as `'...'`.
    Py2,
}

/// `repr(b)` for a byte string: single quotes unless the bytes contain a
/// single quote and no double quote; `\t`, `\n`, `\r`, `\\` and the quote
/// escaped; other bytes outside printable ASCII as `\xNN`.
pub fn bytes(b: &[u8], flavor: Flavor) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut s = String::with_capacity(b.len() + 3);
    if flavor == Flavor::Py3 {
        s.push('b');
    }
    s.push(char::from(quote));
    for &c in b {
        match c {
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\\' => s.push_str("\\\\"),
            _ if c == quote => {
                s.push('\\');
                s.push(char::from(c));
            }
            0x20..=0x7e => s.push(char::from(c)),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s.push(char::from(quote));
    s
}

/// `repr()` of a Python `str` that holds only printable ASCII or the
/// ASCII escapes (class names, `<unknown>`); other characters are shown as
/// `\xNN`/`\uNNNN` escapes, which is what Python prints for the
/// non-printable ones.
pub fn str_ascii(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            _ if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ if (c as u32) < 0x100 && !c.is_alphanumeric() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr()` of a one-character `str` decoded from a status byte, as
/// Python 3 prints `TxnHeader.status` (`' '`, `'p'`).
pub fn str_char(c: u8) -> String {
    // A status byte is decoded as ASCII, so only ASCII rules apply.
    let mut s = bytes(&[c], Flavor::Py2);
    if c >= 0x80 {
        // Python would have failed to decode it; show it as Latin-1 escape.
        s = format!("'\\x{c:02x}'");
    }
    s
}

/// `repr()` of a value that Python holds as `str` when empty (the tools
/// initialise it to `""`) and as bytes otherwise: `''` for empty input.
pub fn bytes_or_empty_str(b: &[u8], flavor: Flavor) -> String {
    if b.is_empty() {
        "''".to_owned()
    } else {
        bytes(b, flavor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes_like_python() {
        assert_eq!(bytes(b"", Flavor::Py3), "b''");
        assert_eq!(bytes(b"user0.1", Flavor::Py3), "b'user0.1'");
        assert_eq!(bytes(b"it's", Flavor::Py3), "b\"it's\"");
        assert_eq!(bytes(b"a'b\"c", Flavor::Py2), "'a\\'b\"c'");
        assert_eq!(
            bytes(b"\x00\t\n\r\x7f\xff\\", Flavor::Py2),
            "'\\x00\\t\\n\\r\\x7f\\xff\\\\'"
        );
        assert_eq!(bytes_or_empty_str(b"", Flavor::Py3), "''");
    }
}
