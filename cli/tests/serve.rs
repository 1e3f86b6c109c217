//! `zodbrs serve` as a process: unmodified Python `ClientStorage` clients
//! commit, load, undo and pack through it and receive invalidations; 16
//! concurrent clients hammer shared counters with conflict retries and
//! lose nothing; SIGTERM leaves a durable file with its `.index`; a bad
//! configuration is refused with the line named.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeo_proto::client::{Client, CommitResult};
use zodb_core::{Oid, ReadStorage, Tid};

/// A running `zodbrs serve`; stopped with SIGTERM when dropped.
struct ServerProc {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ServerProc {
    fn start(dir: &Path, args: &[&str]) -> ServerProc {
        let port = free_port();
        let log = dir.join(format!("server-{port}.log"));
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
            .arg("serve")
            .args(["-a", &addr])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = ServerProc {
            child: Some(child),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited ({status}):\n{}", s.log_text());
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

const PY_CLIENTS: &str = r#"
import sys, time
import transaction, ZEO
from ZODB.POSException import POSKeyError
from persistent.mapping import PersistentMapping

addr = ('127.0.0.1', int(sys.argv[1]))
db1 = ZEO.DB(addr)
db2 = ZEO.DB(addr)
tm1 = transaction.TransactionManager()
tm2 = transaction.TransactionManager()
c1 = db1.open(tm1)
c2 = db2.open(tm2)

r1 = c1.root()
r1['counter'] = 1
r1['child'] = PersistentMapping(name='first')
tm1.commit()

# The second client sees the commit once its invalidation has arrived
# (ZEO delivers it asynchronously, on the client's own I/O thread)...
deadline = time.time() + 10
while True:
    tm2.begin()
    r2 = c2.root()
    if r2.get('counter') == 1:
        break
    assert time.time() < deadline, 'the first commit never arrived'
    time.sleep(0.05)
assert r2['child']['name'] == 'first'

# ...and is invalidated by the next one.
r1['counter'] = 2
r1['child']['name'] = 'second'
tm1.commit()
deadline = time.time() + 10
while True:
    tm2.begin()
    if c2.root()['counter'] == 2:
        break
    assert time.time() < deadline, 'no invalidation'
    time.sleep(0.05)
assert c2.root()['child']['name'] == 'second'

# A conflict: both change the counter from the same state.
tm1.begin(); tm2.begin()
c1.root()['counter'] = 10
c2.root()['counter'] = 20
tm1.commit()
try:
    tm2.commit()
    raise AssertionError('expected a ConflictError')
except Exception as e:
    assert type(e).__name__ == 'ConflictError', repr(e)
    tm2.abort()

# Undo the last transaction (counter back to 2).
log = db1.undoLog(0, 10)
assert len(log) >= 3, log
db1.undo(log[0]['id'], tm1.get())
tm1.commit()
tm1.begin()
assert c1.root()['counter'] == 2, c1.root()['counter']

# History and loadBefore through the storage API.
st = db1.storage
oid = c1.root()._p_oid
hist = st.history(oid, 10)
assert len(hist) >= 4, hist

# Pack away the history: old revisions are gone, current data stays.
first_tid = hist[-1]['tid']
db1.pack(time.time() + 1)
try:
    st.loadSerial(oid, first_tid)
    raise AssertionError('old revision survived the pack')
except POSKeyError:
    pass
tm2.begin()
assert c2.root()['counter'] == 2
assert c2.root()['child']['name'] == 'second'

# Iteration over the whole history.
n = sum(1 for _ in st.iterator())
assert n >= 1, n

db1.close(); db2.close()
print('PY-CLIENTS-OK')
"#;

#[test]
fn python_clients_commit_load_undo_pack_and_get_invalidations() {
    let Some(py) = zodb_it::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProc::start(dir.path(), &["-f", "Data.fs"]);
    let out = Command::new(&py)
        .args(["-c", PY_CLIENTS, &server.port.to_string()])
        .current_dir(dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PY-CLIENTS-OK"),
        "python clients failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    // SIGTERM wrote the index, and Python's FileStorage opens the file.
    assert!(dir.path().join("Data.fs.index").exists());
    let check = Command::new(&py)
        .args([
            "-c",
            "import sys; from ZODB.FileStorage import FileStorage as F; \
             s = F(sys.argv[1], read_only=True); print(len(s)); s.close()",
            dir.path().join("Data.fs").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(check.status.success());
}

/// A counter record: `{'value': n}` under a class, as ZODB pickles one.
fn counter(n: u32) -> Bytes {
    let mut v =
        b"\x80\x03czodbrs_test\nCounter\nq\x00.\x80\x03}q\x01X\x05\x00\x00\x00valueq\x02J".to_vec();
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(b"s.");
    Bytes::from(v)
}

fn counter_value(data: &[u8]) -> u32 {
    let at = data.len() - 6;
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
}

#[test]
fn sixteen_clients_on_shared_counters_lose_nothing() {
    const CLIENTS: usize = 16;
    const COMMITS: usize = 1000;
    const COUNTERS: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProc::start(dir.path(), &["-f", "Data.fs"]);
    let port = server.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (successes, conflicts) = rt.block_on(async move {
        let connect = move || async move {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let mut c = Client::handshake(s).await.unwrap();
            c.register("1", false).await.unwrap();
            c
        };
        let mut setup = connect().await;
        let stores: Vec<_> = (0..COUNTERS)
            .map(|i| (Oid(i), Tid::ZERO, counter(0)))
            .collect();
        assert!(matches!(
            setup.commit(1, &stores).await.unwrap(),
            CommitResult::Committed(_)
        ));
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            tasks.push(tokio::spawn(async move {
                let mut c = connect().await;
                let mut wins = vec![0u64; COUNTERS as usize];
                let mut conflicts = 0u64;
                let mut txn = (client as i64 + 1) << 32;
                for i in 0..COMMITS {
                    let oid = Oid(((client + i) as u64) % COUNTERS);
                    loop {
                        let cur = c.load_before(oid, Tid::MAX).await.unwrap().unwrap();
                        let next = counter(counter_value(&cur.data) + 1);
                        txn += 1;
                        match c.commit(txn, &[(oid, cur.start, next)]).await.unwrap() {
                            CommitResult::Committed(_) => {
                                wins[oid.0 as usize] += 1;
                                break;
                            }
                            CommitResult::Conflicts(_) => conflicts += 1,
                        }
                    }
                    c.calls.clear();
                }
                (wins, conflicts)
            }));
        }
        let mut total = vec![0u64; COUNTERS as usize];
        let mut conflicts = 0;
        for t in tasks {
            let (w, c) = t.await.unwrap();
            for (a, b) in total.iter_mut().zip(w) {
                *a += b;
            }
            conflicts += c;
        }
        (total, conflicts)
    });
    assert_eq!(successes.iter().sum::<u64>(), (CLIENTS * COMMITS) as u64);
    let status = server.stop();
    assert!(status.success(), "{}", server.log_text());
    eprintln!(
        "{} commits, {conflicts} conflicts retried",
        CLIENTS * COMMITS
    );
    let path = dir.path().join("Data.fs");
    let fs = filestorage::FileStorage::open_read_only(&path).unwrap();
    for (i, &wins) in successes.iter().enumerate() {
        let (data, _) = fs.load(Oid(i as u64)).unwrap();
        assert_eq!(u64::from(counter_value(&data)), wins, "counter {i}");
    }
    assert_eq!(fs.txns().count(), 1 + CLIENTS * COMMITS);
    drop(fs);
    let fstest = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
        .args(["fstest", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        fstest.status.success(),
        "fstest: {}",
        String::from_utf8_lossy(&fstest.stderr)
    );
    if let Some(py) = zodb_it::python() {
        let out = Command::new(py)
            .args(["-m", "ZODB.scripts.fstest", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ZODB's fstest: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sigterm_writes_the_index_and_the_pid_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("zeo.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address 127.0.0.1:1\n  transaction-timeout 30\n</zeo>\n\
         <filestorage main>\n  path Data.fs\n</filestorage>\n",
    )
    .unwrap();
    let pid = dir.path().join("zeo.pid");
    let mut server = ServerProc::start(
        dir.path(),
        &[
            "-C",
            conf.to_str().unwrap(),
            "--pid-file",
            pid.to_str().unwrap(),
        ],
    );
    let written: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(written, server.child.as_ref().unwrap().id());
    let port = server.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tid = rt.block_on(async move {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut c = Client::handshake(s).await.unwrap();
        c.register("main", false).await.unwrap();
        match c
            .commit(7, &[(Oid(0), Tid::ZERO, counter(1))])
            .await
            .unwrap()
        {
            CommitResult::Committed(t) => t,
            other => panic!("{other:?}"),
        }
    });
    assert!(server.stop().success());
    assert!(!pid.exists(), "PID file removed");
    let index = dir.path().join("Data.fs.index");
    assert!(index.exists(), ".index written at shutdown");
    let fs = filestorage::FileStorage::open_read_only(dir.path().join("Data.fs")).unwrap();
    assert_eq!(fs.last_transaction(), tid);
    assert!(matches!(
        fs.open_report().index,
        filestorage::index_file::IndexOrigin::Loaded { .. }
    ));
}

#[test]
fn configuration_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address 127.0.0.1:0\n  read_only true\n</zeo>\n<filestorage>\n  path Data.fs\n</filestorage>\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zodbrs"))
        .args(["serve", "-C", conf.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:3: unknown key \"read_only\" in <zeo>"),
        "{err}"
    );
    assert!(!dir.path().join("Data.fs").exists(), "nothing opened");
}

/// A lock holder past `transaction-timeout` is logged in the configured
/// `<eventlog>` file exactly as ZEO's StorageServer logs it (ZEO's
/// checkTimeout and runzeo log watchers look for this line), and closed.
#[test]
fn transaction_timeout_is_logged_as_zeo_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("zeo.conf");
    std::fs::write(
        &conf,
        "<zeo>\n  address 127.0.0.1:1\n  transaction-timeout 1\n</zeo>\n\
         <eventlog>\n  level INFO\n  <logfile>\n    path server.log\n  </logfile>\n</eventlog>\n\
         <filestorage 1>\n  path Data.fs\n</filestorage>\n",
    )
    .unwrap();
    let server = ServerProc::start(dir.path(), &["-C", conf.to_str().unwrap()]);
    let port = server.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let peer = rt.block_on(async move {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let peer = s.local_addr().unwrap().to_string();
        let mut c = Client::handshake(s).await.unwrap();
        c.register("1", false).await.unwrap();
        let txn = zeo_proto::request::TxnId(1);
        c.send(&zeo_proto::request::Request::TpcBegin {
            txn,
            user: Bytes::new(),
            description: Bytes::new(),
            extension: zeo_proto::value::Value::Dict(vec![]),
            tid: None,
            status: zodb_core::TxnStatus::Committed,
        })
        .await
        .unwrap();
        c.call(&zeo_proto::request::Request::Vote { txn })
            .await
            .unwrap();
        // Holding the lock: after a second the server closes us.
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while c.read().await.is_ok() {}
        })
        .await;
        assert!(closed.is_ok(), "the lock holder is closed");
        peer
    });
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let want = format!("CRITICAL ZEO.StorageServer ({peer}) Transaction timeout after 1 seconds");
    assert!(log.contains(&want), "no {want:?} in\n{log}");
    drop(server);
}
