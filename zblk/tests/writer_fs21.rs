//! Writing into Python 2 databases (`FS21`): copies of the three Python 2
//! wendelin fixtures get new blocks (ZBlk0, ZBlk1, `auto`, over holes and
//! over the existing ZBlk0 and ZBlk1 blocks), a new ZBigArray, a resize
//! and an append, written in the file's own dialect (Python 2 `str` data,
//! the protocol of the file's records). Our reader reads everything back,
//! and so does Python 3 ZODB through the `FS21` patch of
//! tests/py/reftool.py (the stand-ins' loadblk, BTrees' check()).
//!
//! What Python 2 itself would write cannot be run here; the spelling of
//! each record kind is checked against what Python 2 wrote in
//! `encode_fixtures.rs`.

mod writer;

use std::path::Path;

use filestorage::{FileStorage, OpenOptions};
use serde_json::Value as Json;
use writer::{Rng, oracle};
use zblk::array::ZBigArray;
use zblk::dtype::DType;
use zblk::file::ZBigFile;
use zblk::format::Order;
use zblk::npy::parse_descr;
use zblk::write::{ArraySpec, WriteFormat, Writer, WriterOptions, detect_dialect};
use zodb_core::pickle::Flavor;
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, TxnMeta};

const BLKSIZE: u64 = 2 << 20;

fn brange32(n: usize) -> Vec<u8> {
    (0..n as u32 / 4).flat_map(u32::to_be_bytes).collect()
}

/// The file as the fixture holds it: block 1 ZBlk0, block 3 ZBlk1.
fn fixture_image() -> Vec<u8> {
    let bs = BLKSIZE as usize;
    let mut img = vec![0u8; 4 * bs];
    img[bs..bs + 16384].copy_from_slice(&brange32(16384));
    let head = brange32(128 << 10);
    let blk3 = 3 * bs;
    img[blk3..blk3 + head.len()].copy_from_slice(&head);
    let tail: Vec<u8> = head.iter().rev().copied().collect();
    img[blk3 + bs - tail.len()..blk3 + bs].copy_from_slice(&tail);
    img
}

fn put(img: &mut Vec<u8>, off: usize, data: &[u8]) {
    if img.len() < off + data.len() {
        img.resize(off + data.len(), 0);
    }
    img[off..off + data.len()].copy_from_slice(data);
}

/// Bytes with a high bit in every 4 KiB, as Python 3 reads Python 2 `str`
/// as bytes only when it is not ASCII (the patch's errors='bytes').
fn high(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = rng.data(n);
    for i in (0..n).step_by(1000) {
        v[i] = 0x80 | (i as u8);
    }
    v
}

fn run(kind: &str, fixture: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("zblk.fs");
    std::fs::copy(fixture, &db).unwrap();
    let mut rng = Rng(kind.len() as u64 + 1);
    let bs = BLKSIZE as usize;
    let mut img = fixture_image();
    let arr_descr = "[('x', '<i4'), ('y', '>f8')]";
    let (arr_shape, arr_item) = (vec![50u64, 3], 12usize);
    let arr_bytes = high(&mut rng, 50 * 3 * arr_item);
    let more = high(&mut rng, 10 * 3 * arr_item);
    {
        let fs = FileStorage::open(&db, &OpenOptions::read_write()).unwrap();
        let mut w = Writer::open(&fs, WriterOptions::default(), None).unwrap();
        assert_eq!(w.dialect().flavor(), Flavor::Py2, "{kind}");
        let zf = w.root_get("zbigf").unwrap().unwrap();
        let f = w.open_file_or_array(zf).unwrap();
        // A hole becomes a ZBlk0; a small change to the ZBlk0 becomes a
        // ZBlk1 under `auto`; the ZBlk1 gets changed chunks.
        let a = high(&mut rng, 5000);
        w.write_at(f, 10, &a).unwrap();
        put(&mut img, 10, &a);
        w.commit(TxnMeta::default()).unwrap().unwrap();
        w.set_format(WriteFormat::Auto);
        let b = high(&mut rng, 300);
        w.write_at(f, BLKSIZE + 100, &b).unwrap();
        put(&mut img, bs + 100, &b);
        w.set_format(WriteFormat::ZBlk1);
        let c = high(&mut rng, 9000);
        w.write_at(f, 3 * BLKSIZE + 50_000, &c).unwrap();
        put(&mut img, 3 * bs + 50_000, &c);
        let z = vec![0u8; 8192];
        w.write_at(f, 3 * BLKSIZE, &z).unwrap();
        put(&mut img, 3 * bs, &z);
        let d = high(&mut rng, 1000);
        w.store_block(f, 5, &d, WriteFormat::ZBlk1).unwrap();
        put(&mut img, 5 * bs, &d);
        img.resize(6 * bs, 0);
        let spec = ArraySpec {
            dtype: DType::from_descr(&parse_descr(arr_descr).unwrap()).unwrap(),
            shape: arr_shape.clone(),
            order: Order::C,
            blksize: 4096,
        };
        let arr = w.create_array("arr", spec).unwrap();
        let af = w.array_file(arr).unwrap();
        w.write_at(af, 0, &arr_bytes).unwrap();
        w.commit(TxnMeta::default()).unwrap().unwrap();
        w.set_format(WriteFormat::ZBlk0);
        w.append(arr, &more).unwrap();
        w.commit(TxnMeta::default()).unwrap().unwrap();
    }
    let mut arr_all = arr_bytes.clone();
    arr_all.extend_from_slice(&more);

    // Every new record is in the file's dialect.
    let fs = FileStorage::open_read_only(&db).unwrap();
    let (root, _) = fs.load(Oid(0)).unwrap();
    let want = detect_dialect(&root);
    for t in fs.iter_transactions(None, None).unwrap().skip(2) {
        for r in t.unwrap().records {
            let data = r.data.unwrap();
            assert_eq!(
                detect_dialect(&data),
                want,
                "{kind}: {} written in another dialect",
                r.oid
            );
        }
    }
    // Our reader.
    let snap = Snapshot::latest(&fs);
    let zf = ZBigFile::open(Snapshot::latest(&fs), Oid(1)).unwrap();
    let mut got = Vec::new();
    zf.write_to(&mut got, &mut |_| {}).unwrap();
    assert!(got == img, "{kind}: zbigf reads other bytes");
    let a = ZBigArray::open(snap, fs_root_ref(&fs, "arr")).unwrap();
    assert_eq!(a.shape(), &[60, 3]);
    let mut buf = vec![0u8; a.nbytes() as usize];
    a.read_into(Order::C, &mut buf).unwrap();
    assert!(buf == arr_all, "{kind}: arr reads other bytes");

    // Python 3 with the FS21 patch.
    let Some(py) = zodb_it::python() else { return };
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let summary = oracle(
        &py,
        &["readall", db.to_str().unwrap(), out.to_str().unwrap()],
    );
    let summary: Json = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(
        summary["arr"]["shape"],
        serde_json::json!([60, 3]),
        "{kind}"
    );
    assert_eq!(summary["arr"]["order"], "C", "{kind}");
    let py_file = std::fs::read(out.join("zbigf.bin")).unwrap();
    assert!(py_file == img, "{kind}: Python reads zbigf differently");
    let py_arr = std::fs::read(out.join("arr.bin")).unwrap();
    assert!(py_arr == arr_all, "{kind}: Python reads arr differently");
    eprintln!("{kind}: {summary}");
}

fn fs_root_ref(fs: &FileStorage, key: &str) -> Oid {
    let (data, _) = fs.load(Oid(0)).unwrap();
    let rec = zodb_core::pickle::decode_record(&data).unwrap();
    rec.state()
        .dict_get("data")
        .and_then(|d| d.dict_get(key))
        .unwrap()
        .persistent_ref()
        .unwrap()
        .oid()
}

#[test]
fn python2_databases_stay_readable() {
    let Some(fx) = zodb_it::shared_fixtures() else {
        return;
    };
    for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3"] {
        run(kind, &fx.join("wendelin").join(kind).join("zblk.fs"));
    }
}
