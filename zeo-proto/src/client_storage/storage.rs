//! The storage traits for [`ZeoClient`]: each method is the ZEO call
//! ClientStorage makes for it.

use std::sync::Arc;

use bytes::Bytes;
use zodb_core::notify::CommitWatch;
use zodb_core::storage::{
    ConflictResolver, HistoryEntry, Result, Revision, TpcTxn, TxnIter, UndoEntry,
};
use zodb_core::{Oid, ReadStorage, StorageError, Tid, TimeStamp, TxnMeta, TxnStatus, WriteStorage};

use crate::request::Request;

use super::error::Subject;
use super::{ZeoClient, ZeoError, ZeoTxn, lock};

impl ReadStorage for ZeoClient {
    /// ClientStorage's `getName()`: the address as Python prints it and
    /// whether the client is connected, e.g. `('127.0.0.1', 8100)
    /// (connected)` (what `zodb info` prints for a ZEO URL).
    fn name(&self) -> String {
        let name = self
            .options()
            .name
            .clone()
            .unwrap_or_else(|| self.address().python_repr());
        let state = if self.is_connected() {
            "connected"
        } else {
            "disconnected"
        };
        format!("{name} ({state})")
    }

    /// The last transaction the client knows of: registration's answer,
    /// then each commit's invalidation (or the client's own `tpc_finish`),
    /// as ClientStorage's `lastTransaction()`. Use
    /// [`ZeoClient::server_last_transaction`] to ask the server.
    fn last_transaction(&self) -> Tid {
        self.shared().view().last_tid.unwrap_or(Tid::ZERO)
    }

    /// `get_info`'s `length`, kept current by the server's `info` calls.
    fn object_count(&self) -> u64 {
        lock(&self.shared().info)
            .as_ref()
            .map_or(0, |i| u64::try_from(i.length).unwrap_or(0))
    }

    fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<Revision>> {
        self.shared().load_before(oid, before)?.wait()
    }

    fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Bytes> {
        let v = self.shared().storage_call(
            &Request::LoadSerial { oid, serial },
            Some(Subject::Revision(oid, serial)),
        )?;
        v.as_bytes().cloned().ok_or_else(|| {
            ZeoError::Shape {
                method: "loadSerial",
                source: crate::reply::ShapeError,
            }
            .into()
        })
    }

    fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let v = self
            .shared()
            .storage_call(&Request::History { oid, size }, Some(Subject::Object(oid)))?;
        Ok(super::convert::history(&v)?)
    }

    fn iter_transactions(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TxnIter<'_>> {
        let info = lock(&self.shared().info).clone();
        if info.is_some_and(|i| !super::convert::supports_iteration(&i)) {
            return Err(ZeoError::Unsupported(
                "the ZEO server's storage does not support iteration (IStorageIteration)".into(),
            )
            .into());
        }
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(StorageError::from(ZeoError::Closed))?
            .handle()
            .clone();
        Ok(Box::new(super::iter::stream(
            &runtime,
            self.shared().clone(),
            start,
            stop,
        )))
    }

    fn watch(&self) -> CommitWatch {
        self.subscribe()
    }

    /// A blob directory is configured and the server's storage keeps
    /// blobs.
    fn supports_blobs(&self) -> bool {
        self.shared().blobs().is_ok()
    }

    fn supports_prefetch(&self) -> bool {
        true
    }

    /// ClientStorage's `prefetch`: a `loadBefore` per oid is sent and not
    /// waited for; the replies go into the cache as they arrive (a load of
    /// the same revision meanwhile joins the one in flight).
    fn prefetch(&self, oids: &[Oid], before: Tid) {
        for &oid in oids {
            // Errors are the later load's to report.
            let _ = self.start_load_before(oid, before);
        }
    }

    /// ClientStorage's `loadBlob`: from the blob cache, downloading it
    /// with `sendBlob` first if need be, or from the server's shared blob
    /// directory (module `blob`). With a cache size limit, the file stays
    /// only as long as it is not among the least recently used: open it
    /// at once, or use [`ReadStorage::open_committed_blob`].
    fn load_blob(&self, oid: Oid, serial: Tid) -> Result<std::path::PathBuf> {
        self.shared().load_blob(oid, serial)
    }

    /// ClientStorage's `openCommittedBlobFile`: opened under the oid
    /// directory's lock, so no size check removes the file first.
    fn open_committed_blob(&self, oid: Oid, serial: Tid) -> Result<std::fs::File> {
        self.shared().open_committed_blob(oid, serial)
    }

    /// The `tmp` directory of the blob cache, or of the server's shared
    /// blob directory (ClientStorage's `temporaryDirectory`).
    fn temporary_directory(&self) -> Result<std::path::PathBuf> {
        Ok(self.shared().blobs()?.temp_dir().to_owned())
    }

    /// ClientStorage's `load(oid)`: `loadBefore(oid, maxtid)`, the current
    /// revision as far as the client knows.
    fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        match self.load_before(oid, Tid::MAX)? {
            Some(rev) => Ok((rev.data, rev.serial)),
            None => Err(StorageError::NoSuchObject { oid }),
        }
    }
}

impl WriteStorage for ZeoClient {
    fn tpc_begin(&self, meta: TxnMeta) -> Result<Box<dyn TpcTxn + '_>> {
        Ok(Box::new(ZeoTxn::begin(
            self.shared(),
            self.next_txn_id(),
            meta,
            None,
        )?))
    }

    fn tpc_begin_restore(
        &self,
        meta: TxnMeta,
        tid: Tid,
        status: TxnStatus,
    ) -> Result<Box<dyn TpcTxn + '_>> {
        Ok(Box::new(ZeoTxn::begin(
            self.shared(),
            self.next_txn_id(),
            meta,
            Some((tid, status)),
        )?))
    }

    /// Hands out oids from batches of 100 fetched with `new_oids()`, as
    /// ClientStorage's `new_oid` does.
    fn new_oids(&self, n: usize) -> Result<Vec<Oid>> {
        if self.options().read_only {
            return Err(StorageError::ReadOnly);
        }
        let mut pool = lock(&self.shared().oids);
        while pool.len() < n {
            let v = self
                .shared()
                .storage_call(&Request::NewOids { n: None }, None)?;
            let batch = crate::reply::parse_oids(&v).ok_or(ZeoError::Shape {
                method: "new_oids",
                source: crate::reply::ShapeError,
            })?;
            if batch.is_empty() {
                return Err(ZeoError::Shape {
                    method: "new_oids",
                    source: crate::reply::ShapeError,
                }
                .into());
            }
            pool.extend(batch);
        }
        Ok(pool.drain(..n).collect())
    }

    fn undo_log(&self, first: usize, last: usize) -> Result<Vec<UndoEntry>> {
        let first = i64::try_from(first).unwrap_or(i64::MAX);
        let last = i64::try_from(last).unwrap_or(i64::MAX);
        let v = self
            .shared()
            .storage_call(&Request::UndoLog { first, last }, None)?;
        Ok(super::convert::undo_log(&v)?)
    }

    /// Asks the server to pack (`pack(t, wait=True)`) and waits until it
    /// has. A ZEO server decides garbage collection by its own
    /// configuration (FileStorage's `pack-gc`, on by default); the
    /// protocol cannot turn it off, so `gc == false` is refused rather
    /// than ignored.
    fn pack(&self, pack_time: Tid, gc: bool) -> Result<()> {
        if !gc {
            return Err(ZeoError::Unsupported(
                "a ZEO client cannot pack without garbage collection: the server's storage \
                 configuration decides (pack-gc)"
                    .into(),
            )
            .into());
        }
        let time = TimeStamp::time_time(pack_time.timestamp());
        self.shared()
            .storage_call(&Request::Pack { time, wait: true }, None)?;
        Ok(())
    }

    fn set_conflict_resolver(&self, resolver: Option<Arc<dyn ConflictResolver>>) {
        self.shared().resolver.set(resolver);
    }
}
