//! `zodbrs pack` and `zodbrs reindex` on copies of the fixtures.

use std::process::Command;

fn zodbrs(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zodbrs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn reindex_writes_the_index_zodb_wrote() {
    let src = zodb_it::project_fixtures().join("history/Data.fs");
    let copy = zodb_it::TempCopy::new(&src);
    assert!(!copy.index_path().exists());
    zodbrs(&["reindex", copy.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read(copy.index_path()).unwrap(),
        std::fs::read(zodb_it::project_fixtures().join("history/Data.fs.index")).unwrap()
    );
    let check = zodbrs(&["reindex", "--check", copy.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("0 mismatches"));
}

#[test]
fn pack_by_time_tid_and_iso_agree() {
    let src = zodb_it::project_fixtures().join("history/Data.fs");
    let fs = filestorage::FileStorage::open_read_only(&src).unwrap();
    let mid = fs.txns().nth(120).unwrap().unwrap().tid();
    drop(fs);
    let t = mid.timestamp().time_time();
    let iso = jiff::Timestamp::from_second(t.floor() as i64)
        .unwrap()
        .to_string();
    let mut outputs = Vec::new();
    for spec in [format!("{t}"), mid.to_string(), iso] {
        let copy = zodb_it::TempCopy::new(&src);
        let out = zodbrs(&["pack", "--time", &spec, copy.path().to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("packed to"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(filestorage::file::sibling(copy.path(), ".old").exists());
        outputs.push(std::fs::read(copy.path()).unwrap());
    }
    // The float and the tid name the same instant; the ISO time (whole
    // seconds) is earlier, so it packs less or the same.
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[2].len() >= outputs[0].len());
    let copy = zodb_it::TempCopy::new(&src);
    let bad = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
        .args(["pack", "--time", "soon", copy.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid pack time"));
    assert_eq!(
        std::fs::read(copy.path()).unwrap(),
        std::fs::read(&src).unwrap()
    );
}
