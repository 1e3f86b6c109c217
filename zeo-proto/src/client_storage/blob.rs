//! Blobs over ZEO, as ZEO 5/6's `ClientStorage` with a non-shared blob
//! directory moves them.
//!
//! - **Load** (`loadBlob`): a file already in the cache is the answer (a
//!   blob file never changes for its (oid, serial)). Otherwise, holding the
//!   oid directory's lock and having looked again, the client calls
//!   `sendBlob(oid, serial)`; the server answers with
//!   `receiveBlobStart`/`receiveBlobChunk`…/`receiveBlobStop` and only
//!   then with the reply, so when the reply arrives the file is complete.
//!   The chunks go to a `.dl` file beside the final name, which is synced
//!   and renamed into place: no reader ever sees part of a blob. A
//!   `POSKeyError` from the server (no blob file) is
//!   [`StorageError::NoBlob`].
//! - **Store** (`storeBlob`): the caller's file is moved into the cache's
//!   `tmp` at once (the storage owns it from then on), then sent as
//!   ClientStorage sends it: `storea(oid, serial, data, txn)`, then
//!   `storeBlobStart()`, `storeBlobChunk(59000 bytes)`…,
//!   `storeBlobEnd(oid, serial, data, txn)`, all async and buffered by the
//!   server until the vote. When `tpc_finish` returns the tid, the file
//!   becomes the cached blob of (oid, tid); an aborted or failed
//!   transaction removes it.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use zodb_core::{Oid, StorageError, Tid};

use crate::exception::ZeoException;
use crate::request::Request;

use super::blob_cache::{BlobCache, CHUNK};
use super::conn::Download;
use super::{Shared, ZeoError, call_on, lock};

impl Shared {
    /// The blob cache, if blobs can work: a cache directory is configured
    /// and the server's storage keeps blobs.
    pub(crate) fn blob_cache(&self) -> Result<&BlobCache, StorageError> {
        let unsupported = |reason: &str| StorageError::BlobsUnsupported {
            storage: self.address.to_string(),
            reason: reason.to_owned(),
        };
        let Some(cache) = &self.blobs else {
            return Err(unsupported(
                "no blob cache directory is configured (ClientOptions::blob_dir, or blob_dir \
                 in the zeo:// URL)",
            ));
        };
        if lock(&self.info)
            .as_ref()
            .is_some_and(|i| !super::convert::supports_blobs(i))
        {
            return Err(unsupported(
                "the server's storage keeps no blobs (configure it in a <blobstorage> section)",
            ));
        }
        Ok(cache)
    }

    /// ClientStorage's `loadBlob`.
    pub(crate) fn load_blob(&self, oid: Oid, serial: Tid) -> Result<PathBuf, StorageError> {
        let cache = self.blob_cache()?;
        let path = cache.path(oid, serial);
        if path.exists() {
            BlobCache::touch(&path);
            return Ok(path);
        }
        let _lock = cache.lock(oid)?;
        // Someone (another thread or process) may have fetched it while
        // this one waited for the lock.
        if path.exists() {
            BlobCache::touch(&path);
            return Ok(path);
        }
        let conn = self.ready_conn()?;
        let download = cache.download_path(oid, serial);
        conn.expect_blob(oid, serial, download.clone());
        let reply = call_on(&conn, &Request::SendBlob { oid, serial });
        let received = conn.take_download(oid, serial);
        let result = match (reply, received) {
            (Ok(_), Some(d)) if d.complete && d.error.is_none() => std::fs::File::open(&download)
                .and_then(|f| f.sync_all())
                .and_then(|()| cache.install(&download, oid, serial))
                .map_err(StorageError::from),
            (Ok(_), Some(Download { error: Some(e), .. })) => Err(e.into()),
            // The server answered without sending the whole file: it has
            // none (what ClientStorage concludes too).
            (Ok(_), _) => Err(StorageError::NoBlob {
                oid,
                serial,
                path: None,
            }),
            (Err(ZeoError::Server(exc)), _) if matches!(*exc, ZeoException::PosKey(_)) => {
                Err(StorageError::NoBlob {
                    oid,
                    serial,
                    path: None,
                })
            }
            (Err(e), _) => Err(e.into()),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&download);
        }
        result
    }
}

/// A blob stored in a transaction in progress: the file the storage now
/// owns, in the cache's `tmp`.
#[derive(Debug)]
pub(crate) struct PendingBlob {
    pub(crate) oid: Oid,
    pub(crate) path: PathBuf,
}

/// Moves the caller's blob file into the cache's `tmp` directory: from
/// here on the transaction owns it (ZODB's storeBlob takes ownership).
pub(crate) fn take_file(cache: &BlobCache, blob: &Path) -> Result<PathBuf, StorageError> {
    let target = cache.temp_path();
    super::blob_cache::move_file(blob, &target)?;
    Ok(target)
}

/// The async calls that upload a blob file after its `storea`: start, the
/// file in 59000-byte chunks, end. `send` queues one call (the connection's
/// bounded outbox gives back-pressure, so a large file is read as it is
/// sent, not held in memory).
pub(crate) fn upload(
    path: &Path,
    oid: Oid,
    serial: Tid,
    data: &bytes::Bytes,
    txn: crate::request::TxnId,
    mut send: impl FnMut(&Request) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut file = std::fs::File::open(path)?;
    send(&Request::StoreBlobStart)?;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = file.read(buf.get_mut(filled..).unwrap_or_default())?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        send(&Request::StoreBlobChunk {
            chunk: bytes::Bytes::from(buf),
        })?;
        if filled < CHUNK {
            break;
        }
    }
    send(&Request::StoreBlobEnd {
        oid,
        serial,
        data: data.clone(),
        txn,
    })
}

/// After the commit: each stored blob becomes the cached blob of its oid
/// at `tid` (ClientStorage's `_update_blob_cache`). A failure only costs
/// a later download.
pub(crate) fn install_committed(cache: &BlobCache, blobs: Vec<PendingBlob>, tid: Tid) {
    for b in blobs {
        let installed = cache
            .lock(b.oid)
            .and_then(|_lock| cache.install(&b.path, b.oid, tid));
        if let Err(e) = installed {
            tracing::warn!(oid = %b.oid, %tid, error = %e, "could not keep a committed blob in the cache");
            let _ = std::fs::remove_file(&b.path);
        }
    }
}

/// Removes the files of blobs whose transaction did not commit.
pub(crate) fn discard(blobs: Vec<PendingBlob>) {
    for b in blobs {
        let _ = std::fs::remove_file(&b.path);
    }
}
