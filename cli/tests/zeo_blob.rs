//! Blobs through our ZEO client, against Python's `runzeo` and `zodbrs
//! serve`, each serving a FileStorage inside a `<blobstorage>`:
//!
//! - a blob stored by our client (several MiB: many 59000-byte chunks)
//!   reads back equal through another client with an empty cache, lands in
//!   the server's bushy blob directory, and a Python `ClientStorage` reads
//!   it as a `ZODB.blob.Blob` equal;
//! - a `ZODB.blob.Blob` committed by Python reads back equal through ours;
//! - `load_blob` of a revision without a blob is `NoBlob` (POSKeyError);
//!   a client without a blob cache, or a server without blobs, says blobs
//!   are unsupported; aborted transactions leave no files behind;
//! - with `blob_cache_size`, a client that loads far more than that ends
//!   with its cache under the target, every load right; its checker and
//!   Python's take turns on one cache (`check_size.lock`), and Python's
//!   checker prunes our cache;
//! - with `shared_blob_dir`, our client and Python's, both on the
//!   server's own blob directory, read each other's blobs there, and no
//!   blob travels over the connection (a proxy sees no `sendBlob` or
//!   `storeBlobStart`/`Chunk`, only `storeBlobShared`).
//!
//! Without Python the `runzeo` half and the Python steps skip with a
//! notice (under `CI=true` they fail instead).

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeo_proto::client_storage::{Address, ClientOptions, ZeoClient};
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TxnMeta, WriteStorage};
use zodb_it::zeo::{Cut, CutProxy, ServerKind, ServerOptions, ZeoServer};

fn zodbrs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zodbrs"))
}

fn blob_servers() -> Vec<ZeoServer> {
    let opts = ServerOptions {
        blobs: true,
        ..ServerOptions::default()
    };
    [ServerKind::RunZeo, ServerKind::Zodbrs(zodbrs_bin())]
        .into_iter()
        .filter_map(|k| ZeoServer::start(k, None, &opts))
        .collect()
}

fn client(server: &ZeoServer, blob_dir: Option<&Path>) -> ZeoClient {
    client_at(server.port(), blob_dir)
}

fn client_at(port: u16, blob_dir: Option<&Path>) -> ZeoClient {
    client_with(
        port,
        ClientOptions {
            blob_dir: blob_dir.map(Path::to_owned),
            ..ClientOptions::default()
        },
    )
}

/// A client of the server on `port` with `opts` (and the tests' short
/// timeouts).
fn client_with(port: u16, opts: ClientOptions) -> ZeoClient {
    ZeoClient::connect(
        Address::tcp("127.0.0.1", port),
        ClientOptions {
            wait_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..opts
        },
    )
    .unwrap()
}

/// `len` bytes that differ per `seed` and per position (no period a chunk
/// boundary could hide).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Files anywhere under `dir` (recursively) whose name ends in one of
/// `suffixes`.
fn files_ending(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_ending(&p, suffixes));
        } else if suffixes.iter().any(|s| p.to_string_lossy().ends_with(s)) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Stores `blob` (as a file in the client's temporary directory) as the
/// blob of `oid` with record `data`, and commits.
fn commit_blob(zeo: &ZeoClient, oid: Oid, serial: Tid, data: &Bytes, blob: &[u8]) -> Tid {
    let tmp = zeo.temporary_directory().unwrap();
    let file = tmp.join(format!("upload-{oid}.bin"));
    std::fs::write(&file, blob).unwrap();
    let mut txn = zeo.tpc_begin(TxnMeta::default()).unwrap();
    txn.store_blob(oid, serial, data.clone(), &file).unwrap();
    assert!(!file.exists(), "the storage takes the file");
    txn.vote().unwrap();
    txn.finish().unwrap()
}

/// Commits `blobs` as the blobs of new objects, in one transaction: their
/// oids, and the tid.
fn commit_many(zeo: &ZeoClient, blobs: &[Vec<u8>]) -> (Vec<Oid>, Tid) {
    let oids = zeo.new_oids(blobs.len()).unwrap();
    let tmp = zeo.temporary_directory().unwrap();
    let mut txn = zeo.tpc_begin(TxnMeta::default()).unwrap();
    for (oid, blob) in oids.iter().zip(blobs) {
        let file = tmp.join(format!("many-{oid}.bin"));
        std::fs::write(&file, blob).unwrap();
        txn.store_blob(*oid, Tid::ZERO, Bytes::from_static(b"r"), &file)
            .unwrap();
    }
    txn.vote().unwrap();
    (oids, txn.finish().unwrap())
}

/// The bytes of the `.blob` files under `dir`.
fn blob_bytes(dir: &Path) -> u64 {
    files_ending(dir, &[".blob"])
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Waits up to 30 s for `done`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a client cache in ZEO's `zeocache` layout keeps a blob.
fn cache_blob_path(cache: &Path, oid: Oid, tid: Tid) -> PathBuf {
    cache
        .join((oid.0 % 997).to_string())
        .join(format!("{}.{:016x}.blob", oid.0 / 997, tid.0))
}

/// The server's bushy path of a blob (ZODB's `BushyLayout`).
fn server_blob_path(server: &ZeoServer, oid: Oid, tid: Tid) -> PathBuf {
    let mut p = server.blob_dir();
    for b in oid.0.to_be_bytes() {
        p.push(format!("0x{b:02x}"));
    }
    let hex = format!("{:016x}", tid.0);
    let trimmed = hex.trim_start_matches("00");
    p.push(format!("0x{trimmed}.blob"));
    p
}

#[test]
fn blobs_round_trip_through_our_client() {
    for server in blob_servers() {
        let kind = format!("{:?}", server.kind());
        let cache_a = tempfile::tempdir().unwrap();
        let cache_b = tempfile::tempdir().unwrap();
        let a = client(&server, Some(cache_a.path()));
        assert!(a.supports_blobs(), "{kind}");
        let oid = a.new_oids(1).unwrap()[0];
        let record = Bytes::from_static(b"not a pickle: the storage does not look");
        // Several MiB and not a multiple of the 59000-byte chunk.
        let big = content(3 * 1024 * 1024 + 12345, 1);
        let t1 = commit_blob(&a, oid, Tid::ZERO, &record, &big);
        // The committer keeps its blob in its cache; the server has it in
        // its bushy directory.
        let cached = a.load_blob(oid, t1).unwrap();
        assert!(cached.starts_with(cache_a.path()), "{kind}: {cached:?}");
        assert_eq!(std::fs::read(&cached).unwrap(), big, "{kind}");
        assert_eq!(
            std::fs::read(server_blob_path(&server, oid, t1)).unwrap(),
            big,
            "{kind}: the server's blob file"
        );
        // Another client downloads it (sendBlob → receiveBlob*).
        let b = client(&server, Some(cache_b.path()));
        assert_eq!(b.load(oid).unwrap(), (record.clone(), t1), "{kind}");
        let got = b.load_blob(oid, t1).unwrap();
        assert!(got.starts_with(cache_b.path()), "{kind}: {got:?}");
        assert_eq!(std::fs::read(&got).unwrap(), big, "{kind}");
        assert!(
            std::fs::metadata(&got).unwrap().permissions().readonly(),
            "{kind}: cached blobs are read-only"
        );
        let mut opened = Vec::new();
        std::io::Read::read_to_end(&mut b.open_committed_blob(oid, t1).unwrap(), &mut opened)
            .unwrap();
        assert_eq!(opened, big, "{kind}");
        // A new revision is a new file; the old one stays readable.
        let small = content(100, 2);
        let t2 = commit_blob(&b, oid, t1, &record, &small);
        assert_eq!(std::fs::read(a.load_blob(oid, t2).unwrap()).unwrap(), small);
        assert_eq!(std::fs::read(a.load_blob(oid, t1).unwrap()).unwrap(), big);
        // An empty blob.
        let t3 = commit_blob(&a, oid, t2, &record, b"");
        assert_eq!(std::fs::read(b.load_blob(oid, t3).unwrap()).unwrap(), b"");
        // No blob for that revision: POSKeyError, typed; nothing left over.
        for (o, s) in [(oid, Tid(t3.0 + 1)), (Oid::ROOT, t1), (Oid(0x7777), t1)] {
            match b.load_blob(o, s) {
                Err(e @ StorageError::NoBlob { .. }) => {
                    assert!(e.is_pos_key_error(), "{kind}");
                }
                other => panic!("{kind}: load_blob({o}, {s}): {other:?}"),
            }
        }
        for cache in [cache_a.path(), cache_b.path()] {
            assert_eq!(
                files_ending(cache, &[".dl", ".tmp", ".bin"]),
                Vec::<PathBuf>::new(),
                "{kind}: temporary files left"
            );
        }
    }
}

#[test]
fn a_download_cut_midway_leaves_no_partial_file() {
    for server in blob_servers() {
        let kind = format!("{:?}", server.kind());
        let cache_a = tempfile::tempdir().unwrap();
        let a = client(&server, Some(cache_a.path()));
        let oid = a.new_oids(1).unwrap()[0];
        let big = content(3 * 1024 * 1024, 6);
        let t = commit_blob(&a, oid, Tid::ZERO, &Bytes::from_static(b"r"), &big);
        // B's connection is cut after 1 MiB from the server: a third of
        // the way through the blob's chunks.
        let proxy = CutProxy::start(server.port(), Cut::ServerBytes(1 << 20));
        let cache_b = tempfile::tempdir().unwrap();
        let b = client_at(proxy.port(), Some(cache_b.path()));
        let e = b.load_blob(oid, t).unwrap_err();
        assert!(proxy.fired(), "{kind}");
        assert!(
            matches!(&e, StorageError::Backend(inner) if inner.to_string().contains("lost")),
            "{kind}: {e}"
        );
        assert_eq!(
            files_ending(cache_b.path(), &[".dl", ".blob"]),
            Vec::<PathBuf>::new(),
            "{kind}: part of a blob left in the cache"
        );
        // Reconnected, the same call downloads the whole blob.
        let got = b.load_blob(oid, t).unwrap();
        assert!(std::fs::read(got).unwrap() == big, "{kind}");
        assert!(b.connection_count() >= 2, "{kind}");
    }
}

#[test]
fn concurrent_loads_and_msgpack() {
    let opts = ServerOptions {
        blobs: true,
        msgpack: true,
        ..ServerOptions::default()
    };
    for server in [ServerKind::RunZeo, ServerKind::Zodbrs(zodbrs_bin())]
        .into_iter()
        .filter_map(|k| ZeoServer::start(k, None, &opts))
    {
        let kind = format!("{:?} (msgpack)", server.kind());
        let cache_a = tempfile::tempdir().unwrap();
        let a = client(&server, Some(cache_a.path()));
        assert_eq!(
            a.encoding(),
            Some(zeo_proto::encoding::Encoding::Msgpack),
            "{kind}"
        );
        let oids = a.new_oids(3).unwrap();
        let blobs: Vec<Vec<u8>> = (0..3)
            .map(|i| content(300_000 + i, 10 + i as u64))
            .collect();
        let tids: Vec<Tid> = oids
            .iter()
            .zip(&blobs)
            .map(|(&oid, blob)| commit_blob(&a, oid, Tid::ZERO, &Bytes::from_static(b"r"), blob))
            .collect();
        // Eight threads of one fresh client load the three blobs at once:
        // each gets the whole file, downloaded once under the oid's lock.
        let cache_b = tempfile::tempdir().unwrap();
        let b = client(&server, Some(cache_b.path()));
        std::thread::scope(|s| {
            for n in 0..8 {
                let (b, oids, tids, blobs, kind) = (&b, &oids, &tids, &blobs, &kind);
                s.spawn(move || {
                    for i in 0..3 {
                        let i = (i + n) % 3;
                        let path = b.load_blob(oids[i], tids[i]).unwrap();
                        assert!(std::fs::read(path).unwrap() == blobs[i], "{kind}");
                    }
                });
            }
        });
        assert_eq!(files_ending(cache_b.path(), &[".blob"]).len(), 3, "{kind}");
        assert_eq!(
            files_ending(cache_b.path(), &[".dl"]),
            Vec::<PathBuf>::new(),
            "{kind}"
        );
    }
}

#[test]
fn aborted_blob_transactions_commit_nothing_and_leave_no_files() {
    for server in blob_servers() {
        let kind = format!("{:?}", server.kind());
        let cache = tempfile::tempdir().unwrap();
        let zeo = client(&server, Some(cache.path()));
        let last = zeo.server_last_transaction().unwrap();
        let oid = zeo.new_oids(1).unwrap()[0];
        let file = zeo.temporary_directory().unwrap().join("x.bin");
        for how in ["abort", "drop"] {
            std::fs::write(&file, content(200_000, 3)).unwrap();
            let mut txn = zeo.tpc_begin(TxnMeta::default()).unwrap();
            txn.store_blob(oid, Tid::ZERO, Bytes::from_static(b"r"), &file)
                .unwrap();
            if how == "abort" {
                txn.abort();
            } else {
                drop(txn);
            }
            assert_eq!(
                files_ending(cache.path(), &[".tmp", ".bin", ".blob"]),
                Vec::<PathBuf>::new(),
                "{kind} {how}"
            );
        }
        assert_eq!(zeo.server_last_transaction().unwrap(), last, "{kind}");
        assert!(matches!(
            zeo.load(oid),
            Err(StorageError::NoSuchObject { .. })
        ));
    }
}

#[test]
fn blobs_unsupported_is_a_typed_error() {
    let zodbrs = ServerKind::Zodbrs(zodbrs_bin());
    // No blob cache on the client: ZODB's Unsupported, the file untouched.
    let with_blobs = ZeoServer::start(
        zodbrs.clone(),
        None,
        &ServerOptions {
            blobs: true,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let zeo = client(&with_blobs, None);
    assert!(!zeo.supports_blobs());
    let e = zeo.load_blob(Oid::ROOT, Tid(1)).unwrap_err();
    assert!(matches!(e, StorageError::BlobsUnsupported { .. }), "{e}");
    assert!(e.to_string().contains("blob_dir"), "{e}");
    assert!(zeo.temporary_directory().is_err());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    std::fs::write(&file, b"x").unwrap();
    let mut txn = zeo.tpc_begin(TxnMeta::default()).unwrap();
    let e = txn
        .store_blob(Oid(1), Tid::ZERO, Bytes::from_static(b"r"), &file)
        .unwrap_err();
    assert!(matches!(e, StorageError::BlobsUnsupported { .. }), "{e}");
    assert!(file.exists());
    txn.abort();
    // A server whose storage keeps no blobs.
    let without = ZeoServer::start(zodbrs, None, &ServerOptions::default()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let zeo = client(&without, Some(cache.path()));
    assert!(!zeo.supports_blobs());
    let e = zeo.load_blob(Oid::ROOT, Tid(1)).unwrap_err();
    assert!(matches!(e, StorageError::BlobsUnsupported { .. }), "{e}");
    assert!(e.to_string().contains("blobstorage"), "{e}");
    // FileStorage has no blobs either.
    let fs_dir = tempfile::tempdir().unwrap();
    let fs = filestorage::FileStorage::open(
        fs_dir.path().join("Data.fs"),
        &filestorage::OpenOptions::read_write(),
    )
    .unwrap();
    assert!(matches!(
        fs.load_blob(Oid::ROOT, Tid(1)),
        Err(StorageError::BlobsUnsupported { .. })
    ));
}

/// Python's side: a `ZODB.DB` over a `ClientStorage` with its own blob
/// cache, or (`shared` 1) on the server's blob directory. `write SRC`:
/// `root['blob'] = Blob(SRC's bytes)`, commit, print the blob's oid and
/// serial. `read OUT`: write `root['blob']`'s bytes to OUT, print its
/// serial.
const PY_BLOBS: &str = r#"
import sys, transaction
from ZEO.ClientStorage import ClientStorage
from ZODB.DB import DB
from ZODB.blob import Blob
port, blobs, shared, mode, path = sys.argv[1:]
s = ClientStorage(('127.0.0.1', int(port)), blob_dir=blobs, shared_blob_dir=shared == '1', wait_timeout=30)
db = DB(s)
conn = db.open()
root = conn.root()
if mode == 'write':
    b = Blob()
    with b.open('w') as f:
        with open(path, 'rb') as src:
            f.write(src.read())
    root['blob'] = b
    transaction.commit()
    # The blob is a ghost again after the commit; its serial is the
    # commit's tid.
    print(b._p_oid.hex(), s.lastTransaction().hex())
else:
    b = root['blob']
    with b.open('r') as f:
        data = f.read()
    with open(path, 'wb') as out:
        out.write(data)
    print(b._p_serial.hex())
conn.close()
db.close()
"#;

/// Runs [`PY_BLOBS`] against the server on `port`, with `cache` as
/// Python's blob cache (a fresh one if `None`), or with `shared` as the
/// server's blob directory.
fn python_blobs(py: &Path, port: u16, blobs: PyBlobs<'_>, mode: &str, path: &Path) -> Vec<String> {
    let fresh = tempfile::tempdir().unwrap();
    let (dir, shared) = match blobs {
        PyBlobs::Cache(c) => (c.unwrap_or(fresh.path()), "0"),
        PyBlobs::Shared(d) => (d, "1"),
    };
    let out = Command::new(py)
        .args(["-c", PY_BLOBS])
        .arg(port.to_string())
        .arg(dir)
        .arg(shared)
        .arg(mode)
        .arg(path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Python {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Where Python's ClientStorage keeps blobs.
#[derive(Clone, Copy)]
enum PyBlobs<'a> {
    /// Its own cache (a fresh one if `None`).
    Cache(Option<&'a Path>),
    /// The server's blob directory (`shared_blob_dir=True`).
    Shared(&'a Path),
}

#[test]
fn python_client_storage_and_ours_read_each_others_blobs() {
    let Some(py) = zodb_it::python() else {
        return;
    };
    for server in blob_servers() {
        let kind = format!("{:?}", server.kind());
        let work = tempfile::tempdir().unwrap();
        // Python commits a ZODB.blob.Blob of several MiB; we read it.
        let theirs = content(2 * 1024 * 1024 + 777, 4);
        let src = work.path().join("theirs.bin");
        std::fs::write(&src, &theirs).unwrap();
        let answer = python_blobs(&py, server.port(), PyBlobs::Cache(None), "write", &src);
        let oid: Oid = answer[0].parse().unwrap();
        let serial: Tid = answer[1].parse().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let zeo = client(&server, Some(cache.path()));
        let (record, current) = zeo.load(oid).unwrap();
        assert_eq!(current, serial, "{kind}");
        let path = zeo.load_blob(oid, serial).unwrap();
        assert!(
            std::fs::read(&path).unwrap() == theirs,
            "{kind}: Python's blob read back different"
        );
        // We commit a new revision of that Blob (its record is the same
        // for every revision: the class and no state); Python's Blob reads
        // our bytes.
        let ours = content(3 * 1024 * 1024 + 1, 5);
        let t = commit_blob(&zeo, oid, serial, &record, &ours);
        let out = work.path().join("ours.bin");
        let answer = python_blobs(&py, server.port(), PyBlobs::Cache(None), "read", &out);
        assert_eq!(answer[0].parse::<Tid>().unwrap(), t, "{kind}");
        assert!(
            std::fs::read(&out).unwrap() == ours,
            "{kind}: Python read our blob different"
        );
        // Python's ClientStorage on our blob cache finds the blob we
        // committed where its zeocache layout puts it: it reads it without
        // downloading another copy.
        let before = files_ending(cache.path(), &[".blob"]);
        let out2 = work.path().join("shared.bin");
        python_blobs(
            &py,
            server.port(),
            PyBlobs::Cache(Some(cache.path())),
            "read",
            &out2,
        );
        assert!(std::fs::read(&out2).unwrap() == ours, "{kind}");
        assert_eq!(files_ending(cache.path(), &[".blob"]), before, "{kind}");
    }
}

/// Holds a blob cache's `check_size.lock` with zc.lockfile, as Python's
/// checker does while it works, until a line arrives on stdin; then runs
/// ZEO's own checker on the cache (`_check_blob_cache_size(cache,
/// target)`).
const PY_CHECKER: &str = r#"
import sys, time, zc.lockfile
from ZEO.ClientStorage import _check_blob_cache_size
cache, target = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 30
while True:
    try:
        lock = zc.lockfile.LockFile(cache + '/check_size.lock')
        break
    except zc.lockfile.LockError:
        # Our client's checker may still be at work.
        if time.time() > deadline:
            raise
        time.sleep(0.05)
print('locked', flush=True)
sys.stdin.readline()
lock.close()
_check_blob_cache_size(cache, target)
print('checked', flush=True)
"#;

/// Reads `blob` of `oid` at `tid` through `zeo`, by its path or opened
/// (`open`), and checks the bytes.
fn check_blob(zeo: &ZeoClient, oid: Oid, tid: Tid, blob: &[u8], open: bool, kind: &str) {
    let got = if open {
        let mut data = Vec::new();
        zeo.open_committed_blob(oid, tid)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        data
    } else {
        std::fs::read(zeo.load_blob(oid, tid).unwrap()).unwrap()
    };
    assert!(got == blob, "{kind}: blob of {oid} read back different");
}

#[test]
fn a_size_limited_blob_cache_stays_under_its_target() {
    let servers = blob_servers();
    let last = servers.len().saturating_sub(1);
    for (n, server) in servers.into_iter().enumerate() {
        let kind = format!("{:?}", server.kind());
        // 24 blobs of ~100 kB: 2.4 MB.
        let blobs: Vec<Vec<u8>> = (0..24)
            .map(|i| content(100_000 + i, 100 + i as u64))
            .collect();
        let (oids, tid) = {
            let cache_a = tempfile::tempdir().unwrap();
            commit_many(&client(&server, Some(cache_a.path())), &blobs)
        };
        // A 1 MB cache, checked each time 10 % of that came in: brought
        // down to 900 000 bytes.
        let cache = tempfile::tempdir().unwrap();
        let b = client_with(
            server.port(),
            ClientOptions {
                blob_dir: Some(cache.path().to_owned()),
                blob_cache_size: Some(1_000_000),
                ..ClientOptions::default()
            },
        );
        let target = 900_000;
        // Every blob twice (the second round downloads again what the
        // checker removed), by path and opened.
        for round in 0..2 {
            for (i, (&oid, blob)) in oids.iter().zip(&blobs).enumerate() {
                check_blob(&b, oid, tid, blob, (i + round) % 3 == 0, &kind);
            }
        }
        wait_until("the cache under its target", || {
            blob_bytes(cache.path()) <= target
        });
        // The most recently used stay: the last one loaded, and not more
        // than the target holds.
        assert!(
            cache_blob_path(cache.path(), oids[23], tid).exists(),
            "{kind}"
        );
        let kept = files_ending(cache.path(), &[".blob"]).len();
        assert!((1..=8).contains(&kept), "{kind}: {kept} blobs kept");
        assert_eq!(
            files_ending(cache.path(), &[".dl"]),
            Vec::<PathBuf>::new(),
            "{kind}"
        );

        // Python's checker on the same cache, once: ours and it take turns.
        if n != last {
            continue;
        }
        let Some(py) = zodb_it::python() else {
            return;
        };
        let mut python = Command::new(&py)
            .args(["-c", PY_CHECKER])
            .arg(cache.path())
            .arg("300000")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = std::io::BufReader::new(python.stdout.take().unwrap());
        let mut line = String::new();
        said.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "{kind}");
        // While Python holds check_size.lock ours removes nothing: it asks
        // Python to look again (check_size.attempt) instead.
        for (&oid, blob) in oids.iter().zip(&blobs) {
            check_blob(&b, oid, tid, blob, false, &kind);
        }
        let attempt = cache.path().join("check_size.attempt");
        wait_until("our checker to find Python's lock", || attempt.exists());
        assert!(
            blob_bytes(cache.path()) > 2_000_000,
            "{kind}: pruned under Python's lock"
        );
        // Python's checker then prunes our cache, and takes our request.
        python.stdin.take().unwrap().write_all(b"go\n").unwrap();
        line.clear();
        said.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "checked", "{kind}");
        assert!(python.wait().unwrap().success(), "{kind}");
        assert!(blob_bytes(cache.path()) <= 300_000, "{kind}");
        assert!(!attempt.exists(), "{kind}");
        // And every blob still reads right through ours.
        for (i, (&oid, blob)) in oids.iter().zip(&blobs).enumerate() {
            check_blob(&b, oid, tid, blob, i % 2 == 0, &kind);
        }
        wait_until("the cache under its target again", || {
            blob_bytes(cache.path()) <= target
        });
    }
}

#[test]
fn shared_blob_dir_reads_and_commits_in_the_servers_directory() {
    for server in blob_servers() {
        let kind = format!("{:?}", server.kind());
        let shared = server.blob_dir();
        // Every client goes through a proxy that notes what it calls.
        let proxy = CutProxy::start(server.port(), Cut::Never);
        let ours = client_with(
            proxy.port(),
            ClientOptions {
                blob_dir: Some(shared.clone()),
                shared_blob_dir: true,
                ..ClientOptions::default()
            },
        );
        assert!(ours.supports_blobs(), "{kind}");
        assert_eq!(ours.temporary_directory().unwrap(), shared.join("tmp"));
        // Ours commits a blob: it is in the server's directory, and
        // loads return that very file.
        let oid = ours.new_oids(1).unwrap()[0];
        let record = Bytes::from_static(b"r");
        let mine = content(1024 * 1024 + 3, 20);
        let t1 = commit_blob(&ours, oid, Tid::ZERO, &record, &mine);
        let at = server_blob_path(&server, oid, t1);
        assert_eq!(ours.load_blob(oid, t1).unwrap(), at, "{kind}");
        assert!(std::fs::read(&at).unwrap() == mine, "{kind}");
        check_blob(&ours, oid, t1, &mine, true, &kind);
        // No blob for a revision: POSKeyError, naming where it looked.
        let missing = Tid(t1.0 + 1);
        for e in [
            ours.load_blob(oid, missing).unwrap_err(),
            ours.open_committed_blob(oid, missing).unwrap_err(),
        ] {
            let StorageError::NoBlob { path, .. } = &e else {
                panic!("{kind}: {e}");
            };
            assert!(e.is_pos_key_error(), "{kind}");
            assert_eq!(
                path.as_deref(),
                Some(server_blob_path(&server, oid, missing).as_path())
            );
            assert!(e.to_string().contains(&shared.display().to_string()), "{e}");
        }
        // An aborted transaction leaves nothing in the server's directory.
        let file = shared.join("tmp").join("aborted.bin");
        std::fs::write(&file, b"not committed").unwrap();
        let mut txn = ours.tpc_begin(TxnMeta::default()).unwrap();
        txn.store_blob(oid, t1, record.clone(), &file).unwrap();
        txn.abort();
        wait_until("the aborted upload removed", || {
            files_ending(&shared, &[".tmp", ".tmp-", ".bin"]).is_empty()
        });

        let Some(py) = zodb_it::python() else {
            continue;
        };
        let work = tempfile::tempdir().unwrap();
        // Python's ClientStorage on the same directory commits a blob;
        // ours reads the server's file.
        let theirs = content(2 * 1024 * 1024 + 5, 21);
        let src = work.path().join("theirs.bin");
        std::fs::write(&src, &theirs).unwrap();
        let answer = python_blobs(&py, proxy.port(), PyBlobs::Shared(&shared), "write", &src);
        let py_oid: Oid = answer[0].parse().unwrap();
        let py_tid: Tid = answer[1].parse().unwrap();
        ours.ping().unwrap();
        let (py_record, current) = ours.load(py_oid).unwrap();
        assert_eq!(current, py_tid, "{kind}");
        assert_eq!(
            ours.load_blob(py_oid, py_tid).unwrap(),
            server_blob_path(&server, py_oid, py_tid),
            "{kind}"
        );
        check_blob(&ours, py_oid, py_tid, &theirs, false, &kind);
        // Ours commits the next revision of Python's Blob; Python reads it.
        let next = content(300_000, 22);
        let t2 = commit_blob(&ours, py_oid, py_tid, &py_record, &next);
        let out = work.path().join("ours.bin");
        let answer = python_blobs(&py, proxy.port(), PyBlobs::Shared(&shared), "read", &out);
        assert_eq!(answer[0].parse::<Tid>().unwrap(), t2, "{kind}");
        assert!(std::fs::read(&out).unwrap() == next, "{kind}");

        // No blob went over a connection, either way; the server's
        // directory is still its own (no client cache was made in it).
        for method in [
            "sendBlob",
            "storeBlobStart",
            "storeBlobChunk",
            "storeBlobEnd",
        ] {
            assert_eq!(proxy.client_calls(method), 0, "{kind}: {method}");
        }
        assert!(
            proxy.client_calls("storeBlobShared") >= 3,
            "{kind}: ours twice, Python's once"
        );
        assert_eq!(
            std::fs::read_to_string(shared.join(".layout")).unwrap(),
            "bushy",
            "{kind}"
        );
        let numbered: Vec<_> = std::fs::read_dir(&shared)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        assert_eq!(
            numbered,
            Vec::<String>::new(),
            "{kind}: zeocache directories"
        );
        assert_eq!(
            files_ending(&shared, &[".tmp", ".tmp-", ".bin", ".dl"]),
            Vec::<PathBuf>::new(),
            "{kind}: files left over"
        );
    }
}

#[test]
fn shared_blob_dir_must_be_a_servers_directory() {
    let server = ZeoServer::start(
        ServerKind::Zodbrs(zodbrs_bin()),
        None,
        &ServerOptions {
            blobs: true,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    // A client cache, or a directory no server made.
    let cache = tempfile::tempdir().unwrap();
    drop(client(&server, Some(cache.path())));
    let empty = tempfile::tempdir().unwrap();
    for (dir, says) in [
        (cache.path(), "layout \"zeocache\""),
        (empty.path(), ".layout does not exist"),
    ] {
        let e = ZeoClient::connect(
            Address::tcp("127.0.0.1", server.port()),
            ClientOptions {
                blob_dir: Some(dir.to_owned()),
                shared_blob_dir: true,
                ..ClientOptions::default()
            },
        )
        .unwrap_err();
        let report = zodb_core::error_report(&e);
        assert!(report.starts_with("shared blob directory"), "{report}");
        assert!(report.contains(says), "{report}");
    }
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
}
