//! The ZEO frame decoder on arbitrary input split at arbitrary points: no
//! panic, every frame within the cap, the same frames whatever the split,
//! and no buffer growth beyond what was fed.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use zeo_proto::frame::FrameCodec;

const MAX: usize = 1 << 16;

fn frames(data: &[u8], step: usize) -> (Vec<bytes::Bytes>, bool) {
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= MAX);
                    out.push(f);
                }
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
        assert!(buf.capacity() <= data.len().max(8) * 2 + 64);
    }
    let ok = codec.decode_eof(&mut buf).is_ok();
    (out, ok)
}

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    let whole = frames(data, data.len());
    let split = frames(data, usize::from(step));
    assert_eq!(whole, split);
});
