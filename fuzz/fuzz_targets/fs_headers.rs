//! Record headers: decode, re-encode to the same bytes, and check, for any
//! input and any claimed positions.

#![no_main]

use filestorage::format::{DataHeader, TxnHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(raw) = data.get(..42) else { return };
    let mut d = [0u8; 42];
    d.copy_from_slice(raw);
    let h = DataHeader::decode(&d);
    assert_eq!(h.encode(), d);
    let pos = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
    let _ = h.check(pos, h.tloc, pos.wrapping_add(h.plen));
    let mut t = [0u8; 23];
    t.copy_from_slice(&raw[..23]);
    let th = TxnHeader::decode(&t);
    assert_eq!(th.encode(), t);
    let _ = (th.check(), th.record_len(), th.header_len());
});
