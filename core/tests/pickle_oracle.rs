//! Every record and extension of every fixture database against the real
//! Python implementation run by the venv (pickle_oracle.py): ZODB's
//! `referencesf` and `get_pickle_metadata`, and zodbpickle's
//! `pickletools_3.dis`. Skipped when the venv is absent, unless CI=true.

mod pickle_util;

use pickle_util::{databases, fixtures, hex, python, read_fs, run_python, unhex};
use zodb_core::pickle::{DisMemo, class_name, dis, references};

/// `dis` of `pickles` pickles with one memo, hex-encoded, or `!` on error.
fn dis_hex(data: &[u8], pickles: usize) -> String {
    let mut out = String::new();
    let mut memo = DisMemo::new();
    let mut pos = 0;
    for _ in 0..pickles {
        match dis(data, pos, &mut out, &mut memo) {
            Ok(end) => pos = end,
            Err(_) => return "!".into(),
        }
    }
    hex(out.as_bytes())
}

#[test]
fn fixtures_agree_with_python() {
    let (Some(fx), Some(py)) = (fixtures(), python()) else {
        return;
    };
    // (what, kind, data) for every extension and record.
    let mut items = Vec::new();
    for path in databases(&fx) {
        for txn in read_fs(&path) {
            if !txn.ext.is_empty() {
                items.push((
                    format!("{} ext at {}", path.display(), txn.pos),
                    "ext",
                    txn.ext.clone(),
                ));
            }
            for r in txn.records {
                if let Some(data) = r.data {
                    items.push((
                        format!("{} oid {} at {}", path.display(), r.oid, r.pos),
                        "rec",
                        data,
                    ));
                }
            }
        }
    }
    let input: String = items
        .iter()
        .map(|(_, kind, data)| format!("{kind} {}\n", hex(data)))
        .collect();
    let output = run_python(&py, "pickle_oracle.py", &input);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), items.len());

    let (mut refs_compared, mut py_refs_failed) = (0, 0);
    for ((what, kind, data), line) in items.iter().zip(lines) {
        let [refs, refs_bytes, meta, want_dis] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("bad oracle line {line:?}");
        };
        let pickles = if *kind == "rec" { 2 } else { 1 };
        let got_dis = dis_hex(data, pickles);
        if want_dis.starts_with('!') {
            assert_eq!(got_dis, "!", "{what}: pickletools raised {want_dis}");
        } else {
            assert!(
                got_dis == want_dis,
                "{what}: dis differs\n--- ours\n{}\n--- pickletools\n{}",
                String::from_utf8_lossy(&unhex(&got_dis)),
                String::from_utf8_lossy(&unhex(want_dis))
            );
        }
        if *kind != "rec" {
            continue;
        }

        let ours = references(data).unwrap_or_else(|e| panic!("{what}: {e}"));
        let ours = ours
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let ours = if ours.is_empty() {
            "=".to_owned()
        } else {
            ours
        };
        // ZODB's own referencesf, wherever Python 3 can run it ...
        if refs.starts_with('!') {
            py_refs_failed += 1;
        } else {
            assert_eq!(ours, refs, "{what}: referencesf");
            refs_compared += 1;
        }
        // ... and everywhere, with Python 2 str taken as bytes (the spec's rule).
        assert_eq!(
            ours, refs_bytes,
            "{what}: referencesf with py2 str as bytes"
        );

        let (m, n) = class_name(data);
        assert_eq!(
            format!("{},{}", hex(m.as_bytes()), hex(n.as_bytes())),
            meta,
            "{what}: get_pickle_metadata"
        );
    }
    assert!(refs_compared > 500, "{refs_compared} compared");
    // The ZBlk0 records of the py2 wendelin files hold non-ASCII py2 str,
    // which Python 3 ZODB cannot noload (spec pickles.md §6).
    assert!(py_refs_failed >= 3, "{py_refs_failed}");
}

/// The committed table of non-printable code points is what the reference
/// Python's `str.isprintable()` says (the disassembler's str reprs use it).
#[test]
fn printable_table_is_current() {
    let Some(py) = python() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pickle");
    let out = std::process::Command::new(&py)
        .arg(dir.join("gen_printable.py"))
        .output()
        .expect("run gen_printable.py");
    assert!(out.status.success());
    let committed = std::fs::read_to_string(dir.join("printable.rs")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == committed,
        "src/pickle/printable.rs is stale: regenerate it with gen_printable.py"
    );
}
