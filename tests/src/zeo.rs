//! ZEO servers for end-to-end tests: Python's `runzeo` (the reference) or
//! `zodbrs serve`, each serving a private copy of a database on a free
//! loopback port, which can be killed and restarted on the same port.
//!
//! Both read the same runzeo configuration file (`zodbrs serve -C` takes
//! runzeo's), so a test runs unchanged against either:
//!
//! ```no_run
//! use zodb_it::zeo::{ServerKind, ZeoServer};
//! let db = zodb_it::project_fixtures().join("history/Data.fs");
//! // None (with a notice) when there is no Python: the test skips.
//! let Some(server) = ZeoServer::start(ServerKind::RunZeo, Some(&db), &Default::default()) else {
//!     return;
//! };
//! let url = server.url(); // zeo://127.0.0.1:PORT
//! ```

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    /// `runzeo` from the workspace venv (ZEO 6.2).
    RunZeo,
    /// `zodbrs serve` at this path.
    Zodbrs(PathBuf),
}

/// Server options written into the `<zeo>` section.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Announce `M5` (msgpack) instead of `Z5`.
    pub msgpack: bool,
    /// Return conflicts from vote for the client to resolve.
    pub client_conflict_resolution: bool,
    /// `invalidation-queue-size` (ZEO's default 100 when `None`).
    pub invalidation_queue_size: Option<usize>,
    /// Listen on a Unix socket in the server's directory instead of TCP.
    pub unix_socket: bool,
    /// Serve read-only.
    pub read_only: bool,
    /// Keep blobs: the FileStorage inside a `<blobstorage 1>` section whose
    /// `blob-dir` is `blobs` in the server's directory
    /// ([`ZeoServer::blob_dir`]).
    pub blobs: bool,
}

/// A running (or stopped) ZEO server with its own copy of a database.
#[derive(Debug)]
pub struct ZeoServer {
    kind: ServerKind,
    dir: tempfile::TempDir,
    db: PathBuf,
    conf: PathBuf,
    port: u16,
    socket: Option<PathBuf>,
    child: Option<Child>,
    starts: usize,
}

/// A loopback port nobody listens on (for a moment).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

impl ZeoServer {
    /// Copies `db` (a Data.fs; `None`: an empty new database) and starts
    /// `kind` on it. `None` (with a notice) when `runzeo` is wanted and
    /// there is no Python, as the harness does for the oracle.
    ///
    /// # Panics
    /// When the server does not come up within 60 s.
    pub fn start(kind: ServerKind, db: Option<&Path>, opts: &ServerOptions) -> Option<ZeoServer> {
        if kind == ServerKind::RunZeo {
            crate::python()?;
        }
        let dir = tempfile::Builder::new()
            .prefix("zodb-zeo-")
            .tempdir()
            .expect("create a temporary directory");
        let path = dir.path().join("Data.fs");
        if let Some(src) = db {
            crate::copy_writable(src, &path);
        }
        let port = free_port();
        let socket = opts.unix_socket.then(|| dir.path().join("zeo.sock"));
        let conf = dir.path().join("zeo.conf");
        let address = match &socket {
            Some(s) => s.display().to_string(),
            None => format!("127.0.0.1:{port}"),
        };
        let mut zeo = format!(
            "<zeo>\n  address {address}\n  msgpack {}\n  client-conflict-resolution {}\n  read-only {}\n",
            opts.msgpack, opts.client_conflict_resolution, opts.read_only
        );
        if let Some(n) = opts.invalidation_queue_size {
            zeo.push_str(&format!("  invalidation-queue-size {n}\n"));
        }
        zeo.push_str("</zeo>\n");
        if opts.blobs {
            zeo.push_str(&format!(
                "<blobstorage 1>\n  blob-dir {}\n  <filestorage>\n    path {}\n  </filestorage>\n</blobstorage>\n",
                dir.path().join("blobs").display(),
                path.display()
            ));
        } else {
            zeo.push_str(&format!(
                "<filestorage 1>\n  path {}\n</filestorage>\n",
                path.display()
            ));
        }
        std::fs::write(&conf, zeo).expect("write zeo.conf");
        let mut server = ZeoServer {
            kind,
            dir,
            db: path,
            conf,
            port,
            socket,
            child: None,
            starts: 0,
        };
        server.restart();
        Some(server)
    }

    /// Starts the server again (same port, same file) if it is not running.
    ///
    /// # Panics
    /// When it does not come up within 60 s.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("server-{}.log", self.starts)))
                .expect("create the server log");
        let log2 = log.try_clone().expect("dup the log");
        let mut cmd = match &self.kind {
            ServerKind::RunZeo => {
                let py = crate::python().expect("python checked at start");
                let runzeo = py.with_file_name("runzeo");
                let mut c = Command::new(runzeo);
                c.arg("-C").arg(&self.conf);
                c
            }
            ServerKind::Zodbrs(bin) => {
                let mut c = Command::new(bin);
                c.arg("serve").arg("-C").arg(&self.conf);
                c
            }
        };
        let child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.kind));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.answers() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "{:?} exited ({status}) at start:\n{}",
                    self.kind,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not start within 60 s:\n{}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Whether the server accepts a connection and announces a protocol.
    fn answers(&self) -> bool {
        let mut hello = [0u8; 6];
        match &self.socket {
            Some(path) => std::os::unix::net::UnixStream::connect(path)
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.read_exact(&mut hello)
                })
                .is_ok(),
            None => TcpStream::connect(("127.0.0.1", self.port))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.read_exact(&mut hello)
                })
                .is_ok(),
        }
    }

    /// SIGKILL: the server dies mid-whatever, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the exit (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = libc::pid_t::try_from(c.id()).expect("pid fits");
            // SAFETY: sending a signal to our own child process, which has
            // not been waited for yet (its pid cannot have been reused).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The TCP port (also when serving a Unix socket: unused then).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Unix socket, if the server listens on one.
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// `zeo://127.0.0.1:PORT` or `zeo:///path/to/socket`.
    pub fn url(&self) -> String {
        match &self.socket {
            Some(s) => format!("zeo://{}", s.display()),
            None => format!("zeo://127.0.0.1:{}", self.port),
        }
    }

    /// The served Data.fs (read it only while the server is stopped, or
    /// read-only).
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// The server's blob directory (with [`ServerOptions::blobs`]).
    pub fn blob_dir(&self) -> PathBuf {
        self.dir.path().join("blobs")
    }

    /// The server's directory (configuration, logs, database).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Which program serves.
    pub fn kind(&self) -> &ServerKind {
        &self.kind
    }

    /// Every log the server wrote so far.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("server-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

impl Drop for ZeoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a [`CutProxy`] cuts the first connection through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// At the client's first `tpc_finish` frame, after forwarding it: the
    /// server has the request, the client never gets the reply.
    FinishAfterForwarding,
    /// At the client's first `tpc_finish` frame, without forwarding it.
    FinishInstead,
    /// Once this many bytes went from the server to the client (after the
    /// handshake and registration, say mid-way through a blob download).
    ServerBytes(u64),
    /// Never: the proxy only forwards, and counts what the clients call
    /// ([`CutProxy::client_calls`]).
    Never,
}

/// A TCP proxy to a server's port that cuts the first connection through
/// it, deterministically, at the place [`Cut`] names (both directions at
/// once, before any byte past that place is forwarded); later connections
/// (the client's reconnections) pass through untouched. It also keeps the
/// start of every frame the clients send, to tell which calls they made
/// ([`Cut::Never`] makes it a plain recording proxy).
#[derive(Debug)]
pub struct CutProxy {
    port: u16,
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
    heads: Heads,
}

/// The first bytes of every frame clients sent through a proxy.
type Heads = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// How much of a frame's start [`CutProxy`] keeps: enough for the msgid,
/// the async flag and the method name, in either encoding.
const HEAD: usize = 80;

impl CutProxy {
    /// Listens on a free loopback port, forwarding to `target`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(target: u16, cut: Cut) -> CutProxy {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let fired = Arc::new(AtomicBool::new(false));
        let armed = Arc::new(AtomicBool::new(true));
        let fired2 = fired.clone();
        let heads = Heads::default();
        let heads2 = heads.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                // Only the first connection is cut.
                let this = armed.swap(false, std::sync::atomic::Ordering::SeqCst);
                let cut_now = Arc::new(AtomicBool::new(false));
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let link = Link {
                    cut: this.then_some(cut),
                    cut_now,
                    fired: fired2.clone(),
                    heads: heads2.clone(),
                };
                let link2 = link.clone();
                std::thread::spawn(move || link2.server_to_client(s2, c2));
                std::thread::spawn(move || link.client_to_server(client, server));
            }
        });
        CutProxy { port, fired, heads }
    }

    /// How many frames the clients sent (so far, through every
    /// connection) that call `method`: its name appears in the frame's
    /// first bytes, where both encodings put it.
    ///
    /// # Panics
    /// If a forwarding thread panicked.
    pub fn client_calls(&self, method: &str) -> usize {
        let heads = self.heads.lock().expect("proxy threads do not panic");
        heads
            .iter()
            .filter(|h| h.windows(method.len()).any(|w| w == method.as_bytes()))
            .count()
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the cut happened.
    pub fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One proxied connection.
#[derive(Debug, Clone)]
struct Link {
    cut: Option<Cut>,
    /// Set before the triggering bytes move on, so that nothing after
    /// them is forwarded in either direction.
    cut_now: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
    heads: Heads,
}

impl Link {
    fn fire(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.cut_now.store(true, SeqCst);
        self.fired.store(true, SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.cut_now.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn server_to_client(&self, mut from: TcpStream, mut to: TcpStream) {
        use std::io::Write;
        let mut buf = vec![0u8; 1 << 16];
        let mut passed = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = buf.get(..n).unwrap_or_default();
            if let Some(Cut::ServerBytes(limit)) = self.cut
                && passed + chunk.len() as u64 >= limit
            {
                let keep = usize::try_from(limit - passed).unwrap_or(usize::MAX);
                chunk = chunk.get(..keep).unwrap_or(chunk);
                let _ = to.write_all(chunk);
                self.fire();
                break;
            }
            if self.is_cut() || to.write_all(chunk).is_err() {
                break;
            }
            passed += chunk.len() as u64;
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    }

    /// Forwards frame by frame (4-byte big-endian length and payload),
    /// looking for the method name `tpc_finish`.
    fn client_to_server(&self, mut from: TcpStream, mut to: TcpStream) {
        use std::io::Write;
        loop {
            let mut len = [0u8; 4];
            if from.read_exact(&mut len).is_err() {
                break;
            }
            let Ok(size) = usize::try_from(u32::from_be_bytes(len)) else {
                break;
            };
            let mut payload = vec![0u8; size];
            if from.read_exact(&mut payload).is_err() || self.is_cut() {
                break;
            }
            if let Ok(mut heads) = self.heads.lock() {
                heads.push(payload.get(..HEAD).unwrap_or(&payload).to_vec());
            }
            let finish = payload.windows(10).any(|w| w == b"tpc_finish");
            match self.cut {
                Some(Cut::FinishAfterForwarding) if finish => {
                    self.fire();
                    let _ = to.write_all(&len);
                    let _ = to.write_all(&payload);
                    let _ = to.flush();
                    // Let the server read the request before it sees the
                    // end of the stream.
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
                Some(Cut::FinishInstead) if finish => {
                    self.fire();
                    break;
                }
                _ => {}
            }
            if to.write_all(&len).is_err() || to.write_all(&payload).is_err() {
                break;
            }
        }
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    }
}
