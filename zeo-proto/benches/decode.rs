//! Decode throughput of the hot client messages, per encoding: the
//! `loadBefore` call a server decodes for every load, a 4 KiB `storea`, and
//! the `loadBefore` reply a client decodes. Prints messages/s and MB/s.
//!
//! `cargo bench -p zeo-proto --bench decode`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeo_proto::encoding::Encoding;
use zeo_proto::reply::{LoadedRevision, ServerMessage};
use zeo_proto::request::{Incoming, Request, TxnId};
use zeo_proto::value::Value;
use zodb_core::{Oid, Tid};

fn measure(label: &str, frame: &Bytes, mut f: impl FnMut(&Bytes)) {
    // Warm up, then run for about half a second.
    for _ in 0..1000 {
        f(frame);
    }
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        for _ in 0..1000 {
            f(black_box(frame));
        }
        n += 1000;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label:<40} {:>12.0} msg/s {:>9.1} MB/s ({} bytes/msg)",
        n as f64 / secs,
        n as f64 * frame.len() as f64 / secs / 1e6,
        frame.len()
    );
}

fn main() {
    let oid = Oid(0x1234);
    let tid = Tid(0x03f5_0000_0000_0001);
    let load = Request::LoadBefore { oid, before: tid };
    let store = Request::Storea {
        oid,
        serial: tid,
        data: Bytes::from(vec![0x55; 4096]),
        txn: TxnId(140_562_528_196_048),
    };
    let reply = ServerMessage::reply(
        Request::load_before_msgid(oid, tid),
        LoadedRevision::to_value(Some(&LoadedRevision {
            data: Bytes::from(vec![0x55; 200]),
            start: Tid(1),
            end: None,
        })),
    );
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        let name = if enc == Encoding::Pickle { "Z5" } else { "M5" };
        let frame = load
            .to_message(Request::load_before_msgid(oid, tid))
            .encode(enc)
            .expect("encodes");
        measure(
            &format!("{name} server: decode loadBefore call"),
            &frame,
            |b| {
                black_box(Incoming::decode(enc, b).expect("decodes"));
            },
        );
        let frame = store
            .to_message(Value::Int(0))
            .encode(enc)
            .expect("encodes");
        measure(
            &format!("{name} server: decode 4 KiB storea"),
            &frame,
            |b| {
                black_box(Incoming::decode(enc, b).expect("decodes"));
            },
        );
        let frame = reply.encode(enc).expect("encodes");
        measure(
            &format!("{name} client: decode loadBefore reply"),
            &frame,
            |b| {
                black_box(ServerMessage::decode(enc, b).expect("decodes"));
            },
        );
        measure(
            &format!("{name} server: encode loadBefore reply"),
            &frame,
            |_| {
                black_box(reply.encode(enc).expect("encodes"));
            },
        );
    }
}
