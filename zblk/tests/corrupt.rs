//! Broken objects: every reader must stop with an error that names the
//! object and what is wrong, never loop, overflow the stack or panic.

mod common;

use common::*;
use zblk::Error;
use zblk::array::ZBigArray;
use zblk::btree::{BTree, Family, MAX_DEPTH};
use zblk::file::{BlockData, ZBigFile};
use zblk::format::{BlockFormat, ObjRef, Order};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, StorageError};

fn lobtree(children: Vec<(Option<i64>, P)>, first: P) -> P {
    let mut data = Vec::new();
    for (k, c) in children {
        if let Some(k) = k {
            data.push(P::Int(k));
        }
        data.push(c);
    }
    t(vec![P::Tuple(data), first])
}

fn lo_tree_ref(oid: u64) -> P {
    P::Ref(oid, LO, "LOBTree")
}

fn lo_bucket_ref(oid: u64) -> P {
    P::Ref(oid, LO, "LOBucket")
}

fn open_tree(s: &MemStore, oid: u64) -> BTree<'_, MemStore, i64> {
    BTree::open(Snapshot::latest(s), Family::LO, Oid(oid)).unwrap()
}

#[test]
fn tree_cycle_is_reported() {
    let mut s = MemStore::new();
    // 1 -> [2, 3]; 3 -> [1]: a cycle back to the root.
    s.put(
        1,
        record(
            LO,
            "LOBTree",
            &lobtree(
                vec![(None, lo_bucket_ref(2)), (Some(10), lo_tree_ref(3))],
                lo_bucket_ref(2),
            ),
        ),
    );
    s.put(
        2,
        record(LO, "LOBucket", &bucket(vec![(1, P::Int(1))], None)),
    );
    s.put(
        3,
        record(
            LO,
            "LOBTree",
            &lobtree(vec![(None, lo_tree_ref(1))], lo_bucket_ref(2)),
        ),
    );
    let tree = open_tree(&s, 1);
    let r: Result<Vec<_>, _> = tree.iter().collect();
    assert!(
        matches!(
            r,
            Err(Error::TreeCycle {
                tree: Oid(1),
                oid: Oid(1)
            })
        ),
        "{r:?}"
    );
    assert!(matches!(
        tree.get(20),
        Err(Error::TreeCycle { oid: Oid(1), .. })
    ));
    assert!(matches!(tree.last(), Err(Error::TreeCycle { .. })));
    // Shared nodes are refused too: they would yield keys twice.
    s.put(
        3,
        record(
            LO,
            "LOBTree",
            &lobtree(vec![(None, lo_bucket_ref(2))], lo_bucket_ref(2)),
        ),
    );
    let tree = open_tree(&s, 1);
    let r: Result<Vec<_>, _> = tree.iter().collect();
    assert!(
        matches!(r, Err(Error::TreeCycle { oid: Oid(2), .. })),
        "{r:?}"
    );
}

#[test]
fn tree_depth_is_bounded() {
    let mut s = MemStore::new();
    let n = MAX_DEPTH as u64 + 10;
    for i in 1..n {
        s.put(
            i,
            record(
                LO,
                "LOBTree",
                &lobtree(vec![(None, lo_tree_ref(i + 1))], lo_bucket_ref(n)),
            ),
        );
    }
    s.put(
        n,
        record(LO, "LOBucket", &bucket(vec![(7, P::Int(7))], None)),
    );
    let tree = open_tree(&s, 1);
    assert!(matches!(
        tree.get(7),
        Err(Error::TreeDepth { tree: Oid(1), .. })
    ));
    assert!(matches!(
        tree.iter().next(),
        Some(Err(Error::TreeDepth { .. }))
    ));
    assert!(matches!(tree.max_key(), Err(Error::TreeDepth { .. })));
}

#[test]
fn key_order_and_ranges_are_checked() {
    let mut s = MemStore::new();
    s.put(
        1,
        record(
            LO,
            "LOBucket",
            &bucket(vec![(5, P::Int(0)), (3, P::Int(0))], None),
        ),
    );
    let e = BTree::<_, i64>::open(Snapshot::latest(&s), Family::LO, Oid(1)).unwrap_err();
    assert!(
        matches!(&e, Error::State { oid: Oid(1), class, what } if class == "BTrees.LOBTree.LOBucket" && what.contains("does not increase")),
        "{e}"
    );

    // A key at or above the separator that leads past its bucket.
    s.put(
        1,
        record(
            LO,
            "LOBTree",
            &lobtree(
                vec![(None, lo_bucket_ref(2)), (Some(10), lo_bucket_ref(3))],
                lo_bucket_ref(2),
            ),
        ),
    );
    s.put(
        2,
        record(
            LO,
            "LOBucket",
            &bucket(vec![(1, P::Int(1)), (15, P::Int(2))], None),
        ),
    );
    s.put(
        3,
        record(LO, "LOBucket", &bucket(vec![(20, P::Int(3))], None)),
    );
    let tree = open_tree(&s, 1);
    let r: Result<Vec<_>, _> = tree.iter().collect();
    assert!(
        matches!(&r, Err(Error::State { oid: Oid(2), what, .. }) if what.contains("outside")),
        "{r:?}"
    );
    // Separators must increase.
    s.put(
        1,
        record(
            LO,
            "LOBTree",
            &lobtree(
                vec![
                    (None, lo_bucket_ref(2)),
                    (Some(10), lo_bucket_ref(3)),
                    (Some(10), lo_bucket_ref(3)),
                ],
                lo_bucket_ref(2),
            ),
        ),
    );
    assert!(matches!(
        BTree::<_, i64>::open(Snapshot::latest(&s), Family::LO, Oid(1)),
        Err(Error::State { .. })
    ));
    // IO keys must fit 32 bits.
    s.put(
        4,
        record(IO, "IOBucket", &bucket(vec![(1 << 40, P::Int(0))], None)),
    );
    assert!(matches!(
        BTree::<_, i64>::open(Snapshot::latest(&s), Family::IO, Oid(4)),
        Err(Error::State { .. })
    ));
    // A tree node of another family is a class error.
    assert!(matches!(
        BTree::<_, i64>::open(Snapshot::latest(&s), Family::LO, Oid(4)),
        Err(Error::Class { oid: Oid(4), .. })
    ));
}

#[test]
fn missing_objects_name_the_oid() {
    let mut s = MemStore::new();
    s.put(
        1,
        record(
            LO,
            "LOBTree",
            &lobtree(vec![(None, lo_bucket_ref(2))], lo_bucket_ref(2)),
        ),
    );
    let tree = open_tree(&s, 1);
    assert!(matches!(
        tree.get(0),
        Err(Error::Load {
            oid: Oid(2),
            source: StorageError::NoSuchObject { .. }
        })
    ));
    let e = ZBigFile::open(Snapshot::latest(&s), Oid(9)).unwrap_err();
    assert_eq!(e.to_string(), "loading 0000000000000009");
    let source = std::error::Error::source(&e).map(ToString::to_string);
    assert_eq!(
        source.as_deref(),
        Some("oid 0000000000000009: no such object")
    );
}

/// A ZBigFile (oid 1) whose blktab (oid 2) maps `blocks` inline.
fn file_with(s: &mut MemStore, blksize: i64, blocks: Vec<(i64, P)>) {
    s.put(
        1,
        record(FZ, "ZBigFile", &t(vec![P::Int(blksize), lo_tree_ref(2)])),
    );
    s.put(
        2,
        record(LO, "LOBTree", &t(vec![t(vec![bucket(blocks, None)])])),
    );
}

#[test]
fn bad_blocks_are_errors() {
    let mut s = MemStore::new();
    file_with(
        &mut s,
        8,
        vec![
            (0, P::Ref(3, FZ, "ZBlk0")),
            (1, P::Ref(4, FZ, "ZBlk1")),
            (2, P::Ref(7, FZ, "ZData")),
        ],
    );
    s.put(3, record(FZ, "ZBlk0", &P::Bytes(b"123456789".to_vec())));
    s.put(4, record(FZ, "ZBlk1", &P::Ref(5, IO, "IOBTree")));
    s.put(
        5,
        record(
            IO,
            "IOBTree",
            &t(vec![t(vec![bucket(
                vec![(0, P::Ref(6, FZ, "ZData")), (2, P::Ref(6, FZ, "ZData"))],
                None,
            )])]),
        ),
    );
    s.put(6, record(FZ, "ZData", &P::Str(b"abc".to_vec())));
    s.put(7, record(FZ, "ZData", &P::Bytes(b"x".to_vec())));
    let f = ZBigFile::open(Snapshot::latest(&s), Oid(1)).unwrap();
    let mut buf = [0u8; 8];
    let e = f.read_block(0, &mut buf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ZBigFile 0000000000000001: block 0 (0000000000000003 wendelin.bigfile.file_zodb.ZBlk0): 9 bytes of data in a block of 8"
    );
    let e = f.read_block(1, &mut buf).unwrap_err();
    assert!(
        matches!(&e, Error::Block { blk: 1, zblk: Oid(4), what, .. } if what.contains("overlaps")),
        "{e}"
    );
    let e = f.read_block(2, &mut buf).unwrap_err();
    assert!(matches!(&e, Error::Class { oid: Oid(7), .. }), "{e}");
    assert!(matches!(
        f.read_block(0, &mut [0u8; 7]),
        Err(Error::Buffer { .. })
    ));
    // A stream stops at the first bad block; the stats too.
    assert!(f.write_to(&mut Vec::new(), &mut |_| {}).is_err());
    assert!(f.stats().is_err());

    // Negative block numbers cannot be addressed.
    let mut s = MemStore::new();
    file_with(&mut s, 8, vec![(-1, P::Ref(3, FZ, "ZBlk0"))]);
    s.put(3, record(FZ, "ZBlk0", &P::Bytes(b"1".to_vec())));
    let f = ZBigFile::open(Snapshot::latest(&s), Oid(1)).unwrap();
    assert!(matches!(f.size(), Err(Error::Block { blk: -1, .. })));
    assert!(f.blocks().next().unwrap().is_err());
    // ... but a stream of the addressable range ignores them.
    let mut out = Vec::new();
    f.write_range(0, 16, &mut out, &mut |_| {}).unwrap();
    assert_eq!(out, [0; 16]);
}

#[test]
fn block_formats_and_chunks() {
    let mut s = MemStore::new();
    file_with(
        &mut s,
        16,
        vec![
            (0, P::Ref(3, FZ, "ZBlk")),
            (2, P::Ref(4, FZ, "ZBlk1")),
            (3, P::Ref(8, FZ, "ZBlk0")),
        ],
    );
    // Legacy ZBlk: full length, unstripped.
    s.put(3, record(FZ, "ZBlk", &P::Str(b"0123456789abcdef".to_vec())));
    s.put(4, record(FZ, "ZBlk1", &P::Ref(5, IO, "IOBTree")));
    s.put(
        5,
        record(
            IO,
            "IOBTree",
            &lobtree(
                vec![
                    (None, P::Ref(9, IO, "IOBucket")),
                    (Some(8), P::Ref(10, IO, "IOBucket")),
                ],
                P::Ref(9, IO, "IOBucket"),
            ),
        ),
    );
    s.put(
        9,
        record(
            IO,
            "IOBucket",
            &bucket(
                vec![(1, P::Ref(6, FZ, "ZData"))],
                Some(P::Ref(10, IO, "IOBucket")),
            ),
        ),
    );
    s.put(
        10,
        record(
            IO,
            "IOBucket",
            &bucket(vec![(12, P::Ref(7, FZ, "ZData"))], None),
        ),
    );
    s.put(6, record(FZ, "ZData", &P::Bytes(b"ab".to_vec())));
    s.put(7, record(FZ, "ZData", &P::Bytes(b"XYZ".to_vec())));
    // Python 3 bytes below protocol 3: _codecs.encode(text, 'latin1').
    let latin1 = P::Reduce(
        Box::new(P::Global("_codecs".into(), "encode".into())),
        vec![P::Text("\u{e9}t\u{e9}".into()), P::Text("latin1".into())],
        None,
    );
    s.put(8, record(FZ, "ZBlk0", &latin1));
    let f = ZBigFile::open(Snapshot::latest(&s), Oid(1)).unwrap();
    assert_eq!(f.size().unwrap(), 64);
    let b = f.load_block(0).unwrap().unwrap();
    assert_eq!(b.format, BlockFormat::LegacyZBlk);
    let b = f.load_block(2).unwrap().unwrap();
    assert_eq!(b.format, BlockFormat::ZBlk1);
    let BlockData::Chunks(c) = &b.data else {
        panic!()
    };
    assert_eq!(
        c.iter().map(|c| (c.offset, c.zdata)).collect::<Vec<_>>(),
        [(1, Oid(6)), (12, Oid(7))]
    );
    assert_eq!(b.data.len(), 15);
    assert_eq!(b.objects, 6);
    let mut all = Vec::new();
    f.write_to(&mut all, &mut |_| {}).unwrap();
    let mut want = b"0123456789abcdef".to_vec();
    want.extend([0; 16]);
    want.extend(b"\0ab\0\0\0\0\0\0\0\0\0XYZ\0");
    want.extend(b"\xe9t\xe9");
    want.resize(64, 0);
    assert_eq!(all, want);
    for off in 0..64 {
        for len in [0, 1, 5, 17, 64 - off] {
            let mut part = vec![0xa5; len];
            f.read_at(off as u64, &mut part).unwrap();
            let expect: Vec<u8> = (off..off + len)
                .map(|i| want.get(i).copied().unwrap_or(0))
                .collect();
            assert_eq!(part, expect, "read_at({off}, {len})");
        }
    }
    let st = f.stats().unwrap();
    assert_eq!(
        (
            st.count(BlockFormat::LegacyZBlk),
            st.count(BlockFormat::ZBlk1),
            st.count(BlockFormat::ZBlk0)
        ),
        (1, 1, 1)
    );
    assert_eq!(st.data_bytes, 16 + 5 + 3);
}

/// A ZBigArray (oid 20) over the file of oid 1.
fn array(s: &mut MemStore, dt: P, shape: Vec<i64>, strides: Vec<i64>, order: Option<&str>) {
    let mut dict = vec![
        (P::Text("_dtype".into()), dt),
        (
            P::Text("_shape".into()),
            t(shape.into_iter().map(P::Int).collect()),
        ),
    ];
    if let Some(o) = order {
        dict.push((P::Text("_order".into()), P::Str(o.as_bytes().to_vec())));
    }
    dict.push((
        P::Text("_stridev".into()),
        t(strides.into_iter().map(P::Int).collect()),
    ));
    let state = t(vec![
        P::Dict(dict),
        P::Dict(vec![(P::Text("zfile".into()), P::Ref(1, FZ, "ZBigFile"))]),
    ]);
    s.put(
        20,
        record("wendelin.bigarray.array_zodb", "ZBigArray", &state),
    );
}

#[test]
fn arrays_python2_style_and_broken() {
    let mut s = MemStore::new();
    file_with(&mut s, 8, vec![(0, P::Ref(3, FZ, "ZBlk0"))]);
    s.put(3, record(FZ, "ZBlk0", &P::Str((1..=8).collect())));
    // (3, 2) uint16 big-endian in F order, _order as a Python 2 str.
    array(&mut s, dtype("u2", ">"), vec![3, 2], vec![2, 6], Some("F"));
    let a = ZBigArray::open(Snapshot::latest(&s), Oid(20)).unwrap();
    assert_eq!((a.order(), a.state().order), (Order::F, Some(Order::F)));
    assert_eq!(a.dtype().numpy_str(), ">u2");
    let mut f = Vec::new();
    a.write_to(Order::F, &mut f, &mut |_| {}).unwrap();
    assert_eq!(f, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);
    let mut c = Vec::new();
    a.write_to(Order::C, &mut c, &mut |_| {}).unwrap();
    assert_eq!(c, [1, 2, 7, 8, 3, 4, 0, 0, 5, 6, 0, 0]);
    let h = a.npy_header().unwrap();
    assert!(h.fortran_order);
    assert_eq!(h.descr.to_python(), "'>u2'");

    // No _order: C.
    array(&mut s, dtype("u1", "|"), vec![4], vec![1], None);
    let a = ZBigArray::open(Snapshot::latest(&s), Oid(20)).unwrap();
    assert_eq!((a.order(), a.state().order), (Order::C, None));
    assert_eq!(a.state().attrs, ["_dtype", "_shape", "_stridev"]);

    let err = |s: &MemStore| {
        ZBigArray::open(Snapshot::latest(s), Oid(20))
            .unwrap_err()
            .to_string()
    };
    array(&mut s, dtype("u1", "|"), vec![4, 2], vec![1], None);
    assert!(
        err(&s).contains("_shape has 2 dimensions but _stridev has 1"),
        "{}",
        err(&s)
    );
    array(&mut s, dtype("O8", "|"), vec![4], vec![8], None);
    assert!(err(&s).contains("Python objects"), "{}", err(&s));
    array(
        &mut s,
        dtype("u8", "<"),
        vec![1 << 40, 1 << 40],
        vec![8, 8],
        None,
    );
    assert!(err(&s).contains("overflows"), "{}", err(&s));
    array(&mut s, dtype("u8", "<"), vec![2], vec![-8], None);
    assert!(err(&s).contains("negative"), "{}", err(&s));
    array(&mut s, dtype("x8", "<"), vec![2], vec![8], None);
    assert!(err(&s).contains("_dtype"), "{}", err(&s));
    // The file must be a ZBigFile.
    s.put(1, record(FZ, "ZData", &P::Bytes(Vec::new())));
    array(&mut s, dtype("u1", "|"), vec![4], vec![1], None);
    assert!(matches!(
        ZBigArray::open(Snapshot::latest(&s), Oid(20)),
        Err(Error::Class { oid: Oid(1), .. })
    ));
}

#[test]
fn references_in_every_spelling() {
    use zodb_core::pickle::decode_record;
    // bare oid, old (module, name) class, py2 str oid, latin1-encoded oid
    let cases = [
        P::Pid(Box::new(P::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 5]))),
        P::Pid(Box::new(t(vec![
            P::Str(vec![0, 0, 0, 0, 0, 0, 0, 5]),
            t(vec![P::Text(LO.into()), P::Text("LOBTree".into())]),
        ]))),
        P::Pid(Box::new(t(vec![
            P::Reduce(
                Box::new(P::Global("_codecs".into(), "encode".into())),
                vec![
                    P::Text("\0\0\0\0\0\0\0\u{5}".into()),
                    P::Text("latin1".into()),
                ],
                None,
            ),
            P::Global(LO.into(), "LOBTree".into()),
        ]))),
    ];
    for (i, c) in cases.iter().enumerate() {
        let rec = decode_record(&record(FZ, "ZBlk1", c).into()).unwrap();
        let r = ObjRef::from_value(rec.state()).unwrap();
        assert_eq!(r.oid, Oid(5), "case {i}");
        assert_eq!(
            r.class_path(),
            [None, Some((LO, "LOBTree")), Some((LO, "LOBTree"))][i],
            "case {i}"
        );
    }
    let bad = [
        P::Pid(Box::new(P::Bytes(vec![1, 2, 3]))),
        P::Pid(Box::new(P::List(vec![
            P::Text("w".into()),
            t(vec![P::Bytes(vec![0; 8])]),
        ]))),
        P::Pid(Box::new(t(vec![P::Bytes(vec![0; 8]), P::Int(3)]))),
        P::Bytes(vec![0; 8]),
    ];
    for (i, c) in bad.iter().enumerate() {
        let rec = decode_record(&record(FZ, "ZBlk1", c).into()).unwrap();
        assert!(ObjRef::from_value(rec.state()).is_err(), "case {i}");
    }
}

/// Items bigger than a transposition slab (a pickle can say anything) are
/// streamed piece by piece, in the right order.
#[test]
fn huge_items_transpose() {
    const MIB: i64 = 1 << 20;
    let e = zblk::array::SLAB_BYTES as i64 + MIB;
    let mut s = MemStore::new();
    let per = e / MIB;
    let blocks = (0..4)
        .map(|k| (k * per, P::Ref(3 + k as u64, FZ, "ZBlk0")))
        .collect();
    file_with(&mut s, MIB, blocks);
    for k in 0..4u64 {
        s.put(3 + k, record(FZ, "ZBlk0", &P::Bytes(vec![b'A' + k as u8])));
    }
    array(
        &mut s,
        dtype(&format!("V{e}"), "|"),
        vec![2, 2],
        vec![e, 2 * e],
        Some("F"),
    );
    let a = ZBigArray::open(Snapshot::latest(&s), Oid(20)).unwrap();
    /// Records where non-zero bytes land.
    struct Marks(u64, Vec<(u64, u8)>);
    impl std::io::Write for Marks {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for (i, &b) in buf.iter().enumerate() {
                if b != 0 {
                    self.1.push((self.0 + i as u64, b));
                }
            }
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = e as u64;
    for (order, want) in [(Order::C, *b"ACBD"), (Order::F, *b"ABCD")] {
        let mut m = Marks(0, Vec::new());
        assert_eq!(a.write_to(order, &mut m, &mut |_| {}).unwrap(), 4 * e);
        assert_eq!(m.0, 4 * e);
        let at: Vec<(u64, u8)> = (0..4).map(|k| (k * e, want[k as usize])).collect();
        assert_eq!(m.1, at, "{order:?}");
    }
}
