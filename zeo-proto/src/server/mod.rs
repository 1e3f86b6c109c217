//! A ZEO 5/6 server that unmodified Python `ClientStorage` clients use like
//! `runzeo`, generic over the `zodb_core` storage traits.
//!
//! The shape is mini-redis's, with what ZEO adds:
//!
//! - [`listener`]: takes an already bound TCP or Unix listener and a
//!   shutdown future; a `Semaphore` caps connections; each accepted socket
//!   gets one task, and shutdown reaches all of them through
//!   [`shutdown`], which a busy connection polls without a shared lock.
//! - [`conn`]: the task of one connection. It owns the socket and is its
//!   only writer: handshake (including `ruok`), `register`, then one
//!   exhaustive `match` over the typed [`Request`](crate::request::Request).
//!   Cheap reads (loads) are answered inline; anything slow (vote, pack,
//!   undo logs, iteration) runs on blocking threads and comes back as an
//!   event.
//! - [`storage`]: per served storage, the commit lock (a FIFO queue across
//!   connections), statistics, the invalidation queue for reconnecting
//!   clients and the fan-out of every commit to every connection.
//! - [`txn`]: ZEO 5 commits. Stores are buffered per connection until
//!   `vote`; `vote` queues for the commit lock and then, on a blocking
//!   thread that keeps the storage transaction, runs `tpc_begin`, replays
//!   the buffer and votes; `tpc_finish`/`tpc_abort` tell that thread what
//!   to do. Disconnecting, or holding the lock past `transaction-timeout`,
//!   aborts.
//!
//! **Ordering.** ZEO clients need three guarantees (spec zeo.md §6):
//! invalidations arrive in commit order; a load reply that shows commit T
//! is not written before T's invalidation; the committer's `tpc_finish`
//! reply comes after every invalidation of earlier commits. Each commit is
//! published, in tid order, into a bounded queue per connection, and each
//! connection keeps a watermark of what it has delivered. Before writing a
//! reply that reveals tid X (a load's serial, a finish's tid,
//! `lastTransaction`, ...), the connection first delivers its queue up to
//! X. Loads therefore need no lock against commits, and the rare load that
//! sees a commit whose invalidation is still in flight waits only for that.
//!
//! **Group commit.** With a storage that can defer its fsync (FileStorage
//! opened with `Durability::Deferred` and a `sync` hook in its
//! [`StorageSpec`]), `finish` only writes, the commit lock passes to the
//! next transaction at once, and a syncer thread makes everything finished
//! so far durable with one fsync before publishing those commits. Since
//! nothing is revealed to any client (not the committer's reply, not an
//! invalidation, not a load reply, by the watermark rule above) before it
//! is published, every client sees exactly what it would with one fsync
//! per commit, in ZODB's order.
//!
//! **Conflicts.** A store whose serial is stale is a conflict at vote. With
//! `client-conflict-resolution`, or when the storage's resolver cannot
//! merge it, it goes back to the client as a `{oid, serials, data}` dict in
//! the vote result, which ZEO 5/6 clients resolve with the application's
//! classes and store again (or turn into a `ConflictError`). Without
//! `client-conflict-resolution`, the storage first tries [`resolve`]: the
//! classes whose rules are public and fixed (BTrees buckets, sets and
//! one-bucket trees of the standard types, `BTrees.Length`) are merged on
//! the server, byte for byte as Python's server would, and their oids come
//! back in the vote result as resolved.

pub mod blob;
pub mod conn;
pub mod extension;
pub mod iter;
pub mod listener;
pub mod resolve;
pub(crate) mod shutdown;
pub mod status;
pub mod storage;
pub mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use listener::{Listener, ServeError};
pub use storage::{StorageSpec, interfaces};

use crate::encoding::Encoding;
use crate::frame::DEFAULT_MAX_FRAME_LENGTH;

/// Server-wide options: the `<zeo>` section of `runzeo`'s configuration
/// plus the limits a server facing the network needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Refuse every write, whatever the storages allow (`read-only`).
    pub read_only: bool,
    /// How many recent commits are kept to answer `getInvalidations`
    /// (`invalidation-queue-size`, default 100).
    pub invalidation_queue_size: usize,
    /// When the queue does not reach back far enough but the client's tid is
    /// younger than this, compute its invalidations by iterating the storage
    /// (`invalidation-age`).
    pub invalidation_age: Option<Duration>,
    /// A connection that holds the commit lock longer than this is closed
    /// and its transaction aborted (`transaction-timeout`).
    pub transaction_timeout: Option<Duration>,
    /// Report every write conflict to the client as a dict instead of
    /// resolving it on the server (`client-conflict-resolution`).
    pub client_conflict_resolution: bool,
    /// Announce `M5` (msgpack) instead of `Z5` (pickle) (`msgpack`).
    pub encoding: Encoding,
    /// Largest frame accepted from a client.
    pub max_frame_length: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Commits a connection may have queued for delivery before it is
    /// considered stuck and closed (a client that stops reading must not
    /// make the server buffer without bound, nor hold up commits).
    pub notice_queue: usize,
    /// How long a new connection may take to answer the handshake.
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            read_only: false,
            invalidation_queue_size: 100,
            invalidation_age: None,
            transaction_timeout: None,
            client_conflict_resolution: false,
            encoding: Encoding::Pickle,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_connections: 4096,
            notice_queue: 100_000,
            handshake_timeout: Duration::from_secs(60),
        }
    }
}

/// A configured server: its options and the storages it serves by name.
/// Run it with [`Server::serve`].
#[derive(Debug, Clone)]
pub struct Server {
    pub(crate) shared: Arc<Shared>,
}

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) storages: HashMap<String, Arc<storage::Served>>,
    /// Connection ids, for logs and to recognise a commit's own connection.
    pub(crate) next_conn: std::sync::atomic::AtomicU64,
    /// Blocking work started for connections (packs, undo logs, blob
    /// transfers): shutdown waits for it before the storages are released.
    pub(crate) work: tokio_util::task::TaskTracker,
}

impl Server {
    /// A server for `storages` (name → spec; clients register by name,
    /// `"1"` by default).
    pub fn new(
        config: ServerConfig,
        storages: impl IntoIterator<Item = (String, StorageSpec)>,
    ) -> Result<Server, ServeError> {
        let mut map = HashMap::new();
        for (name, spec) in storages {
            let served = storage::Served::new(name.clone(), spec, &config)?;
            map.insert(name, Arc::new(served));
        }
        Ok(Server {
            shared: Arc::new(Shared {
                config,
                storages: map,
                next_conn: std::sync::atomic::AtomicU64::new(1),
                work: tokio_util::task::TaskTracker::new(),
            }),
        })
    }

    /// The options.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Accepts connections from `listener` until `shutdown` completes, then
    /// stops accepting, tells every connection to stop (transactions not
    /// yet finishing are aborted; a `tpc_finish` under way completes), and
    /// returns once all connection tasks have ended and every finished
    /// commit is durable.
    pub async fn serve<L, F>(&self, listener: L, shutdown: F) -> Result<(), ServeError>
    where
        L: Listener,
        F: std::future::Future,
    {
        listener::run(self.shared.clone(), listener, shutdown).await
    }

    /// Statistics of a storage as `server_status()` reports them.
    pub fn status(&self, storage: &str) -> Option<crate::value::Value> {
        self.shared.storages.get(storage).map(|s| s.status_value())
    }
}
