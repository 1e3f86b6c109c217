//! ZEO's own client test class `ZEO.tests.testZEO.FileStorageTests` (108
//! tests from the installed ZEO and ZODB wheels, unmodified) against the
//! `zodbrs serve` binary of this build, one server process per test, with
//! `tests/py/ext_zeo.py` (the recipe of shared/spec/zeo-conformance.md).
//! The tests in `tests/py/zeo_exclusions.txt` are skipped with their
//! reason; any other failure fails this test. `scripts/zeo-conformance.sh`
//! runs the other classes.
//!
//! Needs the Python oracle's venv: skipped with a notice without it,
//! except under `CI=true`.

use std::process::Command;

#[test]
fn zeo_filestorage_tests_pass_against_zodbrs_serve() {
    let Some(py) = zodb_it::python() else {
        return;
    };
    let root = zodb_it::workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let class = "ZEO.tests.testZEO.FileStorageTests";
    let out = Command::new(py)
        .arg(root.join("tests/py/ext_zeo.py"))
        .arg("--exclude")
        .arg(root.join("tests/py/zeo_exclusions.txt"))
        .arg("--json")
        .arg(&summary)
        .arg(class)
        .env(
            "ZEO_EXT_CMD",
            format!("{} serve -C {{conf}}", env!("CARGO_BIN_EXE_zodbrs")),
        )
        .env("ZEO_EXT_LOGDIR", &logs)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "ZEO's {class} failed against zodbrs serve:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let counts = &summary[class];
    let n = |k: &str| counts[k].as_u64().unwrap();
    eprintln!(
        "{class}: ran {}, passed {}, skipped {}",
        n("ran"),
        n("passed"),
        n("skipped")
    );
    assert_eq!(n("ran"), 108, "the class has 108 tests");
    assert_eq!(n("passed") + n("skipped"), n("ran"));
    assert!(n("skipped") <= 3, "only the listed exclusions are skipped");
}
