//! Shared by the golden tests: reading the transcripts that
//! `tests/transcripts/capture.py` wrote, and the typed JSON it uses for
//! what Python's own decoder made of each frame.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers"
)]

use bytes::Bytes;
use serde_json::{Value as Json, json};
use zeo_proto::value::{ObjectKind, Value};

pub fn transcript(name: &str) -> Vec<Json> {
    let path = format!("{}/tests/transcripts/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn unhex(s: &str) -> Bytes {
    Bytes::from(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    )
}

/// The typed JSON of capture.py's `tj()` for one of our values.
pub fn tj(v: &Value) -> Json {
    let seq = |items: &[Value]| Json::Array(items.iter().map(tj).collect());
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!({ "int": i.to_string() }),
        Value::Float(f) => json!({ "float": format!("{:016x}", f.to_bits()) }),
        Value::Bytes(b) => json!({ "bytes": hex(b) }),
        // Python 3 reads a Python 2 str as text (ASCII).
        Value::Py2Str(b) => json!({ "str": String::from_utf8_lossy(b) }),
        Value::Str(s) => json!({ "str": s }),
        Value::Tuple(t) => json!({ "tuple": seq(t) }),
        Value::List(t) => json!({ "list": seq(t) }),
        Value::Set(t) => json!({ "set": seq(t) }),
        Value::FrozenSet(t) => json!({ "frozenset": seq(t) }),
        Value::Dict(d) => {
            json!({ "dict": d.iter().map(|(k, v)| json!([tj(k), tj(v)])).collect::<Vec<_>>() })
        }
        Value::Global(g) => json!({ "global": g.path() }),
        Value::Object(o) => match (o.kind, o.args.as_slice()) {
            // _recon(cls, state): Python holds an instance of cls whose
            // __dict__ is the state without 'args'.
            (ObjectKind::Reduce, [Value::Global(cls), Value::Dict(state)]) => {
                let dict: Vec<(Value, Value)> = state
                    .iter()
                    .filter(|(k, _)| k.as_text() != Some("args"))
                    .cloned()
                    .collect();
                json!({ "object": cls.path(), "state": tj(&Value::Dict(dict)) })
            }
            _ => {
                json!({ "object": o.class.path(), "state": o.state.as_ref().map(tj).unwrap_or(Json::Null) })
            }
        },
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}
