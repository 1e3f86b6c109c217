//! Properties: every value and every typed message survives
//! encode → decode in both encodings, and no input — random bytes or a
//! mutated real frame — makes a decoder panic.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use zeo_proto::encoding::{Encoding, GlobalPolicy};
use zeo_proto::message::Message;
use zeo_proto::reply::{ClientCall, ServerMessage};
use zeo_proto::request::{Call, Incoming, Request, TxnId};
use zeo_proto::value::Value;
use zodb_core::{Oid, Tid, TxnStatus};

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_. ]{0,12}", "\\PC{0,8}", Just("x".repeat(300))]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from),
        Just(Bytes::from(vec![7u8; 70_000])),
    ]
}

fn int() -> impl Strategy<Value = i128> {
    prop_oneof![
        any::<i8>().prop_map(i128::from),
        any::<i32>().prop_map(i128::from),
        any::<i64>().prop_map(i128::from),
        any::<u64>().prop_map(i128::from),
    ]
}

/// Values msgpack can carry (it has no sets, globals or Python 2 str, and
/// its arrays come back as tuples).
fn msgpack_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        int().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        bytes().prop_map(Value::Bytes),
        text().prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            proptest::collection::vec((inner.clone(), inner), 0..5).prop_map(Value::Dict),
        ]
    })
}

/// Values pickles carry (all but globals and objects, which only the
/// allowlisted forms produce).
fn pickle_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i128>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        bytes().prop_map(Value::Bytes),
        bytes().prop_map(Value::Py2Str),
        text().prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::FrozenSet),
            proptest::collection::vec((inner.clone(), inner), 0..5).prop_map(Value::Dict),
        ]
    })
}

fn oid() -> impl Strategy<Value = Oid> {
    any::<u64>().prop_map(Oid)
}
fn tid() -> impl Strategy<Value = Tid> {
    any::<u64>().prop_map(Tid)
}
fn txn() -> impl Strategy<Value = TxnId> {
    any::<i64>().prop_map(TxnId)
}

fn scalar_dict() -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        (text().prop_map(Value::Str), int().prop_map(Value::Int)),
        0..3,
    )
    .prop_map(Value::Dict)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (text(), any::<bool>())
            .prop_map(|(storage, read_only)| Request::Register { storage, read_only }),
        Just(Request::GetInfo),
        Just(Request::LastTransaction),
        Just(Request::Ping),
        Just(Request::ServerStatus),
        Just(Request::StoreBlobStart),
        tid().prop_map(|tid| Request::GetInvalidations { tid }),
        proptest::option::of(any::<i64>()).prop_map(|n| Request::NewOids { n }),
        (any::<u32>(), any::<bool>()).prop_map(|(t, wait)| Request::Pack {
            time: f64::from(t) + 0.5,
            wait
        }),
        (oid(), tid()).prop_map(|(oid, before)| Request::LoadBefore { oid, before }),
        (oid(), tid()).prop_map(|(oid, serial)| Request::LoadSerial { oid, serial }),
        (oid(), tid()).prop_map(|(oid, serial)| Request::SendBlob { oid, serial }),
        oid().prop_map(|oid| Request::GetTid { oid }),
        (oid(), any::<i64>()).prop_map(|(oid, size)| Request::History { oid, size }),
        proptest::option::of(bytes()).prop_map(|next| Request::RecordIternext { next }),
        (oid(), tid(), bytes(), txn()).prop_map(|(oid, serial, data, txn)| Request::Storea {
            oid,
            serial,
            data,
            txn
        }),
        (oid(), tid(), bytes(), txn()).prop_map(|(oid, serial, data, txn)| Request::StoreBlobEnd {
            oid,
            serial,
            data,
            txn
        }),
        (oid(), tid(), bytes(), text(), txn()).prop_map(|(oid, serial, data, filename, txn)| {
            Request::StoreBlobShared {
                oid,
                serial,
                data,
                filename,
                txn,
            }
        }),
        (oid(), tid(), txn()).prop_map(|(oid, serial, txn)| {
            Request::CheckCurrentSerialInTransaction { oid, serial, txn }
        }),
        (oid(), tid(), txn()).prop_map(|(oid, serial, txn)| Request::DeleteObject {
            oid,
            serial,
            txn
        }),
        (
            oid(),
            tid(),
            proptest::option::of(bytes()),
            proptest::option::of(tid()),
            txn()
        )
            .prop_map(|(oid, serial, data, prev_txn, txn)| Request::Restorea {
                oid,
                serial,
                data,
                prev_txn,
                txn
            }),
        bytes().prop_map(|chunk| Request::StoreBlobChunk { chunk }),
        (
            txn(),
            bytes(),
            bytes(),
            scalar_dict(),
            proptest::option::of(tid()),
            prop_oneof![Just(TxnStatus::Committed), Just(TxnStatus::Packed)]
        )
            .prop_map(|(txn, user, description, extension, tid, status)| {
                Request::TpcBegin {
                    txn,
                    user,
                    description,
                    extension,
                    tid,
                    status,
                }
            }),
        txn().prop_map(|txn| Request::Vote { txn }),
        txn().prop_map(|txn| Request::TpcFinish { txn }),
        txn().prop_map(|txn| Request::TpcAbort { txn }),
        (bytes(), txn()).prop_map(|(undo_id, txn)| Request::Undoa { undo_id, txn }),
        (any::<i64>(), any::<i64>()).prop_map(|(first, last)| Request::UndoLog { first, last }),
        (
            any::<i64>(),
            any::<i64>(),
            prop_oneof![Just(Value::None), scalar_dict()]
        )
            .prop_map(|(first, last, spec)| Request::UndoInfo { first, last, spec }),
        (proptest::option::of(tid()), proptest::option::of(tid()))
            .prop_map(|(start, stop)| Request::IteratorStart { start, stop }),
        any::<i64>().prop_map(|iid| Request::IteratorNext { iid }),
        any::<i64>().prop_map(|iid| Request::IteratorRecordNext { iid }),
        (any::<i64>(), tid())
            .prop_map(|(txn_iid, tid)| Request::IteratorRecordStart { txn_iid, tid }),
        proptest::collection::vec(any::<i64>(), 0..5).prop_map(|iids| Request::IteratorGc { iids }),
        text().prop_map(|s| Request::SetClientLabel {
            label: Value::Str(s)
        }),
    ]
}

fn client_call() -> impl Strategy<Value = ClientCall> {
    prop_oneof![
        (tid(), proptest::collection::vec(oid(), 0..5))
            .prop_map(|(tid, oids)| ClientCall::InvalidateTransaction { tid, oids }),
        (any::<i64>(), any::<i64>()).prop_map(|(length, size)| ClientCall::Info { length, size }),
        (oid(), tid()).prop_map(|(oid, serial)| ClientCall::ReceiveBlobStart { oid, serial }),
        (oid(), tid(), bytes()).prop_map(|(oid, serial, chunk)| ClientCall::ReceiveBlobChunk {
            oid,
            serial,
            chunk
        }),
        (oid(), tid()).prop_map(|(oid, serial)| ClientCall::ReceiveBlobStop { oid, serial }),
    ]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Pickle), Just(Encoding::Msgpack)]
}

/// The byte strings of `v` large enough to be shared by a payload.
fn collect_large(v: &Value, out: &mut Vec<Bytes>) {
    match v {
        Value::Bytes(b) | Value::Py2Str(b) if b.len() >= zeo_proto::encoding::SHARE_MIN => {
            out.push(b.clone())
        }
        Value::Tuple(items) | Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => {
            items.iter().for_each(|i| collect_large(i, out))
        }
        Value::Dict(items) => items.iter().for_each(|(k, v)| {
            collect_large(k, out);
            collect_large(v, out);
        }),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn pickle_values_round_trip(v in pickle_value()) {
        let bytes = Encoding::Pickle.encode(&v).unwrap();
        prop_assert_eq!(Encoding::Pickle.decode(&bytes, GlobalPolicy::FromClient).unwrap(), v);
    }

    /// A payload's parts make the same bytes as the one-buffer encoding,
    /// and every large byte string is one of the parts, not a copy.
    #[test]
    fn payload_parts_are_the_encoding(v in pickle_value(), mv in msgpack_value()) {
        for (enc, v) in [(Encoding::Pickle, &v), (Encoding::Msgpack, &mv)] {
            let whole = enc.encode(v).unwrap();
            let payload = enc.encode_payload(v).unwrap();
            let joined: Vec<u8> = payload.parts().iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(&joined[..], &whole[..]);
            prop_assert_eq!(payload.len(), whole.len());
            let mut large = Vec::new();
            collect_large(v, &mut large);
            for b in large {
                prop_assert!(payload.parts().iter().any(|p| p.as_ptr() == b.as_ptr() && p.len() == b.len()));
            }
        }
    }

    /// A message encoded from its parts is the encoding of its tuple.
    #[test]
    fn messages_encode_as_their_tuples(
        msgid in pickle_value(), flags in pickle_value(), method in text(), args in pickle_value(),
        mmsgid in msgpack_value(), mflags in msgpack_value(), margs in msgpack_value(),
    ) {
        for (enc, msg) in [
            (Encoding::Pickle, Message { msgid, flags, method: method.clone(), args }),
            (Encoding::Msgpack, Message { msgid: mmsgid, flags: mflags, method, args: margs }),
        ] {
            let whole = enc.encode(&msg.to_value()).unwrap();
            prop_assert_eq!(msg.encode_payload(enc).unwrap().into_bytes(), whole.clone());
            let reply = ServerMessage::Reply { msgid: msg.msgid.clone(), result: msg.args.clone() };
            prop_assert_eq!(
                reply.encode_payload(enc).unwrap().into_bytes(),
                enc.encode(&reply.to_message().to_value()).unwrap()
            );
        }
    }

    #[test]
    fn msgpack_values_round_trip(v in msgpack_value()) {
        let bytes = Encoding::Msgpack.encode(&v).unwrap();
        prop_assert_eq!(Encoding::Msgpack.decode(&bytes, GlobalPolicy::FromClient).unwrap(), v);
    }

    #[test]
    fn requests_round_trip(req in request(), enc in encoding(), msgid in 1i64..1_000_000) {
        let msg = req.to_message(Value::from(msgid));
        let bytes = msg.encode(enc).unwrap();
        let Incoming::Call(Call { request, is_async, msgid: got }) = Incoming::decode(enc, &bytes).unwrap() else {
            panic!("not a call")
        };
        prop_assert_eq!(is_async, req.method().is_async());
        if !is_async {
            prop_assert_eq!(got, Value::from(msgid));
        }
        prop_assert_eq!(request, req);
    }

    #[test]
    fn server_messages_round_trip(call in client_call(), enc in encoding()) {
        let msg = ServerMessage::Call(call);
        let bytes = msg.encode(enc).unwrap();
        prop_assert_eq!(ServerMessage::decode(enc, &bytes).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let data = Bytes::from(data);
        for enc in [Encoding::Pickle, Encoding::Msgpack] {
            let _ = Incoming::decode(enc, &data);
            let _ = ServerMessage::decode(enc, &data);
        }
    }

    /// Real frames with a few bytes changed reach much deeper than random
    /// bytes do.
    #[test]
    fn mutated_captured_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        thread_local! {
            static FRAMES: Vec<(Encoding, Bytes)> = ["z5.jsonl", "m5.jsonl"].iter().flat_map(|name| {
                let enc = if name.starts_with('z') { Encoding::Pickle } else { Encoding::Msgpack };
                common::transcript(name).into_iter()
                    .filter(|l| l["kind"] == "message")
                    .map(move |l| (enc, common::unhex(l["hex"].as_str().unwrap())))
                    .collect::<Vec<_>>()
            }).collect();
        }
        let (enc, frame) = FRAMES.with(|f| f[pick.index(f.len())].clone());
        let mut data = frame.to_vec();
        for (at, b) in edits {
            let i = at.index(data.len());
            data[i] = b;
        }
        data.truncate(cut.index(data.len() + 1));
        let data = Bytes::from(data);
        let _ = Incoming::decode(enc, &data);
        let _ = ServerMessage::decode(enc, &data);
        let _ = Message::decode(enc, &data, GlobalPolicy::FromServer);
        fast_agrees(&data)?;
    }

    /// The fast pickle reader reads what it claims exactly as the general
    /// decoder does, and claims every value without a set or dict.
    #[test]
    fn the_fast_pickle_reader_is_the_general_decoder(v in pickle_value()) {
        let data = Encoding::Pickle.encode(&v).unwrap();
        let fast = fast_agrees(&data)?;
        prop_assert_eq!(fast.is_some(), !has_set_or_dict(&v), "{:?}", v);
    }

    #[test]
    fn the_fast_pickle_reader_agrees_on_any_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        v in pickle_value(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut raw = b"\x80\x03".to_vec();
        raw.extend(data);
        fast_agrees(&Bytes::from(raw))?;
        let mut near = Encoding::Pickle.encode(&v).unwrap().to_vec();
        for (at, b) in edits {
            let i = at.index(near.len());
            near[i] = b;
        }
        near.truncate(cut.index(near.len() + 1));
        fast_agrees(&Bytes::from(near))?;
    }
}

/// When the fast reader decodes `data`, the general decoder decodes it to
/// the same value.
fn fast_agrees(data: &Bytes) -> Result<Option<Value>, TestCaseError> {
    let fast = zeo_proto::encoding::pickle::decode_fast(data);
    if let Some(f) = &fast {
        // Compared as printed, so that a NaN read by both is equal.
        let general = zeo_proto::encoding::pickle::decode_general(data, GlobalPolicy::FromClient)
            .map(|g| format!("{g:?}"));
        prop_assert_eq!(general, Ok(format!("{f:?}")), "{:?}", data);
    }
    Ok(fast)
}

fn has_set_or_dict(v: &Value) -> bool {
    match v {
        Value::Set(_) | Value::FrozenSet(_) | Value::Dict(_) => true,
        Value::Tuple(items) | Value::List(items) => items.iter().any(has_set_or_dict),
        _ => false,
    }
}
