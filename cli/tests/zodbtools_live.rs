//! zodbtools' commands against zodbtools itself, run live on every fixture
//! database (shared and the project's own): `dump` in all its forms and
//! with tidranges, `analyze` (the report, for which no golden exists, and
//! `--csv`), `info` and `catobj`. zodbtools has no `catobj`; reftool.py runs
//! the Go zodbtools' one as ZODB's `loadBefore` answers it.
//!
//! The oracle is `tests/py/reftool.py` in the project venv; see
//! `zodbtools_util` for what happens when it is missing.

mod zodbtools_util;

use std::path::Path;

use zodb_core::{ReadStorage, Tid};
use zodbrs::tools::analyze::{analyze, report};
use zodbrs::tools::catobj::{CatMode, Xid, catobj, load_xid};
use zodbrs::tools::info::{normpath, zodbinfo};
use zodbrs::tools::zodbdump::{DumpOptions, Pretty, zodbdump};
use zodbtools_util::{all_databases, assert_same, open, oracle, py, py_run, records, shared};

mod run;
use run::zodbrs;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn dump(
    path: &Path,
    hash_only: bool,
    pretty: Pretty,
    min: Option<Tid>,
    max: Option<Tid>,
) -> Vec<u8> {
    let fs = open(path);
    let mut out = Vec::new();
    zodbdump(
        &fs,
        min,
        max,
        DumpOptions {
            hash_only,
            pretty,
            ..DumpOptions::default()
        },
        &mut out,
        &mut |_| {},
    )
    .expect("dump");
    out
}

/// Three tids of the file to build ranges from: first, middle, last.
fn some_tids(path: &Path) -> Option<[Tid; 3]> {
    let fs = open(path);
    let tids: Vec<Tid> = fs
        .iter_transactions(None, None)
        .unwrap()
        .map(|t| t.unwrap().info.tid)
        .collect();
    Some([*tids.first()?, tids[tids.len() / 2], *tids.last()?])
}

#[test]
fn dump_equals_zodbtools() {
    let Some(shared) = shared() else { return };
    if !oracle() {
        return;
    }
    for db in all_databases(&shared) {
        // --hashonly only differs from the raw form by leaving data out: one
        // database of each writer is enough for it (each oracle run costs
        // most of a second).
        let hashonly = db.ends_with("1/py2_pickle1/data.fs")
            || db.ends_with("1/py3_pickle3/data.fs")
            || db.ends_with("Data.fs");
        for (flags, hash_only, pretty) in [
            (&[][..], false, Pretty::Raw),
            (&["--hashonly"][..], true, Pretty::Raw),
            (&["--pretty=zpickledis"][..], false, Pretty::ZPickleDis),
        ] {
            if hash_only && !hashonly {
                continue;
            }
            let mut args = vec!["zdump"];
            args.extend_from_slice(flags);
            args.push(s(&db));
            let want = py(&args);
            let got = dump(&db, hash_only, pretty, None, None);
            assert_same(&got, &want, &format!("{args:?}"));
        }
    }
}

#[test]
fn dump_tidranges_equal_zodbtools() {
    let Some(shared) = shared() else { return };
    if !oracle() {
        return;
    }
    for db in [
        shared.join("fs1/1.fs"),
        shared.join("zodbtools/1/py2_pickle2/data.fs"),
    ] {
        let [first, mid, last] = some_tids(&db).expect("transactions");
        for (lo, hi) in [
            (Some(mid), None),
            (None, Some(mid)),
            (Some(first.next()), Some(last.prev())),
            (Some(mid), Some(mid)),
            (Some(last.next()), None),
        ] {
            let range = format!(
                "{}..{}",
                lo.map(|t| t.to_string()).unwrap_or_default(),
                hi.map(|t| t.to_string()).unwrap_or_default()
            );
            let want = py(&["zdump", "--hashonly", s(&db), &range]);
            let got = dump(&db, true, Pretty::Raw, lo, hi);
            assert_same(&got, &want, &format!("{} {range}", db.display()));
        }
    }
}

#[test]
fn analyze_equals_zodbtools() {
    let Some(shared) = shared() else { return };
    if !oracle() {
        return;
    }
    for db in all_databases(&shared) {
        let fs = open(&db);
        let rep = analyze(&fs, None, None, &mut |_| {}).expect("analyze");
        for csv in [false, true] {
            let mut args = vec!["analyze"];
            if csv {
                args.push("--csv");
            }
            args.push(s(&db));
            let want = py(&args);
            let mut got = Vec::new();
            report(&rep, csv, &mut got).expect("report");
            assert_same(&got, &want, &format!("{args:?}"));
        }
    }
}

#[test]
fn analyze_tidranges_equal_zodbtools() {
    let Some(shared) = shared() else { return };
    if !oracle() {
        return;
    }
    let db = shared.join("zodbtools/1/py3_pickle3/data.fs");
    let [first, mid, last] = some_tids(&db).expect("transactions");
    let fs = open(&db);
    // Empty range (after the last transaction): "# ø", as zodbtools' test pins.
    for (lo, hi) in [
        (Some(mid), None),
        (Some(first), Some(mid)),
        (Some(last.next()), None),
    ] {
        let range = format!(
            "{}..{}",
            lo.map(|t| t.to_string()).unwrap_or_default(),
            hi.map(|t| t.to_string()).unwrap_or_default()
        );
        let want = py(&["analyze", s(&db), &range]);
        let rep = analyze(&fs, lo, hi, &mut |_| {}).expect("analyze");
        let mut got = Vec::new();
        report(&rep, false, &mut got).expect("report");
        assert_same(&got, &want, &range);
    }
}

#[test]
fn info_equals_zodbtools() {
    let Some(shared) = shared() else { return };
    if !oracle() {
        return;
    }
    for db in [
        shared.join("fs1/1.fs"),
        shared.join("fs1/empty.fs"),
        shared.join("zodbtools/1/py3_pickle3/data.fs"),
    ] {
        let fs = open(&db);
        let name = normpath(s(&db));
        for params in [
            &[][..],
            &["head"][..],
            &["size", "name", "head"][..],
            &["last_tid"][..],
        ] {
            let mut args = vec!["info", s(&db)];
            args.extend_from_slice(params);
            let want = py_run(&args);
            assert!(want.status.success());
            let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            zodbinfo(&fs, &name, &params, &mut out, &mut err).expect("info");
            assert_same(&out, &want.stdout, &format!("{args:?}"));
            assert_same(&err, &want.stderr, &format!("{args:?} stderr"));
        }
    }
}

#[test]
fn info_rejects_unknown_parameters_after_printing_the_known_ones() {
    let Some(shared) = shared() else { return };
    let fs = open(&shared.join("fs1/1.fs"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let params = ["head".to_string(), "colour".to_string()];
    let e = zodbinfo(&fs, "x", &params, &mut out, &mut err).unwrap_err();
    assert_eq!(e.to_string(), "invalid parameter: colour");
    assert_eq!(out, format!("{}\n", fs.last_transaction()).into_bytes());
}

/// Every revision of every object (`OID@TID` for each record's tid), the
/// current ones (`OID`), and points in between, through all three output
/// modes; the objects and times at which loading fails (not yet created,
/// deleted) must fail in both.
#[test]
fn catobj_equals_zodbtools() {
    let Some(shared) = shared() else { return };
    if !oracle() {
        return;
    }
    for db in [
        shared.join("zodbtools/1/py2_pickle1/data.fs"),
        shared.join("fs1/1.fs"),
        shared.join("wendelin/py3_pickle3/zblk.fs"),
    ] {
        let fs = open(&db);
        let recs = records(&fs);
        let mut xids: Vec<Xid> = Vec::new();
        for &(oid, tid, _) in &recs {
            xids.push(Xid { oid, at: Some(tid) });
            xids.push(Xid {
                oid,
                at: Some(tid.prev()),
            });
            xids.push(Xid { oid, at: None });
        }
        xids.sort_by_key(|x| (x.oid, x.at));
        xids.dedup();
        let text = |x: &Xid| match x.at {
            Some(at) => format!("{}@{at}", x.oid),
            None => x.oid.to_string(),
        };
        let (good, bad): (Vec<Xid>, Vec<Xid>) =
            xids.iter().partition(|&&x| load_xid(&fs, x).is_ok());
        assert!(
            good.len() > 10 && !bad.is_empty(),
            "{}: {} good, {} bad",
            db.display(),
            good.len(),
            bad.len()
        );

        let good_text: Vec<String> = good.iter().map(text).collect();
        for (flag, mode) in [
            (None, CatMode::Dump),
            (Some("--hashonly"), CatMode::HashOnly),
        ] {
            let mut args = vec!["catobj"];
            args.extend(flag);
            args.push(s(&db));
            args.extend(good_text.iter().map(String::as_str));
            let want = py(&args);
            let mut got = Vec::new();
            catobj(&fs, &good, mode, &mut got).expect("catobj");
            assert_same(&got, &want, &format!("catobj {flag:?} {}", db.display()));
        }
        for x in good.iter().take(5) {
            let want = py(&["catobj", "--raw", s(&db), &text(x)]);
            let mut got = Vec::new();
            catobj(&fs, &[*x], CatMode::Raw, &mut got).expect("catobj --raw");
            assert_same(&got, &want, &format!("catobj --raw {}", text(x)));
        }
        for x in bad.iter().take(4) {
            let run = py_run(&["catobj", s(&db), &text(x)]);
            assert!(
                !run.status.success() && run.stdout.is_empty(),
                "zodbtools loads {} in {}",
                text(x),
                db.display()
            );
            let mut got = Vec::new();
            assert!(catobj(&fs, &[*x], CatMode::Dump, &mut got).is_err());
            assert!(got.is_empty());
        }
    }
}

/// The command line reaches the same code: `zodbrs info`, `catobj`,
/// `analyze`, with zodbtools' outputs and exit statuses.
#[test]
fn cli_equals_zodbtools() {
    let Some(shared) = shared() else { return };
    if !oracle() {
        return;
    }
    let db = shared.join("fs1/1.fs");
    let db = s(&db);
    for args in [
        &["info", db][..],
        &["info", db, "head", "last_tid"][..],
        &[
            "catobj",
            db,
            "0000000000000001",
            "0000000000000002@0285cbac9ae147e6",
        ][..],
        &["catobj", "--hashonly", db, "0000000000000000"][..],
        &["analyze", db][..],
    ] {
        let got = zodbrs(args);
        let want = py_run(args);
        assert!(
            got.status.success() && want.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_same(&got.stdout, &want.stdout, &format!("zodbrs {args:?}"));
        assert_same(
            &got.stderr,
            &want.stderr,
            &format!("zodbrs {args:?} stderr"),
        );
    }
    let got = zodbrs(&["info", db, "head", "bogus"]);
    assert!(!got.status.success());
    assert_eq!(
        String::from_utf8_lossy(&got.stderr),
        "zodbrs: invalid parameter: bogus\n"
    );
    let got = zodbrs(&["catobj", "--raw", db, "0", "1"]);
    assert!(!got.status.success(), "--raw takes one object");
}

/// A reader that stops early is not an error (`zodbrs dump | head`).
#[test]
fn closed_output_is_not_an_error() {
    let Some(shared) = shared() else { return };
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
        .args(["dump", s(&shared.join("wendelin/py3_pickle3/zblk.fs"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut head = [0u8; 10];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("read");
    // stdout is closed here, the rest of the (multi-MiB) dump cannot go out.
    let out = child.wait_with_output().expect("wait");
    assert_eq!(&head, b"txn 0285cb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}
