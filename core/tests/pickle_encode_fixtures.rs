//! The encoder against every pickle real ZODBs wrote: decoding a record
//! and encoding the graph again gives the stored bytes back.
//!
//! - Python 3 files (`FS30`): every record and transaction extension, with
//!   nothing but the graph to go on.
//! - Python 2 files (`FS21`, protocols 1, 2 and zodbpickle's 3): the same
//!   with the Python 2 flavor, given which values the writer left out of
//!   the memo (`unmemoized_nodes`: cPickle skips values it holds by a
//!   single reference, which no graph can know). Without that hint the
//!   encoder guesses; the records where the guess is wrong are listed, and
//!   the wendelin ones (what a zblk writer produces) must all be right.

mod pickle_util;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use pickle_util::{fixtures, read_fs};
use zodb_core::pickle::{
    Decoder, Dialect, DisMemo, Encoder, Flavor, decode_record, dis, encode_record, unmemoized_nodes,
};

/// The protocol of a pickle: its PROTO, or 1 for the binary pickles
/// Python 2 ZODB wrote without one.
fn protocol(data: &[u8]) -> u8 {
    match data {
        [0x80, p, ..] => *p,
        _ => 1,
    }
}

/// Pickles of `data` (one or two) re-encoded from their decoded graph.
fn reencode(data: &Bytes, pickles: usize, flavor: Flavor, exact: bool) -> Vec<u8> {
    let mut d = Decoder::new(data.clone());
    let roots: Vec<_> = (0..pickles).map(|_| d.load().unwrap()).collect();
    assert!(d.is_at_end());
    let graph = d.into_graph();
    let dialect = Dialect::new(flavor, protocol(data)).unwrap();
    let mut e = Encoder::new(&graph, dialect);
    if exact {
        e.py2_single_refs(unmemoized_nodes(data, pickles).unwrap());
    }
    for root in roots {
        e.dump(root).unwrap();
    }
    e.into_output()
}

/// A readable account of where two pickles differ.
fn explain(what: &str, want: &[u8], got: &[u8], pickles: usize) -> String {
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let show = |b: &[u8]| {
        let mut out = String::new();
        let mut memo = DisMemo::new();
        let mut pos = 0;
        for _ in 0..pickles {
            match dis(b, pos, &mut out, &mut memo) {
                Ok(end) => pos = end,
                Err(e) => {
                    out.push_str(&format!("error: {e}\n"));
                    break;
                }
            }
        }
        out
    };
    format!(
        "{what}: first difference at byte {at} (lengths {} stored, {} ours)\n--- stored\n{}\n--- ours\n{}",
        want.len(),
        got.len(),
        show(want),
        show(got)
    )
}

/// (what, pickles, data) for every record and extension of a file.
fn pickles_of(path: &Path) -> Vec<(String, usize, Bytes)> {
    let mut v = Vec::new();
    for txn in read_fs(path) {
        if !txn.ext.is_empty() {
            v.push((format!("{} ext at {}", path.display(), txn.pos), 1, txn.ext));
        }
        for r in txn.records {
            if let Some(data) = r.data {
                v.push((
                    format!("{} oid {} at {}", path.display(), r.oid, r.pos),
                    2,
                    data,
                ));
            }
        }
    }
    v
}

fn history() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/history/Data.fs")
}

#[test]
fn python3_records_reencode_byte_identically() {
    let Some(fx) = fixtures() else { return };
    let mut files = vec![
        fx.join("wendelin/py3_pickle3/zblk.fs"),
        fx.join("zodbtools/1/py3_pickle3/data.fs"),
        fx.join("zodbtools/1_nozext/py3_pickle3/data.fs"),
    ];
    if history().exists() {
        files.push(history());
    }
    let mut n = 0;
    for path in &files {
        for (what, pickles, data) in pickles_of(path) {
            let got = reencode(&data, pickles, Flavor::Py3, false);
            assert!(got == data[..], "{}", explain(&what, &data, &got, pickles));
            n += 1;
        }
    }
    assert!(n > 1000, "only {n} pickles compared");
    eprintln!("{n} Python 3 pickles re-encoded byte for byte");
}

/// The wendelin.md golden records: ZODB 6.4's ObjectWriter re-creates
/// these py3_pickle3 records byte for byte, and so do we, from values
/// built the way a zblk writer builds them (not decoded).
#[test]
fn wendelin_records_built_from_scratch() {
    use zodb_core::Oid;
    use zodb_core::pickle::GraphBuilder;
    let Some(fx) = fixtures() else { return };
    let objs = pickle_util::latest(&fx.join("wendelin/py3_pickle3/zblk.fs"));
    let fz = "wendelin.bigfile.file_zodb";
    let brange32 = |n: u32| -> Vec<u8> { (0..n / 4).flat_map(u32::to_be_bytes).collect() };

    // oid 0: the root mapping.
    let mut b = GraphBuilder::new();
    let class = b.global("persistent.mapping", "PersistentMapping");
    let data = b.text("data");
    let mut items = Vec::new();
    for (name, oid, cls) in [
        ("zbigf", 1, "ZBigFile"),
        ("zblk0", 2, "ZBlk0"),
        ("zblk1", 3, "ZBlk1"),
    ] {
        let key = b.text(name);
        let cls = b.global(fz, cls);
        items.push((key, b.reference(Oid(oid), cls)));
    }
    let inner = b.dict(items);
    let state = b.dict([(data, inner)]);
    let g = b.into_graph();
    assert_eq!(
        encode_record(&g, class, state, Dialect::PY3).unwrap(),
        objs[&Oid(0)]
    );

    // oid 1: ZBigFile (blksize, blktab).
    let mut b = GraphBuilder::new();
    let class = b.global(fz, "ZBigFile");
    let blksize = b.int(2 << 20);
    let tree = b.global("BTrees.LOBTree", "LOBTree");
    let blktab = b.reference(Oid(71), tree);
    let state = b.tuple([blksize, blktab]);
    let g = b.into_graph();
    assert_eq!(
        encode_record(&g, class, state, Dialect::PY3).unwrap(),
        objs[&Oid(1)]
    );

    // oid 2: ZBlk0, its data stripped of trailing NULs.
    let mut b = GraphBuilder::new();
    let class = b.global(fz, "ZBlk0");
    let state = b.bytes(brange32(16384));
    let g = b.into_graph();
    assert_eq!(
        encode_record(&g, class, state, Dialect::PY3).unwrap(),
        objs[&Oid(2)]
    );

    // oid 3: ZBlk1 -> its chunk IOBTree.
    let mut b = GraphBuilder::new();
    let class = b.global(fz, "ZBlk1");
    let tree = b.global("BTrees.IOBTree", "IOBTree");
    let state = b.reference(Oid(4), tree);
    let g = b.into_graph();
    assert_eq!(
        encode_record(&g, class, state, Dialect::PY3).unwrap(),
        objs[&Oid(3)]
    );

    // oid 4: IOBTree ((ref5, 122880, ref6), ref5): the oid of 5 is one
    // bytes object (BINGET), each reference a new tuple.
    let mut b = GraphBuilder::new();
    let class = b.global("BTrees.IOBTree", "IOBTree");
    let bucket = b.global("BTrees.IOBTree", "IOBucket");
    let r5 = b.reference(Oid(5), bucket);
    let key = b.int(122880);
    let r6 = b.reference(Oid(6), bucket);
    let children = b.tuple([r5, key, r6]);
    let first = b.reference(Oid(5), bucket);
    let state = b.tuple([children, first]);
    let g = b.into_graph();
    assert_eq!(
        encode_record(&g, class, state, Dialect::PY3).unwrap(),
        objs[&Oid(4)]
    );

    // oid 71: LOBTree with one inline bucket {1: ZBlk0 oid 2, 3: ZBlk1 oid 3}.
    let mut b = GraphBuilder::new();
    let class = b.global("BTrees.LOBTree", "LOBTree");
    let (k1, k3) = (b.int(1), b.int(3));
    let z0 = b.global(fz, "ZBlk0");
    let z1 = b.global(fz, "ZBlk1");
    let (r2, r3) = (b.reference(Oid(2), z0), b.reference(Oid(3), z1));
    let kv = b.tuple([k1, r2, k3, r3]);
    let bucket = b.tuple([kv]);
    let buckets = b.tuple([bucket]);
    let state = b.tuple([buckets]);
    let g = b.into_graph();
    assert_eq!(
        encode_record(&g, class, state, Dialect::PY3).unwrap(),
        objs[&Oid(71)]
    );
}

#[test]
fn python2_records_reencode_byte_identically() {
    let Some(fx) = fixtures() else { return };
    let mut files = Vec::new();
    for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3"] {
        files.push((true, fx.join("wendelin").join(kind).join("zblk.fs")));
        for variant in ["1", "1_nozext"] {
            files.push((
                false,
                fx.join("zodbtools")
                    .join(variant)
                    .join(kind)
                    .join("data.fs"),
            ));
        }
    }
    files.push((false, fx.join("fs1/1.fs")));
    files.push((false, fx.join("btree/1.fs")));
    let (mut n, mut guessed_wrong) = (0, Vec::new());
    for (wendelin, path) in &files {
        for (what, pickles, data) in pickles_of(path) {
            let got = reencode(&data, pickles, Flavor::Py2, true);
            assert!(got == data[..], "{}", explain(&what, &data, &got, pickles));
            n += 1;
            let guess = reencode(&data, pickles, Flavor::Py2, false);
            if guess != data[..] {
                assert!(
                    !wendelin,
                    "the Python 2 guess is wrong for a wendelin record\n{}",
                    explain(&what, &data, &guess, pickles)
                );
                guessed_wrong.push(explain(&what, &data, &guess, pickles));
            }
        }
    }
    assert!(n > 500, "only {n} pickles compared");
    eprintln!(
        "{n} Python 2 pickles re-encoded byte for byte; without the memo hint {} differ:",
        guessed_wrong.len()
    );
    for e in &guessed_wrong {
        eprintln!("{}", e.lines().next().unwrap_or_default());
    }
}

/// The hint is what it says: decoding gives the nodes the ids it counts.
#[test]
fn unmemoized_nodes_match_the_decoded_graph() {
    let Some(fx) = fixtures() else { return };
    for kind in ["py2_pickle1", "py3_pickle3"] {
        for (_, oid, data) in pickle_util::records(&fx.join("wendelin").join(kind).join("zblk.fs"))
            .into_iter()
            .map(|(oid, d)| ((), oid, d))
        {
            let rec = decode_record(&data).unwrap();
            let single = unmemoized_nodes(&data, 2).unwrap();
            // Every index is a node, and the memoized ones are what a
            // CPython pickler memoizes: never an int or a reference.
            for i in single.indices() {
                assert!(i < rec.graph.len(), "{kind} oid {oid}: index {i}");
            }
            for v in rec.graph.values() {
                if !single.contains(v.id()) {
                    assert!(
                        v.as_int().is_none() && v.as_persistent_id().is_none(),
                        "{kind} oid {oid}: {v:?} memoized"
                    );
                }
            }
        }
    }
}

/// `.index` files: pickles ZODB's `fsIndex.save` writes in fast mode (no
/// memo), one after the other.
#[test]
fn index_files_reencode_in_fast_mode() {
    let Some(fx) = fixtures() else { return };
    let mut files = Vec::new();
    for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
        files.push(fx.join("wendelin").join(kind).join("zblk.fs.index"));
        files.push(fx.join("zodbtools/1").join(kind).join("data.fs.index"));
    }
    files.push(fx.join("fs1/1.fs.index"));
    files.push(fx.join("btree/1.fs.index"));
    if history().exists() {
        files.push(history().with_extension("fs.index"));
    }
    let mut n = 0;
    for path in files {
        let data = Bytes::from(std::fs::read(&path).unwrap());
        // Python 3 wrote the py3_ fixtures and ours; Python 2 the rest.
        let py3 =
            path.to_string_lossy().contains("py3_") || path == history().with_extension("fs.index");
        let flavor = if py3 { Flavor::Py3 } else { Flavor::Py2 };
        let (graph, roots) = zodb_core::pickle::decode_stream(&data).unwrap();
        let mut e = Encoder::new(&graph, Dialect::new(flavor, protocol(&data)).unwrap());
        e.set_fast(true);
        for (root, _) in &roots {
            e.dump(*root).unwrap();
        }
        let got = e.into_output();
        assert!(
            got == data[..],
            "{}",
            explain(&path.display().to_string(), &data, &got, roots.len())
        );
        n += roots.len();
    }
    eprintln!("{n} .index pickles re-encoded byte for byte");
}
