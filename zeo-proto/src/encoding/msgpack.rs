//! `M`: msgpack as ZEO's marshal uses it.
//!
//! Writing mirrors `msgpack.packb(obj, use_bin_type=True)` of msgpack ≥ 1.0
//! (C packer): None → nil, bools → `c2`/`c3`, non-negative ints → the
//! smallest of positive fixint/uint8/16/32/64, negative ints → the smallest
//! of negative fixint/int8/16/32/64, float → float64, bytes → bin, str →
//! str (str8 allowed), tuples and lists → array, dicts → map in insertion
//! order. There are no ext types in ZEO. What msgpack cannot carry (sets,
//! globals, ints outside −2⁶³..2⁶⁴) is an [`EncodeError`], as Python raises;
//! the one exception is the server's `default` hook, which writes an
//! exception object as `(class path, __dict__ or args)`, so an exception
//! nested in a reply (a `MultipleUndoErrors`'s `UndoError`s) is written that
//! way here too.
//!
//! Reading mirrors `unpackb(raw=False, use_list=False,
//! strict_map_key=False)`: arrays become tuples, str must be UTF-8, bin is
//! bytes, trailing bytes are an error, ext types are refused. Every length
//! is checked against the bytes that remain before anything is allocated.

use bytes::{BufMut, Bytes};
use rmp::Marker;

use super::{DecodeError, EncodeError, MAX_DEPTH, PayloadWriter};
use crate::value::{ObjectKind, Value};

/// Decodes exactly one msgpack value filling `data`.
pub fn decode(data: &Bytes) -> Result<Value, DecodeError> {
    let mut r = Reader { data, pos: 0 };
    let v = r.value(0)?;
    match data.len() - r.pos {
        0 => Ok(v),
        n => Err(DecodeError::TrailingData(n)),
    }
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, offset: usize, what: &'static str) -> DecodeError {
        DecodeError::Msgpack { offset, what }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(DecodeError::Msgpack {
                offset: start,
                what: "truncated",
            })?;
        self.pos = end;
        self.data.get(start..end).ok_or(DecodeError::Msgpack {
            offset: start,
            what: "truncated",
        })
    }

    fn take_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.data.slice(start..self.pos))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        s.try_into().map_err(|_| DecodeError::Msgpack {
            offset: 0,
            what: "truncated",
        })
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A count of items that each need at least `min_size` more bytes:
    /// refused if the input cannot possibly hold them.
    fn count(&self, at: usize, n: u32, min_size: usize) -> Result<usize, DecodeError> {
        let n = n as usize;
        if n.saturating_mul(min_size) > self.data.len() - self.pos {
            return Err(self.err(at, "length runs past the end of the input"));
        }
        Ok(n)
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let at = self.pos;
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooLarge);
        }
        let marker = Marker::from_u8(self.u8()?);
        Ok(match marker {
            Marker::Null => Value::None,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::FixPos(v) => Value::Int(i128::from(v)),
            Marker::FixNeg(v) => Value::Int(i128::from(v)),
            Marker::U8 => Value::Int(i128::from(self.u8()?)),
            Marker::U16 => Value::Int(i128::from(self.u16()?)),
            Marker::U32 => Value::Int(i128::from(self.u32()?)),
            Marker::U64 => Value::Int(i128::from(self.u64()?)),
            Marker::I8 => Value::Int(i128::from(self.u8()? as i8)),
            Marker::I16 => Value::Int(i128::from(self.u16()? as i16)),
            Marker::I32 => Value::Int(i128::from(self.u32()? as i32)),
            Marker::I64 => Value::Int(i128::from(self.u64()? as i64)),
            Marker::F32 => Value::Float(f64::from(f32::from_bits(self.u32()?))),
            Marker::F64 => Value::Float(f64::from_bits(self.u64()?)),
            Marker::FixStr(n) => self.str(usize::from(n))?,
            Marker::Str8 => {
                let n = self.u8()?;
                self.str(usize::from(n))?
            }
            Marker::Str16 => {
                let n = self.u16()?;
                self.str(usize::from(n))?
            }
            Marker::Str32 => {
                let n = self.u32()?;
                self.str(n as usize)?
            }
            Marker::Bin8 => {
                let n = self.u8()?;
                Value::Bytes(self.take_bytes(usize::from(n))?)
            }
            Marker::Bin16 => {
                let n = self.u16()?;
                Value::Bytes(self.take_bytes(usize::from(n))?)
            }
            Marker::Bin32 => {
                let n = self.u32()?;
                Value::Bytes(self.take_bytes(n as usize)?)
            }
            Marker::FixArray(n) => self.seq(at, u32::from(n), depth)?,
            Marker::Array16 => {
                let n = self.u16()?;
                self.seq(at, u32::from(n), depth)?
            }
            Marker::Array32 => {
                let n = self.u32()?;
                self.seq(at, n, depth)?
            }
            Marker::FixMap(n) => self.map(at, u32::from(n), depth)?,
            Marker::Map16 => {
                let n = self.u16()?;
                self.map(at, u32::from(n), depth)?
            }
            Marker::Map32 => {
                let n = self.u32()?;
                self.map(at, n, depth)?
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => {
                return Err(DecodeError::Unsupported(
                    "msgpack ext type (ZEO defines none)",
                ));
            }
            Marker::Reserved => return Err(self.err(at, "reserved marker 0xc1")),
        })
    }

    fn str(&mut self, n: usize) -> Result<Value, DecodeError> {
        let s = self.take(n)?;
        let s = std::str::from_utf8(s).map_err(|_| DecodeError::BadText)?;
        Ok(Value::Str(s.to_owned()))
    }

    fn seq(&mut self, at: usize, n: u32, depth: usize) -> Result<Value, DecodeError> {
        let n = self.count(at, n, 1)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Tuple(items))
    }

    fn map(&mut self, at: usize, n: u32, depth: usize) -> Result<Value, DecodeError> {
        let n = self.count(at, n, 2)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            items.push((k, v));
        }
        Ok(Value::Dict(items))
    }
}

/// Packs `value` as `packb(value, use_bin_type=True)` does.
pub fn encode(value: &Value) -> Result<Bytes, EncodeError> {
    let mut out = PayloadWriter::default();
    write_message(&mut out, value)?;
    Ok(out.finish_bytes())
}

/// The packing of the array `[msgid, flags, method, args]`, byte for byte
/// what [`write_message`] writes for that tuple.
pub(crate) fn write_message_tuple(
    out: &mut PayloadWriter,
    msgid: &Value,
    flags: &Value,
    method: &str,
    args: &Value,
) -> Result<(), EncodeError> {
    rmp::encode::write_array_len(out, 4).map_err(|_| fail("(write error)"))?;
    write(out, msgid, 1)?;
    write(out, flags, 1)?;
    rmp::encode::write_str_len(out, len32(method.len(), "str")?)
        .map_err(|_| fail("(write error)"))?;
    out.put_slice(method.as_bytes());
    write(out, args, 1)
}

/// The whole packing of `value`, into `out`.
pub(crate) fn write_message(out: &mut PayloadWriter, value: &Value) -> Result<(), EncodeError> {
    write(out, value, 0)
}

fn fail(what: impl Into<String>) -> EncodeError {
    EncodeError {
        encoding: "msgpack",
        what: what.into(),
    }
}

type Out = PayloadWriter;

fn len32(n: usize, what: &str) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(|_| fail(format!("{what} of {n} items or bytes")))
}

fn write(out: &mut Out, v: &Value, depth: usize) -> Result<(), EncodeError> {
    // Writing into a BytesMut cannot fail; rmp's io errors are impossible.
    let io = |_| fail("(write error)");
    if depth > MAX_DEPTH {
        return Err(fail("a value nested this deeply"));
    }
    match v {
        Value::None => rmp::encode::write_nil(out).map_err(io)?,
        Value::Bool(b) => rmp::encode::write_bool(out, *b).map_err(io)?,
        Value::Int(i) => {
            if let Ok(u) = u64::try_from(*i) {
                rmp::encode::write_uint(out, u).map_err(|_| fail("(write error)"))?;
            } else if let Ok(s) = i64::try_from(*i) {
                rmp::encode::write_sint(out, s).map_err(|_| fail("(write error)"))?;
            } else {
                return Err(fail(format!("int {i} (out of msgpack's range)")));
            }
        }
        Value::Float(f) => rmp::encode::write_f64(out, *f).map_err(|_| fail("(write error)"))?,
        Value::Bytes(b) | Value::Py2Str(b) => {
            rmp::encode::write_bin_len(out, len32(b.len(), "bytes")?)
                .map_err(|_| fail("(write error)"))?;
            out.put_bytes(b);
        }
        Value::Str(s) => {
            rmp::encode::write_str_len(out, len32(s.len(), "str")?)
                .map_err(|_| fail("(write error)"))?;
            out.put_slice(s.as_bytes());
        }
        Value::Tuple(items) | Value::List(items) => {
            rmp::encode::write_array_len(out, len32(items.len(), "array")?)
                .map_err(|_| fail("(write error)"))?;
            for item in items {
                write(out, item, depth + 1)?;
            }
        }
        Value::Dict(items) => {
            rmp::encode::write_map_len(out, len32(items.len(), "map")?)
                .map_err(|_| fail("(write error)"))?;
            for (k, v) in items {
                write(out, k, depth + 1)?;
                write(out, v, depth + 1)?;
            }
        }
        Value::Object(obj)
            if obj.kind == ObjectKind::Reduce && obj.class.is("ZODB.POSException", "_recon") =>
        {
            // The server's `default` hook: reduce_exception(exc) =
            // (class path, exc.__dict__ or exc.args).
            let (Some(Value::Global(cls)), Some(Value::Dict(state))) =
                (obj.args.first(), obj.args.get(1))
            else {
                return Err(fail("a malformed exception object"));
            };
            let dict: Vec<(Value, Value)> = state
                .iter()
                .filter(|(k, _)| k.as_text() != Some("args"))
                .cloned()
                .collect();
            let reduced = if dict.is_empty() {
                state
                    .iter()
                    .rev()
                    .find(|(k, _)| k.as_text() == Some("args"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Tuple(Vec::new()))
            } else {
                Value::Dict(dict)
            };
            write(
                out,
                &Value::Tuple(vec![Value::Str(cls.path()), reduced]),
                depth + 1,
            )?;
        }
        Value::Set(_) | Value::FrozenSet(_) | Value::Global(_) | Value::Object(_) => {
            return Err(fail(format!(
                "a {} (msgpack cannot serialize it)",
                v.type_name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        let s: String = s.split_whitespace().collect();
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn captured_register_and_heartbeat() {
        // spec zeo.md §3.2: register("1", 0) and the heartbeat.
        let reg = hex("94 01 c2 a8 7265676973746572 92 a1 31 00");
        let v = decode(&reg).unwrap();
        assert_eq!(
            v,
            Value::Tuple(vec![
                Value::Int(1),
                Value::Bool(false),
                Value::str("register"),
                Value::Tuple(vec![Value::str("1"), Value::Int(0)]),
            ])
        );
        assert_eq!(encode(&v).unwrap(), reg);
        let hb = hex("94 ff 00 a6 2e7265706c79 c0");
        let v = decode(&hb).unwrap();
        assert_eq!(v.as_seq().unwrap()[0], Value::Int(-1));
        assert_eq!(encode(&v).unwrap(), hb);
    }

    #[test]
    fn int_forms_match_python() {
        for (i, want) in [
            (0i128, "00"),
            (127, "7f"),
            (128, "cc80"),
            (256, "cd0100"),
            (65536, "ce00010000"),
            (1 << 32, "cf0000000100000000"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-129, "d1ff7f"),
            (-32769, "d2ffff7fff"),
            (-(1i128 << 31) - 1, "d3ffffffff7fffffff"),
            ((1 << 64) - 1, "cfffffffffffffffff"),
        ] {
            assert_eq!(encode(&Value::Int(i)).unwrap(), hex(want), "{i}");
            assert_eq!(decode(&hex(want)).unwrap(), Value::Int(i));
        }
        assert!(encode(&Value::Int(1 << 64)).is_err());
        assert!(encode(&Value::Set(vec![])).is_err());
    }

    #[test]
    fn hostile_lengths_and_ext_types() {
        // An array claiming 2^32-1 items in 5 bytes.
        assert!(matches!(
            decode(&hex("ddffffffff")),
            Err(DecodeError::Msgpack { .. })
        ));
        assert!(matches!(
            decode(&hex("dbffffffff")),
            Err(DecodeError::Msgpack { .. })
        ));
        assert!(matches!(
            decode(&hex("d40100")),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode(&hex("c1")),
            Err(DecodeError::Msgpack { .. })
        ));
        assert_eq!(decode(&hex("c0c0")), Err(DecodeError::TrailingData(1)));
        assert_eq!(decode(&hex("a2c328")), Err(DecodeError::BadText));
        let deep = Bytes::from(vec![0x91u8; MAX_DEPTH + 2]);
        assert_eq!(decode(&deep), Err(DecodeError::TooLarge));
    }
}
