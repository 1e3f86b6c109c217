//! `dis` against zodbtools' `zodb dump --pretty=zpickledis` golden outputs:
//! every extension and every record of the zodbtools fixtures must print
//! exactly the lines zodbtools printed.

mod pickle_util;

use pickle_util::{fixtures, read_fs};
use zodb_core::pickle::{DisFlavor, DisMemo, PickleError, dis};

/// What zodbdump prints under an `extension` or `obj` line: the pickles
/// disassembled one after the other with one memo, each line indented by two
/// spaces.
fn zpickledis(data: &[u8], pickles: usize, flavor: DisFlavor) -> Result<String, PickleError> {
    let mut text = String::new();
    let mut memo = DisMemo::with_flavor(flavor);
    let mut pos = 0;
    for _ in 0..pickles {
        pos = dis(data, pos, &mut text, &mut memo)?;
    }
    assert_eq!(pos, data.len(), "extra data after the pickles");
    Ok(text.lines().map(|l| format!("  {l}\n")).collect())
}

#[test]
fn zodbtools_golden_outputs() {
    let Some(fx) = fixtures() else { return };
    let mut checked = 0;
    for variant in ["1", "1_nozext"] {
        for kind in ["py2_pickle1", "py2_pickle2", "py2_pickle3", "py3_pickle3"] {
            let dir = fx.join("zodbtools").join(variant).join(kind);
            // The py2 fixtures' outputs were made by zodbtools on Python 2.
            let flavor = if kind.starts_with("py2") {
                DisFlavor::Python2
            } else {
                DisFlavor::Python3
            };
            let golden = std::fs::read_to_string(dir.join("zdump.zpickledis.ok")).unwrap();
            let mut lines = golden.lines().peekable();
            // The dis lines that follow the current header line.
            let block = |lines: &mut std::iter::Peekable<std::str::Lines<'_>>| {
                let mut s = String::new();
                while let Some(l) = lines.next_if(|l| l.starts_with("  ")) {
                    s.push_str(l);
                    s.push('\n');
                }
                s
            };
            for txn in read_fs(&dir.join("data.fs")) {
                let header = lines
                    .by_ref()
                    .find(|l| l.starts_with("txn "))
                    .expect("golden has fewer transactions");
                assert_eq!(&header[4..20], format!("{:016x}", txn.tid));
                let ext_line = lines.by_ref().find(|l| l.starts_with("extension")).unwrap();
                if txn.ext.is_empty() {
                    assert_eq!(ext_line, "extension \"\"");
                } else {
                    assert_eq!(ext_line, "extension");
                    let want = block(&mut lines);
                    assert_eq!(
                        zpickledis(&txn.ext, 1, flavor).unwrap(),
                        want,
                        "{kind} ext of {:016x}",
                        txn.tid
                    );
                    checked += 1;
                }
                // zodbdump lists a transaction's objects sorted by oid.
                let mut records = txn.records;
                records.sort_by_key(|r| r.oid);
                for r in records {
                    let obj = lines.next().expect("golden has fewer objects");
                    assert!(
                        obj.starts_with(&format!("obj {} ", r.oid)),
                        "{kind}: {obj:?} vs oid {}",
                        r.oid
                    );
                    let Some(data) = r.data else {
                        assert!(obj.ends_with(" delete") || obj.contains(" from "), "{obj}");
                        continue;
                    };
                    assert!(
                        obj.starts_with(&format!("obj {} {} sha1:", r.oid, data.len())),
                        "{obj}"
                    );
                    let want = block(&mut lines);
                    assert_eq!(zpickledis(&data, 2, flavor).unwrap(), want, "{kind}: {obj}");
                    assert_eq!(lines.next(), Some(""), "{kind}: after {obj}");
                    checked += 1;
                }
                assert_eq!(
                    lines.next(),
                    Some(""),
                    "{kind}: end of transaction {:016x}",
                    txn.tid
                );
            }
            assert!(
                lines.all(|l| l.is_empty()),
                "{kind}: golden has more transactions"
            );
        }
    }
    assert!(checked > 300, "only {checked} pickles checked");
}
