//! The `.npy` header NumPy writes (`numpy.lib.format`, versions 1.0 and
//! 2.0), byte for byte as `np.save` makes it for ASCII field names, and
//! the reading of any `.npy` header (1.0, 2.0 and 3.0) for imports.
//!
//! Layout: magic `\x93NUMPY`, major and minor version, the header length
//! (little-endian u16 in 1.0, u32 in 2.0), then the header: a Python dict
//! literal `{'descr': ..., 'fortran_order': ..., 'shape': ..., }`, spaces
//! so that the shape can grow in place (21 minus the digits of the growth
//! axis), more spaces to align the data to 64 bytes, and a newline.

use std::io::Read;

use crate::array::NpyHeader;
use crate::dtype::{Descr, DescrField, py_tuple};
use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Data starts at a multiple of this.
const ARRAY_ALIGN: usize = 64;
/// Room left for the growth axis' digits (`len(str(8 * 2**64 - 1))`).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// The header dict as NumPy prints it, before padding.
fn dict_text(h: &NpyHeader) -> String {
    let mut s = String::from("{'descr': ");
    s.push_str(&h.descr.to_python());
    s.push_str(", 'fortran_order': ");
    s.push_str(if h.fortran_order { "True" } else { "False" });
    s.push_str(", 'shape': ");
    py_tuple(&mut s, &h.shape);
    s.push_str(", }");
    let growth = if h.fortran_order {
        h.shape.last()
    } else {
        h.shape.first()
    };
    if let Some(n) = growth {
        let digits = n.to_string().len();
        s.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    s
}

/// The complete header: magic, version, length, dict, padding, newline.
/// Version 1.0 unless the header exceeds its 64 KiB limit. The dict is
/// ASCII ([`crate::dtype::Descr::to_python`] escapes other characters), so
/// version 3.0 (UTF-8) is never needed.
pub fn header(h: &NpyHeader) -> Vec<u8> {
    let dict = dict_text(h);
    let hlen = dict.len() + 1;
    // Magic, two version bytes, the length field, the dict and its newline.
    let pad = |prefix: usize| ARRAY_ALIGN - (MAGIC.len() + 2 + prefix + hlen) % ARRAY_ALIGN;
    let mut out = Vec::with_capacity(hlen + 2 * ARRAY_ALIGN);
    out.extend_from_slice(MAGIC);
    let padlen = pad(2);
    match u16::try_from(hlen + padlen) {
        Ok(n) => {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&le_u16(n));
            out.extend_from_slice(dict.as_bytes());
            out.resize(out.len() + padlen, b' ');
        }
        Err(_) => {
            let padlen = pad(4);
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&le_u32(u32::try_from(hlen + padlen).unwrap_or(u32::MAX)));
            out.extend_from_slice(dict.as_bytes());
            out.resize(out.len() + padlen, b' ');
        }
    }
    out.push(b'\n');
    out
}

/// Reads a `.npy` header from `r` (leaving `r` at the first data byte)
/// and returns it with its length in bytes. The dict is parsed as the
/// Python literal it is (`ast.literal_eval` in NumPy), so any header NumPy
/// writes reads: structured descrs, titles, subarrays, escapes.
pub fn read_header(r: &mut dyn Read) -> Result<(NpyHeader, u64)> {
    let bad = |what: String| Error::NpyHeader(what);
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|e| bad(format!("reading the magic: {e}")))?;
    let (magic, version) = pre.split_at(6);
    if magic != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (major, minor) = (version.first().copied(), version.get(1).copied());
    let len_bytes = match major {
        Some(1) => 2,
        Some(2 | 3) => 4,
        _ => {
            return Err(bad(format!(
                "format version {}.{} is not 1.0, 2.0 or 3.0",
                major.unwrap_or(0),
                minor.unwrap_or(0)
            )));
        }
    };
    let mut lenbuf = [0u8; 4];
    let lenbuf = lenbuf.get_mut(..len_bytes).unwrap_or_default();
    r.read_exact(lenbuf)
        .map_err(|e| bad(format!("reading the header length: {e}")))?;
    let hlen = lenbuf
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if hlen > 64 << 20 {
        return Err(bad(format!("header of {hlen} bytes")));
    }
    let mut text = vec![0u8; hlen];
    r.read_exact(&mut text)
        .map_err(|e| bad(format!("reading the header: {e}")))?;
    let text: String = if major == Some(3) {
        String::from_utf8(text).map_err(|_| bad("header is not UTF-8".into()))?
    } else {
        text.iter().map(|&b| char::from(b)).collect()
    };
    let lit = Lit::parse(&text).map_err(bad)?;
    let items = match lit {
        Lit::Dict(items) => items,
        _ => return Err(bad("header is not a dict".into())),
    };
    let get = |k: &str| {
        items
            .iter()
            .find(|(key, _)| matches!(key, Lit::Str(s) if s == k))
            .map(|(_, v)| v)
            .ok_or_else(|| bad(format!("header has no {k:?}")))
    };
    let descr = descr_of(get("descr")?).map_err(bad)?;
    let fortran_order = match get("fortran_order")? {
        Lit::Bool(b) => *b,
        _ => return Err(bad("fortran_order is not a bool".into())),
    };
    let shape = match get("shape")? {
        Lit::Tuple(items) => items
            .iter()
            .map(|x| match x {
                Lit::Int(n) => u64::try_from(*n).map_err(|_| bad(format!("shape has {n}"))),
                _ => Err(bad("shape holds a non-int".into())),
            })
            .collect::<Result<Vec<u64>>>()?,
        _ => return Err(bad("shape is not a tuple".into())),
    };
    let total = 8 + len_bytes + hlen;
    Ok((
        NpyHeader {
            descr,
            fortran_order,
            shape,
        },
        total as u64,
    ))
}

/// Parses a `descr` written as the Python literal `.npy` headers hold
/// (`'<f8'`, `[('x', '<i4'), ('y', '>f8', (2,))]`, `('<f4', (2, 2))`).
pub fn parse_descr(text: &str) -> Result<Descr> {
    let lit = Lit::parse(text).map_err(Error::NpyHeader)?;
    descr_of(&lit).map_err(Error::NpyHeader)
}

/// A `descr` value: a type string, a `(descr, shape)` subarray, or a list
/// of `(name, descr[, shape])` fields whose name may be `(title, name)`.
fn descr_of(v: &Lit) -> Result<Descr, String> {
    match v {
        Lit::Str(s) => Ok(Descr::Type(s.clone())),
        Lit::Tuple(t) => match t.as_slice() {
            [d, shape] => Ok(Descr::SubArray(Box::new(descr_of(d)?), shape_of(shape)?)),
            _ => Err("a tuple descr is not (descr, shape)".into()),
        },
        Lit::List(fields) => {
            let mut out = Vec::with_capacity(fields.len());
            for f in fields {
                let parts = match f {
                    Lit::Tuple(p) | Lit::List(p) => p,
                    _ => return Err("a field is not a tuple".into()),
                };
                let (name, descr, shape) = match parts.as_slice() {
                    [n, d] => (n, d, None),
                    [n, d, s] => (n, d, Some(shape_of(s)?)),
                    _ => return Err("a field is not (name, descr[, shape])".into()),
                };
                let (title, name) = match name {
                    Lit::Str(n) => (None, n.clone()),
                    Lit::Tuple(tn) => match tn.as_slice() {
                        [Lit::Str(t), Lit::Str(n)] => (Some(t.clone()), n.clone()),
                        _ => return Err("a field name is not (title, name)".into()),
                    },
                    _ => return Err("a field name is not text".into()),
                };
                out.push(DescrField {
                    name,
                    title,
                    descr: descr_of(descr)?,
                    shape,
                });
            }
            Ok(Descr::Fields(out))
        }
        _ => Err("descr is not a string, tuple or list".into()),
    }
}

fn shape_of(v: &Lit) -> Result<Vec<u64>, String> {
    let one = |x: &Lit| match x {
        Lit::Int(n) => u64::try_from(*n).map_err(|_| format!("negative dimension {n}")),
        _ => Err("a dimension is not an int".into()),
    };
    match v {
        Lit::Int(_) => Ok(vec![one(v)?]),
        Lit::Tuple(t) | Lit::List(t) => t.iter().map(one).collect(),
        _ => Err("a shape is not a tuple".into()),
    }
}

/// The Python literals a `.npy` header holds.
#[derive(Clone, Debug, PartialEq)]
enum Lit {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

/// Nesting deeper than this is refused (real descrs nest a few levels).
const MAX_LIT_DEPTH: usize = 64;

impl Lit {
    fn parse(text: &str) -> Result<Lit, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut p = LitParser { s: &chars, i: 0 };
        let v = p.value(0)?;
        p.ws();
        if p.i != chars.len() {
            return Err(format!("unexpected text at character {}", p.i));
        }
        Ok(v)
    }
}

struct LitParser<'a> {
    s: &'a [char],
    i: usize,
}

impl LitParser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > MAX_LIT_DEPTH {
            return Err("literal nested too deeply".into());
        }
        self.ws();
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.i += 1;
                self.string(q).map(Lit::Str)
            }
            Some('(') => {
                self.i += 1;
                let (items, trailing) = self.seq(')', depth)?;
                // `(x)` is x itself; `(x,)` and `()` are tuples.
                if items.len() == 1 && !trailing {
                    Ok(items.into_iter().next().unwrap_or(Lit::None))
                } else {
                    Ok(Lit::Tuple(items))
                }
            }
            Some('[') => {
                self.i += 1;
                Ok(Lit::List(self.seq(']', depth)?.0))
            }
            Some('{') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat('}') {
                        return Ok(Lit::Dict(items));
                    }
                    let k = self.value(depth + 1)?;
                    if !self.eat(':') {
                        return Err(format!("expected ':' at character {}", self.i));
                    }
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    if !self.eat(',') {
                        if self.eat('}') {
                            return Ok(Lit::Dict(items));
                        }
                        return Err(format!("expected ',' or '}}' at character {}", self.i));
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.int(),
            Some(c) if c.is_alphabetic() => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.i += 1;
                }
                let word: String = self
                    .s
                    .get(start..self.i)
                    .unwrap_or_default()
                    .iter()
                    .collect();
                match word.as_str() {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    "L" => Err("unexpected L".into()),
                    _ => Err(format!("unknown name {word:?}")),
                }
            }
            _ => Err(format!("unexpected character at {}", self.i)),
        }
    }

    /// Items up to `close`; also whether a comma followed the last one.
    fn seq(&mut self, close: char, depth: usize) -> Result<(Vec<Lit>, bool), String> {
        let mut items = Vec::new();
        let mut trailing = false;
        loop {
            if self.eat(close) {
                return Ok((items, trailing));
            }
            items.push(self.value(depth + 1)?);
            trailing = self.eat(',');
            if !trailing {
                if self.eat(close) {
                    return Ok((items, false));
                }
                return Err(format!("expected ',' or {close:?} at character {}", self.i));
            }
        }
    }

    fn int(&mut self) -> Result<Lit, String> {
        let start = self.i;
        if matches!(self.peek(), Some('-' | '+')) {
            self.i += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let text: String = self
            .s
            .get(start..self.i)
            .unwrap_or_default()
            .iter()
            .collect();
        // Python 2 wrote longs as `3L`.
        if self.peek() == Some('L') {
            self.i += 1;
        }
        text.parse()
            .map(Lit::Int)
            .map_err(|_| format!("bad int {text:?}"))
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.i += 1;
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.peek().ok_or("unterminated escape")?;
            self.i += 1;
            let hex = |p: &mut Self, n: usize| -> Result<char, String> {
                let digits: String =
                    p.s.get(p.i..p.i + n)
                        .ok_or("short escape")?
                        .iter()
                        .collect();
                p.i += n;
                u32::from_str_radix(&digits, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad escape \\{digits}"))
            };
            match e {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                'x' => out.push(hex(self, 2)?),
                'u' => out.push(hex(self, 4)?),
                'U' => out.push(hex(self, 8)?),
                '\n' => {}
                other => out.push(other),
            }
        }
    }
}

#[expect(
    clippy::little_endian_bytes,
    reason = "the .npy header length is little-endian by format"
)]
fn le_u16(n: u16) -> [u8; 2] {
    n.to_le_bytes()
}

#[expect(
    clippy::little_endian_bytes,
    reason = "the .npy header length is little-endian by format"
)]
fn le_u32(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::dtype::{Descr, DescrField};

    #[test]
    fn simple_header_matches_numpy() {
        // np.save(f, np.zeros((3, 4)))
        let h = header(&NpyHeader {
            descr: Descr::Type("<f8".into()),
            fortran_order: false,
            shape: vec![3, 4],
        });
        let expect =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }";
        assert_eq!(h.get(..expect.len()), Some(&expect[..]));
        assert_eq!(h.len() % 64, 0);
        assert_eq!(h.last(), Some(&b'\n'));
        assert_eq!(h.len(), 128);
    }

    #[test]
    fn structured_descr_and_scalar_shape() {
        let d = Descr::Fields(vec![
            DescrField {
                name: "x".into(),
                title: Some("t'".into()),
                descr: Descr::Type("<i4".into()),
                shape: None,
            },
            DescrField {
                name: "é".into(),
                title: None,
                descr: Descr::Type(">f8".into()),
                shape: Some(vec![2]),
            },
        ]);
        assert_eq!(
            d.to_python(),
            r#"[(("t'", 'x'), '<i4'), ('\xe9', '>f8', (2,))]"#
        );
        let h = header(&NpyHeader {
            descr: Descr::Type("|u1".into()),
            fortran_order: true,
            shape: vec![],
        });
        let text = String::from_utf8_lossy(&h);
        assert!(
            text.contains("'fortran_order': True, 'shape': (), }"),
            "{text}"
        );
        assert_eq!(h.len() % 64, 0);
    }

    #[test]
    fn headers_read_back() {
        let cases = [
            NpyHeader {
                descr: Descr::Type("<f8".into()),
                fortran_order: false,
                shape: vec![3, 4],
            },
            NpyHeader {
                descr: Descr::Fields(vec![
                    DescrField {
                        name: "x".into(),
                        title: Some("t'\"\\".into()),
                        descr: Descr::Type("<i4".into()),
                        shape: None,
                    },
                    DescrField {
                        name: "é€".into(),
                        title: None,
                        descr: Descr::Type(">f8".into()),
                        shape: Some(vec![2]),
                    },
                ]),
                fortran_order: true,
                shape: vec![],
            },
            NpyHeader {
                descr: Descr::Type("|u1".into()),
                fortran_order: false,
                shape: vec![7],
            },
        ];
        for h in cases {
            let bytes = header(&h);
            let (got, len) = read_header(&mut &bytes[..]).unwrap();
            assert_eq!(got, h);
            assert_eq!(len, bytes.len() as u64);
        }
        assert!(read_header(&mut &b"\x93NUMPY\x09\x00"[..]).is_err());
        assert!(read_header(&mut &b"PK\x03\x04...."[..]).is_err());
    }
}
