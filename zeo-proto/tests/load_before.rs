//! The `loadBefore` fast path (`encoding::load_before`) against the
//! general encoder and decoder: its writers write their bytes, its readers
//! read what they read (or step aside), on generated messages, on mutated
//! ones, on random bytes, and on frames Python's client and server wrote.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]

mod common;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use zeo_proto::encoding::load_before::{
    CALL_LEN, LoadBeforeCall, PairId, encode_call, encode_reply, parse_call, parse_reply, reply_len,
};
use zeo_proto::encoding::{Encoding, GlobalPolicy};
use zeo_proto::message::Message;
use zeo_proto::reply::{LoadedRevision, ServerMessage};
use zeo_proto::request::{Call, Incoming, Request};
use zeo_proto::value::Value;
use zodb_core::{Oid, Tid};

fn general_call(oid: Oid, before: Tid) -> Bytes {
    Request::LoadBefore { oid, before }
        .to_message(Request::load_before_msgid(oid, before))
        .encode(Encoding::Pickle)
        .unwrap()
}

fn general_reply(msgid: PairId, data: &[u8], start: Tid, end: Option<Tid>) -> Bytes {
    let rev = LoadedRevision {
        data: Bytes::copy_from_slice(data),
        start,
        end,
    };
    ServerMessage::Reply {
        msgid: msgid.to_value(),
        result: LoadedRevision::to_value(Some(&rev)),
    }
    .encode(Encoding::Pickle)
    .unwrap()
}

/// What the general decoder makes of `payload` as a call from a client,
/// when it is a synchronous `loadBefore` with an (oid, tid) msgid.
fn general_parse_call(payload: &Bytes) -> Option<LoadBeforeCall> {
    let msg = Message::decode(Encoding::Pickle, payload, GlobalPolicy::FromClient).ok()?;
    let Ok(Incoming::Call(Call {
        msgid,
        is_async: false,
        request: Request::LoadBefore { oid, before },
    })) = Incoming::from_message(msg)
    else {
        return None;
    };
    let [Value::Bytes(a), Value::Bytes(b)] = msgid.as_seq()? else {
        return None;
    };
    Some(LoadBeforeCall {
        msgid: PairId(a.as_ref().try_into().ok()?, b.as_ref().try_into().ok()?),
        oid,
        before,
    })
}

/// What the general decoder makes of `payload` as a reply from a server,
/// when it carries a revision under an (oid, tid) msgid.
fn general_parse_reply(payload: &Bytes) -> Option<(PairId, LoadedRevision)> {
    let ServerMessage::Reply { msgid, result } =
        ServerMessage::decode(Encoding::Pickle, payload).ok()?
    else {
        return None;
    };
    let [Value::Bytes(a), Value::Bytes(b)] = msgid.as_seq()? else {
        return None;
    };
    let rev = LoadedRevision::from_value(&result).ok()??;
    Some((
        PairId(a.as_ref().try_into().ok()?, b.as_ref().try_into().ok()?),
        rev,
    ))
}

fn fast_reply(payload: &Bytes) -> Option<(PairId, LoadedRevision)> {
    parse_reply(payload).map(|r| {
        (
            r.msgid,
            LoadedRevision {
                data: Bytes::copy_from_slice(r.data),
                start: r.start,
                end: r.end,
            },
        )
    })
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (250usize..70_000).prop_map(|n| vec![0x5a; n]),
    ]
}

fn tid() -> impl Strategy<Value = Tid> {
    any::<u64>().prop_map(Tid)
}

fn pair() -> impl Strategy<Value = PairId> {
    (any::<[u8; 8]>(), any::<[u8; 8]>()).prop_map(|(a, b)| PairId(a, b))
}

/// A valid call or reply with one byte changed, cut short or extended.
fn mutate(mut v: Vec<u8>, at: usize, byte: u8, how: u8) -> Bytes {
    let at = at % (v.len() + 1);
    match how % 4 {
        0 if at < v.len() => v[at] = byte,
        1 => v.truncate(at),
        2 => v.insert(at, byte),
        _ => v.push(byte),
    }
    Bytes::from(v)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_call_is_the_general_encoding(oid in any::<u64>(), before in tid()) {
        let fast = encode_call(Oid(oid), before);
        prop_assert_eq!(&fast[..], &general_call(Oid(oid), before)[..]);
        prop_assert_eq!(fast.len(), CALL_LEN);
        prop_assert_eq!(
            parse_call(&fast),
            Some(LoadBeforeCall { msgid: PairId::of(Oid(oid), before), oid: Oid(oid), before })
        );
    }

    #[test]
    fn the_reply_is_the_general_encoding(
        msgid in pair(), data in data(), start in tid(), end in proptest::option::of(tid()),
    ) {
        let mut out = BytesMut::new();
        encode_reply(&mut out, msgid, &data, start, end);
        prop_assert_eq!(&out[..], &general_reply(msgid, &data, start, end)[..]);
        prop_assert_eq!(out.len(), reply_len(data.len(), end.is_some()));
        let r = parse_reply(&out).unwrap();
        prop_assert_eq!((r.msgid, r.data, r.start, r.end), (msgid, &data[..], start, end));
    }

    #[test]
    fn a_recognised_call_is_what_the_general_decoder_reads(
        oid in any::<u64>(), before in tid(), at in any::<usize>(), byte in any::<u8>(), how in any::<u8>(),
    ) {
        let payload = mutate(encode_call(Oid(oid), before).to_vec(), at, byte, how);
        if let Some(call) = parse_call(&payload) {
            prop_assert_eq!(Some(call), general_parse_call(&payload));
        }
    }

    #[test]
    fn a_recognised_reply_is_what_the_general_decoder_reads(
        msgid in pair(), data in proptest::collection::vec(any::<u8>(), 0..300), start in tid(),
        end in proptest::option::of(tid()), at in any::<usize>(), byte in any::<u8>(), how in any::<u8>(),
    ) {
        let mut out = BytesMut::new();
        encode_reply(&mut out, msgid, &data, start, end);
        let payload = mutate(out.to_vec(), at, byte, how);
        if let Some(r) = fast_reply(&payload) {
            prop_assert_eq!(Some(r), general_parse_reply(&payload));
        }
    }

    #[test]
    fn random_bytes_are_recognised_only_when_the_general_decoder_agrees(
        data in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let payload = Bytes::from(data);
        if let Some(call) = parse_call(&payload) {
            prop_assert_eq!(Some(call), general_parse_call(&payload));
        }
        if let Some(r) = fast_reply(&payload) {
            prop_assert_eq!(Some(r), general_parse_reply(&payload));
        }
    }
}

/// Python's `ClientStorage` and ZEO's server, as captured in the pickle
/// transcripts: every `loadBefore` call is recognised, and so is every
/// reply that carries a revision; whatever else is recognised, the
/// general decoder reads the same.
#[test]
fn python_frames_take_the_fast_path() {
    let mut calls = 0;
    let mut replies = 0;
    for name in ["z5.jsonl", "z5-ccr.jsonl"] {
        for line in common::transcript(name) {
            if line["kind"] != "message" {
                continue;
            }
            let payload = common::unhex(line["hex"].as_str().unwrap());
            let general_call = general_parse_call(&payload);
            assert_eq!(parse_call(&payload), general_call, "{name}: {line}");
            calls += usize::from(general_call.is_some());
            let general_reply = general_parse_reply(&payload);
            assert_eq!(fast_reply(&payload), general_reply, "{name}: {line}");
            replies += usize::from(general_reply.is_some());
        }
    }
    assert!(
        calls >= 5,
        "only {calls} loadBefore calls in the transcripts"
    );
    assert!(replies >= 5, "only {replies} revisions in the transcripts");
}
