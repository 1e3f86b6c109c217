//! Our tools print what the Python tools print: golden files made by the
//! Python tools (fixtures/, fixtures/shared/ and the shared fixtures' own),
//! and the Python tools run live where no golden exists.

use std::path::Path;
use std::process::Command;

mod run;

fn zodbrs(args: &[&str]) -> Vec<u8> {
    run::ok(args).stdout
}

fn golden(path: &Path) -> Option<Vec<u8>> {
    path.exists().then(|| std::fs::read(path).unwrap())
}

/// (tool args before the path, golden file suffix) pairs whose goldens sit
/// beside our databases as `Data.<suffix>`.
const TOOLS: &[(&[&str], &str)] = &[
    (&["fsdump"], "fsdump.ok"),
    (&["fsdump", "-v"], "fsdumpv.ok"),
    (&["fstail"], "fstail.ok"),
    (&["fstail", "-n", "5"], "fstail-n5.ok"),
    (&["fstest", "-v"], "fstest-v.ok"),
    (&["fstest", "-vv"], "fstest-vv.ok"),
    (&["fstest"], "fstest.ok"),
    (&["fsrefs"], "fsrefs.ok"),
];

#[test]
fn project_fixtures_match_python_goldens() {
    for db in ["history", "packed", "empty"] {
        let dir = zodb_it::project_fixtures().join(db);
        let path = dir.join("Data.fs");
        for (args, suffix) in TOOLS {
            let want = golden(&dir.join(format!("Data.{suffix}")))
                .unwrap_or_else(|| panic!("{db}: no golden {suffix}"));
            let mut a = args.to_vec();
            let p = path.to_str().unwrap();
            a.push(p);
            zodb_it::assert_text_eq(
                &want,
                zodbrs(&a),
                &format!("zodbrs {} on {db}", args.join(" ")),
            );
        }
    }
}

#[test]
fn shared_fs1_matches_python2_goldens() {
    let Some(shared) = zodb_it::shared_fixtures() else {
        return;
    };
    let fs1 = shared.join("fs1");
    let p = fs1.join("1.fs");
    let p = p.to_str().unwrap();
    let e = fs1.join("empty.fs");
    let e = e.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["fsdump", "--py2", p], "1.fsdump.ok"),
        (&["fsdump", "-v", "--py2", p], "1.fsdumpv.ok"),
        (&["fstail", "-n", "1000000", "--py2", p], "1.fstail.ok"),
        (&["fsdump", "-v", "--py2", e], "empty.fsdumpv.ok"),
    ];
    for (args, g) in cases {
        zodb_it::assert_text_eq(std::fs::read(fs1.join(g)).unwrap(), zodbrs(args), g);
    }
}

#[test]
fn shared_databases_match_python3_tools() {
    let Some(_) = zodb_it::python() else { return };
    for path in zodb_it::all_databases() {
        let p = path.to_str().unwrap();
        for tool in [
            &["fsdump"][..],
            &["fsdumpv"],
            &["fstail", "-n", "1000"],
            &["fsrefs"],
            &["fstest", "-vv"],
        ] {
            let mut ref_args: Vec<&str> = tool.to_vec();
            ref_args.push(p);
            let theirs = zodb_it::reftool_output(&ref_args).unwrap();
            if !theirs.status.success() {
                // Python's fstail fails on a database without transactions.
                assert!(
                    path.ends_with("empty/Data.fs"),
                    "{}: reftool {tool:?} failed",
                    path.display()
                );
                continue;
            }
            let ours_args: Vec<&str> = match tool[0] {
                "fsdumpv" => vec!["fsdump", "-v", p],
                _ => ref_args.clone(),
            };
            zodb_it::assert_text_eq(
                &theirs.stdout,
                zodbrs(&ours_args),
                &format!("{tool:?} on {}", path.display()),
            );
        }
    }
}

#[test]
fn fsoids_matches_python() {
    let Some(_) = zodb_it::python() else { return };
    for path in zodb_it::all_databases() {
        let p = path.to_str().unwrap();
        let oids = ["0", "1", "2", "3", "0x43", "0x59", "0x5a", "0x5c", "99999"];
        let mut args = vec!["fsoids", p];
        args.extend(oids);
        let theirs = zodb_it::reftool(&args);
        zodb_it::assert_text_eq(
            &theirs.stdout,
            zodbrs(&args),
            &format!("fsoids on {}", path.display()),
        );
    }
}

#[test]
fn fstest_reports_damage_in_fstests_words() {
    let Some(_) = zodb_it::python() else { return };
    let src = zodb_it::project_fixtures().join("history/Data.fs");
    let bytes = std::fs::read(&src).unwrap();
    let copy = zodb_it::TempCopy::new(&src);
    // Damage: a status byte, a tid order, a length, a tloc; each at the 10th
    // transaction or its first record.
    let fs = filestorage::FileStorage::open_read_only(&src).unwrap();
    let t = fs.txns().nth(10).unwrap().unwrap();
    let d = t.data_pos() as usize;
    let tp = t.pos as usize;
    drop(fs);
    type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<Damage> = vec![
        Box::new(|b| b[tp + 16] = b'x'),
        Box::new(|b| b[tp + 16] = b'c'),
        Box::new(|b| b[tp..tp + 8].copy_from_slice(&[0; 8])),
        Box::new(|b| b[tp + 8..tp + 16].copy_from_slice(&u64::MAX.to_be_bytes())),
        Box::new(|b| b[tp + 8..tp + 16].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 30])),
        Box::new(|b| b[d + 24..d + 32].copy_from_slice(&[0; 8])),
        Box::new(|b| b[d + 34..d + 42].copy_from_slice(&u64::MAX.to_be_bytes())),
        Box::new(|b| b.truncate(tp + 5)),
        Box::new(|b| b.truncate(d + 10)),
    ];
    for (i, damage) in cases.iter().enumerate() {
        let mut b = bytes.clone();
        damage(&mut b);
        std::fs::write(copy.path(), &b).unwrap();
        let p = copy.path().to_str().unwrap();
        let theirs = zodb_it::reftool_output(["fstest", p]).unwrap();
        let ours = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
            .args(["fstest", p])
            .output()
            .unwrap();
        assert_eq!(theirs.status.code(), ours.status.code(), "case {i}");
        if theirs.stderr.starts_with(b"Traceback") {
            // Python crashes (e.g. seeking past 2**63); we report the record.
            let msg = String::from_utf8_lossy(&ours.stderr);
            assert!(
                msg.contains("extend beyond the transaction record"),
                "case {i}: {msg}"
            );
            continue;
        }
        zodb_it::assert_text_eq(
            &theirs.stderr,
            &ours.stderr,
            &format!("fstest stderr, case {i}"),
        );
    }
}
