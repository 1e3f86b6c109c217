//! Blobs over ZEO, as ZEO 5/6's `ClientStorage` moves them: through a
//! private blob cache ([`Blobs::Cache`]), or straight in the server's own
//! blob directory shared over a file system ([`Blobs::Shared`],
//! ClientStorage's `shared_blob_dir`).
//!
//! With a cache:
//!
//! - **Load** (`loadBlob`): holding the oid directory's lock, a file
//!   already in the cache is the answer (a blob file never changes for its
//!   (oid, serial)) and is marked used. Otherwise the client calls
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
//! - With a size limit, downloads and commits count towards the next
//!   check of the cache's size, which runs on the [`SizeChecker`]'s thread.
//!
//! With the server's directory (bushy layout) no blob travels over the
//! connection:
//!
//! - **Load**: the committed file is read where the server keeps it; when
//!   there is none, there is no such blob anywhere, and the error names
//!   the path looked at (ClientStorage's "No blob file at …").
//! - **Store**: the caller's file is moved into the oid's directory under
//!   a fresh `.tmp` name, and `storea` is followed by
//!   `storeBlobShared(oid, serial, data, name, txn)`; the server moves the
//!   file into place at the vote, or removes it when the transaction
//!   aborts.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use zodb_core::{Oid, StorageError, Tid};

use crate::exception::ZeoException;
use crate::request::Request;
use crate::server::blob::BlobDir;

use super::blob_cache::{BlobCache, CHUNK, SizeChecker};
use super::conn::Download;
use super::{Shared, ZeoError, call_on, lock};

/// Where a client's blobs are.
#[derive(Debug)]
pub(crate) enum Blobs {
    /// A private cache (`blob_dir`), filled by downloads and this client's
    /// commits; with a size limit, its checker.
    Cache {
        cache: BlobCache,
        checker: Option<SizeChecker>,
    },
    /// The server's own blob directory (`blob_dir` with
    /// `shared_blob_dir`).
    Shared(BlobDir),
}

impl Blobs {
    /// Opens what `opts` configures: nothing without a `blob_dir`.
    pub(crate) fn open(opts: &super::ClientOptions) -> Result<Option<Blobs>, ZeoError> {
        let invalid = |what: &str| Err(ZeoError::Options(what.to_owned()));
        if opts.blob_cache_size_check >= 100 {
            return invalid(&format!(
                "blob_cache_size_check is {}: a percentage of blob_cache_size below 100",
                opts.blob_cache_size_check
            ));
        }
        let Some(dir) = &opts.blob_dir else {
            if opts.shared_blob_dir {
                return invalid(
                    "shared_blob_dir needs blob_dir: the server's blob directory as this client \
                     sees it",
                );
            }
            if opts.blob_cache_size.is_some() {
                return invalid("blob_cache_size needs blob_dir: there is no blob cache to limit");
            }
            return Ok(None);
        };
        if opts.shared_blob_dir {
            if opts.blob_cache_size.is_some() {
                return invalid(
                    "blob_cache_size limits a private blob cache; with shared_blob_dir the \
                     directory is the server's, whose blobs are never removed by a client",
                );
            }
            let shared = BlobDir::open_shared(dir).map_err(|source| ZeoError::SharedBlobDir {
                path: dir.clone(),
                source,
            })?;
            return Ok(Some(Blobs::Shared(shared)));
        }
        let cache_error = |source| ZeoError::BlobCache {
            path: dir.clone(),
            source,
        };
        let cache = BlobCache::open(dir).map_err(cache_error)?;
        let checker = opts
            .blob_cache_size
            .map(|size| SizeChecker::start(cache.base(), size, opts.blob_cache_size_check))
            .transpose()
            .map_err(cache_error)?;
        Ok(Some(Blobs::Cache { cache, checker }))
    }

    /// The directory for uncommitted blob files (ZODB's
    /// `temporaryDirectory`): on the same file system as the committed
    /// ones, so that storing moves a file instead of copying it.
    pub(crate) fn temp_dir(&self) -> &Path {
        match self {
            Blobs::Cache { cache, .. } => cache.temp_dir(),
            Blobs::Shared(dir) => dir.temp_dir(),
        }
    }

    /// Stops the cache's size checker, if any (the client is closing).
    pub(crate) fn stop(&self) {
        if let Blobs::Cache {
            checker: Some(c), ..
        } = self
        {
            c.stop();
        }
    }
}

impl Shared {
    /// Where blobs are, if blobs can work: a blob directory is configured
    /// and the server's storage keeps blobs.
    pub(crate) fn blobs(&self) -> Result<&Blobs, StorageError> {
        let unsupported = |reason: &str| StorageError::BlobsUnsupported {
            storage: self.address.to_string(),
            reason: reason.to_owned(),
        };
        let Some(blobs) = &self.blobs else {
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
        Ok(blobs)
    }

    /// ClientStorage's `loadBlob`: the path of the committed file.
    ///
    /// In a shared directory it is the server's file. In a cache it is the
    /// cached file, just marked used; with a size limit a later check of
    /// the cache's size (ours or a Python client's on the same directory)
    /// may remove it once it is among the least recently used files. A
    /// file already open stays readable after its removal (Unix), so a
    /// caller that keeps the blob a while opens it at once, or uses
    /// [`Shared::open_committed_blob`], which opens it under the lock
    /// checkers respect.
    pub(crate) fn load_blob(&self, oid: Oid, serial: Tid) -> Result<PathBuf, StorageError> {
        match self.blobs()? {
            Blobs::Shared(dir) => {
                let path = dir.path(oid, serial);
                match path.try_exists() {
                    Ok(true) => Ok(path),
                    Ok(false) => Err(StorageError::NoBlob {
                        oid,
                        serial,
                        path: Some(path),
                    }),
                    Err(e) => Err(with_path(&path, &e).into()),
                }
            }
            Blobs::Cache { cache, checker } => {
                let (path, downloaded) = {
                    let _lock = cache.lock(oid)?;
                    self.fetch_locked(cache, oid, serial)?
                };
                count(checker.as_ref(), downloaded);
                Ok(path)
            }
        }
    }

    /// ClientStorage's `openCommittedBlobFile`: the committed file, open.
    /// In a cache it is opened while the oid directory's lock is held, so
    /// no size check (ours or ZEO's) removes it between the lookup and the
    /// open; once open, a removal does not affect the reader.
    pub(crate) fn open_committed_blob(
        &self,
        oid: Oid,
        serial: Tid,
    ) -> Result<std::fs::File, StorageError> {
        match self.blobs()? {
            Blobs::Shared(dir) => {
                let path = dir.path(oid, serial);
                std::fs::File::open(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        StorageError::NoBlob {
                            oid,
                            serial,
                            path: Some(path.clone()),
                        }
                    } else {
                        with_path(&path, &e).into()
                    }
                })
            }
            Blobs::Cache { cache, checker } => {
                let (file, downloaded) = {
                    let _lock = cache.lock(oid)?;
                    let (path, downloaded) = self.fetch_locked(cache, oid, serial)?;
                    let file = std::fs::File::open(&path).map_err(|e| with_path(&path, &e))?;
                    (file, downloaded)
                };
                count(checker.as_ref(), downloaded);
                Ok(file)
            }
        }
    }

    /// The cached file of `oid` at `serial`, downloaded first if it is
    /// not there; with the size of a download. The caller holds the oid
    /// directory's lock: nobody else downloads it meanwhile, and no size
    /// check removes it.
    fn fetch_locked(
        &self,
        cache: &BlobCache,
        oid: Oid,
        serial: Tid,
    ) -> Result<(PathBuf, Option<u64>), StorageError> {
        let path = cache.path(oid, serial);
        if path.exists() {
            BlobCache::touch(&path);
            return Ok((path, None));
        }
        let conn = self.ready_conn()?;
        let download = cache.download_path(oid, serial);
        conn.expect_blob(oid, serial, download.clone());
        let reply = call_on(&conn, &Request::SendBlob { oid, serial });
        let received = conn.take_download(oid, serial);
        let no_blob = || StorageError::NoBlob {
            oid,
            serial,
            path: None,
        };
        let result = match (reply, received) {
            (Ok(_), Some(d)) if d.complete && d.error.is_none() => std::fs::File::open(&download)
                .and_then(|f| {
                    f.sync_all()?;
                    f.metadata()
                })
                .and_then(|m| {
                    cache
                        .install(&download, oid, serial)
                        .map(|p| (p, Some(m.len())))
                })
                .map_err(StorageError::from),
            (Ok(_), Some(Download { error: Some(e), .. })) => Err(e.into()),
            // The server answered without sending the whole file: it has
            // none (what ClientStorage concludes too).
            (Ok(_), _) => Err(no_blob()),
            (Err(ZeoError::Server(exc)), _) if matches!(*exc, ZeoException::PosKey(_)) => {
                Err(no_blob())
            }
            (Err(e), _) => Err(e.into()),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(&download);
        }
        result
    }
}

/// Tells the size checker about bytes that entered the cache.
fn count(checker: Option<&SizeChecker>, bytes: Option<u64>) {
    if let (Some(c), Some(n)) = (checker, bytes) {
        c.added(n);
    }
}

/// An I/O error with the path it is about in its message.
fn with_path(path: &Path, e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A blob stored in a transaction in progress: the file the storage now
/// owns, in the cache's `tmp` (or, in a shared directory, the `.tmp` file
/// in the oid's directory that the server takes at the vote).
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
/// at `tid` (ClientStorage's `_update_blob_cache`), and counts towards the
/// next size check. A failure only costs a later download.
pub(crate) fn install_committed(
    cache: &BlobCache,
    checker: Option<&SizeChecker>,
    blobs: Vec<PendingBlob>,
    tid: Tid,
) {
    let mut bytes = 0u64;
    for b in blobs {
        let installed = cache.lock(b.oid).and_then(|_lock| {
            let size = std::fs::metadata(&b.path)?.len();
            cache.install(&b.path, b.oid, tid)?;
            Ok(size)
        });
        match installed {
            Ok(size) => bytes = bytes.saturating_add(size),
            Err(e) => {
                tracing::warn!(oid = %b.oid, %tid, error = %e, "could not keep a committed blob in the cache");
                let _ = std::fs::remove_file(&b.path);
            }
        }
    }
    if bytes > 0 {
        count(checker, Some(bytes));
    }
}

/// Removes the files of blobs whose transaction did not commit.
pub(crate) fn discard(blobs: Vec<PendingBlob>) {
    for b in blobs {
        let _ = std::fs::remove_file(&b.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;
    use crate::client_storage::ClientOptions;

    fn open(opts: &ClientOptions) -> Result<Option<Blobs>, String> {
        Blobs::open(opts).map_err(|e| zodb_core::error_report(&e))
    }

    #[test]
    fn blob_options_that_cannot_work_are_refused() {
        let cache = tempfile::tempdir().unwrap();
        let server = tempfile::tempdir().unwrap();
        BlobDir::open(server.path()).unwrap();
        BlobCache::open(cache.path()).unwrap();
        let with = |f: &dyn Fn(&mut ClientOptions)| {
            let mut o = ClientOptions::default();
            f(&mut o);
            open(&o)
        };
        assert!(with(&|_| {}).unwrap().is_none());
        for (set, says) in [
            (
                &(|o: &mut ClientOptions| o.shared_blob_dir = true) as &dyn Fn(&mut ClientOptions),
                "shared_blob_dir needs blob_dir",
            ),
            (
                &|o: &mut ClientOptions| o.blob_cache_size = Some(1),
                "blob_cache_size needs blob_dir",
            ),
            (
                &|o: &mut ClientOptions| {
                    o.blob_dir = Some(server.path().to_owned());
                    o.shared_blob_dir = true;
                    o.blob_cache_size = Some(1 << 20);
                },
                "never removed by a client",
            ),
            (
                &|o: &mut ClientOptions| {
                    o.blob_dir = Some(cache.path().to_owned());
                    o.blob_cache_size = Some(1 << 20);
                    o.blob_cache_size_check = 100;
                },
                "below 100",
            ),
            (
                // A client cache is not the server's directory.
                &|o: &mut ClientOptions| {
                    o.blob_dir = Some(cache.path().to_owned());
                    o.shared_blob_dir = true;
                },
                "is \"bushy\"",
            ),
        ] {
            let e = with(set).map(|_| ()).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        // What works.
        let cached = with(&|o| {
            o.blob_dir = Some(cache.path().to_owned());
            o.blob_cache_size = Some(1 << 20);
        })
        .unwrap();
        assert!(matches!(
            cached,
            Some(Blobs::Cache {
                checker: Some(_),
                ..
            })
        ));
        let shared = with(&|o| {
            o.blob_dir = Some(server.path().to_owned());
            o.shared_blob_dir = true;
        })
        .unwrap()
        .unwrap();
        assert!(matches!(shared, Blobs::Shared(_)));
        assert_eq!(shared.temp_dir(), server.path().join("tmp"));
    }
}
