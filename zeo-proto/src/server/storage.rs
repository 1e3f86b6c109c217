//! One served storage: what the server knows beyond the storage traits
//! ([`StorageSpec`]), and its runtime state ([`Served`]): the commit lock,
//! statistics, the invalidation queue, and the fan-out of commits to the
//! connections registered with it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;
use zodb_core::{Oid, Tid, WriteStorage};

use super::ServerConfig;
use super::blob::BlobDir;
use super::listener::ServeError;
use crate::encoding::Encoding;
use crate::reply::{ClientCall, ServerMessage};
use crate::value::Value;

/// `(module, name)` lists as `get_info()['interfaces']` reports them, in
/// `__iro__` order; ZEO clients turn features on from them (undo, iteration,
/// blobs, restore) and ZEO's tests compare them exactly.
pub mod interfaces {
    /// A list of interface names.
    pub type List = &'static [(&'static str, &'static str)];

    /// `ZODB.FileStorage.FileStorage` without a blob directory.
    pub const FILESTORAGE: List = &[
        ("ZODB.interfaces", "IStorageRestoreable"),
        ("ZODB.interfaces", "IStorageIteration"),
        ("ZODB.interfaces", "IStorageUndoable"),
        ("ZODB.interfaces", "IStorageCurrentRecordIteration"),
        ("ZODB.interfaces", "IExternalGC"),
        ("ZODB.interfaces", "IStorage"),
        ("zope.interface", "Interface"),
    ];

    /// A FileStorage with blobs (`blob_dir=`, or inside `<blobstorage>`).
    pub const FILESTORAGE_BLOBS: List = &[
        ("ZODB.interfaces", "IBlobStorageRestoreable"),
        ("ZODB.interfaces", "IBlobStorage"),
        ("ZODB.interfaces", "IStorageRestoreable"),
        ("ZODB.interfaces", "IStorageIteration"),
        ("ZODB.interfaces", "IStorageUndoable"),
        ("ZODB.interfaces", "IStorageCurrentRecordIteration"),
        ("ZODB.interfaces", "IExternalGC"),
        ("ZODB.interfaces", "IStorage"),
        ("zope.interface", "Interface"),
    ];

    /// `ZODB.MappingStorage.MappingStorage`.
    pub const MAPPING: List = &[
        ("ZODB.interfaces", "IStorage"),
        ("ZODB.interfaces", "IStorageIteration"),
        ("zope.interface", "Interface"),
    ];

    /// The in-memory storage with undo advertised (it implements it).
    pub const MEMORY_UNDO: List = &[
        ("ZODB.interfaces", "IStorageRestoreable"),
        ("ZODB.interfaces", "IStorageIteration"),
        ("ZODB.interfaces", "IStorageUndoable"),
        ("ZODB.interfaces", "IStorage"),
        ("zope.interface", "Interface"),
    ];
}

/// A hook answering `record_iternext`: given the cursor (None: from the
/// start), the smallest oid ≥ it that exists and the next one after that.
pub type RecordCursor = Arc<dyn Fn(Option<Oid>) -> Option<(Oid, Option<Oid>)> + Send + Sync>;

/// The last `n` transactions, oldest first, as `(tid, oids)` (ZODB's
/// `lastInvalidations`), to seed the invalidation queue at start.
pub type LastInvalidations = Arc<dyn Fn(usize) -> Vec<(Tid, Vec<Oid>)> + Send + Sync>;

/// Everything the server needs to serve one storage.
#[derive(Clone)]
pub struct StorageSpec {
    /// The storage.
    pub storage: Arc<dyn WriteStorage>,
    /// The storage refuses writes (`isReadOnly()`).
    pub read_only: bool,
    /// `get_info()['interfaces']`.
    pub interfaces: Vec<(String, String)>,
    /// `get_info()['supportsUndo']`; without it `undoLog`/`undoInfo`
    /// answer `()`, as Python's server does.
    pub supports_undo: bool,
    /// Size in bytes for `get_info` and `info` (FileStorage: file size).
    pub size: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// `record_iternext` support (IStorageCurrentRecordIteration).
    pub record_cursor: Option<RecordCursor>,
    /// Seeds the invalidation queue, so that clients reconnecting after a
    /// restart can still verify their cache quickly.
    pub last_invalidations: Option<LastInvalidations>,
    /// Group commit: the storage does not fsync at `finish`, and this makes
    /// every finished transaction durable. The server then shares one call
    /// among the commits finished meanwhile and publishes none before it.
    pub group_sync: Option<Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>>,
    /// Blob directory (bushy layout), for IBlobStorage.
    pub blob_dir: Option<PathBuf>,
    /// Pack with garbage collection (`pack-gc`, default true).
    pub pack_gc: bool,
}

impl std::fmt::Debug for StorageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSpec")
            .field("storage", &self.storage.name())
            .field("read_only", &self.read_only)
            .field("supports_undo", &self.supports_undo)
            .field("group_sync", &self.group_sync.is_some())
            .field("blob_dir", &self.blob_dir)
            .field("pack_gc", &self.pack_gc)
            .finish_non_exhaustive()
    }
}

impl StorageSpec {
    /// A spec with the given interfaces and everything optional off.
    pub fn new(storage: Arc<dyn WriteStorage>, interfaces: interfaces::List) -> StorageSpec {
        let supports_undo = interfaces.iter().any(|(_, n)| *n == "IStorageUndoable");
        StorageSpec {
            storage,
            read_only: false,
            interfaces: interfaces
                .iter()
                .map(|(m, n)| ((*m).to_owned(), (*n).to_owned()))
                .collect(),
            supports_undo,
            size: None,
            record_cursor: None,
            last_invalidations: None,
            group_sync: None,
            blob_dir: None,
            pack_gc: true,
        }
    }
}

/// Per-storage counters, as `server_status()` reports them.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections: AtomicUsize,
    pub(crate) loads: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) aborts: AtomicU64,
    pub(crate) active_txns: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) conflicts_resolved: AtomicU64,
    /// When the current holder took the commit lock (seconds since the epoch).
    pub(crate) lock_time: Mutex<Option<f64>>,
    /// `time.ctime()` at start.
    pub(crate) start: String,
}

/// Something every connection registered with a storage must hear about.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A commit, in tid order.
    Commit(Arc<CommitNotice>),
    /// New size statistics (after a pack).
    Info {
        /// Object count.
        length: i64,
        /// Size in bytes.
        size: i64,
    },
    /// The storage failed (a group fsync): the connection must close.
    Fatal(String),
}

/// One published commit.
#[derive(Debug)]
pub(crate) struct CommitNotice {
    pub(crate) tid: Tid,
    pub(crate) oids: Vec<Oid>,
    /// The connection that committed it (it gets no invalidation).
    pub(crate) origin: u64,
    /// `invalidateTransaction` encoded once per encoding, shared by every
    /// connection that sends it.
    encoded: [OnceLock<Result<Bytes, crate::encoding::EncodeError>>; 2],
}

impl CommitNotice {
    pub(crate) fn new(tid: Tid, oids: Vec<Oid>, origin: u64) -> CommitNotice {
        CommitNotice {
            tid,
            oids,
            origin,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The `invalidateTransaction(tid, oids)` frame payload.
    pub(crate) fn frame(&self, encoding: Encoding) -> Result<Bytes, crate::encoding::EncodeError> {
        let slot = match encoding {
            Encoding::Pickle => &self.encoded[0],
            Encoding::Msgpack => &self.encoded[1],
        };
        slot.get_or_init(|| {
            ServerMessage::Call(ClientCall::InvalidateTransaction {
                tid: self.tid,
                oids: self.oids.clone(),
            })
            .encode(encoding)
        })
        .clone()
    }
}

/// A connection's subscription to a storage's commits.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) rx: mpsc::Receiver<Notice>,
    /// The last commit published when the subscription began: everything
    /// up to it is already visible and needs no invalidation.
    pub(crate) since: Tid,
}

/// The fan-out state, under one mutex so that subscribing and publishing
/// are atomic with respect to each other.
#[derive(Debug)]
struct Fanout {
    subscribers: Vec<(u64, mpsc::Sender<Notice>)>,
    /// Newest first, at most `bound` entries: `(tid, oids)`, or a marker
    /// `(tid, None)` standing for "everything up to tid" (ZODB's seed when
    /// the storage has no history to offer).
    invq: VecDeque<(Tid, Option<Arc<[Oid]>>)>,
    bound: usize,
    /// The last commit published.
    last_published: Tid,
}

/// A finished commit on its way to being published.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) tid: Tid,
    pub(crate) oids: Vec<Oid>,
    pub(crate) origin: u64,
    /// The [`LockActivity::taken`] count when this transaction took the
    /// commit lock.
    pub(crate) epoch: u64,
}

/// What the group-commit syncer looks at to tell whether another commit
/// is on its way: votes queued for the lock, and how many times the lock
/// has been taken.
#[derive(Debug, Default)]
pub(crate) struct LockActivity {
    /// Votes waiting for the lock (`server_status()['waiting']`).
    pub(crate) waiting: AtomicUsize,
    /// Times the lock was taken, ever.
    pub(crate) taken: AtomicU64,
}

/// A served storage's runtime state.
pub(crate) struct Served {
    pub(crate) name: String,
    pub(crate) spec: StorageSpec,
    /// ZEO's commit lock: one vote→finish at a time, FIFO across
    /// connections (tokio's mutex queues waiters fairly).
    pub(crate) commit_lock: Arc<tokio::sync::Mutex<()>>,
    /// Votes waiting for the lock, and how often it was taken.
    pub(crate) activity: Arc<LockActivity>,
    pub(crate) stats: Stats,
    pub(crate) blobs: Option<BlobDir>,
    fanout: Arc<Mutex<Fanout>>,
    /// To the group-commit syncer thread, when there is one.
    syncer: Mutex<Option<std::sync::mpsc::Sender<Finished>>>,
    syncer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set when a group fsync failed: nothing more may commit.
    pub(crate) failed: Arc<AtomicBool>,
    pub(crate) has_timeout: bool,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// `time.ctime()` of now, in UTC (the server has no timezone database).
fn ctime_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = DAYS
        .get(days.rem_euclid(7) as usize)
        .copied()
        .unwrap_or("Thu");
    let mon = MONTHS.get((m - 1) as usize).copied().unwrap_or("Jan");
    format!(
        "{wd} {mon} {d:>2} {:02}:{:02}:{:02} {y}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds since the epoch, as Python's `time.time()`.
pub(crate) fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Served {
    pub(crate) fn new(
        name: String,
        spec: StorageSpec,
        config: &ServerConfig,
    ) -> Result<Served, ServeError> {
        let blobs = match &spec.blob_dir {
            Some(dir) => Some(BlobDir::open(dir).map_err(|source| ServeError::Blob {
                path: dir.clone(),
                source,
            })?),
            None => None,
        };
        // Python's server resolves conflicts with the classes'
        // `_p_resolveConflict` unless told to leave them to the clients; we
        // resolve the classes with fixed rules and leave the rest to them.
        if !config.client_conflict_resolution {
            spec.storage
                .set_conflict_resolver(Some(Arc::new(super::resolve::NativeResolver)));
        }
        let bound = config.invalidation_queue_size.max(1);
        let last = spec.storage.last_transaction();
        let mut invq = VecDeque::new();
        match &spec.last_invalidations {
            Some(f) => {
                for (tid, oids) in f(bound) {
                    invq.push_front((tid, Some(Arc::from(oids))));
                }
            }
            // As ZODB: "the first element in invq is never used", but lets
            // clients that were up to date before a restart verify quickly.
            None => invq.push_front((last, None)),
        }
        while invq.len() > bound {
            invq.pop_back();
        }
        let fanout = Arc::new(Mutex::new(Fanout {
            subscribers: Vec::new(),
            invq,
            bound,
            last_published: last,
        }));
        let failed = Arc::new(AtomicBool::new(false));
        let commit_lock = Arc::new(tokio::sync::Mutex::new(()));
        let activity = Arc::new(LockActivity::default());
        let (syncer, syncer_thread) = match spec.group_sync.clone() {
            Some(sync) => {
                let (tx, rx) = std::sync::mpsc::channel::<Finished>();
                let fanout = fanout.clone();
                let failed = failed.clone();
                let storage_name = name.clone();
                let lock = commit_lock.clone();
                let activity = activity.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("zeo-sync-{name}"))
                    .spawn(move || {
                        let next = NextCommit {
                            lock: &lock,
                            activity: &activity,
                        };
                        syncer_loop(&storage_name, &rx, &*sync, &fanout, &failed, &next)
                    })
                    .map_err(|source| ServeError::Io {
                        what: "starting the group-commit thread",
                        source,
                    })?;
                (Some(tx), Some(thread))
            }
            None => (None, None),
        };
        Ok(Served {
            name,
            spec,
            commit_lock,
            activity,
            stats: Stats {
                start: ctime_now(),
                ..Stats::default()
            },
            blobs,
            fanout,
            syncer: Mutex::new(syncer),
            syncer_thread: Mutex::new(syncer_thread),
            failed,
            has_timeout: config.transaction_timeout.is_some(),
        })
    }

    fn fanout(&self) -> std::sync::MutexGuard<'_, Fanout> {
        self.fanout.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers connection `conn` for this storage's notices.
    pub(crate) fn subscribe(&self, conn: u64, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(16));
        let mut f = self.fanout();
        f.subscribers.push((conn, tx));
        self.stats
            .connections
            .store(f.subscribers.len(), Ordering::Relaxed);
        Subscription {
            rx,
            since: f.last_published,
        }
    }

    /// Forgets connection `conn`.
    pub(crate) fn unsubscribe(&self, conn: u64) {
        let mut f = self.fanout();
        f.subscribers.retain(|(c, _)| *c != conn);
        self.stats
            .connections
            .store(f.subscribers.len(), Ordering::Relaxed);
    }

    /// The last commit published: what clients may be told is committed.
    pub(crate) fn last_published(&self) -> Tid {
        self.fanout().last_published
    }

    /// Hands a finished commit over for publication: directly, or through
    /// the group-commit syncer. Called under the commit lock, so commits
    /// arrive here in tid order.
    pub(crate) fn committed(&self, finished: Finished) {
        let syncer = self
            .syncer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match syncer {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(f)) = tx.send(finished) {
                    // The syncer is gone (shutdown): publish unsynced; the
                    // storage syncs when it is closed.
                    publish(&self.fanout, vec![f]);
                }
            }
            None => publish(&self.fanout, vec![finished]),
        }
    }

    /// Sends `info` to every connection but `except` (after a pack; the
    /// packing connection sends its own before its reply, as Python's
    /// server's order has it).
    pub(crate) fn broadcast_info(&self, except: Option<u64>) {
        let (length, size) = self.size_info();
        let mut f = self.fanout();
        f.subscribers.retain(|(conn, tx)| {
            Some(*conn) == except || tx.try_send(Notice::Info { length, size }).is_ok()
        });
        self.stats
            .connections
            .store(f.subscribers.len(), Ordering::Relaxed);
    }

    /// `loadBefore`, counted in the server's statistics.
    pub(crate) fn load_before(
        &self,
        oid: zodb_core::Oid,
        before: Tid,
    ) -> Result<Option<zodb_core::storage::Revision>, zodb_core::StorageError> {
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        self.spec.storage.load_before(oid, before)
    }

    /// `(len(storage), storage.getSize())`.
    pub(crate) fn size_info(&self) -> (i64, i64) {
        let length = i64::try_from(self.spec.storage.object_count()).unwrap_or(i64::MAX);
        let size = self
            .spec
            .size
            .as_ref()
            .map_or(0, |f| i64::try_from(f()).unwrap_or(i64::MAX));
        (length, size)
    }

    /// ZEO's `get_invalidations`: `(latest tid, oids changed after tid)`
    /// from the queue when it reaches back to `tid`; `Err(tid)` when it does
    /// not (the caller may then iterate the storage, see
    /// `invalidation-age`).
    pub(crate) fn queued_invalidations(&self, tid: Tid) -> Option<(Tid, Vec<Oid>)> {
        let f = self.fanout();
        let oldest = f.invq.back()?;
        if oldest.0 > tid {
            return None;
        }
        let latest = f.invq.front().map_or(tid, |e| e.0);
        let mut seen = std::collections::HashSet::new();
        let mut oids = Vec::new();
        for (t, list) in &f.invq {
            if *t <= tid {
                break;
            }
            for &oid in list.iter().flat_map(|l| l.iter()) {
                if seen.insert(oid) {
                    oids.push(oid);
                }
            }
        }
        Some((latest, oids))
    }

    /// `server_status()`, with Python's keys in Python's order.
    pub(crate) fn status_value(&self) -> Value {
        let s = &self.stats;
        let n = |a: &AtomicU64| Value::Int(i128::from(a.load(Ordering::Relaxed)));
        let lock_time = *s.lock_time.lock().unwrap_or_else(PoisonError::into_inner);
        let last = self.last_published();
        Value::str_dict([
            (
                "connections",
                Value::Int(s.connections.load(Ordering::Relaxed) as i128),
            ),
            ("loads", n(&s.loads)),
            ("stores", n(&s.stores)),
            ("commits", n(&s.commits)),
            ("aborts", n(&s.aborts)),
            ("active_txns", n(&s.active_txns)),
            ("lock_time", lock_time.map_or(Value::None, Value::Float)),
            ("conflicts", n(&s.conflicts)),
            ("conflicts_resolved", n(&s.conflicts_resolved)),
            ("start", Value::str(s.start.as_str())),
            (
                "waiting",
                Value::Int(self.activity.waiting.load(Ordering::Relaxed) as i128),
            ),
            (
                "timeout-thread-is-alive",
                if self.has_timeout {
                    Value::Bool(true)
                } else {
                    Value::str("stub")
                },
            ),
            ("last-transaction", Value::Str(format!("{last}"))),
        ])
    }

    /// Stops the syncer after it has published everything handed to it.
    pub(crate) fn close(&self) {
        self.syncer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let thread = self
            .syncer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.close();
    }
}

/// Publishes finished commits, in order: into the invalidation queue and
/// to every subscriber. A subscriber whose queue is full is dropped (its
/// connection sees the channel close and disconnects): one client that does
/// not read must not hold up commits or grow the server's memory.
fn publish(fanout: &Mutex<Fanout>, commits: Vec<Finished>) {
    let mut f = fanout.lock().unwrap_or_else(PoisonError::into_inner);
    for c in commits {
        let notice = Arc::new(CommitNotice::new(c.tid, c.oids, c.origin));
        while f.invq.len() >= f.bound {
            f.invq.pop_back();
        }
        f.invq
            .push_front((c.tid, Some(Arc::from(notice.oids.as_slice()))));
        f.last_published = f.last_published.max(c.tid);
        f.subscribers.retain(
            |(conn, tx)| match tx.try_send(Notice::Commit(notice.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        conn,
                        "client is not reading its invalidations; disconnecting it"
                    );
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        );
    }
}

/// Tells the syncer whether a commit is on its way.
struct NextCommit<'a> {
    lock: &'a tokio::sync::Mutex<()>,
    activity: &'a LockActivity,
}

impl NextCommit<'_> {
    /// Whether a transaction other than those up to lock epoch `seen`
    /// holds the commit lock, or a vote queues for it.
    fn coming(&self, seen: u64) -> bool {
        self.activity.waiting.load(Ordering::SeqCst) > 0
            || (self.activity.taken.load(Ordering::SeqCst) > seen && self.lock.try_lock().is_err())
    }
}

/// How long the group-commit syncer waits for a commit under way before
/// an fsync (see [`syncer_loop`]).
const GROUP_LINGER: std::time::Duration = std::time::Duration::from_micros(300);

/// The group-commit loop: waits for a finished commit, takes every other
/// one finished meanwhile, makes them durable with one call, publishes
/// them in order.
fn syncer_loop(
    name: &str,
    rx: &std::sync::mpsc::Receiver<Finished>,
    sync: &(dyn Fn() -> std::io::Result<()> + Send + Sync),
    fanout: &Mutex<Fanout>,
    failed: &AtomicBool,
    next: &NextCommit<'_>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        // Another transaction has the commit lock or queues for it: it
        // will finish shortly, so wait for it a little and let one fsync
        // cover both (PostgreSQL's commit_delay, applied only when a
        // commit is actually on its way, so a lone writer never waits).
        let deadline = Instant::now() + GROUP_LINGER;
        while next.coming(batch.iter().map(|f| f.epoch).max().unwrap_or(0)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(f) => {
                    batch.push(f);
                    batch.extend(rx.try_iter());
                }
                Err(_) => break,
            }
        }
        if let Err(e) = sync() {
            // The commits are in the storage but may not be on disk: no
            // client may be told they happened. Stop committing; every
            // connection of this storage is closed.
            tracing::error!(storage = name, error = %e, "fsync failed; the storage stops accepting commits");
            failed.store(true, Ordering::SeqCst);
            let mut f = fanout.lock().unwrap_or_else(PoisonError::into_inner);
            for (_, tx) in f.subscribers.drain(..) {
                let _ = tx.try_send(Notice::Fatal(format!("fsync failed: {e}")));
            }
            continue;
        }
        tracing::trace!(storage = name, commits = batch.len(), "group commit");
        publish(fanout, batch);
    }
}
