//! `zodbrs pack` and `zodbrs reindex` on copies of the fixtures.

use std::process::Command;

mod run;
use run::ok as zodbrs;

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

/// On a read-only filesystem every writing command fails with an error that
/// names the file and the cause, and nothing changes. Runs the commands in a
/// private mount namespace with a read-only tmpfs (needs root, as CI is).
#[test]
fn read_only_filesystem_gives_clear_errors_and_touches_nothing() {
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: unshare -m must work"
        );
        eprintln!("notice: cannot make a private mount namespace (not root?); skipping");
        return;
    }
    let src = zodb_it::project_fixtures().join("history/Data.fs");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ro");
    std::fs::create_dir(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_zodbrs");
    let db = mnt.join("Data.fs");
    let script = format!(
        "set -e; mount -t tmpfs tmpfs '{m}'; cp '{src}' '{db}'; sha1sum '{db}' > '{out}/before'; mount -o remount,ro '{m}'; \
         for cmd in 'pack --time 1700000000' 'reindex'; do \
           if '{bin}' $cmd '{db}' 2> '{out}/err'; then echo \"$cmd succeeded\"; exit 1; fi; \
           cat '{out}/err' >> '{out}/errors'; done; \
         '{bin}' fstest '{db}'; sha1sum '{db}' > '{out}/after'",
        m = mnt.display(),
        src = src.display(),
        db = db.display(),
        out = dir.path().display(),
        bin = bin,
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = std::fs::read_to_string(dir.path().join("errors")).unwrap();
    assert_eq!(errors.lines().count(), 2, "{errors}");
    for line in errors.lines() {
        assert!(
            line.contains("Data.fs") && line.contains("Read-only file system"),
            "unclear error: {line}"
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("before")).unwrap(),
        std::fs::read(dir.path().join("after")).unwrap()
    );
}
