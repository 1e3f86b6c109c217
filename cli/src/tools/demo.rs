//! `zodbrs demo gen|read`: wendelin.core's `demo/demo_zbigarray.py` on
//! the pager — a float64 signal larger than the memory budget generated
//! block by block in bounded transactions, then read back whole through
//! one view to compute its mean and sum.
//!
//! The output follows the Python demo (`gen signal blk [a:b]  (x%)` per
//! transaction, `sig:`, `<sig>:` and `S(sig):` lines, `VIRT`/`RSS`), with
//! the read throughput and the memory figures that show the budget held.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use zblk::dtype::DType;
use zblk::format::Order;
use zblk::npy::parse_descr;
use zblk::paged::{PagedArray, PagedOptions};
use zblk::write::{ArraySpec, DEFAULT_BLKSIZE, WriteFormat, Writer, WriterOptions};
use zodb_core::{Oid, TxnMeta, WriteStorage};

use crate::ToolError;

/// The root key the demo keeps its array under.
pub const KEY: &str = "signalv";
/// The signal's amplitude and frequency: `S(t) = M·sin(f·t)`.
const M: f64 = 15.0;
const F: f64 = 0.2;
const MIB: u64 = 1 << 20;
const GB: f64 = (1u64 << 30) as f64;

/// What `demo gen` and `demo read` are given.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Bytes of the signal `gen` makes.
    pub worksize: u64,
    /// The pager's memory budget in bytes.
    pub budget: u64,
}

fn pager_opts(budget: u64) -> PagedOptions {
    let mut o = PagedOptions::default();
    o.pager.budget = usize::try_from(budget).unwrap_or(usize::MAX);
    o.format = WriteFormat::Auto;
    o
}

fn demo_err(what: &str, e: impl std::fmt::Display) -> ToolError {
    ToolError::Usage(format!("{what}: {e}"))
}

/// `demo gen`: `root['signalv'] = ZBigArray((n,), float64)`, committed,
/// then filled in transactions of at most 32 MiB (a quarter of the budget
/// when that is less, so the dirty blocks and their copies on the way to
/// the storage fit beside the clean ones).
pub fn generate<S: WriteStorage + ?Sized + 'static>(
    storage: Arc<S>,
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    print_ram(out)?;
    let n = opts.worksize / 8;
    let dtype = DType::from_descr(&parse_descr("'<f8'").map_err(|e| demo_err("dtype", e))?)
        .map_err(|e| demo_err("dtype", e))?;
    let oid = {
        let mut w = Writer::open(&*storage, WriterOptions::default(), None)
            .map_err(|e| demo_err("opening the database", e))?;
        if w.root_get(KEY)
            .map_err(|e| demo_err("reading the root", e))?
            .is_some()
        {
            return Err(ToolError::Usage(format!(
                "the database already has root[{KEY:?}]: generate into a new one"
            )));
        }
        let a = w
            .create_array(
                KEY,
                ArraySpec {
                    dtype,
                    shape: vec![n],
                    order: Order::C,
                    blksize: DEFAULT_BLKSIZE,
                },
            )
            .map_err(|e| demo_err("creating the array", e))?;
        w.commit(TxnMeta::default())
            .map_err(|e| demo_err("committing the array", e))?;
        w.oid_of(a)
            .ok_or_else(|| ToolError::Usage("the new array got no oid".into()))?
    };
    let mut a = PagedArray::open(storage, oid, pager_opts(opts.budget))
        .map_err(|e| demo_err("mapping the array", e))?;
    writeln!(
        out,
        "gen signal t=0...{}  float64  (= {:.2}GB) ",
        py_sci(n as f64),
        (n * 8) as f64 / GB
    )?;
    let chunk = (32 * MIB).min(opts.budget / 4).max(DEFAULT_BLKSIZE) / 8;
    let started = Instant::now();
    let mut anon_peak = 0;
    let mut t0 = 0u64;
    while t0 < n {
        let t1 = (t0 + chunk).min(n);
        {
            let mut v = a
                .view_major_mut::<f64>(t0..t1)
                .map_err(|e| demo_err("view", e))?;
            for (i, x) in v.as_mut_slice().iter_mut().enumerate() {
                *x = M * (F * (t0 + i as u64) as f64).sin();
            }
        }
        let note = format!(
            "gen signal blk [{t0}:{t1}]  ({:.1}%)",
            100.0 * t1 as f64 / n as f64
        );
        a.commit(TxnMeta {
            description: bytes::Bytes::from(note.clone().into_bytes()),
            ..TxnMeta::default()
        })
        .map_err(|e| demo_err(&format!("committing [{t0}:{t1}]"), e))?;
        writeln!(out, "{note}")?;
        anon_peak = anon_peak.max(memory().2);
        t0 = t1;
    }
    let secs = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "generated {:.2} GB in {secs:.2} s: {:.2} GB/s",
        (n * 8) as f64 / 1e9,
        (n * 8) as f64 / 1e9 / secs.max(1e-9)
    )?;
    print_memory(out, opts.budget, anon_peak)
}

/// The oid of `root['signalv']`.
pub fn root_array<S: WriteStorage + ?Sized>(storage: &S) -> Result<Oid, ToolError> {
    let mut w = Writer::open(storage, WriterOptions::default(), None)
        .map_err(|e| demo_err("reading the root", e))?;
    w.root_get(KEY)
        .map_err(|e| demo_err("reading the root", e))?
        .ok_or_else(|| ToolError::Usage(format!("the database has no root[{KEY:?}]: run demo gen")))
}

/// `demo read`: mean and sum of the whole signal through one view, with
/// the first-touch read throughput.
pub fn read<S: WriteStorage + ?Sized + 'static>(
    storage: Arc<S>,
    oid: Oid,
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    print_ram(out)?;
    let a = PagedArray::open(storage, oid, pager_opts(opts.budget))
        .map_err(|e| demo_err("mapping the array", e))?;
    let shape: Vec<String> = a.shape().iter().map(u64::to_string).collect();
    writeln!(
        out,
        "sig: {} {} (= {:.2}GB)",
        shape.join("x"),
        numpy_name(&a.dtype().numpy_str()),
        a.nbytes() as f64 / GB
    )?;
    let v = a.view::<f64>().map_err(|e| demo_err("view", e))?;
    let started = Instant::now();
    let sum = pairwise_sum(v.as_slice().unwrap_or(&[]));
    let secs = started.elapsed().as_secs_f64();
    let n = v.len();
    writeln!(out, "<sig>:\t{}", py_float(sum / n as f64))?;
    writeln!(out, "S(sig):\t{}", py_float(sum))?;
    writeln!(
        out,
        "read {:.2} GB in {secs:.3} s: {:.2} GB/s",
        a.nbytes() as f64 / 1e9,
        a.nbytes() as f64 / 1e9 / secs.max(1e-9)
    )?;
    print_memory(out, opts.budget, 0)
}

/// `numpy.add.reduce` of a contiguous float64 array: its pairwise sum
/// (halves split at multiples of 8, blocks of up to 128 summed with eight
/// accumulators), so the printed sum and mean are NumPy's to the last digit.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut s = 0.0;
        for &x in a {
            s += x;
        }
        s
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            s += x;
        }
        s
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `print(dtype)` for the demo's types.
fn numpy_name(descr: &str) -> String {
    match descr {
        "<f8" => "float64".into(),
        "<f4" => "float32".into(),
        other => other.into(),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for
/// 1e-4 <= |x| < 1e16, else `d.ddde±XX`.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{:e}", x.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let e = exp as usize + 1;
            let (int, frac) = if digits.len() > e {
                (digits[..e].to_owned(), digits[e..].to_owned())
            } else {
                (format!("{digits:0<e$}"), "0".to_owned())
            };
            format!("{int}.{frac}")
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mant = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}.{rest}")
        };
        format!(
            "{sign}{mant}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// `'%.2e' % x`.
fn py_sci(x: f64) -> String {
    let s = format!("{x:.2e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let e: i32 = e.parse().unwrap_or(0);
            format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
        None => s,
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn print_ram(out: &mut dyn Write) -> Result<(), ToolError> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    writeln!(out, "I: RAM: {:.2}GB", (total * 1024) as f64 / GB)?;
    Ok(())
}

/// Memory of the process in MiB: (VIRT, RSS, anonymous part of RSS).
/// The file-backed rest is the Data.fs pages that the storage's mmap
/// reads through: page cache, not memory of the process.
fn memory() -> (u64, u64, u64) {
    (
        status_kib("VmSize:").unwrap_or(0) / 1024,
        status_kib("VmRSS:").unwrap_or(0) / 1024,
        status_kib("RssAnon:").unwrap_or(0) / 1024,
    )
}

fn print_memory(out: &mut dyn Write, budget: u64, anon_peak: u64) -> Result<(), ToolError> {
    let (virt, rss, anon) = memory();
    writeln!(out, "VIRT: {virt} MB\tRSS: {rss}MB")?;
    writeln!(
        out,
        "anonymous RSS: {anon} MB now, {} MB at most (budget {} MB); the rest is Data.fs page cache",
        anon_peak.max(anon),
        budget / MIB
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, want) in [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (123456789.125, "123456789.125"),
            (1e16, "1e+16"),
            (1.2345e22, "1.2345e+22"),
            (9999999999999998.0, "9999999999999998.0"),
            (-0.00012, "-0.00012"),
            (0.30000000000000004, "0.30000000000000004"),
        ] {
            assert_eq!(py_float(x), want, "{x:e}");
        }
        assert_eq!(py_sci(268435456.0), "2.68e+08");
        assert_eq!(py_sci(0.0), "0.00e+00");
    }

    #[test]
    fn pairwise_sum_matches_a_plain_sum_on_exact_values() {
        let a: Vec<f64> = (0..100_003).map(|i| (i % 17) as f64).collect();
        let plain: f64 = a.iter().sum();
        assert_eq!(pairwise_sum(&a), plain);
        assert_eq!(pairwise_sum(&[]), 0.0);
    }
}
