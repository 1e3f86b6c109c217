//! The client's blob cache: a directory of blob files downloaded from the
//! server (`sendBlob`) or committed by this client, in ZEO's own `zeocache`
//! layout (ZEO: `ClientStorage.BlobCacheLayout`), so that a Python
//! `ClientStorage` can share the directory and ZEO's cache-size checker
//! understands it.
//!
//! The revision of oid `n` written by tid `t` lives at
//! `<dir>/<n % 997>/<n / 997>.<t as 16 hex digits>.blob`; `<dir>/.layout`
//! says `zeocache`; uncommitted files wait in `<dir>/tmp`. A blob file is
//! immutable per (oid, serial), so invalidations never touch the cache: a
//! newer revision is another file. Files appear only by a rename of a
//! complete file, so a reader sees a whole blob or none; downloads of one
//! oid directory are serialised, across threads and processes (Python's
//! clients included), by an `flock` on the directory's `.lock`, as ZEO's
//! `_lock_blob` does with zc.lockfile.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zodb_core::{Oid, Tid};

/// The layout marker file and the layout's name.
const LAYOUT_MARKER: &str = ".layout";
const LAYOUT: &str = "zeocache";
/// Directories of the `zeocache` layout (ZEO's `BlobCacheLayout.size`).
const BUCKETS: u64 = 997;
/// Size of the chunks blobs travel in, both ways (ZEO's 59000).
pub(crate) const CHUNK: usize = 59000;

/// A blob cache directory.
#[derive(Debug)]
pub(crate) struct BlobCache {
    base: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

/// Holds an oid directory's `.lock` until dropped.
#[derive(Debug)]
pub(crate) struct DirLock(#[allow(dead_code, reason = "held for its lock")] File);

impl BlobCache {
    /// Opens, creating it if need be, a blob cache. A directory marked
    /// with another layout (a server's bushy blob directory, say) is
    /// refused, as ZODB refuses it.
    pub(crate) fn open(base: &Path) -> io::Result<BlobCache> {
        let base = std::path::absolute(base)?;
        let tmp = base.join("tmp");
        fs::create_dir_all(&tmp)?;
        let marker = base.join(LAYOUT_MARKER);
        match fs::read_to_string(&marker) {
            Ok(layout) if layout.trim() == LAYOUT => {}
            Ok(layout) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: blob directory layout {:?}, but a ZEO client's blob cache uses {LAYOUT:?}",
                        base.display(),
                        layout.trim()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::write(&marker, LAYOUT)?,
            Err(e) => return Err(e),
        }
        Ok(BlobCache {
            base,
            tmp,
            counter: AtomicU64::new(0),
        })
    }

    /// The directory for uncommitted files.
    pub(crate) fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    fn oid_dir(&self, oid: Oid) -> PathBuf {
        self.base.join((oid.0 % BUCKETS).to_string())
    }

    /// The file of one revision.
    pub(crate) fn path(&self, oid: Oid, serial: Tid) -> PathBuf {
        self.oid_dir(oid)
            .join(format!("{}.{:016x}.blob", oid.0 / BUCKETS, serial.0))
    }

    /// Locks the directory of `oid`'s files (creating it), waiting for
    /// another thread or process that holds it.
    pub(crate) fn lock(&self, oid: Oid) -> io::Result<DirLock> {
        let dir = self.oid_dir(oid);
        fs::create_dir_all(&dir)?;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        f.lock()?;
        Ok(DirLock(f))
    }

    /// A fresh name in `dir` ending in `suffix`, for a file being written.
    fn fresh(&self, dir: &Path, stem: &str, suffix: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        dir.join(format!("{stem}-{}-{n}{suffix}", std::process::id()))
    }

    /// A new temporary file name in the cache's `tmp` directory.
    pub(crate) fn temp_path(&self) -> PathBuf {
        self.fresh(&self.tmp, "store", ".tmp")
    }

    /// Where a download of `oid` at `serial` is written before it is
    /// complete (beside its final name, so that the rename is atomic).
    pub(crate) fn download_path(&self, oid: Oid, serial: Tid) -> PathBuf {
        let target = self.path(oid, serial);
        let stem = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.fresh(&self.oid_dir(oid), &stem, ".dl")
    }

    /// Makes a complete file the cached blob of `oid` at `serial`,
    /// read-only as ZEO leaves it. The caller holds the oid's lock.
    pub(crate) fn install(&self, from: &Path, oid: Oid, serial: Tid) -> io::Result<PathBuf> {
        let target = self.path(oid, serial);
        let mut perms = fs::metadata(from)?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(from, perms)?;
        move_file(from, &target)?;
        Ok(target)
    }

    /// Marks a cached file used, for the size checker's LRU (ZEO's
    /// `_accessed`: the access time is now).
    pub(crate) fn touch(path: &Path) {
        if let Ok(f) = File::open(path) {
            let _ = f.set_times(fs::FileTimes::new().set_accessed(std::time::SystemTime::now()));
        }
    }
}

/// A rename, or a copy and remove across file systems (ZODB's
/// `rename_or_copy_blob`).
pub(crate) fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            fs::copy(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;

    #[test]
    fn paths_are_zeos_zeocache_layout() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path()).unwrap();
        // ZEO: BlobCacheLayout().getBlobFilePath(p64(2000), p64(0x03a1…))
        // is '6/2.03a1b2c3d4e5f607.blob'.
        assert_eq!(
            c.path(Oid(2000), Tid(0x03a1_b2c3_d4e5_f607))
                .strip_prefix(dir.path())
                .unwrap(),
            Path::new("6/2.03a1b2c3d4e5f607.blob")
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(".layout")).unwrap(),
            "zeocache"
        );
        assert!(dir.path().join("tmp").is_dir());
        // Reopening is fine; a bushy directory is refused.
        BlobCache::open(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join(".layout"), "bushy").unwrap();
        assert!(BlobCache::open(other.path()).is_err());
    }

    #[test]
    fn installed_files_are_read_only_and_the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path()).unwrap();
        let held = c.lock(Oid(5)).unwrap();
        let f = File::open(dir.path().join("5/.lock")).unwrap();
        assert!(f.try_lock().is_err(), "the lock excludes other holders");
        drop(held);
        assert!(f.try_lock().is_ok());
        let tmp = c.temp_path();
        fs::write(&tmp, b"blob").unwrap();
        let p = c.install(&tmp, Oid(5), Tid(9)).unwrap();
        assert!(!tmp.exists());
        assert_eq!(fs::read(&p).unwrap(), b"blob");
        assert!(fs::metadata(&p).unwrap().permissions().readonly());
    }
}
