//! Native BTrees conflict resolution against BTrees itself.
//!
//! `tests/py/btrees_conflicts.py` makes real write conflicts on every
//! standard bucket, set, tree and tree-set type (and `BTrees.Length`) with
//! two ZODB connections, and records each conflict FileStorage meets: the
//! three records, and what Python made of them — the record
//! `tryToResolveConflict` stored, or the `BTreesConflictError` positions and
//! reason, or the exception a comparison raised. Our resolver must store
//! the same bytes, refuse with the same numbers, and leave to the client
//! what Python could not compare.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]

use std::process::Command;

use zeo_proto::server::resolve::{Unresolved, resolve};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn btrees_conflicts_resolve_as_python_does() {
    let Some(py) = zodb_it::python() else {
        return;
    };
    let script = zodb_it::workspace_root().join("tests/py/btrees_conflicts.py");
    let (mut resolved, mut refused, mut left) = (0, 0, 0);
    // More seeds: BTREES_CONFLICT_SEEDS=4,5,6.
    let seeds: Vec<u64> = std::env::var("BTREES_CONFLICT_SEEDS")
        .map(|s| s.split(',').map(|x| x.trim().parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![1, 2, 3]);
    for seed in seeds {
        let out = Command::new(&py)
            .arg(&script)
            .arg(seed.to_string())
            .arg("250")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (n, line) in String::from_utf8(out.stdout).unwrap().lines().enumerate() {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| case.get(k).and_then(|v| v.as_str()).map(unhex);
            let (old, committed, new) = (
                field("old").unwrap(),
                field("committed").unwrap(),
                field("new").unwrap(),
            );
            let ours = resolve(&old, &committed, &new);
            let what = format!("seed {seed} case {n}: {line}");
            if let Some(want) = field("resolved") {
                match ours {
                    Ok(got) => assert_eq!(got.as_ref(), want.as_slice(), "{what}"),
                    Err(e) => panic!("{what}: Python resolved, we did not: {e}"),
                }
                resolved += 1;
            } else if let Some(r) = case.get("reason") {
                let r: Vec<i64> = r
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                assert_eq!(
                    ours,
                    Err(Unresolved::Conflict {
                        positions: [r[0], r[1], r[2]],
                        reason: i32::try_from(r[3]).unwrap(),
                    }),
                    "{what}"
                );
                refused += 1;
            } else {
                assert!(
                    matches!(ours, Err(Unresolved::Unsupported(_))),
                    "{what}: Python raised, we gave {ours:?}"
                );
                left += 1;
            }
        }
    }
    eprintln!(
        "{resolved} resolved, {refused} refused with Python's reason, {left} left to the client"
    );
    assert!(resolved > 100 && refused > 50, "too few cases exercised");
}
