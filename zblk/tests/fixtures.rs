//! The real databases of `../shared/fixtures`: wendelin.core's four
//! `zblk.fs` (Python 2 protocols 1-3 and Python 3) must read to exactly the
//! block contents of spec wendelin.md §8, and the Go ZODB's `btree/1.fs` to
//! the trees its generator built.

use std::path::PathBuf;

use filestorage::FileStorage;
use zblk::Error;
use zblk::btree::{BTree, BTreeValue, Family, Node, TreeState};
use zblk::file::{BlockData, Piece, ZBigFile};
use zblk::format::{BinaryKind, BlockFormat, ZBlkState, decode_zblk};
use zodb_core::pickle::{Value, decode_record};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, StorageError, Tid};

const KINDS: [&str; 4] = ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"];
const BLKSIZE: u64 = 2 << 20;
const TID1: Tid = Tid(0x0285_cbac_20da_7419);
const TID2: Tid = Tid(0x0285_cbac_3851_eb99);

fn fixture(rel: &str) -> Option<PathBuf> {
    Some(zodb_it::shared_fixtures()?.join(rel))
}

/// Big-endian u32 0, 1, 2, ... filling `size` bytes (the generator's
/// `brange32`).
fn brange32(size: usize) -> Vec<u8> {
    (0..(size / 4) as u32).flat_map(u32::to_be_bytes).collect()
}

/// ZBlk1's block: 128 KiB of brange32, zeros, the same 128 KiB reversed.
fn zblk1_block() -> Vec<u8> {
    let ht = 128 << 10;
    let mut b = brange32(ht);
    b.resize(BLKSIZE as usize - ht, 0);
    let mut tail = brange32(ht);
    tail.reverse();
    b.extend_from_slice(&tail);
    b
}

fn zblk0_block() -> Vec<u8> {
    let mut b = brange32(16 << 10);
    b.resize(BLKSIZE as usize, 0);
    b
}

/// The oid the root mapping's `data` dict holds under `name`.
fn root_ref(fs: &FileStorage, name: &str) -> Oid {
    let (data, _) = fs.load(Oid::ROOT).unwrap();
    let rec = decode_record(&data).unwrap();
    rec.state()
        .dict_get("data")
        .and_then(|d| d.dict_get(name))
        .unwrap_or_else(|| panic!("root has no {name}"))
        .persistent_ref()
        .unwrap()
        .oid()
}

#[test]
fn wendelin_fixtures_read_to_the_spec_values() {
    let Some(dir) = fixture("wendelin") else {
        return;
    };
    let (expect0, expect1) = (zblk0_block(), zblk1_block());
    for kind in KINDS {
        let fs = FileStorage::open_read_only(dir.join(kind).join("zblk.fs")).unwrap();
        assert_eq!(fs.last_transaction(), TID2, "{kind}");
        let zf_oid = root_ref(&fs, "zbigf");
        let (z0, z1) = (root_ref(&fs, "zblk0"), root_ref(&fs, "zblk1"));
        let zf = ZBigFile::open(Snapshot::latest(&fs), zf_oid).unwrap();
        assert_eq!(zf.blksize(), BLKSIZE, "{kind}");
        assert_eq!(zf.size().unwrap(), 8_388_608, "{kind}");
        assert_eq!(zf.nblocks().unwrap(), 4, "{kind}");
        let blocks: Vec<(u64, Oid)> = zf
            .blocks()
            .map(|b| b.map(|(k, r)| (k, r.oid)).unwrap())
            .collect();
        assert_eq!(blocks, [(1, z0), (3, z1)], "{kind}");

        let mut buf = vec![0xa5u8; BLKSIZE as usize];
        for hole in [0, 2, 4, 1000] {
            assert_eq!(
                zf.read_block(hole, &mut buf).unwrap(),
                None,
                "{kind} block {hole}"
            );
            assert!(
                buf.iter().all(|&b| b == 0),
                "{kind}: hole {hole} reads as zeros"
            );
            buf.fill(0xa5);
        }
        let info = zf.read_block(1, &mut buf).unwrap().unwrap();
        assert_eq!(
            (info.zblk, info.format, info.serial, info.len),
            (z0, BlockFormat::ZBlk0, TID2, 16384)
        );
        assert!(buf == expect0, "{kind}: ZBlk0 block");
        buf.fill(0xa5);
        let info = zf.read_block(3, &mut buf).unwrap().unwrap();
        assert_eq!(
            (info.zblk, info.format, info.serial, info.len),
            (z1, BlockFormat::ZBlk1, TID2, 2_097_145)
        );
        assert!(buf == expect1, "{kind}: ZBlk1 block");

        // The ZBlk1's chunks: 64, of the stripped lengths the spec lists.
        let b3 = zf.load_block(3).unwrap().unwrap();
        let BlockData::Chunks(chunks) = &b3.data else {
            panic!("ZBlk1 read as flat data")
        };
        assert_eq!(chunks.len(), 64, "{kind}");
        assert!(
            chunks
                .iter()
                .all(|c| [4096, 4094, 4089].contains(&c.data.len())),
            "{kind}"
        );
        assert_eq!(chunks.iter().filter(|c| c.offset < 128 << 10).count(), 32);
        // ZBlk1 + IOBTree + 2 buckets + 64 ZData.
        assert_eq!(b3.objects, 68, "{kind}");

        // The whole file, streamed and read back at odd offsets.
        let mut all = Vec::new();
        assert_eq!(zf.write_to(&mut all, &mut |_| {}).unwrap(), 8_388_608);
        let mut expect = vec![0u8; 8 << 20];
        expect[2 << 20..4 << 20].copy_from_slice(&expect0);
        expect[6 << 20..].copy_from_slice(&expect1);
        assert!(all == expect, "{kind}: whole file");
        for (off, len) in [
            (0, 10),
            (BLKSIZE - 3, 16390),
            (6 << 20, 2 << 20),
            ((6 << 20) + 4095, 3),
            (8 << 20, 100),
        ] {
            let mut part = vec![0xa5u8; len as usize];
            zf.read_at(off, &mut part).unwrap();
            let want: Vec<u8> = (off..off + len)
                .map(|i| expect.get(i as usize).copied().unwrap_or(0))
                .collect();
            assert!(part == want, "{kind}: read_at({off}, {len})");
        }

        // The same bytes read on several threads, from block-unaligned starts.
        for threads in [1, 2, 3, 7] {
            for off in [0, 5, BLKSIZE + 1] {
                let len = (8 << 20) - off as usize - 3;
                let mut part = vec![0xa5u8; len];
                zf.read_at_parallel(off, &mut part, threads).unwrap();
                assert!(
                    part[..] == expect[off as usize..off as usize + len],
                    "{kind}: {threads} threads from {off}"
                );
            }
        }

        let st = zf.stats().unwrap();
        assert_eq!(st.count(BlockFormat::ZBlk0), 1);
        assert_eq!(st.count(BlockFormat::ZBlk1), 1);
        assert_eq!(st.count(BlockFormat::LegacyZBlk), 0);
        assert_eq!(st.nblocks, 4);
        let chunk_bytes: u64 = chunks.iter().map(|c| c.data.len() as u64).sum();
        assert_eq!(st.data_bytes, 16384 + chunk_bytes);

        // Block bytes keep their pickle spelling: py2 str or py3 bytes.
        let (data, _) = fs.load(z0).unwrap();
        let ZBlkState::ZBlk0(s) = decode_zblk(z0, &decode_record(&data).unwrap()).unwrap() else {
            panic!("{kind}: ZBlk0 decoded as another format");
        };
        let want = if kind.starts_with("py2") {
            BinaryKind::Str
        } else {
            BinaryKind::Bytes
        };
        assert_eq!((s.data.kind, s.legacy_name), (want, false), "{kind}");

        // Before transaction 2 the file did not exist.
        match ZBigFile::open(Snapshot::at(&fs, TID1), zf_oid) {
            Err(Error::Load {
                oid,
                source: StorageError::NoSuchObject { .. },
            }) => assert_eq!(oid, zf_oid),
            other => panic!("{kind}: {other:?}"),
        }
    }
}

#[test]
fn zblk1_chunktab_is_two_buckets() {
    let Some(dir) = fixture("wendelin/py3_pickle3/zblk.fs") else {
        return;
    };
    let fs = FileStorage::open_read_only(dir).unwrap();
    let t: BTree<'_, _, zblk::format::ObjRef> =
        BTree::open(Snapshot::latest(&fs), Family::IO, Oid(4)).unwrap();
    let Node::Tree(TreeState::Nodes(n)) = t.root() else {
        panic!("{:?}", t.root())
    };
    assert_eq!(
        n.children.iter().map(|c| c.oid).collect::<Vec<_>>(),
        [Oid(5), Oid(6)]
    );
    assert_eq!(n.keys, [122_880]);
    assert_eq!(n.firstbucket.oid, Oid(5));
    assert_eq!(
        n.firstbucket.class_path(),
        Some(("BTrees.IOBTree", "IOBucket"))
    );
    let keys: Vec<i64> = t.iter().map(|r| r.unwrap().0).collect();
    assert_eq!(keys.len(), 64);
    assert_eq!(
        keys[..30],
        (0..30).map(|i| i * 4096).collect::<Vec<_>>()[..]
    );
    assert_eq!(t.get(126_976).unwrap().unwrap().oid, Oid(8));
    assert_eq!(t.get(4095).unwrap(), None);
    assert_eq!(t.max_key().unwrap(), Some(2_093_056));
    // The blktab is an inline single-bucket LOBTree.
    let b: BTree<'_, _, zblk::format::ObjRef> =
        BTree::open(Snapshot::latest(&fs), Family::LO, Oid(71)).unwrap();
    assert!(matches!(b.root(), Node::Tree(TreeState::Inline(_))));
    assert_eq!(b.iter().map(|r| r.unwrap().0).collect::<Vec<_>>(), [1, 3]);
}

/// Values of the btree fixture: ints and Python 2 strings.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i64),
    Str(Vec<u8>),
}

impl BTreeValue for Val {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        if let Some(i) = v.as_int() {
            return Ok(Val::Int(i));
        }
        v.as_bytes()
            .map(|b| Val::Str(b.to_vec()))
            .ok_or_else(|| format!("unexpected value {v:?}"))
    }
}

fn items(t: &BTree<'_, FileStorage, Val>) -> Vec<(i64, Val)> {
    t.iter().collect::<Result<_, _>>().unwrap()
}

#[test]
fn btree_fixture_reads_to_its_keys_and_values() {
    let Some(path) = fixture("btree/1.fs") else {
        return;
    };
    let fs = FileStorage::open_read_only(path).unwrap();
    let open = |name: &str| -> BTree<'_, FileStorage, Val> {
        BTree::open(Snapshot::latest(&fs), Family::LO, root_ref(&fs, name)).unwrap()
    };
    let s = |t: &str| Val::Str(t.as_bytes().to_vec());

    let b0 = open("b0");
    assert!(matches!(b0.root(), Node::Bucket(b) if b.keys.is_empty() && b.next.is_none()));
    assert_eq!(items(&b0), []);
    assert_eq!(b0.max_key().unwrap(), None);
    assert_eq!(items(&open("b1")), [(10, Val::Int(17))]);
    assert_eq!(items(&open("b2")), [(15, Val::Int(1)), (23, s("hello"))]);

    let t0 = open("B0");
    assert!(matches!(t0.root(), Node::Tree(TreeState::Empty)));
    assert_eq!(items(&t0), []);
    assert_eq!(t0.get(0).unwrap(), None);
    assert_eq!(t0.max_key().unwrap(), None);
    let t1 = open("B1");
    assert_eq!(items(&t1), [(5, Val::Int(4))]);
    assert_eq!(t1.get(5).unwrap(), Some(Val::Int(4)));
    let t2 = open("B2");
    assert_eq!(items(&t2), [(7, Val::Int(3)), (9, s("world"))]);
    assert_eq!(t2.get(9).unwrap(), Some(s("world")));
    assert_eq!(t2.get(8).unwrap(), None);

    let t3 = open("B3");
    let Node::Tree(TreeState::Nodes(n)) = t3.root() else {
        panic!("B3 is not split")
    };
    assert!(n.children.len() > 100, "{} children", n.children.len());
    let all = items(&t3);
    assert_eq!(all.len(), 10_000);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (k, v))| *k == i as i64 && *v == Val::Int(i as i64))
    );
    for k in [0, 1, 59, 60, 4999, 9998, 9999] {
        assert_eq!(t3.get(k).unwrap(), Some(Val::Int(k)), "get({k})");
    }
    assert_eq!(t3.get(10_000).unwrap(), None);
    assert_eq!(t3.get(-1).unwrap(), None);
    assert_eq!(t3.max_key().unwrap(), Some(9999));
    let from: Vec<i64> = t3.iter_from(5000).map(|r| r.unwrap().0).collect();
    assert_eq!(from, (5000..10_000).collect::<Vec<_>>());
    assert_eq!(t3.iter_from(10_000).count(), 0);
    assert_eq!(t3.iter_from(i64::MIN).count(), 10_000);
    // Each bucket is loaded once by a full walk.
    let mut it = t3.iter();
    for r in &mut it {
        r.unwrap();
    }
    assert_eq!(it.stats().objects, n.children.len() as u64);
}

/// Reading the same bytes through the generic piece visitor.
#[test]
fn pieces_cover_the_range_exactly() {
    let Some(path) = fixture("wendelin/py2_pickle1/zblk.fs") else {
        return;
    };
    let fs = FileStorage::open_read_only(path).unwrap();
    let zf = ZBigFile::open(Snapshot::latest(&fs), Oid(1)).unwrap();
    let mut total = 0u64;
    let mut data = 0u64;
    zf.for_each_piece(100, 8 << 20, &mut |p| {
        match p {
            Piece::Data(d) => {
                total += d.len() as u64;
                data += d.len() as u64;
            }
            Piece::Zeros(n) => total += n,
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(total, 8 << 20);
    assert_eq!(data, 16384 + chunk_payload(&zf));
}

fn chunk_payload<S: ReadStorage + ?Sized>(zf: &ZBigFile<'_, S>) -> u64 {
    zf.load_block(3).unwrap().unwrap().data.payload()
}
