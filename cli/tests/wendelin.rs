//! `zodbrs bigfile cat`, `zodbrs array info` and `zodbrs array export` end
//! to end: on wendelin.core's own fixtures, and on databases the Python
//! oracle of the zblk crate (`zblk/tests/py/zblk_oracle.py`) builds, whose
//! `np.save` outputs our exports must equal byte for byte and which
//! `numpy.load` must read back equal.

use std::path::{Path, PathBuf};
use std::process::Command;

mod run;
use run::zodbrs;

fn ok(args: &[&str]) -> Vec<u8> {
    run::ok(args).stdout
}

fn brange32(size: usize) -> Vec<u8> {
    (0..(size / 4) as u32).flat_map(u32::to_be_bytes).collect()
}

#[test]
fn bigfile_cat_of_the_wendelin_fixtures() {
    let Some(shared) = zodb_it::shared_fixtures() else {
        return;
    };
    let blk = 2 << 20;
    let mut want = vec![0u8; 4 * blk];
    want[blk..blk + 16384].copy_from_slice(&brange32(16384));
    let ht = brange32(128 << 10);
    want[3 * blk..3 * blk + ht.len()].copy_from_slice(&ht);
    let mut tail = ht.clone();
    tail.reverse();
    want[4 * blk - tail.len()..].copy_from_slice(&tail);
    for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
        let db = shared.join("wendelin").join(kind).join("zblk.fs");
        let db = db.to_str().unwrap();
        for oid in ["1", "0x1", "0000000000000001"] {
            let got = ok(&["bigfile", "cat", db, oid]);
            assert!(got == want, "{kind}: bigfile cat {oid}");
        }
        let got = ok(&["bigfile", "cat", "--at", "0285cbac3851eb99", db, "1"]);
        assert!(got == want, "{kind}: --at the last transaction");
        // Before the file existed; and an object that is no ZBigFile.
        let out = zodbrs(&["bigfile", "cat", "--at", "0285cbac20da7419", db, "1"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("loading 0000000000000001") && err.contains("no such object"),
            "{err}"
        );
        let out = zodbrs(&["bigfile", "cat", db, "2"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("class wendelin.bigfile.file_zodb.ZBlk0, expected"),
            "{err}"
        );
    }
}

fn oracle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../zblk/tests/py/zblk_oracle.py")
}

fn python_ok(py: &Path, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg(oracle())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "zblk_oracle.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn array_export_equals_np_save_and_info_describes_it() {
    let Some(py) = zodb_it::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    python_ok(&py, &["gen", d.to_str().unwrap(), "21"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
    let db = d.join("Data.fs");
    let db = db.to_str().unwrap();
    let checks = manifest["checks"].as_array().unwrap();
    for c in checks {
        let base = c["base"].as_str().unwrap();
        let (oid, tid) = (
            c["oid"].as_u64().unwrap().to_string(),
            c["tid"].as_str().unwrap(),
        );
        let ours = d.join(format!("{base}.ours.npy"));
        ok(&[
            "array",
            "export",
            "--at",
            tid,
            db,
            &oid,
            ours.to_str().unwrap(),
        ]);
        let want = std::fs::read(d.join(format!("{base}.npy"))).unwrap();
        let got = std::fs::read(&ours).unwrap();
        if c["field_mask"].as_str().unwrap().is_empty() {
            assert!(got == want, "{base}: export differs from np.save");
        } else {
            assert_eq!(got.len(), want.len(), "{base}");
        }
        let info = String::from_utf8(ok(&["array", "info", "--at", tid, db, &oid])).unwrap();
        let line = |key: &str| {
            info.lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no {key} in\n{info}"))[11..]
                .to_owned()
        };
        let shape: Vec<String> = c["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.to_string())
            .collect();
        let shape = match shape.len() {
            1 => format!("({},)", shape[0]),
            _ => format!("({})", shape.join(", ")),
        };
        assert_eq!(line("shape"), shape, "{base}");
        assert_eq!(line("dtype"), c["descr"].as_str().unwrap(), "{base}");
        assert_eq!(line("nbytes"), c["nbytes"].to_string(), "{base}");
        assert_eq!(line("blksize"), c["blksize"].to_string(), "{base}");
        let order = line("order");
        match c["order"].as_str() {
            Some(o) => assert_eq!(order, o, "{base}"),
            None => assert!(order.starts_with("C (no _order"), "{base}: {order}"),
        }
        let count = |f: &str| c["blocks"].get(f).and_then(|n| n.as_u64()).unwrap_or(0);
        let blocks = format!(
            "ZBlk0 {}, ZBlk {}, ZBlk1 {}",
            count("ZBlk0"),
            count("ZBlk"),
            count("ZBlk1")
        );
        assert!(
            line("blocks").contains(&blocks),
            "{base}: {}",
            line("blocks")
        );
    }
    let out = python_ok(
        &py,
        &["check-npy", d.join("manifest.json").to_str().unwrap()],
    );
    assert_eq!(out.trim(), format!("ok {}", checks.len()));

    // `-` writes to stdout; a failed export leaves no file behind.
    let first = &checks[checks.len() - 1];
    let oid = first["oid"].as_u64().unwrap().to_string();
    let stdout = ok(&["array", "export", db, &oid, "-"]);
    assert_eq!(
        stdout,
        std::fs::read(d.join(format!("{}.npy", first["base"].as_str().unwrap()))).unwrap()
    );
    let bad = d.join("bad.npy");
    let out = zodbrs(&["array", "export", db, "0", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("expected wendelin.bigarray.array_zodb.ZBigArray")
    );
    assert!(!bad.exists());
}
