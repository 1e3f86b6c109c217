//! Every pickle reader on arbitrary input: none may panic, hang or allocate
//! beyond the input's size.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zodb_core::pickle::{
    DisFlavor, DisMemo, class_name, decode, decode_record, decode_stream, dis, references,
};

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    if let Ok(rec) = decode_record(&bytes) {
        let _ = format!("{rec:?}");
        for v in rec.graph.values() {
            let _ = (v.as_bytes(), v.as_text(), v.as_int(), v.persistent_ref());
        }
    }
    if let Ok((graph, root)) = decode(&bytes) {
        let _ = format!("{:?}", graph.value(root));
    }
    let _ = decode_stream(&bytes);
    let _ = references(data);
    let _ = class_name(data);
    for flavor in [DisFlavor::Python3, DisFlavor::Python2] {
        let mut out = String::new();
        let mut memo = DisMemo::with_flavor(flavor);
        if let Ok(end) = dis(data, 0, &mut out, &mut memo) {
            let _ = dis(data, end, &mut out, &mut memo);
        }
    }
});
