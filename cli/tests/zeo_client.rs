//! Every `zodbrs` command over ZEO, against Python's `runzeo` and against
//! `zodbrs serve`, each serving a database written by real ZODB:
//!
//! - `dump`, `analyze`, `catobj`, `info`, `bigfile cat` of `zeo://…` print
//!   what they print for the served file, and `dump`/`info` what Python's
//!   zodbtools prints on a `ClientStorage` of the same server;
//! - `copy zeo://… out.fs` is the served file byte for byte; `copy FILE
//!   zeo://…` and `restore zeo://…` write, through the server, the file a
//!   local copy/restore writes, which Python's zodbtools reads back;
//!   `array import zeo://…` then `array export` give the `.npy` back;
//! - a Python `ClientStorage` and our client on one server see each
//!   other's commits and each other's conflicts (typed on both sides);
//! - the server killed mid-load and restarted on the same port: the
//!   client reconnects, loads answer the file's data, a transaction in
//!   progress fails without committing anything, and objects changed
//!   while the client was away are not served from its cache.
//!
//! Without Python the `runzeo` half skips with a notice (under `CI=true`
//! it fails instead).

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use filestorage::FileStorage;
use zeo_proto::client_storage::{Address, ClientOptions, ZeoClient};
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TxnMeta, WriteStorage};
use zodb_it::zeo::{ServerKind, ServerOptions, ZeoServer};

fn zodbrs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zodbrs"))
}

fn zodbrs(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(zodbrs_bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zodbrs");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> Vec<u8> {
    ok_in(args, None)
}

fn ok_in(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = zodbrs(args, stdin);
    assert!(
        out.status.success(),
        "zodbrs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn history_db() -> PathBuf {
    zodb_it::project_fixtures().join("history/Data.fs")
}

/// Both servers, each on a copy of `db` (`None`: an empty database); the
/// runzeo one is missing (with a notice) when there is no Python.
fn servers(db: Option<&Path>, opts: &ServerOptions) -> Vec<ZeoServer> {
    [ServerKind::RunZeo, ServerKind::Zodbrs(zodbrs_bin())]
        .into_iter()
        .filter_map(|k| ZeoServer::start(k, db, opts))
        .collect()
}

fn client(server: &ZeoServer) -> ZeoClient {
    ZeoClient::connect(
        Address::tcp("127.0.0.1", server.port()),
        ClientOptions {
            wait_timeout: Duration::from_secs(5),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn read_tools_over_zeo_print_what_they_print_for_the_file() {
    let db = history_db();
    let file = db.to_str().unwrap();
    for server in servers(Some(&db), &Default::default()) {
        let url = server.url();
        let kind = format!("{:?}", server.kind());
        for args in [
            &["dump"][..],
            &["dump", "--hashonly"],
            &["dump", "--pretty=zpickledis"],
            &["dump", "03f6d9f708f5c288..03f6da45203c12ee"],
            &["analyze"],
            &["analyze", "--csv"],
            &[
                "catobj",
                "0000000000000000",
                "0000000000000000@03f6d9f708f5c288",
            ],
            &["info", "size", "head"],
        ] {
            let mut a = args.to_vec();
            let mut b = args.to_vec();
            // The tidrange, if any, goes after the database.
            let range = (a.len() == 2 && a[1].contains("..")).then(|| a.pop().unwrap());
            b.truncate(a.len());
            if args[0] == "catobj" || args[0] == "info" {
                a.insert(1, &url);
                b.insert(1, file);
            } else {
                a.push(&url);
                b.push(file);
                if let Some(r) = range {
                    a.push(r);
                    b.push(r);
                }
            }
            let over_zeo = ok(&a);
            let local = ok(&b);
            assert!(!local.is_empty(), "{b:?}");
            zodb_it::assert_text_eq(&local, &over_zeo, &format!("{kind}: {a:?}"));
        }
        let name = String::from_utf8(ok(&["info", &url, "name"])).unwrap();
        assert_eq!(
            name,
            format!("('127.0.0.1', {}) (connected)\n", server.port()),
            "{kind}"
        );
        // The tools that read the file format refuse a server, naming it.
        for tool in ["fsdump", "fstail", "fstest", "fsrefs", "reindex"] {
            let out = zodbrs(&[tool, &url], None);
            assert!(!out.status.success(), "{tool}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("{tool} reads the Data.fs format itself"))
                    && err.contains(&url),
                "{tool}: {err}"
            );
        }
    }
}

#[test]
fn unix_sockets_and_msgpack() {
    let db = history_db();
    let file = db.to_str().unwrap();
    let unix = ServerOptions {
        unix_socket: true,
        ..Default::default()
    };
    let want = ok(&["dump", "--hashonly", file]);
    for server in servers(Some(&db), &unix) {
        let url = server.url();
        assert!(url.starts_with("zeo:///"), "{url}");
        let got = ok(&["dump", "--hashonly", &url]);
        zodb_it::assert_text_eq(&want, &got, &format!("{:?} over {url}", server.kind()));
    }
    // M5. Not `dump`: runzeo cannot msgpack some of this history's
    // transaction extensions ("Couldn't pickle response" to iterator_next).
    let msgpack = ServerOptions {
        msgpack: true,
        ..Default::default()
    };
    let args = |db: &str| {
        [
            "catobj".to_owned(),
            db.to_owned(),
            "0000000000000000".to_owned(),
            "0000000000000000@03f6d9f708f5c288".to_owned(),
        ]
    };
    let want = ok(&args(file).each_ref().map(String::as_str));
    for server in servers(Some(&db), &msgpack) {
        let url = server.url();
        let got = ok(&args(&url).each_ref().map(String::as_str));
        assert!(got == want, "{:?} over M5: catobj differs", server.kind());
    }
}

#[test]
fn bad_urls_are_refused_naming_the_part() {
    let out = zodbrs(&["dump", "zeo://127.0.0.1:1?sotrage=1"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key \"sotrage\""), "{err}");
    let port = zodb_it::zeo::free_port();
    let out = zodbrs(&["info", &format!("zeo://127.0.0.1:{port}")], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn bigfile_cat_over_zeo() {
    let Some(shared) = zodb_it::shared_fixtures() else {
        return;
    };
    let db = shared.join("wendelin/py3_pickle3/zblk.fs");
    let want = ok(&["bigfile", "cat", db.to_str().unwrap(), "1"]);
    for server in servers(Some(&db), &Default::default()) {
        let got = ok(&["bigfile", "cat", &server.url(), "1"]);
        assert!(got == want, "{:?}: bigfile cat differs", server.kind());
    }
}

#[test]
fn copy_from_zeo_is_the_served_file_byte_for_byte() {
    let db = history_db();
    let want = std::fs::read(&db).unwrap();
    for server in servers(Some(&db), &Default::default()) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.fs");
        ok(&["copy", &server.url(), out.to_str().unwrap()]);
        let got = std::fs::read(&out).unwrap();
        assert!(
            got == want,
            "{:?}: copy differs from the served file ({} vs {} bytes)",
            server.kind(),
            got.len(),
            want.len()
        );
        // Over an existing database only with --force.
        let again = zodbrs(&["copy", &server.url(), out.to_str().unwrap()], None);
        assert!(!again.status.success());
    }
}

#[test]
fn copy_and_restore_into_zeo_write_what_python_reads() {
    let db = history_db();
    let want = std::fs::read(&db).unwrap();
    let dump = ok(&["dump", db.to_str().unwrap()]);
    // What a local restore of the dump writes.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("restored.fs");
    ok_in(&["restore", local.to_str().unwrap()], Some(&dump));
    let restored = std::fs::read(&local).unwrap();
    for mut server in servers(None, &Default::default()) {
        let kind = format!("{:?}", server.kind());
        ok(&["copy", db.to_str().unwrap(), &server.url()]);
        // The server's storage is no longer empty: a second copy is refused.
        let again = zodbrs(&["copy", db.to_str().unwrap(), &server.url()], None);
        assert!(!again.status.success(), "{kind}");
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already holds transactions"),
            "{kind}"
        );
        // zeo → zeo, and restore, into a second server.
        let mut second = ZeoServer::start(server.kind().clone(), None, &Default::default())
            .expect("started once already");
        ok(&["copy", &server.url(), &second.url()]);
        server.stop();
        let got = std::fs::read(server.db_path()).unwrap();
        assert!(
            got == want,
            "{kind}: file → zeo copy differs from the source"
        );
        second.stop();
        let got = std::fs::read(second.db_path()).unwrap();
        assert!(
            got == want,
            "{kind}: zeo → zeo copy differs from the source"
        );

        let mut third = ZeoServer::start(server.kind().clone(), None, &Default::default())
            .expect("started once already");
        let tids = ok_in(&["restore", &third.url()], Some(&dump));
        assert_eq!(
            String::from_utf8(tids).unwrap().lines().count(),
            241,
            "{kind}"
        );
        third.stop();
        let got = std::fs::read(third.db_path()).unwrap();
        assert!(
            got == restored,
            "{kind}: restore through zeo differs from a local restore"
        );
        // Python reads it back: zodbtools' dump of the served file is the
        // dump we restored from.
        if zodb_it::python().is_some() {
            let theirs = zodb_it::reftool(["zdump".as_ref(), third.db_path().as_os_str()]);
            zodb_it::assert_text_eq(&dump, &theirs.stdout, &format!("{kind}: Python zdump"));
        }
    }
}

#[test]
fn array_import_through_zeo_exports_the_same_npy() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("a.npy");
    // An int32 C-order (300, 70) array, as np.save writes it.
    let mut bytes = zblk::npy::header(&zblk::array::NpyHeader {
        descr: zblk::npy::parse_descr("'<i4'").unwrap(),
        fortran_order: false,
        shape: vec![300, 70],
    });
    for i in 0..300u32 * 70 {
        let v = if i % 1000 < 300 {
            0
        } else {
            i.wrapping_mul(2_654_435_761)
        };
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(&npy, &bytes).unwrap();
    for mut server in servers(None, &Default::default()) {
        let kind = format!("{:?}", server.kind());
        let report = ok(&[
            "array",
            "import",
            "--key",
            "a",
            "--blksize",
            "8192",
            "--txn-mib",
            "1",
            npy.to_str().unwrap(),
            &server.url(),
        ]);
        let report = String::from_utf8(report).unwrap();
        let at = report.find("ZBigArray ").unwrap() + "ZBigArray ".len();
        let oid = report[at..at + 16].to_owned();
        let back = dir.path().join("back.npy");
        ok(&[
            "array",
            "export",
            &server.url(),
            &oid,
            back.to_str().unwrap(),
        ]);
        assert!(
            std::fs::read(&back).unwrap() == bytes,
            "{kind}: export over zeo"
        );
        let info_zeo = String::from_utf8(ok(&["array", "info", &server.url(), &oid])).unwrap();
        assert!(info_zeo.contains("ZBlk1 0"), "{kind}: {info_zeo}");
        // Convert its blocks through the server too; the bytes stay.
        ok(&["zblk", "convert", "--to", "ZBlk1", &server.url(), &oid]);
        server.stop();
        let file = server.db_path().to_str().unwrap().to_owned();
        ok(&["array", "export", &file, &oid, back.to_str().unwrap()]);
        assert!(
            std::fs::read(&back).unwrap() == bytes,
            "{kind}: export from the file"
        );
        let info_file = String::from_utf8(ok(&["array", "info", &file, &oid])).unwrap();
        assert!(info_file.contains("ZBlk0 0"), "{kind}: {info_file}");
        if zodb_it::python().is_some() {
            // Python reads every object revision the server wrote.
            let all = zodb_it::reftool(["readall".as_ref(), server.db_path().as_os_str()]);
            assert!(
                !String::from_utf8_lossy(&all.stdout).contains("\"error\""),
                "{kind}: Python failed to read some record"
            );
        }
    }
}

/// A Python `ClientStorage` driven line by line: `load OID`, `store OID
/// SERIAL DATA`, `sync`; answers one line each.
struct PyClient {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

const PY_CLIENT: &str = r#"
import sys
from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.POSException import ConflictError
s = ClientStorage(('127.0.0.1', int(sys.argv[1])), server_sync=True, wait_timeout=30)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == 'sync':
        s.sync()
        out = s.lastTransaction().hex()
    elif cmd == 'load':
        data, serial = s.load(bytes.fromhex(args[0]))
        out = serial.hex() + ' ' + data.hex()
    elif cmd == 'store':
        t = TransactionMetaData(description='python')
        s.tpc_begin(t)
        s.store(bytes.fromhex(args[0]), bytes.fromhex(args[1]), bytes.fromhex(args[2]), '', t)
        try:
            s.tpc_vote(t)
            out = 'ok ' + s.tpc_finish(t).hex()
        except ConflictError as e:
            s.tpc_abort(t)
            out = 'conflict %s %s %s' % (type(e).__name__, e.serials[0].hex(), e.serials[1].hex())
    print(out, flush=True)
s.close()
"#;

impl PyClient {
    fn start(py: &Path, port: u16) -> PyClient {
        let mut child = Command::new(py)
            .args(["-c", PY_CLIENT, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        PyClient {
            child,
            input,
            output,
        }
    }

    fn ask(&mut self, line: &str) -> Vec<String> {
        writeln!(self.input, "{line}").unwrap();
        self.input.flush().unwrap();
        let mut answer = String::new();
        self.output.read_line(&mut answer).unwrap();
        assert!(!answer.is_empty(), "Python client died at {line:?}");
        answer.split_whitespace().map(str::to_owned).collect()
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tid(hex: &str) -> Tid {
    hex.parse().unwrap()
}

fn commit(zeo: &ZeoClient, oid: Oid, serial: Tid, data: Bytes) -> Result<Tid, StorageError> {
    let mut txn = zeo.tpc_begin(TxnMeta::default())?;
    txn.store(oid, serial, data)?;
    txn.vote()?;
    txn.finish()
}

/// Waits until the client has seen transaction `t` (its invalidation).
fn wait_for(zeo: &ZeoClient, t: Tid) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while zeo.last_transaction() < t {
        assert!(Instant::now() < deadline, "invalidation for {t} never came");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn python_client_and_ours_see_each_others_commits_and_conflicts() {
    let Some(py) = zodb_it::python() else {
        return;
    };
    let db = history_db();
    for server in servers(Some(&db), &Default::default()) {
        let kind = format!("{:?}", server.kind());
        let zeo = client(&server);
        let mut python = PyClient::start(&py, server.port());
        let (root, s0) = zeo.load(Oid::ROOT).unwrap();
        let root_hex = hex::encode(&root);

        // Ours commits; Python sees it.
        let t1 = commit(&zeo, Oid::ROOT, s0, root.clone()).unwrap();
        let synced = python.ask("sync");
        assert_eq!(tid(&synced[0]), t1, "{kind}");
        let loaded = python.ask("load 0000000000000000");
        assert_eq!(loaded, [t1.to_string(), root_hex.clone()], "{kind}");

        // Python commits; ours sees it (its cached root is invalidated).
        // The same state again: the serials are what matters.
        let changed = root.clone();
        let answer = python.ask(&format!(
            "store 0000000000000000 {t1} {}",
            hex::encode(&changed)
        ));
        assert_eq!(answer[0], "ok", "{kind}: {answer:?}");
        let t2 = tid(&answer[1]);
        assert!(t2 > t1, "{kind}");
        wait_for(&zeo, t2);
        assert_eq!(
            zeo.load(Oid::ROOT).unwrap(),
            (changed.clone(), t2),
            "{kind}"
        );

        // Ours writes on top of the stale t1: a typed conflict.
        match commit(&zeo, Oid::ROOT, t1, root.clone()) {
            Err(StorageError::Conflict {
                oid,
                committed,
                old,
            }) => {
                assert_eq!((oid, committed, old), (Oid::ROOT, t2, t1), "{kind}");
            }
            other => panic!("{kind}: expected a conflict, got {other:?}"),
        }
        // Python writes on top of the stale s0: a ConflictError there too.
        let answer = python.ask(&format!("store 0000000000000000 {s0} {root_hex}"));
        assert_eq!(
            answer,
            [
                "conflict",
                "ConflictError",
                &t2.to_string(),
                &s0.to_string()
            ],
            "{kind}"
        );
        // Nothing of the failed attempts was committed.
        assert_eq!(zeo.server_last_transaction().unwrap(), t2, "{kind}");
        assert_eq!(tid(&python.ask("sync")[0]), t2, "{kind}");
        // And ours can commit again after its conflict.
        let t3 = commit(&zeo, Oid::ROOT, t2, root.clone()).unwrap();
        assert_eq!(
            python.ask("load 0000000000000000")[0],
            t3.to_string(),
            "{kind}"
        );
    }
}

#[test]
fn server_killed_mid_load_and_restarted_on_the_same_port() {
    let db = history_db();
    let fs = FileStorage::open_read_only(&db).unwrap();
    // The objects that exist (some of the history's were deleted).
    let (oids, want): (Vec<Oid>, Vec<(Bytes, Tid)>) = fs
        .oids()
        .into_iter()
        .filter_map(|(o, _)| Some((o, fs.load(o).ok()?)))
        .unzip();
    for mut server in servers(Some(&db), &Default::default()) {
        let kind = format!("{:?}", server.kind());
        let zeo = std::sync::Arc::new(client(&server));
        // Half of the objects in the cache before the crash.
        for (i, &o) in oids.iter().enumerate().step_by(2) {
            assert_eq!(zeo.load(o).unwrap(), want[i], "{kind}");
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Another client without a cache keeps loads in flight at the server.
        let uncached = ZeoClient::connect(
            Address::tcp("127.0.0.1", server.port()),
            ClientOptions {
                cache_size: 0,
                min_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let loader = {
            let (zeo, stop, oids, want, kind) = (
                uncached,
                stop.clone(),
                oids.clone(),
                want.clone(),
                kind.clone(),
            );
            std::thread::spawn(move || {
                let (mut good, mut failed, mut good_after) = (0u64, 0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let pending: Vec<_> = oids
                        .iter()
                        .map(|&o| zeo.start_load_before(o, Tid::MAX))
                        .collect();
                    for (i, p) in pending.into_iter().enumerate() {
                        match p.and_then(|p| p.wait()) {
                            Ok(Some(rev)) => {
                                // One object gets a new revision (same
                                // data) while the server is down.
                                assert_eq!(rev.data, want[i].0, "{kind}");
                                assert!(rev.serial >= want[i].1, "{kind}");
                                good += 1;
                                if failed > 0 {
                                    good_after += 1;
                                }
                            }
                            Ok(None) => panic!("{kind}: {} vanished", oids[i]),
                            Err(StorageError::Backend(e)) => {
                                let e = e.to_string();
                                assert!(
                                    e.contains("connection") || e.contains("connected"),
                                    "{kind}: {e}"
                                );
                                failed += 1;
                            }
                            Err(e) => panic!("{kind}: {e}"),
                        }
                    }
                }
                (good, failed, good_after)
            })
        };
        // A transaction in progress when the server dies fails cleanly.
        let (root, serial) = zeo.load(Oid::ROOT).unwrap();
        let mut txn = zeo.tpc_begin(TxnMeta::default()).unwrap();
        txn.store(Oid::ROOT, serial, root.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        server.kill();
        let outcome = txn.vote().and_then(|_| txn.finish());
        assert!(outcome.is_err(), "{kind}: committed with the server down");
        std::thread::sleep(Duration::from_millis(200));

        // While the client is away, the file changes under it: one object
        // it has cached gets a new revision.
        let cached = oids[2];
        let changed = {
            let w = FileStorage::open(server.db_path(), &filestorage::OpenOptions::read_write())
                .unwrap();
            let (data, s) = w.load(cached).unwrap();
            let mut txn = w.tpc_begin(TxnMeta::default()).unwrap();
            txn.store(cached, s, data.clone()).unwrap();
            txn.vote().unwrap();
            (data, txn.finish().unwrap())
        };
        server.restart();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (good, failed, good_after) = loader.join().unwrap();
        eprintln!(
            "{kind}: {good} loads answered ({good_after} after the crash), {failed} failed with the connection"
        );
        // Loads in flight at the crash fail (never with wrong data); those
        // sent after it wait for the new connection.
        assert!(good > 0 && (failed == 0 || good_after > 0), "{kind}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !zeo.is_connected() {
            assert!(Instant::now() < deadline, "{kind}: never reconnected");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(zeo.connection_count() >= 2, "{kind}");
        // The cache was verified: the changed object is loaded anew, the
        // rest is what the file holds.
        assert_eq!(zeo.last_transaction(), changed.1, "{kind}");
        assert_eq!(zeo.load(cached).unwrap(), changed, "{kind}");
        for (i, &o) in oids.iter().enumerate() {
            if o != cached {
                assert_eq!(zeo.load(o).unwrap(), want[i], "{kind}: {o}");
            }
        }
        // The failed transaction left nothing; a new one commits.
        assert_eq!(zeo.server_last_transaction().unwrap(), changed.1, "{kind}");
        let t = commit(&zeo, Oid::ROOT, serial, root).unwrap();
        assert!(t > changed.1, "{kind}");
    }
}

/// A `PersistentMapping` record with no references (`{'data': {}}`).
const EMPTY_MAPPING: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03s.";

#[test]
fn pack_over_zeo_asks_the_server() {
    for mut server in servers(None, &Default::default()) {
        let kind = format!("{:?}", server.kind());
        {
            let zeo = client(&server);
            let mut serial = Tid::ZERO;
            for _ in 0..5 {
                serial =
                    commit(&zeo, Oid::ROOT, serial, Bytes::from_static(EMPTY_MAPPING)).unwrap();
            }
        }
        let before = std::fs::metadata(server.db_path()).unwrap().len();
        let refused = zodbrs(&["pack", "--no-gc", &server.url()], None);
        assert!(!refused.status.success(), "{kind}");
        let out = String::from_utf8(ok(&["pack", &server.url()])).unwrap();
        assert!(out.contains("packed to"), "{kind}: {out}");
        server.stop();
        let after = std::fs::metadata(server.db_path()).unwrap().len();
        assert!(after < before, "{kind}: {after} >= {before}");
        let fs = FileStorage::open_read_only(server.db_path()).unwrap();
        assert_eq!(fs.history(Oid::ROOT, 10).unwrap().len(), 1, "{kind}");
    }
}

#[test]
fn network_cut_mid_transaction_commits_nothing() {
    let db = history_db();
    for server in servers(Some(&db), &Default::default()) {
        let kind = format!("{:?}", server.kind());
        let zeo = client(&server);
        let last = zeo.server_last_transaction().unwrap();
        let (root, serial) = zeo.load(Oid::ROOT).unwrap();
        // Cut before the vote: the server aborts the transaction.
        let mut txn = zeo.tpc_begin(TxnMeta::default()).unwrap();
        txn.store(Oid::ROOT, serial, root.clone()).unwrap();
        zeo.drop_connection();
        let outcome = txn.vote().and_then(|_| txn.finish());
        match outcome {
            Err(StorageError::Backend(e)) => {
                let e = e.to_string();
                assert!(e.contains("lost"), "{kind}: {e}");
            }
            other => panic!("{kind}: {other:?}"),
        }
        // The client reconnects by itself; nothing was committed, and the
        // same change commits on the new connection.
        assert_eq!(zeo.server_last_transaction().unwrap(), last, "{kind}");
        assert!(zeo.connection_count() >= 2, "{kind}");
        assert_eq!(
            zeo.load(Oid::ROOT).unwrap(),
            (root.clone(), serial),
            "{kind}"
        );
        let t = commit(&zeo, Oid::ROOT, serial, root).unwrap();
        assert!(t > last, "{kind}");
        assert_eq!(zeo.server_last_transaction().unwrap(), t, "{kind}");
    }
}

/// zodbtools' `dump` and `info` run by Python on a `ClientStorage`.
const PY_ZODBTOOLS: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
import reftool
reftool.prepare_zodbtools()
from ZEO.ClientStorage import ClientStorage
from zodbtools.zodbdump import zodbdump
from zodbtools.zodbinfo import zodbinfo
s = ClientStorage(('127.0.0.1', int(sys.argv[2])), read_only=True)
if sys.argv[3] == 'dump':
    zodbdump(s, None, None, out=sys.stdout.buffer)
else:
    zodbinfo(s, [])
s.close()
"#;

#[test]
fn zodbtools_over_client_storage_prints_what_we_print_over_zeo() {
    let Some(py) = zodb_it::python() else {
        return;
    };
    let tools = zodb_it::workspace_root().join("tests/py");
    let db = history_db();
    for server in servers(Some(&db), &Default::default()) {
        let kind = format!("{:?}", server.kind());
        for what in ["dump", "info"] {
            let theirs = Command::new(&py)
                .args(["-c", PY_ZODBTOOLS])
                .arg(&tools)
                .args([&server.port().to_string(), what])
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .output()
                .unwrap();
            assert!(
                theirs.status.success(),
                "{kind}: Python {what}: {}",
                String::from_utf8_lossy(&theirs.stderr)
            );
            let ours = ok(&[what, &server.url()]);
            zodb_it::assert_text_eq(&theirs.stdout, &ours, &format!("{kind}: {what}"));
        }
    }
}

#[test]
fn server_killed_mid_vote_commits_nothing() {
    let db = history_db();
    for mut server in servers(Some(&db), &Default::default()) {
        let kind = format!("{:?}", server.kind());
        let a = client(&server);
        let b = std::sync::Arc::new(client(&server));
        let last = a.server_last_transaction().unwrap();
        let (root, serial) = a.load(Oid::ROOT).unwrap();
        // A votes and holds the commit lock (its transaction is written
        // to the file, not yet committed).
        let mut ta = a.tpc_begin(TxnMeta::default()).unwrap();
        ta.store(Oid::ROOT, serial, root.clone()).unwrap();
        ta.vote().unwrap();
        // B's vote waits for the lock at the server.
        let voter = {
            let (b, root) = (b.clone(), root.clone());
            std::thread::spawn(move || {
                let mut tb = b.tpc_begin(TxnMeta::default())?;
                tb.store(Oid(1), Tid::ZERO, root)?;
                tb.vote()?;
                tb.finish()
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        assert!(!voter.is_finished(), "{kind}: B's vote did not wait");
        server.kill();
        assert!(voter.join().unwrap().is_err(), "{kind}: B committed");
        assert!(ta.finish().is_err(), "{kind}: A committed");
        server.restart();
        // Neither transaction is in the database, for the clients
        // (reconnected) nor in the file. (The server's lastTransaction may
        // be A's tid: ZODB's FileStorage reports the tid of a voted tail
        // it cut at open.)
        let one = FileStorage::open_read_only(&db)
            .unwrap()
            .load(Oid(1))
            .unwrap();
        assert_eq!(a.load(Oid::ROOT).unwrap(), (root.clone(), serial), "{kind}");
        assert_eq!(b.load(Oid(1)).unwrap(), one, "{kind}");
        server.stop();
        let fs = FileStorage::open_read_only(server.db_path()).unwrap();
        assert_eq!(fs.last_transaction(), last, "{kind}");
        assert_eq!(
            std::fs::read(server.db_path()).unwrap().len(),
            std::fs::read(&db).unwrap().len(),
            "{kind}: the voted tail was not cut"
        );
    }
}
