//! `zodbrs bench`: our speed against the Python reference, measured in the
//! same run on the same file, printed as a table of ratios. Never used as a
//! pass/fail test: machines differ, ratios are what we track.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use filestorage::{FileStorage, OpenOptions};
use zodb_core::{Oid, ReadStorage, TxnMeta};

use crate::ToolError;

/// The Python side, embedded so the binary needs no source checkout.
const PY_READ_BENCH: &str = include_str!("../../bench/py_read_bench.py");

/// One row of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Our figure.
    pub ours: f64,
    /// Python's figure, if measured.
    pub python: Option<f64>,
    /// Unit of both figures.
    pub unit: &'static str,
    /// Whether a larger figure is better (throughput) or smaller (time).
    pub higher_is_better: bool,
}

impl Row {
    /// How many times better we are than Python.
    pub fn ratio(&self) -> Option<f64> {
        let p = self.python?;
        Some(if self.higher_is_better {
            self.ours / p
        } else {
            p / self.ours
        })
    }
}

/// xorshift64*: a fixed, dependency-free random sequence for sampling oids,
/// shared by every benchmark (the same seed gives the same oids).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Reads the whole file once so both sides measure with a warm page cache.
fn warm(path: &Path) -> Result<(), ToolError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| ToolError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 24];
    while f.read(&mut buf).map_err(|e| ToolError::io(path, e))? > 0 {}
    Ok(())
}

/// Measures the read side on `path`; with `python`, runs the Python
/// reference on the same file first.
pub fn bench_fs(
    path: &Path,
    python: Option<&Path>,
    loads: usize,
    out: &mut dyn Write,
) -> Result<Vec<Row>, ToolError> {
    warm(path)?;
    let py: Option<serde_json::Value> = match python {
        Some(py) => {
            writeln!(out, "running the Python reference ({})...", py.display())?;
            Some(run_py_script(
                py,
                PY_READ_BENCH,
                &[
                    path.as_ref(),
                    std::ffi::OsStr::new(&(loads / 10).max(1000).to_string()),
                    std::ffi::OsStr::new("1"),
                ],
            )?)
        }
        None => None,
    };
    let get = |k: &str| py.as_ref().and_then(|j| j.get(k)?.as_f64());

    let no_index = OpenOptions {
        use_index: false,
        ..OpenOptions::default()
    };
    let t = Instant::now();
    let fs = FileStorage::open(path, &no_index)?;
    let rebuild = secs(t.elapsed());
    let size = fs.end_pos() as f64;
    let records = fs.open_report().scan.record_count as f64;

    let oids: Vec<Oid> = fs.oids().into_iter().map(|(o, _)| o).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sample: Vec<Oid> = (0..loads)
        .map(|_| oids[(rng.next() % oids.len() as u64) as usize])
        .collect();
    let t = Instant::now();
    let mut bytes = 0usize;
    for &oid in &sample {
        if let Ok((d, _)) = fs.load(oid) {
            bytes += d.len();
        }
    }
    let load_us = secs(t.elapsed()) / loads as f64 * 1e6;
    std::hint::black_box(bytes);

    let t = Instant::now();
    crate::tools::fsdump::fsdump(
        &fs,
        crate::pyrepr::Flavor::Py3,
        &mut std::io::sink(),
        &mut |_| {},
    )?;
    let fsdump_s = secs(t.elapsed());

    let rows = vec![
        Row {
            what: "random load, 1 thread".into(),
            ours: load_us,
            python: get("load_us"),
            unit: "µs/load",
            higher_is_better: false,
        },
        Row {
            what: format!("open without .index ({:.0}k records)", records / 1e3),
            ours: rebuild,
            python: get("rebuild_s"),
            unit: "s",
            higher_is_better: false,
        },
        Row {
            what: "  scan throughput".into(),
            ours: size / rebuild / 1e9,
            python: get("rebuild_s").map(|s| size / s / 1e9),
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "fsdump whole file".into(),
            ours: fsdump_s,
            python: get("fsdump_s"),
            unit: "s",
            higher_is_better: false,
        },
    ];
    print_table(&rows, out)?;
    Ok(rows)
}

/// Prints rows as a Markdown table (pasteable into the README).
pub fn print_table(rows: &[Row], out: &mut dyn Write) -> Result<(), ToolError> {
    writeln!(out, "| measure | zodbrs | Python | ratio |")?;
    writeln!(out, "|---|---|---|---|")?;
    for r in rows {
        let py = r
            .python
            .map(|p| format!("{p:.3} {}", r.unit))
            .unwrap_or_else(|| "-".into());
        let ratio = r
            .ratio()
            .map(|x| format!("{x:.1}×"))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "| {} | {:.3} {} | {py} | {ratio} |",
            r.what, r.ours, r.unit
        )?;
    }
    Ok(())
}

const PY_WRITE_BENCH: &str = include_str!("../../bench/py_write_bench.py");

fn run_py(python: &Path, args: &[&str]) -> Result<serde_json::Value, ToolError> {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    run_py_script(python, PY_WRITE_BENCH, &args)
}

/// Runs a Python reference script (`python -c SCRIPT ARGS...`) and parses
/// the JSON it prints.
fn run_py_script(
    python: &Path,
    script: &str,
    args: &[&std::ffi::OsStr],
) -> Result<serde_json::Value, ToolError> {
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| ToolError::io(python, e))?;
    if !o.status.success() {
        return Err(ToolError::Usage(format!(
            "python reference failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    serde_json::from_slice(&o.stdout)
        .map_err(|e| ToolError::Usage(format!("python reference printed no JSON: {e}")))
}

/// Anonymous resident memory of this process now, in KiB (`RssAnon`): the
/// heap, not the file pages a mapping makes resident.
fn rss_anon_kb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `f` while sampling `RssAnon` every 10 ms; returns its result and
/// the peak seen.
fn with_peak_anon<T>(f: impl FnOnce() -> T) -> (T, f64) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let peak = std::sync::Arc::new(AtomicU64::new(rss_anon_kb().unwrap_or(0.0) as u64));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_kb().unwrap_or(0.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let r = f();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    (r, peak.load(Ordering::Relaxed) as f64)
}

/// The same 100-byte record Python's side stores.
fn bench_record() -> bytes::Bytes {
    let mut r = b"\x80\x03cbuiltins\nobject\nq\x00.\x80\x03C".to_vec();
    r.push(60);
    r.extend_from_slice(&[b'x'; 60]);
    r.extend_from_slice(b"q\x01.");
    bytes::Bytes::from(r)
}

/// Commits `ntxn` transactions of `nobj` new records; seconds taken.
fn commit_run(path: &Path, ntxn: usize, nobj: usize) -> Result<f64, ToolError> {
    use zodb_core::storage::TpcTxn;
    let fs = FileStorage::open(path, &OpenOptions::read_write())?;
    let rec = bench_record();
    let t = Instant::now();
    for _ in 0..ntxn {
        let oids = fs.new_oids(nobj)?;
        let mut txn = fs.begin(zodb_core::TxnMeta::default())?;
        for oid in oids {
            txn.store(oid, zodb_core::Tid::ZERO, rec.clone())?;
        }
        txn.vote()?;
        Box::new(txn).finish()?;
    }
    Ok(secs(t.elapsed()))
}

/// The write side: commit rates against the fsync bound and against
/// Python's raw storage API; with `pack_src`, pack of a copy of it against
/// ZODB's pack. Scratch files go to `dir`.
pub fn bench_write(
    dir: &Path,
    python: Option<&Path>,
    pack_src: Option<&Path>,
    out: &mut dyn Write,
) -> Result<Vec<Row>, ToolError> {
    use std::os::unix::fs::FileExt;
    let scratch = tempfile_in(dir)?;
    // The fsync bound: append ~200 bytes and fdatasync, as a commit does.
    let n1 = 400;
    let f = std::fs::File::create(scratch.join("fsync.bin")).map_err(|e| ToolError::io(dir, e))?;
    let block = [7u8; 200];
    let t = Instant::now();
    for i in 0..n1 as u64 {
        f.write_all_at(&block, i * 200)
            .map_err(|e| ToolError::io(dir, e))?;
        f.sync_data().map_err(|e| ToolError::io(dir, e))?;
    }
    let fsync_rate = n1 as f64 / secs(t.elapsed());
    let one = n1 as f64 / commit_run(&scratch.join("one.fs"), n1, 1)?;
    let n100 = 300;
    let hundred = n100 as f64 / commit_run(&scratch.join("hundred.fs"), n100, 100)?;
    let mut py100 = None;
    let mut py1 = None;
    if let Some(py) = python {
        let d = scratch.to_string_lossy();
        let r = run_py(py, &["commit", &d, &n100.to_string(), "100"])?;
        py100 = r["seconds"].as_f64().map(|s| n100 as f64 / s);
        std::fs::remove_file(scratch.join("py.fs")).ok();
        let r = run_py(py, &["commit", &d, &n1.to_string(), "1"])?;
        py1 = r["seconds"].as_f64().map(|s| n1 as f64 / s);
    }
    let mut rows = vec![
        Row {
            what: "fsync bound (append 200 B + fdatasync)".into(),
            ours: fsync_rate,
            python: None,
            unit: "ops/s",
            higher_is_better: true,
        },
        Row {
            what: "1-object commits".into(),
            ours: one,
            python: py1,
            unit: "txn/s",
            higher_is_better: true,
        },
        Row {
            what: "  as a fraction of the fsync bound".into(),
            ours: one / fsync_rate,
            python: py1.map(|p| p / fsync_rate),
            unit: "",
            higher_is_better: true,
        },
        Row {
            what: "100-object commits".into(),
            ours: hundred,
            python: py100,
            unit: "txn/s",
            higher_is_better: true,
        },
    ];
    if let Some(src) = pack_src {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let ours_copy = scratch.join("pack-ours.fs");
        std::fs::copy(src, &ours_copy).map_err(|e| ToolError::io(src, e))?;
        let fs = FileStorage::open(&ours_copy, &OpenOptions::read_write())?;
        let objects = fs.object_count();
        let pack_tid = zodb_core::TimeStamp::from_unix(t)
            .map_err(|e| ToolError::Usage(e.to_string()))?
            .tid();
        let start = Instant::now();
        let (packed, peak_anon) = with_peak_anon(|| fs.pack(pack_tid, true));
        packed?;
        let ours_s = secs(start.elapsed());
        drop(fs);
        std::fs::remove_file(&ours_copy).ok();
        std::fs::remove_file(filestorage::file::sibling(&ours_copy, ".old")).ok();
        let mut py_s = None;
        let mut py_rss = None;
        if let Some(py) = python {
            let py_copy = scratch.join("pack-py.fs");
            std::fs::copy(src, &py_copy).map_err(|e| ToolError::io(src, e))?;
            let r = run_py(py, &["pack", &py_copy.to_string_lossy(), &format!("{t}")])?;
            py_s = r["seconds"].as_f64();
            py_rss = r["peak_anon_kb"].as_f64();
        }
        rows.push(Row {
            what: format!(
                "pack with gc ({:.2} GB)",
                std::fs::metadata(src).map(|m| m.len()).unwrap_or(0) as f64 / 1e9
            ),
            ours: ours_s,
            python: py_s,
            unit: "s",
            higher_is_better: false,
        });
        rows.push(Row {
            what: format!("  peak anonymous memory during pack ({objects} objects)"),
            ours: peak_anon / 1024.0,
            python: py_rss.map(|k| k / 1024.0),
            unit: "MB",
            higher_is_better: false,
        });
    }
    std::fs::remove_dir_all(&scratch).ok();
    print_table(&rows, out)?;
    Ok(rows)
}

/// A fresh scratch directory inside `dir`.
fn tempfile_in(dir: &Path) -> Result<std::path::PathBuf, ToolError> {
    let p = dir.join(format!("zodbrs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| ToolError::io(&p, e))?;
    Ok(p)
}

const PY_COPY_BENCH: &str = include_str!("../../bench/py_copy_bench.py");

/// Removes a scratch FileStorage and the files the engine keeps beside it.
fn remove_storage(path: &Path) {
    for suffix in ["", ".index", ".lock", ".tmp", ".tr0"] {
        let _ = std::fs::remove_file(filestorage::file::sibling(path, suffix));
    }
}

/// Whether two files hold the same bytes (compared in pieces, so a large
/// file is never held in memory).
fn same_bytes(a: &Path, b: &Path) -> Result<bool, ToolError> {
    use std::io::Read;
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| ToolError::io(p, e));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    loop {
        let na = fa.read(&mut ba).map_err(|e| ToolError::io(a, e))?;
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na]).map_err(|e| ToolError::io(b, e))?;
            if n == 0 {
                return Ok(false);
            }
            nb += n;
        }
        if ba[..na] != bb[..na] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(fb.read(&mut bb[..1]).map_err(|e| ToolError::io(b, e))? == 0);
        }
    }
}

/// `zodbrs bench copy`: our `copy` of `src` into `dst` against ZODB's
/// `copyTransactionsFrom`, in the same run, page cache warm.
///
/// Two comparisons, each like for like: the copy until its last
/// transaction is finished (ours with deferred durability, Python with
/// ZODB's per-transaction fsync turned off), and the copy made durable
/// (ours: plus the one final fsync and the `.index`; Python: ZODB as it
/// ships, an fsync at every `tpc_finish`). Python copies only the first
/// `python_txns` transactions (it is slow); its throughput is that of the
/// prefix, bytes written over seconds, and the ratio compares throughputs.
/// `dst` must not exist; it is removed after each run, and nothing is ever
/// written beside `src`.
pub fn bench_copy(
    src: &Path,
    dst: &Path,
    python: Option<&Path>,
    python_txns: usize,
    out: &mut dyn Write,
) -> Result<Vec<Row>, ToolError> {
    if dst.exists() {
        return Err(ToolError::Usage(format!(
            "{}: exists; give a scratch path that does not",
            dst.display()
        )));
    }
    warm(src)?;
    let source = FileStorage::open_read_only(src)?;
    let size = source.end_pos() as f64;
    let t = Instant::now();
    let dest = FileStorage::open(
        dst,
        &OpenOptions {
            create: true,
            new_magic: source.magic(),
            durability: filestorage::Durability::Deferred,
            ..OpenOptions::read_write()
        },
    )?;
    let report =
        crate::tools::copy::copy_transactions(&source, &dest, &mut std::io::sink(), &mut |_| {});
    let copied = secs(t.elapsed());
    let synced = dest.sync();
    let durable = secs(t.elapsed());
    drop(dest);
    let closed = secs(t.elapsed());
    let result = report
        .map_err(ToolError::from)
        .and_then(|r| Ok((r, synced?)))
        .and_then(|(r, ())| Ok((r, same_bytes(src, dst)?)));
    remove_storage(dst);
    let (report, identical) = result?;
    writeln!(
        out,
        "ours: {} transactions, {} records, {:.2} GB; copy identical to the source: {}",
        report.txns,
        report.records,
        size / 1e9,
        if identical { "yes" } else { "NO" }
    )?;
    let mut py = |fsync: bool| -> Result<Option<(f64, f64)>, ToolError> {
        let Some(python) = python else {
            return Ok(None);
        };
        writeln!(
            out,
            "running ZODB's copyTransactionsFrom on the first {python_txns} transactions, fsync {}...",
            if fsync { "on" } else { "off" }
        )?;
        let n = python_txns.to_string();
        let j = run_py_script(
            python,
            PY_COPY_BENCH,
            &[
                src.as_ref(),
                dst.as_ref(),
                std::ffi::OsStr::new(&n),
                std::ffi::OsStr::new(if fsync { "1" } else { "0" }),
            ],
        );
        remove_storage(dst);
        let j = j?;
        let (Some(s), Some(b)) = (j["seconds"].as_f64(), j["bytes"].as_f64()) else {
            return Err(ToolError::Usage(format!("python reference printed {j}")));
        };
        writeln!(out, "  {:.1} MB in {s:.2} s", b / 1e6)?;
        Ok(Some((b / s / 1e9, b)))
    };
    let py_fast = py(false)?;
    let py_durable = py(true)?;
    let rows = vec![
        Row {
            what: "copy, until the last finish (Python: fsync off)".into(),
            ours: size / copied / 1e9,
            python: py_fast.map(|(r, _)| r),
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "copy, durable (ours: + final fsync + .index; Python: fsync per txn)".into(),
            ours: size / closed / 1e9,
            python: py_durable.map(|(r, _)| r),
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "  of which our final fsync".into(),
            ours: durable - copied,
            python: None,
            unit: "s",
            higher_is_better: false,
        },
    ];
    print_table(&rows, out)?;
    Ok(rows)
}

/// The Python side of `bench array`: wendelin.core's stand-in classes,
/// then the reader (both embedded, so the binary needs no checkout).
const PY_WENDELIN_STANDIN: &str = include_str!("../../zblk/tests/py/wendelin_standin.py");
const PY_ARRAY_BENCH: &str = include_str!("../../bench/py_array_bench.py");

/// Memory for a whole array, as numpy allocates it: anonymous memory with
/// transparent huge pages requested (numpy's allocator madvises
/// MADV_HUGEPAGE for arrays of 4 MiB and more), so both sides pay the same
/// page-fault cost.
fn array_memory(n: u64) -> Result<memmap2::MmapMut, ToolError> {
    let n = usize::try_from(n).map_err(|_| ToolError::Usage("array larger than memory".into()))?;
    let m = memmap2::MmapOptions::new()
        .len(n.max(1))
        .map_anon()
        .map_err(ToolError::Output)?;
    // Only a hint: without THP the read is just slower.
    let _ = m.advise(memmap2::Advice::HugePage);
    Ok(m)
}

/// `zodbrs bench array`: a whole ZBigArray into memory, ours against
/// wendelin.core's path in Python (ZODB load, unpickle, copy into a numpy
/// array, block by block), best of `runs` each, on a warm page cache. Both
/// sides open the database in the timed part. Also times our `.npy` export
/// to a sink (zero-copy streaming) and a transposing read (the other
/// order), which Python has no direct counterpart of.
pub fn bench_array(
    path: &Path,
    oid: Oid,
    python: Option<&Path>,
    runs: usize,
    out: &mut dyn Write,
) -> Result<Vec<Row>, ToolError> {
    use zblk::array::ZBigArray;
    use zblk::format::Order;
    use zodb_core::storage::Snapshot;

    let runs = runs.max(1);
    warm(path)?;
    let py = match python {
        Some(py) => {
            writeln!(out, "running the Python reference ({})...", py.display())?;
            let script = format!("{PY_WENDELIN_STANDIN}\n{PY_ARRAY_BENCH}");
            Some(run_py_script(
                py,
                &script,
                &[
                    path.as_ref(),
                    std::ffi::OsStr::new(&oid.0.to_string()),
                    std::ffi::OsStr::new(&runs.to_string()),
                ],
            )?)
        }
        None => None,
    };
    let py_read = py.as_ref().and_then(|j| j.get("read_s")?.as_f64());

    let (mut read_s, mut nbytes, mut format) = (f64::INFINITY, 0u64, String::new());
    for _ in 0..runs {
        let t = Instant::now();
        let fs = FileStorage::open_read_only(path)?;
        let a = ZBigArray::open(Snapshot::latest(&fs), oid)?;
        let mut mem = array_memory(a.nbytes())?;
        let buf = mem.get_mut(..a.nbytes() as usize).unwrap_or_default();
        a.read_into(a.order(), buf)?;
        read_s = read_s.min(secs(t.elapsed()));
        nbytes = a.nbytes();
        if format.is_empty() {
            format = match a.file().load_block(0)? {
                Some(b) => b.format.class_name().to_owned(),
                None => "hole".into(),
            };
        }
        std::hint::black_box(&*mem);
    }
    let fs = FileStorage::open_read_only(path)?;
    let a = ZBigArray::open(Snapshot::latest(&fs), oid)?;
    let t = Instant::now();
    a.write_npy(&mut std::io::sink(), &mut |_| {})?;
    let npy_s = secs(t.elapsed());
    let other = if a.order() == Order::C {
        Order::F
    } else {
        Order::C
    };
    let t = Instant::now();
    a.write_to(other, &mut std::io::sink(), &mut |_| {})?;
    let transposed_s = secs(t.elapsed());

    let gb = nbytes as f64 / 1e9;
    let rows = vec![
        Row {
            what: format!("ZBigArray into memory ({format}, {:.2} GB)", gb),
            ours: read_s,
            python: py_read,
            unit: "s",
            higher_is_better: false,
        },
        Row {
            what: "  throughput".into(),
            ours: gb / read_s,
            python: py_read.map(|s| gb / s),
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "  .npy export to a sink".into(),
            ours: gb / npy_s,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: format!("  transposing read ({} order)", other.as_char()),
            ours: gb / transposed_s,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
    ];
    print_table(&rows, out)?;
    Ok(rows)
}

/// The Python side of `bench array-write`.
const PY_ARRAY_WRITE_BENCH: &str = include_str!("../../bench/py_array_write_bench.py");

/// Writes a `.npy` of `mib` MiB of `<f8` values (a cheap pseudo-random
/// pattern, so blocks are neither zero nor alike) for `bench array-write`.
fn make_bench_npy(path: &Path, mib: u64) -> Result<(), ToolError> {
    use zblk::array::NpyHeader;
    use zblk::dtype::Descr;
    let n = mib * (1 << 20) / 8;
    let header = zblk::npy::header(&NpyHeader {
        descr: Descr::Type("<f8".into()),
        fortran_order: false,
        shape: vec![n],
    });
    let f = std::fs::File::create(path).map_err(|e| ToolError::io(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, f);
    w.write_all(&header).map_err(|e| ToolError::io(path, e))?;
    let mut rng = Rng(0x5eed);
    let mut buf = vec![0u8; 8 << 20];
    let mut left = n * 8;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        for word in buf.get_mut(..k).unwrap_or_default().chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_be_bytes());
        }
        w.write_all(buf.get(..k).unwrap_or_default())
            .map_err(|e| ToolError::io(path, e))?;
        left -= k as u64;
    }
    w.flush().map_err(|e| ToolError::io(path, e))?;
    Ok(())
}

/// One run of our writer on a fresh FileStorage at `db`: the array's
/// bytes (in memory) stored block by block, a commit every `txn_blocks`,
/// as the Python reference does; seconds taken, blocks stored. The array
/// gets `total` bytes: when that is more than the buffer holds, the buffer
/// is stored again and again (an array larger than what is in memory).
fn write_run(
    db: &Path,
    data: &bytes::Bytes,
    shape: &[u64],
    blksize: u64,
    format: zblk::write::WriteFormat,
    txn_blocks: u64,
    total: u64,
) -> Result<(f64, u64), ToolError> {
    use zblk::write::{ArraySpec, Writer, WriterOptions};
    remove_storage(db);
    let t = Instant::now();
    let fs = FileStorage::open(db, &OpenOptions::read_write())?;
    let mut w = Writer::open(&fs, WriterOptions::default(), None)?;
    let dtype = zblk::dtype::DType::from_descr(&zblk::dtype::Descr::Type("<f8".into()))
        .map_err(ToolError::Usage)?;
    let a = w.create_array(
        "a",
        ArraySpec {
            dtype,
            shape: shape.to_vec(),
            order: zblk::format::Order::C,
            blksize,
        },
    )?;
    let f = w.array_file(a)?;
    w.commit(zodb_core::TxnMeta::default())?;
    let (mut pending, mut blocks) = (0u64, 0u64);
    let n = data.len() as u64;
    let per_copy = n.div_ceil(blksize).max(1);
    for blk in 0..total.max(n).div_ceil(blksize) {
        let b = blk % per_copy;
        let start = (b * blksize).min(n) as usize;
        let end = ((b + 1) * blksize).min(n) as usize;
        let block = data.slice(start..end);
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        w.store_block_bytes(f, blk, block, format)?;
        blocks += 1;
        pending += 1;
        if pending >= txn_blocks {
            w.commit(zodb_core::TxnMeta::default())?;
            pending = 0;
        }
    }
    w.commit(zodb_core::TxnMeta::default())?;
    drop(w);
    drop(fs);
    Ok((secs(t.elapsed()), blocks))
}

/// `zodbrs bench array-write`: writing a ZBigArray of `mib` MiB, ours
/// ([`zblk::write::Writer`]) against wendelin.core's path in Python
/// (the stand-ins' `storeblk` under ZODB 6.4), the same blocks, formats
/// and transactions, each a fresh FileStorage in `dir` with an fsync per
/// commit on both sides; then `array import` of the same `.npy` against
/// Python reading it with `numpy.load(mmap_mode='r')`.
pub fn bench_array_write(
    dir: &Path,
    python: Option<&Path>,
    mib: u64,
    blksize: u64,
    format: zblk::write::WriteFormat,
    out: &mut dyn Write,
) -> Result<Vec<Row>, ToolError> {
    let npy = dir.join("bench_array_write.npy");
    writeln!(out, "making {} ({mib} MiB of <f8)...", npy.display())?;
    make_bench_npy(&npy, mib)?;
    warm(&npy)?;
    let txn_blocks = (crate::tools::array::DEFAULT_TXN_BYTES / blksize).max(1);
    let py = match python {
        Some(py) => {
            writeln!(out, "running the Python reference ({})...", py.display())?;
            let script = format!("{PY_WENDELIN_STANDIN}\n{PY_ARRAY_WRITE_BENCH}");
            Some(run_py_script(
                py,
                &script,
                &[
                    dir.as_ref(),
                    npy.as_ref(),
                    std::ffi::OsStr::new(&blksize.to_string()),
                    std::ffi::OsStr::new(&format.name()),
                    std::ffi::OsStr::new(&txn_blocks.to_string()),
                ],
            )?)
        }
        None => None,
    };
    let py_write = py.as_ref().and_then(|j| j.get("write_s")?.as_f64());
    let py_import = py.as_ref().and_then(|j| j.get("import_s")?.as_f64());
    let py_size = py.as_ref().and_then(|j| j.get("size")?.as_u64());

    // Ours, from memory: the data section read first (not timed).
    let (header, hlen) = {
        let mut f = std::fs::File::open(&npy).map_err(|e| ToolError::io(&npy, e))?;
        zblk::npy::read_header(&mut f)?
    };
    let raw = std::fs::read(&npy).map_err(|e| ToolError::io(&npy, e))?;
    let data = bytes::Bytes::from(raw).slice(hlen as usize..);
    let db = dir.join("ours_write.fs");
    let (write_s, blocks) = write_run(
        &db,
        &data,
        &header.shape,
        blksize,
        format,
        txn_blocks,
        data.len() as u64,
    )?;
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    drop(data);
    remove_storage(&db);

    // Ours, `array import` from the page-cached file.
    let t = Instant::now();
    let fs = FileStorage::open(&db, &OpenOptions::read_write())?;
    let opts = crate::tools::array::ImportOptions {
        blksize,
        format,
        ..crate::tools::array::ImportOptions::new("a")
    };
    crate::tools::array::import(&fs, &npy, &opts, &mut |_, _| {})?;
    drop(fs);
    let import_s = secs(t.elapsed());
    remove_storage(&db);
    let _ = std::fs::remove_file(&npy);

    let gb = (mib << 20) as f64 / 1e9;
    if let Some(ps) = py_size {
        writeln!(
            out,
            "Data.fs sizes: ours {size}, Python {ps} ({})",
            if ps == size { "equal" } else { "differ" }
        )?;
    }
    let rows = vec![
        Row {
            what: format!(
                "ZBigArray write ({}, {blocks} blocks, {gb:.2} GB, from memory)",
                format.name()
            ),
            ours: write_s,
            python: py_write,
            unit: "s",
            higher_is_better: false,
        },
        Row {
            what: "  throughput".into(),
            ours: gb / write_s,
            python: py_write.map(|s| gb / s),
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "array import from a page-cached .npy".into(),
            ours: import_s,
            python: py_import,
            unit: "s",
            higher_is_better: false,
        },
        Row {
            what: "  throughput".into(),
            ours: gb / import_s,
            python: py_import.map(|s| gb / s),
            unit: "GB/s",
            higher_is_better: true,
        },
    ];
    print_table(&rows, out)?;
    Ok(rows)
}

/// `zodbrs bench pager`: a ZBigArray of `mib` MiB of float64 through the
/// pager against wendelin.core's paths in Python, in one run:
///
/// - commit: 1 GiB (or the array) of dirty blocks per transaction, ZBlk0,
///   the first transaction timed from `commit()` to its return (the fill
///   is not timed); the same through the writer directly; Python:
///   `ZBigFile.storeblk` of the same bytes per block and commit (its ZBlk0
///   write path, `bench array-write`'s `write_s`);
/// - first touch: the mean of the whole array through one `view()` on a
///   warm page cache, every block loaded on its first fault; Python: the
///   array into memory block by block (`loadblk`, `bench array`); beside
///   it the file read into fresh memory, the bound of any copy-in design;
/// - re-read: the same view again, every block resident, with one thread
///   and with one per core, beside the same sums over ordinary memory
///   (what this machine's memory reads at);
/// - first write to a clean resident block (the write-protect fault), per
///   block.
pub fn bench_pager(
    dir: &Path,
    python: Option<&Path>,
    mib: u64,
    out: &mut dyn Write,
) -> Result<Vec<Row>, ToolError> {
    use std::sync::Arc;
    use zblk::paged::{PagedArray, PagedOptions};
    use zblk::write::{ArraySpec, DEFAULT_BLKSIZE, WriteFormat, Writer, WriterOptions};

    let nbytes = mib << 20;
    let n = nbytes / 8;
    let db = dir.join("bench_pager.fs");
    remove_storage(&db);
    let budget = usize::try_from(nbytes + (256 << 20)).unwrap_or(usize::MAX);
    let opts = || {
        let mut o = PagedOptions::default();
        o.pager.budget = budget;
        o.format = WriteFormat::ZBlk0;
        o
    };
    let pe = |what: &str, e: zblk::paged::PagedError| ToolError::Usage(format!("{what}: {e}"));

    // Commit.
    let fs = Arc::new(FileStorage::open(
        &db,
        &OpenOptions {
            create: true,
            ..OpenOptions::read_write()
        },
    )?);
    let oid = {
        let descr = zblk::npy::parse_descr("'<f8'")?;
        let dtype = zblk::dtype::DType::from_descr(&descr).map_err(ToolError::Usage)?;
        let mut w = Writer::open(&*fs, WriterOptions::default(), None)?;
        let a = w.create_array(
            "a",
            ArraySpec {
                dtype,
                shape: vec![n],
                order: zblk::format::Order::C,
                blksize: DEFAULT_BLKSIZE,
            },
        )?;
        w.commit(TxnMeta::default())?;
        w.oid_of(a)
            .ok_or_else(|| ToolError::Usage("the array got no oid".into()))?
    };
    writeln!(out, "committing {mib} MiB through the pager...")?;
    let mut a = PagedArray::open(Arc::clone(&fs), oid, opts()).map_err(|e| pe("open", e))?;
    let per_txn = (1u64 << 30).min(nbytes) / 8;
    // Timed: the first transaction, into a file holding only the empty
    // array, as the direct writer's and Python's are; the rest fills the
    // array for the reads.
    let mut commit_s = 0.0;
    let commit_bytes = per_txn * 8;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut t0 = 0;
    while t0 < n {
        let t1 = (t0 + per_txn).min(n);
        {
            let mut v = a.view_major_mut::<f64>(t0..t1).map_err(|e| pe("view", e))?;
            let base = rng.next() as f64;
            for (i, x) in v.as_mut_slice().iter_mut().enumerate() {
                *x = base + i as f64;
            }
        }
        let t = Instant::now();
        a.commit(TxnMeta::default()).map_err(|e| pe("commit", e))?;
        if t0 == 0 {
            commit_s = secs(t.elapsed());
        }
        t0 = t1;
    }
    drop(a);
    fs.sync()?;
    drop(fs);
    // The same transaction through the writer directly (what `array
    // import` does from memory): the FileStorage write side's own
    // block-write throughput, which the pager's commit is measured
    // against. Equal sizes matter: the disk's write-back slows down as
    // more of the file is dirty.
    let direct_gbs = {
        let wmib = mib.min(1024);
        let mut buf = vec![0u8; usize::try_from(wmib << 20).unwrap_or(0)];
        for (i, c) in buf.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&(rng.next() as f64 + i as f64).to_le_bytes());
        }
        let data = bytes::Bytes::from(buf);
        let wdb = dir.join("bench_pager_direct.fs");
        let (s, _) = write_run(
            &wdb,
            &data,
            &[n],
            DEFAULT_BLKSIZE,
            WriteFormat::ZBlk0,
            (1u64 << 30) / DEFAULT_BLKSIZE,
            wmib << 20,
        )?;
        remove_storage(&wdb);
        (wmib << 20) as f64 / 1e9 / s
    };

    // Python, on the file we just wrote and from memory.
    let (py_read, py_write_gbs) = match python {
        Some(py) => {
            writeln!(out, "running the Python reference ({})...", py.display())?;
            warm(&db)?;
            let read = run_py_script(
                py,
                &format!("{PY_WENDELIN_STANDIN}\n{PY_ARRAY_BENCH}"),
                &[
                    db.as_os_str(),
                    std::ffi::OsStr::new(&oid.0.to_string()),
                    std::ffi::OsStr::new("1"),
                ],
            )?;
            let wmib = mib.min(1024);
            let npy = dir.join("bench_pager.npy");
            make_bench_npy(&npy, wmib)?;
            let pydir = dir.join("bench_pager_py");
            std::fs::create_dir_all(&pydir).map_err(|e| ToolError::io(&pydir, e))?;
            let write = run_py_script(
                py,
                &format!("{PY_WENDELIN_STANDIN}\n{PY_ARRAY_WRITE_BENCH}"),
                &[
                    pydir.as_os_str(),
                    npy.as_os_str(),
                    std::ffi::OsStr::new(&DEFAULT_BLKSIZE.to_string()),
                    std::ffi::OsStr::new("ZBlk0"),
                    std::ffi::OsStr::new(&((1u64 << 30) / DEFAULT_BLKSIZE).to_string()),
                ],
            )?;
            let _ = std::fs::remove_file(&npy);
            let _ = std::fs::remove_dir_all(&pydir);
            (
                read.get("read_s").and_then(serde_json::Value::as_f64),
                write
                    .get("write_s")
                    .and_then(serde_json::Value::as_f64)
                    .map(|s| (wmib << 20) as f64 / 1e9 / s),
            )
        }
        None => (None, None),
    };

    // First touch and re-read.
    warm(&db)?;
    let fs = Arc::new(FileStorage::open_read_only(&db)?);
    let mut a = PagedArray::open(Arc::clone(&fs), oid, opts()).map_err(|e| pe("open", e))?;
    let mean = |a: &PagedArray<FileStorage>| -> Result<(f64, f64), ToolError> {
        let v = a.as_slice::<f64>().map_err(|e| pe("view", e))?;
        let t = Instant::now();
        let s = sum8(v);
        Ok((secs(t.elapsed()), s / v.len().max(1) as f64))
    };
    let (first_s, m1) = mean(&a)?;
    let (again_s, m2) = mean(&a)?;
    if m1.to_bits() != m2.to_bits() {
        return Err(ToolError::Usage(format!(
            "the two reads disagree: {m1} vs {m2}"
        )));
    }
    // Resident blocks are plain memory to any number of threads: the same
    // re-read with one thread per core, best of three passes.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel_s = {
        let v = a.as_slice::<f64>().map_err(|e| pe("view", e))?;
        let (s, total) = best_parallel_sum(v, cores, 3);
        let m3 = total / v.len().max(1) as f64;
        // Another summation order: equal up to rounding, which over half a
        // billion terms of this size reaches about 1e-9 relative.
        if (m3 - m1).abs() > 1e-6 * m1.abs().max(1.0) {
            return Err(ToolError::Usage(format!(
                "the parallel read disagrees: {m3} vs {m1}"
            )));
        }
        s
    };
    let stats = a.mapping().stats();
    // The machine's own bound for a first touch by copying in: as many of
    // the file's bytes as the array has, read (from the page cache) into
    // fresh memory, 2 MiB at a time. The same size matters: on this VM
    // fresh memory gets slower the more of it a process takes.
    let pread_gbs = pread_fresh(&db, nbytes, 1)?;
    let pread_parallel_gbs = pread_fresh(&db, nbytes, cores)?;
    // The machine's own bound for a re-read: the same sum over ordinary
    // resident memory (a Vec, 4 KiB pages), best of two passes.
    let (plain_gbs, plain_parallel_gbs) = {
        let len = usize::try_from(nbytes.min(1 << 30) / 8).unwrap_or(0);
        let v: Vec<f64> = (0..len).map(|i| i as f64).collect();
        let mut best = f64::INFINITY;
        for _ in 0..2 {
            let t = Instant::now();
            std::hint::black_box(sum8(std::hint::black_box(&v)));
            best = best.min(secs(t.elapsed()));
        }
        let (parallel, _) = best_parallel_sum(&v, cores, 3);
        let gb = (len * 8) as f64 / 1e9;
        (gb / best, gb / parallel)
    };
    // First write to clean resident blocks.
    let blocks = (nbytes / DEFAULT_BLKSIZE).min(512);
    let per_block = (DEFAULT_BLKSIZE / 8) as usize;
    let write_us = {
        let mut v = a.view_mut::<f64>().map_err(|e| pe("view", e))?;
        let s = v.as_mut_slice();
        let t = Instant::now();
        for b in 0..blocks as usize {
            if let Some(x) = s.get_mut(b * per_block) {
                *x += 1.0;
            }
        }
        secs(t.elapsed()) * 1e6 / blocks.max(1) as f64
    };
    a.abort().map_err(|e| pe("abort", e))?;
    drop(a);
    drop(fs);
    remove_storage(&db);

    let gb = nbytes as f64 / 1e9;
    writeln!(
        out,
        "pager: {} faults, {} loads, {} moves, {} copies; install: {}",
        stats.faults,
        stats.loads,
        stats.moves,
        stats.copies,
        if stats.moves > 0 {
            "UFFDIO_MOVE"
        } else {
            "UFFDIO_COPY"
        }
    )?;
    let rows = vec![
        Row {
            what: format!(
                "commit of dirty blocks (ZBlk0, {:.2} GB in one transaction)",
                commit_bytes as f64 / 1e9
            ),
            ours: commit_bytes as f64 / 1e9 / commit_s,
            python: py_write_gbs,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "  the same blocks through the writer directly".into(),
            ours: direct_gbs,
            python: py_write_gbs,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "first-touch read through view()".into(),
            ours: gb / first_s,
            python: py_read.map(|s| gb / s),
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "  the file read into fresh memory (pread)".into(),
            ours: pread_gbs,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: format!("  the same with {cores} threads"),
            ours: pread_parallel_gbs,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "re-read of resident data".into(),
            ours: gb / again_s,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "  the same sum over ordinary memory".into(),
            ours: plain_gbs,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: format!("re-read of resident data, {cores} threads"),
            ours: gb / parallel_s,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: format!("  the same sum over ordinary memory, {cores} threads"),
            ours: plain_parallel_gbs,
            python: None,
            unit: "GB/s",
            higher_is_better: true,
        },
        Row {
            what: "first write to a clean 2 MiB block".into(),
            ours: write_us,
            python: None,
            unit: "µs",
            higher_is_better: false,
        },
    ];
    print_table(&rows, out)?;
    Ok(rows)
}

/// GB/s of reading the first `nbytes` of `path` (from the page cache) into
/// fresh memory, 2 MiB at a time, by `threads` threads each filling its
/// own share: what copying blocks in costs on this machine, whatever
/// copies them.
fn pread_fresh(path: &Path, nbytes: u64, threads: usize) -> Result<f64, ToolError> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).map_err(|e| ToolError::io(path, e))?;
    let len = f
        .metadata()
        .map_err(|e| ToolError::io(path, e))?
        .len()
        .min(nbytes);
    let len = usize::try_from(len).unwrap_or(0);
    let block = zblk::write::DEFAULT_BLKSIZE as usize;
    let share = len.div_ceil(threads.max(1)).div_ceil(block).max(1) * block;
    let t = Instant::now();
    let mut dst = vec![0u8; len];
    std::thread::scope(|s| {
        let parts: Vec<_> = dst
            .chunks_mut(share)
            .enumerate()
            .map(|(k, part)| {
                let f = &f;
                s.spawn(move || {
                    for (i, chunk) in part.chunks_mut(block).enumerate() {
                        f.read_exact_at(chunk, (k * share + i * block) as u64)?;
                    }
                    Ok::<_, std::io::Error>(())
                })
            })
            .collect();
        parts.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a reader panicked")))
        })
    })
    .map_err(|e| ToolError::io(path, e))?;
    std::hint::black_box(&dst);
    Ok(len as f64 / 1e9 / secs(t.elapsed()))
}

/// `v` summed by `threads` scoped threads, each [`sum8`] over its share:
/// the best time of `passes` passes, and the sum.
fn best_parallel_sum(v: &[f64], threads: usize, passes: usize) -> (f64, f64) {
    let share = v.len().div_ceil(threads.max(1)).max(1);
    let mut best = f64::INFINITY;
    let mut total = 0.0;
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        total = std::thread::scope(|s| {
            let parts: Vec<_> = v.chunks(share).map(|c| s.spawn(|| sum8(c))).collect();
            parts
                .into_iter()
                .map(|h| h.join().unwrap_or(f64::NAN))
                .sum::<f64>()
        });
        best = best.min(secs(t.elapsed()));
    }
    (best, std::hint::black_box(total))
}

/// A sum with eight independent accumulators, so the read, not the adds,
/// bounds the loop.
fn sum8(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + chunks.remainder().iter().sum::<f64>()
}
