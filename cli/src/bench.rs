//! `zodbrs bench`: our speed against the Python reference, measured in the
//! same run on the same file, printed as a table of ratios. Never used as a
//! pass/fail test: machines differ, ratios are what we track.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use filestorage::{FileStorage, OpenOptions};
use zodb_core::{Oid, ReadStorage};

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

/// xorshift64*: a fixed, dependency-free random sequence for sampling oids.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
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
    let py: Option<serde_json::Value> =
        match python {
            Some(py) => {
                writeln!(out, "running the Python reference ({})...", py.display())?;
                let o = Command::new(py)
                    .arg("-c")
                    .arg(PY_READ_BENCH)
                    .arg(path)
                    .arg((loads / 10).max(1000).to_string())
                    .arg("1")
                    .output()
                    .map_err(|e| ToolError::io(py, e))?;
                if !o.status.success() {
                    return Err(ToolError::Usage(format!(
                        "python reference failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    )));
                }
                Some(serde_json::from_slice(&o.stdout).map_err(|e| {
                    ToolError::Usage(format!("python reference printed no JSON: {e}"))
                })?)
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
