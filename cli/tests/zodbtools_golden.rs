//! zodbtools' commands against the goldens recorded by zodbtools itself
//! (`../shared/fixtures/zodbtools/*/*/{zdump.raw.ok, zdump.zpickledis.ok,
//! zanalyze.csv.ok}` and `fs1/1.zdump.pyok`), byte for byte.
//!
//! The `py2_*` `zdump.zpickledis.ok` files were recorded by Python 2, whose
//! pickletools prints a `SHORT_BINBYTES` argument as a `str` (`'...'`)
//! where Python 3 prints `b'...'`: they are compared with `dump --py2`
//! (Python 2's disassembly); the Python 3 output is checked against live
//! zodbtools in zodbtools_live.rs.

mod zodbtools_util;

use std::path::Path;

use zodb_core::pickle::DisFlavor;
use zodb_it::read;
use zodbrs::tools::analyze::{analyze, report};
use zodbrs::tools::zodbdump::{DumpOptions, Pretty, zodbdump};
use zodbtools_util::{assert_same, open, shared, zodbtools_dirs};

mod run;
use run::zodbrs;

fn dump(
    path: &Path,
    pretty: Pretty,
    tidrange: (Option<zodb_core::Tid>, Option<zodb_core::Tid>),
) -> Vec<u8> {
    let fs = open(path);
    let mut out = Vec::new();
    let opts = DumpOptions {
        hash_only: false,
        pretty,
        dis_flavor: if path.to_string_lossy().contains("py2_") {
            DisFlavor::Python2
        } else {
            DisFlavor::Python3
        },
    };
    zodbdump(&fs, tidrange.0, tidrange.1, opts, &mut out, &mut |_| {}).expect("dump");
    out
}

#[test]
fn dump_raw_equals_zodbtools_goldens() {
    let Some(shared) = shared() else { return };
    for dir in zodbtools_dirs(&shared) {
        let got = dump(&dir.join("data.fs"), Pretty::Raw, (None, None));
        assert_same(
            &got,
            &read(dir.join("zdump.raw.ok")),
            &dir.display().to_string(),
        );
    }
    let got = dump(&shared.join("fs1/1.fs"), Pretty::Raw, (None, None));
    assert_same(&got, &read(shared.join("fs1/1.zdump.pyok")), "fs1/1.fs");
}

#[test]
fn dump_zpickledis_equals_zodbtools_goldens() {
    let Some(shared) = shared() else { return };
    // The goldens of Python 2 files were recorded by Python 2's zodbtools;
    // `dump` reproduces them exactly in its Python 2 flavour.
    for dir in zodbtools_dirs(&shared) {
        let golden = read(dir.join("zdump.zpickledis.ok"));
        let got = dump(&dir.join("data.fs"), Pretty::ZPickleDis, (None, None));
        assert_same(&got, &golden, &dir.display().to_string());
    }
}

#[test]
fn analyze_csv_equals_zodbtools_goldens() {
    let Some(shared) = shared() else { return };
    for dir in zodbtools_dirs(&shared) {
        let fs = open(&dir.join("data.fs"));
        let rep = analyze(&fs, None, None, &mut |_| {}).expect("analyze");
        let mut got = Vec::new();
        report(&rep, true, &mut got).expect("report");
        assert_same(
            &got,
            &read(dir.join("zanalyze.csv.ok")),
            &dir.display().to_string(),
        );
    }
}

/// A tidrange selects whole transactions, both ends included: the dump of
/// a range is the golden's transactions with tids in it.
#[test]
fn dump_tidrange_selects_golden_transactions() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("zodbtools/1/py3_pickle3");
    let golden = read(dir.join("zdump.raw.ok"));
    // Transaction blocks of the golden, by their tid (fixture data holds no
    // "\n\ntxn " of its own, so splitting the text is safe here).
    let mut blocks: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rest = &golden[..];
    while !rest.is_empty() {
        let end = find(rest, b"\n\ntxn ").map_or(rest.len(), |i| i + 2);
        let block = &rest[..end];
        blocks.push((
            String::from_utf8_lossy(&block[4..20]).into_owned(),
            block.to_vec(),
        ));
        rest = &rest[end..];
    }
    assert_eq!(blocks.len(), 67);
    let tid = |i: usize| blocks[i].0.parse::<zodb_core::Tid>().unwrap();
    for (lo, hi) in [
        (Some(5), Some(9)),
        (None, Some(0)),
        (Some(66), None),
        (Some(10), Some(10)),
    ] {
        let want: Vec<u8> = blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| lo.is_none_or(|l| *i >= l) && hi.is_none_or(|h| *i <= h))
            .flat_map(|(_, (_, b))| b.clone())
            .collect();
        let got = dump(
            &dir.join("data.fs"),
            Pretty::Raw,
            (lo.map(tid), hi.map(tid)),
        );
        assert_same(&got, &want, &format!("range {lo:?}..{hi:?}"));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The command line reaches the same code: `zodbrs dump`, `dump
/// --pretty=zpickledis` with a tidrange, `analyze --csv`.
#[test]
fn cli_matches_goldens() {
    let Some(shared) = shared() else { return };
    let dir = shared.join("zodbtools/1/py3_pickle3");
    let fs = dir.join("data.fs");
    let fs = fs.to_str().unwrap();

    let out = zodbrs(&["dump", fs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&out.stdout, &read(dir.join("zdump.raw.ok")), "zodbrs dump");
    assert!(
        out.stderr.is_empty(),
        "no progress bar when stderr is not a terminal"
    );

    let out = zodbrs(&["dump", "--pretty=zpickledis", fs, ".."]);
    assert!(out.status.success());
    assert_same(
        &out.stdout,
        &read(dir.join("zdump.zpickledis.ok")),
        "zodbrs dump --pretty=zpickledis",
    );

    let out = zodbrs(&["analyze", "--csv", fs]);
    assert!(out.status.success());
    assert_same(
        &out.stdout,
        &read(dir.join("zanalyze.csv.ok")),
        "zodbrs analyze --csv",
    );

    let out = zodbrs(&["dump", fs, "nonsense"]);
    assert!(!out.status.success(), "a bad tidrange is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
}

/// `--hashonly` prints the raw dump's lines without the data.
#[test]
fn hashonly_is_raw_without_data() {
    let Some(shared) = shared() else { return };
    let path = shared.join("fs1/1.fs");
    let fs = open(&path);
    let mut got = Vec::new();
    let opts = DumpOptions {
        hash_only: true,
        pretty: Pretty::Raw,
        ..DumpOptions::default()
    };
    zodbdump(&fs, None, None, opts, &mut got, &mut |_| {}).expect("dump");
    // Rebuild it from the golden: after an `obj ... sha1:<hex>` line comes
    // the data and a newline, which --hashonly replaces by " -".
    let golden = read(shared.join("fs1/1.zdump.pyok"));
    let mut want = Vec::new();
    let mut rest = &golden[..];
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        want.extend_from_slice(line);
        let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if words.len() == 4 && words[0] == b"obj" && words[3].starts_with(b"sha1:") {
            let len: usize = std::str::from_utf8(words[2]).unwrap().parse().unwrap();
            want.extend_from_slice(b" -\n");
            rest = &rest[len + 1..];
        } else {
            want.push(b'\n');
        }
    }
    assert_same(&got, &want, "dump --hashonly fs1/1.fs");
}
