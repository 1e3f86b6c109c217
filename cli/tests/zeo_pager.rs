//! The pager over ZEO, against `zodbrs serve` and Python's `runzeo`:
//! `demo gen` and `demo read` through a server give what they give on
//! the file; two pagers on one server (two client connections, as two
//! cluster nodes) each keep their snapshot until their next transaction
//! boundary, then see the other's committed blocks and shape; both
//! changing the same block gives exactly one conflict.
//!
//! Needs userfaultfd (skipped with a notice without it; CI runs as root);
//! without Python the `runzeo` half skips with a notice (under `CI=true`
//! it fails instead).

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pager::Options;
use zblk::paged::{PagedArray, PagedError, PagedOptions};
use zblk::write::WriteFormat;
use zodb_core::{TxnMeta, WriteStorage};
use zodb_it::zeo::{ServerKind, ServerOptions, ZeoServer};
use zodbrs::storage_url;

mod run;
use run::text as zodbrs;

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{out}"))
}

fn servers() -> Vec<ZeoServer> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_zodbrs"));
    [ServerKind::Zodbrs(bin), ServerKind::RunZeo]
        .into_iter()
        .filter_map(|k| ZeoServer::start(k, None, &ServerOptions::default()))
        .collect()
}

fn opts() -> PagedOptions {
    PagedOptions {
        pager: Options::with_budget(16 << 20),
        reserve: 1 << 30,
        format: WriteFormat::Auto,
    }
}

fn open(url: &str) -> PagedArray<dyn WriteStorage> {
    let s = storage_url::open_write(url, false).unwrap();
    let oid = zodbrs::tools::demo::root_array(&*s).unwrap();
    PagedArray::open(s, oid, opts()).unwrap()
}

/// Moves `a` to new snapshots until `ok` holds (an invalidation travels
/// from the server on its own; ZEO promises order, not arrival time).
fn sync_until(
    a: &mut PagedArray<dyn WriteStorage>,
    ok: impl Fn(&PagedArray<dyn WriteStorage>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        a.sync().unwrap();
        if ok(a) {
            return;
        }
        assert!(Instant::now() < deadline, "the other commit never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pagers_on_one_server_keep_snapshots_and_conflict_once() {
    if let Err(e) = pager::probe() {
        eprintln!("SKIP pagers_on_one_server_keep_snapshots_and_conflict_once: {e}");
        return;
    }
    for mut server in servers() {
        let url = server.url();
        let what = format!("{:?}", server.kind());
        // The demo through the server, then the same read on a copy of
        // the served file.
        zodbrs(&["demo", "gen", "--worksize", "8", "--budget", "16", &url]);
        let over_zeo = zodbrs(&["demo", "read", "--budget", "16", &url]);
        let copy = server.dir().join("copy.fs");
        zodbrs(&["copy", &url, copy.to_str().unwrap()]);
        let on_file = zodbrs(&["demo", "read", "--budget", "16", copy.to_str().unwrap()]);
        for p in ["sig:", "<sig>:", "S(sig):"] {
            assert_eq!(line(&over_zeo, p), line(&on_file, p), "{what}: {p}");
        }

        let mut a = open(&url);
        let mut b = open(&url);
        let n = a.shape()[0];
        let old0 = b.view::<f64>().unwrap()[[0]];
        // a commits block 0 and an append; b keeps its snapshot.
        a.view_major_mut::<f64>(0..10).unwrap().array().fill(100.0);
        a.append(&[7.0; 1000]).unwrap();
        a.commit(TxnMeta::default()).unwrap();
        assert_eq!(b.shape(), &[n], "{what}");
        assert_eq!(b.view::<f64>().unwrap()[[0]], old0, "{what}");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            b.view::<f64>().unwrap()[[0]],
            old0,
            "{what}: snapshot moved by itself"
        );
        sync_until(&mut b, |b| b.shape() == [n + 1000]);
        assert_eq!(b.view::<f64>().unwrap()[[0]], 100.0, "{what}");
        assert_eq!(b.view::<f64>().unwrap()[[n as usize + 999]], 7.0, "{what}");

        // Both change block 1 in concurrent transactions: one conflict.
        let at = (3 << 20) / 8; // inside the second 2 MiB block
        a.view_mut::<f64>().unwrap().array()[[at]] = 1.0;
        b.view_mut::<f64>().unwrap().array()[[at]] = 2.0;
        let ra = a.commit(TxnMeta::default());
        let rb = b.commit(TxnMeta::default());
        let conflicts = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(PagedError::Pager(pager::Error::Conflict { .. }))))
            .count();
        assert!(ra.is_ok(), "{what}: the first commit: {ra:?}");
        assert_eq!(conflicts, 1, "{what}: {ra:?} / {rb:?}");
        b.abort().unwrap();
        sync_until(&mut b, |b| b.view::<f64>().unwrap()[[at]] == 1.0);
        drop((a, b));
        server.stop();
    }
}
