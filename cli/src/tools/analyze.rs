//! `analyze`: zodbtools' `zodb analyze`, space used per class over a range
//! of history, as a report or (`--csv`) a table.
//!
//! Every data record in the range counts: its class is taken from its
//! pickle (ZODB's `get_pickle_metadata`, as `module.Class`) and its size is
//! the length of its data, back pointers resolved. A record without data (a
//! deletion, an undone creation) counts as a record but adds no bytes and
//! no class.
//!
//! The bookkeeping is zodbtools', quirks included, because the output must
//! be the same:
//! - an object keeps the class of the *first* revision seen in the range,
//!   even if later revisions are of another class;
//! - "current" (C.) columns hold the sizes of the last revision of each
//!   object seen, "old" (O.) columns the sizes of the revisions replaced
//!   later in the range;
//! - classes are ordered by total bytes, ties in the order they were first
//!   seen (Python's stable sort over an insertion-ordered dict).
//!
//! Where zodbtools divides by zero (transactions without data records, or
//! no record with data) it dies with `ZeroDivisionError`; here the ratio is
//! printed as `nan` instead and the report completes.

use std::collections::HashMap;
use std::io::Write;

use zodb_core::pickle::class_name;
use zodb_core::{Oid, ReadStorage, Tid};

use crate::ToolError;

/// Totals for one class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// `module.Class`.
    pub name: String,
    /// Records of this class (T.Count) and their bytes (T.Bytes).
    pub count: u64,
    /// Sum of the record sizes.
    pub bytes: u64,
    /// Objects of this class (C.Count) and the sizes of their last
    /// revisions (C.Bytes).
    pub current_count: u64,
    /// Bytes of the last revisions.
    pub current_bytes: i64,
    /// Revisions replaced later in the range (O.Count) and their sizes.
    pub old_count: u64,
    /// Bytes of the replaced revisions.
    pub old_bytes: u64,
}

/// What `analyze` found; [`report`] prints it.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Transactions seen (TIDS).
    pub txns: u64,
    /// Data records seen, with or without data (OIDS).
    pub records: u64,
    /// Bytes of data (DBYTES).
    pub bytes: u64,
    /// Distinct objects with data (COIDS) and the bytes of their latest
    /// revisions (CBYTES).
    pub current_count: u64,
    /// Bytes of the latest revisions.
    pub current_bytes: i64,
    /// Replaced revisions (FOIDS) and their bytes (FBYTES).
    pub old_count: u64,
    /// Bytes of the replaced revisions.
    pub old_bytes: u64,
    /// Per class, in the order first seen.
    pub classes: Vec<ClassStats>,
    /// First and last transaction seen.
    pub tid_min: Option<Tid>,
    /// Last transaction seen.
    pub tid_max: Option<Tid>,
}

/// Per-object state: index of its class in `Report::classes` and the size
/// of its latest revision.
#[derive(Clone, Copy)]
struct ObjState {
    class: u32,
    size: u64,
}

/// Accumulates a [`Report`] record by record.
#[derive(Default)]
struct Analyzer {
    rep: Report,
    objs: HashMap<Oid, ObjState>,
    by_name: HashMap<String, u32>,
}

impl Analyzer {
    fn class_index(&mut self, name: String) -> u32 {
        if let Some(&i) = self.by_name.get(&name) {
            return i;
        }
        let i = self.rep.classes.len() as u32;
        self.rep.classes.push(ClassStats {
            name: name.clone(),
            ..ClassStats::default()
        });
        self.by_name.insert(name, i);
        i
    }

    fn record(&mut self, oid: Oid, data: Option<&[u8]>) {
        self.rep.records += 1;
        let Some(data) = data else { return };
        let size = data.len() as u64;
        self.rep.bytes += size;
        let class = match self.objs.get(&oid).copied() {
            None => {
                let (module, name) = class_name(data);
                let class = self.class_index(format!("{module}.{name}"));
                self.objs.insert(oid, ObjState { class, size });
                self.rep.current_count += 1;
                self.rep.current_bytes += size as i64;
                let c = &mut self.rep.classes[class as usize];
                c.current_count += 1;
                c.current_bytes += size as i64;
                class
            }
            Some(prev) => {
                self.objs.insert(
                    oid,
                    ObjState {
                        class: prev.class,
                        size,
                    },
                );
                self.rep.old_count += 1;
                self.rep.old_bytes += prev.size;
                self.rep.current_bytes += size as i64 - prev.size as i64;
                let c = &mut self.rep.classes[prev.class as usize];
                c.old_count += 1;
                c.old_bytes += prev.size;
                c.current_bytes += size as i64 - prev.size as i64;
                prev.class
            }
        };
        let c = &mut self.rep.classes[class as usize];
        c.count += 1;
        c.bytes += size;
    }
}

/// Analyzes the transactions of `stor` with `tidmin <= tid <= tidmax`,
/// calling `progress` with each transaction's tid.
pub fn analyze(
    stor: &dyn ReadStorage,
    tidmin: Option<Tid>,
    tidmax: Option<Tid>,
    progress: &mut dyn FnMut(Tid),
) -> Result<Report, ToolError> {
    let mut a = Analyzer::default();
    for txn in stor.iter_transactions(tidmin, tidmax)? {
        let txn = txn?;
        let tid = txn.info.tid;
        progress(tid);
        a.rep.txns += 1;
        a.rep.tid_min.get_or_insert(tid);
        a.rep.tid_max = Some(tid);
        for rec in &txn.records {
            a.record(rec.oid, rec.data.as_deref());
        }
    }
    Ok(a.rep)
}

/// Writes `rep` as zodbtools does: the report, or with `csv` the per-class
/// table only (a header line even when nothing was found).
pub fn report(rep: &Report, csv: bool, out: &mut dyn Write) -> Result<(), ToolError> {
    let bytes = rep.bytes as f64;
    if !csv {
        let (Some(lo), Some(hi)) = (rep.tid_min, rep.tid_max) else {
            writeln!(out, "# ø")?;
            writeln!(out, "No transactions processed")?;
            return Ok(());
        };
        writeln!(out, "# {lo}..{hi}")?;
        writeln!(
            out,
            "Processed {} records in {} transactions",
            rep.records, rep.txns
        )?;
        writeln!(
            out,
            "Average record size is {} bytes",
            f(div(bytes, rep.records as f64), 7, 2)
        )?;
        writeln!(
            out,
            "Average transaction size is {} bytes",
            f(div(bytes, rep.txns as f64), 7, 2)
        )?;
        writeln!(out, "Types used:")?;
        let cols = [
            "Class Name",
            "T.Count",
            "T.Bytes",
            "Pct",
            "AvgSize",
            "C.Count",
            "C.Bytes",
            "O.Count",
            "O.Bytes",
        ];
        text_row(out, cols)?;
        text_rule(out, '-')?;
    } else {
        writeln!(
            out,
            "Class Name,T.Count,T.Bytes,Pct,AvgSize,C.Count,C.Bytes,O.Count,O.Bytes"
        )?;
    }

    let mut order: Vec<&ClassStats> = rep.classes.iter().collect();
    order.sort_by_key(|c| c.bytes); // stable, as Python's sorted()
    let mut cumpct = 0.0;
    for c in order {
        let pct = c.bytes as f64 * 100.0 / bytes;
        cumpct += pct;
        let avg = c.bytes as f64 / c.count as f64;
        if csv {
            writeln!(
                out,
                "{},{},{},{}%,{},{},{},{},{}",
                c.name,
                c.count,
                c.bytes,
                f(pct, 0, 6),
                f(avg, 0, 6),
                c.current_count,
                c.current_bytes,
                c.old_count,
                c.old_bytes
            )?;
        } else {
            writeln!(
                out,
                "{:<46} {:>7} {:>9} {}% {} {:>7} {:>9} {:>7} {:>9}",
                shorten(&c.name, 46),
                c.count,
                c.bytes,
                f(pct, 5, 1),
                f(avg, 7, 2),
                c.current_count,
                c.current_bytes,
                c.old_count,
                c.old_bytes
            )?;
        }
    }
    if csv {
        return Ok(());
    }

    text_rule(out, '=')?;
    writeln!(
        out,
        "{:>46} {:>7} {:>9} {:>6} {}k",
        "Total Transactions",
        rep.txns,
        " ",
        " ",
        f(div(bytes, rep.txns as f64) / 1024.0, 6, 2)
    )?;
    summary(
        out,
        "Total Records",
        rep.records,
        bytes / 1024.0,
        cumpct,
        div(bytes, rep.records as f64),
    )?;
    let cbytes = rep.current_bytes as f64;
    summary(
        out,
        "Current Objects",
        rep.current_count,
        cbytes / 1024.0,
        div(cbytes * 100.0, bytes),
        div(cbytes, rep.current_count as f64),
    )?;
    if rep.old_count > 0 {
        let fbytes = rep.old_bytes as f64;
        summary(
            out,
            "Old Objects",
            rep.old_count,
            fbytes / 1024.0,
            div(fbytes * 100.0, bytes),
            div(fbytes, rep.old_count as f64),
        )?;
    }
    Ok(())
}

/// A summary line, `"%46s %7d %8dk %5.1f%% %7.2f"`.
fn summary(
    out: &mut dyn Write,
    label: &str,
    count: u64,
    kbytes: f64,
    pct: f64,
    avg: f64,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{label:>46} {count:>7} {}k {}% {}",
        int(kbytes, 8),
        f(pct, 5, 1),
        f(avg, 7, 2)
    )
}

fn text_row(out: &mut dyn Write, c: [&str; 9]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<46} {:>7} {:>9} {:>6} {:>7} {:>7} {:>9} {:>7} {:>9}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
    )
}

/// The line under the header (`-`) or above the totals (`=`): each column
/// filled, the Pct column one narrower than its field.
fn text_rule(out: &mut dyn Write, ch: char) -> std::io::Result<()> {
    let fill = |n: usize| ch.to_string().repeat(n);
    text_row(
        out,
        [
            &fill(46),
            &fill(7),
            &fill(9),
            &fill(5),
            &fill(7),
            &fill(7),
            &fill(9),
            &fill(7),
            &fill(9),
        ],
    )
}

/// `a / b`, NaN where Python would raise ZeroDivisionError.
fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// Python's `%{width}.{prec}f`. Rust's fixed-precision formatting rounds
/// the exact binary value half to even, as Python's does; only the spelling
/// of non-finite values differs.
fn f(x: f64, width: usize, prec: usize) -> String {
    if x.is_nan() {
        format!("{:>width$}", "nan")
    } else if x.is_infinite() {
        format!("{:>width$}", if x > 0.0 { "inf" } else { "-inf" })
    } else {
        format!("{x:>width$.prec$}")
    }
}

/// Python's `%{width}d` of a float: truncated toward zero.
fn int(x: f64, width: usize) -> String {
    if x.is_finite() {
        format!("{:>width$}", x.trunc() as i64)
    } else {
        f(x, width, 0)
    }
}

/// zodbanalyze's `shorten`: a class name of at most `n` characters, cut at
/// dots from the left (`...` marks the cut), or its last `n` characters.
pub fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut s = s;
    while s.chars().count() + 3 > n {
        match s.find('.') {
            Some(i) => s = &s[i + 1..],
            None => {
                let skip = s.chars().count() - n;
                return s.chars().skip(skip).collect();
            }
        }
    }
    format!("...{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_like_zodbanalyze() {
        assert_eq!(shorten("a.b", 46), "a.b");
        assert_eq!(shorten("aaaa.bbbb.cccc", 10), "...cccc");
        assert_eq!(shorten("aaaa.bbbb.cccc", 12), "...bbbb.cccc");
        assert_eq!(shorten("abcdefghijkl", 5), "hijkl");
        // No dot left after cutting: the last n characters of what is left.
        assert_eq!(shorten("a.bcdefghijkl", 5), "hijkl");
    }

    #[test]
    fn float_formats() {
        assert_eq!(f(25.038640, 0, 6), "25.038640");
        assert_eq!(f(0.25, 5, 1), "  0.2");
        assert_eq!(f(0.35, 5, 1), "  0.3"); // 0.35 is 0.34999... in binary
        assert_eq!(f(f64::NAN, 7, 2), "    nan");
        assert_eq!(int(3.99, 8), "       3");
    }

    #[test]
    fn empty_report() {
        let mut out = Vec::new();
        report(&Report::default(), false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# ø\nNo transactions processed\n"
        );
        let mut out = Vec::new();
        report(&Report::default(), true, &mut out).unwrap();
        assert_eq!(
            out,
            b"Class Name,T.Count,T.Bytes,Pct,AvgSize,C.Count,C.Bytes,O.Count,O.Bytes\n"
        );
    }
}
