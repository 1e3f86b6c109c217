//! Decoding arbitrary data as any state type never panics: random bytes,
//! random pickles shaped like wendelin states, and mutations of the real
//! fixture records go through every decoder, and random little databases
//! through the readers.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use zblk::array::ZBigArray;
use zblk::btree::{BTree, BucketState, Family, TreeState, decode_node};
use zblk::dtype::DType;
use zblk::file::ZBigFile;
use zblk::format::{
    BlockFormat, ObjRef, Order, ZBigArrayState, ZBigFileState, ZBlkState, ZDataState,
    decode_zbigarray, decode_zbigfile, decode_zblk, decode_zdata,
};
use zodb_core::pickle::{Record, decode_record};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage};

/// Runs every decoder on every value of the record, and the record-level
/// decoders on the record.
fn exercise(rec: &Record) {
    for v in rec.graph.values() {
        for f in BlockFormat::ALL {
            let _ = ZBlkState::from_state(f, v);
        }
        let _ = ZDataState::from_state(v);
        let _ = ZBigFileState::from_state(v);
        let _ = ZBigArrayState::from_state(v);
        let _ = ObjRef::from_value(v);
        if let Ok(d) = DType::from_value(v) {
            let _ = (
                d.numpy_str(),
                d.npy_descr().map(|d| d.to_python()),
                d.has_object(),
            );
            let _ = d.expand_subarray();
        }
        for fam in [Family::IO, Family::LO] {
            let _ = BucketState::<ObjRef>::from_state(fam, v);
            let _ = BucketState::<i64>::from_state(fam, v);
            let _ = TreeState::<ObjRef>::from_state(fam, v);
        }
    }
    let oid = Oid(1);
    let _ = decode_zblk(oid, rec);
    let _ = decode_zdata(oid, rec);
    let _ = decode_zbigfile(oid, rec);
    let _ = decode_zbigarray(oid, rec);
    let _ = decode_node::<ObjRef>(Family::LO, oid, rec);
    let _ = decode_node::<i64>(Family::IO, oid, rec);
}

fn exercise_bytes(data: &[u8]) {
    if let Ok(rec) = decode_record(&Bytes::copy_from_slice(data)) {
        exercise(&rec);
    }
}

const TEXTS: &[&str] = &[
    "<", ">", "|", "=", "C", "F", "_dtype", "_shape", "_order", "_stridev", "zfile", "f8", "u1",
    "V12", "U3", "S5", "M8", "O8", "b1", "latin1", "ns", "x", "y", "",
];
const GLOBALS: &[(&str, &str)] = &[
    ("numpy", "dtype"),
    ("numpy", "record"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    (FZ, "ZBigFile"),
    (FZ, "ZBlk0"),
    (FZ, "ZBlk1"),
    (FZ, "ZData"),
    (LO, "LOBTree"),
    (LO, "LOBucket"),
    (IO, "IOBucket"),
];
const CLASSES: &[(&str, &str)] = &[
    (FZ, "ZBigFile"),
    (FZ, "ZBlk0"),
    (FZ, "ZBlk"),
    (FZ, "ZBlk1"),
    (FZ, "ZData"),
    (LO, "LOBTree"),
    (LO, "LOBucket"),
    (IO, "IOBTree"),
    (IO, "IOBucket"),
    ("wendelin.bigarray.array_zodb", "ZBigArray"),
];

fn leaf() -> impl Strategy<Value = P> {
    prop_oneof![
        Just(P::None),
        any::<bool>().prop_map(P::Bool),
        prop_oneof![-3i64..70_000, any::<i64>()].prop_map(P::Int),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(P::Bytes),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(P::Str),
        prop::sample::select(TEXTS).prop_map(|t| P::Text(t.into())),
        prop::sample::select(GLOBALS).prop_map(|(m, n)| P::Global(m.into(), n.into())),
        (1u64..8, prop::sample::select(CLASSES)).prop_map(|(o, (m, n))| P::Ref(o, m, n)),
    ]
}

fn value() -> impl Strategy<Value = P> {
    leaf().prop_recursive(5, 64, 10, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..10).prop_map(P::Tuple),
            prop::collection::vec(inner.clone(), 0..4).prop_map(P::List),
            prop::collection::vec((inner.clone(), inner.clone()), 0..6).prop_map(P::Dict),
            (
                prop::sample::select(GLOBALS),
                prop::collection::vec(inner.clone(), 0..4),
                prop::option::of(inner.clone())
            )
                .prop_map(|((m, n), args, st)| P::Reduce(
                    Box::new(P::Global(m.into(), n.into())),
                    args,
                    st.map(Box::new)
                )),
            inner.prop_map(|v| P::Pid(Box::new(v))),
        ]
    })
}

/// A dtype state tuple with random parts, to reach deep into DType.
fn dtype_value() -> impl Strategy<Value = P> {
    (
        prop::sample::select(TEXTS),
        prop::collection::vec(value(), 5..10),
    )
        .prop_map(|(ts, state)| {
            P::Reduce(
                Box::new(P::Global("numpy".into(), "dtype".into())),
                vec![P::Text(ts.into()), P::Bool(false), P::Bool(true)],
                Some(Box::new(P::Tuple(state))),
            )
        })
}

fn fixture_records() -> &'static [Vec<u8>] {
    static RECORDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    RECORDS.get_or_init(load_fixture_records)
}

fn load_fixture_records() -> Vec<Vec<u8>> {
    let Some(shared) = zodb_it::shared_fixtures() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for kind in ["py2_pickle1", "py3_pickle3"] {
        let fs = filestorage::FileStorage::open_read_only(
            shared.join("wendelin").join(kind).join("zblk.fs"),
        )
        .unwrap();
        for oid in 0..72 {
            let (data, _) = fs.load(Oid(oid)).unwrap();
            // The big ZBlk0 records only slow the mutations down.
            if data.len() < 4096 {
                out.push(data.to_vec());
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise_bytes(&data);
    }

    #[test]
    fn random_states(class in prop::sample::select(CLASSES), state in value()) {
        let data = record(class.0, class.1, &state);
        let rec = decode_record(&Bytes::from(data)).expect("the test writer makes valid pickles");
        exercise(&rec);
    }

    #[test]
    fn random_dtypes(d in dtype_value(), wrap in prop::collection::vec(value(), 0..3)) {
        let mut items = vec![(P::Text("_dtype".into()), d)];
        items.extend(wrap.into_iter().map(|v| (P::Text("_shape".into()), v)));
        let state = P::Tuple(vec![P::Dict(items), P::Dict(vec![])]);
        let rec = decode_record(&Bytes::from(record("wendelin.bigarray.array_zodb", "ZBigArray", &state))).unwrap();
        exercise(&rec);
    }

    #[test]
    fn mutated_fixture_records(pick in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)) {
        let records = fixture_records();
        if records.is_empty() {
            return Ok(());
        }
        let mut data = pick.get(records).clone();
        for (at, byte, kind) in edits {
            if data.is_empty() {
                break;
            }
            let i = at.index(data.len());
            match kind {
                0 => data[i] = byte,
                1 => data.truncate(i),
                _ => data.insert(i, byte),
            }
        }
        exercise_bytes(&data);
    }

    /// Little databases of random objects under the oids a ZBigArray (20),
    /// its file (1), blktab (2) and blocks (3..8) have: opening and reading
    /// them returns values or errors, never panics or hangs.
    #[test]
    fn random_databases(objs in prop::collection::vec((prop::sample::select(CLASSES), value()), 8),
                        shape in prop::collection::vec(0i64..5, 0..3), order in any::<bool>(), blksize in 1i64..40) {
        let mut s = MemStore::new();
        for (i, ((m, n), st)) in objs.iter().enumerate() {
            s.put(i as u64 + 1, record(m, n, st));
        }
        // Mostly well-formed file and array, random everything below.
        s.put(1, record(FZ, "ZBigFile", &t(vec![P::Int(blksize), P::Ref(2, LO, "LOBTree")])));
        let strides: Vec<P> = shape.iter().map(|_| P::Int(2)).collect();
        let state = t(vec![
            P::Dict(vec![
                (P::Text("_dtype".into()), dtype("u2", "<")),
                (P::Text("_shape".into()), t(shape.iter().copied().map(P::Int).collect())),
                (P::Text("_order".into()), P::Text((if order { "C" } else { "F" }).into())),
                (P::Text("_stridev".into()), t(strides)),
            ]),
            P::Dict(vec![(P::Text("zfile".into()), P::Ref(1, FZ, "ZBigFile"))]),
        ]);
        s.put(20, record("wendelin.bigarray.array_zodb", "ZBigArray", &state));
        if let Ok(f) = ZBigFile::open(Snapshot::latest(&s), Oid(1)) {
            let _ = f.size();
            let _ = f.stats();
            let mut buf = vec![0u8; 64];
            let _ = f.read_at(0, &mut buf);
            let _ = f.write_range(3, 200, &mut Vec::new(), &mut |_| {});
            for blk in 0..4 {
                let _ = f.load_block(blk);
            }
        }
        if let Ok(a) = ZBigArray::open(Snapshot::latest(&s), Oid(20)) {
            for o in [Order::C, Order::F] {
                let _ = a.write_to(o, &mut Vec::new(), &mut |_| {});
            }
            let _ = a.write_npy(&mut Vec::new(), &mut |_| {});
        }
        for fam in [Family::IO, Family::LO] {
            for oid in 2..9 {
                if let Ok(t) = BTree::<_, ObjRef>::open(Snapshot::latest(&s), fam, Oid(oid)) {
                    let _ = t.iter().take(100).count();
                    let _ = t.get(1);
                    let _ = t.max_key();
                    let _ = t.iter_from(2).take(10).count();
                }
            }
        }
    }
}
