//! The `ruok` answer: `json.dumps({storage name: server_status()})`, with
//! Python's separators (`", "`, `": "`) and key order, so monitoring that
//! parses or compares it (ZEO's `nagios.py`) sees what `runzeo` sends.

use std::fmt::Write as _;

use crate::value::Value;

/// JSON text of a status value (dicts of text keys, ints, floats, text,
/// bools, None), as `json.dumps` writes it.
pub fn to_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                // json.dumps escapes everything outside ASCII (ensure_ascii).
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::None => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => {
            // repr(float): shortest round-trip form, with a point.
            let s = format!("{f:?}");
            out.push_str(&s);
        }
        Value::Str(s) => write_str(out, s),
        Value::Bytes(b) | Value::Py2Str(b) => write_str(out, &String::from_utf8_lossy(b)),
        Value::Tuple(items) | Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, x);
            }
            out.push(']');
        }
        Value::Dict(pairs) => {
            out.push('{');
            for (i, (k, x)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match k {
                    Value::Str(s) => write_str(out, s),
                    other => write_str(out, &format!("{other:?}")),
                }
                out.push_str(": ");
                write_json(out, x);
            }
            out.push('}');
        }
        Value::Global(g) => write_str(out, &g.path()),
        Value::Object(_) => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_json_dumps() {
        let v = Value::str_dict([(
            "1",
            Value::str_dict([
                ("connections", Value::Int(0)),
                ("lock_time", Value::None),
                ("start", Value::str("Wed Nov 25 22:06:42 2026")),
                ("timeout-thread-is-alive", Value::str("stub")),
                ("x", Value::Float(1.5)),
                ("y", Value::Bool(true)),
            ]),
        )]);
        assert_eq!(
            to_json(&v),
            r#"{"1": {"connections": 0, "lock_time": null, "start": "Wed Nov 25 22:06:42 2026", "timeout-thread-is-alive": "stub", "x": 1.5, "y": true}}"#
        );
    }
}
