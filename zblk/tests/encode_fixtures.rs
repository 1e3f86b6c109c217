//! The state encoders against what Python 2 and Python 3 wrote: every
//! wendelin record of the four real databases (`../shared/fixtures/
//! wendelin/`: Python 2 at protocols 1, 2 and 3, Python 3), decoded to its
//! typed state and encoded again in the dialect the writer detects from
//! the file's root record, is the stored record byte for byte. This is
//! the evidence for the Python 2 spellings the writer uses on `FS21`
//! files (Python 2 cannot run here): `str` block data, `str` oids below
//! protocol 3 and `binary` ones at 3, MARK/TUPLE at protocol 1, cPickle's
//! memo.

use std::path::Path;

use filestorage::FileStorage;
use zblk::btree::{Family, Node, decode_node};
use zblk::encode::{encode_bucket, encode_tree, encode_zbigfile, encode_zblk, encode_zdata};
use zblk::format::{ObjRef, decode_zbigfile, decode_zblk, decode_zdata};
use zblk::write::detect_dialect;
use zodb_core::pickle::{Dialect, Flavor, decode_record};
use zodb_core::{Oid, ReadStorage};

fn check(path: &Path, want: Dialect) -> usize {
    let fs = FileStorage::open_read_only(path).unwrap();
    let (root, _) = fs.load(Oid(0)).unwrap();
    let d = detect_dialect(&root);
    assert_eq!(d, want, "{}: detected dialect", path.display());
    let mut n = 0;
    for oid in 1..=71 {
        let oid = Oid(oid);
        let (data, _) = fs.load(oid).unwrap();
        let rec = decode_record(&data).unwrap();
        let (m, c) = rec.class_path().unwrap();
        let ours = match (m, c) {
            ("wendelin.bigfile.file_zodb", "ZBigFile") => {
                encode_zbigfile(&decode_zbigfile(oid, &rec).unwrap(), d)
            }
            ("wendelin.bigfile.file_zodb", "ZBlk0" | "ZBlk1") => {
                encode_zblk(&decode_zblk(oid, &rec).unwrap(), d)
            }
            ("wendelin.bigfile.file_zodb", "ZData") => {
                encode_zdata(&decode_zdata(oid, &rec).unwrap(), d)
            }
            (_, "LOBTree" | "IOBTree" | "LOBucket" | "IOBucket") => {
                let family = if m == "BTrees.LOBTree" {
                    Family::LO
                } else {
                    Family::IO
                };
                match decode_node::<ObjRef>(family, oid, &rec).unwrap() {
                    Node::Bucket(b) => encode_bucket(family, &b, d),
                    Node::Tree(t) => encode_tree(family, &t, d),
                }
            }
            _ => panic!("{oid}: unexpected class {m}.{c}"),
        }
        .unwrap();
        assert!(
            ours == data[..],
            "{} {oid} ({m}.{c}): ours differs from the stored record\n ours {}\n file {}",
            path.display(),
            hex::encode(&ours[..ours.len().min(200)]),
            hex::encode(&data[..data.len().min(200)])
        );
        n += 1;
    }
    n
}

#[test]
fn wendelin_fixture_records_reencode_from_typed_states() {
    let Some(fx) = zodb_it::shared_fixtures() else {
        return;
    };
    let kinds = [
        ("py2_pickle1", Dialect::new(Flavor::Py2, 1).unwrap()),
        ("py2_pickle2", Dialect::new(Flavor::Py2, 2).unwrap()),
        ("py2_pickle3", Dialect::new(Flavor::Py2, 3).unwrap()),
        ("py3_pickle3", Dialect::PY3),
    ];
    for (kind, d) in kinds {
        let n = check(&fx.join("wendelin").join(kind).join("zblk.fs"), d);
        assert_eq!(n, 71, "{kind}");
    }
}
