//! `zodbrs array import` and `zodbrs zblk convert` end to end: a `.npy`
//! imported and exported again is the same file byte for byte (every
//! dtype kind, both orders, small blocks and transactions so that many
//! commits happen, all three block formats); a conversion keeps
//! `bigfile cat` output identical; Python reads what we wrote (the
//! wendelin.core stand-ins, BTrees' check()).

use std::path::Path;
use std::process::Command;

use zblk::array::NpyHeader;
use zblk::npy::{header, parse_descr};

mod run;
use run::zodbrs;

fn ok(args: &[&str]) -> Vec<u8> {
    run::ok(args).stdout
}

/// Pseudo-random bytes with zero runs (whole blocks of zeros included).
fn data(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed | 1;
    let mut v = vec![0u8; n];
    let mut i = 0;
    while i < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let run = (s % 20_000) as usize + 1;
        let end = (i + run).min(n);
        if !s.is_multiple_of(3) {
            for b in &mut v[i..end] {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s as u8;
            }
        }
        i = end;
    }
    v
}

/// A `.npy` as `np.save` writes it (our header writer matches NumPy's
/// byte for byte; see zblk's tests).
fn npy(path: &Path, descr: &str, fortran: bool, shape: &[u64], itemsize: u64, seed: u64) {
    let n: u64 = shape.iter().product::<u64>() * itemsize;
    let mut out = header(&NpyHeader {
        descr: parse_descr(descr).unwrap(),
        fortran_order: fortran,
        shape: shape.to_vec(),
    });
    out.extend(data(seed, n as usize));
    std::fs::write(path, out).unwrap();
}

/// The oid in `root['k'] = ZBigArray 0000000000000001 (...`.
fn oid_of(report: &[u8], what: &str) -> String {
    let text = String::from_utf8_lossy(report);
    let at = text.find(what).unwrap_or_else(|| panic!("{text}")) + what.len();
    text[at..at + 16].to_owned()
}

#[test]
fn import_then_export_is_the_same_npy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let db = db.to_str().unwrap();
    let cases: &[(&str, bool, &[u64], u64)] = &[
        ("'<f8'", false, &[300, 70], 8),
        ("'>i4'", true, &[20, 31, 9], 4),
        ("'|u1'", false, &[100_003], 1),
        ("'<c16'", true, &[17, 100], 16),
        ("'<M8[ns]'", false, &[5000], 8),
        ("'<U3'", false, &[4000], 12),
        ("[('x', '<i4'), ('y', '>f8')]", false, &[9000], 12),
        (
            "[(('t', 'a'), '<i2', (2, 3)), ('', '|V2'), ('b', '|S3')]",
            true,
            &[40, 30],
            17,
        ),
        ("'<f4'", false, &[], 4),
        ("'<f8'", false, &[0, 5], 8),
    ];
    for (i, &(descr, fortran, shape, itemsize)) in cases.iter().enumerate() {
        let fmt = ["ZBlk0", "ZBlk1", "auto"][i % 3];
        let src = dir.path().join(format!("in{i}.npy"));
        npy(&src, descr, fortran, shape, itemsize, i as u64 + 1);
        let key = format!("k{i}");
        let report = ok(&[
            "array",
            "import",
            "--key",
            &key,
            "--blksize",
            "8192",
            "--format",
            fmt,
            "--txn-mib",
            "1",
            src.to_str().unwrap(),
            db,
        ]);
        let oid = oid_of(&report, "= ZBigArray ");
        let back = dir.path().join(format!("out{i}.npy"));
        ok(&["array", "export", db, &oid, back.to_str().unwrap()]);
        assert!(
            std::fs::read(&src).unwrap() == std::fs::read(&back).unwrap(),
            "{descr} {shape:?} fortran={fortran} ({fmt}): exported .npy differs from the imported one"
        );
    }
    // The same key again is refused, and nothing is written.
    let before = std::fs::metadata(db).unwrap().len();
    let src = dir.path().join("in0.npy");
    let out = zodbrs(&["array", "import", "--key", "k0", src.to_str().unwrap(), db]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already has \"k0\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(db).unwrap().len(), before);

    // Python reads every array equal to its .npy.
    let Some(py) = zodb_it::python() else { return };
    let out = Command::new(&py)
        .arg("-c")
        .arg(PY_CHECK)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../zblk/tests/py"))
        .arg(db)
        .arg(dir.path())
        .arg(cases.len().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ok {}", cases.len())
    );
}

/// Python: every root['kI'] equals numpy.load('inI.npy'), and its
/// block table passes BTrees' check().
const PY_CHECK: &str = r#"
import sys, os
sys.path.insert(0, sys.argv[1])
import numpy, BTrees.check
import wendelin_standin as W
from ZODB import DB
from ZODB.FileStorage import FileStorage
db = DB(FileStorage(sys.argv[2], read_only=True))
root = db.open().root()
n = 0
for i in range(int(sys.argv[4])):
    want = numpy.load(os.path.join(sys.argv[3], 'in%d.npy' % i))
    a = root['k%d' % i]
    got = W.array_view(a)
    assert got.shape == want.shape and got.dtype == want.dtype, (i, got.dtype, want.dtype)
    assert got.tobytes(order='A') == want.tobytes(order='A'), i
    BTrees.check.check(a.zfile.blktab)
    for blk, z in a.zfile.blktab.items():
        if type(z).__name__ == 'ZBlk1':
            BTrees.check.check(z.chunktab)
    n += 1
print('ok %d' % n)
"#;

#[test]
fn convert_keeps_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let db = db.to_str().unwrap();
    let src = dir.path().join("in.npy");
    npy(&src, "'<f8'", false, &[1 << 19], 8, 42);
    let report = ok(&[
        "array",
        "import",
        "--key",
        "a",
        "--blksize",
        "65536",
        "--format",
        "auto",
        src.to_str().unwrap(),
        db,
    ]);
    let arr = oid_of(&report, "= ZBigArray ");
    let file = oid_of(&report, "(ZBigFile ");
    let before = ok(&["bigfile", "cat", db, &file]);
    for (to, other) in [("ZBlk1", "ZBlk0"), ("ZBlk0", "ZBlk1"), ("ZBlk1", "ZBlk0")] {
        // The array's oid works as well as its file's.
        let target = if to == "ZBlk0" { &arr } else { &file };
        let out = ok(&["zblk", "convert", "--to", to, "--txn-mib", "1", db, target]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(&format!("rewritten as {to}")), "{text}");
        assert!(
            ok(&["bigfile", "cat", db, &file]) == before,
            "bigfile cat differs after converting to {to}"
        );
        let info = String::from_utf8_lossy(&ok(&["array", "info", db, &arr])).into_owned();
        assert!(info.contains(&format!("{other} 0")), "{info}");
        // Converting again finds nothing to do.
        let out = ok(&["zblk", "convert", "--to", to, db, target]);
        assert!(
            String::from_utf8_lossy(&out).contains(": 0 of"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    let Some(py) = zodb_it::python() else { return };
    let out = Command::new(&py)
        .arg("-c")
        .arg(
            r#"
import sys
sys.path.insert(0, sys.argv[1])
import numpy, BTrees.check
import wendelin_standin as W
from ZODB import DB
from ZODB.FileStorage import FileStorage
a = DB(FileStorage(sys.argv[2], read_only=True)).open().root()['a']
assert W.array_view(a).tobytes() == numpy.load(sys.argv[3]).tobytes()
BTrees.check.check(a.zfile.blktab)
kinds = set()
for blk, z in a.zfile.blktab.items():
    kinds.add(type(z).__name__)
    BTrees.check.check(z.chunktab)
print(sorted(kinds))
"#,
        )
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../zblk/tests/py"))
        .arg(db)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "['ZBlk1']");
}
