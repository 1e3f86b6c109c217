//! `zodbrs demo gen|read`, wendelin.core's demo_zbigarray.py on the pager:
//! a signal four times the memory budget is generated and read back while
//! the process's anonymous memory stays within the budget plus a stated
//! slack, and the printed mean and sum are NumPy's for the same array.
//!
//! Needs userfaultfd (skipped with a notice without it; CI runs as root);
//! the NumPy comparison needs the venv Python.

use std::path::Path;
use std::process::Command;

mod run;
use run::text as zodbrs;

/// What the process holds besides the pager's blocks: the allocator and
/// the binary's own data (a few MiB), plus, while `gen` commits, the
/// transaction's records on their way to the storage (a transaction is at
/// most a quarter of the budget; its blocks are pickled from the mapping,
/// not copied first).
const SLACK_MB: u64 = 24;

fn field<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
        .trim()
}

/// The "at most" figure of the anonymous-RSS line.
fn anon_peak(out: &str) -> u64 {
    let l = field(out, "anonymous RSS:");
    let at_most = l.split(", ").nth(1).unwrap();
    at_most.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn demo_runs_within_the_budget_and_agrees_with_numpy() {
    if let Err(e) = pager::probe() {
        eprintln!("SKIP demo_runs_within_the_budget_and_agrees_with_numpy: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Data.fs");
    let db = db.to_str().unwrap();
    let budget = 16u64;
    let generated = zodbrs(&["demo", "gen", "--worksize", "64", "--budget", "16", db]);
    assert!(
        generated.contains("gen signal t=0...8.39e+06  float64  (= 0.06GB)"),
        "{generated}"
    );
    let notes = generated
        .lines()
        .filter(|l| l.starts_with("gen signal blk ["))
        .count();
    // Transactions of a quarter of the budget (4 MiB = 524288 values).
    assert_eq!(notes, 16, "{generated}");
    assert!(
        generated.contains("gen signal blk [7864320:8388608]  (100.0%)"),
        "{generated}"
    );
    assert!(
        anon_peak(&generated) <= budget + SLACK_MB,
        "gen:\n{generated}"
    );

    let read = zodbrs(&["demo", "read", "--budget", "16", db]);
    assert_eq!(field(&read, "sig:"), "8388608 float64 (= 0.06GB)");
    assert!(anon_peak(&read) <= budget + SLACK_MB, "read:\n{read}");
    let mean = field(&read, "<sig>:");
    let sum = field(&read, "S(sig):");

    let Some(py) = zodb_it::python() else {
        return;
    };
    // The array as NumPy sees it, from Python's own reading of the file.
    let out = Command::new(&py)
        .arg("-c")
        .arg(PY_CHECK)
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py_out = String::from_utf8(out.stdout).unwrap();
    assert_eq!(field(&py_out, "<sig>:"), mean, "mean: ours vs NumPy");
    assert_eq!(field(&py_out, "S(sig):"), sum, "sum: ours vs NumPy");
    // Every value is 15·sin(0.2·t) as the Python demo computes it (up to
    // the last bit of libm's sin: NumPy may use its own).
    assert!(
        field(&py_out, "maxerr:").parse::<f64>().unwrap() < 1e-12,
        "{py_out}"
    );
    assert!(Path::new(db).exists());
}

/// Reads root['signalv'] with the wendelin.core stand-ins, prints NumPy's
/// mean and sum as the demo does, and the largest deviation from the
/// demo's formula computed by NumPy.
const PY_CHECK: &str = concat!(
    include_str!("../../zblk/tests/py/wendelin_standin.py"),
    r#"
import sys
import numpy
import ZODB
from ZODB.FileStorage import FileStorage

db = ZODB.DB(FileStorage(sys.argv[1], read_only=True))
conn = db.open()
A = conn.root()['signalv']
f = A.zfile
bs = f.blksize
out = numpy.zeros(A.nbytes, dtype=numpy.uint8)
for blk in range((A.nbytes + bs - 1) // bs):
    if blk in f.blktab:
        data = f.blktab[blk].loadblkdata()
        n = min(len(data), A.nbytes - blk * bs)
        out[blk * bs:blk * bs + n] = numpy.frombuffer(data[:n], dtype=numpy.uint8)
a = out.view(numpy.float64)
print('<sig>:\t%s' % a.mean())
print('S(sig):\t%s' % a.sum())
t = numpy.arange(len(a), dtype=numpy.float64)
print('maxerr:\t%r' % float(numpy.abs(a - 15 * numpy.sin(0.2 * t)).max()))
"#
);
