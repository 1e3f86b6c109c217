//! A ZODB storage over a ZEO connection: what Python's `ClientStorage` is,
//! behind the `zodb_core` storage traits, so that every tool (and the
//! pager) reads and commits through a ZEO server exactly as it does
//! through a FileStorage.
//!
//! ```no_run
//! use zeo_proto::client_storage::{Address, ClientOptions, ZeoClient};
//! use zodb_core::{Oid, ReadStorage, TxnMeta, WriteStorage};
//!
//! let zeo = ZeoClient::connect(Address::tcp("127.0.0.1", 8100), ClientOptions::default())?;
//! let (root, serial) = zeo.load(Oid::ROOT)?;
//! let mut txn = zeo.tpc_begin(TxnMeta::default())?;
//! txn.store(Oid::ROOT, serial, root)?;
//! txn.vote()?;
//! let tid = txn.finish()?;
//! assert_eq!(zeo.last_transaction(), tid);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! - **One connection, many requests in flight.** Callers on any number of
//!   threads send requests through one connection; a msgid → waiter table
//!   matches the replies ([`conn`]). [`ZeoClient::start_load_before`] lets
//!   one thread keep many loads in flight.
//! - **A tokio runtime inside, a blocking API outside.** The connection's
//!   reader and writer run on the client's own single-threaded I/O
//!   runtime; the storage traits are synchronous, so callers block on
//!   their reply. The blocking calls must therefore not be made from a
//!   tokio runtime thread.
//! - **What the client knows of the database** — its last transaction,
//!   the object cache, the [`CommitWatch`] stream — changes only in the
//!   connection's message order: invalidations of other clients' commits,
//!   the client's own commits (on `tpc_finish`'s reply) and cached loads
//!   are applied by the reader before anyone is woken (see [`conn`]).
//! - **Reconnection.** A supervisor task reconnects with exponential
//!   backoff. Before the new connection is used, the cache is verified as
//!   ClientStorage does (`register` → the server's last tid, then
//!   `getInvalidations(client's last tid)`): changed objects are dropped,
//!   and when the server cannot say what changed the whole cache is
//!   (watchers are then told transaction by transaction, from the
//!   storage's history). Invalidations arriving meanwhile are queued and
//!   applied after. Requests in flight when a connection ends fail with
//!   [`ZeoError::Disconnected`]; a transaction whose connection ends before
//!   its vote succeeded fails with [`ZeoError::TransactionLost`] (the
//!   server aborts it); one cut during `tpc_finish` reports
//!   [`ZeoError::FinishOutcomeUnknown`]. None is retried on the new
//!   connection: the caller decides.
//! - **Blobs** (module `blob`): with [`ClientOptions::blob_dir`], blobs are
//!   downloaded (`sendBlob`) into a local cache in ZEO's `zeocache` layout
//!   and uploaded in 59000-byte chunks (`storeBlobStart/Chunk/End`), as
//!   ClientStorage with a non-shared blob directory does; with
//!   [`ClientOptions::blob_cache_size`] a background thread keeps the
//!   cache near that size, removing the least recently used files as ZEO
//!   does. With [`ClientOptions::shared_blob_dir`] the directory is the
//!   server's own: blobs are read there and committed with
//!   `storeBlobShared`, none travels over the connection.
//! - **Wire behaviour is ClientStorage's**: same calls with the same
//!   arguments and msgids, `new_oids` prefetched in batches of 100, the
//!   heartbeat every 60 s, `tpc_abort` after a failed vote. Only iteration
//!   differs: records of several transactions are fetched at once
//!   ([`iter`]), which the protocol allows, where ClientStorage waits for
//!   each record in turn.

mod address;
mod blob;
mod blob_cache;
mod cache;
mod conn;
mod convert;
mod error;
mod iter;
mod storage;
mod txn;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use zodb_core::notify::{CommitHub, CommitWatch, Committed};
use zodb_core::storage::{ConflictResolver, Revision};
use zodb_core::{Oid, StorageError, Tid};

use crate::encoding::Encoding;
use crate::frame::{DEFAULT_MAX_FRAME_LENGTH, FrameCodec};
use crate::handshake;
use crate::reply::{LoadedRevision, StorageInfo};
use crate::request::Request;
use crate::value::Value;

pub use address::Address;
pub use cache::CacheStats;
pub use error::ZeoError;
pub use txn::ZeoTxn;

use cache::Cache;
use conn::{CallError, Conn, Pending};
use error::Subject;

/// How a [`ZeoClient`] connects and behaves; the defaults are
/// ClientStorage's where it has one.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The storage to register with (`"1"`, what `runzeo -f` serves).
    pub storage: String,
    /// Register read-only: writes fail with [`StorageError::ReadOnly`]
    /// before reaching the server.
    pub read_only: bool,
    /// The object cache's size in bytes (ClientStorage: 20 MB); 0 turns
    /// it off.
    pub cache_size: usize,
    /// At startup, wait up to `wait_timeout` for the server instead of
    /// failing at once when it cannot be reached (zodburi's `wait`).
    pub wait: bool,
    /// How long a call waits for a connection before failing with
    /// [`ZeoError::NotConnected`] (ClientStorage: 30 s).
    pub wait_timeout: Duration,
    /// How long one connection attempt (TCP connect and handshake) may take.
    pub connect_timeout: Duration,
    /// First delay between reconnection attempts, doubled after each
    /// failure up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest delay between reconnection attempts.
    pub max_backoff: Duration,
    /// Sent with `set_client_label` for the server's logs.
    pub client_label: Option<String>,
    /// The storage's name for messages; default: ClientStorage's
    /// (`('host', port)` or the socket path).
    pub name: Option<String>,
    /// Transactions whose records are fetched at once while iterating.
    pub iteration_window: usize,
    /// Largest frame accepted from the server.
    pub max_frame_length: usize,
    /// The blob directory (ClientStorage's `blob_dir`). `None`: blobs are
    /// unsupported, as in ClientStorage without one. Unless
    /// `shared_blob_dir`, a private blob cache: blobs travel over the
    /// connection, and the directory is created if missing, in ZEO's
    /// `zeocache` layout, so a Python client may share it.
    pub blob_dir: Option<std::path::PathBuf>,
    /// `blob_dir` is the server's own blob directory, shared over a file
    /// system (ClientStorage's `shared_blob_dir`): blobs are read from and
    /// committed into it directly, never sent over the connection. It must
    /// exist and say `bushy` in its `.layout`, as every server writes.
    pub shared_blob_dir: bool,
    /// The size, in bytes, the blob cache is kept near (ClientStorage's
    /// `blob_cache_size`); `None`: it grows without bound. A thread of the
    /// client removes the least recently used blob files when the cache
    /// is over it, as ZEO does (module `blob_cache`). Needs a private
    /// cache: refused with `shared_blob_dir`, whose directory is the
    /// server's.
    pub blob_cache_size: Option<u64>,
    /// How much may enter the blob cache between two checks of its size,
    /// in percent of `blob_cache_size` (ClientStorage's
    /// `blob_cache_size_check`, 10; below 100). A check brings the cache
    /// down to `blob_cache_size` less that much, so that it stays under
    /// `blob_cache_size` until the next one.
    pub blob_cache_size_check: u8,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            storage: "1".to_owned(),
            read_only: false,
            cache_size: 20 << 20,
            wait: false,
            wait_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            client_label: None,
            name: None,
            iteration_window: 32,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            blob_dir: None,
            shared_blob_dir: false,
            blob_cache_size: None,
            blob_cache_size_check: 10,
        }
    }
}

/// The state of the link to the server.
#[derive(Debug)]
enum Link {
    /// No usable connection (yet); with why the last one failed.
    Connecting { last_error: Option<String> },
    /// Connected, registered, cache verified.
    Ready(Arc<Conn>),
    /// [`ZeoClient::close`] was called.
    Closed,
}

/// What the client knows of the database, changed only in the order the
/// connection's messages arrive.
#[derive(Debug)]
struct View {
    cache: Cache,
    /// The last transaction the client knows of; `None` before the first
    /// registration.
    last_tid: Option<Tid>,
    /// The connection whose invalidations are applied; those of a
    /// connection still verifying its cache wait in `queued`.
    ready_generation: u64,
    queued: Vec<(u64, Tid, Vec<Oid>)>,
}

/// Everything the client's threads and tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    address: Address,
    opts: ClientOptions,
    link: Mutex<Link>,
    link_changed: Condvar,
    link_notify: tokio::sync::Notify,
    view: Mutex<View>,
    hub: CommitHub,
    info: Mutex<Option<StorageInfo>>,
    /// Oids from `new_oids`, in the order they are handed out.
    oids: Mutex<std::collections::VecDeque<Oid>>,
    resolver: ResolverSlot,
    /// One transaction at a time per client, as ClientStorage.
    commit_slot: txn::Slot,
    next_txn: AtomicI64,
    /// The blob cache or the server's blob directory, if `opts.blob_dir`
    /// is set.
    blobs: Option<blob::Blobs>,
}

/// The conflict resolver installed with `set_conflict_resolver`.
#[derive(Default)]
pub(crate) struct ResolverSlot(RwLock<Option<Arc<dyn ConflictResolver>>>);

impl ResolverSlot {
    pub(crate) fn get(&self) -> Option<Arc<dyn ConflictResolver>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, resolver: Option<Arc<dyn ConflictResolver>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = resolver;
    }
}

impl std::fmt::Debug for ResolverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.get().is_some() {
            "ResolverSlot(installed)"
        } else {
            "ResolverSlot(none)"
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Oids without repeats, first occurrence first (ZEO's invalidation lists
/// may repeat an oid; [`Committed`] does not).
fn dedup(oids: &[Oid]) -> Arc<[Oid]> {
    let mut seen = std::collections::HashSet::with_capacity(oids.len());
    oids.iter().copied().filter(|o| seen.insert(*o)).collect()
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, View> {
        lock(&self.view)
    }

    fn set_link(&self, link: Link) {
        let mut l = lock(&self.link);
        if matches!(*l, Link::Closed) {
            return;
        }
        *l = link;
        drop(l);
        self.link_changed.notify_all();
        self.link_notify.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        matches!(*lock(&self.link), Link::Closed)
    }

    fn not_connected(&self, waited: Duration, last_error: Option<String>) -> ZeoError {
        ZeoError::NotConnected {
            address: self.address.to_string(),
            waited,
            last_error,
        }
    }

    /// The usable connection, waiting up to the wait timeout for one.
    fn ready_conn(&self) -> Result<Arc<Conn>, ZeoError> {
        let start = Instant::now();
        let deadline = start + self.opts.wait_timeout;
        let mut l = lock(&self.link);
        loop {
            let last_error = match &*l {
                Link::Ready(c) if !c.is_dead() => return Ok(c.clone()),
                Link::Ready(_) => None,
                Link::Closed => return Err(ZeoError::Closed),
                Link::Connecting { last_error } => last_error.clone(),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(self.not_connected(now - start, last_error));
            }
            l = self
                .link_changed
                .wait_timeout(l, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// [`Shared::ready_conn`] for tasks in the runtime.
    async fn ready_conn_async(&self) -> Result<Arc<Conn>, ZeoError> {
        let start = Instant::now();
        let deadline = start + self.opts.wait_timeout;
        loop {
            let notified = self.link_notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let last_error = match &*lock(&self.link) {
                Link::Ready(c) if !c.is_dead() => return Ok(c.clone()),
                Link::Ready(_) => None,
                Link::Closed => return Err(ZeoError::Closed),
                Link::Connecting { last_error } => last_error.clone(),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(self.not_connected(now - start, last_error));
            }
            // Woken by any change of the link; also re-check now and then
            // in case a dead connection is not replaced yet.
            let _ =
                tokio::time::timeout((deadline - now).min(Duration::from_millis(200)), notified)
                    .await;
        }
    }

    /// A synchronous call from a caller's thread.
    fn call(&self, req: &Request) -> Result<Value, ZeoError> {
        let conn = self.ready_conn()?;
        call_on(&conn, req)
    }

    /// A synchronous call whose exception means something at the storage
    /// level.
    fn storage_call(&self, req: &Request, subject: Option<Subject>) -> Result<Value, StorageError> {
        self.call(req).map_err(|e| match e {
            ZeoError::Server(exc) => error::storage_error(*exc, subject),
            other => StorageError::from(other),
        })
    }

    /// A load reply: cache it, if it belongs to the connection in use.
    fn cache_loaded(&self, generation: u64, oid: Oid, rev: &LoadedRevision) {
        let mut v = self.view();
        if v.ready_generation == generation {
            // A small record is copied: it is a slice of a read buffer
            // that other frames share, which a cached slice would keep
            // alive. A large one (a wendelin block) is most of its own
            // frame's buffer, so keeping the slice wastes little and saves
            // copying megabytes per load.
            let data = if rev.data.len() >= SHARE_CACHED_RECORDS_FROM {
                rev.data.clone()
            } else {
                Bytes::copy_from_slice(&rev.data)
            };
            v.cache.store(oid, rev.start, rev.end, data);
        }
    }

    /// Applies another client's commit (or queues it while verifying).
    fn invalidate(&self, generation: u64, tid: Tid, oids: Vec<Oid>) {
        let mut v = self.view();
        if v.ready_generation != generation {
            v.queued.push((generation, tid, oids));
            return;
        }
        self.apply_invalidation(&mut v, tid, &oids);
    }

    fn apply_invalidation(&self, v: &mut View, tid: Tid, oids: &[Oid]) {
        if v.last_tid.is_some_and(|last| tid <= last) {
            tracing::debug!(%tid, "invalidation for a transaction already known; ignored");
            return;
        }
        for &oid in oids {
            v.cache.invalidate(oid, tid);
        }
        v.last_tid = Some(tid);
        self.hub.publish(&Committed {
            tid,
            oids: dedup(oids),
        });
    }

    /// The client's own commit, on `tpc_finish`'s reply.
    fn apply_own_commit(&self, generation: u64, tid: Tid, commit: conn::OwnCommit) {
        let mut v = self.view();
        let in_order = v.last_tid.is_none_or(|last| tid > last) && v.ready_generation == generation;
        for (oid, data) in &commit.updates {
            if in_order {
                v.cache.invalidate(*oid, tid);
                if let Some(d) = data {
                    v.cache.store(*oid, tid, None, d.clone());
                }
            } else {
                v.cache.forget_current(*oid);
            }
        }
        if in_order {
            v.last_tid = Some(tid);
            let oids: Vec<Oid> = commit.updates.iter().map(|(o, _)| *o).collect();
            self.hub.publish(&Committed {
                tid,
                oids: dedup(&oids),
            });
        } else {
            tracing::warn!(%tid, "own commit older than what the client knows; cache entries dropped");
        }
    }

    fn update_size(&self, length: i64, size: i64) {
        if let Some(info) = lock(&self.info).as_mut() {
            info.length = length;
            info.size = size;
        }
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<PendingLoad, StorageError> {
        if let Some(rev) = self.view().cache.load_before(oid, before) {
            return Ok(PendingLoad(LoadState::Ready(Some(rev))));
        }
        let conn = self.ready_conn()?;
        let pending = conn
            .load_blocking(oid, before)
            .map_err(|e| call_error(&Request::LoadBefore { oid, before }, e))
            .map_err(|e| match e {
                ZeoError::Server(exc) => error::storage_error(*exc, Some(Subject::Object(oid))),
                other => StorageError::from(other),
            })?;
        Ok(PendingLoad(LoadState::Waiting { oid, pending }))
    }
}

/// A synchronous call on a given connection.
fn call_on(conn: &Arc<Conn>, req: &Request) -> Result<Value, ZeoError> {
    conn.call_blocking(req)
        .and_then(Pending::wait)
        .and_then(|r| r)
        .map_err(|e| call_error(req, e))
}

/// A synchronous call from inside the runtime.
async fn call_async(conn: &Arc<Conn>, req: &Request) -> Result<Value, ZeoError> {
    let r = match conn.call(req).await {
        Ok(p) => p.get().await.and_then(|r| r),
        Err(e) => Err(e),
    };
    r.map_err(|e| call_error(req, e))
}

fn call_error(req: &Request, e: CallError) -> ZeoError {
    match e {
        CallError::Raised(exc) => ZeoError::Server(Box::new(exc)),
        CallError::Lost(reason) => ZeoError::Disconnected {
            method: req.method().name(),
            reason: reason.to_string(),
        },
        CallError::Shape(source) => ZeoError::Shape {
            method: req.method().name(),
            source,
        },
    }
}

/// A `loadBefore` in flight (or answered from the cache).
#[derive(Debug)]
pub struct PendingLoad(LoadState);

#[derive(Debug)]
enum LoadState {
    Ready(Option<Revision>),
    Waiting {
        oid: Oid,
        pending: Pending<conn::LoadReply>,
    },
}

impl PendingLoad {
    /// Waits for the revision (`None`: the object had none before the tid).
    pub fn wait(self) -> Result<Option<Revision>, StorageError> {
        match self.0 {
            LoadState::Ready(r) => Ok(r),
            LoadState::Waiting { oid, pending } => {
                let req = Request::LoadBefore {
                    oid,
                    before: Tid::ZERO,
                };
                match pending.wait().and_then(|r| r) {
                    Ok(rev) => Ok(rev.map(|r| Revision {
                        data: r.data,
                        serial: r.start,
                        next_serial: r.end,
                    })),
                    Err(e) => Err(match call_error(&req, e) {
                        ZeoError::Server(exc) => {
                            error::storage_error(*exc, Some(Subject::Object(oid)))
                        }
                        other => StorageError::from(other),
                    }),
                }
            }
        }
    }
}

/// Records at least this long are cached as slices of their reply frame
/// instead of copies (see `Shared::cache_loaded`).
const SHARE_CACHED_RECORDS_FROM: usize = 64 << 10;

/// A ZODB storage served by a ZEO server (Python's `runzeo` or `zodbrs
/// serve`). See the [module documentation](self).
#[derive(Debug)]
pub struct ZeoClient {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ZeoClient {
    /// Connects, registers with `opts.storage` and starts the I/O thread.
    ///
    /// Fails at once if the first connection fails (unless `opts.wait`),
    /// so that a mistyped address is an error, not a hang; once connected,
    /// later disconnections are retried in the background.
    pub fn connect(address: Address, opts: ClientOptions) -> Result<ZeoClient, ZeoError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zeo-client")
            .enable_all()
            .build()
            .map_err(ZeoError::Runtime)?;
        let blobs = blob::Blobs::open(&opts)?;
        let shared = Arc::new(Shared {
            address,
            blobs,
            link: Mutex::new(Link::Connecting { last_error: None }),
            link_changed: Condvar::new(),
            link_notify: tokio::sync::Notify::new(),
            view: Mutex::new(View {
                cache: Cache::new(opts.cache_size),
                last_tid: None,
                ready_generation: 0,
                queued: Vec::new(),
            }),
            hub: CommitHub::new(),
            info: Mutex::new(None),
            oids: Mutex::new(std::collections::VecDeque::new()),
            resolver: ResolverSlot::default(),
            commit_slot: txn::Slot::default(),
            next_txn: AtomicI64::new(1),
            opts,
        });
        let first = {
            let shared = shared.clone();
            runtime.block_on(async move {
                let deadline = Instant::now() + shared.opts.wait_timeout;
                let mut delay = shared.opts.min_backoff;
                let mut generation = 1;
                loop {
                    match establish(&shared, generation).await {
                        Ok(c) => return Ok((c, generation)),
                        Err(e) if !shared.opts.wait || Instant::now() + delay >= deadline => {
                            return Err(e);
                        }
                        Err(e) => {
                            tracing::info!(error = %zodb_core::error_report(&e), "waiting for the ZEO server");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(shared.opts.max_backoff);
                            generation += 1;
                        }
                    }
                }
            })
        };
        let (established, generation) = first?;
        // Ready before `connect` returns (the supervisor sets it again), so
        // that `is_connected` and `name` say "connected" at once.
        shared.set_link(Link::Ready(established.0.clone()));
        runtime.spawn(supervise(shared.clone(), Some(established), generation));
        Ok(ZeoClient {
            shared,
            runtime: Some(runtime),
        })
    }

    /// The server's address.
    pub fn address(&self) -> &Address {
        &self.shared.address
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.shared.opts
    }

    /// Whether a verified connection is up right now.
    pub fn is_connected(&self) -> bool {
        matches!(&*lock(&self.shared.link), Link::Ready(c) if !c.is_dead())
    }

    /// The encoding negotiated on the current connection.
    pub fn encoding(&self) -> Option<Encoding> {
        match &*lock(&self.shared.link) {
            Link::Ready(c) => Some(c.encoding),
            _ => None,
        }
    }

    /// How many connections were made so far (1 until the first reconnect).
    pub fn connection_count(&self) -> u64 {
        match &*lock(&self.shared.link) {
            Link::Ready(c) => c.generation,
            _ => self.shared.view().ready_generation,
        }
    }

    /// The server's `get_info` as of the last connection, with sizes
    /// updated by the server's `info` calls.
    pub fn storage_info(&self) -> Option<StorageInfo> {
        lock(&self.shared.info).clone()
    }

    /// ZODB's `getSize()`: the storage's size in bytes as the server last
    /// reported it.
    pub fn storage_size(&self) -> u64 {
        lock(&self.shared.info)
            .as_ref()
            .map_or(0, |i| u64::try_from(i.size).unwrap_or(0))
    }

    /// Counters of the object cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.view().cache.stats()
    }

    /// Starts a `loadBefore` and returns without waiting, so that one
    /// thread can keep many loads in flight; answered from the cache when
    /// it can be.
    pub fn start_load_before(&self, oid: Oid, before: Tid) -> Result<PendingLoad, StorageError> {
        self.shared.load_before(oid, before)
    }

    /// Loads many revisions at once: every request is sent before the
    /// first reply is awaited.
    pub fn load_before_many(
        &self,
        requests: &[(Oid, Tid)],
    ) -> Vec<Result<Option<Revision>, StorageError>> {
        let pending: Vec<_> = requests
            .iter()
            .map(|&(oid, before)| self.start_load_before(oid, before))
            .collect();
        pending
            .into_iter()
            .map(|p| p.and_then(PendingLoad::wait))
            .collect()
    }

    /// A round trip to the server (`ping`); after it, every invalidation
    /// the server sent before has been applied.
    pub fn ping(&self) -> Result<(), ZeoError> {
        self.shared.call(&Request::Ping).map(|_| ())
    }

    /// The server's `lastTransaction()`, asked now (the trait's
    /// [`last_transaction`](zodb_core::ReadStorage::last_transaction) is
    /// what the client has seen, as in ClientStorage).
    pub fn server_last_transaction(&self) -> Result<Tid, ZeoError> {
        let req = Request::LastTransaction;
        let v = self.shared.call(&req)?;
        v.as_tid().ok_or(ZeoError::Shape {
            method: "lastTransaction",
            source: crate::reply::ShapeError,
        })
    }

    /// The server's `server_status()` dict.
    pub fn server_status(&self) -> Result<Value, ZeoError> {
        self.shared.call(&Request::ServerStatus)
    }

    /// Cuts the current connection as if the network failed (the client
    /// reconnects as it would then); for tests and operators.
    pub fn drop_connection(&self) {
        if let Link::Ready(c) = &*lock(&self.shared.link) {
            c.close();
        }
    }

    /// Closes the connection and stops the I/O thread. Calls in progress
    /// fail with [`ZeoError::Disconnected`], later ones with
    /// [`ZeoError::Closed`].
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let conn = {
            let mut l = lock(&self.shared.link);
            let old = std::mem::replace(&mut *l, Link::Closed);
            match old {
                Link::Ready(c) => Some(c),
                _ => None,
            }
        };
        self.shared.link_changed.notify_all();
        self.shared.link_notify.notify_waiters();
        if let Some(c) = conn {
            c.close();
        }
        if let Some(b) = &self.shared.blobs {
            b.stop();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Subscribes to the client's stream of committed transactions.
    fn subscribe(&self) -> CommitWatch {
        self.shared.hub.subscribe()
    }
}

impl Drop for ZeoClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Connects, handshakes, registers, verifies the cache: a connection
/// ready for use, and its task.
async fn establish(
    shared: &Arc<Shared>,
    generation: u64,
) -> Result<(Arc<Conn>, tokio::task::JoinHandle<String>), ZeoError> {
    let address = shared.address.to_string();
    let timeout = shared.opts.connect_timeout;
    let timed_out = || ZeoError::ConnectTimeout {
        address: address.clone(),
        after: timeout,
    };
    let stream = tokio::time::timeout(timeout, shared.address.connect())
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| ZeoError::Connect {
            address: address.clone(),
            source,
        })?;
    let (rd, wr) = tokio::io::split(stream);
    let codec = FrameCodec::trusting(shared.opts.max_frame_length);
    let mut reader = FramedRead::new(rd, codec);
    let mut writer = FramedWrite::new(wr, codec);
    let conn_err = |source: crate::connection::ConnectionError| ZeoError::Connection {
        address: address.clone(),
        source,
    };
    let announcement = tokio::time::timeout(timeout, reader.next())
        .await
        .map_err(|_| timed_out())?
        .ok_or_else(|| conn_err(crate::connection::ConnectionError::ClosedInHandshake))?
        .map_err(|e| conn_err(e.into()))?;
    let protocol = handshake::client_answer(&announcement, handshake::CLIENT_VERSIONS)
        .map_err(|e| conn_err(e.into()))?;
    writer
        .send(protocol.to_bytes())
        .await
        .map_err(|e| conn_err(e.into()))?;
    let (conn, task) = conn::start(
        shared.clone(),
        generation,
        protocol.encoding,
        conn::Framed { reader, writer },
    );
    match register_and_verify(shared, &conn).await {
        Ok(()) => {
            tracing::info!(%address, generation, encoding = ?protocol.encoding, "connected to the ZEO server");
            Ok((conn, task))
        }
        Err(e) => {
            conn.close();
            let _ = task.await;
            Err(e)
        }
    }
}

/// What cache verification found out.
enum Verified {
    /// First connection, or nothing changed.
    Nothing,
    /// `getInvalidations`: these oids changed, up to this tid.
    Changed(Tid, Vec<Oid>),
    /// The server could not say; the history did, transaction by
    /// transaction.
    Replayed(Vec<(Tid, Vec<Oid>)>),
    /// Nobody can say: drop the cache.
    Unknown,
}

async fn register_and_verify(shared: &Arc<Shared>, conn: &Arc<Conn>) -> Result<(), ZeoError> {
    let register = Request::Register {
        storage: shared.opts.storage.clone(),
        read_only: shared.opts.read_only,
    };
    let server_tid = match call_async(conn, &register).await {
        Ok(v) => v.as_tid().ok_or(ZeoError::Shape {
            method: "register",
            source: crate::reply::ShapeError,
        })?,
        Err(ZeoError::Server(exception)) => {
            return Err(ZeoError::Register {
                address: shared.address.to_string(),
                storage: shared.opts.storage.clone(),
                exception,
            });
        }
        Err(e) => return Err(e),
    };
    let info_value = call_async(conn, &Request::GetInfo).await?;
    let info = StorageInfo::from_value(&info_value).ok_or(ZeoError::Shape {
        method: "get_info",
        source: crate::reply::ShapeError,
    })?;
    let client_tid = shared.view().last_tid;
    let (verified_tid, verified) = match client_tid {
        None => (server_tid, Verified::Nothing),
        Some(c) if c > server_tid => {
            return Err(ZeoError::ServerBehind {
                address: shared.address.to_string(),
                server: server_tid,
                client: c,
            });
        }
        Some(c) if c == server_tid => (server_tid, Verified::Nothing),
        Some(c) => {
            let v = call_async(conn, &Request::GetInvalidations { tid: c }).await?;
            match v.as_seq() {
                Some([tid, oids]) => {
                    let tid = tid.as_tid();
                    let oids = crate::reply::parse_oids(oids);
                    match (tid, oids) {
                        (Some(tid), Some(oids)) => (tid, Verified::Changed(tid, oids)),
                        _ => {
                            return Err(ZeoError::Shape {
                                method: "getInvalidations",
                                source: crate::reply::ShapeError,
                            });
                        }
                    }
                }
                _ if shared.hub.subscriber_count() > 0 && convert::supports_iteration(&info) => {
                    match iter::changes_between(conn, c, server_tid).await {
                        Ok(list) => (server_tid, Verified::Replayed(list)),
                        Err(e) => {
                            tracing::error!(error = %zodb_core::error_report(&e), "cannot read the transactions missed while disconnected");
                            (server_tid, Verified::Unknown)
                        }
                    }
                }
                _ => (server_tid, Verified::Unknown),
            }
        }
    };
    if let Some(label) = &shared.opts.client_label {
        conn.send_async(&Request::SetClientLabel {
            label: Value::str(label.as_str()),
        })
        .await
        .map_err(|e| call_error(&Request::Ping, e))?;
    }
    // Atomically with respect to the reader: apply what verification
    // found, then the invalidations that arrived meanwhile, then let the
    // reader apply the next ones itself.
    let mut v = shared.view();
    match verified {
        Verified::Nothing => {}
        Verified::Changed(tid, oids) => {
            tracing::info!(changed = oids.len(), "cache verified (quick verification)");
            for &oid in &oids {
                v.cache.forget_current(oid);
            }
            shared.hub.publish(&Committed {
                tid,
                oids: dedup(&oids),
            });
        }
        Verified::Replayed(list) => {
            tracing::warn!(
                transactions = list.len(),
                "server could not list the changes since the client's last transaction; read them from the history"
            );
            v.cache.clear();
            for (tid, oids) in list {
                shared.hub.publish(&Committed {
                    tid,
                    oids: dedup(&oids),
                });
            }
        }
        Verified::Unknown => {
            tracing::warn!(
                "server could not list the changes since the client's last transaction; dropping the object cache"
            );
            let cached = v.cache.oids();
            v.cache.clear();
            if shared.hub.subscriber_count() > 0 {
                tracing::error!(
                    "commit watchers are only told about the objects this client had cached"
                );
                shared.hub.publish(&Committed {
                    tid: verified_tid,
                    oids: cached.into(),
                });
            }
        }
    }
    v.last_tid = Some(verified_tid);
    let queued = std::mem::take(&mut v.queued);
    for (generation, tid, oids) in queued {
        if generation == conn.generation && tid > verified_tid {
            shared.apply_invalidation(&mut v, tid, &oids);
        }
    }
    v.ready_generation = conn.generation;
    drop(v);
    *lock(&shared.info) = Some(info);
    Ok(())
}

/// Keeps the client connected: waits for the connection to end, then
/// reconnects with exponential backoff, until the client is closed.
async fn supervise(
    shared: Arc<Shared>,
    mut current: Option<(Arc<Conn>, tokio::task::JoinHandle<String>)>,
    mut generation: u64,
) {
    let mut delay = shared.opts.min_backoff;
    let mut first_retry = true;
    loop {
        if let Some((conn, task)) = current.take() {
            shared.set_link(Link::Ready(conn));
            delay = shared.opts.min_backoff;
            first_retry = true;
            let reason = task
                .await
                .unwrap_or_else(|e| format!("connection task failed: {e}"));
            if shared.is_closed() {
                return;
            }
            tracing::warn!(address = %shared.address, %reason, "lost the connection to the ZEO server; reconnecting");
            shared.set_link(Link::Connecting {
                last_error: Some(reason),
            });
        }
        if shared.is_closed() {
            return;
        }
        if first_retry {
            // The server may be back at once (a cut connection).
            first_retry = false;
        } else {
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(shared.opts.max_backoff);
        }
        if shared.is_closed() {
            return;
        }
        generation += 1;
        match establish(&shared, generation).await {
            Ok(c) => current = Some(c),
            Err(e) => {
                let report = zodb_core::error_report(&e);
                tracing::debug!(error = %report, "reconnection failed");
                shared.set_link(Link::Connecting {
                    last_error: Some(report),
                });
            }
        }
    }
}

/// `d` ± 25%, so that clients cut by one server restart do not all
/// reconnect in the same instant.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

impl ZeoClient {
    fn next_txn_id(&self) -> i64 {
        self.shared.next_txn.fetch_add(1, Ordering::Relaxed)
    }
}
