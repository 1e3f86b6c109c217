//! ZEO message decoding, both encodings, both directions: no panic, no
//! runaway allocation; whatever decodes re-encodes and decodes to the same
//! thing (as bytes). The `loadBefore` fast path recognises only what the
//! general decoder reads the same way.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zeo_proto::encoding::{Encoding, GlobalPolicy, load_before};
use zeo_proto::message::Message;
use zeo_proto::reply::ServerMessage;
use zeo_proto::request::{Call, Incoming, Request};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let enc = if selector & 1 == 0 {
        Encoding::Pickle
    } else {
        Encoding::Msgpack
    };
    let policy = if selector & 2 == 0 {
        GlobalPolicy::FromClient
    } else {
        GlobalPolicy::FromServer
    };
    let bytes = Bytes::copy_from_slice(rest);
    if let Ok(value) = enc.decode(&bytes, policy) {
        let _ = format!("{value:?}");
        if let Ok(again) = enc.encode(&value) {
            // Our own encoding decodes, and encoding is a fixpoint from there
            // (byte equality also holds for NaNs, which `==` would not).
            let back = enc
                .decode(&again, policy)
                .expect("our own encoding decodes");
            assert_eq!(enc.encode(&back).expect("re-encodes"), again);
        }
    }
    if let Ok(msg) = Message::decode(enc, &bytes, policy) {
        let _ = msg.encode(enc);
    }
    if let Ok(Incoming::Call(call)) = Incoming::decode(enc, &bytes) {
        let again = call.request.to_message(call.msgid.clone()).encode(enc);
        if let Ok(again) = again {
            assert!(Incoming::decode(enc, &again).is_ok());
        }
    } else if let Err(e) = Incoming::decode(enc, &bytes) {
        let _ = e.disposition();
    }
    if let Ok(msg) = ServerMessage::decode(enc, &bytes) {
        let _ = msg.encode(enc);
    }
    if let Some(fast) = load_before::parse_call(&bytes) {
        let Ok(Incoming::Call(Call {
            msgid,
            is_async: false,
            request: Request::LoadBefore { oid, before },
        })) = Incoming::decode(Encoding::Pickle, &bytes)
        else {
            panic!("{fast:?} is not a loadBefore call to the general decoder");
        };
        assert_eq!((fast.oid, fast.before), (oid, before));
        assert_eq!(msgid, fast.msgid.to_value());
    }
    if let Some(fast) = load_before::parse_reply(&bytes) {
        let Ok(ServerMessage::Reply { msgid, result }) =
            ServerMessage::decode(Encoding::Pickle, &bytes)
        else {
            panic!("{fast:?} is not a reply to the general decoder");
        };
        assert_eq!(msgid, fast.msgid.to_value());
        let rev = zeo_proto::reply::LoadedRevision::from_value(&result)
            .expect("a revision")
            .expect("not None");
        assert_eq!(
            (&rev.data[..], rev.start, rev.end),
            (fast.data, fast.start, fast.end)
        );
    }
});
